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

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest as _, Sha256};

use crate::keys::{PublicKey, SigningKey};
use crate::merkle::{self, Hash, ProofError};

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

/// An Ed25519 note signer (a log's checkpoint key, or a witness's).
#[derive(Debug)]
pub struct NoteSigner {
    name: String,
    key: SigningKey,
}

impl NoteSigner {
    /// A signer named `name` with `key`.
    pub fn new(name: &str, key: SigningKey) -> Result<Self, NoteError> {
        if !is_valid_key_name(name) {
            return Err(NoteError::BadKeyName);
        }
        Ok(NoteSigner { name: name.to_owned(), key })
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
    /// the format [`NoteSigner::parse_private`] reads (for key files).
    pub fn to_private_string(&self) -> zeroize::Zeroizing<String> {
        let mut raw = zeroize::Zeroizing::new(vec![TYPE_ED25519]);
        raw.extend_from_slice(self.key.to_seed().as_slice());
        zeroize::Zeroizing::new(format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.verifier().id,
            STANDARD.encode(raw.as_slice())
        ))
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

    /// Signs a note text, returning its signature.
    pub fn sign(&self, text: &str) -> NoteSignature {
        let v = self.verifier();
        NoteSignature { name: self.name.clone(), key_id: v.id, sig: self.key.sign(text.as_bytes()).to_vec() }
    }

    /// Cosigns a checkpoint text at `timestamp` (tlog-cosignature, type 0x04).
    pub fn cosign(&self, checkpoint_text: &str, timestamp: u64) -> NoteSignature {
        let v = self.cosignature_verifier();
        let sig = self.key.sign(&cosignature_message(checkpoint_text, timestamp));
        let mut bytes = Vec::with_capacity(8 + 64);
        bytes.extend_from_slice(&timestamp.to_be_bytes());
        bytes.extend_from_slice(&sig);
        NoteSignature { name: self.name.clone(), key_id: v.id, sig: bytes }
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
        note.push_signature(log.sign(&text));
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
