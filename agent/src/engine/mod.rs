//! One update cycle: check in, verify the answer with
//! [`covenant_core::update::verify_answer`], download (resuming, hashing,
//! never past the declared size, timing out a stalled stream), install into
//! the inactive slot, switch with one rename, health-check, switch back on
//! failure, and report. Generic over the storage (so power cuts are tested
//! on the simulated file system) and over the transport (so attacks are
//! tested with a server that lies).

use std::time::Duration;

use covenant_core::digest::{Sha256Digest, Timestamp};
use covenant_core::envelope;
use covenant_core::keys::SigningKey;
use covenant_core::merkle::Hash;
use covenant_core::note::TrustedCheckpoint;
use covenant_core::root::{RootPolicy, TrustedRoot};
use covenant_core::statements::{
    CheckIn, CheckInTag, CheckpointRef, InstallOutcome, InstallReport, ReportTag, SchemaV1,
};
use covenant_core::update::{self, Answer, AnswerBytes, Asked, EntryBytes, Refusal, Ruling, Trust};
use covenant_proto::v1 as pb;
use covenant_storage::Storage;

use crate::store::{LastVerdict, Phase, Store, Trial, Verdict};

/// Health checks a switch may start before the release is rolled back (a
/// check that keeps cutting the power or killing the agent).
pub const MAX_HEALTH_ATTEMPTS: u32 = 3;

mod error;
mod install;
mod offline;
mod transport;

pub use error::{AgentError, OfflineError};
pub use transport::{Chunks, ReportError, Transport, TransportError};

/// An external command (an installer or a health check) with a timeout.
#[derive(Debug, Clone)]
pub struct Hook {
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// How long it may run.
    pub timeout: Duration,
}

/// How the agent behaves.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The largest artifact accepted.
    pub max_artifact_size: u64,
    /// A download with no byte for this long is stalled.
    pub stall: Duration,
    /// The longest a grant may be valid, in seconds (see
    /// [`update::Limits::max_grant_validity`]).
    pub max_grant_validity: i64,
    /// Whether a development root is acceptable.
    pub allow_development: bool,
    /// Run after the artifact is in the inactive slot, before switching;
    /// failure leaves the active slot as it was.
    pub installer: Option<Hook>,
    /// Run after switching; failure switches back.
    pub health_check: Option<Hook>,
    /// The state directory on disk, for the hooks' environment.
    pub state_dir: Option<std::path::PathBuf>,
    /// Digest of the running configuration, sent with every check-in.
    pub configuration_digest: Sha256Digest,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_artifact_size: 4 << 30,
            stall: Duration::from_secs(60),
            max_grant_validity: update::DEFAULT_MAX_GRANT_VALIDITY,
            allow_development: false,
            installer: None,
            health_check: None,
            state_dir: None,
            configuration_digest: Sha256Digest::of(b""),
        }
    }
}

/// How a cycle ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// No newer release exists.
    Current,
    /// A newer release is withheld; the verdict has the reasons.
    Withheld,
    /// A release was installed and passed its health check.
    Installed(semver::Version),
    /// A release was installed, failed its health check and was switched back.
    RolledBack(semver::Version),
    /// The installer refused a release; nothing was switched.
    Failed(semver::Version),
    /// The grant names a release that failed here before; it is not retried.
    Skipped(semver::Version),
}

/// The agent: its state, its server, its key.
pub struct Agent<S, T> {
    store: Store<S>,
    transport: T,
    key: SigningKey,
    settings: Settings,
}

/// `now` from the system clock.
pub fn system_now() -> Timestamp {
    Timestamp::since_epoch(std::time::SystemTime::now())
}

/// A stored checkpoint as a check-in or a report names it.
fn checkpoint_ref(c: &TrustedCheckpoint) -> CheckpointRef {
    CheckpointRef { size: c.checkpoint().size, root_hash: Sha256Digest(c.checkpoint().root_hash) }
}

impl<S: Storage, T: Transport> Agent<S, T> {
    /// An agent over `store`, calling `transport`, signing with `key`.
    pub fn new(store: Store<S>, transport: T, key: SigningKey, settings: Settings) -> Self {
        Agent { store, transport, key, settings }
    }

