//! `covenant fleet`, `proposals`, `cases`, `releases` and `history`: the
//! read side for people. Each fetches every page through [`crate::query`]
//! and prints either an aligned table that reads on a 100-column terminal,
//! with a count line and a hint, or, under `--json`, the row type
//! `query` returns. The renderers are pure functions of those types (the
//! commands print what they return), so tests read the same text a person
//! does; `covenant status` borrows [`expiring_words`] from here.

use covenant_core::digest::Timestamp;
use covenant_core::text::escaped;

use crate::connect::Connection;
use crate::counted;
use crate::query::{self, Cases, Expiring, Fleet, FleetOptions, History, Proposals, Releases};

/// The width the tables and the footers are written for.
const WIDTH: usize = 100;

/// `covenant fleet`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct FleetArgs {
    /// Only this customer's deployments.
    #[arg(long, value_name = "ID")]
    pub customer: Option<String>,
    /// The deployments' poll interval in seconds (the agent's `poll_seconds`).
    #[arg(long, value_name = "SECONDS", default_value_t = query::DEFAULT_POLL_SECONDS,
          value_parser = clap::value_parser!(i64).range(1..))]
    pub poll: i64,
    /// dark: no check-in for this many poll intervals.
    #[arg(long, value_name = "N", default_value_t = query::DEFAULT_DARK_AFTER,
          value_parser = clap::value_parser!(i64).range(1..))]
    pub dark_after: i64,
    /// expiring: an attestation, verification or licence ends within this
    /// many days (a grant, renewed at each check-in, once it ends within a
    /// day).
    #[arg(long, value_name = "DAYS", default_value_t = query::DEFAULT_EXPIRING_DAYS,
          value_parser = clap::value_parser!(i64).range(0..))]
    pub expiring_days: i64,
    /// stuck: withheld for longer than this many days.
    #[arg(long, value_name = "DAYS", default_value_t = query::DEFAULT_STUCK_DAYS,
          value_parser = clap::value_parser!(i64).range(0..))]
    pub stuck_days: i64,
    /// Only the deployments with this flag: dark, expiring or stuck.
    #[arg(long, value_parser = ["dark", "expiring", "stuck"])]
    pub flag: Option<String>,
}

