//! The ledger's files: C2SP tlog-tiles (hash tiles and entry bundles of
//! headers) that any static file server can serve, the append-only journal
//! that holds every entry with its body, and the log of signed checkpoints;
//! with the batch writer, the readers and crash recovery.
//!
//! Layout under the ledger directory:
//!
//! ```text
//! checkpoint                 the latest signed checkpoint (a copy, for serving)
//! tile/<L>/<N>[.p/<W>]       hash tiles
//! tile/entries/<N>[.p/<W>]   entry bundles (headers, 16-bit length-prefixed)
//! log/journal                per entry: u32 header length, header,
//!                            u32 body length, salt (32 bytes), body
//! log/checkpoints            every signed checkpoint: u32 length, note
//! log/index                  per entry, the u64 end offset of its journal record
//! ```
//!
//! Durability per batch: append the entries to the journal; write the full
//! tiles and bundles the batch completes; fsync the journal, those files and
//! every directory that gained a name; then (the caller) sign the checkpoint,
//! append it to `log/checkpoints` and fsync that; only then answer. Partial
//! tiles and bundles, `log/index` and the `checkpoint` copy are written but
//! not fsynced: they are derived from the journal and rebuilt from it after
//! a crash. (An fsync costs ~0.24 ms here and creating a durable file
//! ~0.9 ms; two fsyncs per batch instead of ten is what makes the ledger
//! fast. ARCHITECTURE.md records this refinement of DESIGN.md.)
//!
//! After a crash, everything past the last signed checkpoint is discarded;
//! nothing at or below it is ever rewritten.

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

/// Parses one journal record at the start of `bytes`, or `None` if `bytes`
/// does not hold a whole record.
fn parse_record(bytes: &[u8]) -> Option<RecordRef<'_>> {
    let hlen = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let header = bytes.get(4..4 + hlen)?;
    let at = 4 + hlen;
    let blen = u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
    let salt: [u8; SALT_LEN] = bytes.get(at + 4..at + 4 + SALT_LEN)?.try_into().ok()?;
    let end = at + 4 + SALT_LEN + blen;
    let body = bytes.get(at + 4 + SALT_LEN..end)?;
    Some(RecordRef { header, salt, body, len: end })
}

