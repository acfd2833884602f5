//! A transmitter's keys fetched from its JWKS URL (`jwks_uri`), and kept
//! fresh: on a schedule, and when a SET names a `kid` the keys lack (the
//! transmitter rotated them), at most once per [`UNKNOWN_KID_GAP`].
//!
//! Data flow: [`super::config`] fetches each URL once at start-up (a
//! failure stops it) -> the [`super::set::Transmitter`]'s keys; then the
//! server runs [`KeyRefresh::run`] per URL, and [`super::receiver`] calls
//! [`KeyRefresh::on_unknown_kid`] before refusing a SET `invalid_key` for an
//! unknown `kid`. A fetch that fails, or a document that is not a JWKS with
//! a usable key, leaves the last good keys in place; it is logged and
//! counted (`celador_signals_jwks_fetches_total{transmitter,outcome}`).
//!
//! The HTTP client is hyper's own connection API over tokio-rustls, both
//! already celador's: one `GET` every few minutes needs no pool, no
//! redirects, no cookies and no proxy, which is what a client crate such as
//! reqwest (not in the dependency tree) would add.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};

use super::set::Transmitter;

/// The least time between two fetches a SET with an unknown `kid` causes,
/// per transmitter: a forger sending made-up `kid`s cannot make the
/// receiver hammer the identity provider.
pub const UNKNOWN_KID_GAP: Duration = Duration::from_secs(30);

/// How long one fetch may take, connection and TLS included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest JWKS document accepted.
pub const MAX_JWKS_BYTES: usize = 1 << 20;

/// Why a JWKS URL cannot be used or fetched (no secret in it: the URL is
/// shown without its query).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct FetchError(String);

/// An `https://` URL (a JWKS, or a poll endpoint) and how to reach it.
#[derive(Clone)]
pub struct HttpsUrl {
    uri: hyper::Uri,
    /// The URL as logs show it: without a query.
    shown: String,
    host: String,
    port: u16,
    /// `None` for `http://` on a loopback address.
    tls: Option<tokio_rustls::TlsConnector>,
}

