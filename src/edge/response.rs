//! A [`Decision`] as Envoy's `CheckResponse`.
//!
//! Data flow: the last stage of a check. An allow is an OK status with the
//! configured upstream headers (overwriting any the client sent) and every
//! client-sent `x-celador-*` header removed; a deny is
//! a denied HTTP response: 401 for a missing or invalid identity, 403 for a
//! policy deny, a JSON body with the reason and the deciding rule, and an
//! `x-celador-reason` header. Both carry dynamic metadata (reason, rule,
//! SPIFFE ID, policy version) for Envoy's access logs, under the
//! `envoy.filters.http.ext_authz` namespace.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use envoy_types::pb::google::rpc;

use crate::engine::Decision;
use crate::engine::attributes::Attributes;

/// What an upstream header carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum HeaderValueSource {
    /// The verified SPIFFE ID.
    #[serde(rename = "source.id")]
    SourceId,
    /// Its trust domain.
    #[serde(rename = "source.trust_domain")]
    SourceTrustDomain,
    /// Its path.
    #[serde(rename = "source.path")]
    SourcePath,
    /// The verified JWT-SVID's SPIFFE ID.
    #[serde(rename = "token.id")]
    TokenId,
    /// The name of the allow rule that matched.
    #[serde(rename = "rule")]
    Rule,
    /// The policy version.
    #[serde(rename = "policy.version")]
    PolicyVersion,
}

/// The header naming the reason of a denial.
pub const REASON_HEADER: &str = "x-celador-reason";

/// How answers are shaped, set once at start-up.
#[derive(Debug, Clone, Default)]
pub struct AnswerSettings {
    /// Headers set on allowed requests, in order.
    pub upstream_headers: Vec<(String, HeaderValueSource)>,
    /// The header a JWT-SVID is read from, to remove from allowed requests
    /// whose token celador verified (`identity.jwt.remove_header`). A
    /// header celador did not read as a token (say `authorization: Basic`)
    /// is the application's and stays.
    pub remove_token_header: Option<String>,
    /// Whether deny bodies also name the deciding rule and the detail of the
    /// failure (`answers.detail`, for development: it tells the caller
    /// about the configuration).
    pub detail: bool,
}

/// Builds Envoy's answer to `decision`.
///
/// An allowed request gets `upstream_headers` set; any of them without a
/// value (say `token.id` with no token) is removed, so the upstream never
/// sees a client-sent copy. A denial carries its reason code and the request
/// id, nothing more unless `settings.detail`.
pub fn build(
    decision: &Decision,
    attrs: &Attributes<'_>,
    settings: &AnswerSettings,
) -> CheckResponse {
    if !decision.allowed {
        let body = denial_body(decision, attrs, settings.detail);
        return CheckResponse {
            dynamic_metadata: Some(metadata(decision)),
            ..denied(decision.reason, body)
        };
    }
    CheckResponse {
        status: Some(status(tonic::Code::Ok)),
        http_response: Some(HttpResponse::OkResponse(allowed(
            decision, attrs, settings, None,
        ))),
        dynamic_metadata: Some(metadata(decision)),
    }
}

/// The answer on a route in shadow mode to a request the rules denied: let
/// through, with `x-celador-shadow: <reason>` for the upstream, so that
/// nothing it does depends on celador yet while the decision is audited.
pub fn build_shadowed(
    decision: &Decision,
    attrs: &Attributes<'_>,
    settings: &AnswerSettings,
) -> CheckResponse {
    let ok = allowed(decision, attrs, settings, Some(decision.reason.as_str()));
    CheckResponse {
        status: Some(status(tonic::Code::Ok)),
        http_response: Some(HttpResponse::OkResponse(ok)),
        dynamic_metadata: Some(metadata(decision)),
    }
}

/// The header that tells the upstream a request was let through by a route
/// in shadow mode, with the reason it would have been denied.
pub const SHADOW_HEADER: &str = "x-celador-shadow";

/// The answer when celador failed outside the decision itself (a panic
/// while reading the request): a 500 denial, never an error status that a
/// fail-open Envoy would turn into an allow.
pub fn internal_error() -> CheckResponse {
    let reason = crate::engine::Reason::InternalError;
    denied(
        reason,
        format!(r#"{{"decision":"deny","reason":"{reason}"}}"#),
    )
}

/// The answer to a check celador refuses before deciding it (`overloaded`,
/// or `invalid_request` for a message it cannot read): a denial with the
/// reason and, when it is a plain token, the request id; the reason is
/// also Envoy's dynamic metadata.
pub fn refused(reason: crate::engine::Reason, request_id: &str) -> CheckResponse {
    let body = serde_json::json!({
        "decision": "deny",
        "reason": reason,
        "request_id": Some(request_id).filter(|id| is_plain_id(id)),
    });
    let mut fields = HashMap::with_capacity(1);
    fields.insert(
        "reason".to_owned(),
        Value {
            kind: Some(Kind::StringValue(reason.as_str().to_owned())),
        },
    );
    CheckResponse {
        dynamic_metadata: Some(Struct { fields }),
        ..denied(reason, body.to_string())
    }
}

/// A denial for `reason` with `body`, without dynamic metadata.
fn denied(reason: crate::engine::Reason, body: String) -> CheckResponse {
    let code = if reason.is_identity_failure() {
        tonic::Code::Unauthenticated
    } else {
        // Also for a 5xx denial: a status in the CheckResponse is a
        // denial to Envoy, never the error its failure mode decides.
        tonic::Code::PermissionDenied
    };
    CheckResponse {
        status: Some(status(code)),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                // The enum's values are the HTTP status codes.
                code: i32::from(reason.http_status()),
            }),
            headers: vec![
                overwrite("content-type", "application/json"),
                overwrite(REASON_HEADER, reason.as_str()),
            ],
            body,
        })),
        dynamic_metadata: None,
    }
}

