//! Trust bundles from the SPIFFE Workload API (a SPIRE agent's socket).
//!
//! Data flow: two long-lived streams, `FetchX509Bundles` and
//! `FetchJWTBundles`, each deliver the complete set of bundles the agent
//! vouches for; every message updates the configured trust domains in the
//! [`Store`]. A trust domain missing from a message is redacted, as
//! the Workload API spec says, and so is every bundle of a stream the agent
//! denies (`PermissionDenied`). A lost connection or any other failure keeps
//! the last bundles and reconnects with jittered exponential backoff.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use spiffe::{TrustDomain, WorkloadApiClient};
use tokio_stream::StreamExt;

mod jwt_stream;

use crate::engine::identity::bundle::anchors_from_der_certs;
use crate::metrics::Metrics;
use crate::store::{JwtPart, PartChange, PartUpdate, Store, X509Part};

/// The first reconnection delay.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// The longest reconnection delay.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// What a refusal means for celador, which only verifies: a SPIRE agent
/// answers `PermissionDenied` ("no identity issued") to a caller no
/// registration entry matches, unless it lets verifiers in.
const REFUSAL_HINT: &str = "celador only verifies (it fetches bundles, it needs no SVID): set allow_unauthenticated_verifiers = true in the SPIRE agent's config, or register an entry whose selectors match celador's container (for example k8s:container-name:celador with the pod's service account)";

/// Where the Workload API is and which trust domains it feeds.
#[derive(Debug, Clone)]
pub struct WorkloadApiSource {
    /// `unix:///path/to/agent.sock` or `tcp://host:port`.
    pub endpoint: String,
    /// The configured trust domains whose bundles it delivers.
    pub trust_domains: BTreeSet<String>,
}

impl WorkloadApiSource {
    /// Starts both streams; they run until the runtime stops.
    pub fn spawn(self, store: Arc<Store>, metrics: Arc<Metrics>) {
        let source = Arc::new(self);
        tokio::spawn(stream_forever(
            Arc::clone(&source),
            Arc::clone(&store),
            Arc::clone(&metrics),
            Kind::X509,
        ));
        tokio::spawn(stream_forever(source, store, metrics, Kind::Jwt));
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    X509,
    Jwt,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::X509 => "X.509 bundles",
            Kind::Jwt => "JWT bundles",
        }
    }
}

