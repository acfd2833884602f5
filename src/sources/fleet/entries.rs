//! The store's data: what one revocation and one grant look like in Redis,
//! and how the replica turns them into the engine's [`Revocations`] and
//! [`Grants`].
//!
//! Every entry is checked alone first, exactly as an entry of a file is
//! (the same parser, named by its key and field): one that does not load
//! is refused with a message naming it, and the entry's last good value,
//! if any, stays in use. `celador revoke` and `grant` validate with the
//! same code before writing, so only a hand-written entry is ever refused.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::engine::grants::{Grants, Origin};
use crate::engine::revocations::Revocations;
use crate::engine::time::{parse_rfc3339, rfc3339};

/// Who made a change, from where and when: kept with the entry and in the
/// change feed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// Who ran the command (`--by`, or the user's login name).
    pub by: String,
    /// The host it ran on.
    pub from: String,
    /// When (RFC 3339).
    pub at: String,
}

/// A revocation as stored: a revocations file's entry, and when it lapses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredRevocation {
    /// A SPIFFE ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// A SPIFFE ID prefix: every ID under the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id_prefix: Option<String>,
    /// A leaf certificate's SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x509_sha256: Option<String>,
    /// A JWT-SVID's `jti`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_id: Option<String>,
    /// A certificate's serial number (hex), with its `issuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x509_serial: Option<String>,
    /// The issuer of `x509_serial` (a distinguished name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Why.
    pub reason: String,
    /// When it lapses (RFC 3339); never without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// The Security Event Token it came from (`celador signals serve`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<StoredSet>,
    /// Who revoked.
    #[serde(flatten)]
    pub provenance: Provenance,
}

/// The Security Event Token a revocation came from, as the receiver writes
/// it (and a revocations file's `set`): the transmitter, the event type
/// URI and the SET's `jti`, named as a risk level's are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredSet {
    /// The transmitter (the SET's `iss`).
    pub source: String,
    /// The event type URI.
    pub event: String,
    /// The SET's `jti`.
    pub jti: String,
}

impl StoredRevocation {
    /// The hash field it is stored under: `kind:value`.
    pub fn field(&self) -> String {
        // A serial is unique only under its issuer.
        if let Some(serial) = &self.x509_serial {
            let issuer = self.issuer.as_deref().unwrap_or_default();
            return format!("x509_serial:{serial}@{issuer}");
        }
        let kinds = [
            ("spiffe_id", &self.spiffe_id),
            ("spiffe_id_prefix", &self.spiffe_id_prefix),
            ("x509_sha256", &self.x509_sha256),
            ("jwt_id", &self.jwt_id),
        ];
        kinds
            .iter()
            .find_map(|(kind, v)| v.as_ref().map(|v| format!("{kind}:{v}")))
            .unwrap_or_default()
    }

    /// The entry as a revocations file writes it (no lapse, no provenance;
    /// the SET it came from, if one did).
    fn file_entry(&self) -> serde_json::Value {
        let mut v = serde_json::json!({ "reason": self.reason });
        let kinds = [
            ("spiffe_id", &self.spiffe_id),
            ("spiffe_id_prefix", &self.spiffe_id_prefix),
            ("x509_sha256", &self.x509_sha256),
            ("jwt_id", &self.jwt_id),
            ("x509_serial", &self.x509_serial),
            ("issuer", &self.issuer),
        ];
        for (kind, value) in kinds {
            if let (Some(value), Some(map)) = (value, v.as_object_mut()) {
                map.insert(kind.into(), value.clone().into());
            }
        }
        if let (Some(set), Some(map)) = (&self.set, v.as_object_mut()) {
            let set =
                serde_json::json!({ "source": set.source, "event": set.event, "jti": set.jti });
            map.insert("set".into(), set);
        }
        v
    }

    /// When it lapses, if it does.
    pub fn lapses(&self) -> Option<SystemTime> {
        self.expires.as_deref().and_then(|t| parse_rfc3339(t).ok())
    }
}

/// A grant as stored: a grants file's entry, and who gave it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredGrant {
    /// Its name (also the hash field).
    pub name: String,
    /// SPIFFE IDs, or prefixes ending in `/`.
    pub identities: Vec<String>,
    /// A CEL condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// When it opens (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    /// When it closes (RFC 3339).
    pub expires: String,
    /// Why.
    pub reason: String,
    /// Who granted.
    #[serde(flatten)]
    pub provenance: Provenance,
}

impl StoredGrant {
    fn file_entry(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "name": self.name,
            "identities": self.identities,
            "expires": self.expires,
            "reason": self.reason,
        });
        if let Some(map) = v.as_object_mut() {
            if let Some(when) = &self.when {
                map.insert("when".into(), when.clone().into());
            }
            if let Some(nb) = &self.not_before {
                map.insert("not_before".into(), nb.clone().into());
            }
        }
        v
    }
}

/// The text of a revocations file holding `entries` (JSON is YAML), one
/// entry a line.
fn revocations_text<'a>(entries: impl Iterator<Item = &'a StoredRevocation>) -> String {
    let mut text = String::from("revocations:\n");
    for e in entries {
        text.push_str(&format!("  - {}\n", e.file_entry()));
    }
    if text.ends_with(":\n") {
        text = "revocations: []\n".into();
    }
    text
}