impl FleetArgs {
    /// The options the flags are computed with.
    pub fn options(&self) -> FleetOptions {
        FleetOptions {
            poll_seconds: self.poll,
            dark_after: self.dark_after,
            expiring_days: self.expiring_days,
            stuck_days: self.stuck_days,
        }
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// `covenant fleet`: the deployments the caller may see, with their flags.
/// Under `--json`, the [`Fleet`] (with `--flag`, only the rows raising it).
pub async fn fleet(conn: &Connection, args: &FleetArgs, json: bool) -> anyhow::Result<()> {
    let mut client = query::client(conn).await?;
    let mut fleet = query::fleet(&mut client, args.customer.as_deref(), args.options()).await?;
    if json {
        if let Some(flag) = &args.flag {
            fleet.deployments.retain(|d| d.flags.contains(flag));
        }
        return print_json(&fleet);
    }
    print!("{}", fleet_text(&fleet, args.flag.as_deref()));
    Ok(())
}

/// `covenant proposals`: what awaits approval, each with its approve command.
pub async fn proposals(conn: &Connection, json: bool) -> anyhow::Result<()> {
    let mut client = query::client(conn).await?;
    let proposals = query::proposals(&mut client).await?;
    if json {
        return print_json(&proposals);
    }
    print!("{}", proposals_text(&proposals));
    Ok(())
}

/// `covenant cases`: the misuse cases the caller may see.
pub async fn cases(conn: &Connection, json: bool) -> anyhow::Result<()> {
    let mut client = query::client(conn).await?;
    let cases = query::cases(&mut client).await?;
    if json {
        return print_json(&cases);
    }
    print!("{}", cases_text(&cases));
    Ok(())
}

/// `covenant releases`: every release, with the deployments running it.
pub async fn releases(conn: &Connection, json: bool) -> anyhow::Result<()> {
    let mut client = query::client(conn).await?;
    let releases = query::releases(&mut client).await?;
    if json {
        return print_json(&releases);
    }
    print!("{}", releases_text(&releases));
    Ok(())
}

/// `covenant history SUBJECT`: a customer's, deployment's or case's entries.
pub async fn history(conn: &Connection, subject: &str, json: bool) -> anyhow::Result<()> {
    let mut client = query::client(conn).await?;
    let history = query::history(&mut client, subject).await?;
    if json {
        return print_json(&history);
    }
    print!("{}", history_text(&history));
    Ok(())
}

/// A table: a header, rows of cells, and indented notes under a row. Every
/// cell and note is escaped ([`escaped`]): reasons, summaries and whys are
/// text people wrote, and the rest costs nothing to escape.
struct Table {
    head: Vec<&'static str>,
    lines: Vec<Line>,
}

enum Line {
    Cells(Vec<String>),
    Note(String),
}

impl Table {
    fn new(head: &[&'static str]) -> Self {
        Table { head: head.to_vec(), lines: Vec::new() }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.lines.push(Line::Cells(cells.iter().map(|c| escaped(c)).collect()));
    }

    fn note(&mut self, text: &str) {
        self.lines.push(Line::Note(escaped(text)));
    }

    fn render(&self) -> String {
        let mut widths: Vec<usize> = self.head.iter().map(|h| h.chars().count()).collect();
        for line in &self.lines {
            if let Line::Cells(cells) = line {
                for (w, c) in widths.iter_mut().zip(cells) {
                    *w = (*w).max(c.chars().count());
                }
            }
        }
        // The last column starts here; a last cell that would run past the
        // width is wrapped under itself.
        let last_at: usize = widths.iter().rev().skip(1).map(|w| w + 2).sum();
        let join = |cells: &mut dyn Iterator<Item = &str>| {
            let mut out = String::new();
            let cells: Vec<&str> = cells.collect();
            for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
                if i + 1 < cells.len() {
                    out.push_str(c);
                    out.push_str(&" ".repeat(w.saturating_sub(c.chars().count()) + 2));
                } else if last_at + c.chars().count() > WIDTH && last_at + 20 <= WIDTH {
                    let lines = wrap(c, WIDTH - last_at);
                    out.push_str(&lines.join(&format!("\n{}", " ".repeat(last_at))));
                } else {
                    out.push_str(c);
                }
            }
            out.push('\n');
            out
        };
        let mut out = join(&mut self.head.iter().copied());
        for line in &self.lines {
            match line {
                Line::Cells(cells) => out.push_str(&join(&mut cells.iter().map(String::as_str))),
                Line::Note(text) => {
                    for l in wrap(text, WIDTH - 4) {
                        out.push_str("    ");
                        out.push_str(&l);
                        out.push('\n');
                    }
                }
            }
        }
        out
    }
}

/// `text` broken at spaces into lines of at most `width` characters (a
/// word longer than that, a digest say, gets a line of its own).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

fn paragraph(text: &str) -> String {
    wrap(text, WIDTH).into_iter().map(|l| l + "\n").collect()
}

fn parse(t: &str) -> Option<Timestamp> {
    if t.is_empty() { None } else { Timestamp::parse_rfc3339(t) }
}

/// An RFC 3339 UTC time to the minute, "2026-12-04 16:50"; "-" for none.
fn short_time(t: &str) -> String {
    if t.is_empty() {
        return "-".into();
    }
    t.replacen('T', " ", 1).chars().take(16).collect()
}

/// A span in its largest whole unit: "45s", "12m", "3h", "5d".
fn span(seconds: i64) -> String {
    let s = seconds.abs();
    match s {
        ..60 => format!("{s}s"),
        60..3_600 => format!("{}m", s / 60),
        3_600..86_400 => format!("{}h", s / 3_600),
        _ => format!("{}d", s / 86_400),
    }
}

/// How long before `now` a time was: "12m ago"; `never` for none.
fn ago(now: Option<Timestamp>, t: &str) -> String {
    match (now, parse(t)) {
        (Some(now), Some(t)) if t <= now => format!("{} ago", span(now.unix() - t.unix())),
        (Some(_), Some(_)) => "just now".into(),
        (_, None) => "never".into(),
        (None, Some(_)) => short_time(t),
    }
}

/// How far from `now` a time is: "in 10 days", "3 days ago", "today".
fn relative_days(now: Timestamp, t: Timestamp) -> String {
    let days = (t.unix() - now.unix()) / 86_400;
    match days {
        0 if t >= now => "within a day".into(),
        0 => "less than a day ago".into(),
        d if d > 0 => format!("in {}", counted(d as usize, "day", "days")),
        d => format!("{} ago", counted(d.unsigned_abs() as usize, "day", "days")),
    }
}

fn what_name(what: &str) -> &str {
    match what {
        "attestation" => "the end-use attestation",
        "verification" => "the field verification",
        "licence" => "the export licence",
        "grant" => "the grant",
        other => other,
    }
}

/// One expiring item in words, with what to do about it: "the end-use
/// attestation ends 2026-12-14 (in 10 days): submit a renewed end-use
/// attestation (covenant attest new)".
pub fn expiring_words(e: &Expiring, now: &str) -> String {
    let when = match (parse(now), parse(&e.at)) {
        (Some(now), Some(at)) if at < now => format!("ended {} ({})", at.date(), relative_days(now, at)),
        (Some(now), Some(at)) => format!("ends {} ({})", at.date(), relative_days(now, at)),
        _ => format!("ends {}", e.at),
    };
    format!("{} {when}: {}", what_name(&e.what), e.action)
}

/// The fleet as a table, only the rows flagged `flag` if given, with its
/// count and what the flags mean.
pub fn fleet_text(fleet: &Fleet, flag: Option<&str>) -> String {
    let now = parse(&fleet.now);
    let rows: Vec<_> =
        fleet.deployments.iter().filter(|d| flag.is_none_or(|f| d.flags.iter().any(|x| x == f))).collect();
    let mut out = String::new();
    if rows.is_empty() {
        out.push_str(&match flag {
            None => "No deployments you may see.\n".to_owned(),
            Some(f) => format!(
                "None of the {} you may see is {f}.\n",
                counted(fleet.deployments.len(), "deployment", "deployments")
            ),
        });
    } else {
        let mut table =
            Table::new(&["DEPLOYMENT", "CUSTOMER", "VERSION", "VERDICT", "SUSPENSION", "CHECKED IN", "FLAGS"]);
        for d in &rows {
            let verdict = match d.verdict.as_str() {
                "grant" if !d.granted_version.is_empty() => format!("grant {}", d.granted_version),
                "" => "-".to_owned(),
                v => v.to_owned(),
            };
            table.row(vec![
                d.id.clone(),
                d.customer.clone(),
                d.installed_version.clone(),
                verdict,
                d.suspension.clone(),
                ago(now, &d.last_checkin),
                if d.flags.is_empty() { "-".into() } else { d.flags.join(",") },
            ]);
            for e in &d.expiring {
                table.note(&expiring_words(e, &fleet.now));
            }
            if d.flags.iter().any(|f| f == "stuck") {
                let unmet: Vec<&str> = d.unmet.iter().map(|u| u.condition.as_str()).collect();
                table.note(&format!(
                    "withheld since {} ({}); unmet: {}",
                    short_time(&d.withheld_since),
                    ago(now, &d.withheld_since),
                    if unmet.is_empty() { "-".to_owned() } else { unmet.join(", ") }
                ));
            }
        }
        out.push_str(&table.render());
        out.push('\n');
    }
    let count = |f: &str| fleet.deployments.iter().filter(|d| d.flags.iter().any(|x| x == f)).count();
    let total = counted(fleet.deployments.len(), "deployment", "deployments");
    let counts = format!("{} dark, {} expiring, {} stuck", count("dark"), count("expiring"), count("stuck"));
    let shown = match flag {
        Some(f) => format!("{} of {total} {f} ({counts})", rows.len()),
        None => format!("{total}: {counts}"),
    };
    out.push_str(&paragraph(&format!(
        "{shown}; server time {} UTC, ledger size {}.",
        short_time(&fleet.now),
        fleet.tree_size
    )));
    let o = &fleet.options;
    out.push_str(&paragraph(&format!(
        "Flags: dark = no check-in for {} poll intervals of {} ({}); expiring = an attestation, verification \
         or licence ends within {} (a grant within a day); stuck = withheld for more than {}. `covenant status DEPLOYMENT` gives \
         a verdict's reasons, `covenant history DEPLOYMENT` its entries.",
        o.dark_after,
        span(o.poll_seconds),
        span(o.poll_seconds.saturating_mul(o.dark_after)),
        counted(o.expiring_days.max(0) as usize, "day", "days"),
        counted(o.stuck_days.max(0) as usize, "day", "days"),
    )));
    out
}

/// The proposals awaiting approval, each with its change in words, its
/// reason and the exact command that approves it.
pub fn proposals_text(p: &Proposals) -> String {
    if p.proposals.is_empty() {
        return "No proposal awaits approval.\n".into();
    }
    let now = parse(&p.now);
    let mut table = Table::new(&["ENTRY", "KIND", "TARGET", "CHANGE", "PROPOSER", "APPROVALS", "LAPSES"]);
    for r in &p.proposals {
        let change = match (r.from.as_str(), r.to.as_str()) {
            ("", to) => to.to_owned(),
            (from, to) => format!("{from} -> {to}"),
        };
        let lapses = match (now, parse(&r.expires_at)) {
            (Some(now), Some(at)) if at > now => format!("in {}", span(at.unix() - now.unix())),
            _ => short_time(&r.expires_at),
        };
        table.row(vec![
            r.index.to_string(),
            r.kind.clone(),
            r.target.clone(),
            change,
            r.proposer.clone(),
            format!("{} of {}", r.approvers.len(), r.threshold),
            lapses,
        ]);
        table.note(&format!("{} (proposed {} UTC)", r.change, short_time(&r.proposed_at)));
        table.note(&format!("why: {}", r.why));
        table.note(&format!("covenant admin approve {}", r.digest));
    }
    let mut out = table.render();
    out.push('\n');
    out.push_str(&paragraph(&format!(
        "{} awaiting approval. Each takes effect once the admin threshold has approved it, and lapses \
         unapproved at its expiry; an approval shows the proposal and asks before signing (--yes for scripts).",
        counted(p.proposals.len(), "proposal", "proposals")
    )));
    out
}

/// The cases as a table, with their age and last move.
pub fn cases_text(c: &Cases) -> String {
    if c.cases.is_empty() {
        return "No case you may see.\n".into();
    }
    let mut table =
        Table::new(&["CASE", "CUSTOMER", "DEPLOYMENT", "STATE", "DETERMINATION", "OPENED", "AGE", "REPORTER"]);
    for r in &c.cases {
        table.row(vec![
            r.id.clone(),
            r.customer.clone(),
            if r.deployment.is_empty() { "-".into() } else { r.deployment.clone() },
            r.state.clone(),
            if r.determination.is_empty() { "-".into() } else { r.determination.clone() },
            short_time(&r.opened_at),
            counted(r.age_days.max(0) as usize, "day", "days"),
            if r.reporter.is_empty() { "-".into() } else { r.reporter.clone() },
        ]);
        if let Some(m) = r.moves.last() {
            table.note(&format!("last moved {} UTC: {} -> {} (entry {})", short_time(&m.at), m.from, m.to, m.index));
        }
    }
    let mut out = table.render();
    out.push('\n');
    let open = c.cases.iter().filter(|r| r.state != "closed").count();
    out.push_str(&paragraph(&format!(
        "{}, {open} open. `covenant history CASE` lists a case's entries; `covenant admin case CASE --to STATE` \
         moves it.",
        counted(c.cases.len(), "case", "cases")
    )));
    out
}

/// A size in bytes, short: "812 B", "23.4 KiB", "1.0 MiB".
fn bytes(n: u64) -> String {
    match n {
        ..1_024 => format!("{n} B"),
        1_024..1_048_576 => format!("{:.1} KiB", n as f64 / 1_024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

/// The releases as a table, with the deployments running each.
pub fn releases_text(r: &Releases) -> String {
    if r.releases.is_empty() {
        return "No release has been published.\n".into();
    }
    let mut table = Table::new(&["DIGEST", "PRODUCT", "VERSION", "CLASS", "BASELINE", "RELEASED", "SIZE", "RUNNING"]);
    for row in &r.releases {
        let running = match row.running.as_slice() {
            [] => "-".to_owned(),
            [one] => one.clone(),
            [first, rest @ ..] => format!("{first} and {} more", rest.len()),
        };
        table.row(vec![
            row.digest.chars().take(12).collect(),
            row.product.clone(),
            row.version.clone(),
            row.class.clone(),
            row.capability_baseline.clone(),
            row.released_at.chars().take(10).collect(),
            bytes(row.size),
            running,
        ]);
    }
    let mut out = table.render();
    out.push('\n');
    out.push_str(&paragraph(&format!(
        "{}. RUNNING counts the deployments you may see; --json gives full digests, signers and every \
         deployment.",
        counted(r.releases.len(), "release", "releases")
    )));
    out
}

/// A subject's entries, oldest first.
pub fn history_text(h: &History) -> String {
    if h.entries.is_empty() {
        return format!("No entries for {}.\n", escaped(&h.subject));
    }
    let mut table = Table::new(&["ENTRY", "TIME (UTC)", "KIND", "SUMMARY"]);
    for e in &h.entries {
        table.row(vec![
            e.index.to_string(),
            short_time(&e.time),
            e.kind.clone(),
            if e.body_visible { e.summary.clone() } else { "(its body is not yours to read)".into() },
        ]);
    }
    let mut out = table.render();
    out.push('\n');
    out.push_str(&paragraph(&format!(
        "{} of {} (ledger size {}). `covenant audit body INDEX` prints an entry's body, `covenant audit proof \
         INDEX` its inclusion proof.",
        counted(h.entries.len(), "entry", "entries"),
        escaped(&h.subject),
        h.tree_size
    )));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::query::{FleetRow, ProposalRow};

    fn row(id: &str, flags: &[&str]) -> FleetRow {
        FleetRow {
            id: id.into(),
            customer: "min-x".into(),
            product: "lim".into(),
            site: "XA/s1".into(),
            installed_version: "1.0.0".into(),
            verdict: "grant".into(),
            verdict_index: 9,
            verdict_at: "2026-12-04T11:00:00Z".into(),
            granted_version: "1.1.0".into(),
            unmet: vec![],
            suspension: "none".into(),
            last_checkin: "2026-12-04T11:48:00Z".into(),
            grant_expires: String::new(),
            attestation_expires: "2026-12-14T12:00:00Z".into(),
            verification_expires: String::new(),
            licence_expires: String::new(),
            withheld_since: String::new(),
            flags: flags.iter().map(|f| (*f).to_owned()).collect(),
            expiring: if !flags.contains(&"expiring") {
                vec![]
            } else {
                vec![Expiring {
                    what: "attestation".into(),
                    at: "2026-12-14T12:00:00Z".into(),
                    action: "submit a renewed end-use attestation (covenant attest new)".into(),
                }]
            },
        }
    }

    #[test]
    fn the_fleet_table_is_aligned_counted_and_explains_its_flags() {
        let fleet = Fleet {
            now: "2026-12-04T12:00:00Z".into(),
            tree_size: 42,
            options: FleetOptions::default(),
            deployments: vec![row("lim-07", &["expiring"]), row("lim-1000", &[])],
        };
        let text = fleet_text(&fleet, None);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("DEPLOYMENT  CUSTOMER  VERSION  VERDICT      SUSPENSION  CHECKED IN  FLAGS"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("lim-07      min-x     1.0.0    grant 1.1.0  none        12m ago     expiring"),
            "{text}"
        );
        assert_eq!(
            lines[2],
            "    the end-use attestation ends 2026-12-14 (in 10 days): submit a renewed end-use attestation"
        );
        assert_eq!(lines[3], "    (covenant attest new)");
        assert!(text.contains("2 deployments: 0 dark, 1 expiring, 0 stuck"), "{text}");
        assert!(text.contains("dark = no check-in for 3 poll intervals of 1h (3h)"), "{text}");
        assert!(text.lines().all(|l| l.chars().count() <= WIDTH), "{text}");
        let only = fleet_text(&fleet, Some("dark"));
        assert!(only.starts_with("None of the 2 deployments you may see is dark."), "{only}");
    }

    #[test]
    fn a_proposal_prints_its_approve_command_and_escapes_its_reason() {
        let p = Proposals {
            now: "2026-12-04T12:00:00Z".into(),
            proposals: vec![ProposalRow {
                digest: "ab".repeat(32),
                index: 12,
                proposed_at: "2026-12-04T11:00:00Z".into(),
                expires_at: "2026-12-11T11:00:00Z".into(),
                proposer: "admin1".into(),
                approvers: vec!["admin1".into()],
                threshold: 2,
                kind: "suspension".into(),
                target: "customer min-x".into(),
                from: "none".into(),
                to: "L2".into(),
                change: "set the suspension of customer min-x from none to L2".into(),
                why: "court order\u{1b}[2J".into(),
            }],
        };
        let text = proposals_text(&p);
        assert!(text.contains(&format!("covenant admin approve {}", "ab".repeat(32))), "{text}");
        assert!(text.contains("none -> L2"), "{text}");
        assert!(text.contains("1 of 2"), "{text}");
        assert!(text.contains(r"why: court order\u{1b}[2J"), "{text}");
        assert!(!text.contains('\u{1b}'));
    }

    #[test]
    fn a_long_summary_wraps_under_its_column() {
        let history = History {
            subject: "lim-07".into(),
            tree_size: 20,
            entries: vec![query::HistoryRow {
                index: 17,
                time: "2026-12-04T16:59:00Z".into(),
                kind: "attestation".into(),
                summary: "end-use attestation by min-x for 1 deployment, valid 2026-01-01T00:00:00Z to \
                          2036-01-01T00:00:00Z"
                    .into(),
                body_visible: true,
            }],
        };
        let text = history_text(&history);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ENTRY  TIME (UTC)        KIND         SUMMARY");
        assert!(lines[1].starts_with("17     2026-12-04 16:59  attestation  end-use attestation by min-x"), "{text}");
        assert_eq!(lines[2], format!("{}2026-01-01T00:00:00Z to 2036-01-01T00:00:00Z", " ".repeat(38)));
        assert!(text.lines().all(|l| l.chars().count() <= WIDTH), "{text}");
    }

    #[test]
    fn spans_and_days_read_short() {
        assert_eq!(span(45), "45s");
        assert_eq!(span(720), "12m");
        assert_eq!(span(3 * 3_600 + 5), "3h");
        assert_eq!(span(5 * 86_400), "5d");
        let now = Timestamp::parse_rfc3339("2026-12-04T12:00:00Z").unwrap();
        assert_eq!(relative_days(now, now.plus_seconds(10 * 86_400)), "in 10 days");
        assert_eq!(relative_days(now, now.plus_seconds(-86_400)), "1 day ago");
        assert_eq!(wrap("aa bb cc", 5), vec!["aa bb", "cc"]);
    }
}
