//! SPIFFE bundle documents: a JWK Set by the SPIFFE Trust Domain and Bundle
//! specification.
//!
//! ```json
//! {"spiffe_sequence": 3, "spiffe_refresh_hint": 300,
//!  "keys": [{"use": "x509-svid", "kty": "EC", "x5c": ["<base64 DER>"], ...},
//!           {"use": "jwt-svid", "kid": "k1", "kty": "EC", "crv": "P-256", "x": "...", "y": "..."}]}
//! ```
//!
//! Data flow: a bundle file whose content is JSON is parsed here into the
//! X.509 authorities and JWT keys of one trust domain. By the spec, keys of
//! an unknown `use` or `kty` are skipped (and reported); a key that claims a
//! known use but breaks its rules (an `x509-svid` key without exactly one
//! `x5c` certificate, a `jwt-svid` key without `kid`, a duplicate `kid`)
//! makes the whole document invalid, so the last good bundle stays in use.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::{CertificateDer, TrustAnchor};
use serde_json::Value;

use super::jwk::{self, JwtKey};

/// What a document holds.
#[derive(Debug, Default)]
pub struct Document {
    /// The X.509 authorities.
    pub x509: Vec<TrustAnchor<'static>>,
    /// The JWT-SVID keys by `kid`.
    pub jwt: HashMap<String, JwtKey>,
    /// `spiffe_sequence`.
    pub sequence: Option<u64>,
    /// `spiffe_refresh_hint`.
    pub refresh_hint: Option<Duration>,
    /// Keys that were skipped, and why.
    pub skipped: Vec<String>,
}

/// Parses a SPIFFE bundle document; the error says what is wrong.
pub fn parse(bytes: &[u8]) -> Result<Document, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(top) = value else {
        return Err("a SPIFFE bundle is a JSON object with a \"keys\" array".into());
    };
    let keys = match top.get("keys") {
        Some(Value::Array(keys)) => keys,
        Some(_) => return Err("\"keys\" must be an array".into()),
        None => return Err("the required \"keys\" array is missing".into()),
    };
    let mut doc = Document {
        sequence: match top.get("spiffe_sequence") {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or("\"spiffe_sequence\" must be a non-negative integer")?,
            ),
        },
        refresh_hint: match top.get("spiffe_refresh_hint") {
            None => None,
            Some(v) => Some(Duration::from_secs(
                v.as_u64()
                    .ok_or("\"spiffe_refresh_hint\" must be a whole number of seconds")?,
            )),
        },
        ..Document::default()
    };
    for (i, key) in keys.iter().enumerate() {
        let Value::Object(key) = key else {
            return Err(format!("keys[{i}] is not a JSON object"));
        };
        match key.get("use").and_then(Value::as_str) {
            Some("x509-svid") => match key.get("kty").and_then(Value::as_str) {
                // The certificate carries the key; kty only says it is one
                // celador knows.
                Some("EC" | "RSA" | "OKP") => {
                    let anchor =
                        x509_authority(key).map_err(|e| format!("keys[{i}] (x509-svid): {e}"))?;
                    doc.x509.push(anchor);
                }
                Some(kty) => doc
                    .skipped
                    .push(format!("keys[{i}]: unknown key type {kty:?}")),
                None => doc.skipped.push(format!("keys[{i}]: no \"kty\"")),
            },
            Some("jwt-svid") => {
                match jwk::parse(key).map_err(|e| format!("keys[{i}] (jwt-svid): {e}"))? {
                    jwk::Parsed::Key(k) => {
                        if doc.jwt.contains_key(&k.kid) {
                            return Err(format!(
                                "keys[{i}] (jwt-svid): the kid '{}' appears twice; a key ID must name one key",
                                k.kid
                            ));
                        }
                        doc.jwt.insert(k.kid.clone(), k);
                    }
                    jwk::Parsed::UnknownType(kty) => {
                        doc.skipped
                            .push(format!("keys[{i}]: unknown key type {kty:?}"));
                    }
                }
            }
            Some(other) => doc
                .skipped
                .push(format!("keys[{i}]: unknown use {other:?}")),
            None => doc.skipped.push(format!("keys[{i}]: no \"use\"")),
        }
    }
    if doc.x509.is_empty() && doc.jwt.is_empty() {
        let mut message = "the bundle has no usable key".to_owned();
        if !doc.skipped.is_empty() {
            message.push_str(&format!(" (skipped: {})", doc.skipped.join("; ")));
        }
        return Err(message);
    }
    Ok(doc)
}

fn x509_authority(key: &serde_json::Map<String, Value>) -> Result<TrustAnchor<'static>, String> {
    let chain = match key.get("x5c") {
        Some(Value::Array(chain)) => chain,
        Some(_) => return Err("\"x5c\" must be an array".into()),
        None => return Err("\"x5c\" is required, with the authority's certificate".into()),
    };
    let [Value::String(cert)] = chain.as_slice() else {
        return Err(format!(
            "\"x5c\" must hold exactly one certificate, it holds {}",
            chain.len()
        ));
    };
    let der = STANDARD
        .decode(cert)
        .map_err(|e| format!("\"x5c\" is not base64: {e}"))?;
    super::anchor_from_der(&CertificateDer::from(der))
}

#[cfg(test)]
mod tests;
