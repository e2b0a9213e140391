//! `covenant-server`: the update server. `init --dev` makes a development
//! data directory, `serve` runs the gRPC services over mutual TLS, `check`
//! runs the recovery `serve` would as a dry run that writes nothing.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use covenant_core::keys::SigningKey;
use covenant_core::ledger::EntryKind;
use covenant_core::note::NoteSigner;
use covenant_server::ledger::storage::FsStorage;
use covenant_server::ledger::{Ledger, LedgerConfig, NewEntry, NoteCounter, system_clock};

/// The Covenant update server.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

/// `covenant-server keys`.
#[derive(Subcommand, Debug)]
enum KeysCmd {
    /// Makes an Ed25519 key pair in a PKCS#11 token, labelled as the URI's
    /// object (the private half sensitive and never extractable), and
    /// prints its public key. The token must exist and have a user PIN
    /// (for SoftHSM2: softhsm2-util --init-token --free --label covenant).
    /// Then name the URI in `init --decision-key` or `--ledger-key`.
    Generate {
        /// The key's URI, e.g.
        /// pkcs11:token=covenant;object=decision?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/covenant/pin
        uri: String,
        /// One JSON object: public_key, key_id.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Makes a data directory.
    ///
    /// Development: `init --dev --data DIR` puts every key in it (a
    /// development root, a CA, the server's certificate, admin1, admin2 and
    /// an auditor under DIR/identities/) and prints the ledger's verifier key.
    ///
    /// Production is a ceremony in which the server never sees a root or
    /// release private key:
    ///   1. `init --online-keys --data DIR --ledger-name NAME --server-name HOST`
    ///      makes the decision and ledger keys, the CA and the server's
    ///      certificate, and prints the public halves for `covenant root new`.
    ///   2. The root-key holders write the root (`covenant root new`) and sign
    ///      it on their own machines (`covenant root sign`).
    ///   3. `init --root ROOT --data DIR` checks the root lists this server's
    ///      keys and appends it as the ledger's first entry.
    ///   4. The first admin (whose key the root lists) sends a certificate
    ///      request; `certify` issues it, the admin signs their own
    ///      registration (`covenant admin identity enroll`), and `admit`
    ///      appends it. Every later identity is issued over the wire.
    #[command(verbatim_doc_comment)]
    Init {
        /// Make a development directory with every key in it.
        #[arg(long, conflicts_with_all = ["online_keys", "root"])]
        dev: bool,
        /// Step 1 of production: make only the server's own keys.
        #[arg(long, conflicts_with = "root")]
        online_keys: bool,
        /// Step 3 of production: the signed root to start the ledger with.
        #[arg(long, value_name = "FILE")]
        root: Option<std::path::PathBuf>,
        /// With --online-keys: the ledger's checkpoint origin, e.g. example.com/ledger.
        #[arg(long, value_name = "NAME", requires = "online_keys")]
        ledger_name: Option<String>,
        /// With --online-keys: a DNS name or IP address for the server's
        /// certificate (repeatable).
        #[arg(long = "server-name", value_name = "HOST", requires = "online_keys")]
        server_names: Vec<String>,
        /// With --online-keys or --dev: keep the decision key in a PKCS#11
        /// token instead of keys/decision.key, named by its URI, e.g.
        /// pkcs11:token=covenant;object=decision?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/covenant/pin
        /// (make it with `covenant-server keys generate URI`). The PIN comes
        /// from pin-source or pin-value, else COVENANT_PKCS11_PIN.
        #[arg(long, value_name = "URI", conflicts_with = "root")]
        decision_key: Option<String>,
        /// With --online-keys or --dev: keep the ledger key in a PKCS#11
        /// token instead of keys/ledger.key (as --decision-key).
        #[arg(long, value_name = "URI", conflicts_with = "root")]
        ledger_key: Option<String>,
        /// With --online-keys or --dev: keep the CA's key (an Ed25519 key;
        /// it signs every identity's certificate) in a PKCS#11 token instead
        /// of ca.key (as --decision-key).
        #[arg(long, value_name = "URI", conflicts_with = "root")]
        ca_key: Option<String>,
        /// The data directory (must not exist or be empty, except for --root).
        #[arg(long, value_name = "DIR")]
        data: std::path::PathBuf,
    },
    /// Keys in a PKCS#11 token (an HSM; SoftHSM2 to try it).
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Has the data directory's CA sign a certificate request while the
    /// server is stopped: the first admin's, before anyone can call it.
    /// Writes cert.pem, ca.pem and root.json into --out.
    Certify {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data: std::path::PathBuf,
        /// The holder's role (admin for the first admin).
        #[arg(long, default_value = "admin")]
        role: covenant_core::statements::IdentityRole,
        /// The holder's id.
        #[arg(long)]
        id: String,
        /// The request `covenant keys new` made.
        #[arg(long, value_name = "FILE")]
        csr: std::path::PathBuf,
        /// The folder to write into (the holder's identity folder).
        #[arg(long, value_name = "DIR")]
        out: std::path::PathBuf,
    },
    /// Appends the first admin's self-signed registration (from `covenant
    /// admin identity enroll`) to the ledger of a stopped server. It takes
    /// nothing else, and nothing once an admin is registered: every other
    /// action goes to the running server. The ledger's rules apply as over
    /// the wire.
    Admit {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data: std::path::PathBuf,
        /// The signed action (a DSSE envelope).
        file: std::path::PathBuf,
    },
    /// Serves the ledger over gRPC with mutual TLS until SIGTERM or SIGINT.
    Serve {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data: std::path::PathBuf,
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: std::net::SocketAddr,
        /// Where to serve the Prometheus metrics (plain HTTP, `GET /metrics`
        /// only; docs/operations.md), or `off`. Keep it on loopback or a
        /// network only your monitoring reaches: the counts are the
        /// vendor's business. If the address is taken, the server serves
        /// without metrics and logs a warning.
        #[arg(long, default_value = "127.0.0.1:9184", value_name = "ADDR|off")]
        metrics: String,
        /// A deployment counts as dark in the metrics when it checked in
        /// before but not for this many seconds (default: three of the
        /// agent's default poll intervals).
        #[arg(long, default_value_t = 3 * 3600, value_name = "SECONDS")]
        dark_after: u64,
        /// How the log is written (on standard output): `text` for people,
        /// `json` (one object per line) for log shippers. The level is
        /// `info` unless RUST_LOG says otherwise (`RUST_LOG=warn`,
        /// `RUST_LOG=covenant::refusal=off` to drop the refusals).
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
    },
    /// Writes a backup of a data directory, safe while the server serves it:
    /// one tar file, consistent at the newest durable signed checkpoint
    /// (the ledger's files cut there; the sled views and published tiles,
    /// which are rebuilt, left out), with a manifest of every file's
    /// SHA-256. Verified after writing by restoring it into a scratch folder
    /// and checking it as `check` does. It holds the server's private keys:
    /// keep it as safe as the data directory (docs/operations.md, "Backups").
    Backup {
        /// The data directory (served or not).
        #[arg(long, value_name = "DIR")]
        data: std::path::PathBuf,
        /// The backup file to write (new).
        #[arg(long, value_name = "FILE")]
        out: std::path::PathBuf,
    },
    /// Restores a backup into a new data directory. Verifies every file
    /// against the manifest, then asks the witnesses which size they hold
    /// (and reads --cosigned, a cosigned checkpoint you supply) and refuses
    /// a backup shorter than the newest checkpoint any of them cosigned,
    /// naming the entries it would lose; then checks the ledger. The sled
    /// views are rebuilt when the server next starts.
    Restore {
        /// The backup file.
        file: std::path::PathBuf,
        /// The data directory to make (new or empty).
        #[arg(long, value_name = "DIR")]
        data: std::path::PathBuf,
        /// A checkpoint (signed note, with cosignatures) known to have been
        /// cosigned, e.g. from a witness's operator or an agent.
        #[arg(long, value_name = "FILE")]
        cosigned: Option<std::path::PathBuf>,
        /// Restore although witnesses cosigned more than the backup holds,
        /// losing those entries: only when no newer backup exists. WHY, the
        /// reason in words, goes into the ledger with the loss (a note signed
        /// by the decision key, right after the restored entries). Every
        /// witness that cosigned the lost entries then refuses this ledger
        /// until its operator resets it (docs/operations.md, "Backups").
        #[arg(long, value_name = "WHY")]
        accept_loss: Option<String>,
    },
    /// Checks the stored ledger exactly as `serve` recovers it, without
    /// changing anything: every journal record and body, the fold, the
    /// signed checkpoint, the durable tiles, and what lies past the signed
    /// size. Fails, naming the file or entry, wherever `serve` would refuse.
    Check {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data: std::path::PathBuf,
    },
    /// Appends annotations to a ledger under load until killed, printing one
    /// line per acknowledged entry. Used by the crash tests; not for people.
    #[command(hide = true)]
    DebugAppendLoad {
        /// The ledger directory.
        #[arg(long)]
        data: std::path::PathBuf,
        /// The ledger key's seed, 64 hex digits.
        #[arg(long)]
        key_seed: String,
        /// Concurrent appenders.
        #[arg(long, default_value_t = 16)]
        appenders: usize,
    },
}

fn main() {
    if let Err(e) = main_result() {
        eprintln!("covenant-server: {e:#}");
        std::process::exit(1);
    }
}

fn main_result() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Init { dev, online_keys, root, ledger_name, server_names, decision_key, ledger_key, ca_key, data } => {
            let held = covenant_server::datadir::HeldKeys { decision: decision_key, ledger: ledger_key, ca: ca_key };
            if online_keys {
                let name = ledger_name.context("name the ledger's checkpoint origin with --ledger-name")?;
                let names: Vec<&str> = server_names.iter().map(String::as_str).collect();
                let made = covenant_server::datadir::init_online_keys(&data, &name, &names, &held)?;
                let decision = hex::encode(made.decision.to_bytes());
                println!("Made the server's online keys in {}.", data.display());
                println!(
                    "Give these to the root-key holders for `covenant root new` (also in decision.pub and ledger.vkey):"
                );
                println!("  --decision {decision} --ledger {}", made.ledger);
                println!("Then: covenant-server init --root ROOT --data {}", data.display());
                return Ok(());
            }
            if let Some(root) = root {
                let version = covenant_server::datadir::init_root(&data, &root)?;
                println!("The ledger of {} starts with root version {version}.", data.display());
                println!(
                    "Next, the first admin: covenant-server certify --data {} --id ID --csr FILE --out DIR",
                    data.display()
                );
                return Ok(());
            }
            if !dev {
                anyhow::bail!("say --dev, --online-keys or --root FILE (see --help for the production ceremony)");
            }
            let made = covenant_server::datadir::init_dev_held(&data, &held)?;
            println!("Made a development data directory in {}.", data.display());
            for id in &made.identities {
                println!("  identity: {}", id.display());
            }
            println!("The ledger's verifier key (also in ledger.vkey):\n{}", made.ledger_vkey);
            Ok(())
        }
        Command::Keys(KeysCmd::Generate { uri, json }) => {
            let uri = covenant_pkcs11::Pkcs11Uri::parse(&uri)?;
            let public = covenant_pkcs11::generate(&uri)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "public_key": public.to_hex(), "key_id": public.key_id().to_string() })
                );
            } else {
                println!(
                    "Made an Ed25519 key labelled {:?} in token {:?}; its private half never leaves the token.",
                    uri.object, uri.token
                );
                println!("  public key: {}", public.to_hex());
            }
            Ok(())
        }
        Command::Certify { data, role, id, csr, out } => {
            let csr_pem = std::fs::read_to_string(&csr).with_context(|| format!("reading {}", csr.display()))?;
            let (fingerprint, signing_key) = covenant_server::datadir::certify(&data, role, &id, &csr_pem, &out)?;
            println!("Wrote {}/cert.pem, ca.pem and root.json for {role} {id}.", out.display());
            println!("  certificate SHA-256: {fingerprint}");
            println!("  signing key:         {}", hex::encode(signing_key.to_bytes()));
            println!("The holder now signs their registration: covenant admin identity enroll --identity DIR");
            Ok(())
        }
        Command::Admit { data, file } => {
            let body = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let index = covenant_server::datadir::admit(&data, body)?;
            println!("Appended as ledger entry {index}.");
            Ok(())
        }
        Command::Serve { data, listen, metrics, dark_after, log_format } => {
            serve(data, listen, &metrics, dark_after, &log_format)
        }
        Command::Check { data } => check(&data),
        Command::Backup { data, out } => {
            let done = covenant_server::backup::backup(&data, &out)?;
            println!(
                "Wrote {}: {} entries (checkpoint root {}), {} files, {} bytes; restored into a scratch folder and \
                 checked. It holds the server's private keys: keep it as safe as the data directory.",
                done.out.display(),
                done.size,
                done.root_hash,
                done.files,
                done.bytes
            );
            Ok(())
        }
        Command::Restore { file, data, cosigned, accept_loss } => {
            let done = covenant_server::backup::restore(&file, &data, cosigned.as_deref(), accept_loss.as_deref())?;
            if let Some(at) = done.loss_recorded_at {
                println!(
                    "The loss of entries {at}..{} is recorded as entry {at}. Every witness that cosigned them will \
                     refuse this ledger until its operator resets it; tell them, and the devices' operators.",
                    done.witnessed
                );
            }
            println!(
                "Restored {} entries into {} (the newest size known cosigned: {}). Start it with: covenant-server \
                 serve --data {}",
                done.size,
                done.data.display(),
                done.witnessed,
                done.data.display()
            );
            Ok(())
        }
        Command::DebugAppendLoad { data, key_seed, appenders } => debug_append_load(data, &key_seed, appenders),
    }
}

