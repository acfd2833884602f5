//! `CheckRequest`s as Envoy sends them.

use std::collections::HashMap;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};

/// A `CheckRequest` for `method path` from a peer with `certificate` (as
/// Envoy encodes it; empty for none).
pub fn request(
    certificate: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                certificate: certificate.to_owned(),
                ..Default::default()
            }),
            request: Some(Request {
                time: None,
                http: Some(HttpRequest {
                    id: "test-request".into(),
                    method: method.into(),
                    path: path.into(),
                    host: "api.example.org".into(),
                    scheme: "https".into(),
                    protocol: "HTTP/2".into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect::<HashMap<_, _>>(),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
}

/// Whether the response allows the request.
pub fn allowed(response: &CheckResponse) -> bool {
    response.status.as_ref().is_some_and(|s| s.code == 0)
}

/// The denied response's HTTP status and `x-celador-reason`, if denied.
pub fn denial(response: &CheckResponse) -> Option<(i32, String)> {
    match &response.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => {
            let status = denied.status.as_ref().map_or(0, |s| s.code);
            let reason = denied
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .find(|h| h.key == "x-celador-reason")
                .map(|h| h.value.clone())
                .unwrap_or_default();
            Some((status, reason))
        }
        _ => None,
    }
}
