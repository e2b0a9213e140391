//! Merkle trees, inclusion proofs and consistency proofs as in RFC 6962 §2.1
//! and RFC 9162 §2.1, with SHA-256.
//!
//! Leaves are hashed as `SHA-256(0x00 || data)` and interior nodes as
//! `SHA-256(0x01 || left || right)` (RFC 6962 §2.1 / RFC 9162 §2.1.1). Proof
//! generation reads hashes of complete (perfect) subtrees from a
//! [`HashReader`], so a server can back it with tlog tiles, and makes
//! O(log n) reads. Verification follows the algorithms of RFC 9162 §2.1.3.2
//! and §2.1.4.2 step by step, allocates nothing and runs in O(log n).
//! [`MemoryTree`] keeps every level in memory for tests, the witness and small
//! logs.

use sha2::{Digest as _, Sha256};

/// A SHA-256 hash: a leaf hash, a node hash or a tree root.
pub type Hash = [u8; 32];

/// The root of the empty tree: SHA-256 of the empty string (RFC 6962 §2.1:
/// `MTH({}) = SHA-256()`).
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24, 0x27, 0xae, 0x41,
    0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// Domain separation prefix of leaf hashes (RFC 6962 §2.1).
const LEAF_PREFIX: u8 = 0x00;
/// Domain separation prefix of interior node hashes (RFC 6962 §2.1).
const NODE_PREFIX: u8 = 0x01;

/// The hash of a leaf: `SHA-256(0x00 || data)` (RFC 6962 §2.1, RFC 9162 §2.1.1).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([LEAF_PREFIX]);
    h.update(data);
    h.finalize().into()
}

/// The hash of an interior node: `SHA-256(0x01 || left || right)`
/// (RFC 6962 §2.1, RFC 9162 §2.1.1).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([NODE_PREFIX]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Supplies stored hashes of complete (perfect) subtrees: the hash of the
/// subtree of 2^level leaves covering leaves `[index << level, (index+1) << level)`.
///
/// Callers only ask for subtrees entirely inside the tree size they work with.
/// The server backs it with tlog tiles.
pub trait HashReader {
    /// Why a stored hash could not be read.
    type Error;

    /// The hash of the perfect subtree of 2^`level` leaves starting at leaf
    /// `index << level`. Level 0 holds the leaf hashes.
    fn stored_hash(&self, level: u8, index: u64) -> Result<Hash, Self::Error>;
}

/// Why an inclusion or consistency proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The leaf index is not inside the tree (`index >= size`).
    #[error("leaf index {index} is out of range for tree size {size}")]
    IndexOutOfRange {
        /// The claimed leaf index.
        index: u64,
        /// The claimed tree size.
        size: u64,
    },
    /// A consistency proof from the empty tree was asked for; it proves nothing and is refused.
    #[error("consistency from the empty tree (size 0) is refused")]
    EmptyOldTree,
    /// The old tree is larger than the new one.
    #[error("old tree size {size1} is larger than new tree size {size2}")]
    OldSizeLarger {
        /// The old (first) tree size.
        size1: u64,
        /// The new (second) tree size.
        size2: u64,
    },
    /// The proof does not have the number of hashes the sizes call for.
    #[error("proof has {got} hashes, expected {expected}")]
    WrongProofLength {
        /// The number of hashes the sizes call for.
        expected: usize,
        /// The number of hashes given.
        got: usize,
    },
    /// The root computed from the proof is not the root given (for a
    /// consistency proof: either of the two roots).
    #[error("computed root does not match the given root")]
    RootMismatch,
}

