//! The Prometheus metrics (issue #21, `server/src/metrics.rs`): scraped
//! from their own plain-HTTP listener before and after a small load (a
//! customer set up, a device granted, its artifact downloaded, a refused
//! check-in, the clock moved past the dark window), each metric moves as it
//! should; the listener is not the mTLS port and serves nothing but
//! `/metrics`; every metric the example alert rules (`docs/alerts.yml`) use
//! is one the server exports.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use covenant_core::digest::Sha256Digest;
use covenant_core::statements::*;
use covenant_proto::v1 as pb;
use covenant_proto::v1::attestation_service_client::AttestationServiceClient;
use covenant_proto::v1::update_service_client::UpdateServiceClient;
use covenant_tests::*;

/// `GET path` from the listener at `addr`: (status, body).
fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let code = answer.split(' ').nth(1).unwrap().parse().unwrap();
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (code, body)
}

/// Every sample of a scrape: `name{labels}` → value.
fn scrape(addr: std::net::SocketAddr) -> BTreeMap<String, f64> {
    let (code, body) = tokio::task::block_in_place(|| get(addr, "/metrics"));
    assert_eq!(code, 200, "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_owned(), value.parse().unwrap())
        })
        .collect()
}

/// The witness that never answers.
const DOWN: &str = "witness.invalid/down";

