//! Witnesses on loopback: the server pushes each checkpoint to its witnesses
//! and serves the cosignatures it gets; a witness that is down, or answers
//! garbage, is counted as missing and the log goes on; a witness restarted
//! keeps its cosigned size and refuses to go back; and a witness refuses a
//! rewritten history signed with the genuine ledger key.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use covenant_cli::admin::Admin;
use covenant_cli::audit::Audit;
use covenant_cli::connect::Connection;
use covenant_cli::witness::{self, WitnessNode};
use covenant_core::merkle::MemoryTree;
use covenant_core::note::{self, Checkpoint, NoteSigner, NoteVerifier};
use covenant_server::datadir;
use covenant_server::serve::{ServeConfig, install_crypto_provider, run};
use tokio::net::TcpListener;

struct Task {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Task {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

async fn start_witness(dir: &Path, state: &Path, listener: TcpListener) -> Task {
    let key = std::fs::read_to_string(dir.join("keys/witness-dev.key")).unwrap();
    let signer = NoteSigner::parse_private(key.trim()).unwrap();
    let log = NoteVerifier::parse(std::fs::read_to_string(dir.join("ledger.vkey")).unwrap().trim()).unwrap();
    let node = WitnessNode::open(signer, log, state).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(witness::run(node, listener, async {
        let _ = stopped.await;
    }));
    Task { stop, task }
}

async fn start_server(dir: &Path) -> (Task, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(ServeConfig::new(dir), listener, async {
        let _ = stopped.await;
    }));
    (Task { stop, task }, url)
}

fn conn(url: &str, dir: &Path, who: &str) -> Connection {
    Connection { server: Some(url.to_owned()), identity: Some(dir.join("identities").join(who)) }
}

async fn note(url: &str, dir: &Path, text: &str) {
    covenant_cli::admin::run(Admin::Note { text: text.into(), why: None }, &conn(url, dir, "admin1"), true)
        .await
        .unwrap();
}

/// The served checkpoint's size and valid cosignatures by the dev witness.
async fn served(url: &str, dir: &Path) -> (u64, usize) {
    use covenant_proto::v1 as pb;
    let channel = conn(url, dir, "auditor").channel().await.unwrap();
    let cp = covenant_proto::v1::ledger_service_client::LedgerServiceClient::new(channel)
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    let log = NoteVerifier::parse(std::fs::read_to_string(dir.join("ledger.vkey")).unwrap().trim()).unwrap();
    let w = NoteVerifier::parse(std::fs::read_to_string(dir.join("witness-dev.vkey")).unwrap().trim()).unwrap();
    let verified = note::open_checkpoint(&cp.note, &log).unwrap();
    (verified.checkpoint().size, verified.require_cosignatures(&[&w], 0).unwrap().len())
}

/// Waits (bounded: 30 s, far above the 3 s witness timeout a slow witness
/// can add to a round) until the served checkpoint is `size` with `cosigs`
/// cosignatures.
async fn wait_for(url: &str, dir: &Path, size: u64, cosigs: usize) {
    for _ in 0..600 {
        if served(url, dir).await == (size, cosigs) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the served checkpoint never reached size {size} with {cosigs} cosignature(s): {:?}",
        served(url, dir).await
    );
}

fn write_witnesses(dir: &Path, witnesses: &[(&str, String, String, &Path)]) {
    let mut text = String::new();
    for (name, address, vkey, cert) in witnesses {
        text.push_str(&format!(
            "[[witness]]\nname = \"{name}\"\naddress = \"{address}\"\nvkey = \"{vkey}\"\ncert = \"{}\"\n\n",
            cert.display()
        ));
    }
    std::fs::write(dir.join("witnesses.toml"), text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn witnesses_cosign_and_their_faults_never_stop_the_log() {
    install_crypto_provider();
    let dir: PathBuf = std::env::temp_dir().join(format!("covenant-witness-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    tokio::task::block_in_place(|| datadir::init_dev(&dir)).unwrap();
    let state = dir.join("witness-state");
    std::fs::create_dir_all(&state).unwrap();
    witness::tls_identity(&state).unwrap();
    let vkey = std::fs::read_to_string(dir.join("witness-dev.vkey")).unwrap().trim().to_owned();

    // A second "witness" that answers garbage: a plain TLS listener that
    // accepts and closes connections, under another name and key.
    let garbage_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let garbage_addr = garbage_listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = garbage_listener.accept().await {
            use tokio::io::AsyncWriteExt as _;
            let _ = sock.write_all(b"HTTP/1.1 200 OK\r\n\r\nnot a witness").await;
        }
    });
    let other =
        NoteSigner::new("witness.localhost/garbage", covenant_core::keys::SigningKey::from_seed(&[77; 32])).unwrap();
    // A slow "witness": accepts connections and never answers.
    let slow_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow_addr = slow_listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = slow_listener.accept().await {
            held.push(sock);
        }
    });
    let slow =
        NoteSigner::new("witness.localhost/slow", covenant_core::keys::SigningKey::from_seed(&[79; 32])).unwrap();
    // The real witness, configured a second time under a key that is not its own.
    let impostor =
        NoteSigner::new("witness.localhost/dev", covenant_core::keys::SigningKey::from_seed(&[78; 32])).unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let witness_addr = listener.local_addr().unwrap();
    write_witnesses(
        &dir,
        &[
            ("witness.localhost/dev", format!("https://{witness_addr}"), vkey.clone(), &state.join("tls-cert.pem")),
            (
                "witness.localhost/garbage",
                format!("https://{garbage_addr}"),
                witness::verifier_key(&other),
                &state.join("tls-cert.pem"),
            ),
            (
                "witness.localhost/slow",
                format!("https://{slow_addr}"),
                witness::verifier_key(&slow),
                &state.join("tls-cert.pem"),
            ),
            (
                "witness.localhost/dev",
                format!("https://{witness_addr}"),
                witness::verifier_key(&impostor),
                &state.join("tls-cert.pem"),
            ),
        ],
    );
    let w = start_witness(&dir, &state, listener).await;
    let (server, url) = start_server(&dir).await;

    // Cosigned by the real witness; the garbage, slow and wrongly keyed
    // ones are counted missing (the slow one after its timeout).
    // The development ledger holds 5 entries: the root, three identities
    // and admin2's approval of the auditor's.
    note(&url, &dir, "first").await;
    wait_for(&url, &dir, 6, 1).await;
    let report = covenant_cli::audit::run(
        Audit::Verify { bodies: true, ledger: None, state: None },
        &conn(&url, &dir, "auditor"),
        None,
        true,
    )
    .await;
    assert!(report.is_ok(), "{report:?}");

    // The witness goes down: the log goes on, uncosigned.
    w.stop().await;
    note(&url, &dir, "while the witness is down").await;
    wait_for(&url, &dir, 7, 0).await;

    // It comes back on the same address with its state: cosigning resumes.
    let listener = TcpListener::bind(witness_addr).await.unwrap();
    let w = start_witness(&dir, &state, listener).await;
    note(&url, &dir, "after the restart").await;
    wait_for(&url, &dir, 8, 1).await;

    // The restarted witness refuses to go back to a smaller tree, and
    // refuses a rewritten history signed with the genuine ledger key.
    let ledger_key = datadir::read_key(&dir.join("keys/ledger.key")).unwrap();
    let log = NoteSigner::new(&datadir::ledger_name(&dir).unwrap(), ledger_key).unwrap();
    let mut fork = MemoryTree::new();
    for i in 0..9 {
        fork.push_leaf(format!("rewritten {i}").as_bytes());
    }
    let cert = std::fs::read_to_string(state.join("tls-cert.pem")).unwrap();
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(cert))
        .domain_name("localhost");
    let channel = tonic::transport::Channel::from_shared(format!("https://{witness_addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = covenant_proto::v1::witness_service_client::WitnessServiceClient::new(channel);
    for size in [3u64, 9] {
        let cp = Checkpoint { origin: log.name().into(), size, root_hash: fork.clone().root(), extensions: vec![] };
        let cp = if size == 3 {
            let mut small = MemoryTree::new();
            for i in 0..3 {
                small.push_leaf(format!("rewritten {i}").as_bytes());
            }
            Checkpoint { root_hash: small.root(), ..cp }
        } else {
            cp
        };
        let proof = covenant_core::merkle::consistency_proof(&fork, 8.min(size), size).unwrap_or_default();
        let err = client
            .add_checkpoint(covenant_proto::v1::AddCheckpointRequest {
                old_size: 8,
                consistency: proof.iter().map(|h| h.to_vec()).collect(),
                checkpoint: cp.sign(&log).unwrap().to_text().into_bytes(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
        let expected = if size == 3 { "smaller" } else { "not consistent" };
        assert!(err.message().contains(expected), "{}", err.message());
    }

    server.stop().await;
    w.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The records of `log/checkpoints` (`u32` length, note): where each ends,
/// the size its note signs, and the note.
fn checkpoint_records(bytes: &[u8]) -> Vec<(usize, u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 4 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let note = bytes[pos + 4..pos + 4 + len].to_vec();
        let size = String::from_utf8_lossy(&note).lines().nth(1).unwrap().parse().unwrap();
        pos += 4 + len;
        out.push((pos, size, note));
    }
    out
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// Found by the review after the fixes of issue #10: recovery ignored what
/// the witnesses had cosigned. With the last batch cut from the checkpoint
/// log (the watermark and the published checkpoint edited to match), the
/// journal looks exactly as a crash would leave it, and the server would
/// set the batch aside and reuse its indexes; the outside witness, asked at
/// start which size it holds, shows the cut, and opening and the check
/// both refuse, keeping every file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_log_behind_what_an_outside_witness_cosigned_is_refused() {
    install_crypto_provider();
    let dir: PathBuf = std::env::temp_dir().join(format!("covenant-witness-behind-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    tokio::task::block_in_place(|| datadir::init_dev(&dir)).unwrap();
    let state = dir.join("witness-state");
    std::fs::create_dir_all(&state).unwrap();
    witness::tls_identity(&state).unwrap();
    let vkey = std::fs::read_to_string(dir.join("witness-dev.vkey")).unwrap().trim().to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("https://{}", listener.local_addr().unwrap());
    write_witnesses(&dir, &[("witness.localhost/dev", address, vkey, &state.join("tls-cert.pem"))]);
    let w = start_witness(&dir, &state, listener).await;
    let (server, url) = start_server(&dir).await;
    note(&url, &dir, "first").await;
    wait_for(&url, &dir, 6, 1).await;
    note(&url, &dir, "second").await;
    wait_for(&url, &dir, 7, 1).await;
    server.stop().await;

    // The batch of size 7 is cut from the checkpoint log.
    let ledger = dir.join("ledger");
    let path = ledger.join("log/checkpoints");
    let bytes = std::fs::read(&path).unwrap();
    let (end, _, cut_note) = checkpoint_records(&bytes).into_iter().find(|(_, size, _)| *size == 6).unwrap();
    std::fs::write(&path, &bytes[..end]).unwrap();
    std::fs::write(ledger.join("log/derived"), 6u64.to_be_bytes()).unwrap();
    std::fs::write(ledger.join("public/checkpoint"), cut_note).unwrap();
    let before = snapshot(&ledger);

    let expected = "witness witness.localhost/dev";
    let err = tokio::task::block_in_place(|| datadir::open_ledger(&dir)).map(|_| ()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains(expected) && msg.contains("cosigned size 7") && msg.contains("(6)"), "{msg}");
    // `covenant-server check` reads it with the same evidence.
    let checked = tokio::task::block_in_place(|| {
        let storage = covenant_server::ledger::storage::FsStorage::new(&ledger).unwrap();
        let log = NoteVerifier::parse(std::fs::read_to_string(dir.join("ledger.vkey")).unwrap().trim()).unwrap();
        let config = datadir::ledger_config(&dir).unwrap();
        covenant_server::ledger::Ledger::check(&storage, &log, datadir::registry_for(&dir).unwrap(), &config)
    });
    let msg = checked.unwrap_err().to_string();
    assert!(msg.contains(expected) && msg.contains("cosigned size 7"), "{msg}");
    assert_eq!(snapshot(&ledger), before, "every file is kept");
    w.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The demo and operators start a server on the witness's first line, and the
/// server pins the certificate that line names: it must exist, whole, by
/// then (under load it once did not, and the server refused to start).
#[test]
fn a_witness_names_its_certificate_only_once_the_whole_file_exists() {
    let dir = std::env::temp_dir().join(format!("covenant-witness-first-line-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("server");
    datadir::init_dev(&data).unwrap();
    let state = dir.join("witness");
    let vkey = std::fs::read_to_string(data.join("ledger.vkey")).unwrap();
    let mut child = std::process::Command::new(covenant_tests::binary("covenant"))
        .args(["witness", "serve", "--key"])
        .arg(data.join("keys/witness-dev.key"))
        .args(["--log", vkey.trim(), "--state"])
        .arg(&state)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    // Read at once, before anything else can happen.
    let cert = std::fs::read_to_string(state.join("tls-cert.pem"));
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("tls-cert.pem"), "{line}");
    let cert = cert.expect("the certificate the first line names exists");
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----") && cert.trim_end().ends_with("-----END CERTIFICATE-----"));
    std::fs::remove_dir_all(&dir).unwrap();
}
