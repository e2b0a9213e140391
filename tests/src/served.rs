//! A development server served on loopback, and what the end-to-end tests
//! put on it: people with their own keys and registered identities, a
//! customer with a deployment and a contract, releases published through the
//! CLI, enrolled agents, the workspace's binaries, and the auditor's check
//! of a stopped server's ledger.

use std::path::{Path, PathBuf};

use covenant_cli::admin::{Admin, IdentityCmd};
use covenant_cli::connect::Connection;
use covenant_cli::release::Release;
use covenant_core::digest::Sha256Digest;
use covenant_core::envelope::Envelope;
use covenant_core::statements::*;
use covenant_proto::v1 as pb;
use covenant_proto::v1::ledger_service_client::LedgerServiceClient;
use covenant_server::datadir;
use covenant_server::serve::{ServeConfig, install_crypto_provider, run};

/// A development server served in this test's runtime, from a fresh data
/// directory under the system's temporary folder.
pub struct Running {
    /// `https://127.0.0.1:PORT`, the port chosen by the OS.
    pub url: String,
    /// The data directory (`init --dev`: keys, identities, ledger).
    pub dir: PathBuf,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Initialises a development data directory named after `name` and
    /// serves it on loopback.
    pub async fn start(name: &str) -> Running {
        Self::start_with(name, false).await
    }

    /// As [`Running::start`], with the development witness running and
    /// configured, so checkpoints carry the cosignature an agent requires.
    pub async fn start_witnessed(name: &str) -> Running {
        Self::start_with(name, true).await
    }

    async fn start_with(name: &str, witnessed: bool) -> Running {
        Self::start_configured(name, witnessed, |_| ()).await
    }

    /// As [`Running::start`], with the server's limits changed by `configure`.
    pub async fn start_configured(name: &str, witnessed: bool, configure: impl FnOnce(&mut ServeConfig)) -> Running {
        Self::start_held(name, witnessed, &datadir::HeldKeys::default(), configure).await
    }

