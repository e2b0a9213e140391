//! One named test per attack on the trust core (`docs/style.md`), each asserting
//! the exact error variant: thresholds and key roles, payload-type
//! confusion, root rotation, checkpoint and cosignature forgery, split
//! views, and the signature malleability that `verify_strict` exists for.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use covenant_core::envelope::{self, Envelope, EnvelopeError};
use covenant_core::keys::{KeyError, KeySet, PublicKey};
use covenant_core::merkle::{self, MemoryTree, ProofError};
use covenant_core::note::{self, Checkpoint, NoteError, NoteSigner};
use covenant_core::root::{RootError, RootPolicy, TrustedRoot, walk_chain};
use covenant_core::statements::{AdminAction, Decision, Payload, ReleaseManifest, RootMetadata, StatementError};
use support::{NOW, RootKeys, key, next_year, release, root_metadata, signed_root};

const PRODUCTION: RootPolicy = RootPolicy { allow_development: false };
const DEVELOPMENT: RootPolicy = RootPolicy { allow_development: true };

fn release_keyset(keys: &RootKeys) -> KeySet {
    KeySet::new(keys.release.iter().map(|k| k.public()), 2).unwrap()
}

fn provisioned(keys: &RootKeys) -> TrustedRoot {
    let v1 = signed_root(&root_metadata(keys, 1, next_year(), false), &[&keys.root[0], &keys.root[1]]);
    TrustedRoot::provision(&v1, NOW, PRODUCTION).unwrap()
}

// --- Envelopes and thresholds -------------------------------------------

#[test]
fn two_of_three_release_signatures_verify() {
    let keys = RootKeys::new(1);
    let bytes = envelope::sign(&release("1.1.0"), &[&keys.release[0], &keys.release[2]]);
    let verified = envelope::verify::<ReleaseManifest>(&bytes, &release_keyset(&keys)).unwrap();
    assert_eq!(verified.signers().len(), 2);
    assert_eq!(verified.version.to_string(), "1.1.0");
}

#[test]
fn duplicate_signatures_count_once() {
    let keys = RootKeys::new(1);
    let bytes = envelope::sign(&release("1.1.0"), &[&keys.release[0]]);
    // Copy the one good signature twice more under the same key id.
    let mut env = Envelope::parse(&bytes).unwrap();
    let sig = env.signatures()[0].clone();
    let mut json: serde_json::Value = serde_json::from_slice(&env.to_bytes()).unwrap();
    let one = json["signatures"][0].clone();
    json["signatures"] = serde_json::json!([one.clone(), one.clone(), one]);
    env = Envelope::parse(&serde_json::to_vec(&json).unwrap()).unwrap();
    assert_eq!(env.signatures(), &[sig.clone(), sig.clone(), sig]);
    let err = envelope::verify_parsed::<ReleaseManifest>(env, &release_keyset(&keys)).unwrap_err();
    assert_eq!(err, EnvelopeError::ThresholdNotMet { valid: 1, threshold: 2 });
}

#[test]
fn key_of_another_role_does_not_count() {
    let keys = RootKeys::new(1);
    let root = provisioned(&keys);
    // One release key and the (online) decision key: the decision key is in
    // the root, but not in the release role.
    let bytes = envelope::sign(&release("1.1.0"), &[&keys.release[0], &keys.decision]);
    let err = envelope::verify::<ReleaseManifest>(&bytes, &root.release_keys().unwrap()).unwrap_err();
    assert_eq!(err, EnvelopeError::ThresholdNotMet { valid: 1, threshold: 2 });
}

#[test]
fn release_signed_by_the_decision_key_alone_is_refused() {
    let keys = RootKeys::new(1);
    let root = provisioned(&keys);
    let bytes = envelope::sign(&release("1.1.0"), &[&keys.decision]);
    let err = envelope::verify::<ReleaseManifest>(&bytes, &root.release_keys().unwrap()).unwrap_err();
    assert_eq!(err, EnvelopeError::ThresholdNotMet { valid: 0, threshold: 2 });
}

