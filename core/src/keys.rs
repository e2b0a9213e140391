//! Ed25519 keys, key ids and key sets with thresholds.
//!
//! A key id is the lowercase hex SHA-256 of the 32-byte public key (`docs/formats.md`
//! §1). Signatures are checked with `verify_strict`, which
//! refuses small-order keys and non-canonical signatures that the lenient
//! `verify` accepts. Private keys are created from a 32-byte seed the caller
//! supplies (the core has no source of randomness) and never print.

use std::collections::BTreeMap;
use std::fmt;

use ed25519_dalek::{Signer as _, Verifier as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// Why a key or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The bytes are not a 32-byte Ed25519 public key.
    #[error("not a 32-byte Ed25519 public key")]
    Malformed,
    /// The key is a small-order ("weak") point: any message verifies under it.
    #[error("weak Ed25519 public key (small order)")]
    Weak,
    /// The signature is not 64 bytes.
    #[error("not a 64-byte Ed25519 signature")]
    MalformedSignature,
    /// The signature does not verify (strictly) over the message.
    #[error("signature does not verify")]
    BadSignature,
    /// A key set's threshold is 0 or larger than its number of keys.
    #[error("threshold {threshold} is impossible with {keys} distinct keys")]
    BadThreshold {
        /// The threshold asked for.
        threshold: u32,
        /// The number of distinct keys.
        keys: usize,
    },
}

/// The lowercase hex SHA-256 of a 32-byte Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId([u8; 32]);

impl KeyId {
    /// The key id of these public-key bytes.
    pub fn of(public: &[u8; 32]) -> Self {
        KeyId(Sha256::digest(public).into())
    }

    /// Parses a 64-character lowercase hex key id.
    pub fn from_hex(s: &str) -> Option<Self> {
        crate::digest::decode_lower_hex(s).map(KeyId)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        KeyId::from_hex(&s).ok_or_else(|| serde::de::Error::custom("key id must be 64 lowercase hex digits"))
    }
}

/// An Ed25519 public key that is not of small order.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    /// Parses 32 bytes, refusing malformed and weak (small-order) keys.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Malformed)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&arr).map_err(|_| KeyError::Malformed)?;
        if key.is_weak() {
            return Err(KeyError::Weak);
        }
        Ok(PublicKey(key))
    }

    /// Parses 64 lowercase hex digits.
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| KeyError::Malformed)?;
        Self::from_bytes(&out)
    }

    /// The 32 bytes of the key.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The key as 64 lowercase hex digits (what [`PublicKey::from_hex`] reads).
    pub fn to_hex(&self) -> String {
        hex::encode(self.to_bytes())
    }

    /// The key id (hex SHA-256 of the 32 bytes).
    pub fn key_id(&self) -> KeyId {
        KeyId::of(&self.0.to_bytes())
    }

    /// Verifies a signature over `message` with `verify_strict`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), KeyError> {
        let sig = ed25519_dalek::Signature::from_slice(signature).map_err(|_| KeyError::MalformedSignature)?;
        self.0.verify_strict(message, &sig).map_err(|_| KeyError::BadSignature)
    }

    /// The lenient check, kept only so tests can show that `verify` refuses
    /// what it accepts.
    #[doc(hidden)]
    pub fn verify_lenient_for_tests(&self, message: &[u8], signature: &[u8]) -> bool {
        ed25519_dalek::Signature::from_slice(signature).map(|sig| self.0.verify(message, &sig).is_ok()).unwrap_or(false)
    }

    /// Builds a key without the small-order check. Only for attack tests
    /// that need to present a weak key to the verification path.
    #[doc(hidden)]
    pub fn from_bytes_unchecked_for_tests(bytes: &[u8; 32]) -> Option<Self> {
        ed25519_dalek::VerifyingKey::from_bytes(bytes).ok().map(PublicKey)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", hex::encode(self.0.to_bytes()))
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0.to_bytes()))
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PublicKey::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// An Ed25519 private key. Its `Debug` never prints the secret.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl SigningKey {
    /// The key for a 32-byte seed. The caller draws the seed from the
    /// operating system's random source; tests use fixed seeds.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        SigningKey(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// The seed, for the caller to write to a key file it protects.
    pub fn to_seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// Parses a key file's text: the seed as 64 hex digits (surrounding
    /// white space allowed). Reading the file is the caller's business.
    pub fn from_seed_hex(text: &str) -> Result<Self, KeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), seed.as_mut_slice()).map_err(|_| KeyError::Malformed)?;
        Ok(SigningKey::from_seed(&seed))
    }

    /// The key file's text: the seed as 64 hex digits and a newline.
    pub fn to_seed_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{}\n", hex::encode(self.to_seed().as_slice())))
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The key id of the public half.
    pub fn key_id(&self) -> KeyId {
        self.public().key_id()
    }

    /// Signs `message`, returning the 64-byte signature.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({}, secret redacted)", self.key_id())
    }
}

