//! `covenant admin`: a compliance officer's actions, each a DSSE envelope
//! signed with the officer's own key (the certificate only opens the door),
//! appended to the ledger; the answer is the entry's index and its proof.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use covenant_core::digest::{Sha256Digest, Timestamp};
use covenant_core::envelope;
use covenant_core::keys::PublicKey;
use covenant_core::note::TlogProof;
use covenant_core::provision as bundle;
use covenant_core::statements::{
    ActionKind, ActionTag, AdminAction, CaseState, Contract, DeniedParty, Determination, IdentityRole, Licence,
    Payload as _, SchemaV1, Site, SuspensionLevel, SuspensionTarget,
};
use covenant_core::text::Untrusted;
use covenant_proto::v1 as pb;
use covenant_proto::v1::admin_service_client::AdminServiceClient;

use crate::connect::{Connection, read_key};
use crate::{now, output};

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
    /// Enrolls a device: has the CA sign the certificate request that
    /// `covenant-agent enroll-request` made on the device, registers the
    /// device's signing key for DEPLOYMENT in the ledger, and writes the
    /// provisioning bundle (certificate, CA certificate, trusted root, server
    /// address, the ledger's and the witnesses' verifier keys). If a
    /// suspension or open case holds its customer or one of its
    /// deployments, or DEPLOYMENT had a device key before (a new device),
    /// the registration waits for a second admin's approval (its digest is
    /// printed).
    Enroll {
        /// The deployment (registered with `covenant admin deployment`).
        deployment: String,
        /// The device's certificate request.
        #[arg(long, value_name = "FILE")]
        csr: PathBuf,
        /// The folder to write the bundle into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Registers a customer.
    Customer {
        /// The customer id (a-z 0-9 . _ -).
        id: String,
        /// Its legal name.
        #[arg(long)]
        name: String,
        /// Its country (ISO 3166 alpha-2, e.g. DE).
        #[arg(long)]
        country: String,
    },
    /// Registers a deployment of a customer: a product at a site. While a
    /// suspension (of the customer or of one of its deployments) or an open
    /// case holds the customer, or once the customer's contract would cover
    /// it at once, it waits for a second admin's approval (it could be a
    /// held system under a new id, with a baseline of one admin's
    /// choosing); it prints the digest to send them. Register deployments
    /// before the customer's first contract, which two admins set anyway.
    Deployment {
        /// The deployment id.
        id: String,
        /// The customer it belongs to.
        #[arg(long)]
        customer: String,
        /// The product line (e.g. lim).
        #[arg(long)]
        product: String,
        /// The site's country (ISO 3166 alpha-2).
        #[arg(long)]
        country: String,
        /// The site id.
        #[arg(long)]
        site: String,
        /// The version of the product the device is provisioned with (its
        /// factory image, e.g. 1.0.0). The ledger records it; what the device
        /// later claims to run is never used instead.
        #[arg(long, value_name = "VERSION")]
        provisioned_version: String,
    },
    /// Sets a customer's contract from a TOML or JSON file (a new contract
    /// at version 1, or its next version). A customer's first contract
    /// waits for a second admin's approval (it turns "no contract" into
    /// possible grants). A later version that only tightens the conditions
    /// takes effect at once; one that relaxes any of them (drops one,
    /// loosens a parameter, a longer grant validity) waits for a second
    /// admin's approval. Either way it prints the digest to send them. See
    /// README for the format.
    Contract {
        /// The contract file.
        file: PathBuf,
    },
    /// Uploads a signed release manifest and its artifact; the release is
    /// in the ledger once the artifact is stored and checked.
    Publish {
        /// The manifest (`covenant release new`, signed with `release sign`).
        manifest: PathBuf,
        /// The artifact file.
        artifact: PathBuf,
    },
    /// Moves a misuse case along its lifecycle (received, triaged,
    /// investigating, determined, remediation, verified, closed). Closing a
    /// case, or taking it back to investigating, waits for a second admin's
    /// approval, as waiving `no_open_case` would.
    Case {
        /// The case id (case-N, printed when the signal was recorded).
        case: String,
        /// The new state.
        #[arg(long)]
        to: String,
        /// With --to determined: unsubstantiated, inconclusive or substantiated.
        #[arg(long)]
        determination: Option<String>,
    },
    /// Proposes a suspension level (none, L1, L2, L3, legal-hold) for a
    /// customer or a deployment. Raising to L1 takes effect at once; raising
    /// to L2 or above and any lowering wait for a second admin's approval.
    Suspend {
        /// The customer.
        #[arg(long, conflicts_with = "deployment", required_unless_present = "deployment")]
        customer: Option<String>,
        /// The deployment.
        #[arg(long)]
        deployment: Option<String>,
        /// The level.
        #[arg(long)]
        level: String,
    },
    /// Proposes waiving one condition for one deployment until a time
    /// (takes effect with a second admin's approval).
    Waive {
        /// The deployment.
        #[arg(long)]
        deployment: String,
        /// The condition's name (end_use_attested, field_verified, ...).
        #[arg(long)]
        condition: String,
        /// Until when (RFC 3339).
        #[arg(long)]
        until: String,
    },
    /// Proposes letting a security-fix release through to a deployment
    /// under an L2 suspension (takes effect with a second admin's approval).
    SecurityFix {
        /// The deployment.
        #[arg(long)]
        deployment: String,
        /// The release: its manifest file, or its digest (SHA-256 of the
        /// manifest payload, hex, as `covenant release show` prints it).
        #[arg(long)]
        release: String,
    },
    /// Approves a proposal, named by the digest its proposer was given
    /// (`covenant proposals` lists those awaiting approval, with their
    /// digests). Shows the proposal in words first (what it changes, who
    /// proposed it and why, approvals so far) and, on a terminal, asks
    /// before signing. Without a terminal (a script, a pipe) it refuses
    /// unless --yes is given.
    Approve {
        /// The proposal's digest (64 hex digits).
        proposal: String,
        /// Approve without asking: for scripts, and required when stdin is
        /// not a terminal.
        #[arg(long)]
        yes: bool,
    },
    /// Records an entry of a denied-party list.
    Deny {
        /// The list (e.g. eu-sanctions).
        #[arg(long)]
        list: String,
        /// The party's legal name, as listed.
        #[arg(long)]
        name: String,
        /// Its country (ISO 3166 alpha-2).
        #[arg(long)]
        country: String,
    },
    /// Records an export licence. The first record of a licence, and wider
    /// terms later (a later expiry, other versions, another authority),
    /// wait for a second admin's approval (either can lift `licence_valid`);
    /// narrower terms take effect at once.
    Licence {
        /// The licence id.
        id: String,
        /// The customer.
        #[arg(long)]
        customer: String,
        /// The licensing authority.
        #[arg(long)]
        authority: String,
        /// When it expires (RFC 3339).
        #[arg(long)]
        expires: String,
        /// The release versions it covers (semver, e.g. ">=1.0, <3").
        #[arg(long)]
        versions: String,
    },
}

