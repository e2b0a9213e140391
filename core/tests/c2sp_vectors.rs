//! Known answers from outside implementations (`docs/style.md`).
//!
//! - The signed-note vectors of C2SP signed-note v1.0.0 / golang.org/x/mod
//!   sumdb/note (the `example.com/foo` verifier and the PeterNeumann key),
//!   as quoted in `tests/vectors/README.md`.
//! - `tests/vectors/c2sp-dsse.json`: a checkpoint, a witness cosignature and
//!   a DSSE envelope made with Python's `cryptography` from the published
//!   PeterNeumann test key, checked against golang's note package and
//!   securesystemslib (see the file's `source`).
//! - The DSSE PAE example of the DSSE protocol description.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use covenant_core::envelope::{self, Envelope, pae};
use covenant_core::keys::{KeySet, PublicKey, SigningKey};
use covenant_core::merkle;
use covenant_core::note::{self, Checkpoint, Note, NoteSigner, NoteVerifier, TlogProof};
use covenant_core::statements::{Payload, StatementError};
use serde::{Deserialize, Serialize};

fn vectors() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/c2sp-dsse.json");
    serde_json::from_slice(&std::fs::read(path).expect("vector file is in the repo")).unwrap()
}

fn s<'a>(v: &'a serde_json::Value, path: &[&str]) -> &'a str {
    path.iter().fold(v, |v, k| &v[*k]).as_str().unwrap_or_else(|| panic!("missing {path:?}"))
}

#[test]
fn signed_note_example_com_foo_verifies() {
    let verifier =
        NoteVerifier::parse("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k").unwrap();
    let text = "This is an example message.\n\n\u{2014} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";
    let note = Note::parse(text.as_bytes()).unwrap();
    assert_eq!(note.text(), "This is an example message.\n");
    assert_eq!(note.verify(&[&verifier]).unwrap(), vec!["example.com/foo".to_owned()]);
    assert_eq!(note.to_text(), text, "formatting reproduces the note byte for byte");
}

#[test]
fn signed_note_peter_neumann_signature_is_reproduced() {
    let signer =
        NoteSigner::parse_private("PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")
            .unwrap();
    let text = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    assert_eq!(
        signer.sign(text).unwrap().to_line(),
        "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
    );
    assert_eq!(format!("{:08x}", signer.verifier().id()), "c74f20a3");
}

#[test]
fn c2sp_checkpoint_verifies_and_formats_byte_for_byte() {
    let v = vectors();
    let text = s(&v, &["checkpoint", "text"]);
    let log = NoteVerifier::parse(s(&v, &["checkpoint", "verifier_key"])).unwrap();
    assert_eq!(log.to_string(), s(&v, &["checkpoint", "verifier_key"]));
    let verified = note::open_checkpoint(text.as_bytes(), &log).unwrap();
    let cp = verified.checkpoint();
    assert_eq!(cp.origin, "example.com/test-log");
    assert_eq!(cp.size, 8);
    // The size-8 root of the transparency-dev leaves.
    assert_eq!(hex::encode(cp.root_hash), "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328");
    let mut tree = merkle::MemoryTree::new();
    for leaf in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"] {
        tree.push_leaf(&hex::decode(leaf).unwrap());
    }
    assert_eq!(tree.root(), cp.root_hash);

    // Our signer, given the same key, produces the same note: Ed25519 is
    // deterministic, so this checks the signed bytes exactly.
    let seed: [u8; 32] = hex::decode(s(&v, &["ed25519_seed_hex"])).unwrap().try_into().unwrap();
    let signer = NoteSigner::new("example.com/test-log", SigningKey::from_seed(&seed)).unwrap();
    assert_eq!(cp.sign(&signer).unwrap().to_text(), text);
}

