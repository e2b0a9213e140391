//! The agent's state directory, through [`Storage`] so the power-cut tests
//! run on the simulated file system.
//!
//! ```text
//! root.json            the newest trusted root (its envelope)
//! checkpoint           the last checkpoint accepted (signed note)
//! time                 the newest verified time (unix seconds)
//! identity.json        deployment id and product
//! current              "a" or "b": the active slot, switched by one rename
//! slots/a/meta.json    the version in slot a (and its artifact's digest)
//! slots/a/artifact     its artifact (absent for the factory image)
//! staging/<hex>.part   a download in progress, named by the release digest
//! trial                the switch under way: slots, release, phase, attempts
//! verdict.json         the last verdict and its reasons
//! reports/*.pending    signed install reports not yet acknowledged
//! failed               releases that failed here (never tried again)
//! offline-request      the nonce of the outstanding offline request (hex)
//! LOCK                 held by the one agent process using the directory
//! ```
//!
//! Every small file is written whole: to `NAME.tmp`, synced, renamed over
//! `NAME`, and its directory synced. A power cut leaves the old or the new
//! file, never a mix.

use std::io;

use covenant_core::digest::{Sha256Digest, Timestamp};
use covenant_core::statements::{ConditionResult, ConditionStatus, SuspensionLevel, WithheldRelease};
use covenant_storage::{Storage, parent};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// The device's signing key (hex seed, 0600), made by `enroll-request`.
pub const SIGNING_KEY: &str = "signing.key";
/// The device's TLS key (PEM, 0600), made by `enroll-request`.
pub const TLS_KEY: &str = "key.pem";
/// The certificate request `enroll-request` makes for the vendor.
pub const REQUEST: &str = "request.csr";
/// The device's certificate, from the bundle ([`covenant_core::provision::CERT`]).
pub const CERT: &str = covenant_core::provision::CERT;
/// The vendor's CA, from the bundle ([`covenant_core::provision::CA`]).
pub const CA: &str = covenant_core::provision::CA;
const ROOT: &str = "root.json";
const CHECKPOINT: &str = "checkpoint";
const TIME: &str = "time";
const IDENTITY: &str = "identity.json";
/// The active slot's name; present once the directory is provisioned.
pub const CURRENT: &str = "current";
const TRIAL: &str = "trial";
const VERDICT: &str = "verdict.json";
const FAILED: &str = "failed";
const STAGING: &str = "staging";
const REPORTS: &str = "reports";
const OFFLINE_REQUEST: &str = "offline-request";

/// One of the two slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    /// Slot a.
    A,
    /// Slot b.
    B,
}

impl Slot {
    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// Its name: `a` or `b`.
    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    fn parse(s: &str) -> Option<Slot> {
        match s.trim() {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        }
    }

    /// The slot's folder, relative to the state directory.
    pub fn dir(self) -> String {
        format!("slots/{}", self.name())
    }

    /// The slot's artifact path.
    pub fn artifact(self) -> String {
        format!("slots/{}/artifact", self.name())
    }

    fn meta(self) -> String {
        format!("slots/{}/meta.json", self.name())
    }
}

/// What a slot holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotMeta {
    /// The version.
    pub version: semver::Version,
    /// Its capability baseline.
    pub baseline: semver::Version,
    /// The artifact's SHA-256 and size; none for the factory image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<(Sha256Digest, u64)>,
    /// The release digest and the grant's ledger index it was installed under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<(Sha256Digest, u64)>,
}

/// Where a switch between slots stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Switching to the target, then its health check.
    Switching,
    /// The health check failed: switching back.
    RollingBack,
}

/// A switch between slots under way (`trial`), so a restart finishes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trial {
    /// The slot active before.
    pub previous: Slot,
    /// The slot switched to.
    pub target: Slot,
    /// The release installed into the target.
    pub release: Sha256Digest,
    /// The grant's ledger index.
    pub grant_index: u64,
    /// Where it stands.
    pub phase: Phase,
    /// Health checks started (a release whose check keeps killing the
    /// device is rolled back after a few).
    pub attempts: u32,
}

/// Who this agent is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentIdentity {
    /// The deployment id.
    pub deployment: String,
    /// The product line.
    pub product: String,
}

