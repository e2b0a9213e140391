//! The evidence pack (`docs/evidence.md`): a folder that shows what the
//! ledger says about a customer, a deployment, a case or everything, and
//! that verifies with no server and no identity. This module is its format
//! (the index, the entry lines, the due-diligence headings) and its whole
//! verification, pure: the caller opens the files and hands their contents
//! in, the headers and entries as iterators in index order, so memory stays
//! flat in the ledger's size.
//!
//! What a pack proves, step by step (each failure named):
//! 1. the root chain walks from the pack's first root, and holds the root
//!    the verifier trusts (if it names one);
//! 2. the checkpoint is signed by the ledger key of the newest root and
//!    cosigned by its witness threshold;
//! 3. the headers, one per entry from 0, are exactly the checkpoint's tree;
//! 4. each entry's body matches its header's salted digest and its kind and
//!    signer, its inclusion proof reaches the checkpoint's root, its
//!    signature verifies (root keys for roots, releases, admin actions and
//!    decisions; for what a person or device signed, the key the pack's own
//!    identity entries registered), and each subject key of the index that
//!    names one of its subjects reproduces one of its tags (so the keys are
//!    bound to their names by the witnessed tree);
//! 5. the pack is complete for its selection: within the range the
//!    verifier derives from the selection alone (the whole tree, from a
//!    case's signal on, within `from`/`to` by the headers' times), every
//!    header tagged with one of its subjects (or, for `all`, every header)
//!    is in the pack or listed as withheld, no grant or withhold is
//!    withheld, and the selection's own registrations are in the pack (so
//!    its subject keys cannot be left out or replaced);
//! 6. the index's sections and the CSV are exactly those the verified
//!    bodies give.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::digest::{Sha256Digest, Timestamp};
use crate::envelope::{self, Envelope};
use crate::keys::{KeyId, KeySet, PublicKey};
use crate::ledger::{EntryHeader, EntryKind, SubjectKey};
use crate::merkle::{self, CompactRange, Hash};
use crate::note::{self, NoteVerifier};
use crate::root::{RootPolicy, TrustedRoot};
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

/// `index.json` without its sections: what the verifier needs before it
/// reads the entries, parsed with the sections skipped (they are compared
/// through a [`SectionsDigest`], so that a verifier never holds them).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackHead {
    /// Always [`PACK_FORMAT`].
    pub format: String,
    /// What was selected.
    pub selection: Selection,
    /// The checkpoint's tree size.
    pub tree_size: u64,
    /// The subject keys (hex).
    #[serde(default)]
    pub subject_keys: BTreeMap<String, String>,
    /// Entries of the selection whose bodies the exporter could not read.
    #[serde(default)]
    pub withheld: Vec<Withheld>,
    /// Skipped here (see [`SectionsSeed`]); required.
    #[serde(rename = "sections")]
    _sections: serde::de::IgnoredAny,
}

impl PackHead {
    /// The head of a whole index.
    pub fn of(index: &PackIndex) -> Self {
        PackHead {
            format: index.format.clone(),
            selection: index.selection.clone(),
            tree_size: index.tree_size,
            subject_keys: index.subject_keys.clone(),
            withheld: index.withheld.clone(),
            _sections: serde::de::IgnoredAny,
        }
    }
}

/// Sections compared without being held: for each section in order, its
/// heading, its number of items and a SHA-256 over its items' canonical
/// (compact JSON) forms, each length-prefixed. Two lists of sections are
/// equal exactly when their digests are (SHA-256 being collision-resistant).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SectionsDigest(Vec<(String, u64, [u8; 32])>);

/// The running digest of one section's items.
#[derive(Clone, Default)]
struct ItemsHasher {
    count: u64,
    hash: sha2::Sha256,
}

impl ItemsHasher {
    fn push(&mut self, item: &Item) {
        use sha2::Digest as _;
        let bytes = serde_json::to_vec(item).unwrap_or_default();
        self.hash.update((bytes.len() as u64).to_be_bytes());
        self.hash.update(&bytes);
        self.count += 1;
    }

    fn finish(self) -> (u64, [u8; 32]) {
        use sha2::Digest as _;
        (self.count, self.hash.finalize().into())
    }
}

