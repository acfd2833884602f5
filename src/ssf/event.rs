//! CAEP and RISC events turned into governance actions: revocations, their
//! removal, and per-identity risk levels.
//!
//! Data flow: a [`super::set::VerifiedSet`] comes in; each of its events is
//! looked up in the receiver's [`Mapping`] (defaults below, overridable per
//! event type in the receiver's config), its subject resolved through
//! [`super::subject::Subjects`], and out come [`Action`]s for the
//! governance sink, or the reason an event changes nothing. An event whose
//! members break its definition makes the whole SET `invalid_request`; an
//! event type celador does not act on is accepted and counted.
//!
//! | event type | default |
//! |---|---|
//! | RISC `credential-compromise`, `account-disabled`, `account-purged` | revoke the subject |
//! | RISC `account-enabled` | remove the subject's revocation |
//! | CAEP `credential-change` (`change_type` `revoke`/`delete`) | revoke the certificate (`x509_issuer` + `x509_serial`) or the token (a `jwt_id` subject) |
//! | CAEP `session-revoked`, `token-claims-change` | revoke the token a `jwt_id` subject names |
//! | CAEP `risk-level-change` | set the subject's risk level |
//! | CAEP `assurance-level-change` | set the subject's risk level through `assurance_levels` ([`assurance`]) |
//! | anything else (SSF stream events included) | accept, count, change nothing |

use std::collections::HashMap;
use std::time::SystemTime;

use serde::Deserialize;
use serde_json::Value;

use super::set::{Event, SetError, VerifiedSet};
use super::subject::{SubjectError, Subjects, Target};
use crate::engine::identity::dn::DistinguishedName;
use crate::engine::revocations::MAX_SET_TEXT;
use crate::engine::time;
use crate::sources::fleet::entries::StoredSet;

pub mod assurance;
pub use assurance::Assurance;

/// The prefix of RISC event types.
pub const RISC: &str = "https://schemas.openid.net/secevent/risc/event-type/";
/// The prefix of CAEP event types.
pub const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";

/// What the receiver does with an event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Handling {
    /// Revoke the subject (its SPIFFE ID, prefix or token).
    Revoke,
    /// Remove the subject's revocation.
    Unrevoke,
    /// Revoke the credential the event names (CAEP `credential-change`).
    RevokeCredential,
    /// Revoke the token a `jwt_id` subject names.
    RevokeToken,
    /// Set the subject's risk level from `current_level` (of an
    /// `assurance-level-change`: through `assurance_levels`).
    Risk,
    /// Accept and count it; change nothing.
    Ignore,
}

/// A risk level, as rules read it (`signals.risk.level`): the engine's.
pub use crate::engine::signals::RiskLevel;

/// The level CAEP names `name` (`LOW`, `MEDIUM`, `HIGH`; any case).
pub fn risk_level(name: &str) -> Option<RiskLevel> {
    match name.to_ascii_uppercase().as_str() {
        "LOW" => Some(RiskLevel::Low),
        "MEDIUM" => Some(RiskLevel::Medium),
        "HIGH" => Some(RiskLevel::High),
        _ => None,
    }
}

/// A credential or identity to revoke, in the terms of celador's
/// revocations.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Revocation {
    /// `spiffe_id`
    SpiffeId(String),
    /// `spiffe_id_prefix`
    SpiffeIdPrefix(String),
    /// `x509_serial` with its `issuer`.
    X509Serial {
        /// The serial number, hex.
        serial: String,
        /// The issuer's distinguished name, as the event gave it.
        issuer: String,
    },
    /// `jwt_id`
    JwtId(String),
}

impl Revocation {
    fn of(target: &Target) -> Revocation {
        match target {
            Target::Id(id) => Revocation::SpiffeId(id.clone()),
            Target::Prefix(prefix) => Revocation::SpiffeIdPrefix(prefix.clone()),
            Target::JwtId(jti) => Revocation::JwtId(jti.clone()),
        }
    }
}

