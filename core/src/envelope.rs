//! DSSE v1 envelopes: pre-authentication encoding, signing, parsing and
//! threshold verification.
//!
//! Signatures cover `PAE(payloadType, payload)` of the exact payload bytes
//! received; the payload is parsed only after the signatures check out
//! (`docs/style.md`). A threshold counts distinct known key ids with a valid
//! signature: duplicates count once, unknown key ids are ignored. A
//! successful check returns a [`Verified`] value, which nothing outside this
//! module can construct.

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;
use crate::keys::{KeyId, KeySet, SignError, Signer, SigningKey};
use crate::statements::{Payload, StatementError};

// The envelope's limits are defined beside the `Payload` trait whose
// defaults they are (so the two modules import one way only).
pub use crate::statements::{MAX_ENVELOPE_BYTES, MAX_SIGNATURES};

/// What an envelope adds to its base64 payload besides signatures, at most:
/// the JSON keys and punctuation and a payload type of up to 128 bytes.
pub const ENVELOPE_OVERHEAD_BYTES: usize = 256;

/// What one signature adds to an envelope, at most: a 64-digit key id, an
/// Ed25519 signature in base64 (88 characters) and the JSON around them.
pub const SIGNATURE_BYTES: usize = 256;

/// The largest envelope that carries a payload of `payload_bytes` with
/// `signatures` signatures: what a statement whose payload and signature
/// count are bounded may take on the wire, so that its envelope cannot be
/// padded (whitespace, long key ids, extra signatures) past what its content
/// needs.
pub const fn max_envelope_bytes(payload_bytes: usize, signatures: usize) -> usize {
    payload_bytes.div_ceil(3) * 4 + ENVELOPE_OVERHEAD_BYTES + signatures * SIGNATURE_BYTES
}

