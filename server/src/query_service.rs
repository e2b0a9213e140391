//! QueryService: the read side for people (the fleet, proposals awaiting
//! approval, cases, releases, a subject's history), answered from the
//! folded state and the sled views under one read of the state, never by
//! scanning the ledger per call. Who sees which rows follows the rules for
//! bodies (`covenant_core::visibility`): each row is checked with
//! `entitled` against the subjects it concerns, and what a row carries
//! from a body the caller may not read (a case's reporter) is left empty.

use covenant_core::describe;
use covenant_core::digest::Timestamp;
use covenant_core::keys::KeyId;
use covenant_core::state::{Case, PROPOSAL_LIFETIME, ProposalKind, State};
use covenant_core::statements::{IdentityRole, SuspensionTarget, Verdict};
use covenant_core::visibility::{Subject, entitled};
use covenant_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::node::{Caller, Node};

/// The most entries one history page answers (each is read and parsed).
pub const MAX_HISTORY_ROWS: usize = 256;
/// Rows per page when the request names no page size.
pub const DEFAULT_PAGE_ROWS: usize = 500;
/// The most rows one call answers.
pub const MAX_PAGE_ROWS: usize = 1_000;

fn page_size(asked: u32) -> usize {
    match asked as usize {
        0 => DEFAULT_PAGE_ROWS,
        n => n.min(MAX_PAGE_ROWS),
    }
}

fn time(t: Option<Timestamp>) -> String {
    t.map(|t| t.to_string()).unwrap_or_default()
}

/// Whether the caller reads every body (admins, full-scope auditors).
fn reads_all(caller: &Caller) -> bool {
    caller.role == IdentityRole::Admin || (caller.role == IdentityRole::Auditor && caller.scope.is_none())
}

/// Rows after `token` (exclusive) in key order, at most `size`, and the
/// token of the next page (empty on the last one).
fn paged<T>(rows: impl Iterator<Item = (String, T)>, token: &str, size: usize) -> (Vec<T>, String) {
    let mut out = Vec::new();
    let mut last = String::new();
    let mut more = false;
    for (key, row) in rows.filter(|(key, _)| token.is_empty() || key.as_str() > token) {
        if out.len() == size {
            more = true;
            break;
        }
        last = key;
        out.push(row);
    }
    (out, if more { last } else { String::new() })
}

/// A ledger index as a page key that sorts as the number does.
fn index_key(index: u64) -> String {
    format!("{index:020}")
}

