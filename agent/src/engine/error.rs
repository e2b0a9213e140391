//! [`AgentError`]: why a cycle stopped, and which of those the daemon
//! retries ([`AgentError::is_transient`]) or stops for
//! ([`AgentError::needs_the_vendor`]).

use covenant_core::digest::Sha256Digest;
use covenant_core::update::Refusal;

use super::transport::TransportError;

/// Why a cycle stopped. Each attack on the updater ends in one of these,
/// with nothing installed and the active slot untouched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The answer failed verification.
    #[error("the server's answer is refused: {0}")]
    Refused(#[from] Refusal),
    /// The downloaded bytes are not the release's artifact.
    #[error("the downloaded artifact has SHA-256 {found}, the release names {expected}; discarded")]
    ArbitrarySoftware {
        /// The release's digest.
        expected: Sha256Digest,
        /// What arrived.
        found: Sha256Digest,
    },
    /// The stream sent more than the release declares.
    #[error("the stream sent more than the {declared} bytes the release declares")]
    EndlessData {
        /// The declared size.
        declared: u64,
    },
    /// A chunk arrived for another offset than the next one.
    #[error("a chunk for offset {found} arrived where offset {expected} was next")]
    OutOfOrder {
        /// The next offset.
        expected: u64,
        /// The chunk's.
        found: u64,
    },
    /// No byte arrived for too long; the bytes so far are kept for resuming.
    #[error("the download stalled for {seconds} s at byte {at}; it resumes on the next attempt")]
    Stalled {
        /// The stall timeout.
        seconds: u64,
        /// Bytes staged.
        at: u64,
    },
    /// The stream ended before the declared size; resumes later.
    #[error("the stream ended at byte {at} of {declared}; it resumes on the next attempt")]
    Truncated {
        /// Bytes staged.
        at: u64,
        /// The declared size.
        declared: u64,
    },
    /// The server could not be reached, failed, or refuses this device
    /// ([`TransportError`] says which).
    #[error("{0}")]
    Transport(#[from] TransportError),
    /// The state directory.
    #[error("the state directory: {0}")]
    Storage(#[from] std::io::Error),
    /// The state directory holds something unusable.
    #[error("the state directory: {0}")]
    State(String),
    /// An offline bundle is refused before its answer is verified.
    #[error("the offline bundle is refused: {0}")]
    Offline(#[from] OfflineError),
}

/// Why an offline bundle is refused before (or besides) the verification
/// every answer gets. Nothing is installed after any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OfflineError {
    /// The bundle's bytes are not a bundle (truncated, over a limit, garbage).
    #[error("{0}")]
    Format(#[from] covenant_core::offline::BundleError),
    /// No request is outstanding: none was made, or its answer was already
    /// installed (a bundle is used once).
    #[error("no offline request is outstanding on this device (its answer was used already, or none was made)")]
    NoRequest,
    /// The bundle answers a request of another deployment.
    #[error("the bundle is for deployment {found}, this device is {expected}")]
    AnotherDevice {
        /// This device's deployment.
        expected: String,
        /// The bundle's.
        found: String,
    },
    /// The bundle answers another request than the outstanding one (an
    /// older request, or one already used).
    #[error("the bundle answers request {found}, the outstanding request is {expected}")]
    AnotherRequest {
        /// The outstanding nonce.
        expected: Sha256Digest,
        /// The bundle's.
        found: Sha256Digest,
    },
    /// The answer inside is not a check-in answer.
    #[error("the answer inside is not a check-in answer: {0}")]
    Answer(String),
}

impl AgentError {
    /// Whether retrying later may succeed without anyone acting (the
    /// daemon backs off and retries these).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            AgentError::Stalled { .. }
                | AgentError::Truncated { .. }
                | AgentError::Transport(TransportError::Network(_) | TransportError::Server { .. })
        )
    }

    /// Whether only the vendor can clear this: the server refuses the
    /// device itself (its certificate revoked or not registered), so
    /// calling again cannot succeed and the daemon stops instead.
    pub fn needs_the_vendor(&self) -> bool {
        matches!(self, AgentError::Transport(TransportError::Refused { .. }))
    }
}
