//! One audit record per decision.
//!
//! Data flow: after every check, [`record`] writes one JSON line to the
//! installed [`Sink`] (the server's writer to standard output,
//! `app::audit_log`); with none installed, as in tests, the line is a
//! `tracing` event under the [`TARGET`] target. A record says who called
//! (the verified SPIFFE ID, never a claimed one), what was asked, what was
//! decided by which rule and why, under which policy version, and how long
//! it took. Header values appear only for headers the config allowlists,
//! and every value shown passes through the engine's [`Redaction`].

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use serde::Serialize;

use super::json_line::JsonObject;
use super::trail::Trail;
use crate::engine::Decision;
use crate::engine::RuleError;
use crate::engine::Snapshot;
use crate::engine::attributes::Attributes;
use crate::engine::reason::Reason;
use crate::engine::redaction::{self, Redaction};

/// The `tracing` target of audit records.
pub const TARGET: &str = "celador::edge::audit";

/// A path without its query string or fragment, which may carry secrets.
fn without_query(path: &str) -> &str {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    path.get(..end).unwrap_or_default()
}

/// What an audit record holds.
#[derive(Debug, Serialize)]
pub struct AuditRecord<'a> {
    /// When the decision was made; written as RFC 3339 in UTC with
    /// microseconds.
    #[serde(serialize_with = "serialize_time")]
    pub time: SystemTime,
    /// The request's `x-request-id` (`request.id`), which the
    /// application's and Envoy's logs carry: the key to join them on.
    pub request_id: Cow<'a, str>,
    /// Envoy's id for the stream (`request.http.id` of the check).
    pub envoy_stream_id: Cow<'a, str>,
    /// The SPIFFE ID of the verified X.509-SVID (the mTLS peer).
    pub spiffe_id: Option<&'a str>,
    /// The SPIFFE ID of the verified JWT-SVID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<&'a str>,
    /// The HTTP method.
    pub method: &'a str,
    /// The host.
    pub host: Cow<'a, str>,
    /// The path, without query: the canonical path rules read.
    pub path: Cow<'a, str>,
    /// The path as Envoy sent it, when it differs from `path`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_path: Option<Cow<'a, str>>,
    /// `allow`, `deny` or `error`.
    pub decision: &'static str,
    /// The deciding rule.
    pub rule: Option<&'a str>,
    /// Why.
    pub reason: Option<Reason>,
    /// Details of an identity failure or an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<Cow<'a, str>>,
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
    /// Why, beyond the outcome: values read, grant, revocation, shadows,
    /// caches and versions (written by [`AuditRecord::to_json`] only).
    #[serde(skip)]
    pub trail: Option<Trail<'a>>,
}

/// Header names and values, written as a JSON object; a vector, since the
/// allowlist is short and already free of duplicates.
#[derive(Debug, Default)]
pub struct Headers<'a>(Vec<(&'a str, Cow<'a, str>)>);

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

/// How a decision was reached, for its audit record.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The snapshot the decision was made with.
    pub snapshot: &'a Snapshot,
    /// Whether the decision was enforced (false on a route in shadow mode).
    pub enforced: bool,
    /// When the decision was made.
    pub time: SystemTime,
    /// How long the check took.
    pub latency: Duration,
    /// What the record may show of the request.
    pub redaction: &'a Redaction,
    /// Which attributes the record holds (`audit.record`).
    pub mode: super::trail::RecordMode,
}

/// Audits a decision; `headers` are the audited headers, each with
/// whether its name makes it a credential ([`Redaction::is_secret_header`]).
pub fn record(
    decision: &Decision,
    attrs: &Attributes<'_>,
    headers: &[(String, bool)],
    context: Context<'_>,
) {
    let mut record = audit_record(
        decision,
        (attrs, context.redaction),
        headers,
        context.time,
        context.latency,
    );
    record.trail = Some(
        Trail::of(
            decision,
            context.snapshot,
            (attrs, context.redaction),
            context.enforced,
            context.time,
        )
        .recording(context.mode)
        .auditing(headers),
    );
    emit(&record);
}

