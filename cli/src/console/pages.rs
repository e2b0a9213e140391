//! The console's pages: what each one asks the server (through
//! `crate::query` and `crate::audit`), the rows it shows, and its askama
//! template (`cli/templates/console/`). Askama escapes every value for
//! HTML; no template marks data safe, so text that customers and engineers
//! wrote (reasons, summaries, why) is shown as text, never as markup.

use std::path::Path;

use anyhow::Context as _;
use askama::Template;
use axum::http::StatusCode;
use covenant_core::digest::Timestamp;
use covenant_core::note::{Checkpoint, Note};
use covenant_proto::v1::query_service_client::QueryServiceClient;
use serde::Deserialize;
use tonic::transport::Channel;

use crate::connect::Connection;
use crate::query::{self, Expiring, FleetOptions, FleetRow, HistoryRow, ServerError, Unmet};

/// The stylesheet, served at `/style.css` (the content security policy
/// allows styles from the console itself only).
pub(super) const STYLE: &str = include_str!("../../templates/console/style.css");

/// A rendered page and its status.
pub(super) struct Page {
    pub(super) status: StatusCode,
    pub(super) body: Result<String, askama::Error>,
}

fn page(status: StatusCode, template: &impl Template) -> Page {
    Page { status, body: template.render() }
}

/// Who the console runs as and against which server: every page's header.
#[derive(Debug, Clone)]
pub(super) struct Frame {
    /// The identity's role (admin, customer, engineer, auditor...).
    pub(super) role: String,
    /// Its subject id.
    pub(super) subject: String,
    /// The server's URL.
    pub(super) server: String,
}

impl Frame {
    /// Reads the role and subject from the identity's certificate, whose
    /// common name the server's CA writes as `role:subject`.
    pub(super) fn of(identity: &Path, server: &str) -> anyhow::Result<Frame> {
        use anyhow::Context as _;
        let path = identity.join("cert.pem");
        let pem = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem)
            .map_err(|e| anyhow::anyhow!("{} is not a PEM certificate: {e}", path.display()))?;
        let cert = pem.parse_x509().map_err(|e| anyhow::anyhow!("{} is not a certificate: {e}", path.display()))?;
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .with_context(|| format!("{} names no subject", path.display()))?;
        let (role, subject) = cn.split_once(':').unwrap_or(("unknown", cn));
        Ok(Frame { role: role.to_owned(), subject: subject.to_owned(), server: server.to_owned() })
    }

    fn is_admin(&self) -> bool {
        self.role == "admin"
    }
}

/// An RFC 3339 time as a person reads it in a table: `2026-12-04 12:00 UTC`.
fn when(t: &str) -> String {
    match Timestamp::parse_rfc3339(t) {
        Some(ts) => {
            let s = ts.to_string();
            match (s.get(..10), s.get(11..16)) {
                (Some(date), Some(time)) => format!("{date} {time} UTC"),
                _ => s,
            }
        }
        None if t.is_empty() => "—".to_owned(),
        None => t.to_owned(),
    }
}

/// Percent-encodes a query-string value (RFC 3986 unreserved kept).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The page for an error the server answered (or a server that cannot be
/// reached): a readable message, never a dump.
#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage<'a> {
    frame: &'a Frame,
    current: &'static str,
    title: String,
    message: String,
    hint: String,
}

fn failure(frame: &Frame, current: &'static str, what: &str, e: &anyhow::Error) -> Page {
    let code = e
        .downcast_ref::<ServerError>()
        .map(|s| (s.code, s.message.clone()))
        .or_else(|| e.downcast_ref::<tonic::Status>().map(|s| (s.code(), s.message().to_owned())));
    let (status, title, message, hint) = match code {
        Some((tonic::Code::Unavailable, message)) => (
            StatusCode::BAD_GATEWAY,
            "Cannot reach the server".to_owned(),
            message,
            format!("The console could not reach {}. Check that the server runs, then reload.", frame.server),
        ),
        Some((tonic::Code::PermissionDenied, message)) => {
            (StatusCode::FORBIDDEN, format!("The server does not show {what} to this identity"), message, String::new())
        }
        Some((tonic::Code::NotFound, message)) => {
            (StatusCode::NOT_FOUND, format!("No such {what}"), message, String::new())
        }
        Some((_, message)) => {
            (StatusCode::BAD_GATEWAY, format!("The server refused to list {what}"), message, String::new())
        }
        None => (StatusCode::BAD_GATEWAY, format!("Could not show {what}"), format!("{e:#}"), String::new()),
    };
    page(status, &ErrorPage { frame, current, title, message, hint })
}

