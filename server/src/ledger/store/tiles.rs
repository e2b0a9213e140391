//! The tree's right edge as the journal is read or written: the partial
//! bundle and tiles it builds and the full ones it completes, their paths
//! under `public/`, expanded tiles, and the published folder's upkeep:
//! writing a public file by rename, removing what lies past a signed size,
//! and checking every partial file against the journal after a crash.

use std::collections::BTreeSet;
use std::io;
use std::sync::{Arc, OnceLock};

use covenant_core::merkle::{self, Hash};
use covenant_core::tiles::{self, TILE_HEIGHT, TILE_WIDTH, TileError};
use covenant_storage::{Storage, parent};

use super::{MAX_TILE_LEVELS, PUBLIC};

/// The stored path of entry bundle `index` of `width` entries.
pub(super) fn bundle_file(index: u64, width: u64) -> String {
    format!("{PUBLIC}/{}", tiles::bundle_path(index, width))
}

/// The stored path of hash tile `index` of level `level`, `width` hashes.
pub(super) fn tile_file(level: u8, index: u64, width: u64) -> String {
    format!("{PUBLIC}/{}", tiles::tile_path(level, index, width))
}

pub(super) fn bundle_base(index: u64) -> String {
    bundle_file(index, TILE_WIDTH)
}

pub(super) fn tile_base(level: u8, index: u64) -> String {
    tile_file(level, index, TILE_WIDTH)
}

/// A tile with the hashes of every level inside it: `levels[k]` holds the
/// complete nodes `k` levels above the tile's base level.
#[derive(Debug)]
pub(super) struct ExpandedTile {
    pub(super) levels: Vec<Vec<Hash>>,
}

impl ExpandedTile {
    pub(super) fn new(base: Vec<Hash>) -> Self {
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

    pub(super) fn get(&self, sub: u8, index: usize) -> Option<Hash> {
        self.levels.get(usize::from(sub))?.get(index).copied()
    }
}

/// The right edge of the tree as readers see it, with each partial tile
/// expanded once, when first needed.
#[derive(Debug, Default)]
pub(super) struct EdgeView {
    pub(super) size: u64,
    pub(super) bundle: Vec<u8>,
    pub(super) tiles: Vec<Vec<Hash>>,
    expanded: Vec<OnceLock<Arc<ExpandedTile>>>,
}

impl EdgeView {
    fn new(size: u64, bundle: Vec<u8>, tiles: Vec<Vec<Hash>>) -> Self {
        let expanded = tiles.iter().map(|_| OnceLock::new()).collect();
        EdgeView { size, bundle, tiles, expanded }
    }

    /// The expanded partial tile of `level`. Its complete nodes are those of
    /// any narrower version of the same tile.
    pub(super) fn expanded(&self, level: u8) -> Option<Arc<ExpandedTile>> {
        let hashes = self.tiles.get(usize::from(level))?;
        let cell = self.expanded.get(usize::from(level))?;
        Some(cell.get_or_init(|| Arc::new(ExpandedTile::new(hashes.clone()))).clone())
    }
}

/// The right edge of the tree: the partial bundle and the partial tile of
/// each tile level, plus where the journal ends. Owned by the writer.
#[derive(Debug, Clone, Default)]
pub(super) struct Edge {
    pub(super) size: u64,
    pub(super) bundle: Vec<u8>,
    pub(super) tiles: Vec<Vec<Hash>>,
    pub(super) journal_end: u64,
}

impl Edge {
    /// Adds one entry's header; full bundles and tiles it completes go to
    /// `full`. Returns the entry's leaf hash.
    pub(super) fn push(&mut self, header: &[u8], full: &mut dyn FnMut(String, Vec<u8>)) -> io::Result<Hash> {
        let bundle_index = self.size / TILE_WIDTH;
        tiles::push_bundle_entry(&mut self.bundle, header)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "entry header over 65,535 bytes"))?;
        self.size += 1;
        if self.size.is_multiple_of(TILE_WIDTH) {
            full(bundle_base(bundle_index), std::mem::take(&mut self.bundle));
        }
        let leaf = merkle::leaf_hash(header);
        self.push_node(0, leaf, full);
        Ok(leaf)
    }

    fn push_node(&mut self, level: u8, hash: Hash, full: &mut dyn FnMut(String, Vec<u8>)) {
        let l = usize::from(level);
        if self.tiles.len() <= l {
            self.tiles.resize(l + 1, Vec::new());
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

    /// The edge as readers see it.
    pub(super) fn view(&self) -> EdgeView {
        EdgeView::new(self.size, self.bundle.clone(), self.tiles.clone())
    }

    /// The partial bundle and partial tiles at the current size, by path.
    pub(super) fn partials(&self) -> Vec<(String, Vec<u8>)> {
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

/// The paths of the partial bundle and tiles a tree of `size` entries reads.
pub(super) fn partial_paths(size: u64) -> Vec<String> {
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

/// Writes a file of the published folder so that a reader (a static file
/// server) sees the old file or the new one, never a part of it: written
/// under a temporary name beside it, then renamed over it. Nothing is
/// fsynced here: full tiles are fsynced by the flush that advances the
/// watermark, and partial files are checked and rewritten by recovery
/// ([`repair_partials`]), so a crash never leaves a torn one served.
pub(super) fn write_public<S: Storage>(storage: &S, path: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = format!("{path}.tmp");
    storage.write(&tmp, bytes)?;
    storage.rename(&tmp, path)
}

/// Checks every partial tile and bundle file under `public/tile` against
/// what the journal implies (the edge for the last tile of each level, the
/// full tile for earlier ones), rewrites each that differs (torn by a
/// crash) and removes what no size at or below the edge's can read, and
/// the temporary files a crash left. Returns how many were rewritten.
pub(super) fn repair_partials<S: Storage>(storage: &S, edge: &Edge) -> io::Result<usize> {
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

/// Names what differs between a stored full bundle or tile and the one the
/// journal implies (the bundle's or tile's last entry is `last_index`).
pub(super) fn describe_difference(path: &str, stored: Option<&[u8]>, ours: &[u8], last_index: u64) -> TileError {
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

/// Removes every tile and bundle that covers entries past `size`: the
/// remains of a batch whose checkpoint was never made durable.
pub(super) fn discard_beyond<S: Storage>(storage: &S, size: u64) -> io::Result<()> {
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
