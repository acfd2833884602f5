//! A `CheckRequest` written as the JSON `celador eval --input` reads
//! ([`super::json`]): what `celador capture` saves of each check Envoy
//! sends it.
//!
//! Data flow: the check's attributes are read as `serve` reads them
//! (`edge::request::attributes`), shown through the one [`Redaction`]
//! (credentials as `<redacted>`, as in audit records) unless the user opted
//! in to credentials, and written back in protobuf's JSON mapping, with the
//! fields celador reads and no other. Reading the file gives the same
//! attributes again (the tests check the round trip). Off the request path.

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use serde_json::{Map, Value, json};

use crate::engine::attributes::Attributes;
use crate::engine::redaction::Redaction;

/// Why a check cannot be written.
#[derive(Debug, thiserror::Error)]
#[error("not an HTTP check: {0}")]
pub struct NotHttp(#[from] crate::edge::request::AttributesError);

/// `request` as the JSON `eval --input` reads: shown through `redaction`,
/// or as received when `redaction` is `None` (credentials included).
pub fn to_json(request: &CheckRequest, redaction: Option<&Redaction>) -> Result<Value, NotHttp> {
    let attrs = crate::edge::request::attributes(request)?;
    let shown = redaction.map(|r| r.shown(&attrs));
    let attrs = shown.as_ref().map_or(attrs.clone(), |s| s.attributes());
    Ok(written(&attrs))
}

/// The attributes in protobuf's JSON mapping of a `CheckRequest`.
fn written(attrs: &Attributes<'_>) -> Value {
    let socket = |address: &str, port: u32| json!({"socketAddress": {"address": address, "portValue": port}});
    let path = if attrs.query.is_empty() {
        attrs.raw_path.to_owned()
    } else {
        format!("{}?{}", attrs.raw_path, attrs.query)
    };
    // Sorted, so that a saved file reads (and diffs) the same every time.
    let headers: std::collections::BTreeMap<&String, &String> = attrs.headers.iter().collect();
    let mut http = Map::new();
    http.insert("id".into(), attrs.stream_id.into());
    http.insert("method".into(), attrs.method.into());
    http.insert("path".into(), path.into());
    http.insert("host".into(), attrs.host.into());
    http.insert("scheme".into(), attrs.scheme.into());
    http.insert("protocol".into(), attrs.protocol.into());
    http.insert("size".into(), attrs.size.into());
    http.insert("headers".into(), json!(headers));
    let mut request = Map::new();
    if let Some(time) = attrs.time {
        request.insert("time".into(), crate::engine::time::rfc3339(time).into());
    }
    request.insert("http".into(), Value::Object(http));
    let context: std::collections::BTreeMap<&String, &String> = attrs.context.iter().collect();
    json!({"attributes": {
        "source": {
            "address": socket(attrs.source_address, attrs.source_port),
            "certificate": attrs.source_certificate,
        },
        "destination": {
            "address": socket(attrs.destination_address, attrs.destination_port),
            "principal": attrs.destination_principal,
        },
        "request": request,
        "contextExtensions": context,
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> CheckRequest {
        let json: Value = serde_json::from_str(
            r#"{"attributes": {
                "source": {"address": {"socketAddress": {"address": "10.1.2.3", "portValue": 5555}},
                           "certificate": "-----BEGIN%20CERTIFICATE-----%0A"},
                "destination": {"address": {"socketAddress": {"address": "10.9.9.9", "portValue": 8443}},
                                "principal": "spiffe://example.org/ns/a/sa/b"},
                "request": {"time": "2030-11-22T10:00:00Z",
                            "http": {"id": "r1", "method": "POST", "path": "/export/a?day=1&token=s3cr3t",
                                     "host": "api", "scheme": "https", "protocol": "HTTP/2",
                                     "size": "42", "headers": {"user-agent": "curl",
                                     "authorization": "Bearer abc.def.ghi", "x-request-id": "app-1"}}},
                "contextExtensions": {"route": "export"}}}"#,
        )
        .unwrap();
        crate::authoring::json::check_request(&json).unwrap()
    }

    #[test]
    fn a_written_check_reads_back_as_the_same_attributes() {
        let original = request();
        let written = to_json(&original, None).unwrap();
        let read = crate::authoring::json::check_request(&written).unwrap();
        let mut before = crate::edge::request::attributes(&original).unwrap();
        let mut after = crate::edge::request::attributes(&read).unwrap();
        assert_eq!(before.headers, after.headers);
        // The rest, field by field (the headers' map has no order).
        before.headers = Default::default();
        after.headers = Default::default();
        assert_eq!(format!("{before:?}"), format!("{after:?}"));
        let after = crate::edge::request::attributes(&read).unwrap();
        assert_eq!(after.header("authorization"), Some("Bearer abc.def.ghi"));
    }

    /// The capture file shows the path, the query and the headers as audit
    /// records do: a credential path parameter, a secret-shaped bare query
    /// item and a URL inside a header's value are redacted.
    #[test]
    fn path_parameters_bare_query_items_and_urls_inside_headers_are_redacted() {
        let mut check = request();
        let http = check
            .attributes
            .as_mut()
            .and_then(|a| a.request.as_mut())
            .and_then(|r| r.http.as_mut())
            .unwrap();
        http.path = "/app;jsessionid=0123456789ABCDEF0123456789ABCDEF/x?0123456789abcdef0123456789abcdef&debug".to_owned();
        http.headers.insert(
            "link".to_owned(),
            "<https://api.example.org/items?page=2&token=s3cr3t>; rel=\"next\"".to_owned(),
        );
        let written = to_json(
            &check,
            Some(&Redaction::new(Vec::new(), ["page".to_owned()])),
        )
        .unwrap();
        let text = written.to_string();
        assert!(
            !text.contains("s3cr3t") && !text.contains("0123456789"),
            "{text}"
        );
        let http = &written["attributes"]["request"]["http"];
        assert_eq!(
            http["path"],
            "/app;jsessionid=%3Credacted%3E/x?%3Credacted%3E&debug"
        );
        assert_eq!(
            http["headers"]["link"],
            "<https://api.example.org/items?page=2&token=%3Credacted%3E>; rel=\"next\""
        );
    }

    #[test]
    fn credentials_are_redacted_unless_asked_for() {
        let written = to_json(&request(), Some(&Redaction::default())).unwrap();
        let text = written.to_string();
        assert!(
            !text.contains("abc.def.ghi") && !text.contains("s3cr3t"),
            "{text}"
        );
        let http = &written["attributes"]["request"]["http"];
        assert_eq!(http["headers"]["authorization"], "<redacted>");
        assert_eq!(http["headers"]["user-agent"], "curl");
        assert_eq!(
            http["path"],
            "/export/a?day=%3Credacted%3E&token=%3Credacted%3E"
        );
        let shown = Redaction::new(Vec::new(), vec!["day".to_owned()]);
        let written = to_json(&request(), Some(&shown)).unwrap();
        assert_eq!(
            written["attributes"]["request"]["http"]["path"],
            "/export/a?day=1&token=%3Credacted%3E"
        );
    }
}
