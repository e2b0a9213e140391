//! The governance fold refuses bad input, each case with a clear message and
//! the state unchanged: attestations, verifications, releases, admin
//! actions, headers that do not match their body. And the reason texts an
//! operator reads.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use covenant_core::digest::Sha256Digest;
use covenant_core::envelope;
use covenant_core::keys::SigningKey;
use covenant_core::ledger::{EntryHeader, EntryKind, body_digest};
use covenant_core::statements::*;
use support::key;
use support::world::{DAY, World, attestation, manifest, setup, site};

/// Appends and expects a refusal that mentions `says`, with nothing changed.
fn refused(w: &mut World, body: Vec<u8>, says: &str) {
    let size = w.state.size();
    let e = w.append(body).unwrap_err();
    assert!(e.to_string().contains(says), "expected {says:?} in {:?}", e.to_string());
    assert_eq!(w.state.size(), size, "a refused entry changes nothing");
}

fn two_customers() -> (World, support::world::Keys3, support::world::Keys3) {
    let mut w = World::new();
    let a = setup(&mut w, "min-x", "lim-07", 100);
    let b = setup(&mut w, "min-y", "lim-08", 110);
    (w, a, b)
}

#[test]
fn attestation_signed_by_an_unregistered_key() {
    let (mut w, _, _) = two_customers();
    let body = w.attestation_body(&key(200), "min-x", &["lim-07"], 100);
    refused(&mut w, body, "signed by a key no one registered");
}

#[test]
fn attestation_signed_by_another_customers_key() {
    let (mut w, _, (other, _, _)) = two_customers();
    let body = w.attestation_body(&other, "min-x", &["lim-07"], 100);
    refused(&mut w, body, "signed by a key of customer min-y");
}

#[test]
fn attestation_for_another_customers_deployment() {
    let (mut w, (ck, _, _), _) = two_customers();
    let body = w.attestation_body(&ck, "min-x", &["lim-07", "lim-08"], 100);
    refused(&mut w, body, "deployment lim-08 belongs to another customer");
}

#[test]
fn attestation_signed_by_an_engineer_key() {
    let (mut w, (_, _, ek), _) = two_customers();
    let body = w.attestation_body(&ek, "min-x", &["lim-07"], 100);
    refused(&mut w, body, "must be signed by a registered customer key");
}

#[test]
fn expired_attestation() {
    let (mut w, (ck, _, _), _) = two_customers();
    let from = w.now.plus_seconds(-30 * DAY);
    let body = envelope::sign(&attestation("min-x", &["lim-07"], from, w.now.plus_seconds(-DAY)), &[&ck]);
    refused(&mut w, body, "the attestation expired on");
}

#[test]
fn attestation_valid_until_before_valid_from() {
    let (mut w, (ck, _, _), _) = two_customers();
    let body = envelope::sign(&attestation("min-x", &["lim-07"], w.now.plus_seconds(DAY), w.now), &[&ck]);
    refused(&mut w, body, "valid_until: must be after valid_from");
}

#[test]
fn attestation_over_64_kib() {
    let (mut w, (ck, _, _), _) = two_customers();
    let mut a = attestation("min-x", &["lim-07"], w.now, w.now.plus_seconds(DAY));
    a.predicate.facts_unknown_to_signer = "x".repeat(65 * 1024);
    let body = envelope::sign(&a, &[&ck]);
    refused(&mut w, body, "over the limit");
}

#[test]
fn attestation_of_malformed_json() {
    let (mut w, (ck, _, _), _) = two_customers();
    let mut env = envelope::Envelope::new(
        "application/vnd.in-toto+json",
        b"{\"predicateType\": \"urn:covenant:end-use:v1\", ".to_vec(),
    );
    env.sign(&ck);
    refused(&mut w, env.to_bytes(), "malformed payload");
    // Well-formed JSON of the wrong shape (an unknown field).
    let a = attestation("min-x", &["lim-07"], w.now, w.now.plus_seconds(DAY));
    let mut json: serde_json::Value = serde_json::from_slice(&a.to_payload_bytes()).unwrap();
    json["predicate"]["bribe"] = "yes".into();
    let mut env = envelope::Envelope::new("application/vnd.in-toto+json", serde_json::to_vec(&json).unwrap());
    env.sign(&ck);
    refused(&mut w, env.to_bytes(), "unknown field");
}

#[test]
fn verification_by_a_revoked_engineer_key() {
    let (mut w, (ck, _, ek), _) = two_customers();
    let att = w.attest(&ck, "min-x", &["lim-07"], 100);
    let cert = w.state.identities().find(|(_, i)| i.signing_key == ek.public()).map(|(fp, _)| *fp).unwrap();
    w.act(ActionKind::RevokeIdentity { certificate_sha256: cert, compromised_since: None }, 1).unwrap();
    let body = w.verification_body(&ek, att, "lim-07", site("s1"), Sha256Digest::of(b"c"), VerificationResult::Pass);
    refused(&mut w, body, "signed by a revoked key");
}

#[test]
fn verification_of_an_attestation_that_does_not_cover_the_deployment() {
    let (mut w, (ck, _, ek), _) = two_customers();
    let att = w.attest(&ck, "min-x", &["lim-07"], 100);
    let body = w.verification_body(&ek, att, "lim-08", site("s1"), Sha256Digest::of(b"c"), VerificationResult::Pass);
    refused(&mut w, body, "references no recorded attestation of this deployment");
}

#[test]
fn release_under_the_threshold() {
    let (mut w, _, _) = two_customers();
    let m = manifest("2.0.0", ReleaseClass::Capability, "2.0.0");
    let one = envelope::sign(&m, &[&w.keys.release[0]]);
    refused(&mut w, one, "1 valid signature(s) from distinct known keys, 2 required");
    // Two signatures, one of them by a root key (another role): still one.
    let mixed = envelope::sign(&m, &[&w.keys.release[0], &w.keys.root[0]]);
    refused(&mut w, mixed, "2 required");
    // The same key twice counts once.
    let twice = envelope::sign(&m, &[&w.keys.release[0], &w.keys.release[0]]);
    refused(&mut w, twice, "2 required");
    let ok = envelope::sign(&m, &[&w.keys.release[0], &w.keys.release[2]]);
    w.append(ok.clone()).unwrap();
    refused(&mut w, ok, "already published");
}

#[test]
fn admin_action_signed_by_a_key_not_in_the_root() {
    let (mut w, _, _) = two_customers();
    let outsider = key(222);
    let body = envelope::sign(
        &support::world::action(
            ActionKind::ProposeSuspension {
                target: SuspensionTarget::Customer("min-x".into()),
                level: SuspensionLevel::None,
            },
            w.now,
        ),
        &[&outsider],
    );
    refused(&mut w, body, "the admin action is refused");
    // A customer's own key cannot sign an admin action either.
    let (ck, _, _) = (key(100), (), ());
    let body = envelope::sign(
        &support::world::action(
            ActionKind::RegisterCustomer { customer: "min-z".into(), legal_name: "Z".into(), country: "XZ".into() },
            w.now,
        ),
        &[&ck],
    );
    refused(&mut w, body, "the admin action is refused");
}

#[test]
fn a_header_that_does_not_match_its_body_is_refused() {
    let (mut w, _, _) = two_customers();
    let body = w.action_body(ActionKind::Note { text: "authority notified".into() }, 0);
    let index = w.entries.len() as u64;
    let good = EntryHeader {
        kind: EntryKind::Note,
        time: w.now,
        actor: Some(w.keys.admin[0].key_id()),
        tags: vec![],
        body_digest: body_digest(&[0; 32], &body),
    };
    let wrong_kind = EntryHeader { kind: EntryKind::Customer, ..good.clone() };
    assert!(w.state.apply(index, &wrong_kind, &body).unwrap_err().to_string().contains("header says customer"));
    let wrong_actor = EntryHeader { actor: Some(w.keys.admin[1].key_id()), ..good.clone() };
    assert!(w.state.apply(index, &wrong_actor, &body).unwrap_err().to_string().contains("actor"));
    let tag = w.state.keyring().tags(&["min-x".into()], &good.body_digest).unwrap();
    let wrong_subjects = EntryHeader { tags: tag, ..good.clone() };
    assert!(w.state.apply(index, &wrong_subjects, &body).unwrap_err().to_string().contains("subject tags"));
    w.state.apply(index, &good, &body).unwrap();
}

