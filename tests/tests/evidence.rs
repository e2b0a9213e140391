//! The evidence pack (`covenant audit export`, `verify-export`,
//! `docs/evidence.md`): a pack of each selection kind from a story like the
//! demo's verifies with nothing but its files, and a pack with one flipped
//! byte in a body, a proof, a header or the checkpoint, or with a decision
//! removed, is refused with the failure named (one test per mutation).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use base64::Engine as _;
use covenant_cli::admin::Admin;
use covenant_cli::audit::Audit;
use covenant_cli::evidence::Select;
use covenant_core::digest::Sha256Digest;
use covenant_core::evidence::PackEntry;
use covenant_core::statements::*;
use covenant_proto::v1 as pb;
use covenant_proto::v1::attestation_service_client::AttestationServiceClient;
use covenant_tests::*;

struct Story {
    s: Running,
    case: String,
}

/// min-x's lim-07 attested, verified, granted and installed; a misuse case
/// triaged (lim-07 withheld); min-y's lim-08 beside it, which no min-x pack
/// may name.
async fn story(name: &str) -> Story {
    let s = Running::start_witnessed(name).await;
    let c = cast(&s).await;
    let a1 = s.admin(1);
    min_y(&s).await;
    let att = attest_via_cli(&s, &c.customer).await;
    let ver = verification(&std::fs::read(att).unwrap(), Sha256Digest::of(b"verified configuration"), &c.engineer);
    let mut eng = AttestationServiceClient::new(s.conn(&c.engineer).channel().await.unwrap());
    eng.submit_verification(pb::SubmitRequest { envelope: ver }).await.unwrap();
    let granted = check_in(&s, &c.device, "grant").await;
    assert_eq!(decision_of(&granted).verdict, Verdict::Grant);
    let case_index = s.size().await;
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
    let case = format!("case-{case_index}");
    admin(&a1, Admin::Case { case: case.clone(), to: "triaged".into(), determination: None }).await;
    assert_eq!(decision_of(&check_in(&s, &c.device, "withhold").await).verdict, Verdict::Withhold);
    Story { s, case }
}

async fn export(st: &Story, select: Select, name: &str) -> PathBuf {
    let out = st.s.dir.join(format!("packs/{name}"));
    let cmd = Audit::Export { select, from: None, to: None, out: out.clone() };
    covenant_cli::audit::run(cmd, &st.s.admin(1), None, true).await.unwrap();
    out
}

fn select(customer: Option<&str>, deployment: Option<&str>, case: Option<&str>, all: bool) -> Select {
    Select {
        customer: customer.map(Into::into),
        deployment: deployment.map(Into::into),
        case: case.map(Into::into),
        all,
    }
}

fn copy(pack: &Path, to: &str) -> PathBuf {
    let dir = pack.with_file_name(to);
    std::fs::create_dir_all(dir.join("roots")).unwrap();
    for f in ["index.json", "checkpoint", "headers", "entries.jsonl", "decisions.csv"] {
        std::fs::copy(pack.join(f), dir.join(f)).unwrap();
    }
    for r in std::fs::read_dir(pack.join("roots")).unwrap() {
        let r = r.unwrap().path();
        std::fs::copy(&r, dir.join("roots").join(r.file_name().unwrap())).unwrap();
    }
    dir
}

