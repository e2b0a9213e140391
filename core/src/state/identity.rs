//! The identity actions: issuing and revoking identities, their proposals
//! and approvals (an identity whose key signs what the conditions read, the
//! revocation of another admin, a compromise that voids what was recorded
//! wait for the admin threshold), and the rules an identity's registration
//! keeps.

use std::collections::BTreeSet;

use super::governance::{Act, ProposalKind};
use super::rejection::{Rejection, reject};
use super::{Identity, Revocation, State};
use crate::digest::{Sha256Digest, Timestamp};
use crate::keys::{KeyId, KeySet};
use crate::statements::IdentityRole;

impl State {
    /// Issues an identity: an admin's at once, a device key at once unless
    /// what holds its customer could be escaped, the others as a proposal.
    pub(super) fn issue_identity(
        &mut self,
        act: &Act<'_>,
        identity: Identity,
        certificate_sha256: &Sha256Digest,
        signers: &KeySet,
    ) -> Result<(), Rejection> {
        self.check_issue(&identity, certificate_sha256, signers)?;
        // A customer's, engineer's or auditor's key signs what the
        // conditions read (attestations, verifications, signals): one admin
        // holding such a key could forge them, so the identity needs the
        // admin threshold. An admin's key is already in the root, which the
        // root's threshold signed. A device key is issued at once, unless
        // what holds its customer could be escaped by a spare deployment's
        // id.
        let subject = &identity.subject;
        let why = match identity.role {
            IdentityRole::Admin => None,
            IdentityRole::Deployment => self.gov.deployment(subject).and_then(|d| {
                // A new key for a deployment that had one is a device swap:
                // the ledger cannot tell the new hardware from held hardware
                // of another customer.
                let had_key = self.identities.values().any(|i| i.role == IdentityRole::Deployment && i.subject == d.id);
                self.gov
                    .hold_on(&d.customer)
                    .or_else(|| had_key.then(|| format!("deployment {} had a device key before (a new device)", d.id)))
            }),
            IdentityRole::Customer => {
                Some("a customer's key signs the end-use attestations the conditions read".into())
            }
            IdentityRole::Engineer => {
                Some("an engineer's key signs the field verifications the conditions read".into())
            }
            IdentityRole::Auditor => Some("an auditor's key signs misuse signals and reads ledger facts".into()),
            IdentityRole::Reporter => {
                Some("a reporter's key signs misuse signals, which open the cases the conditions read".into())
            }
        };
        let Some(why) = why else {
            self.register(*certificate_sha256, identity);
            return Ok(());
        };
        let kind = ProposalKind::Identity { identity, certificate_sha256: *certificate_sha256, why };
        self.gov.propose_for_state(act, kind)?;
        self.after_proposal(act.index, act.time, &act.digest);
        Ok(())
    }

    /// Revokes an identity: another admin's as a proposal, any other at
    /// once; a compromise that voids what was recorded as a proposal.
    pub(super) fn revoke_identity(
        &mut self,
        act: &Act<'_>,
        certificate_sha256: &Sha256Digest,
        compromised_since: Option<Timestamp>,
    ) -> Result<(), Rejection> {
        let Some(identity) = self.identities.get(certificate_sha256) else {
            return reject(Rejection::NotFound, "no identity has this certificate");
        };
        let key = identity.signing_key.key_id();
        // Revoking another admin leaves that admin's approvals void, so one
        // admin alone could end dual control: it needs the threshold. An
        // admin may revoke its own identity at once.
        if identity.role == IdentityRole::Admin && identity.revoked.is_none() && key != act.actor {
            let kind = ProposalKind::Revocation { certificate_sha256: *certificate_sha256, compromised_since };
            self.gov.propose_for_state(act, kind)?;
            self.after_proposal(act.index, act.time, &act.digest);
            return Ok(());
        }
        let at = match (&identity.revoked, compromised_since) {
            (None, _) => act.time,
            (Some(Revocation { compromised_since: None, at }), Some(_)) => *at,
            (Some(Revocation { compromised_since: Some(since), .. }), Some(_)) => {
                return reject(
                    Rejection::AlreadyRecorded,
                    format!("this identity is already revoked, as compromised since {since}"),
                );
            }
            (Some(_), None) => return reject(Rejection::AlreadyRecorded, "this identity is already revoked"),
        };
        // The key is cut off at once. Voiding what it signed since a time
        // can bring back an older attestation or verification that passes,
        // turning a withhold into a grant: when it voids anything recorded,
        // the compromise waits for the threshold.
        let voids = compromised_since.map_or(0, |since| self.gov.signed_since(&key, since));
        let at_once = if voids == 0 { compromised_since } else { None };
        if let (Some(since), true) = (compromised_since, voids > 0) {
            let kind = ProposalKind::Compromise { certificate_sha256: *certificate_sha256, since, voids };
            self.gov.propose_for_state(act, kind)?;
        }
        if let Some(identity) = self.identities.get_mut(certificate_sha256) {
            identity.revoked = Some(Revocation { at, compromised_since: at_once });
        }
        self.keys.remove(&key);
        self.after_proposal(act.index, act.time, &act.digest);
        Ok(())
    }

