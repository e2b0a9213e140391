//! Issue 16, item 6: with the server stopped, `covenant-server admit`
//! appended admin1's earlier licence action again. `admit` takes the first
//! admin's own registration only, and nothing once an admin is registered.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use covenant_core::digest::Sha256Digest;
use covenant_core::envelope;
use covenant_core::statements::*;
use covenant_server::datadir;

fn dev_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("covenant-admit-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    datadir::init_dev(&dir).unwrap();
    dir
}

fn now() -> covenant_core::digest::Timestamp {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    covenant_core::digest::Timestamp::from_unix(secs as i64)
}

fn signed(dir: &std::path::Path, who: &str, action: ActionKind) -> Vec<u8> {
    let key = datadir::read_key(&dir.join(format!("identities/{who}/signing.key"))).unwrap();
    let a = AdminAction {
        type_tag: ActionTag,
        schema: SchemaV1,
        action,
        why: "test".into(),
        evidence: vec![],
        issued_at: now(),
    };
    envelope::sign(&a, &[&key])
}

/// Appends an action straight to the stopped server's ledger, under the
/// fold's rules (as the running server would): the set-up the operator's
/// attack starts from.
fn append(dir: &std::path::Path, body: Vec<u8>) {
    let action = AdminAction::parse(envelope::Envelope::parse(&body).unwrap().payload()).unwrap();
    let (kind, subjects) = covenant_core::state::placement(&action.action);
    let signer = covenant_core::keys::KeyId::from_hex(&envelope::Envelope::parse(&body).unwrap().signatures()[0].keyid);
    let (ledger, _) = datadir::open_ledger(dir).unwrap();
    ledger.append_blocking(covenant_server::ledger::NewEntry { kind, actor: signer, subjects, body }).unwrap();
    ledger.close();
}

/// The ledger's size and whether licence `bafa-1` is recorded.
fn ledger_facts(dir: &std::path::Path) -> (u64, bool) {
    let (ledger, registry) = datadir::open_ledger(dir).unwrap();
    let facts = {
        let state = registry.state.read().unwrap();
        (state.size(), state.facts().licence("bafa-1").is_some())
    };
    ledger.close();
    facts
}

#[test]
fn the_operator_cannot_admit_an_admin_action() {
    let dir = dev_dir("licence");
    // A registered customer, so that the fold itself would take the
    // licence: only admit's own rule stands in the way.
    let customer = ActionKind::RegisterCustomer {
        customer: "min-x".into(),
        legal_name: "Ministry X".into(),
        country: "XA".into(),
    };
    append(&dir, signed(&dir, "admin1", customer));
    let before = ledger_facts(&dir);
    assert!(!before.1);
    // A licence action admin1 signed (the operator kept a copy).
    let licence = ActionKind::RecordLicence {
        licence: Licence {
            id: "bafa-1".into(),
            customer: "min-x".into(),
            authority: "BAFA".into(),
            expires: now().plus_seconds(86_400),
            versions: ">=1.0".parse().unwrap(),
        },
    };
    let e = datadir::admit(&dir, signed(&dir, "admin1", licence)).unwrap_err();
    assert!(format!("{e:#}").contains("admit records only the first admin's own registration"), "{e:#}");
    let note = ActionKind::Note { text: "appended by the operator".into() };
    let e = datadir::admit(&dir, signed(&dir, "admin1", note)).unwrap_err();
    assert!(format!("{e:#}").contains("admit records only the first admin's own registration"), "{e:#}");
    assert_eq!(ledger_facts(&dir), before, "nothing was appended");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn admit_refuses_an_admin_registration_once_an_admin_is_registered() {
    let dir = dev_dir("second");
    let key = datadir::read_key(&dir.join("identities/admin2/signing.key")).unwrap();
    let again = ActionKind::IssueIdentity {
        role: IdentityRole::Admin,
        subject: "admin2".into(),
        signing_key: key.public(),
        certificate_sha256: Sha256Digest::of(b"another certificate"),
        scope: None,
    };
    let e = datadir::admit(&dir, signed(&dir, "admin2", again)).unwrap_err();
    assert!(format!("{e:#}").contains("an admin is already registered"), "{e:#}");
    let _ = std::fs::remove_dir_all(&dir);
}
