//! Gathering witness cosignatures. The server reads its witnesses from
//! `DIR/witnesses.toml`; after each new checkpoint it pushes it, with a
//! consistency proof from the size each witness last cosigned, to every
//! witness at once, checks each cosignature against that witness's key, and
//! publishes the checkpoint with the cosignatures it got: to the services,
//! and to the ledger, which writes the newest cosigned checkpoint to
//! `ledger/public/checkpoint` for static auditing. A witness that is down,
//! slow, or answers with a bad cosignature is logged and counted as
//! missing; it never stops the log.
//!
//! A development data directory (a development root and
//! `keys/witness-dev.key`) whose `witnesses.toml` lists no witness cosigns
//! in process with its development witness, under the same rules as a
//! witness service (`covenant_core::witness`): it keeps the size it last
//! cosigned in `DIR/witness-dev-state.json` and never cosigns a history
//! inconsistent with it. So a development server's checkpoints satisfy its
//! root's witness policy without a witness to run.
//!
//! ```toml
//! [[witness]]
//! name = "witness.localhost/dev"
//! address = "https://127.0.0.1:8444"
//! vkey = "witness.localhost/dev+1234abcd+BB..."   # its cosignature verifier key
//! cert = "witness-cert.pem"                      # its TLS certificate, pinned
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use covenant_core::note::{self, NoteSignature, NoteSigner, NoteVerifier};
use covenant_core::witness::WitnessRecord;
use covenant_proto::v1 as pb;
use covenant_proto::v1::witness_service_client::WitnessServiceClient;
use serde::Deserialize;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::layout::DataDir;
use crate::ledger::storage::Storage;
use crate::ledger::{Ledger, SignedCheckpoint};

/// How long one witness may take to answer.
pub const WITNESS_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Deserialize)]
struct File {
    #[serde(default)]
    witness: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    address: String,
    vkey: String,
    cert: String,
}

/// One configured witness.
#[derive(Debug, Clone)]
pub struct WitnessConfig {
    /// Its note name.
    pub name: String,
    /// Its cosignature verifier key.
    pub vkey: NoteVerifier,
    /// How it is reached.
    pub reach: Reach,
}

/// How a witness is reached.
#[derive(Debug, Clone)]
pub enum Reach {
    /// A witness service over TLS.
    Remote {
        /// Its address, `https://host:port`.
        address: String,
        /// Its TLS certificate, PEM, pinned.
        cert_pem: String,
    },
    /// The development witness, cosigning in this process.
    InProcess {
        /// Its key.
        signer: Arc<NoteSigner>,
        /// The file that keeps the size it last cosigned.
        state: PathBuf,
    },
}

/// The file in a development data directory where its in-process witness
/// keeps what it last cosigned.
pub use crate::layout::DEV_WITNESS_STATE;

/// What the data directory `dir` records its witnesses cosigned, as
/// evidence for the ledger's recovery (which refuses to open a ledger cut
/// below it): the development witness's state file, if it ever cosigned.
/// The file lies outside the ledger's folder, and a witness never forgets
/// a size it cosigned, so a checkpoint log cut below it is seen. A corrupt
/// state file is an error, as it is for the witness itself.
pub fn recorded_cosignatures(dir: &Path) -> anyhow::Result<Vec<crate::ledger::store::Witnessed>> {
    let path = DataDir::new(dir).witness_dev_state();
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let record: WitnessRecord =
        serde_json::from_slice(&bytes).with_context(|| format!("{} is corrupt", path.display()))?;
    let mut root = [0u8; 32];
    hex::decode_to_slice(&record.root, &mut root)
        .with_context(|| format!("{} is corrupt: its root is not 64 hex digits", path.display()))?;
    Ok(vec![crate::ledger::store::Witnessed {
        source: DEV_WITNESS_STATE.to_owned(),
        size: record.size,
        root: Some(root),
    }])
}

