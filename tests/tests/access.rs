//! The access matrix: every RPC of every service the server runs, each with
//! a request that is valid in itself, called as every kind of caller.
//! Exactly the cells marked allowed answer OK; the others are refused with
//! Unauthenticated or PermissionDenied (a certificate from another CA is
//! refused by the TLS handshake, before any RPC). This table is the
//! documentation of who may do what.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use covenant_cli::admin::{Admin, IdentityCmd};
use covenant_core::digest::{Sha256Digest, Timestamp};
use covenant_core::envelope;
use covenant_core::statements::*;
use covenant_proto::v1 as pb;
use covenant_proto::v1::admin_service_client::AdminServiceClient;
use covenant_proto::v1::attestation_service_client::AttestationServiceClient;
use covenant_proto::v1::field_service_client::FieldServiceClient;
use covenant_proto::v1::ledger_service_client::LedgerServiceClient;
use covenant_proto::v1::query_service_client::QueryServiceClient;
use covenant_proto::v1::update_service_client::UpdateServiceClient;
use covenant_tests::*;
use tonic::Code;
use tonic::transport::Channel;

const CALLERS: [&str; 12] = [
    "admin",
    "customer (own)",
    "customer (other)",
    "engineer",
    "auditor (full)",
    "auditor (other scope)",
    "deployment (own)",
    "deployment (other)",
    "no certificate",
    "another CA",
    "revoked",
    "reporter",
];

/// Who may call what: the allowed callers of each RPC (by index into
/// [`CALLERS`]). "own" is min-x and its deployment lim-07, the subject of
/// every request; "other" is min-y and lim-08.
const ALLOWED: [(&str, &[usize]); 28] = [
    ("LedgerService.GetCheckpoint", &[0, 1, 2, 3, 4, 5, 6, 7, 11]),
    ("LedgerService.GetEntries", &[0, 1, 2, 3, 4, 5, 6, 7, 11]),
    ("LedgerService.GetInclusionProof", &[0, 1, 2, 3, 4, 5, 6, 7, 11]),
    ("LedgerService.GetConsistencyProof", &[0, 1, 2, 3, 4, 5, 6, 7, 11]),
    ("LedgerService.GetRootChain", &[0, 1, 2, 3, 4, 5, 6, 7, 11]),
    ("LedgerService.WatchCheckpoints", &[0, 1, 2, 3, 4, 5, 6, 7, 11]),
    // Each caller gets the keys of its own subjects (tests/tests/visibility.rs).
    ("LedgerService.GetSubjectKeys", &[0, 1, 2, 3, 4, 5, 6, 7, 11]),
    ("AdminService.Act", &[0]),
    ("AdminService.Publish", &[0]),
    ("AdminService.IssueIdentity", &[0]),
    ("UpdateService.CheckIn", &[6]),
    ("UpdateService.Download", &[6]),
    ("UpdateService.Report", &[6]),
    // An engineer carries lim-07's files (docs/offline.md); no one else.
    ("FieldService.Fetch", &[3]),
    ("FieldService.FetchArtifact", &[3]),
    ("FieldService.Return", &[3]),
    ("AttestationService.SubmitAttestation", &[1]),
    ("AttestationService.SubmitVerification", &[3]),
    // The auditor of min-y's scope may not open a case against min-x; an
    // outside reporter may signal about anyone.
    ("AttestationService.SubmitSignal", &[3, 4, 11]),
    ("AttestationService.GetVerdict", &[0, 1, 4, 6]),
    // The read side: rows scoped as bodies are (which rows each caller gets
    // is tests/tests/queries.rs). Engineers are refused the fleet; only
    // admins and auditors list proposals; customers and devices never list
    // cases; every caller lists releases (their bodies are public to all).
    ("QueryService.ListDeployments", &[0, 1, 2, 4, 5, 6, 7]),
    ("QueryService.ListProposals", &[0, 4, 5]),
    ("QueryService.ListCases", &[0, 3, 4, 5, 11]),
    ("QueryService.ListReleases", &[0, 1, 2, 3, 4, 5, 6, 7, 11]),
    // The history of lim-07: those entitled to it.
    ("QueryService.GetHistory", &[0, 1, 4, 6]),
    // The standard services (issue #21): any certificate of this CA, even a
    // revoked one, since they say nothing about the ledger; never without.
    ("grpc.health.v1.Health.Check", &[0, 1, 2, 3, 4, 5, 6, 7, 10, 11]),
    ("grpc.health.v1.Health.Watch", &[0, 1, 2, 3, 4, 5, 6, 7, 10, 11]),
    ("grpc.reflection.v1.ServerReflection.ServerReflectionInfo", &[0, 1, 2, 3, 4, 5, 6, 7, 10, 11]),
];

