//! Property tests of `covenant_core::merkle`: generated inclusion and
//! consistency proofs verify, every mutation of them is refused, and the
//! generated proofs equal those of the RFC 6962 §2.1.1 / §2.1.2 definitions.
//! Random trees of 1 to 300 leaves (proptest) and every size up to 64
//! (exhaustive).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use covenant_core::merkle::{
    EMPTY_ROOT, Hash, MemoryTree, ProofError, consistency_proof, inclusion_proof, leaf_hash, node_hash, root,
    verify_consistency, verify_inclusion,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// A tree of `n` leaves; leaf `i` is the 16 bytes `seed || i` (big-endian).
fn build(n: u64, seed: u64) -> (MemoryTree, Vec<Hash>) {
    let mut tree = MemoryTree::new();
    let mut leaves = Vec::new();
    for i in 0..n {
        let mut data = seed.to_be_bytes().to_vec();
        data.extend_from_slice(&i.to_be_bytes());
        assert_eq!(tree.push_leaf(&data), i);
        leaves.push(leaf_hash(&data));
    }
    (tree, leaves)
}

fn flip(h: &Hash, bit: u64) -> Hash {
    let mut out = *h;
    out[(bit / 8 % 32) as usize] ^= 1 << (bit % 8);
    out
}

/// The largest power of two strictly below `n` (`n >= 2`): the split `k` of RFC 6962 §2.1.
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// RFC 6962 §2.1 MTH, from the definition.
fn mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => EMPTY_ROOT,
        1 => d[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&mth(&d[..k]), &mth(&d[k..]))
        }
    }
}

/// RFC 6962 §2.1.1 PATH(m, D[n]), from the definition.
fn path(m: usize, d: &[Hash]) -> Vec<Hash> {
    if d.len() <= 1 {
        return Vec::new();
    }
    let k = split(d.len() as u64) as usize;
    if m < k {
        let mut p = path(m, &d[..k]);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = path(m - k, &d[k..]);
        p.push(mth(&d[..k]));
        p
    }
}

/// RFC 6962 §2.1.2 SUBPROOF(m, D[n], b), from the definition.
fn subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
    if m == d.len() {
        return if b { Vec::new() } else { vec![mth(d)] };
    }
    let k = split(d.len() as u64) as usize;
    if m <= k {
        let mut p = subproof(m, &d[..k], b);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = subproof(m - k, &d[k..], false);
        p.push(mth(&d[..k]));
        p
    }
}

/// The shape of an inclusion proof, from the RFC 6962 §2.1.1 recursion: for
/// each proof hash, leaf side first, whether it is a left sibling.
///
/// An RFC 9162 §2.1.3.2 verifier sees the tree size only through this shape:
/// two sizes with the same shape for the same index make it hash the same
/// values in the same order. So a proof for `(index, size)` with its true
/// root also verifies as `(index, size')` whenever the shapes are equal
/// (e.g. index 0, sizes 3 and 4: both `[right, right]`). That is no forgery
/// (the root is the size-`size` root, and a signed checkpoint binds a root to
/// its size); it is the one legal exception to "a wrong size is refused".
fn inclusion_shape(index: u64, size: u64) -> Vec<bool> {
    let (mut lo, mut hi) = (0u64, size);
    let mut sides = Vec::new();
    while hi - lo > 1 {
        let mid = lo + split(hi - lo);
        if index < mid {
            sides.push(false);
            hi = mid;
        } else {
            sides.push(true);
            lo = mid;
        }
    }
    sides.reverse();
    sides
}

