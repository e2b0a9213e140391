//! `covenant audit export` and `covenant audit verify-export`: the evidence
//! pack (`docs/evidence.md`). Export reads the ledger over mutual TLS as the
//! caller (bodies only within its scope), checks the witnessed checkpoint
//! it builds on, and writes the folder; verification reads the folder alone
//! and runs `covenant_core::evidence::verify_pack`, which names the first
//! failure.
//!
//! The folder: `index.json` (the selection, the subject keys
//! for the completeness check, what was withheld, the entries under the
//! due-diligence headings), `checkpoint` (the signed note with its
//! cosignatures), `roots/<version>.json` (the root chain), `headers` (every
//! header of the tree, one per line), `entries.jsonl` (the selected
//! entries: salt, body, inclusion proof) and `decisions.csv`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use covenant_core::digest::Timestamp;
use covenant_core::envelope::Envelope;
use covenant_core::evidence::{
    IndexSectionsSeed, Item, PACK_FORMAT, PackEntry, PackHead, PackReport, Selection, Withheld,
};
use covenant_core::keys::KeyId;
use covenant_core::ledger::{EntryHeader, EntryKind, SubjectKey};
use covenant_core::note;
use covenant_core::root::walk_chain;
use covenant_core::statements::{ActionKind, AdminAction, Decision, Payload as _, RootMetadata};
use covenant_proto::v1 as pb;
use covenant_proto::v1::ledger_service_client::LedgerServiceClient;
use tonic::transport::Channel;

use crate::connect::Connection;
use crate::disktree::{DiskTree, DiskTreeWriter};

/// Entries asked for per page (the server's limit).
const PAGE: u64 = 1024;

/// What to export.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct Select {
    /// A customer: its entries and its deployments'.
    #[arg(long)]
    pub customer: Option<String>,
    /// One deployment's entries.
    #[arg(long)]
    pub deployment: Option<String>,
    /// A misuse case (case-N): its signal, its moves and their approvals,
    /// and what was recorded about its customer while it ran.
    #[arg(long)]
    pub case: Option<String>,
    /// Every entry.
    #[arg(long)]
    pub all: bool,
}

/// `covenant audit export`'s answer.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Exported {
    /// The folder written.
    pub out: PathBuf,
    /// The checkpoint's size it builds on.
    pub tree_size: u64,
    /// Entries written, and entries of the selection withheld (bodies the
    /// caller may not read).
    pub entries: u64,
    /// See `entries`.
    pub withheld: u64,
}

fn parse_time(s: &Option<String>, what: &str) -> anyhow::Result<Option<Timestamp>> {
    s.as_deref()
        .map(|t| Timestamp::parse_rfc3339(t).with_context(|| format!("--{what} {t:?} is not an RFC 3339 time")))
        .transpose()
}

fn progress(what: &str, done: u64, of: u64) {
    use std::io::IsTerminal as _;
    if std::io::stderr().is_terminal() {
        eprint!("\r{what}: {done} of {of}");
        if done == of {
            eprintln!();
        }
    }
}