impl SectionsDigest {
    /// The digest of sections held in memory.
    pub fn of(sections: &[Section]) -> Self {
        SectionsDigest(
            sections
                .iter()
                .map(|s| {
                    let mut h = ItemsHasher::default();
                    s.items.iter().for_each(|i| h.push(i));
                    let (count, digest) = h.finish();
                    (s.heading.clone(), count, digest)
                })
                .collect(),
        )
    }
}

/// What [`sections`] gives for items fed one at a time in increasing
/// index, as a [`SectionsDigest`]: the verifier's side.
#[derive(Default)]
struct SectionsBuilder {
    by: BTreeMap<&'static str, ItemsHasher>,
}

impl SectionsBuilder {
    fn push(&mut self, item: &Item) {
        self.by.entry(heading(item.kind)).or_default().push(item);
    }

    fn finish(mut self) -> SectionsDigest {
        SectionsDigest(
            HEADINGS
                .iter()
                .filter_map(|h| {
                    self.by.remove(h).map(|x| {
                        let (count, digest) = x.finish();
                        ((*h).to_owned(), count, digest)
                    })
                })
                .collect(),
        )
    }
}

/// Reads the `sections` array of `index.json` item by item into a
/// [`SectionsDigest`], holding one item at a time: use it as the seed of
/// the `sections` value (see [`IndexSectionsSeed`] for the whole file).
pub struct SectionsSeed;

impl<'de> serde::de::DeserializeSeed<'de> for SectionsSeed {
    type Value = SectionsDigest;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<SectionsDigest, D::Error> {
        struct Sections;
        impl<'de> serde::de::Visitor<'de> for Sections {
            type Value = SectionsDigest;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of sections")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<SectionsDigest, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element_seed(SectionSeed)? {
                    out.push(s);
                }
                Ok(SectionsDigest(out))
            }
        }
        d.deserialize_seq(Sections)
    }
}

/// One section: `{"heading", "items"}`, no other field, each once.
struct SectionSeed;

impl<'de> serde::de::DeserializeSeed<'de> for SectionSeed {
    type Value = (String, u64, [u8; 32]);

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = (String, u64, [u8; 32]);
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a section")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                use serde::de::Error as _;
                let (mut heading, mut items) = (None, None);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "heading" if heading.is_none() => heading = Some(map.next_value::<String>()?),
                        "items" if items.is_none() => items = Some(map.next_value_seed(ItemsSeed)?),
                        "heading" | "items" => return Err(A::Error::custom(format!("duplicate field `{key}`"))),
                        other => return Err(A::Error::unknown_field(other, &["heading", "items"])),
                    }
                }
                let heading = heading.ok_or_else(|| A::Error::missing_field("heading"))?;
                let (count, digest) = items.ok_or_else(|| A::Error::missing_field("items"))?;
                Ok((heading, count, digest))
            }
        }
        d.deserialize_struct("Section", &["heading", "items"], V)
    }
}

/// A section's items, hashed one at a time.
struct ItemsSeed;

impl<'de> serde::de::DeserializeSeed<'de> for ItemsSeed {
    type Value = (u64, [u8; 32]);

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = (u64, [u8; 32]);
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of items")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut h = ItemsHasher::default();
                while let Some(item) = seq.next_element::<Item>()? {
                    h.push(&item);
                }
                Ok(h.finish())
            }
        }
        d.deserialize_seq(V)
    }
}

/// Reads a whole `index.json` for its `sections` alone (every other field
/// skipped, as [`PackHead`] reads them), into a [`SectionsDigest`].
pub struct IndexSectionsSeed;

