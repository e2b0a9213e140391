//! The deployments' calls (UpdateService: check-in, install report) and the
//! people's submissions (AttestationService: attestations, verifications,
//! misuse signals, verdicts), and the release upload (AdminService.Publish).
//!
//! A check-in is evaluated against the current state; when the answer would
//! change what the ledger says (a new grant, a withhold with new reasons),
//! the check-in goes to the sequencer, which evaluates it again in ledger
//! order, signs the decision and logs it. Polls that change nothing never
//! reach the sequencer and never grow the ledger.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use covenant_core::digest::{Sha256Digest, Timestamp};
use covenant_core::envelope;
use covenant_core::ledger::{EntryKind, leaf_hash};
use covenant_core::note::TlogProof;
use covenant_core::policy::{self, Logging, Outcome};
use covenant_core::state::classify;
use covenant_core::statements::{
    EndUseAttestation, FieldVerification, FreshTag, Freshness, FreshnessStanding, IdentityRole, InTotoStatement,
    InstallReport, MisuseSignal, Payload as _, ReleaseManifest, SchemaV1,
};
use covenant_core::visibility::{Subject, entitled};
use covenant_proto::v1 as pb;
use sha2::Digest as _;
use tonic::{Request, Response, Status};

use crate::datadir;
use crate::ledger::{AppendError, NewEntry};
use crate::limits::Submission;
use crate::service::{Caller, Node, append_status, read_status, tlog};

/// The largest chunk a publisher may send.
pub const MAX_CHUNK: usize = 4 << 20;

/// How long a check-in answer waits for the witnesses to cosign a
/// checkpoint covering its decision: one witness round that times out
/// ([`crate::witnesses::WITNESS_TIMEOUT`]), the retry after it
/// ([`crate::witnesses::RETRY`]) and a second round, with a margin. After
/// it the answer carries the bare checkpoint, which an agent refuses and
/// retries later.
pub const WITNESS_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

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
    /// Appends a signed body whose kind must be one of `kinds`, with the
    /// header derived from the body.
    pub(crate) async fn submit(&self, body: Vec<u8>, kinds: &[EntryKind]) -> Result<pb::SubmitResponse, Status> {
        let placed = classify(&body).map_err(crate::refusal::status)?;
        if !kinds.contains(&placed.kind) {
            return Err(Status::invalid_argument(format!("this call takes no {} entry", placed.kind)));
        }
        let entry = NewEntry { kind: placed.kind, actor: placed.actor, subjects: placed.subjects, body };
        let done = self.ledger.append(entry).await.map_err(append_status)?;
        Ok(pb::SubmitResponse { index: done.index, inclusion: Some(tlog(&done)) })
    }

    /// [`Node::submit`] within the submitter's bound for the period: past
    /// it, ResourceExhausted (counted) and nothing appended; a submission
    /// the ledger refuses takes no place in the bound. (A call abandoned
    /// while the sequencer has its entry keeps its place, since the entry
    /// may be appended all the same.)
    async fn submit_bounded(
        &self,
        kind: Submission,
        caller: &Caller,
        body: Vec<u8>,
        entry: EntryKind,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let slot = self.submissions.take(kind, &caller.subject).inspect_err(|_| {
            datadir::bounded(datadir::Bounded::Submission, &caller.subject);
        })?;
        match self.submit(body, &[entry]).await {
            Ok(done) => Ok(Response::new(done)),
            Err(refused) => {
                slot.release();
                Err(refused)
            }
        }
    }

    fn now(&self) -> Timestamp {
        (crate::ledger::system_clock())()
    }

    /// The checkpoint to prove an entry against: the newest one the
    /// witnesses cosigned, once it covers `index` (waiting up to
    /// [`WITNESS_WAIT`] for them), else the ledger's own.
    async fn checkpoint_covering(&self, index: u64) -> (u64, String) {
        let deadline = tokio::time::Instant::now() + WITNESS_WAIT;
        loop {
            let cosigned = self.cosigned.witnessed.read().ok().and_then(|c| c.clone());
            match cosigned {
                Some(c) if c.size > index => return (c.size, c.note),
                _ if self.witnesses > 0 && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await
                }
                _ => break,
            }
        }
        let cp = self.ledger.checkpoint();
        (cp.size, cp.note.clone())
    }

    /// The deployment holds a standing grant of `release`: its newest
    /// decision grants it, unexpired, and the state now would still grant it.
    /// The refusal is the same whether or not `release` exists, so a caller
    /// without the grant learns nothing about it.
    fn grant_holds(&self, deployment: &str, fingerprint: &Sha256Digest, release: &Sha256Digest) -> Result<(), Status> {
        self.still_registered(fingerprint)?;
        let state = self.registry.0.read().map_err(|_| Status::internal("registry lock poisoned"))?;
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
        let state = self.registry.0.read().map_err(|_| Status::internal("registry lock poisoned"))?;
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

    fn may_read_deployment(&self, caller: &Caller, deployment: &str) -> Result<(), Status> {
        let state = self.registry.0.read().map_err(|_| Status::internal("registry lock poisoned"))?;
        let out_of_scope = || Status::permission_denied("this deployment is not in your scope");
        let Some(dep) = state.deployment(deployment) else {
            // Only those who may read every deployment learn that an id is
            // unknown; to the others an unknown id and another customer's
            // answer alike, so that ids cannot be enumerated.
            let reads_all =
                caller.role == IdentityRole::Admin || (caller.role == IdentityRole::Auditor && caller.scope.is_none());
            return Err(if reads_all { Status::not_found("no such deployment") } else { out_of_scope() });
        };
        let subject = Subject::Deployment { id: &dep.id, customer: &dep.customer };
        // An engineer is entitled to its own id only, never a deployment.
        if entitled(&caller.viewer(), &subject) { Ok(()) } else { Err(out_of_scope()) }
    }
}

