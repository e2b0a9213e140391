//! The customer's, the engineer's and the auditor's submissions:
//! `covenant attest new|sign|submit` (end-use attestations), `covenant
//! verify show|sign|submit` (field verifications), `covenant signal submit`
//! (misuse signals), and `covenant status` (a deployment's verdict and its
//! reasons). Each statement is signed with the person's own key.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use covenant_core::digest::Sha256Digest;
use covenant_core::envelope::{self, Envelope};
use covenant_core::statements::{
    ATTESTATION_SUBJECT_PREFIX, ConditionStatus, Decision, EndUseAttestation, FieldVerification, InTotoStatement,
    MisuseSignal, Payload as _, SchemaV1, SignalAbout, SignalSource, SignalTag, Site, Subject, SubjectDigest, Verdict,
    VerificationMethod, VerificationResult, deployment_subject,
};
use covenant_core::text::Untrusted;
use covenant_proto::v1 as pb;
use covenant_proto::v1::attestation_service_client::AttestationServiceClient;
use serde::Deserialize;

use crate::admin::read_structured;
use crate::connect::Connection;
use crate::now;
use crate::output::{self, Submitted};

/// What an attestation file holds (TOML or JSON): the deployments it covers
/// and the attestation itself (`docs/formats.md` §12).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationFile {
    /// The deployments covered.
    pub deployments: Vec<String>,
    /// The end-use attestation.
    pub attestation: EndUseAttestation,
}

/// `covenant attest`.
#[derive(Debug, clap::Subcommand)]
pub enum Attest {
    /// Writes an unsigned attestation from a TOML or JSON file (see README).
    New {
        /// The file describing it.
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// Where to write the attestation envelope.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Signs an attestation with your (the customer's) key, in place; an
    /// attestation carries one signature.
    Sign {
        /// The attestation envelope.
        file: PathBuf,
    },
    /// Submits a signed attestation (at most 16 KiB). The server records
    /// at most 12 per customer an hour; past that it refuses and says when
    /// to retry, and nothing is recorded.
    Submit {
        /// The attestation envelope.
        file: PathBuf,
    },
}

/// `covenant verify`.
#[derive(Debug, clap::Subcommand)]
pub enum Verify {
    /// Shows what an attestation claims, for whom, and which keys signed it.
    Show {
        /// The attestation envelope.
        file: PathBuf,
    },
    /// Writes a field verification of an attestation, signed with your key.
    Sign {
        /// The attestation verified.
        #[arg(long, value_name = "FILE")]
        attestation: PathBuf,
        /// The deployment verified.
        #[arg(long)]
        deployment: String,
        /// on-site or remote.
        #[arg(long, default_value = "on-site")]
        method: String,
        /// The observed site's country.
        #[arg(long)]
        country: String,
        /// The observed site id.
        #[arg(long)]
        site: String,
        /// SHA-256 of the observed configuration (hex).
        #[arg(long)]
        config: String,
        /// pass or fail.
        #[arg(long)]
        result: String,
        /// What was found (required when it failed).
        #[arg(long, default_value = "")]
        findings: String,
        /// Where to write it.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Submits a signed field verification (at most 4 KiB). The server
    /// records at most 24 per engineer an hour; past that it refuses and
    /// says when to retry, and nothing is recorded.
    Submit {
        /// The verification envelope.
        file: PathBuf,
    },
}

fn choice<T: serde::de::DeserializeOwned>(what: &str, s: &str, choices: &str) -> anyhow::Result<T> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| anyhow::anyhow!("unknown {what} {s:?}: use {choices}"))
}

fn read_envelope(path: &Path) -> anyhow::Result<Envelope> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Envelope::parse(&bytes).with_context(|| format!("{} is not a DSSE envelope", path.display()))
}

async fn submit_file(conn: &Connection, which: &str, file: &Path, json: bool) -> anyhow::Result<()> {
    let body = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    submit(conn, which, body, json).await
}

async fn submit(conn: &Connection, which: &str, body: Vec<u8>, json: bool) -> anyhow::Result<()> {
    let mut client = AttestationServiceClient::new(conn.channel().await?);
    let request = pb::SubmitRequest { envelope: body };
    let done = match which {
        "attestation" => client.submit_attestation(request).await,
        "verification" => client.submit_verification(request).await,
        _ => client.submit_signal(request).await,
    }
    .map_err(|s| anyhow::anyhow!("{}", s.message()))?
    .into_inner();
    // A signal opens the case named after its ledger index.
    let case = format!("case-{}", done.index);
    match (json, which) {
        (true, "signal") => println!("{}", serde_json::to_string(&Submitted { case: Some(case), index: done.index })?),
        (true, _) => println!("{}", serde_json::to_string(&Submitted { case: None, index: done.index })?),
        (false, "signal") => println!("Recorded the signal as ledger entry {}; it opened {case}.", done.index),
        (false, _) => println!("Recorded the {which} as ledger entry {}.", done.index),
    }
    Ok(())
}

