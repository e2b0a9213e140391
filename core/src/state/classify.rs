//! An entry's header as a function of its body ([`classify`]): the kind
//! (from the payload type and content), the actor (the first signature's
//! key id, for what one person or device signs) and the subjects. Nothing
//! is verified here; [`crate::state::State::apply`] verifies.

use std::collections::BTreeSet;

use crate::envelope::{self, Envelope};
use crate::keys::KeyId;
use crate::ledger::{EntryKind, MAX_SUBJECTS};
use crate::state::rejection::{Rejection, reject};
use crate::statements::{
    ActionKind, AdminAction, CaseState, Decision, EndUseAttestation, FieldVerification, InTotoStatement, InstallReport,
    MisuseSignal, Payload, ReleaseManifest, RestoreLoss, RootMetadata, SuspensionLevel, SuspensionTarget, Verdict,
};

/// Where an entry goes: the header fields that follow from its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The entry kind.
    pub kind: EntryKind,
    /// The key that signed it, for entries one person or device signs.
    pub actor: Option<KeyId>,
    /// The customer and deployment ids it concerns.
    pub subjects: Vec<String>,
}

/// Where an admin action goes in the ledger: its entry kind and the
/// subjects its header names.
pub fn placement(action: &ActionKind) -> (EntryKind, Vec<String>) {
    let one = |s: &String| vec![s.clone()];
    match action {
        ActionKind::Note { .. } => (EntryKind::Note, vec![]),
        ActionKind::IssueIdentity { subject, .. } => (EntryKind::Identity, one(subject)),
        ActionKind::RevokeIdentity { .. } => (EntryKind::Revocation, vec![]),
        // A closing and a lifting have kinds of their own, so that the
        // public transparency report counts them from headers alone.
        ActionKind::CaseTransition { to: CaseState::Closed, .. } => (EntryKind::CaseClosure, vec![]),
        ActionKind::CaseTransition { .. } => (EntryKind::Case, vec![]),
        ActionKind::ProposeSuspension { target, level } => {
            let kind = if *level == SuspensionLevel::None { EntryKind::SuspensionLift } else { EntryKind::Suspension };
            match target {
                SuspensionTarget::Customer(id) | SuspensionTarget::Deployment(id) => (kind, one(id)),
            }
        }
        ActionKind::Approve { .. } => (EntryKind::Approval, vec![]),
        ActionKind::RegisterCustomer { customer, .. } => (EntryKind::Customer, one(customer)),
        ActionKind::RegisterDeployment { deployment, customer, .. } => {
            (EntryKind::Deployment, vec![customer.clone(), deployment.clone()])
        }
        ActionKind::SetContract { contract } => (EntryKind::Contract, one(&contract.customer)),
        ActionKind::ProposeWaiver { deployment, .. } => (EntryKind::Waiver, one(deployment)),
        ActionKind::ProposeSecurityFix { deployment, .. } => (EntryKind::SecurityFix, one(deployment)),
        ActionKind::ListDeniedParty { .. } => (EntryKind::DeniedParty, vec![]),
        ActionKind::RecordLicence { licence } => (EntryKind::Licence, one(&licence.customer)),
    }
}

/// The header fields that follow from an entry's body: its kind (from the
/// payload type and content), its actor (the first signature's key id, for
/// what one person or device signs) and its subjects. Nothing is verified
/// here; [`crate::state::State::apply`] verifies.
pub fn classify(body: &[u8]) -> Result<Placement, Rejection> {
    let env = Envelope::parse(body).map_err(|e| Rejection::Malformed(format!("the entry's body is refused: {e}")))?;
    let first = env.first_signer();
    let bad = |e: crate::statements::StatementError| Rejection::Malformed(format!("the entry's body is refused: {e}"));
    let placed = |kind, subjects| Ok(Placement { kind, actor: first, subjects });
    match env.payload_type() {
        RootMetadata::PAYLOAD_TYPE => Ok(Placement { kind: EntryKind::Root, actor: None, subjects: vec![] }),
        ReleaseManifest::PAYLOAD_TYPE => Ok(Placement { kind: EntryKind::Release, actor: None, subjects: vec![] }),
        AdminAction::PAYLOAD_TYPE => {
            let action = AdminAction::parse(env.payload()).map_err(bad)?;
            let (kind, subjects) = placement(&action.action);
            placed(kind, subjects)
        }
        MisuseSignal::PAYLOAD_TYPE => {
            MisuseSignal::parse(env.payload()).map_err(bad)?;
            // No actor and no subject: who reported a misuse is never shown
            // with the header, and neither is whom it concerns. A tag of the
            // customer or its deployment would let the customer (who holds
            // those subject keys) see that, and exactly when, someone
            // reported it, and guess who from the time.
            Ok(Placement { kind: EntryKind::Signal, actor: None, subjects: vec![] })
        }
        Decision::PAYLOAD_TYPE => {
            let d = Decision::parse(env.payload()).map_err(bad)?;
            let kind = if d.verdict == Verdict::Grant { EntryKind::Grant } else { EntryKind::Withhold };
            placed(kind, vec![d.deployment])
        }
        InstallReport::PAYLOAD_TYPE => {
            let r = InstallReport::parse(env.payload()).map_err(bad)?;
            placed(EntryKind::Report, vec![r.deployment])
        }
        // A restore's accepted loss (ledger format 3): a note, by the
        // decision key, about no subject.
        RestoreLoss::PAYLOAD_TYPE => {
            RestoreLoss::parse(env.payload()).map_err(bad)?;
            placed(EntryKind::Note, vec![])
        }
        "application/vnd.in-toto+json" => {
            #[derive(serde::Deserialize)]
            struct Peek {
                #[serde(rename = "predicateType")]
                predicate_type: String,
            }
            let peek: Peek = serde_json::from_slice(env.payload())
                .map_err(|e| Rejection::Malformed(format!("the entry's body is refused: malformed payload: {e}")))?;
            match peek.predicate_type.as_str() {
                <EndUseAttestation as crate::statements::Predicate>::PREDICATE_TYPE => {
                    let s = InTotoStatement::<EndUseAttestation>::parse(env.payload()).map_err(bad)?;
                    let mut subjects = vec![s.predicate.customer.clone()];
                    let deployments: BTreeSet<&str> = s.deployments().collect();
                    if deployments.len() < MAX_SUBJECTS {
                        subjects.extend(deployments.into_iter().map(str::to_owned));
                    }
                    placed(EntryKind::Attestation, subjects)
                }
                <FieldVerification as crate::statements::Predicate>::PREDICATE_TYPE => {
                    let s = InTotoStatement::<FieldVerification>::parse(env.payload()).map_err(bad)?;
                    placed(EntryKind::Verification, vec![s.predicate.deployment])
                }
                other => reject(
                    Rejection::Malformed,
                    format!("the entry's body is refused: unknown predicate type {other:?}"),
                ),
            }
        }
        other => reject(
            Rejection::Malformed,
            format!("the entry's body is refused: {other:?} is not a ledger entry's payload type"),
        ),
    }
}

/// The root document of a root envelope, without checking it (for display).
pub fn peek_root(body: &[u8]) -> Option<RootMetadata> {
    RootMetadata::parse(envelope::Envelope::parse(body).ok()?.payload()).ok()
}
