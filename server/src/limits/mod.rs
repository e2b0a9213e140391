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

mod downloads;
mod peers;
mod rate;
mod streams;
mod submissions;

pub use downloads::{DownloadLimits, DownloadSlot, DownloadTable};
pub use peers::{PeerLimits, PeerStream, PeerTable};
pub use rate::{RateLimit, RateLimiter};
pub use streams::{StreamSlot, StreamTable};
pub use submissions::{Submission, SubmissionLimits, SubmissionSlot, SubmissionTable};

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