#[test]
fn registration_rules() {
    let (mut w, _, _) = two_customers();
    let again = ActionKind::RegisterCustomer { customer: "min-x".into(), legal_name: "X".into(), country: "XA".into() };
    assert!(w.act(again, 0).unwrap_err().to_string().contains("already registered"));
    let orphan = ActionKind::RegisterDeployment {
        deployment: "lim-99".into(),
        customer: "nobody".into(),
        product: "lim".into(),
        site: site("s1"),
        provisioned_version: "1.0.0".parse().unwrap(),
    };
    assert!(w.act(orphan, 0).unwrap_err().to_string().contains("customer nobody is not registered"));
    // A key for a customer that does not exist.
    let k = key(230);
    let e = w
        .act(
            ActionKind::IssueIdentity {
                role: IdentityRole::Customer,
                subject: "nobody".into(),
                signing_key: k.public(),
                certificate_sha256: Sha256Digest::of(b"c230"),
                scope: None,
            },
            0,
        )
        .unwrap_err();
    assert!(e.to_string().contains("register customer nobody"), "{e}");
}

#[test]
fn contract_versions_go_one_at_a_time_and_one_contract_binds_a_customer() {
    let (mut w, _, _) = two_customers();
    w.contract("min-x", 1, vec![]).unwrap();
    assert!(w.contract("min-x", 1, vec![]).unwrap_err().to_string().contains("must be set at version 2"));
    assert!(w.contract("min-x", 3, vec![]).unwrap_err().to_string().contains("must be set at version 2"));
    w.contract("min-x", 2, vec![]).unwrap();
    let mut other = support::world::contract("min-x", 1, vec![]);
    other.id = "side-deal".into();
    let e = w.act(ActionKind::SetContract { contract: other }, 0).unwrap_err();
    assert!(e.to_string().contains("bound by contract contract-min-x"), "{e}");
    // A contract naming another customer's deployment.
    let mut c = support::world::contract("min-y", 1, vec![]);
    c.deployments = vec!["lim-07".into()];
    assert!(w.act(ActionKind::SetContract { contract: c }, 0).unwrap_err().to_string().contains("lim-07"));
    // A condition named twice.
    let twice = vec![Condition::IntegrityMatch, Condition::IntegrityMatch];
    assert!(w.contract("min-y", 1, twice).unwrap_err().to_string().contains("names a condition twice"));
}

#[test]
fn signals_come_from_engineers_auditors_and_reporters_only() {
    let (mut w, (ck, _, ek), _) = two_customers();
    let signal = |by: &covenant_core::keys::SigningKey, w: &World| {
        envelope::sign(
            &MisuseSignal {
                type_tag: SignalTag,
                schema: SchemaV1,
                about: SignalAbout { customer: "min-x".into(), deployment: Some("lim-08".into()) },
                source: SignalSource::FieldEngineer,
                summary: "x".into(),
                evidence: vec![],
                reported_at: w.now,
            },
            &[by],
        )
    };
    let body = signal(&ck, &w);
    refused(&mut w, body, "must be signed by a registered engineer or auditor or reporter key");
    let body = signal(&ek, &w);
    refused(&mut w, body, "lim-08 is not a registered deployment of min-x");
}

#[test]
fn a_decision_must_be_signed_by_the_decision_key_and_answer_a_device_signed_check_in() {
    let (mut w, (ck, dk, _), _) = two_customers();
    w.release("1.1.0", ReleaseClass::Capability, "1.1.0");
    w.contract("min-x", 1, vec![]).unwrap();
    let d = w.decide(&w.checkin(&dk, "lim-07", "1.0.0", "1.0.0"));
    let by_admin = envelope::sign(&d, &[&w.keys.admin[0]]);
    refused(&mut w, by_admin, "the decision is refused");
    let mut forged = d.clone();
    forged.checkin = w.checkin(&ck, "lim-07", "1.0.0", "1.0.0");
    let body = envelope::sign(&forged, &[&w.keys.decision]);
    refused(&mut w, body, "check-in");
    w.log(&d).unwrap();
}

/// Every unmet reason names the deployment, the fact that is missing or
/// stale, and what fixes it; a case-caused reason never names the signal's
/// source, its evidence or its words.
#[test]
fn reasons_say_what_is_missing_and_what_to_do_and_never_betray_a_source() {
    let mut w = World::new();
    // Provisioned with a version the vendor never published.
    let (ck, dk, ek) = support::world::setup_at(&mut w, "min-x", "lim-07", 100, "0.9.0");
    w.release("1.0.0", ReleaseClass::Capability, "1.0.0");
    w.release("1.1.0", ReleaseClass::Capability, "1.1.0");
    let conditions = vec![
        Condition::EndUseAttested { max_age_days: 30, allowed_end_uses: vec![] },
        Condition::FieldVerified { max_age_days: 30, methods: vec![] },
        Condition::SiteBound { allowed_countries: vec![], allowed_site_ids: vec![] },
        Condition::IntegrityMatch,
        Condition::LicenceValid { licence: "bafa-1".into() },
        Condition::DeniedPartyClear { list: "eu-sanctions".into() },
        Condition::NoOpenCase { from_state: CaseState::Received },
    ];
    w.contract("min-x", 1, conditions).unwrap();
    let case = w.signal(&ek, "min-x", Some("lim-07"));
    let _ = case;
    // Unmet, each for its own fact: nothing attested yet.
    let unknown_version = w.checkin(&dk, "lim-07", "0.9.0", "0.9.0");
    let first = w.decide(&unknown_version);
    // Then an attestation, verified with another configuration, licensed
    // and listed, to make the remaining conditions unmet for other facts.
    let att = w.attest(&ck, "min-x", &["lim-07"], 365);
    w.verify(&ek, att, "lim-07", Sha256Digest::of(b"verified"));
    w.act(
        ActionKind::ListDeniedParty {
            party: DeniedParty {
                list: "eu-sanctions".into(),
                legal_name: "Ministry min-x".into(),
                country: "XA".into(),
            },
        },
        0,
    )
    .unwrap();
    w.act_approved(
        ActionKind::RecordLicence {
            licence: Licence {
                id: "bafa-1".into(),
                customer: "min-x".into(),
                authority: "BAFA".into(),
                expires: w.now.plus_seconds(DAY),
                versions: "<1.1".parse().unwrap(),
            },
        },
        0,
    )
    .unwrap();
    w.advance_days(40);
    let second = w.decide(&w.checkin(&dk, "lim-07", "1.0.0", "1.0.0"));
    let actions = ["submit", "ask your vendor", "contact", "restore", "reinstall", "return"];
    let mut seen = std::collections::BTreeSet::new();
    for d in [&first, &second] {
        for c in d.conditions.iter().filter(|c| c.status == ConditionStatus::Unmet) {
            seen.insert(c.condition.clone());
            let r = c.reason.to_lowercase();
            assert!(r.contains("lim-07"), "{}: names the deployment: {}", c.condition, c.reason);
            assert!(actions.iter().any(|a| r.contains(a)), "{}: says what to do: {}", c.condition, c.reason);
            if c.condition == "no_open_case" {
                for secret in ["ngo", "journalist", "report", "signal", "evidence", "eng-"] {
                    assert!(!r.contains(secret), "a case-caused reason betrays {secret:?}: {}", c.reason);
                }
                assert!(r.contains("compliance review"), "{}", c.reason);
                assert!(r.contains("compliance@vendor.example"), "says whom to contact: {}", c.reason);
            }
        }
        for withheld in &d.withheld_above {
            for r in &withheld.reasons {
                assert!(r.contains("lim-07"), "{r}");
            }
        }
    }
    let all: std::collections::BTreeSet<String> = ConditionName::ALL.iter().map(ConditionName::to_string).collect();
    assert_eq!(seen, all, "every condition was seen unmet");
    // The facts named: dates and versions.
    let reason = |d: &Decision, name: &str| d.conditions.iter().find(|c| c.condition == name).unwrap().reason.clone();
    assert!(reason(&second, "end_use_attested").contains("more than 30 days ago"));
    assert!(reason(&second, "licence_valid").contains("expired on"));
    assert!(reason(&first, "integrity_match").contains("version 0.9.0"));
    let _ = site;
}

// ---- Attacks found in review, one test each ---------------------------------

