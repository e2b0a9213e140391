//! [`StreamTable`]: the streams each certificate holds open; a
//! [`StreamSlot`] gives its place back when dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use covenant_core::digest::Sha256Digest;
use tonic::Status;

use super::decrement;

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

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
}
