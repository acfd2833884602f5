//! Runtime-governance metrics: the decision cache, grants, revocations,
//! behavioural signals and shadow evaluation.
//!
//! Data flow: the edge counts shadow differences and route-level shadow
//! overrides as it answers; the watched-file sources count reloads of the
//! grants, revocations and shadow rules files; the gauges and the cache
//! and signals counters are read from the engine and the snapshot when
//! `/metrics` is served ([`crate::app::admin`]). Every series exists from
//! the start, at 0.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::engine::Decision;

/// Labels of a decision cache lookup.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `hit` or `miss`.
    pub result: &'static str,
}

/// Labels of a reload of a watched governance file.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FileReloadLabels {
    /// `grants`, `revocations` or `shadow_policy`.
    pub file: &'static str,
    /// `ok`, `error`, or `absent` (an optional file missing: no entries).
    pub outcome: &'static str,
}

/// Labels of a shadow difference.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShadowLabels {
    /// `rules` (rules in `mode: shadow`) or `policy` (`shadow_policy`).
    pub source: &'static str,
    /// What was enforced: `allow` or `deny`.
    pub enforced: &'static str,
    /// What the shadow would have done: `allow` or `deny`.
    pub shadow: &'static str,
}

/// The governance metrics.
#[derive(Debug, Default)]
pub struct GovernanceMetrics {
    /// Decision cache lookups, by result.
    pub decision_cache: Family<ResultLabels, Counter>,
    /// Reloads of the grants, revocations and shadow rules files.
    pub file_reloads: Family<FileReloadLabels, Counter>,
    /// Grants open now.
    pub grants_active: Gauge,
    /// Grants in the grants file.
    pub grants_loaded: Gauge,
    /// Entries in the revocations file.
    pub revocations_loaded: Gauge,
    /// Identities the signals table counts now.
    pub signals_identities: Gauge,
    /// Identities dropped from the signals table to bound its memory.
    pub signals_dropped: Counter,
    /// Decisions where a shadow would have decided otherwise.
    pub shadow_differences: Family<ShadowLabels, Counter>,
    /// Denials let through because the route runs in shadow mode.
    pub route_shadow_allowed: Counter,
    /// The fleet's governance store: see [`StoreMetrics`].
    pub store: StoreMetrics,
}

/// The fleet's governance store (`governance.store`), as the replica sees
/// it; all 0 without a store.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    /// 1 while the replica is connected and current.
    pub connected: Gauge,
    /// How long the replica may have missed changes (0 while connected).
    pub staleness_seconds: crate::metrics::Seconds,
    /// Full reads of the store's state.
    pub syncs: Counter,
    /// Entries refused (each logged naming its key).
    pub refused_entries: Counter,
    /// Times the store came back empty or replaced (a new epoch).
    pub epochs: Counter,
}

impl StoreMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "governance_store_connected",
            "1 while the replica of the fleet's governance store is connected and current",
            self.connected.clone(),
        );
        registry.register(
            "governance_store_staleness_seconds",
            "How long the replica of the governance store may have missed changes: 0 while connected, else the time since the last sync",
            self.staleness_seconds.clone(),
        );
        registry.register(
            "governance_store_syncs",
            "Full reads of the governance store's revocations and grants",
            self.syncs.clone(),
        );
        registry.register(
            "governance_store_refused_entries",
            "Entries of the governance store refused (logged naming their key); their last good value stays in use",
            self.refused_entries.clone(),
        );
        registry.register(
            "governance_store_epochs",
            "Times the governance store came back empty or was replaced (a new epoch); the replica then follows it",
            self.epochs.clone(),
        );
    }
}

impl GovernanceMetrics {
    /// The metrics, registered in `registry`, every series at 0.
    pub fn register(registry: &mut Registry) -> Self {
        let m = GovernanceMetrics::default();
        registry.register(
            "decision_cache_lookups",
            "Lookups in the decision cache, by result (decisions of policies that read request.id, signals, or now or request.time other than through calendar accessors and literal instants are not looked up)",
            m.decision_cache.clone(),
        );
        registry.register(
            "governance_file_reloads",
            "Reloads of the grants, revocations and shadow rules files, by file and outcome; on error the last good content stays in use",
            m.file_reloads.clone(),
        );
        registry.register(
            "grants_active",
            "Time-bound grants open now",
            m.grants_active.clone(),
        );
        registry.register(
            "grants_loaded",
            "Time-bound grants in the grants file",
            m.grants_loaded.clone(),
        );
        registry.register(
            "revocations_loaded",
            "Entries in the revocations file",
            m.revocations_loaded.clone(),
        );
        registry.register(
            "signals_identities",
            "Identities whose behavioural signals this instance counts",
            m.signals_identities.clone(),
        );
        registry.register(
            "signals_dropped_identities",
            "Least recently seen identities dropped from the signals table to bound its memory",
            m.signals_dropped.clone(),
        );
        registry.register(
            "shadow_differences",
            "Decisions a shadow (rules in mode: shadow, or shadow_policy) would have made differently, by what was enforced and what the shadow would have done",
            m.shadow_differences.clone(),
        );
        registry.register(
            "route_shadow_allowed",
            "Denials let through because the route runs in shadow mode (celador.mode: shadow)",
            m.route_shadow_allowed.clone(),
        );
        m.store.register(registry);
        m.prime();
        m
    }

    /// Creates every series at 0.
    fn prime(&self) {
        let m = self;
        for result in ["hit", "miss"] {
            let _ = m.decision_cache.get_or_create(&ResultLabels { result });
        }
        for file in ["grants", "revocations", "shadow_policy"] {
            for outcome in ["ok", "error"] {
                let _ = m
                    .file_reloads
                    .get_or_create(&FileReloadLabels { file, outcome });
            }
        }
        for source in ["rules", "policy"] {
            for enforced in ["allow", "deny"] {
                for shadow in ["allow", "deny"] {
                    let _ = m.shadow_differences.get_or_create(&ShadowLabels {
                        source,
                        enforced,
                        shadow,
                    });
                }
            }
        }
    }

    /// Counts the shadow outcomes of `decision` that differ from it.
    pub fn record(&self, decision: &Decision) {
        for shadow in decision.shadow.iter().filter(|s| s.differs_from(decision)) {
            let outcome = |allowed: bool| if allowed { "allow" } else { "deny" };
            self.shadow_differences
                .get_or_create(&ShadowLabels {
                    source: shadow.rules.as_str(),
                    enforced: outcome(decision.allowed),
                    shadow: outcome(shadow.allowed),
                })
                .inc();
        }
    }

    /// Counts an optional governance `file` found missing (no entries).
    pub fn file_absent(&self, file: &'static str) {
        self.file_reloads
            .get_or_create(&FileReloadLabels {
                file,
                outcome: "absent",
            })
            .inc();
    }

    /// Counts a reload of a governance `file`.
    pub fn file_reload(&self, file: &'static str, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.file_reloads
            .get_or_create(&FileReloadLabels { file, outcome })
            .inc();
    }
}
