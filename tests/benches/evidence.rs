//! The evidence pack over a large ledger (issue #19): `covenant audit
//! export --all` and `covenant audit verify-export` of its pack, each run as
//! the real `covenant` binary (release build) in a child process under
//! `/usr/bin/time -v`, which gives its wall time and its peak RSS (maximum
//! resident set size). Targets: each under 60 s for 1,000,000 entries on
//! this machine, and peak RSS flat in the ledger's size. One line per size,
//! side by side, so that flatness shows.
//!
//! For each size N the server's data directory is seeded before it serves,
//! as the fleet and check-ins benchmarks do, straight through the ledger
//! (the sequencer validates and folds every entry; decisions are made by
//! its `decide`, as the server decides a check-in), with a mix like a real
//! ledger's: N/1,000 customers, each with an operator identity, 10
//! deployments with their device keys, a contract (proposed and approved by
//! the second admin; one customer in ten requires an attestation it never
//! gives, so its deployments are withheld), an end-use attestation and a
//! field verification per deployment by an engineer; then rounds, each a
//! new release that every deployment checks in for (a grant, or a withhold
//! once) and reports installing, until the ledger holds N entries. So the
//! bulk is grants and install reports, as in a real ledger. Seeding prints
//! its progress; 1,000,000 entries take several minutes. Then the server
//! opens the ledger and serves it over mutual TLS, and the admin exports
//! `--all` and verifies the pack.
//!
//! `cargo bench -p covenant-tests --bench evidence [-- --sizes 100000,300000,1000000] [--entries N]
//!  [--data DIR] [--exe PATH] [--keep-packs]`
//!
//! `--entries N` runs one size (default 1,000,000); `--sizes` several.
//! `--data DIR` keeps the seeded data directories in DIR (one per size) and
//! reuses them on the next run (a seeded ledger is reused only if complete);
//! without it they go in a temporary folder, removed at the end. The packs
//! are removed after each size (a 1,000,000-entry pack is a few GB).
//! `--exe PATH` measures that `covenant` binary instead of building this
//! tree's (to compare commits on the same seeded ledgers). `--keep-packs`
//! keeps the packs (in the data folder), to profile a verification.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use covenant_cli::attest::AttestationFile;
use covenant_cli::connect::Connection;
use covenant_core::digest::Sha256Digest;
use covenant_core::envelope::{self, Envelope};
use covenant_core::keys::SigningKey;
use covenant_core::state::classify;
use covenant_core::statements::*;
use covenant_server::datadir;
use covenant_server::ledger::{AppendError, NewEntry};
use covenant_server::serve::{ServeConfig, install_crypto_provider, run};
use covenant_tests::binary_in;
use covenant_tests::device::{manifest, now, numbered_device, signed_checkin};
use tokio::net::TcpListener;

/// Deployments per customer.
const PER_CUSTOMER: usize = 10;

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

fn person_key(what: &str, c: usize) -> SigningKey {
    SigningKey::from_seed(Sha256Digest::of(format!("{what} {c}").as_bytes()).as_bytes())
}

fn identity(role: IdentityRole, subject: String, key: &SigningKey) -> ActionKind {
    ActionKind::IssueIdentity {
        role,
        certificate_sha256: Sha256Digest::of(format!("certificate of {subject}").as_bytes()),
        subject,
        signing_key: key.public(),
        scope: None,
    }
}

/// Customer `c`'s end-use attestation for its deployments, signed by its operator.
fn attestation(c: usize, deployments: Vec<String>) -> Vec<u8> {
    let text = covenant_cli::demo::attestation(&format!("cust-{c}"), "x", "2099-01-01T00:00:00Z");
    let file: AttestationFile = toml::from_str(&text).unwrap();
    let statement = InTotoStatement::new(deployments.iter().map(|d| deployment_subject(d)).collect(), file.attestation);
    envelope::sign(&statement, &[&person_key("operator", c)])
}

/// A passing on-site verification of `attestation` at `deployment`, by customer `c`'s engineer.
fn verification(c: usize, attestation: &[u8], deployment: &str) -> Vec<u8> {
    let att = Sha256Digest::of(Envelope::parse(attestation).unwrap().payload());
    let statement = InTotoStatement::new(
        vec![
            Subject { name: format!("{ATTESTATION_SUBJECT_PREFIX}{att}"), digest: SubjectDigest { sha256: att } },
            deployment_subject(deployment),
        ],
        FieldVerification {
            attestation: att,
            deployment: deployment.into(),
            method: VerificationMethod::OnSite,
            observed_site: Site { country: "XA".into(), site_id: "s1".into() },
            observed_configuration_digest: Sha256Digest::of(b"config"),
            result: VerificationResult::Pass,
            findings: String::new(),
            date: now(),
        },
    );
    envelope::sign(&statement, &[&person_key("engineer", c)])
}

