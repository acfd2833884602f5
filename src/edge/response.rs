//! A [`Decision`] as Envoy's `CheckResponse`.
//!
//! Data flow: the last stage of a check. An allow is an OK status with the
//! configured upstream headers (overwriting any the client sent); a deny is
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
use envoy_types::pb::envoy::r#type::v3::{HttpStatus, StatusCode};
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

/// Builds Envoy's answer to `decision`.
///
/// An allowed request gets `upstream_headers` set; any of them without a
/// value (say `token.id` with no token) and every header in `remove` are
/// removed, so the upstream never sees a client-sent copy.
pub fn build(
    decision: &Decision,
    attrs: &Attributes<'_>,
    upstream_headers: &[(String, HeaderValueSource)],
    remove: &[String],
) -> CheckResponse {
    let http_response = if decision.allowed {
        let mut headers = Vec::with_capacity(upstream_headers.len());
        let mut headers_to_remove = remove.to_vec();
        for (name, source) in upstream_headers {
            match header_value(decision, *source) {
                Some(value) => headers.push(overwrite(name, value)),
                None => headers_to_remove.push(name.clone()),
            }
        }
        HttpResponse::OkResponse(OkHttpResponse {
            headers,
            headers_to_remove,
            ..Default::default()
        })
    } else {
        let status = if decision.reason.is_identity_failure() {
            StatusCode::Unauthorized
        } else {
            StatusCode::Forbidden
        };
        HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: status as i32,
            }),
            headers: vec![
                overwrite("content-type", "application/json"),
                overwrite(REASON_HEADER, decision.reason.as_str()),
            ],
            body: denial_body(decision, attrs),
        })
    };
    let code = if decision.allowed {
        tonic::Code::Ok
    } else if decision.reason.is_identity_failure() {
        tonic::Code::Unauthenticated
    } else {
        tonic::Code::PermissionDenied
    };
    CheckResponse {
        status: Some(rpc::Status {
            code: code as i32,
            message: String::new(),
            details: Vec::new(),
        }),
        http_response: Some(http_response),
        dynamic_metadata: Some(metadata(decision)),
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

fn denial_body(decision: &Decision, attrs: &Attributes<'_>) -> String {
    // Identity details help the caller fix its credential; rule evaluation
    // errors stay in the audit record, as they describe the policy.
    let body = serde_json::json!({
        "decision": "deny",
        "reason": decision.reason,
        "rule": decision.rule.as_deref(),
        "detail": decision.detail,
        "request_id": attrs.request_id,
    });
    body.to_string()
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
