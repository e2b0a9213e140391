//! The state folded from the ledger, entry by entry (DESIGN.md principle 1:
//! the ledger is the database). This first part covers what the server
//! needs to know who is calling: root versions, identities issued and
//! revoked, and annotations. Issue #5 extends it to governance.
//!
//! Every human action is a DSSE envelope signed with that person's own key
//! (principle 3); the entry header's actor must be that key. An entry that
//! breaks a rule is refused with a reason and never appended.

use std::collections::BTreeMap;

use crate::digest::{Sha256Digest, Timestamp};
use crate::envelope;
use crate::keys::{KeyId, KeySet, PublicKey};
use crate::ledger::{EntryHeader, EntryKind};
use crate::root::{RootPolicy, TrustedRoot};
use crate::statements::{ActionKind, AdminAction, IdentityRole, RootMetadata};

/// Why an entry was refused, in words for the person who sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejection(pub String);

fn reject<T>(why: impl Into<String>) -> Result<T, Rejection> {
    Err(Rejection(why.into()))
}

/// A revocation of an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The ledger time of the revocation.
    pub at: Timestamp,
    /// Entries the key signed at or after this ledger time do not count.
    pub compromised_since: Option<Timestamp>,
}

/// A person or device the vendor's CA issued a certificate to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The role.
    pub role: IdentityRole,
    /// The subject id.
    pub subject: String,
    /// The signing key registered with the certificate.
    pub signing_key: PublicKey,
    /// For auditors: the customers in scope (`None`: all).
    pub scope: Option<Vec<String>>,
    /// The ledger index of the issuance.
    pub issued_at_index: u64,
    /// Set once revoked.
    pub revoked: Option<Revocation>,
}

/// The registry folded from the ledger.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    root: Option<TrustedRoot>,
    /// (ledger index, root version) of every root entry.
    roots: Vec<(u64, u64)>,
    /// Identities by the SHA-256 of their certificate's DER bytes.
    identities: BTreeMap<Sha256Digest, Identity>,
    /// Active signing keys, to the certificate they came with.
    keys: BTreeMap<KeyId, Sha256Digest>,
    notes: u64,
    size: u64,
    last_time: Option<Timestamp>,
}

impl Registry {
    /// An empty registry; the first entry must be a root.
    pub fn new() -> Self {
        Registry::default()
    }

    /// The current root, once the first root entry is folded.
    pub fn root(&self) -> Option<&TrustedRoot> {
        self.root.as_ref()
    }

    /// (ledger index, version) of every root entry, oldest first.
    pub fn root_entries(&self) -> &[(u64, u64)] {
        &self.roots
    }

    /// The identity of a certificate, by the SHA-256 of its DER bytes.
    pub fn identity(&self, certificate_sha256: &Sha256Digest) -> Option<&Identity> {
        self.identities.get(certificate_sha256)
    }

    /// Every identity, by certificate fingerprint.
    pub fn identities(&self) -> impl Iterator<Item = (&Sha256Digest, &Identity)> {
        self.identities.iter()
    }

    /// The active identity a signing key was registered with.
    pub fn identity_of_key(&self, key: &KeyId) -> Option<&Identity> {
        self.keys.get(key).and_then(|fp| self.identities.get(fp))
    }

    /// Annotations folded.
    pub fn notes(&self) -> u64 {
        self.notes
    }

    /// Entries folded.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Validates `header` + `body` as entry `index` against the state so far
    /// and applies it. Ledger time never goes backwards.
    pub fn apply(&mut self, index: u64, header: &EntryHeader, body: &[u8]) -> Result<(), Rejection> {
        if index != self.size {
            return reject(format!("entry {index} is out of order: {} entries folded", self.size));
        }
        if self.last_time.is_some_and(|t| header.time < t) {
            return reject(format!("entry {index}'s ledger time goes backwards"));
        }
        if self.root.is_none() && header.kind != EntryKind::Root {
            return reject("the first entry of a ledger must be its root");
        }
        match header.kind {
            EntryKind::Root => self.apply_root(index, header, body)?,
            EntryKind::Identity | EntryKind::Revocation | EntryKind::Note => {
                self.apply_action(index, header, body)?;
            }
        }
        self.size += 1;
        self.last_time = Some(header.time);
        Ok(())
    }

