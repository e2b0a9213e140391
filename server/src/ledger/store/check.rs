//! Reading the stored ledger without writing: the analysis that both
//! `covenant-server check` ([`check`]) and opening ([`super::recover`])
//! run, so that `check` fails wherever opening would refuse. It verifies
//! the checkpoint log's last record, compares the durable files and the
//! witness evidence ([`Witnessed`]) with it, reads the journal once
//! (each record checked and folded, the tree's root computed along the
//! way) and bounds what lies past the signed size.

use std::io;

use covenant_core::ledger::EntryHeader;
use covenant_core::merkle::{self, CompactRange, Hash};
use covenant_core::note::{self, NoteVerifier, VerifiedCheckpoint};
use covenant_core::tiles::{self, TILE_WIDTH, TileError};
use covenant_storage::Storage;

use super::journal::{JournalScanner, Scanned, StoredBody, last_record, read_u64};
use super::tiles::{Edge, bundle_base, describe_difference};
use super::{CHECKPOINT, CHECKPOINTS, DERIVED, JOURNAL, OpenError, PUBLIC};
/// What a dry run of recovery found (`covenant-server check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The signed size: every entry below it checked.
    pub size: u64,
    /// Whole entries past the signed size (at most one batch, which a
    /// start would set aside).
    pub unsigned_entries: u64,
    /// Bytes past the signed size in the journal (those entries and any
    /// torn record).
    pub unsigned_bytes: u64,
}

/// The most entries an unsigned tail may hold, what the witnesses are known
/// to have cosigned, and how recovery treats the files.
#[derive(Debug, Clone)]
pub struct RecoveryLimits {
    /// Entries one batch may hold: a crash between the journal's fsync and
    /// the checkpoint's leaves at most one unsigned batch.
    pub max_tail: u64,
    /// Expanded tiles cached by the reader.
    pub cache_limit: usize,
    /// Trees the witnesses are recorded to have cosigned: recovery never
    /// opens a ledger smaller than one, or holding another tree at its size.
    pub witnessed: Vec<Witnessed>,
}

/// A tree a witness is recorded to have cosigned, as evidence for recovery
/// (the development witness's state file, for one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witnessed {
    /// Where it is recorded, named in a refusal.
    pub source: String,
    /// The tree size cosigned.
    pub size: u64,
    /// Its root, when recorded (a witness asked at start names only its size).
    pub root: Option<Hash>,
}

/// What recovery found, before it changes anything.
pub(super) struct Plan {
    pub(super) checkpoint: Option<VerifiedCheckpoint>,
    pub(super) size: u64,
    /// Where the checkpoint log's whole records end, and its length.
    pub(super) checkpoints_end: u64,
    pub(super) checkpoints_len: u64,
    /// The durability watermark, where its whole values end, its length.
    pub(super) derived_end: u64,
    pub(super) derived_len: u64,
    /// The published checkpoint, if it verifies (size, note).
    pub(super) published: Option<(u64, String)>,
    /// Where the journal's signed entries end, and its length.
    pub(super) journal_len: u64,
    /// Whole entries past the signed size.
    pub(super) tail_entries: u64,
    pub(super) edge: Edge,
    pub(super) ends: Vec<u8>,
    /// Full files above the watermark to rewrite, and to fsync at the flush.
    pub(super) rewrite: Vec<(String, Vec<u8>)>,
    pub(super) pending: Vec<String>,
}

/// The first thing found wrong with a signed entry while reading the
/// journal; which file is to blame is decided by whether the journal
/// reproduces the signed root.
enum Suspect {
    /// Its header differs from the durable entry bundle.
    DiffersFrom(String),
    /// Its body does not match its header's digest.
    Body,
    /// The state fold refused it.
    Refused(String),
}

/// Checks the stored ledger with exactly the reading
/// [`recover`](fn@super::recover) does, and writes nothing
/// (`covenant-server check`): the last whole checkpoint of
/// the checkpoint log verifies; no durable file (the watermark, the
/// published checkpoint) shows a larger signed size; the journal holds
/// every signed entry, each record well formed, each body matching its
/// header, each entry folded by `replay`, and reproduces the signed root;
/// every durable full tile and bundle equals what the journal implies; and
/// past the signed size the journal holds at most one batch of
/// `max_tail` entries. Fails wherever opening would refuse, naming the file
/// or entry.
pub fn check<S: Storage>(
    storage: &S,
    log: &NoteVerifier,
    limits: &RecoveryLimits,
    replay: impl FnMut(u64, &EntryHeader, &StoredBody) -> Result<(), String>,
) -> Result<Checked, OpenError> {
    let plan = analyse(storage, log, limits, replay)?;
    Ok(Checked {
        size: plan.size,
        unsigned_entries: plan.tail_entries,
        unsigned_bytes: plan.journal_len - plan.edge.journal_end,
    })
}

