//! `tlog-checkpoint` and `tlog-cosignature`: a checkpoint's text, opening a
//! signed checkpoint (`VerifiedCheckpoint`), witness cosignatures, and the
//! `TrustedCheckpoint` that moves forward only along consistency proofs.

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::{
    Note, NoteError, NoteSigner, NoteVerifier, TYPE_COSIGNATURE, cosignature_message, decode_hash, parse_decimal,
};
use crate::merkle::{self, Hash};

/// A checkpoint's text: origin, tree size, root hash, extension lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin (its ledger key's note name).
    pub origin: String,
    /// The tree size.
    pub size: u64,
    /// The root hash.
    pub root_hash: Hash,
    /// Optional extension lines.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// Parses the text of a checkpoint note (tlog-checkpoint §Note text).
    pub fn parse_text(text: &str) -> Result<Self, NoteError> {
        let body = text.strip_suffix('\n').ok_or(NoteError::BadCheckpoint("text must end with a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines.next().filter(|o| !o.is_empty()).ok_or(NoteError::BadCheckpoint("empty origin"))?;
        let size = lines.next().ok_or(NoteError::BadCheckpoint("no tree size"))?;
        let size =
            parse_decimal(size).ok_or(NoteError::BadCheckpoint("tree size must be decimal without leading zeros"))?;
        let root = lines.next().ok_or(NoteError::BadCheckpoint("no root hash"))?;
        let root_hash = decode_hash(root).ok_or(NoteError::BadCheckpoint("root hash must be 32 bytes of base64"))?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(NoteError::BadCheckpoint("empty extension line"));
        }
        Ok(Checkpoint { origin: origin.to_owned(), size, root_hash, extensions })
    }

    /// The checkpoint's note text.
    pub fn to_text(&self) -> String {
        let mut out = format!("{}\n{}\n{}\n", self.origin, self.size, STANDARD.encode(self.root_hash));
        for e in &self.extensions {
            out.push_str(e);
            out.push('\n');
        }
        out
    }

    /// Signs this checkpoint with the log's key, giving a signed note.
    pub fn sign(&self, log: &NoteSigner) -> Result<Note, NoteError> {
        if log.name() != self.origin {
            return Err(NoteError::WrongOrigin { expected: log.name().to_owned(), found: self.origin.clone() });
        }
        let text = self.to_text();
        let mut note = Note::new(&text)?;
        note.push_signature(log.sign(&text)?);
        Ok(note)
    }
}

/// A witness cosignature that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosignature {
    /// The witness's key name.
    pub witness: String,
    /// The time the witness cosigned, seconds since the epoch.
    pub timestamp: u64,
}

/// A checkpoint whose log signature verified. Only this module constructs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    checkpoint: Checkpoint,
    note: Note,
}

impl VerifiedCheckpoint {
    /// The checkpoint.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The signed note it came in.
    pub fn note(&self) -> &Note {
        &self.note
    }

    /// Checks the witness cosignatures: every cosignature by a known witness
    /// must verify over this checkpoint, and at least `threshold` distinct
    /// witnesses must have cosigned. Returns the valid cosignatures.
    pub fn require_cosignatures(
        &self,
        witnesses: &[&NoteVerifier],
        threshold: usize,
    ) -> Result<Vec<Cosignature>, NoteError> {
        let mut valid = Vec::new();
        let mut seen = BTreeSet::new();
        for sig in self.note.signatures() {
            for w in witnesses.iter().filter(|w| w.sig_type == TYPE_COSIGNATURE && w.matches(sig)) {
                let bad = || NoteError::BadSignature { name: w.name.clone() };
                // tlog-cosignature: 8-byte big-endian timestamp, then the signature.
                let (ts, ed_sig) = sig.sig.split_at_checked(8).ok_or_else(bad)?;
                let timestamp = u64::from_be_bytes(ts.try_into().map_err(|_| bad())?);
                w.key.verify(&cosignature_message(self.note.text(), timestamp), ed_sig).map_err(|_| bad())?;
                if seen.insert(w.name.clone()) {
                    valid.push(Cosignature { witness: w.name.clone(), timestamp });
                }
            }
        }
        if valid.len() < threshold {
            return Err(NoteError::WitnessThresholdNotMet { valid: valid.len(), threshold });
        }
        Ok(valid)
    }

    /// Accepts this checkpoint as the first one trusted, with no history to
    /// be consistent with (from provisioning, or trust on first use). This is
    /// deliberately separate from [`TrustedCheckpoint::advance`]: a proof of
    /// consistency from size 0 proves nothing and is refused there.
    pub fn accept_first(self) -> TrustedCheckpoint {
        TrustedCheckpoint { verified: self }
    }
}

/// Opens a checkpoint note: parses it, checks the log's signature and that
/// the origin is the log's key name.
pub fn open_checkpoint(bytes: &[u8], log: &NoteVerifier) -> Result<VerifiedCheckpoint, NoteError> {
    let note = Note::parse(bytes)?;
    let checkpoint = Checkpoint::parse_text(note.text())?;
    if checkpoint.origin != log.name() {
        return Err(NoteError::WrongOrigin { expected: log.name().to_owned(), found: checkpoint.origin });
    }
    note.verify(&[log])?;
    Ok(VerifiedCheckpoint { checkpoint, note })
}

/// The newest checkpoint a verifier holds; it moves forward only along
/// consistency proofs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedCheckpoint {
    verified: VerifiedCheckpoint,
}

impl TrustedCheckpoint {
    /// Restores a checkpoint the verifier itself stored after accepting it:
    /// its own storage is trusted, and the key that signed the checkpoint
    /// may since have been rotated out of the root, so the signature is not
    /// checked again (its shape is).
    pub fn restore(bytes: &[u8]) -> Result<TrustedCheckpoint, NoteError> {
        let note = Note::parse(bytes)?;
        let checkpoint = Checkpoint::parse_text(note.text())?;
        Ok(TrustedCheckpoint { verified: VerifiedCheckpoint { checkpoint, note } })
    }

    /// The checkpoint.
    pub fn checkpoint(&self) -> &Checkpoint {
        self.verified.checkpoint()
    }

    /// The verified checkpoint behind it.
    pub fn verified(&self) -> &VerifiedCheckpoint {
        &self.verified
    }

    /// Moves to `newer` if `proof` shows it consistent with this one (RFC
    /// 9162 §2.1.4.2). A same-size checkpoint must have the same root. A
    /// smaller one is refused: the log never shrinks.
    pub fn advance(&self, newer: VerifiedCheckpoint, proof: &[Hash]) -> Result<TrustedCheckpoint, NoteError> {
        let old = self.checkpoint();
        let new = newer.checkpoint();
        if new.origin != old.origin {
            return Err(NoteError::WrongOrigin { expected: old.origin.clone(), found: new.origin.clone() });
        }
        merkle::verify_consistency(old.size, new.size, proof, &old.root_hash, &new.root_hash)?;
        Ok(TrustedCheckpoint { verified: newer })
    }
}
