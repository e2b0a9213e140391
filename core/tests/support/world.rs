//! A ledger in memory with the state folded beside it, and a helper per
//! kind of entry, for the governance, policy and replay tests. Entries go
//! through `policy::fold` exactly as the server's sequencer sends them.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use covenant_core::digest::{Sha256Digest, Timestamp};
use covenant_core::envelope;
use covenant_core::keys::SigningKey;
use covenant_core::ledger::{EntryHeader, Keyring, SubjectSecret, body_digest};
use covenant_core::policy::{Outcome, evaluate};
use covenant_core::state::{Rejection, State, classify};
use covenant_core::statements::*;

use super::{NOW, RootKeys, key, next_year, root_metadata, signed_root};

/// A ledger in memory and its state.
pub struct World {
    pub keys: RootKeys,
    pub entries: Vec<(EntryHeader, Vec<u8>)>,
    pub state: State,
    /// The ledger time of the next entry.
    pub now: Timestamp,
    next_cert: u64,
}

pub const DAY: i64 = 86_400;

/// The test ledgers' subject keyring (the server's secret, fixed here).
pub fn keyring() -> Keyring {
    Keyring::Secret(SubjectSecret::from_bytes([7; 32]))
}

impl World {
    /// A ledger whose first entry is a production root (admin threshold 2).
    pub fn new() -> Self {
        let keys = RootKeys::new(1);
        let mut w = World { keys, entries: vec![], state: State::with_keyring(keyring()), now: NOW, next_cert: 0 };
        let root = signed_root(
            &root_metadata(&w.keys, 1, next_year().plus_seconds(10 * 365 * DAY), false),
            &[&w.keys.root[0], &w.keys.root[1]],
        );
        w.append(root).unwrap();
        w
    }

    /// Appends a body: the header is derived from it, as the server does.
    pub fn append(&mut self, body: Vec<u8>) -> Result<u64, Rejection> {
        let placed = classify(&body)?;
        let digest = body_digest(&[0; 32], &body);
        let tags = self.state.keyring().tags(&placed.subjects, &digest).map_err(Rejection::Unavailable)?;
        let header = EntryHeader { kind: placed.kind, time: self.now, actor: placed.actor, tags, body_digest: digest };
        let index = self.entries.len() as u64;
        covenant_core::policy::fold(&mut self.state, index, &header, &body)?;
        self.entries.push((header, body));
        self.now = self.now.plus_seconds(1);
        Ok(index)
    }

    pub fn advance_days(&mut self, days: i64) {
        self.now = self.now.plus_seconds(days * DAY);
    }

    pub fn admin_key(&self, n: usize) -> &SigningKey {
        &self.keys.admin[n]
    }

    /// An admin action signed by admin `by`, appended.
    pub fn act(&mut self, what: ActionKind, by: usize) -> Result<u64, Rejection> {
        let body = self.action_body(what, by);
        self.append(body)
    }

    /// As [`World::act`] by admin `by`; where the action became a proposal
    /// (a first licence record, say), the other admin approves it.
    pub fn act_approved(&mut self, what: ActionKind, by: usize) -> Result<u64, Rejection> {
        let body = self.action_body(what, by);
        self.append_approved(body, by)
    }

    /// Appends an admin action's `body` signed by admin `by`; where it
    /// became a proposal, the other admin approves it.
    pub fn append_approved(&mut self, body: Vec<u8>, by: usize) -> Result<u64, Rejection> {
        let digest = envelope::Envelope::parse(&body).map(|e| Sha256Digest::of(e.payload())).unwrap();
        let index = self.append(body)?;
        if self.state.facts().proposal(&digest).is_some_and(|p| !p.in_force) {
            self.approve(digest, 1 - by)?;
        }
        Ok(index)
    }

    pub fn action_body(&self, what: ActionKind, by: usize) -> Vec<u8> {
        envelope::sign(&action(what, self.now), &[&self.keys.admin[by]])
    }

    pub fn customer(&mut self, id: &str) {
        self.act(
            ActionKind::RegisterCustomer {
                customer: id.into(),
                legal_name: format!("Ministry {id}"),
                country: "XA".into(),
            },
            0,
        )
        .unwrap();
    }

