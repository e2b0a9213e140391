//! The Covenant update server as a library: the ledger (storage, sequencer,
//! views), the data directory, the CA, the gRPC services over mutual TLS,
//! and the witness cosigning task.

#![forbid(unsafe_code)]

pub mod accept;
pub mod datadir;
pub mod ledger;
pub mod limits;
pub mod pki;
pub mod refusal;
pub mod service;
pub mod updates;
pub mod witnesses;