/// A polite page for a list this identity's role may not see at all.
#[derive(Template)]
#[template(path = "console/refused.html")]
struct RefusedPage<'a> {
    frame: &'a Frame,
    current: &'static str,
    what: &'static str,
    who: &'static str,
}

fn permission_denied(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ServerError>().is_some_and(|s| s.code == tonic::Code::PermissionDenied)
}

// ---------------------------------------------------------------------------
// The evidence report.
// ---------------------------------------------------------------------------

/// `/evidence?customer=C` (or `deployment=D`, `case=case-N`): which pack's
/// report to show.
#[derive(Debug, Default, Deserialize)]
pub(super) struct EvidenceQuery {
    customer: Option<String>,
    deployment: Option<String>,
    case: Option<String>,
}

/// A private scratch folder (0700, a random name, made new), removed when
/// dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new() -> anyhow::Result<Scratch> {
        let mut name = [0u8; 16];
        getrandom::fill(&mut name).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let path = std::env::temp_dir().join(format!("covenant-console-{}", hex::encode(name)));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&path).with_context(|| format!("creating a private folder {}", path.display()))?;
        Ok(Scratch(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The evidence pack's `report.html` for one customer, deployment or case,
/// as this identity may export it: the pack is written by exactly `covenant
/// audit export` (which verifies what it wrote) into a private folder (0700,
/// a random name) under the system's temporary folder, its report read, and
/// the folder removed, also when the request is dropped.
/// `Ok` is the report's HTML; `Err` a page saying why not.
pub(super) async fn evidence(frame: &Frame, conn: &Connection, root: &Path, q: EvidenceQuery) -> Result<String, Page> {
    let refused = |title: &str, message: String| {
        let hint = "Open the report from a deployment's page or the cases page.".to_owned();
        Err(page(StatusCode::BAD_REQUEST, &ErrorPage { frame, current: "", title: title.to_owned(), message, hint }))
    };
    let chosen = [&q.customer, &q.deployment, &q.case].iter().filter(|v| v.is_some()).count();
    if chosen != 1 {
        return refused("Which evidence report?", "Name one customer, deployment or case.".to_owned());
    }
    let id = q.customer.as_deref().or(q.deployment.as_deref()).or(q.case.as_deref()).unwrap_or_default();
    if !covenant_core::statements::is_valid_id(id) {
        return refused("No such subject", "That is not an identifier the ledger could hold.".to_owned());
    }
    let select = crate::evidence::Select { customer: q.customer, deployment: q.deployment, case: q.case, all: false };
    // A folder only this user can enter, under a name no one can guess
    // and created new (never one that was there, or a link), removed
    // whatever happens to the request (dropped when the browser goes).
    let scratch = match Scratch::new() {
        Ok(s) => s,
        Err(e) => return Err(failure(frame, "", "the evidence report", &e)),
    };
    let out = scratch.0.join("pack");
    // The export runs on a thread of its own with its own runtime: its
    // future holds the pack's files (not Send), which a handler's may not.
    let (conn, root) = (conn.clone(), root.to_path_buf());
    let made = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let bytes = std::fs::read(&root).with_context(|| format!("reading the trusted root {}", root.display()))?;
        let trusted = covenant_core::root::TrustedRoot::provision(
            &bytes,
            crate::now(),
            covenant_core::root::RootPolicy { allow_development: true },
        )
        .context("the identity's root is not trusted")?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(crate::evidence::export(&conn, trusted, &select, &None, &None, &out))?;
        let report = std::fs::read_to_string(out.join("report.html")).context("reading the pack's report.html");
        // Removed here, on the export's thread, whether or not anyone still
        // waits for the page.
        drop(scratch);
        report
    })
    .await
    .unwrap_or_else(|e| Err(anyhow::anyhow!("the export stopped: {e}")));
    made.map_err(|e| failure(frame, "", "the evidence report", &e))
}

