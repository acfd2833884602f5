//! An Envoy `CheckRequest` from its proto3 JSON form.
//!
//! Data flow: `celador eval` replays a production request that an operator
//! copied as JSON (Envoy's debug output, an ext_authz test harness, OPA's
//! input); it becomes the same protobuf message `serve` receives, so the
//! rest of the path is identical. Field names may be lowerCamelCase (the
//! JSON mapping) or the proto's snake_case; fields celador does not read are
//! ignored.

use std::collections::HashMap;
use std::time::SystemTime;

use base64::Engine;
use envoy_types::pb::envoy::config::core::v3::{
    Address, HeaderMap, HeaderValue, SocketAddress, address, socket_address,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use serde_json::{Map, Value};

/// Reads a `CheckRequest` from its JSON form.
pub fn check_request(json: &Value) -> Result<CheckRequest, String> {
    let root = json.as_object().ok_or("a CheckRequest is a JSON object")?;
    let attrs =
        object(root, "attributes", "attributes")?.ok_or("the CheckRequest has no `attributes`")?;
    let request = object(attrs, "request", "request")?;
    let http = match request {
        Some(r) => object(r, "http", "http")?,
        None => None,
    };
    Ok(CheckRequest {
        attributes: Some(AttributeContext {
            source: object(attrs, "source", "source")?.map(peer).transpose()?,
            destination: object(attrs, "destination", "destination")?
                .map(peer)
                .transpose()?,
            request: Some(Request {
                time: match request.and_then(|r| r.get("time")) {
                    Some(Value::String(t)) => Some(timestamp(t)?),
                    None | Some(Value::Null) => None,
                    Some(_) => {
                        return Err("attributes.request.time must be an RFC 3339 string".into());
                    }
                },
                http: http.map(http_request).transpose()?,
            }),
            context_extensions: string_map(attrs, "contextExtensions", "context_extensions")?,
            ..Default::default()
        }),
    })
}

fn get<'a>(obj: &'a Map<String, Value>, camel: &str, snake: &str) -> Option<&'a Value> {
    obj.get(camel)
        .or_else(|| obj.get(snake))
        .filter(|v| !v.is_null())
}

fn object<'a>(
    obj: &'a Map<String, Value>,
    camel: &str,
    snake: &str,
) -> Result<Option<&'a Map<String, Value>>, String> {
    match get(obj, camel, snake) {
        None => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(format!("`{camel}` must be an object")),
    }
}

fn string(obj: &Map<String, Value>, camel: &str, snake: &str) -> Result<String, String> {
    match get(obj, camel, snake) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("`{camel}` must be a string")),
    }
}

/// proto3 JSON writes 64-bit integers as strings, 32-bit ones as numbers;
/// both are accepted.
fn integer(obj: &Map<String, Value>, camel: &str, snake: &str) -> Result<Option<i64>, String> {
    match get(obj, camel, snake) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| format!("`{camel}` must be an integer")),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| format!("`{camel}` must be an integer")),
        Some(_) => Err(format!("`{camel}` must be an integer")),
    }
}

fn string_map(
    obj: &Map<String, Value>,
    camel: &str,
    snake: &str,
) -> Result<HashMap<String, String>, String> {
    match get(obj, camel, snake) {
        None => Ok(HashMap::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(format!("`{camel}.{k}` must be a string")),
            })
            .collect(),
        Some(_) => Err(format!("`{camel}` must be an object")),
    }
}

fn peer(obj: &Map<String, Value>) -> Result<Peer, String> {
    let address = match object(obj, "address", "address")? {
        Some(a) => match object(a, "socketAddress", "socket_address")? {
            Some(s) => Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: string(s, "address", "address")?,
                    port_specifier: integer(s, "portValue", "port_value")?.map(|p| {
                        socket_address::PortSpecifier::PortValue(u32::try_from(p).unwrap_or(0))
                    }),
                    ..Default::default()
                })),
            }),
            None => None,
        },
        None => None,
    };
    Ok(Peer {
        address,
        service: string(obj, "service", "service")?,
        labels: string_map(obj, "labels", "labels")?,
        principal: string(obj, "principal", "principal")?,
        certificate: string(obj, "certificate", "certificate")?,
    })
}

