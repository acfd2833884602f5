//! Envoy's `CheckRequest` into the engine's [`Attributes`]: the only place,
//! with the answer in [`super::response`], that reads protobuf.
//!
//! Data flow: the first stage of a check. Nothing is copied except when
//! Envoy sent raw headers (`encode_raw_headers: true`), which are decoded
//! once into a map.

use std::borrow::Cow;
use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{Address, address, socket_address};
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer};

use crate::engine::attributes::Attributes;
use crate::engine::{request_path, time};

/// Why a `CheckRequest` cannot be checked at all (an error for Envoy, not a
/// deny: its `failure_mode_allow` decides).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttributesError {
    /// No `attributes`.
    #[error("the CheckRequest has no attributes")]
    Missing,
    /// No `attributes.request.http`: celador authorizes HTTP requests.
    #[error(
        "the CheckRequest has no HTTP request; celador authorizes HTTP (use the ext_authz HTTP filter, not the network filter)"
    )]
    NotHttp,
}

/// Reads the attributes of `request`: `path` is the canonical path and
/// an ambiguous one is refused (`request.paths: reject_ambiguous`, the
/// default; see [`Attributes::with_paths`] for the others).
pub fn attributes(request: &CheckRequest) -> Result<Attributes<'_>, AttributesError> {
    let attrs = request
        .attributes
        .as_ref()
        .ok_or(AttributesError::Missing)?;
    let http = attrs
        .request
        .as_ref()
        .and_then(|r| r.http.as_ref())
        .ok_or(AttributesError::NotHttp)?;
    let (source_certificate, source_address, source_port) = match &attrs.source {
        Some(peer) => {
            let (addr, port) = socket(peer);
            (peer.certificate.as_str(), addr, port)
        }
        None => ("", "", 0),
    };
    let (destination_principal, destination_address, destination_port) = match &attrs.destination {
        Some(peer) => {
            let (addr, port) = socket(peer);
            (peer.principal.as_str(), addr, port)
        }
        None => ("", "", 0),
    };
    let (raw_path, query) = request_path::split_query(&http.path);
    let canonical = request_path::canonicalize(raw_path);
    Ok(Attributes {
        source_certificate,
        source_address,
        source_port,
        destination_principal,
        destination_address,
        destination_port,
        stream_id: &http.id,
        method: &http.method,
        path: canonical.path,
        raw_path,
        path_ambiguity: canonical.ambiguity,
        query,
        host: &http.host,
        scheme: &http.scheme,
        protocol: &http.protocol,
        headers: headers(http),
        size: http.size,
        time: attrs
            .request
            .as_ref()
            .and_then(|r| r.time.as_ref())
            .and_then(|t| time::from_timestamp(t.seconds, t.nanos)),
        context: &attrs.context_extensions,
    })
}

fn socket(peer: &Peer) -> (&str, u32) {
    match peer
        .address
        .as_ref()
        .and_then(|a: &Address| a.address.as_ref())
    {
        Some(address::Address::SocketAddress(s)) => {
            let port = match s.port_specifier {
                Some(socket_address::PortSpecifier::PortValue(p)) => p,
                _ => 0,
            };
            (s.address.as_str(), port)
        }
        _ => ("", 0),
    }
}

fn headers(http: &HttpRequest) -> Cow<'_, HashMap<String, String>> {
    let raw = match &http.header_map {
        Some(map) if http.headers.is_empty() && !map.headers.is_empty() => map,
        _ => return Cow::Borrowed(&http.headers),
    };
    let mut out: HashMap<String, String> = HashMap::with_capacity(raw.headers.len());
    for header in &raw.headers {
        let value = if header.raw_value.is_empty() {
            Cow::Borrowed(header.value.as_str())
        } else {
            String::from_utf8_lossy(&header.raw_value)
        };
        out.entry(header.key.to_ascii_lowercase())
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, SocketAddress};
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::Request;

    fn request(http: HttpRequest) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(Peer {
                    address: Some(Address {
                        address: Some(address::Address::SocketAddress(SocketAddress {
                            address: "10.1.2.3".into(),
                            port_specifier: Some(socket_address::PortSpecifier::PortValue(5555)),
                            ..Default::default()
                        })),
                    }),
                    certificate: "cert".into(),
                    ..Default::default()
                }),
                request: Some(Request {
                    time: None,
                    http: Some(http),
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn the_query_and_fragment_are_split_off_the_path() {
        let req = request(HttpRequest {
            path: "/export/a?x=1&y=2#frag".into(),
            method: "GET".into(),
            ..Default::default()
        });
        let a = attributes(&req).unwrap();
        assert_eq!(a.path, "/export/a");
        assert_eq!(a.raw_path, "/export/a");
        assert_eq!(a.query, "x=1&y=2");
        assert_eq!(a.source_address, "10.1.2.3");
        assert_eq!(a.source_port, 5555);
        assert_eq!(a.source_certificate, "cert");
    }

    #[test]
    fn the_path_is_canonical_the_raw_one_kept_and_ambiguity_found() {
        use crate::engine::request_path::{Ambiguity, PathMode};
        let req = request(HttpRequest {
            path: "/export/%2e%2e//%61dmin?x=/../".into(),
            ..Default::default()
        });
        let a = attributes(&req).unwrap();
        assert_eq!(
            (a.path.as_ref(), a.raw_path, a.query),
            ("/admin", "/export/%2e%2e//%61dmin", "x=/../")
        );
        assert_eq!(a.path_ambiguity, Some(Ambiguity::EncodedDot));
        let canonical = a.clone().with_paths(PathMode::Canonical);
        assert_eq!(
            (canonical.path.as_ref(), canonical.path_ambiguity),
            ("/admin", None)
        );
        let raw = a.with_paths(PathMode::Raw);
        assert_eq!(
            (raw.path.as_ref(), raw.path_ambiguity),
            (raw.raw_path, None)
        );
    }

    #[test]
    fn the_request_id_is_the_x_request_id_and_the_stream_id_envoys() {
        let req = request(HttpRequest {
            id: "12977398458817011041".into(),
            headers: [("x-request-id".to_owned(), "8d5c-app".to_owned())].into(),
            ..Default::default()
        });
        let a = attributes(&req).unwrap();
        assert_eq!(
            (a.request_id(), a.stream_id),
            ("8d5c-app", "12977398458817011041")
        );
        let none = request(HttpRequest {
            id: "1".into(),
            ..Default::default()
        });
        assert_eq!(attributes(&none).unwrap().request_id(), "");
    }

    #[test]
    fn raw_header_maps_are_decoded_and_repeated_headers_joined() {
        #[allow(deprecated)]
        let req = request(HttpRequest {
            header_map: Some(HeaderMap {
                headers: vec![
                    HeaderValue {
                        key: "X-A".into(),
                        value: String::new(),
                        raw_value: b"1".to_vec(),
                    },
                    HeaderValue {
                        key: "x-a".into(),
                        value: String::new(),
                        raw_value: b"2".to_vec(),
                    },
                ],
            }),
            ..Default::default()
        });
        let a = attributes(&req).unwrap();
        assert_eq!(a.header("x-a"), Some("1,2"));
    }

    #[test]
    fn requests_without_http_attributes_are_errors() {
        assert_eq!(
            attributes(&CheckRequest::default()).unwrap_err(),
            AttributesError::Missing
        );
        let no_http = CheckRequest {
            attributes: Some(AttributeContext::default()),
        };
        assert_eq!(attributes(&no_http).unwrap_err(), AttributesError::NotHttp);
    }
}