/// The fallback for an unknown path.
pub(super) fn not_found(frame: &Frame) -> Page {
    let message = "There is no page at this address.".to_owned();
    let hint = "Use the links above.".to_owned();
    page(StatusCode::NOT_FOUND, &ErrorPage { frame, current: "", title: "Not found".to_owned(), message, hint })
}

// ---------------------------------------------------------------------------
// The fleet.
// ---------------------------------------------------------------------------

/// The fleet page's query string: sorting and filters.
#[derive(Debug, Default, Deserialize)]
pub(super) struct FleetQuery {
    sort: Option<String>,
    dir: Option<String>,
    customer: Option<String>,
    verdict: Option<String>,
    flag: Option<String>,
}

impl FleetQuery {
    fn filter(value: &Option<String>) -> Option<&str> {
        value.as_deref().filter(|v| !v.is_empty())
    }

    /// The query string for these filters sorted by `sort` in `dir`.
    fn href(&self, sort: &str, dir: &str) -> String {
        let mut href = format!("/?sort={}&dir={}", encode(sort), encode(dir));
        for (name, value) in [("customer", &self.customer), ("verdict", &self.verdict), ("flag", &self.flag)] {
            if let Some(v) = Self::filter(value) {
                href.push_str(&format!("&{name}={}", encode(v)));
            }
        }
        href
    }
}

/// The fleet's columns: query-string name and heading.
const COLUMNS: [(&str, &str); 9] = [
    ("id", "Deployment"),
    ("customer", "Customer"),
    ("product", "Product"),
    ("site", "Site"),
    ("installed", "Installed"),
    ("verdict", "Verdict"),
    ("flags", "Flags"),
    ("checkin", "Last check-in"),
    ("grant", "Grant expires"),
];

/// What the flags mean, for the legend and each badge's title.
fn flag_meaning(flag: &str, o: &FleetOptions) -> String {
    match flag {
        "dark" => format!(
            "no check-in for {} poll intervals ({} hours)",
            o.dark_after,
            o.poll_seconds.saturating_mul(o.dark_after) / 3_600
        ),
        "expiring" => {
            format!(
                "an attestation, field verification or licence ends within {} days, or a grant within a day",
                o.expiring_days
            )
        }
        "stuck" => format!("withheld for more than {} days", o.stuck_days),
        other => other.to_owned(),
    }
}

fn verdict_word(verdict: &str) -> &'static str {
    match verdict {
        "grant" => "granted",
        "withhold" => "withheld",
        "" => "no decision yet",
        _ => "unknown",
    }
}

/// A sortable form of a version (numeric parts compared as numbers).
fn version_key(v: &str) -> String {
    match semver::Version::parse(v) {
        Ok(s) => format!("{:020}.{:020}.{:020}-{}", s.major, s.minor, s.patch, s.pre),
        Err(_) => v.to_owned(),
    }
}

fn sort_key(row: &FleetRow, column: &str) -> String {
    match column {
        "customer" => row.customer.clone(),
        "product" => row.product.clone(),
        "site" => row.site.clone(),
        "installed" => version_key(&row.installed_version),
        "verdict" => row.verdict.clone(),
        "flags" => row.flags.join(","),
        "checkin" => row.last_checkin.clone(),
        "grant" => row.grant_expires.clone(),
        _ => row.id.clone(),
    }
}

struct Badge {
    name: String,
    title: String,
}

struct FleetLine {
    id: String,
    href: String,
    customer: String,
    product: String,
    site: String,
    installed: String,
    verdict: String,
    verdict_word: &'static str,
    suspension: String,
    flags: Vec<Badge>,
    last_checkin: String,
    grant_expires: String,
}

struct Heading {
    label: &'static str,
    href: String,
    arrow: &'static str,
}

struct Choice {
    value: String,
    label: String,
    selected: bool,
}

#[derive(Template)]
#[template(path = "console/fleet.html")]
struct FleetPage<'a> {
    frame: &'a Frame,
    current: &'static str,
    now: String,
    tree_size: u64,
    count: String,
    filtered: bool,
    headings: Vec<Heading>,
    rows: Vec<FleetLine>,
    customers: Vec<Choice>,
    verdicts: Vec<Choice>,
    flags: Vec<Choice>,
    legend: Vec<Badge>,
}