fn http_request(obj: &Map<String, Value>) -> Result<HttpRequest, String> {
    let header_map = match object(obj, "headerMap", "header_map")? {
        Some(map) => {
            let items = match get(map, "headers", "headers") {
                Some(Value::Array(items)) => items.as_slice(),
                None => &[],
                Some(_) => return Err("`headerMap.headers` must be an array".into()),
            };
            let mut headers = Vec::with_capacity(items.len());
            for item in items {
                let item = item
                    .as_object()
                    .ok_or("`headerMap.headers` holds objects")?;
                let raw = string(item, "rawValue", "raw_value")?;
                #[allow(deprecated)]
                headers.push(HeaderValue {
                    key: string(item, "key", "key")?,
                    value: string(item, "value", "value")?,
                    raw_value: base64::engine::general_purpose::STANDARD
                        .decode(raw)
                        .map_err(|_| "`rawValue` must be base64")?,
                });
            }
            Some(HeaderMap { headers })
        }
        None => None,
    };
    Ok(HttpRequest {
        id: string(obj, "id", "id")?,
        method: string(obj, "method", "method")?,
        headers: string_map(obj, "headers", "headers")?,
        header_map,
        path: string(obj, "path", "path")?,
        host: string(obj, "host", "host")?,
        scheme: string(obj, "scheme", "scheme")?,
        query: string(obj, "query", "query")?,
        fragment: string(obj, "fragment", "fragment")?,
        size: integer(obj, "size", "size")?.unwrap_or(-1),
        protocol: string(obj, "protocol", "protocol")?,
        ..Default::default()
    })
}

fn timestamp(text: &str) -> Result<envoy_types::pb::google::protobuf::Timestamp, String> {
    let time = crate::engine::time::parse_rfc3339(text)?;
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Ok(envoy_types::pb::google::protobuf::Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_request_in_json_reads_like_the_protobuf_one() {
        let json: Value = serde_json::from_str(
            r#"{"attributes": {
                "source": {"address": {"socketAddress": {"address": "10.1.2.3", "portValue": 5555}},
                           "principal": "spiffe://example.org/x", "certificate": "cert"},
                "destination": {"address": {"socket_address": {"address": "10.9.9.9", "port_value": 8443}}},
                "request": {"time": "2026-11-22T10:00:00Z",
                            "http": {"id": "r1", "method": "GET", "path": "/export/a?x=1",
                                     "host": "api", "scheme": "https", "protocol": "HTTP/2",
                                     "size": "42", "headers": {"user-agent": "curl"}}},
                "contextExtensions": {"route": "export"},
                "metadataContext": {}}}"#,
        )
        .unwrap();
        let request = check_request(&json).unwrap();
        let attrs = crate::edge::request::attributes(&request).unwrap();
        assert_eq!(attrs.source_address, "10.1.2.3");
        assert_eq!(attrs.source_port, 5555);
        assert_eq!(attrs.destination_port, 8443);
        assert_eq!(attrs.path, "/export/a");
        assert_eq!(attrs.query, "x=1");
        assert_eq!(attrs.size, 42);
        assert_eq!(attrs.header("user-agent"), Some("curl"));
        assert_eq!(attrs.context["route"], "export");
        assert_eq!(attrs.source_certificate, "cert");
        assert!(attrs.time.is_some());
    }

    #[test]
    fn wrong_shapes_are_named() {
        let cases = [
            ("[]", "a CheckRequest is a JSON object"),
            ("{}", "the CheckRequest has no `attributes`"),
            (
                r#"{"attributes": {"request": {"http": {"size": "many"}}}}"#,
                "`size` must be an integer",
            ),
            (
                r#"{"attributes": {"request": {"time": 5}}}"#,
                "attributes.request.time must be an RFC 3339 string",
            ),
            (
                r#"{"attributes": {"contextExtensions": {"a": 1}}}"#,
                "`contextExtensions.a` must be a string",
            ),
        ];
        for (text, message) in cases {
            let json: Value = serde_json::from_str(text).unwrap();
            assert_eq!(check_request(&json).unwrap_err(), message, "{text}");
        }
    }
}
