//! The read side as the CLI and the console see it: every page of a
//! QueryService list fetched over mutual TLS, turned into rows that
//! serialise for `--json`, and the fleet's flags (*dark*, *expiring*,
//! *stuck*) computed from the server's times. One module, so `covenant
//! fleet` and the console's fleet page flag a deployment alike.

use covenant_core::digest::Timestamp;
use covenant_proto::v1 as pb;
use covenant_proto::v1::query_service_client::QueryServiceClient;
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use crate::connect::Connection;

/// A standing grant counts as *expiring* once it ends within this many
/// seconds (a day), not the whole window: grants are renewed at every
/// check-in.
pub const GRANT_EXPIRING_SECONDS: i64 = 86_400;
/// How many days make the *expiring* window by default.
pub const DEFAULT_EXPIRING_DAYS: i64 = 30;
/// The agent's default poll interval (`agent.toml`'s `poll_seconds`).
pub const DEFAULT_POLL_SECONDS: i64 = 3_600;
/// How many poll intervals without a check-in make a deployment *dark*.
pub const DEFAULT_DARK_AFTER: i64 = 3;
/// How many days of withholds make a deployment *stuck*.
pub const DEFAULT_STUCK_DAYS: i64 = 14;

const DAY: i64 = 86_400;

/// When the fleet's flags are raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetOptions {
    /// The deployments' poll interval, in seconds.
    pub poll_seconds: i64,
    /// *dark*: no check-in for this many poll intervals.
    pub dark_after: i64,
    /// *expiring*: an attestation, verification or licence ends
    /// within this many days.
    pub expiring_days: i64,
    /// *stuck*: withheld for longer than this many days.
    pub stuck_days: i64,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            poll_seconds: DEFAULT_POLL_SECONDS,
            dark_after: DEFAULT_DARK_AFTER,
            expiring_days: DEFAULT_EXPIRING_DAYS,
            stuck_days: DEFAULT_STUCK_DAYS,
        }
    }
}

/// A condition the standing decision found unmet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unmet {
    /// The condition's name.
    pub condition: String,
    /// Its reason, as the decision states it (text customers and engineers
    /// may have written: escape it for a terminal).
    pub reason: String,
}

/// Something that ends within the *expiring* window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expiring {
    /// `attestation`, `verification`, `licence` or `grant`.
    pub what: String,
    /// When it ends.
    pub at: String,
    /// What to do about it, for the customer's operator.
    pub action: String,
}

/// One deployment of the fleet, with its flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetRow {
    /// Its id.
    pub id: String,
    /// Its customer.
    pub customer: String,
    /// Its product line.
    pub product: String,
    /// Its site's country and id.
    pub site: String,
    /// The version the ledger says it runs.
    pub installed_version: String,
    /// `grant`, `withhold`, or empty before any decision.
    pub verdict: String,
    /// The standing decision's ledger index and time.
    pub verdict_index: u64,
    /// When the standing decision was made.
    pub verdict_at: String,
    /// With a grant: the version offered.
    pub granted_version: String,
    /// With a withhold: the conditions unmet.
    pub unmet: Vec<Unmet>,
    /// The suspension in force.
    pub suspension: String,
    /// When it last checked in.
    pub last_checkin: String,
    /// When its grant, attestation, verification and licence end.
    pub grant_expires: String,
    /// See `grant_expires`.
    pub attestation_expires: String,
    /// See `grant_expires`.
    pub verification_expires: String,
    /// See `grant_expires`.
    pub licence_expires: String,
    /// With a withhold: since when it has been withheld.
    pub withheld_since: String,
    /// `dark`, `expiring`, `stuck`, in that order, those raised.
    pub flags: Vec<String>,
    /// What ends within the window.
    pub expiring: Vec<Expiring>,
}

/// `covenant fleet`: the deployments the caller may see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fleet {
    /// The server's time the flags were computed at.
    pub now: String,
    /// The ledger size the server answered at.
    pub tree_size: u64,
    /// The options the flags were computed with.
    pub options: FleetOptions,
    /// Every row, by id.
    pub deployments: Vec<FleetRow>,
}

fn parse(t: &str) -> Option<Timestamp> {
    if t.is_empty() { None } else { Timestamp::parse_rfc3339(t) }
}

