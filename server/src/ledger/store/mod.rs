//! The ledger's files: C2SP tlog-tiles (hash tiles and entry bundles of
//! headers) that any static file server can serve, the append-only journal
//! that holds every entry with its body, and the log of signed checkpoints;
//! with the batch writer, the readers and crash recovery.
//!
//! Split by concern, each file using only the ones before it (and this
//! one's paths and errors):
//!
//! - `journal`: the formats of `log/journal` (entry records, batch ends)
//!   and `log/checkpoints`, encoded and decoded, and the front-to-back scan;
//! - `tiles`: the tree's right edge as tiles and bundles are built from it,
//!   their paths, and the published folder's upkeep (writing a public file
//!   by rename, removing files past a size, repairing torn partial files);
//! - `reader`: [`LedgerReader`], entries, bodies, roots, inclusion and
//!   consistency proofs over the tiles;
//! - `writer`: [`LedgerWriter`], batches, checkpoints and the once-a-second
//!   flush of the derived files; [`CosignedSlot`];
//! - `check`: the read-only analysis both [`check`] and [`recover`] run,
//!   with the witness evidence ([`Witnessed`]);
//! - `recovery`: [`recover`], the analysis and then the repairs.
//!
//! Layout under the ledger directory. `public/` holds only what may be
//! published for static auditing (headers, hashes, checkpoints); `log/` is
//! private (bodies, salts) and must never be served.
//!
//! ```text
//! public/checkpoint                 the published checkpoint: the newest
//!                                   cosigned one with witnesses, else the latest
//! public/tile/<L>/<N>[.p/<W>]       hash tiles
//! public/tile/entries/<N>[.p/<W>]   entry bundles (headers, 16-bit length-prefixed)
//! log/journal                per entry: u32 header length, header,
//!                            u32 body length, salt (32 bytes), body;
//!                            after a batch's last entry, its batch end:
//!                            u32 0, u64 the tree size the batch ends at
//! log/checkpoints            every signed checkpoint: u32 length, note
//! log/derived                durability watermark: u64 sizes whose full tiles are fsynced
//! log/index                  per entry, the u64 end offset of its journal record
//! log/journal.unsigned-<S>   an unsigned tail recovery set aside (S: the signed size)
//! ```
//!
//! The order of writes and syncs per batch ([`LedgerWriter::write_batch`],
//! then [`LedgerWriter::write_checkpoint`]):
//!
//! 1. the batch's records, its batch end last, are appended to
//!    `log/journal` in one append;
//! 2. every full tile and bundle the batch completes is written under its
//!    final name (a new file, written once), not fsynced;
//! 3. the entries' end offsets are appended to `log/index`, not fsynced;
//! 4. `log/journal` is fsynced (the first time also the directories that
//!    name it, deepest first);
//! 5. the caller computes the root from the tiles, signs the checkpoint,
//!    appends it to `log/checkpoints` and fsyncs that (the first time also
//!    its directory); only then does it answer.
//!
//! Two fsyncs per batch: tiles, bundles, `log/index` and the published
//! checkpoint are derived from the journal. About once a second (and when
//! the ledger closes, unless it halted) [`LedgerWriter::flush`] writes the partial bundle and
//! tiles at the edge and, when a newer one is due, the published checkpoint
//! (with the partial files of its size), each under `<name>.tmp` and then
//! renamed over `<name>`, none fsynced; then fsyncs every full tile and
//! bundle written since the last flush and their directories; then appends
//! the size they cover to `log/derived` and fsyncs it; and last removes the
//! partial files that full ones superseded and the published checkpoint no
//! longer reads. (An fsync costs ~0.24 ms here and creating a durable file
//! ~0.9 ms; two fsyncs per batch instead of ten is what makes the ledger
//! fast. `docs/ledger.md`, "Durability", records this departure from the
//! original design.) Readers take the partial bundle and tiles at the edge
//! from memory.
//!
//! Recovery never destroys what it cannot prove lies past a signed size. A
//! crash between the journal's fsync and the checkpoint's leaves at most one
//! unsigned batch past the last signed size (whole, with its batch end, or
//! a torn prefix of it); that tail is moved aside to
//! `log/journal.unsigned-<S>`, never deleted. The batch ends say exactly
//! where every batch ended, so anything more (a journal without a
//! checkpoint log, two batch ends past it, a signed size where no batch
//! ends, a watermark, published checkpoint or witness-cosigned size larger
//! than it) refuses to open, naming the file, sizes or witness. No journal or
//! checkpoint-log byte at or below the signed size is ever rewritten. [`check`] runs the same
//! reading and writes nothing; both compute the journal's root one way, a
//! [`covenant_core::merkle::CompactRange`] fed every leaf in order.
//!
//! Only after that reading does recovery write, in this order: it removes
//! a leftover `public/checkpoint.tmp`; moves a torn last checkpoint record
//! to `log/checkpoints.torn-<S>`; cuts a torn watermark value and fsyncs
//! `log/derived`; removes tiles and bundles past S (fsyncing the folders
//! it changed); moves the unsigned tail to `log/journal.unsigned-<S>`
//! (each set-aside copy fsynced and its name made durable before the
//! original is cut and fsynced); rewrites `log/index` if it differs;
//! rewrites, by rename, the full files above the watermark that are
//! missing or torn; checks every partial file against the journal,
//! rewriting a torn one; and then flushes as above, so everything derived
//! is durable before the ledger serves. A full tile or bundle is written
//! in place in step 2 (a new file, fsynced by the next flush); a crash
//! before that flush may tear it, and recovery rewrites it, since it lies
//! above the watermark.

