//! The replica: one task per serving celador that keeps the store's
//! revocations, grants and risk levels in the live-state store.
//!
//! It reads the whole state and the feed's last id in one transaction,
//! publishes it, then blocks on the feed (`XREAD BLOCK`) from that id; any
//! new entry means "read the whole state again". So a change made while
//! the replica was disconnected, or between its read and its wait, is
//! seen at the next read: none is lost. While the store is unreachable the
//! last replica stays in force (a revocation seen is never forgotten for
//! want of Redis) and the replica reconnects with a bounded backoff.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamRangeReply, StreamReadOptions, StreamReadReply};
use tokio::sync::watch;

use super::connect::{CONNECT_TIMEOUT, Endpoint};
use super::entries::{self, Entries};
use super::keys::Keys;
use super::risks;
use super::{ReplicaSettings, StoreStatus};
use crate::metrics::Metrics;
use crate::store::Store;

/// How long one wait on the feed blocks in Redis: the replica is known
/// current at least this often.
const BLOCK: Duration = Duration::from_secs(1);
/// How long past `BLOCK` a silent server is waited for before the
/// connection is dropped and opened again.
const SILENCE: Duration = Duration::from_secs(2);
/// How often the whole state is read even without a feed record: catches
/// an entry written by hand without one, and a `FLUSHALL`.
const RESYNC: Duration = Duration::from_secs(30);
/// Reconnection backoff bounds.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));

/// What the replica holds between reads.
#[derive(Debug, Default)]
struct State {
    entries: Entries,
    epoch: Option<String>,
    last_id: String,
    /// The entries last published, and the time their lapses were judged at.
    published: Option<Entries>,
    next_lapse: Option<SystemTime>,
}

/// A hash as Redis returns it.
type Hash = BTreeMap<Vec<u8>, Vec<u8>>;

