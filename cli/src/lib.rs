//! The people's command line as a library: each command's logic, so the
//! binary stays a thin argument parser and tests can call the commands.

#![forbid(unsafe_code)]

pub mod admin;
pub mod attest;
pub mod audit;
pub mod connect;
pub mod demo;
pub mod keys;
pub mod release;
pub mod root;
pub mod witness;

/// `n` and the noun that agrees with it: "1 mismatch", "0 mismatches".
pub(crate) fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
