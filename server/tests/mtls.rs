//! The server over mutual TLS on loopback: a development data directory,
//! the real services, and callers with the identities `init --dev` made.
//! Who may call what, and each bad input, gets the right gRPC status; the
//! server keeps serving throughout.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use covenant_core::digest::Sha256Digest;
use covenant_core::envelope;
use covenant_core::keys::SigningKey;
use covenant_core::merkle;
use covenant_core::note::{self, NoteVerifier, TlogProof};
use covenant_core::statements::{ActionKind, ActionTag, AdminAction, SchemaV1};
use covenant_proto::v1 as pb;
use covenant_proto::v1::admin_service_client::AdminServiceClient;
use covenant_proto::v1::ledger_service_client::LedgerServiceClient;
use covenant_server::datadir;
use covenant_server::pki;
use covenant_server::serve::{ServeConfig, install_crypto_provider, run};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

struct Running {
    dir: PathBuf,
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start(name: &str) -> Running {
    start_with(name, |_| ()).await
}

/// As [`start`], with the server's limits changed by `configure`.
async fn start_with(name: &str, configure: impl FnOnce(&mut ServeConfig)) -> Running {
    install_crypto_provider();
    let dir = std::env::temp_dir().join(format!("covenant-mtls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    tokio::task::block_in_place(|| datadir::init_dev(&dir)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut config = ServeConfig::new(dir.clone());
    configure(&mut config);
    let task = tokio::spawn(run(config, listener, async {
        let _ = stopped.await;
    }));
    Running { dir, addr, stop: Some(stop), task }
}

impl Running {
    async fn channel(&self, identity: Option<&Path>) -> Channel {
        let ca = std::fs::read_to_string(self.dir.join("ca.pem")).unwrap();
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name("localhost");
        if let Some(id) = identity {
            let cert = std::fs::read_to_string(id.join("cert.pem")).unwrap();
            let key = std::fs::read_to_string(id.join("key.pem")).unwrap();
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        Channel::from_shared(format!("https://{}", self.addr))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// A channel as `id`, or why it could not connect.
    async fn try_channel(&self, id: &Path) -> Result<Channel, String> {
        let read = |name: &str| std::fs::read_to_string(id.join(name)).unwrap();
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read("ca.pem")))
            .identity(Identity::from_pem(read("cert.pem"), read("key.pem")))
            .domain_name("localhost");
        let endpoint = Channel::from_shared(format!("https://{}", self.addr)).unwrap().tls_config(tls).unwrap();
        endpoint.connect().await.map_err(|e| e.to_string())
    }

    fn identity(&self, name: &str) -> PathBuf {
        self.dir.join("identities").join(name)
    }

    fn log(&self) -> NoteVerifier {
        NoteVerifier::parse(std::fs::read_to_string(self.dir.join("ledger.vkey")).unwrap().trim()).unwrap()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
        // A stream task the test left open may still hold the ledger, whose
        // sequencer then publishes once more after `run` returns; the folder
        // is a scratch folder, so a failed removal is not the test's failure.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn signed(action: ActionKind, key: &SigningKey) -> Vec<u8> {
    // The ledger takes an action issued within a day of its (system) time.
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let now = covenant_core::digest::Timestamp::from_unix(secs as i64);
    envelope::sign(
        &AdminAction {
            type_tag: ActionTag,
            schema: SchemaV1,
            action,
            why: "test".into(),
            evidence: vec![],
            issued_at: now,
        },
        &[key],
    )
}

/// A holder makes both keys, an admin has the CA sign the request, and the
/// certificate and TLS key go to `identities/<subject>`. Not registered yet.
async fn request_certificate(
    server: &Running,
    admin: &Channel,
    role: &str,
    subject: &str,
) -> (SigningKey, PathBuf, Sha256Digest) {
    let signing = datadir::new_key().unwrap();
    let (csr, tls_key) = pki::certificate_request(&signing.public()).unwrap();
    let issued = AdminServiceClient::new(admin.clone())
        .issue_identity(pb::IssueIdentityRequest { csr: csr.into_bytes(), role: role.into(), subject: subject.into() })
        .await
        .unwrap()
        .into_inner();
    let dir = server.dir.join("identities").join(subject);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), &issued.certificate_pem).unwrap();
    std::fs::write(dir.join("key.pem"), tls_key).unwrap();
    (signing, dir, Sha256Digest::from_hex(&issued.certificate_sha256).unwrap())
}

/// Registers a certificate and its signing key with an admin's signed
/// action; returns the action's digest (a customer's, engineer's or
/// auditor's identity is registered once a second admin approves it).
async fn register(
    admin: &Channel,
    admin_key: &SigningKey,
    role: covenant_core::statements::IdentityRole,
    subject: &str,
    signing: &SigningKey,
    certificate_sha256: Sha256Digest,
    scope: Option<Vec<String>>,
) -> Sha256Digest {
    let action = ActionKind::IssueIdentity {
        role,
        subject: subject.into(),
        signing_key: signing.public(),
        certificate_sha256,
        scope,
    };
    let body = signed(action, admin_key);
    AdminServiceClient::new(admin.clone()).act(pb::ActRequest { action: body.clone() }).await.unwrap();
    Sha256Digest::of(envelope::Envelope::parse(&body).unwrap().payload())
}

/// admin2 approves a proposal.
async fn approve(server: &Running, proposal: Sha256Digest) {
    let admin2 = server.channel(Some(&server.identity("admin2"))).await;
    let key = datadir::read_key(&server.identity("admin2").join("signing.key")).unwrap();
    let body = signed(ActionKind::Approve { proposal }, &key);
    AdminServiceClient::new(admin2).act(pb::ActRequest { action: body }).await.unwrap();
}

fn note(text: &str) -> ActionKind {
    ActionKind::Note { text: text.into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reads_the_ledger_and_appends_a_signed_note_with_a_proof() {
    let server = start("note").await;
    let admin1 = server.identity("admin1");
    let channel = server.channel(Some(&admin1)).await;
    let mut ledger = LedgerServiceClient::new(channel.clone());
    let cp = ledger.get_checkpoint(pb::GetCheckpointRequest {}).await.unwrap().into_inner();
    let verified = note::open_checkpoint(&cp.note, &server.log()).unwrap();
    assert_eq!(verified.checkpoint().size, 5, "the root, three identities and admin2's approval of the auditor's");

    let key = datadir::read_key(&admin1.join("signing.key")).unwrap();
    let mut admin = AdminServiceClient::new(channel);
    let done =
        admin.act(pb::ActRequest { action: signed(note("authority notified"), &key) }).await.unwrap().into_inner();
    assert_eq!(done.index, 5);
    let proof = TlogProof::parse(&done.inclusion.unwrap().text).unwrap();
    let entries =
        ledger.get_entries(pb::GetEntriesRequest { start: 5, end: 6, with_bodies: true }).await.unwrap().into_inner();
    let leaf = merkle::leaf_hash(&entries.entries[0].header);
    proof.verify(&leaf, &server.log()).unwrap();

    let chain = ledger.get_root_chain(pb::GetRootChainRequest { from_version: 1 }).await.unwrap().into_inner();
    assert_eq!(chain.roots, vec![std::fs::read(server.dir.join("root.json")).unwrap()]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_call_what() {
    let server = start("roles").await;
    let admin1 = server.channel(Some(&server.identity("admin1"))).await;
    let auditor = server.channel(Some(&server.identity("auditor"))).await;
    let admin2_key = datadir::read_key(&server.identity("admin2").join("signing.key")).unwrap();
    let admin1_key = datadir::read_key(&server.identity("admin1").join("signing.key")).unwrap();

    // An auditor reads, with bodies, but may not act.
    let mut l = LedgerServiceClient::new(auditor.clone());
    assert_eq!(
        l.get_entries(pb::GetEntriesRequest { start: 0, end: 4, with_bodies: true })
            .await
            .unwrap()
            .into_inner()
            .entries
            .len(),
        4
    );
    let err = AdminServiceClient::new(auditor.clone())
        .act(pb::ActRequest { action: signed(note("x"), &admin1_key) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");

    // An auditor scoped to one customer sees every header, and the bodies
    // of entries about that customer and its deployments only (and the
    // root, which everyone reads). A scope names customers: admin2 is a
    // person, in no auditor's scope (tests/tests/visibility.rs has the
    // whole table).
    let (scoped_key, dir, fingerprint) = request_certificate(&server, &admin1, "auditor", "aud-x").await;
    let auditor_role = covenant_core::statements::IdentityRole::Auditor;
    let scope = Some(vec!["admin2".into()]);
    let proposal = register(&admin1, &admin1_key, auditor_role, "aud-x", &scoped_key, fingerprint, scope).await;
    approve(&server, proposal).await;
    let scoped = LedgerServiceClient::new(server.channel(Some(&dir)).await)
        .get_entries(pb::GetEntriesRequest { start: 0, end: 7, with_bodies: true })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(scoped.len(), 7);
    // Entry 0 is the root and entry 5 registered aud-x itself (6 approved
    // it); entry 2 registered admin2, a person, not a customer.
    let with_body: Vec<u64> = scoped.iter().filter(|e| !e.body.is_empty()).map(|e| e.index).collect();
    assert_eq!(with_body, vec![0, 5]);

    // An admin signs with their own key, not a colleague's.
    let err = AdminServiceClient::new(admin1.clone())
        .act(pb::ActRequest { action: signed(note("x"), &admin2_key) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");

    // Malformed actions are InvalidArgument, and nothing is appended.
    let err = AdminServiceClient::new(admin1.clone())
        .act(pb::ActRequest { action: b"{not json".to_vec() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    let size = |cp: pb::SignedCheckpoint| note::Note::parse(&cp.note).map(|n| n.text().to_owned()).unwrap();
    // The served checkpoint is the newest cosigned one, which may trail the
    // last append by a witness round: wait (bounded) for it to cover the
    // seven entries, and see that it never covers more.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let before = loop {
        let text = size(
            LedgerServiceClient::new(admin1.clone())
                .get_checkpoint(pb::GetCheckpointRequest {})
                .await
                .unwrap()
                .into_inner(),
        );
        if text.contains("\n7\n") || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(before.contains("\n7\n"), "{before}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_certificate_and_a_foreign_ca_are_refused() {
    let server = start("nocert").await;
    let err = LedgerServiceClient::new(server.channel(None).await)
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");

    // A certificate from another CA naming a real holder: the handshake
    // refuses it, so the first call fails (`docs/style.md`, stack pitfall 6).
    let other = pki::Authority::create("someone else").unwrap();
    let forged = other.issue_client(covenant_core::statements::IdentityRole::Admin, "admin1").unwrap();
    let dir = server.dir.join("forged");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), forged.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), forged.key_pem).unwrap();
    let ca = std::fs::read_to_string(server.dir.join("ca.pem")).unwrap();
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name("localhost").identity(
        Identity::from_pem(std::fs::read(dir.join("cert.pem")).unwrap(), std::fs::read(dir.join("key.pem")).unwrap()),
    );
    let result = match Channel::from_shared(format!("https://{}", server.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
    {
        Ok(ch) => LedgerServiceClient::new(ch).get_checkpoint(pb::GetCheckpointRequest {}).await.map(|_| ()),
        Err(e) => Err(tonic::Status::unavailable(e.to_string())),
    };
    assert!(result.is_err(), "a certificate from another CA was accepted");

    // The server keeps serving.
    let ok = LedgerServiceClient::new(server.channel(Some(&server.identity("admin1"))).await)
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await;
    assert!(ok.is_ok());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused_at_once() {
    let server = start("revoked").await;
    let admin1 = server.channel(Some(&server.identity("admin1"))).await;
    let auditor = server.channel(Some(&server.identity("auditor"))).await;
    assert!(LedgerServiceClient::new(auditor.clone()).get_checkpoint(pb::GetCheckpointRequest {}).await.is_ok());
    let der = pki::pem_to_der(&std::fs::read_to_string(server.identity("auditor").join("cert.pem")).unwrap()).unwrap();
    let key = datadir::read_key(&server.identity("admin1").join("signing.key")).unwrap();
    let revoke = ActionKind::RevokeIdentity { certificate_sha256: Sha256Digest::of(&der), compromised_since: None };
    AdminServiceClient::new(admin1).act(pb::ActRequest { action: signed(revoke, &key) }).await.unwrap();
    // The same open connection is refused on its next call: the holder is
    // known, and no longer permitted (an unknown certificate is
    // UNAUTHENTICATED).
    let err = LedgerServiceClient::new(auditor).get_checkpoint(pb::GetCheckpointRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(err.message().contains("revoked"), "{err}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ranges_get_the_right_status() {
    let server = start("ranges").await;
    let mut l = LedgerServiceClient::new(server.channel(Some(&server.identity("auditor"))).await);
    let code = |r: Result<tonic::Response<pb::GetProofResponse>, tonic::Status>| r.unwrap_err().code();
    assert_eq!(
        code(l.get_inclusion_proof(pb::GetInclusionProofRequest { index: 4, tree_size: 4 }).await),
        Code::OutOfRange
    );
    assert_eq!(
        code(l.get_inclusion_proof(pb::GetInclusionProofRequest { index: 0, tree_size: 99 }).await),
        Code::OutOfRange
    );
    assert_eq!(
        code(l.get_consistency_proof(pb::GetConsistencyProofRequest { from_size: 2, to_size: 99 }).await),
        Code::OutOfRange
    );
    assert_eq!(
        code(l.get_consistency_proof(pb::GetConsistencyProofRequest { from_size: 0, to_size: 4 }).await),
        Code::InvalidArgument
    );
    let err = l.get_entries(pb::GetEntriesRequest { start: 0, end: 5000, with_bodies: false }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = l.get_entries(pb::GetEntriesRequest { start: 3, end: 9, with_bodies: false }).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    assert!(l.get_inclusion_proof(pb::GetInclusionProofRequest { index: 1, tree_size: 4 }).await.is_ok());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_from_a_certificate_request_works_once_registered_and_not_while_only_proposed() {
    let server = start("enroll").await;
    let admin1 = server.channel(Some(&server.identity("admin1"))).await;
    let admin_key = datadir::read_key(&server.identity("admin1").join("signing.key")).unwrap();
    // The engineer makes both keys; only the request travels.
    let (signing, dir, fingerprint) = request_certificate(&server, &admin1, "engineer", "eng-7").await;
    // Not yet registered: refused.
    let err = LedgerServiceClient::new(server.channel(Some(&dir)).await)
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    // Proposed by one admin's signed action: still refused, as the state
    // registers an engineer's identity only once a second admin approved it.
    let engineer = covenant_core::statements::IdentityRole::Engineer;
    let proposal = register(&admin1, &admin_key, engineer, "eng-7", &signing, fingerprint, None).await;
    let err = LedgerServiceClient::new(server.channel(Some(&dir)).await)
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    assert!(err.message().contains("not registered"), "{err}");
    // Approved by a second admin: accepted.
    approve(&server, proposal).await;
    assert!(
        LedgerServiceClient::new(server.channel(Some(&dir)).await)
            .get_checkpoint(pb::GetCheckpointRequest {})
            .await
            .is_ok()
    );
    server.stop().await;
}

/// Issue 16, item 17: GetConsistencyProof with from > to got OutOfRange; it
/// is a malformed request (InvalidArgument), while a size past the signed
/// tree stays OutOfRange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consistency_proof_from_a_larger_tree_to_a_smaller_is_invalid_argument() {
    let server = start("backwards").await;
    let mut l = LedgerServiceClient::new(server.channel(Some(&server.identity("auditor"))).await);
    for (from_size, to_size, code) in [
        (3, 2, Code::InvalidArgument),
        (99, 2, Code::InvalidArgument),
        (99, 98, Code::InvalidArgument),
        (2, 99, Code::OutOfRange),
    ] {
        let err = l.get_consistency_proof(pb::GetConsistencyProofRequest { from_size, to_size }).await.unwrap_err();
        assert_eq!(err.code(), code, "{from_size} -> {to_size}: {err:?}");
    }
    assert!(l.get_consistency_proof(pb::GetConsistencyProofRequest { from_size: 2, to_size: 4 }).await.is_ok());
    server.stop().await;
}

/// Bytes sent as they are, whatever the method expects.
#[derive(Debug, Clone, Default)]
struct RawBytes;

impl tonic::codec::Codec for RawBytes {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;

    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }

    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

impl tonic::codec::Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        prost::bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use prost::bytes::Buf as _;
        let bytes = buf.copy_to_bytes(buf.remaining());
        Ok(Some(bytes.to_vec()))
    }
}

/// Issue 16, item 17: a request body that is not valid protobuf got
/// Internal (the server's fault); it is the caller's: InvalidArgument.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_protobuf_is_invalid_argument() {
    let server = start("garbage").await;
    let channel = server.channel(Some(&server.identity("admin1"))).await;
    let garbage: [&[u8]; 3] = [
        &[0xff; 12],               // a key whose varint never ends
        &[0x08, 0xff, 0xff],       // field 1, a truncated varint
        &[0x0a, 0x40, 0x01, 0x02], // field 1, bytes longer than the message
    ];
    for path in [
        "/covenant.v1.LedgerService/GetEntries",
        "/covenant.v1.AdminService/Act",
        "/covenant.v1.UpdateService/CheckIn",
        "/covenant.v1.AttestationService/SubmitSignal",
    ] {
        for body in garbage {
            let mut grpc = tonic::client::Grpc::new(channel.clone());
            grpc.ready().await.unwrap();
            let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
            let err = grpc.unary(tonic::Request::new(body.to_vec()), path.clone(), RawBytes).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{path} {body:?}: {err:?}");
        }
    }
    // The server keeps serving.
    assert!(LedgerServiceClient::new(channel).get_checkpoint(pb::GetCheckpointRequest {}).await.is_ok());
    server.stop().await;
}

/// Issue 16, item 10: a WatchCheckpoints stream opened before a revocation
/// kept delivering. The next message after it is an error, and the stream
/// ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_opened_before_a_revocation_ends_with_it() {
    let server = start("watch-revoked").await;
    let admin1 = server.channel(Some(&server.identity("admin1"))).await;
    let auditor = server.channel(Some(&server.identity("auditor"))).await;
    let mut watch =
        LedgerServiceClient::new(auditor).watch_checkpoints(pb::GetCheckpointRequest {}).await.unwrap().into_inner();
    assert!(watch.message().await.unwrap().is_some(), "the current checkpoint first");
    let der = pki::pem_to_der(&std::fs::read_to_string(server.identity("auditor").join("cert.pem")).unwrap()).unwrap();
    let key = datadir::read_key(&server.identity("admin1").join("signing.key")).unwrap();
    let revoke = ActionKind::RevokeIdentity { certificate_sha256: Sha256Digest::of(&der), compromised_since: None };
    AdminServiceClient::new(admin1).act(pb::ActRequest { action: signed(revoke, &key) }).await.unwrap();
    // The revocation grew the ledger: the next message would be its
    // checkpoint, and is the refusal instead.
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), watch.message()).await.expect("an answer");
    let err = next.expect_err("no checkpoint after the revocation");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let after = tokio::time::timeout(std::time::Duration::from_secs(10), watch.message()).await.expect("the end");
    assert!(matches!(after, Ok(None) | Err(_)), "{after:?}");
    server.stop().await;
}

/// Issue 16, item 3: one certificate bursting far past its rate limit gets
/// ResourceExhausted; another certificate calling at the same time is
/// served throughout, and the first is served again once its bucket refills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_certificate_flooding_is_rate_limited_and_another_is_not() {
    use covenant_server::limits::RateLimit;
    let limit = RateLimit { per_second: 10.0, burst: 20.0 };
    let server = start_with("flood", |config| config.rate_limit = Some(limit)).await;
    let flooder = server.channel(Some(&server.identity("admin1"))).await;
    let bystander = server.channel(Some(&server.identity("auditor"))).await;
    let flood = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let mut c = LedgerServiceClient::new(flooder.clone());
            tasks.push(tokio::spawn(async move {
                let mut codes = Vec::new();
                for _ in 0..50 {
                    codes.push(match c.get_checkpoint(pb::GetCheckpointRequest {}).await {
                        Ok(_) => Code::Ok,
                        Err(e) => {
                            assert!(e.message().contains("requests per second"), "{e:?}");
                            e.code()
                        }
                    });
                }
                codes
            }));
        }
        let mut codes = Vec::new();
        for t in tasks {
            codes.extend(t.await.unwrap());
        }
        (codes, flooder)
    });
    // The bystander's calls, spread over the flood, within its own limit.
    let mut l = LedgerServiceClient::new(bystander);
    for _ in 0..15 {
        l.get_checkpoint(pb::GetCheckpointRequest {}).await.expect("the bystander is served");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (codes, flooder) = flood.await.unwrap();
    let ok = codes.iter().filter(|c| **c == Code::Ok).count();
    let exhausted = codes.iter().filter(|c| **c == Code::ResourceExhausted).count();
    assert_eq!(ok + exhausted, 400, "{codes:?}");
    // The burst, and what refilled while the flood lasted (well under 5 s).
    assert!((20..=70).contains(&ok), "{ok} of 400 served");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(LedgerServiceClient::new(flooder).get_checkpoint(pb::GetCheckpointRequest {}).await.is_ok());
    server.stop().await;
}

/// A raw TCP connection to the server from `source` (any 127.x.y.z address).
async fn raw_connection(server: &Running, source: [u8; 4]) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::from((source, 0))).unwrap();
    socket.connect(server.addr).await.unwrap()
}

/// How long until the server closes `stream` (reads EOF or a reset), up to
/// `limit`; `None` if it is still open then.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    limit: std::time::Duration,
) -> Option<std::time::Duration> {
    use tokio::io::AsyncReadExt as _;
    let start = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            // The server's handshake messages: keep reading.
            Ok(Ok(_)) => continue,
        }
    }
}

/// Issue 16, item 9: TLS connections that never finished their handshake
/// stayed open (60 s and more), until the file-descriptor limit failed new
/// calls. Now they are closed after the handshake timeout, and one address
/// holds at most its cap of unauthenticated connections (a new one evicts
/// its oldest), while other clients are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_finish_the_handshake_are_closed_and_capped_per_peer() {
    use tokio::io::AsyncWriteExt as _;
    let timeout = std::time::Duration::from_secs(2);
    let server = start_with("handshake", |config| {
        config.handshake_timeout = timeout;
        config.unauthenticated_per_peer = 4;
    })
    .await;
    let attacker = [127, 0, 0, 2];
    // Two connections that send nothing, two that send the start of a
    // ClientHello (a handshake record header promising 512 bytes, and 16).
    let mut held = Vec::new();
    for partial in [false, false, true, true] {
        let mut c = raw_connection(&server, attacker).await;
        if partial {
            c.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0, 0, 0, 0, 0])
                .await
                .unwrap();
        }
        held.push(c);
    }
    // A fifth from the same address is over the cap: the address's oldest
    // is closed at once to make room.
    let fifth = raw_connection(&server, attacker).await;
    let closed = closed_within(&mut held[0], timeout / 2).await;
    assert!(closed.is_some(), "the oldest connection of an address over its cap stayed open");
    held[0] = fifth;
    // Another client (from 127.0.0.1) is served meanwhile.
    let ok = LedgerServiceClient::new(server.channel(Some(&server.identity("auditor"))).await)
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await;
    assert!(ok.is_ok(), "{ok:?}");
    // The four are closed by the server once the handshake timeout passes.
    for c in &mut held {
        let closed = closed_within(c, timeout * 3).await.expect("closed by the server");
        assert!(closed <= timeout * 3, "{closed:?}");
    }
    // Their places are free again: a new connection from that address is
    // let in (open until its own handshake times out).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut again = raw_connection(&server, attacker).await;
    assert!(closed_within(&mut again, timeout / 2).await.is_none(), "refused after the others closed");
    server.stop().await;
}

