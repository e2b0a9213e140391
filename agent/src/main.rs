//! `covenant-agent`: the embedded daemon on a deployed product. Today it
//! enrolls the device (`enroll-request`); checking in, verifying and
//! installing come with issue #8.

use clap::{Parser, Subcommand};

/// The Covenant agent.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
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
        state: std::path::PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    let result = match Args::parse().command {
        Command::EnrollRequest { state, json } => covenant_agent::enroll_request(&state).map(|made| {
            if json {
                println!("{{\"csr\":{:?},\"signing_key\":{:?}}}", made.csr.display().to_string(), made.signing_key);
            } else {
                println!("Made this device's keys in {} (0600; they never leave it).", state.display());
                println!("Send {} to the vendor's compliance office.", made.csr.display());
                println!("The device's signing key is {}.", made.signing_key);
            }
        }),
    };
    if let Err(e) = result {
        eprintln!("covenant-agent: {e:#}");
        std::process::exit(1);
    }
}