/// A change to governance state an event asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Revoke `entry`.
    Revoke {
        /// What.
        entry: Revocation,
        /// Why, in the transmitter's words where it gave some.
        reason: String,
    },
    /// Remove the revocation of `entry`.
    Unrevoke {
        /// What.
        entry: Revocation,
    },
    /// Set the risk level of `target` (a SPIFFE ID or prefix).
    Risk {
        /// Whose.
        target: Target,
        /// The new level.
        level: RiskLevel,
        /// Why, if the transmitter said.
        reason: Option<String>,
    },
}

/// Where an action came from, recorded with it and in the audit records of
/// the decisions it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// The transmitter (the SET's `iss`).
    pub transmitter: String,
    /// The event type URI.
    pub event: String,
    /// The SET's `jti`.
    pub jti: String,
    /// When the event happened (`event_timestamp`), else when the SET was
    /// issued: a later action about the same entry wins.
    pub at: SystemTime,
}

impl Provenance {
    /// The SET as a revocation records it (`set:`): each value printable
    /// and at most [`MAX_SET_TEXT`] bytes, as a revocations file requires
    /// (a `jti` is at most 256 bytes already; a longer issuer or event type
    /// from the config is cut, marked `…`).
    pub fn stored_set(&self) -> StoredSet {
        let bounded = |text: &str| {
            let text = printable(text);
            if text.len() <= MAX_SET_TEXT {
                return text;
            }
            let end = (0..=MAX_SET_TEXT - '…'.len_utf8())
                .rev()
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(0);
            format!("{}…", text.get(..end).unwrap_or_default())
        };
        StoredSet {
            source: bounded(&self.transmitter),
            event: bounded(&self.event),
            jti: bounded(&self.jti),
        }
    }
}

/// What one event of a SET came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Actions for the governance sink.
    Actions(Provenance, Vec<Action>),
    /// Nothing to do, and why (counted by event type).
    Ignored(Provenance, String),
}

/// The receiver's event handling: the defaults above, overridden by the
/// `events:` of its config (keys are event type URIs, or `risc/NAME` and
/// `caep/NAME`).
#[derive(Debug, Clone)]
pub struct Mapping {
    handling: HashMap<String, Handling>,
    assurance: Assurance,
}

impl Default for Mapping {
    fn default() -> Self {
        let defaults = [
            ("risc/credential-compromise", Handling::Revoke),
            ("risc/account-disabled", Handling::Revoke),
            ("risc/account-purged", Handling::Revoke),
            ("risc/account-enabled", Handling::Unrevoke),
            ("caep/credential-change", Handling::RevokeCredential),
            ("caep/session-revoked", Handling::RevokeToken),
            ("caep/token-claims-change", Handling::RevokeToken),
            ("caep/risk-level-change", Handling::Risk),
            ("caep/assurance-level-change", Handling::Risk),
        ];
        Mapping {
            handling: defaults
                .into_iter()
                .filter_map(|(name, h)| Some((expand(name)?, h)))
                .collect(),
            assurance: Assurance::default(),
        }
    }
}

/// `risc/NAME` and `caep/NAME` as full event type URIs; a URI as itself.
fn expand(name: &str) -> Option<String> {
    if let Some(rest) = name.strip_prefix("risc/") {
        Some(format!("{RISC}{rest}"))
    } else if let Some(rest) = name.strip_prefix("caep/") {
        Some(format!("{CAEP}{rest}"))
    } else if name.starts_with("https://") {
        Some(name.to_owned())
    } else {
        None
    }
}

impl Mapping {
    /// The defaults with `overrides` applied.
    pub fn new(overrides: &HashMap<String, Handling>) -> Result<Mapping, String> {
        let mut mapping = Mapping::default();
        for (name, handling) in overrides {
            let uri = expand(name).ok_or_else(|| {
                format!("events: {name:?} is not an event type (a URI, or risc/NAME or caep/NAME)")
            })?;
            mapping.handling.insert(uri, *handling);
        }
        Ok(mapping)
    }

    /// This mapping, with `assurance` turning assurance levels into risk.
    pub fn with_assurance(mut self, assurance: Assurance) -> Mapping {
        self.assurance = assurance;
        self
    }

