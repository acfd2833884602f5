//! Security Event Tokens (RFC 8417) as SSF 1.0 profiles them, verified
//! against the configured transmitters, or refused with the RFC 8935 error
//! code a push transmitter is answered with.
//!
//! Data flow: the receiver hands the body of a delivery here; a
//! [`VerifiedSet`] goes on to [`super::event`]. A SET must be a compact JWS
//! (`typ` `secevent+jwt`) signed by a key of its issuer's JWKS, with `iss`
//! naming a configured transmitter, `aud` one of that transmitter's
//! audiences, `iat` inside the accepted window, a `jti`, an `events` object,
//! and neither `sub` nor `exp` (SSF 1.0 §4.1). Replays are the receiver's
//! to catch: it keeps the `jti`s it has seen for as long as this window.
//!
//! Hand-written rather than a JWT crate's validation: signatures are checked
//! with the engine's JWK keys and `ring`, as JWT-SVIDs are, and each failure
//! needs its own RFC 8935 code, which generic validators fold together.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::engine::identity::bundle::jwk::{self, JwsAlg, JwtKey};
use crate::engine::time;

/// The largest SET accepted, in bytes (a SET is usually under 2 KiB).
pub const MAX_SET_BYTES: usize = 64 * 1024;

/// The longest `jti` accepted, in bytes.
pub const MAX_JTI_BYTES: usize = 256;

/// The Security Event Token error codes of RFC 8935 §2.4 (the IANA
/// registry), which a push receiver answers a refused SET with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The body is not a SET, or an event does not follow its definition.
    InvalidRequest,
    /// The key that signed the SET is unknown or unacceptable, or the
    /// signature does not verify with it.
    InvalidKey,
    /// The SET's issuer is not a configured transmitter.
    InvalidIssuer,
    /// The SET's audience is not this receiver.
    InvalidAudience,
    /// The transmitter could not be authenticated (its push authorization).
    AuthenticationFailed,
    /// The transmitter may not send this SET here.
    AccessDenied,
}

impl ErrorCode {
    /// Its name in the registry, the `err` member of the error JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidKey => "invalid_key",
            ErrorCode::InvalidIssuer => "invalid_issuer",
            ErrorCode::InvalidAudience => "invalid_audience",
            ErrorCode::AuthenticationFailed => "authentication_failed",
            ErrorCode::AccessDenied => "access_denied",
        }
    }

    /// Every code, for metrics that list each.
    pub const ALL: [ErrorCode; 6] = [
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidKey,
        ErrorCode::InvalidIssuer,
        ErrorCode::InvalidAudience,
        ErrorCode::AuthenticationFailed,
        ErrorCode::AccessDenied,
    ];
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused SET: the RFC 8935 code and a description for the transmitter
/// (never the token or a key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {description}")]
pub struct SetError {
    /// The RFC 8935 error code.
    pub code: ErrorCode,
    /// What was wrong, for the transmitter's operators.
    pub description: String,
    /// The issuer whose JWKS has no key of the SET's `kid`: a transmitter
    /// whose keys come from a URL may have rotated them
    /// ([`super::jwks::KeyRefresh`]).
    pub unknown_kid_of: Option<String>,
}

impl SetError {
    /// A refusal with `code`.
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        SetError {
            code,
            description: description.into(),
            unknown_kid_of: None,
        }
    }
}

fn invalid(description: impl Into<String>) -> SetError {
    SetError::new(ErrorCode::InvalidRequest, description)
}

/// A transmitter celador accepts SETs from: its issuer, the audiences a SET
/// must name one of, and the keys of its JWKS.
#[derive(Debug, Clone)]
pub struct Transmitter {
    /// Its issuer, exactly as its SETs' `iss`.
    pub issuer: String,
    /// The audiences its SETs must name one of (at least one).
    pub audiences: Vec<String>,
    /// The SPIFFE IDs its events may act on (IDs or prefixes, no trailing
    /// `/`); empty: any.
    pub scope: Vec<String>,
    /// Its keys, shared with the [`super::jwks::KeyRefresh`] that replaces
    /// them when they come from a URL.
    keys: Arc<ArcSwap<KeySet>>,
}

