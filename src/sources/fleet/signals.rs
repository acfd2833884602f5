//! Fleet signals: each identity's request and denial counts summed over
//! every celador sharing the store, read by rules as `signals.fleet.*`.
//!
//! The request path only counts locally ([`FleetCounts`] implements the
//! engine's [`FleetCounter`]: a lock of one shard, no I/O). A background
//! task, every `governance.signals_interval` (250 ms by default), adds the
//! increments of each identity counted since to Redis and reads back its
//! fleet totals, in one pipeline per flush. A rule sees the fleet totals as
//! of the last flush plus this instance's increments since, so another
//! instance's requests show after at most one interval of each instance
//! plus a round trip (the error bound; `tests/fleet.rs` measures it).
//! A failed exchange puts its increments back; a key with bad data is
//! logged once and skipped (see [`run`]).
//! While the store is away nothing is sent: an identity's pending increments
//! age into coarser buckets and are dropped after the longest window, so
//! they stay bounded and count only in the windows they are within.
//!
//! Redis layout: one hash per identity, `{prefix}:signals:<identity>`,
//! fields `<window>:<bucket index>:<r|d>` (windows and buckets as the local
//! table's: 10 buckets of 1 s, 6 s, 60 s); a flush deletes the fields of the
//! ten buckets before the window and refreshes the key's TTL (11 min), so a
//! hash holds at most 60 live fields.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;

use super::connect::Endpoint;
use super::keys::Keys;
use crate::engine::signals::{FleetCounter, FleetSignals, WINDOWS_MS};

/// Shards of the table: identities rarely contend.
const SHARDS: usize = 16;
/// An identity not seen for this long is forgotten locally.
const FORGET_MS: u64 = 600_000;

/// Increments not yet sent: (ms of the request, requests, denials).
type Pending = Vec<(u64, u32, u32)>;

#[derive(Debug, Default)]
struct Entry {
    pending: Pending,
    /// Sent, not yet reflected in `totals`.
    in_flight: (u32, u32),
    /// The fleet's counts at the last flush.
    totals: FleetSignals,
    last_seen: u64,
}

/// Whether an increment at `ms` falls in window `w` (of [`WINDOWS_MS`]) at
/// `now_ms`: in one of its ten buckets, as the store's sums count it.
fn in_window(ms: u64, now_ms: u64, w: usize) -> bool {
    WINDOWS_MS
        .get(w)
        .is_some_and(|(_, bucket)| (ms / bucket).saturating_add(9) >= now_ms / bucket)
}

impl Entry {
    fn counts(&self, now_ms: u64) -> FleetSignals {
        let mut sums = [self.in_flight; 3];
        for (at, pr, pd) in &self.pending {
            for (w, (r, d)) in sums.iter_mut().enumerate() {
                if in_window(*at, now_ms, w) {
                    *r = r.saturating_add(*pr);
                    *d = d.saturating_add(*pd);
                }
            }
        }
        let [(r0, d0), (r1, d1), (r2, d2)] = sums;
        let t = self.totals;
        FleetSignals {
            requests_10s: t.requests_10s.saturating_add(r0),
            requests_1m: t.requests_1m.saturating_add(r1),
            requests_10m: t.requests_10m.saturating_add(r2),
            denials_10s: t.denials_10s.saturating_add(d0),
            denials_1m: t.denials_1m.saturating_add(d1),
            denials_10m: t.denials_10m.saturating_add(d2),
        }
    }

    fn bump(&mut self, ms: u64, denial: bool) {
        let (r, d) = if denial { (0, 1) } else { (1, 0) };
        match self.pending.last_mut() {
            // Same second: one pending increment.
            Some((at, pr, pd)) if *at / 1000 == ms / 1000 => {
                *pr = pr.saturating_add(r);
                *pd = pd.saturating_add(d);
            }
            _ => {
                self.age(ms);
                self.pending.push((ms, r, d));
            }
        }
        self.last_seen = ms;
    }

    /// Bounds `pending` while nothing takes it (the store is away): drops
    /// what left the longest window and merges what left a shorter one into
    /// the buckets of the next window (the buckets nest, so each increment
    /// stays in the windows it was in): at most 10 buckets of each window
    /// remain, so `counts` does bounded work. No allocation.
    fn age(&mut self, now_ms: u64) {
        self.pending.retain_mut(|(at, _, _)| {
            // The bucket of the shortest window still holding it; none: gone.
            let bucket = (0..WINDOWS_MS.len())
                .find(|w| in_window(*at, now_ms, *w))
                .and_then(|w| WINDOWS_MS.get(w));
            if let Some((_, bucket)) = bucket {
                *at -= *at % bucket;
            }
            bucket.is_some()
        });
        // Oldest first: increments sharing a bucket are neighbours.
        self.pending.dedup_by(|(at, r, d), (kept, kr, kd)| {
            let same = at == kept;
            if same {
                *kr = kr.saturating_add(*r);
                *kd = kd.saturating_add(*d);
            }
            same
        });
    }
}

