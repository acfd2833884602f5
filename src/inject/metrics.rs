//! The injector's own metrics, served at `GET /metrics` on its HTTPS port
//! (the chart's ServiceMonitor scrapes them).
//!
//! Data flow: each review's [`super::review::Outcome`] -> a counter by
//! outcome; the registry is encoded on each scrape.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::review::Outcome;

/// The label of a review's outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The injector's counters and their registry.
#[derive(Debug)]
pub struct InjectorMetrics {
    registry: Registry,
    reviews: Family<OutcomeLabels, Counter>,
}

impl Default for InjectorMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let reviews = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "celador_injector_reviews",
            "AdmissionReviews answered, by outcome (injected, skipped, refused, invalid)",
            reviews.clone(),
        );
        InjectorMetrics { registry, reviews }
    }
}

impl InjectorMetrics {
    /// Counts one answered review.
    pub fn review(&self, outcome: &Outcome) {
        let outcome = match outcome {
            Outcome::Injected => "injected",
            Outcome::Skipped(_) => "skipped",
            Outcome::Refused(_) => "refused",
            Outcome::Invalid(_) => "invalid",
        };
        self.reviews.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// The OpenMetrics text of every counter.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
