//! The replica: one task per serving celador that keeps the store's
//! revocations, grants and risk levels in the live-state store.
//!
//! It reads the revocations, grants and the feed's last id in one
//! transaction, publishes them, then reads the risk levels and publishes
//! those; then it blocks on the feed (`XREAD BLOCK`) from that id. A feed
//! record about a revocation or grant means "read both hashes again"; one
//! about a risk level (`op` `risk`) means "read that field again" (`HMGET`
//! of the fields the records name), so a burst of risk levels costs each
//! replica a read of what changed, never of the whole risks hash, and a
//! revocation never waits behind a risks read of its own batch: revocations
//! are read and published first, and a risks hash that cannot be read
//! (bad data) leaves the last risks in force without stopping revocations.
//! So a change made while the replica was disconnected, or between its
//! read and its wait, is seen at the next read: none is lost (the
//! revocations and grants are read again every 30 s, the risk levels
//! every 5 min, and everything after a gap in the feed or a
//! reconnection). While the store is unreachable the last replica stays in force
//! (a revocation seen is never forgotten for want of Redis) and the
//! replica reconnects with a bounded backoff.

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
/// How often every risk level is read even without a feed record (their
/// records name each change; this catches a hand edit): less often than
/// the revocations, since the risks hash is the larger (up to each
/// transmitter's `max_risks`).
const RISKS_RESYNC: Duration = Duration::from_secs(300);
/// How many feed records one read takes: a full batch means more wait.
const FEED_BATCH: usize = 100;
/// While feed records keep coming, risk levels read are published at
/// least this often (and at once when the feed is drained): a burst of
/// risk levels costs each replica one rebuild of its risks per interval,
/// not one per batch, and revocations are published at every batch.
const RISKS_PUBLISH: Duration = Duration::from_millis(250);
/// Reconnection backoff bounds.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));

/// What the replica holds between reads.
#[derive(Debug, Default)]
struct State {
    entries: Entries,
    epoch: Option<String>,
    last_id: String,
    /// The revocations and grants last published (lapses judged since).
    published: Option<(
        BTreeMap<String, entries::StoredRevocation>,
        BTreeMap<String, entries::StoredGrant>,
    )>,
    /// The risk levels last published, and when.
    published_risks: Option<BTreeMap<String, risks::StoredRisk>>,
    risks_published_at: Option<std::time::Instant>,
    /// When every risk level was last read.
    risks_read_at: Option<std::time::Instant>,
    /// Risk levels read since they were last published.
    risks_dirty: bool,
    /// The store refused a narrow read (`XRANGE`, `HMGET`: an ACL user set
    /// up for the full re-read only): every feed record reads the whole
    /// state again, as before those reads existed.
    narrow_refused: bool,
    /// A narrow read was refused (`NOPERM`): if the whole state then
    /// reads, the narrow reads are what the store refuses.
    narrow_failed: Option<String>,
    /// The last read of every risk level failed: when to read the whole
    /// state again, and the wait after that one (doubling, at most
    /// [`RESYNC`]), so no risk level is skipped until [`RISKS_RESYNC`].
    risks_retry: Option<(std::time::Instant, Duration)>,
    next_lapse: Option<SystemTime>,
}

/// What a batch of feed records asks the replica to do.
#[derive(Debug, Default)]
struct Changed {
    /// Read the revocations and grants again.
    governance: bool,
    /// Read these risk fields again.
    risks: std::collections::BTreeSet<String>,
}

/// A stream id (`MS-SEQ`) as numbers, for ordering; `0-0` if it is not one.
fn stream_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// Whether `e` means the connection is gone (reconnect), rather than a
/// refusal of one command (bad data: keep going).
fn connection_lost(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_connection_refusal()
}

