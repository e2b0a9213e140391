//! Ledger entries: a small JSON header (the Merkle leaf) and a body beside it.
//!
//! The header names the entry's kind, its ledger time, the key that signed
//! its body, the pseudonymous subject ids it concerns, and
//! `body_digest = SHA-256(salt || body)`. The 32-byte salt is chosen by the
//! sequencer and stored with the body, never in the header, so nobody holding
//! only headers can test a guessed body against the digest (DESIGN.md
//! "Ledger"). Header bytes are stored and hashed exactly as written.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::digest::{Sha256Digest, Timestamp};
use crate::keys::KeyId;
use crate::merkle::{self, Hash};

/// The largest header accepted (entry bundles frame entries with a 16-bit length).
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// The most subject ids one header may name.
pub const MAX_SUBJECTS: usize = 16;
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
    /// More than [`MAX_SUBJECTS`] subjects, or an invalid subject id.
    #[error("entry header subjects are invalid")]
    BadSubjects,
    /// A body does not match its header's digest.
    #[error("body does not match the header's body_digest")]
    BodyMismatch,
}

/// What an entry records. The set grows with the governance work (#4, #5).
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
    /// A misuse case moved along its lifecycle.
    Case,
    /// A suspension proposed (in force at once, or after approval).
    Suspension,
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
            EntryKind::Suspension => "suspension",
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
    /// Pseudonymous subject ids (customer, deployment) the entry concerns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<String>,
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
        if self.subjects.len() > MAX_SUBJECTS || !self.subjects.iter().all(|s| crate::statements::is_valid_id(s)) {
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
            subjects: vec!["ministry-x".into()],
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
    fn bad_subjects_are_refused() {
        let mut header = EntryHeader {
            kind: EntryKind::Note,
            time: Timestamp::from_unix(0),
            actor: None,
            subjects: vec!["Ministry X".into()],
            body_digest: Sha256Digest::of(b""),
        };
        assert_eq!(header.to_bytes(), Err(EntryError::BadSubjects));
        header.subjects = vec!["a".into(); MAX_SUBJECTS + 1];
        assert_eq!(header.to_bytes(), Err(EntryError::BadSubjects));
    }
}
