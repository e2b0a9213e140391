//! Attacks on dual control by one admin (the other honest), found by the
//! fourth review of #16: each test tries a route by which one admin alone
//! would turn a withhold into a grant, or take the other admin's voice
//! away, and checks it now needs the admin threshold or is refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use covenant_core::digest::Sha256Digest;
use covenant_core::state::ProposalKind;
use covenant_core::statements::*;
use support::key;
use support::world::{DAY, World, setup, site};

fn attested() -> Condition {
    Condition::EndUseAttested { max_age_days: 365, allowed_end_uses: vec![] }
}

fn registration(id: &str, customer: &str) -> ActionKind {
    ActionKind::RegisterDeployment {
        deployment: id.into(),
        customer: customer.into(),
        product: "lim".into(),
        site: site("s1"),
        provisioned_version: "1.0.0".parse().unwrap(),
    }
}

fn identity(role: IdentityRole, subject: &str, k: &covenant_core::keys::SigningKey, cert: &[u8]) -> ActionKind {
    ActionKind::IssueIdentity {
        role,
        subject: subject.into(),
        signing_key: k.public(),
        certificate_sha256: Sha256Digest::of(cert),
        scope: None,
    }
}

fn in_force(w: &World, p: &Sha256Digest) -> bool {
    w.state.facts().proposal(p).is_none_or(|p| p.in_force)
}

#[test]
fn one_admin_cannot_record_a_pending_licence_for_the_first_time_to_lift_licence_valid() {
    let mut w = World::new();
    let (_, dk, _) = setup(&mut w, "min-x", "lim-07", 100);
    w.release("1.0.0", ReleaseClass::Capability, "1.0.0");
    w.release("9.0.0", ReleaseClass::Capability, "9.0.0");
    w.contract("min-x", 1, vec![Condition::LicenceValid { licence: "bafa-pending".into() }]).unwrap();
    let c = w.checkin(&dk, "lim-07", "1.0.0", "1.0.0");
    assert_eq!(w.decide(&c).verdict, Verdict::Withhold);
    let widest = Licence {
        id: "bafa-pending".into(),
        customer: "min-x".into(),
        authority: "nobody".into(),
        expires: w.now.plus_seconds(3650 * DAY),
        versions: "*".parse().unwrap(),
    };
    let p = w.propose(ActionKind::RecordLicence { licence: widest }, 1).unwrap();
    assert!(!in_force(&w, &p), "a first record waits for a second admin");
    match &w.state.facts().proposal(&p).unwrap().kind {
        ProposalKind::Licence { from, relaxes, .. } => {
            assert!(from.is_none());
            assert_eq!(relaxes, &vec!["licence bafa-pending: recorded for the first time".to_owned()]);
        }
        other => panic!("expected a licence proposal, got {other:?}"),
    }
    assert_eq!(w.decide(&c).verdict, Verdict::Withhold);
    w.approve(p, 0).unwrap();
    assert_eq!(w.decide(&c).verdict, Verdict::Grant, "two admins record it");
}

#[test]
fn one_admin_cannot_carry_held_hardware_to_another_customers_contract() {
    let mut w = World::new();
    let (_, dk_a, _) = setup(&mut w, "min-x", "lim-07", 100);
    let (ck_b, _, _) = setup(&mut w, "min-y", "lim-08", 110);
    w.release("1.0.0", ReleaseClass::Capability, "1.0.0");
    w.release("2.0.0", ReleaseClass::Capability, "2.0.0");
    w.contract("min-x", 1, vec![attested()]).unwrap();
    w.contract("min-y", 1, vec![attested()]).unwrap();
    w.suspend(SuspensionTarget::Customer("min-x".into()), SuspensionLevel::LegalHold);
    assert_eq!(w.decide(&w.checkin(&dk_a, "lim-07", "1.0.0", "1.0.0")).verdict, Verdict::Withhold);
    // The held box under a new id of customer min-y, whose contract covers
    // every deployment: a proposal only.
    let p = w.propose(registration("lim-07-again", "min-y"), 1).unwrap();
    assert!(!in_force(&w, &p));
    assert!(w.state.deployment("lim-07-again").is_none());
    match &w.state.facts().proposal(&p).unwrap().kind {
        ProposalKind::Deployment { held, .. } => {
            assert_eq!(held, "contract contract-min-y of customer min-y would cover it at once");
        }
        other => panic!("expected a deployment proposal, got {other:?}"),
    }
    // So no device key can be issued for it, and min-y's attestation of it
    // is refused.
    let new_device = key(199);
    assert!(w.propose(identity(IdentityRole::Deployment, "lim-07-again", &new_device, b"sq"), 1).is_err());
    let body = w.attestation_body(&ck_b, "min-y", &["lim-07-again"], 200);
    assert!(w.append(body).is_err());
}

