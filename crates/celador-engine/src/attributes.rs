//! The request as the engine sees it: a typed view, free of protobuf.
//!
//! Data flow: the ext_authz edge (`edge::request` in the celador crate) fills
//! [`Attributes`] from Envoy's `CheckRequest`, borrowing its strings;
//! everything downstream (identity, rules, the answer, the audit record)
//! reads only this view. [`Request`] builds the same view without protobuf,
//! for `celador test`, the engine's own tests and the fuzz targets.

mod request;

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::SystemTime;

pub use request::Request;

/// What celador reads of one `CheckRequest`.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    /// `source.certificate`: the URL-encoded PEM of the peer's leaf.
    pub source_certificate: &'a str,
    /// The peer's IP address, empty if it is not a socket address.
    pub source_address: &'a str,
    /// The peer's port, 0 if unknown.
    pub source_port: u32,
    /// `destination.principal`.
    pub destination_principal: &'a str,
    /// The local IP address.
    pub destination_address: &'a str,
    /// The local port.
    pub destination_port: u32,
    /// `request.http.id`: Envoy's id for the stream, which joins nothing
    /// outside Envoy (`request.id`, the request's own id, is
    /// [`Attributes::request_id`]).
    pub stream_id: &'a str,
    /// `request.http.method`.
    pub method: &'a str,
    /// `request.path`: the canonical path (see [`super::request_path`]), or
    /// the raw one with `request.paths: raw`.
    pub path: Cow<'a, str>,
    /// `request.raw_path`: `request.http.path` without query or fragment,
    /// as Envoy sent it.
    pub raw_path: &'a str,
    /// Why the path is ambiguous, when it is and `request.paths` refuses
    /// ambiguous paths: the engine then denies it (`invalid_path`).
    pub path_ambiguity: Option<super::request_path::Ambiguity>,
    /// The raw query string (after `?`, before `#`), not decoded.
    pub query: &'a str,
    /// `request.http.host`.
    pub host: &'a str,
    /// `request.http.scheme`.
    pub scheme: &'a str,
    /// `request.http.protocol`.
    pub protocol: &'a str,
    /// Headers by lowercase name.
    pub headers: Cow<'a, HashMap<String, String>>,
    /// `request.http.size`: -1 when unknown.
    pub size: i64,
    /// `request.time`, if Envoy set it.
    pub time: Option<SystemTime>,
    /// `context_extensions`.
    pub context: &'a HashMap<String, String>,
}

impl Attributes<'_> {
    /// `request.id`: the `x-request-id` header (which Envoy sets, or keeps
    /// when trusted), the id the application's and Envoy's own logs carry;
    /// empty when the request has none.
    pub fn request_id(&self) -> &str {
        self.header("x-request-id").unwrap_or("")
    }

    /// The header `name` (lowercase), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// These attributes with paths read as `mode` says: the attributes are
    /// built canonical and refusing ambiguity (the default); `canonical`
    /// refuses nothing, `raw` gives rules the raw path.
    pub fn with_paths(mut self, mode: super::request_path::PathMode) -> Self {
        use super::request_path::PathMode;
        match mode {
            PathMode::RejectAmbiguous => {}
            PathMode::Canonical => self.path_ambiguity = None,
            PathMode::Raw => {
                self.path = Cow::Borrowed(self.raw_path);
                self.path_ambiguity = None;
            }
        }
        self
    }
}
