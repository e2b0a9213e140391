//! `covenant witness serve`: an auditor's witness. It cosigns a ledger's
//! checkpoints only along consistent history (C2SP tlog-witness), persists
//! the size it cosigned before answering, and so never cosigns a fork nor
//! goes back, across restarts too. `covenant witness init` makes its key
//! and its TLS certificate (which the server pins) in the state directory;
//! `serve` uses them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use covenant_core::merkle::Hash;
use covenant_core::note::{NoteSigner, NoteVerifier};
use covenant_core::witness::{self, WitnessError, WitnessRecord};
use covenant_proto::v1 as pb;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

/// The witness's commands.
#[derive(Debug, clap::Subcommand)]
pub enum Witness {
    /// Makes a witness's state directory: its signing key (`witness.key`, a
    /// C2SP private key, 0600), its cosignature verifier key
    /// (`witness.vkey`, for the root's `--witness` and the server's
    /// witnesses.toml) and its TLS certificate (`tls-cert.pem`, which the
    /// server pins). Nothing is overwritten.
    Init {
        /// The witness's name, as the root will list it, e.g. witness.example.org/w1.
        #[arg(long)]
        name: String,
        /// The state directory to make.
        #[arg(long, value_name = "DIR")]
        state: PathBuf,
    },
    /// Runs the witness until interrupted.
    Serve {
        /// The witness's key: a C2SP private key string
        /// (PRIVATE+KEY+name+id+key), whose name the root lists
        /// (default: witness.key in the state directory).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// The ledger's C2SP verifier key (ledger.vkey).
        #[arg(long, value_name = "VKEY")]
        log: String,
        /// Where the witness keeps what it cosigned and its TLS certificate.
        #[arg(long, value_name = "DIR")]
        state: PathBuf,
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:8444")]
        listen: std::net::SocketAddr,
    },
}

/// The witness service: one log, its key, and the size last cosigned.
pub struct WitnessNode {
    signer: NoteSigner,
    log: NoteVerifier,
    state_dir: PathBuf,
    held: Mutex<Option<WitnessRecord>>,
}

impl std::fmt::Debug for WitnessNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WitnessNode").field("log", &self.log.name()).finish_non_exhaustive()
    }
}

const STATE_FILE: &str = "witness-state.json";

