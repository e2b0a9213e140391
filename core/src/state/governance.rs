//! The governance facts of the state: customers, deployments, contracts,
//! releases, attestations, verifications, cases, suspensions, proposals,
//! waivers, security-fix approvals, denied parties, licences, decisions.
//! Each `apply_*` is called by [`super::State`] after the entry's signature
//! has been checked against the key that must have signed it.

use std::collections::{BTreeMap, BTreeSet};

use super::{Rejection, reject};
use crate::digest::{Sha256Digest, Timestamp};
use crate::envelope::Verified;
use crate::keys::KeyId;
use crate::statements::{
    ActionKind, CaseState, Contract, Decision, DeniedParty, Determination, EndUseAttestation, FieldVerification,
    InTotoStatement, InstallOutcome, InstallReport, Licence, MisuseSignal, ReleaseClass, ReleaseManifest, Site,
    SuspensionLevel, SuspensionTarget, Verdict, contract_relaxations, licence_relaxations,
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

/// Who signed an admin action and what counts as an approval.
#[derive(Debug)]
pub(super) struct Approver<'a> {
    /// The admin key that signed the action.
    pub(super) actor: KeyId,
    /// The action's payload digest (how approvals name a proposal).
    pub(super) digest: Sha256Digest,
    /// Approvals a heavy action needs.
    pub(super) threshold: u32,
    /// Admin keys of the current root that are not revoked.
    pub(super) valid_admins: &'a BTreeSet<KeyId>,
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

impl Facts {
    /// A registered customer.
    pub fn customer(&self, id: &str) -> Option<&Customer> {
        self.customers.get(id)
    }

    /// A registered deployment.
    pub fn deployment(&self, id: &str) -> Option<&Deployment> {
        self.deployments.get(id)
    }

    /// Every registered customer, by id.
    pub fn customers(&self) -> impl Iterator<Item = &Customer> {
        self.customers.values()
    }

    /// Every registered deployment, by id.
    pub fn deployments(&self) -> impl Iterator<Item = &Deployment> {
        self.deployments.values()
    }

    /// The newest version of a customer's contract.
    pub fn contract_of(&self, customer: &str) -> Option<&Contract> {
        self.contracts.get(customer)
    }

    /// A release by digest.
    pub fn release(&self, digest: &Sha256Digest) -> Option<&Release> {
        self.releases.get(digest)
    }

    /// A product's release of one version.
    pub fn release_of(&self, product: &str, version: &semver::Version) -> Option<&Release> {
        self.versions.get(&(product.to_owned(), version.clone())).and_then(|d| self.releases.get(d))
    }

    /// A product's releases newer than `version`, newest first.
    pub fn releases_newer(&self, product: &str, version: &semver::Version) -> Vec<&Release> {
        let mut newer: Vec<&Release> = self
            .versions
            .range((product.to_owned(), version.clone())..)
            .take_while(|((p, _), _)| p == product)
            .filter(|((_, v), _)| v > version)
            .filter_map(|(_, d)| self.releases.get(d))
            .collect();
        newer.reverse();
        newer
    }

    /// The attestations covering a deployment, newest first.
    pub fn attestations_of(&self, deployment: &str) -> impl Iterator<Item = &AttestationFact> {
        self.attested.get(deployment).into_iter().flat_map(|v| v.iter().rev()).filter_map(|i| self.attestations.get(*i))
    }

    /// The verifications of a deployment, newest first.
    pub fn verifications_of(&self, deployment: &str) -> impl Iterator<Item = &VerificationFact> {
        self.verifications.get(deployment).into_iter().flat_map(|v| v.iter().rev())
    }

    /// Every case.
    pub fn cases(&self) -> impl Iterator<Item = &Case> {
        self.cases.values()
    }

    /// A case by id.
    pub fn case(&self, id: &str) -> Option<&Case> {
        self.cases.get(id)
    }

    /// A proposal by the digest of its payload.
    pub fn proposal(&self, digest: &Sha256Digest) -> Option<&Proposal> {
        self.proposals.get(digest)
    }

    /// Until when a condition is waived for a deployment (approved waivers).
    pub fn waiver(&self, deployment: &str, condition: &str) -> Option<Timestamp> {
        self.waivers.get(&(deployment.to_owned(), condition.to_owned())).copied()
    }

    /// Whether a security fix was approved for a deployment under L2.
    pub fn security_fix_approved(&self, deployment: &str, release: &Sha256Digest) -> bool {
        self.security_fixes.contains(&(deployment.to_owned(), *release))
    }

    /// The entries of a denied-party list.
    pub fn denied_parties<'a>(&'a self, list: &'a str) -> impl Iterator<Item = &'a DeniedParty> {
        self.denied.iter().filter(move |p| p.list == list)
    }

    /// An export licence by id.
    pub fn licence(&self, id: &str) -> Option<&Licence> {
        self.licences.get(id)
    }

    /// A deployment's logged decisions, oldest first.
    pub fn decisions_of(&self, deployment: &str) -> &[DecisionFact] {
        self.decisions.get(deployment).map(Vec::as_slice).unwrap_or_default()
    }

    /// Install reports folded.
    pub fn reports(&self) -> u64 {
        self.reports
    }

    /// The ledger index of an install report already recorded, by the
    /// SHA-256 of its payload bytes.
    pub fn report_index(&self, payload_digest: &Sha256Digest) -> Option<u64> {
        self.report_digests.get(payload_digest).copied()
    }

    /// The index of the report of `outcome` for the grant at `grant`, if
    /// one was recorded.
    pub fn report_of(&self, grant: u64, outcome: InstallOutcome) -> Option<u64> {
        self.report_outcomes.get(&grant).and_then(|v| v.iter().find(|(o, _)| *o == outcome)).map(|(_, i)| *i)
    }

    /// How many decisions were logged for a deployment in the
    /// [`LOGGING_PERIOD`] up to `now` (by their issue time).
    pub fn decisions_in_period(&self, deployment: &str, now: Timestamp) -> usize {
        let since = now.plus_seconds(-LOGGING_PERIOD);
        self.decisions_of(deployment).iter().rev().take_while(|d| d.issued_at > since).count()
    }

    /// The suspension in force for a deployment: the higher of its
    /// customer's and its own.
    pub fn effective_suspension(&self, deployment: &Deployment) -> SuspensionLevel {
        let customer = self.customers.get(&deployment.customer).map(|c| c.suspension).unwrap_or_default();
        customer.max(deployment.suspension)
    }

    /// What holds a customer, in words, if anything does: a suspension at
    /// any level of the customer or of one of its deployments, or a case
    /// that is not closed naming the customer (with or without one of its
    /// deployments). While a customer is held, what could carry its held
    /// systems out from under the hold (a new deployment, a device key)
    /// needs the admin threshold.
    pub fn hold_on(&self, customer: &str) -> Option<String> {
        if let Some(c) = self.customers.get(customer)
            && c.suspension != SuspensionLevel::None
        {
            return Some(format!("customer {customer} is under suspension {}", c.suspension));
        }
        let suspended = self
            .deployments
            .values()
            .find(|d| d.customer == customer && d.suspension != SuspensionLevel::None)
            .map(|d| format!("deployment {} is under suspension {}", d.id, d.suspension));
        suspended.or_else(|| {
            self.cases.values().find(|c| c.customer == customer && c.state != CaseState::Closed).map(|c| {
                if c.deployment.is_some() {
                    format!("case {} concerning one of its deployments is open", c.id)
                } else {
                    format!("case {} concerning the customer is open", c.id)
                }
            })
        })
    }

    /// How many recorded attestations and verifications `key` signed in
    /// entries at or after ledger time `since`: what a compromise since
    /// then would void.
    pub fn signed_since(&self, key: &KeyId, since: Timestamp) -> usize {
        let attestations = self.attestations.iter().filter(|a| a.signer == *key && a.time >= since).count();
        let verifications =
            self.verifications.values().flatten().filter(|v| v.signer == *key && v.time >= since).count();
        attestations + verifications
    }

    /// Records a proposal whose effect [`super::State`] applies (an
    /// identity's registration, revocation or compromise): the state checks
    /// [`Proposal::in_force`] afterwards.
    pub(super) fn propose_for_state(
        &mut self,
        index: u64,
        at: Timestamp,
        by: &Approver<'_>,
        kind: ProposalKind,
    ) -> Result<(), Rejection> {
        self.propose(index, at, by.actor, by.digest, kind, by.threshold)
    }

    fn suspension_of(&self, target: &SuspensionTarget) -> Result<SuspensionLevel, Rejection> {
        match target {
            SuspensionTarget::Customer(id) => self.customers.get(id).map(|c| c.suspension),
            SuspensionTarget::Deployment(id) => self.deployments.get(id).map(|d| d.suspension),
        }
        .ok_or_else(|| Rejection("the suspension names no registered customer or deployment".into()))
    }

    pub(super) fn apply_release(
        &mut self,
        index: u64,
        _time: Timestamp,
        manifest: Verified<ReleaseManifest>,
    ) -> Result<(), Rejection> {
        let key = (manifest.product.clone(), manifest.version.clone());
        if self.versions.contains_key(&key) {
            return reject(format!("{} {} is already published", manifest.product, manifest.version));
        }
        let digest = manifest.payload_digest();
        self.versions.insert(key, digest);
        self.releases.insert(digest, Release { index, digest, manifest: manifest.value().clone() });
        Ok(())
    }

    pub(super) fn apply_attestation(
        &mut self,
        index: u64,
        time: Timestamp,
        customer_of_key: &str,
        signer: Option<KeyId>,
        statement: Verified<InTotoStatement<EndUseAttestation>>,
    ) -> Result<(), Rejection> {
        let predicate = &statement.predicate;
        if !self.customers.contains_key(&predicate.customer) {
            return reject(format!("customer {} is not registered", predicate.customer));
        }
        if customer_of_key != predicate.customer {
            return reject(format!(
                "the attestation for customer {} is signed by a key of customer {customer_of_key}",
                predicate.customer
            ));
        }
        let deployments: BTreeSet<String> = statement.deployments().map(str::to_owned).collect();
        for d in &deployments {
            match self.deployments.get(d) {
                None => return reject(format!("deployment {d} is not registered")),
                Some(dep) if dep.customer != predicate.customer => {
                    return reject(format!("deployment {d} belongs to another customer"));
                }
                Some(_) => {}
            }
        }
        if predicate.valid_until <= time {
            return reject(format!("the attestation expired on {}", predicate.valid_until.date()));
        }
        let Some(signer) = signer else { return reject("an attestation names its signer") };
        if self.attestation_digests.contains_key(&statement.payload_digest()) {
            return reject("this attestation is already recorded; sign a new one to renew it");
        }
        let at = self.attestations.len();
        for d in &deployments {
            self.attested.entry(d.clone()).or_default().push(at);
        }
        self.attestation_digests.insert(statement.payload_digest(), at);
        self.attestations.push(AttestationFact {
            index,
            time,
            digest: statement.payload_digest(),
            signer,
            deployments,
            predicate: predicate.clone(),
        });
        Ok(())
    }

    pub(super) fn apply_verification(
        &mut self,
        index: u64,
        time: Timestamp,
        signer: Option<KeyId>,
        statement: Verified<InTotoStatement<FieldVerification>>,
    ) -> Result<(), Rejection> {
        let p = &statement.predicate;
        if !self.deployments.contains_key(&p.deployment) {
            return reject(format!("deployment {} is not registered", p.deployment));
        }
        let covers = self
            .attestation_digests
            .get(&p.attestation)
            .and_then(|i| self.attestations.get(*i))
            .is_some_and(|a| a.deployments.contains(&p.deployment));
        if !covers {
            return reject("the verification references no recorded attestation of this deployment");
        }
        if p.date > time {
            return reject("the verification is dated after its ledger time");
        }
        if self.verifications.get(&p.deployment).is_some_and(|vs| vs.iter().any(|v| v.predicate == *p)) {
            return reject("this verification is already recorded");
        }
        let Some(signer) = signer else { return reject("a verification names its signer") };
        self.verifications.entry(p.deployment.clone()).or_default().push(VerificationFact {
            index,
            time,
            signer,
            predicate: p.clone(),
        });
        Ok(())
    }

    pub(super) fn apply_signal(&mut self, index: u64, signal: &MisuseSignal) -> Result<(), Rejection> {
        let about = &signal.about;
        if !self.customers.contains_key(&about.customer) {
            return reject(format!("customer {} is not registered", about.customer));
        }
        if let Some(d) = &about.deployment
            && self.deployments.get(d).is_none_or(|dep| dep.customer != about.customer)
        {
            return reject(format!("deployment {d} is not a registered deployment of {}", about.customer));
        }
        let id = format!("case-{index}");
        self.cases.insert(
            id.clone(),
            Case {
                id,
                customer: about.customer.clone(),
                deployment: about.deployment.clone(),
                state: CaseState::Received,
                determination: None,
            },
        );
        Ok(())
    }

    pub(super) fn apply_decision(
        &mut self,
        index: u64,
        time: Timestamp,
        d: &Decision,
        checkin: &crate::statements::CheckIn,
    ) -> Result<(), Rejection> {
        if !self.deployments.contains_key(&d.deployment) {
            return reject(format!("deployment {} is not registered", d.deployment));
        }
        if self.last_decision_time.is_some_and(|t| d.issued_at < t) {
            return reject("a decision's time goes backwards along the ledger");
        }
        if d.issued_at > time || d.issued_at < time.plus_seconds(-DECISION_SKEW) {
            return reject(format!(
                "a decision is logged within {DECISION_SKEW} s of when it was made (issued {}, logged {time})",
                d.issued_at
            ));
        }
        if checkin.time < d.issued_at.plus_seconds(-CHECKIN_WINDOW)
            || checkin.time > d.issued_at.plus_seconds(CHECKIN_WINDOW)
        {
            return reject("the decision answers a check-in made more than a day from when it was decided");
        }
        if self.answered.contains(&(d.deployment.clone(), checkin.nonce)) {
            return reject("the decision answers a check-in that a logged decision already answered");
        }
        if let Some(r) = &d.release
            && !self.releases.contains_key(r)
        {
            return reject("the grant names a release that is not published");
        }
        self.last_decision_time = Some(d.issued_at);
        self.answered.insert((d.deployment.clone(), checkin.nonce));
        self.decisions.entry(d.deployment.clone()).or_default().push(DecisionFact {
            index,
            verdict: d.verdict,
            release: d.release,
            issued_at: d.issued_at,
            expires_at: d.expires_at,
            reasons: reasons_digest(d),
            checkin: d.checkin.clone(),
        });
        Ok(())
    }

    /// Records an install report: once (its payload digest), naming a
    /// grant to the deployment and that grant's version, starting from the
    /// version the ledger records. A grant has one outcome (`installed`,
    /// `failed` or `rolled-back`), or `installed` then `rolled-back`. An
    /// `installed` outcome sets the deployment's installed version (that
    /// its grant still stood is [`crate::policy::fold`]'s rule, which needs
    /// the policy); a `rolled-back` after it returns the version to the one
    /// before that grant, so a device cannot keep a baseline it says it
    /// left.
    pub(super) fn apply_report(&mut self, index: u64, report: &Verified<InstallReport>) -> Result<(), Rejection> {
        let digest = report.payload_digest();
        let r: &InstallReport = report;
        if let Some(first) = self.report_digests.get(&digest) {
            return reject(format!("this install report is already recorded (entry {first})"));
        }
        let Some(dep) = self.deployments.get(&r.deployment) else {
            return reject(format!("deployment {} is not registered", r.deployment));
        };
        let grant = self
            .decisions
            .get(&r.deployment)
            .and_then(|ds| ds.iter().find(|d| d.index == r.grant_index && d.verdict == Verdict::Grant));
        let Some(grant) = grant else {
            return reject(format!("entry {} is not a grant to deployment {}", r.grant_index, r.deployment));
        };
        let granted = grant.release.and_then(|d| self.releases.get(&d)).map(|rel| &rel.manifest.version);
        if granted != Some(&r.to_version) {
            return reject(format!(
                "the report names version {}, but entry {} granted another release",
                r.to_version, r.grant_index
            ));
        }
        if let Some(first) = self.report_of(r.grant_index, r.outcome) {
            return reject(format!(
                "the outcome of grant {} is already reported as {} (entry {first})",
                r.grant_index,
                outcome_name(r.outcome)
            ));
        }
        let earlier = self.report_outcomes.get(&r.grant_index).map(Vec::as_slice).unwrap_or_default();
        let rolls_back_an_install =
            r.outcome == InstallOutcome::RolledBack && matches!(earlier, [(InstallOutcome::Installed, _)]);
        if let Some((outcome, first)) = earlier.first()
            && !rolls_back_an_install
        {
            return reject(format!(
                "the outcome of grant {} is already reported as {} (entry {first}); a grant has one outcome, or \
                 installed then rolled-back",
                r.grant_index,
                outcome_name(*outcome)
            ));
        }
        // The version the device started from is the one the ledger
        // recorded before this grant: a report cannot move the baseline
        // from anywhere else.
        let before = if rolls_back_an_install {
            if dep.installed_version != r.to_version {
                return reject(format!(
                    "grant {} installed {}, but the ledger records {} installed since; its roll-back is refused",
                    r.grant_index, r.to_version, dep.installed_version
                ));
            }
            self.installed_from.get(&r.grant_index).cloned().unwrap_or_else(|| dep.installed_version.clone())
        } else {
            dep.installed_version.clone()
        };
        if r.from_version != before {
            return reject(format!(
                "the report says the deployment ran {} before grant {}, but the ledger records {before}",
                r.from_version, r.grant_index
            ));
        }
        self.report_outcomes.entry(r.grant_index).or_default().push((r.outcome, index));
        self.report_digests.insert(digest, index);
        if let Some(dep) = self.deployments.get_mut(&r.deployment) {
            match r.outcome {
                InstallOutcome::Installed => {
                    self.installed_from.insert(r.grant_index, dep.installed_version.clone());
                    dep.installed_version = r.to_version.clone();
                }
                InstallOutcome::RolledBack if rolls_back_an_install => dep.installed_version = before,
                InstallOutcome::RolledBack | InstallOutcome::Failed => {}
            }
        }
        self.reports += 1;
        Ok(())
    }

    /// The admin actions of governance. `digest` is the action's payload
    /// digest (how approvals name a proposal); `threshold` the approvals a
    /// heavy action needs.
    pub(super) fn apply_action(
        &mut self,
        index: u64,
        time: Timestamp,
        by: &Approver<'_>,
        action: &ActionKind,
    ) -> Result<(), Rejection> {
        let (actor, digest, threshold, valid_admins) = (by.actor, by.digest, by.threshold, by.valid_admins);
        match action {
            ActionKind::RegisterCustomer { customer, legal_name, country } => {
                if self.customers.contains_key(customer) {
                    return reject(format!("customer {customer} is already registered"));
                }
                self.customers.insert(
                    customer.clone(),
                    Customer {
                        id: customer.clone(),
                        legal_name: legal_name.clone(),
                        country: country.clone(),
                        suspension: SuspensionLevel::None,
                    },
                );
                Ok(())
            }
            ActionKind::RegisterDeployment { deployment, customer, product, site, provisioned_version } => {
                if self.deployments.contains_key(deployment) {
                    return reject(format!("deployment {deployment} is already registered"));
                }
                if !self.customers.contains_key(customer) {
                    return reject(format!("customer {customer} is not registered"));
                }
                let dep = Deployment {
                    id: deployment.clone(),
                    customer: customer.clone(),
                    product: product.clone(),
                    site: site.clone(),
                    suspension: SuspensionLevel::None,
                    installed_version: provisioned_version.clone(),
                };
                // The ledger knows no hardware apart from its deployment
                // id, and a device's key is new with each registration, so
                // one admin could register a suspended or investigated
                // system again under a new id, and its `provisioned_version`
                // would be a baseline of that admin's choosing. While a
                // suspension or an open case holds the customer or one of
                // its deployments, another deployment needs the admin
                // threshold.
                // Nor may one admin bring a deployment under a contract at
                // once: registered where the customer's contract covers it
                // (a contract without a list covers every deployment), held
                // hardware of another customer would be granted what that
                // contract allows, as with a first contract.
                let covered = self
                    .contracts
                    .get(customer)
                    .filter(|c| c.covers(deployment))
                    .map(|c| format!("contract {} of customer {customer} would cover it at once", c.id));
                match self.hold_on(customer).or(covered) {
                    None => {
                        self.deployments.insert(deployment.clone(), dep);
                        Ok(())
                    }
                    Some(held) => self.propose(
                        index,
                        time,
                        actor,
                        digest,
                        ProposalKind::Deployment { deployment: dep, held },
                        threshold,
                    ),
                }
            }
            ActionKind::SetContract { contract } => {
                if !self.customers.contains_key(&contract.customer) {
                    return reject(format!("customer {} is not registered", contract.customer));
                }
                for d in &contract.deployments {
                    if self.deployments.get(d).is_none_or(|dep| dep.customer != contract.customer) {
                        return reject(format!(
                            "deployment {d} is not a registered deployment of {}",
                            contract.customer
                        ));
                    }
                }
                let expected = match self.contracts.get(&contract.customer) {
                    None => 1,
                    Some(current) if current.id != contract.id => {
                        return reject(format!(
                            "customer {} is bound by contract {}; set its next version instead",
                            contract.customer, current.id
                        ));
                    }
                    Some(current) => current.version + 1,
                };
                if contract.version != expected {
                    return reject(format!("contract {} must be set at version {expected}", contract.id));
                }
                // A version that only tightens takes effect at once; one that
                // relaxes any condition needs the admin threshold, as waiving
                // that condition would. So does a customer's first contract:
                // it turns "withheld: no contract" into what its conditions
                // allow, and one admin could otherwise register a customer,
                // a lax contract and a deployment for hardware held under
                // another customer.
                let relaxes = match self.contracts.get(&contract.customer) {
                    Some(current) => contract_relaxations(current, contract),
                    None => {
                        vec![format!("contract {}: the first contract of customer {}", contract.id, contract.customer)]
                    }
                };
                if relaxes.is_empty() {
                    self.contracts.insert(contract.customer.clone(), contract.clone());
                    return Ok(());
                }
                let kind = ProposalKind::Contract { contract: contract.clone(), relaxes };
                self.propose(index, time, actor, digest, kind, threshold)
            }
            ActionKind::CaseTransition { case, to, determination } => {
                let Some(c) = self.cases.get_mut(case) else { return reject(format!("no case {case}")) };
                if !legal_move(c.state, c.determination, *to) {
                    return reject(format!("case {case} cannot move from {:?} to {to:?}", c.state));
                }
                // A move that ends a case, or takes it back to an earlier
                // state, lifts `no_open_case` for some contract, as a waiver
                // of it would: it needs the admin threshold. A move forward
                // only makes the case block more, and takes effect at once.
                if *to == CaseState::Closed || *to < c.state {
                    let kind = ProposalKind::CaseMove {
                        case: case.clone(),
                        to: *to,
                        from: c.state,
                        from_determination: c.determination,
                    };
                    return self.propose(index, time, actor, digest, kind, threshold);
                }
                c.state = *to;
                if *to == CaseState::Determined {
                    c.determination = *determination;
                }
                Ok(())
            }
            ActionKind::ProposeSuspension { target, level } => {
                let current = self.suspension_of(target)?;
                if *level == current {
                    return reject(format!("the suspension is already {level}"));
                }
                // Raising to L1 takes effect at once; raising to L2 or above
                // and any lowering need threshold-many admins.
                let heavy = *level >= SuspensionLevel::L2 || *level < current;
                let kind = ProposalKind::Suspension { target: target.clone(), level: *level, from: current };
                self.propose(index, time, actor, digest, kind, if heavy { threshold } else { 1 })
            }
            ActionKind::ProposeWaiver { deployment, condition, until } => {
                if !self.deployments.contains_key(deployment) {
                    return reject(format!("deployment {deployment} is not registered"));
                }
                if *until <= time {
                    return reject("the waiver would end before it starts");
                }
                let kind = ProposalKind::Waiver {
                    deployment: deployment.clone(),
                    condition: condition.clone(),
                    until: *until,
                };
                self.propose(index, time, actor, digest, kind, threshold)
            }
            ActionKind::ProposeSecurityFix { deployment, release } => {
                let Some(dep) = self.deployments.get(deployment) else {
                    return reject(format!("deployment {deployment} is not registered"));
                };
                match self.releases.get(release) {
                    None => return reject("the release is not published"),
                    Some(r) if r.manifest.class != ReleaseClass::SecurityFix => {
                        return reject("only a security-fix release can be let through under L2");
                    }
                    Some(r) if r.manifest.product != dep.product => {
                        return reject("the release is for another product");
                    }
                    Some(_) => {}
                }
                let kind = ProposalKind::SecurityFix { deployment: deployment.clone(), release: *release };
                self.propose(index, time, actor, digest, kind, threshold)
            }
            ActionKind::Approve { proposal } => {
                let Some(p) = self.proposals.get(proposal) else {
                    return reject("no proposal has this digest");
                };
                if p.in_force {
                    return reject("the proposal is already in force");
                }
                if p.approvals.contains(&actor) {
                    return reject("this admin has already approved the proposal; one admin counts once");
                }
                if time >= p.at.plus_seconds(PROPOSAL_LIFETIME) {
                    return reject("the proposal expired (a proposal waits 30 days for its approvals); propose again");
                }
                if let ProposalKind::Suspension { target, from, .. } = &p.kind {
                    let now = self.suspension_of(target)?;
                    if now != *from {
                        return reject(format!(
                            "the suspension changed since this proposal (it was {from}, it is {now}); propose again"
                        ));
                    }
                }
                if let ProposalKind::Contract { contract, .. } = &p.kind {
                    let now = self.contracts.get(&contract.customer).map_or(0, |c| c.version);
                    if now + 1 != contract.version {
                        return reject(format!(
                            "contract {} is at version {now} now, so this proposal of version {} no longer says what \
                             it changes; propose again",
                            contract.id, contract.version
                        ));
                    }
                }
                match &p.kind {
                    ProposalKind::Licence { licence, from, .. } if self.licences.get(&licence.id) != from.as_ref() => {
                        return reject(format!(
                            "licence {} changed since this proposal, so it no longer says what it widens; propose again",
                            licence.id
                        ));
                    }
                    ProposalKind::CaseMove { case, to, from, from_determination }
                        if self.cases.get(case).is_none_or(|c| {
                            c.state != *from
                                || c.determination != *from_determination
                                || !legal_move(c.state, c.determination, *to)
                        }) =>
                    {
                        return reject(format!("case {case} moved since this proposal; propose again"));
                    }
                    ProposalKind::Deployment { deployment, .. } if self.deployments.contains_key(&deployment.id) => {
                        return reject(format!("deployment {} is already registered", deployment.id));
                    }
                    _ => {}
                }
                // Only approvals by keys that are admin keys of the current
                // root, and not revoked, count (`actor` is not among the
                // approvals yet: checked above).
                let counted = p.approvals.iter().chain([&actor]).filter(|k| valid_admins.contains(k)).count();
                let effect = (counted >= threshold as usize).then(|| p.kind.clone());
                // Every check is made: from here nothing is refused, so a
                // refused approval leaves the state as it was.
                if let Some(p) = self.proposals.get_mut(proposal) {
                    p.approvals.insert(actor);
                    p.in_force = effect.is_some();
                }
                if let Some(kind) = effect {
                    self.take_effect(&kind);
                }
                Ok(())
            }
            ActionKind::ListDeniedParty { party } => {
                if self.denied.contains(party) {
                    return reject("this party is already listed");
                }
                self.denied.push(party.clone());
                Ok(())
            }
            ActionKind::RecordLicence { licence } => {
                if !self.customers.contains_key(&licence.customer) {
                    return reject(format!("customer {} is not registered", licence.customer));
                }
                // A licence recorded for the first time lifts an unmet
                // `licence_valid` of every contract naming it (a licence
                // still pending with its authority is the usual case), so it
                // needs the admin threshold, as a first contract does.
                let Some(current) = self.licences.get(&licence.id) else {
                    let relaxes = vec![format!("licence {}: recorded for the first time", licence.id)];
                    let kind = ProposalKind::Licence { licence: licence.clone(), from: None, relaxes };
                    return self.propose(index, time, actor, digest, kind, threshold);
                };
                if current.customer != licence.customer {
                    return reject(format!("licence {} belongs to another customer", licence.id));
                }
                // Narrowing a licence takes effect at once; widening it can
                // turn a withhold into a grant, so it needs the admin
                // threshold, as a relaxing contract version does.
                let relaxes = licence_relaxations(current, licence);
                if relaxes.is_empty() {
                    self.licences.insert(licence.id.clone(), licence.clone());
                    return Ok(());
                }
                let kind = ProposalKind::Licence { licence: licence.clone(), from: Some(current.clone()), relaxes };
                self.propose(index, time, actor, digest, kind, threshold)
            }
            _ => reject("this admin action is not folded here"),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn propose(
        &mut self,
        index: u64,
        at: Timestamp,
        actor: KeyId,
        digest: Sha256Digest,
        kind: ProposalKind,
        needed: u32,
    ) -> Result<(), Rejection> {
        if self.proposals.contains_key(&digest) {
            return reject("this exact proposal was already made");
        }
        let in_force = needed <= 1;
        if in_force {
            self.take_effect(&kind);
        }
        self.proposals.insert(digest, Proposal { index, at, kind, approvals: BTreeSet::from([actor]), in_force });
        Ok(())
    }

    /// Puts a proposal in force. Infallible: whoever calls it has checked
    /// that what it changes exists (a suspension's target, a case) and has
    /// not moved, so that no entry is refused after changing the state.
    fn take_effect(&mut self, kind: &ProposalKind) {
        match kind {
            ProposalKind::Contract { contract, .. } => {
                self.contracts.insert(contract.customer.clone(), contract.clone());
            }
            ProposalKind::Suspension { target, level, .. } => match target {
                SuspensionTarget::Customer(id) => {
                    if let Some(c) = self.customers.get_mut(id) {
                        c.suspension = *level;
                    }
                }
                SuspensionTarget::Deployment(id) => {
                    if let Some(d) = self.deployments.get_mut(id) {
                        d.suspension = *level;
                    }
                }
            },
            ProposalKind::Waiver { deployment, condition, until } => {
                self.waivers.insert((deployment.clone(), condition.clone()), *until);
            }
            ProposalKind::SecurityFix { deployment, release } => {
                self.security_fixes.insert((deployment.clone(), *release));
            }
            ProposalKind::Licence { licence, .. } => {
                self.licences.insert(licence.id.clone(), licence.clone());
            }
            ProposalKind::CaseMove { case, to, .. } => {
                if let Some(c) = self.cases.get_mut(case) {
                    c.state = *to;
                }
            }
            ProposalKind::Deployment { deployment, .. } => {
                self.deployments.insert(deployment.id.clone(), deployment.clone());
            }
            // Identities are the state's: it applies these once in force.
            ProposalKind::Identity { .. } | ProposalKind::Revocation { .. } | ProposalKind::Compromise { .. } => {}
        }
    }
}