/// Why an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The envelope is larger than allowed.
    #[error("envelope is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The bytes are not a DSSE JSON envelope.
    #[error("not a DSSE envelope: {0}")]
    Malformed(String),
    /// A base64 field does not decode.
    #[error("the {0} field is not valid base64")]
    BadBase64(&'static str),
    /// More signatures than [`MAX_SIGNATURES`], or than the statement
    /// allows ([`Payload::MAX_SIGNATURES`]).
    #[error("envelope carries {count} signatures, over the limit of {limit}")]
    TooManySignatures {
        /// How many it carries.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The payload type is not the one expected here.
    #[error("payload type is {found:?}, expected {expected:?}")]
    WrongPayloadType {
        /// What the caller expected.
        expected: &'static str,
        /// What the envelope says.
        found: String,
    },
    /// Too few distinct known keys signed.
    #[error("{valid} valid signature(s) from distinct known keys, {threshold} required")]
    ThresholdNotMet {
        /// Distinct known keys whose signature verified.
        valid: u32,
        /// The threshold.
        threshold: u32,
    },
    /// The signatures are good but the payload is not a valid statement.
    #[error("payload refused: {0}")]
    Payload(#[from] StatementError),
}

/// The DSSE v1 pre-authentication encoding:
/// `"DSSEv1" SP len(type) SP type SP len(payload) SP payload`.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload_type.len() + payload.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// One signature of an envelope, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeSignature {
    /// The key id as written (possibly empty or unknown).
    pub keyid: String,
    /// The signature bytes.
    pub sig: Vec<u8>,
}

/// A parsed DSSE envelope whose signatures have not been checked.
#[derive(Debug, Clone)]
pub struct Envelope {
    payload_type: String,
    payload: Vec<u8>,
    signatures: Vec<EnvelopeSignature>,
    /// The size of the bytes it was parsed from (0 for one built here): a
    /// statement's envelope limit is checked against what was received.
    received_len: usize,
}

/// Two envelopes are equal when they say the same, however they were
/// formatted on the wire.
impl PartialEq for Envelope {
    fn eq(&self, other: &Self) -> bool {
        self.payload_type == other.payload_type && self.payload == other.payload && self.signatures == other.signatures
    }
}

impl Eq for Envelope {}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEnvelope {
    #[serde(rename = "payloadType")]
    payload_type: String,
    payload: String,
    signatures: Vec<WireSignature>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSignature {
    #[serde(default)]
    keyid: String,
    sig: String,
}

/// DSSE allows standard or URL-safe base64; we write standard.
fn decode_base64(s: &str, field: &'static str) -> Result<Vec<u8>, EnvelopeError> {
    STANDARD.decode(s).or_else(|_| URL_SAFE.decode(s)).map_err(|_| EnvelopeError::BadBase64(field))
}

impl Envelope {
    /// An envelope with no signatures yet.
    pub fn new(payload_type: &str, payload: Vec<u8>) -> Self {
        Envelope { payload_type: payload_type.to_owned(), payload, signatures: Vec::new(), received_len: 0 }
    }

    /// Parses the JSON form, within the size and signature-count limits.
    pub fn parse(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        Self::parse_within(bytes, MAX_ENVELOPE_BYTES, MAX_SIGNATURES)
    }

    /// Parses the JSON form of an envelope of `T`, within `T`'s envelope
    /// size and signature count (checked before any JSON is read and before
    /// any base64 is decoded).
    pub fn parse_for<T: Payload>(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        Self::parse_within(bytes, T::MAX_ENVELOPE_BYTES.min(MAX_ENVELOPE_BYTES), T::MAX_SIGNATURES.min(MAX_SIGNATURES))
    }

    fn parse_within(bytes: &[u8], max_bytes: usize, max_signatures: usize) -> Result<Self, EnvelopeError> {
        if bytes.len() > max_bytes {
            return Err(EnvelopeError::TooLarge { size: bytes.len(), limit: max_bytes });
        }
        let wire: WireEnvelope = serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        if wire.signatures.len() > max_signatures {
            return Err(EnvelopeError::TooManySignatures { count: wire.signatures.len(), limit: max_signatures });
        }
        let payload = decode_base64(&wire.payload, "payload")?;
        let signatures = wire
            .signatures
            .into_iter()
            .map(|s| Ok(EnvelopeSignature { keyid: s.keyid, sig: decode_base64(&s.sig, "sig")? }))
            .collect::<Result<Vec<_>, EnvelopeError>>()?;
        Ok(Envelope { payload_type: wire.payload_type, payload, signatures, received_len: bytes.len() })
    }

    /// The JSON form (`payloadType`, `payload`, `signatures`), to be stored
    /// and sent as these exact bytes from now on.
    pub fn to_bytes(&self) -> Vec<u8> {
        let wire = WireEnvelope {
            payload_type: self.payload_type.clone(),
            payload: STANDARD.encode(&self.payload),
            signatures: self
                .signatures
                .iter()
                .map(|s| WireSignature { keyid: s.keyid.clone(), sig: STANDARD.encode(&s.sig) })
                .collect(),
        };
        // Serializing plain strings and vectors cannot fail.
        serde_json::to_vec(&wire).unwrap_or_default()
    }

    /// Adds this key's signature, replacing an earlier one by the same key.
    pub fn sign(&mut self, key: &SigningKey) {
        let keyid = key.key_id().to_string();
        let sig = key.sign(&pae(&self.payload_type, &self.payload)).to_vec();
        self.signatures.retain(|s| s.keyid != keyid);
        self.signatures.push(EnvelopeSignature { keyid, sig });
    }

    /// As [`Envelope::sign`], with a key that may be held elsewhere (a
    /// token), which may fail to sign.
    pub fn try_sign(&mut self, signer: &dyn Signer) -> Result<(), SignError> {
        let keyid = signer.key_id().to_string();
        let sig = signer.try_sign(&pae(&self.payload_type, &self.payload))?.to_vec();
        self.signatures.retain(|s| s.keyid != keyid);
        self.signatures.push(EnvelopeSignature { keyid, sig });
        Ok(())
    }

    /// The payload type as written.
    pub fn payload_type(&self) -> &str {
        &self.payload_type
    }

    /// The payload bytes, unverified.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The signatures as written.
    pub fn signatures(&self) -> &[EnvelopeSignature] {
        &self.signatures
    }

    /// The key id the first signature names, unverified: who claims to have
    /// signed what one person or device signs (the fold then checks it).
    pub fn first_signer(&self) -> Option<crate::keys::KeyId> {
        self.signatures.first().and_then(|s| crate::keys::KeyId::from_hex(&s.keyid))
    }

    /// The distinct keys of `keys` with a valid signature over this envelope.
    /// Unknown key ids and bad signatures are ignored; a key that signed
    /// twice is counted once.
    pub fn valid_signers(&self, keys: &KeySet) -> BTreeSet<KeyId> {
        let message = pae(&self.payload_type, &self.payload);
        let mut valid = BTreeSet::new();
        for s in &self.signatures {
            let Some(id) = KeyId::from_hex(&s.keyid) else { continue };
            if valid.contains(&id) {
                continue;
            }
            if let Some(key) = keys.get(&id)
                && key.verify(&message, &s.sig).is_ok()
            {
                valid.insert(id);
            }
        }
        valid
    }

    fn require(&self, keys: &KeySet) -> Result<BTreeSet<KeyId>, EnvelopeError> {
        let valid = self.valid_signers(keys);
        let count = u32::try_from(valid.len()).unwrap_or(u32::MAX);
        if count < keys.threshold() {
            return Err(EnvelopeError::ThresholdNotMet { valid: count, threshold: keys.threshold() });
        }
        Ok(valid)
    }
}

/// A payload whose envelope met a threshold of trusted keys, parsed and
/// validated after the check. Only this module constructs it.
#[derive(Debug, Clone)]
pub struct Verified<T> {
    value: T,
    envelope: Envelope,
    signers: BTreeSet<KeyId>,
}

impl<T> Verified<T> {
    /// The verified, parsed payload.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The exact payload bytes the signatures cover.
    pub fn payload(&self) -> &[u8] {
        &self.envelope.payload
    }

    /// SHA-256 of the payload bytes (a release's digest, an attestation's).
    pub fn payload_digest(&self) -> Sha256Digest {
        Sha256Digest::of(&self.envelope.payload)
    }

    /// The distinct keys whose signatures verified.
    pub fn signers(&self) -> &BTreeSet<KeyId> {
        &self.signers
    }

    /// Checks that the same envelope also meets the threshold of a second key
    /// set (TUF §5.3.4: a new root needs its predecessor's keys and its own).
    pub fn also_signed_by(&self, keys: &KeySet) -> Result<BTreeSet<KeyId>, EnvelopeError> {
        self.envelope.require(keys)
    }

    /// The envelope as re-encoded by this crate. Callers that keep envelopes
    /// should keep the bytes they received instead.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }
}

impl<T> std::ops::Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// Verifies `bytes` as a DSSE envelope of `T`'s payload type signed by a
/// threshold of `keys`, then parses and validates the payload.
pub fn verify<T: Payload>(bytes: &[u8], keys: &KeySet) -> Result<Verified<T>, EnvelopeError> {
    let envelope = Envelope::parse_for::<T>(bytes)?;
    verify_parsed(envelope, keys)
}

/// As [`verify`], for an envelope already parsed: `T`'s envelope size (of
/// the bytes it was parsed from) and signature count are checked here too,
/// before any signature is.
pub fn verify_parsed<T: Payload>(envelope: Envelope, keys: &KeySet) -> Result<Verified<T>, EnvelopeError> {
    if envelope.payload_type != T::PAYLOAD_TYPE {
        return Err(EnvelopeError::WrongPayloadType {
            expected: T::PAYLOAD_TYPE,
            found: envelope.payload_type.chars().take(128).collect(),
        });
    }
    if envelope.received_len > T::MAX_ENVELOPE_BYTES {
        return Err(EnvelopeError::TooLarge { size: envelope.received_len, limit: T::MAX_ENVELOPE_BYTES });
    }
    if envelope.signatures.len() > T::MAX_SIGNATURES {
        return Err(EnvelopeError::TooManySignatures { count: envelope.signatures.len(), limit: T::MAX_SIGNATURES });
    }
    let signers = envelope.require(keys)?;
    let value = T::parse(&envelope.payload)?;
    Ok(Verified { value, envelope, signers })
}

/// Builds an envelope of `payload` signed by each of `keys`, as bytes.
pub fn sign<T: Payload>(payload: &T, keys: &[&SigningKey]) -> Vec<u8> {
    let mut envelope = Envelope::new(T::PAYLOAD_TYPE, payload.to_payload_bytes());
    for key in keys {
        envelope.sign(key);
    }
    envelope.to_bytes()
}

/// As [`sign`], with keys that may be held elsewhere (a token): the
/// envelope bytes, or why a key did not sign.
pub fn try_sign<T: Payload>(payload: &T, signers: &[&dyn Signer]) -> Result<Vec<u8>, SignError> {
    let mut envelope = Envelope::new(T::PAYLOAD_TYPE, payload.to_payload_bytes());
    for signer in signers {
        envelope.try_sign(*signer)?;
    }
    Ok(envelope.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // core/tests/vectors/README.md, from the DSSE protocol description.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }
}
