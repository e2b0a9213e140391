//! The server's data directory: `init --dev` makes one with every key in it,
//! and the server loads it. Its layout (every path in it) is
//! [`crate::layout::DataDir`]'s.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{Context as _, bail};
use covenant_core::digest::{Sha256Digest, Timestamp};
use covenant_core::envelope;
use covenant_core::keys::{PublicKey, Signer, SigningKey};
use covenant_core::ledger::{EntryKind, Keyring, SubjectSecret, SubjectTag};
use covenant_core::note::{NoteSigner, NoteVerifier};
use covenant_core::policy;
use covenant_core::root::{RootPolicy, TrustedRoot};
use covenant_core::state::{Rejection, State};
use covenant_core::statements::{
    ActionKind, ActionTag, AdminAction, IdentityRole, Payload as _, RoleSpec, Roles, RootKey, RootMetadata, RootTag,
    SchemaV1,
};

use crate::layout::{DataDir, IdentityDir};
use crate::ledger::storage::FsStorage;
use crate::ledger::{self, Clock, Ledger, LedgerConfig, NewEntry, Prepared, Request, StateMachine};
use crate::pki::Authority;
use covenant_core::ledger::EntryHeader;

/// The ledger's checkpoint origin (its key's note name) in a development set-up.
pub const DEV_LEDGER_NAME: &str = "covenant.localhost/ledger";
/// The development witness's note name.
pub const DEV_WITNESS_NAME: &str = "witness.localhost/dev";

/// The ledger format this server writes and folds, named in `DATA/FORMAT`
/// (`docs/ledger.md`, "Ledger formats"). Format 2 gave a case's closing and
/// a suspension's lifting header kinds of their own (`case_closure`,
/// `suspension_lift`) and took the subject tags off misuse signals; the
/// fold derives every header from its body, so a ledger written in
/// format 1 cannot be folded by this server. Format 3 only adds bodies (a
/// decision's `courier`, a restore's recorded loss): every format-2 ledger
/// is a format-3 ledger, and is upgraded in place when opened to append.
pub const LEDGER_FORMAT: u32 = 3;

/// The older format this server still reads, and upgrades when it appends.
pub const UPGRADABLE_FORMAT: u32 = 2;

/// The first line of `DATA/FORMAT` for format `n`.
fn format_line(n: u32) -> String {
    format!("covenant ledger format {n}")
}