/// Runs `covenant attest`.
pub async fn attest(cmd: Attest, conn: &Connection, json: bool) -> anyhow::Result<()> {
    match cmd {
        Attest::New { from, out } => {
            let file: AttestationFile = read_structured(&from)?;
            let statement = InTotoStatement::new(
                file.deployments.iter().map(|d| deployment_subject(d)).collect(),
                file.attestation,
            );
            statement.validate().context("this attestation would be refused")?;
            if out.exists() {
                bail!("{} exists: a new attestation never overwrites a file", out.display());
            }
            std::fs::write(
                &out,
                Envelope::new(InTotoStatement::<EndUseAttestation>::PAYLOAD_TYPE, statement.to_payload_bytes())
                    .to_bytes(),
            )?;
            if json {
                println!("{}", serde_json::to_string(&output::AttestationWritten { attestation: out })?);
            } else {
                println!("Wrote {} (unsigned); sign it with `covenant attest sign`.", out.display());
            }
            Ok(())
        }
        Attest::Sign { file } => {
            let mut env = read_envelope(&file)?;
            InTotoStatement::<EndUseAttestation>::parse(env.payload()).context("not an end-use attestation")?;
            if let Some(signed) = env.signatures().first() {
                bail!(
                    "{} is already signed (key {}): an attestation carries one signature, the customer's, and the \
                     server refuses a second",
                    file.display(),
                    signed.keyid
                );
            }
            env.sign(&conn.signing_key()?);
            std::fs::write(&file, env.to_bytes())?;
            if json {
                println!("{}", serde_json::to_string(&output::Signed { signatures: env.signatures().len() })?);
            } else {
                println!("Signed {}.", file.display());
            }
            Ok(())
        }
        Attest::Submit { file } => submit_file(conn, "attestation", &file, json).await,
    }
}

/// Runs `covenant verify`.
pub async fn verify(cmd: Verify, conn: &Connection, json: bool) -> anyhow::Result<()> {
    match cmd {
        Verify::Show { file } => {
            let env = read_envelope(&file)?;
            let s = InTotoStatement::<EndUseAttestation>::parse(env.payload()).context("not an end-use attestation")?;
            let digest = Sha256Digest::of(env.payload());
            let signers: Vec<String> = env.signatures().iter().map(|s| s.keyid.clone()).collect();
            let deployments: Vec<&str> = s.deployments().collect();
            let p = &s.predicate;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&output::Attestation {
                        all_undertakings: p.undertakings.all_given(),
                        customer: p.customer.clone(),
                        deployments: deployments.iter().map(|d| (*d).to_owned()).collect(),
                        digest: digest.to_string(),
                        end_use: p.end_use.category.clone(),
                        end_user: p.end_user.legal_name.clone(),
                        signed_by: signers,
                        sites: p.sites.iter().map(|s| format!("{}/{}", s.country, s.site_id)).collect(),
                        valid_from: p.valid_from.to_string(),
                        valid_until: p.valid_until.to_string(),
                    })?
                );
            } else {
                // Every field is the customer's text: escaped, so that it
                // cannot rewrite what the engineer reads before signing.
                println!(
                    "Attestation {digest} by customer {} for {}",
                    Untrusted(&p.customer),
                    Untrusted(&deployments.join(", "))
                );
                println!(
                    "  end user: {} ({}, {})",
                    Untrusted(&p.end_user.legal_name),
                    Untrusted(&p.end_user.agency_type),
                    Untrusted(&p.end_user.country)
                );
                println!("  end use: {}: {}", Untrusted(&p.end_use.category), Untrusted(&p.end_use.description));
                println!("  legal basis: {}; oversight: {}", Untrusted(&p.legal_basis), Untrusted(&p.oversight_body));
                let sites: Vec<String> =
                    p.sites.iter().map(|s| format!("{} in {}", Untrusted(&s.site_id), Untrusted(&s.country))).collect();
                println!("  sites: {}", sites.join(", "));
                println!(
                    "  valid {} to {}; every undertaking given: {}",
                    p.valid_from,
                    p.valid_until,
                    p.undertakings.all_given()
                );
                println!(
                    "  signed by {}",
                    match signers.len() {
                        0 => "nobody yet".to_owned(),
                        1 => format!("key {}", signers[0]),
                        _ => format!("keys {}", signers.join(", ")),
                    }
                );
            }
            Ok(())
        }
        Verify::Sign { attestation, deployment, method, country, site, config, result, findings, out } => {
            let env = read_envelope(&attestation)?;
            InTotoStatement::<EndUseAttestation>::parse(env.payload()).context("not an end-use attestation")?;
            let att = Sha256Digest::of(env.payload());
            let method: VerificationMethod = choice("method", &method, "on-site or remote")?;
            let result: VerificationResult = choice("result", &result, "pass or fail")?;
            let config = Sha256Digest::from_hex(&config).context("--config must be 64 lowercase hex digits")?;
            let predicate = FieldVerification {
                attestation: att,
                deployment: deployment.clone(),
                method,
                observed_site: Site { country, site_id: site },
                observed_configuration_digest: config,
                result,
                findings,
                date: now(),
            };
            let subject = vec![
                Subject { name: format!("{ATTESTATION_SUBJECT_PREFIX}{att}"), digest: SubjectDigest { sha256: att } },
                deployment_subject(&deployment),
            ];
            let statement = InTotoStatement::new(subject, predicate);
            statement.validate().context("this verification would be refused")?;
            std::fs::write(&out, envelope::sign(&statement, &[&conn.signing_key()?]))?;
            if json {
                println!("{}", serde_json::to_string(&output::VerificationWritten { verification: out })?);
            } else {
                println!("Wrote and signed {}.", out.display());
            }
            Ok(())
        }
        Verify::Submit { file } => submit_file(conn, "verification", &file, json).await,
    }
}

