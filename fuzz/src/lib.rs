//! What the fuzz targets share: a fixed PKI, a JWT-SVID signing key, and an
//! ext_authz edge with rules that read every kind of attribute, so that
//! inputs reach deep into the decision.
//!
//! Every target asserts only what must hold for any input: no panic, and a
//! `CheckRequest` that is an HTTP check always gets an answer (never a gRPC
//! error status, which a fail-open Envoy would turn into an allow).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use celador::edge::response::{AnswerSettings, HeaderValueSource};
use celador::edge::{EdgeSettings, ExtAuthz};
use celador::engine::attributes::Request;
use celador::engine::identity::Requirement;
use celador::engine::identity::bundle::{self, TrustBundles};
use celador::engine::identity::jwt::JwtSettings;
use celador::engine::identity::verified::CacheSettings;
use celador::engine::policy::Policy;
use celador::engine::workload::Workload;
use celador::engine::{Engine, EngineSettings, TokenSettings};
use celador::store::Store;
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address, socket_address};
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use p256::ecdsa::signature::Signer;

/// Rules that read the identities, the request, the workload and the time,
/// with a `matches` whose pattern the caller chooses.
pub const RULES: &str = r#"
rules:
  - name: payments
    effect: allow
    when: source.id == "spiffe://example.org/ns/payments/sa/api"
  - name: agents
    effect: allow
    when: >
      has(token.claims.purpose) && token.claims.purpose == "export" &&
      token.path.startsWith("/agents/") && request.method in ["GET", "HEAD"]
  - name: header-pattern
    effect: allow
    when: >
      "x-pattern" in request.headers && request.path.matches(request.headers["x-pattern"])
  - name: by-time-and-size
    effect: allow
    when: >
      request.time.getHours() < 24 && request.size < 100 &&
      source.address.inCidr(["10.0.0.0/8", "fd00::/8"]) && workload.labels["app"] == "api"
  - name: query-and-context
    effect: deny
    when: >
      "debug" in request.query || ("route" in context && context["route"] == "closed")
  - name: repeated-query-and-raw-path
    effect: deny
    when: >
      ("tag" in request.query && request.query.tag == "x") ||
      ("tag" in request.query_all && request.query_all.tag.exists(t, t == "y")) ||
      request.raw_path.endsWith("/closed")
"#;

/// A fixed root CA of example.org and a leaf it signed.
pub struct Pki {
    pub root_pem: String,
    pub root_der: Vec<u8>,
    /// The leaf, URL-encoded PEM, as Envoy sends it.
    pub leaf: String,
}

pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let root = params.self_signed(&key).unwrap();
        let issuer = rcgen::Issuer::new(params, key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://example.org/ns/payments/sa/api"
                .try_into()
                .unwrap(),
        )];
        leaf.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        let leaf = leaf.signed_by(&leaf_key, &issuer).unwrap();
        Pki {
            root_pem: root.pem(),
            root_der: root.der().to_vec(),
            leaf: url_encode(&leaf.pem()),
        }
    })
}

/// The ES256 key JWT-SVIDs are signed with, `kid` `k1`.
pub fn jwt_key() -> &'static p256::ecdsa::SigningKey {
    static KEY: OnceLock<p256::ecdsa::SigningKey> = OnceLock::new();
    KEY.get_or_init(|| p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap())
}

