//! What the agent checks before it installs anything (`docs/formats.md`
//! §18), as one pure function: [`verify_answer`].
//!
//! The agent sent a check-in with a fresh nonce; the server answered with a
//! freshness object and, when a grant or withhold stands, that ledger entry
//! (header, body, salt), the release manifest of a grant, a C2SP tlog-proof
//! of the entry against a cosigned checkpoint, and a consistency proof from
//! the checkpoint the agent holds. Every byte of that answer is untrusted.
//! The function walks the root chain the server serves, then checks, in
//! order, each thing an updater's attacker could forge, and returns either
//! an [`Answer`] (whose grant part, [`Authorization`], only this module can
//! build) or the [`Refusal`] naming the check that failed.
//!
//! Time: the agent's now never goes below the newest time it has verified.
//! Within one answer the checks use the largest of the device's clock, the
//! stored time, the freshness time and the witnessed time. Only the
//! witnessed time is kept ([`Trust::time`]): the k-th newest cosignature
//! timestamp of k required witnesses. A freshness time is signed by the
//! online decision key alone, and a device clock may be wrong; were either
//! stored, one bad value far in the future would expire every root and
//! grant for good (found by review).

use crate::digest::{Sha256Digest, Timestamp};
use crate::envelope::{self, EnvelopeError, Verified};
use crate::ledger::{EntryError, EntryHeader, EntryKind, SALT_LEN, leaf_hash};
use crate::merkle::Hash;
use crate::note::{self, NoteError, TlogProof, TrustedCheckpoint, VerifiedCheckpoint};
use crate::root::{RootError, TrustedRoot, walk_chain};
use crate::statements::{Decision, Freshness, FreshnessStanding, ReleaseManifest, Verdict};

/// Why an answer was refused: one variant per check, so that each attack
/// on an updater is refused by name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The root chain the server serves does not follow from the trusted
    /// root, or the newest root has expired.
    #[error("the root chain is refused: {0}")]
    Root(RootError),
    /// The freshness object is not signed by the decision key.
    #[error("the freshness answer is refused: {0}")]
    Freshness(EnvelopeError),
    /// The freshness object answers another check-in (a replayed answer:
    /// an indefinite freeze).
    #[error("the freshness answer echoes another nonce: a replayed answer")]
    Replayed,
    /// The answer concerns another deployment (wrong software).
    #[error("the answer is for deployment {found:?}, not this one")]
    OtherDeployment {
        /// Who it names.
        found: String,
    },
    /// A standing entry was announced but not sent, or sent without one
    /// announced.
    #[error("the answer's entry does not match what the freshness answer vouches for: {0}")]
    Standing(&'static str),
    /// The entry's header or body is malformed or does not match.
    #[error("the ledger entry is refused: {0}")]
    Entry(EntryError),
    /// The entry is neither a grant nor a withhold.
    #[error("the ledger entry is a {0}, not a decision")]
    NotADecision(EntryKind),
    /// The decision is not signed by the decision key of the trusted root.
    #[error("the decision is refused: {0}")]
    Decision(EnvelopeError),
    /// The grant has expired (an old grant is not revived by a clock set
    /// back: the agent's now is at least the newest time it verified).
    #[error("the grant expired at {expires}; it is now at least {now}")]
    Expired {
        /// When it expired.
        expires: Timestamp,
        /// The agent's now.
        now: Timestamp,
    },
    /// The release manifest is not signed by a threshold of release keys
    /// (a key compromise: the decision key alone cannot make a release).
    #[error("the release manifest is refused: {0}")]
    Release(EnvelopeError),
    /// The manifest sent is not the release the grant names (mix and match).
    #[error("the grant names release {granted}, the manifest sent is {sent}")]
    MixAndMatch {
        /// The release the grant names.
        granted: Sha256Digest,
        /// The manifest sent.
        sent: Sha256Digest,
    },
    /// The release is for another product.
    #[error("the release is for product {found:?}, this deployment runs {expected:?}")]
    OtherProduct {
        /// This deployment's product.
        expected: String,
        /// The release's.
        found: String,
    },
    /// The release is not newer than what is installed.
    #[error("rollback: the release is version {offered}, version {installed} is installed")]
    Rollback {
        /// Installed now.
        installed: semver::Version,
        /// Offered.
        offered: semver::Version,
    },
    /// The artifact is larger than this agent accepts (endless data).
    #[error("the artifact declares {size} bytes, over this agent's limit of {limit}")]
    TooLarge {
        /// Declared.
        size: u64,
        /// The agent's limit.
        limit: u64,
    },
    /// The inclusion proof or the checkpoint's ledger signature is refused
    /// (ledger omission, or a checkpoint not signed by the current ledger key).
    #[error("the entry is not proven to be in the ledger: {0}")]
    NotLogged(NoteError),
    /// The checkpoint lacks the witness cosignatures the root requires.
    #[error("the checkpoint is not witnessed as the root requires: {0}")]
    Unwitnessed(NoteError),
    /// The checkpoint is not consistent with the one the agent holds (a
    /// split view or a rewritten ledger).
    #[error("the checkpoint is inconsistent with the one this agent holds: {0}")]
    SplitView(NoteError),
    /// The grant is valid for longer than this agent accepts. A server
    /// holding the decision key can keep serving a grant that a later
    /// suspension voided (the agent cannot see the suspension); bounding
    /// how long a grant may be valid bounds that window (issue #10, item 8).
    #[error(
        "the grant is valid for {validity} s from when it was issued, longer than the {limit} s this agent accepts \
         (max_grant_validity_days in agent.toml)"
    )]
    GrantTooLong {
        /// `expires_at - issued_at`, in seconds.
        validity: i64,
        /// The agent's limit, in seconds.
        limit: i64,
    },
    /// The checkpoint is older than the one the agent holds.
    #[error("the checkpoint has {found} entries, this agent already holds one of {held}")]
    Shrunk {
        /// The size held.
        held: u64,
        /// The size offered.
        found: u64,
    },
}

