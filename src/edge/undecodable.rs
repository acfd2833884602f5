//! What can be read of a `CheckRequest` that protobuf decoding refuses, for
//! its audit record.
//!
//! Data flow: when the Check service ([`super::service`]) cannot decode a
//! message (invalid UTF-8 in a string field, a truncated field), it denies
//! it (`invalid_request`); this reads the request id, method, host and path
//! of that message again with every string taken as bytes, so that the
//! denial's audit record says which request it was.

use prost::Message;

/// The longest value kept of each field (as audit records cut header
/// values).
const MAX_FIELD: usize = 1024;

/// What could be read of a request that was not decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Salvaged {
    /// The `x-request-id` header of `attributes.request.http.headers`.
    pub request_id: String,
    /// `attributes.request.http.id`: Envoy's stream id.
    pub stream_id: String,
    /// `attributes.request.http.method`.
    pub method: String,
    /// `attributes.request.http.host`.
    pub host: String,
    /// `attributes.request.http.path`.
    pub path: String,
}

/// Reads what it can of `message`, lossily (invalid UTF-8 becomes U+FFFD,
/// each field is cut at 1 KiB); nothing when the message is not protobuf.
pub fn salvage(message: &[u8]) -> Salvaged {
    let Ok(request) = LossyCheckRequest::decode(message) else {
        return Salvaged::default();
    };
    let Some(http) = request
        .attributes
        .and_then(|a| a.request)
        .and_then(|r| r.http)
    else {
        return Salvaged::default();
    };
    Salvaged {
        request_id: http
            .headers
            .iter()
            .find(|h| h.key.eq_ignore_ascii_case(b"x-request-id"))
            .map(|h| lossy(&h.value))
            .unwrap_or_default(),
        stream_id: lossy(&http.id),
        method: lossy(&http.method),
        host: lossy(&http.host),
        path: lossy(&http.path),
    }
}

fn lossy(bytes: &[u8]) -> String {
    let cut = bytes.get(..MAX_FIELD).unwrap_or(bytes);
    String::from_utf8_lossy(cut).into_owned()
}

// The fields of `envoy.service.auth.v3.CheckRequest` on the way to the
// request line, with `bytes` where the protocol says `string`: prost checks
// UTF-8 only for `string` fields, and skips every field not named here.

#[derive(Clone, PartialEq, Message)]
struct LossyCheckRequest {
    #[prost(message, optional, tag = "1")]
    attributes: Option<LossyAttributes>,
}

#[derive(Clone, PartialEq, Message)]
struct LossyAttributes {
    #[prost(message, optional, tag = "4")]
    request: Option<LossyRequest>,
}

#[derive(Clone, PartialEq, Message)]
struct LossyRequest {
    #[prost(message, optional, tag = "2")]
    http: Option<LossyHttpRequest>,
}

#[derive(Clone, PartialEq, Message)]
struct LossyHttpRequest {
    #[prost(bytes = "vec", tag = "1")]
    id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    method: Vec<u8>,
    // A `map<string, string>` is, on the wire, a repeated entry message.
    #[prost(message, repeated, tag = "3")]
    headers: Vec<LossyHeader>,
    #[prost(bytes = "vec", tag = "4")]
    path: Vec<u8>,
    #[prost(bytes = "vec", tag = "5")]
    host: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct LossyHeader {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::auth::v3::CheckRequest;

    #[test]
    fn the_request_line_of_a_message_with_invalid_utf8_is_read_lossily() {
        let mut request = crate::testing::check::request(
            "",
            "GET",
            "/pay/MARK",
            &[("x", "y"), ("x-request-id", "app-9")],
        );
        if let Some(http) = request
            .attributes
            .as_mut()
            .and_then(|a| a.request.as_mut())
            .and_then(|r| r.http.as_mut())
        {
            http.id = "req-1".into();
        }
        let mut bytes = request.encode_to_vec();
        // Make the path's "MARK" invalid UTF-8: prost refuses the message.
        let at = bytes.windows(4).position(|w| w == b"MARK").unwrap();
        bytes[at] = 0xff;
        assert!(CheckRequest::decode(bytes.as_slice()).is_err());
        let salvaged = salvage(&bytes);
        assert_eq!(salvaged.request_id, "app-9");
        assert_eq!(salvaged.stream_id, "req-1");
        assert_eq!(salvaged.method, "GET");
        assert_eq!(salvaged.path, "/pay/\u{fffd}ARK");
        assert_eq!(salvage(b"\xff\xff\xff"), Salvaged::default());
        assert_eq!(salvage(&[]), Salvaged::default());
    }
}
