//! Each condition of a deployment's contract judged for one release at one
//! check-in: met, unmet with a reason for the operator, or not applicable,
//! waivers applied (`Context`, which `evaluate` and `grant_stands` build).

use super::CONTRACT_CONDITION;
use crate::digest::Timestamp;
use crate::state::{AttestationFact, Deployment, Release, SignedCheckIn, State, VerificationFact};
use crate::statements::{CaseState, Condition, ConditionName, ConditionResult, ConditionStatus, Contract};

const DAY: i64 = 86_400;
pub(super) struct Context<'a> {
    pub(super) state: &'a State,
    pub(super) dep: &'a Deployment,
    pub(super) checkin: &'a SignedCheckIn,
    pub(super) now: Timestamp,
    pub(super) contract: Option<&'a Contract>,
}

fn met() -> (ConditionStatus, String) {
    (ConditionStatus::Met, String::new())
}

fn unmet(reason: String) -> (ConditionStatus, String) {
    (ConditionStatus::Unmet, reason)
}

impl Context<'_> {
    fn customer_name(&self) -> String {
        self.state
            .customer(&self.dep.customer)
            .map(|c| c.legal_name.clone())
            .unwrap_or_else(|| self.dep.customer.clone())
    }

    /// Every condition for one release, waivers applied: those the contract
    /// does not name are not applicable.
    pub(super) fn conditions(&self, release: &Release) -> Vec<ConditionResult> {
        let Some(contract) = self.contract else {
            return vec![ConditionResult {
                condition: CONTRACT_CONDITION.to_owned(),
                status: ConditionStatus::Unmet,
                reason: format!(
                    "No contract covers deployment {}; updates are delivered only under a contract. Ask your \
                     vendor's compliance office to set one.",
                    self.dep.id
                ),
            }];
        };
        ConditionName::ALL
            .into_iter()
            .map(|name| {
                let Some(c) = contract.conditions.iter().find(|c| c.kind() == name) else {
                    return ConditionResult {
                        condition: name.to_string(),
                        status: ConditionStatus::NotApplicable,
                        reason: format!("Contract {} version {} does not require it.", contract.id, contract.version),
                    };
                };
                let (mut status, mut reason) = self.condition(c, contract, release);
                if status == ConditionStatus::Unmet
                    && let Some(until) = self.state.facts().waiver(&self.dep.id, c.name())
                    && self.now < until
                {
                    status = ConditionStatus::Met;
                    reason = format!(
                        "Waived for deployment {} until {} with the approval of two compliance officers.",
                        self.dep.id,
                        until.date()
                    );
                }
                ConditionResult { condition: c.name().to_owned(), status, reason }
            })
            .collect()
    }

    /// The attestation the conditions read: the newest one covering the
    /// deployment whose signature still counts.
    fn attestation(&self) -> Option<&AttestationFact> {
        self.state.facts().attestations_of(&self.dep.id).find(|a| self.state.signature_counts(&a.signer, a.time))
    }

    /// The newest verification of the current attestation whose signature
    /// still counts.
    fn verification(&self) -> Option<&VerificationFact> {
        let att = self.attestation()?;
        self.state
            .facts()
            .verifications_of(&self.dep.id)
            .find(|v| v.predicate.attestation == att.digest && self.state.signature_counts(&v.signer, v.time))
    }

    fn renew(&self) -> String {
        format!("submit a renewed attestation signed by a registered key of {}", self.customer_name())
    }

    fn condition(&self, c: &Condition, contract: &Contract, release: &Release) -> (ConditionStatus, String) {
        let d = &self.dep.id;
        match c {
            Condition::EndUseAttested { max_age_days, allowed_end_uses } => {
                let Some(att) = self.attestation() else {
                    return unmet(format!(
                        "No end-use attestation covers deployment {d}; submit one signed by a registered key of {}.",
                        self.customer_name()
                    ));
                };
                let p = &att.predicate;
                if self.now < p.valid_from {
                    return unmet(format!(
                        "The end-use attestation for deployment {d} is valid only from {}; wait until then or {}.",
                        p.valid_from.date(),
                        self.renew()
                    ));
                }
                if self.now >= p.valid_until {
                    return unmet(format!(
                        "The end-use attestation for deployment {d} expired on {}; {}.",
                        p.valid_until.date(),
                        self.renew()
                    ));
                }
                // Its age runs from when it was signed to be valid, or recorded
                // if that is earlier: never from a later re-recording.
                let max_age = i64::from(*max_age_days) * DAY;
                let since = att.time.min(p.valid_from);
                if self.now >= since.plus_seconds(max_age) {
                    return unmet(format!(
                        "The end-use attestation for deployment {d} dates from {}, more than {max_age_days} days \
                         ago; {}.",
                        since.date(),
                        self.renew()
                    ));
                }
                if !allowed_end_uses.is_empty() && !allowed_end_uses.contains(&p.end_use.category) {
                    return unmet(format!(
                        "The end-use attestation for deployment {d} declares the end use \"{}\", which the contract \
                         does not allow (allowed: {}); submit an attestation for an allowed end use.",
                        p.end_use.category,
                        allowed_end_uses.join(", ")
                    ));
                }
                if !p.undertakings.all_given() {
                    return unmet(format!(
                        "The end-use attestation for deployment {d} does not give every undertaking (no re-export, no \
                         modification, no targeting of protected groups, consent to audits); {} that gives them all.",
                        self.renew()
                    ));
                }
                met()
            }
            Condition::FieldVerified { max_age_days, methods } => {
                if self.attestation().is_none() {
                    return unmet(format!(
                        "Deployment {d} has no end-use attestation for a field engineer to verify; submit the \
                         attestation first, then ask your vendor to schedule a field verification."
                    ));
                }
                let Some(v) = self.verification() else {
                    return unmet(format!(
                        "No field verification of deployment {d} references its current end-use attestation; ask \
                         your vendor to schedule a field verification."
                    ));
                };
                let p = &v.predicate;
                // A verification counts only where the attestation says the
                // system is: a pass at any other site verifies nothing.
                if let Some(att) = self.attestation()
                    && !att.predicate.sites.contains(&p.observed_site)
                {
                    return unmet(format!(
                        "The field verification of deployment {d} on {} observed it at site {} in {}, which its \
                         end-use attestation does not name; it does not count. Return the system to an attested site \
                         or submit an attestation naming this site, then ask your vendor for a new verification.",
                        p.date.date(),
                        p.observed_site.site_id,
                        p.observed_site.country
                    ));
                }
                if p.result == crate::statements::VerificationResult::Fail {
                    return unmet(format!(
                        "The field verification of deployment {d} on {} failed; resolve the engineer's findings and \
                         ask your vendor for a new verification.",
                        p.date.date()
                    ));
                }
                if !methods.is_empty() && !methods.contains(&p.method) {
                    return unmet(format!(
                        "The field verification of deployment {d} on {} was not made by a method the contract \
                         accepts; ask your vendor for an on-site verification.",
                        p.date.date()
                    ));
                }
                // Its age runs from the date the engineer signed.
                if self.now >= p.date.plus_seconds(i64::from(*max_age_days) * DAY) {
                    return unmet(format!(
                        "The field verification of deployment {d} dates from {}, more than {max_age_days} days ago; \
                         ask your vendor to schedule a new field verification.",
                        p.date.date()
                    ));
                }
                met()
            }
            Condition::SiteBound { allowed_countries, allowed_site_ids } => {
                let Some(att) = self.attestation() else {
                    return unmet(format!(
                        "Deployment {d} has no end-use attestation naming its site; submit one signed by a \
                         registered key of {}.",
                        self.customer_name()
                    ));
                };
                let allowed = |country: &str, site: &str| {
                    (allowed_countries.is_empty() || allowed_countries.iter().any(|c| c == country))
                        && (allowed_site_ids.is_empty() || allowed_site_ids.iter().any(|s| s == site))
                };
                if let Some(bad) = att.predicate.sites.iter().find(|s| !allowed(&s.country, &s.site_id)) {
                    return unmet(format!(
                        "The end-use attestation for deployment {d} names site {} in {}, which the contract does not \
                         allow; submit an attestation for the allowed sites only.",
                        bad.site_id, bad.country
                    ));
                }
                let Some(v) = self.verification() else {
                    return unmet(format!(
                        "No field verification has observed deployment {d} at an attested site; ask your vendor to \
                         schedule a field verification."
                    ));
                };
                let seen = &v.predicate.observed_site;
                if !att.predicate.sites.contains(seen) {
                    return unmet(format!(
                        "The field verification found deployment {d} at site {} in {}, which its end-use attestation \
                         does not name; return the system to an attested site or submit an attestation naming this \
                         site.",
                        seen.site_id, seen.country
                    ));
                }
                met()
            }
            Condition::IntegrityMatch => self.integrity(),
            Condition::LicenceValid { licence } => {
                let Some(l) = self.state.facts().licence(licence).filter(|l| l.customer == self.dep.customer) else {
                    return unmet(format!(
                        "No export licence {licence} is recorded for deployment {d}; ask your vendor's compliance \
                         office to record the licence."
                    ));
                };
                if self.now >= l.expires {
                    return unmet(format!(
                        "Export licence {licence} for deployment {d} expired on {}; ask your vendor to record its \
                         renewal.",
                        l.expires.date()
                    ));
                }
                if !l.versions.matches(&release.manifest.version) {
                    return unmet(format!(
                        "Export licence {licence} for deployment {d} does not cover version {} (it covers {}); ask \
                         your vendor to extend the licence.",
                        release.manifest.version, l.versions
                    ));
                }
                met()
            }
            Condition::DeniedPartyClear { list } => {
                let Some(att) = self.attestation() else {
                    return unmet(format!(
                        "The end user of deployment {d} cannot be checked against the denied-party list {list} without \
                         an end-use attestation; submit one signed by a registered key of {}.",
                        self.customer_name()
                    ));
                };
                let user = &att.predicate.end_user;
                if self.state.facts().denied_parties(list).any(|p| p.matches(&user.legal_name, &user.country)) {
                    return unmet(format!(
                        "The end user named for deployment {d} is on the denied-party list {list}; no update can be \
                         delivered while it is. Contact {}.",
                        contract.compliance_contact
                    ));
                }
                met()
            }
            Condition::NoOpenCase { from_state } => {
                let blocking = self.state.facts().cases().any(|c| {
                    c.state != CaseState::Closed
                        && c.state >= *from_state
                        && c.customer == self.dep.customer
                        && c.deployment.as_ref().is_none_or(|x| x == d)
                });
                if blocking {
                    // Never the signal's source or evidence: the customer may
                    // be the one doing the surveillance.
                    return unmet(format!(
                        "A compliance review concerning deployment {d} is open. Contact {} for the next steps.",
                        contract.compliance_contact
                    ));
                }
                met()
            }
        }
    }

    fn integrity(&self) -> (ConditionStatus, String) {
        let d = &self.dep.id;
        // The release to compare with is the one the ledger says is installed.
        let v = &self.dep.installed_version;
        let mut checked = false;
        if let Some(installed) = self.state.facts().release_of(&self.dep.product, v) {
            let expected = &installed.manifest.expected_installed_digests;
            if !expected.is_empty() {
                checked = true;
                let differing: Vec<&String> = expected
                    .iter()
                    .filter(|(path, digest)| self.checkin.software_digests.get(*path) != Some(digest))
                    .map(|(path, _)| path)
                    .chain(self.checkin.software_digests.keys().filter(|p| !expected.contains_key(*p)))
                    .collect();
                if let Some(first) = differing.first() {
                    return unmet(format!(
                        "The software on deployment {d} does not match release {v} as published ({} file(s) differ, \
                         first {first}); reinstall the published release and remove any inserted code.",
                        differing.len()
                    ));
                }
            }
        } else {
            return unmet(format!(
                "Deployment {d} runs version {v} by the ledger's record, which the vendor never published; reinstall a \
                 published release."
            ));
        }
        if let Some(verified) = self.verification() {
            checked = true;
            if verified.predicate.observed_configuration_digest != self.checkin.configuration_digest {
                return unmet(format!(
                    "The configuration of deployment {d} differs from the one the field engineer verified on {}; \
                     restore the verified configuration or ask your vendor for a new field verification.",
                    verified.predicate.date.date()
                ));
            }
        }
        if checked {
            met()
        } else {
            (
                ConditionStatus::NotApplicable,
                format!(
                    "Release {v} lists no installed-file digests and deployment {d} has no verified configuration: \
                     there is nothing to compare."
                ),
            )
        }
    }
}
