//! Issue #21 item 5: online keys in a PKCS#11 token, against a real
//! SoftHSM2 (Debian's `softhsm2`, which `.ci/test` installs when missing).
//! A server whose decision and ledger keys are in the token serves
//! check-ins and checkpoints that verify (an agent installs through them);
//! a release and a root signed through PKCS#11 verify; the private keys
//! never appear in the data directory; a wrong PIN, an unknown key and a
//! missing module are refused in words.
//!
//! SoftHSM2 reads its token folder when a process first loads it, so the
//! one token these tests share is made (by `softhsm2-util`, in SoftHSM2's
//! default folder) before any test loads the module; each test uses keys
//! of its own labels in it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use covenant_cli::release::Release;
use covenant_cli::root::Root;
use covenant_core::envelope::{self, Envelope};
use covenant_core::keys::{KeySet, PublicKey};
use covenant_core::note::NoteVerifier;
use covenant_core::statements::{Payload as _, ReleaseManifest, RootMetadata};
use covenant_proto::v1 as pb;
use covenant_proto::v1::ledger_service_client::LedgerServiceClient;
use covenant_server::datadir::{self, HeldKeys};
use covenant_tests::*;

const PIN: &str = "1234";

/// The label of the token these tests share, made once per process.
fn token() -> &'static str {
    &tokens().0
}

/// A second token, which no test logs into with the right PIN in this
/// process (PKCS#11 logs a process into a token once, for all its
/// sessions, so a wrong PIN is only ever refused before that).
fn pin_token() -> &'static str {
    &tokens().1
}

/// Both tokens, made before anything in this process loads the module.
fn tokens() -> &'static (String, String) {
    static TOKENS: OnceLock<(String, String)> = OnceLock::new();
    TOKENS.get_or_init(|| (make_token("covenant-test"), make_token("covenant-pin")))
}

fn make_token(prefix: &str) -> String {
    {
        let util = Command::new("softhsm2-util").arg("--version").output();
        assert!(
            util.is_ok_and(|o| o.status.success()) && Path::new(covenant_pkcs11::SOFTHSM2_MODULE).is_file(),
            "SoftHSM2 is not installed: run the tests with .ci/test, which installs Debian's softhsm2"
        );
        let label = format!("{prefix}-{}", std::process::id());
        let out = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", &label, "--pin", PIN, "--so-pin", "5678"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        label
    }
}

/// The tests in this file; the last to finish deletes the shared token.
const TESTS: usize = 3;

/// Called at the end of each test: the last one deletes the token.
fn finished() {
    static DONE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    if DONE.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == TESTS {
        for label in [token(), pin_token()] {
            let _ = Command::new("softhsm2-util").args(["--delete-token", "--token", label]).output();
        }
    }
}

/// The URI of key `object` in the shared token.
fn uri(object: &str) -> String {
    format!("pkcs11:token={};object={object}?module-path={}&pin-value={PIN}", token(), covenant_pkcs11::SOFTHSM2_MODULE)
}

