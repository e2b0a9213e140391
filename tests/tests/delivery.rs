//! Delivery: artifact bytes go only to a deployment holding a standing,
//! unexpired grant of that release; a suspension or a revocation stops the
//! stream within 1 MiB; a download cut anywhere resumes to the right hash.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use covenant_cli::admin::{Admin, IdentityCmd};
use covenant_core::digest::Sha256Digest;
use covenant_core::statements::Verdict;
use covenant_proto::v1 as pb;
use covenant_proto::v1::update_service_client::UpdateServiceClient;
use covenant_tests::*;
use tonic::Code;

/// A served ledger where lim-07 holds a grant of a 16 MiB release.
async fn granted(name: &str) -> (Running, Cast, Sha256Digest, Vec<u8>) {
    granted_configured(name, |_| ()).await
}

/// As [`granted`], with the server's limits changed by `configure`.
async fn granted_configured(
    name: &str,
    configure: impl FnOnce(&mut covenant_server::serve::ServeConfig),
) -> (Running, Cast, Sha256Digest, Vec<u8>) {
    let s = Running::start_configured(name, false, configure).await;
    let c = cast_with(&s, "").await;
    let bytes: Vec<u8> = (0..16u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let digest = publish_bytes(&s, "1.2.0", &bytes).await;
    let d = decision_of(&check_in(&s, &c.device, "grant").await);
    assert_eq!((d.verdict, d.release), (Verdict::Grant, Some(digest)));
    (s, c, digest, bytes)
}

async fn client(s: &Running, identity: &std::path::Path) -> UpdateServiceClient<tonic::transport::Channel> {
    UpdateServiceClient::new(s.conn(identity).channel().await.unwrap())
}

/// Downloads from `offset`, stopping once `stop_after` bytes came (if
/// any); returns the bytes and the status the stream ended with.
async fn download(
    c: &mut UpdateServiceClient<tonic::transport::Channel>,
    release: &Sha256Digest,
    offset: u64,
    stop_after: Option<usize>,
) -> (Vec<u8>, Option<tonic::Status>) {
    let req = pb::DownloadRequest { release_digest: release.0.to_vec(), offset };
    let mut stream = match c.download(req).await {
        Ok(r) => r.into_inner(),
        Err(status) => return (Vec::new(), Some(status)),
    };
    let mut got = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(chunk)) => {
                assert_eq!(chunk.offset, offset + got.len() as u64, "chunks arrive in order");
                got.extend_from_slice(&chunk.data);
                if let Some(limit) = stop_after
                    && got.len() >= limit
                {
                    got.truncate(limit);
                    return (got, None);
                }
            }
            Ok(None) => return (got, None),
            Err(status) => return (got, Some(status)),
        }
    }
}

