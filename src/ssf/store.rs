//! The governance-store sink: the receiver's revocations and risk levels
//! written into the fleet's Redis store, where every sidecar's replica sees
//! them within a second, like a `celador revoke` ([`risk`] for risk
//! levels).
//!
//! Data flow: [`super::receiver`] -> [`StoreSink::apply`] -> one Lua script
//! per action in Redis (the entry in the revocations hash, a feed record,
//! the event time) -> each sidecar's replica ([`crate::sources::fleet`]).
//!
//! An entry is exactly what `celador revoke` writes: a
//! [`StoredRevocation`] checked by the same [`check_revocation`], under the
//! same field, with the same feed record; its provenance names the
//! transmitter (`by`) and the receiver's host (`from`), and its `set` the
//! SET it came from (transmitter, event type, `jti`: the audit record's
//! `revoked.set`), as its reason does in words.
//!
//! Ordering: SETs may arrive in any order (RFC 8417 §5.3). The time of the
//! event that last set or cleared each field is kept in a hash beside the
//! revocations (`{prefix}:ssf:event-times`, cleared fields included), and
//! the script compares it and writes in one atomic step, so an older event
//! never undoes a newer one, whichever receiver replica applies it. The
//! comparison is among SETs only: `celador revoke` and `unrevoke` do not
//! record an event time. A SET never removes a revocation it did not make
//! (one with no event time: a `celador revoke` during an incident stands
//! until `celador unrevoke`); a manual `unrevoke` stands until a SET about
//! the same entry arrives. A SET's revocation of an entry another writer
//! holds is kept behind it (`{prefix}:ssf:held`) and takes its place when
//! that writer withdraws it: an entry stays revoked while any report of it
//! stands ([`APPLY`]).
//!
//! Bound: a revocation's event time is kept for the receiver's `max_age`
//! (`{prefix}:ssf:event-order`, a sorted set by event time, beside the
//! hash): each write first removes up to 100 entries whose event time is
//! older than Redis's clock minus `max_age`, so the hash holds about the
//! (transmitter, entry) pairs reported within `max_age`. Soundness: an
//! event finding no entry is applied only if its time is within `max_age`
//! of Redis's clock, hence later than every entry removed before it (each
//! was older than an earlier horizon); an older one (its
//! `event_timestamp` lies more than `max_age` before the clock, though
//! its SET's `iat` is recent) might be older than a removed event: a
//! withdrawal then changes nothing ([`Kept::Stale`]), while a revocation
//! is applied, failing closed (at worst it revokes again what a newer,
//! forgotten enable restored, which the transmitter's next enable or an
//! operator's `unrevoke` undoes). An event whose entry is still kept is
//! compared as always. Event times an older celador wrote are indexed too, 100 per
//! write, until a scan of the hash is done
//! (`{prefix}:ssf:event-order-scan`). Risk levels' event times go with
//! the risk when it lapses.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

use super::event::{Action, Outcome, Provenance, Revocation};
use super::sink::{Applying, Claiming, Kept, RiskCap, SetKey, Settling, Sink, SinkError};
use crate::sources::fleet::StoreSettings;
use crate::sources::fleet::commands::random_epoch;
use crate::sources::fleet::connect::Endpoint;
use crate::sources::fleet::entries::{self, StoredRevocation, check_revocation};
use crate::sources::fleet::keys::{FEED_LENGTH, Keys};
use crate::sources::fleet::risks::StoredRisk;

mod replay;
mod risk;