    /// Registers a deployment provisioned with version 1.0.0.
    pub fn deployment(&mut self, id: &str, customer: &str) {
        self.deployment_at(id, customer, "1.0.0");
    }

    /// Registers a deployment provisioned with `version`.
    /// Admin 1 approves where it needs the threshold (a held customer, or
    /// one whose contract would cover it at once).
    pub fn deployment_at(&mut self, id: &str, customer: &str, version: &str) {
        self.act_approved(
            ActionKind::RegisterDeployment {
                deployment: id.into(),
                customer: customer.into(),
                product: "lim".into(),
                site: site("s1"),
                provisioned_version: version.parse().unwrap(),
            },
            0,
        )
        .unwrap();
    }

    /// Registers a key for `role`/`subject` with a fresh certificate digest:
    /// admin 0 issues it, and admin 1 approves when it needs the threshold
    /// (a customer, engineer or auditor key, or a held customer's device).
    pub fn identity(&mut self, role: IdentityRole, subject: &str, signing: &SigningKey) -> Sha256Digest {
        self.scoped_identity(role, subject, signing, None).unwrap()
    }

    /// As [`World::identity`], with a scope (the customers an auditor reads,
    /// or an engineer verifies and carries for); the fold's refusal, if any.
    pub fn scoped_identity(
        &mut self,
        role: IdentityRole,
        subject: &str,
        signing: &SigningKey,
        scope: Option<Vec<String>>,
    ) -> Result<Sha256Digest, Rejection> {
        self.next_cert += 1;
        let cert = Sha256Digest::of(format!("cert {}", self.next_cert).as_bytes());
        let p = self.propose(
            ActionKind::IssueIdentity {
                role,
                subject: subject.into(),
                signing_key: signing.public(),
                certificate_sha256: cert,
                scope,
            },
            0,
        )?;
        if self.state.facts().proposal(&p).is_some_and(|p| !p.in_force) {
            self.approve(p, 1)?;
        }
        Ok(cert)
    }

    /// Sets a contract version with both admins: admin 0 acts, and admin 1
    /// approves when the version needs the threshold (a customer's first
    /// contract, or one that relaxes). Returns the index of admin 0's
    /// entry.
    pub fn contract(&mut self, customer: &str, version: u64, conditions: Vec<Condition>) -> Result<u64, Rejection> {
        let a = action(ActionKind::SetContract { contract: contract(customer, version, conditions) }, self.now);
        let digest = Sha256Digest::of(&a.to_payload_bytes());
        let index = self.append(envelope::sign(&a, &[&self.keys.admin[0]]))?;
        if self.state.facts().proposal(&digest).is_some_and(|p| !p.in_force) {
            self.approve(digest, 1)?;
        }
        Ok(index)
    }

    /// Publishes a release signed by two release keys; returns its digest.
    pub fn release(&mut self, version: &str, class: ReleaseClass, baseline: &str) -> Sha256Digest {
        let m = manifest(version, class, baseline);
        let body = envelope::sign(&m, &[&self.keys.release[0], &self.keys.release[1]]);
        self.append(body).unwrap();
        Sha256Digest::of(&m.to_payload_bytes())
    }

    /// An end-use attestation for `deployments`, signed by `signer`.
    pub fn attestation_body(
        &self,
        signer: &SigningKey,
        customer: &str,
        deployments: &[&str],
        valid_days: i64,
    ) -> Vec<u8> {
        envelope::sign(
            &attestation(customer, deployments, self.now, self.now.plus_seconds(valid_days * DAY)),
            &[signer],
        )
    }

    /// Appends an attestation; returns its payload digest.
    pub fn attest(
        &mut self,
        signer: &SigningKey,
        customer: &str,
        deployments: &[&str],
        valid_days: i64,
    ) -> Sha256Digest {
        let body = self.attestation_body(signer, customer, deployments, valid_days);
        self.append(body.clone()).unwrap();
        Sha256Digest::of(envelope::Envelope::parse(&body).unwrap().payload())
    }

