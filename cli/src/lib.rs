//! The people's command line as a library: each command's logic, so the
//! binary stays a thin argument parser and tests can call the commands.

#![forbid(unsafe_code)]

pub mod admin;
pub mod attest;
pub mod audit;
pub mod connect;
pub mod console;
pub mod demo;
mod disktree;
pub mod evidence;
pub mod field;
pub mod keys;
pub mod output;
pub mod query;
pub mod read;
pub mod release;
pub mod report;
pub mod root;
pub mod transparency;
pub mod witness;

/// `n` and the noun that agrees with it: "1 mismatch", "0 mismatches".
pub(crate) fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The system clock's time, for what a person signs now (a module of its
/// own would be one function; here both `admin` and `release` reach it
/// without importing each other).
pub(crate) fn now() -> covenant_core::digest::Timestamp {
    covenant_core::digest::Timestamp::since_epoch(std::time::SystemTime::now())
}

/// Entries `start..end` of the ledger (with the bodies the caller may read
/// when `with_bodies`), refused unless the server served exactly those: the
/// one page read of `audit` and `evidence`.
pub(crate) async fn ledger_page(
    client: &mut covenant_proto::v1::ledger_service_client::LedgerServiceClient<tonic::transport::Channel>,
    start: u64,
    end: u64,
    with_bodies: bool,
) -> anyhow::Result<Vec<covenant_proto::v1::LedgerEntry>> {
    let entries = client
        .get_entries(covenant_proto::v1::GetEntriesRequest { start, end, with_bodies })
        .await?
        .into_inner()
        .entries;
    if entries.len() as u64 != end - start || entries.iter().zip(start..).any(|(e, i)| e.index != i) {
        anyhow::bail!("the server returned {} entries for {start}..{end}, not those", entries.len());
    }
    Ok(entries)
}