/// `covenant signal submit`: a misuse signal, signed with your key.
pub async fn signal(
    conn: &Connection,
    customer: String,
    deployment: Option<String>,
    source: &str,
    summary: String,
    evidence: Vec<String>,
    json: bool,
) -> anyhow::Result<()> {
    let source: SignalSource = choice(
        "source",
        source,
        "ngo_report, court_decision, ncp_determination, sanctions_listing, field_engineer, auditor, other",
    )?;
    let evidence = evidence
        .iter()
        .map(|e| Sha256Digest::from_hex(e).context("--evidence must be SHA-256 digests, 64 lowercase hex digits"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let s = MisuseSignal {
        type_tag: SignalTag,
        schema: SchemaV1,
        about: SignalAbout { customer, deployment },
        source,
        summary,
        evidence,
        reported_at: now(),
    };
    s.validate().context("this signal would be refused")?;
    submit(conn, "signal", envelope::sign(&s, &[&conn.signing_key()?]), json).await
}

/// `covenant status DEPLOYMENT`: the standing verdict and its reasons.
pub async fn status(conn: &Connection, deployment: String, json: bool) -> anyhow::Result<()> {
    let mut client = AttestationServiceClient::new(conn.channel().await?);
    let answer = client
        .get_verdict(pb::GetVerdictRequest { deployment: deployment.clone() })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    let ending = ending_soon(conn, &deployment).await?;
    let expiring = ending.as_ref().map(|f| f.deployments.iter().flat_map(|d| d.expiring.clone()).collect());
    if answer.decision.is_empty() {
        if json {
            let expiring = expiring.unwrap_or_default();
            println!("{}", serde_json::to_string(&output::NoDecision { deployment, expiring, verdict: None })?);
        } else {
            println!("No decision has been logged for {deployment} yet: it has not checked in, or it is current.");
            print_expiring(ending.as_ref());
        }
        return Ok(());
    }
    let env = Envelope::parse(&answer.decision)?;
    let d = Decision::parse(env.payload())?;
    if json {
        let expiring = expiring.unwrap_or_default();
        println!("{}", serde_json::to_string(&output::Standing { decision: d, expiring, index: answer.index })?);
        return Ok(());
    }
    let verdict = match d.verdict {
        Verdict::Grant => "GRANTED",
        Verdict::Withhold => "WITHHELD",
    };
    println!(
        "{}: {verdict} (ledger entry {}, decided {}, suspension {})",
        d.deployment, answer.index, d.issued_at, d.suspension
    );
    if let Some(r) = d.release {
        println!("  release offered: {r}");
    }
    // Reasons quote what customers and engineers wrote: escaped.
    for c in d.conditions.iter().filter(|c| c.status == ConditionStatus::Unmet) {
        println!("  unmet {}: {}", Untrusted(&c.condition), Untrusted(&c.reason));
    }
    for w in &d.withheld_above {
        println!("  withheld {}:", w.version);
        for r in &w.reasons {
            println!("    - {}", Untrusted(r));
        }
    }
    if let Some(finding) = &d.finding {
        println!("  finding: {finding}");
    }
    if let Some(courier) = &d.courier {
        println!("  carried from an air-gapped site by engineer {}", Untrusted(courier));
    }
    print_expiring(ending.as_ref());
    Ok(())
}

/// The deployment's row with what ends within the default window (30
/// days), or `None` when the caller may not list deployments (an engineer)
/// or does not see this one: the verdict stands on its own then.
async fn ending_soon(conn: &Connection, deployment: &str) -> anyhow::Result<Option<crate::query::Fleet>> {
    let mut client = crate::query::client(conn).await?;
    match crate::query::deployment(&mut client, deployment, crate::query::FleetOptions::default()).await {
        Ok(found) => Ok(found),
        Err(s) if s.code() == tonic::Code::PermissionDenied => Ok(None),
        Err(s) => Err(anyhow::anyhow!("{}", s.message()).context("reading what expires soon")),
    }
}

fn print_expiring(ending: Option<&crate::query::Fleet>) {
    let Some(fleet) = ending else { return };
    let items: Vec<_> = fleet.deployments.iter().flat_map(|d| &d.expiring).collect();
    if items.is_empty() {
        println!("Nothing it depends on expires within {} days.", fleet.options.expiring_days);
    }
    for e in items {
        println!("Expiring: {}", Untrusted(&crate::read::expiring_words(e, &fleet.now)));
    }
}
