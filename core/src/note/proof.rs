//! `tlog-proof`: an entry's index, its inclusion proof and the checkpoint
//! it is against, in text form, and its verification.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::{
    MAX_NOTE_BYTES, MAX_PROOF_HASHES, NoteError, NoteVerifier, TLOG_PROOF_HEADER, VerifiedCheckpoint, decode_hash,
    open_checkpoint, parse_decimal,
};
use crate::merkle::{self, Hash};

/// A C2SP tlog-proof: an entry's index, its inclusion proof, and the
/// checkpoint (with cosignatures) the proof is against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlogProof {
    /// Opaque, unauthenticated extra data.
    pub extra: Option<Vec<u8>>,
    /// The entry's index.
    pub index: u64,
    /// The inclusion proof, sibling first.
    pub proof: Vec<Hash>,
    /// The signed checkpoint note, verbatim.
    pub checkpoint: String,
}

impl TlogProof {
    /// Parses the text form.
    pub fn parse(bytes: &[u8]) -> Result<Self, NoteError> {
        if bytes.len() > MAX_NOTE_BYTES + 8 * 1024 {
            return Err(NoteError::TooLarge(bytes.len()));
        }
        let s = std::str::from_utf8(bytes).map_err(|_| NoteError::BadProof("not UTF-8"))?;
        let (head, checkpoint) =
            s.split_once("\n\n").ok_or(NoteError::BadProof("no blank line before the checkpoint"))?;
        let mut lines = head.split('\n').peekable();
        if lines.next() != Some(TLOG_PROOF_HEADER) {
            return Err(NoteError::BadProof("first line must be c2sp.org/tlog-proof@v1"));
        }
        let mut extra = None;
        if let Some(e) = lines.peek().and_then(|l| l.strip_prefix("extra ")) {
            extra = Some(STANDARD.decode(e).map_err(|_| NoteError::BadProof("extra is not base64"))?);
            lines.next();
        }
        let index = lines
            .next()
            .and_then(|l| l.strip_prefix("index "))
            .and_then(parse_decimal)
            .ok_or(NoteError::BadProof("expected index N, decimal without leading zeros"))?;
        let mut proof = Vec::new();
        for line in lines {
            if proof.len() == MAX_PROOF_HASHES {
                return Err(NoteError::BadProof("too many proof hashes"));
            }
            proof.push(decode_hash(line).ok_or(NoteError::BadProof("proof line is not a 32-byte base64 hash"))?);
        }
        if checkpoint.is_empty() {
            return Err(NoteError::BadProof("no checkpoint"));
        }
        Ok(TlogProof { extra, index, proof, checkpoint: checkpoint.to_owned() })
    }

    /// The text form.
    pub fn to_text(&self) -> String {
        let mut out = format!("{TLOG_PROOF_HEADER}\n");
        if let Some(extra) = &self.extra {
            out.push_str(&format!("extra {}\n", STANDARD.encode(extra)));
        }
        out.push_str(&format!("index {}\n", self.index));
        for h in &self.proof {
            out.push_str(&STANDARD.encode(h));
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.checkpoint);
        out
    }

    /// Verifies the checkpoint's log signature and that `leaf` (the entry's
    /// Merkle leaf hash) is included at `index` in it.
    pub fn verify(&self, leaf: &Hash, log: &NoteVerifier) -> Result<VerifiedCheckpoint, NoteError> {
        let verified = open_checkpoint(self.checkpoint.as_bytes(), log)?;
        let cp = verified.checkpoint();
        merkle::verify_inclusion(self.index, cp.size, leaf, &self.proof, &cp.root_hash)?;
        Ok(verified)
    }
}