/// The shape of a consistency proof, from the RFC 6962 §2.1.2 recursion:
/// whether the first hash is the old root itself (left out of the proof,
/// `size1` a power of two or `size1 == size2`), then for each further hash,
/// innermost first, whether it is a left sibling in both trees (`true`) or a
/// right sibling in the new tree only (`false`).
///
/// As for inclusion, an RFC 9162 §2.1.4.2 verifier sees the sizes only
/// through this shape, so a proof with its true roots also verifies for
/// other sizes of the same shape (e.g. sizes 2 → 3 and 2 → 4: both "old
/// root, then one right sibling"); that is the only legal exception to "a
/// wrong size is refused".
fn consistency_shape(size1: u64, size2: u64) -> (bool, Vec<bool>) {
    let (mut lo, mut hi) = (0u64, size2);
    let mut complete = true;
    let mut steps = Vec::new();
    while size1 != hi {
        let mid = lo + split(hi - lo);
        if size1 <= mid {
            steps.push(false);
            hi = mid;
        } else {
            steps.push(true);
            lo = mid;
            complete = false;
        }
    }
    steps.reverse();
    (complete, steps)
}

/// Checks the inclusion proof of `index` in the first `size` leaves of
/// `tree` and that every mutation of it is refused. `picks` choose the
/// element and bit to flip and the hash to append.
fn check_inclusion(tree: &MemoryTree, index: u64, size: u64, picks: (u64, u64)) {
    let r = root(tree, size).unwrap();
    let leaf = tree.leaf_hash(index).unwrap();
    let proof = inclusion_proof(tree, index, size).unwrap();
    assert_eq!(verify_inclusion(index, size, &leaf, &proof, &r), Ok(()), "index {index} size {size}");

    let refused = |i: u64, s: u64, l: &Hash, p: &[Hash], rt: &Hash, what: &str| {
        assert!(verify_inclusion(i, s, l, p, rt).is_err(), "{what} accepted: index {index} size {size}");
    };
    // Truncated and extended.
    if let Some((_, rest)) = proof.split_last() {
        refused(index, size, &leaf, rest, &r, "truncated proof");
    }
    for extra in [r, leaf, flip(&leaf, picks.1)] {
        let mut longer = proof.clone();
        longer.push(extra);
        refused(index, size, &leaf, &longer, &r, "extended proof");
        longer.rotate_right(1);
        refused(index, size, &leaf, &longer, &r, "proof with a preceding hash");
    }
    // One bit flipped in one element.
    if !proof.is_empty() {
        let mut bad = proof.clone();
        let i = (picks.0 % proof.len() as u64) as usize;
        bad[i] = flip(&bad[i], picks.1);
        refused(index, size, &leaf, &bad, &r, "bit-flipped proof");
    }
    // Wrong index: index ± 1 within range (never the same shape for the same size), and out of range.
    if index + 1 < size {
        refused(index + 1, size, &leaf, &proof, &r, "index + 1");
    }
    if index > 0 {
        refused(index - 1, size, &leaf, &proof, &r, "index - 1");
    }
    for i in [size, size + 1, u64::MAX] {
        assert_eq!(verify_inclusion(i, size, &leaf, &proof, &r), Err(ProofError::IndexOutOfRange { index: i, size }));
    }
    // Wrong size: refused unless it has the same proof shape (see inclusion_shape).
    for s in [size - 1, size + 1, size * 2, size / 2, 0, u64::MAX] {
        if s == size {
            continue;
        }
        let same_shape = index < s && inclusion_shape(index, s) == inclusion_shape(index, size);
        assert_eq!(
            verify_inclusion(index, s, &leaf, &proof, &r).is_ok(),
            same_shape,
            "size {s} instead of {size}, index {index}"
        );
        // Against the checkpoint of that size (its size and root come as a
        // signed pair), a wrong size is always refused.
        if s > 0 && s <= tree.size() {
            refused(index, s, &leaf, &proof, &root(tree, s).unwrap(), "wrong size with that size's root");
        }
    }
    // Wrong leaf and wrong root.
    refused(index, size, &flip(&leaf, picks.1), &proof, &r, "wrong leaf");
    if size > 1 {
        // (For size 1 the root is the leaf hash.)
        refused(index, size, &r, &proof, &r, "root as leaf");
    }
    refused(index, size, &leaf, &proof, &flip(&r, picks.1), "wrong root");
    refused(index, size, &leaf, &proof, &EMPTY_ROOT, "empty root");
    if size > 1 {
        refused(index, size, &leaf, &proof, &root(tree, size - 1).unwrap(), "root of size - 1");
    }
}

