//! Policy, table-driven: every condition met, unmet and not applicable;
//! every cell of the suspension table of `docs/policy.md`; dual control; the case
//! lifecycle; the higher of customer and deployment suspension.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use covenant_core::digest::{Sha256Digest, Timestamp};
use covenant_core::envelope;
use covenant_core::policy::{Logging, Outcome, suspension_allows};
use covenant_core::state::legal_move;
use covenant_core::statements::*;
use support::key;
use support::world::{DAY, World, setup, site};

/// The status a decision reports for one condition.
fn status(d: &Decision, name: &str) -> (ConditionStatus, String) {
    let c = d.conditions.iter().find(|c| c.condition == name).unwrap();
    (c.status, c.reason.clone())
}

/// A world with customer `min-x`, deployment `lim-07` at 1.0.0, release
/// 1.1.0 (capability) published, and a contract with `conditions`.
fn world(conditions: Vec<Condition>) -> (World, Vec<u8>, support::world::Keys3) {
    let mut w = World::new();
    let keys = setup(&mut w, "min-x", "lim-07", 100);
    w.release("1.0.0", ReleaseClass::Capability, "1.0.0");
    w.release("1.1.0", ReleaseClass::Capability, "1.1.0");
    w.contract("min-x", 1, conditions).unwrap();
    let checkin = w.checkin(&keys.1, "lim-07", "1.0.0", "1.0.0");
    (w, checkin, keys)
}

fn attested() -> Condition {
    Condition::EndUseAttested { max_age_days: 365, allowed_end_uses: vec![] }
}

#[test]
fn end_use_attested_met_unmet_and_not_applicable() {
    // Not applicable: the contract does not require it.
    let (w, checkin, _) = world(vec![]);
    let d = w.decide(&checkin);
    assert_eq!(status(&d, "end_use_attested").0, ConditionStatus::NotApplicable);
    assert_eq!(d.verdict, Verdict::Grant);

    // Unmet: no attestation.
    let (mut w, checkin, (ck, dk, _)) = world(vec![attested()]);
    let (s, why) = status(&w.decide(&checkin), "end_use_attested");
    assert_eq!(s, ConditionStatus::Unmet);
    assert!(why.contains("No end-use attestation covers deployment lim-07"), "{why}");
    // Met: attested.
    w.attest(&ck, "min-x", &["lim-07"], 200);
    let checkin = w.checkin(&dk, "lim-07", "1.0.0", "1.0.0");
    let d = w.decide(&checkin);
    assert_eq!(status(&d, "end_use_attested").0, ConditionStatus::Met);
    assert_eq!(d.verdict, Verdict::Grant);
    // Unmet: expired.
    w.advance_days(201);
    let (s, why) = status(&w.decide(&checkin), "end_use_attested");
    assert_eq!(s, ConditionStatus::Unmet);
    assert!(why.contains("expired on"), "{why}");
}

#[test]
fn end_use_attested_too_old_or_for_an_end_use_not_allowed() {
    let (mut w, checkin, (ck, _, _)) =
        world(vec![Condition::EndUseAttested { max_age_days: 30, allowed_end_uses: vec!["border-control".into()] }]);
    w.attest(&ck, "min-x", &["lim-07"], 400);
    let (s, why) = status(&w.decide(&checkin), "end_use_attested");
    assert_eq!(s, ConditionStatus::Unmet);
    assert!(why.contains("\"lawful-interception\", which the contract does not allow"), "{why}");

    let (mut w, checkin, (ck, _, _)) =
        world(vec![Condition::EndUseAttested { max_age_days: 30, allowed_end_uses: vec![] }]);
    w.attest(&ck, "min-x", &["lim-07"], 400);
    assert_eq!(status(&w.decide(&checkin), "end_use_attested").0, ConditionStatus::Met);
    w.advance_days(31);
    let (s, why) = status(&w.decide(&checkin), "end_use_attested");
    assert_eq!(s, ConditionStatus::Unmet);
    assert!(why.contains("more than 30 days ago"), "{why}");
}

#[test]
fn an_attestation_by_a_key_revoked_as_compromised_no_longer_counts() {
    let (mut w, checkin, (ck, _, _)) = world(vec![attested()]);
    let since = w.now;
    w.attest(&ck, "min-x", &["lim-07"], 200);
    assert_eq!(status(&w.decide(&checkin), "end_use_attested").0, ConditionStatus::Met);
    // The customer key's certificate is the first one registered for min-x.
    let cert = w
        .state
        .any_identity_of_key(&ck.key_id())
        .map(|_| ())
        .and_then(|()| w.state.identities().find(|(_, i)| i.signing_key == ck.public()).map(|(fp, _)| *fp));
    let revoke = ActionKind::RevokeIdentity { certificate_sha256: cert.unwrap(), compromised_since: Some(since) };
    let p = w.propose(revoke, 0).unwrap();
    // The key is cut off at once; what it signed stops counting once a
    // second admin approved the compromise.
    assert!(w.state.identity_of_key(&ck.key_id()).is_none());
    w.approve(p, 1).unwrap();
    assert_eq!(status(&w.decide(&checkin), "end_use_attested").0, ConditionStatus::Unmet);
}