struct World {
    s: Running,
    c: Cast,
    /// Identity folders by caller index (None: no certificate).
    folders: Vec<Option<PathBuf>>,
    grant_index: u64,
}

async fn world() -> World {
    world_named("access").await
}

/// The world under a data directory of its own (tests run side by side).
async fn world_named(name: &str) -> World {
    let s = Running::start(name).await;
    let c = cast_with(&s, "").await;
    let a1 = s.admin(1);
    min_y(&s).await;
    let other_customer = person(&s, "customer", "min-y").await;
    let other_device = person(&s, "deployment", "lim-08").await;
    // An auditor whose scope is min-y only.
    let scoped = scoped_auditor(&s, "auditor-y", &["min-y"]).await;
    // A certificate from another CA, naming admin1.
    let forged = s.dir.join("people/forged");
    std::fs::create_dir_all(&forged).unwrap();
    let other_ca = covenant_server::pki::Authority::create("someone else").unwrap();
    let cert = other_ca.issue_client(IdentityRole::Admin, "admin1").unwrap();
    std::fs::write(forged.join("cert.pem"), cert.cert_pem).unwrap();
    std::fs::write(forged.join("key.pem"), cert.key_pem).unwrap();
    std::fs::copy(s.dir.join("ca.pem"), forged.join("ca.pem")).unwrap();
    std::fs::copy(s.dir.join("identities/admin1/signing.key"), forged.join("signing.key")).unwrap();
    // A revoked engineer.
    let revoked = person(&s, "engineer", "eng-r").await;
    let der = covenant_server::pki::pem_to_der(&std::fs::read_to_string(revoked.join("cert.pem")).unwrap()).unwrap();
    let fingerprint = Sha256Digest::of(&der).to_string();
    admin(&a1, Admin::Identity(IdentityCmd::Revoke { fingerprint, compromised_since: None })).await;
    // An outside party that reports misuse (an NGO).
    let reporter = person(&s, "reporter", "ngo-1").await;
    // lim-07 holds a grant; min-x's attestation is recorded.
    let r = check_in(&s, &c.device, "access").await;
    let grant_index = r.decision.as_ref().unwrap().index;
    let mut att = AttestationServiceClient::new(s.conn(&c.customer).channel().await.unwrap());
    att.submit_attestation(pb::SubmitRequest { envelope: attestation(&c, 1) }).await.unwrap();
    let folders = vec![
        Some(s.dir.join("identities/admin1")),
        Some(c.customer.clone()),
        Some(other_customer),
        Some(c.engineer.clone()),
        Some(s.dir.join("identities/auditor")),
        Some(scoped),
        Some(c.device.clone()),
        Some(other_device),
        None,
        Some(forged),
        Some(revoked),
        Some(reporter),
    ];
    World { s, c, folders, grant_index }
}

/// min-x's attestation for lim-07, made distinct by `n`.
fn attestation(c: &Cast, n: i64) -> Vec<u8> {
    let file: covenant_cli::attest::AttestationFile =
        covenant_cli::admin::read_structured(&write_attestation(&c.customer)).unwrap();
    let mut a = file.attestation;
    a.valid_until = a.valid_until.plus_seconds(n);
    let statement = InTotoStatement::new(vec![deployment_subject("lim-07")], a);
    envelope::sign(&statement, &[&key_of(&c.customer)])
}

async fn channel(w: &World, caller: usize) -> Option<Channel> {
    match &w.folders[caller] {
        Some(folder) => w.s.conn(folder).channel().await.ok(),
        None => {
            use tonic::transport::{Certificate, ClientTlsConfig};
            let ca = std::fs::read(w.s.dir.join("ca.pem")).unwrap();
            let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name("localhost");
            Channel::from_shared(w.s.url.clone()).unwrap().tls_config(tls).unwrap().connect().await.ok()
        }
    }
}

