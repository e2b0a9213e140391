//! `covenant-server backup` and `restore`: a copy of a data directory that
//! is consistent at a signed checkpoint and taken while the server serves,
//! and a restore that will not silently roll the ledger back.
//!
//! A backup is one tar file (`docs/operations.md`, "Backups"): every file
//! of the data directory but what is derived (the sled views, the published
//! tiles, the tiles' watermark) or transient (`LOCK`, `*.tmp`, an unsigned
//! tail recovery set aside), with the ledger's three durable files cut at
//! the newest durable signed checkpoint ([`snapshot_point`]): nothing below
//! a signed size is ever rewritten, so those prefixes stay as read while
//! the server appends past them. Last comes `backup.json`, the manifest:
//! the checkpoint, and each file's length and SHA-256. The backup is
//! verified after writing by restoring it into a scratch folder and checking
//! it as `covenant-server check` does (every entry folded, the journal
//! reproducing the checkpoint).
//!
//! A restore extracts into a scratch folder beside the target (refusing any
//! path that is not a plain relative one, and any file the manifest does
//! not name with its digest), checks the ledger format, asks the witnesses
//! which size they hold (and reads a cosigned checkpoint the operator
//! supplies), and refuses a backup shorter than the newest checkpoint any
//! of them cosigned, naming how many entries would be lost. Then it checks
//! the ledger and only then renames the folder into place; the sled views
//! are rebuilt when the server next starts.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context as _, bail};
use covenant_core::note::NoteVerifier;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::datadir;
use crate::layout::DataDir;
use crate::ledger::storage::FsStorage;
use crate::ledger::store::{SnapshotPoint, snapshot_point};

/// The manifest's name in the tar file (its last entry).
pub const MANIFEST: &str = "backup.json";
/// The manifest's format.
pub const BACKUP_FORMAT: &str = "covenant-backup/1";
/// The most files a backup may name (a data directory holds tens, plus one
/// per artifact).
const MAX_FILES: usize = 1_000_000;
/// The largest manifest read.
const MAX_MANIFEST: u64 = 256 * 1024 * 1024;

/// One file of a backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackedUp {
    /// Its path in the data directory, `/`-separated.
    pub path: String,
    /// Its length.
    pub bytes: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
}

/// `backup.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`BACKUP_FORMAT`].
    pub format: String,
    /// The ledger format of the data directory (`DATA/FORMAT`).
    pub ledger_format: u32,
    /// The entries the backup holds: the checkpoint's size.
    pub size: u64,
    /// The checkpoint's root hash, hex.
    pub root_hash: String,
    /// The checkpoint (signed note) the ledger is cut at.
    pub checkpoint: String,
    /// Every file, in the order written.
    pub files: Vec<BackedUp>,
}

/// Files of the data directory a backup leaves out: derived, or transient.
fn left_out(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    path == "views"
        || path.starts_with("views/")
        || path.starts_with("ledger/public/")
        || path == "ledger/log/derived"
        || path == "ledger/LOCK"
        || path.starts_with("ledger/log/journal.unsigned-")
        || path.starts_with("ledger/log/checkpoints.torn-")
        || path.starts_with("artifacts/tmp/")
        || name.ends_with(".tmp")
}

/// The length to copy of a ledger file that is cut at the snapshot.
fn cut_at(path: &str, point: &SnapshotPoint) -> Option<u64> {
    match path {
        "ledger/log/journal" => Some(point.journal_len),
        "ledger/log/checkpoints" => Some(point.checkpoints_len),
        "ledger/log/index" => Some(point.index_len),
        _ => None,
    }
}