mod check;
mod journal;
mod reader;
mod recovery;
mod tiles;
mod writer;

use std::io;

use covenant_core::note;
use covenant_core::tiles::TileError;

pub use check::{Checked, RecoveryLimits, Witnessed, check};
pub use journal::{NewRecord, StoredBody};
pub use reader::LedgerReader;
pub use recovery::{Recovered, recover};
pub use writer::{CosignedSlot, LedgerWriter};

/// The folder that may be published for static auditing: the checkpoint,
/// the hash tiles and the entry bundles (headers only), and nothing else.
pub const PUBLIC: &str = "public";
/// The published checkpoint (the newest cosigned one when witnesses are
/// configured), for static serving.
pub const CHECKPOINT: &str = "public/checkpoint";
const CHECKPOINT_TMP: &str = "public/checkpoint.tmp";
/// The durability watermark of derived files: every full tile and bundle
/// for sizes up to the last value here was fsynced.
const DERIVED: &str = "log/derived";
/// The journal: every entry's header and body.
pub const JOURNAL: &str = "log/journal";
/// Every signed checkpoint, in order.
pub const CHECKPOINTS: &str = "log/checkpoints";
const JOURNAL_INDEX: &str = "log/index";
/// The most tile levels a ledger can have (8 levels of 8 Merkle levels = 2^64).
const MAX_TILE_LEVELS: u8 = 8;

/// Why reading the ledger failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The storage failed.
    #[error("storage: {0}")]
    Storage(#[from] io::Error),
    /// The index or range is outside the tree.
    #[error("{what} is out of range for tree size {size}")]
    OutOfRange {
        /// What was asked for.
        what: String,
        /// The tree size.
        size: u64,
    },
    /// Stored data is corrupt.
    #[error("ledger data is corrupt: {0}")]
    Corrupt(String),
}

