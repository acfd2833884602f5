//! Prometheus metrics, served on the admin listener's `/metrics`.
//!
//! Data flow: the live sources (rules file, bundle files, the Workload API)
//! count every reload and its outcome here, so a bad ConfigMap that is being
//! ignored shows up on a dashboard and not only in a log line; the ext_authz
//! edge counts every decision ([`decisions`]); gauges that describe the
//! live state (bundle expiry and age) are set when `/metrics` is read.
//! Labels come from fixed sets (`outcome`, `source`, reason codes), the
//! configured trust domains or the loaded rules' names, never from request
//! data. Every series exists from the start, at 0.

pub mod decisions;
pub mod governance;

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of a reload.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `ok` or `error`.
    pub outcome: &'static str,
}

/// Labels of a trust domain.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrustDomainLabels {
    /// The trust domain.
    pub trust_domain: String,
}

/// Labels of the rules version.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RulesLabels {
    /// The policy version (the first 16 hex digits of the file's SHA-256).
    pub version: String,
}

/// A gauge of seconds.
pub type Seconds = Gauge<f64, AtomicU64>;

/// Gauges of the live state: the rules in force and the trust bundles.
#[derive(Debug)]
pub struct LiveState {
    /// The rules version in force, as an info metric (1).
    pub rules_info: Family<RulesLabels, Gauge>,
    /// When the rules file was last (re)loaded or failed to, Unix seconds.
    pub rules_last_reload: Seconds,
    /// 1 when the last reload of the rules file succeeded.
    pub rules_last_reload_success: Gauge,
    /// Seconds until the earliest `notAfter` of a trust domain's X.509
    /// authorities (negative once passed).
    pub bundle_expiry: Family<TrustDomainLabels, Seconds>,
    /// Seconds since a trust domain's bundle last changed.
    pub bundle_age: Family<TrustDomainLabels, Seconds>,
}

impl LiveState {
    fn register(registry: &mut Registry) -> Self {
        let live = LiveState {
            rules_info: Family::default(),
            rules_last_reload: Seconds::default(),
            rules_last_reload_success: Gauge::default(),
            bundle_expiry: Family::default(),
            bundle_age: Family::default(),
        };
        registry.register(
            "rules_info",
            "The rules version in force (value 1)",
            live.rules_info.clone(),
        );
        registry.register(
            "rules_last_reload_timestamp_seconds",
            "When the rules file was last loaded, or failed to load",
            live.rules_last_reload.clone(),
        );
        registry.register(
            "rules_last_reload_success",
            "1 when the last load of the rules file succeeded, 0 when the last good rules stay in use",
            live.rules_last_reload_success.clone(),
        );
        registry.register(
            "bundle_expiry_seconds",
            "Seconds until the earliest notAfter of a trust domain's X.509 authorities",
            live.bundle_expiry.clone(),
        );
        registry.register(
            "bundle_age_seconds",
            "Seconds since a trust domain's bundle last changed",
            live.bundle_age.clone(),
        );
        live
    }
}

/// Labels of a bundle update.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BundleLabels {
    /// The trust domain.
    pub trust_domain: String,
    /// `file` or `workload_api`.
    pub source: &'static str,
    /// `ok`, `error` or `redacted`.
    pub outcome: &'static str,
}

