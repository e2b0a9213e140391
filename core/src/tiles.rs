//! The C2SP `tlog-tiles` layout of a ledger, as pure functions: paths, the
//! tile and entry-bundle formats, and the check that a set of stored files
//! reproduces a signed checkpoint.
//!
//! Hash tiles hold 256 consecutive hashes of one Merkle level that is a
//! multiple of 8 (`tile/<L>/<N>`, level `8·L`); a partial tile of width `W`
//! (`tile/<L>/<N>.p/<W>`) holds the first `W`. Entry bundles
//! (`tile/entries/<N>[.p/<W>]`) hold the headers of 256 consecutive entries,
//! each prefixed with its big-endian 16-bit length. `N` is written in groups
//! of three digits, all but the last prefixed with `x` (`x001/x234/067`).
//! Reading files is the caller's business ([`TileFiles`]); the server and
//! the auditor's offline verifier share this code.

use crate::merkle::{self, Hash, HashReader};

/// Hashes per full tile, entries per full bundle.
pub const TILE_WIDTH: u64 = 256;
/// Merkle levels per tile level.
pub const TILE_HEIGHT: u8 = 8;

/// The path element(s) of a tile index: `1234067` → `x001/x234/067`.
pub fn index_path(mut n: u64) -> String {
    let mut groups = vec![format!("{:03}", n % 1000)];
    n /= 1000;
    while n > 0 {
        groups.push(format!("x{:03}", n % 1000));
        n /= 1000;
    }
    groups.reverse();
    groups.join("/")
}

/// The path of hash tile `index` at tile level `level`, full (`width` 256) or partial.
pub fn tile_path(level: u8, index: u64, width: u64) -> String {
    with_width(format!("tile/{level}/{}", index_path(index)), width)
}

/// The path of entry bundle `index`, full (`width` 256) or partial.
pub fn bundle_path(index: u64, width: u64) -> String {
    with_width(format!("tile/entries/{}", index_path(index)), width)
}

fn with_width(base: String, width: u64) -> String {
    if width >= TILE_WIDTH { base } else { format!("{base}.p/{width}") }
}

/// The width of tile `index` at a level holding `count` complete nodes.
pub fn tile_width(count: u64, index: u64) -> u64 {
    count.saturating_sub(index.saturating_mul(TILE_WIDTH)).min(TILE_WIDTH)
}

/// The number of complete nodes at Merkle level `level` in a tree of `size` leaves.
pub fn nodes_at_level(size: u64, level: u8) -> u64 {
    size.checked_shr(u32::from(level)).unwrap_or(0)
}

