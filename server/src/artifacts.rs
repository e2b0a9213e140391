//! The content-addressed artifact store: `DIR/artifacts/<sha256>`, each
//! written under `DIR/artifacts/tmp/`, its size and hash checked, fsynced
//! and renamed into place ([`Upload`]), and read by downloads
//! ([`open_at`]).

use std::io::Write as _;
use std::path::PathBuf;

use covenant_core::digest::Sha256Digest;
use sha2::Digest as _;

use crate::layout::DataDir;

/// The largest chunk a publisher may send.
pub const MAX_CHUNK: usize = 4 << 20;

/// Why the artifact store refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArtifactError {
    /// More bytes arrived than the manifest declares.
    #[error("the artifact is longer than the {declared} bytes its manifest declares")]
    TooLong {
        /// The declared size.
        declared: u64,
    },
    /// The upload ended with another size than the manifest declares.
    #[error("the artifact has {written} bytes, its manifest declares {declared}")]
    WrongSize {
        /// The bytes received.
        written: u64,
        /// The declared size.
        declared: u64,
    },
    /// The bytes' hash is not the manifest's.
    #[error("the artifact's SHA-256 differs from its manifest's")]
    WrongHash,
    /// The file system failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Where an artifact lives: `DIR/artifacts/<sha256 hex>`, written under
/// `DIR/artifacts/tmp/` and renamed once complete and checked.
pub fn artifact_path(data: &std::path::Path, sha256: &Sha256Digest) -> PathBuf {
    DataDir::new(data).artifact(sha256)
}

/// Opens a stored artifact, positioned at `offset`.
pub fn open_at(data: &DataDir, sha256: &Sha256Digest, offset: u64) -> std::io::Result<std::fs::File> {
    let mut file = std::fs::File::open(data.artifact(sha256))?;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(offset))?;
    Ok(file)
}

/// An artifact being received: hashed as it is written, never longer than
/// its manifest says.
pub struct Upload {
    file: std::fs::File,
    tmp: PathBuf,
    hasher: sha2::Sha256,
    written: u64,
    expected_size: u64,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload").field("tmp", &self.tmp).field("written", &self.written).finish_non_exhaustive()
    }
}

impl Upload {
    /// Starts receiving an artifact of `expected_size` bytes.
    pub fn start(data: &DataDir, expected_size: u64) -> Result<Upload, ArtifactError> {
        let dir = data.artifacts_tmp();
        std::fs::create_dir_all(&dir)?;
        let mut name = [0u8; 16];
        getrandom::fill(&mut name).map_err(|e| std::io::Error::other(e.to_string()))?;
        let tmp = dir.join(hex::encode(name));
        let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        Ok(Upload { file, tmp, hasher: sha2::Sha256::new(), written: 0, expected_size })
    }

    /// Writes the next bytes.
    pub fn write(&mut self, data: &[u8]) -> Result<(), ArtifactError> {
        let len = data.len() as u64;
        if self.written + len > self.expected_size {
            return Err(ArtifactError::TooLong { declared: self.expected_size });
        }
        self.file.write_all(data)?;
        self.hasher.update(data);
        self.written += len;
        Ok(())
    }

    /// Checks size and hash, makes the file durable and moves it into place.
    pub fn finish(self, data: &DataDir, expected: &Sha256Digest) -> Result<PathBuf, ArtifactError> {
        if self.written != self.expected_size {
            return Err(ArtifactError::WrongSize { written: self.written, declared: self.expected_size });
        }
        let got: [u8; 32] = self.hasher.clone().finalize().into();
        if got != *expected.as_bytes() {
            return Err(ArtifactError::WrongHash);
        }
        self.file.sync_all()?;
        let target = data.artifact(expected);
        std::fs::rename(&self.tmp, &target)?;
        if let Some(dir) = target.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all())?;
        }
        Ok(target)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        // An upload not finished leaves nothing behind.
        let _ = std::fs::remove_file(&self.tmp);
    }
}
