//! One audit record per decision.
//!
//! Data flow: after every check, [`record`] writes one JSON line through
//! `tracing` under the [`TARGET`] target, which the telemetry setup routes
//! to standard output apart from diagnostic logs. A record says who called
//! (the verified SPIFFE ID, never a claimed one), what was asked, what was
//! decided by which rule and why, under which policy version, and how long
//! it took. Header values appear only for headers the config allowlists.

use std::time::{Duration, SystemTime};

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use serde::Serialize;

use crate::attributes::Attributes;
use crate::decision::{CheckError, Decision};
use crate::policy::RuleError;
use crate::reason::Reason;

/// The `tracing` target of audit records.
pub const TARGET: &str = "celador::audit";

/// Longer header values are cut in audit records.
const MAX_HEADER_VALUE: usize = 1024;

/// What an audit record holds.
#[derive(Debug, Serialize)]
pub struct AuditRecord<'a> {
    /// When the decision was made (RFC 3339, UTC).
    pub time: String,
    /// Envoy's request ID.
    pub request_id: &'a str,
    /// The SPIFFE ID of the verified X.509-SVID (the mTLS peer).
    pub spiffe_id: Option<&'a str>,
    /// The SPIFFE ID of the verified JWT-SVID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<&'a str>,
    /// The HTTP method.
    pub method: &'a str,
    /// The host.
    pub host: &'a str,
    /// The path, without query.
    pub path: &'a str,
    /// `allow`, `deny` or `error`.
    pub decision: &'static str,
    /// The deciding rule.
    pub rule: Option<&'a str>,
    /// Why.
    pub reason: Option<Reason>,
    /// Details of an identity failure or an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'a str>,
    /// The policy version.
    pub policy_version: Option<&'a str>,
    /// How long the check took, in microseconds.
    pub latency_us: u64,
    /// Rules whose evaluation failed, and why.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub errors: &'a [RuleError],
    /// Values of the allowlisted headers present on the request.
    #[serde(skip_serializing_if = "Headers::is_empty")]
    pub headers: Headers<'a>,
}

/// Header names and values, written as a JSON object; a vector, since the
/// allowlist is short and already free of duplicates.
#[derive(Debug, Default)]
pub struct Headers<'a>(Vec<(&'a str, &'a str)>);

impl Headers<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Headers<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// Audits a decision made at `time`.
pub fn record(
    decision: &Decision,
    attrs: &Attributes<'_>,
    headers: &[String],
    time: SystemTime,
    latency: Duration,
) {
    let record = AuditRecord {
        time: rfc3339(time),
        request_id: attrs.request_id,
        spiffe_id: decision.identity.x509.as_ref().map(|s| s.id.as_str()),
        token_id: decision.identity.jwt.as_ref().map(|t| t.id.as_str()),
        method: attrs.method,
        host: attrs.host,
        path: attrs.path,
        decision: if decision.allowed { "allow" } else { "deny" },
        rule: decision.rule.as_deref(),
        reason: Some(decision.reason),
        detail: decision.detail.as_deref(),
        policy_version: Some(decision.policy.version()),
        latency_us: micros(latency),
        errors: &decision.errors,
        headers: Headers(
            headers
                .iter()
                .filter_map(|name| {
                    let value = attrs.header(name)?;
                    Some((name.as_str(), truncate(value)))
                })
                .collect(),
        ),
    };
    emit(&record);
}

/// Audits a request that could not be decided.
pub fn record_error(request: &CheckRequest, error: &CheckError, latency: Duration) {
    let http = request
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref());
    let field = |f: fn(
        &envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest,
    ) -> &str| { http.map_or("", f) };
    let record = AuditRecord {
        time: rfc3339(SystemTime::now()),
        request_id: field(|h| &h.id),
        spiffe_id: None,
        token_id: None,
        method: field(|h| &h.method),
        host: field(|h| &h.host),
        path: field(|h| &h.path),
        decision: "error",
        rule: None,
        reason: Some(error.reason),
        detail: Some(&error.detail),
        policy_version: None,
        latency_us: micros(latency),
        errors: &[],
        headers: Headers::default(),
    };
    emit(&record);
}

fn emit(record: &AuditRecord<'_>) {
    // Records are a few hundred bytes: one allocation, no regrowth.
    let mut line = Vec::with_capacity(512);
    match serde_json::to_writer(&mut line, record) {
        Ok(()) => {
            let line = String::from_utf8_lossy(&line);
            tracing::info!(target: TARGET, record = &*line);
        }
        Err(e) => tracing::error!(error = %e, "cannot serialize an audit record"),
    }
}

fn rfc3339(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn truncate(value: &str) -> &str {
    if value.len() <= MAX_HEADER_VALUE {
        return value;
    }
    let mut end = MAX_HEADER_VALUE;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value.get(..end).unwrap_or_default()
}
