//! Policy: `evaluate(&State, &check-in, now)` decides whether a deployment
//! gets an update (`docs/policy.md`; `docs/design.md`, "One update
//! decision"). A pure function: the same state, check-in and time give the
//! same decision, which is how an auditor replays it.
//!
//! A release is offered when every condition of the deployment's contract is
//! met, not applicable, or waived, and the suspension table lets its class
//! through. The newest such release is offered; newer ones are named in
//! `withheld_above` with the reasons. Every reason is written for the
//! customer's operator and says what fixes it; a withhold caused by a misuse
//! case says only that a compliance review is open and whom to contact.

use crate::digest::Timestamp;
use crate::state::{Deployment, Rejection, Release, SignedCheckIn, State};
use crate::statements::{
    ConditionResult, ConditionStatus, ContractRef, Decision, DecisionTag, ReleaseClass, SchemaV1, SuspensionLevel,
    Verdict, WithheldRelease,
};

mod conditions;
mod decisions;
mod expiry;

use conditions::Context;
pub use decisions::{Logging, fold, grant_stands, logging};
pub use expiry::{Expiries, expiries};

/// The version of these rules; every decision records it.
pub const POLICY_VERSION: u32 = 1;

/// The name of the pseudo-condition reported when no contract binds a
/// deployment (nothing is delivered without one).
pub const CONTRACT_CONDITION: &str = "contract";

/// What a check-in gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No newer release exists at all for the deployment's product.
    Current,
    /// A grant or a withhold, to be signed with the decision key and logged.
    Decided(Box<Decision>),
}

/// Why a check-in cannot be evaluated at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The check-in names a deployment that is not registered.
    #[error("deployment {0} is not registered")]
    UnknownDeployment(String),
    /// The check-in names another product than the deployment's.
    #[error("deployment {deployment} runs {registered}, not {claimed}")]
    WrongProduct {
        /// The deployment.
        deployment: String,
        /// Its registered product.
        registered: String,
        /// What the check-in says.
        claimed: String,
    },
}

impl From<PolicyError> for Rejection {
    fn from(e: PolicyError) -> Rejection {
        match e {
            PolicyError::UnknownDeployment(_) => Rejection::NotFound(e.to_string()),
            PolicyError::WrongProduct { .. } => Rejection::Precondition(e.to_string()),
        }
    }
}

/// Whether the suspension table (`docs/policy.md`) lets a release of `class`, built
/// on `baseline`, through to a deployment whose installed capability
/// baseline is `installed` under `level`; `approved` is whether two admins
/// approved this security fix for this deployment (needed under L2).
/// `installed` is the baseline the ledger records for the installed
/// version's release, never what the device claims; `None` when the
/// installed version is not a published release (then nothing that needs
/// "baseline ≤ installed" passes). `Err` carries the reason, in words.
pub fn suspension_allows(
    level: SuspensionLevel,
    class: ReleaseClass,
    baseline: &semver::Version,
    installed: Option<&semver::Version>,
    approved: bool,
) -> Result<(), String> {
    use ReleaseClass as C;
    use SuspensionLevel as L;
    let not_newer = || match installed {
        Some(installed) if baseline <= installed => Ok(()),
        Some(installed) => Err(format!(
            "under an {level} suspension a {class} release must be built on capability baseline {installed} \
             or older, and this one is built on {baseline}"
        )),
        None => Err(format!(
            "under an {level} suspension a {class} release must not be newer in capability than the installed \
             version, and the installed version is not a published release"
        )),
    };
    let never = || Err(format!("an {level} suspension does not allow {class} releases"));
    match (level, class) {
        (L::None, _) => Ok(()),
        (L::LegalHold, _) => Err("a legal hold stops every update".to_owned()),
        (_, C::Capability) => never(),
        (_, C::CapabilityRemoval) => Ok(()),
        (L::L1, C::SecurityFix | C::ComplianceEnabling) | (L::L2 | L::L3, C::ComplianceEnabling) => not_newer(),
        (L::L2, C::SecurityFix) => {
            if approved {
                not_newer()
            } else {
                Err("under an L2 suspension a security fix needs the approval of two compliance officers for this \
                     deployment and release"
                    .to_owned())
            }
        }
        (L::L3, C::SecurityFix) => never(),
    }
}

