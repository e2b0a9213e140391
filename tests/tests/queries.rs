//! The read side's rows, role by role, over mutual TLS: for each query
//! (deployments, proposals, cases, releases, a subject's history) exactly
//! the rows the caller may see come back, and nothing a body rule hides
//! (a case's reporter, a signal's words) leaks through a row. Who may call
//! each query at all is the access matrix (`tests/tests/access.rs`).
//!
//! The world: customers min-x (deployment lim-07) and min-y (lim-08); a
//! pending suspension proposal for each; a case on each (min-x's reported
//! by the engineer, min-y's by the full-scope auditor) and one on min-x by
//! an outside reporter (ngo-1); releases 1.0.0 and
//! 1.1.0 of lim, which both deployments were provisioned with (1.0.0).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use covenant_cli::admin::Admin;
use covenant_core::envelope;
use covenant_core::statements::*;
use covenant_proto::v1 as pb;
use covenant_proto::v1::attestation_service_client::AttestationServiceClient;
use covenant_proto::v1::query_service_client::QueryServiceClient;
use covenant_tests::*;
use tonic::Code;

struct Who {
    name: &'static str,
    folder: PathBuf,
}

async fn query(s: &Running, folder: &Path) -> QueryServiceClient<tonic::transport::Channel> {
    QueryServiceClient::new(s.conn(folder).channel().await.unwrap())
}

async fn signal(s: &Running, reporter: &Path, customer: &str, deployment: Option<&str>, summary: &str) -> String {
    let signal = MisuseSignal {
        type_tag: SignalTag,
        schema: SchemaV1,
        about: SignalAbout { customer: customer.into(), deployment: deployment.map(Into::into) },
        source: SignalSource::FieldEngineer,
        summary: summary.into(),
        evidence: vec![],
        reported_at: now(),
    };
    let body = envelope::sign(&signal, &[&key_of(reporter)]);
    let mut c = AttestationServiceClient::new(s.conn(reporter).channel().await.unwrap());
    let index = c.submit_signal(pb::SubmitRequest { envelope: body }).await.unwrap().into_inner().index;
    format!("case-{index}")
}