    pub fn verification_body(
        &self,
        engineer: &SigningKey,
        att: Sha256Digest,
        deployment: &str,
        observed: Site,
        config: Sha256Digest,
        result: VerificationResult,
    ) -> Vec<u8> {
        let p = FieldVerification {
            attestation: att,
            deployment: deployment.into(),
            method: VerificationMethod::OnSite,
            observed_site: observed,
            observed_configuration_digest: config,
            result,
            findings: if result == VerificationResult::Fail { "inserted module found".into() } else { String::new() },
            date: self.now,
        };
        let subject = vec![
            Subject { name: format!("{ATTESTATION_SUBJECT_PREFIX}{att}"), digest: SubjectDigest { sha256: att } },
            deployment_subject(deployment),
        ];
        envelope::sign(&InTotoStatement::new(subject, p), &[engineer])
    }

    pub fn verify(&mut self, engineer: &SigningKey, att: Sha256Digest, deployment: &str, config: Sha256Digest) {
        let body = self.verification_body(engineer, att, deployment, site("s1"), config, VerificationResult::Pass);
        self.append(body).unwrap();
    }

    /// A misuse signal by `by` (an engineer or auditor key); returns the case id.
    pub fn signal(&mut self, by: &SigningKey, customer: &str, deployment: Option<&str>) -> String {
        let s = MisuseSignal {
            type_tag: SignalTag,
            schema: SchemaV1,
            about: SignalAbout { customer: customer.into(), deployment: deployment.map(str::to_owned) },
            source: SignalSource::NgoReport,
            summary: "journalists targeted from this system".into(),
            evidence: vec![Sha256Digest::of(b"report.pdf")],
            reported_at: self.now,
        };
        let index = self.append(envelope::sign(&s, &[by])).unwrap();
        format!("case-{index}")
    }

    /// Moves a case with both admins: admin 0 acts, and admin 1 approves
    /// when the move is one that needs the threshold (closing a case, or
    /// taking it back). Returns the index of admin 0's entry.
    pub fn move_case(&mut self, case: &str, to: CaseState, det: Option<Determination>) -> Result<u64, Rejection> {
        let a = action(ActionKind::CaseTransition { case: case.into(), to, determination: det }, self.now);
        let digest = Sha256Digest::of(&a.to_payload_bytes());
        let index = self.append(envelope::sign(&a, &[&self.keys.admin[0]]))?;
        if self.state.facts().proposal(&digest).is_some_and(|p| !p.in_force) {
            self.approve(digest, 1)?;
        }
        Ok(index)
    }

    /// Proposes by admin `by`; returns the proposal's digest.
    pub fn propose(&mut self, what: ActionKind, by: usize) -> Result<Sha256Digest, Rejection> {
        let a = action(what, self.now);
        let digest = Sha256Digest::of(&a.to_payload_bytes());
        self.append(envelope::sign(&a, &[&self.keys.admin[by]]))?;
        Ok(digest)
    }

    pub fn approve(&mut self, proposal: Sha256Digest, by: usize) -> Result<u64, Rejection> {
        self.act(ActionKind::Approve { proposal }, by)
    }

    /// Sets a suspension with both admins (proposal by 0, approval by 1 when needed).
    pub fn suspend(&mut self, target: SuspensionTarget, level: SuspensionLevel) {
        let p = self.propose(ActionKind::ProposeSuspension { target, level }, 0).unwrap();
        if !self.state.facts().proposal(&p).unwrap().in_force {
            self.approve(p, 1).unwrap();
        }
    }

    /// A check-in by the deployment's key.
    pub fn checkin(&self, device: &SigningKey, deployment: &str, installed: &str, baseline: &str) -> Vec<u8> {
        self.checkin_with(device, deployment, installed, baseline, BTreeMap::new(), Sha256Digest::of(b"config"))
    }

    pub fn checkin_with(
        &self,
        device: &SigningKey,
        deployment: &str,
        installed: &str,
        baseline: &str,
        software: BTreeMap<String, Sha256Digest>,
        config: Sha256Digest,
    ) -> Vec<u8> {
        let c = CheckIn {
            type_tag: CheckInTag,
            schema: SchemaV1,
            deployment: deployment.into(),
            product: "lim".into(),
            installed_version: installed.parse().unwrap(),
            installed_baseline: baseline.parse().unwrap(),
            software_digests: software,
            configuration_digest: config,
            last_checkpoint: None,
            nonce: Sha256Digest::of(format!("nonce {}", self.now).as_bytes()),
            time: self.now,
        };
        envelope::sign(&c, &[device])
    }

