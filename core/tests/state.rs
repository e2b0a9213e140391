//! The registry fold (root versions, identities, revocations, notes): each
//! rule tried by an entry that breaks it, refused with a reason, and the
//! state unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use covenant_core::digest::Sha256Digest;
use covenant_core::envelope;
use covenant_core::keys::SigningKey;
use covenant_core::ledger::{EntryHeader, EntryKind, Keyring, SubjectSecret, body_digest};
use covenant_core::state::{RootEntry, State};
use covenant_core::statements::{ActionKind, ActionTag, AdminAction, IdentityRole, SchemaV1};
use support::{NOW, RootKeys, key, next_year, root_metadata, signed_root};

fn header(kind: EntryKind, actor: Option<&SigningKey>, subjects: &[&str], body: &[u8], t: i64) -> EntryHeader {
    EntryHeader {
        kind,
        time: NOW.plus_seconds(t),
        actor: actor.map(SigningKey::key_id),
        tags: keyring()
            .tags(&subjects.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(), &body_digest(&[0; 32], body))
            .unwrap(),
        body_digest: body_digest(&[0; 32], body),
    }
}

fn keyring() -> Keyring {
    Keyring::Secret(SubjectSecret::from_bytes([7; 32]))
}

fn action(what: ActionKind, by: &SigningKey) -> Vec<u8> {
    envelope::sign(
        &AdminAction {
            type_tag: ActionTag,
            schema: SchemaV1,
            action: what,
            why: "test".into(),
            evidence: vec![],
            issued_at: NOW,
        },
        &[by],
    )
}

/// The second admin's approval of the proposal `body` carries.
fn approve(body: &[u8], by: &SigningKey) -> Vec<u8> {
    let proposal = Sha256Digest::of(envelope::Envelope::parse(body).unwrap().payload());
    action(ActionKind::Approve { proposal }, by)
}

fn issue(role: IdentityRole, subject: &str, signing: &SigningKey, cert: &[u8]) -> ActionKind {
    ActionKind::IssueIdentity {
        role,
        subject: subject.into(),
        signing_key: signing.public(),
        certificate_sha256: Sha256Digest::of(cert),
        scope: None,
    }
}

/// A registry with the genesis root folded.
fn genesis(keys: &RootKeys) -> State {
    let mut r = State::with_keyring(keyring());
    let root = signed_root(&root_metadata(keys, 1, next_year(), false), &[&keys.root[0], &keys.root[1]]);
    r.apply(0, &header(EntryKind::Root, None, &[], &root, 0), &root).unwrap();
    r
}

#[test]
fn first_entry_must_be_the_root() {
    let keys = RootKeys::new(1);
    let body = action(ActionKind::Note { text: "hello".into() }, &keys.admin[0]);
    let err = State::new().apply(0, &header(EntryKind::Note, Some(&keys.admin[0]), &[], &body, 0), &body).unwrap_err();
    assert!(err.to_string().contains("first entry"), "{err}");
}

#[test]
fn admin_issues_and_revokes_an_identity() {
    let keys = RootKeys::new(1);
    let mut r = genesis(&keys);
    let customer = key(90);
    let body = action(issue(IdentityRole::Engineer, "eng-1", &customer, b"cert"), &keys.admin[0]);
    r.apply(1, &header(EntryKind::Identity, Some(&keys.admin[0]), &["eng-1"], &body, 1), &body).unwrap();
    // An engineer's key waits for the second admin's approval.
    assert!(r.identity(&Sha256Digest::of(b"cert")).is_none());
    let ok = approve(&body, &keys.admin[1]);
    r.apply(2, &header(EntryKind::Approval, Some(&keys.admin[1]), &[], &ok, 2), &ok).unwrap();
    let id = r.identity(&Sha256Digest::of(b"cert")).unwrap();
    assert_eq!((id.role, id.subject.as_str(), id.revoked.is_none()), (IdentityRole::Engineer, "eng-1", true));
    assert!(r.identity_of_key(&customer.key_id()).is_some());

    let revoke = action(
        ActionKind::RevokeIdentity { certificate_sha256: Sha256Digest::of(b"cert"), compromised_since: Some(NOW) },
        &keys.admin[1],
    );
    r.apply(3, &header(EntryKind::Revocation, Some(&keys.admin[1]), &[], &revoke, 3), &revoke).unwrap();
    assert!(r.identity(&Sha256Digest::of(b"cert")).unwrap().revoked.is_some());
    assert!(r.identity_of_key(&customer.key_id()).is_none());
    // Twice is refused (a new action: the same one again is a re-recording).
    let again = action(
        ActionKind::RevokeIdentity { certificate_sha256: Sha256Digest::of(b"cert"), compromised_since: None },
        &keys.admin[1],
    );
    let err = r.apply(4, &header(EntryKind::Revocation, Some(&keys.admin[1]), &[], &again, 4), &again).unwrap_err();
    assert!(err.to_string().contains("already revoked"), "{err}");
    let err = r.apply(4, &header(EntryKind::Revocation, Some(&keys.admin[1]), &[], &revoke, 4), &revoke).unwrap_err();
    assert!(err.to_string().contains("re-records the action of entry 3"), "{err}");
}