fn version(k: usize) -> String {
    format!("1.{k}.0")
}

/// Seeds the stopped server in `dir` with about `entries` entries (see the
/// module comment); returns the ledger's size.
fn populate(dir: &Path, entries: u64) -> u64 {
    let started = Instant::now();
    let deployments = usize::try_from(entries / 100).unwrap().clamp(PER_CUSTOMER, 10_000);
    let customers = deployments / PER_CUSTOMER;
    let admin = datadir::read_key(&dir.join("identities/admin1/signing.key")).unwrap();
    let second = datadir::read_key(&dir.join("identities/admin2/signing.key")).unwrap();
    let sign = |what| envelope::sign(&action(what), &[&admin]);
    let deps_of = |c: usize| (0..PER_CUSTOMER).map(|i| numbered_device(c * PER_CUSTOMER + i).0).collect::<Vec<_>>();
    // Units of entries that must go in order; units go in parallel.
    let mut phases: Vec<Vec<Vec<Vec<u8>>>> = vec![Vec::new(); 5];
    for c in 0..customers {
        // A customer's and an engineer's key need the second admin's approval.
        let approved = |what| {
            let proposal = sign(what);
            let digest = Sha256Digest::of(Envelope::parse(&proposal).unwrap().payload());
            [proposal, envelope::sign(&action(ActionKind::Approve { proposal: digest }), &[&second])]
        };
        let mut unit = vec![sign(ActionKind::RegisterCustomer {
            customer: format!("cust-{c}"),
            legal_name: format!("Ministry {c}"),
            country: "XA".into(),
        })];
        unit.extend(approved(identity(IdentityRole::Customer, format!("cust-{c}"), &person_key("operator", c))));
        unit.extend(approved(identity(IdentityRole::Engineer, format!("eng-{c}"), &person_key("engineer", c))));
        phases[0].push(unit);
        // One customer in ten must attest, and never does: its deployments
        // are withheld.
        let conditions = if c % 10 == 9 {
            vec![Condition::EndUseAttested { max_age_days: 365, allowed_end_uses: vec![] }]
        } else {
            vec![]
        };
        let contract = Contract {
            id: format!("contract-{c}"),
            version: 1,
            customer: format!("cust-{c}"),
            deployments: vec![],
            conditions,
            grant_validity_seconds: 604_800,
            compliance_contact: "compliance@vendor.example".into(),
        };
        let proposal = sign(ActionKind::SetContract { contract });
        let digest = Sha256Digest::of(Envelope::parse(&proposal).unwrap().payload());
        phases[2].push(vec![proposal, envelope::sign(&action(ActionKind::Approve { proposal: digest }), &[&second])]);
        if c % 10 != 9 {
            let att = attestation(c, deps_of(c));
            phases[4].extend(deps_of(c).iter().map(|d| vec![verification(c, &att, d)]));
            phases[3].push(vec![att]);
        }
    }
    for d in 0..deployments {
        let (id, key) = numbered_device(d);
        phases[1].push(vec![
            sign(ActionKind::RegisterDeployment {
                deployment: id.clone(),
                customer: format!("cust-{}", d / PER_CUSTOMER),
                product: "lim".into(),
                site: Site { country: "XA".into(), site_id: "s1".into() },
                provisioned_version: "1.0.0".parse().unwrap(),
            }),
            sign(identity(IdentityRole::Deployment, id, &key)),
        ]);
    }
    let (ledger, registry) = datadir::open_ledger(dir).unwrap();
    let ledger = Arc::new(ledger);
    for units in &phases {
        std::thread::scope(|s| {
            for part in units.chunks(units.len().div_ceil(32).max(1)) {
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
    println!(
        "  {customers} customers, {deployments} deployments, their keys, contracts, attestations and verifications: \
         {} entries in {:.1} s",
        ledger.checkpoint().size,
        started.elapsed().as_secs_f64()
    );
    // Rounds: a release, then every deployment checks in (a grant, or a
    // withhold the first time) and reports installing what it was granted.
    let k1 = datadir::read_key(&dir.join("keys/release-1.key")).unwrap();
    let k2 = datadir::read_key(&dir.join("keys/release-2.key")).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut installed = vec![0usize; deployments];
    let mut round = 0;
    while ledger.checkpoint().size < entries {
        round += 1;
        let bytes = format!("image {round}");
        let m = manifest(
            &version(round),
            &format!("lim-{}", version(round)),
            Sha256Digest::of(bytes.as_bytes()),
            bytes.len() as u64,
        );
        let body = envelope::sign(&m, &[&k1, &k2]);
        let p = classify(&body).unwrap();
        ledger.append_blocking(NewEntry { kind: p.kind, actor: p.actor, subjects: p.subjects, body }).unwrap();
        let upgraded: Vec<(usize, bool)> = rt.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            let mut out = Vec::new();
            for (d, &at) in installed.iter().enumerate() {
                let ledger = ledger.clone();
                let registry = registry.clone();
                tasks.spawn(async move {
                    let (deployment, key) = numbered_device(d);
                    let nonce = Sha256Digest::of(format!("{d} {round}").as_bytes());
                    let body =
                        signed_checkin(&deployment, &version(at), Sha256Digest::of(b"config"), None, nonce, &key);
                    let signed = registry.state.read().unwrap().verify_checkin(&body).unwrap();
                    let grant = match ledger.decide(signed).await {
                        Ok(a) => a,
                        Err(AppendError::Nothing(_)) => return (d, false),
                        Err(e) => panic!("deciding {deployment}'s check-in: {e}"),
                    };
                    let kind = covenant_core::ledger::EntryHeader::parse(&grant.header).unwrap().kind;
                    if kind == covenant_core::ledger::EntryKind::Withhold {
                        return (d, false);
                    }
                    let checkpoint = grant.checkpoint.clone();
                    let r = InstallReport {
                        type_tag: ReportTag,
                        schema: SchemaV1,
                        deployment: deployment.clone(),
                        grant_index: grant.index,
                        outcome: InstallOutcome::Installed,
                        from_version: version(at).parse().unwrap(),
                        to_version: version(round).parse().unwrap(),
                        last_checkpoint: CheckpointRef {
                            size: checkpoint.size,
                            root_hash: Sha256Digest(checkpoint.root),
                        },
                        time: now(),
                    };
                    let body = envelope::sign(&r, &[&key]);
                    let p = classify(&body).unwrap();
                    let e = NewEntry { kind: p.kind, actor: p.actor, subjects: p.subjects, body };
                    ledger.append(e).await.unwrap();
                    (d, true)
                });
                // A bounded number in flight.
                while tasks.len() >= 512 {
                    out.push(tasks.join_next().await.unwrap().unwrap());
                }
            }
            while let Some(done) = tasks.join_next().await {
                out.push(done.unwrap());
            }
            out
        });
        for (d, up) in upgraded {
            if up {
                installed[d] = round;
            }
        }
        println!(
            "  round {round}: release {}, check-ins and install reports; the ledger holds {} entries ({:.0} s)",
            version(round),
            ledger.checkpoint().size,
            started.elapsed().as_secs_f64()
        );
    }
    drop(rt);
    let size = ledger.checkpoint().size;
    Arc::try_unwrap(ledger).map_err(|_| "shared").unwrap().close();
    size
}

/// A command's wall time and peak RSS, from `/usr/bin/time -v`.
struct Measured {
    seconds: f64,
    peak_kib: u64,
    stdout: String,
}

fn measured(exe: &Path, args: &[&str], env: &[(&str, &Path)]) -> Measured {
    let start = Instant::now();
    let mut cmd = std::process::Command::new("/usr/bin/time");
    cmd.arg("-v").arg(exe).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let seconds = start.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{} {args:?} failed:\n{stderr}", exe.display());
    let peak_kib = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .and_then(|v| v.trim().parse().ok())
        .expect("/usr/bin/time -v reports the maximum resident set size");
    Measured { seconds, peak_kib, stdout: String::from_utf8_lossy(&out.stdout).trim().to_owned() }
}

fn sizes() -> Vec<u64> {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    if let Some(list) = value("--sizes") {
        return list.split(',').map(|s| s.trim().replace('_', "").parse().expect("--sizes N,N,N")).collect();
    }
    vec![value("--entries").map(|v| v.replace('_', "").parse().expect("--entries N")).unwrap_or(1_000_000)]
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Seeds (or reuses) the data directory for `n` entries under `root`.
fn seeded(root: &Path, n: u64) -> PathBuf {
    let dir = root.join(format!("ledger-{n}"));
    let marker = dir.join("bench-seeded");
    if marker.exists() {
        println!("reusing the seeded ledger in {}", dir.display());
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    datadir::init_dev(&dir).unwrap();
    println!("seeding about {n} entries in {}", dir.display());
    let t = Instant::now();
    let size = populate(&dir, n);
    println!("seeded {size} entries in {:.0} s", t.elapsed().as_secs_f64());
    std::fs::write(&marker, size.to_string()).unwrap();
    dir
}

fn main() {
    install_crypto_provider();
    let sizes = sizes();
    let args: Vec<String> = std::env::args().collect();
    let kept = args.iter().position(|a| a == "--data").and_then(|i| args.get(i + 1)).map(PathBuf::from);
    let root = kept
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("covenant-evidence-bench-{}", std::process::id())));
    std::fs::create_dir_all(&root).unwrap();
    // `--exe PATH` measures a given build of `covenant` (another commit's).
    let exe = args
        .iter()
        .position(|a| a == "--exe")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(|| binary_in("covenant", "release"));
    let keep_packs = args.iter().any(|a| a == "--keep-packs");
    let mut rows = Vec::new();
    for &n in &sizes {
        let dir = seeded(&root, n);
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        let row = rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("https://{}", listener.local_addr().unwrap());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let opened = Instant::now();
            let server = tokio::spawn(run(ServeConfig::new(&dir), listener, async {
                let _ = stopped.await;
            }));
            let identity = dir.join("identities/admin1");
            let conn = Connection { server: Some(url.clone()), identity: Some(identity.clone()) };
            // The server answers once it has folded the ledger: wait (bounded).
            let deadline = Instant::now() + Duration::from_secs(900);
            let size = loop {
                let answer = async {
                    let mut c =
                        covenant_proto::v1::ledger_service_client::LedgerServiceClient::new(conn.channel().await?);
                    let cp = c.get_checkpoint(covenant_proto::v1::GetCheckpointRequest {}).await?.into_inner();
                    anyhow::Ok(cp.note)
                };
                match answer.await {
                    Ok(note) => {
                        let text = String::from_utf8_lossy(&note).into_owned();
                        break text.lines().nth(1).and_then(|l| l.parse::<u64>().ok()).unwrap_or(0);
                    }
                    Err(e) if Instant::now() > deadline => panic!("the server did not answer: {e:#}"),
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            };
            println!("server open on {size} entries in {:.1} s", opened.elapsed().as_secs_f64());
            let pack = root.join(format!("pack-{n}"));
            let _ = std::fs::remove_dir_all(&pack);
            let server_url = PathBuf::from(&url);
            let env = [("COVENANT_SERVER", server_url.as_path()), ("COVENANT_IDENTITY", identity.as_path())];
            let pack_arg = pack.display().to_string();
            let export = tokio::task::block_in_place(|| {
                measured(&exe, &["--json", "audit", "export", "--all", "--out", &pack_arg], &env)
            });
            println!("export: {:.1} s, peak RSS {:.1} MiB: {}", export.seconds, mib(export.peak_kib), export.stdout);
            let bytes: u64 = std::fs::read_dir(&pack).unwrap().map(|f| f.unwrap().metadata().unwrap().len()).sum();
            let verify =
                tokio::task::block_in_place(|| measured(&exe, &["--json", "audit", "verify-export", &pack_arg], &env));
            println!("verify-export: {:.1} s, peak RSS {:.1} MiB", verify.seconds, mib(verify.peak_kib));
            if !keep_packs {
                let _ = std::fs::remove_dir_all(&pack);
            }
            let _ = stop.send(());
            server.await.unwrap().unwrap();
            (size, export, verify, bytes)
        });
        rows.push(row);
    }
    println!();
    println!("evidence pack --all (targets: export and verify each < 60 s at 1,000,000 entries; peak RSS flat)");
    println!(
        "{:>10}  {:>9}  {:>12}  {:>9}  {:>12}  {:>10}",
        "entries", "export s", "export MiB", "verify s", "verify MiB", "pack MB"
    );
    for (size, e, v, bytes) in &rows {
        println!(
            "{size:>10}  {:>9.1}  {:>12.1}  {:>9.1}  {:>12.1}  {:>10.0}",
            e.seconds,
            mib(e.peak_kib),
            v.seconds,
            mib(v.peak_kib),
            *bytes as f64 / 1e6
        );
    }
    if kept.is_none() {
        let _ = std::fs::remove_dir_all(&root);
    }
}
