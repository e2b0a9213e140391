//! Each statement of `docs/formats.md`: a valid example
//! round-trips through its payload bytes, and each of its own rules refuses
//! a payload that breaks it, with the exact field and rule.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;

use covenant_core::digest::Sha256Digest;
use covenant_core::envelope::{self, EnvelopeError};
use covenant_core::keys::KeySet;
use covenant_core::statements::*;
use support::{NOW, key, release};

fn roundtrip<T: Payload + PartialEq + std::fmt::Debug>(value: &T) {
    let bytes = value.to_payload_bytes();
    assert_eq!(&T::parse(&bytes).unwrap(), value);
    let k = key(9);
    let signed = envelope::sign(value, &[&k]);
    assert_eq!(envelope::verify::<T>(&signed, &KeySet::single(k.public())).unwrap().value(), value);
}

fn refused<T: Payload>(value: &T) -> StatementError {
    T::parse(&value.to_payload_bytes()).err().expect("payload must be refused")
}

fn attestation() -> InTotoStatement<EndUseAttestation> {
    InTotoStatement::new(
        vec![deployment_subject("lim-07")],
        EndUseAttestation {
            customer: "ministry-x".into(),
            end_user: EndUser {
                legal_name: "Ministry X, Directorate of Communications".into(),
                agency_type: "law enforcement".into(),
                country: "DE".into(),
            },
            end_use: EndUse {
                category: "lawful-interception".into(),
                description: "court-ordered interception".into(),
            },
            legal_basis: "Code of Criminal Procedure §100a".into(),
            oversight_body: "Federal Data Protection Commissioner".into(),
            sites: vec![Site { country: "DE".into(), site_id: "site-berlin-1".into() }],
            undertakings: Undertakings {
                no_reexport_transfer_or_relocation: true,
                no_modification: true,
                no_targeting_of_protected_groups: true,
                consent_to_audits_and_site_checks: true,
            },
            facts_unknown_to_signer: String::new(),
            signatory: Signatory { name: "A. Person".into(), title: "Director".into() },
            valid_from: NOW,
            valid_until: NOW.plus_seconds(180 * 86_400),
        },
    )
}

fn verification(attestation_digest: Sha256Digest) -> InTotoStatement<FieldVerification> {
    InTotoStatement::new(
        vec![
            Subject {
                name: format!("{ATTESTATION_SUBJECT_PREFIX}{attestation_digest}"),
                digest: SubjectDigest { sha256: attestation_digest },
            },
            deployment_subject("lim-07"),
        ],
        FieldVerification {
            attestation: attestation_digest,
            deployment: "lim-07".into(),
            method: VerificationMethod::OnSite,
            observed_site: Site { country: "DE".into(), site_id: "site-berlin-1".into() },
            observed_configuration_digest: Sha256Digest::of(b"config"),
            result: VerificationResult::Pass,
            findings: String::new(),
            date: NOW,
        },
    )
}

fn checkin() -> CheckIn {
    CheckIn {
        type_tag: CheckInTag,
        schema: SchemaV1,
        deployment: "lim-07".into(),
        product: "lim".into(),
        installed_version: "1.0.0".parse().unwrap(),
        installed_baseline: "1.0.0".parse().unwrap(),
        software_digests: BTreeMap::from([("/opt/lim/bin".into(), Sha256Digest::of(b"bin"))]),
        configuration_digest: Sha256Digest::of(b"config"),
        last_checkpoint: Some(CheckpointRef { size: 12, root_hash: Sha256Digest::of(b"root") }),
        nonce: Sha256Digest::of(b"nonce"),
        time: NOW,
    }
}

fn grant() -> Decision {
    Decision {
        type_tag: DecisionTag,
        schema: SchemaV1,
        deployment: "lim-07".into(),
        verdict: Verdict::Grant,
        release: Some(Sha256Digest::of(b"release payload")),
        withheld_above: vec![],
        conditions: vec![ConditionResult {
            condition: "end_use_attested".into(),
            status: ConditionStatus::Met,
            reason: String::new(),
        }],
        suspension: SuspensionLevel::None,
        checkin: envelope::sign(&checkin(), &[&key(9)]),
        contract: Some(ContractRef { id: "c-1".into(), version: 1 }),
        policy_version: 1,
        state_size: 40,
        issued_at: NOW,
        expires_at: Some(NOW.plus_seconds(86_400)),
        finding: None,
        courier: None,
    }
}

