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

mod actions;
mod classify;
mod governance;
mod identity;
mod rejection;

use std::collections::BTreeMap;

pub use governance::{
    ACTION_CLOCK_SKEW, ACTION_WINDOW, AttestationFact, CHECKIN_WINDOW, Case, CaseMove, Customer, DECISION_SKEW,
    DecisionFact, Deployment, Facts, LOGGING_PERIOD, MAX_DECISIONS_PER_PERIOD, PROPOSAL_LIFETIME, Proposal,
    ProposalKind, Release, VerificationFact, legal_move, outcome_name, reasons_digest,
};

pub use classify::{Placement, classify, peek_root, placement};
pub use rejection::Rejection;
pub(crate) use rejection::reject;

use crate::digest::{Sha256Digest, Timestamp};
use crate::envelope::{self, Envelope};
use crate::keys::{KeyId, KeySet, PublicKey};
use crate::ledger::{EntryHeader, EntryKind, Keyring};
use crate::root::{RootPolicy, TrustedRoot};
use crate::statements::{
    CheckIn, Decision, EndUseAttestation, FieldVerification, IdentityRole, InTotoStatement, InstallReport,
    MisuseSignal, Payload, ReleaseManifest, RestoreLoss, Verdict,
};

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

/// A root entry of the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootEntry {
    /// Its ledger index.
    pub index: u64,
    /// The root version it carries.
    pub version: u64,
}

/// A restore's accepted loss, as the ledger records it
/// ([`RestoreLoss`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LossFact {
    /// The record's ledger index (the restored backup's size).
    pub index: u64,
    /// The largest size a witness had cosigned: entries `index..witnessed_size`
    /// of the old history are lost.
    pub witnessed_size: u64,
    /// That size's root hash, when known.
    pub witnessed_root: Option<Sha256Digest>,
    /// The operator's reason.
    pub why: String,
}

