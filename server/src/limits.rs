//! What one caller may take of the server: a request rate per certificate,
//! streams per certificate, download slots per certificate and per customer,
//! and TCP connections per peer address.
//!
//! Each limit answers a way one party could starve the others (issue 16):
//! a device flooding requests, one customer's devices holding every download
//! slot, and connections that never finish their TLS handshake holding file
//! descriptors. The handshake itself, and connections without a client
//! certificate, are bounded in time by `accept`; what is here is the
//! bookkeeping.

use std::collections::HashMap;
use std::future::Future as _;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use covenant_core::digest::Sha256Digest;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::Status;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// A request rate: `per_second` on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Requests per second, sustained.
    pub per_second: f64,
    /// Requests at once after an idle spell (the bucket's size).
    pub burst: f64,
}

/// The buckets of one shard, by certificate fingerprint.
type Shard = Mutex<Buckets>;

#[derive(Debug, Default)]
struct Buckets {
    by_certificate: HashMap<Sha256Digest, Bucket>,
    /// The size at which the next new certificate prunes the shard: doubled
    /// past what a prune leaves, so pruning costs amortised O(1) per call.
    prune_at: usize,
}

/// One token bucket per client certificate.
///
/// Sharded by the fingerprint's first byte, so concurrent callers with
/// different certificates rarely meet on one lock, and each lock is held for
/// one hash-map lookup and a few float operations.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    shards: Box<[Shard]>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Shards of the bucket table (a power of two).
const SHARDS: usize = 16;
/// A shard holding more buckets than this drops those that have refilled
/// (a full bucket is the same as no bucket), so the table stays as large as
/// the set of recently active certificates.
const PRUNE_AT: usize = 1024;

impl RateLimiter {
    /// A limiter with `limit` for every certificate.
    pub fn new(limit: RateLimit) -> RateLimiter {
        RateLimiter { limit, shards: (0..SHARDS).map(|_| Mutex::default()).collect() }
    }

    /// Takes one request from `fingerprint`'s bucket at time `now`, or says
    /// how long until the next one would be admitted.
    pub fn admit(&self, fingerprint: &Sha256Digest, now: Instant) -> Result<(), Duration> {
        let RateLimit { per_second, burst } = self.limit;
        let shard = usize::from(fingerprint.as_bytes()[0]) % SHARDS;
        let Some(shard) = self.shards.get(shard) else { return Ok(()) };
        // A poisoned shard only means another caller panicked mid-update of a
        // counter: the counts are still usable.
        let mut shard = shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Buckets { by_certificate: buckets, prune_at } = &mut *shard;
        if buckets.len() >= (*prune_at).max(PRUNE_AT) && !buckets.contains_key(fingerprint) {
            buckets.retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_second < burst);
            *prune_at = buckets.len() * 2;
        }
        let bucket = buckets.entry(*fingerprint).or_insert(Bucket { tokens: burst, at: now });
        let refilled = now.saturating_duration_since(bucket.at).as_secs_f64() * per_second;
        bucket.tokens = (bucket.tokens + refilled).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second.max(f64::MIN_POSITIVE)))
        }
    }

    /// [`RateLimiter::admit`] now, as the status a refused call gets.
    pub(crate) fn check(&self, fingerprint: &Sha256Digest) -> Result<(), Status> {
        self.admit(fingerprint, Instant::now()).map_err(|wait| {
            Status::resource_exhausted(format!(
                "this certificate sent more than {:.0} requests per second (bursts of {:.0}); retry in {} ms",
                self.limit.per_second,
                self.limit.burst,
                wait.as_millis().max(1)
            ))
        })
    }
}

/// How many download streams may be open at once: in total, per
/// certificate and per customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadLimits {
    /// Streams in total.
    pub total: usize,
    /// Streams one certificate may hold.
    pub per_certificate: usize,
    /// Streams the deployments of one customer may hold together, at most:
    /// its share is `total / (customers downloading + 1)`, never above this.
    pub per_customer: usize,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_certificate: HashMap<Sha256Digest, usize>,
    by_customer: HashMap<String, usize>,
}