/// A compact JWS over `payload` (any bytes), signed with [`jwt_key`].
pub fn sign_jwt(payload: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(payload);
    let signed = format!("{header}.{payload}");
    let signature: p256::ecdsa::Signature = jwt_key().sign(signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

/// example.org's bundle: the root and the JWT key, as a SPIFFE bundle
/// document; pending.org is configured but has no bundle.
pub fn bundles() -> TrustBundles {
    let point = jwt_key().verifying_key().to_encoded_point(false);
    let jwk = serde_json::json!({
        "use": "jwt-svid", "kty": "EC", "crv": "P-256", "kid": "k1",
        "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
        "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
    });
    let document = serde_json::json!({"keys": [
        {"use": "x509-svid", "kty": "EC", "x5c": [STANDARD.encode(&pki().root_der)]},
        jwk,
    ]});
    let parsed = bundle::parse(document.to_string().as_bytes(), Path::new("fuzz.json")).unwrap();
    let mut domains = std::collections::HashMap::new();
    domains.insert("example.org".to_owned(), Arc::new(parsed.bundle));
    TrustBundles::new(domains, ["pending.org".to_owned()].into())
}

/// The edge every `CheckRequest` target decides with.
pub fn ext_authz() -> &'static ExtAuthz {
    static EDGE: OnceLock<ExtAuthz> = OnceLock::new();
    EDGE.get_or_init(|| {
        let policy = Policy::parse(RULES, Path::new("fuzz.yaml")).unwrap();
        let workload = Workload {
            namespace: "payments".into(),
            labels: [("app".to_owned(), "api".to_owned())].into(),
            ..Workload::default()
        };
        let cache = CacheSettings {
            max_entries: 1000,
            max_ttl: Duration::from_secs(60),
        };
        let engine = Engine::new(
            workload,
            EngineSettings {
                requirement: Requirement::Either,
                token: Some(TokenSettings {
                    header: "authorization".into(),
                    verify: JwtSettings {
                        audiences: vec!["payments".into()],
                        leeway: Duration::from_secs(30),
                        cache,
                    },
                }),
                svid_cache: cache,
                // Fuzzed requests go through the decision cache and the
                // signals table as served ones do.
                ..EngineSettings::default()
            },
        );
        ExtAuthz::new(
            engine,
            Store::fixed(Arc::new(policy), bundles()),
            EdgeSettings {
                answers: AnswerSettings {
                    upstream_headers: vec![
                        ("x-spiffe-id".into(), HeaderValueSource::SourceId),
                        ("x-rule".into(), HeaderValueSource::Rule),
                    ],
                    remove_token_header: Some("authorization".into()),
                    detail: false,
                },
                audit_headers: vec!["user-agent".into()],
                ..EdgeSettings::default()
            },
        )
    })
}

#[path = "../../tests/support/check.rs"]
#[allow(dead_code)]
mod check_support;

/// An HTTP `CheckRequest` as Envoy sends it (the tests' own), from a peer at
/// 10.1.2.3, which the CIDR rule reads.
pub fn request(
    certificate: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> CheckRequest {
    let mut request = check_support::request(certificate, method, path, headers);
    if let Some(peer) = request.attributes.as_mut().and_then(|a| a.source.as_mut()) {
        peer.address = Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "10.1.2.3".into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(5555)),
                ..Default::default()
            })),
        });
    }
    request
}

/// The request of [`request`] without headers, built for the engine
/// without protobuf (for the targets that evaluate rules only).
pub fn engine_request(certificate: &str, method: &str, path: &str) -> Request {
    Request {
        source_certificate: certificate.to_owned(),
        source_address: "10.1.2.3".into(),
        source_port: 5555,
        id: "test-request".into(),
        host: "api.example.org".into(),
        scheme: "https".into(),
        protocol: "HTTP/2".into(),
        ..Request::new(method, path)
    }
}

/// Decides `request`; an HTTP check must always be answered.
pub fn check(request: &CheckRequest) {
    let is_http = request
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .is_some();
    match ext_authz().check(request) {
        Ok(response) => assert!(response.http_response.is_some()),
        Err(status) => assert!(!is_http, "an HTTP check got an error status: {status:?}"),
    }
}

/// `s` percent-encoded the way Envoy encodes `source.certificate`.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Splits fuzz input into `n` strings at 0xFF bytes (lossy UTF-8).
pub fn split(data: &[u8], n: usize) -> Vec<String> {
    let mut parts: Vec<String> = data
        .splitn(n, |b| *b == 0xFF)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    parts.resize(n, String::new());
    parts
}
