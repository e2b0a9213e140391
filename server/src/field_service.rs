//! FieldService: an engineer carrying an air-gapped device's files
//! (docs/offline.md). The check-in is answered by the same
//! `checkin::answer` as the device's own call, the artifact streamed by the
//! same code as its download, the report recorded by the same code as its
//! report; the only additions are that the caller is an engineer and the
//! deployment in its scope, and that a decision logged for a carried
//! check-in names the engineer as its courier (never as its actor:
//! docs/formats.md §18a).

use covenant_core::envelope::Envelope;
use covenant_core::statements::{CheckIn, IdentityRole, Payload as _};
use covenant_core::visibility::Subject;
use covenant_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::checkin::{self, LedgerView};
use crate::node::{Caller, Node, checkin_status, within};
use crate::update_service::{ArtifactStream, checkin_response};

/// How long a bundle without a grant stays valid.
const BUNDLE_VALIDITY: i64 = 86_400;

impl Node {
    /// `deployment` is registered and in the engineer's scope: the
    /// customers of its identity's scope, or all (none), the rule
    /// `entitled` applies to a scoped auditor.
    fn carries(&self, caller: &Caller, deployment: &str) -> Result<(), Status> {
        let state = self.registry.state.read().map_err(|_| Status::internal("registry lock poisoned"))?;
        let in_scope = match Subject::resolve(&state, deployment) {
            Subject::Deployment { customer, .. } => {
                caller.scope.as_ref().is_none_or(|scope| scope.iter().any(|c| c == customer))
            }
            _ => false,
        };
        if in_scope {
            Ok(())
        } else {
            Err(Status::permission_denied("this engineer carries only for registered deployments in its scope"))
        }
    }
}

/// The deployment a carried check-in names (its signature is verified by
/// `checkin::answer` against that deployment's registered key).
fn named_deployment(bytes: &[u8]) -> Result<String, Status> {
    let env = Envelope::parse_for::<CheckIn>(bytes)
        .map_err(|e| Status::invalid_argument(format!("the carried check-in is refused: {e}")))?;
    let checkin = CheckIn::parse(env.payload())
        .map_err(|e| Status::invalid_argument(format!("the carried check-in is refused: {e}")))?;
    Ok(checkin.deployment)
}

#[tonic::async_trait]
impl pb::field_service_server::FieldService for Node {
    async fn fetch(&self, request: Request<pb::FieldFetchRequest>) -> Result<Response<pb::FieldFetchResponse>, Status> {
        let caller = self.caller(&request)?;
        self.require(&caller, &[IdentityRole::Engineer])?;
        let bytes = request.into_inner().checkin;
        within(&bytes, "check-in", covenant_core::statements::MAX_CHECKIN_ENVELOPE_BYTES)?;
        let deployment = named_deployment(&bytes)?;
        self.carries(&caller, &deployment)?;
        let view = LedgerView {
            registry: &self.registry,
            ledger: &self.ledger,
            cosigned: &self.cosigned,
            witnesses: self.witnesses,
            decision: self.decision.as_deref(),
        };
        let now = self.now();
        let answer =
            checkin::answer(&view, &bytes, &deployment, Some(&caller.subject), now).await.map_err(checkin_status)?;
        tracing::info!(engineer = %caller.subject, %deployment, logged = answer.logged, "a check-in carried by an engineer");
        let granted = !answer.release_manifest.is_empty();
        let (expires, artifact_size, release_digest) = {
            let state = self.registry.state.read().map_err(|_| Status::internal("registry lock poisoned"))?;
            let last = state.facts().decisions_of(&deployment).last();
            match last.and_then(|d| Some((d.release?, d.expires_at?))) {
                Some((release, expires)) if granted => {
                    let size = state.facts().release(&release).map(|r| r.manifest.artifact.size).unwrap_or(0);
                    (expires.unix(), size, release.0.to_vec())
                }
                _ => (now.unix().saturating_add(BUNDLE_VALIDITY), 0, vec![]),
            }
        };
        Ok(Response::new(pb::FieldFetchResponse {
            deployment,
            answer: Some(checkin_response(answer)),
            expires,
            artifact_size,
            release_digest,
        }))
    }

    type FetchArtifactStream = ArtifactStream;

    async fn fetch_artifact(
        &self,
        request: Request<pb::FieldArtifactRequest>,
    ) -> Result<Response<ArtifactStream>, Status> {
        let caller = self.caller(&request)?;
        self.require(&caller, &[IdentityRole::Engineer])?;
        let req = request.into_inner();
        self.carries(&caller, &req.deployment)?;
        let release = pb::DownloadRequest { release_digest: req.release_digest, offset: req.offset };
        self.serve_artifact(req.deployment, caller.fingerprint, release)
    }

    async fn r#return(&self, request: Request<pb::ReportRequest>) -> Result<Response<pb::ReportResponse>, Status> {
        let caller = self.caller(&request)?;
        self.require(&caller, &[IdentityRole::Engineer])?;
        let body = request.into_inner().report;
        within(&body, "install report", covenant_core::statements::MAX_REPORT_ENVELOPE_BYTES)?;
        let placed = covenant_core::state::classify(&body).map_err(crate::node::refusal_status)?;
        let [deployment] = placed.subjects.as_slice() else {
            return Err(Status::invalid_argument("an install report names one deployment"));
        };
        let deployment = deployment.clone();
        self.carries(&caller, &deployment)?;
        let done = self.record_report(&deployment, body).await?;
        tracing::info!(engineer = %caller.subject, %deployment, "an install report returned by an engineer");
        Ok(done)
    }
}
