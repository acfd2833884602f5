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
        let epoch = random_epoch();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(&self.keys.epoch)
            .arg(&epoch)
            .arg("NX")
            .ignore()
            .hexists(&key, &entry);
        match &value {
            Some(v) => pipe.hset(&key, &entry, v).ignore(),
            None => pipe.hdel(&key, &entry).ignore(),
        };
        pipe.xadd_maxlen(
            &self.keys.feed,
            StreamMaxlen::Approx(FEED_LENGTH),
            "*",
            &[
                ("op", op),
                ("entry", entry.as_str()),
                ("by", provenance.by.as_str()),
                ("from", provenance.from.as_str()),
                ("at", provenance.at.as_str()),
            ],
        );
        let (existed, feed_id): (bool, String) = pipe
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

    /// Revokes what `entry` names; over a security tool's revocation of
    /// it, held behind that ([`held`]).
    pub async fn revoke(&mut self, entry: StoredRevocation) -> Result<Change, String> {
        let field = entry.field();
        let json = serde_json::to_string(&entry).map_err(|e| e.to_string())?;
        check_revocation(&self.keys.revocations, &field, &json)?;
        let key = self.keys.revocations.clone();
        let epoch = random_epoch();
        let done = held::revoke(
            &mut self.conn,
            &self.keys,
            (&field, &json),
            &entry.provenance,
            &epoch,
        )
        .await;
        self.scripted("revoke", key, (field, json), entry.provenance, done)
            .await
    }

    /// Withdraws the revocation stored under `field` (`kind:value`), and
    /// every tool's revocation held behind it.
    pub async fn unrevoke(
        &mut self,
        field: String,
        provenance: Provenance,
    ) -> Result<Change, String> {
        let key = self.keys.revocations.clone();
        let epoch = random_epoch();
        let done = held::unrevoke(&mut self.conn, &self.keys, &field, &provenance, &epoch).await;
        self.scripted("unrevoke", key, (field, String::new()), provenance, done)
            .await
    }

    /// The change a script made; when the user may not run it (an ACL
    /// older than docs/fleet.md's), the change made as before, in a
    /// `MULTI`, saying that the held reports were not touched.
    async fn scripted(
        &mut self,
        op: &'static str,
        key: String,
        (entry, value): (String, String),
        provenance: Provenance,
        done: redis::RedisResult<held::Done>,
    ) -> Result<Change, String> {
        match done {
            Ok(done) => Ok(Change {
                op,
                key,
                entry,
                value,
                replaced: done.existed,
                provenance,
                store: self.endpoint.shown.clone(),
                feed_id: done.feed_id,
                held: done.held,
            }),
            Err(e) if held::refused_by_acl(&e) => {
                let value = (op == "revoke").then_some(value);
                let mut change = self.change(op, key, entry, value, provenance).await?;
                change.held = HeldOutcome::NotTouched(e.to_string());
                Ok(change)
            }
            Err(e) => Err(format!("{}: {e}", self.endpoint.shown)),
        }
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