/// The agent's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest artifact it accepts, in bytes.
    pub max_artifact_size: u64,
    /// The longest a grant may be valid, from its `issued_at` to its
    /// `expires_at`, in seconds. A grant that a later suspension, case or
    /// revocation voided can still be served by a server holding the
    /// decision key until it expires; this bounds that window whatever the
    /// contract says.
    pub max_grant_validity: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_artifact_size: 4 << 30, max_grant_validity: DEFAULT_MAX_GRANT_VALIDITY }
    }
}

/// The default [`Limits::max_grant_validity`]: 7 days, the grant validity
/// the walkthrough's contracts use.
pub const DEFAULT_MAX_GRANT_VALIDITY: i64 = 7 * 86_400;

/// What the agent trusts, as stored: the trusted root, the last checkpoint
/// (once it has one) and the newest time it verified.
#[derive(Debug, Clone)]
pub struct Trust {
    /// The newest root reached along the chain.
    pub root: TrustedRoot,
    /// The last checkpoint accepted.
    pub checkpoint: Option<TrustedCheckpoint>,
    /// The newest time k witnesses vouched for (never lowered).
    pub time: Timestamp,
}

/// The latest time accepted from a witness: 9999-12-31T23:59:59Z (later
/// values cannot be written as RFC 3339 and are ignored).
pub const MAX_TIME: i64 = 253_402_300_799;

/// What the agent asked: its check-in's facts.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    /// This deployment.
    pub deployment: &'a str,
    /// Its product.
    pub product: &'a str,
    /// The check-in's nonce.
    pub nonce: Sha256Digest,
    /// The version installed.
    pub installed: &'a semver::Version,
}

/// A ledger entry as the server sent it.
#[derive(Debug, Clone, Copy)]
pub struct EntryBytes<'a> {
    /// The header bytes (the Merkle leaf).
    pub header: &'a [u8],
    /// The body (the decision envelope).
    pub body: &'a [u8],
    /// The salt of the body digest.
    pub salt: &'a [u8],
}

/// The server's answer to a check-in, as bytes.
#[derive(Debug, Clone, Copy)]
pub struct AnswerBytes<'a> {
    /// The root chain the server serves (any versions; those at or below
    /// the trusted one are skipped).
    pub root_chain: &'a [Vec<u8>],
    /// The freshness envelope.
    pub freshness: &'a [u8],
    /// The standing decision entry, if any.
    pub entry: Option<EntryBytes<'a>>,
    /// The release manifest envelope (with a grant).
    pub release_manifest: &'a [u8],
    /// The tlog-proof text of the entry.
    pub tlog_proof: &'a [u8],
    /// The consistency proof from the agent's checkpoint.
    pub consistency: &'a [Hash],
}

/// A grant the agent may act on. Only [`verify_answer`] builds one.
#[derive(Debug, Clone)]
pub struct Authorization {
    release: Verified<ReleaseManifest>,
    grant_index: u64,
    decision: Decision,
}

impl Authorization {
    /// The release, signed by a threshold of release keys.
    pub fn release(&self) -> &ReleaseManifest {
        self.release.value()
    }

    /// The release's digest (of its manifest payload).
    pub fn release_digest(&self) -> Sha256Digest {
        self.release.payload_digest()
    }

