//! What the binaries print for a person: untrusted text escaped (issue #10,
//! item 12), a closed output pipe not a panic (item 17).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Command, Stdio};

use covenant_tests::binary;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("covenant-output-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A customer writes terminal escapes and a carriage return into its
/// attestation: printed raw, `ESC [2J` would clear the engineer's screen and
/// `\r` would let the text after it overwrite the line, so the engineer
/// would read and sign something else than what the attestation says.
#[test]
fn escape_codes_in_an_attestation_cannot_rewrite_what_the_engineer_sees() {
    let dir = scratch("escapes");
    let toml = covenant_cli::demo::attestation("min-x", "lim-07", "2099-01-01T00:00:00Z")
        .replace(
            r#"description = "court-ordered interception""#,
            r#"description = "mass surveillance\u001b[2J\u001b[1;1H\rcourt-ordered interception""#,
        )
        .replace(r#"legal_name = "min-x""#, r#"legal_name = "Ministry X\u202egnissecorp""#);
    std::fs::write(dir.join("attestation.toml"), toml).unwrap();
    let envelope = dir.join("attestation.json");
    let made = Command::new(binary("covenant"))
        .args(["attest", "new", "--from"])
        .arg(dir.join("attestation.toml"))
        .arg("--out")
        .arg(&envelope)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));

    let shown = Command::new(binary("covenant")).args(["verify", "show"]).arg(&envelope).output().unwrap();
    assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
    let out = String::from_utf8(shown.stdout).unwrap();
    for hidden in ['\u{1b}', '\r', '\u{202e}'] {
        assert!(!out.contains(hidden), "{hidden:?} printed raw:\n{out:?}");
    }
    assert!(
        out.contains(r"end use: lawful-interception: mass surveillance\u{1b}[2J\u{1b}[1;1H\u{d}court-ordered"),
        "{out}"
    );
    assert!(out.contains(r"end user: Ministry X\u{202e}gnissecorp"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `covenant-agent status … | head -1` closes the pipe before the agent has
/// written everything: the agent stops quietly instead of panicking with
/// "failed printing to stdout".
#[test]
fn agent_status_into_a_closed_pipe_stops_quietly() {
    let dir = scratch("pipe");
    let config = covenant_agent::config::Config { server: "https://127.0.0.1:1".into(), ..Default::default() };
    config.write(&dir.join(covenant_agent::config::FILE)).unwrap();
    // The reading end is closed before the agent starts, so its first
    // write fails with a broken pipe (Rust ignores SIGPIPE).
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let run = Command::new(binary("covenant-agent"))
        .args(["status", "--configuration-digest", "--state"])
        .arg(&dir)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(run.status.code(), Some(0), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
