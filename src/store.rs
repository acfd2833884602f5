//! The live-state store: one current [`Snapshot`] of every live input.
//!
//! Data flow: live sources ([`crate::sources`]: watched files, the Workload
//! API) *publish* into the store; the request path only *reads* it, with one
//! atomic load per check ([`Store::snapshot`]). Every publish makes a new
//! immutable snapshot with the next generation, so a check keeps the state
//! it started with and a reload needs no lock on the request path.
//!
//! Trust bundles come in two shapes: file sources replace a trust domain's
//! whole bundle, the Workload API sets its X.509 and JWT parts separately as
//! its two streams deliver them. Content that did not change is not
//! republished, so an agent resending the same bundles invalidates no
//! cached verification. The store also tracks readiness: ready once every
//! configured trust domain has a bundle.
//!
//! The store counts nothing: it depends on the engine alone. Its
//! publishers count what they publish into their own metrics handle, and
//! the admin listener reads readiness and the merged revocations from it
//! when `/metrics` is served.
//!
//! Adding a live input (grants, revocations) costs one field in
//! [`Snapshot`], one `publish_*` method here, and one source.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::engine::Snapshot;
use crate::engine::grants::Grants;
use crate::engine::identity::bundle::jwk::JwtKey;
use crate::engine::identity::bundle::{Authority, DomainBundle, TrustBundles};
use crate::engine::policy::Policy;
use crate::engine::revocations::Revocations;
use crate::engine::risks::Risks;

/// A part of a bundle with the fingerprint of the content it came from.
#[derive(Clone)]
struct Part<T> {
    value: T,
    fingerprint: [u8; 32],
}

#[derive(Default, Clone)]
struct Parts {
    x509: Option<Part<Vec<Authority>>>,
    jwt: Option<Part<HashMap<String, JwtKey>>>,
}

/// What writers share: the bundles by trust domain, as sources left them.
struct Bundles {
    configured: BTreeSet<String>,
    domains: HashMap<String, Arc<DomainBundle>>,
    /// When each trust domain's bundle last changed.
    changed: HashMap<String, SystemTime>,
    /// Per-part content of trust domains fed by the Workload API.
    parts: HashMap<String, Parts>,
}

impl Bundles {
    fn pending(&self) -> BTreeSet<String> {
        self.configured
            .iter()
            .filter(|td| !self.domains.contains_key(*td))
            .cloned()
            .collect()
    }
}

/// X.509 authorities with the fingerprint of the content they came from.
pub type X509Part = (Vec<Authority>, [u8; 32]);

/// JWT keys by `kid` with the fingerprint of the content they came from.
pub type JwtPart = (HashMap<String, JwtKey>, [u8; 32]);

/// An update of one part: its content and fingerprint, or `None` when the
/// source redacted it.
pub enum PartUpdate {
    /// New X.509 authorities.
    X509(Option<X509Part>),
    /// New JWT keys.
    Jwt(Option<JwtPart>),
}

/// What an update of a bundle's part did to the trust domain's bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartChange {
    /// The bundle changed and has content.
    Updated,
    /// Both parts are now redacted: the trust domain has no bundle.
    Redacted,
}

/// Grants and revocations by where they came from, merged at each
/// publish: a revocation in either revokes, a grant in either grants.
#[derive(Default)]
struct GovernanceParts {
    file_grants: Arc<Grants>,
    file_revocations: Arc<Revocations>,
    /// The fleet's governance store's, once it has been read.
    store: Option<(Arc<Grants>, Arc<Revocations>)>,
    /// Risk levels: the risks file's, and the store's.
    file_risks: Arc<Risks>,
    store_risks: Arc<Risks>,
}

/// The live state.
pub struct Store {
    governance: Mutex<GovernanceParts>,
    current: ArcSwap<Snapshot>,
    /// Serialises publishers, so that no update is lost between reading the
    /// current snapshot and storing the next.
    writer: Mutex<Bundles>,
    ready: watch::Sender<bool>,
    /// Why the pending trust domains wait, when a source knows (the
    /// Workload API's refusal), for `/readyz`.
    pending_reason: Mutex<Option<String>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let snapshot = self.current.load();
        f.debug_struct("Store")
            .field("generation", &snapshot.generation)
            .field("policy", &snapshot.policy.version())
            .field("ready", &*self.ready.borrow())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// A store for the `configured` trust domains, starting from `policy`
    /// and the `initial` bundles.
    pub fn new(
        policy: Arc<Policy>,
        configured: BTreeSet<String>,
        initial: HashMap<String, Arc<DomainBundle>>,
    ) -> Arc<Self> {
        let now = SystemTime::now();
        let bundles = Bundles {
            configured,
            changed: initial.keys().map(|td| (td.clone(), now)).collect(),
            domains: initial,
            parts: HashMap::new(),
        };
        let snapshot = Snapshot::new(
            policy,
            Arc::new(TrustBundles::new(
                bundles.domains.clone(),
                bundles.pending(),
            )),
        );
        let (ready, _) = watch::channel(false);
        let store = Arc::new(Store {
            current: ArcSwap::from_pointee(snapshot),
            writer: Mutex::new(bundles),
            governance: Mutex::default(),
            pending_reason: Mutex::new(None),
            ready,
        });
        let bundles = store.lock();
        store.publish_bundles(&bundles);
        drop(bundles);
        store
    }

