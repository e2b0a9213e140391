//! Artifact delivery (issue #7), in one run on this machine:
//!
//! (a) a 1 GiB artifact over the mTLS download stream (one deployment
//!     holding a grant; the bytes counted, and hashed as an agent does);
//! (b) the same file from nginx over HTTPS, fetched with curl (installed
//!     with apt-get if missing); target (a) ≥ 0.8 × (b);
//! (c) the server's RSS growth during 16 concurrent downloads, with a
//!     256 MiB and with a 1 GiB artifact; target ≤ 64 MiB and flat in size;
//! (d) the chunk size: throughput for chunks of 64 KiB to 1 MiB, beside
//!     what a voided grant may still let out (two chunks: the one queued and
//!     the one being sent, plus the client's window), to choose
//!     `DOWNLOAD_CHUNK` by measurement.
//!
//! The server runs in a process of its own (this binary, started again with
//! `--serve DIR --chunk N`; it stops when its stdin closes), so that its RSS
//! is its own.
//!
//! `cargo bench -p covenant-tests --bench download [-- --size-mib N]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use covenant_core::digest::Sha256Digest;
use covenant_core::envelope::{self, Envelope};
use covenant_core::keys::SigningKey;
use covenant_core::state::classify;
use covenant_core::statements::*;
use covenant_proto::v1 as pb;
use covenant_proto::v1::update_service_client::UpdateServiceClient;
use covenant_server::datadir;
use covenant_server::ledger::{Ledger, NewEntry};
use covenant_server::serve::{ServeConfig, install_crypto_provider, run};
use covenant_server::update_service::DOWNLOAD_CHUNK;
use covenant_tests::device::{manifest, now, numbered_device, signed_checkin};
use covenant_tests::load::arg;
use sha2::Digest as _;

const DEVICES: usize = 16;

/// A channel as the device in `folder`, with HTTP/2 receive windows of
/// `window` bytes (an agent keeps a small one; a bulk client a large one).
async fn channel(url: &str, folder: &Path, window: u32) -> tonic::transport::Channel {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let read = |name: &str| std::fs::read(folder.join(name)).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem")))
        .identity(Identity::from_pem(read("cert.pem"), read("key.pem")))
        .domain_name("localhost");
    loop {
        let endpoint = tonic::transport::Channel::from_shared(url.to_owned())
            .unwrap()
            .tls_config(tls.clone())
            .unwrap()
            .initial_stream_window_size(window)
            .initial_connection_window_size(window.saturating_mul(2));
        if let Ok(ch) = endpoint.connect().await {
            return ch;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn append(ledger: &Ledger<covenant_server::ledger::storage::FsStorage>, body: Vec<u8>) {
    let p = classify(&body).unwrap();
    ledger.append_blocking(NewEntry { kind: p.kind, actor: p.actor, subjects: p.subjects, body }).unwrap();
}

/// Writes a `mib` MiB artifact into the store and publishes it as `version`.
fn publish(
    dir: &Path,
    ledger: &Ledger<covenant_server::ledger::storage::FsStorage>,
    version: &str,
    mib: u64,
) -> PathBuf {
    let tmp = dir.join(format!("artifact-{version}"));
    let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp).unwrap());
    let mut hasher = sha2::Sha256::new();
    let mut block = vec![0u8; 1 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..mib {
        for b in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes());
        }
        hasher.update(&block);
        file.write_all(&block).unwrap();
    }
    file.flush().unwrap();
    drop(file);
    let sha = Sha256Digest(hasher.finalize().into());
    let path = covenant_server::artifacts::artifact_path(dir, &sha);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let manifest = manifest(version, &format!("lim-{version}.img"), sha, mib << 20);
    let k1 = datadir::read_key(&dir.join("keys/release-1.key")).unwrap();
    let k2 = datadir::read_key(&dir.join("keys/release-2.key")).unwrap();
    append(ledger, envelope::sign(&manifest, &[&k1, &k2]));
    path
}

