//! `covenant`: the people's command line. Admins record facts and manage
//! identities; anyone makes their own keys; auditors verify the ledger,
//! online or from a copy of its files. `--json` on every command prints
//! data for scripts instead of sentences.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use covenant_cli::{admin, attest, audit, connect, console, keys, read, release, root, witness};

/// Covenant's command line for compliance officers, customers, field
/// engineers and auditors.
///
/// Calls to the server use mutual TLS as the identity in --identity (or
/// COVENANT_IDENTITY), a folder holding cert.pem, key.pem, ca.pem, root.json
/// and signing.key, at the address in --server (or COVENANT_SERVER).
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// Print data as JSON, for scripts.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    conn: connect::Connection,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The whole loop on loopback, narrated: a server, a witness and two
    /// agents as separate processes; attestations, a case, a suspension
    /// approved by two officers, a security fix, an expired attestation, an
    /// audit. Needs covenant-server and covenant-agent beside this binary
    /// (`cargo build --release --bins`).
    Demo {
        /// Keep the demo's folder (data directory, devices) afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// Compliance officers: customers, deployments, contracts, releases,
    /// cases, suspensions, waivers and approvals, identities, notes.
    #[command(subcommand)]
    Admin(admin::Admin),
    /// Auditors: verify the ledger, print checkpoints, entries, bodies, proofs.
    Audit {
        /// The trusted root (default: root.json in the identity folder).
        #[arg(long, value_name = "FILE", global = true)]
        root: Option<PathBuf>,
        #[command(subcommand)]
        command: audit::Audit,
    },
    /// Your own keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// The offline root ceremony: write a root, sign it, show it.
    #[command(subcommand)]
    Root(root::Root),
    /// Auditors: run a witness that cosigns consistent checkpoints only.
    #[command(subcommand)]
    Witness(witness::Witness),
    /// Release-key holders: write a release manifest and sign it, offline.
    #[command(subcommand)]
    Release(release::Release),
    /// Customers: write, sign and submit an end-use attestation.
    #[command(subcommand)]
    Attest(attest::Attest),
    /// Field engineers: show an attestation, sign and submit a verification.
    #[command(subcommand)]
    Verify(attest::Verify),
    /// Field engineers: carry an air-gapped device's request to the server
    /// and its bundle back, and return its receipt (docs/offline.md).
    #[command(subcommand)]
    Field(covenant_cli::field::Field),
    /// Engineers and auditors: report a misuse signal (never shown to the customer).
    #[command(subcommand)]
    Signal(SignalCmd),
    /// A deployment's standing verdict and its reasons, and what expires soon.
    ///
    /// After the verdict, what ends within 30 days (attestation,
    /// verification, licence, grant) and what to do about it. Customers see
    /// their own deployments; admins and auditors their scope.
    Status {
        /// The deployment id.
        deployment: String,
    },
    /// A read-only console in the browser, served on this machine: it calls
    /// the server as --identity (the browser never holds a certificate) and
    /// shows the fleet, each deployment, proposals, cases, releases and the
    /// ledger, as that identity may see them.
    Console {
        /// Where to listen. Loopback by default; any other address lets
        /// whoever reaches it read as this identity.
        #[arg(long, default_value = covenant_cli::console::DEFAULT_LISTEN)]
        listen: std::net::SocketAddr,
        /// Allow --listen on an address other than loopback. Whoever reaches
        /// it reads the ledger as this identity, over plain HTTP, with no
        /// login: refused unless you pass this.
        #[arg(long)]
        allow_remote: bool,
    },
    /// The fleet: one line per deployment, flagged dark, expiring or stuck.
    ///
    /// Each line: version, verdict, suspension, last check-in. dark: no
    /// check-in for --dark-after poll intervals; expiring: an attestation,
    /// verification or licence ends within --expiring-days (a grant, renewed
    /// at each check-in, within a day); stuck:
    /// withheld for longer than --stuck-days. Admins and full-scope
    /// auditors see every deployment, a scoped auditor its customers', a
    /// customer its own; engineers are refused (a field engineer reads what
    /// they signed, not the fleet).
    Fleet(read::FleetArgs),
    /// The proposals awaiting approval, each with its approve command.
    ///
    /// Suspensions, waivers, contracts, licences, identities...: what each
    /// changes, who proposed it and why, approvals so far, when it lapses,
    /// and the command that approves it. Admins and full-scope auditors see
    /// all, a scoped auditor those about its customers; others are refused.
    Proposals,
    /// The misuse cases: state, determination, age, last move.
    ///
    /// Admins and full-scope auditors see all, with the reporter; a scoped
    /// auditor its customers' cases, without it; an engineer or an outside
    /// reporter the cases its own signals opened. Customers are refused
    /// (their decision names a contact).
    Cases,
    /// Every release, with the deployments running it.
    ///
    /// Product, version, class, baseline, size, and the deployments running
    /// it among those you may see. Anyone may list.
    Releases,
    /// The ledger entries of one customer, deployment or case, oldest first.
    ///
    /// Each with a one-line summary where you may read its body. Admins and
    /// full-scope auditors: any subject; a scoped auditor its customers' and
    /// their deployments' and cases'; a customer itself and its
    /// deployments; an engineer or reporter the cases its signals opened.
    /// Anything else answers as unknown.
    History {
        /// A customer id, a deployment id or a case id (case-N).
        subject: String,
    },
}

