//! What the services share, and the one place that maps a client
//! certificate to a caller and a domain error to a status code.
//!
//! A certificate is only the credential for the call: the caller is the
//! identity the ledger registered for that certificate's SHA-256, checked on
//! every call against the current registry (so a revocation takes effect at
//! once). Handlers convert requests into domain calls and map errors to
//! status codes here, and nowhere else. The limits the services enforce
//! are here too (their bookkeeping is in `limits`, connections in `accept`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use covenant_core::digest::{Sha256Digest, Timestamp};
use covenant_core::ledger::EntryKind;
use covenant_core::state::{Rejection, classify};
use covenant_core::statements::IdentityRole;
use covenant_proto::v1 as pb;
use tonic::Code;
use tonic::{Request, Status};

use crate::artifacts::{ArtifactError, MAX_CHUNK};
use crate::checkin::CheckInError;
use crate::datadir::SharedRegistry;
use crate::layout::DataDir;
use crate::ledger::storage::FsStorage;
use crate::ledger::store::ReadError;
use crate::ledger::{AppendError, Appended, Clock, Ledger, NewEntry};
use crate::limits::{DownloadTable, RateLimit, RateLimiter, StreamTable, SubmissionLimits, SubmissionTable};
use crate::pki::{self, Authority};

/// Who is calling, as the ledger registered them.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The role.
    pub role: IdentityRole,
    /// The subject id.
    pub subject: String,
    /// For auditors: customers in scope (`None`: all).
    pub scope: Option<Vec<String>>,
    /// The SHA-256 of the certificate the call came with (streams re-check
    /// it before every message).
    pub fingerprint: Sha256Digest,
}

impl Caller {
    /// The caller as the visibility rules see it.
    pub fn viewer(&self) -> covenant_core::visibility::Viewer<'_> {
        covenant_core::visibility::Viewer { role: self.role, subject: &self.subject, scope: self.scope.as_deref() }
    }
}

/// What the services share.
#[derive(Clone)]
pub struct Node {
    /// Turns true when the server stops: stream tasks end on it.
    pub(crate) closing: tokio::sync::watch::Receiver<bool>,
    pub(crate) ledger: Ledger<FsStorage>,
    pub(crate) registry: SharedRegistry,
    pub(crate) ca: Arc<Authority>,
    pub(crate) cosigned: Arc<crate::witnesses::Gathered>,
    /// How many witnesses are configured.
    pub(crate) witnesses: usize,
    /// The decision key (signs freshness answers).
    pub(crate) decision: Option<Arc<dyn covenant_core::keys::Signer>>,
    /// The data directory (artifacts live under it).
    pub(crate) data: DataDir,
    /// The one clock the server was started with: every request reads the
    /// time from it.
    pub(crate) clock: Clock,
    /// Download streams open, per certificate and per customer.
    pub(crate) downloads: Arc<DownloadTable>,
    /// The bytes a download chunk carries.
    pub(crate) download_chunk: usize,
    /// How long a download stream may make no progress before it is closed.
    pub(crate) download_idle: Duration,
    /// The least a download stream must send per window, or be closed.
    pub(crate) download_progress: DownloadProgress,
    /// Each certificate's request rate (`None`: unlimited).
    pub(crate) rate: Option<Arc<RateLimiter>>,
    /// Streams open, per certificate.
    pub(crate) streams: Arc<StreamTable>,
    /// Attestations, verifications and signals added per submitter in the
    /// last period.
    pub(crate) submissions: Arc<SubmissionTable>,
    /// The sled subject index (a subject's history).
    pub(crate) subjects: crate::ledger::views::SubjectIndex,
    /// When each deployment last checked in.
    pub(crate) seen: crate::seen::LastSeen,
    /// The metrics (`crate::metrics`).
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
}