/// A customer, 16 deployments with their certificates and keys, a contract.
fn populate(dir: &Path) -> Vec<PathBuf> {
    let admin = datadir::read_key(&dir.join("identities/admin1/signing.key")).unwrap();
    let second = datadir::read_key(&dir.join("identities/admin2/signing.key")).unwrap();
    let by = |what, admin: &SigningKey| {
        let a = AdminAction {
            type_tag: ActionTag,
            schema: SchemaV1,
            action: what,
            why: "bench".into(),
            evidence: vec![],
            issued_at: now(),
        };
        envelope::sign(&a, &[admin])
    };
    let act = |what| by(what, &admin);
    let ca = datadir::authority(dir).unwrap();
    let (ledger, _) = datadir::open_ledger(dir).unwrap();
    append(
        &ledger,
        act(ActionKind::RegisterCustomer { customer: "c".into(), legal_name: "C".into(), country: "XA".into() }),
    );
    let contract = Contract {
        id: "k".into(),
        version: 1,
        customer: "c".into(),
        deployments: vec![],
        conditions: vec![],
        grant_validity_seconds: 86_400,
        compliance_contact: "compliance@vendor.example".into(),
    };
    let mut folders = Vec::new();
    for d in 0..DEVICES {
        let id = format!("dep-{d}");
        append(
            &ledger,
            act(ActionKind::RegisterDeployment {
                deployment: id.clone(),
                customer: "c".into(),
                product: "lim".into(),
                site: Site { country: "XA".into(), site_id: "s".into() },
                provisioned_version: "1.0.0".parse().unwrap(),
            }),
        );
        let issued = ca.issue_client(IdentityRole::Deployment, &id).unwrap();
        let folder = dir.join(format!("devices/{d}"));
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("cert.pem"), &issued.cert_pem).unwrap();
        std::fs::write(folder.join("key.pem"), &issued.key_pem).unwrap();
        std::fs::write(folder.join("ca.pem"), &ca.cert_pem).unwrap();
        append(
            &ledger,
            act(ActionKind::IssueIdentity {
                role: IdentityRole::Deployment,
                subject: id,
                signing_key: numbered_device(d).1.public(),
                certificate_sha256: issued.fingerprint,
                scope: None,
            }),
        );
        folders.push(folder);
    }
    // A customer's first contract waits for the second admin's approval;
    // after the deployments, which it then covers.
    let proposal = act(ActionKind::SetContract { contract });
    let digest = Sha256Digest::of(Envelope::parse(&proposal).unwrap().payload());
    append(&ledger, proposal);
    append(&ledger, by(ActionKind::Approve { proposal: digest }, &second));
    publish(dir, &ledger, "1.0.0", 1);
    ledger.close();
    folders
}

async fn grant(ch: &tonic::transport::Channel, d: usize, nonce: &str) -> Sha256Digest {
    let (deployment, key) = numbered_device(d);
    let nonce = Sha256Digest::of(format!("{d} {nonce}").as_bytes());
    let body = signed_checkin(&deployment, "1.0.0", Sha256Digest::of(b"c"), None, nonce, &key);
    let r =
        UpdateServiceClient::new(ch.clone()).check_in(pb::CheckInRequest { checkin: body }).await.unwrap().into_inner();
    let e = r.decision.unwrap();
    let decision = Decision::parse(Envelope::parse(&e.body).unwrap().payload()).unwrap();
    assert_eq!(decision.verdict, Verdict::Grant);
    decision.release.unwrap()
}

/// Downloads a whole release; returns the bytes received (hashing them if asked).
async fn download(ch: &tonic::transport::Channel, release: &Sha256Digest, hash: bool) -> u64 {
    let req = pb::DownloadRequest { release_digest: release.0.to_vec(), offset: 0 };
    let mut stream = UpdateServiceClient::new(ch.clone()).download(req).await.unwrap().into_inner();
    let mut hasher = sha2::Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = stream.message().await.unwrap() {
        if hash {
            hasher.update(&chunk.data);
        }
        n += chunk.data.len() as u64;
    }
    n
}

