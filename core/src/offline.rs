//! The offline bundle (docs/offline.md): what a field engineer carries into
//! an air-gapped site. One file, read front to back: a fixed prefix (magic,
//! version, the head's length), the head (the deployment, the nonce of the
//! request it answers, its expiry, the root chain, the server's check-in
//! answer bytes, the artifact's length), then the artifact's bytes and
//! nothing after them.
//!
//! Pure: [`Prefix::parse`] and [`Head::parse`] read byte slices and
//! [`Head::encode`] writes one; the caller does the I/O, reading
//! [`PREFIX_BYTES`], then the head's length (at most [`MAX_HEAD_BYTES`]),
//! then streaming the artifact. Every length is bounded before anything is
//! allocated, and garbage is refused with a [`BundleError`], never a panic.

use crate::digest::{Sha256Digest, Timestamp};

/// The file's first bytes.
pub const MAGIC: [u8; 8] = *b"CVNTBNDL";
/// The format version this code writes and reads.
pub const VERSION: u16 = 1;
/// Magic, version and the head's length.
pub const PREFIX_BYTES: usize = 14;
/// The longest deployment id a head carries.
pub const MAX_DEPLOYMENT_BYTES: usize = 128;
/// The most root versions a head carries.
pub const MAX_ROOTS: usize = 32;
/// The longest root envelope a head carries.
pub const MAX_ROOT_BYTES: usize = 64 * 1024;
/// The longest check-in answer a head carries (a release manifest envelope
/// of at most 1 MiB, a decision entry, a proof and a freshness object).
pub const MAX_ANSWER_BYTES: usize = 2 << 20;
/// The longest head: every part at its limit, with its length fields.
pub const MAX_HEAD_BYTES: usize =
    2 + MAX_DEPLOYMENT_BYTES + 32 + 8 + 2 + MAX_ROOTS * (4 + MAX_ROOT_BYTES) + 4 + MAX_ANSWER_BYTES + 8;

/// Why bytes are not a bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The bytes end before a part they declare.
    #[error("the bundle is truncated: {0}")]
    Truncated(&'static str),
    /// The file does not start with the bundle magic.
    #[error("not a Covenant offline bundle (no CVNTBNDL magic)")]
    Magic,
    /// Another format version.
    #[error("bundle format version {0}; this agent reads version {VERSION}")]
    Version(u16),
    /// A part is longer than its limit.
    #[error("the bundle's {what} is {len} bytes or items, over the limit of {limit}")]
    TooLarge {
        /// Which part.
        what: &'static str,
        /// Its declared length.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// The deployment id is empty or not UTF-8.
    #[error("the bundle's deployment id is empty or not UTF-8")]
    Deployment,
    /// Bytes after the last part of the head.
    #[error("{0} bytes after the bundle's head")]
    Trailing(usize),
    /// The head has expired.
    #[error("the bundle expired at {expires}; it is now {now}: ask for a new one")]
    Expired {
        /// Its expiry.
        expires: Timestamp,
        /// The device's now.
        now: Timestamp,
    },
}

/// The fixed start of a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    /// The head's length in bytes (at most [`MAX_HEAD_BYTES`]).
    pub head_len: usize,
}

impl Prefix {
    /// Reads the first [`PREFIX_BYTES`] of a bundle.
    pub fn parse(bytes: &[u8]) -> Result<Prefix, BundleError> {
        let mut r = Reader(bytes);
        let magic = r.take(8, "magic")?;
        if magic != MAGIC {
            return Err(BundleError::Magic);
        }
        let version = r.u16("version")?;
        if version != VERSION {
            return Err(BundleError::Version(version));
        }
        let len = r.u32("head length")?;
        bounded("head", u64::from(len), MAX_HEAD_BYTES)?;
        r.end()?;
        Ok(Prefix { head_len: len as usize })
    }
}

