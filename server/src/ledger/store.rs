//! The ledger's files: C2SP tlog-tiles (hash tiles and entry bundles of
//! headers), the append-only body store beside them, and the signed
//! checkpoint; with the batch writer, the readers and crash recovery.
//!
//! Layout under the ledger directory:
//!
//! ```text
//! checkpoint                 the last signed checkpoint (C2SP signed note)
//! tile/<L>/<N>[.p/<W>]       hash tiles
//! tile/entries/<N>[.p/<W>]   entry bundles (headers, 16-bit length-prefixed)
//! bodies/data                salt (32 bytes) || body, entry after entry
//! bodies/index               per entry, the big-endian u64 end offset of its record in data
//! ```
//!
//! Durability order per batch (DESIGN.md "Ledger"): write bodies, bundles and
//! tiles; fsync them and every directory that gained a name; then (the
//! caller) sign the checkpoint, write it to a temporary file, fsync it,
//! rename it over `checkpoint` and fsync the directory; only then answer.
//! After a crash, everything past the last signed checkpoint is discarded;
//! nothing at or below it is ever rewritten.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::sync::{Arc, Mutex};

use covenant_core::ledger::{EntryHeader, SALT_LEN};
use covenant_core::merkle::{self, Hash, HashReader};
use covenant_core::note::{self, NoteVerifier, VerifiedCheckpoint};
use covenant_core::tiles::{self, TILE_HEIGHT, TILE_WIDTH, TileError, TileFiles};

use super::storage::{Storage, parent};

/// The checkpoint file.
pub const CHECKPOINT: &str = "checkpoint";
const CHECKPOINT_TMP: &str = "checkpoint.tmp";
const BODY_DATA: &str = "bodies/data";
const BODY_INDEX: &str = "bodies/index";
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
    /// Bodies are missing for entries at or below the signed size.
    #[error("bodies are missing: the body store holds {held} of the {size} signed entries")]
    MissingBodies {
        /// Bodies held.
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
}

impl<S: Storage> std::fmt::Debug for LedgerReader<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerReader").field("cache_limit", &self.cache_limit).finish_non_exhaustive()
    }
}

