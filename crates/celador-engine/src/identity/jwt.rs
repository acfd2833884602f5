//! JWT-SVID verification, by the SPIFFE JWT-SVID specification.
//!
//! Data flow: the token comes from a request header (`authorization: Bearer
//! …` by default); a verified [`JwtSvid`] or an [`IdentityError`] with a
//! specific reason goes out. The token must be a compact JWS whose header
//! has only `alg` (one of RS/ES/PS 256/384/512), `kid` and optionally `typ`;
//! its `sub` must be a canonical SPIFFE ID, and the key is looked up by `kid`
//! in the JWT bundle of *that ID's own* trust domain only. `exp` is
//! required, `nbf` is honoured, both with a clock-skew leeway, and `aud` must
//! contain one of the configured audiences.
//!
//! Why not `spiffe::JwtSvid::parse_and_validate`: it has no leeway and no
//! injectable clock. Signatures are checked with `ring` (several times faster
//! than the RustCrypto backend the spiffe crate uses), and ES512, which ring
//! lacks, with `p521`; a unit test holds our verdicts and the spiffe crate's
//! together.
//!
//! Verified tokens are cached ([`super::verified`]) by the SHA-256 of the
//! token, with the
//! generation of the bundle that verified them, never past their `exp`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use super::bundle::jwk::JwsAlg;
use super::bundle::{DomainBundle, TrustBundles};
use super::verified::{CacheSettings, CacheStats, Credential, VerifiedCache};
use super::{IdentityError, SpiffeId};
use crate::reason::Reason;
use crate::time;

/// Longer tokens are refused before any parsing.
pub(crate) const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A verified JWT-SVID.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtSvid {
    /// The SPIFFE ID of `sub`.
    pub id: SpiffeId,
    /// `aud`, as a list.
    pub audience: Vec<String>,
    /// `exp`.
    pub expiry: SystemTime,
    /// Every claim of the payload.
    pub claims: Map<String, Value>,
}

/// How tokens are judged.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// A token must name at least one of these in `aud`.
    pub audiences: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    /// The verified-token cache.
    pub cache: CacheSettings,
}

/// Verifies JWT-SVIDs and caches the verified ones.
pub struct JwtVerifier {
    audiences: Vec<String>,
    leeway: Duration,
    cache: VerifiedCache<JwtSvid>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("audiences", &self.audiences)
            .field("leeway", &self.leeway)
            .finish_non_exhaustive()
    }
}

impl Credential for JwtSvid {
    fn id(&self) -> &SpiffeId {
        &self.id
    }

    fn expires_at(&self) -> SystemTime {
        self.expiry
    }

    /// Without the leeway: a token in its leeway is verified afresh.
    fn valid_at(&self, now: SystemTime) -> bool {
        now < self.expiry
    }
}

impl JwtVerifier {
    /// A verifier with `settings`.
    pub fn new(settings: JwtSettings) -> Self {
        JwtVerifier {
            audiences: settings.audiences,
            leeway: settings.leeway,
            cache: VerifiedCache::new(settings.cache),
        }
    }

    /// How often the cache served a verification.
    pub(crate) fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Verifies `token` against `bundles` at `now`.
    pub fn verify(
        &self,
        token: &str,
        bundles: &TrustBundles,
        now: SystemTime,
    ) -> Result<Arc<JwtSvid>, IdentityError> {
        self.verify_with_hit(token, bundles, now)
            .map(|(svid, _)| svid)
    }

