//! `covenant audit`: an auditor's view of the ledger. `verify` follows the
//! ledger from the last checkpoint it verified (kept in a local state file),
//! checks the checkpoint's signature and its consistency with what it saw
//! before, and recomputes the tree from every entry header; a rewritten
//! history (a fork) fails, and so does a tampered copy of the files
//! (`--ledger DIR`). The other commands print one thing exactly.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use covenant_core::ledger::{EntryHeader, Keyring, SubjectKey};
use covenant_core::merkle::{self, CompactRange, Hash};
use covenant_core::note::{self, NoteVerifier, TlogProof, VerifiedCheckpoint};
use covenant_core::root::{RootPolicy, TrustedRoot, walk_chain};
use covenant_core::state::State;
use covenant_core::tiles::{self, TileFiles};
use covenant_proto::v1 as pb;
use covenant_proto::v1::ledger_service_client::LedgerServiceClient;
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use crate::connect::Connection;
use crate::now;
use crate::output::{self, Verified};

/// Entries asked for per page (the server's limit).
const PAGE: u64 = 1024;

/// The auditor's commands.
#[derive(Debug, clap::Subcommand)]
pub enum Audit {
    /// Verifies the ledger: checkpoint signature, consistency with the last
    /// verified checkpoint, and the tree recomputed from every header.
    /// Exits non-zero, naming the failure, on any mismatch.
    Verify {
        /// Also fetch every body, check it against its header's digest, and
        /// replay the registry (every signature, every rule) from entry 0.
        #[arg(long)]
        bodies: bool,
        /// Verify the ledger's published files offline instead (a copy of
        /// the server's `ledger/public/` folder, or its URL's files mirrored:
        /// `checkpoint` and `tile/`) against the trusted root.
        #[arg(long, value_name = "DIR")]
        ledger: Option<PathBuf>,
        /// Where the last verified checkpoint is kept (default:
        /// IDENTITY/audit-state.json).
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
    },
    /// The public transparency report: per period, the grants, withholds,
    /// suspensions raised and lifted, and cases opened and closed, counted
    /// from the entries' public headers alone, with the checkpoint they hash
    /// to. From the server (any identity), or with --ledger from a plain copy
    /// of the ledger's published files and --root, with no identity: both
    /// give the same output for the same checkpoint. Text by default, --json
    /// for scripts, --html for one self-contained page (docs/ledger.md,
    /// "The transparency report").
    ///
    /// Example: covenant audit transparency --ledger public/ --root root.json
    /// --from 2026-01-01 --to 2027-01-01 --period quarter --html > report.html
    Transparency {
        /// Count a copy of the published files (`checkpoint` and `tile/`,
        /// the server's `ledger/public/`) instead of asking a server.
        #[arg(long, value_name = "DIR")]
        ledger: Option<PathBuf>,
        /// The first instant counted: a date (2026-01-01, midnight UTC) or
        /// an RFC 3339 time.
        #[arg(long)]
        from: String,
        /// The instant after the last counted (exclusive), as --from.
        #[arg(long)]
        to: String,
        /// The length of one row: day, week (ISO, from Monday), month,
        /// quarter or year, in UTC.
        #[arg(long, default_value = "month")]
        period: covenant_core::transparency::Period,
        /// Print one self-contained HTML page (no script, nothing fetched)
        /// instead of text.
        #[arg(long)]
        html: bool,
    },
    /// Prints the latest checkpoint (C2SP signed note with cosignatures).
    Checkpoint,
    /// Writes entry INDEX's header bytes (the Merkle leaf) to stdout.
    Entry {
        /// The entry's index.
        index: u64,
    },
    /// Writes entry INDEX's body (the exact envelope bytes) to stdout.
    Body {
        /// The entry's index.
        index: u64,
    },
    /// Prints entry INDEX's inclusion proof against the latest checkpoint,
    /// as a C2SP tlog-proof.
    Proof {
        /// The entry's index.
        index: u64,
    },
    /// Follows the ledger: verifies each new checkpoint as it arrives
    /// (signature, consistency with the previous one) until interrupted.
    Watch,
    /// Replays the whole ledger (`docs/design.md`, principle 2): fetches every entry
    /// with its body, checks them against the signed checkpoint, folds the
    /// state and re-evaluates every grant and withhold against the state
    /// before it and the check-in it carries. Exits non-zero on any
    /// mismatch, naming each by index. Needs an admin or full-scope auditor.
    Replay,
    /// Writes an evidence pack: the entries about a customer, a deployment,
    /// a case or everything (bodies only within your scope), each with its
    /// inclusion proof against one witnessed checkpoint, with the root chain,
    /// every header (for the completeness check), an index.json sorted under
    /// the due-diligence headings and decisions.csv. It verifies with
    /// `covenant audit verify-export` and no server (docs/evidence.md).
    Export {
        /// What to export (one of --customer, --deployment, --case, --all).
        #[command(flatten)]
        select: crate::evidence::Select,
        /// Only entries at or after this ledger time (RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// Only entries at or before this ledger time (RFC 3339).
        #[arg(long)]
        to: Option<String>,
        /// The folder to write (new or empty).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Verifies an evidence pack with nothing but its files: the root chain
    /// (from --root if given, else trusting the pack's first root), the
    /// witnessed checkpoint, every header against it, every entry's body,
    /// proof and signature, and that no entry of the selection is missing.
    /// Exits non-zero naming the first failure.
    VerifyExport {
        /// The pack's folder.
        dir: PathBuf,
        /// Refuse a pack that lists any entry of its selection as withheld
        /// (one the exporter could not read, or chose not to show).
        #[arg(long)]
        require_complete: bool,
    },
}

/// What the auditor keeps between runs.
#[derive(Debug, Serialize, Deserialize)]
struct AuditState {
    size: u64,
    root: String,
    peaks: Vec<String>,
    checkpoint: String,
}

fn decode_hash(s: &str) -> anyhow::Result<Hash> {
    let mut h = [0u8; 32];
    hex::decode_to_slice(s, &mut h).context("the audit state holds a malformed hash")?;
    Ok(h)
}

/// The trusted root: `--root` or the identity's `root.json`, then the chain.
fn provisioned_root(conn: &Connection, root: Option<&Path>) -> anyhow::Result<TrustedRoot> {
    let path = match root {
        Some(p) => p.to_path_buf(),
        None => conn.identity_dir()?.join("root.json"),
    };
    let bytes = std::fs::read(&path).with_context(|| format!("reading the trusted root {}", path.display()))?;
    TrustedRoot::provision(&bytes, now(), RootPolicy { allow_development: true })
        .with_context(|| format!("the root in {} is not trusted", path.display()))
}

fn ledger_verifier(root: &TrustedRoot) -> anyhow::Result<NoteVerifier> {
    root.ledger_verifiers()?.into_iter().next().context("the root names no ledger key")
}

/// Runs an audit command.
pub async fn run(cmd: Audit, conn: &Connection, root: Option<&Path>, json: bool) -> anyhow::Result<()> {
    match cmd {
        Audit::Verify { bodies, ledger: Some(dir), .. } => {
            let trusted = provisioned_root(conn, root)?;
            let report = verify_files_offline(&dir, &trusted, bodies)?;
            print(json, &report, || {
                format!(
                    "The ledger's files in {} verify: {} entries, root {}.",
                    dir.display(),
                    report.size,
                    report.root
                )
            })
        }
        Audit::Verify { bodies, ledger: None, state } => {
            let state_path = match state {
                Some(p) => p,
                None => conn.identity_dir()?.join("audit-state.json"),
            };
            let mut client = LedgerServiceClient::new(conn.channel().await?);
            let trusted = provisioned_root(conn, root)?;
            let report = verify_online(&mut client, trusted, &state_path, bodies).await?;
            if report.cosignatures < report.witness_threshold && !json {
                eprintln!(
                    "warning: the checkpoint carries {} and the root asks {}; agents will not accept it until witnesses cosign",
                    crate::counted(report.cosignatures, "valid witness cosignature", "valid witness cosignatures"),
                    report.witness_threshold
                );
            }
            print(json, &report, || {
                format!(
                    "Verified the ledger up to size {} (root {}): {} new entries{}, consistent with size {}. Cosignatures: {} of {} required.",
                    report.size,
                    report.root,
                    report.entries_checked,
                    if bodies { format!(", {} bodies and signatures", report.bodies_checked) } else { String::new() },
                    report.previous_size,
                    report.cosignatures,
                    report.witness_threshold
                )
            })
        }
        Audit::Export { select, from, to, out } => {
            let trusted = provisioned_root(conn, root)?;
            let done = crate::evidence::export(conn, trusted, &select, &from, &to, &out).await?;
            print(json, &done, || {
                format!(
                    "Wrote the evidence pack {}: {} entries ({} withheld, outside your scope) against the witnessed checkpoint of size {}. Check it with: covenant audit verify-export {}",
                    done.out.display(),
                    done.entries,
                    done.withheld,
                    done.tree_size,
                    done.out.display()
                )
            })
        }
        Audit::VerifyExport { dir, require_complete } => {
            let report = crate::evidence::verify_export(&dir, root)
                .with_context(|| format!("the evidence pack {} does not verify", dir.display()))?;
            let withheld: u64 = report.withheld.values().sum();
            if require_complete && withheld > 0 {
                bail!(
                    "the evidence pack {} verifies, but withholds {} of its selection ({}): --require-complete \
                     refuses it",
                    dir.display(),
                    crate::counted(usize::try_from(withheld).unwrap_or(usize::MAX), "entry", "entries"),
                    report.withheld.iter().map(|(k, n)| format!("{n} {k}")).collect::<Vec<_>>().join(", ")
                );
            }
            print(json, &report, || {
                format!(
                    "The evidence pack {} verifies: {} entries ({} withheld) of {} selection{}, complete for entries \
                     {}, against the checkpoint of size {} (root {}) with {} of {} witness cosignatures; root version \
                     {}{}.",
                    dir.display(),
                    report.entries,
                    withheld,
                    report.selection.kind,
                    report.selection.id.as_deref().map(|i| format!(" {i}")).unwrap_or_default(),
                    report.range.map(|(a, b)| format!("{a} to {b}")).unwrap_or_else(|| "none".into()),
                    report.tree_size,
                    report.root_hash,
                    report.cosignatures,
                    report.witness_threshold,
                    report.root_version,
                    if report.trusted_on_first_use {
                        format!(
                            " (the pack's first root was trusted on first use: compare its SHA-256 {} with the \
                             vendor's published root, or pass --root)",
                            report.first_root_sha256
                        )
                    } else {
                        String::new()
                    }
                )
            })
        }
        Audit::Transparency { ledger, from, to, period, html } => {
            if html && json {
                bail!("choose one of --html and --json");
            }
            let from = crate::transparency::parse_instant(&from, "from")?;
            let to = crate::transparency::parse_instant(&to, "to")?;
            let trusted = provisioned_root(conn, root)?;
            let report = match ledger {
                Some(dir) => crate::transparency::from_files(&dir, &trusted, from, to, period)?,
                None => crate::transparency::from_server(conn.channel().await?, &trusted, from, to, period).await?,
            };
            if html {
                print!("{}", crate::transparency::html(&report)?);
                Ok(())
            } else {
                print(json, &report, || crate::transparency::text(&report).trim_end().to_owned())
            }
        }
        Audit::Replay => {
            let mut client = LedgerServiceClient::new(conn.channel().await?);
            let trusted = provisioned_root(conn, root)?;
            replay_online(&mut client, trusted, json).await
        }
        Audit::Checkpoint => {
            let mut client = LedgerServiceClient::new(conn.channel().await?);
            let cp = client.get_checkpoint(pb::GetCheckpointRequest {}).await?.into_inner();
            if json {
                let out = output::Checkpoint { checkpoint: String::from_utf8_lossy(&cp.note).into_owned() };
                println!("{}", serde_json::to_string(&out)?);
            } else {
                std::io::stdout().write_all(&cp.note)?;
            }
            Ok(())
        }
        Audit::Entry { index } | Audit::Body { index } => {
            let body = matches!(cmd, Audit::Body { .. });
            let mut client = LedgerServiceClient::new(conn.channel().await?);
            let entries = client
                .get_entries(pb::GetEntriesRequest { start: index, end: index + 1, with_bodies: body })
                .await?
                .into_inner()
                .entries;
            let e = entries.into_iter().next().context("no such entry")?;
            let bytes = if body { e.body } else { e.header };
            if json {
                let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
                let out = if body {
                    output::Entry { body: Some(b64), header: None, index }
                } else {
                    output::Entry { body: None, header: Some(b64), index }
                };
                println!("{}", serde_json::to_string(&out)?);
            } else {
                std::io::stdout().write_all(&bytes)?;
            }
            Ok(())
        }
        Audit::Proof { index } => {
            let mut client = LedgerServiceClient::new(conn.channel().await?);
            let cp = client.get_checkpoint(pb::GetCheckpointRequest {}).await?.into_inner();
            let checkpoint = String::from_utf8(cp.note).context("the checkpoint is not text")?;
            let size = note::Checkpoint::parse_text(note::Note::parse(checkpoint.as_bytes())?.text())?.size;
            let hashes = client
                .get_inclusion_proof(pb::GetInclusionProofRequest { index, tree_size: size })
                .await?
                .into_inner()
                .hashes;
            let proof = hashes
                .iter()
                .map(|h| h.as_slice().try_into().context("a proof hash is not 32 bytes"))
                .collect::<anyhow::Result<Vec<Hash>>>()?;
            let text = TlogProof { extra: None, index, proof, checkpoint }.to_text();
            if json {
                println!("{}", serde_json::to_string(&output::Proof { index, tlog_proof: text })?);
            } else {
                print!("{text}");
            }
            Ok(())
        }
        Audit::Watch => {
            let trusted = provisioned_root(conn, root)?;
            let log = ledger_verifier(&trusted)?;
            let mut client = LedgerServiceClient::new(conn.channel().await?);
            let mut stream = client.watch_checkpoints(pb::GetCheckpointRequest {}).await?.into_inner();
            let mut held: Option<note::TrustedCheckpoint> = None;
            while let Some(cp) = stream.message().await? {
                let verified = note::open_checkpoint(&cp.note, &log).context("a checkpoint does not verify")?;
                let next = match &held {
                    None => verified.accept_first(),
                    Some(old) if old.checkpoint().size == verified.checkpoint().size => old.advance(verified, &[])?,
                    Some(old) => {
                        let proof = consistency(&mut client, old.checkpoint().size, verified.checkpoint().size).await?;
                        old.advance(verified, &proof)
                            .context("the new checkpoint is not consistent with the last one")?
                    }
                };
                let cp = next.checkpoint();
                if json {
                    let out = output::Watched { root: hex::encode(cp.root_hash), size: cp.size };
                    println!("{}", serde_json::to_string(&out)?);
                } else {
                    println!("checkpoint {} verified, root {}", cp.size, hex::encode(cp.root_hash));
                }
                held = Some(next);
            }
            Ok(())
        }
    }
}

fn print<T: Serialize>(json: bool, value: &T, text: impl FnOnce() -> String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(value)?);
    } else {
        println!("{}", text());
    }
    Ok(())
}

