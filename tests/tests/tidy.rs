//! Repository hygiene that the compiler does not check (after
//! rust-analyzer's tidy test): every Rust file says what it is for in a `//!`
//! comment, every crate (as `cargo metadata` lists the workspace's members)
//! takes the workspace's one lint table (which forbids `unsafe_code`), and
//! `core` stays pure: no file system, network, clock, `tokio` or `sled` in its
//! sources or its (normal) dependencies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the workspace").to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_module_doc_comment() {
    let mut files = Vec::new();
    rust_files(&workspace(), &mut files);
    assert!(files.len() > 20, "found only {} .rs files", files.len());
    let missing: Vec<_> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            !text.lines().find(|l| !l.trim().is_empty()).is_some_and(|l| l.starts_with("//!"))
        })
        .collect();
    assert!(missing.is_empty(), "files without a leading //! comment: {missing:?}");
}

/// `cargo metadata --format-version 1 --no-deps` of the workspace: its
/// members, each with its manifest path and direct dependencies.
fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(workspace())
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn packages(metadata: &serde_json::Value) -> &Vec<serde_json::Value> {
    metadata["packages"].as_array().unwrap()
}

#[test]
fn every_crate_uses_the_workspace_lints() {
    let root = std::fs::read_to_string(workspace().join("Cargo.toml")).unwrap();
    assert!(root.contains("unsafe_code = \"forbid\""));
    let metadata = metadata();
    let members = packages(&metadata);
    assert!(members.len() >= 7, "cargo metadata lists only {} members", members.len());
    for package in members {
        let manifest_path = package["manifest_path"].as_str().unwrap();
        let manifest = std::fs::read_to_string(manifest_path).unwrap();
        assert!(manifest.contains("[lints]\nworkspace = true"), "{manifest_path} does not take the workspace lints");
    }
}

/// The code of every `.rs` file under `core/src`, comments removed (a doc
/// comment may say what core does not do), with each file's path.
fn core_code() -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    rust_files(&workspace().join("core/src"), &mut files);
    assert!(files.len() > 10, "found only {} files in core/src", files.len());
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).unwrap();
            let code: Vec<&str> = text.lines().map(|l| l.find("//").map_or(l, |at| &l[..at])).collect();
            (f, code.join("\n"))
        })
        .collect()
}

/// Whether `word` occurs in `code` as a whole identifier.
fn has_word(code: &str, word: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    code.match_indices(word).any(|(at, _)| {
        !code[..at].chars().next_back().is_some_and(ident) && !code[at + word.len()..].chars().next().is_some_and(ident)
    })
}

/// Whether `code` uses `std::<module>`, as a path or inside a `use std::{..}`
/// group.
fn uses_std_module(code: &str, module: &str) -> bool {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    let path = format!("std::{module}");
    if code
        .match_indices(&path)
        .any(|(at, _)| !code[at + path.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_'))
    {
        return true;
    }
    code.match_indices("std::{").any(|(at, _)| {
        let group = &code[at + 6..];
        let group = &group[..group.find("};").unwrap_or(group.len())];
        group.split([',', '{', '}']).any(|item| item == module || item.starts_with(&format!("{module}::")))
    })
}

/// Core's direct dependencies that are not dev-dependencies, by crate name.
fn core_dependencies() -> Vec<String> {
    let metadata = metadata();
    let core = packages(&metadata).iter().find(|p| p["name"] == "covenant-core").expect("covenant-core is a member");
    core["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"].as_str() != Some("dev"))
        .map(|d| d["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn core_sources_touch_no_file_system() {
    let found: Vec<_> =
        core_code().into_iter().filter(|(_, code)| uses_std_module(code, "fs")).map(|(f, _)| f).collect();
    assert!(found.is_empty(), "core is pure, yet these files use std::fs: {found:?}");
}

#[test]
fn core_sources_open_no_network() {
    let found: Vec<_> =
        core_code().into_iter().filter(|(_, code)| uses_std_module(code, "net")).map(|(f, _)| f).collect();
    assert!(found.is_empty(), "core is pure, yet these files use std::net: {found:?}");
}

#[test]
fn core_sources_read_no_clock() {
    let found: Vec<_> = core_code()
        .into_iter()
        .filter(|(_, code)| {
            let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
            code.contains("SystemTime::now") || code.contains("Instant::now")
        })
        .map(|(f, _)| f)
        .collect();
    assert!(found.is_empty(), "core takes the time as an argument, yet these files read the clock: {found:?}");
}

#[test]
fn core_neither_uses_nor_depends_on_tokio() {
    let found: Vec<_> = core_code().into_iter().filter(|(_, code)| has_word(code, "tokio")).map(|(f, _)| f).collect();
    assert!(found.is_empty(), "core is synchronous, yet these files use tokio: {found:?}");
    let deps = core_dependencies();
    assert!(!deps.iter().any(|d| d.starts_with("tokio")), "core depends on tokio: {deps:?}");
}

#[test]
fn core_neither_uses_nor_depends_on_sled() {
    let found: Vec<_> = core_code().into_iter().filter(|(_, code)| has_word(code, "sled")).map(|(f, _)| f).collect();
    assert!(found.is_empty(), "core stores nothing, yet these files use sled: {found:?}");
    let deps = core_dependencies();
    assert!(!deps.iter().any(|d| d == "sled"), "core depends on sled: {deps:?}");
}