/// A bundle's head: everything but the artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The deployment whose request it answers.
    pub deployment: String,
    /// The nonce of that request.
    pub nonce: Sha256Digest,
    /// After this the bundle is refused (never later than the grant's expiry).
    pub expires: Timestamp,
    /// The root chain the server serves (root envelopes, oldest first).
    pub root_chain: Vec<Vec<u8>>,
    /// The server's check-in answer: the `CheckInResponse` message exactly as
    /// the CheckIn call returns it, protobuf-encoded.
    pub answer: Vec<u8>,
    /// The artifact's length in bytes (0: no artifact follows).
    pub artifact_len: u64,
}

impl Head {
    /// Parses exactly the head's bytes (the [`Prefix::head_len`] bytes after
    /// the prefix).
    pub fn parse(bytes: &[u8]) -> Result<Head, BundleError> {
        bounded("head", bytes.len() as u64, MAX_HEAD_BYTES)?;
        let mut r = Reader(bytes);
        let dlen = r.u16("deployment length")? as usize;
        bounded("deployment id", dlen as u64, MAX_DEPLOYMENT_BYTES)?;
        let deployment = std::str::from_utf8(r.take(dlen, "deployment id")?).map_err(|_| BundleError::Deployment)?;
        if deployment.is_empty() {
            return Err(BundleError::Deployment);
        }
        let nonce = Sha256Digest(r.take(32, "nonce")?.try_into().map_err(|_| BundleError::Truncated("nonce"))?);
        let expires = Timestamp::from_unix(r.i64("expiry")?);
        let roots = r.u16("root count")? as usize;
        bounded("root chain", roots as u64, MAX_ROOTS)?;
        let mut root_chain = Vec::with_capacity(roots);
        for _ in 0..roots {
            let len = r.u32("root length")?;
            bounded("root", u64::from(len), MAX_ROOT_BYTES)?;
            root_chain.push(r.take(len as usize, "root")?.to_vec());
        }
        let alen = r.u32("answer length")?;
        bounded("answer", u64::from(alen), MAX_ANSWER_BYTES)?;
        let answer = r.take(alen as usize, "answer")?.to_vec();
        let artifact_len = r.u64("artifact length")?;
        r.end()?;
        Ok(Head { deployment: deployment.to_owned(), nonce, expires, root_chain, answer, artifact_len })
    }

    /// The prefix and head bytes of a bundle with this head (the artifact's
    /// `artifact_len` bytes follow them). Refuses a head over the limits.
    pub fn encode(&self) -> Result<Vec<u8>, BundleError> {
        let d = self.deployment.as_bytes();
        bounded("deployment id", d.len() as u64, MAX_DEPLOYMENT_BYTES)?;
        if d.is_empty() {
            return Err(BundleError::Deployment);
        }
        bounded("root chain", self.root_chain.len() as u64, MAX_ROOTS)?;
        for root in &self.root_chain {
            bounded("root", root.len() as u64, MAX_ROOT_BYTES)?;
        }
        bounded("answer", self.answer.len() as u64, MAX_ANSWER_BYTES)?;
        let mut head = Vec::new();
        head.extend_from_slice(&(d.len() as u16).to_be_bytes());
        head.extend_from_slice(d);
        head.extend_from_slice(&self.nonce.0);
        head.extend_from_slice(&self.expires.unix().to_be_bytes());
        head.extend_from_slice(&(self.root_chain.len() as u16).to_be_bytes());
        for root in &self.root_chain {
            head.extend_from_slice(&(root.len() as u32).to_be_bytes());
            head.extend_from_slice(root);
        }
        head.extend_from_slice(&(self.answer.len() as u32).to_be_bytes());
        head.extend_from_slice(&self.answer);
        head.extend_from_slice(&self.artifact_len.to_be_bytes());
        let mut out = Vec::with_capacity(PREFIX_BYTES + head.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&(head.len() as u32).to_be_bytes());
        out.extend_from_slice(&head);
        Ok(out)
    }

    /// Refuses a head whose expiry is at or before `now`.
    pub fn check_expiry(&self, now: Timestamp) -> Result<(), BundleError> {
        if self.expires <= now { Err(BundleError::Expired { expires: self.expires, now }) } else { Ok(()) }
    }
}