impl<'de> serde::de::DeserializeSeed<'de> for IndexSectionsSeed {
    type Value = SectionsDigest;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<SectionsDigest, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SectionsDigest;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a pack index")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<SectionsDigest, A::Error> {
                use serde::de::Error as _;
                let mut sections = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "sections" {
                        if sections.is_some() {
                            return Err(A::Error::custom("duplicate field `sections`"));
                        }
                        sections = Some(map.next_value_seed(SectionsSeed)?);
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                sections.ok_or_else(|| A::Error::missing_field("sections"))
            }
        }
        d.deserialize_map(V)
    }
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
        EntryKind::Signal | EntryKind::Case | EntryKind::CaseClosure => "Red flags: signals and cases",
        EntryKind::Suspension
        | EntryKind::SuspensionLift
        | EntryKind::Waiver
        | EntryKind::SecurityFix
        | EntryKind::Approval => "Suspensions, waivers and security fixes, with their approvals",
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
    /// A subject key of the index does not reproduce the tag of an entry
    /// naming its subject, or the selection's own key is missing.
    #[error("the subject key of {subject}: {why}")]
    SubjectKey {
        /// The subject.
        subject: String,
        /// What is wrong.
        why: String,
    },
    /// The index's sections or the CSV are not what the verified bodies give.
    #[error("{0}")]
    Listing(String),
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
    /// Entries of the selection listed as withheld, by kind: the exporter
    /// could not read them, or chose not to say (a verifier who needs them
    /// all refuses a pack with any).
    pub withheld: BTreeMap<EntryKind, u64>,
    /// The range the pack is complete for, as the verifier derived it.
    pub range: Option<(u64, u64)>,
    /// Whether the first root was trusted on first use (no `--root`).
    pub trusted_on_first_use: bool,
    /// SHA-256 of the pack's first root (`roots/1.json`): compare it with
    /// the vendor's published root when no `--root` was given.
    pub first_root_sha256: String,
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

/// What the selection is, as the verifier reads it from the index alone.
enum Selected {
    All,
    Customer(String),
    Deployment(String),
    Case(u64),
}

impl Selected {
    fn of(s: &Selection) -> Result<Self, PackError> {
        let id = || s.id.clone().ok_or_else(|| PackError::Index(format!("a {} selection names its id", s.kind)));
        Ok(match s.kind.as_str() {
            "all" => Selected::All,
            "customer" => Selected::Customer(id()?),
            "deployment" => Selected::Deployment(id()?),
            "case" => Selected::Case(
                id()?
                    .strip_prefix("case-")
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| PackError::Index("a case selection names case-N".into()))?,
            ),
            other => return Err(PackError::Index(format!("unknown selection kind {other:?}"))),
        })
    }
}

/// The CSV's first line.
pub const CSV_HEADER: &str = "index,time,deployment,verdict,release,expires_at,unmet_conditions,suspension,leaf_hash\n";

/// The CSV row of a decision entry (none for other entries): what the
/// exporter writes and the verifier rebuilds.
pub fn csv_row(index: u64, time: Timestamp, leaf_hash: &str, body: &[u8]) -> Option<String> {
    let d = Envelope::parse(body).ok().and_then(|e| Decision::parse(e.payload()).ok())?;
    let unmet: Vec<&str> = d
        .conditions
        .iter()
        .filter(|c| c.status == crate::statements::ConditionStatus::Unmet)
        .map(|c| c.condition.as_str())
        .collect();
    Some(format!(
        "{index},{time},{},{},{},{},{},{},{leaf_hash}\n",
        d.deployment,
        if d.verdict == crate::statements::Verdict::Grant { "grant" } else { "withhold" },
        d.release.map(|r| r.to_string()).unwrap_or_default(),
        d.expires_at.map(|t| t.to_string()).unwrap_or_default(),
        unmet.join(";"),
        d.suspension,
    ))
}

/// The index item of an entry.
pub fn item(index: u64, time: Timestamp, kind: EntryKind, leaf_hash: &str, body: &[u8]) -> Item {
    Item { index, time, kind, summary: crate::describe::summary(body), leaf_hash: leaf_hash.to_owned() }
}

/// The sections of the index from its items (any order): under the
/// headings in [`HEADINGS`] order, each by index.
pub fn sections(items: impl IntoIterator<Item = Item>) -> Vec<Section> {
    let mut by: BTreeMap<&'static str, Vec<Item>> = BTreeMap::new();
    for i in items {
        by.entry(heading(i.kind)).or_default().push(i);
    }
    HEADINGS
        .iter()
        .filter_map(|h| {
            by.remove(h).map(|mut items| {
                items.sort_by_key(|i| i.index);
                Section { heading: (*h).to_owned(), items }
            })
        })
        .collect()
}

/// Kinds that register a party or a key: the only entries a pack may carry
/// outside its range (what its other entries' signatures and subject keys
/// rest on).
fn registration(kind: EntryKind) -> bool {
    matches!(kind, EntryKind::Identity | EntryKind::Customer | EntryKind::Deployment)
}

/// The selection's own registrations seen in the pack, and what they say.
#[derive(Default)]
struct Seen {
    customers: BTreeSet<String>,
    /// deployment → its customer, from deployment registrations.
    deployments: BTreeMap<String, String>,
    /// The case's signal: (customer, deployment).
    signal: Option<(String, Option<String>)>,
}