/// Compares the event time and writes, atomically.
///
/// KEYS: revocations, event times, feed, epoch, event order (a sorted set
/// of the event-time fields by event time), the indexing cursor, the held
/// reports. ARGV: field, event time (ms), the entry's JSON (empty:
/// remove), op, by, from, at (text), a new epoch, the feed's length, the
/// order window (ms: `max_age`), then what the receiver read before
/// ([`Seen`]): the entry and whether it loads, the held reports and whether
/// there are any, and each loading held report's lapse.
///
/// Returns 1 if applied, 0 if older than the last event of this
/// transmitter about the field, 4 if a withdrawal is older than the window
/// with no event time kept for the field (stale; a revocation that old is
/// applied: it fails closed). When the field holds a revocation another
/// transmitter (or an operator) wrote, only its writer changes or
/// withdraws it (a revocation written over it would make it the new
/// writer's to withdraw): this transmitter's revocation is **held** behind
/// it (`KEYS[7]`), and its withdrawal removes what it held (5); a
/// withdrawal with nothing held changes nothing (2). When the writer
/// withdraws its entry (one in force: reports held behind none, left by
/// an operator's withdrawal without `WATCH`, stay held), a held report the
/// sidecars load takes its place (1), so the entry stays revoked while any transmitter's report stands:
/// one without an expiry first, then the one lapsing last (in time), then
/// the earliest event, then by transmitter. An operator's revocation with an expiry is held behind
/// a lasting report rather than left to lapse with the report held behind
/// it. The receiver reads the entry first and says whether the sidecars
/// load it (`ARGV[11]`: the value read, `ARGV[12]`: `none`, `loads` or
/// `refused`, [`check_revocation`]); an entry or held reports that changed
/// since are read again (6). One they refuse is written over by a revocation and left to
/// its writer by a withdrawal (2). A held-reports key that is not a hash
/// (nothing readable in it) is deleted and written afresh.
///
/// Event times are kept per transmitter and field, so one transmitter's
/// events (an `iat` ahead of the clock included) never order another's;
/// those older than the window are removed first (at most 100 per call).
/// Redis's clock (`TIME`), not the receiver's, sets the window: every
/// receiver replica prunes and compares against the same clock. Event
/// times written before the order was kept (an older celador) are indexed
/// by their time, 100 per call, from a `HSCAN` cursor kept until the scan
/// is `done`.
const APPLY: &str = r"
local scan = redis.call('GET', KEYS[6])
if scan ~= 'done' then
  local step = redis.call('HSCAN', KEYS[2], scan or '0', 'COUNT', 100)
  for i = 1, #step[2], 2 do
    local f = step[2][i]
    if string.sub(f, 1, 5) ~= 'risk:' then
      redis.call('ZADD', KEYS[5], 'NX', step[2][i + 1], f)
    end
  end
  if step[1] == '0' then redis.call('SET', KEYS[6], 'done') else redis.call('SET', KEYS[6], step[1]) end
end
local clock = redis.call('TIME')
local horizon = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) - tonumber(ARGV[10])
local old = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', '(' .. string.format('%.0f', horizon), 'LIMIT', 0, 100)
for _, f in ipairs(old) do
  redis.call('HDEL', KEYS[2], f)
  redis.call('ZREM', KEYS[5], f)
end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (ARGV[12] == 'none') ~= (not cur) or (cur and cur ~= ARGV[11]) then return 6 end
local other = nil
if cur and ARGV[12] == 'loads' then
  local ok, e = pcall(cjson.decode, cur)
  if not ok or type(e) ~= 'table' then e = {} end
  if e['by'] ~= ARGV[5] then other = e end
elseif cur then
  if ARGV[3] == '' then return 2 end
  cur = false
end
local times = ARGV[5] .. '|' .. ARGV[1]
local last = redis.call('HGET', KEYS[2], times)
if last then
  if tonumber(last) > tonumber(ARGV[2]) then return 0 end
elseif ARGV[3] == '' and tonumber(ARGV[2]) < horizon then
  return 4
end
local held, usable = {}, true
local raw = redis.pcall('HGET', KEYS[7], ARGV[1])
if type(raw) == 'table' and raw['err'] then
  if ARGV[14] ~= 'unreadable' then return 6 end
  if string.find(raw['err'], 'WRONGTYPE', 1, true) then
    redis.call('DEL', KEYS[7])
  else
    usable = false
  end
else
  if ARGV[14] == 'unreadable' or (ARGV[14] == 'none') ~= (not raw)
    or (raw and raw ~= ARGV[13]) then return 6 end
  if raw then
    local ok, h = pcall(cjson.decode, raw)
    if ok and type(h) == 'table' then
      for by, json in pairs(h) do
        if type(by) == 'string' and type(json) == 'string' then held[by] = json end
      end
    end
  end
end
if other and not usable then return 2 end
redis.call('HSET', KEYS[2], times, ARGV[2])
redis.call('ZADD', KEYS[5], ARGV[2], times)
redis.call('SET', KEYS[4], ARGV[8], 'NX')
local function save()
  if not usable then return end
  if next(held) == nil then
    redis.call('HDEL', KEYS[7], ARGV[1])
  else
    redis.call('HSET', KEYS[7], ARGV[1], cjson.encode(held))
  end
end
local function feed(op, by)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[9], '*', 'op', op, 'entry', ARGV[1],
    'by', by, 'from', ARGV[6], 'at', ARGV[7])
