//! The server over the network (issue #4), in one run on this machine:
//!
//! (a) the rate of a near-empty unary RPC (GetCheckpoint: the mTLS stack and
//!     the caller lookup, nothing else), the ceiling;
//! (b) durable appends/s through the server with 64 concurrent clients, each
//!     an admin-signed note the server verifies, each waiting for its proof,
//!     with one witness on loopback (target ≥ 30 % of (a));
//! (c) p50/p99 of an append at an offered 2,000/s (target p99 ≤ 20 ms);
//! (d) `covenant audit verify` from scratch over N entries (target ≤ 10 s
//!     at 1,000,000).
//!
//! `cargo bench -p covenant-tests --bench network [-- --seconds S --entries N]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use covenant_cli::audit::Audit;
use covenant_cli::connect::Connection;
use covenant_core::envelope;
use covenant_core::ledger::EntryKind;
use covenant_core::statements::{ActionKind, ActionTag, AdminAction, SchemaV1};
use covenant_proto::v1 as pb;
use covenant_proto::v1::admin_service_client::AdminServiceClient;
use covenant_proto::v1::ledger_service_client::LedgerServiceClient;
use covenant_server::datadir;
use covenant_server::ledger::NewEntry;
use covenant_server::serve::{ServeConfig, install_crypto_provider, run};
use covenant_tests::device::now;
use covenant_tests::load::{arg, checkpoint_calls_per_second};
use tokio::net::TcpListener;

fn signed_notes(dir: &Path, n: usize) -> Vec<Vec<u8>> {
    let key = datadir::read_key(&dir.join("identities/admin1/signing.key")).unwrap();
    (0..n)
        .map(|i| {
            let action = AdminAction {
                type_tag: ActionTag,
                schema: SchemaV1,
                action: ActionKind::Note { text: format!("benchmark note {i}") },
                why: "benchmark".into(),
                evidence: vec![],
                // The ledger takes an action issued within a day of its time.
                issued_at: now(),
            };
            envelope::sign(&action, &[&key])
        })
        .collect()
}

struct Up {
    url: String,
    stop: Vec<tokio::sync::oneshot::Sender<()>>,
}

