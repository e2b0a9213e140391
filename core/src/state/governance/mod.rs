//! The governance facts of the state: customers, deployments, contracts,
//! releases, attestations, verifications, cases, suspensions, proposals,
//! waivers, security-fix approvals, denied parties, licences, decisions.
//! Each `apply_*` and admin action is called by [`super::State`] after the
//! entry's signature has been checked against the key that must have signed
//! it. This file holds the facts' types; their views, the entries of
//! evidence (releases, attestations, verifications, signals, decisions,
//! reports), the admin actions and the proposals with their approvals (dual
//! control) are in the files of this folder.

mod actions;
mod evidence;
mod proposals;
mod views;

use std::collections::{BTreeMap, BTreeSet};

use crate::digest::{Sha256Digest, Timestamp};
use crate::keys::KeyId;
use crate::statements::{
    CaseState, Contract, Decision, DeniedParty, Determination, EndUseAttestation, FieldVerification, InstallOutcome,
    Licence, ReleaseManifest, Site, SuspensionLevel, SuspensionTarget, Verdict,
};

/// How long before its ledger time a decision may have been made, in seconds.
pub const DECISION_SKEW: i64 = 60;
/// How far from the decision's time the check-in it answers may be dated, in
/// seconds (the agent sets its clock from the server's answers).
pub const CHECKIN_WINDOW: i64 = 86_400;
/// How long before its entry's ledger time an admin action may be issued,
/// in seconds. An officer signs an action and sends it at once (the first
/// admin's registration waits at most for `certify`, the signature and
/// `admit`), so a day is room for slow hands, while an action kept back to
/// be recorded later is refused.
pub const ACTION_WINDOW: i64 = 86_400;
/// How far after its entry's ledger time an admin action may be dated, in
/// seconds. Nothing but a clock running ahead of the server's dates an
/// action in the future, and five minutes covers an unsynchronised office
/// clock; a day (as before) let an action pre-signed a day ahead stay
/// usable for two days.
pub const ACTION_CLOCK_SKEW: i64 = 300;
/// How long a proposal waits for its approvals, in seconds.
pub const PROPOSAL_LIFETIME: i64 = 30 * 86_400;
/// The period over which a deployment's logged decisions are bounded, in
/// seconds.
pub const LOGGING_PERIOD: i64 = 3_600;
/// The most decisions logged for one deployment within [`LOGGING_PERIOD`].
/// A device's check-ins decide what is logged (its software digests and
/// configuration change a withhold's reasons), so without a bound one device
/// could grow the ledger without end. A deployment's verdict changes when
/// its facts change (an attestation, a verification, a suspension, a
/// release), a handful of times a day; beyond the bound a check-in gets the
/// standing decision until the period has room again. A grant of a release
/// never granted to the deployment before is logged all the same: those are
/// bounded by the releases the vendor publishes, not by the device.
pub const MAX_DECISIONS_PER_PERIOD: usize = 12;

/// A registered customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    /// Its id.
    pub id: String,
    /// Its legal name.
    pub legal_name: String,
    /// Its country.
    pub country: String,
    /// The suspension in force for all its deployments.
    pub suspension: SuspensionLevel,
}

/// A registered deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// Its id.
    pub id: String,
    /// Its customer.
    pub customer: String,
    /// Its product line.
    pub product: String,
    /// Its registered site.
    pub site: Site,
    /// The suspension in force for it alone.
    pub suspension: SuspensionLevel,
    /// The version the ledger says it runs: the one it was provisioned with
    /// (signed by an admin at registration), then the version of each
    /// logged install report whose outcome is `installed`. Never a claim.
    pub installed_version: semver::Version,
}

/// A published release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Its ledger index.
    pub index: u64,
    /// SHA-256 of its manifest's payload bytes.
    pub digest: Sha256Digest,
    /// The manifest.
    pub manifest: ReleaseManifest,
    /// The release keys whose signatures verified, in key id order.
    pub signers: Vec<KeyId>,
}

/// An end-use attestation as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationFact {
    /// Its ledger index.
    pub index: u64,
    /// Its ledger time.
    pub time: Timestamp,
    /// SHA-256 of its payload bytes (what verifications reference).
    pub digest: Sha256Digest,
    /// The customer key that signed it.
    pub signer: KeyId,
    /// The deployments it covers.
    pub deployments: BTreeSet<String>,
    /// What it attests.
    pub predicate: EndUseAttestation,
}

/// A field verification as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationFact {
    /// Its ledger index.
    pub index: u64,
    /// Its ledger time.
    pub time: Timestamp,
    /// The engineer key that signed it.
    pub signer: KeyId,
    /// What was verified.
    pub predicate: FieldVerification,
}

