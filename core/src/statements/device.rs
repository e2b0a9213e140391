//! What a deployment's agent signs: its check-ins and its install reports.
//! Both carry the last checkpoint the agent holds, so auditors can check
//! that every agent saw one consistent history (`docs/formats.md` §8 and §11).
//!
//! Both are small and signed by the one device key, and a logged decision
//! carries its check-in's exact bytes for good: so their payloads, their
//! envelopes and every list and free string in them are bounded far below
//! the general statement limits, or a device could pad each logged entry to
//! hundreds of kilobytes (issue 16, item 3, measured at 4-8 MB a device an
//! hour before these limits).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Payload, SchemaV1, StatementError, check_id, fixed_tag, invalid};
use crate::digest::{Sha256Digest, Timestamp};

/// The most software digests a check-in reports (and a release manifest
/// expects): an installation is named by a few files (the agent reports one,
/// its artifact), not by every file it holds.
pub const MAX_SOFTWARE_DIGESTS: usize = 16;
/// The longest path of a software digest, in bytes.
pub const MAX_SOFTWARE_PATH_BYTES: usize = 96;
/// The longest pre-release and build labels of a version a device names,
/// together, in bytes (semver puts no bound on them).
pub const MAX_VERSION_LABEL_BYTES: usize = 64;
/// The largest check-in payload: its fixed fields (about 800 bytes at their
/// longest) and [`MAX_SOFTWARE_DIGESTS`] digests of paths of
/// [`MAX_SOFTWARE_PATH_BYTES`] (about 2.7 KiB) fit with room.
pub const MAX_CHECKIN_BYTES: usize = 4 * 1024;
/// The largest install report payload: fixed fields only (about 700 bytes at
/// their longest).
pub const MAX_REPORT_BYTES: usize = 1024;
/// The largest check-in envelope: the payload in base64 and one signature.
pub const MAX_CHECKIN_ENVELOPE_BYTES: usize = crate::envelope::max_envelope_bytes(MAX_CHECKIN_BYTES, 1);
/// The largest install report envelope: the payload in base64 and one
/// signature.
pub const MAX_REPORT_ENVELOPE_BYTES: usize = crate::envelope::max_envelope_bytes(MAX_REPORT_BYTES, 1);

fixed_tag!(
    /// `_type` of a check-in.
    CheckInTag = str "checkin"
);
fixed_tag!(
    /// `_type` of an install report.
    ReportTag = str "report"
);

/// A checkpoint named by its size and root hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointRef {
    /// Tree size.
    pub size: u64,
    /// Root hash (hex).
    pub root_hash: Sha256Digest,
}

/// Payload of `application/vnd.covenant.checkin.v1+json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckIn {
    /// Always `"checkin"`.
    #[serde(rename = "_type")]
    pub type_tag: CheckInTag,
    /// Always 1.
    pub schema: SchemaV1,
    /// The deployment id.
    pub deployment: String,
    /// The product line.
    pub product: String,
    /// The version installed now.
    pub installed_version: semver::Version,
    /// Its capability baseline.
    pub installed_baseline: semver::Version,
    /// Digests of the installed software, by path.
    #[serde(default)]
    pub software_digests: BTreeMap<String, Sha256Digest>,
    /// Digest of the running configuration.
    pub configuration_digest: Sha256Digest,
    /// The last checkpoint the agent holds, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<CheckpointRef>,
    /// 32 fresh random bytes, hex; the freshness answer must echo them.
    pub nonce: Sha256Digest,
    /// The agent's notion of now.
    pub time: Timestamp,
}

impl Payload for CheckIn {
    const PAYLOAD_TYPE: &'static str = "application/vnd.covenant.checkin.v1+json";
    const MAX_BYTES: usize = MAX_CHECKIN_BYTES;
    // Signed by the deployment's one key: a second signature is only padding.
    const MAX_SIGNATURES: usize = 1;
    const MAX_ENVELOPE_BYTES: usize = MAX_CHECKIN_ENVELOPE_BYTES;

