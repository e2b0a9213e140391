//! The evidence pack (`docs/evidence.md`): a folder that shows what the
//! ledger says about a customer, a deployment, a case or everything, and
//! that verifies with no server and no identity. This module is its format
//! (the index, the entry lines, the due-diligence headings) and its whole
//! verification, pure: the caller opens the files and hands their contents
//! in, the headers and entries as iterators in index order, so memory stays
//! flat in the ledger's size.
//!
//! What a pack proves, step by step (each failure named):
//! 1. the root chain walks from the first root (or one the verifier trusts);
//! 2. the checkpoint is signed by the ledger key of the newest root and
//!    cosigned by its witness threshold;
//! 3. the headers, one per entry from 0, are exactly the checkpoint's tree;
//! 4. each entry's body matches its header's salted digest and its kind and
//!    signer, its inclusion proof reaches the checkpoint's root, and its
//!    signature verifies (root keys for roots, releases, admin actions and
//!    decisions; for what a person or device signed, the key the pack's own
//!    identity entries registered);
//! 5. the pack is complete for its selection: within its range, every
//!    header tagged with one of its subjects (or, for `all`, every header)
//!    is in the pack or listed as withheld, and no grant or withhold is
//!    withheld.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::digest::{Sha256Digest, Timestamp};
use crate::envelope::{self, Envelope};
use crate::keys::{KeyId, KeySet, PublicKey};
use crate::ledger::{EntryHeader, EntryKind, SubjectKey};
use crate::merkle::{self, CompactRange, Hash};
use crate::note::{self, NoteVerifier};
use crate::root::{RootPolicy, TrustedRoot, walk_chain};
use crate::statements::{ActionKind, AdminAction, CheckIn, Decision, Payload, ReleaseManifest, RootMetadata};

/// The pack format's name and version, in `index.json`.
pub const PACK_FORMAT: &str = "covenant-evidence-pack/v1";

/// What a pack was exported for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// `customer`, `deployment`, `case` or `all`.
    pub kind: String,
    /// The customer, deployment or case id (none for `all`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Only entries at or after this ledger time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Timestamp>,
    /// Only entries at or before this ledger time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Timestamp>,
}

/// An entry of the selection the exporter could not read (its body is out
/// of the exporter's scope): listed, so the pack is complete without it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Withheld {
    /// Its index.
    pub index: u64,
    /// Its kind, as its header says.
    pub kind: EntryKind,
}

/// One item under a heading of the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    /// The entry's index.
    pub index: u64,
    /// Its ledger time.
    pub time: Timestamp,
    /// Its kind.
    pub kind: EntryKind,
    /// One line about it (`crate::describe::summary`).
    pub summary: String,
    /// Its leaf hash (hex): `SHA-256(0x00 ‖ header)`.
    pub leaf_hash: String,
}

/// The entries under one due-diligence heading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// The heading.
    pub heading: String,
    /// Its entries, by index.
    pub items: Vec<Item>,
}

/// `index.json`: what the pack holds and how to check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackIndex {
    /// Always [`PACK_FORMAT`].
    pub format: String,
    /// What was selected.
    pub selection: Selection,
    /// The checkpoint's tree size (how many lines `headers` has).
    pub tree_size: u64,
    /// The range the pack is complete for, inclusive (none: nothing was
    /// selected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<(u64, u64)>,
    /// The subject keys of the selection's subjects (hex), with which anyone
    /// finds every header of those subjects: the completeness check.
    #[serde(default)]
    pub subject_keys: BTreeMap<String, String>,
    /// Entries of the selection whose bodies the exporter could not read.
    #[serde(default)]
    pub withheld: Vec<Withheld>,
    /// The entries sorted under the due-diligence headings.
    pub sections: Vec<Section>,
}

/// One line of `entries.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackEntry {
    /// The entry's index.
    pub index: u64,
    /// The salt, hex.
    pub salt: String,
    /// The body (the exact envelope bytes), base64.
    pub body: String,
    /// The inclusion proof against the pack's checkpoint, hex hashes in RFC
    /// 9162 order.
    pub proof: Vec<String>,
}