/// Writes the evidence pack of `select` to `out` (which must not exist or
/// be empty).
pub async fn export(
    conn: &Connection,
    trusted: covenant_core::root::TrustedRoot,
    select: &Select,
    from: &Option<String>,
    to: &Option<String>,
    out: &Path,
) -> anyhow::Result<Exported> {
    let (from, to) = (parse_time(from, "from")?, parse_time(to, "to")?);
    if out.exists() && std::fs::read_dir(out)?.next().is_some() {
        bail!("{} exists and is not empty: name a new folder for the pack", out.display());
    }
    let channel = conn.channel().await?;
    let mut ledger = LedgerServiceClient::new(channel.clone());
    let mut query = covenant_proto::v1::query_service_client::QueryServiceClient::new(channel);

    // The witnessed checkpoint the pack builds on, checked as a verifier will.
    let roots = ledger.get_root_chain(pb::GetRootChainRequest { from_version: 1 }).await?.into_inner().roots;
    let newest = walk_chain(&trusted, roots.iter().map(Vec::as_slice), crate::now())
        .context("the server's root chain does not follow from the trusted root")?;
    let log = newest.ledger_verifiers()?.into_iter().next().context("the root names no ledger key")?;
    let (witnesses, threshold) = newest.witness_policy()?;
    let witnesses: Vec<&note::NoteVerifier> = witnesses.iter().collect();
    // The newest checkpoint is cosigned a moment after it is signed: wait
    // for the witness threshold (bounded) rather than fail at once.
    let deadline = std::time::Instant::now() + WITNESS_WAIT;
    let (cp, verified) = loop {
        let cp = ledger.get_checkpoint(pb::GetCheckpointRequest {}).await?.into_inner().note;
        let verified = note::open_checkpoint(&cp, &log).context("the checkpoint is not signed by the ledger key")?;
        match verified.require_cosignatures(&witnesses, threshold) {
            Ok(_) => break (cp, verified),
            Err(e) if std::time::Instant::now() >= deadline => {
                return Err(anyhow::Error::new(e).context(format!(
                    "the server's newest checkpoint still lacks the witness threshold after {} s; check that \
                     the witnesses run, then export again",
                    WITNESS_WAIT.as_secs()
                )));
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
        }
    };
    let size = verified.checkpoint().size;

    // The selection's subjects, and their keys (the completeness check).
    let (kind, id) = match select {
        Select { customer: Some(c), .. } => ("customer", Some(c.clone())),
        Select { deployment: Some(d), .. } => ("deployment", Some(d.clone())),
        Select { case: Some(c), .. } => ("case", Some(c.clone())),
        _ => ("all", None),
    };
    let mut subjects: Vec<String> = Vec::new();
    // The cases the pack carries (signals carry no subject tag, so they are
    // found through the cases the caller may list), by id, with the index
    // of the signal that opened each.
    let mut cases: BTreeMap<String, u64> = BTreeMap::new();
    let listed = match crate::query::cases(&mut query).await {
        Ok(listed) => listed.cases,
        // Customers and devices may not list cases: their packs hold none.
        Err(_) if kind != "case" => vec![],
        Err(e) => return Err(e.context("listing the cases")),
    };
    match (kind, &id) {
        ("customer", Some(c)) => {
            subjects.push(c.clone());
            let rows = crate::query::fleet(&mut query, Some(c), Default::default()).await?;
            subjects.extend(rows.deployments.into_iter().map(|d| d.id));
            cases.extend(listed.iter().filter(|x| x.customer == *c).map(|x| (x.id.clone(), x.opened_index)));
        }
        ("deployment", Some(d)) => {
            subjects.push(d.clone());
            cases.extend(listed.iter().filter(|x| x.deployment == *d).map(|x| (x.id.clone(), x.opened_index)));
        }
        ("case", Some(c)) => {
            let case = listed.into_iter().find(|x| x.id == *c).with_context(|| format!("no case {c} you may see"))?;
            cases.insert(case.id.clone(), case.opened_index);
            if case.deployment.is_empty() {
                // About the whole customer: it holds back each deployment.
                let rows = crate::query::fleet(&mut query, Some(&case.customer), Default::default()).await?;
                subjects.extend(rows.deployments.into_iter().map(|d| d.id));
            } else {
                subjects.push(case.deployment);
            }
            subjects.push(case.customer);
        }
        _ => {}
    }
    let case_signal = cases.values().min().copied();
    let signals: BTreeSet<u64> = cases.values().copied().collect();
    let handed = ledger.get_subject_keys(pb::GetSubjectKeysRequest {}).await?.into_inner().keys;
    let handed: BTreeMap<String, SubjectKey> =
        handed.into_iter().filter_map(|k| Some((k.subject, SubjectKey(k.key.try_into().ok()?)))).collect();
    let mut keys: BTreeMap<String, SubjectKey> =
        handed.iter().filter(|(s, _)| subjects.contains(s)).map(|(s, k)| (s.clone(), *k)).collect();
    if let Some(missing) = subjects.iter().find(|s| !keys.contains_key(*s)) {
        bail!("your identity is not entitled to {missing}: it cannot export a pack about it");
    }

    // Pass 1: every header (the tree, the selection, the identities).
    std::fs::create_dir_all(out.join("roots")).with_context(|| format!("creating {}", out.display()))?;
    let mut headers_file = std::io::BufWriter::new(std::fs::File::create(out.join("headers"))?);
    // The tree's levels go to files beside the pack (removed at the end):
    // memory stays flat in the ledger's size.
    let mut tree = DiskTreeWriter::create(&out.join(WORK).join("tree"))?;
    let mut selected = IndexSet::default();
    let mut identities: Vec<u64> = Vec::new();
    let mut case_candidates: Vec<u64> = Vec::new();
    // Approvals (untagged) in the selection's time: those of a proposal in
    // the pack go in, so that the report says who approved it.
    let mut approval_candidates: Vec<u64> = Vec::new();
    let mut index = 0;
    while index < size {
        let end = (index + PAGE).min(size);
        let page = crate::ledger_page(&mut ledger, index, end, false).await?;
        for e in page {
            if e.header.contains(&b'\n') {
                bail!("entry {}'s header holds a newline", e.index);
            }
            headers_file.write_all(&e.header)?;
            headers_file.write_all(b"\n")?;
            tree.push_leaf(&e.header)?;
            let header = EntryHeader::parse(&e.header).with_context(|| format!("entry {}'s header", e.index))?;
            if header.kind == EntryKind::Identity {
                identities.push(e.index);
            }
            let in_time = from.is_none_or(|f| header.time >= f) && to.is_none_or(|t| header.time <= t);
            let tagged = keys.values().any(|k| header.tags.contains(&k.tag(&header.body_digest)));
            let after = case_signal.is_some_and(|s| e.index >= s);
            if after && matches!(header.kind, EntryKind::Case | EntryKind::CaseClosure | EntryKind::Approval) {
                case_candidates.push(e.index);
            }
            if header.kind == EntryKind::Approval && in_time && kind != "all" {
                approval_candidates.push(e.index);
            }
            let ours = match kind {
                "all" => true,
                // A case: its signal, and what was recorded about its
                // customer from then on.
                "case" => signals.contains(&e.index) || (after && tagged),
                _ => tagged || signals.contains(&e.index),
            };
            // The registrations of the selection's customer and deployments
            // go in whatever the range: they bind its subject keys.
            let registers = tagged && matches!(header.kind, EntryKind::Customer | EntryKind::Deployment);
            if (ours && in_time) || registers {
                selected.insert(e.index);
            }
        }
        index = end;
        progress("headers", index, size);
    }
    headers_file.flush()?;
    if tree.size() != size || tree.root() != verified.checkpoint().root_hash {
        bail!("the headers the server served do not reproduce its signed checkpoint of size {size}");
    }
    let tree = tree.finish()?;

    // A case's moves and their approvals: found by their bodies.
    let mut wanted_keys: BTreeSet<KeyId> = BTreeSet::new();
    if !cases.is_empty() && kind != "all" {
        let mut moves_proposed = BTreeSet::new();
        for i in &case_candidates {
            let (body, _, header) = fetch(&mut ledger, *i).await?;
            let Some(action) = Envelope::parse(&body).ok().and_then(|e| AdminAction::parse(e.payload()).ok()) else {
                continue;
            };
            let ours = match &action.action {
                ActionKind::CaseTransition { case, .. } => {
                    let ours = cases.contains_key(case);
                    if ours && let Ok(env) = Envelope::parse(&body) {
                        // How an approval names this move, if it is a proposal.
                        moves_proposed.insert(covenant_core::digest::Sha256Digest::of(env.payload()));
                    }
                    ours
                }
                ActionKind::Approve { proposal } => moves_proposed.contains(proposal),
                _ => false,
            };
            let t = EntryHeader::parse(&header).with_context(|| format!("entry {i}'s header"))?.time;
            let in_time = from.is_none_or(|f| t >= f) && to.is_none_or(|x| t <= x);
            if ours && in_time {
                selected.insert(*i);
            }
        }
    }

    // Pass 2: the selected bodies, each written out as it comes (bodies are
    // never all held), and the keys whose registrations they need.
    let mut withheld = Vec::new();
    let part = out.join("entries.jsonl.part");
    let mut pack = PackWriter::create(out, &tree, &part)?;
    let mut found: BTreeSet<KeyId> = BTreeSet::new();
    let mut registrations_in_pack: BTreeSet<KeyId> = BTreeSet::new();
    // The payload digests of the admin actions written (how approvals name
    // a proposal).
    let mut proposed: BTreeSet<covenant_core::digest::Sha256Digest> = BTreeSet::new();
    // The admin keys that signed the pack's actions (named if possible).
    let mut named: BTreeSet<KeyId> = BTreeSet::new();
    // Runs of selected indices (a gap of up to RUN_GAP joined), each read
    // in pages: a customer's entries spread over a long ledger cost a page
    // per run, not every body between them.
    for (run_start, run_end) in selected.runs(RUN_GAP) {
        let mut start = run_start;
        while start < run_end {
            let end = (start + PAGE).min(run_end);
            let page = crate::ledger_page(&mut ledger, start, end, true).await?;
            for e in page {
                if !selected.contains(e.index) {
                    continue;
                }
                let entry_kind =
                    EntryHeader::parse(&e.header).with_context(|| format!("entry {}'s header", e.index))?.kind;
                if e.body.is_empty() {
                    if matches!(entry_kind, EntryKind::Grant | EntryKind::Withhold) {
                        bail!("your identity cannot read decision {}: a pack never withholds a decision", e.index);
                    }
                    // A signal carries no subject tag, so it is the
                    // selection's only by the exporter's word: one this
                    // identity may not read is left out, not listed (a
                    // scoped auditor sees the case, never the report).
                    if entry_kind == EntryKind::Signal {
                        continue;
                    }
                    withheld.push(Withheld { index: e.index, kind: entry_kind });
                    continue;
                }
                wanted_keys.extend(signers_to_register(&e.body));
                registrations_in_pack.extend(registered_key(&e.body));
                // A deployment registered for the selection's customer but
                // not (yet) in force (a proposal waiting for approval, or
                // one that lapsed) is not in the fleet: its key, which the
                // verifier asks for, comes with its registration.
                if entry_kind == EntryKind::Deployment
                    && let Ok(env) = Envelope::parse(&e.body)
                    && let Ok(action) = AdminAction::parse(env.payload())
                    && let ActionKind::RegisterDeployment { deployment, customer, .. } = action.action
                    && subjects.contains(&customer)
                    && !keys.contains_key(&deployment)
                    && let Some(k) = handed.get(&deployment)
                {
                    keys.insert(deployment, *k);
                }
                if let Ok(env) = Envelope::parse(&e.body)
                    && AdminAction::parse(env.payload()).is_ok()
                {
                    proposed.insert(covenant_core::digest::Sha256Digest::of(env.payload()));
                    named.extend(env.first_signer());
                }
                let (line, item, row) = pack.entry(e.index, &e.header, &e.body, &e.salt)?;
                pack.keep(&line, item, row)?;
            }
            start = end;
        }
        progress("bodies", pack.written, selected.len());
    }
    pack.flush()?;
    // Entries outside the runs read (approvals, registrations): few, held
    // with their index items until merged in by index.
    let mut registrations: BTreeMap<u64, (String, Item)> = BTreeMap::new();
    // The approvals of the pack's proposals (a reader that may not read
    // approvals gets none: the report says none is in the pack).
    for i in approval_candidates {
        if selected.contains(i) || registrations.contains_key(&i) {
            continue;
        }
        let (body, salt, header) = fetch(&mut ledger, i).await?;
        let approves = Envelope::parse(&body)
            .ok()
            .and_then(|env| AdminAction::parse(env.payload()).ok())
            .is_some_and(|a| matches!(a.action, ActionKind::Approve { proposal } if proposed.contains(&proposal)));
        if approves {
            named.extend(Envelope::parse(&body).ok().and_then(|e| e.first_signer()));
            let (line, item, _) = pack.entry(i, &header, &body, &salt)?;
            registrations.insert(i, (line, item));
        }
    }
    // The identity entries that registered those keys, when not already in
    // the pack: few, held until they are merged in by index.
    found.extend(wanted_keys.iter().filter(|k| registrations_in_pack.contains(k)).copied());
    // The admins who signed the pack's actions are named too, where the
    // caller may read their registrations (the report shows who proposed
    // and who approved); their signatures need only the root.
    named.retain(|k| !registrations_in_pack.contains(k));
    let mut named_found: BTreeSet<KeyId> = BTreeSet::new();
    for i in identities {
        if found.len() == wanted_keys.len() && named_found.len() == named.len() {
            break;
        }
        if selected.contains(i) {
            continue;
        }
        let (body, salt, header) = fetch(&mut ledger, i).await?;
        let Some(k) = registered_key(&body) else { continue };
        let needed = wanted_keys.contains(&k) && found.insert(k);
        let naming = named.contains(&k) && named_found.insert(k);
        if needed || naming {
            let (line, item, _) = pack.entry(i, &header, &body, &salt)?;
            registrations.insert(i, (line, item));
        }
    }
    if let Some(k) = wanted_keys.iter().find(|k| !found.contains(k)) {
        bail!("your identity cannot read the registration of key {k}, which signed an entry of the pack");
    }
    // entries.jsonl: the written entries and the registrations, by index.
    {
        let mut entries_file = std::io::BufWriter::new(std::fs::File::create(out.join("entries.jsonl"))?);
        let written = std::io::BufReader::new(std::fs::File::open(&part)?);
        let mut pending = registrations.iter().peekable();
        for line in written.lines() {
            let line = line?;
            let index = serde_json::from_str::<PackEntry>(&line)?.index;
            while let Some((_, (r, _))) = pending.next_if(|(i, _)| **i < index) {
                entries_file.write_all(r.as_bytes())?;
            }
            entries_file.write_all(line.as_bytes())?;
            entries_file.write_all(b"\n")?;
        }
        for (_, (r, _)) in pending {
            entries_file.write_all(r.as_bytes())?;
        }
        entries_file.flush()?;
        std::fs::remove_file(&part)?;
    }
    let written = pack.written;
    let sections = pack.finish(registrations.into_values().map(|(_, item)| item))?;
    // index.json, its sections streamed from the files the items went to,
    // as `serde_json::to_writer_pretty` of a `PackIndex` writes it.
    {
        let index = IndexOut {
            format: PACK_FORMAT,
            selection: Selection { kind: kind.into(), id, from, to },
            tree_size: size,
            subject_keys: keys.iter().map(|(s, k)| (s.clone(), hex::encode(k.0))).collect(),
            withheld: &withheld,
            sections,
        };
        let mut f = std::io::BufWriter::new(std::fs::File::create(out.join("index.json"))?);
        serde_json::to_writer_pretty(&mut f, &index)?;
        f.flush()?;
    }
    tree.remove()?;
    std::fs::remove_dir_all(out.join(WORK))?;
    std::fs::write(out.join("checkpoint"), &cp)?;
    for r in &roots {
        let version = Envelope::parse(r).ok().and_then(|e| RootMetadata::parse(e.payload()).ok()).map(|m| m.version);
        let version = version.context("a root of the chain does not parse")?;
        std::fs::write(out.join("roots").join(format!("{version}.json")), r)?;
    }
    // The exporter checks what it wrote as a verifier will, then writes the
    // report a person reads from the verified files.
    let report = verify_export(out, None).context("the pack just written does not verify")?;
    crate::report::write(out, &report)?;
    Ok(Exported { out: out.to_path_buf(), tree_size: size, entries: written, withheld: withheld.len() as u64 })
}

/// How long export waits for the newest checkpoint's witness cosignatures
/// (a witness round, its retry and a margin, as the server waits for one).
const WITNESS_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// The largest gap between two selected indices read in one run.
const RUN_GAP: u64 = 64;

/// The folder, inside the pack's, that export works in (the tree's levels,
/// the index's items by heading); removed when the pack is written.
const WORK: &str = ".export";

/// A set of ledger indices as half-open runs `[start, end)` by start: the
/// whole ledger (`--all`) is one run, so memory follows the selection's
/// shape, not the ledger's size.
#[derive(Debug, Default)]
struct IndexSet {
    runs: BTreeMap<u64, u64>,
    len: u64,
}

impl IndexSet {
    fn contains(&self, i: u64) -> bool {
        self.runs.range(..=i).next_back().is_some_and(|(_, end)| i < *end)
    }

    fn insert(&mut self, i: u64) {
        if self.contains(i) {
            return;
        }
        self.len += 1;
        let (mut start, mut end) = (i, i + 1);
        if let Some((&s, &e)) = self.runs.range(..i).next_back()
            && e == i
        {
            start = s;
        }
        if let Some(e) = self.runs.remove(&(i + 1)) {
            end = e;
        }
        self.runs.insert(start, end);
    }

    fn len(&self) -> u64 {
        self.len
    }

    /// The runs, those less than `gap` apart joined.
    fn runs(&self, gap: u64) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (&s, &e) in &self.runs {
            match out.last_mut() {
                Some((_, end)) if s < *end + gap => *end = e,
                _ => out.push((s, e)),
            }
        }
        out
    }
}

