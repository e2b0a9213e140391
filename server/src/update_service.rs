//! UpdateService: a deployment's check-in (answered by `checkin::answer`),
//! its downloads of a granted release, and its install reports.

use covenant_core::digest::Sha256Digest;
use covenant_core::envelope;
use covenant_core::ledger::{EntryHeader, EntryKind};
use covenant_core::note::TlogProof;
use covenant_core::policy;
use covenant_core::state::classify;
use covenant_core::statements::{IdentityRole, InstallReport, Payload as _};
use covenant_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::artifacts;
use crate::checkin::{self, CheckInAnswer, LedgerView};
use crate::datadir;
use crate::metrics::{OutcomeLabel, VerdictLabel};
use crate::node::{Node, async_stream_with, checkin_status, read_status, refusal_status, within};

/// The chunk a download sends (at most one more goes out after a grant is
/// voided or a certificate revoked, plus what the bounded queue holds).
///
/// Chosen by measurement (`cargo bench -p covenant-tests --bench download`,
/// part (d), 1 GiB to a bulk client on 2 cores): 64 KiB 510 MB/s, 128 KiB
/// 542, 256 KiB 575, 512 KiB 625, 1 MiB 592. 512 KiB is 9% faster but lets
/// up to 1 MiB out after a voided grant, the whole bound; 256 KiB
/// keeps half of it in hand.
pub const DOWNLOAD_CHUNK: usize = 256 * 1024;

impl Node {
    /// The deployment holds a standing grant of `release`: its newest
    /// decision grants it, unexpired, and the state now would still grant it.
    /// The refusal is the same whether or not `release` exists, so a caller
    /// without the grant learns nothing about it.
    fn grant_holds(&self, deployment: &str, fingerprint: &Sha256Digest, release: &Sha256Digest) -> Result<(), Status> {
        self.still_registered(fingerprint)?;
        let state = self.registry.state.read().map_err(|_| Status::internal("registry lock poisoned"))?;
        let last = state.facts().decisions_of(deployment).last();
        let holds =
            last.is_some_and(|d| d.release.as_ref() == Some(release) && policy::grant_stands(&state, d, self.now()));
        if holds {
            Ok(())
        } else {
            Err(Status::permission_denied("this deployment holds no standing grant of this release"))
        }
    }

    /// The index of an install report already recorded, by payload digest.
    fn recorded_report(&self, digest: &Sha256Digest) -> Result<Option<u64>, Status> {
        let state = self.registry.state.read().map_err(|_| Status::internal("registry lock poisoned"))?;
        Ok(state.facts().report_index(digest))
    }

    /// The answer to a report recorded at `index`: its index and an
    /// inclusion proof against the newest checkpoint.
    fn report_answer(&self, index: u64) -> Result<Response<pb::ReportResponse>, Status> {
        let cp = self.ledger.checkpoint();
        let proof = self.ledger.inclusion_proof(index, cp.size).map_err(read_status)?;
        let text = TlogProof { extra: None, index, proof, checkpoint: cp.note.clone() }.to_text();
        Ok(Response::new(pb::ReportResponse { index, inclusion: Some(pb::TlogProof { text: text.into_bytes() }) }))
    }

