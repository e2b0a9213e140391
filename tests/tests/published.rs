//! What a server publishes for auditors who have only a web server, and the
//! cosignatures it carries: with a witness service running, the published
//! `ledger/public/checkpoint` carries the witness's cosignature (and the
//! tiles beside it reproduce it); a development server with no witness
//! configured cosigns in process with its development witness, so the
//! checkpoint from GetCheckpoint satisfies its root's witness policy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use covenant_cli::admin::Admin;
use covenant_core::note::{self, NoteVerifier};
use covenant_core::tiles;
use covenant_proto::v1 as pb;
use covenant_tests::Running;

/// The size of `note` if it is signed by the ledger of `dir` and cosigned
/// by its development witness.
fn cosigned_by_dev_witness(dir: &Path, note_bytes: &[u8]) -> Option<u64> {
    let log = NoteVerifier::parse(std::fs::read_to_string(dir.join("ledger.vkey")).unwrap().trim()).unwrap();
    let witness = NoteVerifier::parse(std::fs::read_to_string(dir.join("witness-dev.vkey")).unwrap().trim()).unwrap();
    let verified = note::open_checkpoint(note_bytes, &log).ok()?;
    verified.require_cosignatures(&[&witness], 1).ok()?;
    Some(verified.checkpoint().size)
}

/// A folder's files, for the offline verifier.
struct Folder<'a>(&'a Path);

impl tiles::TileFiles for Folder<'_> {
    fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, String> {
        match std::fs::read(self.0.join(path)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_published_checkpoint_carries_the_witness_cosignature() {
    let s = Running::start_witnessed("published-witness").await;
    covenant_tests::admin(&s.admin(1), Admin::Note { text: "published".into(), why: None }).await;
    let size = s.size().await;
    let public = s.dir.join("ledger/public");
    // The ledger writes the newest cosigned checkpoint about once a second.
    let deadline = Instant::now() + Duration::from_secs(20);
    let bytes = loop {
        let bytes = std::fs::read(public.join("checkpoint")).unwrap_or_default();
        if cosigned_by_dev_witness(&s.dir, &bytes).is_some_and(|n| n >= size) {
            break bytes;
        }
        assert!(Instant::now() < deadline, "no cosigned checkpoint of size {size} was published");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // What a web server would serve reproduces it.
    let log = NoteVerifier::parse(std::fs::read_to_string(s.dir.join("ledger.vkey")).unwrap().trim()).unwrap();
    let cp = note::open_checkpoint(&bytes, &log).unwrap();
    tiles::verify_files(&Folder(&public), cp.checkpoint().size, &cp.checkpoint().root_hash).unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_development_server_cosigns_with_its_development_witness() {
    // `init --dev`, no witnesses.toml, then serve.
    let s = Running::start("dev-witness").await;
    covenant_tests::admin(&s.admin(1), Admin::Note { text: "cosigned in process".into(), why: None }).await;
    let size = s.size().await;
    let mut ledger = pb::ledger_service_client::LedgerServiceClient::new(s.admin(1).channel().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let cp = ledger.get_checkpoint(pb::GetCheckpointRequest {}).await.unwrap().into_inner();
        if cosigned_by_dev_witness(&s.dir, &cp.note).is_some_and(|n| n >= size) {
            break;
        }
        assert!(Instant::now() < deadline, "GetCheckpoint never carried a development witness cosignature");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The witness keeps what it cosigned, so it never cosigns a rewritten history.
    assert!(s.dir.join(covenant_server::witnesses::DEV_WITNESS_STATE).exists());
    s.stop().await;
}