impl Node {
    fn state(&self) -> Result<std::sync::RwLockReadGuard<'_, State>, Status> {
        self.registry.state.read().map_err(|_| Status::internal("registry lock poisoned"))
    }

    /// The subject id of the identity a key was registered with (an admin's,
    /// a reporter's), or the key id if none.
    fn name_of(state: &State, key: &KeyId) -> String {
        state.any_identity_of_key(key).map(|i| i.subject.clone()).unwrap_or_else(|| key.to_string())
    }

    /// A deployment's row, with its last check-in as the ledger knows it
    /// (the server's own observation is added after the state is read).
    /// A device is told when its grant ends, not when its customer's
    /// attestation, verification or licence do (bodies it does not read).
    fn deployment_row(caller: &Caller, state: &State, dep: &covenant_core::state::Deployment) -> pb::DeploymentRow {
        let facts = state.facts();
        let decision = facts.decisions_of(&dep.id).last();
        let expiries = if caller.role == IdentityRole::Deployment {
            covenant_core::policy::Expiries::default()
        } else {
            covenant_core::policy::expiries(state, dep)
        };
        let withheld_since = decision.filter(|d| d.verdict == Verdict::Withhold).and_then(|_| {
            facts.decisions_of(&dep.id).iter().rev().take_while(|d| d.verdict == Verdict::Withhold).last()
        });
        let granted_version = decision
            .and_then(|d| d.release.as_ref())
            .and_then(|r| facts.release(r))
            .map(|r| r.manifest.version.to_string())
            .unwrap_or_default();
        pb::DeploymentRow {
            id: dep.id.clone(),
            customer: dep.customer.clone(),
            product: dep.product.clone(),
            site_country: dep.site.country.clone(),
            site_id: dep.site.site_id.clone(),
            installed_version: dep.installed_version.to_string(),
            verdict: match decision.map(|d| d.verdict) {
                Some(Verdict::Grant) => "grant".into(),
                Some(Verdict::Withhold) => "withhold".into(),
                None => String::new(),
            },
            verdict_index: decision.map_or(0, |d| d.index),
            verdict_at: time(decision.map(|d| d.issued_at)),
            granted_version,
            unmet: decision
                .filter(|d| d.verdict == Verdict::Withhold)
                .map(|d| {
                    d.unmet
                        .iter()
                        .map(|c| pb::UnmetCondition { condition: c.condition.clone(), reason: c.reason.clone() })
                        .collect()
                })
                .unwrap_or_default(),
            suspension: facts.effective_suspension(dep).to_string(),
            last_checkin: time(decision.map(|d| d.issued_at)),
            grant_expires: time(decision.filter(|d| d.verdict == Verdict::Grant).and_then(|d| d.expires_at)),
            attestation_expires: time(expiries.attestation),
            verification_expires: time(expiries.verification),
            licence_expires: time(expiries.licence),
            withheld_since: time(withheld_since.map(|d| d.issued_at)),
        }
    }

    /// Whether a scoped viewer may see a proposal: every customer or
    /// deployment it concerns is entitled to it. Proposals about people
    /// (identities, revocations, compromises) concern no customer.
    fn proposal_in_scope(state: &State, caller: &Caller, kind: &ProposalKind) -> bool {
        let viewer = caller.viewer();
        let deployment = |id: &str| {
            state.deployment(id).is_some_and(|d| entitled(&viewer, &Subject::Deployment { id, customer: &d.customer }))
        };
        let customer = |id: &str| entitled(&viewer, &Subject::Customer(id));
        match kind {
            ProposalKind::Suspension { target: SuspensionTarget::Customer(c), .. } => customer(c),
            ProposalKind::Suspension { target: SuspensionTarget::Deployment(d), .. } => deployment(d),
            ProposalKind::Waiver { deployment: d, .. } | ProposalKind::SecurityFix { deployment: d, .. } => {
                deployment(d)
            }
            ProposalKind::Contract { contract, .. } => customer(&contract.customer),
            ProposalKind::Licence { licence, .. } => customer(&licence.customer),
            // A case move is a Case entry, read by admins and full-scope
            // auditors only: its reason may lead to the reporter.
            ProposalKind::CaseMove { .. } => false,
            ProposalKind::Deployment { deployment: d, .. } => customer(&d.customer),
            ProposalKind::Identity { .. } | ProposalKind::Revocation { .. } | ProposalKind::Compromise { .. } => false,
        }
    }

    /// Whether the caller may see a case, and its reporter. Admins and
    /// full-scope auditors: every case, with the reporter; a scoped auditor:
    /// its customers' cases, without; an engineer, auditor or reporter: the
    /// cases its own signals opened, with itself as the reporter.
    fn case_access(state: &State, caller: &Caller, case: &Case) -> Option<bool> {
        if reads_all(caller) {
            return Some(true);
        }
        let reported = case
            .reporter
            .as_ref()
            .and_then(|k| state.any_identity_of_key(k))
            .is_some_and(|i| i.role == caller.role && i.subject == caller.subject);
        if reported {
            return Some(true);
        }
        (caller.role == IdentityRole::Auditor && entitled(&caller.viewer(), &Subject::Customer(&case.customer)))
            .then_some(false)
    }

    fn case_row(state: &State, case: &Case, with_reporter: bool) -> pb::CaseRow {
        let opened_index = case_opened(case);
        pb::CaseRow {
            id: case.id.clone(),
            customer: case.customer.clone(),
            deployment: case.deployment.clone().unwrap_or_default(),
            state: describe::case_state_name(case.state).into(),
            determination: case.determination.map(describe::determination_name).unwrap_or_default().into(),
            opened_at: case.opened_at.to_string(),
            opened_index,
            reporter: if with_reporter {
                case.reporter.as_ref().map(|k| Self::name_of(state, k)).unwrap_or_default()
            } else {
                String::new()
            },
            moves: case
                .moves
                .iter()
                .map(|m| pb::CaseMove {
                    index: m.index,
                    at: m.time.to_string(),
                    from: describe::case_state_name(m.from).into(),
                    to: describe::case_state_name(m.to).into(),
                    determination: m.determination.map(describe::determination_name).unwrap_or_default().into(),
                })
                .collect(),
        }
    }

    /// The history rows of the entries at `indices` (all below the signed
    /// size): header fields for every one, a summary where the caller may
    /// read the body.
    fn history_rows(&self, caller: &Caller, indices: &[u64]) -> Result<Vec<pb::HistoryRow>, Status> {
        let mut read = Vec::with_capacity(indices.len());
        for index in indices {
            let header = self.ledger.headers(*index, index + 1).map_err(crate::node::read_status)?;
            let body = self.ledger.body(*index).map_err(crate::node::read_status)?;
            if let Some(header) = header.first().and_then(|h| covenant_core::ledger::EntryHeader::parse(h).ok()) {
                read.push((*index, header, body.body));
            }
        }
        let state = self.state()?;
        let viewer = caller.viewer();
        Ok(read
            .into_iter()
            .map(|(index, header, body)| {
                let visible = crate::ledger_service::may_read_body(&state, &viewer, header.kind, &body);
                pb::HistoryRow {
                    index,
                    time: header.time.to_string(),
                    kind: header.kind.to_string(),
                    summary: if visible { describe::summary(&body) } else { String::new() },
                    body_visible: visible,
                }
            })
            .collect())
    }

    /// Whether the caller may read `subject`'s history: a customer or
    /// deployment it is entitled to, its own id, or a case it may see.
    /// Unknown and out of scope answer alike for those who do not read
    /// everything, so ids cannot be enumerated.
    fn history_subject<'a>(
        &self,
        state: &'a State,
        caller: &Caller,
        subject: &str,
    ) -> Result<Option<&'a Case>, Status> {
        let refused = || {
            if reads_all(caller) {
                // The id is named only when it is one the ledger could
                // hold: a caller's text never reaches a log or a message.
                if covenant_core::statements::is_valid_id(subject) {
                    Status::not_found(format!("no customer, deployment or case {subject}"))
                } else {
                    Status::not_found("no customer, deployment or case by that name")
                }
            } else {
                Status::permission_denied("this subject is not in your scope")
            }
        };
        if let Some(case) = state.facts().case(subject) {
            return Self::case_access(state, caller, case).map(|_| Some(case)).ok_or_else(refused);
        }
        let known = state.deployment(subject).is_some()
            || state.customer(subject).is_some()
            || subject == caller.subject
            || state.identities().any(|(_, i)| i.subject == subject);
        if known && entitled(&caller.viewer(), &Subject::resolve(state, subject)) { Ok(None) } else { Err(refused()) }
    }
}

