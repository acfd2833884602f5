//! Per-decision metrics: what was decided, why, by which rule, and how long
//! it took inside celador; and the SVID caches' hits and misses.
//!
//! Data flow: the ext_authz edge records every check here once it is
//! answered. Labels come from bounded sets only: the outcome, the stable
//! reason codes, and the names of the loaded rules (at most
//! [`MAX_RULE_LABELS`] distinct names; any further one counts as `other`).
//! Every series a loaded policy can produce exists from the start, at 0.

use std::collections::HashSet;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::engine::policy::{Effect, Policy};
use crate::engine::{Decision, Reason};

/// The most distinct rule names that get a series of their own.
pub const MAX_RULE_LABELS: usize = 1000;

/// A rule name as a label value, shared with the policy that holds it.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct RuleLabel(Arc<str>);

impl EncodeLabelValue for RuleLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, &self.0)
    }
}

/// Labels of a decision.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `allow`, `deny` or `error` (not an HTTP check).
    pub outcome: &'static str,
    /// The reason code.
    pub reason: &'static str,
    /// The deciding rule, `none`, or `other`.
    pub rule: RuleLabel,
}

/// Labels of a granted decision.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrantLabels {
    /// The grant's name, or `other` past [`MAX_RULE_LABELS`] names.
    pub grant: RuleLabel,
}

/// Labels of an SVID cache lookup.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `x509` or `jwt`.
    pub kind: &'static str,
    /// `hit` or `miss`.
    pub result: &'static str,
}

/// The decision metrics.
pub struct DecisionMetrics {
    decisions: Family<DecisionLabels, Counter>,
    latency: Histogram,
    svid_cache: Family<CacheLabels, Counter>,
    granted: Family<GrantLabels, Counter>,
    rules: RwLock<HashSet<Arc<str>>>,
    /// The grant names counted so far: they come from the grants files and
    /// the governance store, never from a request, and are bounded still.
    grants: RwLock<HashSet<Arc<str>>>,
    none: RuleLabel,
    other: RuleLabel,
}

impl std::fmt::Debug for DecisionMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionMetrics").finish_non_exhaustive()
    }
}

