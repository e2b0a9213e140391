//! Replay (`docs/design.md`, principle 2): fold a ledger and re-evaluate every grant
//! and withhold against the state folded from the entries before it and the
//! signed check-in the decision carries, re-deriving every other fact from
//! that state, never trusting what the decision says. Every difference is
//! returned with its ledger index; an entry the fold refuses is a mismatch
//! too (and is skipped, so the rest of the ledger is still checked).

use crate::envelope::Envelope;
use crate::ledger::{EntryHeader, EntryKind, Keyring};
use crate::policy::{Outcome, POLICY_VERSION, evaluate};
use crate::state::State;
use crate::statements::{AdminAction, Decision, Payload};

/// One difference between the ledger and its replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The entry's ledger index.
    pub index: u64,
    /// What differs: `verdict`, `release`, `withheld_above`, `conditions`,
    /// `suspension`, `contract`, `policy_version`, `state_size`,
    /// `expires_at`, `time`, `re-recorded` for an admin action whose exact
    /// payload an earlier entry already recorded, or `refused` for any other
    /// entry the fold refuses.
    pub field: &'static str,
    /// In words.
    pub detail: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "entry {}: {}: {}", self.index, self.field, self.detail)
    }
}

/// A replay's result: the mismatches, the decisions re-evaluated, and the
/// state folded from every entry the fold took.
#[derive(Debug, Clone)]
pub struct Replay {
    /// Every mismatch, in ledger order.
    pub mismatches: Vec<Mismatch>,
    /// Decisions re-evaluated.
    pub decisions: u64,
    /// The state at the end.
    pub state: State,
}

/// Replays entries `(index, header, body)` in ledger order from index 0.
///
/// The bodies must already be checked against their headers
/// (`EntryHeader::check_body` with each entry's salt) and the headers
/// against a signed checkpoint: replay judges what the entries say, not
/// whether they are the ledger's. `covenant audit replay` does both first.
/// `keyring` checks each header's subject tags against its body (the keys
/// of every subject the entries name, or the server's secret).
pub fn replay<'a>(keyring: Keyring, entries: impl IntoIterator<Item = (u64, &'a EntryHeader, &'a [u8])>) -> Replay {
    let mut state = State::with_keyring(keyring);
    let mut mismatches = Vec::new();
    let mut decisions = 0;
    for (index, header, body) in entries {
        if matches!(header.kind, EntryKind::Grant | EntryKind::Withhold) {
            decisions += 1;
            check_decision(&state, index, header, body, &mut mismatches);
        }
        if let Some(first) = re_recorded(&state, body) {
            mismatches.push(Mismatch {
                index,
                field: "re-recorded",
                detail: format!("re-records the admin action of entry {first}"),
            });
            state.skip();
            continue;
        }
        if let Err(e) = crate::policy::fold(&mut state, index, header, body) {
            mismatches.push(Mismatch { index, field: "refused", detail: e.to_string() });
            // Counted, not taken: later indexes and state sizes stay the ledger's.
            state.skip();
        }
    }
    Replay { mismatches, decisions, state }
}

/// The entry that first recorded this body's admin action, if the body is
/// an admin action already recorded.
fn re_recorded(state: &State, body: &[u8]) -> Option<u64> {
    let env = Envelope::parse(body).ok()?;
    if env.payload_type() != AdminAction::PAYLOAD_TYPE {
        return None;
    }
    state.recorded_action(&crate::digest::Sha256Digest::of(env.payload()))
}

fn check_decision(state: &State, index: u64, header: &EntryHeader, body: &[u8], out: &mut Vec<Mismatch>) {
    let mut push = |field: &'static str, detail: String| out.push(Mismatch { index, field, detail });
    // The signature is checked by the fold; here the content.
    let Some(logged) = Envelope::parse(body).ok().and_then(|e| Decision::parse(e.payload()).ok()) else {
        return; // the fold refuses it, naming why
    };
    if logged.issued_at > header.time {
        push("time", format!("issued at {} but logged at {}", logged.issued_at, header.time));
    }
    if logged.policy_version != POLICY_VERSION {
        push(
            "policy_version",
            format!("made by policy {}, this replay is policy {POLICY_VERSION}", logged.policy_version),
        );
        return;
    }
    let checkin = match state.verify_checkin(&logged.checkin) {
        Ok(c) => c,
        Err(e) => return push("checkin", e.to_string()),
    };
    let expected = match evaluate(state, &checkin, logged.issued_at) {
        Ok(Outcome::Decided(d)) => d,
        Ok(Outcome::Current) => return push("verdict", "no newer release existed: the answer was current".into()),
        Err(e) => return push("verdict", e.to_string()),
    };
    if logged.verdict != expected.verdict {
        push("verdict", format!("logged {:?}, replay gives {:?}", logged.verdict, expected.verdict));
    }
    if logged.release != expected.release {
        push("release", format!("logged {:?}, replay gives {:?}", logged.release, expected.release));
    }
    if logged.withheld_above != expected.withheld_above {
        let names = |w: &[crate::statements::WithheldRelease]| {
            w.iter().map(|r| r.version.to_string()).collect::<Vec<_>>().join(", ")
        };
        push(
            "withheld_above",
            format!(
                "logged [{}], replay gives [{}] (or their reasons differ)",
                names(&logged.withheld_above),
                names(&expected.withheld_above)
            ),
        );
    }
    if logged.conditions != expected.conditions {
        let differing: Vec<&str> = expected
            .conditions
            .iter()
            .filter(|c| !logged.conditions.contains(c))
            .map(|c| c.condition.as_str())
            .collect();
        push(
            "conditions",
            format!("differ in: {}", if differing.is_empty() { "their list".into() } else { differing.join(", ") }),
        );
    }
    if logged.suspension != expected.suspension {
        push("suspension", format!("logged {}, replay gives {}", logged.suspension, expected.suspension));
    }
    if logged.contract != expected.contract {
        push("contract", format!("logged {:?}, replay gives {:?}", logged.contract, expected.contract));
    }
    if logged.state_size != index {
        push("state_size", format!("evaluated at {} entries, but logged after {index}", logged.state_size));
    }
    if logged.expires_at != expected.expires_at {
        push("expires_at", format!("logged {:?}, replay gives {:?}", logged.expires_at, expected.expires_at));
    }
    if let Some(courier) = &logged.courier
        && !state.may_carry(courier, &logged.deployment)
    {
        push(
            "courier",
            format!(
                "names {} as the engineer who carried the check-in, but no active engineer of that id had {} in \
                 scope",
                crate::text::Untrusted(courier),
                logged.deployment
            ),
        );
    }
}
