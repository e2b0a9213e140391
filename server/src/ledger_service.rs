//! LedgerService: the ledger's structure (checkpoints, headers, proofs,
//! the root chain) for every registered caller, bodies by least privilege,
//! and each caller's own subject keys.

use std::pin::Pin;

use covenant_core::envelope::Envelope;
use covenant_core::statements::IdentityRole;
use covenant_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::ledger::MAX_PAGE;
use crate::ledger::store::ReadError;
use crate::node::{Node, async_stream_of, read_status};

/// A proof from the ledger as the wire's list of hashes.
fn proof_response(
    proof: Result<Vec<covenant_core::merkle::Hash>, ReadError>,
) -> Result<Response<pb::GetProofResponse>, Status> {
    let proof = proof.map_err(read_status)?;
    Ok(Response::new(pb::GetProofResponse { hashes: proof.iter().map(|h| h.to_vec()).collect() }))
}

#[tonic::async_trait]
impl pb::ledger_service_server::LedgerService for Node {
    async fn get_checkpoint(
        &self,
        request: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::SignedCheckpoint>, Status> {
        self.caller(&request)?;
        // The newest checkpoint with the witness cosignatures gathered for it.
        let cosigned = self.cosigned.latest.read().ok().and_then(|c| c.clone());
        let note = match cosigned {
            Some(c) if c.size > 0 => c.note,
            _ => self.ledger.checkpoint().note.clone(),
        };
        Ok(Response::new(pb::SignedCheckpoint { note: note.into_bytes() }))
    }

    async fn get_entries(
        &self,
        request: Request<pb::GetEntriesRequest>,
    ) -> Result<Response<pb::GetEntriesResponse>, Status> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        if req.end < req.start || req.end - req.start > MAX_PAGE {
            return Err(Status::invalid_argument(format!("ask for at most {MAX_PAGE} entries, start <= end")));
        }
        // Every registered caller reads every header: headers carry subject
        // tags, never subject ids, and the tiles publish them anyway. Who
        // reads a body is `covenant_core::visibility::body_visible`, from the
        // subjects and signer the server derives from the body it holds.
        let headers = self.ledger.headers(req.start, req.end).map_err(read_status)?;
        let bodies =
            if req.with_bodies { self.ledger.bodies(req.start, req.end).map_err(read_status)? } else { vec![] };
        let state = self.registry.state.read().map_err(|_| Status::internal("registry lock poisoned"))?;
        let viewer = caller.viewer();
        let mut entries = Vec::with_capacity(headers.len());
        for (i, header) in headers.into_iter().enumerate() {
            let index = req.start + i as u64;
            let mut entry = pb::LedgerEntry { index, header, body: Vec::new(), salt: Vec::new() };
            if let Some(stored) = bodies.get(i) {
                let kind = covenant_core::ledger::EntryHeader::parse(&entry.header)
                    .map_err(|e| Status::internal(format!("entry {index}: {e}")))?
                    .kind;
                if may_read_body(&state, &viewer, kind, &stored.body) {
                    entry.body = stored.body.clone();
                    entry.salt = stored.salt.to_vec();
                }
            }
            entries.push(entry);
        }
        Ok(Response::new(pb::GetEntriesResponse { entries }))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<pb::GetInclusionProofRequest>,
    ) -> Result<Response<pb::GetProofResponse>, Status> {
        self.caller(&request)?;
        let req = request.into_inner();
        proof_response(self.ledger.inclusion_proof(req.index, req.tree_size))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<pb::GetConsistencyProofRequest>,
    ) -> Result<Response<pb::GetProofResponse>, Status> {
        self.caller(&request)?;
        let req = request.into_inner();
        if req.from_size == 0 {
            return Err(Status::invalid_argument("a consistency proof from size 0 proves nothing"));
        }
        // A malformed request, whatever the tree's size; a size past the
        // signed tree stays OutOfRange (the ledger says so).
        if req.from_size > req.to_size {
            return Err(Status::invalid_argument(format!(
                "a consistency proof goes from a smaller tree to a larger one, not from {} to {}",
                req.from_size, req.to_size
            )));
        }
        proof_response(self.ledger.consistency_proof(req.from_size, req.to_size))
    }

