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
use crate::envelope::Envelope;
use crate::ledger::{EntryHeader, EntryKind};
use crate::state::{AttestationFact, Deployment, Rejection, Release, SignedCheckIn, State, VerificationFact};
use crate::statements::{
    CaseState, Condition, ConditionName, ConditionResult, ConditionStatus, Contract, ContractRef, Decision,
    DecisionTag, InstallOutcome, InstallReport, Payload as _, ReleaseClass, SchemaV1, SuspensionLevel, Verdict,
    WithheldRelease,
};

/// The version of these rules; every decision records it.
pub const POLICY_VERSION: u32 = 1;

/// The name of the pseudo-condition reported when no contract binds a
/// deployment (nothing is delivered without one).
pub const CONTRACT_CONDITION: &str = "contract";

const DAY: i64 = 86_400;

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

struct Context<'a> {
    state: &'a State,
    dep: &'a Deployment,
    checkin: &'a SignedCheckIn,
    now: Timestamp,
    contract: Option<&'a Contract>,
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
    fn conditions(&self, release: &Release) -> Vec<ConditionResult> {
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

/// Whether a fresh decision goes into the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logging {
    /// Log it: nothing standing says the same.
    Log,
    /// Do not: the decision at this ledger index stands and says the same.
    Standing(u64),
    /// Do not: the deployment has had [`MAX_DECISIONS_PER_PERIOD`] decisions
    /// logged within the last [`LOGGING_PERIOD`] seconds; the decision at
    /// this index stands until the period has room (the caller counts it).
    ///
    /// [`MAX_DECISIONS_PER_PERIOD`]: crate::state::MAX_DECISIONS_PER_PERIOD
    /// [`LOGGING_PERIOD`]: crate::state::LOGGING_PERIOD
    Bounded(u64),
}

/// `docs/policy.md`, "Decisions": a grant is logged when no unexpired
/// grant of the same release to the same deployment stands; a withhold when
/// its verdict or its reasons change. The standing decision is the
/// deployment's newest logged one. Besides grants of a release the
/// deployment was never granted, a deployment has at most
/// [`MAX_DECISIONS_PER_PERIOD`](crate::state::MAX_DECISIONS_PER_PERIOD)
/// decisions logged per period, counted from the ledger alone, so the bound
/// is the same for whoever replays it.
pub fn logging(state: &State, fresh: &Decision, now: Timestamp) -> Logging {
    let Some(last) = state.facts().decisions_of(&fresh.deployment).last() else { return Logging::Log };
    let stands = match fresh.verdict {
        Verdict::Grant => {
            last.verdict == Verdict::Grant && last.release == fresh.release && last.expires_at.is_some_and(|e| now < e)
        }
        Verdict::Withhold => last.verdict == Verdict::Withhold && last.reasons == crate::state::reasons_digest(fresh),
    };
    // A grant of a release this deployment was never granted is always
    // logged: how many there can be is the vendor's doing, not the device's.
    let first_grant = fresh
        .release
        .is_some_and(|r| !state.facts().decisions_of(&fresh.deployment).iter().any(|d| d.release == Some(r)));
    if stands {
        Logging::Standing(last.index)
    } else if !first_grant
        && state.facts().decisions_in_period(&fresh.deployment, now) >= crate::state::MAX_DECISIONS_PER_PERIOD
    {
        Logging::Bounded(last.index)
    } else {
        Logging::Log
    }
}

/// Whether a logged grant still stands at `now`: unexpired, its release
/// still newer than the version the ledger records as installed, and the
/// state now would still let that release through to the check-in the
/// grant answered (every condition met, not applicable or waived, and the
/// suspension table allowing it). A suspension, revocation or case that
/// would withhold it voids it at once. A newer release published since
/// does not: the grant's own release is judged, not whether it is still
/// the newest on offer.
pub fn grant_stands(state: &State, grant: &crate::state::DecisionFact, now: Timestamp) -> bool {
    if grant.verdict != Verdict::Grant || grant.expires_at.is_none_or(|e| now >= e) {
        return false;
    }
    let Some(release) = grant.release.as_ref().and_then(|r| state.facts().release(r)) else { return false };
    let Ok(checkin) = state.verify_checkin(&grant.checkin) else { return false };
    let Some(dep) = state.deployment(&checkin.deployment) else { return false };
    if dep.product != release.manifest.product || release.manifest.version <= dep.installed_version {
        return false;
    }
    let facts = state.facts();
    let contract = facts.contract_of(&dep.customer).filter(|c| c.covers(&dep.id));
    let ctx = Context { state, dep, checkin: &checkin, now, contract };
    let level = facts.effective_suspension(dep);
    let installed_baseline =
        facts.release_of(&dep.product, &dep.installed_version).map(|r| &r.manifest.capability_baseline);
    ctx.conditions(release).iter().all(|c| c.status != ConditionStatus::Unmet)
        && suspension_reason(state, dep, release, level, installed_baseline).is_none()
}

/// Folds one entry into the state: every rule of [`State::apply`], and
/// before it the rules that need the policy, which the state cannot apply
/// itself (`policy` reads `state`, so `state` cannot call back here). The
/// server's sequencer, its start-up fold and `audit replay` all fold
/// through this function, so a rule here holds for whoever folds.
///
/// The rule: an install report of outcome `installed` is taken only if
/// the grant it names still stood at the report's ledger time
/// ([`grant_stands`], judged on the state before the report). A device
/// cannot have downloaded a grant that no longer stood (the download is
/// refused), so a report that it installed one would only let it pick its
/// own baseline.
pub fn fold(state: &mut State, index: u64, header: &EntryHeader, body: &[u8]) -> Result<(), Rejection> {
    if header.kind == EntryKind::Report {
        check_install_report(state, header.time, body)?;
    }
    state.apply(index, header, body)
}

fn check_install_report(state: &State, time: Timestamp, body: &[u8]) -> Result<(), Rejection> {
    // What does not parse, or was already recorded, the state refuses with
    // its own words.
    let Ok(env) = Envelope::parse(body) else { return Ok(()) };
    let Ok(report) = InstallReport::parse(env.payload()) else { return Ok(()) };
    if report.outcome != InstallOutcome::Installed
        || state.facts().report_index(&crate::digest::Sha256Digest::of(env.payload())).is_some()
    {
        return Ok(());
    }
    let grant = state.facts().decisions_of(&report.deployment).iter().find(|d| d.index == report.grant_index);
    match grant {
        Some(grant) if grant.verdict == Verdict::Grant && !grant_stands(state, grant, time) => {
            Err(Rejection::Stale(format!(
                "grant {} no longer stood when the install was reported (it expired, or a suspension, case or other \
             change withholds its release): the installed version is not raised",
                report.grant_index
            )))
        }
        _ => Ok(()),
    }
}