    /// Approves a proposal. What an identity proposal would change is
    /// checked again before anything changes: a refused entry leaves the
    /// state as it was.
    pub(super) fn approve(
        &mut self,
        act: &Act<'_>,
        proposal: &Sha256Digest,
        signers: &KeySet,
    ) -> Result<(), Rejection> {
        let kind = self.gov.proposal(proposal).filter(|p| !p.in_force).map(|p| p.kind.clone());
        match &kind {
            Some(ProposalKind::Identity { identity, certificate_sha256, .. }) => {
                self.check_issue(identity, certificate_sha256, signers)?;
            }
            Some(ProposalKind::Revocation { certificate_sha256, .. }) => {
                match self.identities.get(certificate_sha256) {
                    None => return reject(Rejection::NotFound, "no identity has this certificate"),
                    Some(i) if i.revoked.is_some() => {
                        return reject(Rejection::AlreadyRecorded, "this identity is already revoked");
                    }
                    Some(_) => {}
                }
            }
            Some(ProposalKind::Compromise { certificate_sha256, .. }) => {
                let since = self
                    .identities
                    .get(certificate_sha256)
                    .and_then(|i| i.revoked.as_ref())
                    .and_then(|r| r.compromised_since);
                if let Some(since) = since {
                    return reject(
                        Rejection::AlreadyRecorded,
                        format!("this identity is already recorded as compromised since {since}; propose again"),
                    );
                }
            }
            // A person issued under the deployment's id while it waited:
            // registering it now would hand the person's entries to the
            // customer (keys are per id).
            Some(ProposalKind::Deployment { deployment, .. }) if self.person_named(&deployment.id) => {
                return reject(
                    Rejection::Precondition,
                    format!(
                        "{} is a person's id since this deployment was proposed; register the deployment under \
                         another id",
                        deployment.id
                    ),
                );
            }
            // The governance facts check what the other proposals change.
            Some(
                ProposalKind::Contract { .. }
                | ProposalKind::Suspension { .. }
                | ProposalKind::Waiver { .. }
                | ProposalKind::SecurityFix { .. }
                | ProposalKind::Licence { .. }
                | ProposalKind::CaseMove { .. }
                | ProposalKind::Deployment { .. },
            )
            | None => {}
        }
        self.gov.approve(act, proposal)?;
        self.after_proposal(act.index, act.time, proposal);
        Ok(())
    }

    /// Whether an admin key's admin identity was revoked (only an admin
    /// identity's revocation takes an admin's voice away).
    pub(super) fn admin_revoked(&self, key: &KeyId) -> bool {
        self.any_identity_of_key(key).is_some_and(|i| i.role == IdentityRole::Admin && i.revoked.is_some())
    }

    /// Admin keys of the current root whose identity is not revoked: only
    /// their approvals count.
    pub(super) fn valid_admins(&self) -> Result<BTreeSet<KeyId>, Rejection> {
        let admins = self.admin_keys()?;
        Ok(admins.keys().map(|(id, _)| *id).filter(|id| !self.admin_revoked(id)).collect())
    }

