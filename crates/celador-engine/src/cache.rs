//! The decision cache: a rule evaluation remembered briefly, soundly.
//!
//! Data flow: after the caller's identity is verified, revocations checked
//! and the grant in force found, [`crate::Engine::decide`] asks
//! this cache before evaluating the rules. The key ([`key`]) holds exactly
//! what the loaded rules can read, as derived from them
//! ([`crate::policy::footprint`]), the grant in force, and the
//! generations of the snapshot, the rules, the grants and the revocations:
//! any reload invalidates by construction. Policies that read a volatile
//! value (`request.id`, `signals`, the clock) are not cached, except for
//! clock reads a key can hold: the values of calendar accessors and literal
//! comparisons ([`crate::policy::clock`]), which the engine appends
//! to the key.
//!
//! An entry lives for the configured TTL at most, and never past the
//! credential it was decided for, nor past the next time a grant covering
//! the caller opens or closes. The cache is bounded in entries and bytes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use super::attributes::Attributes;
use super::decision::Decision;
use super::grants::Grant;
use super::identity::Identity;
use super::identity::jwt::JwtSvid;
use super::policy::footprint::{Footprint, Part};
use super::snapshot::Snapshot;

/// How the decision cache is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecisionCacheSettings {
    /// How long a decision is remembered at most; zero turns the cache off.
    pub ttl: Duration,
    /// The most entries kept.
    pub max_entries: u64,
    /// The most bytes of keys and decisions kept (estimated).
    pub max_bytes: u64,
}

impl Default for DecisionCacheSettings {
    fn default() -> Self {
        DecisionCacheSettings {
            ttl: Duration::from_secs(2),
            max_entries: 10_000,
            max_bytes: 16 << 20,
        }
    }
}

/// A remembered decision.
#[derive(Clone)]
struct Entry {
    decision: Arc<Decision>,
    /// Keeps the token the key names by address alive, so that no other
    /// token can take that address while the entry exists.
    _token: Option<Arc<JwtSvid>>,
    /// When the entry must go, on the clock decisions are made with.
    until: SystemTime,
    weight: u32,
}

/// Hits and misses of the decision cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecisionCacheStats {
    /// Decisions served from the cache.
    pub hits: u64,
    /// Lookups that found nothing (decisions that could not be cached are
    /// not counted).
    pub misses: u64,
}