/// Asks every outside witness in `witnesses` which size of this log it last
/// cosigned, as evidence for the ledger's recovery, which refuses to open a
/// ledger smaller than a size a witness holds. `question` is a checkpoint
/// note the ledger key signed (the empty tree will do); it claims an old size
/// no witness holds (`u64::MAX`), so a tlog-witness answers with a conflict
/// naming the size it holds, and cosigns nothing. The witnesses are asked
/// at once, each within [`WITNESS_TIMEOUT`], on a thread of their own (so
/// this works with or without a runtime around it). A witness that cannot
/// be asked is logged and left out: its own refusal of a smaller or
/// inconsistent checkpoint still shows a fork later.
pub fn ask_held_sizes(witnesses: &[WitnessConfig], question: &str) -> Vec<crate::ledger::store::Witnessed> {
    let remote: Vec<(String, String, String)> = witnesses
        .iter()
        .filter_map(|w| match &w.reach {
            Reach::Remote { address, cert_pem } => Some((w.name.clone(), address.clone(), cert_pem.clone())),
            Reach::InProcess { .. } => None,
        })
        .collect();
    if remote.is_empty() {
        return Vec::new();
    }
    let question = question.to_owned();
    let asking = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async move {
            let mut round = tokio::task::JoinSet::new();
            for (name, address, cert_pem) in remote {
                let question = question.clone();
                round.spawn(async move { (name, ask_held_size(&address, &cert_pem, question).await) });
            }
            Ok::<_, std::io::Error>(round.join_all().await)
        })
    });
    let answers = match asking.join() {
        Ok(Ok(answers)) => answers,
        Ok(Err(e)) => {
            tracing::warn!("the witnesses could not be asked which size they hold: {e}");
            return Vec::new();
        }
        Err(_) => return Vec::new(),
    };
    let mut held = Vec::new();
    for (name, answer) in answers {
        match answer {
            Ok(size) => held.push(crate::ledger::store::Witnessed {
                source: format!("the answer of witness {name} at start"),
                size,
                root: None,
            }),
            Err(e) => tracing::warn!(witness = %name, "could not ask which size it holds: {e:#}"),
        }
    }
    held
}

/// Asks one witness service which size of this log it holds (see
/// [`ask_held_sizes`]).
async fn ask_held_size(address: &str, cert_pem: &str, question: String) -> anyhow::Result<u64> {
    // Outside `serve` (in `check`), nothing has installed the provider yet.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(cert_pem)).domain_name("localhost");
    let channel = Channel::from_shared(address.to_owned())?
        .tls_config(tls)?
        .connect_timeout(WITNESS_TIMEOUT)
        .timeout(WITNESS_TIMEOUT)
        .connect_lazy();
    let request =
        pb::AddCheckpointRequest { old_size: u64::MAX, consistency: Vec::new(), checkpoint: question.into_bytes() };
    match tokio::time::timeout(WITNESS_TIMEOUT, WitnessServiceClient::new(channel).add_checkpoint(request)).await {
        Err(_) => anyhow::bail!("no answer within {WITNESS_TIMEOUT:?}"),
        Ok(Ok(_)) => anyhow::bail!("it cosigned the question instead of naming the size it holds"),
        Ok(Err(status)) => status
            .metadata()
            .get("x-witness-size")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .with_context(|| format!("refused without naming its size: {}", status.message())),
    }
}

/// The witnesses of the data directory `dir`: those `DIR/witnesses.toml`
/// lists; or, if it lists none and `dir` is a development directory (its
/// `root.json` says `development` and `keys/witness-dev.key` exists), its
/// development witness, in process.
pub fn load(dir: &Path) -> anyhow::Result<Vec<WitnessConfig>> {
    let listed = load_listed(dir)?;
    if listed.is_empty()
        && let Some(dev) = development_witness(dir)?
    {
        return Ok(vec![dev]);
    }
    Ok(listed)
}

