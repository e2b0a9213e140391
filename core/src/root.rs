//! The root-of-trust chain (TUF §5.3, adapted).
//!
//! An agent is provisioned with a root. Version N+1 is accepted only when its
//! version is exactly N+1 and it is signed by a threshold of version N's root
//! keys *and* a threshold of its own (TUF §5.3.4), so neither a stolen old
//! key set nor a freshly made new one can rotate alone. Expiry is checked on
//! the newest root only, after walking the chain (TUF §5.3.10): a device that
//! was offline for years can still follow a long chain. A production root
//! never rotates to a development one, and a development root is accepted
//! only when the caller allows it.

use crate::digest::Timestamp;
use crate::envelope::{self, EnvelopeError, Verified};
use crate::keys::{KeyError, KeySet};
use crate::note::{NoteError, NoteVerifier};
use crate::statements::{Payload, RootMetadata};

/// Why a root was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RootError {
    /// The envelope or its signatures were refused (by this root's own keys
    /// on provisioning, or by the trusted root's keys on rotation).
    #[error("root envelope refused: {0}")]
    Envelope(EnvelopeError),
    /// The new root is not signed by a threshold of its own root keys.
    #[error("new root is not signed by a threshold of its own keys: {0}")]
    NotSelfSigned(EnvelopeError),
    /// The version is not exactly one more than the trusted one.
    #[error("root version {found} does not follow version {trusted}")]
    VersionNotNext {
        /// The trusted version.
        trusted: u64,
        /// The offered version.
        found: u64,
    },
    /// The newest root has expired.
    #[error("root version {version} expired at {expires}")]
    Expired {
        /// Its version.
        version: u64,
        /// When it expired.
        expires: Timestamp,
    },
    /// A development root where the caller does not allow one.
    #[error("root is a development root and development roots are not allowed here")]
    DevelopmentNotAllowed,
    /// A rotation from a production root to a development root.
    #[error("a production root never rotates to a development root")]
    ProductionToDevelopment,
    /// The new root names the ledger otherwise: every checkpoint's origin
    /// is the ledger key's name, so a renamed log could never be shown
    /// consistent with the checkpoints agents hold.
    #[error("a root rotation never renames the ledger (its checkpoints' origin)")]
    LedgerRenamed,
    /// A role's keys do not form a key set.
    #[error("role {role} is unusable: {error}")]
    Role {
        /// The role.
        role: &'static str,
        /// Why.
        error: KeyError,
    },
    /// A note key of the root is unusable.
    #[error("note key of role {role} is unusable: {error}")]
    NoteKey {
        /// The role.
        role: &'static str,
        /// Why.
        error: NoteError,
    },
}

/// A root the caller may trust: provisioned, or reached along the chain.
/// Only this module constructs it.
#[derive(Debug, Clone)]
pub struct TrustedRoot {
    verified: Verified<RootMetadata>,
    bytes: Vec<u8>,
}

/// Options for accepting roots.
#[derive(Debug, Clone, Copy, Default)]
pub struct RootPolicy {
    /// Whether a development root (witness threshold may be 0) is acceptable.
    pub allow_development: bool,
}

impl TrustedRoot {
    /// Accepts a provisioned root: it must be signed by a threshold of its
    /// own root keys, unexpired at `now`, and not a development root unless
    /// `policy` allows one. This is the trust-on-provisioning step; every
    /// later root comes through [`TrustedRoot::rotate`].
    pub fn provision(bytes: &[u8], now: Timestamp, policy: RootPolicy) -> Result<Self, RootError> {
        let root = Self::restore(bytes, policy)?;
        root.check_expiry(now)?;
        Ok(root)
    }

    /// Reopens a root the caller stored after trusting it: it must still be
    /// signed by a threshold of its own root keys (a rotated root is), and
    /// not a development root unless `policy` allows one. Expiry is not
    /// checked: an agent offline past its root's expiry must still be able
    /// to walk the chain to a newer one, whose expiry [`walk_chain`] checks.
    pub fn restore(bytes: &[u8], policy: RootPolicy) -> Result<Self, RootError> {
        let envelope = envelope::Envelope::parse(bytes).map_err(RootError::Envelope)?;
        // Read the keys the root claims, then verify the root with them.
        let claimed = if envelope.payload_type() == RootMetadata::PAYLOAD_TYPE {
            RootMetadata::parse(envelope.payload()).map_err(|e| RootError::Envelope(e.into()))?
        } else {
            return Err(RootError::Envelope(EnvelopeError::WrongPayloadType {
                expected: RootMetadata::PAYLOAD_TYPE,
                found: envelope.payload_type().chars().take(128).collect(),
            }));
        };
        let keys = role_keys("root", &claimed)?;
        let verified: Verified<RootMetadata> = envelope::verify_parsed(envelope, &keys).map_err(RootError::Envelope)?;
        let root = TrustedRoot { verified, bytes: bytes.to_vec() };
        root.check_usable()?;
        if root.metadata().development && !policy.allow_development {
            return Err(RootError::DevelopmentNotAllowed);
        }
        Ok(root)
    }