/// Checks the consistency proof from the first `size1` to the first `size2`
/// leaves of `tree` and that every mutation of it is refused.
fn check_consistency(tree: &MemoryTree, size1: u64, size2: u64, picks: (u64, u64)) {
    let r1 = root(tree, size1).unwrap();
    let r2 = root(tree, size2).unwrap();
    let proof = consistency_proof(tree, size1, size2).unwrap();
    assert_eq!(verify_consistency(size1, size2, &proof, &r1, &r2), Ok(()), "{size1} -> {size2}");

    let refused = |s1: u64, s2: u64, p: &[Hash], a: &Hash, b: &Hash, what: &str| {
        assert!(verify_consistency(s1, s2, p, a, b).is_err(), "{what} accepted: {size1} -> {size2}");
    };
    // Truncated and extended.
    if let Some((_, rest)) = proof.split_last() {
        refused(size1, size2, rest, &r1, &r2, "truncated proof");
        refused(size1, size2, &proof[1..], &r1, &r2, "proof without its first hash");
    }
    for extra in [r1, r2, flip(&r1, picks.1)] {
        let mut longer = proof.clone();
        longer.push(extra);
        refused(size1, size2, &longer, &r1, &r2, "extended proof");
        longer.rotate_right(1);
        refused(size1, size2, &longer, &r1, &r2, "proof with a preceding hash");
    }
    // One bit flipped in one element.
    if !proof.is_empty() {
        let mut bad = proof.clone();
        let i = (picks.0 % proof.len() as u64) as usize;
        bad[i] = flip(&bad[i], picks.1);
        refused(size1, size2, &bad, &r1, &r2, "bit-flipped proof");
    }
    // Wrong sizes: refused unless the sizes are valid and have the same
    // proof shape (see consistency_shape).
    let shape = consistency_shape(size1, size2);
    let pairs = [
        (size1.wrapping_sub(1), size2),
        (size1 + 1, size2),
        (size1, size2 - 1),
        (size1, size2 + 1),
        (size1, size2 * 2),
        (size1 * 2, size2 * 2),
        (0, size2),
        (size2, size1),
    ];
    for (s1, s2) in pairs {
        if (s1, s2) == (size1, size2) {
            continue;
        }
        let same_shape = 0 < s1 && s1 <= s2 && consistency_shape(s1, s2) == shape;
        assert_eq!(
            verify_consistency(s1, s2, &proof, &r1, &r2).is_ok(),
            same_shape,
            "{s1} -> {s2} instead of {size1} -> {size2}"
        );
        // Against the roots of those sizes (each signed with its size), a
        // wrong size is always refused.
        // (Unless the proof is also the genuine proof of those sizes: the
        // empty proof of 1 -> 1 is the genuine proof of 2 -> 2 as well.)
        if 0 < s1 && s1 <= s2 && s2 <= tree.size() && consistency_proof(tree, s1, s2).unwrap() != proof {
            let (a, b) = (root(tree, s1).unwrap(), root(tree, s2).unwrap());
            refused(s1, s2, &proof, &a, &b, "wrong sizes with those sizes' roots");
        }
    }
    // Old size 0 is always refused.
    assert_eq!(verify_consistency(0, size2, &proof, &r1, &r2), Err(ProofError::EmptyOldTree));
    assert_eq!(verify_consistency(0, size2, &[], &EMPTY_ROOT, &r2), Err(ProofError::EmptyOldTree));
    // Swapped and wrong roots.
    if r1 != r2 {
        refused(size1, size2, &proof, &r2, &r1, "swapped roots");
    }
    refused(size1, size2, &proof, &flip(&r1, picks.1), &r2, "wrong root1");
    refused(size1, size2, &proof, &r1, &flip(&r2, picks.1), "wrong root2");
}