async fn consistency(client: &mut LedgerServiceClient<Channel>, from: u64, to: u64) -> anyhow::Result<Vec<Hash>> {
    let hashes = client
        .get_consistency_proof(pb::GetConsistencyProofRequest { from_size: from, to_size: to })
        .await?
        .into_inner()
        .hashes;
    hashes.iter().map(|h| h.as_slice().try_into().context("a proof hash is not 32 bytes")).collect()
}

async fn verify_online(
    client: &mut LedgerServiceClient<Channel>,
    provisioned: TrustedRoot,
    state_path: &Path,
    bodies: bool,
) -> anyhow::Result<Verified> {
    // Where we stopped last time.
    let previous: Option<AuditState> = match std::fs::read(state_path) {
        Ok(bytes) => Some(
            serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not an audit state", state_path.display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", state_path.display())),
    };
    let checked = check_online(client, provisioned, previous.as_ref(), bodies).await?;
    let tmp = state_path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&checked.state)?)?;
    std::fs::rename(&tmp, state_path)?;
    Ok(checked.report)
}

/// What verifying the ledger now found, for a page that shows it (the
/// console's ledger page): the same checks as `covenant audit verify`,
/// from entry 0, with no audit state read or written.
#[derive(Debug, Clone)]
pub struct LedgerVerification {
    /// What `covenant audit verify --json` prints.
    pub report: Verified,
    /// The checkpoint's signed note, as served.
    pub checkpoint: String,
    /// The witnesses the root names (their note key names).
    pub witnesses: Vec<String>,
    /// The witness cosignatures that verified.
    pub cosigned: Vec<note::Cosignature>,
}

