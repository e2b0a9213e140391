//! Replay: a generated history of more than 10,000 entries replays with zero
//! mismatches, and three forgeries are each detected and named by index: a
//! decision whose verdict was flipped and re-signed with the genuine decision
//! key, a grant evaluated against a stale state, and a decision dated before
//! its predecessor.
//!
//! The generator decides every verdict with its own model of the world (its
//! own suspension table, its own reading of each condition), not with the
//! evaluator: the evaluator is asked only for the reason texts, which are
//! words. If the two disagree about anything but words, replay reports it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{BTreeMap, BTreeSet};

use covenant_core::digest::{Sha256Digest, Timestamp};
use covenant_core::envelope;
use covenant_core::keys::SigningKey;
use covenant_core::ledger::{EntryHeader, body_digest};
use covenant_core::policy::Outcome;
use covenant_core::replay::{Mismatch, replay};
use covenant_core::state::classify;
use covenant_core::statements::*;
use support::world::{DAY, World, site};

/// A deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn named_key(label: &str) -> SigningKey {
    SigningKey::from_seed(Sha256Digest::of(label.as_bytes()).as_bytes())
}

// ---- The generator's own model of the world -------------------------------

#[derive(Clone)]
struct MRelease {
    digest: Sha256Digest,
    version: semver::Version,
    class: ReleaseClass,
    baseline: semver::Version,
}

struct MAttestation {
    digest: Sha256Digest,
    recorded: Timestamp,
    until: Timestamp,
}

struct MVerification {
    attestation: Sha256Digest,
    recorded: Timestamp,
    pass: bool,
}

struct MDeployment {
    customer: usize,
    device: SigningKey,
    installed: semver::Version,
    baseline: semver::Version,
    level: u8,
    attestations: Vec<MAttestation>,
    verifications: Vec<MVerification>,
    fixes: BTreeSet<Sha256Digest>,
}

struct MCustomer {
    id: String,
    key: SigningKey,
    level: u8,
    contract_version: u64,
    field: bool,
    case_rule: bool,
    denied_rule: bool,
    integrity: bool,
    listed: bool,
}

struct MCase {
    id: String,
    customer: usize,
    deployment: Option<usize>,
    state: CaseState,
    determination: Option<Determination>,
}

const LEVELS: [SuspensionLevel; 5] =
    [SuspensionLevel::None, SuspensionLevel::L1, SuspensionLevel::L2, SuspensionLevel::L3, SuspensionLevel::LegalHold];

/// The model's suspension table: per level, per class (capability, security
/// fix, compliance-enabling, capability removal): `y` ships, `n` does not,
/// `b` ships if its baseline is not newer than installed, `ab` also needs
/// the two-admin approval.
fn model_ships(level: u8, class: ReleaseClass, baseline_newer: bool, approved: bool) -> bool {
    const TABLE: [[&str; 4]; 5] =
        [["y", "y", "y", "y"], ["n", "b", "b", "y"], ["n", "ab", "b", "y"], ["n", "n", "b", "y"], ["n", "n", "n", "n"]];
    let column = match class {
        ReleaseClass::Capability => 0,
        ReleaseClass::SecurityFix => 1,
        ReleaseClass::ComplianceEnabling => 2,
        ReleaseClass::CapabilityRemoval => 3,
    };
    match TABLE[level as usize][column] {
        "y" => true,
        "b" => !baseline_newer,
        "ab" => approved && !baseline_newer,
        _ => false,
    }
}

/// The model's legal next moves of a case.
fn model_moves(state: CaseState, det: Option<Determination>) -> Vec<CaseState> {
    use CaseState as S;
    match (state, det) {
        (S::Received, _) => vec![S::Triaged],
        (S::Triaged, _) => vec![S::Investigating, S::Closed],
        (S::Investigating, _) => vec![S::Determined],
        (S::Determined, Some(Determination::Unsubstantiated)) => vec![S::Closed],
        (S::Determined, Some(Determination::Inconclusive)) => vec![S::Closed, S::Investigating],
        (S::Determined, _) => vec![S::Remediation],
        (S::Remediation, _) => vec![S::Verified],
        (S::Verified, _) => vec![S::Closed],
        (S::Closed, _) => vec![],
    }
}

