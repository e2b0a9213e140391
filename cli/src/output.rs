//! What `covenant --json` prints, one type per answer, so that scripts, the
//! demo and the tests read the output back through the same types the
//! commands write it with (`serde_json::from_str::<output::Recorded>`).
//!
//! The field names and nesting are the interface: a script that read
//! `["index"]` keeps reading it. Fields are declared in alphabetical order,
//! the order in which the ad-hoc JSON objects they replace were printed.

use std::path::PathBuf;

use covenant_core::statements::{Decision, Roles};
use serde::{Deserialize, Serialize};

use crate::query::Expiring;

/// `covenant admin …` (every action) and `covenant admin identity issue`:
/// the ledger entry that recorded the action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    /// The action's digest (what a second admin approves, for a proposal).
    pub action_digest: String,
    /// The entry's ledger index.
    pub index: u64,
    /// The entry's inclusion proof (C2SP tlog-proof text).
    pub tlog_proof: String,
}

/// `covenant admin identity enroll`: the signed registration written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The certificate's SHA-256.
    pub certificate_sha256: String,
    /// Where the signed registration was written.
    pub enroll: PathBuf,
}

/// `covenant attest submit`, `covenant verify submit`, `covenant signal
/// submit`: the ledger entry that recorded the statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    /// For a signal: the case it opened (`case-INDEX`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case: Option<String>,
    /// The entry's ledger index.
    pub index: u64,
}

/// `covenant attest new`: the unsigned attestation written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationWritten {
    /// Where it was written.
    pub attestation: PathBuf,
}

/// `covenant attest sign`, `covenant release sign`: the signatures the
/// envelope now carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    /// How many.
    pub signatures: usize,
}

/// `covenant verify show`: an end-use attestation, as the engineer checks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    /// Whether every undertaking is given.
    pub all_undertakings: bool,
    /// The customer id.
    pub customer: String,
    /// The deployments it covers.
    pub deployments: Vec<String>,
    /// The SHA-256 of its payload.
    pub digest: String,
    /// The end use's category.
    pub end_use: String,
    /// The end user's legal name.
    pub end_user: String,
    /// The key ids that signed it.
    pub signed_by: Vec<String>,
    /// Its sites, `COUNTRY/SITE`.
    pub sites: Vec<String>,
    /// Valid from (RFC 3339).
    pub valid_from: String,
    /// Valid until (RFC 3339).
    pub valid_until: String,
}

/// `covenant verify sign`: the signed verification written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationWritten {
    /// Where it was written.
    pub verification: PathBuf,
}

/// `covenant status DEPLOYMENT`, when a decision is logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Standing {
    /// The standing decision.
    pub decision: Decision,
    /// What ends within 30 days (attestation, verification, licence,
    /// grant) and what to do about it; empty when nothing does or the
    /// caller may not list deployments. Absent from older answers.
    #[serde(default)]
    pub expiring: Vec<Expiring>,
    /// Its ledger index.
    pub index: u64,
}

/// `covenant status DEPLOYMENT`, when no decision is logged yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoDecision {
    /// The deployment asked about.
    pub deployment: String,
    /// As in [`Standing`].
    #[serde(default)]
    pub expiring: Vec<Expiring>,
    /// Always `null`.
    pub verdict: Option<String>,
}

/// `covenant audit checkpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The signed note, with its cosignatures.
    pub checkpoint: String,
}

/// `covenant audit entry` (the header) and `covenant audit body`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The body, base64 (`audit body`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The header, base64 (`audit entry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// The ledger index.
    pub index: u64,
}

/// `covenant audit proof`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// The ledger index.
    pub index: u64,
    /// The inclusion proof (C2SP tlog-proof text).
    pub tlog_proof: String,
}

/// `covenant audit watch`: one line per checkpoint verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watched {
    /// The tree's root hash, hex.
    pub root: String,
    /// The tree's size.
    pub size: u64,
}

/// `covenant audit verify`: what was verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    /// The tree's size.
    pub size: u64,
    /// The tree's root hash, hex.
    pub root: String,
    /// The size verified before (0 on the first run).
    pub previous_size: u64,
    /// Entry headers recomputed into the tree.
    pub entries_checked: u64,
    /// Entry bodies checked against their headers.
    pub bodies_checked: u64,
    /// Valid witness cosignatures on the checkpoint.
    pub cosignatures: usize,
    /// The cosignatures the root requires.
    pub witness_threshold: usize,
    /// Whether the root is a development root.
    pub development_root: bool,
}