    /// How `kind` is handled.
    pub fn handling(&self, kind: &str) -> Handling {
        self.handling.get(kind).copied().unwrap_or(Handling::Ignore)
    }

    /// Each event of `set` turned into actions; an event that breaks its
    /// definition refuses the whole SET.
    pub fn apply(&self, set: &VerifiedSet, subjects: &Subjects) -> Result<Vec<Outcome>, SetError> {
        set.events
            .iter()
            .map(|event| self.apply_one(set, event, subjects))
            .collect()
    }

    fn apply_one(
        &self,
        set: &VerifiedSet,
        event: &Event,
        subjects: &Subjects,
    ) -> Result<Outcome, SetError> {
        let provenance = Provenance {
            transmitter: set.issuer.clone(),
            event: printable(&event.kind),
            jti: printable(&set.jti),
            // An event cannot happen after the SET that reports it was
            // issued: a later `event_timestamp` would pin the entry against
            // every later event, so it counts as the SET's `iat`.
            at: event_time(event)?.map_or(set.issued_at, |t| t.min(set.issued_at)),
        };
        let handling = self.handling(&event.kind);
        if handling == Handling::Ignore {
            return Ok(Outcome::Ignored(
                provenance,
                "celador does not act on this event type".into(),
            ));
        }
        // SSF 1.0 §3.1.1: the top-level sub_id, else (older transmitters)
        // the event's own `subject`.
        let Some(subject) = set.subject.as_ref().or(event.payload.get("subject")) else {
            return Err(invalid(&event.kind, "the event has no subject (sub_id)"));
        };
        let targets = match subjects.resolve(subject) {
            Ok(targets) => targets,
            Err(SubjectError::Unmapped(why)) => return Ok(Outcome::Ignored(provenance, why)),
            Err(SubjectError::Malformed(why)) => return Err(invalid(&event.kind, &why)),
        };
        let actions = match handling {
            Handling::Revoke => targets
                .iter()
                .map(|t| Action::Revoke {
                    entry: Revocation::of(t),
                    reason: reason(event),
                })
                .collect(),
            Handling::Unrevoke => targets
                .iter()
                .map(|t| Action::Unrevoke {
                    entry: Revocation::of(t),
                })
                .collect(),
            Handling::RevokeCredential => credential_change(event, &targets)?,
            Handling::RevokeToken => tokens(event, &targets),
            Handling::Risk if event.kind == format!("{CAEP}assurance-level-change") => {
                match self.assurance.risk(event)? {
                    Ok((level, why)) => risk_actions(&targets, level, Some(why)),
                    Err(why) => return Ok(Outcome::Ignored(provenance, why)),
                }
            }
            Handling::Risk => risk(event, &targets)?,
            Handling::Ignore => Vec::new(),
        };
        if actions.is_empty() {
            return Ok(Outcome::Ignored(provenance, ignored_because(handling)));
        }
        Ok(Outcome::Actions(provenance, actions))
    }
}

fn ignored_because(handling: Handling) -> String {
    match handling {
        Handling::RevokeCredential => "the credential change revokes nothing celador can name: it needs change_type revoke or delete, and x509_issuer with x509_serial or a jwt_id subject".into(),
        Handling::RevokeToken => "the event names no JWT-SVID (a jwt_id subject); celador does not revoke a whole identity for a session or token event".into(),
        Handling::Risk => "a risk level applies to SPIFFE IDs, not to a single token".into(),
        _ => "nothing to do".into(),
    }
}

fn invalid(kind: &str, why: &str) -> SetError {
    SetError::new(
        super::set::ErrorCode::InvalidRequest,
        format!("event {kind}: {why}"),
    )
}

/// `event_timestamp` (CAEP §2, RISC): when the event happened.
fn event_time(event: &Event) -> Result<Option<SystemTime>, SetError> {
    match event.payload.get("event_timestamp") {
        None => Ok(None),
        Some(value) => value
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .and_then(time::from_numeric_date)
            .map(Some)
            .ok_or_else(|| invalid(&event.kind, "event_timestamp must be a number of seconds")),
    }
}

