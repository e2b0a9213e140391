//! The ledger's files: C2SP tlog-tiles (hash tiles and entry bundles of
//! headers) that any static file server can serve, the append-only journal
//! that holds every entry with its body, and the log of signed checkpoints;
//! with the batch writer, the readers and crash recovery.
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
//! Durability per batch: append the entries to the journal and fsync it
//! (with every directory that gained a name); then (the caller) sign the
//! checkpoint, append it to `log/checkpoints` and fsync that; only then
//! answer. Tiles, bundles, `log/index` and the published checkpoint are
//! derived from the journal: about once a second the full tiles written
//! since are fsynced and the watermark advanced; the rest is rebuilt after
//! a crash. (An fsync costs ~0.24 ms here and creating a durable file
//! ~0.9 ms; two fsyncs per batch instead of ten is what makes the ledger
//! fast. `docs/ledger.md`, "Durability", records this departure from the
//! original design.)
//!
//! Recovery never destroys what it cannot prove lies past a signed size. A
//! crash between the journal's fsync and the checkpoint's leaves at most one
//! unsigned batch past the last signed size (whole, with its batch end, or
//! a torn prefix of it); that tail is moved aside to
//! `log/journal.unsigned-<S>`, never deleted. The batch ends say exactly
//! where every batch ended, so anything more (a journal without a
//! checkpoint log, two batch ends past it, a signed size where no batch
//! ends, a watermark, published checkpoint or witness-cosigned size larger
//! than it) refuses to open, naming the file, sizes or witness. Nothing at
//! or below the signed size is ever rewritten. [`check`] runs the same
//! reading and writes nothing.
//!
//! Files of `public/` are replaced by a rename (`write_public`), so a
//! static file server never serves half of one; partial files are not
//! fsynced (a rename per file once a second is cheap, an fsync is not), and
//! recovery checks each against the journal and rewrites a torn one.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use covenant_core::ledger::{EntryHeader, SALT_LEN};
use covenant_core::merkle::{self, Hash, HashReader};
use covenant_core::note::{self, NoteVerifier, VerifiedCheckpoint};
use covenant_core::tiles::{self, TILE_HEIGHT, TILE_WIDTH, TileError};

use super::storage::{Storage, parent};

/// One journal record, borrowed from the bytes it was parsed from.
struct RecordRef<'a> {
    header: &'a [u8],
    salt: [u8; SALT_LEN],
    body: &'a [u8],
    /// The record's length in the journal.
    len: usize,
}

/// Parses one journal entry record at the start of `bytes`, or `None` if
/// `bytes` does not hold a whole one. A header is never empty, so a record
/// starting with a zero length is not an entry (it is a batch end).
fn parse_record(bytes: &[u8]) -> Option<RecordRef<'_>> {
    let hlen = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    if hlen == 0 {
        return None;
    }
    let header = bytes.get(4..4 + hlen)?;
    let at = 4 + hlen;
    let blen = u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
    let salt: [u8; SALT_LEN] = bytes.get(at + 4..at + 4 + SALT_LEN)?.try_into().ok()?;
    let end = at + 4 + SALT_LEN + blen;
    let body = bytes.get(at + 4 + SALT_LEN..end)?;
    Some(RecordRef { header, salt, body, len: end })
}

/// The length of a batch end: `u32` zero (where an entry's header length
/// would be), then the `u64` tree size the batch ends at.
const BATCH_END_LEN: usize = 12;

/// Appends a batch end saying the batch ends at tree size `size`.
fn push_batch_end(out: &mut Vec<u8>, size: u64) {
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&size.to_be_bytes());
}

/// What follows an entry record in `rest`: a batch end (its size, if
/// whole), nothing, or `Err(())` if `rest` is too short to tell and more of
/// the journal follows (`at_end`: `rest` runs to the journal's end, so
/// whatever is cut short there is the torn remains of a write).
fn parse_batch_end(rest: &[u8], at_end: bool) -> Result<Option<u64>, ()> {
    match rest.get(..4) {
        None if at_end => Ok(None),
        None => Err(()),
        Some(len) if len != [0u8; 4] => Ok(None),
        Some(_) => match rest.get(4..BATCH_END_LEN) {
            Some(size) => Ok(Some(read_u64(size))),
            None if at_end => Ok(None),
            None => Err(()),
        },
    }
}

/// Appends one journal record.
fn push_record(out: &mut Vec<u8>, r: &NewRecord) {
    out.extend_from_slice(&(r.header.len() as u32).to_be_bytes());
    out.extend_from_slice(&r.header);
    out.extend_from_slice(&(r.body.len() as u32).to_be_bytes());
    out.extend_from_slice(&r.salt);
    out.extend_from_slice(&r.body);
}

/// One entry read from the journal.
struct Scanned {
    header: Vec<u8>,
    body: StoredBody,
    /// Where its record ends, with the batch end that follows it, if any.
    end: u64,
    /// The tree size the batch end after it names, if a batch ends here.
    batch_end: Option<u64>,
}

/// Reads the journal front to back in large chunks.
struct JournalScanner<'a, S: Storage> {
    storage: &'a S,
    len: u64,
    chunk: Vec<u8>,
    chunk_start: u64,
    pos: u64,
}

impl<'a, S: Storage> JournalScanner<'a, S> {
    const CHUNK: usize = 4 << 20;

    fn new(storage: &'a S) -> io::Result<Self> {
        let len = storage.len(JOURNAL)?.unwrap_or(0);
        Ok(JournalScanner { storage, len, chunk: Vec::new(), chunk_start: 0, pos: 0 })
    }

    /// The next whole entry record, or `None` at the end (a torn last
    /// record counts as the end).
    fn next(&mut self) -> io::Result<Option<Scanned>> {
        loop {
            let from = usize::try_from(self.pos - self.chunk_start).unwrap_or(usize::MAX);
            let at_end = self.chunk_start + self.chunk.len() as u64 == self.len;
            if let Some(bytes) = self.chunk.get(from..)
                && let Some(r) = parse_record(bytes)
                && let Ok(batch_end) = parse_batch_end(bytes.get(r.len..).unwrap_or_default(), at_end)
            {
                let len = r.len + if batch_end.is_some() { BATCH_END_LEN } else { 0 };
                self.pos += len as u64;
                return Ok(Some(Scanned {
                    header: r.header.to_vec(),
                    body: StoredBody { salt: r.salt, body: r.body.to_vec() },
                    end: self.pos,
                    batch_end,
                }));
            }
            // Refill from `pos`: at least one chunk, more if one record is larger.
            let have = self.chunk_start + self.chunk.len() as u64 - self.pos;
            let remaining = self.len - self.pos;
            if remaining == have {
                return Ok(None);
            }
            let want = remaining.min((Self::CHUNK as u64).max(have * 2 + 1));
            self.chunk = self.storage.read_range(JOURNAL, self.pos, usize::try_from(want).unwrap_or(usize::MAX))?;
            self.chunk_start = self.pos;
        }
    }
}

/// The folder that may be published for static auditing: the checkpoint,
/// the hash tiles and the entry bundles (headers only), and nothing else.
pub const PUBLIC: &str = "public";
/// The published checkpoint (the newest cosigned one when witnesses are
/// configured), for static serving.
pub const CHECKPOINT: &str = "public/checkpoint";
const CHECKPOINT_TMP: &str = "public/checkpoint.tmp";
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

/// A stored body with its salt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBody {
    /// The salt.
    pub salt: [u8; SALT_LEN],
    /// The body bytes (an envelope, exactly as received).
    pub body: Vec<u8>,
}

/// One new entry of a batch, ready to write.
#[derive(Debug, Clone)]
pub struct NewRecord {
    /// Header bytes (the Merkle leaf).
    pub header: Vec<u8>,
    /// The salt.
    pub salt: [u8; SALT_LEN],
    /// The body.
    pub body: Vec<u8>,
}

/// The stored path of entry bundle `index` of `width` entries.
fn bundle_file(index: u64, width: u64) -> String {
    format!("{PUBLIC}/{}", tiles::bundle_path(index, width))
}

/// The stored path of hash tile `index` of level `level`, `width` hashes.
fn tile_file(level: u8, index: u64, width: u64) -> String {
    format!("{PUBLIC}/{}", tiles::tile_path(level, index, width))
}

