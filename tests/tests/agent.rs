//! The agent binary against the real server over mutual TLS: enrolled and
//! provisioned as a device is, it installs a granted release; with an update
//! withheld, `covenant-agent status` gives the operator the reasons in words
//! and as data; and thirty SIGKILLs at random moments never leave the
//! active slot incomplete.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use covenant_agent::output;
use covenant_agent::store::{Store, Verdict};
use covenant_storage::FsStorage;
use covenant_tests::*;

fn state_arg(state: &std::path::Path) -> String {
    state.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_installs_a_granted_release_and_its_report_is_logged() {
    let s = Running::start_witnessed("agent-grant").await;
    cast_with(&s, "").await;
    let state = enrolled_agent(&s, "lim-09").await;
    let before = s.size().await;
    let st = state_arg(&state);
    let (ok, out, err) = tokio::task::block_in_place(|| agent_cli(&["check", "--state", &st, "--json"]));
    assert!(ok, "{err}");
    let v: output::Check = serde_json::from_str(&out).unwrap();
    assert_eq!(v.outcome, output::Outcome::Installed, "{out}");
    assert_eq!(v.version.as_deref(), Some("1.1.0"));
    let (ok, out, _) = tokio::task::block_in_place(|| agent_cli(&["status", "--state", &st, "--json"]));
    assert!(ok);
    let status: output::Status = serde_json::from_str(&out).unwrap();
    assert_eq!(status.installed.version, "1.1.0");
    assert_eq!(status.installed.slot, "b");
    assert_eq!(status.verdict.as_ref().unwrap().verdict, Verdict::Granted);
    assert!(!status.report_pending);
    // The grant and the install report are in the ledger.
    assert!(s.size().await >= before + 2);
    // The next check-in: nothing newer exists.
    let (ok, out, err) = tokio::task::block_in_place(|| agent_cli(&["check", "--state", &st]));
    assert!(ok, "{err}");
    assert!(out.contains("Up to date"), "{out}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withheld_update_is_explained_to_the_operator_in_words_and_as_data() {
    let s = Running::start_witnessed("agent-withheld").await;
    cast(&s).await;
    let state = enrolled_agent(&s, "lim-09").await;
    let st = state_arg(&state);
    let (ok, out, err) = tokio::task::block_in_place(|| agent_cli(&["check", "--state", &st]));
    assert!(ok, "{err}");
    assert!(out.contains("withheld"), "{out}");
    let (ok, out, _) = tokio::task::block_in_place(|| agent_cli(&["status", "--state", &st]));
    assert!(ok);
    assert!(out.contains("installed version 1.0.0"), "{out}");
    assert!(out.contains("an update is withheld"), "{out}");
    assert!(out.contains("unmet: end_use_attested:"), "{out}");
    assert!(out.contains("unmet: field_verified:"), "{out}");
    assert!(out.contains("withheld: version 1.1.0"), "{out}");
    assert!(!out.contains("Some(") && !out.contains("{ "), "no debug formatting: {out}");
    let (ok, out, _) = tokio::task::block_in_place(|| agent_cli(&["status", "--state", &st, "--json"]));
    assert!(ok);
    let status: output::Status = serde_json::from_str(&out).unwrap();
    let verdict = status.verdict.unwrap();
    assert_eq!(verdict.verdict, Verdict::Withheld);
    let unmet: Vec<&str> = verdict.unmet.iter().map(|c| c.condition.as_str()).collect();
    assert_eq!(unmet, ["end_use_attested", "field_verified"]);
    assert!(verdict.unmet[0].reason.len() > 10);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_installs_and_logs_each_verdict_once_not_on_every_poll() {
    let s = Running::start_witnessed("agent-daemon").await;
    cast_with(&s, "").await;
    let state = enrolled_agent(&s, "lim-09").await;
    let config = state.join("agent.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace("poll_seconds = 3600", "poll_seconds = 1");
    std::fs::write(&config, text).unwrap();
    let exe = tokio::task::block_in_place(|| binary("covenant-agent"));
    let log = state.join("daemon.log");
    let mut child = std::process::Command::new(&exe)
        .args(["run", "--state", &state_arg(&state)])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let store = Store::new(FsStorage::new(&state).unwrap());
        if store.installed().unwrap().version.to_string() == "1.1.0" {
            break;
        }
        assert!(Instant::now() < deadline, "the daemon did not install: {}", std::fs::read_to_string(&log).unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Several more polls: each says "current", logged once.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let _ = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "the daemon stops cleanly on SIGINT");
    let text = std::fs::read_to_string(&log).unwrap();
    let polls = Store::new(FsStorage::new(&state).unwrap()).verdict().unwrap().unwrap();
    assert_eq!(polls.verdict, Verdict::Current);
    assert_eq!(text.matches("is granted").count(), 1, "{text}");
    assert_eq!(text.matches("up to date").count(), 1, "{text}");
    assert!(text.contains("Installed version 1.1.0"), "{text}");
    s.stop().await;
}

/// Issue #17: a device whose certificate the vendor revoked is refused
/// (`PermissionDenied`: "this certificate has been revoked"). That is no
/// network blip: the daemon used to retry it forever, saying only "the
/// server: …; retrying". It stops at once, says why, and exits with the
/// code a service manager is told not to restart on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_certificate_makes_the_daemon_stop_retrying_and_say_why() {
    let s = Running::start_witnessed("agent-revoked").await;
    cast(&s).await;
    let state = enrolled_agent(&s, "lim-09").await;
    let st = state_arg(&state);
    // A working device first: its check-in is answered.
    let (ok, _, err) = tokio::task::block_in_place(|| agent_cli(&["check", "--state", &st]));
    assert!(ok, "{err}");
    let der = covenant_server::pki::pem_to_der(&std::fs::read_to_string(state.join("cert.pem")).unwrap()).unwrap();
    let fingerprint = covenant_core::digest::Sha256Digest::of(&der).to_string();
    let revoke = covenant_cli::admin::IdentityCmd::Revoke { fingerprint, compromised_since: None };
    admin(&s.admin(1), covenant_cli::admin::Admin::Identity(revoke)).await;
    let config = state.join("agent.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace("poll_seconds = 3600", "poll_seconds = 1");
    std::fs::write(&config, text).unwrap();
    let exe = tokio::task::block_in_place(|| binary("covenant-agent"));
    let log = state.join("daemon.log");
    let mut child = std::process::Command::new(&exe)
        .args(["run", "--state", &st])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // The old daemon backed off 5, 10, 20 … seconds, capped at the poll
    // time, and never stopped.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon is still retrying: {}", std::fs::read_to_string(&log).unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(3), "{text}");
    assert!(
        text.contains("the server refuses this device (PermissionDenied): this certificate has been revoked"),
        "{text}"
    );
    assert!(text.contains("only the vendor can clear this"), "{text}");
    assert!(!text.contains("retrying"), "not retried as a network blip: {text}");
    // A single check says the same, with the same exit code.
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new(&exe).args(["check", "--state", &st]).output().unwrap()
    });
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("this certificate has been revoked"), "{err}");
    s.stop().await;
}

/// A small generator for the kill times (seeded from the clock, printed).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// An artifact for `version`.
fn image(version: u64) -> Vec<u8> {
    (0..8u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8 ^ version as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_sigkills_at_random_moments_never_leave_an_incomplete_slot() {
    let s = Running::start_witnessed("agent-kill").await;
    cast_with(&s, "").await;
    let state = enrolled_agent(&s, "lim-09").await;
    let st = state_arg(&state);
    let exe = tokio::task::block_in_place(|| binary("covenant-agent"));
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    println!("kill times seeded with {seed}");
    let mut rng = Lcg(seed);
    // Each time an update completes on its own, the vendor publishes the
    // next one, so the kills land in every phase of several updates.
    let mut target = 2;
    publish_bytes(&s, "1.2.0", &image(target)).await;
    let (mut kills, mut completed) = (0, 0);
    for round in 0..300 {
        if kills == 30 {
            break;
        }
        let mut child = std::process::Command::new(&exe)
            .args(["check", "--state", &st])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let at = Duration::from_millis(rng.below(400));
        let start = Instant::now();
        let mut exited = false;
        while start.elapsed() < at {
            if child.try_wait().unwrap().is_some() {
                exited = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if !exited {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        let _ = child.wait();
        let store = Store::new(FsStorage::new(&state).unwrap());
        let active = store.current().unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(
            store.verify_slot(active).unwrap(),
            "round {round}, killed after {at:?}: the active slot is incomplete"
        );
        let installed = store.installed().unwrap().version;
        assert!(installed.minor <= target && installed.major == 1, "round {round}: {installed}");
        if installed.minor == target {
            completed += 1;
            target += 1;
            publish_bytes(&s, &format!("1.{target}.0"), &image(target)).await;
        }
    }
    println!("{kills} SIGKILLs; {completed} updates completed between them");
    assert_eq!(kills, 30);
    // Then, left alone, the last update completes with the right hash.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let store = Store::new(FsStorage::new(&state).unwrap());
        if store.installed().unwrap().version.minor == target {
            let active = store.current().unwrap();
            let expected = covenant_core::digest::Sha256Digest::of(&image(target));
            assert_eq!(store.installed().unwrap().artifact.unwrap().0, expected);
            assert!(store.verify_slot(active).unwrap());
            break;
        }
        assert!(Instant::now() < deadline, "the update did not complete");
        let _ = tokio::task::block_in_place(|| agent_cli(&["check", "--state", &st]));
    }
    s.stop().await;
}