fn choices(values: impl IntoIterator<Item = (String, String)>, selected: Option<&str>) -> Vec<Choice> {
    let mut out = vec![Choice { value: String::new(), label: "any".into(), selected: selected.is_none() }];
    out.extend(values.into_iter().map(|(value, label)| Choice {
        selected: selected == Some(value.as_str()),
        value,
        label,
    }));
    out
}

/// `/`: every deployment the identity may see, sorted and filtered.
pub(super) async fn fleet(frame: &Frame, client: &mut QueryServiceClient<Channel>, q: FleetQuery) -> Page {
    let current = "fleet";
    let fleet = match query::fleet(client, None, FleetOptions::default()).await {
        Ok(f) => f,
        Err(e) if permission_denied(&e) => {
            let who = "Admins, auditors and customers (their own deployments) see the fleet; a field engineer \
                       reads what they signed.";
            return page(StatusCode::FORBIDDEN, &RefusedPage { frame, current, what: "the fleet", who });
        }
        Err(e) => return failure(frame, current, "the fleet", &e),
    };
    let count = crate::counted(fleet.deployments.len(), "deployment", "deployments");
    let customer = FleetQuery::filter(&q.customer);
    let verdict = FleetQuery::filter(&q.verdict);
    let flag = FleetQuery::filter(&q.flag);
    let mut customers: Vec<String> = fleet.deployments.iter().map(|d| d.customer.clone()).collect();
    customers.sort();
    customers.dedup();
    let mut rows: Vec<&FleetRow> = fleet
        .deployments
        .iter()
        .filter(|d| customer.is_none_or(|c| d.customer == c))
        .filter(|d| verdict.is_none_or(|v| d.verdict == v || (v == "none" && d.verdict.is_empty())))
        .filter(|d| flag.is_none_or(|f| d.flags.iter().any(|x| x == f)))
        .collect();
    let sort = q.sort.as_deref().filter(|s| COLUMNS.iter().any(|(c, _)| c == s)).unwrap_or("id");
    let descending = q.dir.as_deref() == Some("desc");
    rows.sort_by(|a, b| {
        let order = sort_key(a, sort).cmp(&sort_key(b, sort)).then_with(|| a.id.cmp(&b.id));
        if descending { order.reverse() } else { order }
    });
    let headings = COLUMNS
        .iter()
        .map(|(column, label)| {
            let (arrow, next) = match (*column == sort, descending) {
                (true, false) => (" ▲", "desc"),
                (true, true) => (" ▼", "asc"),
                (false, _) => ("", "asc"),
            };
            Heading { label, href: q.href(column, next), arrow }
        })
        .collect();
    let options = fleet.options;
    let rows = rows
        .into_iter()
        .map(|d| FleetLine {
            href: format!("/deployments/{}", encode(&d.id)),
            id: d.id.clone(),
            customer: d.customer.clone(),
            product: d.product.clone(),
            site: d.site.clone(),
            installed: d.installed_version.clone(),
            verdict: if d.verdict.is_empty() { "none".into() } else { d.verdict.clone() },
            verdict_word: verdict_word(&d.verdict),
            suspension: if d.suspension == "none" { String::new() } else { d.suspension.clone() },
            flags: d.flags.iter().map(|f| Badge { name: f.clone(), title: flag_meaning(f, &options) }).collect(),
            last_checkin: if d.last_checkin.is_empty() { "never".into() } else { when(&d.last_checkin) },
            grant_expires: when(&d.grant_expires),
        })
        .collect();
    let names = ["dark", "expiring", "stuck"];
    let template = FleetPage {
        frame,
        current,
        now: when(&fleet.now),
        tree_size: fleet.tree_size,
        count,
        filtered: customer.is_some() || verdict.is_some() || flag.is_some(),
        headings,
        rows,
        customers: choices(customers.into_iter().map(|c| (c.clone(), c)), customer),
        verdicts: choices(
            [("grant", "granted"), ("withhold", "withheld"), ("none", "no decision yet")]
                .map(|(v, l)| (v.to_owned(), l.to_owned())),
            verdict,
        ),
        flags: choices(names.map(|f| (f.to_owned(), f.to_owned())), flag),
        legend: names.map(|f| Badge { name: f.to_owned(), title: flag_meaning(f, &options) }).into(),
    };
    page(StatusCode::OK, &template)
}