fn bundle_base(index: u64) -> String {
    bundle_file(index, TILE_WIDTH)
}

fn tile_base(level: u8, index: u64) -> String {
    tile_file(level, index, TILE_WIDTH)
}

/// A tile with the hashes of every level inside it: `levels[k]` holds the
/// complete nodes `k` levels above the tile's base level.
#[derive(Debug)]
struct ExpandedTile {
    levels: Vec<Vec<Hash>>,
}

impl ExpandedTile {
    fn new(base: Vec<Hash>) -> Self {
        let mut levels = vec![base];
        for _ in 0..TILE_HEIGHT {
            let below = levels.last().map(Vec::as_slice).unwrap_or_default();
            let above: Vec<Hash> = below.chunks_exact(2).map(|p| merkle::node_hash(&p[0], &p[1])).collect();
            if above.is_empty() {
                break;
            }
            levels.push(above);
        }
        ExpandedTile { levels }
    }

    fn get(&self, sub: u8, index: usize) -> Option<Hash> {
        self.levels.get(usize::from(sub))?.get(index).copied()
    }
}

/// Reads entries, bodies and proofs. Shared by the sequencer and readers;
/// every read names the tree size it reads at, which must be signed (or
/// about to be, for the sequencer).
pub struct LedgerReader<S: Storage> {
    storage: Arc<S>,
    cache: Mutex<HashMap<(u8, u64, u64), Arc<ExpandedTile>>>,
    cache_limit: usize,
    /// The partial bundle and tiles at the latest written size. Partial files
    /// on disk are written lazily, for static serving; readers use this.
    edge: RwLock<Arc<EdgeView>>,
}

/// The right edge of the tree as readers see it, with each partial tile
/// expanded once, when first needed.
#[derive(Debug, Default)]
struct EdgeView {
    size: u64,
    bundle: Vec<u8>,
    tiles: Vec<Vec<Hash>>,
    expanded: Vec<OnceLock<Arc<ExpandedTile>>>,
}

impl EdgeView {
    fn new(size: u64, bundle: Vec<u8>, tiles: Vec<Vec<Hash>>) -> Self {
        let expanded = tiles.iter().map(|_| OnceLock::new()).collect();
        EdgeView { size, bundle, tiles, expanded }
    }

    /// The expanded partial tile of `level`. Its complete nodes are those of
    /// any narrower version of the same tile.
    fn expanded(&self, level: u8) -> Option<Arc<ExpandedTile>> {
        let hashes = self.tiles.get(usize::from(level))?;
        let cell = self.expanded.get(usize::from(level))?;
        Some(cell.get_or_init(|| Arc::new(ExpandedTile::new(hashes.clone()))).clone())
    }
}

impl<S: Storage> std::fmt::Debug for LedgerReader<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerReader").field("cache_limit", &self.cache_limit).finish_non_exhaustive()
    }
}

impl<S: Storage> LedgerReader<S> {
    /// A reader caching up to `cache_limit` expanded tiles (16 KiB each).
    pub fn new(storage: Arc<S>, cache_limit: usize) -> Self {
        LedgerReader {
            storage,
            cache: Mutex::new(HashMap::new()),
            cache_limit: cache_limit.max(16),
            edge: RwLock::new(Arc::new(EdgeView::default())),
        }
    }

    fn set_edge(&self, view: EdgeView) {
        if let Ok(mut e) = self.edge.write() {
            *e = Arc::new(view);
        }
    }

    fn edge(&self) -> Arc<EdgeView> {
        self.edge.read().map(|e| e.clone()).unwrap_or_default()
    }

    /// The storage underneath.
    pub fn storage(&self) -> &Arc<S> {
        &self.storage
    }

    /// The tile at tile level `level`, index `index`, width `width`. A
    /// partial tile superseded by the full one may have been removed: the
    /// full tile's first `width` hashes are the same.
    fn tile(&self, level: u8, index: u64, width: u64) -> Result<Arc<ExpandedTile>, ReadError> {
        let key = (level, index, width);
        if let Some(t) = self.cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(t);
        }
        // The partial tile at the edge comes from memory.
        let edge = self.edge();
        let count = tiles::nodes_at_level(edge.size, level * TILE_HEIGHT);
        if width < TILE_WIDTH
            && index == count / TILE_WIDTH
            && edge.tiles.get(usize::from(level)).is_some_and(|p| p.len() as u64 >= width)
            && let Some(tile) = edge.expanded(level)
        {
            return Ok(tile);
        }
        let path = tile_file(level, index, width);
        let (bytes, read_width, read_path) = match self.storage.read(&path)? {
            Some(b) => (b, width, path),
            None if width < TILE_WIDTH => {
                let full = tile_base(level, index);
                let b = self.storage.read(&full)?.ok_or_else(|| ReadError::Corrupt(format!("{path} is missing")))?;
                (b, TILE_WIDTH, full)
            }
            None => return Err(ReadError::Corrupt(format!("{path} is missing"))),
        };
        let mut hashes =
            tiles::decode_tile(&read_path, &bytes, read_width).map_err(|e| ReadError::Corrupt(e.to_string()))?;
        hashes.truncate(usize::try_from(width).unwrap_or(usize::MAX));
        let tile = Arc::new(ExpandedTile::new(hashes));
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= self.cache_limit {
                // Bounded memory: drop an arbitrary half.
                let drop: Vec<_> = cache.keys().take(self.cache_limit / 2).copied().collect();
                for k in drop {
                    cache.remove(&k);
                }
            }
            cache.insert(key, tile.clone());
        }
        Ok(tile)
    }

    /// The inclusion proof of entry `index` in the tree of `size` entries.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ReadError> {
        if index >= size {
            return Err(ReadError::OutOfRange { what: format!("entry {index}"), size });
        }
        merkle::inclusion_proof(&At { reader: self, size }, index, size).map_err(gen_error)
    }

    /// The consistency proof from `size1` to `size2` (`0 < size1 ≤ size2`).
    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, ReadError> {
        if size1 == 0 || size1 > size2 {
            return Err(ReadError::OutOfRange { what: format!("consistency from size {size1}"), size: size2 });
        }
        merkle::consistency_proof(&At { reader: self, size: size2 }, size1, size2).map_err(gen_error)
    }

    /// The root of the tree of `size` entries, from the stored tiles.
    pub fn root(&self, size: u64) -> Result<Hash, ReadError> {
        merkle::root(&At { reader: self, size }, size).map_err(gen_error)
    }

    /// The header bytes of entries `start..end` of a tree of `size` entries.
    pub fn headers(&self, start: u64, end: u64, size: u64) -> Result<Vec<Vec<u8>>, ReadError> {
        if start > end || end > size {
            return Err(ReadError::OutOfRange { what: format!("entries {start}..{end}"), size });
        }
        let mut out = Vec::new();
        let mut n = start / TILE_WIDTH;
        while n * TILE_WIDTH < end {
            let (bytes, path, count) = self.bundle(n, tiles::tile_width(size, n))?;
            let entries = tiles::decode_bundle(&path, &bytes, count).map_err(|e| ReadError::Corrupt(e.to_string()))?;
            for (i, e) in entries.into_iter().enumerate() {
                let index = n * TILE_WIDTH + i as u64;
                if index >= start && index < end {
                    out.push(e.to_vec());
                }
            }
            n += 1;
        }
        Ok(out)
    }

    /// Bundle `n` holding at least `width` entries: the edge's partial
    /// bundle from memory, else the full bundle, else a partial file.
    /// Returns its bytes, its path and how many entries it holds.
    fn bundle(&self, n: u64, width: u64) -> Result<(Vec<u8>, String, u64), ReadError> {
        let edge = self.edge();
        let edge_width = edge.size % TILE_WIDTH;
        if width < TILE_WIDTH && n == edge.size / TILE_WIDTH && edge_width >= width {
            return Ok((edge.bundle.clone(), bundle_file(n, edge_width), edge_width));
        }
        let full = bundle_base(n);
        if let Some(bytes) = self.storage.read(&full)? {
            return Ok((bytes, full, TILE_WIDTH));
        }
        let path = bundle_file(n, width);
        match self.storage.read(&path)? {
            Some(bytes) => Ok((bytes, path, width)),
            None => Err(ReadError::Corrupt(format!("{path} is missing"))),
        }
    }

    /// The body of entry `index`, checked against its header's digest (the
    /// header as served from the entry bundles).
    pub fn body(&self, index: u64, size: u64) -> Result<StoredBody, ReadError> {
        let header_bytes =
            self.headers(index, index + 1, size)?.pop().ok_or_else(|| ReadError::Corrupt("no header".into()))?;
        let header =
            EntryHeader::parse(&header_bytes).map_err(|e| ReadError::Corrupt(format!("entry {index}: {e}")))?;
        let start =
            if index == 0 { 0 } else { read_u64(&self.storage.read_range(JOURNAL_INDEX, (index - 1) * 8, 8)?) };
        let end = read_u64(&self.storage.read_range(JOURNAL_INDEX, index * 8, 8)?);
        let len = end
            .checked_sub(start)
            .ok_or_else(|| ReadError::Corrupt(format!("the journal index is corrupt at entry {index}")))?;
        let record = self.storage.read_range(JOURNAL, start, usize::try_from(len).unwrap_or(usize::MAX))?;
        let r = parse_record(&record)
            .ok_or_else(|| ReadError::Corrupt(format!("the journal record of entry {index} is malformed")))?;
        let body = StoredBody { salt: r.salt, body: r.body.to_vec() };
        header
            .check_body(&body.salt, &body.body)
            .map_err(|_| ReadError::Corrupt(format!("the body of entry {index} does not match its header's digest")))?;
        Ok(body)
    }

    /// Calls `f(index, header, header bytes, body)` for every entry below
    /// `size`, in order, reading the journal front to back; each body is
    /// checked against its header's digest.
    pub fn scan(
        &self,
        size: u64,
        mut f: impl FnMut(u64, &EntryHeader, &[u8], &StoredBody) -> Result<(), ReadError>,
    ) -> Result<(), ReadError> {
        let mut journal = JournalScanner::new(&*self.storage)?;
        for index in 0..size {
            let Scanned { header: header_bytes, body, .. } =
                journal.next()?.ok_or_else(|| ReadError::Corrupt(format!("the journal ends before entry {index}")))?;
            let header =
                EntryHeader::parse(&header_bytes).map_err(|e| ReadError::Corrupt(format!("entry {index}: {e}")))?;
            header.check_body(&body.salt, &body.body).map_err(|_| {
                ReadError::Corrupt(format!("the body of entry {index} does not match its header's digest"))
            })?;
            f(index, &header, &header_bytes, &body)?;
        }
        Ok(())
    }
}