/// `check`: the recovery `serve` runs, as a dry run that writes nothing, so
/// it fails wherever `serve` would refuse to start.
fn check(data: &std::path::Path) -> anyhow::Result<()> {
    covenant_server::datadir::check_format(data)?;
    let layout = covenant_server::layout::DataDir::new(data);
    let vkey = std::fs::read_to_string(layout.ledger_vkey()).context("reading ledger.vkey")?;
    let verifier = covenant_core::note::NoteVerifier::parse(vkey.trim())?;
    let dir = layout.ledger();
    // `FsStorage::new` would create a missing folder: a check writes nothing.
    if !dir.is_dir() {
        anyhow::bail!("{} does not exist: there is no ledger to check", dir.display());
    }
    let storage = FsStorage::new(&dir)?;
    // The same fold as `serve`: with the subject secret, so every header's
    // subject tags are checked against its body.
    let registry = covenant_server::datadir::registry_for(data)?;
    // And the same evidence: what the witnesses are recorded to have cosigned.
    let config = covenant_server::datadir::ledger_config(data)?;
    let checked = Ledger::check(&storage, &verifier, registry.clone(), &config)
        .with_context(|| format!("checking the ledger in {}", dir.display()))?;
    covenant_server::datadir::check_losses(data, &registry)?;
    println!(
        "All {} entries check: every record is well formed, every body matches its digest, every entry folds, \
         the journal reproduces the signed checkpoint, and every durable tile matches it.",
        checked.size
    );
    if checked.unsigned_bytes > 0 {
        println!(
            "Past the signed size, log/journal holds {} of one interrupted batch (never acknowledged); \
             the next start moves them aside to log/journal.unsigned-{}.",
            counted_bytes(checked.unsigned_entries, checked.unsigned_bytes),
            checked.size
        );
    }
    Ok(())
}

