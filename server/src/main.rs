//! `covenant-server`: the update server. Today it holds the ledger engine
//! (issue #3); `init`, `serve` and `check` over mutual TLS arrive with #4.

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
        Command::DebugAppendLoad { data, key_seed, appenders } => debug_append_load(data, &key_seed, appenders),
    }
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
