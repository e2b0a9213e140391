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