/// The download streams open now, counted under one lock (a stream is
/// opened once per download, not per chunk, so this is never hot).
#[derive(Debug)]
pub struct DownloadTable {
    limits: DownloadLimits,
    open: Arc<Mutex<Open>>,
}

/// A download stream's place in the limits: one of the total, of its
/// certificate's and of its customer's; given back when dropped.
#[derive(Debug)]
pub struct DownloadSlot {
    open: Arc<Mutex<Open>>,
    certificate: Sha256Digest,
    customer: String,
}

impl DownloadTable {
    /// An empty table with these limits.
    pub fn new(limits: DownloadLimits) -> DownloadTable {
        DownloadTable { limits, open: Arc::default() }
    }

    /// Takes a slot for `certificate` of `customer`, or says which limit is
    /// reached (ResourceExhausted: retry shortly).
    pub fn take(&self, certificate: Sha256Digest, customer: &str) -> Result<DownloadSlot, Status> {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let by_certificate = open.by_certificate.get(&certificate).copied().unwrap_or(0);
        if by_certificate >= self.limits.per_certificate {
            return Err(Status::resource_exhausted(format!(
                "at most {} downloads at once per certificate",
                self.limits.per_certificate
            )));
        }
        let by_customer = open.by_customer.get(customer).copied().unwrap_or(0);
        // A customer's share shrinks with the customers downloading (this
        // one counted), and one share is always left for a customer yet to
        // come: alone a customer may hold half the slots, two a third each,
        // so a third customer still finds a quarter free (review finding F6:
        // two customers took all 64 slots with a fixed half each).
        let active = open.by_customer.len() + usize::from(by_customer == 0);
        let share = (self.limits.total / (active + 1)).clamp(1, self.limits.per_customer.max(1));
        if by_customer >= share {
            return Err(Status::resource_exhausted(format!(
                "this customer's deployments hold {by_customer} downloads, their share of the server's {} with \
                 {active} customer(s) downloading; retry shortly",
                self.limits.total
            )));
        }
        if open.total >= self.limits.total {
            return Err(Status::resource_exhausted("the server is serving as many downloads as it may; retry shortly"));
        }
        open.total += 1;
        *open.by_certificate.entry(certificate).or_insert(0) += 1;
        *open.by_customer.entry(customer.to_owned()).or_insert(0) += 1;
        Ok(DownloadSlot { open: self.open.clone(), certificate, customer: customer.to_owned() })
    }
}

impl Drop for DownloadSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        decrement(&mut open.by_certificate, &self.certificate);
        decrement(&mut open.by_customer, &self.customer);
    }
}

fn decrement<K: std::hash::Hash + Eq + ?Sized, Q: std::borrow::Borrow<K> + std::hash::Hash + Eq>(
    map: &mut HashMap<Q, usize>,
    key: &K,
) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

/// The streams (WatchCheckpoints, Download, Publish) each certificate holds
/// open, counted under one lock: a stream is opened once, not per message,
/// so this is never on the check-in path.
#[derive(Debug)]
pub struct StreamTable {
    per_identity: usize,
    open: Arc<Mutex<HashMap<Sha256Digest, usize>>>,
}

/// One open stream of a certificate; given back when dropped (the stream's
/// task ends when its client goes away).
#[derive(Debug)]
pub struct StreamSlot {
    open: Arc<Mutex<HashMap<Sha256Digest, usize>>>,
    certificate: Sha256Digest,
}

impl StreamTable {
    /// An empty table allowing `per_identity` open streams per certificate.
    pub fn new(per_identity: usize) -> StreamTable {
        StreamTable { per_identity, open: Arc::default() }
    }

    /// Takes a stream slot for `certificate`, or ResourceExhausted once it
    /// holds its share.
    pub fn take(&self, certificate: Sha256Digest) -> Result<StreamSlot, Status> {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.entry(certificate).or_insert(0);
        if *n >= self.per_identity {
            return Err(Status::resource_exhausted(format!(
                "this certificate holds {n} open streams, the most one identity may; close one first",
            )));
        }
        *n += 1;
        Ok(StreamSlot { open: self.open.clone(), certificate })
    }

