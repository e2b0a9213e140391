//! Decisions and reports in the ledger: whether a fresh decision is logged
//! (`logging`), whether a logged grant still stands (`grant_stands`), and
//! `fold`, which applies an entry to the state with the rules that need the
//! policy.

use super::{Context, suspension_reason};
use crate::digest::Timestamp;
use crate::envelope::Envelope;
use crate::ledger::{EntryHeader, EntryKind};
use crate::state::{Rejection, State};
use crate::statements::{ConditionStatus, Decision, InstallOutcome, InstallReport, Payload as _, Verdict};
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
