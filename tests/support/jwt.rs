//! Test JWT-SVIDs: signers for every algorithm of the profile, and the JWKS
//! and SPIFFE bundle documents that carry their public keys.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

enum Key {
    Jwt(jsonwebtoken::EncodingKey, jsonwebtoken::Algorithm),
    P521(p521::ecdsa::SigningKey),
}

/// A key that signs JWT-SVIDs.
pub struct Signer {
    /// Its key ID.
    pub kid: String,
    /// Its JOSE algorithm.
    pub alg: &'static str,
    /// Its public JWK (with `kid` and `use: jwt-svid`).
    pub jwk: Value,
    key: Key,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Signer {
    /// An ES256 (P-256) signer.
    pub fn es256(kid: &str) -> Signer {
        Self::ec(
            kid,
            &rcgen::PKCS_ECDSA_P256_SHA256,
            "ES256",
            "P-256",
            jsonwebtoken::Algorithm::ES256,
        )
    }

    /// An ES384 (P-384) signer.
    pub fn es384(kid: &str) -> Signer {
        Self::ec(
            kid,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            "ES384",
            "P-384",
            jsonwebtoken::Algorithm::ES384,
        )
    }

    fn ec(
        kid: &str,
        rcgen_alg: &'static rcgen::SignatureAlgorithm,
        alg: &'static str,
        crv: &str,
        algorithm: jsonwebtoken::Algorithm,
    ) -> Signer {
        let pair = rcgen::KeyPair::generate_for(rcgen_alg).unwrap();
        let point = pair.public_key_raw();
        let half = (point.len() - 1) / 2;
        Signer {
            kid: kid.to_owned(),
            alg,
            jwk: json!({
                "kty": "EC", "use": "jwt-svid", "kid": kid, "crv": crv,
                "x": b64(&point[1..1 + half]), "y": b64(&point[1 + half..]),
            }),
            key: Key::Jwt(
                jsonwebtoken::EncodingKey::from_ec_der(&pair.serialize_der()),
                algorithm,
            ),
        }
    }

    /// An ES512 (P-521) signer; `seed` picks the key.
    pub fn es512(kid: &str, seed: u8) -> Signer {
        let mut scalar = [0u8; 66];
        scalar[1] = 1;
        scalar[65] = seed.max(1);
        let key = p521::ecdsa::SigningKey::from_slice(&scalar).unwrap();
        let point = p521::ecdsa::VerifyingKey::from(&key).to_encoded_point(false);
        Signer {
            kid: kid.to_owned(),
            alg: "ES512",
            jwk: json!({
                "kty": "EC", "use": "jwt-svid", "kid": kid, "crv": "P-521",
                "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap()),
            }),
            key: Key::P521(key),
        }
    }

    /// An RSA 2048 signer for `alg` (RS256 ... PS512), from the fixture key.
    pub fn rsa(kid: &str, alg: &'static str) -> Signer {
        // Included relative to this file: the engine crate's tests use it too.
        let der = include_bytes!("../fixtures/rsa-2048.der");
        let public: Value =
            serde_json::from_str(include_str!("../fixtures/rsa-2048.jwk.json")).unwrap();
        let algorithm = match alg {
            "RS256" => jsonwebtoken::Algorithm::RS256,
            "RS384" => jsonwebtoken::Algorithm::RS384,
            "RS512" => jsonwebtoken::Algorithm::RS512,
            "PS256" => jsonwebtoken::Algorithm::PS256,
            "PS384" => jsonwebtoken::Algorithm::PS384,
            "PS512" => jsonwebtoken::Algorithm::PS512,
            other => panic!("not an RSA algorithm: {other}"),
        };
        Signer {
            kid: kid.to_owned(),
            alg,
            jwk: json!({"kty": "RSA", "use": "jwt-svid", "kid": kid, "n": public["n"], "e": public["e"]}),
            key: Key::Jwt(jsonwebtoken::EncodingKey::from_rsa_der(der), algorithm),
        }
    }

    /// A token with the usual header (`alg`, `kid`, `typ: JWT`).
    pub fn token(&self, claims: &Value) -> String {
        self.token_with_header(
            &json!({"alg": self.alg, "kid": self.kid, "typ": "JWT"}),
            claims,
        )
    }

    /// A token with any header, signed with this key.
    pub fn token_with_header(&self, header: &Value, claims: &Value) -> String {
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = match &self.key {
            Key::Jwt(key, algorithm) => {
                jsonwebtoken::crypto::sign(signing_input.as_bytes(), key, *algorithm).unwrap()
            }
            Key::P521(key) => {
                use p521::ecdsa::signature::Signer as _;
                let signature: p521::ecdsa::Signature = key.sign(signing_input.as_bytes());
                b64(&signature.to_bytes())
            }
        };
        format!("{signing_input}.{signature}")
    }
}

/// Seconds since the epoch, `offset` seconds from now.
pub fn epoch(offset: i64) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    now + offset
}

/// JWT-SVID claims for `sub` and `aud`, expiring in `expires_in` seconds.
pub fn claims(sub: &str, aud: &str, expires_in: i64) -> Value {
    json!({"sub": sub, "aud": [aud], "exp": epoch(expires_in), "iat": epoch(0)})
}

/// A JWK Set of the signers' public keys (as the Workload API sends).
pub fn jwks(signers: &[&Signer]) -> String {
    json!({"keys": signers.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// A SPIFFE bundle document with X.509 authorities and JWT keys.
pub fn spiffe_bundle(x509_authorities: &[&[u8]], signers: &[&Signer], sequence: u64) -> String {
    let mut keys: Vec<Value> = x509_authorities
        .iter()
        .map(|der| json!({"use": "x509-svid", "kty": "EC", "x5c": [STANDARD.encode(der)]}))
        .collect();
    keys.extend(signers.iter().map(|s| s.jwk.clone()));
    json!({"spiffe_sequence": sequence, "spiffe_refresh_hint": 300, "keys": keys}).to_string()
}
