//! TLS for celador's HTTPS servers (the admission webhook, the signals
//! receiver): the serving certificate and key, read again on a schedule so
//! that a rotated Secret is served without a restart.
//!
//! Data flow: the files -> [`ReloadingCert::load`] at start (an error stops
//! start-up) -> [`reload_loop`] swaps in a changed pair that loads; a pair
//! that does not (half-written, mismatched) is logged and the last good one
//! kept -> rustls asks [`ReloadingCert`] for the pair at each handshake.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::accept::{Busy, Slot};

/// A TLS handshake slower than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a connection may wait for, and take to send, a request's
/// headers (the keep-alive time between requests; idle connections are
/// closed sooner when room is needed).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// The certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("the TLS certificate {cert} and key {key} cannot be used: {reason}")]
pub struct TlsError {
    /// The certificate file.
    pub cert: PathBuf,
    /// The key file.
    pub key: PathBuf,
    /// What is wrong.
    pub reason: String,
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
    pub fn load(cert: &Path, key: &Path) -> Result<ReloadingCert, TlsError> {
        let (cert_bytes, key_bytes) = read_pair(cert, key)?;
        let certified = certified_key(&cert_bytes, &key_bytes).map_err(|reason| TlsError {
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
    pub fn reload(&self) -> Result<bool, TlsError> {
        let (cert_bytes, key_bytes) = read_pair(&self.cert, &self.key)?;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.0 == cert_bytes && last.1 == key_bytes {
            return Ok(false);
        }
        let certified = certified_key(&cert_bytes, &key_bytes).map_err(|reason| TlsError {
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

fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| TlsError {
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

/// A rustls server config serving `cert`'s current pair, offering `alpn`.
pub fn server_config(cert: &Arc<ReloadingCert>, alpn: &[u8]) -> Option<Arc<rustls::ServerConfig>> {
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
    tls.alpn_protocols = vec![alpn.to_vec()];
    Some(Arc::new(tls))
}

/// Reads `cert`'s files again every `every`, for ever; `what` names the
/// server in the log.
pub async fn reload_loop(cert: Arc<ReloadingCert>, every: Duration, what: &'static str) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let cert = Arc::clone(&cert);
        match tokio::task::spawn_blocking(move || cert.reload()).await {
            Ok(Ok(true)) => tracing::info!("{what}: the TLS certificate was reloaded"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::error!("{what}: {e}; the previous certificate stays in use"),
            Err(e) => tracing::error!("{what}: the certificate reload failed: {e}"),
        }
    }
}

/// Serves one HTTPS connection admitted by [`super::accept`]: the TLS
/// handshake (busy), then HTTP/1.1 requests until it closes, each answered
/// by `handle` while the connection is marked busy.
pub async fn serve_connection<H, F>(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    slot: Slot,
    opening: Busy,
    handle: H,
) where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send,
{
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => return,
    };
    drop(opening);
    let handle = Arc::new(handle);
    let service = hyper::service::service_fn(move |request| {
        let handle = Arc::clone(&handle);
        let busy = slot.busy();
        async move {
            let response = handle(request).await;
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
