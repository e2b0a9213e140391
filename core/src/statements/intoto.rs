//! End-use attestations and field verifications as in-toto Statement v1
//! (payload type `application/vnd.in-toto+json`), with Covenant predicates.
//!
//! A deployment subject is named `urn:covenant:deployment:<id>` with the
//! SHA-256 of the id as its digest; an attestation subject (in a field
//! verification) is `urn:covenant:attestation:<hex>` with the attestation
//! payload's SHA-256 as its digest. The end-use fields follow export-control
//! practice (end-user certificates and undertakings).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Payload, StatementError, check_country, check_id, check_text, fixed_tag, invalid};
use crate::digest::{Sha256Digest, Timestamp};

/// Subject-name prefix of a deployment.
pub const DEPLOYMENT_SUBJECT_PREFIX: &str = "urn:covenant:deployment:";
/// Subject-name prefix of an attestation.
pub const ATTESTATION_SUBJECT_PREFIX: &str = "urn:covenant:attestation:";

fixed_tag!(
    /// `_type` of an in-toto Statement v1.
    InTotoTag = str "https://in-toto.io/Statement/v1"
);

/// An in-toto resource digest set; Covenant uses SHA-256 only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectDigest {
    /// Hex SHA-256.
    pub sha256: Sha256Digest,
}

/// One subject of a statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    /// `urn:covenant:deployment:<id>` or `urn:covenant:attestation:<hex>`.
    pub name: String,
    /// Its digest.
    pub digest: SubjectDigest,
}

/// The subject naming deployment `id`.
pub fn deployment_subject(id: &str) -> Subject {
    Subject {
        name: format!("{DEPLOYMENT_SUBJECT_PREFIX}{id}"),
        digest: SubjectDigest { sha256: Sha256Digest::of(id.as_bytes()) },
    }
}

impl Subject {
    /// The deployment id this subject names, if it is a well-formed
    /// deployment subject whose digest matches the id.
    pub fn deployment(&self) -> Option<&str> {
        let id = self.name.strip_prefix(DEPLOYMENT_SUBJECT_PREFIX)?;
        (super::is_valid_id(id) && self.digest.sha256 == Sha256Digest::of(id.as_bytes())).then_some(id)
    }
}

/// The largest end-use attestation statement, in bytes. The README's
/// attestation is about 1.3 KB with its one subject; each further deployment
/// subject adds about 110 bytes, so 16 KiB holds over a hundred deployments
/// and several KB of text for `facts_unknown_to_signer`. A customer with
/// more deployments attests in several statements. (64 KiB, the default for
/// payloads, let one customer add 171 MB to the ledger in 10 s; the server
/// also bounds how many a customer adds an hour.) Its envelope carries one
/// signature.
pub const MAX_ATTESTATION_BYTES: usize = 16 * 1024;
/// The largest field verification statement, in bytes: its two subjects
/// and fixed fields take about 900 bytes, which leaves about 3 KB of
/// findings in words (the evidence itself stays with the engineer).
pub const MAX_VERIFICATION_BYTES: usize = 4 * 1024;

/// A predicate carried by an in-toto statement.
pub trait Predicate: Serialize + DeserializeOwned {
    /// Its `predicateType`.
    const PREDICATE_TYPE: &'static str;
    /// The largest statement carrying it, in bytes (its payload limit).
    const MAX_BYTES: usize;
    /// Checks the predicate's rules against the statement's subjects.
    fn validate(&self, subjects: &[Subject]) -> Result<(), StatementError>;
}

/// An in-toto Statement v1 with predicate `P`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InTotoStatement<P> {
    /// Always `https://in-toto.io/Statement/v1`.
    #[serde(rename = "_type")]
    pub type_tag: InTotoTag,
    /// What the statement is about.
    pub subject: Vec<Subject>,
    /// `P`'s predicate type.
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// The claims.
    pub predicate: P,
}

impl<P: Predicate> InTotoStatement<P> {
    /// A statement about `subject` with this predicate.
    pub fn new(subject: Vec<Subject>, predicate: P) -> Self {
        InTotoStatement { type_tag: InTotoTag, subject, predicate_type: P::PREDICATE_TYPE.to_owned(), predicate }
    }

    /// The deployment ids named by the subjects.
    pub fn deployments(&self) -> impl Iterator<Item = &str> {
        self.subject.iter().filter_map(Subject::deployment)
    }
}

impl<P: Predicate> Payload for InTotoStatement<P> {
    const PAYLOAD_TYPE: &'static str = "application/vnd.in-toto+json";
    const MAX_BYTES: usize = P::MAX_BYTES;
    // One signer: the fold checks the first signature against the one
    // registered key of the customer or engineer, so further signatures
    // would only be padding carried into the ledger for good.
    const MAX_SIGNATURES: usize = 1;
    const MAX_ENVELOPE_BYTES: usize = crate::envelope::max_envelope_bytes(P::MAX_BYTES, 1);

    fn validate(&self) -> Result<(), StatementError> {
        if self.predicate_type != P::PREDICATE_TYPE {
            return Err(invalid("predicateType", "is not the predicate type expected here"));
        }
        if self.subject.is_empty() {
            return Err(invalid("subject", "must name at least one subject"));
        }
        if self.subject.len() > 1024 {
            return Err(invalid("subject", "names more than 1024 subjects"));
        }
        self.predicate.validate(&self.subject)
    }
}

/// The end user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndUser {
    /// Legal name.
    pub legal_name: String,
    /// Kind of agency (police, intelligence, telecom operator, ...).
    pub agency_type: String,
    /// ISO 3166 country code.
    pub country: String,
}