/// Turns entries into `entries.jsonl` lines (with their proofs); keeps the
/// entries' index items in one file per heading and writes the CSV's rows
/// as they come, in index order.
struct PackWriter<'a> {
    out: std::io::BufWriter<std::fs::File>,
    tree: &'a DiskTree,
    /// One file of items (JSON lines) per heading of `HEADINGS`, and how many.
    headings: Vec<(std::io::BufWriter<std::fs::File>, u64)>,
    dir: PathBuf,
    csv: std::io::BufWriter<std::fs::File>,
    last_row: Option<u64>,
    written: u64,
}

fn heading_at(kind: EntryKind) -> usize {
    let h = covenant_core::evidence::heading(kind);
    covenant_core::evidence::HEADINGS.iter().position(|x| *x == h).unwrap_or(0)
}

impl<'a> PackWriter<'a> {
    fn create(out: &Path, tree: &'a DiskTree, part: &Path) -> anyhow::Result<Self> {
        let dir = out.join(WORK).join("sections");
        std::fs::create_dir_all(&dir)?;
        let mut headings = Vec::new();
        for n in 0..covenant_core::evidence::HEADINGS.len() {
            headings.push((std::io::BufWriter::new(std::fs::File::create(dir.join(n.to_string()))?), 0));
        }
        let mut csv = std::io::BufWriter::new(std::fs::File::create(out.join("decisions.csv"))?);
        csv.write_all(covenant_core::evidence::CSV_HEADER.as_bytes())?;
        Ok(PackWriter {
            out: std::io::BufWriter::new(std::fs::File::create(part)?),
            tree,
            headings,
            dir,
            csv,
            last_row: None,
            written: 0,
        })
    }

