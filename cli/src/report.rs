//! `report.html`: the evidence pack as a person reads it (a regulator, an
//! auditor, a National Contact Point). One self-contained file written
//! beside the pack by `covenant audit export`, from the pack's own verified
//! files: no network, no external fonts or scripts, readable from a USB
//! stick, and printable. It shows a summary, the decisions with their
//! reasons, the cases and their moves, suspensions, waivers and security
//! fixes with who proposed and who approved them, the attestations and
//! verifications with their signers, and for every item its ledger index
//! and leaf hash with how to check it.

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::Path;

use anyhow::{Context as _, bail};
use askama::Template;
use base64::Engine as _;
use covenant_core::describe;
use covenant_core::digest::Sha256Digest;
use covenant_core::envelope::Envelope;
use covenant_core::evidence::{PackEntry, PackReport};
use covenant_core::keys::KeyId;
use covenant_core::ledger::EntryKind;
use covenant_core::statements::{
    ActionKind, AdminAction, ConditionStatus, Decision, Payload as _, ReleaseManifest, Verdict,
};

/// A decision of the timeline.
struct DecisionLine {
    index: u64,
    time: String,
    deployment: String,
    granted: bool,
    release: String,
    expires: String,
    suspension: String,
    unmet: Vec<(String, String)>,
    leaf: String,
}

/// A case and its moves.
struct CaseLine {
    id: String,
    about: String,
    opened: String,
    index: u64,
    leaf: String,
    moves: Vec<String>,
}

/// A suspension, waiver, security fix or contract, with who proposed and
/// who approved it.
struct GovernanceLine {
    index: u64,
    time: String,
    kind: String,
    summary: String,
    why: String,
    proposer: String,
    approvers: Vec<String>,
    leaf: String,
}

/// An attestation, verification or note, with who signed it.
struct EvidenceLine {
    index: u64,
    time: String,
    kind: String,
    summary: String,
    signer: String,
    leaf: String,
}

#[derive(Template)]
#[template(path = "evidence/report.html")]
struct Report<'a> {
    title: String,
    selection: String,
    tree_size: u64,
    root_hash: String,
    cosignatures: String,
    root_version: u64,
    first_root_sha256: String,
    range: String,
    entries: u64,
    withheld: String,
    counts: Vec<(String, usize)>,
    decisions: Streamed<'a, DecisionLine>,
    cases: Vec<CaseLine>,
    governance: Vec<GovernanceLine>,
    evidence: Streamed<'a, EvidenceLine>,
}

/// One entry of the pack as the report reads it: its index, kind, ledger
/// time and leaf hash (from its header line), and its body.
struct Read {
    index: u64,
    kind: EntryKind,
    time: String,
    leaf: String,
    body: Vec<u8>,
}

/// The pack's entries in order, each with its header's kind, time and
/// leaf: `entries.jsonl` and `headers` read side by side, one line of each
/// at a time. A failure ends the walk and is kept in `failed`.
fn walk<'a>(dir: &Path, failed: &'a std::cell::RefCell<Option<String>>) -> Box<dyn Iterator<Item = Read> + 'a> {
    let open = |name: &str| std::fs::File::open(dir.join(name)).map(std::io::BufReader::new);
    let (entries, headers) = match (open("entries.jsonl"), open("headers")) {
        (Ok(e), Ok(h)) => (e, h),
        (Err(e), _) | (_, Err(e)) => {
            *failed.borrow_mut() = Some(format!("opening the pack: {e}"));
            return Box::new(std::iter::empty());
        }
    };
    let mut headers = headers.split(b'\n');
    let mut at = 0u64;
    let mut entries = entries.lines();
    Box::new(std::iter::from_fn(move || {
        let mut step = || -> anyhow::Result<Option<Read>> {
            let Some(line) = entries.next() else { return Ok(None) };
            let e: PackEntry = serde_json::from_str(&line?)?;
            let header = loop {
                let h = headers.next().context("entries.jsonl names an entry past the headers")??;
                at += 1;
                if at - 1 == e.index {
                    break h;
                }
            };
            let parsed = covenant_core::ledger::EntryHeader::parse(&header)?;
            let body = base64::engine::general_purpose::STANDARD.decode(&e.body)?;
            Ok(Some(Read {
                index: e.index,
                kind: parsed.kind,
                time: parsed.time.to_string(),
                leaf: covenant_core::evidence::leaf_hex(&header),
                body,
            }))
        };
        match step() {
            Ok(r) => r,
            Err(e) => {
                *failed.borrow_mut() = Some(e.to_string());
                None
            }
        }
    }))
}

/// A list of the page read from the pack as it is rendered, never held:
/// the entries `make` turns into lines.
struct Streamed<'a, T> {
    dir: &'a Path,
    count: usize,
    make: &'a dyn Fn(&Read) -> Option<T>,
    failed: &'a std::cell::RefCell<Option<String>>,
}

