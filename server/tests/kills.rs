//! SIGKILL on the real file system: a child process appends under load
//! (`covenant-server debug-append-load`, 16 concurrent appenders), printing
//! each acknowledgement; it is killed at random moments, at least 20 times,
//! and after each kill the ledger reopens with every acknowledged entry
//! present with the same index and bytes, its tree reproducing the signed
//! checkpoint, and its checkpoint consistent with every one handed out.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use covenant_core::keys::SigningKey;
use covenant_core::merkle;
use covenant_core::note::NoteSigner;
use covenant_server::ledger::storage::FsStorage;
use covenant_server::ledger::{Ledger, LedgerConfig, NoteCounter, system_clock};

const SEED: [u8; 32] = [7; 32];

struct Ack {
    header: Vec<u8>,
    body: Vec<u8>,
}

#[test]
fn sigkill_under_load_loses_nothing_acknowledged() {
    let dir = std::env::temp_dir().join(format!("covenant-kills-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let signer = || NoteSigner::new("covenant.test/ledger", SigningKey::from_seed(&SEED)).unwrap();
    let mut acked: BTreeMap<u64, Ack> = BTreeMap::new();
    let mut checkpoints: BTreeMap<u64, [u8; 32]> = BTreeMap::new();
    // A fixed sequence of kill delays, so a failure reproduces.
    let mut state = 0x5EED_u64;
    let mut delay = || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        Duration::from_millis(20 + (state >> 33) % 400)
    };

    let kills = 24;
    for round in 0..kills {
        let mut child = Command::new(env!("CARGO_BIN_EXE_covenant-server"))
            .args(["debug-append-load", "--data"])
            .arg(&dir)
            .args(["--key-seed", &hex::encode(SEED), "--appenders", "16"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = std::thread::spawn(move || {
            std::io::BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<_>>()
        });
        // Let it get going, then kill it at a random moment.
        let start = Instant::now();
        std::thread::sleep(delay());
        while start.elapsed() < Duration::from_secs(1) && round == 0 && !dir.join("public/checkpoint").exists() {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let mut new = 0;
        for line in lines.join().unwrap() {
            let parts: Vec<&str> = line.split(' ').collect();
            // A line cut by the kill is not an acknowledgement the child finished printing.
            let [tag, index, header, body, size, root] = parts[..] else { continue };
            if tag != "ack" || root.len() != 64 {
                continue;
            }
            let index: u64 = index.parse().unwrap();
            acked.insert(index, Ack { header: hex::decode(header).unwrap(), body: hex::decode(body).unwrap() });
            checkpoints.insert(size.parse().unwrap(), hex::decode(root).unwrap().try_into().unwrap());
            new += 1;
        }

        let storage = Arc::new(FsStorage::new(&dir).unwrap());
        let ledger = Ledger::open(storage, signer(), NoteCounter::default(), system_clock(), LedgerConfig::default())
            .unwrap_or_else(|e| panic!("round {round}: the ledger does not reopen after SIGKILL: {e}"));
        let now = ledger.checkpoint();
        let mut found = 0;
        ledger
            .for_each_entry(|i, header, body| {
                if let Some(a) = acked.get(&i) {
                    assert_eq!(header, a.header.as_slice(), "round {round}: header of entry {i} changed");
                    assert_eq!(body.body, a.body, "round {round}: body of entry {i} changed");
                    found += 1;
                }
            })
            .unwrap();
        assert_eq!(found, acked.len(), "round {round}: acknowledged entries are missing");
        for (&size, root) in &checkpoints {
            assert!(size <= now.size, "round {round}: the log shrank");
            if size == now.size {
                assert_eq!(root, &now.root, "round {round}: two roots for size {size}");
            } else if size > 0 {
                let proof = ledger.consistency_proof(size, now.size).unwrap();
                merkle::verify_consistency(size, now.size, &proof, root, &now.root).unwrap();
            }
        }
        println!("round {round}: {new} new acknowledgements, ledger size {}", now.size);
        ledger.close();
    }
    assert!(acked.len() > 100, "the children acknowledged only {} entries", acked.len());
    std::fs::remove_dir_all(&dir).unwrap();
}