end
local function expiry(e)
  local t = e['expires']
  if t == nil or t == cjson.null then return nil end
  return tostring(t)
end
if other then
  if ARGV[3] ~= '' and expiry(other) then
    held[tostring(other['by'])] = cur
    held[ARGV[5]] = nil
    save()
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
    feed(ARGV[4], ARGV[5])
    return 1
  end
  local had = held[ARGV[5]] ~= nil
  if ARGV[3] == '' then held[ARGV[5]] = nil else held[ARGV[5]] = ARGV[3] end
  save()
  if ARGV[3] == '' and not had then return 2 end
  return 5
end
held[ARGV[5]] = nil
if ARGV[3] ~= '' then
  save()
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  feed(ARGV[4], ARGV[5])
  return 1
end
local lapses = {}
local ok, l = pcall(cjson.decode, ARGV[15])
if ok and type(l) == 'table' then lapses = l end
local pick, best = nil, nil
for by, _ in pairs(held) do
  local ms = lapses[by]
  if type(ms) == 'number' then
    local lasting = ms == 0
    local at = tonumber(redis.call('HGET', KEYS[2], by .. '|' .. ARGV[1]) or '0') or 0
    local better = best == nil
    if not better and lasting ~= best[1] then
      better = lasting
    elseif not better and ms ~= best[2] then
      better = ms > best[2]
    elseif not better and at ~= best[3] then
      better = at < best[3]
    elseif not better then
      better = by < pick
    end
    if better then pick, best = by, {lasting, ms, at} end
  end
end
if pick and cur then
  redis.call('HSET', KEYS[1], ARGV[1], held[pick])
  held[pick] = nil
  save()
  feed('revoke', pick)
  return 1
end
save()
redis.call('HDEL', KEYS[1], ARGV[1])
feed(ARGV[4], ARGV[5])
return 1
";

/// Writes the receiver's actions into the governance store.
pub struct StoreSink {
    endpoint: Endpoint,
    keys: Keys,
    event_times: String,
    /// The revocations' event-time fields by event time, to prune them.
    event_order: String,
    /// How long a revocation's event time is kept (the receiver's
    /// `max_age`).
    order_window: Duration,
    /// Risk entries per transmitter (the cap's count).
    risk_counts: String,
    /// Each transmitter's risk entries by level and lapse (the cap's
    /// lowest entry).
    risk_order: String,
    /// How many risk entries each transmitter may hold.
    cap: RiskCap,
    host: String,
    /// How long a risk level lasts after its event unless refreshed.
    risk_expiry: Duration,
    /// Opened on first use and again after a failure: the receiver starts
    /// without Redis and answers 503 while it is away.
    conn: Mutex<Option<MultiplexedConnection>>,
}

impl std::fmt::Debug for StoreSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSink")
            .field("store", &self.endpoint.shown)
            .finish_non_exhaustive()
    }
}

