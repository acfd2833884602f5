//! An audit record read back as the input of a decision, for `celador eval`
//! and `celador replay`.
//!
//! Data flow: `celador serve` writes one JSON line per decision
//! ([`crate::edge::audit`]); this reads such a line into a [`Request`], the
//! identities and the signals it records, and knows exactly which
//! attributes it holds and which it holds only as `<redacted>`. A rule that
//! reads anything else cannot be decided from the record:
//! [`Recorded::missing`] names it, and the tools say so rather than guess.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

use crate::engine::attributes::Request;
use crate::engine::identity::jwt::JwtSvid;
use crate::engine::identity::{SpiffeId, X509Svid};
use crate::engine::policy::footprint::Part;
use crate::engine::policy::{Input, Policy};
use crate::engine::redaction::{REDACTED, holds_redaction};
use crate::engine::signals::Signals;
use crate::engine::time;
use crate::engine::workload::Workload;

/// The reasons of decisions made by rules (or by governance before them):
/// the records replay can re-decide. Others (an identity failure, an
/// overload) were decided before any rule.
pub const RULE_REASONS: &[&str] = &[
    "allowed",
    "granted",
    "denied_by_rule",
    "rule_error",
    "no_allow_rule",
    "revoked",
    "invalid_path",
];

/// What a record says was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Old {
    /// `allow`, `deny` or `error`.
    pub decision: String,
    /// The reason code.
    pub reason: String,
    /// The deciding rule.
    pub rule: Option<String>,
    /// The grant in force.
    pub grant: Option<String>,
}

/// An audit record read back.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The request's `x-request-id`, as recorded.
    pub request_id: String,
    /// The request, as far as the record holds it.
    pub request: Request,
    /// The X.509-SVID's identity (its ID only: it was verified then).
    pub source: Option<X509Svid>,
    /// The JWT-SVID's identity and, when recorded, its claims.
    pub token: Option<JwtSvid>,
    /// The caller's signals, when recorded.
    pub signals: Option<Signals>,
    /// The time of the decision.
    pub now: SystemTime,
    /// What was decided.
    pub old: Old,
    /// The attributes recorded, by the name the record gives them.
    known: BTreeSet<String>,
    /// Those recorded only as `<redacted>`.
    redacted: BTreeSet<String>,
    /// Those recorded cut short (the record's `truncated`).
    truncated: BTreeSet<String>,
}

impl Recorded {
    /// Reads one audit record line.
    pub fn parse(line: &str) -> Result<Recorded, String> {
        let value: Value =
            serde_json::from_str(line).map_err(|e| format!("not a JSON audit record: {e}"))?;
        from_value(&value)
    }

    /// The input of a decision on this record (the workload is not
    /// recorded: [`Recorded::missing`] names it when rules read it).
    pub fn input<'a>(
        &'a self,
        attrs: &'a crate::engine::Attributes<'a>,
        workload: &'a Workload,
        no_signals: &'a Signals,
    ) -> Input<'a> {
        Input {
            source: self.source.as_ref(),
            token: self.token.as_ref(),
            attributes: attrs,
            workload,
            now: self.now,
            grant: None,
            signals: self.signals.as_ref().unwrap_or(no_signals),
        }
    }

    /// What the rules of `policy` can read that this record does not hold,
    /// or holds only redacted: each named, with why. Empty when the record
    /// decides as the request did.
    pub fn missing(&self, policy: &Policy) -> Vec<String> {
        let footprint = policy.footprint();
        let mut missing = Vec::new();
        let truncated = |name: &str| {
            self.truncated
                .iter()
                .any(|t| t == name || (name == "request.headers" && t.starts_with(name)))
        };
        let mut need = |name: &str, known: bool, redacted: bool| {
            if !known {
                missing.push(format!("{name} (not recorded)"));
            } else if redacted {
                missing.push(format!("{name} (recorded as <redacted>)"));
            } else if truncated(name) {
                // A cut value decides nothing: a rule may read past the cut.
                missing.push(format!("{name} (value truncated)"));
            }
        };
        for part in &footprint.parts {
            let Some(name) = part_name(part) else {
                continue;
            };
            let whole = |map: &str| self.known.contains(map);
            let any_redacted = |prefix: &str| self.redacted.iter().any(|r| r.starts_with(prefix));
            match part {
                Part::Header(_) => need(
                    &name,
                    self.known.contains(&name) || whole("request.headers"),
                    self.redacted.contains(&name),
                ),
                Part::ContextKey(_) => need(
                    &name,
                    self.known.contains(&name) || whole("context"),
                    self.redacted.contains(&name),
                ),
                Part::Headers => need(&name, whole(&name), any_redacted("request.headers")),
                Part::Context => need(&name, whole(&name), any_redacted("context")),
                Part::Query => need(&name, whole(&name), any_redacted("request.query")),
                _ => need(
                    &name,
                    self.known.contains(&name),
                    self.redacted.contains(&name),
                ),
            }
        }
        for volatile in &footprint.volatile {
            need(
                volatile,
                self.known.contains(*volatile),
                self.redacted.contains(*volatile),
            );
        }
        missing.extend(self.unrecorded_reads(policy));
        missing.sort_unstable();
        missing.dedup();
        missing
    }
}

