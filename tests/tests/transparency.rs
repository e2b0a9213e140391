//! The public transparency report (`covenant audit transparency`,
//! `core::transparency`): from the server and from a plain copy of the
//! ledger's published files it gives byte-identical text, JSON and HTML;
//! the counts are the story's; a tampered copy or another ledger's root is
//! refused; the page reads in headless Chromium with the network cut off.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use covenant_cli::admin::Admin;
use covenant_core::digest::{Sha256Digest, Timestamp};
use covenant_core::statements::*;
use covenant_proto::v1 as pb;
use covenant_proto::v1::attestation_service_client::AttestationServiceClient;
use covenant_proto::v1::ledger_service_client::LedgerServiceClient;
use covenant_tests::*;

/// Runs the `covenant` binary with `args` (no identity, no server unless
/// the args name them); returns (exit code, stdout, stderr).
async fn covenant(args: Vec<String>) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(binary("covenant"));
    cmd.env_remove("COVENANT_SERVER")
        .env_remove("COVENANT_IDENTITY")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    (out.status.code(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

async fn covenant_ok(args: Vec<String>) -> String {
    let (code, out, err) = covenant(args.clone()).await;
    assert_eq!(code, Some(0), "covenant {args:?}: {err}");
    out
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// min-x's lim-07 granted, then a misuse case opened (lim-07 withheld), an
/// L1 suspension raised at once and lifted with a second admin's approval,
/// and the case closed the same way. Returns the server, waited for until
/// its published checkpoint is the one it serves (cosigned, tiles written).
async fn story(name: &str) -> Running {
    let s = Running::start_witnessed(name).await;
    let c = cast(&s).await;
    let a1 = s.admin(1);
    let att = attest_via_cli(&s, &c.customer).await;
    let ver = verification(&std::fs::read(att).unwrap(), Sha256Digest::of(b"verified configuration"), &c.engineer);
    let mut eng = AttestationServiceClient::new(s.conn(&c.engineer).channel().await.unwrap());
    eng.submit_verification(pb::SubmitRequest { envelope: ver }).await.unwrap();
    assert_eq!(decision_of(&check_in(&s, &c.device, "grant").await).verdict, Verdict::Grant);
    let case = format!("case-{}", s.size().await);
    covenant_cli::attest::signal(
        &s.conn(&c.engineer),
        "min-x".into(),
        Some("lim-07".into()),
        "field_engineer",
        "seen".into(),
        vec![],
        true,
    )
    .await
    .unwrap();
    admin(&a1, Admin::Case { case: case.clone(), to: "triaged".into(), determination: None }).await;
    assert_eq!(decision_of(&check_in(&s, &c.device, "withhold").await).verdict, Verdict::Withhold);
    admin(&a1, Admin::Suspend { customer: Some("min-x".into()), deployment: None, level: "L1".into() }).await;
    let lift = s.size().await;
    admin(&a1, Admin::Suspend { customer: Some("min-x".into()), deployment: None, level: "none".into() }).await;
    approve_entry(&s, lift).await;
    let close = s.size().await;
    admin(&a1, Admin::Case { case, to: "closed".into(), determination: None }).await;
    approve_entry(&s, close).await;

    // Wait (bounded) until the published checkpoint is the served one and
    // covers every entry.
    let size = s.size().await;
    let mut ledger = LedgerServiceClient::new(a1.channel().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let served = ledger.get_checkpoint(pb::GetCheckpointRequest {}).await.unwrap().into_inner().note;
        let published = std::fs::read(s.dir.join("ledger/public/checkpoint")).unwrap_or_default();
        let covers = std::str::from_utf8(&served).ok().and_then(|t| t.lines().nth(1)?.parse::<u64>().ok());
        if served == published && covers == Some(size) {
            break;
        }
        assert!(Instant::now() < deadline, "the published checkpoint never reached size {size}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s
}

/// `--from` yesterday, `--to` the day after tomorrow: the story's entries
/// all fall on today.
fn range() -> (String, String) {
    let now = Timestamp::since_epoch(std::time::SystemTime::now());
    let day = |offset: i64| now.plus_seconds(offset * 86_400).to_string()[..10].to_owned();
    (day(-1), day(2))
}

fn server_args(s: &Running, extra: &[&str]) -> Vec<String> {
    let (from, to) = range();
    let identity = s.dir.join("identities/admin1");
    let mut args = strings(&["--server", &s.url, "--identity"]);
    args.push(identity.display().to_string());
    args.extend(strings(&["audit", "transparency", "--from", &from, "--to", &to, "--period", "day"]));
    args.extend(strings(extra));
    args
}

fn files_args(public: &Path, root: &Path, extra: &[&str]) -> Vec<String> {
    let (from, to) = range();
    let mut args = strings(&["audit", "--root"]);
    args.push(root.display().to_string());
    args.extend(strings(&["transparency", "--ledger"]));
    args.push(public.display().to_string());
    args.extend(strings(&["--from", &from, "--to", &to, "--period", "day"]));
    args.extend(strings(extra));
    args
}

fn copy_of_public(s: &Running, name: &str) -> PathBuf {
    let copy = std::env::temp_dir().join(format!("covenant-tiles-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&copy);
    copy_dir(&s.dir.join("ledger/public"), &copy);
    copy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_from_the_server_and_from_a_copy_of_the_tiles_is_the_same() {
    let s = story("transparency-same").await;
    let copy = copy_of_public(&s, "same");
    let root = s.dir.join("root.json");
    for format in [&[][..], &["--html"][..]] {
        let online = covenant_ok(server_args(&s, format)).await;
        let offline = covenant_ok(files_args(&copy, &root, format)).await;
        assert_eq!(online, offline, "{format:?}: the server's report and the tiles' differ");
    }
    // --json is a global flag, placed before the command.
    let mut online = strings(&["--json"]);
    online.extend(server_args(&s, &[]));
    let mut offline = strings(&["--json"]);
    offline.extend(files_args(&copy, &root, &[]));
    let (online, offline) = (covenant_ok(online).await, covenant_ok(offline).await);
    assert_eq!(online, offline, "the JSON reports differ");

    let json: serde_json::Value = serde_json::from_str(&online).unwrap();
    let total = &json["total"];
    let want = [
        ("grants", 1),
        ("withholds", 1),
        ("suspensions_raised", 1),
        ("suspensions_lifted", 1),
        ("cases_opened", 1),
        ("cases_closed", 1),
    ];
    for (name, n) in want {
        assert_eq!(total[name], n, "{name} in {json}");
    }
    let size = s.size().await;
    assert_eq!(json["checkpoint"]["size"], size);
    assert_eq!(total["entries"], size, "every entry falls in the range: {json}");
    assert_eq!(json["checkpoint"]["cosignatures"], 1);
    assert_eq!(json["periods"].as_array().unwrap().len(), 3, "{json}");
    let text = covenant_ok(server_args(&s, &[])).await;
    for want in ["Transparency report of the ledger", "suspensions lifted", "total", "--ledger DIR"] {
        assert!(text.contains(want), "the text report lacks {want:?}:\n{text}");
    }
    let _ = std::fs::remove_dir_all(&copy);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_copy_of_the_tiles_or_another_ledgers_root_is_refused() {
    let s = story("transparency-tampered").await;
    let root = s.dir.join("root.json");

    // A header's kind relabelled in the copy: no longer a header.
    let copy = copy_of_public(&s, "tampered");
    // The partial bundle of the checkpoint's width (older, narrower ones stay beside it).
    let bundle = copy.join(format!("tile/entries/000.p/{}", s.size().await));
    let original = std::fs::read(&bundle).unwrap();
    let mut bytes = original.clone();
    let at = bytes.windows(8).position(|w| w == b"withhold").expect("a withhold header in the first bundle");
    bytes[at..at + 8].copy_from_slice(b"withholt");
    std::fs::write(&bundle, &bytes).unwrap();
    let (code, _, err) = covenant(files_args(&copy, &root, &[])).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("header is malformed"), "{err}");
    // A header's time moved by a year (still a well-formed header, and it
    // would leave the range): the headers no longer hash to the root.
    let mut bytes = original.clone();
    let at = bytes.windows(9).position(|w| w == b"\"time\":\"2").expect("a header's time") + 11;
    bytes[at] = if bytes[at] == b'9' { b'8' } else { bytes[at] + 1 };
    std::fs::write(&bundle, &bytes).unwrap();
    let (code, _, err) = covenant(files_args(&copy, &root, &[])).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("do not hash to the signed checkpoint's root"), "{err}");
    // A missing bundle.
    std::fs::remove_file(&bundle).unwrap();
    let (code, _, err) = covenant(files_args(&copy, &root, &[])).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("tile/entries/000.p/"), "{err}");

    // Another ledger's root: the checkpoint is not signed by its ledger key.
    let other = std::env::temp_dir().join(format!("covenant-other-ledger-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&other);
    tokio::task::block_in_place(|| covenant_server::datadir::init_dev(&other)).unwrap();
    let fresh = copy_of_public(&s, "other-root");
    let (code, _, err) = covenant(files_args(&fresh, &other.join("root.json"), &[])).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("not signed by the ledger key"), "{err}");

    // The same files with the witness's cosignature taken off the
    // checkpoint: a tree only the vendor signed proves nothing (a split
    // view would look exactly so).
    let bare = copy_of_public(&s, "uncosigned");
    let note = std::fs::read_to_string(bare.join("checkpoint")).unwrap();
    let ledger_only: String = note.lines().filter(|l| !l.starts_with("— witness")).map(|l| format!("{l}\n")).collect();
    assert_ne!(ledger_only, note, "the published checkpoint is cosigned");
    std::fs::write(bare.join("checkpoint"), ledger_only).unwrap();
    let (code, _, err) = covenant(files_args(&bare, &root, &[])).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("prove nothing") && err.contains("carries 0 valid witness cosignatures"), "{err}");
    let _ = std::fs::remove_dir_all(&bare);

    // A range that holds nothing, and one too fine for its length.
    let mut args = files_args(&fresh, &root, &[]);
    let to = args.iter().position(|a| a == "--to").unwrap();
    args[to + 1] = args[to - 1].clone();
    let (code, _, err) = covenant(args).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("must be before its end"), "{err}");
    for p in [copy, fresh, other] {
        let _ = std::fs::remove_dir_all(p);
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_reads_in_a_browser_without_network() {
    covenant_tests::browser::chromium();
    let s = story("transparency-page").await;
    let html = covenant_ok(server_args(&s, &["--html"])).await;
    for outside in ["<script", "src=\"http", "href=\"http", "@import", "url("] {
        assert!(!html.contains(outside), "the page reaches outside itself: {outside}");
    }
    let shots = covenant_tests::browser::target_dir().join("transparency");
    std::fs::create_dir_all(&shots).unwrap();
    let page = shots.join("report.html");
    std::fs::write(&page, &html).unwrap();
    let url = format!("file://{}", page.display());
    let offline = ["--proxy-server=127.0.0.1:9".to_owned(), "--proxy-bypass-list=<-loopback>".to_owned()];
    let dom = tokio::task::block_in_place(|| {
        covenant_tests::browser::run_chromium(&[&offline[..], &["--dump-dom".to_owned(), url.clone()]].concat())
    });
    for want in [
        "Transparency report",
        "What it covers",
        "covenant.localhost/ledger",
        "suspensions lifted",
        "cases closed",
        "Total",
        "How to check it",
        "covenant audit transparency --ledger DIR",
    ] {
        assert!(dom.contains(want), "the page does not show {want:?}:\n{dom}");
    }
    let png = shots.join("report.png");
    let _ = std::fs::remove_file(&png);
    tokio::task::block_in_place(|| {
        let shot = [format!("--screenshot={}", png.display()), "--window-size=1100,1100".to_owned(), url.clone()];
        covenant_tests::browser::run_chromium(&[&offline[..], &shot].concat());
    });
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"), "{} is not a PNG", png.display());
    println!("page: {}", png.display());
    s.stop().await;
}
