//! The admin actions, as one exhaustive `match` over [`ActionKind`]: each
//! action's signature, signer and time window are checked here, then the
//! action goes to its method (identity actions in `identity.rs`, governance
//! in `governance/actions.rs`), so a new kind of action does not compile
//! until it is folded.

use super::governance::{ACTION_CLOCK_SKEW, ACTION_WINDOW, Act};
use super::rejection::{Rejection, reject};
use super::{Identity, State};
use crate::envelope;
use crate::keys::KeySet;
use crate::ledger::EntryHeader;
use crate::statements::{ActionKind, AdminAction};

impl State {
    pub(super) fn apply_action(&mut self, index: u64, header: &EntryHeader, body: &[u8]) -> Result<(), Rejection> {
        let signers = self.any_admin()?;
        let verified =
            envelope::verify::<AdminAction>(body, &signers).map_err(|e| Rejection::envelope("the admin action", e))?;
        let Some(actor) = header.actor else {
            return reject(Rejection::Malformed, "an admin action names its signer as actor");
        };
        if !verified.signers().contains(&actor) {
            return reject(Rejection::NotAllowed, "the entry's actor did not sign the action");
        }
        if self.admin_revoked(&actor) {
            return reject(Rejection::Revoked, "the admin action is signed by a revoked admin key");
        }
        let proposal_digest = verified.payload_digest();
        // An action is recorded once, within a day of when it was signed: so
        // no one holding an old signed action (the operator of a stopped
        // server, say) can record it again to undo what came after it.
        if let Some(first) = self.actions.get(&proposal_digest) {
            return reject(
                Rejection::AlreadyRecorded,
                format!("this admin action re-records the action of entry {first}; sign a new one"),
            );
        }
        if verified.issued_at < header.time.plus_seconds(-ACTION_WINDOW) {
            return reject(
                Rejection::Stale,
                format!(
                    "the admin action was issued at {}, more than a day from its ledger time {}; sign it again",
                    verified.issued_at, header.time
                ),
            );
        }
        if verified.issued_at > header.time.plus_seconds(ACTION_CLOCK_SKEW) {
            return reject(
                Rejection::Stale,
                format!(
                    "the admin action is dated {}, after its ledger time {} by more than the {ACTION_CLOCK_SKEW} s of \
                 clock skew allowed; sign it again with a correct clock",
                    verified.issued_at, header.time
                ),
            );
        }
        let valid = self.valid_admins()?;
        let threshold = self.admin_keys()?.threshold();
        let act = Act {
            index,
            time: header.time,
            actor,
            digest: proposal_digest,
            threshold,
            why: &verified.why,
            valid_admins: &valid,
        };
        self.apply_action_kind(&act, &verified.action, &signers)?;
        self.actions.insert(proposal_digest, index);
        Ok(())
    }

    fn apply_action_kind(&mut self, act: &Act<'_>, action: &ActionKind, signers: &KeySet) -> Result<(), Rejection> {
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
                    issued_at_index: act.index,
                    revoked: None,
                };
                self.issue_identity(act, identity, certificate_sha256, signers)
            }
            ActionKind::RevokeIdentity { certificate_sha256, compromised_since } => {
                self.revoke_identity(act, certificate_sha256, *compromised_since)
            }
            ActionKind::Approve { proposal } => self.approve(act, proposal, signers),
            ActionKind::CaseTransition { case, to, determination } => {
                self.gov.move_case(act, case, *to, *determination)
            }
            ActionKind::ProposeSuspension { target, level } => self.gov.propose_suspension(act, target, *level),
            ActionKind::RegisterCustomer { customer, legal_name, country } => {
                if self.person_named(customer) {
                    return reject(
                        Rejection::Precondition,
                        format!("{customer} is a person's id; a customer needs an id of its own"),
                    );
                }
                self.gov.register_customer(customer, legal_name, country)
            }
            ActionKind::RegisterDeployment { deployment, customer, product, site, provisioned_version } => {
                if self.person_named(deployment) {
                    return reject(
                        Rejection::Precondition,
                        format!("{deployment} is a person's id; a deployment needs an id of its own"),
                    );
                }
                self.gov.register_deployment(act, deployment, customer, product, site, provisioned_version)
            }
            ActionKind::SetContract { contract } => self.gov.set_contract(act, contract),
            ActionKind::ProposeWaiver { deployment, condition, until } => {
                self.gov.propose_waiver(act, deployment, condition, *until)
            }
            ActionKind::ProposeSecurityFix { deployment, release } => {
                self.gov.propose_security_fix(act, deployment, release)
            }
            ActionKind::ListDeniedParty { party } => self.gov.list_denied_party(party),
            ActionKind::RecordLicence { licence } => self.gov.record_licence(act, licence),
        }
    }
}