struct Gen {
    w: World,
    rng: Rng,
    customers: Vec<MCustomer>,
    deployments: Vec<MDeployment>,
    releases: Vec<MRelease>,
    cases: Vec<MCase>,
    engineers: Vec<SigningKey>,
    next_minor: u64,
    next_patch: u64,
    latest_capability: semver::Version,
    decisions: u64,
    grants: u64,
}

const ATTEST_MAX_AGE: i64 = 120;
const VERIFY_MAX_AGE: i64 = 60;
const VALIDITY: u32 = 7 * 86_400;

impl Gen {
    fn new(seed: u64) -> Self {
        let mut g = Gen {
            w: World::new(),
            rng: Rng(seed),
            customers: vec![],
            deployments: vec![],
            releases: vec![],
            cases: vec![],
            engineers: vec![],
            next_minor: 1,
            next_patch: 0,
            latest_capability: "1.0.0".parse().unwrap(),
            decisions: 0,
            grants: 0,
        };
        g.publish(ReleaseClass::Capability, Some("1.0.0"));
        for e in 0..3 {
            let k = named_key(&format!("engineer {e}"));
            g.w.identity(IdentityRole::Engineer, &format!("eng-{e}"), &k);
            g.engineers.push(k);
        }
        for c in 0..20 {
            let id = format!("cust-{c}");
            g.w.customer(&id);
            let key = named_key(&format!("customer {c}"));
            g.w.identity(IdentityRole::Customer, &id, &key);
            let mut m = MCustomer {
                id: id.clone(),
                key,
                level: 0,
                contract_version: 0,
                field: g.rng.chance(60),
                case_rule: g.rng.chance(70),
                denied_rule: g.rng.chance(40),
                integrity: g.rng.chance(50),
                listed: false,
            };
            for k in 0..3 {
                let d = format!("dep-{c}-{k}");
                g.w.deployment(&d, &id);
                let device = named_key(&format!("device {c} {k}"));
                g.w.identity(IdentityRole::Deployment, &d, &device);
                g.deployments.push(MDeployment {
                    customer: c,
                    device,
                    installed: "1.0.0".parse().unwrap(),
                    baseline: "1.0.0".parse().unwrap(),
                    level: 0,
                    attestations: vec![],
                    verifications: vec![],
                    fixes: BTreeSet::new(),
                });
            }
            g.set_contract(&mut m);
            g.customers.push(m);
        }
        g
    }

    fn conditions(m: &MCustomer) -> Vec<Condition> {
        let mut c = vec![Condition::EndUseAttested { max_age_days: ATTEST_MAX_AGE as u32, allowed_end_uses: vec![] }];
        if m.field {
            c.push(Condition::FieldVerified { max_age_days: VERIFY_MAX_AGE as u32, methods: vec![] });
        }
        if m.case_rule {
            c.push(Condition::NoOpenCase { from_state: CaseState::Triaged });
        }
        if m.denied_rule {
            c.push(Condition::DeniedPartyClear { list: "eu-sanctions".into() });
        }
        if m.integrity {
            c.push(Condition::IntegrityMatch);
        }
        c
    }

    fn set_contract(&mut self, m: &mut MCustomer) {
        m.contract_version += 1;
        let mut contract = support::world::contract(&m.id, m.contract_version, Self::conditions(m));
        contract.grant_validity_seconds = VALIDITY;
        let p = self.w.propose(ActionKind::SetContract { contract }, 0).unwrap();
        // A version that relaxes a condition waits for the second admin.
        if self.w.state.facts().proposal(&p).is_some_and(|p| !p.in_force) {
            self.w.approve(p, 1).unwrap();
        }
    }

    fn publish(&mut self, class: ReleaseClass, fixed: Option<&str>) {
        let version: semver::Version = match fixed {
            Some(v) => v.parse().unwrap(),
            None if class == ReleaseClass::Capability => {
                self.next_minor += 1;
                self.next_patch = 0;
                format!("1.{}.0", self.next_minor).parse().unwrap()
            }
            None => {
                self.next_patch += 1;
                format!("1.{}.{}", self.next_minor, self.next_patch).parse().unwrap()
            }
        };
        let baseline = if class == ReleaseClass::Capability {
            self.latest_capability = version.clone();
            version.clone()
        } else {
            self.latest_capability.clone()
        };
        let digest = self.w.release(&version.to_string(), class, &baseline.to_string());
        self.releases.push(MRelease { digest, version, class, baseline });
    }