#[test]
fn one_admin_cannot_void_a_failing_verification_by_revoking_its_engineer_as_compromised() {
    let fv = Condition::FieldVerified { max_age_days: 90, methods: vec![] };
    let (mut w, _, (ck, dk, ek)) = world(vec![attested(), fv]);
    let att = w.attest(&ck, "min-x", &["lim-07"], 200);
    w.verify(&ek, att, "lim-07", Sha256Digest::of(b"config"));
    w.advance_days(10);
    // The engineer finds an inserted module: the update is withheld.
    let since = w.now;
    let body =
        w.verification_body(&ek, att, "lim-07", site("s1"), Sha256Digest::of(b"config"), VerificationResult::Fail);
    w.append(body).unwrap();
    let checkin = w.checkin(&dk, "lim-07", "1.0.0", "1.0.0");
    assert_eq!(w.decide(&checkin).verdict, Verdict::Withhold);
    // One admin revokes the engineer "as compromised since" the failure,
    // which would void it and bring back the older pass.
    let cert = w.state.identities().find(|(_, i)| i.signing_key == ek.public()).map(|(fp, _)| *fp).unwrap();
    let revoke = ActionKind::RevokeIdentity { certificate_sha256: cert, compromised_since: Some(since) };
    let p = w.propose(revoke, 0).unwrap();
    // The key is cut off at once ...
    let body =
        w.verification_body(&ek, att, "lim-07", site("s1"), Sha256Digest::of(b"config"), VerificationResult::Pass);
    assert!(w.append(body).unwrap_err().to_string().contains("signed by a revoked key"));
    // ... but the failure still counts: the withhold stands.
    let checkin = w.checkin(&dk, "lim-07", "1.0.0", "1.0.0");
    let (s, why) = status(&w.decide(&checkin), "field_verified");
    assert_eq!(s, ConditionStatus::Unmet);
    assert!(why.contains("failed"), "{why}");
    match &w.state.facts().proposal(&p).unwrap().kind {
        covenant_core::state::ProposalKind::Compromise { voids, .. } => assert_eq!(*voids, 1),
        other => panic!("expected a compromise proposal, got {other:?}"),
    }
    // A second admin's approval voids it.
    w.approve(p, 1).unwrap();
    assert_eq!(status(&w.decide(&checkin), "field_verified").0, ConditionStatus::Met);
}

#[test]
fn a_compromise_that_voids_nothing_takes_effect_with_the_revocation() {
    let (mut w, _, (_, _, ek)) = world(vec![attested()]);
    let cert = w.state.identities().find(|(_, i)| i.signing_key == ek.public()).map(|(fp, _)| *fp).unwrap();
    let since = w.now;
    w.act(ActionKind::RevokeIdentity { certificate_sha256: cert, compromised_since: Some(since) }, 0).unwrap();
    let revoked = w.state.identity(&cert).unwrap().revoked.clone().unwrap();
    assert_eq!(revoked.compromised_since, Some(since));
}

#[test]
fn field_verified_met_unmet_and_not_applicable() {
    let fv = Condition::FieldVerified { max_age_days: 90, methods: vec![] };
    let (w, checkin, _) = world(vec![attested()]);
    assert_eq!(status(&w.decide(&checkin), "field_verified").0, ConditionStatus::NotApplicable);

    let (mut w, checkin, (ck, dk, ek)) = world(vec![attested(), fv]);
    let att = w.attest(&ck, "min-x", &["lim-07"], 200);
    let (s, why) = status(&w.decide(&checkin), "field_verified");
    assert_eq!(s, ConditionStatus::Unmet);
    assert!(why.contains("No field verification of deployment lim-07"), "{why}");
    w.verify(&ek, att, "lim-07", Sha256Digest::of(b"config"));
    assert_eq!(status(&w.decide(&checkin), "field_verified").0, ConditionStatus::Met);
    // A failed verification is unmet.
    let body =
        w.verification_body(&ek, att, "lim-07", site("s1"), Sha256Digest::of(b"config"), VerificationResult::Fail);
    w.append(body).unwrap();
    let (s, why) = status(&w.decide(&checkin), "field_verified");
    assert_eq!(s, ConditionStatus::Unmet);
    assert!(why.contains("failed"), "{why}");
    // Too old.
    w.verify(&ek, att, "lim-07", Sha256Digest::of(b"config"));
    w.advance_days(91);
    let checkin = w.checkin(&dk, "lim-07", "1.0.0", "1.0.0");
    let (s, why) = status(&w.decide(&checkin), "field_verified");
    assert_eq!(s, ConditionStatus::Unmet);
    assert!(why.contains("more than 90 days ago"), "{why}");
    // A verification of an older attestation does not count for a new one.
    w.attest(&ck, "min-x", &["lim-07"], 200);
    let (s, _) = status(&w.decide(&checkin), "field_verified");
    assert_eq!(s, ConditionStatus::Unmet);
}

#[test]
fn site_bound_met_unmet_and_not_applicable() {
    let (w, checkin, _) = world(vec![]);
    assert_eq!(status(&w.decide(&checkin), "site_bound").0, ConditionStatus::NotApplicable);

    let bound = Condition::SiteBound { allowed_countries: vec!["XA".into()], allowed_site_ids: vec!["s1".into()] };
    let (mut w, checkin, (ck, _, ek)) = world(vec![bound.clone()]);
    let att = w.attest(&ck, "min-x", &["lim-07"], 200);
    let (s, why) = status(&w.decide(&checkin), "site_bound");
    assert_eq!((s, why.contains("No field verification has observed")), (ConditionStatus::Unmet, true), "{why}");
    w.verify(&ek, att, "lim-07", Sha256Digest::of(b"config"));
    assert_eq!(status(&w.decide(&checkin), "site_bound").0, ConditionStatus::Met);
    // Observed somewhere the attestation does not name.
    let body =
        w.verification_body(&ek, att, "lim-07", site("s9"), Sha256Digest::of(b"config"), VerificationResult::Pass);
    w.append(body).unwrap();
    let (s, why) = status(&w.decide(&checkin), "site_bound");
    assert_eq!(s, ConditionStatus::Unmet);
    assert!(why.contains("at site s9 in XA, which its end-use attestation does not name"), "{why}");

    // An attested site the contract does not allow.
    let (mut w, checkin, (ck, _, _)) =
        world(vec![Condition::SiteBound { allowed_countries: vec!["XB".into()], allowed_site_ids: vec![] }]);
    w.attest(&ck, "min-x", &["lim-07"], 200);
    let (s, why) = status(&w.decide(&checkin), "site_bound");
    assert_eq!(
        (s, why.contains("names site s1 in XA, which the contract does not allow")),
        (ConditionStatus::Unmet, true)
    );
}

