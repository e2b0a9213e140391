//! AdminService: an admin's signed actions, the release upload (the
//! manifest checked, then the artifact into the store) and certificates
//! issued from requests.

use covenant_core::digest::Sha256Digest;
use covenant_core::envelope::{self, Envelope};
use covenant_core::keys::KeyId;
use covenant_core::ledger::EntryKind;
use covenant_core::statements::{AdminAction, IdentityRole, Payload as _, ReleaseManifest};
use covenant_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::artifacts::{MAX_CHUNK, Upload};
use crate::ledger::NewEntry;
use crate::node::{Node, append_status, artifact_status, tlog};

#[tonic::async_trait]
impl pb::admin_service_server::AdminService for Node {
    async fn act(&self, request: Request<pb::ActRequest>) -> Result<Response<pb::ActResponse>, Status> {
        let caller = self.caller(&request)?;
        self.require(&caller, &[IdentityRole::Admin])?;
        let body = request.into_inner().action;
        let envelope = Envelope::parse(&body).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let action = AdminAction::parse(envelope.payload()).map_err(|e| Status::invalid_argument(e.to_string()))?;
        // The admin signs with their own key; the certificate only opened the door.
        let signer = envelope
            .signatures()
            .first()
            .and_then(|s| KeyId::from_hex(&s.keyid))
            .ok_or_else(|| Status::invalid_argument("the action carries no signature"))?;
        let own = self
            .registry
            .state
            .read()
            .map_err(|_| Status::internal("registry lock poisoned"))?
            .identity_of_key(&signer)
            .is_some_and(|id| id.role == IdentityRole::Admin && id.subject == caller.subject);
        if !own {
            return Err(Status::permission_denied("sign the action with your own registered admin key"));
        }
        let (kind, subjects) = covenant_core::state::placement(&action.action);
        let done =
            self.ledger.append(NewEntry { kind, actor: Some(signer), subjects, body }).await.map_err(append_status)?;
        Ok(Response::new(pb::ActResponse { index: done.index, inclusion: Some(tlog(&done)) }))
    }

    async fn publish(
        &self,
        request: Request<tonic::Streaming<pb::PublishChunk>>,
    ) -> Result<Response<pb::ActResponse>, Status> {
        let caller = self.caller(&request)?;
        self.require(&caller, &[IdentityRole::Admin])?;
        let _slot = self.streams.take(caller.fingerprint)?;
        Ok(Response::new(self.publish_release(&caller.fingerprint, request.into_inner()).await?))
    }

    async fn issue_identity(
        &self,
        request: Request<pb::IssueIdentityRequest>,
    ) -> Result<Response<pb::IssueIdentityResponse>, Status> {
        let caller = self.caller(&request)?;
        self.require(&caller, &[IdentityRole::Admin])?;
        let req = request.into_inner();
        let role: IdentityRole = req.role.parse().map_err(|_| Status::invalid_argument("unknown role"))?;
        let csr = String::from_utf8(req.csr).map_err(|_| Status::invalid_argument("the request is not PEM text"))?;
        let (issued, signing_key) = self
            .ca
            .issue_from_request(&csr, role, &req.subject)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(pb::IssueIdentityResponse {
            certificate_pem: issued.cert_pem.into_bytes(),
            ca_pem: self.ca.cert_pem.clone().into_bytes(),
            certificate_sha256: issued.fingerprint.to_string(),
            signing_key: hex::encode(signing_key.to_bytes()),
        }))
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
            let state = self.registry.state.read().map_err(|_| Status::internal("registry lock poisoned"))?;
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
        let mut upload =
            tokio::task::block_in_place(|| Upload::start(&data, manifest.artifact.size)).map_err(artifact_status)?;
        let mut chunk = first.data;
        loop {
            if chunk.len() > MAX_CHUNK {
                return Err(Status::invalid_argument(format!("chunks are at most {MAX_CHUNK} bytes")));
            }
            tokio::task::block_in_place(|| upload.write(&chunk)).map_err(artifact_status)?;
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
        tokio::task::block_in_place(|| upload.finish(&data, &manifest.artifact.sha256)).map_err(artifact_status)?;
        let entry = NewEntry { kind: EntryKind::Release, actor: None, subjects: vec![], body: manifest_bytes };
        let done = self.ledger.append(entry).await.map_err(append_status)?;
        Ok(pb::ActResponse { index: done.index, inclusion: Some(tlog(&done)) })
    }
}