#[test]
fn threshold_not_met() {
    let keys = RootKeys::new(1);
    let bytes = envelope::sign(&release("1.1.0"), &[&keys.release[1]]);
    let err = envelope::verify::<ReleaseManifest>(&bytes, &release_keyset(&keys)).unwrap_err();
    assert_eq!(err, EnvelopeError::ThresholdNotMet { valid: 1, threshold: 2 });
}

#[test]
fn unknown_key_ids_are_ignored() {
    let keys = RootKeys::new(1);
    let stranger = key(200);
    let bytes = envelope::sign(&release("1.1.0"), &[&stranger, &keys.release[0], &keys.release[1]]);
    let verified = envelope::verify::<ReleaseManifest>(&bytes, &release_keyset(&keys)).unwrap();
    assert!(!verified.signers().contains(&stranger.key_id()));
    assert_eq!(verified.signers().len(), 2);
}

#[test]
fn signature_under_a_spoofed_key_id_does_not_count() {
    // A stranger signs but labels the signature with a release key's id.
    let keys = RootKeys::new(1);
    let bytes = envelope::sign(&release("1.1.0"), &[&key(200), &keys.release[1]]);
    let mut json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    json["signatures"][0]["keyid"] = keys.release[0].key_id().to_string().into();
    let err =
        envelope::verify::<ReleaseManifest>(&serde_json::to_vec(&json).unwrap(), &release_keyset(&keys)).unwrap_err();
    assert_eq!(err, EnvelopeError::ThresholdNotMet { valid: 1, threshold: 2 });
}

#[test]
fn payload_type_swapped() {
    // A genuine, correctly signed release offered where a decision is expected.
    let keys = RootKeys::new(1);
    let bytes = envelope::sign(&release("1.1.0"), &[&keys.release[0], &keys.release[1]]);
    let err = envelope::verify::<Decision>(&bytes, &release_keyset(&keys)).unwrap_err();
    assert_eq!(
        err,
        EnvelopeError::WrongPayloadType {
            expected: "application/vnd.covenant.decision.v1+json",
            found: "application/vnd.covenant.release.v1+json".into()
        }
    );
}

#[test]
fn payload_type_relabelled_breaks_the_signature() {
    // Rewriting payloadType to the expected one does not help: PAE binds it.
    let keys = RootKeys::new(1);
    let action_keys = KeySet::single(keys.admin[0].public());
    let bytes = envelope::sign(&release("1.1.0"), &[&keys.admin[0]]);
    let mut json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    json["payloadType"] = "application/vnd.covenant.action.v1+json".into();
    let err = envelope::verify::<AdminAction>(&serde_json::to_vec(&json).unwrap(), &action_keys).unwrap_err();
    assert_eq!(err, EnvelopeError::ThresholdNotMet { valid: 0, threshold: 1 });
}

#[test]
fn tampered_payload_is_refused_before_parsing() {
    let keys = RootKeys::new(1);
    let bytes = envelope::sign(&release("1.1.0"), &[&keys.release[0], &keys.release[1]]);
    let env = Envelope::parse(&bytes).unwrap();
    let forged = String::from_utf8(env.payload().to_vec()).unwrap().replace("1.1.0", "9.9.0");
    let mut json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    use base64::Engine as _;
    json["payload"] = base64::engine::general_purpose::STANDARD.encode(forged).into();
    let err =
        envelope::verify::<ReleaseManifest>(&serde_json::to_vec(&json).unwrap(), &release_keyset(&keys)).unwrap_err();
    assert_eq!(err, EnvelopeError::ThresholdNotMet { valid: 0, threshold: 2 });
}

