//! The air-gapped cycle (docs/offline.md): [`Agent::offline_request`]
//! writes a check-in signed by the device and remembers its nonce as the
//! one outstanding request; [`Agent::offline_install`] checks a bundle's
//! head against that request (this deployment, this nonce, not expired),
//! forgets the request (a bundle is used once), and hands the answer to the
//! same verification, download (from the bundle, hashed as it is read),
//! A/B install and health check as an online cycle. The transport is the
//! bundle (`crate::bundle::BundleTransport`), which sends no report: the
//! signed install reports stay queued until [`Agent::hand_over_reports`]
//! has the receipt holding them written, so a power cut never loses one.

use covenant_core::digest::Timestamp;
use covenant_core::offline::Head;
use covenant_proto::v1 as pb;
use covenant_storage::Storage;
use prost::Message as _;

use super::{Agent, AgentError, Checked, OfflineError, Transport};

impl<S: Storage, T: Transport> Agent<S, T> {
    /// A check-in signed by the device, its nonce remembered as the one
    /// outstanding offline request (replacing any older one).
    pub async fn offline_request(&mut self, now: Timestamp) -> Result<Vec<u8>, AgentError> {
        self.recover().await?;
        let held = self.trust()?;
        let now = now.max(held.time);
        let (checkin, nonce) = self.signed_checkin(&held, now)?;
        self.store.set_outstanding(&nonce)?;
        Ok(checkin)
    }

    /// Installs from a bundle whose head is `head` (the transport serves its
    /// root chain and artifact): refused unless it answers this device's
    /// outstanding request and has not expired; then exactly an online
    /// cycle's verification and install. The install reports stay queued
    /// for [`Agent::hand_over_reports`].
    pub async fn offline_install(
        &mut self,
        head: &Head,
        now: Timestamp,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Checked, AgentError> {
        self.recover().await?;
        let held = self.trust()?;
        let now = now.max(held.time);
        let identity = self.store.identity()?;
        if head.deployment != identity.deployment {
            return Err(
                OfflineError::AnotherDevice { expected: identity.deployment, found: head.deployment.clone() }.into()
            );
        }
        let outstanding = self.store.outstanding()?.ok_or(OfflineError::NoRequest)?;
        if head.nonce != outstanding {
            return Err(OfflineError::AnotherRequest { expected: outstanding, found: head.nonce }.into());
        }
        head.check_expiry(now).map_err(OfflineError::Format)?;
        let response =
            pb::CheckInResponse::decode(head.answer.as_slice()).map_err(|e| OfflineError::Answer(e.to_string()))?;
        // Used once, whatever follows: a copy of this bundle is refused.
        self.store.clear_outstanding()?;
        let chain = self.transport.root_chain(held.root.version() + 1).await.map_err(AgentError::Transport)?;
        self.rule(&held, now, &chain, &response, outstanding, progress).await
    }

    /// Hands the queued install reports to `keep` (which writes the receipt
    /// and makes it durable) and only then drops them from the queue: a cut
    /// before `keep` returns leaves them queued for the next receipt, and a
    /// report in two receipts is recorded once by the server. Returns how
    /// many were handed over.
    pub fn hand_over_reports<E>(
        &mut self,
        keep: impl FnOnce(Vec<Vec<u8>>) -> Result<(), E>,
    ) -> Result<Result<usize, E>, AgentError> {
        let pending = self.store.pending_reports()?;
        let (paths, reports): (Vec<String>, Vec<Vec<u8>>) = pending.into_iter().unzip();
        if let Err(e) = keep(reports) {
            return Ok(Err(e));
        }
        for path in &paths {
            self.store.remove(path)?;
        }
        Ok(Ok(paths.len()))
    }
}