#[test]
fn integrity_match_met_unmet_and_not_applicable() {
    // Nothing to compare: not applicable (the manifest lists no digests and
    // there is no verification).
    let (w, checkin, _) = world(vec![Condition::IntegrityMatch]);
    let (s, why) = status(&w.decide(&checkin), "integrity_match");
    assert_eq!((s, why.contains("nothing to compare")), (ConditionStatus::NotApplicable, true));

    // The configuration differs from the verified one: unmet; equal: met.
    let (mut w, _, (ck, dk, ek)) = world(vec![Condition::IntegrityMatch]);
    let att = w.attest(&ck, "min-x", &["lim-07"], 200);
    w.verify(&ek, att, "lim-07", Sha256Digest::of(b"verified config"));
    let tampered = w.checkin_with(&dk, "lim-07", "1.0.0", "1.0.0", Default::default(), Sha256Digest::of(b"other"));
    let (s, why) = status(&w.decide(&tampered), "integrity_match");
    assert_eq!(s, ConditionStatus::Unmet);
    assert!(why.contains("differs from the one the field engineer verified"), "{why}");
    let good =
        w.checkin_with(&dk, "lim-07", "1.0.0", "1.0.0", Default::default(), Sha256Digest::of(b"verified config"));
    assert_eq!(status(&w.decide(&good), "integrity_match").0, ConditionStatus::Met);

    // An installed version the vendor never published (as the ledger
    // records it: provisioned so): unmet.
    let mut w = World::new();
    let (_, dk, _) = support::world::setup_at(&mut w, "min-x", "lim-07", 100, "1.0.5");
    w.release("1.1.0", ReleaseClass::Capability, "1.1.0");
    w.contract("min-x", 1, vec![Condition::IntegrityMatch]).unwrap();
    let unknown = w.checkin(&dk, "lim-07", "1.0.5", "1.0.0");
    let (s, why) = status(&w.decide(&unknown), "integrity_match");
    assert_eq!((s, why.contains("never published")), (ConditionStatus::Unmet, true));
}

#[test]
fn integrity_match_compares_the_software_with_the_manifest() {
    let mut w = World::new();
    let (_, dk, _) = setup(&mut w, "min-x", "lim-07", 100);
    let mut m = support::world::manifest("1.0.0", ReleaseClass::Capability, "1.0.0");
    m.expected_installed_digests.insert("/opt/lim/bin".into(), Sha256Digest::of(b"bin"));
    w.append(covenant_core::envelope::sign(&m, &[&w.keys.release[0], &w.keys.release[1]])).unwrap();
    w.release("1.1.0", ReleaseClass::Capability, "1.1.0");
    w.contract("min-x", 1, vec![Condition::IntegrityMatch]).unwrap();
    let mut software = std::collections::BTreeMap::new();
    software.insert("/opt/lim/bin".to_owned(), Sha256Digest::of(b"bin"));
    let good = w.checkin_with(&dk, "lim-07", "1.0.0", "1.0.0", software.clone(), Sha256Digest::of(b"c"));
    assert_eq!(status(&w.decide(&good), "integrity_match").0, ConditionStatus::Met);
    software.insert("/opt/lim/implant.so".to_owned(), Sha256Digest::of(b"implant"));
    let bad = w.checkin_with(&dk, "lim-07", "1.0.0", "1.0.0", software, Sha256Digest::of(b"c"));
    let (s, why) = status(&w.decide(&bad), "integrity_match");
    assert_eq!(s, ConditionStatus::Unmet);
    assert!(why.contains("1 file(s) differ, first /opt/lim/implant.so"), "{why}");
}

fn licence(w: &mut World, expires: Timestamp, versions: &str) {
    w.act_approved(
        ActionKind::RecordLicence {
            licence: Licence {
                id: "bafa-123".into(),
                customer: "min-x".into(),
                authority: "BAFA".into(),
                expires,
                versions: versions.parse().unwrap(),
            },
        },
        0,
    )
    .unwrap();
}

#[test]
fn licence_valid_met_unmet_and_not_applicable() {
    let (w, checkin, _) = world(vec![]);
    assert_eq!(status(&w.decide(&checkin), "licence_valid").0, ConditionStatus::NotApplicable);

    let (mut w, checkin, _) = world(vec![Condition::LicenceValid { licence: "bafa-123".into() }]);
    let (s, why) = status(&w.decide(&checkin), "licence_valid");
    assert_eq!((s, why.contains("No export licence bafa-123")), (ConditionStatus::Unmet, true));
    let expires = w.now.plus_seconds(30 * DAY);
    licence(&mut w, expires, ">=1.0, <2");
    let d = w.decide(&checkin);
    assert_eq!((status(&d, "licence_valid").0, d.verdict), (ConditionStatus::Met, Verdict::Grant));
    // A release outside the licence's versions is withheld, the one inside offered.
    w.release("2.0.0", ReleaseClass::Capability, "2.0.0");
    let d = w.decide(&checkin);
    assert_eq!(d.verdict, Verdict::Grant);
    assert_eq!(d.withheld_above.len(), 1);
    assert!(d.withheld_above[0].reasons[0].contains("does not cover version 2.0.0"), "{:?}", d.withheld_above);
    w.advance_days(31);
    let (s, why) = status(&w.decide(&checkin), "licence_valid");
    assert_eq!((s, why.contains("expired on")), (ConditionStatus::Unmet, true));
}