#[test]
fn every_statement_round_trips() {
    roundtrip(&release("1.1.0"));
    roundtrip(&attestation());
    roundtrip(&verification(Sha256Digest::of(&attestation().to_payload_bytes())));
    roundtrip(&checkin());
    roundtrip(&grant());
    roundtrip(&AdminAction {
        type_tag: ActionTag,
        schema: SchemaV1,
        action: ActionKind::CaseTransition {
            case: "case-1".into(),
            to: CaseState::Determined,
            determination: Some(Determination::Substantiated),
        },
        why: "NGO report corroborated by site visit".into(),
        evidence: vec![Sha256Digest::of(b"report.pdf")],
        issued_at: NOW,
    });
    roundtrip(&AdminAction {
        type_tag: ActionTag,
        schema: SchemaV1,
        action: ActionKind::ProposeSuspension {
            target: SuspensionTarget::Customer("ministry-y".into()),
            level: SuspensionLevel::L2,
        },
        why: "open case".into(),
        evidence: vec![],
        issued_at: NOW,
    });
    roundtrip(&MisuseSignal {
        type_tag: SignalTag,
        schema: SchemaV1,
        about: SignalAbout { customer: "ministry-y".into(), deployment: None },
        source: SignalSource::NgoReport,
        summary: "Journalists' phones were intercepted".into(),
        evidence: vec![],
        reported_at: NOW,
    });
    roundtrip(&Freshness {
        type_tag: FreshTag,
        schema: SchemaV1,
        deployment: "lim-07".into(),
        nonce: Sha256Digest::of(b"nonce"),
        time: NOW,
        standing: FreshnessStanding::Standing { index: 3, leaf_hash: Sha256Digest::of(b"leaf"), checkpoint_size: 9 },
    });
    roundtrip(&InstallReport {
        type_tag: ReportTag,
        schema: SchemaV1,
        deployment: "lim-07".into(),
        grant_index: 3,
        outcome: InstallOutcome::Installed,
        from_version: "1.0.0".parse().unwrap(),
        to_version: "1.1.0".parse().unwrap(),
        last_checkpoint: CheckpointRef { size: 12, root_hash: Sha256Digest::of(b"root") },
        time: NOW,
    });
}

#[test]
fn attestation_with_valid_until_before_valid_from() {
    let mut a = attestation();
    a.predicate.valid_until = a.predicate.valid_from.plus_seconds(-1);
    assert_eq!(
        refused(&a),
        StatementError::Invalid { field: "predicate.valid_until", rule: "must be after valid_from" }
    );
}

#[test]
fn attestation_whose_subject_digest_does_not_match_its_name() {
    let mut a = attestation();
    a.subject[0].digest.sha256 = Sha256Digest::of(b"lim-08");
    assert!(matches!(refused(&a), StatementError::Invalid { field: "subject", .. }));
}

#[test]
fn attestation_over_16_kib() {
    let mut a = attestation();
    a.predicate.facts_unknown_to_signer = "x".repeat(16 * 1024);
    assert!(matches!(refused(&a), StatementError::TooLarge { limit: MAX_ATTESTATION_BYTES, .. }));
}

#[test]
fn attestation_with_malformed_json() {
    let err =
        InTotoStatement::<EndUseAttestation>::parse(b"{\"_type\": \"https://in-toto.io/Statement/v1\",").unwrap_err();
    assert!(matches!(err, StatementError::Malformed(_)));
}

#[test]
fn attestation_presented_as_a_field_verification() {
    // Same payload type, other predicate type.
    let bytes = attestation().to_payload_bytes();
    assert!(InTotoStatement::<FieldVerification>::parse(&bytes).is_err());
}

#[test]
fn verification_naming_another_attestation() {
    let a = Sha256Digest::of(&attestation().to_payload_bytes());
    let mut v = verification(a);
    v.predicate.attestation = Sha256Digest::of(b"another attestation");
    assert!(matches!(refused(&v), StatementError::Invalid { field: "subject", .. }));
}