/// The record of a decision: allowlisted `headers` with their values, but
/// never a credential's.
fn audit_record<'a>(
    decision: &'a Decision,
    (attrs, redaction): (&'a Attributes<'_>, &Redaction),
    headers: &'a [(String, bool)],
    time: SystemTime,
    latency: Duration,
) -> AuditRecord<'a> {
    AuditRecord {
        trail: None,
        time,
        request_id: redaction.text(attrs.request_id()),
        envoy_stream_id: redaction.text(attrs.stream_id),
        spiffe_id: decision.identity.source.as_ref().map(|s| s.id.as_str()),
        token_id: decision.identity.token.as_ref().map(|t| t.id.as_str()),
        method: attrs.method,
        host: redaction.text(attrs.host),
        path: redaction.path(&attrs.path),
        raw_path: Some(attrs.raw_path)
            .filter(|raw| *raw != attrs.path)
            .map(|raw| redaction.path(raw)),
        decision: if decision.allowed { "allow" } else { "deny" },
        rule: decision.rule.as_deref(),
        reason: Some(decision.reason),
        detail: decision.detail.as_deref().map(|d| redaction.text(d)),
        policy_version: Some(&*decision.policy_version),
        latency_us: micros(latency),
        errors: &decision.errors,
        headers: Headers(
            headers
                .iter()
                .filter_map(|(name, secret)| {
                    let value = attrs.header(name)?;
                    // As `redaction.header`, its name judged once.
                    let value = if *secret {
                        Cow::Borrowed(redaction::REDACTED)
                    } else {
                        match redaction.header_value(name, value) {
                            Cow::Borrowed(value) => Cow::Borrowed(super::trail::truncate(value)),
                            Cow::Owned(value) => {
                                Cow::Owned(super::trail::truncate(&value).to_owned())
                            }
                        }
                    };
                    Some((name.as_str(), value))
                })
                .collect(),
        ),
    }
}

/// Audits a request that could not be decided, for `reason` (an error
/// reason, see [`Reason::is_error`]) with `detail`.
pub fn record_error(request: &CheckRequest, reason: Reason, detail: &str, latency: Duration) {
    let http = request
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref());
    let field = |f: fn(
        &envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest,
    ) -> &str| { http.map_or("", f) };
    let record = AuditRecord {
        time: SystemTime::now(),
        request_id: redaction::text(
            http.and_then(|h| h.headers.get("x-request-id"))
                .map_or("", String::as_str),
        ),
        envoy_stream_id: redaction::text(field(|h| &h.id)),
        spiffe_id: None,
        token_id: None,
        method: field(|h| &h.method),
        host: redaction::text(field(|h| &h.host)),
        path: redaction::path(without_query(field(|h| &h.path))),
        raw_path: None,
        decision: "error",
        rule: None,
        reason: Some(reason),
        detail: Some(redaction::text(detail)),
        policy_version: None,
        latency_us: micros(latency),
        errors: &[],
        headers: Headers::default(),
        trail: None,
    };
    emit(&record);
}

/// Audits a check denied before it was decided, for `reason`
/// (`overloaded`, or `invalid_request` for a message that cannot be read),
/// with what could be read of the request.
pub fn record_refusal(
    request: &super::undecodable::Salvaged,
    reason: Reason,
    detail: &str,
    latency: Duration,
) {
    let record = AuditRecord {
        time: SystemTime::now(),
        request_id: redaction::text(&request.request_id),
        envoy_stream_id: redaction::text(&request.stream_id),
        spiffe_id: None,
        token_id: None,
        method: &request.method,
        host: redaction::text(&request.host),
        path: redaction::path(without_query(&request.path)),
        raw_path: None,
        decision: "deny",
        rule: None,
        reason: Some(reason),
        detail: Some(redaction::text(detail)),
        policy_version: None,
        latency_us: micros(latency),
        errors: &[],
        headers: Headers::default(),
        trail: None,
    };
    emit(&record);
}

/// Where audit records go: one JSON line per record, without its newline.
/// It must not block: a check calls it before its answer is sent.
pub trait Sink: Send + Sync {
    /// Takes one record.
    fn write_line(&self, line: &str);
}

static SINK: std::sync::OnceLock<Box<dyn Sink>> = std::sync::OnceLock::new();

/// Sends every audit record of this process to `sink` from now on. Only the
/// first call takes effect; it returns whether this one did.
pub fn install(sink: Box<dyn Sink>) -> bool {
    SINK.set(sink).is_ok()
}