impl<S: Storage> LedgerReader<S> {
    /// A reader caching up to `cache_limit` expanded tiles (16 KiB each).
    pub fn new(storage: Arc<S>, cache_limit: usize) -> Self {
        LedgerReader { storage, cache: Mutex::new(HashMap::new()), cache_limit: cache_limit.max(16) }
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
            let width = tiles::tile_width(size, n);
            let path = tiles::bundle_path(n, width);
            let (bytes, read_width) = match self.storage.read(&path)? {
                Some(b) => (b, width),
                None if width < TILE_WIDTH => (
                    self.storage
                        .read(&bundle_base(n))?
                        .ok_or_else(|| ReadError::Corrupt(format!("{path} is missing")))?,
                    TILE_WIDTH,
                ),
                None => return Err(ReadError::Corrupt(format!("{path} is missing"))),
            };
            let entries =
                tiles::decode_bundle(&path, &bytes, read_width).map_err(|e| ReadError::Corrupt(e.to_string()))?;
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

    /// The body of entry `index`, checked against its header's digest.
    pub fn body(&self, index: u64, size: u64) -> Result<StoredBody, ReadError> {
        let header_bytes =
            self.headers(index, index + 1, size)?.pop().ok_or_else(|| ReadError::Corrupt("no header".into()))?;
        let header =
            EntryHeader::parse(&header_bytes).map_err(|e| ReadError::Corrupt(format!("entry {index}: {e}")))?;
        let body = self.raw_body(index)?;
        header
            .check_body(&body.salt, &body.body)
            .map_err(|_| ReadError::Corrupt(format!("the body of entry {index} does not match its header's digest")))?;
        Ok(body)
    }

    fn raw_body(&self, index: u64) -> Result<StoredBody, ReadError> {
        let start = if index == 0 { 0 } else { read_u64(&self.storage.read_range(BODY_INDEX, (index - 1) * 8, 8)?) };
        let end = read_u64(&self.storage.read_range(BODY_INDEX, index * 8, 8)?);
        let len = end
            .checked_sub(start)
            .filter(|l| *l >= SALT_LEN as u64)
            .ok_or_else(|| ReadError::Corrupt(format!("the body index is corrupt at entry {index}")))?;
        let record = self.storage.read_range(BODY_DATA, start, usize::try_from(len).unwrap_or(usize::MAX))?;
        let (salt, body) = record.split_at(SALT_LEN);
        Ok(StoredBody { salt: salt.try_into().unwrap_or([0; SALT_LEN]), body: body.to_vec() })
    }
}

impl<S: Storage> LedgerReader<S> {
    /// Calls `f(index, header, body)` for every entry below `size`, in
    /// order, reading bundles whole and bodies in large chunks (for replay
    /// and checks of the whole ledger). Bodies are checked against their
    /// headers' digests.
    pub fn scan(
        &self,
        size: u64,
        mut f: impl FnMut(u64, &EntryHeader, &[u8], &StoredBody) -> Result<(), ReadError>,
    ) -> Result<(), ReadError> {
        const CHUNK: u64 = 4 << 20;
        if size == 0 {
            return Ok(());
        }
        let index = self.storage.read_range(BODY_INDEX, 0, usize::try_from(size * 8).unwrap_or(usize::MAX))?;
        let ends: Vec<u64> = index.chunks_exact(8).map(read_u64).collect();
        let mut chunk: Vec<u8> = Vec::new();
        let mut chunk_start = 0u64;
        let mut prev_end = 0u64;
        for n in 0..size.div_ceil(TILE_WIDTH) {
            let first = n * TILE_WIDTH;
            let last = (first + TILE_WIDTH).min(size);
            for (i, header_bytes) in self.headers(first, last, size)?.into_iter().enumerate() {
                let idx = first + i as u64;
                let end = ends.get(usize::try_from(idx).unwrap_or(usize::MAX)).copied().unwrap_or(0);
                if end < prev_end + SALT_LEN as u64 {
                    return Err(ReadError::Corrupt(format!("the body index is corrupt at entry {idx}")));
                }
                if end > chunk_start + chunk.len() as u64 {
                    // Refill: from this record's start, at least CHUNK bytes.
                    let want = (end - prev_end).max(CHUNK.min(ends.last().copied().unwrap_or(end) - prev_end));
                    chunk =
                        self.storage.read_range(BODY_DATA, prev_end, usize::try_from(want).unwrap_or(usize::MAX))?;
                    chunk_start = prev_end;
                }
                let from = usize::try_from(prev_end - chunk_start).unwrap_or(usize::MAX);
                let to = usize::try_from(end - chunk_start).unwrap_or(usize::MAX);
                let record =
                    chunk.get(from..to).ok_or_else(|| ReadError::Corrupt(format!("body {idx} is truncated")))?;
                let (salt, body) = record.split_at(SALT_LEN);
                let stored = StoredBody { salt: salt.try_into().unwrap_or([0; SALT_LEN]), body: body.to_vec() };
                let header =
                    EntryHeader::parse(&header_bytes).map_err(|e| ReadError::Corrupt(format!("entry {idx}: {e}")))?;
                header.check_body(&stored.salt, &stored.body).map_err(|_| {
                    ReadError::Corrupt(format!("the body of entry {idx} does not match its header's digest"))
                })?;
                f(idx, &header, &header_bytes, &stored)?;
                prev_end = end;
            }
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

/// Storage as the pure verifier's file source.
struct Files<'a, S: Storage>(&'a S);

impl<S: Storage> TileFiles for Files<'_, S> {
    fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, String> {
        self.0.read(path).map_err(|e| e.to_string())
    }
}

/// The right edge of the tree: the partial bundle and the partial tile of
/// each tile level, plus where the body store ends. Owned by the writer.
#[derive(Debug, Clone, Default)]
struct Edge {
    size: u64,
    bundle: Vec<u8>,
    tiles: Vec<Vec<Hash>>,
    body_end: u64,
}

/// Writes batches. Owned by the sequencer alone.
pub struct LedgerWriter<S: Storage> {
    storage: Arc<S>,
    edge: Edge,
    /// Full tiles and bundles written since the last checkpoint, whose
    /// partial versions can go once that checkpoint is durable.
    superseded: Vec<String>,
}

impl<S: Storage> std::fmt::Debug for LedgerWriter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerWriter").field("size", &self.edge.size).finish_non_exhaustive()
    }
}

impl<S: Storage> LedgerWriter<S> {
    /// The number of entries written (signed or about to be).
    pub fn size(&self) -> u64 {
        self.edge.size
    }