/// The read-only half of recovery (see [`check`]).
pub(super) fn analyse<S: Storage>(
    storage: &S,
    log: &NoteVerifier,
    limits: &RecoveryLimits,
    mut replay: impl FnMut(u64, &EntryHeader, &StoredBody) -> Result<(), String>,
) -> Result<Plan, OpenError> {
    let checkpoints = storage.read(CHECKPOINTS)?.unwrap_or_default();
    let (last, checkpoints_end) = last_record(&checkpoints);
    let checkpoint = last.map(|note_bytes| note::open_checkpoint(note_bytes, log)).transpose()?;
    let (size, root) =
        checkpoint.as_ref().map_or((0, merkle::EMPTY_ROOT), |c| (c.checkpoint().size, c.checkpoint().root_hash));
    let journal_len = storage.len(JOURNAL)?.unwrap_or(0);
    // The first checkpoint (size 0) is durable before anything is written to
    // the journal: a journal without one lost its checkpoint log.
    if checkpoint.is_none() && journal_len > 0 {
        return Err(OpenError::NoCheckpoint { journal_bytes: journal_len });
    }
    // Tiles are written only for entries under a signed checkpoint: tiles
    // without any checkpoint mean the ledger's files were emptied, and
    // opening would delete the last copy of its headers.
    if checkpoint.is_none() {
        let tiles = storage.list(&format!("{PUBLIC}/tile"))?.len();
        if tiles > 0 {
            return Err(OpenError::NoCheckpointButTiles { tiles });
        }
    }
    // The derived files are written from signed checkpoints only: one that
    // shows a larger size than the checkpoint log proves the log was cut.
    let derived = storage.read(DERIVED)?.unwrap_or_default();
    let derived_end = derived.len() / 8 * 8;
    let watermark = derived.get(derived_end.saturating_sub(8)..derived_end).map(read_u64).unwrap_or(0);
    if watermark > size {
        return Err(OpenError::AheadOfCheckpointLog { file: DERIVED, size: watermark, signed: size });
    }
    let published = published_checkpoint(storage, log)?;
    if let Some(p) = &published {
        let (psize, proot) = (p.checkpoint().size, p.checkpoint().root_hash);
        if psize > size {
            return Err(OpenError::AheadOfCheckpointLog { file: CHECKPOINT, size: psize, signed: size });
        }
        if psize == size && proot != root {
            return Err(OpenError::OtherRoot { file: CHECKPOINT, size });
        }
    }
    // A witness that cosigned a larger tree proves the same, and is outside
    // this folder.
    let (max_tail, witnessed) = (limits.max_tail, limits.witnessed.as_slice());
    if let Some(w) = witnessed.iter().filter(|w| w.size > size).max_by_key(|w| w.size) {
        return Err(OpenError::BehindWitness { evidence: w.source.clone(), size: w.size, signed: size });
    }
    let durable = watermark;

    // One pass over the journal: each record checked before it is folded,
    // the edge, and every full bundle and tile it implies compared with the
    // stored one. Those made durable (completed at or below the watermark)
    // must match; later ones may be missing or torn after a crash and are
    // rewritten.
    let mut edge = Edge::default();
    // The tree's root, one way for every size asked: a compact range fed
    // every leaf in order (RFC 6962 MTH, `covenant_core::merkle`).
    let mut tree = CompactRange::new();
    let mut ends = Vec::with_capacity(usize::try_from(size).unwrap_or(0).saturating_mul(8));
    let mut first_difference: Option<TileError> = None;
    let mut suspect: Option<(u64, Suspect)> = None;
    let mut durable_bundle: Option<(String, Vec<Vec<u8>>)> = None;
    let mut rewrite: Vec<(String, Vec<u8>)> = Vec::new();
    let mut pending = Vec::new();
    let mut journal = JournalScanner::new(storage)?;
    // The tree's root at each size a witness is recorded to have cosigned.
    let mut witnessed_roots: Vec<(&Witnessed, Hash)> = Vec::new();
    for index in 0..size {
        let Some(Scanned { header: header_bytes, body, end, batch_end }) = journal.next()? else {
            return Err(OpenError::MissingEntries { held: index, size });
        };
        // Every batch ends with the size it ends at, and a checkpoint is
        // signed only at the end of a batch.
        match batch_end {
            Some(said) if said != index + 1 => {
                return Err(OpenError::CorruptRecord {
                    index,
                    reason: format!("the batch end after it names size {said}, not {}", index + 1),
                });
            }
            None if index + 1 == size => return Err(OpenError::NoBatchEnd { size }),
            _ => {}
        }
        let header = EntryHeader::parse(&header_bytes)
            .map_err(|e| OpenError::CorruptRecord { index, reason: format!("its header does not parse: {e}") })?;
        // The durable bundle holding this entry, read when its tile starts.
        if index.is_multiple_of(TILE_WIDTH) {
            let n = index / TILE_WIDTH;
            durable_bundle = None;
            if (n + 1) * TILE_WIDTH <= durable {
                let path = bundle_base(n);
                if let Some(bytes) = storage.read(&path)?
                    && let Ok(entries) = tiles::decode_bundle(&path, &bytes, TILE_WIDTH)
                {
                    durable_bundle = Some((path, entries.into_iter().map(<[u8]>::to_vec).collect()));
                }
            }
        }
        if suspect.is_none() {
            let position = usize::try_from(index % TILE_WIDTH).unwrap_or(usize::MAX);
            if let Some((path, entries)) = &durable_bundle
                && entries.get(position).is_some_and(|stored| *stored != header_bytes)
            {
                suspect = Some((index, Suspect::DiffersFrom(path.clone())));
            } else if header.check_body(&body.salt, &body.body).is_err() {
                suspect = Some((index, Suspect::Body));
            } else if let Err(reason) = replay(index, &header, &body) {
                suspect = Some((index, Suspect::Refused(reason)));
            }
            // After the first suspect nothing more is folded: the open
            // fails either way, and which file is to blame is decided below.
        }
        let mut full = Vec::new();
        tree.push(edge.push(&header_bytes, &mut |path, bytes| full.push((path, bytes)))?);
        for (path, ours) in full {
            let stored = storage.read(&path)?;
            let same = stored.as_deref() == Some(ours.as_slice());
            if index < durable {
                if !same && first_difference.is_none() {
                    first_difference = Some(describe_difference(&path, stored.as_deref(), &ours, index));
                }
            } else {
                pending.push(path.clone());
                if !same {
                    rewrite.push((path, ours));
                }
            }
        }
        ends.extend_from_slice(&end.to_be_bytes());
        edge.journal_end = end;
        for w in witnessed.iter().filter(|w| w.size == index + 1 && w.root.is_some()) {
            witnessed_roots.push((w, tree.root()));
        }
    }
    // The journal must reproduce the signed root. If it does, a durable file
    // that differs from what the journal implies is corrupt; if it does not,
    // the journal is, at the first entry found wrong.
    let reproduces = tree.root() == root;
    if !reproduces {
        let signed = format!("log/journal does not reproduce the signed checkpoint of size {size}");
        return Err(match (suspect, first_difference) {
            (Some((index, Suspect::DiffersFrom(bundle))), _) => {
                OpenError::CorruptRecord { index, reason: format!("its header differs from {bundle}, and {signed}") }
            }
            (Some((index, Suspect::Body)), _) => OpenError::CorruptRecord {
                index,
                reason: format!("its body does not match its header's digest, and {signed}"),
            },
            (Some((index, Suspect::Refused(why))), _) => {
                OpenError::CorruptRecord { index, reason: format!("{signed}, and the fold refuses this entry ({why})") }
            }
            (None, Some(TileError::CorruptEntry { index, bundle, .. })) => {
                OpenError::CorruptRecord { index, reason: format!("its header differs from {bundle}, and {signed}") }
            }
            (None, _) => OpenError::Unreproduced { size },
        });
    }
    match suspect {
        Some((index, Suspect::Body)) => {
            return Err(OpenError::BodyMismatch { index });
        }
        Some((index, Suspect::Refused(reason))) => return Err(OpenError::Replay { index, reason }),
        // The journal is right, so the durable bundle is corrupt: reported
        // below, as every durable file that differs.
        Some((_, Suspect::DiffersFrom(_))) | None => {}
    }
    if let Some(difference) = first_difference {
        return Err(OpenError::Tiles(difference));
    }
    // The journal reproduces the signed tree: it must also hold the tree a
    // witness cosigned at a smaller or equal size, else it is a fork of it.
    for (w, root) in witnessed_roots {
        if w.root.is_some_and(|cosigned| cosigned != root) {
            return Err(OpenError::WitnessedOtherRoot { evidence: w.source.clone(), size: w.size });
        }
    }

    // Past the signed size: at most the one batch a crash between the
    // journal's fsync and the checkpoint's leaves (whole, with its batch
    // end, or a torn prefix of it; its entries share one ledger time), then
    // perhaps a torn record. The batch ends say exactly where each batch
    // ended, so batches cut from the checkpoint log are counted, not
    // guessed from their times.
    let mut tail_entries = 0u64;
    let mut tail_time = None;
    let mut times_differ = false;
    let mut batch_ends: Vec<u64> = Vec::new();
    let mut after_batch_end = 0u64;
    let mut wrong_end = None;
    while let Some(Scanned { header: header_bytes, batch_end, .. }) = journal.next()? {
        // A record whose header does not parse is the torn remains of a write.
        let Ok(header) = EntryHeader::parse(&header_bytes) else { break };
        tail_entries += 1;
        if !batch_ends.is_empty() {
            after_batch_end += 1;
        }
        match &tail_time {
            None => tail_time = Some(header.time),
            Some(t) => times_differ |= *t != header.time,
        }
        match batch_end {
            Some(said) if said == size + tail_entries => batch_ends.push(said),
            // Zeros where an append was cut short (a file system may keep
            // the length and lose the data): torn remains, nothing past
            // them is whole.
            Some(0) => break,
            Some(said) => {
                wrong_end = Some((said, size + tail_entries));
                break;
            }
            None => {}
        }
    }
    let reason = if let Some((said, expected)) = wrong_end {
        Some(format!("a batch end names size {said} where {expected} was due, so the journal was altered"))
    } else if batch_ends.len() > 1 {
        Some(format!("more than one batch: {} batches end at sizes {}", batch_ends.len(), list_sizes(&batch_ends)))
    } else if after_batch_end > 0 {
        Some(format!(
            "more than one batch: one ends at size {}, and {after_batch_end} more entries follow it",
            list_sizes(&batch_ends)
        ))
    } else if times_differ {
        Some("their ledger times differ, so they come from more than one batch".to_owned())
    } else if tail_entries > max_tail {
        Some(format!("more than one batch of at most {max_tail}"))
    } else {
        None
    };
    if let Some(reason) = reason {
        return Err(OpenError::UnsignedTail { signed: size, entries: tail_entries, reason });
    }
    Ok(Plan {
        checkpoint,
        size,
        checkpoints_end: checkpoints_end as u64,
        checkpoints_len: checkpoints.len() as u64,
        derived_end: derived_end as u64,
        derived_len: derived.len() as u64,
        published: published.map(|p| (p.checkpoint().size, p.note().to_text())),
        journal_len,
        tail_entries,
        edge,
        ends,
        rewrite,
        pending,
    })
}

/// The published checkpoint, if it verifies with the ledger key. It is
/// written without an fsync (it is derived), so after a crash it may be
/// empty or torn: such a file is no evidence and is rewritten.
fn published_checkpoint<S: Storage>(storage: &S, log: &NoteVerifier) -> io::Result<Option<VerifiedCheckpoint>> {
    Ok(storage.read(CHECKPOINT)?.and_then(|bytes| note::open_checkpoint(&bytes, log).ok()))
}

/// "7, 8, 9" (the first 16 sizes, then how many more).
fn list_sizes(sizes: &[u64]) -> String {
    let mut text = sizes.iter().take(16).map(u64::to_string).collect::<Vec<_>>().join(", ");
    if sizes.len() > 16 {
        text.push_str(&format!(" and {} more", sizes.len() - 16));
    }
    text
}