/// The due-diligence heading an entry of `kind` belongs under (EU
/// Regulation 2021/821 art. 5 and the Commission's 2024 guidelines ask a
/// vendor to show each).
pub fn heading(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Attestation => "End user and end use: attestations",
        EntryKind::Verification => "On-site checks: field verifications",
        EntryKind::Contract | EntryKind::Licence | EntryKind::DeniedParty => {
            "Contract safeguards: contracts, licences, denied parties"
        }
        EntryKind::Grant | EntryKind::Withhold | EntryKind::Report => {
            "Technical safeguards: every grant and withhold with its reasons, and installs"
        }
        EntryKind::Signal | EntryKind::Case => "Red flags: signals and cases",
        EntryKind::Suspension | EntryKind::Waiver | EntryKind::SecurityFix | EntryKind::Approval => {
            "Suspensions, waivers and security fixes, with their approvals"
        }
        EntryKind::Note => "Notes (such as \"authority notified\")",
        EntryKind::Root
        | EntryKind::Identity
        | EntryKind::Revocation
        | EntryKind::Customer
        | EntryKind::Deployment
        | EntryKind::Release => "Parties, identities, releases and roots",
    }
}

/// The headings in the order the index lists them.
pub const HEADINGS: [&str; 8] = [
    "End user and end use: attestations",
    "On-site checks: field verifications",
    "Contract safeguards: contracts, licences, denied parties",
    "Technical safeguards: every grant and withhold with its reasons, and installs",
    "Red flags: signals and cases",
    "Suspensions, waivers and security fixes, with their approvals",
    "Notes (such as \"authority notified\")",
    "Parties, identities, releases and roots",
];

/// Why a pack does not verify: each names what failed and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PackError {
    /// `index.json` is not a pack index this build reads.
    #[error("index.json: {0}")]
    Index(String),
    /// The root chain does not verify.
    #[error("the root chain: {0}")]
    Roots(String),
    /// The checkpoint is not signed by the ledger key, or lacks the witness
    /// threshold.
    #[error("the checkpoint: {0}")]
    Checkpoint(String),
    /// The headers are not the checkpoint's tree.
    #[error("the headers: {0}")]
    Headers(String),
    /// An entry's header does not parse.
    #[error("entry {index}: its header: {why}")]
    Header {
        /// The entry.
        index: u64,
        /// Why.
        why: String,
    },
    /// An entry's body does not match its header.
    #[error("entry {index}: its body does not match its header: {why}")]
    Body {
        /// The entry.
        index: u64,
        /// Why.
        why: String,
    },
    /// An entry's inclusion proof does not reach the checkpoint's root.
    #[error("entry {index}: its inclusion proof does not verify: {why}")]
    Proof {
        /// The entry.
        index: u64,
        /// Why.
        why: String,
    },
    /// An entry's signature does not verify.
    #[error("entry {index}: its signature: {why}")]
    Signature {
        /// The entry.
        index: u64,
        /// Why.
        why: String,
    },
    /// An entry of the selection is neither in the pack nor listed as
    /// withheld, or a decision is withheld.
    #[error("the pack is incomplete: entry {index} ({kind}) {why}")]
    Incomplete {
        /// The entry.
        index: u64,
        /// Its kind.
        kind: EntryKind,
        /// What is wrong.
        why: String,
    },
    /// An entry line is malformed, out of order, or outside the pack's range.
    #[error("entries.jsonl: {0}")]
    Entries(String),
}

/// What a verified pack showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackReport {
    /// The selection.
    pub selection: Selection,
    /// The checkpoint's size and root (hex).
    pub tree_size: u64,
    /// See `tree_size`.
    pub root_hash: String,
    /// The newest root's version.
    pub root_version: u64,
    /// Witness cosignatures verified, and the threshold the root sets.
    pub cosignatures: usize,
    /// See `cosignatures`.
    pub witness_threshold: usize,
    /// Entries whose body, proof and signature verified.
    pub entries: u64,
    /// Entries of the selection listed as withheld.
    pub withheld: u64,
    /// The range the pack is complete for.
    pub range: Option<(u64, u64)>,
    /// Whether the first root was trusted on first use (no `--root`).
    pub trusted_on_first_use: bool,
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// The keys every root version of the chain lists, by role: what the
/// ledger's own entries were signed with at one time or another.
#[derive(Debug, Default)]
struct RootKeys {
    admin: BTreeMap<KeyId, PublicKey>,
    decision: BTreeMap<KeyId, PublicKey>,
    release: Vec<KeySet>,
    root_bodies: BTreeSet<Vec<u8>>,
}

