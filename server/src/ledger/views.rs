//! Views folded from the ledger into sled: indexes only, never the source of
//! truth. A view remembers the ledger size and root it has folded up to; if
//! it is behind it catches up, and if its root does not match the ledger's
//! at that size (a lost, stale or foreign database) it is rebuilt from
//! scratch. sled's `flush` is not an `fsync` (`docs/style.md`), which is fine here:
//! a view that loses its tail after a crash simply catches up again.
//!
//! Headers carry only subject tags (see `covenant_core::ledger`), so the
//! subject index is folded from the bodies the server holds, never from
//! headers.

use super::storage::Storage;
use super::store::ReadError;
use super::{Ledger, MAX_PAGE};

/// Why a view failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ViewError {
    /// sled failed.
    #[error("view database: {0}")]
    Sled(#[from] sled::Error),
    /// Reading the ledger failed.
    #[error("reading the ledger: {0}")]
    Ledger(#[from] ReadError),
}

const APPLIED: &[u8] = b"applied";

/// Which entries concern each subject id: `subject || 0x00 || be64(index)`.
#[derive(Debug, Clone)]
pub struct SubjectIndex {
    by_subject: sled::Tree,
    meta: sled::Tree,
}

impl SubjectIndex {
    /// Opens the index in a sled database.
    pub fn open(db: &sled::Db) -> Result<Self, ViewError> {
        Ok(SubjectIndex { by_subject: db.open_tree("by_subject")?, meta: db.open_tree("meta")? })
    }

    /// The ledger size folded so far and the root at that size.
    pub fn applied(&self) -> Result<(u64, [u8; 32]), ViewError> {
        Ok(self
            .meta
            .get(APPLIED)?
            .and_then(|v| {
                let size = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
                let root: [u8; 32] = v.get(8..40)?.try_into().ok()?;
                Some((size, root))
            })
            .unwrap_or((0, covenant_core::merkle::EMPTY_ROOT)))
    }

    /// Folds every signed entry not yet indexed under the subjects
    /// `subjects_of` finds in its body (the server's: `classify`); rebuilds
    /// from scratch if the index does not belong to this ledger's history.
    /// Returns the size now indexed.
    pub fn catch_up<S: Storage>(
        &self,
        ledger: &Ledger<S>,
        subjects_of: impl Fn(&[u8]) -> Vec<String>,
    ) -> Result<u64, ViewError> {
        let checkpoint = ledger.checkpoint();
        let (mut applied, root) = self.applied()?;
        let ours = if applied == 0 {
            covenant_core::merkle::EMPTY_ROOT
        } else if applied <= checkpoint.size {
            ledger.reader.root(applied)?
        } else {
            [0; 32]
        };
        if applied > checkpoint.size || ours != root {
            self.by_subject.clear()?;
            applied = 0;
        }
        while applied < checkpoint.size {
            let end = (applied + MAX_PAGE).min(checkpoint.size);
            let mut batch = sled::Batch::default();
            for index in applied..end {
                let stored = ledger.reader.body(index, checkpoint.size)?;
                for subject in subjects_of(&stored.body) {
                    batch.insert(key(&subject, index), &[]);
                }
            }
            self.by_subject.apply_batch(batch)?;
            applied = end;
            let mut value = applied.to_be_bytes().to_vec();
            value.extend_from_slice(&ledger.reader.root(applied)?);
            self.meta.insert(APPLIED, value)?;
        }
        Ok(applied)
    }

    /// The indices of entries naming `subject`, oldest first, at most `limit`.
    pub fn entries_for(&self, subject: &str, limit: usize) -> Result<Vec<u64>, ViewError> {
        let mut prefix = subject.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.by_subject.scan_prefix(&prefix).take(limit) {
            let (k, _) = item?;
            if let Some(index) = k.get(prefix.len()..).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes) {
                out.push(index);
            }
        }
        Ok(out)
    }
}

impl SubjectIndex {
    /// The indices of entries naming `subject` after index `after` (from
    /// the first with `None`), oldest first, at most `limit`: a page of its
    /// history.
    pub fn entries_after(&self, subject: &str, after: Option<u64>, limit: usize) -> Result<Vec<u64>, ViewError> {
        let mut prefix = subject.as_bytes().to_vec();
        prefix.push(0);
        let start = match after {
            Some(i) => key(subject, i.saturating_add(1)),
            None => prefix.clone(),
        };
        let mut out = Vec::new();
        // A subject id holds no NUL (ids are checked text), so the keys of
        // `subject` are exactly those with its prefix.
        for item in self.by_subject.range(start..).take(limit) {
            let (k, _) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            if let Some(index) = k.get(prefix.len()..).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes) {
                out.push(index);
            }
        }
        Ok(out)
    }
}

fn key(subject: &str, index: u64) -> Vec<u8> {
    let mut k = subject.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&index.to_be_bytes());
    k
}