    /// The line of entry `i` (ending in a newline), its index item and its
    /// CSV row (a decision's).
    fn entry(
        &mut self,
        i: u64,
        header: &[u8],
        body: &[u8],
        salt: &[u8],
    ) -> anyhow::Result<(String, Item, Option<String>)> {
        let leaf = covenant_core::merkle::leaf_hash(header);
        if self.tree.leaf_hash(i)? != leaf {
            bail!("the server served entry {i} with a header other than the one in its tree");
        }
        let parsed = EntryHeader::parse(header).with_context(|| format!("entry {i}'s header"))?;
        let proof = self.tree.inclusion_proof(i)?;
        let line = PackEntry {
            index: i,
            salt: hex::encode(salt),
            body: base64::engine::general_purpose::STANDARD.encode(body),
            proof: proof.iter().map(hex::encode).collect(),
        };
        let leaf = hex::encode(leaf);
        let item = covenant_core::evidence::item(i, parsed.time, parsed.kind, &leaf, body);
        let row = covenant_core::evidence::csv_row(i, parsed.time, &leaf, body);
        self.written += 1;
        Ok((serde_json::to_string(&line)? + "\n", item, row))
    }

    /// Writes an entry read in index order: its line, its item, its row.
    fn keep(&mut self, line: &str, item: Item, row: Option<String>) -> anyhow::Result<()> {
        self.out.write_all(line.as_bytes())?;
        if let Some(row) = row {
            if self.last_row.is_some_and(|last| last >= item.index) {
                bail!("decision {} came out of index order", item.index);
            }
            self.last_row = Some(item.index);
            self.csv.write_all(row.as_bytes())?;
        }
        let (f, n) = self.headings.get_mut(heading_at(item.kind)).context("a heading")?;
        serde_json::to_writer(&mut *f, &item)?;
        f.write_all(b"\n")?;
        *n += 1;
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush()?;
        self.csv.flush()?;
        Ok(())
    }

