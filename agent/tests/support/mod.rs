//! A vendor in memory (root keys, a ledger as a Merkle tree, checkpoints
//! signed and cosigned) and a fake server in front of it that can be told
//! to lie, for the agent's attack and power-cut tests. Keys and roots are
//! built here from fixed seeds (`docs/style.md`: reproducible fixtures).

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::Duration;

use covenant_agent::engine::{Agent, Chunks, ReportError, Settings, Transport, TransportError};
use covenant_agent::store::{AgentIdentity, Slot, SlotMeta, Store};
use covenant_core::digest::{Sha256Digest, Timestamp};
use covenant_core::envelope::{self, Envelope};
use covenant_core::keys::SigningKey;
use covenant_core::ledger::{EntryHeader, EntryKind, Keyring, SubjectSecret, body_digest, leaf_hash};
use covenant_core::merkle::{self, MemoryTree};
use covenant_core::note::{Checkpoint, NoteSigner, TlogProof};
use covenant_core::statements::*;
use covenant_proto::v1 as pb;
use covenant_storage::SimStorage;

/// 2026-11-30T00:00:00Z.
pub const NOW: Timestamp = Timestamp::from_unix(1_796_083_200);
pub const DAY: i64 = 86_400;
pub const DEPLOYMENT: &str = "lim-07";

pub fn key(n: u8) -> SigningKey {
    SigningKey::from_seed(&[n; 32])
}

/// A copy of a key (keys are deliberately not `Clone`).
pub fn copy(k: &SigningKey) -> SigningKey {
    SigningKey::from_seed(&k.to_seed())
}

/// A copy of a note signer.
pub fn copy_signer(n: &NoteSigner) -> NoteSigner {
    NoteSigner::parse_private(&n.to_private_string().unwrap()).unwrap()
}

/// The vendor's keys, a root chain and a ledger.
pub struct Vendor {
    pub root_keys: Vec<SigningKey>,
    pub release_keys: Vec<SigningKey>,
    pub decision: SigningKey,
    pub ledger: NoteSigner,
    pub witnesses: Vec<NoteSigner>,
    pub meta: RootMetadata,
    /// Root envelopes, version 1 first.
    pub chain: Vec<Vec<u8>>,
    /// (header bytes, body, salt) per entry.
    pub entries: Vec<(Vec<u8>, Vec<u8>, [u8; 32])>,
    pub tree: MemoryTree,
    pub now: Timestamp,
    pub device: SigningKey,
}

fn spec(keys: &[&SigningKey], threshold: u32) -> RoleSpec {
    RoleSpec { keys: keys.iter().map(|k| RootKey { public: k.public(), note_name: None }).collect(), threshold }
}

impl Clone for Vendor {
    fn clone(&self) -> Self {
        Vendor {
            root_keys: self.root_keys.iter().map(copy).collect(),
            release_keys: self.release_keys.iter().map(copy).collect(),
            decision: copy(&self.decision),
            ledger: copy_signer(&self.ledger),
            witnesses: self.witnesses.iter().map(copy_signer).collect(),
            meta: self.meta.clone(),
            chain: self.chain.clone(),
            entries: self.entries.clone(),
            tree: self.tree.clone(),
            now: self.now,
            device: copy(&self.device),
        }
    }
}

impl Vendor {
    /// A production root (witness 1 of 2) as entry 0.
    pub fn new() -> Self {
        Self::with_witnesses(1)
    }