/// Download streams served at once, in total.
pub const MAX_DOWNLOADS: usize = 64;
/// Download streams one certificate may hold open at once.
pub const MAX_DOWNLOADS_PER_IDENTITY: usize = 2;
/// Download streams the deployments of one customer may hold together, at
/// most: half of [`MAX_DOWNLOADS`]. Its share is smaller when others
/// download: `MAX_DOWNLOADS / (customers downloading + 1)`, so one share is
/// always left for a customer yet to come (two customers holding idle
/// streams leave a third a quarter of the slots; review finding F6).
pub const MAX_DOWNLOADS_PER_CUSTOMER: usize = MAX_DOWNLOADS / 2;
/// The least a download stream must send per window: 1 MiB a minute
/// (about 140 kbit/s), or what is left of the artifact. A reader that takes
/// one chunk just before the idle timeout each time (review finding F6: one
/// chunk every 25 s) otherwise keeps its slot for ever. A slower link is
/// cut too, and the agent resumes from the bytes it has.
pub const DOWNLOAD_PROGRESS: DownloadProgress = DownloadProgress { bytes: 1 << 20, window: Duration::from_secs(60) };

/// The period over which a person's submissions are bounded: an hour, as a
/// deployment's logged decisions are (`covenant_core::state::LOGGING_PERIOD`).
pub const SUBMISSION_PERIOD: Duration = Duration::from_secs(3_600);
/// Attestations one customer may add per [`SUBMISSION_PERIOD`]. An
/// attestation covers many deployments and stays valid for months (the
/// story's contract asks for one a year), so an honest customer submits a
/// handful at a contract's start or renewal; the third review added 2,095 of
/// ~60 KB in 10 s (171 MB of journal, for ever). Past it, ResourceExhausted
/// with the time to retry, counted (`datadir::Bounded`), nothing appended.
pub const MAX_ATTESTATIONS_PER_PERIOD: usize = 12;
/// Verifications one engineer may add per [`SUBMISSION_PERIOD`]: a field
/// visit checks one deployment at a time, on site or remotely, so two dozen
/// an hour is more than a day's honest work.
pub const MAX_VERIFICATIONS_PER_PERIOD: usize = 24;
/// Misuse signals one reporter (engineer or auditor) may add per
/// [`SUBMISSION_PERIOD`]: each opens or feeds a case that people triage.
pub const MAX_SIGNALS_PER_PERIOD: usize = 24;
/// The default submission bounds.
pub const SUBMISSION_LIMITS: SubmissionLimits = SubmissionLimits {
    attestations: MAX_ATTESTATIONS_PER_PERIOD,
    verifications: MAX_VERIFICATIONS_PER_PERIOD,
    signals: MAX_SIGNALS_PER_PERIOD,
    period: SUBMISSION_PERIOD,
};

