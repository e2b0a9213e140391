//! A Merkle tree whose levels live in files, for the evidence export: the
//! exporter needs an inclusion proof for every entry it writes against a
//! tree of up to millions of leaves, and holding every level in memory
//! (`MemoryTree`) costs 64 bytes an entry. Here each level is a file of
//! 32-byte hashes (level 0 the leaves; node `i` of level `l` the perfect
//! subtree of leaves `[i << l, (i + 1) << l)`, complete subtrees only, as in
//! `MemoryTree`), written as the leaves come, and read back through one
//! cached 4 KiB block per level: proofs for entries in increasing order,
//! the exporter's order, read each block about once. Memory is a few KiB a
//! level, whatever the tree's size.

use std::cell::RefCell;
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use covenant_core::merkle::{self, CompactRange, Hash, HashReader};

/// Hashes per cached block.
const BLOCK: u64 = 128;

/// The tree being written: one file per level, and the one node of each
/// level still waiting for its right sibling.
pub(crate) struct DiskTreeWriter {
    dir: PathBuf,
    levels: Vec<BufWriter<File>>,
    /// The last node of each level when that level holds an odd number.
    pending: Vec<Option<Hash>>,
    range: CompactRange,
}

fn level_path(dir: &Path, level: usize) -> PathBuf {
    dir.join(format!("level-{level}"))
}

impl DiskTreeWriter {
    /// A new tree in `dir` (created; it must not hold a tree already).
    pub(crate) fn create(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(DiskTreeWriter {
            dir: dir.to_path_buf(),
            levels: Vec::new(),
            pending: Vec::new(),
            range: CompactRange::new(),
        })
    }

    fn write(&mut self, level: usize, hash: &Hash) -> std::io::Result<()> {
        while self.levels.len() <= level {
            let f = File::create(level_path(&self.dir, self.levels.len()))?;
            self.levels.push(BufWriter::with_capacity(64 * 1024, f));
            self.pending.push(None);
        }
        match self.levels.get_mut(level) {
            Some(w) => w.write_all(hash),
            None => Err(std::io::Error::other("a level past the tree")),
        }
    }

    /// Appends a leaf given its data.
    pub(crate) fn push_leaf(&mut self, data: &[u8]) -> std::io::Result<()> {
        let leaf = merkle::leaf_hash(data);
        self.range.push(leaf);
        let mut carry = leaf;
        let mut level = 0usize;
        loop {
            self.write(level, &carry)?;
            let slot = self.pending.get_mut(level).ok_or_else(|| std::io::Error::other("a level past the tree"))?;
            match slot.take() {
                // The node completes a pair: its parent goes up a level.
                Some(left) => {
                    carry = merkle::node_hash(&left, &carry);
                    level += 1;
                }
                None => {
                    *slot = Some(carry);
                    return Ok(());
                }
            }
        }
    }

    /// The number of leaves.
    pub(crate) fn size(&self) -> u64 {
        self.range.size()
    }

    /// The root of the leaves so far.
    pub(crate) fn root(&self) -> Hash {
        self.range.root()
    }

    /// Flushes the levels and opens them for reading.
    pub(crate) fn finish(self) -> std::io::Result<DiskTree> {
        let mut files = Vec::new();
        for (level, w) in self.levels.into_iter().enumerate() {
            w.into_inner().map_err(|e| e.into_error())?.sync_data().ok();
            files.push(File::open(level_path(&self.dir, level))?);
        }
        let cache = RefCell::new(vec![None; files.len()]);
        Ok(DiskTree { dir: self.dir, size: self.range.size(), files, cache })
    }
}

/// A cached block: its number and its hashes.
type Block = Option<(u64, Vec<u8>)>;

/// The written tree, read for proofs.
pub(crate) struct DiskTree {
    dir: PathBuf,
    size: u64,
    files: Vec<File>,
    cache: RefCell<Vec<Block>>,
}

impl DiskTree {
    /// The leaf hash of entry `index`.
    pub(crate) fn leaf_hash(&self, index: u64) -> std::io::Result<Hash> {
        if index >= self.size {
            return Err(std::io::Error::other(format!("entry {index} is past the tree of {}", self.size)));
        }
        self.stored_hash(0, index)
    }

    /// The inclusion proof of `index` in the whole tree.
    pub(crate) fn inclusion_proof(&self, index: u64) -> anyhow::Result<Vec<Hash>> {
        merkle::inclusion_proof(self, index, self.size).map_err(|e| anyhow::anyhow!("proof of entry {index}: {e}"))
    }

    /// Removes the tree's files.
    pub(crate) fn remove(self) -> std::io::Result<()> {
        let dir = self.dir.clone();
        drop(self);
        std::fs::remove_dir_all(dir)
    }
}

impl HashReader for DiskTree {
    type Error = std::io::Error;

    fn stored_hash(&self, level: u8, index: u64) -> std::io::Result<Hash> {
        let level = usize::from(level);
        let file = self.files.get(level).ok_or_else(|| std::io::Error::other(format!("no level {level}")))?;
        let block = index / BLOCK;
        let mut cache = self.cache.borrow_mut();
        let slot = cache.get_mut(level).ok_or_else(|| std::io::Error::other(format!("no level {level}")))?;
        if slot.as_ref().is_none_or(|(b, _)| *b != block) {
            // The level's file holds its complete nodes: the last block may
            // be short.
            let nodes = file.metadata()?.len() / 32;
            let start = block * BLOCK;
            let count = nodes.saturating_sub(start).min(BLOCK);
            let mut buf = vec![0u8; usize::try_from(count * 32).map_err(std::io::Error::other)?];
            file.read_exact_at(&mut buf, start * 32)?;
            *slot = Some((block, buf));
        }
        let (_, buf) = slot.as_ref().ok_or_else(|| std::io::Error::other("the block just read"))?;
        let at = usize::try_from((index % BLOCK) * 32).map_err(std::io::Error::other)?;
        buf.get(at..at + 32)
            .and_then(|h| <Hash>::try_from(h).ok())
            .ok_or_else(|| std::io::Error::other(format!("no stored hash at level {level}, index {index}")))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use covenant_core::merkle::MemoryTree;

    #[test]
    fn proofs_are_those_of_the_memory_tree() {
        let dir = std::env::temp_dir().join(format!("covenant-disktree-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for size in [1u64, 2, 3, 7, 8, 129, 300, 1000] {
            let mut w = DiskTreeWriter::create(&dir).unwrap();
            let mut m = MemoryTree::new();
            for i in 0..size {
                w.push_leaf(&i.to_le_bytes()).unwrap();
                m.push_leaf(&i.to_le_bytes());
            }
            assert_eq!(w.root(), m.root());
            let t = w.finish().unwrap();
            for i in [0, size / 2, size - 1] {
                assert_eq!(t.inclusion_proof(i).unwrap(), merkle::inclusion_proof(&m, i, size).unwrap());
                assert_eq!(t.leaf_hash(i).unwrap(), m.leaf_hash(i).unwrap());
            }
            for i in 0..size {
                assert_eq!(t.inclusion_proof(i).unwrap(), merkle::inclusion_proof(&m, i, size).unwrap(), "{size} {i}");
            }
            t.remove().unwrap();
        }
    }
}
