//! Behavioural signals: per-identity request and denial counts over sliding
//! windows of 10 seconds, 1 minute and 10 minutes.
//!
//! Data flow: the engine counts each identified request here before its
//! rules run ([`SignalTable::record_request`]), so rules see `signals` with
//! the current request included, and counts a denial after the decision
//! ([`SignalTable::record_denial`]). The counts are kept by this celador
//! instance only: in Kubernetes, per pod.
//!
//! Each window is ten buckets of a tenth of its length, aligned to the Unix
//! epoch; a window's count is the sum of its buckets, so it covers between
//! 90 % and 100 % of its length (the current bucket is partly elapsed).
//! Memory is bounded: past `capacity` identities, the least recently seen
//! are dropped, and [`SignalTable::dropped`] counts them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// Buckets per window.
const BUCKETS: usize = 10;
/// Shards of the table: checks of different identities rarely contend.
const SHARDS: usize = 16;
/// The windows' bucket lengths in milliseconds: 10 s, 1 min, 10 min.
const BUCKET_MS: [u64; 3] = [1_000, 6_000, 60_000];

/// The counts rules read as `signals`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Signals {
    /// Requests in the last 10 s, the current one included.
    pub requests_10s: u32,
    /// Requests in the last minute, the current one included.
    pub requests_1m: u32,
    /// Requests in the last 10 minutes, the current one included.
    pub requests_10m: u32,
    /// Denials in the last 10 s.
    pub denials_10s: u32,
    /// Denials in the last minute.
    pub denials_1m: u32,
    /// Denials in the last 10 minutes.
    pub denials_10m: u32,
    /// The same counts summed over every celador sharing the fleet's
    /// governance store (`signals.fleet.*`); 0 without one.
    pub fleet: FleetSignals,
    /// How long the replica of the fleet's governance store may have
    /// missed changes, in seconds: 0 without a store or while it is
    /// connected and current.
    pub store_stale_seconds: u32,
    /// The caller's risk as a security tool reported it (Shared Signals
    /// `risk-level-change`), if any: `signals.risk.*`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub risk: Option<std::sync::Arc<Risk>>,
}

/// A risk level a security tool reported for an identity, with where it
/// came from (the audit record names the SET).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Risk {
    /// `low`, `medium` or `high`.
    pub level: RiskLevel,
    /// Since when (the event's time).
    #[serde(with = "rfc3339_text")]
    pub since: SystemTime,
    /// The transmitter that reported it (the SET's `iss`).
    pub source: String,
    /// The event type URI.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub event: String,
    /// The SET's `jti`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jti: String,
}

/// A risk level, as rules read it; ordered from low to high.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum RiskLevel {
    /// `low`
    Low,
    /// `medium`
    Medium,
    /// `high`
    High,
}

impl RiskLevel {
    /// Its name in rules.
    pub fn as_str(self) -> &'static str {
        match self {
            RiskLevel::Low => "low",
            RiskLevel::Medium => "medium",
            RiskLevel::High => "high",
        }
    }
}

/// A time as RFC 3339 text in JSON and YAML.
mod rfc3339_text {
    use std::time::SystemTime;

    pub(super) fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::time::rfc3339(*t))
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<SystemTime, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        crate::time::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

/// The counts of an identity over the whole fleet: rules read them as
/// `signals.fleet.requests_1m`, ...
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetSignals {
    /// Requests in the last 10 s, over the fleet.
    pub requests_10s: u32,
    /// Requests in the last minute, over the fleet.
    pub requests_1m: u32,
    /// Requests in the last 10 minutes, over the fleet.
    pub requests_10m: u32,
    /// Denials in the last 10 s, over the fleet.
    pub denials_10s: u32,
    /// Denials in the last minute, over the fleet.
    pub denials_1m: u32,
    /// Denials in the last 10 minutes, over the fleet.
    pub denials_10m: u32,
}

/// Counts kept across the fleet, beside this instance's table: the engine
/// counts into it on the request path, which must never wait (an
/// implementation counts locally and exchanges totals in the background).
pub trait FleetCounter: Send + Sync + std::fmt::Debug {
    /// Counts a request of `identity` at `now`; the fleet's counts, this
    /// request included.
    fn record_request(&self, identity: &str, now: SystemTime) -> FleetSignals;
    /// Counts a denial of `identity` at `now`.
    fn record_denial(&self, identity: &str, now: SystemTime);
}