/// What can end for a deployment, and what to do about each, in the order
/// of `DeploymentRow`'s fields (attestation, verification, licence, grant).
pub const ENDS: [(&str, &str); 4] = [
    ("attestation", "submit a renewed end-use attestation (covenant attest new)"),
    ("verification", "ask the vendor to schedule a field verification"),
    ("licence", "renew the export licence with the licensing authority"),
    ("grant", "the device renews its grant at its next check-in"),
];

/// Every end a deployment has (whatever its distance), with what to do:
/// the deployment's page lists them all, the fleet flags the near ones.
pub fn ends(row: &FleetRow) -> Vec<Expiring> {
    let at = [&row.attestation_expires, &row.verification_expires, &row.licence_expires, &row.grant_expires];
    ENDS.into_iter()
        .zip(at)
        .filter(|(_, at)| !at.is_empty())
        .map(|((what, action), at)| Expiring { what: what.into(), at: at.clone(), action: action.into() })
        .collect()
}

/// The flags of one deployment at `now`.
pub fn flag(row: &pb::DeploymentRow, now: Timestamp, options: &FleetOptions) -> (Vec<String>, Vec<Expiring>) {
    let mut flags = Vec::new();
    let dark_window = options.poll_seconds.saturating_mul(options.dark_after);
    // A deployment never heard from is not dark: it has not started yet.
    if parse(&row.last_checkin).is_some_and(|t| t.plus_seconds(dark_window) < now) {
        flags.push("dark".to_owned());
    }
    let horizon = now.plus_seconds(options.expiring_days.saturating_mul(DAY));
    // A grant is renewed at each check-in and lasts days (the contract's
    // grant_validity_seconds), so within a 30-day window every granted
    // deployment would be flagged: a grant counts only once it ends within
    // GRANT_EXPIRING_SECONDS (and the window), when a device that still
    // polls should already have renewed it.
    let grant_horizon = now.plus_seconds(GRANT_EXPIRING_SECONDS).min(horizon);
    let mut expiring = Vec::new();
    let ends = [&row.attestation_expires, &row.verification_expires, &row.licence_expires, &row.grant_expires];
    for ((what, action), at) in ENDS.into_iter().zip(ends) {
        let within = if what == "grant" { grant_horizon } else { horizon };
        if parse(at).is_some_and(|t| t <= within) {
            expiring.push(Expiring { what: what.into(), at: at.clone(), action: action.into() });
        }
    }
    if !expiring.is_empty() {
        flags.push("expiring".to_owned());
    }
    let stuck = row.verdict == "withhold"
        && parse(&row.withheld_since).is_some_and(|t| t.plus_seconds(options.stuck_days.saturating_mul(DAY)) < now);
    if stuck {
        flags.push("stuck".to_owned());
    }
    (flags, expiring)
}

/// A row with its flags at `now`.
pub fn fleet_row(row: pb::DeploymentRow, now: Timestamp, options: &FleetOptions) -> FleetRow {
    let (flags, expiring) = flag(&row, now, options);
    FleetRow {
        site: format!("{}/{}", row.site_country, row.site_id),
        id: row.id,
        customer: row.customer,
        product: row.product,
        installed_version: row.installed_version,
        verdict: row.verdict,
        verdict_index: row.verdict_index,
        verdict_at: row.verdict_at,
        granted_version: row.granted_version,
        unmet: row.unmet.into_iter().map(|u| Unmet { condition: u.condition, reason: u.reason }).collect(),
        suspension: row.suspension,
        last_checkin: row.last_checkin,
        grant_expires: row.grant_expires,
        attestation_expires: row.attestation_expires,
        verification_expires: row.verification_expires,
        licence_expires: row.licence_expires,
        withheld_since: row.withheld_since,
        flags,
        expiring,
    }
}

/// A client of the QueryService over the connection's mutual TLS.
pub async fn client(conn: &Connection) -> anyhow::Result<QueryServiceClient<Channel>> {
    Ok(QueryServiceClient::new(conn.channel().await?))
}

