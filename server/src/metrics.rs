//! The server's metrics, in the Prometheus (OpenMetrics) text format, on a
//! plain-HTTP listener of their own (`serve --metrics ADDR`, loopback by
//! default) that answers `GET /metrics` and nothing else. Named after the
//! Prometheus conventions (`covenant_` prefix, base units, `_total` for
//! counters); what each means and the alerts built on them are in
//! `docs/operations.md` and `docs/alerts.yml`.
//!
//! Counters and histograms are updated where things happen (the sequencer,
//! the witnesses' task, the update service); the gauges that describe the
//! state (checkpoint age, witness lag, expiring grants, dark devices) are
//! computed at each scrape from the state itself ([`Scrape`]), so they are
//! never stale.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// What the ledger's sequencer records: cheap atomic handles, shared with
/// the registry (a default one records into nothing registered).
#[derive(Debug, Clone)]
pub struct LedgerMetrics {
    /// Entries per durable batch.
    pub batch_entries: Histogram,
    /// From taking a batch to its checkpoint being durable.
    pub batch_seconds: Histogram,
    /// Appends and decisions queued for the sequencer, not yet taken.
    pub queue_depth: Gauge,
    /// When the newest checkpoint was signed, or the ledger opened
    /// (Unix seconds).
    pub checkpoint_signed: Gauge,
    /// 1 once the sequencer stopped taking appends after a storage failure.
    pub halted: Gauge,
}

impl Default for LedgerMetrics {
    fn default() -> Self {
        LedgerMetrics {
            // 1 to 1,024 entries (the largest batch).
            batch_entries: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            // 100 µs to about 3 s.
            batch_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            queue_depth: Gauge::default(),
            checkpoint_signed: Gauge::default(),
            halted: Gauge::default(),
        }
    }
}

/// A witness, by its note name.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WitnessLabel {
    /// Its note name.
    pub witness: String,
}

/// What the witnesses' task records.
#[derive(Debug, Clone, Default)]
pub struct WitnessMetrics {
    /// The size each witness last cosigned.
    pub cosigned_size: Family<WitnessLabel, Gauge>,
    /// Cosignatures asked for and not obtained.
    pub errors: Family<WitnessLabel, Counter>,
    /// When each last failed (Unix seconds; 0: never).
    pub last_error: Family<WitnessLabel, Gauge>,
}

impl WitnessMetrics {
    /// Records a cosignature of `size` by `witness`.
    pub fn cosigned(&self, witness: &str, size: u64) {
        self.cosigned_size.get_or_create(&label(witness)).set(i64::try_from(size).unwrap_or(i64::MAX));
    }

    /// Records a cosignature `witness` did not give, at `unix` seconds.
    pub fn failed(&self, witness: &str, unix: i64) {
        self.errors.get_or_create(&label(witness)).inc();
        self.last_error.get_or_create(&label(witness)).set(unix);
    }
}

fn label(witness: &str) -> WitnessLabel {
    WitnessLabel { witness: witness.to_owned() }
}

/// How a check-in was answered.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `grant` or `withhold` (the standing decision the answer carries),
    /// `current` (no decision: nothing newer), or `refused`.
    pub outcome: &'static str,
}

/// A decision's verdict.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabel {
    /// `grant` or `withhold`.
    pub verdict: &'static str,
}

/// What one scrape reads from the server's state.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// The newest signed checkpoint's size.
    pub checkpoint_size: u64,
    /// The newest checkpoint the witnesses cosigned (0: none).
    pub witnessed_size: u64,
    /// Now, Unix seconds.
    pub now: i64,
    /// Deployments whose standing grant expires within 7 days.
    pub grants_expiring: u64,
    /// Deployments that checked in before but not within the dark window.
    pub devices_dark: u64,
    /// Registered deployments that never checked in (since the views began).
    pub devices_never_seen: u64,
}

/// Every metric, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The sequencer's.
    pub ledger: LedgerMetrics,
    /// The witnesses' task's.
    pub witnesses: WitnessMetrics,
    /// Check-ins answered, by outcome.
    pub checkins: Family<OutcomeLabel, Counter>,
    /// Decisions logged, by verdict.
    pub decisions: Family<VerdictLabel, Counter>,
    /// Download streams open.
    pub downloads_active: Gauge,
    /// Artifact bytes sent.
    pub download_bytes: Counter,
    /// Calls refused as unauthenticated or over a rate limit, process-wide
    /// (`accept::GATE_REFUSALS`).
    gate_refusals: Counter,
    checkpoint_size: Gauge,
    checkpoint_age: Gauge,
    witnessed_size: Gauge,
    witness_lag: Family<WitnessLabel, Gauge>,
    grants_expiring: Gauge,
    devices_dark: Gauge,
    devices_never_seen: Gauge,
    /// The witnesses' names, for the lag each scrape computes.
    known_witnesses: std::sync::Mutex<Vec<String>>,
}

impl Metrics {
    /// Names the witnesses the server asks, so that each has its series
    /// (at zero) before its first cosignature or failure.
    pub fn witnesses_are(&self, names: &[String]) {
        for name in names {
            let _ = self.witnesses.cosigned_size.get_or_create(&label(name));
            let _ = self.witnesses.errors.get_or_create(&label(name));
            let _ = self.witnesses.last_error.get_or_create(&label(name));
        }
        if let Ok(mut known) = self.known_witnesses.lock() {
            *known = names.to_vec();
        }
    }

