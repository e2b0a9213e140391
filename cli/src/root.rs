//! `covenant root new|sign|show`: the offline root ceremony. A root is
//! written unsigned, then each root-key holder adds their signature on their
//! own (offline) machine; the server never sees a root private key.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use covenant_core::digest::Timestamp;
use covenant_core::envelope::Envelope;
use covenant_core::keys::PublicKey;
use covenant_core::statements::{Payload as _, RoleSpec, Roles, RootKey, RootMetadata, RootTag, SchemaV1};

use crate::connect::read_key;
use crate::output;

/// The root commands.
#[derive(Debug, clap::Subcommand)]
pub enum Root {
    /// Writes a new, unsigned root. A KEY is a public key (64 hex digits)
    /// or a signing-key file, whose public half is taken.
    New {
        /// Where to write it.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Its version (1 for the first root, then one more per rotation).
        #[arg(long, default_value_t = 1)]
        version: u64,
        /// When it expires (RFC 3339).
        #[arg(long)]
        expires: String,
        /// Root keys.
        #[arg(long = "root", value_name = "KEY", required = true)]
        root_keys: Vec<String>,
        /// Root signatures a rotation needs.
        #[arg(long, default_value_t = 2)]
        root_threshold: u32,
        /// Release keys.
        #[arg(long = "release", value_name = "KEY", required = true)]
        release_keys: Vec<String>,
        /// Release signatures a release needs.
        #[arg(long, default_value_t = 2)]
        release_threshold: u32,
        /// The server's decision key.
        #[arg(long, value_name = "KEY")]
        decision: String,
        /// The ledger's key with its note name, NAME=KEY, or its C2SP
        /// verifier key (the server's ledger.vkey).
        #[arg(long, value_name = "NAME=KEY")]
        ledger: String,
        /// Witness keys with their note names, NAME=KEY, or a witness's C2SP
        /// verifier key (its witness.vkey).
        #[arg(long = "witness", value_name = "NAME=KEY")]
        witnesses: Vec<String>,
        /// Witness cosignatures an agent requires (0 only with --development).
        #[arg(long, default_value_t = 1)]
        witness_threshold: u32,
        /// Admin keys.
        #[arg(long = "admin", value_name = "KEY", required = true)]
        admin_keys: Vec<String>,
        /// Approvals a heavy admin action needs.
        #[arg(long, default_value_t = 2)]
        admin_threshold: u32,
        /// Mark it a development root (agents accept it only if configured to).
        #[arg(long)]
        development: bool,
    },
    /// Adds your signature to a root file, in place.
    Sign {
        /// The root file.
        file: PathBuf,
        /// Your root signing-key file, or a PKCS#11 URI of a key in a token
        /// (pkcs11:token=T;object=K?module-path=M&pin-source=file:P; the
        /// PIN may also come from COVENANT_PKCS11_PIN).
        #[arg(long, value_name = "FILE|URI")]
        key: String,
    },
    /// Shows what a root file says and who has signed it.
    Show {
        /// The root file.
        file: PathBuf,
    },
}

fn public(key: &str) -> anyhow::Result<PublicKey> {
    if let Ok(k) = PublicKey::from_hex(key) {
        return Ok(k);
    }
    Ok(read_key(Path::new(key)).with_context(|| format!("{key} is neither a public key nor a key file"))?.public())
}

fn spec(keys: &[String], threshold: u32) -> anyhow::Result<RoleSpec> {
    let keys =
        keys.iter().map(|k| Ok(RootKey { public: public(k)?, note_name: None })).collect::<anyhow::Result<_>>()?;
    Ok(RoleSpec { keys, threshold })
}

