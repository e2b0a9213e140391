//! The read side for people (issue #18), against the real server over
//! mutual TLS: the fleet's flags (a device that stopped checking in is
//! *dark*, an attestation ending in ten days is *expiring*, a long withhold
//! is *stuck*) on a server whose clock the test moves; a suspension
//! proposal listed until a second admin approves it; `covenant admin
//! approve` refusing without `--yes` when no one is at a terminal; and what
//! `covenant fleet`, `proposals`, `cases`, `releases`, `history` and
//! `status` print, as tables and as `--json`, through the binary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use covenant_cli::admin::Admin;
use covenant_cli::attest::Attest;
use covenant_cli::connect::Connection;
use covenant_cli::query::{self, Cases, Fleet, FleetOptions, History, Proposals, Releases};
use covenant_core::digest::Timestamp;
use covenant_tests::*;

const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;

/// [`Running::start_configured`], returning once the server answers. (A
/// child process spawned by another test between `init --dev` closing the
/// ledger and `serve` opening it holds the lock's descriptor until it
/// execs: the storage waits `covenant_storage::LOCK_PATIENCE` for that.)
async fn start(name: &str, configure: impl FnOnce(&mut covenant_server::serve::ServeConfig)) -> Running {
    let s = Running::start_configured(name, false, configure).await;
    s.size().await;
    s
}

/// A server whose clock reads the returned cell (Unix seconds), starting at
/// the system's time.
async fn with_settable_clock(name: &str) -> (Running, Arc<AtomicI64>) {
    let t = Arc::new(AtomicI64::new(now().unix()));
    let read = t.clone();
    let s = start(name, move |config| {
        config.clock = Arc::new(move || Timestamp::from_unix(read.load(Ordering::SeqCst)));
    })
    .await;
    (s, t)
}

async fn fleet_of(conn: &Connection) -> Fleet {
    let mut client = query::client(conn).await.unwrap();
    query::fleet(&mut client, None, FleetOptions::default()).await.unwrap()
}

fn flags_of<'a>(fleet: &'a Fleet, id: &str) -> &'a [String] {
    &fleet.deployments.iter().find(|d| d.id == id).unwrap_or_else(|| panic!("{id} in {fleet:?}")).flags
}

