//! The admin listener: `/healthz`, `/readyz` and `/metrics` over HTTP/1.1,
//! for Kubernetes probes and Prometheus.
//!
//! Data flow: read-only views of the process: liveness (the process
//! answers), readiness (every configured trust domain has a bundle; the
//! same signal the gRPC health service reports) and the metrics registry.
//! It never sees a request that Envoy authorizes.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use std::time::SystemTime;

use crate::edge::ExtAuthz;
use crate::metrics::{Metrics, TrustDomainLabels, catch_up};

/// What the admin endpoints report on.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The edge: its engine's caches and its store (readiness, bundles).
    pub ext_authz: Arc<ExtAuthz>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The replica of the governance store, when one is configured.
    pub store_status: Option<Arc<crate::sources::fleet::StoreStatus>>,
}

/// Sets the metrics whose counts are kept elsewhere, as of now: the log
/// writers' drops, the SVID and decision caches' lookups, the grants open,
/// the signals table, readiness, the revocations in force, and each trust
/// domain's bundle expiry and age.
fn observe(state: &AdminState) {
    observe_governance(state);
    let metrics = &state.metrics;
    let (audit, log) = super::telemetry::dropped();
    metrics.observe_drops(audit, log);
    let (x509, jwt) = state.ext_authz.engine().svid_cache_stats();
    for (kind, stats) in [("x509", x509), ("jwt", jwt)] {
        for (result, total) in [("hit", stats.hits), ("miss", stats.misses)] {
            catch_up(&metrics.decisions.svid_cache_counter(kind, result), total);
        }
    }
    let now = SystemTime::now();
    let store = state.ext_authz.store();
    let seconds_between = |from: SystemTime, to: SystemTime| match to.duration_since(from) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    };
    metrics.ready.set(i64::from(store.is_ready()));
    metrics.live.bundle_expiry.clear();
    let snapshot = store.snapshot();
    metrics.revocations_loaded(snapshot.revocations.len());
    for (td, bundle) in snapshot.bundles.domains() {
        if let Some(until) = bundle.x509_authorities().iter().map(|a| a.not_after).min() {
            metrics
                .live
                .bundle_expiry
                .get_or_create(&TrustDomainLabels {
                    trust_domain: td.clone(),
                })
                .set(seconds_between(now, until));
        }
    }
    metrics.live.bundle_age.clear();
    for (td, changed) in store.bundle_changes() {
        metrics
            .live
            .bundle_age
            .get_or_create(&TrustDomainLabels { trust_domain: td })
            .set(seconds_between(changed, now));
    }
}

fn observe_governance(state: &AdminState) {
    let governance = &state.metrics.governance;
    let engine = state.ext_authz.engine();
    let stats = engine.decision_cache_stats();
    for (result, total) in [("hit", stats.hits), ("miss", stats.misses)] {
        catch_up(
            &governance
                .decision_cache
                .get_or_create(&crate::metrics::governance::ResultLabels { result }),
            total,
        );
    }
    let signals = engine.signals();
    governance
        .signals_identities
        .set(i64::try_from(signals.len()).unwrap_or(i64::MAX));
    catch_up(&governance.signals_dropped, signals.dropped());
    let snapshot = state.ext_authz.store().snapshot();
    let grants = &snapshot.grants;
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    governance
        .grants_active
        .set(count(grants.active(SystemTime::now())));
    governance.grants_loaded.set(count(grants.grants().len()));
    if let Some(status) = &state.store_status {
        governance
            .store
            .staleness_seconds
            .set(status.staleness().as_secs_f64());
        governance
            .store
            .connected
            .set(i64::from(status.connected()));
    }
}

/// The admin listener's connection bounds: the kubelet's probes and a
/// Prometheus scrape or two need few, and an idle flood from the pod
/// network must not fail the liveness probe (a restart is an outage, or
/// under fail-open, an open door).
const LIMITS: super::accept::Limits = super::accept::Limits {
    total: 1_024,
    per_peer: 256,
    first_byte: std::time::Duration::from_secs(1),
};

/// Serves the admin endpoints on `listener` until the runtime stops.
pub fn spawn(listener: TcpListener, state: AdminState) {
    let (limits, _) = LIMITS.fitting_open_files();
    tokio::spawn(super::accept::serve(
        listener,
        limits,
        std::future::pending(),
        move |stream, _, slot, opening| {
            let state = state.clone();
            async move {
                drop(opening);
                let service = hyper::service::service_fn(move |req| {
                    let _busy = slot.busy();
                    let response = respond(&req, &state);
                    async move { Ok::<_, Infallible>(response) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "admin connection ended");
                }
            }
        },
    ));
}

fn respond(req: &Request<Incoming>, state: &AdminState) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method().as_str(), req.uri().path()) {
        ("GET", "/healthz") => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        ("GET", "/readyz") => {
            let pending = state.ext_authz.store().pending();
            let store = state.store_status.as_ref().and_then(|s| s.detail());
            if pending.is_empty() {
                // A store away is said, but not unready: the files and the
                // last replica still decide (and rules can read staleness).
                let body = store.map_or_else(|| "ready\n".to_owned(), |d| format!("ready\n{d}\n"));
                (StatusCode::OK, "text/plain", body)
            } else {
                let mut body =
                    format!("waiting for the trust bundles of: {}\n", pending.join(", "));
                if let Some(reason) = state.ext_authz.store().pending_reason() {
                    body.push_str(&reason);
                    body.push('\n');
                }
                (StatusCode::SERVICE_UNAVAILABLE, "text/plain", body)
            }
        }
        ("GET", "/metrics") => {
            observe(state);
            (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                state.metrics.encode(),
            )
        }
        ("GET", _) => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}
