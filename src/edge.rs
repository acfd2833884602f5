//! The ext_authz edge: Envoy's protocol around the engine.
//!
//! Data flow: the gRPC [`server`] hands each call on the Check method to
//! the [`service`], which bounds what is read at once ([`admission`]),
//! decodes the message and passes the `CheckRequest` to
//! [`ExtAuthz::check`], which reads its attributes ([`request`]), takes the
//! current snapshot from the live-state [`Store`] (one atomic load), lets
//! the [`Engine`] decide, turns the decision into Envoy's answer
//! ([`response`]) and writes exactly one audit record ([`audit`]).
//!
//! The whole check is synchronous: there is no await point, so a caller
//! that cancels cannot cut a decision off before its audit record is
//! written. The edge owns everything the engine must not: protobuf, the
//! answer's shape, the side effect of auditing.

pub mod admission;
pub mod audit;
pub mod json_line;
pub mod request;
pub mod response;
pub mod server;
pub mod service;
pub mod trace;
pub mod trail;
pub mod undecodable;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};

use crate::engine::identity::IdentityError;
use crate::engine::request_path::PathMode;
use crate::engine::{Attributes, Decision, Engine, Reason, Snapshot};
use crate::metrics::Metrics;
use crate::store::Store;
use response::AnswerSettings;

/// What the edge is told once, at start-up.
#[derive(Debug, Clone, Default)]
pub struct EdgeSettings {
    /// How answers are shaped.
    pub answers: AnswerSettings,
    /// Request headers whose values audit records include.
    pub audit_headers: Vec<String>,
    /// Which attributes audit records hold (`audit.record`).
    pub audit_record: trail::RecordMode,
    /// How request paths are read and judged (`request.paths`).
    pub paths: PathMode,
}

/// The context extension that runs a route in shadow mode: decisions are
/// made and audited, but every request is let through.
pub const MODE_EXTENSION: &str = "celador.mode";

/// Answers Envoy's checks. Shared by every connection.
pub struct ExtAuthz {
    engine: Engine,
    store: Arc<Store>,
    /// Where decisions are counted: the edge's own handle, not the store's.
    metrics: Arc<Metrics>,
    settings: EdgeSettings,
    /// `settings.audit_headers`, each with whether its name alone makes it
    /// a credential: worked out once, not per record.
    audited: Vec<(String, bool)>,
    /// Set once, at start, when tracing is configured.
    tracing: std::sync::OnceLock<trace::Tracing>,
}

