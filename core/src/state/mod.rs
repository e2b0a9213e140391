//! The state folded from the ledger, entry by entry (`docs/design.md`, principle 1:
//! the ledger is the database): root versions, identities and their keys,
//! customers, deployments, contracts, releases, attestations, field
//! verifications, misuse cases, suspensions, proposals and their approvals,
//! waivers, denied-party listings, export licences, decisions and install
//! reports.
//!
//! Every entry's body is a DSSE envelope, and its header is a function of
//! that body ([`classify`]): the kind, the actor (the key that signed it) and
//! the subjects it names (which the header carries only as subject tags,
//! derived with the state's [`Keyring`]). [`State::apply`] checks the header
//! against the body, checks every signature against the key the state says must have
//! signed (principle 3: people sign what they do), checks the entry's rule,
//! and only then changes the state. An entry that breaks a rule is refused
//! with a reason for the person who sent it, and the state is unchanged.

mod governance;

use std::collections::{BTreeMap, BTreeSet};

pub use governance::{
    ACTION_CLOCK_SKEW, ACTION_WINDOW, AttestationFact, CHECKIN_WINDOW, Case, Customer, DECISION_SKEW, DecisionFact,
    Deployment, Facts, LOGGING_PERIOD, MAX_DECISIONS_PER_PERIOD, PROPOSAL_LIFETIME, Proposal, ProposalKind, Release,
    VerificationFact, legal_move, outcome_name, reasons_digest,
};

use crate::digest::{Sha256Digest, Timestamp};
use crate::envelope::{self, Envelope};
use crate::keys::{KeyId, KeySet, PublicKey};
use crate::ledger::{EntryHeader, EntryKind, Keyring, MAX_SUBJECTS};
use crate::root::{RootPolicy, TrustedRoot};
use crate::statements::{
    ActionKind, AdminAction, CheckIn, Decision, EndUseAttestation, FieldVerification, IdentityRole, InTotoStatement,
    InstallReport, MisuseSignal, Payload, ReleaseManifest, RootMetadata, SuspensionTarget, Verdict,
};

/// Why an entry was refused, in words for the person who sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejection(pub String);

pub(crate) fn reject<T>(why: impl Into<String>) -> Result<T, Rejection> {
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
    /// The subject id: the person's id; for a customer's key, the customer
    /// id; for a deployment's key, the deployment id.
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

/// Where an entry goes: the header fields that follow from its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The entry kind.
    pub kind: EntryKind,
    /// The key that signed it, for entries one person or device signs.
    pub actor: Option<KeyId>,
    /// The customer and deployment ids it concerns.
    pub subjects: Vec<String>,
}

/// A check-in verified against its deployment's registered key, with the
/// exact envelope bytes it came in (a decision carries them). Only
/// [`State::verify_checkin`] makes one.
#[derive(Debug, Clone)]
pub struct SignedCheckIn {
    bytes: Vec<u8>,
    verified: envelope::Verified<CheckIn>,
}

impl SignedCheckIn {
    /// The exact envelope bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl std::ops::Deref for SignedCheckIn {
    type Target = CheckIn;
    fn deref(&self) -> &CheckIn {
        self.verified.value()
    }
}

/// The state folded from the ledger.
#[derive(Debug, Clone, Default)]
pub struct State {
    root: Option<TrustedRoot>,
    /// (ledger index, root version) of every root entry.
    roots: Vec<(u64, u64)>,
    /// Identities by the SHA-256 of their certificate's DER bytes.
    identities: BTreeMap<Sha256Digest, Identity>,
    /// Active signing keys, to the certificate they came with.
    keys: BTreeMap<KeyId, Sha256Digest>,
    /// Every signing key ever registered, to its certificate (revoked too).
    key_history: BTreeMap<KeyId, Sha256Digest>,
    notes: u64,
    size: u64,
    last_time: Option<Timestamp>,
    /// The payload digest of every admin action recorded, to its index: an
    /// action is recorded once.
    actions: BTreeMap<Sha256Digest, u64>,
    gov: governance::Facts,
    /// What checks each header's subject tags against its body's subjects.
    keyring: Keyring,
}

/// The registry of #4 is the state's first part; the name stays for callers.
pub type Registry = State;

impl State {
    /// An empty state with no subject keys; the first entry must be a root.
    /// It refuses every entry that names a subject: use
    /// [`State::with_keyring`] to fold a real ledger.
    pub fn new() -> Self {
        State::default()
    }