/// The server's refusal or failure of a query: its words are the message
/// (what the CLI prints), its code what a caller branches on (the console
/// shows a polite page for `PermissionDenied` and "cannot reach the server"
/// for `Unavailable`).
#[derive(Debug, Clone)]
pub struct ServerError {
    /// The gRPC status code.
    pub code: tonic::Code,
    /// The server's message.
    pub message: String,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ServerError {}

fn status(s: tonic::Status) -> anyhow::Error {
    ServerError { code: s.code(), message: s.message().to_owned() }.into()
}

/// Every deployment the caller may see (of `customer`, if named), with
/// flags at the server's time.
pub async fn fleet(
    client: &mut QueryServiceClient<Channel>,
    customer: Option<&str>,
    options: FleetOptions,
) -> anyhow::Result<Fleet> {
    let mut rows = Vec::new();
    let mut token = String::new();
    let (mut now, mut tree_size);
    loop {
        let page = client
            .list_deployments(pb::ListDeploymentsRequest {
                customer: customer.unwrap_or_default().to_owned(),
                page_token: token,
                page_size: 1_000,
            })
            .await
            .map_err(status)?
            .into_inner();
        now = page.now;
        tree_size = page.tree_size;
        rows.extend(page.deployments);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let at = parse(&now).ok_or_else(|| anyhow::anyhow!("the server's time {now:?} is not RFC 3339"))?;
    let deployments = rows.into_iter().map(|r| fleet_row(r, at, &options)).collect();
    Ok(Fleet { now, tree_size, options, deployments })
}

/// One deployment's row with its flags (a [`Fleet`] of that row alone, for
/// the server's time), if the caller may list deployments and sees it. Pages in id order and stops at the page that
/// reaches `id`, so a customer's call is one page and an admin's a few.
/// A caller refused the list (an engineer) gets the refusal itself, so
/// that it can tell "may not list" from a failure.
pub async fn deployment(
    client: &mut QueryServiceClient<Channel>,
    id: &str,
    options: FleetOptions,
) -> Result<Option<Fleet>, tonic::Status> {
    let mut token = String::new();
    loop {
        let page = client
            .list_deployments(pb::ListDeploymentsRequest {
                customer: String::new(),
                page_token: token,
                page_size: 1_000,
            })
            .await?
            .into_inner();
        let past = page.deployments.last().is_some_and(|d| d.id.as_str() >= id);
        if let Some(row) = page.deployments.into_iter().find(|d| d.id == id) {
            let at = parse(&page.now).ok_or_else(|| tonic::Status::internal("the server's time is not RFC 3339"))?;
            let deployments = vec![fleet_row(row, at, &options)];
            return Ok(Some(Fleet { now: page.now, tree_size: page.tree_size, options, deployments }));
        }
        if past || page.next_page_token.is_empty() {
            return Ok(None);
        }
        token = page.next_page_token;
    }
}

/// A proposal awaiting approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalRow {
    /// What an approval names (`covenant admin approve DIGEST`).
    pub digest: String,
    /// Its ledger index.
    pub index: u64,
    /// When it was proposed and when it lapses unapproved.
    pub proposed_at: String,
    /// See `proposed_at`.
    pub expires_at: String,
    /// The admin who proposed it.
    pub proposer: String,
    /// The admins who approved so far (the proposer included).
    pub approvers: Vec<String>,
    /// Approvals needed in all.
    pub threshold: u32,
    /// The kind of change.
    pub kind: String,
    /// What it concerns.
    pub target: String,
    /// What holds now.
    pub from: String,
    /// What would hold once approved.
    pub to: String,
    /// The change in one sentence.
    pub change: String,
    /// The proposer's reason (an officer's text: escape it for a terminal).
    pub why: String,
}

/// `covenant proposals`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposals {
    /// The server's time.
    pub now: String,
    /// The proposals awaiting approval, oldest first.
    pub proposals: Vec<ProposalRow>,
}

