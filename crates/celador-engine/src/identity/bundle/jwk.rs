//! JWT-SVID signing keys, from JWKs (RFC 7517/7518).
//!
//! Data flow: each `jwt-svid` key of a SPIFFE bundle document, or of a JWT
//! bundle from the Workload API, is parsed here once, when the bundle loads,
//! into a [`JwtKey`] ready to verify signatures: nothing about a key is
//! parsed on the request path.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

/// The JWS algorithms of the JWT-SVID profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwsAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512
    Rs512,
    /// ECDSA P-256 with SHA-256
    Es256,
    /// ECDSA P-384 with SHA-384
    Es384,
    /// ECDSA P-521 with SHA-512
    Es512,
    /// RSASSA-PSS with SHA-256
    Ps256,
    /// RSASSA-PSS with SHA-384
    Ps384,
    /// RSASSA-PSS with SHA-512
    Ps512,
}

impl JwsAlg {
    /// The algorithm named `name`, if the JWT-SVID profile allows it.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "RS256" => JwsAlg::Rs256,
            "RS384" => JwsAlg::Rs384,
            "RS512" => JwsAlg::Rs512,
            "ES256" => JwsAlg::Es256,
            "ES384" => JwsAlg::Es384,
            "ES512" => JwsAlg::Es512,
            "PS256" => JwsAlg::Ps256,
            "PS384" => JwsAlg::Ps384,
            "PS512" => JwsAlg::Ps512,
            _ => return None,
        })
    }

    /// Its JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            JwsAlg::Rs256 => "RS256",
            JwsAlg::Rs384 => "RS384",
            JwsAlg::Rs512 => "RS512",
            JwsAlg::Es256 => "ES256",
            JwsAlg::Es384 => "ES384",
            JwsAlg::Es512 => "ES512",
            JwsAlg::Ps256 => "PS256",
            JwsAlg::Ps384 => "PS384",
            JwsAlg::Ps512 => "PS512",
        }
    }

    fn is_rsa(self) -> bool {
        !matches!(self, JwsAlg::Es256 | JwsAlg::Es384 | JwsAlg::Es512)
    }
}

/// An elliptic curve of the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// P-256, for ES256.
    P256,
    /// P-384, for ES384.
    P384,
    /// P-521, for ES512.
    P521,
}

impl Curve {
    fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    fn alg(self) -> JwsAlg {
        match self {
            Curve::P256 => JwsAlg::Es256,
            Curve::P384 => JwsAlg::Es384,
            Curve::P521 => JwsAlg::Es512,
        }
    }
}

/// Why a JWK is not a usable JWT-SVID key, or a key cannot verify a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
    /// The JWK is not a JSON object.
    #[error("not a JSON object")]
    NotAnObject,
    /// No `kid`.
    #[error("a jwt-svid key needs a 'kid'")]
    MissingKid,
    /// A `kid` that is not a non-empty string.
    #[error("'kid' must be a non-empty string")]
    InvalidKid,
    /// An `alg` outside the profile.
    #[error("key '{kid}': 'alg' {name:?} is not a JWT-SVID algorithm")]
    UnknownAlg {
        /// The key.
        kid: String,
        /// The `alg` it names.
        name: String,
    },
    /// An `alg` that is not a string.
    #[error("key '{kid}': 'alg' must be a string")]
    InvalidAlg {
        /// The key.
        kid: String,
    },
    /// A required member is missing.
    #[error("key '{kid}': '{member}' is required")]
    Missing {
        /// The key.
        kid: String,
        /// The member.
        member: &'static str,
    },
    /// A member is not base64url.
    #[error("key '{kid}': '{member}' is not base64url: {reason}")]
    NotBase64 {
        /// The key.
        kid: String,
        /// The member.
        member: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// An EC curve outside the profile.
    #[error("key '{kid}': curve {curve:?} is not P-256, P-384 or P-521")]
    UnknownCurve {
        /// The key.
        kid: String,
        /// The curve it names.
        curve: String,
    },
    /// EC coordinates of the wrong length.
    #[error("key '{kid}': coordinates of a {curve:?} key are {len} bytes")]
    CoordinateLength {
        /// The key.
        kid: String,
        /// Its curve.
        curve: Curve,
        /// The length they must have.
        len: usize,
    },
    /// EC coordinates that are not a point of the curve.
    #[error("key '{kid}': not a point on {curve}")]
    NotOnCurve {
        /// The key.
        kid: String,
        /// Its curve's name.
        curve: &'static str,
    },
    /// An RSA modulus under 2048 bits.
    #[error("key '{kid}': an RSA key of {bits} bits is too weak; at least 2048 are required")]
    WeakRsa {
        /// The key.
        kid: String,
        /// Its size.
        bits: usize,
    },
    /// An empty RSA exponent.
    #[error("key '{kid}': 'e' is empty")]
    EmptyExponent {
        /// The key.
        kid: String,
    },
    /// The key is restricted to another algorithm.
    #[error("the key '{kid}' is for {key_alg}, the token is signed with {alg}")]
    RestrictedAlg {
        /// The key.
        kid: String,
        /// The algorithm it is restricted to.
        key_alg: &'static str,
        /// The algorithm asked for.
        alg: &'static str,
    },
    /// The key's type cannot make that algorithm's signatures.
    #[error("the key '{kid}' ({key}) cannot verify a {alg} signature")]
    WrongKeyType {
        /// The key.
        kid: String,
        /// Its type, e.g. `JwtKey(k1 EC P-256)`.
        key: String,
        /// The algorithm asked for.
        alg: &'static str,
    },
}