/// The window lengths in milliseconds (10 s, 1 min, 10 min) and their
/// bucket lengths: a fleet counter buckets as this table does.
pub const WINDOWS_MS: [(u64, u64); 3] = [
    (10_000, BUCKET_MS[0]),
    (60_000, BUCKET_MS[1]),
    (600_000, BUCKET_MS[2]),
];

/// One window: ten buckets, each a (requests, denials) pair.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    /// The index (time / bucket length) of the newest bucket written.
    head: u64,
    buckets: [(u32, u32); BUCKETS],
}

impl Window {
    /// Moves the window to bucket `index`, clearing the buckets it passes.
    fn advance(&mut self, index: u64) {
        if index <= self.head {
            return;
        }
        let steps = (index - self.head).min(BUCKETS as u64);
        for step in 1..=steps {
            if let Some(b) = self.buckets.get_mut(slot(self.head + step)) {
                *b = (0, 0);
            }
        }
        self.head = index;
    }

    /// The (requests, denials) of buckets up to `index`.
    fn sum(&self, index: u64) -> (u32, u32) {
        // A bucket older than the window, or a clock that went back: only
        // buckets in (index - BUCKETS, index] count.
        if index >= self.head + BUCKETS as u64 {
            return (0, 0);
        }
        let newest = self.head.min(index);
        let oldest = index.saturating_sub(BUCKETS as u64 - 1);
        (oldest..=newest)
            .filter_map(|i| self.buckets.get(slot(i)))
            .fold((0u32, 0u32), |(r, d), (br, bd)| {
                (r.saturating_add(*br), d.saturating_add(*bd))
            })
    }

    fn bump(&mut self, index: u64, denial: bool) {
        self.advance(index);
        if index < self.head.saturating_sub(BUCKETS as u64 - 1) {
            return;
        }
        if let Some(b) = self.buckets.get_mut(slot(index)) {
            if denial {
                b.1 = b.1.saturating_add(1);
            } else {
                b.0 = b.0.saturating_add(1);
            }
        }
    }
}

fn slot(index: u64) -> usize {
    (index % BUCKETS as u64) as usize
}

#[derive(Debug, Default)]
struct Entry {
    windows: [Window; 3],
    last_seen: u64,
}

impl Entry {
    fn counts(&self, now_ms: u64) -> Signals {
        let [w10s, w1m, w10m] = &self.windows;
        let (r0, d0) = w10s.sum(now_ms / BUCKET_MS[0]);
        let (r1, d1) = w1m.sum(now_ms / BUCKET_MS[1]);
        let (r2, d2) = w10m.sum(now_ms / BUCKET_MS[2]);
        Signals {
            requests_10s: r0,
            requests_1m: r1,
            requests_10m: r2,
            denials_10s: d0,
            denials_1m: d1,
            denials_10m: d2,
            store_stale_seconds: 0,
            fleet: FleetSignals::default(),
            risk: None,
        }
    }

    fn bump(&mut self, now_ms: u64, denial: bool) {
        for (window, len) in self.windows.iter_mut().zip(BUCKET_MS) {
            window.bump(now_ms / len, denial);
        }
    }
}

/// The per-identity counters of one celador instance.
#[derive(Debug)]
pub struct SignalTable {
    shards: [Mutex<HashMap<Box<str>, Entry>>; SHARDS],
    per_shard: usize,
    dropped: AtomicU64,
    tick: AtomicU64,
}

impl SignalTable {
    /// A table for at most `capacity` identities; 0 keeps no counts.
    pub fn new(capacity: usize) -> Self {
        SignalTable {
            shards: std::array::from_fn(|_| Mutex::default()),
            per_shard: capacity.div_ceil(SHARDS),
            dropped: AtomicU64::new(0),
            tick: AtomicU64::new(0),
        }
    }

    /// Counts a request of `identity` at `now` and returns its counts, the
    /// request included.
    pub fn record_request(&self, identity: &str, now: SystemTime) -> Signals {
        self.with_entry(identity, now, |entry, now_ms| {
            entry.bump(now_ms, false);
            entry.counts(now_ms)
        })
        .unwrap_or_default()
    }

    /// Counts a denial of `identity` at `now`.
    pub fn record_denial(&self, identity: &str, now: SystemTime) {
        self.with_entry(identity, now, |entry, now_ms| entry.bump(now_ms, true));
    }

    /// The counts of `identity` at `now`, without counting anything.
    pub fn peek(&self, identity: &str, now: SystemTime) -> Signals {
        let now_ms = millis(now);
        let shard = self.shard(identity);
        let map = shard.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(identity)
            .map(|e| e.counts(now_ms))
            .unwrap_or_default()
    }