/// Every proposal awaiting approval that the caller may see.
pub async fn proposals(client: &mut QueryServiceClient<Channel>) -> anyhow::Result<Proposals> {
    let mut out = Vec::new();
    let mut token = String::new();
    let mut now;
    loop {
        let page = client
            .list_proposals(pb::ListProposalsRequest { page_token: token, page_size: 1_000 })
            .await
            .map_err(status)?
            .into_inner();
        now = page.now;
        out.extend(page.proposals.into_iter().map(|p| ProposalRow {
            digest: p.digest,
            index: p.index,
            proposed_at: p.proposed_at,
            expires_at: p.expires_at,
            proposer: p.proposer,
            approvers: p.approvers,
            threshold: p.threshold,
            kind: p.kind,
            target: p.target,
            from: p.from,
            to: p.to,
            change: p.change,
            why: p.why,
        }));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    Ok(Proposals { now, proposals: out })
}

/// A move of a case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseMove {
    /// The entry that made it take effect.
    pub index: u64,
    /// When.
    pub at: String,
    /// From which state.
    pub from: String,
    /// To which state.
    pub to: String,
    /// The determination recorded with it.
    pub determination: String,
}

/// A misuse case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseRow {
    /// `case-N`.
    pub id: String,
    /// The customer it concerns.
    pub customer: String,
    /// The deployment, if the signal named one.
    pub deployment: String,
    /// Its state and determination.
    pub state: String,
    /// See `state`.
    pub determination: String,
    /// When the signal that opened it was recorded, and its index.
    pub opened_at: String,
    /// See `opened_at`.
    pub opened_index: u64,
    /// Its age in whole days at the server's time.
    pub age_days: i64,
    /// Who reported it, where the caller may know.
    pub reporter: String,
    /// Every move, oldest first.
    pub moves: Vec<CaseMove>,
}

/// `covenant cases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cases {
    /// The server's time.
    pub now: String,
    /// The cases, oldest first.
    pub cases: Vec<CaseRow>,
}

/// Every case the caller may see.
pub async fn cases(client: &mut QueryServiceClient<Channel>) -> anyhow::Result<Cases> {
    let mut rows = Vec::new();
    let mut token = String::new();
    let mut now;
    loop {
        let page = client
            .list_cases(pb::ListCasesRequest { page_token: token, page_size: 1_000 })
            .await
            .map_err(status)?
            .into_inner();
        now = page.now;
        rows.extend(page.cases);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let at = parse(&now);
    let cases = rows
        .into_iter()
        .map(|c| CaseRow {
            age_days: match (at, parse(&c.opened_at)) {
                (Some(now), Some(opened)) => (now.unix() - opened.unix()).max(0) / DAY,
                _ => 0,
            },
            id: c.id,
            customer: c.customer,
            deployment: c.deployment,
            state: c.state,
            determination: c.determination,
            opened_at: c.opened_at,
            opened_index: c.opened_index,
            reporter: c.reporter,
            moves: c
                .moves
                .into_iter()
                .map(|m| CaseMove { index: m.index, at: m.at, from: m.from, to: m.to, determination: m.determination })
                .collect(),
        })
        .collect();
    Ok(Cases { now, cases })
}

/// A release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRow {
    /// Its manifest's digest and ledger index.
    pub digest: String,
    /// See `digest`.
    pub index: u64,
    /// Its product and version.
    pub product: String,
    /// See `product`.
    pub version: String,
    /// Its class and capability baseline.
    pub class: String,
    /// See `class`.
    pub capability_baseline: String,
    /// When it was released.
    pub released_at: String,
    /// The artifact's size in bytes.
    pub size: u64,
    /// The release keys that signed it.
    pub signers: Vec<String>,
    /// The deployments running it (of those the caller may see).
    pub running: Vec<String>,
}

/// `covenant releases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Releases {
    /// The server's time.
    pub now: String,
    /// Every release, in ledger order.
    pub releases: Vec<ReleaseRow>,
}

/// Every release.
pub async fn releases(client: &mut QueryServiceClient<Channel>) -> anyhow::Result<Releases> {
    let mut out = Vec::new();
    let mut token = String::new();
    let mut now;
    loop {
        let page = client
            .list_releases(pb::ListReleasesRequest { page_token: token, page_size: 1_000 })
            .await
            .map_err(status)?
            .into_inner();
        now = page.now;
        out.extend(page.releases.into_iter().map(|r| ReleaseRow {
            digest: r.digest,
            index: r.index,
            product: r.product,
            version: r.version,
            class: r.class,
            capability_baseline: r.capability_baseline,
            released_at: r.released_at,
            size: r.size,
            signers: r.signers,
            running: r.running,
        }));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    Ok(Releases { now, releases: out })
}

/// One entry of a subject's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRow {
    /// Its ledger index.
    pub index: u64,
    /// Its ledger time.
    pub time: String,
    /// Its kind.
    pub kind: String,
    /// One line from its body, where the caller may read it.
    pub summary: String,
    /// Whether the caller may read its body.
    pub body_visible: bool,
}

