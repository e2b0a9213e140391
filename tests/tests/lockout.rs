//! Review finding (issue 16): idle connections that never started their TLS
//! handshake, from 17 addresses at the per-address cap of 512 each, filled
//! the server's global cap of 8,192 and locked every device out. Now
//! unauthenticated connections have a smaller budget of their own, and a
//! new connection evicts the oldest of them: a device still gets through
//! and checks in. The numbers are scaled down with `ServeConfig`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use covenant_tests::*;

/// A TCP connection to the server from loopback address `source` that sends
/// nothing (Linux routes all of 127.0.0.0/8 to loopback).
async fn idle_connection(s: &Running, source: [u8; 4]) -> tokio::net::TcpStream {
    let server: std::net::SocketAddr = s.url.trim_start_matches("https://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::from((source, 0))).unwrap();
    socket.connect(server).await.unwrap()
}

/// Whether the server closed `stream` (EOF or reset) within `limit`.
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 64];
    matches!(tokio::time::timeout(limit, stream.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_without_a_handshake_cannot_lock_out_a_device() {
    const CAP: usize = 64;
    const UNAUTHENTICATED: usize = 16;
    const PER_ADDRESS: usize = 8;
    let s = Running::start_configured("lockout", false, |config| {
        config.max_connections = CAP;
        config.max_unauthenticated = UNAUTHENTICATED;
        config.unauthenticated_per_peer = PER_ADDRESS;
    })
    .await;
    let c = cast(&s).await;
    let standing = check_in(&s, &c.device, "before").await.decision.unwrap().index;

    // The attack: 17 addresses, each at its cap of idle connections: more
    // than the whole connection cap.
    let mut idle = Vec::new();
    for address in 2..19u8 {
        for _ in 0..PER_ADDRESS {
            idle.push(idle_connection(&s, [127, 0, 0, address]).await);
        }
    }
    assert!(idle.len() > CAP);
    // The server keeps only the newest of them, within the budget.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut open = 0;
    for stream in &mut idle {
        if !closed_within(stream, Duration::from_millis(20)).await {
            open += 1;
        }
    }
    println!("{} idle connections opened, {open} still open", idle.len());
    assert!(open <= UNAUTHENTICATED, "{open} idle connections held, over the budget of {UNAUTHENTICATED}");

    // Refill the budget with fresh idle connections, then a device connects
    // (evicting the oldest) and checks in, on a new connection each time.
    for address in 2..19u8 {
        idle.push(idle_connection(&s, [127, 0, 0, address]).await);
    }
    for round in 0..3 {
        let answer = check_in(&s, &c.device, &format!("during {round}")).await;
        assert_eq!(answer.decision.unwrap().index, standing, "the device is answered as before");
    }
    s.stop().await;
}

/// Review finding: under `ulimit -n 1024` the connection cap was the limit
/// less a flat 1,024 reserved, floored at 1, and the server served no one.
/// The real binary, started under that limit (soft and hard), now keeps a
/// quarter of it and serves its clients; under a limit too low to serve 64
/// connections it refuses to start and names `ulimit -n`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_started_under_ulimit_n_1024_still_serves_its_clients() {
    use std::io::BufRead as _;
    let dir = std::env::temp_dir().join(format!("covenant-ulimit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    tokio::task::block_in_place(|| covenant_server::datadir::init_dev(&dir)).unwrap();
    let server = binary("covenant-server");
    let under = |limit: u32| {
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg(format!(r#"ulimit -n {limit} && exec "$0" serve --data "$1" --listen 127.0.0.1:0"#))
            .arg(&server)
            .arg(&dir)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        cmd
    };

    let refused = under(80).output().unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "started under ulimit -n 80: {said}");
    assert!(said.contains("open-files limit is 80 (`ulimit -n`)"), "{said}");

    let mut child = under(1024).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut address, mut cap) = (None, None);
    // Bounded: the server prints its address and its caps as it starts.
    for line in lines.by_ref().take(50) {
        let line = plain(&line.unwrap());
        if let Some(rest) = line.strip_prefix("Serving ") {
            address = rest.split(" on ").nth(1).and_then(|a| a.split(' ').next()).map(str::to_owned);
        }
        if line.contains("max_connections=") {
            cap = Some(line);
            break;
        }
    }
    let address = address.expect("the server printed its address");
    let cap = cap.expect("the server logged its connection cap");
    assert!(cap.contains("max_connections=768") && cap.contains("unauthenticated=192"), "{cap}");
    let admin = covenant_cli::connect::Connection {
        server: Some(format!("https://{address}")),
        identity: Some(dir.join("identities/admin1")),
    };
    let mut client =
        covenant_proto::v1::ledger_service_client::LedgerServiceClient::new(admin.channel().await.unwrap());
    client.get_checkpoint(covenant_proto::v1::GetCheckpointRequest {}).await.expect("served under ulimit -n 1024");
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `line` without terminal colour sequences (`ESC [ ... m`).
fn plain(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