fn entries(pack: &Path) -> Vec<PackEntry> {
    std::fs::read_to_string(pack.join("entries.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn write_entries(pack: &Path, entries: &[PackEntry]) {
    let text: String = entries.iter().map(|e| serde_json::to_string(e).unwrap() + "\n").collect();
    std::fs::write(pack.join("entries.jsonl"), text).unwrap();
}

fn body_of(e: &PackEntry) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(&e.body).unwrap()
}

/// The index of the pack's first grant.
fn grant(pack: &Path) -> usize {
    entries(pack)
        .iter()
        .position(|e| {
            covenant_core::state::classify(&body_of(e)).unwrap().kind == covenant_core::ledger::EntryKind::Grant
        })
        .expect("the pack holds the grant")
}

fn refused(pack: &Path, says: &str) {
    let e = covenant_cli::evidence::verify_export(pack, None).expect_err("the mutated pack must be refused");
    let text = format!("{e:#}");
    assert!(text.contains(says), "expected {says:?} in {text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_of_each_selection_verifies_offline() {
    let st = story("pack-kinds").await;
    let kinds = [
        ("customer", select(Some("min-x"), None, None, false)),
        ("deployment", select(None, Some("lim-07"), None, false)),
        ("case", select(None, None, Some(&st.case), false)),
        ("all", select(None, None, None, true)),
    ];
    for (name, sel) in kinds {
        let pack = export(&st, sel, name).await;
        let report = covenant_cli::evidence::verify_export(&pack, None).unwrap();
        assert_eq!(report.selection.kind, name);
        assert!(report.entries > 0 && report.cosignatures >= 1, "{name}: {report:?}");
        let index = std::fs::read_to_string(pack.join("index.json")).unwrap();
        let csv = std::fs::read_to_string(pack.join("decisions.csv")).unwrap();
        // A case's pack starts at its signal: the withhold the case caused,
        // not the grant before it.
        let decision = if name == "case" { ",lim-07,withhold,,,no_open_case," } else { ",lim-07,grant," };
        assert!(csv.lines().any(|l| l.contains(decision)), "{name}: {csv}");
        if name != "all" {
            // Nothing of the other customer: not in the index, not in a body.
            assert!(!index.contains("min-y") && !index.contains("lim-08"), "{name}'s index names min-y");
            for e in entries(&pack) {
                let body = String::from_utf8_lossy(&body_of(&e)).into_owned();
                assert!(!body.contains("lim-08") && !body.contains("Ministry Y"), "{name}: entry {}", e.index);
            }
        }
        if name != "deployment" {
            assert!(index.contains("Red flags: signals and cases"), "{name}: the case is in the pack");
        }
        assert!(index.contains("Technical safeguards"), "{name}");
    }
    // The trusted root of the verifier's own can anchor the chain.
    let pack = st.s.dir.join("packs/customer");
    let report = covenant_cli::evidence::verify_export(&pack, Some(&st.s.dir.join("root.json"))).unwrap();
    assert!(!report.trusted_on_first_use);
    st.s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_mutation_of_a_pack_is_refused_and_named() {
    let st = story("pack-mutations").await;
    let pack = export(&st, select(Some("min-x"), None, None, false), "original").await;
    covenant_cli::evidence::verify_export(&pack, None).unwrap();

    // A flipped byte in a body.
    let dir = copy(&pack, "body");
    let mut es = entries(&dir);
    let g = grant(&dir);
    let mut body = body_of(&es[g]);
    let mid = body.len() / 2;
    body[mid] ^= 1;
    es[g].body = base64::engine::general_purpose::STANDARD.encode(&body);
    write_entries(&dir, &es);
    refused(&dir, &format!("entry {}: its body does not match its header", es[g].index));

    // A flipped byte in a proof.
    let dir = copy(&pack, "proof");
    let mut es = entries(&dir);
    let g = grant(&dir);
    let h = &mut es[g].proof[0];
    let flipped = if h.starts_with('0') { "1" } else { "0" };
    h.replace_range(0..1, flipped);
    write_entries(&dir, &es);
    refused(&dir, &format!("entry {}: its inclusion proof does not verify", es[g].index));

    // A flipped byte in a header the pack does not carry a body for (the
    // root's, entry 0): the headers no longer make the checkpoint's tree.
    let dir = copy(&pack, "header");
    let text = std::fs::read_to_string(dir.join("headers")).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let at = lines[0].find("\"body_digest\":\"").unwrap() + "\"body_digest\":\"".len();
    let c = if &lines[0][at..at + 1] == "0" { "1" } else { "0" };
    lines[0].replace_range(at..at + 1, c);
    std::fs::write(dir.join("headers"), lines.join("\n") + "\n").unwrap();
    refused(&dir, "the headers: they do not reproduce the checkpoint's root hash");

    // A flipped byte in the checkpoint's root hash line.
    let dir = copy(&pack, "checkpoint");
    let mut cp = std::fs::read(dir.join("checkpoint")).unwrap();
    let third_line = cp.iter().enumerate().filter(|(_, b)| **b == b'\n').nth(1).unwrap().0 + 1;
    cp[third_line] = if cp[third_line] == b'A' { b'B' } else { b'A' };
    std::fs::write(dir.join("checkpoint"), cp).unwrap();
    refused(&dir, "the checkpoint: ledger signature");

    // A decision removed.
    let dir = copy(&pack, "decision");
    let mut es = entries(&dir);
    let g = grant(&dir);
    let removed = es.remove(g);
    write_entries(&dir, &es);
    refused(
        &dir,
        &format!("the pack is incomplete: entry {} (grant) concerns the selection but is missing", removed.index),
    );

    // A decision listed as withheld instead.
    let dir = copy(&pack, "withheld");
    let mut es = entries(&dir);
    let g = grant(&dir);
    let removed = es.remove(g);
    write_entries(&dir, &es);
    let mut index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    index["withheld"] = serde_json::json!([{ "index": removed.index, "kind": "grant" }]);
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    refused(&dir, "is a decision, which a pack never withholds");
    st.s.stop().await;
}

/// The independent check: `tests/python/verify_pack.py`, written from
/// `docs/evidence.md` alone, verifies the pack the Rust exporter wrote, and
/// refuses one with a decision removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_verifier_written_from_the_docs_verifies_a_pack() {
    let st = story("pack-python").await;
    let pack = export(&st, select(Some("min-x"), None, None, false), "python").await;
    let run = |dir: &Path| {
        let out = std::process::Command::new(python())
            .arg(workspace().join("tests/python/verify_pack.py"))
            .arg(dir)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, said) = run(&pack);
    let n = entries(&pack).len();
    assert!(ok && said.starts_with(&format!("OK {n} ")), "verify_pack.py: {said}");
    let dir = copy(&pack, "python-decision");
    let mut es = entries(&dir);
    let removed = es.remove(grant(&dir));
    write_entries(&dir, &es);
    let (ok, said) = run(&dir);
    assert!(!ok && said.contains(&format!("entry {} (grant) is missing", removed.index)), "verify_pack.py: {said}");
    // The decisions removed and lim-07's key left out, or replaced: the
    // Python verifier refuses both too.
    for (name, key) in [("python-no-key", None), ("python-false-key", Some("11".repeat(32)))] {
        let dir = copy(&pack, name);
        let mut es = entries(&dir);
        es.retain(|e| {
            !matches!(kind_of(e), covenant_core::ledger::EntryKind::Grant | covenant_core::ledger::EntryKind::Withhold)
        });
        write_entries(&dir, &es);
        set_index(&dir, |i| match &key {
            Some(k) => i["subject_keys"]["lim-07"] = serde_json::json!(k),
            None => {
                i["subject_keys"].as_object_mut().unwrap().remove("lim-07");
            }
        });
        let (ok, said) = run(&dir);
        assert!(!ok && said.contains("the subject key of lim-07"), "{name}: verify_pack.py: {said}");
    }
    // The checkpoint without its cosignature.
    let dir = copy(&pack, "python-no-witness");
    let cp = std::fs::read_to_string(dir.join("checkpoint")).unwrap();
    let stripped: String = cp.lines().filter(|l| !l.contains("witness")).map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.join("checkpoint"), stripped).unwrap();
    let (ok, said) = run(&dir);
    assert!(!ok && said.contains("witness"), "verify_pack.py: {said}");
    st.s.stop().await;
}

fn set_index(pack: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pack.join("index.json")).unwrap()).unwrap();
    edit(&mut index);
    std::fs::write(pack.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// The exporter controls the files: each way of shrinking what the pack
/// must hold, or of making its listings say something else, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_that_hides_what_its_selection_holds_is_refused() {
    let st = story("pack-hiding").await;
    let pack = export(&st, select(Some("min-x"), None, None, false), "original").await;

    // The checkpoint without its witness cosignature.
    let dir = copy(&pack, "no-witness");
    let cp = std::fs::read_to_string(dir.join("checkpoint")).unwrap();
    let stripped: String = cp.lines().filter(|l| !l.contains("witness")).map(|l| format!("{l}\n")).collect();
    assert_ne!(stripped, cp, "the checkpoint carried a cosignature");
    std::fs::write(dir.join("checkpoint"), stripped).unwrap();
    refused(&dir, "the checkpoint: witness cosignatures");

    // The decisions removed and lim-07's key replaced by another: the key
    // no longer reproduces the tag of lim-07's registration.
    let dir = copy(&pack, "false-key");
    let mut es = entries(&dir);
    es.retain(|e| {
        !matches!(kind_of(e), covenant_core::ledger::EntryKind::Grant | covenant_core::ledger::EntryKind::Withhold)
    });
    write_entries(&dir, &es);
    set_index(&dir, |i| i["subject_keys"]["lim-07"] = serde_json::json!("11".repeat(32)));
    refused(&dir, "the subject key of lim-07: it does not reproduce a tag of entry");

    // The decisions removed and lim-07's key left out.
    let dir = copy(&pack, "no-key");
    let mut es = entries(&dir);
    es.retain(|e| {
        !matches!(kind_of(e), covenant_core::ledger::EntryKind::Grant | covenant_core::ledger::EntryKind::Withhold)
    });
    write_entries(&dir, &es);
    set_index(&dir, |i| {
        i["subject_keys"].as_object_mut().unwrap().remove("lim-07");
    });
    refused(&dir, "the subject key of lim-07: the selection's subject has no key in the index");

    // The review's attack: lim-07's registration listed as withheld, its
    // key and every entry about it left out. The registration is tagged
    // with min-x, whose key the pack holds: a registration is never
    // withheld, so which deployments min-x has cannot be hidden.
    let dir = copy(&pack, "hidden-deployment");
    let mut es = entries(&dir);
    let registration = es
        .iter()
        .find(|e| kind_of(e) == covenant_core::ledger::EntryKind::Deployment)
        .map(|e| e.index)
        .expect("lim-07's registration in the pack");
    es.retain(|e| {
        let subjects = covenant_core::state::classify(&body_of(e)).map(|p| p.subjects).unwrap_or_default();
        e.index != registration && !subjects.iter().any(|s| s == "lim-07")
    });
    write_entries(&dir, &es);
    set_index(&dir, |i| {
        i["subject_keys"].as_object_mut().unwrap().remove("lim-07");
        i["withheld"].as_array_mut().unwrap().push(serde_json::json!({ "index": registration, "kind": "deployment" }));
    });
    refused(&dir, "registers a subject of the pack and is missing");

    // A narrower selection claimed (a time window that ends before the
    // decisions) while the entries stay: refused, as outside the range.
    let dir = copy(&pack, "narrowed");
    set_index(&dir, |i| i["selection"]["to"] = serde_json::json!("2000-01-01T00:00:00Z"));
    refused(&dir, "is outside the selection's range");

    // An item dropped from the index, a CSV row changed.
    let dir = copy(&pack, "sections");
    set_index(&dir, |i| {
        let items = i["sections"][0]["items"].as_array_mut().unwrap();
        items.pop();
    });
    refused(&dir, "index.json's sections are not those the verified entries give");
    let dir = copy(&pack, "csv");
    let csv = std::fs::read_to_string(dir.join("decisions.csv")).unwrap().replace(",grant,", ",withhold,");
    std::fs::write(dir.join("decisions.csv"), csv).unwrap();
    refused(&dir, "decisions.csv is not the one the verified decisions give");

    // The headers' last newline cut.
    let dir = copy(&pack, "newline");
    let mut h = std::fs::read(dir.join("headers")).unwrap();
    h.pop();
    std::fs::write(dir.join("headers"), h).unwrap();
    refused(&dir, "does not end with a newline");

    // An attestation listed as withheld: shown, and refused when the
    // verifier asks for a complete pack.
    let dir = copy(&pack, "withheld-attestation");
    let mut es = entries(&dir);
    let at = es.iter().position(|e| kind_of(e) == covenant_core::ledger::EntryKind::Attestation).unwrap();
    let removed = es.remove(at);
    write_entries(&dir, &es);
    set_index(&dir, |i| {
        i["withheld"] = serde_json::json!([{ "index": removed.index, "kind": "attestation" }]);
        let items = i["sections"][0]["items"].as_array_mut().unwrap();
        items.retain(|it| it["index"] != removed.index);
        if items.is_empty() {
            i["sections"].as_array_mut().unwrap().remove(0);
        }
    });
    let report = covenant_cli::evidence::verify_export(&dir, None).unwrap();
    assert_eq!(report.withheld.get(&covenant_core::ledger::EntryKind::Attestation), Some(&1));
    let cmd = Audit::VerifyExport { dir: dir.clone(), require_complete: true };
    let e = covenant_cli::audit::run(cmd, &st.s.admin(1), None, true).await.unwrap_err();
    assert!(format!("{e:#}").contains("withholds 1 entry"), "{e:#}");

    // A root the verifier trusts that is not the pack's.
    let other = covenant_tests::Running::start("pack-other-root").await;
    let e = covenant_cli::evidence::verify_export(&pack, Some(&other.dir.join("root.json"))).unwrap_err();
    assert!(format!("{e:#}").contains("the root you trust is not in the pack's chain"), "{e:#}");
    other.stop().await;
    st.s.stop().await;
}