/// `covenant history SUBJECT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The subject.
    pub subject: String,
    /// The ledger size the server answered at.
    pub tree_size: u64,
    /// Its entries, oldest first.
    pub entries: Vec<HistoryRow>,
}

/// Every entry of a subject's history.
pub async fn history(client: &mut QueryServiceClient<Channel>, subject: &str) -> anyhow::Result<History> {
    let mut entries = Vec::new();
    let mut token = String::new();
    let mut tree_size;
    loop {
        let page = client
            .get_history(pb::GetHistoryRequest { subject: subject.to_owned(), page_token: token, page_size: 1_000 })
            .await
            .map_err(status)?
            .into_inner();
        tree_size = page.tree_size;
        entries.extend(page.entries.into_iter().map(|e| HistoryRow {
            index: e.index,
            time: e.time,
            kind: e.kind,
            summary: e.summary,
            body_visible: e.body_visible,
        }));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    Ok(History { subject: subject.to_owned(), tree_size, entries })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn row(last_checkin: &str, attestation: &str, verdict: &str, withheld_since: &str) -> pb::DeploymentRow {
        pb::DeploymentRow {
            id: "lim-07".into(),
            last_checkin: last_checkin.into(),
            attestation_expires: attestation.into(),
            verdict: verdict.into(),
            withheld_since: withheld_since.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_device_silent_for_three_polls_is_dark_and_one_never_heard_from_is_not() {
        let now = Timestamp::parse_rfc3339("2026-12-04T12:00:00Z").unwrap();
        let o = FleetOptions::default();
        assert_eq!(flag(&row("2026-12-04T08:59:00Z", "", "", ""), now, &o).0, vec!["dark"]);
        assert!(flag(&row("2026-12-04T09:01:00Z", "", "", ""), now, &o).0.is_empty());
        assert!(flag(&row("", "", "", ""), now, &o).0.is_empty());
    }

    #[test]
    fn an_attestation_ending_in_ten_days_is_expiring_and_in_forty_is_not() {
        let now = Timestamp::parse_rfc3339("2026-12-04T12:00:00Z").unwrap();
        let o = FleetOptions::default();
        let (flags, what) = flag(&row("", "2026-12-14T12:00:00Z", "", ""), now, &o);
        assert_eq!(flags, vec!["expiring"]);
        assert_eq!(what[0].what, "attestation");
        assert!(flag(&row("", "2027-01-13T12:00:00Z", "", ""), now, &o).0.is_empty());
    }

    #[test]
    fn a_grant_counts_as_expiring_only_within_a_day() {
        let now = Timestamp::parse_rfc3339("2026-12-04T12:00:00Z").unwrap();
        let o = FleetOptions::default();
        let mut r = row("", "", "grant", "");
        r.grant_expires = "2026-12-09T12:00:00Z".into();
        assert!(flag(&r, now, &o).0.is_empty(), "a grant renewed at each check-in, five days left");
        r.grant_expires = "2026-12-05T06:00:00Z".into();
        let (flags, what) = flag(&r, now, &o);
        assert_eq!(flags, vec!["expiring"]);
        assert_eq!(what[0].what, "grant");
    }

    #[test]
    fn a_deployment_withheld_past_the_window_is_stuck() {
        let now = Timestamp::parse_rfc3339("2026-12-04T12:00:00Z").unwrap();
        let o = FleetOptions::default();
        assert_eq!(flag(&row("", "", "withhold", "2026-11-01T00:00:00Z"), now, &o).0, vec!["stuck"]);
        assert!(flag(&row("", "", "withhold", "2026-12-01T00:00:00Z"), now, &o).0.is_empty());
        assert!(flag(&row("", "", "grant", "2026-11-01T00:00:00Z"), now, &o).0.is_empty());
    }
}