fn emit(record: &AuditRecord<'_>) {
    let line = record.to_json();
    match SINK.get() {
        Some(sink) => sink.write_line(&line),
        None => tracing::info!(target: TARGET, record = line.as_str()),
    }
}

impl AuditRecord<'_> {
    /// The record as one line of JSON, the same document `serde_json` makes
    /// of it. Written by hand because it is on every request's path, where
    /// serde_json's general machinery made the audit record about a quarter
    /// of a cached check (see BENCHMARKS.md).
    pub fn to_json(&self) -> String {
        let mut buf = String::with_capacity(512);
        let mut out = JsonObject::open(&mut buf);
        out.key("time");
        out.buf.push('"');
        write_rfc3339(out.buf, self.time);
        out.buf.push('"');
        out.str("request_id", &self.request_id);
        out.str("envoy_stream_id", &self.envoy_stream_id);
        out.opt_str("spiffe_id", self.spiffe_id);
        if let Some(id) = self.token_id {
            out.str("token_id", id);
        }
        out.str("method", self.method);
        out.str("host", &self.host);
        out.str("path", &self.path);
        if let Some(raw) = &self.raw_path {
            out.str("raw_path", raw);
        }
        out.str("decision", self.decision);
        out.opt_str("rule", self.rule);
        out.opt_str("reason", self.reason.map(Reason::as_str));
        if let Some(detail) = &self.detail {
            out.str("detail", detail);
        }
        out.opt_str("policy_version", self.policy_version);
        out.u64("latency_us", self.latency_us);
        if !self.errors.is_empty() {
            out.key("errors");
            out.buf.push('[');
            for (i, e) in self.errors.iter().enumerate() {
                if i > 0 {
                    out.buf.push(',');
                }
                let mut error = JsonObject::open(out.buf);
                error.str("rule", &e.rule);
                error.str("error", &e.error);
                error.close();
            }
            out.buf.push(']');
        }
        if !self.headers.is_empty() {
            out.key("headers");
            let mut headers = JsonObject::open(out.buf);
            for (name, value) in &self.headers.0 {
                headers.str(name, value);
            }
            headers.close();
        }
        if let Some(trail) = &self.trail {
            trail.write(&mut out);
        }
        out.close();
        buf
    }
}

fn serialize_time<S: serde::Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let mut text = String::with_capacity(32);
    write_rfc3339(&mut text, *time);
    s.serialize_str(&text)
}

