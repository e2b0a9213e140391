//! `covenant field`: a field engineer carrying an air-gapped device's files
//! (docs/offline.md). `fetch` has the server answer the device's signed
//! request exactly as if the device had called and writes the bundle (the
//! artifact streamed to the file, never held whole); `return` submits the
//! device-signed install reports of a receipt. Each call carries one
//! device's files; several devices are several calls.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use covenant_core::digest::{Sha256Digest, Timestamp};
use covenant_core::offline::{Head, Receipt};
use covenant_proto::v1 as pb;
use covenant_proto::v1::field_service_client::FieldServiceClient;
use covenant_proto::v1::ledger_service_client::LedgerServiceClient;
use prost::Message as _;

use crate::connect::Connection;

/// The engineer's commands.
#[derive(Debug, clap::Subcommand)]
pub enum Field {
    /// Has the server answer a device's signed request and writes the bundle.
    Fetch {
        /// The request from `covenant-agent offline request`.
        request: PathBuf,
        /// Where to write the bundle.
        #[arg(long, value_name = "BUNDLE")]
        out: PathBuf,
    },
    /// Submits the device-signed install reports of a receipt.
    Return {
        /// The receipt from `covenant-agent offline install`.
        receipt: PathBuf,
    },
}

/// Runs a field command.
pub async fn run(cmd: Field, conn: &Connection, json: bool) -> anyhow::Result<()> {
    match cmd {
        Field::Fetch { request, out } => fetch(conn, &request, &out, json).await,
        Field::Return { receipt } => give_back(conn, &receipt, json).await,
    }
}

async fn fetch(conn: &Connection, request: &Path, out: &Path, json: bool) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    let checkin = std::fs::read(request).with_context(|| format!("reading {}", request.display()))?;
    let ch = conn.channel().await?;
    let fetched = FieldServiceClient::new(ch.clone())
        .fetch(pb::FieldFetchRequest { checkin: checkin.clone() })
        .await
        .map_err(|s| anyhow::anyhow!("the server refuses the request: {}", s.message()))?
        .into_inner();
    let answer = fetched.answer.context("the server's answer is empty")?;
    let root_chain = LedgerServiceClient::new(ch.clone())
        .get_root_chain(pb::GetRootChainRequest { from_version: 1 })
        .await
        .map_err(|s| anyhow::anyhow!("the root chain: {}", s.message()))?
        .into_inner()
        .roots;
    let nonce = nonce_of(&checkin)?;
    let head = Head {
        deployment: fetched.deployment.clone(),
        nonce,
        expires: Timestamp::from_unix(fetched.expires),
        root_chain,
        answer: answer.encode_to_vec(),
        artifact_len: fetched.artifact_size,
    };
    let tmp = out.with_extension("part");
    let mut file =
        std::io::BufWriter::new(std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?);
    file.write_all(&head.encode()?)?;
    if fetched.artifact_size > 0 {
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(fetched.artifact_size);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        let req = pb::FieldArtifactRequest {
            deployment: fetched.deployment.clone(),
            release_digest: fetched.release_digest.clone(),
            offset: 0,
        };
        let mut stream = FieldServiceClient::new(ch)
            .fetch_artifact(req)
            .await
            .map_err(|s| anyhow::anyhow!("the artifact: {}", s.message()))?
            .into_inner();
        let mut have = 0u64;
        while let Some(chunk) = stream.message().await.map_err(|s| anyhow::anyhow!("the artifact: {}", s.message()))? {
            if chunk.offset != have || have.saturating_add(chunk.data.len() as u64) > fetched.artifact_size {
                bail!("the artifact stream is out of order or too long");
            }
            file.write_all(&chunk.data)?;
            have += chunk.data.len() as u64;
            if let Some(bar) = &bar {
                bar.set_position(have);
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        if have != fetched.artifact_size {
            bail!("the artifact stream ended at byte {have} of {}", fetched.artifact_size);
        }
    }
    let file = file.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
    let release = if fetched.release_digest.is_empty() {
        "no artifact (no grant)".to_owned()
    } else {
        format!("the artifact of release {}", hex::encode(&fetched.release_digest))
    };
    if json {
        let v = serde_json::json!({
            "bundle": out.display().to_string(),
            "deployment": fetched.deployment,
            "expires": head.expires.to_string(),
            "artifact_size": fetched.artifact_size,
        });
        println!("{v}");
    } else {
        println!(
            "Wrote {} for {}: the server's answer and {release}; it expires {}.",
            out.display(),
            fetched.deployment,
            head.expires
        );
    }
    Ok(())
}

fn nonce_of(checkin: &[u8]) -> anyhow::Result<Sha256Digest> {
    use covenant_core::statements::{CheckIn, Payload as _};
    let env = covenant_core::envelope::Envelope::parse(checkin).context("the request is not a signed check-in")?;
    Ok(CheckIn::parse(env.payload()).context("the request is not a check-in")?.nonce)
}

async fn give_back(conn: &Connection, receipt: &Path, json: bool) -> anyhow::Result<()> {
    let bytes = std::fs::read(receipt).with_context(|| format!("reading {}", receipt.display()))?;
    let receipt = Receipt::parse(&bytes).context("the receipt")?;
    let ch = conn.channel().await?;
    let mut indexes = vec![];
    let mut already = 0usize;
    for report in receipt.reports {
        // A report can ride in two receipts (the device keeps it queued until
        // a receipt holding it is written): one recorded already is fine,
        // and the rest of the receipt still goes.
        match FieldServiceClient::new(ch.clone()).r#return(pb::ReportRequest { report }).await {
            Ok(done) => indexes.push(done.into_inner().index),
            Err(s) if s.code() == tonic::Code::AlreadyExists => already += 1,
            Err(s) => anyhow::bail!("the server refuses the report: {}", s.message()),
        }
    }
    if json {
        println!(
            "{}",
            serde_json::json!({ "deployment": receipt.deployment, "recorded": indexes, "already_recorded": already })
        );
    } else {
        println!("{}: {}", receipt.deployment, receipt.verdict);
        for i in &indexes {
            println!("The install report is recorded at ledger entry {i}.");
        }
        if already > 0 {
            println!(
                "{} already recorded (an earlier receipt carried it).",
                crate::counted(already, "report was", "reports were")
            );
        }
        if indexes.is_empty() && already == 0 {
            println!("The receipt carries no install report.");
        }
    }
    Ok(())
}
