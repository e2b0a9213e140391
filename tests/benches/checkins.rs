//! Check-ins over the network (issue #6), in one run on this machine, with
//! 10,000 deployments and 1,000 customers registered and 256 concurrent
//! check-in clients over mutual TLS (each a deployment with its own
//! certificate and signing key):
//!
//! (a) the raw rate of an empty unary RPC (GetCheckpoint) over the same
//!     mTLS connections, the ceiling;
//! (b) unlogged check-ins/s: each verifies the device's signature, evaluates
//!     the policy and signs a freshness answer; the standing grant is
//!     served with its proof (target ≥ 30 % of (a));
//! (c) logged grants/s: each round publishes a release, then every client
//!     checks in and gets a new grant, durable in the ledger with its proof
//!     before the answer (target ≥ 20 % of (a));
//! (d) p50/p99 of a logged grant at an offered 2,000/s (target p99 ≤ 20 ms).
//!
//! `cargo bench -p covenant-tests --bench checkins [-- --seconds S --rounds R] [--no-dev-witness] [--metrics off|on|both]`
//!
//! `--metrics on` serves the Prometheus endpoint (issue #21) while it runs
//! and scrapes it once a second (fifteen times Prometheus's usual rate);
//! `--metrics both` runs everything twice in one process, first without
//! metrics and then with them, each on a fresh data directory, and prints
//! the two side by side with the cost of the metrics in percent (off by
//! default: the numbers of issue #6 are without metrics).
//!
//! A development server cosigns its checkpoints with its development witness
//! in process, and a logged grant's answer waits for that cosignature.
//! `--no-dev-witness` removes the witness key after `init --dev`, to compare
//! with runs of builds from before the development witness ran in process.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use covenant_cli::connect::Connection;
use covenant_core::digest::Sha256Digest;
use covenant_core::envelope::{self, Envelope};
use covenant_core::state::classify;
use covenant_core::statements::*;
use covenant_proto::v1 as pb;
use covenant_proto::v1::admin_service_client::AdminServiceClient;
use covenant_proto::v1::update_service_client::UpdateServiceClient;
use covenant_server::datadir;
use covenant_server::ledger::NewEntry;
use covenant_server::serve::{ServeConfig, install_crypto_provider, run};
use covenant_tests::device::{is_grant, manifest, now, numbered_device, signed_checkin};
use covenant_tests::load::{arg, checkpoint_calls_per_second};
use tokio::net::TcpListener;

const CUSTOMERS: usize = 1_000;
const DEPLOYMENTS: usize = 10_000;
const CLIENTS: usize = 256;

fn action(what: ActionKind) -> AdminAction {
    AdminAction {
        type_tag: ActionTag,
        schema: SchemaV1,
        action: what,
        why: "bench".into(),
        evidence: vec![],
        issued_at: now(),
    }
}