/// The development witness of a development data directory, if it is one.
fn development_witness(dir: &Path) -> anyhow::Result<Option<WitnessConfig>> {
    use covenant_core::statements::{Payload as _, RootMetadata};
    let data = DataDir::new(dir);
    let key_path = data.witness_dev_key();
    let Ok(root) = std::fs::read(data.root_json()) else { return Ok(None) };
    let development = covenant_core::envelope::Envelope::parse(&root)
        .ok()
        .and_then(|e| RootMetadata::parse(e.payload()).ok())
        .is_some_and(|r| r.development);
    if !development || !key_path.exists() {
        return Ok(None);
    }
    let key = zeroize::Zeroizing::new(
        std::fs::read_to_string(&key_path).with_context(|| format!("reading {}", key_path.display()))?,
    );
    let signer = NoteSigner::parse_private(key.trim())
        .with_context(|| format!("{} is not a C2SP private key", key_path.display()))?;
    Ok(Some(WitnessConfig {
        name: signer.name().to_owned(),
        vkey: signer.cosignature_verifier(),
        reach: Reach::InProcess { signer: Arc::new(signer), state: data.witness_dev_state() },
    }))
}

/// Reads `DIR/witnesses.toml` (none configured if absent).
fn load_listed(dir: &Path) -> anyhow::Result<Vec<WitnessConfig>> {
    let path = DataDir::new(dir).witnesses_toml();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).context("reading witnesses.toml"),
    };
    let file: File = toml::from_str(&text).context("witnesses.toml is malformed")?;
    file.witness
        .into_iter()
        .map(|e| {
            let vkey = NoteVerifier::parse(&e.vkey)
                .with_context(|| format!("witness {}: vkey is not a C2SP verifier key", e.name))?;
            if vkey.name() != e.name || vkey.sig_type() != note::TYPE_COSIGNATURE {
                anyhow::bail!("witness {}: vkey must be its cosignature key (type 0x04) under its name", e.name);
            }
            let cert_path = DataDir::new(dir).file(Path::new(&e.cert));
            let cert_pem = std::fs::read_to_string(&cert_path)
                .with_context(|| format!("witness {}: reading {}", e.name, cert_path.display()))?;
            Ok(WitnessConfig { name: e.name, vkey, reach: Reach::Remote { address: e.address, cert_pem } })
        })
        .collect()
}

/// The newest checkpoint with the cosignatures gathered for it.
#[derive(Debug, Clone, Default)]
pub struct Cosigned {
    /// Its size.
    pub size: u64,
    /// The signed note with cosignature lines.
    pub note: String,
    /// Valid cosignatures on it.
    pub cosignatures: usize,
}

/// Shared results of the gathering task.
#[derive(Debug, Default)]
pub struct Gathered {
    /// The newest checkpoint, with the cosignatures gathered for it so far
    /// (none yet at the start of a round).
    pub latest: RwLock<Option<Cosigned>>,
    /// The newest checkpoint at least one witness cosigned: what an agent,
    /// which requires cosignatures, is given with a proof.
    pub witnessed: RwLock<Option<Cosigned>>,
    /// Cosignatures asked for and not obtained (down, slow, bad).
    pub missing: AtomicU64,
}

struct Peer {
    config: WitnessConfig,
    channel: Option<Channel>,
    /// The size it last cosigned, as far as we know.
    size: u64,
}