/// The format a data directory names (1 when it has no `FORMAT` file).
fn read_format(dir: &Path) -> anyhow::Result<String> {
    let path = DataDir::new(dir).format();
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text.lines().next().unwrap_or_default().trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Refuses a data directory whose ledger is written in a format this
/// server cannot fold ([`LEDGER_FORMAT`], or [`UPGRADABLE_FORMAT`]), saying
/// what to do, before anything is folded or written.
pub fn check_format(dir: &Path) -> anyhow::Result<()> {
    let found = read_format(dir)?;
    if found == format_line(LEDGER_FORMAT) || found == format_line(UPGRADABLE_FORMAT) {
        return Ok(());
    }
    let written = match found.strip_prefix("covenant ledger format ") {
        Some(n) => format!("ledger format {n}"),
        None if found.is_empty() => "ledger format 1 (it has no FORMAT file)".to_owned(),
        None => format!("an unknown format ({:?})", found.chars().take(64).collect::<String>()),
    };
    bail!(
        "{} holds a ledger written in {written}; this server reads ledger formats {UPGRADABLE_FORMAT} and \
         {LEDGER_FORMAT} and writes {LEDGER_FORMAT} (docs/ledger.md, \"Ledger formats\"). Its entries' headers \
         would not match what this server derives from their bodies, so it will not open it. Keep serving it with \
         the release that wrote it (its published tiles and evidence packs stay verifiable), or start a new ledger \
         with `covenant-server init`.",
        dir.display()
    )
}

/// Before appending to a format-2 ledger: names format 3 in `DATA/FORMAT`
/// (written aside, synced and renamed into place), so that a release that
/// reads format 2 only refuses the ledger rather than meeting a body it
/// does not know. Nothing in the ledger changes.
pub fn upgrade_format(dir: &Path) -> anyhow::Result<()> {
    check_format(dir)?;
    if read_format(dir)? == format_line(LEDGER_FORMAT) {
        return Ok(());
    }
    let path = DataDir::new(dir).format();
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        std::io::Write::write_all(&mut f, format!("{}\n", format_line(LEDGER_FORMAT)).as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming {} into place", tmp.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    tracing::info!(dir = %dir.display(), "the ledger's format was upgraded from 2 to 3 (no entry changed)");
    Ok(())
}

/// The state folded from the ledger, shared between the sequencer (which
/// applies entries, and evaluates check-ins in ledger order with the
/// decision key) and the services (which read it to authorize calls).
#[derive(Debug, Clone, Default)]
pub struct SharedRegistry {
    /// The state folded so far.
    pub state: Arc<RwLock<State>>,
    /// The decision key the sequencer signs decisions with (`None`: this
    /// server decides nothing).
    pub decision_key: Option<Arc<dyn Signer>>,
    /// The decisions the sequencer signed and has yet to apply.
    pub(crate) own: OwnDecisions,
}

/// The decisions the sequencer prepared and signed, by body digest, so that
/// applying them does not verify again the signatures it just made.
#[derive(Debug, Clone, Default)]
pub struct OwnDecisions {
    by_body: std::collections::HashMap<Sha256Digest, OwnDecision>,
}

/// A decision the sequencer signed, with the check-in it decides.
#[derive(Debug, Clone)]
struct OwnDecision {
    decision: Box<covenant_core::statements::Decision>,
    checkin: covenant_core::state::SignedCheckIn,
}

impl StateMachine for SharedRegistry {
    fn prepare(&mut self, index: u64, time: Timestamp, request: Request) -> Result<Prepared, Rejection> {
        let (checkin, courier) = match request {
            Request::Append(entry) => return Ok(Prepared::Append(entry)),
            Request::Decide(to) => (to.checkin, to.courier),
        };
        let key = self
            .decision_key
            .as_ref()
            .ok_or_else(|| Rejection::Unavailable("this server holds no decision key".into()))?;
        let state = self.state.read().map_err(|_| Rejection::Unavailable("registry lock poisoned".into()))?;
        if state.size() != index {
            return Err(Rejection::Unavailable("the state is not at the ledger's size".into()));
        }
        // Verified again against exactly the state at its index: the device
        // may have been revoked since the handler verified it.
        let checkin = state.verify_checkin(checkin.bytes())?;
        // And the courier, who may have been revoked or rescoped since.
        if let Some(courier) = &courier
            && !state.may_carry(courier, &checkin.deployment)
        {
            return Err(Rejection::NotAllowed(format!(
                "{courier} is not an active engineer with {} in scope",
                checkin.deployment
            )));
        }
        let mut decision = match policy::evaluate(&state, &checkin, time)? {
            policy::Outcome::Current => return Ok(Prepared::Nothing(None)),
            policy::Outcome::Decided(d) => d,
        };
        match policy::logging(&state, &decision, time) {
            policy::Logging::Log => {}
            policy::Logging::Standing(i) => return Ok(Prepared::Nothing(Some(i))),
            policy::Logging::Bounded(i) => {
                bounded(Bounded::Decision, &checkin.deployment);
                return Ok(Prepared::Nothing(Some(i)));
            }
        }
        // Whether it is logged is decided without the courier (a carried
        // check-in logs exactly what the device's own call would), which is
        // then recorded in the body.
        decision.courier = courier;
        let body = envelope::try_sign(decision.as_ref(), &[key.as_ref()])
            .map_err(|e| Rejection::Unavailable(format!("the decision was not signed: {e}")))?;
        let placed = covenant_core::state::classify(&body)?;
        drop(state);
        self.own.by_body.insert(Sha256Digest::of(&body), OwnDecision { decision, checkin });
        Ok(Prepared::Append(NewEntry { kind: placed.kind, actor: placed.actor, subjects: placed.subjects, body }))
    }

    fn replay(&mut self, index: u64, header: &EntryHeader, body: &[u8]) -> Result<(), String> {
        let mut r = self.state.write().map_err(|_| "registry lock poisoned".to_owned())?;
        policy::fold(&mut r, index, header, body).map_err(|e| e.to_string())
    }

    fn tags(&self, subjects: &[String], body_digest: &Sha256Digest) -> Result<Vec<SubjectTag>, Rejection> {
        let state = self.state.read().map_err(|_| Rejection::Unavailable("registry lock poisoned".into()))?;
        state
            .keyring()
            .tags(subjects, body_digest)
            .map_err(|subject| Rejection::Unavailable(format!("this server holds no subject key for {subject}")))
    }

    fn apply(&mut self, index: u64, header: &EntryHeader, body: &[u8]) -> Result<(), Rejection> {
        let own = if self.own.by_body.is_empty() { None } else { self.own.by_body.remove(&Sha256Digest::of(body)) };
        let mut r = self.state.write().map_err(|_| Rejection::Unavailable("registry lock poisoned".into()))?;
        match own {
            Some(OwnDecision { decision, checkin }) => r.apply_own_decision(index, header, &decision, &checkin),
            None => policy::fold(&mut r, index, header, body),
        }
    }
}

/// What the per-deployment bound of the ledger held back (issue 16: one
/// device must not be able to grow the ledger without end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bounded {
    /// A check-in answered with the standing decision instead of a new one.
    Decision,
    /// An install report refused (its grant's outcome was already reported).
    Report,
    /// An attestation, verification or signal refused: its submitter
    /// reached its bound for the period (`node::SUBMISSION_LIMITS`).
    Submission,
}

/// Check-ins answered with the standing decision because their
/// deployment's period was full. Counted here, never in the ledger.
pub static BOUNDED_DECISIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Install reports refused because their grant's outcome was already reported.
pub static BOUNDED_REPORTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Attestations, verifications and signals refused because their submitter
/// reached its bound for the period.
pub static BOUNDED_SUBMISSIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// The Unix second of the last warning about a bound, so a flood writes one
/// line a minute to the server's log rather than one per request.
static LAST_BOUND_WARNING: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(i64::MIN);
const BOUND_WARNING_EVERY: i64 = 60;

/// Counts what a bound held back (`subject`: the deployment, or the
/// submitter), and warns at most once a minute (naming it and the totals so
/// far).
pub fn bounded(what: Bounded, subject: &str) {
    use std::sync::atomic::Ordering::Relaxed;
    match what {
        Bounded::Decision => BOUNDED_DECISIONS.fetch_add(1, Relaxed),
        Bounded::Report => BOUNDED_REPORTS.fetch_add(1, Relaxed),
        Bounded::Submission => BOUNDED_SUBMISSIONS.fetch_add(1, Relaxed),
    };
    let now = Timestamp::since_epoch(std::time::SystemTime::now()).unix();
    let last = LAST_BOUND_WARNING.load(Relaxed);
    if now.saturating_sub(last) >= BOUND_WARNING_EVERY
        && LAST_BOUND_WARNING.compare_exchange(last, now, Relaxed, Relaxed).is_ok()
    {
        tracing::warn!(
            subject,
            ?what,
            decisions_held_back = BOUNDED_DECISIONS.load(Relaxed),
            reports_refused = BOUNDED_REPORTS.load(Relaxed),
            submissions_refused = BOUNDED_SUBMISSIONS.load(Relaxed),
            "a deployment reached its bound of logged decisions for the period or reported a grant's outcome again, \
             or a submitter its bound of submissions; the rest are counted, not logged"
        );
    }
}

/// Makes a random signing key.
pub fn new_key() -> anyhow::Result<SigningKey> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(SigningKey::from_seed(&seed))
}