    async fn get_root_chain(
        &self,
        request: Request<pb::GetRootChainRequest>,
    ) -> Result<Response<pb::GetRootChainResponse>, Status> {
        self.caller(&request)?;
        let from = request.into_inner().from_version;
        let entries: Vec<covenant_core::state::RootEntry> =
            self.registry.state.read().map_err(|_| Status::internal("registry lock poisoned"))?.root_entries().to_vec();
        let mut roots = Vec::new();
        for covenant_core::state::RootEntry { index, version } in entries {
            if version >= from {
                roots.push(self.ledger.body(index).map_err(read_status)?.body);
            }
        }
        Ok(Response::new(pb::GetRootChainResponse { roots }))
    }

    type WatchCheckpointsStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::SignedCheckpoint, Status>> + Send>>;

    async fn watch_checkpoints(
        &self,
        request: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<Self::WatchCheckpointsStream>, Status> {
        let caller = self.caller(&request)?;
        let slot = self.streams.take(caller.fingerprint)?;
        let mut watch = self.ledger.watch();
        let node = self.clone();
        let stream = async_stream_of(self.closing.clone(), move |tx| async move {
            let _slot = slot;
            loop {
                // The caller is checked again before every message: a
                // revocation ends a stream opened before it.
                let Ok(permit) = tx.reserve().await else { return };
                if let Err(status) = node.still_registered(&caller.fingerprint) {
                    permit.send(Err(status));
                    return;
                }
                let note = watch.borrow_and_update().note.clone();
                permit.send(Ok(pb::SignedCheckpoint { note: note.into_bytes() }));
                // A client that went away ends the task (and frees its slot)
                // at once, not at the next checkpoint.
                tokio::select! {
                    changed = watch.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn get_subject_keys(
        &self,
        request: Request<pb::GetSubjectKeysRequest>,
    ) -> Result<Response<pb::GetSubjectKeysResponse>, Status> {
        let caller = self.caller(&request)?;
        let state = self.registry.state.read().map_err(|_| Status::internal("registry lock poisoned"))?;
        let keys = covenant_core::visibility::entitled_subjects(&state, &caller.viewer())
            .into_iter()
            .filter_map(|subject| {
                let key = state.keyring().key(subject)?;
                Some(pb::SubjectKey { subject: subject.to_owned(), key: key.0.to_vec() })
            })
            .collect();
        Ok(Response::new(pb::GetSubjectKeysResponse { keys }))
    }
}

/// Whether `viewer` may read `body`, an entry of `kind`: its subjects and
/// signer come from the body itself (the header names neither).
pub(crate) fn may_read_body(
    state: &covenant_core::state::State,
    viewer: &covenant_core::visibility::Viewer<'_>,
    kind: covenant_core::ledger::EntryKind,
    body: &[u8],
) -> bool {
    use covenant_core::visibility::{Subject, body_visible};
    let Ok(placed) = covenant_core::state::classify(body) else {
        // Every stored body classified when it was folded; if one does not
        // now, only those who read everything read it.
        return viewer.role == IdentityRole::Admin || (viewer.role == IdentityRole::Auditor && viewer.scope.is_none());
    };
    // A signal's header names no actor; its signer is the envelope's.
    let signer_key = placed.actor.or_else(|| Envelope::parse(body).ok().and_then(|e| e.first_signer()));
    let signer = signer_key.and_then(|k| state.any_identity_of_key(&k)).map(|i| (i.role, i.subject.as_str()));
    let subjects: Vec<Subject<'_>> = placed.subjects.iter().map(|s| Subject::resolve(state, s)).collect();
    body_visible(viewer, kind, &subjects, signer)
}
