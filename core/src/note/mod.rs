//! C2SP signed notes, checkpoints, cosignatures and tlog-proofs.
//!
//! - `signed-note`: a text ending in a newline, a blank line, then signature
//!   lines `— <name> base64(keyid32 || sig)`. Key ids are
//!   `SHA-256(name || 0x0A || type || public key)[:4]`; verifier keys are
//!   written `name+hex(keyid)+base64(type || public key)`.
//! - `tlog-checkpoint`: a note whose text is `origin`, tree size, base64 root
//!   hash, then optional extension lines.
//! - `tlog-cosignature`: a witness's type-0x04 signature over
//!   `cosignature/v1\ntime <t>\n` followed by the checkpoint text, its
//!   signature bytes being `keyid || u64 BE timestamp || Ed25519 signature`.
//! - `tlog-proof`: `c2sp.org/tlog-proof@v1`, an optional `extra` line,
//!   `index N`, the inclusion proof hashes, a blank line, and the checkpoint.
//!
//! Verification is strict: a note signed by a known key whose signature
//! fails is refused whole (signed-note §Signatures, "clients SHOULD reject
//! the whole note"); unknown keys are ignored.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest as _, Sha256};

use crate::keys::{PublicKey, SigningKey};
use crate::merkle::{Hash, ProofError};

mod checkpoint;
mod proof;

pub use checkpoint::{Checkpoint, Cosignature, TrustedCheckpoint, VerifiedCheckpoint, open_checkpoint};
pub use proof::TlogProof;

/// Signature type byte of Ed25519 note signatures.
pub const TYPE_ED25519: u8 = 0x01;
/// Signature type byte of timestamped Ed25519 witness cosignatures.
pub const TYPE_COSIGNATURE: u8 = 0x04;
/// The most signature lines a note may carry (the spec asks for at least 16).
pub const MAX_SIGNATURES: usize = 64;
/// The largest note accepted, in bytes.
pub const MAX_NOTE_BYTES: usize = 64 * 1024;
/// The first line of a tlog-proof.
pub const TLOG_PROOF_HEADER: &str = "c2sp.org/tlog-proof@v1";
/// The most hashes an inclusion proof can have (a tree of 2^64 leaves).
pub const MAX_PROOF_HASHES: usize = 64;

const EM_DASH_PREFIX: &str = "\u{2014} ";

