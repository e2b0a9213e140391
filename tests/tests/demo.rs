//! `covenant demo`, the README's first command, run as a user runs it: the
//! real binaries as separate processes over mutual TLS on loopback. It must
//! reach its summary with the story's outcome, and read as plain words; and
//! the ledger it leaves must hold every grant the devices installed under,
//! and replay clean.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[test]
fn the_demo_plays_the_whole_story_to_its_summary() {
    // The demo finds these beside itself.
    covenant_tests::binary("covenant-server");
    covenant_tests::binary("covenant-agent");
    let out = std::process::Command::new(covenant_tests::binary("covenant")).args(["demo", "--keep"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for expected in [
        "a-01 checks in: installed 1.1.0",
        "b-01 checks in: withheld",
        "an L2 suspension does not allow capability releases",
        "b-01 checks in: installed 1.0.1",
        "unmet: end_use_attested: The end-use attestation for deployment a-01 expired",
        "a-01 checks in: installed 1.2.0",
        "a-02 checks in: no server answers",
        "on site, a-02 installs from the bundle: Installed version 1.2.0",
        "names eng-1 as the courier",
        "0 mismatches",
        "the checkpoint carries 1 witness cosignature\n",
        "refused: the ledger's files do not reproduce its signed checkpoint",
        "Summary.",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let summary = text.split("Summary.").nth(1).unwrap();
    assert!(summary.lines().any(|l| l.contains("a-01") && l.contains("1.2.0") && l.contains("granted")), "{summary}");
    assert!(
        summary.lines().any(|l| l.contains("b-01") && l.contains("1.0.1") && l.contains("1.1.0 still withheld")),
        "{summary}"
    );
    assert!(summary.lines().any(|l| l.contains("a-02") && l.contains("1.2.0") && l.contains("granted")), "{summary}");
    // Written for a compliance officer: no debug formatting.
    for debug in ["Some(", "None", "{ ", "Err(", "Ok(", "panicked", "backtrace", "(s)", ".;"] {
        assert!(!text.contains(debug), "debug formatting {debug:?} in:\n{text}");
    }

    // The ledger the demo's server left (it is stopped when the demo ends):
    // a-01 installed 1.1.0 and 1.2.0, b-01 the security fix 1.0.1, a-02
    // (air-gapped) 1.2.0 from a bundle, each
    // under a grant in the ledger for that deployment and release; it
    // replays clean.
    let kept = text
        .lines()
        .find_map(|l| l.strip_prefix("The demo's files are in "))
        .map(|d| std::path::PathBuf::from(d.trim_end_matches('.')))
        .expect("--keep names the demo's folder");
    let ledger = covenant_tests::check_ledger(
        &kept.join("server"),
        &[
            (&kept.join("device-a-01"), "a-01"),
            (&kept.join("device-b-01"), "b-01"),
            (&kept.join("device-a-02"), "a-02"),
        ],
    );
    // And a-02, air-gapped, 1.2.0 through an engineer's files.
    assert_eq!(ledger.installed_grants, 4, "{ledger:?}");
    assert!(ledger.withholds >= 3, "a-01 before attesting and after expiry, b-01 under L2: {ledger:?}");
    let _ = std::fs::remove_dir_all(&kept);
}