/// Writes a file readable only by its owner (0600), refusing to overwrite;
/// the file and its folder synced ([`covenant_storage::write_private`]).
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    Ok(covenant_storage::write_private(path, bytes)?)
}

fn write_public(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Writes a signing key's seed as hex (0600).
pub fn write_key(path: &Path, key: &SigningKey) -> anyhow::Result<()> {
    write_private(path, key.to_seed_hex().as_bytes())
}

/// Reads a signing key written by [`write_key`].
pub fn read_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text =
        zeroize::Zeroizing::new(std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?);
    SigningKey::from_seed_hex(&text).with_context(|| format!("{} is not a 64-hex-digit key", path.display()))
}

/// Reads the subject secret (`keys/subjects.key`, 64 hex digits).
pub fn read_subject_secret(dir: &Path) -> anyhow::Result<SubjectSecret> {
    let path = DataDir::new(dir).subjects_key();
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(&path).with_context(|| {
        format!("reading {} (made by `covenant-server init`; without it no header can be checked)", path.display())
    })?);
    SubjectSecret::from_hex(&text).with_context(|| format!("{} is not 64 hex digits", path.display()))
}

/// Opens the ledger of a data directory with the registry fold, which
/// checks (and makes) subject tags with the directory's subject secret,
/// on the system clock.
pub fn open_ledger(dir: &Path) -> anyhow::Result<(Ledger<FsStorage>, SharedRegistry)> {
    open_ledger_with(dir, ledger::system_clock())
}

/// As [`open_ledger`], with the ledger's time from `clock` (`serve` passes
/// the one clock it was started with).
pub fn open_ledger_with(dir: &Path, clock: Clock) -> anyhow::Result<(Ledger<FsStorage>, SharedRegistry)> {
    open_ledger_measured(dir, clock, crate::metrics::LedgerMetrics::default())
}

