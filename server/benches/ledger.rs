//! The ledger engine's benchmark (issue #3), in process on the real file
//! system with real fsyncs. Prints one line per figure:
//!
//! - durable appends/s with 64 concurrent appenders, each waiting for its
//!   inclusion proof (target ≥ 20,000/s);
//! - p50/p99 append latency at an offered 2,000/s (target p99 ≤ 10 ms);
//! - inclusion proofs/s at 1,000,000 entries;
//! - time to reopen and check a 1,000,000-entry ledger (target ≤ 2 s).
//!
//! `cargo bench -p covenant-server --bench ledger [-- --entries N --seconds S]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use covenant_core::keys::SigningKey;
use covenant_core::ledger::EntryKind;
use covenant_core::note::NoteSigner;
use covenant_server::ledger::storage::FsStorage;
use covenant_server::ledger::{Ledger, LedgerConfig, NewEntry, NoteCounter, system_clock};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn signer() -> NoteSigner {
    NoteSigner::new("bench.test/log", SigningKey::from_seed(&[9; 32])).unwrap()
}

/// A body the size of a small signed envelope.
fn body(i: u64) -> Vec<u8> {
    let mut b =
        format!("{{\"payloadType\":\"application/vnd.covenant.action.v1+json\",\"n\":{i},\"payload\":\"").into_bytes();
    b.extend(std::iter::repeat_n(b'A', 300));
    b.extend_from_slice(b"\"}");
    b
}

fn entry(i: u64) -> NewEntry {
    NewEntry { kind: EntryKind::Note, actor: None, subjects: vec!["ministry-x".into()], body: body(i) }
}

fn open(dir: &std::path::Path) -> Ledger<FsStorage> {
    let storage = Arc::new(FsStorage::new(dir).unwrap());
    Ledger::open(storage, signer(), NoteCounter::default(), system_clock(), LedgerConfig::default()).unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    // `--reopen DIR`: only time reopening an existing ledger (for profiling).
    let args: Vec<String> = std::env::args().collect();
    if let Some(dir) = args.iter().position(|a| a == "--reopen").and_then(|i| args.get(i + 1)) {
        let start = Instant::now();
        let ledger = open(std::path::Path::new(dir));
        println!("reopened {} entries in {:.2} s", ledger.checkpoint().size, start.elapsed().as_secs_f64());
        return;
    }
    let keep = args.iter().any(|a| a == "--keep");
    let entries = arg("--entries", 1_000_000);
    let seconds = arg("--seconds", 5);
    let root = std::env::temp_dir().join(format!("covenant-ledger-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();

    // (a) Throughput with 64 appenders, each waiting for its proof.
    {
        let dir = root.join("throughput");
        let ledger = open(&dir);
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let start = Instant::now();
        let done: u64 = rt.block_on(async {
            let tasks: Vec<_> = (0..64u64)
                .map(|t| {
                    let ledger = ledger.clone();
                    tokio::spawn(async move {
                        let mut n = 0u64;
                        while Instant::now() < deadline {
                            let a = ledger.append(entry(t * 1_000_000 + n)).await.unwrap();
                            assert!(!a.proof.is_empty() || a.index == 0);
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            let mut total = 0;
            for t in tasks {
                total += t.await.unwrap();
            }
            total
        });
        let secs = start.elapsed().as_secs_f64();
        println!(
            "durable appends/s, 64 concurrent appenders waiting for proofs: {:.0} ({done} in {secs:.1} s; target >= 20000)",
            done as f64 / secs
        );
        ledger.close();
    }

    // (b) Latency at an offered 2,000 appends/s.
    {
        let dir = root.join("latency");
        let ledger = open(&dir);
        let rate = 2000u64;
        let total = rate * seconds;
        let latencies: Vec<Duration> = rt.block_on(async {
            let start = Instant::now();
            let mut handles = Vec::with_capacity(total as usize);
            for i in 0..total {
                let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
                tokio::time::sleep_until(due.into()).await;
                let ledger = ledger.clone();
                handles.push(tokio::spawn(async move {
                    let t = Instant::now();
                    ledger.append(entry(i)).await.unwrap();
                    t.elapsed()
                }));
            }
            let mut out = Vec::new();
            for h in handles {
                out.push(h.await.unwrap());
            }
            out
        });
        let mut sorted = latencies;
        sorted.sort();
        println!(
            "append latency at 2,000/s: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} appends; target p99 <= 10 ms)",
            percentile(&sorted, 0.5).as_secs_f64() * 1e3,
            percentile(&sorted, 0.99).as_secs_f64() * 1e3,
            sorted.last().unwrap().as_secs_f64() * 1e3,
            sorted.len()
        );
        ledger.close();
    }

    // (c) A ledger of `entries` entries: build it, then proofs and reopen.
    let dir = root.join("big");
    {
        let ledger = open(&dir);
        let start = Instant::now();
        rt.block_on(async {
            let per = entries.div_ceil(1024);
            let tasks: Vec<_> = (0..1024u64)
                .map(|t| {
                    let ledger = ledger.clone();
                    tokio::spawn(async move {
                        for n in 0..per {
                            let i = t * per + n;
                            if i >= entries {
                                break;
                            }
                            ledger.append(entry(i)).await.unwrap();
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        let size = ledger.checkpoint().size;
        println!("built a {size}-entry ledger in {:.1} s (1,024 appenders)", start.elapsed().as_secs_f64());

        let proofs = 200_000u64;
        let start = Instant::now();
        let mut x = 0x1234_5678_u64;
        for _ in 0..proofs {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let index = (x >> 11) % size;
            let p = ledger.inclusion_proof(index, size).unwrap();
            assert!(!p.is_empty());
        }
        let secs = start.elapsed().as_secs_f64();
        println!("inclusion proofs/s at {size} entries, random indices, one thread: {:.0}", proofs as f64 / secs);
        ledger.close();
    }
    {
        // Drop the page cache's advantage as far as we can without root tricks: none here.
        let start = Instant::now();
        let ledger = open(&dir);
        let opened = start.elapsed();
        println!(
            "reopen and check a {}-entry ledger (signature, tiles against entries, every body against its digest, state fold): {:.2} s (target <= 2 s)",
            ledger.checkpoint().size,
            opened.as_secs_f64()
        );
        ledger.close();
    }
    if keep {
        println!("kept the ledgers in {}", root.display());
    } else {
        let _ = std::fs::remove_dir_all(&root);
    }
}
