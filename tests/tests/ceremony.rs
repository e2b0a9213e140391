//! The production ceremony end to end: the server makes only its online
//! keys, the root-key holders write and sign the root on their own
//! machines, the server starts its ledger with it, and the first admin
//! enrolls with a self-signed registration; then that admin works over
//! mutual TLS. Each step's refusals are tried too.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use covenant_cli::admin::{Admin, IdentityCmd};
use covenant_cli::connect::Connection;
use covenant_cli::root::Root;
use covenant_core::digest::Timestamp;
use covenant_core::envelope;
use covenant_core::statements::{ActionKind, AdminAction, IdentityRole, Payload as _};
use covenant_server::datadir;
use covenant_server::serve::{ServeConfig, install_crypto_provider, run};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("covenant-ceremony-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn pubhex(dir: &Path) -> String {
    let key = covenant_cli::connect::read_key(&dir.join("signing.key")).unwrap();
    covenant_core::keys::PublicKey::to_hex(&key.public())
}

struct People {
    root: [PathBuf; 3],
    release: [PathBuf; 3],
    witness: PathBuf,
    admin1: PathBuf,
    admin2: PathBuf,
}

/// Everyone makes their own keys on their own machine.
fn people(base: &Path) -> People {
    let signing_only = |name: &str| {
        let d = base.join(name);
        covenant_cli::keys::new(&d, true, true).unwrap();
        d
    };
    let full = |name: &str| {
        let d = base.join(name);
        covenant_cli::keys::new(&d, false, true).unwrap();
        d
    };
    People {
        root: [signing_only("root1"), signing_only("root2"), signing_only("root3")],
        release: [signing_only("rel1"), signing_only("rel2"), signing_only("rel3")],
        witness: signing_only("witness"),
        admin1: full("admin1"),
        admin2: full("admin2"),
    }
}

/// `covenant root new` with the server's public halves, then `root sign` by
/// `signers` of the root-key holders.
fn write_root(base: &Path, p: &People, decision: &str, ledger: &str, signers: usize) -> PathBuf {
    let out = base.join(format!("root-{signers}-{}.json", &decision[..8]));
    let witness = format!("witness.example/w1={}", pubhex(&p.witness));
    root_new(&out, p, decision, ledger, &witness).unwrap();
    for holder in p.root.iter().take(signers) {
        covenant_cli::root::run(
            Root::Sign { file: out.clone(), key: holder.join("signing.key").display().to_string() },
            true,
        )
        .unwrap();
    }
    out
}

/// `covenant root new`, unsigned, listing `p`'s keys.
fn root_new(out: &Path, p: &People, decision: &str, ledger: &str, witness: &str) -> anyhow::Result<()> {
    let key = |d: &PathBuf| d.join("signing.key").display().to_string();
    covenant_cli::root::run(
        Root::New {
            out: out.to_path_buf(),
            version: 1,
            expires: Timestamp::from_unix(4_000_000_000).to_string(),
            root_keys: p.root.iter().map(key).collect(),
            root_threshold: 2,
            release_keys: p.release.iter().map(key).collect(),
            release_threshold: 2,
            decision: decision.to_owned(),
            ledger: ledger.to_owned(),
            witnesses: vec![witness.to_owned()],
            witness_threshold: 1,
            admin_keys: vec![pubhex(&p.admin1), pubhex(&p.admin2)],
            admin_threshold: 2,
            development: false,
        },
        true,
    )
}