impl<T> Streamed<'_, T> {
    fn is_empty(&self) -> bool {
        self.count == 0
    }
}

impl<'b, T: 'b> IntoIterator for &'b Streamed<'_, T> {
    type Item = T;
    type IntoIter = Box<dyn Iterator<Item = T> + 'b>;
    fn into_iter(self) -> Self::IntoIter {
        let make = self.make;
        Box::new(walk(self.dir, self.failed).filter_map(move |r| make(&r)))
    }
}

/// `fmt::Write` onto a file.
struct FmtFile(std::io::BufWriter<std::fs::File>, Option<std::io::Error>);

impl std::fmt::Write for FmtFile {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        use std::io::Write as _;
        self.0.write_all(s.as_bytes()).map_err(|e| {
            self.1 = Some(e);
            std::fmt::Error
        })
    }
}

/// Writes `report.html` into the pack `dir`, which `report` verified,
/// reading the pack as a stream: what the page lists of every entry (the
/// decisions, the installs and other evidence) is read from the files as
/// the page is written, and only the parties, approvals, cases and
/// governance actions (the vendor's and the customers' own acts, few) are
/// held. Memory stays flat in the pack's size.
pub fn write(dir: &Path, report: &PackReport) -> anyhow::Result<()> {
    let failed = std::cell::RefCell::new(None);
    // Who a key is: the identity entries of the pack, and the release
    // names; the approvals by the proposal they name; the few entries held.
    let mut names: BTreeMap<KeyId, String> = BTreeMap::new();
    let mut releases: BTreeMap<Sha256Digest, String> = BTreeMap::new();
    let mut approved: Vec<(Sha256Digest, Option<KeyId>)> = Vec::new();
    let mut held: Vec<Read> = Vec::new();
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    let (mut n_decisions, mut n_evidence) = (0usize, 0usize);
    for r in walk(dir, &failed) {
        *counts.entry(covenant_core::evidence::heading(r.kind)).or_default() += 1;
        let Ok(env) = Envelope::parse(&r.body) else { continue };
        if let Ok(action) = AdminAction::parse(env.payload()) {
            match &action.action {
                ActionKind::IssueIdentity { role, subject, signing_key, .. } => {
                    names.insert(signing_key.key_id(), format!("{subject} ({role})"));
                }
                ActionKind::Approve { proposal } => approved.push((*proposal, env.first_signer())),
                _ => {}
            }
        }
        if let Ok(m) = ReleaseManifest::parse(env.payload()) {
            releases.insert(Sha256Digest::of(env.payload()), format!("{} {}", m.product, m.version));
        }
        match r.kind {
            EntryKind::Grant | EntryKind::Withhold => n_decisions += 1,
            EntryKind::Attestation | EntryKind::Verification | EntryKind::Note | EntryKind::Report => n_evidence += 1,
            EntryKind::Signal
            | EntryKind::Case
            | EntryKind::Suspension
            | EntryKind::Waiver
            | EntryKind::SecurityFix
            | EntryKind::Contract
            | EntryKind::Licence => held.push(r),
            _ => {}
        }
    }
    if let Some(e) = failed.borrow_mut().take() {
        bail!("reading the pack for its report: {e}");
    }
    let name = |k: &Option<KeyId>| match k {
        Some(k) => {
            names.get(k).cloned().unwrap_or_else(|| format!("key {}", &k.to_string()[..16.min(k.to_string().len())]))
        }
        None => "—".to_owned(),
    };
    // Approvals by the digest of the proposal they name.
    let mut approvals: BTreeMap<Sha256Digest, Vec<String>> = BTreeMap::new();
    for (proposal, signer) in &approved {
        approvals.entry(*proposal).or_default().push(name(signer));
    }
    let mut cases: BTreeMap<String, CaseLine> = BTreeMap::new();
    let mut governance = Vec::new();
    for r in held {
        let (i, kind, time, leaf, body) = (&r.index, r.kind, r.time, r.leaf, &r.body);
        let Ok(env) = Envelope::parse(body) else { continue };
        let signer = env.first_signer();
        match kind {
            EntryKind::Signal => {
                let id = format!("case-{i}");
                let about = describe::summary(body);
                cases.insert(id.clone(), CaseLine { id, about, opened: time, index: *i, leaf, moves: vec![] });
            }
            EntryKind::Case | EntryKind::CaseClosure => {
                if let Ok(action) = AdminAction::parse(env.payload())
                    && let ActionKind::CaseTransition { case, .. } = &action.action
                    && let Some(c) = cases.get_mut(case)
                {
                    let approved = approvals.get(&Sha256Digest::of(env.payload()));
                    c.moves.push(format!(
                        "#{i} {time}: {} by {}{}",
                        describe::summary(body),
                        name(&signer),
                        approved.map(|a| format!(", approved by {}", a.join(", "))).unwrap_or_default()
                    ));
                }
            }
            EntryKind::Suspension
            | EntryKind::SuspensionLift
            | EntryKind::Waiver
            | EntryKind::SecurityFix
            | EntryKind::Contract
            | EntryKind::Licence => {
                let Ok(action) = AdminAction::parse(env.payload()) else { continue };
                governance.push(GovernanceLine {
                    index: *i,
                    time,
                    kind: kind.to_string(),
                    summary: describe::summary(body),
                    why: action.why.clone(),
                    proposer: name(&signer),
                    approvers: approvals.get(&Sha256Digest::of(env.payload())).cloned().unwrap_or_default(),
                    leaf,
                });
            }
            _ => {}
        }
    }
    let decision_line = |r: &Read| -> Option<DecisionLine> {
        if !matches!(r.kind, EntryKind::Grant | EntryKind::Withhold) {
            return None;
        }
        let env = Envelope::parse(&r.body).ok()?;
        let d = Decision::parse(env.payload()).ok()?;
        let (i, time, leaf) = (&r.index, r.time.clone(), r.leaf.clone());
        Some(DecisionLine {
            index: *i,
            time,
            deployment: d.deployment.clone(),
            granted: d.verdict == Verdict::Grant,
            // A release the pack names by version if it holds the
            // manifest, else by the start of its digest.
            release: d
                .release
                .map(|r| {
                    releases
                        .get(&r)
                        .cloned()
                        .unwrap_or_else(|| format!("release {}…", r.to_string().get(..16).unwrap_or_default()))
                })
                .unwrap_or_default(),
            expires: d.expires_at.map(|t| t.to_string()).unwrap_or_default(),
            suspension: d.suspension.to_string(),
            unmet: d
                .conditions
                .iter()
                .filter(|c| c.status == ConditionStatus::Unmet)
                .map(|c| (c.condition.clone(), c.reason.clone()))
                .collect(),
            leaf,
        })
    };
    let evidence_line = |r: &Read| -> Option<EvidenceLine> {
        if !matches!(r.kind, EntryKind::Attestation | EntryKind::Verification | EntryKind::Note | EntryKind::Report) {
            return None;
        }
        let env = Envelope::parse(&r.body).ok()?;
        let signer = env.first_signer();
        let (i, kind, time, leaf, body) = (&r.index, r.kind, r.time.clone(), r.leaf.clone(), &r.body);
        Some(EvidenceLine {
            index: *i,
            time,
            kind: kind.to_string(),
            summary: match AdminAction::parse(env.payload()) {
                Ok(AdminAction { action: ActionKind::Note { text }, .. }) => format!("note: {text}"),
                _ => describe::summary(body),
            },
            signer: name(&signer),
            leaf,
        })
    };
    let selection = match &report.selection.id {
        Some(id) => format!("{} {id}", report.selection.kind),
        None => "the whole ledger".to_owned(),
    };
    let window = match (report.selection.from, report.selection.to) {
        (None, None) => String::new(),
        (f, t) => format!(
            ", from {} to {}",
            f.map(|t| t.to_string()).unwrap_or_else(|| "the start".into()),
            t.map(|t| t.to_string()).unwrap_or_else(|| "the checkpoint".into())
        ),
    };
    let page = Report {
        title: format!("Evidence pack: {selection}"),
        selection: format!("{selection}{window}"),
        tree_size: report.tree_size,
        root_hash: report.root_hash.clone(),
        cosignatures: format!("{} of the {} the root requires", report.cosignatures, report.witness_threshold),
        root_version: report.root_version,
        first_root_sha256: report.first_root_sha256.clone(),
        range: report.range.map(|(a, b)| format!("entries {a} to {b}")).unwrap_or_else(|| "no entry".into()),
        entries: report.entries,
        withheld: if report.withheld.is_empty() {
            "none".into()
        } else {
            report.withheld.iter().map(|(k, n)| format!("{n} {k}")).collect::<Vec<_>>().join(", ")
        },
        counts: covenant_core::evidence::HEADINGS
            .iter()
            .filter_map(|h| counts.get(h).map(|n| ((*h).to_owned(), *n)))
            .collect(),
        decisions: Streamed { dir, count: n_decisions, make: &decision_line, failed: &failed },
        cases: cases.into_values().collect(),
        governance,
        evidence: Streamed { dir, count: n_evidence, make: &evidence_line, failed: &failed },
    };
    let file = std::fs::File::create(dir.join("report.html")).context("writing report.html")?;
    let mut out = FmtFile(std::io::BufWriter::new(file), None);
    let rendered = page.render_into(&mut out);
    if let Some(e) = out.1.take() {
        return Err(anyhow::Error::new(e).context("writing report.html"));
    }
    rendered?;
    if let Some(e) = failed.borrow_mut().take() {
        bail!("reading the pack for its report: {e}");
    }
    {
        use std::io::Write as _;
        out.0.flush().context("writing report.html")?;
    }
    Ok(())
}