    /// A production root needing `k` of its 2 witnesses, as entry 0.
    pub fn with_witnesses(k: u32) -> Self {
        let root_keys: Vec<SigningKey> = (1..=3).map(key).collect();
        let release_keys: Vec<SigningKey> = (4..=6).map(key).collect();
        let witnesses: Vec<NoteSigner> =
            (0..2).map(|i| NoteSigner::new(&format!("witness.test/w{i}"), key(20 + i)).unwrap()).collect();
        let ledger = NoteSigner::new("ledger.test/log", key(8)).unwrap();
        let admins: Vec<SigningKey> = (10..=11).map(key).collect();
        let decision = key(7);
        let meta = RootMetadata {
            type_tag: RootTag,
            schema: SchemaV1,
            version: 1,
            expires: NOW.plus_seconds(365 * DAY),
            development: false,
            roles: Roles {
                root: spec(&root_keys.iter().collect::<Vec<_>>(), 2),
                release: spec(&release_keys.iter().collect::<Vec<_>>(), 2),
                decision: spec(&[&decision], 1),
                ledger: RoleSpec {
                    keys: vec![RootKey { public: key(8).public(), note_name: Some("ledger.test/log".into()) }],
                    threshold: 1,
                },
                witness: RoleSpec {
                    keys: (0..2)
                        .map(|i| RootKey {
                            public: key(20 + i).public(),
                            note_name: Some(format!("witness.test/w{i}")),
                        })
                        .collect(),
                    threshold: k,
                },
                admin: spec(&admins.iter().collect::<Vec<_>>(), 2),
            },
        };
        let root = envelope::sign(&meta, &[&root_keys[0], &root_keys[1]]);
        let mut v = Vendor {
            root_keys,
            release_keys,
            decision,
            ledger,
            witnesses,
            meta,
            chain: vec![root.clone()],
            entries: vec![],
            tree: MemoryTree::new(),
            now: NOW,
            device: key(30),
        };
        v.append(EntryKind::Root, vec![], root);
        v
    }

    /// Rotates to a new root version whose ledger key is `new_ledger` (same
    /// log name), signed by the old and the new root keys; logged.
    pub fn rotate_ledger_key(&mut self, new_ledger: SigningKey) {
        let mut meta = self.meta.clone();
        meta.version += 1;
        meta.roles.ledger.keys[0].public = new_ledger.public();
        let root = envelope::sign(&meta, &[&self.root_keys[0], &self.root_keys[1]]);
        self.meta = meta;
        self.chain.push(root.clone());
        self.append(EntryKind::Root, vec![], root);
        self.ledger = NoteSigner::new("ledger.test/log", new_ledger).unwrap();
    }

    pub fn append(&mut self, kind: EntryKind, subjects: Vec<String>, body: Vec<u8>) -> u64 {
        let index = self.entries.len() as u64;
        let salt = [index as u8 ^ 0x5a; 32];
        // Tagged as the server tags (the agent never reads the tags).
        let digest = body_digest(&salt, &body);
        let tags = Keyring::Secret(SubjectSecret::from_bytes([7; 32])).tags(&subjects, &digest).unwrap();
        let header = EntryHeader { kind, time: self.now, actor: None, tags, body_digest: digest }.to_bytes().unwrap();
        self.tree.push_leaf(&header);
        self.entries.push((header, body, salt));
        self.now = self.now.plus_seconds(1);
        index
    }

    /// A manifest for `version` over `artifact`, signed by `signers`.
    pub fn manifest_signed(&self, version: &str, artifact: &[u8], signers: &[&SigningKey]) -> Vec<u8> {
        let v: semver::Version = version.parse().unwrap();
        let m = ReleaseManifest {
            type_tag: ReleaseTag,
            schema: SchemaV1,
            product: "lim".into(),
            version: v.clone(),
            class: ReleaseClass::Capability,
            capability_baseline: v,
            artifact: Artifact {
                name: format!("lim-{version}.img"),
                sha256: Sha256Digest::of(artifact),
                size: artifact.len() as u64,
            },
            expected_installed_digests: Default::default(),
            released_at: self.now,
        };
        envelope::sign(&m, signers)
    }

    /// Publishes a release (two release keys), logged; returns its manifest envelope.
    pub fn release(&mut self, version: &str, artifact: &[u8]) -> Vec<u8> {
        let body = self.manifest_signed(version, artifact, &[&self.release_keys[0], &self.release_keys[1]]);
        self.append(EntryKind::Release, vec![], body.clone());
        body
    }

