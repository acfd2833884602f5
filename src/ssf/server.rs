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

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::receiver::{Answer, Receiver};
use super::set::MAX_SET_BYTES;
use crate::app::accept::{self, Limits};
use crate::app::tls::{self, ReloadingCert};

/// The path transmitters push to.
pub const PUSH_PATH: &str = "/events";
/// A body slower than this is refused.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Bodies being read at once: each may hold [`MAX_SET_BYTES`], and all of
/// them at most 8 MiB, whatever the number of connections.
const BODY_BUDGET_PERMITS: usize = 128;
/// The permits one body takes (one permit stands for [`MAX_SET_BYTES`]).
const BODY_PERMIT: u32 = 1;
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
    let mut refreshes: Vec<_> = receiver
        .key_refreshes()
        .map(|r| tokio::spawn(Arc::clone(r).run()))
        .collect();
    refreshes.extend(
        receiver
            .pollers()
            .map(|p| tokio::spawn(Arc::clone(p).run(Arc::clone(&receiver)))),
    );
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let budget = Arc::new(Semaphore::new(BODY_BUDGET_PERMITS));
    accept::serve(
        listener,
        limits,
        shutdown,
        move |stream, peer, slot, opening| {
            let receiver = Arc::clone(&receiver);
            let budget = Arc::clone(&budget);
            tls::serve_connection(
                stream,
                peer,
                acceptor.clone(),
                slot,
                opening,
                move |request| {
                    let receiver = Arc::clone(&receiver);
                    let budget = Arc::clone(&budget);
                    async move { route(request, &receiver, &budget).await }
                },
            )
        },
    )
    .await;
    reloader.abort();
    for refresh in refreshes {
        refresh.abort();
    }
}

async fn route(
    request: Request<Incoming>,
    receiver: &Receiver,
    budget: &Semaphore,
) -> Response<Full<Bytes>> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/metrics") => text(StatusCode::OK, &receiver.metrics().encode()),
        (&Method::POST, PUSH_PATH) => answer(push(request, receiver, budget).await),
        (_, "/healthz" | "/metrics" | PUSH_PATH) => {
            text(StatusCode::METHOD_NOT_ALLOWED, "wrong method\n")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: POST /events, GET /healthz, GET /metrics\n",
        ),
    }
}

async fn push(request: Request<Incoming>, receiver: &Receiver, budget: &Semaphore) -> Answer {
    let header = |name: hyper::header::HeaderName| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header(hyper::header::CONTENT_TYPE);
    let authorization = header(hyper::header::AUTHORIZATION);
    // Refused on its headers before a byte of the body is read.
    if let Some(answer) = receiver.screen(content_type.as_deref(), authorization.as_deref()) {
        return answer;
    }
    // What all bodies being read may hold at once; over it, send again.
    let Ok(_permit) = budget.try_acquire_many(BODY_PERMIT) else {
        return Answer {
            status: 503,
            body: Some(
                serde_json::json!({"description": "too many SETs are being received; send it again"})
                    .to_string(),
            ),
        };
    };
    let body = match tokio::time::timeout(BODY_TIMEOUT, read_body(request.into_body())).await {
        Ok(Some(body)) => body,
        Ok(None) => return too_large(),
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
    receiver
        .push(
            content_type.as_deref(),
            authorization.as_deref(),
            &body,
            SystemTime::now(),
        )
        .await
}

/// The body, if it is at most [`MAX_SET_BYTES`]. Only that much is kept;
/// past it the rest is read and dropped (up to [`DRAIN_BYTES`]), so that the
/// answer reaches a client still sending instead of a reset connection.
async fn read_body(mut body: Incoming) -> Option<Vec<u8>> {
    let mut kept = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.ok()?.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len());
        if total <= MAX_SET_BYTES {
            kept.extend_from_slice(&data);
        } else if total > DRAIN_BYTES {
            return None;
        }
    }
    (total <= MAX_SET_BYTES).then_some(kept)
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