    /// Streams the artifact of `req`'s release to a caller (certificate
    /// `fingerprint`) for `deployment`, which must hold a standing grant of
    /// it: the deployment itself, or an engineer carrying its files.
    pub(crate) fn serve_artifact(
        &self,
        deployment: String,
        fingerprint: Sha256Digest,
        req: pb::DownloadRequest,
    ) -> Result<Response<ArtifactStream>, Status> {
        let release = Sha256Digest(
            req.release_digest
                .as_slice()
                .try_into()
                .map_err(|_| Status::invalid_argument("release_digest is 32 bytes"))?,
        );
        // Authorise first: only a deployment holding a standing grant of
        // this release learns whether it exists and how large it is.
        self.grant_holds(&deployment, &fingerprint, &release)?;
        let (artifact, size, customer) = {
            let state = self.registry.state.read().map_err(|_| Status::internal("registry lock poisoned"))?;
            let r = state.facts().release(&release).ok_or_else(|| Status::not_found("no such release"))?;
            let customer = state
                .deployment(&deployment)
                .map(|d| d.customer.clone())
                .ok_or_else(|| Status::permission_denied("this deployment is not registered"))?;
            (r.manifest.artifact.sha256, r.manifest.artifact.size, customer)
        };
        if req.offset > size {
            return Err(Status::out_of_range(format!("the artifact has {size} bytes")));
        }
        let stream_slot = self.streams.take(fingerprint)?;
        let slot = (self.downloads.take(fingerprint, &customer)?, stream_slot);
        let mut file = artifacts::open_at(&self.data, &artifact, req.offset)
            .map_err(|e| Status::internal(format!("the artifact: {e}")))?;
        let node = self.clone();
        let chunk = self.download_chunk;
        let idle = self.download_idle;
        let progress = self.download_progress;
        let (stalled, last_word) = tokio::sync::oneshot::channel();
        // One chunk queued at most, and each checked only once there is room
        // for it: memory stays flat, and when a grant is voided at most the
        // queued chunk and the one in the transport still go out.
        let stream = async_stream_with(self.closing.clone(), 1, move |tx| async move {
            let _slot = slot;
            let _active = Active::new(&node.metrics.downloads_active);
            let mut offset = req.offset;
            let mut checked_at = u64::MAX;
            // The window of the progress rule: when it began, and where.
            let mut window = (tokio::time::Instant::now(), offset);
            while offset < size {
                // A stream that sent less than the rule's bytes (or what was
                // left) in a window is closed: a trickle keeps no slot.
                if window.0.elapsed() >= progress.window {
                    let due = progress.bytes.min(size - window.1);
                    if offset - window.1 < due {
                        let _ = stalled.send(Status::deadline_exceeded(format!(
                            "the download took {} bytes in {} s, under the least of {} bytes a window; it is closed \
                             (resume from the bytes you have)",
                            offset - window.1,
                            progress.window.as_secs_f64(),
                            progress.bytes
                        )));
                        return;
                    }
                    window = (tokio::time::Instant::now(), offset);
                }
                // Room for the next chunk comes only as the client reads; a
                // client that reads nothing for `idle` loses the stream and
                // its slot (else a few idle devices hold every slot).
                let permit = match tokio::time::timeout(idle, tx.reserve()).await {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_)) => return,
                    Err(_) => {
                        let _ = stalled.send(Status::deadline_exceeded(format!(
                            "no chunk was taken for {} s; the download is closed (resume from the bytes you have)",
                            idle.as_secs_f64()
                        )));
                        return;
                    }
                };
                // Re-check the grant whenever the state changed, and the
                // certificate every chunk: a suspension or a revocation
                // stops the bytes within one chunk.
                let now_size = node.registry.state.read().map(|s| s.size()).unwrap_or(0);
                let check = if now_size != checked_at {
                    checked_at = now_size;
                    node.grant_holds(&deployment, &fingerprint, &release)
                } else {
                    node.still_registered(&fingerprint)
                };
                if let Err(status) = check {
                    permit.send(Err(status));
                    return;
                }
                let want = usize::try_from((size - offset).min(chunk as u64)).unwrap_or(chunk);
                let mut data = vec![0u8; want];
                if let Err(e) = tokio::task::block_in_place(|| std::io::Read::read_exact(&mut file, &mut data)) {
                    permit.send(Err(Status::internal(format!("reading the artifact: {e}"))));
                    return;
                }
                permit.send(Ok(pb::DownloadChunk { offset, data }));
                node.metrics.download_bytes.inc_by(want as u64);
                offset += want as u64;
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::StreamExt::chain(stream, LastWord(Some(last_word))))))
    }

    /// Records a device-signed install report about `deployment` (sent by
    /// the deployment, or carried back by an engineer).
    pub(crate) async fn record_report(
        &self,
        deployment: &str,
        body: Vec<u8>,
    ) -> Result<Response<pb::ReportResponse>, Status> {
        within(&body, "install report", covenant_core::statements::MAX_REPORT_ENVELOPE_BYTES)?;
        // Within the report's own limits (one signature), before any work.
        let env = envelope::Envelope::parse_for::<InstallReport>(&body)
            .map_err(|e| Status::invalid_argument(format!("the install report is refused: {e}")))?;
        let placed = classify(&body).map_err(refusal_status)?;
        if placed.subjects != [deployment.to_owned()] {
            return Err(Status::permission_denied("a deployment reports on itself only"));
        }
        // A report is recorded once. The same report again (an agent whose
        // acknowledgement was lost keeps sending it until one arrives) is
        // answered with the entry that recorded it, so the agent stops.
        let digest = Sha256Digest::of(env.payload());
        if let Some(index) = self.recorded_report(&digest)? {
            return self.report_answer(index);
        }
        // Another report of an outcome already reported for the grant is
        // refused before the sequencer: one report per outcome and grant
        // bounds a device's reports by its decisions.
        let report = InstallReport::parse(env.payload()).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let reported = {
            let state = self.registry.state.read().map_err(|_| Status::internal("registry lock poisoned"))?;
            state.facts().report_of(report.grant_index, report.outcome)
        };
        if let Some(first) = reported {
            datadir::bounded(datadir::Bounded::Report, deployment);
            return Err(Status::already_exists(format!(
                "the outcome of grant {} is already reported as {} (entry {first})",
                report.grant_index,
                covenant_core::state::outcome_name(report.outcome)
            )));
        }
        match self.submit(body, &[EntryKind::Report]).await {
            Ok(done) => Ok(Response::new(pb::ReportResponse { index: done.index, inclusion: done.inclusion })),
            // The same report, sent twice at once: the sequencer took one.
            Err(status) => match self.recorded_report(&digest)? {
                Some(index) => self.report_answer(index),
                None => Err(status),
            },
        }
    }
}