    fn decision(
        &self,
        deployment: &str,
        verdict: Verdict,
        release: Option<Sha256Digest>,
        expires: Option<Timestamp>,
    ) -> Decision {
        let checkin = CheckIn {
            type_tag: CheckInTag,
            schema: SchemaV1,
            deployment: deployment.into(),
            product: "lim".into(),
            installed_version: "1.0.0".parse().unwrap(),
            installed_baseline: "1.0.0".parse().unwrap(),
            software_digests: Default::default(),
            configuration_digest: Sha256Digest::of(b""),
            last_checkpoint: None,
            nonce: Sha256Digest::of(format!("{}", self.now).as_bytes()),
            time: self.now,
        };
        Decision {
            type_tag: DecisionTag,
            schema: SchemaV1,
            deployment: deployment.into(),
            verdict,
            release,
            withheld_above: vec![],
            conditions: vec![],
            suspension: SuspensionLevel::None,
            checkin: envelope::sign(&checkin, &[&self.device]),
            contract: None,
            policy_version: 1,
            state_size: self.entries.len() as u64,
            issued_at: self.now,
            expires_at: expires,
            finding: None,
            courier: None,
        }
    }

    /// Logs a grant of `manifest` to `deployment`, valid `valid_for` seconds.
    pub fn grant(&mut self, deployment: &str, manifest: &[u8], valid_for: i64) -> u64 {
        let digest = Sha256Digest::of(Envelope::parse(manifest).unwrap().payload());
        let d = self.decision(deployment, Verdict::Grant, Some(digest), Some(self.now.plus_seconds(valid_for)));
        let body = envelope::sign(&d, &[&self.decision]);
        self.append(EntryKind::Grant, vec![deployment.into()], body)
    }

    /// Logs a withhold with one unmet condition.
    pub fn withhold(&mut self, deployment: &str, manifest: &[u8], reason: &str) -> u64 {
        let m = ReleaseManifest::parse(Envelope::parse(manifest).unwrap().payload()).unwrap();
        let mut d = self.decision(deployment, Verdict::Withhold, None, None);
        d.conditions = vec![ConditionResult {
            condition: "end_use_attested".into(),
            status: ConditionStatus::Unmet,
            reason: reason.into(),
        }];
        d.withheld_above = vec![WithheldRelease {
            release: Sha256Digest::of(Envelope::parse(manifest).unwrap().payload()),
            version: m.version,
            reasons: vec![reason.into()],
        }];
        let body = envelope::sign(&d, &[&self.decision]);
        self.append(EntryKind::Withhold, vec![deployment.into()], body)
    }

    /// The checkpoint of `tree`, signed by the ledger key and cosigned by
    /// the given witnesses.
    pub fn checkpoint_of(&self, tree: &MemoryTree, log: &NoteSigner, witnesses: &[&NoteSigner]) -> String {
        let mut note =
            Checkpoint { origin: log.name().into(), size: tree.size(), root_hash: tree.root(), extensions: vec![] }
                .sign(log)
                .unwrap();
        for w in witnesses {
            note.push_signature(w.cosign(note.text(), self.now.unix() as u64).unwrap());
        }
        note.to_text()
    }

    /// The freshness answer for a check-in.
    pub fn freshness(&self, deployment: &str, nonce: Sha256Digest, standing: FreshnessStanding) -> Vec<u8> {
        let f = Freshness {
            type_tag: FreshTag,
            schema: SchemaV1,
            deployment: deployment.into(),
            nonce,
            time: self.now,
            standing,
        };
        envelope::sign(&f, &[&self.decision])
    }

