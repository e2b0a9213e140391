//! The ledger: durable, ordered, tamper-evident storage of every entry, and
//! the one sequencer that appends to it.
//!
//! [`Ledger::open`] recovers the stored ledger (see [`store`]), replays every
//! entry into the [`StateMachine`], and starts the sequencer: one thread that
//! owns the writer and the folded state. Appenders queue; per batch the
//! sequencer validates and applies each entry in order (a refused entry is
//! never written), writes the batch durably, signs one checkpoint, makes it
//! durable, and only then answers every waiting appender with its index, its
//! inclusion proof and the checkpoint. After a storage failure it stops
//! taking appends (logging the cause once) until the ledger is reopened.
//! [`Ledger::check`] runs the same recovery as a dry run that writes nothing.

pub use covenant_storage as storage;
pub mod store;
pub mod views;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use covenant_core::digest::Sha256Digest;
use covenant_core::digest::Timestamp;
use covenant_core::keys::KeyId;
use covenant_core::ledger::{self as entries, EntryHeader, EntryKind, SALT_LEN, SubjectTag};
use covenant_core::merkle::Hash;
use covenant_core::note::{Checkpoint, NoteSigner, NoteVerifier, TlogProof};
use covenant_core::state::Rejection;
use covenant_core::state::SignedCheckIn;
use tokio::sync::{oneshot, watch};

use storage::Storage;
use store::{
    CosignedSlot, LedgerReader, LedgerWriter, NewRecord, OpenError, ReadError, RecoveryLimits, StoredBody, Witnessed,
};

/// The most entries a page of [`Ledger::headers`] returns.
pub const MAX_PAGE: u64 = 1024;

/// A state machine folded from the ledger, entry by entry: the validator
/// and applier the sequencer runs before anything is written.
pub trait StateMachine: Send + 'static {
    /// Folds a stored entry when the ledger opens. An error refuses to open.
    fn replay(&mut self, index: u64, header: &EntryHeader, body: &[u8]) -> Result<(), String>;
    /// Validates a new entry against the state folded so far and applies it.
    /// A refused entry is never written.
    fn apply(&mut self, index: u64, header: &EntryHeader, body: &[u8]) -> Result<(), Rejection>;
    /// Turns a request into the entry to append at `index` with ledger time
    /// `time`, in ledger order, against exactly the state before it: the
    /// place where a check-in ([`Request::Decide`]) is evaluated and its
    /// decision signed. By default an [`Request::Append`] is its entry and
    /// a check-in is refused (this state machine decides nothing).
    fn prepare(&mut self, index: u64, time: Timestamp, request: Request) -> Result<Prepared, Rejection> {
        let _ = (index, time);
        match request {
            Request::Append(entry) => Ok(Prepared::Append(entry)),
            Request::Decide(_) => Err(Rejection::Unavailable("this ledger decides no check-ins".into())),
        }
    }
    /// The header's subject tags for an entry concerning `subjects` whose
    /// body digest is `body_digest` (see `covenant_core::ledger`). By
    /// default none: a state machine without a subject keyring (the
    /// annotation counter of the ledger's own tests) tags nothing.
    fn tags(&self, subjects: &[String], body_digest: &Sha256Digest) -> Result<Vec<SubjectTag>, Rejection> {
        let _ = (subjects, body_digest);
        Ok(Vec::new())
    }
}

/// What [`StateMachine::prepare`] makes of a request.
#[derive(Debug, Clone)]
pub enum Prepared {
    /// Append this entry.
    Append(NewEntry),
    /// Append nothing: the entry at this index (if any) already says it.
    Nothing(Option<u64>),
}

/// The annotation-only state of this stage: accepts well-formed notes and
/// counts them. Issue #5 replaces it with the governance fold.
#[derive(Debug, Default, Clone)]
pub struct NoteCounter {
    /// Notes folded.
    pub notes: u64,
}

impl StateMachine for NoteCounter {
    fn replay(&mut self, _index: u64, header: &EntryHeader, _body: &[u8]) -> Result<(), String> {
        match header.kind {
            EntryKind::Note => {
                self.notes += 1;
                Ok(())
            }
            #[allow(unreachable_patterns)] // EntryKind grows in later issues.
            other => Err(format!("unexpected entry kind {other}")),
        }
    }