#[test]
fn denied_party_clear_met_unmet_and_not_applicable() {
    let (w, checkin, _) = world(vec![]);
    assert_eq!(status(&w.decide(&checkin), "denied_party_clear").0, ConditionStatus::NotApplicable);

    let (mut w, checkin, (ck, _, _)) = world(vec![Condition::DeniedPartyClear { list: "eu-sanctions".into() }]);
    w.attest(&ck, "min-x", &["lim-07"], 200);
    assert_eq!(status(&w.decide(&checkin), "denied_party_clear").0, ConditionStatus::Met);
    // Listed on another list: still clear.
    let party =
        |list: &str| DeniedParty { list: list.into(), legal_name: "MINISTRY  min-x".into(), country: "XA".into() };
    w.act(ActionKind::ListDeniedParty { party: party("us-entity-list") }, 0).unwrap();
    assert_eq!(status(&w.decide(&checkin), "denied_party_clear").0, ConditionStatus::Met);
    w.act(ActionKind::ListDeniedParty { party: party("eu-sanctions") }, 0).unwrap();
    let (s, why) = status(&w.decide(&checkin), "denied_party_clear");
    assert_eq!((s, why.contains("on the denied-party list eu-sanctions")), (ConditionStatus::Unmet, true));
}

#[test]
fn no_open_case_met_unmet_not_applicable_and_a_closed_case_never_blocks() {
    let (mut w, checkin, (_, _, ek)) = world(vec![]);
    w.signal(&ek, "min-x", Some("lim-07"));
    assert_eq!(status(&w.decide(&checkin), "no_open_case").0, ConditionStatus::NotApplicable);

    let (mut w, checkin, (_, _, ek)) = world(vec![Condition::NoOpenCase { from_state: CaseState::Triaged }]);
    let case = w.signal(&ek, "min-x", Some("lim-07"));
    // Received is below from_state: met.
    assert_eq!(status(&w.decide(&checkin), "no_open_case").0, ConditionStatus::Met);
    w.move_case(&case, CaseState::Triaged, None).unwrap();
    let d = w.decide(&checkin);
    assert_eq!((status(&d, "no_open_case").0, d.verdict), (ConditionStatus::Unmet, Verdict::Withhold));
    // Closed (not credible): never blocks.
    w.move_case(&case, CaseState::Closed, None).unwrap();
    let d = w.decide(&checkin);
    assert_eq!((status(&d, "no_open_case").0, d.verdict), (ConditionStatus::Met, Verdict::Grant));
    // A case against the whole customer blocks each of its deployments.
    let case = w.signal(&ek, "min-x", None);
    w.move_case(&case, CaseState::Triaged, None).unwrap();
    assert_eq!(status(&w.decide(&checkin), "no_open_case").0, ConditionStatus::Unmet);
}

#[test]
fn no_contract_no_update() {
    let mut w = World::new();
    let (_, dk, _) = setup(&mut w, "min-x", "lim-07", 100);
    w.release("1.1.0", ReleaseClass::Capability, "1.1.0");
    let d = w.decide(&w.checkin(&dk, "lim-07", "1.0.0", "1.0.0"));
    assert_eq!(d.verdict, Verdict::Withhold);
    assert!(d.conditions[0].reason.contains("No contract covers deployment lim-07"));
}

#[test]
fn current_only_when_no_newer_release_exists_at_all() {
    // A deployment the ledger records at 1.1.0 (provisioned so).
    let mut current = World::new();
    let (_, dk, _) = support::world::setup_at(&mut current, "min-x", "lim-07", 100, "1.1.0");
    current.release("1.0.0", ReleaseClass::Capability, "1.0.0");
    current.release("1.1.0", ReleaseClass::Capability, "1.1.0");
    current.contract("min-x", 1, vec![]).unwrap();
    assert_eq!(current.evaluate(&current.checkin(&dk, "lim-07", "1.1.0", "1.1.0")), Outcome::Current);
    let (mut w, _, (_, dk, _)) = world(vec![]);
    // Under legal hold a newer release is withheld, not "current".
    w.suspend(SuspensionTarget::Customer("min-x".into()), SuspensionLevel::LegalHold);
    let d = w.decide(&w.checkin(&dk, "lim-07", "1.0.0", "1.0.0"));
    assert_eq!(d.verdict, Verdict::Withhold);
    assert_eq!(d.withheld_above.len(), 1);
}

#[test]
fn the_newest_allowed_release_is_offered_and_newer_ones_named() {
    let (mut w, _, (_, dk, _)) = world(vec![]);
    w.release("1.1.1", ReleaseClass::SecurityFix, "1.0.0");
    w.release("1.2.0", ReleaseClass::Capability, "1.2.0");
    w.suspend(SuspensionTarget::Deployment("lim-07".into()), SuspensionLevel::L1);
    let d = w.decide(&w.checkin(&dk, "lim-07", "1.0.0", "1.0.0"));
    assert_eq!(d.verdict, Verdict::Grant);
    let offered = w.state.facts().release(&d.release.unwrap()).unwrap();
    assert_eq!(offered.manifest.version.to_string(), "1.1.1");
    let names: Vec<String> = d.withheld_above.iter().map(|r| r.version.to_string()).collect();
    assert_eq!(names, ["1.2.0"]);
    assert!(d.withheld_above[0].reasons[0].contains("an L1 suspension does not allow capability releases"));
    assert_eq!(d.suspension, SuspensionLevel::L1);
    assert_eq!((d.policy_version, d.state_size), (1, w.state.size()));
    assert_eq!(d.contract, Some(ContractRef { id: "contract-min-x".into(), version: 1 }));
    assert_eq!(d.expires_at, Some(w.now.plus_seconds(7 * DAY)));
    assert_eq!(d.checkin, w.checkin(&dk, "lim-07", "1.0.0", "1.0.0"), "carries the signed check-in");
}