#[tonic::async_trait]
impl pb::update_service_server::UpdateService for Node {
    async fn check_in(&self, request: Request<pb::CheckInRequest>) -> Result<Response<pb::CheckInResponse>, Status> {
        let caller = self.caller(&request)?;
        self.require(&caller, &[IdentityRole::Deployment])?;
        let bytes = request.into_inner().checkin;
        // Before any parsing or signature work: a logged decision carries
        // the check-in's exact bytes for good.
        within(&bytes, "check-in", covenant_core::statements::MAX_CHECKIN_ENVELOPE_BYTES)?;
        let now = self.now();
        // First against the state as it is: most check-ins change nothing.
        let (deployment, nonce, last_checkpoint, fast) = {
            let state = self.registry.0.read().map_err(|_| Status::internal("registry lock poisoned"))?;
            // Authorise first: a check-in naming another deployment is refused
            // as such, never with the reason its verification failed (which
            // would say whether that deployment is registered). Parsed only on
            // the refusal path, so the usual check-in pays nothing for it.
            let checkin = state.verify_checkin(&bytes).map_err(|rejection| {
                if names_another_deployment(&bytes, &caller.subject) {
                    Status::permission_denied("a deployment checks in for itself only")
                } else {
                    crate::refusal::status(rejection)
                }
            })?;
            if checkin.deployment != caller.subject {
                return Err(Status::permission_denied("a deployment checks in for itself only"));
            }
            let now = now.max(state.last_time().unwrap_or(now));
            let window = covenant_core::state::CHECKIN_WINDOW;
            if checkin.time < now.plus_seconds(-window) || checkin.time > now.plus_seconds(window) {
                return Err(Status::invalid_argument(format!(
                    "the check-in is dated {}, more than a day from the server's time {now}; set the device's clock \
                     (the freshness answers carry the server's time) and check in again",
                    checkin.time
                )));
            }
            let fast =
                match policy::evaluate(&state, &checkin, now).map_err(|e| Status::invalid_argument(e.to_string()))? {
                    Outcome::Current => Some(None),
                    Outcome::Decided(d) => match policy::logging(&state, &d, now) {
                        Logging::Standing(i) => Some(Some(i)),
                        Logging::Bounded(i) => {
                            datadir::bounded(datadir::Bounded::Decision, &checkin.deployment);
                            Some(Some(i))
                        }
                        Logging::Log => None,
                    },
                };
            (checkin.deployment.clone(), checkin.nonce, checkin.last_checkpoint, fast)
        };
        let standing = match fast {
            Some(standing) => standing,
            // Then in ledger order, by the sequencer, which logs the decision.
            None => match self.ledger.append(datadir::decide_request(bytes)).await {
                Ok(done) => Some(done.index),
                Err(AppendError::Nothing(standing)) => standing,
                Err(e) => return Err(append_status(e)),
            },
        };
        let mut response = pb::CheckInResponse::default();
        let freshness_standing = match standing {
            None => FreshnessStanding::Current,
            Some(index) => {
                let (size, note) = self.checkpoint_covering(index).await;
                let header = self.ledger.headers(index, index + 1).map_err(read_status)?.remove(0);
                let body = self.ledger.body(index).map_err(read_status)?;
                let proof = self.ledger.inclusion_proof(index, size).map_err(read_status)?;
                let text = TlogProof { extra: None, index, proof, checkpoint: note }.to_text();
                response.inclusion = Some(pb::TlogProof { text: text.into_bytes() });
                if let Some(held) = last_checkpoint
                    && held.size > 0
                    && held.size <= size
                {
                    let hashes = self.ledger.consistency_proof(held.size, size).map_err(read_status)?;
                    response.consistency = hashes.iter().map(|h| h.to_vec()).collect();
                }
                let release = {
                    let state = self.registry.0.read().map_err(|_| Status::internal("registry lock poisoned"))?;
                    let decision = state.facts().decisions_of(&deployment).iter().find(|d| d.index == index).cloned();
                    decision.and_then(|d| d.release).and_then(|r| state.facts().release(&r).map(|r| r.index))
                };
                if let Some(release_index) = release {
                    response.release_manifest = self.ledger.body(release_index).map_err(read_status)?.body;
                }
                let leaf = leaf_hash(&header);
                response.decision = Some(pb::LedgerEntry { index, header, body: body.body, salt: body.salt.to_vec() });
                FreshnessStanding::Standing { index, leaf_hash: Sha256Digest(leaf), checkpoint_size: size }
            }
        };
        let freshness = Freshness {
            type_tag: FreshTag,
            schema: SchemaV1,
            deployment,
            nonce,
            time: now,
            standing: freshness_standing,
        };
        let key = self.decision.as_ref().ok_or_else(|| Status::unavailable("this server holds no decision key"))?;
        response.freshness = envelope::sign(&freshness, &[key.as_ref()]);
        Ok(Response::new(response))
    }

