//! The server's accept loop: TCP connections counted against their peer
//! address's cap and the global cap (unauthenticated ones in a smaller
//! budget of their own, the oldest evicted to make room), the TLS handshake
//! bounded in time, and a connection that presented no client certificate
//! closed after a short grace; and the descriptor limit those caps follow.
//!
//! The server runs the TLS handshake itself (tokio-rustls, as tonic does
//! inside) rather than through tonic's `ServerTlsConfig`, because only here
//! is it known, once per connection, whether the client presented a
//! certificate. Client authentication is optional so that a call without
//! one gets a proper Unauthenticated answer (`node::Node::caller`); but
//! such a connection can do nothing else, so it is closed after
//! [`crate::node::CERTLESS_GRACE`] whatever it does, and idle
//! connections without a certificate cannot hold the server's descriptors
//! (review finding F5). Authenticated connections are bounded by HTTP/2
//! keepalive instead (`serve::run`), which closes those whose peer went
//! away.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_rustls::server::TlsStream;
use tokio_stream::StreamExt as _;
use tonic::transport::server::{Connected, TcpIncoming};

use crate::limits::{PeerStream, PeerTable};

/// How long the accept loop waits after the operating system refused an
/// accept (out of descriptors, say) before it tries again, so that it does
/// not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The TLS side of the server: its certificate, the CA its clients'
/// certificates must chain to (optional for the client), HTTP/2 only.
pub(crate) fn tls_acceptor(
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: &str,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
        roots.add(ca.context("reading ca.pem")?).context("ca.pem")?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        // A missing certificate is refused by `Node::caller` with a
        // proper Unauthenticated status rather than a failed handshake;
        // such a connection gets only `CERTLESS_GRACE`.
        .allow_unauthenticated()
        .build()?;
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("reading server.pem")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("reading server.key")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// How the accept loop treats each connection.
#[derive(Debug, Clone)]
pub(crate) struct AcceptLimits {
    /// The longest a TLS handshake may take.
    pub(crate) handshake_timeout: Duration,
    /// How long a connection without a client certificate stays open.
    pub(crate) certless_grace: Duration,
}

/// Accepts connections on `listener` until the returned stream is dropped:
/// each is admitted by `peers` (or closed at once), its handshake runs in a
/// task of its own within the timeout, and only connections whose handshake
/// completed are handed to the server.
pub(crate) fn incoming(
    listener: TcpListener,
    peers: Arc<PeerTable>,
    tls: tokio_rustls::TlsAcceptor,
    limits: AcceptLimits,
) -> tokio_stream::wrappers::ReceiverStream<Result<Connection, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move {
        // No Nagle: small gRPC frames would otherwise wait for delayed ACKs.
        let mut accepted = TcpIncoming::from(listener).with_nodelay(Some(true));
        loop {
            let next = tokio::select! {
                next = accepted.next() => next,
                // The server stopped serving: stop accepting.
                () = tx.closed() => return,
            };
            let stream = match next {
                None => return,
                Some(Ok(stream)) => stream,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            // Unauthenticated until its handshake brings a certificate: it
            // may evict the oldest unauthenticated connection (and may be
            // evicted in turn, which fails its handshake or its grace).
            let Some(stream) = peers.admit(stream) else {
                tracing::debug!("a connection whose peer address is unknown was closed");
                continue;
            };
            let (tls, tx, limits, peers) = (tls.clone(), tx.clone(), limits.clone(), peers.clone());
            tokio::spawn(async move {
                let Ok(Ok(mut stream)) = tokio::time::timeout(limits.handshake_timeout, tls.accept(stream)).await
                else {
                    // A failed, timed-out or evicted handshake: dropping the
                    // stream closes it and gives back its place.
                    return;
                };
                let certified = stream.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
                if certified && !peers.authenticate(stream.get_mut().0) {
                    tracing::debug!("an authenticated connection over its peer's or the server's cap was closed");
                    return;
                }
                let closes = (!certified).then(|| Box::pin(tokio::time::sleep(limits.certless_grace)));
                let _ = tx.send(Ok(Connection { inner: stream, closes })).await;
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A connection whose TLS handshake completed: with no client certificate,
/// it fails its next read or write once its grace has passed (the sleep
/// wakes the connection's task, so an idle one is closed too).
#[derive(Debug)]
pub struct Connection {
    inner: TlsStream<PeerStream>,
    closes: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Connection {
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.closes.as_mut().is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready())
    }
}

fn closed() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "a connection without a client certificate is closed after its grace",
    )
}

impl Connected for Connection {
    // What tonic's own TLS reports, so `Request::peer_certs` finds the
    // client's certificates (`docs/style.md`, stack pitfall 4).
    type ConnectInfo = <TlsStream<PeerStream> as Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for Connection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.expired(cx) {
            return Poll::Ready(Err(closed()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if self.expired(cx) {
            return Poll::Ready(Err(closed()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.expired(cx) {
            return Poll::Ready(Err(closed()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Raises this process's soft limit on open files to its hard limit, if
/// lower (the soft limit is often 1,024 while the hard one is far higher),
/// and returns the soft limit in force: `None` if unlimited or unknown.
/// Through `rustix`'s safe `getrlimit`/`setrlimit`, so the server keeps
/// `#![forbid(unsafe_code)]`.
#[cfg(unix)]
pub(crate) fn raise_descriptor_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_some() && limit.current != limit.maximum {
        let raised = Rlimit { current: limit.maximum, maximum: limit.maximum };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::info!(
                from = limit.current,
                to = limit.maximum,
                "raised the open-files limit to its hard limit"
            ),
            // (macOS refuses an unlimited soft limit, for one.)
            Err(e) => tracing::warn!(error = %e, soft = limit.current, "the open-files limit could not be raised"),
        }
    }
    getrlimit(Resource::Nofile).current
}

/// The descriptor limit is not known here.
#[cfg(not(unix))]
pub(crate) fn raise_descriptor_limit() -> Option<u64> {
    None
}

/// The fewest connections the server starts with: below this, a handful of
/// busy devices or one burst of handshakes would fill it.
pub const MIN_CONNECTIONS: usize = 64;

/// The server's connection cap for `configured` connections under a
/// descriptor limit of `descriptors` (`None`: unlimited or unknown): the
/// limit less a reserve of a quarter of it, at most
/// [`crate::node::RESERVED_DESCRIPTORS`], for the server's own files.
/// An error naming `ulimit -n` if that leaves fewer than
/// [`MIN_CONNECTIONS`].
pub fn connection_cap(configured: usize, descriptors: Option<u64>) -> anyhow::Result<usize> {
    let Some(descriptors) = descriptors else { return Ok(configured) };
    let descriptors = usize::try_from(descriptors).unwrap_or(usize::MAX);
    let reserved = (descriptors / 4).min(crate::node::RESERVED_DESCRIPTORS);
    let allowed = descriptors - reserved;
    if allowed < MIN_CONNECTIONS {
        anyhow::bail!(
            "the open-files limit is {descriptors} (`ulimit -n`); less {reserved} kept for the server's own files, \
             that leaves {allowed} connections, under the minimum of {MIN_CONNECTIONS}: raise it (`ulimit -n 4096`, \
             or LimitNOFILE= in a systemd unit) and start again"
        );
    }
    Ok(configured.min(allowed))
}

/// What every call passes before its body is read: a client certificate.
/// A call without one is refused here, Unauthenticated, before tonic
/// decodes its message (which `Node::caller`, in the handler, comes after),
/// and such calls are rate limited per peer address (ResourceExhausted), so
/// that a client without a certificate costs the server almost nothing.
/// A call with a certificate goes on at the cost of one extension lookup;
/// its rate limit and registration are `Node::caller`'s.
#[derive(Debug, Clone)]
pub struct CertificateGate {
    certless: Arc<crate::limits::RateLimiter>,
}

impl CertificateGate {
    /// A gate letting `limit` calls without a certificate through per peer
    /// address (to be refused with their reason).
    pub fn new(limit: crate::limits::RateLimit) -> CertificateGate {
        CertificateGate { certless: Arc::new(crate::limits::RateLimiter::new(limit)) }
    }
}

impl tonic::service::Interceptor for CertificateGate {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if request.peer_certs().is_some_and(|certs| !certs.is_empty()) {
            return Ok(request);
        }
        if let Some(address) = request.remote_addr() {
            let key = match address.ip() {
                std::net::IpAddr::V4(ip) => covenant_core::digest::Sha256Digest::of(&ip.octets()),
                std::net::IpAddr::V6(ip) => covenant_core::digest::Sha256Digest::of(&ip.octets()),
            };
            if let Err(wait) = self.certless.admit(&key, std::time::Instant::now()) {
                return Err(tonic::Status::resource_exhausted(format!(
                    "too many calls without a client certificate from this address; retry in {} ms",
                    wait.as_millis().max(1)
                )));
            }
        }
        Err(tonic::Status::unauthenticated("a client certificate is required"))
    }
}

/// A service whose answers to requests that are not well-formed gRPC frames
/// say so: tonic decides these before the codec sees a byte and answers
/// Internal (a compressed flag without `grpc-encoding`, a body that ends
/// inside a frame, an unknown flag) or OutOfRange (a declared length past
/// the service's limit); they are the sender's fault, so InvalidArgument,
/// with tonic's words (which name the limit). Only answers that carry their
/// status in the headers (an error before any message, as these always
/// are) are looked at, and only decoded when they do.
///
/// It is also where every refused call is logged, once: the RPC, the code
/// and the status's words (never a body or a key; the words are the
/// server's own, escaped), at `info` under the target `covenant::refusal`;
/// refusals anyone can cause at will (no certificate, a rate limit) at
/// `debug`, counted in [`GATE_REFUSALS`]. A call
/// refused before any message (every refusal of a handler) carries its
/// status in the headers; an error after messages began (a download cut
/// off) ends in trailers and is logged where it is decided.
#[derive(Debug, Clone)]
pub struct FramingErrors<S>(pub S);

impl<S: tonic::server::NamedService> tonic::server::NamedService for FramingErrors<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, R> tonic::codegen::Service<tonic::codegen::http::Request<B>> for FramingErrors<S>
where
    S: tonic::codegen::Service<tonic::codegen::http::Request<B>, Response = tonic::codegen::http::Response<R>>,
    S::Future: Unpin,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = FramingFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: tonic::codegen::http::Request<B>) -> Self::Future {
        let rpc = request.uri().path().chars().take(128).collect();
        FramingFuture(self.0.call(request), rpc)
    }
}

/// Calls refused as unauthenticated or over a rate limit (logged at debug
/// only): the metrics export it.
pub static GATE_REFUSALS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The future of [`FramingErrors`], with the RPC's path for the log.
#[derive(Debug)]
pub struct FramingFuture<F>(F, String);

impl<F, E, R> std::future::Future for FramingFuture<F>
where
    F: std::future::Future<Output = Result<tonic::codegen::http::Response<R>, E>> + Unpin,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut response = std::task::ready!(Pin::new(&mut self.0).poll(cx))?;
        if response.headers().contains_key("grpc-status")
            && let Some(status) = tonic::Status::from_header_map(response.headers())
            && is_framing_error(&status)
        {
            let _ = tonic::Status::invalid_argument(format!(
                "the request is not a well-formed gRPC message: {}",
                status.message()
            ))
            .add_header(response.headers_mut());
        }
        if response.headers().contains_key("grpc-status")
            && let Some(status) = tonic::Status::from_header_map(response.headers())
            && status.code() != tonic::Code::Ok
        {
            // Debug-formatted: quoted, with control characters escaped, so
            // that words a caller put in a message (an id it sent, a key a
            // parser named) can never forge a log line.
            let cause: String = status.message().chars().take(512).collect();
            match status.code() {
                // What anyone on the network can cause at will (no
                // certificate, over a rate limit): counted, not logged one
                // by one, or a flood of them would flood the log.
                tonic::Code::Unauthenticated | tonic::Code::ResourceExhausted => {
                    GATE_REFUSALS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(target: "covenant::refusal", rpc = %self.1, code = ?status.code(), cause = ?cause, "refused");
                }
                _ => {
                    tracing::info!(target: "covenant::refusal", rpc = %self.1, code = ?status.code(), cause = ?cause, "refused")
                }
            }
        }
        Poll::Ready(Ok(response))
    }
}

/// The statuses tonic's frame decoder gives a malformed request
/// (`tonic::codec::decode`, tonic 0.14).
fn is_framing_error(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::Internal => {
            status.message().starts_with("protocol error: received message with")
                || status.message() == "Unexpected EOF decoding stream."
        }
        tonic::Code::OutOfRange => status.message().starts_with("Error, decoded message length too large"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::node::MAX_CONNECTIONS;

    /// Review finding: under `ulimit -n 1024` the cap was 1,024 less a flat
    /// 1,024 reserved, floored at 1: the server served one connection.
    #[test]
    fn a_low_descriptor_limit_still_leaves_connections_for_devices() {
        // 1,024: a quarter reserved, 768 connections.
        assert_eq!(connection_cap(MAX_CONNECTIONS, Some(1024)).unwrap(), 768);
        // 4,096 and above: 1,024 reserved.
        assert_eq!(connection_cap(MAX_CONNECTIONS, Some(4096)).unwrap(), 3072);
        assert_eq!(connection_cap(MAX_CONNECTIONS, Some(1 << 20)).unwrap(), MAX_CONNECTIONS);
        // Unknown or unlimited: as configured.
        assert_eq!(connection_cap(MAX_CONNECTIONS, None).unwrap(), MAX_CONNECTIONS);
        // A configured cap below what the limit allows stands.
        assert_eq!(connection_cap(3, Some(1024)).unwrap(), 3);
        // The smallest limit that still serves MIN_CONNECTIONS.
        assert_eq!(connection_cap(MAX_CONNECTIONS, Some(86)).unwrap(), 65);
        // Below it, the server refuses to start and says what to do.
        let refused = connection_cap(MAX_CONNECTIONS, Some(80)).unwrap_err().to_string();
        assert!(refused.contains("`ulimit -n`") && refused.contains("is 80"), "{refused}");
        assert!(
            refused.contains(&format!("leaves 60 connections, under the minimum of {MIN_CONNECTIONS}")),
            "{refused}"
        );
    }

    /// The soft limit after `raise_descriptor_limit` is the hard limit.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        use rustix::process::{Resource, getrlimit};
        let now = raise_descriptor_limit();
        assert_eq!(now, getrlimit(Resource::Nofile).maximum);
    }
}
