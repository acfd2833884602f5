//! The webhook's HTTPS server: `POST /inject` takes an AdmissionReview,
//! `GET /healthz` answers the kubelet.
//!
//! Data flow: TCP, admitted by [`crate::app::accept`] (bounded per peer
//! address and in total; a connection that sends nothing for a second is
//! closed; idle ones make room for new ones) -> rustls (the certificate
//! from [`crate::app::tls::ReloadingCert`]) -> hyper HTTP/1.1 -> [`super::review::answer`]
//! -> JSON. The certificate and key files are read again every
//! `reload_every`; a pair that does not load (half-written, mismatched) is
//! logged and the last good one kept.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

use super::metrics::InjectorMetrics;
use super::review::{Outcome, answer};
use super::settings::Settings;
use crate::app::accept::{self, Limits};
use crate::app::tls::{self, ReloadingCert, TlsError};

/// The largest AdmissionReview accepted (the API server's own object limit
/// is 3 MiB; a review carries the object and options).
pub const MAX_BODY_BYTES: usize = 8 << 20;
/// The webhook's connection bounds. An idle connection costs a socket and
/// a small task, so many are held (as the open-file limit allows); the
/// API server keeps a few keep-alive connections from each of its
/// addresses, far below the bound per peer.
pub const LIMITS: Limits = Limits {
    total: 16_384,
    per_peer: 1_024,
    first_byte: Duration::from_secs(1),
};
/// A request body slower than this is refused with a message.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the webhook cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The address cannot be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// What every connection shares: the settings and the counters.
#[derive(Debug)]
struct State {
    settings: Arc<Settings>,
    metrics: InjectorMetrics,
}

/// Serves the webhook on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    settings: Arc<Settings>,
    cert: Arc<ReloadingCert>,
    reload_every: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let Some(tls) = tls::server_config(&cert, b"http/1.1") else {
        return;
    };
    let (limits, files) = LIMITS.fitting_open_files();
    tracing::info!(
        connections = limits.total,
        per_peer = limits.per_peer,
        open_files = files,
        "the webhook holds at most these many connections"
    );
    let reloader = tokio::spawn(tls::reload_loop(cert, reload_every, "the webhook"));
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let state = Arc::new(State {
        settings,
        metrics: InjectorMetrics::default(),
    });
    accept::serve(
        listener,
        limits,
        shutdown,
        move |stream, peer, slot, opening| {
            let state = Arc::clone(&state);
            tls::serve_connection(
                stream,
                peer,
                acceptor.clone(),
                slot,
                opening,
                move |request| {
                    let state = Arc::clone(&state);
                    async move { route(request, &state).await }
                },
            )
        },
    )
    .await;
    reloader.abort();
}

async fn route(request: Request<Incoming>, state: &State) -> Response<Full<Bytes>> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/healthz") => plain(StatusCode::OK, "ok\n"),
        (&Method::GET, "/metrics") => plain(StatusCode::OK, &state.metrics.encode()),
        (&Method::POST, "/inject") => {
            // Bounded in time too: a client trickling its body would
            // otherwise hold one of the connection slots for as long as it
            // likes (the header's own limit is the server's).
            let read = Limited::new(request.into_body(), MAX_BODY_BYTES).collect();
            let body = match tokio::time::timeout(IO_TIMEOUT, read).await {
                Ok(Ok(body)) => body.to_bytes(),
                Ok(Err(e)) => {
                    return unreadable(&format!(
                        "the body cannot be read (at most {MAX_BODY_BYTES} bytes): {e}"
                    ));
                }
                Err(_) => {
                    return unreadable(&format!(
                        "the body was not received within {} s",
                        IO_TIMEOUT.as_secs()
                    ));
                }
            };
            let (review, outcome) = answer(&body, &state.settings);
            log(&review, &outcome);
            state.metrics.review(&outcome);
            review_json(&review)
        }
        (_, "/inject" | "/healthz" | "/metrics") => {
            plain(StatusCode::METHOD_NOT_ALLOWED, "wrong method\n")
        }
        _ => plain(
            StatusCode::NOT_FOUND,
            "not found: POST /inject, GET /healthz, GET /metrics\n",
        ),
    }
}

/// The answer to a review whose body could not be read.
fn unreadable(message: &str) -> Response<Full<Bytes>> {
    tracing::warn!("{message}");
    review_json(
        &kube_core::admission::AdmissionResponse::invalid(format!("celador inject: {message}"))
            .into_review(),
    )
}

fn log(
    review: &kube_core::admission::AdmissionReview<kube_core::DynamicObject>,
    outcome: &Outcome,
) {
    let uid = review.response.as_ref().map_or("", |r| r.uid.as_str());
    match outcome {
        Outcome::Injected => tracing::info!(uid, "injected"),
        Outcome::Skipped(reason) => tracing::info!(uid, reason, "skipped"),
        Outcome::Refused(message) => tracing::warn!(uid, message, "refused"),
        Outcome::Invalid(message) => tracing::warn!(message, "invalid review"),
    }
}

fn review_json(
    review: &kube_core::admission::AdmissionReview<kube_core::DynamicObject>,
) -> Response<Full<Bytes>> {
    match super::review::encode(review) {
        Ok(body) => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot write the review: {e}\n"),
        ),
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text.to_owned())));
    *response.status_mut() = status;
    response
}

/// Binds `address`.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, WebhookError> {
    accept::bind(address).map_err(|source| WebhookError::Bind { address, source })
}