/// the suspension table of `docs/policy.md`, written out cell by cell: for each level
/// and class, whether a release ships with its baseline below, at and above
/// the installed one, without and with a two-admin approval.
#[test]
fn every_cell_of_the_suspension_table() {
    use ReleaseClass as C;
    use SuspensionLevel as L;
    // (level, class, [below, at, above] without approval, [..] with approval)
    let yes = [true, true, true];
    let no = [false, false, false];
    let not_newer = [true, true, false];
    let table: [(L, C, [bool; 3], [bool; 3]); 20] = [
        (L::None, C::Capability, yes, yes),
        (L::None, C::SecurityFix, yes, yes),
        (L::None, C::ComplianceEnabling, yes, yes),
        (L::None, C::CapabilityRemoval, yes, yes),
        (L::L1, C::Capability, no, no),
        (L::L1, C::SecurityFix, not_newer, not_newer),
        (L::L1, C::ComplianceEnabling, not_newer, not_newer),
        (L::L1, C::CapabilityRemoval, yes, yes),
        (L::L2, C::Capability, no, no),
        (L::L2, C::SecurityFix, no, not_newer),
        (L::L2, C::ComplianceEnabling, not_newer, not_newer),
        (L::L2, C::CapabilityRemoval, yes, yes),
        (L::L3, C::Capability, no, no),
        (L::L3, C::SecurityFix, no, no),
        (L::L3, C::ComplianceEnabling, not_newer, not_newer),
        (L::L3, C::CapabilityRemoval, yes, yes),
        (L::LegalHold, C::Capability, no, no),
        (L::LegalHold, C::SecurityFix, no, no),
        (L::LegalHold, C::ComplianceEnabling, no, no),
        (L::LegalHold, C::CapabilityRemoval, no, no),
    ];
    let installed: semver::Version = "1.1.0".parse().unwrap();
    let baselines: [semver::Version; 3] =
        ["1.0.0".parse().unwrap(), "1.1.0".parse().unwrap(), "1.2.0".parse().unwrap()];
    for (level, class, without, with) in table {
        for (i, baseline) in baselines.iter().enumerate() {
            for (approved, expected) in [(false, without[i]), (true, with[i])] {
                let got = suspension_allows(level, class, baseline, Some(&installed), approved);
                assert_eq!(got.is_ok(), expected, "{level} {class} baseline {baseline} approved {approved}: {got:?}");
            }
        }
    }
}

/// The same table through `evaluate`, one world per level: which of a
/// security fix below, at and above the installed baseline, a compliance
/// release and a capability-removal release each level lets through.
#[test]
fn the_suspension_table_through_evaluate() {
    use SuspensionLevel as L;
    for level in [L::None, L::L1, L::L2, L::L3, L::LegalHold] {
        for (class, baseline, allowed) in [
            (ReleaseClass::SecurityFix, "1.0.0", matches!(level, L::None | L::L1)),
            (ReleaseClass::SecurityFix, "1.1.0", matches!(level, L::None | L::L1)),
            (ReleaseClass::SecurityFix, "1.2.0", level == L::None),
            (ReleaseClass::ComplianceEnabling, "1.1.0", level != L::LegalHold),
            (ReleaseClass::ComplianceEnabling, "1.2.0", level == L::None),
            (ReleaseClass::CapabilityRemoval, "1.2.0", level != L::LegalHold),
            (ReleaseClass::Capability, "1.2.0", level == L::None),
        ] {
            let mut w = World::new();
            let (_, dk, _) = support::world::setup_at(&mut w, "min-x", "lim-07", 100, "1.1.0");
            w.release("1.1.0", ReleaseClass::Capability, "1.1.0");
            // The only release newer than the installed 1.1.0.
            let version = "1.2.5";
            let baseline = if class == ReleaseClass::Capability { version } else { baseline };
            w.release(version, class, baseline);
            w.contract("min-x", 1, vec![]).unwrap();
            if level != L::None {
                w.suspend(SuspensionTarget::Deployment("lim-07".into()), level);
            }
            let d = w.decide(&w.checkin(&dk, "lim-07", "1.1.0", "1.1.0"));
            let offered = d.release.map(|r| w.state.facts().release(&r).unwrap().manifest.version.to_string());
            let got = offered.as_deref() == Some(version);
            assert_eq!(got, allowed, "{level} {class} baseline {baseline}: {offered:?} {:?}", d.withheld_above);
        }
    }
}

#[test]
fn the_higher_of_customer_and_deployment_suspension_applies() {
    use SuspensionLevel as L;
    for (customer, deployment, effective) in
        [(L::L1, L::L3, L::L3), (L::L3, L::L1, L::L3), (L::None, L::L2, L::L2), (L::LegalHold, L::None, L::LegalHold)]
    {
        let (mut w, checkin, _) = world(vec![]);
        if customer != L::None {
            w.suspend(SuspensionTarget::Customer("min-x".into()), customer);
        }
        if deployment != L::None {
            w.suspend(SuspensionTarget::Deployment("lim-07".into()), deployment);
        }
        let d = w.decide(&checkin);
        assert_eq!(d.suspension, effective, "customer {customer}, deployment {deployment}");
        assert_eq!(d.verdict, Verdict::Withhold, "a capability release never ships under a suspension");
    }
}

