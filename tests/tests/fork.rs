//! A fork: the vendor rewrites the ledger's history and signs it with the
//! genuine ledger key. An auditor holding a checkpoint of the old history
//! detects it, and `covenant audit verify` fails naming the fork.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use covenant_cli::audit::Audit;
use covenant_cli::connect::Connection;
use covenant_core::ledger::EntryKind;
use covenant_server::datadir;
use covenant_server::ledger::NewEntry;
use covenant_server::serve::{ServeConfig, install_crypto_provider, run};

struct Running {
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn serve(dir: &Path) -> Running {
    install_crypto_provider();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(ServeConfig::new(dir), listener, async {
        let _ = stopped.await;
    }));
    Running { url, stop, task }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

fn append_notes(dir: &Path, texts: &[&str]) {
    use covenant_core::envelope;
    use covenant_core::statements::{ActionKind, ActionTag, AdminAction, SchemaV1};
    let (ledger, _) = datadir::open_ledger(dir).unwrap();
    let key = datadir::read_key(&dir.join("identities/admin1/signing.key")).unwrap();
    for t in texts {
        let action = AdminAction {
            type_tag: ActionTag,
            schema: SchemaV1,
            action: ActionKind::Note { text: (*t).into() },
            why: "test".into(),
            evidence: vec![],
            // Issued when recorded: the ledger refuses an action a day off.
            issued_at: covenant_core::digest::Timestamp::from_unix(
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64,
            ),
        };
        let body = envelope::sign(&action, &[&key]);
        ledger
            .append_blocking(NewEntry { kind: EntryKind::Note, actor: Some(key.key_id()), subjects: vec![], body })
            .unwrap();
    }
    ledger.close();
}

/// Rewrites the ledger: the same genesis bodies (so every identity still
/// works), re-sequenced, then other notes; signed with the genuine key.
fn rewrite_history(dir: &Path, notes: &[&str]) {
    let (ledger, _) = datadir::open_ledger(dir).unwrap();
    let genesis: Vec<_> =
        (0..5).map(|i| (ledger.headers(i, i + 1).unwrap().remove(0), ledger.body(i).unwrap().body)).collect();
    ledger.close();
    std::fs::remove_dir_all(dir.join("ledger")).unwrap();
    // The development witness's record of what it cosigned too, which would
    // otherwise stop the server from opening a ledger behind it: the
    // vendor holds that file as well. (An outside witness's it does not.)
    let _ = std::fs::remove_file(dir.join(covenant_server::witnesses::DEV_WITNESS_STATE));
    let (ledger, _) = datadir::open_ledger(dir).unwrap();
    for (header, body) in genesis {
        // The header's subjects are tags; the body names them.
        let h = covenant_core::ledger::EntryHeader::parse(&header).unwrap();
        let subjects = covenant_core::state::classify(&body).unwrap().subjects;
        ledger.append_blocking(NewEntry { kind: h.kind, actor: h.actor, subjects, body }).unwrap();
    }
    ledger.close();
    append_notes(dir, notes);
}

async fn verify(url: &str, identity: &Path) -> anyhow::Result<()> {
    let conn = Connection { server: Some(url.to_owned()), identity: Some(identity.to_path_buf()) };
    covenant_cli::audit::run(Audit::Verify { bodies: false, ledger: None, state: None }, &conn, None, true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_detects_a_rewritten_history_signed_with_the_genuine_key() {
    let dir: PathBuf = std::env::temp_dir().join(format!("covenant-fork-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    tokio::task::block_in_place(|| {
        datadir::init_dev(&dir).unwrap();
        append_notes(&dir, &["shipment approved", "site visit done", "authority notified"]);
    });
    let auditor = dir.join("identities/auditor");

    let server = serve(&dir).await;
    verify(&server.url, &auditor).await.unwrap();
    // Following the honest ledger keeps verifying.
    server.stop().await;
    tokio::task::block_in_place(|| append_notes(&dir, &["one more"]));
    let server = serve(&dir).await;
    verify(&server.url, &auditor).await.unwrap();
    server.stop().await;

    // The vendor rewrites history (dropping "authority notified") and serves it.
    tokio::task::block_in_place(|| {
        rewrite_history(&dir, &["shipment approved", "site visit done", "nothing to see", "one more", "and more"])
    });
    let server = serve(&dir).await;
    let err = verify(&server.url, &auditor).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("FORK"), "{msg}");
    assert!(msg.contains("not consistent"), "{msg}");
    server.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