#[test]
fn c2sp_cosignature_verifies_and_is_reproduced() {
    let v = vectors();
    let checkpoint = s(&v, &["checkpoint", "text"]);
    let log = NoteVerifier::parse(s(&v, &["checkpoint", "verifier_key"])).unwrap();
    let witness = NoteVerifier::parse(s(&v, &["cosignature", "witness_verifier_key"])).unwrap();
    let line = s(&v, &["cosignature", "line"]);
    let timestamp = v["cosignature"]["timestamp"].as_u64().unwrap();

    let cosigned = format!("{checkpoint}{line}\n");
    let verified = note::open_checkpoint(cosigned.as_bytes(), &log).unwrap();
    let cosigs = verified.require_cosignatures(&[&witness], 1).unwrap();
    assert_eq!(cosigs.len(), 1);
    assert_eq!(cosigs[0].witness, "witness.example/w1");
    assert_eq!(cosigs[0].timestamp, timestamp);

    let body = Checkpoint::parse_text(verified.note().text()).unwrap().to_text();
    assert_eq!(note::cosignature_message(&body, timestamp), s(&v, &["cosignature", "signed_message"]).as_bytes());

    let seed: [u8; 32] = hex::decode(s(&v, &["ed25519_seed_hex"])).unwrap().try_into().unwrap();
    let signer = NoteSigner::new("witness.example/w1", SigningKey::from_seed(&seed)).unwrap();
    assert_eq!(signer.cosignature_verifier().to_string(), s(&v, &["cosignature", "witness_verifier_key"]));
    assert_eq!(signer.cosign(&body, timestamp).unwrap().to_line(), format!("{line}\n"));
}

/// The vector's payload: `{"_type":"release","product":"lim","version":"1.1.0"}`
/// (a shortened release, not our full manifest).
#[derive(Serialize, Deserialize)]
struct ShortRelease {
    #[serde(rename = "_type")]
    type_tag: String,
    product: String,
    version: String,
}

impl Payload for ShortRelease {
    const PAYLOAD_TYPE: &'static str = "application/vnd.covenant.release.v1+json";
    fn validate(&self) -> Result<(), StatementError> {
        Ok(())
    }
}

#[test]
fn dsse_pae_and_envelope_vectors() {
    assert_eq!(
        pae("http://example.com/HelloWorld", b"hello world"),
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    );

    let v = vectors();
    let bytes = serde_json::to_vec(&v["dsse"]["envelope"]).unwrap();
    let env = Envelope::parse(&bytes).unwrap();
    assert_eq!(pae(env.payload_type(), env.payload()), s(&v, &["dsse", "pae"]).as_bytes());

    let public = PublicKey::from_hex(s(&v, &["ed25519_public_hex"])).unwrap();
    assert_eq!(public.key_id().to_string(), s(&v, &["dsse", "keyid"]));
    let verified = envelope::verify::<ShortRelease>(&bytes, &KeySet::single(public)).unwrap();
    assert_eq!(verified.value().version, "1.1.0");
    assert_eq!(verified.signers().len(), 1);

    // Our signer reproduces the signature exactly.
    let seed: [u8; 32] = hex::decode(s(&v, &["ed25519_seed_hex"])).unwrap().try_into().unwrap();
    let mut mine = Envelope::new(env.payload_type(), env.payload().to_vec());
    mine.sign(&SigningKey::from_seed(&seed));
    assert_eq!(
        Some(STANDARD.encode(&mine.signatures()[0].sig).as_str()),
        v["dsse"]["envelope"]["signatures"][0]["sig"].as_str()
    );
}

#[test]
fn tlog_proof_text_is_c2sp_line_by_line() {
    let v = vectors();
    let checkpoint = s(&v, &["checkpoint", "text"]);
    let log = NoteVerifier::parse(s(&v, &["checkpoint", "verifier_key"])).unwrap();
    let mut tree = merkle::MemoryTree::new();
    for leaf in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"] {
        tree.push_leaf(&hex::decode(leaf).unwrap());
    }
    let proof = TlogProof {
        extra: None,
        index: 2,
        proof: merkle::inclusion_proof(&tree, 2, 8).unwrap(),
        checkpoint: checkpoint.to_owned(),
    };
    let text = proof.to_text();
    let lines: Vec<&str> = text.split('\n').collect();
    assert_eq!(lines[0], "c2sp.org/tlog-proof@v1");
    assert_eq!(lines[1], "index 2");
    assert_eq!(lines[2..5].iter().map(|l| STANDARD.decode(l).unwrap().len()).collect::<Vec<_>>(), [32, 32, 32]);
    assert_eq!(lines[5], "");
    assert_eq!(lines[6..].join("\n"), checkpoint);
    assert_eq!(TlogProof::parse(text.as_bytes()).unwrap(), proof);
    let verified = proof.verify(&tree.leaf_hash(2).unwrap(), &log).unwrap();
    assert_eq!(verified.checkpoint().size, 8);

    let with_extra = TlogProof { extra: Some(b"age-v1".to_vec()), ..proof };
    let text = with_extra.to_text();
    assert!(text.starts_with("c2sp.org/tlog-proof@v1\nextra YWdlLXYx\nindex 2\n"));
    assert_eq!(TlogProof::parse(text.as_bytes()).unwrap(), with_extra);
}