proptest! {
    #![proptest_config(ProptestConfig {
        // Failures are saved as tests/merkle_props.proptest-regressions.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::with_cases(256)
    })]

    #[test]
    fn inclusion_proofs_verify_and_mutations_are_refused(
        n in 1u64..=300,
        seed: u64,
        picks: (u64, u64, u64, u64),
    ) {
        let (tree, _) = build(n, seed);
        prop_assert_eq!(root(&tree, n).unwrap(), tree.root());
        let index = picks.0 % n;
        // The whole tree, against MemoryTree::root.
        let proof = inclusion_proof(&tree, index, n).unwrap();
        prop_assert_eq!(verify_inclusion(index, n, &tree.leaf_hash(index).unwrap(), &proof, &tree.root()), Ok(()));
        check_inclusion(&tree, index, n, (picks.1, picks.2));
        // A prefix of it, against the root read through HashReader.
        let size = 1 + picks.3 % n;
        check_inclusion(&tree, picks.0 % size, size, (picks.1, picks.2));
    }

    #[test]
    fn consistency_proofs_verify_and_mutations_are_refused(
        n in 1u64..=300,
        seed: u64,
        picks: (u64, u64, u64, u64),
    ) {
        let (tree, _) = build(n, seed);
        let size2 = 1 + picks.0 % n;
        let size1 = 1 + picks.1 % size2;
        check_consistency(&tree, size1, size2, (picks.2, picks.3));
        // Up to the whole tree, against MemoryTree::root.
        let proof = consistency_proof(&tree, size1, n).unwrap();
        prop_assert_eq!(verify_consistency(size1, n, &proof, &root(&tree, size1).unwrap(), &tree.root()), Ok(()));
    }
}

#[test]
fn exhaustive_up_to_64() {
    let (tree, leaves) = build(64, 0x636f_7665_6e61_6e74);
    let mut proofs = 0;
    for size in 1..=64u64 {
        let d = &leaves[..size as usize];
        let r = root(&tree, size).unwrap();
        assert_eq!(r, mth(d), "root of size {size}");
        for index in 0..size {
            let proof = inclusion_proof(&tree, index, size).unwrap();
            assert_eq!(proof, path(index as usize, d), "PATH({index}, D[{size}])");
            assert_eq!(verify_inclusion(index, size, &leaves[index as usize], &proof, &r), Ok(()));
            check_inclusion(&tree, index, size, (index, size * 7 + index));
            proofs += 1;
        }
        for size1 in 1..=size {
            let proof = consistency_proof(&tree, size1, size).unwrap();
            assert_eq!(proof, subproof(size1 as usize, d, true), "PROOF({size1}, D[{size}])");
            assert_eq!(verify_consistency(size1, size, &proof, &root(&tree, size1).unwrap(), &r), Ok(()));
            check_consistency(&tree, size1, size, (size1, size * 5 + size1));
            proofs += 1;
        }
    }
    assert_eq!(proofs, 2 * (64 * 65 / 2));
}

#[test]
fn wrong_size_exception_example() {
    // The legal exception documented at inclusion_shape: the proof of leaf 0
    // in a 3-leaf tree also verifies as a 4-leaf claim against the 3-leaf root.
    let (tree, leaves) = build(4, 1);
    let proof = inclusion_proof(&tree, 0, 3).unwrap();
    let r3 = root(&tree, 3).unwrap();
    assert_eq!(verify_inclusion(0, 4, &leaves[0], &proof, &r3), Ok(()));
    assert!(verify_inclusion(0, 4, &leaves[0], &proof, &tree.root()).is_err());
    // And at consistency_shape: 2 -> 3 also verifies as 2 -> 4 with the same roots.
    let proof = consistency_proof(&tree, 2, 3).unwrap();
    let r2 = root(&tree, 2).unwrap();
    assert_eq!(verify_consistency(2, 4, &proof, &r2, &r3), Ok(()));
    assert!(verify_consistency(2, 4, &proof, &r2, &tree.root()).is_err());
}
