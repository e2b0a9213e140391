//! The admin actions of governance, one method each: customers,
//! deployments, contracts, case moves, suspensions, waivers, security fixes
//! under L2, denied parties and licences. [`crate::state::State`] calls
//! them after the action's signature and time window are checked; what
//! needs the admin threshold becomes a proposal (`proposals.rs`).

use super::{Act, Customer, Deployment, Facts, ProposalKind, legal_move};
use crate::digest::{Sha256Digest, Timestamp};
use crate::state::rejection::{Rejection, reject};
use crate::statements::{
    CaseState, Contract, DeniedParty, Determination, Licence, ReleaseClass, Site, SuspensionLevel, SuspensionTarget,
    contract_relaxations, licence_relaxations,
};

impl Facts {
    /// Registers a customer.
    pub(in crate::state) fn register_customer(
        &mut self,
        customer: &str,
        legal_name: &str,
        country: &str,
    ) -> Result<(), Rejection> {
        if self.customers.contains_key(customer) {
            return reject(Rejection::AlreadyRecorded, format!("customer {customer} is already registered"));
        }
        self.customers.insert(
            customer.to_owned(),
            Customer {
                id: customer.to_owned(),
                legal_name: legal_name.to_owned(),
                country: country.to_owned(),
                suspension: SuspensionLevel::None,
            },
        );
        Ok(())
    }

