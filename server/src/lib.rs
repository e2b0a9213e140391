//! The Covenant update server as a library: the ledger (storage, sequencer,
//! views) today; the gRPC services over mutual TLS arrive with issue #4.

#![forbid(unsafe_code)]

pub mod datadir;
pub mod ledger;
pub mod pki;
pub mod service;
pub mod witnesses;
