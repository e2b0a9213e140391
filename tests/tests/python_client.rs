//! A device client in another language, written from `docs/` and the
//! `.proto` alone (`tests/python/covenant_client.py`, Python with `grpcio`
//! and `cryptography`), against the real server over mutual TLS: it makes its
//! keys, is enrolled with `covenant admin enroll`, checks in, verifies the
//! answer itself, downloads, reports, and refuses tampered answers. The
//! ledger afterwards holds its grant and its report, and records the version
//! it reported as installed.
//!
//! The Python environment is the one `.ci/test` (the README's test command)
//! prepares in `target/pyenv`, or the interpreter `$COVENANT_PYTHON` names.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use covenant_cli::admin::Admin;
use covenant_core::digest::Sha256Digest;
use covenant_core::envelope::Envelope;
use covenant_core::ledger::{EntryHeader, EntryKind, Keyring};
use covenant_core::statements::{Decision, InstallOutcome, InstallReport, Payload};
use covenant_proto::v1 as pb;
use covenant_proto::v1::ledger_service_client::LedgerServiceClient;
use covenant_server::datadir;
use covenant_tests::*;

/// Runs `covenant_client.py ARGS`; panics with its output unless it succeeds.
fn client(python: &Path, args: &[&str]) -> String {
    let script = workspace().join("tests/python/covenant_client.py");
    let out = std::process::Command::new(python).arg(&script).args(args).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "covenant_client.py {args:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    stdout.into_owned()
}

fn arg(path: &Path) -> String {
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_written_from_the_docs_enrolls_verifies_its_grant_downloads_and_reports() {
    let python = python();
    let s = Running::start_witnessed("python-client").await;
    cast_with(&s, "").await;
    let deployment = min_x_deployment("lim-11");
    register_deployment(&s, deployment).await;

    // The device makes its keys and request; an officer enrolls it.
    let state = s.dir.join("python-device");
    let signing_key = tokio::task::block_in_place(|| client(&python, &["keygen", "--state", &arg(&state)]));
    let bundle = s.dir.join("python-bundle");
    admin(
        &s.admin(1),
        Admin::Enroll { deployment: "lim-11".into(), csr: state.join("request.csr"), out: bundle.clone() },
    )
    .await;

    let out = tokio::task::block_in_place(|| {
        client(
            &python,
            &[
                "run",
                "--state",
                &arg(&state),
                "--bundle",
                &arg(&bundle),
                "--product",
                "lim",
                "--installed",
                "1.0.0",
                "--allow-development",
            ],
        )
    });
    println!("the Python client's result: {out}");
    let result: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(result["deployment"], "lim-11", "{out}");
    assert_eq!(result["second_checkin"], "current", "{out}");
    assert_eq!(result["reported_version"], "1.1.0", "{out}");
    // It held a checkpoint before it checked in, so the answer carried a
    // consistency proof from it, which the client checked.
    assert!(result["first_checkpoint_size"].as_u64().unwrap() > 0, "{out}");
    let manifest = std::fs::read(s.dir.join("lim-1.1.0.manifest")).unwrap();
    let release = Sha256Digest::of(Envelope::parse(&manifest).unwrap().payload());
    assert_eq!(result["release"], release.to_string(), "{out}");
    let artifact = Sha256Digest::of(&std::fs::read(s.dir.join("lim-1.1.0.img")).unwrap());
    assert_eq!(result["artifact_sha256"], artifact.to_string(), "{out}");
    // Every tampered answer was refused, each at the check that catches it.
    let refused = result["refused"].as_object().unwrap();
    for case in [
        "a tampered decision signature",
        "a decision envelope with a tampered signature",
        "a tampered inclusion proof",
        "a tampered checkpoint signature",
        "a tampered witness cosignature",
        "a tampered freshness signature",
        "an answer to another nonce (a replay)",
        "a tampered release manifest signature",
        "an expired grant",
        "a tampered consistency proof",
    ] {
        assert!(refused.contains_key(case), "{case} was not tried: {out}");
    }

    // The ledger: the grant the client verified and the report it sent.
    let (grant_index, report_index) =
        (result["grant_index"].as_u64().unwrap(), result["report_index"].as_u64().unwrap());
    let mut ledger = LedgerServiceClient::new(s.admin(1).channel().await.unwrap());
    let size = s.size().await;
    let entries = ledger
        .get_entries(pb::GetEntriesRequest { start: 0, end: size, with_bodies: true })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let headers: Vec<EntryHeader> = entries.iter().map(|e| EntryHeader::parse(&e.header).unwrap()).collect();
    let grant = &entries[grant_index as usize];
    assert_eq!(headers[grant_index as usize].kind, EntryKind::Grant);
    let decision = Decision::parse(Envelope::parse(&grant.body).unwrap().payload()).unwrap();
    assert_eq!(decision.deployment, "lim-11");
    assert_eq!(decision.release, Some(release));
    // The check-in it answers was signed by the key the client made.
    let checkin = Envelope::parse(&decision.checkin).unwrap();
    let key = covenant_core::keys::PublicKey::from_hex(signing_key.trim()).unwrap();
    assert_eq!(checkin.signatures()[0].keyid, key.key_id().to_string());
    let report = &entries[report_index as usize];
    assert_eq!(headers[report_index as usize].kind, EntryKind::Report);
    let report = InstallReport::parse(Envelope::parse(&report.body).unwrap().payload()).unwrap();
    assert_eq!(report.deployment, "lim-11");
    assert_eq!(report.grant_index, grant_index);
    assert_eq!(report.outcome, InstallOutcome::Installed);
    assert_eq!(report.to_version.to_string(), "1.1.0");
    // Folded, the ledger records the version the client reported as installed.
    let keyring = Keyring::Secret(datadir::read_subject_secret(&s.dir).unwrap());
    let replayed = covenant_core::replay::replay(
        keyring,
        entries.iter().zip(&headers).map(|(e, h)| (e.index, h, e.body.as_slice())),
    );
    assert!(replayed.mismatches.is_empty(), "{:?}", replayed.mismatches);
    assert_eq!(replayed.state.deployment("lim-11").unwrap().installed_version, report.to_version);
    s.stop().await;
}