/// The identities the pack's own identity entries registered, by key.
type Registered = BTreeMap<KeyId, (crate::statements::IdentityRole, String, PublicKey)>;

/// Verifies a pack. `roots` are the root envelopes, oldest first;
/// `trusted` a root the verifier already trusts (else the first of
/// `roots`, trusted on first use); `headers` every header from index 0;
/// `entries` the entry lines in index order. Nothing is read but what is
/// handed in.
pub fn verify_pack<H, E>(
    index: &PackIndex,
    roots: &[Vec<u8>],
    trusted: Option<&[u8]>,
    checkpoint: &[u8],
    headers: H,
    entries: E,
) -> Result<PackReport, PackError>
where
    H: IntoIterator<Item = Result<Vec<u8>, String>>,
    E: IntoIterator<Item = Result<PackEntry, String>>,
{
    if index.format != PACK_FORMAT {
        return Err(PackError::Index(format!("format {:?}, not {PACK_FORMAT}", index.format)));
    }
    // Steps 3 and 5 read the headers once, front to back; the entries are
    // merged in as their index comes. The checkpoint and roots come first.
    let first = roots.first().ok_or_else(|| PackError::Roots("the pack holds no root".into()))?;
    let anchor = trusted.unwrap_or(first);
    // Roots are checked as of the newest root's own issue (a pack outlives
    // root expiry: it is evidence of what was, not a device's trust).
    let as_of = roots
        .iter()
        .filter_map(|r| Envelope::parse(r).ok().and_then(|e| RootMetadata::parse(e.payload()).ok()))
        .map(|m| m.expires.plus_seconds(-1))
        .min()
        .ok_or_else(|| PackError::Roots("no root parses".into()))?;
    let start = TrustedRoot::provision(anchor, as_of, RootPolicy { allow_development: true })
        .map_err(|e| PackError::Roots(e.to_string()))?;
    let mut keys = RootKeys::default();
    let mut collect = |root: &TrustedRoot| -> Result<(), PackError> {
        let bad = |e: crate::root::RootError| PackError::Roots(e.to_string());
        keys.admin.extend(root.admin_keys().map_err(bad)?.keys().map(|(id, k)| (*id, *k)));
        keys.decision.extend(root.decision_keys().map_err(bad)?.keys().map(|(id, k)| (*id, *k)));
        keys.release.push(root.release_keys().map_err(bad)?);
        Ok(())
    };
    collect(&start)?;
    let mut newest = start.clone();
    for next in roots.iter().skip(1) {
        let rotated = walk_chain(&newest, [next.as_slice()], as_of).map_err(|e| PackError::Roots(e.to_string()))?;
        if rotated.version() != newest.version() {
            collect(&rotated)?;
        }
        newest = rotated;
    }
    keys.root_bodies = roots.iter().cloned().collect();
    let log: NoteVerifier = newest
        .ledger_verifiers()
        .ok()
        .and_then(|v| v.into_iter().next())
        .ok_or_else(|| PackError::Roots("the newest root names no ledger key".into()))?;
    let verified =
        note::open_checkpoint(checkpoint, &log).map_err(|e| PackError::Checkpoint(format!("ledger signature: {e}")))?;
    let (witnesses, threshold) = newest.witness_policy().map_err(|e| PackError::Roots(e.to_string()))?;
    let cosignatures = verified
        .require_cosignatures(&witnesses.iter().collect::<Vec<_>>(), 0)
        .map_err(|e| PackError::Checkpoint(format!("witness cosignatures: {e}")))?
        .len();
    let size = verified.checkpoint().size;
    let root_hash = verified.checkpoint().root_hash;
    if size != index.tree_size {
        return Err(PackError::Index(format!(
            "it says the tree has {} entries; the checkpoint says {size}",
            index.tree_size
        )));
    }
    let subject_keys: Vec<SubjectKey> = index
        .subject_keys
        .iter()
        .map(|(s, k)| hex32(k).map(SubjectKey).ok_or_else(|| PackError::Index(format!("the subject key of {s}"))))
        .collect::<Result<_, _>>()?;
    let withheld: BTreeMap<u64, EntryKind> = index.withheld.iter().map(|w| (w.index, w.kind)).collect();
    let everything = index.selection.kind == "all";

    let mut range = CompactRange::new();
    let mut entries = entries.into_iter().peekable();
    let mut registered = Registered::new();
    let mut verified_entries = 0u64;
    for (i, header_bytes) in headers.into_iter().enumerate() {
        let i = i as u64;
        let bytes = header_bytes.map_err(PackError::Headers)?;
        if i >= size {
            return Err(PackError::Headers(format!("more headers than the checkpoint's {size}")));
        }
        let leaf = merkle::leaf_hash(&bytes);
        range.push(leaf);
        let header = EntryHeader::parse(&bytes).map_err(|e| PackError::Header { index: i, why: e.to_string() })?;
        let next_is_this = match entries.peek() {
            Some(Ok(e)) => e.index == i,
            Some(Err(e)) => return Err(PackError::Entries(e.clone())),
            None => false,
        };
        if next_is_this {
            let Some(Ok(entry)) = entries.next() else { continue };
            check_entry(&entry, &header, &leaf, size, &root_hash, &keys, &mut registered)?;
            if let Some((a, b)) = index.range
                && (i < a || i > b)
            {
                // Signer identities may come before the range: only they.
                if header.kind != EntryKind::Identity {
                    return Err(PackError::Entries(format!("entry {i} is outside the pack's range {a}..={b}")));
                }
            }
            verified_entries += 1;
            if let Some(Ok(e)) = entries.peek()
                && e.index <= i
            {
                return Err(PackError::Entries(format!("entry {} is out of order or repeated", e.index)));
            }
            continue;
        }
        // Not in the pack: it must not be part of the selection, unless it
        // is listed as withheld (and a decision never is).
        let Some((a, b)) = index.range else { continue };
        if i < a || i > b {
            continue;
        }
        let ours = everything || subject_keys.iter().any(|k| header.tags.contains(&k.tag(&header.body_digest)));
        if !ours {
            continue;
        }
        match withheld.get(&i) {
            Some(kind) if *kind != header.kind => {
                return Err(PackError::Incomplete {
                    index: i,
                    kind: header.kind,
                    why: format!("is listed as withheld with kind {kind}"),
                });
            }
            Some(_) if matches!(header.kind, EntryKind::Grant | EntryKind::Withhold) => {
                return Err(PackError::Incomplete {
                    index: i,
                    kind: header.kind,
                    why: "is a decision, which a pack never withholds".into(),
                });
            }
            Some(_) => {}
            None => {
                return Err(PackError::Incomplete {
                    index: i,
                    kind: header.kind,
                    why: "concerns the selection but is missing".into(),
                });
            }
        }
    }
    if range.size() != size {
        return Err(PackError::Headers(format!("{} headers; the checkpoint's tree has {size}", range.size())));
    }
    if range.root() != root_hash {
        return Err(PackError::Headers("they do not reproduce the checkpoint's root hash".into()));
    }
    if let Some(next) = entries.next() {
        return Err(PackError::Entries(match next {
            Ok(e) => format!("entry {} is past the tree or out of order", e.index),
            Err(e) => e,
        }));
    }
    Ok(PackReport {
        selection: index.selection.clone(),
        tree_size: size,
        root_hash: hex::encode(root_hash),
        root_version: newest.version(),
        cosignatures,
        witness_threshold: threshold,
        entries: verified_entries,
        withheld: index.withheld.len() as u64,
        range: index.range,
        trusted_on_first_use: trusted.is_none(),
    })
}

