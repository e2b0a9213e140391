//! The formats of the ledger's two durable files, encoded and decoded:
//! `log/journal` (per entry a record of header, salt and body; after each
//! batch's last entry a batch end naming the tree size it ends at) and
//! `log/checkpoints` (length-prefixed signed notes); and the scanner that
//! reads the journal front to back.

use std::io;

use covenant_core::ledger::SALT_LEN;
use covenant_storage::Storage;

use super::JOURNAL;

/// One journal record, borrowed from the bytes it was parsed from.
pub(super) struct RecordRef<'a> {
    pub(super) header: &'a [u8],
    pub(super) salt: [u8; SALT_LEN],
    pub(super) body: &'a [u8],
    /// The record's length in the journal.
    pub(super) len: usize,
}

/// Parses one journal entry record at the start of `bytes`, or `None` if
/// `bytes` does not hold a whole one. A header is never empty, so a record
/// starting with a zero length is not an entry (it is a batch end).
pub(super) fn parse_record(bytes: &[u8]) -> Option<RecordRef<'_>> {
    let hlen = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    if hlen == 0 {
        return None;
    }
    let header = bytes.get(4..4 + hlen)?;
    let at = 4 + hlen;
    let blen = u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
    let salt: [u8; SALT_LEN] = bytes.get(at + 4..at + 4 + SALT_LEN)?.try_into().ok()?;
    let end = at + 4 + SALT_LEN + blen;
    let body = bytes.get(at + 4 + SALT_LEN..end)?;
    Some(RecordRef { header, salt, body, len: end })
}

/// The length of a batch end: `u32` zero (where an entry's header length
/// would be), then the `u64` tree size the batch ends at.
pub(super) const BATCH_END_LEN: usize = 12;

/// Appends a batch end saying the batch ends at tree size `size`.
pub(super) fn push_batch_end(out: &mut Vec<u8>, size: u64) {
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&size.to_be_bytes());
}

/// What follows an entry record in `rest`: a batch end (its size, if
/// whole), nothing, or `Err(())` if `rest` is too short to tell and more of
/// the journal follows (`at_end`: `rest` runs to the journal's end, so
/// whatever is cut short there is the torn remains of a write).
fn parse_batch_end(rest: &[u8], at_end: bool) -> Result<Option<u64>, ()> {
    match rest.get(..4) {
        None if at_end => Ok(None),
        None => Err(()),
        Some(len) if len != [0u8; 4] => Ok(None),
        Some(_) => match rest.get(4..BATCH_END_LEN) {
            Some(size) => Ok(Some(read_u64(size))),
            None if at_end => Ok(None),
            None => Err(()),
        },
    }
}

/// Appends one journal record.
pub(super) fn push_record(out: &mut Vec<u8>, r: &NewRecord) {
    out.extend_from_slice(&(r.header.len() as u32).to_be_bytes());
    out.extend_from_slice(&r.header);
    out.extend_from_slice(&(r.body.len() as u32).to_be_bytes());
    out.extend_from_slice(&r.salt);
    out.extend_from_slice(&r.body);
}

/// One entry read from the journal.
pub(super) struct Scanned {
    pub(super) header: Vec<u8>,
    pub(super) body: StoredBody,
    /// Where its record ends, with the batch end that follows it, if any.
    pub(super) end: u64,
    /// The tree size the batch end after it names, if a batch ends here.
    pub(super) batch_end: Option<u64>,
}

/// Reads the journal front to back in large chunks.
pub(super) struct JournalScanner<'a, S: Storage> {
    storage: &'a S,
    len: u64,
    chunk: Vec<u8>,
    chunk_start: u64,
    pos: u64,
}

impl<'a, S: Storage> JournalScanner<'a, S> {
    const CHUNK: usize = 4 << 20;

    pub(super) fn new(storage: &'a S) -> io::Result<Self> {
        let len = storage.len(JOURNAL)?.unwrap_or(0);
        Ok(JournalScanner { storage, len, chunk: Vec::new(), chunk_start: 0, pos: 0 })
    }

    /// The next whole entry record, or `None` at the end (a torn last
    /// record counts as the end).
    pub(super) fn next(&mut self) -> io::Result<Option<Scanned>> {
        loop {
            let from = usize::try_from(self.pos - self.chunk_start).unwrap_or(usize::MAX);
            let at_end = self.chunk_start + self.chunk.len() as u64 == self.len;
            if let Some(bytes) = self.chunk.get(from..)
                && let Some(r) = parse_record(bytes)
                && let Ok(batch_end) = parse_batch_end(bytes.get(r.len..).unwrap_or_default(), at_end)
            {
                let len = r.len + if batch_end.is_some() { BATCH_END_LEN } else { 0 };
                self.pos += len as u64;
                return Ok(Some(Scanned {
                    header: r.header.to_vec(),
                    body: StoredBody { salt: r.salt, body: r.body.to_vec() },
                    end: self.pos,
                    batch_end,
                }));
            }
            // Refill from `pos`: at least one chunk, more if one record is larger.
            let have = self.chunk_start + self.chunk.len() as u64 - self.pos;
            let remaining = self.len - self.pos;
            if remaining == have {
                return Ok(None);
            }
            let want = remaining.min((Self::CHUNK as u64).max(have * 2 + 1));
            self.chunk = self.storage.read_range(JOURNAL, self.pos, usize::try_from(want).unwrap_or(usize::MAX))?;
            self.chunk_start = self.pos;
        }
    }
}

/// A stored body with its salt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBody {
    /// The salt.
    pub salt: [u8; SALT_LEN],
    /// The body bytes (an envelope, exactly as received).
    pub body: Vec<u8>,
}

/// One new entry of a batch, ready to write.
#[derive(Debug, Clone)]
pub struct NewRecord {
    /// Header bytes (the Merkle leaf).
    pub header: Vec<u8>,
    /// The salt.
    pub salt: [u8; SALT_LEN],
    /// The body.
    pub body: Vec<u8>,
}

/// A big-endian `u64` (zero if `b` is not 8 bytes long).
pub(super) fn read_u64(b: &[u8]) -> u64 {
    b.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

/// The last whole record of the checkpoint log (`u32` length, note) and
/// where the whole records end.
pub(super) fn last_record(bytes: &[u8]) -> (Option<&[u8]>, usize) {
    let mut pos = 0usize;
    let mut last = None;
    while let Some(len) = bytes.get(pos..pos + 4).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes) {
        let Some(note) = bytes.get(pos + 4..pos + 4 + len as usize) else { break };
        last = Some(note);
        pos += 4 + len as usize;
    }
    (last, pos)
}

/// Appends one checkpoint log record: the note's `u32` length, then the note.
pub(super) fn push_checkpoint_record(out: &mut Vec<u8>, note: &str) {
    out.extend_from_slice(&(note.len() as u32).to_be_bytes());
    out.extend_from_slice(note.as_bytes());
}
