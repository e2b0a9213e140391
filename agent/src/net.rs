//! The agent's calls to the server over mutual TLS: the device's own
//! certificate, the vendor's CA, small HTTP/2 windows (a device needs little
//! in flight), and a deadline on every unary call.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use covenant_core::digest::Sha256Digest;
use covenant_proto::v1 as pb;
use covenant_proto::v1::ledger_service_client::LedgerServiceClient;
use covenant_proto::v1::update_service_client::UpdateServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::config::Config;
use crate::engine::{Chunks, ReportError, Transport, TransportError};
use crate::store;

/// A unary call's deadline.
const DEADLINE: Duration = Duration::from_secs(60);
/// The HTTP/2 stream window: what may be in flight to the device.
const WINDOW: u32 = 256 * 1024;

/// The server over gRPC.
#[derive(Debug, Clone)]
pub struct Grpc {
    channel: Channel,
}

impl Grpc {
    /// Connects lazily (the first call connects) as the device in `state`.
    pub fn new(config: &Config, state: &Path) -> anyhow::Result<Grpc> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        if !config.server.starts_with("https://") {
            bail!("the server URL {:?} must start with https://", config.server);
        }
        let read = |name: &str| std::fs::read(state.join(name)).with_context(|| format!("reading {name}"));
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(store::CA)?))
            .identity(Identity::from_pem(read(store::CERT)?, read(store::TLS_KEY)?))
            .domain_name(config.server_name());
        let channel = Channel::from_shared(config.server.clone())?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(20))
            .initial_stream_window_size(WINDOW)
            .initial_connection_window_size(WINDOW * 2)
            .connect_lazy();
        Ok(Grpc { channel })
    }
}

fn status(s: &tonic::Status) -> String {
    if s.message().is_empty() { format!("{:?}", s.code()) } else { s.message().to_owned() }
}

/// Who refuses what: on these calls the server refuses the device itself.
#[derive(Debug, Clone, Copy)]
enum Call {
    /// The root chain and the check-in: `Unauthenticated` (a certificate
    /// revoked, not registered, or no certificate) and `PermissionDenied`
    /// (a certificate of another deployment) refuse the device.
    Device,
    /// A download: `PermissionDenied` refuses the grant (withdrawn since
    /// the check-in; the next check-in says so), not the device.
    Download,
}

/// Sorts a failed call by what the agent should do about it.
fn classify(s: tonic::Status, call: Call) -> TransportError {
    use tonic::Code;
    let message = status(&s);
    match (s.code(), call) {
        (Code::Unauthenticated, _) | (Code::PermissionDenied, Call::Device) => {
            TransportError::Refused { code: s.code(), message }
        }
        // tonic reports a connection or handshake that failed as Unknown
        // or Unavailable, and a missed deadline as DeadlineExceeded.
        (Code::Unknown | Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled, _) => {
            TransportError::Network(message)
        }
        (code, _) => TransportError::Server { code, message },
    }
}

fn deadline<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(DEADLINE);
    r
}

/// A download stream.
#[derive(Debug)]
pub struct GrpcChunks(tonic::Streaming<pb::DownloadChunk>);

impl Chunks for GrpcChunks {
    async fn next(&mut self) -> Result<Option<(u64, Vec<u8>)>, TransportError> {
        Ok(self.0.message().await.map_err(|s| classify(s, Call::Download))?.map(|c| (c.offset, c.data)))
    }
}

impl Transport for Grpc {
    type Chunks = GrpcChunks;

    async fn root_chain(&mut self, from: u64) -> Result<Vec<Vec<u8>>, TransportError> {
        let r = LedgerServiceClient::new(self.channel.clone())
            .get_root_chain(deadline(pb::GetRootChainRequest { from_version: from }))
            .await
            .map_err(|s| classify(s, Call::Device))?;
        Ok(r.into_inner().roots)
    }

    async fn check_in(&mut self, checkin: Vec<u8>) -> Result<pb::CheckInResponse, TransportError> {
        let r = UpdateServiceClient::new(self.channel.clone())
            .check_in(deadline(pb::CheckInRequest { checkin }))
            .await
            .map_err(|s| classify(s, Call::Device))?;
        Ok(r.into_inner())
    }

    async fn download(&mut self, release: Sha256Digest, offset: u64) -> Result<GrpcChunks, TransportError> {
        let r = UpdateServiceClient::new(self.channel.clone())
            .download(pb::DownloadRequest { release_digest: release.0.to_vec(), offset })
            .await
            .map_err(|s| classify(s, Call::Download))?;
        Ok(GrpcChunks(r.into_inner()))
    }

    async fn report(&mut self, report: Vec<u8>) -> Result<(), ReportError> {
        UpdateServiceClient::new(self.channel.clone()).report(deadline(pb::ReportRequest { report })).await.map_err(
            |s| {
                // The codes with which the server refuses the report
                // itself (the ledger's rules, an outcome already reported,
                // a report on another deployment, a grant it does not
                // name); any other code says it did not get through.
                let refused = matches!(
                    s.code(),
                    tonic::Code::InvalidArgument
                        | tonic::Code::NotFound
                        | tonic::Code::AlreadyExists
                        | tonic::Code::PermissionDenied
                        | tonic::Code::FailedPrecondition
                );
                if refused { ReportError::Refused(status(&s)) } else { ReportError::Unsent(status(&s)) }
            },
        )?;
        Ok(())
    }
}
