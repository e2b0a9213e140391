//! Who reads what in the ledger: every role against one entry of every kind
//! (issue 16, items 1, 11 and 13), over the real server.
//!
//! Every registered caller reads every header: a header carries subject
//! tags, never a customer's or deployment's id, and the tiles publish the
//! headers anyway. Bodies follow `covenant_core::visibility::body_visible`,
//! least privilege, and this table (B: the body is served; -: the header
//! only). "x" is customer min-x and its deployment lim-07, which every
//! entry of the table concerns; "y" is min-y and lim-08. eng-1 signed the
//! verification and the signal; ngo-1 is an outside reporter who did not
//! (a reporter reads its own registration and its own signals only).
//!
//! ```text
//!                 admin  aud   aud   aud   cust  cust  dep   dep   eng-1 eng-2 rep
//!                        full  x     y     x     y     x     y                 ngo-1
//! root            B      B     B     B     B     B     B     B     B     B     B
//! identity(lim-07)B      B     B     -     B     -     B     -     -     -     -
//! revocation      B      B     -     -     -     -     -     -     -     -     -
//! note            B      B     -     -     -     -     -     -     -     -     -
//! customer        B      B     B     -     B     -     -     -     -     -     -
//! deployment      B      B     B     -     B     -     -     -     -     -     -
//! contract        B      B     B     -     B     -     -     -     -     -     -
//! release         B      B     B     B     B     B     B     B     B     B     B
//! attestation     B      B     B     -     B     -     -     -     -     -     -
//! verification    B      B     B     -     -     -     -     -     B     -     -
//! signal          B      B     -     -     -     -     -     -     B     -     -
//! case            B      B     -     -     -     -     -     -     -     -     -
//! case_closure    B      B     -     -     -     -     -     -     -     -     -
//! suspension      B      B     B     -     -     -     -     -     -     -     -
//! suspension_lift B      B     B     -     -     -     -     -     -     -     -
//! security_fix    B      B     B     -     -     -     -     -     -     -     -
//! waiver          B      B     B     -     -     -     -     -     -     -     -
//! approval        B      B     -     -     -     -     -     -     -     -     -
//! denied_party    B      B     -     -     -     -     -     -     -     -     -
//! licence         B      B     B     -     B     -     -     -     -     -     -
//! grant           B      B     B     -     B     -     B     -     -     -     -
//! withhold        B      B     B     -     B     -     B     -     -     -     -
//! report          B      B     B     -     B     -     B     -     -     -     -
//! ```
//!
//! Why: a misuse signal names its reporter's key, which is the public actor
//! of the reporter's other entries, so only admins, full-scope auditors and
//! the reporter read it; case moves, approvals and notes lead back to
//! signals and concern no one subject. Suspensions, waivers and security
//! fixes give reasons that may cite a report: the customer and device see
//! their effect in their decisions instead. A verification is the
//! engineer's report. Roots and releases are the trust material everyone
//! verifies. A scoped auditor reads what concerns its customers and their
//! deployments, signals aside.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use covenant_cli::admin::{Admin, IdentityCmd};
use covenant_cli::audit::Audit;
use covenant_core::digest::Sha256Digest;
use covenant_core::envelope::{self, Envelope};
use covenant_core::ledger::{EntryHeader, EntryKind, SubjectKey};
use covenant_core::state::classify;
use covenant_core::statements::*;
use covenant_proto::v1 as pb;
use covenant_proto::v1::attestation_service_client::AttestationServiceClient;
use covenant_proto::v1::ledger_service_client::LedgerServiceClient;
use covenant_tests::*;
use tonic::Code;

const CALLERS: [&str; 11] = [
    "admin",
    "auditor (full)",
    "auditor (min-x)",
    "auditor (min-y)",
    "customer min-x",
    "customer min-y",
    "deployment lim-07",
    "deployment lim-08",
    "engineer eng-1 (signer)",
    "engineer eng-2",
    "reporter ngo-1",
];