/// Writes `time` as `2026-11-22T04:26:34.880642Z`. The date and time of day
/// change once a second and are formatted (by chrono) only then, once per
/// thread; the microseconds are appended each time.
fn write_rfc3339(out: &mut String, time: SystemTime) {
    use std::cell::RefCell;
    use std::fmt::Write;

    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != seconds || text.is_empty() {
            let utc = crate::engine::time::to_chrono(time);
            text.clear();
            // Writing to a String cannot fail.
            let _ = write!(text, "{}", utc.format("%Y-%m-%dT%H:%M:%S"));
            *cached = seconds;
        }
        out.push_str(text);
    });
    let _ = write!(out, ".{:06}Z", since_epoch.subsec_micros());
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::json_line::string;

    fn record<'a>(errors: &'a [RuleError], headers: Vec<(&'a str, &'a str)>) -> AuditRecord<'a> {
        AuditRecord {
            time: UNIX_EPOCH + Duration::from_micros(1_795_321_594_880_642),
            request_id: "r-\"1\"".into(),
            envoy_stream_id: "1234".into(),
            spiffe_id: Some("spiffe://example.org/ns/a/sa/b"),
            token_id: Some("spiffe://example.org/agent"),
            method: "GET",
            host: "h\\ost".into(),
            path: "/caf\u{e9}/\u{2028}/\u{1F980}/\u{7f}".into(),
            raw_path: Some("/caf\u{e9}/./\u{2028}/\u{1F980}/\u{7f}".into()),
            decision: "deny",
            rule: Some("r\u{1}\u{8}\u{c}\u{1f}"),
            reason: Some(Reason::RuleError),
            detail: Some("line\nbreak\r\ttab".into()),
            policy_version: Some("0a1116db286dfaf5"),
            latency_us: u64::MAX,
            errors,
            headers: Headers(headers.into_iter().map(|(k, v)| (k, v.into())).collect()),
            trail: None,
        }
    }

    fn parsed(line: &str) -> serde_json::Value {
        assert!(!line.contains('\n'), "one line: {line}");
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    #[test]
    fn the_hand_written_line_is_the_document_serde_makes() {
        let errors = [
            RuleError {
                rule: "a".into(),
                error: "no such key: \"x-debug\"".into(),
            },
            RuleError {
                rule: "b".into(),
                error: "\u{0}".into(),
            },
        ];
        let full = record(&errors, vec![("user-agent", "curl/8 \"x\""), ("x-b", "")]);
        let expected = serde_json::to_value(&full).unwrap();
        assert_eq!(parsed(&full.to_json()), expected);
        assert_eq!(expected["time"], "2026-11-22T04:26:34.880642Z");
        assert_eq!(expected["path"], "/caf\u{e9}/\u{2028}/\u{1F980}/\u{7f}");

        let mut bare = record(&[], Vec::new());
        bare.spiffe_id = None;
        bare.token_id = None;
        bare.rule = None;
        bare.reason = None;
        bare.detail = None;
        bare.policy_version = None;
        bare.raw_path = None;
        bare.latency_us = 0;
        let line = bare.to_json();
        assert_eq!(parsed(&line), serde_json::to_value(&bare).unwrap());
        assert!(
            !line.contains("errors")
                && !line.contains("headers")
                && !line.contains("token_id")
                && !line.contains("raw_path")
        );
        assert!(line.contains(r#""spiffe_id":null"#), "{line}");
    }

    #[test]
    fn queries_and_credential_headers_never_reach_a_record() {
        assert_eq!(without_query("/export?token=s3cret#x"), "/export");
        assert_eq!(without_query("/plain"), "/plain");
        let request = crate::testing::check::request(
            "",
            "GET",
            "/a?token=s3cret",
            &[
                ("authorization", "Bearer s3cret"),
                ("cookie", "id=s3cret"),
                ("user-agent", "t"),
                ("x-request-id", "req-7"),
            ],
        );
        let attrs = crate::edge::request::attributes(&request).unwrap();
        let decision = Decision::refused(
            crate::engine::identity::IdentityError::new(Reason::SvidMissing, "no certificate"),
            "v1".into(),
        );
        let redaction = Redaction::default();
        let headers = ["authorization", "cookie", "user-agent"]
            .map(|name| (name.to_owned(), redaction.is_secret_header(name)));
        let record = audit_record(
            &decision,
            (&attrs, &redaction),
            &headers,
            UNIX_EPOCH,
            Duration::ZERO,
        );
        let line = record.to_json();
        assert!(!line.contains("s3cret"), "{line}");
        assert!(line.contains(r#""authorization":"<redacted>""#), "{line}");
        assert!(line.contains(r#""user-agent":"t""#), "{line}");
        assert!(line.contains(r#""path":"/a""#), "{line}");
        let record = parsed(&line);
        assert_eq!(
            (&record["request_id"], &record["envoy_stream_id"]),
            (
                &serde_json::json!("req-7"),
                &serde_json::json!(attrs.stream_id)
            )
        );
    }

    #[test]
    fn every_control_character_is_escaped() {
        let all: String = (0u8..0x20).map(char::from).collect();
        let mut line = String::new();
        string(&mut line, &all);
        assert!(line.bytes().all(|b| b >= 0x20), "{line:?}");
        assert_eq!(serde_json::from_str::<String>(&line).unwrap(), all);
    }

    #[test]
    fn times_are_rfc3339_with_microseconds_across_second_boundaries() {
        // Out of order and repeated, so the per-second cache is both hit
        // and refreshed.
        let micros = [
            1_795_321_594_880_642u64,
            1_795_321_594_000_000,
            1_795_321_595_000_001,
            1_795_321_594_999_999,
            0,
            951_782_400_123_456, // 2000-02-29, a leap day
            1_795_321_595_000_001,
        ];
        for m in micros {
            let time = UNIX_EPOCH + Duration::from_micros(m);
            let mut ours = String::new();
            write_rfc3339(&mut ours, time);
            let chrono = chrono::DateTime::<chrono::Utc>::from(time)
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            assert_eq!(ours, chrono);
        }
    }
}
