//! The cache of verified credentials, shared by the X.509-SVID and JWT-SVID
//! verifiers.
//!
//! Data flow: a verifier hands [`VerifiedCache::get_or_verify`] the
//! credential exactly as received. It is keyed by its SHA-256, so equal
//! bytes and nothing else hit; on a miss the verifier's full verification
//! runs and its result is stored with the generation of the bundle that
//! verified it. A hit is served only while the credential's trust domain
//! still has that very bundle generation and `now` is inside the
//! credential's validity window; entries leave the cache at the credential's
//! expiry or after `max_ttl`, whichever comes first, and the cache holds at
//! most `max_entries` of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use super::IdentityError;
use super::bundle::{Lookup, TrustBundles};
use super::spiffe_id::SpiffeId;

/// Cache settings for verified credentials.
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    /// How many verified credentials to keep; 0 disables the cache.
    pub max_entries: u64,
    /// The longest a verified credential is trusted without verifying it
    /// again, however long it is valid.
    pub max_ttl: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            max_entries: 10_000,
            max_ttl: Duration::from_secs(300),
        }
    }
}

/// A verified credential, as the cache needs to see it.
pub(crate) trait Credential: Send + Sync + 'static {
    /// The SPIFFE ID it was verified for; its trust domain names the bundle.
    fn id(&self) -> &SpiffeId;
    /// When it stops being valid.
    fn expires_at(&self) -> SystemTime;
    /// Whether it is valid at `now`.
    fn valid_at(&self, now: SystemTime) -> bool;
}

/// A verified credential and the generation of the bundle that verified it.
struct Entry<T> {
    credential: Arc<T>,
    generation: u64,
    /// How long it stays valid, from the check that verified it.
    valid_for: Duration,
}

impl<T> Clone for Entry<T> {
    fn clone(&self) -> Self {
        Entry {
            credential: Arc::clone(&self.credential),
            generation: self.generation,
            valid_for: self.valid_for,
        }
    }
}

/// Expires each entry when its credential expires, or after `max_ttl`.
struct UntilExpiry {
    max_ttl: Duration,
}

impl<T: Credential> moka::Expiry<[u8; 32], Entry<T>> for UntilExpiry {
    fn expire_after_create(&self, _: &[u8; 32], entry: &Entry<T>, _: Instant) -> Option<Duration> {
        Some(entry.valid_for.min(self.max_ttl))
    }
}

/// Verified credentials of one kind, by the SHA-256 of their bytes.
pub(crate) struct VerifiedCache<T> {
    cache: Option<moka::sync::Cache<[u8; 32], Entry<T>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// How often a cache served a verification, and how often it could not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Served from the cache.
    pub hits: u64,
    /// Verified afresh (also every lookup when the cache is off).
    pub misses: u64,
}

impl<T> std::fmt::Debug for VerifiedCache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedCache")
            .field("entries", &self.cache.as_ref().map(|c| c.entry_count()))
            .finish()
    }
}

impl<T: Credential> VerifiedCache<T> {
    /// A cache with `settings`; none at all when `max_entries` is 0.
    pub(crate) fn new(settings: CacheSettings) -> Self {
        let cache = (settings.max_entries > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(settings.max_entries)
                .expire_after(UntilExpiry {
                    max_ttl: settings.max_ttl,
                })
                .build()
        });
        VerifiedCache {
            cache,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The hits and misses so far.
    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// The credential `bytes` verified: from the cache when the very bundle
    /// that verified it is still in place and it is valid at `now`, else by
    /// `verify`, which returns it with the generation of the bundle that
    /// verified it.
    pub(crate) fn get_or_verify(
        &self,
        bytes: &[u8],
        bundles: &TrustBundles,
        now: SystemTime,
        verify: impl FnOnce() -> Result<(T, u64), IdentityError>,
    ) -> Result<(Arc<T>, bool), IdentityError> {
        let Some(cache) = &self.cache else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return verify().map(|(credential, _)| (Arc::new(credential), false));
        };
        let key: [u8; 32] = Sha256::digest(bytes).into();
        if let Some(hit) = cache.get(&key) {
            // The cache expires entries itself; this guards its granularity
            // and a bundle that changed since.
            let same_bundle = matches!(
                bundles.lookup(hit.credential.id().trust_domain()),
                Lookup::Found(b) if b.generation() == hit.generation
            );
            if same_bundle && hit.credential.valid_at(now) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok((hit.credential, true));
            }
            cache.invalidate(&key);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let (credential, generation) = verify()?;
        let credential = Arc::new(credential);
        cache.insert(
            key,
            Entry {
                valid_for: credential
                    .expires_at()
                    .duration_since(now)
                    .unwrap_or(Duration::ZERO),
                credential: Arc::clone(&credential),
                generation,
            },
        );
        Ok((credential, false))
    }
}