/// Every metric celador exports.
pub struct Metrics {
    registry: Registry,
    /// Rules file reloads.
    pub policy_reloads: Family<ReloadLabels, Counter>,
    /// Trust bundle updates.
    pub bundle_updates: Family<BundleLabels, Counter>,
    /// Failed or lost Workload API streams.
    pub workload_api_errors: Counter,
    /// 1 when every configured trust domain has a bundle.
    pub ready: Gauge,
    /// Audit records dropped because their writer fell behind.
    pub audit_records_dropped: Counter,
    /// Diagnostic log lines dropped because their writer fell behind.
    pub log_lines_dropped: Counter,
    /// Decisions, check latency and the SVID caches.
    pub decisions: decisions::DecisionMetrics,
    /// Gauges of the live state.
    pub live: LiveState,
    /// The decision cache, grants, revocations, signals and shadows.
    pub governance: governance::GovernanceMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("ready", &self.ready.get())
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("celador");
        let policy_reloads = Family::<ReloadLabels, Counter>::default();
        let bundle_updates = Family::<BundleLabels, Counter>::default();
        let workload_api_errors = Counter::default();
        let ready = Gauge::default();
        let audit_records_dropped = Counter::default();
        let log_lines_dropped = Counter::default();
        registry.register(
            "policy_reloads",
            "Reloads of the rules file, by outcome; on error the last good rules stay in use",
            policy_reloads.clone(),
        );
        registry.register(
            "bundle_updates",
            "Trust bundle updates, by trust domain, source and outcome; on error the last good bundle stays in use",
            bundle_updates.clone(),
        );
        registry.register(
            "workload_api_errors",
            "Workload API connections or streams that failed or ended; the last bundles stay in use",
            workload_api_errors.clone(),
        );
        registry.register(
            "ready",
            "1 when every configured trust domain has a bundle, else 0",
            ready.clone(),
        );
        registry.register(
            "audit_records_dropped",
            "Audit records dropped because standard output fell behind; a check never waits for its record",
            audit_records_dropped.clone(),
        );
        registry.register(
            "log_lines_dropped",
            "Diagnostic log lines dropped because standard error fell behind",
            log_lines_dropped.clone(),
        );
        let decisions = decisions::DecisionMetrics::register(&mut registry);
        let live = LiveState::register(&mut registry);
        let governance = governance::GovernanceMetrics::register(&mut registry);
        let _ = policy_reloads.get_or_create(&ReloadLabels { outcome: "ok" });
        let _ = policy_reloads.get_or_create(&ReloadLabels { outcome: "error" });
        Metrics {
            registry,
            decisions,
            live,
            governance,
            policy_reloads,
            bundle_updates,
            workload_api_errors,
            ready,
            audit_records_dropped,
            log_lines_dropped,
        }
    }
}

impl Metrics {
    /// Notes how many entries the revocations file in force has.
    pub fn revocations_loaded(&self, entries: usize) {
        self.governance
            .revocations_loaded
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }

    /// Notes how many audit records and log lines the writers have dropped
    /// so far (read from them when `/metrics` is served).
    pub fn observe_drops(&self, audit: u64, log: u64) {
        catch_up(&self.audit_records_dropped, audit);
        catch_up(&self.log_lines_dropped, log);
    }

    /// The exposition in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Counts a rules file reload.
    pub fn policy_reload(&self, ok: bool) {
        self.policy_reloads
            .get_or_create(&ReloadLabels {
                outcome: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    /// Notes the rules now in force (at start and after a reload): the info
    /// metric and every decision series they can produce.
    pub fn rules_loaded(&self, policy: &crate::engine::policy::Policy) {
        self.live.rules_info.clear();
        self.live
            .rules_info
            .get_or_create(&RulesLabels {
                version: policy.version().to_owned(),
            })
            .set(1);
        self.decisions.prime(policy);
    }

    /// Notes an attempt to (re)load the rules file at `unix_seconds`.
    pub fn rules_reload_attempt(&self, ok: bool, unix_seconds: f64) {
        self.live.rules_last_reload.set(unix_seconds);
        self.live.rules_last_reload_success.set(i64::from(ok));
    }

    /// Creates, at 0, the update counters of a trust domain fed by `source`.
    pub fn trust_domain_configured(&self, trust_domain: &str, source: &'static str) {
        let outcomes: &[&'static str] = match source {
            "workload_api" => &["ok", "error", "redacted"],
            _ => &["ok", "error"],
        };
        for outcome in outcomes {
            let _ = self.bundle_updates.get_or_create(&BundleLabels {
                trust_domain: trust_domain.to_owned(),
                source,
                outcome,
            });
        }
    }

    /// Counts a bundle update.
    pub fn bundle_update(&self, trust_domain: &str, source: &'static str, outcome: &'static str) {
        self.bundle_updates
            .get_or_create(&BundleLabels {
                trust_domain: trust_domain.to_owned(),
                source,
                outcome,
            })
            .inc();
    }
}

/// Raises `counter` to `total`, a count kept elsewhere that only grows.
pub fn catch_up(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_records_are_counted_from_the_start() {
        let metrics = Metrics::default();
        let text = metrics.encode();
        assert!(
            text.contains("celador_audit_records_dropped_total 0"),
            "{text}"
        );
        assert!(text.contains("celador_log_lines_dropped_total 0"), "{text}");
        metrics.observe_drops(3, 5);
        let text = metrics.encode();
        assert!(
            text.contains("celador_audit_records_dropped_total 3"),
            "{text}"
        );
        assert!(text.contains("celador_log_lines_dropped_total 5"), "{text}");
        metrics.observe_drops(7, 5);
        assert!(
            metrics
                .encode()
                .contains("celador_audit_records_dropped_total 7")
        );
    }
}