    /// Every metric, registered.
    pub fn new() -> Arc<Metrics> {
        let mut r = Registry::with_prefix("covenant");
        let ledger = LedgerMetrics::default();
        let witnesses = WitnessMetrics::default();
        let m = Metrics {
            ledger,
            witnesses,
            checkins: Family::default(),
            decisions: Family::default(),
            downloads_active: Gauge::default(),
            download_bytes: Counter::default(),
            gate_refusals: Counter::default(),
            checkpoint_size: Gauge::default(),
            checkpoint_age: Gauge::default(),
            witnessed_size: Gauge::default(),
            witness_lag: Family::default(),
            grants_expiring: Gauge::default(),
            devices_dark: Gauge::default(),
            devices_never_seen: Gauge::default(),
            known_witnesses: std::sync::Mutex::default(),
            registry: Registry::default(),
        };
        r.register("checkpoint_size", "Entries in the newest signed checkpoint", m.checkpoint_size.clone());
        r.register_with_unit(
            "checkpoint_age",
            "Time since the newest checkpoint was signed (or, if none since, the ledger opened)",
            Unit::Seconds,
            m.checkpoint_age.clone(),
        );
        r.register_with_unit(
            "checkpoint_signed_timestamp",
            "When the newest checkpoint was signed (Unix time)",
            Unit::Seconds,
            m.ledger.checkpoint_signed.clone(),
        );
        r.register(
            "witnessed_size",
            "Entries in the newest checkpoint the witnesses cosigned",
            m.witnessed_size.clone(),
        );
        r.register("witness_cosigned_size", "The size each witness last cosigned", m.witnesses.cosigned_size.clone());
        r.register("witness_lag_entries", "Entries each witness has yet to cosign", m.witness_lag.clone());
        r.register("witness_errors", "Cosignatures asked for and not obtained", m.witnesses.errors.clone());
        r.register_with_unit(
            "witness_last_error_timestamp",
            "When each witness last failed to cosign (Unix time; 0 never)",
            Unit::Seconds,
            m.witnesses.last_error.clone(),
        );
        r.register("append_batch_entries", "Entries per durable batch", m.ledger.batch_entries.clone());
        r.register_with_unit(
            "append_batch_duration",
            "From taking a batch to its checkpoint being durable",
            Unit::Seconds,
            m.ledger.batch_seconds.clone(),
        );
        r.register(
            "ledger_halted",
            "1 once the sequencer stopped taking appends after a storage failure (restart to recover)",
            m.ledger.halted.clone(),
        );
        r.register(
            "gate_refusals",
            "Calls refused as unauthenticated or over a rate limit (logged at debug only)",
            m.gate_refusals.clone(),
        );
        r.register(
            "sequencer_queue_depth",
            "Appends and decisions waiting for the sequencer",
            m.ledger.queue_depth.clone(),
        );
        r.register("checkins", "Check-ins answered, by outcome", m.checkins.clone());
        r.register("decisions", "Decisions logged, by verdict", m.decisions.clone());
        r.register("downloads_active", "Download streams open", m.downloads_active.clone());
        r.register_with_unit("download", "Artifact bytes sent", Unit::Bytes, m.download_bytes.clone());
        r.register(
            "grants_expiring_7d",
            "Deployments whose standing grant expires within 7 days",
            m.grants_expiring.clone(),
        );
        r.register(
            "devices_dark",
            "Deployments that checked in before but not within 3 poll intervals",
            m.devices_dark.clone(),
        );
        r.register("devices_never_seen", "Registered deployments that never checked in", m.devices_never_seen.clone());
        Arc::new(Metrics { registry: r, ..m })
    }

    /// The text exposition, with the state's gauges set from `s` first.
    pub fn encode(&self, s: &Scrape) -> String {
        let size = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.checkpoint_size.set(size(s.checkpoint_size));
        let signed = self.ledger.checkpoint_signed.get();
        self.checkpoint_age.set(if signed > 0 { (s.now - signed).max(0) } else { 0 });
        self.witnessed_size.set(size(s.witnessed_size));
        for (name, cosigned) in self.cosigned_sizes() {
            self.witness_lag.get_or_create(&label(&name)).set((size(s.checkpoint_size) - cosigned).max(0));
        }
        self.grants_expiring.set(size(s.grants_expiring));
        self.devices_dark.set(size(s.devices_dark));
        self.devices_never_seen.set(size(s.devices_never_seen));
        let refused = crate::accept::GATE_REFUSALS.load(std::sync::atomic::Ordering::Relaxed);
        self.gate_refusals.inc_by(refused.saturating_sub(self.gate_refusals.get()));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    fn cosigned_sizes(&self) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        // A family has no iterator: the names are those `witnesses_are` gave.
        for name in self.known_witnesses.lock().map(|k| k.clone()).unwrap_or_default() {
            let size = self.witnesses.cosigned_size.get_or_create(&label(&name)).get();
            out.push((name, size));
        }
        out
    }
}