/// A misuse case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// Its id (`case-<index of the signal>`).
    pub id: String,
    /// The customer it concerns.
    pub customer: String,
    /// The deployment, if the signal named one.
    pub deployment: Option<String>,
    /// Its state.
    pub state: CaseState,
    /// The determination, once made.
    pub determination: Option<Determination>,
    /// The ledger time of the signal that opened it.
    pub opened_at: Timestamp,
    /// The key that signed the signal (an engineer's or an auditor's): who
    /// may see it is `covenant_core::visibility`'s rule for signals.
    pub reporter: Option<KeyId>,
    /// Every move that took effect, oldest first.
    pub moves: Vec<CaseMove>,
}

/// A move of a misuse case that took effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseMove {
    /// The entry that made it take effect (the move, or the approval that
    /// reached the threshold).
    pub index: u64,
    /// That entry's ledger time.
    pub time: Timestamp,
    /// The state it left.
    pub from: CaseState,
    /// The state it entered.
    pub to: CaseState,
    /// The determination recorded with it (a move to determined).
    pub determination: Option<Determination>,
}

/// What a proposal would do once approved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProposalKind {
    /// Set a customer's first contract, or the next version of a contract
    /// that relaxes the one in force.
    Contract {
        /// The new version.
        contract: Contract,
        /// What it relaxes, in words.
        relaxes: Vec<String>,
    },
    /// Set a suspension level.
    Suspension {
        /// Whom.
        target: SuspensionTarget,
        /// The level.
        level: SuspensionLevel,
        /// The level in force when it was proposed: approving it once the
        /// level has changed is refused (the proposal no longer says what
        /// it would do).
        from: SuspensionLevel,
    },
    /// Waive a condition for a deployment until a time.
    Waiver {
        /// The deployment.
        deployment: String,
        /// The condition's name.
        condition: String,
        /// Until when.
        until: Timestamp,
    },
    /// Let a security fix through under L2.
    SecurityFix {
        /// The deployment.
        deployment: String,
        /// The release's digest.
        release: Sha256Digest,
    },
    /// Record a licence for the first time, or again with wider terms.
    Licence {
        /// The licence as it would be recorded.
        licence: Licence,
        /// The licence in force when it was proposed (none: not recorded
        /// yet): approving it once the licence has changed is refused.
        from: Option<Licence>,
        /// What it relaxes, in words.
        relaxes: Vec<String>,
    },
    /// Move a case to a state that ends it (closed) or takes it back
    /// (determined → investigating): either lifts `no_open_case`.
    CaseMove {
        /// The case.
        case: String,
        /// The state it moves to.
        to: CaseState,
        /// The state it was in when proposed: approving it once the case
        /// has moved is refused.
        from: CaseState,
        /// Its determination when proposed: approving it once that changed
        /// (a case taken back and determined again) is refused too.
        from_determination: Option<Determination>,
    },
    /// Register a deployment of a held customer ([`Facts::hold_on`]), or
    /// one its customer's contract would cover at once: it could be held
    /// hardware under a new id, escaping what holds it, with a baseline of
    /// one admin's choosing.
    Deployment {
        /// The deployment as it would be registered.
        deployment: Deployment,
        /// Why it needs the threshold: what holds the customer, or the
        /// contract that would cover it, in words.
        held: String,
    },
    /// Register an identity whose key signs facts the conditions read (a
    /// customer, engineer or auditor key), or a device key of a held
    /// customer's deployment. [`super::State`] registers it once approved.
    Identity {
        /// The identity as it would be registered (`issued_at_index` is the
        /// proposal's; it becomes the approval's).
        identity: super::Identity,
        /// SHA-256 of its certificate's DER bytes.
        certificate_sha256: Sha256Digest,
        /// Why it needs the threshold, in words.
        why: String,
    },
    /// Revoke another admin's identity: one admin alone would leave the
    /// other's approvals void. [`super::State`] revokes it once approved.
    Revocation {
        /// SHA-256 of the admin's certificate's DER bytes.
        certificate_sha256: Sha256Digest,
        /// The compromise time the revocation carries, if any.
        compromised_since: Option<Timestamp>,
    },
    /// Void what a revoked key signed at or after a time (its attestations
    /// or verifications), which can bring back an older entry that passes.
    /// The key was cut off at once; [`super::State`] records the compromise
    /// once approved.
    Compromise {
        /// SHA-256 of the revoked identity's certificate's DER bytes.
        certificate_sha256: Sha256Digest,
        /// Entries signed at or after this ledger time stop counting.
        since: Timestamp,
        /// How many recorded attestations and verifications it voids.
        voids: usize,
    },
}

/// A proposal awaiting or having reached its approvals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// Its ledger index.
    pub index: u64,
    /// Its ledger time.
    pub at: Timestamp,
    /// What it does.
    pub kind: ProposalKind,
    /// The admin key that proposed it.
    pub proposer: KeyId,
    /// Why, in the proposer's words (the action's `why`).
    pub why: String,
    /// The distinct admin keys that signed it or approved it.
    pub approvals: BTreeSet<KeyId>,
    /// Whether it took effect.
    pub in_force: bool,
}