#[test]
fn one_admin_alone_cannot_lift_a_suspension_and_counts_once() {
    let (mut w, checkin, _) = world(vec![]);
    let target = SuspensionTarget::Customer("min-x".into());
    // Raising to L1 takes effect at once; to L3 needs two.
    w.propose(ActionKind::ProposeSuspension { target: target.clone(), level: SuspensionLevel::L1 }, 0).unwrap();
    assert_eq!(w.state.customer("min-x").unwrap().suspension, SuspensionLevel::L1);
    let p = w.propose(ActionKind::ProposeSuspension { target: target.clone(), level: SuspensionLevel::L3 }, 0).unwrap();
    assert_eq!(w.state.customer("min-x").unwrap().suspension, SuspensionLevel::L1, "not yet");
    // The proposer approving their own proposal counts once: refused.
    let e = w.approve(p, 0).unwrap_err();
    assert!(e.to_string().contains("counts once"), "{e}");
    w.approve(p, 1).unwrap();
    assert_eq!(w.state.customer("min-x").unwrap().suspension, SuspensionLevel::L3);
    // Lowering (reinstatement) by one admin alone does nothing.
    let lift = w.propose(ActionKind::ProposeSuspension { target, level: SuspensionLevel::None }, 1).unwrap();
    assert_eq!(w.state.customer("min-x").unwrap().suspension, SuspensionLevel::L3);
    assert_eq!(w.decide(&checkin).verdict, Verdict::Withhold);
    assert!(w.approve(lift, 1).unwrap_err().to_string().contains("counts once"));
    w.approve(lift, 0).unwrap();
    assert_eq!(w.state.customer("min-x").unwrap().suspension, SuspensionLevel::None);
    assert_eq!(w.decide(&checkin).verdict, Verdict::Grant);
    // An approval of a proposal already in force, or of none, is refused.
    assert!(w.approve(lift, 1).unwrap_err().to_string().contains("already in force"));
    assert!(w.approve(Sha256Digest::of(b"nothing"), 1).unwrap_err().to_string().contains("no proposal"));
}

#[test]
fn one_admin_alone_cannot_waive_a_condition() {
    let (mut w, checkin, _) = world(vec![attested()]);
    let until = w.now.plus_seconds(10 * DAY);
    let p = w
        .propose(
            ActionKind::ProposeWaiver { deployment: "lim-07".into(), condition: "end_use_attested".into(), until },
            0,
        )
        .unwrap();
    assert_eq!(status(&w.decide(&checkin), "end_use_attested").0, ConditionStatus::Unmet);
    assert!(w.approve(p, 0).is_err());
    assert_eq!(status(&w.decide(&checkin), "end_use_attested").0, ConditionStatus::Unmet);
    w.approve(p, 1).unwrap();
    let (s, why) = status(&w.decide(&checkin), "end_use_attested");
    assert_eq!((s, why.contains("Waived for deployment lim-07")), (ConditionStatus::Met, true));
    w.advance_days(11);
    assert_eq!(status(&w.decide(&checkin), "end_use_attested").0, ConditionStatus::Unmet, "the waiver ended");
}

#[test]
fn one_admin_alone_cannot_pass_a_security_fix_under_l2() {
    let (mut w, checkin, _) = world(vec![]);
    let fix = w.release("1.0.1", ReleaseClass::SecurityFix, "1.0.0");
    w.suspend(SuspensionTarget::Deployment("lim-07".into()), SuspensionLevel::L2);
    let d = w.decide(&checkin);
    assert_eq!(d.verdict, Verdict::Withhold);
    let p = w.propose(ActionKind::ProposeSecurityFix { deployment: "lim-07".into(), release: fix }, 1).unwrap();
    assert!(w.approve(p, 1).is_err());
    assert_eq!(w.decide(&checkin).verdict, Verdict::Withhold);
    w.approve(p, 0).unwrap();
    let d = w.decide(&checkin);
    assert_eq!((d.verdict, d.release), (Verdict::Grant, Some(fix)));
    // Only a security-fix release may be proposed.
    let cap = w.state.facts().release_of("lim", &"1.1.0".parse().unwrap()).unwrap().digest;
    let e = w.propose(ActionKind::ProposeSecurityFix { deployment: "lim-07".into(), release: cap }, 0).unwrap_err();
    assert!(e.to_string().contains("only a security-fix release"), "{e}");
}

/// The legal moves of `docs/policy.md`, written out independently of the code.
const LEGAL: &[(CaseState, Option<Determination>, CaseState)] = &[
    (CaseState::Received, None, CaseState::Triaged),
    (CaseState::Triaged, None, CaseState::Investigating),
    (CaseState::Triaged, None, CaseState::Closed),
    (CaseState::Investigating, None, CaseState::Determined),
    (CaseState::Determined, Some(Determination::Unsubstantiated), CaseState::Closed),
    (CaseState::Determined, Some(Determination::Inconclusive), CaseState::Closed),
    (CaseState::Determined, Some(Determination::Inconclusive), CaseState::Investigating),
    (CaseState::Determined, Some(Determination::Substantiated), CaseState::Remediation),
    (CaseState::Remediation, None, CaseState::Verified),
    (CaseState::Verified, None, CaseState::Closed),
];

/// A world with a case brought to `state` by legal moves.
fn case_in(state: CaseState, det: Option<Determination>) -> (World, String) {
    let (mut w, _, (_, _, ek)) = world(vec![]);
    let case = w.signal(&ek, "min-x", Some("lim-07"));
    use CaseState as S;
    let path: Vec<(S, Option<Determination>)> = match state {
        S::Received => vec![],
        S::Triaged => vec![(S::Triaged, None)],
        S::Investigating => vec![(S::Triaged, None), (S::Investigating, None)],
        S::Determined => vec![(S::Triaged, None), (S::Investigating, None), (S::Determined, det)],
        S::Remediation | S::Verified => {
            let mut p = vec![
                (S::Triaged, None),
                (S::Investigating, None),
                (S::Determined, Some(Determination::Substantiated)),
                (S::Remediation, None),
            ];
            if state == S::Verified {
                p.push((S::Verified, None));
            }
            p
        }
        S::Closed => vec![(S::Triaged, None), (S::Closed, None)],
    };
    for (to, d) in path {
        w.move_case(&case, to, d).unwrap();
    }
    (w, case)
}