#[tonic::async_trait]
impl pb::query_service_server::QueryService for Node {
    async fn list_deployments(
        &self,
        request: Request<pb::ListDeploymentsRequest>,
    ) -> Result<Response<pb::ListDeploymentsResponse>, Status> {
        let caller = self.caller(&request)?;
        self.require(
            &caller,
            &[IdentityRole::Admin, IdentityRole::Auditor, IdentityRole::Customer, IdentityRole::Deployment],
        )?;
        let req = request.into_inner();
        let (mut deployments, next_page_token, tree_size) = {
            let state = self.state()?;
            let viewer = caller.viewer();
            let rows = state
                .facts()
                .deployments()
                .filter(|d| req.customer.is_empty() || d.customer == req.customer)
                .filter(|d| entitled(&viewer, &Subject::Deployment { id: &d.id, customer: &d.customer }))
                .map(|d| (d.id.clone(), d));
            let (page, next) = paged(rows, &req.page_token, page_size(req.page_size));
            let rows: Vec<pb::DeploymentRow> =
                page.into_iter().map(|d| Self::deployment_row(&caller, &state, d)).collect();
            (rows, next, state.size())
        };
        // The last check-in: the newer of the ledger's and this server's
        // observation, read after the state's lock is released.
        for row in &mut deployments {
            if let Some(seen) = self.seen.get(&row.id) {
                let logged = Timestamp::parse_rfc3339(&row.last_checkin);
                if logged.is_none_or(|t| seen > t) {
                    row.last_checkin = seen.to_string();
                }
            }
        }
        Ok(Response::new(pb::ListDeploymentsResponse {
            deployments,
            next_page_token,
            tree_size,
            now: self.now().to_string(),
        }))
    }