impl Recorded {
    /// What rules read that no record holds (the workload, the
    /// certificate's `notAfter`) or that this one lacks (a token's expiry
    /// without its claims).
    fn unrecorded_reads(&self, policy: &Policy) -> Vec<String> {
        let reads: BTreeSet<&str> = policy
            .rules()
            .iter()
            .flat_map(|r| r.reads.iter().map(String::as_str))
            .collect();
        let mut missing = Vec::new();
        if reads.iter().any(|r| r.starts_with("workload")) {
            missing.push("workload (not recorded)".into());
        }
        if reads.contains("source.not_after") && self.source.is_some() {
            missing.push("source.not_after (not recorded)".into());
        }
        if reads.contains("token.expiry")
            && self.token.is_some()
            && !self.known.contains("token.claims")
        {
            missing.push("token.expiry (not recorded)".into());
        }
        missing
    }
}

/// The name a record gives a part, or `None` for the grant (which replay
/// finds anew in the grants given).
fn part_name(part: &Part) -> Option<String> {
    Some(match part {
        Part::Source => "source.id".into(),
        Part::SourceAddress => "source.address".into(),
        Part::SourcePort => "source.port".into(),
        Part::TokenId => "token.id".into(),
        Part::Token => "token.claims".into(),
        Part::Method => "request.method".into(),
        Part::Path => "request.path".into(),
        Part::RawPath => "request.raw_path".into(),
        Part::Host => "request.host".into(),
        Part::Scheme => "request.scheme".into(),
        Part::Protocol => "request.protocol".into(),
        Part::Size => "request.size".into(),
        Part::Query => "request.query".into(),
        Part::Header(name) => format!("request.headers[{}]", quoted(name)),
        Part::Headers => "request.headers".into(),
        Part::ContextKey(name) => format!("context[{}]", quoted(name)),
        Part::Context => "context".into(),
        Part::DestinationPrincipal => "destination.principal".into(),
        Part::DestinationAddress => "destination.address".into(),
        Part::DestinationPort => "destination.port".into(),
        Part::Grant => return None,
    })
}

fn quoted(key: &str) -> String {
    Value::String(key.to_owned()).to_string()
}

fn text<'a>(obj: &'a Map<String, Value>, key: &str) -> &'a str {
    obj.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn from_value(value: &Value) -> Result<Recorded, String> {
    let obj = value
        .as_object()
        .ok_or("an audit record is a JSON object")?;
    if obj.get("decision").and_then(Value::as_str).is_none() || !obj.contains_key("method") {
        return Err("not an audit record: it has no `decision` or `method`".into());
    }
    let empty = Map::new();
    let read = obj.get("read").and_then(Value::as_object).unwrap_or(&empty);
    let mut r = Recorded {
        request_id: text(obj, "request_id").to_owned(),
        request: Request::default(),
        source: None,
        token: None,
        signals: None,
        now: SystemTime::UNIX_EPOCH,
        old: Old {
            decision: text(obj, "decision").to_owned(),
            reason: text(obj, "reason").to_owned(),
            rule: obj.get("rule").and_then(Value::as_str).map(str::to_owned),
            grant: obj
                .get("grant")
                .and_then(|g| g.get("name"))
                .and_then(Value::as_str)
                .map(str::to_owned),
        },
        known: BTreeSet::new(),
        redacted: BTreeSet::new(),
        truncated: obj
            .get("truncated")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
    };
    r.now = match read.get("now").and_then(Value::as_str) {
        Some(now) => time::parse_rfc3339(now)?,
        None => time::parse_rfc3339(text(obj, "time")).map_err(|e| format!("time: {e}"))?,
    };
    r.read_top_level(obj);
    r.read_values(read)?;
    r.read_identities(obj, read)?;
    Ok(r)
}