/// Every regular file under `root`, as sorted `/`-separated relative paths.
fn files_under(root: &Path) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in
            std::fs::read_dir(root.join(&rel)).with_context(|| format!("reading {}", root.join(&rel).display()))?
        {
            let entry = entry?;
            let path = rel.join(entry.file_name());
            let text = path.to_str().with_context(|| format!("{} is not UTF-8", path.display()))?.replace('\\', "/");
            let kind = entry.file_type()?;
            if left_out(&text) {
                continue;
            }
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                out.push(text);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A reader that hashes what it passes on.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// What `backup` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct BackupDone {
    /// The file written.
    pub out: PathBuf,
    /// The entries it holds.
    pub size: u64,
    /// Its checkpoint's root hash, hex.
    pub root_hash: String,
    /// Files in it.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// `covenant-server backup --data DIR --out FILE`: writes the backup, then
/// verifies it (restored into a scratch folder and checked). Safe while the
/// server serves `DIR`.
pub fn backup(data: &Path, out: &Path) -> anyhow::Result<BackupDone> {
    datadir::check_format(data)?;
    let layout = DataDir::new(data);
    if out.exists() {
        bail!("{} exists: a backup never overwrites a file", out.display());
    }
    let log = verifier(data)?;
    // The witnesses' record first: what it says was cosigned is then at
    // most the checkpoint read after it, never past the copy's end.
    let files = files_under(data)?;
    let dev_state = std::fs::read(layout.witness_dev_state()).ok();
    let storage = FsStorage::new(layout.ledger())?;
    let point = snapshot_point(&storage, &log)?;
    let cp = point.checkpoint.checkpoint();
    let (size, root_hash) = (cp.size, hex::encode(cp.root_hash));

    let tmp = out.with_extension("partial");
    let file = create_private(&tmp)?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    let mut manifest = Manifest {
        format: BACKUP_FORMAT.to_owned(),
        ledger_format: datadir::LEDGER_FORMAT,
        size,
        root_hash: root_hash.clone(),
        checkpoint: point.checkpoint.note().to_text(),
        files: Vec::new(),
    };
    let mut total = 0u64;
    for path in &files {
        let full = data.join(path);
        let mode = file_mode(&full);
        let (bytes, digest) = match (cut_at(path, &point), path.as_str()) {
            (Some(len), _) => {
                let f = std::fs::File::open(&full).with_context(|| format!("opening {}", full.display()))?;
                append(&mut tar, path, len, mode, f.take(len))?
            }
            // Read once, whole: it is rewritten in place as witnesses cosign.
            (None, "witness-dev-state.json") => match &dev_state {
                Some(b) => append(&mut tar, path, b.len() as u64, mode, b.as_slice())?,
                None => continue,
            },
            (None, _) => {
                let f = match std::fs::File::open(&full) {
                    Ok(f) => f,
                    // Removed since the walk (a temporary file): not part of it.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e).with_context(|| format!("opening {}", full.display())),
                };
                let len = f.metadata()?.len();
                append(&mut tar, path, len, mode, f.take(len))?
            }
        };
        total += bytes;
        manifest.files.push(BackedUp { path: path.clone(), bytes, sha256: digest });
    }
    let json = serde_json::to_vec_pretty(&manifest)?;
    append(&mut tar, MANIFEST, json.len() as u64, 0o600, json.as_slice())?;
    let writer = tar.into_inner()?;
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    // Verified before it takes its name: a backup that does not restore is
    // no backup.
    let scratch = scratch_beside(out)?;
    let checked = extract(&tmp, &scratch).and_then(|m| {
        check_restored(&scratch, &m)?;
        Ok(m)
    });
    let _ = std::fs::remove_dir_all(&scratch);
    if let Err(e) = checked {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context("the backup just written does not restore; it was removed"));
    }
    std::fs::rename(&tmp, out)?;
    sync_parent(out);
    Ok(BackupDone { out: out.to_path_buf(), size, root_hash, files: manifest.files.len(), bytes: total })
}

fn append<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    len: u64,
    mode: u32,
    data: impl Read,
) -> anyhow::Result<(u64, String)> {
    let mut header = tar::Header::new_gnu();
    header.set_size(len);
    header.set_mode(mode);
    header.set_entry_type(tar::EntryType::Regular);
    let mut reader = Hashing { inner: data, hash: Sha256::new() };
    tar.append_data(&mut header, path, &mut reader).with_context(|| format!("writing {path} into the backup"))?;
    Ok((len, hex::encode(reader.hash.finalize())))
}

#[cfg(unix)]
fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0o600)
}

#[cfg(not(unix))]
fn file_mode(_: &Path) -> u32 {
    0o600
}

