//! Covenant's pure trust core.
//!
//! Everything here is a function over bytes and values: no I/O, no async, no
//! clock. The time, the trusted keys and the last state seen are passed in.
//! Verification returns proof types ([`envelope::Verified`],
//! [`root::TrustedRoot`], [`note::VerifiedCheckpoint`]) that only the
//! verifying code can construct.

#![forbid(unsafe_code)]

pub mod describe;
pub mod digest;
pub mod envelope;
pub mod evidence;
pub mod keys;
pub mod ledger;
pub mod merkle;
pub mod note;
pub mod offline;
pub mod policy;
pub mod provision;
pub mod replay;
pub mod root;
pub mod state;
pub mod statements;
pub mod text;
pub mod tiles;
pub mod transparency;
pub mod update;
pub mod visibility;
pub mod witness;

pub use digest::{Sha256Digest, Timestamp};
pub use envelope::{Envelope, EnvelopeError, Verified};
pub use keys::{KeyError, KeyId, KeySet, PublicKey, SigningKey};
