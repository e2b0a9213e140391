//! Issue #20: one named test per attack on an offline bundle, each
//! asserting the refusal and that nothing was installed. The device's state
//! is on the simulated file system; the bundle is a real file read by
//! `BundleTransport`, built from the fake vendor's honest answer to the
//! device's own signed request.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};

use covenant_agent::bundle::{BundleTransport, OfflineBundleError};
use covenant_agent::engine::{Agent, AgentError, Checked, OfflineError, Transport as _};
use covenant_agent::store::{Slot, Store};
use covenant_core::envelope::Envelope;
use covenant_core::offline::{BundleError, Head};
use covenant_core::statements::{CheckIn, Payload as _};
use covenant_proto::v1 as pb;
use covenant_storage::SimStorage;
use prost::Message as _;
use support::*;

const ARTIFACT: usize = 300_000;

/// A granted vendor, a device provisioned at 1.0.0, and a place for files.
struct Site {
    server: FakeServer,
    store: Store<SimStorage>,
    dir: Dir,
}

/// A directory of its own under the system's temporary directory, removed
/// at the end.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("covenant-offline-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn site() -> Site {
    let mut server = FakeServer::new(Vendor::new());
    server.grant("1.1.0", &artifact(ARTIFACT, 1));
    let store = provisioned(&server.vendor);
    Site { server, store, dir: Dir::new() }
}

/// The device writes a signed request (its nonce now outstanding).
fn request(site: &mut Site) -> Vec<u8> {
    let store = std::mem::replace(&mut site.store, Store::new(SimStorage::new()));
    let server = std::mem::replace(&mut site.server, FakeServer::new(Vendor::new()));
    let mut agent = Agent::new(store, server, copy(&site_key()), settings());
    let checkin = block_on(agent.offline_request(NOW)).unwrap();
    let (store, server, _, _) = agent.into_parts();
    site.store = store;
    site.server = server;
    checkin
}

fn site_key() -> covenant_core::keys::SigningKey {
    copy(&Vendor::new().device)
}

/// What the courier fetches for `checkin`: the server's honest answer.
fn answer(site: &mut Site, checkin: &[u8]) -> pb::CheckInResponse {
    block_on(site.server.check_in(checkin.to_vec())).unwrap()
}

/// Writes a bundle answering `checkin` with `response`.
fn bundle(site: &Site, name: &str, checkin: &[u8], response: &pb::CheckInResponse, artifact: &[u8]) -> PathBuf {
    let c = CheckIn::parse(Envelope::parse(checkin).unwrap().payload()).unwrap();
    let head = Head {
        deployment: c.deployment,
        nonce: c.nonce,
        expires: covenant_core::digest::Timestamp::from_unix(NOW.unix() + 3600),
        root_chain: site.server.vendor.chain.clone(),
        answer: response.encode_to_vec(),
        artifact_len: artifact.len() as u64,
    };
    write(site.dir.path(), name, &head, artifact)
}