/// The keys of one JWKS document by `kid`, and the SHA-256 of its `keys`
/// array (which tells a new document from the same one fetched again).
struct KeySet {
    keys: HashMap<String, JwtKey>,
    digest: [u8; 32],
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.keys.keys()).finish()
    }
}

/// Why a transmitter's configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TransmitterError {
    /// The JWKS is not a JSON object with a `keys` array.
    #[error("the JWKS of {issuer} is not a JSON object with a `keys` array")]
    NotAJwks {
        /// The transmitter.
        issuer: String,
    },
    /// A key of the JWKS does not parse.
    #[error("key {index} of the JWKS of {issuer}: {source}")]
    Key {
        /// The transmitter.
        issuer: String,
        /// Which key (from 1).
        index: usize,
        /// Why.
        source: jwk::JwkError,
    },
    /// Two keys share a `kid`.
    #[error("the JWKS of {issuer} has two keys with kid {kid:?}")]
    DuplicateKid {
        /// The transmitter.
        issuer: String,
        /// The `kid`.
        kid: String,
    },
    /// No usable key.
    #[error("the JWKS of {issuer} has no RSA or EC key to verify SETs with")]
    NoKeys {
        /// The transmitter.
        issuer: String,
    },
    /// No audience configured.
    #[error(
        "transmitter {issuer} names no audience: give the `aud` its SETs carry for this receiver"
    )]
    NoAudience {
        /// The transmitter.
        issuer: String,
    },
}

impl Transmitter {
    /// A transmitter with the keys of the JWKS document `jwks` (RFC 7517
    /// §5: `{"keys": [...]}`); keys of other types are skipped.
    pub fn new(
        issuer: &str,
        audiences: Vec<String>,
        jwks: &[u8],
    ) -> Result<Transmitter, TransmitterError> {
        let issuer = issuer.to_owned();
        if audiences.is_empty() {
            return Err(TransmitterError::NoAudience { issuer });
        }
        let keys = parse_jwks(&issuer, jwks)?;
        Ok(Transmitter {
            issuer,
            audiences,
            scope: Vec::new(),
            keys: Arc::new(ArcSwap::from_pointee(keys)),
        })
    }

    /// Replaces its keys with those of the JWKS document `jwks` if it is
    /// one with a usable key; else its keys stay and the error says why.
    /// Returns whether the keys changed.
    pub fn replace_keys(&self, jwks: &[u8]) -> Result<bool, TransmitterError> {
        let keys = parse_jwks(&self.issuer, jwks)?;
        let changed = self.keys.load().digest != keys.digest;
        if changed {
            self.keys.store(Arc::new(keys));
        }
        Ok(changed)
    }

    /// This transmitter, allowed to act only on the SPIFFE IDs under
    /// `scope` (each a SPIFFE ID or a prefix of one).
    pub fn scoped(mut self, scope: Vec<String>) -> Transmitter {
        self.scope = scope
            .into_iter()
            .map(|p| p.trim_end_matches('/').to_owned())
            .collect();
        self
    }

    /// Whether `id` (a SPIFFE ID, or a prefix of some) is in its scope.
    pub fn covers(&self, id: &str) -> bool {
        self.scope.is_empty()
            || self.scope.iter().any(|p| {
                id == p
                    || id
                        .strip_prefix(p.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            })
    }

    /// How many keys it has.
    pub fn key_count(&self) -> usize {
        self.keys.load().keys.len()
    }
}

/// The keys of the JWKS document `jwks` (RFC 7517 §5: `{"keys": [...]}`)
/// by `kid`; keys of other types are skipped, and a document without a
/// usable key is refused.
fn parse_jwks(issuer: &str, jwks: &[u8]) -> Result<KeySet, TransmitterError> {
    let issuer = issuer.to_owned();
    let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(jwks) else {
        return Err(TransmitterError::NotAJwks { issuer });
    };
    let Some(Value::Array(list)) = doc.get("keys") else {
        return Err(TransmitterError::NotAJwks { issuer });
    };
    let mut keys = HashMap::new();
    for (i, key) in list.iter().enumerate() {
        let Value::Object(key) = key else {
            return Err(TransmitterError::NotAJwks { issuer });
        };
        let parsed = jwk::parse(key).map_err(|source| TransmitterError::Key {
            issuer: issuer.clone(),
            index: i + 1,
            source,
        })?;
        if let jwk::Parsed::Key(key) = parsed
            && let Some(old) = keys.insert(key.kid.clone(), key)
        {
            return Err(TransmitterError::DuplicateKid {
                issuer,
                kid: old.kid,
            });
        }
    }
    if keys.is_empty() {
        return Err(TransmitterError::NoKeys { issuer });
    }
    let digest = Sha256::digest(serde_json::to_vec(list).unwrap_or_default()).into();
    Ok(KeySet { keys, digest })
}

/// One event of a SET: its type URI and its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event type, e.g.
    /// `https://schemas.openid.net/secevent/risc/event-type/credential-compromise`.
    pub kind: String,
    /// Its members.
    pub payload: Map<String, Value>,
}

