//! Backups (issue #21, `server/src/backup.rs`): a backup taken while eight
//! writers append restores into a server that opens, verifies, and holds
//! every entry acknowledged before the backup began; a backup older than
//! what a witness holds is refused with the entries it would lose; a
//! tampered backup is refused before anything is made.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use covenant_cli::admin::Admin;
use covenant_cli::audit::Audit;
use covenant_core::statements::Payload as _;
use covenant_proto::v1 as pb;
use covenant_proto::v1::ledger_service_client::LedgerServiceClient;
use covenant_server::backup;
use covenant_tests::*;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("covenant-backup-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every header of the ledger served at `conn`, from 0 to `size`.
async fn headers(conn: &covenant_cli::connect::Connection, size: u64) -> Vec<Vec<u8>> {
    let mut c = LedgerServiceClient::new(conn.channel().await.unwrap());
    let mut out = Vec::new();
    let mut at = 0;
    while at < size {
        let end = (at + 1000).min(size);
        let page = c.get_entries(pb::GetEntriesRequest { start: at, end, with_bodies: false }).await.unwrap();
        out.extend(page.into_inner().entries.into_iter().map(|e| e.header));
        at = end;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_while_eight_writers_append_restores_every_acknowledged_entry() {
    let s = Running::start("backup-live").await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (conn, stop) = (s.admin(1), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) && n < 200 {
                covenant_cli::admin::run(Admin::Note { text: format!("writer {w} note {n}"), why: None }, &conn, true)
                    .await
                    .unwrap();
                n += 1;
            }
            n
        }));
    }
    // Let them write a while; every entry acknowledged by now must be in the backup.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let acknowledged = s.size().await;
    let dir = scratch("live");
    let file = dir.join("covenant.backup");
    let data = s.dir.clone();
    let done = tokio::task::block_in_place(|| backup::backup(&data, &file)).unwrap();
    stop.store(true, Ordering::SeqCst);
    let mut written = 0;
    for w in writers {
        written += w.await.unwrap();
    }
    assert!(written >= 16, "the writers wrote while the backup ran ({written} notes)");
    assert!(
        done.size >= acknowledged,
        "the backup ({}) holds every entry acknowledged before it ({acknowledged})",
        done.size
    );
    let size_after = s.size().await;
    assert!(size_after > done.size, "the writers kept appending past the backup's checkpoint");
    let original = headers(&s.admin(1), done.size).await;
    let server_dir = s.dir.clone();
    s.stop().await;
    drop(server_dir);

    // Restored into a new directory, it opens, verifies, and holds exactly
    // the first `done.size` entries.
    let restored = dir.join("restored");
    let r = tokio::task::block_in_place(|| backup::restore(&file, &restored, None, None)).unwrap();
    assert_eq!(r.size, done.size);
    assert!(restored.join("FORMAT").is_file() && !restored.join("views").exists());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let (stop_tx, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = covenant_server::serve::ServeConfig::new(restored.clone());
    let task = tokio::spawn(covenant_server::serve::run(config, listener, async {
        let _ = stopped.await;
    }));
    let admin =
        covenant_cli::connect::Connection { server: Some(url), identity: Some(restored.join("identities/admin1")) };
    let verify = Audit::Verify { bodies: true, ledger: None, state: Some(dir.join("audit-state.json")) };
    covenant_cli::audit::run(verify, &admin, None, true).await.unwrap();
    assert_eq!(headers(&admin, done.size).await, original, "the restored ledger is the original's prefix");
    // And it appends again, on from the backup's checkpoint.
    covenant_cli::admin::run(Admin::Note { text: "after the restore".into(), why: None }, &admin, true).await.unwrap();
    let _ = stop_tx.send(());
    task.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_backup_is_refused_while_a_witness_holds_a_newer_checkpoint() {
    let s = Running::start_witnessed("backup-old").await;
    let a1 = s.admin(1);
    admin(&a1, Admin::Note { text: "before".into(), why: None }).await;
    let dir = scratch("old");
    let file = dir.join("old.backup");
    let data = s.dir.clone();
    let done = tokio::task::block_in_place(|| backup::backup(&data, &file)).unwrap();
    for n in 0..3 {
        admin(&a1, Admin::Note { text: format!("after {n}"), why: None }).await;
    }
    // Wait (bounded) until the outside witness cosigned the newer size.
    let size = s.size().await;
    let mut ledger = LedgerServiceClient::new(a1.channel().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let cosigned = loop {
        let note = ledger.get_checkpoint(pb::GetCheckpointRequest {}).await.unwrap().into_inner().note;
        let text = String::from_utf8(note.clone()).unwrap();
        if text.lines().nth(1) == Some(&size.to_string()) && text.matches("— ").count() >= 2 {
            break note;
        }
        assert!(Instant::now() < deadline, "the witness never cosigned size {size}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let lost = size - done.size;
    let want = format!("would lose {lost} {}", if lost == 1 { "entry" } else { "entries" });

    // Asked at restore, the witness says it holds more: refused, nothing made.
    let target = dir.join("restored");
    let err = tokio::task::block_in_place(|| backup::restore(&file, &target, None, None)).unwrap_err();
    let err = format!("{err:#}");
    assert!(err.contains(&want) && err.contains(&format!("size {size}")), "{err}");
    assert!(!target.exists() || std::fs::read_dir(&target).unwrap().next().is_none(), "nothing restored");

    // The same from a cosigned checkpoint the operator supplies, with the
    // witness unreachable (its address in the copy's witnesses.toml is ours).
    let note = dir.join("cosigned.note");
    std::fs::write(&note, &cosigned).unwrap();
    let err = tokio::task::block_in_place(|| backup::restore(&file, &target, Some(&note), None)).unwrap_err();
    assert!(format!("{err:#}").contains(&want), "{err:#}");
    // A checkpoint another key signed is not evidence.
    std::fs::write(&note, String::from_utf8_lossy(&cosigned).replace("covenant.localhost", "evil.example")).unwrap();
    let err = tokio::task::block_in_place(|| backup::restore(&file, &target, Some(&note), None)).unwrap_err();
    assert!(format!("{err:#}").contains("not a checkpoint signed by this ledger's key"), "{err:#}");
    assert!(!target.exists() || std::fs::read_dir(&target).unwrap().next().is_none(), "nothing restored");

    // With the explicit flag it proceeds, and the ledger records the loss:
    // a note signed by the decision key, right after the restored entries.
    let why = "the disk and its mirror failed together; no newer backup";
    let r = tokio::task::block_in_place(|| backup::restore(&file, &target, None, Some(why))).unwrap();
    assert_eq!((r.loss_recorded_at, r.witnessed, r.size), (Some(done.size), size, done.size + 1));
    let losses = covenant_server::datadir::accepted_losses(&target).unwrap();
    assert_eq!(losses, vec![covenant_server::datadir::AcceptedLoss { index: done.size, witnessed_size: size }]);
    // The restored server opens although the witness (still up, and asked
    // at start) cosigned the lost history, and an auditor finds the loss.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let (stop_tx, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = covenant_server::serve::ServeConfig::new(target.clone());
    let task = tokio::spawn(covenant_server::serve::run(config, listener, async {
        let _ = stopped.await;
    }));
    let admin =
        covenant_cli::connect::Connection { server: Some(url), identity: Some(target.join("identities/admin1")) };
    let verify = Audit::Verify { bodies: true, ledger: None, state: Some(dir.join("audit-state.json")) };
    covenant_cli::audit::run(verify, &admin, None, true).await.unwrap();
    let mut ledger = LedgerServiceClient::new(admin.channel().await.unwrap());
    let entry = ledger
        .get_entries(pb::GetEntriesRequest { start: done.size, end: done.size + 1, with_bodies: true })
        .await
        .unwrap()
        .into_inner();
    let body = &entry.entries[0].body;
    let loss = covenant_core::statements::RestoreLoss::parse(
        covenant_core::envelope::Envelope::parse(body).unwrap().payload(),
    )
    .unwrap();
    assert_eq!((loss.restored_size, loss.witnessed_size, loss.why.as_str()), (done.size, size, why));
    let _ = stop_tx.send(());
    task.await.unwrap().unwrap();

    // A list of accepted losses the ledger does not record is refused: an
    // operator cannot set the witnesses' evidence aside by editing a file.
    let forged = dir.join("forged");
    let r = tokio::task::block_in_place(|| backup::restore(&file, &forged, None, Some(why))).unwrap();
    assert_eq!(r.loss_recorded_at, Some(done.size));
    let path = covenant_server::layout::DataDir::new(&forged).accepted_losses();
    let wider = vec![covenant_server::datadir::AcceptedLoss { index: done.size, witnessed_size: size + 10 }];
    std::fs::write(&path, serde_json::to_vec(&wider).unwrap()).unwrap();
    let err = tokio::task::block_in_place(|| covenant_server::datadir::open_ledger(&forged)).map(|_| ()).unwrap_err();
    assert!(format!("{err:#}").contains("that the ledger does not record"), "{err:#}");
    // And a backup of that directory does not restore either.
    let copy = dir.join("forged.backup");
    let err = tokio::task::block_in_place(|| backup::backup(&forged, &copy)).map(|_| ()).unwrap_err();
    assert!(format!("{err:#}").contains("that the ledger does not record"), "{err:#}");
    s.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A way to spoil a backup file.
type Spoil = Box<dyn Fn(&Path)>;

/// Flips one byte of the file in the backup at `path` (found by its bytes).
fn tamper(backup_file: &Path, needle: &[u8]) {
    let mut bytes = std::fs::read(backup_file).unwrap();
    let at = bytes.windows(needle.len()).position(|w| w == needle).expect("the bytes to tamper with");
    bytes[at] ^= 1;
    std::fs::write(backup_file, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_or_cut_backup_is_refused_and_nothing_is_made() {
    let s = Running::start("backup-tampered").await;
    admin(&s.admin(1), Admin::Note { text: "a note to find".into(), why: None }).await;
    let dir = scratch("tampered");
    let file = dir.join("good.backup");
    let data = s.dir.clone();
    tokio::task::block_in_place(|| backup::backup(&data, &file)).unwrap();
    // Refused: a backup over an existing file, a restore into a non-empty folder.
    let again = tokio::task::block_in_place(|| backup::backup(&data, &file)).unwrap_err();
    assert!(format!("{again:#}").contains("never overwrites"), "{again:#}");
    let busy = tokio::task::block_in_place(|| backup::restore(&file, &s.dir, None, None)).unwrap_err();
    assert!(format!("{busy:#}").contains("not empty"), "{busy:#}");
    s.stop().await;

    let cases: [(&str, Spoil, &str); 3] = [
        ("journal", Box::new(|f: &Path| tamper(f, b"\"kind\":\"note\"")), "differs from its digest"),
        (
            "cut",
            Box::new(|f: &Path| {
                let len = std::fs::metadata(f).unwrap().len();
                let file = std::fs::OpenOptions::new().write(true).open(f).unwrap();
                file.set_len(len / 2).unwrap();
            }),
            "",
        ),
        ("manifest", Box::new(|f: &Path| tamper(f, b"\"ledger_format\"")), "manifest"),
    ];
    for (name, spoil, says) in cases {
        let copy = dir.join(format!("{name}.backup"));
        std::fs::copy(&file, &copy).unwrap();
        spoil(&copy);
        let target = dir.join(format!("restored-{name}"));
        let err = tokio::task::block_in_place(|| backup::restore(&copy, &target, None, None)).unwrap_err();
        assert!(format!("{err:#}").contains(says), "{name}: {err:#}");
        assert!(!target.exists(), "{name}: nothing may be made");
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("restoring"))
            .collect();
        assert!(leftovers.is_empty(), "{name}: scratch folders left: {leftovers:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