fn kind_of(e: &PackEntry) -> covenant_core::ledger::EntryKind {
    covenant_core::state::classify(&body_of(e)).unwrap().kind
}

/// `report.html`, the pack as a person reads it: one self-contained file
/// (no script, nothing fetched), loaded in headless Chromium with the
/// network cut off; it shows the decisions with their reasons, the case, who
/// proposed and who approved the suspension, the signers; it prints to PDF;
/// and a customer's pack names no other customer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_reads_in_a_browser_without_network_and_prints() {
    covenant_tests::browser::chromium();
    let st = story("pack-report").await;
    let size = st.s.size().await;
    let suspend = Admin::Suspend { customer: Some("min-x".into()), deployment: None, level: "L2".into() };
    admin(&st.s.admin(1), suspend).await;
    approve_entry(&st.s, size).await;
    let pack = export(&st, select(Some("min-x"), None, None, false), "report").await;
    let html = std::fs::read_to_string(pack.join("report.html")).unwrap();
    for outside in ["<script", "src=\"http", "href=\"http", "@import", "url("] {
        assert!(!html.contains(outside), "report.html reaches outside itself: {outside}");
    }
    for other in ["min-y", "lim-08", "Ministry Y"] {
        assert!(!html.contains(other), "min-x's report names {other}");
    }
    let url = format!("file://{}", pack.join("report.html").display());
    let offline = ["--proxy-server=127.0.0.1:9".to_owned(), "--proxy-bypass-list=<-loopback>".to_owned()];
    let dom = tokio::task::block_in_place(|| {
        covenant_tests::browser::run_chromium(&[&offline[..], &["--dump-dom".to_owned(), url.clone()]].concat())
    });
    let expect = [
        "Evidence pack: customer min-x",
        "withheld",
        "granted",
        "A compliance review concerning deployment lim-07 is open",
        &st.case,
        "triaged",
        "suspension of customer min-x to L2 proposed",
        "admin1 (admin)",
        "admin2 (admin)",
        "eng-1 (engineer)",
        "How to check this report",
    ];
    for want in expect {
        assert!(dom.contains(want), "the report does not show {want:?}:\n{dom}");
    }
    let shots = covenant_tests::browser::target_dir().join("evidence-report");
    std::fs::create_dir_all(&shots).unwrap();
    let (pdf, png) = (shots.join("report.pdf"), shots.join("report.png"));
    let _ = std::fs::remove_file(&pdf);
    let _ = std::fs::remove_file(&png);
    tokio::task::block_in_place(|| {
        let print = [format!("--print-to-pdf={}", pdf.display()), "--no-pdf-header-footer".to_owned(), url.clone()];
        covenant_tests::browser::run_chromium(&[&offline[..], &print].concat());
        let shot = [format!("--screenshot={}", png.display()), "--window-size=1280,1600".to_owned(), url.clone()];
        covenant_tests::browser::run_chromium(&[&offline[..], &shot].concat());
    });
    assert!(std::fs::read(&pdf).unwrap().starts_with(b"%PDF"), "{} is not a PDF", pdf.display());
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"), "{} is not a PNG", png.display());
    println!("report: {} {}", pdf.display(), png.display());
    st.s.stop().await;
}

/// An honest pack that the review found would fail its own check: a held
/// customer's pack while a deployment registration waits for approval (its
/// key comes with its registration).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_customers_pack_verifies_while_a_deployment_waits() {
    let st = story("pack-honest").await;
    // min-x is held by the open case: lim-09's registration waits for a
    // second admin.
    let before = st.s.size().await;
    admin(&st.s.admin(1), min_x_deployment("lim-09")).await;
    assert_eq!(st.s.size().await, before + 1, "the registration was recorded, as a proposal");
    let pack = export(&st, select(Some("min-x"), None, None, false), "held").await;
    let report = covenant_cli::evidence::verify_export(&pack, None).unwrap();
    assert!(report.withheld.is_empty(), "{:?}", report.withheld);
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(pack.join("index.json")).unwrap()).unwrap();
    assert!(index["subject_keys"].get("lim-09").is_some(), "the waiting deployment's key is in the pack");
    st.s.stop().await;
}
