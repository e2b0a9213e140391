//! Staging and installing a release: the download (resume from the staged
//! bytes, hash as it goes, refuse more than declared or an out-of-order
//! chunk, a stall timeout), the install into the inactive slot (optional
//! installer, `trial`, switch `current` by one rename, health check with a
//! timeout), and running a [`Hook`](super::Hook).

use covenant_core::digest::Sha256Digest;
use covenant_core::statements::InstallOutcome;
use covenant_core::update::Authorization;
use covenant_storage::{Storage, parent};
use sha2::Digest as _;

use super::{Agent, AgentError, Checked, Chunks, Hook, Transport};
use crate::store::{Phase, Slot, SlotMeta, Store, Trial};

impl<S: Storage, T: Transport> Agent<S, T> {
    /// Stages the artifact (module docs).
    pub(super) async fn download(
        &mut self,
        auth: &Authorization,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(), AgentError> {
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
    pub(super) async fn install(&mut self, auth: &Authorization, from: SlotMeta) -> Result<Checked, AgentError> {
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

    pub(super) async fn health(&self, slot: Slot) -> Result<(), String> {
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