/// The caller's own signing key's folder (admin1's for callers without one).
fn signer(w: &World, caller: usize) -> &Path {
    match &w.folders[caller] {
        Some(f) if f.join("signing.key").exists() => f,
        _ => w.folders[0].as_deref().unwrap(),
    }
}

async fn call(w: &World, rpc: &str, caller: usize, n: usize) -> Result<(), Code> {
    let Some(ch) = channel(w, caller).await else { return Err(Code::Unavailable) };
    let status = |e: tonic::Status| e.code();
    let now = now();
    match rpc {
        "LedgerService.GetCheckpoint" => {
            LedgerServiceClient::new(ch).get_checkpoint(pb::GetCheckpointRequest {}).await.map(|_| ()).map_err(status)
        }
        "LedgerService.GetEntries" => LedgerServiceClient::new(ch)
            .get_entries(pb::GetEntriesRequest { start: 0, end: 2, with_bodies: true })
            .await
            .map(|_| ())
            .map_err(status),
        "LedgerService.GetInclusionProof" => LedgerServiceClient::new(ch)
            .get_inclusion_proof(pb::GetInclusionProofRequest { index: 1, tree_size: 4 })
            .await
            .map(|_| ())
            .map_err(status),
        "LedgerService.GetConsistencyProof" => LedgerServiceClient::new(ch)
            .get_consistency_proof(pb::GetConsistencyProofRequest { from_size: 2, to_size: 4 })
            .await
            .map(|_| ())
            .map_err(status),
        "LedgerService.GetRootChain" => LedgerServiceClient::new(ch)
            .get_root_chain(pb::GetRootChainRequest { from_version: 1 })
            .await
            .map(|_| ())
            .map_err(status),
        "LedgerService.WatchCheckpoints" => {
            let mut stream = LedgerServiceClient::new(ch)
                .watch_checkpoints(pb::GetCheckpointRequest {})
                .await
                .map_err(status)?
                .into_inner();
            stream.message().await.map(|_| ()).map_err(status)
        }
        "LedgerService.GetSubjectKeys" => LedgerServiceClient::new(ch)
            .get_subject_keys(pb::GetSubjectKeysRequest {})
            .await
            .map(|_| ())
            .map_err(status),
        "AdminService.Act" => {
            let action = AdminAction {
                type_tag: ActionTag,
                schema: SchemaV1,
                action: ActionKind::Note { text: format!("note {n}") },
                why: "access matrix".into(),
                evidence: vec![],
                issued_at: now,
            };
            let body = envelope::sign(&action, &[&key_of(signer(w, caller))]);
            AdminServiceClient::new(ch).act(pb::ActRequest { action: body }).await.map(|_| ()).map_err(status)
        }
        "AdminService.Publish" => {
            let bytes = format!("artifact {n}").into_bytes();
            let version = format!("5.{n}.0");
            let manifest = ReleaseManifest {
                type_tag: ReleaseTag,
                schema: SchemaV1,
                product: "lim".into(),
                version: version.parse().unwrap(),
                class: ReleaseClass::Capability,
                capability_baseline: version.parse().unwrap(),
                artifact: Artifact { name: "a".into(), sha256: Sha256Digest::of(&bytes), size: bytes.len() as u64 },
                expected_installed_digests: Default::default(),
                released_at: now,
            };
            let keys: Vec<_> = ["release-1", "release-2"]
                .iter()
                .map(|k| covenant_server::datadir::read_key(&w.s.dir.join(format!("keys/{k}.key"))).unwrap())
                .collect();
            let body = envelope::sign(&manifest, &keys.iter().collect::<Vec<_>>());
            let chunks = vec![pb::PublishChunk { manifest: body, data: bytes }];
            AdminServiceClient::new(ch).publish(tokio_stream::iter(chunks)).await.map(|_| ()).map_err(status)
        }
        "AdminService.IssueIdentity" => {
            let dir = w.s.dir.join(format!("people/csr-{n}"));
            covenant_cli::keys::new(&dir, false, true).unwrap();
            let csr = std::fs::read(dir.join("request.csr")).unwrap();
            let req = pb::IssueIdentityRequest { csr, role: "engineer".into(), subject: format!("new-{n}") };
            AdminServiceClient::new(ch).issue_identity(req).await.map(|_| ()).map_err(status)
        }
        "UpdateService.CheckIn" => {
            let (body, _) = checkin_body(&w.c.device, "1.0.0", None, &format!("matrix {n}"));
            UpdateServiceClient::new(ch)
                .check_in(pb::CheckInRequest { checkin: body })
                .await
                .map(|_| ())
                .map_err(status)
        }
        "UpdateService.Download" => {
            // The release lim-07 holds a grant of now (earlier rows published more).
            let granted = decision_of(&check_in(&w.s, &w.c.device, &format!("download {n}")).await).release.unwrap();
            let req = pb::DownloadRequest { release_digest: granted.0.to_vec(), offset: 0 };
            let mut stream = UpdateServiceClient::new(ch).download(req).await.map_err(status)?.into_inner();
            stream.message().await.map(|_| ()).map_err(status)
        }
        "UpdateService.Report" => UpdateServiceClient::new(ch)
            .report(pb::ReportRequest { report: report_body(w, now) })
            .await
            .map(|_| ())
            .map_err(status),
        "FieldService.Fetch" => {
            let (body, _) = checkin_body(&w.c.device, "1.0.0", None, &format!("matrix {n}"));
            FieldServiceClient::new(ch).fetch(pb::FieldFetchRequest { checkin: body }).await.map(|_| ()).map_err(status)
        }
        "FieldService.FetchArtifact" => {
            let granted = decision_of(&check_in(&w.s, &w.c.device, &format!("carry {n}")).await).release.unwrap();
            let req =
                pb::FieldArtifactRequest { deployment: "lim-07".into(), release_digest: granted.0.to_vec(), offset: 0 };
            let mut stream = FieldServiceClient::new(ch).fetch_artifact(req).await.map_err(status)?.into_inner();
            stream.message().await.map(|_| ()).map_err(status)
        }
        // The report the device sent (UpdateService.Report), carried again:
        // answered with the entry that recorded it.
        "FieldService.Return" => FieldServiceClient::new(ch)
            .r#return(pb::ReportRequest { report: report_body(w, now) })
            .await
            .map(|_| ())
            .map_err(status),
        "AttestationService.SubmitAttestation" => AttestationServiceClient::new(ch)
            .submit_attestation(pb::SubmitRequest { envelope: attestation(&w.c, 100 + n as i64) })
            .await
            .map(|_| ())
            .map_err(status),
        "AttestationService.SubmitVerification" => {
            let config = Sha256Digest::of(format!("config {n}").as_bytes());
            let body = verification(&attestation(&w.c, 1), config, &w.c.engineer);
            AttestationServiceClient::new(ch)
                .submit_verification(pb::SubmitRequest { envelope: body })
                .await
                .map(|_| ())
                .map_err(status)
        }
        "AttestationService.SubmitSignal" => {
            let signal = MisuseSignal {
                type_tag: SignalTag,
                schema: SchemaV1,
                about: SignalAbout { customer: "min-x".into(), deployment: Some("lim-07".into()) },
                source: SignalSource::Auditor,
                summary: format!("finding {n}"),
                evidence: vec![],
                reported_at: now,
            };
            let body = envelope::sign(&signal, &[&key_of(signer(w, caller))]);
            AttestationServiceClient::new(ch)
                .submit_signal(pb::SubmitRequest { envelope: body })
                .await
                .map(|_| ())
                .map_err(status)
        }
        "AttestationService.GetVerdict" => AttestationServiceClient::new(ch)
            .get_verdict(pb::GetVerdictRequest { deployment: "lim-07".into() })
            .await
            .map(|_| ())
            .map_err(status),
        "QueryService.ListDeployments" => QueryServiceClient::new(ch)
            .list_deployments(pb::ListDeploymentsRequest::default())
            .await
            .map(|_| ())
            .map_err(status),
        "QueryService.ListProposals" => QueryServiceClient::new(ch)
            .list_proposals(pb::ListProposalsRequest::default())
            .await
            .map(|_| ())
            .map_err(status),
        "QueryService.ListCases" => {
            QueryServiceClient::new(ch).list_cases(pb::ListCasesRequest::default()).await.map(|_| ()).map_err(status)
        }
        "QueryService.ListReleases" => QueryServiceClient::new(ch)
            .list_releases(pb::ListReleasesRequest::default())
            .await
            .map(|_| ())
            .map_err(status),
        "QueryService.GetHistory" => QueryServiceClient::new(ch)
            .get_history(pb::GetHistoryRequest { subject: "lim-07".into(), ..Default::default() })
            .await
            .map(|_| ())
            .map_err(status),
        "grpc.health.v1.Health.Check" => tonic_health::pb::health_client::HealthClient::new(ch)
            .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
            .await
            .map(|_| ())
            .map_err(status),
        "grpc.health.v1.Health.Watch" => {
            let request = tonic_health::pb::HealthCheckRequest { service: "covenant.v1.UpdateService".into() };
            let mut stream = tonic_health::pb::health_client::HealthClient::new(ch)
                .watch(request)
                .await
                .map_err(status)?
                .into_inner();
            stream.message().await.map_err(status)?.map(|_| ()).ok_or(Code::Unknown)
        }
        "grpc.reflection.v1.ServerReflection.ServerReflectionInfo" => {
            use tonic_reflection::pb::v1::{
                ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
                server_reflection_request::MessageRequest,
            };
            let ask = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut stream = ServerReflectionClient::new(ch)
                .server_reflection_info(tokio_stream::iter([ask]))
                .await
                .map_err(status)?
                .into_inner();
            stream.message().await.map_err(status)?.map(|_| ()).ok_or(Code::Unknown)
        }
        other => panic!("no request for {other}"),
    }
}