/// 1,000 customers with 10 deployments each, a contract each, every
/// deployment's key registered (the first 256 with a real certificate and
/// an identity folder), and release 1.0.0. Appended straight to the ledger.
fn populate(dir: &Path) -> Vec<PathBuf> {
    let admin = datadir::read_key(&dir.join("identities/admin1/signing.key")).unwrap();
    let second = datadir::read_key(&dir.join("identities/admin2/signing.key")).unwrap();
    let ca = datadir::authority(dir).unwrap();
    // Units of entries that must go in order; units go in parallel.
    let mut customers: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut deployments: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut contracts: Vec<Vec<Vec<u8>>> = Vec::new();
    let sign = |what| envelope::sign(&action(what), &[&admin]);
    for c in 0..CUSTOMERS {
        let mut unit = Vec::new();
        unit.push(sign(ActionKind::RegisterCustomer {
            customer: format!("cust-{c}"),
            legal_name: format!("Ministry {c}"),
            country: "XA".into(),
        }));
        let contract = Contract {
            id: format!("contract-{c}"),
            version: 1,
            customer: format!("cust-{c}"),
            deployments: vec![],
            conditions: vec![],
            grant_validity_seconds: 86_400,
            compliance_contact: "compliance@vendor.example".into(),
        };
        // A customer's first contract waits for the second admin's approval;
        // it comes after the deployments (one registered where a contract
        // covers it at once would wait for approval too).
        let proposal = sign(ActionKind::SetContract { contract });
        let digest = Sha256Digest::of(Envelope::parse(&proposal).unwrap().payload());
        contracts.push(vec![proposal, envelope::sign(&action(ActionKind::Approve { proposal: digest }), &[&second])]);
        customers.push(unit);
    }
    let mut folders = Vec::new();
    for d in 0..DEPLOYMENTS {
        let mut unit = Vec::new();
        unit.push(sign(ActionKind::RegisterDeployment {
            deployment: numbered_device(d).0,
            customer: format!("cust-{}", d % CUSTOMERS),
            product: "lim".into(),
            site: Site { country: "XA".into(), site_id: "s1".into() },
            provisioned_version: "1.0.0".parse().unwrap(),
        }));
        let fingerprint = if d < CLIENTS {
            let issued = ca.issue_client(IdentityRole::Deployment, &numbered_device(d).0).unwrap();
            let folder = dir.join(format!("bench-clients/{d}"));
            std::fs::create_dir_all(&folder).unwrap();
            std::fs::write(folder.join("cert.pem"), &issued.cert_pem).unwrap();
            std::fs::write(folder.join("key.pem"), &issued.key_pem).unwrap();
            std::fs::write(folder.join("ca.pem"), &ca.cert_pem).unwrap();
            folders.push(folder);
            issued.fingerprint
        } else {
            Sha256Digest::of(format!("certificate of {d}").as_bytes())
        };
        unit.push(sign(ActionKind::IssueIdentity {
            role: IdentityRole::Deployment,
            subject: numbered_device(d).0,
            signing_key: numbered_device(d).1.public(),
            certificate_sha256: fingerprint,
            scope: None,
        }));
        deployments.push(unit);
    }
    let (ledger, _) = datadir::open_ledger(dir).unwrap();
    let ledger = Arc::new(ledger);
    // Customers, then their deployments, then the contracts; 32 appenders
    // at a time.
    for units in [&customers, &deployments, &contracts] {
        std::thread::scope(|s| {
            for part in units.chunks(units.len().div_ceil(32)) {
                let ledger = ledger.clone();
                s.spawn(move || {
                    for body in part.iter().flatten() {
                        let p = classify(body).unwrap();
                        let e = NewEntry { kind: p.kind, actor: p.actor, subjects: p.subjects, body: body.clone() };
                        ledger.append_blocking(e).unwrap();
                    }
                });
            }
        });
    }
    Arc::try_unwrap(ledger).map_err(|_| "shared").unwrap().close();
    folders
}

struct Up {
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
}

async fn up(dir: &Path, metrics: Option<Arc<std::net::TcpListener>>) -> Up {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = ServeConfig { metrics, ..ServeConfig::new(dir) };
    tokio::spawn(run(config, listener, async {
        let _ = stopped.await;
    }));
    Up { url, stop }
}

