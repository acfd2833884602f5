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
//! not kept ([`super::super::sink::Kept::Capped`]), while its existing
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
/// transmitter). ARGV: field, event time (ms), the entry's JSON, now (ms),
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
/// Finding it reads the lapses set in lapse order, 500 at a time, and the
/// transmitter's entries in it, stopping at its first `low`; at the cap
/// only, not for a new `low` (nothing is lower), and among the first 1,000
/// members of the lapses set only: a script blocks Redis, and reading
/// 10,000 entries took 20 ms (a sorted index by level would lift this).
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
local times = 'risk:' .. ARGV[1]
local last = redis.call('HGET', KEYS[2], times)
if last and tonumber(last) > tonumber(ARGV[2]) then return 0 end
if redis.call('EXISTS', KEYS[6]) == 0 then
  for _, field in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
    local source = source_of(field)
    if source then redis.call('HINCRBY', KEYS[6], source, 1) end
  end
end
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', ARGV[4], 'LIMIT', 0, 100)
for _, field in ipairs(lapsed) do
  redis.call('HDEL', KEYS[1], field)
  redis.call('HDEL', KEYS[2], 'risk:' .. field)
  if redis.call('ZREM', KEYS[5], field) == 1 then
    local source = source_of(field)
    if source and redis.call('HINCRBY', KEYS[6], source, -1) <= 0 then
      redis.call('HDEL', KEYS[6], source)
    end
  end
end
local new = not redis.call('ZSCORE', KEYS[5], ARGV[1])
local evicted = nil
if new and tonumber(redis.call('HGET', KEYS[6], ARGV[6]) or '0') >= tonumber(ARGV[11]) then
  local rank = {low = 1, medium = 2, high = 3}
  local victim, lowest = nil, rank[ARGV[12]] or 0
  if lowest <= 1 then return 3 end
  local from = 0
  repeat
    local page = redis.call('ZRANGE', KEYS[5], from, from + 499)
    from = from + 500
    for _, field in ipairs(page) do
      if source_of(field) == ARGV[6] then
        local ok, entry = pcall(cjson.decode, redis.call('HGET', KEYS[1], field) or '')
        local level = ok and type(entry) == 'table' and rank[entry.level] or 0
        if level < lowest then victim, lowest = field, level end
        if lowest <= 1 then break end
      end
    end
  until lowest <= 1 or #page < 500 or from >= 1000
  if not victim then return 3 end
  evicted = victim
  redis.call('HDEL', KEYS[1], victim)
  redis.call('HDEL', KEYS[2], 'risk:' .. victim)
  redis.call('ZREM', KEYS[5], victim)
  redis.call('HINCRBY', KEYS[6], ARGV[6], -1)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[10], '*', 'op', 'risk', 'entry', victim,
    'by', ARGV[6], 'from', ARGV[7], 'at', ARGV[8])
end
redis.call('HSET', KEYS[2], times, ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
if redis.call('ZADD', KEYS[5], ARGV[5], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[6], ARGV[6], 1)
end
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