/// Remembered decisions, by what they depend on.
pub(crate) struct DecisionCache {
    cache: Option<moka::sync::Cache<Arc<[u8]>, Entry>>,
    settings: DecisionCacheSettings,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for DecisionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionCache")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl DecisionCache {
    /// A cache with `settings`; none when the TTL or a bound is zero.
    pub(crate) fn new(settings: DecisionCacheSettings) -> Self {
        let on = !settings.ttl.is_zero() && settings.max_entries > 0 && settings.max_bytes > 0;
        // Every entry weighs at least max_bytes / max_entries, so a full
        // cache holds at most max_entries entries and max_bytes bytes.
        let floor = (settings.max_bytes / settings.max_entries.max(1)).max(1);
        let cache = on.then(|| {
            moka::sync::Cache::builder()
                .max_capacity(settings.max_bytes)
                .weigher(move |_, e: &Entry| e.weight.max(u32::try_from(floor).unwrap_or(u32::MAX)))
                // One TTL for all: cheaper than per-entry expiry; an entry's
                // own end (`until`) is checked on every hit.
                .time_to_live(settings.ttl)
                .build()
        });
        DecisionCache {
            cache,
            settings,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Whether decisions are cached at all.
    pub(crate) fn enabled(&self) -> bool {
        self.cache.is_some()
    }

    /// The hits and misses so far.
    pub(crate) fn stats(&self) -> DecisionCacheStats {
        DecisionCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// The decision remembered under `key`, if still good at `now`.
    pub(crate) fn get(&self, key: &[u8], now: SystemTime) -> Option<Arc<Decision>> {
        let cache = self.cache.as_ref()?;
        match cache.get(key) {
            Some(entry) if now < entry.until => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(entry.decision)
            }
            _ => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Remembers `decision` under `key` until `until` (wall clock), at most
    /// for the TTL.
    pub(crate) fn insert(
        &self,
        key: Arc<[u8]>,
        decision: Arc<Decision>,
        identity: &Identity,
        until: SystemTime,
        now: SystemTime,
    ) {
        let Some(cache) = &self.cache else {
            return;
        };
        let life = until
            .duration_since(now)
            .unwrap_or_default()
            .min(self.settings.ttl);
        if life.is_zero() {
            return;
        }
        let weight =
            u32::try_from(key.len() + 256 + decision.errors.len() * 128).unwrap_or(u32::MAX);
        cache.insert(
            key,
            Entry {
                decision,
                _token: identity.token.clone(),
                until,
                weight,
            },
        );
    }
}

/// The cache key of a request: the generations in force, the grant, and the
/// values of every part in `footprints` (the rules' and the shadow rules'),
/// each length-prefixed so that no two different requests share a key.
pub fn key(
    snapshot: &Snapshot,
    footprints: &[&Footprint],
    attrs: &Attributes<'_>,
    identity: &Identity,
    grant: Option<&Arc<Grant>>,
) -> Vec<u8> {
    let mut key = Vec::with_capacity(128);
    for generation in [
        snapshot.generation,
        snapshot.policy.generation(),
        snapshot.grants.generation(),
        snapshot.revocations.generation(),
        snapshot.shadow.as_ref().map_or(0, |p| p.generation()),
    ] {
        key.extend_from_slice(&generation.to_le_bytes());
    }
    field(&mut key, grant.map(|g| g.name.as_bytes()));
    // A part in both footprints is written twice: the key is longer, never
    // less exact.
    for part in footprints.iter().flat_map(|f| &f.parts) {
        part_value(&mut key, part, attrs, identity);
    }
    key
}

fn part_value(key: &mut Vec<u8>, part: &Part, attrs: &Attributes<'_>, identity: &Identity) {
    let source = identity.source.as_deref();
    let token = identity.token.as_ref();
    match part {
        Part::Source => {
            field(key, source.map(|s| s.id.as_str().as_bytes()));
            number(key, source.map_or(0, |s| seconds(s.not_after)));
        }
        Part::SourceAddress => field(key, Some(attrs.source_address.as_bytes())),
        Part::SourcePort => number(key, u64::from(attrs.source_port)),
        Part::TokenId => {
            field(key, token.map(|t| t.id.as_str().as_bytes()));
            number(key, token.map_or(0, |t| seconds(t.expiry)));
        }
        // The verified token itself, by address: the entry holds it alive.
        Part::Token => number(key, token.map_or(0, |t| Arc::as_ptr(t) as usize as u64)),
        Part::Method => field(key, Some(attrs.method.as_bytes())),
        Part::Path => field(key, Some(attrs.path.as_bytes())),
        Part::RawPath => field(key, Some(attrs.raw_path.as_bytes())),
        Part::Host => field(key, Some(attrs.host.as_bytes())),
        Part::Scheme => field(key, Some(attrs.scheme.as_bytes())),
        Part::Protocol => field(key, Some(attrs.protocol.as_bytes())),
        Part::Size => number(key, attrs.size as u64),
        Part::Query => field(key, Some(attrs.query.as_bytes())),
        Part::Header(name) => field(key, attrs.header(name).map(str::as_bytes)),
        Part::Headers => map(key, &attrs.headers),
        Part::ContextKey(name) => field(key, attrs.context.get(name).map(String::as_bytes)),
        Part::Context => map(key, attrs.context),
        Part::DestinationPrincipal => field(key, Some(attrs.destination_principal.as_bytes())),
        Part::DestinationAddress => field(key, Some(attrs.destination_address.as_bytes())),
        Part::DestinationPort => number(key, u64::from(attrs.destination_port)),
        // The grant's name is always in the key.
        Part::Grant => {}
    }
}

/// A value that may be absent: a presence byte, its length, its bytes.
fn field(key: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => key.push(0),
        Some(v) => {
            key.push(1);
            key.extend_from_slice(&(v.len() as u64).to_le_bytes());
            key.extend_from_slice(v);
        }
    }
}

fn number(key: &mut Vec<u8>, n: u64) {
    key.extend_from_slice(&n.to_le_bytes());
}

fn map(key: &mut Vec<u8>, map: &std::collections::HashMap<String, String>) {
    let mut entries: Vec<(&String, &String)> = map.iter().collect();
    entries.sort_unstable();
    number(key, entries.len() as u64);
    for (k, v) in entries {
        field(key, Some(k.as_bytes()));
        field(key, Some(v.as_bytes()));
    }
}

fn seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