    /// The grant's ledger index.
    pub fn grant_index(&self) -> u64 {
        self.grant_index
    }

    /// The grant.
    pub fn decision(&self) -> &Decision {
        &self.decision
    }
}

/// A withhold, proven to be in the ledger.
#[derive(Debug, Clone)]
pub struct Withheld {
    /// Its ledger index.
    pub index: u64,
    /// The decision, with its reasons.
    pub decision: Decision,
}

/// What a verified answer rules.
#[derive(Debug, Clone)]
pub enum Ruling {
    /// No newer release exists.
    Current,
    /// A newer release exists and is withheld.
    Withheld(Box<Withheld>),
    /// A newer release is granted.
    Granted(Box<Authorization>),
}

/// A verified answer: the verdict, and what the agent trusts from now on.
#[derive(Debug, Clone)]
pub struct Answer {
    /// What it rules.
    pub ruling: Ruling,
    /// The root, checkpoint and time to store.
    pub trust: Trust,
}

/// Verifies a check-in answer against what the agent trusts (module docs).
/// `now` is the agent's now: at least the newest time it verified.
pub fn verify_answer(
    held: &Trust,
    asked: Asked<'_>,
    answer: AnswerBytes<'_>,
    now: Timestamp,
    limits: Limits,
) -> Result<Answer, Refusal> {
    let mut now = now.max(held.time);
    let mut witnessed = held.time;
    // 1. The root chain, checked at the agent's now.
    let root = walk_chain(&held.root, answer.root_chain.iter().map(Vec::as_slice), now).map_err(Refusal::Root)?;
    let decision_keys = root.decision_keys().map_err(Refusal::Root)?;
    // 2. Freshness: signed, ours, our nonce.
    let fresh: Verified<Freshness> = envelope::verify(answer.freshness, &decision_keys).map_err(Refusal::Freshness)?;
    let fresh = fresh.value();
    if fresh.deployment != asked.deployment {
        return Err(Refusal::OtherDeployment { found: fresh.deployment.clone() });
    }
    if fresh.nonce != asked.nonce {
        return Err(Refusal::Replayed);
    }
    now = now.max(fresh.time);
    let (index, leaf, size, entry) = match (fresh.standing, answer.entry) {
        (FreshnessStanding::Current, None) => {
            let trust = Trust { root, checkpoint: held.checkpoint.clone(), time: witnessed };
            return Ok(Answer { ruling: Ruling::Current, trust });
        }
        (FreshnessStanding::Current, Some(_)) => return Err(Refusal::Standing("an entry came with `current`")),
        (FreshnessStanding::Standing { .. }, None) => return Err(Refusal::Standing("the standing entry is missing")),
        (FreshnessStanding::Standing { index, leaf_hash, checkpoint_size }, Some(entry)) => {
            (index, leaf_hash, checkpoint_size, entry)
        }
    };
    // 3. The entry: the leaf vouched for, the body it commits to.
    if leaf_hash(entry.header) != leaf.0 {
        return Err(Refusal::Standing("the header is not the leaf the freshness answer names"));
    }
    let header = EntryHeader::parse(entry.header).map_err(Refusal::Entry)?;
    let salt: &[u8; SALT_LEN] =
        entry.salt.try_into().map_err(|_| Refusal::Entry(EntryError::Malformed("the salt is not 32 bytes".into())))?;
    header.check_body(salt, entry.body).map_err(Refusal::Entry)?;
    let verdict = match header.kind {
        EntryKind::Grant => Verdict::Grant,
        EntryKind::Withhold => Verdict::Withhold,
        other => return Err(Refusal::NotADecision(other)),
    };
    // 4. In the ledger: the inclusion proof against a checkpoint signed by
    // the current ledger key and cosigned by k witnesses, consistent with
    // the checkpoint held.
    let proof = TlogProof::parse(answer.tlog_proof).map_err(Refusal::NotLogged)?;
    if proof.index != index {
        return Err(Refusal::Standing("the proof is for another index"));
    }
    let checkpoint = included(&root, &proof, &leaf.0)?;
    if checkpoint.checkpoint().size != size {
        return Err(Refusal::Standing("the proof is against another checkpoint size"));
    }
    let (witnesses, threshold) = root.witness_policy().map_err(Refusal::Root)?;
    let cosigned = checkpoint
        .require_cosignatures(&witnesses.iter().collect::<Vec<_>>(), threshold)
        .map_err(Refusal::Unwitnessed)?;
    let checkpoint = match &held.checkpoint {
        None => checkpoint.accept_first(),
        Some(old) => {
            if size < old.checkpoint().size {
                return Err(Refusal::Shrunk { held: old.checkpoint().size, found: size });
            }
            old.advance(checkpoint, answer.consistency).map_err(Refusal::SplitView)?
        }
    };
    // The k-th newest cosignature time: no fewer than k witnesses vouch
    // for it (out-of-range times do not count).
    let mut times: Vec<i64> = cosigned
        .iter()
        .filter_map(|c| i64::try_from(c.timestamp).ok())
        .filter(|t| (0..=MAX_TIME).contains(t))
        .collect();
    times.sort_unstable_by(|a, b| b.cmp(a));
    if threshold > 0
        && let Some(t) = times.get(threshold - 1)
    {
        witnessed = witnessed.max(Timestamp::from_unix(*t));
        now = now.max(witnessed);
    }
    // 5. The decision itself.
    let decision: Verified<Decision> = envelope::verify(entry.body, &decision_keys).map_err(Refusal::Decision)?;
    let decision = decision.value().clone();
    if decision.deployment != asked.deployment {
        return Err(Refusal::OtherDeployment { found: decision.deployment });
    }
    if decision.verdict != verdict {
        return Err(Refusal::Standing("the decision's verdict is not the entry's kind"));
    }
    let trust = Trust { root, checkpoint: Some(checkpoint), time: witnessed };
    if verdict == Verdict::Withhold {
        return Ok(Answer { ruling: Ruling::Withheld(Box::new(Withheld { index, decision })), trust });
    }
    // 6. The grant: unexpired, and naming the release sent, which is
    // signed by a threshold of release keys, for this product, newer than
    // what runs, and not larger than the agent accepts.
    let expires = decision.expires_at.unwrap_or(decision.issued_at);
    if expires <= now {
        return Err(Refusal::Expired { expires, now });
    }
    let validity = expires.unix().saturating_sub(decision.issued_at.unix());
    if validity > limits.max_grant_validity {
        return Err(Refusal::GrantTooLong { validity, limit: limits.max_grant_validity });
    }
    let release_keys = trust.root.release_keys().map_err(Refusal::Root)?;
    let release: Verified<ReleaseManifest> =
        envelope::verify(answer.release_manifest, &release_keys).map_err(Refusal::Release)?;
    let granted = decision.release.unwrap_or_default();
    if release.payload_digest() != granted {
        return Err(Refusal::MixAndMatch { granted, sent: release.payload_digest() });
    }
    let manifest = release.value();
    if manifest.product != asked.product {
        return Err(Refusal::OtherProduct { expected: asked.product.to_owned(), found: manifest.product.clone() });
    }
    if manifest.version <= *asked.installed {
        return Err(Refusal::Rollback { installed: asked.installed.clone(), offered: manifest.version.clone() });
    }
    if manifest.artifact.size > limits.max_artifact_size {
        return Err(Refusal::TooLarge { size: manifest.artifact.size, limit: limits.max_artifact_size });
    }
    Ok(Answer { ruling: Ruling::Granted(Box::new(Authorization { release, grant_index: index, decision })), trust })
}