/// Why stored files do not make a ledger.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TileError {
    /// A file the size needs is missing.
    #[error("{path} is missing")]
    Missing {
        /// The path.
        path: String,
    },
    /// A file could not be read.
    #[error("{path} could not be read: {reason}")]
    Unreadable {
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
    /// A tile's length is not `32 × width`.
    #[error("{path} has {len} bytes, expected {expected}")]
    BadTileLength {
        /// The path.
        path: String,
        /// Its length.
        len: usize,
        /// The length expected.
        expected: usize,
    },
    /// An entry bundle does not hold `width` length-prefixed entries.
    #[error("{path} is malformed: {reason}")]
    BadBundle {
        /// The path.
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// An entry's header does not hash to the stored leaf hash, and the
    /// entries do not reproduce the signed checkpoint: the entry is corrupt.
    #[error("entry {index} is corrupt: its header in {bundle} does not hash to the leaf in {tile}")]
    CorruptEntry {
        /// The entry's index.
        index: u64,
        /// Its bundle's path.
        bundle: String,
        /// The hash tile's path.
        tile: String,
    },
    /// A stored hash differs from the one recomputed from the entries, and
    /// the entries do reproduce the signed checkpoint: the tile is corrupt.
    #[error("{path} is corrupt at position {position}")]
    CorruptTile {
        /// The tile's path.
        path: String,
        /// The position of the first wrong hash.
        position: u64,
    },
    /// The entries do not reproduce the signed checkpoint's root.
    #[error("the {size} stored entries do not reproduce the signed checkpoint's root")]
    RootMismatch {
        /// The checkpoint's size.
        size: u64,
    },
}

/// Reads the files of a ledger.
pub trait TileFiles {
    /// The file at `path` (relative to the ledger's root), `Ok(None)` if absent.
    fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, String>;
}

fn read_required<F: TileFiles + ?Sized>(files: &F, path: &str) -> Result<Vec<u8>, TileError> {
    match files.read_file(path) {
        Ok(Some(bytes)) => Ok(bytes),
        Ok(None) => Err(TileError::Missing { path: path.to_owned() }),
        Err(reason) => Err(TileError::Unreadable { path: path.to_owned(), reason }),
    }
}

/// Encodes hashes as a tile.
pub fn encode_tile(hashes: &[Hash]) -> Vec<u8> {
    hashes.concat()
}

/// Decodes a tile of exactly `width` hashes.
pub fn decode_tile(path: &str, bytes: &[u8], width: u64) -> Result<Vec<Hash>, TileError> {
    let expected = usize::try_from(width).unwrap_or(usize::MAX).saturating_mul(32);
    if bytes.len() != expected {
        return Err(TileError::BadTileLength { path: path.to_owned(), len: bytes.len(), expected });
    }
    Ok(bytes.chunks_exact(32).filter_map(|c| c.try_into().ok()).collect())
}

/// Appends one entry to a bundle being built (16-bit big-endian length, then
/// the bytes). Entries over 65,535 bytes cannot be framed.
pub fn push_bundle_entry(bundle: &mut Vec<u8>, entry: &[u8]) -> Option<()> {
    let len = u16::try_from(entry.len()).ok()?;
    bundle.extend_from_slice(&len.to_be_bytes());
    bundle.extend_from_slice(entry);
    Some(())
}

/// Splits a bundle into its entries, which must number exactly `width`.
pub fn decode_bundle<'a>(path: &str, bytes: &'a [u8], width: u64) -> Result<Vec<&'a [u8]>, TileError> {
    let bad = |reason| TileError::BadBundle { path: path.to_owned(), reason };
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (len, tail) = rest.split_at_checked(2).ok_or_else(|| bad("truncated length prefix"))?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let (entry, tail) = tail.split_at_checked(len).ok_or_else(|| bad("truncated entry"))?;
        out.push(entry);
        rest = tail;
    }
    if out.len() as u64 != width {
        return Err(bad("holds a different number of entries than its width"));
    }
    Ok(out)
}

/// The root of a run of `2^k` hashes of one level.
fn reduce(hashes: &[Hash]) -> Hash {
    let mut level: Vec<Hash> = hashes.to_vec();
    while level.len() > 1 {
        level = level.chunks(2).map(|p| if let [l, r] = p { merkle::node_hash(l, r) } else { p[0] }).collect();
    }
    level.first().copied().unwrap_or(merkle::EMPTY_ROOT)
}

/// The stored hashes of a ledger recomputed from its entries: for each tile
/// level, the complete nodes of Merkle level `8·L`, plus the leaf hashes of
/// the last (partial) entry bundle. Enough to answer any perfect-subtree
/// hash and so the root of the full size.
struct Recomputed {
    size: u64,
    /// `levels[L]`: the complete nodes of Merkle level `8·L`, for L ≥ 1.
    levels: Vec<Vec<Hash>>,
    /// The leaf hashes of the last bundle (partial or full).
    last_leaves: Vec<Hash>,
    /// The index of the last bundle.
    last_bundle: u64,
}

impl HashReader for Recomputed {
    type Error = ();
    fn stored_hash(&self, level: u8, index: u64) -> Result<Hash, ()> {
        let tile_level = usize::from(level / TILE_HEIGHT);
        let sub = level % TILE_HEIGHT;
        let first = index << sub;
        let count = 1usize << sub;
        let nodes: &[Hash] = if tile_level == 0 {
            // Sub-tile subtrees of level 0 are only ever asked for at the right edge.
            if first / TILE_WIDTH != self.last_bundle {
                return Err(());
            }
            &self.last_leaves
        } else {
            self.levels.get(tile_level).ok_or(())?
        };
        let start =
            if tile_level == 0 { (first % TILE_WIDTH) as usize } else { usize::try_from(first).map_err(|_| ())? };
        let run = nodes.get(start..start + count).ok_or(())?;
        Ok(reduce(run))
    }
}

