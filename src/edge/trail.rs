//! The decision trail: what an audit record says about *why*, beyond the
//! outcome.
//!
//! Data flow: after a decision, [`super::audit`] asks [`Trail::of`] for the
//! values of what the deciding rules read (from the rules' own footprints,
//! [`crate::engine::policy::footprint`]), the grant used, a revocation hit,
//! shadow outcomes, whether the decision and the identity came from
//! caches, and the generations of every live input in force. Credentials
//! never appear: secret headers, bearer values and credential-like query
//! parameters are written as `<redacted>`.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::engine::decision::{Revoked, Shadow};
use crate::engine::policy::footprint::{Footprint, Part};
use crate::engine::{Attributes, Decision, Snapshot, percent, time};

const REDACTED: &str = "<redacted>";

/// Headers that carry credentials: their values never reach an audit
/// record or a trail, even when allowlisted (the config refuses them too).
pub const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

/// Whether `name` (lowercase) carries credentials.
pub fn is_secret_header(name: &str) -> bool {
    SECRET_HEADERS.contains(&name)
}

/// The trail of one decision.
#[derive(Debug, Serialize)]
pub struct Trail<'a> {
    /// The values of what the deciding rule read (every rule's, when none
    /// decided), by attribute path.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub read: Map<String, Value>,
    /// The grant that allowed the request, or that deny rules saw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<GrantTrail<'a>>,
    /// The revocation entry that denied the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked: Option<&'a Revoked>,
    /// What shadow rules would have decided.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub shadow: &'a [Shadow],
    /// False when the route runs in shadow mode and the request was let
    /// through whatever the decision.
    pub enforced: bool,
    /// Whether the decision and the identity came from caches.
    pub cache: CacheTrail,
    /// The live inputs in force.
    pub versions: Versions<'a>,
}

/// A grant as the trail records it.
#[derive(Debug, Serialize)]
pub struct GrantTrail<'a> {
    /// Its name.
    pub name: &'a str,
    /// Why it was given.
    pub reason: &'a str,
    /// When it closes.
    pub expires: String,
}

/// Which caches served the decision.
#[derive(Debug, Serialize)]
pub struct CacheTrail {
    /// The decision came from the decision cache.
    pub decision: bool,
    /// Every verified credential came from the SVID caches.
    pub identity: bool,
}

/// The generations of the live inputs a decision was made with.
#[derive(Debug, Serialize)]
pub struct Versions<'a> {
    /// The rules version.
    pub rules: &'a str,
    /// The grants file version (`none` without one).
    pub grants: &'a str,
    /// The revocations file version (`none` without one).
    pub revocations: &'a str,
    /// The shadow rules file version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow_policy: Option<&'a str>,
    /// Each trust domain's bundle generation.
    pub bundles: BTreeMap<&'a str, u64>,
    /// The snapshot: bumped by every publish of any input.
    pub snapshot: u64,
}

impl<'a> Trail<'a> {
    /// The trail of `decision`, made with `snapshot` at `now`.
    pub fn of(
        decision: &'a Decision,
        snapshot: &'a Snapshot,
        attrs: &Attributes<'_>,
        enforced: bool,
        now: SystemTime,
    ) -> Self {
        let identified = decision.identity.source.is_some() || decision.identity.token.is_some();
        let read = if identified && decision.revoked.is_none() {
            let policy = &snapshot.policy;
            let footprint = decision
                .rule
                .as_ref()
                .and_then(|name| policy.rules().iter().find(|r| &r.name == name))
                .map_or(policy.footprint(), |rule| &rule.footprint);
            read_values(footprint, decision, attrs, now)
        } else {
            Map::new()
        };
        Trail {
            read,
            grant: decision.grant.as_ref().map(|g| GrantTrail {
                name: &g.name,
                reason: &g.reason,
                expires: time::rfc3339(g.expires),
            }),
            revoked: decision.revoked.as_ref(),
            shadow: &decision.shadow,
            enforced,
            cache: CacheTrail {
                decision: decision.from_cache,
                identity: identified && decision.identity.from_cache,
            },
            versions: Versions {
                rules: snapshot.policy.version(),
                grants: snapshot.grants.version(),
                revocations: snapshot.revocations.version(),
                shadow_policy: snapshot.shadow.as_ref().map(|p| p.version()),
                bundles: snapshot
                    .bundles
                    .domains()
                    .iter()
                    .map(|(td, b)| (td.as_str(), b.generation()))
                    .collect(),
                snapshot: snapshot.generation,
            },
        }
    }
}

