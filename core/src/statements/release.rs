//! The release manifest: what a release is, what it is built on, and the
//! artifact it ships. A release's digest is the SHA-256 of these payload
//! bytes, not of the envelope (whose bytes grow as signatures are added).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Payload, SchemaV1, StatementError, check_id, check_text, fixed_tag, invalid};
use crate::digest::{Sha256Digest, Timestamp};

fixed_tag!(
    /// `_type` of a release manifest.
    ReleaseTag = str "release"
);

/// What kind of change a release is; the suspension table is keyed on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReleaseClass {
    /// New or changed capabilities.
    Capability,
    /// A security fix on an existing capability baseline.
    SecurityFix,
    /// Adds compliance features (audit hooks, logging).
    ComplianceEnabling,
    /// Removes capabilities.
    CapabilityRemoval,
}

impl fmt::Display for ReleaseClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReleaseClass::Capability => "capability",
            ReleaseClass::SecurityFix => "security-fix",
            ReleaseClass::ComplianceEnabling => "compliance-enabling",
            ReleaseClass::CapabilityRemoval => "capability-removal",
        })
    }
}

/// The artifact a release ships.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// File name, for people.
    pub name: String,
    /// SHA-256 of the artifact bytes.
    pub sha256: Sha256Digest,
    /// Exact size in bytes; an agent never accepts more.
    pub size: u64,
}

/// Payload of `application/vnd.covenant.release.v1+json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseManifest {
    /// Always `"release"`.
    #[serde(rename = "_type")]
    pub type_tag: ReleaseTag,
    /// Always 1.
    pub schema: SchemaV1,
    /// The product line (`lim`, `dpi`).
    pub product: String,
    /// Semantic version of this release.
    pub version: semver::Version,
    /// The kind of change.
    pub class: ReleaseClass,
    /// The last capability release whose features this build contains.
    pub capability_baseline: semver::Version,
    /// The artifact.
    pub artifact: Artifact,
    /// Digests of the files an installation of this release holds, by path
    /// (checked by the `integrity_match` condition).
    #[serde(default)]
    pub expected_installed_digests: BTreeMap<String, Sha256Digest>,
    /// When the vendor released it.
    pub released_at: Timestamp,
}

impl Payload for ReleaseManifest {
    const PAYLOAD_TYPE: &'static str = "application/vnd.covenant.release.v1+json";

    fn validate(&self) -> Result<(), StatementError> {
        check_id("product", &self.product)?;
        check_text("artifact.name", &self.artifact.name)?;
        if self.artifact.size == 0 {
            return Err(invalid("artifact.size", "must be greater than 0"));
        }
        if self.capability_baseline > self.version {
            return Err(invalid("capability_baseline", "must not be newer than the release's own version"));
        }
        if self.class == ReleaseClass::Capability && self.capability_baseline != self.version {
            return Err(invalid("capability_baseline", "a capability release is its own baseline"));
        }
        // What a check-in may report (a device's check-ins are bounded), so
        // that an installation of every release can match it.
        super::device::check_software_digests("expected_installed_digests", &self.expected_installed_digests)
    }
}