    /// The streams `certificate` holds now.
    pub fn held(&self, certificate: &Sha256Digest) -> usize {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(certificate).copied().unwrap_or(0)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        decrement(&mut open, &self.certificate);
    }
}

/// What a person adds to the ledger by a submission: the three kinds
/// bounded per submitter and period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Submission {
    /// A customer's end-use attestation.
    Attestation,
    /// An engineer's field verification.
    Verification,
    /// A misuse signal (an engineer's or an auditor's).
    Signal,
}

/// How many submissions of each kind one submitter may add per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubmissionLimits {
    /// Attestations per customer.
    pub attestations: usize,
    /// Verifications per engineer.
    pub verifications: usize,
    /// Signals per reporter.
    pub signals: usize,
    /// The sliding period they are counted over.
    pub period: Duration,
}

impl SubmissionLimits {
    fn bound(&self, kind: Submission) -> usize {
        match kind {
            Submission::Attestation => self.attestations,
            Submission::Verification => self.verifications,
            Submission::Signal => self.signals,
        }
    }
}

type Windows = HashMap<(Submission, String), std::collections::VecDeque<Instant>>;

/// The submissions each submitter (by subject id: a customer's certificates
/// share one count) made in the last period, as a sliding window of their
/// times. Keys are registered subjects only (the caller is resolved first),
/// and each window holds at most its bound, so the table stays small.
///
/// Not on the check-in path: only the three submission calls take its lock.
#[derive(Debug)]
pub struct SubmissionTable {
    limits: SubmissionLimits,
    windows: Arc<Mutex<Windows>>,
}

/// A place in a submitter's window, taken before the entry is appended.
/// It stays taken for the period unless [`SubmissionSlot::release`] gives
/// it back (the ledger refused the entry). A request the client abandons
/// while its entry is with the sequencer keeps its place: the entry may be
/// appended all the same.
#[derive(Debug)]
#[must_use = "a refused submission releases its place"]
pub struct SubmissionSlot {
    windows: Arc<Mutex<Windows>>,
    key: (Submission, String),
    at: Instant,
}

impl SubmissionTable {
    /// An empty table with `limits`.
    pub fn new(limits: SubmissionLimits) -> SubmissionTable {
        SubmissionTable { limits, windows: Arc::default() }
    }

    /// Takes a place for one more submission of `kind` by `submitter`, or
    /// ResourceExhausted naming the bound and when a place frees up.
    pub fn take(&self, kind: Submission, submitter: &str) -> Result<SubmissionSlot, Status> {
        let (bound, period) = (self.limits.bound(kind), self.limits.period);
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (kind, submitter.to_owned());
        let window = windows.entry(key.clone()).or_default();
        while window.front().is_some_and(|t| now.duration_since(*t) >= period) {
            window.pop_front();
        }
        if window.len() >= bound {
            let retry = window.front().map_or(period, |t| period.saturating_sub(now.duration_since(*t)));
            let what = match kind {
                Submission::Attestation => "attestations per customer",
                Submission::Verification => "verifications per engineer",
                Submission::Signal => "signals per reporter",
            };
            return Err(Status::resource_exhausted(format!(
                "the bound of {bound} {what} per {} s is reached; retry in {} s",
                period.as_secs(),
                retry.as_secs().max(1)
            )));
        }
        window.push_back(now);
        Ok(SubmissionSlot { windows: self.windows.clone(), key, at: now })
    }
}

impl SubmissionSlot {
    /// The submission was refused and nothing appended: its place is given
    /// back.
    pub fn release(self) {
        let mut windows = self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(window) = windows.get_mut(&self.key) {
            if let Some(i) = window.iter().rposition(|t| *t == self.at) {
                window.remove(i);
            }
            if window.is_empty() {
                windows.remove(&self.key);
            }
        }
    }
}

