//! `covenant-agent`: the embedded daemon on a deployed product. In this first
//! cut it only parses its command line; the verification chain it will run
//! lives in `covenant-core` already.

use clap::Parser;

/// The Covenant agent.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!("covenant-agent is not built yet: it arrives in issues #7 and #8")
}