    /// An empty state that checks subject tags with `keyring` (the server's
    /// secret, or the subject keys an auditor was given).
    pub fn with_keyring(keyring: Keyring) -> Self {
        State { keyring, ..State::default() }
    }

    /// The keyring that checks (and, on the server, makes) subject tags.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Whether `header`'s subject tags are exactly those of `subjects`.
    fn check_tags(&self, header: &EntryHeader, subjects: &[String]) -> Result<(), Rejection> {
        match self.keyring.tags(subjects, &header.body_digest) {
            Ok(tags) if tags == header.tags => Ok(()),
            Ok(_) => reject("the entry's subject tags must be those of the ids its body names"),
            Err(subject) => reject(format!("no subject key for {subject}: the entry's subject tags cannot be checked")),
        }
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

    /// The identity a signing key was ever registered with, revoked or not.
    pub fn any_identity_of_key(&self, key: &KeyId) -> Option<&Identity> {
        self.key_history.get(key).and_then(|fp| self.identities.get(fp))
    }

    /// Whether what `key` signed in an entry at ledger time `at` still
    /// counts: not if its identity was revoked as compromised since a time
    /// at or before `at` (compared with ledger time, never a signer's).
    pub fn signature_counts(&self, key: &KeyId, at: Timestamp) -> bool {
        match self.any_identity_of_key(key).and_then(|i| i.revoked.as_ref()) {
            Some(Revocation { compromised_since: Some(since), .. }) => at < *since,
            _ => true,
        }
    }

    /// The ledger index of the admin action with this payload digest, if
    /// one was recorded.
    pub fn recorded_action(&self, payload_digest: &Sha256Digest) -> Option<u64> {
        self.actions.get(payload_digest).copied()
    }

    /// Annotations folded.
    pub fn notes(&self) -> u64 {
        self.notes
    }

    /// Entries folded.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The ledger time of the last entry folded.
    pub fn last_time(&self) -> Option<Timestamp> {
        self.last_time
    }

    /// Counts an entry without taking it (replay, after the fold refused it,
    /// so that later indexes stay the ledger's).
    pub fn skip(&mut self) {
        self.size += 1;
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
        let placement = classify(body)?;
        if placement.kind != header.kind {
            return reject(format!("the body is a {} entry, but the header says {}", placement.kind, header.kind));
        }
        if placement.actor != header.actor {
            return reject("the entry's actor must be the key that signed its body");
        }
        self.check_tags(header, &placement.subjects)?;
        match header.kind {
            EntryKind::Root => self.apply_root(index, header, body)?,
            _ => self.apply_signed(index, header, body)?,
        }
        self.size += 1;
        self.last_time = Some(header.time);
        Ok(())
    }

    /// Applies a decision that this process evaluated against exactly this
    /// state and signed itself (the sequencer's own, from
    /// [`policy::evaluate`](crate::policy::evaluate) and the decision key),
    /// with every rule of [`State::apply`] but the signature checks it just
    /// made. `checkin` is the verified check-in the decision answers.
    pub fn apply_own_decision(
        &mut self,
        index: u64,
        header: &EntryHeader,
        decision: &Decision,
        checkin: &SignedCheckIn,
    ) -> Result<(), Rejection> {
        if index != self.size {
            return reject(format!("entry {index} is out of order: {} entries folded", self.size));
        }
        if self.last_time.is_some_and(|t| header.time < t) {
            return reject(format!("entry {index}'s ledger time goes backwards"));
        }
        let kind = if decision.verdict == Verdict::Grant { EntryKind::Grant } else { EntryKind::Withhold };
        if header.kind != kind || header.actor.is_none() {
            return reject("the decision's header does not match it");
        }
        self.check_tags(header, std::slice::from_ref(&decision.deployment))?;
        if checkin.deployment != decision.deployment || checkin.bytes() != decision.checkin.as_slice() {
            return reject("the decision answers another check-in");
        }
        self.gov.apply_decision(index, header.time, decision, checkin)?;
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
        self.roots.push((index, next.version()));
        self.root = Some(next);
        Ok(())
    }

    /// The admin keys of the current root, any one of which may sign an
    /// action; the set's threshold is the approvals a heavy action needs.
    pub fn admin_keys(&self) -> Result<KeySet, Rejection> {
        let root = self.root.as_ref().ok_or_else(|| Rejection("no root yet".into()))?;
        root.admin_keys().map_err(|e| Rejection(e.to_string()))
    }

    fn any_admin(&self) -> Result<KeySet, Rejection> {
        let admins = self.admin_keys()?;
        KeySet::new(admins.keys().map(|(_, k)| *k), 1).map_err(|e| Rejection(e.to_string()))
    }

    /// The single key, registered to an active identity in one of `roles`,
    /// that must have signed an entry whose actor is `actor`.
    pub(crate) fn registered_signer(
        &self,
        actor: Option<KeyId>,
        roles: &[IdentityRole],
        what: &str,
    ) -> Result<(&Identity, KeySet), Rejection> {
        let Some(actor) = actor else { return reject(format!("{what} names its signer as actor")) };
        let identity = match self.identity_of_key(&actor) {
            Some(identity) => identity,
            None if self.any_identity_of_key(&actor).is_some() => {
                return reject(format!("{what} is signed by a revoked key"));
            }
            None => return reject(format!("{what} is signed by a key no one registered")),
        };
        if !roles.contains(&identity.role) {
            return reject(format!("{what} must be signed by a registered {} key", role_names(roles)));
        }
        let keys = KeySet::new([identity.signing_key], 1).map_err(|e| Rejection(e.to_string()))?;
        Ok((identity, keys))
    }

    fn apply_signed(&mut self, index: u64, header: &EntryHeader, body: &[u8]) -> Result<(), Rejection> {
        let t = header.time;
        match header.kind {
            EntryKind::Release => {
                let root = self.root.as_ref().ok_or_else(|| Rejection("no root yet".into()))?;
                let keys = root.release_keys().map_err(|e| Rejection(e.to_string()))?;
                let manifest = envelope::verify::<ReleaseManifest>(body, &keys)
                    .map_err(|e| Rejection(format!("the release is refused: {e}")))?;
                self.gov.apply_release(index, t, manifest)
            }
            EntryKind::Attestation => {
                let (identity, keys) =
                    self.registered_signer(header.actor, &[IdentityRole::Customer], "an end-use attestation")?;
                let customer_of_key = identity.subject.clone();
                let statement = envelope::verify::<InTotoStatement<EndUseAttestation>>(body, &keys)
                    .map_err(|e| Rejection(format!("the end-use attestation is refused: {e}")))?;
                self.gov.apply_attestation(index, t, &customer_of_key, header.actor, statement)
            }
            EntryKind::Verification => {
                let (_, keys) =
                    self.registered_signer(header.actor, &[IdentityRole::Engineer], "a field verification")?;
                let statement = envelope::verify::<InTotoStatement<FieldVerification>>(body, &keys)
                    .map_err(|e| Rejection(format!("the field verification is refused: {e}")))?;
                self.gov.apply_verification(index, t, header.actor, statement)
            }
            EntryKind::Signal => {
                // The header names no actor (a customer reading headers must
                // not learn who reported); the signer comes from the body.
                let signer = Envelope::parse(body)
                    .ok()
                    .and_then(|e| e.signatures().first().and_then(|s| KeyId::from_hex(&s.keyid)));
                let (_, keys) = self.registered_signer(
                    signer,
                    &[IdentityRole::Engineer, IdentityRole::Auditor],
                    "a misuse signal",
                )?;
                let signal = envelope::verify::<MisuseSignal>(body, &keys)
                    .map_err(|e| Rejection(format!("the misuse signal is refused: {e}")))?;
                self.gov.apply_signal(index, &signal)
            }
            EntryKind::Grant | EntryKind::Withhold => {
                let root = self.root.as_ref().ok_or_else(|| Rejection("no root yet".into()))?;
                let keys = root.decision_keys().map_err(|e| Rejection(e.to_string()))?;
                let decision = envelope::verify::<Decision>(body, &keys)
                    .map_err(|e| Rejection(format!("the decision is refused: {e}")))?;
                let checkin = self.verify_checkin(&decision.checkin)?;
                if checkin.deployment != decision.deployment {
                    return reject("the decision answers another deployment's check-in");
                }
                self.gov.apply_decision(index, t, &decision, &checkin)
            }
            EntryKind::Report => {
                let (identity, keys) =
                    self.registered_signer(header.actor, &[IdentityRole::Deployment], "an install report")?;
                let device = identity.subject.clone();
                let report = envelope::verify::<InstallReport>(body, &keys)
                    .map_err(|e| Rejection(format!("the install report is refused: {e}")))?;
                if report.deployment != device {
                    return reject("an install report is signed by the deployment it reports on");
                }
                self.gov.apply_report(index, &report)
            }
            _ => self.apply_action(index, header, body),
        }
    }

    fn apply_action(&mut self, index: u64, header: &EntryHeader, body: &[u8]) -> Result<(), Rejection> {
        let signers = self.any_admin()?;
        let verified = envelope::verify::<AdminAction>(body, &signers)
            .map_err(|e| Rejection(format!("the admin action is refused: {e}")))?;
        let Some(actor) = header.actor else { return reject("an admin action names its signer as actor") };
        if !verified.signers().contains(&actor) {
            return reject("the entry's actor did not sign the action");
        }
        if self.admin_revoked(&actor) {
            return reject("the admin action is signed by a revoked admin key");
        }
        let proposal_digest = verified.payload_digest();
        // An action is recorded once, within a day of when it was signed: so
        // no one holding an old signed action (the operator of a stopped
        // server, say) can record it again to undo what came after it.
        if let Some(first) = self.actions.get(&proposal_digest) {
            return reject(format!("this admin action re-records the action of entry {first}; sign a new one"));
        }
        if verified.issued_at < header.time.plus_seconds(-ACTION_WINDOW) {
            return reject(format!(
                "the admin action was issued at {}, more than a day from its ledger time {}; sign it again",
                verified.issued_at, header.time
            ));
        }
        if verified.issued_at > header.time.plus_seconds(ACTION_CLOCK_SKEW) {
            return reject(format!(
                "the admin action is dated {}, after its ledger time {} by more than the {ACTION_CLOCK_SKEW} s of \
                 clock skew allowed; sign it again with a correct clock",
                verified.issued_at, header.time
            ));
        }
        self.apply_action_kind(index, header, actor, proposal_digest, &verified.action, &signers)?;
        self.actions.insert(proposal_digest, index);
        Ok(())
    }

    fn apply_action_kind(
        &mut self,
        index: u64,
        header: &EntryHeader,
        actor: KeyId,
        proposal_digest: Sha256Digest,
        action: &ActionKind,
        signers: &KeySet,
    ) -> Result<(), Rejection> {
        let valid = self.valid_admins()?;
        match action {
            ActionKind::Note { .. } => {
                self.notes += 1;
                Ok(())
            }
            ActionKind::IssueIdentity { role, subject, signing_key, certificate_sha256, scope } => {
                let identity = Identity {
                    role: *role,
                    subject: subject.clone(),
                    signing_key: *signing_key,
                    scope: scope.clone(),
                    issued_at_index: index,
                    revoked: None,
                };
                self.check_issue(&identity, certificate_sha256, signers)?;
                // A customer's, engineer's or auditor's key signs what the
                // conditions read (attestations, verifications, signals):
                // one admin holding such a key could forge them, so the
                // identity needs the admin threshold. An admin's key is
                // already in the root, which the root's threshold signed. A
                // device key is issued at once, unless what holds its
                // customer could be escaped by a spare deployment's id.
                let why = match role {
                    IdentityRole::Admin => None,
                    IdentityRole::Deployment => self.gov.deployment(subject).and_then(|d| {
                        // A new key for a deployment that had one is a
                        // device swap: the ledger cannot tell the new
                        // hardware from held hardware of another customer.
                        let had_key =
                            self.identities.values().any(|i| i.role == IdentityRole::Deployment && i.subject == d.id);
                        self.gov.hold_on(&d.customer).or_else(|| {
                            had_key.then(|| format!("deployment {} had a device key before (a new device)", d.id))
                        })
                    }),
                    IdentityRole::Customer => {
                        Some("a customer's key signs the end-use attestations the conditions read".into())
                    }
                    IdentityRole::Engineer => {
                        Some("an engineer's key signs the field verifications the conditions read".into())
                    }
                    IdentityRole::Auditor => {
                        Some("an auditor's key signs misuse signals and reads ledger facts".into())
                    }
                };
                let Some(why) = why else {
                    self.register(*certificate_sha256, identity);
                    return Ok(());
                };
                let kind = ProposalKind::Identity { identity, certificate_sha256: *certificate_sha256, why };
                let by = self.approver(actor, proposal_digest, &valid)?;
                self.gov.propose_for_state(index, header.time, &by, kind)?;
                self.after_proposal(index, header.time, &proposal_digest);
                Ok(())
            }
            ActionKind::RevokeIdentity { certificate_sha256, compromised_since } => {
                let Some(identity) = self.identities.get(certificate_sha256) else {
                    return reject("no identity has this certificate");
                };
                let key = identity.signing_key.key_id();
                // Revoking another admin leaves that admin's approvals void,
                // so one admin alone could end dual control: it needs the
                // threshold. An admin may revoke its own identity at once.
                if identity.role == IdentityRole::Admin && identity.revoked.is_none() && key != actor {
                    let kind = ProposalKind::Revocation {
                        certificate_sha256: *certificate_sha256,
                        compromised_since: *compromised_since,
                    };
                    let by = self.approver(actor, proposal_digest, &valid)?;
                    self.gov.propose_for_state(index, header.time, &by, kind)?;
                    self.after_proposal(index, header.time, &proposal_digest);
                    return Ok(());
                }
                let at = match (&identity.revoked, compromised_since) {
                    (None, _) => header.time,
                    (Some(Revocation { compromised_since: None, at }), Some(_)) => *at,
                    (Some(Revocation { compromised_since: Some(since), .. }), Some(_)) => {
                        return reject(format!("this identity is already revoked, as compromised since {since}"));
                    }
                    (Some(_), None) => return reject("this identity is already revoked"),
                };
                // The key is cut off at once. Voiding what it signed since a
                // time can bring back an older attestation or verification
                // that passes, turning a withhold into a grant: when it voids
                // anything recorded, the compromise waits for the threshold.
                let voids = compromised_since.map_or(0, |since| self.gov.signed_since(&key, since));
                let at_once = if voids == 0 { *compromised_since } else { None };
                if let (Some(since), true) = (compromised_since, voids > 0) {
                    let kind =
                        ProposalKind::Compromise { certificate_sha256: *certificate_sha256, since: *since, voids };
                    let by = self.approver(actor, proposal_digest, &valid)?;
                    self.gov.propose_for_state(index, header.time, &by, kind)?;
                }
                if let Some(identity) = self.identities.get_mut(certificate_sha256) {
                    identity.revoked = Some(Revocation { at, compromised_since: at_once });
                }
                self.keys.remove(&key);
                self.after_proposal(index, header.time, &proposal_digest);
                Ok(())
            }
            ActionKind::Approve { proposal } => {
                // What an identity proposal would change is checked again
                // before anything changes: a refused entry leaves the state
                // as it was.
                let kind = self.gov.proposal(proposal).filter(|p| !p.in_force).map(|p| p.kind.clone());
                match &kind {
                    Some(ProposalKind::Identity { identity, certificate_sha256, .. }) => {
                        self.check_issue(identity, certificate_sha256, signers)?;
                    }
                    Some(ProposalKind::Revocation { certificate_sha256, .. }) => {
                        match self.identities.get(certificate_sha256) {
                            None => return reject("no identity has this certificate"),
                            Some(i) if i.revoked.is_some() => return reject("this identity is already revoked"),
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
                            return reject(format!(
                                "this identity is already recorded as compromised since {since}; propose again"
                            ));
                        }
                    }
                    _ => {}
                }
                let by = self.approver(actor, proposal_digest, &valid)?;
                self.gov.apply_action(index, header.time, &by, action)?;
                self.after_proposal(index, header.time, proposal);
                Ok(())
            }
            action => {
                let by = self.approver(actor, proposal_digest, &valid)?;
                self.gov.apply_action(index, header.time, &by, action)
            }
        }
    }

    /// Admin keys of the current root whose identity is not revoked: only
    /// their approvals count.
    /// Whether an admin key's admin identity was revoked (only an admin
    /// identity's revocation takes an admin's voice away).
    fn admin_revoked(&self, key: &KeyId) -> bool {
        self.any_identity_of_key(key).is_some_and(|i| i.role == IdentityRole::Admin && i.revoked.is_some())
    }

    fn valid_admins(&self) -> Result<BTreeSet<KeyId>, Rejection> {
        let admins = self.admin_keys()?;
        Ok(admins.keys().map(|(id, _)| *id).filter(|id| !self.admin_revoked(id)).collect())
    }

    fn approver<'a>(
        &self,
        actor: KeyId,
        digest: Sha256Digest,
        valid: &'a BTreeSet<KeyId>,
    ) -> Result<governance::Approver<'a>, Rejection> {
        let threshold = self.admin_keys()?.threshold();
        Ok(governance::Approver { actor, digest, threshold, valid_admins: valid })
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
            return reject("this certificate is already registered");
        }
        if self.keys.contains_key(&signing_key.key_id()) {
            return reject("this signing key is already registered to an active identity");
        }
        if self.key_history.contains_key(&signing_key.key_id()) {
            return reject("this signing key was revoked; the holder makes a new one");
        }
        if *role == IdentityRole::Admin && !signers.contains(&signing_key.key_id()) {
            return reject("an admin identity needs a signing key listed in the root's admin role");
        }
        // An admin's key under another role could be revoked by one admin
        // at once, taking the other admin's voice away.
        if *role != IdentityRole::Admin && signers.contains(&signing_key.key_id()) {
            return reject("a key listed in the root's admin role is registered only as an admin identity");
        }
        if *role == IdentityRole::Customer && self.gov.customer(subject).is_none() {
            return reject(format!("register customer {subject} before its keys"));
        }
        if *role == IdentityRole::Deployment && self.gov.deployment(subject).is_none() {
            return reject(format!("register deployment {subject} before its key"));
        }
        if *role != IdentityRole::Auditor && scope.is_some() {
            return reject("only an auditor's identity carries a scope");
        }
        Ok(())
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
            _ => {}
        }
    }

    /// Verifies a check-in envelope against the key registered to the
    /// deployment it names.
    pub fn verify_checkin(&self, bytes: &[u8]) -> Result<SignedCheckIn, Rejection> {
        let env = Envelope::parse(bytes).map_err(|e| Rejection(format!("the check-in is refused: {e}")))?;
        let claimed = CheckIn::parse(env.payload()).map_err(|e| Rejection(format!("the check-in is refused: {e}")))?;
        if self.gov.deployment(&claimed.deployment).is_none() {
            return reject(format!("deployment {} is not registered", claimed.deployment));
        }
        let signer = env.signatures().first().and_then(|s| KeyId::from_hex(&s.keyid));
        let (identity, keys) = self.registered_signer(signer, &[IdentityRole::Deployment], "a check-in")?;
        if identity.subject != claimed.deployment {
            return reject("a check-in is signed by the deployment it names");
        }
        let verified = envelope::verify_parsed::<CheckIn>(env, &keys)
            .map_err(|e| Rejection(format!("the check-in is refused: {e}")))?;
        Ok(SignedCheckIn { bytes: bytes.to_vec(), verified })
    }

    /// A registered customer.
    pub fn customer(&self, id: &str) -> Option<&Customer> {
        self.gov.customer(id)
    }

    /// A registered deployment.
    pub fn deployment(&self, id: &str) -> Option<&Deployment> {
        self.gov.deployment(id)
    }

    /// The governance facts (contracts, releases, cases, ...).
    pub fn facts(&self) -> &governance::Facts {
        &self.gov
    }
}

