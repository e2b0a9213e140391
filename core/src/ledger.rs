//! Ledger entries: a small JSON header (the Merkle leaf) and a body beside it.
//!
//! The header names the entry's kind, its ledger time, the key that signed
//! its body, one subject tag per customer, deployment or person the entry
//! concerns, and `body_digest = SHA-256(salt || body)`. The 32-byte salt is
//! chosen by the sequencer and stored with the body, never in the header, so
//! nobody holding only headers can test a guessed body against the digest
//! (`docs/ledger.md`). Header bytes are stored and hashed exactly as
//! written.
//!
//! Headers are public (the tiles publish them), so they never name a
//! subject. A subject tag is `HMAC-SHA256(K_s, body_digest)` truncated to
//! [`TAG_BYTES`], where `K_s = HMAC-SHA256(subject_secret,
//! "covenant/subject-key/v1\n" || s)` and `subject_secret` is 32 random
//! bytes only the server holds. Because every body digest is salted, tags
//! of the same subject differ from entry to entry: without `K_s` they link
//! nothing. Whoever holds `K_s` (the server hands it to those entitled to
//! `s`) recomputes the tag of every header and finds every entry of `s`.

use std::fmt;

use std::collections::BTreeMap;

use hmac::{Hmac, KeyInit as _, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::digest::{Sha256Digest, Timestamp};
use crate::keys::KeyId;
use crate::merkle::{self, Hash};

/// The largest header accepted (entry bundles frame entries with a 16-bit length).
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// The most subjects (and so subject tags) one header may carry.
pub const MAX_SUBJECTS: usize = 16;
/// The bytes of a subject tag (128 bits: collisions between a subject's
/// tag and an unrelated entry's are out of reach).
pub const TAG_BYTES: usize = 16;
/// The domain separator of a subject key.
pub const SUBJECT_KEY_CONTEXT: &[u8] = b"covenant/subject-key/v1\n";
/// The salt length.
pub const SALT_LEN: usize = 32;

/// Why a header or body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// The header is larger than [`MAX_HEADER_BYTES`].
    #[error("entry header is {0} bytes, over the limit")]
    HeaderTooLarge(usize),
    /// The header is not JSON of the header's shape.
    #[error("malformed entry header: {0}")]
    Malformed(String),
    /// More than [`MAX_SUBJECTS`] subject tags, or tags out of order.
    #[error("entry header subject tags are invalid")]
    BadSubjects,
    /// A body does not match its header's digest.
    #[error("body does not match the header's body_digest")]
    BodyMismatch,
}

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EntryKind {
    /// A root-of-trust version (the first entry of every ledger).
    Root,
    /// An identity issued: a certificate and the signing key registered with it.
    Identity,
    /// An identity revoked.
    Revocation,
    /// A signed annotation ("authority notified").
    Note,
    /// A customer registered.
    Customer,
    /// A deployment registered (customer, product, site).
    Deployment,
    /// A contract set (a new one, or its next version).
    Contract,
    /// A release published (release keys, threshold).
    Release,
    /// An end-use attestation (a customer key).
    Attestation,
    /// A field verification (an engineer key).
    Verification,
    /// A misuse signal (an engineer or auditor key); it opens a case.
    Signal,
    /// A misuse case moved along its lifecycle, to any state but closed.
    Case,
    /// A misuse case closed (a case moved to `closed`).
    CaseClosure,
    /// A suspension proposed at a level above none (in force at once, or
    /// after approval).
    Suspension,
    /// A suspension's lifting proposed (level none; in force after approval).
    SuspensionLift,
    /// A security fix under L2 proposed for one deployment.
    SecurityFix,
    /// A waiver of one condition proposed.
    Waiver,
    /// An admin's approval of a proposal.
    Approval,
    /// A denied-party list entry.
    DeniedParty,
    /// An export licence.
    Licence,
    /// A grant (the decision key).
    Grant,
    /// A withhold (the decision key).
    Withhold,
    /// An install report (the deployment's key).
    Report,
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EntryKind::Root => "root",
            EntryKind::Identity => "identity",
            EntryKind::Revocation => "revocation",
            EntryKind::Note => "note",
            EntryKind::Customer => "customer",
            EntryKind::Deployment => "deployment",
            EntryKind::Contract => "contract",
            EntryKind::Release => "release",
            EntryKind::Attestation => "attestation",
            EntryKind::Verification => "verification",
            EntryKind::Signal => "signal",
            EntryKind::Case => "case",
            EntryKind::CaseClosure => "case_closure",
            EntryKind::Suspension => "suspension",
            EntryKind::SuspensionLift => "suspension_lift",
            EntryKind::SecurityFix => "security_fix",
            EntryKind::Waiver => "waiver",
            EntryKind::Approval => "approval",
            EntryKind::DeniedParty => "denied_party",
            EntryKind::Licence => "licence",
            EntryKind::Grant => "grant",
            EntryKind::Withhold => "withhold",
            EntryKind::Report => "report",
        })
    }
}