// ---------------------------------------------------------------------------
// One deployment.
// ---------------------------------------------------------------------------

struct ReleaseLine {
    version: String,
    class: String,
    baseline: String,
    released_at: String,
    installed: bool,
    offered: bool,
}

struct Event {
    index: u64,
    time: String,
    kind: String,
    summary: String,
    body_visible: bool,
}

impl From<HistoryRow> for Event {
    fn from(h: HistoryRow) -> Self {
        Event { index: h.index, time: when(&h.time), kind: h.kind, summary: h.summary, body_visible: h.body_visible }
    }
}

struct End {
    what: String,
    at: String,
    action: String,
}

impl From<Expiring> for End {
    fn from(e: Expiring) -> Self {
        End { what: e.what, at: when(&e.at), action: e.action }
    }
}

#[derive(Template)]
#[template(path = "console/deployment.html")]
struct DeploymentPage<'a> {
    frame: &'a Frame,
    current: &'static str,
    row: FleetRow,
    verdict_word: &'static str,
    verdict_at: String,
    last_checkin: String,
    unmet: Vec<Unmet>,
    flags: Vec<Badge>,
    ends: Vec<End>,
    history: Vec<Event>,
    history_error: String,
    releases: Vec<ReleaseLine>,
    releases_error: String,
    commands: Vec<(String, String)>,
    /// Whether to link the deployment's evidence report (a valid id only).
    evidence: bool,
}

/// `/deployments/{id}`: the verdict and its reasons, what ends when,
/// the history, the installed and offered releases.
pub(super) async fn deployment(frame: &Frame, client: &mut QueryServiceClient<Channel>, id: &str) -> Page {
    let current = "fleet";
    let fleet = match query::fleet(client, None, FleetOptions::default()).await {
        Ok(f) => f,
        Err(e) => return failure(frame, current, "the deployment", &e),
    };
    let options = fleet.options;
    let Some(row) = fleet.deployments.into_iter().find(|d| d.id == id) else {
        let message = format!("This identity sees no deployment with the id {id:?}.");
        let template = ErrorPage {
            frame,
            current,
            title: "No such deployment".into(),
            message,
            hint: "The fleet page lists every deployment this identity may see.".into(),
        };
        return page(StatusCode::NOT_FOUND, &template);
    };
    let (history, history_error) = match query::history(client, id).await {
        Ok(h) => (h.entries.into_iter().map(Event::from).collect(), String::new()),
        Err(e) => (Vec::new(), format!("{e:#}")),
    };
    let (releases, releases_error) = match query::releases(client).await {
        Ok(r) => (
            r.releases
                .into_iter()
                .filter(|r| r.product == row.product)
                .map(|r| ReleaseLine {
                    installed: r.version == row.installed_version,
                    offered: row.verdict == "grant" && r.version == row.granted_version,
                    version: r.version,
                    class: r.class,
                    baseline: r.capability_baseline,
                    released_at: when(&r.released_at),
                })
                .collect(),
            String::new(),
        ),
        Err(e) => (Vec::new(), format!("{e:#}")),
    };
    // A command to paste is shown only for an id the ledger could hold: a
    // server's answer never becomes shell text that does something else.
    let mut commands = Vec::new();
    if covenant_core::statements::is_valid_id(id) {
        commands.push((format!("covenant status {id}"), "the same verdict in the terminal".to_owned()));
        commands.push((
            format!("covenant audit export --deployment {id} --out pack-{id}"),
            "its evidence pack, to keep and verify offline (the report is linked above)".to_owned(),
        ));
    }
    if row.unmet.iter().any(|u| u.condition == "end_use_attested") && frame.role == "customer" {
        commands.push((
            "covenant attest new --from attestation.toml --out attestation.dsse".into(),
            "write the end-use attestation, then sign and submit it".into(),
        ));
        commands.push(("covenant attest sign attestation.dsse".into(), "sign it with your key".into()));
        commands.push(("covenant attest submit attestation.dsse".into(), "submit it to the server".into()));
    }
    let template = DeploymentPage {
        evidence: covenant_core::statements::is_valid_id(id),
        frame,
        current,
        verdict_word: verdict_word(&row.verdict),
        verdict_at: when(&row.verdict_at),
        last_checkin: if row.last_checkin.is_empty() { "never".into() } else { when(&row.last_checkin) },
        unmet: row.unmet.clone(),
        flags: row.flags.iter().map(|f| Badge { name: f.clone(), title: flag_meaning(f, &options) }).collect(),
        ends: query::ends(&row).into_iter().map(End::from).collect(),
        history,
        history_error,
        releases,
        releases_error,
        commands,
        row,
    };
    page(StatusCode::OK, &template)
}

