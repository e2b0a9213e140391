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
use covenant_core::update::{self, Answer, AnswerBytes, Asked, Authorization, EntryBytes, Refusal, Ruling, Trust};
use covenant_proto::v1 as pb;
use covenant_storage::{Storage, parent};
use sha2::Digest as _;

use crate::store::{LastVerdict, Phase, Slot, SlotMeta, Store, Trial, Verdict};

/// Health checks a switch may start before the release is rolled back (a
/// check that keeps cutting the power or killing the agent).
pub const MAX_HEALTH_ATTEMPTS: u32 = 3;

/// Why a cycle stopped. Each attack on the updater ends in one of these,
/// with nothing installed and the active slot untouched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The answer failed verification.
    #[error("the server's answer is refused: {0}")]
    Refused(#[from] Refusal),
    /// The downloaded bytes are not the release's artifact.
    #[error("the downloaded artifact has SHA-256 {found}, the release names {expected}; discarded")]
    ArbitrarySoftware {
        /// The release's digest.
        expected: Sha256Digest,
        /// What arrived.
        found: Sha256Digest,
    },
    /// The stream sent more than the release declares.
    #[error("the stream sent more than the {declared} bytes the release declares")]
    EndlessData {
        /// The declared size.
        declared: u64,
    },
    /// A chunk arrived for another offset than the next one.
    #[error("a chunk for offset {found} arrived where offset {expected} was next")]
    OutOfOrder {
        /// The next offset.
        expected: u64,
        /// The chunk's.
        found: u64,
    },
    /// No byte arrived for too long; the bytes so far are kept for resuming.
    #[error("the download stalled for {seconds} s at byte {at}; it resumes on the next attempt")]
    Stalled {
        /// The stall timeout.
        seconds: u64,
        /// Bytes staged.
        at: u64,
    },
    /// The stream ended before the declared size; resumes later.
    #[error("the stream ended at byte {at} of {declared}; it resumes on the next attempt")]
    Truncated {
        /// Bytes staged.
        at: u64,
        /// The declared size.
        declared: u64,
    },
    /// The server could not be reached, failed, or refuses this device
    /// ([`TransportError`] says which).
    #[error("{0}")]
    Transport(#[from] TransportError),
    /// The state directory.
    #[error("the state directory: {0}")]
    Storage(#[from] std::io::Error),
    /// The state directory holds something unusable.
    #[error("the state directory: {0}")]
    State(String),
}

impl AgentError {
    /// Whether retrying later may succeed without anyone acting (the
    /// daemon backs off and retries these).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            AgentError::Stalled { .. }
                | AgentError::Truncated { .. }
                | AgentError::Transport(TransportError::Network(_) | TransportError::Server { .. })
        )
    }

    /// Whether only the vendor can clear this: the server refuses the
    /// device itself (its certificate revoked or not registered), so
    /// calling again cannot succeed and the daemon stops instead.
    pub fn needs_the_vendor(&self) -> bool {
        matches!(self, AgentError::Transport(TransportError::Refused { .. }))
    }
}

/// Why a call to the server failed, by what the agent should do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// No answer: no connection, a failed handshake, a deadline, a server
    /// that is down. Retried with back-off.
    #[error("the server: {0}")]
    Network(String),
    /// The server answered with an error that may pass (a rate limit, an
    /// internal error, a grant withdrawn since the check-in). Retried with
    /// back-off.
    #[error("the server: {message}")]
    Server {
        /// The gRPC status code.
        code: tonic::Code,
        /// The server's words.
        message: String,
    },
    /// The server refuses this device: its certificate is revoked, not
    /// registered, or not this deployment's (`Unauthenticated` or
    /// `PermissionDenied` on a check-in). Not retried: the vendor must act.
    #[error("the server refuses this device ({code:?}): {message}")]
    Refused {
        /// The gRPC status code.
        code: tonic::Code,
        /// The server's words.
        message: String,
    },
}

