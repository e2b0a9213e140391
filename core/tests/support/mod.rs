//! Fixtures shared by the core's integration tests: deterministic keys and
//! roots built in the test itself (`docs/style.md`), never loaded from files.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use covenant_core::digest::{Sha256Digest, Timestamp};
use covenant_core::envelope;
use covenant_core::keys::SigningKey;
use covenant_core::statements::{
    Artifact, ReleaseClass, ReleaseManifest, ReleaseTag, RoleSpec, Roles, RootKey, RootMetadata, RootTag, SchemaV1,
};

/// A deterministic key: seed `[n; 32]`.
pub fn key(n: u8) -> SigningKey {
    SigningKey::from_seed(&[n; 32])
}

/// 2026-11-30T00:00:00Z, the tests' "now".
pub const NOW: Timestamp = Timestamp::from_unix(1_796_083_200);

/// The keys behind a test root; every role has its own keys.
pub struct RootKeys {
    pub root: Vec<SigningKey>,
    pub release: Vec<SigningKey>,
    pub decision: SigningKey,
    pub ledger: SigningKey,
    pub witness: Vec<SigningKey>,
    pub admin: Vec<SigningKey>,
}

impl RootKeys {
    /// Keys whose seeds start at `base` (so two sets never share a key).
    pub fn new(base: u8) -> Self {
        RootKeys {
            root: (0..3).map(|i| key(base + i)).collect(),
            release: (3..6).map(|i| key(base + i)).collect(),
            decision: key(base + 6),
            ledger: key(base + 7),
            witness: (8..10).map(|i| key(base + i)).collect(),
            admin: (10..12).map(|i| key(base + i)).collect(),
        }
    }
}

fn spec(keys: &[&SigningKey], threshold: u32, note: Option<&str>) -> RoleSpec {
    RoleSpec {
        keys: keys
            .iter()
            .enumerate()
            .map(|(i, k)| RootKey { public: k.public(), note_name: note.map(|n| format!("{n}{i}")) })
            .collect(),
        threshold,
    }
}

/// A root document: root 2 of 3, release 2 of 3, witness 1 of 2, admin 2 of 2.
pub fn root_metadata(keys: &RootKeys, version: u64, expires: Timestamp, development: bool) -> RootMetadata {
    RootMetadata {
        type_tag: RootTag,
        schema: SchemaV1,
        version,
        expires,
        development,
        roles: Roles {
            root: spec(&keys.root.iter().collect::<Vec<_>>(), 2, None),
            release: spec(&keys.release.iter().collect::<Vec<_>>(), 2, None),
            decision: spec(&[&keys.decision], 1, None),
            ledger: RoleSpec {
                keys: vec![RootKey { public: keys.ledger.public(), note_name: Some("ledger.test/log".into()) }],
                threshold: 1,
            },
            witness: spec(&keys.witness.iter().collect::<Vec<_>>(), 1, Some("witness.test/w")),
            admin: spec(&keys.admin.iter().collect::<Vec<_>>(), 2, None),
        },
    }
}

/// One year after [`NOW`].
pub fn next_year() -> Timestamp {
    NOW.plus_seconds(365 * 86_400)
}

/// A root envelope signed by `signers`.
pub fn signed_root(meta: &RootMetadata, signers: &[&SigningKey]) -> Vec<u8> {
    envelope::sign(meta, signers)
}

/// A valid release manifest for `version`.
pub fn release(version: &str) -> ReleaseManifest {
    let v: semver::Version = version.parse().unwrap();
    ReleaseManifest {
        type_tag: ReleaseTag,
        schema: SchemaV1,
        product: "lim".into(),
        version: v.clone(),
        class: ReleaseClass::Capability,
        capability_baseline: v,
        artifact: Artifact { name: "lim-1.1.0.img".into(), sha256: Sha256Digest::of(b"image"), size: 5 },
        expected_installed_digests: Default::default(),
        released_at: NOW,
    }
}

pub mod world;
