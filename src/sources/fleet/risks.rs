//! Risk levels in the store: what one looks like in Redis, and how the
//! replica turns the store's risks into the engine's [`Risks`].
//!
//! Data flow: `celador signals serve` writes a [`StoredRisk`] for each CAEP
//! `risk-level-change` into `{prefix}:risks` (field `spiffe_id:ID` or
//! `spiffe_id_prefix:PREFIX`) with a feed record, in one script
//! ([`crate::ssf::store`]); the replica reads the hash with the others
//! ([`super::replica`]), checks each entry alone ([`check_risk`]; a bad one
//! is refused and its last good value kept, as for revocations) and
//! publishes [`risks`] in the live-state store. The receiver removes
//! expired entries from Redis; the engine ignores them from their
//! `expires` on, so a risk lapses to the second on every pod without a
//! round trip.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::entries::Provenance;
use crate::engine::identity::SpiffeId;
use crate::engine::risks::Risks;
use crate::engine::signals::{Risk, RiskLevel};
use crate::engine::time::parse_rfc3339;

/// A risk level as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredRisk {
    /// The SPIFFE ID it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// Or every ID under this path (no trailing `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id_prefix: Option<String>,
    /// `low`, `medium` or `high`.
    pub level: RiskLevel,
    /// When the event happened (RFC 3339): a later event wins.
    pub since: String,
    /// When it lapses (RFC 3339), unless a later event refreshes it.
    pub expires: String,
    /// The transmitter (the SET's `iss`).
    pub source: String,
    /// The event type URI.
    pub event: String,
    /// The SET's `jti`.
    pub jti: String,
    /// The transmitter's `risk_reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who wrote it (the transmitter), from where, when.
    #[serde(flatten)]
    pub provenance: Provenance,
}

impl StoredRisk {
    /// The hash field it is stored under: `SOURCE|spiffe_id:ID` or
    /// `SOURCE|spiffe_id_prefix:PREFIX` ([`risk_field`]), one per
    /// transmitter (and kind), so that a transmitter's report replaces its
    /// own only.
    pub fn field(&self) -> String {
        let subject = match (&self.spiffe_id, &self.spiffe_id_prefix) {
            (Some(id), _) => format!("spiffe_id:{id}"),
            (None, Some(prefix)) => format!("spiffe_id_prefix:{prefix}"),
            (None, None) => return String::new(),
        };
        risk_field(&self.source, &self.event, &subject)
    }

    /// When it lapses; an entry whose time does not parse was refused.
    pub fn lapses(&self) -> Option<SystemTime> {
        parse_rfc3339(&self.expires).ok()
    }
}

/// CAEP's `assurance-level-change`: the risk it derives is kept in an
/// entry of its own.
pub const ASSURANCE_EVENT: &str =
    "https://schemas.openid.net/secevent/caep/event-type/assurance-level-change";

/// The field (in the store; the key in the risks file) of a risk about
/// `subject` (`spiffe_id:ID` or `spiffe_id_prefix:PREFIX`) that `source`
/// reported in an `event`: `SOURCE|SUBJECT`, or `SOURCE|assurance|SUBJECT`
/// for a risk derived from an assurance level. Kept apart, a step-up in
/// assurance ("low") never replaces the same transmitter's
/// `risk-level-change` ("high"): the engine takes the highest in force.
pub fn risk_field(source: &str, event: &str, subject: &str) -> String {
    if event == ASSURANCE_EVENT {
        format!("{source}|assurance|{subject}")
    } else {
        format!("{source}|{subject}")
    }
}

/// Checks one stored risk, read from `field` of `key`: why it is refused,
/// naming both.
pub fn check_risk(key: &str, field: &str, raw: &str) -> Result<StoredRisk, String> {
    let at = format!("{key} field {field:?}");
    let entry: StoredRisk =
        serde_json::from_str(raw).map_err(|e| format!("{at}: not a risk entry: {e}"))?;
    let id = match (&entry.spiffe_id, &entry.spiffe_id_prefix) {
        (Some(id), None) | (None, Some(id)) => id,
        _ => return Err(format!("{at}: give one of spiffe_id and spiffe_id_prefix")),
    };
    SpiffeId::parse(id).map_err(|e| format!("{at}: {id:?}: {e}"))?;
    if entry.field() != field {
        return Err(format!(
            "{at}: the entry is about {:?}, not what its field names",
            entry.field()
        ));
    }
    parse_rfc3339(&entry.since).map_err(|e| format!("{at}: since: {e}"))?;
    parse_rfc3339(&entry.expires).map_err(|e| format!("{at}: expires: {e}"))?;
    if entry.source.trim().is_empty() {
        return Err(format!("{at}: source is empty"));
    }
    Ok(entry)
}

