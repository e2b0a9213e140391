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

use anyhow::Context as _;
use askama::Template;
use base64::Engine as _;
use covenant_core::describe;
use covenant_core::digest::Sha256Digest;
use covenant_core::envelope::Envelope;
use covenant_core::evidence::{PackEntry, PackIndex, PackReport};
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
struct Report {
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
    decisions: Vec<DecisionLine>,
    cases: Vec<CaseLine>,
    governance: Vec<GovernanceLine>,
    evidence: Vec<EvidenceLine>,
}

/// Writes `report.html` into the pack `dir`, which `report` verified.
pub fn write(dir: &Path, report: &PackReport) -> anyhow::Result<()> {
    let index: PackIndex = serde_json::from_slice(&std::fs::read(dir.join("index.json"))?)?;
    // Kind, time and leaf of each entry, from the verified index.
    let mut meta: BTreeMap<u64, (EntryKind, String, String)> = BTreeMap::new();
    for s in &index.sections {
        for i in &s.items {
            meta.insert(i.index, (i.kind, i.time.to_string(), i.leaf_hash.clone()));
        }
    }
    // Who a key is: the identity entries of the pack, and the release names.
    let mut names: BTreeMap<KeyId, String> = BTreeMap::new();
    let mut releases: BTreeMap<Sha256Digest, String> = BTreeMap::new();
    let mut bodies: Vec<(u64, Vec<u8>)> = Vec::new();
    let file = std::fs::File::open(dir.join("entries.jsonl")).context("opening entries.jsonl")?;
    for line in std::io::BufReader::new(file).lines() {
        let e: PackEntry = serde_json::from_str(&line?)?;
        let body = base64::engine::general_purpose::STANDARD.decode(&e.body)?;
        if let Some(action) = Envelope::parse(&body).ok().and_then(|env| AdminAction::parse(env.payload()).ok())
            && let ActionKind::IssueIdentity { role, subject, signing_key, .. } = &action.action
        {
            names.insert(signing_key.key_id(), format!("{subject} ({role})"));
        }
        if let Some(m) = Envelope::parse(&body).ok().and_then(|env| ReleaseManifest::parse(env.payload()).ok()) {
            releases
                .insert(Sha256Digest::of(Envelope::parse(&body)?.payload()), format!("{} {}", m.product, m.version));
        }
        bodies.push((e.index, body));
    }
    let name = |k: &Option<KeyId>| match k {
        Some(k) => {
            names.get(k).cloned().unwrap_or_else(|| format!("key {}", &k.to_string()[..16.min(k.to_string().len())]))
        }
        None => "—".to_owned(),
    };
    // Approvals by the digest of the proposal they name.
    let mut approvals: BTreeMap<Sha256Digest, Vec<String>> = BTreeMap::new();
    for (_, body) in &bodies {
        let Ok(env) = Envelope::parse(body) else { continue };
        if let Ok(action) = AdminAction::parse(env.payload())
            && let ActionKind::Approve { proposal } = action.action
        {
            let signer = env.first_signer();
            approvals.entry(proposal).or_default().push(name(&signer));
        }
    }
    let mut decisions = Vec::new();
    let mut cases: BTreeMap<String, CaseLine> = BTreeMap::new();
    let mut governance = Vec::new();
    let mut evidence = Vec::new();
    for (i, body) in &bodies {
        let Some((kind, time, leaf)) = meta.get(i).cloned() else { continue };
        let Ok(env) = Envelope::parse(body) else { continue };
        let signer = env.first_signer();
        match kind {
            EntryKind::Grant | EntryKind::Withhold => {
                let Ok(d) = Decision::parse(env.payload()) else { continue };
                decisions.push(DecisionLine {
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
                });
            }
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
            EntryKind::Attestation | EntryKind::Verification | EntryKind::Note | EntryKind::Report => {
                evidence.push(EvidenceLine {
                    index: *i,
                    time,
                    kind: kind.to_string(),
                    summary: match AdminAction::parse(env.payload()) {
                        Ok(AdminAction { action: ActionKind::Note { text }, .. }) => format!("note: {text}"),
                        _ => describe::summary(body),
                    },
                    signer: name(&signer),
                    leaf,
                });
            }
            _ => {}
        }
    }
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
        counts: index.sections.iter().map(|s| (s.heading.clone(), s.items.len())).collect(),
        decisions,
        cases: cases.into_values().collect(),
        governance,
        evidence,
    };
    std::fs::write(dir.join("report.html"), page.render()?).context("writing report.html")?;
    Ok(())
}