impl DecisionMetrics {
    /// The metrics, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = DecisionMetrics {
            decisions: Family::default(),
            // 5 µs to 160 ms.
            latency: Histogram::new(exponential_buckets(5e-6, 2.0, 16)),
            svid_cache: Family::default(),
            granted: Family::default(),
            rules: RwLock::new(HashSet::new()),
            grants: RwLock::new(HashSet::new()),
            none: RuleLabel("none".into()),
            other: RuleLabel("other".into()),
        };
        registry.register(
            "decisions",
            "Checks answered, by outcome, reason code and deciding rule",
            metrics.decisions.clone(),
        );
        registry.register(
            "granted_decisions",
            "Checks allowed by a time-bound grant, by grant name (alert on on-call access)",
            metrics.granted.clone(),
        );
        registry.register(
            "check_duration_seconds",
            "Time from a CheckRequest's arrival in celador to its answer",
            metrics.latency.clone(),
        );
        registry.register(
            "svid_cache_lookups",
            "Lookups in the verified X.509-SVID and JWT-SVID caches, by kind and result",
            metrics.svid_cache.clone(),
        );
        for reason in Reason::ALL {
            if !matches!(
                reason,
                Reason::Allowed | Reason::DeniedByRule | Reason::RuleError
            ) {
                let _ = metrics
                    .decisions
                    .get_or_create(&metrics.labels(*reason, None));
            }
        }
        // A message that cannot be read is denied, not an error.
        let _ = metrics.decisions.get_or_create(&DecisionLabels {
            outcome: "deny",
            ..metrics.labels(Reason::InvalidRequest, None)
        });
        for kind in ["x509", "jwt"] {
            for result in ["hit", "miss"] {
                let _ = metrics
                    .svid_cache
                    .get_or_create(&CacheLabels { kind, result });
            }
        }
        metrics
    }

    /// Creates, at 0, every series `policy` can produce, and admits its rule
    /// names as labels.
    pub fn prime(&self, policy: &Policy) {
        {
            let mut rules = self.rules.write().unwrap_or_else(PoisonError::into_inner);
            for rule in policy.rules() {
                if rules.len() < MAX_RULE_LABELS {
                    rules.insert(Arc::clone(&rule.name));
                }
            }
        }
        for rule in policy.rules() {
            let reasons: &[Reason] = match rule.effect {
                Effect::Allow => &[Reason::Allowed],
                Effect::Deny => &[Reason::DeniedByRule, Reason::RuleError],
            };
            for reason in reasons {
                let _ = self
                    .decisions
                    .get_or_create(&self.labels(*reason, Some(&rule.name)));
            }
        }
    }

    /// Counts `decision`, answered after `latency`.
    pub fn record(&self, decision: &Decision, latency: Duration) {
        let labels = self.labels(decision.reason, decision.rule.as_ref());
        self.decisions.get_or_create(&labels).inc();
        if decision.reason == Reason::Granted
            && let Some(grant) = &decision.grant
        {
            let grant = self.grant_label(&grant.name);
            self.granted.get_or_create(&GrantLabels { grant }).inc();
        }
        self.latency.observe(latency.as_secs_f64());
    }

    /// `name` as a label: admitted while fewer than [`MAX_RULE_LABELS`]
    /// grant names have been, `other` after.
    fn grant_label(&self, name: &Arc<str>) -> RuleLabel {
        if let Some(known) = self
            .grants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
        {
            return RuleLabel(Arc::clone(known));
        }
        let mut grants = self.grants.write().unwrap_or_else(PoisonError::into_inner);
        if grants.len() < MAX_RULE_LABELS {
            grants.insert(Arc::clone(name));
            return RuleLabel(Arc::clone(name));
        }
        self.other.clone()
    }

    /// The counter of SVID cache lookups of `kind` with `result`.
    pub fn svid_cache_counter(&self, kind: &'static str, result: &'static str) -> Counter {
        self.svid_cache
            .get_or_create(&CacheLabels { kind, result })
            .clone()
    }

    /// Counts a request that was not an HTTP check.
    pub fn record_error(&self, latency: Duration) {
        let labels = self.labels(Reason::InvalidRequest, None);
        self.decisions.get_or_create(&labels).inc();
        self.latency.observe(latency.as_secs_f64());
    }

    /// Counts a check denied for `reason` before it was decided
    /// (`overloaded`, or `invalid_request` for a message that cannot be
    /// read), answered after `latency`.
    pub fn record_refusal(&self, reason: Reason, latency: Duration) {
        let labels = DecisionLabels {
            outcome: "deny",
            ..self.labels(reason, None)
        };
        self.decisions.get_or_create(&labels).inc();
        self.latency.observe(latency.as_secs_f64());
    }

    fn labels(&self, reason: Reason, rule: Option<&Arc<str>>) -> DecisionLabels {
        let outcome = match reason {
            Reason::Allowed | Reason::Granted => "allow",
            Reason::InvalidRequest => "error",
            _ => "deny",
        };
        let rule = match rule {
            None => self.none.clone(),
            Some(name) => {
                let rules = self.rules.read().unwrap_or_else(PoisonError::into_inner);
                match rules.get(name) {
                    Some(known) => RuleLabel(Arc::clone(known)),
                    None => self.other.clone(),
                }
            }
        };
        DecisionLabels {
            outcome,
            reason: reason.as_str(),
            rule,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::identity::Identity;

    fn decision(reason: Reason, rule: Option<&str>) -> Decision {
        Decision {
            allowed: reason == Reason::Allowed,
            reason,
            rule: rule.map(Arc::from),
            detail: None,
            identity: Identity::default(),
            errors: Vec::new(),
            policy_version: "v".into(),
            ..Decision::default()
        }
    }

    #[test]
    fn granted_decisions_are_counted_by_grant_name() {
        let mut registry = Registry::default();
        let metrics = DecisionMetrics::register(&mut registry);
        let now = std::time::SystemTime::now();
        let grants = crate::engine::grants::Grants::parse(
            "grants:\n  - name: inc-9-oncall\n    identities: [\"spiffe://example.org/ns/ops/sa/oncall\"]\n    expires: 2099-01-01T00:00:00Z\n    reason: on call\n",
            std::path::Path::new("g.yaml"),
            std::time::Duration::from_secs(u64::from(u32::MAX) * 100),
            now,
        )
        .unwrap();
        let mut granted = decision(Reason::Granted, None);
        granted.allowed = true;
        granted.grant = grants.grants().first().cloned();
        for _ in 0..2 {
            metrics.record(&granted, Duration::from_micros(7));
        }
        // Past the bound, a name counts as `other`.
        for i in 0..MAX_RULE_LABELS {
            let name: Arc<str> = format!("g{i}").into();
            let _ = metrics.grant_label(&name);
        }
        assert_eq!(metrics.grant_label(&"late".into()).0.as_ref(), "other");
        assert_eq!(
            metrics.grant_label(&"inc-9-oncall".into()).0.as_ref(),
            "inc-9-oncall"
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"granted_decisions_total{grant="inc-9-oncall"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"decisions_total{outcome="allow",reason="granted",rule="none"} 2"#),
            "{text}"
        );
    }

    #[test]
    fn rule_labels_come_from_loaded_rules_and_anything_else_is_other() {
        let mut registry = Registry::default();
        let metrics = DecisionMetrics::register(&mut registry);
        let policy = Policy::parse(
            "rules:\n  - name: a\n    effect: allow\n    when: \"true\"\n  - name: d\n    effect: deny\n    when: \"false\"\n",
            std::path::Path::new("p.yaml"),
        )
        .unwrap();
        metrics.prime(&policy);
        metrics.record(
            &decision(Reason::Allowed, Some("a")),
            Duration::from_micros(7),
        );
        metrics.record(
            &decision(Reason::DeniedByRule, Some("not-loaded")),
            Duration::ZERO,
        );
        metrics.record_refusal(Reason::Overloaded, Duration::from_millis(100));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for series in [
            r#"decisions_total{outcome="allow",reason="allowed",rule="a"} 1"#,
            r#"decisions_total{outcome="deny",reason="denied_by_rule",rule="d"} 0"#,
            r#"decisions_total{outcome="deny",reason="rule_error",rule="d"} 0"#,
            r#"decisions_total{outcome="deny",reason="denied_by_rule",rule="other"} 1"#,
            r#"decisions_total{outcome="deny",reason="overloaded",rule="none"} 1"#,
            r#"decisions_total{outcome="deny",reason="invalid_request",rule="none"} 0"#,
            r#"decisions_total{outcome="error",reason="invalid_request",rule="none"} 0"#,
            "check_duration_seconds_count 3",
        ] {
            assert!(text.contains(series), "missing {series} in:\n{text}");
        }
    }
}
