//! Writing the ledger: [`LedgerWriter`] appends each batch to the journal
//! and its checkpoint to the checkpoint log, each made durable before the
//! sequencer answers, and about once a second flushes the derived files
//! (partial tiles and bundles, the published checkpoint, the watermark);
//! [`CosignedSlot`] hands it the newest cosigned checkpoint to publish. The
//! order of writes and syncs is in the parent module's documentation.

use std::collections::BTreeSet;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use covenant_storage::{Storage, parent};

use super::journal::{NewRecord, push_batch_end, push_checkpoint_record, push_record};
use super::reader::LedgerReader;
use super::tiles::{Edge, partial_paths, write_public};
use super::{CHECKPOINT, CHECKPOINT_TMP, CHECKPOINTS, DERIVED, JOURNAL, JOURNAL_INDEX};

/// The newest cosigned checkpoint, handed from the witness task to the
/// writer, which publishes it once its tiles are written.
#[derive(Debug, Default)]
pub struct CosignedSlot {
    inner: Mutex<CosignedState>,
}

#[derive(Debug, Default)]
struct CosignedState {
    /// Witnesses are configured: publish only cosigned checkpoints.
    expected: bool,
    /// The newest cosigned note and its size.
    newest: Option<(u64, String)>,
}

impl CosignedSlot {
    /// From now on, only cosigned checkpoints are published (witnesses are
    /// configured); until the first arrives, the published one stays.
    pub fn expect_cosignatures(&self) {
        if let Ok(mut s) = self.inner.lock() {
            s.expected = true;
        }
    }

    /// Offers a cosigned note of `size` entries; kept if it is newer (a
    /// larger size, or the same size with more cosignatures) than the one
    /// held. Returns whether it was kept.
    pub fn offer(&self, size: u64, note: String) -> bool {
        let Ok(mut s) = self.inner.lock() else { return false };
        if supersedes(&(size, note.as_str()), s.newest.as_ref().map(|(n, t)| (*n, t.as_str()))) {
            s.newest = Some((size, note));
            return true;
        }
        false
    }

    /// `None` when no witness is configured; else the newest cosigned note.
    fn wanted(&self) -> Option<Option<(u64, String)>> {
        let s = self.inner.lock().ok()?;
        s.expected.then(|| s.newest.clone())
    }
}

/// Whether note `new` should replace `old`: never a smaller tree, and at
/// the same size only a note with more cosignature lines (a cosigned note
/// is the bare note with lines appended).
fn supersedes(new: &(u64, &str), old: Option<(u64, &str)>) -> bool {
    match old {
        None => true,
        Some((size, text)) => new.0 > size || (new.0 == size && new.1.len() > text.len()),
    }
}

/// Writes batches. Owned by the sequencer alone.
pub struct LedgerWriter<S: Storage> {
    storage: Arc<S>,
    reader: Arc<LedgerReader<S>>,
    edge: Edge,
    /// Directories and long-lived files whose names are known to be durable
    /// (their parent directory was fsynced after they appeared).
    named: BTreeSet<String>,
    /// Full tiles and bundles written but not yet fsynced.
    pending: Vec<String>,
    /// Partial-tile folders superseded by a full tile, removed once the
    /// published checkpoint no longer reads them.
    stale: BTreeSet<String>,
    /// The latest signed checkpoint (size, note).
    note: Option<(u64, String)>,
    /// The newest cosigned checkpoint, from the witness task.
    cosigned: Arc<CosignedSlot>,
    /// What `public/checkpoint` holds (size, note), if known.
    published: Option<(u64, String)>,
    last_flush: Instant,
    /// The size at the last flush.
    flushed_size: u64,
}

impl<S: Storage> std::fmt::Debug for LedgerWriter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerWriter").field("size", &self.edge.size).finish_non_exhaustive()
    }
}