/// Identity commands.
#[derive(Debug, clap::Subcommand)]
pub enum IdentityCmd {
    /// Has the CA sign a certificate request (`covenant keys new` made it)
    /// and registers it, with the signing key it carries, in the ledger.
    /// Writes cert.pem and ca.pem into --out. A customer's, engineer's or
    /// auditor's identity waits for a second admin's approval (its digest is
    /// printed), and so does a device's whose customer a suspension or open
    /// case holds; until then the certificate is refused.
    Issue {
        /// admin, customer, engineer, auditor or deployment.
        #[arg(long)]
        role: IdentityRole,
        /// The holder's id (customer id, deployment id, person id).
        #[arg(long)]
        id: String,
        /// The certificate request.
        #[arg(long, value_name = "FILE")]
        csr: PathBuf,
        /// The folder to write the certificate into (the holder's identity folder).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// For an auditor, the customers whose records it may read; for an
        /// engineer, the customers whose deployments it may verify and carry
        /// air-gapped files for. Comma-separated (default: all).
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
    /// Revokes a certificate (and the signing key registered with it) at
    /// once. Another admin's identity waits for a second admin's approval
    /// (its digest is printed), and so does a --compromised-since that would
    /// void attestations or verifications already recorded (the key is cut
    /// off at once all the same).
    Revoke {
        /// The certificate's SHA-256, hex.
        fingerprint: String,
        /// Entries the key signed at or after this time (RFC 3339) no longer count.
        #[arg(long)]
        compromised_since: Option<String>,
    },
}

async fn act(conn: &Connection, action: ActionKind, why: String, json: bool) -> anyhow::Result<()> {
    let key = conn.signing_key()?;
    let proposal = matches!(
        action,
        ActionKind::ProposeSuspension { .. } | ActionKind::ProposeWaiver { .. } | ActionKind::ProposeSecurityFix { .. }
    );
    // A customer's, engineer's or auditor's key signs what the conditions
    // read: it is registered only once a second admin approved it.
    let waits = matches!(
        action,
        ActionKind::IssueIdentity {
            role: IdentityRole::Customer | IdentityRole::Engineer | IdentityRole::Auditor | IdentityRole::Reporter,
            ..
        }
    );
    // Actions that take effect at once or wait for a second admin,
    // depending on the ledger: what decides it, in words.
    let maybe = match &action {
        ActionKind::SetContract { .. } => Some(
            "The first contract of a customer, or a version that relaxes a condition or covers more deployments, waits \
             for a second admin's approval",
        ),
        ActionKind::RecordLicence { .. } => {
            Some("A licence recorded for the first time, or with wider terms, waits for a second admin's approval")
        }
        ActionKind::CaseTransition { .. } => {
            Some("If this closes the case or takes it back, it waits for a second admin's approval")
        }
        ActionKind::RegisterDeployment { .. } => Some(
            "If a suspension or open case holds this customer or one of its deployments, or its contract would cover \
             the deployment at once, the registration waits for a second admin's approval",
        ),
        ActionKind::IssueIdentity { role: IdentityRole::Deployment, .. } => Some(
            "If a suspension or open case holds this device's customer or one of its deployments, or the deployment \
             had a device key before (a new device), the device key waits for a second admin's approval",
        ),
        ActionKind::RevokeIdentity { compromised_since: None, .. } => {
            Some("If this revokes another admin, it waits for a second admin's approval")
        }
        ActionKind::RevokeIdentity { compromised_since: Some(_), .. } => Some(
            "The key is cut off now, unless it is another admin's. If this revokes another admin, or the key signed \
             attestations or verifications recorded since that time (which the compromise voids), the compromise \
             waits for a second admin's approval",
        ),
        _ => None,
    };
    let payload =
        AdminAction { type_tag: ActionTag, schema: SchemaV1, action, why, evidence: vec![], issued_at: now() };
    let digest = Sha256Digest::of(&payload.to_payload_bytes());
    let body = envelope::sign(&payload, &[&key]);
    let mut client = AdminServiceClient::new(conn.channel().await?);
    let done =
        client.act(pb::ActRequest { action: body }).await.map_err(|s| anyhow::anyhow!("{}", s.message()))?.into_inner();
    let proof = done.inclusion.map(|p| String::from_utf8_lossy(&p.text).into_owned()).unwrap_or_default();
    if json {
        println!(
            "{}",
            serde_json::to_string(&output::Recorded {
                action_digest: digest.to_string(),
                index: done.index,
                tlog_proof: proof
            })?
        );
    } else {
        let size = TlogProof::parse(proof.as_bytes()).ok().map(|p| p.proof.len());
        println!("Recorded as ledger entry {} (inclusion proof of {} hashes).", done.index, size.unwrap_or(0));
        if proposal {
            println!("The proposal's digest, for the approving admin: {digest}");
        }
        if waits {
            println!(
                "It waits for a second admin's approval: the identity is registered, and its certificate accepted, \
                 only then. Its digest, for them: {digest}"
            );
        }
        if let Some(maybe) = maybe {
            println!("{maybe}; its digest, for them: {digest}");
        }
    }
    Ok(())
}

fn time_arg(name: &str, s: &str) -> anyhow::Result<Timestamp> {
    Timestamp::parse_rfc3339(s).with_context(|| format!("--{name} must be RFC 3339, e.g. 2027-01-01T00:00:00Z"))
}

fn digest_arg(name: &str, s: &str) -> anyhow::Result<Sha256Digest> {
    Sha256Digest::from_hex(s).with_context(|| format!("{name} must be 64 lowercase hex digits"))
}

fn parse_enum<T: serde::de::DeserializeOwned>(what: &str, s: &str, choices: &str) -> anyhow::Result<T> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| anyhow::anyhow!("unknown {what} {s:?}: use {choices}"))
}

