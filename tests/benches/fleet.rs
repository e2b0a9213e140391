//! `covenant fleet` on a server with 10,000 deployments (issue #18): the
//! time `query::fleet` takes to fetch every page of ListDeployments from the
//! real server over mutual TLS as an admin and flag each row, the median of
//! several runs, against the target of under a second.
//!
//! The server's data directory is seeded before it serves, as the
//! check-ins benchmark does: 1,000 customers with 10 deployments each, each
//! device's key, a contract each (an attestation and a field verification
//! required, so every row computes its expiries) and release 1.1.0, signed
//! and appended straight to the ledger; then every deployment's check-in,
//! decided by the ledger's sequencer (a withhold with its reasons, nothing
//! being attested), so every row carries a standing decision. Then the
//! server opens it (folding every entry) and the timing uses the real
//! service.
//!
//! Beside the total it prints where the time goes: one page of 1,000 rows
//! (server row building, encoding and transfer), the same call filtered to
//! one customer (the server's walk over every deployment, ten rows sent),
//! and the client's flagging of the rows.
//!
//! `cargo bench -p covenant-tests --bench fleet [-- --runs N]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use covenant_cli::connect::Connection;
use covenant_cli::query::{self, FleetOptions};
use covenant_core::digest::{Sha256Digest, Timestamp};
use covenant_core::envelope::{self, Envelope};
use covenant_core::state::classify;
use covenant_core::statements::*;
use covenant_proto::v1 as pb;
use covenant_server::datadir;
use covenant_server::ledger::NewEntry;
use covenant_server::serve::{ServeConfig, install_crypto_provider, run};
use covenant_tests::device::{manifest, now, numbered_device, signed_checkin};
use covenant_tests::load::arg;
use tokio::net::TcpListener;

const CUSTOMERS: usize = 1_000;
const DEPLOYMENTS: usize = 10_000;

fn action(what: ActionKind) -> AdminAction {
    AdminAction {
        type_tag: ActionTag,
        schema: SchemaV1,
        action: what,
        why: "bench".into(),
        evidence: vec![],
        issued_at: now(),
    }
}