/// Why a note, key, checkpoint, cosignature or proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// The text is not a signed note.
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    /// Larger than [`MAX_NOTE_BYTES`].
    #[error("note is {0} bytes, over the limit")]
    TooLarge(usize),
    /// More than [`MAX_SIGNATURES`] signature lines.
    #[error("note carries more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
    /// A key name is empty or has a space or `+`.
    #[error("invalid key name")]
    BadKeyName,
    /// A verifier or private key string is malformed.
    #[error("malformed key string: {0}")]
    BadKey(&'static str),
    /// A known key's signature does not verify.
    #[error("signature by known key {name:?} does not verify")]
    BadSignature {
        /// The key's name.
        name: String,
    },
    /// No signature from a known key.
    #[error("no signature from a known key")]
    NoKnownSignature,
    /// A key held elsewhere (a token) did not sign.
    #[error("the signing key could not sign: {0}")]
    Signer(String),
    /// The checkpoint's origin is not the log's.
    #[error("checkpoint origin {found:?} is not the expected {expected:?}")]
    WrongOrigin {
        /// The log's origin.
        expected: String,
        /// The checkpoint's.
        found: String,
    },
    /// The checkpoint text is malformed.
    #[error("malformed checkpoint: {0}")]
    BadCheckpoint(&'static str),
    /// Fewer valid witness cosignatures than required.
    #[error("{valid} valid witness cosignature(s), {threshold} required")]
    WitnessThresholdNotMet {
        /// Distinct known witnesses whose cosignature verified.
        valid: usize,
        /// Required.
        threshold: usize,
    },
    /// The tlog-proof text is malformed.
    #[error("malformed tlog-proof: {0}")]
    BadProof(&'static str),
    /// A Merkle proof does not verify.
    #[error("proof refused: {0}")]
    Proof(#[from] ProofError),
}

/// Whether `name` is a valid key name: non-empty, no Unicode space, no `+`.
pub fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

/// The 32-bit key id: `SHA-256(name || 0x0A || type || public)[:4]`, big endian.
pub fn key_id(name: &str, sig_type: u8, public: &[u8]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', sig_type]);
    h.update(public);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// A note verifier key: a name, a signature type and an Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    sig_type: u8,
    id: u32,
    key: PublicKey,
}

impl NoteVerifier {
    /// An Ed25519 (type 0x01) verifier, as a log's.
    pub fn ed25519(name: &str, key: PublicKey) -> Result<Self, NoteError> {
        Self::new(name, TYPE_ED25519, key)
    }

    /// A cosignature (type 0x04) verifier, as a witness's.
    pub fn cosignature(name: &str, key: PublicKey) -> Result<Self, NoteError> {
        Self::new(name, TYPE_COSIGNATURE, key)
    }

    fn new(name: &str, sig_type: u8, key: PublicKey) -> Result<Self, NoteError> {
        if !is_valid_key_name(name) {
            return Err(NoteError::BadKeyName);
        }
        let id = key_id(name, sig_type, &key.to_bytes());
        Ok(NoteVerifier { name: name.to_owned(), sig_type, id, key })
    }

    /// Parses `name+hex8+base64(type || key)`, checking the key id.
    pub fn parse(s: &str) -> Result<Self, NoteError> {
        // Base64 may contain '+', names may not: split into three parts at most.
        let mut parts = s.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::BadKey("expected name+keyid+key"));
        };
        if id_hex.len() != 8 {
            return Err(NoteError::BadKey("key id must be 8 hex digits"));
        }
        let id = u32::from_str_radix(id_hex, 16).map_err(|_| NoteError::BadKey("key id must be 8 hex digits"))?;
        let raw = STANDARD.decode(key_b64).map_err(|_| NoteError::BadKey("key is not base64"))?;
        let (&sig_type, public) = raw.split_first().ok_or(NoteError::BadKey("key is empty"))?;
        if sig_type != TYPE_ED25519 && sig_type != TYPE_COSIGNATURE {
            return Err(NoteError::BadKey("unsupported signature type"));
        }
        let key = PublicKey::from_bytes(public).map_err(|_| NoteError::BadKey("not an Ed25519 public key"))?;
        let verifier = Self::new(name, sig_type, key)?;
        if verifier.id != id {
            return Err(NoteError::BadKey("key id does not match name and key"));
        }
        Ok(verifier)
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 32-bit key id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The signature type byte.
    pub fn sig_type(&self) -> u8 {
        self.sig_type
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.key
    }

    fn matches(&self, sig: &NoteSignature) -> bool {
        sig.name == self.name && sig.key_id == self.id
    }
}

impl std::fmt::Display for NoteVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut raw = vec![self.sig_type];
        raw.extend_from_slice(&self.key.to_bytes());
        write!(f, "{}+{:08x}+{}", self.name, self.id, STANDARD.encode(raw))
    }
}

/// An Ed25519 note signer (a log's checkpoint key, or a witness's): a key
/// in memory, or one held elsewhere (a token) that signs on request.
#[derive(Debug)]
pub struct NoteSigner {
    name: String,
    key: NoteKey,
}

/// Where a note signer's key is.
#[derive(Debug)]
enum NoteKey {
    /// In memory (a key file's seed).
    Local(Box<SigningKey>),
    /// Held elsewhere: it signs, and never hands out its private half.
    Held(std::sync::Arc<dyn crate::keys::Signer>),
}

impl NoteKey {
    fn public(&self) -> PublicKey {
        match self {
            NoteKey::Local(k) => k.public(),
            NoteKey::Held(k) => k.public(),
        }
    }

    fn sign(&self, message: &[u8]) -> Result<[u8; 64], NoteError> {
        match self {
            NoteKey::Local(k) => Ok(k.sign(message)),
            NoteKey::Held(k) => k.try_sign(message).map_err(|e| NoteError::Signer(e.0)),
        }
    }
}

impl NoteSigner {
    /// A signer named `name` with `key`.
    pub fn new(name: &str, key: SigningKey) -> Result<Self, NoteError> {
        if !is_valid_key_name(name) {
            return Err(NoteError::BadKeyName);
        }
        Ok(NoteSigner { name: name.to_owned(), key: NoteKey::Local(Box::new(key)) })
    }

    /// A signer named `name` whose key is held elsewhere (a PKCS#11 token).
    pub fn held(name: &str, key: std::sync::Arc<dyn crate::keys::Signer>) -> Result<Self, NoteError> {
        if !is_valid_key_name(name) {
            return Err(NoteError::BadKeyName);
        }
        Ok(NoteSigner { name: name.to_owned(), key: NoteKey::Held(key) })
    }

