//! The agent's configuration: `agent.toml` in the state directory (written
//! by `provision`, edited by the operator).
//!
//! ```toml
//! server = "https://updates.vendor.example:8443"
//! # server_name = "updates.vendor.example"   # the name in the server's certificate
//! poll_seconds = 3600          # between check-ins (with jitter)
//! stall_seconds = 60           # a download with no byte for this long is retried later
//! max_artifact_mib = 4096      # larger releases are refused
//! max_grant_validity_days = 7  # grants valid for longer are refused (bounds how long
//!                              # a grant voided by a later suspension can be served)
//! allow_development = false    # accept a development root (test benches only)
//! installer = ["/usr/sbin/flash-image"]      # optional: run before switching slots
//! health_check = ["/usr/sbin/selftest"]      # optional: run after switching; failure switches back
//! hook_timeout_seconds = 300
//! ```

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::engine::{Hook, Settings};

/// The configuration file's name in the state directory.
pub const FILE: &str = "agent.toml";

/// `agent.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The server's URL (`https://host:port`).
    pub server: String,
    /// The name the server's certificate carries (default: the URL's host,
    /// or `localhost` for an IP address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Seconds between check-ins.
    pub poll_seconds: u64,
    /// Seconds without a byte before a download counts as stalled.
    pub stall_seconds: u64,
    /// The largest artifact accepted, in MiB.
    pub max_artifact_mib: u64,
    /// Grants valid for longer than this many days are refused: a server
    /// holding the decision key could serve a grant that a later suspension
    /// voided until it expires, so this bounds that window.
    pub max_grant_validity_days: u64,
    /// Whether a development root is acceptable.
    pub allow_development: bool,
    /// The installer command, if the product has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installer: Option<Vec<String>>,
    /// The health check command, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<Vec<String>>,
    /// How long the installer and the health check may run.
    pub hook_timeout_seconds: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: String::new(),
            server_name: None,
            poll_seconds: 3600,
            stall_seconds: 60,
            max_artifact_mib: 4096,
            max_grant_validity_days: 7,
            allow_development: false,
            installer: None,
            health_check: None,
            hook_timeout_seconds: 300,
        }
    }
}

impl Config {
    /// Reads `path`.
    pub fn read(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("{} is not a valid agent configuration", path.display()))
    }

    /// Writes `path`.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, toml::to_string_pretty(self)?).with_context(|| format!("writing {}", path.display()))
    }

    /// The engine's settings, for the state directory `state`.
    pub fn settings(&self, state: &Path) -> Settings {
        let timeout = Duration::from_secs(self.hook_timeout_seconds.max(1));
        let hook =
            |argv: &Option<Vec<String>>| argv.clone().filter(|a| !a.is_empty()).map(|argv| Hook { argv, timeout });
        let text = toml::to_string(self).unwrap_or_default();
        Settings {
            max_artifact_size: self.max_artifact_mib.saturating_mul(1 << 20),
            stall: Duration::from_secs(self.stall_seconds.max(1)),
            max_grant_validity: i64::try_from(self.max_grant_validity_days.saturating_mul(86_400)).unwrap_or(i64::MAX),
            allow_development: self.allow_development,
            installer: hook(&self.installer),
            health_check: hook(&self.health_check),
            state_dir: Some(state.to_path_buf()),
            configuration_digest: covenant_core::digest::Sha256Digest::of(text.as_bytes()),
        }
    }

    /// The name to expect in the server's certificate.
    pub fn server_name(&self) -> String {
        if let Some(name) = &self.server_name {
            return name.clone();
        }
        let host = self.server.trim_start_matches("https://").split([':', '/']).next().unwrap_or("localhost");
        let is_ip = host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[');
        if is_ip || host.is_empty() { "localhost".to_owned() } else { host.to_owned() }
    }
}