/// The values of `footprint`'s parts and volatile reads, redacted.
fn read_values(
    footprint: &Footprint,
    decision: &Decision,
    attrs: &Attributes<'_>,
    now: SystemTime,
) -> Map<String, Value> {
    let mut out: Map<String, Value> = footprint
        .parts
        .iter()
        .map(|part| part_value(part, decision, attrs))
        .collect();
    let text = |s: &str| Value::String(s.to_owned());
    for volatile in &footprint.volatile {
        let value = match *volatile {
            "now" => text(&time::rfc3339(now)),
            "request.time" => text(&time::rfc3339(attrs.time.unwrap_or(now))),
            "request.id" => text(attrs.request_id),
            "signals" => {
                serde_json::to_value(decision.signals.unwrap_or_default()).unwrap_or(Value::Null)
            }
            _ => continue,
        };
        out.insert((*volatile).to_owned(), value);
    }
    out
}

/// One part's attribute path and value.
fn part_value(part: &Part, decision: &Decision, attrs: &Attributes<'_>) -> (String, Value) {
    let source = decision.identity.source.as_deref();
    let token = decision.identity.token.as_deref();
    let text = |s: &str| Value::String(s.to_owned());
    {
        match part {
            Part::Source => (
                "source.id".to_owned(),
                source.map_or(Value::Null, |s| text(s.id.as_str())),
            ),
            Part::SourceAddress => ("source.address".into(), text(attrs.source_address)),
            Part::SourcePort => ("source.port".into(), attrs.source_port.into()),
            Part::TokenId => (
                "token.id".into(),
                token.map_or(Value::Null, |t| text(t.id.as_str())),
            ),
            Part::Token => (
                "token.claims".into(),
                token.map_or(Value::Null, |t| Value::Object(t.claims.clone())),
            ),
            Part::Method => ("request.method".into(), text(attrs.method)),
            Part::Path => ("request.path".into(), text(attrs.path)),
            Part::Host => ("request.host".into(), text(attrs.host)),
            Part::Scheme => ("request.scheme".into(), text(attrs.scheme)),
            Part::Protocol => ("request.protocol".into(), text(attrs.protocol)),
            Part::Size => ("request.size".into(), attrs.size.into()),
            Part::DestinationPrincipal => (
                "destination.principal".into(),
                text(attrs.destination_principal),
            ),
            Part::DestinationAddress => (
                "destination.address".into(),
                text(attrs.destination_address),
            ),
            Part::DestinationPort => ("destination.port".into(), attrs.destination_port.into()),
            Part::Grant => (
                "grant.name".into(),
                text(decision.grant.as_ref().map_or("", |g| &g.name)),
            ),
            _ => map_part_value(part, attrs),
        }
    }
}

/// A map part's attribute path and value, redacted.
fn map_part_value(part: &Part, attrs: &Attributes<'_>) -> (String, Value) {
    let text = |s: &str| Value::String(s.to_owned());
    match part {
        Part::Query => ("request.query".into(), query(attrs.query)),
        Part::Header(name) => (
            format!("request.headers[{}]", Value::from(name.as_str())),
            attrs
                .header(name)
                .map_or(Value::Null, |v| text(header_value(name, v))),
        ),
        Part::Headers => (
            "request.headers".into(),
            Value::Object(
                attrs
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), text(header_value(k, v))))
                    .collect(),
            ),
        ),
        Part::ContextKey(name) => (
            format!("context[{}]", Value::from(name.as_str())),
            attrs.context.get(name).map_or(Value::Null, |v| text(v)),
        ),
        Part::Context => (
            "context".into(),
            Value::Object(
                attrs
                    .context
                    .iter()
                    .map(|(k, v)| (k.clone(), text(v)))
                    .collect(),
            ),
        ),
        _ => (String::new(), Value::Null),
    }
}

/// A header's value as the trail may show it.
fn header_value<'v>(name: &str, value: &'v str) -> &'v str {
    let bearer = value
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("bearer "));
    if is_secret_header(name) || bearer {
        REDACTED
    } else {
        value
    }
}

/// The query parameters, decoded, with credential-like ones redacted.
fn query(raw: &str) -> Value {
    let mut out = Map::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent::decode_lossy(k, true).into_owned();
        let lower = key.to_ascii_lowercase();
        let secret = [
            "token", "secret", "password", "key", "sig", "auth", "code", "session",
        ]
        .iter()
        .any(|s| lower.contains(s));
        let value = if secret {
            REDACTED.to_owned()
        } else {
            percent::decode_lossy(v, true).into_owned()
        };
        out.entry(key).or_insert(Value::String(value));
    }
    Value::Object(out)
}