    /// Accepts the next root version (TUF §5.3.4-§5.3.5): signed by a
    /// threshold of this root's root keys and of its own, version exactly
    /// one more, not a step from production to development. Expiry is not
    /// checked here; call [`TrustedRoot::check_expiry`] on the newest root
    /// (or use [`walk_chain`]).
    pub fn rotate(&self, next: &[u8]) -> Result<TrustedRoot, RootError> {
        let trusted_keys = role_keys("root", self.metadata())?;
        let verified: Verified<RootMetadata> = envelope::verify(next, &trusted_keys).map_err(RootError::Envelope)?;
        let own_keys = role_keys("root", verified.value())?;
        verified.also_signed_by(&own_keys).map_err(RootError::NotSelfSigned)?;
        let trusted = self.metadata().version;
        let found = verified.value().version;
        if Some(found) != trusted.checked_add(1) {
            return Err(RootError::VersionNotNext { trusted, found });
        }
        if verified.value().development && !self.metadata().development {
            return Err(RootError::ProductionToDevelopment);
        }
        let names = |m: &RootMetadata| {
            m.roles.ledger.keys.iter().map(|k| k.note_name.clone()).collect::<std::collections::BTreeSet<_>>()
        };
        if names(verified.value()) != names(self.metadata()) {
            return Err(RootError::LedgerRenamed);
        }
        let root = TrustedRoot { verified, bytes: next.to_vec() };
        root.check_usable()?;
        Ok(root)
    }

    /// Refuses an expired root.
    pub fn check_expiry(&self, now: Timestamp) -> Result<(), RootError> {
        let m = self.metadata();
        if now >= m.expires {
            return Err(RootError::Expired { version: m.version, expires: m.expires });
        }
        Ok(())
    }

    /// The root document.
    pub fn metadata(&self) -> &RootMetadata {
        self.verified.value()
    }

    /// The exact envelope bytes this root came in.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The version.
    pub fn version(&self) -> u64 {
        self.metadata().version
    }

    /// The key set of the `release` role.
    pub fn release_keys(&self) -> Result<KeySet, RootError> {
        role_keys("release", self.metadata())
    }

    /// The key set of the `decision` role.
    pub fn decision_keys(&self) -> Result<KeySet, RootError> {
        role_keys("decision", self.metadata())
    }

    /// The key set of the `admin` role (its threshold: approvals needed).
    pub fn admin_keys(&self) -> Result<KeySet, RootError> {
        role_keys("admin", self.metadata())
    }

    /// The ledger's checkpoint verifiers (type 0x01).
    pub fn ledger_verifiers(&self) -> Result<Vec<NoteVerifier>, RootError> {
        self.metadata()
            .roles
            .ledger
            .keys
            .iter()
            .map(|k| {
                NoteVerifier::ed25519(k.note_name.as_deref().unwrap_or_default(), k.public)
                    .map_err(|error| RootError::NoteKey { role: "ledger", error })
            })
            .collect()
    }

    /// The witnesses' cosignature verifiers (type 0x04) and how many
    /// cosignatures a checkpoint needs (0 only in a development root).
    pub fn witness_policy(&self) -> Result<(Vec<NoteVerifier>, usize), RootError> {
        let role = &self.metadata().roles.witness;
        let verifiers = role
            .keys
            .iter()
            .map(|k| {
                NoteVerifier::cosignature(k.note_name.as_deref().unwrap_or_default(), k.public)
                    .map_err(|error| RootError::NoteKey { role: "witness", error })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((verifiers, role.threshold as usize))
    }

    /// Checks every role is usable (the payload's own validation already
    /// checked thresholds and note names; this builds the key sets).
    fn check_usable(&self) -> Result<(), RootError> {
        for role in ["root", "release", "decision", "ledger", "admin"] {
            role_keys(role, self.metadata())?;
        }
        self.ledger_verifiers()?;
        self.witness_policy()?;
        Ok(())
    }
}

/// Walks a chain of root envelopes (oldest first, each the successor of the
/// one before, starting right after `trusted`) and checks the newest one's
/// expiry at `now` (TUF §5.3.10). Roots at or below the trusted version are
/// skipped, so a server may serve the whole chain.
pub fn walk_chain<'a>(
    trusted: &TrustedRoot,
    chain: impl IntoIterator<Item = &'a [u8]>,
    now: Timestamp,
) -> Result<TrustedRoot, RootError> {
    let mut current = trusted.clone();
    for next in chain {
        // A root we already hold (by version) is skipped without trusting it.
        if let Ok(env) = envelope::Envelope::parse(next)
            && let Ok(meta) = RootMetadata::parse(env.payload())
            && meta.version <= current.version()
        {
            continue;
        }
        current = current.rotate(next)?;
    }
    current.check_expiry(now)?;
    Ok(current)
}

fn role_keys(role: &'static str, m: &RootMetadata) -> Result<KeySet, RootError> {
    let spec = match role {
        "root" => &m.roles.root,
        "release" => &m.roles.release,
        "decision" => &m.roles.decision,
        "ledger" => &m.roles.ledger,
        "witness" => &m.roles.witness,
        _ => &m.roles.admin,
    };
    spec.key_set().map_err(|error| RootError::Role { role, error })
}