/// An entry header: the Merkle leaf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryHeader {
    /// What the entry records.
    pub kind: EntryKind,
    /// Ledger time, assigned by the sequencer; never goes backwards.
    pub time: Timestamp,
    /// The key that signed the body, if a person or device did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<KeyId>,
    /// One tag per subject (customer, deployment, person) the entry
    /// concerns, in ascending order (so that the order tells nothing about
    /// which is which); see [`Keyring::tags`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<SubjectTag>,
    /// `SHA-256(salt || body)`.
    pub body_digest: Sha256Digest,
}

impl EntryHeader {
    /// Parses header bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, EntryError> {
        if bytes.len() > MAX_HEADER_BYTES {
            return Err(EntryError::HeaderTooLarge(bytes.len()));
        }
        let header: EntryHeader = serde_json::from_slice(bytes).map_err(|e| EntryError::Malformed(e.to_string()))?;
        header.check()?;
        Ok(header)
    }

    /// The bytes to store and hash (the Merkle leaf).
    pub fn to_bytes(&self) -> Result<Vec<u8>, EntryError> {
        self.check()?;
        let bytes = serde_json::to_vec(self).map_err(|e| EntryError::Malformed(e.to_string()))?;
        if bytes.len() > MAX_HEADER_BYTES {
            return Err(EntryError::HeaderTooLarge(bytes.len()));
        }
        Ok(bytes)
    }

    fn check(&self) -> Result<(), EntryError> {
        if self.tags.len() > MAX_SUBJECTS || !self.tags.is_sorted() {
            return Err(EntryError::BadSubjects);
        }
        Ok(())
    }

    /// Checks that `body`, with its `salt`, is the body this header commits to.
    pub fn check_body(&self, salt: &[u8; SALT_LEN], body: &[u8]) -> Result<(), EntryError> {
        if body_digest(salt, body) == self.body_digest { Ok(()) } else { Err(EntryError::BodyMismatch) }
    }
}

/// `SHA-256(salt || body)`.
pub fn body_digest(salt: &[u8; SALT_LEN], body: &[u8]) -> Sha256Digest {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    h.update(salt);
    h.update(body);
    Sha256Digest(h.finalize().into())
}

/// The Merkle leaf hash of header bytes (RFC 6962 §2.1).
pub fn leaf_hash(header: &[u8]) -> Hash {
    merkle::leaf_hash(header)
}

/// An entry's tag for one subject: the first [`TAG_BYTES`] of
/// `HMAC-SHA256(K_s, body_digest)`, written as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubjectTag(pub [u8; TAG_BYTES]);

impl fmt::Debug for SubjectTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubjectTag({})", hex::encode(self.0))
    }
}

