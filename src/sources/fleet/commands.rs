//! The writer behind `celador revoke`, `unrevoke`, `grant`, `ungrant` and
//! `governance`: each change is the entry and its feed record, written in
//! one transaction, so a replica that sees the record finds the entry.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::streams::StreamMaxlen;

use super::StoreSettings;
use super::connect::{CONNECT_TIMEOUT, Endpoint};
use super::entries::{Provenance, StoredGrant, StoredRevocation, check_grant, check_revocation};
use super::keys::{FEED_LENGTH, Keys};

mod held;

pub use held::HeldOutcome;

/// How long an operator's revocation or withdrawal is tried again while
/// the receiver's writes to other entries fire its `WATCH`.
const WATCH_PATIENCE: Duration = Duration::from_secs(3);

/// How long one command may wait for the store.
const TIMEOUT: Duration = Duration::from_secs(5);

/// One change made: what the command prints, and its audit event.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Change {
    /// `revoke`, `unrevoke`, `grant` or `ungrant`.
    pub op: &'static str,
    /// The key and field changed.
    pub key: String,
    /// The entry (`spiffe_id:...`, a grant's name).
    pub entry: String,
    /// The entry's JSON as written (empty when removed).
    pub value: String,
    /// Whether the entry existed before.
    pub replaced: bool,
    /// Who, from where, when.
    #[serde(flatten)]
    pub provenance: Provenance,
    /// The store, without credentials.
    pub store: String,
    /// The change feed's id of the change.
    pub feed_id: String,
    /// What became of the security tools' revocations held behind the
    /// entry ([`Keys::held`]).
    pub held: HeldOutcome,
}

/// A connection to the store for commands.
pub struct Writer {
    endpoint: Endpoint,
    keys: Keys,
    conn: MultiplexedConnection,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("store", &self.endpoint.shown)
            .finish_non_exhaustive()
    }
}

/// Who runs the command and where: `by`, else the login name; the host name.
pub fn provenance(by: Option<String>, env: impl Fn(&str) -> Option<String>) -> Provenance {
    let host = env("HOSTNAME")
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into());
    Provenance {
        by: by
            .or_else(|| env("USER"))
            .or_else(|| env("LOGNAME"))
            .unwrap_or_else(|| "unknown".into()),
        from: host,
        at: super::entries::now_text(),
    }
}

impl Writer {
    /// Connects to the store `settings` name.
    pub async fn open(
        settings: &StoreSettings,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Writer, String> {
        let endpoint = Endpoint::new(settings, env)?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT * 2, endpoint.connect(Some(TIMEOUT)))
            .await
            .map_err(|_| format!("{}: timed out connecting", endpoint.shown))?
            .map_err(|e| format!("{}: {e}", endpoint.shown))?;
        Ok(Writer {
            keys: Keys::new(&settings.key_prefix),
            endpoint,
            conn,
        })
    }

    /// The store, without credentials.
    pub fn shown(&self) -> &str {
        &self.endpoint.shown
    }

    /// Writes (`value: Some`) or removes a field of `key` with its feed
    /// record; whether it existed before, and the record's id.
    async fn change(
        &mut self,
        op: &'static str,
        key: String,
        entry: String,
        value: Option<String>,
        provenance: Provenance,
    ) -> Result<Change, String> {
        let mut pipe = self.transaction(op, &entry, &provenance);
        pipe.hexists(&key, &entry);
        match &value {
            Some(v) => pipe.hset(&key, &entry, v).ignore(),
            None => pipe.hdel(&key, &entry).ignore(),
        };
        let (feed_id, existed): (String, bool) = pipe
            .query_async(&mut self.conn)
            .await
            .map_err(|e| format!("{}: {e}", self.endpoint.shown))?;
        Ok(Change {
            op,
            key,
            entry,
            value: value.unwrap_or_default(),
            replaced: existed,
            provenance,
            store: self.endpoint.shown.clone(),
            feed_id,
            held: HeldOutcome::None,
        })
    }