    fn validate(&self) -> Result<(), StatementError> {
        check_id("deployment", &self.deployment)?;
        check_id("product", &self.product)?;
        check_version("installed_version", &self.installed_version)?;
        check_version("installed_baseline", &self.installed_baseline)?;
        if self.installed_baseline > self.installed_version {
            return Err(invalid("installed_baseline", "must not be newer than the installed version"));
        }
        check_software_digests("software_digests", &self.software_digests)
    }
}

/// Refuses a version whose pre-release and build labels together are longer
/// than [`MAX_VERSION_LABEL_BYTES`].
fn check_version(field: &'static str, v: &semver::Version) -> Result<(), StatementError> {
    if v.pre.as_str().len() + v.build.as_str().len() > MAX_VERSION_LABEL_BYTES {
        return Err(invalid(
            field,
            "pre-release and build labels are at most 64 bytes together (MAX_VERSION_LABEL_BYTES)",
        ));
    }
    Ok(())
}

/// Refuses a list of software digests longer than [`MAX_SOFTWARE_DIGESTS`],
/// or a path that is empty, longer than [`MAX_SOFTWARE_PATH_BYTES`] or holds
/// a control character. A release manifest's expected digests follow the
/// same rule, so that every manifest can be matched by a check-in.
pub(crate) fn check_software_digests(
    field: &'static str,
    digests: &BTreeMap<String, Sha256Digest>,
) -> Result<(), StatementError> {
    if digests.len() > MAX_SOFTWARE_DIGESTS {
        return Err(invalid(field, "at most 16 entries (MAX_SOFTWARE_DIGESTS)"));
    }
    for path in digests.keys() {
        if path.is_empty() || path.len() > MAX_SOFTWARE_PATH_BYTES || path.chars().any(char::is_control) {
            return Err(invalid(
                field,
                "each path is 1 to 96 bytes without control characters (MAX_SOFTWARE_PATH_BYTES)",
            ));
        }
    }
    Ok(())
}

/// How an installation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstallOutcome {
    /// The new version runs and passed its health check.
    Installed,
    /// It could not be installed; the old version runs.
    Failed,
    /// It was installed, failed its health check and was switched back.
    RolledBack,
}

/// Payload of `application/vnd.covenant.report.v1+json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallReport {
    /// Always `"report"`.
    #[serde(rename = "_type")]
    pub type_tag: ReportTag,
    /// Always 1.
    pub schema: SchemaV1,
    /// The deployment id.
    pub deployment: String,
    /// Ledger index of the grant acted on.
    pub grant_index: u64,
    /// The outcome.
    pub outcome: InstallOutcome,
    /// The version before.
    pub from_version: semver::Version,
    /// The version the grant named.
    pub to_version: semver::Version,
    /// The last checkpoint the agent holds.
    pub last_checkpoint: CheckpointRef,
    /// The agent's notion of now.
    pub time: Timestamp,
}

impl Payload for InstallReport {
    const PAYLOAD_TYPE: &'static str = "application/vnd.covenant.report.v1+json";
    const MAX_BYTES: usize = MAX_REPORT_BYTES;
    // Signed by the deployment's one key.
    const MAX_SIGNATURES: usize = 1;
    const MAX_ENVELOPE_BYTES: usize = MAX_REPORT_ENVELOPE_BYTES;

