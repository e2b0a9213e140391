//! What the server's decision key signs: grants and withholds (logged), and
//! freshness answers to each check-in (not logged).

use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::{Payload, SchemaV1, StatementError, SuspensionLevel, check_id, check_text, fixed_tag, invalid};
use crate::digest::{Sha256Digest, Timestamp};

fixed_tag!(
    /// `_type` of a decision.
    DecisionTag = str "decision"
);
fixed_tag!(
    /// `_type` of a freshness answer.
    FreshTag = str "fresh"
);

/// A logged verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The deployment may install the named release.
    Grant,
    /// A newer release exists but may not be had.
    Withhold,
}

/// How one contract condition evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConditionStatus {
    /// The condition holds.
    Met,
    /// It does not; the reason says what to do.
    Unmet,
    /// It does not apply here.
    NotApplicable,
}

/// One condition's result, with a reason for the customer's operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionResult {
    /// The condition's name (`end_use_attested`, ...).
    pub condition: String,
    /// Its status.
    pub status: ConditionStatus,
    /// In words, for the operator (empty when met).
    #[serde(default)]
    pub reason: String,
}

/// A newer release the deployment may not have, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WithheldRelease {
    /// The release's digest.
    pub release: Sha256Digest,
    /// Its version.
    pub version: semver::Version,
    /// Why, in words.
    pub reasons: Vec<String>,
}

/// The contract a decision was made under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractRef {
    /// Contract id.
    pub id: String,
    /// Its version.
    pub version: u64,
}

/// Payload of `application/vnd.covenant.decision.v1+json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Always `"decision"`.
    #[serde(rename = "_type")]
    pub type_tag: DecisionTag,
    /// Always 1.
    pub schema: SchemaV1,
    /// The deployment id.
    pub deployment: String,
    /// Grant or withhold.
    pub verdict: Verdict,
    /// With a grant: the release's digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<Sha256Digest>,
    /// Newer releases it may not have, and why (on a grant too).
    #[serde(default)]
    pub withheld_above: Vec<WithheldRelease>,
    /// Every condition's result.
    pub conditions: Vec<ConditionResult>,
    /// The effective suspension level.
    pub suspension: SuspensionLevel,
    /// The exact bytes of the device-signed check-in answered, base64.
    #[serde(with = "base64_bytes")]
    pub checkin: Vec<u8>,
    /// The contract.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract: Option<ContractRef>,
    /// The policy version that decided.
    pub policy_version: u32,
    /// The number of ledger entries the state was folded from.
    pub state_size: u64,
    /// When it was decided.
    pub issued_at: Timestamp,
    /// With a grant: when it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// What the check-in claims that the ledger does not record (the
    /// installed version), in words for the officer. Never an input to the
    /// verdict, and not part of what a decision says for logging (a device
    /// alternating its claim logs nothing new).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding: Option<String>,
    /// The identity id of the field engineer who carried the check-in from
    /// an air-gapped site (`FieldService.Fetch`, docs/offline.md), if one
    /// did. Never the actor (the decision key signs), never an input to the
    /// verdict; replay checks that it names an engineer whose scope held the
    /// deployment. Ledger format 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub courier: Option<String>,
}

impl Payload for Decision {
    const PAYLOAD_TYPE: &'static str = "application/vnd.covenant.decision.v1+json";
    // The check-in rides inside, base64: allow it room.
    const MAX_BYTES: usize = 256 * 1024;

    fn validate(&self) -> Result<(), StatementError> {
        check_id("deployment", &self.deployment)?;
        if let Some(courier) = &self.courier {
            check_id("courier", courier)?;
        }
        if self.checkin.is_empty() {
            return Err(invalid("checkin", "must carry the signed check-in it answers"));
        }
        for c in &self.conditions {
            check_text("conditions.condition", &c.condition)?;
            if c.status == ConditionStatus::Unmet && c.reason.trim().is_empty() {
                return Err(invalid("conditions.reason", "an unmet condition needs a reason"));
            }
        }
        match self.verdict {
            Verdict::Grant => {
                if self.release.is_none() {
                    return Err(invalid("release", "a grant names its release"));
                }
                match self.expires_at {
                    None => return Err(invalid("expires_at", "a grant expires")),
                    Some(e) if e <= self.issued_at => {
                        return Err(invalid("expires_at", "must be after issued_at"));
                    }
                    Some(_) => {}
                }
            }
            Verdict::Withhold => {
                if self.release.is_some() || self.expires_at.is_some() {
                    return Err(invalid("release", "a withhold names no release and has no expiry"));
                }
                if self.withheld_above.is_empty() {
                    return Err(invalid("withheld_above", "a withhold names what it withholds"));
                }
            }
        }
        Ok(())
    }
}

/// What a freshness answer vouches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case", deny_unknown_fields)]
pub enum FreshnessStanding {
    /// No newer release exists for this product.
    Current,
    /// The standing grant or withhold at this ledger index.
    Standing {
        /// Its ledger index.
        index: u64,
        /// Its Merkle leaf hash.
        leaf_hash: Sha256Digest,
        /// The checkpoint size its inclusion proof is against.
        checkpoint_size: u64,
    },
}

/// Payload of `application/vnd.covenant.fresh.v1+json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Freshness {
    /// Always `"fresh"`.
    #[serde(rename = "_type")]
    pub type_tag: FreshTag,
    /// Always 1.
    pub schema: SchemaV1,
    /// The deployment id.
    pub deployment: String,
    /// The nonce of the check-in answered.
    pub nonce: Sha256Digest,
    /// The server's time.
    pub time: Timestamp,
    /// What stands.
    pub standing: FreshnessStanding,
}

impl Payload for Freshness {
    const PAYLOAD_TYPE: &'static str = "application/vnd.covenant.fresh.v1+json";

    fn validate(&self) -> Result<(), StatementError> {
        check_id("deployment", &self.deployment)?;
        if let FreshnessStanding::Standing { index, checkpoint_size, .. } = self.standing
            && index >= checkpoint_size
        {
            return Err(invalid("standing.index", "must be below checkpoint_size"));
        }
        Ok(())
    }
}

/// Serde helper: bytes as standard base64.
mod base64_bytes {
    use super::STANDARD;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}