fn read_u64(b: &[u8]) -> u64 {
    b.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

fn gen_error<E: std::fmt::Display>(e: merkle::ProofGenError<E>) -> ReadError {
    match e {
        merkle::ProofGenError::Store(e) => ReadError::Corrupt(e.to_string()),
        other => ReadError::Corrupt(other.to_string()),
    }
}

/// The reader bound to one tree size, as a [`HashReader`].
struct At<'a, S: Storage> {
    reader: &'a LedgerReader<S>,
    size: u64,
}

impl<S: Storage> HashReader for At<'_, S> {
    type Error = ReadError;
    fn stored_hash(&self, level: u8, index: u64) -> Result<Hash, ReadError> {
        let tile_level = level / TILE_HEIGHT;
        let sub = level % TILE_HEIGHT;
        let first = index.checked_shl(u32::from(sub)).ok_or_else(|| ReadError::Corrupt("index overflow".into()))?;
        let t = first / TILE_WIDTH;
        let count = tiles::nodes_at_level(self.size, tile_level * TILE_HEIGHT);
        let width = tiles::tile_width(count, t);
        let tile = self.reader.tile(tile_level, t, width)?;
        let pos = usize::try_from((first % TILE_WIDTH) >> sub).unwrap_or(usize::MAX);
        tile.get(sub, pos).ok_or_else(|| ReadError::Corrupt(format!("no hash at level {level} index {index}")))
    }
}

/// The right edge of the tree: the partial bundle and the partial tile of
/// each tile level, plus where the journal ends. Owned by the writer.
#[derive(Debug, Clone, Default)]
struct Edge {
    size: u64,
    bundle: Vec<u8>,
    tiles: Vec<Vec<Hash>>,
    journal_end: u64,
    /// During recovery: every level-8 node (full level-0 tile root) pushed.
    level8: Option<Vec<Hash>>,
}

impl Edge {
    /// Adds one entry's header; full bundles and tiles it completes go to `full`.
    fn push(&mut self, header: &[u8], full: &mut dyn FnMut(String, Vec<u8>)) -> io::Result<()> {
        let bundle_index = self.size / TILE_WIDTH;
        tiles::push_bundle_entry(&mut self.bundle, header)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "entry header over 65,535 bytes"))?;
        self.size += 1;
        if self.size.is_multiple_of(TILE_WIDTH) {
            full(bundle_base(bundle_index), std::mem::take(&mut self.bundle));
        }
        self.push_node(0, merkle::leaf_hash(header), full);
        Ok(())
    }

    fn push_node(&mut self, level: u8, hash: Hash, full: &mut dyn FnMut(String, Vec<u8>)) {
        let l = usize::from(level);
        if self.tiles.len() <= l {
            self.tiles.resize(l + 1, Vec::new());
        }
        if level == 1
            && let Some(collected) = &mut self.level8
        {
            collected.push(hash);
        }
        let Some(tile) = self.tiles.get_mut(l) else { return };
        tile.push(hash);
        if tile.len() as u64 == TILE_WIDTH {
            let hashes = std::mem::take(tile);
            // This tile's index: the complete nodes at this level, less one tile.
            let index = tiles::nodes_at_level(self.size, level * TILE_HEIGHT) / TILE_WIDTH - 1;
            let root = ExpandedTile::new(hashes.clone()).get(TILE_HEIGHT, 0).unwrap_or(merkle::EMPTY_ROOT);
            full(tile_base(level, index), tiles::encode_tile(&hashes));
            if level + 1 < MAX_TILE_LEVELS {
                self.push_node(level + 1, root, full);
            }
        }
    }

    /// The partial bundle and partial tiles at the current size, by path.
    fn partials(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let width = self.size % TILE_WIDTH;
        if width > 0 {
            out.push((bundle_file(self.size / TILE_WIDTH, width), self.bundle.clone()));
        }
        for (level, partial) in self.tiles.iter().enumerate() {
            if !partial.is_empty() {
                let level = level as u8;
                let count = tiles::nodes_at_level(self.size, level * TILE_HEIGHT);
                out.push((tile_file(level, count / TILE_WIDTH, partial.len() as u64), tiles::encode_tile(partial)));
            }
        }
        out
    }
}

/// The newest cosigned checkpoint, handed from the witness task to the
/// writer, which publishes it once its tiles are written.
#[derive(Debug, Default)]
pub struct CosignedSlot {
    inner: Mutex<CosignedState>,
}

#[derive(Debug, Default)]
struct CosignedState {
    /// Witnesses are configured: publish only cosigned checkpoints.
    expected: bool,
    /// The newest cosigned note and its size.
    newest: Option<(u64, String)>,
}

impl CosignedSlot {
    /// From now on, only cosigned checkpoints are published (witnesses are
    /// configured); until the first arrives, the published one stays.
    pub fn expect_cosignatures(&self) {
        if let Ok(mut s) = self.inner.lock() {
            s.expected = true;
        }
    }

    /// Offers a cosigned note of `size` entries; kept if it is newer (a
    /// larger size, or the same size with more cosignatures) than the one
    /// held. Returns whether it was kept.
    pub fn offer(&self, size: u64, note: String) -> bool {
        let Ok(mut s) = self.inner.lock() else { return false };
        if supersedes(&(size, note.as_str()), s.newest.as_ref().map(|(n, t)| (*n, t.as_str()))) {
            s.newest = Some((size, note));
            return true;
        }
        false
    }

    /// `None` when no witness is configured; else the newest cosigned note.
    fn wanted(&self) -> Option<Option<(u64, String)>> {
        let s = self.inner.lock().ok()?;
        s.expected.then(|| s.newest.clone())
    }
}

