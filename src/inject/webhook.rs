//! The webhook's HTTPS server: `POST /inject` takes an AdmissionReview,
//! `GET /healthz` answers the kubelet.
//!
//! Data flow: TCP, admitted by [`crate::app::accept`] (bounded per peer
//! address and in total; a connection that sends nothing for a second is
//! closed; idle ones make room for new ones) -> rustls (the certificate
//! from [`ReloadingCert`]) -> hyper HTTP/1.1 -> [`super::review::answer`]
//! -> JSON. The certificate and key files are read again every
//! `reload_every`; a pair that does not load (half-written, mismatched) is
//! logged and the last good one kept.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

use super::metrics::InjectorMetrics;
use super::review::{Outcome, answer};
use super::settings::Settings;
use crate::app::accept::{self, Busy, Limits, Slot};

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
/// A TLS handshake slower than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// A request body slower than this is refused with a message.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may wait for, and take to send, a request's
/// headers: the keep-alive time between the API server's reviews (idle
/// connections are closed sooner when room is needed).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the webhook cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The certificate or key cannot be used.
    #[error("the TLS certificate {cert} and key {key} cannot be used: {reason}")]
    Tls {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The address cannot be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The serving certificate, swapped when its files change.
#[derive(Debug)]
pub struct ReloadingCert {
    current: ArcSwap<CertifiedKey>,
    cert: PathBuf,
    key: PathBuf,
    last: std::sync::Mutex<(Vec<u8>, Vec<u8>)>,
}

impl ReloadingCert {
    /// Loads the pair now; an error here stops start-up.
    pub fn load(cert: &Path, key: &Path) -> Result<ReloadingCert, WebhookError> {
        let (cert_bytes, key_bytes) = read_pair(cert, key)?;
        let certified =
            certified_key(&cert_bytes, &key_bytes).map_err(|reason| WebhookError::Tls {
                cert: cert.to_owned(),
                key: key.to_owned(),
                reason,
            })?;
        Ok(ReloadingCert {
            current: ArcSwap::from_pointee(certified),
            cert: cert.to_owned(),
            key: key.to_owned(),
            last: std::sync::Mutex::new((cert_bytes, key_bytes)),
        })
    }

    /// Reads the files again and swaps in a changed pair that loads.
    /// `Ok(true)` when the certificate changed.
    pub fn reload(&self) -> Result<bool, WebhookError> {
        let (cert_bytes, key_bytes) = read_pair(&self.cert, &self.key)?;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.0 == cert_bytes && last.1 == key_bytes {
            return Ok(false);
        }
        let certified =
            certified_key(&cert_bytes, &key_bytes).map_err(|reason| WebhookError::Tls {
                cert: self.cert.clone(),
                key: self.key.clone(),
                reason,
            })?;
        self.current.store(Arc::new(certified));
        *last = (cert_bytes, key_bytes);
        Ok(true)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), WebhookError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| WebhookError::Tls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            reason: format!("cannot read {}: {e}", path.display()),
        })
    };
    Ok((read(cert)?, read(key)?))
}

fn certified_key(cert: &[u8], key: &[u8]) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate is not PEM: {e}"))?;
    if chain.is_empty() {
        return Err("the certificate file holds no CERTIFICATE block".to_owned());
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("the key: {e}"))?;
    CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider())
        .map_err(|e| format!("the key does not suit the certificate: {e}"))
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
    let Some(tls) = tls_config(&cert) else {
        return;
    };
    let (limits, files) = LIMITS.fitting_open_files();
    tracing::info!(
        connections = limits.total,
        per_peer = limits.per_peer,
        open_files = files,
        "the webhook holds at most these many connections"
    );
    let reloader = tokio::spawn(reload_loop(cert, reload_every));
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
            connection(
                stream,
                peer,
                acceptor.clone(),
                Arc::clone(&state),
                slot,
                opening,
            )
        },
    )
    .await;
    reloader.abort();
}

fn tls_config(cert: &Arc<ReloadingCert>) -> Option<Arc<rustls::ServerConfig>> {
    let builder = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions();
    let mut tls = match builder {
        Ok(builder) => builder
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(cert) as Arc<dyn ResolvesServerCert>),
        Err(e) => {
            tracing::error!("cannot configure TLS: {e}");
            return None;
        }
    };
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Some(Arc::new(tls))
}

/// Serves one connection: TLS (busy), then HTTP/1.1 requests until it
/// closes, busy while each is answered.
async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<State>,
    slot: Slot,
    opening: Busy,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => return,
    };
    drop(opening);
    let service = hyper::service::service_fn(move |request| {
        let state = Arc::clone(&state);
        let busy = slot.busy();
        async move {
            let response = route(request, &state).await;
            drop(busy);
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(tls), service);
    if let Err(e) = connection.await {
        tracing::debug!(%peer, "connection ended: {e}");
    }
}

async fn reload_loop(cert: Arc<ReloadingCert>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let cert = Arc::clone(&cert);
        match tokio::task::spawn_blocking(move || cert.reload()).await {
            Ok(Ok(true)) => tracing::info!("the webhook's TLS certificate was reloaded"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::error!("{e}; the previous certificate stays in use"),
            Err(e) => tracing::error!("the certificate reload failed: {e}"),
        }
    }
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
