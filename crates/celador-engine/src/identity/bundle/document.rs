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
use rustls_pki_types::CertificateDer;
use serde_json::Value;

use super::jwk::{self, JwkError, JwtKey};
use super::{AnchorError, Authority, anchor_from_der};

/// What a document holds.
#[derive(Debug, Default)]
pub struct Document {
    /// The X.509 authorities.
    pub x509: Vec<Authority>,
    /// The JWT-SVID keys by `kid`.
    pub jwt: HashMap<String, JwtKey>,
    /// `spiffe_sequence`.
    pub sequence: Option<u64>,
    /// `spiffe_refresh_hint`.
    pub refresh_hint: Option<Duration>,
    /// Keys that were skipped, and why.
    pub skipped: Vec<String>,
}

/// Why a SPIFFE bundle document is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// Not JSON at all.
    #[error("not valid JSON: {0}")]
    NotJson(String),
    /// JSON, but not an object.
    #[error("a SPIFFE bundle is a JSON object with a \"keys\" array")]
    NotAnObject,
    /// `keys` is not an array.
    #[error("\"keys\" must be an array")]
    KeysNotAnArray,
    /// No `keys`.
    #[error("the required \"keys\" array is missing")]
    NoKeys,
    /// A bad `spiffe_sequence`.
    #[error("\"spiffe_sequence\" must be a non-negative integer")]
    Sequence,
    /// A bad `spiffe_refresh_hint`.
    #[error("\"spiffe_refresh_hint\" must be a whole number of seconds")]
    RefreshHint,
    /// A key that is not an object.
    #[error("keys[{index}] is not a JSON object")]
    KeyNotAnObject {
        /// Its position.
        index: usize,
    },
    /// An `x509-svid` key that breaks its rules.
    #[error("keys[{index}] (x509-svid): {source}")]
    X509Authority {
        /// Its position.
        index: usize,
        /// What is wrong.
        source: AuthorityError,
    },
    /// A `jwt-svid` key that breaks its rules.
    #[error("keys[{index}] (jwt-svid): {source}")]
    JwtKey {
        /// Its position.
        index: usize,
        /// What is wrong.
        source: JwkError,
    },
    /// Two `jwt-svid` keys with one `kid`.
    #[error("keys[{index}] (jwt-svid): the kid '{kid}' appears twice; a key ID must name one key")]
    DuplicateKid {
        /// The second one's position.
        index: usize,
        /// The key ID.
        kid: String,
    },
    /// Nothing usable.
    #[error("the bundle has no usable key{}", skipped_note(.skipped))]
    NoUsableKey {
        /// What was skipped, and why.
        skipped: Vec<String>,
    },
}

fn skipped_note(skipped: &[String]) -> String {
    if skipped.is_empty() {
        String::new()
    } else {
        format!(" (skipped: {})", skipped.join("; "))
    }
}

/// Why an `x509-svid` key is not a usable authority.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    /// `x5c` is not an array.
    #[error("\"x5c\" must be an array")]
    NotAnArray,
    /// No `x5c`.
    #[error("\"x5c\" is required, with the authority's certificate")]
    Missing,
    /// Not exactly one certificate.
    #[error("\"x5c\" must hold exactly one certificate, it holds {0}")]
    Count(usize),
    /// Not base64.
    #[error("\"x5c\" is not base64: {0}")]
    NotBase64(String),
    /// The certificate is not a usable trust anchor.
    #[error(transparent)]
    Anchor(#[from] AnchorError),
}

/// Parses a SPIFFE bundle document; the error says what is wrong.
pub fn parse(bytes: &[u8]) -> Result<Document, DocumentError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| DocumentError::NotJson(e.to_string()))?;
    let Value::Object(top) = value else {
        return Err(DocumentError::NotAnObject);
    };
    let keys = match top.get("keys") {
        Some(Value::Array(keys)) => keys,
        Some(_) => return Err(DocumentError::KeysNotAnArray),
        None => return Err(DocumentError::NoKeys),
    };
    let mut doc = Document {
        sequence: match top.get("spiffe_sequence") {
            None => None,
            Some(v) => Some(v.as_u64().ok_or(DocumentError::Sequence)?),
        },
        refresh_hint: match top.get("spiffe_refresh_hint") {
            None => None,
            Some(v) => Some(Duration::from_secs(
                v.as_u64().ok_or(DocumentError::RefreshHint)?,
            )),
        },
        ..Document::default()
    };
    for (index, key) in keys.iter().enumerate() {
        let Value::Object(key) = key else {
            return Err(DocumentError::KeyNotAnObject { index });
        };
        doc.add_key(index, key)?;
    }
    if doc.x509.is_empty() && doc.jwt.is_empty() {
        return Err(DocumentError::NoUsableKey {
            skipped: doc.skipped,
        });
    }
    Ok(doc)
}

impl Document {
    /// Adds the key at `index`, or notes why it was skipped.
    fn add_key(
        &mut self,
        index: usize,
        key: &serde_json::Map<String, Value>,
    ) -> Result<(), DocumentError> {
        let i = index;
        match key.get("use").and_then(Value::as_str) {
            Some("x509-svid") => match key.get("kty").and_then(Value::as_str) {
                // The certificate carries the key; kty only says it is one
                // celador knows.
                Some("EC" | "RSA" | "OKP") => {
                    let anchor = x509_authority(key)
                        .map_err(|source| DocumentError::X509Authority { index, source })?;
                    self.x509.push(anchor);
                }
                Some(kty) => self
                    .skipped
                    .push(format!("keys[{i}]: unknown key type {kty:?}")),
                None => self.skipped.push(format!("keys[{i}]: no \"kty\"")),
            },
            Some("jwt-svid") => {
                match jwk::parse(key).map_err(|source| DocumentError::JwtKey { index, source })? {
                    jwk::Parsed::Key(k) => {
                        if self.jwt.contains_key(&k.kid) {
                            return Err(DocumentError::DuplicateKid { index, kid: k.kid });
                        }
                        self.jwt.insert(k.kid.clone(), k);
                    }
                    jwk::Parsed::UnknownType(kty) => {
                        self.skipped
                            .push(format!("keys[{i}]: unknown key type {kty:?}"));
                    }
                }
            }
            Some(other) => self
                .skipped
                .push(format!("keys[{i}]: unknown use {other:?}")),
            None => self.skipped.push(format!("keys[{i}]: no \"use\"")),
        }
        Ok(())
    }
}

fn x509_authority(key: &serde_json::Map<String, Value>) -> Result<Authority, AuthorityError> {
    let chain = match key.get("x5c") {
        Some(Value::Array(chain)) => chain,
        Some(_) => return Err(AuthorityError::NotAnArray),
        None => return Err(AuthorityError::Missing),
    };
    let [Value::String(cert)] = chain.as_slice() else {
        return Err(AuthorityError::Count(chain.len()));
    };
    let der = STANDARD
        .decode(cert)
        .map_err(|e| AuthorityError::NotBase64(e.to_string()))?;
    Ok(anchor_from_der(&CertificateDer::from(der))?)
}

#[cfg(test)]
mod tests;