    /// The honest answer to `checkin` with `standing` (a decision index) and
    /// the manifest of a grant, against `tree` signed as given.
    pub fn answer_with(
        &self,
        checkin: &[u8],
        standing: Option<u64>,
        manifest: &[u8],
        tree: &MemoryTree,
        log: &NoteSigner,
        witnesses: &[&NoteSigner],
    ) -> pb::CheckInResponse {
        let c = CheckIn::parse(Envelope::parse(checkin).unwrap().payload()).unwrap();
        let mut r = pb::CheckInResponse::default();
        let Some(index) = standing else {
            r.freshness = self.freshness(&c.deployment, c.nonce, FreshnessStanding::Current);
            return r;
        };
        let size = tree.size();
        let (header, body, salt) = self.entries[index as usize].clone();
        let proof = merkle::inclusion_proof(tree, index, size).unwrap();
        let note = self.checkpoint_of(tree, log, witnesses);
        r.inclusion = Some(pb::TlogProof {
            text: TlogProof { extra: None, index, proof, checkpoint: note }.to_text().into_bytes(),
        });
        if let Some(held) = c.last_checkpoint
            && held.size > 0
            && held.size <= size
        {
            r.consistency =
                merkle::consistency_proof(tree, held.size, size).unwrap().iter().map(|h| h.to_vec()).collect();
        }
        r.freshness = self.freshness(
            &c.deployment,
            c.nonce,
            FreshnessStanding::Standing { index, leaf_hash: Sha256Digest(leaf_hash(&header)), checkpoint_size: size },
        );
        r.decision = Some(pb::LedgerEntry { index, header, body, salt: salt.to_vec() });
        r.release_manifest = manifest.to_vec();
        r
    }

    /// The honest answer against the whole ledger, cosigned by witness 0.
    pub fn answer(&self, checkin: &[u8], standing: Option<u64>, manifest: &[u8]) -> pb::CheckInResponse {
        self.answer_with(checkin, standing, manifest, &self.tree, &self.ledger, &[&self.witnesses[0]])
    }
}

/// Rewrites an answer (the attack under test).
pub type Tamper = Box<dyn FnMut(&Vendor, &[u8], pb::CheckInResponse) -> pb::CheckInResponse>;

/// A server in front of a [`Vendor`], told what stands and how to lie.
pub struct FakeServer {
    pub vendor: Vendor,
    /// The standing decision's index, if any.
    pub standing: Option<u64>,
    /// The manifest sent with a grant.
    pub manifest: Vec<u8>,
    /// Artifact bytes by release digest.
    pub artifacts: HashMap<Sha256Digest, Vec<u8>>,
    /// Bytes per chunk.
    pub chunk: usize,
    /// Rewrites each answer.
    pub tamper: Option<Tamper>,
    /// Bytes streamed after the artifact (endless data).
    pub extra: usize,
    /// The stream stalls (sends nothing more, never ends) at this offset.
    pub stall_at: Option<u64>,
    /// Offsets downloads were asked from.
    pub download_offsets: Vec<u64>,
    /// Install reports received.
    pub reports: Vec<Vec<u8>>,
    /// Answers every report with this error instead of acknowledging it.
    pub report_error: Option<ReportError>,
    /// The check-ins received.
    pub checkins: Vec<Vec<u8>>,
    /// As the real server: a deployment already at the granted version (or
    /// newer) is told `current`. Off, the grant is sent regardless.
    pub current_when_installed: bool,
}

impl FakeServer {
    pub fn new(vendor: Vendor) -> Self {
        FakeServer {
            vendor,
            standing: None,
            manifest: vec![],
            artifacts: HashMap::new(),
            chunk: 1024,
            tamper: None,
            extra: 0,
            stall_at: None,
            download_offsets: vec![],
            reports: vec![],
            report_error: None,
            checkins: vec![],
            current_when_installed: true,
        }
    }

    /// Publishes `version` with `artifact` and grants it to [`DEPLOYMENT`].
    pub fn grant(&mut self, version: &str, artifact: &[u8]) -> u64 {
        let manifest = self.vendor.release(version, artifact);
        self.artifacts.insert(Sha256Digest::of(Envelope::parse(&manifest).unwrap().payload()), artifact.to_vec());
        let index = self.vendor.grant(DEPLOYMENT, &manifest, DAY);
        self.standing = Some(index);
        self.manifest = manifest;
        index
    }
}

pub struct FakeChunks {
    data: Vec<u8>,
    at: usize,
    offset: u64,
    chunk: usize,
    stall_at: Option<u64>,
}

impl Chunks for FakeChunks {
    async fn next(&mut self) -> Result<Option<(u64, Vec<u8>)>, TransportError> {
        if self.at >= self.data.len() {
            return Ok(None);
        }
        let offset = self.offset + self.at as u64;
        let mut end = (self.at + self.chunk).min(self.data.len());
        if let Some(stall) = self.stall_at {
            if offset >= stall {
                std::future::pending::<()>().await;
            }
            end = end.min((stall - self.offset) as usize).max(self.at + 1);
        }
        let piece = self.data[self.at..end].to_vec();
        self.at = end;
        Ok(Some((offset, piece)))
    }
}