    /// The index's sections, to stream: the items kept, and `extra` (the
    /// entries read out of order, few), merged by index.
    fn finish(self, extra: impl IntoIterator<Item = Item>) -> anyhow::Result<SectionsOut> {
        let mut by: BTreeMap<usize, Vec<Item>> = BTreeMap::new();
        for i in extra {
            by.entry(heading_at(i.kind)).or_default().push(i);
        }
        let mut sections = Vec::new();
        for (n, (mut f, count)) in self.headings.into_iter().enumerate() {
            f.flush()?;
            let mut extra = by.remove(&n).unwrap_or_default();
            extra.sort_by_key(|i| i.index);
            if count > 0 || !extra.is_empty() {
                let heading = covenant_core::evidence::HEADINGS.get(n).copied().unwrap_or_default();
                sections.push(SectionOut { heading, items: ItemsOut { path: self.dir.join(n.to_string()), extra } });
            }
        }
        Ok(SectionsOut(sections))
    }
}

/// `index.json` as written: a `PackIndex`, field for field, its sections
/// streamed.
#[derive(serde::Serialize)]
struct IndexOut<'a> {
    format: &'a str,
    selection: Selection,
    tree_size: u64,
    subject_keys: BTreeMap<String, String>,
    withheld: &'a [Withheld],
    sections: SectionsOut,
}

