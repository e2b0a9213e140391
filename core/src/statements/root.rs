//! The root document: per role, its keys and threshold; a version, an
//! expiry and the development flag. The chain rules live in [`crate::root`].

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{Payload, SchemaV1, StatementError, fixed_tag, invalid};
use crate::digest::Timestamp;
use crate::keys::{KeyError, KeySet, PublicKey};
use crate::note::is_valid_key_name;

fixed_tag!(
    /// `_type` of a root document.
    RootTag = str "root"
);

/// One key of a role. Ledger and witness keys also carry the signed-note
/// key name their checkpoints and cosignatures use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootKey {
    /// The Ed25519 public key, 64 hex digits.
    pub public: PublicKey,
    /// The signed-note key name (ledger and witness keys only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note_name: Option<String>,
}

/// A role's keys and the number of distinct signatures it takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    /// The keys.
    pub keys: Vec<RootKey>,
    /// Distinct valid signatures needed (for `witness`: cosignatures an
    /// agent requires on a checkpoint; for `admin`: approvals a heavy action
    /// needs).
    pub threshold: u32,
}

impl RoleSpec {
    /// The role as a key set. A witness role with threshold 0 has no key set
    /// (see [`crate::root`]).
    pub fn key_set(&self) -> Result<KeySet, KeyError> {
        KeySet::new(self.keys.iter().map(|k| k.public), self.threshold)
    }
}

/// The roles of the root of trust.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Roles {
    /// Signs root documents (offline).
    pub root: RoleSpec,
    /// Signs release manifests (offline).
    pub release: RoleSpec,
    /// Signs grants, withholds and freshness objects (online, the server).
    pub decision: RoleSpec,
    /// Signs checkpoints (online, the server).
    pub ledger: RoleSpec,
    /// Cosigns checkpoints (independent auditors).
    pub witness: RoleSpec,
    /// Compliance officers; the threshold is the approval count heavy
    /// actions need.
    pub admin: RoleSpec,
}

impl Roles {
    /// Every role with its name, in a fixed order.
    pub fn all(&self) -> [(&'static str, &RoleSpec); 6] {
        [
            ("root", &self.root),
            ("release", &self.release),
            ("decision", &self.decision),
            ("ledger", &self.ledger),
            ("witness", &self.witness),
            ("admin", &self.admin),
        ]
    }
}

/// Payload of `application/vnd.covenant.root.v1+json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootMetadata {
    /// Always `"root"`.
    #[serde(rename = "_type")]
    pub type_tag: RootTag,
    /// Always 1.
    pub schema: SchemaV1,
    /// 1 for the first root, then exactly one more per rotation.
    pub version: u64,
    /// After this instant the newest root is no longer trusted.
    pub expires: Timestamp,
    /// A development root may have a witness threshold of 0; agents accept
    /// one only when configured to.
    #[serde(default)]
    pub development: bool,
    /// The roles.
    pub roles: Roles,
}

impl Payload for RootMetadata {
    const PAYLOAD_TYPE: &'static str = "application/vnd.covenant.root.v1+json";

    fn validate(&self) -> Result<(), StatementError> {
        if self.version == 0 {
            return Err(invalid("version", "must be 1 or more"));
        }
        let mut seen = BTreeSet::new();
        for (name, role) in self.roles.all() {
            let distinct: BTreeSet<_> = role.keys.iter().map(|k| k.public.key_id()).collect();
            if distinct.len() != role.keys.len() {
                return Err(invalid(role_field(name), "lists the same key twice"));
            }
            for id in &distinct {
                // One key, one role: a decision key must never count as a
                // release signature, and so on.
                if !seen.insert(*id) {
                    return Err(invalid(role_field(name), "uses a key that another role already uses"));
                }
            }
            let zero_allowed = name == "witness" && self.development;
            if role.threshold == 0 && !zero_allowed {
                return Err(invalid(
                    role_field(name),
                    if name == "witness" {
                        "threshold 0 (no witnesses) is allowed only in a development root"
                    } else {
                        "threshold must be 1 or more"
                    },
                ));
            }
            if role.threshold as usize > distinct.len() {
                return Err(invalid(role_field(name), "threshold is larger than the number of keys"));
            }
            // Dual control (`docs/policy.md`): a heavy action needs a second,
            // distinct admin; only a development root may waive that.
            if name == "admin" && role.threshold < 2 && !self.development {
                return Err(invalid(role_field(name), "threshold must be 2 or more outside a development root"));
            }
            let needs_name = matches!(name, "ledger" | "witness");
            for key in &role.keys {
                match (&key.note_name, needs_name) {
                    (Some(n), true) if is_valid_key_name(n) => {}
                    (Some(_), true) => {
                        return Err(invalid(role_field(name), "note_name must be non-empty with no spaces or '+'"));
                    }
                    (None, true) => return Err(invalid(role_field(name), "every key needs its note_name")),
                    (Some(_), false) => {
                        return Err(invalid(role_field(name), "only ledger and witness keys carry a note_name"));
                    }
                    (None, false) => {}
                }
            }
        }
        Ok(())
    }
}

fn role_field(name: &str) -> &'static str {
    match name {
        "root" => "roles.root",
        "release" => "roles.release",
        "decision" => "roles.decision",
        "ledger" => "roles.ledger",
        "witness" => "roles.witness",
        _ => "roles.admin",
    }
}
