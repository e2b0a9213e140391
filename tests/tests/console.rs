//! The browser console (`covenant console`, issue #18) in a real headless
//! Chromium: a server with the demo's story (two customers, a grant, a
//! withhold with its reasons, a case, a suspension awaiting a second
//! admin), a console as an admin and one as customer min-x, each page
//! loaded and its DOM checked for the rows and reasons it must show, a
//! screenshot of each page under `target/console-screenshots/`; then the
//! refusals (a foreign `Host`, a foreign `Origin`, a POST) over raw HTTP,
//! and the page a console shows once its server is gone.
//!
//! Chromium is Debian's `chromium` package (`.ci/test` installs it), or the
//! binary in `$COVENANT_CHROMIUM`. Without it the test fails, naming the
//! package: it never passes by skipping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use covenant_cli::admin::Admin;
use covenant_cli::attest::Verify;
use covenant_cli::connect::Connection;
use covenant_core::digest::Sha256Digest;
use covenant_core::statements::{ConditionStatus, Verdict};
use covenant_proto::v1 as pb;
use covenant_proto::v1::update_service_client::UpdateServiceClient;
use covenant_tests::browser::{chromium, run_chromium, target_dir};
use covenant_tests::*;

/// The DOM Chromium built from `url`.
fn dom(url: &str) -> String {
    tokio::task::block_in_place(|| run_chromium(&["--dump-dom".to_owned(), url.to_owned()]))
}

/// A 1280×900 screenshot of `url`, saved as `name`.png; returns its path.
fn screenshot(url: &str, name: &str) -> PathBuf {
    let dir = target_dir().join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.png"));
    let _ = std::fs::remove_file(&path);
    tokio::task::block_in_place(|| {
        run_chromium(&[format!("--screenshot={}", path.display()), "--window-size=1280,900".to_owned(), url.to_owned()])
    });
    let png = std::fs::read(&path).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", path.display()));
    assert!(png.starts_with(b"\x89PNG"), "{} is not a PNG", path.display());
    println!("screenshot: {}", path.display());
    path
}

/// Loads `path` of the console at `base`, saves its screenshot as `name`,
/// and returns its DOM.
fn page(base: &str, path: &str, name: &str) -> String {
    let url = format!("{base}{path}");
    let dom = dom(&url);
    screenshot(&url, name);
    dom
}

fn assert_has(dom: &str, what: &[&str], page: &str) {
    for w in what {
        assert!(dom.contains(w), "{page} does not show {w:?}:\n{dom}");
    }
}

/// A console as `conn`'s identity on an OS-chosen loopback port; returns
/// its base URL and the sender that stops it.
async fn console(conn: Connection) -> (String, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        covenant_cli::console::serve(listener, &conn, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (base, stop, task)
}

/// One raw HTTP/1.1 request to the console at `base` (`http://ADDR`);
/// returns the status code and the whole answer.
fn raw(base: &str, request: &str) -> (u16, String) {
    tokio::task::block_in_place(|| raw_blocking(base, request))
}

fn raw_blocking(base: &str, request: &str) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.replace("ADDR", addr).as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let code = answer.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status: {answer}"));
    (code, answer)
}