/// Why a [`Signer`] did not sign: a key held elsewhere (a PKCS#11 token)
/// that could not be reached, logged into or asked. In words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the signing key could not sign: {0}")]
pub struct SignError(pub String);

/// What signs with an Ed25519 key: a [`SigningKey`] in memory, or a key
/// held elsewhere (a hardware token) that signs on request and never hands
/// out its private half. The core signs only through this trait where a
/// key may be held elsewhere (the online keys, release and root signing).
pub trait Signer: Send + Sync + fmt::Debug {
    /// The public half.
    fn public(&self) -> PublicKey;

    /// Signs `message` (pure Ed25519), returning the 64-byte signature.
    fn try_sign(&self, message: &[u8]) -> Result<[u8; 64], SignError>;

    /// The key id of the public half.
    fn key_id(&self) -> KeyId {
        self.public().key_id()
    }
}

impl Signer for SigningKey {
    fn public(&self) -> PublicKey {
        SigningKey::public(self)
    }

    fn try_sign(&self, message: &[u8]) -> Result<[u8; 64], SignError> {
        Ok(self.sign(message))
    }
}

/// A set of public keys with the number of distinct valid signatures needed.
///
/// Used for a role of the root (`release` 2 of 3, say) and, with threshold
/// 1, for a single registered key (a customer's, a device's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySet {
    keys: BTreeMap<KeyId, PublicKey>,
    threshold: u32,
}

impl KeySet {
    /// A key set; duplicate keys collapse, and the threshold must be between
    /// 1 and the number of distinct keys.
    pub fn new(keys: impl IntoIterator<Item = PublicKey>, threshold: u32) -> Result<Self, KeyError> {
        let keys: BTreeMap<KeyId, PublicKey> = keys.into_iter().map(|k| (k.key_id(), k)).collect();
        if threshold == 0 || threshold as usize > keys.len() {
            return Err(KeyError::BadThreshold { threshold, keys: keys.len() });
        }
        Ok(KeySet { keys, threshold })
    }

    /// A key set of one key, threshold 1.
    pub fn single(key: PublicKey) -> Self {
        KeySet { keys: BTreeMap::from([(key.key_id(), key)]), threshold: 1 }
    }

    /// The number of distinct valid signatures required.
    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    /// The key with this id, if it is in the set.
    pub fn get(&self, id: &KeyId) -> Option<&PublicKey> {
        self.keys.get(id)
    }

    /// Whether this key id is in the set.
    pub fn contains(&self, id: &KeyId) -> bool {
        self.keys.contains_key(id)
    }

    /// The keys, ordered by key id.
    pub fn keys(&self) -> impl Iterator<Item = (&KeyId, &PublicKey)> {
        self.keys.iter()
    }

    /// The number of distinct keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no keys (never true for a constructed set).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn private_key_debug_is_redacted() {
        let key = SigningKey::from_seed(&[7; 32]);
        let shown = format!("{key:?}");
        assert!(shown.contains("redacted"));
        assert!(!shown.contains(&hex::encode([7u8; 32])));
        assert!(!shown.contains(&hex::encode(key.to_seed().as_slice())));
    }

    #[test]
    fn key_id_is_hex_sha256_of_public_key() {
        // From core/tests/vectors/c2sp-dsse.json (PeterNeumann test key).
        let public = PublicKey::from_hex("1a5cd907143c384c41e830c5bce12aa8817ec5649aaabf2c31388b35b2d744d6").unwrap();
        assert_eq!(public.key_id().to_string(), "c7a9d541f116ae828b693ee8c89482bbe3ec786faa1df159677bd65150394f0f");
    }

    #[test]
    fn impossible_thresholds_are_refused() {
        let k = SigningKey::from_seed(&[1; 32]).public();
        assert_eq!(KeySet::new([k], 0), Err(KeyError::BadThreshold { threshold: 0, keys: 1 }));
        assert_eq!(KeySet::new([k, k], 2), Err(KeyError::BadThreshold { threshold: 2, keys: 1 }));
    }

    #[test]
    fn uppercase_key_ids_are_refused() {
        let id = SigningKey::from_seed(&[1; 32]).key_id().to_string();
        assert!(KeyId::from_hex(&id).is_some());
        assert!(KeyId::from_hex(&id.to_uppercase()).is_none());
    }
}