    /// Identities counted now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// Whether no identity is counted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Identities dropped to keep the table within its capacity.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn shard(&self, identity: &str) -> &Mutex<HashMap<Box<str>, Entry>> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(identity);
        // In bounds: the index is taken modulo the array's length.
        #[allow(clippy::indexing_slicing)]
        &self.shards[(hash % SHARDS as u64) as usize]
    }

    fn with_entry<T>(
        &self,
        identity: &str,
        now: SystemTime,
        f: impl FnOnce(&mut Entry, u64) -> T,
    ) -> Option<T> {
        if self.per_shard == 0 {
            return None;
        }
        let now_ms = millis(now);
        let tick = self.tick.fetch_add(1, Ordering::Relaxed);
        let mut map = self
            .shard(identity)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = map.get_mut(identity) {
            entry.last_seen = tick;
            return Some(f(entry, now_ms));
        }
        if map.len() >= self.per_shard {
            self.evict(&mut map);
        }
        let entry = map.entry(identity.into()).or_default();
        entry.last_seen = tick;
        Some(f(entry, now_ms))
    }

    /// Drops the least recently seen eighth of a full shard at once, so
    /// that eviction's cost is shared by many new identities.
    fn evict(&self, map: &mut HashMap<Box<str>, Entry>) {
        let mut seen: Vec<u64> = map.values().map(|e| e.last_seen).collect();
        let count = (map.len() / 8).max(1);
        // `count` is at least 1 and at most the shard's length.
        let (_, cut, _) = seen.select_nth_unstable(count - 1);
        let cut = *cut;
        let before = map.len();
        map.retain(|_, e| e.last_seen > cut);
        self.dropped
            .fetch_add((before - map.len()) as u64, Ordering::Relaxed);
    }
}

fn millis(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(ms: u64) -> SystemTime {
        // Aligned to every bucket length: a multiple of 10 minutes.
        UNIX_EPOCH + Duration::from_millis(1_699_999_800_000 + ms)
    }

    #[test]
    fn the_current_request_is_counted_in_every_window() {
        let table = SignalTable::new(100);
        for i in 1..=31u32 {
            let s = table.record_request("spiffe://a/x", at(u64::from(i) * 100));
            assert_eq!((s.requests_10s, s.requests_1m, s.requests_10m), (i, i, i));
        }
        assert_eq!(table.peek("spiffe://b/y", at(3_100)), Signals::default());
    }

    #[test]
    fn windows_slide_and_denials_are_counted_apart() {
        let table = SignalTable::new(100);
        let id = "spiffe://a/x";
        for i in 0..5 {
            table.record_request(id, at(i * 10));
            table.record_denial(id, at(i * 10));
        }
        let s = table.peek(id, at(50));
        assert_eq!((s.requests_10s, s.denials_10s, s.denials_10m), (5, 5, 5));
        // 11 s later the 10 s window has forgotten them; the others have not.
        let s = table.record_request(id, at(11_000));
        assert_eq!((s.requests_10s, s.requests_1m, s.denials_10s), (1, 6, 0));
        // 71 s later (past the minute and its bucket), only the 10 min
        // window remembers.
        let s = table.record_request(id, at(71_000));
        assert_eq!((s.requests_1m, s.requests_10m, s.denials_10m), (1, 7, 5));
        // After 11 minutes nothing is left.
        let s = table.record_request(id, at(660_000));
        assert_eq!(s.requests_10m, 1);
        assert_eq!(s.denials_10m, 0);
    }

    #[test]
    fn a_clock_that_goes_back_neither_panics_nor_counts_wrongly() {
        let table = SignalTable::new(10);
        let id = "spiffe://a/x";
        table.record_request(id, at(600_000));
        let s = table.record_request(id, at(0));
        assert!(s.requests_10m <= 2);
        let s = table.record_request(id, UNIX_EPOCH);
        assert!(s.requests_10s <= 3);
    }

    #[test]
    fn the_least_recently_seen_identities_are_dropped_and_counted() {
        let table = SignalTable::new(SHARDS * 8);
        for i in 0..10_000 {
            table.record_request(&format!("spiffe://a/{i}"), at(0));
        }
        assert!(table.len() <= SHARDS * 8, "{}", table.len());
        assert!(table.dropped() >= 10_000 - (SHARDS as u64 * 8));
        // The newest identity survived.
        assert_eq!(table.peek("spiffe://a/9999", at(0)).requests_10s, 1);
        let off = SignalTable::new(0);
        assert_eq!(
            off.record_request("spiffe://a/x", at(0)),
            Signals::default()
        );
        assert!(off.is_empty());
    }
}