// ---------------------------------------------------------------------------
// Proposals, cases, releases.
// ---------------------------------------------------------------------------

struct ProposalLine {
    change: String,
    kind: String,
    target: String,
    from: String,
    to: String,
    proposer: String,
    approvals: usize,
    approvers: String,
    threshold: u32,
    why: String,
    proposed_at: String,
    expires_at: String,
    index: u64,
    command: String,
}

#[derive(Template)]
#[template(path = "console/proposals.html")]
struct ProposalsPage<'a> {
    frame: &'a Frame,
    current: &'static str,
    now: String,
    proposals: Vec<ProposalLine>,
}

/// `/proposals`: what awaits a second admin, with the command that approves.
pub(super) async fn proposals(frame: &Frame, client: &mut QueryServiceClient<Channel>) -> Page {
    let current = "proposals";
    let list = match query::proposals(client).await {
        Ok(p) => p,
        Err(e) if permission_denied(&e) => {
            let who = "Proposals awaiting approval are shown to admins and auditors.";
            return page(StatusCode::FORBIDDEN, &RefusedPage { frame, current, what: "proposals", who });
        }
        Err(e) => return failure(frame, current, "proposals", &e),
    };
    let proposals = list
        .proposals
        .into_iter()
        .map(|p| ProposalLine {
            command: if frame.is_admin() && is_digest(&p.digest) {
                format!("covenant admin approve {}", p.digest)
            } else {
                String::new()
            },
            change: p.change,
            kind: p.kind,
            target: p.target,
            from: p.from,
            to: p.to,
            proposer: p.proposer,
            approvals: p.approvers.len(),
            approvers: p.approvers.join(", "),
            threshold: p.threshold,
            why: p.why,
            proposed_at: when(&p.proposed_at),
            expires_at: when(&p.expires_at),
            index: p.index,
        })
        .collect();
    page(StatusCode::OK, &ProposalsPage { frame, current, now: when(&list.now), proposals })
}

struct CaseLine {
    id: String,
    customer: String,
    deployment: String,
    state: String,
    determination: String,
    opened_at: String,
    age_days: i64,
    reporter: String,
    moves: Vec<String>,
    command: String,
}

#[derive(Template)]
#[template(path = "console/cases.html")]
struct CasesPage<'a> {
    frame: &'a Frame,
    current: &'static str,
    now: String,
    count: String,
    with_reporter: bool,
    cases: Vec<CaseLine>,
}

/// The state a case usually moves to next, and the command's extra words.
fn next_state(state: &str) -> Option<&'static str> {
    match state {
        "received" => Some("triaged"),
        "triaged" => Some("investigating"),
        "investigating" => Some("determined --determination substantiated"),
        "determined" => Some("remediation"),
        "remediation" => Some("verified"),
        "verified" => Some("closed"),
        _ => None,
    }
}

