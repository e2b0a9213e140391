//! `covenant admin`: a compliance officer's actions, each a DSSE envelope
//! signed with the officer's own key (the certificate only opens the door),
//! appended to the ledger; the answer is the entry's index and its proof.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use covenant_core::digest::{Sha256Digest, Timestamp};
use covenant_core::envelope;
use covenant_core::keys::PublicKey;
use covenant_core::note::TlogProof;
use covenant_core::statements::{ActionKind, ActionTag, AdminAction, IdentityRole, Payload as _, SchemaV1};
use covenant_proto::v1 as pb;
use covenant_proto::v1::admin_service_client::AdminServiceClient;

use crate::connect::{Connection, read_key};

/// The admin commands.
#[derive(Debug, clap::Subcommand)]
pub enum Admin {
    /// Records a fact in the ledger ("authority notified"), signed by you.
    Note {
        /// The text.
        text: String,
        /// Why it is recorded (defaults to the text).
        #[arg(long)]
        why: Option<String>,
    },
    /// Identities: issue a certificate for a request, or revoke one.
    #[command(subcommand)]
    Identity(IdentityCmd),
}

/// Identity commands.
#[derive(Debug, clap::Subcommand)]
pub enum IdentityCmd {
    /// Has the CA sign a certificate request (`covenant keys new` made it)
    /// and registers it, with the signing key it carries, in the ledger.
    /// Writes cert.pem and ca.pem into --out.
    Issue {
        /// admin, customer, engineer, auditor or deployment.
        #[arg(long)]
        role: String,
        /// The holder's id (customer id, deployment id, person id).
        #[arg(long)]
        id: String,
        /// The certificate request.
        #[arg(long, value_name = "FILE")]
        csr: PathBuf,
        /// The folder to write the certificate into (the holder's identity folder).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// For an auditor: the customers in scope, comma-separated (default: all).
        #[arg(long, value_delimiter = ',')]
        scope: Option<Vec<String>>,
    },
    /// The first admin's own registration, offline: checks the
    /// registration.json that `covenant-server certify` wrote into your
    /// identity folder (your signing key, the certificate beside it, a key the
    /// root lists as admin), signs it with your key and writes enroll.json
    /// for `covenant-server admit`.
    Enroll {
        /// Where to write the signed registration (default: enroll.json in
        /// the identity folder).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Revokes a certificate (and the signing key registered with it).
    Revoke {
        /// The certificate's SHA-256, hex.
        fingerprint: String,
        /// Entries the key signed at or after this time (RFC 3339) no longer count.
        #[arg(long)]
        compromised_since: Option<String>,
    },
}

fn now() -> Timestamp {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Timestamp::from_unix(i64::try_from(secs).unwrap_or(i64::MAX))
}

fn parse_role(s: &str) -> anyhow::Result<IdentityRole> {
    Ok(match s {
        "admin" => IdentityRole::Admin,
        "customer" => IdentityRole::Customer,
        "engineer" => IdentityRole::Engineer,
        "auditor" => IdentityRole::Auditor,
        "deployment" => IdentityRole::Deployment,
        other => anyhow::bail!("unknown role {other:?}: use admin, customer, engineer, auditor or deployment"),
    })
}

async fn act(conn: &Connection, action: ActionKind, why: String, json: bool) -> anyhow::Result<()> {
    let key = conn.signing_key()?;
    let payload =
        AdminAction { type_tag: ActionTag, schema: SchemaV1, action, why, evidence: vec![], issued_at: now() };
    let body = envelope::sign(&payload, &[&key]);
    let mut client = AdminServiceClient::new(conn.channel().await?);
    let done =
        client.act(pb::ActRequest { action: body }).await.map_err(|s| anyhow::anyhow!("{}", s.message()))?.into_inner();
    let proof = done.inclusion.map(|p| String::from_utf8_lossy(&p.text).into_owned()).unwrap_or_default();
    if json {
        println!("{}", serde_json::json!({ "index": done.index, "tlog_proof": proof }));
    } else {
        let size = TlogProof::parse(proof.as_bytes()).ok().map(|p| p.proof.len());
        println!("Recorded as ledger entry {} (inclusion proof of {} hashes).", done.index, size.unwrap_or(0));
    }
    Ok(())
}

/// Runs an admin command.
pub async fn run(cmd: Admin, conn: &Connection, json: bool) -> anyhow::Result<()> {
    match cmd {
        Admin::Note { text, why } => {
            let why = why.unwrap_or_else(|| text.clone());
            act(conn, ActionKind::Note { text }, why, json).await
        }
        Admin::Identity(IdentityCmd::Issue { role, id, csr, out, scope }) => {
            let role_value = parse_role(&role)?;
            let csr = std::fs::read(&csr).with_context(|| format!("reading {}", csr.display()))?;
            let mut client = AdminServiceClient::new(conn.channel().await?);
            let issued = client
                .issue_identity(pb::IssueIdentityRequest { csr, role: role.clone(), subject: id.clone() })
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                .into_inner();
            let fingerprint = Sha256Digest::from_hex(&issued.certificate_sha256)
                .context("the server sent a malformed fingerprint")?;
            let signing_key =
                PublicKey::from_hex(&issued.signing_key).context("the server sent a malformed signing key")?;
            std::fs::create_dir_all(&out)?;
            std::fs::write(out.join("cert.pem"), &issued.certificate_pem)?;
            std::fs::write(out.join("ca.pem"), &issued.ca_pem)?;
            let action = ActionKind::IssueIdentity {
                role: role_value,
                subject: id.clone(),
                signing_key,
                certificate_sha256: fingerprint,
                scope,
            };
            act(conn, action, format!("identity issued to {role} {id}"), json).await?;
            if !json {
                println!("Wrote {}/cert.pem and ca.pem; the certificate's SHA-256 is {fingerprint}.", out.display());
            }
            Ok(())
        }
        Admin::Identity(IdentityCmd::Enroll { out }) => {
            let dir = conn.identity_dir()?;
            let out = out.unwrap_or_else(|| dir.join("enroll.json"));
            let fingerprint = enroll(dir, &out)?;
            if json {
                println!("{}", serde_json::json!({ "enroll": out, "certificate_sha256": fingerprint.to_string() }));
            } else {
                println!("Signed your registration into {}.", out.display());
                println!("The server's operator appends it: covenant-server admit --data DIR {}", out.display());
            }
            Ok(())
        }
        Admin::Identity(IdentityCmd::Revoke { fingerprint, compromised_since }) => {
            let certificate_sha256 =
                Sha256Digest::from_hex(&fingerprint).context("the fingerprint must be 64 lowercase hex digits")?;
            let compromised_since = compromised_since
                .map(|t| {
                    Timestamp::parse_rfc3339(&t)
                        .context("--compromised-since must be RFC 3339, e.g. 2026-10-01T00:00:00Z")
                })
                .transpose()?;
            act(
                conn,
                ActionKind::RevokeIdentity { certificate_sha256, compromised_since },
                format!("revoked {fingerprint}"),
                json,
            )
            .await
        }
    }
}

/// Checks and signs the registration in an identity folder (see
/// [`IdentityCmd::Enroll`]); returns the certificate's SHA-256.
pub fn enroll(dir: &Path, out: &Path) -> anyhow::Result<Sha256Digest> {
    let read =
        |name: &str| std::fs::read(dir.join(name)).with_context(|| format!("reading {}", dir.join(name).display()));
    let registration = AdminAction::parse(&read("registration.json")?).context("registration.json is malformed")?;
    let key = read_key(&dir.join("signing.key"))?;
    let ActionKind::IssueIdentity { role, signing_key, certificate_sha256, .. } = &registration.action else {
        anyhow::bail!("registration.json does not register an identity");
    };
    if *role != IdentityRole::Admin {
        anyhow::bail!("only the first admin enrolls offline; other identities are issued over the wire");
    }
    if *signing_key != key.public() {
        anyhow::bail!("registration.json names a signing key that is not yours (signing.key)");
    }
    let cert = String::from_utf8(read("cert.pem")?).context("cert.pem is not PEM text")?;
    let der = pem_der(&cert).context("cert.pem holds no certificate")?;
    if Sha256Digest::of(&der) != *certificate_sha256 {
        anyhow::bail!("registration.json names a certificate other than the cert.pem beside it");
    }
    let root = covenant_core::state::peek_root(&read("root.json")?).context("root.json is not a root")?;
    if !root.roles.admin.keys.iter().any(|k| k.public == key.public()) {
        anyhow::bail!("the root does not list your signing key as an admin key");
    }
    std::fs::write(out, envelope::sign(&registration, &[&key]))
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(*certificate_sha256)
}

/// The DER bytes of the first certificate in a PEM text.
fn pem_der(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let body = pem.split("-----BEGIN CERTIFICATE-----").nth(1)?.split("-----END CERTIFICATE-----").next()?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}
