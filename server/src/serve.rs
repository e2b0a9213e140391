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
    /// The metrics listener (plain HTTP, `GET /metrics` only; `None`: no
    /// metrics served). `serve --metrics ADDR` binds it.
    pub metrics: Option<Arc<std::net::TcpListener>>,
    /// A deployment that checked in before but not for this long counts as
    /// dark in the metrics (default [`DARK_AFTER`]: three of the agent's
    /// default poll intervals).
    pub dark_after: Duration,
}

/// The default [`ServeConfig::dark_after`]: three hours, three of the
/// agent's default 3,600-second poll intervals (`covenant fleet` flags dark
/// by the same rule).
pub const DARK_AFTER: Duration = Duration::from_secs(3 * 3600);

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
            metrics: None,
            dark_after: DARK_AFTER,
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
    let metrics = crate::metrics::Metrics::new();
    let (ledger, registry) = tokio::task::block_in_place(|| {
        datadir::open_ledger_measured(&config.data, config.clock.clone(), metrics.ledger.clone())
    })?;
    let read = |path: PathBuf| {
        std::fs::read_to_string(&path).with_context(|| {
            format!("reading {}", path.file_name().map_or(path.display(), |n| std::path::Path::new(n).display()))
        })
    };
    let ca = Arc::new(crate::datadir::authority(dir.path())?);
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
    metrics.witnesses_are(&witnesses.iter().map(|w| w.name.clone()).collect::<Vec<_>>());
    let (cosigned, gathering) = crate::witnesses::spawn(ledger.clone(), log, witnesses, metrics.witnesses.clone());
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
        metrics,
    };
    let metrics_server = match &config.metrics {
        Some(listener) => Some(serve_metrics(listener, node.clone(), config.dark_after)?),
        None => None,
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
    // The standard health check: every service serving from here on (the
    // ledger is open and folded, the views caught up), not serving once the
    // stop begins. And reflection over the descriptor sets, so that
    // grpcurl-style tools list and call the services with no .proto.
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in SERVICES {
        health.set_service_status(name, tonic_health::ServingStatus::Serving).await;
    }
    health.set_service_status("", tonic_health::ServingStatus::Serving).await;
    // Exactly the services served (the descriptor set also holds the
    // witnesses' service, which this server does not run), the two
    // reflection versions included.
    let reflection = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(covenant_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET);
        for name in SERVICES.into_iter().chain(STANDARD_SERVICES) {
            builder = builder.with_service_name(name);
        }
        builder
    };
    let reflection_v1 = reflection().build_v1().context("building the reflection service")?;
    let reflection_v1alpha = reflection().build_v1alpha().context("building the reflection service")?;
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
        .add_service(gated(health_service, &gate))
        .add_service(gated(reflection_v1, &gate))
        .add_service(gated(reflection_v1alpha, &gate))
        .serve_with_incoming_shutdown(incoming, {
            let closed = closed.clone();
            let mut health = health;
            async move {
                shutdown.await;
                // Not serving, said to every watcher; then each status is
                // cleared, which ends the health watch streams (a graceful
                // stop waits for open streams).
                for name in SERVICES.into_iter().chain([""]) {
                    health.set_service_status(name, tonic_health::ServingStatus::NotServing).await;
                    health.clear_service_status(name).await;
                }
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
    if let Some(task) = metrics_server {
        task.abort();
        let _ = task.await;
    }
    let _ = views.flush();
    // A cosignature under way on a blocking thread still holds the ledger
    // for a moment after its task was aborted: wait for it (bounded).
    tokio::task::block_in_place(|| ledger.close_within(std::time::Duration::from_secs(10)));
    Ok(())
}

/// Serves `GET /metrics` on `listener` (plain HTTP), and nothing else.
fn serve_metrics(
    listener: &std::net::TcpListener,
    node: Node,
    dark_after: Duration,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = listener.try_clone().context("the metrics listener")?;
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    tracing::info!(address = %listener.local_addr()?, "metrics at /metrics");
    // One scrape at a time, off the async threads: a scrape walks every
    // deployment, and parallel ones must not add up.
    let one = std::sync::Arc::new(tokio::sync::Semaphore::new(1));
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let (node, one) = (node.clone(), one.clone());
                async move {
                    let Ok(_turn) = one.acquire().await else {
                        return (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            [(axum::http::header::CONTENT_TYPE, "text/plain")],
                            String::new(),
                        );
                    };
                    let text = tokio::task::spawn_blocking(move || {
                        let s = scrape(&node, dark_after);
                        node.metrics.encode(&s)
                    })
                    .await
                    .unwrap_or_default();
                    (
                        axum::http::StatusCode::OK,
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        )
        .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "only /metrics is served here\n") });
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the metrics listener stopped");
        }
    }))
}

/// What a scrape reads from the state: the checkpoints' sizes, and each
/// deployment's standing grant and last check-in.
fn scrape(node: &Node, dark_after: Duration) -> crate::metrics::Scrape {
    let now = node.now();
    let week = now.plus_seconds(7 * 86_400);
    let dark_since = now.plus_seconds(-i64::try_from(dark_after.as_secs()).unwrap_or(i64::MAX));
    let witnessed_size = node.cosigned.witnessed.read().ok().and_then(|c| c.as_ref().map(|c| c.size)).unwrap_or(0);
    let mut out = crate::metrics::Scrape {
        checkpoint_size: node.ledger.checkpoint().size,
        witnessed_size,
        now: now.unix(),
        ..Default::default()
    };
    // What the state says, copied under its lock; the last check-ins
    // (sled reads) after it is released, so a scrape never holds up the
    // sequencer.
    let deployments: Vec<(String, bool)> = match node.registry.state.read() {
        Ok(state) => state
            .facts()
            .deployments()
            .map(|d| {
                let standing = state.facts().decisions_of(&d.id).last();
                let expiring = standing
                    .filter(|s| s.verdict == covenant_core::statements::Verdict::Grant)
                    .and_then(|s| s.expires_at)
                    .is_some_and(|e| e > now && e <= week);
                (d.id.clone(), expiring)
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    for (id, expiring) in deployments {
        out.grants_expiring += u64::from(expiring);
        match node.seen.get(&id) {
            Some(at) if at < dark_since => out.devices_dark += 1,
            Some(_) => {}
            None => out.devices_never_seen += 1,
        }
    }
    out
}

/// The `covenant.v1` services this server serves, by their full names (what
/// the health check answers for; the empty name is the server as a whole).
pub const SERVICES: [&str; 6] = [
    "covenant.v1.LedgerService",
    "covenant.v1.AdminService",
    "covenant.v1.UpdateService",
    "covenant.v1.QueryService",
    "covenant.v1.AttestationService",
    "covenant.v1.FieldService",
];

/// The standard services beside them: the health check and reflection.
pub const STANDARD_SERVICES: [&str; 3] =
    ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];

/// `service` behind the certificate gate (no certificate, no decoding), with
/// malformed frames answered InvalidArgument and every refusal logged.
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
