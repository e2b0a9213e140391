//! Operations (issue #21): the standard gRPC health check and server
//! reflection. A client with no generated code (`tests/python/
//! reflect_health.py`, Python with `grpcio-reflection`) lists the services
//! through reflection and calls the health check with the types the server
//! described; a health watcher sees the server stop serving, and the stop
//! does not wait on its open stream.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use covenant_server::serve::{SERVICES, STANDARD_SERVICES};
use covenant_tests::*;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_no_generated_code_lists_the_services_and_calls_the_health_check() {
    let s = Running::start("operations-reflection").await;
    let script = workspace().join("tests/python/reflect_health.py");
    let identity = s.dir.join("identities/auditor");
    let mut args = vec![script.display().to_string(), s.url.clone(), identity.display().to_string()];
    args.extend(SERVICES.iter().map(|s| (*s).to_owned()));
    args.push("covenant.v1.NoSuchService".into());
    let out = tokio::task::spawn_blocking(move || std::process::Command::new(python()).args(&args).output().unwrap())
        .await
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "reflect_health.py failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let answer: serde_json::Value = serde_json::from_str(&stdout).unwrap();

    // Reflection lists exactly what the server serves.
    let mut want: Vec<&str> = SERVICES.to_vec();
    want.extend(STANDARD_SERVICES);
    want.sort_unstable();
    let listed: Vec<&str> = answer["services"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(listed, want, "{answer}");
    // Every service, and the server as a whole, is serving; an unknown one is not found.
    for name in SERVICES.iter().chain([&""]) {
        assert_eq!(answer["health"][name], "SERVING", "{name}: {answer}");
    }
    assert_eq!(answer["health"]["covenant.v1.NoSuchService"], "error NOT_FOUND", "{answer}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_watcher_sees_the_server_stop_serving_and_does_not_hold_the_stop() {
    let s = Running::start("operations-health-stop").await;
    let channel = s.admin(1).channel().await.unwrap();
    let request = HealthCheckRequest { service: "covenant.v1.UpdateService".into() };
    let mut watch = HealthClient::new(channel).watch(request).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    // The stop ends within the bound although the watch is open.
    tokio::time::timeout(Duration::from_secs(30), s.stop()).await.expect("the stop waited on an open health watch");
    let mut seen = vec![];
    while let Ok(Some(m)) = watch.message().await {
        seen.push(m.status);
    }
    assert_eq!(seen, [ServingStatus::NotServing as i32], "the watch's last word is NOT_SERVING, then it ends");
}

/// The health check and reflection name every `covenant.v1` service this
/// server runs, and only those (WitnessService is the witnesses').
#[test]
fn the_served_services_are_the_protos_but_the_witnesses() {
    let proto = include_str!("../../proto/proto/covenant/v1/covenant.proto");
    let mut in_proto: Vec<String> = proto
        .lines()
        .filter_map(|l| l.trim().strip_prefix("service "))
        .map(|rest| format!("covenant.v1.{}", rest.split_whitespace().next().unwrap()))
        .filter(|s| s != "covenant.v1.WitnessService")
        .collect();
    in_proto.sort();
    let mut served: Vec<String> = SERVICES.iter().map(|s| (*s).to_owned()).collect();
    served.sort();
    assert_eq!(served, in_proto);
}

/// `serve --log-format json`: every line on standard output is one JSON
/// object, and a refused call is logged once, with its RPC, code and
/// cause, and nothing of what the caller sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_logged_once_as_json_without_the_request() {
    use std::io::BufRead as _;
    let dir = std::env::temp_dir().join(format!("covenant-json-log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    tokio::task::block_in_place(|| covenant_server::datadir::init_dev(&dir)).unwrap();
    let mut child = std::process::Command::new(binary("covenant-server"))
        .args(["serve", "--listen", "127.0.0.1:0", "--metrics", "off", "--log-format", "json", "--data"])
        .arg(&dir)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut address = None;
    // Bounded: the server logs its address as it starts.
    for line in lines.by_ref().take(50) {
        let line = line.unwrap();
        let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if event["fields"]["message"] == "listening" {
            address = event["fields"]["address"].as_str().map(str::to_owned);
            break;
        }
        seen.push(event);
    }
    let address = address.expect("the server logged its address");
    let auditor = covenant_cli::connect::Connection {
        server: Some(format!("https://{address}")),
        identity: Some(dir.join("identities/auditor")),
    };
    let mut updates =
        covenant_proto::v1::update_service_client::UpdateServiceClient::new(auditor.channel().await.unwrap());
    let sent = b"PRIVATE-REQUEST-BYTES".to_vec();
    let refused = updates.check_in(covenant_proto::v1::CheckInRequest { checkin: sent }).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    // A call that succeeds is not a refusal.
    let mut health = HealthClient::new(auditor.channel().await.unwrap());
    health.check(HealthCheckRequest { service: String::new() }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    for line in lines {
        let line = line.unwrap();
        seen.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")));
    }
    let refusals: Vec<&serde_json::Value> = seen.iter().filter(|e| e["target"] == "covenant::refusal").collect();
    assert_eq!(refusals.len(), 1, "one refusal, logged once: {refusals:?}");
    let fields = &refusals[0]["fields"];
    assert_eq!(fields["rpc"], "/covenant.v1.UpdateService/CheckIn", "{fields}");
    assert_eq!(fields["code"], "PermissionDenied", "{fields}");
    assert!(fields["cause"].as_str().is_some_and(|c| !c.is_empty()), "{fields}");
    assert_eq!(refusals[0]["level"], "INFO");
    let all = seen.iter().map(|e| e.to_string()).collect::<String>();
    assert!(!all.contains("PRIVATE-REQUEST-BYTES"), "the log holds what the caller sent");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A caller's text cannot forge a line of the text log: an id with a
/// newline and a fake log line in it is neither echoed nor written raw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_text_cannot_forge_a_log_line() {
    use std::io::BufRead as _;
    let dir = std::env::temp_dir().join(format!("covenant-text-log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    tokio::task::block_in_place(|| covenant_server::datadir::init_dev(&dir)).unwrap();
    let mut child = std::process::Command::new(binary("covenant-server"))
        .args(["serve", "--listen", "127.0.0.1:0", "--metrics", "off", "--data"])
        .arg(&dir)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let address = first.split(" on ").nth(1).and_then(|a| a.split(' ').next()).unwrap().to_owned();
    let admin = covenant_cli::connect::Connection {
        server: Some(format!("https://{address}")),
        identity: Some(dir.join("identities/admin1")),
    };
    let mut query = covenant_proto::v1::query_service_client::QueryServiceClient::new(admin.channel().await.unwrap());
    let forged = "nobody\n2026-12-04T00:00:00Z  INFO covenant::refusal: FORGED";
    let request = covenant_proto::v1::GetHistoryRequest { subject: forged.into(), ..Default::default() };
    let refused = query.get_history(request).await.unwrap_err();
    assert!(!refused.message().contains("FORGED"), "the caller's text is echoed: {}", refused.message());
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let log: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert!(log.iter().any(|l| l.contains("covenant::refusal")), "the refusal is logged: {log:?}");
    assert!(!log.iter().any(|l| l.contains("FORGED")), "a caller's text reached the log: {log:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