/// Why a root or a proof could not be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofGenError<E> {
    /// The leaf index is not inside the tree (`index >= size`).
    #[error("leaf index {index} is out of range for tree size {size}")]
    IndexOutOfRange {
        /// The leaf index asked for.
        index: u64,
        /// The tree size asked for.
        size: u64,
    },
    /// The sizes (or the leaf range) cannot be used: for a consistency proof
    /// `size1 == 0` or `size1 > size2`; for [`subtree_root`] the range
    /// `[size1, size2)` is reversed or its start is not aligned.
    #[error("unusable sizes {size1} and {size2}")]
    BadSizes {
        /// The old tree size (or the start of the leaf range).
        size1: u64,
        /// The new tree size (or the end of the leaf range).
        size2: u64,
    },
    /// The [`HashReader`] failed.
    #[error("reading a stored hash failed: {0}")]
    Store(E),
}

/// The largest power of two strictly less than `n`, for `n >= 2`
/// (the split point `k` of RFC 6962 §2.1). Returns 0 for `n < 2`.
fn split_point(n: u64) -> u64 {
    if n < 2 {
        return 0;
    }
    // n - 1 >= 1, so the highest set bit of n - 1 exists and 1 << it cannot overflow.
    let hb = 63 - (n - 1).leading_zeros();
    1u64 << hb
}

/// The Merkle Tree Hash (RFC 6962 §2.1, `MTH`) of the leaves `[start, end)`.
///
/// The range is decomposed into at most 64 perfect subtrees, one per set bit
/// of `end - start` (largest first), each read with one
/// [`HashReader::stored_hash`] call, and folded from the right as the
/// recursion of RFC 6962 §2.1 does. `start` must therefore be a multiple of
/// the largest power of two not above `end - start`, which holds for every
/// subtree the RFC 6962 recursion visits. An empty range gives [`EMPTY_ROOT`].
///
/// Errors: [`ProofGenError::BadSizes`] if `start > end` or `start` is not
/// aligned; [`ProofGenError::Store`] if the reader fails.
pub fn subtree_root<R: HashReader>(r: &R, start: u64, end: u64) -> Result<Hash, ProofGenError<R::Error>> {
    let Some(n) = end.checked_sub(start) else {
        return Err(ProofGenError::BadSizes { size1: start, size2: end });
    };
    if n == 0 {
        // RFC 6962 §2.1: the hash of an empty list is the hash of an empty string.
        return Ok(EMPTY_ROOT);
    }
    let top = 63 - n.leading_zeros(); // n >= 1
    let align_mask = (1u64 << top) - 1; // top <= 63: no overflow
    if start & align_mask != 0 {
        return Err(ProofGenError::BadSizes { size1: start, size2: end });
    }
    // Walk the set bits of n from the lowest (the rightmost, smallest subtree)
    // to the highest, so that MTH = H(p1, H(p2, ... H(p_{m-1}, p_m))) folds
    // without a buffer.
    let mut acc: Option<Hash> = None;
    let mut piece_end = end;
    let mut rest = n;
    while rest != 0 {
        let level = rest.trailing_zeros(); // < 64
        let width = 1u64 << level;
        rest &= rest - 1; // clear the lowest set bit
        let piece_start = piece_end - width; // piece_end - start >= width
        let level_u8 = u8::try_from(level).unwrap_or(u8::MAX); // level < 64 always fits
        let h = r.stored_hash(level_u8, piece_start >> level).map_err(ProofGenError::Store)?;
        acc = Some(match acc {
            None => h,
            Some(right) => node_hash(&h, &right),
        });
        piece_end = piece_start;
    }
    Ok(acc.unwrap_or(EMPTY_ROOT))
}

/// The Merkle Tree Hash of the first `size` leaves (RFC 6962 §2.1);
/// [`EMPTY_ROOT`] for `size == 0`. Makes at most 64 reads.
pub fn root<R: HashReader>(r: &R, size: u64) -> Result<Hash, ProofGenError<R::Error>> {
    subtree_root(r, 0, size)
}