#[test]
fn a_stale_suspension_proposal_cannot_lower_a_level_raised_since() {
    let (mut w, _, _) = two_customers();
    let target = SuspensionTarget::Customer("min-x".into());
    // admin0 proposes L2; nobody approves.
    let stale =
        w.propose(ActionKind::ProposeSuspension { target: target.clone(), level: SuspensionLevel::L2 }, 0).unwrap();
    // Both put the customer under legal hold.
    w.suspend(target.clone(), SuspensionLevel::LegalHold);
    // admin1 alone now approves the old L2 proposal: refused, the level stays.
    let e = w.approve(stale, 1).unwrap_err();
    assert!(e.to_string().contains("the suspension changed since this proposal"), "{e}");
    assert_eq!(w.state.customer("min-x").unwrap().suspension, SuspensionLevel::LegalHold);
}

#[test]
fn a_proposal_expires() {
    let (mut w, _, _) = two_customers();
    let target = SuspensionTarget::Customer("min-x".into());
    let p = w.propose(ActionKind::ProposeSuspension { target, level: SuspensionLevel::L3 }, 0).unwrap();
    w.advance_days(31);
    assert!(w.approve(p, 1).unwrap_err().to_string().contains("expired"));
}

#[test]
fn the_proposal_of_a_revoked_admin_does_not_count() {
    let (mut w, _, _) = two_customers();
    // Both admins registered (the keys the root lists).
    let a0 = w.identity(IdentityRole::Admin, "admin0", &key(11));
    w.identity(IdentityRole::Admin, "admin1", &key(12));
    let target = SuspensionTarget::Customer("min-x".into());
    w.suspend(target.clone(), SuspensionLevel::L3);
    let lift = w.propose(ActionKind::ProposeSuspension { target, level: SuspensionLevel::None }, 0).unwrap();
    // Admin 0 revokes its own identity (at once: only another admin's
    // revocation waits for the threshold).
    w.act(ActionKind::RevokeIdentity { certificate_sha256: a0, compromised_since: None }, 0).unwrap();
    w.approve(lift, 1).unwrap();
    assert_eq!(w.state.customer("min-x").unwrap().suspension, SuspensionLevel::L3, "one valid approval is not two");
    // And the revoked admin can no longer act at all.
    let e = w.act(ActionKind::Note { text: "still here".into() }, 0).unwrap_err();
    assert!(e.to_string().contains("revoked admin key"), "{e}");
}

#[test]
fn a_production_root_with_admin_threshold_one_is_refused() {
    let keys = support::RootKeys::new(1);
    let mut meta = support::root_metadata(&keys, 1, support::next_year(), false);
    meta.roles.admin.threshold = 1;
    let e = meta.validate().unwrap_err();
    assert!(e.to_string().contains("threshold must be 2 or more outside a development root"), "{e}");
    meta.development = true;
    meta.roles.witness.threshold = 1;
    meta.validate().unwrap();
}

/// A decision built for deployment lim-07 of `w` (a release newer than
/// installed exists and a contract is set).
fn grant_world() -> (World, covenant_core::keys::SigningKey) {
    let (mut w, (_, dk, _), _) = two_customers();
    w.release("1.0.0", ReleaseClass::Capability, "1.0.0");
    w.release("1.1.0", ReleaseClass::Capability, "1.1.0");
    w.contract("min-x", 1, vec![]).unwrap();
    (w, dk)
}

#[test]
fn a_backdated_decision_is_refused() {
    let (mut w, dk) = grant_world();
    let checkin = w.checkin(&dk, "lim-07", "1.0.0", "1.0.0");
    let mut d = w.decide(&checkin);
    w.advance_days(20);
    // Evaluated "then", logged now.
    let e = w.log(&d).unwrap_err();
    assert!(e.to_string().contains("logged within 60 s of when it was made"), "{e}");
    d.issued_at = w.now.plus_seconds(1);
    d.expires_at = Some(d.issued_at.plus_seconds(3600));
    assert!(w.log(&d).unwrap_err().to_string().contains("logged within"), "dated in the future");
}

#[test]
fn a_decision_answering_an_old_or_reused_check_in_is_refused() {
    let (mut w, dk) = grant_world();
    let old = w.checkin(&dk, "lim-07", "1.0.0", "1.0.0");
    w.advance_days(3);
    let e = w.log(&w.decide(&old)).unwrap_err();
    assert!(e.to_string().contains("more than a day from when it was decided"), "{e}");
    let fresh = w.checkin(&dk, "lim-07", "1.0.0", "1.0.0");
    w.log(&w.decide(&fresh)).unwrap();
    w.advance_days(8);
    w.now = w.now.plus_seconds(-8 * support::world::DAY + 10);
    let e = w.log(&w.decide(&fresh)).unwrap_err();
    assert!(e.to_string().contains("already answered"), "{e}");
}

#[test]
fn re_recording_an_old_attestation_does_not_make_it_young() {
    let (mut w, (ck, dk, _), _) = two_customers();
    w.release("1.0.0", ReleaseClass::Capability, "1.0.0");
    w.release("1.1.0", ReleaseClass::Capability, "1.1.0");
    w.contract("min-x", 1, vec![Condition::EndUseAttested { max_age_days: 30, allowed_end_uses: vec![] }]).unwrap();
    let body = w.attestation_body(&ck, "min-x", &["lim-07"], 365);
    w.append(body.clone()).unwrap();
    w.advance_days(100);
    refused(&mut w, body, "already recorded");
    // A new attestation with an old valid_from is old too.
    let from = w.now.plus_seconds(-100 * DAY);
    let backdated = envelope::sign(&attestation("min-x", &["lim-07"], from, w.now.plus_seconds(DAY)), &[&ck]);
    w.append(backdated).unwrap();
    let d = w.decide(&w.checkin(&dk, "lim-07", "1.0.0", "1.0.0"));
    let c = d.conditions.iter().find(|c| c.condition == "end_use_attested").unwrap();
    assert_eq!(c.status, ConditionStatus::Unmet, "{}", c.reason);
}

#[test]
fn the_devices_claimed_baseline_is_ignored() {
    let mut w = World::new();
    // The ledger records it at 1.0.5 (provisioned so).
    let (_, dk, _) = support::world::setup_at(&mut w, "min-x", "lim-07", 100, "1.0.5");
    w.release("1.0.0", ReleaseClass::Capability, "1.0.0");
    w.release("1.0.3", ReleaseClass::Capability, "1.0.3");
    w.release("1.0.5", ReleaseClass::SecurityFix, "1.0.0");
    w.release("1.0.6", ReleaseClass::SecurityFix, "1.0.3");
    w.contract("min-x", 1, vec![]).unwrap();
    w.suspend(SuspensionTarget::Deployment("lim-07".into()), SuspensionLevel::L1);
    // Running 1.0.5 (baseline 1.0.0), claiming baseline 1.0.5.
    let lying = w.checkin(&dk, "lim-07", "1.0.5", "1.0.5");
    let d = w.decide(&lying);
    assert_eq!(d.verdict, Verdict::Withhold, "1.0.6 is built on 1.0.3, newer than the installed 1.0.0");
}

#[test]
fn a_signal_header_does_not_name_who_reported() {
    let (mut w, (_, _, ek), _) = two_customers();
    let case = w.signal(&ek, "min-x", Some("lim-07"));
    let index: usize = case.trim_start_matches("case-").parse().unwrap();
    let (header, _) = &w.entries[index];
    assert_eq!(header.kind, EntryKind::Signal);
    assert_eq!(header.actor, None);
}

// ---- Issue 16: what an outside attack found ---------------------------------

fn licence_action(versions: &str, expires_days: i64, w: &World) -> ActionKind {
    licence_until(versions, w.now.plus_seconds(expires_days * DAY))
}

fn licence_until(versions: &str, expires: covenant_core::digest::Timestamp) -> ActionKind {
    ActionKind::RecordLicence {
        licence: Licence {
            id: "bafa-1".into(),
            customer: "min-x".into(),
            authority: "BAFA".into(),
            expires,
            versions: versions.parse().unwrap(),
        },
    }
}