impl fmt::Display for SubjectTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl Serialize for SubjectTag {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for SubjectTag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        // Lowercase only: one tag has one spelling, so header bytes are canonical.
        if text.len() != 2 * TAG_BYTES || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(serde::de::Error::custom("a subject tag is 32 lowercase hex digits"));
        }
        let mut tag = [0u8; TAG_BYTES];
        hex::decode_to_slice(&text, &mut tag).map_err(serde::de::Error::custom)?;
        Ok(SubjectTag(tag))
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = match <Hmac<Sha256>>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The server's subject secret: 32 random bytes from which every subject
/// key is derived. Only the server holds it (`DATA/keys/subjects.key`).
#[derive(Clone, PartialEq, Eq)]
pub struct SubjectSecret([u8; 32]);

impl fmt::Debug for SubjectSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubjectSecret(..)")
    }
}

impl Drop for SubjectSecret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl SubjectSecret {
    /// A secret from 32 bytes the caller drew at random.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SubjectSecret(bytes)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes).ok()?;
        Some(SubjectSecret(bytes))
    }

    /// The secret as 64 hex digits (for its key file).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// `K_s = HMAC-SHA256(secret, "covenant/subject-key/v1\n" || s)`.
    pub fn key(&self, subject: &str) -> SubjectKey {
        SubjectKey(hmac_sha256(&self.0, &[SUBJECT_KEY_CONTEXT, subject.as_bytes()]))
    }
}

/// One subject's key: whoever holds it finds every entry of that subject.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SubjectKey(pub [u8; 32]);

impl fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubjectKey(..)")
    }
}

impl SubjectKey {
    /// This subject's tag in the entry whose body digest is `body_digest`.
    pub fn tag(&self, body_digest: &Sha256Digest) -> SubjectTag {
        let mac = hmac_sha256(&self.0, &[&body_digest.0]);
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&mac[..TAG_BYTES]);
        SubjectTag(tag)
    }

    /// Whether `header` concerns this key's subject.
    pub fn finds(&self, header: &EntryHeader) -> bool {
        let tag = self.tag(&header.body_digest);
        header.tags.contains(&tag)
    }
}

/// What derives subject tags: the server's secret, or (for an auditor's
/// replay) the subject keys the server handed out. Pure values: the fold
/// checks every header's tags against its body with it.
#[derive(Debug, Clone)]
pub enum Keyring {
    /// The server's secret: every subject's key.
    Secret(SubjectSecret),
    /// The keys of some subjects, by subject id.
    Keys(BTreeMap<String, SubjectKey>),
}

impl Default for Keyring {
    /// No keys: an entry naming any subject cannot be checked (and is refused).
    fn default() -> Self {
        Keyring::Keys(BTreeMap::new())
    }
}

impl Keyring {
    /// The key of `subject`, if this keyring has it.
    pub fn key(&self, subject: &str) -> Option<SubjectKey> {
        match self {
            Keyring::Secret(secret) => Some(secret.key(subject)),
            Keyring::Keys(keys) => keys.get(subject).copied(),
        }
    }