impl<S: Storage> LedgerWriter<S> {
    /// The writer recovery hands over, at the edge it rebuilt: `pending`
    /// full files to fsync at the first flush, `note` the latest signed
    /// checkpoint, `published` what `public/checkpoint` holds.
    pub(super) fn recovered(
        storage: Arc<S>,
        reader: Arc<LedgerReader<S>>,
        edge: Edge,
        pending: Vec<String>,
        note: Option<(u64, String)>,
        published: Option<(u64, String)>,
    ) -> Self {
        LedgerWriter {
            storage,
            reader,
            edge,
            named: BTreeSet::new(),
            pending,
            stale: BTreeSet::new(),
            note,
            cosigned: Arc::default(),
            published,
            last_flush: Instant::now(),
            flushed_size: 0,
        }
    }

    /// The number of entries written (signed or about to be).
    pub fn size(&self) -> u64 {
        self.edge.size
    }

    /// The slot the witness task hands cosigned checkpoints through.
    pub fn cosigned(&self) -> Arc<CosignedSlot> {
        self.cosigned.clone()
    }

    /// Writes a batch and makes it durable in the journal; the caller then
    /// signs and writes the checkpoint. The full tiles and bundles the batch
    /// completes are written for readers and made durable by the next
    /// [`LedgerWriter::flush`]. On error the writer must not be used again:
    /// the ledger has to be reopened, which sets the partial batch aside.
    pub fn write_batch(&mut self, records: &[NewRecord]) -> io::Result<u64> {
        if records.is_empty() {
            return Ok(self.edge.size);
        }
        let mut journal = Vec::new();
        let mut index = Vec::with_capacity(records.len() * 8);
        let mut full: Vec<(String, Vec<u8>)> = Vec::new();
        let end = self.edge.size + records.len() as u64;
        for (i, r) in records.iter().enumerate() {
            push_record(&mut journal, r);
            // The batch end is written with the batch, in the same append
            // and fsync, so that recovery knows exactly where every batch
            // ends; the last entry's record in `log/index` includes it.
            if i + 1 == records.len() {
                push_batch_end(&mut journal, end);
            }
            index.extend_from_slice(&(self.edge.journal_end + journal.len() as u64).to_be_bytes());
            self.edge.push(&r.header, &mut |path, bytes| full.push((path, bytes)))?;
        }
        self.edge.journal_end += journal.len() as u64;
        self.storage.append(JOURNAL, &journal)?;
        for (path, bytes) in &full {
            self.storage.write(path, bytes)?;
        }
        self.storage.append(JOURNAL_INDEX, &index)?;
        self.storage.sync(JOURNAL)?;
        self.make_names_durable(&[JOURNAL.to_owned()])?;
        self.pending.extend(full.into_iter().map(|(path, _)| path));
        self.reader.set_edge(self.edge.view());
        Ok(self.edge.size)
    }

    /// Appends `note` (the checkpoint of the current size) to the checkpoint
    /// log and fsyncs it; when this returns, the checkpoint is durable.
    pub fn write_checkpoint(&mut self, note: &str) -> io::Result<()> {
        let mut frame = Vec::with_capacity(4 + note.len());
        push_checkpoint_record(&mut frame, note);
        self.storage.append(CHECKPOINTS, &frame)?;
        self.storage.sync(CHECKPOINTS)?;
        self.make_names_durable(&[CHECKPOINTS.to_owned()])?;
        self.note = Some((self.edge.size, note.to_owned()));
        Ok(())
    }

    /// Whether the derived files are behind: entries written, or a newer
    /// checkpoint to publish, since the last flush.
    pub fn dirty(&self) -> bool {
        self.flushed_size != self.edge.size || self.to_publish().is_some()
    }

    /// Whether `interval` has passed since the last flush.
    pub fn flush_due(&self, interval: Duration) -> bool {
        self.last_flush.elapsed() >= interval
    }

