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
#[derive(Debug)]
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
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("celador");
        let policy_reloads = Family::<ReloadLabels, Counter>::default();
        let bundle_updates = Family::<BundleLabels, Counter>::default();
        let workload_api_errors = Counter::default();
        let ready = Gauge::default();
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
        Metrics {
            registry,
            policy_reloads,
            bundle_updates,
            workload_api_errors,
            ready,
        }
    }
}

impl Metrics {
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