/// A public key, parsed and ready to verify.
#[derive(Clone)]
pub enum PublicKey {
    /// An RSA key of at least 2048 bits: modulus and exponent, big-endian.
    Rsa {
        /// The modulus.
        n: Vec<u8>,
        /// The public exponent.
        e: Vec<u8>,
    },
    /// A P-256 or P-384 key, as an uncompressed SEC1 point.
    Ec(Curve, Vec<u8>),
    /// A P-521 key.
    P521(Box<p521::ecdsa::VerifyingKey>),
}

/// A JWT-SVID signing key of a trust domain.
#[derive(Clone)]
pub struct JwtKey {
    /// Its key ID.
    pub kid: String,
    /// The algorithm the JWK restricts it to, if it says.
    pub alg: Option<JwsAlg>,
    /// The key.
    pub key: PublicKey,
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.key {
            PublicKey::Rsa { .. } => "RSA",
            PublicKey::Ec(Curve::P256, _) => "EC P-256",
            PublicKey::Ec(Curve::P384, _) => "EC P-384",
            PublicKey::Ec(Curve::P521, _) | PublicKey::P521(_) => "EC P-521",
        };
        write!(f, "JwtKey({} {kind})", self.kid)
    }
}

impl JwtKey {
    /// Whether a token signed with `alg` may be verified with this key; the
    /// error says why not.
    pub fn accepts(&self, alg: JwsAlg) -> Result<(), JwkError> {
        if let Some(restricted) = self.alg
            && restricted != alg
        {
            return Err(JwkError::RestrictedAlg {
                kid: self.kid.clone(),
                key_alg: restricted.name(),
                alg: alg.name(),
            });
        }
        let fits = match &self.key {
            PublicKey::Rsa { .. } => alg.is_rsa(),
            PublicKey::Ec(curve, _) => curve.alg() == alg,
            PublicKey::P521(_) => alg == JwsAlg::Es512,
        };
        if fits {
            Ok(())
        } else {
            Err(JwkError::WrongKeyType {
                kid: self.kid.clone(),
                key: format!("{self:?}"),
                alg: alg.name(),
            })
        }
    }

    /// Verifies `signature` (base64url) over `message` with `alg`.
    pub fn verify(&self, alg: JwsAlg, message: &[u8], signature: &str) -> bool {
        use ring::signature as sig;
        let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
            return false;
        };
        match &self.key {
            PublicKey::Rsa { n, e } => {
                let params: &sig::RsaParameters = match alg {
                    JwsAlg::Rs256 => &sig::RSA_PKCS1_2048_8192_SHA256,
                    JwsAlg::Rs384 => &sig::RSA_PKCS1_2048_8192_SHA384,
                    JwsAlg::Rs512 => &sig::RSA_PKCS1_2048_8192_SHA512,
                    JwsAlg::Ps256 => &sig::RSA_PSS_2048_8192_SHA256,
                    JwsAlg::Ps384 => &sig::RSA_PSS_2048_8192_SHA384,
                    JwsAlg::Ps512 => &sig::RSA_PSS_2048_8192_SHA512,
                    JwsAlg::Es256 | JwsAlg::Es384 | JwsAlg::Es512 => return false,
                };
                sig::RsaPublicKeyComponents { n, e }
                    .verify(params, message, &signature)
                    .is_ok()
            }
            PublicKey::Ec(curve, point) => {
                // JWS carries ECDSA signatures as fixed-width R || S.
                let algorithm: &sig::EcdsaVerificationAlgorithm = match (curve, alg) {
                    (Curve::P256, JwsAlg::Es256) => &sig::ECDSA_P256_SHA256_FIXED,
                    (Curve::P384, JwsAlg::Es384) => &sig::ECDSA_P384_SHA384_FIXED,
                    _ => return false,
                };
                sig::UnparsedPublicKey::new(algorithm, point)
                    .verify(message, &signature)
                    .is_ok()
            }
            PublicKey::P521(key) => {
                use p521::ecdsa::signature::Verifier;
                let Ok(signature) = p521::ecdsa::Signature::from_slice(&signature) else {
                    return false;
                };
                alg == JwsAlg::Es512 && key.verify(message, &signature).is_ok()
            }
        }
    }
}