fn grants_text<'a>(entries: impl Iterator<Item = &'a StoredGrant>) -> String {
    let mut text = String::from("grants:\n");
    for e in entries {
        text.push_str(&format!("  - {}\n", e.file_entry()));
    }
    if text.ends_with(":\n") {
        text = "grants: []\n".into();
    }
    text
}

/// Checks one stored revocation, read from `field` of `key`: why it is
/// refused, naming both.
pub fn check_revocation(key: &str, field: &str, raw: &str) -> Result<StoredRevocation, String> {
    let at = format!("{key} field {field:?}");
    let entry: StoredRevocation =
        serde_json::from_str(raw).map_err(|e| format!("{at}: not a revocation entry: {e}"))?;
    if entry.field() != field {
        return Err(format!(
            "{at}: the entry revokes {:?}, not what its field names",
            entry.field()
        ));
    }
    if let Some(t) = &entry.expires {
        parse_rfc3339(t).map_err(|e| format!("{at}: expires: {e}"))?;
    }
    Revocations::parse(&revocations_text([&entry].into_iter()), Path::new(&at))
        .map_err(|e| e.to_string().replace("revocation 1 ", "revocation "))?;
    Ok(entry)
}

/// Checks one stored grant, read from `field` of `key`, as a grants file's
/// grant is checked at `now` against `max_duration`.
pub fn check_grant(
    key: &str,
    field: &str,
    raw: &str,
    max_duration: Duration,
    now: SystemTime,
) -> Result<StoredGrant, String> {
    let at = format!("{key} field {field:?}");
    let entry: StoredGrant =
        serde_json::from_str(raw).map_err(|e| format!("{at}: not a grant entry: {e}"))?;
    if entry.name != field {
        return Err(format!("{at}: the grant is named {:?}", entry.name));
    }
    let grants = Grants::parse(
        &grants_text([&entry].into_iter()),
        Path::new(&at),
        max_duration,
        now,
    )
    .map_err(|e| {
        e.diagnostics
            .iter()
            .map(|d| format!("{at}: {}", d.message))
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    drop(grants);
    Ok(entry)
}

/// The store's entries as the replica holds them: the last good value of
/// each field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entries {
    /// Revocations by field.
    pub revocations: BTreeMap<String, StoredRevocation>,
    /// Grants by name.
    pub grants: BTreeMap<String, StoredGrant>,
    /// Risk levels by field.
    pub risks: BTreeMap<String, super::risks::StoredRisk>,
}

/// What one read of the store's hashes gave.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The entries now in force.
    pub entries: Entries,
    /// Entries refused, each naming its key and field.
    pub refused: Vec<String>,
}

/// The entries of the raw hashes: each checked alone; a refused one keeps
/// its value in `previous`, if it had one.
pub fn load(
    keys: &super::keys::Keys,
    raw_revocations: &BTreeMap<String, String>,
    raw_grants: &BTreeMap<String, String>,
    previous: &Entries,
    max_duration: Duration,
    now: SystemTime,
) -> Loaded {
    let mut out = Loaded::default();
    for (field, raw) in raw_revocations {
        match check_revocation(&keys.revocations, field, raw) {
            Ok(entry) => {
                out.entries.revocations.insert(field.clone(), entry);
            }
            Err(problem) => {
                out.refused.push(problem);
                if let Some(old) = previous.revocations.get(field) {
                    out.entries.revocations.insert(field.clone(), old.clone());
                }
            }
        }
    }
    for (field, raw) in raw_grants {
        match check_grant(&keys.grants, field, raw, max_duration, now) {
            Ok(entry) => {
                out.entries.grants.insert(field.clone(), entry);
            }
            Err(problem) => {
                out.refused.push(problem);
                if let Some(old) = previous.grants.get(field) {
                    out.entries.grants.insert(field.clone(), old.clone());
                }
            }
        }
    }
    out
}

/// The engine's revocations and grants for `entries` at `now` (lapsed
/// revocations left out), and when the next revocation lapses. Each entry
/// was checked alone, so together they load; should they not, the error
/// says why and nothing is published.
pub fn governance(
    keys: &super::keys::Keys,
    entries: &Entries,
    now: SystemTime,
) -> Result<(Revocations, Grants, Option<SystemTime>), String> {
    let live = entries
        .revocations
        .values()
        .filter(|e| e.lapses().is_none_or(|t| t > now));
    let next_lapse = entries
        .revocations
        .values()
        .filter_map(StoredRevocation::lapses)
        .filter(|t| *t > now)
        .min();
    let revocations = Revocations::parse(&revocations_text(live), Path::new(&keys.revocations))
        .map_err(|e| e.to_string())?
        .with_origin(Origin::Store);
    // Grants were checked against their longest length already, when first
    // read: a grant in force is not refused later.
    let grants = Grants::parse(
        &grants_text(entries.grants.values()),
        Path::new(&keys.grants),
        Duration::MAX,
        now,
    )
    .map_err(|e| {
        let all: Vec<String> = e.diagnostics.iter().map(ToString::to_string).collect();
        all.join("\n")
    })?
    .with_origin(Origin::Store);
    Ok((revocations, grants, next_lapse))
}

/// Now as RFC 3339, for provenance.
pub fn now_text() -> String {
    rfc3339(SystemTime::now())
}
