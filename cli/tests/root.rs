//! The offline root ceremony: a root written unsigned, signed by root-key
//! holders one at a time, is trusted once a threshold of them signed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use covenant_cli::root::{Root, run};
use covenant_core::digest::Timestamp;
use covenant_core::envelope::EnvelopeError;
use covenant_core::keys::SigningKey;
use covenant_core::root::{RootError, RootPolicy, TrustedRoot};

#[test]
fn a_root_needs_a_threshold_of_its_own_keys() {
    let dir = std::env::temp_dir().join(format!("covenant-root-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = |n: u8| {
        let k = SigningKey::from_seed(&[n; 32]);
        let path = dir.join(format!("k{n}.key"));
        std::fs::write(&path, k.to_seed_hex().as_bytes()).unwrap();
        path.display().to_string()
    };
    let hexkey = |n: u8| hex::encode(SigningKey::from_seed(&[n; 32]).public().to_bytes());
    let file = dir.join("root.json");
    run(
        Root::New {
            out: file.clone(),
            version: 1,
            expires: "2099-01-01T00:00:00Z".into(),
            root_keys: vec![key(1), key(2), key(3)],
            root_threshold: 2,
            release_keys: vec![hexkey(4), hexkey(5), hexkey(6)],
            release_threshold: 2,
            decision: hexkey(7),
            ledger: format!("ledger.example/log={}", hexkey(8)),
            witnesses: vec![format!("witness.example/w1={}", hexkey(9))],
            witness_threshold: 1,
            admin_keys: vec![hexkey(10), hexkey(11)],
            admin_threshold: 2,
            development: false,
        },
        true,
    )
    .unwrap();
    let now = Timestamp::parse_rfc3339("2026-11-30T00:00:00Z").unwrap();
    let provision = || TrustedRoot::provision(&std::fs::read(&file).unwrap(), now, RootPolicy::default());
    assert_eq!(
        provision().unwrap_err(),
        RootError::Envelope(EnvelopeError::ThresholdNotMet { valid: 0, threshold: 2 })
    );
    run(Root::Sign { file: file.clone(), key: dir.join("k1.key").display().to_string() }, true).unwrap();
    // Signing twice with one key still counts once.
    run(Root::Sign { file: file.clone(), key: dir.join("k1.key").display().to_string() }, true).unwrap();
    assert_eq!(
        provision().unwrap_err(),
        RootError::Envelope(EnvelopeError::ThresholdNotMet { valid: 1, threshold: 2 })
    );
    run(Root::Sign { file: file.clone(), key: dir.join("k3.key").display().to_string() }, true).unwrap();
    assert_eq!(provision().unwrap().version(), 1);
    run(Root::Show { file: file.clone() }, true).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