    fn step(&mut self) {
        self.w.now = self.w.now.plus_seconds(self.rng.below(DAY as u64) as i64);
        match self.rng.below(100) {
            0 if self.rng.chance(40) => {
                let class = [
                    ReleaseClass::Capability,
                    ReleaseClass::SecurityFix,
                    ReleaseClass::ComplianceEnabling,
                    ReleaseClass::CapabilityRemoval,
                ][self.rng.below(4) as usize];
                self.publish(class, None);
            }
            3..=12 => self.attest(),
            13..=19 => self.verify(),
            20..=22 => self.signal(),
            23..=29 => self.move_case(),
            30..=33 => self.suspend(),
            34..=35 => self.approve_fix(),
            36 => self.list_denied(),
            37 => {
                let c = self.rng.below(self.customers.len() as u64) as usize;
                let mut m = std::mem::replace(&mut self.customers[c], placeholder());
                m.field = self.rng.chance(60);
                m.case_rule = self.rng.chance(70);
                self.set_contract(&mut m);
                self.customers[c] = m;
            }
            _ => self.check_in(),
        }
    }

    fn attest(&mut self) {
        let c = self.rng.below(self.customers.len() as u64) as usize;
        let ds: Vec<usize> = (0..3).map(|k| c * 3 + k).filter(|_| self.rng.chance(70)).collect();
        if ds.is_empty() {
            return;
        }
        let names: Vec<String> = ds.iter().map(|d| format!("dep-{c}-{}", d % 3)).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let days = 30 + self.rng.below(300) as i64;
        let id = self.customers[c].id.clone();
        let digest = self.w.attest(&self.customers[c].key, &id, &refs, days);
        for d in ds {
            self.deployments[d].attestations.push(MAttestation {
                digest,
                recorded: self.w.now.plus_seconds(-1),
                until: self.w.now.plus_seconds(-1 + days * DAY),
            });
        }
    }

    fn verify(&mut self) {
        let d = self.rng.below(self.deployments.len() as u64) as usize;
        let Some(att) = self.deployments[d].attestations.last().map(|a| a.digest) else { return };
        let pass = self.rng.chance(85);
        let e = self.rng.below(3) as usize;
        let name = dep_name(d);
        let result = if pass { VerificationResult::Pass } else { VerificationResult::Fail };
        let body = self.w.verification_body(&self.engineers[e], att, &name, site("s1"), config(), result);
        self.w.append(body).unwrap();
        self.deployments[d].verifications.push(MVerification {
            attestation: att,
            recorded: self.w.now.plus_seconds(-1),
            pass,
        });
    }

    fn signal(&mut self) {
        let c = self.rng.below(self.customers.len() as u64) as usize;
        let d = self.rng.chance(60).then(|| c * 3 + self.rng.below(3) as usize);
        let e = self.rng.below(3) as usize;
        let customer = self.customers[c].id.clone();
        let id = self.w.signal(&self.engineers[e], &customer, d.map(dep_name).as_deref());
        self.cases.push(MCase { id, customer: c, deployment: d, state: CaseState::Received, determination: None });
    }

    fn move_case(&mut self) {
        let open: Vec<usize> = (0..self.cases.len()).filter(|i| self.cases[*i].state != CaseState::Closed).collect();
        if open.is_empty() {
            return;
        }
        let i = open[self.rng.below(open.len() as u64) as usize];
        let moves = model_moves(self.cases[i].state, self.cases[i].determination);
        let to = moves[self.rng.below(moves.len() as u64) as usize];
        let det = (to == CaseState::Determined).then(|| {
            [Determination::Unsubstantiated, Determination::Inconclusive, Determination::Substantiated]
                [self.rng.below(3) as usize]
        });
        self.w.move_case(&self.cases[i].id.clone(), to, det).unwrap();
        self.cases[i].state = to;
        if to == CaseState::Determined {
            self.cases[i].determination = det;
        }
    }