impl Recorded {
    /// What every record holds: the request line, its id, its headers.
    fn read_top_level(&mut self, obj: &Map<String, Value>) {
        let raw = obj
            .get("raw_path")
            .and_then(Value::as_str)
            .unwrap_or(text(obj, "path"));
        self.note("request.method", text(obj, "method"));
        self.note("request.path", text(obj, "path"));
        self.note("request.raw_path", raw);
        self.note("request.host", text(obj, "host"));
        self.note("request.id", &self.request_id.clone());
        self.request.method = text(obj, "method").to_owned();
        self.request.path = raw.to_owned();
        self.request.host = text(obj, "host").to_owned();
        self.request.id = text(obj, "envoy_stream_id").to_owned();
        self.request.size = -1;
        if !self.request_id.is_empty() {
            self.request
                .headers
                .insert("x-request-id".into(), self.request_id.clone());
        }
        // The headers `audit.headers` lists, those present.
        if let Some(headers) = obj.get("headers").and_then(Value::as_object) {
            for (name, value) in headers {
                if let Some(value) = value.as_str() {
                    let key = format!("request.headers[{}]", quoted(name));
                    self.note(&key, value);
                    self.request.headers.insert(name.clone(), value.to_owned());
                }
            }
        }
    }

    /// Records `name` as known, and as redacted when its value is.
    fn note(&mut self, name: &str, value: &str) {
        self.known.insert(name.to_owned());
        if holds_redaction(value) {
            self.redacted.insert(name.to_owned());
        }
    }

    /// The `read` section's values.
    fn read_values(&mut self, read: &Map<String, Value>) -> Result<(), String> {
        for (name, value) in read {
            let string = value.as_str().unwrap_or_default();
            match name.as_str() {
                "request.scheme" => self.request.scheme = string.to_owned(),
                "request.protocol" => self.request.protocol = string.to_owned(),
                "request.size" => self.request.size = value.as_i64().unwrap_or(-1),
                "source.address" => self.request.source_address = string.to_owned(),
                "source.port" => self.request.source_port = port(value),
                "destination.principal" => self.request.destination_principal = string.to_owned(),
                "destination.address" => self.request.destination_address = string.to_owned(),
                "destination.port" => self.request.destination_port = port(value),
                "request.time" => self.request.time = Some(time::parse_rfc3339(string)?),
                "signals" => {
                    self.signals = Some(
                        serde_json::from_value(value.clone())
                            .map_err(|e| format!("read.signals: {e}"))?,
                    );
                }
                "request.headers" | "context" | "request.query" => {
                    self.read_map(name, value);
                    continue;
                }
                _ => {}
            }
            if let Some(key) = name
                .strip_prefix("request.headers[")
                .and_then(|k| k.strip_suffix(']'))
            {
                let key: String = serde_json::from_str(key).unwrap_or_default();
                if let Some(v) = value.as_str() {
                    self.request.headers.insert(key, v.to_owned());
                }
            } else if let Some(key) = name
                .strip_prefix("context[")
                .and_then(|k| k.strip_suffix(']'))
            {
                let key: String = serde_json::from_str(key).unwrap_or_default();
                if let Some(v) = value.as_str() {
                    self.request.context.insert(key, v.to_owned());
                }
            }
            self.note(name, &value.to_string());
        }
        Ok(())
    }

