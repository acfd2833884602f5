//! Risk levels written into the governance store: a CAEP
//! `risk-level-change` becomes a [`StoredRisk`] in `{prefix}:risks`, which
//! every sidecar's replica reads ([`crate::sources::fleet::risks`]).
//!
//! Data flow: [`super::StoreSink`] -> [`stored_risk`] (the entry, checked
//! by the replicas' own [`check_risk`]) -> the [`APPLY_RISK`] script: the
//! event-time comparison, the entry, its lapse time, a feed record, and the
//! removal of lapsed entries, in one atomic step.
//!
//! Each transmitter holds at most its `max_risks` entries (10,000 by
//! default): past that, a risk level about a subject it has no entry for
//! takes the place of its lowest entry if that is lower, and is otherwise
//! not kept ([`super::super::sink::Kept::Capped`]; its lowest entry is
//! found in O(log n), from a sorted set ordered by level), while its existing
//! entries are still updated and lowered, so a scoped transmitter cannot
//! grow the hash every sidecar replicates without bound, and routine lows
//! never keep out a later high.
//!
//! A risk lapses `risk_expiry` after its event unless a later event
//! refreshes it. Lapsed entries are removed from Redis by the next risk
//! write (at most 100 at a time, from a sorted set of lapse times), so the
//! hash holds at most the subjects reported within `risk_expiry`.

use std::time::{Duration, SystemTime};

use super::super::event::{Provenance, RiskLevel};
use super::super::sink::SinkError;
use super::super::subject::Target;
use crate::engine::time::rfc3339;
use crate::sources::fleet::entries;
use crate::sources::fleet::risks::{StoredRisk, check_risk};

/// Compares the event time, enforces the transmitter's cap, writes the
/// risk and its lapse time, records the change, and removes lapsed risks;
/// atomically.
///
/// KEYS: risks, event times, feed, epoch, lapses, counts (entries per
/// transmitter), order (each transmitter's entries by level and lapse).
/// ARGV: field, event time (ms), the entry's JSON, now (ms),
/// lapse time (ms), by (the transmitter), from, at (text), a new epoch, the
/// feed's length, the transmitter's cap, the level (`low`, `medium`,
/// `high`). Returns 1 if applied, 0 if older than the field's last event,
/// 3 if it would add an entry past the cap, `{4, FIELD}` if applied in
/// place of the entry `FIELD`.
///
/// At the cap, a new subject's level takes the place of the
/// transmitter's entry with the lowest level (of those, the one that
/// lapses first) if that is lower; a feed record names the entry removed.
/// Only a transmitter whose every entry is at least as high is refused.
/// Finding it is one read of the order set: a sorted set whose members
/// all score 0, so that it is ordered by member, each `LEN:SOURCE\n`, the
/// rank (one digit), the lapse (ms, 15 digits), `\nFIELD` (the length
/// keeps one source's range from holding another's), so a transmitter's
/// lowest entry is the first member of its
/// range (`ZRANGE BYLEX ... LIMIT 0 1`, O(log n)), whatever the other
/// transmitters hold. The script keeps it with the lapses set: on every
/// write, replacement and lapse. Rank 0 is an entry not yet read (written
/// before the order set existed): the set, missing, is built once from
/// the lapses set without reading the entries (its member `index` says it
/// is built), and a transmitter's unread entries are read when they are
/// the first of its range, at most 1,000 per write (the cap's answer is
/// "refused" for a write that runs out of them). Rank 1 is an entry
/// whose level cannot be read; 2, 3 and 4 are `low`, `medium` and `high`.
/// A member that no longer matches the lapses
/// set (a hand edit) is read again or dropped, so a replaced entry is
/// always one the count holds.
///
/// The count of a transmitter is its members of the lapses set, which
/// only this script changes (a field removed from the risks hash by hand
/// still counts until it lapses), so it cannot drift; a field is a
/// transmitter's by its prefix (`SOURCE|spiffe_id...`). A counts hash that
/// is missing (entries written before the cap, or the hash deleted by
/// hand) is counted again from the lapses set, once.
pub const APPLY_RISK: &str = r"
local function source_of(field)
  local source = string.match(field, '^(.*)|spiffe_id')
  if source then source = string.gsub(source, '|assurance$', '') end
  return source
end
local function prefix(source) return #source .. ':' .. source .. '\n' end
local function member(source, rank, lapse, field)
  return prefix(source) .. rank .. string.format('%015.0f', tonumber(lapse)) .. '\n' .. field
