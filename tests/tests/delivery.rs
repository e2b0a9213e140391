//! Delivery: artifact bytes go only to a deployment holding a standing,
//! unexpired grant of that release; a suspension or a revocation stops the
//! stream within 1 MiB; a download cut anywhere resumes to the right hash.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use covenant_cli::admin::{Admin, IdentityCmd};
use covenant_core::digest::Sha256Digest;
use covenant_core::statements::Verdict;
use covenant_proto::v1 as pb;
use covenant_proto::v1::update_service_client::UpdateServiceClient;
use tonic::Code;

/// A served ledger where lim-07 holds a grant of a 16 MiB release.
async fn granted(name: &str) -> (Running, Cast, Sha256Digest, Vec<u8>) {
    let s = Running::start(name).await;
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
    admin(
        &s.admin(1),
        Admin::Deployment {
            id: "lim-08".into(),
            customer: "min-x".into(),
            product: "lim".into(),
            country: "XA".into(),
            site: "s1".into(),
            provisioned_version: "1.0.0".into(),
        },
    )
    .await;
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
    admin(
        &s.admin(1),
        Admin::Deployment {
            id: "lim-09".into(),
            customer: "min-x".into(),
            product: "lim".into(),
            country: "XA".into(),
            site: "s1".into(),
            provisioned_version: "1.0.0".into(),
        },
    )
    .await;
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
    assert!(matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted), "{e:?}");
    // Two download streams per certificate at once; a third is refused.
    let mut streams = Vec::new();
    for _ in 0..covenant_server::service::MAX_DOWNLOADS_PER_IDENTITY {
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
