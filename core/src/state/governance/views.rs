//! What the governance facts say: the read side of [`super::Facts`] that
//! the policy, the server and the audit read (customers, deployments,
//! contracts, releases, evidence, cases, proposals, waivers, decisions, and
//! what holds a customer).

use super::{
    AttestationFact, Case, Customer, DecisionFact, Deployment, Facts, LOGGING_PERIOD, Proposal, Release,
    VerificationFact,
};
use crate::digest::{Sha256Digest, Timestamp};
use crate::keys::KeyId;
use crate::statements::{CaseState, Contract, DeniedParty, InstallOutcome, Licence, SuspensionLevel};

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

    /// Every proposal, with the digest of its payload (how an approval
    /// names it), in digest order.
    pub fn proposals(&self) -> impl Iterator<Item = (&Sha256Digest, &Proposal)> {
        self.proposals.iter()
    }

    /// Every published release, by product then version.
    pub fn releases(&self) -> impl Iterator<Item = &Release> {
        self.versions.values().filter_map(|d| self.releases.get(d))
    }

    /// Every licence recorded for a customer.
    pub fn licences_of<'a>(&'a self, customer: &'a str) -> impl Iterator<Item = &'a Licence> {
        self.licences.values().filter(move |l| l.customer == customer)
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
}