/// The customers, their deployments and contracts (each first contract
/// approved by the second admin), appended to the stopped server's ledger.
fn populate(dir: &Path) {
    let admin = datadir::read_key(&dir.join("identities/admin1/signing.key")).unwrap();
    let second = datadir::read_key(&dir.join("identities/admin2/signing.key")).unwrap();
    let sign = |what| envelope::sign(&action(what), &[&admin]);
    // Units of entries that must go in order; units go in parallel.
    let mut customers: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut contracts: Vec<Vec<Vec<u8>>> = Vec::new();
    for c in 0..CUSTOMERS {
        customers.push(vec![sign(ActionKind::RegisterCustomer {
            customer: format!("cust-{c}"),
            legal_name: format!("Ministry {c}"),
            country: "XA".into(),
        })]);
        let contract = Contract {
            id: format!("contract-{c}"),
            version: 1,
            customer: format!("cust-{c}"),
            deployments: vec![],
            conditions: vec![
                Condition::EndUseAttested { max_age_days: 365, allowed_end_uses: vec![] },
                Condition::FieldVerified { max_age_days: 90, methods: vec![] },
            ],
            grant_validity_seconds: 604_800,
            compliance_contact: "compliance@vendor.example".into(),
        };
        // A first contract waits for the second admin; it comes after the
        // deployments (one registered where a contract covers it at once
        // would wait for approval too).
        let proposal = sign(ActionKind::SetContract { contract });
        let digest = Sha256Digest::of(Envelope::parse(&proposal).unwrap().payload());
        contracts.push(vec![proposal, envelope::sign(&action(ActionKind::Approve { proposal: digest }), &[&second])]);
    }
    let deployments: Vec<Vec<Vec<u8>>> = (0..DEPLOYMENTS)
        .map(|d| {
            vec![
                sign(ActionKind::RegisterDeployment {
                    deployment: numbered_device(d).0,
                    customer: format!("cust-{}", d % CUSTOMERS),
                    product: "lim".into(),
                    site: Site { country: "XA".into(), site_id: "s1".into() },
                    provisioned_version: "1.0.0".parse().unwrap(),
                }),
                // The device's key, so that it can check in (no certificate:
                // its check-in is decided below, not over the wire).
                sign(ActionKind::IssueIdentity {
                    role: IdentityRole::Deployment,
                    subject: numbered_device(d).0,
                    signing_key: numbered_device(d).1.public(),
                    certificate_sha256: Sha256Digest::of(format!("certificate of {d}").as_bytes()),
                    scope: None,
                }),
            ]
        })
        .collect();
    // Release 1.1.0, which every deployment is then withheld (nothing is
    // attested): each row carries a standing decision and its reasons.
    let release = {
        let bytes = b"image 1.1.0";
        let m = manifest("1.1.0", "lim-1.1.0", Sha256Digest::of(bytes), bytes.len() as u64);
        let k1 = datadir::read_key(&dir.join("keys/release-1.key")).unwrap();
        let k2 = datadir::read_key(&dir.join("keys/release-2.key")).unwrap();
        vec![vec![envelope::sign(&m, &[&k1, &k2])]]
    };
    let (ledger, registry) = datadir::open_ledger(dir).unwrap();
    let ledger = Arc::new(ledger);
    for units in [&customers, &deployments, &contracts, &release] {
        std::thread::scope(|s| {
            for part in units.chunks(units.len().div_ceil(32)) {
                let ledger = ledger.clone();
                s.spawn(move || {
                    for body in part.iter().flatten() {
                        let p = classify(body).unwrap();
                        let e = NewEntry { kind: p.kind, actor: p.actor, subjects: p.subjects, body: body.clone() };
                        ledger.append_blocking(e).unwrap();
                    }
                });
            }
        });
    }
    // Every deployment checks in once, decided by the sequencer as the
    // server decides a check-in (verified against the state first).
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for d in 0..DEPLOYMENTS {
            let (deployment, key) = numbered_device(d);
            let nonce = Sha256Digest::of(format!("{d}").as_bytes());
            let body = signed_checkin(&deployment, "1.0.0", Sha256Digest::of(b"config"), None, nonce, &key);
            let signed = registry.state.read().unwrap().verify_checkin(&body).unwrap();
            let ledger = ledger.clone();
            tasks.spawn(async move { ledger.decide(signed).await.unwrap() });
            // A bounded number in flight.
            while tasks.len() >= 512 {
                tasks.join_next().await.unwrap().unwrap();
            }
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    });
    drop(rt);
    Arc::try_unwrap(ledger).map_err(|_| "shared").unwrap().close();
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let runs = arg("--runs", 7).max(1) as usize;
    install_crypto_provider();
    let root = std::env::temp_dir().join(format!("covenant-fleet-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let dir = root.join("server");
    datadir::init_dev(&dir).unwrap();
    let built = Instant::now();
    populate(&dir);
    println!(
        "registered {CUSTOMERS} customers, {DEPLOYMENTS} deployments, their keys and contracts, and decided a \
         check-in of each in {:.1} s",
        built.elapsed().as_secs_f64()
    );
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let opened = Instant::now();
        let server = tokio::spawn(run(ServeConfig::new(&dir), listener, async {
            let _ = stopped.await;
        }));
        let conn = Connection { server: Some(url), identity: Some(dir.join("identities/admin1")) };
        // The server answers once it has folded the ledger: wait (bounded).
        let deadline = Instant::now() + Duration::from_secs(300);
        let (mut client, first) = loop {
            let answer = async {
                let mut client = query::client(&conn).await?;
                let fleet = query::fleet(&mut client, None, FleetOptions::default()).await?;
                anyhow::Ok((client, fleet))
            };
            match answer.await {
                Ok(up) => break up,
                Err(e) if Instant::now() > deadline => panic!("the server did not answer: {e:#}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        assert_eq!(first.deployments.len(), DEPLOYMENTS);
        assert!(
            first.deployments.iter().all(|d| d.verdict == "withhold" && d.unmet.len() == 2),
            "{:?}",
            first.deployments[0]
        );
        println!("server open and first fleet in {:.1} s", opened.elapsed().as_secs_f64());

        // The whole command's work: every page, every row flagged.
        let mut totals = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let fleet = query::fleet(&mut client, None, FleetOptions::default()).await.unwrap();
            totals.push(t.elapsed());
            assert_eq!(fleet.deployments.len(), DEPLOYMENTS);
        }
        let total = median(totals);

        // Where it goes: one full page; one customer's ten rows (the
        // server still walks every deployment); the client's flagging.
        let mut page = Vec::new();
        let mut filtered = Vec::new();
        let mut flagging = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let rows = client
                .list_deployments(pb::ListDeploymentsRequest {
                    customer: String::new(),
                    page_token: String::new(),
                    page_size: 1_000,
                })
                .await
                .unwrap()
                .into_inner();
            page.push(t.elapsed());
            assert_eq!(rows.deployments.len(), 1_000);
            let t = Instant::now();
            let one = client
                .list_deployments(pb::ListDeploymentsRequest {
                    customer: "cust-999".into(),
                    page_token: String::new(),
                    page_size: 1_000,
                })
                .await
                .unwrap()
                .into_inner();
            filtered.push(t.elapsed());
            assert_eq!(one.deployments.len(), DEPLOYMENTS / CUSTOMERS);
            let at = Timestamp::parse_rfc3339(&rows.now).unwrap();
            let t = Instant::now();
            let flagged: Vec<_> =
                rows.deployments.into_iter().map(|r| query::fleet_row(r, at, &FleetOptions::default())).collect();
            flagging.push(t.elapsed() * (DEPLOYMENTS / 1_000) as u32);
            assert_eq!(flagged.len(), 1_000);
        }
        println!(
            "covenant fleet ({DEPLOYMENTS} deployments, {} pages, admin over mTLS): median {:.0} ms of {runs} runs \
             (target < 1000 ms: {})",
            DEPLOYMENTS / 1_000,
            ms(total),
            if total < Duration::from_secs(1) { "met" } else { "MISSED" }
        );
        println!(
            "  one page of 1,000 rows: {:.1} ms; one customer's 10 rows (the server walks all {DEPLOYMENTS}): \
             {:.1} ms; flagging {DEPLOYMENTS} rows in the client: {:.1} ms",
            ms(median(page)),
            ms(median(filtered)),
            ms(median(flagging))
        );
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    });
    let _ = std::fs::remove_dir_all(&root);
}