    fn validate(&self) -> Result<(), StatementError> {
        check_id("deployment", &self.deployment)?;
        check_version("from_version", &self.from_version)?;
        check_version("to_version", &self.to_version)?;
        if self.to_version <= self.from_version {
            return Err(invalid("to_version", "must be newer than from_version"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::envelope::{self, EnvelopeError};
    use crate::keys::{KeySet, SigningKey};

    fn key() -> SigningKey {
        SigningKey::from_seed(&[7; 32])
    }

    fn keys() -> KeySet {
        KeySet::new(vec![key().public()], 1).unwrap()
    }

    fn version(labels: usize) -> semver::Version {
        let mut v: semver::Version = "18446744073709551615.18446744073709551615.18446744073709551615".parse().unwrap();
        if labels > 0 {
            v.pre = semver::Prerelease::new(&"a".repeat(labels)).unwrap();
        }
        v
    }

    /// A check-in with every field at its longest.
    fn largest_checkin() -> CheckIn {
        CheckIn {
            type_tag: CheckInTag,
            schema: SchemaV1,
            deployment: "d".repeat(64),
            product: "p".repeat(64),
            installed_version: version(MAX_VERSION_LABEL_BYTES),
            installed_baseline: version(MAX_VERSION_LABEL_BYTES),
            software_digests: (0..MAX_SOFTWARE_DIGESTS)
                .map(|i| (format!("{i:0>96}"), Sha256Digest::of(&[i as u8])))
                .collect(),
            configuration_digest: Sha256Digest::of(b"c"),
            last_checkpoint: Some(CheckpointRef { size: u64::MAX, root_hash: Sha256Digest::of(b"r") }),
            nonce: Sha256Digest::of(b"n"),
            time: Timestamp::from_unix(1_796_374_800),
        }
    }

    fn largest_report() -> InstallReport {
        InstallReport {
            type_tag: ReportTag,
            schema: SchemaV1,
            deployment: "d".repeat(64),
            grant_index: u64::MAX,
            outcome: InstallOutcome::RolledBack,
            from_version: "1.0.0".parse().unwrap(),
            to_version: version(MAX_VERSION_LABEL_BYTES),
            last_checkpoint: CheckpointRef { size: u64::MAX, root_hash: Sha256Digest::of(b"r") },
            time: Timestamp::from_unix(1_796_374_800),
        }
    }

    fn invalid_field(e: StatementError) -> &'static str {
        match e {
            StatementError::Invalid { field, .. } => field,
            other => panic!("expected a rule violation, got {other:?}"),
        }
    }

    #[test]
    fn the_largest_honest_check_in_and_report_fit_their_limits() {
        let c = largest_checkin();
        let payload = c.to_payload_bytes();
        assert!(payload.len() <= MAX_CHECKIN_BYTES, "{} bytes", payload.len());
        let signed = envelope::sign(&c, &[&key()]);
        assert!(signed.len() <= MAX_CHECKIN_ENVELOPE_BYTES, "{} bytes", signed.len());
        envelope::verify::<CheckIn>(&signed, &keys()).unwrap();
        let r = largest_report();
        assert!(r.to_payload_bytes().len() <= MAX_REPORT_BYTES, "{} bytes", r.to_payload_bytes().len());
        let signed = envelope::sign(&r, &[&key()]);
        assert!(signed.len() <= MAX_REPORT_ENVELOPE_BYTES, "{} bytes", signed.len());
        envelope::verify::<InstallReport>(&signed, &keys()).unwrap();
        // The limits are a few KiB: a logged decision carries its check-in.
        const { assert!(MAX_CHECKIN_ENVELOPE_BYTES <= 6 * 1024 && MAX_REPORT_ENVELOPE_BYTES <= 2 * 1024) };
    }

    #[test]
    fn a_check_in_padded_with_software_digests_is_refused() {
        let mut c = largest_checkin();
        c.software_digests.insert("one-more".into(), Sha256Digest::of(b"x"));
        assert_eq!(invalid_field(c.validate().unwrap_err()), "software_digests");
        // Sent as the attack did (thousands of entries), the payload's size
        // refuses it before any JSON is read.
        c.software_digests = (0..1000).map(|i| (format!("/{i}"), Sha256Digest::of(b"x"))).collect();
        let err = CheckIn::parse(&c.to_payload_bytes()).unwrap_err();
        assert!(matches!(err, StatementError::TooLarge { limit: MAX_CHECKIN_BYTES, .. }), "{err:?}");
    }

    #[test]
    fn a_software_digest_path_that_is_long_empty_or_has_control_characters_is_refused() {
        for path in ["a".repeat(MAX_SOFTWARE_PATH_BYTES + 1), String::new(), "/opt/\u{1b}[2J".into()] {
            let mut c = largest_checkin();
            c.software_digests = BTreeMap::from([(path, Sha256Digest::of(b"x"))]);
            assert_eq!(invalid_field(c.validate().unwrap_err()), "software_digests");
        }
    }

    #[test]
    fn a_version_with_long_labels_is_refused() {
        let mut c = largest_checkin();
        c.installed_version = version(MAX_VERSION_LABEL_BYTES + 1);
        assert_eq!(invalid_field(c.validate().unwrap_err()), "installed_version");
        let mut r = largest_report();
        r.to_version = version(MAX_VERSION_LABEL_BYTES + 1);
        assert_eq!(invalid_field(r.validate().unwrap_err()), "to_version");
    }

    #[test]
    fn a_check_in_or_report_with_a_second_signature_is_refused_before_any_is_checked() {
        let other = SigningKey::from_seed(&[8; 32]);
        let signed = envelope::sign(&largest_checkin(), &[&key(), &other]);
        let err = envelope::verify::<CheckIn>(&signed, &keys()).unwrap_err();
        assert_eq!(err, EnvelopeError::TooManySignatures { count: 2, limit: 1 });
        // Parsed first (as the fold does), then verified: the same.
        let parsed = envelope::Envelope::parse(&signed).unwrap();
        let err = envelope::verify_parsed::<CheckIn>(parsed, &keys()).unwrap_err();
        assert_eq!(err, EnvelopeError::TooManySignatures { count: 2, limit: 1 });
        let signed = envelope::sign(&largest_report(), &[&key(), &other]);
        let err = envelope::verify::<InstallReport>(&signed, &keys()).unwrap_err();
        assert_eq!(err, EnvelopeError::TooManySignatures { count: 2, limit: 1 });
    }

    #[test]
    fn a_check_in_or_report_envelope_padded_past_its_limit_is_refused() {
        for (signed, limit) in [
            (envelope::sign(&largest_checkin(), &[&key()]), MAX_CHECKIN_ENVELOPE_BYTES),
            (envelope::sign(&largest_report(), &[&key()]), MAX_REPORT_ENVELOPE_BYTES),
        ] {
            // JSON whitespace is the one padding that keeps the envelope's
            // meaning (and its signature) intact.
            let mut padded = signed.clone();
            padded.splice(1..1, std::iter::repeat_n(b' ', limit + 1 - signed.len()));
            assert_eq!(envelope::Envelope::parse(&padded).unwrap(), envelope::Envelope::parse(&signed).unwrap());
            let size = padded.len();
            let expected = EnvelopeError::TooLarge { size, limit };
            if limit == MAX_CHECKIN_ENVELOPE_BYTES {
                assert_eq!(envelope::verify::<CheckIn>(&padded, &keys()).unwrap_err(), expected);
                let parsed = envelope::Envelope::parse(&padded).unwrap();
                assert_eq!(envelope::verify_parsed::<CheckIn>(parsed, &keys()).unwrap_err(), expected);
            } else {
                assert_eq!(envelope::verify::<InstallReport>(&padded, &keys()).unwrap_err(), expected);
            }
        }
    }

    #[test]
    fn a_report_padded_past_its_payload_limit_is_refused() {
        let mut payload = largest_report().to_payload_bytes();
        payload.splice(1..1, std::iter::repeat_n(b' ', MAX_REPORT_BYTES));
        let err = InstallReport::parse(&payload).unwrap_err();
        assert!(matches!(err, StatementError::TooLarge { limit: MAX_REPORT_BYTES, .. }), "{err:?}");
    }
}