#[test]
fn an_old_admin_action_recorded_again_is_refused() {
    let (mut w, _, _) = two_customers();
    // admin1 records a wide licence; the admins later narrow it.
    let expires = w.now.plus_seconds(365 * DAY);
    let wide = w.action_body(licence_until(">=1.0", expires), 0);
    let first = w.append_approved(wide.clone(), 0).unwrap();
    w.act(licence_until(">=1.0, <1.2", expires), 0).unwrap();
    // The operator (or anyone holding the old envelope) records it again.
    refused(&mut w, wide, &format!("re-records the action of entry {first}"));
    assert_eq!(w.state.facts().licence("bafa-1").unwrap().versions.to_string(), ">=1.0, <1.2");
}

#[test]
fn an_admin_action_issued_more_than_a_day_from_its_ledger_time_is_refused() {
    let (mut w, _, _) = two_customers();
    let kept_back = w.action_body(licence_action(">=1.0", 365, &w), 0);
    w.advance_days(1);
    w.now = w.now.plus_seconds(1);
    refused(&mut w, kept_back, "more than a day from its ledger time");
    // Dated in the future beyond clock skew: refused too.
    let ahead = envelope::sign(
        &support::world::action(licence_action(">=1.0", 365, &w), w.now.plus_seconds(DAY + 1)),
        &[w.admin_key(0)],
    );
    refused(&mut w, ahead, "by more than the 300 s of clock skew allowed");
    // Within the day: taken.
    let fresh = envelope::sign(
        &support::world::action(licence_action(">=1.0", 365, &w), w.now.plus_seconds(-DAY + 10)),
        &[w.admin_key(0)],
    );
    w.append(fresh).unwrap();
}

#[test]
fn an_admin_action_pre_signed_for_later_is_refused() {
    let (mut w, _, _) = two_customers();
    let skew = covenant_core::state::ACTION_CLOCK_SKEW;
    // Signed to be sent an hour from now: usable neither now nor then for
    // long (it would have stood a day back and a day ahead, two days).
    let ahead = envelope::sign(
        &support::world::action(licence_action(">=1.0", 365, &w), w.now.plus_seconds(3_600)),
        &[w.admin_key(0)],
    );
    refused(&mut w, ahead, &format!("by more than the {skew} s of clock skew allowed"));
    // A clock a few minutes ahead is fine.
    let skewed = envelope::sign(
        &support::world::action(licence_action(">=1.0", 365, &w), w.now.plus_seconds(skew)),
        &[w.admin_key(0)],
    );
    w.append(skewed).unwrap();
}

fn case_contract(extra: Vec<Condition>) -> Vec<Condition> {
    let mut c = vec![Condition::NoOpenCase { from_state: CaseState::Determined }];
    c.extend(extra);
    c
}

#[test]
fn one_officer_cannot_drop_a_condition_by_publishing_a_contract_version() {
    let (mut w, (_, dk, ek), _) = two_customers();
    w.release("1.1.0", ReleaseClass::Capability, "1.1.0");
    w.contract("min-x", 1, case_contract(vec![])).unwrap();
    let case = w.signal(&ek, "min-x", Some("lim-07"));
    w.move_case(&case, CaseState::Triaged, None).unwrap();
    w.move_case(&case, CaseState::Investigating, None).unwrap();
    w.move_case(&case, CaseState::Determined, Some(Determination::Substantiated)).unwrap();
    let d = w.decide(&w.checkin(&dk, "lim-07", "1.0.0", "1.0.0"));
    assert_eq!(d.verdict, Verdict::Withhold);
    // One officer publishes version 2 without no_open_case: a proposal only.
    let p = w.propose(ActionKind::SetContract { contract: support::world::contract("min-x", 2, vec![]) }, 0).unwrap();
    assert_eq!(w.state.facts().contract_of("min-x").unwrap().version, 1);
    let proposal = w.state.facts().proposal(&p).unwrap();
    assert!(!proposal.in_force);
    match &proposal.kind {
        covenant_core::state::ProposalKind::Contract { relaxes, .. } => {
            assert_eq!(relaxes, &vec!["drops the condition no_open_case".to_owned()]);
        }
        other => panic!("expected a contract proposal, got {other:?}"),
    }
    let d = w.decide(&w.checkin(&dk, "lim-07", "1.0.0", "1.0.0"));
    assert_eq!(d.verdict, Verdict::Withhold, "the case still withholds");
    // The same officer approving counts once.
    let e = w.approve(p, 0).unwrap_err();
    assert!(e.to_string().contains("one admin counts once"), "{e}");
    // A second officer's approval puts it in force.
    w.approve(p, 1).unwrap();
    assert_eq!(w.state.facts().contract_of("min-x").unwrap().version, 2);
    let d = w.decide(&w.checkin(&dk, "lim-07", "1.0.0", "1.0.0"));
    assert_eq!(d.verdict, Verdict::Grant);
}

#[test]
fn a_contract_version_that_only_tightens_takes_effect_at_once() {
    let (mut w, _, _) = two_customers();
    w.contract("min-x", 1, case_contract(vec![])).unwrap();
    let mut tighter = support::world::contract(
        "min-x",
        2,
        case_contract(vec![Condition::FieldVerified { max_age_days: 30, methods: vec![] }]),
    );
    tighter.grant_validity_seconds -= 60;
    tighter.deployments = vec!["lim-07".into()];
    w.act(ActionKind::SetContract { contract: tighter }, 0).unwrap();
    assert_eq!(w.state.facts().contract_of("min-x").unwrap().version, 2);
}

#[test]
fn a_relaxing_proposal_is_refused_once_the_contract_moved_on() {
    let (mut w, _, _) = two_customers();
    w.contract("min-x", 1, case_contract(vec![])).unwrap();
    let p = w.propose(ActionKind::SetContract { contract: support::world::contract("min-x", 2, vec![]) }, 0).unwrap();
    // A tightening version 2 goes in first.
    w.contract("min-x", 2, case_contract(vec![Condition::IntegrityMatch])).unwrap();
    let e = w.approve(p, 1).unwrap_err();
    assert!(e.to_string().contains("is at version 2 now"), "{e}");
    assert_eq!(w.state.facts().contract_of("min-x").unwrap().conditions.len(), 2);
}

/// A deployment granted `1.1.0` (entry returned), with its device key.
fn granted() -> (World, SigningKey, u64) {
    let (mut w, (_, dk, _), _) = two_customers();
    w.release("1.1.0", ReleaseClass::Capability, "1.1.0");
    w.contract("min-x", 1, vec![]).unwrap();
    let d = w.decide(&w.checkin(&dk, "lim-07", "1.0.0", "1.0.0"));
    assert_eq!(d.verdict, Verdict::Grant);
    let index = w.log(&d).unwrap();
    (w, dk, index)
}

fn report(w: &World, dk: &SigningKey, grant: u64, outcome: InstallOutcome, to: &str) -> Vec<u8> {
    report_from(w, dk, grant, outcome, "1.0.0", to)
}

fn report_from(w: &World, dk: &SigningKey, grant: u64, outcome: InstallOutcome, from: &str, to: &str) -> Vec<u8> {
    let r = InstallReport {
        type_tag: ReportTag,
        schema: SchemaV1,
        deployment: "lim-07".into(),
        grant_index: grant,
        outcome,
        from_version: from.parse().unwrap(),
        to_version: to.parse().unwrap(),
        last_checkpoint: CheckpointRef { size: grant + 1, root_hash: Sha256Digest::of(b"root") },
        time: w.now,
    };
    envelope::sign(&r, &[dk])
}

#[test]
fn one_install_report_sent_again_is_recorded_once() {
    let (mut w, dk, grant) = granted();
    let body = report(&w, &dk, grant, InstallOutcome::Installed, "1.1.0");
    let first = w.append(body.clone()).unwrap();
    assert_eq!(
        w.state.facts().report_index(&Sha256Digest::of(envelope::Envelope::parse(&body).unwrap().payload())),
        Some(first)
    );
    for _ in 0..3 {
        refused(&mut w, body.clone(), &format!("this install report is already recorded (entry {first})"));
    }
    assert_eq!(w.state.facts().reports(), 1);
}

