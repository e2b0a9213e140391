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

#[test]
fn the_operator_cannot_admit_an_admin_action() {
    let dir = dev_dir("licence");
    // A licence action admin1 signed (the operator kept a copy).
    let licence = ActionKind::RecordLicence {
        licence: Licence {
            id: "bafa-1".into(),
            customer: "nobody".into(),
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