    fn apply(&mut self, _index: u64, header: &EntryHeader, body: &[u8]) -> Result<(), Rejection> {
        if header.kind != EntryKind::Note {
            return Err(Rejection::Precondition(format!("entry kind {} is not accepted yet", header.kind)));
        }
        if body.is_empty() {
            return Err(Rejection::Malformed("an annotation needs a body".into()));
        }
        self.notes += 1;
        Ok(())
    }
}

/// An entry to append.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// Its kind.
    pub kind: EntryKind,
    /// The key that signed the body, if any.
    pub actor: Option<KeyId>,
    /// The subject ids it concerns: never written, only turned into the
    /// header's subject tags by [`StateMachine::tags`].
    pub subjects: Vec<String>,
    /// The body: exact envelope bytes.
    pub body: Vec<u8>,
}

/// What an appender asks the sequencer for.
#[derive(Debug, Clone)]
pub enum Request {
    /// Append this entry (validated and applied by the state machine).
    Append(NewEntry),
    /// Decide a device's check-in in ledger order: the state machine
    /// evaluates it against exactly the state at its index and turns it into
    /// the signed decision to log, or into nothing when the standing one
    /// says the same (then the append answers [`AppendError::Nothing`]).
    /// Boxed: a verified check-in is several times an entry's size.
    Decide(Box<SignedCheckIn>),
}

/// A signed checkpoint as handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// Tree size.
    pub size: u64,
    /// Root hash.
    pub root: Hash,
    /// The C2SP signed note (log signature; cosignatures come with #4).
    pub note: String,
}

/// An appended entry, with the proof that it is in the ledger.
#[derive(Debug, Clone)]
pub struct Appended {
    /// Its index.
    pub index: u64,
    /// Its header bytes (the Merkle leaf).
    pub header: Vec<u8>,
    /// The salt stored with its body.
    pub salt: [u8; SALT_LEN],
    /// Its inclusion proof against `checkpoint`.
    pub proof: Vec<Hash>,
    /// The checkpoint it was first included in.
    pub checkpoint: Arc<SignedCheckpoint>,
}

impl Appended {
    /// The proof as a C2SP tlog-proof.
    pub fn tlog_proof(&self) -> TlogProof {
        TlogProof {
            extra: None,
            index: self.index,
            proof: self.proof.clone(),
            checkpoint: self.checkpoint.note.clone(),
        }
    }
}

/// Why the sequencer stopped taking appends.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Halt {
    /// Writing the batch, signing its checkpoint or making it durable failed.
    #[error("{0}")]
    Storage(String),
    /// The system gave no randomness for an entry's salt.
    #[error("no randomness for the salt: {0}")]
    NoRandomness(getrandom::Error),
    /// The inclusion proof of an entry just written could not be read back.
    #[error("{0}")]
    Proof(String),
}

/// Why an append failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The state machine refused the entry; nothing was written.
    #[error("refused: {0}")]
    Rejected(Rejection),
    /// The entry is malformed (its header could not be built).
    #[error("malformed entry: {0}")]
    Malformed(String),
    /// The storage failed; the ledger stopped taking appends and must be
    /// reopened (which recovers to the last signed checkpoint).
    #[error("the ledger stopped after a storage failure ({0}); restart to recover")]
    Halted(Halt),
    /// The sequencer is gone.
    #[error("the ledger is closed")]
    Closed,
    /// Nothing was appended: the entry at this index (if any) already says
    /// what the request would have logged.
    #[error("nothing to append")]
    Nothing(Option<u64>),
}

/// Tunables.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// The most entries in one batch.
    pub max_batch: usize,
    /// How long a batch waits for more entries after its first. Zero takes
    /// what is queued: appenders that arrive while a batch is being made
    /// durable form the next one.
    pub max_wait: Duration,
    /// Expanded tiles kept in memory for proofs (16 KiB each).
    pub cache_tiles: usize,
    /// How often derived files (partial tiles for static serving, the
    /// `checkpoint` copy) are written and full tiles made durable.
    pub flush_interval: Duration,
    /// Trees the witnesses are recorded to have cosigned (outside the
    /// ledger's folder): opening refuses a ledger smaller than one, or
    /// holding another tree at its size.
    pub witnessed: Vec<Witnessed>,
}

