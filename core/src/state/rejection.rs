//! Why the fold refused an entry, by cause. Each variant carries the words
//! for the person who sent it (what its `Display` prints); the cause is
//! what a server maps to its answer's code (`server::node::refusal_code`), so one
//! enum serves the fold, the sequencer and the gRPC handlers.

use crate::envelope::EnvelopeError;

/// Why an entry was refused: its cause, with the words for the person who
/// sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// Signed by a key that no identity was ever registered with.
    #[error("{0}")]
    NotRegistered(String),
    /// Signed by a key whose identity is revoked.
    #[error("{0}")]
    Revoked(String),
    /// Signed by a registered key that may not sign this (another role,
    /// another customer or deployment, or not the entry's actor).
    #[error("{0}")]
    NotAllowed(String),
    /// Too old or overtaken: an expired proposal, one whose subject changed
    /// since it was made, an action or attestation outside its time window.
    #[error("{0}")]
    Stale(String),
    /// An approval by an admin who already approved (or made) the proposal:
    /// one admin counts once.
    #[error("{0}")]
    DuplicateApproval(String),
    /// What the entry would record is already recorded (registered,
    /// published, answered, in force).
    #[error("{0}")]
    AlreadyRecorded(String),
    /// A signature does not verify against the key that must have signed.
    #[error("{0}")]
    BadSignature(String),
    /// The body or envelope does not parse, or the header does not match
    /// the body.
    #[error("{0}")]
    Malformed(String),
    /// A rule the state sets is broken (an order, a version, a move, a
    /// baseline).
    #[error("{0}")]
    Precondition(String),
    /// What the entry names does not exist: no such customer, deployment,
    /// case, proposal, release, identity or grant.
    #[error("{0}")]
    NotFound(String),
    /// The server that folds cannot take it now (it holds no decision or
    /// subject key, its state is elsewhere): nothing is wrong with the entry.
    #[error("{0}")]
    Unavailable(String),
}

impl Rejection {
    /// The words for the person who sent the entry (what `Display` prints).
    pub fn message(&self) -> &str {
        match self {
            Rejection::NotRegistered(m)
            | Rejection::Revoked(m)
            | Rejection::NotAllowed(m)
            | Rejection::Stale(m)
            | Rejection::DuplicateApproval(m)
            | Rejection::AlreadyRecorded(m)
            | Rejection::BadSignature(m)
            | Rejection::Malformed(m)
            | Rejection::Precondition(m)
            | Rejection::NotFound(m)
            | Rejection::Unavailable(m) => m,
        }
    }

    /// `what` (e.g. "the release") is refused for an envelope error `e`: a
    /// signature that does not verify, or an envelope that does not parse.
    pub fn envelope(what: &str, e: EnvelopeError) -> Rejection {
        let words = format!("{what} is refused: {e}");
        match e {
            EnvelopeError::ThresholdNotMet { .. } => Rejection::BadSignature(words),
            EnvelopeError::TooLarge { .. }
            | EnvelopeError::Malformed(_)
            | EnvelopeError::BadBase64(_)
            | EnvelopeError::TooManySignatures { .. }
            | EnvelopeError::WrongPayloadType { .. }
            | EnvelopeError::Payload(_) => Rejection::Malformed(words),
        }
    }
}

/// Refuses with `cause` (a variant of [`Rejection`]) and the words `why`.
pub(crate) fn reject<T>(cause: fn(String) -> Rejection, why: impl Into<String>) -> Result<T, Rejection> {
    Err(cause(why.into()))
}
