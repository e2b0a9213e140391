//! A witness's decision (C2SP tlog-witness semantics), as a pure function:
//! given what it last cosigned, a new checkpoint from the log and a
//! consistency proof, either cosign (and say what to persist before
//! answering) or refuse. A witness never cosigns a checkpoint inconsistent
//! with one it cosigned, and never goes back to a smaller tree.

use serde::{Deserialize, Serialize};

use crate::merkle::Hash;
use crate::note::{self, NoteError, NoteSignature, NoteSigner, NoteVerifier};

/// What a witness remembers about one log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessRecord {
    /// The tree size it last cosigned.
    pub size: u64,
    /// That tree's root, hex.
    pub root: String,
}

/// Why a witness refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WitnessError {
    /// The checkpoint is not signed by the log's key (or is malformed).
    #[error("the checkpoint is refused: {0}")]
    Checkpoint(NoteError),
    /// The log assumed another previous size (tlog-witness 409 Conflict);
    /// it should retry with a proof from `size`.
    #[error("this witness last cosigned size {size}, not {claimed}")]
    Conflict {
        /// The size the witness holds.
        size: u64,
        /// The size the log claimed.
        claimed: u64,
    },
    /// The checkpoint is smaller than what the witness cosigned.
    #[error("the checkpoint of size {new} is smaller than the size {held} already cosigned")]
    Shrinks {
        /// Held size.
        held: u64,
        /// Offered size.
        new: u64,
    },
    /// The consistency proof does not hold: a fork or a rewritten history.
    #[error("the checkpoint is not consistent with the one cosigned at size {held}: {reason}")]
    Inconsistent {
        /// Held size.
        held: u64,
        /// Why.
        reason: NoteError,
    },
    /// The witness's own key did not sign (a key held in a token).
    #[error("the witness could not cosign: {0}")]
    Signer(NoteError),
}

/// Decides whether to cosign `checkpoint` (the log's signed note) at
/// `timestamp`. On success returns the record to persist (before
/// answering) and the cosignature line.
pub fn cosign(
    held: Option<&WitnessRecord>,
    claimed_old_size: u64,
    proof: &[Hash],
    checkpoint: &[u8],
    log: &NoteVerifier,
    witness: &NoteSigner,
    timestamp: u64,
) -> Result<(WitnessRecord, NoteSignature), WitnessError> {
    let verified = note::open_checkpoint(checkpoint, log).map_err(WitnessError::Checkpoint)?;
    let cp = verified.checkpoint().clone();
    let held_size = held.map_or(0, |h| h.size);
    if claimed_old_size != held_size {
        return Err(WitnessError::Conflict { size: held_size, claimed: claimed_old_size });
    }
    if let Some(h) = held {
        if cp.size < h.size {
            return Err(WitnessError::Shrinks { held: h.size, new: cp.size });
        }
        let mut old_root = [0u8; 32];
        hex::decode_to_slice(&h.root, &mut old_root).map_err(|_| WitnessError::Inconsistent {
            held: h.size,
            reason: NoteError::BadCheckpoint("stored root is not hex"),
        })?;
        if h.size == cp.size && old_root != cp.root_hash {
            return Err(WitnessError::Inconsistent {
                held: h.size,
                reason: NoteError::Proof(crate::merkle::ProofError::RootMismatch),
            });
        }
        if h.size > 0 && h.size < cp.size {
            crate::merkle::verify_consistency(h.size, cp.size, proof, &old_root, &cp.root_hash)
                .map_err(|e| WitnessError::Inconsistent { held: h.size, reason: NoteError::Proof(e) })?;
        }
    }
    // The first checkpoint of a log is taken on trust (tlog-witness: old size 0).
    let sig = witness.cosign(verified.note().text(), timestamp);
    let sig = sig.map_err(WitnessError::Signer)?;
    Ok((WitnessRecord { size: cp.size, root: hex::encode(cp.root_hash) }, sig))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::keys::SigningKey;
    use crate::merkle::{self, MemoryTree};

    fn signed(tree: &MemoryTree, log: &NoteSigner) -> Vec<u8> {
        note::Checkpoint { origin: log.name().into(), size: tree.size(), root_hash: tree.root(), extensions: vec![] }
            .sign(log)
            .unwrap()
            .to_text()
            .into_bytes()
    }

    fn tree(prefix: &str, n: u64) -> MemoryTree {
        let mut t = MemoryTree::new();
        for i in 0..n {
            t.push_leaf(format!("{prefix}{i}").as_bytes());
        }
        t
    }

    #[test]
    fn cosigns_a_consistent_history_and_refuses_a_fork_and_a_rollback() {
        let log = NoteSigner::new("log.test/l", SigningKey::from_seed(&[1; 32])).unwrap();
        let w = NoteSigner::new("witness.test/w", SigningKey::from_seed(&[2; 32])).unwrap();
        let t5 = tree("e", 5);
        let (rec, sig) = cosign(None, 0, &[], &signed(&t5, &log), &log.verifier(), &w, 100).unwrap();
        assert_eq!(rec.size, 5);
        // The cosignature verifies over that checkpoint.
        let text = format!("{}{}", String::from_utf8(signed(&t5, &log)).unwrap(), sig.to_line());
        let v = note::open_checkpoint(text.as_bytes(), &log.verifier()).unwrap();
        assert_eq!(v.require_cosignatures(&[&w.cosignature_verifier()], 1).unwrap()[0].timestamp, 100);

        let t9 = tree("e", 9);
        let proof = merkle::consistency_proof(&t9, 5, 9).unwrap();
        let (rec9, _) = cosign(Some(&rec), 5, &proof, &signed(&t9, &log), &log.verifier(), &w, 101).unwrap();
        assert_eq!(rec9.size, 9);

        // A rewritten history of 12 entries, signed with the genuine key.
        let fork = tree("x", 12);
        let proof = merkle::consistency_proof(&fork, 9, 12).unwrap();
        assert!(matches!(
            cosign(Some(&rec9), 9, &proof, &signed(&fork, &log), &log.verifier(), &w, 102),
            Err(WitnessError::Inconsistent { held: 9, .. })
        ));
        // Going back.
        assert_eq!(
            cosign(Some(&rec9), 9, &[], &signed(&t5, &log), &log.verifier(), &w, 103).unwrap_err(),
            WitnessError::Shrinks { held: 9, new: 5 }
        );
        // A log that thinks the witness is elsewhere.
        assert_eq!(
            cosign(Some(&rec9), 5, &[], &signed(&t9, &log), &log.verifier(), &w, 104).unwrap_err(),
            WitnessError::Conflict { size: 9, claimed: 5 }
        );
        // Another key.
        let other = NoteSigner::new("log.test/l", SigningKey::from_seed(&[3; 32])).unwrap();
        assert!(matches!(
            cosign(Some(&rec9), 9, &[], &signed(&t9, &other), &log.verifier(), &w, 105),
            Err(WitnessError::Checkpoint(_))
        ));
    }
}
