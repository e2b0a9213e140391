//! The answer to a device's signed check-in, with no transport in it: the
//! gRPC handler (`update_service`) calls [`answer`] with the bytes the
//! device sent and the server's clock, and maps a [`CheckInError`] to a
//! status in one place (`node::checkin_status`). Any other transport (an
//! engineer relaying a device's check-in from an air-gapped site) calls the
//! same function and gets exactly the answer the device would have.
//!
//! A check-in is evaluated against the current state; when the answer would
//! change what the ledger says (a new grant, a withhold with new reasons),
//! the check-in goes to the sequencer ([`Ledger::decide`]), which evaluates
//! it again in ledger order, signs the decision and logs it. Polls that
//! change nothing never reach the sequencer and never grow the ledger.

use covenant_core::digest::{Sha256Digest, Timestamp};
use covenant_core::envelope;
use covenant_core::ledger::leaf_hash;
use covenant_core::merkle::Hash;
use covenant_core::note::TlogProof;
use covenant_core::policy::{self, Logging, Outcome, PolicyError};
use covenant_core::state::Rejection;
use covenant_core::statements::{FreshTag, Freshness, FreshnessStanding, SchemaV1};

use crate::datadir::{self, SharedRegistry};
use crate::ledger::storage::Storage;
use crate::ledger::store::ReadError;
use crate::ledger::{AppendError, Ledger};
use crate::witnesses::Gathered;

/// How long a check-in answer waits for the witnesses to cosign a
/// checkpoint covering its decision: one witness round that times out
/// ([`crate::witnesses::WITNESS_TIMEOUT`]), the retry after it
/// ([`crate::witnesses::RETRY`]) and a second round, with a margin. After
/// it the answer carries the bare checkpoint, which an agent refuses and
/// retries later.
pub const WITNESS_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// What answering a check-in reads: the folded state, the ledger, the
/// witnesses' cosignatures and the decision key.
pub struct LedgerView<'a, S: Storage> {
    /// The state folded from the ledger (and the sequencer's decision key).
    pub registry: &'a SharedRegistry,
    /// The ledger the decisions are logged in.
    pub ledger: &'a Ledger<S>,
    /// The checkpoints the witnesses cosigned.
    pub cosigned: &'a Gathered,
    /// How many witnesses are configured (none: answer with the ledger's
    /// own checkpoint at once).
    pub witnesses: usize,
    /// The decision key, which signs the freshness answer.
    pub decision: Option<&'a dyn covenant_core::keys::Signer>,
}

/// The answer to a check-in, as the device receives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckInAnswer {
    /// The freshness object signed with the decision key (envelope bytes).
    pub freshness: Vec<u8>,
    /// The standing decision entry, if any.
    pub decision: Option<StandingEntry>,
    /// The entry's inclusion proof (C2SP tlog-proof text), if any.
    pub inclusion: Option<String>,
    /// A consistency proof from the checkpoint the device holds to the one
    /// the inclusion proof is against (empty if none is needed).
    pub consistency: Vec<Hash>,
    /// The granted release's manifest (envelope bytes; empty if none).
    pub release_manifest: Vec<u8>,
    /// Whether this check-in's decision was logged now (a new entry), not
    /// a standing one answered again.
    pub logged: bool,
}

/// A ledger entry as an answer carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandingEntry {
    /// Its index.
    pub index: u64,
    /// Its header bytes.
    pub header: Vec<u8>,
    /// Its body bytes.
    pub body: Vec<u8>,
    /// Its salt.
    pub salt: Vec<u8>,
}

/// Why a check-in got no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckInError {
    /// The envelope is larger than a check-in's, refused before parsing.
    #[error("the check-in envelope is {len} bytes, over the limit of {limit} (its signatures over a bounded payload)")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The check-in names a deployment other than the one asking.
    #[error("a deployment checks in for itself only")]
    AnotherDeployment,
    /// The check-in failed verification against the state.
    #[error("{0}")]
    Refused(Rejection),
    /// The check-in is dated more than a day from the server's time.
    #[error(
        "the check-in is dated {dated}, more than a day from the server's time {now}; set the device's clock \
         (the freshness answers carry the server's time) and check in again"
    )]
    Clock {
        /// The check-in's time.
        dated: Timestamp,
        /// The server's time.
        now: Timestamp,
    },
    /// The policy could not evaluate the check-in.
    #[error("{0}")]
    Policy(PolicyError),
    /// The sequencer did not log the decision.
    #[error("{0}")]
    Append(AppendError),
    /// The ledger could not be read.
    #[error("{0}")]
    Read(ReadError),
    /// This server holds no decision key.
    #[error("this server holds no decision key")]
    NoDecisionKey,
    /// The decision key (held in a token) did not sign the answer.
    #[error("{0}")]
    Sign(covenant_core::keys::SignError),
    /// The state's lock is poisoned.
    #[error("registry lock poisoned")]
    Poisoned,
}

impl From<ReadError> for CheckInError {
    fn from(e: ReadError) -> Self {
        CheckInError::Read(e)
    }
}

