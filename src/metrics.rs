//! Prometheus metrics, served on the admin listener's `/metrics`.
//!
//! Data flow: the live sources (rules file, bundle files, the Workload API)
//! count every reload and its outcome here, so a bad ConfigMap that is being
//! ignored shows up on a dashboard and not only in a log line. Labels come
//! from fixed sets (`outcome`, `source`) or from the configured trust domains,
//! never from request data.

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
    /// Reads the writers' drop counts, when they are installed.
    drops: std::sync::OnceLock<DropSource>,
}

/// Reads how many audit records and log lines the writers dropped so far.
pub type DropSource = Box<dyn Fn() -> (u64, u64) + Send + Sync>;

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
        Metrics {
            registry,
            policy_reloads,
            bundle_updates,
            workload_api_errors,
            ready,
            audit_records_dropped,
            log_lines_dropped,
            drops: std::sync::OnceLock::new(),
        }
    }
}

impl Metrics {
    /// Where the drop counters come from (the log writers); set once.
    pub fn count_drops_from(&self, source: DropSource) {
        let _ = self.drops.set(source);
    }

    /// The exposition in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        if let Some(drops) = self.drops.get() {
            let (audit, log) = drops();
            catch_up(&self.audit_records_dropped, audit);
            catch_up(&self.log_lines_dropped, log);
        }
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

/// Raises `counter` to `total`, which only grows.
fn catch_up(counter: &Counter, total: u64) {
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
        let total = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(3));
        let source = std::sync::Arc::clone(&total);
        metrics.count_drops_from(Box::new(move || {
            (source.load(std::sync::atomic::Ordering::Relaxed), 5)
        }));
        let text = metrics.encode();
        assert!(
            text.contains("celador_audit_records_dropped_total 3"),
            "{text}"
        );
        assert!(text.contains("celador_log_lines_dropped_total 5"), "{text}");
        total.store(7, std::sync::atomic::Ordering::Relaxed);
        assert!(
            metrics
                .encode()
                .contains("celador_audit_records_dropped_total 7")
        );
    }
}