/// Checks that the entry bundles and hash tiles for `size` entries are
/// present, well formed and consistent with each other, and that they
/// reproduce `root`. Reads every
/// bundle and tile once; memory is O(size / 256).
pub fn verify_files<F: TileFiles + ?Sized>(files: &F, size: u64, root: &Hash) -> Result<(), TileError> {
    let bundles = size.div_ceil(TILE_WIDTH);
    let mut levels: Vec<Vec<Hash>> = vec![Vec::new()];
    let mut last_leaves = Vec::new();
    // The first mismatch between bundles and level-0 tiles, decided once the
    // root tells which side is wrong.
    let mut first_mismatch: Option<(u64, String, String, u64)> = None;
    for n in 0..bundles {
        let width = tile_width(size, n);
        let bundle_path = bundle_path(n, width);
        let bundle = read_required(files, &bundle_path)?;
        let entries = decode_bundle(&bundle_path, &bundle, width)?;
        let leaves: Vec<Hash> = entries.iter().map(|e| merkle::leaf_hash(e)).collect();
        let tile_path = tile_path(0, n, width);
        let stored = decode_tile(&tile_path, &read_required(files, &tile_path)?, width)?;
        if first_mismatch.is_none()
            && let Some(pos) = leaves.iter().zip(&stored).position(|(a, b)| a != b)
        {
            let pos = pos as u64;
            first_mismatch = Some((n * TILE_WIDTH + pos, bundle_path.clone(), tile_path.clone(), pos));
        }
        if width == TILE_WIDTH {
            if let Some(l1) = levels.get_mut(1) {
                l1.push(reduce(&leaves));
            } else {
                levels.push(vec![reduce(&leaves)]);
            }
        }
        if n + 1 == bundles {
            last_leaves = leaves;
        }
    }
    // Upper tile levels: recompute, and compare with the stored tiles. A
    // mismatch here is judged at the end, like one at level 0.
    let mut first_tile_mismatch: Option<(String, u64)> = None;
    let mut tile_level: u8 = 1;
    loop {
        let count = nodes_at_level(size, tile_level.saturating_mul(TILE_HEIGHT));
        if count == 0 || tile_level > 7 {
            break;
        }
        let nodes = levels.get(usize::from(tile_level)).cloned().unwrap_or_default();
        let mut parents = Vec::new();
        for n in 0..count.div_ceil(TILE_WIDTH) {
            let width = tile_width(count, n);
            let path = tile_path(tile_level, n, width);
            let stored = decode_tile(&path, &read_required(files, &path)?, width)?;
            let start = usize::try_from(n * TILE_WIDTH).unwrap_or(usize::MAX);
            let ours = nodes.get(start..start + stored.len()).unwrap_or_default();
            if first_tile_mismatch.is_none()
                && let Some(pos) = ours.iter().zip(&stored).position(|(a, b)| a != b)
            {
                first_tile_mismatch = Some((path, pos as u64));
            }
            if width == TILE_WIDTH {
                parents.push(reduce(ours));
            }
        }
        tile_level += 1;
        if !parents.is_empty() {
            levels.push(parents);
        }
    }
    let recomputed = Recomputed { size, levels, last_leaves, last_bundle: bundles.saturating_sub(1) };
    let computed_root = merkle::root(&recomputed, recomputed.size).map_err(|_| TileError::RootMismatch { size })?;
    // The entries are the ledger: if they reproduce the signed root, any
    // stored hash that differs is a corrupt tile; if they do not, the first
    // entry whose leaf differs from its stored hash is the corrupt one.
    match (computed_root == *root, first_mismatch, first_tile_mismatch) {
        (true, Some((_, _, tile, position)), _) => Err(TileError::CorruptTile { path: tile, position }),
        (true, None, Some((path, position))) => Err(TileError::CorruptTile { path, position }),
        (true, None, None) => Ok(()),
        (false, Some((index, bundle, tile, _)), _) => Err(TileError::CorruptEntry { index, bundle, tile }),
        (false, None, _) => Err(TileError::RootMismatch { size }),
    }
}