/// Review finding F10: one auditor opened 4,230 WatchCheckpoints streams,
/// each a task and a queue on the server. An identity holds at most
/// `MAX_STREAMS_PER_IDENTITY` open at once, over all its connections;
/// another identity is not affected, and a slot comes back when its stream
/// is dropped by the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_identity_cannot_hold_more_than_its_share_of_streams() {
    use covenant_server::node::MAX_STREAMS_PER_IDENTITY;
    let server = start("streams").await;
    let auditor = server.channel(Some(&server.identity("auditor"))).await;
    let mut held = Vec::new();
    for _ in 0..MAX_STREAMS_PER_IDENTITY {
        let mut watch = LedgerServiceClient::new(auditor.clone())
            .watch_checkpoints(pb::GetCheckpointRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(watch.message().await.unwrap().is_some());
        held.push(watch);
    }
    // One more, even over another connection, is refused.
    let again = server.channel(Some(&server.identity("auditor"))).await;
    let refused = LedgerServiceClient::new(again.clone()).watch_checkpoints(pb::GetCheckpointRequest {}).await;
    let Err(status) = refused else { panic!("a stream past the cap was opened") };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains(&format!("holds {MAX_STREAMS_PER_IDENTITY} open streams")),
        "{}",
        status.message()
    );
    // Another identity still watches.
    let admin = server.channel(Some(&server.identity("admin1"))).await;
    let mut other =
        LedgerServiceClient::new(admin).watch_checkpoints(pb::GetCheckpointRequest {}).await.unwrap().into_inner();
    assert!(other.message().await.unwrap().is_some());
    // A stream the client drops gives its slot back (the server notices the
    // reset; bounded wait).
    drop(held.pop());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match LedgerServiceClient::new(again.clone()).watch_checkpoints(pb::GetCheckpointRequest {}).await {
            Ok(w) => {
                held.push(w.into_inner());
                break;
            }
            Err(s) if s.code() == Code::ResourceExhausted && std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(s) => panic!("the dropped stream's slot did not come back: {s:?}"),
        }
    }
    server.stop().await;
}