    /// As [`Running::start_configured`], with the decision and ledger keys
    /// `held` in a PKCS#11 token.
    pub async fn start_held(
        name: &str,
        witnessed: bool,
        held: &datadir::HeldKeys,
        configure: impl FnOnce(&mut ServeConfig),
    ) -> Running {
        install_crypto_provider();
        let dir = std::env::temp_dir().join(format!("covenant-story-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        tokio::task::block_in_place(|| datadir::init_dev_held(&dir, held)).unwrap();
        if witnessed {
            start_dev_witness(&dir).await;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut config = ServeConfig::new(dir.clone());
        configure(&mut config);
        let task = tokio::spawn(async move {
            let served = run(config, listener, async {
                let _ = stopped.await;
            })
            .await;
            // Said at once, so that a test whose calls are refused shows why
            // the server stopped (the result itself is read only at stop).
            if let Err(e) = &served {
                eprintln!("the server stopped early: {e:#}");
            }
            served
        });
        Running { url, dir, stop, task }
    }

    /// A connection to this server as the identity folder `identity`.
    pub fn conn(&self, identity: &Path) -> Connection {
        Connection { server: Some(self.url.clone()), identity: Some(identity.to_path_buf()) }
    }

    /// A connection as the development admin `n` (1 or 2).
    pub fn admin(&self, n: u8) -> Connection {
        self.conn(&self.dir.join(format!("identities/admin{n}")))
    }

    /// The ledger's size: every entry acknowledged so far. It is the first
    /// checkpoint a watch sends (signed by the ledger key as it stands), not
    /// `GetCheckpoint`, whose answer is the newest *cosigned* checkpoint and
    /// may lag behind the last acknowledged entry while a witness cosigns.
    pub async fn size(&self) -> u64 {
        let mut c = LedgerServiceClient::new(self.admin(1).channel().await.unwrap());
        let mut watch = c.watch_checkpoints(pb::GetCheckpointRequest {}).await.unwrap().into_inner();
        let cp = watch.message().await.unwrap().expect("a watch starts with the current checkpoint");
        // The note's second line is the tree size.
        std::str::from_utf8(&cp.note).unwrap().lines().nth(1).unwrap().parse().unwrap()
    }

    /// Stops the server, fails the test if it stopped with an error, and
    /// removes its data directory.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts the development witness of `dir` on loopback (it runs until the
/// test's runtime ends) and lists it in `dir/witnesses.toml`.
async fn start_dev_witness(dir: &Path) {
    use covenant_cli::witness::{self, WitnessNode};
    use covenant_core::note::{NoteSigner, NoteVerifier};
    let state = dir.join("witness-state");
    std::fs::create_dir_all(&state).unwrap();
    witness::tls_identity(&state).unwrap();
    let key = std::fs::read_to_string(dir.join("keys/witness-dev.key")).unwrap();
    let signer = NoteSigner::parse_private(key.trim()).unwrap();
    let log = NoteVerifier::parse(std::fs::read_to_string(dir.join("ledger.vkey")).unwrap().trim()).unwrap();
    let node = WitnessNode::open(signer, log, &state).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(witness::run(node, listener, std::future::pending()));
    let vkey = std::fs::read_to_string(dir.join("witness-dev.vkey")).unwrap().trim().to_owned();
    std::fs::write(
        dir.join("witnesses.toml"),
        format!(
            "[[witness]]\nname = \"{}\"\naddress = \"{address}\"\nvkey = \"{vkey}\"\ncert = \"{}\"\n",
            datadir::DEV_WITNESS_NAME,
            state.join("tls-cert.pem").display()
        ),
    )
    .unwrap();
}

/// Runs the CLI's `covenant admin` command `cmd` as `conn`.
pub async fn admin(conn: &Connection, cmd: Admin) {
    covenant_cli::admin::run(cmd, conn, true).await.unwrap();
}

/// A person or device makes its keys; admin1 issues and registers them
/// (and admin2 approves a person's, see [`issue_identity`]).
pub async fn person(s: &Running, role: &str, id: &str) -> PathBuf {
    issued(s, role.parse().unwrap(), id, None).await
}

/// An auditor `id` whose scope is the customers `scope`: keys, identity
/// issued and approved. Its identity folder.
pub async fn scoped_auditor(s: &Running, id: &str, scope: &[&str]) -> PathBuf {
    issued(s, IdentityRole::Auditor, id, Some(scope)).await
}

/// An engineer `id` whose scope is the customers `scope` (the deployments
/// it verifies and carries air-gapped files for). Its identity folder.
pub async fn scoped_engineer(s: &Running, id: &str, scope: &[&str]) -> PathBuf {
    issued(s, IdentityRole::Engineer, id, Some(scope)).await
}

/// Keys made in `people/{id}`, the identity issued (and approved).
async fn issued(s: &Running, role: IdentityRole, id: &str, scope: Option<&[&str]>) -> PathBuf {
    let dir = s.dir.join(format!("people/{id}"));
    tokio::task::block_in_place(|| covenant_cli::keys::new(&dir, false, true)).unwrap();
    std::fs::copy(s.dir.join("root.json"), dir.join("root.json")).unwrap();
    let issue = IdentityCmd::Issue {
        role,
        id: id.into(),
        csr: dir.join("request.csr"),
        out: dir.clone(),
        scope: scope.map(|scope| scope.iter().map(|c| (*c).to_owned()).collect()),
    };
    issue_identity(s, issue).await;
    dir
}

/// admin1 issues an identity; a customer's, engineer's or auditor's key
/// signs what the conditions read, so admin2 approves it.
pub async fn issue_identity(s: &Running, issue: IdentityCmd) {
    let person = matches!(&issue, IdentityCmd::Issue { role, .. } if matches!(role, IdentityRole::Customer | IdentityRole::Engineer | IdentityRole::Auditor | IdentityRole::Reporter));
    let size = s.size().await;
    admin(&s.admin(1), Admin::Identity(issue)).await;
    if person {
        approve_entry(s, size).await;
    }
}

/// admin2 approves the proposal recorded as entry `index`.
pub async fn approve_entry(s: &Running, index: u64) {
    let proposal = proposal_digest(s, index).await;
    admin(&s.admin(2), Admin::Approve { proposal: proposal.to_string(), yes: true }).await;
}

/// The identity folders of the story's people and device.
pub struct Cast {
    /// Customer min-x.
    pub customer: PathBuf,
    /// The field engineer.
    pub engineer: PathBuf,
    /// Deployment lim-07.
    pub device: PathBuf,
}

/// Customer min-x with deployment lim-07 (product lim, installed 1.0.0),
/// their keys, a contract with three conditions, and release 1.1.0.
pub async fn cast(s: &Running) -> Cast {
    cast_with(s, STORY_CONDITIONS).await
}

/// The story's contract conditions: an attestation, a field verification,
/// no case from triaged on.
pub const STORY_CONDITIONS: &str = r#"
[[conditions]]
condition = "end_use_attested"
max_age_days = 365

[[conditions]]
condition = "field_verified"
max_age_days = 90

[[conditions]]
condition = "no_open_case"
from_state = "triaged"
"#;

/// The registration of deployment `id` of customer min-x: product lim at
/// site XA/s1, provisioned with 1.0.0.
pub fn min_x_deployment(id: &str) -> Admin {
    Admin::Deployment {
        id: id.into(),
        customer: "min-x".into(),
        product: "lim".into(),
        country: "XA".into(),
        site: "s1".into(),
        provisioned_version: "1.0.0".into(),
    }
}

/// The registration of deployment lim-08 of customer min-y: product lim at
/// site XB/s2, provisioned with 1.0.0.
pub fn min_y_deployment() -> Admin {
    Admin::Deployment {
        id: "lim-08".into(),
        customer: "min-y".into(),
        product: "lim".into(),
        country: "XB".into(),
        site: "s2".into(),
        provisioned_version: "1.0.0".into(),
    }
}

/// The other customer of the scoping tests: min-y (Ministry Y, XB) with
/// deployment lim-08 ([`min_y_deployment`]), no contract, no keys.
pub async fn min_y(s: &Running) {
    admin(&s.admin(1), Admin::Customer { id: "min-y".into(), name: "Ministry Y".into(), country: "XB".into() }).await;
    register_deployment(s, min_y_deployment()).await;
}

/// As [`cast`], with a contract of `conditions` (TOML `[[conditions]]`).
pub async fn cast_with(s: &Running, conditions: &str) -> Cast {
    let a1 = s.admin(1);
    admin(&a1, Admin::Customer { id: "min-x".into(), name: "Ministry X".into(), country: "XA".into() }).await;
    admin(&a1, min_x_deployment("lim-07")).await;
    let customer = person(s, "customer", "min-x").await;
    let engineer = person(s, "engineer", "eng-1").await;
    let device = person(s, "deployment", "lim-07").await;
    let contract = s.dir.join("contract.toml");
    std::fs::write(
        &contract,
        r#"
id = "contract-min-x"
version = 1
customer = "min-x"
grant_validity_seconds = 604800
compliance_contact = "compliance@vendor.example"
conditions = []
"#
        .replace("conditions = []\n", if conditions.trim().is_empty() { "conditions = []\n" } else { "" })
            + conditions,
    )
    .unwrap();
    first_contract(s, contract).await;
    publish(s, "1.0.0", "capability", "1.0.0").await;
    publish(s, "1.1.0", "capability", "1.1.0").await;
    Cast { customer, engineer, device }
}

/// admin1 registers a deployment (`Admin::Deployment`); where it waits for
/// a second admin (its customer is held, or its customer's contract would
/// cover it at once), admin2 approves it.
pub async fn register_deployment(s: &Running, registration: Admin) {
    let size = s.size().await;
    admin(&s.admin(1), registration).await;
    let proposal = proposal_digest(s, size).await;
    match covenant_cli::admin::run(Admin::Approve { proposal: proposal.to_string(), yes: true }, &s.admin(2), true)
        .await
    {
        Ok(()) => {}
        // Registered at once: nothing to approve.
        Err(e) if e.to_string().contains("no proposal has this digest") => {}
        Err(e) => panic!("approving the registration: {e}"),
    }
}

/// Sets a customer's first contract from `file`: admin1 proposes it and
/// admin2 approves, as a first contract needs the admin threshold.
pub async fn first_contract(s: &Running, file: PathBuf) {
    let size = s.size().await;
    admin(&s.admin(1), Admin::Contract { file }).await;
    approve_entry(s, size).await;
}

/// The payload digest of the admin action at ledger index `index` (how an
/// approval names a proposal).
pub async fn proposal_digest(s: &Running, index: u64) -> Sha256Digest {
    let mut c = LedgerServiceClient::new(s.admin(1).channel().await.unwrap());
    let e = c
        .get_entries(pb::GetEntriesRequest { start: index, end: index + 1, with_bodies: true })
        .await
        .unwrap()
        .into_inner()
        .entries
        .remove(0);
    Sha256Digest::of(Envelope::parse(&e.body).unwrap().payload())
}

/// `covenant release new`, two offline signatures, `covenant admin publish`.
pub async fn publish(s: &Running, version: &str, class: &str, baseline: &str) -> Sha256Digest {
    let bytes = format!("the image of lim {version}").repeat(1000).into_bytes();
    publish_release(s, version, class, baseline, &bytes).await
}

/// Publishes a capability release whose artifact is `bytes`.
pub async fn publish_bytes(s: &Running, version: &str, bytes: &[u8]) -> Sha256Digest {
    publish_release(s, version, "capability", version, bytes).await
}

/// `covenant release new`, two offline signatures, `covenant admin publish`.
pub async fn publish_release(s: &Running, version: &str, class: &str, baseline: &str, bytes: &[u8]) -> Sha256Digest {
    let artifact = s.dir.join(format!("lim-{version}.img"));
    std::fs::write(&artifact, bytes).unwrap();
    let manifest = s.dir.join(format!("lim-{version}.manifest"));
    let new = Release::New {
        artifact: artifact.clone(),
        product: "lim".into(),
        version: version.into(),
        class: class.into(),
        baseline: baseline.into(),
        out: manifest.clone(),
    };
    covenant_cli::release::run(new, true).unwrap();
    for k in ["release-1", "release-2"] {
        let sign = Release::Sign {
            manifest: manifest.clone(),
            key: s.dir.join(format!("keys/{k}.key")).display().to_string(),
        };
        covenant_cli::release::run(sign, true).unwrap();
    }
    admin(&s.admin(1), Admin::Publish { manifest: manifest.clone(), artifact }).await;
    Sha256Digest::of(Envelope::parse(&std::fs::read(&manifest).unwrap()).unwrap().payload())
}

/// Writes the CLI's standard attestation file for min-x and lim-07 into
/// `dir`; returns its path.
pub fn write_attestation(dir: &Path) -> PathBuf {
    let file = dir.join("attestation.toml");
    std::fs::write(&file, covenant_cli::demo::attestation("min-x", "lim-07", "2099-01-01T00:00:00Z")).unwrap();
    file
}

/// A channel as `identity` whose HTTP/2 receive windows are `window` bytes
/// (what a device's agent sets: how much may be in flight to it).
pub async fn channel_with_window(s: &Running, identity: &Path, window: u32) -> tonic::transport::Channel {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let read = |name: &str| std::fs::read(identity.join(name)).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem")))
        .identity(Identity::from_pem(read("cert.pem"), read("key.pem")))
        .domain_name("localhost");
    tonic::transport::Channel::from_shared(s.url.clone())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .initial_stream_window_size(window)
        .initial_connection_window_size(window)
        .connect()
        .await
        .unwrap()
}

/// A customer attests through the CLI: `attest new` from the standard
/// attestation file, `attest sign`, `attest submit`.
pub async fn attest_via_cli(s: &Running, customer_dir: &Path) -> PathBuf {
    use covenant_cli::attest::Attest;
    let att = customer_dir.join("attestation.dsse");
    let customer = s.conn(customer_dir);
    let new = Attest::New { from: write_attestation(customer_dir), out: att.clone() };
    covenant_cli::attest::attest(new, &customer, true).await.unwrap();
    covenant_cli::attest::attest(Attest::Sign { file: att.clone() }, &customer, true).await.unwrap();
    covenant_cli::attest::attest(Attest::Submit { file: att.clone() }, &customer, true).await.unwrap();
    att
}

/// A binary of this workspace, built with this test run's profile: cargo
/// is quick when it is up to date, and the test never runs a stale one.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> <profile>
    let dir = exe.parent().and_then(Path::parent).unwrap();
    binary_in(name, &dir.file_name().unwrap().to_string_lossy())
}

/// A binary of this workspace built with cargo profile `profile` (the
/// folder name under target/: `debug` is the dev profile).
pub fn binary_in(name: &str, profile: &str) -> PathBuf {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().and_then(Path::parent).and_then(Path::parent).unwrap();
    let mut cmd = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "--quiet", "--workspace"]);
    match profile {
        // Exactly the units `cargo test --workspace` (the README's command)
        // builds, with the same features: after it, a no-op, so nothing is
        // built twice. (`--bin NAME` alone would resolve features without
        // the dev-dependencies and build a second copy of some crates.)
        "debug" => {
            cmd.args(["--bins", "--tests", "--profile", "test"]);
        }
        "release" => {
            cmd.args(["--release", "--bin", name]);
        }
        other => {
            cmd.args(["--profile", other, "--bin", name]);
        }
    }
    assert!(cmd.status().unwrap().success(), "building {name}");
    target.join(profile).join(name)
}

/// Registers deployment `id` of min-x, enrolls it the way a device does
/// (`enroll-request`, `covenant admin enroll`), and provisions the agent's
/// state directory from the bundle with 1.0.0 installed.
pub async fn enrolled_agent(s: &Running, id: &str) -> PathBuf {
    let deployment = min_x_deployment(id);
    register_deployment(s, deployment).await;
    let state = s.dir.join(format!("agent-{id}"));
    let made = covenant_agent::enroll_request(&state).unwrap();
    let bundle = s.dir.join(format!("bundle-{id}"));
    admin(&s.admin(1), Admin::Enroll { deployment: id.into(), csr: made.csr, out: bundle.clone() }).await;
    let v: semver::Version = "1.0.0".parse().unwrap();
    covenant_agent::provision(&bundle, &state, "lim", &v, &v, true).unwrap();
    state
}

/// Runs `covenant-agent ARGS`; returns (success, stdout, stderr).
pub fn agent_cli(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(binary("covenant-agent")).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What [`check_ledger`] found.
#[derive(Debug)]
pub struct LedgerCheck {
    /// The ledger's size.
    pub size: u64,
    /// Grant entries.
    pub grants: usize,
    /// Withhold entries.
    pub withholds: usize,
    /// Releases the devices installed, each under a grant found in the ledger.
    pub installed_grants: usize,
}

/// Reads the ledger of a stopped server's data directory and checks it the
/// way an auditor does: the release in each slot of each device (state
/// directory, deployment) that was installed under a grant (the two most
/// recent installs) came with a grant that is in the ledger, for that
/// deployment and that release; the whole ledger replays with no mismatch
/// and every grant and withhold is re-evaluated.
pub fn check_ledger(server: &Path, devices: &[(&Path, &str)]) -> LedgerCheck {
    use covenant_core::ledger::{EntryHeader, EntryKind};
    let (ledger, _) = datadir::open_ledger(server).unwrap();
    let mut entries = vec![];
    let size = ledger
        .for_each_entry(|index, header, stored| {
            entries.push((index, EntryHeader::parse(header).unwrap(), stored.body.clone()));
        })
        .unwrap();
    ledger.close();
    let mut installed_grants = 0;
    for (device, deployment) in devices {
        for slot in ["a", "b"] {
            let Ok(bytes) = std::fs::read(device.join("slots").join(slot).join("meta.json")) else { continue };
            let meta: covenant_agent::store::SlotMeta = serde_json::from_slice(&bytes).unwrap();
            let Some((release, index)) = meta.grant else { continue };
            let release = release.to_string();
            let (_, header, body) = entries
                .iter()
                .find(|(i, ..)| *i == index)
                .unwrap_or_else(|| panic!("grant {index} is not in the ledger"));
            assert_eq!(header.kind, EntryKind::Grant, "entry {index}");
            let decision = Decision::parse(Envelope::parse(body).unwrap().payload()).unwrap();
            assert_eq!(decision.deployment, *deployment, "entry {index}");
            assert_eq!(decision.release.map(|d| d.to_string()).as_deref(), Some(release.as_str()), "entry {index}");
            installed_grants += 1;
        }
    }
    let grants = entries.iter().filter(|(_, h, _)| h.kind == EntryKind::Grant).count();
    let withholds = entries.iter().filter(|(_, h, _)| h.kind == EntryKind::Withhold).count();
    let keyring = covenant_core::ledger::Keyring::Secret(datadir::read_subject_secret(server).unwrap());
    let replayed = covenant_core::replay::replay(keyring, entries.iter().map(|(i, h, b)| (*i, h, b.as_slice())));
    assert!(replayed.mismatches.is_empty(), "{:?}", replayed.mismatches);
    assert_eq!(replayed.decisions as usize, grants + withholds);
    LedgerCheck { size, grants, withholds, installed_grants }
}

/// The workspace's folder.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The Python interpreter of the test environment (`target/pyenv`, which
/// `.ci/test` makes, or `$COVENANT_PYTHON`); a missing one fails the test and
/// says how to make it (never a silent skip).
pub fn python() -> PathBuf {
    let python = match std::env::var_os("COVENANT_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => workspace().join("target/pyenv/bin/python"),
    };
    assert!(
        python.exists(),
        "no Python environment at {}: run `.ci/test` (the README's test command), which makes it \
         from tests/python/requirements.txt, or set COVENANT_PYTHON to a Python with those packages",
        python.display()
    );
    python
}