/// lim-07's install report of its grant, signed by the device: the same
/// bytes for every call (the first fixes its time).
fn report_body(w: &World, now: Timestamp) -> Vec<u8> {
    static BODY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BODY.get_or_init(|| {
        let report = InstallReport {
            type_tag: ReportTag,
            schema: SchemaV1,
            deployment: "lim-07".into(),
            grant_index: w.grant_index,
            outcome: InstallOutcome::Installed,
            from_version: "1.0.0".parse().unwrap(),
            to_version: "1.1.0".parse().unwrap(),
            last_checkpoint: CheckpointRef { size: w.grant_index + 1, root_hash: Sha256Digest::of(b"r") },
            time: now,
        };
        envelope::sign(&report, &[&key_of(&w.c.device)])
    })
    .clone()
}

/// Every RPC of every service the server runs has its row: a new RPC
/// without one fails here, not silently outside the matrix. (WitnessService
/// is served by witnesses, not by this server.)
#[test]
fn the_matrix_has_a_row_for_every_rpc_the_server_serves() {
    let proto = include_str!("../../proto/proto/covenant/v1/covenant.proto");
    let mut service = "";
    let mut missing = Vec::new();
    for line in proto.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("service ") {
            service = rest.split_whitespace().next().unwrap();
        } else if let Some(rest) = line.strip_prefix("rpc ") {
            let rpc = format!("{service}.{}", rest.split('(').next().unwrap());
            if service != "WitnessService" && !ALLOWED.iter().any(|(name, _)| *name == rpc) {
                missing.push(rpc);
            }
        }
    }
    assert!(missing.is_empty(), "RPCs without a row in ALLOWED: {missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_the_allowed_cells_answer() {
    let w = world().await;
    let mut wrong = Vec::new();
    let mut n = 0;
    for (rpc, allowed) in ALLOWED {
        for (caller, who) in CALLERS.iter().enumerate() {
            n += 1;
            if *who == "no certificate" {
                // Certless calls share a rate limit (5 a second, a burst of
                // 20); more rows than the burst are paced under it so each
                // cell shows its own refusal, not the limit's.
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            let got = call(&w, rpc, caller, n).await;
            let want_ok = allowed.contains(&caller);
            let fine = match (&got, want_ok) {
                (Ok(()), true) => true,
                // Refused by the TLS handshake: no RPC ran.
                (Err(_), false) if *who == "another CA" => true,
                // Calls without a certificate are also rate-limited as a
                // whole (the certificate gate): past the limit they are
                // refused as exhausted, still before any RPC runs.
                (Err(Code::ResourceExhausted), false) if *who == "no certificate" => true,
                (Err(Code::Unauthenticated | Code::PermissionDenied), false) => true,
                _ => false,
            };
            if !fine {
                wrong.push(format!("{rpc} as {who}: got {got:?}, want {}", if want_ok { "OK" } else { "refused" }));
            }
        }
    }
    assert!(wrong.is_empty(), "cells that differ from the table:\n{}", wrong.join("\n"));
    // The server kept serving.
    assert!(call(&w, "LedgerService.GetCheckpoint", 0, 0).await.is_ok());
    w.s.stop().await;
}

/// Signs `action` as admin `n` and sends it with admin `n`'s certificate.
async fn act_as(w: &World, n: u8, action: ActionKind) -> Result<Vec<u8>, tonic::Status> {
    let folder = w.s.dir.join(format!("identities/admin{n}"));
    let action = AdminAction {
        type_tag: ActionTag,
        schema: SchemaV1,
        action,
        why: "refusal codes".into(),
        evidence: vec![],
        issued_at: now(),
    };
    let body = envelope::sign(&action, &[&key_of(&folder)]);
    let mut client = AdminServiceClient::new(w.s.admin(n).channel().await.unwrap());
    client.act(pb::ActRequest { action: body.clone() }).await.map(|_| body)
}

/// How an approval names a proposal: the SHA-256 of its payload.
fn proposal_of(body: &[u8]) -> Sha256Digest {
    Sha256Digest::of(envelope::Envelope::parse(body).unwrap().payload())
}

fn assert_refused(what: &str, got: Result<impl std::fmt::Debug, tonic::Status>, code: Code, words: &str) {
    let e = got.expect_err(what);
    assert_eq!(e.code(), code, "{what}: {}", e.message());
    assert!(e.message().contains(words), "{what}: {:?} lacks {words:?}", e.message());
}

/// Every refusal was INVALID_ARGUMENT before refusals had causes; now the
/// cause reaches the caller as the code, with the same words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refusal_of_the_ledger_answers_with_the_code_of_its_cause() {
    let w = world_named("access-refusals").await;
    let mut customer = AttestationServiceClient::new(w.s.conn(&w.c.customer).channel().await.unwrap());
    let mut engineer = AttestationServiceClient::new(w.s.conn(&w.c.engineer).channel().await.unwrap());

    // A body signed by a key no one registered: PERMISSION_DENIED (the
    // caller's certificate is valid; a certificate no one registered is
    // UNAUTHENTICATED, server/tests/mtls.rs).
    let outsider = covenant_core::keys::SigningKey::from_seed(&[91; 32]);
    let file: covenant_cli::attest::AttestationFile =
        covenant_cli::admin::read_structured(&write_attestation(&w.c.customer)).unwrap();
    let statement = InTotoStatement::new(vec![deployment_subject("lim-07")], file.attestation.clone());
    let unregistered = envelope::sign(&statement, &[&outsider]);
    let got = customer.submit_attestation(pb::SubmitRequest { envelope: unregistered }).await;
    assert_refused("a key no one registered", got, Code::PermissionDenied, "signed by a key no one registered");

    // A body signed by a revoked key, relayed by a registered engineer:
    // PERMISSION_DENIED.
    let revoked = w.folders[10].clone().unwrap();
    let by_revoked = verification(&attestation(&w.c, 1), Sha256Digest::of(b"revoked"), &revoked);
    let got = engineer.submit_verification(pb::SubmitRequest { envelope: by_revoked }).await;
    assert_refused("a revoked key", got, Code::PermissionDenied, "signed by a revoked key");

    // A proposal overtaken by what it would change: FAILED_PRECONDITION.
    let to_l2 = ActionKind::ProposeSuspension {
        target: SuspensionTarget::Deployment("lim-08".into()),
        level: SuspensionLevel::L2,
    };
    let proposal = proposal_of(&act_as(&w, 1, to_l2).await.unwrap());
    let to_l1 = ActionKind::ProposeSuspension {
        target: SuspensionTarget::Deployment("lim-08".into()),
        level: SuspensionLevel::L1,
    };
    act_as(&w, 1, to_l1).await.unwrap();
    let got = act_as(&w, 2, ActionKind::Approve { proposal }).await;
    assert_refused("a stale proposal", got, Code::FailedPrecondition, "the suspension changed since this proposal");

    // A second approval by the admin who made the proposal: ALREADY_EXISTS.
    let waiver = ActionKind::ProposeWaiver {
        deployment: "lim-08".into(),
        condition: "field_verified".into(),
        until: now().plus_seconds(86_400),
    };
    let proposal = proposal_of(&act_as(&w, 1, waiver).await.unwrap());
    let got = act_as(&w, 1, ActionKind::Approve { proposal }).await;
    assert_refused("the same admin twice", got, Code::AlreadyExists, "one admin counts once");

    // A proposal that does not exist: NOT_FOUND.
    let got = act_as(&w, 2, ActionKind::Approve { proposal: Sha256Digest::of(b"no such proposal") }).await;
    assert_refused("no such proposal", got, Code::NotFound, "no proposal has this digest");

    // A body that does not parse: INVALID_ARGUMENT, in the words of the parser.
    let malformed = {
        let mut e = envelope::Envelope::new("application/vnd.in-toto+json", b"{\"predicateType\":".to_vec());
        e.sign(&key_of(&w.c.customer));
        e.to_bytes()
    };
    let got = customer.submit_attestation(pb::SubmitRequest { envelope: malformed }).await;
    assert_refused("a malformed body", got, Code::InvalidArgument, "the entry's body is refused");
    w.s.stop().await;
}