impl std::fmt::Debug for HttpsUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl HttpsUrl {
    /// `url`, an `https://` URL (or `http://` to a loopback address, for
    /// tests), trusting the CAs of `ca_file` if given, else the system's.
    pub fn new(url: &str, ca_file: Option<&Path>) -> Result<HttpsUrl, FetchError> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| FetchError(format!("{url:?} is not a URL: {e}")))?;
        let host = uri
            .host()
            .ok_or_else(|| FetchError(format!("{url:?} names no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let shown = format!(
            "{}://{}{}",
            uri.scheme_str().unwrap_or(""),
            // Without any user information: it is not shown, and refused.
            uri.authority()
                .and_then(|a| a.as_str().rsplit('@').next())
                .unwrap_or(""),
            uri.path()
        );
        let loopback =
            host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        let (tls, port) = match uri.scheme_str() {
            Some("https") => (
                Some(connector(ca_file, &shown)?),
                uri.port_u16().unwrap_or(443),
            ),
            Some("http") if loopback => {
                if ca_file.is_some() {
                    return Err(FetchError(format!(
                        "{shown}: a CA file is for https:// URLs"
                    )));
                }
                (None, uri.port_u16().unwrap_or(80))
            }
            Some("http") => {
                return Err(FetchError(format!(
                    "{shown}: only https:// is accepted (http:// only to a loopback address)"
                )));
            }
            _ => return Err(FetchError(format!("{shown}: not an https:// URL"))),
        };
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(FetchError(format!(
                "{shown}: a URL with credentials is not accepted"
            )));
        }
        Ok(HttpsUrl {
            uri,
            shown,
            host,
            port,
            tls,
        })
    }

    /// The URL as logs show it.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The document at the URL: `200`, at most [`MAX_JWKS_BYTES`], within
    /// [`FETCH_TIMEOUT`].
    pub async fn fetch(&self) -> Result<Vec<u8>, FetchError> {
        let request = hyper::Request::get(self.path())
            .header(
                hyper::header::ACCEPT,
                "application/jwk-set+json, application/json",
            )
            .body(Full::new(Bytes::new()));
        self.call(request, FETCH_TIMEOUT).await
    }

    /// `POST`s `body` (JSON) with `Authorization: Bearer bearer` if given:
    /// the JSON answer (`200`), at most [`MAX_JWKS_BYTES`], within
    /// `within` (a long poll's wait and a margin).
    pub async fn post_json(
        &self,
        body: &serde_json::Value,
        bearer: Option<&str>,
        within: Duration,
    ) -> Result<Vec<u8>, FetchError> {
        let mut request = hyper::Request::post(self.path())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::ACCEPT, "application/json");
        if let Some(token) = bearer {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        self.call(
            request.body(Full::new(Bytes::from(body.to_string()))),
            within,
        )
        .await
    }

    fn path(&self) -> String {
        self.uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned()
    }

    async fn call(
        &self,
        request: Result<hyper::Request<Full<Bytes>>, hyper::http::Error>,
        within: Duration,
    ) -> Result<Vec<u8>, FetchError> {
        tokio::time::timeout(within, self.send(request))
            .await
            .map_err(|_| {
                FetchError(format!(
                    "{}: no answer within {} s",
                    self.shown,
                    within.as_secs()
                ))
            })?
    }

    async fn send(
        &self,
        request: Result<hyper::Request<Full<Bytes>>, hyper::http::Error>,
    ) -> Result<Vec<u8>, FetchError> {
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            FetchError(format!("{}: {what}: {e}", self.shown))
        };
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| failed("cannot connect", &e))?;
        let authority = self.uri.authority().map_or("", |a| a.as_str()).to_owned();
        let mut request = request.map_err(|e| failed("bad request", &e))?;
        let headers = request.headers_mut();
        if let Ok(host) = hyper::header::HeaderValue::from_str(&authority) {
            headers.insert(hyper::header::HOST, host);
        }
        headers.insert(
            hyper::header::USER_AGENT,
            hyper::header::HeaderValue::from_static("celador-signals"),
        );
        let response = match &self.tls {
            Some(tls) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|e| failed("bad host name", &e))?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| failed("TLS", &e))?;
                send(hyper_util::rt::TokioIo::new(stream), request).await
            }
            None => send(hyper_util::rt::TokioIo::new(tcp), request).await,
        }
        .map_err(|e| failed("HTTP", &e))?;
        let status = response.status();
        if status != hyper::StatusCode::OK {
            return Err(FetchError(format!(
                "{}: answered {status} (200 expected; redirects are not followed)",
                self.shown
            )));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| failed("reading the document (at most 1 MiB)", &e))?;
        Ok(body.to_bytes().to_vec())
    }
}

/// One request on a new HTTP/1.1 connection, closed after the answer.
async fn send<T>(
    io: hyper_util::rt::TokioIo<T>,
    request: hyper::Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    let driver = tokio::spawn(connection);
    let response = sender.send_request(request).await;
    if response.is_err() {
        driver.abort();
    }
    response
}