/// The stored entry that revokes what `entry` names (no reason yet).
fn stored(entry: &Revocation) -> StoredRevocation {
    let mut out = StoredRevocation::default();
    match entry {
        Revocation::SpiffeId(id) => out.spiffe_id = Some(id.clone()),
        Revocation::SpiffeIdPrefix(p) => out.spiffe_id_prefix = Some(p.clone()),
        Revocation::X509Serial { serial, issuer } => {
            out.x509_serial = Some(serial.clone());
            out.issuer = Some(issuer.clone());
        }
        Revocation::JwtId(jti) => out.jwt_id = Some(jti.clone()),
    }
    out
}

/// The risk script's answer as a number; an entry removed to make room
/// (`{4, FIELD}`) is logged, since that risk level is no longer in force.
fn applied(reply: redis::Value, provenance: &Provenance) -> redis::RedisResult<i64> {
    let redis::Value::Array(reply) = reply else {
        return Ok(redis::from_redis_value(reply)?);
    };
    let removed = reply.get(1).cloned().map(redis::from_redis_value::<String>);
    let removed = removed.and_then(Result::ok).unwrap_or_default();
    tracing::info!(transmitter = %provenance.transmitter, event = %crate::engine::redaction::text(&provenance.event), jti = %crate::engine::redaction::text(&provenance.jti), removed = %crate::engine::redaction::text(&removed), "the transmitter holds its max_risks risk levels: this one takes the place of its lowest (of those, the one that lapses first), removed");
    Ok(1)
}

/// What a script's answer says became of the action.
fn kept(applied: i64) -> Kept {
    match applied {
        1 => Kept::Applied,
        2 => Kept::Another,
        3 => Kept::Capped,
        4 => Kept::Stale,
        5 => Kept::Held,
        _ => Kept::Superseded,
    }
}

/// Milliseconds since the epoch (0 before it).
fn millis(at: SystemTime) -> u128 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