/// A minimum progress rate: `bytes` per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadProgress {
    /// Bytes that must be sent in each window.
    pub bytes: u64,
    /// The window.
    pub window: Duration,
}
/// How long a download stream may make no progress (the client reads
/// nothing, so no chunk leaves) before it is closed and its slot freed. A
/// chunk is 256 KiB, so a link slower than about 70 kbit/s is cut too; the
/// agent resumes from the bytes it has.
pub const DOWNLOAD_IDLE: Duration = Duration::from_secs(30);
/// Each certificate's request rate: 200 a second sustained, bursts of 2,000.
/// A device polling every few minutes, a person's CLI (an audit paging
/// through a million entries makes ~1,000 calls) and the tests stay far
/// below it; the check-in benchmark's 256 clients make ~50 calls a second
/// each on this 2-core machine (`cargo bench --bench checkins`, part (a)).
/// One certificate flooding the server gets `ResourceExhausted` past it.
pub const RATE_LIMIT: RateLimit = RateLimit { per_second: 200.0, burst: 2_000.0 };
/// Streams (WatchCheckpoints, Download, Publish) one certificate may hold
/// open at once, over all its connections. An auditor watching checkpoints
/// needs one, a device two downloads, an admin a publish or two; one auditor
/// of the outside attack held 4,230 watches, each a task and a queue.
/// ResourceExhausted past it; a slot comes back when its stream ends.
pub const MAX_STREAMS_PER_IDENTITY: usize = 16;
/// Calls without a client certificate one peer address may make (each is
/// refused, Unauthenticated, before its message is decoded): 5 a second,
/// bursts of 20. Past it, ResourceExhausted.
pub const CERTLESS_RATE_LIMIT: RateLimit = RateLimit { per_second: 5.0, burst: 20.0 };
/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection whose client presented no certificate stays open,
/// busy or idle: long enough to be told Unauthenticated (every call needs a
/// certificate), too short for idle connections to pile up (review finding
/// F5: they were never closed).
pub const CERTLESS_GRACE: Duration = Duration::from_secs(10);
/// TCP connections open at once, in all (besides [`CONNECTIONS_PER_PEER`]).
/// Each takes a file descriptor: `run` raises the soft open-files limit to
/// the hard one, then lowers this to the limit less a reserve (a quarter of
/// it, at most [`RESERVED_DESCRIPTORS`]), so that connections can never
/// take the descriptors the ledger, the views and the artifacts need
/// (`accept::connection_cap`; it refuses to start below
/// `accept::MIN_CONNECTIONS`). A quarter of the cap is the unauthenticated
/// budget ([`MAX_UNAUTHENTICATED`]); the rest is for connections whose
/// handshake brought a client certificate, and past it such a connection is
/// closed; those open are served.
pub const MAX_CONNECTIONS: usize = 8192;
/// Descriptors kept for the server's own files (journal, checkpoint log,
/// tiles, sled, artifacts being served or received) and its witness
/// connections, at most; under a descriptor limit below 4,096, a quarter
/// of it. (A flat 1,024 left a server under `ulimit -n 1024` one
/// connection: it served nobody.)
pub const RESERVED_DESCRIPTORS: usize = 1024;
/// Unauthenticated connections (handshaking, or without a certificate in
/// their grace) open at once, in all: at most a quarter of the connection
/// cap. When full, a new connection evicts the oldest one rather than being
/// refused, so idle connections cannot lock devices out: 17 addresses × 512
/// idle connections before their handshake once filled all 8,192 places.
/// To hold this budget an attacker must open 2,048 connections per
/// handshake a device needs to finish.
pub const MAX_UNAUTHENTICATED: usize = MAX_CONNECTIONS / 4;
/// Unauthenticated connections one peer address may hold at once; a new one
/// past it evicts that address's oldest. A device opens one connection and
/// handshakes in milliseconds, so even a NAT of many devices rarely has
/// more than a few handshakes under way at once.
pub const UNAUTHENTICATED_PER_PEER: usize = 64;
/// HTTP/2 keepalive: a ping after this long without a frame from the client,
/// and the connection closed if the answer does not come within
/// [`HTTP2_KEEPALIVE_TIMEOUT`]. This closes an authenticated connection
/// whose peer went away without a word (a device losing power), which TCP
/// alone would keep open for ever.
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// See [`HTTP2_KEEPALIVE_INTERVAL`].
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Authenticated TCP connections one peer address may hold open at once
/// (besides its [`UNAUTHENTICATED_PER_PEER`]). Devices behind one NAT share
/// an address, so this is generous (the check-in benchmark opens 257 from
/// loopback, one after another): it bounds the file descriptors one address
/// can take, well under a server's descriptor limit (20,000 here).
pub const CONNECTIONS_PER_PEER: usize = 512;
/// The longest a call may take (a client's shorter `grpc-timeout` wins).
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
/// HTTP/2 streams one connection may have open at once.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// The largest request each service decodes.
pub const MAX_LEDGER_REQUEST: usize = 64 * 1024;
/// (A check-in, a report: envelopes of at most 64 KiB, with room.)
pub const MAX_UPDATE_REQUEST: usize = 256 * 1024;
/// (Attestations, verifications, signals: envelopes of at most 22 KiB,
/// refused past their own limit before they are parsed.)
pub const MAX_ATTESTATION_REQUEST: usize = 256 * 1024;
/// (A publish chunk carries up to 4 MiB of artifact.)
pub const MAX_ADMIN_REQUEST: usize = MAX_CHUNK + 256 * 1024;

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("ledger", &self.ledger).finish_non_exhaustive()
    }
}