#[test]
fn a_grants_outcome_is_reported_once() {
    let (mut w, dk, grant) = granted();
    let first = w.append(report(&w, &dk, grant, InstallOutcome::Failed, "1.1.0")).unwrap();
    // Another report (another time) of the same outcome of the same grant.
    w.now = w.now.plus_seconds(5);
    let again = report(&w, &dk, grant, InstallOutcome::Failed, "1.1.0");
    refused(&mut w, again, &format!("the outcome of grant {grant} is already reported as failed (entry {first})"));
    // A grant has one outcome: after failed, installed is refused too.
    let other = report(&w, &dk, grant, InstallOutcome::Installed, "1.1.0");
    refused(&mut w, other, "a grant has one outcome, or installed then rolled-back");
    assert_eq!(w.state.facts().reports(), 1);
    assert_eq!(w.state.deployment("lim-07").unwrap().installed_version.to_string(), "1.0.0");
}

fn installed_version(w: &World) -> String {
    w.state.deployment("lim-07").unwrap().installed_version.to_string()
}

#[test]
fn an_install_report_for_a_grant_voided_by_a_suspension_does_not_raise_the_baseline() {
    let (mut w, dk, grant) = granted();
    // A security fix built on 1.1.0: under L1 it goes only to a deployment
    // whose ledger baseline is 1.1.0 or newer.
    w.release("1.1.1", ReleaseClass::SecurityFix, "1.1.0");
    w.suspend(SuspensionTarget::Deployment("lim-07".into()), SuspensionLevel::L1);
    // The device never could download 1.1.0 now, yet reports installing it.
    let body = report(&w, &dk, grant, InstallOutcome::Installed, "1.1.0");
    refused(&mut w, body, &format!("grant {grant} no longer stood when the install was reported"));
    assert_eq!(installed_version(&w), "1.0.0");
    assert_eq!(w.state.facts().reports(), 0);
    // So the fix built on 1.1.0 stays withheld.
    let d = w.decide(&w.checkin(&dk, "lim-07", "1.1.0", "1.1.0"));
    assert_eq!(d.verdict, Verdict::Withhold);
    assert!(d.finding.is_some(), "the claim differs from the ledger: a finding for the officer");
}

#[test]
fn an_install_report_after_its_grant_expired_does_not_raise_the_baseline() {
    let (mut w, dk, grant) = granted();
    w.advance_days(30);
    let body = report(&w, &dk, grant, InstallOutcome::Installed, "1.1.0");
    refused(&mut w, body, &format!("grant {grant} no longer stood when the install was reported"));
    assert_eq!(installed_version(&w), "1.0.0");
}

#[test]
fn an_install_report_still_counts_when_a_newer_release_was_published_meanwhile() {
    let (mut w, dk, grant) = granted();
    w.release("1.2.0", ReleaseClass::Capability, "1.2.0");
    w.append(report(&w, &dk, grant, InstallOutcome::Installed, "1.1.0")).unwrap();
    assert_eq!(installed_version(&w), "1.1.0");
}

#[test]
fn a_rolled_back_report_returns_the_baseline() {
    let (mut w, dk, grant) = granted();
    w.append(report(&w, &dk, grant, InstallOutcome::Installed, "1.1.0")).unwrap();
    assert_eq!(installed_version(&w), "1.1.0");
    w.append(report(&w, &dk, grant, InstallOutcome::RolledBack, "1.1.0")).unwrap();
    assert_eq!(installed_version(&w), "1.0.0", "the version before that grant");
    // Nothing more for that grant: not failed, not installed again.
    let failed = report(&w, &dk, grant, InstallOutcome::Failed, "1.1.0");
    refused(&mut w, failed, "a grant has one outcome, or installed then rolled-back");
    assert_eq!(installed_version(&w), "1.0.0");
    assert_eq!(w.state.facts().reports(), 2);
}

#[test]
fn a_rolled_back_report_alone_leaves_the_baseline() {
    let (mut w, dk, grant) = granted();
    // What the agent sends when the health check fails: rolled-back, never
    // installed before it.
    w.append(report(&w, &dk, grant, InstallOutcome::RolledBack, "1.1.0")).unwrap();
    assert_eq!(installed_version(&w), "1.0.0");
    let installed = report(&w, &dk, grant, InstallOutcome::Installed, "1.1.0");
    refused(&mut w, installed, "already reported as rolled-back");
}

#[test]
fn a_report_whose_from_version_is_not_the_ledgers_is_refused() {
    let (mut w, dk, grant) = granted();
    let body = report_from(&w, &dk, grant, InstallOutcome::Installed, "0.9.0", "1.1.0");
    refused(
        &mut w,
        body,
        &format!("the report says the deployment ran 0.9.0 before grant {grant}, but the ledger records 1.0.0"),
    );
    assert_eq!(installed_version(&w), "1.0.0");
    // Installed from the ledger's version, then a roll-back claiming to
    // return anywhere but there is refused too.
    w.append(report(&w, &dk, grant, InstallOutcome::Installed, "1.1.0")).unwrap();
    let body = report_from(&w, &dk, grant, InstallOutcome::RolledBack, "1.0.5", "1.1.0");
    refused(&mut w, body, "ran 1.0.5 before grant");
    assert_eq!(installed_version(&w), "1.1.0");
}

#[test]
fn one_admin_cannot_widen_a_licence_by_recording_it_again() {
    let (mut w, (_, dk, _), _) = two_customers();
    w.release("1.2.0", ReleaseClass::Capability, "1.2.0");
    w.contract("min-x", 1, vec![Condition::LicenceValid { licence: "bafa-1".into() }]).unwrap();
    let expires = w.now.plus_seconds(30 * DAY);
    w.act_approved(licence_until(">=1.0, <1.2", expires), 0).unwrap();
    assert_eq!(w.decide(&w.checkin(&dk, "lim-07", "1.0.0", "1.0.0")).verdict, Verdict::Withhold);
    // One admin records it again covering 1.2: a proposal only.
    let p = w.propose(licence_until(">=1.0", expires), 0).unwrap();
    assert_eq!(w.state.facts().licence("bafa-1").unwrap().versions.to_string(), ">=1.0, <1.2");
    match &w.state.facts().proposal(&p).unwrap().kind {
        covenant_core::state::ProposalKind::Licence { relaxes, .. } => {
            assert_eq!(relaxes, &vec!["licence bafa-1: covers versions >=1.0 instead of >=1.0, <1.2".to_owned()]);
        }
        other => panic!("expected a licence proposal, got {other:?}"),
    }
    assert_eq!(w.decide(&w.checkin(&dk, "lim-07", "1.0.0", "1.0.0")).verdict, Verdict::Withhold);
    // A later expiry alone is a widening too.
    let later = w.propose(licence_until(">=1.0, <1.2", expires.plus_seconds(DAY)), 0).unwrap();
    assert!(!w.state.facts().proposal(&later).unwrap().in_force);
    assert_eq!(w.state.facts().licence("bafa-1").unwrap().expires, expires);
    // A second admin's approval puts the wider one in force.
    w.approve(p, 1).unwrap();
    assert_eq!(w.decide(&w.checkin(&dk, "lim-07", "1.0.0", "1.0.0")).verdict, Verdict::Grant);
    // The other proposal no longer says what it widens.
    let e = w.approve(later, 1).unwrap_err();
    assert!(e.to_string().contains("licence bafa-1 changed since this proposal"), "{e}");
    // Narrowing takes effect at once.
    w.act(licence_until(">=1.0, <1.1", expires.plus_seconds(-DAY)), 0).unwrap();
    assert_eq!(w.state.facts().licence("bafa-1").unwrap().versions.to_string(), ">=1.0, <1.1");
}

fn substantiated(w: &mut World, ek: &SigningKey) -> String {
    let case = w.signal(ek, "min-x", Some("lim-07"));
    w.move_case(&case, CaseState::Triaged, None).unwrap();
    w.move_case(&case, CaseState::Investigating, None).unwrap();
    w.move_case(&case, CaseState::Determined, Some(Determination::Substantiated)).unwrap();
    case
}

