//! An operator's revocation and withdrawal beside the revocations security
//! tools' SETs hold behind an entry (`{prefix}:ssf:held`, written by the
//! signals receiver's script): each in one script, so no SET slips between
//! reading the entry and writing it. Each reads before it writes, so a
//! user refused a read by its ACL has changed nothing when it falls back.
//!
//! Data flow: `celador revoke` / `unrevoke` ([`super::Writer`]) -> one
//! `EVAL` here -> the revocations hash, the held reports, the feed -> each
//! sidecar's replica. A user whose ACL predates this (no `EVAL`) writes
//! as before, in a `MULTI` ([`super::Writer`]), and is told what that
//! leaves undone.

use redis::aio::MultiplexedConnection;

use super::super::entries::Provenance;
use super::super::keys::{FEED_LENGTH, Keys};

/// An operator's revocation, atomically.
///
/// KEYS: revocations, held reports, feed, epoch. ARGV: field, the entry's
/// JSON, by, from, at, a new epoch, the feed's length. Over a security
/// tool's revocation of the entry (one with a `set`, written by another),
/// the operator's is held behind it, not written over it: written over, it
/// would drop the tool's report, which an expiring operator entry would
/// then take with it when it lapses. Otherwise it is written (an
/// operator's own held entry, now in force, leaves what is held). Held
/// reports that are not a hash (bad data) are left alone and the entry is
/// written, as before held reports existed: an operator's revocation is
/// never refused for them. Returns
/// `{existed (0/1), the tool held behind ('' when written), feed id}`.
const REVOKE: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local tool = ''
if cur then
  local ok, e = pcall(cjson.decode, cur)
  if ok and type(e) == 'table' and type(e['set']) == 'table' and type(e['by']) == 'string'
    and e['by'] ~= ARGV[3] then
    tool = e['by']
  end
end
local held, usable = {}, true
local raw = redis.pcall('HGET', KEYS[2], ARGV[1])
if type(raw) == 'table' and raw['err'] then
  if string.find(raw['err'], 'NOPERM', 1, true) then return redis.error_reply(raw['err']) end
  usable, tool = false, ''
elseif raw then
  local ok, h = pcall(cjson.decode, raw)
  if ok and type(h) == 'table' then
    for by, json in pairs(h) do
      if type(by) == 'string' and type(json) == 'string' then held[by] = json end
    end
  end
end
redis.call('SET', KEYS[4], ARGV[6], 'NX')
if tool ~= '' then held[ARGV[3]] = ARGV[2] else
  held[ARGV[3]] = nil
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
if not usable then
elseif next(held) == nil then
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[2], ARGV[1], cjson.encode(held))
end
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'op', 'revoke',
  'entry', ARGV[1], 'by', ARGV[3], 'from', ARGV[4], 'at', ARGV[5])
return {cur and 1 or 0, tool, id}
";

/// An operator's withdrawal, atomically: the entry and every report held
/// behind it (the operator overrides every tool; a tool that still means
/// it sends its SET again; held reports that are not a hash are left
/// alone). KEYS: revocations, held reports, feed, epoch.
/// ARGV: field, by, from, at, a new epoch, the feed's length. Returns
/// `{existed (0/1), reports held that were cleared, feed id}`.
const UNREVOKE: &str = r"
local raw = redis.pcall('HGET', KEYS[2], ARGV[1])
if type(raw) == 'table' and raw['err'] then
  if string.find(raw['err'], 'NOPERM', 1, true) then return redis.error_reply(raw['err']) end
  raw = false
end
redis.call('SET', KEYS[4], ARGV[5], 'NX')
local existed = redis.call('HDEL', KEYS[1], ARGV[1])
local cleared = 0
if raw then
  local ok, h = pcall(cjson.decode, raw)
  if ok and type(h) == 'table' then
    for _ in pairs(h) do cleared = cleared + 1 end
  end
  redis.call('HDEL', KEYS[2], ARGV[1])
end
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'op', 'unrevoke',
  'entry', ARGV[1], 'by', ARGV[2], 'from', ARGV[3], 'at', ARGV[4])
return {existed, cleared, id}
";

/// What a script did: whether the entry existed, what it says of the held
/// reports (the tool held behind, or how many were cleared), the feed id.
pub(super) struct Done {
    pub existed: bool,
    pub held: HeldOutcome,
    pub feed_id: String,
}

/// What became of the reports held behind the entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldOutcome {
    /// Nothing to say: the entry was written, or nothing was held.
    None,
    /// The operator's revocation is held behind this tool's revocation of
    /// the entry, which already revokes it.
    Behind(String),
    /// This many tools' revocations held behind the entry were withdrawn
    /// with it.
    Cleared(u64),
    /// The user may not run the scripts (an ACL older than
    /// docs/fleet.md's): written as before, reports held left as they are.
    NotTouched(String),
}

/// Runs [`REVOKE`] for `field` and its entry's `json`.
pub(super) async fn revoke(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    (field, json): (&str, &str),
    provenance: &Provenance,
    epoch: &str,
) -> redis::RedisResult<Done> {
    let (existed, tool, feed_id): (i64, String, String) = redis::cmd("EVAL")
        .arg(REVOKE)
        .arg(4)
        .arg(&keys.revocations)
        .arg(&keys.held)
        .arg(&keys.feed)
        .arg(&keys.epoch)
        .arg(field)
        .arg(json)
        .arg(&provenance.by)
        .arg(&provenance.from)
        .arg(&provenance.at)
        .arg(epoch)
        .arg(FEED_LENGTH)
        .query_async(conn)
        .await?;
    Ok(Done {
        existed: existed == 1,
        held: match tool.as_str() {
            "" => HeldOutcome::None,
            _ => HeldOutcome::Behind(tool),
        },
        feed_id,
    })
}

/// Runs [`UNREVOKE`] for `field`.
pub(super) async fn unrevoke(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    field: &str,
    provenance: &Provenance,
    epoch: &str,
) -> redis::RedisResult<Done> {
    let (existed, cleared, feed_id): (i64, u64, String) = redis::cmd("EVAL")
        .arg(UNREVOKE)
        .arg(4)
        .arg(&keys.revocations)
        .arg(&keys.held)
        .arg(&keys.feed)
        .arg(&keys.epoch)
        .arg(field)
        .arg(&provenance.by)
        .arg(&provenance.from)
        .arg(&provenance.at)
        .arg(epoch)
        .arg(FEED_LENGTH)
        .query_async(conn)
        .await?;
    Ok(Done {
        existed: existed == 1,
        held: match cleared {
            0 => HeldOutcome::None,
            n => HeldOutcome::Cleared(n),
        },
        feed_id,
    })
}

/// Whether `error` is the store refusing the user a command or a key (an
/// ACL), rather than a failure to reach it.
pub(super) fn refused_by_acl(error: &redis::RedisError) -> bool {
    error.code() == Some("NOPERM") || error.to_string().contains("NOPERM")
}