async fn stream_forever(
    source: Arc<WorkloadApiSource>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    kind: Kind,
) {
    let mut backoff = INITIAL_BACKOFF;
    let mut jitter = Jitter::new();
    loop {
        match stream_once(&source, (&store, &metrics), kind, &mut backoff).await {
            Ok(()) => tracing::warn!(
                endpoint = %source.endpoint,
                "the Workload API ended its stream of {}; keeping the last bundles",
                kind.name()
            ),
            // The spec: a PermissionDenied status redacts every bundle.
            Err(StreamError::Denied(e)) => {
                tracing::warn!(
                    endpoint = %source.endpoint,
                    error = %e,
                    answer = "PermissionDenied",
                    hint = REFUSAL_HINT,
                    "the Workload API denied the {}; redacting them",
                    kind.name()
                );
                store.set_pending_reason(Some(format!(
                    "the Workload API at {} answered PermissionDenied (\"{e}\") to the {}: {REFUSAL_HINT}",
                    source.endpoint,
                    kind.name()
                )));
                for td in &source.trust_domains {
                    let redaction = match kind {
                        Kind::X509 => PartUpdate::X509(None),
                        Kind::Jwt => PartUpdate::Jwt(None),
                    };
                    update_part(&store, &metrics, td, redaction);
                }
            }
            Err(StreamError::Failed(e)) => tracing::warn!(
                endpoint = %source.endpoint,
                error = %e,
                "the Workload API stream of {} failed; keeping the last bundles",
                kind.name()
            ),
        }
        metrics.workload_api_errors.inc();
        tokio::time::sleep(jitter.apply(backoff)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Connects, then applies every message until the stream ends. A message
/// resets `backoff`: the connection works.
async fn stream_once(
    source: &WorkloadApiSource,
    sink: (&Store, &Metrics),
    kind: Kind,
    backoff: &mut Duration,
) -> Result<(), StreamError> {
    match kind {
        Kind::X509 => stream_x509(source, sink, backoff).await,
        Kind::Jwt => stream_jwt(source, sink, backoff).await,
    }
}

/// Sets a part of `td`'s bundle in `store`, counting the update; whether
/// anything changed.
fn update_part(store: &Store, metrics: &Metrics, td: &str, update: PartUpdate) -> bool {
    let change = store.update_bundle_part(td, update);
    match change {
        Some(PartChange::Updated) => metrics.bundle_update(td, "workload_api", "ok"),
        Some(PartChange::Redacted) => metrics.bundle_update(td, "workload_api", "redacted"),
        None => {}
    }
    change.is_some()
}

async fn stream_x509(
    source: &WorkloadApiSource,
    (store, metrics): (&Store, &Metrics),
    backoff: &mut Duration,
) -> Result<(), StreamError> {
    let client = WorkloadApiClient::connect_to(&source.endpoint)
        .await
        .map_err(|e| StreamError::Failed(format!("cannot connect: {e}")))?;
    let mut stream = client
        .stream_x509_bundles()
        .await
        .map_err(StreamError::from)?;
    while let Some(message) = stream.next().await {
        let set = message.map_err(StreamError::from)?;
        *backoff = INITIAL_BACKOFF;
        store.set_pending_reason(None);
        for td in &source.trust_domains {
            let bundle = TrustDomain::new(td).ok().and_then(|t| set.get(&t));
            let Ok(update) = x509_part(td, bundle.as_deref()) else {
                continue;
            };
            let changed = update_part(store, metrics, td, PartUpdate::X509(update.clone()));
            log_update(td, "X.509", &update, changed);
        }
    }
    Ok(())
}

async fn stream_jwt(
    source: &WorkloadApiSource,
    (store, metrics): (&Store, &Metrics),
    backoff: &mut Duration,
) -> Result<(), StreamError> {
    let mut stream = jwt_stream::open(&source.endpoint)
        .await
        .map_err(StreamError::from)?;
    while let Some(message) = stream.next().await {
        let message = message.map_err(StreamError::from)?;
        *backoff = INITIAL_BACKOFF;
        store.set_pending_reason(None);
        for td in &source.trust_domains {
            let jwks = message.bundles.get(&format!("spiffe://{td}"));
            let Ok(update) = jwt_part(td, jwks.map(Vec::as_slice)) else {
                continue;
            };
            let changed = update_part(store, metrics, td, PartUpdate::Jwt(update.clone()));
            log_update(td, "JWT", &update, changed);
        }
    }
    Ok(())
}

/// The X.509 part the Workload API delivered for `td` (`None`: redacted),
/// or `Err` when it is unusable, which is logged and keeps the last one.
fn x509_part(td: &str, bundle: Option<&spiffe::X509Bundle>) -> Result<Option<X509Part>, ()> {
    let Some(bundle) = bundle else {
        return Ok(None);
    };
    let certs: Vec<&[u8]> = bundle.authorities().iter().map(|c| c.as_bytes()).collect();
    match anchors_from_der_certs(certs.iter().copied()) {
        Ok(anchors) => {
            super::warn_on_invalid_authorities(td, &anchors);
            Ok(Some((anchors, fingerprint(certs.iter().copied()))))
        }
        Err(e) => {
            tracing::warn!(trust_domain = %td, error = %e, "the Workload API sent an unusable X.509 bundle; keeping the last one");
            Err(())
        }
    }
}

/// Why a stream stopped.
enum StreamError {
    /// The agent refused: every bundle of this kind is redacted.
    Denied(String),
    /// Anything else: the last bundles stay in use.
    Failed(String),
}

impl From<tonic::Status> for StreamError {
    fn from(status: tonic::Status) -> Self {
        match status.code() {
            tonic::Code::PermissionDenied => StreamError::Denied(status.message().to_owned()),
            _ => StreamError::Failed(format!("{:?}: {}", status.code(), status.message())),
        }
    }
}

impl From<spiffe::WorkloadApiError> for StreamError {
    fn from(e: spiffe::WorkloadApiError) -> Self {
        match e {
            spiffe::WorkloadApiError::PermissionDenied(_)
            | spiffe::WorkloadApiError::NoIdentityIssued => StreamError::Denied(e.to_string()),
            other => StreamError::Failed(other.to_string()),
        }
    }
}

fn log_update<T>(td: &str, what: &str, update: &Option<T>, changed: bool) {
    match (update, changed) {
        (_, false) => {}
        (Some(_), true) => {
            tracing::info!(trust_domain = %td, "the Workload API delivered a new {what} bundle")
        }
        (None, true) => {
            tracing::warn!(trust_domain = %td, "the Workload API redacted the {what} bundle")
        }
    }
}

/// The JWT part the Workload API delivered for `td` (`None`: redacted), or
/// `Err` when it is unusable (not a JWK Set, or a duplicate `kid`), which is
/// logged and keeps the last one. Keys that do not parse are skipped.
fn jwt_part(td: &str, jwks: Option<&[u8]>) -> Result<Option<JwtPart>, ()> {
    let Some(jwks) = jwks else {
        return Ok(None);
    };
    match jwt_stream::keys(jwks) {
        Ok((keys, skipped)) => {
            for reason in skipped {
                tracing::warn!(trust_domain = %td, reason, "skipping an unusable JWT key");
            }
            Ok(Some((keys, fingerprint(std::iter::once(jwks)))))
        }
        Err(e) => {
            tracing::warn!(trust_domain = %td, error = %e, "the Workload API sent an unusable JWT bundle; keeping the last one");
            Err(())
        }
    }
}

fn fingerprint<'a>(items: impl Iterator<Item = &'a [u8]>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for item in items {
        hasher.update((item.len() as u64).to_be_bytes());
        hasher.update(item);
    }
    hasher.finalize().into()
}

/// Up to 20% random extra delay, so that sidecars restarted together do not
/// reconnect in lockstep.
struct Jitter(u64);

impl Jitter {
    fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64);
        Jitter(seed | 1)
    }

    fn apply(&mut self, delay: Duration) -> Duration {
        // xorshift64: jitter needs spread, not cryptographic randomness.
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let fraction = (self.0 % 1000) as f64 / 5000.0;
        delay.mul_f64(1.0 + fraction)
    }
}