/// A receipt's first bytes.
pub const RECEIPT_MAGIC: [u8; 8] = *b"CVNTRCPT";
/// The most install reports a receipt carries.
pub const MAX_RECEIPT_REPORTS: usize = 64;
/// The longest verdict text a receipt carries.
pub const MAX_VERDICT_BYTES: usize = 16 * 1024;

/// What the engineer carries back: the device-signed install reports (each
/// exactly as the device signed it) and the device's verdict in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The deployment that wrote it.
    pub deployment: String,
    /// The verdict, as `covenant-agent` printed it (informational: only the
    /// signed reports count).
    pub verdict: String,
    /// Signed install report envelopes.
    pub reports: Vec<Vec<u8>>,
}

impl Receipt {
    /// The receipt's bytes.
    pub fn encode(&self) -> Result<Vec<u8>, BundleError> {
        let d = self.deployment.as_bytes();
        bounded("deployment id", d.len() as u64, MAX_DEPLOYMENT_BYTES)?;
        bounded("verdict", self.verdict.len() as u64, MAX_VERDICT_BYTES)?;
        bounded("report count", self.reports.len() as u64, MAX_RECEIPT_REPORTS)?;
        let limit = crate::statements::MAX_REPORT_ENVELOPE_BYTES;
        let mut out = RECEIPT_MAGIC.to_vec();
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&(d.len() as u16).to_be_bytes());
        out.extend_from_slice(d);
        out.extend_from_slice(&(self.verdict.len() as u32).to_be_bytes());
        out.extend_from_slice(self.verdict.as_bytes());
        out.extend_from_slice(&(self.reports.len() as u16).to_be_bytes());
        for r in &self.reports {
            bounded("report", r.len() as u64, limit)?;
            out.extend_from_slice(&(r.len() as u32).to_be_bytes());
            out.extend_from_slice(r);
        }
        Ok(out)
    }

    /// Parses a receipt's bytes (the whole file; it is small).
    pub fn parse(bytes: &[u8]) -> Result<Receipt, BundleError> {
        let mut r = Reader(bytes);
        if r.take(8, "magic")? != RECEIPT_MAGIC {
            return Err(BundleError::Magic);
        }
        let version = r.u16("version")?;
        if version != VERSION {
            return Err(BundleError::Version(version));
        }
        let dlen = r.u16("deployment length")? as usize;
        bounded("deployment id", dlen as u64, MAX_DEPLOYMENT_BYTES)?;
        let deployment = std::str::from_utf8(r.take(dlen, "deployment id")?).map_err(|_| BundleError::Deployment)?;
        let vlen = r.u32("verdict length")?;
        bounded("verdict", u64::from(vlen), MAX_VERDICT_BYTES)?;
        let verdict =
            std::str::from_utf8(r.take(vlen as usize, "verdict")?).map_err(|_| BundleError::Deployment)?.to_owned();
        let count = r.u16("report count")? as usize;
        bounded("report count", count as u64, MAX_RECEIPT_REPORTS)?;
        let limit = crate::statements::MAX_REPORT_ENVELOPE_BYTES;
        let mut reports = Vec::with_capacity(count);
        for _ in 0..count {
            let len = r.u32("report length")?;
            bounded("report", u64::from(len), limit)?;
            reports.push(r.take(len as usize, "report")?.to_vec());
        }
        r.end()?;
        Ok(Receipt { deployment: deployment.to_owned(), verdict, reports })
    }
}

fn bounded(what: &'static str, len: u64, limit: usize) -> Result<(), BundleError> {
    if len > limit as u64 { Err(BundleError::TooLarge { what, len, limit: limit as u64 }) } else { Ok(()) }
}