/// The fleet counts of one celador.
#[derive(Debug)]
pub struct FleetCounts {
    shards: [Mutex<HashMap<Box<str>, Entry>>; SHARDS],
    per_shard: usize,
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl FleetCounts {
    /// Counts for at most `capacity` identities (the local table's).
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(FleetCounts {
            shards: std::array::from_fn(|_| Mutex::default()),
            per_shard: capacity.div_ceil(SHARDS),
        })
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
        let ms = millis(now);
        let mut map = self
            .shard(identity)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = map.get_mut(identity) {
            return Some(f(entry, ms));
        }
        if map.len() >= self.per_shard {
            return None;
        }
        Some(f(map.entry(identity.into()).or_default(), ms))
    }

    /// Takes the pending increments, moving them in flight: (identity,
    /// increments) of every identity seen lately; forgets the others.
    fn take(&self, now_ms: u64) -> Vec<(String, Pending)> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
            map.retain(|_, e| now_ms.saturating_sub(e.last_seen) < FORGET_MS);
            for (id, e) in map.iter_mut() {
                // Totals are read back only for identities active in the
                // shortest window: rules read counts of callers, as they call.
                if now_ms.saturating_sub(e.last_seen) >= WINDOWS_MS[0].0 {
                    continue;
                }
                let pending = std::mem::take(&mut e.pending);
                for (_, r, d) in &pending {
                    e.in_flight.0 = e.in_flight.0.saturating_add(*r);
                    e.in_flight.1 = e.in_flight.1.saturating_add(*d);
                }
                out.push((id.to_string(), pending));
            }
        }
        out
    }

    /// Stores the totals read for `identity` (`None`: keeps the last ones);
    /// its in-flight increments are in them now, or lost (a key Redis
    /// refused: the fleet undercounts by them, never overcounts).
    fn settle(&self, identity: &str, totals: Option<FleetSignals>) {
        let mut map = self
            .shard(identity)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = map.get_mut(identity) {
            if let Some(totals) = totals {
                e.totals = totals;
            }
            e.in_flight = (0, 0);
        }
    }

    /// Puts back the increments a failed exchange took: they are pending
    /// again (older than any counted since), aged as if never taken, so a
    /// store that keeps failing neither inflates the counts (they would
    /// stay in flight for good) nor grows them.
    fn restore(&self, batch: Vec<(String, Pending)>, now_ms: u64) {
        for (identity, mut taken) in batch {
            let mut map = self
                .shard(&identity)
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let Some(e) = map.get_mut(identity.as_str()) else {
                continue;
            };
            for (_, r, d) in &taken {
                e.in_flight.0 = e.in_flight.0.saturating_sub(*r);
                e.in_flight.1 = e.in_flight.1.saturating_sub(*d);
            }
            taken.append(&mut e.pending);
            e.pending = taken;
            e.age(now_ms);
        }
    }
}

impl FleetCounter for FleetCounts {
    fn record_request(&self, identity: &str, now: SystemTime) -> FleetSignals {
        self.with_entry(identity, now, |e, ms| {
            e.bump(ms, false);
            e.counts(ms)
        })
        .unwrap_or_default()
    }

    fn record_denial(&self, identity: &str, now: SystemTime) {
        self.with_entry(identity, now, |e, ms| e.bump(ms, true));
    }
}

/// The window sums of a hash's fields at `now_ms`.
fn totals(fields: &HashMap<String, u32>, now_ms: u64) -> FleetSignals {
    let mut sums = [(0u32, 0u32); 3];
    for (w, ((_, bucket), sum)) in WINDOWS_MS.iter().zip(sums.iter_mut()).enumerate() {
        let head = now_ms / bucket;
        for index in head.saturating_sub(9)..=head {
            let get = |kind: &str| {
                fields
                    .get(&format!("{w}:{index}:{kind}"))
                    .copied()
                    .unwrap_or(0)
            };
            sum.0 = sum.0.saturating_add(get("r"));
            sum.1 = sum.1.saturating_add(get("d"));
        }
    }
    let [(r0, d0), (r1, d1), (r2, d2)] = sums;
    FleetSignals {
        requests_10s: r0,
        requests_1m: r1,
        requests_10m: r2,
        denials_10s: d0,
        denials_1m: d1,
        denials_10m: d2,
    }
}