/// A logged decision, as the state keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionFact {
    /// Its ledger index.
    pub index: u64,
    /// Grant or withhold.
    pub verdict: Verdict,
    /// With a grant: the release.
    pub release: Option<Sha256Digest>,
    /// When it was issued.
    pub issued_at: Timestamp,
    /// With a grant: when it expires.
    pub expires_at: Option<Timestamp>,
    /// [`reasons_digest`] of the decision: what a withhold says.
    pub reasons: Sha256Digest,
    /// The conditions the decision found unmet, with their reasons; kept for
    /// the standing (newest) decision only, empty once a newer one is logged.
    pub unmet: Vec<crate::statements::ConditionResult>,
    /// The exact check-in envelope the decision answered.
    pub checkin: Vec<u8>,
}

/// A digest of what a decision says besides its verdict and release: its
/// conditions, what it withholds and why, the suspension and the contract.
/// Two withholds with the same digest say the same thing.
pub fn reasons_digest(d: &Decision) -> Sha256Digest {
    let said = (&d.conditions, &d.withheld_above, d.suspension, &d.contract);
    Sha256Digest::of(&serde_json::to_vec(&said).unwrap_or_default())
}

/// The governance facts folded so far.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    customers: BTreeMap<String, Customer>,
    deployments: BTreeMap<String, Deployment>,
    /// The newest version of each customer's contract.
    contracts: BTreeMap<String, Contract>,
    releases: BTreeMap<Sha256Digest, Release>,
    /// (product, version) → release digest.
    versions: BTreeMap<(String, semver::Version), Sha256Digest>,
    attestations: Vec<AttestationFact>,
    /// deployment → indexes into `attestations`, oldest first.
    attested: BTreeMap<String, Vec<usize>>,
    attestation_digests: BTreeMap<Sha256Digest, usize>,
    /// deployment → its verifications, oldest first.
    verifications: BTreeMap<String, Vec<VerificationFact>>,
    cases: BTreeMap<String, Case>,
    proposals: BTreeMap<Sha256Digest, Proposal>,
    /// (deployment, condition) → waived until.
    waivers: BTreeMap<(String, String), Timestamp>,
    /// (deployment, release) approved under L2.
    security_fixes: BTreeSet<(String, Sha256Digest)>,
    denied: Vec<DeniedParty>,
    licences: BTreeMap<String, Licence>,
    /// deployment → its decisions, oldest first.
    decisions: BTreeMap<String, Vec<DecisionFact>>,
    last_decision_time: Option<Timestamp>,
    /// (deployment, nonce) of every check-in a logged decision answered.
    answered: BTreeSet<(String, Sha256Digest)>,
    reports: u64,
    /// The payload digest of every install report recorded, to its index.
    report_digests: BTreeMap<Sha256Digest, u64>,
    /// grant index → the outcomes reported for it, with the report's index:
    /// each outcome of a grant is recorded once, so reports are bounded by
    /// the decisions (themselves bounded per period).
    report_outcomes: BTreeMap<u64, Vec<(InstallOutcome, u64)>>,
    /// grant index → the version the ledger recorded before its
    /// `installed` report (what a `rolled-back` report returns to).
    installed_from: BTreeMap<u64, semver::Version>,
}

/// One admin action being folded: where and when, who signed it and what
/// counts as an approval.
#[derive(Debug, Clone, Copy)]
pub(in crate::state) struct Act<'a> {
    /// The entry's ledger index.
    pub(in crate::state) index: u64,
    /// The entry's ledger time.
    pub(in crate::state) time: Timestamp,
    /// The admin key that signed the action.
    pub(in crate::state) actor: KeyId,
    /// The action's payload digest (how approvals name a proposal).
    pub(in crate::state) digest: Sha256Digest,
    /// Approvals a heavy action needs.
    pub(in crate::state) threshold: u32,
    /// The action's `why`.
    pub(in crate::state) why: &'a str,
    /// Admin keys of the current root that are not revoked.
    pub(in crate::state) valid_admins: &'a BTreeSet<KeyId>,
}

/// An install outcome as its payload spells it.
pub fn outcome_name(o: InstallOutcome) -> &'static str {
    match o {
        InstallOutcome::Installed => "installed",
        InstallOutcome::Failed => "failed",
        InstallOutcome::RolledBack => "rolled-back",
    }
}

/// The legal moves of a misuse case (`docs/policy.md`, "Misuse cases").
pub fn legal_move(from: CaseState, determination: Option<Determination>, to: CaseState) -> bool {
    use CaseState as S;
    use Determination as D;
    matches!(
        (from, determination, to),
        (S::Received, _, S::Triaged)
            | (S::Triaged, _, S::Investigating | S::Closed)
            | (S::Investigating, _, S::Determined)
            | (S::Determined, Some(D::Unsubstantiated), S::Closed)
            | (S::Determined, Some(D::Inconclusive), S::Closed | S::Investigating)
            | (S::Determined, Some(D::Substantiated), S::Remediation)
            | (S::Remediation, _, S::Verified)
            | (S::Verified, _, S::Closed)
    )
}
