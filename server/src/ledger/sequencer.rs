//! The sequencer: the one thread that owns the writer and the folded
//! state. It takes queued requests in batches, has the state machine
//! prepare, validate and apply each in order, writes the batch durably,
//! signs one checkpoint, makes it durable, then answers every appender; after
//! a storage failure it halts. Also the once-a-second flush of derived files.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Instant;

use covenant_core::digest::Timestamp;
use covenant_core::ledger::{self as entries, EntryHeader, SALT_LEN};
use covenant_core::merkle::Hash;
use covenant_core::note::{Checkpoint, NoteSigner};
use tokio::sync::{oneshot, watch};

use super::machine::{Clock, NewEntry, Prepared, Request, StateMachine};
use super::storage::Storage;
use super::store::{LedgerReader, LedgerWriter, NewRecord};
use super::{AppendError, Appended, Halt, LedgerConfig, SignedCheckpoint};

pub(super) type Reply = oneshot::Sender<Result<Appended, AppendError>>;

/// A request waiting in the sequencer's queue, with where its answer goes.
pub(super) struct Queued {
    pub(super) request: Request,
    pub(super) reply: Reply,
}

/// What the sequencer is sent.
pub(super) enum Msg {
    /// A request to decide and append.
    Append(Queued),
    /// A cosigned checkpoint arrived: publish it at the next flush.
    Wake,
}

pub(super) fn sign_checkpoint(signer: &NoteSigner, size: u64, root: Hash) -> Result<SignedCheckpoint, String> {
    let cp = Checkpoint { origin: signer.name().to_owned(), size, root_hash: root, extensions: Vec::new() };
    let note = cp.sign(signer).map_err(|e| e.to_string())?;
    Ok(SignedCheckpoint { size, root, note: note.to_text() })
}

/// An entry the state machine prepared, with where its answer goes.
struct Appending {
    entry: NewEntry,
    reply: Reply,
}

pub(super) struct Sequencer<S: Storage, M: StateMachine> {
    pub(super) writer: LedgerWriter<S>,
    pub(super) reader: Arc<LedgerReader<S>>,
    pub(super) signer: NoteSigner,
    pub(super) machine: M,
    pub(super) clock: Clock,
    pub(super) config: LedgerConfig,
    pub(super) last_time: Timestamp,
    pub(super) latest: watch::Sender<Arc<SignedCheckpoint>>,
    /// Set after a storage failure: nothing more is written.
    pub(super) halted: Option<String>,
}

impl<S: Storage, M: StateMachine> Sequencer<S, M> {
    pub(super) fn run(mut self, rx: mpsc::Receiver<Msg>) {
        loop {
            // Wait for work; when the ledger goes quiet with derived files
            // not yet published, publish them.
            let first = if self.writer.dirty() {
                match rx.recv_timeout(self.config.flush_interval) {
                    Ok(Msg::Append(r)) => self.taken(r),
                    Ok(Msg::Wake) => {
                        if self.halted.is_none() && self.writer.flush_due(self.config.flush_interval) {
                            self.flush();
                        }
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if self.halted.is_none() {
                            self.flush();
                        }
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(Msg::Append(r)) => self.taken(r),
                    // Something to publish now: the next turn waits at most
                    // a flush interval.
                    Ok(Msg::Wake) => continue,
                    Err(_) => break,
                }
            };
            let mut batch = vec![first];
            let deadline = Instant::now() + self.config.max_wait;
            while batch.len() < self.config.max_batch {
                let next = if self.config.max_wait.is_zero() {
                    rx.try_recv().ok()
                } else {
                    rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).ok()
                };
                match next {
                    Some(Msg::Append(r)) => batch.push(self.taken(r)),
                    Some(Msg::Wake) => {}
                    None => break,
                }
            }
            let started = Instant::now();
            let entries = batch.len();
            self.process(batch);
            self.config.metrics.batch_entries.observe(entries as f64);
            self.config.metrics.batch_seconds.observe(started.elapsed().as_secs_f64());
            if self.halted.is_none() && self.writer.flush_due(self.config.flush_interval) {
                self.flush();
            }
        }
        if self.halted.is_none() {
            self.flush();
        }
    }

    /// A request taken off the queue.
    fn taken(&self, r: Queued) -> Queued {
        self.config.metrics.queue_depth.dec();
        r
    }

    fn flush(&mut self) {
        if let Err(e) = self.writer.flush() {
            self.halt(e.to_string());
        }
    }

