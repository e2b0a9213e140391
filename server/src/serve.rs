//! Serving a data directory: [`run`] opens its ledger, keeps the sled views
//! caught up, starts the witness task and serves every gRPC service over
//! mutual TLS with the limits of its [`ServeConfig`], until told to stop.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use covenant_proto::v1 as pb;
use tokio::net::TcpListener;
use tonic::transport::Server;

use crate::datadir;
use crate::layout::DataDir;
use crate::ledger::{Clock, system_clock};
use crate::limits::{
    DownloadLimits, DownloadTable, PeerLimits, PeerTable, RateLimit, RateLimiter, StreamTable, SubmissionLimits,
    SubmissionTable,
};
use crate::node::{
    CERTLESS_GRACE, CERTLESS_RATE_LIMIT, CONNECTIONS_PER_PEER, DOWNLOAD_IDLE, DOWNLOAD_PROGRESS, DownloadProgress,
    HANDSHAKE_TIMEOUT, HTTP2_KEEPALIVE_INTERVAL, HTTP2_KEEPALIVE_TIMEOUT, MAX_ADMIN_REQUEST, MAX_ATTESTATION_REQUEST,
    MAX_CONNECTIONS, MAX_DOWNLOADS, MAX_DOWNLOADS_PER_CUSTOMER, MAX_DOWNLOADS_PER_IDENTITY, MAX_LEDGER_REQUEST,
    MAX_STREAMS_PER_CONNECTION, MAX_STREAMS_PER_IDENTITY, MAX_UNAUTHENTICATED, MAX_UPDATE_REQUEST, Node, RATE_LIMIT,
    REQUEST_TIMEOUT, SUBMISSION_LIMITS, UNAUTHENTICATED_PER_PEER,
};
use crate::pki::Authority;

/// A running server's configuration, from its data directory.
#[derive(Clone)]
pub struct ServeConfig {
    /// The data directory.
    pub data: PathBuf,
    /// The one clock the server reads the time from: the ledger's time,
    /// check-in answers, grants' expiry (default the system clock; tests
    /// set it).
    pub clock: Clock,
    /// The bytes a download chunk carries (see
    /// [`crate::update_service::DOWNLOAD_CHUNK`] for how the default was chosen).
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

impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeConfig")
            .field("data", &self.data)
            .field("download_chunk", &self.download_chunk)
            .field("downloads", &self.downloads)
            .field("rate_limit", &self.rate_limit)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

impl ServeConfig {
    /// Serves `data` with the default limits and the system clock.
    pub fn new(data: impl Into<PathBuf>) -> ServeConfig {
        ServeConfig {
            data: data.into(),
            clock: system_clock(),
            download_chunk: crate::update_service::DOWNLOAD_CHUNK,
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
    let dir = DataDir::new(&config.data);
    let (ledger, registry) =
        tokio::task::block_in_place(|| datadir::open_ledger_with(&config.data, config.clock.clone()))?;
    let read = |path: PathBuf| {
        std::fs::read_to_string(&path).with_context(|| {
            format!("reading {}", path.file_name().map_or(path.display(), |n| std::path::Path::new(n).display()))
        })
    };
    let ca = Arc::new(Authority { cert_pem: read(dir.ca_cert())?, key_pem: read(dir.ca_key())? });
    let tls = crate::accept::tls_acceptor(&read(dir.server_cert())?, &read(dir.server_key())?, &ca.cert_pem)?;
    let log = covenant_core::note::NoteVerifier::parse(read(dir.ledger_vkey())?.trim())?;
    // The sled views: checked against the ledger (rebuilt if they belong to
    // another history), caught up now, then after every checkpoint.
    let views = sled::open(dir.views()).context("opening the sled views")?;
    let subjects = crate::ledger::views::SubjectIndex::open(&views)?;
    let seen = crate::seen::LastSeen::open(&views)?;
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
    let witnesses = crate::witnesses::load(dir.path())?;
    let witness_count = witnesses.len();
    let (cosigned, gathering) = crate::witnesses::spawn(ledger.clone(), log, witnesses);
    let decision = registry.decision_key.clone();
    let (closed, closing) = tokio::sync::watch::channel(false);
    let node = Node {
        closing,
        ledger: ledger.clone(),
        registry,
        ca,
        cosigned,
        witnesses: witness_count,
        decision,
        data: dir,
        clock: config.clock.clone(),
        downloads: Arc::new(DownloadTable::new(config.downloads)),
        download_chunk: config.download_chunk.clamp(4096, crate::artifacts::MAX_CHUNK),
        download_idle: config.download_idle,
        download_progress: config.download_progress,
        rate: config.rate_limit.map(|limit| Arc::new(RateLimiter::new(limit))),
        streams: Arc::new(StreamTable::new(config.streams_per_identity)),
        submissions: Arc::new(SubmissionTable::new(config.submissions)),
        subjects,
        seen,
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
            pb::field_service_server::FieldServiceServer::new(node.clone())
                .max_decoding_message_size(MAX_UPDATE_REQUEST),
            &gate,
        ))
        .add_service(gated(
            pb::query_service_server::QueryServiceServer::new(node.clone())
                .max_decoding_message_size(MAX_LEDGER_REQUEST),
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