    /// Writes a batch of records and makes it durable; the caller then signs
    /// and writes the checkpoint. On error the writer must not be used again:
    /// the ledger has to be reopened (which discards the partial batch).
    pub fn write_batch(&mut self, records: &[NewRecord]) -> io::Result<u64> {
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut data = Vec::new();
        let mut index = Vec::with_capacity(records.len() * 8);
        let start_shape = self.shape();
        for r in records {
            data.extend_from_slice(&r.salt);
            data.extend_from_slice(&r.body);
            self.edge.body_end += (SALT_LEN + r.body.len()) as u64;
            index.extend_from_slice(&self.edge.body_end.to_be_bytes());

            let bundle_index = self.edge.size / TILE_WIDTH;
            tiles::push_bundle_entry(&mut self.edge.bundle, &r.header)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "entry header over 65,535 bytes"))?;
            self.edge.size += 1;
            if self.edge.size.is_multiple_of(TILE_WIDTH) {
                files.insert(bundle_base(bundle_index), std::mem::take(&mut self.edge.bundle));
                self.superseded.push(bundle_base(bundle_index));
            }
            self.push_node(0, merkle::leaf_hash(&r.header), &mut files);
        }
        // The partial bundle and tiles at the new size.
        let end_shape = self.shape();
        let width = self.edge.size % TILE_WIDTH;
        if width > 0 && start_shape.first() != end_shape.first() {
            files.insert(tiles::bundle_path(self.edge.size / TILE_WIDTH, width), self.edge.bundle.clone());
        }
        for (level, partial) in self.edge.tiles.iter().enumerate() {
            let level = level as u8;
            let count = tiles::nodes_at_level(self.edge.size, level * TILE_HEIGHT);
            if !partial.is_empty() && start_shape.get(usize::from(level) + 1) != end_shape.get(usize::from(level) + 1) {
                files.insert(
                    tiles::tile_path(level, count / TILE_WIDTH, partial.len() as u64),
                    tiles::encode_tile(partial),
                );
            }
        }

        // Write everything, then make it durable: files first, then every
        // directory that gained a name.
        let mut dirs: BTreeSet<String> = BTreeSet::new();
        let note_created = |created: Vec<String>, dirs: &mut BTreeSet<String>| {
            for d in created {
                dirs.insert(parent(&d).to_owned());
            }
        };
        if !records.is_empty() {
            let created = self.storage.append(BODY_DATA, &data)?;
            note_created(created, &mut dirs);
            let created = self.storage.append(BODY_INDEX, &index)?;
            note_created(created, &mut dirs);
        }
        for (path, bytes) in &files {
            let created = self.storage.write(path, bytes)?;
            note_created(created, &mut dirs);
            dirs.insert(parent(path).to_owned());
        }
        if !records.is_empty() {
            self.storage.sync(BODY_DATA)?;
            self.storage.sync(BODY_INDEX)?;
            dirs.insert("bodies".to_owned());
            dirs.insert(String::new());
        }
        for path in files.keys() {
            self.storage.sync(path)?;
        }
        // Deepest first, so a new directory's own entries are durable before its name is.
        for dir in dirs.iter().rev() {
            self.storage.sync_dir(dir)?;
        }
        Ok(self.edge.size)
    }

    /// (partial bundle width, then each tile level's partial width): what
    /// the partial files at the edge look like.
    fn shape(&self) -> Vec<(u64, usize)> {
        let mut s = vec![(self.edge.size / TILE_WIDTH, self.edge.bundle.len())];
        for (level, t) in self.edge.tiles.iter().enumerate() {
            s.push((tiles::nodes_at_level(self.edge.size, level as u8 * TILE_HEIGHT) / TILE_WIDTH, t.len()));
        }
        s
    }

    fn push_node(&mut self, level: u8, hash: Hash, files: &mut BTreeMap<String, Vec<u8>>) {
        let l = usize::from(level);
        if self.edge.tiles.len() <= l {
            self.edge.tiles.resize(l + 1, Vec::new());
        }
        let Some(tile) = self.edge.tiles.get_mut(l) else { return };
        tile.push(hash);
        if tile.len() as u64 == TILE_WIDTH {
            let full = std::mem::take(tile);
            // This tile's index: the complete nodes at this level, less one tile.
            let count = tiles::nodes_at_level(self.edge.size, level * TILE_HEIGHT);
            let index = count / TILE_WIDTH - 1;
            let root = ExpandedTile::new(full.clone()).get(TILE_HEIGHT, 0).unwrap_or(merkle::EMPTY_ROOT);
            files.insert(tile_base(level, index), tiles::encode_tile(&full));
            self.superseded.push(tile_base(level, index));
            if level + 1 < MAX_TILE_LEVELS {
                self.push_node(level + 1, root, files);
            }
        }
    }

    /// Writes `note` as the checkpoint: temporary file, fsync, rename, fsync
    /// of the directory. When this returns, the checkpoint is durable.
    pub fn write_checkpoint(&mut self, note: &str) -> io::Result<()> {
        self.storage.write(CHECKPOINT_TMP, note.as_bytes())?;
        self.storage.sync(CHECKPOINT_TMP)?;
        self.storage.rename(CHECKPOINT_TMP, CHECKPOINT)?;
        self.storage.sync_dir("")?;
        Ok(())
    }

    /// Removes the partial tiles and bundles that full ones superseded.
    /// Called once the checkpoint covering the full ones is durable; if a
    /// removal is lost in a crash, the stale partial is harmless.
    pub fn remove_superseded(&mut self) -> io::Result<()> {
        for base in std::mem::take(&mut self.superseded) {
            let dir = format!("{base}.p");
            for name in self.storage.list(&dir)? {
                self.storage.remove(&format!("{dir}/{name}"))?;
            }
            self.storage.remove(&dir)?;
        }
        Ok(())
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

/// Opens the ledger in `storage`: checks the last signed checkpoint with
/// `log`, discards everything past it, checks that the stored entries and
/// tiles reproduce it (refusing to open, naming the first bad file or
/// entry, if not), and rebuilds the writer's edge.
pub fn recover<S: Storage>(storage: Arc<S>, log: &NoteVerifier, cache_limit: usize) -> Result<Recovered<S>, OpenError> {
    storage.remove(CHECKPOINT_TMP)?;
    let checkpoint = match storage.read(CHECKPOINT)? {
        Some(bytes) => Some(note::open_checkpoint(&bytes, log)?),
        None => None,
    };
    let (size, root) =
        checkpoint.as_ref().map_or((0, merkle::EMPTY_ROOT), |c| (c.checkpoint().size, c.checkpoint().root_hash));

    discard_beyond(&*storage, size)?;
    let body_end = trim_bodies(&*storage, size)?;
    if size > 0 {
        tiles::verify_files(&Files(&*storage), size, &root)?;
    }

    // Rebuild the edge from the partial files at the signed size.
    let mut edge = Edge { size, body_end, ..Edge::default() };
    let width = size % TILE_WIDTH;
    if width > 0 {
        let path = tiles::bundle_path(size / TILE_WIDTH, width);
        edge.bundle = storage.read(&path)?.ok_or(TileError::Missing { path })?;
    }
    for level in 0..MAX_TILE_LEVELS {
        let count = tiles::nodes_at_level(size, level * TILE_HEIGHT);
        if count == 0 {
            break;
        }
        let w = count % TILE_WIDTH;
        let mut partial = Vec::new();
        if w > 0 {
            let path = tiles::tile_path(level, count / TILE_WIDTH, w);
            let bytes = storage.read(&path)?.ok_or(TileError::Missing { path: path.clone() })?;
            partial = tiles::decode_tile(&path, &bytes, w)?;
        }
        edge.tiles.push(partial);
    }
    let reader = Arc::new(LedgerReader::new(storage.clone(), cache_limit));
    Ok(Recovered { writer: LedgerWriter { storage, edge, superseded: Vec::new() }, reader, checkpoint })
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

/// Cuts the body store to exactly `size` records; returns the data's end.
fn trim_bodies<S: Storage>(storage: &S, size: u64) -> Result<u64, OpenError> {
    let index_len = storage.len(BODY_INDEX)?.unwrap_or(0);
    if index_len / 8 < size {
        return Err(OpenError::MissingBodies { held: index_len / 8, size });
    }
    if size == 0 {
        if index_len > 0 {
            storage.truncate(BODY_INDEX, 0)?;
            storage.sync(BODY_INDEX)?;
        }
        if storage.len(BODY_DATA)?.unwrap_or(0) > 0 {
            storage.truncate(BODY_DATA, 0)?;
            storage.sync(BODY_DATA)?;
        }
        return Ok(0);
    }
    let end = read_u64(&storage.read_range(BODY_INDEX, (size - 1) * 8, 8)?);
    let data_len = storage.len(BODY_DATA)?.unwrap_or(0);
    if data_len < end {
        return Err(OpenError::MissingBodies { held: size - 1, size });
    }
    if index_len > size * 8 {
        storage.truncate(BODY_INDEX, size * 8)?;
        storage.sync(BODY_INDEX)?;
    }
    if data_len > end {
        storage.truncate(BODY_DATA, end)?;
        storage.sync(BODY_DATA)?;
    }
    Ok(end)
}