#[test]
fn release_with_zero_size_is_refused_even_when_signed() {
    let keys = RootKeys::new(1);
    let mut r = release("1.1.0");
    r.artifact.size = 0;
    let bytes = envelope::sign(&r, &[&keys.release[0], &keys.release[1]]);
    let err = envelope::verify::<ReleaseManifest>(&bytes, &release_keyset(&keys)).unwrap_err();
    assert_eq!(
        err,
        EnvelopeError::Payload(StatementError::Invalid { field: "artifact.size", rule: "must be greater than 0" })
    );
}

#[test]
fn too_many_signatures_are_refused_unread() {
    let keys = RootKeys::new(1);
    let bytes = envelope::sign(&release("1.1.0"), &[&keys.release[0]]);
    let mut json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let one = json["signatures"][0].clone();
    json["signatures"] = serde_json::Value::Array(vec![one; envelope::MAX_SIGNATURES + 1]);
    let err = Envelope::parse(&serde_json::to_vec(&json).unwrap()).unwrap_err();
    assert_eq!(
        err,
        EnvelopeError::TooManySignatures { count: envelope::MAX_SIGNATURES + 1, limit: envelope::MAX_SIGNATURES }
    );
}

// --- verify_strict ------------------------------------------------------

/// The identity point: a small-order ("weak") public key.
const IDENTITY_POINT: [u8; 32] = {
    let mut b = [0u8; 32];
    b[0] = 1;
    b
};

/// R = identity, s = 0: under the identity key, `verify` accepts this for
/// every message, since [s]B = R + [k]A holds trivially.
fn identity_signature() -> [u8; 64] {
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&IDENTITY_POINT);
    sig
}

#[test]
fn signature_that_verify_accepts_but_verify_strict_refuses() {
    let weak = PublicKey::from_bytes_unchecked_for_tests(&IDENTITY_POINT).unwrap();
    let message = b"release 9.9.9 for every deployment";
    assert!(weak.verify_lenient_for_tests(message, &identity_signature()), "premise: lenient verify accepts");
    assert_eq!(weak.verify(message, &identity_signature()), Err(KeyError::BadSignature));
}

#[test]
fn weak_public_key_is_refused_at_parse() {
    assert_eq!(PublicKey::from_bytes(&IDENTITY_POINT), Err(KeyError::Weak));
    assert_eq!(PublicKey::from_hex(&hex::encode(IDENTITY_POINT)), Err(KeyError::Weak));
}

#[test]
fn envelope_signed_for_a_weak_key_does_not_count() {
    let weak = PublicKey::from_bytes_unchecked_for_tests(&IDENTITY_POINT).unwrap();
    let mut env = Envelope::new(ReleaseManifest::PAYLOAD_TYPE, release("1.1.0").to_payload_bytes());
    let mut json: serde_json::Value = serde_json::from_slice(&env.to_bytes()).unwrap();
    use base64::Engine as _;
    json["signatures"] = serde_json::json!([{
        "keyid": weak.key_id().to_string(),
        "sig": base64::engine::general_purpose::STANDARD.encode(identity_signature()),
    }]);
    env = Envelope::parse(&serde_json::to_vec(&json).unwrap()).unwrap();
    assert_eq!(env.signatures().len(), 1);
    let err = envelope::verify_parsed::<ReleaseManifest>(env, &KeySet::single(weak)).unwrap_err();
    assert_eq!(err, EnvelopeError::ThresholdNotMet { valid: 0, threshold: 1 });
}

// --- Root of trust ------------------------------------------------------

#[test]
fn root_rotation_follows_the_chain() {
    let keys = RootKeys::new(1);
    let next = RootKeys::new(101);
    let v1 = provisioned(&keys);
    // v2 replaces every key: signed by 2 of v1's root keys and 2 of its own.
    let v2 = signed_root(
        &root_metadata(&next, 2, next_year(), false),
        &[&keys.root[0], &keys.root[2], &next.root[0], &next.root[1]],
    );
    let trusted = walk_chain(&v1, [v2.as_slice()], NOW).unwrap();
    assert_eq!(trusted.version(), 2);
    assert!(trusted.release_keys().unwrap().contains(&next.release[0].key_id()));
}

