//! The gRPC services over mutual TLS, and the one place that maps a client
//! certificate to a caller.
//!
//! A certificate is only the credential for the call: the caller is the
//! identity the ledger registered for that certificate's SHA-256, checked on
//! every call against the current registry (so a revocation takes effect at
//! once). Handlers convert requests into domain calls and map errors to
//! status codes here, and nowhere else.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use covenant_core::digest::Sha256Digest;
use covenant_core::envelope::Envelope;
use covenant_core::keys::KeyId;
use covenant_core::statements::{AdminAction, IdentityRole, Payload as _};
use covenant_proto::v1 as pb;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

use crate::datadir::{self, SharedRegistry};
use crate::ledger::storage::FsStorage;
use crate::ledger::store::ReadError;
use crate::ledger::{AppendError, Appended, Ledger, MAX_PAGE, NewEntry};
use crate::limits::{
    DownloadLimits, DownloadTable, PeerLimits, PeerTable, RateLimit, RateLimiter, StreamTable, SubmissionLimits,
    SubmissionTable,
};
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
    pub(crate) decision: Option<Arc<covenant_core::keys::SigningKey>>,
    /// The data directory (artifacts live under it).
    pub(crate) data: PathBuf,
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
pub const MAX_ADMIN_REQUEST: usize = crate::updates::MAX_CHUNK + 256 * 1024;

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
        let registry = self.registry.0.read().map_err(|_| Status::internal("registry lock poisoned"))?;
        let identity = registry
            .identity(&holder.fingerprint)
            .ok_or_else(|| Status::unauthenticated("this certificate is not registered in the ledger"))?;
        if identity.revoked.is_some() {
            return Err(Status::unauthenticated("this certificate has been revoked"));
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
        let state = self.registry.0.read().map_err(|_| Status::internal("registry lock poisoned"))?;
        match state.identity(fingerprint) {
            Some(i) if i.revoked.is_none() => Ok(()),
            _ => Err(Status::permission_denied("this certificate has been revoked")),
        }
    }

    pub(crate) fn require(&self, caller: &Caller, roles: &[IdentityRole]) -> Result<(), Status> {
        if roles.contains(&caller.role) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!("the role {} may not make this call", caller.role)))
        }
    }
}