/// Evaluates a verified check-in against the state at `now`.
pub fn evaluate(state: &State, checkin: &SignedCheckIn, now: Timestamp) -> Result<Outcome, PolicyError> {
    let dep = state
        .deployment(&checkin.deployment)
        .ok_or_else(|| PolicyError::UnknownDeployment(checkin.deployment.clone()))?;
    if dep.product != checkin.product {
        return Err(PolicyError::WrongProduct {
            deployment: dep.id.clone(),
            registered: dep.product.clone(),
            claimed: checkin.product.clone(),
        });
    }
    let facts = state.facts();
    // The installed version is the ledger's (provisioned at registration,
    // then established by logged install reports), never the device's
    // claim: a claim would let a device pick its own baseline.
    let installed = &dep.installed_version;
    let newer = facts.releases_newer(&dep.product, installed);
    if newer.is_empty() {
        return Ok(Outcome::Current);
    }
    let level = facts.effective_suspension(dep);
    let installed_baseline = facts.release_of(&dep.product, installed).map(|r| &r.manifest.capability_baseline);
    let finding = (checkin.installed_version != *installed).then(|| {
        format!(
            "Deployment {} claims to run {} {}, but the ledger records {installed} (provisioned, or installed under a \
             reported grant); the claim was not used.",
            dep.id, dep.product, checkin.installed_version
        )
    });
    let contract = facts.contract_of(&dep.customer).filter(|c| c.covers(&dep.id));
    let ctx = Context { state, dep, checkin, now, contract };

    // Only licence_valid depends on the release: the others are evaluated
    // once, and a withheld release's reasons refer to them by name.
    let newest = ctx.conditions(newer[0]);
    let for_release = |release: &Release| -> Vec<ConditionResult> {
        let mut c = newest.clone();
        if let Some(l) =
            c.iter_mut().find(|c| c.condition == "licence_valid" && c.status != ConditionStatus::NotApplicable)
        {
            *l = ctx.conditions(release).into_iter().find(|c| c.condition == "licence_valid").unwrap_or(l.clone());
        }
        c
    };
    let mut offered: Option<&Release> = None;
    let mut withheld = Vec::new();
    for release in &newer {
        let mut reasons: Vec<String> = for_release(release)
            .into_iter()
            .filter(|c| c.status == ConditionStatus::Unmet)
            .map(|c| {
                if c.condition == "licence_valid" {
                    c.reason
                } else {
                    format!(
                        "The condition {} is unmet for deployment {} (its reason is under conditions).",
                        c.condition, dep.id
                    )
                }
            })
            .collect();
        reasons.extend(suspension_reason(state, dep, release, level, installed_baseline));
        if reasons.is_empty() {
            offered = Some(release);
            break;
        }
        withheld.push(WithheldRelease { release: release.digest, version: release.manifest.version.clone(), reasons });
    }
    // The conditions reported are those of the release offered, or of the
    // newest release when none is.
    let reported = offered.or(newer.first().copied());
    let conditions = reported.map(for_release).unwrap_or_default();
    let decision = Decision {
        type_tag: DecisionTag,
        schema: SchemaV1,
        deployment: dep.id.clone(),
        verdict: if offered.is_some() { Verdict::Grant } else { Verdict::Withhold },
        release: offered.map(|r| r.digest),
        withheld_above: withheld,
        conditions,
        suspension: level,
        checkin: checkin.bytes().to_vec(),
        contract: contract.map(|c| ContractRef { id: c.id.clone(), version: c.version }),
        policy_version: POLICY_VERSION,
        state_size: state.size(),
        issued_at: now,
        expires_at: offered.and(contract).map(|c| now.plus_seconds(i64::from(c.grant_validity_seconds))),
        finding,
        courier: None,
    };
    Ok(Outcome::Decided(Box::new(decision)))
}

/// Why the suspension table withholds `release` from `dep`, if it does.
fn suspension_reason(
    state: &State,
    dep: &Deployment,
    release: &Release,
    level: SuspensionLevel,
    installed_baseline: Option<&semver::Version>,
) -> Option<String> {
    let approved = state.facts().security_fix_approved(&dep.id, &release.digest);
    suspension_allows(
        level,
        release.manifest.class,
        &release.manifest.capability_baseline,
        installed_baseline,
        approved,
    )
    .err()
    .map(|why| {
        format!(
            "Release {} of {} is withheld from deployment {}: {why}.",
            release.manifest.version, dep.product, dep.id
        )
    })
}