/// Answers `signed_checkin` (the device-signed envelope, exact bytes) sent
/// by or for `deployment` at the server's time `now`: verified against the
/// state, evaluated, the decision logged in ledger order if it changes what
/// the ledger says, and the answer signed. `courier` is the engineer who
/// carried it from an air-gapped site (`None` for the device's own call):
/// whether a decision is logged never depends on it, and a decision logged
/// names it.
pub async fn answer<S: Storage>(
    view: &LedgerView<'_, S>,
    signed_checkin: &[u8],
    deployment: &str,
    courier: Option<&str>,
    now: Timestamp,
) -> Result<CheckInAnswer, CheckInError> {
    // Before any parsing or signature work: a logged decision carries the
    // check-in's exact bytes for good.
    let limit = covenant_core::statements::MAX_CHECKIN_ENVELOPE_BYTES;
    if signed_checkin.len() > limit {
        return Err(CheckInError::TooLarge { len: signed_checkin.len(), limit });
    }
    // First against the state as it is: most check-ins change nothing.
    let (checkin, now, fast) = {
        let state = view.registry.state.read().map_err(|_| CheckInError::Poisoned)?;
        // Authorise first: a check-in naming another deployment is refused
        // as such, never with the reason its verification failed (which
        // would say whether that deployment is registered). Parsed only on
        // the refusal path, so the usual check-in pays nothing for it.
        let checkin = state.verify_checkin(signed_checkin).map_err(|why| {
            if names_another_deployment(signed_checkin, deployment) {
                CheckInError::AnotherDeployment
            } else {
                CheckInError::Refused(why)
            }
        })?;
        if checkin.deployment != deployment {
            return Err(CheckInError::AnotherDeployment);
        }
        let now = now.max(state.last_time().unwrap_or(now));
        let window = covenant_core::state::CHECKIN_WINDOW;
        if checkin.time < now.plus_seconds(-window) || checkin.time > now.plus_seconds(window) {
            return Err(CheckInError::Clock { dated: checkin.time, now });
        }
        let fast = match policy::evaluate(&state, &checkin, now).map_err(CheckInError::Policy)? {
            Outcome::Current => Some(None),
            Outcome::Decided(d) => match policy::logging(&state, &d, now) {
                Logging::Standing(i) => Some(Some(i)),
                Logging::Bounded(i) => {
                    datadir::bounded(datadir::Bounded::Decision, &checkin.deployment);
                    Some(Some(i))
                }
                Logging::Log => None,
            },
        };
        (checkin, now, fast)
    };
    let (deployment, nonce, last_checkpoint) = (checkin.deployment.clone(), checkin.nonce, checkin.last_checkpoint);
    let mut logged = false;
    let standing = match fast {
        Some(standing) => standing,
        // Then in ledger order, by the sequencer, which logs the decision.
        None => match view.ledger.decide_carried(checkin, courier.map(str::to_owned)).await {
            Ok(done) => {
                logged = true;
                Some(done.index)
            }
            Err(AppendError::Nothing(standing)) => standing,
            Err(e) => return Err(CheckInError::Append(e)),
        },
    };
    let mut answer = CheckInAnswer { logged, ..CheckInAnswer::default() };
    let freshness_standing = match standing {
        None => FreshnessStanding::Current,
        Some(index) => {
            let ledger = view.ledger;
            let (size, note) = checkpoint_covering(view, index).await;
            let header = ledger.headers(index, index + 1)?.remove(0);
            let body = ledger.body(index)?;
            let proof = ledger.inclusion_proof(index, size)?;
            answer.inclusion = Some(TlogProof { extra: None, index, proof, checkpoint: note }.to_text());
            if let Some(held) = last_checkpoint
                && held.size > 0
                && held.size <= size
            {
                answer.consistency = ledger.consistency_proof(held.size, size)?;
            }
            let release = {
                let state = view.registry.state.read().map_err(|_| CheckInError::Poisoned)?;
                let decision = state.facts().decisions_of(&deployment).iter().find(|d| d.index == index).cloned();
                decision.and_then(|d| d.release).and_then(|r| state.facts().release(&r).map(|r| r.index))
            };
            if let Some(release_index) = release {
                answer.release_manifest = ledger.body(release_index)?.body;
            }
            let leaf = leaf_hash(&header);
            answer.decision = Some(StandingEntry { index, header, body: body.body, salt: body.salt.to_vec() });
            FreshnessStanding::Standing { index, leaf_hash: Sha256Digest(leaf), checkpoint_size: size }
        }
    };
    let freshness =
        Freshness { type_tag: FreshTag, schema: SchemaV1, deployment, nonce, time: now, standing: freshness_standing };
    let key = view.decision.ok_or(CheckInError::NoDecisionKey)?;
    answer.freshness = envelope::try_sign(&freshness, &[key]).map_err(CheckInError::Sign)?;
    Ok(answer)
}

/// The checkpoint to prove an entry against: the newest one the witnesses
/// cosigned, once it covers `index` (waiting up to [`WITNESS_WAIT`] for
/// them), else the ledger's own.
async fn checkpoint_covering<S: Storage>(view: &LedgerView<'_, S>, index: u64) -> (u64, String) {
    let deadline = tokio::time::Instant::now() + WITNESS_WAIT;
    loop {
        let cosigned = view.cosigned.witnessed.read().ok().and_then(|c| c.clone());
        match cosigned {
            Some(c) if c.size > index => return (c.size, c.note),
            _ if view.witnesses > 0 && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await
            }
            _ => break,
        }
    }
    let cp = view.ledger.checkpoint();
    (cp.size, cp.note.clone())
}

/// The check-in `bytes` parses and names a deployment other than `caller`.
fn names_another_deployment(bytes: &[u8], caller: &str) -> bool {
    use covenant_core::statements::Payload as _;
    envelope::Envelope::parse(bytes)
        .ok()
        .and_then(|e| covenant_core::statements::CheckIn::parse(e.payload()).ok())
        .is_some_and(|c| c.deployment != caller)
}