#[test]
fn one_admin_cannot_close_a_substantiated_case_alone() {
    let (mut w, (_, dk, ek), _) = two_customers();
    w.release("1.1.0", ReleaseClass::Capability, "1.1.0");
    w.contract("min-x", 1, case_contract(vec![])).unwrap();
    let case = substantiated(&mut w, &ek);
    // Forward moves take effect at once.
    w.move_case(&case, CaseState::Remediation, None).unwrap();
    w.move_case(&case, CaseState::Verified, None).unwrap();
    assert_eq!(w.state.facts().case(&case).unwrap().state, CaseState::Verified);
    // Closing is a proposal: the case still withholds.
    let close = ActionKind::CaseTransition { case: case.clone(), to: CaseState::Closed, determination: None };
    let p = w.propose(close, 0).unwrap();
    assert_eq!(w.state.facts().case(&case).unwrap().state, CaseState::Verified);
    assert!(!w.state.facts().proposal(&p).unwrap().in_force);
    assert_eq!(w.decide(&w.checkin(&dk, "lim-07", "1.0.0", "1.0.0")).verdict, Verdict::Withhold);
    let e = w.approve(p, 0).unwrap_err();
    assert!(e.to_string().contains("one admin counts once"), "{e}");
    w.approve(p, 1).unwrap();
    assert_eq!(w.state.facts().case(&case).unwrap().state, CaseState::Closed);
    assert_eq!(w.decide(&w.checkin(&dk, "lim-07", "1.0.0", "1.0.0")).verdict, Verdict::Grant);
}

#[test]
fn one_admin_cannot_dismiss_a_triaged_case_or_take_a_determination_back_alone() {
    let (mut w, (_, _, ek), _) = two_customers();
    w.contract("min-x", 1, case_contract(vec![])).unwrap();
    let case = w.signal(&ek, "min-x", Some("lim-07"));
    w.move_case(&case, CaseState::Triaged, None).unwrap();
    let p = w
        .propose(ActionKind::CaseTransition { case: case.clone(), to: CaseState::Closed, determination: None }, 0)
        .unwrap();
    assert_eq!(w.state.facts().case(&case).unwrap().state, CaseState::Triaged);
    // The case moves on meanwhile: the old proposal is refused on approval.
    w.move_case(&case, CaseState::Investigating, None).unwrap();
    w.move_case(&case, CaseState::Determined, Some(Determination::Inconclusive)).unwrap();
    let e = w.approve(p, 1).unwrap_err();
    assert!(e.to_string().contains(&format!("case {case} moved since this proposal")), "{e}");
    // Determined (inconclusive) back to investigating lifts a contract
    // blocking from determined: a proposal too.
    let back = ActionKind::CaseTransition { case: case.clone(), to: CaseState::Investigating, determination: None };
    let p = w.propose(back, 0).unwrap();
    assert_eq!(w.state.facts().case(&case).unwrap().state, CaseState::Determined);
    w.approve(p, 1).unwrap();
    assert_eq!(w.state.facts().case(&case).unwrap().state, CaseState::Investigating);
}

fn register(id: &str) -> ActionKind {
    ActionKind::RegisterDeployment {
        deployment: id.into(),
        customer: "min-x".into(),
        product: "lim".into(),
        site: site("s1"),
        provisioned_version: "1.0.0".parse().unwrap(),
    }
}

#[test]
fn re_registering_suspended_hardware_under_a_new_deployment_id_needs_two_admins() {
    let (mut w, _, _) = two_customers();
    w.suspend(SuspensionTarget::Deployment("lim-07".into()), SuspensionLevel::L1);
    // One admin registers the same system as lim-09: a proposal only.
    let p = w.propose(register("lim-09"), 0).unwrap();
    assert!(w.state.deployment("lim-09").is_none());
    match &w.state.facts().proposal(&p).unwrap().kind {
        covenant_core::state::ProposalKind::Deployment { held, .. } => {
            assert_eq!(held, "deployment lim-07 is under suspension L1");
        }
        other => panic!("expected a deployment proposal, got {other:?}"),
    }
    // Its key cannot be registered either, so it cannot check in.
    let e = w.act(
        ActionKind::IssueIdentity {
            role: IdentityRole::Deployment,
            subject: "lim-09".into(),
            signing_key: key(140).public(),
            certificate_sha256: Sha256Digest::of(b"cert lim-09"),
            scope: None,
        },
        0,
    );
    assert!(e.unwrap_err().to_string().contains("register deployment lim-09 before its key"));
    w.approve(p, 1).unwrap();
    assert!(w.state.deployment("lim-09").is_some());
    // Another customer is not held by min-x's suspension.
    w.act(
        ActionKind::RegisterDeployment {
            deployment: "lim-10".into(),
            customer: "min-y".into(),
            product: "lim".into(),
            site: site("s1"),
            provisioned_version: "1.0.0".parse().unwrap(),
        },
        0,
    )
    .unwrap();
    assert!(w.state.deployment("lim-10").is_some());
}

#[test]
fn re_registering_hardware_with_an_open_case_under_a_new_deployment_id_needs_two_admins() {
    let (mut w, (_, _, ek), _) = two_customers();
    let _case = w.signal(&ek, "min-x", Some("lim-07"));
    let p = w.propose(register("lim-09"), 0).unwrap();
    assert!(w.state.deployment("lim-09").is_none());
    assert!(!w.state.facts().proposal(&p).unwrap().in_force);
}

#[test]
fn a_report_naming_another_version_than_its_grant_is_refused() {
    let (mut w, dk, grant) = granted();
    let body = report(&w, &dk, grant, InstallOutcome::Installed, "1.3.0");
    refused(&mut w, body, "the report names version 1.3.0, but entry");
}

#[test]
fn registering_a_deployment_under_a_customer_suspension_needs_two_admins() {
    let (mut w, _, _) = two_customers();
    w.suspend(SuspensionTarget::Customer("min-x".into()), SuspensionLevel::L1);
    // A fresh deployment provisioned at 1.3.0 would set its own baseline
    // under the customer's suspension: a proposal only.
    let mut fresh = register("lim-07c");
    if let ActionKind::RegisterDeployment { provisioned_version, .. } = &mut fresh {
        *provisioned_version = "1.3.0".parse().unwrap();
    }
    let p = w.propose(fresh, 0).unwrap();
    assert!(w.state.deployment("lim-07c").is_none());
    match &w.state.facts().proposal(&p).unwrap().kind {
        covenant_core::state::ProposalKind::Deployment { held, .. } => {
            assert_eq!(held, "customer min-x is under suspension L1");
        }
        other => panic!("expected a deployment proposal, got {other:?}"),
    }
    w.approve(p, 1).unwrap();
    assert!(w.state.deployment("lim-07c").is_some());
}

#[test]
fn registering_a_deployment_while_a_case_names_the_customer_needs_two_admins() {
    let (mut w, _, (_, _, ek)) = two_customers();
    let case = w.signal(&ek, "min-x", None);
    let p = w.propose(register("lim-09"), 0).unwrap();
    assert!(w.state.deployment("lim-09").is_none());
    match &w.state.facts().proposal(&p).unwrap().kind {
        covenant_core::state::ProposalKind::Deployment { held, .. } => {
            assert_eq!(held, &format!("case {case} concerning the customer is open"));
        }
        other => panic!("expected a deployment proposal, got {other:?}"),
    }
}

#[test]
fn one_admin_cannot_give_a_new_customer_its_first_contract_to_carry_held_hardware_out() {
    let (mut w, _, _) = two_customers();
    w.release("1.1.0", ReleaseClass::Capability, "1.1.0");
    w.suspend(SuspensionTarget::Deployment("lim-07".into()), SuspensionLevel::L1);
    // One admin registers the held system under a new customer, which
    // nothing holds, with a deployment and a device key: all at once.
    w.customer("min-z");
    w.act(
        ActionKind::RegisterDeployment {
            deployment: "lim-07z".into(),
            customer: "min-z".into(),
            product: "lim".into(),
            site: site("s1"),
            provisioned_version: "1.0.0".parse().unwrap(),
        },
        0,
    )
    .unwrap();
    let dk = key(160);
    w.identity(IdentityRole::Deployment, "lim-07z", &dk);
    // Its first contract, without conditions, is a proposal only.
    let lax = ActionKind::SetContract { contract: support::world::contract("min-z", 1, vec![]) };
    let p = w.propose(lax, 0).unwrap();
    assert!(w.state.facts().contract_of("min-z").is_none());
    match &w.state.facts().proposal(&p).unwrap().kind {
        covenant_core::state::ProposalKind::Contract { relaxes, .. } => {
            assert_eq!(relaxes, &vec!["contract contract-min-z: the first contract of customer min-z".to_owned()]);
        }
        other => panic!("expected a contract proposal, got {other:?}"),
    }
    // So the system is still withheld: no contract, no update.
    let d = w.decide(&w.checkin(&dk, "lim-07z", "1.0.0", "1.0.0"));
    assert_eq!(d.verdict, Verdict::Withhold);
    // A first contract that two admins set meanwhile makes it stale.
    let strict = ActionKind::SetContract { contract: support::world::contract("min-z", 1, case_contract(vec![])) };
    let q = w.propose(strict, 0).unwrap();
    w.approve(q, 1).unwrap();
    assert_eq!(w.state.facts().contract_of("min-z").unwrap().conditions.len(), 1);
    let e = w.approve(p, 1).unwrap_err();
    assert!(e.to_string().contains("is at version 1 now"), "{e}");
    assert_eq!(w.state.facts().contract_of("min-z").unwrap().conditions.len(), 1);
}

