//! The Covenant update server as a library: the ledger (storage, sequencer,
//! views), the data directory, the CA, the gRPC services over mutual TLS,
//! and the witness cosigning task.

#![forbid(unsafe_code)]

pub mod accept;
pub mod admin_service;
pub mod artifacts;
pub mod attestation_service;
pub mod backup;
pub mod checkin;
pub mod datadir;
pub mod field_service;
pub mod layout;
pub mod ledger;
pub mod ledger_service;
pub mod limits;
pub mod metrics;
pub mod node;
pub mod pki;
pub mod query_service;
pub mod seen;
pub mod serve;
pub mod update_service;
pub mod witnesses;