/// NAME=KEY, or a C2SP verifier key of type `sig_type` (a log's
/// Ed25519 key, or a witness's cosignature key).
fn named_spec(entries: &[String], threshold: u32, sig_type: u8) -> anyhow::Result<RoleSpec> {
    let keys = entries
        .iter()
        .map(|e| {
            let e = e.trim();
            if let Ok(v) = covenant_core::note::NoteVerifier::parse(e) {
                if v.sig_type() != sig_type {
                    bail!("{e} is a verifier key of another kind (a log's key where a witness's belongs, or back)");
                }
                return Ok(RootKey { public: *v.public_key(), note_name: Some(v.name().to_owned()) });
            }
            let (name, key) = e.split_once('=').context("write NAME=KEY or a C2SP verifier key (name+id+key)")?;
            Ok(RootKey { public: public(key)?, note_name: Some(name.to_owned()) })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(RoleSpec { keys, threshold })
}

/// Runs a root command.
pub fn run(cmd: Root, json: bool) -> anyhow::Result<()> {
    match cmd {
        Root::New {
            out,
            version,
            expires,
            root_keys,
            root_threshold,
            release_keys,
            release_threshold,
            decision,
            ledger,
            witnesses,
            witness_threshold,
            admin_keys,
            admin_threshold,
            development,
        } => {
            let expires =
                Timestamp::parse_rfc3339(&expires).context("--expires must be RFC 3339, e.g. 2027-12-31T00:00:00Z")?;
            let root = RootMetadata {
                type_tag: RootTag,
                schema: SchemaV1,
                version,
                expires,
                development,
                roles: Roles {
                    root: spec(&root_keys, root_threshold)?,
                    release: spec(&release_keys, release_threshold)?,
                    decision: spec(&[decision], 1)?,
                    ledger: named_spec(&[ledger], 1, covenant_core::note::TYPE_ED25519)?,
                    witness: named_spec(&witnesses, witness_threshold, covenant_core::note::TYPE_COSIGNATURE)?,
                    admin: spec(&admin_keys, admin_threshold)?,
                },
            };
            root.validate().context("this root would be refused")?;
            if out.exists() {
                bail!("{} exists: a new root never overwrites a file", out.display());
            }
            let envelope = Envelope::new(RootMetadata::PAYLOAD_TYPE, root.to_payload_bytes());
            std::fs::write(&out, envelope.to_bytes())?;
            if json {
                println!("{}", serde_json::to_string(&output::RootWritten { version, written: out })?);
            } else {
                println!(
                    "Wrote root version {version} to {}, unsigned. Each root-key holder runs `covenant root sign`.",
                    out.display()
                );
            }
            Ok(())
        }
        Root::Sign { file, key } => {
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let mut envelope = Envelope::parse(&bytes)?;
            if envelope.payload_type() != RootMetadata::PAYLOAD_TYPE {
                bail!("{} is not a root", file.display());
            }
            RootMetadata::parse(envelope.payload()).context("this root is malformed")?;
            let key = crate::keys::signer(&key)?;
            envelope.try_sign(key.as_ref())?;
            let tmp = file.with_extension("tmp");
            std::fs::write(&tmp, envelope.to_bytes())?;
            std::fs::rename(&tmp, &file)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&output::RootSigned {
                        signatures: envelope.signatures().len(),
                        signed_by: key.key_id().to_string()
                    })?
                );
            } else {
                println!(
                    "Signed as {}; the root now carries {}.",
                    key.key_id(),
                    crate::counted(envelope.signatures().len(), "signature", "signatures")
                );
            }
            Ok(())
        }
        Root::Show { file } => {
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let envelope = Envelope::parse(&bytes)?;
            let root = RootMetadata::parse(envelope.payload())?;
            let shown = output::RootShown {
                version: root.version,
                expires: root.expires.to_string(),
                development: root.development,
                signatures: envelope.signatures().len(),
                roles: root.roles,
            };
            if json {
                println!("{}", serde_json::to_string(&shown)?);
            } else {
                println!(
                    "Root version {}, expires {}{}, {}.",
                    shown.version,
                    shown.expires,
                    if shown.development { ", development" } else { "" },
                    crate::counted(shown.signatures, "signature", "signatures")
                );
                for (name, role) in shown.roles.all() {
                    println!("  {name}: {} of {}", role.threshold, crate::counted(role.keys.len(), "key", "keys"));
                }
            }
            Ok(())
        }
    }
}
