//! Power cuts on the simulated file system: a cut between any two file
//! operations of a whole update (check-in records, download, install,
//! switch, report), each followed by a restart. After every restart the
//! active slot holds a complete, verified version (old or new), and the
//! update then completes with the right hash.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use covenant_agent::engine::Agent;
use covenant_agent::store::{Slot, Store};
use covenant_core::digest::Sha256Digest;
use covenant_storage::SimStorage;
use support::*;

const SIZE: usize = 200 * 1024;

fn server() -> FakeServer {
    let mut server = FakeServer::new(Vendor::new());
    server.grant("1.1.0", &artifact(SIZE, 4));
    server.chunk = 1024;
    server
}

/// The mutating file operations of one whole update.
fn operations_of_an_update() -> u64 {
    let mut agent = agent(server());
    let before = agent.store().fs().ops();
    let done = block_on(agent.check(NOW, &mut |_, _| {})).unwrap();
    assert_eq!(done, covenant_agent::engine::Checked::Installed("1.1.0".parse().unwrap()));
    agent.store().fs().ops() - before
}

fn restart(agent: Agent<SimStorage, FakeServer>, torn: usize) -> Agent<SimStorage, FakeServer> {
    let (store, server, key, settings) = agent.into_parts();
    let fs = store.fs().after_power_cut(|extra| match torn % 3 {
        0 => 0,
        1 => extra / 2,
        _ => extra,
    });
    Agent::new(Store::new(fs), server, key, settings)
}

#[test]
fn a_power_cut_between_any_two_file_operations_leaves_a_complete_version() {
    let total = operations_of_an_update();
    assert!(total >= 200, "an update takes {total} file operations; the test wants at least 200 cut points");
    let expected = Sha256Digest::of(&artifact(SIZE, 4));
    for cut in 1..=total {
        let mut agent = agent(server());
        agent.store().fs().cut_after(cut);
        // The cycle fails, or (a cut at the very last operation, removing
        // the acknowledged report) ends with the report still on disk.
        let _ = block_on(agent.check(NOW, &mut |_, _| {}));
        assert!(agent.store().fs().is_dead(), "cut {cut}: the power should have gone out");
        let mut agent = restart(agent, cut as usize);
        block_on(agent.recover()).unwrap_or_else(|e| panic!("cut {cut}: recovery failed: {e}"));
        let store = agent.store();
        let active = store.current().unwrap_or_else(|e| panic!("cut {cut}: no active slot: {e}"));
        assert!(store.verify_slot(active).unwrap(), "cut {cut}: the active slot is incomplete");
        let version = store.installed().unwrap().version.to_string();
        assert!(version == "1.0.0" || version == "1.1.0", "cut {cut}: {version}");
        // The update then completes (a few cycles at most).
        let mut cycles = 0;
        while agent.store().installed().unwrap().version.to_string() != "1.1.0" {
            cycles += 1;
            assert!(cycles <= 3, "cut {cut}: the update did not complete");
            block_on(agent.check(NOW, &mut |_, _| {})).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        }
        // Any report left over goes out on the next cycle.
        block_on(agent.check(NOW, &mut |_, _| {})).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        let store = agent.store();
        let active = store.current().unwrap();
        assert_eq!(active, Slot::B, "cut {cut}");
        assert_eq!(store.slot(active).unwrap().unwrap().artifact.unwrap().0, expected, "cut {cut}");
        assert!(store.verify_slot(active).unwrap(), "cut {cut}: the installed artifact's hash");
        assert!(store.pending_reports().unwrap().is_empty(), "cut {cut}: the report was delivered");
        assert!(!agent.transport().reports.is_empty(), "cut {cut}: a report reached the server");
    }
}

/// An agent whose health check always fails (the rollback path).
fn failing_agent() -> Agent<SimStorage, FakeServer> {
    let server = server();
    let store = provisioned(&server.vendor);
    let device = copy(&server.vendor.device);
    let mut settings = settings();
    settings.health_check =
        Some(covenant_agent::engine::Hook { argv: vec!["false".into()], timeout: std::time::Duration::from_secs(10) });
    Agent::new(store, server, device, settings)
}

#[test]
fn a_power_cut_anywhere_in_a_failing_update_always_ends_rolled_back() {
    use covenant_agent::engine::Checked;
    let mut agent = failing_agent();
    let before = agent.store().fs().ops();
    assert_eq!(block_on(agent.check(NOW, &mut |_, _| {})).unwrap(), Checked::RolledBack("1.1.0".parse().unwrap()));
    let total = agent.store().fs().ops() - before;
    assert!(total >= 200, "{total} file operations");
    for cut in 1..=total {
        let mut agent = failing_agent();
        agent.store().fs().cut_after(cut);
        let _ = block_on(agent.check(NOW, &mut |_, _| {}));
        assert!(agent.store().fs().is_dead(), "cut {cut}");
        let mut agent = restart(agent, cut as usize);
        block_on(agent.recover()).unwrap_or_else(|e| panic!("cut {cut}: recovery failed: {e}"));
        let active = agent.store().current().unwrap();
        assert!(agent.store().verify_slot(active).unwrap(), "cut {cut}: the active slot is incomplete");
        // It ends rolled back to 1.0.0, the release never tried again, and
        // the rolled-back report delivered.
        let mut skipped = false;
        for _ in 0..3 {
            if block_on(agent.check(NOW, &mut |_, _| {})).unwrap_or_else(|e| panic!("cut {cut}: {e}"))
                == Checked::Skipped("1.1.0".parse().unwrap())
            {
                skipped = true;
                break;
            }
        }
        assert!(skipped, "cut {cut}: the failed release is not marked failed");
        let store = agent.store();
        assert_eq!(store.current().unwrap(), Slot::A, "cut {cut}");
        assert_eq!(store.installed().unwrap().version.to_string(), "1.0.0", "cut {cut}");
        assert!(store.pending_reports().unwrap().is_empty(), "cut {cut}");
        let outcomes: Vec<_> = agent
            .transport()
            .reports
            .iter()
            .map(|r| {
                use covenant_core::statements::Payload as _;
                let env = covenant_core::envelope::Envelope::parse(r).unwrap();
                covenant_core::statements::InstallReport::parse(env.payload()).unwrap().outcome
            })
            .collect();
        assert!(outcomes.contains(&covenant_core::statements::InstallOutcome::RolledBack), "cut {cut}: {outcomes:?}");
    }
}