/// Verifies the ledger now as `covenant audit verify` does (root chain,
/// checkpoint signature, cosignatures, the tree recomputed from every
/// header), trusting the root in `root`, without an audit state.
pub async fn verify_now(channel: Channel, root: &Path) -> anyhow::Result<LedgerVerification> {
    let bytes = std::fs::read(root).with_context(|| format!("reading the trusted root {}", root.display()))?;
    let provisioned = TrustedRoot::provision(&bytes, now(), RootPolicy { allow_development: true })
        .with_context(|| format!("the root in {} is not trusted", root.display()))?;
    let mut client = LedgerServiceClient::new(channel);
    let checked = check_online(&mut client, provisioned, None, false).await?;
    Ok(LedgerVerification {
        report: checked.report,
        checkpoint: checked.state.checkpoint,
        witnesses: checked.witnesses,
        cosigned: checked.cosigned,
    })
}

/// What one online check found, and the state to keep after it.
struct Checked {
    report: Verified,
    state: AuditState,
    witnesses: Vec<String>,
    cosigned: Vec<note::Cosignature>,
}

async fn check_online(
    client: &mut LedgerServiceClient<Channel>,
    provisioned: TrustedRoot,
    previous: Option<&AuditState>,
    bodies: bool,
) -> anyhow::Result<Checked> {
    // Follow the root chain the server serves from the root we trust.
    let chain = client.get_root_chain(pb::GetRootChainRequest { from_version: 1 }).await?.into_inner().roots;
    let trusted = walk_chain(&provisioned, chain.iter().map(Vec::as_slice), now())
        .context("the server's root chain does not follow from the trusted root")?;
    let log = ledger_verifier(&trusted)?;
    let cp = client.get_checkpoint(pb::GetCheckpointRequest {}).await?.into_inner();
    let verified: VerifiedCheckpoint =
        note::open_checkpoint(&cp.note, &log).context("the checkpoint is not signed by the ledger key")?;
    let (witnesses, threshold) = trusted.witness_policy()?;
    let cosigned = verified.require_cosignatures(&witnesses.iter().collect::<Vec<_>>(), 0)?;
    let cosignatures = cosigned.len();
    let (size, root) = (verified.checkpoint().size, verified.checkpoint().root_hash);

    let mut range = CompactRange::new();
    if let Some(prev) = previous {
        let old_root = decode_hash(&prev.root)?;
        if size < prev.size {
            bail!("FORK: the ledger shrank from size {} to {size}", prev.size);
        }
        if size == prev.size && root != old_root {
            bail!("FORK: two different roots are signed for size {size}");
        }
        if prev.size > 0 && size > prev.size {
            let proof = consistency(client, prev.size, size).await?;
            merkle::verify_consistency(prev.size, size, &proof, &old_root, &root).map_err(|e| {
                anyhow::anyhow!("FORK: the ledger's checkpoint of size {size} is not consistent with the one of size {} verified before: {e}", prev.size)
            })?;
        }
        let peaks = prev.peaks.iter().map(|p| decode_hash(p)).collect::<anyhow::Result<Vec<_>>>()?;
        range = CompactRange::from_parts(prev.size, peaks).context("the audit state's tree edge is malformed")?;
        if range.root() != old_root {
            bail!("the audit state is corrupt: its tree edge does not match its root");
        }
    }

    // Recompute the tree from every new header (and, with --bodies, fold the
    // registry from the start, checking every body and signature).
    let previous_size = range.size();
    let start = if bodies { 0 } else { previous_size };
    let mut registry = if bodies { State::with_keyring(subject_keyring(client).await?) } else { State::new() };
    let mut fresh = CompactRange::new();
    let mut bodies_checked = 0;
    let mut index = start;
    while index < size {
        let end = (index + PAGE).min(size);
        let entries = crate::ledger_page(client, index, end, bodies).await?;
        for e in entries {
            let header =
                EntryHeader::parse(&e.header).with_context(|| format!("entry {}'s header is malformed", e.index))?;
            if bodies {
                let salt: [u8; 32] =
                    e.salt.as_slice().try_into().with_context(|| format!("entry {}'s salt is malformed", e.index))?;
                header
                    .check_body(&salt, &e.body)
                    .with_context(|| format!("entry {}'s body does not match its header", e.index))?;
                covenant_core::policy::fold(&mut registry, e.index, &header, &e.body)
                    .map_err(|r| anyhow::anyhow!("entry {} breaks a rule: {r}", e.index))?;
                bodies_checked += 1;
                fresh.push(merkle::leaf_hash(&e.header));
            }
            if e.index >= previous_size {
                range.push(merkle::leaf_hash(&e.header));
            }
        }
        index = end;
    }
    if range.root() != root {
        bail!("the entries the server served do not reproduce its signed checkpoint of size {size}");
    }
    if bodies && fresh.root() != root {
        bail!("the entries the server served do not reproduce its signed checkpoint of size {size}");
    }
    let state = AuditState {
        size,
        root: hex::encode(root),
        peaks: range.peaks().iter().map(hex::encode).collect(),
        checkpoint: String::from_utf8_lossy(&cp.note).into_owned(),
    };
    let report = Verified {
        size,
        root: hex::encode(root),
        previous_size,
        entries_checked: size - previous_size,
        bodies_checked,
        cosignatures,
        witness_threshold: threshold,
        development_root: trusted.metadata().development,
    };
    Ok(Checked { report, state, witnesses: witnesses.iter().map(|w| w.name().to_owned()).collect(), cosigned })
}