/// A TLS connection to the server with no client certificate (client
/// authentication is optional), negotiating HTTP/2 as a gRPC client would.
async fn tls_without_certificate(server: &Running) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject as _;
    let ca = std::fs::read_to_string(server.dir.join("ca.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.unwrap()
}

/// Review finding F5: a client with no certificate that completed the TLS
/// handshake and then stayed idle was never closed, and with no cap on the
/// connections of all addresses together, many addresses could take every
/// file descriptor. Now such a connection is closed after its grace (an
/// authenticated one idle as long is not), and past the global cap a new
/// connection is closed at once while an open authenticated one still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_without_a_certificate_is_closed_and_the_global_cap_holds() {
    let grace = std::time::Duration::from_secs(1);
    let server = start_with("certless", |config| {
        config.certless_grace = grace;
        config.max_connections = 3;
    })
    .await;
    let admin = server.channel(Some(&server.identity("admin1"))).await;
    LedgerServiceClient::new(admin.clone()).get_checkpoint(pb::GetCheckpointRequest {}).await.unwrap();
    let mut idle = tls_without_certificate(&server).await;
    let closed =
        closed_within(&mut idle, grace * 5).await.expect("an idle connection without a certificate stays open");
    assert!(closed >= grace.mul_f32(0.8), "closed after {closed:?}, before its grace");
    // The authenticated connection, idle as long, still works.
    LedgerServiceClient::new(admin.clone()).get_checkpoint(pb::GetCheckpointRequest {}).await.unwrap();
    // Of the cap of 3, a quarter (at least 1) is for unauthenticated
    // connections: a newer one evicts the older, from whatever address.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut older = raw_connection(&server, [127, 0, 0, 3]).await;
    let mut newer = raw_connection(&server, [127, 0, 0, 4]).await;
    let evicted = closed_within(&mut older, std::time::Duration::from_millis(500)).await;
    assert!(evicted.is_some(), "the older unauthenticated connection stayed open");
    assert!(closed_within(&mut newer, std::time::Duration::from_millis(300)).await.is_none(), "the newer was closed");
    // The rest (2) is for authenticated connections: the admin's and an
    // auditor's fill it, and a third is closed after its handshake.
    let mut auditor = LedgerServiceClient::new(server.channel(Some(&server.identity("auditor"))).await);
    auditor.get_checkpoint(pb::GetCheckpointRequest {}).await.unwrap();
    let third = async {
        let channel = server.try_channel(&server.identity("admin2")).await?;
        LedgerServiceClient::new(channel).get_checkpoint(pb::GetCheckpointRequest {}).await.map_err(|s| s.to_string())
    };
    assert!(third.await.is_err(), "a connection past the authenticated cap was served");
    LedgerServiceClient::new(admin).get_checkpoint(pb::GetCheckpointRequest {}).await.expect("the open one is served");
    auditor.get_checkpoint(pb::GetCheckpointRequest {}).await.expect("and the other");
    server.stop().await;
}

