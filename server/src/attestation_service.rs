//! AttestationService: the people's submissions (a customer's
//! attestations, an engineer's verifications, misuse signals), each within
//! its submitter's bound, and the verdicts those entitled read.

use covenant_core::envelope::Envelope;
use covenant_core::ledger::EntryKind;
use covenant_core::state::classify;
use covenant_core::statements::{
    EndUseAttestation, FieldVerification, IdentityRole, InTotoStatement, MisuseSignal, Payload as _,
};
use covenant_core::visibility::{Subject, entitled};
use covenant_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::datadir;
use crate::limits::Submission;
use crate::node::{Caller, Node, read_status, refusal_status, within};

impl Node {
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

    fn may_read_deployment(&self, caller: &Caller, deployment: &str) -> Result<(), Status> {
        let state = self.registry.state.read().map_err(|_| Status::internal("registry lock poisoned"))?;
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
impl pb::attestation_service_server::AttestationService for Node {
    async fn submit_attestation(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let caller = self.caller(&request)?;
        self.require(&caller, &[IdentityRole::Customer])?;
        let body = request.into_inner().envelope;
        within(&body, "attestation", InTotoStatement::<EndUseAttestation>::MAX_ENVELOPE_BYTES)?;
        let placed = classify(&body).map_err(refusal_status)?;
        // Every deployment named must be one of the caller's, checked here
        // with one answer for all: the fold's words ("not registered",
        // "belongs to another customer") would tell which ids exist. The
        // deployments are read from the body, not the header's subjects,
        // which leave them out when there are MAX_SUBJECTS or more.
        // (A body of another kind is refused below as such.)
        let named: Vec<String> = match Envelope::parse(&body)
            .ok()
            .and_then(|env| InTotoStatement::<EndUseAttestation>::parse(env.payload()).ok())
        {
            Some(statement) => statement.deployments().map(str::to_owned).collect(),
            None => placed.subjects.iter().skip(1).cloned().collect(),
        };
        let own = placed.subjects.first() == Some(&caller.subject) && {
            let state = self.registry.state.read().map_err(|_| Status::internal("registry lock poisoned"))?;
            named.iter().all(|d| state.deployment(d).is_some_and(|d| d.customer == caller.subject))
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
        self.require(&caller, &[IdentityRole::Engineer, IdentityRole::Auditor, IdentityRole::Reporter])?;
        let body = request.into_inner().envelope;
        within(&body, "signal", MisuseSignal::MAX_ENVELOPE_BYTES)?;
        // A scoped auditor opens cases only about customers in its scope (an
        // engineer's work is not bounded by customer).
        if caller.role == IdentityRole::Auditor && caller.scope.is_some() {
            classify(&body).map_err(refusal_status)?;
            // The header names no subject: whom the signal concerns is in
            // its body (which classify has just parsed).
            let about = Envelope::parse(&body)
                .ok()
                .and_then(|e| MisuseSignal::parse(e.payload()).ok())
                .map(|s| s.about)
                .ok_or_else(|| Status::invalid_argument("the signal does not parse"))?;
            let state = self.registry.state.read().map_err(|_| Status::internal("registry lock poisoned"))?;
            let viewer = caller.viewer();
            let subjects = std::iter::once(about.customer.as_str()).chain(about.deployment.as_deref());
            if !subjects.into_iter().all(|s| entitled(&viewer, &Subject::resolve(&state, s))) {
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
            let state = self.registry.state.read().map_err(|_| Status::internal("registry lock poisoned"))?;
            state.facts().decisions_of(&deployment).last().map(|d| d.index)
        };
        let Some(index) = last else { return Ok(Response::new(pb::GetVerdictResponse::default())) };
        let body = self.ledger.body(index).map_err(read_status)?.body;
        Ok(Response::new(pb::GetVerdictResponse { decision: body, index }))
    }
}
