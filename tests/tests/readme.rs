//! The README's walkthrough, run as written: every ```sh block between
//! `<!-- walkthrough -->` and `<!-- /walkthrough -->`, in order, in one
//! bash shell with the test-profile binaries first on PATH, in a scratch
//! folder, on loopback. Daemons the blocks start run in the background; the
//! last block stops them and waits (and the harness kills the shell's
//! process group whatever happens). No block is skipped, so the README
//! cannot drift.
//!
//! Then the outcome is checked on the device and on the ledger the server
//! left behind: the device runs security fix 1.1.1; every release it
//! installed came with a grant that is in the ledger, for this deployment
//! and that release; and the whole ledger replays with no mismatch.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use covenant_core::envelope::Envelope;
use covenant_core::ledger::{EntryHeader, EntryKind};
use covenant_core::statements::{Decision, Payload as _};

/// The walkthrough's command blocks, with the README line each starts on.
fn walkthrough_blocks(readme: &str) -> Vec<(usize, String)> {
    let start = readme.find("<!-- walkthrough -->").expect("the README marks its walkthrough");
    let end = readme.find("<!-- /walkthrough -->").expect("the README marks the walkthrough's end");
    let first_line = readme[..start].lines().count();
    let mut blocks = vec![];
    let mut current: Option<(usize, String)> = None;
    for (n, line) in readme[start..end].lines().enumerate() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some((first_line + n + 1, String::new())),
            (None, l) if l.starts_with("```") => {
                panic!("README line {}: a walkthrough block must be ```sh", first_line + n)
            }
            (Some(_), "```") => blocks.push(current.take().unwrap()),
            (Some((_, text)), l) => {
                text.push_str(l);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an unclosed block in the walkthrough");
    blocks
}

/// A port for the server with the next one free for the witness. It is
/// drawn below Linux's ephemeral range, where every other test's port 0
/// lands, so no test can take it between the check and the bind.
fn two_free_ports() -> u16 {
    let mut seed = std::process::id() as u16;
    for _ in 0..200 {
        seed = seed.wrapping_mul(25_173).wrapping_add(13_849);
        let port = 20_000 + seed % 10_000;
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 1) {
            return port;
        }
    }
    panic!("no two free ports between 20000 and 30000");
}

struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        // The shell and every daemon it started share its process group.
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.0)]).stderr(Stdio::null()).status();
    }
}