    async fn list_proposals(
        &self,
        request: Request<pb::ListProposalsRequest>,
    ) -> Result<Response<pb::ListProposalsResponse>, Status> {
        let caller = self.caller(&request)?;
        self.require(&caller, &[IdentityRole::Admin, IdentityRole::Auditor])?;
        let req = request.into_inner();
        let state = self.state()?;
        let now = self.now();
        let threshold = state.admin_keys().map(|k| k.threshold()).unwrap_or(1);
        let mut pending: Vec<_> = state
            .facts()
            .proposals()
            .filter(|(_, p)| !p.in_force && p.at.plus_seconds(PROPOSAL_LIFETIME) > now)
            .filter(|(_, p)| reads_all(&caller) || Self::proposal_in_scope(&state, &caller, &p.kind))
            .collect();
        pending.sort_by_key(|(_, p)| p.index);
        let rows = pending.into_iter().map(|(digest, p)| {
            let change = describe::change(&p.kind, |d| {
                state.facts().release(d).map(|r| format!("{} {}", r.manifest.product, r.manifest.version))
            });
            let row = pb::ProposalRow {
                digest: digest.to_string(),
                index: p.index,
                proposed_at: p.at.to_string(),
                expires_at: p.at.plus_seconds(PROPOSAL_LIFETIME).to_string(),
                proposer: Self::name_of(&state, &p.proposer),
                approvers: p.approvals.iter().map(|k| Self::name_of(&state, k)).collect(),
                threshold,
                kind: change.kind.into(),
                target: change.target,
                from: change.from,
                to: change.to,
                change: change.words,
                why: p.why.clone(),
            };
            (index_key(p.index), row)
        });
        let (proposals, next_page_token) = paged(rows, &req.page_token, page_size(req.page_size));
        Ok(Response::new(pb::ListProposalsResponse {
            proposals,
            next_page_token,
            tree_size: state.size(),
            now: now.to_string(),
        }))
    }

    async fn list_cases(
        &self,
        request: Request<pb::ListCasesRequest>,
    ) -> Result<Response<pb::ListCasesResponse>, Status> {
        let caller = self.caller(&request)?;
        self.require(
            &caller,
            &[IdentityRole::Admin, IdentityRole::Auditor, IdentityRole::Engineer, IdentityRole::Reporter],
        )?;
        let req = request.into_inner();
        let state = self.state()?;
        let mut visible: Vec<(u64, pb::CaseRow)> = state
            .facts()
            .cases()
            .filter_map(|c| {
                let with_reporter = Self::case_access(&state, &caller, c)?;
                let row = Self::case_row(&state, c, with_reporter);
                Some((row.opened_index, row))
            })
            .collect();
        visible.sort_by_key(|(i, _)| *i);
        let rows = visible.into_iter().map(|(i, row)| (index_key(i), row));
        let (cases, next_page_token) = paged(rows, &req.page_token, page_size(req.page_size));
        Ok(Response::new(pb::ListCasesResponse {
            cases,
            next_page_token,
            tree_size: state.size(),
            now: self.now().to_string(),
        }))
    }