/// Sends `body` as the raw HTTP/2 body of a call to `path` (the test writes
/// the gRPC framing itself), with `grpc-encoding` if given, and returns the
/// status the server answered.
async fn raw_call(channel: &Channel, path: &str, body: Vec<u8>, encoding: Option<&str>) -> tonic::Status {
    use http_body_util::BodyExt as _;
    use tonic::codegen::Service as _;
    let mut request = tonic::codegen::http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(encoding) = encoding {
        request = request.header("grpc-encoding", encoding);
    }
    let request = request.body(tonic::body::Body::new(http_body_util::Full::new(bytes::Bytes::from(body)))).unwrap();
    let mut channel = channel.clone();
    std::future::poll_fn(|cx| channel.poll_ready(cx)).await.unwrap();
    let response = channel.call(request).await.unwrap();
    if let Some(status) = tonic::Status::from_header_map(response.headers()) {
        return status;
    }
    let trailers = response.into_body().collect().await.unwrap().trailers().cloned().unwrap();
    tonic::Status::from_header_map(&trailers).unwrap()
}

/// A gRPC frame: the compressed flag, a declared length, then `bytes`.
fn frame(flag: u8, declared: u32, bytes: &[u8]) -> Vec<u8> {
    let mut f = vec![flag];
    f.extend_from_slice(&declared.to_be_bytes());
    f.extend_from_slice(bytes);
    f
}