#[test]
fn root_rotation_that_skips_a_version() {
    let keys = RootKeys::new(1);
    let v1 = provisioned(&keys);
    let v3 = signed_root(&root_metadata(&keys, 3, next_year(), false), &[&keys.root[0], &keys.root[1]]);
    assert_eq!(v1.rotate(&v3).unwrap_err(), RootError::VersionNotNext { trusted: 1, found: 3 });
}

#[test]
fn root_rotation_replaying_the_same_version() {
    let keys = RootKeys::new(1);
    let v1 = provisioned(&keys);
    let again = signed_root(&root_metadata(&keys, 1, next_year(), false), &[&keys.root[0], &keys.root[1]]);
    assert_eq!(v1.rotate(&again).unwrap_err(), RootError::VersionNotNext { trusted: 1, found: 1 });
}

#[test]
fn new_root_signed_only_by_new_keys() {
    let keys = RootKeys::new(1);
    let thief = RootKeys::new(101);
    let v1 = provisioned(&keys);
    let v2 = signed_root(&root_metadata(&thief, 2, next_year(), false), &[&thief.root[0], &thief.root[1]]);
    assert_eq!(
        v1.rotate(&v2).unwrap_err(),
        RootError::Envelope(EnvelopeError::ThresholdNotMet { valid: 0, threshold: 2 })
    );
}

#[test]
fn new_root_signed_only_by_old_keys() {
    // The old keys alone cannot install keys that never agreed to serve.
    let keys = RootKeys::new(1);
    let next = RootKeys::new(101);
    let v1 = provisioned(&keys);
    let v2 = signed_root(&root_metadata(&next, 2, next_year(), false), &[&keys.root[0], &keys.root[1]]);
    assert_eq!(
        v1.rotate(&v2).unwrap_err(),
        RootError::NotSelfSigned(EnvelopeError::ThresholdNotMet { valid: 0, threshold: 2 })
    );
}

#[test]
fn new_root_under_the_old_threshold() {
    let keys = RootKeys::new(1);
    let next = RootKeys::new(101);
    let v1 = provisioned(&keys);
    let v2 = signed_root(&root_metadata(&next, 2, next_year(), false), &[&keys.root[0], &next.root[0], &next.root[1]]);
    assert_eq!(
        v1.rotate(&v2).unwrap_err(),
        RootError::Envelope(EnvelopeError::ThresholdNotMet { valid: 1, threshold: 2 })
    );
}

#[test]
fn expired_root() {
    let keys = RootKeys::new(1);
    let v1 = signed_root(&root_metadata(&keys, 1, NOW.plus_seconds(-1), false), &[&keys.root[0], &keys.root[1]]);
    assert_eq!(
        TrustedRoot::provision(&v1, NOW, PRODUCTION).unwrap_err(),
        RootError::Expired { version: 1, expires: NOW.plus_seconds(-1) }
    );
}

#[test]
fn expired_newest_root_after_a_chain_walk() {
    let keys = RootKeys::new(1);
    let v1 = provisioned(&keys);
    let v2 = signed_root(&root_metadata(&keys, 2, NOW.plus_seconds(10), false), &[&keys.root[0], &keys.root[1]]);
    let later = NOW.plus_seconds(20);
    assert_eq!(
        walk_chain(&v1, [v2.as_slice()], later).unwrap_err(),
        RootError::Expired { version: 2, expires: NOW.plus_seconds(10) }
    );
}

#[test]
fn expired_intermediate_root_does_not_stop_a_chain_walk() {
    // TUF §5.3.10: only the newest root's expiry matters.
    let keys = RootKeys::new(1);
    let v1 = provisioned(&keys);
    let v2 = signed_root(&root_metadata(&keys, 2, NOW.plus_seconds(10), false), &[&keys.root[0], &keys.root[1]]);
    let v3 = signed_root(&root_metadata(&keys, 3, next_year(), false), &[&keys.root[0], &keys.root[1]]);
    let trusted = walk_chain(&v1, [v2.as_slice(), v3.as_slice()], NOW.plus_seconds(20)).unwrap();
    assert_eq!(trusted.version(), 3);
}

