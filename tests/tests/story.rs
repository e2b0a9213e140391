//! Governance on the wire, through the real services over mutual TLS on
//! loopback and the people's CLI: register, contract, publish, attest,
//! verify, check in (a grant whose proof verifies in `core`), signal, case,
//! a suspension proposed by one admin (no effect) and approved by another
//! (a withhold with reasons), reinstatement, and a clean `audit replay`.
//! Then: nothing invalid is appended, and polls do not grow the ledger.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use covenant_cli::admin::{Admin, IdentityCmd};
use covenant_cli::attest::Verify;
use covenant_cli::audit::Audit;
use covenant_cli::release::Release;
use covenant_core::digest::{Sha256Digest, Timestamp};
use covenant_core::envelope::{self, Envelope};
use covenant_core::keys::{KeySet, SigningKey};
use covenant_core::ledger::EntryHeader;
use covenant_core::note::{self, TlogProof};
use covenant_core::root::{RootPolicy, TrustedRoot};
use covenant_core::statements::*;
use covenant_proto::v1 as pb;
use covenant_proto::v1::ledger_service_client::LedgerServiceClient;
use covenant_proto::v1::update_service_client::UpdateServiceClient;

use covenant_tests::*;

/// Verifies a check-in answer as the agent will, with `core` alone: the
/// freshness signature and nonce, the decision's signature, its body
/// against the header, the header's inclusion in a checkpoint signed by the
/// ledger key, the release's threshold signature.
fn verify_answer(root: &TrustedRoot, r: &pb::CheckInResponse, nonce: Sha256Digest) -> Decision {
    let decision_keys = root.decision_keys().unwrap();
    let fresh = envelope::verify::<Freshness>(&r.freshness, &decision_keys).unwrap();
    assert_eq!(fresh.nonce, nonce, "the freshness answer echoes our nonce");
    let entry = r.decision.as_ref().unwrap();
    let FreshnessStanding::Standing { index, leaf_hash, checkpoint_size } = fresh.standing else {
        panic!("a decision stands")
    };
    assert_eq!(index, entry.index);
    assert_eq!(leaf_hash.0, covenant_core::merkle::leaf_hash(&entry.header));
    let header = EntryHeader::parse(&entry.header).unwrap();
    header.check_body(&entry.salt.as_slice().try_into().unwrap(), &entry.body).unwrap();
    let decision = envelope::verify::<Decision>(&entry.body, &decision_keys).unwrap();
    let proof = TlogProof::parse(&r.inclusion.as_ref().unwrap().text).unwrap();
    let log = root.ledger_verifiers().unwrap().remove(0);
    let cp = note::open_checkpoint(proof.checkpoint.as_bytes(), &log).unwrap();
    assert_eq!(cp.checkpoint().size, checkpoint_size);
    covenant_core::merkle::verify_inclusion(
        proof.index,
        cp.checkpoint().size,
        &covenant_core::merkle::leaf_hash(&entry.header),
        &proof.proof,
        &cp.checkpoint().root_hash,
    )
    .unwrap();
    if decision.verdict == Verdict::Grant {
        let release_keys: KeySet = root.release_keys().unwrap();
        let m = envelope::verify::<ReleaseManifest>(&r.release_manifest, &release_keys).unwrap();
        assert_eq!(Some(m.payload_digest()), decision.release);
    }
    decision.value().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_gets_its_update_only_while_the_conditions_hold() {
    let s = Running::start("story").await;
    let root = TrustedRoot::provision(
        &std::fs::read(s.dir.join("root.json")).unwrap(),
        Timestamp::from_unix(1_800_000_000),
        RootPolicy { allow_development: true },
    )
    .unwrap();
    let c = cast(&s).await;

    // Nothing attested yet: withheld, and the operator is told what to do.
    let d = decision_of(&check_in(&s, &c.device, "n1").await);
    assert_eq!(d.verdict, Verdict::Withhold);
    let unmet: Vec<&str> =
        d.conditions.iter().filter(|c| c.status == ConditionStatus::Unmet).map(|c| c.condition.as_str()).collect();
    assert_eq!(unmet, ["end_use_attested", "field_verified"]);

    // The customer attests; the engineer checks what it claims and verifies.
    let att = attest_via_cli(&s, &c.customer).await;
    let customer = s.conn(&c.customer);
    let engineer = s.conn(&c.engineer);
    covenant_cli::attest::verify(Verify::Show { file: att.clone() }, &engineer, true).await.unwrap();
    let ver = c.engineer.join("verification.dsse");
    let sign = Verify::Sign {
        attestation: att.clone(),
        deployment: "lim-07".into(),
        method: "on-site".into(),
        country: "XA".into(),
        site: "s1".into(),
        config: Sha256Digest::of(b"verified configuration").to_string(),
        result: "pass".into(),
        findings: String::new(),
        out: ver.clone(),
    };
    covenant_cli::attest::verify(sign, &engineer, true).await.unwrap();
    covenant_cli::attest::verify(Verify::Submit { file: ver }, &engineer, true).await.unwrap();

    // Granted, with everything the agent needs to check it alone.
    let (_, nonce) = checkin_body(&c.device, "1.0.0", None, "n2");
    let answer = check_in(&s, &c.device, "n2").await;
    let grant = verify_answer(&root, &answer, nonce);
    assert_eq!(grant.verdict, Verdict::Grant);
    // The customer sees it.
    covenant_cli::attest::status(&customer, "lim-07".into(), true).await.unwrap();

    // A misuse signal opens a case; triaged, it withholds, naming no source.
    let signal_index = s.size().await;
    covenant_cli::attest::signal(
        &engineer,
        "min-x".into(),
        Some("lim-07".into()),
        "ngo_report",
        "journalists targeted".into(),
        vec![],
        true,
    )
    .await
    .unwrap();
    let case = format!("case-{signal_index}");
    let a1 = s.admin(1);
    admin(&a1, Admin::Case { case: case.clone(), to: "triaged".into(), determination: None }).await;
    let d = decision_of(&check_in(&s, &c.device, "n3").await);
    assert_eq!(d.verdict, Verdict::Withhold);
    let reason = &d.conditions.iter().find(|c| c.condition == "no_open_case").unwrap().reason;
    assert!(reason.contains("compliance review") && !reason.contains("journalist") && !reason.contains("ngo"));
    // Closing it lifts no_open_case, as a waiver would: one admin proposes,
    // and the case withholds until a second approves.
    let size = s.size().await;
    admin(&a1, Admin::Case { case, to: "closed".into(), determination: None }).await;
    assert_eq!(decision_of(&check_in(&s, &c.device, "n4a").await).verdict, Verdict::Withhold);
    let proposal = proposal_digest(&s, size).await;
    admin(&s.admin(2), Admin::Approve { proposal: proposal.to_string(), yes: true }).await;
    assert_eq!(decision_of(&check_in(&s, &c.device, "n4").await).verdict, Verdict::Grant);

    // An L2 suspension proposed by one admin has no effect...
    let size = s.size().await;
    admin(&a1, Admin::Suspend { customer: Some("min-x".into()), deployment: None, level: "L2".into() }).await;
    assert_eq!(decision_of(&check_in(&s, &c.device, "n5").await).verdict, Verdict::Grant);
    // ...until a second admin approves it: then the update is withheld.
    let proposal = proposal_digest(&s, size).await;
    admin(&s.admin(2), Admin::Approve { proposal: proposal.to_string(), yes: true }).await;
    let d = decision_of(&check_in(&s, &c.device, "n6").await);
    assert_eq!((d.verdict, d.suspension), (Verdict::Withhold, SuspensionLevel::L2));
    assert!(d.withheld_above[0].reasons.iter().any(|r| r.contains("L2 suspension does not allow capability")));

    // Reinstatement, again by two admins.
    let size = s.size().await;
    admin(&a1, Admin::Suspend { customer: Some("min-x".into()), deployment: None, level: "none".into() }).await;
    assert_eq!(decision_of(&check_in(&s, &c.device, "n7").await).verdict, Verdict::Withhold);
    let proposal = proposal_digest(&s, size).await;
    admin(&s.admin(2), Admin::Approve { proposal: proposal.to_string(), yes: true }).await;
    assert_eq!(decision_of(&check_in(&s, &c.device, "n8").await).verdict, Verdict::Grant);

    // The auditor replays the whole ledger: clean.
    let auditor = s.conn(&s.dir.join("identities/auditor"));
    covenant_cli::audit::run(Audit::Replay, &auditor, None, true).await.unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_do_not_grow_the_ledger() {
    let s = Running::start("polls").await;
    let c = cast(&s).await;
    let first = decision_of(&check_in(&s, &c.device, "first").await);
    assert_eq!(first.verdict, Verdict::Withhold);
    let size = s.size().await;
    let (body, _) = checkin_body(&c.device, "1.0.0", None, "poll");
    let mut client = UpdateServiceClient::new(s.conn(&c.device).channel().await.unwrap());
    for i in 0..1_000 {
        let (body, _) = if i % 2 == 0 {
            (body.clone(), ())
        } else {
            (checkin_body(&c.device, "1.0.0", None, &format!("p{i}")).0, ())
        };
        let r = client.check_in(pb::CheckInRequest { checkin: body }).await.unwrap().into_inner();
        assert!(r.decision.is_some());
    }
    assert_eq!(s.size().await, size, "1,000 unchanged check-ins add no entry");
    // A change of reason (an attestation arrives; field_verified still
    // unmet) between two check-ins adds exactly one decision.
    attest_via_cli(&s, &c.customer).await;
    let size = s.size().await;
    let d = decision_of(&check_in(&s, &c.device, "after").await);
    assert_eq!(d.verdict, Verdict::Withhold);
    for i in 0..20 {
        check_in(&s, &c.device, &format!("again {i}")).await;
    }
    assert_eq!(s.size().await, size + 1, "the changed reason is logged once");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_invalid_is_appended() {
    use tonic::Code;
    let s = Running::start("invalid").await;
    let c = cast(&s).await;
    let customer = s.conn(&c.customer);
    let engineer = s.conn(&c.engineer);
    let size = s.size().await;
    let mut att_client = covenant_proto::v1::attestation_service_client::AttestationServiceClient::new(
        customer.channel().await.unwrap(),
    );
    let mut eng_client = covenant_proto::v1::attestation_service_client::AttestationServiceClient::new(
        engineer.channel().await.unwrap(),
    );

    // Build attestations as the customer would, then break them.
    let statement = |from: i64, until: i64, deployments: &[&str]| {
        let file: covenant_cli::attest::AttestationFile =
            covenant_cli::admin::read_structured(&write_attestation(&c.customer)).unwrap();
        let mut a = file.attestation;
        a.valid_from = Timestamp::from_unix(from);
        a.valid_until = Timestamp::from_unix(until);
        InTotoStatement::new(deployments.iter().map(|d| deployment_subject(d)).collect(), a)
    };
    let now = 1_800_000_000;
    let outsider = SigningKey::from_seed(&[77; 32]);
    let mut oversized = statement(now, now + 1_000_000_000, &["lim-07"]);
    oversized.predicate.facts_unknown_to_signer = "x".repeat(65 * 1024);
    let malformed = {
        let mut e = Envelope::new("application/vnd.in-toto+json", b"{\"predicateType\":".to_vec());
        e.sign(&key_of(&c.customer));
        e.to_bytes()
    };
    let cases: Vec<(&str, Vec<u8>, Code)> = vec![
        (
            "unregistered key",
            envelope::sign(&statement(now, 4_000_000_000, &["lim-07"]), &[&outsider]),
            Code::PermissionDenied,
        ),
        (
            "expired",
            envelope::sign(&statement(1_000, 2_000, &["lim-07"]), &[&key_of(&c.customer)]),
            Code::FailedPrecondition,
        ),
        (
            "valid_until before valid_from",
            envelope::sign(&statement(3_000_000_000, 2_000_000_000, &["lim-07"]), &[&key_of(&c.customer)]),
            Code::InvalidArgument,
        ),
        (
            "unknown deployment",
            envelope::sign(&statement(now, 4_000_000_000, &["lim-99"]), &[&key_of(&c.customer)]),
            // Answered as another customer's deployment would be, so that a
            // customer cannot tell which ids exist (the review of #10).
            Code::PermissionDenied,
        ),
        ("over 64 KiB", envelope::sign(&oversized, &[&key_of(&c.customer)]), Code::InvalidArgument),
        ("malformed JSON", malformed, Code::InvalidArgument),
    ];
    for (what, body, code) in cases {
        let e = att_client.submit_attestation(pb::SubmitRequest { envelope: body }).await.unwrap_err();
        assert_eq!(e.code(), code, "{what}: {}", e.message());
        assert!(!e.message().is_empty(), "{what}: a reason");
    }
    // Another customer's operator cannot submit for min-x.
    admin(&s.admin(1), Admin::Customer { id: "min-y".into(), name: "Ministry Y".into(), country: "XB".into() }).await;
    let other = person(&s, "customer", "min-y").await;
    let mut other_client = covenant_proto::v1::attestation_service_client::AttestationServiceClient::new(
        s.conn(&other).channel().await.unwrap(),
    );
    let by_other = envelope::sign(&statement(now, 4_000_000_000, &["lim-07"]), &[&key_of(&other)]);
    let e = other_client.submit_attestation(pb::SubmitRequest { envelope: by_other }).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    // min-x attesting for min-y's deployment.
    admin(
        &s.admin(1),
        Admin::Deployment {
            id: "lim-08".into(),
            customer: "min-y".into(),
            product: "lim".into(),
            country: "XB".into(),
            site: "s2".into(),
            provisioned_version: "1.0.0".into(),
        },
    )
    .await;
    let foreign = envelope::sign(&statement(now, 4_000_000_000, &["lim-07", "lim-08"]), &[&key_of(&c.customer)]);
    let e = att_client.submit_attestation(pb::SubmitRequest { envelope: foreign }).await.unwrap_err();
    // Refused without saying whether lim-08 exists (the review of #10).
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(e.message(), "a customer attests for its own deployments only");
    // An engineer cannot submit an attestation; a customer cannot submit a verification.
    let good = envelope::sign(&statement(now, 4_000_000_000, &["lim-07"]), &[&key_of(&c.customer)]);
    let e = eng_client.submit_attestation(pb::SubmitRequest { envelope: good.clone() }).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = att_client.submit_verification(pb::SubmitRequest { envelope: good }).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // A release under the threshold: refused with the count it has and needs.
    let manifest = s.dir.join("one-signature.manifest");
    let artifact = s.dir.join("one.img");
    std::fs::write(&artifact, b"one").unwrap();
    covenant_cli::release::run(
        Release::New {
            artifact: artifact.clone(),
            product: "lim".into(),
            version: "9.0.0".into(),
            class: "capability".into(),
            baseline: "9.0.0".into(),
            out: manifest.clone(),
        },
        true,
    )
    .unwrap();
    covenant_cli::release::run(
        Release::Sign { manifest: manifest.clone(), key: s.dir.join("keys/release-1.key").display().to_string() },
        true,
    )
    .unwrap();
    let e = covenant_cli::release::publish(&s.admin(1), &manifest, &artifact, true).await.unwrap_err();
    assert!(e.to_string().contains("1 valid signature(s) from distinct known keys, 2 required"), "{e}");
    // An admin action signed by a key not in the root.
    let mut admin_client =
        covenant_proto::v1::admin_service_client::AdminServiceClient::new(s.admin(1).channel().await.unwrap());
    let action = AdminAction {
        type_tag: ActionTag,
        schema: SchemaV1,
        action: ActionKind::RegisterCustomer { customer: "min-z".into(), legal_name: "Z".into(), country: "XZ".into() },
        why: "x".into(),
        evidence: vec![],
        issued_at: Timestamp::from_unix(now),
    };
    let e = admin_client.act(pb::ActRequest { action: envelope::sign(&action, &[&outsider]) }).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    // A verification by a revoked engineer key.
    let eng_fp = Sha256Digest::of(
        &covenant_server::pki::pem_to_der(&std::fs::read_to_string(c.engineer.join("cert.pem")).unwrap()).unwrap(),
    );
    admin(
        &s.admin(1),
        Admin::Identity(IdentityCmd::Revoke { fingerprint: eng_fp.to_string(), compromised_since: None }),
    )
    .await;
    let e = eng_client.submit_verification(pb::SubmitRequest { envelope: b"{}".to_vec() }).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "a revoked engineer cannot even call: {}", e.message());
    // Another engineer relaying a verification the revoked key signed.
    let good_att = envelope::sign(&statement(now, 4_000_000_000, &["lim-07"]), &[&key_of(&c.customer)]);
    att_client.submit_attestation(pb::SubmitRequest { envelope: good_att.clone() }).await.unwrap();
    let relay = person(&s, "engineer", "eng-2").await;
    let mut relay_client = covenant_proto::v1::attestation_service_client::AttestationServiceClient::new(
        s.conn(&relay).channel().await.unwrap(),
    );
    let e = relay_client
        .submit_verification(pb::SubmitRequest {
            envelope: verification(&good_att, Sha256Digest::of(b"c"), &c.engineer),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("signed by a revoked key"), "{}", e.message());
    // Nothing of this reached the ledger (the admin's own actions aside).
    let mut ledger = LedgerServiceClient::new(s.admin(1).channel().await.unwrap());
    let entries = ledger
        .get_entries(pb::GetEntriesRequest { start: size, end: s.size().await, with_bodies: false })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let kinds: Vec<String> = entries.iter().map(|e| EntryHeader::parse(&e.header).unwrap().kind.to_string()).collect();
    assert_eq!(
        kinds,
        ["customer", "identity", "approval", "deployment", "revocation", "attestation", "identity", "approval"],
        "only the valid actions were appended"
    );
    s.stop().await;
}