fn write(dir: &Path, name: &str, head: &Head, artifact: &[u8]) -> PathBuf {
    let mut bytes = head.encode().unwrap();
    bytes.extend_from_slice(artifact);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn granted_bytes(site: &Site) -> Vec<u8> {
    site.server.artifacts.values().next().unwrap().clone()
}

/// Installs `path` on the device; returns the result and the reports the
/// receipt would carry.
fn install(site: &mut Site, path: &Path) -> (Result<Checked, AgentError>, Vec<Vec<u8>>) {
    install_with(site, path, settings())
}

/// As [`install`], with the agent's settings (a health check).
fn install_with(
    site: &mut Site,
    path: &Path,
    settings: covenant_agent::engine::Settings,
) -> (Result<Checked, AgentError>, Vec<Vec<u8>>) {
    let transport = match BundleTransport::open(path) {
        Ok(t) => t,
        Err(OfflineBundleError::Refused(e)) => return (Err(AgentError::Offline(e)), vec![]),
        Err(e) => panic!("{e}"),
    };
    let head = transport.head().clone();
    let store = std::mem::replace(&mut site.store, Store::new(SimStorage::new()));
    let mut agent = Agent::new(store, transport, site_key(), settings);
    let result = block_on(agent.offline_install(&head, NOW, &mut |_, _| {}));
    // The receipt: here a list in memory (written at once); on a dead file
    // system the reports stay queued.
    let mut receipt = Vec::new();
    let _ = agent.hand_over_reports(|reports| {
        receipt = reports;
        Ok::<(), ()>(())
    });
    let (store, _, _, _) = agent.into_parts();
    site.store = store;
    (result, receipt)
}

fn assert_nothing_installed(site: &Site, reports: &[Vec<u8>]) {
    let store = &site.store;
    assert_eq!(store.current().unwrap(), Slot::A);
    assert_eq!(store.installed().unwrap().version.to_string(), "1.0.0");
    assert!(store.slot(Slot::B).unwrap().is_none(), "slot b must hold nothing");
    assert!(store.pending_reports().unwrap().is_empty());
    assert!(reports.is_empty(), "no install report in the receipt");
}

#[test]
fn a_genuine_bundle_installs_and_its_receipt_carries_the_signed_report() {
    let mut site = site();
    let checkin = request(&mut site);
    let response = answer(&mut site, &checkin);
    let path = bundle(&site, "b", &checkin, &response, &granted_bytes(&site));
    let (result, reports) = install(&mut site, &path);
    assert_eq!(result.unwrap(), Checked::Installed("1.1.0".parse().unwrap()));
    assert_eq!(site.store.current().unwrap(), Slot::B);
    assert!(site.store.verify_slot(Slot::B).unwrap());
    assert_eq!(reports.len(), 1, "the signed install report goes into the receipt");
    assert!(site.store.outstanding().unwrap().is_none(), "the request is used");
}

#[test]
fn a_bundle_for_another_device_is_refused() {
    let mut site = site();
    let checkin = request(&mut site);
    let response = answer(&mut site, &checkin);
    let c = CheckIn::parse(Envelope::parse(&checkin).unwrap().payload()).unwrap();
    // The head names another deployment.
    let head = Head {
        deployment: "lim-08".into(),
        nonce: c.nonce,
        expires: covenant_core::digest::Timestamp::from_unix(NOW.unix() + 3600),
        root_chain: site.server.vendor.chain.clone(),
        answer: response.encode_to_vec(),
        artifact_len: ARTIFACT as u64,
    };
    let path = write(site.dir.path(), "other", &head, &granted_bytes(&site));
    let (result, reports) = install(&mut site, &path);
    assert!(matches!(result, Err(AgentError::Offline(OfflineError::AnotherDevice { .. }))), "{result:?}");
    assert_nothing_installed(&site, &reports);
    // And with the head relabelled to this device, the answer inside (signed
    // for lim-08's request) still fails the same verification as online.
    let mut other = c.clone();
    other.deployment = "lim-08".into();
    let signed = covenant_core::envelope::sign(&other, &[&site_key()]);
    let foreign = site.server.vendor.answer(&signed, site.server.standing, &site.server.manifest);
    let path = bundle(&site, "relabelled", &checkin, &foreign, &granted_bytes(&site));
    let (result, reports) = install(&mut site, &path);
    assert!(matches!(result, Err(AgentError::Refused(_))), "{result:?}");
    assert_nothing_installed(&site, &reports);
}

#[test]
fn the_same_bundle_installed_twice_is_refused() {
    let mut site = site();
    let checkin = request(&mut site);
    let response = answer(&mut site, &checkin);
    let path = bundle(&site, "b", &checkin, &response, &granted_bytes(&site));
    assert!(install(&mut site, &path).0.is_ok());
    let (result, reports) = install(&mut site, &path);
    assert!(matches!(result, Err(AgentError::Offline(OfflineError::NoRequest))), "{result:?}");
    assert!(reports.is_empty());
    assert_eq!(site.store.installed().unwrap().version.to_string(), "1.1.0", "nothing changed");
}

#[test]
fn a_bundle_answering_an_older_request_after_a_newer_one_is_refused() {
    let mut site = site();
    let older = request(&mut site);
    let response = answer(&mut site, &older);
    let _newer = request(&mut site);
    let path = bundle(&site, "b", &older, &response, &granted_bytes(&site));
    let (result, reports) = install(&mut site, &path);
    assert!(matches!(result, Err(AgentError::Offline(OfflineError::AnotherRequest { .. }))), "{result:?}");
    assert_nothing_installed(&site, &reports);
}

#[test]
fn an_expired_bundle_is_refused() {
    let mut site = site();
    let checkin = request(&mut site);
    let response = answer(&mut site, &checkin);
    let c = CheckIn::parse(Envelope::parse(&checkin).unwrap().payload()).unwrap();
    let head = Head {
        deployment: c.deployment,
        nonce: c.nonce,
        expires: NOW,
        root_chain: site.server.vendor.chain.clone(),
        answer: response.encode_to_vec(),
        artifact_len: ARTIFACT as u64,
    };
    let path = write(site.dir.path(), "expired", &head, &granted_bytes(&site));
    let (result, reports) = install(&mut site, &path);
    assert!(
        matches!(result, Err(AgentError::Offline(OfflineError::Format(BundleError::Expired { .. })))),
        "{result:?}"
    );
    assert_nothing_installed(&site, &reports);
}

#[test]
fn changed_artifact_bytes_in_a_bundle_are_refused() {
    let mut site = site();
    let checkin = request(&mut site);
    let response = answer(&mut site, &checkin);
    let mut bytes = granted_bytes(&site);
    bytes[ARTIFACT / 2] ^= 1;
    let path = bundle(&site, "b", &checkin, &response, &bytes);
    let (result, reports) = install(&mut site, &path);
    assert!(matches!(result, Err(AgentError::ArbitrarySoftware { .. })), "{result:?}");
    assert_nothing_installed(&site, &reports);
}

#[test]
fn a_bundle_without_the_witness_threshold_is_refused() {
    let mut site = site();
    let checkin = request(&mut site);
    let v = &site.server.vendor;
    // The checkpoint signed by the ledger alone: no witness cosigned it.
    let response = v.answer_with(&checkin, site.server.standing, &site.server.manifest, &v.tree, &v.ledger, &[]);
    let path = bundle(&site, "b", &checkin, &response, &granted_bytes(&site));
    let (result, reports) = install(&mut site, &path);
    assert!(matches!(result, Err(AgentError::Refused(_))), "{result:?}");
    assert_nothing_installed(&site, &reports);
}

#[test]
fn a_bundle_from_a_forked_ledger_is_refused() {
    let mut site = site();
    let checkin = request(&mut site);
    let v = &site.server.vendor;
    // Another tree under the same name: signed by a ledger key the root
    // does not name.
    let forger = covenant_core::note::NoteSigner::new(v.ledger.name(), key(99)).unwrap();
    let response =
        v.answer_with(&checkin, site.server.standing, &site.server.manifest, &v.tree, &forger, &[&v.witnesses[0]]);
    let path = bundle(&site, "b", &checkin, &response, &granted_bytes(&site));
    let (result, reports) = install(&mut site, &path);
    assert!(matches!(result, Err(AgentError::Refused(_))), "{result:?}");
    assert_nothing_installed(&site, &reports);
}

#[test]
fn a_truncated_bundle_is_refused() {
    let mut site = site();
    let checkin = request(&mut site);
    let response = answer(&mut site, &checkin);
    let path = bundle(&site, "b", &checkin, &response, &granted_bytes(&site));
    let full = std::fs::read(&path).unwrap();
    // Cut in the artifact: the download stops short; nothing switches.
    std::fs::write(&path, &full[..full.len() - 1000]).unwrap();
    let (result, reports) = install(&mut site, &path);
    assert!(matches!(result, Err(AgentError::Truncated { .. })), "{result:?}");
    assert_nothing_installed(&site, &reports);
    // Cut in the head: refused before anything is read further.
    let checkin = request(&mut site);
    let response = answer(&mut site, &checkin);
    let path = bundle(&site, "c", &checkin, &response, &granted_bytes(&site));
    let full = std::fs::read(&path).unwrap();
    std::fs::write(&path, &full[..100]).unwrap();
    let (result, reports) = install(&mut site, &path);
    assert!(matches!(result, Err(AgentError::Offline(OfflineError::Format(BundleError::Truncated(_))))), "{result:?}");
    assert_nothing_installed(&site, &reports);
}

/// Settings whose health check always fails (the rollback path).
fn failing() -> covenant_agent::engine::Settings {
    let mut settings = settings();
    settings.health_check =
        Some(covenant_agent::engine::Hook { argv: vec!["false".into()], timeout: std::time::Duration::from_secs(10) });
    settings
}

/// The device's store after a power cut (`torn` picks how much of an
/// unsynced write survives, as agent/tests/power.rs).
fn power_back(site: &mut Site, torn: u64) {
    let fs = site.store.fs().after_power_cut(|extra| match torn % 3 {
        0 => 0,
        1 => extra / 2,
        _ => extra,
    });
    site.store = Store::new(fs);
}

/// A site with a bundle granting 1.1.0 written for its outstanding request.
fn site_with_bundle() -> (Site, PathBuf) {
    let mut site = site();
    let checkin = request(&mut site);
    let response = answer(&mut site, &checkin);
    let path = bundle(&site, "b", &checkin, &response, &granted_bytes(&site));
    (site, path)
}

/// The file operations of one whole offline install of a fresh site.
fn operations_of_an_offline_install(settings: covenant_agent::engine::Settings) -> u64 {
    let (mut site, path) = site_with_bundle();
    let before = site.store.fs().ops();
    assert!(install_with(&mut site, &path, settings).0.is_ok());
    site.store.fs().ops() - before
}

/// After a cut and the power back: the same bundle again (which recovers
/// first), and if its request was already used, a fresh request, bundle and
/// install, as an engineer's next visit would bring. Returns every report
/// the receipts carried, and whether the next visit was needed.
fn second_run(
    site: &mut Site,
    path: &Path,
    settings: &covenant_agent::engine::Settings,
    cut: u64,
) -> (Vec<Vec<u8>>, bool) {
    let (again, mut reports) = install_with(site, path, settings.clone());
    let active = site.store.current().unwrap_or_else(|e| panic!("cut {cut}: no active slot: {e}"));
    assert!(site.store.verify_slot(active).unwrap(), "cut {cut}: the active slot is incomplete");
    let next_visit = match again {
        Ok(_) => false,
        Err(AgentError::Offline(OfflineError::NoRequest)) => {
            let checkin = request(site);
            let response = answer(site, &checkin);
            let next = bundle(site, "next", &checkin, &response, &granted_bytes(site));
            let (done, more) = install_with(site, &next, settings.clone());
            done.unwrap_or_else(|e| panic!("cut {cut}: the next visit's install failed: {e}"));
            reports.extend(more);
            true
        }
        Err(e) => panic!("cut {cut}: the second run failed: {e}"),
    };
    (reports, next_visit)
}

fn outcomes(reports: &[Vec<u8>]) -> Vec<covenant_core::statements::InstallOutcome> {
    reports
        .iter()
        .map(|r| {
            covenant_core::statements::InstallReport::parse(Envelope::parse(r).unwrap().payload()).unwrap().outcome
        })
        .collect()
}

/// Power cuts during `offline install`, between any two file operations:
/// after the power comes back the active slot holds a complete, verified
/// version (1.0.0 or 1.1.0), and a second run (the same bundle, or if its
/// request was already used, the next visit's) completes: 1.1.0 active,
/// its hash right, and its install report in a receipt.
#[test]
fn a_power_cut_anywhere_in_an_offline_install_leaves_a_complete_version_and_a_second_run_completes() {
    let total = operations_of_an_offline_install(settings());
    assert!(total >= 40, "an offline install takes {total} file operations; the test wants at least 40 cut points");
    let expected = covenant_core::digest::Sha256Digest::of(&artifact(ARTIFACT, 1));
    let (mut same_bundle, mut next_visit, mut old_after_cut) = (0, 0, 0);
    for cut in 1..=total {
        let (mut site, path) = site_with_bundle();
        site.store.fs().cut_after(cut);
        let _ = install(&mut site, &path);
        assert!(site.store.fs().is_dead(), "cut {cut}: the power should have gone out");
        power_back(&mut site, cut);
        if site.store.installed().is_ok_and(|i| i.version.to_string() == "1.0.0") {
            old_after_cut += 1;
        }
        let (reports, next) = second_run(&mut site, &path, &settings(), cut);
        if next {
            next_visit += 1;
        } else {
            same_bundle += 1;
        }
        let store = &site.store;
        let active = store.current().unwrap();
        assert_eq!(store.installed().unwrap().version.to_string(), "1.1.0", "cut {cut}");
        assert_eq!(store.slot(active).unwrap().unwrap().artifact.unwrap().0, expected, "cut {cut}");
        assert!(store.verify_slot(active).unwrap(), "cut {cut}: the installed artifact's hash");
        assert!(store.pending_reports().unwrap().is_empty(), "cut {cut}: every report went into a receipt");
        // The receipt carries the installed report, unless the cut fell
        // after the first run had already handed it over.
        let delivered = outcomes(&reports);
        assert!(
            delivered.is_empty() || delivered.contains(&covenant_core::statements::InstallOutcome::Installed),
            "cut {cut}: {delivered:?}"
        );
    }
    // Both ways a second run goes were taken, and cuts fell before the switch.
    assert!(same_bundle > 0 && next_visit > 0 && old_after_cut > 0, "{same_bundle} {next_visit} {old_after_cut}");
}

/// The same with a health check that always fails: wherever the power is
/// cut, the device ends on 1.0.0, complete, with the rolled-back report in
/// a receipt, and 1.1.0 is not tried again.
#[test]
fn a_power_cut_anywhere_in_a_failing_offline_install_always_ends_rolled_back() {
    let total = operations_of_an_offline_install(failing());
    assert!(total >= 40, "{total} file operations");
    for cut in 1..=total {
        let (mut site, path) = site_with_bundle();
        site.store.fs().cut_after(cut);
        let _ = install_with(&mut site, &path, failing());
        assert!(site.store.fs().is_dead(), "cut {cut}");
        power_back(&mut site, cut);
        let (reports, _) = second_run(&mut site, &path, &failing(), cut);
        let store = &site.store;
        assert_eq!(store.current().unwrap(), Slot::A, "cut {cut}");
        assert_eq!(store.installed().unwrap().version.to_string(), "1.0.0", "cut {cut}");
        assert!(store.verify_slot(Slot::A).unwrap(), "cut {cut}");
        assert!(store.pending_reports().unwrap().is_empty(), "cut {cut}");
        assert!(
            outcomes(&reports).contains(&covenant_core::statements::InstallOutcome::RolledBack),
            "cut {cut}: {:?}",
            outcomes(&reports)
        );
        // A third visit: the failed release is not tried again.
        let checkin = request(&mut site);
        let response = answer(&mut site, &checkin);
        let next = bundle(&site, "third", &checkin, &response, &granted_bytes(&site));
        let (third, _) = install_with(&mut site, &next, failing());
        assert_eq!(third.unwrap(), Checked::Skipped("1.1.0".parse().unwrap()), "cut {cut}");
    }
}

/// The install report leaves the device's queue only once the receipt
/// holding it is written: a receipt that cannot be written (a full USB
/// stick) leaves it queued, and the next receipt carries it.
#[test]
fn an_install_report_leaves_the_device_only_once_its_receipt_is_written() {
    let (mut site, path) = site_with_bundle();
    let transport = BundleTransport::open(&path).unwrap();
    let head = transport.head().clone();
    let store = std::mem::replace(&mut site.store, Store::new(SimStorage::new()));
    let mut agent = Agent::new(store, transport, site_key(), settings());
    assert_eq!(
        block_on(agent.offline_install(&head, NOW, &mut |_, _| {})).unwrap(),
        Checked::Installed("1.1.0".parse().unwrap())
    );
    let failed = agent.hand_over_reports(|_| Err("the receipt could not be written")).unwrap();
    assert_eq!(failed, Err("the receipt could not be written"));
    assert_eq!(agent.store().pending_reports().unwrap().len(), 1, "still queued");
    let mut receipt = Vec::new();
    let handed = agent
        .hand_over_reports(|reports| {
            receipt = reports;
            Ok::<(), ()>(())
        })
        .unwrap();
    assert_eq!(handed, Ok(1));
    assert_eq!(outcomes(&receipt), vec![covenant_core::statements::InstallOutcome::Installed]);
    assert!(agent.store().pending_reports().unwrap().is_empty(), "handed over");
}