/// Runs the `covenant` binary as `identity` on `s` with `args`, stdin from
/// /dev/null (not a terminal); returns (exit code, stdout, stderr).
async fn covenant(s: &Running, identity: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(binary("covenant"));
    cmd.env_remove("COVENANT_SERVER")
        .env_remove("COVENANT_IDENTITY")
        .arg("--server")
        .arg(&s.url)
        .arg("--identity")
        .arg(identity)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    (out.status.code(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

/// As [`covenant`], which must succeed; returns its stdout.
async fn covenant_ok(s: &Running, identity: &Path, args: &[&str]) -> String {
    let (code, out, err) = covenant(s, identity, args).await;
    assert_eq!(code, Some(0), "covenant {args:?}: {err}");
    out
}

fn admin_dir(s: &Running, n: u8) -> std::path::PathBuf {
    s.dir.join(format!("identities/admin{n}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_stopped_checking_in_is_dark() {
    let (s, clock) = with_settable_clock("fleet-dark").await;
    let c = cast(&s).await;
    // A deployment never heard from is not dark: it has not started.
    register_deployment(&s, min_x_deployment("lim-08")).await;
    let a1 = s.admin(1);

    // lim-07 checks in (withheld: nothing attested yet).
    check_in(&s, &c.device, "n1").await;
    let fleet = fleet_of(&a1).await;
    let row = fleet.deployments.iter().find(|d| d.id == "lim-07").unwrap();
    assert!(!row.last_checkin.is_empty(), "{row:?}");
    assert_eq!(row.verdict, "withhold");
    assert!(flags_of(&fleet, "lim-07").is_empty(), "{fleet:?}");
    assert!(flags_of(&fleet, "lim-08").is_empty(), "{fleet:?}");

    // Two poll intervals of silence: still not dark.
    clock.fetch_add(2 * HOUR, Ordering::SeqCst);
    assert!(flags_of(&fleet_of(&a1).await, "lim-07").is_empty());

    // Past three poll intervals (the default): dark.
    clock.fetch_add(HOUR + 60, Ordering::SeqCst);
    let fleet = fleet_of(&a1).await;
    assert_eq!(flags_of(&fleet, "lim-07"), ["dark"], "{fleet:?}");
    assert!(flags_of(&fleet, "lim-08").is_empty(), "{fleet:?}");
    // With a longer poll interval, the same silence is not dark.
    let mut client = query::client(&a1).await.unwrap();
    let relaxed = FleetOptions { poll_seconds: 2 * HOUR, ..FleetOptions::default() };
    let fleet = query::fleet(&mut client, None, relaxed).await.unwrap();
    assert!(flags_of(&fleet, "lim-07").is_empty(), "{fleet:?}");

    // Fifteen days on, withheld all along: dark and stuck (the window is 14 days).
    clock.fetch_add(15 * DAY, Ordering::SeqCst);
    let fleet = fleet_of(&a1).await;
    assert_eq!(flags_of(&fleet, "lim-07"), ["dark", "stuck"], "{fleet:?}");

    // The customer sees its own deployments flagged alike.
    let mine = fleet_of(&s.conn(&c.customer)).await;
    assert_eq!(flags_of(&mine, "lim-07"), ["dark", "stuck"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attestation_expiring_in_ten_days_is_expiring() {
    let s = start("fleet-expiring", |_| ()).await;
    let c = cast(&s).await;
    // The customer attests until ten days (and an hour) from now.
    let until = now().plus_seconds(10 * DAY + HOUR);
    let file = c.customer.join("attestation.toml");
    std::fs::write(&file, covenant_cli::demo::attestation("min-x", "lim-07", &until.to_string())).unwrap();
    let att = c.customer.join("attestation.dsse");
    let customer = s.conn(&c.customer);
    covenant_cli::attest::attest(Attest::New { from: file, out: att.clone() }, &customer, true).await.unwrap();
    covenant_cli::attest::attest(Attest::Sign { file: att.clone() }, &customer, true).await.unwrap();
    covenant_cli::attest::attest(Attest::Submit { file: att }, &customer, true).await.unwrap();

    let fleet = fleet_of(&s.admin(1)).await;
    let row = fleet.deployments.iter().find(|d| d.id == "lim-07").unwrap();
    assert_eq!(row.flags, ["expiring"], "{row:?}");
    assert_eq!(row.expiring.len(), 1, "{row:?}");
    assert_eq!(row.expiring[0].what, "attestation");
    assert_eq!(row.expiring[0].at, until.to_string());
    assert!(row.expiring[0].action.contains("covenant attest new"), "{row:?}");
    // With a window of 7 days, it is not (yet).
    let mut client = query::client(&s.admin(1)).await.unwrap();
    let week = FleetOptions { expiring_days: 7, ..FleetOptions::default() };
    let fleet = query::fleet(&mut client, None, week).await.unwrap();
    assert!(flags_of(&fleet, "lim-07").is_empty(), "{fleet:?}");

    // The customer's `covenant status` says what ends and what to do.
    let shown = covenant_ok(&s, &c.customer, &["status", "lim-07"]).await;
    let line = format!(
        "Expiring: the end-use attestation ends {} (in 10 days): submit a renewed end-use attestation (covenant \
         attest new)",
        until.date()
    );
    assert!(shown.contains(&line), "{shown}");
    let json = covenant_ok(&s, &c.customer, &["--json", "status", "lim-07"]).await;
    let answer: covenant_cli::output::NoDecision = serde_json::from_str(&json).unwrap();
    assert_eq!(answer.expiring, row_expiring(&s).await);
    // `covenant fleet --flag expiring` shows the row and its line.
    let table = covenant_ok(&s, &admin_dir(&s, 1), &["fleet", "--flag", "expiring"]).await;
    assert!(table.contains("the end-use attestation ends"), "{table}");
    assert!(table.contains("1 of 1 deployment expiring"), "{table}");
    s.stop().await;
}

async fn row_expiring(s: &Running) -> Vec<query::Expiring> {
    let fleet = fleet_of(&s.admin(1)).await;
    fleet.deployments.into_iter().find(|d| d.id == "lim-07").unwrap().expiring
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspension_proposal_shows_until_approved() {
    let s = start("fleet-proposals", |_| ()).await;
    let c = cast(&s).await;
    // L2 needs the admin threshold (docs/policy.md, "Dual control").
    let suspend = Admin::Suspend { customer: Some("min-x".into()), deployment: None, level: "L2".into() };
    let index = s.size().await;
    admin(&s.admin(1), suspend).await;
    let digest = proposal_digest(&s, index).await.to_string();

    let mut client = query::client(&s.admin(2)).await.unwrap();
    let listed = query::proposals(&mut client).await.unwrap();
    assert_eq!(listed.proposals.len(), 1, "{listed:?}");
    let p = &listed.proposals[0];
    assert_eq!(p.digest, digest);
    assert_eq!(p.index, index);
    assert_eq!(p.kind, "suspension");
    assert_eq!(p.target, "customer min-x");
    assert_eq!((p.from.as_str(), p.to.as_str()), ("none", "L2"));
    assert_eq!(p.change, "set the suspension of customer min-x from none to L2");
    assert_eq!(p.proposer, "admin1");
    assert_eq!(p.approvers, ["admin1"]);
    assert_eq!(p.threshold, 2);
    assert_eq!(p.why, "suspension L2 proposed");
    // The table says how to approve it.
    let table = covenant_ok(&s, &admin_dir(&s, 2), &["proposals"]).await;
    assert!(table.contains(&format!("covenant admin approve {digest}")), "{table}");
    assert!(table.contains("why: suspension L2 proposed"), "{table}");
    assert!(table.contains("1 proposal awaiting approval"), "{table}");
    // A customer may not list proposals.
    let (code, out, _) = covenant(&s, &c.customer, &["--json", "proposals"]).await;
    assert_eq!(code, Some(1));
    assert!(serde_json::from_str::<covenant_cli::output::Failure>(&out).is_ok(), "{out}");

    // admin2 approves: it is in force, and no longer listed.
    approve_entry(&s, index).await;
    let listed = query::proposals(&mut client).await.unwrap();
    assert!(listed.proposals.is_empty(), "{listed:?}");
    let table = covenant_ok(&s, &admin_dir(&s, 2), &["proposals"]).await;
    assert_eq!(table, "No proposal awaits approval.\n");
    let fleet = fleet_of(&s.admin(1)).await;
    assert_eq!(fleet.deployments.iter().find(|d| d.id == "lim-07").unwrap().suspension, "L2");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_without_yes_on_a_non_terminal_refuses() {
    let s = start("fleet-approve", |_| ()).await;
    cast(&s).await;
    let index = s.size().await;
    let suspend = Admin::Suspend { customer: Some("min-x".into()), deployment: None, level: "L2".into() };
    admin(&s.admin(1), suspend).await;
    let digest = proposal_digest(&s, index).await.to_string();
    let before = s.size().await;

    // stdin is /dev/null: no one to ask.
    let (code, out, err) = covenant(&s, &admin_dir(&s, 2), &["admin", "approve", &digest]).await;
    assert_ne!(code, Some(0), "{out}{err}");
    assert!(err.contains("--yes"), "{err}");
    // It showed what it would have signed, in words.
    assert!(out.contains("set the suspension of customer min-x from none to L2"), "{out}");
    assert!(out.contains("approvals so far: 1 of 2 (admin1)"), "{out}");
    assert_eq!(s.size().await, before, "nothing was appended");
    // The same under --json: an {"error"} naming --yes.
    let (code, out, _) = covenant(&s, &admin_dir(&s, 2), &["--json", "admin", "approve", &digest]).await;
    assert_eq!(code, Some(1));
    let failure: covenant_cli::output::Failure = serde_json::from_str(&out).unwrap();
    assert!(failure.error.contains("--yes"), "{failure:?}");
    assert_eq!(s.size().await, before, "nothing was appended");

    // A digest that awaits nothing is refused before signing, even with --yes.
    let (code, _, err) = covenant(&s, &admin_dir(&s, 2), &["admin", "approve", "--yes", &"0".repeat(64)]).await;
    assert_ne!(code, Some(0));
    assert!(err.contains("no proposal has this digest"), "{err}");
    assert_eq!(s.size().await, before, "nothing was appended");

    // With --yes it is approved.
    let done = covenant_ok(&s, &admin_dir(&s, 2), &["--json", "admin", "approve", "--yes", &digest]).await;
    let recorded: covenant_cli::output::Recorded = serde_json::from_str(&done).unwrap();
    assert_eq!(recorded.index, before);
    assert_eq!(s.size().await, before + 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_commands_print_tables_and_json() {
    let s = start("fleet-read", |_| ()).await;
    let c = cast(&s).await;
    check_in(&s, &c.device, "n1").await;
    let signal = s.size().await;
    covenant_cli::attest::signal(
        &s.conn(&c.engineer),
        "min-x".into(),
        Some("lim-07".into()),
        "ngo_report",
        "journalists targeted".into(),
        vec![],
        true,
    )
    .await
    .unwrap();
    let case = format!("case-{signal}");
    let a1 = admin_dir(&s, 1);

    // fleet
    let table = covenant_ok(&s, &a1, &["fleet"]).await;
    let header = table.lines().next().unwrap();
    assert!(header.starts_with("DEPLOYMENT  CUSTOMER  VERSION  VERDICT"), "{table}");
    let row = table.lines().find(|l| l.starts_with("lim-07 ")).unwrap();
    assert!(row.contains("min-x") && row.contains("1.0.0") && row.contains("withhold"), "{row}");
    assert!(table.contains("1 deployment: 0 dark, 0 expiring, 0 stuck"), "{table}");
    assert!(table.contains("Flags: dark = no check-in for 3 poll intervals of 1h (3h)"), "{table}");
    assert!(table.lines().all(|l| l.chars().count() <= 100), "{table}");
    let fleet: Fleet = serde_json::from_str(&covenant_ok(&s, &a1, &["--json", "fleet"]).await).unwrap();
    assert_eq!(fleet.deployments.len(), 1);
    assert_eq!(fleet.deployments[0].id, "lim-07");
    assert_eq!(fleet.deployments[0].verdict, "withhold");
    assert!(fleet.deployments[0].unmet.iter().any(|u| u.condition == "end_use_attested"), "{fleet:?}");
    let narrowed = covenant_ok(&s, &a1, &["--json", "fleet", "--customer", "nobody", "--poll", "60"]).await;
    let narrowed: Fleet = serde_json::from_str(&narrowed).unwrap();
    assert!(narrowed.deployments.is_empty());
    assert_eq!(narrowed.options.poll_seconds, 60);
    // Engineers are refused the fleet, with the server's reason.
    let (code, _, err) = covenant(&s, &c.engineer, &["fleet"]).await;
    assert_eq!(code, Some(1));
    assert!(err.starts_with("covenant: "), "{err}");

    // cases
    let table = covenant_ok(&s, &a1, &["cases"]).await;
    let row = table.lines().find(|l| l.starts_with(&format!("{case} "))).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("min-x") && row.contains("lim-07") && row.contains("received") && row.contains("eng-1"));
    assert!(table.contains("1 case, 1 open."), "{table}");
    let cases: Cases = serde_json::from_str(&covenant_ok(&s, &a1, &["--json", "cases"]).await).unwrap();
    assert_eq!(cases.cases.len(), 1);
    assert_eq!(cases.cases[0].id, case);
    assert_eq!(cases.cases[0].reporter, "eng-1");
    // The engineer sees the case its signal opened.
    let theirs: Cases = serde_json::from_str(&covenant_ok(&s, &c.engineer, &["--json", "cases"]).await).unwrap();
    assert_eq!(theirs.cases.len(), 1);

    // releases
    let table = covenant_ok(&s, &a1, &["releases"]).await;
    let row = table.lines().find(|l| l.contains(" 1.0.0 ") && l.contains("capability")).unwrap();
    assert!(row.ends_with("lim-07"), "{row}");
    assert!(table.contains("2 releases."), "{table}");
    let releases: Releases =
        serde_json::from_str(&covenant_ok(&s, &c.customer, &["--json", "releases"]).await).unwrap();
    let versions: Vec<&str> = releases.releases.iter().map(|r| r.version.as_str()).collect();
    assert_eq!(versions, ["1.0.0", "1.1.0"]);
    assert_eq!(releases.releases[0].running, ["lim-07"]);
    assert_eq!(releases.releases[0].signers.len(), 2);

    // history
    let table = covenant_ok(&s, &a1, &["history", "lim-07"]).await;
    assert!(table.starts_with("ENTRY  TIME (UTC)"), "{table}");
    assert!(table.lines().any(|l| l.contains(" withhold ")), "{table}");
    assert!(table.contains("of lim-07 (ledger size"), "{table}");
    let history: History =
        serde_json::from_str(&covenant_ok(&s, &c.customer, &["--json", "history", "lim-07"]).await).unwrap();
    assert_eq!(history.subject, "lim-07");
    assert!(history.entries.iter().any(|e| e.kind == "withhold" && e.body_visible), "{history:?}");
    let case_history = covenant_ok(&s, &a1, &["history", &case]).await;
    assert!(case_history.contains("signal"), "{case_history}");
    // A customer is not told about another's subject, nor about cases.
    let (code, out, _) = covenant(&s, &c.customer, &["--json", "history", &case]).await;
    assert_eq!(code, Some(1), "{out}");

    // proposals (none pending after the cast)
    let none: Proposals = serde_json::from_str(&covenant_ok(&s, &a1, &["--json", "proposals"]).await).unwrap();
    assert!(none.proposals.is_empty(), "{none:?}");
    s.stop().await;
}