    fn suspend(&mut self) {
        let on_customer = self.rng.chance(40);
        let level = self.rng.below(5) as u8;
        let (current, target) = if on_customer {
            let c = self.rng.below(self.customers.len() as u64) as usize;
            (self.customers[c].level, SuspensionTarget::Customer(self.customers[c].id.clone()))
        } else {
            let d = self.rng.below(self.deployments.len() as u64) as usize;
            (self.deployments[d].level, SuspensionTarget::Deployment(dep_name(d)))
        };
        if level == current {
            return;
        }
        let proposer = self.rng.below(2) as usize;
        let p = self
            .w
            .propose(ActionKind::ProposeSuspension { target: target.clone(), level: LEVELS[level as usize] }, proposer)
            .unwrap();
        let heavy = level >= 2 || level < current;
        // Now and then an approval never comes: the model keeps the level.
        let approved = !heavy || !self.rng.chance(10);
        if heavy && approved {
            self.w.approve(p, 1 - proposer).unwrap();
        }
        if approved {
            self.set_level(&target, level);
        }
    }

    fn set_level(&mut self, target: &SuspensionTarget, level: u8) {
        match target {
            SuspensionTarget::Customer(id) => {
                self.customers.iter_mut().find(|c| &c.id == id).unwrap().level = level;
            }
            SuspensionTarget::Deployment(id) => {
                let d = (0..self.deployments.len()).find(|d| &dep_name(*d) == id).unwrap();
                self.deployments[d].level = level;
            }
        }
    }

    fn approve_fix(&mut self) {
        let d = self.rng.below(self.deployments.len() as u64) as usize;
        let Some(fix) = self.releases.iter().rev().find(|r| r.class == ReleaseClass::SecurityFix).cloned() else {
            return;
        };
        if self.deployments[d].fixes.contains(&fix.digest) {
            return;
        }
        let p =
            self.w.propose(ActionKind::ProposeSecurityFix { deployment: dep_name(d), release: fix.digest }, 0).unwrap();
        self.w.approve(p, 1).unwrap();
        self.deployments[d].fixes.insert(fix.digest);
    }

    fn list_denied(&mut self) {
        let c = self.rng.below(self.customers.len() as u64) as usize;
        if self.customers[c].listed {
            return;
        }
        let party = DeniedParty {
            list: "eu-sanctions".into(),
            legal_name: format!("Ministry {}", self.customers[c].id),
            country: "XA".into(),
        };
        self.w.act(ActionKind::ListDeniedParty { party }, 0).unwrap();
        self.customers[c].listed = true;
    }

    /// The model's reading of the conditions for deployment `d` now, in the
    /// order decisions list them (absent ones: not applicable).
    fn model_conditions(&self, d: usize) -> Vec<(&'static str, ConditionStatus)> {
        let dep = &self.deployments[d];
        let cust = &self.customers[dep.customer];
        let now = self.w.now;
        let att = dep.attestations.last();
        let attested = att.is_some_and(|a| now < a.until && now < a.recorded.plus_seconds(ATTEST_MAX_AGE * DAY));
        let verification = att.and_then(|a| dep.verifications.iter().rev().find(|v| v.attestation == a.digest));
        let verified = verification.is_some_and(|v| v.pass && now < v.recorded.plus_seconds(VERIFY_MAX_AGE * DAY));
        let case_open = self.cases.iter().any(|c| {
            c.customer == dep.customer
                && c.state != CaseState::Closed
                && c.state >= CaseState::Triaged
                && c.deployment.is_none_or(|x| x == d)
        });
        let status = |required: bool, ok: bool| match (required, ok) {
            (false, _) => ConditionStatus::NotApplicable,
            (true, true) => ConditionStatus::Met,
            (true, false) => ConditionStatus::Unmet,
        };
        let integrity = if !cust.integrity {
            ConditionStatus::NotApplicable
        } else if verification.is_some() {
            ConditionStatus::Met // the agent reports the verified configuration
        } else {
            ConditionStatus::NotApplicable
        };
        vec![
            ("end_use_attested", status(true, attested)),
            ("field_verified", status(cust.field, verified)),
            ("site_bound", ConditionStatus::NotApplicable),
            ("integrity_match", integrity),
            ("licence_valid", ConditionStatus::NotApplicable),
            ("denied_party_clear", status(cust.denied_rule, att.is_some() && !cust.listed)),
            ("no_open_case", status(cust.case_rule, !case_open)),
        ]
    }