/// The transmitter's reason: `reason_admin` (an object by language tag, or
/// a string in older drafts), `risk_reason`, else the event type's name.
fn reason(event: &Event) -> String {
    let admin = match event.payload.get("reason_admin") {
        Some(Value::String(text)) => Some(text.clone()),
        Some(Value::Object(by_language)) => by_language
            .get("en")
            .or_else(|| by_language.values().next())
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    };
    let name = event.kind.rsplit('/').next().unwrap_or(&event.kind);
    match admin {
        Some(text) if !text.trim().is_empty() => format!("{name}: {}", truncate(&text)),
        _ => name.to_owned(),
    }
}

/// A transmitter's text, bounded (it ends up in every audit record the
/// revocation decides).
fn truncate(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", printable(text.get(..end).unwrap_or(text))),
        None => printable(text),
    }
}

/// `text` with every control character and non-character replaced by `?`:
/// a transmitter's text goes into revocation entries, which YAML (the
/// governance files) and the store's checks refuse with such characters,
/// and a refused entry would block every revocation after it.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{FFFE}' | '\u{FFFF}') {
                '?'
            } else {
                c
            }
        })
        .collect()
}

fn string<'a>(event: &'a Event, member: &str) -> Result<Option<&'a str>, SetError> {
    match event.payload.get(member) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(&event.kind, &format!("{member} must be a string"))),
    }
}

/// CAEP `credential-change`: `change_type` `revoke` or `delete` of an X.509
/// certificate (`x509_issuer`, `x509_serial`) or of the token a `jwt_id`
/// subject names.
fn credential_change(event: &Event, targets: &[Target]) -> Result<Vec<Action>, SetError> {
    let change = string(event, "change_type")?
        .ok_or_else(|| invalid(&event.kind, "change_type is required"))?;
    string(event, "credential_type")?
        .ok_or_else(|| invalid(&event.kind, "credential_type is required"))?;
    if !matches!(change, "revoke" | "delete") {
        return Ok(Vec::new());
    }
    let serial = string(event, "x509_serial")?;
    let issuer = string(event, "x509_issuer")?;
    if let (Some(serial), Some(issuer)) = (serial, issuer) {
        if serial.is_empty() || !serial.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return Err(invalid(
                &event.kind,
                &format!("x509_serial {serial:?} is not hex (colons allowed)"),
            ));
        }
        DistinguishedName::parse(issuer).map_err(|e| {
            invalid(
                &event.kind,
                &format!("x509_issuer {issuer:?} is not a distinguished name: {e}"),
            )
        })?;
        return Ok(vec![Action::Revoke {
            entry: Revocation::X509Serial {
                serial: serial.to_owned(),
                issuer: issuer.to_owned(),
            },
            reason: reason(event),
        }]);
    }
    Ok(tokens(event, targets))
}

/// A revocation of each token among `targets`.
fn tokens(event: &Event, targets: &[Target]) -> Vec<Action> {
    targets
        .iter()
        .filter(|t| matches!(t, Target::JwtId(_)))
        .map(|t| Action::Revoke {
            entry: Revocation::of(t),
            reason: reason(event),
        })
        .collect()
}

/// CAEP `risk-level-change`: `current_level` for each identity target.
fn risk(event: &Event, targets: &[Target]) -> Result<Vec<Action>, SetError> {
    let level = string(event, "current_level")?
        .ok_or_else(|| invalid(&event.kind, "current_level is required"))?;
    let level = risk_level(level).ok_or_else(|| {
        invalid(
            &event.kind,
            &format!("current_level {level:?} is not LOW, MEDIUM or HIGH"),
        )
    })?;
    let reason = string(event, "risk_reason")?.map(truncate);
    Ok(risk_actions(targets, level, reason))
}

/// The risk `level` for each identity target (never a single token).
fn risk_actions(targets: &[Target], level: RiskLevel, reason: Option<String>) -> Vec<Action> {
    targets
        .iter()
        .filter(|t| !matches!(t, Target::JwtId(_)))
        .map(|target| Action::Risk {
            target: target.clone(),
            level,
            reason: reason.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests;
