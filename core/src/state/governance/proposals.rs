//! Proposals and their approvals (dual control): what one admin proposes
//! takes effect once threshold-many distinct admin keys of the current root
//! that are not revoked approved it, within [`super::PROPOSAL_LIFETIME`],
//! while what it changes has not moved since.

use std::collections::BTreeSet;

use super::{Act, Facts, PROPOSAL_LIFETIME, Proposal, ProposalKind, legal_move};
use crate::digest::Sha256Digest;
use crate::state::rejection::{Rejection, reject};
use crate::statements::{SuspensionLevel, SuspensionTarget};

impl Facts {
    /// Records a proposal whose effect [`crate::state::State`] applies (an
    /// identity's registration, revocation or compromise): the state checks
    /// [`Proposal::in_force`] afterwards.
    pub(in crate::state) fn propose_for_state(&mut self, act: &Act<'_>, kind: ProposalKind) -> Result<(), Rejection> {
        self.propose(act, kind, act.threshold)
    }

    pub(super) fn suspension_of(&self, target: &SuspensionTarget) -> Result<SuspensionLevel, Rejection> {
        match target {
            SuspensionTarget::Customer(id) => self.customers.get(id).map(|c| c.suspension),
            SuspensionTarget::Deployment(id) => self.deployments.get(id).map(|d| d.suspension),
        }
        .ok_or_else(|| Rejection::NotFound("the suspension names no registered customer or deployment".into()))
    }

    /// Approves a proposal: in force once threshold-many admins approved it.
    pub(in crate::state) fn approve(&mut self, act: &Act<'_>, proposal: &Sha256Digest) -> Result<(), Rejection> {
        let Act { time, actor, threshold, valid_admins, .. } = *act;
        let Some(p) = self.proposals.get(proposal) else {
            return reject(Rejection::NotFound, "no proposal has this digest");
        };
        if p.in_force {
            return reject(Rejection::AlreadyRecorded, "the proposal is already in force");
        }
        if p.approvals.contains(&actor) {
            return reject(
                Rejection::DuplicateApproval,
                "this admin has already approved the proposal; one admin counts once",
            );
        }
        if time >= p.at.plus_seconds(PROPOSAL_LIFETIME) {
            return reject(
                Rejection::Stale,
                "the proposal expired (a proposal waits 30 days for its approvals); propose again",
            );
        }
        if let ProposalKind::Suspension { target, from, .. } = &p.kind {
            let now = self.suspension_of(target)?;
            if now != *from {
                return reject(
                    Rejection::Stale,
                    format!("the suspension changed since this proposal (it was {from}, it is {now}); propose again"),
                );
            }
        }
        if let ProposalKind::Contract { contract, .. } = &p.kind {
            let now = self.contracts.get(&contract.customer).map_or(0, |c| c.version);
            if now + 1 != contract.version {
                return reject(
                    Rejection::Stale,
                    format!(
                        "contract {} is at version {now} now, so this proposal of version {} no longer says what \
                     it changes; propose again",
                        contract.id, contract.version
                    ),
                );
            }
        }
        match &p.kind {
            ProposalKind::Licence { licence, from, .. } if self.licences.get(&licence.id) != from.as_ref() => {
                return reject(
                    Rejection::Stale,
                    format!(
                        "licence {} changed since this proposal, so it no longer says what it widens; propose again",
                        licence.id
                    ),
                );
            }
            ProposalKind::CaseMove { case, to, from, from_determination }
                if self.cases.get(case).is_none_or(|c| {
                    c.state != *from
                        || c.determination != *from_determination
                        || !legal_move(c.state, c.determination, *to)
                }) =>
            {
                return reject(Rejection::Stale, format!("case {case} moved since this proposal; propose again"));
            }
            ProposalKind::Deployment { deployment, .. } if self.deployments.contains_key(&deployment.id) => {
                return reject(
                    Rejection::AlreadyRecorded,
                    format!("deployment {} is already registered", deployment.id),
                );
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
            self.take_effect(&kind, act);
        }
        Ok(())
    }

    /// Records a proposal needing `needed` approvals (its maker's counts);
    /// with one, it takes effect at once.
    pub(super) fn propose(&mut self, act: &Act<'_>, kind: ProposalKind, needed: u32) -> Result<(), Rejection> {
        let Act { index, time: at, actor, digest, why, .. } = *act;
        if self.proposals.contains_key(&digest) {
            return reject(Rejection::AlreadyRecorded, "this exact proposal was already made");
        }
        let in_force = needed <= 1;
        if in_force {
            self.take_effect(&kind, act);
        }
        let proposal = Proposal {
            index,
            at,
            kind,
            proposer: actor,
            why: why.to_owned(),
            approvals: BTreeSet::from([actor]),
            in_force,
        };
        self.proposals.insert(digest, proposal);
        Ok(())
    }

    /// Puts a proposal in force. Infallible: whoever calls it has checked
    /// that what it changes exists (a suspension's target, a case) and has
    /// not moved, so that no entry is refused after changing the state.
    /// `act` is the entry that puts it in force (the proposal itself, or the
    /// approval that reached the threshold).
    fn take_effect(&mut self, kind: &ProposalKind, act: &Act<'_>) {
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
                    c.moves.push(super::CaseMove {
                        index: act.index,
                        time: act.time,
                        from: c.state,
                        to: *to,
                        determination: None,
                    });
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