    /// Parses `PRIVATE+KEY+name+hex8+base64(0x01 || seed)`.
    pub fn parse_private(s: &str) -> Result<Self, NoteError> {
        let rest = s.strip_prefix("PRIVATE+KEY+").ok_or(NoteError::BadKey("expected PRIVATE+KEY+ prefix"))?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::BadKey("expected PRIVATE+KEY+name+keyid+key"));
        };
        let id = u32::from_str_radix(id_hex, 16).map_err(|_| NoteError::BadKey("key id must be 8 hex digits"))?;
        let raw = STANDARD.decode(key_b64).map_err(|_| NoteError::BadKey("key is not base64"))?;
        let (&sig_type, seed) = raw.split_first().ok_or(NoteError::BadKey("key is empty"))?;
        if sig_type != TYPE_ED25519 {
            return Err(NoteError::BadKey("unsupported signature type"));
        }
        let seed: [u8; 32] = seed.try_into().map_err(|_| NoteError::BadKey("seed must be 32 bytes"))?;
        let signer = Self::new(name, SigningKey::from_seed(&seed))?;
        if signer.verifier().id != id || id_hex.len() != 8 {
            return Err(NoteError::BadKey("key id does not match name and key"));
        }
        Ok(signer)
    }

    /// The private key string `PRIVATE+KEY+name+hex8+base64(0x01 || seed)`,
    /// the format [`NoteSigner::parse_private`] reads (for key files); none
    /// for a key held elsewhere.
    pub fn to_private_string(&self) -> Option<zeroize::Zeroizing<String>> {
        let NoteKey::Local(key) = &self.key else { return None };
        let mut raw = zeroize::Zeroizing::new(vec![TYPE_ED25519]);
        raw.extend_from_slice(key.to_seed().as_slice());
        Some(zeroize::Zeroizing::new(format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.verifier().id,
            STANDARD.encode(raw.as_slice())
        )))
    }

    /// The type-0x01 verifier of this signer.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            sig_type: TYPE_ED25519,
            id: key_id(&self.name, TYPE_ED25519, &self.key.public().to_bytes()),
            key: self.key.public(),
        }
    }

    /// The type-0x04 (cosignature) verifier of this signer, as a witness.
    pub fn cosignature_verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            sig_type: TYPE_COSIGNATURE,
            id: key_id(&self.name, TYPE_COSIGNATURE, &self.key.public().to_bytes()),
            key: self.key.public(),
        }
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Signs a note text, returning its signature (or why a key held
    /// elsewhere did not sign).
    pub fn sign(&self, text: &str) -> Result<NoteSignature, NoteError> {
        let v = self.verifier();
        Ok(NoteSignature { name: self.name.clone(), key_id: v.id, sig: self.key.sign(text.as_bytes())?.to_vec() })
    }

    /// Cosigns a checkpoint text at `timestamp` (tlog-cosignature, type 0x04).
    pub fn cosign(&self, checkpoint_text: &str, timestamp: u64) -> Result<NoteSignature, NoteError> {
        let v = self.cosignature_verifier();
        let sig = self.key.sign(&cosignature_message(checkpoint_text, timestamp))?;
        let mut bytes = Vec::with_capacity(8 + 64);
        bytes.extend_from_slice(&timestamp.to_be_bytes());
        bytes.extend_from_slice(&sig);
        Ok(NoteSignature { name: self.name.clone(), key_id: v.id, sig: bytes })
    }
}

/// The message a witness signs: `cosignature/v1\ntime <t>\n` + checkpoint text.
pub fn cosignature_message(checkpoint_text: &str, timestamp: u64) -> Vec<u8> {
    format!("cosignature/v1\ntime {timestamp}\n{checkpoint_text}").into_bytes()
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// The key name.
    pub name: String,
    /// The 32-bit key id.
    pub key_id: u32,
    /// The signature bytes after the key id (for cosignatures: timestamp
    /// then signature).
    pub sig: Vec<u8>,
}

impl NoteSignature {
    /// The line, `— name base64(keyid || sig)\n`.
    pub fn to_line(&self) -> String {
        let mut raw = self.key_id.to_be_bytes().to_vec();
        raw.extend_from_slice(&self.sig);
        format!("{EM_DASH_PREFIX}{} {}\n", self.name, STANDARD.encode(raw))
    }