/// The entries of the raw hash, each checked alone: a refused one keeps
/// its value in `previous`, if it had one. Returns the entries and the
/// problems, each naming its key and field.
pub fn load(
    key: &str,
    raw: &BTreeMap<String, String>,
    previous: &BTreeMap<String, StoredRisk>,
) -> (BTreeMap<String, StoredRisk>, Vec<String>) {
    let mut entries = BTreeMap::new();
    let mut refused = Vec::new();
    for (field, raw) in raw {
        match check_risk(key, field, raw) {
            Ok(entry) => {
                entries.insert(field.clone(), entry);
            }
            Err(problem) => {
                refused.push(problem);
                if let Some(old) = previous.get(field) {
                    entries.insert(field.clone(), old.clone());
                }
            }
        }
    }
    (entries, refused)
}

/// The engine's risks for `entries` (those already lapsed at `now` left
/// out).
pub fn risks<'a>(entries: impl IntoIterator<Item = &'a StoredRisk>, now: SystemTime) -> Risks {
    let mut out = Risks::default();
    for entry in entries {
        let (Some(expires), Ok(since)) = (entry.lapses(), parse_rfc3339(&entry.since)) else {
            continue;
        };
        if expires <= now {
            continue;
        }
        let risk = Arc::new(Risk {
            level: entry.level,
            since,
            source: entry.source.clone(),
            event: entry.event.clone(),
            jti: entry.jti.clone(),
        });
        match (&entry.spiffe_id, &entry.spiffe_id_prefix) {
            (Some(id), _) => out.insert(id, risk, expires),
            (None, Some(prefix)) => out.insert(&format!("{prefix}/"), risk, expires),
            (None, None) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::identity::{Identity, X509Svid};
    use std::time::Duration;

    fn entry(id: &str, level: RiskLevel, expires: &str) -> StoredRisk {
        StoredRisk {
            spiffe_id: Some(id.into()),
            spiffe_id_prefix: None,
            level,
            since: "2026-11-22T10:00:00Z".into(),
            expires: expires.into(),
            source: "https://idp.example.com/".into(),
            event: "https://schemas.openid.net/secevent/caep/event-type/risk-level-change".into(),
            jti: "r-1".into(),
            reason: None,
            provenance: Provenance::default(),
        }
    }

    #[test]
    fn a_stored_risk_is_checked_alone_and_a_bad_one_keeps_its_last_good_value() {
        let key = "{celador}:risks";
        let good = entry(
            "spiffe://a/ns/x/sa/y",
            RiskLevel::High,
            "2026-11-23T10:00:00Z",
        );
        let field = good.field();
        let json = serde_json::to_string(&good).unwrap();
        assert_eq!(check_risk(key, &field, &json).unwrap(), good);
        let problem = check_risk(key, "spiffe_id:spiffe://a/other", &json).unwrap_err();
        assert!(problem.contains("not what its field names"), "{problem}");
        let bad_level = json.replace("\"high\"", "\"severe\"");
        let problem = check_risk(key, &field, &bad_level).unwrap_err();
        assert!(
            problem.contains(key) && problem.contains("not a risk entry"),
            "{problem}"
        );
        let bad_time = json.replace("2026-11-23T10:00:00Z", "tomorrow");
        assert!(
            check_risk(key, &field, &bad_time)
                .unwrap_err()
                .contains("expires")
        );

        let previous = BTreeMap::from([(field.clone(), good.clone())]);
        let raw = BTreeMap::from([(field.clone(), bad_level)]);
        let (entries, refused) = load(key, &raw, &previous);
        assert_eq!(entries.get(&field), Some(&good));
        assert_eq!(refused.len(), 1);
    }

    #[test]
    fn lapsed_risks_are_left_out_and_prefixes_cover_ids_under_them() {
        let now = parse_rfc3339("2026-11-22T12:00:00Z").unwrap();
        let live = StoredRisk {
            spiffe_id: None,
            spiffe_id_prefix: Some("spiffe://a/ns/x".into()),
            ..entry("spiffe://a/ns/x", RiskLevel::Medium, "2026-11-22T13:00:00Z")
        };
        let lapsed = entry(
            "spiffe://a/ns/x/sa/y",
            RiskLevel::High,
            "2026-11-22T11:00:00Z",
        );
        let risks = risks([&live, &lapsed], now);
        assert_eq!(risks.len(), 1);
        let caller = Identity {
            source: Some(Arc::new(X509Svid {
                id: SpiffeId::parse("spiffe://a/ns/x/sa/y").unwrap(),
                not_before: SystemTime::UNIX_EPOCH,
                not_after: SystemTime::UNIX_EPOCH,
                chain_not_after: SystemTime::UNIX_EPOCH,
                certificate: Default::default(),
            })),
            ..Identity::default()
        };
        let found = risks.find(&caller, now).unwrap();
        assert_eq!(found.level, RiskLevel::Medium);
        assert_eq!(risks.find(&caller, now + Duration::from_secs(3600)), None);
    }
}