/// Whether note `new` should replace `old`: never a smaller tree, and at
/// the same size only a note with more cosignature lines (a cosigned note
/// is the bare note with lines appended).
fn supersedes(new: &(u64, &str), old: Option<(u64, &str)>) -> bool {
    match old {
        None => true,
        Some((size, text)) => new.0 > size || (new.0 == size && new.1.len() > text.len()),
    }
}

/// Writes batches. Owned by the sequencer alone.
pub struct LedgerWriter<S: Storage> {
    storage: Arc<S>,
    reader: Arc<LedgerReader<S>>,
    edge: Edge,
    /// Directories and long-lived files whose names are known to be durable
    /// (their parent directory was fsynced after they appeared).
    named: BTreeSet<String>,
    /// Full tiles and bundles written but not yet fsynced.
    pending: Vec<String>,
    /// Partial-tile folders superseded by a full tile, removed once the
    /// published checkpoint no longer reads them.
    stale: BTreeSet<String>,
    /// The latest signed checkpoint (size, note).
    note: Option<(u64, String)>,
    /// The newest cosigned checkpoint, from the witness task.
    cosigned: Arc<CosignedSlot>,
    /// What `public/checkpoint` holds (size, note), if known.
    published: Option<(u64, String)>,
    last_flush: Instant,
    /// The size at the last flush.
    flushed_size: u64,
}

impl<S: Storage> std::fmt::Debug for LedgerWriter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerWriter").field("size", &self.edge.size).finish_non_exhaustive()
    }
}

/// The durability watermark of derived files: every full tile and bundle
/// for sizes up to the last value here was fsynced.
const DERIVED: &str = "log/derived";

impl<S: Storage> LedgerWriter<S> {
    /// The number of entries written (signed or about to be).
    pub fn size(&self) -> u64 {
        self.edge.size
    }

    /// The slot the witness task hands cosigned checkpoints through.
    pub fn cosigned(&self) -> Arc<CosignedSlot> {
        self.cosigned.clone()
    }

    /// Writes a batch and makes it durable in the journal; the caller then
    /// signs and writes the checkpoint. The full tiles and bundles the batch
    /// completes are written for readers and made durable by the next
    /// [`LedgerWriter::flush`]. On error the writer must not be used again:
    /// the ledger has to be reopened, which sets the partial batch aside.
    pub fn write_batch(&mut self, records: &[NewRecord]) -> io::Result<u64> {
        if records.is_empty() {
            return Ok(self.edge.size);
        }
        let mut journal = Vec::new();
        let mut index = Vec::with_capacity(records.len() * 8);
        let mut full: Vec<(String, Vec<u8>)> = Vec::new();
        let end = self.edge.size + records.len() as u64;
        for (i, r) in records.iter().enumerate() {
            push_record(&mut journal, r);
            // The batch end is written with the batch, in the same append
            // and fsync, so that recovery knows exactly where every batch
            // ends; the last entry's record in `log/index` includes it.
            if i + 1 == records.len() {
                push_batch_end(&mut journal, end);
            }
            index.extend_from_slice(&(self.edge.journal_end + journal.len() as u64).to_be_bytes());
            self.edge.push(&r.header, &mut |path, bytes| full.push((path, bytes)))?;
        }
        self.edge.journal_end += journal.len() as u64;
        self.storage.append(JOURNAL, &journal)?;
        for (path, bytes) in &full {
            self.storage.write(path, bytes)?;
        }
        self.storage.append(JOURNAL_INDEX, &index)?;
        self.storage.sync(JOURNAL)?;
        self.make_names_durable(&[JOURNAL.to_owned()])?;
        self.pending.extend(full.into_iter().map(|(path, _)| path));
        self.reader.set_edge(self.edge.view());
        Ok(self.edge.size)
    }

    /// Appends `note` (the checkpoint of the current size) to the checkpoint
    /// log and fsyncs it; when this returns, the checkpoint is durable.
    pub fn write_checkpoint(&mut self, note: &str) -> io::Result<()> {
        let mut frame = (note.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(note.as_bytes());
        self.storage.append(CHECKPOINTS, &frame)?;
        self.storage.sync(CHECKPOINTS)?;
        self.make_names_durable(&[CHECKPOINTS.to_owned()])?;
        self.note = Some((self.edge.size, note.to_owned()));
        Ok(())
    }

    /// Whether the derived files are behind: entries written, or a newer
    /// checkpoint to publish, since the last flush.
    pub fn dirty(&self) -> bool {
        self.flushed_size != self.edge.size || self.to_publish().is_some()
    }

    /// Whether `interval` has passed since the last flush.
    pub fn flush_due(&self, interval: Duration) -> bool {
        self.last_flush.elapsed() >= interval
    }

    /// The checkpoint `public/checkpoint` should hold next, if it changes:
    /// with witnesses, the newest cosigned one; without, the latest signed
    /// one. Never a smaller tree than the one published, and never a tree
    /// larger than the tiles written.
    fn to_publish(&self) -> Option<(u64, String)> {
        let candidate = match self.cosigned.wanted() {
            Some(cosigned) => cosigned?,
            None => self.note.clone()?,
        };
        let newer = supersedes(&(candidate.0, &candidate.1), self.published.as_ref().map(|(s, t)| (*s, t.as_str())));
        (newer && candidate.0 <= self.edge.size).then_some(candidate)
    }

    /// Publishes the derived files and makes the full ones durable: writes
    /// the partial tiles and bundle and the published checkpoint (with the
    /// partial files of its size, when it is older than the edge) for static
    /// serving; fsyncs the full tiles and bundles written since the last
    /// flush and their directories; records the size they cover in the
    /// durability watermark; and removes the partial files they supersede
    /// that the published checkpoint does not read. Creating and renaming
    /// files makes every later fsync slower on ext4, so this runs about
    /// once a second rather than once a batch.
    pub fn flush(&mut self) -> io::Result<()> {
        self.last_flush = Instant::now();
        self.flushed_size = self.edge.size;
        for (path, bytes) in self.edge.partials() {
            write_public(&*self.storage, &path, &bytes)?;
        }
        if let Some((size, note)) = self.to_publish() {
            // The tiles of an older tree: its partial files may never have
            // been written, or removed since. If they cannot be read, the
            // published checkpoint stays as it is (a reader's failure is
            // not a reason to stop the ledger).
            let older =
                if size < self.edge.size { self.reader.partials_at(size, self.edge.size) } else { Ok(Vec::new()) };
            match older {
                Ok(older) => {
                    for (path, bytes) in older {
                        write_public(&*self.storage, &path, &bytes)?;
                    }
                    self.storage.write(CHECKPOINT_TMP, note.as_bytes())?;
                    self.storage.rename(CHECKPOINT_TMP, CHECKPOINT)?;
                    self.published = Some((size, note));
                }
                Err(e) => tracing::warn!(size, "the checkpoint is not published: its tiles cannot be read: {e}"),
            }
        }
        let pending = std::mem::take(&mut self.pending);
        for path in &pending {
            self.storage.sync(path)?;
        }
        self.make_names_durable(&pending)?;
        self.storage.append(DERIVED, &self.edge.size.to_be_bytes())?;
        self.storage.sync(DERIVED)?;
        self.make_names_durable(&[DERIVED.to_owned()])?;
        self.stale.extend(pending.into_iter().map(|base| format!("{base}.p")));
        let read_by_published: BTreeSet<String> = self
            .published
            .as_ref()
            .map(|(size, _)| partial_paths(*size).into_iter().map(|p| parent(&p).to_owned()).collect())
            .unwrap_or_default();
        let stale = std::mem::take(&mut self.stale);
        for dir in stale {
            if read_by_published.contains(&dir) {
                self.stale.insert(dir);
                continue;
            }
            for name in self.storage.list(&dir)? {
                self.storage.remove(&format!("{dir}/{name}"))?;
            }
            self.storage.remove(&dir)?;
        }
        Ok(())
    }

    /// Fsyncs the directories that hold `paths` and every ancestor not yet
    /// known to be durably named, deepest first. The long-lived files are
    /// remembered once named; one-off files (full tiles) are not, but their
    /// directories are.
    fn make_names_durable(&mut self, paths: &[String]) -> io::Result<()> {
        let mut dirs: BTreeSet<String> = BTreeSet::new();
        let mut learned = Vec::new();
        for path in paths {
            let mut p = path.clone();
            while !self.named.contains(&p) {
                let dir = parent(&p).to_owned();
                dirs.insert(dir.clone());
                if p != *path || p == JOURNAL || p == CHECKPOINTS || p == DERIVED {
                    learned.push(p.clone());
                }
                if dir.is_empty() {
                    break;
                }
                p = dir;
            }
        }
        // A path sorts after its ancestors: reverse order is deepest first.
        for dir in dirs.iter().rev() {
            self.storage.sync_dir(dir)?;
        }
        self.named.extend(learned);
        Ok(())
    }
}

/// The paths of the partial bundle and tiles a tree of `size` entries reads.
fn partial_paths(size: u64) -> Vec<String> {
    let mut out = Vec::new();
    if !size.is_multiple_of(TILE_WIDTH) {
        out.push(bundle_file(size / TILE_WIDTH, size % TILE_WIDTH));
    }
    for level in 0..MAX_TILE_LEVELS {
        let count = tiles::nodes_at_level(size, level * TILE_HEIGHT);
        if count == 0 {
            break;
        }
        if !count.is_multiple_of(TILE_WIDTH) {
            out.push(tile_file(level, count / TILE_WIDTH, count % TILE_WIDTH));
        }
    }
    out
}

impl<S: Storage> LedgerReader<S> {
    /// The partial bundle and tiles of the tree of `size` entries, read from
    /// the tree of `current` entries (`size ≤ current`), by path.
    fn partials_at(&self, size: u64, current: u64) -> Result<Vec<(String, Vec<u8>)>, ReadError> {
        let mut out = Vec::new();
        let width = size % TILE_WIDTH;
        if width > 0 {
            let mut bundle = Vec::new();
            for header in self.headers(size - width, size, current)? {
                tiles::push_bundle_entry(&mut bundle, &header)
                    .ok_or_else(|| ReadError::Corrupt("an entry header is over 65,535 bytes".into()))?;
            }
            out.push((bundle_file(size / TILE_WIDTH, width), bundle));
        }
        for level in 0..MAX_TILE_LEVELS {
            let count = tiles::nodes_at_level(size, level * TILE_HEIGHT);
            if count == 0 {
                break;
            }
            let width = count % TILE_WIDTH;
            if width > 0 {
                let tile = self.tile(level, count / TILE_WIDTH, width)?;
                let hashes = tile
                    .levels
                    .first()
                    .and_then(|l| l.get(..usize::try_from(width).unwrap_or(usize::MAX)))
                    .ok_or_else(|| ReadError::Corrupt(format!("tile level {level} is short")))?;
                out.push((tile_file(level, count / TILE_WIDTH, width), tiles::encode_tile(hashes)));
            }
        }
        Ok(out)
    }
}

impl Edge {
    fn view(&self) -> EdgeView {
        EdgeView::new(self.size, self.bundle.clone(), self.tiles.clone())
    }
}

/// A ledger opened from storage: its writer, reader and last checkpoint.
pub struct Recovered<S: Storage> {
    /// The writer, at the signed size.
    pub writer: LedgerWriter<S>,
    /// The reader.
    pub reader: Arc<LedgerReader<S>>,
    /// The last signed checkpoint, if any (none for a new ledger).
    pub checkpoint: Option<VerifiedCheckpoint>,
    /// Where an unsigned tail of the journal was set aside, if there was one.
    pub set_aside: Option<String>,
}

impl<S: Storage> std::fmt::Debug for Recovered<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovered").field("writer", &self.writer).finish_non_exhaustive()
    }
}