#[test]
fn development_root_is_refused_unless_allowed() {
    let keys = RootKeys::new(1);
    let mut meta = root_metadata(&keys, 1, next_year(), true);
    meta.roles.witness.threshold = 0;
    let dev = signed_root(&meta, &[&keys.root[0], &keys.root[1]]);
    assert_eq!(TrustedRoot::provision(&dev, NOW, PRODUCTION).unwrap_err(), RootError::DevelopmentNotAllowed);
    let trusted = TrustedRoot::provision(&dev, NOW, DEVELOPMENT).unwrap();
    assert_eq!(trusted.witness_policy().unwrap().1, 0);
}

#[test]
fn production_root_with_no_witness_threshold_is_refused() {
    let keys = RootKeys::new(1);
    let mut meta = root_metadata(&keys, 1, next_year(), false);
    meta.roles.witness.threshold = 0;
    let bytes = signed_root(&meta, &[&keys.root[0], &keys.root[1]]);
    assert_eq!(
        TrustedRoot::provision(&bytes, NOW, DEVELOPMENT).unwrap_err(),
        RootError::Envelope(EnvelopeError::Payload(StatementError::Invalid {
            field: "roles.witness",
            rule: "threshold 0 (no witnesses) is allowed only in a development root"
        }))
    );
}

#[test]
fn production_root_never_rotates_to_development() {
    let keys = RootKeys::new(1);
    let v1 = provisioned(&keys);
    let mut meta = root_metadata(&keys, 2, next_year(), true);
    meta.roles.witness.threshold = 0;
    let v2 = signed_root(&meta, &[&keys.root[0], &keys.root[1]]);
    assert_eq!(v1.rotate(&v2).unwrap_err(), RootError::ProductionToDevelopment);
}

#[test]
fn root_rotation_renaming_the_ledger_is_refused() {
    // Agents hold checkpoints whose origin is the ledger's name; a renamed
    // log could never be shown consistent with them.
    let keys = RootKeys::new(1);
    let v1 = provisioned(&keys);
    let mut meta = root_metadata(&keys, 2, next_year(), false);
    meta.roles.ledger.keys[0].note_name = Some("other.test/log".into());
    let v2 = signed_root(&meta, &[&keys.root[0], &keys.root[1]]);
    assert_eq!(v1.rotate(&v2).unwrap_err(), RootError::LedgerRenamed);
}

#[test]
fn root_reusing_a_key_across_roles_is_refused() {
    let keys = RootKeys::new(1);
    let mut meta: RootMetadata = root_metadata(&keys, 1, next_year(), false);
    meta.roles.decision.keys[0].public = keys.release[0].public();
    let bytes = signed_root(&meta, &[&keys.root[0], &keys.root[1]]);
    assert_eq!(
        TrustedRoot::provision(&bytes, NOW, PRODUCTION).unwrap_err(),
        RootError::Envelope(EnvelopeError::Payload(StatementError::Invalid {
            field: "roles.decision",
            rule: "uses a key that another role already uses"
        }))
    );
}

#[test]
fn root_not_signed_by_its_own_threshold_is_refused_at_provisioning() {
    let keys = RootKeys::new(1);
    let bytes = signed_root(&root_metadata(&keys, 1, next_year(), false), &[&keys.root[0]]);
    assert_eq!(
        TrustedRoot::provision(&bytes, NOW, PRODUCTION).unwrap_err(),
        RootError::Envelope(EnvelopeError::ThresholdNotMet { valid: 1, threshold: 2 })
    );
}

// --- Checkpoints, cosignatures, consistency ------------------------------

fn tree(n: u64) -> MemoryTree {
    let mut t = MemoryTree::new();
    for i in 0..n {
        t.push_leaf(format!("entry {i}").as_bytes());
    }
    t
}