/// The subject keys the server gives this caller (every subject's, for an
/// admin or a full-scope auditor): the fold checks each header's subject
/// tags with them, so a key the server withholds or falsifies shows up as
/// an entry the replay refuses.
async fn subject_keyring(client: &mut LedgerServiceClient<Channel>) -> anyhow::Result<Keyring> {
    let keys = client.get_subject_keys(pb::GetSubjectKeysRequest {}).await?.into_inner().keys;
    let mut ring = std::collections::BTreeMap::new();
    for k in keys {
        let key: [u8; 32] =
            k.key.as_slice().try_into().with_context(|| format!("the subject key of {} is not 32 bytes", k.subject))?;
        ring.insert(k.subject, SubjectKey(key));
    }
    Ok(Keyring::Keys(ring))
}

async fn replay_online(
    client: &mut LedgerServiceClient<Channel>,
    provisioned: TrustedRoot,
    json: bool,
) -> anyhow::Result<()> {
    let chain = client.get_root_chain(pb::GetRootChainRequest { from_version: 1 }).await?.into_inner().roots;
    let trusted = walk_chain(&provisioned, chain.iter().map(Vec::as_slice), now())
        .context("the server's root chain does not follow from the trusted root")?;
    let log = ledger_verifier(&trusted)?;
    let cp = client.get_checkpoint(pb::GetCheckpointRequest {}).await?.into_inner();
    let verified = note::open_checkpoint(&cp.note, &log).context("the checkpoint is not signed by the ledger key")?;
    let (size, root) = (verified.checkpoint().size, verified.checkpoint().root_hash);
    let mut entries: Vec<(EntryHeader, Vec<u8>)> = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    let mut range = CompactRange::new();
    let mut index = 0;
    while index < size {
        let end = (index + PAGE).min(size);
        let page = crate::ledger_page(client, index, end, true).await?;
        for e in page {
            let header =
                EntryHeader::parse(&e.header).with_context(|| format!("entry {}'s header is malformed", e.index))?;
            let salt: [u8; 32] = e.salt.as_slice().try_into().with_context(|| {
                format!("entry {} came without its body (replay needs an admin or full-scope auditor)", e.index)
            })?;
            header
                .check_body(&salt, &e.body)
                .with_context(|| format!("entry {}'s body does not match its header", e.index))?;
            range.push(merkle::leaf_hash(&e.header));
            entries.push((header, e.body));
        }
        index = end;
    }
    if range.root() != root {
        bail!("the entries the server served do not reproduce its signed checkpoint of size {size}");
    }
    let keyring = subject_keyring(client).await?;
    let replayed = covenant_core::replay::replay(
        keyring,
        entries.iter().enumerate().map(|(i, (h, b))| (i as u64, h, b.as_slice())),
    );
    if json {
        let mismatches = replayed
            .mismatches
            .iter()
            .map(|m| output::Mismatch { detail: m.detail.clone(), field: m.field.to_owned(), index: m.index })
            .collect();
        let out = output::Replayed { decisions: replayed.decisions, mismatches, size };
        println!("{}", serde_json::to_string(&out)?);
    } else {
        for m in &replayed.mismatches {
            // A mismatch quotes decision text, which quotes what customers wrote.
            println!("MISMATCH {}", covenant_core::text::Untrusted(&m.to_string()));
        }
        println!(
            "Replayed {size} entries and re-evaluated {} decisions: {}.",
            replayed.decisions,
            crate::counted(replayed.mismatches.len(), "mismatch", "mismatches")
        );
    }
    if !replayed.mismatches.is_empty() {
        bail!(
            "the replay found {} mismatch(es), the first at entry {}",
            replayed.mismatches.len(),
            replayed.mismatches[0].index
        );
    }
    Ok(())
}