/// A data directory with one witness on loopback, served.
async fn up(dir: &Path) -> Up {
    let state = dir.join("witness-state");
    std::fs::create_dir_all(&state).unwrap();
    covenant_cli::witness::tls_identity(&state).unwrap();
    let wl = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let vkey = std::fs::read_to_string(dir.join("witness-dev.vkey")).unwrap();
    std::fs::write(
        dir.join("witnesses.toml"),
        format!(
            "[[witness]]\nname = \"witness.localhost/dev\"\naddress = \"https://{}\"\nvkey = \"{}\"\ncert = \"{}\"\n",
            wl.local_addr().unwrap(),
            vkey.trim(),
            state.join("tls-cert.pem").display()
        ),
    )
    .unwrap();
    let key = std::fs::read_to_string(dir.join("keys/witness-dev.key")).unwrap();
    let signer = covenant_core::note::NoteSigner::parse_private(key.trim()).unwrap();
    let log =
        covenant_core::note::NoteVerifier::parse(std::fs::read_to_string(dir.join("ledger.vkey")).unwrap().trim())
            .unwrap();
    let node = covenant_cli::witness::WitnessNode::open(signer, log, &state).unwrap();
    let (wstop, wstopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(covenant_cli::witness::run(node, wl, async {
        let _ = wstopped.await;
    }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // This measures the server's ceiling through one admin identity, which
    // is exactly what the per-certificate rate limit stops: lift it here.
    let mut config = ServeConfig::new(dir);
    config.rate_limit = None;
    tokio::spawn(run(config, listener, async {
        let _ = stopped.await;
    }));
    Up { url, stop: vec![stop, wstop] }
}

fn conn(url: &str, dir: &Path, who: &str) -> Connection {
    Connection { server: Some(url.to_owned()), identity: Some(dir.join("identities").join(who)) }
}

fn main() {
    let seconds = arg("--seconds", 5);
    let entries = arg("--entries", 1_000_000);
    install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let root: PathBuf = std::env::temp_dir().join(format!("covenant-network-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let dir = root.join("server");
    datadir::init_dev(&dir).unwrap();
    let notes = Arc::new(signed_notes(&dir, arg("--notes", 20_000 * seconds) as usize));

    rt.block_on(async {
        let server = up(&dir).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Four connections, 16 callers each.
        let mut channels = Vec::new();
        for _ in 0..4 {
            channels.push(conn(&server.url, &dir, "admin1").channel().await.unwrap());
        }

        // (a) the ceiling.
        let ceiling = checkpoint_calls_per_second(&channels, 64, seconds).await;
        println!("(a) unary RPC over mTLS (GetCheckpoint, 64 callers on 4 connections): {ceiling:.0}/s");

        // (b) durable appends with proofs.
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let start = Instant::now();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for c in 0..64 {
            let mut client = AdminServiceClient::new(channels[c % 4].clone());
            let (notes, next) = (notes.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(body) = notes.get(i) else { break };
                    let done = client.act(pb::ActRequest { action: body.clone() }).await.unwrap().into_inner();
                    assert!(done.inclusion.is_some());
                    n += 1;
                }
                n
            }));
        }
        let mut appends = 0;
        for t in tasks {
            appends += t.await.unwrap();
        }
        let rate = appends as f64 / start.elapsed().as_secs_f64();
        println!(
            "(b) durable appends/s through the server, 64 clients, one witness: {rate:.0}/s = {:.0} % of (a) (target >= 30 %)",
            rate / ceiling * 100.0
        );

        // (c) latency at an offered 2,000/s.
        let total = 2000 * seconds as usize;
        let start = Instant::now();
        let mut handles = Vec::with_capacity(total);
        for k in 0..total {
            let due = start + Duration::from_secs_f64(k as f64 / 2000.0);
            tokio::time::sleep_until(due.into()).await;
            let mut client = AdminServiceClient::new(channels[k % 4].clone());
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let body = notes.get(i).cloned().expect("enough pre-signed notes");
            handles.push(tokio::spawn(async move {
                let t = Instant::now();
                client.act(pb::ActRequest { action: body }).await.unwrap();
                t.elapsed()
            }));
        }
        let mut lat = Vec::new();
        for h in handles {
            lat.push(h.await.unwrap());
        }
        lat.sort();
        let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
        println!("(c) append latency at 2,000/s: p50 {:.2} ms, p99 {:.2} ms (target p99 <= 20 ms)", p(0.5), p(0.99));
        for s in server.stop {
            let _ = s.send(());
        }
    });

    // (d) audit verify from scratch over `entries` entries.
    let dir = root.join("big");
    datadir::init_dev(&dir).unwrap();
    let body = signed_notes(&dir, 1).remove(0);
    let key = datadir::read_key(&dir.join("identities/admin1/signing.key")).unwrap();
    let build = Instant::now();
    {
        let (ledger, _) = datadir::open_ledger(&dir).unwrap();
        let ledger = Arc::new(ledger);
        std::thread::scope(|s| {
            for t in 0..256u64 {
                let (ledger, body) = (ledger.clone(), body.clone());
                let actor = Some(key.key_id());
                s.spawn(move || {
                    let mut i = t;
                    while i < entries {
                        ledger
                            .append_blocking(NewEntry {
                                kind: EntryKind::Note,
                                actor,
                                subjects: vec![],
                                body: body.clone(),
                            })
                            .unwrap();
                        i += 256;
                    }
                });
            }
        });
        // Close it (releasing the ledger's lock) before the server opens it.
        Arc::try_unwrap(ledger).map_err(|_| "ledger still shared").unwrap().close();
    }
    println!("built a ledger of {entries} notes in {:.1} s", build.elapsed().as_secs_f64());
    rt.block_on(async {
        let server = up(&dir).await;
        let c = conn(&server.url, &dir, "auditor");
        // The server replays (and re-verifies) every entry before it serves:
        // wait for it, so (d) times the auditor alone.
        let opened = Instant::now();
        loop {
            assert!(opened.elapsed() < Duration::from_secs(900), "the server did not open the ledger in 15 minutes");
            if let Ok(ch) = c.channel().await
                && LedgerServiceClient::new(ch).get_checkpoint(pb::GetCheckpointRequest {}).await.is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "the server opened the {entries}-entry ledger (replaying every entry) in {:.1} s",
            opened.elapsed().as_secs_f64()
        );
        let start = Instant::now();
        covenant_cli::audit::run(
            Audit::Verify { bodies: false, ledger: None, state: Some(root.join("audit-state.json")) },
            &c,
            None,
            true,
        )
        .await
        .unwrap();
        println!(
            "(d) covenant audit verify from scratch: {:.2} s (target <= 10 s at 1,000,000)",
            start.elapsed().as_secs_f64()
        );
        for s in server.stop {
            let _ = s.send(());
        }
    });
    let _ = std::fs::remove_dir_all(&root);
}