/// A TLS client trusting `ca_file`'s CAs, else the system's.
fn connector(
    ca_file: Option<&Path>,
    shown: &str,
) -> Result<tokio_rustls::TlsConnector, FetchError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                FetchError(format!(
                    "{shown}: cannot read the CA file {}: {e}",
                    path.display()
                ))
            })?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| {
                    FetchError(format!("{shown}: the CA file {}: {e}", path.display()))
                })?;
                roots.add(cert).map_err(|e| {
                    FetchError(format!("{shown}: the CA file {}: {e}", path.display()))
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    if roots.is_empty() {
        return Err(FetchError(format!(
            "{shown}: no CA certificate to verify it with (give jwks_ca_file)"
        )));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| FetchError(format!("{shown}: TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The labels of `celador_signals_jwks_fetches_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FetchLabels {
    /// The transmitter's issuer.
    pub transmitter: String,
    /// `updated`, `unchanged`, `failed` (no document), `refused` (not a
    /// JWKS with a usable key), `limited` (an unknown `kid` within
    /// [`UNKNOWN_KID_GAP`] of the last fetch: none made).
    pub outcome: &'static str,
}

/// The counters of every transmitter's fetches.
pub type FetchCounters = Family<FetchLabels, Counter>;

/// When the last fetch since start-up was made, and how many have been.
struct Fetched {
    at: Option<Instant>,
    count: u64,
}

/// Keeps one transmitter's keys fresh from its JWKS URL.
pub struct KeyRefresh {
    transmitter: Transmitter,
    url: HttpsUrl,
    every: Duration,
    last: tokio::sync::Mutex<Fetched>,
    /// `last.count`, readable without the lock (written under it).
    fetches: std::sync::atomic::AtomicU64,
    counters: FetchCounters,
}

impl std::fmt::Debug for KeyRefresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRefresh")
            .field("issuer", &self.transmitter.issuer)
            .field("url", &self.url)
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

impl KeyRefresh {
    /// The refresh of `transmitter`'s keys (just fetched from `url`) every
    /// `every`, counted in `counters`.
    pub fn new(
        transmitter: Transmitter,
        url: HttpsUrl,
        every: Duration,
        counters: FetchCounters,
    ) -> KeyRefresh {
        KeyRefresh {
            transmitter,
            url,
            every,
            last: tokio::sync::Mutex::new(Fetched { at: None, count: 0 }),
            fetches: std::sync::atomic::AtomicU64::new(0),
            counters,
        }
    }

    /// The transmitter's issuer.
    pub fn issuer(&self) -> &str {
        &self.transmitter.issuer
    }

    /// Fetches the keys every `every`, for ever (the server aborts it).
    pub async fn run(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(self.every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let mut last = self.last.lock().await;
            self.refresh(&mut last, "schedule").await;
        }
    }

    /// A SET named a `kid` the keys lack: fetches them again unless the
    /// last fetch was less than [`UNKNOWN_KID_GAP`] ago. Returns whether
    /// the keys may have changed since the caller looked (a fetch was
    /// made, by this call or by one it waited for), i.e. whether to verify
    /// the SET again. Concurrent callers share one fetch.
    pub async fn on_unknown_kid(&self) -> bool {
        // A fetch made while this call waited for the lock: look again.
        let seen = self.fetches.load(std::sync::atomic::Ordering::Acquire);
        let mut last = self.last.lock().await;
        if seen != last.count {
            return true;
        }
        if last.at.is_some_and(|at| at.elapsed() < UNKNOWN_KID_GAP) {
            self.count("limited");
            return false;
        }
        self.refresh(&mut last, "unknown kid").await
    }

    /// One fetch; the keys replaced if the document is a JWKS with a usable
    /// key. Returns whether they changed.
    async fn refresh(&self, last: &mut Fetched, why: &'static str) -> bool {
        let fetched = self.url.fetch().await;
        last.at = Some(Instant::now());
        last.count += 1;
        self.fetches
            .store(last.count, std::sync::atomic::Ordering::Release);
        let issuer = &self.transmitter.issuer;
        let url = self.url.shown();
        let result = fetched.map(|document| self.transmitter.replace_keys(&document));
        match result {
            Ok(Ok(changed)) => {
                self.count(if changed { "updated" } else { "unchanged" });
                if changed {
                    tracing::info!(transmitter = %issuer, %url, why, keys = self.transmitter.key_count(), "transmitter keys updated");
                }
                changed
            }
            Ok(Err(e)) => {
                self.count("refused");
                tracing::warn!(transmitter = %issuer, %url, why, "the fetched JWKS is refused; the last good keys stay: {}", crate::engine::redaction::text(&e.to_string()));
                false
            }
            Err(e) => {
                self.count("failed");
                tracing::warn!(transmitter = %issuer, %url, why, "the JWKS cannot be fetched; the last good keys stay: {}", crate::engine::redaction::text(&e.to_string()));
                false
            }
        }
    }

    fn count(&self, outcome: &'static str) {
        self.counters
            .get_or_create(&FetchLabels {
                transmitter: self.transmitter.issuer.clone(),
                outcome,
            })
            .inc();
    }
}

/// Fetches `url` once, outside any runtime the caller may be in (start-up
/// and `celador signals check` are synchronous): the document, or why not.
pub fn fetch_blocking(url: &HttpsUrl) -> Result<Vec<u8>, FetchError> {
    let url = url.clone();
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| FetchError(format!("cannot start a runtime: {e}")))?
                    .block_on(url.fetch())
            })
            .join()
            .unwrap_or_else(|_| Err(FetchError("the fetch stopped".into())))
    })
}

#[cfg(test)]
mod tests;