const CHECKPOINT: &str = "/covenant.v1.LedgerService/GetCheckpoint";

/// Review finding F9: a message flagged compressed when the call names no
/// `grpc-encoding` got Internal (tonic's frame decoder, before the codec).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_flag_without_grpc_encoding_is_invalid_argument() {
    let server = start("frame-compressed").await;
    let channel = server.channel(Some(&server.identity("admin1"))).await;
    let status = raw_call(&channel, CHECKPOINT, frame(1, 0, &[]), None).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("compressed-flag but no grpc-encoding"), "{}", status.message());
    // A flag that is neither 0 nor 1, likewise.
    let status = raw_call(&channel, CHECKPOINT, frame(7, 0, &[]), None).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(LedgerServiceClient::new(channel).get_checkpoint(pb::GetCheckpointRequest {}).await.is_ok());
    server.stop().await;
}

/// Review finding F9: a body that ends before the length its frame declares
/// got Internal ("Unexpected EOF").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_shorter_than_its_length_prefix_is_invalid_argument() {
    let server = start("frame-short").await;
    let channel = server.channel(Some(&server.identity("admin1"))).await;
    let status = raw_call(&channel, CHECKPOINT, frame(0, 100, &[0; 10]), None).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("Unexpected EOF"), "{}", status.message());
    // A body that ends inside the five-byte frame header, likewise.
    let status = raw_call(&channel, CHECKPOINT, vec![0, 0, 0], None).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(LedgerServiceClient::new(channel).get_checkpoint(pb::GetCheckpointRequest {}).await.is_ok());
    server.stop().await;
}