/// The server as the agent sees it.
#[allow(async_fn_in_trait)] // used on one thread; no Send bound needed
pub trait Transport {
    /// A download in progress.
    type Chunks: Chunks;
    /// The root chain from version `from` on.
    async fn root_chain(&mut self, from: u64) -> Result<Vec<Vec<u8>>, TransportError>;
    /// Sends a signed check-in.
    async fn check_in(&mut self, checkin: Vec<u8>) -> Result<pb::CheckInResponse, TransportError>;
    /// Starts a download of `release` from `offset`.
    async fn download(&mut self, release: Sha256Digest, offset: u64) -> Result<Self::Chunks, TransportError>;
    /// Sends a signed install report.
    async fn report(&mut self, report: Vec<u8>) -> Result<(), ReportError>;
}

/// Why the server did not acknowledge an install report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportError {
    /// The server's ledger refused it (a rule of the fold, or an outcome
    /// already reported): the same bytes will be refused again, so the
    /// report is dropped, not retried.
    Refused(String),
    /// It did not get through (no connection, a deadline, a rate limit):
    /// it is kept and sent again at the next cycle.
    Unsent(String),
}

/// The chunks of a download.
#[allow(async_fn_in_trait)]
pub trait Chunks {
    /// The next chunk (its offset and bytes), or `None` at the end.
    async fn next(&mut self) -> Result<Option<(u64, Vec<u8>)>, TransportError>;
}

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
        let identity = self.store.identity()?;
        let installed = self.store.installed()?;
        let chain = self.transport.root_chain(held.root.version() + 1).await.map_err(AgentError::Transport)?;
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
        let response =
            self.transport.check_in(envelope::sign(&checkin, &[&self.key])).await.map_err(AgentError::Transport)?;
        let consistency: Vec<Hash> = response.consistency.iter().filter_map(|h| h.as_slice().try_into().ok()).collect();
        if consistency.len() != response.consistency.len() {
            return self.refused(now, Refusal::Standing("a consistency hash is not 32 bytes"));
        }
        let answer = AnswerBytes {
            root_chain: &chain,
            freshness: &response.freshness,
            entry: response.decision.as_ref().map(|e| EntryBytes { header: &e.header, body: &e.body, salt: &e.salt }),
            release_manifest: &response.release_manifest,
            tlog_proof: response.inclusion.as_ref().map(|p| p.text.as_slice()).unwrap_or_default(),
            consistency: &consistency,
        };
        let asked = Asked {
            deployment: &identity.deployment,
            product: &identity.product,
            nonce: Sha256Digest(nonce),
            installed: &installed.version,
        };
        let limits = update::Limits {
            max_artifact_size: self.settings.max_artifact_size,
            max_grant_validity: self.settings.max_grant_validity,
        };
        let Answer { ruling, trust } = match update::verify_answer(&held, asked, answer, now, limits) {
            Ok(a) => a,
            Err(refusal) => return self.refused(now, refusal),
        };
        self.keep_trust(&held, &trust)?;
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

    /// Stages the artifact (module docs).
    async fn download(&mut self, auth: &Authorization, progress: &mut dyn FnMut(u64, u64)) -> Result<(), AgentError> {
        const SYNC_EVERY: u64 = 8 << 20;
        let release = auth.release_digest();
        let artifact = &auth.release().artifact;
        let size = artifact.size;
        let path = Store::<S>::staging(&release);
        self.store.sweep_staging(&release)?;
        let fs = self.store.fs();
        let mut have = fs.len(&path)?.unwrap_or(0);
        if have > size {
            self.store.remove(&path)?;
            have = 0;
        }
        let mut hasher = self.store.hasher_of(&path, have)?;
        if have < size {
            let stall = self.settings.stall;
            let stalled = |at| AgentError::Stalled { seconds: stall.as_secs(), at };
            let mut chunks = tokio::time::timeout(stall, self.transport.download(release, have))
                .await
                .map_err(|_| stalled(have))?
                .map_err(AgentError::Transport)?;
            let mut synced = have;
            // Only bytes count as progress: empty chunks do not hold the
            // stream open.
            let mut progressed = tokio::time::Instant::now();
            loop {
                let next = tokio::time::timeout_at(progressed + stall, chunks.next()).await;
                let Ok(next) = next else {
                    self.store.fs().sync(&path).ok();
                    return Err(stalled(have));
                };
                let Some((offset, data)) = next.map_err(AgentError::Transport)? else { break };
                if offset != have {
                    return Err(AgentError::OutOfOrder { expected: have, found: offset });
                }
                if have.saturating_add(data.len() as u64) > size {
                    return Err(AgentError::EndlessData { declared: size });
                }
                let fs = self.store.fs();
                for dir in fs.append(&path, &data)? {
                    fs.sync_dir(parent(&dir))?;
                }
                hasher.update(&data);
                if !data.is_empty() {
                    progressed = tokio::time::Instant::now();
                }
                have += data.len() as u64;
                if have - synced >= SYNC_EVERY {
                    fs.sync(&path)?;
                    synced = have;
                }
                progress(have, size);
            }
        }
        let fs = self.store.fs();
        if have < size {
            return Err(AgentError::Truncated { at: have, declared: size });
        }
        if size > 0 {
            fs.sync(&path)?;
            self.store.sync_staging()?;
        }
        let found = Sha256Digest(hasher.finalize().into());
        if found != artifact.sha256 {
            self.store.remove(&path)?;
            return Err(AgentError::ArbitrarySoftware { expected: artifact.sha256, found });
        }
        Ok(())
    }

    /// Installs a staged, verified artifact (module docs).
    async fn install(&mut self, auth: &Authorization, from: SlotMeta) -> Result<Checked, AgentError> {
        let release = auth.release_digest();
        let manifest = auth.release();
        let previous = self.store.current()?;
        let target = previous.other();
        let staged = Store::<S>::staging(&release);
        self.store.clear_slot(target)?;
        let fs = self.store.fs();
        if manifest.artifact.size == 0 {
            fs.write(&target.artifact(), &[])?;
            fs.sync(&target.artifact())?;
            let _ = fs.remove(&staged);
        } else {
            fs.rename(&staged, &target.artifact())?;
        }
        self.store.sync_staging()?;
        fs.sync_dir(&target.dir())?;
        let meta = SlotMeta {
            version: manifest.version.clone(),
            baseline: manifest.capability_baseline.clone(),
            artifact: Some((manifest.artifact.sha256, manifest.artifact.size)),
            grant: Some((release, auth.grant_index())),
        };
        self.store.set_slot(target, &meta)?;
        if let Some(installer) = self.settings.installer.clone()
            && let Err(why) = self.run_hook(&installer, target, &meta).await
        {
            eprintln!("covenant-agent: the installer refused version {}: {why}", meta.version);
            self.mark_failed(Some(release))?;
            self.write_report(auth.grant_index(), InstallOutcome::Failed, &from.version, &meta.version)?;
            self.send_reports().await;
            return Ok(Checked::Failed(meta.version));
        }
        let trial =
            Trial { previous, target, release, grant_index: auth.grant_index(), phase: Phase::Switching, attempts: 1 };
        self.store.set_trial(&trial)?;
        self.store.set_current(target)?;
        let healthy = self.health(target).await;
        self.conclude(&trial, healthy).await
    }

    async fn health(&self, slot: Slot) -> Result<(), String> {
        let Some(hook) = &self.settings.health_check else { return Ok(()) };
        let meta = self.store.slot(slot).map_err(|e| e.to_string())?.ok_or("the slot has no metadata")?;
        self.run_hook(hook, slot, &meta).await
    }

    async fn run_hook(&self, hook: &Hook, slot: Slot, meta: &SlotMeta) -> Result<(), String> {
        let (program, args) = hook.argv.split_first().ok_or("the command is empty")?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args).kill_on_drop(true).env("COVENANT_VERSION", meta.version.to_string());
        if let Some(dir) = &self.settings.state_dir {
            cmd.env("COVENANT_SLOT_DIR", dir.join(slot.dir())).env("COVENANT_ARTIFACT", dir.join(slot.artifact()));
        }
        let mut child = cmd.spawn().map_err(|e| format!("{program} could not start: {e}"))?;
        match tokio::time::timeout(hook.timeout, child.wait()).await {
            Err(_) => Err(format!("{program} did not finish within {} s", hook.timeout.as_secs())),
            Ok(Err(e)) => Err(format!("{program}: {e}")),
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(format!("{program} exited with {status}")),
        }
    }
}