    /// The checkpoint `public/checkpoint` should hold next, if it changes:
    /// with witnesses, the newest cosigned one; without, the latest signed
    /// one. Never a smaller tree than the one published, and never a tree
    /// larger than the tiles written.
    fn to_publish(&self) -> Option<(u64, String)> {
        let candidate = match self.cosigned.wanted() {
            Some(cosigned) => cosigned?,
            None => self.note.clone()?,
        };
        let newer = supersedes(&(candidate.0, &candidate.1), self.published.as_ref().map(|(s, t)| (*s, t.as_str())));
        (newer && candidate.0 <= self.edge.size).then_some(candidate)
    }

    /// Publishes the derived files and makes the full ones durable: writes
    /// the partial tiles and bundle and the published checkpoint (with the
    /// partial files of its size, when it is older than the edge) for static
    /// serving; fsyncs the full tiles and bundles written since the last
    /// flush and their directories; records the size they cover in the
    /// durability watermark; and removes the partial files they supersede
    /// that the published checkpoint does not read. Creating and renaming
    /// files makes every later fsync slower on ext4, so this runs about
    /// once a second rather than once a batch.
    pub fn flush(&mut self) -> io::Result<()> {
        self.last_flush = Instant::now();
        self.flushed_size = self.edge.size;
        for (path, bytes) in self.edge.partials() {
            write_public(&*self.storage, &path, &bytes)?;
        }
        if let Some((size, note)) = self.to_publish() {
            // The tiles of an older tree: its partial files may never have
            // been written, or removed since. If they cannot be read, the
            // published checkpoint stays as it is (a reader's failure is
            // not a reason to stop the ledger).
            let older =
                if size < self.edge.size { self.reader.partials_at(size, self.edge.size) } else { Ok(Vec::new()) };
            match older {
                Ok(older) => {
                    for (path, bytes) in older {
                        write_public(&*self.storage, &path, &bytes)?;
                    }
                    self.storage.write(CHECKPOINT_TMP, note.as_bytes())?;
                    self.storage.rename(CHECKPOINT_TMP, CHECKPOINT)?;
                    self.published = Some((size, note));
                }
                Err(e) => tracing::warn!(size, "the checkpoint is not published: its tiles cannot be read: {e}"),
            }
        }
        let pending = std::mem::take(&mut self.pending);
        for path in &pending {
            self.storage.sync(path)?;
        }
        self.make_names_durable(&pending)?;
        self.storage.append(DERIVED, &self.edge.size.to_be_bytes())?;
        self.storage.sync(DERIVED)?;
        self.make_names_durable(&[DERIVED.to_owned()])?;
        self.stale.extend(pending.into_iter().map(|base| format!("{base}.p")));
        let read_by_published: BTreeSet<String> = self
            .published
            .as_ref()
            .map(|(size, _)| partial_paths(*size).into_iter().map(|p| parent(&p).to_owned()).collect())
            .unwrap_or_default();
        let stale = std::mem::take(&mut self.stale);
        for dir in stale {
            if read_by_published.contains(&dir) {
                self.stale.insert(dir);
                continue;
            }
            for name in self.storage.list(&dir)? {
                self.storage.remove(&format!("{dir}/{name}"))?;
            }
            self.storage.remove(&dir)?;
        }
        Ok(())
    }

    /// Fsyncs the directories that hold `paths` and every ancestor not yet
    /// known to be durably named, deepest first. The long-lived files are
    /// remembered once named; one-off files (full tiles) are not, but their
    /// directories are.
    fn make_names_durable(&mut self, paths: &[String]) -> io::Result<()> {
        let mut dirs: BTreeSet<String> = BTreeSet::new();
        let mut learned = Vec::new();
        for path in paths {
            let mut p = path.clone();
            while !self.named.contains(&p) {
                let dir = parent(&p).to_owned();
                dirs.insert(dir.clone());
                if p != *path || p == JOURNAL || p == CHECKPOINTS || p == DERIVED {
                    learned.push(p.clone());
                }
                if dir.is_empty() {
                    break;
                }
                p = dir;
            }
        }
        // A path sorts after its ancestors: reverse order is deepest first.
        for dir in dirs.iter().rev() {
            self.storage.sync_dir(dir)?;
        }
        self.named.extend(learned);
        Ok(())
    }
}
