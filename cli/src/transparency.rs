//! `covenant audit transparency`: the public transparency report
//! (`core::transparency`), from a server or from a plain copy of the
//! ledger's published files, as text, JSON or one self-contained HTML page.
//!
//! Either way the headers are read one page or one bundle at a time, hashed
//! into a compact range whose root must be the signed checkpoint's, and
//! counted; the checkpoint's ledger signature and witness cosignatures are
//! checked against the trusted root. Nothing in the output depends on where
//! the headers came from, so the two give byte-identical output for the same
//! checkpoint (`tests/tests/transparency.rs`).

use std::path::Path;

use anyhow::{Context as _, bail};
use askama::Template;
use covenant_core::digest::Timestamp;
use covenant_core::ledger::EntryHeader;
use covenant_core::merkle::{self, CompactRange};
use covenant_core::note::{self, NoteVerifier, VerifiedCheckpoint};
use covenant_core::root::{TrustedRoot, walk_chain};
use covenant_core::tiles::{self, TILE_WIDTH};
use covenant_core::transparency::{Period, Tallied, Tally};
use covenant_proto::v1 as pb;
use covenant_proto::v1::ledger_service_client::LedgerServiceClient;
use serde::Serialize;
use tonic::transport::Channel;

use crate::now;

/// Headers asked for per page (the server's limit).
const PAGE: u64 = 1024;
/// How long to wait for the witnesses to cosign the served checkpoint.
const COSIGN_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// The checkpoint a report covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Covered {
    /// The ledger's origin (its key's note name).
    pub origin: String,
    /// The tree size: every entry before it was read.
    pub size: u64,
    /// The tree's root hash, hex.
    pub root_hash: String,
    /// Valid cosignatures of the root's witnesses on it.
    pub cosignatures: usize,
    /// How many the root asks for.
    pub witness_threshold: usize,
}

/// The report: the checkpoint, then the tally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transparency {
    /// What it covers.
    pub checkpoint: Covered,
    /// The counts.
    #[serde(flatten)]
    pub tally: Tallied,
}

/// Parses `--from`/`--to`: RFC 3339, or a date (`2026-12-01`, midnight UTC).
pub fn parse_instant(s: &str, what: &str) -> anyhow::Result<Timestamp> {
    if let Some(t) = Timestamp::parse_rfc3339(s) {
        return Ok(t);
    }
    Timestamp::parse_rfc3339(&format!("{s}T00:00:00Z"))
        .filter(|_| s.len() == 10)
        .with_context(|| format!("--{what} {s:?} is neither a date (2026-12-01) nor an RFC 3339 time"))
}

/// The checkpoint a report covers, which must carry the root's threshold
/// of witness cosignatures: the report exists to check the vendor, who
/// holds the ledger key and could sign a checkpoint of a tree only it has
/// (a split view); witnesses that cosign only consistent history are what
/// make the counts everyone's.
fn covered(verified: &VerifiedCheckpoint, trusted: &TrustedRoot) -> anyhow::Result<Covered> {
    let (witnesses, threshold) = trusted.witness_policy()?;
    let cosignatures = verified.require_cosignatures(&witnesses.iter().collect::<Vec<_>>(), 0)?.len();
    if cosignatures < threshold {
        bail!(
            "the checkpoint of size {} carries {cosignatures} valid witness cosignatures and the root asks for \
             {threshold}: counts from a checkpoint no witness vouched for prove nothing. Wait for the witnesses \
             (or, with --ledger, copy the published files again once its checkpoint is cosigned)",
            verified.checkpoint().size
        );
    }
    let cp = verified.checkpoint();
    Ok(Covered {
        origin: cp.origin.clone(),
        size: cp.size,
        root_hash: hex::encode(cp.root_hash),
        cosignatures,
        witness_threshold: threshold,
    })
}

/// Counts `header_bytes` (entry `index`) and adds its leaf to `range`.
fn take(tally: &mut Tally, range: &mut CompactRange, index: u64, header_bytes: &[u8]) -> anyhow::Result<()> {
    let header = EntryHeader::parse(header_bytes).with_context(|| format!("entry {index}'s header is malformed"))?;
    tally.count(&header);
    range.push(merkle::leaf_hash(header_bytes));
    Ok(())
}

fn check_root(range: &CompactRange, covered: &Covered) -> anyhow::Result<()> {
    if hex::encode(range.root()) != covered.root_hash {
        bail!(
            "the {} headers read do not hash to the signed checkpoint's root {}: they are not the ledger's",
            covered.size,
            covered.root_hash
        );
    }
    Ok(())
}

