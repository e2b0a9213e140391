//! `covenant-server`: the update server. `init --dev` makes a development
//! data directory, `serve` runs the gRPC services over mutual TLS, `check`
//! verifies every stored body against its digest.

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

#[derive(Subcommand, Debug)]
enum Command {
    /// Makes a data directory. `--dev` puts every key in it (a development
    /// root, a CA, the server's certificate, admin1, admin2 and an auditor
    /// under DIR/identities/) and prints the ledger's verifier key.
    Init {
        /// Make a development directory with every key in it.
        #[arg(long)]
        dev: bool,
        /// The data directory to make; it must not exist or be empty.
        #[arg(long, value_name = "DIR")]
        data: std::path::PathBuf,
    },
    /// Serves the ledger over gRPC with mutual TLS until SIGTERM or SIGINT.
    Serve {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data: std::path::PathBuf,
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: std::net::SocketAddr,
    },
    /// Checks every stored body against its header's digest and the journal
    /// against the signed checkpoint, without changing anything.
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

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Init { dev, data } => {
            if !dev {
                anyhow::bail!(
                    "only `init --dev` exists so far; the production ceremony (--online-keys, --root) comes next"
                );
            }
            let made = covenant_server::datadir::init_dev(&data)?;
            println!("Made a development data directory in {}.", data.display());
            for id in &made.identities {
                println!("  identity: {}", id.display());
            }
            println!("The ledger's verifier key (also in ledger.vkey):\n{}", made.ledger_vkey);
            Ok(())
        }
        Command::Serve { data, listen } => serve(data, listen),
        Command::Check { data } => {
            let vkey = std::fs::read_to_string(data.join("ledger.vkey")).context("reading ledger.vkey")?;
            let verifier = covenant_core::note::NoteVerifier::parse(vkey.trim())?;
            let storage = Arc::new(FsStorage::new(data.join("ledger"))?);
            let n = covenant_server::ledger::store::check(storage, &verifier)?;
            println!(
                "All {n} entries check: every body matches its digest and the journal reproduces the signed checkpoint."
            );
            Ok(())
        }
        Command::DebugAppendLoad { data, key_seed, appenders } => debug_append_load(data, &key_seed, appenders),
    }
}

fn serve(data: std::path::PathBuf, listen: std::net::SocketAddr) -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
        println!("Serving {} on {} (mutual TLS).", data.display(), listener.local_addr()?);
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { if let Some(t) = term.as_mut() { t.recv().await; } else { std::future::pending::<()>().await } } => {}
            }
        };
        covenant_server::service::run(covenant_server::service::ServeConfig { data }, listener, shutdown).await
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