#[derive(serde::Serialize)]
struct SectionsOut(Vec<SectionOut>);

/// A `Section`, its items read from a file as they are written out.
#[derive(serde::Serialize)]
struct SectionOut {
    heading: &'static str,
    items: ItemsOut,
}

struct ItemsOut {
    path: PathBuf,
    extra: Vec<Item>,
}

impl serde::Serialize for ItemsOut {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error as _, SerializeSeq as _};
        let file = std::fs::File::open(&self.path).map_err(S::Error::custom)?;
        let mut seq = s.serialize_seq(None)?;
        let mut extra = self.extra.iter().peekable();
        for line in std::io::BufReader::new(file).lines() {
            let line = line.map_err(S::Error::custom)?;
            let item: Item = serde_json::from_str(&line).map_err(S::Error::custom)?;
            while let Some(x) = extra.next_if(|x| x.index < item.index) {
                seq.serialize_element(x)?;
            }
            seq.serialize_element(&item)?;
        }
        for x in extra {
            seq.serialize_element(x)?;
        }
        seq.end()
    }
}

async fn fetch(ledger: &mut LedgerServiceClient<Channel>, index: u64) -> anyhow::Result<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    let e = ledger
        .get_entries(pb::GetEntriesRequest { start: index, end: index + 1, with_bodies: true })
        .await?
        .into_inner()
        .entries
        .into_iter()
        .next()
        .with_context(|| format!("entry {index} was not served"))?;
    Ok((e.body, e.salt, e.header))
}