    /// A store fixed at `policy` and `bundles`, which no source feeds: for
    /// tools and tests.
    pub fn fixed(policy: Arc<Policy>, bundles: TrustBundles) -> Arc<Self> {
        let pending = bundles.pending().map(str::to_owned);
        let domains = bundles.domains().clone();
        let configured = domains.keys().cloned().chain(pending).collect();
        Store::new(policy, configured, domains)
    }

    fn lock(&self) -> MutexGuard<'_, Bundles> {
        // Every update is one insert or remove followed by a publish, so a
        // panic while holding the lock cannot leave it half-updated.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current snapshot, to keep.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The current snapshot, for the length of one check: cheaper than
    /// [`Store::snapshot`] (no reference count is touched), so this is what
    /// the request path reads.
    pub fn current(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// Whether every configured trust domain has a bundle, now and as it
    /// changes.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Whether every configured trust domain has a bundle.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// When each trust domain's current bundle arrived.
    pub fn bundle_changes(&self) -> Vec<(String, SystemTime)> {
        let bundles = self.lock();
        bundles
            .domains
            .keys()
            .filter_map(|td| Some((td.clone(), *bundles.changed.get(td)?)))
            .collect()
    }

    /// The configured trust domains still without a bundle.
    pub fn pending(&self) -> Vec<String> {
        self.lock().pending().into_iter().collect()
    }

    /// Says why the pending trust domains wait (`None`: no reason known).
    pub fn set_pending_reason(&self, reason: Option<String>) {
        *self
            .pending_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = reason;
    }

    /// Why the pending trust domains wait, when a source said.
    pub fn pending_reason(&self) -> Option<String> {
        self.pending_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Publishes new rules; checks already running keep the old ones.
    /// Returns the policy it replaces, for the caller to drop off the
    /// request path.
    pub fn publish_policy(&self, policy: Arc<Policy>) -> Arc<Policy> {
        let _writer = self.lock();
        let mut replaced = policy;
        self.publish(|s| std::mem::swap(&mut s.policy, &mut replaced));
        replaced
    }

    /// Publishes new grants from the grants file.
    pub fn publish_grants(&self, grants: Arc<Grants>) {
        self.publish_governance(|parts| parts.file_grants = grants);
    }

    /// Publishes new revocations from the revocations file.
    pub fn publish_revocations(&self, revocations: Arc<Revocations>) {
        self.publish_governance(|parts| parts.file_revocations = revocations);
    }

    /// Publishes the grants and revocations of the fleet's governance
    /// store, merged with the files'.
    pub fn publish_store_governance(&self, grants: Arc<Grants>, revocations: Arc<Revocations>) {
        self.publish_governance(|parts| parts.store = Some((grants, revocations)));
    }

    /// Publishes the risk levels of the fleet's governance store
    /// (`signals.risk`), merged with the risks file's.
    pub fn publish_store_risks(&self, risks: Arc<Risks>) {
        self.publish_risks(|parts| parts.store_risks = risks);
    }

    /// Publishes the risk levels of the risks file, merged with the
    /// store's.
    pub fn publish_file_risks(&self, risks: Arc<Risks>) {
        self.publish_risks(|parts| parts.file_risks = risks);
    }

    /// Changes one source of risk levels and publishes the merge, unless
    /// it did not change.
    fn publish_risks(&self, change: impl FnOnce(&mut GovernanceParts)) {
        let _writer = self.lock();
        let mut parts = self
            .governance
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        change(&mut parts);
        let risks = if parts.store_risks.is_empty() {
            Arc::clone(&parts.file_risks)
        } else if parts.file_risks.is_empty() {
            Arc::clone(&parts.store_risks)
        } else {
            Arc::new(Risks::merged(&parts.file_risks, &parts.store_risks))
        };
        if *self.current.load().risks == *risks {
            return;
        }
        self.publish(|s| s.risks = risks);
    }

    /// Says since when the replica of the governance store may have missed
    /// changes (`None`: it is current); published only when it changes.
    pub fn publish_store_staleness(&self, since: Option<SystemTime>) {
        let _writer = self.lock();
        if self.current.load().store_stale_since.is_some() == since.is_some() {
            return;
        }
        self.publish(|s| s.store_stale_since = since);
    }

    /// Changes one part of governance and publishes the merge.
    fn publish_governance(&self, change: impl FnOnce(&mut GovernanceParts)) {
        let _writer = self.lock();
        let mut parts = self
            .governance
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        change(&mut parts);
        let (grants, revocations) = match &parts.store {
            None => (
                Arc::clone(&parts.file_grants),
                Arc::clone(&parts.file_revocations),
            ),
            Some((grants, revocations)) => (
                Arc::new(Grants::merged(&parts.file_grants, grants)),
                Arc::new(Revocations::merged(&parts.file_revocations, revocations)),
            ),
        };
        self.publish(|s| {
            s.grants = grants;
            s.revocations = revocations;
        });
    }

    /// Publishes a new shadow rules file.
    pub fn publish_shadow_policy(&self, shadow: Arc<Policy>) {
        let _writer = self.lock();
        self.publish(|s| s.shadow = Some(shadow));
    }

    /// Stores the current snapshot changed by `change`, with the next
    /// generation. Callers hold the writer lock.
    fn publish(&self, change: impl FnOnce(&mut Snapshot)) {
        let mut next = Snapshot::clone(&self.current.load());
        change(&mut next);
        next.generation += 1;
        self.current.store(Arc::new(next));
    }

    /// Replaces a trust domain's whole bundle (a file source).
    pub fn replace_bundle(&self, trust_domain: &str, bundle: DomainBundle) {
        let mut bundles = self.lock();
        bundles
            .domains
            .insert(trust_domain.to_owned(), Arc::new(bundle));
        bundles
            .changed
            .insert(trust_domain.to_owned(), SystemTime::now());
        self.publish_bundles(&bundles);
    }

    /// Sets one part of a trust domain's bundle (the Workload API). Returns
    /// what changed: `None` when nothing did.
    pub fn update_bundle_part(&self, trust_domain: &str, update: PartUpdate) -> Option<PartChange> {
        let mut bundles = self.lock();
        let mut parts = bundles.parts.get(trust_domain).cloned().unwrap_or_default();
        if !parts.apply(update) {
            return None;
        }
        let change = if parts.x509.is_none() && parts.jwt.is_none() {
            bundles.domains.remove(trust_domain);
            PartChange::Redacted
        } else {
            bundles
                .domains
                .insert(trust_domain.to_owned(), Arc::new(parts.bundle()));
            PartChange::Updated
        };
        bundles.parts.insert(trust_domain.to_owned(), parts);
        bundles
            .changed
            .insert(trust_domain.to_owned(), SystemTime::now());
        self.publish_bundles(&bundles);
        Some(change)
    }

    /// Publishes the bundles as they now are, and readiness with them.
    fn publish_bundles(&self, bundles: &Bundles) {
        let pending = bundles.pending();
        let ready = pending.is_empty();
        let bundles = Arc::new(TrustBundles::new(bundles.domains.clone(), pending));
        self.publish(|s| s.bundles = bundles);
        self.ready.send_replace(ready);
    }
}

impl Parts {
    /// Applies `update`; whether the content changed.
    fn apply(&mut self, update: PartUpdate) -> bool {
        match update {
            PartUpdate::X509(new) => {
                let old = self.x509.as_ref().map(|p| p.fingerprint);
                self.x509 = new.map(|(value, fingerprint)| Part { value, fingerprint });
                old != self.x509.as_ref().map(|p| p.fingerprint)
            }
            PartUpdate::Jwt(new) => {
                let old = self.jwt.as_ref().map(|p| p.fingerprint);
                self.jwt = new.map(|(value, fingerprint)| Part { value, fingerprint });
                old != self.jwt.as_ref().map(|p| p.fingerprint)
            }
        }
    }

    /// The bundle these parts make, with a new generation.
    fn bundle(&self) -> DomainBundle {
        DomainBundle::new(
            self.x509
                .as_ref()
                .map(|p| p.value.clone())
                .unwrap_or_default(),
            self.jwt
                .as_ref()
                .map(|p| p.value.clone())
                .unwrap_or_default(),
        )
    }
}