/// Compares a stream of byte chunks with the bytes expected, piece by
/// piece, holding one chunk: how the CSV is checked without being held.
struct StreamMatch<I> {
    chunks: I,
    chunk: Vec<u8>,
    at: usize,
    differs: bool,
}

impl<I: Iterator<Item = Result<Vec<u8>, String>>> StreamMatch<I> {
    fn new(chunks: I) -> Self {
        StreamMatch { chunks, chunk: Vec::new(), at: 0, differs: false }
    }

    /// The next bytes of the stream must be `want`.
    fn expect(&mut self, mut want: &[u8]) {
        while !want.is_empty() && !self.differs {
            let rest = self.chunk.get(self.at..).unwrap_or_default();
            if rest.is_empty() {
                match self.chunks.next() {
                    Some(Ok(c)) => {
                        self.chunk = c;
                        self.at = 0;
                    }
                    // A read failure, or the stream ends early.
                    Some(Err(_)) | None => self.differs = true,
                }
                continue;
            }
            let n = rest.len().min(want.len());
            if rest.get(..n) != want.get(..n) {
                self.differs = true;
            }
            self.at += n;
            want = want.get(n..).unwrap_or_default();
        }
    }

    /// Whether the stream was exactly the bytes expected, and ends here.
    fn end(mut self) -> bool {
        if self.differs || self.chunk.len() > self.at {
            return false;
        }
        self.chunks.all(|c| c.is_ok_and(|c| c.is_empty()))
    }
}

/// Verifies a pack. `roots` are the root envelopes, oldest first (version
/// 1 first); `trusted` a root the verifier already trusts, which must be
/// one of them (else the first is trusted on first use); `headers` every
/// header from index 0; `entries` the entry lines in index order; `csv`
/// the bytes of `decisions.csv`. Nothing is read but what is handed in.
pub fn verify_pack<H, E>(
    index: &PackIndex,
    roots: &[Vec<u8>],
    trusted: Option<&[u8]>,
    checkpoint: &[u8],
    headers: H,
    entries: E,
    csv: &[u8],
) -> Result<PackReport, PackError>
where
    H: IntoIterator<Item = Result<Vec<u8>, String>>,
    E: IntoIterator<Item = Result<PackEntry, String>>,
{
    verify_pack_streamed(
        &PackHead::of(index),
        &SectionsDigest::of(&index.sections),
        roots,
        trusted,
        checkpoint,
        headers,
        entries,
        std::iter::once(Ok(csv.to_vec())),
    )
}