/// What a check-in concluded; stored and printed as `current`, `granted`,
/// `withheld` or `refused`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// No newer release exists.
    Current,
    /// A newer release is granted.
    Granted,
    /// A newer release is withheld; the reasons are in the verdict.
    Withheld,
    /// The answer failed verification; `refusal` says why.
    Refused,
}

impl Verdict {
    /// Its name, as stored and printed: `current`, `granted`, `withheld`
    /// or `refused`.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Current => "current",
            Verdict::Granted => "granted",
            Verdict::Withheld => "withheld",
            Verdict::Refused => "refused",
        }
    }
}

/// The last verdict, as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastVerdict {
    /// What the check-in concluded.
    pub verdict: Verdict,
    /// When it was checked (the agent's verified now).
    pub checked_at: Timestamp,
    /// The decision's ledger index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    /// The granted version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted: Option<semver::Version>,
    /// The conditions not met, with their reasons.
    #[serde(default)]
    pub unmet: Vec<ConditionResult>,
    /// Newer releases withheld, and why.
    #[serde(default)]
    pub withheld: Vec<WithheldRelease>,
    /// The suspension in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspension: Option<SuspensionLevel>,
    /// Why the answer was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

impl LastVerdict {
    /// Whether two verdicts say the same thing (times and indices aside):
    /// the daemon logs a verdict only when this changes.
    pub fn same_as(&self, other: &LastVerdict) -> bool {
        self.verdict == other.verdict
            && self.granted == other.granted
            && self.unmet == other.unmet
            && self.withheld == other.withheld
            && self.suspension == other.suspension
            && self.refusal == other.refusal
    }

    /// The unmet conditions of a decision.
    pub fn unmet_of(conditions: &[ConditionResult]) -> Vec<ConditionResult> {
        conditions.iter().filter(|c| c.status == ConditionStatus::Unmet).cloned().collect()
    }
}

/// The state directory.
#[derive(Debug)]
pub struct Store<S> {
    fs: S,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{what} in the state directory is unreadable: {e}"))
}

impl<S: Storage> Store<S> {
    /// The state directory on `fs`.
    pub fn new(fs: S) -> Self {
        Store { fs }
    }

    /// The storage.
    pub fn fs(&self) -> &S {
        &self.fs
    }

    /// Writes `path` whole (module docs).
    pub fn write_atomic(&self, path: &str, bytes: &[u8]) -> io::Result<()> {
        let tmp = format!("{path}.tmp");
        let created = self.fs.write(&tmp, bytes)?;
        self.fs.sync(&tmp)?;
        for dir in &created {
            self.fs.sync_dir(parent(dir))?;
        }
        self.fs.rename(&tmp, path)?;
        self.fs.sync_dir(parent(path))
    }