/// Whether `e` is the store refusing this user a command (`NOPERM`: an
/// ACL without the narrow reads, alone or inside the transaction), which
/// no retry changes; any other refusal (`LOADING`, a failover's
/// `READONLY`, bad data) is retried by a whole read and not held against
/// the narrow reads.
fn refused_by_acl(e: &redis::RedisError) -> bool {
    e.code() == Some("NOPERM")
        || e.clone()
            .into_server_errors()
            .is_some_and(|errors| errors.iter().any(|(_, error)| error.code() == "NOPERM"))
}

/// The hash of a reply, `None` if the reply is missing or not a hash:
/// the caller reads the whole state again rather than take it as empty.
fn hash_reply(value: redis::Value) -> Option<Hash> {
    match value {
        redis::Value::Nil => None,
        value => redis::from_redis_value(value).ok(),
    }
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
        // The risk levels too, after a (re)connection.
        let mut whole = true;
        loop {
            if let Err(e) = self.sync(&mut conn, state, whole).await {
                state.narrow_failed = None;
                return e;
            }
            if let Some(e) = state.narrow_failed.take() {
                self.narrow_refused(state, &e);
            }
            if !*synced.borrow() {
                tracing::info!(store = %self.endpoint.shown, revocations = state.entries.revocations.len(), grants = state.entries.grants.len(), "governance store synced");
            }
            synced.send_replace(true);
            match self.follow_feed(&mut conn, state).await {
                Ok(again) => whole = again,
                Err(e) => return e,
            }
        }
    }

    /// Reads the whole state: the revocations and grants with the feed's
    /// last id, in one transaction, published at once; then the risk
    /// levels, if `risks` (or a new epoch) asks for them or the last full
    /// read of them is [`RISKS_RESYNC`] old.
    async fn sync(
        &self,
        conn: &mut MultiplexedConnection,
        state: &mut State,
        risks: bool,
    ) -> Result<(), String> {
        let k = &self.keys;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .get(&k.epoch)
            .hgetall(&k.revocations)
            .hgetall(&k.grants)
            .xrevrange_count(&k.feed, "+", "-", 1);
        let read = pipe.query_async::<(Option<String>, Hash, Hash, StreamRangeReply)>(conn);
        let (epoch, revocations, grants, last) = tokio::time::timeout(SILENCE, read)
            .await
            .map_err(|_| "timed out reading the store".to_owned())?
            .map_err(|e| e.to_string())?;
        self.metrics.governance.store.syncs.inc();
        let risks = self.epoch(state, epoch)
            || risks
            || state
                .risks_read_at
                .is_none_or(|t| t.elapsed() >= RISKS_RESYNC);
        // Without the risk levels, the feed is followed from where it was:
        // a risk record after that is still read when it comes.
        if risks {
            state.last_id = last
                .ids
                .last()
                .map_or_else(|| "0-0".into(), |id| id.id.clone());
        }
        self.load_governance(state, revocations, grants);
        if risks {
            self.read_all_risks(conn, state).await?;
        }
        self.status.in_sync();
        self.store.publish_store_staleness(None);
        self.metrics.governance.store.connected.set(1);
        Ok(())
    }

    /// Reads every risk level (after the transaction: at least as new as
    /// its last id) and publishes them.
    async fn read_all_risks(
        &self,
        conn: &mut MultiplexedConnection,
        state: &mut State,
    ) -> Result<(), String> {
        let k = &self.keys;
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(&k.risks);
        match self.bounded(cmd.query_async::<Hash>(conn)).await? {
            Ok(raw) => {
                let (loaded, refused) = risks::load(&k.risks, &text(raw), &state.entries.risks);
                self.refused(&refused);
                state.entries.risks = loaded;
                state.risks_read_at = Some(std::time::Instant::now());
                state.risks_retry = None;
                self.publish_risks(state);
            }
            Err(e) => {
                self.risks_unreadable(&e);
                // Read again soon: the feed's records up to here are
                // passed, and nothing else would read them before
                // RISKS_RESYNC.
                let wait = state
                    .risks_retry
                    .map_or(Duration::from_secs(1), |(_, w)| (w * 2).min(RESYNC));
                state.risks_retry = Some((std::time::Instant::now() + wait, wait));
            }
        }
        Ok(())
    }

    /// Follows the epoch `read`: a different one means the store came
    /// back empty or was replaced, and its entries are forgotten (true).
    fn epoch(&self, state: &mut State, read: Option<String>) -> bool {
        let new = state.epoch.is_some() && read != state.epoch;
        if new {
            self.metrics.governance.store.epochs.inc();
            tracing::warn!(store = %self.endpoint.shown, key = %self.keys.epoch, "the governance store came back empty or was replaced (a new epoch): following it, with what it holds now");
            state.entries = Entries::default();
        }
        state.epoch = read;
        new
    }

    /// Loads the revocations and grants read, and publishes them.
    fn load_governance(&self, state: &mut State, revocations: Hash, grants: Hash) {
        let mut loaded = entries::load(
            &self.keys,
            &text(revocations),
            &text(grants),
            &state.entries,
            self.grants_max_duration,
            SystemTime::now(),
        );
        self.refused(&loaded.refused);
        loaded.entries.risks = std::mem::take(&mut state.entries.risks);
        state.entries = loaded.entries;
        self.publish_governance(state);
    }

    /// `read`, or the connection's loss if the server is silent.
    async fn bounded<T>(
        &self,
        read: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<redis::RedisResult<T>, String> {
        match tokio::time::timeout(SILENCE, read).await {
            Err(_) => Err("timed out reading the store".to_owned()),
            Ok(Err(e)) if connection_lost(&e) => Err(e.to_string()),
            Ok(other) => Ok(other),
        }
    }

    fn refused(&self, problems: &[String]) {
        for problem in problems {
            self.metrics.governance.store.refused_entries.inc();
            tracing::error!(store = %self.endpoint.shown, "refused an entry of the governance store, keeping its last good value (if any): {problem}");
        }
    }

    /// A narrow read was refused: from now on every feed record reads the
    /// whole state (said once).
    fn narrow_refused(&self, state: &mut State, e: &str) {
        if !state.narrow_refused {
            tracing::warn!(store = %self.endpoint.shown, "the store refused a read of what changed ({e}); reading the whole state at each change instead (grant the sidecars' user XRANGE and HMGET: docs/fleet.md)");
        }
        state.narrow_refused = true;
    }

    fn risks_unreadable(&self, e: &redis::RedisError) {
        self.metrics.governance.store.refused_entries.inc();
        tracing::error!(store = %self.endpoint.shown, key = %self.keys.risks, "the store's risk levels cannot be read, keeping the last ones (revocations and grants are read apart): {e}");
    }

    /// Publishes the revocations and grants, if they changed or one of
    /// them lapsed.
    fn publish_governance(&self, state: &mut State) {
        let now = SystemTime::now();
        let lapsed = state.next_lapse.is_some_and(|t| t <= now);
        let same = state
            .published
            .as_ref()
            .is_some_and(|(r, g)| *r == state.entries.revocations && *g == state.entries.grants);
        if !lapsed && same {
            return;
        }
        match entries::governance(&self.keys, &state.entries, now) {
            Ok((revocations, grants, next_lapse)) => {
                tracing::info!(store = %self.endpoint.shown, revocations = revocations.len(), grants = grants.grants().len(), "governance store entries in force");
                self.store
                    .publish_store_governance(Arc::new(grants), Arc::new(revocations));
                state.published = Some((
                    state.entries.revocations.clone(),
                    state.entries.grants.clone(),
                ));
                state.next_lapse = next_lapse;
            }
            Err(e) => {
                tracing::error!(store = %self.endpoint.shown, "the governance store's entries do not load together; keeping the last good state: {e}")
            }
        }
    }

    /// Publishes the risk levels, if they changed.
    fn publish_risks(&self, state: &mut State) {
        state.risks_dirty = false;
        state.risks_published_at = Some(std::time::Instant::now());
        if state.published_risks.as_ref() == Some(&state.entries.risks) {
            return;
        }
        // Lapsed risks are left out here, and each lapses in the engine at
        // its time: no publish is needed for that.
        let risks = risks::risks(state.entries.risks.values(), SystemTime::now());
        tracing::info!(store = %self.endpoint.shown, risks = risks.len(), "governance store risk levels in force");
        self.store.publish_store_risks(Arc::new(risks));
        state.published_risks = Some(state.entries.risks.clone());
    }

    /// Follows the feed for [`RESYNC`], reading again what its records
    /// name; returns early, `true`, when the whole state, risk levels
    /// included, must be read again (a new epoch, records trimmed from the
    /// feed before they were read, narrow reads refused).
    async fn follow_feed(
        &self,
        conn: &mut MultiplexedConnection,
        state: &mut State,
    ) -> Result<bool, String> {
        let since = std::time::Instant::now();
        while since.elapsed() < RESYNC {
            if state
                .risks_retry
                .is_some_and(|(at, _)| at <= std::time::Instant::now())
            {
                return Ok(true);
            }
            let changes = self.wait_for_change(conn, state).await?;
            let Some(last) = changes.last() else {
                self.status.in_sync();
                self.publish_governance(state);
                if state.risks_dirty {
                    self.publish_risks(state);
                }
                continue;
            };
            let mut changed = Changed::default();
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
                if field("op") == "risk" {
                    changed.risks.insert(field("entry"));
                } else {
                    changed.governance = true;
                }
            }
            let before = std::mem::replace(&mut state.last_id, last.id.clone());
            if state.narrow_refused || !self.read_changed(conn, state, &before, changed).await? {
                return Ok(true);
            }
            self.status.in_sync();
            let due = state
                .risks_published_at
                .is_none_or(|t| t.elapsed() >= RISKS_PUBLISH);
            if state.risks_dirty && (changes.len() < FEED_BATCH || due) {
                self.publish_risks(state);
            }
        }
        Ok(false)
    }

    /// Reads again what `changed` names, revocations first; `false` when
    /// the whole state must be read instead (a new epoch, or the feed's
    /// oldest record is past `before`: records may have been trimmed
    /// unread).
    async fn read_changed(
        &self,
        conn: &mut MultiplexedConnection,
        state: &mut State,
        before: &str,
        changed: Changed,
    ) -> Result<bool, String> {
        let k = &self.keys;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .get(&k.epoch)
            .xrange_count(&k.feed, "-", "+", 1);
        if changed.governance {
            pipe.hgetall(&k.revocations).hgetall(&k.grants);
        }
        let read = pipe.query_async::<Vec<redis::Value>>(conn);
        let mut replies = match self.bounded(read).await? {
            Ok(replies) => replies.into_iter(),
            Err(e) => {
                if refused_by_acl(&e) {
                    state.narrow_failed = Some(e.to_string());
                }
                return Ok(false);
            }
        };
        let mut next = || replies.next().unwrap_or(redis::Value::Nil);
        // A reply that does not convert is read again whole, never taken
        // as empty (which would withdraw every revocation).
        let (Ok(epoch), Ok(oldest)) = (
            redis::from_redis_value::<Option<String>>(next()),
            redis::from_redis_value::<StreamRangeReply>(next()),
        ) else {
            return Ok(false);
        };
        let trimmed = oldest
            .ids
            .first()
            .is_some_and(|first| stream_id(&first.id) > stream_id(before));
        if epoch != state.epoch || trimmed {
            return Ok(false);
        }
        if changed.governance {
            let (Some(revocations), Some(grants)) = (hash_reply(next()), hash_reply(next())) else {
                return Ok(false);
            };
            self.load_governance(state, revocations, grants);
        }
        if !changed.risks.is_empty() {
            return self.read_risks(conn, state, changed.risks).await;
        }
        Ok(true)
    }

    /// Reads the risk `fields` again (a field gone is removed); the caller
    /// publishes them. `false` when the read failed: the whole state is
    /// read instead, since the feed's last id is already past these
    /// records.
    async fn read_risks(
        &self,
        conn: &mut MultiplexedConnection,
        state: &mut State,
        fields: std::collections::BTreeSet<String>,
    ) -> Result<bool, String> {
        let k = &self.keys;
        let fields: Vec<String> = fields.into_iter().collect();
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(&k.risks).arg(&fields);
        let read = cmd.query_async::<Vec<Option<Vec<u8>>>>(conn);
        let values = match self.bounded(read).await? {
            Ok(values) => values,
            Err(e) => {
                if refused_by_acl(&e) {
                    self.narrow_refused(state, &e.to_string());
                }
                return Ok(false);
            }
        };
        let mut present = BTreeMap::new();
        for (field, value) in fields.iter().zip(values) {
            match value {
                Some(v) => {
                    present.insert(field.clone(), String::from_utf8_lossy(&v).into_owned());
                }
                None => {
                    state.entries.risks.remove(field);
                }
            }
        }
        let (loaded, refused) = risks::load(&k.risks, &present, &state.entries.risks);
        self.refused(&refused);
        for field in present.keys() {
            // A refused field with no last good value is left out.
            match loaded.get(field) {
                Some(entry) => state.entries.risks.insert(field.clone(), entry.clone()),
                None => state.entries.risks.remove(field),
            };
        }
        state.risks_dirty = true;
        Ok(true)
    }

    /// Blocks on the feed until it has entries after the last id read:
    /// them (none when the wait timed out); meanwhile lapsed revocations
    /// are withdrawn.
    async fn wait_for_change(
        &self,
        conn: &mut MultiplexedConnection,
        state: &mut State,
    ) -> Result<Vec<redis::streams::StreamId>, String> {
        let block = state
            .next_lapse
            .and_then(|t| t.duration_since(SystemTime::now()).ok())
            .map_or(BLOCK, |d| d.clamp(Duration::from_millis(1), BLOCK));
        let millis = usize::try_from(block.as_millis()).unwrap_or(1000);
        let options = StreamReadOptions::default().block(millis).count(FEED_BATCH);
        let (keys, ids) = ([&self.keys.feed], [&state.last_id]);
        let read = conn.xread_options::<_, _, Option<StreamReadReply>>(&keys, &ids, &options);
        let reply = tokio::time::timeout(block + SILENCE, read)
            .await
            .map_err(|_| "the store did not answer a feed read in time".to_owned())?
            .map_err(|e| e.to_string())?;
        Ok(reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::{ErrorKind, RedisError, ServerErrorKind, Value};

    #[test]
    fn only_an_acl_refusal_gives_up_the_narrow_reads() {
        let refused = RedisError::from((ErrorKind::Server(ServerErrorKind::NoPerm), "no perm"));
        assert!(refused_by_acl(&refused));
        let loading =
            RedisError::from((ErrorKind::Server(ServerErrorKind::BusyLoading), "loading"));
        assert!(!refused_by_acl(&loading));
        let wrong_type = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "WRONGTYPE",
        ));
        assert!(!refused_by_acl(&wrong_type));
        let io = RedisError::from(std::io::Error::other("reset"));
        assert!(!refused_by_acl(&io));
    }

    #[test]
    fn a_reply_that_is_not_a_hash_is_read_again_never_taken_as_empty() {
        let hash = Value::Map(vec![(
            Value::BulkString(b"spiffe_id:spiffe://a/b".to_vec()),
            Value::BulkString(b"{}".to_vec()),
        )]);
        assert_eq!(hash_reply(hash).map(|h| h.len()), Some(1));
        assert_eq!(hash_reply(Value::Array(vec![])), Some(Hash::new()));
        assert_eq!(hash_reply(Value::Nil), None);
        assert_eq!(hash_reply(Value::Okay), None);
        assert_eq!(hash_reply(Value::Int(3)), None);
        assert_eq!(hash_reply(Value::SimpleString("not a hash".into())), None);
    }
}
