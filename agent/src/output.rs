//! What `covenant-agent --json` prints, one type per answer, so that the
//! operator's scripts, the demo and the tests read the output back through
//! the same types the agent writes it with.
//!
//! The field names and nesting are the interface. Fields are declared in
//! alphabetical order, the order in which the ad-hoc JSON objects they
//! replace were printed.

use std::path::PathBuf;

use covenant_core::digest::Sha256Digest;
use serde::{Deserialize, Serialize};

use crate::engine::Checked;
use crate::store::LastVerdict;

/// `covenant-agent enroll-request --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolled {
    /// The certificate request to send to the vendor.
    pub csr: PathBuf,
    /// The device's signing key, public half, hex.
    pub signing_key: String,
}

/// How a `check` ended, in a word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// No newer release exists.
    Current,
    /// A newer release is withheld.
    Withheld,
    /// A release was installed and passed its health check.
    Installed,
    /// A release failed its health check and was switched back.
    RolledBack,
    /// The installer refused a release.
    Failed,
    /// The release failed here before; not retried.
    Skipped,
}

/// `covenant-agent check --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// How the cycle ended.
    pub outcome: Outcome,
    /// The version installed, rolled back, refused or skipped.
    pub version: Option<String>,
}

impl From<&Checked> for Check {
    fn from(c: &Checked) -> Self {
        let (outcome, version) = match c {
            Checked::Current => (Outcome::Current, None),
            Checked::Withheld => (Outcome::Withheld, None),
            Checked::Installed(v) => (Outcome::Installed, Some(v)),
            Checked::RolledBack(v) => (Outcome::RolledBack, Some(v)),
            Checked::Failed(v) => (Outcome::Failed, Some(v)),
            Checked::Skipped(v) => (Outcome::Skipped, Some(v)),
        };
        Check { outcome, version: version.map(ToString::to_string) }
    }
}

/// The active slot, in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    /// Its capability baseline.
    pub baseline: String,
    /// `a` or `b`.
    pub slot: String,
    /// Its version.
    pub version: String,
}

/// The ledger checkpoint held, in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointHeld {
    /// The tree's root hash.
    pub root_hash: Sha256Digest,
    /// The tree's size.
    pub size: u64,
}

/// `covenant-agent status --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The checkpoint held, if any.
    pub checkpoint: Option<CheckpointHeld>,
    /// The configuration digest a field engineer compares on site.
    pub configuration_digest: Option<Sha256Digest>,
    /// The deployment id.
    pub deployment: String,
    /// The active slot.
    pub installed: Installed,
    /// The product line.
    pub product: String,
    /// Whether an install report waits for the server's acknowledgement.
    pub report_pending: bool,
    /// The last verdict, if the device checked in.
    pub verdict: Option<LastVerdict>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Issue #17: `check --json` prints what the ad-hoc JSON printed.
    #[test]
    fn the_check_output_prints_what_the_ad_hoc_json_printed() {
        let v: semver::Version = "1.1.0".parse().unwrap();
        for (checked, outcome) in [
            (Checked::Current, "current"),
            (Checked::Withheld, "withheld"),
            (Checked::Installed(v.clone()), "installed"),
            (Checked::RolledBack(v.clone()), "rolled-back"),
            (Checked::Failed(v.clone()), "failed"),
            (Checked::Skipped(v.clone()), "skipped"),
        ] {
            let version = (!matches!(checked, Checked::Current | Checked::Withheld)).then(|| v.to_string());
            let old = serde_json::json!({ "outcome": outcome, "version": version });
            assert_eq!(serde_json::to_string(&Check::from(&checked)).unwrap(), old.to_string());
        }
    }
}
