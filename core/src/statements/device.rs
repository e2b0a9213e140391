//! What a deployment's agent signs: its check-ins and its install reports.
//! Both carry the last checkpoint the agent holds, so auditors can check
//! that every agent saw one consistent history (`docs/formats.md` §8 and §11).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Payload, SchemaV1, StatementError, check_id, fixed_tag, invalid};
use crate::digest::{Sha256Digest, Timestamp};

fixed_tag!(
    /// `_type` of a check-in.
    CheckInTag = str "checkin"
);
fixed_tag!(
    /// `_type` of an install report.
    ReportTag = str "report"
);

/// A checkpoint named by its size and root hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointRef {
    /// Tree size.
    pub size: u64,
    /// Root hash (hex).
    pub root_hash: Sha256Digest,
}

/// Payload of `application/vnd.covenant.checkin.v1+json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckIn {
    /// Always `"checkin"`.
    #[serde(rename = "_type")]
    pub type_tag: CheckInTag,
    /// Always 1.
    pub schema: SchemaV1,
    /// The deployment id.
    pub deployment: String,
    /// The product line.
    pub product: String,
    /// The version installed now.
    pub installed_version: semver::Version,
    /// Its capability baseline.
    pub installed_baseline: semver::Version,
    /// Digests of the installed software, by path.
    #[serde(default)]
    pub software_digests: BTreeMap<String, Sha256Digest>,
    /// Digest of the running configuration.
    pub configuration_digest: Sha256Digest,
    /// The last checkpoint the agent holds, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<CheckpointRef>,
    /// 32 fresh random bytes, hex; the freshness answer must echo them.
    pub nonce: Sha256Digest,
    /// The agent's notion of now.
    pub time: Timestamp,
}

impl Payload for CheckIn {
    const PAYLOAD_TYPE: &'static str = "application/vnd.covenant.checkin.v1+json";

    fn validate(&self) -> Result<(), StatementError> {
        check_id("deployment", &self.deployment)?;
        check_id("product", &self.product)?;
        if self.installed_baseline > self.installed_version {
            return Err(invalid("installed_baseline", "must not be newer than the installed version"));
        }
        Ok(())
    }
}

/// How an installation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstallOutcome {
    /// The new version runs and passed its health check.
    Installed,
    /// It could not be installed; the old version runs.
    Failed,
    /// It was installed, failed its health check and was switched back.
    RolledBack,
}

/// Payload of `application/vnd.covenant.report.v1+json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallReport {
    /// Always `"report"`.
    #[serde(rename = "_type")]
    pub type_tag: ReportTag,
    /// Always 1.
    pub schema: SchemaV1,
    /// The deployment id.
    pub deployment: String,
    /// Ledger index of the grant acted on.
    pub grant_index: u64,
    /// The outcome.
    pub outcome: InstallOutcome,
    /// The version before.
    pub from_version: semver::Version,
    /// The version the grant named.
    pub to_version: semver::Version,
    /// The last checkpoint the agent holds.
    pub last_checkpoint: CheckpointRef,
    /// The agent's notion of now.
    pub time: Timestamp,
}

impl Payload for InstallReport {
    const PAYLOAD_TYPE: &'static str = "application/vnd.covenant.report.v1+json";

    fn validate(&self) -> Result<(), StatementError> {
        check_id("deployment", &self.deployment)?;
        if self.to_version <= self.from_version {
            return Err(invalid("to_version", "must be newer than from_version"));
        }
        Ok(())
    }
}