/// Computes, from the complete nodes of Merkle level `8·L` of one tile, the
/// hash of the perfect subtree of `2^sub` of them starting at `offset`.
pub fn subtree_in_tile(hashes: &[Hash], offset: usize, sub: u8) -> Option<Hash> {
    let run = hashes.get(offset..offset.checked_add(1usize << sub)?)?;
    Some(reduce(run))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn index_paths_follow_tlog_tiles() {
        assert_eq!(index_path(0), "000");
        assert_eq!(index_path(67), "067");
        assert_eq!(index_path(1234), "x001/234");
        assert_eq!(index_path(1_234_067), "x001/x234/067");
        assert_eq!(tile_path(0, 1234, 256), "tile/0/x001/234");
        assert_eq!(tile_path(1, 0, 5), "tile/1/000.p/5");
        assert_eq!(bundle_path(3, 255), "tile/entries/003.p/255");
    }

    struct Files(BTreeMap<String, Vec<u8>>);
    impl TileFiles for Files {
        fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, String> {
            Ok(self.0.get(path).cloned())
        }
    }

    /// Lays out `n` entries as the sequencer would at the end.
    fn layout(n: u64) -> (Files, Hash) {
        let mut files = BTreeMap::new();
        let mut tree = merkle::MemoryTree::new();
        let headers: Vec<Vec<u8>> = (0..n).map(|i| format!("header {i}").into_bytes()).collect();
        for h in &headers {
            tree.push_leaf(h);
        }
        for b in 0..n.div_ceil(256) {
            let width = tile_width(n, b);
            let mut bundle = Vec::new();
            for h in &headers[(b * 256) as usize..(b * 256 + width) as usize] {
                push_bundle_entry(&mut bundle, h).unwrap();
            }
            files.insert(bundle_path(b, width), bundle);
        }
        for tl in 0..3u8 {
            let count = nodes_at_level(n, tl * 8);
            for t in 0..count.div_ceil(256) {
                let width = tile_width(count, t);
                let hashes: Vec<Hash> = (0..width).map(|i| tree.stored_hash(tl * 8, t * 256 + i).unwrap()).collect();
                files.insert(tile_path(tl, t, width), encode_tile(&hashes));
            }
        }
        (Files(files), tree.root())
    }

    #[test]
    fn stored_layout_verifies_at_many_sizes() {
        for n in [1, 2, 255, 256, 257, 511, 512, 513, 65_535, 65_536, 65_537, 70_000] {
            let (files, root) = layout(n);
            assert_eq!(verify_files(&files, n, &root), Ok(()), "size {n}");
        }
    }

    #[test]
    fn flipped_bytes_are_named() {
        let (mut files, root) = layout(70_000);
        let path = bundle_path(3, 256);
        files.0.get_mut(&path).unwrap()[2 + 5] ^= 1; // inside the first entry of bundle 3
        assert_eq!(
            verify_files(&files, 70_000, &root),
            Err(TileError::CorruptEntry { index: 768, bundle: path, tile: tile_path(0, 3, 256) })
        );
        let (mut files, root) = layout(70_000);
        files.0.get_mut(&tile_path(0, 7, 256)).unwrap()[32 * 9] ^= 1;
        assert_eq!(
            verify_files(&files, 70_000, &root),
            Err(TileError::CorruptTile { path: tile_path(0, 7, 256), position: 9 })
        );
        let (mut files, root) = layout(70_000);
        files.0.get_mut(&tile_path(1, 0, 256)).unwrap()[32 * 200 + 1] ^= 1;
        assert_eq!(
            verify_files(&files, 70_000, &root),
            Err(TileError::CorruptTile { path: tile_path(1, 0, 256), position: 200 })
        );
        let (mut files, root) = layout(70_000);
        files.0.remove(&tile_path(2, 0, 1));
        assert_eq!(verify_files(&files, 70_000, &root), Err(TileError::Missing { path: tile_path(2, 0, 1) }));
    }
}