impl Peer {
    async fn client(&mut self, address: &str, cert_pem: &str) -> anyhow::Result<WitnessServiceClient<Channel>> {
        if self.channel.is_none() {
            let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(cert_pem)).domain_name("localhost");
            let channel = Channel::from_shared(address.to_owned())?
                .tls_config(tls)?
                .connect_timeout(WITNESS_TIMEOUT)
                .timeout(WITNESS_TIMEOUT)
                .connect_lazy();
            self.channel = Some(channel);
        }
        Ok(WitnessServiceClient::new(self.channel.clone().context("no channel")?))
    }

    /// Asks for a cosignature of `cp`. Returns a verified cosignature line.
    async fn cosign<S: Storage>(
        &mut self,
        ledger: &Ledger<S>,
        log: &NoteVerifier,
        cp: &SignedCheckpoint,
    ) -> anyhow::Result<String> {
        match self.config.reach.clone() {
            Reach::Remote { address, cert_pem } => self.cosign_remote(ledger, log, cp, &address, &cert_pem).await,
            Reach::InProcess { signer, state } => {
                let size = cp.size;
                let (ledger, log, cp) = (ledger.clone(), log.clone(), cp.clone());
                let line = tokio::task::spawn_blocking(move || cosign_in_process(&ledger, &log, &cp, &signer, &state))
                    .await??;
                self.size = size;
                Ok(line)
            }
        }
    }

    /// Asks a witness service for a cosignature of `cp`, retrying once from
    /// the size the witness says it holds.
    async fn cosign_remote<S: Storage>(
        &mut self,
        ledger: &Ledger<S>,
        log: &NoteVerifier,
        cp: &SignedCheckpoint,
        address: &str,
        cert_pem: &str,
    ) -> anyhow::Result<String> {
        for _ in 0..2 {
            let proof = if self.size > 0 && self.size < cp.size {
                ledger.consistency_proof(self.size, cp.size)?.iter().map(|h| h.to_vec()).collect()
            } else {
                Vec::new()
            };
            let request = pb::AddCheckpointRequest {
                old_size: self.size,
                consistency: proof,
                checkpoint: cp.note.clone().into_bytes(),
            };
            let mut client = self.client(address, cert_pem).await?;
            match tokio::time::timeout(WITNESS_TIMEOUT, client.add_checkpoint(request)).await {
                Err(_) => anyhow::bail!("no answer within {WITNESS_TIMEOUT:?}"),
                Ok(Err(status)) => {
                    let held =
                        status.metadata().get("x-witness-size").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                    match held {
                        Some(size) if size != self.size => self.size = size,
                        _ => anyhow::bail!("refused: {}", status.message()),
                    }
                }
                Ok(Ok(answer)) => {
                    let line =
                        String::from_utf8(answer.into_inner().cosignature).context("the cosignature is not text")?;
                    let sig = NoteSignature::parse_line(line.trim_end_matches('\n'))
                        .context("the cosignature is malformed")?;
                    let text = format!("{}{}", cp.note, sig.to_line());
                    let verified = note::open_checkpoint(text.as_bytes(), log)?;
                    verified
                        .require_cosignatures(&[&self.config.vkey], 1)
                        .context("the cosignature does not verify with the witness's key")?;
                    self.size = cp.size;
                    return Ok(sig.to_line());
                }
            }
        }
        anyhow::bail!("the witness keeps naming another size")
    }
}

/// The development witness's decision on `cp`, in process: the witness
/// rules of `covenant_core::witness` against the record in `state`, which
/// is made durable before the cosignature is used.
fn cosign_in_process<S: Storage>(
    ledger: &Ledger<S>,
    log: &NoteVerifier,
    cp: &SignedCheckpoint,
    signer: &NoteSigner,
    state: &Path,
) -> anyhow::Result<String> {
    let held: Option<WitnessRecord> = match std::fs::read(state) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).with_context(|| format!("{} is corrupt", state.display()))?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", state.display())),
    };
    let old = held.as_ref().map_or(0, |h| h.size);
    let proof = if old > 0 && old < cp.size { ledger.consistency_proof(old, cp.size)? } else { Vec::new() };
    let now =
        u64::try_from(covenant_core::digest::Timestamp::since_epoch(std::time::SystemTime::now()).unix()).unwrap_or(0);
    let (record, signature) =
        covenant_core::witness::cosign(held.as_ref(), old, &proof, cp.note.as_bytes(), log, signer, now)?;
    // Written whole and durable (tmp, fsync, rename, fsync the folder), so a
    // crash never lets the witness forget a size it cosigned.
    let tmp = state.with_extension("json.tmp");
    {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        file.write_all(&serde_json::to_vec(&record)?)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, state).with_context(|| format!("writing {}", state.display()))?;
    if let Some(dir) = state.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(signature.to_line())
}