    /// The header tags of an entry concerning `subjects` whose body digest
    /// is `body_digest`, in ascending order; `Err(subject)` names a subject
    /// whose key this keyring lacks.
    pub fn tags(&self, subjects: &[String], body_digest: &Sha256Digest) -> Result<Vec<SubjectTag>, String> {
        let mut tags = Vec::with_capacity(subjects.len());
        for subject in subjects {
            let key = self.key(subject).ok_or_else(|| subject.clone())?;
            tags.push(key.tag(body_digest));
        }
        tags.sort();
        Ok(tags)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn header_round_trips_and_commits_to_salted_body() {
        let salt = [7u8; SALT_LEN];
        let header = EntryHeader {
            kind: EntryKind::Note,
            time: Timestamp::from_unix(1_800_000_000),
            actor: None,
            tags: Keyring::Secret(SubjectSecret::from_bytes([1; 32]))
                .tags(&["ministry-x".into()], &body_digest(&salt, b"body"))
                .unwrap(),
            body_digest: body_digest(&salt, b"body"),
        };
        let bytes = header.to_bytes().unwrap();
        assert_eq!(EntryHeader::parse(&bytes).unwrap(), header);
        assert_eq!(header.check_body(&salt, b"body"), Ok(()));
        assert_eq!(header.check_body(&salt, b"bodY"), Err(EntryError::BodyMismatch));
        assert_eq!(header.check_body(&[8u8; SALT_LEN], b"body"), Err(EntryError::BodyMismatch));
        // The unsalted digest is not what the header holds.
        assert_ne!(header.body_digest, Sha256Digest::of(b"body"));
    }

    #[test]
    fn bad_subject_tags_are_refused() {
        let mut header = EntryHeader {
            kind: EntryKind::Note,
            time: Timestamp::from_unix(0),
            actor: None,
            tags: vec![SubjectTag([2; TAG_BYTES]), SubjectTag([1; TAG_BYTES])],
            body_digest: Sha256Digest::of(b""),
        };
        assert_eq!(header.to_bytes(), Err(EntryError::BadSubjects));
        header.tags = vec![SubjectTag([1; TAG_BYTES]); MAX_SUBJECTS + 1];
        assert_eq!(header.to_bytes(), Err(EntryError::BadSubjects));
        // Upper-case hex, a short tag and a plain subject id are refused at parse.
        let digest = Sha256Digest::of(b"").to_string();
        for tags in [format!("[\"{}\"]", "AB".repeat(TAG_BYTES)), "[\"ab\"]".into(), "[\"ministry-x\"]".into()] {
            let json =
                format!(r#"{{"kind":"note","time":"2030-01-01T00:00:00Z","tags":{tags},"body_digest":"{digest}"}}"#);
            assert!(matches!(EntryHeader::parse(json.as_bytes()), Err(EntryError::Malformed(_))), "{json}");
        }
        // The old plaintext field is refused.
        let json =
            format!(r#"{{"kind":"note","time":"2030-01-01T00:00:00Z","subjects":["x"],"body_digest":"{digest}"}}"#);
        assert!(EntryHeader::parse(json.as_bytes()).is_err());
    }

    #[test]
    fn hmac_matches_the_published_answer() {
        // RFC 2104 HMAC-SHA256 of the pangram under key "key" (the widely
        // published example, e.g. Wikipedia's "HMAC" article).
        let mac = hmac_sha256(b"key", &[b"The quick brown fox jumps over the lazy dog"]);
        assert_eq!(hex::encode(mac), "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8");
    }

    #[test]
    fn tags_differ_per_entry_and_keys_find_their_subject() {
        let secret = SubjectSecret::from_bytes([9; 32]);
        let (d1, d2) = (body_digest(&[1; SALT_LEN], b"same"), body_digest(&[2; SALT_LEN], b"same"));
        let k = secret.key("min-x");
        assert_ne!(k.tag(&d1), k.tag(&d2), "the same subject's tags are unlinkable across entries");
        assert_ne!(k.tag(&d1), secret.key("min-y").tag(&d1));
        let keyring = Keyring::Keys(BTreeMap::from([("min-x".to_owned(), k)]));
        assert_eq!(keyring.tags(&["min-x".into()], &d1), Ok(vec![k.tag(&d1)]));
        assert_eq!(keyring.tags(&["min-y".into()], &d1), Err("min-y".into()));
        let header = EntryHeader {
            kind: EntryKind::Customer,
            time: Timestamp::from_unix(0),
            actor: None,
            tags: Keyring::Secret(secret.clone()).tags(&["min-x".into(), "lim-07".into()], &d1).unwrap(),
            body_digest: d1,
        };
        assert!(k.finds(&header));
        assert!(secret.key("lim-07").finds(&header));
        assert!(!secret.key("min-y").finds(&header));
        assert!(!String::from_utf8(header.to_bytes().unwrap()).unwrap().contains("min-x"));
    }
}
