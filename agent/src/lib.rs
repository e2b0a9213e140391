//! The Covenant agent as a library: the embedded daemon's steps, so the
//! binary stays a thin argument parser and tests can call them. This first
//! part enrolls a device: its keys are made on the device and never leave
//! it; only a certificate request travels. The verification chain the agent
//! runs on every check-in lives in `covenant-core`; the daemon comes with
//! issue #8.

#![forbid(unsafe_code)]

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use covenant_core::keys::SigningKey;

/// What `enroll-request` made.
#[derive(Debug)]
pub struct EnrollRequest {
    /// The certificate request to send to the vendor's compliance office.
    pub csr: PathBuf,
    /// The device's signing key, public half, hex.
    pub signing_key: String,
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {} (it must not exist yet)", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Makes the device's signing key and TLS key in `state` (0600, in a 0700
/// folder) and a certificate request carrying the signing key's public half
/// as the URI `urn:covenant:ed25519:<hex>`. Refuses to overwrite keys.
pub fn enroll_request(state: &Path) -> anyhow::Result<EnrollRequest> {
    if state.join("signing.key").exists() {
        bail!("{} already holds this device's keys; enrollment never replaces them", state.display());
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(state)?;
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut_slice())
        .map_err(|e| anyhow::anyhow!("no randomness from the operating system: {e}"))?;
    let signing = SigningKey::from_seed(&seed);
    let tls = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, "covenant device");
    let uri = format!("urn:covenant:ed25519:{}", signing.public().to_hex());
    params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into()?)];
    let csr = params.serialize_request(&tls)?.pem()?;
    write_private(&state.join("signing.key"), signing.to_seed_hex().as_bytes())?;
    write_private(&state.join("key.pem"), tls.serialize_pem().as_bytes())?;
    let csr_path = state.join("request.csr");
    std::fs::write(&csr_path, csr).context("writing request.csr")?;
    Ok(EnrollRequest { csr: csr_path, signing_key: signing.public().to_hex() })
}
