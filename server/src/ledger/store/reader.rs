//! Reading the ledger at a signed size: entries' headers from the entry
//! bundles, bodies from the journal (each checked against its header's
//! digest), and roots, inclusion and consistency proofs over the hash
//! tiles, with a bounded cache of expanded tiles and the right edge kept in
//! memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use covenant_core::ledger::EntryHeader;
use covenant_core::merkle::{self, Hash, HashReader};
use covenant_core::tiles::{self, TILE_HEIGHT, TILE_WIDTH};
use covenant_storage::Storage;

use super::journal::{JournalScanner, Scanned, StoredBody, parse_record, read_u64};
use super::tiles::{EdgeView, ExpandedTile, bundle_base, bundle_file, tile_base, tile_file};
use super::{JOURNAL, JOURNAL_INDEX, MAX_TILE_LEVELS, ReadError};
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

    pub(super) fn set_edge(&self, view: EdgeView) {
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

impl<S: Storage> LedgerReader<S> {
    /// The partial bundle and tiles of the tree of `size` entries, read from
    /// the tree of `current` entries (`size ≤ current`), by path.
    pub(super) fn partials_at(&self, size: u64, current: u64) -> Result<Vec<(String, Vec<u8>)>, ReadError> {
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
