//! One named test per attack on an updater (TUF's and Uptane's list, and
//! the ledger's own): each asserts the refusal reason, that nothing was
//! installed and that the active slot is untouched.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use covenant_agent::engine::{AgentError, Checked};
use covenant_agent::store::{Slot, Verdict};
use covenant_core::digest::Sha256Digest;
use covenant_core::envelope::Envelope;
use covenant_core::keys::SigningKey;
use covenant_core::ledger::EntryKind;
use covenant_core::merkle::MemoryTree;
use covenant_core::note::{NoteError, NoteSigner, TlogProof};
use covenant_core::root::RootError;
use covenant_core::statements::{CheckIn, Payload as _};
use covenant_core::update::Refusal;
use support::*;

fn check(
    agent: &mut covenant_agent::engine::Agent<covenant_storage::SimStorage, FakeServer>,
) -> Result<Checked, AgentError> {
    block_on(agent.check(NOW, &mut |_, _| {}))
}

fn refusal(r: Result<Checked, AgentError>) -> Refusal {
    match r {
        Err(AgentError::Refused(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn granted_server(size: usize) -> FakeServer {
    let mut server = FakeServer::new(Vendor::new());
    server.grant("1.1.0", &artifact(size, 1));
    server
}

#[test]
fn an_install_report_the_server_refuses_is_dropped_and_the_agent_moves_on() {
    use covenant_agent::engine::ReportError;
    let mut server = granted_server(10_000);
    let why = "grant 7 no longer stood when the install was reported";
    server.report_error = Some(ReportError::Refused(why.into()));
    let mut agent = agent(server);
    // The install itself stands: the software is what it is.
    assert_eq!(check(&mut agent).unwrap(), Checked::Installed("1.1.0".parse().unwrap()));
    assert_eq!(agent.transport().reports.len(), 1);
    assert!(agent.store().pending_reports().unwrap().is_empty(), "a refused report is dropped, not kept");
    // The next cycle sends it no more and checks in as usual.
    agent.transport_mut().standing = None;
    assert_eq!(check(&mut agent).unwrap(), Checked::Current);
    assert_eq!(agent.transport().reports.len(), 1, "not retried");
}

#[test]
fn an_install_report_that_did_not_get_through_is_kept_and_sent_again() {
    use covenant_agent::engine::ReportError;
    let mut server = granted_server(10_000);
    server.report_error = Some(ReportError::Unsent("deadline exceeded".into()));
    let mut agent = agent(server);
    assert_eq!(check(&mut agent).unwrap(), Checked::Installed("1.1.0".parse().unwrap()));
    assert_eq!(agent.store().pending_reports().unwrap().len(), 1, "kept for later");
    agent.transport_mut().report_error = None;
    agent.transport_mut().standing = None;
    assert_eq!(check(&mut agent).unwrap(), Checked::Current);
    assert_eq!(agent.transport().reports.len(), 2, "sent again");
    assert!(agent.store().pending_reports().unwrap().is_empty(), "acknowledged at last");
}

#[test]
fn a_genuine_grant_installs_and_reports() {
    let mut agent = agent(granted_server(10_000));
    assert_eq!(check(&mut agent).unwrap(), Checked::Installed("1.1.0".parse().unwrap()));
    let store = agent.store();
    assert_eq!(store.current().unwrap(), Slot::B);
    assert!(store.verify_slot(Slot::B).unwrap());
    assert_eq!(store.installed().unwrap().version.to_string(), "1.1.0");
    assert!(store.checkpoint().unwrap().is_some(), "the checkpoint is kept");
    assert!(store.pending_reports().unwrap().is_empty(), "the report was acknowledged");
    assert_eq!(agent.transport().reports.len(), 1);
    // The next check-in carries the checkpoint; the server says current.
    agent.transport_mut().standing = None;
    assert_eq!(check(&mut agent).unwrap(), Checked::Current);
    let last = CheckIn::parse(Envelope::parse(agent.transport().checkins.last().unwrap()).unwrap().payload()).unwrap();
    assert_eq!(last.installed_version.to_string(), "1.1.0");
    assert!(last.last_checkpoint.is_some());
}

#[test]
fn a_withhold_is_stored_with_its_reasons_and_installs_nothing() {
    let mut server = FakeServer::new(Vendor::new());
    let manifest = server.vendor.release("1.1.0", &artifact(100, 1));
    server.standing = Some(server.vendor.withhold(DEPLOYMENT, &manifest, "no valid end-use attestation"));
    let mut agent = agent(server);
    assert_eq!(check(&mut agent).unwrap(), Checked::Withheld);
    let v = agent.store().verdict().unwrap().unwrap();
    assert_eq!(v.verdict, Verdict::Withheld);
    assert_eq!(v.unmet[0].reason, "no valid end-use attestation");
    assert_eq!(v.withheld[0].version.to_string(), "1.1.0");
    assert_untouched(&agent);
}

#[test]
fn arbitrary_software_the_artifact_hash_differs() {
    let mut server = granted_server(10_000);
    for bytes in server.artifacts.values_mut() {
        bytes[5000] ^= 1;
    }
    let mut agent = agent(server);
    assert!(matches!(check(&mut agent), Err(AgentError::ArbitrarySoftware { .. })));
    assert_untouched(&agent);
    assert!(agent.store().staged().unwrap().is_empty(), "the bad bytes are discarded");
}

#[test]
fn endless_data_the_stream_sends_more_than_declared() {
    let mut server = granted_server(10_000);
    server.extra = 1 << 20;
    let mut agent = agent(server);
    assert!(matches!(check(&mut agent), Err(AgentError::EndlessData { declared: 10_000 })));
    assert_untouched(&agent);
}

#[test]
fn wrong_software_a_grant_for_another_deployment() {
    let mut server = FakeServer::new(Vendor::new());
    let manifest = server.vendor.release("1.1.0", &artifact(100, 1));
    server.standing = Some(server.vendor.grant("lim-99", &manifest, DAY));
    server.manifest = manifest;
    let mut agent = agent(server);
    assert_eq!(refusal(check(&mut agent)), Refusal::OtherDeployment { found: "lim-99".into() });
    assert_untouched(&agent);
}

#[test]
fn mix_and_match_a_grant_naming_another_release_than_the_manifest_sent() {
    let mut server = granted_server(100);
    // A second genuine release, sent with the grant of the first.
    server.manifest = server.vendor.release("1.2.0", &artifact(100, 2));
    let mut agent = agent(server);
    assert!(matches!(refusal(check(&mut agent)), Refusal::MixAndMatch { .. }));
    assert_untouched(&agent);
}

#[test]
fn rollback_an_older_or_equal_version() {
    for version in ["1.0.0", "0.9.0"] {
        let mut agent = agent(granted_server_with(version));
        assert!(matches!(refusal(check(&mut agent)), Refusal::Rollback { .. }), "{version}");
        assert_untouched(&agent);
    }
}

fn granted_server_with(version: &str) -> FakeServer {
    let mut server = FakeServer::new(Vendor::new());
    server.grant(version, &artifact(100, 3));
    server.current_when_installed = false;
    server
}

#[test]
fn indefinite_freeze_a_replayed_freshness_answer() {
    let mut server = granted_server(100);
    // The first answer is recorded; every later one is replaced by it.
    let mut first: Option<Vec<u8>> = None;
    server.tamper = Some(Box::new(move |_, _, mut r| {
        let old = first.get_or_insert_with(|| r.freshness.clone());
        r.freshness = old.clone();
        r
    }));
    server.standing = None;
    let mut agent = agent(server);
    assert_eq!(check(&mut agent).unwrap(), Checked::Current);
    assert_eq!(refusal(check(&mut agent)), Refusal::Replayed);
    assert_eq!(agent.store().verdict().unwrap().unwrap().verdict, Verdict::Refused);
    assert_untouched(&agent);
}

#[test]
fn indefinite_freeze_an_expired_grant() {
    let mut server = FakeServer::new(Vendor::new());
    let manifest = server.vendor.release("1.1.0", &artifact(100, 1));
    server.standing = Some(server.vendor.grant(DEPLOYMENT, &manifest, 60));
    server.manifest = manifest;
    server.vendor.now = server.vendor.now.plus_seconds(120);
    let mut agent = agent(server);
    assert!(matches!(refusal(check(&mut agent)), Refusal::Expired { .. }));
    assert_untouched(&agent);
}

/// Issue #10, item 8: a server holding the decision key kept serving a
/// grant that a later L1 suspension had voided (the agent cannot see the
/// suspension). The window is bounded: a grant valid for longer than the
/// agent's `max_grant_validity` is refused, whatever the contract says, so
/// a voided grant can be installed at most that long after it was issued.
#[test]
fn voided_grant_served_by_the_decision_key_holder_is_bounded_by_the_agents_grant_validity() {
    let mut server = FakeServer::new(Vendor::new());
    let manifest = server.vendor.release("1.1.0", &artifact(100, 1));
    server.standing = Some(server.vendor.grant(DEPLOYMENT, &manifest, 30 * DAY));
    server.manifest = manifest;
    let mut refused = agent(server);
    assert_eq!(
        refusal(check(&mut refused)),
        Refusal::GrantTooLong { validity: 30 * DAY, limit: covenant_core::update::DEFAULT_MAX_GRANT_VALIDITY }
    );
    assert_untouched(&refused);

    // A grant valid for exactly the bound is installed.
    let mut server = FakeServer::new(Vendor::new());
    server.grant("1.1.0", &artifact(100, 1));
    let manifest = server.manifest.clone();
    server.standing = Some(server.vendor.grant(DEPLOYMENT, &manifest, 7 * DAY));
    let mut accepted = agent(server);
    assert_eq!(check(&mut accepted).unwrap(), Checked::Installed(semver::Version::new(1, 1, 0)));
}

/// A grant of a release signed only by the key `pick` chooses, as a thief
/// of that key would make one.
fn release_signed_by(pick: impl Fn(&Vendor) -> SigningKey) -> FakeServer {
    let mut server = FakeServer::new(Vendor::new());
    let thief = pick(&server.vendor);
    let forged = server.vendor.manifest_signed("1.1.0", &artifact(100, 1), &[&thief]);
    server.vendor.append(EntryKind::Release, vec![], forged.clone());
    server.standing = Some(server.vendor.grant(DEPLOYMENT, &forged, DAY));
    server.manifest = forged;
    server
}

#[test]
fn key_compromise_a_release_signed_by_the_decision_key_alone() {
    let mut agent = agent(release_signed_by(|v| copy(&v.decision)));
    assert!(matches!(refusal(check(&mut agent)), Refusal::Release(_)));
    assert_untouched(&agent);
}

#[test]
fn key_compromise_a_release_under_the_threshold() {
    let mut agent = agent(release_signed_by(|v| copy(&v.release_keys[0])));
    assert!(matches!(refusal(check(&mut agent)), Refusal::Release(_)));
    assert_untouched(&agent);
}

/// The vendor's tree padded with `n` more leaves: a forged, larger history.
fn padded(vendor: &Vendor, n: u64) -> MemoryTree {
    let mut t = MemoryTree::new();
    for (header, _, _) in &vendor.entries {
        t.push_leaf(header);
    }
    for i in 0..n {
        t.push_leaf(format!("forged {i}").as_bytes());
    }
    t
}

#[test]
fn fast_forward_a_forged_huge_checkpoint_without_witnesses_is_never_stored() {
    let mut server = granted_server(100);
    // The online keys are stolen: a checkpoint of a much larger tree, signed
    // by the genuine ledger key, with freshness to match; no witness would
    // cosign it.
    server.tamper = Some(Box::new(|v, checkin, _| {
        let tree = padded(v, 5000);
        let index = v.entries.len() as u64 - 1;
        v.answer_with(checkin, Some(index), &v.chain[0][..0], &tree, &v.ledger, &[])
    }));
    let mut agent = agent(server);
    assert!(matches!(
        refusal(check(&mut agent)),
        Refusal::Unwitnessed(NoteError::WitnessThresholdNotMet { valid: 0, threshold: 1 })
    ));
    assert!(agent.store().checkpoint().unwrap().is_none(), "the forged checkpoint is never stored");
    assert_untouched(&agent);
}

#[test]
fn fast_forward_after_a_root_rotates_the_ledger_key_old_key_checkpoints_are_dropped() {
    let mut server = FakeServer::new(Vendor::new());
    let old_ledger = copy_signer(&server.vendor.ledger);
    server.vendor.rotate_ledger_key(SigningKey::from_seed(&[40; 32]));
    server.grant("1.1.0", &artifact(100, 1));
    // The old ledger key (compromised) signs a checkpoint a witness cosigns.
    server.tamper = Some(Box::new(move |v, checkin, r| {
        let index = r.decision.as_ref().unwrap().index;
        let manifest = r.release_manifest.clone();
        v.answer_with(checkin, Some(index), &manifest, &v.tree, &old_ledger, &[&v.witnesses[0]])
    }));
    let mut agent = agent(server);
    assert!(matches!(refusal(check(&mut agent)), Refusal::NotLogged(NoteError::NoKnownSignature)));
    assert!(agent.store().checkpoint().unwrap().is_none());
    assert_untouched(&agent);
    // The real ledger, signed by the new key, is followed: root v2 is stored.
    agent.transport_mut().tamper = None;
    assert_eq!(check(&mut agent).unwrap(), Checked::Installed("1.1.0".parse().unwrap()));
    let root = covenant_core::root::TrustedRoot::restore(&agent.store().root().unwrap(), Default::default()).unwrap();
    assert_eq!(root.version(), 2);
}

#[test]
fn ledger_omission_a_grant_without_a_valid_inclusion_proof() {
    let mut server = granted_server(100);
    server.tamper = Some(Box::new(|_, _, mut r| {
        let mut proof = TlogProof::parse(&r.inclusion.as_ref().unwrap().text).unwrap();
        proof.proof[0][0] ^= 1;
        r.inclusion = Some(covenant_proto::v1::TlogProof { text: proof.to_text().into_bytes() });
        r
    }));
    let mut agent = agent(server);
    assert!(matches!(refusal(check(&mut agent)), Refusal::NotLogged(NoteError::Proof(_))));
    assert_untouched(&agent);
}

#[test]
fn ledger_omission_no_proof_at_all() {
    let mut server = granted_server(100);
    server.tamper = Some(Box::new(|_, _, mut r| {
        r.inclusion = None;
        r
    }));
    let mut agent = agent(server);
    assert!(matches!(refusal(check(&mut agent)), Refusal::NotLogged(_)));
    assert_untouched(&agent);
}

#[test]
fn split_view_a_checkpoint_inconsistent_with_the_stored_one() {
    let vendor = Vendor::new();
    let mut fork = vendor.clone();
    let mut server = FakeServer::new(vendor);
    let manifest = server.vendor.release("1.1.0", &artifact(100, 1));
    server.standing = Some(server.vendor.withhold(DEPLOYMENT, &manifest, "attestation expired"));
    let mut agent = agent(server);
    assert_eq!(check(&mut agent).unwrap(), Checked::Withheld);
    let held = agent.store().checkpoint().unwrap().unwrap();
    // Another history, shown to this agent only: it grants, and is even
    // cosigned (a witness colluding), but it does not extend what the agent saw.
    let bytes = artifact(100, 9);
    let m = fork.release("1.1.0", &bytes);
    let index = fork.grant(DEPLOYMENT, &m, DAY);
    fork.append(EntryKind::Note, vec![], b"padding".to_vec());
    fork.append(EntryKind::Note, vec![], b"padding".to_vec());
    let server = agent.transport_mut();
    server.tamper = Some(Box::new(move |_, checkin, _| fork.answer(checkin, Some(index), &m)));
    assert!(matches!(refusal(check(&mut agent)), Refusal::SplitView(_)));
    assert_eq!(agent.store().checkpoint().unwrap().unwrap(), held, "the stored checkpoint stays");
    assert_untouched(&agent);
}

#[test]
fn witness_policy_unmet_cosigned_by_an_unknown_witness() {
    let mut server = granted_server(100);
    server.tamper = Some(Box::new(|v, checkin, r| {
        let stranger = NoteSigner::new("witness.test/w0", SigningKey::from_seed(&[77; 32])).unwrap();
        let index = r.decision.as_ref().unwrap().index;
        v.answer_with(checkin, Some(index), &r.release_manifest, &v.tree, &v.ledger, &[&stranger])
    }));
    let mut agent = agent(server);
    assert!(matches!(refusal(check(&mut agent)), Refusal::Unwitnessed(_)));
    assert_untouched(&agent);
}

#[test]
fn witness_policy_unmet_one_witness_cosigning_twice_counts_once() {
    let mut server = FakeServer::new(Vendor::with_witnesses(2));
    server.grant("1.1.0", &artifact(100, 1));
    server.tamper = Some(Box::new(|v, checkin, r| {
        let index = r.decision.as_ref().unwrap().index;
        let w0 = &v.witnesses[0];
        v.answer_with(checkin, Some(index), &r.release_manifest, &v.tree, &v.ledger, &[w0, w0])
    }));
    let mut agent = agent(server);
    assert!(matches!(
        refusal(check(&mut agent)),
        Refusal::Unwitnessed(NoteError::WitnessThresholdNotMet { valid: 1, threshold: 2 })
    ));
    assert_untouched(&agent);
    // Both witnesses: the update goes through.
    agent.transport_mut().tamper = Some(Box::new(|v, checkin, r| {
        let index = r.decision.as_ref().unwrap().index;
        let (w0, w1) = (&v.witnesses[0], &v.witnesses[1]);
        v.answer_with(checkin, Some(index), &r.release_manifest, &v.tree, &v.ledger, &[w0, w1])
    }));
    assert_eq!(check(&mut agent).unwrap(), Checked::Installed("1.1.0".parse().unwrap()));
}

#[test]
fn slow_retrieval_a_stalled_stream_times_out_and_resumes_later() {
    let mut server = granted_server(10_000);
    server.stall_at = Some(4096);
    let mut agent = agent(server);
    assert!(matches!(check(&mut agent), Err(AgentError::Stalled { at: 4096, .. })));
    assert_untouched(&agent);
    // The stream comes back; the download resumes from the staged bytes.
    agent.transport_mut().stall_at = None;
    assert_eq!(check(&mut agent).unwrap(), Checked::Installed("1.1.0".parse().unwrap()));
    assert_eq!(agent.transport().download_offsets, vec![0, 4096]);
    assert!(agent.store().verify_slot(Slot::B).unwrap());
}

#[test]
fn clock_set_back_an_old_grant_is_not_revived() {
    let mut server = FakeServer::new(Vendor::new());
    let manifest = server.vendor.release("1.1.0", &artifact(100, 1));
    let grant = server.vendor.grant(DEPLOYMENT, &manifest, DAY);
    server.manifest = manifest.clone();
    // Ten days on, the agent verifies a withhold whose checkpoint the
    // witness cosigned then: that witnessed time is kept.
    server.vendor.now = server.vendor.now.plus_seconds(10 * DAY);
    server.standing = Some(server.vendor.withhold(DEPLOYMENT, &manifest, "attestation expired"));
    let mut agent = agent(server);
    assert_eq!(check(&mut agent).unwrap(), Checked::Withheld);
    assert!(agent.store().time().unwrap().unwrap() >= NOW.plus_seconds(10 * DAY));
    // Then the device's clock is set back, and the old grant is offered
    // again with a freshness answer and cosignatures dated in its validity.
    let server = agent.transport_mut();
    server.vendor.now = NOW.plus_seconds(60);
    server.standing = Some(grant);
    let refused = block_on(agent.check(NOW, &mut |_, _| {}));
    assert!(matches!(refusal(refused), Refusal::Expired { .. }));
    assert_untouched(&agent);
}

#[test]
fn a_far_future_time_from_the_decision_key_alone_is_never_kept() {
    let mut server = FakeServer::new(Vendor::new());
    // A server holding the decision key dates its freshness answers in the
    // year 9999 (were it kept, every root and grant would expire for good).
    server.tamper = Some(Box::new(|v, checkin, mut r| {
        let c = CheckIn::parse(Envelope::parse(checkin).unwrap().payload()).unwrap();
        let mut future = v.clone();
        future.now = covenant_core::digest::Timestamp::from_unix(covenant_core::update::MAX_TIME);
        r.freshness = future.freshness(DEPLOYMENT, c.nonce, covenant_core::statements::FreshnessStanding::Current);
        r
    }));
    let mut agent = agent(server);
    assert_eq!(check(&mut agent).unwrap(), Checked::Current);
    assert!(agent.store().time().unwrap().is_none_or(|t| t < NOW), "an unwitnessed time is not kept");
    // The honest server again: the agent installs as before.
    let server = agent.transport_mut();
    server.tamper = None;
    server.grant("1.1.0", &artifact(100, 1));
    assert_eq!(check(&mut agent).unwrap(), Checked::Installed("1.1.0".parse().unwrap()));
}

#[test]
fn a_development_root_is_refused_unless_allowed() {
    let mut vendor = Vendor::new();
    let mut meta = vendor.meta.clone();
    meta.development = true;
    meta.roles.witness.threshold = 0;
    let dev = covenant_core::envelope::sign(&meta, &[&vendor.root_keys[0], &vendor.root_keys[1]]);
    vendor.chain[0] = dev.clone();
    let policy = covenant_core::root::RootPolicy { allow_development: false };
    assert_eq!(covenant_core::root::TrustedRoot::restore(&dev, policy).unwrap_err(), RootError::DevelopmentNotAllowed);
}

#[test]
fn a_health_check_failure_switches_back_and_reports_rolled_back() {
    let server = granted_server(1000);
    let store = provisioned(&server.vendor);
    let device = copy(&server.vendor.device);
    let mut settings = settings();
    settings.health_check =
        Some(covenant_agent::engine::Hook { argv: vec!["false".into()], timeout: std::time::Duration::from_secs(10) });
    let mut agent = covenant_agent::engine::Agent::new(store, server, device, settings);
    assert_eq!(check(&mut agent).unwrap(), Checked::RolledBack("1.1.0".parse().unwrap()));
    assert_eq!(agent.store().current().unwrap(), Slot::A);
    assert_eq!(agent.store().installed().unwrap().version.to_string(), "1.0.0");
    let report = covenant_core::statements::InstallReport::parse(
        Envelope::parse(&agent.transport().reports[0]).unwrap().payload(),
    )
    .unwrap();
    assert_eq!(report.outcome, covenant_core::statements::InstallOutcome::RolledBack);
    // The same release is not tried again.
    assert_eq!(check(&mut agent).unwrap(), Checked::Skipped("1.1.0".parse().unwrap()));
    let _ = Sha256Digest::of(b"");
}
