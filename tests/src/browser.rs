//! Headless Chromium for the tests of pages (the console, the evidence
//! pack's report): Debian's `chromium` (or `$COVENANT_CHROMIUM`), a fresh
//! profile per run, every run killed after [`CHROMIUM_LIMIT`]. Without the
//! browser a test fails naming the package to install; it never skips.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one Chromium run may take before it is killed.
pub const CHROMIUM_LIMIT: Duration = Duration::from_secs(60);

/// The browser: `$COVENANT_CHROMIUM` or `/usr/bin/chromium`; a missing one
/// fails the test, naming Debian's package.
pub fn chromium() -> PathBuf {
    let path = std::env::var_os("COVENANT_CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(
        path.is_file(),
        "headless Chromium is required: install Debian's `chromium` package (apt-get install chromium), or name \
         the browser in COVENANT_CHROMIUM ({} does not exist)",
        path.display()
    );
    path
}

/// The cargo target folder of the running test (where screenshots go).
pub fn target_dir() -> PathBuf {
    // target/<profile>/deps/<test> -> target
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).and_then(Path::parent).unwrap().to_path_buf()
}

/// Runs headless Chromium with a fresh profile and `args`, killed after
/// [`CHROMIUM_LIMIT`]; returns its standard output.
pub fn run_chromium(args: &[String]) -> String {
    let profile = std::env::temp_dir().join(format!(
        "covenant-chromium-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    ));
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + CHROMIUM_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium {args:?} did not finish within {CHROMIUM_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    let _ = std::fs::remove_dir_all(&profile);
    assert!(status.success(), "chromium {args:?} failed: {status}\n{err}");
    out
}