/// The inclusion proof (audit path) of leaf `index` in the tree of `size`
/// leaves: RFC 6962 §2.1.1 `PATH(m, D[n])`, sibling of the leaf first, the
/// sibling nearest the root last. O(log n) reads.
///
/// Errors: [`ProofGenError::IndexOutOfRange`] if `index >= size`;
/// [`ProofGenError::Store`] if the reader fails.
pub fn inclusion_proof<R: HashReader>(r: &R, index: u64, size: u64) -> Result<Vec<Hash>, ProofGenError<R::Error>> {
    if index >= size {
        return Err(ProofGenError::IndexOutOfRange { index, size });
    }
    // RFC 6962 §2.1.1: PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n]) for m < k,
    // and PATH(m - k, D[k:n]) : MTH(D[0:k]) for m >= k. Descending from the
    // root gives the siblings top-down; the path lists them bottom-up.
    // Invariant: lo is a multiple of the largest power of two <= hi - lo, so
    // every subtree_root below is aligned.
    let mut proof = Vec::with_capacity(64);
    let (mut lo, mut hi) = (0u64, size);
    while hi - lo > 1 {
        let mid = lo + split_point(hi - lo);
        if index < mid {
            proof.push(subtree_root(r, mid, hi)?);
            hi = mid;
        } else {
            proof.push(subtree_root(r, lo, mid)?);
            lo = mid;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// The consistency proof between the trees of `size1` and `size2` leaves:
/// RFC 6962 §2.1.2 `PROOF(m, D[n]) = SUBPROOF(m, D[n], true)`. Empty when
/// `size1 == size2`. O(log n) reads.
///
/// Errors: [`ProofGenError::BadSizes`] if `size1 == 0` or `size1 > size2`;
/// [`ProofGenError::Store`] if the reader fails.
pub fn consistency_proof<R: HashReader>(r: &R, size1: u64, size2: u64) -> Result<Vec<Hash>, ProofGenError<R::Error>> {
    if size1 == 0 || size1 > size2 {
        return Err(ProofGenError::BadSizes { size1, size2 });
    }
    // RFC 6962 §2.1.2:
    //   SUBPROOF(m, D[m], true)  = {}
    //   SUBPROOF(m, D[m], false) = {MTH(D[m])}
    //   m <= k: SUBPROOF(m, D[n], b) = SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
    //   m > k:  SUBPROOF(m, D[n], b) = SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
    // Descending collects the appended hashes outermost first; the proof is
    // the innermost result followed by them innermost first, so push in
    // descent order and reverse.
    let mut proof = Vec::with_capacity(65);
    let (mut lo, mut hi) = (0u64, size2);
    let mut complete = true; // the flag b of SUBPROOF
    while size1 != hi {
        // Here lo < size1 < hi, so hi - lo >= 2.
        let mid = lo + split_point(hi - lo);
        if size1 <= mid {
            proof.push(subtree_root(r, mid, hi)?);
            hi = mid;
        } else {
            proof.push(subtree_root(r, lo, mid)?);
            lo = mid;
            complete = false;
        }
    }
    if !complete {
        proof.push(subtree_root(r, lo, hi)?);
    }
    proof.reverse();
    Ok(proof)
}

/// The number of hashes in the inclusion proof of `index` in a tree of `size`
/// leaves, for `index < size`: the levels below the point where the paths of
/// `index` and `size - 1` meet, plus one left sibling per set bit above it.
fn inclusion_proof_len(index: u64, size: u64) -> usize {
    let last = size.saturating_sub(1);
    let inner = 64 - (index ^ last).leading_zeros(); // <= 64
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    // Both are <= 64.
    (inner + border) as usize
}

/// The number of hashes in the consistency proof from `size1` to `size2`, for
/// `0 < size1 < size2`.
fn consistency_proof_len(size1: u64, size2: u64) -> usize {
    let shift = size1.trailing_zeros();
    let index = size1.saturating_sub(1);
    let last = size2.saturating_sub(1);
    let inner = 64 - (index ^ last).leading_zeros();
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    // The proof starts with the hash of the subtree of 2^shift leaves that
    // ends the old tree, unless that subtree is the whole old tree.
    let seed = u32::from(!size1.is_power_of_two());
    (inner.saturating_sub(shift) + border + seed) as usize
}

/// Runs steps 1 to 4 of RFC 9162 §2.1.3.2 and the `sn == 0` check of step 5:
/// the root implied by `leaf` at `index` in a tree of `size` leaves and the
/// inclusion `proof` (sibling first). The caller compares it with the root.
///
/// Errors: [`ProofError::IndexOutOfRange`] if `index >= size`;
/// [`ProofError::WrongProofLength`] if the proof is too short or too long.
pub fn root_from_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash]) -> Result<Hash, ProofError> {
    // RFC 9162 §2.1.3.2 step 1.
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let wrong_len = || ProofError::WrongProofLength { expected: inclusion_proof_len(index, size), got: proof.len() };
    // Step 2.
    let mut fnode = index;
    let mut snode = size - 1; // size > index >= 0
    // Step 3.
    let mut r = *leaf;
    // Step 4.
    for p in proof {
        // Step 4a.
        if snode == 0 {
            return Err(wrong_len());
        }
        // Step 4b.
        if fnode & 1 == 1 || fnode == snode {
            // Step 4b.i.
            r = node_hash(p, &r);
            // Step 4b.ii.
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            // Step 4b, otherwise.
            r = node_hash(&r, p);
        }
        // Step 4c.
        fnode >>= 1;
        snode >>= 1;
    }
    // Step 5 (the sn half; the root comparison is the caller's).
    if snode != 0 {
        return Err(wrong_len());
    }
    Ok(r)
}

/// Verifies that `leaf` (a leaf hash) is at `index` in the tree of `size`
/// leaves with root `root`, given the inclusion `proof` (sibling first):
/// RFC 9162 §2.1.3.2.
///
/// Errors: [`ProofError::IndexOutOfRange`], [`ProofError::WrongProofLength`],
/// [`ProofError::RootMismatch`].
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> Result<(), ProofError> {
    let computed = root_from_inclusion(index, size, leaf, proof)?;
    // RFC 9162 §2.1.3.2 step 5: compare r against the root hash.
    if computed == *root { Ok(()) } else { Err(ProofError::RootMismatch) }
}

/// Verifies that the tree of `size1` leaves with root `root1` is a prefix of
/// the tree of `size2` leaves with root `root2`, given the consistency
/// `proof`: RFC 9162 §2.1.4.2.
///
/// `size1 == 0` is always refused with [`ProofError::EmptyOldTree`] (even
/// 0 → 0): consistency with the empty tree proves nothing. `size1 == size2`
/// needs an empty proof and `root1 == root2`.
///
/// Errors: [`ProofError::EmptyOldTree`], [`ProofError::OldSizeLarger`],
/// [`ProofError::WrongProofLength`], [`ProofError::RootMismatch`].
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &Hash,
    root2: &Hash,
) -> Result<(), ProofError> {
    if size1 == 0 {
        return Err(ProofError::EmptyOldTree);
    }
    if size1 > size2 {
        return Err(ProofError::OldSizeLarger { size1, size2 });
    }
    if size1 == size2 {
        // RFC 6962 §2.1.2: PROOF(m, D[m]) = SUBPROOF(m, D[m], true) = {}.
        if !proof.is_empty() {
            return Err(ProofError::WrongProofLength { expected: 0, got: proof.len() });
        }
        return if root1 == root2 { Ok(()) } else { Err(ProofError::RootMismatch) };
    }
    let wrong_len = || ProofError::WrongProofLength { expected: consistency_proof_len(size1, size2), got: proof.len() };
    // RFC 9162 §2.1.4.2 step 1.
    if proof.is_empty() {
        return Err(wrong_len());
    }
    // Step 2: if first is an exact power of 2, prepend first_hash to the path.
    let seed = if size1.is_power_of_two() { Some(root1) } else { None };
    let mut path = seed.into_iter().chain(proof.iter());
    // Step 3.
    let mut fnode = size1 - 1; // size1 >= 1
    let mut snode = size2 - 1; // size2 > size1 >= 1
    // Step 4.
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    // Step 5.
    let Some(first) = path.next() else {
        return Err(wrong_len());
    };
    let mut fr = *first;
    let mut sr = *first;
    // Step 6.
    for c in path {
        // Step 6a.
        if snode == 0 {
            return Err(wrong_len());
        }
        // Step 6b.
        if fnode & 1 == 1 || fnode == snode {
            // Steps 6b.1 and 6b.2.
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            // Step 6b.3.
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            // Step 6b, otherwise.
            sr = node_hash(&sr, c);
        }
        // Step 6c.
        fnode >>= 1;
        snode >>= 1;
    }
    // Step 7.
    if snode != 0 {
        return Err(wrong_len());
    }
    if fr != *root1 || sr != *root2 {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// A hash a [`MemoryTree`] was asked for but does not hold: the subtree is not
/// complete inside the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no stored hash at level {level}, index {index}")]
pub struct MissingHash {
    /// The level asked for (0 = leaves).
    pub level: u8,
    /// The index of the subtree within its level.
    pub index: u64,
}

/// The right edge of a tree: the roots of the perfect subtrees that cover
/// its leaves, largest first (at most 64 hashes). Enough to append leaves
/// and compute the root, so a verifier can follow a log of any size in
/// constant memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    peaks: Vec<Hash>,
}

impl CompactRange {
    /// The range of an empty tree.
    pub fn new() -> Self {
        CompactRange::default()
    }

    /// Rebuilds a range from its size and peaks (as stored by [`CompactRange::peaks`]).
    pub fn from_parts(size: u64, peaks: Vec<Hash>) -> Option<Self> {
        (peaks.len() == size.count_ones() as usize).then_some(CompactRange { size, peaks })
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The peaks, largest subtree first.
    pub fn peaks(&self) -> &[Hash] {
        &self.peaks
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        // Merge equal-sized subtrees: one merge per trailing one bit of size.
        let mut size = self.size;
        while size & 1 == 1 {
            if let Some(left) = self.peaks.pop() {
                hash = node_hash(&left, &hash);
            }
            size >>= 1;
        }
        self.peaks.push(hash);
        self.size += 1;
    }

    /// The root (RFC 6962 MTH) of the leaves so far.
    pub fn root(&self) -> Hash {
        let mut iter = self.peaks.iter().rev();
        let Some(last) = iter.next() else { return EMPTY_ROOT };
        iter.fold(*last, |acc, peak| node_hash(peak, &acc))
    }
}

/// An in-memory tree that stores every level (for tests, the witness and small logs).
///
/// Level 0 holds the leaf hashes; entry `i` of level `l` is the hash of the
/// perfect subtree of leaves `[i << l, (i + 1) << l)`. Only complete subtrees
/// are stored.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a leaf given its data (hashed with [`leaf_hash`]); returns its index.
    pub fn push_leaf(&mut self, data: &[u8]) -> u64 {
        self.push_hash(leaf_hash(data))
    }

    /// Appends a leaf given its leaf hash; returns its index.
    pub fn push_hash(&mut self, leaf_hash: Hash) -> u64 {
        let index = self.size();
        let mut carry = leaf_hash;
        let mut level = 0usize;
        loop {
            if self.levels.len() <= level {
                self.levels.push(Vec::new());
            }
            let Some(nodes) = self.levels.get_mut(level) else {
                break; // unreachable: the level was just created
            };
            nodes.push(carry);
            // A node with an even number of nodes on its level completes a
            // perfect subtree one level up.
            if nodes.len() % 2 != 0 {
                break;
            }
            let mut pair = nodes.iter().rev().take(2);
            match (pair.next(), pair.next()) {
                (Some(right), Some(left)) => carry = node_hash(left, right),
                _ => break,
            }
            level += 1;
        }
        index
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| leaves.len() as u64)
    }

    /// The Merkle Tree Hash of the whole tree (RFC 6962 §2.1); [`EMPTY_ROOT`] when empty.
    pub fn root(&self) -> Hash {
        let size = self.size();
        // The perfect subtrees of the RFC 6962 decomposition are the last
        // node of every level l whose bit is set in the size; fold them from
        // the smallest (rightmost) up.
        let mut acc: Option<Hash> = None;
        for (level, nodes) in self.levels.iter().enumerate() {
            if size.checked_shr(level as u32).unwrap_or(0) & 1 == 0 {
                continue;
            }
            if let Some(h) = nodes.last() {
                acc = Some(match acc {
                    None => *h,
                    Some(right) => node_hash(h, &right),
                });
            }
        }
        acc.unwrap_or(EMPTY_ROOT)
    }

    /// The hash of leaf `index`, if the tree has it.
    pub fn leaf_hash(&self, index: u64) -> Option<Hash> {
        let i = usize::try_from(index).ok()?;
        self.levels.first()?.get(i).copied()
    }
}

