//! Connecting to the server over mutual TLS as one of the people: the
//! identity folder (`cert.pem`, `key.pem`, `ca.pem`, `root.json`,
//! `signing.key`) that `covenant-server init --dev` or `covenant admin
//! identity issue` made, and the server's address.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use covenant_core::keys::SigningKey;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// Where to connect and as whom.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// The server, e.g. https://127.0.0.1:8443.
    #[arg(long, env = "COVENANT_SERVER", global = true)]
    pub server: Option<String>,
    /// The identity folder to call as.
    #[arg(long, env = "COVENANT_IDENTITY", global = true, value_name = "DIR")]
    pub identity: Option<PathBuf>,
}

impl Connection {
    /// The identity folder, or an error saying how to name one.
    pub fn identity_dir(&self) -> anyhow::Result<&Path> {
        self.identity.as_deref().context("name an identity folder with --identity DIR or COVENANT_IDENTITY")
    }

    /// Opens a mutual-TLS channel. The server certificate is checked
    /// against the identity's CA and the name `localhost`, or the host of
    /// the URL when it is a name.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let server = self.server.as_deref().context("name the server with --server URL or COVENANT_SERVER")?;
        if !server.starts_with("https://") {
            bail!("the server URL must start with https:// (plain http would skip TLS)");
        }
        let dir = self.identity_dir()?;
        let read =
            |name: &str| std::fs::read(dir.join(name)).with_context(|| format!("reading {}", dir.join(name).display()));
        let host = server.trim_start_matches("https://").split([':', '/']).next().unwrap_or("localhost");
        let domain = if host.parse::<std::net::IpAddr>().is_ok() { "localhost" } else { host };
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read("ca.pem")?))
            .identity(Identity::from_pem(read("cert.pem")?, read("key.pem")?))
            .domain_name(domain);
        let endpoint = Channel::from_shared(server.to_owned())?.tls_config(tls)?;
        // Wait for a server that is still starting (gRPC's wait-for-ready):
        // only "connection refused" is retried, for up to CONNECT_WAIT; a
        // TLS or name failure is reported at once.
        let deadline = std::time::Instant::now() + CONNECT_WAIT;
        loop {
            match endpoint.connect().await {
                Ok(channel) => return Ok(channel),
                Err(e) if refused(&e) && std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e).with_context(|| format!("connecting to {server}")),
            }
        }
    }

    /// The identity's signing key.
    pub fn signing_key(&self) -> anyhow::Result<SigningKey> {
        read_key(&self.identity_dir()?.join("signing.key"))
    }
}

/// How long a command waits for a server that refuses connections (one
/// that is still starting) before it gives up.
pub const CONNECT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether `e` is, at its root, a refused TCP connection.
fn refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused) {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Reads a signing-key file (the seed, 64 hex digits).
pub fn read_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text =
        zeroize::Zeroizing::new(std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?);
    SigningKey::from_seed_hex(&text).with_context(|| format!("{} is not a signing key (64 hex digits)", path.display()))
}