fn checkpoint(t: &MemoryTree, log: &NoteSigner) -> String {
    Checkpoint { origin: log.name().into(), size: t.size(), root_hash: t.root(), extensions: vec![] }
        .sign(log)
        .unwrap()
        .to_text()
}

fn log_signer(n: u8) -> NoteSigner {
    NoteSigner::new("ledger.test/log", key(n)).unwrap()
}

#[test]
fn checkpoint_signed_by_an_unknown_key() {
    let genuine = log_signer(50);
    let forger = log_signer(51); // same name, another key
    let text = checkpoint(&tree(5), &forger);
    assert_eq!(note::open_checkpoint(text.as_bytes(), &genuine.verifier()).unwrap_err(), NoteError::NoKnownSignature);
}

#[test]
fn checkpoint_with_a_bad_signature_from_the_known_key() {
    let log = log_signer(50);
    let text = checkpoint(&tree(5), &log);
    // Change the tree size but keep the signature line.
    let forged = text.replacen("\n5\n", "\n6\n", 1);
    assert_eq!(
        note::open_checkpoint(forged.as_bytes(), &log.verifier()).unwrap_err(),
        NoteError::BadSignature { name: "ledger.test/log".into() }
    );
}

#[test]
fn checkpoint_of_another_origin() {
    let other = NoteSigner::new("other.test/log", key(50)).unwrap();
    let log = log_signer(50);
    let text = checkpoint(&tree(5), &other);
    assert_eq!(
        note::open_checkpoint(text.as_bytes(), &log.verifier()).unwrap_err(),
        NoteError::WrongOrigin { expected: "ledger.test/log".into(), found: "other.test/log".into() }
    );
}

#[test]
fn cosignature_over_a_different_checkpoint() {
    let log = log_signer(50);
    let witness = NoteSigner::new("witness.test/w0", key(60)).unwrap();
    let t = tree(7);
    let genuine = checkpoint(&t, &log);
    let body_of = |text: &str| note::Note::parse(text.as_bytes()).unwrap().text().to_owned();
    // The witness cosigned size 7; the line is moved onto a size-8 checkpoint.
    let cosig = witness.cosign(&body_of(&genuine), 1_700_000_000).unwrap().to_line();
    let mut bigger = t.clone();
    bigger.push_leaf(b"entry 7");
    let other = format!("{}{cosig}", checkpoint(&bigger, &log));
    let verified = note::open_checkpoint(other.as_bytes(), &log.verifier()).unwrap();
    assert_eq!(
        verified.require_cosignatures(&[&witness.cosignature_verifier()], 1).unwrap_err(),
        NoteError::BadSignature { name: "witness.test/w0".into() }
    );
    // On the checkpoint it was made for, it verifies.
    let right = format!("{genuine}{cosig}");
    let verified = note::open_checkpoint(right.as_bytes(), &log.verifier()).unwrap();
    assert_eq!(verified.require_cosignatures(&[&witness.cosignature_verifier()], 1).unwrap().len(), 1);
}

#[test]
fn witness_threshold_not_met() {
    let log = log_signer(50);
    let w0 = NoteSigner::new("witness.test/w0", key(60)).unwrap();
    let w1 = NoteSigner::new("witness.test/w1", key(61)).unwrap();
    let text = checkpoint(&tree(3), &log);
    let body = note::Note::parse(text.as_bytes()).unwrap().text().to_owned();
    // w0 cosigns twice: still one witness.
    let cosigned =
        format!("{text}{}{}", w0.cosign(&body, 1).unwrap().to_line(), w0.cosign(&body, 2).unwrap().to_line());
    let verified = note::open_checkpoint(cosigned.as_bytes(), &log.verifier()).unwrap();
    assert_eq!(
        verified.require_cosignatures(&[&w0.cosignature_verifier(), &w1.cosignature_verifier()], 2).unwrap_err(),
        NoteError::WitnessThresholdNotMet { valid: 1, threshold: 2 }
    );
}

