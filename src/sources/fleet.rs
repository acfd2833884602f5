//! The fleet's governance store: revocations, grants and risk levels
//! shared by every celador through Redis, kept in a local replica.
//!
//! A live source, like [`super::files`]: it publishes into the [`Store`]
//! and nothing on the request path reads from it, so no check ever waits on
//! Redis. Data flow:
//!
//! ```text
//! celador revoke/grant ──MULTI: HSET entry + XADD feed──> Redis
//!                                                          │
//! replica (one task per celador): snapshot ── XREAD BLOCK from the id read
//!   with the snapshot ── on any new entry: snapshot again ── publish merged
//!   with the files into the store ── checks read the store's snapshot
//! ```
//!
//! The hashes are the authoritative state and the stream only says that it
//! changed; a snapshot reads both in one transaction, so a reader that
//! resumes the stream from the snapshot's last id misses no change, however
//! long it was away. An epoch key, set by the first write, tells a Redis
//! that came back empty from one that kept its data.
//!
//! [`keys`] names the keys, [`entries`] is the data's format and its
//! validation ([`risks`] for risk levels), [`connect`] opens connections, [`replica`] is the reader,
//! [`commands`] the writer behind `celador revoke`, `grant`, ...

pub mod commands;
pub mod connect;
pub mod entries;
pub mod keys;
pub mod replica;
pub mod risks;
pub mod signals;

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

#[cfg(doc)]
use crate::store::Store;

/// Where the store is and how to reach it.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// `redis://HOST:PORT/DB` or `rediss://HOST:PORT/DB`; a password in it
    /// is accepted but better given by `password_file` or `password_env`.
    pub url: String,
    /// An ACL user, if not `default`.
    pub username: Option<String>,
    /// A file holding the password (a mounted Secret).
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the password.
    pub password_env: Option<String>,
    /// PEM CA certificates that verify a `rediss://` server (the system's
    /// roots without it).
    pub ca_file: Option<PathBuf>,
    /// The prefix of every key, as a Redis Cluster hash tag: `{celador}:...`.
    pub key_prefix: String,
}

/// How a serving celador uses the store.
#[derive(Debug, Clone)]
pub struct ReplicaSettings {
    /// The store.
    pub store: StoreSettings,
    /// How long start-up waits for the first full sync before serving from
    /// the files alone.
    pub startup_wait: Duration,
    /// The longest grant accepted (`grants_max_duration`).
    pub grants_max_duration: Duration,
    /// How often fleet signals are exchanged; zero: not at all.
    pub signals_interval: Duration,
}

/// The staleness of a replica that never synced: the most a rule can read
/// (`signals.store_stale_seconds` is a `u32`), since it holds no revocation
/// of the store at all.
pub const NEVER_SYNCED: Duration = Duration::from_secs(u32::MAX as u64);

/// How the replica stands with the store: for `/readyz` and the metrics.
#[derive(Debug)]
pub struct StoreStatus {
    connected: AtomicBool,
    synced: AtomicBool,
    last_sync: Mutex<Option<Instant>>,
    problem: Mutex<Option<String>>,
}

impl Default for StoreStatus {
    fn default() -> Self {
        StoreStatus {
            connected: AtomicBool::new(false),
            synced: AtomicBool::new(false),
            last_sync: Mutex::new(None),
            problem: Mutex::new(None),
        }
    }
}

impl StoreStatus {
    /// Records a full sync, or a feed read that found the replica current.
    pub fn in_sync(&self) {
        *self.last_sync.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        self.connected.store(true, Ordering::Relaxed);
        self.synced.store(true, Ordering::Relaxed);
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Records that the store cannot be reached, and why.
    pub fn unreachable(&self, why: String) {
        self.connected.store(false, Ordering::Relaxed);
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    }

    /// Whether the replica is connected and current.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Whether a full sync ever succeeded.
    pub fn ever_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    /// How long the replica may have missed changes: zero while connected,
    /// else the time since the last sync; [`NEVER_SYNCED`] before the first.
    pub fn staleness(&self) -> Duration {
        if self.connected() {
            return Duration::ZERO;
        }
        let last = *self.last_sync.lock().unwrap_or_else(|p| p.into_inner());
        last.map_or(NEVER_SYNCED, |t| t.elapsed())
    }

    /// Since when the replica may have missed changes, as the store
    /// publishes it to rules (`None`: current).
    pub fn stale_since(&self, now: SystemTime) -> Option<SystemTime> {
        if self.connected() {
            return None;
        }
        let staleness = self.staleness();
        // Far enough in the past that rules read the maximum when never
        // synced; a clock that cannot go back that far gets the epoch.
        Some(now.checked_sub(staleness).unwrap_or(SystemTime::UNIX_EPOCH))
    }

    /// What `/readyz` says about the store, when something is wrong.
    pub fn detail(&self) -> Option<String> {
        if self.connected() {
            return None;
        }
        let problem = self
            .problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let why = problem.unwrap_or_else(|| "not connected yet".into());
        Some(if self.ever_synced() {
            format!(
                "governance store unreachable ({why}): deciding with the last replica, {:.0} s old, and the files",
                self.staleness().as_secs_f64()
            )
        } else {
            format!("governance store unreachable ({why}): deciding with the files alone")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_that_never_synced_is_as_stale_as_can_be() {
        let status = StoreStatus::default();
        status.unreachable("connection refused".into());
        assert_eq!(status.staleness(), NEVER_SYNCED);
        let now = SystemTime::now();
        let since = status.stale_since(now).unwrap_or(now);
        let seen = now.duration_since(since).unwrap_or_default().as_secs();
        // What rules read as `signals.store_stale_seconds` (a u32).
        assert_eq!(u32::try_from(seen).unwrap_or(u32::MAX), u32::MAX);
        // Once synced, then cut off: the time since the last sync.
        status.in_sync();
        assert_eq!(status.staleness(), Duration::ZERO);
        assert_eq!(status.stale_since(now), None);
        status.unreachable("connection reset".into());
        assert!(status.staleness() < Duration::from_secs(5));
    }
}