/// Makes key `object` with the real `covenant-server keys generate`.
fn generate(object: &str) -> PublicKey {
    let out =
        Command::new(binary("covenant-server")).args(["keys", "generate", &uri(object), "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    PublicKey::from_hex(v["public_key"].as_str().unwrap()).unwrap()
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(files(&p)) } else { out.push(p) }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_decision_and_ledger_keys_are_in_a_token_serves_check_ins_and_checkpoints_that_verify() {
    let _ = token();
    let (decision, ledger, ca) = (generate("decision-a"), generate("ledger-a"), generate("ca-a"));
    let held = HeldKeys { decision: Some(uri("decision-a")), ledger: Some(uri("ledger-a")), ca: Some(uri("ca-a")) };
    let s = Running::start_held("hsm", true, &held, |_| ()).await;

    // The root names the token's keys; no private key file was written for them.
    let root =
        RootMetadata::parse(Envelope::parse(&std::fs::read(s.dir.join("root.json")).unwrap()).unwrap().payload())
            .unwrap();
    assert_eq!(root.roles.decision.keys[0].public, decision);
    let vkey = NoteVerifier::parse(std::fs::read_to_string(s.dir.join("ledger.vkey")).unwrap().trim()).unwrap();
    assert_eq!(*vkey.public_key(), ledger);
    assert!(!s.dir.join("keys/decision.key").exists() && !s.dir.join("keys/ledger.key").exists());
    assert!(!s.dir.join("ca.key").exists());
    let keys_toml = std::fs::read_to_string(s.dir.join("keys.toml")).unwrap();
    // Private to the server's user: a URI may carry its PIN.
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(s.dir.join("keys.toml")).unwrap().permissions().mode() & 0o777, 0o600);
    for object in ["decision-a", "ledger-a", "ca-a"] {
        assert!(keys_toml.contains(&format!("object={object}")), "{keys_toml}");
    }
    // The CA certificate is the token's key's: every identity below (the
    // admins' at init, the cast's and the device's over the wire) is
    // issued by it, and every mTLS call is made with one.
    let ca_pem = std::fs::read_to_string(s.dir.join("ca.pem")).unwrap();
    let ca_der = rustls_pemfile_der(&ca_pem);
    assert!(ca_der.windows(32).any(|w| w == ca.to_bytes()), "the CA certificate carries the token's key");

    // A device checks in and installs: the freshness answer and the grant
    // are signed by the token's decision key, the checkpoint by its ledger
    // key (and the witness), and the agent verifies all of it.
    cast_with(&s, "").await;
    let state = enrolled_agent(&s, "lim-09").await;
    let (ok, out, err) = tokio::task::block_in_place(|| agent_cli(&["check", "--state", &state.display().to_string()]));
    assert!(ok, "{out}{err}");
    assert!(out.contains("Installed version 1.1.0"), "{out}");

    // The checkpoint verifies with the token's ledger key.
    let mut c = LedgerServiceClient::new(s.admin(1).channel().await.unwrap());
    let note = c.get_checkpoint(pb::GetCheckpointRequest {}).await.unwrap().into_inner().note;
    let cp = covenant_core::note::open_checkpoint(&note, &vkey).unwrap();
    assert!(cp.checkpoint().size > 0);
    // And the auditor's verification of every entry passes.
    let auditor = s.conn(&s.dir.join("identities/auditor"));
    let verify = covenant_cli::audit::Audit::Verify { bodies: true, ledger: None, state: None };
    covenant_cli::audit::run(verify, &auditor, None, true).await.unwrap();

    // The private keys never appear in the data directory: the token's keys
    // are not extractable, so no file can hold them; what the directory
    // holds for them is their public halves and URIs only.
    for f in files(&s.dir) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name != "decision.key" && name != "ledger.key" && name != "ca.key", "{}", f.display());
    }
    s.stop().await;
    finished();
}

