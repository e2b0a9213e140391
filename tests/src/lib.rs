//! What the end-to-end tests (`tests/tests/`) and the benchmarks
//! (`tests/benches/`) share, so each is written once:
//! - [`served`]: a development server on loopback and what the tests put on
//!   it (people, deployments, contracts, releases, enrolled agents), the
//!   workspace's binaries, and the auditor's check of a ledger;
//! - [`device`]: what a device signs and reads (check-ins, manifests,
//!   verifications, the decision in an answer);
//! - [`load`]: the benchmarks' flags and their ceiling measurement;
//! - [`browser`]: headless Chromium for the tests of pages.
//!
//! Test support, not product code: it unwraps, and a failure is the test's.

#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod browser;
pub mod device;
pub mod load;
pub mod served;

pub use device::*;
pub use served::*;