/// The state folded from the ledger.
#[derive(Debug, Clone, Default)]
pub struct State {
    root: Option<TrustedRoot>,
    /// Every root entry, oldest first.
    roots: Vec<RootEntry>,
    /// Identities by the SHA-256 of their certificate's DER bytes.
    identities: BTreeMap<Sha256Digest, Identity>,
    /// Active signing keys, to the certificate they came with.
    keys: BTreeMap<KeyId, Sha256Digest>,
    /// Every signing key ever registered, to its certificate (revoked too).
    key_history: BTreeMap<KeyId, Sha256Digest>,
    notes: u64,
    /// The losses restores recorded (ledger format 3), oldest first.
    losses: Vec<LossFact>,
    size: u64,
    last_time: Option<Timestamp>,
    /// The payload digest of every admin action recorded, to its index: an
    /// action is recorded once.
    actions: BTreeMap<Sha256Digest, u64>,
    gov: governance::Facts,
    /// What checks each header's subject tags against its body's subjects.
    keyring: Keyring,
}

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
            Ok(_) => reject(Rejection::Malformed, "the entry's subject tags must be those of the ids its body names"),
            Err(subject) => reject(
                Rejection::Unavailable,
                format!("no subject key for {subject}: the entry's subject tags cannot be checked"),
            ),
        }
    }

    /// The current root, once the first root entry is folded.
    pub fn root(&self) -> Option<&TrustedRoot> {
        self.root.as_ref()
    }

    /// Every root entry, oldest first.
    pub fn root_entries(&self) -> &[RootEntry] {
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

    /// Whether an active engineer identity with subject id `courier` has
    /// `deployment`'s customer in scope: who may carry that deployment's
    /// check-ins and reports from an air-gapped site (docs/offline.md), and
    /// what replay requires of a decision's `courier`.
    pub fn may_carry(&self, courier: &str, deployment: &str) -> bool {
        let Some(customer) = self.deployment(deployment).map(|d| d.customer.as_str()) else { return false };
        self.identities.values().any(|i| {
            i.role == IdentityRole::Engineer
                && i.subject == courier
                && i.revoked.is_none()
                && i.scope.as_ref().is_none_or(|scope| scope.iter().any(|c| c == customer))
        })
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

    /// The losses restores recorded, oldest first.
    pub fn losses(&self) -> &[LossFact] {
        &self.losses
    }

    /// A restore's accepted loss: signed by the root's decision key, as
    /// the entry right after the restored ones, dated no later than its
    /// ledger time.
    fn apply_loss(&mut self, index: u64, time: Timestamp, body: &[u8]) -> Result<(), Rejection> {
        let root = self.root.as_ref().ok_or_else(|| Rejection::Precondition("no root yet".into()))?;
        let keys = root.decision_keys().map_err(|e| Rejection::Precondition(e.to_string()))?;
        let loss =
            envelope::verify::<RestoreLoss>(body, &keys).map_err(|e| Rejection::envelope("the recorded loss", e))?;
        if loss.restored_size != index {
            return reject(
                Rejection::Precondition,
                format!(
                    "a restore's loss is recorded right after the restored entries: it names size {}, but it is \
                     entry {index}",
                    loss.restored_size
                ),
            );
        }
        if loss.issued_at > time {
            return reject(Rejection::Precondition, "the recorded loss is dated after its ledger time");
        }
        self.notes += 1;
        self.losses.push(LossFact {
            index,
            witnessed_size: loss.witnessed_size,
            witnessed_root: loss.witnessed_root,
            why: loss.why.clone(),
        });
        Ok(())
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

    /// Entry `index` comes next, and its ledger time does not go backwards.
    fn check_order(&self, index: u64, header: &EntryHeader) -> Result<(), Rejection> {
        if index != self.size {
            return reject(
                Rejection::Precondition,
                format!("entry {index} is out of order: {} entries folded", self.size),
            );
        }
        if self.last_time.is_some_and(|t| header.time < t) {
            return reject(Rejection::Precondition, format!("entry {index}'s ledger time goes backwards"));
        }
        Ok(())
    }

    /// Validates `header` + `body` as entry `index` against the state so far
    /// and applies it. Ledger time never goes backwards.
    pub fn apply(&mut self, index: u64, header: &EntryHeader, body: &[u8]) -> Result<(), Rejection> {
        self.check_order(index, header)?;
        if self.root.is_none() && header.kind != EntryKind::Root {
            return reject(Rejection::Precondition, "the first entry of a ledger must be its root");
        }
        let placement = classify(body)?;
        if placement.kind != header.kind {
            return reject(
                Rejection::Malformed,
                format!("the body is a {} entry, but the header says {}", placement.kind, header.kind),
            );
        }
        if placement.actor != header.actor {
            return reject(Rejection::Malformed, "the entry's actor must be the key that signed its body");
        }
        self.check_tags(header, &placement.subjects)?;
        self.apply_entry(index, header, body)?;
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
        self.check_order(index, header)?;
        let kind = if decision.verdict == Verdict::Grant { EntryKind::Grant } else { EntryKind::Withhold };
        if header.kind != kind || header.actor.is_none() {
            return reject(Rejection::Malformed, "the decision's header does not match it");
        }
        self.check_tags(header, std::slice::from_ref(&decision.deployment))?;
        if checkin.deployment != decision.deployment || checkin.bytes() != decision.checkin.as_slice() {
            return reject(Rejection::Malformed, "the decision answers another check-in");
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
                .map_err(|e| Rejection::Precondition(format!("the genesis root is refused: {e}")))?,
            Some(current) => current
                .rotate(body)
                .map_err(|e| Rejection::Precondition(format!("the root rotation is refused: {e}")))?,
        };
        self.roots.push(RootEntry { index, version: next.version() });
        self.root = Some(next);
        Ok(())
    }

    /// The admin keys of the current root, any one of which may sign an
    /// action; the set's threshold is the approvals a heavy action needs.
    pub fn admin_keys(&self) -> Result<KeySet, Rejection> {
        let root = self.root.as_ref().ok_or_else(|| Rejection::Precondition("no root yet".into()))?;
        root.admin_keys().map_err(|e| Rejection::Precondition(e.to_string()))
    }

    fn any_admin(&self) -> Result<KeySet, Rejection> {
        let admins = self.admin_keys()?;
        KeySet::new(admins.keys().map(|(_, k)| *k), 1).map_err(|e| Rejection::Precondition(e.to_string()))
    }

    /// The single key, registered to an active identity in one of `roles`,
    /// that must have signed an entry whose actor is `actor`.
    pub(crate) fn registered_signer(
        &self,
        actor: Option<KeyId>,
        roles: &[IdentityRole],
        what: &str,
    ) -> Result<(&Identity, KeySet), Rejection> {
        let Some(actor) = actor else {
            return reject(Rejection::Malformed, format!("{what} names its signer as actor"));
        };
        let identity = match self.identity_of_key(&actor) {
            Some(identity) => identity,
            None if self.any_identity_of_key(&actor).is_some() => {
                return reject(Rejection::Revoked, format!("{what} is signed by a revoked key"));
            }
            None => return reject(Rejection::NotRegistered, format!("{what} is signed by a key no one registered")),
        };
        if !roles.contains(&identity.role) {
            return reject(
                Rejection::NotAllowed,
                format!(
                    "{what} must be signed by a registered {} key",
                    roles.iter().map(IdentityRole::as_str).collect::<Vec<_>>().join(" or ")
                ),
            );
        }
        let keys = KeySet::new([identity.signing_key], 1).map_err(|e| Rejection::Precondition(e.to_string()))?;
        Ok((identity, keys))
    }

    /// Applies an entry whose header matches its body: one arm per entry
    /// kind, so a new kind does not compile until it is folded.
    fn apply_entry(&mut self, index: u64, header: &EntryHeader, body: &[u8]) -> Result<(), Rejection> {
        let t = header.time;
        match header.kind {
            EntryKind::Release => {
                let root = self.root.as_ref().ok_or_else(|| Rejection::Precondition("no root yet".into()))?;
                let keys = root.release_keys().map_err(|e| Rejection::Precondition(e.to_string()))?;
                let manifest = envelope::verify::<ReleaseManifest>(body, &keys)
                    .map_err(|e| Rejection::envelope("the release", e))?;
                self.gov.apply_release(index, t, manifest)
            }
            EntryKind::Attestation => {
                let (identity, keys) =
                    self.registered_signer(header.actor, &[IdentityRole::Customer], "an end-use attestation")?;
                let customer_of_key = identity.subject.clone();
                let statement = envelope::verify::<InTotoStatement<EndUseAttestation>>(body, &keys)
                    .map_err(|e| Rejection::envelope("the end-use attestation", e))?;
                self.gov.apply_attestation(index, t, &customer_of_key, header.actor, statement)
            }
            EntryKind::Verification => {
                let (identity, keys) =
                    self.registered_signer(header.actor, &[IdentityRole::Engineer], "a field verification")?;
                let scope = identity.scope.clone();
                let engineer = identity.subject.clone();
                let statement = envelope::verify::<InTotoStatement<FieldVerification>>(body, &keys)
                    .map_err(|e| Rejection::envelope("the field verification", e))?;
                // A scoped engineer verifies only its customers' deployments.
                let deployment = &statement.predicate.deployment;
                if let (Some(scope), Some(d)) = (&scope, self.deployment(deployment))
                    && !scope.contains(&d.customer)
                {
                    return Err(Rejection::NotAllowed(format!(
                        "engineer {engineer}'s scope does not hold customer {}, whose deployment {deployment} this \
                         verifies",
                        d.customer
                    )));
                }
                self.gov.apply_verification(index, t, header.actor, statement)
            }
            EntryKind::Signal => {
                // The header names no actor (a customer reading headers must
                // not learn who reported); the signer comes from the body.
                let signer = Envelope::parse(body).ok().and_then(|e| e.first_signer());
                let (_, keys) = self.registered_signer(
                    signer,
                    &[IdentityRole::Engineer, IdentityRole::Auditor, IdentityRole::Reporter],
                    "a misuse signal",
                )?;
                let signal = envelope::verify::<MisuseSignal>(body, &keys)
                    .map_err(|e| Rejection::envelope("the misuse signal", e))?;
                self.gov.apply_signal(index, t, signer, &signal)
            }
            EntryKind::Grant | EntryKind::Withhold => {
                let root = self.root.as_ref().ok_or_else(|| Rejection::Precondition("no root yet".into()))?;
                let keys = root.decision_keys().map_err(|e| Rejection::Precondition(e.to_string()))?;
                let decision =
                    envelope::verify::<Decision>(body, &keys).map_err(|e| Rejection::envelope("the decision", e))?;
                let checkin = self.verify_checkin(&decision.checkin)?;
                if checkin.deployment != decision.deployment {
                    return reject(Rejection::NotAllowed, "the decision answers another deployment's check-in");
                }
                self.gov.apply_decision(index, t, &decision, &checkin)
            }
            EntryKind::Report => {
                let (identity, keys) =
                    self.registered_signer(header.actor, &[IdentityRole::Deployment], "an install report")?;
                let device = identity.subject.clone();
                let report = envelope::verify::<InstallReport>(body, &keys)
                    .map_err(|e| Rejection::envelope("the install report", e))?;
                if report.deployment != device {
                    return reject(
                        Rejection::NotAllowed,
                        "an install report is signed by the deployment it reports on",
                    );
                }
                self.gov.apply_report(index, &report)
            }
            EntryKind::Note if Envelope::parse(body).is_ok_and(|e| e.payload_type() == RestoreLoss::PAYLOAD_TYPE) => {
                self.apply_loss(index, t, body)
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
            | EntryKind::Licence => self.apply_action(index, header, body),
            EntryKind::Root => self.apply_root(index, header, body),
        }
    }

    /// Verifies a check-in envelope against the key registered to the
    /// deployment it names.
    pub fn verify_checkin(&self, bytes: &[u8]) -> Result<SignedCheckIn, Rejection> {
        let env = Envelope::parse(bytes).map_err(|e| Rejection::Malformed(format!("the check-in is refused: {e}")))?;
        let claimed =
            CheckIn::parse(env.payload()).map_err(|e| Rejection::Malformed(format!("the check-in is refused: {e}")))?;
        if self.gov.deployment(&claimed.deployment).is_none() {
            return reject(Rejection::NotFound, format!("deployment {} is not registered", claimed.deployment));
        }
        let signer = env.first_signer();
        let (identity, keys) = self.registered_signer(signer, &[IdentityRole::Deployment], "a check-in")?;
        if identity.subject != claimed.deployment {
            return reject(Rejection::NotAllowed, "a check-in is signed by the deployment it names");
        }
        let verified =
            envelope::verify_parsed::<CheckIn>(env, &keys).map_err(|e| Rejection::envelope("the check-in", e))?;
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