fn create_private(path: &Path) -> anyhow::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).with_context(|| format!("creating {}", path.display()))
}

fn sync_parent(path: &Path) {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && let Ok(dir) = std::fs::File::open(parent)
    {
        let _ = dir.sync_all();
    }
}

/// A new, empty folder beside `path` for a scratch copy.
fn scratch_beside(path: &Path) -> anyhow::Result<PathBuf> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("backup");
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let scratch = parent.join(format!(".{name}.restoring-{}", std::process::id()));
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)?;
    }
    std::fs::create_dir(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    Ok(scratch)
}

fn verifier(data: &Path) -> anyhow::Result<NoteVerifier> {
    let vkey = std::fs::read_to_string(DataDir::new(data).ledger_vkey()).context("reading ledger.vkey")?;
    Ok(NoteVerifier::parse(vkey.trim())?)
}

/// A relative path of plain names only (no root, no `..`, no `.`).
fn plain_relative(path: &Path) -> bool {
    !path.as_os_str().is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)))
}

/// Extracts the backup `file` into the empty folder `into`, hashing every
/// file, and checks them against its manifest. Untrusted input: a path
/// that is not plain and relative, anything but a regular file, a file the
/// manifest does not name or with another digest, is refused.
pub fn extract(file: &Path, into: &Path) -> anyhow::Result<Manifest> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(f));
    let mut got: Vec<BackedUp> = Vec::new();
    let mut manifest: Option<Manifest> = None;
    for entry in archive.entries()? {
        let mut entry = entry?;
        if manifest.is_some() {
            bail!("the backup holds files after its manifest");
        }
        if entry.header().entry_type() != tar::EntryType::Regular {
            bail!("the backup holds something that is not a regular file");
        }
        let path = entry.path()?.into_owned();
        if !plain_relative(&path) {
            bail!("the backup names a path that is not plain and relative: {}", path.display());
        }
        let text = path.to_str().context("a path in the backup is not UTF-8")?.to_owned();
        if text == MANIFEST {
            if entry.size() > MAX_MANIFEST {
                bail!("the backup's manifest is too large");
            }
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes)?;
            manifest = Some(serde_json::from_slice(&bytes).context("backup.json is not a backup manifest")?);
            continue;
        }
        if got.len() >= MAX_FILES {
            bail!("the backup holds more than {MAX_FILES} files");
        }
        let target = into.join(&path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut out = create_private(&target)?;
        let mut reader = Hashing { inner: &mut entry, hash: Sha256::new() };
        let bytes = std::io::copy(&mut reader, &mut out)?;
        out.sync_all()?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = reader.inner.header().mode().unwrap_or(0o600) & 0o700;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode.max(0o600)))?;
        }
        got.push(BackedUp { path: text, bytes, sha256: hex::encode(reader.hash.finalize()) });
    }
    let manifest = manifest.context("the backup has no manifest (backup.json): it is cut short or not a backup")?;
    if manifest.format != BACKUP_FORMAT {
        bail!("the backup is in format {:?}; this server reads {BACKUP_FORMAT}", manifest.format);
    }
    if manifest.files != got {
        let named: std::collections::BTreeSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
        let differs = got
            .iter()
            .find(|g| !manifest.files.contains(g))
            .map(|g| {
                if named.contains(g.path.as_str()) {
                    format!("{} differs from its digest in the manifest", g.path)
                } else {
                    format!("{} is not in the manifest", g.path)
                }
            })
            .unwrap_or_else(|| "files the manifest names are missing".to_owned());
        bail!("the backup does not match its manifest: {differs}");
    }
    Ok(manifest)
}