/// Reads a TOML or JSON file into `T` (by extension; JSON if it starts with `{`).
pub fn read_structured<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{') {
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON of the expected shape", path.display()))
    } else {
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML of the expected shape", path.display()))
    }
}

/// Runs an admin command.
pub async fn run(cmd: Admin, conn: &Connection, json: bool) -> anyhow::Result<()> {
    match cmd {
        Admin::Note { text, why } => {
            let why = why.unwrap_or_else(|| text.clone());
            act(conn, ActionKind::Note { text }, why, json).await
        }
        Admin::Identity(IdentityCmd::Issue { role, id, csr, out, scope }) => {
            // The holder starts from the root their issuer trusts; a root
            // already in the folder is theirs and stays. Read before the
            // identity is issued, so a missing file fails nothing half-done.
            let root = std::fs::read(conn.identity_dir()?.join("root.json")).context("reading your root.json")?;
            let fingerprint = issue(conn, role, &id, &csr, &out, scope, json).await?;
            if !out.join("root.json").exists() {
                std::fs::write(out.join("root.json"), root)?;
            }
            if !json {
                println!(
                    "Wrote {}/cert.pem, ca.pem and root.json; the certificate's SHA-256 is {fingerprint}.",
                    out.display()
                );
            }
            Ok(())
        }
        Admin::Enroll { deployment, csr, out } => {
            let fingerprint = issue(conn, IdentityRole::Deployment, &deployment, &csr, &out, None, json).await?;
            // The rest of the provisioning bundle: whom to trust, where to call.
            let root_bytes = std::fs::read(conn.identity_dir()?.join("root.json")).context("reading your root.json")?;
            let root = covenant_core::state::peek_root(&root_bytes).context("your root.json is not a root")?;
            std::fs::write(out.join(bundle::ROOT), &root_bytes)?;
            std::fs::write(out.join(bundle::SERVER), format!("{}\n", conn.server.as_deref().unwrap_or_default()))?;
            std::fs::write(out.join(bundle::DEPLOYMENT), format!("{deployment}\n"))?;
            let note = |k: &covenant_core::statements::RootKey, cosig: bool| {
                let name = k.note_name.clone().unwrap_or_default();
                let v = if cosig {
                    covenant_core::note::NoteVerifier::cosignature(&name, k.public)
                } else {
                    covenant_core::note::NoteVerifier::ed25519(&name, k.public)
                };
                v.map(|v| v.to_string())
            };
            let ledger: Vec<String> =
                root.roles.ledger.keys.iter().map(|k| note(k, false)).collect::<Result<_, _>>()?;
            let witnesses: Vec<String> =
                root.roles.witness.keys.iter().map(|k| note(k, true)).collect::<Result<_, _>>()?;
            std::fs::write(out.join(bundle::LEDGER_VKEY), ledger.join("\n") + "\n")?;
            std::fs::write(
                out.join(bundle::WITNESSES_VKEYS),
                witnesses.join("\n") + if witnesses.is_empty() { "" } else { "\n" },
            )?;
            if !json {
                println!(
                    "Enrolled {deployment}: the provisioning bundle is in {} ({}); the certificate's SHA-256 is \
                     {fingerprint}. Copy it to the device's state directory; no private key travelled.",
                    out.display(),
                    bundle::FILES.join(", ")
                );
            }
            Ok(())
        }
        Admin::Customer { id, name, country } => {
            let why = format!("customer {id} registered");
            act(conn, ActionKind::RegisterCustomer { customer: id, legal_name: name, country }, why, json).await
        }
        Admin::Deployment { id, customer, product, country, site, provisioned_version } => {
            let why = format!("deployment {id} of {customer} registered");
            let site = Site { country, site_id: site };
            let provisioned_version: semver::Version = provisioned_version
                .parse()
                .context("--provisioned-version must be a semantic version such as 1.0.0")?;
            let action =
                ActionKind::RegisterDeployment { deployment: id, customer, product, site, provisioned_version };
            act(conn, action, why, json).await
        }
        Admin::Contract { file } => {
            let contract: Contract = read_structured(&file)?;
            let why = format!("contract {} version {} set", contract.id, contract.version);
            act(conn, ActionKind::SetContract { contract }, why, json).await
        }
        Admin::Publish { manifest, artifact } => crate::release::publish(conn, &manifest, &artifact, json).await,
        Admin::Case { case, to, determination } => {
            let to: CaseState = parse_enum(
                "case state",
                &to,
                "received, triaged, investigating, determined, remediation, verified, closed",
            )?;
            let determination: Option<Determination> = determination
                .map(|d| parse_enum("determination", &d, "unsubstantiated, inconclusive, substantiated"))
                .transpose()?;
            let why = format!("case {case} moved to {to:?}");
            act(conn, ActionKind::CaseTransition { case, to, determination }, why, json).await
        }
        Admin::Suspend { customer, deployment, level } => {
            let level: SuspensionLevel = parse_enum("level", &level, "none, L1, L2, L3, legal-hold")?;
            let target = match (customer, deployment) {
                (Some(c), _) => SuspensionTarget::Customer(c),
                (None, Some(d)) => SuspensionTarget::Deployment(d),
                (None, None) => anyhow::bail!("name --customer or --deployment"),
            };
            let why = format!("suspension {level} proposed");
            act(conn, ActionKind::ProposeSuspension { target, level }, why, json).await
        }
        Admin::Waive { deployment, condition, until } => {
            let until = time_arg("until", &until)?;
            let why = format!("waiver of {condition} proposed");
            act(conn, ActionKind::ProposeWaiver { deployment, condition, until }, why, json).await
        }
        Admin::SecurityFix { deployment, release } => {
            let release = if Path::new(&release).is_file() {
                let (envelope, _) = crate::release::read_manifest(Path::new(&release))?;
                Sha256Digest::of(envelope.payload())
            } else {
                digest_arg("--release", &release)?
            };
            let why = "security fix under L2 proposed".to_owned();
            act(conn, ActionKind::ProposeSecurityFix { deployment, release }, why, json).await
        }
        Admin::Approve { proposal, yes } => {
            let proposal = digest_arg("the proposal", &proposal)?;
            let mut client = crate::query::client(conn).await?;
            let listed =
                crate::query::proposals(&mut client).await.context("listing the proposals awaiting approval")?;
            let Some(row) = listed.proposals.iter().find(|p| p.digest == proposal.to_string()) else {
                anyhow::bail!(
                    "no proposal has this digest among those awaiting approval that you may see: it is unknown, \
                     expired or already in force (`covenant proposals` lists them); nothing was signed"
                );
            };
            let terminal = std::io::stdin().is_terminal();
            // What is about to be signed, in words; under --json on stderr,
            // and only for a person asked to confirm (stdout is the answer).
            if !json {
                print!("{}", proposal_words(row));
            } else if !yes && terminal {
                eprint!("{}", proposal_words(row));
            }
            if !confirm(yes, terminal, &mut std::io::stdin().lock(), &mut std::io::stderr())? {
                anyhow::bail!("not approved: nothing was signed");
            }
            act(conn, ActionKind::Approve { proposal }, format!("approved {proposal}"), json).await
        }
        Admin::Deny { list, name, country } => {
            let why = format!("denied party listed on {list}");
            act(conn, ActionKind::ListDeniedParty { party: DeniedParty { list, legal_name: name, country } }, why, json)
                .await
        }
        Admin::Licence { id, customer, authority, expires, versions } => {
            let expires = time_arg("expires", &expires)?;
            let versions: semver::VersionReq =
                versions.parse().context("--versions must be a semver requirement such as \">=1.0, <3\"")?;
            let why = format!("export licence {id} recorded");
            let licence = Licence { id, customer, authority, expires, versions };
            act(conn, ActionKind::RecordLicence { licence }, why, json).await
        }
        Admin::Identity(IdentityCmd::Enroll { out }) => {
            let dir = conn.identity_dir()?;
            let out = out.unwrap_or_else(|| dir.join("enroll.json"));
            let fingerprint = enroll(dir, &out)?;
            if json {
                let registration = output::Registration { certificate_sha256: fingerprint.to_string(), enroll: out };
                println!("{}", serde_json::to_string(&registration)?);
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

/// A proposal awaiting approval in words: what it changes, who proposed
/// it, when and why (the proposer's text, escaped), the approvals so far
/// and when it lapses.
pub fn proposal_words(p: &crate::query::ProposalRow) -> String {
    let approvers = if p.approvers.is_empty() { String::new() } else { format!(" ({})", p.approvers.join(", ")) };
    format!(
        "Proposal of ledger entry {} ({}, {}):\n  {}\n  digest {}\n  proposed by {} at {}\n  why: {}\n  \
         approvals so far: {} of {}{approvers}\n  lapses unapproved at {}\n",
        p.index,
        Untrusted(&p.kind),
        Untrusted(&p.target),
        Untrusted(&p.change),
        p.digest,
        Untrusted(&p.proposer),
        p.proposed_at,
        Untrusted(&p.why),
        p.approvers.len(),
        p.threshold,
        p.expires_at,
    )
}

/// Whether to go on with an approval: at once with `--yes`; on a terminal
/// only if the person types `y` or `yes` at the prompt; never from a
/// non-terminal without `--yes` (an error saying to pass it).
pub fn confirm(
    yes: bool,
    terminal: bool,
    input: &mut dyn std::io::BufRead,
    prompt: &mut dyn std::io::Write,
) -> anyhow::Result<bool> {
    if yes {
        return Ok(true);
    }
    if !terminal {
        anyhow::bail!(
            "stdin is not a terminal, so there is no one to confirm this approval: pass --yes to approve from a \
             script; nothing was signed"
        );
    }
    write!(prompt, "Approve this proposal? [y/N] ")?;
    prompt.flush()?;
    let mut answer = String::new();
    input.read_line(&mut answer)?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

/// Has the CA sign a certificate request and registers it, with the signing
/// key it carries, in the ledger; writes cert.pem and ca.pem into `out`.
async fn issue(
    conn: &Connection,
    role: IdentityRole,
    id: &str,
    csr: &Path,
    out: &Path,
    scope: Option<Vec<String>>,
    json: bool,
) -> anyhow::Result<Sha256Digest> {
    let csr = std::fs::read(csr).with_context(|| format!("reading {}", csr.display()))?;
    let mut client = AdminServiceClient::new(conn.channel().await?);
    let issued = client
        .issue_identity(pb::IssueIdentityRequest { csr, role: role.to_string(), subject: id.to_owned() })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    let fingerprint =
        Sha256Digest::from_hex(&issued.certificate_sha256).context("the server sent a malformed fingerprint")?;
    let signing_key = PublicKey::from_hex(&issued.signing_key).context("the server sent a malformed signing key")?;
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join(bundle::CERT), &issued.certificate_pem)?;
    std::fs::write(out.join(bundle::CA), &issued.ca_pem)?;
    let action =
        ActionKind::IssueIdentity { role, subject: id.to_owned(), signing_key, certificate_sha256: fingerprint, scope };
    act(conn, action, format!("identity issued to {role} {id}"), json).await?;
    Ok(fingerprint)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ask(yes: bool, terminal: bool, typed: &str) -> (anyhow::Result<bool>, String) {
        let mut prompt = Vec::new();
        let answer = confirm(yes, terminal, &mut typed.as_bytes(), &mut prompt);
        (answer, String::from_utf8(prompt).unwrap())
    }

    #[test]
    fn an_approval_goes_on_with_yes_or_a_typed_yes_only() {
        assert!(ask(true, false, "").0.unwrap());
        let (answer, prompt) = ask(false, true, "y\n");
        assert!(answer.unwrap());
        assert_eq!(prompt, "Approve this proposal? [y/N] ");
        assert!(ask(false, true, "YES\n").0.unwrap());
        assert!(!ask(false, true, "\n").0.unwrap());
        assert!(!ask(false, true, "no\n").0.unwrap());
        assert!(!ask(false, true, "").0.unwrap());
        let refused = ask(false, false, "y\n").0.unwrap_err().to_string();
        assert!(refused.contains("--yes"), "{refused}");
    }
}