/// What a dry run of recovery found (`covenant-server check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The signed size: every entry below it checked.
    pub size: u64,
    /// Whole entries past the signed size (at most one batch, which a
    /// start would set aside).
    pub unsigned_entries: u64,
    /// Bytes past the signed size in the journal (those entries and any
    /// torn record).
    pub unsigned_bytes: u64,
}

/// The most entries an unsigned tail may hold, what the witnesses are known
/// to have cosigned, and how recovery treats the files.
#[derive(Debug, Clone)]
pub struct RecoveryLimits {
    /// Entries one batch may hold: a crash between the journal's fsync and
    /// the checkpoint's leaves at most one unsigned batch.
    pub max_tail: u64,
    /// Expanded tiles cached by the reader.
    pub cache_limit: usize,
    /// Trees the witnesses are recorded to have cosigned: recovery never
    /// opens a ledger smaller than one, or holding another tree at its size.
    pub witnessed: Vec<Witnessed>,
}

/// A tree a witness is recorded to have cosigned, as evidence for recovery
/// (the development witness's state file, for one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witnessed {
    /// Where it is recorded, named in a refusal.
    pub source: String,
    /// The tree size cosigned.
    pub size: u64,
    /// Its root, when recorded (a witness asked at start names only its size).
    pub root: Option<Hash>,
}

/// What recovery found, before it changes anything.
struct Plan {
    checkpoint: Option<VerifiedCheckpoint>,
    size: u64,
    /// Where the checkpoint log's whole records end, and its length.
    checkpoints_end: u64,
    checkpoints_len: u64,
    /// The durability watermark, where its whole values end, its length.
    derived_end: u64,
    derived_len: u64,
    /// The published checkpoint, if it verifies (size, note).
    published: Option<(u64, String)>,
    /// Where the journal's signed entries end, and its length.
    journal_len: u64,
    /// Whole entries past the signed size.
    tail_entries: u64,
    edge: Edge,
    ends: Vec<u8>,
    /// Full files above the watermark to rewrite, and to fsync at the flush.
    rewrite: Vec<(String, Vec<u8>)>,
    pending: Vec<String>,
}

/// The first thing found wrong with a signed entry while reading the
/// journal; which file is to blame is decided by whether the journal
/// reproduces the signed root.
enum Suspect {
    /// Its header differs from the durable entry bundle.
    DiffersFrom(String),
    /// Its body does not match its header's digest.
    Body,
    /// The state fold refused it.
    Refused(String),
}

/// Opens the ledger in `storage`: checks, without changing anything, that
/// the stored files are what a crash can leave (see [`check`]), refusing to
/// open, naming the file or entry, if not; then sets aside an unsigned
/// tail (at most one batch past the last signed checkpoint, kept in
/// `log/journal.unsigned-<size>`), and rebuilds the derived files that a
/// crash may have lost. Every entry is handed to `replay` in order.
pub fn recover<S: Storage>(
    storage: Arc<S>,
    log: &NoteVerifier,
    limits: RecoveryLimits,
    replay: impl FnMut(u64, &EntryHeader, &StoredBody) -> Result<(), String>,
) -> Result<Recovered<S>, OpenError> {
    storage.lock_exclusive()?;
    let plan = analyse(&*storage, log, &limits, replay).inspect_err(|e| {
        // Every refusal is the operator's to look into: never routine.
        tracing::error!(cause = %e, "the ledger refuses to open; every file is kept as it was");
    })?;
    storage.remove(CHECKPOINT_TMP)?;
    // A torn last checkpoint record: a crash while appending it. Kept.
    if plan.checkpoints_len > plan.checkpoints_end {
        let to = set_aside(&*storage, CHECKPOINTS, plan.checkpoints_end, &format!("{CHECKPOINTS}.torn-{}", plan.size))?;
        tracing::warn!(file = %to, "a torn record at the end of {CHECKPOINTS} was moved aside");
    }
    if plan.derived_len > plan.derived_end {
        // A torn watermark value carries no information: it was never fsynced.
        storage.truncate(DERIVED, plan.derived_end)?;
        storage.sync(DERIVED)?;
    }
    discard_beyond(&*storage, plan.size)?;
    // The unsigned tail: moved aside, never deleted.
    let set_aside_to = if plan.journal_len > plan.edge.journal_end {
        let to = set_aside(&*storage, JOURNAL, plan.edge.journal_end, &format!("{JOURNAL}.unsigned-{}", plan.size))?;
        // What a crash between the journal's fsync and the checkpoint's
        // leaves: expected, but named, with where its bytes went.
        tracing::warn!(
            file = %to,
            entries = plan.tail_entries,
            bytes = plan.journal_len - plan.edge.journal_end,
            signed = plan.size,
            "{} past the last signed checkpoint of size {} in {JOURNAL} (never acknowledged, from a crash before \
             their checkpoint was durable) were moved aside to {to}",
            match plan.tail_entries {
                0 => "torn bytes".to_owned(),
                1 => format!("entry {}", plan.size),
                n => format!("{n} entries {}..{}", plan.size, plan.size + n - 1),
            },
            plan.size,
        );
        Some(to)
    } else {
        None
    };
    if storage.read(JOURNAL_INDEX)?.as_deref() != Some(plan.ends.as_slice()) {
        storage.write(JOURNAL_INDEX, &plan.ends)?;
    }
    for (path, bytes) in &plan.rewrite {
        write_public(&*storage, path, bytes)?;
    }
    // Partial files are written without an fsync: a crash can leave one
    // torn under its name (ext4 keeps a rename whose data it lost). Each
    // is checked against the journal and rewritten before anyone reads it.
    let repaired = repair_partials(&*storage, &plan.edge)?;
    if repaired > 0 {
        tracing::info!(repaired, "partial tiles or bundles left torn by a crash were rewritten from log/journal");
    }
    let reader = Arc::new(LedgerReader::new(storage.clone(), limits.cache_limit));
    reader.set_edge(plan.edge.view());
    let checkpoint = plan.checkpoint;
    let mut writer = LedgerWriter {
        storage,
        reader: reader.clone(),
        edge: plan.edge,
        named: BTreeSet::new(),
        pending: plan.pending,
        stale: BTreeSet::new(),
        note: checkpoint.as_ref().map(|c| (c.checkpoint().size, c.note().to_text())),
        cosigned: Arc::default(),
        published: plan.published,
        last_flush: Instant::now(),
        flushed_size: 0,
    };
    // Everything derived is now written; make it durable before serving.
    writer.flush()?;
    Ok(Recovered { writer, reader, checkpoint, set_aside: set_aside_to })
}