impl WitnessNode {
    /// A witness for `log`, resuming from what `state_dir` holds.
    pub fn open(signer: NoteSigner, log: NoteVerifier, state_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(state_dir)?;
        let held = match std::fs::read(state_dir.join(STATE_FILE)) {
            Ok(bytes) => Some(serde_json::from_slice(&bytes).context("the witness state is corrupt")?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        Ok(WitnessNode { signer, log, state_dir: state_dir.to_path_buf(), held: Mutex::new(held) })
    }

    /// Persists `record` durably: temporary file, fsync, rename, directory fsync.
    fn persist(&self, record: &WitnessRecord) -> std::io::Result<()> {
        use std::io::Write as _;
        let tmp = self.state_dir.join("witness-state.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(record).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.state_dir.join(STATE_FILE))?;
        std::fs::File::open(&self.state_dir)?.sync_all()
    }
}

#[tonic::async_trait]
impl pb::witness_service_server::WitnessService for WitnessNode {
    async fn add_checkpoint(
        &self,
        request: Request<pb::AddCheckpointRequest>,
    ) -> Result<Response<pb::AddCheckpointResponse>, Status> {
        let req = request.into_inner();
        let proof = req
            .consistency
            .iter()
            .map(|h| h.as_slice().try_into().map_err(|_| Status::invalid_argument("a proof hash is not 32 bytes")))
            .collect::<Result<Vec<Hash>, Status>>()?;
        let now = u64::try_from(covenant_core::digest::Timestamp::since_epoch(std::time::SystemTime::now()).unix())
            .unwrap_or(0);
        let mut held = self.held.lock().await;
        match witness::cosign(held.as_ref(), req.old_size, &proof, &req.checkpoint, &self.log, &self.signer, now) {
            Ok((record, sig)) => {
                // Durable before the cosignature leaves.
                let this = &*self;
                tokio::task::block_in_place(|| this.persist(&record)).map_err(|e| Status::internal(e.to_string()))?;
                *held = Some(record);
                Ok(Response::new(pb::AddCheckpointResponse { cosignature: sig.to_line().into_bytes() }))
            }
            Err(e @ WitnessError::Conflict { size, .. }) => {
                let mut status = Status::failed_precondition(e.to_string());
                if let Ok(v) = size.to_string().parse() {
                    status.metadata_mut().insert("x-witness-size", v);
                }
                Err(status)
            }
            Err(e) => Err(Status::failed_precondition(e.to_string())),
        }
    }
}

/// The witness's TLS certificate and key, made on first start.
pub fn tls_identity(state_dir: &Path) -> anyhow::Result<(String, String)> {
    let cert = state_dir.join("tls-cert.pem");
    let key = state_dir.join("tls-key.pem");
    if !cert.exists() {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        covenant_storage::write_private(&key, made.signing_key.serialize_pem().as_bytes())?;
        // Under a temporary name, then renamed: whoever pins the certificate
        // (a server reading witnesses.toml) never reads half of it.
        let partial = state_dir.join("tls-cert.pem.tmp");
        std::fs::write(&partial, made.cert.pem())?;
        std::fs::rename(&partial, &cert)?;
    }
    Ok((std::fs::read_to_string(cert)?, std::fs::read_to_string(key)?))
}

/// Serves the witness on `listener` until `shutdown`.
pub async fn run(
    node: WitnessNode,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (cert, key) = tls_identity(&node.state_dir)?;
    let tls = tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(cert, key));
    tonic::transport::Server::builder()
        .tls_config(tls)?
        .add_service(pb::witness_service_server::WitnessServiceServer::from_arc(Arc::new(node)))
        // No Nagle: small gRPC frames would otherwise wait for delayed ACKs.
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await?;
    Ok(())
}

/// The key file `init` makes in the state directory.
pub const KEY_FILE: &str = "witness.key";
/// The cosignature verifier key `init` writes beside it.
pub const VKEY_FILE: &str = "witness.vkey";

/// `covenant witness init`: the witness's key, verifier key and TLS
/// certificate in `state`; returns the verifier key.
pub fn init(name: &str, state: &Path, json: bool) -> anyhow::Result<String> {
    let signer = NoteSigner::new(name, crate::keys::random_signing_key()?)
        .with_context(|| format!("{name:?} is not a valid key name (no spaces or '+')"))?;
    if state.join(KEY_FILE).exists() || state.join(VKEY_FILE).exists() {
        anyhow::bail!("{} already holds a witness key; nothing was changed", state.display());
    }
    {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(state)?;
    }
    covenant_storage::write_private(
        &state.join(KEY_FILE),
        signer.to_private_string().context("a new witness key is in memory")?.as_bytes(),
    )?;
    let vkey = verifier_key(&signer);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(state.join(VKEY_FILE))?;
    std::io::Write::write_all(&mut file, format!("{vkey}\n").as_bytes())?;
    tls_identity(state)?;
    let cert = state.join("tls-cert.pem");
    if json {
        println!("{}", serde_json::to_string(&crate::output::WitnessMade { cert, vkey: vkey.clone() })?);
    } else {
        println!("Made witness {name} in {} ({KEY_FILE} is 0600).", state.display());
        println!("Its verifier key, for `covenant root new --witness` and the server's witnesses.toml:\n{vkey}");
        println!("The server pins its TLS certificate: {}", cert.display());
    }
    Ok(vkey)
}

/// `covenant witness serve`.
pub async fn serve(key: Option<&Path>, log: &str, state: &Path, listen: std::net::SocketAddr) -> anyhow::Result<()> {
    let default_key = state.join(KEY_FILE);
    let key = key.unwrap_or(&default_key);
    let text =
        zeroize::Zeroizing::new(std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?);
    let signer = NoteSigner::parse_private(text.trim()).context("the key file is not a C2SP private key")?;
    let log = NoteVerifier::parse(log.trim()).context("--log is not a C2SP verifier key")?;
    let node = WitnessNode::open(signer, log, state)?;
    // The certificate exists before the line that names it: a server
    // started on that line pins it at once.
    tls_identity(state)?;
    let listener = TcpListener::bind(listen).await?;
    println!(
        "Witness {} for {} on {}; pin {} in the server's witnesses.toml.",
        node.signer.name(),
        node.log.name(),
        listener.local_addr()?,
        state.join("tls-cert.pem").display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    run(node, listener, async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    })
    .await
}

/// The cosignature verifier key of a witness's signer, for witnesses.toml.
pub fn verifier_key(signer: &NoteSigner) -> String {
    signer.cosignature_verifier().to_string()
}
