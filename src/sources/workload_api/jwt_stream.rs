//! The Workload API's `FetchJWTBundles` stream, read raw.
//!
//! Data flow: the agent sends, per trust domain, its JWT bundle as the bytes
//! of a JWK Set. The `spiffe` crate's client folds each set into a map by
//! `kid`, silently keeping one of two keys that share a `kid`; celador reads
//! the bytes itself instead, so that a set with a duplicate `kid` is refused
//! (and the last good keys kept), exactly as in a SPIFFE bundle document.

use std::collections::HashMap;

use hyper_util::rt::TokioIo;
use serde_json::Value;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Endpoint, Uri};

use crate::engine::identity::bundle::jwk::{self, JwtKey};

/// `JWTBundlesRequest` of the Workload API (workload.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct JwtBundlesRequest {}

/// `JWTBundlesResponse`: JWK Set bytes by trust domain ID
/// (`spiffe://example.org`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct JwtBundlesResponse {
    /// The bundles.
    #[prost(map = "string, bytes", tag = "1")]
    pub bundles: HashMap<String, Vec<u8>>,
}

/// Opens the stream on `endpoint` (`unix:///path` or `tcp://host:port`).
pub async fn open(endpoint: &str) -> Result<tonic::Streaming<JwtBundlesResponse>, tonic::Status> {
    let channel = connect(endpoint).await?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("the Workload API is not ready: {e}")))?;
    let mut request = tonic::Request::new(JwtBundlesRequest {});
    // The spec: every Workload API request carries this header.
    request.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    let path = PathAndQuery::from_static("/SpiffeWorkloadAPI/FetchJWTBundles");
    let codec = tonic_prost::ProstCodec::default();
    grpc.server_streaming(request, path, codec)
        .await
        .map(tonic::Response::into_inner)
}

async fn connect(endpoint: &str) -> Result<tonic::transport::Channel, tonic::Status> {
    let failed =
        |e: &dyn std::fmt::Display| tonic::Status::unavailable(format!("cannot connect: {e}"));
    if let Some(tcp) = endpoint.strip_prefix("tcp://") {
        let endpoint = Endpoint::from_shared(format!("http://{tcp}")).map_err(|e| failed(&e))?;
        return endpoint.connect().await.map_err(|e| failed(&e));
    }
    let path = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
        .ok_or_else(|| failed(&format!("{endpoint:?} is neither unix:// nor tcp://")))?
        .to_owned();
    // The URI is a placeholder: the connector ignores it and dials the socket.
    Endpoint::from_static("http://workload-api.localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| failed(&e))
}

/// What is wrong with a JWT bundle the agent sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtBundleError {
    /// Not a JWK Set.
    #[error("not a JWK Set (a JSON object with a \"keys\" array)")]
    NotAJwkSet,
    /// Two keys share a `kid`.
    #[error("the kid '{0}' appears twice; a key ID must name one key")]
    DuplicateKid(String),
}

/// The usable keys of a JWK Set. A key that does not parse, or is of an
/// unknown type, is skipped and reported in the second list; a duplicate
/// `kid` refuses the whole set.
pub fn keys(jwks: &[u8]) -> Result<(HashMap<String, JwtKey>, Vec<String>), JwtBundleError> {
    let Ok(Value::Object(set)) = serde_json::from_slice::<Value>(jwks) else {
        return Err(JwtBundleError::NotAJwkSet);
    };
    let Some(Value::Array(list)) = set.get("keys") else {
        return Err(JwtBundleError::NotAJwkSet);
    };
    let mut keys = HashMap::new();
    let mut skipped = Vec::new();
    for (i, key) in list.iter().enumerate() {
        let parsed = match key {
            Value::Object(map) => jwk::parse(map),
            _ => Err(jwk::JwkError::NotAnObject),
        };
        match parsed {
            Ok(jwk::Parsed::Key(key)) => {
                if keys.contains_key(&key.kid) {
                    return Err(JwtBundleError::DuplicateKid(key.kid));
                }
                keys.insert(key.kid.clone(), key);
            }
            Ok(jwk::Parsed::UnknownType(kty)) => {
                skipped.push(format!("keys[{i}]: unknown key type {kty:?}"));
            }
            Err(e) => skipped.push(format!("keys[{i}]: {e}")),
        }
    }
    Ok((keys, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::jwt::{Signer, jwks};

    #[test]
    fn a_duplicate_kid_refuses_the_set_and_bad_keys_are_skipped() {
        let a = Signer::es256("k1");
        let b = Signer::es256("k1");
        let c = Signer::es256("k2");
        let (keys, skipped) = keys(jwks(&[&a, &c]).as_bytes()).unwrap();
        assert_eq!(keys.len(), 2);
        assert!(skipped.is_empty());
        assert_eq!(
            super::keys(jwks(&[&a, &b]).as_bytes()).unwrap_err(),
            JwtBundleError::DuplicateKid("k1".into())
        );
        let odd = br#"{"keys":[{"kty":"OKP","kid":"x"},{"kty":"EC","kid":"y"},7]}"#;
        let (keys, skipped) = super::keys(odd).unwrap();
        assert!(keys.is_empty());
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert_eq!(super::keys(b"[]").unwrap_err(), JwtBundleError::NotAJwkSet);
    }
}
