//! Admin actions (what a compliance officer does, signed with the officer's
//! own key) and misuse signals (what an engineer or auditor reports).
//!
//! Each variant is validated here for its shape, and by the state fold for
//! its meaning.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{
    ConditionName, Contract, DeniedParty, Licence, Payload, SchemaV1, Site, StatementError, check_country, check_id,
    check_text, fixed_tag, invalid,
};
use crate::digest::{Sha256Digest, Timestamp};
use crate::keys::PublicKey;

fixed_tag!(
    /// `_type` of an admin action.
    ActionTag = str "action"
);
fixed_tag!(
    /// `_type` of a misuse signal.
    SignalTag = str "signal"
);

/// Suspension levels, ordered `none < L1 < L2 < L3 < legal-hold`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub enum SuspensionLevel {
    /// No suspension.
    #[default]
    #[serde(rename = "none")]
    None,
    /// No capability releases.
    L1,
    /// Security fixes only with a two-admin approval.
    L2,
    /// Managed exit: compliance-enabling and capability-removal only.
    L3,
    /// Nothing ships.
    #[serde(rename = "legal-hold")]
    LegalHold,
}

impl SuspensionLevel {
    /// The level in words, for a customer's operator.
    pub fn describe(self) -> &'static str {
        match self {
            SuspensionLevel::None => "none",
            SuspensionLevel::L1 => "L1 (no capability releases)",
            SuspensionLevel::L2 => "L2 (security fixes only, each with a two-admin approval)",
            SuspensionLevel::L3 => "L3 (managed exit: compliance-enabling and capability-removal releases only)",
            SuspensionLevel::LegalHold => "legal hold (nothing ships)",
        }
    }
}

impl fmt::Display for SuspensionLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SuspensionLevel::None => "none",
            SuspensionLevel::L1 => "L1",
            SuspensionLevel::L2 => "L2",
            SuspensionLevel::L3 => "L3",
            SuspensionLevel::LegalHold => "legal-hold",
        })
    }
}

/// Whom a suspension applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SuspensionTarget {
    /// Every deployment of a customer.
    Customer(String),
    /// One deployment.
    Deployment(String),
}

/// Misuse case states, in lifecycle order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseState {
    /// A signal arrived.
    Received,
    /// Judged credible enough to look at.
    Triaged,
    /// Under investigation.
    Investigating,
    /// A determination was made.
    Determined,
    /// The customer is remediating.
    Remediation,
    /// Remediation was verified.
    Verified,
    /// Closed; a closed case never blocks.
    Closed,
}

/// The outcome of an investigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Determination {
    /// The misuse did not happen.
    Unsubstantiated,
    /// It cannot be said.
    Inconclusive,
    /// The misuse happened.
    Substantiated,
}

/// The role an identity is issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityRole {
    /// A compliance officer (its key must be listed in the root).
    Admin,
    /// A customer operator.
    Customer,
    /// A field engineer.
    Engineer,
    /// An auditor.
    Auditor,
    /// A deployment's agent.
    Deployment,
    /// An outside party (an NGO, a journalist, a National Contact Point)
    /// that reports misuse: it submits signals and reads the state of the
    /// cases its own signals opened, nothing else.
    Reporter,
}

impl IdentityRole {
    /// Every role, in the order of the enum.
    pub const ALL: [IdentityRole; 6] = [
        IdentityRole::Admin,
        IdentityRole::Customer,
        IdentityRole::Engineer,
        IdentityRole::Auditor,
        IdentityRole::Deployment,
        IdentityRole::Reporter,
    ];

    /// The role's name, as payloads, certificates and the CLI spell it.
    pub const fn as_str(&self) -> &'static str {
        match self {
            IdentityRole::Admin => "admin",
            IdentityRole::Customer => "customer",
            IdentityRole::Engineer => "engineer",
            IdentityRole::Auditor => "auditor",
            IdentityRole::Deployment => "deployment",
            IdentityRole::Reporter => "reporter",
        }
    }
}

impl std::fmt::Display for IdentityRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is none of [`IdentityRole`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: use admin, customer, engineer, auditor, deployment or reporter")]
pub struct UnknownRole(pub String);

impl std::str::FromStr for IdentityRole {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, UnknownRole> {
        IdentityRole::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| UnknownRole(s.chars().take(64).collect()))
    }
}