    /// [`JwtVerifier::verify`], also saying whether the verdict came from
    /// the cache.
    pub(crate) fn verify_with_hit(
        &self,
        token: &str,
        bundles: &TrustBundles,
        now: SystemTime,
    ) -> Result<(Arc<JwtSvid>, bool), IdentityError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(malformed(format!(
                "the token is {} bytes, more than the {MAX_TOKEN_BYTES} a JWT-SVID can take",
                token.len()
            )));
        }
        self.cache
            .get_or_verify(token.as_bytes(), bundles, now, || {
                self.verify_uncached(token, bundles, now)
            })
    }

    /// The full verification, without the cache, in stages: parse the
    /// compact JWS, its header and its claims; look up the bundle of the
    /// `sub`'s own trust domain; verify the signature; check the validity
    /// window; then the audience. Also returns the generation of the bundle
    /// that verified it.
    pub fn verify_uncached(
        &self,
        token: &str,
        bundles: &TrustBundles,
        now: SystemTime,
    ) -> Result<(JwtSvid, u64), IdentityError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(malformed("the token is too large"));
        }
        let jws = CompactJws::split(token)?;
        let header = Header::parse(jws.header)?;
        let claims = Claims::parse(jws.payload)?;
        let bundle = super::bundle_for(bundles, &claims.id)?;
        verify_signature(bundle, &header, &claims.id, &jws)?;
        self.check_window(&claims, now)?;
        self.check_audience(&claims)?;
        Ok((
            JwtSvid {
                id: claims.id,
                audience: claims.audience,
                expiry: claims.expiry,
                claims: claims.all,
            },
            bundle.generation(),
        ))
    }

    /// `exp` and `nbf`, with the leeway.
    fn check_window(&self, claims: &Claims, now: SystemTime) -> Result<(), IdentityError> {
        let id = &claims.id;
        if now >= time::saturating_add(claims.expiry, self.leeway) {
            return Err(IdentityError::new(
                Reason::JwtExpired,
                format!(
                    "the token of {id} expired at {}",
                    time::rfc3339(claims.expiry)
                ),
            ));
        }
        if let Some(nbf) = claims.not_before
            && time::saturating_add(now, self.leeway) < nbf
        {
            return Err(IdentityError::new(
                Reason::JwtNotYetValid,
                format!(
                    "the token of {id} is not valid before {}",
                    time::rfc3339(nbf)
                ),
            ));
        }
        Ok(())
    }

    /// `aud` names one of the accepted audiences.
    fn check_audience(&self, claims: &Claims) -> Result<(), IdentityError> {
        if claims.audience.iter().any(|a| self.audiences.contains(a)) {
            return Ok(());
        }
        Err(IdentityError::new(
            Reason::JwtAudience,
            format!(
                "the token's audience {:?} has none of the accepted {:?}",
                claims.audience, self.audiences
            ),
        ))
    }
}

/// A compact JWS, split into its three base64url parts.
struct CompactJws<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
    /// `header.payload`, what the signature covers.
    signed: &'a str,
}

impl<'a> CompactJws<'a> {
    fn split(token: &'a str) -> Result<Self, IdentityError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed(
                "not a compact JWS: a JWT-SVID is three base64url parts separated by '.'",
            ));
        };
        if header.is_empty() || payload.is_empty() || signature.is_empty() {
            return Err(malformed("a part of the compact JWS is empty"));
        }
        let signed = token
            .get(..header.len() + 1 + payload.len())
            .unwrap_or_default();
        Ok(CompactJws {
            header,
            payload,
            signature,
            signed,
        })
    }
}

/// The JOSE header of a JWT-SVID: `alg`, `kid` and optionally `typ`.
struct Header {
    alg: JwsAlg,
    kid: String,
}

impl Header {
    fn parse(part: &str) -> Result<Self, IdentityError> {
        let header = decode_object(part, "header")?;
        if let Some(extra) = header
            .keys()
            .find(|k| !matches!(k.as_str(), "alg" | "kid" | "typ"))
        {
            return Err(malformed(format!(
                "the header has '{extra}'; a JWT-SVID header has only alg, kid and typ"
            )));
        }
        let alg = match header.get("alg") {
            Some(Value::String(name)) => JwsAlg::parse(name).ok_or_else(|| {
                IdentityError::new(
                    Reason::JwtAlgorithm,
                    format!(
                        "alg {name:?} is not allowed; a JWT-SVID is signed with RS256, RS384, RS512, ES256, ES384, ES512, PS256, PS384 or PS512"
                    ),
                )
            })?,
            _ => return Err(malformed("the header has no alg")),
        };
        let kid = match header.get("kid") {
            Some(Value::String(kid)) if !kid.is_empty() => kid.clone(),
            _ => return Err(malformed("the header has no kid")),
        };
        match header.get("typ") {
            None => {}
            Some(Value::String(t)) if t == "JWT" || t == "JOSE" => {}
            Some(other) => {
                return Err(malformed(format!(
                    "typ must be \"JWT\" or \"JOSE\", not {other}"
                )));
            }
        }
        Ok(Header { alg, kid })
    }
}