    fn check_in(&mut self) {
        let d = self.rng.below(self.deployments.len() as u64) as usize;
        let dep = &self.deployments[d];
        let newer: Vec<MRelease> = {
            let mut v: Vec<MRelease> = self.releases.iter().filter(|r| r.version > dep.installed).cloned().collect();
            v.sort_by(|a, b| b.version.cmp(&a.version));
            v
        };
        if newer.is_empty() {
            return; // current: nothing is logged
        }
        let name = dep_name(d);
        let checkin = self.w.checkin(&dep.device, &name, &dep.installed.to_string(), &dep.baseline.to_string());
        let cust = &self.customers[dep.customer];
        let level = cust.level.max(dep.level);
        let conditions = self.model_conditions(d);
        let conditions_ok = conditions.iter().all(|(_, s)| *s != ConditionStatus::Unmet);
        let mut offered = None;
        let mut withheld = vec![];
        for r in &newer {
            let ships =
                conditions_ok && model_ships(level, r.class, r.baseline > dep.baseline, dep.fixes.contains(&r.digest));
            if ships {
                offered = Some(r.clone());
                break;
            }
            withheld.push(r.clone());
        }
        // Words only from the evaluator.
        let words = match self.w.evaluate(&checkin) {
            Outcome::Decided(d) => *d,
            Outcome::Current => panic!("the evaluator says current while newer releases exist"),
        };
        let text = |name: &str| {
            words.conditions.iter().find(|c| c.condition == name).map(|c| c.reason.clone()).unwrap_or_default()
        };
        let decision = Decision {
            type_tag: DecisionTag,
            schema: SchemaV1,
            deployment: name.clone(),
            verdict: if offered.is_some() { Verdict::Grant } else { Verdict::Withhold },
            release: offered.as_ref().map(|r| r.digest),
            withheld_above: withheld
                .iter()
                .map(|r| WithheldRelease {
                    release: r.digest,
                    version: r.version.clone(),
                    reasons: words
                        .withheld_above
                        .iter()
                        .find(|w| w.release == r.digest)
                        .map(|w| w.reasons.clone())
                        .unwrap_or_else(|| vec!["(the evaluator offered this release)".into()]),
                })
                .collect(),
            conditions: conditions
                .iter()
                .map(|(n, s)| ConditionResult { condition: (*n).into(), status: *s, reason: text(n) })
                .collect(),
            suspension: LEVELS[level as usize],
            checkin,
            contract: Some(ContractRef { id: format!("contract-{}", cust.id), version: cust.contract_version }),
            policy_version: 1,
            state_size: self.w.entries.len() as u64,
            issued_at: self.w.now,
            expires_at: offered.as_ref().map(|_| self.w.now.plus_seconds(i64::from(VALIDITY))),
            finding: None,
            courier: None,
        };
        let index = self.w.log(&decision).unwrap();
        self.decisions += 1;
        if let Some(r) = offered {
            self.grants += 1;
            if self.rng.chance(60) {
                let dep = &mut self.deployments[d];
                let report = InstallReport {
                    type_tag: ReportTag,
                    schema: SchemaV1,
                    deployment: name,
                    grant_index: index,
                    outcome: InstallOutcome::Installed,
                    from_version: dep.installed.clone(),
                    to_version: r.version.clone(),
                    last_checkpoint: CheckpointRef { size: index + 1, root_hash: Sha256Digest::of(b"root") },
                    time: self.w.now,
                };
                dep.installed = r.version.clone();
                dep.baseline = r.baseline.clone();
                let body = envelope::sign(&report, &[&dep.device]);
                self.w.append(body).unwrap();
            }
        }
    }
}

fn placeholder() -> MCustomer {
    MCustomer {
        id: String::new(),
        key: named_key("placeholder"),
        level: 0,
        contract_version: 0,
        field: false,
        case_rule: false,
        denied_rule: false,
        integrity: false,
        listed: false,
    }
}