fn nginx_throughput(dir: &Path, artifact: &Path) -> Option<f64> {
    if Command::new("nginx").arg("-v").output().is_err() {
        println!("installing nginx-light with apt-get (the benchmark's peer)...");
        let _ = Command::new("apt-get").args(["install", "-y", "nginx-light"]).status();
        if Command::new("nginx").arg("-v").output().is_err() {
            let _ = Command::new("sh").args(["-c", "apt-get update && apt-get install -y nginx-light"]).status();
        }
    }
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    let ca = covenant_server::pki::Authority::create("bench").unwrap();
    let server = ca.issue_server(&["localhost", "127.0.0.1"]).unwrap();
    std::fs::write(prefix.join("cert.pem"), &server.cert_pem).unwrap();
    std::fs::write(prefix.join("key.pem"), &server.key_pem).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let conf = format!(
        "worker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log;\nevents {{ worker_connections 64; }}\n\
         http {{ access_log off; sendfile on; server {{ listen 127.0.0.1:{port} ssl; ssl_protocols TLSv1.3;\n\
         ssl_certificate {p}/cert.pem; ssl_certificate_key {p}/key.pem; root {root}; }} }}\n",
        p = prefix.display(),
        root = artifact.parent().unwrap().display()
    );
    std::fs::write(prefix.join("nginx.conf"), conf).unwrap();
    let mut child = Command::new("nginx")
        .args(["-p", &prefix.display().to_string(), "-c", &prefix.join("nginx.conf").display().to_string()])
        .args(["-g", "daemon off;"])
        .spawn()
        .ok()?;
    std::thread::sleep(Duration::from_millis(500));
    let url = format!("https://127.0.0.1:{port}/{}", artifact.file_name().unwrap().to_string_lossy());
    let mut best: Option<f64> = None;
    for _ in 0..2 {
        let out = Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", &url])
            .output();
        if let Ok(out) = out {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let mut parts = text.split_whitespace();
            if let (Some(Ok(size)), Some(Ok(secs))) =
                (parts.next().map(str::parse::<f64>), parts.next().map(str::parse::<f64>))
                && size > 0.0
            {
                let rate = size / secs / 1e6;
                best = Some(best.map_or(rate, |b: f64| b.max(rate)));
            }
        }
    }
    // TERM, not KILL: the master then stops its workers (a killed master
    // leaves a worker holding this process's stdout open).
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
    best
}

/// The server in this process: `--serve DIR --chunk N`; prints its address,
/// serves until stdin closes.
fn serve_here(dir: PathBuf, chunk: usize) {
    install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap());
        let stdin_closed = async {
            let _ = tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink())).await;
        };
        let mut config = ServeConfig::new(dir);
        config.download_chunk = chunk;
        run(config, listener, stdin_closed).await.unwrap();
    });
}

/// A server in its own process.
struct Child {
    process: std::process::Child,
    url: String,
}

