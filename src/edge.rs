//! The ext_authz edge: Envoy's protocol around the engine.
//!
//! Data flow: the gRPC [`server`] hands each `CheckRequest` to
//! [`ExtAuthz::check`], which reads its attributes ([`request`]), takes the
//! current snapshot from the live-state [`Store`] (one atomic load), lets
//! the [`Engine`] decide, turns the decision into Envoy's answer
//! ([`response`]) and writes exactly one audit record ([`audit`]).
//!
//! The whole check is synchronous: there is no await point, so a caller
//! that cancels cannot cut a decision off before its audit record is
//! written. The edge owns everything the engine must not: protobuf, the
//! answer's shape, the side effect of auditing.

pub mod audit;
pub mod request;
pub mod response;
pub mod server;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};

use crate::engine::{Attributes, Decision, Engine, Reason};
use crate::store::Store;
use response::HeaderValueSource;

/// What the edge is told once, at start-up.
#[derive(Debug, Clone, Default)]
pub struct EdgeSettings {
    /// Headers set on allowed requests, in order.
    pub upstream_headers: Vec<(String, HeaderValueSource)>,
    /// Headers removed from allowed requests (the JWT-SVID's header, when
    /// configured so).
    pub removed_headers: Vec<String>,
    /// Request headers whose values audit records include.
    pub audit_headers: Vec<String>,
}

/// Answers Envoy's checks. Shared by every connection.
pub struct ExtAuthz {
    engine: Engine,
    store: Arc<Store>,
    settings: EdgeSettings,
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
    /// An edge deciding with `engine` over the live state in `store`.
    pub fn new(engine: Engine, store: Arc<Store>, settings: EdgeSettings) -> Self {
        ExtAuthz {
            engine,
            store,
            settings,
        }
    }

    /// The live state checks are decided with.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Answers one `CheckRequest` and audits it. An `Err` is a request that
    /// cannot be decided; Envoy's `failure_mode_allow` decides it.
    pub fn check(&self, request: &CheckRequest) -> Result<CheckResponse, tonic::Status> {
        let started = Instant::now();
        let attrs = match Attributes::from_check_request(request) {
            Ok(attrs) => attrs,
            Err(e) => {
                let reason = Reason::InvalidRequest;
                audit::record_error(request, reason, &e.to_string(), started.elapsed());
                return Err(status(reason, &e.to_string()));
            }
        };
        let now = SystemTime::now();
        let decision = self.decide(&attrs, now);
        if decision.is_error() {
            let detail = decision.detail.as_deref().unwrap_or_default();
            audit::record_error(request, decision.reason, detail, started.elapsed());
            return Err(status(decision.reason, detail));
        }
        let response = response::build(
            &decision,
            &attrs,
            &self.settings.upstream_headers,
            &self.settings.removed_headers,
        );
        audit::record(
            &decision,
            &attrs,
            &self.settings.audit_headers,
            now,
            started.elapsed(),
        );
        Ok(response)
    }

    /// Decides a request with the current snapshot at `now`, without
    /// answering or auditing it.
    pub fn decide(&self, attrs: &Attributes<'_>, now: SystemTime) -> Decision {
        self.engine.decide(&self.store.current(), attrs, now)
    }
}

/// The gRPC status of a request that could not be decided.
fn status(reason: Reason, detail: &str) -> tonic::Status {
    let message = format!("{reason}: {detail}");
    match reason {
        Reason::BundleUnavailable => tonic::Status::unavailable(message),
        _ => tonic::Status::invalid_argument(message),
    }
}

#[cfg(test)]
mod tests;