fn dep_name(d: usize) -> String {
    format!("dep-{}-{}", d / 3, d % 3)
}

fn config() -> Sha256Digest {
    Sha256Digest::of(b"config")
}

fn generate(entries: usize) -> Gen {
    let mut g = Gen::new(0x5eed_cafe_f00d_1234);
    while g.w.entries.len() < entries {
        g.step();
    }
    g
}

fn replay_of(entries: &[(EntryHeader, Vec<u8>)]) -> covenant_core::replay::Replay {
    replay(support::world::keyring(), entries.iter().enumerate().map(|(i, (h, b))| (i as u64, h, b.as_slice())))
}

/// Rebuilds headers for bodies (as the server would), keeping their times.
fn rebuild(bodies: Vec<(Timestamp, Vec<u8>)>) -> Vec<(EntryHeader, Vec<u8>)> {
    bodies
        .into_iter()
        .map(|(time, body)| {
            let p = classify(&body).unwrap();
            let digest = body_digest(&[0; 32], &body);
            let tags = support::world::keyring().tags(&p.subjects, &digest).unwrap();
            let header = EntryHeader { kind: p.kind, time, actor: p.actor, tags, body_digest: digest };
            (header, body)
        })
        .collect()
}

fn decision_at(entries: &[(EntryHeader, Vec<u8>)], i: usize) -> Option<Decision> {
    let env = envelope::Envelope::parse(&entries[i].1).ok()?;
    (env.payload_type() == Decision::PAYLOAD_TYPE).then(|| Decision::parse(env.payload()).unwrap())
}

fn named(mismatches: &[Mismatch], index: usize, field: &str) -> bool {
    mismatches.iter().any(|m| m.index == index as u64 && m.field == field)
}