/// The table of the file's header: for each kind, one letter per caller.
const BODIES: [(EntryKind, &str); 23] = [
    (EntryKind::Root, "BBBBBBBBBBB"),
    (EntryKind::Identity, "BBB-B-B----"),
    (EntryKind::Revocation, "BB---------"),
    (EntryKind::Note, "BB---------"),
    (EntryKind::Customer, "BBB-B------"),
    (EntryKind::Deployment, "BBB-B------"),
    (EntryKind::Contract, "BBB-B------"),
    (EntryKind::Release, "BBBBBBBBBBB"),
    (EntryKind::Attestation, "BBB-B------"),
    (EntryKind::Verification, "BBB-----B--"),
    (EntryKind::Signal, "BB------B--"),
    (EntryKind::Case, "BB---------"),
    (EntryKind::CaseClosure, "BB---------"),
    (EntryKind::Suspension, "BBB--------"),
    (EntryKind::SuspensionLift, "BBB--------"),
    (EntryKind::SecurityFix, "BBB--------"),
    (EntryKind::Waiver, "BBB--------"),
    (EntryKind::Approval, "BB---------"),
    (EntryKind::DeniedParty, "BB---------"),
    (EntryKind::Licence, "BBB-B------"),
    (EntryKind::Grant, "BBB-B-B----"),
    (EntryKind::Withhold, "BBB-B-B----"),
    (EntryKind::Report, "BBB-B-B----"),
];

struct World {
    s: Running,
    /// Identity folders by caller index.
    folders: Vec<PathBuf>,
    /// The entry of each kind the table is about.
    chosen: BTreeMap<EntryKind, u64>,
    /// Every entry: (header bytes, body), read as admin.
    entries: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The other customer min-y with deployment lim-08, their keys, and the
/// scoped auditors.
async fn others(s: &Running) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    min_y(s).await;
    let customer_y = person(s, "customer", "min-y").await;
    let device_y = person(s, "deployment", "lim-08").await;
    let aud_x = scoped_auditor(s, "aud-x", &["min-x"]).await;
    let aud_y = scoped_auditor(s, "aud-y", &["min-y"]).await;
    (customer_y, device_y, aud_x, aud_y)
}

async fn all_entries(s: &Running, identity: &Path, with_bodies: bool) -> Vec<pb::LedgerEntry> {
    let mut c = LedgerServiceClient::new(s.conn(identity).channel().await.unwrap());
    let size = s.size().await;
    c.get_entries(pb::GetEntriesRequest { start: 0, end: size, with_bodies }).await.unwrap().into_inner().entries
}