fn at(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    *m.get(name).unwrap_or_else(|| panic!("no sample {name} in {:#?}", m.keys().collect::<Vec<_>>()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_metric_moves_with_the_load_and_only_metrics_are_served_there() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // The server's clock runs with the system's, plus an offset the test
    // moves (a clock that stood still would date the test's own
    // statements after the ledger's time on a slow run).
    let clock = Arc::new(AtomicI64::new(0));
    let read = clock.clone();
    let s = Running::start_configured("metrics", true, move |config| {
        // A second witness that is down: its errors count, its lag grows.
        let key = covenant_core::keys::SigningKey::from_seed(&[7; 32]);
        let down = covenant_core::note::NoteSigner::new(DOWN, key).unwrap().cosignature_verifier();
        let toml = config.data.join("witnesses.toml");
        let mut listed = std::fs::read_to_string(&toml).unwrap();
        let cert = config.data.join("witness-state/tls-cert.pem");
        listed.push_str(&format!(
            "[[witness]]\nname = \"{DOWN}\"\naddress = \"https://127.0.0.1:9\"\nvkey = \"{down}\"\ncert = \"{}\"\n",
            cert.display()
        ));
        std::fs::write(&toml, listed).unwrap();
        config.metrics = Some(Arc::new(listener));
        config.clock = Arc::new(move || now().plus_seconds(read.load(Ordering::SeqCst)));
    })
    .await;
    s.size().await;
    let before = scrape(addr);
    for name in [
        "covenant_checkpoint_size",
        "covenant_checkpoint_age_seconds",
        "covenant_witnessed_size",
        "covenant_sequencer_queue_depth",
        "covenant_downloads_active",
        "covenant_download_bytes_total",
        "covenant_grants_expiring_7d",
        "covenant_devices_dark",
        "covenant_devices_never_seen",
        "covenant_append_batch_entries_count",
        "covenant_append_batch_duration_seconds_count",
        "covenant_ledger_halted",
        "covenant_gate_refusals_total",
    ] {
        at(&before, name);
    }
    let witness = format!("{{witness=\"{}\"}}", covenant_server::datadir::DEV_WITNESS_NAME);
    at(&before, &format!("covenant_witness_errors_total{witness}"));

    // The load: min-x's lim-07 attested, verified, granted 1.1.0 (which it
    // downloads); a check-in naming another deployment, refused.
    let c = cast(&s).await;
    let att = attest_via_cli(&s, &c.customer).await;
    let ver = verification(&std::fs::read(att).unwrap(), Sha256Digest::of(b"verified configuration"), &c.engineer);
    let mut eng = AttestationServiceClient::new(s.conn(&c.engineer).channel().await.unwrap());
    eng.submit_verification(pb::SubmitRequest { envelope: ver }).await.unwrap();
    let granted = check_in(&s, &c.device, "grant").await;
    let decision = decision_of(&granted);
    assert_eq!(decision.verdict, Verdict::Grant);
    let again = check_in(&s, &c.device, "again").await;
    assert_eq!(decision_of(&again).verdict, Verdict::Grant);
    let release = decision.release.unwrap();
    let mut device = UpdateServiceClient::new(s.conn(&c.device).channel().await.unwrap());
    let mut stream = device
        .download(pb::DownloadRequest { release_digest: release.0.to_vec(), offset: 0 })
        .await
        .unwrap()
        .into_inner();
    let mut bytes = 0u64;
    while let Some(chunk) = stream.message().await.unwrap() {
        bytes += chunk.data.len() as u64;
    }
    assert!(bytes > 0);
    let other = signed_checkin(
        "lim-99",
        "1.0.0",
        Sha256Digest::of(b"verified configuration"),
        None,
        Sha256Digest::of(b"other"),
        &key_of(&c.device),
    );
    assert!(device.check_in(pb::CheckInRequest { checkin: other }).await.is_err());

    // Wait (bounded) for the witness to cosign the last checkpoint.
    let size = s.size().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let after = loop {
        let m = scrape(addr);
        if at(&m, "covenant_witnessed_size") as u64 >= size {
            break m;
        }
        assert!(std::time::Instant::now() < deadline, "the witness never cosigned size {size}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(at(&after, "covenant_checkpoint_size") as u64, size);
    assert!(at(&after, "covenant_checkpoint_size") > at(&before, "covenant_checkpoint_size"));
    assert!(at(&after, "covenant_checkpoint_age_seconds") >= 0.0);
    assert!(
        at(&after, "covenant_checkpoint_signed_timestamp_seconds")
            >= at(&before, "covenant_checkpoint_signed_timestamp_seconds")
    );
    assert!(at(&after, &format!("covenant_witness_cosigned_size{witness}")) as u64 >= size);
    assert_eq!(at(&after, &format!("covenant_witness_lag_entries{witness}")), 0.0);
    let down = format!("{{witness=\"{DOWN}\"}}");
    assert_eq!(
        at(&after, &format!("covenant_witness_lag_entries{down}")) as u64,
        size,
        "the down witness cosigned nothing"
    );
    assert!(at(&after, &format!("covenant_witness_errors_total{down}")) >= 1.0);
    assert!(at(&after, &format!("covenant_witness_last_error_timestamp_seconds{down}")) > 0.0);
    assert_eq!(at(&after, &format!("covenant_witness_errors_total{witness}")), 0.0);
    assert!(at(&after, "covenant_append_batch_entries_count") > at(&before, "covenant_append_batch_entries_count"));
    assert!(at(&after, "covenant_append_batch_entries_sum") >= at(&after, "covenant_append_batch_entries_count"));
    assert!(
        at(&after, "covenant_append_batch_duration_seconds_count")
            > at(&before, "covenant_append_batch_duration_seconds_count")
    );
    assert_eq!(at(&after, "covenant_sequencer_queue_depth"), 0.0, "nothing waits once every append answered");
    assert_eq!(at(&after, "covenant_checkins_total{outcome=\"grant\"}"), 2.0);
    assert_eq!(at(&after, "covenant_checkins_total{outcome=\"refused\"}"), 1.0);
    assert_eq!(at(&after, "covenant_decisions_total{verdict=\"grant\"}"), 1.0, "the second check-in logged nothing");
    assert_eq!(at(&after, "covenant_download_bytes_total") as u64, bytes);
    assert_eq!(at(&after, "covenant_downloads_active"), 0.0, "the download ended");
    assert_eq!(at(&after, "covenant_grants_expiring_7d"), 1.0, "a 7-day grant expires within 7 days");
    assert_eq!(at(&after, "covenant_devices_dark"), 0.0);
    assert_eq!(at(&after, "covenant_ledger_halted"), 0.0);

    // Four hours on with no check-in: lim-07 is dark, its checkpoint old.
    clock.fetch_add(4 * 3600, Ordering::SeqCst);
    let later = scrape(addr);
    assert_eq!(at(&later, "covenant_devices_dark"), 1.0);
    assert!(at(&later, "covenant_checkpoint_age_seconds") >= 4.0 * 3600.0);

    // Nothing but /metrics there; and that listener is not the gRPC port.
    let (code, body) = tokio::task::block_in_place(|| get(addr, "/"));
    assert_eq!(code, 404, "{body}");
    let (code, _) = tokio::task::block_in_place(|| get(addr, "/metrics/../ledger"));
    assert_eq!(code, 404);
    assert_ne!(s.url, format!("https://{addr}"));

    // The example alert rules read metrics the server exports.
    let rules = std::fs::read_to_string(workspace().join("docs/alerts.yml")).unwrap();
    let names: std::collections::BTreeSet<&str> = after.keys().map(|k| k.split('{').next().unwrap()).collect();
    let mut used = 0;
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("covenant_") {
            used += 1;
            assert!(names.contains(word), "docs/alerts.yml uses {word}, which the server does not export");
        }
    }
    assert!(used >= 3, "the rules use the server's metrics");
    s.stop().await;
}
