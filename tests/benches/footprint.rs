//! The agent's footprint (issue #8), in one run on this machine:
//!
//! (a) the `covenant-agent` binary built with the `agent-small` profile
//!     (`opt-level = "z"`, LTO, one codegen unit, `panic = "abort"`,
//!     stripped); target ≤ 4 MiB;
//! (b) its peak RSS (VmHWM) during one `covenant-agent check` that downloads
//!     and installs a 64 MiB and then a 1 GiB release from the real server
//!     over mutual TLS; target ≤ 8 MiB and flat in artifact size;
//! (c) its peak RSS during one `covenant-agent offline install` (issue #20)
//!     of the same two releases from bundles an engineer fetched with
//!     `covenant field fetch` from the same server; target ≤ 8 MiB, as
//!     online.
//!
//! `cargo bench -p covenant-tests --bench footprint [-- --size-mib N]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use covenant_tests::load::arg;
use covenant_tests::*;

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

/// `mib` MiB of an image for `version`.
fn image(mib: u64, version: u8) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(version);
    let mut out = vec![0u8; (mib << 20) as usize];
    for b in out.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.copy_from_slice(&x.to_le_bytes());
    }
    out
}

/// Runs one `check`, sampling the process's peak RSS; returns (peak KiB, seconds, stdout).
fn measured_check(exe: &std::path::Path, state: &std::path::Path) -> (u64, f64, String) {
    measured(exe, &["check", "--state", &state.display().to_string()])
}

/// Runs `exe ARGS`, sampling the process's peak RSS; returns (peak KiB, seconds, stdout).
fn measured(exe: &std::path::Path, args: &[&str]) -> (u64, f64, String) {
    let start = Instant::now();
    let child = std::process::Command::new(exe).args(args).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let sampler = std::thread::spawn(move || {
        let mut peak = 0;
        while let Some(hwm) = status_kib(pid, "VmHWM:") {
            peak = peak.max(hwm);
            std::thread::sleep(Duration::from_millis(5));
        }
        peak
    });
    let out = child.wait_with_output().unwrap();
    let seconds = start.elapsed().as_secs_f64();
    let peak = sampler.join().unwrap();
    (peak, seconds, String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    let big = arg("--size-mib", 1024);
    let exe = binary_in("covenant-agent", "agent-small");
    let size = std::fs::metadata(&exe).unwrap().len();
    println!(
        "(a) covenant-agent built with the agent-small profile: {:.2} MiB ({size} bytes); target <= 4 MiB",
        size as f64 / f64::from(1 << 20)
    );
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let s = Running::start_witnessed("footprint").await;
        let cast = cast_with(&s, "").await;
        let state = enrolled_agent(&s, "lim-09").await;
        // The air-gapped device: it never calls the server; an engineer
        // carries its request in and the bundle out.
        let offline = enrolled_agent(&s, "lim-10").await;
        let engineer = s.conn(&cast.engineer);
        let st = |p: &std::path::Path| p.display().to_string();
        let mut rows = Vec::new();
        for (version, mib) in [("1.2.0", 64), ("1.3.0", big)] {
            let bytes = image(mib, version.as_bytes()[2]);
            publish_bytes(&s, version, &bytes).await;
            drop(bytes);
            let (peak, seconds, out) = tokio::task::block_in_place(|| measured_check(&exe, &state));
            rows.push(format!(
                "(b) online check, {mib} MiB release: peak RSS {:.1} MiB over {seconds:.1} s ({:.0} MB/s): {out}",
                peak as f64 / 1024.0,
                (mib << 20) as f64 / seconds / 1e6
            ));
            let (request, bundle, receipt) = (
                s.dir.join(format!("{version}.request")),
                s.dir.join(format!("{version}.bundle")),
                s.dir.join(format!("{version}.receipt")),
            );
            let (ok, _, err) = tokio::task::block_in_place(|| {
                agent_cli(&["offline", "request", "--state", &st(&offline), "--out", &st(&request)])
            });
            assert!(ok, "{err}");
            let fetch = covenant_cli::field::Field::Fetch { request, out: bundle.clone() };
            covenant_cli::field::run(fetch, &engineer, true).await.unwrap();
            let args = ["offline", "install", &st(&bundle), "--state", &st(&offline), "--receipt", &st(&receipt)];
            let (peak, seconds, out) = tokio::task::block_in_place(|| measured(&exe, &args));
            assert!(out.contains(&format!("Installed version {version}")), "{out}");
            rows.push(format!(
                "(c) offline install, {mib} MiB bundle: peak RSS {:.1} MiB over {seconds:.1} s ({:.0} MB/s)",
                peak as f64 / 1024.0,
                (mib << 20) as f64 / seconds / 1e6
            ));
            covenant_cli::field::run(covenant_cli::field::Field::Return { receipt }, &engineer, true).await.unwrap();
            let _ = std::fs::remove_file(&bundle);
        }
        for row in rows {
            println!("{row}");
        }
        println!("    target <= 8 MiB each, flat in artifact size (Mender's daemon: ~7.5 MiB)");
        s.stop().await;
    });
}