/// TCP connections open per peer address, and in all, in two budgets.
///
/// A connection is *unauthenticated* from accept until its TLS handshake
/// completes with a client certificate: while it handshakes, and for its
/// grace if it presented none. These take a small budget of their own
/// (`unauthenticated_per_peer` per address, `unauthenticated` in all), and
/// when it is full a new connection evicts the oldest unauthenticated one
/// (of its own address, if that address's share is full; else of all)
/// rather than being refused: idle connections cannot lock newcomers out,
/// and to hold the budget an attacker must reconnect faster than the
/// budget per handshake. A connection whose handshake brought a client
/// certificate moves to the *authenticated* budget (`per_peer` per
/// address, `total` less the unauthenticated budget in all), or is closed
/// if that is full.
#[derive(Debug)]
pub struct PeerTable {
    limits: PeerLimits,
    open: Arc<Mutex<Peers>>,
}

/// The caps of a [`PeerTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLimits {
    /// Authenticated connections per peer address.
    pub per_peer: usize,
    /// Connections in all, both budgets.
    pub total: usize,
    /// Unauthenticated connections per peer address.
    pub unauthenticated_per_peer: usize,
    /// Unauthenticated connections in all (part of `total`).
    pub unauthenticated: usize,
}

#[derive(Debug, Default)]
struct Peers {
    by_address: HashMap<IpAddr, PeerCount>,
    authenticated: usize,
    /// Unauthenticated connections by admission order (oldest first), each
    /// with its peer and the sender that evicts it when dropped.
    unauthenticated: std::collections::BTreeMap<u64, (IpAddr, tokio::sync::oneshot::Sender<()>)>,
    next: u64,
    evicted: u64,
}

#[derive(Debug, Default)]
struct PeerCount {
    authenticated: usize,
    /// The ids of this address's unauthenticated connections, oldest first.
    unauthenticated: std::collections::BTreeSet<u64>,
}

impl Peers {
    /// Evicts unauthenticated connection `id` (its stream fails its next
    /// read or write, and is woken for it), freeing its place at once.
    fn evict(&mut self, id: u64) {
        if let Some((peer, _evicts)) = self.unauthenticated.remove(&id) {
            self.forget(peer, id);
            self.evicted += 1;
        }
    }

    fn forget(&mut self, peer: IpAddr, id: u64) {
        if let Some(count) = self.by_address.get_mut(&peer) {
            count.unauthenticated.remove(&id);
            if count.authenticated == 0 && count.unauthenticated.is_empty() {
                self.by_address.remove(&peer);
            }
        }
    }
}

impl PeerTable {
    /// An empty table with `limits`.
    pub fn new(limits: PeerLimits) -> PeerTable {
        PeerTable { limits, open: Arc::default() }
    }

    /// Admits `stream` as unauthenticated, evicting the oldest
    /// unauthenticated connection of its address (if the address holds its
    /// share) or of all (if the budget is full) to make room; `None` only
    /// if its peer address cannot be read or the budget is zero.
    pub fn admit(&self, stream: TcpStream) -> Option<PeerStream> {
        let peer = stream.peer_addr().ok()?.ip();
        let limits = self.limits;
        if limits.unauthenticated == 0 || limits.unauthenticated_per_peer == 0 {
            return None;
        }
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let own_oldest = open
            .by_address
            .get(&peer)
            .filter(|c| c.unauthenticated.len() >= limits.unauthenticated_per_peer)
            .and_then(|c| c.unauthenticated.first().copied());
        if let Some(id) = own_oldest {
            open.evict(id);
        } else if open.unauthenticated.len() >= limits.unauthenticated
            && let Some(id) = open.unauthenticated.keys().next().copied()
        {
            open.evict(id);
        }
        let id = open.next;
        open.next += 1;
        let (evicts, evicted) = tokio::sync::oneshot::channel();
        open.unauthenticated.insert(id, (peer, evicts));
        open.by_address.entry(peer).or_default().unauthenticated.insert(id);
        drop(open);
        Some(PeerStream {
            inner: stream,
            peer,
            id,
            standing: Standing::Unauthenticated(evicted),
            open: self.open.clone(),
        })
    }