/// Scrapes `GET /metrics` at `addr` once a second until `stop`; returns
/// the number of scrapes and the bytes of the last one.
async fn scrape_every_second(addr: std::net::SocketAddr, stop: Arc<std::sync::atomic::AtomicBool>) -> (u64, usize) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (mut n, mut last) = (0u64, 0usize);
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        if let Ok(mut conn) = tokio::net::TcpStream::connect(addr).await {
            let ask = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
            if conn.write_all(ask).await.is_ok() {
                let mut text = Vec::new();
                if conn.read_to_end(&mut text).await.is_ok() && text.starts_with(b"HTTP/1.1 200") {
                    n += 1;
                    last = text.len();
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    (n, last)
}

/// One run's numbers.
#[derive(Debug, Clone, Copy)]
struct Numbers {
    ceiling: f64,
    unlogged: f64,
    grants: f64,
    p50: f64,
    p99: f64,
}

/// Writes, signs (two release keys) and publishes release `version`.
async fn publish(dir: &Path, admin: &mut AdminServiceClient<tonic::transport::Channel>, version: &str) {
    let bytes = format!("image {version}").into_bytes();
    let manifest = manifest(version, &format!("lim-{version}"), Sha256Digest::of(&bytes), bytes.len() as u64);
    let k1 = datadir::read_key(&dir.join("keys/release-1.key")).unwrap();
    let k2 = datadir::read_key(&dir.join("keys/release-2.key")).unwrap();
    let body = envelope::sign(&manifest, &[&k1, &k2]);
    let chunks = vec![pb::PublishChunk { manifest: body, data: bytes }];
    admin.publish(tokio_stream::iter(chunks)).await.unwrap();
}

fn checkin(d: usize, nonce: &str) -> Vec<u8> {
    let (deployment, key) = numbered_device(d);
    let nonce = Sha256Digest::of(format!("{d} {nonce}").as_bytes());
    signed_checkin(&deployment, "1.0.0", Sha256Digest::of(b"config"), None, nonce, &key)
}

/// Everything once, on a fresh data directory, with or without metrics.
fn run_once(seconds: u64, rounds: usize, with_metrics: bool) -> Numbers {
    let root: PathBuf = std::env::temp_dir().join(format!(
        "covenant-checkin-bench-{}-{}",
        std::process::id(),
        if with_metrics { "metrics" } else { "plain" }
    ));
    let _ = std::fs::remove_dir_all(&root);
    let dir = root.join("server");
    datadir::init_dev(&dir).unwrap();
    if std::env::args().any(|a| a == "--no-dev-witness") {
        std::fs::remove_file(dir.join("keys/witness-dev.key")).unwrap();
        println!("without the development witness");
    }
    let built = Instant::now();
    let folders = populate(&dir);
    println!(
        "registered {CUSTOMERS} customers, {DEPLOYMENTS} deployments and their keys in {:.1} s",
        built.elapsed().as_secs_f64()
    );
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let numbers = rt.block_on(async {
        let metrics = with_metrics.then(|| Arc::new(std::net::TcpListener::bind("127.0.0.1:0").unwrap()));
        let scraping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let scraper =
            metrics.as_ref().map(|l| tokio::spawn(scrape_every_second(l.local_addr().unwrap(), scraping.clone())));
        let server = up(&dir, metrics).await;
        let admin_conn = Connection { server: Some(server.url.clone()), identity: Some(dir.join("identities/admin1")) };
        let mut admin = loop {
            if let Ok(ch) = admin_conn.channel().await {
                break AdminServiceClient::new(ch);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        publish(&dir, &mut admin, "1.0.0").await;
        let mut channels = Vec::new();
        for f in &folders {
            let c = Connection { server: Some(server.url.clone()), identity: Some(f.clone()) };
            channels.push(c.channel().await.unwrap());
        }

        // (a) the ceiling.
        let ceiling = checkpoint_calls_per_second(&channels, CLIENTS, seconds).await;
        println!("(a) empty unary RPC over mTLS (GetCheckpoint, {CLIENTS} clients): {ceiling:.0}/s");

        // A first grant for every client (logged), so that (b) serves standing grants.
        publish(&dir, &mut admin, "1.1.0").await;
        let mut tasks = Vec::new();
        for (d, ch) in channels.iter().enumerate() {
            let mut client = UpdateServiceClient::new(ch.clone());
            tasks.push(tokio::spawn(async move {
                let r = client.check_in(pb::CheckInRequest { checkin: checkin(d, "warm") }).await.unwrap().into_inner();
                assert!(is_grant(&r));
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }

        // (b) unlogged check-ins: the standing grant, with its proof.
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for (d, ch) in channels.iter().enumerate() {
            let mut client = UpdateServiceClient::new(ch.clone());
            let body = checkin(d, "poll");
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let r = client.check_in(pb::CheckInRequest { checkin: body.clone() }).await.unwrap().into_inner();
                    assert!(r.decision.is_some() && !r.freshness.is_empty());
                    n += 1;
                }
                n
            }));
        }
        let mut polls = 0;
        for t in tasks {
            polls += t.await.unwrap();
        }
        let unlogged = polls as f64 / start.elapsed().as_secs_f64();
        println!(
            "(b) unlogged check-ins/s: {unlogged:.0}/s = {:.0} % of (a) (target >= 30 %)",
            unlogged / ceiling * 100.0
        );

        // (c) logged grants: per round a new release, then every client's grant.
        let mut busy = Duration::ZERO;
        let mut logged = 0u64;
        for r in 0..rounds {
            publish(&dir, &mut admin, &format!("2.{r}.0")).await;
            let bodies: Vec<Vec<u8>> = (0..CLIENTS).map(|d| checkin(d, &format!("round {r}"))).collect();
            let start = Instant::now();
            let mut tasks = Vec::new();
            for (d, ch) in channels.iter().enumerate() {
                let mut client = UpdateServiceClient::new(ch.clone());
                let body = bodies[d].clone();
                tasks.push(tokio::spawn(async move {
                    let r = client.check_in(pb::CheckInRequest { checkin: body }).await.unwrap().into_inner();
                    assert!(is_grant(&r) && r.inclusion.is_some());
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            busy += start.elapsed();
            logged += CLIENTS as u64;
        }
        let grants = logged as f64 / busy.as_secs_f64();
        println!(
            "(c) logged grants/s: {grants:.0}/s = {:.0} % of (a) (target >= 20 %) ({logged} grants in {rounds} rounds)",
            grants / ceiling * 100.0
        );

        // (d) latency of a logged grant at an offered 2,000/s.
        let mut lat = Vec::new();
        let paced_rounds = (2000 * seconds as usize).div_ceil(CLIENTS);
        for r in 0..paced_rounds {
            publish(&dir, &mut admin, &format!("3.{r}.0")).await;
            let bodies: Vec<Vec<u8>> = (0..CLIENTS).map(|d| checkin(d, &format!("paced {r}"))).collect();
            let start = Instant::now();
            let mut handles = Vec::new();
            for (d, ch) in channels.iter().enumerate() {
                let due = start + Duration::from_secs_f64(d as f64 / 2000.0);
                tokio::time::sleep_until(due.into()).await;
                let mut client = UpdateServiceClient::new(ch.clone());
                let body = bodies[d].clone();
                handles.push(tokio::spawn(async move {
                    let t = Instant::now();
                    let r = client.check_in(pb::CheckInRequest { checkin: body }).await.unwrap().into_inner();
                    assert!(is_grant(&r));
                    t.elapsed()
                }));
            }
            for h in handles {
                lat.push(h.await.unwrap());
            }
        }
        lat.sort();
        let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
        println!(
            "(d) logged grant latency at 2,000/s: p50 {:.2} ms, p99 {:.2} ms over {} grants (target p99 <= 20 ms)",
            p(0.5),
            p(0.99),
            lat.len()
        );
        scraping.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(scraper) = scraper {
            let (n, bytes) = scraper.await.unwrap();
            assert!(n > 0, "the metrics endpoint answered no scrape");
            println!("    metrics: {n} scrapes answered during the run, the last {bytes} bytes");
        }
        let _ = server.stop.send(());
        Numbers { ceiling, unlogged, grants, p50: p(0.5), p99: p(0.99) }
    });
    let _ = std::fs::remove_dir_all(&root);
    numbers
}

fn main() {
    let seconds = arg("--seconds", 5);
    let rounds = arg("--rounds", 20) as usize;
    let mode = std::env::args().skip_while(|a| a != "--metrics").nth(1).unwrap_or_else(|| "off".into());
    install_crypto_provider();
    let runs: Vec<bool> = match mode.as_str() {
        "off" => vec![false],
        "on" => vec![true],
        "both" => vec![false, true],
        other => panic!("--metrics takes off, on or both, not {other:?}"),
    };
    let mut all = Vec::new();
    for with_metrics in runs {
        println!("== {} metrics", if with_metrics { "with" } else { "without" });
        all.push((with_metrics, run_once(seconds, rounds, with_metrics)));
    }
    if let [(false, off), (true, on)] = all.as_slice() {
        let cost = |a: f64, b: f64| (a - b) / a * 100.0;
        println!("\nthe metrics' cost, side by side (one run; a positive cost is slower with metrics):");
        println!("| measure | without | with | cost |");
        println!("| --- | --- | --- | --- |");
        println!(
            "| (a) empty RPC/s | {:.0} | {:.0} | {:.1} % |",
            off.ceiling,
            on.ceiling,
            cost(off.ceiling, on.ceiling)
        );
        println!(
            "| (b) unlogged check-ins/s | {:.0} | {:.0} | {:.1} % |",
            off.unlogged,
            on.unlogged,
            cost(off.unlogged, on.unlogged)
        );
        println!(
            "| (c) logged grants/s | {:.0} | {:.0} | {:.1} % |",
            off.grants,
            on.grants,
            cost(off.grants, on.grants)
        );
        println!("| (d) p50 ms | {:.2} | {:.2} | {:.1} % |", off.p50, on.p50, -cost(off.p50, on.p50));
        println!("| (d) p99 ms | {:.2} | {:.2} | {:.1} % |", off.p99, on.p99, -cost(off.p99, on.p99));
    }
}