#[test]
fn a_refused_approval_leaves_the_proposal_as_it_was() {
    let (mut w, _, _) = two_customers();
    w.suspend(SuspensionTarget::Deployment("lim-07".into()), SuspensionLevel::L1);
    let p = w.propose(register("lim-09"), 0).unwrap();
    // lim-09 is registered by another route meanwhile (a second proposal
    // approved), so approving the first is refused, and changes nothing.
    let mut other = register("lim-09");
    if let ActionKind::RegisterDeployment { provisioned_version, .. } = &mut other {
        *provisioned_version = "1.1.0".parse().unwrap();
    }
    let q = w.propose(other, 0).unwrap();
    w.approve(q, 1).unwrap();
    let before = w.state.facts().proposal(&p).unwrap().clone();
    let e = w.approve(p, 1).unwrap_err();
    assert!(e.to_string().contains("deployment lim-09 is already registered"), "{e}");
    assert_eq!(w.state.facts().proposal(&p).unwrap(), &before);
    assert_eq!(w.state.deployment("lim-09").unwrap().installed_version, "1.1.0".parse().unwrap());
}

fn device_identity(deployment: &str, seed: u8) -> ActionKind {
    person_identity(IdentityRole::Deployment, deployment, seed)
}

fn person_identity(role: IdentityRole, subject: &str, seed: u8) -> ActionKind {
    ActionKind::IssueIdentity {
        role,
        subject: subject.into(),
        signing_key: key(seed).public(),
        certificate_sha256: Sha256Digest::of(format!("cert {subject} {seed}").as_bytes()),
        scope: None,
    }
}

fn has_key(w: &World, seed: u8) -> bool {
    w.state.identities().any(|(_, i)| i.signing_key == key(seed).public())
}

/// The words an identity proposal gives for needing the threshold.
fn identity_proposal_why(w: &World, p: &Sha256Digest) -> String {
    let proposal = w.state.facts().proposal(p).unwrap();
    assert!(!proposal.in_force);
    match &proposal.kind {
        covenant_core::state::ProposalKind::Identity { why, .. } => why.clone(),
        other => panic!("expected an identity proposal, got {other:?}"),
    }
}

#[test]
fn a_spare_deployment_registered_before_the_hold_gets_no_identity_from_one_admin() {
    let (mut w, _, _) = two_customers();
    // lim-99 is registered while nothing holds min-x: at once.
    w.act(register("lim-99"), 0).unwrap();
    assert!(w.state.deployment("lim-99").is_some());
    w.suspend(SuspensionTarget::Deployment("lim-07".into()), SuspensionLevel::L1);
    // One admin issues lim-99 a device key: a proposal only, so the held
    // system cannot check in as lim-99.
    let p = w.propose(device_identity("lim-99", 150), 0).unwrap();
    assert!(!has_key(&w, 150));
    assert_eq!(identity_proposal_why(&w, &p), "deployment lim-07 is under suspension L1");
    let checkin = w.checkin(&key(150), "lim-99", "1.0.0", "1.0.0");
    assert!(w.state.verify_checkin(&checkin).unwrap_err().to_string().contains("signed by a key no one registered"));
    // The held deployment itself gets no new key from one admin either.
    let again = w.propose(device_identity("lim-07", 151), 0).unwrap();
    assert!(!has_key(&w, 151));
    assert!(!w.state.facts().proposal(&again).unwrap().in_force);
    // A second admin's approval registers it.
    w.approve(p, 1).unwrap();
    assert!(has_key(&w, 150));
    // Another customer's devices are not held by min-x's suspension; a new
    // key for lim-08, which had one, is a device swap and waits too.
    let swap = w.propose(device_identity("lim-08", 152), 0).unwrap();
    assert_eq!(identity_proposal_why(&w, &swap), "deployment lim-08 had a device key before (a new device)");
}

#[test]
fn an_identity_proposal_is_refused_on_approval_once_its_key_is_registered() {
    let (mut w, _, (_, _, ek)) = two_customers();
    w.act(register("lim-99"), 0).unwrap();
    let _case = w.signal(&ek, "min-x", Some("lim-07"));
    let p = w.propose(device_identity("lim-99", 150), 0).unwrap();
    // The same key is registered meanwhile under another certificate.
    let mut other = device_identity("lim-99", 150);
    if let ActionKind::IssueIdentity { certificate_sha256, .. } = &mut other {
        *certificate_sha256 = Sha256Digest::of(b"another certificate");
    }
    let q = w.propose(other, 0).unwrap();
    w.approve(q, 1).unwrap();
    assert!(has_key(&w, 150));
    let size = w.state.size();
    let e = w.approve(p, 1).unwrap_err();
    assert!(e.to_string().contains("this signing key is already registered"), "{e}");
    // Refused, and the proposal still waits: nothing changed.
    assert_eq!(w.state.size(), size);
    assert!(!w.state.facts().proposal(&p).unwrap().in_force);
}

#[test]
fn one_admin_cannot_register_a_customer_and_attest_with_a_key_it_holds() {
    let (mut w, _, _) = two_customers();
    // A fresh customer and deployment: each registration is at once.
    w.customer("min-z");
    w.act(
        ActionKind::RegisterDeployment {
            deployment: "lim-30".into(),
            customer: "min-z".into(),
            product: "lim".into(),
            site: site("s1"),
            provisioned_version: "1.0.0".parse().unwrap(),
        },
        0,
    )
    .unwrap();
    // The customer key the admin made itself is only proposed.
    let p = w.propose(person_identity(IdentityRole::Customer, "min-z", 160), 0).unwrap();
    assert!(!has_key(&w, 160));
    assert_eq!(identity_proposal_why(&w, &p), "a customer's key signs the end-use attestations the conditions read");
    let body = w.attestation_body(&key(160), "min-z", &["lim-30"], 100);
    refused(&mut w, body, "signed by a key no one registered");
    // Nor can it attest for an existing customer.
    w.propose(person_identity(IdentityRole::Customer, "min-x", 161), 0).unwrap();
    let body = w.attestation_body(&key(161), "min-x", &["lim-07"], 100);
    refused(&mut w, body, "signed by a key no one registered");
    // With a second admin's approval the key is registered and signs.
    w.approve(p, 1).unwrap();
    let body = w.attestation_body(&key(160), "min-z", &["lim-30"], 100);
    w.append(body).unwrap();
}

#[test]
fn one_admin_cannot_issue_an_engineer_or_auditor_key_it_holds_and_sign_field_facts() {
    let (mut w, (ck, _, _), _) = two_customers();
    let att = w.attest(&ck, "min-x", &["lim-07"], 100);
    let p = w.propose(person_identity(IdentityRole::Engineer, "eng-rogue", 162), 0).unwrap();
    assert_eq!(identity_proposal_why(&w, &p), "an engineer's key signs the field verifications the conditions read");
    let body =
        w.verification_body(&key(162), att, "lim-07", site("s1"), Sha256Digest::of(b"c"), VerificationResult::Pass);
    refused(&mut w, body, "signed by a key no one registered");
    let q = w.propose(person_identity(IdentityRole::Auditor, "aud-rogue", 163), 0).unwrap();
    assert!(!has_key(&w, 163));
    identity_proposal_why(&w, &q);
    // One admin cannot approve its own proposal.
    assert!(w.approve(p, 0).unwrap_err().to_string().contains("one admin counts once"));
    w.approve(p, 1).unwrap();
    w.approve(q, 1).unwrap();
    assert!(has_key(&w, 162) && has_key(&w, 163));
}