impl StoreSink {
    /// A sink writing the store `settings` name, risk levels lasting
    /// `risk_expiry` after their event, at most `cap` per transmitter
    /// (`env` reads environment variables, for the password); no
    /// connection yet.
    pub fn new(
        settings: &StoreSettings,
        (risk_expiry, cap): (Duration, RiskCap),
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<StoreSink, String> {
        let endpoint = Endpoint::new(settings, &env)?;
        let keys = Keys::new(&settings.key_prefix);
        let host = crate::sources::fleet::commands::provenance(None, &env).from;
        Ok(StoreSink {
            event_times: format!("{{{}}}:ssf:event-times", settings.key_prefix),
            event_order: format!("{{{}}}:ssf:event-order", settings.key_prefix),
            order_window: DEFAULT_ORDER_WINDOW,
            risk_counts: format!("{{{}}}:ssf:risk-counts", settings.key_prefix),
            risk_order: format!("{{{}}}:ssf:risk-order", settings.key_prefix),
            cap,
            endpoint,
            keys,
            host,
            risk_expiry,
            conn: Mutex::new(None),
        })
    }

    /// The sink keeping revocations' event times for `window` (the
    /// receiver's `max_age`: see the module's "Bound").
    pub fn with_order_window(mut self, window: Duration) -> StoreSink {
        self.order_window = window;
        self
    }

    /// The write `action` asks for, or what became of it without one.
    fn entry(&self, provenance: &Provenance, action: &Action) -> Result<Write, SinkError> {
        let (op, entry, reason) = match action {
            Action::Revoke { entry, reason } => ("revoke", entry, Some(reason)),
            Action::Unrevoke { entry } => ("unrevoke", entry, None),
            Action::Risk {
                target,
                level,
                reason,
            } => {
                let stored = risk::stored_risk(
                    &self.keys.risks,
                    &self.host,
                    provenance,
                    (target, *level, reason.as_ref()),
                    self.risk_expiry,
                )?;
                return Ok(match stored {
                    None => Write::None(Kept::Unsupported),
                    Some((risk, _)) if risk.lapses().is_none_or(|t| t <= SystemTime::now()) => {
                        Write::None(Kept::Lapsed)
                    }
                    Some((risk, json)) => Write::Risk(Box::new(risk), json),
                });
            }
        };
        let mut stored = stored(entry);
        let field = stored.field();
        let Some(reason) = reason else {
            return Ok(Write::Revocation(op, field, String::new()));
        };
        stored.reason = format!(
            "{reason} ({} SET {} from {})",
            provenance.event, provenance.jti, provenance.transmitter
        );
        stored.set = Some(provenance.stored_set());
        stored.provenance = entries::Provenance {
            by: provenance.transmitter.clone(),
            from: self.host.clone(),
            at: entries::now_text(),
        };
        let json = serde_json::to_string(&stored)
            .map_err(|e| SinkError(format!("cannot write the revocation: {e}")))?;
        // The same check a `celador revoke` makes: the replicas load it.
        check_revocation(&self.keys.revocations, &field, &json).map_err(SinkError)?;
        Ok(Write::Revocation(op, field, json))
    }

    /// Runs the script for one write: whether it applied.
    async fn write(
        &self,
        conn: &mut MultiplexedConnection,
        provenance: &Provenance,
        write: &Write,
    ) -> redis::RedisResult<Kept> {
        let Write::Revocation(_, field, _) = write else {
            return Ok(self
                .run(conn, provenance, write, Seen::default())
                .await?
                .unwrap_or(Kept::Superseded));
        };
        // The script cannot tell an entry the sidecars refuse: it is read
        // and checked here first, and read again if it changed meanwhile.
        for _ in 0..READ_AGAIN {
            // Bytes, checked as the sidecars' replica reads them (lossily):
            // an entry that is not UTF-8 must not stop the SETs about it.
            let current: Option<Vec<u8>> = redis::cmd("HGET")
                .arg(&self.keys.revocations)
                .arg(field)
                .query_async(conn)
                .await?;
            let seen = match &current {
                None => "none",
                Some(raw) => {
                    let text = String::from_utf8_lossy(raw);
                    match check_revocation(&self.keys.revocations, field, &text) {
                        Ok(_) => "loads",
                        Err(_) => "refused",
                    }
                }
            };
            let held = self.read_held(conn, field).await?;
            let seen = Seen {
                entry: (current.as_deref().unwrap_or_default(), seen),
                held: (held.0.as_slice(), held.1),
                lapses: &held.2,
            };
            if let Some(kept) = self.run(conn, provenance, write, seen).await? {
                return Ok(kept);
            }
        }
        Err(std::io::Error::other(format!(
            "the entry kept changing while the SET was applied ({READ_AGAIN} tries)"
        ))
        .into())
    }

    /// `EVAL` of `script` with `keys` keys to come. EVAL, not EVALSHA: a
    /// short script at the rate security events arrive, and no `script`
    /// feature (another hash crate) for it.
    fn script(&self, script: &str, keys: usize) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script).arg(keys);
        cmd
    }

    /// The arguments every script takes after its own: the transmitter,
    /// this host, the time, a new epoch, the feed's length.
    fn provenance_args(&self, cmd: &mut redis::Cmd, provenance: &Provenance) {
        cmd.arg(&provenance.transmitter)
            .arg(&self.host)
            .arg(entries::now_text())
            .arg(random_epoch())
            .arg(FEED_LENGTH);
    }

    /// The reports held behind `field` as read ([`Seen`]): their bytes,
    /// `none`, `some` or `unreadable` (not a hash: the script replaces it),
    /// and the lapse of each that the sidecars would load.
    async fn read_held(
        &self,
        conn: &mut MultiplexedConnection,
        field: &str,
    ) -> redis::RedisResult<(Vec<u8>, &'static str, String)> {
        let raw: Option<Vec<u8>> = match redis::cmd("HGET")
            .arg(&self.keys.held)
            .arg(field)
            .query_async(conn)
            .await
        {
            Ok(raw) => raw,
            Err(e) if e.code() == Some("WRONGTYPE") => {
                return Ok((Vec::new(), "unreadable", "{}".into()));
            }
            Err(e) => return Err(e),
        };
        let Some(raw) = raw else {
            return Ok((Vec::new(), "none", "{}".into()));
        };
        let members: BTreeMap<String, serde_json::Value> =
            serde_json::from_slice(&raw).unwrap_or_default();
        let lapses: BTreeMap<&String, u64> = members
            .iter()
            .filter_map(|(by, value)| {
                let entry = value.as_str()?;
                let loaded = check_revocation(&self.keys.held, field, entry).ok()?;
                let ms = loaded
                    .lapses()
                    .map_or(0, |t| u64::try_from(millis(t)).unwrap_or(u64::MAX).max(1));
                Some((by, ms))
            })
            .collect();
        let lapses = serde_json::to_string(&lapses).unwrap_or_else(|_| "{}".into());
        Ok((raw, "some", lapses))
    }

    /// Runs the script of `write`, with the entry as read and whether it
    /// loads (`seen`, revocations only): what became of it, none when the
    /// entry changed since it was read.
    async fn run(
        &self,
        conn: &mut MultiplexedConnection,
        provenance: &Provenance,
        write: &Write,
        seen: Seen<'_>,
    ) -> redis::RedisResult<Option<Kept>> {
        let cmd = match write {
            Write::None(kept) => return Ok(Some(*kept)),
            Write::Revocation(op, field, json) => {
                let mut cmd = self.script(APPLY, 7);
                cmd.arg(&self.keys.revocations)
                    .arg(&self.event_times)
                    .arg(&self.keys.feed)
                    .arg(&self.keys.epoch)
                    .arg(&self.event_order)
                    .arg(format!("{}-scan", self.event_order))
                    .arg(&self.keys.held)
                    .arg(field)
                    .arg(millis(provenance.at).to_string())
                    .arg(json)
                    .arg(*op);
                self.provenance_args(&mut cmd, provenance);
                cmd.arg(self.order_window.as_millis().to_string())
                    .arg(seen.entry.0)
                    .arg(seen.entry.1)
                    .arg(seen.held.0)
                    .arg(seen.held.1)
                    .arg(seen.lapses);
                cmd
            }
            Write::Risk(risk, json) => {
                let lapses = risk.lapses().map_or(0, millis);
                let mut cmd = self.script(risk::APPLY_RISK, 7);
                cmd.arg(&self.keys.risks)
                    .arg(&self.event_times)
                    .arg(&self.keys.feed)
                    .arg(&self.keys.epoch)
                    .arg(&self.keys.risk_lapses)
                    .arg(&self.risk_counts)
                    .arg(&self.risk_order)
                    .arg(risk.field())
                    .arg(millis(provenance.at).to_string())
                    .arg(json)
                    .arg(millis(SystemTime::now()).to_string())
                    .arg(lapses.to_string());
                self.provenance_args(&mut cmd, provenance);
                cmd.arg(self.cap.of(&provenance.transmitter))
                    .arg(risk.level.as_str());
                cmd
            }
        };
        let applied = applied(cmd.query_async(conn).await?, provenance)?;
        Ok((applied != 6).then(|| kept(applied)))
    }

    async fn apply_all(&self, outcomes: &[Outcome]) -> Result<Vec<Kept>, SinkError> {
        let mut writes = Vec::new();
        for outcome in outcomes {
            if let Outcome::Actions(provenance, actions) = outcome {
                for action in actions {
                    writes.push((provenance, self.entry(provenance, action)?));
                }
            }
        }
        if writes.iter().all(|(_, w)| matches!(w, Write::None(_))) {
            return Ok(writes
                .iter()
                .map(|(_, w)| match w {
                    Write::None(kept) => *kept,
                    _ => Kept::Unsupported,
                })
                .collect());
        }
        let mut slot = self.connection().await?;
        let Some(conn) = slot.as_mut() else {
            return Err(SinkError("no connection".into()));
        };
        let mut kept = Vec::with_capacity(writes.len());
        for (provenance, write) in &writes {
            match self.write(conn, provenance, write).await {
                Ok(k) => kept.push(k),
                Err(e) => {
                    *slot = None;
                    return Err(SinkError(format!("{}: {e}", self.endpoint.shown)));
                }
            }
        }
        Ok(kept)
    }
}