/// `/cases`: misuse cases with their state and moves.
pub(super) async fn cases(frame: &Frame, client: &mut QueryServiceClient<Channel>) -> Page {
    let current = "cases";
    let list = match query::cases(client).await {
        Ok(c) => c,
        Err(e) if permission_denied(&e) => {
            let who = "Cases are shown to admins, auditors and the engineers whose signals opened them. A customer \
                       learns from its deployment's verdict that a compliance review is open and whom to contact.";
            return page(StatusCode::FORBIDDEN, &RefusedPage { frame, current, what: "cases", who });
        }
        Err(e) => return failure(frame, current, "cases", &e),
    };
    let with_reporter = list.cases.iter().any(|c| !c.reporter.is_empty());
    let count = crate::counted(list.cases.len(), "case", "cases");
    let cases = list
        .cases
        .into_iter()
        .map(|c| CaseLine {
            command: match next_state(&c.state) {
                Some(next) if frame.is_admin() && covenant_core::statements::is_valid_id(&c.id) => {
                    format!("covenant admin case {} --to {next}", c.id)
                }
                _ => String::new(),
            },
            moves: c
                .moves
                .iter()
                .map(|m| {
                    let det =
                        if m.determination.is_empty() { String::new() } else { format!(" ({})", m.determination) };
                    format!("{} → {}{det}, {} (#{})", m.from, m.to, when(&m.at), m.index)
                })
                .collect(),
            id: c.id,
            customer: c.customer,
            deployment: c.deployment,
            state: c.state,
            determination: c.determination,
            opened_at: when(&c.opened_at),
            age_days: c.age_days,
            reporter: c.reporter,
        })
        .collect();
    page(StatusCode::OK, &CasesPage { frame, current, now: when(&list.now), count, with_reporter, cases })
}

struct ReleaseRowLine {
    product: String,
    version: String,
    class: String,
    baseline: String,
    released_at: String,
    size: u64,
    digest: String,
    signers: Vec<String>,
    running: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "console/releases.html")]
struct ReleasesPage<'a> {
    frame: &'a Frame,
    current: &'static str,
    now: String,
    count: String,
    releases: Vec<ReleaseRowLine>,
}

/// `/releases`: every release, its signers and who runs it.
pub(super) async fn releases(frame: &Frame, client: &mut QueryServiceClient<Channel>) -> Page {
    let current = "releases";
    let list = match query::releases(client).await {
        Ok(r) => r,
        Err(e) => return failure(frame, current, "releases", &e),
    };
    let count = crate::counted(list.releases.len(), "release", "releases");
    let releases = list
        .releases
        .into_iter()
        .map(|r| ReleaseRowLine {
            product: r.product,
            version: r.version,
            class: r.class,
            baseline: r.capability_baseline,
            released_at: when(&r.released_at),
            size: r.size,
            digest: r.digest,
            signers: r.signers.iter().map(|s| s.chars().take(16).collect()).collect(),
            running: r.running.into_iter().map(|d| (format!("/deployments/{}", encode(&d)), d)).collect(),
        })
        .collect();
    page(StatusCode::OK, &ReleasesPage { frame, current, now: when(&list.now), count, releases })
}

// ---------------------------------------------------------------------------
// The ledger.
// ---------------------------------------------------------------------------

struct SignatureLine {
    name: String,
    key_id: String,
    role: String,
}

struct WitnessLine {
    name: String,
    cosigned: String,
}

#[derive(Template)]
#[template(path = "console/ledger.html")]
struct LedgerPage<'a> {
    frame: &'a Frame,
    current: &'static str,
    origin: String,
    size: u64,
    root: String,
    note: String,
    signatures: Vec<SignatureLine>,
    witnesses: Vec<WitnessLine>,
    verified: bool,
    verdict: String,
    detail: String,
}