/// Why the ledger refused to open.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The storage failed.
    #[error("storage: {0}")]
    Storage(#[from] io::Error),
    /// A live ledger's files do not line up for a consistent copy
    /// ([`snapshot_point`]).
    #[error("the ledger cannot be copied at a signed checkpoint: {0}")]
    Snapshot(String),
    /// The checkpoint file does not verify with the ledger key.
    #[error("the stored checkpoint does not verify: {0}")]
    Checkpoint(#[from] note::NoteError),
    /// The stored entries and tiles do not reproduce the signed checkpoint.
    #[error("the stored ledger does not reproduce its signed checkpoint: {0}")]
    Tiles(#[from] TileError),
    /// Entries are missing from the journal at or below the signed size.
    #[error("log/journal ends at entry {held}, before the signed size {size}: entries are missing")]
    MissingEntries {
        /// Entries held.
        held: u64,
        /// The signed size.
        size: u64,
    },
    /// The journal holds entries but the checkpoint log holds no signed
    /// checkpoint: it was deleted or emptied.
    #[error(
        "log/journal holds {journal_bytes} bytes but log/checkpoints holds no signed checkpoint (deleted or emptied?): \
         refusing to start rather than discard entries that may have been signed"
    )]
    NoCheckpoint {
        /// The journal's length.
        journal_bytes: u64,
    },
    /// The checkpoint log and the journal are gone or empty, but published
    /// tiles remain: entries existed, and opening would delete the last
    /// copy of their headers.
    #[error(
        "log/checkpoints holds no signed checkpoint and log/journal is empty, but {tiles} files remain under \
         public/tile: the ledger had entries (deleted or emptied?); refusing to start"
    )]
    NoCheckpointButTiles {
        /// Tile and bundle files found.
        tiles: usize,
    },
    /// A durable file shows a larger signed size than the checkpoint log:
    /// the checkpoint log was cut or replaced.
    #[error(
        "{file} shows a signed size of {size}, larger than the last checkpoint in log/checkpoints ({signed}): \
         the checkpoint log was cut or replaced; refusing to start"
    )]
    AheadOfCheckpointLog {
        /// The file.
        file: &'static str,
        /// The size it shows.
        size: u64,
        /// The checkpoint log's last signed size.
        signed: u64,
    },
    /// A durable file carries a checkpoint signed by the ledger key for the
    /// same size as the checkpoint log's, with another root.
    #[error("{file} is signed for size {size} with another root than log/checkpoints: refusing to start")]
    OtherRoot {
        /// The file.
        file: &'static str,
        /// The size.
        size: u64,
    },
    /// The last signed checkpoint's size is not where a batch ends in the
    /// journal: a checkpoint is only ever signed at the end of a batch.
    #[error(
        "no batch of log/journal ends at the signed size {size} of log/checkpoints (a checkpoint is signed only \
         where a batch ends): the journal or the checkpoint log was altered; refusing to start"
    )]
    NoBatchEnd {
        /// The signed size.
        size: u64,
    },
    /// A witness is recorded to have cosigned a larger tree than the
    /// checkpoint log's last: the checkpoint log was cut or replaced.
    #[error(
        "{evidence} shows a witness cosigned size {size}, larger than the last checkpoint in log/checkpoints \
         ({signed}): the checkpoint log was cut or replaced, and opening would fork what the witness saw; \
         refusing to start"
    )]
    BehindWitness {
        /// Where the witness's cosignature is recorded.
        evidence: String,
        /// The size it cosigned.
        size: u64,
        /// The checkpoint log's last signed size.
        signed: u64,
    },
    /// The stored tree at a size a witness cosigned has another root than
    /// the one it cosigned: the ledger was rewritten.
    #[error(
        "{evidence} shows a witness cosigned size {size} with another root than log/journal holds at that size: \
         the ledger was rewritten (a fork); refusing to start"
    )]
    WitnessedOtherRoot {
        /// Where the witness's cosignature is recorded.
        evidence: String,
        /// The size.
        size: u64,
    },
    /// More lies past the signed size than the one batch a crash can leave.
    #[error(
        "log/journal holds {entries} entries past the signed size {signed} ({reason}); a crash leaves at most \
         one unsigned batch, so log/checkpoints was cut or replaced: refusing to start"
    )]
    UnsignedTail {
        /// The signed size.
        signed: u64,
        /// Whole entries past it.
        entries: u64,
        /// Why they cannot be one batch.
        reason: String,
    },
    /// A journal record at or below the signed size is corrupt.
    #[error("corrupt record at entry {index} in log/journal: {reason}")]
    CorruptRecord {
        /// The entry.
        index: u64,
        /// What is wrong.
        reason: String,
    },
    /// The stored entries do not reproduce the signed checkpoint, and no
    /// one record is to blame.
    #[error("the stored ledger is corrupt: log/journal does not reproduce the signed checkpoint of size {size}")]
    Unreproduced {
        /// The signed size.
        size: u64,
    },
    /// A stored body does not match its header's digest.
    #[error("the stored ledger is corrupt: the body of entry {index} does not match its header's digest")]
    BodyMismatch {
        /// The entry.
        index: u64,
    },
    /// The state fold refused a stored entry.
    #[error("entry {index} cannot be replayed: {reason}")]
    Replay {
        /// The entry.
        index: u64,
        /// Why.
        reason: String,
    },
}