/// As [`open_ledger_with`], the sequencer recording into `metrics`.
pub fn open_ledger_measured(
    dir: &Path,
    clock: Clock,
    metrics: crate::metrics::LedgerMetrics,
) -> anyhow::Result<(Ledger<FsStorage>, SharedRegistry)> {
    upgrade_format(dir)?;
    let data = DataDir::new(dir);
    let signer = NoteSigner::held(&ledger_name(dir)?, ledger_signer(dir)?)?;
    let registry = registry_for(dir)?;
    let storage = Arc::new(FsStorage::new(data.ledger())?);
    let ledger =
        Ledger::open(storage, signer, registry.clone(), clock, LedgerConfig { metrics, ..ledger_config(dir)? })
            .with_context(|| format!("opening the ledger in {}", data.ledger().display()))?;
    if let Err(e) = check_losses(dir, &registry) {
        ledger.close();
        return Err(e);
    }
    Ok((ledger, registry))
}

/// The ledger configuration of a data directory: the defaults, with what
/// its witnesses are recorded to have cosigned as evidence for recovery.
/// `serve` (through [`open_ledger`]) and `check` open with exactly this.
pub fn ledger_config(dir: &Path) -> anyhow::Result<LedgerConfig> {
    let mut witnessed = crate::witnesses::recorded_cosignatures(dir)?;
    // The outside witnesses are asked which size they hold, with a question
    // signed by the ledger key (the empty tree) that they cannot cosign.
    let witnesses = crate::witnesses::load(dir)?;
    if witnesses.iter().any(|w| matches!(w.reach, crate::witnesses::Reach::Remote { .. })) {
        let signer = NoteSigner::held(&ledger_name(dir)?, ledger_signer(dir)?)?;
        let empty = covenant_core::note::Checkpoint {
            origin: signer.name().to_owned(),
            size: 0,
            root_hash: covenant_core::merkle::EMPTY_ROOT,
            extensions: Vec::new(),
        };
        let question = empty.sign(&signer)?.to_text();
        witnessed.extend(crate::witnesses::ask_held_sizes(&witnesses, &question));
    }
    // A restore that accepted a loss recorded it (in the ledger, and in
    // `accepted-losses.json` for this): what a witness cosigned of the
    // history that was lost is not evidence against the ledger restored.
    // Anything larger still is.
    let losses = accepted_losses(dir)?;
    witnessed.retain(|w| !losses.iter().any(|l| l.index < w.size && w.size <= l.witnessed_size));
    Ok(LedgerConfig { witnessed, ..LedgerConfig::default() })
}

/// A loss a restore accepted, as `accepted-losses.json` lists it; the
/// ledger's own record ([`covenant_core::state::LossFact`]) must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptedLoss {
    /// The index of the ledger entry that records it (the restored size).
    pub index: u64,
    /// The largest size a witness had cosigned of the lost history.
    pub witnessed_size: u64,
}

