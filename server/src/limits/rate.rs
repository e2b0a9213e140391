//! The per-certificate request rate limit: [`RateLimit`] and
//! [`RateLimiter`], token buckets in 16 maps, each behind its own short
//! lock, the full ones pruned.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use covenant_core::digest::Sha256Digest;
use tonic::Status;

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
}