/// A world with one entry of every kind about min-x and lim-07.
async fn world(name: &str) -> World {
    let s = Running::start(name).await;
    let c = cast(&s).await;
    let (customer_y, device_y, aud_x, aud_y) = others(&s).await;
    let eng2 = person(&s, "engineer", "eng-2").await;
    let ngo = person(&s, "reporter", "ngo-1").await;
    let a1 = s.admin(1);
    // Attested and verified, lim-07 is granted 1.1.0 and reports installing it.
    let att = attest_via_cli(&s, &c.customer).await;
    let ver = verification(&std::fs::read(att).unwrap(), Sha256Digest::of(b"verified configuration"), &c.engineer);
    let mut as_engineer = AttestationServiceClient::new(s.conn(&c.engineer).channel().await.unwrap());
    as_engineer.submit_verification(pb::SubmitRequest { envelope: ver }).await.unwrap();
    let granted = check_in(&s, &c.device, "grant").await;
    assert_eq!(decision_of(&granted).verdict, Verdict::Grant);
    let grant_index = granted.decision.as_ref().unwrap().index;
    let report = InstallReport {
        type_tag: ReportTag,
        schema: SchemaV1,
        deployment: "lim-07".into(),
        grant_index,
        outcome: InstallOutcome::Installed,
        from_version: "1.0.0".parse().unwrap(),
        to_version: "1.1.0".parse().unwrap(),
        last_checkpoint: CheckpointRef { size: grant_index + 1, root_hash: Sha256Digest::of(b"r") },
        time: now(),
    };
    let mut as_device =
        covenant_proto::v1::update_service_client::UpdateServiceClient::new(s.conn(&c.device).channel().await.unwrap());
    as_device.report(pb::ReportRequest { report: envelope::sign(&report, &[&key_of(&c.device)]) }).await.unwrap();
    // eng-1, who verified lim-07, reports misuse; the case is triaged and withholds.
    let signal_index = s.size().await;
    let eng1 = s.conn(&c.engineer);
    covenant_cli::attest::signal(
        &eng1,
        "min-x".into(),
        Some("lim-07".into()),
        "field_engineer",
        "seen".into(),
        vec![],
        true,
    )
    .await
    .unwrap();
    let case = format!("case-{signal_index}");
    admin(&a1, Admin::Case { case: case.clone(), to: "triaged".into(), determination: None }).await;
    // The ledger records 1.1.0 installed (the report), so a newer release is
    // what the case withholds.
    publish(&s, "1.2.0", "capability", "1.2.0").await;
    assert_eq!(decision_of(&check_in(&s, &c.device, "withhold").await).verdict, Verdict::Withhold);
    // Every admin action.
    admin(&a1, Admin::Suspend { customer: None, deployment: Some("lim-07".into()), level: "L1".into() }).await;
    let fix = publish(&s, "1.1.1", "security-fix", "1.1.0").await;
    admin(&a1, Admin::SecurityFix { deployment: "lim-07".into(), release: fix.to_string() }).await;
    let waiver_index = s.size().await;
    let waive = Admin::Waive {
        deployment: "lim-07".into(),
        condition: "no_open_case".into(),
        until: "2099-01-01T00:00:00Z".into(),
    };
    admin(&a1, waive).await;
    admin(&a1, Admin::Deny { list: "eu-sanctions".into(), name: "Someone Else".into(), country: "XC".into() }).await;
    let licence = Admin::Licence {
        id: "lic-1".into(),
        customer: "min-x".into(),
        authority: "BAFA".into(),
        expires: "2099-01-01T00:00:00Z".into(),
        versions: ">=1.0".into(),
    };
    admin(&a1, licence).await;
    admin(&a1, Admin::Note { text: "authority notified".into(), why: None }).await;
    // A lifting and a closing proposed (left unapproved: the case stays open).
    admin(&a1, Admin::Suspend { customer: None, deployment: Some("lim-07".into()), level: "none".into() }).await;
    admin(&a1, Admin::Case { case, to: "closed".into(), determination: None }).await;
    let revoked = person(&s, "engineer", "eng-r").await;
    let der = covenant_server::pki::pem_to_der(&std::fs::read_to_string(revoked.join("cert.pem")).unwrap()).unwrap();
    let fingerprint = Sha256Digest::of(&der).to_string();
    admin(&a1, Admin::Identity(IdentityCmd::Revoke { fingerprint, compromised_since: None })).await;

    let entries: Vec<(Vec<u8>, Vec<u8>)> =
        all_entries(&s, &s.dir.join("identities/admin1"), true).await.into_iter().map(|e| (e.header, e.body)).collect();
    let waiver = Sha256Digest::of(Envelope::parse(&entries[waiver_index as usize].1).unwrap().payload());
    admin(&s.admin(2), Admin::Approve { proposal: waiver.to_string(), yes: true }).await;
    let entries: Vec<(Vec<u8>, Vec<u8>)> =
        all_entries(&s, &s.dir.join("identities/admin1"), true).await.into_iter().map(|e| (e.header, e.body)).collect();

    // The entry of each kind: the first about min-x or lim-07 only (for an
    // identity, lim-07's key).
    let mut chosen = BTreeMap::new();
    for (index, (header, body)) in entries.iter().enumerate() {
        let kind = EntryHeader::parse(header).unwrap().kind;
        let subjects = classify(body).unwrap().subjects;
        let about_x = subjects.iter().all(|s| s == "min-x" || s == "lim-07");
        let fits = match kind {
            EntryKind::Identity => subjects == ["lim-07"],
            _ => about_x,
        };
        if fits {
            chosen.entry(kind).or_insert(index as u64);
        }
    }
    let folders = vec![
        s.dir.join("identities/admin1"),
        s.dir.join("identities/auditor"),
        aud_x,
        aud_y,
        c.customer.clone(),
        customer_y,
        c.device.clone(),
        device_y,
        c.engineer.clone(),
        eng2,
        ngo,
    ];
    World { s, folders, chosen, entries }
}

/// Item 1: the device (and the customer) of the deployment a misuse signal
/// names read its header but never its body, so they cannot learn the
/// reporter's key id and match it with the actor of the reporter's
/// verifications.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_device_cannot_read_a_signal_naming_its_deployment() {
    let w = world("vis-signal").await;
    let signal = w.chosen[&EntryKind::Signal];
    for caller in [4, 6] {
        let got = all_entries(&w.s, &w.folders[caller], true).await;
        let entry = got.iter().find(|e| e.index == signal).expect("the signal's header is served");
        assert!(entry.body.is_empty() && entry.salt.is_empty(), "{} read the signal's body", CALLERS[caller]);
        for e in &got {
            let is_signal = Envelope::parse(&e.body).is_ok_and(|env| env.payload_type() == MisuseSignal::PAYLOAD_TYPE);
            assert!(!is_signal, "{} read a signal body at entry {}", CALLERS[caller], e.index);
        }
    }
    w.s.stop().await;
}