#[test]
fn failed_verification_without_findings() {
    let mut v = verification(Sha256Digest::of(b"a"));
    v.predicate.result = VerificationResult::Fail;
    assert_eq!(
        refused(&v),
        StatementError::Invalid { field: "predicate.findings", rule: "a failed verification says what was found" }
    );
}

#[test]
fn release_whose_baseline_is_newer_than_itself() {
    let mut r = release("1.0.1");
    r.class = ReleaseClass::SecurityFix;
    r.capability_baseline = "1.1.0".parse().unwrap();
    assert_eq!(
        refused(&r),
        StatementError::Invalid {
            field: "capability_baseline",
            rule: "must not be newer than the release's own version"
        }
    );
}

#[test]
fn release_with_a_non_semver_version() {
    let bytes = release("1.1.0").to_payload_bytes();
    let text = String::from_utf8(bytes).unwrap().replace("\"version\":\"1.1.0\"", "\"version\":\"1.1\"");
    assert!(matches!(ReleaseManifest::parse(text.as_bytes()), Err(StatementError::Malformed(_))));
}

#[test]
fn payload_with_a_wrong_type_tag_or_schema() {
    let text = String::from_utf8(release("1.1.0").to_payload_bytes()).unwrap();
    assert!(matches!(
        ReleaseManifest::parse(text.replace("\"release\"", "\"root\"").as_bytes()),
        Err(StatementError::Malformed(_))
    ));
    assert!(matches!(
        ReleaseManifest::parse(text.replace("\"schema\":1", "\"schema\":2").as_bytes()),
        Err(StatementError::Malformed(_))
    ));
}

#[test]
fn payload_with_an_unknown_field() {
    let text = String::from_utf8(release("1.1.0").to_payload_bytes()).unwrap();
    let extra = text.replacen('{', "{\"approved_by_everyone\":true,", 1);
    assert!(matches!(ReleaseManifest::parse(extra.as_bytes()), Err(StatementError::Malformed(_))));
}

#[test]
fn grant_without_expiry_and_withhold_without_reasons() {
    let mut g = grant();
    g.expires_at = None;
    assert_eq!(refused(&g), StatementError::Invalid { field: "expires_at", rule: "a grant expires" });
    let mut w = grant();
    w.verdict = Verdict::Withhold;
    w.release = None;
    w.expires_at = None;
    assert_eq!(
        refused(&w),
        StatementError::Invalid { field: "withheld_above", rule: "a withhold names what it withholds" }
    );
}

#[test]
fn unmet_condition_without_a_reason() {
    let mut g = grant();
    g.conditions[0].status = ConditionStatus::Unmet;
    assert_eq!(
        refused(&g),
        StatementError::Invalid { field: "conditions.reason", rule: "an unmet condition needs a reason" }
    );
}

#[test]
fn checkin_with_a_bad_deployment_id() {
    let mut c = checkin();
    c.deployment = "LIM 07".into();
    assert_eq!(
        refused(&c),
        StatementError::Invalid { field: "deployment", rule: "must be 1-64 characters of a-z 0-9 . _ -" }
    );
}

#[test]
fn statement_in_an_envelope_is_checked_after_the_signature() {
    let mut a = attestation();
    a.predicate.valid_until = a.predicate.valid_from;
    let k = key(9);
    let signed = envelope::sign(&a, &[&k]);
    assert!(matches!(
        envelope::verify::<InTotoStatement<EndUseAttestation>>(&signed, &KeySet::single(k.public())),
        Err(EnvelopeError::Payload(StatementError::Invalid { field: "predicate.valid_until", .. }))
    ));
}

// ---- Issue 16: which contract changes relax a condition ---------------------

fn base_contract() -> Contract {
    Contract {
        id: "contract-min-x".into(),
        version: 1,
        customer: "min-x".into(),
        deployments: vec!["lim-07".into(), "lim-08".into()],
        conditions: vec![
            Condition::EndUseAttested { max_age_days: 365, allowed_end_uses: vec!["lawful-interception".into()] },
            Condition::FieldVerified { max_age_days: 90, methods: vec![VerificationMethod::OnSite] },
            Condition::SiteBound { allowed_countries: vec!["XA".into()], allowed_site_ids: vec!["s1".into()] },
            Condition::IntegrityMatch,
            Condition::LicenceValid { licence: "bafa-1".into() },
            Condition::DeniedPartyClear { list: "eu-sanctions".into() },
            Condition::NoOpenCase { from_state: CaseState::Triaged },
        ],
        grant_validity_seconds: 86_400,
        compliance_contact: "compliance@vendor.example".into(),
    }
}

