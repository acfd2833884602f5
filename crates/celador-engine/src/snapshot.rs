//! One immutable view of every live input, for one check.
//!
//! Data flow: the live-state store (`store` in the celador crate) publishes a new
//! [`Snapshot`] whenever a source delivers new content; each check reads the
//! current one once and decides with it from start to end, so a reload
//! never shows a check half old and half new state. Every part carries its
//! own generation, which caches key on: a reload invalidates by
//! construction.

use std::sync::Arc;

use super::grants::Grants;
use super::identity::bundle::TrustBundles;
use super::policy::Policy;
use super::revocations::Revocations;
use super::risks::Risks;

/// The live state a check is decided with.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The rules in force.
    pub policy: Arc<Policy>,
    /// The trust bundles of every configured trust domain.
    pub bundles: Arc<TrustBundles>,
    /// The time-bound grants.
    pub grants: Arc<Grants>,
    /// The revoked credentials.
    pub revocations: Arc<Revocations>,
    /// The risk levels security tools reported (`signals.risk`).
    pub risks: Arc<Risks>,
    /// A candidate rules file evaluated beside the enforced one, never
    /// enforced (`shadow_policy`).
    pub shadow: Option<Arc<Policy>>,
    /// Since when the replica of the fleet's governance store may have
    /// missed changes; `None` without a store or while it is current.
    pub store_stale_since: Option<std::time::SystemTime>,
    /// Bumped by the store at every publish: which snapshot this is.
    pub generation: u64,
}

impl Snapshot {
    /// A first snapshot of `policy` and `bundles`.
    pub fn new(policy: Arc<Policy>, bundles: Arc<TrustBundles>) -> Self {
        Snapshot {
            policy,
            bundles,
            grants: Arc::default(),
            revocations: Arc::default(),
            risks: Arc::default(),
            shadow: None,
            store_stale_since: None,
            generation: 1,
        }
    }
}