pub(crate) fn read_status(e: ReadError) -> Status {
    match e {
        ReadError::OutOfRange { .. } => Status::out_of_range(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

pub(crate) fn append_status(e: AppendError) -> Status {
    match e {
        AppendError::Rejected(r) => crate::refusal::status(r),
        AppendError::Malformed(m) => Status::invalid_argument(m),
        other => Status::unavailable(other.to_string()),
    }
}

/// A proof from the ledger as the wire's list of hashes.
fn proof_response(
    proof: Result<Vec<covenant_core::merkle::Hash>, ReadError>,
) -> Result<Response<pb::GetProofResponse>, Status> {
    let proof = proof.map_err(read_status)?;
    Ok(Response::new(pb::GetProofResponse { hashes: proof.iter().map(|h| h.to_vec()).collect() }))
}

pub(crate) fn tlog(a: &Appended) -> pb::TlogProof {
    pb::TlogProof { text: a.tlog_proof().to_text().into_bytes() }
}

#[tonic::async_trait]
impl pb::ledger_service_server::LedgerService for Node {
    async fn get_checkpoint(
        &self,
        request: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::SignedCheckpoint>, Status> {
        self.caller(&request)?;
        // The newest checkpoint with the witness cosignatures gathered for it.
        let cosigned = self.cosigned.latest.read().ok().and_then(|c| c.clone());
        let note = match cosigned {
            Some(c) if c.size > 0 => c.note,
            _ => self.ledger.checkpoint().note.clone(),
        };
        Ok(Response::new(pb::SignedCheckpoint { note: note.into_bytes() }))
    }

    async fn get_entries(
        &self,
        request: Request<pb::GetEntriesRequest>,
    ) -> Result<Response<pb::GetEntriesResponse>, Status> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        if req.end < req.start || req.end - req.start > MAX_PAGE {
            return Err(Status::invalid_argument(format!("ask for at most {MAX_PAGE} entries, start <= end")));
        }
        // Every registered caller reads every header: headers carry subject
        // tags, never subject ids, and the tiles publish them anyway. Who
        // reads a body is `covenant_core::visibility::body_visible`, from the
        // subjects and signer the server derives from the body it holds.
        let headers = self.ledger.headers(req.start, req.end).map_err(read_status)?;
        let bodies =
            if req.with_bodies { self.ledger.bodies(req.start, req.end).map_err(read_status)? } else { vec![] };
        let state = self.registry.0.read().map_err(|_| Status::internal("registry lock poisoned"))?;
        let viewer = caller.viewer();
        let mut entries = Vec::with_capacity(headers.len());
        for (i, header) in headers.into_iter().enumerate() {
            let index = req.start + i as u64;
            let mut entry = pb::LedgerEntry { index, header, body: Vec::new(), salt: Vec::new() };
            if let Some(stored) = bodies.get(i) {
                let kind = covenant_core::ledger::EntryHeader::parse(&entry.header)
                    .map_err(|e| Status::internal(format!("entry {index}: {e}")))?
                    .kind;
                if may_read_body(&state, &viewer, kind, &stored.body) {
                    entry.body = stored.body.clone();
                    entry.salt = stored.salt.to_vec();
                }
            }
            entries.push(entry);
        }
        Ok(Response::new(pb::GetEntriesResponse { entries }))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<pb::GetInclusionProofRequest>,
    ) -> Result<Response<pb::GetProofResponse>, Status> {
        self.caller(&request)?;
        let req = request.into_inner();
        proof_response(self.ledger.inclusion_proof(req.index, req.tree_size))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<pb::GetConsistencyProofRequest>,
    ) -> Result<Response<pb::GetProofResponse>, Status> {
        self.caller(&request)?;
        let req = request.into_inner();
        if req.from_size == 0 {
            return Err(Status::invalid_argument("a consistency proof from size 0 proves nothing"));
        }
        // A malformed request, whatever the tree's size; a size past the
        // signed tree stays OutOfRange (the ledger says so).
        if req.from_size > req.to_size {
            return Err(Status::invalid_argument(format!(
                "a consistency proof goes from a smaller tree to a larger one, not from {} to {}",
                req.from_size, req.to_size
            )));
        }
        proof_response(self.ledger.consistency_proof(req.from_size, req.to_size))
    }

    async fn get_root_chain(
        &self,
        request: Request<pb::GetRootChainRequest>,
    ) -> Result<Response<pb::GetRootChainResponse>, Status> {
        self.caller(&request)?;
        let from = request.into_inner().from_version;
        let entries: Vec<covenant_core::state::RootEntry> =
            self.registry.0.read().map_err(|_| Status::internal("registry lock poisoned"))?.root_entries().to_vec();
        let mut roots = Vec::new();
        for covenant_core::state::RootEntry { index, version } in entries {
            if version >= from {
                roots.push(self.ledger.body(index).map_err(read_status)?.body);
            }
        }
        Ok(Response::new(pb::GetRootChainResponse { roots }))
    }

    type WatchCheckpointsStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::SignedCheckpoint, Status>> + Send>>;

    async fn watch_checkpoints(
        &self,
        request: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<Self::WatchCheckpointsStream>, Status> {
        let caller = self.caller(&request)?;
        let slot = self.streams.take(caller.fingerprint)?;
        let mut watch = self.ledger.watch();
        let node = self.clone();
        let stream = async_stream_of(self.closing.clone(), move |tx| async move {
            let _slot = slot;
            loop {
                // The caller is checked again before every message: a
                // revocation ends a stream opened before it.
                let Ok(permit) = tx.reserve().await else { return };
                if let Err(status) = node.still_registered(&caller.fingerprint) {
                    permit.send(Err(status));
                    return;
                }
                let note = watch.borrow_and_update().note.clone();
                permit.send(Ok(pb::SignedCheckpoint { note: note.into_bytes() }));
                // A client that went away ends the task (and frees its slot)
                // at once, not at the next checkpoint.
                tokio::select! {
                    changed = watch.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn get_subject_keys(
        &self,
        request: Request<pb::GetSubjectKeysRequest>,
    ) -> Result<Response<pb::GetSubjectKeysResponse>, Status> {
        let caller = self.caller(&request)?;
        let state = self.registry.0.read().map_err(|_| Status::internal("registry lock poisoned"))?;
        let keys = covenant_core::visibility::entitled_subjects(&state, &caller.viewer())
            .into_iter()
            .filter_map(|subject| {
                let key = state.keyring().key(subject)?;
                Some(pb::SubjectKey { subject: subject.to_owned(), key: key.0.to_vec() })
            })
            .collect();
        Ok(Response::new(pb::GetSubjectKeysResponse { keys }))
    }
}

/// Whether `viewer` may read `body`, an entry of `kind`: its subjects and
/// signer come from the body itself (the header names neither).
fn may_read_body(
    state: &covenant_core::state::State,
    viewer: &covenant_core::visibility::Viewer<'_>,
    kind: covenant_core::ledger::EntryKind,
    body: &[u8],
) -> bool {
    use covenant_core::visibility::{Subject, body_visible};
    let Ok(placed) = covenant_core::state::classify(body) else {
        // Every stored body classified when it was folded; if one does not
        // now, only those who read everything read it.
        return viewer.role == IdentityRole::Admin || (viewer.role == IdentityRole::Auditor && viewer.scope.is_none());
    };
    // A signal's header names no actor; its signer is the envelope's.
    let signer_key = placed.actor.or_else(|| {
        Envelope::parse(body).ok().and_then(|e| e.signatures().first().and_then(|s| KeyId::from_hex(&s.keyid)))
    });
    let signer = signer_key.and_then(|k| state.any_identity_of_key(&k)).map(|i| (i.role, i.subject.as_str()));
    let subjects: Vec<Subject<'_>> = placed.subjects.iter().map(|s| Subject::resolve(state, s)).collect();
    body_visible(viewer, kind, &subjects, signer)
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

#[tonic::async_trait]
impl pb::admin_service_server::AdminService for Node {
    async fn act(&self, request: Request<pb::ActRequest>) -> Result<Response<pb::ActResponse>, Status> {
        let caller = self.caller(&request)?;
        self.require(&caller, &[IdentityRole::Admin])?;
        let body = request.into_inner().action;
        let envelope = Envelope::parse(&body).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let action = AdminAction::parse(envelope.payload()).map_err(|e| Status::invalid_argument(e.to_string()))?;
        // The admin signs with their own key; the certificate only opened the door.
        let signer = envelope
            .signatures()
            .first()
            .and_then(|s| KeyId::from_hex(&s.keyid))
            .ok_or_else(|| Status::invalid_argument("the action carries no signature"))?;
        let own = self
            .registry
            .0
            .read()
            .map_err(|_| Status::internal("registry lock poisoned"))?
            .identity_of_key(&signer)
            .is_some_and(|id| id.role == IdentityRole::Admin && id.subject == caller.subject);
        if !own {
            return Err(Status::permission_denied("sign the action with your own registered admin key"));
        }
        let (kind, subjects) = covenant_core::state::placement(&action.action);
        let done =
            self.ledger.append(NewEntry { kind, actor: Some(signer), subjects, body }).await.map_err(append_status)?;
        Ok(Response::new(pb::ActResponse { index: done.index, inclusion: Some(tlog(&done)) }))
    }

    async fn publish(
        &self,
        request: Request<tonic::Streaming<pb::PublishChunk>>,
    ) -> Result<Response<pb::ActResponse>, Status> {
        let caller = self.caller(&request)?;
        self.require(&caller, &[IdentityRole::Admin])?;
        let _slot = self.streams.take(caller.fingerprint)?;
        Ok(Response::new(self.publish_release(&caller.fingerprint, request.into_inner()).await?))
    }

    async fn issue_identity(
        &self,
        request: Request<pb::IssueIdentityRequest>,
    ) -> Result<Response<pb::IssueIdentityResponse>, Status> {
        let caller = self.caller(&request)?;
        self.require(&caller, &[IdentityRole::Admin])?;
        let req = request.into_inner();
        let role: IdentityRole = req.role.parse().map_err(|_| Status::invalid_argument("unknown role"))?;
        let csr = String::from_utf8(req.csr).map_err(|_| Status::invalid_argument("the request is not PEM text"))?;
        let (issued, signing_key) = self
            .ca
            .issue_from_request(&csr, role, &req.subject)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(pb::IssueIdentityResponse {
            certificate_pem: issued.cert_pem.into_bytes(),
            ca_pem: self.ca.cert_pem.clone().into_bytes(),
            certificate_sha256: issued.fingerprint.to_string(),
            signing_key: hex::encode(signing_key.to_bytes()),
        }))
    }
}

/// A running server's configuration, from its data directory.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The data directory.
    pub data: PathBuf,
    /// The bytes a download chunk carries (see
    /// [`crate::updates::DOWNLOAD_CHUNK`] for how the default was chosen).
    pub download_chunk: usize,
    /// Download streams at once (default [`MAX_DOWNLOADS`],
    /// [`MAX_DOWNLOADS_PER_IDENTITY`], [`MAX_DOWNLOADS_PER_CUSTOMER`]).
    pub downloads: DownloadLimits,
    /// A download stream that makes no progress this long is closed
    /// (default [`DOWNLOAD_IDLE`]).
    pub download_idle: Duration,
    /// A download stream that sends less than this is closed (default
    /// [`DOWNLOAD_PROGRESS`]).
    pub download_progress: DownloadProgress,
    /// Each certificate's request rate (default [`RATE_LIMIT`]; `None`:
    /// unlimited, for benchmarks of the server's ceiling).
    pub rate_limit: Option<RateLimit>,
    /// The longest a TLS handshake may take (default [`HANDSHAKE_TIMEOUT`]).
    pub handshake_timeout: Duration,
    /// Authenticated TCP connections one peer address may hold (default
    /// [`CONNECTIONS_PER_PEER`]).
    pub connections_per_peer: usize,
    /// Unauthenticated connections one peer address may hold (default
    /// [`UNAUTHENTICATED_PER_PEER`]).
    pub unauthenticated_per_peer: usize,
    /// Unauthenticated connections in all (default [`MAX_UNAUTHENTICATED`],
    /// at most a quarter of the connection cap).
    pub max_unauthenticated: usize,
    /// Streams one certificate may hold open (default
    /// [`MAX_STREAMS_PER_IDENTITY`]).
    pub streams_per_identity: usize,
    /// How long a connection without a client certificate stays open
    /// (default [`CERTLESS_GRACE`]).
    pub certless_grace: Duration,
    /// TCP connections open at once, in all (default [`MAX_CONNECTIONS`],
    /// lowered to what the descriptor limit allows).
    pub max_connections: usize,
    /// Attestations, verifications and signals per submitter and period
    /// (default [`SUBMISSION_LIMITS`]).
    pub submissions: SubmissionLimits,
}

impl ServeConfig {
    /// Serves `data` with the default limits.
    pub fn new(data: impl Into<PathBuf>) -> ServeConfig {
        ServeConfig {
            data: data.into(),
            download_chunk: crate::updates::DOWNLOAD_CHUNK,
            downloads: DownloadLimits {
                total: MAX_DOWNLOADS,
                per_certificate: MAX_DOWNLOADS_PER_IDENTITY,
                per_customer: MAX_DOWNLOADS_PER_CUSTOMER,
            },
            download_idle: DOWNLOAD_IDLE,
            download_progress: DOWNLOAD_PROGRESS,
            rate_limit: Some(RATE_LIMIT),
            handshake_timeout: HANDSHAKE_TIMEOUT,
            connections_per_peer: CONNECTIONS_PER_PEER,
            unauthenticated_per_peer: UNAUTHENTICATED_PER_PEER,
            max_unauthenticated: MAX_UNAUTHENTICATED,
            streams_per_identity: MAX_STREAMS_PER_IDENTITY,
            certless_grace: CERTLESS_GRACE,
            max_connections: MAX_CONNECTIONS,
            submissions: SUBMISSION_LIMITS,
        }
    }
}

/// Serves the data directory's ledger on `listener` over mutual TLS until
/// `shutdown` completes.
pub async fn run(
    config: ServeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    install_crypto_provider();
    // Before anything opens a file: the connection cap follows the limit,
    // and a limit too low to serve anyone refuses to start, saying so.
    let descriptors = crate::accept::raise_descriptor_limit();
    let max_connections = crate::accept::connection_cap(config.max_connections, descriptors)?;
    let dir: &Path = &config.data;
    let (ledger, registry) = tokio::task::block_in_place(|| datadir::open_ledger(dir))?;
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).with_context(|| format!("reading {name}"));
    let ca = Arc::new(Authority { cert_pem: read("ca.pem")?, key_pem: read("ca.key")? });
    let tls = crate::accept::tls_acceptor(&read("server.pem")?, &read("server.key")?, &ca.cert_pem)?;
    let log = covenant_core::note::NoteVerifier::parse(read("ledger.vkey")?.trim())?;
    // The sled views: checked against the ledger (rebuilt if they belong to
    // another history), caught up now, then after every checkpoint.
    let views = sled::open(dir.join("views")).context("opening the sled views")?;
    let subjects = crate::ledger::views::SubjectIndex::open(&views)?;
    let folded = tokio::task::block_in_place(|| subjects.catch_up(&ledger, subjects_of))?;
    tracing::info!(folded, "sled views caught up with the ledger");
    let following = {
        let (ledger, subjects) = (ledger.clone(), subjects.clone());
        let mut watch = ledger.watch();
        tokio::spawn(async move {
            while watch.changed().await.is_ok() {
                // In this task (not a detached thread), so that stopping it
                // releases its handle on the ledger.
                if let Err(e) = tokio::task::block_in_place(|| subjects.catch_up(&ledger, subjects_of)) {
                    tracing::warn!(error = %e, "the sled views could not catch up; they will retry");
                }
            }
        })
    };
    let witnesses = crate::witnesses::load(dir)?;
    let witness_count = witnesses.len();
    let (cosigned, gathering) = crate::witnesses::spawn(ledger.clone(), log, witnesses);
    let decision = registry.1.clone();
    let (closed, closing) = tokio::sync::watch::channel(false);
    let node = Node {
        closing,
        ledger: ledger.clone(),
        registry,
        ca,
        cosigned,
        witnesses: witness_count,
        decision,
        data: config.data.clone(),
        downloads: Arc::new(DownloadTable::new(config.downloads)),
        download_chunk: config.download_chunk.clamp(4096, crate::updates::MAX_CHUNK),
        download_idle: config.download_idle,
        download_progress: config.download_progress,
        rate: config.rate_limit.map(|limit| Arc::new(RateLimiter::new(limit))),
        streams: Arc::new(StreamTable::new(config.streams_per_identity)),
        submissions: Arc::new(SubmissionTable::new(config.submissions)),
    };
    // Every connection counts from accept until it closes: unauthenticated
    // in its own budget (the oldest evicted to make room), then, once its
    // handshake brought a certificate, against its peer address's cap and
    // the rest of the global cap (over either, closed).
    let unauthenticated = config.max_unauthenticated.min(max_connections / 4).max(1);
    tracing::info!(max_connections, unauthenticated, descriptors, "serving");
    let peers = Arc::new(PeerTable::new(PeerLimits {
        per_peer: config.connections_per_peer,
        total: max_connections,
        unauthenticated_per_peer: config.unauthenticated_per_peer,
        unauthenticated,
    }));
    let limits = crate::accept::AcceptLimits {
        handshake_timeout: config.handshake_timeout,
        certless_grace: config.certless_grace,
    };
    let incoming = crate::accept::incoming(listener, peers, tls, limits);
    let gate = crate::accept::CertificateGate::new(CERTLESS_RATE_LIMIT);
    Server::builder()
        .timeout(REQUEST_TIMEOUT)
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .add_service(gated(
            pb::ledger_service_server::LedgerServiceServer::new(node.clone())
                .max_decoding_message_size(MAX_LEDGER_REQUEST),
            &gate,
        ))
        .add_service(gated(
            pb::admin_service_server::AdminServiceServer::new(node.clone())
                .max_decoding_message_size(MAX_ADMIN_REQUEST),
            &gate,
        ))
        .add_service(gated(
            pb::update_service_server::UpdateServiceServer::new(node.clone())
                .max_decoding_message_size(MAX_UPDATE_REQUEST),
            &gate,
        ))
        .add_service(gated(
            pb::attestation_service_server::AttestationServiceServer::new(node)
                .max_decoding_message_size(MAX_ATTESTATION_REQUEST),
            &gate,
        ))
        .serve_with_incoming_shutdown(incoming, {
            let closed = closed.clone();
            async move {
                shutdown.await;
                // Streams end as the server begins to stop: a graceful stop
                // waits for every call under way, and a watch waits for the
                // next checkpoint, so a client holding one open would
                // otherwise hold the stop for ever.
                let _ = closed.send(true);
            }
        })
        .await?;
    // Streams still open end now, dropping their hold on the ledger.
    let _ = closed.send(true);
    // The gathering task holds the ledger too: stop it, so that closing
    // waits for the sequencer and the ledger is free for the next owner.
    gathering.abort();
    let _ = gathering.await;
    following.abort();
    let _ = following.await;
    let _ = views.flush();
    // A cosignature under way on a blocking thread still holds the ledger
    // for a moment after its task was aborted: wait for it (bounded).
    tokio::task::block_in_place(|| ledger.close_within(std::time::Duration::from_secs(10)));
    Ok(())
}

/// `service` behind the certificate gate (no certificate, no decoding), with
/// malformed frames answered InvalidArgument.
fn gated<S>(
    service: S,
    gate: &crate::accept::CertificateGate,
) -> crate::accept::FramingErrors<tonic::service::interceptor::InterceptedService<S, crate::accept::CertificateGate>> {
    crate::accept::FramingErrors(tonic::service::interceptor::InterceptedService::new(service, gate.clone()))
}

/// The subject ids an entry's body names (none for a body that does not
/// classify, which the fold never took).
fn subjects_of(body: &[u8]) -> Vec<String> {
    covenant_core::state::classify(body).map(|p| p.subjects).unwrap_or_default()
}

/// tonic with `tls-ring` needs the process-level rustls provider
/// (`docs/style.md`, stack pitfalls).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