end
local function unindex(field, lapse)
  local source = source_of(field)
  if not source then return end
  local gone = {}
  for rank = 0, 4 do gone[#gone + 1] = member(source, rank, lapse, field) end
  redis.call('ZREM', KEYS[7], unpack(gone))
end
local ranks = {low = 2, medium = 3, high = 4}
local function rank_of(field)
  local ok, entry = pcall(cjson.decode, redis.call('HGET', KEYS[1], field) or '')
  return ok and type(entry) == 'table' and ranks[entry.level] or 1
end
local times = 'risk:' .. ARGV[1]
local last = redis.call('HGET', KEYS[2], times)
if last and tonumber(last) > tonumber(ARGV[2]) then return 0 end
if redis.call('EXISTS', KEYS[6]) == 0 then
  for _, field in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
    local source = source_of(field)
    if source then redis.call('HINCRBY', KEYS[6], source, 1) end
  end
end
if not redis.call('ZSCORE', KEYS[7], 'index') then
  redis.call('DEL', KEYS[7])
  local all, batch = redis.call('ZRANGE', KEYS[5], 0, -1, 'WITHSCORES'), {}
  for i = 1, #all, 2 do
    local source = source_of(all[i])
    if source then
      batch[#batch + 1] = 0
      batch[#batch + 1] = member(source, 0, all[i + 1], all[i])
    end
    if #batch >= 1000 or (i + 1 >= #all and #batch > 0) then
      redis.call('ZADD', KEYS[7], unpack(batch))
      batch = {}
    end
  end
  redis.call('ZADD', KEYS[7], 0, 'index')
end
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', ARGV[4], 'WITHSCORES', 'LIMIT', 0, 100)
for i = 1, #lapsed, 2 do
  local field = lapsed[i]
  redis.call('HDEL', KEYS[1], field)
  redis.call('HDEL', KEYS[2], 'risk:' .. field)
  unindex(field, lapsed[i + 1])
  if redis.call('ZREM', KEYS[5], field) == 1 then
    local source = source_of(field)
    if source and redis.call('HINCRBY', KEYS[6], source, -1) <= 0 then
      redis.call('HDEL', KEYS[6], source)
    end
  end
end
local before = redis.call('ZSCORE', KEYS[5], ARGV[1])
local evicted = nil
if not before and tonumber(redis.call('HGET', KEYS[6], ARGV[6]) or '0') >= tonumber(ARGV[11]) then
  local wanted = ranks[ARGV[12]] or 0
  if wanted <= 2 then return 3 end
  local mine, victim, budget = prefix(ARGV[6]), nil, 1000
  while not victim do
    local first = redis.call('ZRANGE', KEYS[7], '[' .. mine, '(' .. mine .. '5', 'BYLEX', 'LIMIT', 0, 1)[1]
    if not first then return 3 end
    local rank, lapse, field = string.match(string.sub(first, #mine + 1), '^(%d)(%d+)\n(.*)$')
    local score = field and redis.call('ZSCORE', KEYS[5], field)
    if score and rank ~= '0' and string.format('%015.0f', tonumber(score)) == lapse then
      if tonumber(rank) >= wanted then return 3 end
      victim = field
    else
      if budget <= 0 then return 3 end
      budget = budget - 1
      redis.call('ZREM', KEYS[7], first)
      if score then redis.call('ZADD', KEYS[7], 0, member(ARGV[6], rank_of(field), score, field)) end
    end
  end
  evicted = victim
  unindex(victim, redis.call('ZSCORE', KEYS[5], victim))
  redis.call('HDEL', KEYS[1], victim)
  redis.call('HDEL', KEYS[2], 'risk:' .. victim)
  redis.call('ZREM', KEYS[5], victim)
  redis.call('HINCRBY', KEYS[6], ARGV[6], -1)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[10], '*', 'op', 'risk', 'entry', victim,
    'by', ARGV[6], 'from', ARGV[7], 'at', ARGV[8])
end
if before then unindex(ARGV[1], before) end
redis.call('HSET', KEYS[2], times, ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
if redis.call('ZADD', KEYS[5], ARGV[5], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[6], ARGV[6], 1)
end
local source = source_of(ARGV[1])
if source then redis.call('ZADD', KEYS[7], 0, member(source, ranks[ARGV[12]] or 1, ARGV[5], ARGV[1])) end
redis.call('SET', KEYS[4], ARGV[9], 'NX')
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[10], '*', 'op', 'risk', 'entry', ARGV[1],
  'by', ARGV[6], 'from', ARGV[7], 'at', ARGV[8])
if evicted then return {4, evicted} end
return 1
";

/// The entry (and its JSON) for the risk `level` of `target` that `provenance` reports,
/// lapsing `expiry` after the event; `None` for a target a risk cannot
/// name (a token).
pub fn stored_risk(
    key: &str,
    host: &str,
    provenance: &Provenance,
    (target, level, reason): (&Target, RiskLevel, Option<&String>),
    expiry: Duration,
) -> Result<Option<(StoredRisk, String)>, SinkError> {
    let (spiffe_id, spiffe_id_prefix) = match target {
        Target::Id(id) => (Some(id.clone()), None),
        Target::Prefix(prefix) => (None, Some(prefix.trim_end_matches('/').to_owned())),
        Target::JwtId(_) => return Ok(None),
    };
    let lapses = provenance
        .at
        .checked_add(expiry)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let entry = StoredRisk {
        spiffe_id,
        spiffe_id_prefix,
        level,
        since: rfc3339(provenance.at),
        expires: rfc3339(lapses),
        source: provenance.transmitter.clone(),
        event: provenance.event.clone(),
        jti: provenance.jti.clone(),
        reason: reason.cloned(),
        provenance: entries::Provenance {
            by: provenance.transmitter.clone(),
            from: host.to_owned(),
            at: entries::now_text(),
        },
    };
    let json = serde_json::to_string(&entry)
        .map_err(|e| SinkError(format!("cannot write the risk level: {e}")))?;
    // The same check the replicas make: they load it.
    check_risk(key, &entry.field(), &json).map_err(SinkError)?;
    Ok(Some((entry, json)))
}