impl Node {
    /// Maps the request's client certificate to the registered caller.
    pub(crate) fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let certs = request.peer_certs().ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let leaf = certs.first().ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let holder = pki::holder(leaf).map_err(|e| Status::unauthenticated(e.to_string()))?;
        if let Some(rate) = &self.rate {
            rate.check(&holder.fingerprint)?;
        }
        let registry = self.registry.state.read().map_err(|_| Status::internal("registry lock poisoned"))?;
        let identity = registry
            .identity(&holder.fingerprint)
            .ok_or_else(|| Status::unauthenticated("this certificate is not registered in the ledger"))?;
        if identity.revoked.is_some() {
            return Err(Status::permission_denied("this certificate has been revoked"));
        }
        if identity.role != holder.role || identity.subject != holder.subject {
            return Err(Status::unauthenticated("this certificate's holder differs from its registration"));
        }
        Ok(Caller {
            role: identity.role,
            subject: identity.subject.clone(),
            scope: identity.scope.clone(),
            fingerprint: holder.fingerprint,
        })
    }

    /// The certificate of a call under way is still registered and not
    /// revoked: streams check it before every message they send or take, so
    /// a revocation ends a stream opened before it.
    pub(crate) fn still_registered(&self, fingerprint: &Sha256Digest) -> Result<(), Status> {
        let state = self.registry.state.read().map_err(|_| Status::internal("registry lock poisoned"))?;
        match state.identity(fingerprint) {
            Some(i) if i.revoked.is_none() => Ok(()),
            _ => Err(Status::permission_denied("this certificate has been revoked")),
        }
    }

    /// The server's time, from its one clock.
    pub(crate) fn now(&self) -> Timestamp {
        (self.clock)()
    }

    /// The caller has one of `roles`.
    pub(crate) fn require(&self, caller: &Caller, roles: &[IdentityRole]) -> Result<(), Status> {
        if roles.contains(&caller.role) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!("the role {} may not make this call", caller.role)))
        }
    }
}

/// The one place a refusal of the fold ([`Rejection`]) becomes a gRPC
/// [`Status`]: its cause picks the code, its words are the message.
///
///
/// | cause | code |
/// |---|---|
/// | `NotRegistered` (a body signed by a key no one registered) | `PERMISSION_DENIED` |
/// | `Revoked` (a revoked key) | `PERMISSION_DENIED` |
/// | `NotAllowed` (a key that may not sign this) | `PERMISSION_DENIED` |
/// | `Stale` (an expired or overtaken proposal, action or attestation) | `FAILED_PRECONDITION` |
/// | `DuplicateApproval` (one admin approving twice) | `ALREADY_EXISTS` |
/// | `AlreadyRecorded` | `ALREADY_EXISTS` |
/// | `BadSignature` | `INVALID_ARGUMENT` |
/// | `Malformed` | `INVALID_ARGUMENT` |
/// | `Precondition` (a rule the state sets) | `FAILED_PRECONDITION` |
/// | `NotFound` (no such customer, deployment, case, proposal ...) | `NOT_FOUND` |
/// | `Unavailable` (this server cannot fold it now) | `UNAVAILABLE` |
pub fn refusal_code(rejection: &Rejection) -> Code {
    match rejection {
        // The caller is authenticated (its certificate is); the body's
        // signer is what is not registered.
        Rejection::NotRegistered(_) | Rejection::Revoked(_) | Rejection::NotAllowed(_) => Code::PermissionDenied,
        Rejection::Stale(_) | Rejection::Precondition(_) => Code::FailedPrecondition,
        Rejection::DuplicateApproval(_) | Rejection::AlreadyRecorded(_) => Code::AlreadyExists,
        Rejection::BadSignature(_) | Rejection::Malformed(_) => Code::InvalidArgument,
        Rejection::NotFound(_) => Code::NotFound,
        Rejection::Unavailable(_) => Code::Unavailable,
        // `Rejection` is non-exhaustive: a cause added in core is answered
        // as every refusal was before causes, until it is mapped here.
        _ => Code::InvalidArgument,
    }
}

/// The gRPC status of a refusal: its cause's code, its words.
pub fn refusal_status(rejection: Rejection) -> Status {
    Status::new(refusal_code(&rejection), rejection.message())
}

