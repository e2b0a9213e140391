//! What the benchmarks share: their command-line flags and the ceiling they
//! measure every other rate against.

use std::time::{Duration, Instant};

use covenant_proto::v1 as pb;
use covenant_proto::v1::ledger_service_client::LedgerServiceClient;
use tonic::transport::Channel;

/// The value of the flag `name` (`--seconds 5`) on the command line, or
/// `default` when it is absent or not a number.
pub fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The ceiling: empty unary calls (`GetCheckpoint`) per second, each of
/// `callers` calling in a loop for `seconds` on the channels in turn.
pub async fn checkpoint_calls_per_second(channels: &[Channel], callers: usize, seconds: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..callers {
        let mut client = LedgerServiceClient::new(channels[c % channels.len()].clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                client.get_checkpoint(pb::GetCheckpointRequest {}).await.unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut calls = 0;
    for t in tasks {
        calls += t.await.unwrap();
    }
    calls as f64 / start.elapsed().as_secs_f64()
}
