//! `covenant demo`: the whole loop on loopback, as separate processes
//! (`covenant-server`, a `covenant witness`, two `covenant-agent`s, and
//! `covenant` itself for every person's command), narrated in plain words.
//! The binaries are found beside this executable; `covenant` does not link
//! the server.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use covenant_agent::output as agent_output;

use crate::output::{self, Recorded};

/// The processes and folders of one demo.
struct Demo {
    tmp: PathBuf,
    data: PathBuf,
    url: String,
    me: PathBuf,
    server_bin: PathBuf,
    agent_bin: PathBuf,
    children: Vec<Child>,
    step: u32,
}

impl Drop for Demo {
    /// Stops every process as an operator would (SIGTERM: the server
    /// publishes its files and releases its ledger), killing any that has
    /// not stopped after five seconds.
    fn drop(&mut self) {
        for c in &self.children {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).stderr(Stdio::null()).status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for c in &mut self.children {
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let path = me.parent().context("no folder")?.join(name);
    if !path.exists() {
        bail!("{} is not beside {}: build every binary first (cargo build --release --bins)", name, me.display());
    }
    Ok(path)
}

/// Runs a program; returns its standard output, or fails with its error.
fn run(program: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program).args(args).output().with_context(|| format!("starting {}", program.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let why = if stderr.is_empty() { String::from_utf8_lossy(&out.stdout).trim().to_owned() } else { stderr };
        bail!(
            "`{} {}` failed: {why}",
            program.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            args.join(" "),
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts a long-running program and waits for its first line of output.
fn start(program: &Path, args: &[&str]) -> anyhow::Result<(Child, String)> {
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let stdout = child.stdout.take().context("no output")?;
    let mut reader = std::io::BufReader::new(stdout);
    // The first line that names an address (a warning may come first).
    let mut line = String::new();
    for _ in 0..20 {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line.contains(" on ") {
            break;
        }
    }
    // The rest (the server's log) is drained, so the program never blocks
    // on a full pipe nor fails on a closed one.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    Ok((child, line))
}

/// The `host:port` after " on " in a start-up line.
fn address(line: &str) -> anyhow::Result<String> {
    line.split(" on ")
        .nth(1)
        .and_then(|rest| rest.split([' ', ';']).next())
        .map(|a| a.trim().to_owned())
        .with_context(|| format!("no address in {line:?}"))
}

/// A command's `--json` output, read back through its type
/// ([`crate::output`], [`covenant_agent::output`]).
fn json<T: serde::de::DeserializeOwned>(text: &str) -> anyhow::Result<T> {
    if let Ok(v) = serde_json::from_str(text) {
        return Ok(v);
    }
    // The last JSON line (some commands print one per step).
    let line = text.lines().rev().find(|l| l.trim_start().starts_with('{')).context("no JSON output")?;
    Ok(serde_json::from_str(line)?)
}

fn rfc3339(t: covenant_core::digest::Timestamp) -> String {
    serde_json::to_value(t).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

impl Demo {
    fn say(&mut self, text: &str) {
        self.step += 1;
        println!("\n{}. {text}", self.step);
    }

    fn as_whom(&self, identity: &Path, args: &[&str]) -> anyhow::Result<String> {
        let id = identity.display().to_string();
        let mut all = vec!["--json", "--server", &self.url, "--identity", &id];
        all.extend_from_slice(args);
        run(&self.me, &all)
    }

    fn admin<T: serde::de::DeserializeOwned>(&self, n: u8, args: &[&str]) -> anyhow::Result<T> {
        let dir = self.data.join(format!("identities/admin{n}"));
        let mut all = vec!["admin"];
        all.extend_from_slice(args);
        json(&self.as_whom(&dir, &all)?)
    }

    /// A person makes their keys; admin 1 issues their certificate, and
    /// admin 2 approves it (a customer's, engineer's or auditor's key signs
    /// what the conditions read, so it needs two admins).
    fn person(&self, role: &str, id: &str) -> anyhow::Result<PathBuf> {
        let dir = self.tmp.join(format!("people/{id}"));
        run(&self.me, &["keys", "new", "--out", &dir.display().to_string()])?;
        std::fs::copy(self.data.join("root.json"), dir.join("root.json"))?;
        let csr = dir.join("request.csr").display().to_string();
        let out = dir.display().to_string();
        let issued: Recorded =
            self.admin(1, &["identity", "issue", "--role", role, "--id", id, "--csr", &csr, "--out", &out])?;
        if matches!(role, "customer" | "engineer" | "auditor") {
            self.approve(&issued)?;
        }
        Ok(dir)
    }

    /// A device enrolls (its keys never leave it) and is provisioned at 1.0.0.
    fn agent(&self, deployment: &str) -> anyhow::Result<PathBuf> {
        let state = self.tmp.join(format!("device-{deployment}"));
        let st = state.display().to_string();
        run(&self.agent_bin, &["enroll-request", "--state", &st])?;
        let bundle = self.tmp.join(format!("bundle-{deployment}")).display().to_string();
        let csr = state.join("request.csr").display().to_string();
        self.admin::<Recorded>(1, &["enroll", deployment, "--csr", &csr, "--out", &bundle])?;
        run(
            &self.agent_bin,
            &["provision", &bundle, "--state", &st, "--product", "lim", "--installed", "1.0.0", "--allow-development"],
        )?;
        Ok(state)
    }

    fn check(&self, state: &Path) -> anyhow::Result<String> {
        let out = run(&self.agent_bin, &["check", "--state", &state.display().to_string(), "--json"])?;
        let v: agent_output::Check = json(&out)?;
        Ok(match (v.outcome, v.version) {
            (agent_output::Outcome::Installed, Some(version)) => format!("installed {version}"),
            (outcome, _) => serde_json::to_value(outcome)?.as_str().unwrap_or("no answer").to_owned(),
        })
    }

    fn status(&self, state: &Path) -> anyhow::Result<agent_output::Status> {
        json(&run(&self.agent_bin, &["status", "--state", &state.display().to_string(), "--json"])?)
    }

    /// The operator's words for the last verdict of `state`.
    fn reasons(&self, state: &Path) -> anyhow::Result<String> {
        let out = run(&self.agent_bin, &["status", "--state", &state.display().to_string()])?;
        Ok(out
            .lines()
            .filter(|l| l.contains("unmet:") || l.contains("withheld:"))
            .map(|l| format!("     {}\n", l.trim()))
            .collect())
    }

    /// Publishes `version` of lim: a release manifest signed by two release
    /// keys offline, then uploaded with its artifact.
    fn publish(&self, version: &str, class: &str, baseline: &str) -> anyhow::Result<String> {
        let artifact = self.tmp.join(format!("lim-{version}.img"));
        std::fs::write(&artifact, format!("the image of lim {version}\n").repeat(20_000))?;
        let manifest = self.tmp.join(format!("lim-{version}.manifest")).display().to_string();
        let a = artifact.display().to_string();
        let made: output::ManifestWritten = json(&run(
            &self.me,
            &[
                "--json",
                "release",
                "new",
                &a,
                "--product",
                "lim",
                "--version",
                version,
                "--class",
                class,
                "--baseline",
                baseline,
                "--out",
                &manifest,
            ],
        )?)?;
        for k in ["keys/release-1.key", "keys/release-2.key"] {
            run(
                &self.me,
                &["--json", "release", "sign", &manifest, "--key", &self.data.join(k).display().to_string()],
            )?;
        }
        self.admin::<output::Published>(1, &["publish", &manifest, &a])?;
        Ok(made.release_digest)
    }

    /// The customer attests for `deployment`, valid until `until`.
    fn attest(&self, customer: &Path, customer_id: &str, deployment: &str, until: &str) -> anyhow::Result<PathBuf> {
        let from = customer.join("attestation.toml");
        std::fs::write(&from, attestation(customer_id, deployment, until))?;
        // A new file each time (a renewal never overwrites the first).
        let n = std::fs::read_dir(customer)?.count();
        let env = customer.join(format!("attestation-{n}.dsse"));
        let (f, e) = (from.display().to_string(), env.display().to_string());
        self.as_whom(customer, &["attest", "new", "--from", &f, "--out", &e])?;
        self.as_whom(customer, &["attest", "sign", &e])?;
        self.as_whom(customer, &["attest", "submit", &e])?;
        Ok(env)
    }

    /// The field engineer verifies on site what the attestation claims,
    /// observing the device's configuration.
    fn verify(&self, engineer: &Path, attestation: &Path, deployment: &str, device: &Path) -> anyhow::Result<()> {
        let config = self.status(device)?.configuration_digest.map(|d| d.to_string()).unwrap_or_default();
        let out = engineer.join(format!("verification-{deployment}.dsse")).display().to_string();
        let att = attestation.display().to_string();
        self.as_whom(
            engineer,
            &[
                "verify",
                "sign",
                "--attestation",
                &att,
                "--deployment",
                deployment,
                "--country",
                "XA",
                "--site",
                "s1",
                "--config",
                &config,
                "--result",
                "pass",
                "--out",
                &out,
            ],
        )?;
        self.as_whom(engineer, &["verify", "submit", &out])?;
        Ok(())
    }

    fn approve(&self, proposal: &Recorded) -> anyhow::Result<()> {
        self.admin::<Recorded>(2, &["approve", "--yes", &proposal.action_digest])?;
        Ok(())
    }
}

/// An example end-use attestation file (the input of `covenant attest new`)
/// by `customer` for `deployment`, valid until `until` (RFC 3339).
pub fn attestation(customer: &str, deployment: &str, until: &str) -> String {
    format!(
        r#"deployments = ["{deployment}"]

[attestation]
customer = "{customer}"
legal_basis = "Code of Criminal Procedure s. 100a"
oversight_body = "Federal Court"
valid_from = "2026-01-01T00:00:00Z"
valid_until = "{until}"
facts_unknown_to_signer = ""

[attestation.end_user]
legal_name = "{customer}"
agency_type = "law enforcement"
country = "XA"

[attestation.end_use]
category = "lawful-interception"
description = "court-ordered interception"

[[attestation.sites]]
country = "XA"
site_id = "s1"

[attestation.undertakings]
no_reexport_transfer_or_relocation = true
no_modification = true
no_targeting_of_protected_groups = true
consent_to_audits_and_site_checks = true

[attestation.signatory]
name = "A. Official"
title = "Director"
"#
    )
}

const CONTRACT: &str = r#"
id = "contract-CUSTOMER"
version = 1
customer = "CUSTOMER"
grant_validity_seconds = 604800
compliance_contact = "compliance@vendor.example"

[[conditions]]
condition = "end_use_attested"
max_age_days = 365

[[conditions]]
condition = "field_verified"
max_age_days = 90
"#;

/// Runs the demo (module docs); keeps its folder if `keep`.
pub fn demo(keep: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let tmp = std::env::temp_dir().join(format!("covenant-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let mut d = Demo {
        data: tmp.join("server"),
        tmp: tmp.clone(),
        url: String::new(),
        me: std::env::current_exe()?,
        server_bin: sibling("covenant-server")?,
        agent_bin: sibling("covenant-agent")?,
        children: vec![],
        step: 0,
    };
    let result = story(&mut d);
    let (server_bin, me, data) = (d.server_bin.clone(), d.me.clone(), d.data.clone());
    drop(d);
    if !keep {
        let _ = std::fs::remove_dir_all(&tmp);
    } else {
        println!("\nThe demo's files are in {}.", tmp.display());
    }
    result?;
    if keep {
        // The demo's server stopped with it: serve its data directory again
        // (on the default port), then open the console as an admin.
        println!(
            "\nTo browse its ledger in the console, serve it again and run the console as an admin, then open \
             http://{}/:\n   {} serve --data {} &\n   {} --server https://127.0.0.1:8443 --identity {} console",
            crate::console::DEFAULT_LISTEN,
            server_bin.display(),
            data.display(),
            me.display(),
            data.join("identities/admin1").display()
        );
    } else {
        println!("\n(`covenant demo --keep` keeps its folder, and prints the command that opens it in the console.)");
    }
    println!("\nThe demo took {:.0} s.", started.elapsed().as_secs_f64());
    Ok(())
}

fn story(d: &mut Demo) -> anyhow::Result<()> {
    let data = d.data.display().to_string();
    d.say("The vendor starts a development server (every key in one folder), a witness and the ledger.");
    run(&d.server_bin, &["init", "--dev", "--data", &data])?;
    let vkey = std::fs::read_to_string(d.data.join("ledger.vkey"))?;
    let wstate = d.tmp.join("witness");
    let (child, line) = start(
        &d.me,
        &[
            "witness",
            "serve",
            "--key",
            &d.data.join("keys/witness-dev.key").display().to_string(),
            "--log",
            vkey.trim(),
            "--state",
            &wstate.display().to_string(),
            "--listen",
            "127.0.0.1:0",
        ],
    )?;
    d.children.push(child);
    let waddr = address(&line)?;
    let wvkey = std::fs::read_to_string(d.data.join("witness-dev.vkey"))?.trim().to_owned();
    let wname = wvkey.split('+').next().unwrap_or_default().to_owned();
    std::fs::write(
        d.data.join("witnesses.toml"),
        format!(
            "[[witness]]\nname = \"{wname}\"\naddress = \"https://{waddr}\"\nvkey = \"{wvkey}\"\ncert = \"{}\"\n",
            wstate.join("tls-cert.pem").display()
        ),
    )?;
    let (child, line) =
        start(&d.server_bin, &["serve", "--data", &data, "--listen", "127.0.0.1:0", "--metrics", "off"])?;
    d.children.push(child);
    d.url = format!("https://{}", address(&line)?);
    println!("   server {}, witness {wname} at {waddr}", d.url);

    d.say(
        "Compliance registers two customers, a deployment each, their contracts (each approved by a second admin), \
         and releases 1.0.0 and 1.1.0.",
    );
    for (c, name, dep) in [("agency-a", "Agency A", "a-01"), ("agency-b", "Agency B", "b-01")] {
        d.admin::<Recorded>(1, &["customer", c, "--name", name, "--country", "XA"])?;
        d.admin::<Recorded>(
            1,
            &[
                "deployment",
                dep,
                "--customer",
                c,
                "--product",
                "lim",
                "--country",
                "XA",
                "--site",
                "s1",
                "--provisioned-version",
                "1.0.0",
            ],
        )?;
        let file = d.tmp.join(format!("contract-{c}.toml"));
        std::fs::write(&file, CONTRACT.replace("CUSTOMER", c))?;
        // A customer's first contract waits for a second admin.
        let proposal: Recorded = d.admin(1, &["contract", &file.display().to_string()])?;
        d.approve(&proposal)?;
    }
    let customer_a = d.person("customer", "agency-a")?;
    let customer_b = d.person("customer", "agency-b")?;
    let engineer = d.person("engineer", "eng-1")?;
    d.publish("1.0.0", "capability", "1.0.0")?;
    d.publish("1.1.0", "capability", "1.1.0")?;
    println!("   contracts require an end-use attestation and a field verification");
    println!("   a customer's or engineer's identity takes two admins: its key signs what the conditions read");

    d.say("Each device enrolls (its keys never leave it) and is provisioned at version 1.0.0.");
    let agent_a = d.agent("a-01")?;
    let agent_b = d.agent("b-01")?;
    println!("   a-01 checks in: {}", d.check(&agent_a)?);
    print!("{}", d.reasons(&agent_a)?);

    d.say("Agency A attests (valid for 20 seconds, for the demo) and an engineer verifies on site.");
    let soon = covenant_core::digest::Timestamp::since_epoch(std::time::SystemTime::now()).plus_seconds(20);
    let expires_a = Instant::now() + Duration::from_secs(21);
    let att_a = d.attest(&customer_a, "agency-a", "a-01", &rfc3339(soon))?;
    d.verify(&engineer, &att_a, "a-01", &agent_a)?;
    println!("   a-01 checks in: {}", d.check(&agent_a)?);

    d.say("Agency B attests and is verified too; then a misuse signal about Agency B opens a case.");
    let att_b = d.attest(&customer_b, "agency-b", "b-01", "2099-01-01T00:00:00Z")?;
    d.verify(&engineer, &att_b, "b-01", &agent_b)?;
    let signal: output::Submitted = json(&d.as_whom(
        &engineer,
        &["signal", "submit", "--customer", "agency-b", "--source", "ngo_report", "--summary", "journalists targeted"],
    )?)?;
    println!("   case-{} opened (the reporter's identity stays out of the ledger's headers)", signal.index);

    d.say("One compliance officer proposes an L2 suspension of Agency B; a proposal alone changes nothing.");
    let proposal: Recorded = d.admin(1, &["suspend", "--customer", "agency-b", "--level", "L2"])?;
    println!("   proposal {}", proposal.action_digest);
    d.say("A second officer approves it. Agency B, on 1.0.0, is withheld 1.1.0:");
    d.approve(&proposal)?;
    println!("   b-01 checks in: {}", d.check(&agent_b)?);
    print!("{}", d.reasons(&agent_b)?);

    d.say("Security fix 1.0.1 (baseline 1.0.0) is published; two officers let it through to b-01.");
    let fix = d.publish("1.0.1", "security-fix", "1.0.0")?;
    let proposal: Recorded = d.admin(1, &["security-fix", "--deployment", "b-01", "--release", &fix])?;
    d.approve(&proposal)?;
    println!("   b-01 checks in: {}", d.check(&agent_b)?);

    d.say("Release 1.2.0 comes out after Agency A's attestation has expired:");
    d.publish("1.2.0", "capability", "1.2.0")?;
    let wait = expires_a.saturating_duration_since(Instant::now());
    if !wait.is_zero() {
        println!("   (waiting {} s for the attestation to expire)", wait.as_secs());
        std::thread::sleep(wait);
    }
    println!("   a-01 checks in: {}", d.check(&agent_a)?);
    print!("{}", d.reasons(&agent_a)?);
    d.say("Agency A renews its attestation, the engineer verifies again, and a-01 gets 1.2.0.");
    let att_a = d.attest(&customer_a, "agency-a", "a-01", "2099-01-01T00:00:00Z")?;
    d.verify(&engineer, &att_a, "a-01", &agent_a)?;
    println!("   a-01 checks in: {}", d.check(&agent_a)?);

    d.say(
        "Agency A's second site, a-02, is air-gapped: its device reaches no server. The engineer carries its signed \
         request in and the update out on files, and its receipt back.",
    );
    // A customer's further deployment, once it has a contract, waits for a
    // second admin.
    let registered: Recorded = d.admin(
        1,
        &[
            "deployment",
            "a-02",
            "--customer",
            "agency-a",
            "--product",
            "lim",
            "--country",
            "XA",
            "--site",
            "s1",
            "--provisioned-version",
            "1.0.0",
        ],
    )?;
    d.approve(&registered)?;
    let agent_c = d.agent("a-02")?;
    air_gap(&agent_c)?;
    let att_c = d.attest(&customer_a, "agency-a", "a-02", "2099-01-01T00:00:00Z")?;
    d.verify(&engineer, &att_c, "a-02", &agent_c)?;
    if d.check(&agent_c).is_ok() {
        bail!("the air-gapped device reached a server");
    }
    println!("   a-02 checks in: no server answers (the site is closed)");
    let files = d.tmp.join("usb-stick");
    std::fs::create_dir_all(&files)?;
    let (request, bundle, receipt) =
        (files.join("a-02.request"), files.join("a-02.bundle"), files.join("a-02.receipt"));
    let st = agent_c.display().to_string();
    run(&d.agent_bin, &["offline", "request", "--state", &st, "--out", &request.display().to_string()])?;
    println!("   the device writes its signed request: {}", request.display());
    d.as_whom(&engineer, &["field", "fetch", &request.display().to_string(), "--out", &bundle.display().to_string()])?;
    println!(
        "   at the vendor, the engineer fetches the answer: {} ({} bytes)",
        bundle.display(),
        std::fs::metadata(&bundle)?.len()
    );
    let out = run(
        &d.agent_bin,
        &[
            "offline",
            "install",
            &bundle.display().to_string(),
            "--state",
            &st,
            "--receipt",
            &receipt.display().to_string(),
        ],
    )?;
    let said = out.lines().next().unwrap_or_default().trim().to_owned();
    println!("   on site, a-02 installs from the bundle: {said}");
    d.as_whom(&engineer, &["field", "return", &receipt.display().to_string()])?;
    println!("   back at the vendor, the engineer returns the device-signed receipt; the ledger records the install");
    let standing: output::Standing = json(&d.as_whom(&d.data.join("identities/admin1"), &["status", "a-02"])?)?;
    println!("   the grant (entry {}) names eng-1 as the courier, never as its signer", standing.index);
    if standing.decision.courier.as_deref() != Some("eng-1") {
        bail!("the grant for a-02 does not name its courier");
    }

    d.say("An auditor verifies the ledger and replays every decision.");
    let auditor = d.data.join("identities/auditor");
    let verified: output::Verified = json(&d.as_whom(&auditor, &["audit", "verify", "--bodies"])?)?;
    let replayed: output::Replayed = json(&d.as_whom(&auditor, &["audit", "replay"])?)?;
    println!(
        "   verified {} entries, every body and signature; the checkpoint carries {}",
        verified.size,
        crate::counted(verified.cosignatures, "witness cosignature", "witness cosignatures")
    );
    println!(
        "   replayed {} decisions: {}",
        replayed.decisions,
        crate::counted(replayed.mismatches.len(), "mismatch", "mismatches")
    );

    d.say("A tampered copy of the ledger is caught offline.");
    let copy = d.tmp.join("ledger-copy");
    copy_dir(&d.data.join("ledger/public"), &copy)?;
    tamper(&copy)?;
    match d.as_whom(&auditor, &["audit", "verify", "--bodies", "--ledger", &copy.display().to_string()]) {
        Ok(_) => bail!("the tampered copy was not caught"),
        Err(e) => {
            let text = e.to_string();
            let why = text
                .split_once("failed: ")
                .and_then(|(_, j)| serde_json::from_str::<output::Failure>(j.trim()).ok())
                .map(|f| f.error)
                .unwrap_or(text);
            println!("   refused: {why}");
        }
    }

    d.say("Summary.");
    println!("   {:<12} {:<10} {:<10} reason", "deployment", "installed", "verdict");
    for (dep, state) in [("a-01", &agent_a), ("b-01", &agent_b), ("a-02", &agent_c)] {
        let s = d.status(state)?;
        // The first reason there is: an unmet condition, else a newer
        // release still withheld (a granted security fix can leave one),
        // else none.
        let verdict = s.verdict.as_ref();
        let unmet = verdict.and_then(|v| v.unmet.first());
        let withheld = verdict.and_then(|v| v.withheld.first());
        let reason = match (unmet, withheld.and_then(|w| w.reasons.first().map(|why| (w, why)))) {
            (Some(unmet), _) => unmet.reason.clone(),
            (None, Some((w, why))) => format!("{} still withheld: {why}", w.version),
            (None, None) => "every condition met".to_owned(),
        };
        println!(
            "   {:<12} {:<10} {:<10} {}",
            dep,
            s.installed.version,
            verdict.map_or("", |v| v.verdict.name()),
            reason
        );
    }
    println!("   ledger: {} entries; checkpoint root {}", verified.size, verified.root);
    Ok(())
}

/// Points a device's configuration at an address no server answers: an
/// air-gapped site.
fn air_gap(state: &Path) -> anyhow::Result<()> {
    let path = state.join("agent.toml");
    let text = std::fs::read_to_string(&path)?;
    let cut: Vec<String> = text
        .lines()
        .map(|l| if l.starts_with("server =") { "server = \"https://127.0.0.1:9\"".to_owned() } else { l.to_owned() })
        .collect();
    std::fs::write(&path, cut.join("\n") + "\n")?;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), target)?;
        }
    }
    Ok(())
}

/// Flips one byte in the last entry bundle the copy's checkpoint covers (a
/// header the tree covers: the published folder may also hold partial
/// bundles of other sizes, which no check reads).
fn tamper(dir: &Path) -> anyhow::Result<()> {
    use covenant_core::tiles;
    let checkpoint = std::fs::read_to_string(dir.join("checkpoint")).context("reading the copy's checkpoint")?;
    let size: u64 = checkpoint.lines().nth(1).and_then(|l| l.parse().ok()).context("a checkpoint without a size")?;
    let last = size.checked_sub(1).context("an empty ledger")? / tiles::TILE_WIDTH;
    let path = dir.join(tiles::bundle_path(last, tiles::tile_width(size, last)));
    let mut bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let middle = bytes.len() / 2;
    if let Some(b) = bytes.get_mut(middle) {
        *b ^= 0x01;
    }
    std::fs::write(path, bytes)?;
    Ok(())
}