#[derive(Subcommand, Debug)]
enum SignalCmd {
    /// Signs a misuse signal with your key and submits it; it opens a case.
    /// A signal is at most 4 KiB (the summary and the evidence's digests;
    /// the evidence stays with you). The server records at most 24 per
    /// reporter an hour; past that it refuses and says when to retry.
    Submit {
        /// The customer it concerns.
        #[arg(long)]
        customer: String,
        /// One of its deployments, if the signal is that specific.
        #[arg(long)]
        deployment: Option<String>,
        /// ngo_report, court_decision, ncp_determination, sanctions_listing,
        /// field_engineer, auditor or other.
        #[arg(long)]
        source: String,
        /// What was reported.
        #[arg(long)]
        summary: String,
        /// SHA-256 digests of the evidence (repeatable).
        #[arg(long)]
        evidence: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCmd {
    /// Makes a signing key and a TLS key in --out, and a certificate request
    /// carrying the signing key for your compliance officer. No private key
    /// leaves the folder.
    New {
        /// The folder to make them in (your identity folder).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Only a signing key (for root and release keys, which sign offline
        /// and never call the server).
        #[arg(long)]
        signing_only: bool,
    },
}

fn main() {
    let args = Args::parse();
    let result = tokio::runtime::Runtime::new().map_err(anyhow::Error::from).and_then(|rt| {
        rt.block_on(async {
            match args.command {
                Command::Admin(cmd) => admin::run(cmd, &args.conn, args.json).await,
                Command::Audit { root, command } => audit::run(command, &args.conn, root.as_deref(), args.json).await,
                Command::Keys(KeysCmd::New { out, signing_only }) => keys::new(&out, signing_only, args.json),
                Command::Root(cmd) => root::run(cmd, args.json),
                Command::Release(cmd) => release::run(cmd, args.json),
                Command::Attest(cmd) => attest::attest(cmd, &args.conn, args.json).await,
                Command::Verify(cmd) => attest::verify(cmd, &args.conn, args.json).await,
                Command::Field(cmd) => covenant_cli::field::run(cmd, &args.conn, args.json).await,
                Command::Signal(SignalCmd::Submit { customer, deployment, source, summary, evidence }) => {
                    attest::signal(&args.conn, customer, deployment, &source, summary, evidence, args.json).await
                }
                Command::Status { deployment } => attest::status(&args.conn, deployment, args.json).await,
                Command::Console { listen, allow_remote } => console::run(&args.conn, listen, allow_remote).await,
                Command::Fleet(fleet) => read::fleet(&args.conn, &fleet, args.json).await,
                Command::Proposals => read::proposals(&args.conn, args.json).await,
                Command::Cases => read::cases(&args.conn, args.json).await,
                Command::Releases => read::releases(&args.conn, args.json).await,
                Command::History { subject } => read::history(&args.conn, &subject, args.json).await,
                Command::Witness(witness::Witness::Init { name, state }) => {
                    witness::init(&name, &state, args.json).map(|_| ())
                }
                Command::Witness(witness::Witness::Serve { key, log, state, listen }) => {
                    witness::serve(key.as_deref(), &log, &state, listen).await
                }
                Command::Demo { keep } => covenant_cli::demo::demo(keep),
            }
        })
    });
    if let Err(e) = result {
        if args.json {
            println!(
                "{}",
                serde_json::to_string(&covenant_cli::output::Failure { error: format!("{e:#}") }).unwrap_or_default()
            );
        } else {
            eprintln!("covenant: {e:#}");
        }
        std::process::exit(1);
    }
}
