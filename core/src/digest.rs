//! SHA-256 digests and UTC timestamps as they appear in signed payloads.
//!
//! Both serialize as text a person can read in a payload: digests as 64
//! lowercase hex digits, timestamps as RFC 3339 in UTC (`2026-10-01T00:00:00Z`).
//! The core has no clock: every `now` is a [`Timestamp`] passed in.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// The SHA-256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Sha256Digest(Sha256::digest(bytes).into())
    }

    /// Parses 64 lowercase hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        decode_lower_hex(s).map(Sha256Digest)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{self}")
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor, not `String::deserialize`: ledger headers are parsed by
        // the million on recovery, and this avoids an allocation each.
        struct Hex;
        impl serde::de::Visitor<'_> for Hex {
            type Value = Sha256Digest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 lowercase hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Sha256Digest, E> {
                Sha256Digest::from_hex(s).ok_or_else(|| E::custom("digest must be 64 lowercase hex digits"))
            }
        }
        d.deserialize_str(Hex)
    }
}

/// Decodes exactly 64 lowercase hex digits (uppercase is refused, so every
/// value has one spelling). Hand-written because ledger headers are parsed by
/// the million on recovery and this is several times faster than a generic
/// decoder.
pub fn decode_lower_hex(s: &str) -> Option<[u8; 32]> {
    fn nibble(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        }
    }
    let bytes: &[u8; 64] = s.as_bytes().try_into().ok()?;
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// A point in time, in whole seconds since the Unix epoch, UTC.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The timestamp `secs` seconds after the Unix epoch.
    pub const fn from_unix(secs: i64) -> Self {
        Timestamp(secs)
    }

    /// The timestamp of a system time the caller read (core reads no
    /// clock): whole seconds since the Unix epoch, the epoch for a time
    /// before it, the largest timestamp for one beyond it.
    pub fn since_epoch(at: std::time::SystemTime) -> Self {
        let secs =
            at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        Timestamp(secs)
    }

    /// Seconds since the Unix epoch.
    pub const fn unix(self) -> i64 {
        self.0
    }

    /// Parses RFC 3339 (any offset; kept as the UTC instant).
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
        Some(Timestamp(t.unix_timestamp()))
    }

    /// This instant plus `secs` seconds, saturating.
    pub fn plus_seconds(self, secs: i64) -> Self {
        Timestamp(self.0.saturating_add(secs))
    }

    /// The calendar date, `YYYY-MM-DD`, for messages to people.
    pub fn date(self) -> String {
        let s = self.to_string();
        s.get(..10).unwrap_or(&s).to_owned()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match time::OffsetDateTime::from_unix_timestamp(self.0) {
            Ok(t) => write!(
                f,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            ),
            // Outside the years -9999..=9999: still say something truthful.
            Err(_) => write!(f, "@{}", self.0),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse_rfc3339(&s)
            .ok_or_else(|| serde::de::Error::custom("time must be RFC 3339, e.g. 2026-10-01T00:00:00Z"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn timestamps_round_trip_as_rfc3339_utc() {
        let t = Timestamp::parse_rfc3339("2026-10-01T02:00:00+02:00").unwrap();
        assert_eq!(t.to_string(), "2026-10-01T00:00:00Z");
        assert_eq!(t.date(), "2026-10-01");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_string()), Some(t));
        assert_eq!(Timestamp::parse_rfc3339("2026-10-01"), None);
    }

    #[test]
    fn digests_are_lowercase_hex() {
        let d = Sha256Digest::of(b"");
        assert_eq!(d.to_string(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(Sha256Digest::from_hex(&d.to_string()), Some(d));
        assert_eq!(Sha256Digest::from_hex(&d.to_string().to_uppercase()), None);
    }
}
