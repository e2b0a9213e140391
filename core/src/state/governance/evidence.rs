//! The entries of evidence that people and devices sign, as the facts
//! record them: releases, end-use attestations, field verifications, misuse
//! signals (each opening a case), decisions and install reports.

use std::collections::BTreeSet;

use super::{
    AttestationFact, CHECKIN_WINDOW, Case, DECISION_SKEW, DecisionFact, Facts, Release, VerificationFact, outcome_name,
    reasons_digest,
};
use crate::digest::Timestamp;
use crate::envelope::Verified;
use crate::keys::KeyId;
use crate::state::rejection::{Rejection, reject};
use crate::statements::{
    CaseState, Decision, EndUseAttestation, FieldVerification, InTotoStatement, InstallOutcome, InstallReport,
    MisuseSignal, ReleaseManifest, Verdict,
};

impl Facts {
    pub(in crate::state) fn apply_release(
        &mut self,
        index: u64,
        _time: Timestamp,
        manifest: Verified<ReleaseManifest>,
    ) -> Result<(), Rejection> {
        let key = (manifest.product.clone(), manifest.version.clone());
        if self.versions.contains_key(&key) {
            return reject(
                Rejection::AlreadyRecorded,
                format!("{} {} is already published", manifest.product, manifest.version),
            );
        }
        let digest = manifest.payload_digest();
        let signers = manifest.signers().iter().copied().collect();
        self.versions.insert(key, digest);
        self.releases.insert(digest, Release { index, digest, manifest: manifest.value().clone(), signers });
        Ok(())
    }