#[test]
fn action_signed_by_a_key_not_in_the_root_is_refused() {
    let keys = RootKeys::new(1);
    let mut r = genesis(&keys);
    let outsider = key(91);
    let body = action(ActionKind::Note { text: "I am an admin".into() }, &outsider);
    let err = r.apply(1, &header(EntryKind::Note, Some(&outsider), &[], &body, 1), &body).unwrap_err();
    assert!(err.to_string().contains("0 valid signature(s)"), "{err}");
    assert_eq!(r.size(), 1);
}

#[test]
fn actor_must_be_the_signer() {
    let keys = RootKeys::new(1);
    let mut r = genesis(&keys);
    let body = action(ActionKind::Note { text: "x".into() }, &keys.admin[0]);
    let err = r.apply(1, &header(EntryKind::Note, Some(&keys.admin[1]), &[], &body, 1), &body).unwrap_err();
    assert!(err.to_string().contains("actor must be the key that signed"), "{err}");
}

#[test]
fn admin_identity_needs_a_key_listed_in_the_root() {
    let keys = RootKeys::new(1);
    let mut r = genesis(&keys);
    let body = action(issue(IdentityRole::Admin, "admin3", &key(92), b"c3"), &keys.admin[0]);
    let err = r.apply(1, &header(EntryKind::Identity, Some(&keys.admin[0]), &["admin3"], &body, 1), &body).unwrap_err();
    assert!(err.to_string().contains("admin role"), "{err}");
    let body = action(issue(IdentityRole::Admin, "admin2", &keys.admin[1], b"c2"), &keys.admin[0]);
    r.apply(1, &header(EntryKind::Identity, Some(&keys.admin[0]), &["admin2"], &body, 1), &body).unwrap();
}

#[test]
fn one_signing_key_cannot_be_registered_twice() {
    let keys = RootKeys::new(1);
    let mut r = genesis(&keys);
    let k = key(93);
    let a = action(issue(IdentityRole::Engineer, "eng-1", &k, b"c1"), &keys.admin[0]);
    r.apply(1, &header(EntryKind::Identity, Some(&keys.admin[0]), &["eng-1"], &a, 1), &a).unwrap();
    let ok = approve(&a, &keys.admin[1]);
    r.apply(2, &header(EntryKind::Approval, Some(&keys.admin[1]), &[], &ok, 2), &ok).unwrap();
    let b = action(issue(IdentityRole::Engineer, "eng-2", &k, b"c2"), &keys.admin[0]);
    let err = r.apply(3, &header(EntryKind::Identity, Some(&keys.admin[0]), &["eng-2"], &b, 3), &b).unwrap_err();
    assert!(err.to_string().contains("already registered"), "{err}");
}

#[test]
fn ledger_time_never_goes_backwards() {
    let keys = RootKeys::new(1);
    let mut r = genesis(&keys);
    let body = action(ActionKind::Note { text: "x".into() }, &keys.admin[0]);
    let err = r.apply(1, &header(EntryKind::Note, Some(&keys.admin[0]), &[], &body, -5), &body).unwrap_err();
    assert!(err.to_string().contains("backwards"), "{err}");
}

#[test]
fn root_rotation_is_a_ledger_entry() {
    let keys = RootKeys::new(1);
    let mut r = genesis(&keys);
    let v2 = signed_root(&root_metadata(&keys, 2, next_year(), false), &[&keys.root[0], &keys.root[1]]);
    r.apply(1, &header(EntryKind::Root, None, &[], &v2, 1), &v2).unwrap();
    assert_eq!(r.root_entries(), &[RootEntry { index: 0, version: 1 }, RootEntry { index: 1, version: 2 }]);
    let v4 = signed_root(&root_metadata(&keys, 4, next_year(), false), &[&keys.root[0], &keys.root[1]]);
    let err = r.apply(2, &header(EntryKind::Root, None, &[], &v4, 2), &v4).unwrap_err();
    assert!(err.to_string().contains("does not follow"), "{err}");
}
