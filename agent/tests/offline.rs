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
    let transport = match BundleTransport::open(path) {
        Ok(t) => t,
        Err(OfflineBundleError::Refused(e)) => return (Err(AgentError::Offline(e)), vec![]),
        Err(e) => panic!("{e}"),
    };
    let head = transport.head().clone();
    let store = std::mem::replace(&mut site.store, Store::new(SimStorage::new()));
    let mut agent = Agent::new(store, transport, site_key(), settings());
    let result = block_on(agent.offline_install(&head, NOW, &mut |_, _| {}));
    let (store, transport, _, _) = agent.into_parts();
    site.store = store;
    (result, transport.reports)
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