/// Checks the stored ledger with exactly the reading [`recover`] does, and
/// writes nothing (`covenant-server check`): the last whole checkpoint of
/// the checkpoint log verifies; no durable file (the watermark, the
/// published checkpoint) shows a larger signed size; the journal holds
/// every signed entry, each record well formed, each body matching its
/// header, each entry folded by `replay`, and reproduces the signed root;
/// every durable full tile and bundle equals what the journal implies; and
/// past the signed size the journal holds at most one batch of
/// `max_tail` entries. Fails wherever opening would refuse, naming the file
/// or entry.
pub fn check<S: Storage>(
    storage: &S,
    log: &NoteVerifier,
    limits: &RecoveryLimits,
    replay: impl FnMut(u64, &EntryHeader, &StoredBody) -> Result<(), String>,
) -> Result<Checked, OpenError> {
    let plan = analyse(storage, log, limits, replay)?;
    Ok(Checked {
        size: plan.size,
        unsigned_entries: plan.tail_entries,
        unsigned_bytes: plan.journal_len - plan.edge.journal_end,
    })
}

/// The read-only half of recovery (see [`check`]).
fn analyse<S: Storage>(
    storage: &S,
    log: &NoteVerifier,
    limits: &RecoveryLimits,
    mut replay: impl FnMut(u64, &EntryHeader, &StoredBody) -> Result<(), String>,
) -> Result<Plan, OpenError> {
    let checkpoints = storage.read(CHECKPOINTS)?.unwrap_or_default();
    let (last, checkpoints_end) = last_record(&checkpoints);
    let checkpoint = last.map(|note_bytes| note::open_checkpoint(note_bytes, log)).transpose()?;
    let (size, root) =
        checkpoint.as_ref().map_or((0, merkle::EMPTY_ROOT), |c| (c.checkpoint().size, c.checkpoint().root_hash));
    let journal_len = storage.len(JOURNAL)?.unwrap_or(0);
    // The first checkpoint (size 0) is durable before anything is written to
    // the journal: a journal without one lost its checkpoint log.
    if checkpoint.is_none() && journal_len > 0 {
        return Err(OpenError::NoCheckpoint { journal_bytes: journal_len });
    }
    // Tiles are written only for entries under a signed checkpoint: tiles
    // without any checkpoint mean the ledger's files were emptied, and
    // opening would delete the last copy of its headers.
    if checkpoint.is_none() {
        let tiles = storage.list(&format!("{PUBLIC}/tile"))?.len();
        if tiles > 0 {
            return Err(OpenError::NoCheckpointButTiles { tiles });
        }
    }
    // The derived files are written from signed checkpoints only: one that
    // shows a larger size than the checkpoint log proves the log was cut.
    let derived = storage.read(DERIVED)?.unwrap_or_default();
    let derived_end = derived.len() / 8 * 8;
    let watermark = derived.get(derived_end.saturating_sub(8)..derived_end).map(read_u64).unwrap_or(0);
    if watermark > size {
        return Err(OpenError::AheadOfCheckpointLog { file: DERIVED, size: watermark, signed: size });
    }
    let published = published_checkpoint(storage, log)?;
    if let Some(p) = &published {
        let (psize, proot) = (p.checkpoint().size, p.checkpoint().root_hash);
        if psize > size {
            return Err(OpenError::AheadOfCheckpointLog { file: CHECKPOINT, size: psize, signed: size });
        }
        if psize == size && proot != root {
            return Err(OpenError::OtherRoot { file: CHECKPOINT, size });
        }
    }
    // A witness that cosigned a larger tree proves the same, and is outside
    // this folder.
    let (max_tail, witnessed) = (limits.max_tail, limits.witnessed.as_slice());
    if let Some(w) = witnessed.iter().filter(|w| w.size > size).max_by_key(|w| w.size) {
        return Err(OpenError::BehindWitness { evidence: w.source.clone(), size: w.size, signed: size });
    }
    let durable = watermark;

    // One pass over the journal: each record checked before it is folded,
    // the edge, and every full bundle and tile it implies compared with the
    // stored one. Those made durable (completed at or below the watermark)
    // must match; later ones may be missing or torn after a crash and are
    // rewritten.
    let mut edge = Edge { level8: Some(Vec::new()), ..Edge::default() };
    let mut ends = Vec::with_capacity(usize::try_from(size).unwrap_or(0).saturating_mul(8));
    let mut first_difference: Option<TileError> = None;
    let mut suspect: Option<(u64, Suspect)> = None;
    let mut durable_bundle: Option<(String, Vec<Vec<u8>>)> = None;
    let mut rewrite: Vec<(String, Vec<u8>)> = Vec::new();
    let mut pending = Vec::new();
    let mut journal = JournalScanner::new(storage)?;
    // The tree's root at each size a witness is recorded to have cosigned.
    let mut witnessed_roots: Vec<(&Witnessed, Hash)> = Vec::new();
    for index in 0..size {
        let Some(Scanned { header: header_bytes, body, end, batch_end }) = journal.next()? else {
            return Err(OpenError::MissingEntries { held: index, size });
        };
        // Every batch ends with the size it ends at, and a checkpoint is
        // signed only at the end of a batch.
        match batch_end {
            Some(said) if said != index + 1 => {
                return Err(OpenError::CorruptRecord {
                    index,
                    reason: format!("the batch end after it names size {said}, not {}", index + 1),
                });
            }
            None if index + 1 == size => return Err(OpenError::NoBatchEnd { size }),
            _ => {}
        }
        let header = EntryHeader::parse(&header_bytes)
            .map_err(|e| OpenError::CorruptRecord { index, reason: format!("its header does not parse: {e}") })?;
        // The durable bundle holding this entry, read when its tile starts.
        if index.is_multiple_of(TILE_WIDTH) {
            let n = index / TILE_WIDTH;
            durable_bundle = None;
            if (n + 1) * TILE_WIDTH <= durable {
                let path = bundle_base(n);
                if let Some(bytes) = storage.read(&path)?
                    && let Ok(entries) = tiles::decode_bundle(&path, &bytes, TILE_WIDTH)
                {
                    durable_bundle = Some((path, entries.into_iter().map(<[u8]>::to_vec).collect()));
                }
            }
        }
        if suspect.is_none() {
            let position = usize::try_from(index % TILE_WIDTH).unwrap_or(usize::MAX);
            if let Some((path, entries)) = &durable_bundle
                && entries.get(position).is_some_and(|stored| *stored != header_bytes)
            {
                suspect = Some((index, Suspect::DiffersFrom(path.clone())));
            } else if header.check_body(&body.salt, &body.body).is_err() {
                suspect = Some((index, Suspect::Body));
            } else if let Err(reason) = replay(index, &header, &body) {
                suspect = Some((index, Suspect::Refused(reason)));
            }
            // After the first suspect nothing more is folded: the open
            // fails either way, and which file is to blame is decided below.
        }
        let mut full = Vec::new();
        edge.push(&header_bytes, &mut |path, bytes| full.push((path, bytes)))?;
        for (path, ours) in full {
            let stored = storage.read(&path)?;
            let same = stored.as_deref() == Some(ours.as_slice());
            if index < durable {
                if !same && first_difference.is_none() {
                    first_difference = Some(describe_difference(&path, stored.as_deref(), &ours, index));
                }
            } else {
                pending.push(path.clone());
                if !same {
                    rewrite.push((path, ours));
                }
            }
        }
        ends.extend_from_slice(&end.to_be_bytes());
        edge.journal_end = end;
        for w in witnessed.iter().filter(|w| w.size == index + 1 && w.root.is_some()) {
            let last_leaves = if w.size.is_multiple_of(TILE_WIDTH) {
                Vec::new()
            } else {
                edge.tiles.first().cloned().unwrap_or_default()
            };
            let level8 = edge.level8.as_deref().unwrap_or_default();
            if let Some(root) = tiles::root_from_parts(w.size, level8, &last_leaves) {
                witnessed_roots.push((w, root));
            }
        }
    }
    // The journal must reproduce the signed root. If it does, a durable file
    // that differs from what the journal implies is corrupt; if it does not,
    // the journal is, at the first entry found wrong.
    let level8 = edge.level8.take().unwrap_or_default();
    let last_leaves =
        if size.is_multiple_of(TILE_WIDTH) { Vec::new() } else { edge.tiles.first().cloned().unwrap_or_default() };
    let reproduces = size == 0 || tiles::root_from_parts(size, &level8, &last_leaves) == Some(root);
    if !reproduces {
        let signed = format!("log/journal does not reproduce the signed checkpoint of size {size}");
        return Err(match (suspect, first_difference) {
            (Some((index, Suspect::DiffersFrom(bundle))), _) => {
                OpenError::CorruptRecord { index, reason: format!("its header differs from {bundle}, and {signed}") }
            }
            (Some((index, Suspect::Body)), _) => OpenError::CorruptRecord {
                index,
                reason: format!("its body does not match its header's digest, and {signed}"),
            },
            (Some((index, Suspect::Refused(why))), _) => {
                OpenError::CorruptRecord { index, reason: format!("{signed}, and the fold refuses this entry ({why})") }
            }
            (None, Some(TileError::CorruptEntry { index, bundle, .. })) => {
                OpenError::CorruptRecord { index, reason: format!("its header differs from {bundle}, and {signed}") }
            }
            (None, _) => OpenError::Unreproduced { size },
        });
    }
    match suspect {
        Some((index, Suspect::Body)) => {
            return Err(OpenError::BodyMismatch { index });
        }
        Some((index, Suspect::Refused(reason))) => return Err(OpenError::Replay { index, reason }),
        // The journal is right, so the durable bundle is corrupt: reported
        // below, as every durable file that differs.
        Some((_, Suspect::DiffersFrom(_))) | None => {}
    }
    if let Some(difference) = first_difference {
        return Err(OpenError::Tiles(difference));
    }
    // The journal reproduces the signed tree: it must also hold the tree a
    // witness cosigned at a smaller or equal size, else it is a fork of it.
    for (w, root) in witnessed_roots {
        if w.root.is_some_and(|cosigned| cosigned != root) {
            return Err(OpenError::WitnessedOtherRoot { evidence: w.source.clone(), size: w.size });
        }
    }

    // Past the signed size: at most the one batch a crash between the
    // journal's fsync and the checkpoint's leaves (whole, with its batch
    // end, or a torn prefix of it; its entries share one ledger time), then
    // perhaps a torn record. The batch ends say exactly where each batch
    // ended, so batches cut from the checkpoint log are counted, not
    // guessed from their times.
    let mut tail_entries = 0u64;
    let mut tail_time = None;
    let mut times_differ = false;
    let mut batch_ends: Vec<u64> = Vec::new();
    let mut after_batch_end = 0u64;
    let mut wrong_end = None;
    while let Some(Scanned { header: header_bytes, batch_end, .. }) = journal.next()? {
        // A record whose header does not parse is the torn remains of a write.
        let Ok(header) = EntryHeader::parse(&header_bytes) else { break };
        tail_entries += 1;
        if !batch_ends.is_empty() {
            after_batch_end += 1;
        }
        match &tail_time {
            None => tail_time = Some(header.time),
            Some(t) => times_differ |= *t != header.time,
        }
        match batch_end {
            Some(said) if said == size + tail_entries => batch_ends.push(said),
            // Zeros where an append was cut short (a file system may keep
            // the length and lose the data): torn remains, nothing past
            // them is whole.
            Some(0) => break,
            Some(said) => {
                wrong_end = Some((said, size + tail_entries));
                break;
            }
            None => {}
        }
    }
    let reason = if let Some((said, expected)) = wrong_end {
        Some(format!("a batch end names size {said} where {expected} was due, so the journal was altered"))
    } else if batch_ends.len() > 1 {
        Some(format!("more than one batch: {} batches end at sizes {}", batch_ends.len(), list_sizes(&batch_ends)))
    } else if after_batch_end > 0 {
        Some(format!(
            "more than one batch: one ends at size {}, and {after_batch_end} more entries follow it",
            list_sizes(&batch_ends)
        ))
    } else if times_differ {
        Some("their ledger times differ, so they come from more than one batch".to_owned())
    } else if tail_entries > max_tail {
        Some(format!("more than one batch of at most {max_tail}"))
    } else {
        None
    };
    if let Some(reason) = reason {
        return Err(OpenError::UnsignedTail { signed: size, entries: tail_entries, reason });
    }
    Ok(Plan {
        checkpoint,
        size,
        checkpoints_end: checkpoints_end as u64,
        checkpoints_len: checkpoints.len() as u64,
        derived_end: derived_end as u64,
        derived_len: derived.len() as u64,
        published: published.map(|p| (p.checkpoint().size, p.note().to_text())),
        journal_len,
        tail_entries,
        edge,
        ends,
        rewrite,
        pending,
    })
}