/// The report from the server: its root chain (followed from `provisioned`),
/// its checkpoint and every header up to it.
pub async fn from_server(
    channel: Channel,
    provisioned: &TrustedRoot,
    from: Timestamp,
    to: Timestamp,
    period: Period,
) -> anyhow::Result<Transparency> {
    let mut tally = Tally::new(from, to, period)?;
    let mut client = LedgerServiceClient::new(channel);
    let chain = client.get_root_chain(pb::GetRootChainRequest { from_version: 1 }).await?.into_inner().roots;
    let trusted = walk_chain(provisioned, chain.iter().map(Vec::as_slice), now())
        .context("the server's root chain does not follow from the trusted root")?;
    let log = ledger_verifier(&trusted)?;
    // The newest checkpoint is cosigned a moment after it is signed: wait
    // (bounded) for the witness threshold rather than fail at once.
    let deadline = std::time::Instant::now() + COSIGN_WAIT;
    let covered = loop {
        let cp = client.get_checkpoint(pb::GetCheckpointRequest {}).await?.into_inner();
        let verified =
            note::open_checkpoint(&cp.note, &log).context("the checkpoint is not signed by the ledger key")?;
        match covered(&verified, &trusted) {
            Ok(c) => break c,
            Err(e) if std::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
        }
    };
    let mut range = CompactRange::new();
    let mut index = 0;
    while index < covered.size {
        let end = (index + PAGE).min(covered.size);
        for e in crate::ledger_page(&mut client, index, end, false).await? {
            take(&mut tally, &mut range, e.index, &e.header)?;
        }
        index = end;
    }
    check_root(&range, &covered)?;
    Ok(Transparency { checkpoint: covered, tally: tally.finish() })
}

/// The report from a copy of the ledger's published files (`checkpoint` and
/// `tile/entries/`), checked against `trusted` alone.
pub fn from_files(
    dir: &Path,
    trusted: &TrustedRoot,
    from: Timestamp,
    to: Timestamp,
    period: Period,
) -> anyhow::Result<Transparency> {
    let mut tally = Tally::new(from, to, period)?;
    if !dir.join("checkpoint").exists() && dir.join("public/checkpoint").exists() {
        bail!("{} is the server's ledger folder: count its published files, {}/public", dir.display(), dir.display());
    }
    let log = ledger_verifier(trusted)?;
    let cp = std::fs::read(dir.join("checkpoint")).with_context(|| format!("reading {}/checkpoint", dir.display()))?;
    let verified = note::open_checkpoint(&cp, &log).context("the checkpoint is not signed by the ledger key")?;
    let covered = covered(&verified, trusted)?;
    let mut range = CompactRange::new();
    let bundles = covered.size.div_ceil(TILE_WIDTH);
    for n in 0..bundles {
        let width = tiles::tile_width(covered.size, n);
        let path = tiles::bundle_path(n, width);
        let bytes = std::fs::read(dir.join(&path)).with_context(|| {
            format!("reading {}/{path} (the checkpoint covers {} entries)", dir.display(), covered.size)
        })?;
        let headers = tiles::decode_bundle(&path, &bytes, width)?;
        for (i, h) in (n * TILE_WIDTH..).zip(headers) {
            take(&mut tally, &mut range, i, h)?;
        }
    }
    check_root(&range, &covered)?;
    Ok(Transparency { checkpoint: covered, tally: tally.finish() })
}

fn ledger_verifier(root: &TrustedRoot) -> anyhow::Result<NoteVerifier> {
    root.ledger_verifiers()?.into_iter().next().context("the root names no ledger key")
}

/// One row as a person reads it.
struct Row {
    label: String,
    cut: bool,
    counts: [u64; 7],
}

fn rows(t: &Transparency) -> Vec<Row> {
    t.tally
        .periods
        .iter()
        .map(|r| {
            let c = &r.counts;
            Row {
                label: t.tally.period.label(r.start),
                cut: r.partial,
                counts: [
                    c.grants,
                    c.withholds,
                    c.suspensions_raised,
                    c.suspensions_lifted,
                    c.cases_opened,
                    c.cases_closed,
                    c.entries,
                ],
            }
        })
        .collect()
}

const COLUMNS: [&str; 7] =
    ["grants", "withholds", "suspensions raised", "suspensions lifted", "cases opened", "cases closed", "entries"];