    /// The rules an identity's registration keeps, checked when it is
    /// issued and again when its proposal is approved.
    fn check_issue(
        &self,
        identity: &Identity,
        certificate_sha256: &Sha256Digest,
        signers: &KeySet,
    ) -> Result<(), Rejection> {
        let Identity { role, subject, signing_key, scope, .. } = identity;
        if self.identities.contains_key(certificate_sha256) {
            return reject(Rejection::AlreadyRecorded, "this certificate is already registered");
        }
        if self.keys.contains_key(&signing_key.key_id()) {
            return reject(Rejection::AlreadyRecorded, "this signing key is already registered to an active identity");
        }
        if self.key_history.contains_key(&signing_key.key_id()) {
            return reject(Rejection::Precondition, "this signing key was revoked; the holder makes a new one");
        }
        if *role == IdentityRole::Admin && !signers.contains(&signing_key.key_id()) {
            return reject(
                Rejection::Precondition,
                "an admin identity needs a signing key listed in the root's admin role",
            );
        }
        // An admin's key under another role could be revoked by one admin
        // at once, taking the other admin's voice away.
        if *role != IdentityRole::Admin && signers.contains(&signing_key.key_id()) {
            return reject(
                Rejection::Precondition,
                "a key listed in the root's admin role is registered only as an admin identity",
            );
        }
        if *role == IdentityRole::Customer && self.gov.customer(subject).is_none() {
            return reject(Rejection::Precondition, format!("register customer {subject} before its keys"));
        }
        if *role == IdentityRole::Deployment && self.gov.deployment(subject).is_none() {
            return reject(Rejection::Precondition, format!("register deployment {subject} before its key"));
        }
        // An auditor's scope is what it may read; an engineer's, the
        // customers whose deployments it verifies and carries for.
        if !matches!(role, IdentityRole::Auditor | IdentityRole::Engineer) && scope.is_some() {
            return reject(Rejection::Precondition, "only an auditor's or an engineer's identity carries a scope");
        }
        // A person's id that spells a customer's or a deployment's would
        // share that subject's key (keys are per id): refused, so that the
        // approving admins see the mistake (`visibility::entitled` gives
        // such a person nothing of the customer's all the same).
        let person = !matches!(role, IdentityRole::Customer | IdentityRole::Deployment);
        if person && (self.gov.customer(subject).is_some() || self.gov.deployment(subject).is_some()) {
            return reject(
                Rejection::Precondition,
                format!(
                    "{subject} is a registered customer or deployment id; a person's identity needs an id of its own"
                ),
            );
        }
        Ok(())
    }

    /// Whether a person (admin, engineer, auditor, reporter) was ever
    /// registered under `id`.
    pub(super) fn person_named(&self, id: &str) -> bool {
        self.identities
            .values()
            .any(|i| i.subject == id && !matches!(i.role, IdentityRole::Customer | IdentityRole::Deployment))
    }

    fn register(&mut self, certificate_sha256: Sha256Digest, identity: Identity) {
        self.keys.insert(identity.signing_key.key_id(), certificate_sha256);
        self.key_history.insert(identity.signing_key.key_id(), certificate_sha256);
        self.identities.insert(certificate_sha256, identity);
    }

    /// Applies an identity proposal that came in force with entry `index`
    /// (its approval, or the proposal itself when the threshold is one).
    /// Its rules were checked before the governance facts changed, so this
    /// cannot fail.
    fn after_proposal(&mut self, index: u64, time: Timestamp, digest: &Sha256Digest) {
        let Some(p) = self.gov.proposal(digest).filter(|p| p.in_force) else { return };
        match p.kind.clone() {
            ProposalKind::Identity { identity, certificate_sha256, .. } => {
                self.register(certificate_sha256, Identity { issued_at_index: index, ..identity });
            }
            ProposalKind::Revocation { certificate_sha256, compromised_since } => {
                if let Some(identity) = self.identities.get_mut(&certificate_sha256) {
                    identity.revoked = Some(Revocation { at: time, compromised_since });
                    self.keys.remove(&identity.signing_key.key_id());
                }
            }
            ProposalKind::Compromise { certificate_sha256, since, .. } => {
                if let Some(r) = self.identities.get_mut(&certificate_sha256).and_then(|i| i.revoked.as_mut()) {
                    r.compromised_since = Some(since);
                }
            }
            // The governance facts put the other proposals in force.
            ProposalKind::Contract { .. }
            | ProposalKind::Suspension { .. }
            | ProposalKind::Waiver { .. }
            | ProposalKind::SecurityFix { .. }
            | ProposalKind::Licence { .. }
            | ProposalKind::CaseMove { .. }
            | ProposalKind::Deployment { .. } => {}
        }
    }
}
