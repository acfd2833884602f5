//! [`Request`]: the request owned, to build [`Attributes`] from without
//! protobuf.
//!
//! Data flow: `celador test`, the engine's own tests and the fuzz targets
//! build a [`Request`] and lend its [`Attributes`] to the engine, as the
//! edge lends the attributes of Envoy's `CheckRequest`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::SystemTime;

use super::Attributes;
use crate::request_path;

/// A request owned, to build [`Attributes`] from without protobuf: the
/// fields Envoy's `CheckRequest` carries, as plain values. The edge reads
/// a `CheckRequest` into the same [`Attributes`], path for path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// `source.certificate`: the URL-encoded PEM of the peer's leaf.
    pub source_certificate: String,
    /// The peer's IP address.
    pub source_address: String,
    /// The peer's port.
    pub source_port: u32,
    /// `destination.principal`.
    pub destination_principal: String,
    /// The local IP address.
    pub destination_address: String,
    /// The local port.
    pub destination_port: u32,
    /// `request.http.id`: Envoy's stream id (`request.id` is the
    /// `x-request-id` header).
    pub id: String,
    /// `request.http.method`.
    pub method: String,
    /// `request.http.path`: the path as Envoy sends it, with the query.
    pub path: String,
    /// `request.http.host`.
    pub host: String,
    /// `request.http.scheme`.
    pub scheme: String,
    /// `request.http.protocol`.
    pub protocol: String,
    /// Headers by lowercase name (repeated headers joined with `,`).
    pub headers: HashMap<String, String>,
    /// `request.http.size`.
    pub size: i64,
    /// `request.time`.
    pub time: Option<SystemTime>,
    /// `context_extensions`.
    pub context: HashMap<String, String>,
}

impl Request {
    /// A request for `method path` (the path with its query, if any).
    pub fn new(method: &str, path: &str) -> Self {
        Request {
            method: method.to_owned(),
            path: path.to_owned(),
            ..Request::default()
        }
    }

    /// This request with the header `name` (lowercased) set to `value`.
    #[cfg(test)]
    pub(crate) fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .insert(name.to_ascii_lowercase(), value.to_owned());
        self
    }

    /// This request with the context extension `key` set to `value`.
    #[cfg(test)]
    pub(crate) fn with_context(mut self, key: &str, value: &str) -> Self {
        self.context.insert(key.to_owned(), value.to_owned());
        self
    }

    /// The attributes of this request, borrowing it: `path` is the
    /// canonical path and an ambiguous one is refused, as the edge reads a
    /// `CheckRequest` (see [`Attributes::with_paths`] for the other modes).
    pub fn attributes(&self) -> Attributes<'_> {
        let (raw_path, query) = request_path::split_query(&self.path);
        let canonical = request_path::canonicalize(raw_path);
        Attributes {
            source_certificate: &self.source_certificate,
            source_address: &self.source_address,
            source_port: self.source_port,
            destination_principal: &self.destination_principal,
            destination_address: &self.destination_address,
            destination_port: self.destination_port,
            stream_id: &self.id,
            method: &self.method,
            path: canonical.path,
            raw_path,
            path_ambiguity: canonical.ambiguity,
            query,
            host: &self.host,
            scheme: &self.scheme,
            protocol: &self.protocol,
            headers: Cow::Borrowed(&self.headers),
            size: self.size,
            time: self.time,
            context: &self.context,
        }
    }
}