fn status(code: tonic::Code) -> rpc::Status {
    rpc::Status {
        code: code as i32,
        message: String::new(),
        details: Vec::new(),
    }
}

/// The headers celador owns: a client's copy never reaches the upstream.
pub const OWN_HEADER_PREFIX: &str = "x-celador-";

/// An allowed request's upstream headers: each configured one set
/// (replacing the client's copies) or removed when it has no value; every
/// `x-celador-*` header the client sent, and `x-celador-shadow` whether or
/// not celador saw it, removed unless celador sets it; `shadow`, when a
/// shadow route lets a denial through, as `x-celador-shadow`.
fn allowed(
    decision: &Decision,
    attrs: &Attributes<'_>,
    settings: &AnswerSettings,
    shadow: Option<&str>,
) -> OkHttpResponse {
    let upstream_headers = &settings.upstream_headers;
    let mut headers = Vec::with_capacity(upstream_headers.len() + usize::from(shadow.is_some()));
    let mut headers_to_remove = Vec::with_capacity(2);
    if let Some(token_header) = &settings.remove_token_header
        && decision.identity.token.is_some()
    {
        headers_to_remove.push(token_header.clone());
    }
    for (name, source) in upstream_headers {
        match header_value(decision, *source) {
            Some(value) => headers.push(overwrite(name, value)),
            None => headers_to_remove.push(name.clone()),
        }
    }
    // Set headers replace the client's copies (OVERWRITE_IF_EXISTS_OR_ADD),
    // so only the others are removed: Envoy's order of removing and setting
    // then does not matter.
    let configured = |name: &str| upstream_headers.iter().any(|(n, _)| n == name);
    match shadow {
        Some(reason) => headers.push(overwrite(SHADOW_HEADER, reason)),
        None if !configured(SHADOW_HEADER) => headers_to_remove.push(SHADOW_HEADER.to_owned()),
        None => {}
    }
    for name in attrs.headers.keys() {
        if name.starts_with(OWN_HEADER_PREFIX) && name != SHADOW_HEADER && !configured(name) {
            headers_to_remove.push(name.clone());
        }
    }
    OkHttpResponse {
        headers,
        headers_to_remove,
        ..Default::default()
    }
}

fn header_value(decision: &Decision, source: HeaderValueSource) -> Option<&str> {
    let id = decision.identity.source.as_ref().map(|s| &s.id);
    match source {
        HeaderValueSource::SourceId => id.map(|id| id.as_str()),
        HeaderValueSource::SourceTrustDomain => id.map(|id| id.trust_domain()),
        HeaderValueSource::SourcePath => id.map(|id| id.path()),
        HeaderValueSource::TokenId => decision.identity.token.as_ref().map(|t| t.id.as_str()),
        HeaderValueSource::Rule => decision.rule.as_deref(),
        HeaderValueSource::PolicyVersion => Some(&*decision.policy_version),
    }
}

/// A header that replaces every value the client sent under that name.
fn overwrite(name: &str, value: &str) -> HeaderValueOption {
    #[allow(deprecated)]
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_owned(),
            value: value.to_owned(),
            raw_value: Vec::new(),
        }),
        append: None,
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        keep_empty_value: false,
    }
}

fn denial_body(decision: &Decision, attrs: &Attributes<'_>, detail: bool) -> String {
    // The reason code tells the caller what class of thing to fix; the
    // details (accepted audiences, key counts, the caller's own text) would
    // tell it about the configuration, so they go to the audit record only.
    let request_id = Some(attrs.request_id()).filter(|id| is_plain_id(id));
    let body = if detail {
        serde_json::json!({
            "decision": "deny",
            "reason": decision.reason,
            "request_id": request_id,
            "rule": decision.rule.as_deref(),
            "detail": decision.detail.as_deref().map(crate::engine::redaction::text),
        })
    } else {
        serde_json::json!({
            "decision": "deny",
            "reason": decision.reason,
            "request_id": request_id,
        })
    };
    body.to_string()
}

/// Whether a request id may be echoed: Envoy's are UUIDs; anything long,
/// unusual or shaped like a credential came from the caller and is not
/// reflected back.
fn is_plain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        && !crate::engine::redaction::is_secret_value(id)
}

fn metadata(decision: &Decision) -> Struct {
    let mut fields = HashMap::with_capacity(5);
    let mut put = |key: &str, value: &str| {
        fields.insert(
            key.to_owned(),
            Value {
                kind: Some(Kind::StringValue(value.to_owned())),
            },
        );
    };
    put("reason", decision.reason.as_str());
    put("policy_version", &decision.policy_version);
    if let Some(rule) = &decision.rule {
        put("rule", rule);
    }
    if let Some(svid) = &decision.identity.source {
        put("spiffe_id", svid.id.as_str());
    }
    if let Some(token) = &decision.identity.token {
        put("token_id", token.id.as_str());
    }
    Struct { fields }
}