    /// A whole map the record holds: headers, context or query.
    fn read_map(&mut self, name: &str, value: &Value) {
        self.known.insert(name.to_owned());
        let empty = Map::new();
        let map = value.as_object().unwrap_or(&empty);
        let mut query = Vec::new();
        for (key, v) in map {
            let entry = format!("{name}[{}]", quoted(key));
            if holds_redaction(&v.to_string()) || key.contains(REDACTED) {
                self.redacted.insert(entry);
            }
            match name {
                "request.headers" => {
                    let v = v.as_str().unwrap_or_default().to_owned();
                    self.request.headers.insert(key.clone(), v);
                }
                "context" => {
                    let v = v.as_str().unwrap_or_default().to_owned();
                    self.request.context.insert(key.clone(), v);
                }
                _ => {
                    let values = match v {
                        Value::Array(all) => all.iter().filter_map(Value::as_str).collect(),
                        other => other.as_str().into_iter().collect::<Vec<_>>(),
                    };
                    for one in values {
                        query.push(format!("{}={}", encode(key), encode(one)));
                    }
                }
            }
        }
        if !query.is_empty() {
            self.request.path = format!("{}?{}", self.request.path, query.join("&"));
        }
    }

    /// The identities: the IDs verified then, the token's claims if
    /// recorded.
    fn read_identities(
        &mut self,
        obj: &Map<String, Value>,
        read: &Map<String, Value>,
    ) -> Result<(), String> {
        let hour = Duration::from_secs(3600);
        self.known.insert("source.id".into());
        self.known.insert("token.id".into());
        if let Some(id) = obj.get("spiffe_id").and_then(Value::as_str) {
            let id = SpiffeId::parse(id).map_err(|e| format!("spiffe_id: {e}"))?;
            self.source = Some(X509Svid {
                id,
                not_before: self.now - hour,
                not_after: time::saturating_add(self.now, hour),
                chain_not_after: time::saturating_add(self.now, hour),
                certificate: Default::default(),
            });
        }
        if let Some(id) = obj.get("token_id").and_then(Value::as_str) {
            let id = SpiffeId::parse(id).map_err(|e| format!("token_id: {e}"))?;
            let claims = read
                .get("token.claims")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let audience = match claims.get("aud") {
                Some(Value::String(a)) => vec![a.clone()],
                Some(Value::Array(all)) => all
                    .iter()
                    .filter_map(|a| a.as_str().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            };
            let expiry = claims
                .get("exp")
                .and_then(Value::as_u64)
                .map_or(time::saturating_add(self.now, hour), |exp| {
                    SystemTime::UNIX_EPOCH + Duration::from_secs(exp)
                });
            self.token = Some(JwtSvid {
                id,
                audience,
                expiry,
                claims,
            });
        }
        Ok(())
    }
}

fn port(value: &Value) -> u32 {
    value
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .unwrap_or(0)
}

/// A query name or value percent-encoded back (`&`, `=`, `%`, `+`, `#`
/// and anything not printable ASCII).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_graphic() && !matches!(b, b'&' | b'=' | b'%' | b'+' | b'#') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_into_the_request_it_recorded() {
        let line = r#"{"time":"2030-01-15T11:00:00.000001Z","request_id":"app-1","envoy_stream_id":"77","spiffe_id":"spiffe://example.org/ns/a/sa/b","method":"GET","host":"api","path":"/export/a","decision":"allow","rule":"r","reason":"allowed","policy_version":"v","latency_us":3,"read":{"request.headers":{"x-tenant":"acme","authorization":"<redacted>"},"request.query":{"page":"<redacted>","a&b":["1","2"]},"context":{"route":"export"},"request.scheme":"https"}}"#;
        let r = Recorded::parse(line).unwrap();
        assert_eq!(r.request_id, "app-1");
        assert_eq!(r.request.id, "77");
        assert_eq!(r.request.path, "/export/a?a%26b=1&a%26b=2&page=<redacted>");
        assert_eq!(r.request.headers["x-tenant"], "acme");
        assert_eq!(r.request.headers["x-request-id"], "app-1");
        assert_eq!(r.request.context["route"], "export");
        assert_eq!(r.request.scheme, "https");
        assert_eq!(
            r.source.as_ref().map(|s| s.id.as_str()),
            Some("spiffe://example.org/ns/a/sa/b")
        );
        assert_eq!(r.old.reason, "allowed");
        assert!(r.redacted.contains("request.headers[\"authorization\"]"));
        assert!(r.redacted.contains("request.query[\"page\"]"));
        assert!(Recorded::parse("{}").is_err());
        assert!(Recorded::parse("garbage").is_err());
    }
}