    /// Removes `path` durably.
    pub fn remove(&self, path: &str) -> io::Result<()> {
        self.fs.remove(path)?;
        self.fs.sync_dir(parent(path))
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> io::Result<Option<T>> {
        match self.fs.read(path)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| corrupt(path, e)),
        }
    }

    fn write_json<T: Serialize>(&self, path: &str, value: &T) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
        self.write_atomic(path, &bytes)
    }

    /// The trusted root's envelope.
    pub fn root(&self) -> io::Result<Vec<u8>> {
        self.fs.read(ROOT)?.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no root.json: provision first"))
    }

    /// Stores a newer trusted root.
    pub fn set_root(&self, bytes: &[u8]) -> io::Result<()> {
        self.write_atomic(ROOT, bytes)
    }

    /// The last checkpoint accepted.
    pub fn checkpoint(&self) -> io::Result<Option<Vec<u8>>> {
        self.fs.read(CHECKPOINT)
    }

    /// Stores the last checkpoint accepted.
    pub fn set_checkpoint(&self, note: &[u8]) -> io::Result<()> {
        self.write_atomic(CHECKPOINT, note)
    }

    /// The newest verified time.
    pub fn time(&self) -> io::Result<Option<Timestamp>> {
        Ok(self.fs.read(TIME)?.and_then(|b| String::from_utf8(b).ok()?.trim().parse().ok()).map(Timestamp::from_unix))
    }

    /// Stores the newest verified time (never lower than the one stored).
    pub fn set_time(&self, t: Timestamp) -> io::Result<()> {
        if self.time()?.is_some_and(|old| old >= t) {
            return Ok(());
        }
        self.write_atomic(TIME, t.unix().to_string().as_bytes())
    }

    /// The nonce of the outstanding offline request, if any.
    pub fn outstanding(&self) -> io::Result<Option<Sha256Digest>> {
        let Some(bytes) = self.fs.read(OFFLINE_REQUEST)? else { return Ok(None) };
        let text = String::from_utf8(bytes).map_err(|e| corrupt(OFFLINE_REQUEST, e))?;
        let raw = hex::decode(text.trim()).map_err(|e| corrupt(OFFLINE_REQUEST, e))?;
        let nonce: [u8; 32] = raw.try_into().map_err(|_| corrupt(OFFLINE_REQUEST, "not 32 bytes"))?;
        Ok(Some(Sha256Digest(nonce)))
    }

    /// Remembers `nonce` as the one outstanding offline request (a newer
    /// request replaces an older one, whose answer is then refused).
    pub fn set_outstanding(&self, nonce: &Sha256Digest) -> io::Result<()> {
        self.write_atomic(OFFLINE_REQUEST, hex::encode(nonce.0).as_bytes())
    }

    /// Forgets the outstanding offline request (its answer is being used).
    pub fn clear_outstanding(&self) -> io::Result<()> {
        if self.fs.read(OFFLINE_REQUEST)?.is_some() { self.remove(OFFLINE_REQUEST) } else { Ok(()) }
    }

    /// Who this agent is.
    pub fn identity(&self) -> io::Result<AgentIdentity> {
        self.read_json(IDENTITY)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no identity.json: provision first"))
    }

    /// Records who this agent is.
    pub fn set_identity(&self, id: &AgentIdentity) -> io::Result<()> {
        self.write_json(IDENTITY, id)
    }

    /// The active slot.
    pub fn current(&self) -> io::Result<Slot> {
        let bytes = self
            .fs
            .read(CURRENT)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no active slot: provision first"))?;
        Slot::parse(&String::from_utf8_lossy(&bytes)).ok_or_else(|| corrupt(CURRENT, "not a or b"))
    }

    /// Makes `slot` the active one: one atomic rename.
    pub fn set_current(&self, slot: Slot) -> io::Result<()> {
        self.write_atomic(CURRENT, slot.name().as_bytes())
    }

    /// What `slot` holds, if it is complete.
    pub fn slot(&self, slot: Slot) -> io::Result<Option<SlotMeta>> {
        self.read_json(&slot.meta())
    }

    /// Records what `slot` holds (after its artifact is in place and synced).
    pub fn set_slot(&self, slot: Slot, meta: &SlotMeta) -> io::Result<()> {
        self.write_json(&slot.meta(), meta)
    }

    /// Empties `slot`: the metadata first, so a half-emptied slot is never
    /// taken for a complete one.
    pub fn clear_slot(&self, slot: Slot) -> io::Result<()> {
        // The folder itself must exist (and be durable) before files move in.
        for dir in self.fs.write(&format!("{}/.slot", slot.dir()), b"")? {
            self.fs.sync_dir(parent(&dir))?;
        }
        self.fs.remove(&slot.meta())?;
        self.fs.remove(&slot.artifact())?;
        self.fs.sync_dir(&slot.dir())
    }

    /// The active slot's metadata.
    pub fn installed(&self) -> io::Result<SlotMeta> {
        let slot = self.current()?;
        self.slot(slot)?.ok_or_else(|| corrupt("the active slot", "it has no meta.json"))
    }

    /// Checks that `slot` is complete: its metadata is there and its
    /// artifact has the recorded size and SHA-256.
    pub fn verify_slot(&self, slot: Slot) -> io::Result<bool> {
        let Some(meta) = self.slot(slot)? else { return Ok(false) };
        let Some((sha, size)) = meta.artifact else { return Ok(true) };
        if self.fs.len(&slot.artifact())? != Some(size) {
            return Ok(false);
        }
        Ok(self.hash_prefix(&slot.artifact(), size)? == sha)
    }

    /// The SHA-256 of the first `len` bytes of `path`, read in pieces.
    pub fn hash_prefix(&self, path: &str, len: u64) -> io::Result<Sha256Digest> {
        Ok(Sha256Digest(self.hasher_of(path, len)?.finalize().into()))
    }

    /// A hasher fed the first `len` bytes of `path`.
    pub fn hasher_of(&self, path: &str, len: u64) -> io::Result<sha2::Sha256> {
        const PIECE: u64 = 1 << 20;
        let mut h = sha2::Sha256::new();
        let mut at = 0;
        while at < len {
            let n = (len - at).min(PIECE);
            h.update(self.fs.read_range(path, at, n as usize)?);
            at += n;
        }
        Ok(h)
    }

    /// The last verdict.
    pub fn verdict(&self) -> io::Result<Option<LastVerdict>> {
        self.read_json(VERDICT)
    }

    /// Records the last verdict.
    pub fn set_verdict(&self, v: &LastVerdict) -> io::Result<()> {
        self.write_json(VERDICT, v)
    }

    /// The switch under way, if any.
    pub fn trial(&self) -> io::Result<Option<Trial>> {
        self.read_json(TRIAL)
    }

    /// Records the switch under way (before each step that changes `current`).
    pub fn set_trial(&self, trial: &Trial) -> io::Result<()> {
        self.write_json(TRIAL, trial)
    }

    /// Ends the switch under way (it concluded, or never switched).
    pub fn clear_trial(&self) -> io::Result<()> {
        self.remove(TRIAL)
    }

    /// The releases that failed here (their installer or health check):
    /// never tried again. Unreadable lines are skipped.
    pub fn failed(&self) -> io::Result<Vec<Sha256Digest>> {
        Ok(self
            .fs
            .read(FAILED)?
            .map(|b| String::from_utf8_lossy(&b).lines().filter_map(|l| Sha256Digest::from_hex(l.trim())).collect())
            .unwrap_or_default())
    }

    /// Records that `release` failed here.
    pub fn add_failed(&self, release: Sha256Digest) -> io::Result<()> {
        let mut failed = self.failed()?;
        if !failed.contains(&release) {
            failed.push(release);
        }
        let text: String = failed.iter().map(|d| format!("{d}\n")).collect();
        self.write_atomic(FAILED, text.as_bytes())
    }

    /// Makes the staging folder's entries durable (a staged file created,
    /// or moved into a slot).
    pub fn sync_staging(&self) -> io::Result<()> {
        self.fs.sync_dir(STAGING)
    }

    /// The names of the staged downloads.
    pub fn staged(&self) -> io::Result<Vec<String>> {
        self.fs.list(STAGING)
    }

    /// The signed install reports not yet acknowledged, oldest first, with
    /// their file names.
    pub fn pending_reports(&self) -> io::Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        for name in self.fs.list(REPORTS)? {
            if name.ends_with(".pending") {
                let path = format!("{REPORTS}/{name}");
                if let Some(bytes) = self.fs.read(&path)? {
                    out.push((path, bytes));
                }
            }
        }
        Ok(out)
    }

    /// Keeps a signed install report until the server acknowledges it;
    /// reports queue (named by the grant's index and the outcome), so an
    /// unacknowledged one is never overwritten by the next.
    pub fn add_pending_report(&self, grant_index: u64, outcome: &str, report: &[u8]) -> io::Result<()> {
        self.write_atomic(&format!("{REPORTS}/{grant_index:020}-{outcome}.pending"), report)
    }

    /// The staging file of a release.
    pub fn staging(release: &Sha256Digest) -> String {
        format!("{STAGING}/{release}.part")
    }

    /// Removes half-written `.tmp` files a power cut may leave.
    pub fn sweep_tmp(&self) -> io::Result<()> {
        for dir in ["", "slots/a", "slots/b"] {
            for name in self.fs.list(dir)? {
                if name.ends_with(".tmp") {
                    self.fs.remove(&if dir.is_empty() { name } else { format!("{dir}/{name}") })?;
                }
            }
        }
        Ok(())
    }

    /// Removes the staging files of releases other than `keep`.
    pub fn sweep_staging(&self, keep: &Sha256Digest) -> io::Result<()> {
        let keep = Self::staging(keep);
        for name in self.fs.list(STAGING)? {
            let path = format!("{STAGING}/{name}");
            if path != keep {
                self.fs.remove(&path)?;
            }
        }
        Ok(())
    }
}