/// A cursor over a byte slice that refuses to read past its end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], BundleError> {
        if self.0.len() < n {
            return Err(BundleError::Truncated(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], BundleError> {
        self.take(N, what)?.try_into().map_err(|_| BundleError::Truncated(what))
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, BundleError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, BundleError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, BundleError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, BundleError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    fn end(&self) -> Result<(), BundleError> {
        if self.0.is_empty() { Ok(()) } else { Err(BundleError::Trailing(self.0.len())) }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn head() -> Head {
        Head {
            deployment: "acme-berlin".into(),
            nonce: Sha256Digest([7; 32]),
            expires: Timestamp::from_unix(1_800_000_000),
            root_chain: vec![b"root-1".to_vec(), b"root-2".to_vec()],
            answer: b"answer bytes".to_vec(),
            artifact_len: 12345,
        }
    }

    fn split(bytes: &[u8]) -> Result<Head, BundleError> {
        if bytes.len() < PREFIX_BYTES {
            return Err(BundleError::Truncated("prefix"));
        }
        let p = Prefix::parse(&bytes[..PREFIX_BYTES])?;
        let rest = &bytes[PREFIX_BYTES..];
        if rest.len() < p.head_len {
            return Err(BundleError::Truncated("head"));
        }
        Head::parse(&rest[..p.head_len])
    }

    #[test]
    fn a_head_round_trips() {
        let h = head();
        let bytes = h.encode().unwrap();
        assert_eq!(&bytes[..8], b"CVNTBNDL");
        assert_eq!(split(&bytes).unwrap(), h);
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = head().encode().unwrap();
        for n in 0..bytes.len() {
            assert!(split(&bytes[..n]).is_err(), "{n} bytes accepted");
        }
        // A head cut short inside (its declared length shortened) is refused too.
        let p = Prefix::parse(&bytes[..PREFIX_BYTES]).unwrap();
        for n in 0..p.head_len {
            assert!(Head::parse(&bytes[PREFIX_BYTES..PREFIX_BYTES + n]).is_err());
        }
    }

    #[test]
    fn another_magic_version_or_trailing_bytes_are_refused() {
        let mut bytes = head().encode().unwrap();
        let mut m = bytes.clone();
        m[0] ^= 1;
        assert_eq!(split(&m), Err(BundleError::Magic));
        let mut v = bytes.clone();
        v[9] = 2;
        assert_eq!(split(&v), Err(BundleError::Version(2)));
        bytes.push(0);
        let p = Prefix::parse(&bytes[..PREFIX_BYTES]).unwrap();
        let mut head = bytes[PREFIX_BYTES..PREFIX_BYTES + p.head_len].to_vec();
        head.push(0);
        assert_eq!(Head::parse(&head), Err(BundleError::Trailing(1)));
    }

    #[test]
    fn declared_lengths_over_the_limits_are_refused_before_allocating() {
        let mut p = MAGIC.to_vec();
        p.extend_from_slice(&VERSION.to_be_bytes());
        p.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(Prefix::parse(&p), Err(BundleError::TooLarge { what: "head", .. })));
        let mut h = head();
        h.answer = vec![0; MAX_ANSWER_BYTES + 1];
        assert!(matches!(h.encode(), Err(BundleError::TooLarge { what: "answer", .. })));
        let mut h = head();
        h.deployment = String::new();
        assert_eq!(h.encode(), Err(BundleError::Deployment));
    }

    #[test]
    fn an_expired_head_is_refused() {
        let h = head();
        assert!(h.check_expiry(Timestamp::from_unix(1_799_999_999)).is_ok());
        assert!(matches!(h.check_expiry(h.expires), Err(BundleError::Expired { .. })));
    }

    #[test]
    fn a_receipt_round_trips_and_truncations_are_refused() {
        let r = Receipt { deployment: "d".into(), verdict: "Installed 1.2.0".into(), reports: vec![b"env".to_vec()] };
        let bytes = r.encode().unwrap();
        assert_eq!(Receipt::parse(&bytes).unwrap(), r);
        for n in 0..bytes.len() {
            assert!(Receipt::parse(&bytes[..n]).is_err());
        }
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Prefix::parse(&bytes);
            let _ = Head::parse(&bytes);
            let _ = split(&bytes);
            let _ = Receipt::parse(&bytes);
        }

        #[test]
        fn flipped_bytes_never_panic(i in 0usize..64, b in any::<u8>()) {
            let mut bytes = head().encode().unwrap();
            let i = i % bytes.len();
            bytes[i] = b;
            let _ = split(&bytes);
        }
    }
}