/// [`verify_pack`] with nothing of the ledger's size held: the index's
/// head, its sections as a [`SectionsDigest`] (read item by item with
/// [`IndexSectionsSeed`]), and `decisions.csv` as chunks of its bytes (any
/// chunking), compared as a stream with the rows the verified decisions
/// give. Memory stays flat in the ledger's and the pack's size.
#[allow(clippy::too_many_arguments)]
pub fn verify_pack_streamed<H, E, C>(
    index: &PackHead,
    listed: &SectionsDigest,
    roots: &[Vec<u8>],
    trusted: Option<&[u8]>,
    checkpoint: &[u8],
    headers: H,
    entries: E,
    csv: C,
) -> Result<PackReport, PackError>
where
    H: IntoIterator<Item = Result<Vec<u8>, String>>,
    E: IntoIterator<Item = Result<PackEntry, String>>,
    C: IntoIterator<Item = Result<Vec<u8>, String>>,
{
    if index.format != PACK_FORMAT {
        return Err(PackError::Index(format!("format {:?}, not {PACK_FORMAT}", index.format)));
    }
    let selected = Selected::of(&index.selection)?;
    // 1. The chain from the pack's first root. Signatures only: a pack is
    // evidence of what was signed and outlives the roots' expiry, so each
    // root is taken as of just before its own expiry.
    let first = roots.first().ok_or_else(|| PackError::Roots("the pack holds no root".into()))?;
    let first_meta = Envelope::parse(first)
        .ok()
        .and_then(|e| RootMetadata::parse(e.payload()).ok())
        .ok_or_else(|| PackError::Roots("roots/1.json does not parse".into()))?;
    let mut newest =
        TrustedRoot::provision(first, first_meta.expires.plus_seconds(-1), RootPolicy { allow_development: true })
            .map_err(|e| PackError::Roots(format!("the first root: {e}")))?;
    let mut keys = RootKeys::default();
    let collect = |root: &TrustedRoot, keys: &mut RootKeys| -> Result<(), PackError> {
        let bad = |e: crate::root::RootError| PackError::Roots(e.to_string());
        keys.admin.extend(root.admin_keys().map_err(bad)?.keys().map(|(id, k)| (*id, *k)));
        keys.decision.extend(root.decision_keys().map_err(bad)?.keys().map(|(id, k)| (*id, *k)));
        keys.release.push(root.release_keys().map_err(bad)?);
        Ok(())
    };
    collect(&newest, &mut keys)?;
    for next in roots.iter().skip(1) {
        newest = newest.rotate(next).map_err(|e| PackError::Roots(e.to_string()))?;
        collect(&newest, &mut keys)?;
    }
    if let Some(t) = trusted {
        let payload = |b: &[u8]| Envelope::parse(b).ok().map(|e| e.payload().to_vec());
        let want = payload(t).ok_or_else(|| PackError::Roots("the trusted root does not parse".into()))?;
        if !roots.iter().any(|r| payload(r).as_ref() == Some(&want)) {
            return Err(PackError::Roots("the root you trust is not in the pack's chain".into()));
        }
    }
    keys.root_bodies = roots.iter().cloned().collect();
    // 2. The checkpoint, with the witness threshold.
    let log: NoteVerifier = newest
        .ledger_verifiers()
        .ok()
        .and_then(|v| v.into_iter().next())
        .ok_or_else(|| PackError::Roots("the newest root names no ledger key".into()))?;
    let verified =
        note::open_checkpoint(checkpoint, &log).map_err(|e| PackError::Checkpoint(format!("ledger signature: {e}")))?;
    let (witnesses, threshold) = newest.witness_policy().map_err(|e| PackError::Roots(e.to_string()))?;
    let cosignatures = verified
        .require_cosignatures(&witnesses.iter().collect::<Vec<_>>(), threshold)
        .map_err(|e| PackError::Checkpoint(format!("witness cosignatures (the root asks {threshold}): {e}")))?
        .len();
    let size = verified.checkpoint().size;
    let root_hash = verified.checkpoint().root_hash;
    if size != index.tree_size {
        return Err(PackError::Index(format!(
            "it says the tree has {} entries; the checkpoint says {size}",
            index.tree_size
        )));
    }
    let subject_keys: BTreeMap<&str, SubjectKey> = index
        .subject_keys
        .iter()
        .map(|(s, k)| {
            hex32(k)
                .map(|k| (s.as_str(), SubjectKey(k)))
                .ok_or_else(|| PackError::Index(format!("the subject key of {s}")))
        })
        .collect::<Result<_, _>>()?;
    let withheld: BTreeMap<u64, EntryKind> = index.withheld.iter().map(|w| (w.index, w.kind)).collect();
    let (from, to) = (index.selection.from, index.selection.to);
    let in_range = |i: u64, h: &EntryHeader| {
        let after = match selected {
            Selected::Case(n) => i >= n,
            _ => true,
        };
        after && from.is_none_or(|f| h.time >= f) && to.is_none_or(|t| h.time <= t)
    };

    // 3 to 5: the headers front to back, the entries merged in by index.
    let mut range = CompactRange::new();
    let mut entries = entries.into_iter().peekable();
    let mut registered = Registered::new();
    let mut seen = Seen::default();
    let mut items = SectionsBuilder::default();
    let mut rows = StreamMatch::new(csv.into_iter());
    rows.expect(CSV_HEADER.as_bytes());
    let mut verified_entries = 0u64;
    let mut roots_logged = 0usize;
    let mut covered: Option<(u64, u64)> = None;
    let mut listed_withheld = 0usize;
    for (i, header_bytes) in headers.into_iter().enumerate() {
        let i = i as u64;
        let bytes = header_bytes.map_err(PackError::Headers)?;
        if i >= size {
            return Err(PackError::Headers(format!("more headers than the checkpoint's {size}")));
        }
        let leaf = merkle::leaf_hash(&bytes);
        range.push(leaf);
        let header = EntryHeader::parse(&bytes).map_err(|e| PackError::Header { index: i, why: e.to_string() })?;
        let inside = in_range(i, &header);
        if inside {
            covered = Some(covered.map_or((i, i), |(a, _)| (a, i)));
        }
        let next_is_this = match entries.peek() {
            Some(Ok(e)) => e.index == i,
            Some(Err(e)) => return Err(PackError::Entries(e.clone())),
            None => false,
        };
        if next_is_this {
            let Some(Ok(entry)) = entries.next() else { continue };
            if !inside && !registration(header.kind) {
                return Err(PackError::Entries(format!(
                    "entry {i} ({}) is outside the selection's range",
                    header.kind
                )));
            }
            if header.kind == EntryKind::Root {
                roots_logged += 1;
            }
            let body = check_entry(&entry, &header, &leaf, size, &root_hash, &keys, &mut registered)?;
            bind_subjects(i, &header, &body, &subject_keys)?;
            note_selection(i, &body, &selected, &mut seen);
            let leaf_hex = hex::encode(leaf);
            items.push(&item(i, header.time, header.kind, &leaf_hex, &body));
            if let Some(row) = csv_row(i, header.time, &leaf_hex, &body) {
                rows.expect(row.as_bytes());
            }
            verified_entries += 1;
            if let Some(Ok(e)) = entries.peek()
                && e.index <= i
            {
                return Err(PackError::Entries(format!("entry {} is out of order or repeated", e.index)));
            }
            continue;
        }
        if header.kind == EntryKind::Root {
            roots_logged += 1;
        }
        // A registration of a subject the pack holds a key for is never left
        // out, whatever the range: a customer's deployment registrations are
        // what say which deployments' keys its pack must hold, so one left
        // out (or listed as withheld) would hide every decision about that
        // deployment.
        if registration(header.kind)
            && header.kind != EntryKind::Identity
            && subject_keys.values().any(|k| header.tags.contains(&k.tag(&header.body_digest)))
        {
            return Err(PackError::Incomplete {
                index: i,
                kind: header.kind,
                why: "registers a subject of the pack and is missing (a registration is never withheld)".into(),
            });
        }
        // Not in the pack: it must not be part of the selection, unless it
        // is listed as withheld (and a decision never is).
        if !inside {
            continue;
        }
        let ours = matches!(selected, Selected::All)
            || subject_keys.values().any(|k| header.tags.contains(&k.tag(&header.body_digest)));
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
            Some(_) => listed_withheld += 1,
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
    // Every root version the tree logged is in the pack's chain: a chain
    // cut short would check the checkpoint against an older root (a lower
    // witness threshold, a ledger key since rotated away).
    if roots.len() != roots_logged {
        return Err(PackError::Roots(format!(
            "the tree logs {roots_logged} root versions and the pack's chain holds {}",
            roots.len()
        )));
    }
    if listed_withheld != withheld.len() {
        return Err(PackError::Index("it lists as withheld an entry that is not the selection's".into()));
    }
    selection_keys(&selected, &seen, &subject_keys)?;
    // 6. The listings are what the bodies say.
    if items.finish() != *listed {
        return Err(PackError::Listing(
            "index.json's sections are not those the verified entries give (an item missing, added or changed)".into(),
        ));
    }
    if !rows.end() {
        return Err(PackError::Listing("decisions.csv is not the one the verified decisions give".into()));
    }
    let mut by_kind = BTreeMap::new();
    for w in &index.withheld {
        *by_kind.entry(w.kind).or_insert(0) += 1;
    }
    use sha2::Digest as _;
    Ok(PackReport {
        selection: index.selection.clone(),
        tree_size: size,
        root_hash: hex::encode(root_hash),
        root_version: newest.version(),
        cosignatures,
        witness_threshold: threshold,
        entries: verified_entries,
        withheld: by_kind,
        range: covered,
        trusted_on_first_use: trusted.is_none(),
        first_root_sha256: hex::encode(sha2::Sha256::digest(first)),
    })
}

/// Each subject key of the index that names one of the entry's subjects
/// must reproduce one of its tags: the witnessed header binds the key to
/// its name.
fn bind_subjects(
    index: u64,
    header: &EntryHeader,
    body: &[u8],
    keys: &BTreeMap<&str, SubjectKey>,
) -> Result<(), PackError> {
    let subjects = crate::state::classify(body).map(|p| p.subjects).unwrap_or_default();
    for s in subjects {
        if let Some(k) = keys.get(s.as_str())
            && !header.tags.contains(&k.tag(&header.body_digest))
        {
            return Err(PackError::SubjectKey {
                subject: s,
                why: format!("it does not reproduce a tag of entry {index}, which names it"),
            });
        }
    }
    Ok(())
}

/// Records what the selection's completeness rests on: its customer's and
/// deployments' registrations, a case's signal.
fn note_selection(index: u64, body: &[u8], selected: &Selected, seen: &mut Seen) {
    let Ok(env) = Envelope::parse(body) else { return };
    if let Ok(action) = AdminAction::parse(env.payload()) {
        match action.action {
            ActionKind::RegisterCustomer { customer, .. } => {
                seen.customers.insert(customer);
            }
            ActionKind::RegisterDeployment { deployment, customer, .. } => {
                seen.deployments.insert(deployment, customer);
            }
            _ => {}
        }
    } else if let (Selected::Case(n), Ok(signal)) = (selected, crate::statements::MisuseSignal::parse(env.payload()))
        && *n == index
    {
        seen.signal = Some((signal.about.customer, signal.about.deployment));
    }
}

/// The selection's own subjects have keys, bound by their registrations in
/// the pack: a key left out, or one that binds nothing, would hide every
/// entry of its subject.
fn selection_keys(selected: &Selected, seen: &Seen, keys: &BTreeMap<&str, SubjectKey>) -> Result<(), PackError> {
    let need = |subject: &str, registered: bool| -> Result<(), PackError> {
        let missing = |why: &str| PackError::SubjectKey { subject: subject.to_owned(), why: why.to_owned() };
        if !keys.contains_key(subject) {
            return Err(missing("the selection's subject has no key in the index"));
        }
        if !registered {
            return Err(missing("its registration is not in the pack, so nothing binds its key"));
        }
        Ok(())
    };
    match selected {
        Selected::All => Ok(()),
        Selected::Customer(c) => {
            need(c, seen.customers.contains(c))?;
            for (d, customer) in &seen.deployments {
                if customer == c {
                    need(d, true)?;
                }
            }
            Ok(())
        }
        Selected::Deployment(d) => need(d, seen.deployments.contains_key(d)),
        Selected::Case(n) => {
            let Some((customer, deployment)) = &seen.signal else {
                return Err(PackError::Incomplete {
                    index: *n,
                    kind: EntryKind::Signal,
                    why: "is the case's signal and is not in the pack".into(),
                });
            };
            need(customer, seen.customers.contains(customer))?;
            match deployment {
                Some(d) => need(d, seen.deployments.contains_key(d))?,
                // A case about the whole customer holds back every one of
                // its deployments: each one's key, so its decisions are in.
                None => {
                    for (d, c) in &seen.deployments {
                        if c == customer {
                            need(d, true)?;
                        }
                    }
                }
            }
            Ok(())
        }
    }
}

/// Step 4 for one entry: body, kind and signer, proof, signature. Returns
/// the body.
fn check_entry(
    entry: &PackEntry,
    header: &EntryHeader,
    leaf: &Hash,
    size: u64,
    root: &Hash,
    keys: &RootKeys,
    registered: &mut Registered,
) -> Result<Vec<u8>, PackError> {
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
    let first_signer = env.first_signer();
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
            let device = checkin_env.first_signer();
            let device_key = person(device, registered)?;
            envelope::verify::<CheckIn>(&decision.checkin, &single(&device_key))
                .map_err(|e| sig(format!("its check-in: {e}")))?;
        }
        // A restore's accepted loss: a note by the decision key.
        EntryKind::Note if env.payload_type() == crate::statements::RestoreLoss::PAYLOAD_TYPE => {
            let key =
                first_signer.and_then(|id| keys.decision.get(&id)).ok_or_else(|| sig("not a decision key".into()))?;
            envelope::verify::<crate::statements::RestoreLoss>(&body, &single(key)).map_err(|e| sig(e.to_string()))?;
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
        | EntryKind::CaseClosure
        | EntryKind::Suspension
        | EntryKind::SuspensionLift
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
    Ok(body)
}

/// The leaf hash of header bytes, hex (what the index and the report show).
pub fn leaf_hex(header: &[u8]) -> String {
    hex::encode(merkle::leaf_hash(header))
}

/// A digest's hex form, for the CSV.
pub fn digest_hex(d: &Sha256Digest) -> String {
    d.to_string()
}