fn role_names(roles: &[IdentityRole]) -> String {
    roles
        .iter()
        .map(|r| match r {
            IdentityRole::Admin => "admin",
            IdentityRole::Customer => "customer",
            IdentityRole::Engineer => "engineer",
            IdentityRole::Auditor => "auditor",
            IdentityRole::Deployment => "deployment",
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Where an admin action goes in the ledger: its entry kind and the
/// subjects its header names.
pub fn placement(action: &ActionKind) -> (EntryKind, Vec<String>) {
    let one = |s: &String| vec![s.clone()];
    match action {
        ActionKind::Note { .. } => (EntryKind::Note, vec![]),
        ActionKind::IssueIdentity { subject, .. } => (EntryKind::Identity, one(subject)),
        ActionKind::RevokeIdentity { .. } => (EntryKind::Revocation, vec![]),
        ActionKind::CaseTransition { .. } => (EntryKind::Case, vec![]),
        ActionKind::ProposeSuspension { target, .. } => match target {
            SuspensionTarget::Customer(id) | SuspensionTarget::Deployment(id) => (EntryKind::Suspension, one(id)),
        },
        ActionKind::Approve { .. } => (EntryKind::Approval, vec![]),
        ActionKind::RegisterCustomer { customer, .. } => (EntryKind::Customer, one(customer)),
        ActionKind::RegisterDeployment { deployment, customer, .. } => {
            (EntryKind::Deployment, vec![customer.clone(), deployment.clone()])
        }
        ActionKind::SetContract { contract } => (EntryKind::Contract, one(&contract.customer)),
        ActionKind::ProposeWaiver { deployment, .. } => (EntryKind::Waiver, one(deployment)),
        ActionKind::ProposeSecurityFix { deployment, .. } => (EntryKind::SecurityFix, one(deployment)),
        ActionKind::ListDeniedParty { .. } => (EntryKind::DeniedParty, vec![]),
        ActionKind::RecordLicence { licence } => (EntryKind::Licence, one(&licence.customer)),
    }
}

/// The header fields that follow from an entry's body: its kind (from the
/// payload type and content), its actor (the first signature's key id, for
/// what one person or device signs) and its subjects. Nothing is verified
/// here; [`State::apply`] verifies.
pub fn classify(body: &[u8]) -> Result<Placement, Rejection> {
    let env = Envelope::parse(body).map_err(|e| Rejection(format!("the entry's body is refused: {e}")))?;
    let first = env.signatures().first().and_then(|s| KeyId::from_hex(&s.keyid));
    let bad = |e: crate::statements::StatementError| Rejection(format!("the entry's body is refused: {e}"));
    let placed = |kind, subjects| Ok(Placement { kind, actor: first, subjects });
    match env.payload_type() {
        RootMetadata::PAYLOAD_TYPE => Ok(Placement { kind: EntryKind::Root, actor: None, subjects: vec![] }),
        ReleaseManifest::PAYLOAD_TYPE => Ok(Placement { kind: EntryKind::Release, actor: None, subjects: vec![] }),
        AdminAction::PAYLOAD_TYPE => {
            let action = AdminAction::parse(env.payload()).map_err(bad)?;
            let (kind, subjects) = placement(&action.action);
            placed(kind, subjects)
        }
        MisuseSignal::PAYLOAD_TYPE => {
            let s = MisuseSignal::parse(env.payload()).map_err(bad)?;
            let subjects = std::iter::once(s.about.customer).chain(s.about.deployment).collect();
            // No actor: who reported a misuse is never shown with the header.
            Ok(Placement { kind: EntryKind::Signal, actor: None, subjects })
        }
        Decision::PAYLOAD_TYPE => {
            let d = Decision::parse(env.payload()).map_err(bad)?;
            let kind = if d.verdict == Verdict::Grant { EntryKind::Grant } else { EntryKind::Withhold };
            placed(kind, vec![d.deployment])
        }
        InstallReport::PAYLOAD_TYPE => {
            let r = InstallReport::parse(env.payload()).map_err(bad)?;
            placed(EntryKind::Report, vec![r.deployment])
        }
        "application/vnd.in-toto+json" => {
            #[derive(serde::Deserialize)]
            struct Peek {
                #[serde(rename = "predicateType")]
                predicate_type: String,
            }
            let peek: Peek = serde_json::from_slice(env.payload())
                .map_err(|e| Rejection(format!("the entry's body is refused: malformed payload: {e}")))?;
            match peek.predicate_type.as_str() {
                <EndUseAttestation as crate::statements::Predicate>::PREDICATE_TYPE => {
                    let s = InTotoStatement::<EndUseAttestation>::parse(env.payload()).map_err(bad)?;
                    let mut subjects = vec![s.predicate.customer.clone()];
                    let deployments: BTreeSet<&str> = s.deployments().collect();
                    if deployments.len() < MAX_SUBJECTS {
                        subjects.extend(deployments.into_iter().map(str::to_owned));
                    }
                    placed(EntryKind::Attestation, subjects)
                }
                <FieldVerification as crate::statements::Predicate>::PREDICATE_TYPE => {
                    let s = InTotoStatement::<FieldVerification>::parse(env.payload()).map_err(bad)?;
                    placed(EntryKind::Verification, vec![s.predicate.deployment])
                }
                other => reject(format!("the entry's body is refused: unknown predicate type {other:?}")),
            }
        }
        other => reject(format!("the entry's body is refused: {other:?} is not a ledger entry's payload type")),
    }
}

/// The root document of a root envelope, without checking it (for display).
pub fn peek_root(body: &[u8]) -> Option<RootMetadata> {
    RootMetadata::parse(envelope::Envelope::parse(body).ok()?.payload()).ok()
}