fn total(t: &Transparency) -> [u64; 7] {
    let c = &t.tally.total;
    [c.grants, c.withholds, c.suspensions_raised, c.suspensions_lifted, c.cases_opened, c.cases_closed, c.entries]
}

/// The command that recomputes `t` from a copy of the published files.
fn recompute_command(t: &Transparency) -> String {
    format!(
        "covenant audit transparency --ledger DIR --root ROOT.json --from {} --to {} --period {}",
        t.tally.from, t.tally.to, t.tally.period
    )
}

/// The report as text, for a terminal.
pub fn text(t: &Transparency) -> String {
    let cp = &t.checkpoint;
    let mut out = format!(
        "Transparency report of the ledger {}, {} to {}, by {}.\nCounted from the public headers of its checkpoint \
         of {} entries (root {}), with {} valid witness cosignatures (the root asks for {}).\n\n",
        cp.origin,
        t.tally.from,
        t.tally.to,
        t.tally.period,
        cp.size,
        cp.root_hash,
        cp.cosignatures,
        cp.witness_threshold
    );
    let widths: Vec<usize> = COLUMNS.iter().map(|c| c.len().max(6)).collect();
    let first = t.tally.periods.iter().map(|r| t.tally.period.label(r.start).len() + 1).max().unwrap_or(6).max(6);
    out.push_str(&format!("{:<first$}", "period"));
    for (c, w) in COLUMNS.iter().zip(&widths) {
        out.push_str(&format!("  {c:>w$}"));
    }
    out.push('\n');
    let line = |out: &mut String, name: &str, counts: &[u64; 7]| {
        out.push_str(&format!("{name:<first$}"));
        for (n, w) in counts.iter().zip(&widths) {
            out.push_str(&format!("  {n:>w$}"));
        }
        out.push('\n');
    };
    let rows = rows(t);
    for r in &rows {
        line(&mut out, &format!("{}{}", r.label, if r.cut { "*" } else { "" }), &r.counts);
    }
    line(&mut out, "total", &total(t));
    if rows.iter().any(|r| r.cut) {
        out.push_str("\n* part of the period only: the report's range starts or ends inside it.\n");
    }
    out.push_str(&format!(
        "\nA case opens with each misuse signal; suspensions raised and lifted are the proposals logged (raising to \
         L1 takes effect at once, the others after a second admin's approval). Anyone with the ledger's published \
         tiles recomputes these numbers:\n  {}\n",
        recompute_command(t)
    ));
    out
}

#[derive(Template)]
#[template(path = "transparency/report.html")]
struct Page<'a> {
    t: &'a Transparency,
    columns: [&'static str; 7],
    rows: Vec<Row>,
    total: [u64; 7],
    any_cut: bool,
    command: String,
}

/// The report as one self-contained HTML page (no script, no fetch).
pub fn html(t: &Transparency) -> anyhow::Result<String> {
    let rows = rows(t);
    let any_cut = rows.iter().any(|r| r.cut);
    Ok(Page { t, columns: COLUMNS, total: total(t), rows, any_cut, command: recompute_command(t) }.render()?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_date_or_an_instant_is_accepted_and_nothing_else() {
        assert_eq!(parse_instant("2026-12-01", "from").unwrap().to_string(), "2026-12-01T00:00:00Z");
        assert_eq!(parse_instant("2026-12-01T10:00:00+01:00", "from").unwrap().to_string(), "2026-12-01T09:00:00Z");
        assert!(parse_instant("2026-12", "from").is_err());
        assert!(parse_instant("yesterday", "to").is_err());
    }

    #[test]
    fn rows_are_named_by_their_period_and_cut_ones_are_marked() {
        let t = |s: &str| Timestamp::parse_rfc3339(s).unwrap();
        let tally = Tally::new(t("2026-11-15T00:00:00Z"), t("2027-01-01T00:00:00Z"), Period::Month).unwrap().finish();
        let report = Transparency {
            checkpoint: Covered {
                origin: "o".into(),
                size: 0,
                root_hash: String::new(),
                cosignatures: 0,
                witness_threshold: 0,
            },
            tally,
        };
        let r = rows(&report);
        assert_eq!(
            r.iter().map(|r| (r.label.as_str(), r.cut)).collect::<Vec<_>>(),
            [("2026-11", true), ("2026-12", false)]
        );
        let text = text(&report);
        assert!(text.contains("2026-11*"), "{text}");
        assert!(text.contains("part of the period only"), "{text}");
    }
}
