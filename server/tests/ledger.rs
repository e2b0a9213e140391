//! The ledger engine in process: appends come back with proofs that verify
//! in `covenant-core`, checkpoints and tlog-proofs are byte-exact C2SP,
//! reopening keeps everything, tampering is caught and named, refused
//! entries are never written, and the sled view rebuilds from the ledger.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use covenant_core::digest::Timestamp;
use covenant_core::keys::SigningKey;
use covenant_core::ledger::{EntryHeader, EntryKind};
use covenant_core::merkle;
use covenant_core::note::{self, NoteSigner, TlogProof};
use covenant_core::tiles;
use covenant_server::ledger::storage::{FsStorage, SimStorage, Storage};
use covenant_server::ledger::store::{Checked, OpenError, ReadError};
use covenant_server::ledger::views::SubjectIndex;
use covenant_server::ledger::{AppendError, Clock, Ledger, LedgerConfig, NewEntry, NoteCounter};

fn signer() -> NoteSigner {
    NoteSigner::new("ledger.test/log", SigningKey::from_seed(&[42; 32])).unwrap()
}

fn clock() -> Clock {
    let t = Arc::new(AtomicI64::new(1_800_000_000));
    Arc::new(move || Timestamp::from_unix(t.fetch_add(1, Ordering::Relaxed)))
}

/// A note about `subjects`; its body names them first (`subject,...|text`),
/// so that [`subjects_of`] finds them as the server's `classify` would.
fn note(text: &str, subjects: &[&str]) -> NewEntry {
    NewEntry {
        kind: EntryKind::Note,
        actor: None,
        subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
        body: format!("{}|{text}", subjects.join(",")).into_bytes(),
    }
}

