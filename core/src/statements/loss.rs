//! What a restore that the operator let lose entries records (ledger
//! format 3): signed by the decision key, logged as a `note` entry right
//! after the restored entries, so that every later reader of the ledger
//! learns that entries a witness had cosigned were lost, how many, and why.

use serde::{Deserialize, Serialize};

use super::{Payload, SchemaV1, StatementError, check_text, fixed_tag, invalid};
use crate::digest::{Sha256Digest, Timestamp};

fixed_tag!(
    /// `_type` of a restore's recorded loss.
    LossTag = str "restore_loss"
);

/// Payload of `application/vnd.covenant.restore-loss.v1+json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreLoss {
    /// Always `"restore_loss"`.
    #[serde(rename = "_type")]
    pub type_tag: LossTag,
    /// Always 1.
    pub schema: SchemaV1,
    /// The entries the restored backup holds: this record's own index.
    pub restored_size: u64,
    /// The tree head of the restored entries.
    pub restored_root: Sha256Digest,
    /// The largest size a witness (or a checkpoint the operator supplied)
    /// had cosigned: entries `restored_size..witnessed_size` are lost.
    pub witnessed_size: u64,
    /// Its root hash, when the evidence named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witnessed_root: Option<Sha256Digest>,
    /// Where that size came from (a witness's name, a file).
    pub evidence: String,
    /// The operator's reason, in words.
    pub why: String,
    /// When the restore was made.
    pub issued_at: Timestamp,
}

impl Payload for RestoreLoss {
    const PAYLOAD_TYPE: &'static str = "application/vnd.covenant.restore-loss.v1+json";
    const MAX_BYTES: usize = 16 * 1024;

    fn validate(&self) -> Result<(), StatementError> {
        if self.witnessed_size <= self.restored_size {
            return Err(invalid("witnessed_size", "must be larger than restored_size: a loss loses entries"));
        }
        check_text("evidence", &self.evidence)?;
        check_text("why", &self.why)
    }
}