/// A hash's fields and values as text.
fn text(hash: Hash) -> BTreeMap<String, String> {
    hash.into_iter()
        .map(|(f, v)| {
            (
                String::from_utf8_lossy(&f).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect()
}

/// The replica's task and what it reports to.
pub struct Replica {
    endpoint: Endpoint,
    keys: Keys,
    grants_max_duration: Duration,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    status: Arc<StoreStatus>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("store", &self.endpoint.shown)
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// A replica of the store `settings` name, publishing into `store`.
    pub fn new(
        settings: &ReplicaSettings,
        endpoint: Endpoint,
        (store, metrics): (Arc<Store>, Arc<Metrics>),
        status: Arc<StoreStatus>,
    ) -> Self {
        Replica {
            endpoint,
            keys: Keys::new(&settings.store.key_prefix),
            grants_max_duration: settings.grants_max_duration,
            metrics,
            store,
            status,
        }
    }

    /// Runs the replica in the background; the receiver turns `true` after
    /// the first full sync.
    pub fn spawn(self) -> watch::Receiver<bool> {
        let (synced, first) = watch::channel(false);
        // Stale from the start: before the first sync the replica holds none
        // of the store's revocations (rules read the maximum staleness).
        self.store
            .publish_store_staleness(self.status.stale_since(SystemTime::now()));
        tokio::spawn(self.run(synced));
        first
    }

    async fn run(self, synced: watch::Sender<bool>) {
        let mut state = State {
            last_id: "0-0".into(),
            ..State::default()
        };
        let mut backoff = BACKOFF.0;
        loop {
            let problem = self.follow(&mut state, &synced).await;
            let was_connected = self.status.connected();
            self.status.unreachable(problem.clone());
            self.store
                .publish_store_staleness(self.status.stale_since(SystemTime::now()));
            self.metrics.governance.store.connected.set(0);
            if was_connected || !self.status.ever_synced() && backoff == BACKOFF.0 {
                tracing::warn!(store = %self.endpoint.shown, "governance store unreachable ({problem}): keeping the last replica; retrying");
            }
            if was_connected {
                backoff = BACKOFF.0;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF.1);
        }
    }

    /// Connects, syncs and follows the feed until the connection fails:
    /// why it did.
    async fn follow(&self, state: &mut State, synced: &watch::Sender<bool>) -> String {
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, self.endpoint.connect(None)).await;
        let mut conn = match connected {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return e.to_string(),
            Err(_) => return "timed out connecting".into(),
        };
        loop {
            if let Err(e) = self.sync(&mut conn, state).await {
                return e;
            }
            if !*synced.borrow() {
                tracing::info!(store = %self.endpoint.shown, revocations = state.entries.revocations.len(), grants = state.entries.grants.len(), "governance store synced");
            }
            synced.send_replace(true);
            if let Err(e) = self.wait_for_change(&mut conn, state).await {
                return e;
            }
        }
    }

    /// Reads the whole state with the feed's last id, in one transaction,
    /// and publishes it.
    async fn sync(
        &self,
        conn: &mut MultiplexedConnection,
        state: &mut State,
    ) -> Result<(), String> {
        let k = &self.keys;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .get(&k.epoch)
            .hgetall(&k.revocations)
            .hgetall(&k.grants)
            .hgetall(&k.risks)
            .xrevrange_count(&k.feed, "+", "-", 1);
        let read = pipe.query_async::<(Option<String>, Hash, Hash, Hash, StreamRangeReply)>(conn);
        let (epoch, revocations, grants, risks, last) = tokio::time::timeout(SILENCE, read)
            .await
            .map_err(|_| "timed out reading the store".to_owned())?
            .map_err(|e| e.to_string())?;
        self.metrics.governance.store.syncs.inc();
        if state.epoch.is_some() && epoch != state.epoch {
            self.metrics.governance.store.epochs.inc();
            tracing::warn!(store = %self.endpoint.shown, key = %k.epoch, "the governance store came back empty or was replaced (a new epoch): following it, with what it holds now");
            state.entries = Entries::default();
        }
        state.epoch = epoch;
        state.last_id = last
            .ids
            .last()
            .map_or_else(|| "0-0".into(), |id| id.id.clone());
        let mut loaded = entries::load(
            k,
            &text(revocations),
            &text(grants),
            &state.entries,
            self.grants_max_duration,
            SystemTime::now(),
        );
        let (risks, refused) = risks::load(&k.risks, &text(risks), &state.entries.risks);
        loaded.entries.risks = risks;
        for problem in loaded.refused.iter().chain(&refused) {
            self.metrics.governance.store.refused_entries.inc();
            tracing::error!(store = %self.endpoint.shown, "refused an entry of the governance store, keeping its last good value (if any): {problem}");
        }
        state.entries = loaded.entries;
        self.publish(state);
        self.status.in_sync();
        self.store.publish_store_staleness(None);
        self.metrics.governance.store.connected.set(1);
        Ok(())
    }

    /// Publishes the replica, if it changed or a revocation lapsed.
    fn publish(&self, state: &mut State) {
        let now = SystemTime::now();
        let lapsed = state.next_lapse.is_some_and(|t| t <= now);
        if !lapsed && state.published.as_ref() == Some(&state.entries) {
            return;
        }
        match entries::governance(&self.keys, &state.entries, now) {
            Ok((revocations, grants, next_lapse)) => {
                tracing::info!(store = %self.endpoint.shown, revocations = revocations.len(), grants = grants.grants().len(), "governance store entries in force");
                self.store
                    .publish_store_governance(Arc::new(grants), Arc::new(revocations));
                // Lapsed risks are left out here, and each lapses in the
                // engine at its time: no publish is needed for that.
                let risks = risks::risks(state.entries.risks.values(), now);
                tracing::info!(store = %self.endpoint.shown, risks = risks.len(), "governance store risk levels in force");
                self.store.publish_store_risks(Arc::new(risks));
                state.published = Some(state.entries.clone());
                state.next_lapse = next_lapse;
            }
            Err(e) => {
                tracing::error!(store = %self.endpoint.shown, "the governance store's entries do not load together; keeping the last good state: {e}")
            }
        }
    }

    /// Blocks on the feed until it has entries after the last id read,
    /// logging each; meanwhile lapsed revocations are withdrawn.
    async fn wait_for_change(
        &self,
        conn: &mut MultiplexedConnection,
        state: &mut State,
    ) -> Result<(), String> {
        let since = std::time::Instant::now();
        while since.elapsed() < RESYNC {
            let block = state
                .next_lapse
                .and_then(|t| t.duration_since(SystemTime::now()).ok())
                .map_or(BLOCK, |d| d.clamp(Duration::from_millis(1), BLOCK));
            let millis = usize::try_from(block.as_millis()).unwrap_or(1000);
            let options = StreamReadOptions::default().block(millis).count(100);
            let (keys, ids) = ([&self.keys.feed], [&state.last_id]);
            let read = conn.xread_options::<_, _, Option<StreamReadReply>>(&keys, &ids, &options);
            let reply = tokio::time::timeout(block + SILENCE, read)
                .await
                .map_err(|_| "the store did not answer a feed read in time".to_owned())?
                .map_err(|e| e.to_string())?;
            let changes: Vec<_> = reply
                .into_iter()
                .flat_map(|r| r.keys)
                .flat_map(|k| k.ids)
                .collect();
            if changes.is_empty() {
                self.status.in_sync();
                self.publish(state);
                continue;
            }
            for change in &changes {
                let field = |name: &str| change.get::<String>(name).unwrap_or_default();
                tracing::info!(
                    target: "celador::governance",
                    id = %change.id,
                    op = %field("op"),
                    entry = %field("entry"),
                    by = %field("by"),
                    from = %field("from"),
                    at = %field("at"),
                    "governance store change"
                );
            }
            return Ok(());
        }
        Ok(())
    }
}