/// The subjects a [`note`]'s body names.
fn subjects_of(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    let names = text.split('|').next().unwrap_or("");
    names.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

fn open<S: Storage>(storage: Arc<S>) -> Result<Ledger<S>, OpenError> {
    Ledger::open(storage, signer(), NoteCounter::default(), clock(), LedgerConfig::default())
}

/// `covenant-server check`'s dry run of recovery.
fn check<S: Storage>(storage: &Arc<S>) -> Result<Checked, OpenError> {
    Ledger::check(&**storage, &signer().verifier(), NoteCounter::default(), &LedgerConfig::default())
}

fn append_many<S: Storage>(ledger: &Ledger<S>, n: usize) -> Vec<covenant_server::ledger::Appended> {
    // Several threads at once, so batches form.
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| s.spawn(move || ledger.append_blocking(note(&format!("note {i}"), &["ministry-x"])).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn appends_come_back_with_proofs_that_verify_in_core() {
    let storage = Arc::new(SimStorage::new());
    let ledger = open(storage).unwrap();
    let done = append_many(&ledger, 600);
    let log = signer().verifier();
    let mut indices: Vec<u64> = done.iter().map(|d| d.index).collect();
    indices.sort_unstable();
    assert_eq!(indices, (0..600).collect::<Vec<_>>());
    for d in &done {
        let proof = d.tlog_proof();
        let verified =
            TlogProof::parse(proof.to_text().as_bytes()).unwrap().verify(&merkle::leaf_hash(&d.header), &log).unwrap();
        assert!(verified.checkpoint().size > d.index);
        let header = EntryHeader::parse(&d.header).unwrap();
        header.check_body(&d.salt, ledger.body(d.index).unwrap().body.as_slice()).unwrap();
    }
    // The latest checkpoint is consistent with every one handed out.
    let latest = ledger.checkpoint();
    for d in &done {
        if d.checkpoint.size < latest.size {
            let proof = ledger.consistency_proof(d.checkpoint.size, latest.size).unwrap();
            merkle::verify_consistency(d.checkpoint.size, latest.size, &proof, &d.checkpoint.root, &latest.root)
                .unwrap();
        }
    }
}

#[test]
fn checkpoint_and_tlog_proof_are_byte_exact_c2sp() {
    let ledger = open(Arc::new(SimStorage::new())).unwrap();
    let done = append_many(&ledger, 5);
    let cp = ledger.checkpoint();
    let lines: Vec<&str> = cp.note.split('\n').collect();
    assert_eq!(lines[0], "ledger.test/log");
    assert_eq!(lines[1], "5");
    assert_eq!(lines[2], STANDARD.encode(cp.root));
    assert_eq!(lines[3], "");
    assert!(lines[4].starts_with("\u{2014} ledger.test/log "));
    let sig = STANDARD.decode(lines[4].rsplit(' ').next().unwrap()).unwrap();
    assert_eq!(sig.len(), 4 + 64);
    assert_eq!(u32::from_be_bytes(sig[..4].try_into().unwrap()), signer().verifier().id());
    assert_eq!(lines[5], "");
    assert_eq!(lines.len(), 6);
    note::open_checkpoint(cp.note.as_bytes(), &signer().verifier()).unwrap();

    let d = done.iter().find(|d| d.checkpoint.size == 5).cloned().unwrap_or_else(|| {
        let proof = ledger.inclusion_proof(2, 5).unwrap();
        covenant_server::ledger::Appended {
            index: 2,
            header: ledger.headers(2, 3).unwrap().remove(0),
            salt: [0; 32],
            proof,
            checkpoint: cp.clone(),
        }
    });
    let text = d.tlog_proof().to_text();
    let lines: Vec<&str> = text.split('\n').collect();
    assert_eq!(lines[0], "c2sp.org/tlog-proof@v1");
    assert_eq!(lines[1], format!("index {}", d.index));
    let hashes = &lines[2..2 + d.proof.len()];
    for (line, hash) in hashes.iter().zip(&d.proof) {
        assert_eq!(*line, STANDARD.encode(hash));
    }
    assert_eq!(lines[2 + d.proof.len()], "");
    assert_eq!(lines[3 + d.proof.len()..].join("\n"), d.checkpoint.note);
}

#[test]
fn reopening_keeps_every_entry_and_the_checkpoint() {
    let dir = tempdir("reopen");
    let storage = Arc::new(FsStorage::new(&dir).unwrap());
    let ledger = open(storage.clone()).unwrap();
    let done = append_many(&ledger, 300);
    let before = ledger.checkpoint();
    ledger.close();
    assert_eq!(check(&storage).unwrap().size, 300);
    let again = open(storage).unwrap();
    assert_eq!(again.checkpoint(), before);
    for d in &done {
        assert_eq!(again.headers(d.index, d.index + 1).unwrap()[0], d.header);
    }
    assert_eq!(again.check_bodies().unwrap(), 300);
    // It goes on appending where it stopped.
    let more = append_many(&again, 10);
    assert!(more.iter().all(|d| d.index >= 300));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn refused_entries_are_never_written() {
    let ledger = open(Arc::new(SimStorage::new())).unwrap();
    append_many(&ledger, 3);
    let before = ledger.checkpoint();
    let err = ledger.append_blocking(NewEntry { body: Vec::new(), ..note("", &[]) }).unwrap_err();
    assert!(matches!(err, AppendError::Rejected(_)), "{err}");
    let err = ledger.append_blocking(note("x", &["Not An Id"])).unwrap_err();
    assert!(matches!(err, AppendError::Malformed(_)), "{err}");
    assert_eq!(ledger.checkpoint(), before);
}

#[test]
fn bad_reads_are_refused() {
    let ledger = open(Arc::new(SimStorage::new())).unwrap();
    append_many(&ledger, 10);
    assert!(matches!(ledger.inclusion_proof(10, 10), Err(ReadError::OutOfRange { .. })));
    assert!(matches!(ledger.inclusion_proof(0, 11), Err(ReadError::OutOfRange { .. })));
    assert!(matches!(ledger.consistency_proof(0, 10), Err(ReadError::OutOfRange { .. })));
    assert!(matches!(ledger.consistency_proof(5, 11), Err(ReadError::OutOfRange { .. })));
    assert!(matches!(ledger.headers(0, 2000), Err(ReadError::OutOfRange { .. })));
    assert!(matches!(ledger.headers(5, 11), Err(ReadError::OutOfRange { .. })));
    assert!(matches!(ledger.body(10), Err(ReadError::OutOfRange { .. })));
    assert!(matches!(ledger.bodies(0, 11), Err(ReadError::OutOfRange { .. })));
    assert!(matches!(ledger.bodies(0, 2000), Err(ReadError::OutOfRange { .. })));
    assert_eq!(ledger.bodies(2, 7).unwrap().len(), 5);
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("covenant-ledger-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A ledger of 700 entries on disk, closed, for tampering.
fn stored_ledger(name: &str) -> (std::path::PathBuf, Arc<FsStorage>) {
    let dir = tempdir(name);
    let storage = Arc::new(FsStorage::new(&dir).unwrap());
    let ledger = open(storage.clone()).unwrap();
    append_many(&ledger, 700);
    ledger.close();
    (dir, storage)
}

fn flip(path: &std::path::Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn flipped_byte_in_a_stored_entry_refuses_open_naming_it() {
    let (dir, storage) = stored_ledger("tamper-entry");
    // The 3rd entry of bundle 1 (entry 258): skip two length-prefixed entries.
    let path = dir.join("public").join(tiles::bundle_path(1, 256));
    let bytes = std::fs::read(&path).unwrap();
    let first = u16::from_be_bytes([bytes[0], bytes[1]]) as usize;
    let second = u16::from_be_bytes([bytes[2 + first], bytes[3 + first]]) as usize;
    flip(&path, 2 + first + 2 + second + 2 + 10);
    let err = open(storage).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("entry 258 is corrupt"), "{msg}");
    assert!(msg.contains("tile/entries/001"), "{msg}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn flipped_byte_in_a_stored_tile_refuses_open_naming_it() {
    let (dir, storage) = stored_ledger("tamper-tile");
    flip(&dir.join("public").join(tiles::tile_path(0, 0, 256)), 32 * 17 + 3);
    let msg = open(storage).unwrap_err().to_string();
    assert!(msg.contains("tile/0/000 is corrupt at position 17"), "{msg}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn flipped_byte_in_the_checkpoint_refuses_open() {
    let (dir, storage) = stored_ledger("tamper-checkpoint");
    // The checkpoint log's last record is what recovery trusts.
    let path = dir.join("log/checkpoints");
    let bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(5).rposition(|w| w == b"\n700\n").unwrap();
    flip(&path, at + 3);
    let msg = open(storage).unwrap_err().to_string();
    assert!(msg.contains("checkpoint does not verify"), "{msg}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn flipped_byte_in_a_body_is_caught_on_read_and_by_check_naming_its_index() {
    let (dir, storage) = stored_ledger("tamper-body");
    // Find entry 123's journal record: the index file holds end offsets.
    let index = std::fs::read(dir.join("log/index")).unwrap();
    let start = u64::from_be_bytes(index[122 * 8..123 * 8].try_into().unwrap()) as usize;
    let journal = std::fs::read(dir.join("log/journal")).unwrap();
    let header_len = u32::from_be_bytes(journal[start..start + 4].try_into().unwrap()) as usize;
    flip(&dir.join("log/journal"), start + 4 + header_len + 4 + 32 + 1);
    // Open checks every body while it folds the state: it refuses, naming the entry.
    let msg = open(storage.clone()).unwrap_err().to_string();
    assert!(msg.contains("entry 123"), "{msg}");
    // The read-only check (`covenant-server check`) names it too, and so
    // does reading that one body.
    let err = check(&storage).unwrap_err().to_string();
    assert!(err.contains("body of entry 123 does not match"), "{err}");
    let reader = covenant_server::ledger::store::LedgerReader::new(storage.clone(), 64);
    let err = reader.body(123, 700).unwrap_err().to_string();
    assert!(err.contains("body of entry 123 does not match"), "{err}");
    assert!(reader.body(122, 700).is_ok());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn sled_view_catches_up_and_rebuilds_from_the_ledger() {
    let ledger = open(Arc::new(SimStorage::new())).unwrap();
    for i in 0..40 {
        let subject = if i % 4 == 0 { "ministry-x" } else { "ministry-y" };
        ledger.append_blocking(note(&format!("n{i}"), &[subject])).unwrap();
    }
    let db = sled::Config::new().temporary(true).open().unwrap();
    let view = SubjectIndex::open(&db).unwrap();
    assert_eq!(view.catch_up(&ledger, subjects_of).unwrap(), 40);
    assert_eq!(view.entries_for("ministry-x", 100).unwrap(), (0..40).step_by(4).collect::<Vec<u64>>());
    ledger.append_blocking(note("n40", &["ministry-x"])).unwrap();
    assert_eq!(view.catch_up(&ledger, subjects_of).unwrap(), 41);
    assert_eq!(view.entries_for("ministry-x", 100).unwrap().last(), Some(&40));

    // A view of another ledger's history is rebuilt, not trusted.
    let other = open(Arc::new(SimStorage::new())).unwrap();
    for i in 0..50 {
        other.append_blocking(note(&format!("other {i}"), &["ministry-z"])).unwrap();
    }
    assert_eq!(view.catch_up(&other, subjects_of).unwrap(), 50);
    assert!(view.entries_for("ministry-x", 100).unwrap().is_empty());
    assert_eq!(view.entries_for("ministry-z", 100).unwrap().len(), 50);
}

#[test]
fn flipped_byte_in_a_journal_header_refuses_open() {
    let (dir, storage) = stored_ledger("tamper-journal");
    // Entry 10's header, inside the journal: change its time's last digit.
    let index = std::fs::read(dir.join("log/index")).unwrap();
    let start = u64::from_be_bytes(index[9 * 8..10 * 8].try_into().unwrap()) as usize;
    let journal = std::fs::read(dir.join("log/journal")).unwrap();
    let header_len = u32::from_be_bytes(journal[start..start + 4].try_into().unwrap()) as usize;
    let header = &journal[start + 4..start + 4 + header_len];
    let z = header.windows(2).position(|w| w == b"Z\"").unwrap();
    flip(&dir.join("log/journal"), start + 4 + z - 1);
    let msg = open(storage.clone()).unwrap_err().to_string();
    assert!(msg.contains("corrupt record at entry 10 in log/journal"), "{msg}");
    assert!(msg.contains("tile/entries/000"), "{msg}");
    let msg = check(&storage).unwrap_err().to_string();
    assert!(msg.contains("corrupt record at entry 10 in log/journal"), "{msg}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_ledger_has_one_owner_at_a_time() {
    let dir = tempdir("one-owner");
    let first = open(Arc::new(FsStorage::new(&dir).unwrap())).unwrap();
    let err = open(Arc::new(FsStorage::new(&dir).unwrap())).unwrap_err().to_string();
    assert!(err.contains("in use"), "{err}");
    first.close();
    // Once the first owner is gone, it opens.
    open(Arc::new(FsStorage::new(&dir).unwrap())).unwrap().close();
    std::fs::remove_dir_all(dir).unwrap();
}

/// Files in memory, for the offline verifier.
struct Files<'a>(&'a BTreeMap<String, Vec<u8>>);

impl tiles::TileFiles for Files<'_> {
    fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(self.0.get(path).cloned())
    }
}

/// Every file under `dir`, by path relative to it, with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

#[test]
fn deleting_the_checkpoint_log_refuses_open_and_check_and_keeps_every_journal_byte() {
    let (dir, storage) = stored_ledger("no-checkpoint-log");
    std::fs::remove_file(dir.join("log/checkpoints")).unwrap();
    let before = snapshot(&dir);
    let expected = "log/checkpoints holds no signed checkpoint";
    let msg = open(storage.clone()).unwrap_err().to_string();
    assert!(msg.contains(expected) && msg.contains("log/journal holds"), "{msg}");
    let msg = check(&storage).unwrap_err().to_string();
    assert!(msg.contains(expected), "{msg}");
    // Nothing was written: every journal byte (and every other) is kept.
    assert_eq!(snapshot(&dir), before);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn halving_the_checkpoint_log_refuses_open_and_check_and_keeps_every_journal_byte() {
    let (dir, storage) = stored_ledger("halved-checkpoint-log");
    let path = dir.join("log/checkpoints");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let before = snapshot(&dir);
    // The durability watermark shows the size the log was cut from.
    let expected = "log/derived shows a signed size of 700, larger than the last checkpoint in log/checkpoints";
    let msg = open(storage.clone()).unwrap_err().to_string();
    assert!(msg.contains(expected), "{msg}");
    let msg = check(&storage).unwrap_err().to_string();
    assert!(msg.contains(expected), "{msg}");
    assert_eq!(snapshot(&dir), before);

    // Without the watermark and the published checkpoint, the journal
    // itself shows more than one batch past the cut size.
    std::fs::remove_file(dir.join("log/derived")).unwrap();
    std::fs::remove_file(dir.join("public/checkpoint")).unwrap();
    let before = snapshot(&dir);
    let msg = open(storage.clone()).unwrap_err().to_string();
    assert!(msg.contains("entries past the signed size") && msg.contains("more than one batch"), "{msg}");
    assert!(msg.contains("log/journal") && msg.contains("refusing to start"), "{msg}");
    let msg = check(&storage).unwrap_err().to_string();
    assert!(msg.contains("entries past the signed size"), "{msg}");
    assert_eq!(snapshot(&dir), before);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_published_checkpoint_larger_than_the_checkpoint_log_refuses_open_and_check() {
    let (dir, storage) = stored_ledger("published-ahead");
    let path = dir.join("log/checkpoints");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::remove_file(dir.join("log/derived")).unwrap();
    let expected = "public/checkpoint shows a signed size of 700";
    assert!(open(storage.clone()).unwrap_err().to_string().contains(expected));
    assert!(check(&storage).unwrap_err().to_string().contains(expected));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_unsigned_batch_left_by_a_crash_is_moved_aside_not_deleted() {
    let dir = tempdir("crash-tail");
    let storage = Arc::new(FsStorage::new(&dir).unwrap());
    let ledger = open(storage.clone()).unwrap();
    append_many(&ledger, 20);
    ledger.close();
    let signed = snapshot(&dir);
    let ledger = open(storage.clone()).unwrap();
    ledger.append_blocking(note("never acknowledged", &[])).unwrap();
    ledger.close();
    // What a crash between the journal's fsync and the checkpoint's leaves:
    // the batch in the journal; the checkpoint log, the watermark and the
    // published checkpoint as they were.
    let journal = std::fs::read(dir.join("log/journal")).unwrap();
    for file in ["log/checkpoints", "log/derived", "public/checkpoint"] {
        std::fs::write(dir.join(file), &signed[file]).unwrap();
    }
    let tail = journal[signed["log/journal"].len()..].to_vec();
    assert_eq!(check(&storage).unwrap(), Checked { size: 20, unsigned_entries: 1, unsigned_bytes: tail.len() as u64 });
    let again = open(storage.clone()).unwrap();
    assert_eq!(again.checkpoint().size, 20);
    again.close();
    assert_eq!(std::fs::read(dir.join("log/journal")).unwrap(), signed["log/journal"]);
    assert_eq!(std::fs::read(dir.join("log/journal.unsigned-20")).unwrap(), tail);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_corrupt_tile_fails_check_as_it_refuses_open() {
    let (dir, storage) = stored_ledger("check-tile");
    flip(&dir.join("public").join(tiles::tile_path(0, 1, 256)), 32 * 3 + 1);
    let msg = check(&storage).unwrap_err().to_string();
    assert!(msg.contains("tile/0/001 is corrupt at position 3"), "{msg}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A `MakeWriter` for tracing that keeps what is logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_storage_failure_halts_the_ledger_and_logs_its_cause_once() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
    tracing::subscriber::with_default(subscriber, || {
        let storage = Arc::new(SimStorage::new());
        let ledger = open(storage.clone()).unwrap();
        append_many(&ledger, 3);
        // Every write fails from now on, as on a full disk.
        storage.cut_after(1);
        for i in 0..5 {
            let err = ledger.append_blocking(note(&format!("after {i}"), &[])).unwrap_err();
            assert!(matches!(err, AppendError::Halted(_)), "{err}");
            assert!(err.to_string().contains("simulated power cut"), "{err}");
        }
        ledger.close();
    });
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{text}");
    assert!(errors[0].contains("stopped taking appends") && errors[0].contains("simulated power cut"), "{text}");
}

#[test]
fn the_public_folder_holds_no_body_salt_journal_or_checkpoint_log() {
    let dir = tempdir("public");
    let storage = Arc::new(FsStorage::new(&dir).unwrap());
    let ledger = open(storage.clone()).unwrap();
    let done: Vec<_> = (0..300)
        .map(|i| {
            let body = format!("signal body {i}: the reporter is in danger");
            let d = ledger.append_blocking(note(&body, &["ministry-x"])).unwrap();
            (body.into_bytes(), d.salt)
        })
        .collect();
    ledger.close();
    let public = snapshot(&dir.join("public"));
    assert!(public.contains_key("checkpoint") && public.keys().any(|k| k.starts_with("tile/entries/")), "{public:?}");
    for (path, bytes) in &public {
        assert!(path == "checkpoint" || path.starts_with("tile/"), "{path} is published");
        for (body, salt) in &done {
            assert!(!bytes.windows(body.len()).any(|w| w == body.as_slice()), "{path} holds a body");
            assert!(!bytes.windows(salt.len()).any(|w| w == salt.as_slice()), "{path} holds a salt");
        }
    }
    // What is published verifies on its own, as an auditor with a web server would.
    let cp = note::open_checkpoint(&public["checkpoint"], &signer().verifier()).unwrap();
    tiles::verify_files(&Files(&public), cp.checkpoint().size, &cp.checkpoint().root_hash).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_published_checkpoint_is_the_newest_cosigned_one_with_its_tiles() {
    let dir = tempdir("cosigned");
    let storage = Arc::new(FsStorage::new(&dir).unwrap());
    let config = LedgerConfig { flush_interval: std::time::Duration::from_millis(50), ..LedgerConfig::default() };
    let ledger = Ledger::open(storage, signer(), NoteCounter::default(), clock(), config).unwrap();
    ledger.expect_cosignatures();
    let witness = NoteSigner::new("witness.test/w", SigningKey::from_seed(&[9; 32])).unwrap();
    append_many(&ledger, 300);
    let cp = ledger.checkpoint();
    let text = note::open_checkpoint(cp.note.as_bytes(), &signer().verifier()).unwrap().note().text().to_owned();
    let cosigned = format!("{}{}", cp.note, witness.cosign(&text, 1_800_000_000).unwrap().to_line());
    ledger.publish_cosigned(cp.size, cosigned.clone());
    // Then more entries that no witness cosigned (crossing a tile): the
    // published checkpoint stays the cosigned one, its tiles still there.
    append_many(&ledger, 300);
    let published = dir.join("public/checkpoint");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read(&published).ok().as_deref() != Some(cosigned.as_bytes()) {
        assert!(std::time::Instant::now() < deadline, "the cosigned checkpoint was never published");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    ledger.close();
    let bytes = std::fs::read(&published).unwrap();
    assert_eq!(bytes, cosigned.as_bytes());
    let verified = note::open_checkpoint(&bytes, &signer().verifier()).unwrap();
    verified.require_cosignatures(&[&witness.cosignature_verifier()], 1).unwrap();
    let public = snapshot(&dir.join("public"));
    tiles::verify_files(&Files(&public), verified.checkpoint().size, &verified.checkpoint().root_hash).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

/// Runs `covenant-server ARGS` to its end (bounded: 60 s) and returns
/// whether it succeeded and what it printed.
fn server(args: &[&str]) -> (bool, String) {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_covenant-server"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("covenant-server {args:?} did not stop");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A development data directory, as `covenant-server init --dev` makes it.
fn dev_data(name: &str) -> std::path::PathBuf {
    let dir = tempdir(name);
    std::fs::remove_dir_all(&dir).unwrap();
    covenant_server::datadir::init_dev(&dir).unwrap();
    dir
}

/// The review after the fixes of issue #10 found `check` refusing every
/// healthy ledger (it folded without the subject secret): a refusal that
/// comes always says nothing. A healthy data directory checks.
#[test]
fn covenant_server_check_passes_a_healthy_data_directory() {
    let dir = dev_data("bin-healthy");
    let before = snapshot(&dir.join("ledger"));
    let (ok, out) = server(&["check", "--data", &dir.display().to_string()]);
    assert!(ok && out.contains("entries check"), "{out}");
    assert_eq!(snapshot(&dir.join("ledger")), before, "check writes nothing");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Found by the review after the fixes of issue #10: with the journal
/// emptied and the checkpoint log, the watermark and the published
/// checkpoint deleted, `check` said "All 0 entries check" and `serve`
/// deleted the published tiles, the last copy of the headers.
#[test]
fn an_emptied_ledger_whose_tiles_remain_is_refused_by_check_and_serve() {
    let dir = dev_data("bin-emptied");
    let ledger = dir.join("ledger");
    std::fs::write(ledger.join("log/journal"), b"").unwrap();
    for gone in ["log/checkpoints", "log/derived", "public/checkpoint"] {
        let _ = std::fs::remove_file(ledger.join(gone));
    }
    let before = snapshot(&ledger);
    let data = dir.display().to_string();
    let expected = "files remain under public/tile";
    let (ok, out) = server(&["check", "--data", &data]);
    assert!(!ok && out.contains(expected), "check: {out}");
    let (ok, out) = server(&["serve", "--data", &data, "--listen", "127.0.0.1:0"]);
    assert!(!ok && out.contains(expected), "serve: {out}");
    assert_eq!(snapshot(&ledger), before, "every file is kept");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn covenant_server_check_and_serve_refuse_a_deleted_or_halved_checkpoint_log_keeping_every_journal_byte() {
    for (attack, expected) in [
        ("deleted", "log/checkpoints holds no signed checkpoint"),
        ("halved", "larger than the last checkpoint in log/checkpoints"),
    ] {
        let dir = dev_data(&format!("bin-{attack}"));
        let checkpoints = dir.join("ledger/log/checkpoints");
        if attack == "deleted" {
            std::fs::remove_file(&checkpoints).unwrap();
        } else {
            let bytes = std::fs::read(&checkpoints).unwrap();
            std::fs::write(&checkpoints, &bytes[..bytes.len() / 2]).unwrap();
        }
        let before = snapshot(&dir.join("ledger"));
        let data = dir.display().to_string();
        let (ok, out) = server(&["check", "--data", &data]);
        assert!(!ok && out.contains(expected), "check, checkpoint log {attack}: {out}");
        let (ok, out) = server(&["serve", "--data", &data, "--listen", "127.0.0.1:0"]);
        assert!(!ok && out.contains(expected), "serve, checkpoint log {attack}: {out}");
        // Every journal byte, and every other, is kept.
        assert_eq!(snapshot(&dir.join("ledger")), before, "checkpoint log {attack}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn a_flipped_byte_in_a_journal_header_is_a_corrupt_record_not_an_actor_mismatch() {
    let dir = dev_data("header-actor");
    // Entry 1 (admin1's registration): change one hex digit of its actor.
    let path = dir.join("ledger/log/journal");
    let mut journal = std::fs::read(&path).unwrap();
    // Where entry 0's record ends (with the batch end after it): `log/index`.
    let index = std::fs::read(dir.join("ledger/log/index")).unwrap();
    let start = u64::from_be_bytes(index[..8].try_into().unwrap()) as usize;
    let len = u32::from_be_bytes(journal[start..start + 4].try_into().unwrap()) as usize;
    let header = &journal[start + 4..start + 4 + len];
    let at = start + 4 + header.windows(9).position(|w| w == b"\"actor\":\"").unwrap() + 9 + 3;
    journal[at] = if journal[at] == b'a' { b'b' } else { b'a' };
    std::fs::write(&path, journal).unwrap();
    let err = format!("{:#}", covenant_server::datadir::open_ledger(&dir).unwrap_err());
    assert!(err.contains("corrupt record at entry 1 in log/journal"), "{err}");
    let (ok, out) = server(&["check", "--data", &dir.display().to_string()]);
    assert!(!ok && out.contains("corrupt record at entry 1 in log/journal"), "{out}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// The records of `log/checkpoints` (`u32` length, note): where each ends
/// and the size its note signs.
fn checkpoint_records(bytes: &[u8]) -> Vec<(usize, u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 4 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let note = bytes[pos + 4..pos + 4 + len].to_vec();
        let size = String::from_utf8_lossy(&note).lines().nth(1).unwrap().parse().unwrap();
        pos += 4 + len;
        out.push((pos, size, note));
    }
    out
}

/// Cuts the checkpoint log of the ledger in `dir` back to its record of
/// `size`, and makes the watermark and the published checkpoint say the
/// same, as someone hiding the batches after it would.
fn cut_checkpoint_log_to(dir: &Path, size: u64) {
    let path = dir.join("log/checkpoints");
    let bytes = std::fs::read(&path).unwrap();
    let (end, _, note) = checkpoint_records(&bytes).into_iter().find(|(_, s, _)| *s == size).unwrap();
    std::fs::write(&path, &bytes[..end]).unwrap();
    std::fs::write(dir.join("log/derived"), size.to_be_bytes()).unwrap();
    std::fs::write(dir.join("public/checkpoint"), note).unwrap();
}

/// Found by the review after the fixes of issue #10: recovery's "one
/// unsigned batch" rule compared whole-second ledger times, so batches
/// acknowledged within one second could be cut from the checkpoint log
/// (with the watermark and the published checkpoint edited to match), and
/// `serve` moved them aside and reused their indexes: a fork.
#[test]
fn cutting_several_same_second_batches_from_the_checkpoint_log_is_refused() {
    let dir = tempdir("same-second");
    let storage = Arc::new(FsStorage::new(&dir).unwrap());
    // Every batch in the same second.
    let same_second: Clock = Arc::new(|| Timestamp::from_unix(1_800_000_000));
    let ledger =
        Ledger::open(storage.clone(), signer(), NoteCounter::default(), same_second, LedgerConfig::default()).unwrap();
    // Ten batches of one entry each, every one acknowledged.
    for i in 0..10 {
        ledger.append_blocking(note(&format!("acknowledged {i}"), &[])).unwrap();
    }
    ledger.close();
    cut_checkpoint_log_to(&dir, 6);
    let before = snapshot(&dir);
    let expected = "4 entries past the signed size 6";
    let msg = check(&storage).unwrap_err().to_string();
    assert!(msg.contains(expected) && msg.contains("batches end at sizes 7, 8, 9, 10"), "{msg}");
    let msg = open(storage.clone()).unwrap_err().to_string();
    assert!(msg.contains(expected) && msg.contains("batches end at sizes 7, 8, 9, 10"), "{msg}");
    assert!(msg.contains("log/checkpoints was cut or replaced"), "{msg}");
    // Nothing was moved aside or rewritten.
    assert_eq!(snapshot(&dir), before);

    // Cutting the last batch alone looks exactly like a crash between the
    // journal's fsync and the checkpoint's: that one batch is set aside.
    std::fs::remove_dir_all(&dir).unwrap();
    let storage = Arc::new(FsStorage::new(&dir).unwrap());
    let same_second: Clock = Arc::new(|| Timestamp::from_unix(1_800_000_000));
    let ledger =
        Ledger::open(storage.clone(), signer(), NoteCounter::default(), same_second, LedgerConfig::default()).unwrap();
    for i in 0..10 {
        ledger.append_blocking(note(&format!("acknowledged {i}"), &[])).unwrap();
    }
    ledger.close();
    cut_checkpoint_log_to(&dir, 9);
    assert_eq!(check(&storage).unwrap().unsigned_entries, 1);
    std::fs::remove_dir_all(dir).unwrap();
}

/// The other half of the same finding: recovery ignored what the
/// development witness recorded it cosigned (`witness-dev-state.json`). A
/// checkpoint log cut below a size a witness cosigned is refused, even by
/// one batch, by `check` and `serve` alike, and every file is kept.
#[test]
fn a_checkpoint_log_behind_the_witness_cosigned_size_is_refused() {
    let dir = dev_data("bin-witnessed");
    let ledger = dir.join("ledger");
    let records = checkpoint_records(&std::fs::read(ledger.join("log/checkpoints")).unwrap());
    let (_, size, note) = records.last().unwrap().clone();
    let (_, previous, _) = records[records.len() - 2].clone();
    // The development witness cosigned the newest checkpoint: its state
    // file holds that size and root, as `serve`'s witness writes it.
    let verified = note::open_checkpoint(
        &note,
        &note::NoteVerifier::parse(std::fs::read_to_string(dir.join("ledger.vkey")).unwrap().trim()).unwrap(),
    )
    .unwrap();
    let record = format!("{{\"size\":{size},\"root\":\"{}\"}}", hex::encode(verified.checkpoint().root_hash));
    std::fs::write(dir.join("witness-dev-state.json"), record).unwrap();
    // Then the last batch is cut from the checkpoint log.
    cut_checkpoint_log_to(&ledger, previous);
    let before = snapshot(&ledger);
    let data = dir.display().to_string();
    let expected = format!("witness-dev-state.json shows a witness cosigned size {size}");
    let (ok, out) = server(&["check", "--data", &data]);
    assert!(!ok && out.contains(&expected), "check: {out}");
    let (ok, out) = server(&["serve", "--data", &data, "--listen", "127.0.0.1:0"]);
    assert!(!ok && out.contains(&expected), "serve: {out}");
    assert_eq!(snapshot(&ledger), before, "every file is kept");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A refusal is the operator's to look into: logged at ERROR with its
/// cause. Setting aside the one batch a crash leaves is expected: a WARN
/// naming the file it went to and the entries it holds.
#[test]
fn a_refusal_is_logged_as_an_error_and_a_batch_set_aside_as_a_warning_naming_file_and_entries() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
    let dir = tempdir("logged");
    tracing::subscriber::with_default(subscriber, || {
        let storage = Arc::new(FsStorage::new(&dir).unwrap());
        let ledger = open(storage.clone()).unwrap();
        for i in 0..3 {
            ledger.append_blocking(note(&format!("batch {i}"), &[])).unwrap();
        }
        ledger.close();
        // Then one batch of three entries (the sequencer waits for them).
        let config = LedgerConfig { max_wait: std::time::Duration::from_millis(300), ..LedgerConfig::default() };
        let ledger = Ledger::open(storage.clone(), signer(), NoteCounter::default(), clock(), config).unwrap();
        let done: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..3)
                .map(|i| {
                    let ledger = &ledger;
                    s.spawn(move || ledger.append_blocking(note(&format!("last {i}"), &[])).unwrap().checkpoint.size)
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(done, vec![6, 6, 6], "one batch");
        ledger.close();
        let kept: Vec<_> = ["log/checkpoints", "log/derived", "public/checkpoint"]
            .iter()
            .map(|f| (*f, std::fs::read(dir.join(f)).unwrap()))
            .collect();
        // Two batches cut: refused.
        cut_checkpoint_log_to(&dir, 2);
        open(storage.clone()).unwrap_err();
        // Only the last batch cut (as a crash leaves it): set aside.
        for (file, bytes) in &kept {
            std::fs::write(dir.join(file), bytes).unwrap();
        }
        cut_checkpoint_log_to(&dir, 3);
        open(storage.clone()).unwrap().close();
    });
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{text}");
    assert!(errors[0].contains("refuses to open") && errors[0].contains("4 entries past the signed size 2"), "{text}");
    assert!(errors[0].contains("batches end at sizes 3, 6"), "{text}");
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{text}");
    assert!(warnings[0].contains("3 entries 3..5") && warnings[0].contains("log/journal.unsigned-3"), "{text}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A measurement, not a check (run it with `--ignored --nocapture`): on the
/// real file system, batches of one entry, each followed by a flush of the
/// derived files (the sequencer flushes about once a second; here every
/// batch, to make its cost visible), timing the flush and the next batch's
/// journal fsync and checkpoint fsync, which file creations and renames in
/// the flush can slow down on ext4.
#[test]
#[ignore]
fn measure_flush_cost() {
    use covenant_server::ledger::store::{NewRecord, RecoveryLimits, recover};
    let dir = tempdir("measure-flush");
    let storage = Arc::new(FsStorage::new(&dir).unwrap());
    let limits = RecoveryLimits { max_tail: 1024, cache_limit: 64, witnessed: Vec::new() };
    let mut writer = recover(storage, &signer().verifier(), limits, |_, _, _| Ok(())).unwrap().writer;
    let (mut flush, mut batch, mut checkpoint) = (Vec::new(), Vec::new(), Vec::new());
    let signer = signer();
    for i in 0..3000u64 {
        let body = format!("entry {i}").into_bytes();
        let salt = [7u8; 32];
        let header = EntryHeader {
            kind: EntryKind::Note,
            time: Timestamp::from_unix(1_800_000_000),
            actor: None,
            tags: Vec::new(),
            body_digest: covenant_core::ledger::body_digest(&salt, &body),
        }
        .to_bytes()
        .unwrap();
        let t = std::time::Instant::now();
        let size = writer.write_batch(&[NewRecord { header, salt, body }]).unwrap();
        batch.push(t.elapsed());
        let cp = covenant_core::note::Checkpoint {
            origin: signer.name().to_owned(),
            size,
            root_hash: [0; 32],
            extensions: Vec::new(),
        };
        let note = cp.sign(&signer).unwrap().to_text();
        let t = std::time::Instant::now();
        writer.write_checkpoint(&note).unwrap();
        checkpoint.push(t.elapsed());
        let t = std::time::Instant::now();
        writer.flush().unwrap();
        flush.push(t.elapsed());
    }
    for (name, mut times) in [("flush", flush), ("batch (journal fsync)", batch), ("checkpoint fsync", checkpoint)] {
        times.sort();
        let mean = times.iter().sum::<std::time::Duration>() / times.len() as u32;
        println!(
            "{name}: mean {:.3} ms, p50 {:.3} ms, p99 {:.3} ms",
            mean.as_secs_f64() * 1e3,
            times[times.len() / 2].as_secs_f64() * 1e3,
            times[times.len() * 99 / 100].as_secs_f64() * 1e3
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// A tree a witness cosigned must be the ledger's own at that size: a
/// ledger that holds another tree there (rewritten, then grown past it) is
/// refused, naming where the cosignature is recorded; the true root opens.
#[test]
fn a_ledger_holding_another_tree_than_the_witness_cosigned_is_refused() {
    use covenant_server::ledger::store::Witnessed;
    let (dir, storage) = stored_ledger("witnessed-root");
    let ledger = open(storage.clone()).unwrap();
    let mut tree = merkle::MemoryTree::new();
    for header in ledger.headers(0, 300).unwrap() {
        tree.push_leaf(&header);
    }
    let root = tree.root();
    ledger.close();
    let with = |root: [u8; 32]| LedgerConfig {
        witnessed: vec![Witnessed { source: "witness-state.json".into(), size: 300, root: Some(root) }],
        ..LedgerConfig::default()
    };
    let mut other = root;
    other[0] ^= 1;
    let err = Ledger::open(storage.clone(), signer(), NoteCounter::default(), clock(), with(other)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("witness-state.json shows a witness cosigned size 300 with another root"), "{msg}");
    let err = Ledger::check(&*storage, &signer().verifier(), NoteCounter::default(), &with(other)).unwrap_err();
    assert!(err.to_string().contains("with another root"), "{err}");
    Ledger::open(storage, signer(), NoteCounter::default(), clock(), with(root)).unwrap().close();
    std::fs::remove_dir_all(dir).unwrap();
}

/// `check` and opening read a store with one analysis and compute the
/// journal's root one way (a compact range fed every leaf): on an undamaged
/// store both accept the true root a witness cosigned at any size (inside
/// a tile, at a tile's end, the signed size) and refuse a false one in the
/// same words; on a damaged store (a flipped tile, a flipped journal
/// header) both refuse in the same words; with an unsigned batch past the
/// signed size both stop at the same size, whose root is the tree's.
#[test]
fn recovery_and_check_agree_on_an_undamaged_and_a_damaged_store() {
    use covenant_server::ledger::store::Witnessed;
    let (dir, storage) = stored_ledger("check-agrees");
    let ledger = open(storage.clone()).unwrap();
    let headers = ledger.headers(0, 700).unwrap();
    ledger.close();
    let mut tree = merkle::MemoryTree::new();
    let mut roots = vec![tree.root()];
    for header in &headers {
        tree.push_leaf(header);
        roots.push(tree.root());
    }
    let witnessed = |size: u64, root: [u8; 32]| LedgerConfig {
        witnessed: vec![Witnessed { source: "witness-state.json".into(), size, root: Some(root) }],
        ..LedgerConfig::default()
    };
    let check_with = |config: &LedgerConfig| {
        Ledger::check(&*storage, &signer().verifier(), NoteCounter::default(), config).map_err(|e| e.to_string())
    };
    let open_with = |config: LedgerConfig| {
        Ledger::open(storage.clone(), signer(), NoteCounter::default(), clock(), config).map_err(|e| e.to_string())
    };

    // Undamaged: the true root at every size is accepted by both, a false
    // one refused by both alike.
    for size in [1u64, 255, 256, 257, 512, 699, 700] {
        let root = roots[size as usize];
        assert_eq!(check_with(&witnessed(size, root)).unwrap().size, 700, "size {size}");
        let opened = open_with(witnessed(size, root)).unwrap();
        assert_eq!((opened.checkpoint().size, opened.checkpoint().root), (700, roots[700]), "size {size}");
        opened.close();
        let mut other = root;
        other[0] ^= 1;
        let by_check = check_with(&witnessed(size, other)).unwrap_err();
        assert!(by_check.contains(&format!("cosigned size {size} with another root")), "{by_check}");
        assert_eq!(open_with(witnessed(size, other)).unwrap_err(), by_check, "size {size}");
    }

    // Damaged: a flipped byte in a durable tile, then in a journal header;
    // each refused by both in the same words, and put back.
    let tile = dir.join("public").join(tiles::tile_path(0, 1, 256));
    flip(&tile, 32 * 3 + 1);
    let by_check = check(&storage).map(|c| c.size).unwrap_err().to_string();
    assert!(by_check.contains("tile/0/001 is corrupt at position 3"), "{by_check}");
    assert_eq!(open(storage.clone()).map(|_| ()).unwrap_err().to_string(), by_check);
    flip(&tile, 32 * 3 + 1);
    let index = std::fs::read(dir.join("log/index")).unwrap();
    let start = u64::from_be_bytes(index[299 * 8..300 * 8].try_into().unwrap()) as usize;
    let journal = std::fs::read(dir.join("log/journal")).unwrap();
    let header_len = u32::from_be_bytes(journal[start..start + 4].try_into().unwrap()) as usize;
    let z = journal[start + 4..start + 4 + header_len].windows(2).position(|w| w == b"Z\"").unwrap();
    flip(&dir.join("log/journal"), start + 4 + z - 1);
    let by_check = check(&storage).map(|c| c.size).unwrap_err().to_string();
    assert!(by_check.contains("corrupt record at entry 300 in log/journal"), "{by_check}");
    assert_eq!(open(storage.clone()).map(|_| ()).unwrap_err().to_string(), by_check);
    flip(&dir.join("log/journal"), start + 4 + z - 1);
    assert_eq!(check(&storage).unwrap().size, 700);

    // The last batch cut from the checkpoint log, as a crash before its
    // checkpoint was durable leaves it: both stop at the size before it.
    let records = checkpoint_records(&std::fs::read(dir.join("log/checkpoints")).unwrap());
    let signed = records[records.len() - 2].1;
    cut_checkpoint_log_to(&dir, signed);
    let checked = check(&storage).unwrap();
    assert_eq!((checked.size, checked.unsigned_entries), (signed, 700 - signed));
    let opened = open(storage.clone()).unwrap();
    assert_eq!((opened.checkpoint().size, opened.checkpoint().root), (signed, roots[signed as usize]));
    opened.close();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_signed_empty_checkpoint_with_a_false_root_is_refused_by_open_and_check() {
    // An empty tree has one root, SHA-256 of nothing; a checkpoint of size 0
    // that signs another one is no checkpoint of this journal.
    let dir = tempdir("empty-false-root");
    let storage = Arc::new(FsStorage::new(&dir).unwrap());
    let false_root =
        note::Checkpoint { origin: signer().name().to_owned(), size: 0, root_hash: [1; 32], extensions: vec![] };
    let text = false_root.sign(&signer()).unwrap().to_text();
    let mut record = (text.len() as u32).to_be_bytes().to_vec();
    record.extend_from_slice(text.as_bytes());
    std::fs::create_dir_all(dir.join("log")).unwrap();
    std::fs::write(dir.join("log/checkpoints"), &record).unwrap();
    assert!(check(&storage).is_err(), "check accepts a signed empty tree with a false root");
    assert!(open(storage.clone()).is_err(), "open accepts a signed empty tree with a false root");
    // The true empty root is accepted.
    let true_root = note::Checkpoint { root_hash: merkle::EMPTY_ROOT, ..false_root };
    let text = true_root.sign(&signer()).unwrap().to_text();
    let mut record = (text.len() as u32).to_be_bytes().to_vec();
    record.extend_from_slice(text.as_bytes());
    std::fs::write(dir.join("log/checkpoints"), &record).unwrap();
    check(&storage).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}