fn ids<'a>(rows: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    rows.into_iter().map(str::to_owned).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_query_answers_each_role_exactly_its_rows() {
    let s = Running::start("queries").await;
    let c = cast(&s).await;
    let a1 = s.admin(1);
    min_y(&s).await;
    let customer_y = person(&s, "customer", "min-y").await;
    let device_y = person(&s, "deployment", "lim-08").await;
    let auditor_y = scoped_auditor(&s, "auditor-y", &["min-y"]).await;
    let auditor = s.dir.join("identities/auditor");
    // lim-07 is withheld (no attestation): a decision with unmet reasons.
    check_in(&s, &c.device, "queries").await;
    // Two cases: the engineer reports min-x's deployment, the auditor min-y.
    let case_x = signal(&s, &c.engineer, "min-x", Some("lim-07"), "the engineer saw SECRET-X").await;
    let case_y = signal(&s, &auditor, "min-y", None, "the auditor heard SECRET-Y").await;
    // An outside reporter (an NGO) reports min-x too.
    let ngo = person(&s, "reporter", "ngo-1").await;
    let case_ngo = signal(&s, &ngo, "min-x", None, "the NGO documented SECRET-N").await;
    // Two suspensions to L2, each waiting for a second admin.
    for (customer, why) in [("min-x", "proposal for X"), ("min-y", "proposal for Y")] {
        let action = AdminAction {
            type_tag: ActionTag,
            schema: SchemaV1,
            action: ActionKind::ProposeSuspension {
                target: SuspensionTarget::Customer(customer.into()),
                level: SuspensionLevel::L2,
            },
            why: why.into(),
            evidence: vec![],
            issued_at: now(),
        };
        let body = envelope::sign(&action, &[&key_of(&s.dir.join("identities/admin1"))]);
        let mut client = covenant_proto::v1::admin_service_client::AdminServiceClient::new(a1.channel().await.unwrap());
        client.act(pb::ActRequest { action: body }).await.unwrap();
    }

    // min-y's case triaged, then proposed closed: a case move, whose
    // reason may lead to the reporter, listed to full readers only.
    admin(&a1, Admin::Case { case: case_y.clone(), to: "triaged".into(), determination: None }).await;
    admin(&a1, Admin::Case { case: case_y.clone(), to: "closed".into(), determination: None }).await;

    let who = [
        Who { name: "admin", folder: s.dir.join("identities/admin1") },
        Who { name: "customer min-x", folder: c.customer.clone() },
        Who { name: "customer min-y", folder: customer_y },
        Who { name: "engineer", folder: c.engineer.clone() },
        Who { name: "auditor (full)", folder: auditor.clone() },
        Who { name: "auditor (min-y)", folder: auditor_y },
        Who { name: "deployment lim-07", folder: c.device.clone() },
        Who { name: "deployment lim-08", folder: device_y },
        Who { name: "reporter ngo-1", folder: ngo },
    ];

    // Deployments: as entitlement to the deployment; engineers refused.
    let want: [Result<&[&str], Code>; 9] = [
        Ok(&["lim-07", "lim-08"]),
        Ok(&["lim-07"]),
        Ok(&["lim-08"]),
        Err(Code::PermissionDenied),
        Ok(&["lim-07", "lim-08"]),
        Ok(&["lim-08"]),
        Ok(&["lim-07"]),
        Ok(&["lim-08"]),
        Err(Code::PermissionDenied),
    ];
    for (w, want) in who.iter().zip(want) {
        let got = query(&s, &w.folder).await.list_deployments(pb::ListDeploymentsRequest::default()).await;
        match (got, want) {
            (Ok(r), Ok(want)) => {
                let r = r.into_inner();
                assert_eq!(ids(r.deployments.iter().map(|d| d.id.as_str())), set(want), "deployments as {}", w.name);
                if let Some(d) = r.deployments.iter().find(|d| d.id == "lim-07") {
                    assert_eq!(d.verdict, "withhold", "as {}", w.name);
                    assert!(
                        d.unmet.iter().any(|u| u.condition == "end_use_attested" && u.reason.contains("attestation")),
                        "lim-07's unmet conditions as {}: {:?}",
                        w.name,
                        d.unmet
                    );
                    assert!(!d.last_checkin.is_empty(), "lim-07 checked in");
                }
            }
            (Err(e), Err(code)) => assert_eq!(e.code(), code, "deployments as {}", w.name),
            (got, want) => panic!("deployments as {}: got {got:?}, want {want:?}", w.name),
        }
    }

    // Proposals: admins and auditors only, a scoped auditor its customers'.
    let case_y_target = format!("case {case_y}");
    let all: &[&str] = &["customer min-x", "customer min-y", &case_y_target];
    let want: [Result<&[&str], Code>; 9] = [
        Ok(all),
        Err(Code::PermissionDenied),
        Err(Code::PermissionDenied),
        Err(Code::PermissionDenied),
        Ok(all),
        Ok(&["customer min-y"]),
        Err(Code::PermissionDenied),
        Err(Code::PermissionDenied),
        Err(Code::PermissionDenied),
    ];
    for (w, want) in who.iter().zip(want) {
        let got = query(&s, &w.folder).await.list_proposals(pb::ListProposalsRequest::default()).await;
        match (got, want) {
            (Ok(r), Ok(want)) => {
                let r = r.into_inner();
                assert_eq!(ids(r.proposals.iter().map(|p| p.target.as_str())), set(want), "proposals as {}", w.name);
                for p in r.proposals.iter().filter(|p| p.kind != "case-move") {
                    assert_eq!(p.kind, "suspension");
                    assert_eq!(p.proposer, "admin1");
                    assert_eq!((p.from.as_str(), p.to.as_str()), ("none", "L2"));
                    assert!(p.change.contains("from none to L2"), "{}", p.change);
                    assert!(p.why.starts_with("proposal for"), "{}", p.why);
                    assert_eq!(p.threshold, 2);
                }
            }
            (Err(e), Err(code)) => assert_eq!(e.code(), code, "proposals as {}", w.name),
            (got, want) => panic!("proposals as {}: got {got:?}, want {want:?}", w.name),
        }
    }

    // Cases: full readers all with reporters; the scoped auditor its
    // customers' without; the engineer its own; customers and devices none.
    let x = case_x.as_str();
    let y = case_y.as_str();
    let n = case_ngo.as_str();
    let want: [Result<&[(&str, &str)], Code>; 9] = [
        Ok(&[(x, "eng-1"), (y, "auditor"), (n, "ngo-1")]),
        Err(Code::PermissionDenied),
        Err(Code::PermissionDenied),
        Ok(&[(x, "eng-1")]),
        Ok(&[(x, "eng-1"), (y, "auditor"), (n, "ngo-1")]),
        Ok(&[(y, "")]),
        Err(Code::PermissionDenied),
        Err(Code::PermissionDenied),
        Ok(&[(n, "ngo-1")]),
    ];
    for (w, want) in who.iter().zip(want) {
        let got = query(&s, &w.folder).await.list_cases(pb::ListCasesRequest::default()).await;
        match (got, want) {
            (Ok(r), Ok(want)) => {
                let got: BTreeSet<(String, String)> =
                    r.into_inner().cases.iter().map(|c| (c.id.clone(), c.reporter.clone())).collect();
                let want: BTreeSet<(String, String)> =
                    want.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect();
                assert_eq!(got, want, "cases as {}", w.name);
            }
            (Err(e), Err(code)) => assert_eq!(e.code(), code, "cases as {}", w.name),
            (got, want) => panic!("cases as {}: got {got:?}, want {want:?}", w.name),
        }
    }

    // Releases: every caller; who runs 1.0.0, of the deployments it may see.
    let want: [&[&str]; 9] = [
        &["lim-07", "lim-08"],
        &["lim-07"],
        &["lim-08"],
        &[],
        &["lim-07", "lim-08"],
        &["lim-08"],
        &["lim-07"],
        &["lim-08"],
        &[],
    ];
    for (w, want) in who.iter().zip(want) {
        let r =
            query(&s, &w.folder).await.list_releases(pb::ListReleasesRequest::default()).await.unwrap().into_inner();
        let versions: Vec<&str> = r.releases.iter().map(|r| r.version.as_str()).collect();
        assert_eq!(versions, ["1.0.0", "1.1.0"], "releases as {}", w.name);
        assert_eq!(r.releases[0].signers.len(), 2, "two release keys signed");
        assert_eq!(ids(r.releases[0].running.iter().map(String::as_str)), set(want), "running 1.0.0 as {}", w.name);
        assert!(r.releases[1].running.is_empty());
    }

    // History of lim-07: those entitled to it. The signal about it carries
    // no subject tag, so only those who read every body see it listed.
    let want = [true, true, false, false, true, false, true, false, false];
    for (w, allowed) in who.iter().zip(want) {
        let got = query(&s, &w.folder)
            .await
            .get_history(pb::GetHistoryRequest { subject: "lim-07".into(), ..Default::default() })
            .await;
        match got {
            Ok(r) => {
                assert!(allowed, "history of lim-07 as {} answered", w.name);
                let entries = r.into_inner().entries;
                let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
                assert!(kinds.contains(&"deployment") && kinds.contains(&"withhold"), "{kinds:?}");
                let signal = entries.iter().find(|e| e.kind == "signal");
                let full = matches!(w.name, "admin" | "auditor (full)");
                assert_eq!(signal.is_some(), full, "the signal about lim-07 listed to {}", w.name);
                if let Some(signal) = signal {
                    assert!(signal.body_visible && signal.summary.contains("misuse signal about deployment lim-07"));
                }
                for e in &entries {
                    assert!(!e.summary.contains("SECRET") && !e.summary.contains("eng-1"), "{}", e.summary);
                }
                let withhold = entries.iter().find(|e| e.kind == "withhold").unwrap();
                assert!(withhold.summary.contains("unmet: end_use_attested"), "{}", withhold.summary);
            }
            Err(e) => {
                assert!(!allowed, "history of lim-07 as {}: {e:?}", w.name);
                assert_eq!(e.code(), Code::PermissionDenied, "as {}", w.name);
            }
        }
    }

    // History of min-x's case: full readers and its reporter only.
    let want = [true, false, false, true, true, false, false, false, false];
    for (w, allowed) in who.iter().zip(want) {
        let got = query(&s, &w.folder)
            .await
            .get_history(pb::GetHistoryRequest { subject: case_x.clone(), ..Default::default() })
            .await;
        assert_eq!(got.is_ok(), allowed, "history of {case_x} as {}: {got:?}", w.name);
        if let Ok(r) = got {
            let entries = r.into_inner().entries;
            assert_eq!(entries[0].kind, "signal");
            assert_eq!(format!("case-{}", entries[0].index), case_x);
        }
    }

    // The case moves the scoped auditor sees on min-y's case (state and
    // times, no reasons), as its reporter would.
    let mut as_aud_y = query(&s, &who[5].folder).await;
    let cases = as_aud_y.list_cases(pb::ListCasesRequest::default()).await.unwrap().into_inner().cases;
    assert_eq!(cases[0].state, "triaged");
    assert_eq!(cases[0].moves.iter().map(|m| m.to.as_str()).collect::<Vec<_>>(), ["triaged"]);

    // An admin reads a person's history (its identity's registration).
    let eng = query(&s, &who[0].folder)
        .await
        .get_history(pb::GetHistoryRequest { subject: "eng-1".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(eng.entries.iter().any(|e| e.kind == "identity"), "{:?}", eng.entries);

    // The reporter follows its own case, and no other.
    let mut as_ngo = query(&s, &who[8].folder).await;
    let own = as_ngo.get_history(pb::GetHistoryRequest { subject: case_ngo.clone(), ..Default::default() }).await;
    assert_eq!(own.unwrap().into_inner().entries[0].kind, "signal");
    for other in [&case_x, &case_y] {
        let e = as_ngo
            .get_history(pb::GetHistoryRequest { subject: other.clone(), ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{other} as the reporter");
    }

    // A reporter whose id spells a customer's (min-y) is refused at issue,
    // and a customer whose id is a person's (eng-1) at registration: keys
    // are per id, so either would share the other's subject key.
    // (`visibility::entitled` also counts a person's own id only as a
    // person's: its unit test.)
    let impostor = s.dir.join("people/impostor");
    tokio::task::block_in_place(|| covenant_cli::keys::new(&impostor, false, true)).unwrap();
    std::fs::copy(s.dir.join("root.json"), impostor.join("root.json")).unwrap();
    let issue = covenant_cli::admin::IdentityCmd::Issue {
        role: IdentityRole::Reporter,
        id: "min-y".into(),
        csr: impostor.join("request.csr"),
        out: impostor.clone(),
        scope: None,
    };
    let size = s.size().await;
    let e = covenant_cli::admin::run(Admin::Identity(issue), &s.admin(1), true).await.unwrap_err();
    assert!(format!("{e:#}").contains("a person's identity needs an id of its own"), "{e:#}");
    let customer = Admin::Customer { id: "eng-1".into(), name: "Engineer Ltd".into(), country: "XA".into() };
    let e = covenant_cli::admin::run(customer, &s.admin(1), true).await.unwrap_err();
    assert!(format!("{e:#}").contains("is a person's id; a customer needs an id of its own"), "{e:#}");
    assert_eq!(s.size().await, size, "nothing was recorded");

    // An unknown subject: NOT_FOUND to those who read everything, refused
    // alike to the others, so ids cannot be enumerated.
    let unknown = pb::GetHistoryRequest { subject: "lim-99".into(), ..Default::default() };
    let e = query(&s, &who[0].folder).await.get_history(unknown.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = query(&s, &who[1].folder).await.get_history(unknown).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // Pages: one row at a time, each token leading to the next.
    let mut admin_q = query(&s, &who[0].folder).await;
    let first = admin_q
        .list_deployments(pb::ListDeploymentsRequest { page_size: 1, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.deployments.len(), 1);
    assert_eq!(first.deployments[0].id, "lim-07");
    assert!(!first.next_page_token.is_empty());
    let second = admin_q
        .list_deployments(pb::ListDeploymentsRequest {
            page_size: 1,
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.deployments.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["lim-08"]);
    assert!(second.next_page_token.is_empty(), "the last page says so");
    s.stop().await;
}