/// A SET that verified: who sent it, when, about whom, and its events.
#[derive(Debug, Clone)]
pub struct VerifiedSet {
    /// The transmitter (`iss`).
    pub issuer: String,
    /// Its `jti`.
    pub jti: String,
    /// Its `iat`.
    pub issued_at: SystemTime,
    /// Its `txn`, if any (a string or number on the wire).
    pub txn: Option<String>,
    /// The top-level `sub_id` (RFC 9493), if any.
    pub subject: Option<Value>,
    /// Its events (SSF: usually one).
    pub events: Vec<Event>,
    /// The SHA-256 of the token, which tells a retransmission (the same
    /// bytes) from a replayed `jti` with other content.
    pub digest: [u8; 32],
}

/// Verifies SETs against the configured transmitters.
#[derive(Debug, Clone)]
pub struct Verifier {
    transmitters: HashMap<String, Transmitter>,
    max_age: Duration,
    max_future: Duration,
}

impl Verifier {
    /// A verifier for `transmitters`, accepting an `iat` at most `max_age`
    /// old and at most `max_future` ahead of the clock.
    pub fn new(transmitters: Vec<Transmitter>, max_age: Duration, max_future: Duration) -> Self {
        Verifier {
            transmitters: transmitters
                .into_iter()
                .map(|t| (t.issuer.clone(), t))
                .collect(),
            max_age,
            max_future,
        }
    }

    /// The oldest `iat` it accepts, as a duration before now: how long the
    /// receiver must remember a `jti`.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// How many transmitters it accepts.
    pub fn transmitter_count(&self) -> usize {
        self.transmitters.len()
    }

    /// How far ahead of the clock an `iat` may be.
    pub fn max_future(&self) -> Duration {
        self.max_future
    }

    /// The transmitter with issuer `issuer`.
    pub fn transmitter(&self, issuer: &str) -> Option<&Transmitter> {
        self.transmitters.get(issuer)
    }

    /// Verifies the SET `body` at `now`.
    pub fn verify(&self, body: &[u8], now: SystemTime) -> Result<VerifiedSet, SetError> {
        if body.len() > MAX_SET_BYTES {
            return Err(invalid(format!(
                "the SET is {} bytes; at most {MAX_SET_BYTES} are accepted",
                body.len()
            )));
        }
        let token = std::str::from_utf8(body)
            .map_err(|_| invalid("the body is not UTF-8 text: a SET is a compact JWS"))?
            .trim_ascii();
        let jws = split(token)?;
        let header = Header::parse(jws.header)?;
        let claims = decode_object(jws.payload, "payload")?;
        let issuer = match claims.get("iss") {
            Some(Value::String(iss)) if !iss.is_empty() => iss,
            _ => return Err(invalid("the SET has no iss claim")),
        };
        let transmitter = self.transmitters.get(issuer).ok_or_else(|| {
            SetError::new(
                ErrorCode::InvalidIssuer,
                format!("issuer {issuer:?} is not a transmitter this receiver accepts"),
            )
        })?;
        verify_signature(transmitter, &header, &jws)?;
        let issued_at = self.check_claims(transmitter, &claims, now)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        into_verified(transmitter, claims, issued_at, digest)
    }