    /// Moves `stream`, whose handshake brought a client certificate, to the
    /// authenticated budget; `false` if that is full for its address or in
    /// all, or if it was evicted meanwhile (the caller closes it).
    pub fn authenticate(&self, stream: &mut PeerStream) -> bool {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !matches!(stream.standing, Standing::Unauthenticated(_)) || !open.unauthenticated.contains_key(&stream.id) {
            return false;
        }
        let authenticated_total = self.limits.total.saturating_sub(self.limits.unauthenticated);
        let here = open.by_address.get(&stream.peer).map_or(0, |c| c.authenticated);
        if open.authenticated >= authenticated_total || here >= self.limits.per_peer {
            return false;
        }
        open.unauthenticated.remove(&stream.id);
        if let Some(count) = open.by_address.get_mut(&stream.peer) {
            count.unauthenticated.remove(&stream.id);
            count.authenticated += 1;
        }
        open.authenticated += 1;
        // Its eviction sender is gone: it no longer listens for it.
        stream.standing = Standing::Authenticated;
        true
    }

    /// Connections open now: authenticated, unauthenticated.
    pub fn open(&self) -> (usize, usize) {
        let open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (open.authenticated, open.unauthenticated.len())
    }

    /// Unauthenticated connections evicted so far to make room for newer ones.
    pub fn evicted(&self) -> u64 {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).evicted
    }
}

/// A TCP connection counted against its budgets until it is dropped.
/// While unauthenticated it may be evicted: its next read or write then
/// fails (and an idle one is woken for it), so the TLS handshake or the
/// HTTP/2 connection over it ends.
///
/// It reports the same connection info as a bare `TcpStream`, so the TLS
/// layer over it still fills `Request::peer_certs` (which looks for
/// `TlsConnectInfo<TcpConnectInfo>`; `docs/style.md`, stack pitfall 4).
#[derive(Debug)]
pub struct PeerStream {
    inner: TcpStream,
    peer: IpAddr,
    id: u64,
    standing: Standing,
    open: Arc<Mutex<Peers>>,
}

/// Which budget a [`PeerStream`] counts against.
#[derive(Debug)]
enum Standing {
    /// Unauthenticated: the receiver completes when the table evicts it.
    Unauthenticated(tokio::sync::oneshot::Receiver<()>),
    /// Evicted (its place already given to a newer connection).
    Evicted,
    /// Its handshake brought a client certificate.
    Authenticated,
}

impl PeerStream {
    /// Whether it was evicted (checked, and the task woken, on each read and
    /// write while it is unauthenticated).
    fn is_evicted(&mut self, cx: &mut Context<'_>) -> bool {
        match &mut self.standing {
            Standing::Authenticated => false,
            Standing::Evicted => true,
            // A oneshot receiver must not be polled again once ready.
            Standing::Unauthenticated(evicts) => {
                let gone = Pin::new(evicts).poll(cx).is_ready();
                if gone {
                    self.standing = Standing::Evicted;
                }
                gone
            }
        }
    }
}

fn evicted() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "an unauthenticated connection was evicted to make room for a newer one",
    )
}

impl Drop for PeerStream {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !matches!(self.standing, Standing::Authenticated) {
            // Unauthenticated (if it was evicted, its place is already free).
            if open.unauthenticated.remove(&self.id).is_some() {
                open.forget(self.peer, self.id);
            }
        } else {
            open.authenticated = open.authenticated.saturating_sub(1);
            if let Some(count) = open.by_address.get_mut(&self.peer) {
                count.authenticated = count.authenticated.saturating_sub(1);
                if count.authenticated == 0 && count.unauthenticated.is_empty() {
                    open.by_address.remove(&self.peer);
                }
            }
        }
    }
}