/// The default [`LedgerConfig::max_batch`].
const DEFAULT_MAX_BATCH: usize = 1024;

impl LedgerConfig {
    /// The most entries an unsigned journal tail may hold at recovery: one
    /// batch. A restart may lower `max_batch` after a crash, so the tail of
    /// a batch made under the default is accepted too.
    fn max_tail(&self) -> u64 {
        self.max_batch.max(DEFAULT_MAX_BATCH) as u64
    }

    /// What recovery is given.
    fn recovery(&self) -> RecoveryLimits {
        RecoveryLimits { max_tail: self.max_tail(), cache_limit: self.cache_tiles, witnessed: self.witnessed.clone() }
    }
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            max_batch: DEFAULT_MAX_BATCH,
            max_wait: Duration::ZERO,
            cache_tiles: 4096,
            flush_interval: Duration::from_secs(1),
            witnessed: Vec::new(),
        }
    }
}

/// The source of ledger time (seconds); the sequencer never lets it go back.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| Timestamp::since_epoch(std::time::SystemTime::now()))
}

type Reply = oneshot::Sender<Result<Appended, AppendError>>;

/// A request waiting in the sequencer's queue, with where its answer goes.
struct Queued {
    request: Request,
    reply: Reply,
}

/// What the sequencer is sent.
enum Msg {
    /// A request to decide and append.
    Append(Queued),
    /// A cosigned checkpoint arrived: publish it at the next flush.
    Wake,
}

/// A handle to an open ledger. Cheap to clone; the sequencer stops when the
/// last handle is dropped.
pub struct Ledger<S: Storage> {
    tx: mpsc::Sender<Msg>,
    reader: Arc<LedgerReader<S>>,
    cosigned: Arc<CosignedSlot>,
    latest: watch::Receiver<Arc<SignedCheckpoint>>,
    thread: Arc<Mutex<Option<thread::JoinHandle<()>>>>,
}

impl<S: Storage> Clone for Ledger<S> {
    fn clone(&self) -> Self {
        Ledger {
            tx: self.tx.clone(),
            reader: self.reader.clone(),
            cosigned: self.cosigned.clone(),
            latest: self.latest.clone(),
            thread: self.thread.clone(),
        }
    }
}

impl<S: Storage> std::fmt::Debug for Ledger<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("size", &self.latest.borrow().size).finish_non_exhaustive()
    }
}

impl<S: Storage> Ledger<S> {
    /// Opens (or creates) the ledger in `storage`, signing checkpoints with
    /// `signer`, folding every stored entry into `machine`, and starts the
    /// sequencer. Refuses to open, naming what is wrong, if the stored files
    /// do not reproduce the last signed checkpoint, a record or body is
    /// corrupt, or more lies past the signed size than a crash can leave
    /// (see [`store::recover`]); an unsigned tail a crash left is set aside,
    /// never deleted.
    pub fn open<M: StateMachine>(
        storage: Arc<S>,
        signer: NoteSigner,
        mut machine: M,
        clock: Clock,
        config: LedgerConfig,
    ) -> Result<Self, OpenError> {
        // Recovery reads the journal once, folding every entry into the state.
        let mut last_time = Timestamp::from_unix(i64::MIN);
        let recovered = store::recover(storage, &signer.verifier(), config.recovery(), |index, header, body| {
            last_time = header.time;
            machine.replay(index, header, &body.body)
        })?;
        let mut writer = recovered.writer;
        let cosigned = writer.cosigned();
        let reader = recovered.reader;
        let size = writer.size();

        let checkpoint = match recovered.checkpoint {
            Some(v) => SignedCheckpoint { size, root: v.checkpoint().root_hash, note: v.note().to_text() },
            None => {
                // A new ledger starts with a signed checkpoint of size 0.
                let cp = sign_checkpoint(&signer, 0, covenant_core::merkle::EMPTY_ROOT)
                    .map_err(|e| OpenError::Storage(std::io::Error::other(e)))?;
                writer.write_checkpoint(&cp.note)?;
                cp
            }
        };
        let (latest_tx, latest) = watch::channel(Arc::new(checkpoint));
        let (tx, rx) = mpsc::channel::<Msg>();
        let sequencer = Sequencer {
            writer,
            reader: reader.clone(),
            signer,
            machine,
            clock,
            config,
            last_time,
            latest: latest_tx,
            halted: None,
        };
        // The sequencer logs where its opener logs (a test's subscriber too).
        let dispatch = tracing::dispatcher::get_default(|current| current.clone());
        let handle = thread::Builder::new()
            .name("covenant-sequencer".into())
            .spawn(move || tracing::dispatcher::with_default(&dispatch, || sequencer.run(rx)))?;
        Ok(Ledger { tx, reader, cosigned, latest, thread: Arc::new(Mutex::new(Some(handle))) })
    }