impl Child {
    fn start(dir: &Path, chunk: usize) -> Child {
        use std::io::BufRead as _;
        let mut process = Command::new(std::env::current_exe().unwrap())
            .args(["--serve", &dir.display().to_string(), "--chunk", &chunk.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(process.stdout.take().unwrap()).read_line(&mut line).unwrap();
        Child { process, url: format!("https://{}", line.trim()) }
    }

    fn stop(mut self) {
        drop(self.process.stdin.take());
        let _ = self.process.wait();
    }
}

async fn channels(url: &str, folders: &[PathBuf]) -> Vec<tonic::transport::Channel> {
    // Agents: a 256 KiB window each (what is in flight to a device).
    let mut out = Vec::new();
    for f in folders {
        out.push(channel(url, f, 256 * 1024).await);
    }
    out
}

async fn grants(channels: &[tonic::transport::Channel], nonce: &str) -> Sha256Digest {
    let mut r = None;
    for (d, ch) in channels.iter().enumerate() {
        r = Some(grant(ch, d, nonce).await);
    }
    r.unwrap()
}

/// The server's RSS growth (MiB) while every channel downloads `release`.
fn rss_during(
    rt: &tokio::runtime::Runtime,
    pid: u32,
    channels: &[tonic::transport::Channel],
    release: Sha256Digest,
) -> u64 {
    rt.block_on(async {
        let before = rss_kib(pid);
        let peak = Arc::new(AtomicU64::new(before));
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak, done) = (peak.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        let mut tasks = Vec::new();
        for ch in channels {
            let ch = ch.clone();
            tasks.push(tokio::spawn(async move { download(&ch, &release, false).await }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        done.store(true, Ordering::Relaxed);
        sampler.join().unwrap();
        (peak.load(Ordering::Relaxed).saturating_sub(before)) / 1024
    })
}

/// A bulk client's rate (MB/s, best of two) downloading `release`.
async fn bulk_rate(url: &str, folder: &Path, release: &Sha256Digest, hash: bool) -> f64 {
    // A bulk client, as curl is: an 8 MiB window.
    let bulk = channel(url, folder, 8 << 20).await;
    let mut best = 0f64;
    for _ in 0..2 {
        let start = Instant::now();
        let n = download(&bulk, release, hash).await;
        best = best.max(n as f64 / start.elapsed().as_secs_f64() / 1e6);
    }
    best
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        return serve_here(PathBuf::from(&args[i + 1]), arg("--chunk", DOWNLOAD_CHUNK as u64) as usize);
    }
    let size_mib = arg("--size-mib", 1024);
    install_crypto_provider();
    let root: PathBuf = std::env::temp_dir().join(format!("covenant-download-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let dir = root.join("server");
    datadir::init_dev(&dir).unwrap();
    let folders = populate(&dir);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    // The 256 MiB release first (for the RSS comparison), then the big one;
    // the server is stopped to publish (the ledger has one owner).
    let publish_now = |version: &str, mib: u64| {
        let (ledger, _) = datadir::open_ledger(&dir).unwrap();
        let p = publish(&dir, &ledger, version, mib);
        ledger.close();
        p
    };
    publish_now("1.1.0", 256);
    let server = Child::start(&dir, DOWNLOAD_CHUNK);
    let chans = rt.block_on(channels(&server.url, &folders));
    let small = rt.block_on(grants(&chans, "small"));
    let rss_small = rss_during(&rt, server.process.id(), &chans, small);
    println!("(c) server RSS growth during {DEVICES} concurrent downloads of a 256 MiB artifact: {rss_small} MiB");
    drop(chans);
    server.stop();

    let big_path = publish_now("1.2.0", size_mib);
    let server = Child::start(&dir, DOWNLOAD_CHUNK);
    let chans = rt.block_on(channels(&server.url, &folders));
    let big = rt.block_on(grants(&chans, "big"));
    let (ours, hashed, agent) = rt.block_on(async {
        let ours = bulk_rate(&server.url, &folders[0], &big, false).await;
        let hashed = bulk_rate(&server.url, &folders[0], &big, true).await;
        let start = Instant::now();
        let n = download(&chans[1], &big, true).await;
        (ours, hashed, n as f64 / start.elapsed().as_secs_f64() / 1e6)
    });
    println!(
        "(a) {size_mib} MiB over the mTLS download stream, {} KiB chunks: {ours:.0} MB/s ({hashed:.0} MB/s hashing; \
         {agent:.0} MB/s hashing with an agent's 256 KiB window)",
        DOWNLOAD_CHUNK / 1024
    );
    match nginx_throughput(&root, &big_path) {
        Some(nginx) => println!(
            "(b) the same file from nginx over HTTPS with curl: {nginx:.0} MB/s; ours is {:.2}x (target >= 0.8x)",
            ours / nginx
        ),
        None => println!("(b) nginx could not be started; no comparison"),
    }
    let rss_big = rss_during(&rt, server.process.id(), &chans, big);
    println!(
        "(c) server RSS growth during {DEVICES} concurrent downloads of a {size_mib} MiB artifact: {rss_big} MiB \
         (256 MiB: {rss_small} MiB; target <= 64 MiB, flat)"
    );
    drop(chans);
    server.stop();

    println!("(d) chunk size (a bulk client, {size_mib} MiB, best of two):");
    for chunk in [64usize << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20] {
        let server = Child::start(&dir, chunk);
        let rate = rt.block_on(bulk_rate(&server.url, &folders[0], &big, false));
        println!(
            "    {:>5} KiB: {rate:>5.0} MB/s; after a voided grant at most {} KiB + the client's window",
            chunk / 1024,
            2 * chunk / 1024
        );
        server.stop();
    }
    drop(rt);
    let _ = std::fs::remove_dir_all(&root);
}