#[test]
fn one_admin_cannot_revoke_the_other_admin_to_keep_dual_control_to_itself() {
    let (mut w, _, _) = two_customers();
    w.identity(IdentityRole::Admin, "admin0", &key(11));
    let a1 = w.identity(IdentityRole::Admin, "admin1", &key(12));
    // Admin 0 revokes admin 1's identity: a proposal only.
    let revoke = w.propose(ActionKind::RevokeIdentity { certificate_sha256: a1, compromised_since: None }, 0).unwrap();
    assert!(w.state.identity(&a1).unwrap().revoked.is_none());
    // Admin 1 still acts, and its approval still counts: a raise to L3 by
    // admin 0 is not in force until admin 1 approves it.
    let target = SuspensionTarget::Customer("min-x".into());
    let raise = w.propose(ActionKind::ProposeSuspension { target, level: SuspensionLevel::L3 }, 0).unwrap();
    assert_eq!(w.state.customer("min-x").unwrap().suspension, SuspensionLevel::None);
    w.approve(raise, 1).unwrap();
    assert_eq!(w.state.customer("min-x").unwrap().suspension, SuspensionLevel::L3);
    // Admin 1's own approval of its revocation counts (it could revoke
    // itself at once), and then it can no longer act.
    w.approve(revoke, 1).unwrap();
    assert!(w.state.identity(&a1).unwrap().revoked.is_some());
    let e = w.act(ActionKind::Note { text: "still here".into() }, 1).unwrap_err();
    assert!(e.to_string().contains("revoked admin key"), "{e}");
}

#[test]
fn a_compromise_proposal_is_refused_on_approval_once_another_compromise_was_recorded() {
    let (mut w, (ck, _, ek), _) = two_customers();
    let since = w.now;
    let att = w.attest(&ck, "min-x", &["lim-07"], 100);
    w.verify(&ek, att, "lim-07", Sha256Digest::of(b"c"));
    let cert = w.state.identities().find(|(_, i)| i.signing_key == ek.public()).map(|(fp, _)| *fp).unwrap();
    let first = w.propose(ActionKind::RevokeIdentity { certificate_sha256: cert, compromised_since: Some(since) }, 0);
    // Revoked at once, the compromise waits; a second compromise time is
    // proposed for the revoked identity.
    assert!(w.state.identity(&cert).unwrap().revoked.as_ref().is_some_and(|r| r.compromised_since.is_none()));
    let later = since.plus_seconds(1);
    let second = w.propose(ActionKind::RevokeIdentity { certificate_sha256: cert, compromised_since: Some(later) }, 0);
    w.approve(first.unwrap(), 1).unwrap();
    assert_eq!(w.state.identity(&cert).unwrap().revoked.as_ref().unwrap().compromised_since, Some(since));
    let size = w.state.size();
    let e = w.approve(second.unwrap(), 1).unwrap_err();
    assert!(e.to_string().contains("already recorded as compromised"), "{e}");
    assert_eq!(w.state.size(), size);
    // And a plain revocation again is refused.
    let e = w.act(ActionKind::RevokeIdentity { certificate_sha256: cert, compromised_since: None }, 0).unwrap_err();
    assert!(e.to_string().contains("already revoked"), "{e}");
}

// ---- Issue 19: the transparency report counts header kinds -------------------

/// Closing a case and lifting a suspension get kinds of their own, which the
/// public transparency report counts; a closing labelled as a plain case
/// move (hiding it from the count) or a lifting labelled as a raise is
/// refused, like any header that does not match its body.
#[test]
fn a_closing_or_lifting_hidden_under_another_kind_is_refused() {
    let (mut w, (_, _, ek), _) = two_customers();
    let case = w.signal(&ek, "min-x", Some("lim-07"));
    w.act(ActionKind::CaseTransition { case: case.clone(), to: CaseState::Triaged, determination: None }, 0).unwrap();
    let triaged = w.entries.len() - 1;
    assert_eq!(w.entries[triaged].0.kind, EntryKind::Case);
    let raise = ActionKind::ProposeSuspension {
        target: SuspensionTarget::Customer("min-x".into()),
        level: SuspensionLevel::L1,
    };
    w.act(raise, 0).unwrap();
    assert_eq!(w.entries[w.entries.len() - 1].0.kind, EntryKind::Suspension);

    for (what, kind, hidden) in [
        (
            ActionKind::CaseTransition { case: case.clone(), to: CaseState::Closed, determination: None },
            EntryKind::CaseClosure,
            EntryKind::Case,
        ),
        (
            ActionKind::ProposeSuspension {
                target: SuspensionTarget::Customer("min-x".into()),
                level: SuspensionLevel::None,
            },
            EntryKind::SuspensionLift,
            EntryKind::Suspension,
        ),
    ] {
        let body = w.action_body(what, 0);
        let index = w.entries.len() as u64;
        let tags = match kind {
            EntryKind::SuspensionLift => {
                w.state.keyring().tags(&["min-x".into()], &body_digest(&[0; 32], &body)).unwrap()
            }
            _ => vec![],
        };
        let honest = EntryHeader {
            kind,
            time: w.now,
            actor: Some(w.keys.admin[0].key_id()),
            tags,
            body_digest: body_digest(&[0; 32], &body),
        };
        let mislabelled = EntryHeader { kind: hidden, ..honest.clone() };
        let err = w.state.apply(index, &mislabelled, &body).unwrap_err().to_string();
        assert!(err.contains(&format!("the body is a {kind} entry, but the header says {hidden}")), "{err}");
        assert_eq!(w.append(body).map(|i| w.entries[i as usize].0.kind).unwrap(), kind);
    }
}

/// A deployment waiting for approval (its customer held) whose id a person
/// took meanwhile is refused at approval: registered, it would hand the
/// person's entries to the customer, whose keys are per id.
#[test]
fn a_deployment_whose_id_a_person_took_while_it_waited_is_refused() {
    let (mut w, _, _) = two_customers();
    w.suspend(SuspensionTarget::Customer("min-x".into()), SuspensionLevel::L1);
    let register = ActionKind::RegisterDeployment {
        deployment: "lim-09".into(),
        customer: "min-x".into(),
        product: "lim".into(),
        site: covenant_core::statements::Site { country: "XA".into(), site_id: "s9".into() },
        provisioned_version: "1.0.0".parse().unwrap(),
    };
    let proposal = w.propose(register, 0).unwrap();
    assert!(!w.state.facts().proposal(&proposal).unwrap().in_force, "a held customer's deployment waits");
    w.identity(IdentityRole::Reporter, "lim-09", &support::key(200));
    let err = w.approve(proposal, 1).unwrap_err().to_string();
    assert!(err.contains("lim-09 is a person's id"), "{err}");
    assert!(w.state.deployment("lim-09").is_none());
}

/// Issue #20: an engineer's identity may carry a scope, the customers whose
/// deployments it verifies (and carries for from air-gapped sites). A
/// scoped engineer's verification of another customer's deployment is
/// refused; a customer's or reporter's identity still carries no scope.
#[test]
fn a_scoped_engineer_verifies_only_its_customers_deployments() {
    let mut w = World::new();
    let (ck, _, _) = setup(&mut w, "min-x", "lim-07", 100);
    let (cy, _, _) = setup(&mut w, "min-y", "lim-08", 110);
    let scoped = key(120);
    w.scoped_identity(IdentityRole::Engineer, "eng-y", &scoped, Some(vec!["min-y".into()])).unwrap();
    let att_x = w.attest(&ck, "min-x", &["lim-07"], 100);
    let att_y = w.attest(&cy, "min-y", &["lim-08"], 100);
    let outside =
        w.verification_body(&scoped, att_x, "lim-07", site("s1"), Sha256Digest::of(b"c"), VerificationResult::Pass);
    let before = w.entries.len();
    let err = w.append(outside).unwrap_err();
    assert!(matches!(err, covenant_core::state::Rejection::NotAllowed(_)), "{err:?}");
    assert!(err.to_string().contains("scope does not hold customer min-x"), "{err}");
    assert_eq!(w.entries.len(), before, "nothing appended");
    w.verify(&scoped, att_y, "lim-08", Sha256Digest::of(b"c"));
    for (role, id) in [(IdentityRole::Customer, "min-x"), (IdentityRole::Reporter, "ngo-1")] {
        let err = w.scoped_identity(role, id, &key(130), Some(vec!["min-x".into()])).unwrap_err();
        assert!(err.to_string().contains("only an auditor's or an engineer's identity carries a scope"), "{err}");
    }
}