/// lim-08 (min-y's) checks in at 1.0.0.
async fn check_in_lim_08(s: &Running, device: &Path) -> pb::CheckInResponse {
    let body = signed_checkin(
        "lim-08",
        "1.0.0",
        Sha256Digest::of(b"verified configuration"),
        None,
        Sha256Digest::of(b"m1"),
        &key_of(device),
    );
    let mut c = UpdateServiceClient::new(s.conn(device).channel().await.unwrap());
    c.check_in(pb::CheckInRequest { checkin: body }).await.unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_each_page_as_its_identity_may_see_it_in_headless_chromium() {
    chromium();
    let s = Running::start_witnessed("console").await;
    let c = cast(&s).await;
    let a1 = s.admin(1);

    // A second customer, min-y, with lim-08 and a contract with no
    // conditions: granted at its first check-in.
    admin(&a1, Admin::Customer { id: "min-y".into(), name: "Ministry Y".into(), country: "XA".into() }).await;
    register_deployment(
        &s,
        Admin::Deployment {
            id: "lim-08".into(),
            customer: "min-y".into(),
            product: "lim".into(),
            country: "XA".into(),
            site: "s2".into(),
            provisioned_version: "1.0.0".into(),
        },
    )
    .await;
    let contract = s.dir.join("contract-min-y.toml");
    std::fs::write(
        &contract,
        "id = \"contract-min-y\"\nversion = 1\ncustomer = \"min-y\"\ngrant_validity_seconds = 604800\n\
         compliance_contact = \"compliance@vendor.example\"\nconditions = []\n",
    )
    .unwrap();
    first_contract(&s, contract).await;
    let device_08 = person(&s, "deployment", "lim-08").await;
    assert_eq!(decision_of(&check_in_lim_08(&s, &device_08).await).verdict, Verdict::Grant);

    // lim-07: attested and verified, granted; then a misuse signal opens a
    // case, triaged, and lim-07 is withheld with its reasons.
    let att = attest_via_cli(&s, &c.customer).await;
    let engineer = s.conn(&c.engineer);
    let ver = c.engineer.join("verification.dsse");
    let sign = Verify::Sign {
        attestation: att,
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
    assert_eq!(decision_of(&check_in(&s, &c.device, "n1").await).verdict, Verdict::Grant);
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
    admin(&a1, Admin::Case { case: case.clone(), to: "triaged".into(), determination: None }).await;
    let withheld = decision_of(&check_in(&s, &c.device, "n2").await);
    assert_eq!(withheld.verdict, Verdict::Withhold);
    let reason = withheld
        .conditions
        .iter()
        .find(|c| c.status == ConditionStatus::Unmet && c.condition == "no_open_case")
        .unwrap()
        .reason
        .clone();

    // An L2 suspension of min-x, proposed by admin1, awaits admin2.
    let size = s.size().await;
    admin(&a1, Admin::Suspend { customer: Some("min-x".into()), deployment: None, level: "L2".into() }).await;
    let digest = proposal_digest(&s, size).await.to_string();
    let change = covenant_cli::query::proposals(&mut covenant_cli::query::client(&a1).await.unwrap())
        .await
        .unwrap()
        .proposals
        .into_iter()
        .find(|p| p.digest == digest)
        .unwrap()
        .change;

    let (admin_base, stop_admin, admin_task) = console(s.admin(1)).await;
    let (customer_base, stop_customer, customer_task) = console(s.conn(&c.customer)).await;

    // The fleet, as admin1: both deployments, their verdicts, the flags' legend.
    let fleet = page(&admin_base, "/", "admin-fleet");
    assert_has(
        &fleet,
        &[
            "admin admin1",
            "lim-07",
            "lim-08",
            "min-x",
            "min-y",
            "withheld",
            "granted",
            "/deployments/lim-07",
            "expiring",
        ],
        "the admin's fleet",
    );
    // Filtered by verdict, only the grant; sorted by customer, descending.
    let granted = dom(&format!("{admin_base}/?verdict=grant"));
    assert!(granted.contains("id=\"row-lim-08\"") && !granted.contains("id=\"row-lim-07\""), "{granted}");
    let sorted = dom(&format!("{admin_base}/?sort=customer&dir=desc"));
    let (y, x) = (sorted.find("id=\"row-lim-08\"").unwrap(), sorted.find("id=\"row-lim-07\"").unwrap());
    assert!(y < x, "min-y sorts before min-x descending");

    // lim-07: withheld, each unmet condition's reason, its history, releases.
    let lim07 = page(&admin_base, "/deployments/lim-07", "admin-deployment");
    assert_has(
        &lim07,
        &[
            "Withheld",
            "no_open_case",
            reason.as_str(),
            "attestation",
            "1.1.0",
            "installed",
            "signal",
            "covenant status lim-07",
            "Evidence report of lim-07",
            "/evidence?deployment=lim-07",
        ],
        "lim-07's page",
    );
    // The console links the evidence pack's report (#19): built on request
    // by `audit export`, served with a policy that allows its inline styles
    // and nothing else.
    let report = page(&admin_base, "/evidence?deployment=lim-07", "admin-evidence-report");
    assert_has(
        &report,
        &["Evidence pack: deployment lim-07", "withheld", "granted", "How to check this report"],
        "lim-07's evidence report",
    );
    let (code, answer) =
        raw(&admin_base, "GET /evidence?deployment=lim-07 HTTP/1.1\r\nHost: ADDR\r\nConnection: close\r\n\r\n");
    assert_eq!(code, 200, "{answer}");
    let policy = answer.lines().find(|l| l.to_ascii_lowercase().starts_with("content-security-policy:")).unwrap();
    assert!(policy.contains("default-src 'none'") && policy.contains("style-src 'unsafe-inline'"), "{policy}");
    assert!(!policy.contains("script") && !answer.contains("x-covenant-self-contained"), "{policy}");
    let which = dom(&format!("{admin_base}/evidence?deployment=lim-07&customer=min-x"));
    assert_has(&which, &["Which evidence report?"], "an evidence report of two subjects");
    let lim08 = dom(&format!("{admin_base}/deployments/lim-08"));
    assert_has(&lim08, &["Granted", "offered", "1.1.0"], "lim-08's page");

    let proposals = page(&admin_base, "/proposals", "admin-proposals");
    let approve = format!("covenant admin approve {digest}");
    assert_has(&proposals, &[change.as_str(), approve.as_str(), "1 of 2", "admin1"], "the proposals");

    let cases = page(&admin_base, "/cases", "admin-cases");
    assert_has(&cases, &[case.as_str(), "triaged", "min-x", "eng-1", "received → triaged"], "the cases");
    assert!(cases.contains(&format!("/evidence?case={case}")), "the cases page links each case's evidence report");

    let releases = page(&admin_base, "/releases", "admin-releases");
    assert_has(&releases, &["1.0.0", "1.1.0", "capability", "lim-07"], "the releases");

    let ledger = page(&admin_base, "/ledger", "admin-ledger");
    let checkpoint_size = {
        let start = ledger.find("id=\"size\">").unwrap() + "id=\"size\">".len();
        ledger[start..].split('<').next().unwrap().parse::<u64>().unwrap()
    };
    assert!(checkpoint_size > signal_index, "the checkpoint covers the story: size {checkpoint_size}");
    assert_has(
        &ledger,
        &["verified: size", "witness cosignature, verified", covenant_server::datadir::DEV_WITNESS_NAME],
        "the ledger",
    );

    // Customer min-x's console: its own deployment only, and polite
    // refusals for proposals and cases.
    let fleet = page(&customer_base, "/", "customer-fleet");
    assert_has(&fleet, &["customer min-x", "lim-07"], "the customer's fleet");
    assert!(!fleet.contains("lim-08") && !fleet.contains("min-y"), "min-x sees min-y's deployment:\n{fleet}");
    // Its deployment's page gives the reason in the customer's words, never
    // the case behind it (who reported what stays with the vendor): not even
    // that a signal was filed (signals carry no subject tag), while the
    // admin's page above lists it.
    let own = page(&customer_base, "/deployments/lim-07", "customer-deployment");
    assert_has(&own, &["Withheld", reason.as_str(), "attestation"], "the customer's lim-07");
    assert!(!own.contains("<span class=\"kind\">signal</span>"), "the customer's history lists the signal:\n{own}");
    assert!(lim07.contains("<span class=\"kind\">signal</span>"), "the admin's history lists the signal");
    assert!(!own.contains("journalists") && !own.contains("eng-1") && !own.contains(&case), "{own}");
    // Its own evidence report names neither the case nor who reported; min-y's is not built.
    let own_report = dom(&format!("{customer_base}/evidence?deployment=lim-07"));
    assert_has(&own_report, &["Evidence pack: deployment lim-07", "withheld"], "the customer's evidence report");
    assert!(!own_report.contains("eng-1") && !own_report.contains(&case), "{own_report}");
    let other_report = dom(&format!("{customer_base}/evidence?deployment=lim-08"));
    assert!(!other_report.contains("Evidence pack") && !other_report.contains("granted"), "{other_report}");
    let hidden = dom(&format!("{customer_base}/deployments/lim-08"));
    assert_has(&hidden, &["No such deployment"], "min-y's deployment in min-x's console");
    let proposals = page(&customer_base, "/proposals", "customer-proposals");
    assert_has(&proposals, &["Your identity cannot see proposals"], "the customer's proposals");
    assert!(!proposals.contains(&digest), "{proposals}");
    let cases = page(&customer_base, "/cases", "customer-cases");
    assert_has(&cases, &["Your identity cannot see cases"], "the customer's cases");
    assert!(!cases.contains(&case), "{cases}");

    // A foreign Host (DNS rebinding), a foreign Origin, a POST: refused,
    // with no page content; every answer carries the security headers.
    let (code, answer) = raw(&admin_base, "GET / HTTP/1.1\r\nHost: evil.example:8080\r\nConnection: close\r\n\r\n");
    assert!(code == 421 || code == 403, "{answer}");
    assert!(!answer.contains("lim-07") && !answer.contains("<table"), "{answer}");
    let (code, answer) =
        raw(&admin_base, "GET / HTTP/1.1\r\nHost: ADDR\r\nOrigin: http://evil.example\r\nConnection: close\r\n\r\n");
    assert_eq!(code, 403, "{answer}");
    assert!(!answer.contains("lim-07"), "{answer}");
    let (code, answer) =
        raw(&admin_base, "POST / HTTP/1.1\r\nHost: ADDR\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    assert_eq!(code, 405, "{answer}");
    let (code, answer) = raw(&admin_base, "GET / HTTP/1.1\r\nHost: ADDR\r\nConnection: close\r\n\r\n");
    assert_eq!(code, 200, "{answer}");
    let lower = answer.to_ascii_lowercase();
    for header in [
        "content-security-policy: default-src 'none'; style-src 'self'; img-src 'self'",
        "x-frame-options: deny",
        "referrer-policy: no-referrer",
        "x-content-type-options: nosniff",
        "cache-control: no-store",
    ] {
        assert!(lower.contains(header), "no {header}:\n{answer}");
    }

    // The server stops: the console says it cannot reach it.
    s.stop().await;
    let (code, answer) = raw(&admin_base, "GET / HTTP/1.1\r\nHost: ADDR\r\nConnection: close\r\n\r\n");
    assert_eq!(code, 502, "{answer}");
    assert!(answer.contains("Cannot reach the server"), "{answer}");

    let _ = stop_admin.send(());
    let _ = stop_customer.send(());
    admin_task.await.unwrap();
    customer_task.await.unwrap();
}