/// A report the ledger refuses for good answers with a code the agent
/// drops (agent/src/net.rs): one signed by a key no one registered once
/// answered UNAUTHENTICATED, which the agent kept and resent for ever,
/// blocking the reports after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_signed_by_an_unregistered_key_is_answered_with_a_code_the_agent_drops() {
    let w = world_named("access-report-unregistered").await;
    let outsider = covenant_core::keys::SigningKey::from_seed(&[92; 32]);
    let report = InstallReport {
        type_tag: ReportTag,
        schema: SchemaV1,
        deployment: "lim-07".into(),
        grant_index: w.grant_index,
        outcome: InstallOutcome::Failed,
        from_version: "1.0.0".parse().unwrap(),
        to_version: "1.1.0".parse().unwrap(),
        last_checkpoint: CheckpointRef { size: 1, root_hash: Sha256Digest::of(b"x") },
        time: now(),
    };
    let body = envelope::sign(&report, &[&outsider]);
    let mut c = UpdateServiceClient::new(w.s.conn(&w.c.device).channel().await.unwrap());
    let e = c.report(pb::ReportRequest { report: body }).await.unwrap_err();
    let dropped =
        [Code::InvalidArgument, Code::NotFound, Code::AlreadyExists, Code::PermissionDenied, Code::FailedPrecondition];
    assert!(dropped.contains(&e.code()), "{:?} {}", e.code(), e.message());
    w.s.stop().await;
}

/// A check-in naming another product is refused with the code of its
/// cause (Precondition) by the handler's first evaluation too, as by the
/// sequencer's (it once answered INVALID_ARGUMENT there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_in_of_another_product_answers_failed_precondition() {
    let w = world_named("access-wrong-product").await;
    let c = CheckIn {
        type_tag: CheckInTag,
        schema: SchemaV1,
        deployment: "lim-07".into(),
        product: "other".into(),
        installed_version: "1.0.0".parse().unwrap(),
        installed_baseline: "1.0.0".parse().unwrap(),
        software_digests: Default::default(),
        configuration_digest: Sha256Digest::of(b"verified configuration"),
        last_checkpoint: None,
        nonce: Sha256Digest::of(b"wrong product"),
        time: now(),
    };
    let body = envelope::sign(&c, &[&key_of(&w.c.device)]);
    let mut client = UpdateServiceClient::new(w.s.conn(&w.c.device).channel().await.unwrap());
    let got = client.check_in(pb::CheckInRequest { checkin: body }).await;
    assert_refused("another product", got, Code::FailedPrecondition, "runs lim, not other");
    w.s.stop().await;
}