/// Checks a restored data directory as `covenant-server check` does, and
/// that its ledger is the manifest's checkpoint.
fn check_restored(dir: &Path, manifest: &Manifest) -> anyhow::Result<()> {
    datadir::check_format(dir)?;
    let storage = FsStorage::new(DataDir::new(dir).ledger())?;
    let registry = datadir::registry_for(dir)?;
    // Only the copy's own record of what was cosigned: the witnesses are
    // asked by `restore`, which says what it would lose.
    let config = crate::ledger::LedgerConfig {
        witnessed: crate::witnesses::recorded_cosignatures(dir)?,
        ..crate::ledger::LedgerConfig::default()
    };
    let checked = crate::ledger::Ledger::check(&storage, &verifier(dir)?, registry.clone(), &config)
        .context("the backup's ledger does not check")?;
    // A list of accepted losses the ledger does not record (an edited
    // backup) would set witnesses' evidence aside: refused here, as `serve`
    // and `check` refuse it.
    datadir::check_losses(dir, &registry)?;
    if checked.size != manifest.size || checked.unsigned_bytes > 0 {
        bail!("the backup's ledger holds {} entries, not the {} its manifest names", checked.size, manifest.size);
    }
    Ok(())
}

/// What `restore` did.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    /// The data directory made.
    pub data: PathBuf,
    /// The entries its ledger holds.
    pub size: u64,
    /// The newest size a witness (or the supplied checkpoint) is known to
    /// have cosigned.
    pub witnessed: u64,
    /// With `--accept-loss`: the index of the entry that records the loss.
    pub loss_recorded_at: Option<u64>,
}

/// `covenant-server restore FILE --data DIR [--cosigned NOTE] [--accept-loss WHY]`.
/// With `accept_loss` (the operator's reason), a backup shorter than what a
/// witness cosigned is restored all the same, and the loss is recorded.
pub fn restore(
    file: &Path,
    data: &Path,
    cosigned: Option<&Path>,
    accept_loss: Option<&str>,
) -> anyhow::Result<Restored> {
    if data.exists() && std::fs::read_dir(data)?.next().is_some() {
        bail!("{} exists and is not empty: a restore makes a new data directory", data.display());
    }
    let scratch = scratch_beside(data)?;
    let result = restore_into(file, &scratch, cosigned, accept_loss);
    let restored = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&scratch);
            return Err(e);
        }
    };
    if data.exists() {
        std::fs::remove_dir(data)?;
    }
    std::fs::rename(&scratch, data)?;
    sync_parent(data);
    Ok(Restored { data: data.to_path_buf(), ..restored })
}

fn restore_into(
    file: &Path,
    scratch: &Path,
    cosigned: Option<&Path>,
    accept_loss: Option<&str>,
) -> anyhow::Result<Restored> {
    let manifest = extract(file, scratch)?;
    datadir::check_format(scratch)?;
    // What the witnesses hold: the copy's record of its in-process witness,
    // every outside witness asked, and a cosigned checkpoint supplied.
    let mut witnessed = datadir::ledger_config(scratch)?.witnessed;
    if let Some(path) = cosigned {
        let note = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let cp = covenant_core::note::open_checkpoint(&note, &verifier(scratch)?)
            .with_context(|| format!("{} is not a checkpoint signed by this ledger's key", path.display()))?;
        witnessed.push(crate::ledger::store::Witnessed {
            source: format!("the checkpoint in {}", path.display()),
            size: cp.checkpoint().size,
            root: Some(cp.checkpoint().root_hash),
        });
    }
    let mut recorded_loss = None;
    if let Some(newest) = witnessed.iter().max_by_key(|w| w.size)
        && newest.size > manifest.size
    {
        let lost = newest.size - manifest.size;
        let Some(why) = accept_loss else {
            bail!(
                "refusing to restore: this backup holds {} entries, but {} shows a checkpoint of size {} was \
                 cosigned. Restoring it would lose {lost} {} ({}..{}) that witnesses and devices have already \
                 seen, and every agent would then see a fork. Restore a newer backup; only if none exists, pass \
                 --accept-loss WHY, which records the loss in the ledger for good (docs/operations.md, \"Backups\").",
                manifest.size,
                newest.source,
                newest.size,
                if lost == 1 { "entry" } else { "entries" },
                manifest.size,
                newest.size - 1
            );
        };
        check_restored(scratch, &manifest)?;
        record_loss(scratch, &manifest, newest, why)?;
        recorded_loss = Some(manifest.size);
    } else {
        check_restored(scratch, &manifest)?;
    }
    let newest = witnessed.iter().map(|w| w.size).max().unwrap_or(0);
    let size = manifest.size + u64::from(recorded_loss.is_some());
    Ok(Restored { data: scratch.to_path_buf(), size, witnessed: newest, loss_recorded_at: recorded_loss })
}