/// Items 1 and 11: every role against one entry of every kind, each cell
/// of the table checked; every header is served to every caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_reads_exactly_the_bodies_of_the_table() {
    let w = world("vis-table").await;
    assert_eq!(w.chosen.len(), BODIES.len(), "the world has an entry of every kind: {:?}", w.chosen.keys());
    let mut wrong = Vec::new();
    for (caller, who) in CALLERS.iter().enumerate() {
        let got: BTreeMap<u64, pb::LedgerEntry> =
            all_entries(&w.s, &w.folders[caller], true).await.into_iter().map(|e| (e.index, e)).collect();
        if got.len() != w.entries.len() {
            wrong.push(format!("{who} reads {} of {} headers", got.len(), w.entries.len()));
        }
        for (kind, row) in BODIES {
            let index = w.chosen[&kind];
            let Some(entry) = got.get(&index) else {
                wrong.push(format!("{kind} as {who}: no header"));
                continue;
            };
            assert_eq!(entry.header, w.entries[index as usize].0);
            let want = row.as_bytes()[caller] == b'B';
            let has = !entry.body.is_empty();
            if has {
                assert_eq!(entry.body, w.entries[index as usize].1, "{who}, {kind}: the body served is the entry's");
            }
            if has != want {
                wrong.push(format!("{kind} as {who}: body {}, want {}", served(has), served(want)));
            }
        }
    }
    assert!(wrong.is_empty(), "cells that differ from the table:\n{}", wrong.join("\n"));
    w.s.stop().await;
}

fn served(b: bool) -> &'static str {
    if b { "served" } else { "withheld" }
}

/// Item 11: an auditor scoped to a customer reads its deployments' bodies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditor_scoped_to_a_customer_reads_its_deployments_bodies() {
    let s = Running::start("vis-scope").await;
    let c = cast_with(&s, "").await;
    let (_, _, aud_x, aud_y) = others(&s).await;
    let grant = check_in(&s, &c.device, "g").await.decision.unwrap().index;
    let got = all_entries(&s, &aud_x, true).await;
    assert!(!got[grant as usize].body.is_empty(), "the min-x auditor reads lim-07's grant");
    let got = all_entries(&s, &aud_y, true).await;
    assert!(got[grant as usize].body.is_empty(), "the min-y auditor does not");
    s.stop().await;
}

/// Item 11: an auditor scoped to one customer cannot open a case against
/// another; within its scope it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_auditor_cannot_open_a_case_against_another_customer() {
    let s = Running::start("vis-case").await;
    let _c = cast_with(&s, "").await;
    let (_, _, _, aud_y) = others(&s).await;
    let signal = |customer: &str, deployment: &str| {
        let signal = MisuseSignal {
            type_tag: SignalTag,
            schema: SchemaV1,
            about: SignalAbout { customer: customer.into(), deployment: Some(deployment.into()) },
            source: SignalSource::Auditor,
            summary: "finding".into(),
            evidence: vec![],
            reported_at: now(),
        };
        pb::SubmitRequest { envelope: envelope::sign(&signal, &[&key_of(&aud_y)]) }
    };
    let mut client = AttestationServiceClient::new(s.conn(&aud_y).channel().await.unwrap());
    let before = s.size().await;
    let err = client.submit_signal(signal("min-x", "lim-07")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert_eq!(err.message(), "an auditor signals only about customers in its scope");
    assert_eq!(s.size().await, before, "nothing was recorded");
    client.submit_signal(signal("min-y", "lim-08")).await.unwrap();
    s.stop().await;
}

/// The ids of the world's customers and deployments.
const IDS: [&str; 4] = ["min-x", "lim-07", "min-y", "lim-08"];