    async fn list_releases(
        &self,
        request: Request<pb::ListReleasesRequest>,
    ) -> Result<Response<pb::ListReleasesResponse>, Status> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        let state = self.state()?;
        let viewer = caller.viewer();
        // Which visible deployments run each (product, version), in one pass.
        let mut running: std::collections::BTreeMap<(String, String), Vec<String>> = Default::default();
        if !matches!(caller.role, IdentityRole::Engineer | IdentityRole::Reporter) {
            for d in state.facts().deployments() {
                if entitled(&viewer, &Subject::Deployment { id: &d.id, customer: &d.customer }) {
                    running.entry((d.product.clone(), d.installed_version.to_string())).or_default().push(d.id.clone());
                }
            }
        }
        let rows = state.facts().releases().map(|r| {
            let m = &r.manifest;
            let row = pb::ReleaseRow {
                digest: r.digest.to_string(),
                index: r.index,
                product: m.product.clone(),
                version: m.version.to_string(),
                class: m.class.to_string(),
                capability_baseline: m.capability_baseline.to_string(),
                released_at: m.released_at.to_string(),
                size: m.artifact.size,
                signers: r.signers.iter().map(ToString::to_string).collect(),
                running: running.remove(&(m.product.clone(), m.version.to_string())).unwrap_or_default(),
            };
            (index_key(r.index), row)
        });
        let mut rows: Vec<_> = rows.collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let (releases, next_page_token) = paged(rows.into_iter(), &req.page_token, page_size(req.page_size));
        Ok(Response::new(pb::ListReleasesResponse {
            releases,
            next_page_token,
            tree_size: state.size(),
            now: self.now().to_string(),
        }))
    }

    async fn get_history(
        &self,
        request: Request<pb::GetHistoryRequest>,
    ) -> Result<Response<pb::GetHistoryResponse>, Status> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        let size = page_size(req.page_size).min(MAX_HISTORY_ROWS);
        let after: Option<u64> = if req.page_token.is_empty() {
            None
        } else {
            Some(
                req.page_token
                    .parse()
                    .map_err(|_| Status::invalid_argument("page_token is not one this server gave"))?,
            )
        };
        // The indices, from the state (a case) or the subject index (a
        // customer, a deployment, a person's own id).
        let (indices, tree_size) = {
            let state = self.state()?;
            let indices = match self.history_subject(&state, &caller, &req.subject)? {
                Some(case) => {
                    let mut v: Vec<u64> = std::iter::once(case_opened(case))
                        .chain(case.moves.iter().map(|m| m.index))
                        .chain(state.facts().proposals().filter_map(|(_, p)| match &p.kind {
                            ProposalKind::CaseMove { case: c, .. } if *c == case.id => Some(p.index),
                            _ => None,
                        }))
                        .collect();
                    v.sort_unstable();
                    v.dedup();
                    v.retain(|i| after.is_none_or(|a| *i > a));
                    v.truncate(size + 1);
                    v
                }
                None => {
                    let mut v = self
                        .subjects
                        .entries_after(&req.subject, after, size + 1)
                        .map_err(|e| Status::internal(format!("the subject index: {e}")))?;
                    // Signals carry no subject tag (their header must not
                    // tell the customer one was filed), so the index does
                    // not list them: those who read every body get the
                    // signals about the subject from the cases.
                    if reads_all(&caller) {
                        v.extend(
                            state
                                .facts()
                                .cases()
                                .filter(|c| c.customer == req.subject || c.deployment.as_deref() == Some(&req.subject))
                                .map(case_opened)
                                .filter(|i| after.is_none_or(|a| *i > a)),
                        );
                        v.sort_unstable();
                        v.dedup();
                        v.truncate(size + 1);
                    }
                    v
                }
            };
            // Entries are folded into the state before their batch is
            // signed: answer up to the signed size, which the reads serve.
            (indices, self.ledger.checkpoint().size)
        };
        let more = indices.len() > size;
        let indices: Vec<u64> = indices.into_iter().take(size).filter(|i| *i < tree_size).collect();
        // Reading and summarising entries is blocking work: off the async
        // workers, the state's lock taken once per page.
        let entries = tokio::task::block_in_place(|| self.history_rows(&caller, &indices))?;
        let next_page_token =
            if more { indices.last().map(|i| i.to_string()).unwrap_or_default() } else { String::new() };
        Ok(Response::new(pb::GetHistoryResponse { entries, next_page_token, tree_size, now: self.now().to_string() }))
    }
}

/// The index of the signal that opened a case (`case-<index>`).
fn case_opened(case: &Case) -> u64 {
    case.id.strip_prefix("case-").and_then(|n| n.parse().ok()).unwrap_or_default()
}
