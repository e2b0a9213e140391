//! `covenant keys new`: a person makes their own keys (an Ed25519 signing
//! key and a TLS key) and a certificate request that carries the signing
//! key's public half; only the request leaves the machine.

use std::path::Path;

use anyhow::Context as _;
use covenant_core::keys::SigningKey;
use rcgen::{CertificateParams, DnType, KeyPair, SanType};

use covenant_storage::write_private;

use crate::output::KeysMade;

/// Makes `signing.key`, `key.pem` (both 0600) and `request.csr` in `out`;
/// with `signing_only`, only `signing.key`.
pub fn new(out: &Path, signing_only: bool, json: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    let signing = random_signing_key()?;
    if signing_only {
        write_private(&out.join("signing.key"), signing.to_seed_hex().as_bytes())?;
        let public = hex::encode(signing.public().to_bytes());
        if json {
            println!("{}", serde_json::to_string(&KeysMade { csr: None, signing_key: public })?);
        } else {
            println!("Made {}/signing.key (0600). Its public key is {public}.", out.display());
        }
        return Ok(());
    }
    let tls = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "covenant holder");
    let uri = format!("urn:covenant:ed25519:{}", hex::encode(signing.public().to_bytes()));
    params.subject_alt_names = vec![SanType::URI(uri.try_into()?)];
    let csr = params.serialize_request(&tls)?.pem()?;
    write_private(&out.join("signing.key"), signing.to_seed_hex().as_bytes())?;
    write_private(&out.join("key.pem"), tls.serialize_pem().as_bytes())?;
    std::fs::write(out.join("request.csr"), &csr).context("writing request.csr")?;
    let public = hex::encode(signing.public().to_bytes());
    if json {
        println!("{}", serde_json::to_string(&KeysMade { csr: Some(out.join("request.csr")), signing_key: public })?);
    } else {
        println!("Made your keys in {}: signing.key and key.pem stay here (0600).", out.display());
        println!("Send request.csr to your compliance officer. Your signing key is {public}.");
    }
    Ok(())
}

/// A new signing key from the operating system's randomness (the seed is
/// wiped from memory once the key holds it).
pub fn random_signing_key() -> anyhow::Result<SigningKey> {
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut_slice())
        .map_err(|e| anyhow::anyhow!("no randomness from the operating system: {e}"))?;
    Ok(SigningKey::from_seed(&seed))
}

/// The signing key `key` names: a PKCS#11 URI (`pkcs11:token=…;object=…`,
/// the key stays in its token) or a key file's path.
pub fn signer(key: &str) -> anyhow::Result<std::sync::Arc<dyn covenant_core::keys::Signer>> {
    if covenant_pkcs11::is_uri(key) {
        let key = covenant_pkcs11::Pkcs11Key::open_text(key).context("opening the key in its token")?;
        return Ok(key);
    }
    Ok(std::sync::Arc::new(crate::connect::read_key(Path::new(key))?))
}