#[test]
fn a_release_and_a_root_signed_through_pkcs11_verify() {
    let _ = token();
    let public = generate("release-a");
    let dir = std::env::temp_dir().join(format!("covenant-hsm-release-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = dir.join("lim-1.1.0.manifest");
    let bytes = b"the image".to_vec();
    let m = manifest_for(&bytes);
    std::fs::write(&manifest, Envelope::new(ReleaseManifest::PAYLOAD_TYPE, m.to_payload_bytes()).to_bytes()).unwrap();
    // `covenant release sign --key URI`, as its holder runs it.
    let out = Command::new(binary("covenant"))
        .args(["release", "sign", &manifest.display().to_string(), "--key", &uri("release-a")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let signed = std::fs::read(&manifest).unwrap();
    let verified = envelope::verify::<ReleaseManifest>(&signed, &KeySet::single(public)).unwrap();
    assert_eq!(verified.version.to_string(), "1.1.0");

    // A root document signed through PKCS#11 (the library call `covenant
    // root sign` makes): its signature verifies with the token's key.
    let root_file = dir.join("root.json");
    let dev = std::env::temp_dir().join(format!("covenant-hsm-rootdev-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dev);
    datadir::init_dev(&dev).unwrap();
    let env = Envelope::parse(&std::fs::read(dev.join("root.json")).unwrap()).unwrap();
    std::fs::write(&root_file, Envelope::new(RootMetadata::PAYLOAD_TYPE, env.payload().to_vec()).to_bytes()).unwrap();
    covenant_cli::root::run(Root::Sign { file: root_file.clone(), key: uri("release-a") }, true).unwrap();
    let signed = Envelope::parse(&std::fs::read(&root_file).unwrap()).unwrap();
    assert_eq!(signed.valid_signers(&KeySet::single(public)).len(), 1, "the token's signature verifies");
    // The library path `release sign` takes is the same as the binary's.
    let again = dir.join("again.manifest");
    std::fs::write(&again, Envelope::new(ReleaseManifest::PAYLOAD_TYPE, m.to_payload_bytes()).to_bytes()).unwrap();
    covenant_cli::release::run(Release::Sign { manifest: again.clone(), key: uri("release-a") }, true).unwrap();
    assert!(envelope::verify::<ReleaseManifest>(&std::fs::read(&again).unwrap(), &KeySet::single(public)).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&dev);
    finished();
}

/// The DER bytes of a PEM certificate.
fn rustls_pemfile_der(pem: &str) -> Vec<u8> {
    use base64::Engine as _;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(body).unwrap()
}

/// A release manifest of `bytes` (unsigned).
fn manifest_for(bytes: &[u8]) -> ReleaseManifest {
    covenant_tests::device::manifest(
        "1.1.0",
        "lim-1.1.0",
        covenant_core::digest::Sha256Digest::of(bytes),
        bytes.len() as u64,
    )
}

#[test]
fn a_wrong_pin_an_unknown_key_and_a_missing_module_are_refused_in_words() {
    let _ = token();
    let _ = generate("pin-a");
    let open = |text: &str| covenant_pkcs11::Pkcs11Key::open_text(text).map(|_| ()).unwrap_err().to_string();
    // The key made by the real binary in the token this process never logs into.
    let in_pin_token = uri("pin-a").replace(token(), pin_token());
    let out = Command::new(binary("covenant-server")).args(["keys", "generate", &in_pin_token]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let wrong = in_pin_token.replace(&format!("pin-value={PIN}"), "pin-value=0000");
    assert!(open(&wrong).contains("refused the PIN"), "{}", open(&wrong));
    let unknown = uri("no-such-key");
    assert!(open(&unknown).contains("holds 0 Ed25519 private keys labelled \"no-such-key\""), "{}", open(&unknown));
    let no_token = uri("pin-a").replace(token(), "no-such-token");
    assert!(open(&no_token).contains("no token labelled \"no-such-token\""), "{}", open(&no_token));
    let no_module = uri("pin-a").replace(covenant_pkcs11::SOFTHSM2_MODULE, "/nonexistent/libpkcs11.so");
    assert!(open(&no_module).contains("could not be loaded: no such file"), "{}", open(&no_module));
    // A key of that label twice is refused at generation.
    let out = Command::new(binary("covenant-server")).args(["keys", "generate", &uri("pin-a")]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds a key labelled \"pin-a\""));
    // And the server refuses to start on a key it cannot open, saying which.
    let dir = std::env::temp_dir().join(format!("covenant-hsm-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let held = HeldKeys { decision: Some(uri("no-such-key")), ..HeldKeys::default() };
    let err = datadir::init_dev_held(&dir, &held).map(|_| ()).unwrap_err();
    assert!(format!("{err:#}").contains("opening the decision key in its token"), "{err:#}");
    let _ = std::fs::remove_dir_all(&dir);
    finished();
}