impl Connected for PeerStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.is_evicted(cx) {
            return Poll::Ready(Err(evicted()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if self.is_evicted(cx) {
            return Poll::Ready(Err(evicted()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.is_evicted(cx) {
            return Poll::Ready(Err(evicted()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_bucket_admits_its_burst_then_its_rate() {
        let limiter = RateLimiter::new(RateLimit { per_second: 10.0, burst: 5.0 });
        let me = Sha256Digest::of(b"me");
        let other = Sha256Digest::of(b"other");
        let t0 = Instant::now();
        for _ in 0..5 {
            limiter.admit(&me, t0).unwrap();
        }
        let wait = limiter.admit(&me, t0).unwrap_err();
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100), "{wait:?}");
        // Another certificate has its own bucket.
        limiter.admit(&other, t0).unwrap();
        // A tenth of a second refills one request, no more.
        let t1 = t0 + Duration::from_millis(100);
        limiter.admit(&me, t1).unwrap();
        assert!(limiter.admit(&me, t1).is_err());
        // A long pause refills the burst, not more.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..5 {
            limiter.admit(&me, t2).unwrap();
        }
        assert!(limiter.admit(&me, t2).is_err());
    }

    #[test]
    fn full_buckets_are_pruned() {
        let limiter = RateLimiter::new(RateLimit { per_second: 1.0, burst: 2.0 });
        let t0 = Instant::now();
        for i in 0..(SHARDS * PRUNE_AT * 2) as u32 {
            limiter.admit(&Sha256Digest::of(&i.to_le_bytes()), t0).unwrap();
        }
        let later = t0 + Duration::from_secs(5);
        for i in 0..(SHARDS * PRUNE_AT * 2) as u32 {
            limiter.admit(&Sha256Digest::of(&(i + u32::MAX / 2).to_le_bytes()), later).unwrap();
        }
        // Those of the first round had refilled by the second: dropped.
        let held: usize = limiter.shards.iter().map(|s| s.lock().unwrap().by_certificate.len()).sum();
        assert!(held <= SHARDS * PRUNE_AT * 3, "{held} buckets held");
    }

    #[test]
    fn stream_slots_count_per_certificate_and_come_back_when_dropped() {
        let table = StreamTable::new(2);
        let (a, b) = (Sha256Digest::of(b"a"), Sha256Digest::of(b"b"));
        let a1 = table.take(a).unwrap();
        let _a2 = table.take(a).unwrap();
        let refused = table.take(a).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("holds 2 open streams"), "{}", refused.message());
        let _b1 = table.take(b).unwrap();
        drop(a1);
        assert_eq!(table.held(&a), 1);
        let _a3 = table.take(a).unwrap();
    }

    #[test]
    fn download_slots_count_per_certificate_customer_and_total() {
        let table = DownloadTable::new(DownloadLimits { total: 4, per_certificate: 2, per_customer: 3 });
        let (a, b, c) = (Sha256Digest::of(b"a"), Sha256Digest::of(b"b"), Sha256Digest::of(b"c"));
        let a1 = table.take(a, "x").unwrap();
        let _a2 = table.take(a, "x").unwrap();
        assert!(table.take(a, "x").unwrap_err().message().contains("per certificate"));
        // Alone, x holds its share: half.
        assert!(table.take(b, "x").unwrap_err().message().contains("share"));
        let _c1 = table.take(c, "y").unwrap();
        // With y downloading, x's share is a third (1): it holds more.
        drop(a1);
        assert!(table.take(b, "x").unwrap_err().message().contains("with 2 customer(s) downloading"));
        let open = table.open.lock().unwrap();
        assert_eq!((open.total, open.by_customer.get("x"), open.by_customer.get("y")), (2, Some(&1), Some(&1)));
    }

    #[test]
    fn two_customers_holding_their_shares_leave_a_third_a_slot() {
        let table = DownloadTable::new(DownloadLimits { total: 64, per_certificate: 64, per_customer: 32 });
        let mut held = Vec::new();
        for customer in ["x", "y"] {
            let me = Sha256Digest::of(customer.as_bytes());
            while let Ok(slot) = table.take(me, customer) {
                held.push(slot);
            }
        }
        // x alone took half (32), y then a third (21).
        assert_eq!(held.len(), 32 + 21);
        let z = Sha256Digest::of(b"z");
        let mut third = Vec::new();
        while let Ok(slot) = table.take(z, "z") {
            third.push(slot);
        }
        // z finds what is left (its share would be a quarter, 16).
        assert_eq!(third.len(), 64 - 53);
    }
}