/// Item 13: a customer reading every header finds no customer's or
/// deployment's id in them (its own included: headers carry tags only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_reading_every_header_finds_no_other_subject_id() {
    let s = Running::start("vis-headers").await;
    let c = cast_with(&s, "").await;
    let (customer_y, _, _, _) = others(&s).await;
    check_in(&s, &c.device, "g").await;
    let headers = all_entries(&s, &customer_y, false).await;
    assert_eq!(headers.len() as u64, s.size().await, "every header is served");
    for e in &headers {
        for id in IDS {
            let found = e.header.windows(id.len()).any(|w| w == id.as_bytes());
            assert!(!found, "entry {}'s header names {id}: {}", e.index, String::from_utf8_lossy(&e.header));
        }
    }
    s.stop().await;
}

async fn subject_keys(s: &Running, identity: &Path) -> BTreeMap<String, SubjectKey> {
    let mut c = LedgerServiceClient::new(s.conn(identity).channel().await.unwrap());
    let keys = c.get_subject_keys(pb::GetSubjectKeysRequest {}).await.unwrap().into_inner().keys;
    keys.into_iter().map(|k| (k.subject, SubjectKey(k.key.try_into().unwrap()))).collect()
}

/// Item 13: each caller gets the keys of exactly the subjects it is
/// entitled to, and with them finds exactly the entries of those subjects;
/// the auditor's replay still passes with zero mismatches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_its_keys_a_customer_finds_exactly_its_own_entries() {
    let w = world("vis-keys").await;
    let customers_and_deployments = |keys: &BTreeMap<String, SubjectKey>| -> BTreeSet<String> {
        keys.keys().filter(|k| IDS.contains(&k.as_str())).cloned().collect()
    };
    let want: [(usize, &[&str]); 10] = [
        (0, &["lim-07", "lim-08", "min-x", "min-y"]),
        (1, &["lim-07", "lim-08", "min-x", "min-y"]),
        (2, &["lim-07", "min-x"]),
        (3, &["lim-08", "min-y"]),
        (4, &["lim-07", "min-x"]),
        (5, &["lim-08", "min-y"]),
        (6, &["lim-07"]),
        (7, &["lim-08"]),
        (8, &[]),
        (9, &[]),
    ];
    for (caller, subjects) in want {
        let keys = subject_keys(&w.s, &w.folders[caller]).await;
        let want: BTreeSet<String> = subjects.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(customers_and_deployments(&keys), want, "{}", CALLERS[caller]);
        if caller == 8 {
            assert_eq!(keys.keys().collect::<Vec<_>>(), ["eng-1"], "an engineer gets its own id's key only");
        }
        // With its keys the caller finds exactly the entries whose bodies
        // name those subjects.
        for (subject, key) in &keys {
            let found: Vec<usize> = w
                .entries
                .iter()
                .enumerate()
                .filter(|(_, (h, _))| key.finds(&EntryHeader::parse(h).unwrap()))
                .map(|(i, _)| i)
                .collect();
            let named: Vec<usize> = w
                .entries
                .iter()
                .enumerate()
                .filter(|(_, (_, b))| classify(b).unwrap().subjects.contains(subject))
                .map(|(i, _)| i)
                .collect();
            assert_eq!(found, named, "{} finds the entries of {subject}", CALLERS[caller]);
            assert!(!found.is_empty());
        }
    }
    // The full-scope auditor replays the ledger (fetching its keys) and
    // verifies every body: clean.
    let auditor = w.s.conn(&w.folders[1]);
    covenant_cli::audit::run(Audit::Replay, &auditor, None, true).await.unwrap();
    let state = w.s.dir.join("audit-state.json");
    let verify = Audit::Verify { bodies: true, ledger: None, state: Some(state) };
    covenant_cli::audit::run(verify, &auditor, None, true).await.unwrap();
    w.s.stop().await;
}

