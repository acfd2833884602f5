//! The fleet's replay memory: a SET's `jti` remembered in the governance
//! store, so that a SET replayed to another receiver of the fleet is
//! refused (other bytes) or answered as a duplicate (the same bytes), as
//! one receiver does alone.
//!
//! Data flow: [`super::super::receiver`] claims each verified SET before
//! applying it ([`claim`]: `SET key pending:DIGEST NX GET EX 30`), settles
//! it once kept ([`settle`]: `done:DIGEST`, for the replay window), or
//! releases it when the sink failed ([`release`]), so the transmitter's
//! next attempt, at any receiver, is applied. A claim left pending by a
//! receiver that died lapses in 30 s. The key is the SHA-256 of the issuer
//! and the `jti` (a transmitter's `jti` may be long or odd).

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use sha2::{Digest, Sha256};

use super::super::sink::Claim;

/// How long a claim being applied holds before it lapses.
const PENDING: Duration = Duration::from_secs(30);

/// Removes the claim if it is still this receiver's pending one.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key of `issuer`'s `jti` under `prefix`.
pub(super) fn key(prefix: &str, issuer: &str, jti: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(issuer.as_bytes());
    hash.update([0]);
    hash.update(jti.as_bytes());
    format!("{{{prefix}}}:ssf:jti:{}", hex(&hash.finalize()))
}

fn pending(digest: [u8; 32]) -> String {
    format!("pending:{}", hex(&digest))
}

fn done(digest: [u8; 32]) -> String {
    format!("done:{}", hex(&digest))
}

/// Claims `key` for the SET with `digest`.
pub(super) async fn claim(
    conn: &mut MultiplexedConnection,
    key: &str,
    digest: [u8; 32],
) -> redis::RedisResult<Claim> {
    let before: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg(pending(digest))
        .arg("NX")
        .arg("GET")
        .arg("EX")
        .arg(PENDING.as_secs())
        .query_async(conn)
        .await?;
    Ok(match before {
        None => Claim::First,
        Some(v) if v == done(digest) => Claim::Done,
        Some(v) if v == pending(digest) => Claim::Pending,
        Some(_) => Claim::Other,
    })
}

/// Marks `key` applied, for `ttl`.
pub(super) async fn settle(
    conn: &mut MultiplexedConnection,
    key: &str,
    digest: [u8; 32],
    ttl: Duration,
) -> redis::RedisResult<()> {
    redis::cmd("SET")
        .arg(key)
        .arg(done(digest))
        .arg("EX")
        .arg(ttl.as_secs().max(1))
        .query_async(conn)
        .await
}

/// Releases `key` if it is still the pending claim for `digest`.
pub(super) async fn release(
    conn: &mut MultiplexedConnection,
    key: &str,
    digest: [u8; 32],
) -> redis::RedisResult<()> {
    redis::cmd("EVAL")
        .arg(RELEASE)
        .arg(1)
        .arg(key)
        .arg(pending(digest))
        .query_async::<i64>(conn)
        .await
        .map(drop)
}