/// A download stream open: counted while it lives.
struct Active(prometheus_client::metrics::gauge::Gauge);

impl Active {
    fn new(gauge: &prometheus_client::metrics::gauge::Gauge) -> Active {
        gauge.inc();
        Active(gauge.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[tonic::async_trait]
impl pb::update_service_server::UpdateService for Node {
    async fn check_in(&self, request: Request<pb::CheckInRequest>) -> Result<Response<pb::CheckInResponse>, Status> {
        let caller = self.caller(&request)?;
        self.require(&caller, &[IdentityRole::Deployment])?;
        let bytes = request.into_inner().checkin;
        let view = LedgerView {
            registry: &self.registry,
            ledger: &self.ledger,
            cosigned: &self.cosigned,
            witnesses: self.witnesses,
            decision: self.decision.as_deref(),
        };
        let now = self.now();
        let answer = match checkin::answer(&view, &bytes, &caller.subject, None, now).await {
            Ok(answer) => answer,
            Err(e) => {
                self.metrics.checkins.get_or_create(&OutcomeLabel { outcome: "refused" }).inc();
                return Err(checkin_status(e));
            }
        };
        self.seen.record(&caller.subject, now);
        let verdict = answer
            .decision
            .as_ref()
            .and_then(|d| EntryHeader::parse(&d.header).ok())
            .map(|h| if h.kind == EntryKind::Grant { "grant" } else { "withhold" });
        self.metrics.checkins.get_or_create(&OutcomeLabel { outcome: verdict.unwrap_or("current") }).inc();
        if answer.logged
            && let Some(verdict) = verdict
        {
            self.metrics.decisions.get_or_create(&VerdictLabel { verdict }).inc();
        }
        Ok(Response::new(checkin_response(answer)))
    }

    type DownloadStream = ArtifactStream;

    async fn download(&self, request: Request<pb::DownloadRequest>) -> Result<Response<Self::DownloadStream>, Status> {
        let caller = self.caller(&request)?;
        self.require(&caller, &[IdentityRole::Deployment])?;
        let fingerprint = caller.fingerprint;
        self.serve_artifact(caller.subject, fingerprint, request.into_inner())
    }

    async fn report(&self, request: Request<pb::ReportRequest>) -> Result<Response<pb::ReportResponse>, Status> {
        let caller = self.caller(&request)?;
        self.require(&caller, &[IdentityRole::Deployment])?;
        self.record_report(&caller.subject, request.into_inner().report).await
    }
}

/// A stream of an artifact's chunks.
pub(crate) type ArtifactStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::DownloadChunk, Status>> + Send>>;

/// A check-in answer as the wire carries it.
pub(crate) fn checkin_response(answer: CheckInAnswer) -> pb::CheckInResponse {
    pb::CheckInResponse {
        freshness: answer.freshness,
        decision: answer.decision.map(|e| pb::LedgerEntry {
            index: e.index,
            header: e.header,
            body: e.body,
            salt: e.salt,
        }),
        inclusion: answer.inclusion.map(|text| pb::TlogProof { text: text.into_bytes() }),
        consistency: answer.consistency.iter().map(|h| h.to_vec()).collect(),
        release_manifest: answer.release_manifest,
    }
}

/// The end of a download stream: the status the sending task left when it
/// gave up on an idle client, if it did (it cannot queue it: the queue is
/// full, which is why it gave up).
struct LastWord(Option<tokio::sync::oneshot::Receiver<Status>>);

impl tokio_stream::Stream for LastWord {
    type Item = Result<pb::DownloadChunk, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::future::Future as _;
        let Some(rx) = self.0.as_mut() else { return std::task::Poll::Ready(None) };
        let word = std::task::ready!(std::pin::Pin::new(rx).poll(cx));
        self.0 = None;
        std::task::Poll::Ready(word.ok().map(Err))
    }
}
