//! The typed payloads of `docs/formats.md`, each with its payload
//! type, its `_type` tag, its schema version and its own validation.
//!
//! Payloads are JSON. Parsing is strict: unknown fields, a wrong `_type` or
//! schema, and values that break a statement's rules are refused. Every
//! parser is bounded by a size limit checked before any JSON is read.

mod action;
mod contract;
mod decision;
mod device;
mod intoto;
mod loss;
mod release;
mod root;

pub use action::{
    ActionKind, ActionTag, AdminAction, CaseState, Determination, IdentityRole, MAX_SIGNAL_BYTES, MisuseSignal,
    SignalAbout, SignalSource, SignalTag, SuspensionLevel, SuspensionTarget, UnknownRole,
};
pub use contract::{
    Condition, ConditionName, Contract, DeniedParty, Licence, UnknownCondition, contract_relaxations,
    licence_relaxations,
};
pub use decision::{
    ConditionResult, ConditionStatus, ContractRef, Decision, DecisionTag, FreshTag, Freshness, FreshnessStanding,
    Verdict, WithheldRelease,
};
pub use device::{
    CheckIn, CheckInTag, CheckpointRef, InstallOutcome, InstallReport, MAX_CHECKIN_BYTES, MAX_CHECKIN_ENVELOPE_BYTES,
    MAX_REPORT_BYTES, MAX_REPORT_ENVELOPE_BYTES, MAX_SOFTWARE_DIGESTS, MAX_SOFTWARE_PATH_BYTES,
    MAX_VERSION_LABEL_BYTES, ReportTag,
};
pub use intoto::{
    ATTESTATION_SUBJECT_PREFIX, DEPLOYMENT_SUBJECT_PREFIX, EndUse, EndUseAttestation, EndUser, FieldVerification,
    InTotoStatement, InTotoTag, MAX_ATTESTATION_BYTES, MAX_VERIFICATION_BYTES, Predicate, Signatory, Site, Subject,
    SubjectDigest, Undertakings, VerificationMethod, VerificationResult, deployment_subject,
};
pub use loss::{LossTag, RestoreLoss};
pub use release::{Artifact, ReleaseClass, ReleaseManifest, ReleaseTag};
pub use root::{RoleSpec, Roles, RootKey, RootMetadata, RootTag};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StatementError {
    /// The payload is larger than this statement allows.
    #[error("payload is {size} bytes, over the limit of {limit} for this statement")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The payload is not JSON of this statement's shape (the message says
    /// where, and includes a wrong `_type` or schema).
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// A field breaks a rule of this statement.
    #[error("{field}: {rule}")]
    Invalid {
        /// The field, as a JSON path.
        field: &'static str,
        /// The rule it breaks.
        rule: &'static str,
    },
}

/// Shorthand for a rule violation.
pub(crate) fn invalid(field: &'static str, rule: &'static str) -> StatementError {
    StatementError::Invalid { field, rule }
}

/// The largest envelope accepted, in bytes. Statements set tighter limits of
/// their own (an attestation: 16 KiB, a check-in: 4 KiB).
pub const MAX_ENVELOPE_BYTES: usize = 1 << 20;

/// The most signatures an envelope may carry; more is refused unread, so an
/// attacker cannot make a verifier check thousands of signatures.
/// Statements signed by one key set a tighter limit of their own
/// ([`Payload::MAX_SIGNATURES`]).
pub const MAX_SIGNATURES: usize = 32;

/// A signed payload type: its DSSE payload type, its size limit, its rules.
pub trait Payload: Sized + Serialize + DeserializeOwned {
    /// The DSSE `payloadType`.
    const PAYLOAD_TYPE: &'static str;
    /// The largest payload accepted, in bytes.
    const MAX_BYTES: usize = 64 * 1024;
    /// The most signatures its envelope may carry.
    const MAX_SIGNATURES: usize = MAX_SIGNATURES;
    /// The largest envelope of it accepted, in bytes (checked before the
    /// envelope is parsed).
    const MAX_ENVELOPE_BYTES: usize = MAX_ENVELOPE_BYTES;

    /// Checks the statement's own rules (beyond its JSON shape).
    fn validate(&self) -> Result<(), StatementError>;

    /// Parses and validates payload bytes.
    fn parse(bytes: &[u8]) -> Result<Self, StatementError> {
        if bytes.len() > Self::MAX_BYTES {
            return Err(StatementError::TooLarge { size: bytes.len(), limit: Self::MAX_BYTES });
        }
        let value: Self = serde_json::from_slice(bytes).map_err(|e| StatementError::Malformed(e.to_string()))?;
        value.validate()?;
        Ok(value)
    }

    /// The payload bytes to sign.
    fn to_payload_bytes(&self) -> Vec<u8> {
        // Our statements are plain data with string keys: serializing cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Declares a zero-sized type that serializes as one fixed JSON value and
/// refuses any other: the `_type` tags and schema versions of payloads.
macro_rules! fixed_tag {
    ($(#[$doc:meta])* $name:ident = str $value:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $name;
        impl $name {
            /// The tag's value.
            pub const VALUE: &'static str = $value;
        }
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str($value)
            }
        }
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                if s == $value {
                    Ok($name)
                } else {
                    Err(serde::de::Error::custom(concat!("expected \"", $value, "\"")))
                }
            }
        }
    };
}
pub(crate) use fixed_tag;

/// The schema version of every Covenant payload so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchemaV1;

impl Serialize for SchemaV1 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(1)
    }
}

impl<'de> serde::Deserialize<'de> for SchemaV1 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u32::deserialize(d)? {
            1 => Ok(SchemaV1),
            _ => Err(serde::de::Error::custom("unsupported schema version (this build reads schema 1)")),
        }
    }
}

/// Checks an opaque identifier (customer, deployment, product, contract):
/// 1 to 64 characters of `a-z 0-9 . _ -`, starting with a letter or digit.
pub fn is_valid_id(s: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-');
    !s.is_empty()
        && s.len() <= 64
        && s.chars().all(ok_char)
        && s.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// Refuses an invalid identifier in `field`.
pub(crate) fn check_id(field: &'static str, s: &str) -> Result<(), StatementError> {
    if is_valid_id(s) { Ok(()) } else { Err(invalid(field, "must be 1-64 characters of a-z 0-9 . _ -")) }
}

/// Refuses an empty or whitespace-only text in `field`.
pub(crate) fn check_text(field: &'static str, s: &str) -> Result<(), StatementError> {
    if s.trim().is_empty() { Err(invalid(field, "must not be empty")) } else { Ok(()) }
}

/// Refuses anything but a two-letter upper-case ISO 3166 country code.
pub(crate) fn check_country(field: &'static str, s: &str) -> Result<(), StatementError> {
    if s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(invalid(field, "must be a two-letter ISO 3166 country code such as DE"))
    }
}