/// How long before witnesses that did not answer are asked again for the
/// same checkpoint.
pub const RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// Starts the gathering task. Without witnesses it publishes every
/// checkpoint as is. Witnesses are asked at once, each bounded by
/// [`WITNESS_TIMEOUT`], so a slow one delays a round by that much at most.
/// With witnesses, the ledger publishes only cosigned checkpoints for
/// static serving, each as the cosignatures for it arrive.
pub fn spawn<S: Storage>(
    ledger: Ledger<S>,
    log: NoteVerifier,
    witnesses: Vec<WitnessConfig>,
    metrics: crate::metrics::WitnessMetrics,
) -> (Arc<Gathered>, tokio::task::JoinHandle<()>) {
    let gathered = Arc::new(Gathered::default());
    let out = gathered.clone();
    if !witnesses.is_empty() {
        ledger.expect_cosignatures();
    }
    let mut watch = ledger.watch();
    let mut peers: Vec<Peer> = witnesses.into_iter().map(|config| Peer { config, channel: None, size: 0 }).collect();
    let task = tokio::spawn(async move {
        // The checkpoint of the current round and the cosignature lines got
        // for it; a round asks the witnesses that have not answered yet, and
        // is retried every RETRY until they have or a new checkpoint comes.
        let mut size = u64::MAX;
        let mut lines: Vec<(String, String)> = Vec::new();
        loop {
            let cp = watch.borrow_and_update().clone();
            let publish = |lines: &[(String, String)]| {
                let mut sorted: Vec<&String> = lines.iter().map(|(_, line)| line).collect();
                sorted.sort();
                let cosigned = Cosigned {
                    size: cp.size,
                    note: format!("{}{}", cp.note, sorted.iter().map(|l| l.as_str()).collect::<String>()),
                    cosignatures: sorted.len(),
                };
                if !lines.is_empty() {
                    ledger.publish_cosigned(cosigned.size, cosigned.note.clone());
                    if let Ok(mut witnessed) = out.witnessed.write() {
                        *witnessed = Some(cosigned.clone());
                    }
                }
                if let Ok(mut latest) = out.latest.write() {
                    *latest = Some(cosigned);
                }
            };
            if cp.size != size {
                size = cp.size;
                lines.clear();
                // Published at once, then again with each cosignature as it
                // arrives: a slow witness never holds back the others'.
                publish(&lines);
            }
            if cp.size > 0 {
                let mut round = tokio::task::JoinSet::new();
                let mut waiting = Vec::new();
                for mut peer in peers.drain(..) {
                    if lines.iter().any(|(name, _)| *name == peer.config.name) {
                        waiting.push(peer);
                        continue;
                    }
                    let (ledger, log, cp) = (ledger.clone(), log.clone(), cp.clone());
                    round.spawn(async move {
                        let result = peer.cosign(&ledger, &log, &cp).await;
                        (peer, result)
                    });
                }
                peers = waiting;
                while let Some(joined) = round.join_next().await {
                    let Ok((peer, result)) = joined else { continue };
                    match result {
                        Ok(line) => {
                            metrics.cosigned(&peer.config.name, cp.size);
                            lines.push((peer.config.name.clone(), line));
                            publish(&lines);
                        }
                        Err(e) => {
                            out.missing.fetch_add(1, Ordering::Relaxed);
                            let now = covenant_core::digest::Timestamp::since_epoch(std::time::SystemTime::now());
                            metrics.failed(&peer.config.name, now.unix());
                            tracing::warn!(witness = %peer.config.name, size = cp.size, "no cosignature: {e:#}");
                        }
                    }
                    peers.push(peer);
                }
            }
            if lines.len() < peers.len() && cp.size > 0 {
                tokio::select! {
                    changed = watch.changed() => if changed.is_err() { return },
                    () = tokio::time::sleep(RETRY) => {}
                }
            } else if watch.changed().await.is_err() {
                return;
            }
        }
    });
    (gathered, task)
}