    /// Takes the agent apart (a test restarts one after a power cut).
    pub fn into_parts(self) -> (Store<S>, T, SigningKey, Settings) {
        (self.store, self.transport, self.key, self.settings)
    }

    /// The state directory.
    pub fn store(&self) -> &Store<S> {
        &self.store
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The transport (tests reach the fake server through it).
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    fn trust(&self) -> Result<Trust, AgentError> {
        let policy = RootPolicy { allow_development: self.settings.allow_development };
        let root = TrustedRoot::restore(&self.store.root()?, policy)
            .map_err(|e| AgentError::State(format!("the stored root: {e}")))?;
        let checkpoint = match self.store.checkpoint()? {
            None => None,
            Some(b) => Some(
                TrustedCheckpoint::restore(&b).map_err(|e| AgentError::State(format!("the stored checkpoint: {e}")))?,
            ),
        };
        let time = self.store.time()?.unwrap_or(Timestamp::from_unix(0));
        Ok(Trust { root, checkpoint, time })
    }

    /// Finishes what a power cut interrupted: half-written files go, and a
    /// switch under way (`trial`) is finished: not yet switched, it is
    /// dropped; switched, the health check runs again (a release whose
    /// check was cut [`MAX_HEALTH_ATTEMPTS`] times is rolled back); rolling
    /// back, the rollback completes. The active slot always holds a
    /// complete version.
    pub async fn recover(&mut self) -> Result<(), AgentError> {
        self.store.sweep_tmp()?;
        let Some(mut trial) = self.store.trial()? else { return Ok(()) };
        let current = self.store.current()?;
        match trial.phase {
            Phase::Switching if current == trial.previous => {
                // Cut before the switch: nothing changed.
                self.store.clear_trial()?;
            }
            Phase::Switching if trial.attempts >= MAX_HEALTH_ATTEMPTS => {
                let why = format!("its health check was cut short {} times", trial.attempts);
                self.conclude(&trial, Err(why)).await?;
            }
            Phase::Switching => {
                trial.attempts += 1;
                self.store.set_trial(&trial)?;
                let healthy = self.health(trial.target).await;
                self.conclude(&trial, healthy).await?;
            }
            Phase::RollingBack => {
                self.conclude(&trial, Err("the rollback was cut short".into())).await?;
            }
        }
        Ok(())
    }

    /// Concludes a switch: kept if healthy, else switched back (the phase
    /// recorded first, so a cut finishes the rollback) and the release
    /// marked failed; then the report is queued and sent.
    async fn conclude(&mut self, trial: &Trial, healthy: Result<(), String>) -> Result<Checked, AgentError> {
        let to =
            self.store.slot(trial.target)?.ok_or_else(|| AgentError::State("the new slot lost its metadata".into()))?;
        let from = self
            .store
            .slot(trial.previous)?
            .ok_or_else(|| AgentError::State("the old slot lost its metadata".into()))?;
        let (outcome, checked) = match healthy {
            Ok(()) => (InstallOutcome::Installed, Checked::Installed(to.version.clone())),
            Err(why) => {
                eprintln!(
                    "covenant-agent: version {} failed its health check ({why}); switching back to {}",
                    to.version, from.version
                );
                self.store.set_trial(&Trial { phase: Phase::RollingBack, ..trial.clone() })?;
                self.store.set_current(trial.previous)?;
                self.mark_failed(Some(trial.release))?;
                (InstallOutcome::RolledBack, Checked::RolledBack(to.version.clone()))
            }
        };
        self.write_report(trial.grant_index, outcome, &from.version, &to.version)?;
        self.store.clear_trial()?;
        self.send_reports().await;
        Ok(checked)
    }

    fn mark_failed(&self, release: Option<Sha256Digest>) -> Result<(), AgentError> {
        let Some(release) = release else { return Ok(()) };
        Ok(self.store.add_failed(release)?)
    }

    fn write_report(
        &self,
        grant_index: u64,
        outcome: InstallOutcome,
        from: &semver::Version,
        to: &semver::Version,
    ) -> Result<(), AgentError> {
        let identity = self.store.identity()?;
        // What the agent stored: no need to check the root's signatures again.
        let held = match self.store.checkpoint()? {
            Some(b) => TrustedCheckpoint::restore(&b).ok(),
            None => None,
        };
        let last_checkpoint = held
            .as_ref()
            .map(checkpoint_ref)
            .ok_or_else(|| AgentError::State("no checkpoint to report against".into()))?;
        let time = self.store.time()?.unwrap_or(Timestamp::from_unix(0));
        let report = InstallReport {
            type_tag: ReportTag,
            schema: SchemaV1,
            deployment: identity.deployment,
            grant_index,
            outcome,
            from_version: from.clone(),
            to_version: to.clone(),
            last_checkpoint,
            time: system_now().max(time),
        };
        let name = match outcome {
            InstallOutcome::Installed => "installed",
            InstallOutcome::Failed => "failed",
            InstallOutcome::RolledBack => "rolled-back",
        };
        self.store.add_pending_report(grant_index, name, &envelope::sign(&report, &[&self.key]))?;
        Ok(())
    }

    /// Sends the pending install reports, oldest first; keeps each that
    /// did not get through, and drops (with a line in the log) each the
    /// server refused: sending the same signed bytes again cannot change
    /// the ledger's answer, and the device's software is what it is either
    /// way (the ledger records what it can prove, and a check-in whose
    /// claim differs shows the officer the difference). Returns whether
    /// none is left.
    pub async fn send_reports(&mut self) -> bool {
        let Ok(pending) = self.store.pending_reports() else { return false };
        for (path, report) in pending {
            match self.transport.report(report).await {
                Ok(()) => {}
                Err(ReportError::Refused(why)) => {
                    eprintln!("covenant-agent: the server refused the install report {path} ({why}); it is dropped");
                }
                Err(ReportError::Unsent(e)) => {
                    eprintln!("covenant-agent: the install report is kept for later: {e}");
                    return false;
                }
            }
            if self.store.remove(&path).is_err() {
                return false;
            }
        }
        true
    }

    /// One cycle (module docs). `now` is the device's clock; the agent
    /// never uses a time below the newest it verified. `progress` hears
    /// (bytes staged, bytes declared) while downloading.
    pub async fn check(&mut self, now: Timestamp, progress: &mut dyn FnMut(u64, u64)) -> Result<Checked, AgentError> {
        self.recover().await?;
        self.send_reports().await;
        let held = self.trust()?;
        let now = now.max(held.time);
        let chain = self.transport.root_chain(held.root.version() + 1).await.map_err(AgentError::Transport)?;
        let (checkin, nonce) = self.signed_checkin(&held, now)?;
        let response = self.transport.check_in(checkin).await.map_err(AgentError::Transport)?;
        self.rule(&held, now, &chain, &response, nonce, progress).await
    }

    /// A check-in signed by the device with a fresh nonce, and the nonce.
    fn signed_checkin(&self, held: &Trust, now: Timestamp) -> Result<(Vec<u8>, Sha256Digest), AgentError> {
        let identity = self.store.identity()?;
        let installed = self.store.installed()?;
        let mut nonce = [0u8; 32];
        getrandom::fill(&mut nonce).map_err(|e| AgentError::State(format!("no randomness: {e}")))?;
        let checkin = CheckIn {
            type_tag: CheckInTag,
            schema: SchemaV1,
            deployment: identity.deployment.clone(),
            product: identity.product.clone(),
            installed_version: installed.version.clone(),
            installed_baseline: installed.baseline.clone(),
            software_digests: installed.artifact.iter().map(|(sha, _)| ("artifact".to_owned(), *sha)).collect(),
            configuration_digest: self.settings.configuration_digest,
            last_checkpoint: held.checkpoint.as_ref().map(checkpoint_ref),
            nonce: Sha256Digest(nonce),
            time: now,
        };
        Ok((envelope::sign(&checkin, &[&self.key]), Sha256Digest(nonce)))
    }

    /// Verifies the server's answer to the check-in that carried `nonce`
    /// (with the same pure verification online and offline), records the
    /// verdict, and for a grant downloads and installs the release.
    async fn rule(
        &mut self,
        held: &Trust,
        now: Timestamp,
        chain: &[Vec<u8>],
        response: &pb::CheckInResponse,
        nonce: Sha256Digest,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Checked, AgentError> {
        let identity = self.store.identity()?;
        let installed = self.store.installed()?;
        let consistency: Vec<Hash> = response.consistency.iter().filter_map(|h| h.as_slice().try_into().ok()).collect();
        if consistency.len() != response.consistency.len() {
            return self.refused(now, Refusal::Standing("a consistency hash is not 32 bytes"));
        }
        let answer = AnswerBytes {
            root_chain: chain,
            freshness: &response.freshness,
            entry: response.decision.as_ref().map(|e| EntryBytes { header: &e.header, body: &e.body, salt: &e.salt }),
            release_manifest: &response.release_manifest,
            tlog_proof: response.inclusion.as_ref().map(|p| p.text.as_slice()).unwrap_or_default(),
            consistency: &consistency,
        };
        let asked = Asked {
            deployment: &identity.deployment,
            product: &identity.product,
            nonce,
            installed: &installed.version,
        };
        let limits = update::Limits {
            max_artifact_size: self.settings.max_artifact_size,
            max_grant_validity: self.settings.max_grant_validity,
        };
        let Answer { ruling, trust } = match update::verify_answer(held, asked, answer, now, limits) {
            Ok(a) => a,
            Err(refusal) => return self.refused(now, refusal),
        };
        self.keep_trust(held, &trust)?;
        let mut verdict = LastVerdict {
            verdict: Verdict::Current,
            checked_at: now.max(trust.time),
            index: None,
            granted: None,
            unmet: vec![],
            withheld: vec![],
            suspension: None,
            refusal: None,
        };
        match ruling {
            Ruling::Current => {
                self.record(verdict)?;
                Ok(Checked::Current)
            }
            Ruling::Withheld(w) => {
                verdict.verdict = Verdict::Withheld;
                verdict.index = Some(w.index);
                verdict.unmet = LastVerdict::unmet_of(&w.decision.conditions);
                verdict.withheld = w.decision.withheld_above.clone();
                verdict.suspension = Some(w.decision.suspension);
                self.record(verdict)?;
                Ok(Checked::Withheld)
            }
            Ruling::Granted(auth) => {
                verdict.verdict = Verdict::Granted;
                verdict.index = Some(auth.grant_index());
                verdict.granted = Some(auth.release().version.clone());
                verdict.withheld = auth.decision().withheld_above.clone();
                verdict.suspension = Some(auth.decision().suspension);
                self.record(verdict)?;
                if self.store.failed()?.contains(&auth.release_digest()) {
                    return Ok(Checked::Skipped(auth.release().version.clone()));
                }
                self.download(&auth, progress).await?;
                self.install(&auth, installed).await
            }
        }
    }

    fn refused(&self, now: Timestamp, refusal: Refusal) -> Result<Checked, AgentError> {
        let verdict = LastVerdict {
            verdict: Verdict::Refused,
            checked_at: now,
            index: None,
            granted: None,
            unmet: vec![],
            withheld: vec![],
            suspension: None,
            refusal: Some(refusal.to_string()),
        };
        self.record(verdict)?;
        Err(AgentError::Refused(refusal))
    }

    /// Stores the verdict; logs it when it changed.
    fn record(&self, verdict: LastVerdict) -> Result<(), AgentError> {
        // An unreadable old verdict counts as a change (it is replaced).
        let changed = self.store.verdict().ok().flatten().is_none_or(|old| !old.same_as(&verdict));
        if changed {
            eprintln!("covenant-agent: {}", crate::describe(&verdict));
        }
        Ok(self.store.set_verdict(&verdict)?)
    }

    fn keep_trust(&self, held: &Trust, trust: &Trust) -> Result<(), AgentError> {
        if trust.root.version() != held.root.version() {
            self.store.set_root(trust.root.bytes())?;
        }
        if let Some(cp) = &trust.checkpoint
            && held.checkpoint.as_ref().is_none_or(|old| old.checkpoint() != cp.checkpoint())
        {
            self.store.set_checkpoint(cp.verified().note().to_text().as_bytes())?;
        }
        Ok(self.store.set_time(trust.time)?)
    }
}