/// "3 entries (1,234 bytes)", for the unsigned tail.
fn counted_bytes(entries: u64, bytes: u64) -> String {
    let noun = if entries == 1 { "entry" } else { "entries" };
    format!("{entries} {noun} ({bytes} bytes)")
}

fn serve(
    data: std::path::PathBuf,
    listen: std::net::SocketAddr,
    metrics: &str,
    dark_after: u64,
    log_format: &str,
) -> anyhow::Result<()> {
    let json = log_format == "json";
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if json {
        tracing_subscriber::fmt().json().with_current_span(false).with_env_filter(filter).init();
    } else {
        // Colours only for a terminal: a log file gets plain text.
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
        tracing_subscriber::fmt().with_ansi(terminal).with_env_filter(filter).init();
    }
    let metrics = match metrics {
        "off" => None,
        addr => {
            let addr: std::net::SocketAddr =
                addr.parse().with_context(|| format!("--metrics {addr:?} is neither an address (IP:PORT) nor off"))?;
            if !addr.ip().to_canonical().is_loopback() {
                tracing::warn!(%addr, "the metrics are served off loopback: whoever reaches the address reads them");
            }
            match std::net::TcpListener::bind(addr) {
                Ok(l) => Some(Arc::new(l)),
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "no metrics: the address cannot be bound; serving without them");
                    None
                }
            }
        }
    };
    let mut config = covenant_server::serve::ServeConfig::new(data.clone());
    config.dark_after = std::time::Duration::from_secs(dark_after);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
        let address = listener.local_addr()?;
        let metrics_address = metrics.as_ref().map(|m| m.local_addr()).transpose()?;
        if json {
            // Every line of a JSON log is JSON: the addresses go in an event.
            tracing::info!(data = %data.display(), %address, metrics = ?metrics_address, "listening");
        } else {
            // Written, not printed: a reader that closed the pipe after the
            // first line must not stop the server.
            let mut out = std::io::stdout();
            let _ = writeln!(out, "Serving {} on {address} (mutual TLS).", data.display());
            if let Some(m) = metrics_address {
                let _ = writeln!(out, "Metrics on http://{m}/metrics.");
            }
            let _ = out.flush();
        }
        config.metrics = metrics;
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { if let Some(t) = term.as_mut() { t.recv().await; } else { std::future::pending::<()>().await } } => {}
            }
        };
        covenant_server::serve::run(config, listener, shutdown).await
    })
}