/// Appends one journal record.
fn push_record(out: &mut Vec<u8>, r: &NewRecord) {
    out.extend_from_slice(&(r.header.len() as u32).to_be_bytes());
    out.extend_from_slice(&r.header);
    out.extend_from_slice(&(r.body.len() as u32).to_be_bytes());
    out.extend_from_slice(&r.salt);
    out.extend_from_slice(&r.body);
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

    /// The next whole record and its end offset, or `None` at the end (a
    /// torn last record counts as the end).
    fn next(&mut self) -> io::Result<Option<(Vec<u8>, StoredBody, u64)>> {
        loop {
            let from = usize::try_from(self.pos - self.chunk_start).unwrap_or(usize::MAX);
            if let Some(r) = self.chunk.get(from..).and_then(parse_record) {
                self.pos += r.len as u64;
                return Ok(Some((r.header.to_vec(), StoredBody { salt: r.salt, body: r.body.to_vec() }, self.pos)));
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

/// The copy of the latest checkpoint, for static serving.
pub const CHECKPOINT: &str = "checkpoint";
const CHECKPOINT_TMP: &str = "checkpoint.tmp";
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
    #[error("entries are missing: the journal holds {held} of the {size} signed entries")]
    MissingEntries {
        /// Entries held.
        held: u64,
        /// The signed size.
        size: u64,
    },
    /// A stored entry or body could not be read back as written.
    #[error("the stored ledger is corrupt: {0}")]
    Read(String),
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

fn bundle_base(index: u64) -> String {
    tiles::bundle_path(index, TILE_WIDTH)
}

fn tile_base(level: u8, index: u64) -> String {
    tiles::tile_path(level, index, TILE_WIDTH)
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
        let path = tiles::tile_path(level, index, width);
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
            return Ok((edge.bundle.clone(), tiles::bundle_path(n, edge_width), edge_width));
        }
        let full = bundle_base(n);
        if let Some(bytes) = self.storage.read(&full)? {
            return Ok((bytes, full, TILE_WIDTH));
        }
        let path = tiles::bundle_path(n, width);
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
            let (header_bytes, body, _) =
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
            out.push((tiles::bundle_path(self.size / TILE_WIDTH, width), self.bundle.clone()));
        }
        for (level, partial) in self.tiles.iter().enumerate() {
            if !partial.is_empty() {
                let level = level as u8;
                let count = tiles::nodes_at_level(self.size, level * TILE_HEIGHT);
                out.push((
                    tiles::tile_path(level, count / TILE_WIDTH, partial.len() as u64),
                    tiles::encode_tile(partial),
                ));
            }
        }
        out
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
    /// The latest checkpoint note, for the static copy.
    note: Option<String>,
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

    /// Writes a batch and makes it durable in the journal; the caller then
    /// signs and writes the checkpoint. The full tiles and bundles the batch
    /// completes are written for readers and made durable by the next
    /// [`LedgerWriter::flush`]. On error the writer must not be used again:
    /// the ledger has to be reopened, which discards the partial batch.
    pub fn write_batch(&mut self, records: &[NewRecord]) -> io::Result<u64> {
        if records.is_empty() {
            return Ok(self.edge.size);
        }
        let mut journal = Vec::new();
        let mut index = Vec::with_capacity(records.len() * 8);
        let mut full: Vec<(String, Vec<u8>)> = Vec::new();
        for r in records {
            push_record(&mut journal, r);
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

    /// Appends `note` to the checkpoint log and fsyncs it; when this
    /// returns, the checkpoint is durable.
    pub fn write_checkpoint(&mut self, note: &str) -> io::Result<()> {
        let mut frame = (note.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(note.as_bytes());
        self.storage.append(CHECKPOINTS, &frame)?;
        self.storage.sync(CHECKPOINTS)?;
        self.make_names_durable(&[CHECKPOINTS.to_owned()])?;
        self.note = Some(note.to_owned());
        Ok(())
    }

    /// Whether anything was written since the last flush.
    pub fn dirty(&self) -> bool {
        self.flushed_size != self.edge.size
    }

    /// Whether `interval` has passed since the last flush.
    pub fn flush_due(&self, interval: Duration) -> bool {
        self.last_flush.elapsed() >= interval
    }

    /// Publishes the derived files and makes the full ones durable: writes
    /// the partial tiles and bundle and the `checkpoint` copy for static
    /// serving; fsyncs the full tiles and bundles written since the last
    /// flush and their directories; records the size they cover in the
    /// durability watermark; and removes the partial files they supersede.
    /// Creating and renaming files makes every later fsync slower on ext4,
    /// so this runs about once a second rather than once a batch.
    pub fn flush(&mut self) -> io::Result<()> {
        self.last_flush = Instant::now();
        self.flushed_size = self.edge.size;
        for (path, bytes) in self.edge.partials() {
            self.storage.write(&path, &bytes)?;
        }
        if let Some(note) = &self.note {
            self.storage.write(CHECKPOINT_TMP, note.as_bytes())?;
            self.storage.rename(CHECKPOINT_TMP, CHECKPOINT)?;
        }
        let pending = std::mem::take(&mut self.pending);
        for path in &pending {
            self.storage.sync(path)?;
        }
        self.make_names_durable(&pending)?;
        self.storage.append(DERIVED, &self.edge.size.to_be_bytes())?;
        self.storage.sync(DERIVED)?;
        self.make_names_durable(&[DERIVED.to_owned()])?;
        for base in pending {
            let dir = format!("{base}.p");
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
}

impl<S: Storage> std::fmt::Debug for Recovered<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovered").field("writer", &self.writer).finish_non_exhaustive()
    }
}

/// Opens the ledger in `storage`: takes the last checkpoint of the
/// checkpoint log and checks it with `log`; discards everything past it;
/// reads the journal once, checking every body against its header and
/// handing each entry to `replay`; checks that the journal reproduces the
/// checkpoint and that every full tile and bundle made durable matches it,
/// refusing to open, naming the first bad entry or file, if not; and
/// rebuilds the derived files that a crash may have lost.
pub fn recover<S: Storage>(
    storage: Arc<S>,
    log: &NoteVerifier,
    cache_limit: usize,
    mut replay: impl FnMut(u64, &EntryHeader, &StoredBody) -> Result<(), String>,
) -> Result<Recovered<S>, OpenError> {
    storage.lock_exclusive()?;
    storage.remove(CHECKPOINT_TMP)?;
    let checkpoint = last_checkpoint(&*storage, log)?;
    let (size, root) =
        checkpoint.as_ref().map_or((0, merkle::EMPTY_ROOT), |c| (c.checkpoint().size, c.checkpoint().root_hash));
    let durable = derived_watermark(&*storage)?.min(size);
    discard_beyond(&*storage, size)?;

    // One pass over the journal: bodies, replay, the edge; and every full
    // bundle and tile it implies compared with the stored one. Those made
    // durable (completed at or below the watermark) must match; later ones
    // may be missing or torn after a crash and are rewritten.
    let mut edge = Edge { level8: Some(Vec::new()), ..Edge::default() };
    let mut ends = Vec::with_capacity(usize::try_from(size).unwrap_or(0).saturating_mul(8));
    let mut first_difference: Option<TileError> = None;
    let mut rewrite: Vec<(String, Vec<u8>)> = Vec::new();
    let mut pending = Vec::new();
    let mut journal = JournalScanner::new(&*storage)?;
    for index in 0..size {
        let Some((header_bytes, body, end)) = journal.next()? else {
            return Err(OpenError::MissingEntries { held: index, size });
        };
        let header = EntryHeader::parse(&header_bytes)
            .map_err(|e| OpenError::Read(format!("the journal record of entry {index} is corrupt: {e}")))?;
        if header.check_body(&body.salt, &body.body).is_err() {
            return Err(OpenError::Read(format!("the body of entry {index} does not match its header's digest")));
        }
        replay(index, &header, &body).map_err(|reason| OpenError::Replay { index, reason })?;
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
    }
    // The journal must reproduce the signed root. If it does, a durable file
    // that differs from what the journal implies is corrupt; if it does not,
    // the journal is.
    let level8 = edge.level8.take().unwrap_or_default();
    let last_leaves =
        if size.is_multiple_of(TILE_WIDTH) { Vec::new() } else { edge.tiles.first().cloned().unwrap_or_default() };
    if size > 0 && tiles::root_from_parts(size, &level8, &last_leaves) != Some(root) {
        return Err(OpenError::Read(match first_difference {
            Some(TileError::CorruptEntry { index, bundle, .. }) => format!(
                "the journal record of entry {index} is corrupt: it differs from {bundle} and does not reproduce the signed checkpoint"
            ),
            _ => "the journal does not reproduce the signed checkpoint".to_owned(),
        }));
    }
    if let Some(difference) = first_difference {
        return Err(OpenError::Tiles(difference));
    }
    // Cut a torn or unsigned tail; rebuild the derived files.
    if storage.len(JOURNAL)?.unwrap_or(0) > edge.journal_end {
        storage.truncate(JOURNAL, edge.journal_end)?;
        storage.sync(JOURNAL)?;
    }
    if storage.read(JOURNAL_INDEX)?.as_deref() != Some(ends.as_slice()) {
        storage.write(JOURNAL_INDEX, &ends)?;
    }
    for (path, bytes) in &rewrite {
        storage.write(path, bytes)?;
    }
    let reader = Arc::new(LedgerReader::new(storage.clone(), cache_limit));
    reader.set_edge(edge.view());
    let mut writer = LedgerWriter {
        storage,
        reader: reader.clone(),
        edge,
        named: BTreeSet::new(),
        pending,
        note: checkpoint.as_ref().map(|c| c.note().to_text()),
        last_flush: Instant::now(),
        flushed_size: 0,
    };
    // Everything derived is now written; make it durable before serving.
    writer.flush()?;
    Ok(Recovered { writer, reader, checkpoint })
}

/// The last whole value of the durability watermark (0 if none).
fn derived_watermark<S: Storage>(storage: &S) -> io::Result<u64> {
    let Some(bytes) = storage.read(DERIVED)? else { return Ok(0) };
    let whole = bytes.len() / 8 * 8;
    if whole < bytes.len() {
        storage.truncate(DERIVED, whole as u64)?;
        storage.sync(DERIVED)?;
    }
    Ok(bytes.get(whole.saturating_sub(8)..whole).map(read_u64).unwrap_or(0))
}

/// Names what differs between a stored full bundle or tile and the one the
/// journal implies (the bundle's or tile's last entry is `last_index`).
fn describe_difference(path: &str, stored: Option<&[u8]>, ours: &[u8], last_index: u64) -> TileError {
    let Some(stored) = stored else { return TileError::Missing { path: path.to_owned() } };
    if path.starts_with("tile/entries/") {
        let theirs = tiles::decode_bundle(path, stored, TILE_WIDTH);
        let mine = tiles::decode_bundle(path, ours, TILE_WIDTH).unwrap_or_default();
        let at = match &theirs {
            Ok(theirs) => (0..mine.len()).find(|&i| theirs.get(i) != mine.get(i)).unwrap_or(0),
            Err(_) => 0,
        } as u64;
        let index = last_index + 1 - TILE_WIDTH + at;
        let tile = tiles::tile_path(0, index / TILE_WIDTH, TILE_WIDTH);
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

/// Checks, without changing anything, that every body up to the last
/// signed checkpoint matches its header's digest, and that the journal
/// reproduces that checkpoint. Returns the number of entries checked, or
/// names the first bad one. (`covenant-server check`.)
pub fn check<S: Storage>(storage: Arc<S>, log: &NoteVerifier) -> Result<u64, OpenError> {
    let Some(bytes) = storage.read(CHECKPOINTS)? else { return Ok(0) };
    let Some(note_bytes) = last_record(&bytes).0 else { return Ok(0) };
    let cp = note::open_checkpoint(note_bytes, log)?;
    let (size, root) = (cp.checkpoint().size, cp.checkpoint().root_hash);
    let reader = LedgerReader::new(storage, 64);
    let mut tree = merkle::CompactRange::new();
    reader
        .scan(size, |_, _, header, _| {
            tree.push(merkle::leaf_hash(header));
            Ok(())
        })
        .map_err(|e| OpenError::Read(e.to_string()))?;
    if tree.root() != root {
        return Err(OpenError::Read("the journal does not reproduce the signed checkpoint".into()));
    }
    Ok(size)
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

/// The last whole checkpoint of the checkpoint log, verified with `log`. A
/// torn last record (a crash while appending) is cut off; a whole record
/// that does not verify is a refusal.
fn last_checkpoint<S: Storage>(storage: &S, log: &NoteVerifier) -> Result<Option<VerifiedCheckpoint>, OpenError> {
    let Some(bytes) = storage.read(CHECKPOINTS)? else { return Ok(None) };
    let (last, pos) = last_record(&bytes);
    if pos < bytes.len() {
        storage.truncate(CHECKPOINTS, pos as u64)?;
        storage.sync(CHECKPOINTS)?;
    }
    match last {
        Some(note_bytes) => Ok(Some(note::open_checkpoint(note_bytes, log)?)),
        None => Ok(None),
    }
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