/// What an admin action does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
// An action is parsed once and folded; boxing the key-carrying variant would
// only complicate its serde shape.
#[allow(clippy::large_enum_variant)]
pub enum ActionKind {
    /// Records a fact ("authority notified").
    Note {
        /// The text.
        text: String,
    },
    /// Issues a certificate to a person or device and registers its signing key.
    IssueIdentity {
        /// The role.
        role: IdentityRole,
        /// The subject id (customer id, deployment id, person id).
        subject: String,
        /// The signing key the subject made itself.
        signing_key: PublicKey,
        /// SHA-256 of the issued certificate's DER bytes.
        certificate_sha256: Sha256Digest,
        /// For auditors: the customers in scope; absent means all.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<Vec<String>>,
    },
    /// Revokes a certificate and the signing key issued with it.
    RevokeIdentity {
        /// SHA-256 of the certificate's DER bytes.
        certificate_sha256: Sha256Digest,
        /// Entries the key signed at or after this ledger time no longer count.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        compromised_since: Option<Timestamp>,
    },
    /// Moves a misuse case along its lifecycle.
    CaseTransition {
        /// The case id.
        case: String,
        /// The new state.
        to: CaseState,
        /// With `determined`: the outcome.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        determination: Option<Determination>,
    },
    /// Proposes a suspension level (takes effect at once or after approval,
    /// per `docs/policy.md`, "Dual control").
    ProposeSuspension {
        /// Whom.
        target: SuspensionTarget,
        /// The new level.
        level: SuspensionLevel,
    },
    /// Approves a proposal, named by the SHA-256 of its payload bytes.
    Approve {
        /// The proposal's digest.
        proposal: Sha256Digest,
    },
    /// Registers a customer.
    RegisterCustomer {
        /// The customer id.
        customer: String,
        /// Its legal name.
        legal_name: String,
        /// Its country (ISO 3166 alpha-2).
        country: String,
    },
    /// Registers a deployment of a customer: a product at a site.
    RegisterDeployment {
        /// The deployment id.
        deployment: String,
        /// The customer it belongs to.
        customer: String,
        /// The product line.
        product: String,
        /// Where it is installed.
        site: Site,
        /// The version of the product the device is provisioned with (its
        /// factory image). The policy's installed version is this, then
        /// whatever the deployment's logged install reports establish; a
        /// check-in's claim is never an input.
        provisioned_version: semver::Version,
    },
    /// Sets a contract (a new contract at version 1, or its next version).
    SetContract {
        /// The contract.
        contract: Contract,
    },
    /// Proposes waiving one condition for one deployment until a time
    /// (takes effect once threshold-many admins approved).
    ProposeWaiver {
        /// The deployment.
        deployment: String,
        /// The condition's name (`field_verified`, ...).
        condition: String,
        /// When the waiver ends.
        until: Timestamp,
    },
    /// Proposes letting one security-fix release through to one deployment
    /// under an L2 suspension (takes effect once threshold-many admins approved).
    ProposeSecurityFix {
        /// The deployment.
        deployment: String,
        /// The release's digest.
        release: Sha256Digest,
    },
    /// Records an entry of a denied-party list.
    ListDeniedParty {
        /// The party.
        party: DeniedParty,
    },
    /// Records an export licence.
    RecordLicence {
        /// The licence.
        licence: Licence,
    },
}

/// Refuses a customer or deployment id spelled like a misuse case's
/// (`case-` and digits): case ids name cases wherever a subject is asked for
/// (a subject's history), so no customer or deployment may take one.
fn check_not_a_case(field: &'static str, id: &str) -> Result<(), StatementError> {
    match id.strip_prefix("case-") {
        Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            Err(super::invalid(field, "case-N names a misuse case; choose another id"))
        }
        _ => Ok(()),
    }
}

/// Payload of `application/vnd.covenant.action.v1+json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminAction {
    /// Always `"action"`.
    #[serde(rename = "_type")]
    pub type_tag: ActionTag,
    /// Always 1.
    pub schema: SchemaV1,
    /// What is done.
    pub action: ActionKind,
    /// Why, in words.
    pub why: String,
    /// Digests of the evidence behind it.
    #[serde(default)]
    pub evidence: Vec<Sha256Digest>,
    /// When the admin signed it (the ledger time is what counts).
    pub issued_at: Timestamp,
}

impl Payload for AdminAction {
    const PAYLOAD_TYPE: &'static str = "application/vnd.covenant.action.v1+json";

