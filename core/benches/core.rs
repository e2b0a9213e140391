//! Benchmarks of the core's verification hot paths: DSSE threshold
//! verification of a release manifest (1 of 1 and 2 of 3), Merkle inclusion
//! and consistency proofs in a tree of 2^20 leaves, and opening a signed
//! checkpoint (with and without one witness cosignature).
//!
//! Run with `cargo bench -p covenant-core --bench core`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

use covenant_core::digest::{Sha256Digest, Timestamp};
use covenant_core::envelope;
use covenant_core::keys::{KeySet, SigningKey};
use covenant_core::merkle::{self, MemoryTree};
use covenant_core::note::{self, Checkpoint, NoteSigner};
use covenant_core::statements::{Artifact, ReleaseClass, ReleaseManifest, SchemaV1};

const LOG_NAME: &str = "log.example/covenant";
const WITNESS_NAME: &str = "witness.example/w1";
/// 2^20 leaves.
const TREE_SIZE: u64 = 1 << 20;
/// A non-power-of-two older size for the consistency proof.
const OLD_SIZE: u64 = TREE_SIZE - 12_345;

fn key(n: u8) -> SigningKey {
    SigningKey::from_seed(&[n; 32])
}

fn release() -> ReleaseManifest {
    let version = semver::Version::parse("2.1.0").unwrap();
    ReleaseManifest {
        type_tag: Default::default(),
        schema: SchemaV1,
        product: "lim".into(),
        version: version.clone(),
        class: ReleaseClass::SecurityFix,
        capability_baseline: semver::Version::parse("2.0.0").unwrap(),
        artifact: Artifact { name: "lim-2.1.0.tar.gz".into(), sha256: Sha256Digest::of(b"artifact"), size: 48_000_000 },
        expected_installed_digests: BTreeMap::from([
            ("/opt/lim/bin/lim".to_owned(), Sha256Digest::of(b"bin")),
            ("/opt/lim/etc/lim.conf".to_owned(), Sha256Digest::of(b"conf")),
        ]),
        released_at: Timestamp::parse_rfc3339("2026-03-01T12:00:00Z").unwrap(),
    }
}

fn dsse(c: &mut Criterion) {
    let manifest = release();
    let (k1, k2, k3) = (key(1), key(2), key(3));
    let mut group = c.benchmark_group("dsse_verify");

    let one = envelope::sign(&manifest, &[&k1]);
    let one_keys = KeySet::single(k1.public());
    assert!(envelope::verify::<ReleaseManifest>(&one, &one_keys).is_ok());
    group.bench_function("1_of_1", |b| {
        b.iter(|| envelope::verify::<ReleaseManifest>(black_box(&one), black_box(&one_keys)).unwrap())
    });

    let two = envelope::sign(&manifest, &[&k1, &k2]);
    let three_keys = KeySet::new([k1.public(), k2.public(), k3.public()], 2).unwrap();
    assert_eq!(envelope::verify::<ReleaseManifest>(&two, &three_keys).unwrap().signers().len(), 2);
    group.bench_function("2_of_3", |b| {
        b.iter(|| envelope::verify::<ReleaseManifest>(black_box(&two), black_box(&three_keys)).unwrap())
    });
    group.finish();
}

fn merkle_proofs(c: &mut Criterion) {
    let mut tree = MemoryTree::new();
    for i in 0..TREE_SIZE {
        tree.push_leaf(&i.to_be_bytes());
    }
    let root = tree.root();
    let index = TREE_SIZE / 2 + 1_234;
    let leaf = tree.leaf_hash(index).unwrap();
    let inclusion = merkle::inclusion_proof(&tree, index, TREE_SIZE).unwrap();
    assert_eq!(inclusion.len(), 20);
    assert!(merkle::verify_inclusion(index, TREE_SIZE, &leaf, &inclusion, &root).is_ok());

    let old_root = merkle::root(&tree, OLD_SIZE).unwrap();
    let consistency = merkle::consistency_proof(&tree, OLD_SIZE, TREE_SIZE).unwrap();
    assert!(merkle::verify_consistency(OLD_SIZE, TREE_SIZE, &consistency, &old_root, &root).is_ok());

    let mut group = c.benchmark_group("merkle");
    group.bench_function("verify_inclusion_2^20", |b| {
        b.iter(|| {
            merkle::verify_inclusion(
                black_box(index),
                black_box(TREE_SIZE),
                black_box(&leaf),
                black_box(&inclusion),
                black_box(&root),
            )
            .unwrap()
        })
    });
    group.bench_function("verify_consistency_2^20", |b| {
        b.iter(|| {
            merkle::verify_consistency(
                black_box(OLD_SIZE),
                black_box(TREE_SIZE),
                black_box(&consistency),
                black_box(&old_root),
                black_box(&root),
            )
            .unwrap()
        })
    });
    group.finish();
}

fn checkpoints(c: &mut Criterion) {
    let log = NoteSigner::new(LOG_NAME, key(6)).unwrap();
    let witness = NoteSigner::new(WITNESS_NAME, key(7)).unwrap();
    let log_verifier = log.verifier();
    let witness_verifier = witness.cosignature_verifier();
    let checkpoint = Checkpoint {
        origin: LOG_NAME.into(),
        size: TREE_SIZE,
        root_hash: Sha256Digest::of(b"root").0,
        extensions: vec![],
    };
    let plain = checkpoint.sign(&log).unwrap();
    let mut cosigned = plain.clone();
    cosigned.push_signature(witness.cosign(plain.text(), 1_780_000_000).unwrap());
    let plain = plain.to_text().into_bytes();
    let cosigned = cosigned.to_text().into_bytes();
    let witnesses = [&witness_verifier];
    assert!(note::open_checkpoint(&plain, &log_verifier).is_ok());
    assert_eq!(
        note::open_checkpoint(&cosigned, &log_verifier).unwrap().require_cosignatures(&witnesses, 1).unwrap().len(),
        1
    );

    let mut group = c.benchmark_group("note");
    group.bench_function("verify_checkpoint", |b| {
        b.iter(|| note::open_checkpoint(black_box(&plain), black_box(&log_verifier)).unwrap())
    });
    group.bench_function("verify_checkpoint_with_cosignature", |b| {
        b.iter(|| {
            let verified = note::open_checkpoint(black_box(&cosigned), black_box(&log_verifier)).unwrap();
            verified.require_cosignatures(black_box(&witnesses), 1).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, dsse, merkle_proofs, checkpoints);
criterion_main!(benches);