/// `covenant audit replay`: the decisions replayed and where they differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replayed {
    /// Decisions replayed.
    pub decisions: u64,
    /// Where a logged decision differs from the replay.
    pub mismatches: Vec<Mismatch>,
    /// The ledger's size.
    pub size: u64,
}

/// One difference found by `covenant audit replay`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mismatch {
    /// In words.
    pub detail: String,
    /// What differs (`covenant_core::replay::Mismatch`).
    pub field: String,
    /// The entry's ledger index.
    pub index: u64,
}

/// `covenant keys new`: the keys made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysMade {
    /// The certificate request (absent with `--signing-only`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr: Option<PathBuf>,
    /// The signing key's public half, hex.
    pub signing_key: String,
}

/// Any command that failed, with `--json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The error and its causes.
    pub error: String,
}

/// `covenant release new`: the unsigned manifest written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestWritten {
    /// Where it was written.
    pub manifest: PathBuf,
    /// The release digest (the manifest payload's SHA-256).
    pub release_digest: String,
}

/// `covenant release show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The artifact's SHA-256.
    pub artifact_sha256: String,
    /// The capability baseline.
    pub baseline: String,
    /// The release class.
    pub class: String,
    /// The product line.
    pub product: String,
    /// The release digest.
    pub release_digest: String,
    /// Signatures on the manifest.
    pub signatures: usize,
    /// The artifact's size in bytes.
    pub size: u64,
    /// The version.
    pub version: String,
}

/// `covenant admin publish`: the release's ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// The entry's ledger index.
    pub index: u64,
    /// The release digest.
    pub release_digest: String,
}

/// `covenant root new`: the unsigned root written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootWritten {
    /// The root's version.
    pub version: u64,
    /// Where it was written.
    pub written: PathBuf,
}

/// `covenant root sign`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootSigned {
    /// Signatures the root now carries.
    pub signatures: usize,
    /// The key id that signed.
    pub signed_by: String,
}

/// `covenant root show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootShown {
    /// The root's version.
    pub version: u64,
    /// When it expires (RFC 3339).
    pub expires: String,
    /// Whether it is a development root.
    pub development: bool,
    /// Signatures it carries.
    pub signatures: usize,
    /// Its roles.
    pub roles: Roles,
}

/// `covenant witness init`: the witness made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessMade {
    /// Its TLS certificate, which the server pins.
    pub cert: PathBuf,
    /// Its cosignature verifier key.
    pub vkey: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Issue #17: the types replaced ad-hoc `serde_json::json!` objects;
    /// what they print is byte for byte what those printed.
    #[test]
    fn the_typed_outputs_print_what_the_ad_hoc_json_printed() {
        let same = |typed: String, old: serde_json::Value| assert_eq!(typed, old.to_string());
        same(
            to(&Recorded { action_digest: "ab".into(), index: 7, tlog_proof: "p".into() }),
            serde_json::json!({ "index": 7, "tlog_proof": "p", "action_digest": "ab" }),
        );
        same(
            to(&Submitted { case: Some("case-3".into()), index: 3 }),
            serde_json::json!({ "index": 3, "case": "case-3" }),
        );
        same(to(&Submitted { case: None, index: 3 }), serde_json::json!({ "index": 3 }));
        same(
            to(&Entry { body: None, header: Some("aGk=".into()), index: 2 }),
            serde_json::json!({ "index": 2, "header": "aGk=" }),
        );
        same(to(&KeysMade { csr: None, signing_key: "k".into() }), serde_json::json!({ "signing_key": "k" }));
        same(
            to(&KeysMade { csr: Some(PathBuf::from("/x/request.csr")), signing_key: "k".into() }),
            serde_json::json!({ "signing_key": "k", "csr": PathBuf::from("/x/request.csr") }),
        );
        same(
            to(&Replayed {
                decisions: 4,
                mismatches: vec![Mismatch { detail: "d".into(), field: "verdict".into(), index: 9 }],
                size: 12,
            }),
            serde_json::json!({ "size": 12, "decisions": 4,
                "mismatches": [{ "index": 9, "field": "verdict", "detail": "d" }] }),
        );
        same(
            to(&NoDecision { deployment: "lim-07".into(), expiring: vec![], verdict: None }),
            serde_json::json!({ "deployment": "lim-07", "expiring": [], "verdict": null }),
        );
        same(
            to(&WitnessMade { cert: PathBuf::from("/w/tls-cert.pem"), vkey: "v".into() }),
            serde_json::json!({ "vkey": "v", "cert": PathBuf::from("/w/tls-cert.pem") }),
        );
    }

    fn to<T: Serialize>(value: &T) -> String {
        serde_json::to_string(value).unwrap()
    }
}
