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
mod machine;
mod sequencer;
pub mod store;
pub mod views;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use covenant_core::digest::Timestamp;
use covenant_core::ledger::SALT_LEN;
use covenant_core::merkle::Hash;
use covenant_core::note::{NoteSigner, NoteVerifier, TlogProof};
use covenant_core::state::Rejection;
use covenant_core::state::SignedCheckIn;
use tokio::sync::{oneshot, watch};

pub use machine::{Clock, NewEntry, NoteCounter, Prepared, Request, StateMachine, system_clock};
use sequencer::{Msg, Queued, Sequencer, sign_checkpoint};
use storage::Storage;
use store::{CosignedSlot, LedgerReader, OpenError, ReadError, RecoveryLimits, StoredBody, Witnessed};

/// The most entries a page of [`Ledger::headers`] returns.
pub const MAX_PAGE: u64 = 1024;

/// A signed checkpoint as handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// Tree size.
    pub size: u64,
    /// Root hash.
    pub root: Hash,
    /// The C2SP signed note: the log's signature, and the witnesses' cosignatures once they cosigned it.
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
    /// Where the sequencer records its batches, queue and checkpoints
    /// (`crate::metrics`; the default records into nothing registered).
    pub metrics: crate::metrics::LedgerMetrics,
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
            metrics: crate::metrics::LedgerMetrics::default(),
        }
    }
}

/// A handle to an open ledger. Cheap to clone; the sequencer stops when the
/// last handle is dropped.
pub struct Ledger<S: Storage> {
    tx: mpsc::Sender<Msg>,
    reader: Arc<LedgerReader<S>>,
    cosigned: Arc<CosignedSlot>,
    latest: watch::Receiver<Arc<SignedCheckpoint>>,
    thread: Arc<Mutex<Option<thread::JoinHandle<()>>>>,
    /// Requests queued for the sequencer (counted up here, down as taken).
    queued: prometheus_client::metrics::gauge::Gauge,
}

impl<S: Storage> Clone for Ledger<S> {
    fn clone(&self) -> Self {
        Ledger {
            tx: self.tx.clone(),
            reader: self.reader.clone(),
            cosigned: self.cosigned.clone(),
            latest: self.latest.clone(),
            thread: self.thread.clone(),
            queued: self.queued.clone(),
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
        let queued = config.metrics.queue_depth.clone();
        // The checkpoint's age counts from now until the first is signed:
        // a restart does not read as a ledger stuck since 1970.
        config.metrics.checkpoint_signed.set(clock().unix());
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
        Ok(Ledger { tx, reader, cosigned, latest, thread: Arc::new(Mutex::new(Some(handle))), queued })
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
        self.decide_carried(checkin, None).await
    }

    /// [`Ledger::decide`] for a check-in an engineer carried from an
    /// air-gapped site: the decision logged names `courier`.
    pub async fn decide_carried(
        &self,
        checkin: SignedCheckIn,
        courier: Option<String>,
    ) -> Result<Appended, AppendError> {
        self.request(Request::Decide(Box::new(machine::ToDecide { checkin, courier }))).await
    }

    /// Sends a request to the sequencer and waits for its answer.
    pub async fn request(&self, request: Request) -> Result<Appended, AppendError> {
        let (reply, rx) = oneshot::channel();
        self.queued.inc();
        self.tx.send(Msg::Append(Queued { request, reply })).map_err(|_| {
            self.queued.dec();
            AppendError::Closed
        })?;
        rx.await.map_err(|_| AppendError::Closed)?
    }

    /// As [`Ledger::append`], blocking the calling thread.
    pub fn append_blocking(&self, entry: NewEntry) -> Result<Appended, AppendError> {
        let (reply, rx) = oneshot::channel();
        self.queued.inc();
        self.tx.send(Msg::Append(Queued { request: Request::Append(entry), reply })).map_err(|_| {
            self.queued.dec();
            AppendError::Closed
        })?;
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