/// Records an accepted loss in the restored ledger (`scratch`): a
/// [`RestoreLoss`] signed by the decision key, appended as the entry right
/// after the restored ones, and listed in `accepted-losses.json` so that the
/// server opens although witnesses cosigned the lost history.
fn record_loss(
    scratch: &Path,
    manifest: &Manifest,
    newest: &crate::ledger::store::Witnessed,
    why: &str,
) -> anyhow::Result<()> {
    use covenant_core::statements::{LossTag, RestoreLoss, SchemaV1};
    let data = DataDir::new(scratch);
    let decision = datadir::decision_signer(scratch)?
        .context("recording the loss needs the decision key, which signs it, and this data directory has none")?;
    let restored_root = covenant_core::digest::Sha256Digest::from_hex(&manifest.root_hash)
        .context("the manifest's root hash is not 64 hex digits")?;
    let loss = RestoreLoss {
        type_tag: LossTag,
        schema: SchemaV1,
        restored_size: manifest.size,
        restored_root,
        witnessed_size: newest.size,
        witnessed_root: newest.root.map(covenant_core::digest::Sha256Digest),
        evidence: newest.source.clone(),
        why: why.to_owned(),
        issued_at: covenant_core::digest::Timestamp::since_epoch(std::time::SystemTime::now()),
    };
    covenant_core::statements::Payload::validate(&loss).map_err(|e| anyhow::anyhow!("the loss is refused: {e}"))?;
    let body = covenant_core::envelope::try_sign(&loss, &[decision.as_ref()])?;
    // The list first: the ledger opens only with the witnesses' evidence of
    // the lost history set aside, and refuses a list it does not record,
    // so a cut between the two leaves a scratch folder that is removed.
    let accepted = vec![datadir::AcceptedLoss { index: manifest.size, witnessed_size: newest.size }];
    let mut listed = datadir::accepted_losses(scratch)?;
    listed.extend(accepted);
    datadir::write_private(&data.accepted_losses(), &serde_json::to_vec_pretty(&listed)?)?;
    let storage = std::sync::Arc::new(FsStorage::new(data.ledger())?);
    let signer =
        covenant_core::note::NoteSigner::held(&datadir::ledger_name(scratch)?, datadir::ledger_signer(scratch)?)?;
    let registry = datadir::registry_for(scratch)?;
    let config = crate::ledger::LedgerConfig {
        witnessed: crate::witnesses::recorded_cosignatures(scratch)?,
        ..crate::ledger::LedgerConfig::default()
    };
    let ledger = crate::ledger::Ledger::open(storage, signer, registry, crate::ledger::system_clock(), config)
        .context("opening the restored ledger to record the loss")?;
    let placed = covenant_core::state::classify(&body).map_err(|e| anyhow::anyhow!("{e}"))?;
    let appended = ledger.append_blocking(crate::ledger::NewEntry {
        kind: placed.kind,
        actor: placed.actor,
        subjects: placed.subjects,
        body,
    });
    ledger.close();
    let appended = appended.map_err(|e| anyhow::anyhow!("recording the loss in the ledger: {e}"))?;
    if appended.index != manifest.size {
        bail!("the loss was recorded at entry {}, not right after the restored {}", appended.index, manifest.size);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_extracted() {
        for ok in ["FORMAT", "keys/ledger.key", "ledger/log/journal"] {
            assert!(plain_relative(Path::new(ok)), "{ok}");
        }
        for bad in ["", "/etc/passwd", "../escape", "keys/../../escape", "./FORMAT"] {
            assert!(!plain_relative(Path::new(bad)), "{bad}");
        }
    }

    #[test]
    fn derived_and_transient_files_are_left_out() {
        for out in ["views/db", "ledger/public/checkpoint", "ledger/log/derived", "ledger/LOCK", "x.tmp"] {
            assert!(left_out(out), "{out}");
        }
        for kept in ["ledger/log/journal", "keys/decision.key", "artifacts/ab", "witness-dev-state.json"] {
            assert!(!left_out(kept), "{kept}");
        }
    }
}
