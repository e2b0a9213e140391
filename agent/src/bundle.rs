//! An offline bundle as the agent's [`Transport`] (docs/offline.md): the
//! root chain and the artifact come from the file (read in chunks from the
//! offset asked, never whole), a check-in cannot be sent, and install
//! reports stay in the device's queue: `Agent::hand_over_reports` moves
//! them into the receipt once it is written.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;

use covenant_core::digest::Sha256Digest;
use covenant_core::offline::{Head, PREFIX_BYTES, Prefix};
use covenant_proto::v1 as pb;

use crate::engine::{Chunks, OfflineError, ReportError, Transport, TransportError};

/// The chunk read from the bundle's artifact.
const CHUNK: usize = 256 * 1024;

/// A bundle file opened for installing.
pub struct BundleTransport {
    file: File,
    head: Head,
    artifact_at: u64,
}

impl BundleTransport {
    /// Opens `path` and reads its prefix and head (bounded; the artifact is
    /// not read).
    pub fn open(path: &Path) -> Result<BundleTransport, OfflineBundleError> {
        let mut file = File::open(path)?;
        let mut prefix = [0u8; PREFIX_BYTES];
        read_exact(&mut file, &mut prefix, "prefix")?;
        let p = Prefix::parse(&prefix).map_err(OfflineError::Format)?;
        let mut head = vec![0u8; p.head_len];
        read_exact(&mut file, &mut head, "head")?;
        let head = Head::parse(&head).map_err(OfflineError::Format)?;
        Ok(BundleTransport { file, head, artifact_at: (PREFIX_BYTES + p.head_len) as u64 })
    }

    /// The bundle's head.
    pub fn head(&self) -> &Head {
        &self.head
    }
}

fn read_exact(file: &mut File, buf: &mut [u8], what: &'static str) -> Result<(), OfflineBundleError> {
    match file.read_exact(buf) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(OfflineError::Format(covenant_core::offline::BundleError::Truncated(what)).into())
        }
        Err(e) => Err(e.into()),
    }
}

/// Why a bundle could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OfflineBundleError {
    /// Reading the file.
    #[error("reading the bundle: {0}")]
    Io(#[from] std::io::Error),
    /// Its bytes.
    #[error("the offline bundle is refused: {0}")]
    Refused(#[from] OfflineError),
}

/// The artifact's bytes from an offset on.
pub struct FileChunks {
    file: File,
    at: u64,
    left: u64,
}

impl Chunks for FileChunks {
    async fn next(&mut self) -> Result<Option<(u64, Vec<u8>)>, TransportError> {
        if self.left == 0 {
            return Ok(None);
        }
        let want = self.left.min(CHUNK as u64) as usize;
        let mut buf = vec![0u8; want];
        let mut got = 0;
        while got < want {
            match self.file.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(TransportError::Network(format!("reading the bundle: {e}"))),
            }
        }
        if got == 0 {
            // The file ends before the declared artifact: the download
            // reports it truncated.
            self.left = 0;
            return Ok(None);
        }
        buf.truncate(got);
        let at = self.at;
        self.at += got as u64;
        self.left -= got as u64;
        Ok(Some((at, buf)))
    }
}

impl Transport for BundleTransport {
    type Chunks = FileChunks;

    async fn root_chain(&mut self, _from: u64) -> Result<Vec<Vec<u8>>, TransportError> {
        // The verification skips the versions at or below the trusted one.
        Ok(self.head.root_chain.clone())
    }

    async fn check_in(&mut self, _checkin: Vec<u8>) -> Result<pb::CheckInResponse, TransportError> {
        Err(TransportError::Network("an offline bundle cannot send a check-in".into()))
    }

    async fn download(&mut self, _release: Sha256Digest, offset: u64) -> Result<FileChunks, TransportError> {
        let mut file = self.file.try_clone().map_err(|e| TransportError::Network(format!("the bundle: {e}")))?;
        let left = self.head.artifact_len.saturating_sub(offset);
        file.seek(SeekFrom::Start(self.artifact_at.saturating_add(offset.min(self.head.artifact_len))))
            .map_err(|e| TransportError::Network(format!("the bundle: {e}")))?;
        Ok(FileChunks { file, at: offset, left })
    }

    /// Never sent from here: a report leaves the device's queue only once
    /// a receipt holding it is durably written (`Agent::hand_over_reports`).
    async fn report(&mut self, _report: Vec<u8>) -> Result<(), ReportError> {
        Err(ReportError::Unsent("it goes into the receipt".into()))
    }
}