#[test]
fn log_signature_does_not_count_as_a_cosignature() {
    // A witness key used as a type-0x01 signer is not a cosignature.
    let log = log_signer(50);
    let w0 = NoteSigner::new("witness.test/w0", key(60)).unwrap();
    let text = checkpoint(&tree(3), &log);
    let body = note::Note::parse(text.as_bytes()).unwrap().text().to_owned();
    let cosigned = format!("{text}{}", w0.sign(&body).unwrap().to_line());
    let verified = note::open_checkpoint(cosigned.as_bytes(), &log.verifier()).unwrap();
    assert_eq!(
        verified.require_cosignatures(&[&w0.cosignature_verifier()], 1).unwrap_err(),
        NoteError::WitnessThresholdNotMet { valid: 0, threshold: 1 }
    );
}

#[test]
fn split_view_checkpoint_is_refused() {
    let log = log_signer(50);
    let t = tree(10);
    let held = note::open_checkpoint(checkpoint(&t, &log).as_bytes(), &log.verifier()).unwrap().accept_first();
    // A rewritten history of 12 entries, signed with the genuine key.
    let mut fork = MemoryTree::new();
    for i in 0..12 {
        fork.push_leaf(format!("rewritten {i}").as_bytes());
    }
    let forked = note::open_checkpoint(checkpoint(&fork, &log).as_bytes(), &log.verifier()).unwrap();
    let proof = merkle::consistency_proof(&fork, 10, 12).unwrap();
    assert_eq!(held.advance(forked, &proof).unwrap_err(), NoteError::Proof(ProofError::RootMismatch));
    // The honest continuation is accepted.
    let mut honest = t.clone();
    honest.push_leaf(b"entry 10");
    honest.push_leaf(b"entry 11");
    let next = note::open_checkpoint(checkpoint(&honest, &log).as_bytes(), &log.verifier()).unwrap();
    let advanced = held.advance(next, &merkle::consistency_proof(&honest, 10, 12).unwrap()).unwrap();
    assert_eq!(advanced.checkpoint().size, 12);
}

#[test]
fn shrinking_log_is_refused() {
    let log = log_signer(50);
    let big = tree(10);
    let small = tree(8);
    let held = note::open_checkpoint(checkpoint(&big, &log).as_bytes(), &log.verifier()).unwrap().accept_first();
    let older = note::open_checkpoint(checkpoint(&small, &log).as_bytes(), &log.verifier()).unwrap();
    assert_eq!(
        held.advance(older, &[]).unwrap_err(),
        NoteError::Proof(ProofError::OldSizeLarger { size1: 10, size2: 8 })
    );
}

#[test]
fn consistency_from_an_empty_tree_is_refused() {
    let log = log_signer(50);
    let empty = note::open_checkpoint(checkpoint(&MemoryTree::new(), &log).as_bytes(), &log.verifier()).unwrap();
    let held = empty.accept_first();
    let next = note::open_checkpoint(checkpoint(&tree(4), &log).as_bytes(), &log.verifier()).unwrap();
    assert_eq!(held.advance(next, &[]).unwrap_err(), NoteError::Proof(ProofError::EmptyOldTree));
}

#[test]
fn tlog_proof_for_an_entry_not_in_the_tree() {
    let log = log_signer(50);
    let t = tree(9);
    let proof = note::TlogProof {
        extra: None,
        index: 4,
        proof: merkle::inclusion_proof(&t, 4, 9).unwrap(),
        checkpoint: checkpoint(&t, &log),
    };
    assert!(proof.verify(&t.leaf_hash(4).unwrap(), &log.verifier()).is_ok());
    let omitted = merkle::leaf_hash(b"a grant that was never logged");
    assert_eq!(proof.verify(&omitted, &log.verifier()).unwrap_err(), NoteError::Proof(ProofError::RootMismatch));
}
