//! Opening the ledger: the read-only analysis of `check`, then the only
//! writes recovery makes (setting aside a torn checkpoint record and an
//! unsigned journal tail, removing what lies past the signed size,
//! rebuilding the derived files), in the order the parent module's
//! documentation gives.

use std::io;
use std::sync::Arc;

use covenant_core::ledger::EntryHeader;
use covenant_core::note::{NoteVerifier, VerifiedCheckpoint};
use covenant_storage::{Storage, parent};

use super::check::{RecoveryLimits, analyse};
use super::journal::StoredBody;
use super::reader::LedgerReader;
use super::tiles::{discard_beyond, repair_partials, write_public};
use super::writer::LedgerWriter;
use super::{CHECKPOINT_TMP, CHECKPOINTS, DERIVED, JOURNAL, JOURNAL_INDEX, OpenError};

/// A ledger opened from storage: its writer, reader and last checkpoint.
pub struct Recovered<S: Storage> {
    /// The writer, at the signed size.
    pub writer: LedgerWriter<S>,
    /// The reader.
    pub reader: Arc<LedgerReader<S>>,
    /// The last signed checkpoint, if any (none for a new ledger).
    pub checkpoint: Option<VerifiedCheckpoint>,
    /// Where an unsigned tail of the journal was set aside, if there was one.
    pub set_aside: Option<String>,
}

impl<S: Storage> std::fmt::Debug for Recovered<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovered").field("writer", &self.writer).finish_non_exhaustive()
    }
}

/// Opens the ledger in `storage`: checks, without changing anything, that
/// the stored files are what a crash can leave (see [`check`](fn@super::check)), refusing to
/// open, naming the file or entry, if not; then sets aside an unsigned
/// tail (at most one batch past the last signed checkpoint, kept in
/// `log/journal.unsigned-<size>`), and rebuilds the derived files that a
/// crash may have lost. Every entry is handed to `replay` in order.
pub fn recover<S: Storage>(
    storage: Arc<S>,
    log: &NoteVerifier,
    limits: RecoveryLimits,
    replay: impl FnMut(u64, &EntryHeader, &StoredBody) -> Result<(), String>,
) -> Result<Recovered<S>, OpenError> {
    storage.lock_exclusive()?;
    let plan = analyse(&*storage, log, &limits, replay).inspect_err(|e| {
        // Every refusal is the operator's to look into: never routine.
        tracing::error!(cause = %e, "the ledger refuses to open; every file is kept as it was");
    })?;
    storage.remove(CHECKPOINT_TMP)?;
    // A torn last checkpoint record: a crash while appending it. Kept.
    if plan.checkpoints_len > plan.checkpoints_end {
        let to = set_aside(&*storage, CHECKPOINTS, plan.checkpoints_end, &format!("{CHECKPOINTS}.torn-{}", plan.size))?;
        tracing::warn!(file = %to, "a torn record at the end of {CHECKPOINTS} was moved aside");
    }
    if plan.derived_len > plan.derived_end {
        // A torn watermark value carries no information: it was never fsynced.
        storage.truncate(DERIVED, plan.derived_end)?;
        storage.sync(DERIVED)?;
    }
    discard_beyond(&*storage, plan.size)?;
    // The unsigned tail: moved aside, never deleted.
    let set_aside_to = if plan.journal_len > plan.edge.journal_end {
        let to = set_aside(&*storage, JOURNAL, plan.edge.journal_end, &format!("{JOURNAL}.unsigned-{}", plan.size))?;
        // What a crash between the journal's fsync and the checkpoint's
        // leaves: expected, but named, with where its bytes went.
        tracing::warn!(
            file = %to,
            entries = plan.tail_entries,
            bytes = plan.journal_len - plan.edge.journal_end,
            signed = plan.size,
            "{} past the last signed checkpoint of size {} in {JOURNAL} (never acknowledged, from a crash before \
             their checkpoint was durable) were moved aside to {to}",
            match plan.tail_entries {
                0 => "torn bytes".to_owned(),
                1 => format!("entry {}", plan.size),
                n => format!("{n} entries {}..{}", plan.size, plan.size + n - 1),
            },
            plan.size,
        );
        Some(to)
    } else {
        None
    };
    if storage.read(JOURNAL_INDEX)?.as_deref() != Some(plan.ends.as_slice()) {
        storage.write(JOURNAL_INDEX, &plan.ends)?;
    }
    for (path, bytes) in &plan.rewrite {
        write_public(&*storage, path, bytes)?;
    }
    // Partial files are written without an fsync: a crash can leave one
    // torn under its name (ext4 keeps a rename whose data it lost). Each
    // is checked against the journal and rewritten before anyone reads it.
    let repaired = repair_partials(&*storage, &plan.edge)?;
    if repaired > 0 {
        tracing::info!(repaired, "partial tiles or bundles left torn by a crash were rewritten from log/journal");
    }
    let reader = Arc::new(LedgerReader::new(storage.clone(), limits.cache_limit));
    reader.set_edge(plan.edge.view());
    let checkpoint = plan.checkpoint;
    let note = checkpoint.as_ref().map(|c| (c.checkpoint().size, c.note().to_text()));
    let mut writer = LedgerWriter::recovered(storage, reader.clone(), plan.edge, plan.pending, note, plan.published);
    // Everything derived is now written; make it durable before serving.
    writer.flush()?;
    Ok(Recovered { writer, reader, checkpoint, set_aside: set_aside_to })
}

/// Copies `file` from `from` to its end into a new file named `base` (or
/// `base.N`, the first free name), makes the copy durable, then cuts
/// `file` at `from`. Returns the copy's name.
fn set_aside<S: Storage>(storage: &S, file: &str, from: u64, base: &str) -> io::Result<String> {
    let len = storage.len(file)?.unwrap_or(0);
    let bytes = storage.read_range(file, from, usize::try_from(len.saturating_sub(from)).unwrap_or(usize::MAX))?;
    let mut name = base.to_owned();
    let mut n = 1u32;
    while storage.len(&name)?.is_some() {
        name = format!("{base}.{n}");
        n += 1;
    }
    storage.write(&name, &bytes)?;
    storage.sync(&name)?;
    storage.sync_dir(parent(&name))?;
    storage.truncate(file, from)?;
    storage.sync(file)?;
    Ok(name)
}
