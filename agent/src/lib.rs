//! The Covenant agent as a library: the embedded daemon's steps, so the
//! binary stays a thin argument parser and tests can call them.
//!
//! - enrollment ([`enroll_request`]): the device's keys are made on the
//!   device and never leave it; only a certificate request travels;
//! - provisioning ([`provision`]): the bundle from `covenant admin enroll`
//!   becomes the state directory ([`store`]);
//! - one update cycle ([`engine::Agent::check`]), verified by
//!   `covenant_core::update::verify_answer`, installed through A/B slots;
//! - the gRPC transport ([`net`]) and the configuration ([`config`]);
//! - what `--json` prints ([`output`]).

#![forbid(unsafe_code)]

use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use covenant_core::keys::SigningKey;
use covenant_core::text::Untrusted;
use covenant_storage::write_private;

pub mod bundle;
pub mod config;
pub mod engine;
pub mod net;
pub mod output;
pub mod store;

/// What `enroll-request` made.
#[derive(Debug)]
pub struct EnrollRequest {
    /// The certificate request to send to the vendor's compliance office.
    pub csr: PathBuf,
    /// The device's signing key, public half, hex.
    pub signing_key: String,
}

/// Makes the device's signing key and TLS key in `state` (0600, in a 0700
/// folder) and a certificate request carrying the signing key's public half
/// as the URI `urn:covenant:ed25519:<hex>`. Refuses to overwrite keys.
pub fn enroll_request(state: &Path) -> anyhow::Result<EnrollRequest> {
    if state.join(store::SIGNING_KEY).exists() {
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
    write_private(&state.join(store::SIGNING_KEY), signing.to_seed_hex().as_bytes())?;
    write_private(&state.join(store::TLS_KEY), tls.serialize_pem().as_bytes())?;
    let csr_path = state.join(store::REQUEST);
    std::fs::write(&csr_path, csr).context("writing request.csr")?;
    Ok(EnrollRequest { csr: csr_path, signing_key: signing.public().to_hex() })
}

/// Provisions the state directory `state` (which holds the keys from
/// [`enroll_request`]) from the bundle `covenant admin enroll` wrote: the
/// certificate, the CA, the trusted root (checked: self-signed, unexpired,
/// a development root only if `allow_development`), the deployment id and
/// the server's address; `product`, `version` and `baseline` describe the
/// image the device runs now, which becomes slot a.
pub fn provision(
    bundle: &Path,
    state: &Path,
    product: &str,
    version: &semver::Version,
    baseline: &semver::Version,
    allow_development: bool,
) -> anyhow::Result<config::Config> {
    use covenant_core::provision as bundle;
    use covenant_core::root::{RootPolicy, TrustedRoot};
    if !state.join(store::SIGNING_KEY).exists() || !state.join(store::TLS_KEY).exists() {
        bail!(
            "{} holds no device keys: run `covenant-agent enroll-request --state {}` first",
            state.display(),
            state.display()
        );
    }
    if state.join(store::CURRENT).exists() {
        bail!("{} is already provisioned", state.display());
    }
    let read =
        |name: &str| std::fs::read(bundle.join(name)).with_context(|| format!("reading {} from the bundle", name));
    let root_bytes = read(bundle::ROOT)?;
    let policy = RootPolicy { allow_development };
    let root = TrustedRoot::provision(&root_bytes, engine::system_now(), policy).map_err(|e| match e {
        covenant_core::root::RootError::DevelopmentNotAllowed => anyhow::anyhow!(
            "the bundle's root is a development root; provision with --allow-development only on a test bench"
        ),
        e => anyhow::anyhow!("the bundle's root.json is refused: {e}"),
    })?;
    // The bundle's verifier keys must be the root's (a mismatched bundle is
    // refused rather than half-trusted).
    let ledger = String::from_utf8_lossy(&read(bundle::LEDGER_VKEY)?).trim().to_owned();
    let expected: Vec<String> = root.ledger_verifiers()?.iter().map(ToString::to_string).collect();
    if ledger.lines().map(str::trim).collect::<Vec<_>>() != expected.iter().map(String::as_str).collect::<Vec<_>>() {
        bail!("the bundle's ledger.vkey is not the ledger key its root.json names");
    }
    let deployment = String::from_utf8_lossy(&read(bundle::DEPLOYMENT)?).trim().to_owned();
    if !covenant_core::statements::is_valid_id(&deployment) {
        bail!("the bundle's deployment id {deployment:?} is not an id");
    }
    if !covenant_core::statements::is_valid_id(product) {
        bail!("the product {product:?} is not an id");
    }
    if baseline > version {
        bail!("the baseline {baseline} is newer than the version {version}");
    }
    let server = String::from_utf8_lossy(&read(bundle::SERVER)?).trim().to_owned();
    std::fs::write(state.join(store::CERT), read(bundle::CERT)?)?;
    std::fs::write(state.join(store::CA), read(bundle::CA)?)?;
    let fs = covenant_storage::FsStorage::new(state)?;
    let st = store::Store::new(fs);
    st.set_root(&root_bytes)?;
    st.set_identity(&store::AgentIdentity { deployment, product: product.to_owned() })?;
    st.set_slot(
        store::Slot::A,
        &store::SlotMeta { version: version.clone(), baseline: baseline.clone(), artifact: None, grant: None },
    )?;
    st.set_current(store::Slot::A)?;
    let config = config::Config { server, allow_development, ..config::Config::default() };
    config.write(&state.join(config::FILE))?;
    Ok(config)
}

/// A verdict in words, for the customer's operator.
pub fn describe(v: &store::LastVerdict) -> String {
    use store::Verdict;
    let mut out = match v.verdict {
        Verdict::Current => "up to date: no newer release exists".to_owned(),
        Verdict::Granted => format!(
            "version {} is granted (ledger entry {})",
            v.granted.as_ref().map(ToString::to_string).unwrap_or_default(),
            v.index.unwrap_or_default()
        ),
        Verdict::Withheld => format!("an update is withheld (ledger entry {})", v.index.unwrap_or_default()),
        Verdict::Refused => {
            format!("the server's answer was refused: {}", Untrusted(v.refusal.as_deref().unwrap_or("no reason")))
        }
    };
    if let Some(level) = v.suspension.filter(|l| *l != covenant_core::statements::SuspensionLevel::None) {
        out.push_str(&format!("; suspension in force: {}", level.describe()));
    }
    // Reasons quote what customers and engineers wrote (an end use, a
    // site): escaped, so that they cannot rewrite the operator's screen.
    for c in &v.unmet {
        out.push_str(&format!("\n  unmet: {}: {}", Untrusted(&c.condition), Untrusted(&c.reason)));
    }
    for w in &v.withheld {
        // Each reason is a sentence of its own.
        out.push_str(&format!("\n  withheld: version {}: {}", w.version, Untrusted(&w.reasons.join(" "))));
    }
    out
}