/// The published checkpoint, if it verifies with the ledger key. It is
/// written without an fsync (it is derived), so after a crash it may be
/// empty or torn: such a file is no evidence and is rewritten.
fn published_checkpoint<S: Storage>(storage: &S, log: &NoteVerifier) -> io::Result<Option<VerifiedCheckpoint>> {
    Ok(storage.read(CHECKPOINT)?.and_then(|bytes| note::open_checkpoint(&bytes, log).ok()))
}

/// Writes a file of the published folder so that a reader (a static file
/// server) sees the old file or the new one, never a part of it: written
/// under a temporary name beside it, then renamed over it. Nothing is
/// fsynced here: full tiles are fsynced by the flush that advances the
/// watermark, and partial files are checked and rewritten by recovery
/// ([`repair_partials`]), so a crash never leaves a torn one served.
fn write_public<S: Storage>(storage: &S, path: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = format!("{path}.tmp");
    storage.write(&tmp, bytes)?;
    storage.rename(&tmp, path)
}

/// Checks every partial tile and bundle file under `public/tile` against
/// what the journal implies (the edge for the last tile of each level, the
/// full tile for earlier ones), rewrites each that differs (torn by a
/// crash) and removes what no size at or below the edge's can read, and
/// the temporary files a crash left. Returns how many were rewritten.
fn repair_partials<S: Storage>(storage: &S, edge: &Edge) -> io::Result<usize> {
    let mut repaired = 0;
    let mut levels: Vec<(Option<u8>, String)> = vec![(None, format!("{PUBLIC}/tile/entries"))];
    levels.extend((0..MAX_TILE_LEVELS).map(|l| (Some(l), format!("{PUBLIC}/tile/{l}"))));
    for (level, root) in levels {
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for name in storage.list(&dir)? {
                let path = format!("{dir}/{name}");
                if name.starts_with('x') {
                    dirs.push(path);
                    continue;
                }
                // A full tile's temporary file, left by a crash while
                // recovery rewrote it.
                if name.ends_with(".tmp") {
                    storage.remove(&path)?;
                    continue;
                }
                let Some(stem) = path.strip_suffix(".p") else { continue };
                // `x001/234` is tile 1234.
                let digits: String = stem
                    .strip_prefix(&format!("{root}/"))
                    .unwrap_or_default()
                    .chars()
                    .filter(char::is_ascii_digit)
                    .collect();
                let Ok(index) = digits.parse::<u64>() else { continue };
                for width in storage.list(&path)? {
                    let file = format!("{path}/{width}");
                    let expected = match width.parse::<u64>() {
                        Ok(width) => expected_partial(storage, edge, level, index, width)?,
                        Err(_) => None,
                    };
                    match expected {
                        Some(bytes) if storage.read(&file)?.as_deref() != Some(bytes.as_slice()) => {
                            write_public(storage, &file, &bytes)?;
                            repaired += 1;
                        }
                        Some(_) => {}
                        None => storage.remove(&file)?,
                    }
                }
            }
        }
    }
    Ok(repaired)
}