impl StoreSink {
    /// The connection, opened if there is none; commands on it time out
    /// after 2 s.
    async fn connection(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, Option<MultiplexedConnection>>, SinkError> {
        let mut slot = self.conn.lock().await;
        if slot.is_none() {
            let conn = self
                .endpoint
                .connect(Some(COMMAND_TIMEOUT))
                .await
                .map_err(|e| SinkError(format!("{}: {e}", self.endpoint.shown)))?;
            *slot = Some(conn);
        }
        Ok(slot)
    }

    /// Runs one replay-memory command for `set`; a failure drops the
    /// connection (opened again on next use).
    async fn replay<T>(
        &self,
        (issuer, jti, _): SetKey<'_>,
        command: impl AsyncFnOnce(&mut MultiplexedConnection, &str) -> redis::RedisResult<T>,
    ) -> Result<T, SinkError> {
        let key = replay::key(&self.keys.prefix, issuer, jti);
        let mut slot = self.connection().await?;
        let Some(conn) = slot.as_mut() else {
            return Err(SinkError("no connection".into()));
        };
        let done = tokio::time::timeout(COMMAND_TIMEOUT, command(conn, &key)).await;
        match done {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                *slot = None;
                Err(SinkError(format!("{}: {e}", self.endpoint.shown)))
            }
            Err(_) => {
                *slot = None;
                Err(SinkError(format!("{}: timed out", self.endpoint.shown)))
            }
        }
    }
}