/// Where a consistent copy of a live ledger ends: its newest durable signed
/// checkpoint and the length of each durable file's prefix that holds
/// exactly the entries it covers ([`snapshot_point`]).
#[derive(Debug, Clone)]
pub struct SnapshotPoint {
    /// The checkpoint, verified with the ledger key.
    pub checkpoint: note::VerifiedCheckpoint,
    /// `log/journal` up to and including the batch end of its size.
    pub journal_len: u64,
    /// `log/checkpoints` up to and including its record.
    pub checkpoints_len: u64,
    /// `log/index` for its entries.
    pub index_len: u64,
}

/// The newest signed checkpoint made durable in `storage` and the file
/// prefixes that hold exactly its entries, read without the ledger's lock:
/// nothing at or below a signed size is ever rewritten, so a serving
/// ledger's prefixes stay as read while it appends past them. Refuses
/// (naming the file) anything that does not line up: a checkpoint that
/// does not verify, an index or journal shorter than its size, or no batch
/// end at its size.
pub fn snapshot_point<S: covenant_storage::Storage>(
    storage: &S,
    log: &note::NoteVerifier,
) -> Result<SnapshotPoint, OpenError> {
    let bad = OpenError::Snapshot;
    let checkpoints = storage.read(CHECKPOINTS)?.ok_or_else(|| bad(format!("{CHECKPOINTS} is missing")))?;
    let (last, checkpoints_len) = journal::last_record(&checkpoints);
    let note = last.ok_or_else(|| bad(format!("{CHECKPOINTS} holds no whole checkpoint")))?;
    let checkpoint = note::open_checkpoint(note, log)
        .map_err(|e| bad(format!("the last checkpoint in {CHECKPOINTS} does not verify: {e}")))?;
    let size = checkpoint.checkpoint().size;
    if size == 0 {
        return Ok(SnapshotPoint { checkpoint, journal_len: 0, checkpoints_len: checkpoints_len as u64, index_len: 0 });
    }
    let end = storage.read_range(JOURNAL_INDEX, (size - 1) * 8, 8)?;
    if end.len() != 8 {
        return Err(bad(format!("{JOURNAL_INDEX} is shorter than the checkpoint's {size} entries")));
    }
    // The index holds where each entry's record ends, with the batch end
    // that follows it: for the last entry of the checkpoint's batch, the
    // batch end of its size is the 12 bytes before.
    let record_end = journal::read_u64(&end);
    let batch_len = journal::BATCH_END_LEN as u64;
    let batch_end = match record_end.checked_sub(batch_len) {
        Some(at) => storage.read_range(JOURNAL, at, journal::BATCH_END_LEN)?,
        None => Vec::new(),
    };
    let mut want = Vec::new();
    journal::push_batch_end(&mut want, size);
    if batch_end != want {
        return Err(bad(format!(
            "{JOURNAL} has no batch end of size {size} where {JOURNAL_INDEX} says entry {} ends",
            size - 1
        )));
    }
    Ok(SnapshotPoint {
        checkpoint,
        journal_len: record_end,
        checkpoints_len: checkpoints_len as u64,
        index_len: size * 8,
    })
}