    /// Parses one line without its newline.
    pub fn parse_line(line: &str) -> Result<Self, NoteError> {
        let rest = line
            .strip_prefix(EM_DASH_PREFIX)
            .ok_or(NoteError::Malformed("signature line must start with an em dash"))?;
        let (name, b64) =
            rest.split_once(' ').ok_or(NoteError::Malformed("signature line needs a name and a signature"))?;
        if !is_valid_key_name(name) {
            return Err(NoteError::BadKeyName);
        }
        let raw = STANDARD.decode(b64).map_err(|_| NoteError::Malformed("signature is not base64"))?;
        if raw.len() < 5 {
            return Err(NoteError::Malformed("signature is too short"));
        }
        let (id, sig) = raw.split_at(4);
        let key_id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
        Ok(NoteSignature { name: name.to_owned(), key_id, sig: sig.to_vec() })
    }
}

/// A parsed signed note whose signatures have not been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    text: String,
    signatures: Vec<NoteSignature>,
}

impl Note {
    /// A note of `text` (ending in a newline) with no signatures yet.
    pub fn new(text: &str) -> Result<Self, NoteError> {
        check_text(text)?;
        Ok(Note { text: text.to_owned(), signatures: Vec::new() })
    }

    /// Parses a signed note.
    pub fn parse(bytes: &[u8]) -> Result<Self, NoteError> {
        if bytes.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge(bytes.len()));
        }
        let s = std::str::from_utf8(bytes).map_err(|_| NoteError::Malformed("not UTF-8"))?;
        if s.chars().any(|c| c < ' ' && c != '\n') {
            return Err(NoteError::Malformed("control character"));
        }
        // The text is separated from the signatures by the last blank line.
        let split = s.rfind("\n\n").ok_or(NoteError::Malformed("no blank line before the signatures"))?;
        let text = &s[..split + 1];
        let sigs = &s[split + 2..];
        check_text(text)?;
        let lines = sigs.strip_suffix('\n').ok_or(NoteError::Malformed("signatures must end with a newline"))?;
        let mut signatures = Vec::new();
        for line in lines.split('\n') {
            if signatures.len() == MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures);
            }
            signatures.push(NoteSignature::parse_line(line)?);
        }
        Ok(Note { text: text.to_owned(), signatures })
    }

    /// The note text (what signatures cover), with its final newline.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The signature lines.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// Adds a signature line.
    pub fn push_signature(&mut self, sig: NoteSignature) {
        self.signatures.push(sig);
    }

    /// The signed note as text.
    pub fn to_text(&self) -> String {
        let mut out = self.text.clone();
        out.push('\n');
        for s in &self.signatures {
            out.push_str(&s.to_line());
        }
        out
    }

    /// Checks the type-0x01 signatures of `verifiers`: every matching one
    /// must verify and at least one must match. Returns the names that
    /// verified.
    pub fn verify(&self, verifiers: &[&NoteVerifier]) -> Result<Vec<String>, NoteError> {
        let mut ok = Vec::new();
        for sig in &self.signatures {
            for v in verifiers.iter().filter(|v| v.sig_type == TYPE_ED25519 && v.matches(sig)) {
                v.key
                    .verify(self.text.as_bytes(), &sig.sig)
                    .map_err(|_| NoteError::BadSignature { name: v.name.clone() })?;
                ok.push(v.name.clone());
            }
        }
        if ok.is_empty() {
            return Err(NoteError::NoKnownSignature);
        }
        Ok(ok)
    }
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if text.is_empty() || !text.ends_with('\n') {
        return Err(NoteError::Malformed("text must end with a newline"));
    }
    if text.chars().any(|c| c < ' ' && c != '\n') {
        return Err(NoteError::Malformed("control character"));
    }
    Ok(())
}

/// Parses an ASCII decimal with no sign and no leading zeros (except "0").
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

fn decode_hash(s: &str) -> Option<Hash> {
    STANDARD.decode(s).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn decimals_have_no_leading_zeros_or_signs() {
        assert_eq!(parse_decimal("0"), Some(0));
        assert_eq!(parse_decimal("10"), Some(10));
        assert_eq!(parse_decimal("010"), None);
        assert_eq!(parse_decimal("+1"), None);
        assert_eq!(parse_decimal(""), None);
        assert_eq!(parse_decimal("18446744073709551616"), None);
    }

    #[test]
    fn key_names_refuse_spaces_and_plus() {
        assert!(is_valid_key_name("example.com/log"));
        assert!(!is_valid_key_name(""));
        assert!(!is_valid_key_name("a b"));
        assert!(!is_valid_key_name("a+b"));
        assert!(!is_valid_key_name("a\u{00a0}b"));
    }
}
