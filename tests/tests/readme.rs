//! The README's walkthrough, run as written: every ```sh block between
//! `<!-- walkthrough -->` and `<!-- /walkthrough -->`, in order, in one
//! bash shell with the test-profile binaries first on PATH, in a scratch
//! folder, on loopback. Daemons the blocks start run in the background; the
//! last block stops them and waits (and the harness kills the shell's
//! process group when the test ends, or a watchdog does if the test dies). No block is skipped, so the README
//! cannot drift.
//!
//! Then the outcome is checked on the device and on the ledger the server
//! left behind: the device runs security fix 1.1.1; every release it
//! installed came with a grant that is in the ledger, for this deployment
//! and that release; and the whole ledger replays with no mismatch.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
        blocks.last().unwrap().1.starts_with("kill $(jobs -p)\nwait\n"),
        "the last block stops the daemons the walkthrough started"
    );

    let bin = covenant_tests::binary("covenant").parent().unwrap().to_path_buf();
    covenant_tests::binary("covenant-server");
    covenant_tests::binary("covenant-agent");
    let scratch = std::env::temp_dir().join(format!("covenant-readme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();

    // The harness's own two lines: fail on the first failing command, and a
    // watchdog that kills the shell's process group (every daemon) if this
    // test process dies before it could.
    let mut script = format!(
        "set -euo pipefail\n(while kill -0 {} 2>/dev/null; do sleep 1; done; kill -KILL 0) &\n",
        std::process::id()
    );
    for (i, (line, text)) in blocks.iter().enumerate() {
        script.push_str(&format!("echo '>>> block {} (README.md line {line})'\n{text}", i + 1));
    }
    std::fs::write(scratch.join("walkthrough.sh"), &script).unwrap();
    let out = scratch.join("out.txt");
    // One file, one position: stdout and stderr interleave as a terminal shows them.
    let log = std::fs::File::create(&out).unwrap();
    let port = two_free_ports();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    use std::os::unix::process::CommandExt as _;
    let mut shell = Command::new("bash")
        .arg(scratch.join("walkthrough.sh"))
        .current_dir(&scratch)
        .env("PATH", path)
        .env("PORT", port.to_string())
        // The walkthrough's folder is $HOME/covenant-walkthrough.
        .env("HOME", &scratch)
        .env_remove("COVENANT_SERVER")
        .env_remove("COVENANT_IDENTITY")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
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
        // The read side: what awaits approval, the fleet, the cases.
        "1 proposal awaiting approval",
        "DEPLOYMENT  CUSTOMER  VERSION  VERDICT",
        "1 case, 1 open.",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in the walkthrough's output:\n{text}");
    }
    let watched = std::fs::read_to_string(w.join("watch.log")).unwrap_or_default();
    assert!(watched.contains("verified"), "audit watch verified no checkpoint:\n{}", report(&scratch));

    // The device: security fix 1.1.1 runs, installed under logged grants.
    let status = Command::new(bin.join("covenant-agent"))
        .args(["status", "--json", "--state"])
        .arg(w.join("device"))
        .output()
        .unwrap();
    let status: covenant_agent::output::Status = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status.installed.version, "1.1.1", "{status:#?}");
    assert_eq!(status.deployment, "lim-07");

    // The ledger the server left: every grant the device installed under
    // is in it, for this deployment and that release; the whole ledger
    // replays clean.
    let ledger = covenant_tests::check_ledger(&w.join("server"), &[(&w.join("device"), "lim-07")]);
    assert_eq!(ledger.installed_grants, 2, "1.1.0 and 1.1.1 were installed under grants");
    assert!(ledger.grants >= 2 && ledger.withholds >= 2, "{ledger:?}");
    assert!(ledger.size > 20, "{ledger:?}");
    assert!(
        text.contains(&format!("verify: {} entries", ledger.size)),
        "the offline check saw the whole ledger:\n{text}"
    );
    let _ = std::fs::remove_dir_all(&scratch);
}

/// The configuration reference's examples (every ```toml block outside
/// the walkthrough, whose own files the walkthrough uses) are read by the
/// code that reads the real files.
#[test]
fn the_readme_configuration_examples_are_read_by_the_real_readers() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let dir = std::env::temp_dir().join(format!("covenant-readme-config-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let blocks: Vec<&str> = readme.split("```toml\n").skip(1).map(|b| b.split("```").next().unwrap()).collect();
    assert_eq!(blocks.len(), 2, "a new ```toml example needs its reader here");
    for block in blocks {
        if block.contains("[[witness]]") {
            std::fs::write(dir.join("witnesses.toml"), block).unwrap();
            std::fs::write(dir.join("witness-w1.pem"), "pinned certificate").unwrap();
            let witnesses = covenant_server::witnesses::load(&dir).unwrap();
            assert_eq!(witnesses.len(), 1);
            assert_eq!(witnesses[0].name, "witness.example.org/w1");
        } else {
            std::fs::write(dir.join("agent.toml"), block).unwrap();
            let config = covenant_agent::config::Config::read(&dir.join("agent.toml")).unwrap();
            assert_eq!(config.poll_seconds, 3600);
            assert!(!config.allow_development);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
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
