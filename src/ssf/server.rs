//! The receiver's HTTPS server: `POST /events` takes a pushed SET (RFC
//! 8935), `GET /healthz` answers the kubelet, `GET /metrics` the scraper.
//!
//! Data flow: TCP, admitted by [`crate::app::accept`] (bounded per peer and
//! in total, idle connections closed first) -> rustls (the certificate
//! reloaded by [`crate::app::tls`]) -> hyper HTTP/1.1 -> the body, at most
//! [`MAX_SET_BYTES`] and within [`BODY_TIMEOUT`] -> [`Receiver::push`] ->
//! `202`, or the RFC's error JSON.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

use super::receiver::{Answer, Receiver};
use super::set::MAX_SET_BYTES;
use crate::app::accept::{self, Limits};
use crate::app::tls::{self, ReloadingCert};

/// The path transmitters push to.
pub const PUSH_PATH: &str = "/events";
/// A body slower than this is refused.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an oversized body is read (and dropped) before it is refused.
const DRAIN_BYTES: usize = 1 << 20;
const LIMITS: Limits = Limits {
    total: 4_096,
    per_peer: 256,
    first_byte: Duration::from_secs(1),
};

/// Serves `receiver` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    receiver: Arc<Receiver>,
    cert: Arc<ReloadingCert>,
    reload_every: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let Some(config) = tls::server_config(&cert, b"http/1.1") else {
        return;
    };
    let (limits, _) = LIMITS.fitting_open_files();
    let reloader = tokio::spawn(tls::reload_loop(cert, reload_every, "the signals receiver"));
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    accept::serve(
        listener,
        limits,
        shutdown,
        move |stream, peer, slot, opening| {
            let receiver = Arc::clone(&receiver);
            tls::serve_connection(
                stream,
                peer,
                acceptor.clone(),
                slot,
                opening,
                move |request| {
                    let receiver = Arc::clone(&receiver);
                    async move { route(request, &receiver).await }
                },
            )
        },
    )
    .await;
    reloader.abort();
}

async fn route(request: Request<Incoming>, receiver: &Receiver) -> Response<Full<Bytes>> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/metrics") => text(StatusCode::OK, &receiver.metrics().encode()),
        (&Method::POST, PUSH_PATH) => answer(push(request, receiver).await),
        (_, "/healthz" | "/metrics" | PUSH_PATH) => {
            text(StatusCode::METHOD_NOT_ALLOWED, "wrong method\n")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: POST /events, GET /healthz, GET /metrics\n",
        ),
    }
}

async fn push(request: Request<Incoming>, receiver: &Receiver) -> Answer {
    let header = |name: hyper::header::HeaderName| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header(hyper::header::CONTENT_TYPE);
    let authorization = header(hyper::header::AUTHORIZATION);
    // Read past the limit (to a point) before refusing, so that the answer
    // reaches a client still sending instead of a reset connection.
    let read = Limited::new(request.into_body(), DRAIN_BYTES).collect();
    let body = match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(_)) => return too_large(),
        Err(_) => {
            return Answer {
                status: 408,
                body: Some(
                    serde_json::json!({"err": "invalid_request",
                        "description": format!("the SET did not arrive within {} s", BODY_TIMEOUT.as_secs())})
                    .to_string(),
                ),
            };
        }
    };
    if body.len() > MAX_SET_BYTES {
        return too_large();
    }
    receiver
        .push(
            content_type.as_deref(),
            authorization.as_deref(),
            &body,
            SystemTime::now(),
        )
        .await
}

/// A body over the limit (or that broke off): `413` with the RFC's JSON.
fn too_large() -> Answer {
    Answer {
        status: 413,
        body: Some(
            serde_json::json!({"err": "invalid_request",
                "description": format!("the body is over {MAX_SET_BYTES} bytes, or broke off")})
            .to_string(),
        ),
    }
}

fn answer(answer: Answer) -> Response<Full<Bytes>> {
    let mut response = match answer.body {
        Some(body) => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            response
        }
        None => Response::new(Full::new(Bytes::new())),
    };
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_REQUEST);
    response
}

fn text(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text.to_owned())));
    *response.status_mut() = status;
    response
}
