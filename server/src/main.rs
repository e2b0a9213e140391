//! `covenant-server`: the update server. In this first cut it only parses its
//! command line; the ledger (#3), the gRPC services over mutual TLS (#4) and
//! governance (#6) come next.

use clap::Parser;

/// The Covenant update server.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!("covenant-server is not built yet: the ledger and services arrive in issues #3 and #4")
}