fn online_args(data: &Path) -> (String, String) {
    let decision = datadir::read_key(&data.join("keys/decision.key")).unwrap().public().to_hex();
    let vkey = std::fs::read_to_string(data.join("ledger.vkey")).unwrap();
    let v = covenant_core::note::NoteVerifier::parse(vkey.trim()).unwrap();
    (decision, format!("{}={}", v.name(), v.public_key().to_hex()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_production_ceremony_starts_a_ledger_no_root_key_ever_touched() {
    let base = scratch("ok");
    let data = base.join("server");
    let p = tokio::task::block_in_place(|| ceremony(&base, &data));
    over_the_wire(base, data, p).await;
}

/// Steps 1 to 4, offline.
fn ceremony(base: &Path, data: &Path) -> People {
    let p = people(&base.join("people"));
    // 1. The server's online keys, and nothing else.
    let online = datadir::init_online_keys(
        data,
        "ledger.example.com/covenant",
        &["127.0.0.1", "localhost"],
        &datadir::HeldKeys::default(),
    )
    .unwrap();
    let mut keys: Vec<_> =
        std::fs::read_dir(data.join("keys")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    keys.sort();
    // The subject secret is online too: the subject tags of every header are
    // made with it (tests/tests/visibility.rs).
    assert_eq!(keys, ["decision.key", "ledger.key", "subjects.key"], "the server holds only its online keys");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(data.join("keys/subjects.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the subject secret is readable by the server only");
    }
    assert_eq!(online.ledger.name(), "ledger.example.com/covenant");
    assert!(
        datadir::init_online_keys(data, "x.example/l", &["localhost"], &datadir::HeldKeys::default()).is_err(),
        "never overwrites"
    );

    // 2. The root, written and signed offline by two of three holders.
    let (decision, ledger) = online_args(data);
    let root = write_root(base, &p, &decision, &ledger, 2);

    // 3. The ledger starts with it.
    assert_eq!(datadir::init_root(data, &root).unwrap(), 1);
    assert!(datadir::init_root(data, &root).is_err(), "a ledger starts once");

    // 4. The first admin: certify, enroll (self-signed), admit.
    let csr = std::fs::read_to_string(p.admin1.join("request.csr")).unwrap();
    let (fingerprint, signing) = datadir::certify(data, IdentityRole::Admin, "alice", &csr, &p.admin1).unwrap();
    assert_eq!(signing.to_hex(), pubhex(&p.admin1));
    let enrolled = covenant_cli::admin::enroll(&p.admin1, &p.admin1.join("enroll.json")).unwrap();
    assert_eq!(enrolled, fingerprint);
    let index = datadir::admit(data, std::fs::read(p.admin1.join("enroll.json")).unwrap()).unwrap();
    assert_eq!(index, 1);
    p
}

async fn over_the_wire(base: PathBuf, data: PathBuf, p: People) {
    // The admin now works over mutual TLS: a note, then a second admin's
    // identity over the wire.
    install_crypto_provider();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(ServeConfig::new(data.clone()), listener, async {
        let _ = stopped.await;
    }));
    let alice = Connection { server: Some(url.clone()), identity: Some(p.admin1.clone()) };
    covenant_cli::admin::run(Admin::Note { text: "ceremony complete".into(), why: None }, &alice, true).await.unwrap();
    let bob_issue = IdentityCmd::Issue {
        role: covenant_core::statements::IdentityRole::Admin,
        id: "bob".into(),
        csr: p.admin2.join("request.csr"),
        out: p.admin2.clone(),
        scope: None,
    };
    covenant_cli::admin::run(Admin::Identity(bob_issue), &alice, true).await.unwrap();
    std::fs::copy(p.admin1.join("root.json"), p.admin2.join("root.json")).unwrap();
    let bob = Connection { server: Some(url), identity: Some(p.admin2.clone()) };
    covenant_cli::admin::run(Admin::Note { text: "bob here".into(), why: None }, &bob, true).await.unwrap();
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn a_root_that_does_not_list_the_servers_keys_or_lacks_signatures_is_refused() {
    let base = scratch("badroot");
    let data = base.join("server");
    let p = people(&base.join("people"));
    datadir::init_online_keys(&data, "ledger.example.com/covenant", &["localhost"], &datadir::HeldKeys::default())
        .unwrap();
    let (decision, ledger) = online_args(&data);

    let one_signature = write_root(&base, &p, &decision, &ledger, 1);
    let e = datadir::init_root(&data, &one_signature).unwrap_err();
    assert!(format!("{e:#}").contains("signed"), "{e:#}");

    let other = covenant_core::keys::SigningKey::from_seed(&[7; 32]).public().to_hex();
    let foreign_decision = write_root(&base, &p, &other, &ledger, 2);
    let e = datadir::init_root(&data, &foreign_decision).unwrap_err();
    assert!(format!("{e:#}").contains("decision key"), "{e:#}");

    let foreign_ledger = write_root(&base, &p, &decision, &format!("ledger.example.com/covenant={other}"), 2);
    let e = datadir::init_root(&data, &foreign_ledger).unwrap_err();
    assert!(format!("{e:#}").contains("ledger key"), "{e:#}");
    assert!(!data.join("ledger").exists() || !data.join("root.json").exists(), "nothing was started");
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn an_enrollment_not_signed_by_a_root_admin_key_is_refused() {
    let base = scratch("badenroll");
    let data = base.join("server");
    let p = people(&base.join("people"));
    datadir::init_online_keys(&data, "ledger.example.com/covenant", &["localhost"], &datadir::HeldKeys::default())
        .unwrap();
    let (decision, ledger) = online_args(&data);
    datadir::init_root(&data, &write_root(&base, &p, &decision, &ledger, 2)).unwrap();

    // An outsider whose key the root does not list: the CA issues the
    // certificate, but enroll refuses to sign and admit refuses the entry.
    let mallory = base.join("people/mallory");
    covenant_cli::keys::new(&mallory, false, true).unwrap();
    let csr = std::fs::read_to_string(mallory.join("request.csr")).unwrap();
    datadir::certify(&data, IdentityRole::Admin, "mallory", &csr, &mallory).unwrap();
    let e = covenant_cli::admin::enroll(&mallory, &mallory.join("enroll.json")).unwrap_err();
    assert!(format!("{e:#}").contains("does not list your signing key"), "{e:#}");
    let registration = AdminAction::parse(&std::fs::read(mallory.join("registration.json")).unwrap()).unwrap();
    let key = covenant_cli::connect::read_key(&mallory.join("signing.key")).unwrap();
    let e = datadir::admit(&data, envelope::sign(&registration, &[&key])).unwrap_err();
    assert!(format!("{e:#}").contains("refused"), "{e:#}");

    // A registration doctored to name someone else's key is refused by
    // the admin's own tool before it is signed.
    let csr = std::fs::read_to_string(p.admin1.join("request.csr")).unwrap();
    datadir::certify(&data, IdentityRole::Admin, "alice", &csr, &p.admin1).unwrap();
    let mut doctored = AdminAction::parse(&std::fs::read(p.admin1.join("registration.json")).unwrap()).unwrap();
    if let ActionKind::IssueIdentity { signing_key, .. } = &mut doctored.action {
        *signing_key = key.public();
    }
    std::fs::write(p.admin1.join("registration.json"), doctored.to_payload_bytes()).unwrap();
    let e = covenant_cli::admin::enroll(&p.admin1, &p.admin1.join("enroll.json")).unwrap_err();
    assert!(format!("{e:#}").contains("not yours"), "{e:#}");
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn a_root_takes_the_servers_and_witnesss_verifier_keys_and_refuses_them_swapped() {
    let base = scratch("vkeys");
    let data = base.join("server");
    let p = people(&base.join("people"));
    datadir::init_online_keys(&data, "ledger.example.com/covenant", &["localhost"], &datadir::HeldKeys::default())
        .unwrap();
    let witness = base.join("witness");
    let witness_vkey = covenant_cli::witness::init("witness.example/w1", &witness, true).unwrap();
    let e = covenant_cli::witness::init("witness.example/w1", &witness, true).unwrap_err();
    assert!(format!("{e:#}").contains("already holds a witness key"), "{e:#}");
    let ledger_vkey = std::fs::read_to_string(data.join("ledger.vkey")).unwrap().trim().to_owned();
    let decision = std::fs::read_to_string(data.join("decision.pub")).unwrap().trim().to_owned();
    let new = |out: &str, ledger: &str, witness: &str| root_new(&base.join(out), &p, &decision, ledger, witness);
    // A log's key where a witness's belongs, and back: refused.
    let e = new("swapped.json", &witness_vkey, &ledger_vkey).unwrap_err();
    assert!(format!("{e:#}").contains("another kind"), "{e:#}");
    let e = new("swapped2.json", &ledger_vkey, &ledger_vkey).unwrap_err();
    assert!(format!("{e:#}").contains("another kind"), "{e:#}");
    // As written: the ledger then starts with it.
    new("root.json", &ledger_vkey, &witness_vkey).unwrap();
    for holder in p.root.iter().take(2) {
        covenant_cli::root::run(
            Root::Sign { file: base.join("root.json"), key: holder.join("signing.key").display().to_string() },
            true,
        )
        .unwrap();
    }
    assert_eq!(datadir::init_root(&data, &base.join("root.json")).unwrap(), 1);
    let root = covenant_core::state::peek_root(&std::fs::read(base.join("root.json")).unwrap()).unwrap();
    assert_eq!(root.roles.witness.keys[0].note_name.as_deref(), Some("witness.example/w1"));
    let _ = std::fs::remove_dir_all(&base);
}

/// A command started just before its server waits for it (only a refused
/// connection is retried, for up to `CONNECT_WAIT`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_waits_for_a_server_that_is_still_starting() {
    install_crypto_provider();
    let base = scratch("wait");
    let data = base.join("server");
    tokio::task::block_in_place(|| datadir::init_dev(&data)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let alice = Connection {
        server: Some(format!("https://127.0.0.1:{port}")),
        identity: Some(data.join("identities/admin1")),
    };
    let note = tokio::spawn(async move {
        covenant_cli::admin::run(Admin::Note { text: "early".into(), why: None }, &alice, true).await
    });
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert!(!note.is_finished(), "the command gave up on a server that was not there yet");
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(ServeConfig::new(data.clone()), listener, async {
        let _ = stopped.await;
    }));
    note.await.unwrap().unwrap();
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&base);
}