    fn validate(&self) -> Result<(), StatementError> {
        check_text("why", &self.why)?;
        match &self.action {
            ActionKind::Note { text } => check_text("action.text", text),
            ActionKind::IssueIdentity { subject, scope, .. } => {
                check_id("action.subject", subject)?;
                for customer in scope.iter().flatten() {
                    check_id("action.scope", customer)?;
                }
                Ok(())
            }
            ActionKind::CaseTransition { case, to, determination } => {
                check_id("action.case", case)?;
                match (to, determination) {
                    (CaseState::Determined, None) => {
                        Err(invalid("action.determination", "a move to determined names the determination"))
                    }
                    (CaseState::Determined, Some(_)) => Ok(()),
                    (_, Some(_)) => Err(invalid("action.determination", "only a move to determined has one")),
                    (_, None) => Ok(()),
                }
            }
            ActionKind::ProposeSuspension { target, .. } => match target {
                SuspensionTarget::Customer(id) | SuspensionTarget::Deployment(id) => check_id("action.target", id),
            },
            ActionKind::RevokeIdentity { .. } | ActionKind::Approve { .. } => Ok(()),
            ActionKind::RegisterCustomer { customer, legal_name, country } => {
                check_id("action.customer", customer)?;
                check_not_a_case("action.customer", customer)?;
                check_text("action.legal_name", legal_name)?;
                check_country("action.country", country)
            }
            ActionKind::RegisterDeployment { deployment, customer, product, site, .. } => {
                check_id("action.deployment", deployment)?;
                check_not_a_case("action.deployment", deployment)?;
                check_id("action.customer", customer)?;
                check_id("action.product", product)?;
                check_country("action.site.country", &site.country)?;
                check_id("action.site.site_id", &site.site_id)
            }
            ActionKind::SetContract { contract } => contract.validate(),
            ActionKind::ProposeWaiver { deployment, condition, .. } => {
                check_id("action.deployment", deployment)?;
                if condition.parse::<ConditionName>().is_err() {
                    return Err(invalid("action.condition", "is not a condition's name"));
                }
                Ok(())
            }
            ActionKind::ProposeSecurityFix { deployment, .. } => check_id("action.deployment", deployment),
            ActionKind::ListDeniedParty { party } => party.validate(),
            ActionKind::RecordLicence { licence } => licence.validate(),
        }
    }
}

/// Where a misuse signal comes from. Never shown to the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalSource {
    /// A non-governmental organisation's report.
    NgoReport,
    /// A court decision.
    CourtDecision,
    /// An OECD National Contact Point determination.
    NcpDetermination,
    /// A sanctions listing.
    SanctionsListing,
    /// A field engineer's observation.
    FieldEngineer,
    /// An auditor's finding.
    Auditor,
    /// Anything else (say what in the summary).
    Other,
}

/// Whom a signal is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalAbout {
    /// The customer.
    pub customer: String,
    /// One of its deployments, if the signal is that specific.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
}

/// Payload of `application/vnd.covenant.signal.v1+json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MisuseSignal {
    /// Always `"signal"`.
    #[serde(rename = "_type")]
    pub type_tag: SignalTag,
    /// Always 1.
    pub schema: SchemaV1,
    /// Whom it is about.
    pub about: SignalAbout,
    /// The kind of source.
    pub source: SignalSource,
    /// What was reported, in words.
    pub summary: String,
    /// Digests of the evidence.
    #[serde(default)]
    pub evidence: Vec<Sha256Digest>,
    /// When it was reported.
    pub reported_at: Timestamp,
}

/// The largest misuse signal payload, in bytes: a summary of a few
/// paragraphs and a few dozen evidence digests (71 bytes each) fit; the
/// evidence itself stays out of the ledger, named by its digests. Its
/// envelope carries one signature (the reporter's).
pub const MAX_SIGNAL_BYTES: usize = 4 * 1024;

impl Payload for MisuseSignal {
    const PAYLOAD_TYPE: &'static str = "application/vnd.covenant.signal.v1+json";
    const MAX_BYTES: usize = MAX_SIGNAL_BYTES;
    // One reporter: the fold takes the signer from the first signature.
    const MAX_SIGNATURES: usize = 1;
    const MAX_ENVELOPE_BYTES: usize = crate::envelope::max_envelope_bytes(MAX_SIGNAL_BYTES, 1);

    fn validate(&self) -> Result<(), StatementError> {
        check_id("about.customer", &self.about.customer)?;
        if let Some(d) = &self.about.deployment {
            check_id("about.deployment", d)?;
        }
        check_text("summary", &self.summary)
    }
}
