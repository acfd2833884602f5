//! The store's keys. Every key starts with the configured prefix as a
//! Redis Cluster hash tag (`{celador}:...`), so the keys a transaction
//! touches are in one slot.

/// The keys under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    /// Revocations: a hash, field `kind:value` (`spiffe_id:spiffe://...`),
    /// value an entry as JSON.
    pub revocations: String,
    /// Grants: a hash, field the grant's name, value the grant as JSON.
    pub grants: String,
    /// The change feed: a stream, one entry per change (who, from where,
    /// what), read from the last id seen.
    pub feed: String,
    /// A random value set by the first write: a Redis that lost its data
    /// has none, or another.
    pub epoch: String,
    /// Risk levels security tools reported: a hash, field `spiffe_id:ID`
    /// or `spiffe_id_prefix:PREFIX`, value a risk as JSON.
    pub risks: String,
    /// When each risk lapses: a sorted set (score: milliseconds since the
    /// epoch, member: the field), so the receiver removes lapsed ones.
    pub risk_lapses: String,
    /// Revocations security tools reported about an entry another writer
    /// holds (`celador signals serve`): a hash, field the entry's field,
    /// value a JSON object of each such transmitter's entry by transmitter.
    /// One takes the entry's place when its writer withdraws it.
    pub held: String,
    /// The prefix itself, for per-identity keys (fleet signals).
    pub prefix: String,
}

/// How many feed entries Redis keeps (approximately): the feed only wakes
/// readers, who then read the hashes, so a trimmed entry loses nothing.
pub const FEED_LENGTH: usize = 10_000;

impl Keys {
    /// The keys under `prefix`.
    pub fn new(prefix: &str) -> Self {
        let key = |name: &str| format!("{{{prefix}}}:{name}");
        Keys {
            revocations: key("revocations"),
            grants: key("grants"),
            feed: key("feed"),
            epoch: key("epoch"),
            risks: key("risks"),
            risk_lapses: key("risk-lapses"),
            held: key("ssf:held"),
            prefix: prefix.to_owned(),
        }
    }
}