/// `base_contract` with its version bumped and one change made.
fn changed(change: impl FnOnce(&mut Contract)) -> Vec<String> {
    let old = base_contract();
    let mut new = old.clone();
    new.version = 2;
    change(&mut new);
    contract_relaxations(&old, &new)
}

fn condition_mut<'a>(c: &'a mut Contract, name: &str) -> &'a mut Condition {
    c.conditions.iter_mut().find(|c| c.name() == name).unwrap()
}

#[test]
fn each_condition_name_is_the_tag_its_condition_is_written_with() {
    let contract = base_contract();
    let kinds: Vec<ConditionName> = contract.conditions.iter().map(Condition::kind).collect();
    assert_eq!(kinds, ConditionName::ALL, "the base contract has every condition, in order");
    for c in &contract.conditions {
        let json = serde_json::to_value(c).unwrap();
        assert_eq!(json["condition"], c.kind().as_str());
        assert_eq!(c.kind().to_string().parse::<ConditionName>(), Ok(c.kind()));
    }
    assert!("no_such_condition".parse::<ConditionName>().is_err());
}

#[test]
fn dropping_any_condition_relaxes() {
    for name in ConditionName::ALL.map(ConditionName::as_str) {
        let r = changed(|c| c.conditions.retain(|x| x.name() != name));
        assert_eq!(r, vec![format!("drops the condition {name}")]);
    }
}

#[test]
fn a_larger_max_age_relaxes() {
    let r = changed(|c| {
        if let Condition::EndUseAttested { max_age_days, .. } = condition_mut(c, "end_use_attested") {
            *max_age_days = 366;
        }
    });
    assert_eq!(r, vec!["end_use_attested: max_age_days goes from 365 to 366".to_owned()]);
    let r = changed(|c| {
        if let Condition::FieldVerified { max_age_days, .. } = condition_mut(c, "field_verified") {
            *max_age_days = 91;
        }
    });
    assert_eq!(r, vec!["field_verified: max_age_days goes from 90 to 91".to_owned()]);
}

#[test]
fn a_wider_allowed_list_relaxes() {
    // A value added, or the list emptied (which admits anything).
    let r = changed(|c| {
        if let Condition::EndUseAttested { allowed_end_uses, .. } = condition_mut(c, "end_use_attested") {
            allowed_end_uses.push("border-control".into());
        }
    });
    assert_eq!(r, vec!["end_use_attested: allows end uses the old version did not".to_owned()]);
    let r = changed(|c| {
        if let Condition::FieldVerified { methods, .. } = condition_mut(c, "field_verified") {
            methods.clear();
        }
    });
    assert_eq!(r, vec!["field_verified: accepts methods the old version did not".to_owned()]);
    let r = changed(|c| {
        if let Condition::SiteBound { allowed_countries, .. } = condition_mut(c, "site_bound") {
            allowed_countries.push("XB".into());
        }
    });
    assert_eq!(r, vec!["site_bound: allows countries the old version did not".to_owned()]);
    let r = changed(|c| {
        if let Condition::SiteBound { allowed_site_ids, .. } = condition_mut(c, "site_bound") {
            *allowed_site_ids = vec![];
        }
    });
    assert_eq!(r, vec!["site_bound: allows sites the old version did not".to_owned()]);
}

#[test]
fn another_licence_or_denied_party_list_relaxes() {
    let r = changed(|c| *condition_mut(c, "licence_valid") = Condition::LicenceValid { licence: "bafa-2".into() });
    assert_eq!(r, vec!["licence_valid: names licence bafa-2 instead of bafa-1".to_owned()]);
    let r = changed(|c| *condition_mut(c, "denied_party_clear") = Condition::DeniedPartyClear { list: "short".into() });
    assert_eq!(r, vec!["denied_party_clear: checks list short instead of eu-sanctions".to_owned()]);
}

#[test]
fn a_later_from_state_relaxes() {
    let r =
        changed(|c| *condition_mut(c, "no_open_case") = Condition::NoOpenCase { from_state: CaseState::Determined });
    assert_eq!(r, vec!["no_open_case: blocks only from Determined instead of Triaged".to_owned()]);
}

