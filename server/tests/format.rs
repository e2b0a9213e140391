//! Ledger formats (`docs/ledger.md`, "Ledger formats"): a data directory
//! names the format its ledger is written in, and a server of another
//! format refuses to open or check it, saying which and what to do, before
//! reading an entry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

use covenant_server::datadir::{self, LEDGER_FORMAT};
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
        (Some("covenant ledger format 3\n"), "ledger format 3;"),
        (Some("\u{0}\u{1}garbage"), "an unknown format"),
    ] {
        match written {
            Some(text) => std::fs::write(&format, text).unwrap(),
            None => std::fs::remove_file(&format).unwrap(),
        }
        let Err(err) = datadir::open_ledger(&dir) else { panic!("another format must be refused") };
        let err = format!("{err:#}");
        assert!(err.contains(says), "{err}");
        assert!(err.contains(&format!("this server reads and writes ledger format {LEDGER_FORMAT}")), "{err}");
        assert!(err.contains("covenant-server init"), "{err}");
        // `covenant-server check` refuses it the same way, and writes nothing.
        let out =
            Command::new(env!("CARGO_BIN_EXE_covenant-server")).args(["check", "--data"]).arg(&dir).output().unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains(says), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