/// What parsing a JWK gave.
#[derive(Debug)]
pub enum Parsed {
    /// A usable key.
    Key(JwtKey),
    /// A key type the profile does not use; the SPIFFE bundle spec says to
    /// ignore such keys.
    UnknownType(String),
}

/// Parses one JWK. `kid` is required; an unknown `kty` is not an error.
pub fn parse(jwk: &Map<String, Value>) -> Result<Parsed, JwkError> {
    let kid = match jwk.get("kid") {
        Some(Value::String(kid)) if !kid.is_empty() => kid.clone(),
        Some(_) => return Err(JwkError::InvalidKid),
        None => return Err(JwkError::MissingKid),
    };
    let alg = match jwk.get("alg") {
        None => None,
        Some(Value::String(name)) => {
            Some(JwsAlg::parse(name).ok_or_else(|| JwkError::UnknownAlg {
                kid: kid.clone(),
                name: name.clone(),
            })?)
        }
        Some(_) => return Err(JwkError::InvalidAlg { kid }),
    };
    let kty = field(jwk, "kty", &kid)?;
    let key = match kty {
        "EC" => ec_key(jwk, &kid)?,
        "RSA" => rsa_key(jwk, &kid)?,
        other => return Ok(Parsed::UnknownType(other.to_owned())),
    };
    let key = JwtKey { kid, alg, key };
    if let Some(alg) = alg {
        key.accepts(alg)?;
    }
    Ok(Parsed::Key(key))
}

/// Parses one JWK from its JSON text.
pub fn parse_json(json: &[u8]) -> Result<Parsed, JwkError> {
    match serde_json::from_slice::<Value>(json) {
        Ok(Value::Object(map)) => parse(&map),
        _ => Err(JwkError::NotAnObject),
    }
}

fn field<'a>(
    jwk: &'a Map<String, Value>,
    member: &'static str,
    kid: &str,
) -> Result<&'a str, JwkError> {
    match jwk.get(member) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(JwkError::Missing {
            kid: kid.to_owned(),
            member,
        }),
    }
}

fn decode(jwk: &Map<String, Value>, member: &'static str, kid: &str) -> Result<Vec<u8>, JwkError> {
    URL_SAFE_NO_PAD
        .decode(field(jwk, member, kid)?)
        .map_err(|e| JwkError::NotBase64 {
            kid: kid.to_owned(),
            member,
            reason: e.to_string(),
        })
}

fn ec_key(jwk: &Map<String, Value>, kid: &str) -> Result<PublicKey, JwkError> {
    let curve = match field(jwk, "crv", kid)? {
        "P-256" => Curve::P256,
        "P-384" => Curve::P384,
        "P-521" => Curve::P521,
        other => {
            return Err(JwkError::UnknownCurve {
                kid: kid.to_owned(),
                curve: other.to_owned(),
            });
        }
    };
    let x = decode(jwk, "x", kid)?;
    let y = decode(jwk, "y", kid)?;
    let len = curve.coordinate_len();
    if x.len() != len || y.len() != len {
        return Err(JwkError::CoordinateLength {
            kid: kid.to_owned(),
            curve,
            len,
        });
    }
    let mut point = Vec::with_capacity(1 + 2 * len);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    let not_on = |curve: &'static str| JwkError::NotOnCurve {
        kid: kid.to_owned(),
        curve,
    };
    match curve {
        Curve::P521 => p521::ecdsa::VerifyingKey::from_sec1_bytes(&point)
            .map(|k| PublicKey::P521(Box::new(k)))
            .map_err(|_| not_on("P-521")),
        // ring checks points only when verifying: check them at load, to
        // refuse a bad key with a reason instead of failing every token.
        Curve::P256 => p256::PublicKey::from_sec1_bytes(&point)
            .map(|_| PublicKey::Ec(curve, point))
            .map_err(|_| not_on("P-256")),
        Curve::P384 => p384::PublicKey::from_sec1_bytes(&point)
            .map(|_| PublicKey::Ec(curve, point))
            .map_err(|_| not_on("P-384")),
    }
}

fn rsa_key(jwk: &Map<String, Value>, kid: &str) -> Result<PublicKey, JwkError> {
    let n = decode(jwk, "n", kid)?;
    let e = decode(jwk, "e", kid)?;
    let significant = n.iter().skip_while(|b| **b == 0).count();
    if significant * 8 < 2048 {
        return Err(JwkError::WeakRsa {
            kid: kid.to_owned(),
            bits: significant * 8,
        });
    }
    if e.is_empty() {
        return Err(JwkError::EmptyExponent {
            kid: kid.to_owned(),
        });
    }
    Ok(PublicKey::Rsa { n, e })
}