    fn apply_root(&mut self, index: u64, header: &EntryHeader, body: &[u8]) -> Result<(), Rejection> {
        let next = match &self.root {
            // The genesis root: self-signed, valid at its ledger time. A
            // development root is accepted here; agents apply their own policy.
            None => TrustedRoot::provision(body, header.time, RootPolicy { allow_development: true })
                .map_err(|e| Rejection(format!("the genesis root is refused: {e}")))?,
            Some(current) => {
                current.rotate(body).map_err(|e| Rejection(format!("the root rotation is refused: {e}")))?
            }
        };
        if header.actor.is_some() || !header.subjects.is_empty() {
            return reject("a root entry names no actor and no subjects");
        }
        self.roots.push((index, next.version()));
        self.root = Some(next);
        Ok(())
    }

    /// The admin keys of the current root, any one of which may sign an action.
    fn admin_signers(&self) -> Result<KeySet, Rejection> {
        let root = self.root.as_ref().ok_or_else(|| Rejection("no root yet".into()))?;
        let admins = root.admin_keys().map_err(|e| Rejection(e.to_string()))?;
        KeySet::new(admins.keys().map(|(_, k)| *k), 1).map_err(|e| Rejection(e.to_string()))
    }

    fn apply_action(&mut self, index: u64, header: &EntryHeader, body: &[u8]) -> Result<(), Rejection> {
        let signers = self.admin_signers()?;
        let verified = envelope::verify::<AdminAction>(body, &signers)
            .map_err(|e| Rejection(format!("the admin action is refused: {e}")))?;
        let Some(actor) = header.actor else { return reject("an admin action names its signer as actor") };
        if !verified.signers().contains(&actor) {
            return reject("the entry's actor did not sign the action");
        }
        match (&verified.action, header.kind) {
            (ActionKind::Note { .. }, EntryKind::Note) => {
                self.notes += 1;
                Ok(())
            }
            (
                ActionKind::IssueIdentity { role, subject, signing_key, certificate_sha256, scope },
                EntryKind::Identity,
            ) => {
                if header.subjects != [subject.clone()] {
                    return reject("an identity entry names its subject, and only it");
                }
                if self.identities.contains_key(certificate_sha256) {
                    return reject("this certificate is already registered");
                }
                if self.keys.contains_key(&signing_key.key_id()) {
                    return reject("this signing key is already registered to an active identity");
                }
                if *role == IdentityRole::Admin && !signers.contains(&signing_key.key_id()) {
                    return reject("an admin identity needs a signing key listed in the root's admin role");
                }
                if *role != IdentityRole::Auditor && scope.is_some() {
                    return reject("only an auditor's identity carries a scope");
                }
                self.keys.insert(signing_key.key_id(), *certificate_sha256);
                self.identities.insert(
                    *certificate_sha256,
                    Identity {
                        role: *role,
                        subject: subject.clone(),
                        signing_key: *signing_key,
                        scope: scope.clone(),
                        issued_at_index: index,
                        revoked: None,
                    },
                );
                Ok(())
            }
            (ActionKind::RevokeIdentity { certificate_sha256, compromised_since }, EntryKind::Revocation) => {
                let Some(identity) = self.identities.get_mut(certificate_sha256) else {
                    return reject("no identity has this certificate");
                };
                if identity.revoked.is_some() {
                    return reject("this identity is already revoked");
                }
                identity.revoked = Some(Revocation { at: header.time, compromised_since: *compromised_since });
                self.keys.remove(&identity.signing_key.key_id());
                Ok(())
            }
            _ => reject("the action does not match the entry's kind"),
        }
    }
}

/// The root document of a root envelope, without checking it (for display).
pub fn peek_root(body: &[u8]) -> Option<RootMetadata> {
    use crate::statements::Payload as _;
    RootMetadata::parse(envelope::Envelope::parse(body).ok()?.payload()).ok()
}

/// Where an admin action goes in the ledger: its entry kind and the
/// subjects its header names. `None` for actions this fold does not take yet.
pub fn placement(action: &ActionKind) -> Option<(EntryKind, Vec<String>)> {
    match action {
        ActionKind::Note { .. } => Some((EntryKind::Note, vec![])),
        ActionKind::IssueIdentity { subject, .. } => Some((EntryKind::Identity, vec![subject.clone()])),
        ActionKind::RevokeIdentity { .. } => Some((EntryKind::Revocation, vec![])),
        _ => None,
    }
}
