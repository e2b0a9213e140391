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

/// TCP connections open per peer address, and in all.
#[derive(Debug)]
pub struct PeerTable {
    per_peer: usize,
    total: usize,
    open: Arc<Mutex<Peers>>,
}

#[derive(Debug, Default)]
struct Peers {
    by_address: HashMap<IpAddr, usize>,
    total: usize,
}

impl PeerTable {
    /// An empty table allowing `per_peer` connections from one address and
    /// `total` in all.
    pub fn new(per_peer: usize, total: usize) -> PeerTable {
        PeerTable { per_peer, total, open: Arc::default() }
    }

    /// Admits `stream` if its peer holds fewer than its cap and the server
    /// fewer than the global cap, else `None` (the caller drops the stream,
    /// which closes it; connections already open are not affected).
    pub fn admit(&self, stream: TcpStream) -> Option<PeerStream> {
        let peer = stream.peer_addr().ok()?.ip();
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if open.total >= self.total {
            return None;
        }
        let n = open.by_address.entry(peer).or_insert(0);
        if *n >= self.per_peer {
            return None;
        }
        *n += 1;
        open.total += 1;
        drop(open);
        Some(PeerStream { inner: stream, peer, open: self.open.clone() })
    }

    /// Connections open now, in all.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).total
    }
}

/// A TCP connection counted against its peer's cap and the global cap
/// until it is dropped.
///
/// It reports the same connection info as a bare `TcpStream`, so the TLS
/// layer over it still fills `Request::peer_certs` (which looks for
/// `TlsConnectInfo<TcpConnectInfo>`; `docs/style.md`, stack pitfall 4).
#[derive(Debug)]
pub struct PeerStream {
    inner: TcpStream,
    peer: IpAddr,
    open: Arc<Mutex<Peers>>,
}

impl Drop for PeerStream {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        decrement(&mut open.by_address, &self.peer);
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
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
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