/// A ledger read error as a status.
pub(crate) fn read_status(e: ReadError) -> Status {
    match e {
        ReadError::OutOfRange { .. } => Status::out_of_range(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

/// An append error as a status.
pub(crate) fn append_status(e: AppendError) -> Status {
    match e {
        AppendError::Rejected(r) => refusal_status(r),
        AppendError::Malformed(m) => Status::invalid_argument(m),
        other => Status::unavailable(other.to_string()),
    }
}

/// Why a check-in got no answer, as a status.
pub(crate) fn checkin_status(e: CheckInError) -> Status {
    match e {
        CheckInError::AnotherDeployment => Status::permission_denied(e.to_string()),
        CheckInError::Refused(r) => refusal_status(r),
        // The same cause, and so the same code, as when the sequencer
        // evaluates it (`From<PolicyError> for Rejection`).
        CheckInError::Policy(p) => refusal_status(p.into()),
        CheckInError::TooLarge { .. } | CheckInError::Clock { .. } => Status::invalid_argument(e.to_string()),
        CheckInError::Append(e) => append_status(e),
        CheckInError::Read(e) => read_status(e),
        CheckInError::NoDecisionKey | CheckInError::Sign(_) => Status::unavailable(e.to_string()),
        CheckInError::Poisoned => Status::internal(e.to_string()),
    }
}

/// An artifact store error as a status: what the publisher sent is an
/// invalid argument, the file system's failure internal.
pub(crate) fn artifact_status(e: ArtifactError) -> Status {
    match e {
        ArtifactError::TooLong { .. } | ArtifactError::WrongSize { .. } | ArtifactError::WrongHash => {
            Status::invalid_argument(e.to_string())
        }
        ArtifactError::Io(_) => Status::internal(e.to_string()),
    }
}

/// An appended entry's inclusion proof as the wire's tlog-proof.
pub(crate) fn tlog(a: &Appended) -> pb::TlogProof {
    pb::TlogProof { text: a.tlog_proof().to_text().into_bytes() }
}

/// A stream fed by a task through a bounded channel (slow readers get
/// backpressure, not growing memory).
/// The task ends when the server closes (`closing` turns true), so that no
/// stream keeps the ledger open after `run` returns.
pub(crate) fn async_stream_of<T: Send + 'static, F, Fut>(
    closing: tokio::sync::watch::Receiver<bool>,
    f: F,
) -> Pin<Box<dyn tokio_stream::Stream<Item = T> + Send>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    async_stream_with(closing, 4, f)
}

/// As [`async_stream_of`], with a queue of `capacity` items.
pub(crate) fn async_stream_with<T: Send + 'static, F, Fut>(
    mut closing: tokio::sync::watch::Receiver<bool>,
    capacity: usize,
    f: F,
) -> Pin<Box<dyn tokio_stream::Stream<Item = T> + Send>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(capacity);
    let work = f(tx);
    tokio::spawn(async move {
        // A stream waiting for the next checkpoint would otherwise hold the
        // ledger after the server stopped, and the sequencer with it: its
        // last flush could then be cut off by the process's exit.
        tokio::select! {
            () = work => {}
            _ = closing.wait_for(|closed| *closed) => {}
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

impl Node {
    /// Appends a signed body whose kind must be one of `kinds`, with the
    /// header derived from the body.
    pub(crate) async fn submit(&self, body: Vec<u8>, kinds: &[EntryKind]) -> Result<pb::SubmitResponse, Status> {
        let placed = classify(&body).map_err(refusal_status)?;
        if !kinds.contains(&placed.kind) {
            return Err(Status::invalid_argument(format!("this call takes no {} entry", placed.kind)));
        }
        let entry = NewEntry { kind: placed.kind, actor: placed.actor, subjects: placed.subjects, body };
        let done = self.ledger.append(entry).await.map_err(append_status)?;
        Ok(pb::SubmitResponse { index: done.index, inclusion: Some(tlog(&done)) })
    }
}

/// Refuses an envelope larger than `limit` (the statement's own: its
/// payload limit in base64 and its signatures) before anything reads it.
pub(crate) fn within(bytes: &[u8], what: &str, limit: usize) -> Result<(), Status> {
    if bytes.len() > limit {
        return Err(Status::invalid_argument(format!(
            "the {what} envelope is {} bytes, over the limit of {limit} (its signatures over a bounded payload)",
            bytes.len()
        )));
    }
    Ok(())
}