    /// Registers a deployment: at once, or as a proposal while its customer is held or a contract would cover it.
    pub(in crate::state) fn register_deployment(
        &mut self,
        act: &Act<'_>,
        deployment: &str,
        customer: &str,
        product: &str,
        site: &Site,
        provisioned_version: &semver::Version,
    ) -> Result<(), Rejection> {
        if self.deployments.contains_key(deployment) {
            return reject(Rejection::AlreadyRecorded, format!("deployment {deployment} is already registered"));
        }
        if !self.customers.contains_key(customer) {
            return reject(Rejection::NotFound, format!("customer {customer} is not registered"));
        }
        let dep = Deployment {
            id: deployment.to_owned(),
            customer: customer.to_owned(),
            product: product.to_owned(),
            site: site.to_owned(),
            suspension: SuspensionLevel::None,
            installed_version: provisioned_version.to_owned(),
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
                self.deployments.insert(deployment.to_owned(), dep);
                Ok(())
            }
            Some(held) => self.propose(act, ProposalKind::Deployment { deployment: dep, held }, act.threshold),
        }
    }

    /// Sets a customer's contract: a version that only tightens at once, a first one or one that relaxes as a proposal.
    pub(in crate::state) fn set_contract(&mut self, act: &Act<'_>, contract: &Contract) -> Result<(), Rejection> {
        if !self.customers.contains_key(&contract.customer) {
            return reject(Rejection::NotFound, format!("customer {} is not registered", contract.customer));
        }
        for d in &contract.deployments {
            if self.deployments.get(d).is_none_or(|dep| dep.customer != contract.customer) {
                return reject(
                    Rejection::NotFound,
                    format!("deployment {d} is not a registered deployment of {}", contract.customer),
                );
            }
        }
        let expected = match self.contracts.get(&contract.customer) {
            None => 1,
            Some(current) if current.id != contract.id => {
                return reject(
                    Rejection::Precondition,
                    format!(
                        "customer {} is bound by contract {}; set its next version instead",
                        contract.customer, current.id
                    ),
                );
            }
            Some(current) => current.version + 1,
        };
        if contract.version != expected {
            return reject(
                Rejection::Precondition,
                format!("contract {} must be set at version {expected}", contract.id),
            );
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
            self.contracts.insert(contract.customer.to_owned(), contract.to_owned());
            return Ok(());
        }
        let kind = ProposalKind::Contract { contract: contract.to_owned(), relaxes };
        self.propose(act, kind, act.threshold)
    }

    /// Moves a case: forward at once, to closed or back as a proposal.
    pub(in crate::state) fn move_case(
        &mut self,
        act: &Act<'_>,
        case: &str,
        to: CaseState,
        determination: Option<Determination>,
    ) -> Result<(), Rejection> {
        let Some(c) = self.cases.get_mut(case) else { return reject(Rejection::NotFound, format!("no case {case}")) };
        if !legal_move(c.state, c.determination, to) {
            return reject(Rejection::Precondition, format!("case {case} cannot move from {:?} to {to:?}", c.state));
        }
        // A move that ends a case, or takes it back to an earlier
        // state, lifts `no_open_case` for some contract, as a waiver
        // of it would: it needs the admin threshold. A move forward
        // only makes the case block more, and takes effect at once.
        if to == CaseState::Closed || to < c.state {
            let kind = ProposalKind::CaseMove {
                case: case.to_owned(),
                to,
                from: c.state,
                from_determination: c.determination,
            };
            return self.propose(act, kind, act.threshold);
        }
        let recorded = if to == CaseState::Determined { determination } else { None };
        c.moves.push(super::CaseMove { index: act.index, time: act.time, from: c.state, to, determination: recorded });
        c.state = to;
        if to == CaseState::Determined {
            c.determination = determination;
        }
        Ok(())
    }

    /// Proposes a suspension level: raising to L1 takes effect at once.
    pub(in crate::state) fn propose_suspension(
        &mut self,
        act: &Act<'_>,
        target: &SuspensionTarget,
        level: SuspensionLevel,
    ) -> Result<(), Rejection> {
        let current = self.suspension_of(target)?;
        if level == current {
            return reject(Rejection::AlreadyRecorded, format!("the suspension is already {level}"));
        }
        // Raising to L1 takes effect at once; raising to L2 or above
        // and any lowering need threshold-many admins.
        let heavy = level >= SuspensionLevel::L2 || level < current;
        let kind = ProposalKind::Suspension { target: target.clone(), level, from: current };
        self.propose(act, kind, if heavy { act.threshold } else { 1 })
    }

    /// Proposes waiving a condition for a deployment until a time.
    pub(in crate::state) fn propose_waiver(
        &mut self,
        act: &Act<'_>,
        deployment: &str,
        condition: &str,
        until: Timestamp,
    ) -> Result<(), Rejection> {
        if !self.deployments.contains_key(deployment) {
            return reject(Rejection::NotFound, format!("deployment {deployment} is not registered"));
        }
        if until <= act.time {
            return reject(Rejection::Precondition, "the waiver would end before it starts");
        }
        let kind = ProposalKind::Waiver { deployment: deployment.to_owned(), condition: condition.to_owned(), until };
        self.propose(act, kind, act.threshold)
    }

    /// Proposes letting a security-fix release through under L2.
    pub(in crate::state) fn propose_security_fix(
        &mut self,
        act: &Act<'_>,
        deployment: &str,
        release: &Sha256Digest,
    ) -> Result<(), Rejection> {
        let Some(dep) = self.deployments.get(deployment) else {
            return reject(Rejection::NotFound, format!("deployment {deployment} is not registered"));
        };
        match self.releases.get(release) {
            None => return reject(Rejection::NotFound, "the release is not published"),
            Some(r) if r.manifest.class != ReleaseClass::SecurityFix => {
                return reject(Rejection::Precondition, "only a security-fix release can be let through under L2");
            }
            Some(r) if r.manifest.product != dep.product => {
                return reject(Rejection::Precondition, "the release is for another product");
            }
            Some(_) => {}
        }
        let kind = ProposalKind::SecurityFix { deployment: deployment.to_owned(), release: *release };
        self.propose(act, kind, act.threshold)
    }

    /// Lists a denied party.
    pub(in crate::state) fn list_denied_party(&mut self, party: &DeniedParty) -> Result<(), Rejection> {
        if self.denied.contains(party) {
            return reject(Rejection::AlreadyRecorded, "this party is already listed");
        }
        self.denied.push(party.to_owned());
        Ok(())
    }

    /// Records a licence: narrowing at once, a first one or a widening as a proposal.
    pub(in crate::state) fn record_licence(&mut self, act: &Act<'_>, licence: &Licence) -> Result<(), Rejection> {
        if !self.customers.contains_key(&licence.customer) {
            return reject(Rejection::NotFound, format!("customer {} is not registered", licence.customer));
        }
        // A licence recorded for the first time lifts an unmet
        // `licence_valid` of every contract naming it (a licence
        // still pending with its authority is the usual case), so it
        // needs the admin threshold, as a first contract does.
        let Some(current) = self.licences.get(&licence.id) else {
            let relaxes = vec![format!("licence {}: recorded for the first time", licence.id)];
            let kind = ProposalKind::Licence { licence: licence.to_owned(), from: None, relaxes };
            return self.propose(act, kind, act.threshold);
        };
        if current.customer != licence.customer {
            return reject(Rejection::Precondition, format!("licence {} belongs to another customer", licence.id));
        }
        // Narrowing a licence takes effect at once; widening it can
        // turn a withhold into a grant, so it needs the admin
        // threshold, as a relaxing contract version does.
        let relaxes = licence_relaxations(current, licence);
        if relaxes.is_empty() {
            self.licences.insert(licence.id.to_owned(), licence.to_owned());
            return Ok(());
        }
        let kind = ProposalKind::Licence { licence: licence.to_owned(), from: Some(current.to_owned()), relaxes };
        self.propose(act, kind, act.threshold)
    }
}