/// The losses restores accepted in this data directory (none without the
/// file).
pub fn accepted_losses(dir: &Path) -> anyhow::Result<Vec<AcceptedLoss>> {
    let path = DataDir::new(dir).accepted_losses();
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("{} is corrupt", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Refuses a data directory whose `accepted-losses.json` names a loss the
/// folded ledger does not record (an operator cannot set witnesses'
/// evidence aside without the ledger saying so for good).
pub fn check_losses(dir: &Path, registry: &SharedRegistry) -> anyhow::Result<()> {
    let state = registry.state.read().map_err(|_| anyhow::anyhow!("registry lock poisoned"))?;
    for loss in accepted_losses(dir)? {
        let recorded = state.losses().iter().any(|l| l.index == loss.index && l.witnessed_size == loss.witnessed_size);
        if !recorded {
            bail!(
                "{} names a loss of the entries {}..{} that the ledger does not record at entry {}: only \
                 `covenant-server restore --accept-loss` accepts a loss, and it records it in the ledger",
                DataDir::new(dir).accepted_losses().display(),
                loss.index,
                loss.witnessed_size,
                loss.index
            );
        }
    }
    Ok(())
}

/// `DATA/keys.toml`: the online keys held in a PKCS#11 token instead of
/// `keys/decision.key` and `keys/ledger.key`, each named by its URI
/// (docs/operations.md, "Keys in a PKCS#11 token"). No file: both are
/// key files.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldKeys {
    /// The decision key's URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// The ledger key's URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<String>,
    /// The CA key's URI (it issues every identity's certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
}

/// The data directory's CA: `ca.pem`, and its key in its token
/// (`keys.toml`'s `ca`) or `ca.key`.
pub fn authority(dir: &Path) -> anyhow::Result<Authority> {
    let data = DataDir::new(dir);
    let read = |path: PathBuf, name: &str| std::fs::read_to_string(path).with_context(|| format!("reading {name}"));
    let key = match held_keys(dir)?.ca {
        Some(uri) => crate::pki::CaKey::Held(token_key(&uri, "CA")?),
        None => crate::pki::CaKey::Pem(read(data.ca_key(), "ca.key")?),
    };
    Ok(Authority { cert_pem: read(data.ca_cert(), "ca.pem")?, key })
}

/// The data directory's [`HeldKeys`] (none without `keys.toml`).
pub fn held_keys(dir: &Path) -> anyhow::Result<HeldKeys> {
    let path = DataDir::new(dir).held_keys();
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("{} is not a keys file", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HeldKeys::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Opens the key a PKCS#11 URI names, for `role` (in errors).
fn token_key(uri: &str, role: &str) -> anyhow::Result<Arc<dyn Signer>> {
    let key =
        covenant_pkcs11::Pkcs11Key::open_text(uri).with_context(|| format!("opening the {role} key in its token"))?;
    Ok(key)
}

/// The decision key: in its token (`keys.toml`), else `keys/decision.key`,
/// else none (this server decides nothing).
pub fn decision_signer(dir: &Path) -> anyhow::Result<Option<Arc<dyn Signer>>> {
    if let Some(uri) = held_keys(dir)?.decision {
        return Ok(Some(token_key(&uri, "decision")?));
    }
    Ok(read_key(&DataDir::new(dir).decision_key()).ok().map(|k| Arc::new(k) as Arc<dyn Signer>))
}

/// The ledger key: in its token (`keys.toml`), else `keys/ledger.key`.
pub fn ledger_signer(dir: &Path) -> anyhow::Result<Arc<dyn Signer>> {
    if let Some(uri) = held_keys(dir)?.ledger {
        return token_key(&uri, "ledger");
    }
    Ok(Arc::new(read_key(&DataDir::new(dir).ledger_key())?))
}

/// The empty registry a data directory's ledger folds into: with its
/// subject secret (so header tags are checked) and its decision key. `serve`
/// (through [`open_ledger`]) and `check` fold with exactly this.
pub fn registry_for(dir: &Path) -> anyhow::Result<SharedRegistry> {
    let decision = decision_signer(dir)?;
    let keyring = Keyring::Secret(read_subject_secret(dir)?);
    let state = State::with_keyring(keyring);
    Ok(SharedRegistry { state: Arc::new(RwLock::new(state)), decision_key: decision, own: OwnDecisions::default() })
}

/// The ledger's note name, from `ledger.vkey`.
pub fn ledger_name(dir: &Path) -> anyhow::Result<String> {
    let vkey = std::fs::read_to_string(DataDir::new(dir).ledger_vkey())?;
    let v = covenant_core::note::NoteVerifier::parse(vkey.trim())?;
    Ok(v.name().to_owned())
}

fn now() -> Timestamp {
    (ledger::system_clock())()
}

/// What `init --dev` made.
#[derive(Debug)]
pub struct DevInit {
    /// The ledger's verifier key.
    pub ledger_vkey: String,
    /// The identity folders made.
    pub identities: Vec<PathBuf>,
}

/// `covenant-server init --dev --data DIR`.
pub fn init_dev(dir: &Path) -> anyhow::Result<DevInit> {
    init_dev_held(dir, &HeldKeys::default())
}

/// As [`init_dev`], with the decision and ledger keys `held` in a PKCS#11
/// token (the SoftHSM2 tests; every other key still in files).
pub fn init_dev_held(dir: &Path, held: &HeldKeys) -> anyhow::Result<DevInit> {
    refuse_non_empty(dir)?;
    let data = DataDir::new(dir);
    std::fs::create_dir_all(data.identities())?;
    let root_keys = [new_key()?, new_key()?, new_key()?];
    let release_keys = [new_key()?, new_key()?, new_key()?];
    let online = make_online_keys(dir, DEV_LEDGER_NAME, &["localhost", "127.0.0.1"], "Covenant development CA", held)?;
    let witness = new_key()?;
    let admins = [new_key()?, new_key()?];
    let spec = |keys: &[&SigningKey], threshold: u32, note: Option<&str>| RoleSpec {
        keys: keys.iter().map(|k| RootKey { public: k.public(), note_name: note.map(str::to_owned) }).collect(),
        threshold,
    };
    let root = RootMetadata {
        type_tag: RootTag,
        schema: SchemaV1,
        version: 1,
        expires: now().plus_seconds(365 * 86_400),
        development: true,
        roles: Roles {
            root: spec(&root_keys.iter().collect::<Vec<_>>(), 2, None),
            release: spec(&release_keys.iter().collect::<Vec<_>>(), 2, None),
            decision: RoleSpec { keys: vec![RootKey { public: online.decision, note_name: None }], threshold: 1 },
            ledger: RoleSpec {
                keys: vec![RootKey { public: *online.ledger.public_key(), note_name: Some(DEV_LEDGER_NAME.into()) }],
                threshold: 1,
            },
            witness: spec(&[&witness], 1, Some(DEV_WITNESS_NAME)),
            admin: spec(&admins.iter().collect::<Vec<_>>(), 2, None),
        },
    };
    let root_bytes = envelope::sign(&root, &[&root_keys[0], &root_keys[1]]);
    write_public(&data.root_json(), &root_bytes)?;
    for (i, k) in root_keys.iter().enumerate() {
        write_key(&data.root_key(i + 1), k)?;
    }
    for (i, k) in release_keys.iter().enumerate() {
        write_key(&data.release_key(i + 1), k)?;
    }
    // The witness's key file carries its note name (a C2SP private key).
    let witness_signer = NoteSigner::new(DEV_WITNESS_NAME, witness)?;
    write_private(
        &data.witness_dev_key(),
        witness_signer.to_private_string().context("a new witness key is in memory")?.as_bytes(),
    )?;
    write_public(&data.witness_dev_vkey(), format!("{}\n", witness_signer.cosignature_verifier()).as_bytes())?;
    let vkey = online.ledger.to_string();
    let ca = online.ca;

    // The genesis: the root, then the people's identities, signed by admin1
    // (and the auditor's approved by admin2).
    let (ledger, _) = open_ledger(dir)?;
    ledger
        .append_blocking(NewEntry { kind: EntryKind::Root, actor: None, subjects: vec![], body: root_bytes.clone() })
        .context("appending the root")?;
    let auditor_key = new_key()?;
    let people: [(&str, IdentityRole, &SigningKey); 3] = [
        ("admin1", IdentityRole::Admin, &admins[0]),
        ("admin2", IdentityRole::Admin, &admins[1]),
        ("auditor", IdentityRole::Auditor, &auditor_key),
    ];
    let mut identities = Vec::new();
    for (name, role, signing) in people {
        let issued = ca.issue_client(role, name)?;
        let action = AdminAction {
            type_tag: ActionTag,
            schema: SchemaV1,
            action: ActionKind::IssueIdentity {
                role,
                subject: name.to_owned(),
                signing_key: signing.public(),
                certificate_sha256: issued.fingerprint,
                scope: None,
            },
            why: "development set-up".into(),
            evidence: vec![],
            issued_at: now(),
        };
        let body = envelope::sign(&action, &[&admins[0]]);
        ledger
            .append_blocking(NewEntry {
                kind: EntryKind::Identity,
                actor: Some(admins[0].key_id()),
                subjects: vec![name.to_owned()],
                body,
            })
            .with_context(|| format!("registering {name}"))?;
        // An auditor's key is registered once a second admin approved it.
        if role == IdentityRole::Auditor {
            let approval = AdminAction {
                type_tag: ActionTag,
                schema: SchemaV1,
                action: ActionKind::Approve { proposal: Sha256Digest::of(&action.to_payload_bytes()) },
                why: "development set-up".into(),
                evidence: vec![],
                issued_at: now(),
            };
            ledger
                .append_blocking(NewEntry {
                    kind: EntryKind::Approval,
                    actor: Some(admins[1].key_id()),
                    subjects: vec![],
                    body: envelope::sign(&approval, &[&admins[1]]),
                })
                .with_context(|| format!("approving {name}"))?;
        }
        let folder = data.identity(name);
        std::fs::create_dir_all(folder.path())?;
        write_public(&folder.cert(), issued.cert_pem.as_bytes())?;
        write_private(&folder.key(), issued.key_pem.as_bytes())?;
        write_public(&folder.ca(), ca.cert_pem.as_bytes())?;
        write_public(&folder.root_json(), &root_bytes)?;
        write_key(&folder.signing_key(), signing)?;
        identities.push(folder.path().to_owned());
    }
    ledger.close();
    Ok(DevInit { ledger_vkey: vkey, identities })
}

/// The online keys a data directory holds in production: their public
/// halves, for the root ceremony.
#[derive(Debug)]
pub struct OnlineKeys {
    /// The decision key's public half.
    pub decision: PublicKey,
    /// The ledger's C2SP verifier key.
    pub ledger: NoteVerifier,
    /// The CA made with them.
    pub ca: Authority,
}

fn refuse_non_empty(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!("{} exists and is not empty: init never overwrites a data directory", dir.display());
    }
    Ok(())
}

/// Makes the server's own keys in `dir`: the decision and ledger keys, the
/// ledger's verifier key, a CA and the server's TLS certificate for
/// `server_names` (DNS names or IP addresses).
fn make_online_keys(
    dir: &Path,
    ledger_name: &str,
    server_names: &[&str],
    ca_name: &str,
    held: &HeldKeys,
) -> anyhow::Result<OnlineKeys> {
    let data = DataDir::new(dir);
    std::fs::create_dir_all(data.keys())?;
    write_public(&data.format(), format!("{}\n", format_line(LEDGER_FORMAT)).as_bytes())?;
    // A key named by a token's URI stays in its token: only the URI is
    // written (keys.toml); otherwise a new key file.
    let online = |uri: &Option<String>, role: &str, path: PathBuf| -> anyhow::Result<Arc<dyn Signer>> {
        match uri {
            Some(uri) => token_key(uri, role),
            None => {
                let key = new_key()?;
                write_key(&path, &key)?;
                Ok(Arc::new(key))
            }
        }
    };
    let decision = online(&held.decision, "decision", data.decision_key())?;
    let ledger_key = online(&held.ledger, "ledger", data.ledger_key())?;
    if *held != HeldKeys::default() {
        // 0600: a URI may carry its PIN (pin-value).
        write_private(&data.held_keys(), toml::to_string(held)?.as_bytes())?;
    }
    // The subject secret never leaves the server: the subject keys derived
    // from it are handed to those entitled to each subject.
    let mut secret = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(secret.as_mut()).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let secret = SubjectSecret::from_bytes(*secret);
    write_private(&data.subjects_key(), zeroize::Zeroizing::new(secret.to_hex()).as_bytes())?;
    let ledger = NoteSigner::held(ledger_name, ledger_key)
        .with_context(|| {
            format!("{ledger_name:?} is not a valid note name (use a host/path such as example.com/ledger)")
        })?
        .verifier();
    write_public(&data.ledger_vkey(), format!("{ledger}\n").as_bytes())?;
    // The decision key's public half, for `covenant root new --decision`.
    write_public(&data.decision_pub(), format!("{}\n", decision.public().to_hex()).as_bytes())?;
    let ca = match &held.ca {
        Some(uri) => Authority::create_held(ca_name, token_key(uri, "CA")?)?,
        None => Authority::create(ca_name)?,
    };
    write_public(&data.ca_cert(), ca.cert_pem.as_bytes())?;
    if let crate::pki::CaKey::Pem(pem) = &ca.key {
        write_private(&data.ca_key(), pem.as_bytes())?;
    }
    let server = ca.issue_server(server_names)?;
    write_public(&data.server_cert(), server.cert_pem.as_bytes())?;
    write_private(&data.server_key(), server.key_pem.as_bytes())?;
    Ok(OnlineKeys { decision: decision.public(), ledger, ca })
}

/// `covenant-server init --online-keys`: the first step of the production
/// ceremony. Makes only the keys the server holds; their public halves go
/// into the root, which the root-key holders write and sign offline.
pub fn init_online_keys(
    dir: &Path,
    ledger_name: &str,
    server_names: &[&str],
    held: &HeldKeys,
) -> anyhow::Result<OnlineKeys> {
    refuse_non_empty(dir)?;
    if server_names.is_empty() {
        bail!("name the server's host names or addresses with --server-name");
    }
    make_online_keys(dir, ledger_name, server_names, "Covenant CA", held)
}

/// `covenant-server init --root ROOT`: the second step. Checks that the
/// root is validly self-signed, unexpired, and lists this directory's
/// decision and ledger keys (with the ledger's note name), then appends it
/// as the ledger's genesis entry. Returns the root's version.
pub fn init_root(dir: &Path, root_path: &Path) -> anyhow::Result<u64> {
    let bytes = std::fs::read(root_path).with_context(|| format!("reading {}", root_path.display()))?;
    let data = DataDir::new(dir);
    if !data.ledger_vkey().exists() {
        bail!("{} has no online keys: run `covenant-server init --online-keys` first", dir.display());
    }
    if data.root_json().exists() || data.ledger().exists() {
        bail!("{} already has a root and a ledger; rotate the root through the ledger instead", dir.display());
    }
    let root = TrustedRoot::provision(&bytes, now(), RootPolicy { allow_development: true })
        .with_context(|| format!("{} is not a valid, fully signed root", root_path.display()))?;
    let decision = decision_signer(dir)?.context("this data directory has no decision key")?.public();
    if !root.metadata().roles.decision.keys.iter().any(|k| k.public == decision) {
        bail!("the root does not list this server's decision key {}", hex::encode(decision.to_bytes()));
    }
    let vkey = std::fs::read_to_string(data.ledger_vkey())?;
    let ours = NoteVerifier::parse(vkey.trim())?;
    if !root.ledger_verifiers()?.iter().any(|v| v.to_string() == ours.to_string()) {
        bail!("the root does not list this server's ledger key as {}", ours);
    }
    let (ledger, _) = open_ledger(dir)?;
    let appended = ledger
        .append_blocking(NewEntry { kind: EntryKind::Root, actor: None, subjects: vec![], body: bytes.clone() })
        .context("appending the root");
    ledger.close();
    appended?;
    write_public(&data.root_json(), &bytes)?;
    Ok(root.version())
}

/// `covenant-server certify`: has the CA in `dir` sign a certificate request
/// offline (the first admin's, before anyone can call the server). Writes
/// `cert.pem`, `ca.pem`, `root.json` and `registration.json` (the unsigned
/// admin action that registers the identity) into `out`; the holder checks
/// and signs the registration themselves. Returns the certificate's SHA-256 and
/// the signing key the request carries.
pub fn certify(
    dir: &Path,
    role: IdentityRole,
    subject: &str,
    csr_pem: &str,
    out: &Path,
) -> anyhow::Result<(Sha256Digest, PublicKey)> {
    let data = DataDir::new(dir);
    let ca = authority(dir)?;
    let root = std::fs::read(data.root_json()).context("reading root.json (run `init --root` first)")?;
    let (issued, signing_key) = ca.issue_from_request(csr_pem, role, subject)?;
    let out = IdentityDir::new(out);
    std::fs::create_dir_all(out.path())?;
    std::fs::write(out.cert(), &issued.cert_pem)?;
    std::fs::write(out.ca(), &ca.cert_pem)?;
    std::fs::write(out.root_json(), &root)?;
    let registration = AdminAction {
        type_tag: ActionTag,
        schema: SchemaV1,
        action: ActionKind::IssueIdentity {
            role,
            subject: subject.to_owned(),
            signing_key,
            certificate_sha256: issued.fingerprint,
            scope: None,
        },
        why: format!("{} {subject} registers the certificate the CA issued offline", role),
        evidence: vec![],
        issued_at: now(),
    };
    std::fs::write(out.registration(), registration.to_payload_bytes())?;
    Ok((issued.fingerprint, signing_key))
}

/// `covenant-server admit`: appends the first admin's self-signed
/// registration to a stopped server's ledger. It takes nothing else: an
/// admin identity registration, signed by the key it registers, while no
/// admin is registered yet. Every later action goes over the wire, signed
/// by a registered admin, so the operator of a stopped server cannot
/// record (or record again) anything else. The registry's rules apply as
/// over the wire. Returns the entry's index.
pub fn admit(dir: &Path, envelope_bytes: Vec<u8>) -> anyhow::Result<u64> {
    let envelope = envelope::Envelope::parse(&envelope_bytes)?;
    let action = AdminAction::parse(envelope.payload())?;
    let signer = envelope
        .signatures()
        .first()
        .and_then(|s| covenant_core::keys::KeyId::from_hex(&s.keyid))
        .context("the action carries no signature")?;
    match &action.action {
        ActionKind::IssueIdentity { role: IdentityRole::Admin, signing_key, .. } if signing_key.key_id() == signer => {}
        _ => bail!(
            "admit records only the first admin's own registration (an admin identity signed by the key it \
             registers); send every other action to the running server"
        ),
    }
    let (kind, subjects) = covenant_core::state::placement(&action.action);
    let (ledger, registry) = open_ledger(dir)?;
    let registered = registry
        .state
        .read()
        .map_err(|_| anyhow::anyhow!("registry lock poisoned"))?
        .identities()
        .any(|(_, i)| i.role == IdentityRole::Admin);
    if registered {
        ledger.close();
        bail!("an admin is already registered: admit is for the first admin only; send actions to the running server");
    }
    let appended = ledger.append_blocking(NewEntry { kind, actor: Some(signer), subjects, body: envelope_bytes });
    ledger.close();
    Ok(appended?.index)
}
