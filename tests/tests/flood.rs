//! Issue 16, item 3: one device must not be able to grow the ledger. Each
//! flood runs against the real server over mutual TLS on loopback for a
//! bounded number of requests sent as fast as one client can (at most
//! `FLOOD_TIME`), and asserts how many entries and journal bytes it added:
//! the same install report again, check-ins alternating the claimed
//! version, and check-ins alternating what they report (the configuration)
//! so that each one changes the verdict.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use covenant_core::digest::Sha256Digest;
use covenant_core::envelope;
use covenant_core::state::MAX_DECISIONS_PER_PERIOD;
use covenant_core::statements::*;
use covenant_proto::v1 as pb;
use covenant_proto::v1::attestation_service_client::AttestationServiceClient;
use covenant_proto::v1::update_service_client::UpdateServiceClient;

use covenant_tests::*;

/// The most requests a flood sends, and the longest it runs.
const FLOOD_REQUESTS: usize = 2_000;
const FLOOD_TIME: Duration = Duration::from_secs(10);

fn journal_bytes(s: &Running) -> u64 {
    std::fs::metadata(s.dir.join("ledger/log/journal")).unwrap().len()
}

/// A device-signed check-in claiming `installed`, reporting `config`.
fn checkin(device: &std::path::Path, installed: &str, config: Sha256Digest, nonce: &str) -> Vec<u8> {
    let c = CheckIn {
        type_tag: CheckInTag,
        schema: SchemaV1,
        deployment: "lim-07".into(),
        product: "lim".into(),
        installed_version: installed.parse().unwrap(),
        installed_baseline: installed.parse().unwrap(),
        software_digests: Default::default(),
        configuration_digest: config,
        last_checkpoint: None,
        nonce: Sha256Digest::of(nonce.as_bytes()),
        time: now(),
    };
    envelope::sign(&c, &[&key_of(device)])
}

fn report(device: &std::path::Path, grant: u64, outcome: InstallOutcome, size: u64, offset: i64) -> Vec<u8> {
    let r = InstallReport {
        type_tag: ReportTag,
        schema: SchemaV1,
        deployment: "lim-07".into(),
        grant_index: grant,
        outcome,
        from_version: "1.0.0".parse().unwrap(),
        to_version: "1.1.0".parse().unwrap(),
        last_checkpoint: CheckpointRef { size, root_hash: Sha256Digest::of(b"held") },
        time: now().plus_seconds(offset),
    };
    envelope::sign(&r, &[&key_of(device)])
}

