//! `covenant release new|sign|show` (offline: the release keys never touch
//! the server) and the upload behind `covenant admin publish`.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use covenant_core::digest::Sha256Digest;
use covenant_core::envelope::Envelope;
use covenant_core::statements::{Artifact, Payload as _, ReleaseClass, ReleaseManifest, ReleaseTag, SchemaV1};
use covenant_proto::v1 as pb;
use covenant_proto::v1::admin_service_client::AdminServiceClient;
use sha2::Digest as _;

use crate::connect::Connection;
use crate::output;

/// The release commands.
#[derive(Debug, clap::Subcommand)]
pub enum Release {
    /// Writes an unsigned release manifest for an artifact (its SHA-256 and
    /// size are read from the file).
    New {
        /// The artifact file.
        artifact: PathBuf,
        /// The product line (e.g. lim).
        #[arg(long)]
        product: String,
        /// The release's semantic version.
        #[arg(long)]
        version: String,
        /// capability, security-fix, compliance-enabling or capability-removal.
        #[arg(long)]
        class: String,
        /// The capability baseline it is built on (a capability release is
        /// its own baseline).
        #[arg(long)]
        baseline: String,
        /// Where to write the manifest.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Adds your release-key signature to a manifest, in place (offline).
    Sign {
        /// The manifest.
        manifest: PathBuf,
        /// Your release signing-key file, or a PKCS#11 URI of a key in a token
        /// (pkcs11:token=T;object=K?module-path=M&pin-source=file:P; the
        /// PIN may also come from COVENANT_PKCS11_PIN).
        #[arg(long, value_name = "FILE|URI")]
        key: String,
    },
    /// Shows a manifest, its digest and how many signatures it carries.
    Show {
        /// The manifest.
        manifest: PathBuf,
    },
}

fn sha256_file(path: &Path) -> anyhow::Result<(Sha256Digest, u64)> {
    let mut file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((Sha256Digest(hasher.finalize().into()), size))
}

/// Reads a manifest envelope and its payload.
pub fn read_manifest(path: &Path) -> anyhow::Result<(Envelope, ReleaseManifest)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let envelope = Envelope::parse(&bytes).with_context(|| format!("{} is not a DSSE envelope", path.display()))?;
    if envelope.payload_type() != ReleaseManifest::PAYLOAD_TYPE {
        bail!("{} is not a release manifest", path.display());
    }
    let manifest = ReleaseManifest::parse(envelope.payload()).context("the manifest is malformed")?;
    Ok((envelope, manifest))
}

/// Runs a release command.
pub fn run(cmd: Release, json: bool) -> anyhow::Result<()> {
    match cmd {
        Release::New { artifact, product, version, class, baseline, out } => {
            let class: ReleaseClass = serde_json::from_value(serde_json::Value::String(class.clone())).map_err(|_| {
                anyhow::anyhow!(
                    "unknown class {class:?}: use capability, security-fix, compliance-enabling or capability-removal"
                )
            })?;
            let (sha256, size) = sha256_file(&artifact)?;
            let name =
                artifact.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "artifact".into());
            let manifest = ReleaseManifest {
                type_tag: ReleaseTag,
                schema: SchemaV1,
                product,
                version: version.parse().context("--version must be a semantic version such as 1.2.0")?,
                class,
                capability_baseline: baseline.parse().context("--baseline must be a semantic version")?,
                artifact: Artifact { name, sha256, size },
                expected_installed_digests: Default::default(),
                released_at: crate::now(),
            };
            manifest.validate().context("this manifest would be refused")?;
            if out.exists() {
                bail!("{} exists: a new manifest never overwrites a file", out.display());
            }
            std::fs::write(&out, Envelope::new(ReleaseManifest::PAYLOAD_TYPE, manifest.to_payload_bytes()).to_bytes())?;
            let digest = Sha256Digest::of(&manifest.to_payload_bytes());
            if json {
                let out = output::ManifestWritten { manifest: out, release_digest: digest.to_string() };
                println!("{}", serde_json::to_string(&out)?);
            } else {
                println!("Wrote {} (unsigned). Release digest {digest}.", out.display());
                println!("Each release-key holder signs it: covenant release sign {} --key KEY", out.display());
            }
            Ok(())
        }
        Release::Sign { manifest, key } => {
            let (mut envelope, _) = read_manifest(&manifest)?;
            let key = crate::keys::signer(&key)?;
            envelope.try_sign(key.as_ref())?;
            let tmp = manifest.with_extension("tmp");
            std::fs::write(&tmp, envelope.to_bytes())?;
            std::fs::rename(&tmp, &manifest)?;
            if json {
                println!("{}", serde_json::to_string(&output::Signed { signatures: envelope.signatures().len() })?);
            } else {
                println!(
                    "Signed; the manifest carries {}.",
                    crate::counted(envelope.signatures().len(), "signature", "signatures")
                );
            }
            Ok(())
        }
        Release::Show { manifest } => {
            let (envelope, m) = read_manifest(&manifest)?;
            let digest = Sha256Digest::of(envelope.payload());
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&output::Manifest {
                        artifact_sha256: m.artifact.sha256.to_string(),
                        baseline: m.capability_baseline.to_string(),
                        class: m.class.to_string(),
                        product: m.product.clone(),
                        release_digest: digest.to_string(),
                        signatures: envelope.signatures().len(),
                        size: m.artifact.size,
                        version: m.version.to_string(),
                    })?
                );
            } else {
                println!(
                    "{} {} ({}, baseline {}): {} bytes, SHA-256 {}; release digest {digest}; {}.",
                    m.product,
                    m.version,
                    m.class,
                    m.capability_baseline,
                    m.artifact.size,
                    m.artifact.sha256,
                    crate::counted(envelope.signatures().len(), "signature", "signatures")
                );
            }
            Ok(())
        }
    }
}

/// Uploads a signed manifest and its artifact in 1 MiB chunks.
pub async fn publish(conn: &Connection, manifest: &Path, artifact: &Path, json: bool) -> anyhow::Result<()> {
    let (envelope, m) = read_manifest(manifest)?;
    let (sha256, size) = sha256_file(artifact)?;
    if sha256 != m.artifact.sha256 || size != m.artifact.size {
        bail!("{} is not the artifact this manifest names", artifact.display());
    }
    let mut file = std::fs::File::open(artifact)?;
    // Read lazily, a chunk at a time, as the upload goes.
    let first = std::iter::once(pb::PublishChunk { manifest: envelope.to_bytes(), data: vec![] });
    let rest = std::iter::from_fn(move || {
        let mut buf = vec![0u8; 1 << 20];
        match file.read(&mut buf) {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                Some(pb::PublishChunk { manifest: vec![], data: buf })
            }
        }
    });
    let mut client = AdminServiceClient::new(conn.channel().await?);
    let done = client
        .publish(tokio_stream::iter(first.chain(rest)))
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    if json {
        println!(
            "{}",
            serde_json::to_string(&output::Published {
                index: done.index,
                release_digest: Sha256Digest::of(envelope.payload()).to_string()
            })?
        );
    } else {
        println!("Published {} {} as ledger entry {}.", m.product, m.version, done.index);
    }
    Ok(())
}