/// Flushes `counts` to the store every `interval`, forever. A flush the
/// connection fails puts its increments back (pending again, aged as
/// usual) and is retried on a new connection at the next interval; a key
/// Redis refuses (bad data in it) is logged, naming it, once until it
/// works again, and its increments are lost (an undercount, never an
/// overcount), while the other identities are exchanged as usual.
pub async fn run(counts: Arc<FleetCounts>, endpoint: Endpoint, keys: Keys, interval: Duration) {
    let mut conn: Option<MultiplexedConnection> = None;
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut refused = HashSet::new();
    loop {
        ticks.tick().await;
        if conn.is_none() {
            conn = endpoint
                .connect(Some(interval.max(Duration::from_millis(500))))
                .await
                .ok();
        }
        let Some(c) = conn.as_mut() else { continue };
        if let Err(e) = flush(&counts, c, &keys, &mut refused).await {
            tracing::debug!(store = %endpoint.shown, "fleet signals not exchanged: {e}");
            conn = None;
        }
    }
}

/// The key of `identity`'s counts.
fn signals_key(keys: &Keys, identity: &str) -> String {
    format!("{{{}}}:signals:{identity}", keys.prefix)
}

/// Adds to `pipe` the commands of one identity's exchange (its increments,
/// the fields that left the windows, the TTL, then `HGETALL`): how many
/// increments, and how many commands in all.
fn exchange(
    pipe: &mut redis::Pipeline,
    key: &str,
    pending: &Pending,
    now_ms: u64,
) -> (usize, usize) {
    let before = pipe.len();
    let mut increments = 0;
    for (w, (_, bucket)) in WINDOWS_MS.iter().enumerate() {
        // Outside the window (kept for a longer one): not summed, so
        // not written.
        for (ms, r, d) in pending.iter().filter(|p| in_window(p.0, now_ms, w)) {
            let index = ms / bucket;
            for (kind, n) in [("r", *r), ("d", *d)] {
                if n > 0 {
                    pipe.hincr(key, format!("{w}:{index}:{kind}"), n);
                    increments += 1;
                }
            }
        }
    }
    for (w, (_, bucket)) in WINDOWS_MS.iter().enumerate() {
        let head = now_ms / bucket;
        let old: Vec<String> = (head.saturating_sub(19)..head.saturating_sub(9))
            .flat_map(|i| [format!("{w}:{i}:r"), format!("{w}:{i}:d")])
            .collect();
        pipe.hdel(key, old);
    }
    pipe.expire(key, 660);
    pipe.hgetall(key);
    (increments, pipe.len() - before)
}

/// What Redis answered to one identity's exchange.
enum Exchanged {
    /// The counts (fields that are not counts, which celador never
    /// writes, are skipped and named).
    Counts(HashMap<String, u32>, Vec<String>),
    /// Refused: why, and whether any increment was applied.
    Refused(String, bool),
}

fn exchanged(replies: Vec<redis::Value>, increments: usize) -> Exchanged {
    let applied = replies
        .iter()
        .take(increments)
        .any(|r| !matches!(r, redis::Value::ServerError(_)));
    if let Some(redis::Value::ServerError(e)) = replies
        .iter()
        .find(|r| matches!(r, redis::Value::ServerError(_)))
    {
        return Exchanged::Refused(e.to_string(), applied);
    }
    let read = replies
        .into_iter()
        .last()
        .map(redis::from_redis_value::<HashMap<String, redis::Value>>)
        .transpose();
    match read {
        Ok(read) => {
            let (mut counts, mut bad) = (HashMap::new(), Vec::new());
            for (field, value) in read.unwrap_or_default() {
                match redis::from_redis_value::<u32>(value) {
                    Ok(n) => {
                        counts.insert(field, n);
                    }
                    Err(_) => bad.push(field),
                }
            }
            Exchanged::Counts(counts, bad)
        }
        Err(e) => Exchanged::Refused(e.to_string(), applied),
    }
}