/// `/ledger`: the checkpoint, its witnesses and their cosignatures, and the
/// result of verifying it now as `covenant audit verify` does.
pub(super) async fn ledger(frame: &Frame, channel: Channel, root: &Path) -> Page {
    use covenant_proto::v1 as pb;
    use covenant_proto::v1::ledger_service_client::LedgerServiceClient;
    let current = "ledger";
    let served = match LedgerServiceClient::new(channel.clone()).get_checkpoint(pb::GetCheckpointRequest {}).await {
        Ok(cp) => cp.into_inner().note,
        Err(status) => return failure(frame, current, "the checkpoint", &anyhow::Error::new(status)),
    };
    let (note, checkpoint) = match Note::parse(&served).and_then(|n| Checkpoint::parse_text(n.text()).map(|c| (n, c))) {
        Ok(parsed) => parsed,
        Err(e) => {
            return failure(
                frame,
                current,
                "the checkpoint",
                &anyhow::anyhow!("the served checkpoint is malformed: {e}"),
            );
        }
    };
    let outcome = crate::audit::verify_now(channel, root).await;
    let (witness_names, cosigned) = match &outcome {
        Ok(v) => (v.witnesses.clone(), v.cosigned.clone()),
        Err(_) => (local_witnesses(root), Vec::new()),
    };
    let cosigned_at = |name: &str| {
        cosigned.iter().find(|c| c.witness == name).map(|c| when(&Timestamp::from_unix(c.timestamp as i64).to_string()))
    };
    let signatures = note
        .signatures()
        .iter()
        .map(|s| SignatureLine {
            name: s.name.clone(),
            key_id: format!("{:08x}", s.key_id),
            role: if s.name == checkpoint.origin {
                "the ledger's signature".to_owned()
            } else if let Some(at) = cosigned_at(&s.name) {
                format!("witness cosignature, verified (cosigned {at})")
            } else if witness_names.contains(&s.name) {
                "witness cosignature, not verified".to_owned()
            } else {
                "a key the trusted root does not name".to_owned()
            },
        })
        .collect();
    let witnesses = witness_names
        .iter()
        .map(|w| WitnessLine {
            name: w.clone(),
            cosigned: cosigned_at(w)
                .map_or_else(|| "no verified cosignature".to_owned(), |at| format!("cosigned {at}")),
        })
        .collect();
    let (verified, verdict, detail) = match &outcome {
        Ok(v) => {
            let r = &v.report;
            let mut detail = format!(
                "Root chain followed, checkpoint signed by the ledger key, {} entry headers recomputed into root {}; {} of {} required witness cosignatures.",
                r.entries_checked, r.root, r.cosignatures, r.witness_threshold
            );
            if r.cosignatures < r.witness_threshold {
                detail.push_str(" Agents will not accept this checkpoint until enough witnesses cosign it.");
            }
            if r.development_root {
                detail.push_str(" The trusted root is a development root.");
            }
            (true, format!("verified: size {} checked now", r.size), detail)
        }
        Err(e) => (false, "verification failed".to_owned(), format!("{e:#}")),
    };
    let template = LedgerPage {
        frame,
        current,
        origin: checkpoint.origin.clone(),
        size: checkpoint.size,
        root: checkpoint.root_hash.iter().map(|b| format!("{b:02x}")).collect(),
        note: note.to_text(),
        signatures,
        witnesses,
        verified,
        verdict,
        detail,
    };
    page(StatusCode::OK, &template)
}

/// The witnesses the identity's own root names (when verification failed
/// before it read them).
fn local_witnesses(root: &Path) -> Vec<String> {
    use covenant_core::root::{RootPolicy, TrustedRoot};
    std::fs::read(root)
        .ok()
        .and_then(|b| TrustedRoot::restore(&b, RootPolicy { allow_development: true }).ok())
        .and_then(|r| r.witness_policy().ok())
        .map(|(w, _)| w.iter().map(|v| v.name().to_owned()).collect())
        .unwrap_or_default()
}

/// 64 lowercase hex digits: a digest as the server spells one.
fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn frame() -> Frame {
        Frame { role: "customer".into(), subject: "min-x".into(), server: "https://127.0.0.1:8443".into() }
    }

    /// What a customer or engineer wrote reaches the page as text: askama
    /// escapes it, so a reason cannot inject markup or script.
    #[test]
    fn text_people_wrote_is_escaped_never_markup() {
        let frame = frame();
        let hostile = "<script>alert(1)</script><img src=x onerror=alert(2)> & \"quoted\"";
        let page = page(
            StatusCode::OK,
            &ErrorPage {
                frame: &frame,
                current: "",
                title: hostile.into(),
                message: hostile.into(),
                hint: hostile.into(),
            },
        );
        let html = page.body.unwrap();
        assert!(!html.contains("<script>") && !html.contains("<img"), "{html}");
        assert!(html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"), "{html}");
    }

    #[test]
    fn fleet_links_encode_their_filters() {
        let q = FleetQuery {
            sort: None,
            dir: None,
            customer: Some("a&b c".into()),
            verdict: Some(String::new()),
            flag: Some("dark".into()),
        };
        assert_eq!(q.href("customer", "desc"), "/?sort=customer&dir=desc&customer=a%26b%20c&flag=dark");
    }

    #[test]
    fn times_read_as_a_person_reads_them() {
        assert_eq!(when("2026-12-04T12:34:56Z"), "2026-12-04 12:34 UTC");
        assert_eq!(when(""), "—");
        assert!(version_key("1.10.0") > version_key("1.9.0"));
    }
}
