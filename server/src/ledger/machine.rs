//! What the sequencer folds entries into and is asked for: the
//! [`StateMachine`] trait (validate and apply, prepare a request, tag
//! subjects), the annotation-only [`NoteCounter`], a [`NewEntry`], a
//! [`Request`] and what [`StateMachine::prepare`] makes of it ([`Prepared`]),
//! and the ledger's [`Clock`].

use std::sync::Arc;

use covenant_core::digest::{Sha256Digest, Timestamp};
use covenant_core::keys::KeyId;
use covenant_core::ledger::{EntryHeader, EntryKind, SubjectTag};
use covenant_core::state::{Rejection, SignedCheckIn};

/// A state machine folded from the ledger, entry by entry: the validator
/// and applier the sequencer runs before anything is written.
pub trait StateMachine: Send + 'static {
    /// Folds a stored entry when the ledger opens. An error refuses to open.
    fn replay(&mut self, index: u64, header: &EntryHeader, body: &[u8]) -> Result<(), String>;
    /// Validates a new entry against the state folded so far and applies it.
    /// A refused entry is never written.
    fn apply(&mut self, index: u64, header: &EntryHeader, body: &[u8]) -> Result<(), Rejection>;
    /// Turns a request into the entry to append at `index` with ledger time
    /// `time`, in ledger order, against exactly the state before it: the
    /// place where a check-in ([`Request::Decide`]) is evaluated and its
    /// decision signed. By default an [`Request::Append`] is its entry and
    /// a check-in is refused (this state machine decides nothing).
    fn prepare(&mut self, index: u64, time: Timestamp, request: Request) -> Result<Prepared, Rejection> {
        let _ = (index, time);
        match request {
            Request::Append(entry) => Ok(Prepared::Append(entry)),
            Request::Decide(_) => Err(Rejection::Unavailable("this ledger decides no check-ins".into())),
        }
    }
    /// The header's subject tags for an entry concerning `subjects` whose
    /// body digest is `body_digest` (see `covenant_core::ledger`). By
    /// default none: a state machine without a subject keyring (the
    /// annotation counter of the ledger's own tests) tags nothing.
    fn tags(&self, subjects: &[String], body_digest: &Sha256Digest) -> Result<Vec<SubjectTag>, Rejection> {
        let _ = (subjects, body_digest);
        Ok(Vec::new())
    }
}

/// What [`StateMachine::prepare`] makes of a request.
#[derive(Debug, Clone)]
pub enum Prepared {
    /// Append this entry.
    Append(NewEntry),
    /// Append nothing: the entry at this index (if any) already says it.
    Nothing(Option<u64>),
}

/// The annotation-only state of this stage: accepts well-formed notes and
/// counts them. Issue #5 replaces it with the governance fold.
#[derive(Debug, Default, Clone)]
pub struct NoteCounter {
    /// Notes folded.
    pub notes: u64,
}

impl StateMachine for NoteCounter {
    fn replay(&mut self, _index: u64, header: &EntryHeader, _body: &[u8]) -> Result<(), String> {
        match header.kind {
            EntryKind::Note => {
                self.notes += 1;
                Ok(())
            }
            #[allow(unreachable_patterns)] // EntryKind grows in later issues.
            other => Err(format!("unexpected entry kind {other}")),
        }
    }

    fn apply(&mut self, _index: u64, header: &EntryHeader, body: &[u8]) -> Result<(), Rejection> {
        if header.kind != EntryKind::Note {
            return Err(Rejection::Precondition(format!("entry kind {} is not accepted yet", header.kind)));
        }
        if body.is_empty() {
            return Err(Rejection::Malformed("an annotation needs a body".into()));
        }
        self.notes += 1;
        Ok(())
    }
}

/// An entry to append.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// Its kind.
    pub kind: EntryKind,
    /// The key that signed the body, if any.
    pub actor: Option<KeyId>,
    /// The subject ids it concerns: never written, only turned into the
    /// header's subject tags by [`StateMachine::tags`].
    pub subjects: Vec<String>,
    /// The body: exact envelope bytes.
    pub body: Vec<u8>,
}

/// What an appender asks the sequencer for.
#[derive(Debug, Clone)]
pub enum Request {
    /// Append this entry (validated and applied by the state machine).
    Append(NewEntry),
    /// Decide a device's check-in in ledger order: the state machine
    /// evaluates it against exactly the state at its index and turns it into
    /// the signed decision to log, or into nothing when the standing one
    /// says the same (then the append answers [`AppendError::Nothing`](super::AppendError::Nothing)).
    /// Boxed: a verified check-in is several times an entry's size.
    Decide(Box<ToDecide>),
}

/// A check-in for the sequencer to decide, and who carried it.
#[derive(Debug, Clone)]
pub struct ToDecide {
    /// The device-signed check-in, verified against the state.
    pub checkin: SignedCheckIn,
    /// The identity id of the engineer who carried it from an air-gapped
    /// site, recorded in the decision's body (`Decision::courier`); `None`
    /// when the device called itself.
    pub courier: Option<String>,
}

/// The source of ledger time (seconds); the sequencer never lets it go back.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| Timestamp::since_epoch(std::time::SystemTime::now()))
}