/// The keys whose registrations a verifier needs for `body`: the signer of
/// what a person or device signed, and a decision's device.
fn signers_to_register(body: &[u8]) -> Vec<KeyId> {
    let Ok(placed) = covenant_core::state::classify(body) else { return vec![] };
    let first = || Envelope::parse(body).ok()?.first_signer();
    match placed.kind {
        EntryKind::Attestation | EntryKind::Verification | EntryKind::Report | EntryKind::Signal => {
            first().into_iter().collect()
        }
        EntryKind::Grant | EntryKind::Withhold => Envelope::parse(body)
            .ok()
            .and_then(|e| Decision::parse(e.payload()).ok())
            .and_then(|d| Envelope::parse(&d.checkin).ok()?.first_signer())
            .into_iter()
            .collect(),
        _ => vec![],
    }
}

/// The signing key an identity entry registers.
fn registered_key(body: &[u8]) -> Option<KeyId> {
    let action = AdminAction::parse(Envelope::parse(body).ok()?.payload()).ok()?;
    match action.action {
        ActionKind::IssueIdentity { signing_key, .. } => Some(signing_key.key_id()),
        _ => None,
    }
}

/// Verifies the pack in `dir` with nothing but its files (and `trusted`, a
/// root the verifier holds, if given).
pub fn verify_export(dir: &Path, trusted: Option<&Path>) -> anyhow::Result<PackReport> {
    let read =
        |name: &str| std::fs::read(dir.join(name)).with_context(|| format!("reading {}", dir.join(name).display()));
    let open = |name: &str| {
        std::fs::File::open(dir.join(name))
            .map(|f| std::io::BufReader::with_capacity(64 * 1024, f))
            .with_context(|| format!("opening {}", dir.join(name).display()))
    };
    // index.json is read twice as a stream, never held: its head, then its
    // sections item by item into a digest.
    let index: PackHead = serde_json::from_reader(open("index.json")?).context("index.json is not a pack index")?;
    let sections = {
        use serde::de::DeserializeSeed as _;
        let mut de = serde_json::Deserializer::from_reader(open("index.json")?);
        let digest = IndexSectionsSeed.deserialize(&mut de).context("index.json is not a pack index")?;
        de.end().context("index.json is not a pack index")?;
        digest
    };
    let mut roots: Vec<(u64, Vec<u8>)> = Vec::new();
    for f in std::fs::read_dir(dir.join("roots")).context("reading the pack's roots/")? {
        let path = f?.path();
        let version: u64 = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("{} is not named VERSION.json", path.display()))?;
        roots.push((version, std::fs::read(&path)?));
    }
    roots.sort();
    let roots: Vec<Vec<u8>> = roots.into_iter().map(|(_, r)| r).collect();
    let trusted = trusted.map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display()))).transpose()?;
    let checkpoint = read("checkpoint")?;
    let csv = chunks(open("decisions.csv")?, "decisions.csv");
    let headers = lines(open("headers")?, MAX_HEADER_LINE, "headers");
    let entries = lines(open("entries.jsonl")?, MAX_ENTRY_LINE, "entries.jsonl").enumerate().map(|(n, l)| {
        let l = l?;
        serde_json::from_slice::<PackEntry>(&l).map_err(|e| format!("line {} is not an entry: {e}", n + 1))
    });
    Ok(covenant_core::evidence::verify_pack_streamed(
        &index,
        &sections,
        &roots,
        trusted.as_deref(),
        &checkpoint,
        headers,
        entries,
        csv,
    )?)
}