/// A server without the per-certificate rate limit: the ledger's bounds
/// must hold on their own, whatever rate a device reaches.
async fn unlimited(name: &str) -> Running {
    Running::start_configured(name, false, |config| config.rate_limit = None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resending_one_signed_install_report_records_it_once() {
    let s = unlimited("flood-report").await;
    let c = cast_with(&s, "").await;
    let granted = check_in(&s, &c.device, "grant").await;
    assert_eq!(decision_of(&granted).verdict, Verdict::Grant);
    let grant = granted.decision.as_ref().unwrap().index;
    let mut client = UpdateServiceClient::new(s.conn(&c.device).channel().await.unwrap());
    let body = report(&c.device, grant, InstallOutcome::Failed, grant + 1, 0);
    let first = client.report(pb::ReportRequest { report: body.clone() }).await.unwrap().into_inner().index;
    let (size, bytes) = (s.size().await, journal_bytes(&s));
    let start = Instant::now();
    let mut sent = 0;
    while sent < FLOOD_REQUESTS && start.elapsed() < FLOOD_TIME {
        // The same report is answered with the entry that recorded it.
        let r = client.report(pb::ReportRequest { report: body.clone() }).await.unwrap().into_inner();
        assert_eq!(r.index, first);
        assert!(r.inclusion.is_some());
        sent += 1;
    }
    assert!(sent >= 100, "the flood ran: {sent} requests");
    println!("one report sent {sent} times in {:?}", start.elapsed());
    assert_eq!(s.size().await, size, "{sent} copies of one report add no entry");
    assert_eq!(journal_bytes(&s), bytes, "and no byte");

    // Distinct reports of the same outcome of the grant (another time
    // each): refused before the sequencer, counted, nothing logged.
    let before = covenant_server::datadir::BOUNDED_REPORTS.load(std::sync::atomic::Ordering::Relaxed);
    let start = Instant::now();
    let mut sent = 0;
    while sent < FLOOD_REQUESTS && start.elapsed() < FLOOD_TIME {
        let body = report(&c.device, grant, InstallOutcome::Failed, grant + 1, sent as i64 + 1);
        let status = client.report(pb::ReportRequest { report: body }).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}");
        assert!(
            status.message().contains(&format!("the outcome of grant {grant} is already reported as failed")),
            "{}",
            status.message()
        );
        sent += 1;
    }
    println!("{sent} distinct reports of one outcome in {:?}", start.elapsed());
    assert_eq!(s.size().await, size, "{sent} reports of a reported outcome add no entry");
    assert_eq!(journal_bytes(&s), bytes, "and no byte");
    let counted = covenant_server::datadir::BOUNDED_REPORTS.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert!(counted >= sent as u64, "counted {counted} of {sent}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_ins_alternating_the_claimed_version_log_no_new_decisions() {
    let s = unlimited("flood-claims").await;
    let c = cast(&s).await;
    let config = Sha256Digest::of(b"verified configuration");
    let mut client = UpdateServiceClient::new(s.conn(&c.device).channel().await.unwrap());
    let first = client.check_in(pb::CheckInRequest { checkin: checkin(&c.device, "1.0.0", config, "first") }).await;
    let standing = first.unwrap().into_inner().decision.unwrap().index;
    let (size, bytes) = (s.size().await, journal_bytes(&s));
    let start = Instant::now();
    let mut sent = 0;
    while sent < FLOOD_REQUESTS && start.elapsed() < FLOOD_TIME {
        let claim = ["0.9.0", "1.0.0", "0.1.0", "1.0.9"][sent % 4];
        let body = checkin(&c.device, claim, config, &format!("claim {sent}"));
        let r = client.check_in(pb::CheckInRequest { checkin: body }).await.unwrap().into_inner();
        assert_eq!(r.decision.unwrap().index, standing, "claim {claim}: the standing withhold answers");
        sent += 1;
    }
    assert!(sent >= 100, "the flood ran: {sent} requests");
    println!("{sent} check-ins alternating the claim in {:?}", start.elapsed());
    assert_eq!(s.size().await, size, "{sent} check-ins alternating their claim add no entry");
    assert_eq!(journal_bytes(&s), bytes, "and no byte");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_ins_alternating_what_they_report_log_at_most_the_bound_per_hour() {
    let s = unlimited("flood-content").await;
    // integrity_match compares the configuration a check-in reports with
    // the one the engineer verified: alternating it flips the verdict.
    let c = cast_with(&s, "[[conditions]]\ncondition = \"integrity_match\"\n").await;
    let att = attest_via_cli(&s, &c.customer).await;
    let verified = Sha256Digest::of(b"verified configuration");
    let v = verification(&std::fs::read(&att).unwrap(), verified, &c.engineer);
    let mut engineer = AttestationServiceClient::new(s.conn(&c.engineer).channel().await.unwrap());
    engineer.submit_verification(pb::SubmitRequest { envelope: v }).await.unwrap();
    let mut client = UpdateServiceClient::new(s.conn(&c.device).channel().await.unwrap());
    let (size, bytes) = (s.size().await, journal_bytes(&s));
    let before = covenant_server::datadir::BOUNDED_DECISIONS.load(std::sync::atomic::Ordering::Relaxed);
    let start = Instant::now();
    let mut sent = 0;
    while sent < FLOOD_REQUESTS && start.elapsed() < FLOOD_TIME {
        let config = if sent % 2 == 0 { verified } else { Sha256Digest::of(b"tampered") };
        let body = checkin(&c.device, "1.0.0", config, &format!("content {sent}"));
        client.check_in(pb::CheckInRequest { checkin: body }).await.unwrap();
        sent += 1;
    }
    assert!(sent >= 100, "the flood ran: {sent} requests");
    let added = s.size().await - size;
    assert_eq!(added, MAX_DECISIONS_PER_PERIOD as u64, "{sent} flipping check-ins add the bound's decisions only");
    // A decision carries its check-in: a few KiB each.
    let grown = journal_bytes(&s) - bytes;
    println!("{sent} flipping check-ins in {:?}: {added} entries, {grown} journal bytes", start.elapsed());
    assert!(grown < 12 * 8 * 1024, "{grown} bytes");
    let held = covenant_server::datadir::BOUNDED_DECISIONS.load(std::sync::atomic::Ordering::Relaxed) - before;
    // Past the bound, every other check-in says the same as the standing
    // decision anyway; the rest are held back and counted.
    assert!(held >= ((sent - MAX_DECISIONS_PER_PERIOD) / 2) as u64, "held back {held} of {sent}");
    s.stop().await;
}

/// What an hour of the worst a device can send may add to the journal, at
/// most: [`MAX_DECISIONS_PER_PERIOD`] decisions, each carrying a check-in
/// of at most `MAX_CHECKIN_ENVELOPE_BYTES` (about 6 KiB) twice base64'd into
/// the decision's envelope with seven conditions' reasons (under 16 KiB),
/// and for each of them three reports (one per outcome, each under 2 KiB
/// with its header and salt). Before the limits a decision was ~350 KB and
/// the reports of one grant 617 KB, 4-8 MB a device an hour.
const HOURLY_JOURNAL_BOUND: u64 = MAX_DECISIONS_PER_PERIOD as u64 * (16 * 1024 + 3 * 2 * 1024);

/// A check-in with every field at its longest that the limits allow: 16
/// software digests of 96-byte paths.
fn largest_checkin(device: &std::path::Path, config: Sha256Digest, nonce: &str) -> Vec<u8> {
    let c = CheckIn {
        type_tag: CheckInTag,
        schema: SchemaV1,
        deployment: "lim-07".into(),
        product: "lim".into(),
        installed_version: format!("1.0.1-{}", "a".repeat(MAX_VERSION_LABEL_BYTES)).parse().unwrap(),
        installed_baseline: "1.0.0".parse().unwrap(),
        software_digests: (0..MAX_SOFTWARE_DIGESTS)
            .map(|i| (format!("/{i:0>95}"), Sha256Digest::of(&[i as u8])))
            .collect(),
        configuration_digest: config,
        last_checkpoint: Some(CheckpointRef { size: u64::MAX, root_hash: Sha256Digest::of(b"held") }),
        nonce: Sha256Digest::of(nonce.as_bytes()),
        time: now(),
    };
    envelope::sign(&c, &[&key_of(device)])
}

/// An envelope's JSON with `n` spaces after its opening brace: the same
/// envelope, the same signature, more bytes.
fn padded(mut envelope: Vec<u8>, n: usize) -> Vec<u8> {
    envelope.splice(1..1, std::iter::repeat_n(b' ', n));
    envelope
}

/// `envelope` with `n` more signatures by keys nobody registered (ignored
/// by the threshold, as DSSE says, but carried into the ledger).
fn with_extra_signatures(envelope: &[u8], n: usize) -> Vec<u8> {
    let mut e = covenant_core::envelope::Envelope::parse(envelope).unwrap();
    for i in 0..n {
        e.sign(&covenant_core::keys::SigningKey::from_seed(&[i as u8 + 1; 32]));
    }
    e.to_bytes()
}

fn assert_refused(status: tonic::Status, words: &str) {
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains(words), "{:?} lacks {words:?}", status.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn padded_check_ins_and_reports_are_refused_and_an_hour_of_flood_stays_small() {
    let s = unlimited("flood-padded").await;
    let c = cast_with(&s, "[[conditions]]\ncondition = \"integrity_match\"\n").await;
    let att = attest_via_cli(&s, &c.customer).await;
    let verified = Sha256Digest::of(b"verified configuration");
    let v = verification(&std::fs::read(&att).unwrap(), verified, &c.engineer);
    let mut engineer = AttestationServiceClient::new(s.conn(&c.engineer).channel().await.unwrap());
    engineer.submit_verification(pb::SubmitRequest { envelope: v }).await.unwrap();
    let mut client = UpdateServiceClient::new(s.conn(&c.device).channel().await.unwrap());
    let (size, bytes) = (s.size().await, journal_bytes(&s));

    // The attack as measured: a check-in padded to just under the old 64 KiB
    // payload limit with software digests...
    let mut fat = CheckIn::parse(
        covenant_core::envelope::Envelope::parse(&checkin(&c.device, "1.0.0", verified, "fat")).unwrap().payload(),
    )
    .unwrap();
    fat.software_digests = (0..600).map(|i| (format!("/opt/lim/{i:0>20}"), Sha256Digest::of(b"x"))).collect();
    let body = envelope::sign(&fat, &[&key_of(&c.device)]);
    assert!(body.len() > 60_000, "{} bytes", body.len());
    let status = client.check_in(pb::CheckInRequest { checkin: body }).await.unwrap_err();
    assert_refused(status, &format!("over the limit of {MAX_CHECKIN_ENVELOPE_BYTES}"));
    // ... or with one more digest than a check-in may carry ...
    fat.software_digests = (0..=MAX_SOFTWARE_DIGESTS).map(|i| (format!("/{i}"), Sha256Digest::of(b"x"))).collect();
    let status =
        client.check_in(pb::CheckInRequest { checkin: envelope::sign(&fat, &[&key_of(&c.device)]) }).await.unwrap_err();
    assert_refused(status, "software_digests: at most 16 entries");
    // ... with ignored signatures (one is one too many) ...
    let status = client
        .check_in(pb::CheckInRequest {
            checkin: with_extra_signatures(&checkin(&c.device, "1.0.0", verified, "sigs"), 1),
        })
        .await
        .unwrap_err();
    assert_refused(status, "signatures, over the limit of 1");
    let status = client
        .check_in(pb::CheckInRequest {
            checkin: with_extra_signatures(&checkin(&c.device, "1.0.0", verified, "sigs"), 31),
        })
        .await
        .unwrap_err();
    assert_refused(status, &format!("over the limit of {MAX_CHECKIN_ENVELOPE_BYTES}"));
    // ... or with white space in its envelope.
    let largest = largest_checkin(&c.device, verified, "ws");
    let status = client
        .check_in(pb::CheckInRequest {
            checkin: padded(largest.clone(), MAX_CHECKIN_ENVELOPE_BYTES + 1 - largest.len()),
        })
        .await
        .unwrap_err();
    assert_refused(status, &format!("over the limit of {MAX_CHECKIN_ENVELOPE_BYTES}"));
    assert_eq!((s.size().await, journal_bytes(&s)), (size, bytes), "nothing refused was logged");

    // An hour's worth of the largest check-ins a device may send, flipping
    // the verdict each time, and the largest reports for every grant.
    let start = Instant::now();
    let mut sent = 0;
    let mut grants = std::collections::BTreeSet::new();
    while sent < FLOOD_REQUESTS && start.elapsed() < FLOOD_TIME {
        let config = if sent % 2 == 0 { verified } else { Sha256Digest::of(b"tampered") };
        let body = largest_checkin(&c.device, config, &format!("largest {sent}"));
        assert!(body.len() <= MAX_CHECKIN_ENVELOPE_BYTES);
        let r = client.check_in(pb::CheckInRequest { checkin: body }).await.unwrap().into_inner();
        if decision_of(&r).verdict == Verdict::Grant {
            grants.insert(r.decision.unwrap().index);
        }
        sent += 1;
    }
    assert!(sent >= 100, "the flood ran: {sent} requests");
    assert!(!grants.is_empty());
    let cp = s.size().await;
    for &grant in &grants {
        let largest = report(&c.device, grant, InstallOutcome::Failed, cp, 0);
        // Padded past the report's limit, or with a second signature: refused.
        let status = client
            .report(pb::ReportRequest {
                report: padded(largest.clone(), MAX_REPORT_ENVELOPE_BYTES + 1 - largest.len()),
            })
            .await
            .unwrap_err();
        assert_refused(status, &format!("over the limit of {MAX_REPORT_ENVELOPE_BYTES}"));
        let status = client.report(pb::ReportRequest { report: with_extra_signatures(&largest, 1) }).await.unwrap_err();
        assert_refused(status, "signatures, over the limit of 1");
        let status =
            client.report(pb::ReportRequest { report: with_extra_signatures(&largest, 31) }).await.unwrap_err();
        assert_refused(status, &format!("over the limit of {MAX_REPORT_ENVELOPE_BYTES}"));
        // Padded up to the limit: accepted, and bounded by it.
        let fitting = padded(largest.clone(), MAX_REPORT_ENVELOPE_BYTES - largest.len());
        client.report(pb::ReportRequest { report: fitting }).await.unwrap();
    }
    let added = s.size().await - size;
    let grown = journal_bytes(&s) - bytes;
    println!(
        "{sent} of the largest check-ins and {} reports in {:?}: {added} entries, {grown} journal bytes (bound \
         {HOURLY_JOURNAL_BOUND})",
        grants.len(),
        start.elapsed()
    );
    assert_eq!(added, MAX_DECISIONS_PER_PERIOD as u64 + grants.len() as u64);
    assert!(grown <= HOURLY_JOURNAL_BOUND, "{grown} bytes in an hour's flood, over {HOURLY_JOURNAL_BOUND}");
    s.stop().await;
}

/// Small bounds, so that a flood of a hundred reaches them quickly.
const SMALL_BOUNDS: covenant_server::limits::SubmissionLimits = covenant_server::limits::SubmissionLimits {
    attestations: 3,
    verifications: 4,
    signals: 5,
    period: Duration::from_secs(3_600),
};

/// min-x's attestation for lim-07 from the standard attestation file,
/// made distinct by `n`, with `facts` as what the signer does not know.
fn attestation(c: &Cast, n: i64, facts: &str) -> Vec<u8> {
    let file: covenant_cli::attest::AttestationFile =
        covenant_cli::admin::read_structured(&write_attestation(&c.customer)).unwrap();
    let mut a = file.attestation;
    a.valid_until = a.valid_until.plus_seconds(n);
    a.facts_unknown_to_signer = facts.into();
    envelope::sign(&InTotoStatement::new(vec![deployment_subject("lim-07")], a), &[&key_of(&c.customer)])
}

/// A misuse signal about min-x's lim-07, signed by `reporter`.
fn signal(reporter: &std::path::Path, summary: String, evidence: usize) -> Vec<u8> {
    let s = MisuseSignal {
        type_tag: SignalTag,
        schema: SchemaV1,
        about: SignalAbout { customer: "min-x".into(), deployment: Some("lim-07".into()) },
        source: SignalSource::FieldEngineer,
        summary,
        evidence: (0..evidence).map(|i| Sha256Digest::of(&i.to_le_bytes())).collect(),
        reported_at: now(),
    };
    envelope::sign(&s, &[&key_of(reporter)])
}

fn submissions_refused() -> u64 {
    covenant_server::datadir::BOUNDED_SUBMISSIONS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Sends `bodies` one after another; asserts that the first `bound` are
/// appended and the rest refused with ResourceExhausted and a retry time,
/// and returns the entries and journal bytes they added.
async fn flood<F, Fut>(s: &Running, what: &str, bound: usize, bodies: Vec<Vec<u8>>, mut send: F) -> (u64, u64)
where
    F: FnMut(Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<pb::SubmitResponse>, tonic::Status>>,
{
    let (size, bytes, counted) = (s.size().await, journal_bytes(s), submissions_refused());
    let sent = bodies.len();
    let mut appended = 0;
    for (i, body) in bodies.into_iter().enumerate() {
        match send(body).await {
            Ok(_) => appended += 1,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{what} {i}: {status:?}");
                assert!(
                    status.message().contains(&format!("the bound of {bound} {what}"))
                        && status.message().contains("retry in"),
                    "{}",
                    status.message()
                );
            }
        }
    }
    let (added, grown) = (s.size().await - size, journal_bytes(s) - bytes);
    println!("{sent} {what}: {appended} appended, {added} entries, {grown} journal bytes");
    assert_eq!(appended, bound, "{sent} {what}: the bound's worth appended");
    assert_eq!(added, bound as u64, "{what}: the bound's entries only");
    // Shared counters: other tests of this binary may count too.
    assert!(submissions_refused() - counted >= (sent - bound) as u64, "the refused {what} are counted");
    (added, grown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_flooding_attestations_is_bounded_and_the_ledger_stays_small() {
    let s = Running::start_configured("flood-attest", false, |config| {
        config.rate_limit = None;
        config.submissions = SMALL_BOUNDS;
    })
    .await;
    let c = cast(&s).await;
    let mut customer = AttestationServiceClient::new(s.conn(&c.customer).channel().await.unwrap());
    let (size, bytes) = (s.size().await, journal_bytes(&s));

    // The attack as measured: attestations of ~60 KB, refused unread.
    let fat = attestation(&c, 0, &"x".repeat(44 * 1024));
    assert!(fat.len() > 60_000, "{} bytes", fat.len());
    let limit = InTotoStatement::<EndUseAttestation>::MAX_ENVELOPE_BYTES;
    let status = customer.submit_attestation(pb::SubmitRequest { envelope: fat }).await.unwrap_err();
    assert_refused(status, &format!("over the limit of {limit}"));
    // Just over the statement's limit: refused too.
    let over = attestation(&c, 0, &"x".repeat(MAX_ATTESTATION_BYTES));
    let status = customer.submit_attestation(pb::SubmitRequest { envelope: over }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    // A second signature (ignored by the fold, carried for good) is refused.
    let status = customer
        .submit_attestation(pb::SubmitRequest { envelope: with_extra_signatures(&attestation(&c, 0, "none"), 1) })
        .await
        .unwrap_err();
    assert_refused(status, "signatures, over the limit of 1");
    // Refused submissions took no place in the bound: all of it is left.
    assert_eq!((s.size().await, journal_bytes(&s)), (size, bytes), "nothing refused was logged");

    // A hundred distinct valid attestations, as fast as one client sends.
    let bodies = (1..=100).map(|n| attestation(&c, n, "none")).collect();
    let (_, grown) = flood(&s, "attestations per customer", SMALL_BOUNDS.attestations, bodies, |body| {
        let mut customer = customer.clone();
        async move { customer.submit_attestation(pb::SubmitRequest { envelope: body }).await }
    })
    .await;
    // Each small attestation is ~2 KiB with its header and salt.
    assert!(grown < SMALL_BOUNDS.attestations as u64 * 4 * 1024, "{grown} bytes");
    // With the default bound, an hour of the largest attestations adds at
    // most 12 × 22 KiB, not 171 MB.
    assert!(covenant_server::node::MAX_ATTESTATIONS_PER_PERIOD * limit < 300 * 1024);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engineer_flooding_verifications_and_signals_is_bounded() {
    let s = Running::start_configured("flood-verify", false, |config| {
        config.rate_limit = None;
        config.submissions = SMALL_BOUNDS;
    })
    .await;
    let c = cast(&s).await;
    let att = attest_via_cli(&s, &c.customer).await;
    let att = std::fs::read(&att).unwrap();
    let mut engineer = AttestationServiceClient::new(s.conn(&c.engineer).channel().await.unwrap());
    let (size, bytes) = (s.size().await, journal_bytes(&s));

    // Oversize: a verification with pages of findings, a signal with a
    // thousand evidence digests.
    let mut fat = InTotoStatement::<FieldVerification>::parse(
        covenant_core::envelope::Envelope::parse(&verification(&att, Sha256Digest::of(b"c"), &c.engineer))
            .unwrap()
            .payload(),
    )
    .unwrap();
    fat.predicate.findings = "y".repeat(50_000);
    let status = engineer
        .submit_verification(pb::SubmitRequest { envelope: envelope::sign(&fat, &[&key_of(&c.engineer)]) })
        .await
        .unwrap_err();
    let limit = InTotoStatement::<FieldVerification>::MAX_ENVELOPE_BYTES;
    assert_refused(status, &format!("over the limit of {limit}"));
    let status = engineer
        .submit_signal(pb::SubmitRequest { envelope: signal(&c.engineer, "z".into(), 1_000) })
        .await
        .unwrap_err();
    assert_refused(status, &format!("over the limit of {}", MisuseSignal::MAX_ENVELOPE_BYTES));
    // Refused by the ledger (a verification of an attestation it never
    // logged): no place taken.
    let stranger = verification(&attestation(&c, 7, "none"), Sha256Digest::of(b"c"), &c.engineer);
    let status = engineer.submit_verification(pb::SubmitRequest { envelope: stranger }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    assert_eq!((s.size().await, journal_bytes(&s)), (size, bytes), "nothing refused was logged");

    let bodies =
        (0..100).map(|n| verification(&att, Sha256Digest::of(format!("config {n}").as_bytes()), &c.engineer)).collect();
    let (_, grown) = flood(&s, "verifications per engineer", SMALL_BOUNDS.verifications, bodies, |body| {
        let mut engineer = engineer.clone();
        async move { engineer.submit_verification(pb::SubmitRequest { envelope: body }).await }
    })
    .await;
    assert!(grown < SMALL_BOUNDS.verifications as u64 * 4 * 1024, "{grown} bytes");

    let bodies = (0..100).map(|n| signal(&c.engineer, format!("report {n}"), 3)).collect();
    let (_, grown) = flood(&s, "signals per reporter", SMALL_BOUNDS.signals, bodies, |body| {
        let mut engineer = engineer.clone();
        async move { engineer.submit_signal(pb::SubmitRequest { envelope: body }).await }
    })
    .await;
    assert!(grown < SMALL_BOUNDS.signals as u64 * 4 * 1024, "{grown} bytes");

    // Another engineer has a bound of its own.
    let other = person(&s, "engineer", "eng-2").await;
    let mut other_client = AttestationServiceClient::new(s.conn(&other).channel().await.unwrap());
    other_client.submit_signal(pb::SubmitRequest { envelope: signal(&other, "mine".into(), 0) }).await.unwrap();
    s.stop().await;
}
