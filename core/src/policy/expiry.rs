//! When what a deployment's contract reads runs out: its end-use
//! attestation, its field verification and its export licences, each as the
//! conditions judge them (the attestation and verification that count, the
//! contract's `max_age_days`). The read side flags a deployment *expiring*
//! from these before a withhold says so.

use crate::digest::Timestamp;
use crate::state::{Deployment, State};
use crate::statements::{Condition, VerificationResult};

const DAY: i64 = 86_400;

/// When each of a deployment's standing facts stops satisfying its
/// contract; `None` where the contract asks for none or there is none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expiries {
    /// The end-use attestation that counts: the earlier of its
    /// `valid_until` and its ledger time plus the contract's `max_age_days`.
    pub attestation: Option<Timestamp>,
    /// The passing field verification of that attestation: its date plus
    /// the contract's `max_age_days`.
    pub verification: Option<Timestamp>,
    /// The earliest end of the licences the contract names.
    pub licence: Option<Timestamp>,
}

/// When `dep`'s attestation, verification and licences run out under the
/// contract that covers it.
pub fn expiries(state: &State, dep: &Deployment) -> Expiries {
    let facts = state.facts();
    let mut out = Expiries::default();
    let Some(contract) = facts.contract_of(&dep.customer).filter(|c| c.covers(&dep.id)) else { return out };
    let attestation = facts.attestations_of(&dep.id).find(|a| state.signature_counts(&a.signer, a.time));
    for condition in &contract.conditions {
        match condition {
            Condition::EndUseAttested { max_age_days, .. } => {
                out.attestation = attestation.map(|a| {
                    let aged = a.time.plus_seconds(i64::from(*max_age_days) * DAY);
                    aged.min(a.predicate.valid_until)
                });
            }
            Condition::FieldVerified { max_age_days, .. } => {
                out.verification = attestation
                    .and_then(|att| {
                        facts.verifications_of(&dep.id).find(|v| {
                            v.predicate.attestation == att.digest && state.signature_counts(&v.signer, v.time)
                        })
                    })
                    .filter(|v| v.predicate.result == VerificationResult::Pass)
                    .map(|v| v.predicate.date.plus_seconds(i64::from(*max_age_days) * DAY));
            }
            Condition::LicenceValid { licence } => {
                if let Some(l) = facts.licence(licence) {
                    out.licence = Some(out.licence.map_or(l.expires, |t| t.min(l.expires)));
                }
            }
            _ => {}
        }
    }
    out
}
