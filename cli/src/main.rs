//! `covenant`: the people's command line. In this first cut it only parses
//! its command line; the commands arrive with issues #4, #6 and #9.

use clap::Parser;

/// Covenant's command line for admins, customers, engineers and auditors.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    anyhow::bail!("covenant has no commands yet: they arrive in issues #4, #6 and #9")
}