impl HashReader for MemoryTree {
    type Error = MissingHash;

    fn stored_hash(&self, level: u8, index: u64) -> Result<Hash, MissingHash> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.levels.get(usize::from(level))?.get(i).copied())
            .ok_or(MissingHash { level, index })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use super::*;

    /// The leaves behind the transparency-dev/merkle test vectors.
    const LEAVES: [&str; 8] =
        ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];

    fn tree(n: usize) -> MemoryTree {
        let mut t = MemoryTree::new();
        for leaf in LEAVES.iter().take(n) {
            t.push_leaf(&hex::decode(leaf).unwrap());
        }
        t
    }

    /// RFC 6962 §2.1 MTH, straight from the definition.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => EMPTY_ROOT,
            1 => leaves[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(hex::encode(EMPTY_ROOT), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let digest: Hash = Sha256::digest(b"").into();
        assert_eq!(EMPTY_ROOT, digest);
        assert_eq!(MemoryTree::new().root(), EMPTY_ROOT);
        assert_eq!(root(&MemoryTree::new(), 0).unwrap(), EMPTY_ROOT);
    }

    #[test]
    fn compact_range_matches_the_tree() {
        let mut range = CompactRange::new();
        let mut tree = MemoryTree::new();
        assert_eq!(range.root(), EMPTY_ROOT);
        for i in 0u64..300 {
            range.push(leaf_hash(&i.to_be_bytes()));
            tree.push_leaf(&i.to_be_bytes());
            assert_eq!(range.root(), tree.root(), "size {}", i + 1);
            assert_eq!(CompactRange::from_parts(range.size(), range.peaks().to_vec()), Some(range.clone()));
        }
    }

    #[test]
    fn size_8_root() {
        let t = tree(8);
        let want = "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328";
        assert_eq!(t.size(), 8);
        assert_eq!(hex::encode(t.root()), want);
        assert_eq!(hex::encode(root(&t, 8).unwrap()), want);
    }

    #[test]
    fn leaf_hash_of_empty_leaf() {
        // SHA-256(0x00), the first leaf of the test vectors.
        assert_eq!(hex::encode(leaf_hash(b"")), "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d");
    }

    #[test]
    fn roots_match_the_definition() {
        let mut t = MemoryTree::new();
        let mut hashes = Vec::new();
        for i in 0u32..70 {
            assert_eq!(t.root(), mth(&hashes));
            assert_eq!(root(&t, t.size()).unwrap(), mth(&hashes));
            let h = leaf_hash(&i.to_be_bytes());
            assert_eq!(t.push_hash(h), u64::from(i));
            hashes.push(h);
            // Every prefix root is readable from the stored hashes.
            for s in 0..=hashes.len() {
                assert_eq!(root(&t, s as u64).unwrap(), mth(&hashes[..s]));
            }
        }
        assert_eq!(t.leaf_hash(3), Some(hashes[3]));
        assert_eq!(t.leaf_hash(70), None);
    }

    #[test]
    fn proof_lengths_match_the_formulas() {
        let t = {
            let mut t = MemoryTree::new();
            for i in 0u32..40 {
                t.push_leaf(&i.to_be_bytes());
            }
            t
        };
        for size in 1..=40u64 {
            for index in 0..size {
                assert_eq!(inclusion_proof(&t, index, size).unwrap().len(), inclusion_proof_len(index, size));
            }
            for size1 in 1..size {
                assert_eq!(consistency_proof(&t, size1, size).unwrap().len(), consistency_proof_len(size1, size));
            }
        }
    }

    #[test]
    fn wrong_lengths_are_reported() {
        let t = tree(8);
        let r = t.root();
        let l = t.leaf_hash(2).unwrap();
        let p = inclusion_proof(&t, 2, 8).unwrap();
        assert_eq!(verify_inclusion(2, 8, &l, &p, &r), Ok(()));
        assert_eq!(verify_inclusion(2, 8, &l, &p[..2], &r), Err(ProofError::WrongProofLength { expected: 3, got: 2 }));
        let r5 = root(&t, 5).unwrap();
        let c = consistency_proof(&t, 5, 8).unwrap();
        assert_eq!(verify_consistency(5, 8, &c, &r5, &r), Ok(()));
        assert_eq!(
            verify_consistency(5, 8, &c[1..], &r5, &r),
            Err(ProofError::WrongProofLength { expected: c.len(), got: c.len() - 1 })
        );
        assert_eq!(verify_consistency(5, 8, &c, &r, &r5), Err(ProofError::RootMismatch));
    }

    #[test]
    fn errors_are_std_errors() {
        fn is_error<T: std::error::Error + Send + Sync + 'static>() {}
        is_error::<ProofError>();
        is_error::<MissingHash>();
        is_error::<ProofGenError<MissingHash>>();
        let e: ProofGenError<MissingHash> = ProofGenError::Store(MissingHash { level: 1, index: 2 });
        assert_eq!(e.to_string(), "reading a stored hash failed: no stored hash at level 1, index 2");
    }

    #[test]
    fn bad_arguments() {
        let t = tree(8);
        let h = t.root();
        assert_eq!(inclusion_proof(&t, 8, 8), Err(ProofGenError::IndexOutOfRange { index: 8, size: 8 }));
        assert_eq!(consistency_proof(&t, 0, 8), Err(ProofGenError::BadSizes { size1: 0, size2: 8 }));
        assert_eq!(consistency_proof(&t, 5, 4), Err(ProofGenError::BadSizes { size1: 5, size2: 4 }));
        assert_eq!(consistency_proof(&t, 8, 8), Ok(vec![]));
        assert_eq!(subtree_root(&t, 2, 6), Err(ProofGenError::BadSizes { size1: 2, size2: 6 }));
        assert_eq!(subtree_root(&t, 4, 2), Err(ProofGenError::BadSizes { size1: 4, size2: 2 }));
        assert_eq!(root(&t, 9), Err(ProofGenError::Store(MissingHash { level: 0, index: 8 })));
        assert_eq!(verify_consistency(0, 0, &[], &EMPTY_ROOT, &EMPTY_ROOT), Err(ProofError::EmptyOldTree));
        assert_eq!(verify_consistency(3, 2, &[], &h, &h), Err(ProofError::OldSizeLarger { size1: 3, size2: 2 }));
        assert_eq!(verify_inclusion(0, 0, &h, &[], &h), Err(ProofError::IndexOutOfRange { index: 0, size: 0 }));
        // Huge sizes neither overflow nor panic.
        assert!(verify_inclusion(u64::MAX - 1, u64::MAX, &h, &[h; 3], &h).is_err());
        assert!(verify_consistency(u64::MAX - 1, u64::MAX, &[h; 3], &h, &h).is_err());
        assert!(verify_consistency(1 << 63, u64::MAX, &[h; 3], &h, &h).is_err());
        assert_eq!(inclusion_proof_len(u64::MAX - 1, u64::MAX), 63);
        assert_eq!(inclusion_proof_len(0, u64::MAX), 64);
    }
}