impl Transport for FakeServer {
    type Chunks = FakeChunks;

    async fn root_chain(&mut self, from: u64) -> Result<Vec<Vec<u8>>, TransportError> {
        Ok(self.vendor.chain.iter().skip(from.saturating_sub(1) as usize).cloned().collect())
    }

    async fn check_in(&mut self, checkin: Vec<u8>) -> Result<pb::CheckInResponse, TransportError> {
        self.checkins.push(checkin.clone());
        let mut standing = self.standing;
        if self.current_when_installed && !self.manifest.is_empty() {
            let c = CheckIn::parse(Envelope::parse(&checkin).unwrap().payload()).unwrap();
            let m = ReleaseManifest::parse(Envelope::parse(&self.manifest).unwrap().payload()).unwrap();
            if m.version <= c.installed_version {
                standing = None;
            }
        }
        let answer = self.vendor.answer(&checkin, standing, &self.manifest);
        Ok(match self.tamper.as_mut() {
            Some(t) => t(&self.vendor, &checkin, answer),
            None => answer,
        })
    }

    async fn download(&mut self, release: Sha256Digest, offset: u64) -> Result<FakeChunks, TransportError> {
        self.download_offsets.push(offset);
        let mut data =
            self.artifacts.get(&release).cloned().ok_or_else(|| TransportError::Network("no such release".into()))?;
        data.extend(std::iter::repeat_n(0xee, self.extra));
        let data =
            data.get(offset as usize..).ok_or_else(|| TransportError::Network("offset past the end".into()))?.to_vec();
        Ok(FakeChunks { data, at: 0, offset, chunk: self.chunk, stall_at: self.stall_at })
    }

    async fn report(&mut self, report: Vec<u8>) -> Result<(), ReportError> {
        self.reports.push(report);
        match &self.report_error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

/// A state directory on the simulated file system, provisioned with the
/// vendor's root and version 1.0.0 in slot a.
pub fn provisioned(vendor: &Vendor) -> Store<SimStorage> {
    let store = Store::new(SimStorage::new());
    store.set_root(&vendor.chain[0]).unwrap();
    store.set_identity(&AgentIdentity { deployment: DEPLOYMENT.into(), product: "lim".into() }).unwrap();
    let factory =
        SlotMeta { version: "1.0.0".parse().unwrap(), baseline: "1.0.0".parse().unwrap(), artifact: None, grant: None };
    store.set_slot(Slot::A, &factory).unwrap();
    store.set_current(Slot::A).unwrap();
    store
}

/// The agent's settings in the tests: a short stall timeout.
pub fn settings() -> Settings {
    Settings { stall: Duration::from_millis(300), ..Settings::default() }
}

/// An agent over a fresh provisioned state, calling `server`.
pub fn agent(server: FakeServer) -> Agent<SimStorage, FakeServer> {
    let store = provisioned(&server.vendor);
    let device = copy(&server.vendor.device);
    Agent::new(store, server, device, settings())
}

/// `n` bytes of a test artifact.
pub fn artifact(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// Runs a future to completion on a one-thread runtime (as the agent runs).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// Asserts nothing was installed: slot a is active with 1.0.0, slot b
/// holds nothing complete, no report is pending.
pub fn assert_untouched(agent: &Agent<SimStorage, FakeServer>) {
    let store = agent.store();
    assert_eq!(store.current().unwrap(), Slot::A);
    assert_eq!(store.installed().unwrap().version.to_string(), "1.0.0");
    assert!(store.slot(Slot::B).unwrap().is_none(), "slot b must hold nothing");
    assert_eq!(store.root().unwrap(), agent.transport().vendor.chain[0], "the trusted root is unchanged");
    assert!(store.pending_reports().unwrap().is_empty());
    assert!(agent.transport().reports.is_empty(), "no install report");
}