    /// Checks the ledger in `storage` exactly as [`Ledger::open`] reads it,
    /// folding every entry into `machine`, and writes nothing: fails, naming
    /// the file or entry, wherever opening would refuse
    /// (`covenant-server check`).
    pub fn check<M: StateMachine>(
        storage: &S,
        log: &NoteVerifier,
        mut machine: M,
        config: &LedgerConfig,
    ) -> Result<store::Checked, OpenError> {
        store::check(storage, log, &config.recovery(), |index, header, body| machine.replay(index, header, &body.body))
    }

    /// Hands the ledger a checkpoint note with witness cosignatures. The
    /// newest one is published as `public/checkpoint` by the next flush of
    /// the derived files (about a second), once its tiles are written.
    pub fn publish_cosigned(&self, size: u64, note: String) {
        if self.cosigned.offer(size, note) {
            let _ = self.tx.send(Msg::Wake);
        }
    }

    /// Witnesses are configured: from now on only cosigned checkpoints are
    /// published (see [`Ledger::publish_cosigned`]).
    pub fn expect_cosignatures(&self) {
        self.cosigned.expect_cosignatures();
    }

    /// Appends an entry and waits until it is durable and signed into a
    /// checkpoint.
    pub async fn append(&self, entry: NewEntry) -> Result<Appended, AppendError> {
        self.request(Request::Append(entry)).await
    }

    /// Has the sequencer decide a check-in in ledger order
    /// ([`Request::Decide`]) and waits until the decision it logged is
    /// durable and signed into a checkpoint; [`AppendError::Nothing`] with
    /// the standing entry's index when nothing needed logging.
    pub async fn decide(&self, checkin: SignedCheckIn) -> Result<Appended, AppendError> {
        self.request(Request::Decide(Box::new(checkin))).await
    }