    /// Revokes what `entry` names, beside the revocations held behind it
    /// ([`held::plan_revoke`]: the longest lasting is in force, the rest
    /// held; over a security tool's revocation, the operator's is held).
    pub async fn revoke(&mut self, entry: StoredRevocation) -> Result<Change, String> {
        let field = entry.field();
        let json = serde_json::to_string(&entry).map_err(|e| e.to_string())?;
        check_revocation(&self.keys.revocations, &field, &json)?;
        let key = self.keys.revocations.clone();
        let started = std::time::Instant::now();
        loop {
            let (current, held) = match self.watch(&field).await {
                Ok(read) => read,
                Err(e) => {
                    return self
                        .unheld("revoke", (field, Some(json)), entry.provenance, e)
                        .await;
                }
            };
            let plan = held::plan_revoke(
                (&key, &field),
                (&entry, &json),
                current.as_deref(),
                held::parse(held.as_deref()),
            );
            let op = match plan.behind {
                Some(_) => "hold",
                None => "revoke",
            };
            let mut pipe = self.transaction(op, &field, &entry.provenance);
            pipe.hset(&key, &field, &plan.entry).ignore();
            match plan.held.is_empty() {
                true => pipe.hdel(&self.keys.held, &field).ignore(),
                false => pipe
                    .hset(
                        &self.keys.held,
                        &field,
                        serde_json::to_string(&plan.held).unwrap_or_default(),
                    )
                    .ignore(),
            };
            if let Some(feed_id) = self.exec(pipe).await? {
                return Ok(Change {
                    op: "revoke",
                    key,
                    entry: field,
                    value: json,
                    replaced: current.is_some(),
                    provenance: entry.provenance,
                    store: self.endpoint.shown.clone(),
                    feed_id,
                    held: match (plan.behind, plan.displaced) {
                        (Some(by), _) => HeldOutcome::Behind(by),
                        (None, Some(by)) => HeldOutcome::Holds(by),
                        (None, None) => HeldOutcome::None,
                    },
                });
            }
            self.back_off(started).await?;
        }
    }

    /// Withdraws the revocation stored under `field` (`kind:value`), and
    /// every revocation held behind it: an operator overrides every writer
    /// (a tool that still means it sends its SET again).
    pub async fn unrevoke(
        &mut self,
        field: String,
        provenance: Provenance,
    ) -> Result<Change, String> {
        let key = self.keys.revocations.clone();
        let started = std::time::Instant::now();
        loop {
            let (current, held) = match self.watch(&field).await {
                Ok(read) => read,
                Err(e) => return self.unheld("unrevoke", (field, None), provenance, e).await,
            };
            let mut pipe = self.transaction("unrevoke", &field, &provenance);
            pipe.hdel(&key, &field)
                .ignore()
                .hdel(&self.keys.held, &field)
                .ignore();
            if let Some(feed_id) = self.exec(pipe).await? {
                let cleared = held::parse(held.as_deref()).len();
                return Ok(Change {
                    op: "unrevoke",
                    key,
                    entry: field,
                    value: String::new(),
                    replaced: current.is_some(),
                    provenance,
                    store: self.endpoint.shown.clone(),
                    feed_id,
                    held: match cleared {
                        0 => HeldOutcome::None,
                        n => HeldOutcome::Cleared(n),
                    },
                });
            }
            self.back_off(started).await?;
        }
    }

    /// `WATCH`es the revocations and the reports held behind entries, and
    /// reads `field`'s entry and held reports, in one round trip (the
    /// watch fires on any write to either hash, so the window is kept
    /// short); bytes that are not UTF-8 are read as the sidecars read
    /// them. The store's refusal (an older ACL, held reports that are not
    /// a hash) is an error to fall back on.
    async fn watch(
        &mut self,
        field: &str,
    ) -> Result<(Option<String>, Option<String>), redis::RedisError> {
        let mut pipe = redis::pipe();
        pipe.cmd("WATCH")
            .arg(&self.keys.revocations)
            .arg(&self.keys.held)
            .ignore()
            .hget(&self.keys.revocations, field)
            .hget(&self.keys.held, field);
        let read = pipe
            .query_async::<(Option<Vec<u8>>, Option<Vec<u8>>)>(&mut self.conn)
            .await;
        let lossy =
            |bytes: Option<Vec<u8>>| bytes.map(|b| String::from_utf8_lossy(&b).into_owned());
        match read {
            Ok((current, held)) => Ok((lossy(current), lossy(held))),
            Err(e) => {
                let _ = redis::cmd("UNWATCH")
                    .query_async::<()>(&mut self.conn)
                    .await;
                Err(e)
            }
        }
    }