/// Step 4 for one entry: body, kind and signer, proof, signature.
fn check_entry(
    entry: &PackEntry,
    header: &EntryHeader,
    leaf: &Hash,
    size: u64,
    root: &Hash,
    keys: &RootKeys,
    registered: &mut Registered,
) -> Result<(), PackError> {
    let index = entry.index;
    let body_err = |why: String| PackError::Body { index, why };
    let salt = hex32(&entry.salt).ok_or_else(|| body_err("the salt is not 32 bytes of hex".into()))?;
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD
        .decode(&entry.body)
        .map_err(|e| body_err(format!("the body is not base64: {e}")))?;
    header.check_body(&salt, &body).map_err(|e| body_err(e.to_string()))?;
    let placed = crate::state::classify(&body).map_err(|e| body_err(e.to_string()))?;
    if placed.kind != header.kind || placed.actor != header.actor {
        return Err(body_err("the header's kind or actor is not the body's".into()));
    }
    let proof: Vec<Hash> = entry
        .proof
        .iter()
        .map(|h| hex32(h))
        .collect::<Option<_>>()
        .ok_or_else(|| PackError::Proof { index, why: "a hash is not 32 bytes of hex".into() })?;
    merkle::verify_inclusion(index, size, leaf, &proof, root)
        .map_err(|e| PackError::Proof { index, why: e.to_string() })?;
    let sig = |why: String| PackError::Signature { index, why };
    let env = Envelope::parse(&body).map_err(|e| sig(e.to_string()))?;
    let single = |k: &PublicKey| KeySet::single(*k);
    let first_signer = env.signatures().first().and_then(|s| KeyId::from_hex(&s.keyid));
    let person = |id: Option<KeyId>, registered: &Registered| {
        id.and_then(|id| registered.get(&id).map(|(_, _, k)| *k)).ok_or_else(|| {
            sig(format!(
                "signed by key {}, whose registration is not in the pack",
                id.map(|k| k.to_string()).unwrap_or_else(|| "(none)".into())
            ))
        })
    };
    match header.kind {
        EntryKind::Root => {
            if !keys.root_bodies.contains(&body) {
                return Err(sig("a root entry that is not one of the pack's roots".into()));
            }
        }
        EntryKind::Release => {
            if !keys.release.iter().any(|k| envelope::verify::<ReleaseManifest>(&body, k).is_ok()) {
                return Err(sig("no root's release keys reach their threshold on it".into()));
            }
        }
        EntryKind::Grant | EntryKind::Withhold => {
            let key =
                first_signer.and_then(|id| keys.decision.get(&id)).ok_or_else(|| sig("not a decision key".into()))?;
            let decision = envelope::verify::<Decision>(&body, &single(key)).map_err(|e| sig(e.to_string()))?;
            let checkin_env = Envelope::parse(&decision.checkin).map_err(|e| sig(format!("its check-in: {e}")))?;
            let device = checkin_env.signatures().first().and_then(|s| KeyId::from_hex(&s.keyid));
            let device_key = person(device, registered)?;
            envelope::verify::<CheckIn>(&decision.checkin, &single(&device_key))
                .map_err(|e| sig(format!("its check-in: {e}")))?;
        }
        EntryKind::Attestation | EntryKind::Verification | EntryKind::Report | EntryKind::Signal => {
            let key = person(first_signer, registered)?;
            if env.valid_signers(&single(&key)).is_empty() {
                return Err(sig("the signature does not verify with its registered key".into()));
            }
        }
        EntryKind::Identity
        | EntryKind::Revocation
        | EntryKind::Note
        | EntryKind::Customer
        | EntryKind::Deployment
        | EntryKind::Contract
        | EntryKind::Case
        | EntryKind::Suspension
        | EntryKind::SecurityFix
        | EntryKind::Waiver
        | EntryKind::Approval
        | EntryKind::DeniedParty
        | EntryKind::Licence => {
            let key = first_signer.and_then(|id| keys.admin.get(&id)).ok_or_else(|| sig("not an admin key".into()))?;
            let action = envelope::verify::<AdminAction>(&body, &single(key)).map_err(|e| sig(e.to_string()))?;
            if let ActionKind::IssueIdentity { role, subject, signing_key, .. } = &action.action {
                registered.insert(signing_key.key_id(), (*role, subject.clone(), *signing_key));
            }
        }
    }
    Ok(())
}

/// The leaf hash of header bytes, hex (what the index and the report show).
pub fn leaf_hex(header: &[u8]) -> String {
    hex::encode(merkle::leaf_hash(header))
}

/// A digest's hex form, for the CSV.
pub fn digest_hex(d: &Sha256Digest) -> String {
    d.to_string()
}