/// The declared end use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndUse {
    /// A category from the contract's list.
    pub category: String,
    /// In words.
    pub description: String,
}

/// A site where the product runs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// ISO 3166 country code.
    pub country: String,
    /// The vendor's site id.
    pub site_id: String,
}

/// The end user's undertakings; each must be given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Undertakings {
    /// No re-export, transfer or relocation without the vendor's consent.
    pub no_reexport_transfer_or_relocation: bool,
    /// No modification and no inserted code.
    pub no_modification: bool,
    /// No targeting of journalists, human-rights defenders or political opposition.
    pub no_targeting_of_protected_groups: bool,
    /// Consent to audits and site checks.
    pub consent_to_audits_and_site_checks: bool,
}

impl Undertakings {
    /// Whether every undertaking is given.
    pub fn all_given(&self) -> bool {
        self.no_reexport_transfer_or_relocation
            && self.no_modification
            && self.no_targeting_of_protected_groups
            && self.consent_to_audits_and_site_checks
    }
}

/// Who signed, for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signatory {
    /// Name.
    pub name: String,
    /// Title.
    pub title: String,
}

/// Predicate `urn:covenant:end-use:v1`: a customer's end-use attestation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndUseAttestation {
    /// The customer attesting.
    pub customer: String,
    /// The end user.
    pub end_user: EndUser,
    /// The declared end use.
    pub end_use: EndUse,
    /// The legal basis for interception.
    pub legal_basis: String,
    /// The oversight body.
    pub oversight_body: String,
    /// Where the product runs.
    pub sites: Vec<Site>,
    /// The undertakings.
    pub undertakings: Undertakings,
    /// Facts relevant to the end use that are unknown to the signer.
    #[serde(default)]
    pub facts_unknown_to_signer: String,
    /// Who signed.
    pub signatory: Signatory,
    /// Start of validity.
    pub valid_from: Timestamp,
    /// End of validity.
    pub valid_until: Timestamp,
}

impl Predicate for EndUseAttestation {
    const PREDICATE_TYPE: &'static str = "urn:covenant:end-use:v1";
    const MAX_BYTES: usize = MAX_ATTESTATION_BYTES;

    fn validate(&self, subjects: &[Subject]) -> Result<(), StatementError> {
        if subjects.iter().any(|s| s.deployment().is_none()) {
            return Err(invalid(
                "subject",
                "each subject must be urn:covenant:deployment:<id> with the SHA-256 of the id as digest",
            ));
        }
        check_id("predicate.customer", &self.customer)?;
        check_text("predicate.end_user.legal_name", &self.end_user.legal_name)?;
        check_text("predicate.end_user.agency_type", &self.end_user.agency_type)?;
        check_country("predicate.end_user.country", &self.end_user.country)?;
        check_text("predicate.end_use.category", &self.end_use.category)?;
        check_text("predicate.legal_basis", &self.legal_basis)?;
        check_text("predicate.oversight_body", &self.oversight_body)?;
        if self.sites.is_empty() {
            return Err(invalid("predicate.sites", "must name at least one site"));
        }
        for site in &self.sites {
            check_country("predicate.sites.country", &site.country)?;
            check_id("predicate.sites.site_id", &site.site_id)?;
        }
        check_text("predicate.signatory.name", &self.signatory.name)?;
        check_text("predicate.signatory.title", &self.signatory.title)?;
        if self.valid_until <= self.valid_from {
            return Err(invalid("predicate.valid_until", "must be after valid_from"));
        }
        Ok(())
    }
}

/// How an engineer verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerificationMethod {
    /// On site.
    OnSite,
    /// Remotely.
    Remote,
}

/// A field verification's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerificationResult {
    /// What was attested is what was found.
    Pass,
    /// It is not.
    Fail,
}

/// Predicate `urn:covenant:field-verification:v1`: an engineer's check of
/// an attestation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldVerification {
    /// SHA-256 of the attestation's payload bytes.
    pub attestation: Sha256Digest,
    /// The deployment checked.
    pub deployment: String,
    /// How.
    pub method: VerificationMethod,
    /// The site observed.
    pub observed_site: Site,
    /// The configuration digest observed.
    pub observed_configuration_digest: Sha256Digest,
    /// Pass or fail.
    pub result: VerificationResult,
    /// What was found, in words.
    #[serde(default)]
    pub findings: String,
    /// When.
    pub date: Timestamp,
}

impl Predicate for FieldVerification {
    const PREDICATE_TYPE: &'static str = "urn:covenant:field-verification:v1";
    const MAX_BYTES: usize = MAX_VERIFICATION_BYTES;

    fn validate(&self, subjects: &[Subject]) -> Result<(), StatementError> {
        check_id("predicate.deployment", &self.deployment)?;
        check_country("predicate.observed_site.country", &self.observed_site.country)?;
        check_id("predicate.observed_site.site_id", &self.observed_site.site_id)?;
        let attestation_name = format!("{ATTESTATION_SUBJECT_PREFIX}{}", self.attestation);
        let names_attestation =
            subjects.iter().any(|s| s.name == attestation_name && s.digest.sha256 == self.attestation);
        let names_deployment = subjects.iter().any(|s| s.deployment() == Some(self.deployment.as_str()));
        if !names_attestation || !names_deployment || subjects.len() != 2 {
            return Err(invalid("subject", "must name exactly the attestation and the deployment of the predicate"));
        }
        if self.result == VerificationResult::Fail && self.findings.trim().is_empty() {
            return Err(invalid("predicate.findings", "a failed verification says what was found"));
        }
        Ok(())
    }
}