/// Review finding F9: a frame declaring 2 GiB got OutOfRange (tonic's check
/// against the service's limit, before a byte of it is read). It is the
/// sender's fault: InvalidArgument, naming the limit; nothing is buffered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_gib_declared_length_is_invalid_argument_naming_the_limit() {
    let server = start("frame-huge").await;
    let channel = server.channel(Some(&server.identity("admin1"))).await;
    let status = raw_call(&channel, CHECKPOINT, frame(0, 1 << 31, &[0; 16]), None).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let limit = covenant_server::node::MAX_LEDGER_REQUEST;
    assert!(status.message().contains(&format!("the limit is: {limit} bytes")), "{}", status.message());
    assert!(LedgerServiceClient::new(channel).get_checkpoint(pb::GetCheckpointRequest {}).await.is_ok());
    server.stop().await;
}

/// Review finding F9: calls without a certificate were decoded before
/// authentication and not rate limited. Now they are refused before their
/// message is read (so a malformed one is Unauthenticated, not a decode
/// error), and past the per-address rate they get ResourceExhausted; a
/// client with a certificate from the same address is served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_certificate_are_refused_before_decoding_and_rate_limited_per_address() {
    use covenant_server::node::CERTLESS_RATE_LIMIT;
    let server = start("certless-rate").await;
    let anonymous = server.channel(None).await;
    let status = raw_call(&anonymous, CHECKPOINT, frame(0, 1 << 31, &[0; 16]), None).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = raw_call(&anonymous, CHECKPOINT, frame(1, 0, &[]), None).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let admin = server.channel(Some(&server.identity("admin1"))).await;
    let mut codes = Vec::new();
    for _ in 0..(CERTLESS_RATE_LIMIT.burst as usize * 2) {
        let call = LedgerServiceClient::new(anonymous.clone()).get_checkpoint(pb::GetCheckpointRequest {}).await;
        let status = call.expect_err("no certificate, no answer");
        if status.code() == Code::ResourceExhausted {
            assert!(status.message().contains("without a client certificate from this address"), "{status:?}");
        } else {
            assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        }
        codes.push(status.code());
        LedgerServiceClient::new(admin.clone()).get_checkpoint(pb::GetCheckpointRequest {}).await.expect("served");
    }
    let refused = codes.iter().filter(|c| **c == Code::ResourceExhausted).count();
    // The burst (less the two above) and what refilled while this ran.
    assert!(refused >= CERTLESS_RATE_LIMIT.burst as usize / 2, "{refused} of {} rate limited: {codes:?}", codes.len());
    server.stop().await;
}
