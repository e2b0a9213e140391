//! The download slot table: [`DownloadLimits`] and [`DownloadTable`],
//! slots held in total, per certificate and by a customer within its fair
//! share; a [`DownloadSlot`] gives its slot back when dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use covenant_core::digest::Sha256Digest;
use tonic::Status;

use super::decrement;

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

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