/// The bytes of partial tile (or bundle, `level` `None`) `index` of `width`
/// entries as the journal implies them, or `None` if no tree at or below
/// the edge's size has it.
fn expected_partial<S: Storage>(
    storage: &S,
    edge: &Edge,
    level: Option<u8>,
    index: u64,
    width: u64,
) -> io::Result<Option<Vec<u8>>> {
    if width == 0 || width >= TILE_WIDTH {
        return Ok(None);
    }
    let take = usize::try_from(width).unwrap_or(usize::MAX);
    match level {
        None => {
            let edge_index = edge.size / TILE_WIDTH;
            let (bytes, count) = if index == edge_index {
                (edge.bundle.clone(), edge.size % TILE_WIDTH)
            } else if index < edge_index {
                match storage.read(&bundle_base(index))? {
                    Some(bytes) => (bytes, TILE_WIDTH),
                    None => return Ok(None),
                }
            } else {
                return Ok(None);
            };
            let Ok(entries) = tiles::decode_bundle("", &bytes, count) else { return Ok(None) };
            let Some(first) = entries.get(..take) else { return Ok(None) };
            let mut out = Vec::new();
            for entry in first {
                if tiles::push_bundle_entry(&mut out, entry).is_none() {
                    return Ok(None);
                }
            }
            Ok(Some(out))
        }
        Some(level) => {
            let count = tiles::nodes_at_level(edge.size, level * TILE_HEIGHT);
            let edge_index = count / TILE_WIDTH;
            let hashes = if index == edge_index {
                edge.tiles.get(usize::from(level)).cloned().unwrap_or_default()
            } else if index < edge_index {
                let path = tile_base(level, index);
                match storage.read(&path)?.map(|b| tiles::decode_tile(&path, &b, TILE_WIDTH)) {
                    Some(Ok(hashes)) => hashes,
                    _ => return Ok(None),
                }
            } else {
                return Ok(None);
            };
            Ok(hashes.get(..take).map(tiles::encode_tile))
        }
    }
}

/// "7, 8, 9" (the first 16 sizes, then how many more).
fn list_sizes(sizes: &[u64]) -> String {
    let mut text = sizes.iter().take(16).map(u64::to_string).collect::<Vec<_>>().join(", ");
    if sizes.len() > 16 {
        text.push_str(&format!(" and {} more", sizes.len() - 16));
    }
    text
}

/// Copies `file` from `from` to its end into a new file named `base` (or
/// `base.N`, the first free name), makes the copy durable, then cuts
/// `file` at `from`. Returns the copy's name.
fn set_aside<S: Storage>(storage: &S, file: &str, from: u64, base: &str) -> io::Result<String> {
    let len = storage.len(file)?.unwrap_or(0);
    let bytes = storage.read_range(file, from, usize::try_from(len.saturating_sub(from)).unwrap_or(usize::MAX))?;
    let mut name = base.to_owned();
    let mut n = 1u32;
    while storage.len(&name)?.is_some() {
        name = format!("{base}.{n}");
        n += 1;
    }
    storage.write(&name, &bytes)?;
    storage.sync(&name)?;
    storage.sync_dir(parent(&name))?;
    storage.truncate(file, from)?;
    storage.sync(file)?;
    Ok(name)
}

/// Names what differs between a stored full bundle or tile and the one the
/// journal implies (the bundle's or tile's last entry is `last_index`).
fn describe_difference(path: &str, stored: Option<&[u8]>, ours: &[u8], last_index: u64) -> TileError {
    let Some(stored) = stored else { return TileError::Missing { path: path.to_owned() } };
    if path.starts_with(&format!("{PUBLIC}/tile/entries/")) {
        let theirs = tiles::decode_bundle(path, stored, TILE_WIDTH);
        let mine = tiles::decode_bundle(path, ours, TILE_WIDTH).unwrap_or_default();
        let at = match &theirs {
            Ok(theirs) => (0..mine.len()).find(|&i| theirs.get(i) != mine.get(i)).unwrap_or(0),
            Err(_) => 0,
        } as u64;
        let index = last_index + 1 - TILE_WIDTH + at;
        let tile = tile_file(0, index / TILE_WIDTH, TILE_WIDTH);
        return match theirs {
            Err(e) => e,
            Ok(_) => TileError::CorruptEntry { index, bundle: path.to_owned(), tile },
        };
    }
    if stored.len() != ours.len() {
        return TileError::BadTileLength { path: path.to_owned(), len: stored.len(), expected: ours.len() };
    }
    let position = stored.chunks(32).zip(ours.chunks(32)).position(|(a, b)| a != b).unwrap_or(0) as u64;
    TileError::CorruptTile { path: path.to_owned(), position }
}

/// The last whole record of the checkpoint log (`u32` length, note) and
/// where the whole records end.
fn last_record(bytes: &[u8]) -> (Option<&[u8]>, usize) {
    let mut pos = 0usize;
    let mut last = None;
    while let Some(len) = bytes.get(pos..pos + 4).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes) {
        let Some(note) = bytes.get(pos + 4..pos + 4 + len as usize) else { break };
        last = Some(note);
        pos += 4 + len as usize;
    }
    (last, pos)
}

/// Removes every tile and bundle that covers entries past `size`: the
/// remains of a batch whose checkpoint was never made durable.
fn discard_beyond<S: Storage>(storage: &S, size: u64) -> io::Result<()> {
    let mut touched = BTreeSet::new();
    // `None` stands for the entry bundles, `Some(L)` for tile level L.
    let mut levels: Vec<(Option<u8>, u64)> = vec![(None, size)];
    for level in 0..MAX_TILE_LEVELS {
        levels.push((Some(level), tiles::nodes_at_level(size, level * TILE_HEIGHT)));
    }
    for (level, count) in levels {
        let mut n = count / TILE_WIDTH;
        let keep_width = count % TILE_WIDTH;
        loop {
            let base = level.map_or_else(|| bundle_base(n), |l| tile_base(l, n));
            let partial_dir = format!("{base}.p");
            let full_exists = storage.len(&base)?.is_some();
            let partials = storage.list(&partial_dir)?;
            if !full_exists && partials.is_empty() {
                break;
            }
            if full_exists {
                storage.remove(&base)?;
                touched.insert(parent(&base).to_owned());
            }
            for name in partials {
                // At the edge's own index, partials up to the signed width stay.
                let beyond = n > count / TILE_WIDTH || name.parse::<u64>().map_or(true, |w| w > keep_width);
                if beyond {
                    storage.remove(&format!("{partial_dir}/{name}"))?;
                    touched.insert(partial_dir.clone());
                }
            }
            n += 1;
        }
    }
    for dir in touched.iter().rev() {
        storage.sync_dir(dir)?;
    }
    Ok(())
}
