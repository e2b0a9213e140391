//! The server as the agent sees it: the [`Transport`] and [`Chunks`]
//! traits, and why a call failed ([`TransportError`] by what the agent
//! should do about it, [`ReportError`] for an install report).

use covenant_core::digest::Sha256Digest;
use covenant_proto::v1 as pb;

/// Why a call to the server failed, by what the agent should do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// No answer: no connection, a failed handshake, a deadline, a server
    /// that is down. Retried with back-off.
    #[error("the server: {0}")]
    Network(String),
    /// The server answered with an error that may pass (a rate limit, an
    /// internal error, a grant withdrawn since the check-in). Retried with
    /// back-off.
    #[error("the server: {message}")]
    Server {
        /// The gRPC status code.
        code: tonic::Code,
        /// The server's words.
        message: String,
    },
    /// The server refuses this device: its certificate is revoked, not
    /// registered, or not this deployment's (`Unauthenticated` or
    /// `PermissionDenied` on a check-in). Not retried: the vendor must act.
    #[error("the server refuses this device ({code:?}): {message}")]
    Refused {
        /// The gRPC status code.
        code: tonic::Code,
        /// The server's words.
        message: String,
    },
}

/// The server as the agent sees it.
#[allow(async_fn_in_trait)] // used on one thread; no Send bound needed
pub trait Transport {
    /// A download in progress.
    type Chunks: Chunks;
    /// The root chain from version `from` on.
    async fn root_chain(&mut self, from: u64) -> Result<Vec<Vec<u8>>, TransportError>;
    /// Sends a signed check-in.
    async fn check_in(&mut self, checkin: Vec<u8>) -> Result<pb::CheckInResponse, TransportError>;
    /// Starts a download of `release` from `offset`.
    async fn download(&mut self, release: Sha256Digest, offset: u64) -> Result<Self::Chunks, TransportError>;
    /// Sends a signed install report.
    async fn report(&mut self, report: Vec<u8>) -> Result<(), ReportError>;
}

/// Why the server did not acknowledge an install report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportError {
    /// The server's ledger refused it (a rule of the fold, or an outcome
    /// already reported): the same bytes will be refused again, so the
    /// report is dropped, not retried.
    Refused(String),
    /// It did not get through (no connection, a deadline, a rate limit):
    /// it is kept and sent again at the next cycle.
    Unsent(String),
}

/// The chunks of a download.
#[allow(async_fn_in_trait)]
pub trait Chunks {
    /// The next chunk (its offset and bytes), or `None` at the end.
    async fn next(&mut self) -> Result<Option<(u64, Vec<u8>)>, TransportError>;
}