async fn flush(
    counts: &FleetCounts,
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    refused: &mut HashSet<String>,
) -> redis::RedisResult<()> {
    let now_ms = millis(SystemTime::now());
    let batch = counts.take(now_ms);
    if batch.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    // Each identity's replies, even a refused key's: one bad key must not
    // stop the others' exchange.
    pipe.ignore_errors();
    let sizes: Vec<(usize, usize)> = batch
        .iter()
        .map(|(identity, pending)| {
            exchange(&mut pipe, &signals_key(keys, identity), pending, now_ms)
        })
        .collect();
    let mut replies = match pipe.query_async::<Vec<redis::Value>>(conn).await {
        Ok(replies) => replies.into_iter(),
        Err(e) => {
            counts.restore(batch, now_ms);
            return Err(e);
        }
    };
    for ((identity, pending), (increments, size)) in batch.into_iter().zip(sizes) {
        let key = signals_key(keys, &identity);
        match exchanged(replies.by_ref().take(size).collect(), increments) {
            Exchanged::Counts(fields, bad) => {
                if !bad.is_empty() && refused.insert(key.clone()) {
                    tracing::warn!(key = %key, "fleet signals: fields that are not counts are skipped: {}", bad.join(", "));
                } else if bad.is_empty() {
                    refused.remove(&key);
                }
                counts.settle(&identity, Some(totals(&fields, now_ms)));
            }
            Exchanged::Refused(e, applied) => {
                if refused.insert(key.clone()) {
                    tracing::warn!(key = %key, "fleet signals: the store refused the key, its counts are not exchanged until it is fixed: {e}");
                }
                // Not applied: the increments count here until they age
                // out. Applied in part: they are in the store, not read.
                if applied {
                    counts.settle(&identity, None);
                } else {
                    counts.restore(vec![(identity, pending)], now_ms);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn an_outage_keeps_pending_bounded_and_each_window_counts_only_its_age() {
        let counts = FleetCounts::new(100);
        let id = "spiffe://example.org/payments";
        // Twenty minutes with no store (nothing takes `pending`): a request
        // and a denial every second, from a minute boundary.
        let t0: u64 = 1_800_000_000_000; // a whole minute (30_000_000 of them)
        let mut seen = FleetSignals::default();
        for s in 0..1200 {
            counts.record_denial(id, at(t0 + s * 1000));
            seen = counts.record_request(id, at(t0 + s * 1000 + 500));
        }
        let pending = counts
            .shard(id)
            .lock()
            .map(|m| m.get(id).map_or(0, |e| e.pending.len()))
            .unwrap_or_default();
        assert!(pending <= 31, "{pending} pending increments");
        // At t0 + 1199.5 s: the last 10 s, the ten 6 s buckets from 1140 s,
        // the ten 1 min buckets from 600 s.
        let want = FleetSignals {
            requests_10s: 10,
            requests_1m: 60,
            requests_10m: 600,
            denials_10s: 10,
            denials_1m: 60,
            denials_10m: 600,
        };
        assert_eq!(seen, want);
        // A new minute bucket: the oldest one (600..659 s) left the window.
        let later = counts.record_request(id, at(t0 + 1200 * 1000 + 500));
        assert_eq!(later.requests_10s, 10);
        assert_eq!(later.requests_10m, 541);
    }

    #[test]
    fn exchanges_that_keep_failing_neither_inflate_nor_lose_the_counts() {
        let counts = FleetCounts::new(100);
        let id = "spiffe://example.org/exporter";
        let t0: u64 = 1_800_000_000_000;
        let mut seen = FleetSignals::default();
        // A request a second for 15 s, each followed by a flush that takes
        // the increments and fails (the connection broke): put back.
        for s in 0..15 {
            seen = counts.record_request(id, at(t0 + s * 1000));
            let now = t0 + s * 1000 + 100;
            let batch = counts.take(now);
            assert_eq!(batch.len(), 1);
            counts.restore(batch, now);
        }
        assert_eq!(seen.requests_10s, 10);
        assert_eq!(seen.requests_1m, 15);
        // Nothing stays in flight, and one more request counts once.
        let next = counts.record_request(id, at(t0 + 15_000));
        assert_eq!(next.requests_1m, 16);
        assert_eq!(next.requests_10s, 10);
        // A flush whose key Redis refused: the increments are gone (an
        // undercount), none stays in flight for good.
        let batch = counts.take(t0 + 15_100);
        assert_eq!(batch.len(), 1);
        counts.settle(id, None);
        let after = counts.record_request(id, at(t0 + 16_000));
        assert_eq!(after.requests_1m, 1);
    }

    #[test]
    fn increments_older_than_the_longest_window_are_forgotten() {
        let counts = FleetCounts::new(100);
        let id = "spiffe://example.org/exporter";
        for s in 0..5 {
            counts.record_request(id, at(s * 1000));
        }
        // Eleven minutes later: nothing of the burst is in any window.
        let seen = counts.record_request(id, at(660_000));
        assert_eq!(seen.requests_10s, 1);
        assert_eq!(seen.requests_1m, 1);
        assert_eq!(seen.requests_10m, 1);
    }
}