/// Reads a stream to its end: the bytes that came, and how it ended.
async fn drain(stream: &mut tonic::Streaming<pb::DownloadChunk>) -> (usize, Option<tonic::Status>) {
    let mut bytes = 0usize;
    loop {
        match stream.message().await {
            Ok(Some(chunk)) => bytes += chunk.data.len(),
            Ok(None) => return (bytes, None),
            Err(status) => return (bytes, Some(status)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_grant_no_bytes() {
    let (s, c, release, bytes) = granted("nogrant").await;
    // The grant holder gets every byte.
    let mut own = client(&s, &c.device).await;
    let (got, end) = download(&mut own, &release, 0, None).await;
    assert!(end.is_none());
    assert_eq!(Sha256Digest::of(&got), Sha256Digest::of(&bytes));
    // Another deployment (registered, with its own certificate, no grant)
    // gets nothing, not even with the release digest of lim-07's grant.
    register_deployment(&s, min_x_deployment("lim-08")).await;
    let other = person(&s, "deployment", "lim-08").await;
    let mut theirs = client(&s, &other).await;
    let (got, end) = download(&mut theirs, &release, 0, None).await;
    assert!(got.is_empty());
    assert_eq!(end.unwrap().code(), Code::PermissionDenied);
    // Nor does anyone who is not a deployment.
    let mut customer = client(&s, &c.customer).await;
    let (got, end) = download(&mut customer, &release, 0, None).await;
    assert!(got.is_empty());
    assert_eq!(end.unwrap().code(), Code::PermissionDenied);
    // A release the deployment holds no grant of.
    let older = publish(&s, "0.9.0", "capability", "0.9.0").await;
    let (got, end) = download(&mut own, &older, 0, None).await;
    assert!(got.is_empty());
    assert_eq!(end.unwrap().code(), Code::PermissionDenied);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspension_mid_stream_stops_the_bytes_within_one_mebibyte() {
    let (s, c, release, _) = granted("suspend").await;
    // An agent keeps at most 256 KiB in flight to it.
    let mut own = UpdateServiceClient::new(channel_with_window(&s, &c.device, 256 * 1024).await);
    let req = pb::DownloadRequest { release_digest: release.0.to_vec(), offset: 0 };
    let mut stream = own.download(req).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(!first.data.is_empty());
    // A capability release under L1: the grant is void at once.
    admin(&s.admin(1), Admin::Suspend { customer: None, deployment: Some("lim-07".into()), level: "L1".into() }).await;
    let (after, end) = drain(&mut stream).await;
    assert_eq!(end.expect("the stream ends with an error").code(), Code::PermissionDenied);
    assert!(after <= 1 << 20, "{after} bytes after the suspension");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_mid_stream_stops_the_bytes_within_one_mebibyte() {
    let (s, c, release, _) = granted("revoke").await;
    let mut own = UpdateServiceClient::new(channel_with_window(&s, &c.device, 256 * 1024).await);
    let req = pb::DownloadRequest { release_digest: release.0.to_vec(), offset: 0 };
    let mut stream = own.download(req).await.unwrap().into_inner();
    stream.message().await.unwrap().unwrap();
    let der = covenant_server::pki::pem_to_der(&std::fs::read_to_string(c.device.join("cert.pem")).unwrap()).unwrap();
    let fingerprint = Sha256Digest::of(&der).to_string();
    admin(&s.admin(1), Admin::Identity(IdentityCmd::Revoke { fingerprint, compromised_since: None })).await;
    let (after, end) = drain(&mut stream).await;
    assert_eq!(end.expect("the stream ends with an error").code(), Code::PermissionDenied);
    assert!(after <= 1 << 20, "{after} bytes after the revocation");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_cut_anywhere_resumes_to_the_right_hash() {
    let (s, c, release, bytes) = granted("resume").await;
    let mut own = client(&s, &c.device).await;
    let mut got: Vec<u8> = Vec::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut cuts = 0;
    while got.len() < bytes.len() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Cut after a random 1 byte .. 3 MiB, mid-chunk as often as not.
        let take = 1 + (seed % (3 << 20)) as usize;
        // A stream just cut holds its download slot until the server sees
        // it gone; the limit answers ResourceExhausted ("retry shortly"),
        // and a client retries, as the agent does.
        let mut tries = 0;
        let (part, end) = loop {
            let (part, end) = download(&mut own, &release, got.len() as u64, Some(take)).await;
            match &end {
                Some(e) if e.code() == Code::ResourceExhausted && tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                _ => break (part, end),
            }
        };
        assert!(end.is_none(), "{end:?}");
        got.extend_from_slice(&part);
        cuts += 1;
    }
    assert!(cuts >= 5, "cut {cuts} times");
    assert_eq!(Sha256Digest::of(&got), Sha256Digest::of(&bytes));
    // Past the end is out of range.
    let (_, end) = download(&mut own, &release, bytes.len() as u64 + 1, None).await;
    assert_eq!(end.unwrap().code(), Code::OutOfRange);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_enrolls_without_its_keys_leaving_it() {
    let s = Running::start("enroll").await;
    let _ = cast_with(&s, "").await;
    register_deployment(&s, min_x_deployment("lim-09")).await;
    // On the device.
    let state = s.dir.join("device-state");
    let made = covenant_agent::enroll_request(&state).unwrap();
    assert!(covenant_agent::enroll_request(&state).is_err(), "never replaces the device's keys");
    // At the vendor: only the request travelled.
    let bundle = s.dir.join("bundle-lim-09");
    admin(&s.admin(1), Admin::Enroll { deployment: "lim-09".into(), csr: made.csr.clone(), out: bundle.clone() }).await;
    let mut files: Vec<String> =
        std::fs::read_dir(&bundle).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.sort();
    assert_eq!(files, ["ca.pem", "cert.pem", "deployment", "ledger.vkey", "root.json", "server", "witnesses.vkeys"]);
    let vkey = std::fs::read_to_string(bundle.join("ledger.vkey")).unwrap();
    assert_eq!(vkey.trim(), std::fs::read_to_string(s.dir.join("ledger.vkey")).unwrap().trim());
    // Back on the device: the bundle beside its own keys, and it checks in.
    for f in &files {
        std::fs::copy(bundle.join(f), state.join(f)).unwrap();
    }
    let checkin = {
        use covenant_core::statements::*;
        let c = CheckIn {
            type_tag: CheckInTag,
            schema: SchemaV1,
            deployment: "lim-09".into(),
            product: "lim".into(),
            installed_version: "1.0.0".parse().unwrap(),
            installed_baseline: "1.0.0".parse().unwrap(),
            software_digests: Default::default(),
            configuration_digest: Sha256Digest::of(b"c"),
            last_checkpoint: None,
            nonce: Sha256Digest::of(b"first"),
            time: now(),
        };
        covenant_core::envelope::sign(&c, &[&key_of(&state)])
    };
    let mut c = client(&s, &state).await;
    let r = c.check_in(pb::CheckInRequest { checkin }).await.unwrap().into_inner();
    assert_eq!(decision_of(&r).verdict, Verdict::Grant);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_get_the_right_status_and_the_server_keeps_serving() {
    let (s, c, release, bytes) = granted("limits").await;
    // A request over the service's size limit.
    let mut own = client(&s, &c.device).await;
    let e = own.check_in(pb::CheckInRequest { checkin: vec![b'x'; 512 * 1024] }).await.unwrap_err();
    // The sender's fault, named with the limit (review finding F9; tonic
    // itself answers OutOfRange).
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let limit = covenant_server::node::MAX_UPDATE_REQUEST;
    assert!(e.message().contains(&format!("the limit is: {limit} bytes")), "{e:?}");
    // Two download streams per certificate at once; a third is refused.
    let mut streams = Vec::new();
    for _ in 0..covenant_server::node::MAX_DOWNLOADS_PER_IDENTITY {
        let req = pb::DownloadRequest { release_digest: release.0.to_vec(), offset: 0 };
        let mut stream = own.download(req).await.unwrap().into_inner();
        stream.message().await.unwrap().unwrap();
        streams.push(stream);
    }
    let req = pb::DownloadRequest { release_digest: release.0.to_vec(), offset: 0 };
    let e = match own.download(req).await {
        Ok(r) => r.into_inner().message().await.unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    // Done with them: the next is served, whole (on a fresh connection: the
    // abandoned streams' unread bytes hold this one's flow-control window).
    drop(streams);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut fresh = client(&s, &c.device).await;
    let (got, end) = tokio::time::timeout(std::time::Duration::from_secs(60), download(&mut fresh, &release, 0, None))
        .await
        .expect("the download finishes");
    assert!(end.is_none(), "{end:?}");
    assert_eq!(got.len(), bytes.len());
    s.stop().await;
}

/// A grant of the shortest validity a contract allows (60 s): once it has
/// expired, not a byte. (This test waits the minute out.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_grant_gets_no_bytes() {
    let s = Running::start("expired").await;
    let c = cast_with(&s, "").await;
    // Contract version 2: grants stand for 60 s.
    let contract = s.dir.join("contract-v2.toml");
    let v1 = std::fs::read_to_string(s.dir.join("contract.toml")).unwrap();
    std::fs::write(
        &contract,
        v1.replace("version = 1", "version = 2")
            .replace("grant_validity_seconds = 604800", "grant_validity_seconds = 60"),
    )
    .unwrap();
    admin(&s.admin(1), Admin::Contract { file: contract }).await;
    let r = check_in(&s, &c.device, "short").await;
    let d = decision_of(&r);
    assert_eq!(d.verdict, Verdict::Grant);
    let release = d.release.unwrap();
    let mut own = client(&s, &c.device).await;
    let (got, end) = download(&mut own, &release, 0, Some(1)).await;
    assert_eq!((got.len(), end.is_none()), (1, true), "a byte while the grant stands");
    tokio::time::sleep(std::time::Duration::from_secs(61)).await;
    let (got, end) = download(&mut own, &release, 0, None).await;
    assert!(got.is_empty());
    assert_eq!(end.unwrap().code(), Code::PermissionDenied);
    s.stop().await;
}

/// A check-in by `deployment`, signed with the key in `device`.
fn checkin_as(device: &std::path::Path, deployment: &str, nonce: &str) -> Vec<u8> {
    use covenant_core::statements::*;
    let c = CheckIn {
        type_tag: CheckInTag,
        schema: SchemaV1,
        deployment: deployment.into(),
        product: "lim".into(),
        installed_version: "1.0.0".parse().unwrap(),
        installed_baseline: "1.0.0".parse().unwrap(),
        software_digests: Default::default(),
        configuration_digest: Sha256Digest::of(b"c"),
        last_checkpoint: None,
        nonce: Sha256Digest::of(nonce.as_bytes()),
        time: now(),
    };
    covenant_core::envelope::sign(&c, &[&key_of(device)])
}

/// Registers `deployment` of `customer`, makes its certificate and has it
/// check in once; returns its identity folder.
async fn granted_device(s: &Running, customer: &str, deployment: &str) -> std::path::PathBuf {
    register_deployment(
        s,
        Admin::Deployment {
            id: deployment.into(),
            customer: customer.into(),
            product: "lim".into(),
            country: "XA".into(),
            site: "s1".into(),
            provisioned_version: "1.0.0".into(),
        },
    )
    .await;
    let device = person(s, "deployment", deployment).await;
    let mut c = client(s, &device).await;
    let r = c.check_in(pb::CheckInRequest { checkin: checkin_as(&device, deployment, "first") }).await.unwrap();
    assert_eq!(decision_of(&r.into_inner()).verdict, Verdict::Grant, "{deployment} is granted");
    device
}

/// Opens a download as a device that keeps 256 KiB in flight, reads one
/// chunk and then nothing more: the stream, or the status it was refused with.
async fn stalled_download(
    s: &Running,
    device: &std::path::Path,
    release: &Sha256Digest,
) -> Result<tonic::Streaming<pb::DownloadChunk>, tonic::Status> {
    let mut c = UpdateServiceClient::new(channel_with_window(s, device, 256 * 1024).await);
    let req = pb::DownloadRequest { release_digest: release.0.to_vec(), offset: 0 };
    let mut stream = c.download(req).await?.into_inner();
    stream.message().await?.expect("a first chunk");
    Ok(stream)
}

/// Issue 16, item 15: a deployment asked for another deployment's release at
/// a huge offset and was told the artifact's size (OutOfRange) before the
/// grant was checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_of_another_deployments_release_at_a_huge_offset_reveals_nothing() {
    let (s, _c, release, bytes) = granted("oracle").await;
    register_deployment(&s, min_x_deployment("lim-08")).await;
    let other = person(&s, "deployment", "lim-08").await;
    let mut theirs = client(&s, &other).await;
    let (got, end) = download(&mut theirs, &release, u64::MAX, None).await;
    assert!(got.is_empty());
    let refused = end.expect("refused");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(!refused.message().contains(&bytes.len().to_string()), "{refused:?}");
    // A release that does not exist gets the very same answer: no oracle.
    let (_, end) = download(&mut theirs, &Sha256Digest::of(b"no such release"), u64::MAX, None).await;
    let unknown = end.expect("refused");
    assert_eq!((unknown.code(), unknown.message()), (refused.code(), refused.message()));
    s.stop().await;
}

/// Issue 16, item 15, the same ordering in CheckIn: a device's check-in
/// naming another deployment was refused with the reason its verification
/// failed, which said whether that deployment is registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_in_naming_another_deployment_says_nothing_about_it() {
    let s = Running::start("checkin-oracle").await;
    let c = cast_with(&s, "").await;
    let other = granted_device(&s, "min-x", "lim-08").await;
    let mut theirs = client(&s, &other).await;
    let mut answers = Vec::new();
    for named in ["lim-07", "no-such-deployment"] {
        let e = theirs.check_in(pb::CheckInRequest { checkin: checkin_as(&other, named, named) }).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{named}: {e:?}");
        answers.push(e.message().to_owned());
    }
    assert_eq!(answers[0], answers[1]);
    // Its own check-in is still served.
    let own = theirs.check_in(pb::CheckInRequest { checkin: checkin_as(&other, "lim-08", "again") }).await;
    assert!(own.is_ok(), "{own:?}");
    let _ = c;
    s.stop().await;
}

/// Issue 16, item 4: 32 devices with grants each opened 2 downloads and
/// stopped reading; every other deployment, of any customer, got
/// ResourceExhausted. Now one customer's devices get at most their share,
/// and another customer's device downloads meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_customers_idle_downloads_leave_other_customers_their_share() {
    use covenant_server::node::{MAX_DOWNLOADS, MAX_DOWNLOADS_PER_CUSTOMER};
    let (s, c, release, bytes) = granted("share").await;
    // min-y, another customer, with a contract and lim-08 granted.
    let a1 = s.admin(1);
    admin(&a1, Admin::Customer { id: "min-y".into(), name: "Ministry Y".into(), country: "XA".into() }).await;
    let contract = s.dir.join("contract-min-y.toml");
    std::fs::write(&contract, std::fs::read_to_string(s.dir.join("contract.toml")).unwrap().replace("min-x", "min-y"))
        .unwrap();
    first_contract(&s, contract).await;
    let victim = granted_device(&s, "min-y", "lim-08").await;
    // min-x's 32 devices (lim-07 and 31 more), each with its grant.
    let mut attackers = vec![c.device.clone()];
    for i in 1..32 {
        attackers.push(granted_device(&s, "min-x", &format!("lim-x{i:02}")).await);
    }
    // Each opens 2 downloads and stops reading.
    let mut held = Vec::new();
    let mut refused = Vec::new();
    for device in &attackers {
        for _ in 0..2 {
            match stalled_download(&s, device, &release).await {
                Ok(stream) => held.push(stream),
                Err(status) => refused.push(status),
            }
        }
    }
    assert_eq!(held.len(), MAX_DOWNLOADS_PER_CUSTOMER, "min-x holds its share of {MAX_DOWNLOADS}");
    assert_eq!(refused.len(), 64 - MAX_DOWNLOADS_PER_CUSTOMER);
    for status in &refused {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("share"), "{status:?}");
    }
    // Meanwhile min-y's device downloads the whole release.
    let mut theirs = client(&s, &victim).await;
    let (got, end) = tokio::time::timeout(std::time::Duration::from_secs(60), download(&mut theirs, &release, 0, None))
        .await
        .expect("the download finishes");
    assert!(end.is_none(), "{end:?}");
    assert_eq!(Sha256Digest::of(&got), Sha256Digest::of(&bytes));
    drop(held);
    s.stop().await;
}

/// Issue 16, item 4: a download stream whose client reads nothing is closed
/// after the idle timeout, and its slot is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_download_is_closed_and_its_slot_freed() {
    let idle = std::time::Duration::from_secs(1);
    let (s, c, release, bytes) = granted_configured("idle", |config| config.download_idle = idle).await;
    let mut stalled = Vec::new();
    for _ in 0..covenant_server::node::MAX_DOWNLOADS_PER_IDENTITY {
        stalled.push(stalled_download(&s, &c.device, &release).await.unwrap());
    }
    let e = stalled_download(&s, &c.device, &release).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    // The idle streams are still open on the client's side, but the server
    // has given their slots back: a new download gets every byte.
    tokio::time::sleep(idle * 3).await;
    let mut fresh = client(&s, &c.device).await;
    let (got, end) = tokio::time::timeout(std::time::Duration::from_secs(60), download(&mut fresh, &release, 0, None))
        .await
        .expect("the download finishes");
    assert!(end.is_none(), "{end:?}");
    assert_eq!(got.len(), bytes.len());
    // A stalled stream, read at last, ends with the reason.
    let (_, end) = drain(&mut stalled[0]).await;
    assert_eq!(end.expect("the stream ends with an error").code(), Code::DeadlineExceeded);
    // (The server's graceful stop waits for every open stream.)
    drop(stalled);
    s.stop().await;
}

/// Issue 16, item 10: a revocation ends a stream opened before it; for
/// Publish, the next chunk after the publisher's revocation is refused and
/// nothing is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_revoked_mid_upload_publishes_nothing() {
    use covenant_proto::v1::admin_service_client::AdminServiceClient;
    let s = Running::start("publish-revoked").await;
    let _ = cast_with(&s, "").await;
    // A manifest for 2 MiB, signed offline as `publish` does.
    let bytes = vec![7u8; 2 << 20];
    let artifact = s.dir.join("lim-3.0.0.img");
    std::fs::write(&artifact, &bytes).unwrap();
    let manifest = s.dir.join("lim-3.0.0.manifest");
    let new = covenant_cli::release::Release::New {
        artifact,
        product: "lim".into(),
        version: "3.0.0".into(),
        class: "capability".into(),
        baseline: "3.0.0".into(),
        out: manifest.clone(),
    };
    covenant_cli::release::run(new, true).unwrap();
    for k in ["release-1", "release-2"] {
        let sign = covenant_cli::release::Release::Sign {
            manifest: manifest.clone(),
            key: s.dir.join(format!("keys/{k}.key")).display().to_string(),
        };
        covenant_cli::release::run(sign, true).unwrap();
    }
    let manifest = std::fs::read(&manifest).unwrap();
    // admin2 starts the upload: the manifest and the first half.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let admin2 = s.admin(2);
    let mut publisher = AdminServiceClient::new(admin2.channel().await.unwrap());
    let upload = tokio::spawn(async move {
        publisher.publish(tokio_stream::wrappers::ReceiverStream::new(rx)).await.map(|r| r.into_inner())
    });
    tx.send(pb::PublishChunk { manifest, data: bytes[..1 << 20].to_vec() }).await.unwrap();
    // The server has taken the call and begun the upload once its file is
    // under artifacts/tmp (else the revocation could land before the call,
    // which is then Unauthenticated at its start; bounded wait).
    let tmp = s.dir.join("artifacts/tmp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_dir(&tmp).map_or(0, |d| d.count()) == 0 {
        assert!(std::time::Instant::now() < deadline, "the upload never started");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let size = s.size().await;
    // admin2 revokes its own certificate (at once: another admin's
    // revocation would wait for a second admin); then the second half comes.
    let der =
        covenant_server::pki::pem_to_der(&std::fs::read_to_string(s.dir.join("identities/admin2/cert.pem")).unwrap())
            .unwrap();
    let fingerprint = Sha256Digest::of(&der).to_string();
    admin(&s.admin(2), Admin::Identity(IdentityCmd::Revoke { fingerprint, compromised_since: None })).await;
    // (The server may have refused already, on the chunk it was taking when
    // the revocation landed; then this one has nowhere to go.)
    let _ = tx.send(pb::PublishChunk { manifest: Vec::new(), data: bytes[1 << 20..].to_vec() }).await;
    drop(tx);
    let refused = upload.await.unwrap().unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!(s.size().await, size + 1, "only the revocation was appended");
    s.stop().await;
}

/// Registers customer `id` with the story's (empty) contract.
async fn customer(s: &Running, id: &str) {
    let a1 = s.admin(1);
    admin(&a1, Admin::Customer { id: id.into(), name: format!("Ministry {id}"), country: "XA".into() }).await;
    let contract = s.dir.join(format!("contract-{id}.toml"));
    std::fs::write(&contract, std::fs::read_to_string(s.dir.join("contract.toml")).unwrap().replace("min-x", id))
        .unwrap();
    first_contract(s, contract).await;
}

/// Review finding F6: two customers could take every download slot (a
/// fixed half each), leaving none to a third. A customer's share is now
/// the slots over (customers downloading + 1): with 8 slots, min-x alone
/// holds 4, min-y then 2 (a third), and min-z still downloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_customers_idle_downloads_leave_a_third_its_share() {
    use covenant_server::limits::DownloadLimits;
    let (s, c, release, bytes) = granted_configured("third", |config| {
        config.downloads = DownloadLimits { total: 8, per_certificate: 2, per_customer: 4 }
    })
    .await;
    customer(&s, "min-y").await;
    customer(&s, "min-z").await;
    let x = [c.device.clone(), granted_device(&s, "min-x", "lim-x01").await];
    let y = [granted_device(&s, "min-y", "lim-y01").await, granted_device(&s, "min-y", "lim-y02").await];
    let z = granted_device(&s, "min-z", "lim-z01").await;
    let mut held = Vec::new();
    let mut refused = Vec::new();
    for device in x.iter().chain(&y) {
        for _ in 0..2 {
            match stalled_download(&s, device, &release).await {
                Ok(stream) => held.push(stream),
                Err(status) => refused.push(status),
            }
        }
    }
    assert_eq!((held.len(), refused.len()), (4 + 2, 2), "min-x holds a half, min-y a third");
    for status in &refused {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("with 2 customer(s) downloading"), "{status:?}");
    }
    // min-z downloads the whole release meanwhile.
    let mut theirs = client(&s, &z).await;
    let (got, end) = tokio::time::timeout(std::time::Duration::from_secs(60), download(&mut theirs, &release, 0, None))
        .await
        .expect("the download finishes");
    assert!(end.is_none(), "{end:?}");
    assert_eq!(Sha256Digest::of(&got), Sha256Digest::of(&bytes));
    drop(held);
    s.stop().await;
}

/// Review finding F6: a reader taking one chunk just before each idle
/// timeout kept its slot for ever. A stream must send a least number of
/// bytes per window (here 1 MiB a second; a chunk taken every 700 ms is
/// about 360 KiB a second): the trickle is closed, with the reason, and its
/// slot is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_download_is_closed_and_its_slot_freed() {
    use covenant_server::node::DownloadProgress;
    let window = std::time::Duration::from_secs(1);
    let (s, c, release, bytes) =
        granted_configured("trickle", |config| config.download_progress = DownloadProgress { bytes: 1 << 20, window })
            .await;
    let mut trickles = Vec::new();
    for _ in 0..covenant_server::node::MAX_DOWNLOADS_PER_IDENTITY {
        let mut stream = stalled_download(&s, &c.device, &release).await.unwrap();
        trickles.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(700)).await;
                match stream.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return None,
                    Err(status) => return Some(status),
                }
            }
        }));
    }
    let e = stalled_download(&s, &c.device, &release).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    for t in trickles {
        let end = tokio::time::timeout(window * 10, t).await.expect("the trickle is closed").unwrap();
        let status = end.expect("closed with a reason");
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert!(status.message().contains("under the least of 1048576 bytes a window"), "{status:?}");
    }
    let mut fresh = client(&s, &c.device).await;
    let (got, end) = tokio::time::timeout(std::time::Duration::from_secs(60), download(&mut fresh, &release, 0, None))
        .await
        .expect("the download finishes");
    assert!(end.is_none(), "{end:?}");
    assert_eq!(got.len(), bytes.len());
    s.stop().await;
}

/// The server reads the time from the one clock it was started with
/// (`ServeConfig::clock`): set 1,000 s ahead of the system's and stopped,
/// the ledger's time, the freshness answer's time and the grant's issue and
/// expiry all follow it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_answers_on_the_clock_it_was_started_with() {
    use covenant_core::envelope::Envelope;
    use covenant_core::statements::{Freshness, Payload as _};
    let set = now().plus_seconds(1_000);
    let (s, c, _, _) = granted_configured("clock", move |config| {
        config.clock = std::sync::Arc::new(move || set);
    })
    .await;
    let r = check_in(&s, &c.device, "clock").await;
    let freshness = Freshness::parse(Envelope::parse(&r.freshness).unwrap().payload()).unwrap();
    assert_eq!(freshness.time, set, "the freshness answer carries the set clock's time");
    let d = decision_of(&r);
    assert_eq!(d.issued_at, set, "the grant was decided at the set clock's time");
    assert_eq!(d.expires_at, Some(set.plus_seconds(604_800)), "its expiry follows the set clock");
    s.stop().await;
}