/// The claims of a JWT-SVID that verification reads, and all of them.
struct Claims {
    id: SpiffeId,
    audience: Vec<String>,
    expiry: SystemTime,
    not_before: Option<SystemTime>,
    all: Map<String, Value>,
}

impl Claims {
    fn parse(part: &str) -> Result<Self, IdentityError> {
        let claims = decode_object(part, "payload")?;
        let sub = match claims.get("sub") {
            Some(Value::String(sub)) => sub.as_str(),
            _ => return Err(malformed("the sub claim is required")),
        };
        let id = SpiffeId::parse(sub).map_err(|e| {
            IdentityError::new(
                Reason::JwtInvalidId,
                format!("sub {sub:?} is not a valid SPIFFE ID: {e}"),
            )
        })?;
        let audience = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.clone()],
            Some(Value::Array(list)) if !list.is_empty() => list
                .iter()
                .map(|a| a.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| malformed("aud must be a string or a list of strings"))?,
            _ => return Err(malformed("the aud claim is required")),
        };
        let expiry =
            numeric_date(&claims, "exp")?.ok_or_else(|| malformed("the exp claim is required"))?;
        let not_before = numeric_date(&claims, "nbf")?;
        Ok(Claims {
            id,
            audience,
            expiry,
            not_before,
            all: claims,
        })
    }
}

/// The signature, by the key `header.kid` of `bundle` (the bundle of `id`'s
/// trust domain).
fn verify_signature(
    bundle: &DomainBundle,
    header: &Header,
    id: &SpiffeId,
    jws: &CompactJws<'_>,
) -> Result<(), IdentityError> {
    let (td, kid) = (id.trust_domain(), &header.kid);
    let key = bundle.jwt_key(kid).ok_or_else(|| {
        IdentityError::new(
            Reason::JwtUnknownKey,
            format!(
                "the JWT bundle of '{td}' has no key '{kid}' ({} keys)",
                bundle.jwt_key_count()
            ),
        )
    })?;
    key.accepts(header.alg)
        .map_err(|e| IdentityError::new(Reason::JwtAlgorithm, e.to_string()))?;
    if !key.verify(header.alg, jws.signed.as_bytes(), jws.signature) {
        return Err(IdentityError::new(
            Reason::JwtSignature,
            format!("the signature does not verify with key '{kid}' of '{td}'"),
        ));
    }
    Ok(())
}

/// The JWT-SVID that header `name` with `value` presents, if any.
///
/// In `authorization`, only the `Bearer` scheme presents a token: another
/// scheme (`Basic`, ...) is the application's business and is not read. In
/// any other header the value is the token, with or without `Bearer `.
pub fn token_in_header<'a>(name: &str, value: &'a str) -> Result<Option<&'a str>, IdentityError> {
    let value = value.trim();
    let bearer = value
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
        .and_then(|_| value.get(7..));
    let token = match bearer {
        Some(token) => token.trim(),
        None if value.eq_ignore_ascii_case("bearer") => "",
        None if name == "authorization" => return Ok(None),
        None => value,
    };
    if token.is_empty() {
        return Err(malformed(format!("the {name} header holds no token")));
    }
    if token.contains([',', ' ', '\t']) {
        return Err(malformed(format!(
            "the {name} header holds more than one value; send one JWT-SVID"
        )));
    }
    Ok(Some(token))
}

fn malformed(detail: impl Into<String>) -> IdentityError {
    IdentityError::new(Reason::JwtMalformed, detail)
}

fn decode_object(part: &str, what: &str) -> Result<Map<String, Value>, IdentityError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| malformed(format!("the {what} is not base64url")))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(malformed(format!("the {what} is not a JSON object"))),
    }
}

/// A NumericDate claim (seconds since the epoch, possibly fractional); one
/// beyond the year 9999 is malformed, not a time to convert.
fn numeric_date(
    claims: &Map<String, Value>,
    name: &str,
) -> Result<Option<SystemTime>, IdentityError> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let seconds = value
        .as_f64()
        .filter(|s| s.is_finite())
        .ok_or_else(|| malformed(format!("{name} must be a number of seconds")))?;
    time::from_numeric_date(seconds).map(Some).ok_or_else(|| {
        malformed(format!(
            "{name} is out of range: it lies beyond the year 9999"
        ))
    })
}

#[cfg(test)]
mod tests;