    /// `sub` and `exp` absent, `iat` in the window, `aud` this receiver's.
    fn check_claims(
        &self,
        transmitter: &Transmitter,
        claims: &Map<String, Value>,
        now: SystemTime,
    ) -> Result<SystemTime, SetError> {
        // SSF 1.0 §4.1.2, §4.1.7: what tells a SET from other JWTs.
        if claims.contains_key("sub") {
            return Err(invalid(
                "the SET has a sub claim, which SSF forbids in a SET (the subject goes in sub_id)",
            ));
        }
        if claims.contains_key("exp") {
            return Err(invalid(
                "the SET has an exp claim, which SSF forbids in a SET",
            ));
        }
        let issued_at = match claims.get("iat").and_then(Value::as_f64) {
            Some(seconds) if seconds.is_finite() && seconds >= 0.0 => {
                time::from_numeric_date(seconds)
                    .ok_or_else(|| invalid("iat lies beyond the year 9999"))?
            }
            _ => return Err(invalid("the SET has no iat claim (a number of seconds)")),
        };
        if issued_at < time::saturating_sub(now, self.max_age) {
            return Err(invalid(format!(
                "the SET was issued at {}, more than {}s ago (the receiver's max_age)",
                time::rfc3339(issued_at),
                self.max_age.as_secs()
            )));
        }
        if issued_at > time::saturating_add(now, self.max_future) {
            return Err(invalid(format!(
                "the SET was issued at {}, in the future (more than {}s ahead of the receiver's clock)",
                time::rfc3339(issued_at),
                self.max_future.as_secs()
            )));
        }
        let audience: Vec<&str> = match claims.get("aud") {
            Some(Value::String(aud)) => vec![aud.as_str()],
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !audience
            .iter()
            .any(|a| transmitter.audiences.iter().any(|ours| ours == a))
        {
            return Err(SetError::new(
                ErrorCode::InvalidAudience,
                format!(
                    "the SET's audience {audience:?} names none of this receiver's {:?}",
                    transmitter.audiences
                ),
            ));
        }
        Ok(issued_at)
    }
}

/// The remaining claims: `jti`, `txn`, `sub_id` and `events`.
fn into_verified(
    transmitter: &Transmitter,
    mut claims: Map<String, Value>,
    issued_at: SystemTime,
    digest: [u8; 32],
) -> Result<VerifiedSet, SetError> {
    let jti = match claims.remove("jti") {
        Some(Value::String(jti)) if !jti.is_empty() && jti.len() <= MAX_JTI_BYTES => jti,
        Some(Value::String(jti)) if !jti.is_empty() => {
            return Err(invalid(format!(
                "the jti is {} bytes; at most {MAX_JTI_BYTES}",
                jti.len()
            )));
        }
        _ => return Err(invalid("the SET has no jti claim (a non-empty string)")),
    };
    let txn = match claims.remove("txn") {
        None => None,
        Some(Value::String(txn)) => Some(txn),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => return Err(invalid("txn must be a string")),
    };
    let subject = match claims.remove("sub_id") {
        None => None,
        Some(subject @ Value::Object(_)) => Some(subject),
        Some(_) => return Err(invalid("sub_id must be a subject identifier (an object)")),
    };
    let Some(Value::Object(events)) = claims.remove("events") else {
        return Err(invalid("the SET has no events claim (an object)"));
    };
    if events.is_empty() {
        return Err(invalid("the SET's events claim is empty"));
    }
    let events = events
        .into_iter()
        .map(|(kind, payload)| match payload {
            Value::Object(payload) => Ok(Event { kind, payload }),
            _ => Err(invalid(format!("event {kind} is not an object"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(VerifiedSet {
        issuer: transmitter.issuer.clone(),
        jti,
        issued_at,
        txn,
        subject,
        events,
        digest,
    })
}

/// A compact JWS, split into its three base64url parts.
struct Jws<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
    /// `header.payload`, what the signature covers.
    signed: &'a str,
}

fn split(token: &str) -> Result<Jws<'_>, SetError> {
    let parts: Vec<&str> = token.split('.').collect();
    let (header, payload, signature) = match parts.as_slice() {
        [header, payload, signature] => (*header, *payload, *signature),
        [_, _, _, _, _] => {
            return Err(invalid(
                "the SET is encrypted (a JWE); this receiver accepts signed SETs only",
            ));
        }
        _ => {
            return Err(invalid(
                "the body is not a SET: a compact JWS is three base64url parts separated by '.'",
            ));
        }
    };
    if header.is_empty() || payload.is_empty() {
        return Err(invalid("a part of the compact JWS is empty"));
    }
    let signed = token
        .get(..header.len() + 1 + payload.len())
        .unwrap_or_default();
    Ok(Jws {
        header,
        payload,
        signature,
        signed,
    })
}

/// The JOSE header of a SET.
struct Header {
    alg: JwsAlg,
    kid: Option<String>,
}

impl Header {
    fn parse(part: &str) -> Result<Header, SetError> {
        let header = decode_object(part, "header")?;
        if header.contains_key("crit") {
            return Err(invalid(
                "the header has crit: this receiver understands no JWS extension",
            ));
        }
        let alg = match header.get("alg") {
            Some(Value::String(name)) if name == "none" => {
                return Err(invalid("the SET is unsigned (alg none)"));
            }
            Some(Value::String(name)) if name.starts_with("HS") => {
                return Err(SetError::new(
                    ErrorCode::InvalidKey,
                    format!(
                        "alg {name}: a shared-secret signature is not accepted; sign with RS256 or ES256"
                    ),
                ));
            }
            Some(Value::String(name)) => JwsAlg::parse(name).ok_or_else(|| {
                SetError::new(
                    ErrorCode::InvalidKey,
                    format!("alg {name:?} is not accepted (RS, PS or ES 256/384/512)"),
                )
            })?,
            _ => return Err(invalid("the header has no alg")),
        };
        // RFC 8417 §2.3 and SSF 1.0 §4.1.1: explicit typing; RFC 7515
        // §4.1.9 makes the `application/` prefix optional and the value
        // case-insensitive.
        let typ = header.get("typ").and_then(Value::as_str).unwrap_or("");
        let bare = typ
            .get(..12)
            .filter(|p| p.eq_ignore_ascii_case("application/"))
            .map_or(typ, |_| typ.get(12..).unwrap_or(""));
        if !bare.eq_ignore_ascii_case("secevent+jwt") {
            return Err(invalid(format!(
                "typ is {typ:?}; a SET is typed secevent+jwt (RFC 8417 §2.3, SSF 1.0 §4.1.1)"
            )));
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) if !kid.is_empty() => Some(kid.clone()),
            Some(_) => return Err(invalid("kid must be a non-empty string")),
        };
        Ok(Header { alg, kid })
    }
}

/// The signature, by the key `header.kid` of the transmitter's JWKS (its
/// only key when the header names none).
fn verify_signature(
    transmitter: &Transmitter,
    header: &Header,
    jws: &Jws<'_>,
) -> Result<(), SetError> {
    let issuer = &transmitter.issuer;
    let keys = transmitter.keys.load();
    let key = match &header.kid {
        Some(kid) => keys.keys.get(kid).ok_or_else(|| SetError {
            unknown_kid_of: Some(issuer.clone()),
            ..SetError::new(
                ErrorCode::InvalidKey,
                format!("the JWKS of {issuer} has no key {kid:?}"),
            )
        })?,
        None => match keys.keys.values().collect::<Vec<_>>().as_slice() {
            [only] => *only,
            keys => {
                return Err(SetError::new(
                    ErrorCode::InvalidKey,
                    format!(
                        "the SET names no kid and the JWKS of {issuer} has {} keys",
                        keys.len()
                    ),
                ));
            }
        },
    };
    key.accepts(header.alg)
        .map_err(|e| SetError::new(ErrorCode::InvalidKey, e.to_string()))?;
    if !key.verify(header.alg, jws.signed.as_bytes(), jws.signature) {
        return Err(SetError::new(
            ErrorCode::InvalidKey,
            format!(
                "the signature does not verify with key {:?} of {issuer}",
                key.kid
            ),
        ));
    }
    Ok(())
}

fn decode_object(part: &str, what: &str) -> Result<Map<String, Value>, SetError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| invalid(format!("the SET's {what} is not base64url")))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(invalid(format!("the SET's {what} is not a JSON object"))),
    }
}

#[cfg(test)]
mod tests;