#[test]
fn every_illegal_case_transition_is_refused() {
    use CaseState as S;
    let states = [S::Received, S::Triaged, S::Investigating, S::Determined, S::Remediation, S::Verified, S::Closed];
    let dets = [Determination::Unsubstantiated, Determination::Inconclusive, Determination::Substantiated];
    let mut tried = 0;
    for from in states {
        let from_dets: Vec<Option<Determination>> =
            if from == S::Determined { dets.iter().copied().map(Some).collect() } else { vec![None] };
        for det in from_dets {
            for to in states {
                let legal = LEGAL.iter().any(|(f, d, t)| *f == from && (d.is_none() || *d == det) && *t == to);
                assert_eq!(legal_move(from, det, to), legal, "{from:?} ({det:?}) -> {to:?}");
                let (mut w, case) = case_in(from, det);
                let size = w.state.size();
                let to_det = (to == S::Determined).then_some(Determination::Inconclusive);
                let got = w.move_case(&case, to, to_det);
                assert_eq!(got.is_ok(), legal, "{from:?} ({det:?}) -> {to:?}: {got:?}");
                if !legal {
                    assert_eq!(w.state.size(), size, "a refused move changes nothing");
                    assert_eq!(w.state.facts().case(&case).unwrap().state, from);
                }
                tried += 1;
            }
        }
    }
    assert_eq!(tried, 63);
    // A case that does not exist cannot move.
    let (mut w, _) = case_in(S::Received, None);
    assert!(w.move_case("case-999", S::Triaged, None).unwrap_err().to_string().contains("no case"));
}

#[test]
fn a_check_in_not_signed_by_the_deployment_is_refused() {
    let (mut w, _, (ck, _, _)) = world(vec![]);
    // Signed by the customer's key, or by another deployment's key.
    let forged = w.checkin(&ck, "lim-07", "1.0.0", "1.0.0");
    assert!(w.state.verify_checkin(&forged).is_err());
    w.deployment("lim-08", "min-x");
    let other = key(150);
    w.identity(IdentityRole::Deployment, "lim-08", &other);
    let e = w.state.verify_checkin(&w.checkin(&other, "lim-07", "1.0.0", "1.0.0")).unwrap_err();
    assert!(e.to_string().contains("signed by the deployment it names"), "{e}");
}

#[test]
fn unchanged_decisions_are_not_logged_again_and_a_suspension_voids_a_standing_grant() {
    use covenant_core::policy::{Logging, grant_stands, logging};
    let (mut w, checkin, (_, dk, _)) = world(vec![]);
    let grant = w.decide(&checkin);
    assert_eq!(logging(&w.state, &grant, w.now), Logging::Log);
    let index = w.log(&grant).unwrap();
    // The same grant again: it stands.
    let again = w.decide(&w.checkin(&dk, "lim-07", "1.0.0", "1.0.0"));
    assert_eq!(logging(&w.state, &again, w.now), Logging::Standing(index));
    let fact = w.state.facts().decisions_of("lim-07").last().unwrap().clone();
    assert!(grant_stands(&w.state, &fact, w.now));
    // Expired: a new one is logged.
    w.advance_days(8);
    assert!(!grant_stands(&w.state, &fact, w.now));
    assert_eq!(logging(&w.state, &w.decide(&checkin), w.now), Logging::Log);
    w.advance_days(-8);
    // A suspension voids it at once, and the withhold is logged once.
    w.suspend(SuspensionTarget::Deployment("lim-07".into()), SuspensionLevel::L1);
    assert!(!grant_stands(&w.state, &fact, w.now));
    let withhold = w.decide(&w.checkin(&dk, "lim-07", "1.0.0", "1.0.0"));
    assert_eq!(logging(&w.state, &withhold, w.now), Logging::Log);
    let index = w.log(&withhold).unwrap();
    let same = w.decide(&w.checkin(&dk, "lim-07", "1.0.0", "1.0.0"));
    assert_eq!(logging(&w.state, &same, w.now), Logging::Standing(index));
    // A changed reason is logged.
    w.suspend(SuspensionTarget::Deployment("lim-07".into()), SuspensionLevel::L3);
    assert_eq!(logging(&w.state, &w.decide(&checkin), w.now), Logging::Log);
}

// ---- Issue 16: what an outside attack found ---------------------------------

/// Under an L1 suspension, a deployment provisioned at 1.0.0 and never
/// granted anything, with 1.3.0 (capability) and security fix 1.3.1 (built
/// on 1.3.0) published.
fn l1_world() -> (World, support::world::Keys3) {
    let mut w = World::new();
    let keys = setup(&mut w, "min-x", "lim-07", 100);
    w.release("1.0.0", ReleaseClass::Capability, "1.0.0");
    w.release("1.3.0", ReleaseClass::Capability, "1.3.0");
    w.release("1.3.1", ReleaseClass::SecurityFix, "1.3.0");
    w.contract("min-x", 1, vec![]).unwrap();
    w.suspend(SuspensionTarget::Deployment("lim-07".into()), SuspensionLevel::L1);
    (w, keys)
}

#[test]
fn a_devices_claimed_version_does_not_set_its_own_baseline() {
    let (w, (_, dk, _)) = l1_world();
    let claiming = w.decide(&w.checkin(&dk, "lim-07", "1.3.0", "1.3.0"));
    assert_eq!(claiming.verdict, Verdict::Withhold, "1.3.1 is built on 1.3.0, newer than the recorded 1.0.0");
    let honest = w.decide(&w.checkin(&dk, "lim-07", "1.0.0", "1.0.0"));
    assert_eq!(honest.verdict, Verdict::Withhold);
    // The claim is a finding for the officer, never an input: both say the same.
    assert_eq!(honest.finding, None);
    let finding = claiming.finding.clone().unwrap();
    assert!(finding.contains("claims to run lim 1.3.0, but the ledger records 1.0.0"), "{finding}");
    assert_eq!(claiming.withheld_above, honest.withheld_above);
    assert_eq!(claiming.conditions, honest.conditions);
    assert_eq!(covenant_core::state::reasons_digest(&claiming), covenant_core::state::reasons_digest(&honest));
}