    /// Waits before trying again a change whose watched keys changed (the
    /// receiver writing other entries), a few milliseconds, growing, with
    /// jitter; an error past [`WATCH_PATIENCE`].
    async fn back_off(&self, started: std::time::Instant) -> Result<(), String> {
        if started.elapsed() > WATCH_PATIENCE {
            return Err(format!(
                "{}: the revocations kept changing for {WATCH_PATIENCE:?} while this change was made: try again",
                self.endpoint.shown
            ));
        }
        let mut jitter = [0u8; 1];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut jitter);
        let grown = started.elapsed().as_millis().min(40) as u64;
        tokio::time::sleep(Duration::from_millis(
            1 + grown / 4 + u64::from(jitter[0] % 8),
        ))
        .await;
        Ok(())
    }

    /// A `MULTI` starting with the epoch and ending, when run, with the
    /// feed record of `op` on `field`.
    fn transaction(&self, op: &str, field: &str, provenance: &Provenance) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(&self.keys.epoch)
            .arg(random_epoch())
            .arg("NX")
            .ignore()
            .xadd_maxlen(
                &self.keys.feed,
                StreamMaxlen::Approx(FEED_LENGTH),
                "*",
                &[
                    ("op", op),
                    ("entry", field),
                    ("by", provenance.by.as_str()),
                    ("from", provenance.from.as_str()),
                    ("at", provenance.at.as_str()),
                ],
            );
        pipe
    }

    /// Runs `pipe` ([`Writer::transaction`]): its feed id, or none when a
    /// watched key changed meanwhile.
    async fn exec(&mut self, pipe: redis::Pipeline) -> Result<Option<String>, String> {
        pipe.query_async::<Option<(String,)>>(&mut self.conn)
            .await
            .map(|done| done.map(|(id,)| id))
            .map_err(|e| format!("{}: {e}", self.endpoint.shown))
    }

    /// The change made as before held reports existed, when the store
    /// refused to read them (`refused`); an error reaching it is returned.
    async fn unheld(
        &mut self,
        op: &'static str,
        (field, value): (String, Option<String>),
        provenance: Provenance,
        refused: redis::RedisError,
    ) -> Result<Change, String> {
        if !held::refused(&refused) {
            return Err(format!("{}: {refused}", self.endpoint.shown));
        }
        let key = self.keys.revocations.clone();
        let mut change = self.change(op, key, field, value, provenance).await?;
        change.held = HeldOutcome::NotTouched(refused.to_string());
        Ok(change)
    }

    /// Stores `grant`, refused as a grants file's would be with
    /// `max_duration`.
    pub async fn grant(
        &mut self,
        grant: StoredGrant,
        max_duration: Duration,
    ) -> Result<Change, String> {
        let json = serde_json::to_string(&grant).map_err(|e| e.to_string())?;
        check_grant(
            &self.keys.grants,
            &grant.name,
            &json,
            max_duration,
            std::time::SystemTime::now(),
        )?;
        let key = self.keys.grants.clone();
        self.change(
            "grant",
            key,
            grant.name.clone(),
            Some(json),
            grant.provenance,
        )
        .await
    }

    /// Removes the grant named `name`.
    pub async fn ungrant(
        &mut self,
        name: String,
        provenance: Provenance,
    ) -> Result<Change, String> {
        let key = self.keys.grants.clone();
        self.change("ungrant", key, name, None, provenance).await
    }

    /// The stored revocations, grants and held revocations
    /// ([`Keys::held`]), raw, by field; the held ones are an error of their
    /// own (a user whose ACL predates them still lists the rest).
    pub async fn list(&mut self) -> Result<Listed, String> {
        let mut pipe = redis::pipe();
        pipe.hgetall(&self.keys.revocations)
            .hgetall(&self.keys.grants);
        let (revocations, grants) = pipe
            .query_async(&mut self.conn)
            .await
            .map_err(|e| format!("{}: {e}", self.endpoint.shown))?;
        let held = redis::cmd("HGETALL")
            .arg(&self.keys.held)
            .query_async(&mut self.conn)
            .await
            .map_err(|e| format!("{}: {e}", self.endpoint.shown));
        Ok((revocations, grants, held))
    }

    /// The keys written to.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }
}

/// What [`Writer::list`] reads: revocations, grants and held revocations,
/// raw, by field.
pub type Listed = (
    BTreeMap<String, String>,
    BTreeMap<String, String>,
    Result<BTreeMap<String, String>, String>,
);

/// 16 random bytes in hex: an epoch no other store has.
pub fn random_epoch() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