#[test]
fn a_generated_history_replays_with_zero_mismatches_and_forgeries_are_named() {
    let g = generate(10_000);
    let entries = g.w.entries.clone();
    assert!(entries.len() >= 10_000);
    assert!(g.decisions >= 1_000 && g.grants >= 100, "decisions {}, grants {}", g.decisions, g.grants);
    assert!(g.decisions - g.grants >= 100, "withholds too");
    let kinds: BTreeSet<String> = entries.iter().map(|(h, _)| h.kind.to_string()).collect();
    for k in [
        "attestation",
        "verification",
        "signal",
        "case",
        "suspension",
        "approval",
        "release",
        "grant",
        "withhold",
        "report",
    ] {
        assert!(kinds.contains(k), "the history has {k} entries: {kinds:?}");
    }

    let clean = replay_of(&entries);
    assert_eq!(clean.mismatches, vec![], "the honest history replays with zero mismatches");
    assert_eq!(clean.decisions, g.decisions);
    assert_eq!(clean.state.size(), entries.len() as u64);

    let bodies: Vec<(Timestamp, Vec<u8>)> = entries.iter().map(|(h, b)| (h.time, b.clone())).collect();
    let decision_key = &g.w.keys.decision;

    // (a) A withhold flipped to a grant of the release it withheld, re-signed
    // with the genuine decision key.
    let (i, mut flipped) = (0..entries.len())
        .rev()
        .find_map(|i| decision_at(&entries, i).filter(|d| d.verdict == Verdict::Withhold).map(|d| (i, d)))
        .unwrap();
    let top = flipped.withheld_above.remove(0);
    flipped.verdict = Verdict::Grant;
    flipped.release = Some(top.release);
    flipped.expires_at = Some(flipped.issued_at.plus_seconds(i64::from(VALIDITY)));
    let mut forged = bodies.clone();
    forged[i].1 = envelope::sign(&flipped, &[decision_key]);
    let r = replay_of(&rebuild(forged));
    assert!(named(&r.mismatches, i, "verdict"), "{:?}", &r.mismatches[..r.mismatches.len().min(5)]);
    assert!(named(&r.mismatches, i, "release"));

    // (b) A grant of a capability release evaluated against a stale state:
    // an L1 suspension of its deployment landed just before it.
    let (i, grant) = (0..entries.len())
        .rev()
        .find_map(|i| {
            decision_at(&entries, i)
                .filter(|d| {
                    d.verdict == Verdict::Grant
                        && clean.state.facts().release(&d.release.unwrap()).unwrap().manifest.class
                            == ReleaseClass::Capability
                })
                .map(|d| (i, d))
        })
        .unwrap();
    let mut stale = bodies[..i].to_vec();
    let t = bodies[i].0;
    // Issued when it is recorded, as an admin action must be.
    let suspension = envelope::sign(
        &support::world::action(
            ActionKind::ProposeSuspension {
                target: SuspensionTarget::Deployment(grant.deployment.clone()),
                level: SuspensionLevel::L1,
            },
            t,
        ),
        &[g.w.admin_key(0)],
    );
    stale.push((t, suspension));
    stale.push((t, bodies[i].1.clone()));
    let r = replay_of(&rebuild(stale));
    // The suspension it missed, and what it changed: the verdict, or the
    // release offered (an older security fix may still pass under L1).
    assert!(named(&r.mismatches, i + 1, "suspension"), "{:?}", r.mismatches);
    assert!(named(&r.mismatches, i + 1, "verdict") || named(&r.mismatches, i + 1, "release"), "{:?}", r.mismatches);
    assert!(named(&r.mismatches, i + 1, "state_size"));
    assert_eq!(r.mismatches.iter().filter(|m| m.index != (i + 1) as u64).count(), 0, "{:?}", r.mismatches);

    // (c) A decision dated before its predecessor.
    let ds: Vec<usize> = (0..entries.len()).filter(|i| decision_at(&entries, *i).is_some()).collect();
    let (prev, next) = (ds[ds.len() / 2], ds[ds.len() / 2 + 1]);
    let mut early = decision_at(&entries, next).unwrap();
    early.issued_at = decision_at(&entries, prev).unwrap().issued_at.plus_seconds(-60);
    early.expires_at = early.expires_at.map(|_| early.issued_at.plus_seconds(i64::from(VALIDITY)));
    let mut forged = bodies.clone();
    forged[next].1 = envelope::sign(&early, &[decision_key]);
    let r = replay_of(&rebuild(forged));
    let m = r.mismatches.iter().find(|m| m.index == next as u64 && m.field == "refused").expect("named");
    assert!(m.detail.contains("goes backwards"), "{m}");
}

#[test]
fn the_generator_model_agrees_with_itself_on_a_small_history() {
    // A short history is checked the same way, quickly, with several seeds.
    for seed in 1..=5u64 {
        let mut g = Gen::new(seed * 7919);
        while g.w.entries.len() < 800 {
            g.step();
        }
        let r = replay_of(&g.w.entries);
        assert_eq!(r.mismatches, vec![], "seed {seed}");
    }
    let _: BTreeMap<(), ()> = BTreeMap::new();
}

/// Issue 16: an operator appended an admin action a second time (admin1's
/// old licence, widening one the admins had since narrowed); replay showed
/// 0 mismatches. The fold refuses it now, so the ledger here is built the
/// way a forger would: the entry forced in past the fold.
#[test]
fn replay_names_a_re_recorded_admin_action() {
    let mut w = World::new();
    support::world::setup(&mut w, "min-x", "lim-07", 100);
    let expires = w.now.plus_seconds(365 * DAY);
    let licence = |versions: &str, _: &World| ActionKind::RecordLicence {
        licence: Licence {
            id: "bafa-1".into(),
            customer: "min-x".into(),
            authority: "BAFA".into(),
            expires,
            versions: versions.parse().unwrap(),
        },
    };
    let wide = w.action_body(licence(">=1.0", &w), 0);
    let first = w.append_approved(wide.clone(), 0).unwrap();
    w.act(licence(">=1.0, <1.2", &w), 0).unwrap();
    let mut bodies: Vec<(Timestamp, Vec<u8>)> = w.entries.iter().map(|(h, b)| (h.time, b.clone())).collect();
    bodies.push((w.now, wide));
    let forced = bodies.len() - 1;
    let r = replay_of(&rebuild(bodies));
    let m = r.mismatches.iter().find(|m| m.index == forced as u64).expect("the forced entry is named");
    assert_eq!(m.field, "re-recorded", "{m}");
    assert_eq!(m.detail, format!("re-records the admin action of entry {first}"));
    assert_eq!(r.mismatches.len(), 1, "{:?}", r.mismatches);
    assert_eq!(r.state.facts().licence("bafa-1").unwrap().versions.to_string(), ">=1.0, <1.2");
}

