//! Issue #20 end to end, with the real binaries: an air-gapped device whose
//! configuration names no reachable server is updated through a field
//! engineer (request → `covenant field fetch` → `offline install` →
//! `covenant field return`), the ledger replays with no mismatch and the
//! device's `status` shows the new version; and the server refuses what a
//! courier altered or forged (a request, a receipt).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use covenant_agent::output;
use covenant_cli::audit::Audit;
use covenant_cli::field::Field;
use covenant_core::envelope::{self, Envelope};
use covenant_core::offline::Receipt;
use covenant_core::statements::{CheckIn, Decision, InstallReport, Payload as _, Verdict};
use covenant_proto::v1 as pb;
use covenant_proto::v1::attestation_service_client::AttestationServiceClient;
use covenant_proto::v1::field_service_client::FieldServiceClient;
use covenant_tests::*;

/// An enrolled device whose configuration names a server no one answers.
async fn air_gapped(s: &Running, id: &str) -> PathBuf {
    let state = enrolled_agent(s, id).await;
    let path = state.join(covenant_agent::config::FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    let cut: Vec<String> = text
        .lines()
        .map(|l| if l.starts_with("server =") { "server = \"https://127.0.0.1:9\"".to_owned() } else { l.to_owned() })
        .collect();
    std::fs::write(&path, cut.join("\n") + "\n").unwrap();
    state
}

fn st(p: &Path) -> String {
    p.display().to_string()
}

fn request(state: &Path, out: &Path) {
    let (ok, _, err) =
        tokio::task::block_in_place(|| agent_cli(&["offline", "request", "--state", &st(state), "--out", &st(out)]));
    assert!(ok, "{err}");
}

fn install(state: &Path, bundle: &Path, receipt: &Path) -> (bool, String, String) {
    tokio::task::block_in_place(|| {
        agent_cli(&["offline", "install", &st(bundle), "--state", &st(state), "--receipt", &st(receipt)])
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_air_gapped_device_is_updated_through_an_engineer_and_the_ledger_replays_clean() {
    let s = Running::start_witnessed("offline-e2e").await;
    let c = cast_with(&s, "").await;
    let state = air_gapped(&s, "lim-09").await;
    let engineer = s.conn(&c.engineer);
    // Online, the device reaches nothing.
    let (ok, _, _) = tokio::task::block_in_place(|| agent_cli(&["check", "--state", &st(&state)]));
    assert!(!ok, "the device's server must be unreachable");
    let (req, bundle, receipt) =
        (s.dir.join("lim-09.request"), s.dir.join("lim-09.bundle"), s.dir.join("lim-09.receipt"));
    request(&state, &req);
    covenant_cli::field::run(Field::Fetch { request: req.clone(), out: bundle.clone() }, &engineer, true)
        .await
        .unwrap();
    // The grant logged for the carried check-in names the engineer as its
    // courier (in the body; the decision key is its actor).
    let mut verdicts = AttestationServiceClient::new(s.admin(1).channel().await.unwrap());
    let standing = verdicts
        .get_verdict(pb::GetVerdictRequest { deployment: "lim-09".into() })
        .await
        .unwrap()
        .into_inner()
        .decision;
    let decision = Decision::parse(Envelope::parse(&standing).unwrap().payload()).unwrap();
    assert_eq!(decision.verdict, Verdict::Grant);
    assert_eq!(decision.courier.as_deref(), Some("eng-1"));
    let (ok, out, err) = install(&state, &bundle, &receipt);
    assert!(ok, "{out}{err}");
    assert!(out.contains("Installed version 1.1.0"), "{out}");
    let before = s.size().await;
    covenant_cli::field::run(Field::Return { receipt: receipt.clone() }, &engineer, true).await.unwrap();
    assert_eq!(s.size().await, before + 1, "the install report is logged");
    // The same receipt again (a report can ride in two receipts): already
    // recorded, not an error, nothing logged twice.
    covenant_cli::field::run(Field::Return { receipt: receipt.clone() }, &engineer, true).await.unwrap();
    assert_eq!(s.size().await, before + 1, "recorded once");
    let (ok, out, _) = tokio::task::block_in_place(|| agent_cli(&["status", "--state", &st(&state), "--json"]));
    assert!(ok);
    let status: output::Status = serde_json::from_str(&out).unwrap();
    assert_eq!(status.installed.version, "1.1.0");
    assert!(!status.report_pending, "the report left with the receipt");
    // The same bundle again: refused, nothing changes.
    let (ok, _, err) = install(&state, &bundle, &s.dir.join("again.receipt"));
    assert!(!ok);
    assert!(err.contains("no offline request is outstanding"), "{err}");
    // The auditor replays the whole ledger: the decision (its courier an
    // engineer with lim-09 in scope) and the report, clean.
    let auditor = s.conn(&s.dir.join("identities/auditor"));
    covenant_cli::audit::run(Audit::Replay, &auditor, None, true).await.unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_altered_by_the_courier_is_refused_by_the_server() {
    let s = Running::start_witnessed("offline-altered").await;
    let c = cast_with(&s, "").await;
    let state = air_gapped(&s, "lim-09").await;
    let req = s.dir.join("lim-09.request");
    request(&state, &req);
    let bytes = std::fs::read(&req).unwrap();
    let mut checkin = CheckIn::parse(Envelope::parse(&bytes).unwrap().payload()).unwrap();
    checkin.installed_version = "0.9.0".parse().unwrap();
    // The courier can sign only with its own key.
    std::fs::write(&req, envelope::sign(&checkin, &[&key_of(&c.engineer)])).unwrap();
    let before = s.size().await;
    let bundle = s.dir.join("lim-09.bundle");
    let got =
        covenant_cli::field::run(Field::Fetch { request: req, out: bundle.clone() }, &s.conn(&c.engineer), true).await;
    assert!(got.is_err(), "an altered request must be refused");
    assert!(!bundle.exists(), "no bundle is written");
    assert_eq!(s.size().await, before, "nothing is logged");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_forged_or_altered_by_the_courier_is_refused_by_the_server() {
    let s = Running::start_witnessed("offline-receipt").await;
    let c = cast_with(&s, "").await;
    let state = air_gapped(&s, "lim-09").await;
    let engineer = s.conn(&c.engineer);
    let (req, bundle, receipt) = (s.dir.join("r"), s.dir.join("b"), s.dir.join("c"));
    request(&state, &req);
    covenant_cli::field::run(Field::Fetch { request: req, out: bundle.clone() }, &engineer, true).await.unwrap();
    let (ok, out, err) = install(&state, &bundle, &receipt);
    assert!(ok, "{out}{err}");
    let genuine = Receipt::parse(&std::fs::read(&receipt).unwrap()).unwrap();
    let before = s.size().await;
    // Forged: the report re-signed by the courier with another outcome.
    let mut report = InstallReport::parse(Envelope::parse(&genuine.reports[0]).unwrap().payload()).unwrap();
    report.outcome = covenant_core::statements::InstallOutcome::RolledBack;
    let forged = Receipt { reports: vec![envelope::sign(&report, &[&key_of(&c.engineer)])], ..genuine.clone() };
    std::fs::write(&receipt, forged.encode().unwrap()).unwrap();
    assert!(covenant_cli::field::run(Field::Return { receipt: receipt.clone() }, &engineer, true).await.is_err());
    // Altered: one byte of the device's signed report changed.
    let mut bytes = genuine.reports[0].clone();
    let at = bytes.len() / 2;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    let altered = Receipt { reports: vec![bytes], ..genuine.clone() };
    std::fs::write(&receipt, altered.encode().unwrap()).unwrap();
    assert!(covenant_cli::field::run(Field::Return { receipt: receipt.clone() }, &engineer, true).await.is_err());
    assert_eq!(s.size().await, before, "nothing is logged");
    // The genuine receipt is accepted.
    std::fs::write(&receipt, genuine.encode().unwrap()).unwrap();
    covenant_cli::field::run(Field::Return { receipt }, &engineer, true).await.unwrap();
    assert_eq!(s.size().await, before + 1);
    s.stop().await;
}

/// Item 4: an engineer whose identity's scope is another customer carries
/// nothing for min-x's air-gapped deployment (Fetch, FetchArtifact and
/// Return refused, nothing logged), while one scoped to min-x carries all
/// three, and the decision names it as its courier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engineer_carries_only_for_the_customers_in_its_scope() {
    let s = Running::start_witnessed("offline-scope").await;
    let _c = cast_with(&s, "").await;
    let state = air_gapped(&s, "lim-09").await;
    let outside = s.conn(&scoped_engineer(&s, "eng-y", &["min-y"]).await);
    let inside = s.conn(&scoped_engineer(&s, "eng-x", &["min-x"]).await);
    let (req, bundle, receipt) = (s.dir.join("s.request"), s.dir.join("s.bundle"), s.dir.join("s.receipt"));
    request(&state, &req);
    let denied = |e: anyhow::Error| {
        let text = format!("{e:#}");
        assert!(text.contains("carries only for registered deployments in its scope"), "{text}");
    };
    let before = s.size().await;
    let fetch = |conn| covenant_cli::field::run(Field::Fetch { request: req.clone(), out: bundle.clone() }, conn, true);
    denied(fetch(&outside).await.unwrap_err());
    assert!(!bundle.exists(), "no bundle is written");
    assert_eq!(s.size().await, before, "nothing is logged");

    fetch(&inside).await.unwrap();
    let logged = s.size().await;
    assert!(logged > before, "the grant is logged");
    let mut verdicts = AttestationServiceClient::new(s.admin(1).channel().await.unwrap());
    let standing = verdicts
        .get_verdict(pb::GetVerdictRequest { deployment: "lim-09".into() })
        .await
        .unwrap()
        .into_inner()
        .decision;
    let decision = Decision::parse(Envelope::parse(&standing).unwrap().payload()).unwrap();
    assert_eq!(decision.courier.as_deref(), Some("eng-x"));
    // The artifact, asked for directly by the out-of-scope engineer.
    let mut field = FieldServiceClient::new(outside.channel().await.unwrap());
    let err = field
        .fetch_artifact(pb::FieldArtifactRequest {
            deployment: "lim-09".into(),
            release_digest: decision.release.unwrap().0.to_vec(),
            offset: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");

    let (ok, out, err) = install(&state, &bundle, &receipt);
    assert!(ok, "{out}{err}");
    denied(covenant_cli::field::run(Field::Return { receipt: receipt.clone() }, &outside, true).await.unwrap_err());
    assert_eq!(s.size().await, logged, "nothing is logged");
    covenant_cli::field::run(Field::Return { receipt }, &inside, true).await.unwrap();
    assert_eq!(s.size().await, logged + 1, "the report is logged");
    s.stop().await;
}
