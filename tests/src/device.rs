//! What a device signs and reads, built the way the tests and the benchmarks
//! both need it: the current time as a `Timestamp`, a signed check-in, a
//! release manifest, and the decision an answer carries.

use std::path::Path;

use covenant_core::digest::{Sha256Digest, Timestamp};
use covenant_core::envelope::{self, Envelope};
use covenant_core::keys::SigningKey;
use covenant_core::statements::*;
use covenant_proto::v1 as pb;
use covenant_proto::v1::update_service_client::UpdateServiceClient;

use crate::served::Running;

/// The current time, read from the system clock.
pub fn now() -> Timestamp {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    Timestamp::from_unix(secs as i64)
}

/// The signing key of the identity folder `identity`.
pub fn key_of(identity: &Path) -> SigningKey {
    covenant_cli::connect::read_key(&identity.join("signing.key")).unwrap()
}

/// A check-in of product `lim` from `deployment`, with `installed` as both
/// version and baseline, signed by `key`.
pub fn signed_checkin(
    deployment: &str,
    installed: &str,
    configuration: Sha256Digest,
    last: Option<CheckpointRef>,
    nonce: Sha256Digest,
    key: &SigningKey,
) -> Vec<u8> {
    let c = CheckIn {
        type_tag: CheckInTag,
        schema: SchemaV1,
        deployment: deployment.into(),
        product: "lim".into(),
        installed_version: installed.parse().unwrap(),
        installed_baseline: installed.parse().unwrap(),
        software_digests: Default::default(),
        configuration_digest: configuration,
        last_checkpoint: last,
        nonce,
        time: now(),
    };
    envelope::sign(&c, &[key])
}

/// A capability release manifest of product `lim`, its own baseline, for an
/// artifact `name` with `sha256` and `size`, released now.
pub fn manifest(version: &str, name: &str, sha256: Sha256Digest, size: u64) -> ReleaseManifest {
    ReleaseManifest {
        type_tag: ReleaseTag,
        schema: SchemaV1,
        product: "lim".into(),
        version: version.parse().unwrap(),
        class: ReleaseClass::Capability,
        capability_baseline: version.parse().unwrap(),
        artifact: Artifact { name: name.into(), sha256, size },
        expected_installed_digests: Default::default(),
        released_at: now(),
    }
}

/// The benchmarks' device `d`: its deployment id and its signing key.
pub fn numbered_device(d: usize) -> (String, SigningKey) {
    (format!("dep-{d}"), SigningKey::from_seed(Sha256Digest::of(format!("device {d}").as_bytes()).as_bytes()))
}

/// lim-07's check-in from the device folder `device` (the story's
/// configuration), and its nonce.
pub fn checkin_body(
    device: &Path,
    installed: &str,
    last: Option<CheckpointRef>,
    nonce: &str,
) -> (Vec<u8>, Sha256Digest) {
    let nonce = Sha256Digest::of(nonce.as_bytes());
    let body =
        signed_checkin("lim-07", installed, Sha256Digest::of(b"verified configuration"), last, nonce, &key_of(device));
    (body, nonce)
}

/// lim-07 checks in at 1.0.0 as the device folder `device`.
pub async fn check_in(s: &Running, device: &Path, nonce: &str) -> pb::CheckInResponse {
    let (body, _) = checkin_body(device, "1.0.0", None, nonce);
    let mut c = UpdateServiceClient::new(s.conn(device).channel().await.unwrap());
    c.check_in(pb::CheckInRequest { checkin: body }).await.unwrap().into_inner()
}

/// The decision an answer carries (it must carry one).
pub fn decision_of(r: &pb::CheckInResponse) -> Decision {
    let entry = r.decision.as_ref().expect("a decision stands");
    Decision::parse(Envelope::parse(&entry.body).unwrap().payload()).unwrap()
}

/// Whether an answer carries a grant.
pub fn is_grant(r: &pb::CheckInResponse) -> bool {
    r.decision.as_ref().is_some_and(|e| {
        Envelope::parse(&e.body)
            .ok()
            .and_then(|env| Decision::parse(env.payload()).ok())
            .is_some_and(|d| d.verdict == Verdict::Grant)
    })
}

/// A passing on-site field verification of the attestation envelope
/// `attestation` for lim-07 at site XA/s1, signed by the engineer in `engineer`.
pub fn verification(attestation: &[u8], config: Sha256Digest, engineer: &Path) -> Vec<u8> {
    let att = Sha256Digest::of(Envelope::parse(attestation).unwrap().payload());
    let statement = InTotoStatement::new(
        vec![
            Subject { name: format!("{ATTESTATION_SUBJECT_PREFIX}{att}"), digest: SubjectDigest { sha256: att } },
            deployment_subject("lim-07"),
        ],
        FieldVerification {
            attestation: att,
            deployment: "lim-07".into(),
            method: VerificationMethod::OnSite,
            observed_site: Site { country: "XA".into(), site_id: "s1".into() },
            observed_configuration_digest: config,
            result: VerificationResult::Pass,
            findings: String::new(),
            date: now(),
        },
    );
    envelope::sign(&statement, &[&key_of(engineer)])
}