/// An install report for a grant a suspension voided, forced into a ledger
/// past the server: replay refuses it, so the baseline it would raise is
/// not raised in the replayed state either.
#[test]
fn replay_refuses_an_install_report_for_a_voided_grant() {
    let mut w = World::new();
    let (_, dk, _) = support::world::setup(&mut w, "min-x", "lim-07", 100);
    w.release("1.1.0", ReleaseClass::Capability, "1.1.0");
    w.contract("min-x", 1, vec![]).unwrap();
    let d = w.decide(&w.checkin(&dk, "lim-07", "1.0.0", "1.0.0"));
    let grant = w.log(&d).unwrap();
    w.suspend(SuspensionTarget::Deployment("lim-07".into()), SuspensionLevel::L1);
    let report = InstallReport {
        type_tag: ReportTag,
        schema: SchemaV1,
        deployment: "lim-07".into(),
        grant_index: grant,
        outcome: InstallOutcome::Installed,
        from_version: "1.0.0".parse().unwrap(),
        to_version: "1.1.0".parse().unwrap(),
        last_checkpoint: CheckpointRef { size: grant + 1, root_hash: Sha256Digest::of(b"root") },
        time: w.now,
    };
    let body = envelope::sign(&report, &[&dk]);
    assert!(w.append(body.clone()).unwrap_err().to_string().contains("no longer stood"));
    let mut bodies: Vec<(Timestamp, Vec<u8>)> = w.entries.iter().map(|(h, b)| (h.time, b.clone())).collect();
    bodies.push((w.now, body));
    let forced = bodies.len() - 1;
    let r = replay_of(&rebuild(bodies));
    assert_eq!(r.mismatches.len(), 1, "{:?}", r.mismatches);
    assert!(named(&r.mismatches, forced, "refused"), "{:?}", r.mismatches);
    assert!(r.mismatches[0].detail.contains(&format!("grant {grant} no longer stood")));
    assert_eq!(r.state.deployment("lim-07").unwrap().installed_version.to_string(), "1.0.0");
}

/// Issue #20: a decision names the engineer who carried its check-in from
/// an air-gapped site. Replay accepts an engineer with the deployment in
/// scope and names any other courier: a customer's id, an unknown id, an
/// engineer scoped to another customer.
#[test]
fn replay_names_a_courier_who_could_not_have_carried_the_check_in() {
    let mut w = World::new();
    let (_, dk, _) = support::world::setup(&mut w, "min-x", "lim-07", 100);
    w.customer("min-y");
    w.scoped_identity(IdentityRole::Engineer, "eng-y", &support::key(120), Some(vec!["min-y".into()])).unwrap();
    w.release("1.1.0", ReleaseClass::Capability, "1.1.0");
    w.contract("min-x", 1, vec![]).unwrap();
    let mut d = w.decide(&w.checkin(&dk, "lim-07", "1.0.0", "1.0.0"));
    let bodies: Vec<(Timestamp, Vec<u8>)> = w.entries.iter().map(|(h, b)| (h.time, b.clone())).collect();
    let at = bodies.len();
    let with_courier = |courier: &str, d: &mut Decision| {
        d.courier = Some(courier.into());
        let mut all = bodies.clone();
        all.push((w.now, envelope::sign(d, &[&w.keys.decision])));
        replay_of(&rebuild(all))
    };
    let honest = with_courier("eng-100", &mut d);
    assert_eq!(honest.mismatches, vec![], "an engineer with lim-07 in scope carries it");
    for courier in ["min-x", "nobody", "eng-y"] {
        let r = with_courier(courier, &mut d);
        assert!(named(&r.mismatches, at, "courier"), "{courier}: {:?}", r.mismatches);
        assert_eq!(r.mismatches.len(), 1, "{courier}: {:?}", r.mismatches);
    }
}