    /// Sends a request to the sequencer and waits for its answer.
    pub async fn request(&self, request: Request) -> Result<Appended, AppendError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Msg::Append(Queued { request, reply })).map_err(|_| AppendError::Closed)?;
        rx.await.map_err(|_| AppendError::Closed)?
    }

    /// As [`Ledger::append`], blocking the calling thread.
    pub fn append_blocking(&self, entry: NewEntry) -> Result<Appended, AppendError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Append(Queued { request: Request::Append(entry), reply }))
            .map_err(|_| AppendError::Closed)?;
        rx.blocking_recv().map_err(|_| AppendError::Closed)?
    }

    /// The latest signed checkpoint.
    pub fn checkpoint(&self) -> Arc<SignedCheckpoint> {
        self.latest.borrow().clone()
    }

    /// A receiver that sees every new checkpoint.
    pub fn watch(&self) -> watch::Receiver<Arc<SignedCheckpoint>> {
        self.latest.clone()
    }

    fn signed_size(&self) -> u64 {
        self.latest.borrow().size
    }

    /// The inclusion proof of `index` at the signed `size`.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ReadError> {
        self.check_size(size)?;
        self.reader.inclusion_proof(index, size)
    }

    /// The consistency proof from `size1` to the signed `size2`.
    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, ReadError> {
        self.check_size(size2)?;
        self.reader.consistency_proof(size1, size2)
    }

    /// Header bytes of entries `start..end` (at most [`MAX_PAGE`]).
    pub fn headers(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, ReadError> {
        if end.saturating_sub(start) > MAX_PAGE {
            return Err(ReadError::OutOfRange {
                what: format!("a page of {} entries (limit {MAX_PAGE})", end - start),
                size: self.signed_size(),
            });
        }
        self.reader.headers(start, end, self.signed_size())
    }

    /// The body of entry `index`, checked against its header.
    pub fn body(&self, index: u64) -> Result<StoredBody, ReadError> {
        let size = self.signed_size();
        if index >= size {
            return Err(ReadError::OutOfRange { what: format!("entry {index}"), size });
        }
        self.reader.body(index, size)
    }

    /// The bodies of entries `start..end` (at most [`MAX_PAGE`]), each checked
    /// against its header.
    pub fn bodies(&self, start: u64, end: u64) -> Result<Vec<StoredBody>, ReadError> {
        let size = self.signed_size();
        if start > end || end > size || end - start > MAX_PAGE {
            return Err(ReadError::OutOfRange { what: format!("bodies {start}..{end} (page limit {MAX_PAGE})"), size });
        }
        (start..end).map(|i| self.reader.body(i, size)).collect()
    }

    /// Checks every body against its header's digest; returns how many were
    /// checked, or the first bad index.
    pub fn check_bodies(&self) -> Result<u64, ReadError> {
        let size = self.signed_size();
        self.reader.scan(size, |_, _, _, _| Ok(()))?;
        Ok(size)
    }

    /// Calls `f(index, header bytes, body)` for every signed entry, in order,
    /// each body checked against its header's digest.
    pub fn for_each_entry(&self, mut f: impl FnMut(u64, &[u8], &StoredBody)) -> Result<u64, ReadError> {
        let size = self.signed_size();
        self.reader.scan(size, |index, _, header, body| {
            f(index, header, body);
            Ok(())
        })?;
        Ok(size)
    }

    fn check_size(&self, size: u64) -> Result<(), ReadError> {
        let signed = self.signed_size();
        if size > signed {
            return Err(ReadError::OutOfRange { what: format!("tree size {size}"), size: signed });
        }
        Ok(())
    }

    /// Stops the sequencer after the batches already queued and waits for
    /// it. Other clones of this handle keep it alive until dropped.
    pub fn close(self) {
        self.close_within(Duration::ZERO);
    }

    /// As [`Ledger::close`], first waiting up to `wait` for the other
    /// clones to be dropped (work finishing after it was cancelled, such as
    /// a witness cosignature on a blocking thread), so that the ledger's
    /// lock is free for the next owner when this returns.
    pub fn close_within(self, wait: Duration) {
        let thread = self.thread.clone();
        drop(self);
        let deadline = Instant::now() + wait;
        while Arc::strong_count(&thread) > 1 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        if let Ok(mut guard) = thread.lock()
            && Arc::strong_count(&thread) == 1
            && let Some(handle) = guard.take()
        {
            let _ = handle.join();
        }
    }
}

fn sign_checkpoint(signer: &NoteSigner, size: u64, root: Hash) -> Result<SignedCheckpoint, String> {
    let cp = Checkpoint { origin: signer.name().to_owned(), size, root_hash: root, extensions: Vec::new() };
    let note = cp.sign(signer).map_err(|e| e.to_string())?;
    Ok(SignedCheckpoint { size, root, note: note.to_text() })
}

/// An entry the state machine prepared, with where its answer goes.
struct Appending {
    entry: NewEntry,
    reply: Reply,
}

struct Sequencer<S: Storage, M: StateMachine> {
    writer: LedgerWriter<S>,
    reader: Arc<LedgerReader<S>>,
    signer: NoteSigner,
    machine: M,
    clock: Clock,
    config: LedgerConfig,
    last_time: Timestamp,
    latest: watch::Sender<Arc<SignedCheckpoint>>,
    /// Set after a storage failure: nothing more is written.
    halted: Option<String>,
}

impl<S: Storage, M: StateMachine> Sequencer<S, M> {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        loop {
            // Wait for work; when the ledger goes quiet with derived files
            // not yet published, publish them.
            let first = if self.writer.dirty() {
                match rx.recv_timeout(self.config.flush_interval) {
                    Ok(Msg::Append(r)) => r,
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
                    Ok(Msg::Append(r)) => r,
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
                    Some(Msg::Append(r)) => batch.push(r),
                    Some(Msg::Wake) => {}
                    None => break,
                }
            }
            self.process(batch);
            if self.halted.is_none() && self.writer.flush_due(self.config.flush_interval) {
                self.flush();
            }
        }
        if self.halted.is_none() {
            self.flush();
        }
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
        self.latest.send_replace(checkpoint.clone());
        Ok(checkpoint)
    }
}
