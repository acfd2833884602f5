//! The live set of trust bundles, fed by every bundle source.
//!
//! Data flow: file sources replace a trust domain's whole bundle; the
//! Workload API sets its X.509 and JWT parts separately, as its two streams
//! deliver them. After each change the store publishes a new
//! [`TrustBundles`] snapshot to the [`Authorizer`] and recomputes readiness:
//! ready once every configured trust domain has a bundle. Content that did
//! not change is not republished, so an agent resending the same bundles
//! does not invalidate any cached verdict.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use rustls_pki_types::TrustAnchor;
use tokio::sync::watch;

use super::bundle::jwk::JwtKey;
use super::bundle::{DomainBundle, TrustBundles};
use crate::decision::Authorizer;
use crate::metrics::Metrics;

/// A part of a bundle with the fingerprint of the content it came from.
#[derive(Clone)]
struct Part<T> {
    value: T,
    fingerprint: [u8; 32],
}

#[derive(Default, Clone)]
struct Parts {
    x509: Option<Part<Vec<TrustAnchor<'static>>>>,
    jwt: Option<Part<HashMap<String, JwtKey>>>,
}

struct State {
    configured: BTreeSet<String>,
    domains: HashMap<String, Arc<DomainBundle>>,
    /// Per-part content of trust domains fed by the Workload API.
    parts: HashMap<String, Parts>,
}

/// An update of one part: its content and fingerprint, or `None` when the
/// source redacted it.
pub enum PartUpdate {
    /// New X.509 authorities.
    X509(Option<(Vec<TrustAnchor<'static>>, [u8; 32])>),
    /// New JWT keys.
    Jwt(Option<(HashMap<String, JwtKey>, [u8; 32])>),
}

/// The live trust bundles.
pub struct BundleStore {
    state: Mutex<State>,
    authorizer: Arc<Authorizer>,
    metrics: Arc<Metrics>,
    ready: watch::Sender<bool>,
}

impl std::fmt::Debug for BundleStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleStore")
            .field("ready", &*self.ready.borrow())
            .finish_non_exhaustive()
    }
}

impl BundleStore {
    /// A store for the `configured` trust domains, starting from `initial`
    /// bundles, that publishes to `authorizer`.
    pub fn new(
        authorizer: Arc<Authorizer>,
        metrics: Arc<Metrics>,
        configured: BTreeSet<String>,
        initial: HashMap<String, Arc<DomainBundle>>,
    ) -> Arc<Self> {
        let (ready, _) = watch::channel(false);
        let store = Arc::new(BundleStore {
            state: Mutex::new(State {
                configured,
                domains: initial,
                parts: HashMap::new(),
            }),
            authorizer,
            metrics,
            ready,
        });
        let state = store.lock();
        store.publish(&state);
        drop(state);
        store
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-updated
        // (every update is one insert or remove), so a poisoned lock is safe.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether every configured trust domain has a bundle, now and as it
    /// changes.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// The configured trust domains still without a bundle.
    pub fn pending(&self) -> Vec<String> {
        let state = self.lock();
        state
            .configured
            .iter()
            .filter(|td| !state.domains.contains_key(*td))
            .cloned()
            .collect()
    }

    /// Replaces a trust domain's whole bundle (a file source).
    pub fn replace(&self, trust_domain: &str, bundle: DomainBundle) {
        let mut state = self.lock();
        state
            .domains
            .insert(trust_domain.to_owned(), Arc::new(bundle));
        self.publish(&state);
    }

    /// Sets one part of a trust domain's bundle (the Workload API). Returns
    /// whether anything changed.
    pub fn update_part(&self, trust_domain: &str, update: PartUpdate) -> bool {
        let mut state = self.lock();
        let mut parts = state.parts.get(trust_domain).cloned().unwrap_or_default();
        let changed = match update {
            PartUpdate::X509(new) => {
                let old = parts.x509.as_ref().map(|p| p.fingerprint);
                parts.x509 = new.map(|(value, fingerprint)| Part { value, fingerprint });
                old != parts.x509.as_ref().map(|p| p.fingerprint)
            }
            PartUpdate::Jwt(new) => {
                let old = parts.jwt.as_ref().map(|p| p.fingerprint);
                parts.jwt = new.map(|(value, fingerprint)| Part { value, fingerprint });
                old != parts.jwt.as_ref().map(|p| p.fingerprint)
            }
        };
        if !changed {
            return false;
        }
        if parts.x509.is_none() && parts.jwt.is_none() {
            state.domains.remove(trust_domain);
            self.metrics
                .bundle_update(trust_domain, "workload_api", "redacted");
        } else {
            let bundle = DomainBundle::new(
                parts
                    .x509
                    .as_ref()
                    .map(|p| p.value.clone())
                    .unwrap_or_default(),
                parts
                    .jwt
                    .as_ref()
                    .map(|p| p.value.clone())
                    .unwrap_or_default(),
            );
            state
                .domains
                .insert(trust_domain.to_owned(), Arc::new(bundle));
            self.metrics
                .bundle_update(trust_domain, "workload_api", "ok");
        }
        state.parts.insert(trust_domain.to_owned(), parts);
        self.publish(&state);
        true
    }

    fn publish(&self, state: &State) {
        let pending: BTreeSet<String> = state
            .configured
            .iter()
            .filter(|td| !state.domains.contains_key(*td))
            .cloned()
            .collect();
        let ready = pending.is_empty();
        self.authorizer
            .set_bundles(Arc::new(TrustBundles::new(state.domains.clone(), pending)));
        self.metrics.ready.set(i64::from(ready));
        self.ready.send_replace(ready);
    }
}