    /// Evaluates a check-in against the state now.
    pub fn evaluate(&self, checkin: &[u8]) -> Outcome {
        let verified = self.state.verify_checkin(checkin).unwrap();
        evaluate(&self.state, &verified, self.now).unwrap()
    }

    /// Evaluates and expects a decision.
    pub fn decide(&self, checkin: &[u8]) -> Decision {
        match self.evaluate(checkin) {
            Outcome::Decided(d) => *d,
            Outcome::Current => panic!("expected a decision, got current"),
        }
    }

    /// Signs a decision with the decision key and appends it.
    pub fn log(&mut self, d: &Decision) -> Result<u64, Rejection> {
        let body = envelope::sign(d, &[&self.keys.decision]);
        self.append(body)
    }
}

pub fn action(what: ActionKind, at: Timestamp) -> AdminAction {
    AdminAction {
        type_tag: ActionTag,
        schema: SchemaV1,
        action: what,
        why: "test".into(),
        evidence: vec![],
        issued_at: at,
    }
}

pub fn site(id: &str) -> Site {
    Site { country: "XA".into(), site_id: id.into() }
}

pub fn contract(customer: &str, version: u64, conditions: Vec<Condition>) -> Contract {
    Contract {
        id: format!("contract-{customer}"),
        version,
        customer: customer.into(),
        deployments: vec![],
        conditions,
        grant_validity_seconds: 7 * 86_400,
        compliance_contact: "compliance@vendor.example".into(),
    }
}

pub fn manifest(version: &str, class: ReleaseClass, baseline: &str) -> ReleaseManifest {
    ReleaseManifest {
        type_tag: ReleaseTag,
        schema: SchemaV1,
        product: "lim".into(),
        version: version.parse().unwrap(),
        class,
        capability_baseline: baseline.parse().unwrap(),
        artifact: Artifact {
            name: format!("lim-{version}.img"),
            sha256: Sha256Digest::of(version.as_bytes()),
            size: 5,
        },
        expected_installed_digests: Default::default(),
        released_at: NOW,
    }
}

pub fn attestation(
    customer: &str,
    deployments: &[&str],
    from: Timestamp,
    until: Timestamp,
) -> InTotoStatement<EndUseAttestation> {
    InTotoStatement::new(
        deployments.iter().map(|d| deployment_subject(d)).collect(),
        EndUseAttestation {
            customer: customer.into(),
            end_user: EndUser {
                legal_name: format!("Ministry {customer}"),
                agency_type: "law enforcement".into(),
                country: "XA".into(),
            },
            end_use: EndUse {
                category: "lawful-interception".into(),
                description: "court-ordered interception".into(),
            },
            legal_basis: "Code of Criminal Procedure s. 100a".into(),
            oversight_body: "Federal Court".into(),
            sites: vec![site("s1")],
            undertakings: Undertakings {
                no_reexport_transfer_or_relocation: true,
                no_modification: true,
                no_targeting_of_protected_groups: true,
                consent_to_audits_and_site_checks: true,
            },
            facts_unknown_to_signer: String::new(),
            signatory: Signatory { name: "A. Official".into(), title: "Director".into() },
            valid_from: from,
            valid_until: until,
        },
    )
}

/// (customer key, device key, engineer key).
pub type Keys3 = (SigningKey, SigningKey, SigningKey);

/// A customer `c` with deployment `d`, a customer key, a device key and an
/// engineer key registered; returns (customer key, device key, engineer key).
pub fn setup(w: &mut World, c: &str, d: &str, seed: u8) -> (SigningKey, SigningKey, SigningKey) {
    setup_at(w, c, d, seed, "1.0.0")
}

/// As [`setup`], with the deployment provisioned at `version`.
pub fn setup_at(w: &mut World, c: &str, d: &str, seed: u8, version: &str) -> (SigningKey, SigningKey, SigningKey) {
    w.customer(c);
    w.deployment_at(d, c, version);
    let (ck, dk, ek) = (key(seed), key(seed + 1), key(seed + 2));
    w.identity(IdentityRole::Customer, c, &ck);
    w.identity(IdentityRole::Deployment, d, &dk);
    w.identity(IdentityRole::Engineer, &format!("eng-{seed}"), &ek);
    (ck, dk, ek)
}
