//! `covenant-agent`: the embedded daemon on a deployed product. It enrolls
//! the device, is provisioned from the vendor's bundle, checks in, verifies
//! every answer (the grant's signature, the release's threshold signature,
//! the ledger proofs and the witnesses' cosignatures), installs through A/B
//! slots, and says in plain words why an update is withheld.

use std::io::{ErrorKind, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use covenant_agent::config::{self, Config};
use covenant_agent::engine::{Agent, AgentError, Checked, system_now};
use covenant_agent::net::Grpc;
use covenant_agent::output;
use covenant_agent::store::{self, Store};
use covenant_storage::FsStorage;

/// `println!` that returns the write's error instead of panicking, so that
/// a closed output pipe ends the command quietly (see `main`).
macro_rules! say {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*)?
    };
}

/// The Covenant agent: installs only what a valid, logged, witnessed grant
/// covers, and tells the operator why an update is withheld.
///
/// On a new device: `enroll-request`, send the request to the vendor, then
/// `provision` the bundle that comes back, then `run` (or `check` once).
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Makes the device's keys in --state (they never leave it) and a
    /// certificate request for the vendor's compliance office, who answers
    /// with a provisioning bundle (`covenant admin enroll`).
    EnrollRequest {
        /// The agent's state directory.
        #[arg(long, value_name = "DIR")]
        state: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Takes the vendor's provisioning bundle into the state directory: the
    /// certificate, the trusted root, the server's address; and records the
    /// image the device runs now (slot a).
    Provision {
        /// The bundle folder from `covenant admin enroll`.
        bundle: PathBuf,
        /// The agent's state directory (where `enroll-request` made the keys).
        #[arg(long, value_name = "DIR")]
        state: PathBuf,
        /// The product line this device runs.
        #[arg(long)]
        product: String,
        /// The version installed at the factory.
        #[arg(long, value_name = "SEMVER")]
        installed: semver::Version,
        /// Its capability baseline (default: the version).
        #[arg(long, value_name = "SEMVER")]
        baseline: Option<semver::Version>,
        /// Accept a development root (test benches only).
        #[arg(long)]
        allow_development: bool,
    },
    /// Checks in once now: verifies the answer, and downloads and installs a
    /// granted release (with a progress bar on a terminal).
    Check {
        /// The agent's state directory.
        #[arg(long, value_name = "DIR")]
        state: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Runs the daemon: checks in every `poll_seconds` (with jitter), backs
    /// off and retries on transient failures, logs a verdict once per change.
    /// If the server refuses the device itself (its certificate revoked or
    /// not registered), it stops with exit code 3 and says why.
    Run {
        /// The agent's state directory.
        #[arg(long, value_name = "DIR")]
        state: PathBuf,
    },
    /// Shows the installed version, the last verdict with its reasons in
    /// words, the last checkpoint, and the configuration digest a field
    /// engineer compares with what they observe on site.
    Status {
        /// The agent's state directory.
        #[arg(long, value_name = "DIR")]
        state: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Print only the configuration digest (for `covenant verify sign --config`).
        #[arg(long, conflicts_with = "json")]
        configuration_digest: bool,
    },
    /// An air-gapped device: a signed request out, a bundle in, a receipt
    /// out (docs/offline.md).
    #[command(subcommand)]
    Offline(Offline),
}

#[derive(Subcommand, Debug)]
enum Offline {
    /// Writes a check-in signed by this device for an engineer to carry to
    /// the server; its nonce is remembered as the outstanding request.
    Request {
        /// The state directory.
        #[arg(long, value_name = "DIR")]
        state: PathBuf,
        /// Where to write the request.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Verifies a bundle exactly as an online answer, installs a granted
    /// release through the A/B slots, and writes the receipt (the signed
    /// install report and the verdict) for the engineer to carry back.
    Install {
        /// The bundle from `covenant field fetch`.
        bundle: PathBuf,
        /// The state directory.
        #[arg(long, value_name = "DIR")]
        state: PathBuf,
        /// Where to write the receipt.
        #[arg(long, value_name = "FILE")]
        receipt: PathBuf,
    },
}

fn open(state: &Path) -> anyhow::Result<(Config, Agent<FsStorage, Grpc>)> {
    let config = Config::read(&state.join(config::FILE))?;
    let transport = Grpc::new(&config, state)?;
    open_with(state, config, transport)
}

fn open_with<T: covenant_agent::engine::Transport>(
    state: &Path,
    config: Config,
    transport: T,
) -> anyhow::Result<(Config, Agent<FsStorage, T>)> {
    let key_text = zeroize::Zeroizing::new(
        std::fs::read_to_string(state.join(store::SIGNING_KEY)).context("reading signing.key")?,
    );
    let key = covenant_core::keys::SigningKey::from_seed_hex(&key_text).context("signing.key is not a signing key")?;
    let fs = FsStorage::new(state)?;
    // One agent process per state directory (a `check` beside a running
    // daemon would race it for the slots).
    covenant_storage::Storage::lock_exclusive(&fs)
        .with_context(|| format!("{} is in use by another covenant-agent", state.display()))?;
    let store = Store::new(fs);
    let settings = config.settings(state);
    Ok((config, Agent::new(store, transport, key, settings)))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // One thread: the agent is small and does one thing at a time.
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

fn checked_words(c: &Checked) -> String {
    match c {
        Checked::Current => "Up to date: no newer release exists.".into(),
        Checked::Withheld => "An update is withheld; `covenant-agent status` shows why.".into(),
        Checked::Installed(v) => format!("Installed version {v}; it passed its health check."),
        Checked::RolledBack(v) => format!("Version {v} failed its health check; switched back."),
        Checked::Failed(v) => format!("The installer refused version {v}; nothing changed."),
        Checked::Skipped(v) => format!("Version {v} failed here before; it is not retried."),
    }
}

fn check(state: &Path, json: bool) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    let rt = runtime()?;
    let _inside = rt.enter();
    let (_, mut agent) = open(state)?;
    let bar = (!json && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut progress = |have: u64, total: u64| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(have);
        }
    };
    let result = rt.block_on(agent.check(system_now(), &mut progress));
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let checked = result?;
    if json {
        say!("{}", serde_json::to_string(&output::Check::from(&checked))?);
    } else {
        say!("{}", checked_words(&checked));
    }
    Ok(())
}

fn run(state: &Path) -> anyhow::Result<()> {
    let rt = runtime()?;
    let _inside = rt.enter();
    let (config, mut agent) = open(state)?;
    let poll = Duration::from_secs(config.poll_seconds.max(1));
    eprintln!("covenant-agent: checking in with {} every {} s", config.server, poll.as_secs());
    rt.block_on(async move {
        // SIGTERM (a service manager) or SIGINT: stop at the next wait, so a
        // check-in under way, an install included, finishes first.
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut backoff = Duration::from_secs(5);
        loop {
            let wait = match agent.check(system_now(), &mut |_, _| {}).await {
                Ok(checked) => {
                    backoff = Duration::from_secs(5);
                    if !matches!(checked, Checked::Current | Checked::Withheld) {
                        eprintln!("covenant-agent: {}", checked_words(&checked));
                    }
                    poll
                }
                Err(e) if e.needs_the_vendor() => {
                    // A revoked or unregistered certificate is not a network
                    // blip: calling again every few seconds cannot help, and
                    // the operator must hear it rather than a retry count.
                    return Err(anyhow::Error::new(e)
                        .context("stopping: only the vendor can clear this (reinstate or re-enroll the device)"));
                }
                Err(e) if e.is_transient() => {
                    eprintln!("covenant-agent: {e}; retrying in about {} s", backoff.as_secs());
                    let wait = backoff;
                    backoff = (backoff * 2).min(poll);
                    wait
                }
                Err(e) => {
                    eprintln!("covenant-agent: {e}");
                    poll
                }
            };
            // Jitter: up to a fifth more, so a fleet does not call at once.
            let mut r = [0u8; 2];
            let _ = getrandom::fill(&mut r);
            let jitter = wait.mul_f64(f64::from(u16::from_le_bytes(r)) / f64::from(u16::MAX) / 5.0);
            tokio::select! {
                _ = tokio::time::sleep(wait + jitter) => {}
                _ = term.recv() => { eprintln!("covenant-agent: stopping"); return Ok(()); }
                _ = interrupt.recv() => { eprintln!("covenant-agent: stopping"); return Ok(()); }
            }
        }
    })
}

/// The configuration digest a field engineer compares with what they
/// observe on site.
fn offline_request(state: &Path, out: &Path) -> anyhow::Result<()> {
    let rt = runtime()?;
    let config = Config::read(&state.join(config::FILE))?;
    let (_, mut agent) = open_with(state, config, NoServer)?;
    let request = rt.block_on(agent.offline_request(system_now()))?;
    std::fs::write(out, &request).with_context(|| format!("writing {}", out.display()))?;
    say!("Wrote the signed request {}; carry it to the server with `covenant field fetch`.", out.display());
    Ok(())
}

fn offline_install(state: &Path, bundle: &Path, receipt: &Path) -> anyhow::Result<()> {
    let rt = runtime()?;
    let config = Config::read(&state.join(config::FILE))?;
    let transport = covenant_agent::bundle::BundleTransport::open(bundle)?;
    let head = transport.head().clone();
    let (_, mut agent) = open_with(state, config, transport)?;
    let result = rt.block_on(agent.offline_install(&head, system_now(), &mut |_, _| {}));
    let verdict = match &result {
        Ok(checked) => checked_words(checked),
        Err(e) => format!("refused: {e}"),
    };
    let deployment = agent.store().identity()?.deployment;
    // The receipt is written (synced, then renamed into place) before its
    // reports leave the device's queue: a cut in between leaves them queued
    // for the next receipt, never lost.
    agent.hand_over_reports(|reports| {
        // A refusal with nothing to report writes no receipt.
        if reports.is_empty() && result.is_err() {
            return Ok(());
        }
        let bytes = covenant_core::offline::Receipt { deployment, verdict: verdict.clone(), reports }.encode()?;
        write_durably(receipt, &bytes)
    })??;
    let (store, _, _, _) = agent.into_parts();
    let checked = result?;
    say!("{}", checked_words(&checked));
    if let Some(v) = store.verdict()?
        && matches!(checked, Checked::Withheld)
    {
        say!("{}", covenant_agent::describe(&v));
    }
    say!("Wrote the receipt {}; carry it back with `covenant field return`.", receipt.display());
    Ok(())
}

/// Writes `bytes` to `path` whole or not at all: into a temporary file
/// beside it, synced, renamed into place, and the folder synced.
fn write_durably(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let name = path.file_name().with_context(|| format!("{} names no file", path.display()))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes).with_context(|| format!("writing {}", tmp.display()))?;
    f.sync_all().with_context(|| format!("syncing {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} into place", tmp.display()))?;
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if let Ok(dir) = std::fs::File::open(parent) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// The transport of an offline request: nothing is sent.
struct NoServer;

impl covenant_agent::engine::Transport for NoServer {
    type Chunks = NoChunks;
    async fn root_chain(&mut self, _: u64) -> Result<Vec<Vec<u8>>, covenant_agent::engine::TransportError> {
        Err(covenant_agent::engine::TransportError::Network("offline".into()))
    }
    async fn check_in(
        &mut self,
        _: Vec<u8>,
    ) -> Result<covenant_proto::v1::CheckInResponse, covenant_agent::engine::TransportError> {
        Err(covenant_agent::engine::TransportError::Network("offline".into()))
    }
    async fn download(
        &mut self,
        _: covenant_core::digest::Sha256Digest,
        _: u64,
    ) -> Result<NoChunks, covenant_agent::engine::TransportError> {
        Err(covenant_agent::engine::TransportError::Network("offline".into()))
    }
    async fn report(&mut self, _: Vec<u8>) -> Result<(), covenant_agent::engine::ReportError> {
        Err(covenant_agent::engine::ReportError::Unsent("offline: kept for the next receipt".into()))
    }
}

struct NoChunks;

impl covenant_agent::engine::Chunks for NoChunks {
    async fn next(&mut self) -> Result<Option<(u64, Vec<u8>)>, covenant_agent::engine::TransportError> {
        Ok(None)
    }
}

fn configuration_digest(state: &Path) -> anyhow::Result<covenant_core::digest::Sha256Digest> {
    Ok(Config::read(&state.join(config::FILE))?.settings(state).configuration_digest)
}

fn status(state: &Path, json: bool) -> anyhow::Result<()> {
    let store = Store::new(FsStorage::new(state)?);
    let installed = store.installed()?;
    let verdict = store.verdict()?;
    let identity = store.identity()?;
    let checkpoint = store
        .checkpoint()?
        .and_then(|b| covenant_core::note::TrustedCheckpoint::restore(&b).ok())
        .map(|c| (c.checkpoint().size, covenant_core::digest::Sha256Digest(c.checkpoint().root_hash)));
    let pending = !store.pending_reports()?.is_empty();
    let configuration = configuration_digest(state).ok();
    if json {
        let out = output::Status {
            checkpoint: checkpoint.map(|(size, root_hash)| output::CheckpointHeld { root_hash, size }),
            configuration_digest: configuration,
            deployment: identity.deployment,
            installed: output::Installed {
                baseline: installed.baseline.to_string(),
                slot: store.current()?.name().to_owned(),
                version: installed.version.to_string(),
            },
            product: identity.product,
            report_pending: pending,
            verdict,
        };
        say!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    say!(
        "Deployment {} ({}), installed version {} (baseline {}, slot {}).",
        identity.deployment,
        identity.product,
        installed.version,
        installed.baseline,
        store.current()?.name()
    );
    match &verdict {
        None => say!("No check-in yet."),
        Some(v) => say!("Last check-in {}: {}", v.checked_at, covenant_agent::describe(v)),
    }
    match checkpoint {
        None => say!("No ledger checkpoint held yet."),
        Some((size, root)) => say!("Ledger checkpoint held: {size} entries, root {root}."),
    }
    if pending {
        say!("An install report is waiting to be acknowledged by the server.");
    }
    if let Some(digest) = configuration {
        say!("Configuration digest: {digest}.");
    }
    Ok(())
}

/// The exit code when the server refuses the device itself (a revoked or
/// unregistered certificate): a service manager should not restart the
/// agent for this one (systemd: `RestartPreventExitStatus=3`).
const EXIT_REFUSED: i32 = 3;

fn main() {
    let result = match Args::parse().command {
        Command::EnrollRequest { state, json } => covenant_agent::enroll_request(&state).and_then(|made| {
            if json {
                let out = output::Enrolled { csr: made.csr.clone(), signing_key: made.signing_key.clone() };
                say!("{}", serde_json::to_string(&out)?);
            } else {
                say!("Made this device's keys in {} (0600; they never leave it).", state.display());
                say!("Send {} to the vendor's compliance office.", made.csr.display());
                say!("The device's signing key is {}.", made.signing_key);
            }
            Ok(())
        }),
        Command::Provision { bundle, state, product, installed, baseline, allow_development } => {
            let baseline = baseline.unwrap_or_else(|| installed.clone());
            covenant_agent::provision(&bundle, &state, &product, &installed, &baseline, allow_development).and_then(
                |c| {
                    say!(
                        "Provisioned {}: version {installed} in slot a; the server is {}. Edit {} to set the installer \
                     and health check, then run `covenant-agent run --state {}`.",
                        state.display(),
                        c.server,
                        state.join(config::FILE).display(),
                        state.display()
                    );
                    Ok(())
                },
            )
        }
        Command::Check { state, json } => check(&state, json),
        Command::Run { state } => run(&state),
        Command::Status { state, configuration_digest: true, .. } => configuration_digest(&state).and_then(|digest| {
            say!("{digest}");
            Ok(())
        }),
        Command::Status { state, json, configuration_digest: false } => status(&state, json),
        Command::Offline(Offline::Request { state, out }) => offline_request(&state, &out),
        Command::Offline(Offline::Install { bundle, state, receipt }) => offline_install(&state, &bundle, &receipt),
    };
    if let Err(e) = result {
        // A reader that went away (`covenant-agent status | head -1`) is
        // not an error of the agent's: stop quietly.
        if e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == ErrorKind::BrokenPipe)) {
            std::process::exit(0);
        }
        eprintln!("covenant-agent: {}", error_words(&e));
        let refused = e.chain().any(|c| c.downcast_ref::<AgentError>().is_some_and(AgentError::needs_the_vendor));
        std::process::exit(if refused { EXIT_REFUSED } else { 1 });
    }
}

/// An error and its causes in one line, each cause once: an error whose
/// words already quote its cause (`the server's answer is refused: …`) is
/// not followed by that cause again.
fn error_words(e: &anyhow::Error) -> String {
    let mut words = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if words.contains(&text) {
            continue;
        }
        if !words.is_empty() {
            words.push_str(": ");
        }
        words.push_str(&text);
    }
    words
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use covenant_core::update::Refusal;

    /// Issue #10, item 17: `{:#}` printed a refusal's reason twice, once in
    /// the agent's words and once as their cause.
    #[test]
    fn a_refusal_is_said_once() {
        let e = anyhow::Error::from(AgentError::Refused(Refusal::Replayed));
        let reason = "the freshness answer echoes another nonce: a replayed answer";
        assert_eq!(format!("{e:#}").matches(reason).count(), 2, "the old output said it twice");
        assert_eq!(error_words(&e), format!("the server's answer is refused: {reason}"));
        // A context that adds words keeps its cause.
        let io = std::io::Error::new(ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::from(io).context("reading signing.key");
        assert_eq!(error_words(&e), "reading signing.key: no such file");
    }
}
