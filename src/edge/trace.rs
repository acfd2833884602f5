//! Tracing: one span per check, a child of the span Envoy's request carries.
//!
//! Data flow: when tracing is configured, [`super::ExtAuthz::check`] hands
//! each answered check to [`Tracing::record`], which reads the trace context
//! from the request's headers (W3C `traceparent`, else B3's single `b3`
//! header, else B3's `x-b3-*` headers), and records a `celador.check` span
//! with the decision as attributes under that parent. The OpenTelemetry SDK
//! samples it (parent-based, with the configured ratio for new traces) and
//! exports it over OTLP in batches off the request path. When tracing is off
//! nothing here runs.

use std::time::SystemTime;

use opentelemetry::trace::{
    Span, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
};
use opentelemetry::{Context, KeyValue};

use crate::engine::redaction::Redaction;
use crate::engine::{Attributes, Decision};

/// Records a span per check.
#[derive(Debug)]
pub struct Tracing {
    tracer: opentelemetry_sdk::trace::SdkTracer,
}

impl Tracing {
    /// Spans recorded with `tracer`.
    pub fn new(tracer: opentelemetry_sdk::trace::SdkTracer) -> Self {
        Tracing { tracer }
    }

    /// Records the span of one check, from `start` to `end`, showing what
    /// `redaction` lets be shown; `enforced` is false on a route in shadow
    /// mode.
    pub fn record(
        &self,
        (attrs, redaction): (&Attributes<'_>, &Redaction),
        decision: &Decision,
        enforced: bool,
        start: SystemTime,
        end: SystemTime,
    ) {
        let parent = parent_of(attrs);
        let mut attributes = vec![
            KeyValue::new(
                "celador.decision",
                if decision.allowed { "allow" } else { "deny" },
            ),
            KeyValue::new("celador.reason", decision.reason.as_str()),
            KeyValue::new(
                "celador.policy_version",
                decision.policy_version.to_string(),
            ),
            KeyValue::new("celador.enforced", enforced),
            KeyValue::new("celador.cache_hit", decision.from_cache),
            KeyValue::new("http.request.method", attrs.method.to_owned()),
            KeyValue::new("url.path", redaction.path(&attrs.path).into_owned()),
        ];
        if let Some(rule) = &decision.rule {
            attributes.push(KeyValue::new("celador.rule", rule.to_string()));
        }
        if let Some(source) = &decision.identity.source {
            attributes.push(KeyValue::new("celador.source.id", source.id.to_string()));
        }
        if let Some(token) = &decision.identity.token {
            attributes.push(KeyValue::new("celador.token.id", token.id.to_string()));
        }
        if let Some(grant) = &decision.grant {
            attributes.push(KeyValue::new("celador.grant", grant.name.to_string()));
        }
        let mut span = self
            .tracer
            .span_builder("celador.check")
            .with_kind(SpanKind::Server)
            .with_start_time(start)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        span.end_with_timestamp(end);
    }
}

/// The trace context the request carries, as a remote parent; an empty
/// context (a new trace) when it carries none, or none that parses.
pub fn parent_of(attrs: &Attributes<'_>) -> Context {
    let remote = attrs
        .header("traceparent")
        .and_then(w3c)
        .or_else(|| attrs.header("b3").and_then(b3_single))
        .or_else(|| {
            b3_multi(
                attrs.header("x-b3-traceid")?,
                attrs.header("x-b3-spanid")?,
                attrs.header("x-b3-sampled"),
            )
        });
    match remote {
        Some(span_context) => Context::new().with_remote_span_context(span_context),
        None => Context::new(),
    }
}

/// `traceparent: 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`.
fn w3c(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    // Version 00 has exactly four fields; later versions may add more.
    if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    context(trace, span, flags & 1 == 1)
}

/// `b3: <trace id>-<span id>[-<sampled>[-<parent span id>]]`; a lone
/// sampling decision (`0`, `1`, `d`) carries no parent.
fn b3_single(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let (trace, span) = (parts.next()?, parts.next()?);
    b3_multi(trace, span, parts.next())
}

/// B3's trace id (16 or 32 hex), span id (16 hex) and sampling flag.
fn b3_multi(trace: &str, span: &str, sampled: Option<&str>) -> Option<SpanContext> {
    if !(trace.len() == 16 || trace.len() == 32) || span.len() != 16 {
        return None;
    }
    // A 64-bit trace id is the low half of a 128-bit one.
    let trace = format!("{trace:0>32}");
    // Without a sampling decision, B3 defers it: the SDK's sampler decides.
    let sampled = matches!(sampled.map(str::trim), Some("1" | "d" | "true"));
    context(&trace, span, sampled)
}

fn context(trace: &str, span: &str, sampled: bool) -> Option<SpanContext> {
    if !trace
        .bytes()
        .chain(span.bytes())
        .all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    Some(SpanContext::new(
        trace_id,
        span_id,
        flags,
        true,
        TraceState::default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parent(header: &str, value: &str) -> Option<(String, String, bool)> {
        let headers = std::collections::HashMap::from([(header.to_owned(), value.to_owned())]);
        let context = std::collections::HashMap::new();
        let attrs = Attributes {
            source_certificate: "",
            source_address: "",
            source_port: 0,
            destination_principal: "",
            destination_address: "",
            destination_port: 0,
            stream_id: "",
            method: "GET",
            path: "/".into(),
            raw_path: "/",
            path_ambiguity: None,
            query: "",
            host: "",
            scheme: "",
            protocol: "",
            headers: std::borrow::Cow::Owned(headers),
            size: -1,
            time: None,
            context: &context,
        };
        let cx = parent_of(&attrs);
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid().then(|| {
            (
                sc.trace_id().to_string(),
                sc.span_id().to_string(),
                sc.is_sampled(),
            )
        })
    }

    #[test]
    fn w3c_and_b3_parents_are_read_and_garbage_is_a_new_trace() {
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let span = "00f067aa0ba902b7";
        let want = Some((trace.to_owned(), span.to_owned(), true));
        assert_eq!(
            parent("traceparent", &format!("00-{trace}-{span}-01")),
            want
        );
        assert_eq!(parent("b3", &format!("{trace}-{span}-1")), want);
        let short = parent("b3", &format!("a3ce929d0e0e4736-{span}-0")).unwrap();
        assert_eq!(short.0, "0000000000000000a3ce929d0e0e4736");
        assert!(!short.2);
        for garbage in [
            "",
            "00-xyz",
            &format!("00-{trace}-{span}-01-extra"),
            &format!("ff-{trace}-{span}-01"),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            &format!("00-{trace}-{span}-zz"),
            "00-4bf92f3577b34da6a3ce929d0e0e473\u{e9}-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parent("traceparent", garbage), None, "{garbage:?}");
        }
        assert_eq!(parent("b3", "1"), None);
    }
}