/// Opens the proof's checkpoint with the ledger key of `root` whose name is
/// its origin, and checks the leaf is included.
fn included(root: &TrustedRoot, proof: &TlogProof, leaf: &Hash) -> Result<VerifiedCheckpoint, Refusal> {
    let verifiers = root.ledger_verifiers().map_err(Refusal::Root)?;
    let origin = proof.checkpoint.split('\n').next().unwrap_or_default();
    let log = verifiers.iter().find(|v| v.name() == origin).ok_or(Refusal::NotLogged(NoteError::WrongOrigin {
        expected: verifiers.first().map(|v| v.name().to_owned()).unwrap_or_default(),
        found: origin.chars().take(128).collect(),
    }))?;
    proof.verify(leaf, log).map_err(Refusal::NotLogged)
}

/// Accepts a checkpoint with no history (provisioning or trust on first
/// use): it must be signed by the root's ledger key and cosigned by k of its
/// witnesses.
pub fn accept_first_checkpoint(root: &TrustedRoot, note_bytes: &[u8]) -> Result<TrustedCheckpoint, Refusal> {
    let verifiers = root.ledger_verifiers().map_err(Refusal::Root)?;
    let mut last = NoteError::NoKnownSignature;
    for log in &verifiers {
        match note::open_checkpoint(note_bytes, log) {
            Ok(cp) => {
                let (witnesses, threshold) = root.witness_policy().map_err(Refusal::Root)?;
                cp.require_cosignatures(&witnesses.iter().collect::<Vec<_>>(), threshold)
                    .map_err(Refusal::Unwitnessed)?;
                return Ok(cp.accept_first());
            }
            Err(e) => last = e,
        }
    }
    Err(Refusal::NotLogged(last))
}
