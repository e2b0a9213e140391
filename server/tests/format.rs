//! Ledger formats (`docs/ledger.md`, "Ledger formats"): a data directory
//! names the format its ledger is written in, and a server of another
//! format refuses to open or check it, saying which and what to do, before
//! reading an entry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

use covenant_server::datadir::{self, LEDGER_FORMAT, UPGRADABLE_FORMAT};
use covenant_server::layout::DataDir;

fn fresh(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("covenant-format-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    datadir::init_dev(&dir).unwrap();
    dir
}

#[test]
fn init_names_the_format_and_the_server_opens_it() {
    let dir = fresh("current");
    let text = std::fs::read_to_string(DataDir::new(&dir).format()).unwrap();
    assert_eq!(text, format!("covenant ledger format {LEDGER_FORMAT}\n"));
    datadir::open_ledger(&dir).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_ledger_of_another_format_is_refused_before_it_is_read() {
    let dir = fresh("other");
    let format = DataDir::new(&dir).format();
    for (written, says) in [
        (None, "ledger format 1 (it has no FORMAT file)"),
        (Some("covenant ledger format 1\n"), "ledger format 1;"),
        (Some("covenant ledger format 4\n"), "ledger format 4;"),
        (Some("\u{0}\u{1}garbage"), "an unknown format"),
    ] {
        match written {
            Some(text) => std::fs::write(&format, text).unwrap(),
            None => std::fs::remove_file(&format).unwrap(),
        }
        let Err(err) = datadir::open_ledger(&dir) else { panic!("another format must be refused") };
        let err = format!("{err:#}");
        assert!(err.contains(says), "{err}");
        assert!(err.contains(&format!("this server reads ledger formats 2 and {LEDGER_FORMAT}")), "{err}");
        assert!(err.contains("covenant-server init"), "{err}");
        // `covenant-server check` refuses it the same way, and writes nothing.
        let out =
            Command::new(env!("CARGO_BIN_EXE_covenant-server")).args(["check", "--data"]).arg(&dir).output().unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains(says), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Format 3 only adds bodies: a format-2 directory is checked as it is, and
/// named format 3 once it is opened to append; nothing else changes.
#[test]
fn a_format_2_ledger_is_read_and_upgraded_in_place_when_opened_to_append() {
    let dir = fresh("upgrade");
    let format = DataDir::new(&dir).format();
    std::fs::write(&format, format!("covenant ledger format {UPGRADABLE_FORMAT}\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_covenant-server")).args(["check", "--data"]).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(&format).unwrap(), "covenant ledger format 2\n", "check writes nothing");
    let journal = std::fs::read(DataDir::new(&dir).ledger().join("log/journal")).unwrap();
    let (ledger, _) = datadir::open_ledger(&dir).unwrap();
    ledger.close();
    assert_eq!(std::fs::read_to_string(&format).unwrap(), format!("covenant ledger format {LEDGER_FORMAT}\n"));
    assert_eq!(std::fs::read(DataDir::new(&dir).ledger().join("log/journal")).unwrap(), journal, "no entry changed");
    let _ = std::fs::remove_dir_all(&dir);
}