    pub(in crate::state) fn apply_attestation(
        &mut self,
        index: u64,
        time: Timestamp,
        customer_of_key: &str,
        signer: Option<KeyId>,
        statement: Verified<InTotoStatement<EndUseAttestation>>,
    ) -> Result<(), Rejection> {
        let predicate = &statement.predicate;
        if !self.customers.contains_key(&predicate.customer) {
            return reject(Rejection::NotFound, format!("customer {} is not registered", predicate.customer));
        }
        if customer_of_key != predicate.customer {
            return reject(
                Rejection::NotAllowed,
                format!(
                    "the attestation for customer {} is signed by a key of customer {customer_of_key}",
                    predicate.customer
                ),
            );
        }
        let deployments: BTreeSet<String> = statement.deployments().map(str::to_owned).collect();
        for d in &deployments {
            match self.deployments.get(d) {
                None => return reject(Rejection::NotFound, format!("deployment {d} is not registered")),
                Some(dep) if dep.customer != predicate.customer => {
                    return reject(Rejection::NotAllowed, format!("deployment {d} belongs to another customer"));
                }
                Some(_) => {}
            }
        }
        if predicate.valid_until <= time {
            return reject(Rejection::Stale, format!("the attestation expired on {}", predicate.valid_until.date()));
        }
        let Some(signer) = signer else { return reject(Rejection::Malformed, "an attestation names its signer") };
        if self.attestation_digests.contains_key(&statement.payload_digest()) {
            return reject(
                Rejection::AlreadyRecorded,
                "this attestation is already recorded; sign a new one to renew it",
            );
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

    pub(in crate::state) fn apply_verification(
        &mut self,
        index: u64,
        time: Timestamp,
        signer: Option<KeyId>,
        statement: Verified<InTotoStatement<FieldVerification>>,
    ) -> Result<(), Rejection> {
        let p = &statement.predicate;
        if !self.deployments.contains_key(&p.deployment) {
            return reject(Rejection::NotFound, format!("deployment {} is not registered", p.deployment));
        }
        let covers = self
            .attestation_digests
            .get(&p.attestation)
            .and_then(|i| self.attestations.get(*i))
            .is_some_and(|a| a.deployments.contains(&p.deployment));
        if !covers {
            return reject(
                Rejection::NotFound,
                "the verification references no recorded attestation of this deployment",
            );
        }
        if p.date > time {
            return reject(Rejection::Precondition, "the verification is dated after its ledger time");
        }
        if self.verifications.get(&p.deployment).is_some_and(|vs| vs.iter().any(|v| v.predicate == *p)) {
            return reject(Rejection::AlreadyRecorded, "this verification is already recorded");
        }
        let Some(signer) = signer else { return reject(Rejection::Malformed, "a verification names its signer") };
        self.verifications.entry(p.deployment.clone()).or_default().push(VerificationFact {
            index,
            time,
            signer,
            predicate: p.clone(),
        });
        Ok(())
    }

    pub(in crate::state) fn apply_signal(
        &mut self,
        index: u64,
        time: Timestamp,
        reporter: Option<KeyId>,
        signal: &MisuseSignal,
    ) -> Result<(), Rejection> {
        let about = &signal.about;
        if !self.customers.contains_key(&about.customer) {
            return reject(Rejection::NotFound, format!("customer {} is not registered", about.customer));
        }
        if let Some(d) = &about.deployment
            && self.deployments.get(d).is_none_or(|dep| dep.customer != about.customer)
        {
            return reject(
                Rejection::NotFound,
                format!("deployment {d} is not a registered deployment of {}", about.customer),
            );
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
                opened_at: time,
                reporter,
                moves: Vec::new(),
            },
        );
        Ok(())
    }

    pub(in crate::state) fn apply_decision(
        &mut self,
        index: u64,
        time: Timestamp,
        d: &Decision,
        checkin: &crate::statements::CheckIn,
    ) -> Result<(), Rejection> {
        if !self.deployments.contains_key(&d.deployment) {
            return reject(Rejection::NotFound, format!("deployment {} is not registered", d.deployment));
        }
        if self.last_decision_time.is_some_and(|t| d.issued_at < t) {
            return reject(Rejection::Precondition, "a decision's time goes backwards along the ledger");
        }
        if d.issued_at > time || d.issued_at < time.plus_seconds(-DECISION_SKEW) {
            return reject(
                Rejection::Stale,
                format!(
                    "a decision is logged within {DECISION_SKEW} s of when it was made (issued {}, logged {time})",
                    d.issued_at
                ),
            );
        }
        if checkin.time < d.issued_at.plus_seconds(-CHECKIN_WINDOW)
            || checkin.time > d.issued_at.plus_seconds(CHECKIN_WINDOW)
        {
            return reject(
                Rejection::Stale,
                "the decision answers a check-in made more than a day from when it was decided",
            );
        }
        if self.answered.contains(&(d.deployment.clone(), checkin.nonce)) {
            return reject(
                Rejection::AlreadyRecorded,
                "the decision answers a check-in that a logged decision already answered",
            );
        }
        if let Some(r) = &d.release
            && !self.releases.contains_key(r)
        {
            return reject(Rejection::NotFound, "the grant names a release that is not published");
        }
        self.last_decision_time = Some(d.issued_at);
        self.answered.insert((d.deployment.clone(), checkin.nonce));
        let decisions = self.decisions.entry(d.deployment.clone()).or_default();
        // Only the standing decision's unmet reasons are read (the fleet):
        // an older one's are dropped, so they do not pile up.
        if let Some(previous) = decisions.last_mut() {
            previous.unmet = Vec::new();
        }
        decisions.push(DecisionFact {
            index,
            verdict: d.verdict,
            release: d.release,
            issued_at: d.issued_at,
            expires_at: d.expires_at,
            reasons: reasons_digest(d),
            unmet: d
                .conditions
                .iter()
                .filter(|c| c.status == crate::statements::ConditionStatus::Unmet)
                .cloned()
                .collect(),
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
    pub(in crate::state) fn apply_report(
        &mut self,
        index: u64,
        report: &Verified<InstallReport>,
    ) -> Result<(), Rejection> {
        let digest = report.payload_digest();
        let r: &InstallReport = report;
        if let Some(first) = self.report_digests.get(&digest) {
            return reject(
                Rejection::AlreadyRecorded,
                format!("this install report is already recorded (entry {first})"),
            );
        }
        let Some(dep) = self.deployments.get(&r.deployment) else {
            return reject(Rejection::NotFound, format!("deployment {} is not registered", r.deployment));
        };
        let grant = self
            .decisions
            .get(&r.deployment)
            .and_then(|ds| ds.iter().find(|d| d.index == r.grant_index && d.verdict == Verdict::Grant));
        let Some(grant) = grant else {
            return reject(
                Rejection::NotFound,
                format!("entry {} is not a grant to deployment {}", r.grant_index, r.deployment),
            );
        };
        let granted = grant.release.and_then(|d| self.releases.get(&d)).map(|rel| &rel.manifest.version);
        if granted != Some(&r.to_version) {
            return reject(
                Rejection::Precondition,
                format!(
                    "the report names version {}, but entry {} granted another release",
                    r.to_version, r.grant_index
                ),
            );
        }
        if let Some(first) = self.report_of(r.grant_index, r.outcome) {
            return reject(
                Rejection::AlreadyRecorded,
                format!(
                    "the outcome of grant {} is already reported as {} (entry {first})",
                    r.grant_index,
                    outcome_name(r.outcome)
                ),
            );
        }
        let earlier = self.report_outcomes.get(&r.grant_index).map(Vec::as_slice).unwrap_or_default();
        let rolls_back_an_install =
            r.outcome == InstallOutcome::RolledBack && matches!(earlier, [(InstallOutcome::Installed, _)]);
        if let Some((outcome, first)) = earlier.first()
            && !rolls_back_an_install
        {
            return reject(
                Rejection::AlreadyRecorded,
                format!(
                    "the outcome of grant {} is already reported as {} (entry {first}); a grant has one outcome, or \
                 installed then rolled-back",
                    r.grant_index,
                    outcome_name(*outcome)
                ),
            );
        }
        // The version the device started from is the one the ledger
        // recorded before this grant: a report cannot move the baseline
        // from anywhere else.
        let before = if rolls_back_an_install {
            if dep.installed_version != r.to_version {
                return reject(
                    Rejection::Precondition,
                    format!(
                        "grant {} installed {}, but the ledger records {} installed since; its roll-back is refused",
                        r.grant_index, r.to_version, dep.installed_version
                    ),
                );
            }
            self.installed_from.get(&r.grant_index).cloned().unwrap_or_else(|| dep.installed_version.clone())
        } else {
            dep.installed_version.clone()
        };
        if r.from_version != before {
            return reject(
                Rejection::Precondition,
                format!(
                    "the report says the deployment ran {} before grant {}, but the ledger records {before}",
                    r.from_version, r.grant_index
                ),
            );
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
}