    type DownloadStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::DownloadChunk, Status>> + Send>>;

    async fn download(&self, request: Request<pb::DownloadRequest>) -> Result<Response<Self::DownloadStream>, Status> {
        let caller = self.caller(&request)?;
        self.require(&caller, &[IdentityRole::Deployment])?;
        let fingerprint = caller.fingerprint;
        let req = request.into_inner();
        let release = Sha256Digest(
            req.release_digest
                .as_slice()
                .try_into()
                .map_err(|_| Status::invalid_argument("release_digest is 32 bytes"))?,
        );
        // Authorise first: only a deployment holding a standing grant of
        // this release learns whether it exists and how large it is.
        self.grant_holds(&caller.subject, &fingerprint, &release)?;
        let (artifact, size, customer) = {
            let state = self.registry.0.read().map_err(|_| Status::internal("registry lock poisoned"))?;
            let r = state.facts().release(&release).ok_or_else(|| Status::not_found("no such release"))?;
            let customer = state
                .deployment(&caller.subject)
                .map(|d| d.customer.clone())
                .ok_or_else(|| Status::permission_denied("this deployment is not registered"))?;
            (r.manifest.artifact.sha256, r.manifest.artifact.size, customer)
        };
        if req.offset > size {
            return Err(Status::out_of_range(format!("the artifact has {size} bytes")));
        }
        let stream_slot = self.streams.take(fingerprint)?;
        let slot = (self.downloads.take(fingerprint, &customer)?, stream_slot);
        let path = artifact_path(&self.data, &artifact);
        let mut file = std::fs::File::open(&path).map_err(|e| Status::internal(format!("the artifact: {e}")))?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(req.offset))
            .map_err(|e| Status::internal(e.to_string()))?;
        let node = self.clone();
        let chunk = self.download_chunk;
        let idle = self.download_idle;
        let progress = self.download_progress;
        let deployment = caller.subject;
        let (stalled, last_word) = tokio::sync::oneshot::channel();
        // One chunk queued at most, and each checked only once there is room
        // for it: memory stays flat, and when a grant is voided at most the
        // queued chunk and the one in the transport still go out.
        let stream = crate::service::async_stream_with(self.closing.clone(), 1, move |tx| async move {
            let _slot = slot;
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
                let now_size = node.registry.0.read().map(|s| s.size()).unwrap_or(0);
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
                offset += want as u64;
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::StreamExt::chain(stream, LastWord(Some(last_word))))))
    }

    async fn report(&self, request: Request<pb::ReportRequest>) -> Result<Response<pb::ReportResponse>, Status> {
        let caller = self.caller(&request)?;
        self.require(&caller, &[IdentityRole::Deployment])?;
        let body = request.into_inner().report;
        within(&body, "install report", covenant_core::statements::MAX_REPORT_ENVELOPE_BYTES)?;
        // Within the report's own limits (one signature), before any work.
        let env = envelope::Envelope::parse_for::<InstallReport>(&body)
            .map_err(|e| Status::invalid_argument(format!("the install report is refused: {e}")))?;
        let placed = classify(&body).map_err(crate::refusal::status)?;
        if placed.subjects != [caller.subject.clone()] {
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
            let state = self.registry.0.read().map_err(|_| Status::internal("registry lock poisoned"))?;
            state.facts().report_of(report.grant_index, report.outcome)
        };
        if let Some(first) = reported {
            datadir::bounded(datadir::Bounded::Report, &caller.subject);
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

#[tonic::async_trait]
impl pb::attestation_service_server::AttestationService for Node {
    async fn submit_attestation(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let caller = self.caller(&request)?;
        self.require(&caller, &[IdentityRole::Customer])?;
        let body = request.into_inner().envelope;
        within(&body, "attestation", InTotoStatement::<EndUseAttestation>::MAX_ENVELOPE_BYTES)?;
        let placed = classify(&body).map_err(crate::refusal::status)?;
        // Every deployment named must be one of the caller's, checked here
        // with one answer for all: the fold's words ("not registered",
        // "belongs to another customer") would tell which ids exist.
        let own = placed.subjects.first() == Some(&caller.subject) && {
            let state = self.registry.0.read().map_err(|_| Status::internal("registry lock poisoned"))?;
            placed.subjects.iter().skip(1).all(|d| state.deployment(d).is_some_and(|d| d.customer == caller.subject))
        };
        if !own {
            return Err(Status::permission_denied("a customer attests for its own deployments only"));
        }
        self.submit_bounded(Submission::Attestation, &caller, body, EntryKind::Attestation).await
    }

    async fn submit_verification(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let caller = self.caller(&request)?;
        self.require(&caller, &[IdentityRole::Engineer])?;
        let body = request.into_inner().envelope;
        within(&body, "verification", InTotoStatement::<FieldVerification>::MAX_ENVELOPE_BYTES)?;
        self.submit_bounded(Submission::Verification, &caller, body, EntryKind::Verification).await
    }

    async fn submit_signal(&self, request: Request<pb::SubmitRequest>) -> Result<Response<pb::SubmitResponse>, Status> {
        let caller = self.caller(&request)?;
        self.require(&caller, &[IdentityRole::Engineer, IdentityRole::Auditor])?;
        let body = request.into_inner().envelope;
        within(&body, "signal", MisuseSignal::MAX_ENVELOPE_BYTES)?;
        // A scoped auditor opens cases only about customers in its scope (an
        // engineer's work is not bounded by customer).
        if caller.role == IdentityRole::Auditor && caller.scope.is_some() {
            let placed = classify(&body).map_err(crate::refusal::status)?;
            let state = self.registry.0.read().map_err(|_| Status::internal("registry lock poisoned"))?;
            let viewer = caller.viewer();
            if !placed.subjects.iter().all(|s| entitled(&viewer, &Subject::resolve(&state, s))) {
                return Err(Status::permission_denied("an auditor signals only about customers in its scope"));
            }
        }
        self.submit_bounded(Submission::Signal, &caller, body, EntryKind::Signal).await
    }

    async fn get_verdict(
        &self,
        request: Request<pb::GetVerdictRequest>,
    ) -> Result<Response<pb::GetVerdictResponse>, Status> {
        let caller = self.caller(&request)?;
        let deployment = request.into_inner().deployment;
        self.may_read_deployment(&caller, &deployment)?;
        let last = {
            let state = self.registry.0.read().map_err(|_| Status::internal("registry lock poisoned"))?;
            state.facts().decisions_of(&deployment).last().map(|d| d.index)
        };
        let Some(index) = last else { return Ok(Response::new(pb::GetVerdictResponse::default())) };
        let body = self.ledger.body(index).map_err(read_status)?.body;
        Ok(Response::new(pb::GetVerdictResponse { decision: body, index }))
    }
}

/// Refuses an envelope larger than `limit` (the statement's own: its
/// payload limit in base64 and its signatures) before anything reads it.
fn within(bytes: &[u8], what: &str, limit: usize) -> Result<(), Status> {
    if bytes.len() > limit {
        return Err(Status::invalid_argument(format!(
            "the {what} envelope is {} bytes, over the limit of {limit} (its signatures over a bounded payload)",
            bytes.len()
        )));
    }
    Ok(())
}

/// The check-in `bytes` parses and names a deployment other than `caller`.
fn names_another_deployment(bytes: &[u8], caller: &str) -> bool {
    use covenant_core::statements::Payload as _;
    envelope::Envelope::parse(bytes)
        .ok()
        .and_then(|e| covenant_core::statements::CheckIn::parse(e.payload()).ok())
        .is_some_and(|c| c.deployment != caller)
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

/// Where artifacts live: `DIR/artifacts/<sha256 hex>`, written under
/// `DIR/artifacts/tmp/` and renamed once complete and checked.
pub fn artifact_path(data: &Path, sha256: &Sha256Digest) -> PathBuf {
    data.join("artifacts").join(sha256.to_string())
}

/// An artifact being received: hashed as it is written, never longer than
/// its manifest says.
pub(crate) struct Upload {
    file: std::fs::File,
    tmp: PathBuf,
    hasher: sha2::Sha256,
    written: u64,
    expected_size: u64,
}

impl Upload {
    pub(crate) fn start(data: &Path, expected_size: u64) -> std::io::Result<Upload> {
        let dir = data.join("artifacts").join("tmp");
        std::fs::create_dir_all(&dir)?;
        let mut name = [0u8; 16];
        getrandom::fill(&mut name).map_err(|e| std::io::Error::other(e.to_string()))?;
        let tmp = dir.join(hex::encode(name));
        let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        Ok(Upload { file, tmp, hasher: sha2::Sha256::new(), written: 0, expected_size })
    }

    pub(crate) fn write(&mut self, data: &[u8]) -> Result<(), Status> {
        let len = data.len() as u64;
        if self.written + len > self.expected_size {
            return Err(Status::invalid_argument(format!(
                "the artifact is longer than the {} bytes its manifest declares",
                self.expected_size
            )));
        }
        self.file.write_all(data).map_err(|e| Status::internal(e.to_string()))?;
        self.hasher.update(data);
        self.written += len;
        Ok(())
    }

    /// Checks size and hash, makes the file durable and moves it into place.
    pub(crate) fn finish(self, data: &Path, expected: &Sha256Digest) -> Result<PathBuf, Status> {
        if self.written != self.expected_size {
            return Err(Status::invalid_argument(format!(
                "the artifact has {} bytes, its manifest declares {}",
                self.written, self.expected_size
            )));
        }
        let got: [u8; 32] = self.hasher.clone().finalize().into();
        if got != *expected.as_bytes() {
            return Err(Status::invalid_argument("the artifact's SHA-256 differs from its manifest's"));
        }
        self.file.sync_all().map_err(|e| Status::internal(e.to_string()))?;
        let target = artifact_path(data, expected);
        std::fs::rename(&self.tmp, &target).map_err(|e| Status::internal(e.to_string()))?;
        if let Some(dir) = target.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Status::internal(e.to_string()))?;
        }
        Ok(target)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        // An upload not finished leaves nothing behind.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

impl Node {
    /// AdminService.Publish: the manifest first (checked against the root's
    /// release keys before any byte is stored), then the artifact; the
    /// release entry is appended only once the artifact is complete.
    pub(crate) async fn publish_release(
        &self,
        publisher: &Sha256Digest,
        mut stream: tonic::Streaming<pb::PublishChunk>,
    ) -> Result<pb::ActResponse, Status> {
        let first = stream.message().await?.ok_or_else(|| Status::invalid_argument("send the manifest first"))?;
        // The publisher is checked again on every chunk: a revocation stops
        // an upload under way.
        self.still_registered(publisher)?;
        let manifest_bytes = first.manifest;
        let manifest = {
            let state = self.registry.0.read().map_err(|_| Status::internal("registry lock poisoned"))?;
            let root = state.root().ok_or_else(|| Status::failed_precondition("the ledger has no root"))?;
            let keys = root.release_keys().map_err(|e| Status::internal(e.to_string()))?;
            let manifest = envelope::verify::<ReleaseManifest>(&manifest_bytes, &keys)
                .map_err(|e| Status::invalid_argument(format!("the release manifest is refused: {e}")))?;
            if state.facts().release_of(&manifest.product, &manifest.version).is_some() {
                return Err(Status::already_exists(format!(
                    "{} {} is already published",
                    manifest.product, manifest.version
                )));
            }
            manifest.value().clone()
        };
        let data = self.data.clone();
        let mut upload = tokio::task::block_in_place(|| Upload::start(&data, manifest.artifact.size))
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut chunk = first.data;
        loop {
            if chunk.len() > MAX_CHUNK {
                return Err(Status::invalid_argument(format!("chunks are at most {MAX_CHUNK} bytes")));
            }
            tokio::task::block_in_place(|| upload.write(&chunk))?;
            let next = stream.message().await?;
            self.still_registered(publisher)?;
            match next {
                Some(next) => {
                    if !next.manifest.is_empty() {
                        return Err(Status::invalid_argument("only the first chunk carries the manifest"));
                    }
                    chunk = next.data;
                }
                None => break,
            }
        }
        tokio::task::block_in_place(|| upload.finish(&data, &manifest.artifact.sha256))?;
        let entry = NewEntry { kind: EntryKind::Release, actor: None, subjects: vec![], body: manifest_bytes };
        let done = self.ledger.append(entry).await.map_err(append_status)?;
        Ok(pb::ActResponse { index: done.index, inclusion: Some(tlog(&done)) })
    }
}