/// How long revocations' event times are kept unless told
/// ([`StoreSink::with_order_window`]): the receiver's default `max_age`.
const DEFAULT_ORDER_WINDOW: Duration = Duration::from_secs(3600);

/// How many times a SET's revocation reads its entry again when it
/// changed between the read and the script.
const READ_AGAIN: usize = 5;

/// How long one command to the store may take: the transmitter waits for
/// the answer.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// What the receiver read before a revocation's script, which the script
/// checks is still there (else it is read again): the entry and whether
/// the sidecars load it (`none`, `loads`, `refused`), the held reports and
/// whether there are any (`none`, `some`, `unreadable`), and when each
/// held report that loads lapses (`{writer: ms}`, 0: never), which orders
/// them (in time, not as text) and leaves out those the sidecars refuse.
#[derive(Debug, Default, Clone, Copy)]
struct Seen<'a> {
    entry: (&'a [u8], &'a str),
    held: (&'a [u8], &'a str),
    lapses: &'a str,
}

/// What one action writes.
#[derive(Debug)]
enum Write {
    /// A revocation's op, field and JSON (empty: remove).
    Revocation(&'static str, String, String),
    /// A risk level, and its JSON.
    Risk(Box<StoredRisk>, String),
    /// Nothing: what became of the action.
    None(Kept),
}

impl Sink for StoreSink {
    fn apply<'a>(&'a self, outcomes: &'a [Outcome]) -> Applying<'a> {
        Box::pin(self.apply_all(outcomes))
    }

    fn claim<'a>(&'a self, set: SetKey<'a>, _ttl: Duration) -> Claiming<'a> {
        let digest = set.2;
        Box::pin(self.replay(set, async move |conn, key| {
            replay::claim(conn, key, digest).await
        }))
    }

    fn settle<'a>(&'a self, set: SetKey<'a>, ttl: Duration) -> Settling<'a> {
        let digest = set.2;
        Box::pin(self.replay(set, async move |conn, key| {
            replay::settle(conn, key, digest, ttl).await
        }))
    }

    fn release<'a>(&'a self, set: SetKey<'a>) -> Settling<'a> {
        let digest = set.2;
        Box::pin(self.replay(set, async move |conn, key| {
            replay::release(conn, key, digest).await
        }))
    }
}

#[cfg(test)]
mod tests;