/// Prints `ack <index> <header hex> <body hex> <checkpoint size> <root hex>`
/// for every acknowledged append, flushing each line before the next.
fn debug_append_load(data: std::path::PathBuf, key_seed: &str, appenders: usize) -> anyhow::Result<()> {
    let mut seed = [0u8; 32];
    hex::decode_to_slice(key_seed, &mut seed).context("--key-seed must be 64 hex digits")?;
    let signer = NoteSigner::new("covenant.test/ledger", SigningKey::from_seed(&seed))?;
    let storage = Arc::new(FsStorage::new(&data)?);
    let ledger = Ledger::open(storage, signer, NoteCounter::default(), system_clock(), LedgerConfig::default())?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        for a in 0..appenders {
            let ledger = ledger.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                for n in 0u64.. {
                    let body = format!("appender {a} note {n} {:?}", std::time::SystemTime::now()).into_bytes();
                    let entry = NewEntry { kind: EntryKind::Note, actor: None, subjects: vec![], body: body.clone() };
                    match ledger.append(entry).await {
                        Ok(done) => {
                            let line = format!(
                                "ack {} {} {} {} {}\n",
                                done.index,
                                hex::encode(&done.header),
                                hex::encode(&body),
                                done.checkpoint.size,
                                hex::encode(done.checkpoint.root)
                            );
                            if tx.send(line).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            eprintln!("append failed: {e}");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            });
        }
        drop(tx);
        tokio::task::spawn_blocking(move || {
            use std::io::Write as _;
            let stdout = std::io::stdout();
            for line in rx {
                let mut out = stdout.lock();
                if out.write_all(line.as_bytes()).and_then(|()| out.flush()).is_err() {
                    return;
                }
            }
        })
        .await
    })?;
    Ok(())
}