    /// Stops taking appends after a storage failure, logging the cause once:
    /// every later appender gets the same error, and the operator one line.
    fn halt(&mut self, reason: String) {
        if self.halted.is_none() {
            tracing::error!(
                cause = %reason,
                "the ledger stopped taking appends after a storage failure (is the disk full?); \
                 restart the server to recover"
            );
            self.halted = Some(reason);
            self.config.metrics.halted.set(1);
        }
    }

    fn process(&mut self, batch: Vec<Queued>) {
        if let Some(reason) = &self.halted {
            for r in batch {
                let _ = r.reply.send(Err(AppendError::Halted(Halt::Storage(reason.clone()))));
            }
            return;
        }
        // Validate and apply in order; refused entries get their answer now.
        let mut accepted: Vec<(u64, NewRecord, Reply)> = Vec::new();
        let now = (self.clock)().max(self.last_time);
        for queued in batch {
            let index = self.writer.size() + accepted.len() as u64;
            let entry = match self.machine.prepare(index, now, queued.request) {
                Ok(Prepared::Append(entry)) => entry,
                Ok(Prepared::Nothing(standing)) => {
                    let _ = queued.reply.send(Err(AppendError::Nothing(standing)));
                    continue;
                }
                Err(rejection) => {
                    let _ = queued.reply.send(Err(AppendError::Rejected(rejection)));
                    continue;
                }
            };
            let req = Appending { entry, reply: queued.reply };
            let mut salt = [0u8; SALT_LEN];
            if let Err(e) = getrandom::fill(&mut salt) {
                let _ = req.reply.send(Err(AppendError::Halted(Halt::NoRandomness(e))));
                continue;
            }
            // The header carries a subject tag per subject, never the ids.
            let subjects = &req.entry.subjects;
            if subjects.len() > entries::MAX_SUBJECTS
                || !subjects.iter().all(|s| covenant_core::statements::is_valid_id(s))
            {
                let _ = req.reply.send(Err(AppendError::Malformed(entries::EntryError::BadSubjects.to_string())));
                continue;
            }
            let body_digest = entries::body_digest(&salt, &req.entry.body);
            let tags = match self.machine.tags(subjects, &body_digest) {
                Ok(tags) => tags,
                Err(rejection) => {
                    let _ = req.reply.send(Err(AppendError::Rejected(rejection)));
                    continue;
                }
            };
            let header = EntryHeader { kind: req.entry.kind, time: now, actor: req.entry.actor, tags, body_digest };
            let header_bytes = match header.to_bytes() {
                Ok(b) => b,
                Err(e) => {
                    let _ = req.reply.send(Err(AppendError::Malformed(e.to_string())));
                    continue;
                }
            };
            match self.machine.apply(index, &header, &req.entry.body) {
                Ok(()) => {
                    accepted.push((index, NewRecord { header: header_bytes, salt, body: req.entry.body }, req.reply))
                }
                Err(rejection) => {
                    let _ = req.reply.send(Err(AppendError::Rejected(rejection)));
                }
            }
        }
        if accepted.is_empty() {
            return;
        }
        self.last_time = now;
        let records: Vec<NewRecord> = accepted.iter().map(|(_, r, _)| r.clone()).collect();
        match self.commit(&records) {
            Ok(checkpoint) => {
                for (index, record, reply) in accepted {
                    let result = self
                        .reader
                        .inclusion_proof(index, checkpoint.size)
                        .map(|proof| Appended {
                            index,
                            header: record.header,
                            salt: record.salt,
                            proof,
                            checkpoint: checkpoint.clone(),
                        })
                        .map_err(|e| AppendError::Halted(Halt::Proof(e.to_string())));
                    let _ = reply.send(result);
                }
            }
            Err(reason) => {
                // The state machine applied entries that are not durable: it
                // is ahead of the ledger, so nothing more may be written.
                self.halt(reason.clone());
                for (_, _, reply) in accepted {
                    let _ = reply.send(Err(AppendError::Halted(Halt::Storage(reason.clone()))));
                }
            }
        }
    }

    /// Writes the batch, signs its checkpoint and makes that durable.
    fn commit(&mut self, records: &[NewRecord]) -> Result<Arc<SignedCheckpoint>, String> {
        let size = self.writer.write_batch(records).map_err(|e| e.to_string())?;
        let root = self.reader.root(size).map_err(|e| e.to_string())?;
        let checkpoint = sign_checkpoint(&self.signer, size, root)?;
        self.writer.write_checkpoint(&checkpoint.note).map_err(|e| e.to_string())?;
        let checkpoint = Arc::new(checkpoint);
        self.config.metrics.checkpoint_signed.set((self.clock)().unix());
        self.latest.send_replace(checkpoint.clone());
        Ok(checkpoint)
    }
}