/// The bytes of `r` in chunks of up to 64 KiB.
fn chunks(mut r: impl std::io::Read, what: &'static str) -> impl Iterator<Item = Result<Vec<u8>, String>> {
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut buf = vec![0u8; 64 * 1024];
        match r.read(&mut buf) {
            Ok(0) => {
                done = true;
                None
            }
            Ok(n) => {
                buf.truncate(n);
                Some(Ok(buf))
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Some(Ok(Vec::new())),
            Err(e) => {
                done = true;
                Some(Err(format!("{what}: {e}")))
            }
        }
    })
}

/// The longest `headers` line read (a header is at most 8 KiB).
const MAX_HEADER_LINE: usize = 16 * 1024;
/// The longest `entries.jsonl` line read (a 1 MiB envelope in base64, its
/// salt and proof).
const MAX_ENTRY_LINE: usize = 2 * 1024 * 1024;

/// The lines of `r`, each of which must end in `\n` and be at most `max`
/// bytes: a line past it, or a last line without its newline, is an error
/// naming `what` (the format requires the newline; a verifier must not read
/// without bound).
fn lines(r: impl std::io::BufRead, max: usize, what: &'static str) -> impl Iterator<Item = Result<Vec<u8>, String>> {
    let mut r = r.take(0);
    let mut n = 0u64;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        n += 1;
        let mut line = Vec::new();
        r.set_limit(max as u64 + 1);
        match r.read_until(b'\n', &mut line) {
            Ok(0) => {
                done = true;
                None
            }
            Ok(_) if line.last() == Some(&b'\n') => {
                line.pop();
                Some(Ok(line))
            }
            Ok(_) => {
                done = true;
                Some(Err(if line.len() > max {
                    format!("{what}: line {n} is longer than {max} bytes")
                } else {
                    format!("{what}: line {n} does not end with a newline")
                }))
            }
            Err(e) => {
                done = true;
                Some(Err(format!("{what}: reading line {n}: {e}")))
            }
        }
    })
}