/// A ledger directory's files, for the pure verifier.
struct DirFiles<'a>(&'a Path);

impl TileFiles for DirFiles<'_> {
    fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, String> {
        match std::fs::read(self.0.join(path)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

fn verify_files_offline(dir: &Path, trusted: &TrustedRoot, bodies: bool) -> anyhow::Result<Verified> {
    let log = ledger_verifier(trusted)?;
    if !dir.join("checkpoint").exists() && dir.join("public/checkpoint").exists() {
        bail!("{} is the server's ledger folder: verify its published files, {}/public", dir.display(), dir.display());
    }
    let cp_bytes =
        std::fs::read(dir.join("checkpoint")).with_context(|| format!("reading {}/checkpoint", dir.display()))?;
    let verified = note::open_checkpoint(&cp_bytes, &log).context("the checkpoint is not signed by the ledger key")?;
    let (size, root) = (verified.checkpoint().size, verified.checkpoint().root_hash);
    tiles::verify_files(&DirFiles(dir), size, &root)
        .context("the ledger's files do not reproduce its signed checkpoint")?;
    if bodies {
        bail!("--bodies with --ledger is not supported yet: the offline check covers the checkpoint and the tiles");
    }
    let (witnesses, threshold) = trusted.witness_policy()?;
    let cosignatures = verified.require_cosignatures(&witnesses.iter().collect::<Vec<_>>(), 0)?.len();
    Ok(Verified {
        size,
        root: hex::encode(root),
        previous_size: 0,
        entries_checked: size,
        bodies_checked: 0,
        cosignatures,
        witness_threshold: threshold,
        development_root: trusted.metadata().development,
    })
}