impl std::fmt::Debug for ExtAuthz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtAuthz")
            .field("engine", &self.engine)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl ExtAuthz {
    /// An edge deciding with `engine` over the live state in `store`,
    /// counting into metrics of its own (for tools and tests;
    /// [`ExtAuthz::counting_into`] shares the process's registry).
    pub fn new(engine: Engine, store: Arc<Store>, settings: EdgeSettings) -> Self {
        let metrics = Arc::new(Metrics::default());
        metrics.rules_loaded(&store.snapshot().policy);
        ExtAuthz::counting_into(engine, store, settings, metrics)
    }

    /// An edge as [`ExtAuthz::new`] makes it, counting into `metrics` (the
    /// process's registry, which the admin listener serves).
    pub fn counting_into(
        engine: Engine,
        store: Arc<Store>,
        settings: EdgeSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        let audited = settings
            .audit_headers
            .iter()
            .map(|name| (name.clone(), engine.redaction().is_secret_header(name)))
            .collect();
        ExtAuthz {
            audited,
            engine,
            store,
            metrics,
            settings,
            tracing: std::sync::OnceLock::new(),
        }
    }

    /// The metrics decisions are counted in.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Records a span per check with `tracing` from now on.
    pub fn set_tracing(&self, tracing: trace::Tracing) {
        let _ = self.tracing.set(tracing);
    }

    /// The engine that decides.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The live state checks are decided with.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Answers one `CheckRequest` and audits it. Every HTTP check gets an
    /// answer from celador itself, a denial when it cannot decide; an `Err`
    /// is only for a request that is not an HTTP check.
    pub fn check(&self, request: &CheckRequest) -> Result<CheckResponse, tonic::Status> {
        self.check_with(request, Engine::decide)
    }

    /// [`ExtAuthz::check`] with `decide` in the engine's place. A panic
    /// anywhere in deciding or answering still ends in a denial
    /// (`internal_error`) and an audit record, never a reset stream, which a
    /// fail-open Envoy would take as an allow.
    fn check_with(
        &self,
        request: &CheckRequest,
        decide: impl FnOnce(&Engine, &Snapshot, &Attributes<'_>, SystemTime) -> Decision,
    ) -> Result<CheckResponse, tonic::Status> {
        let started = Instant::now();
        let attrs = match request::attributes(request) {
            Ok(attrs) => attrs.with_paths(self.settings.paths),
            Err(e) => {
                let (reason, detail) = (Reason::InvalidRequest, e.to_string());
                audit::record_error(request, reason, &detail, started.elapsed());
                self.metrics.decisions.record_error(started.elapsed());
                return Err(tonic::Status::invalid_argument(format!(
                    "{reason}: {detail}"
                )));
            }
        };
        let now = SystemTime::now();
        let snapshot = self.store.current();
        let answers = &self.settings.answers;
        // A route in shadow mode is answered as allowed, whatever the
        // decision; the audit record says it was not enforced.
        let enforced = attrs.context.get(MODE_EXTENSION).map(String::as_str) != Some("shadow");
        let decided = catch_unwind(AssertUnwindSafe(|| {
            let decision = decide(&self.engine, &snapshot, &attrs, now);
            let response = if enforced || decision.allowed {
                response::build(&decision, &attrs, answers)
            } else {
                response::build_shadowed(&decision, &attrs, answers)
            };
            (decision, response)
        }));
        let (decision, response) = decided.unwrap_or_else(|_| {
            let failure = IdentityError::new(
                Reason::InternalError,
                "celador failed while deciding this request (a bug: its log has the panic); denied",
            );
            let decision = Decision::refused(failure, snapshot.policy.shared_version());
            let response = response::build(&decision, &attrs, answers);
            (decision, response)
        });
        let context = audit::Context {
            snapshot: &snapshot,
            enforced,
            time: now,
            latency: started.elapsed(),
            redaction: self.engine.redaction(),
            mode: self.settings.audit_record,
        };
        self.record(&decision, &attrs, context);
        self.count(&decision, enforced, started.elapsed());
        Ok(response)
    }

    /// Writes the audit record of a decision, and its span when tracing is
    /// on. A failure here is logged; the answer stands.
    fn record(&self, decision: &Decision, attrs: &Attributes<'_>, context: audit::Context<'_>) {
        let recorded = catch_unwind(AssertUnwindSafe(|| {
            audit::record(decision, attrs, &self.audited, context);
            if let Some(tracing) = self.tracing.get() {
                let end = SystemTime::now();
                tracing.record(
                    (attrs, context.redaction),
                    decision,
                    context.enforced,
                    context.time,
                    end,
                );
            }
        }));
        if recorded.is_err() {
            tracing::error!(
                request_id = %context.redaction.text(attrs.request_id()),
                "writing the audit record failed"
            );
        }
    }

    /// Counts a decision in the metrics.
    fn count(&self, decision: &Decision, enforced: bool, latency: std::time::Duration) {
        let metrics = &self.metrics;
        metrics.decisions.record(decision, latency);
        metrics.governance.record(decision);
        if !enforced && !decision.allowed {
            metrics.governance.route_shadow_allowed.inc();
        }
    }

    /// Answers a check denied before it was decided: `overloaded` when it
    /// waited past its share of its deadline, `invalid_request` when its
    /// message cannot be read. The denial is audited with what could be
    /// read of the request and counted, like any decision.
    pub fn refuse(
        &self,
        request: &undecodable::Salvaged,
        reason: Reason,
        detail: &str,
        latency: std::time::Duration,
    ) -> CheckResponse {
        // As for a decision: a failure here is logged, the answer stands.
        let recorded = catch_unwind(AssertUnwindSafe(|| {
            audit::record_refusal(request, reason, detail, latency);
            self.metrics.decisions.record_refusal(reason, latency);
        }));
        if recorded.is_err() {
            tracing::error!(%reason, "writing the audit record of a refusal failed");
        }
        response::refused(reason, &request.request_id)
    }

    /// Decides a request with the current snapshot at `now`, without
    /// answering or auditing it.
    pub fn decide(&self, attrs: &Attributes<'_>, now: SystemTime) -> Decision {
        self.engine.decide(&self.store.current(), attrs, now)
    }
}

#[cfg(test)]
mod tests;
