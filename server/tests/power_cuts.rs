//! Power cuts on the simulated storage: the power goes out at a random file
//! operation (inside batches, between any two operations, during recovery
//! too), the machine comes back with only what was made durable (plus torn
//! tails of unsynced appends), and the ledger reopens. After every reopen:
//! every acknowledged entry is present with the same index and bytes, the
//! stored tree reproduces the signed checkpoint (open checks it), and the new
//! checkpoint is consistent with every checkpoint handed out before.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use covenant_core::digest::Timestamp;
use covenant_core::keys::SigningKey;
use covenant_core::ledger::EntryKind;
use covenant_core::merkle;
use covenant_core::note::NoteSigner;
use covenant_server::ledger::storage::{SimStorage, Storage as _};
use covenant_server::ledger::{AppendError, Clock, Ledger, LedgerConfig, NewEntry, NoteCounter, SignedCheckpoint};

/// splitmix64: a deterministic generator, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn signer() -> NoteSigner {
    NoteSigner::new("ledger.test/log", SigningKey::from_seed(&[42; 32])).unwrap()
}

#[derive(Default)]
struct Witnessed {
    /// Every acknowledged entry: index → (header, body).
    acked: BTreeMap<u64, (Vec<u8>, Vec<u8>)>,
    /// Every checkpoint handed out, by size.
    checkpoints: BTreeMap<u64, SignedCheckpoint>,
}

/// Checks the properties the issue names against a freshly opened ledger.
fn check_after_reopen(ledger: &Ledger<SimStorage>, seen: &Witnessed, cycle: usize) {
    let now = ledger.checkpoint();
    if let Some((&last, _)) = seen.acked.last_key_value() {
        assert!(now.size > last, "cycle {cycle}: acknowledged entry {last} lost (size {})", now.size);
    }
    // Every acknowledged entry, same index, same bytes.
    let mut found = 0;
    ledger
        .for_each_entry(|i, header, body| {
            if let Some((h, b)) = seen.acked.get(&i) {
                assert_eq!(header, h.as_slice(), "cycle {cycle}: header of entry {i} changed");
                assert_eq!(&body.body, b, "cycle {cycle}: body of entry {i} changed");
                found += 1;
            }
        })
        .unwrap();
    assert_eq!(found, seen.acked.len(), "cycle {cycle}: acknowledged entries missing");
    // Consistent with every checkpoint handed out (never two inconsistent ones).
    for (size, old) in &seen.checkpoints {
        assert!(*size <= now.size, "cycle {cycle}: the log shrank below a handed-out checkpoint");
        if *size == now.size {
            assert_eq!(old.root, now.root, "cycle {cycle}: two different roots signed for size {size}");
        } else if *size > 0 {
            let proof = ledger.consistency_proof(*size, now.size).unwrap();
            merkle::verify_consistency(*size, now.size, &proof, &old.root, &now.root)
                .unwrap_or_else(|e| panic!("cycle {cycle}: checkpoint {size} inconsistent with {}: {e}", now.size));
        }
    }
}

#[test]
fn power_cuts_at_random_points_lose_nothing_acknowledged() {
    let mut rng = Rng(0x00C0_FFEE);
    let time = Arc::new(AtomicI64::new(1_800_000_000));
    let clock: Clock = {
        let time = time.clone();
        Arc::new(move || Timestamp::from_unix(time.fetch_add(1, Ordering::Relaxed)))
    };
    let mut storage = Arc::new(SimStorage::new());
    let mut seen = Witnessed::default();
    let (mut batches, mut cuts, mut cuts_in_recovery, mut body_counter) = (0u64, 0u64, 0u64, 0u64);

    for cycle in 0..260 {
        // Sometimes the power goes out again while the ledger recovers.
        if cycle % 7 == 3 {
            storage.cut_after(1 + rng.below(12));
        }
        let config = LedgerConfig { max_batch: 1 + rng.below(24) as usize, ..LedgerConfig::default() };
        let ledger = match Ledger::open(storage.clone(), signer(), NoteCounter::default(), clock.clone(), config) {
            Ok(l) => l,
            Err(e) => {
                assert!(storage.is_dead(), "cycle {cycle}: open failed without a power cut: {e}");
                cuts += 1;
                cuts_in_recovery += 1;
                storage = Arc::new(storage.after_power_cut(|extra| (rng.below(extra as u64 + 1)) as usize));
                continue;
            }
        };
        check_after_reopen(&ledger, &seen, cycle);
        let now = ledger.checkpoint();
        seen.checkpoints.insert(now.size, (*now).clone());

        // Arm the cut somewhere in the next few batches.
        storage.cut_after(1 + rng.below(80));
        let mut dead = false;
        while !dead {
            let k = 1 + rng.below(12) as usize;
            let bodies: Vec<Vec<u8>> = (0..k)
                .map(|_| {
                    body_counter += 1;
                    format!("note {body_counter} {}", "x".repeat(rng.below(300) as usize)).into_bytes()
                })
                .collect();
            let results: Vec<_> = std::thread::scope(|s| {
                let handles: Vec<_> = bodies
                    .iter()
                    .map(|body| {
                        let ledger = &ledger;
                        s.spawn(move || {
                            let entry =
                                NewEntry { kind: EntryKind::Note, actor: None, subjects: vec![], body: body.clone() };
                            ledger.append_blocking(entry)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            batches += 1;
            for (body, result) in bodies.into_iter().zip(results) {
                match result {
                    Ok(done) => {
                        seen.acked.insert(done.index, (done.header.clone(), body));
                        seen.checkpoints.insert(done.checkpoint.size, (*done.checkpoint).clone());
                    }
                    Err(AppendError::Halted(_)) => dead = true,
                    Err(e) => panic!("cycle {cycle}: unexpected append error {e}"),
                }
            }
            // (The power may also go out after a batch was answered, while
            // superseded partial tiles are removed: the next batch finds out.)
            assert!(!dead || storage.is_dead(), "cycle {cycle}: appends failed without a power cut");
        }
        ledger.close();
        cuts += 1;
        storage = Arc::new(storage.after_power_cut(|extra| (rng.below(extra as u64 + 1)) as usize));
    }

    // One last reopen after the last cut.
    let ledger =
        Ledger::open(storage.clone(), signer(), NoteCounter::default(), clock, LedgerConfig::default()).unwrap();
    check_after_reopen(&ledger, &seen, usize::MAX);
    // Recovery set unsigned tails aside (a cut between the journal's fsync
    // and the checkpoint's) rather than deleting them.
    let set_aside = storage.list("log").unwrap().iter().filter(|n| n.starts_with("journal.unsigned-")).count();
    println!(
        "{cuts} power cuts ({cuts_in_recovery} during recovery) over {batches} batches; {} entries acknowledged, final size {}; {set_aside} unsigned tails set aside",
        seen.acked.len(),
        ledger.checkpoint().size
    );
    assert!(cuts >= 200 && batches >= 200);
    assert!(set_aside > 0, "no cut left an unsigned tail to set aside");
}