/// Found by the review after the fixes of issue #10 (items 13 and 15): a
/// customer told another customer's deployment from an id that does not
/// exist by the words of GetVerdict and SubmitAttestation, so it could
/// enumerate the ids the header tags hide. Both now answer alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_cannot_tell_another_customers_deployment_from_an_unknown_id() {
    use covenant_cli::attest::Attest;
    let s = Running::start("vis-enumerate").await;
    let _c = cast_with(&s, "").await;
    let (customer_y, _, _, _) = others(&s).await;
    let mut client = AttestationServiceClient::new(s.conn(&customer_y).channel().await.unwrap());
    let mut answers = Vec::new();
    for deployment in ["lim-07", "lim-99"] {
        let err = client.get_verdict(pb::GetVerdictRequest { deployment: deployment.into() }).await.unwrap_err();
        answers.push((err.code(), err.message().to_owned()));
        // An attestation of min-y naming the deployment, signed by min-y.
        let dir = s.dir.join(format!("enumerate-{deployment}"));
        std::fs::create_dir_all(&dir).unwrap();
        let from = dir.join("attestation.toml");
        std::fs::write(&from, covenant_cli::demo::attestation("min-y", deployment, "2099-01-01T00:00:00Z")).unwrap();
        let file = dir.join("attestation.dsse");
        let conn = s.conn(&customer_y);
        covenant_cli::attest::attest(Attest::New { from, out: file.clone() }, &conn, true).await.unwrap();
        covenant_cli::attest::attest(Attest::Sign { file: file.clone() }, &conn, true).await.unwrap();
        let body = std::fs::read(&file).unwrap();
        let err = client.submit_attestation(pb::SubmitRequest { envelope: body }).await.unwrap_err();
        answers.push((err.code(), err.message().to_owned()));
    }
    assert_eq!(answers[0], (Code::PermissionDenied, "this deployment is not in your scope".to_owned()));
    assert_eq!(answers[0], answers[2], "GetVerdict: another's and an unknown id answer alike");
    assert_eq!(answers[1], (Code::PermissionDenied, "a customer attests for its own deployments only".to_owned()));
    assert_eq!(answers[1], answers[3], "SubmitAttestation: another's and an unknown id answer alike");
    s.stop().await;
}

/// An attestation naming MAX_SUBJECTS (16) or more deployments carries
/// only the customer as subject; the handler checks the deployments the
/// body names, so another customer's deployment and an unknown id still
/// answer alike (the fold's words and codes would tell them apart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_cannot_tell_another_customers_deployment_from_an_unknown_id_with_sixteen_subjects() {
    let s = Running::start("vis-enumerate-16").await;
    let _c = cast_with(&s, "").await;
    let (customer_y, _, _, _) = others(&s).await;
    let dir = s.dir.join("enumerate-16");
    std::fs::create_dir_all(&dir).unwrap();
    let toml = dir.join("attestation.toml");
    std::fs::write(&toml, covenant_cli::demo::attestation("min-y", "lim-08", "2099-01-01T00:00:00Z")).unwrap();
    let file: covenant_cli::attest::AttestationFile = covenant_cli::admin::read_structured(&toml).unwrap();
    let mut client = AttestationServiceClient::new(s.conn(&customer_y).channel().await.unwrap());
    let mut answers = Vec::new();
    for probe in ["lim-07", "lim-09"] {
        // The probe sorts first; 15 made-up ids after it.
        let mut subjects = vec![deployment_subject(probe)];
        subjects.extend((1..16).map(|i| deployment_subject(&format!("zz-{i:02}"))));
        let statement = InTotoStatement::new(subjects, file.attestation.clone());
        let body = envelope::sign(&statement, &[&key_of(&customer_y)]);
        let err = client.submit_attestation(pb::SubmitRequest { envelope: body }).await.unwrap_err();
        answers.push((err.code(), err.message().to_owned()));
    }
    assert_eq!(answers[0], answers[1], "another's and an unknown id answer alike");
    s.stop().await;
}

/// A misuse signal's header carries no subject tag: a customer holding its
/// own and its deployments' subject keys finds none of the signals about
/// it, so it cannot tell that (or when) someone reported it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_cannot_tell_that_a_signal_about_it_was_filed() {
    let w = world("vis-signal-tags").await;
    let keys = subject_keys(&w.s, &w.folders[4]).await;
    assert!(keys.contains_key("min-x") && keys.contains_key("lim-07"));
    let signal = w.chosen[&EntryKind::Signal];
    let header = EntryHeader::parse(&w.entries[signal as usize].0).unwrap();
    assert!(header.tags.is_empty(), "a signal's header is tagged: {:?}", header.tags);
    for (index, (bytes, _)) in w.entries.iter().enumerate() {
        let header = EntryHeader::parse(bytes).unwrap();
        let found = keys.values().any(|k| header.tags.contains(&k.tag(&header.body_digest)));
        assert!(!(found && header.kind == EntryKind::Signal), "min-x's keys find the signal at entry {index}");
    }
    w.s.stop().await;
}