#[test]
fn every_command_block_of_the_readme_walkthrough_runs() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let blocks = walkthrough_blocks(&readme);
    assert!(blocks.len() >= 15, "the walkthrough has only {} blocks", blocks.len());
    assert!(
        blocks.last().unwrap().1.contains("kill $(jobs -p) && wait"),
        "the last block stops the daemons the walkthrough started"
    );

    let bin = common::binary("covenant").parent().unwrap().to_path_buf();
    common::binary("covenant-server");
    common::binary("covenant-agent");
    let scratch = std::env::temp_dir().join(format!("covenant-readme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();

    let mut script = String::from("set -euo pipefail\n");
    for (i, (line, text)) in blocks.iter().enumerate() {
        script.push_str(&format!("echo '>>> block {} (README.md line {line})'\n{text}", i + 1));
    }
    std::fs::write(scratch.join("walkthrough.sh"), &script).unwrap();
    let out = scratch.join("out.txt");
    let port = two_free_ports();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    use std::os::unix::process::CommandExt as _;
    let mut shell = Command::new("bash")
        .arg(scratch.join("walkthrough.sh"))
        .current_dir(&scratch)
        .env("PATH", path)
        .env("PORT", port.to_string())
        .env_remove("COVENANT_SERVER")
        .env_remove("COVENANT_IDENTITY")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&out).unwrap().try_clone().unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let group = Group(shell.id());
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(status) = shell.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the walkthrough did not finish in 10 minutes:\n{}", report(&scratch));
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "the walkthrough failed ({status}):\n{}", report(&scratch));
    // The last block sent the daemons SIGTERM: let them finish (the server
    // releases its ledger's lock), then make sure none is left.
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline
        && Command::new("kill")
            .args(["-0", "--", &format!("-{}", group.0)])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(group);

    let w = scratch.join("covenant-walkthrough");
    let text = std::fs::read_to_string(&out).unwrap();
    for expected in [
        "No end-use attestation covers deployment lim-07",
        "an L2 suspension does not allow capability releases",
        "0 mismatches",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in the walkthrough's output:\n{text}");
    }
    let watched = std::fs::read_to_string(w.join("watch.log")).unwrap_or_default();
    assert!(!watched.trim().is_empty(), "audit watch printed nothing:\n{}", report(&scratch));

    // The device: security fix 1.1.1 runs, installed under logged grants.
    let status = Command::new(bin.join("covenant-agent"))
        .args(["status", "--json", "--state"])
        .arg(w.join("device"))
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["installed"]["version"], "1.1.1", "{status:#}");
    assert_eq!(status["deployment"], "lim-07");

    // The ledger the server left: every grant the device installed under
    // is in it, for this deployment and that release; the whole ledger
    // replays clean.
    let (ledger, _) = covenant_server::datadir::open_ledger(&w.join("server")).unwrap();
    let mut entries = vec![];
    let size = ledger
        .for_each_entry(|index, header, stored| {
            entries.push((index, EntryHeader::parse(header).unwrap(), stored.body.clone()));
        })
        .unwrap();
    ledger.close();
    assert!(size > 20, "a ledger of {size} entries");
    assert!(text.contains(&format!("verify: {size} entries")), "the offline check saw the whole ledger:\n{text}");
    let installed = installed_grants(&w.join("device"));
    assert_eq!(installed.len(), 2, "1.1.0 and 1.1.1 were installed under grants: {installed:?}");
    for (release, index) in installed {
        let (_, header, body) = entries.iter().find(|(i, ..)| *i == index).expect("the grant's index is in the ledger");
        assert_eq!(header.kind, EntryKind::Grant, "entry {index}");
        let decision = Decision::parse(Envelope::parse(body).unwrap().payload()).unwrap();
        assert_eq!(decision.deployment, "lim-07");
        assert_eq!(decision.release.map(|d| d.to_string()), Some(release), "entry {index}");
    }
    let grants = entries.iter().filter(|(_, h, _)| h.kind == EntryKind::Grant).count();
    let withholds = entries.iter().filter(|(_, h, _)| h.kind == EntryKind::Withhold).count();
    assert!(grants >= 2 && withholds >= 2, "{grants} grants and {withholds} withholds logged");
    let replayed = covenant_core::replay::replay(entries.iter().map(|(i, h, b)| (*i, h, b.as_slice())));
    assert!(replayed.mismatches.is_empty(), "{:?}", replayed.mismatches);
    assert_eq!(replayed.decisions, (grants + withholds) as u64);
    let _ = std::fs::remove_dir_all(&scratch);
}

/// The (release digest, grant index) of every slot the device installed.
fn installed_grants(device: &Path) -> Vec<(String, u64)> {
    let mut found = vec![];
    for slot in ["a", "b"] {
        let meta: PathBuf = device.join("slots").join(slot).join("meta.json");
        let Ok(bytes) = std::fs::read(&meta) else { continue };
        let meta: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        if let Some(grant) = meta["grant"].as_array() {
            found.push((grant[0].as_str().unwrap().to_owned(), grant[1].as_u64().unwrap()));
        }
    }
    found
}

/// The walkthrough's output and the daemons' logs, for a failure message.
fn report(scratch: &Path) -> String {
    let mut text = std::fs::read_to_string(scratch.join("out.txt")).unwrap_or_default();
    for log in ["server.log", "witness.log", "agent.log", "watch.log"] {
        let body = std::fs::read_to_string(scratch.join("covenant-walkthrough").join(log)).unwrap_or_default();
        text.push_str(&format!("\n--- {log}\n{}", body.lines().rev().take(30).collect::<Vec<_>>().join("\n")));
    }
    text
}
