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

/// Every tile and bundle under `public/tile` in `storage`, with its bytes.
fn published_tiles(storage: &SimStorage) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec!["public/tile".to_owned()];
    while let Some(dir) = stack.pop() {
        for name in storage.list(&dir).unwrap() {
            let path = format!("{dir}/{name}");
            match storage.read(&path).unwrap() {
                Some(bytes) => out.push((path, bytes)),
                None => stack.push(path),
            }
        }
    }
    out
}

/// Checks every tile and bundle file in the published folder against the
/// ledger's entries: each is exactly what its path says, none torn, none
/// past the signed size, no temporary file left.
fn check_published_tiles(storage: &SimStorage, ledger: &Ledger<SimStorage>, cycle: usize) -> usize {
    use covenant_core::merkle::HashReader as _;
    use covenant_core::tiles;
    let size = ledger.checkpoint().size;
    let mut headers = Vec::new();
    let mut tree = merkle::MemoryTree::new();
    while (headers.len() as u64) < size {
        let start = headers.len() as u64;
        for h in ledger.headers(start, size.min(start + 1024)).unwrap() {
            tree.push_leaf(&h);
            headers.push(h);
        }
    }
    let files = published_tiles(storage);
    for (path, bytes) in &files {
        let rest = path.strip_prefix("public/tile/").unwrap();
        let (level, rest) = rest.split_once('/').unwrap();
        let (index, width) = match rest.split_once(".p/") {
            Some((index, width)) => {
                (index, width.parse::<u64>().unwrap_or_else(|_| panic!("cycle {cycle}: {path} is published")))
            }
            None => (rest, 256),
        };
        let index: u64 = index.replace(['x', '/'], "").parse().unwrap();
        let first = index * 256;
        let expected = if level == "entries" {
            assert!(first + width <= size, "cycle {cycle}: {path} lies past the signed size {size}");
            let mut bundle = Vec::new();
            for h in &headers[first as usize..(first + width) as usize] {
                tiles::push_bundle_entry(&mut bundle, h).unwrap();
            }
            bundle
        } else {
            let level: u8 = level.parse().unwrap();
            let count = tiles::nodes_at_level(size, level * 8);
            assert!(first + width <= count, "cycle {cycle}: {path} lies past the signed size {size}");
            let hashes: Vec<_> = (first..first + width).map(|i| tree.stored_hash(level * 8, i).unwrap()).collect();
            tiles::encode_tile(&hashes)
        };
        assert!(
            bytes == &expected,
            "cycle {cycle}: {path} is torn ({} bytes, {} expected)",
            bytes.len(),
            expected.len()
        );
    }
    files.len()
}

/// Partial tiles and bundles are rewritten about once a second for static
/// serving. A crash in the middle of writing one (on a file system that
/// keeps the new name but not all of its data, as ext4 can) must never
/// leave a torn file in the published folder once the ledger is open again.
#[test]
fn a_crash_mid_write_never_leaves_a_torn_partial_tile_in_the_published_folder() {
    let mut rng = Rng(0x7113_5EED);
    let time = Arc::new(AtomicI64::new(1_800_000_000));
    let clock: Clock = {
        let time = time.clone();
        Arc::new(move || Timestamp::from_unix(time.fetch_add(1, Ordering::Relaxed)))
    };
    let mut storage = Arc::new(SimStorage::new());
    let (mut cuts, mut checked) = (0u64, 0usize);
    for cycle in 0..200 {
        if cycle % 5 == 2 {
            storage.cut_after(1 + rng.below(20));
        }
        // The derived files are written after every batch.
        let config = LedgerConfig {
            max_batch: 1 + rng.below(8) as usize,
            flush_interval: std::time::Duration::ZERO,
            ..LedgerConfig::default()
        };
        match Ledger::open(storage.clone(), signer(), NoteCounter::default(), clock.clone(), config) {
            Ok(ledger) => {
                checked += check_published_tiles(&storage, &ledger, cycle);
                storage.cut_after(1 + rng.below(150));
                let mut n = 0u64;
                while !storage.is_dead() {
                    n += 1;
                    let entry = NewEntry {
                        kind: EntryKind::Note,
                        actor: None,
                        subjects: vec![],
                        body: format!("{cycle} {n}").into_bytes(),
                    };
                    if let Err(e) = ledger.append_blocking(entry) {
                        assert!(matches!(e, AppendError::Halted(_)), "cycle {cycle}: {e}");
                    }
                }
                ledger.close();
            }
            Err(e) => assert!(storage.is_dead(), "cycle {cycle}: open failed without a power cut: {e}"),
        }
        cuts += 1;
        storage = Arc::new(storage.after_power_cut_keeping_names(|n| rng.below(n as u64 + 1) as usize));
    }
    let ledger =
        Ledger::open(storage.clone(), signer(), NoteCounter::default(), clock, LedgerConfig::default()).unwrap();
    checked += check_published_tiles(&storage, &ledger, usize::MAX);
    println!(
        "{cuts} power cuts keeping names; {checked} published tile files checked; final size {}",
        ledger.checkpoint().size
    );
}