#[test]
fn one_admin_cannot_give_held_hardware_a_granted_deployments_id_by_a_new_device_key() {
    let mut w = World::new();
    let (_, _, _) = setup(&mut w, "min-x", "lim-07", 100);
    let (ck_b, dk_b, _) = setup(&mut w, "min-y", "lim-08", 110);
    w.release("1.0.0", ReleaseClass::Capability, "1.0.0");
    w.release("2.0.0", ReleaseClass::Capability, "2.0.0");
    w.contract("min-y", 1, vec![attested()]).unwrap();
    w.attest(&ck_b, "min-y", &["lim-08"], 200);
    assert_eq!(w.decide(&w.checkin(&dk_b, "lim-08", "1.0.0", "1.0.0")).verdict, Verdict::Grant);
    w.suspend(SuspensionTarget::Customer("min-x".into()), SuspensionLevel::LegalHold);
    // One admin revokes lim-08's device key (a tightening: at once) and
    // issues a new one, for the held box: the new key waits.
    let cert = w.state.identities().find(|(_, i)| i.signing_key == dk_b.public()).map(|(fp, _)| *fp).unwrap();
    w.act(ActionKind::RevokeIdentity { certificate_sha256: cert, compromised_since: None }, 1).unwrap();
    let held_box = key(198);
    let p = w.propose(identity(IdentityRole::Deployment, "lim-08", &held_box, b"swap"), 1).unwrap();
    assert!(!in_force(&w, &p));
    match &w.state.facts().proposal(&p).unwrap().kind {
        ProposalKind::Identity { why, .. } => {
            assert_eq!(why, "deployment lim-08 had a device key before (a new device)");
        }
        other => panic!("expected an identity proposal, got {other:?}"),
    }
    let c = w.checkin(&held_box, "lim-08", "1.0.0", "1.0.0");
    assert!(w.state.verify_checkin(&c).is_err());
    w.approve(p, 0).unwrap();
    assert!(w.state.verify_checkin(&c).is_ok(), "a device swap with two admins");
}

#[test]
fn one_admin_cannot_bring_another_deployment_under_a_contract_by_widening_its_list() {
    let mut w = World::new();
    let (ck, _, _) = setup(&mut w, "min-x", "lim-07", 100);
    w.release("1.0.0", ReleaseClass::Capability, "1.0.0");
    w.release("2.0.0", ReleaseClass::Capability, "2.0.0");
    w.deployment("lim-09", "min-x");
    let dk9 = key(150);
    w.identity(IdentityRole::Deployment, "lim-09", &dk9);
    let mut c1 = support::world::contract("min-x", 1, vec![attested()]);
    c1.deployments = vec!["lim-07".into()];
    let p = w.propose(ActionKind::SetContract { contract: c1 }, 0).unwrap();
    w.approve(p, 1).unwrap();
    w.attest(&ck, "min-x", &["lim-07", "lim-09"], 200);
    let c = w.checkin(&dk9, "lim-09", "1.0.0", "1.0.0");
    assert_eq!(w.decide(&c).verdict, Verdict::Withhold);
    for (version, list) in [(2, vec![]), (2, vec!["lim-07".to_owned(), "lim-09".to_owned()])] {
        let mut c2 = support::world::contract("min-x", version, vec![attested()]);
        c2.deployments = list;
        let p = w.propose(ActionKind::SetContract { contract: c2 }, 1).unwrap();
        assert!(!in_force(&w, &p), "covering another deployment waits for a second admin");
        assert_eq!(w.decide(&c).verdict, Verdict::Withhold);
    }
}

#[test]
fn one_admin_cannot_silence_the_other_by_registering_its_key_as_a_device_and_revoking_it() {
    let mut w = World::new();
    let honest = key(12);
    assert_eq!(honest.public(), w.admin_key(1).public());
    w.act(
        ActionKind::RegisterCustomer { customer: "shell".into(), legal_name: "Shell".into(), country: "XA".into() },
        0,
    )
    .unwrap();
    w.act(registration("shell-1", "shell"), 0).unwrap();
    let e = w.propose(identity(IdentityRole::Deployment, "shell-1", &honest, b"squat"), 0).unwrap_err();
    assert!(e.to_string().contains("registered only as an admin identity"), "{e}");
    // The honest admin still acts.
    let target = SuspensionTarget::Customer("shell".into());
    w.act(ActionKind::ProposeSuspension { target, level: SuspensionLevel::L1 }, 1).unwrap();
}

#[test]
fn a_stale_case_close_cannot_close_a_case_determined_substantiated_since() {
    let mut w = World::new();
    let (_, dk, ek) = setup(&mut w, "min-x", "lim-07", 100);
    w.release("1.0.0", ReleaseClass::Capability, "1.0.0");
    w.release("2.0.0", ReleaseClass::Capability, "2.0.0");
    w.contract("min-x", 1, vec![Condition::NoOpenCase { from_state: CaseState::Received }]).unwrap();
    let case = w.signal(&ek, "min-x", Some("lim-07"));
    w.move_case(&case, CaseState::Triaged, None).unwrap();
    w.move_case(&case, CaseState::Investigating, None).unwrap();
    w.move_case(&case, CaseState::Determined, Some(Determination::Inconclusive)).unwrap();
    let close = ActionKind::CaseTransition { case: case.clone(), to: CaseState::Closed, determination: None };
    let close = w.propose(close, 0).unwrap();
    let back = ActionKind::CaseTransition { case: case.clone(), to: CaseState::Investigating, determination: None };
    let back = w.propose(back, 0).unwrap();
    w.approve(back, 1).unwrap();
    let substantiated = ActionKind::CaseTransition {
        case: case.clone(),
        to: CaseState::Determined,
        determination: Some(Determination::Substantiated),
    };
    w.act(substantiated, 1).unwrap();
    let size = w.state.size();
    let e = w.approve(close, 1).unwrap_err();
    assert!(e.to_string().contains("moved since this proposal"), "{e}");
    assert_eq!(w.state.size(), size);
    assert_eq!(w.state.facts().case(&case).unwrap().state, CaseState::Determined);
    assert_eq!(w.decide(&w.checkin(&dk, "lim-07", "1.0.0", "1.0.0")).verdict, Verdict::Withhold);
}