#[test]
fn alternating_claimed_versions_log_no_new_decisions() {
    let (mut w, (_, dk, _)) = l1_world();
    let first = w.decide(&w.checkin(&dk, "lim-07", "1.0.0", "1.0.0"));
    let index = w.log(&first).unwrap();
    for claim in ["1.3.0", "0.9.0", "1.0.0", "1.3.1"] {
        let d = w.decide(&w.checkin(&dk, "lim-07", claim, "0.9.0"));
        assert_eq!(covenant_core::policy::logging(&w.state, &d, w.now), Logging::Standing(index), "claim {claim}");
    }
}

#[test]
fn the_installed_version_comes_from_logged_install_reports() {
    let mut w = World::new();
    let (_, dk, _) = setup(&mut w, "min-x", "lim-07", 100);
    w.release("1.0.0", ReleaseClass::Capability, "1.0.0");
    w.release("1.1.0", ReleaseClass::Capability, "1.1.0");
    w.contract("min-x", 1, vec![]).unwrap();
    let d = w.decide(&w.checkin(&dk, "lim-07", "1.0.0", "1.0.0"));
    let grant = w.log(&d).unwrap();
    assert_eq!(w.state.deployment("lim-07").unwrap().installed_version.to_string(), "1.0.0");
    let r = InstallReport {
        type_tag: ReportTag,
        schema: SchemaV1,
        deployment: "lim-07".into(),
        grant_index: grant,
        outcome: InstallOutcome::Installed,
        from_version: "1.0.0".parse().unwrap(),
        to_version: "1.1.0".parse().unwrap(),
        last_checkpoint: CheckpointRef { size: grant + 1, root_hash: Sha256Digest::of(b"root") },
        time: w.now,
    };
    w.append(envelope::sign(&r, &[&dk])).unwrap();
    assert_eq!(w.state.deployment("lim-07").unwrap().installed_version.to_string(), "1.1.0");
    // Now current, whatever the device claims.
    assert_eq!(w.evaluate(&w.checkin(&dk, "lim-07", "1.0.0", "1.0.0")), Outcome::Current);
}

#[test]
fn decisions_beyond_the_bound_per_hour_get_the_standing_answer() {
    use covenant_core::state::{LOGGING_PERIOD, MAX_DECISIONS_PER_PERIOD};
    // The verdict follows the configuration the check-in reports against
    // the verified one: a device alternating it flips grant and withhold.
    let (mut w, _, (ck, dk, ek)) = world(vec![attested(), Condition::IntegrityMatch]);
    let att = w.attest(&ck, "min-x", &["lim-07"], 200);
    w.verify(&ek, att, "lim-07", Sha256Digest::of(b"verified"));
    let mut last = 0;
    for i in 0..MAX_DECISIONS_PER_PERIOD {
        let config = if i % 2 == 0 { b"verified".as_slice() } else { b"other".as_slice() };
        let c = w.checkin_with(&dk, "lim-07", "1.0.0", "1.0.0", Default::default(), Sha256Digest::of(config));
        let d = w.decide(&c);
        assert_eq!(covenant_core::policy::logging(&w.state, &d, w.now), Logging::Log, "decision {i}");
        last = w.log(&d).unwrap();
    }
    let c = w.checkin_with(&dk, "lim-07", "1.0.0", "1.0.0", Default::default(), Sha256Digest::of(b"verified"));
    let d = w.decide(&c);
    assert_eq!(covenant_core::policy::logging(&w.state, &d, w.now), Logging::Bounded(last));
    // A grant of a release never granted to it before is logged all the
    // same (the vendor's releases bound those, not the device).
    w.release("1.2.0", ReleaseClass::Capability, "1.2.0");
    let c = w.checkin_with(&dk, "lim-07", "1.0.0", "1.0.0", Default::default(), Sha256Digest::of(b"verified"));
    let d = w.decide(&c);
    assert_eq!(d.verdict, Verdict::Grant);
    assert_eq!(covenant_core::policy::logging(&w.state, &d, w.now), Logging::Log);
    // Once the hour has room again, it is logged.
    w.now = w.now.plus_seconds(LOGGING_PERIOD);
    let c = w.checkin_with(&dk, "lim-07", "1.0.0", "1.0.0", Default::default(), Sha256Digest::of(b"verified"));
    let d = w.decide(&c);
    assert_eq!(covenant_core::policy::logging(&w.state, &d, w.now), Logging::Log);
}

#[test]
fn a_passing_verification_at_a_site_not_attested_does_not_count() {
    let fv = Condition::FieldVerified { max_age_days: 90, methods: vec![] };
    let (mut w, checkin, (ck, _, ek)) = world(vec![attested(), fv]);
    let att = w.attest(&ck, "min-x", &["lim-07"], 200);
    // The attestation names XA/s1; the engineer observed it at XB/s9.
    let elsewhere = Site { country: "XB".into(), site_id: "s9".into() };
    let body =
        w.verification_body(&ek, att, "lim-07", elsewhere, Sha256Digest::of(b"config"), VerificationResult::Pass);
    w.append(body).unwrap();
    let (s, why) = status(&w.decide(&checkin), "field_verified");
    assert_eq!(s, ConditionStatus::Unmet);
    assert!(why.contains("observed it at site s9 in XB, which its end-use attestation does not name"), "{why}");
}
