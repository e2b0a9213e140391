//! [`SubmissionTable`]: attestations, verifications and signals
//! ([`Submission`]) per submitter in the last hour, bounded by
//! [`SubmissionLimits`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::Status;

/// What a person adds to the ledger by a submission: the three kinds
/// bounded per submitter and period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Submission {
    /// A customer's end-use attestation.
    Attestation,
    /// An engineer's field verification.
    Verification,
    /// A misuse signal (an engineer's or an auditor's).
    Signal,
}

/// How many submissions of each kind one submitter may add per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubmissionLimits {
    /// Attestations per customer.
    pub attestations: usize,
    /// Verifications per engineer.
    pub verifications: usize,
    /// Signals per reporter.
    pub signals: usize,
    /// The sliding period they are counted over.
    pub period: Duration,
}

impl SubmissionLimits {
    fn bound(&self, kind: Submission) -> usize {
        match kind {
            Submission::Attestation => self.attestations,
            Submission::Verification => self.verifications,
            Submission::Signal => self.signals,
        }
    }
}

type Windows = HashMap<(Submission, String), std::collections::VecDeque<Instant>>;

/// The submissions each submitter (by subject id: a customer's certificates
/// share one count) made in the last period, as a sliding window of their
/// times. Keys are registered subjects only (the caller is resolved first),
/// and each window holds at most its bound, so the table stays small.
///
/// Not on the check-in path: only the three submission calls take its lock.
#[derive(Debug)]
pub struct SubmissionTable {
    limits: SubmissionLimits,
    windows: Arc<Mutex<Windows>>,
}

/// A place in a submitter's window, taken before the entry is appended.
/// It stays taken for the period unless [`SubmissionSlot::release`] gives
/// it back (the ledger refused the entry). A request the client abandons
/// while its entry is with the sequencer keeps its place: the entry may be
/// appended all the same.
#[derive(Debug)]
#[must_use = "a refused submission releases its place"]
pub struct SubmissionSlot {
    windows: Arc<Mutex<Windows>>,
    key: (Submission, String),
    at: Instant,
}

impl SubmissionTable {
    /// An empty table with `limits`.
    pub fn new(limits: SubmissionLimits) -> SubmissionTable {
        SubmissionTable { limits, windows: Arc::default() }
    }

    /// Takes a place for one more submission of `kind` by `submitter`, or
    /// ResourceExhausted naming the bound and when a place frees up.
    pub fn take(&self, kind: Submission, submitter: &str) -> Result<SubmissionSlot, Status> {
        let (bound, period) = (self.limits.bound(kind), self.limits.period);
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (kind, submitter.to_owned());
        let window = windows.entry(key.clone()).or_default();
        while window.front().is_some_and(|t| now.duration_since(*t) >= period) {
            window.pop_front();
        }
        if window.len() >= bound {
            let retry = window.front().map_or(period, |t| period.saturating_sub(now.duration_since(*t)));
            let what = match kind {
                Submission::Attestation => "attestations per customer",
                Submission::Verification => "verifications per engineer",
                Submission::Signal => "signals per reporter",
            };
            return Err(Status::resource_exhausted(format!(
                "the bound of {bound} {what} per {} s is reached; retry in {} s",
                period.as_secs(),
                retry.as_secs().max(1)
            )));
        }
        window.push_back(now);
        Ok(SubmissionSlot { windows: self.windows.clone(), key, at: now })
    }
}

impl SubmissionSlot {
    /// The submission was refused and nothing appended: its place is given
    /// back.
    pub fn release(self) {
        let mut windows = self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(window) = windows.get_mut(&self.key) {
            if let Some(i) = window.iter().rposition(|t| *t == self.at) {
                window.remove(i);
            }
            if window.is_empty() {
                windows.remove(&self.key);
            }
        }
    }
}