#[test]
fn a_longer_grant_validity_relaxes() {
    let r = changed(|c| c.grant_validity_seconds = 86_401);
    assert_eq!(r, vec!["grant_validity_seconds goes from 86400 to 86401".to_owned()]);
}

#[test]
fn tightening_or_other_changes_do_not_relax() {
    // Nothing changed but the version.
    assert_eq!(changed(|_| {}), Vec::<String>::new());
    // Narrower: smaller ages, shorter lists, an earlier from_state, a
    // shorter validity, fewer deployments covered, another contact.
    let r = changed(|c| {
        for cond in &mut c.conditions {
            match cond {
                Condition::EndUseAttested { max_age_days, .. } | Condition::FieldVerified { max_age_days, .. } => {
                    *max_age_days = 30
                }
                Condition::SiteBound { allowed_site_ids, .. } => allowed_site_ids.push("s1".into()),
                Condition::NoOpenCase { from_state } => *from_state = CaseState::Received,
                _ => {}
            }
        }
        c.grant_validity_seconds = 3_600;
        c.deployments = vec!["lim-07".into()];
        c.compliance_contact = "officer@vendor.example".into();
    });
    assert_eq!(r, Vec::<String>::new());
    // A condition added to a contract that had fewer.
    let mut old = base_contract();
    old.conditions.retain(|c| c.name() != "integrity_match");
    assert_eq!(contract_relaxations(&old, &base_contract()), Vec::<String>::new());
}

fn licence(versions: &str) -> Licence {
    Licence {
        id: "bafa-1".into(),
        customer: "ministry-x".into(),
        authority: "BAFA".into(),
        expires: support::next_year(),
        versions: versions.parse().unwrap(),
    }
}
#[test]
fn adding_a_pre_release_comparator_to_a_licence_is_a_widening() {
    let old = licence(">=1.0.0, <2.0.0");
    let new = licence(">=1.0.0, <2.0.0, >=2.0.0-rc.0");
    let rc: semver::Version = "2.0.0-rc.1".parse().unwrap();
    assert!(!old.versions.matches(&rc));
    assert!(new.versions.matches(&rc));
    assert_eq!(
        licence_relaxations(&old, &new),
        vec!["licence bafa-1: covers versions >=1.0.0, <2.0.0, >=2.0.0-rc.0 instead of >=1.0.0, <2.0.0".to_owned()]
    );
    assert_eq!(licence_relaxations(&old, &licence(">=1.0.0, <2.0.0, <1.5.0")), Vec::<String>::new());
    let old_rc = licence(">=1.0.0-rc.0, <2.0.0");
    assert_eq!(licence_relaxations(&old_rc, &licence(">=1.0.0-rc.0, <2.0.0, <1.5.0")), Vec::<String>::new());
}

/// Case ids (`case-N`) name misuse cases wherever a subject is asked for (a
/// subject's history), so a customer or deployment may not take one.
#[test]
fn a_customer_or_deployment_id_spelled_like_a_case_is_refused() {
    let action = |kind: ActionKind| AdminAction {
        type_tag: ActionTag,
        schema: SchemaV1,
        action: kind,
        why: "registration".into(),
        evidence: vec![],
        issued_at: covenant_core::digest::Timestamp::parse_rfc3339("2026-12-04T00:00:00Z").unwrap(),
    };
    let customer = |id: &str| {
        action(ActionKind::RegisterCustomer { customer: id.into(), legal_name: "X".into(), country: "XA".into() })
    };
    let e = refused(&customer("case-12"));
    assert!(e.to_string().contains("case-N names a misuse case"), "{e}");
    let deployment = action(ActionKind::RegisterDeployment {
        deployment: "case-7".into(),
        customer: "min-x".into(),
        product: "lim".into(),
        site: Site { country: "XA".into(), site_id: "s1".into() },
        provisioned_version: "1.0.0".parse().unwrap(),
    });
    assert!(refused(&deployment).to_string().contains("case-N names a misuse case"));
    // Ids that only begin alike are fine.
    for fine in ["case-study", "case-", "cases-1", "min-case-1"] {
        let a = customer(fine);
        roundtrip(&a);
    }
}
