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
//! While the store is away nothing is sent: an identity's pending increments
//! age into coarser buckets and are dropped after the longest window, so
//! they stay bounded and count only in the windows they are within.
//!
//! Redis layout: one hash per identity, `{prefix}:signals:<identity>`,
//! fields `<window>:<bucket index>:<r|d>` (windows and buckets as the local
//! table's: 10 buckets of 1 s, 6 s, 60 s); a flush deletes the fields of the
//! ten buckets before the window and refreshes the key's TTL (11 min), so a
//! hash holds at most 60 live fields.

use std::collections::HashMap;
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

    /// Stores the totals read for `identity`; its in-flight increments are
    /// in them now.
    fn settle(&self, identity: &str, totals: FleetSignals) {
        let mut map = self
            .shard(identity)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = map.get_mut(identity) {
            e.totals = totals;
            e.in_flight = (0, 0);
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

/// Flushes `counts` to the store every `interval`, forever; a flush that
/// fails puts nothing back (the fleet undercounts by it) and is retried on
/// a new connection at the next interval.
pub async fn run(counts: Arc<FleetCounts>, endpoint: Endpoint, keys: Keys, interval: Duration) {
    let mut conn: Option<MultiplexedConnection> = None;
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if conn.is_none() {
            conn = endpoint
                .connect(Some(interval.max(Duration::from_millis(500))))
                .await
                .ok();
        }
        let Some(c) = conn.as_mut() else { continue };
        if let Err(e) = flush(&counts, c, &keys).await {
            tracing::debug!(store = %endpoint.shown, "fleet signals not exchanged: {e}");
            conn = None;
        }
    }
}

async fn flush(
    counts: &FleetCounts,
    conn: &mut MultiplexedConnection,
    keys: &Keys,
) -> redis::RedisResult<()> {
    let now_ms = millis(SystemTime::now());
    let batch = counts.take(now_ms);
    if batch.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for (identity, pending) in &batch {
        let key = format!("{{{}}}:signals:{identity}", keys.prefix);
        for (w, (_, bucket)) in WINDOWS_MS.iter().enumerate() {
            // Outside the window (kept for a longer one): not summed, so
            // not written.
            for (ms, r, d) in pending.iter().filter(|p| in_window(p.0, now_ms, w)) {
                let index = ms / bucket;
                if *r > 0 {
                    pipe.hincr(&key, format!("{w}:{index}:r"), *r).ignore();
                }
                if *d > 0 {
                    pipe.hincr(&key, format!("{w}:{index}:d"), *d).ignore();
                }
            }
            let head = now_ms / bucket;
            let old: Vec<String> = (head.saturating_sub(19)..head.saturating_sub(9))
                .flat_map(|i| [format!("{w}:{i}:r"), format!("{w}:{i}:d")])
                .collect();
            pipe.hdel(&key, old).ignore();
        }
        pipe.expire(&key, 660).ignore();
        pipe.hgetall(&key);
    }
    let read: Vec<HashMap<String, u32>> = pipe.query_async(conn).await?;
    for ((identity, _), fields) in batch.iter().zip(read) {
        counts.settle(identity, totals(&fields, now_ms));
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
