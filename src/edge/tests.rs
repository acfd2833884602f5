use crate::testing::{check, jwt as jwt_support, pki};

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;

use super::*;
use crate::engine::identity::Requirement;
use crate::engine::identity::bundle::{self, TrustBundles};
use crate::engine::identity::jwt::JwtSettings;
use crate::engine::identity::verified::CacheSettings;
use crate::engine::policy::Policy;
use crate::engine::workload::Workload;
use crate::engine::{EngineSettings, REQUIREMENT_EXTENSION, TokenSettings};
use jwt_support::{Signer, claims};

fn store(bundles: TrustBundles) -> Arc<Store> {
    Store::fixed(
        Arc::new(Policy::parse(POLICY, Path::new("p.yaml")).unwrap()),
        bundles,
    )
}

const PEER: &str = "spiffe://example.org/ns/gw/sa/gateway";
const AGENT: &str = "spiffe://partner.org/agents/export-bot";

const POLICY: &str = r#"
rules:
  - name: anyone-verified
    effect: allow
    when: "true"
"#;

struct Fixture {
    ca: pki::Ca,
    signer: Signer,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            ca: pki::Ca::root("example.org"),
            signer: Signer::es256("k1"),
        }
    }

    fn bundles(&self) -> TrustBundles {
        let x509 = bundle::parse_pem(self.ca.pem.as_bytes(), Path::new("ca.pem")).unwrap();
        let jwks = jwt_support::jwks(&[&self.signer]);
        let jwt = bundle::parse(jwks.as_bytes(), Path::new("jwks.json"))
            .unwrap()
            .bundle;
        TrustBundles::from_domains([
            ("example.org".to_owned(), x509),
            ("partner.org".to_owned(), jwt),
        ])
    }

    fn authorizer(&self, requirement: Requirement, remove_header: bool) -> ExtAuthz {
        self.authorizer_with(requirement, remove_header, self.bundles())
    }

    fn authorizer_with(
        &self,
        requirement: Requirement,
        remove_header: bool,
        bundles: TrustBundles,
    ) -> ExtAuthz {
        let engine = Engine::new(
            Workload::default(),
            EngineSettings {
                requirement,
                token: Some(TokenSettings {
                    header: "authorization".into(),
                    verify: JwtSettings {
                        audiences: vec!["payments".into()],
                        leeway: Duration::from_secs(30),
                        cache: CacheSettings::default(),
                    },
                }),
                ..EngineSettings::default()
            },
        );
        ExtAuthz::new(
            engine,
            store(bundles),
            EdgeSettings {
                upstream_headers: vec![
                    ("x-peer".into(), HeaderValueSource::SourceId),
                    ("x-caller".into(), HeaderValueSource::TokenId),
                ],
                removed_headers: if remove_header {
                    vec!["authorization".into()]
                } else {
                    Vec::new()
                },
                ..EdgeSettings::default()
            },
        )
    }

    fn cert(&self) -> String {
        self.ca.svid(PEER).envoy_encoded()
    }

    fn bearer(&self) -> String {
        format!(
            "Bearer {}",
            self.signer.token(&claims(AGENT, "payments", 300))
        )
    }
}

/// The reason of a check, "allowed" included, or the error's.
fn outcome(a: &ExtAuthz, cert: &str, headers: &[(&str, &str)], context: &[(&str, &str)]) -> Reason {
    let mut request = check::request(cert, "GET", "/", headers);
    if let Some(attrs) = request.attributes.as_mut() {
        attrs.context_extensions = context
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
    }
    let attrs = Attributes::from_check_request(&request).unwrap();
    a.decide(&attrs, SystemTime::now()).reason
}

#[test]
fn x509_mode_reads_the_certificate_only() {
    let f = Fixture::new();
    let a = f.authorizer(Requirement::X509, false);
    let bearer = f.bearer();
    assert_eq!(outcome(&a, &f.cert(), &[], &[]), Reason::Allowed);
    assert_eq!(
        outcome(&a, "", &[("authorization", &bearer)], &[]),
        Reason::SvidMissing
    );
    // A broken token is not even read.
    assert_eq!(
        outcome(&a, &f.cert(), &[("authorization", "Bearer garbage")], &[]),
        Reason::Allowed
    );
}

#[test]
fn jwt_mode_reads_the_token_only() {
    let f = Fixture::new();
    let a = f.authorizer(Requirement::Jwt, false);
    let bearer = f.bearer();
    assert_eq!(
        outcome(&a, "", &[("authorization", &bearer)], &[]),
        Reason::Allowed
    );
    assert_eq!(
        outcome(&a, "garbage", &[("authorization", &bearer)], &[]),
        Reason::Allowed
    );
    assert_eq!(outcome(&a, &f.cert(), &[], &[]), Reason::JwtMissing);
    assert_eq!(
        outcome(&a, &f.cert(), &[("authorization", "Basic dXNlcg==")], &[]),
        Reason::JwtMissing
    );
    assert_eq!(
        outcome(&a, "", &[("authorization", "Bearer a.b.c")], &[]),
        Reason::JwtMalformed
    );
}

#[test]
fn either_mode_needs_one_and_refuses_any_invalid_one() {
    let f = Fixture::new();
    let a = f.authorizer(Requirement::Either, false);
    let bearer = f.bearer();
    let expired = format!(
        "Bearer {}",
        f.signer.token(&claims(AGENT, "payments", -600))
    );
    assert_eq!(outcome(&a, "", &[], &[]), Reason::IdentityMissing);
    assert_eq!(outcome(&a, &f.cert(), &[], &[]), Reason::Allowed);
    assert_eq!(
        outcome(&a, "", &[("authorization", &bearer)], &[]),
        Reason::Allowed
    );
    assert_eq!(
        outcome(&a, &f.cert(), &[("authorization", &bearer)], &[]),
        Reason::Allowed
    );
    assert_eq!(
        outcome(&a, &f.cert(), &[("authorization", &expired)], &[]),
        Reason::JwtExpired
    );
    assert_eq!(
        outcome(&a, "garbage", &[("authorization", &bearer)], &[]),
        Reason::SvidMalformed
    );
}

#[test]
fn both_mode_needs_both() {
    let f = Fixture::new();
    let a = f.authorizer(Requirement::Both, false);
    let bearer = f.bearer();
    assert_eq!(
        outcome(&a, &f.cert(), &[("authorization", &bearer)], &[]),
        Reason::Allowed
    );
    assert_eq!(outcome(&a, &f.cert(), &[], &[]), Reason::JwtMissing);
    assert_eq!(
        outcome(&a, "", &[("authorization", &bearer)], &[]),
        Reason::SvidMissing
    );
}

#[test]
fn routes_select_their_requirement_with_a_context_extension() {
    let f = Fixture::new();
    let a = f.authorizer(Requirement::X509, false);
    let bearer = f.bearer();
    let jwt = [(REQUIREMENT_EXTENSION, "jwt")];
    assert_eq!(
        outcome(&a, "", &[("authorization", &bearer)], &jwt),
        Reason::Allowed
    );
    assert_eq!(outcome(&a, &f.cert(), &[], &jwt), Reason::JwtMissing);
    assert_eq!(
        outcome(&a, &f.cert(), &[], &[(REQUIREMENT_EXTENSION, "mtls")]),
        Reason::InvalidRequest
    );
}

#[test]
fn a_route_asking_for_jwt_without_jwt_config_is_an_error() {
    let f = Fixture::new();
    let a = ExtAuthz::new(
        Engine::new(Workload::default(), EngineSettings::default()),
        store(f.bundles()),
        EdgeSettings::default(),
    );
    assert_eq!(
        outcome(&a, &f.cert(), &[], &[(REQUIREMENT_EXTENSION, "either")]),
        Reason::InvalidRequest
    );
    let request = check::request(&f.cert(), "GET", "/", &[]);
    let mut request = request;
    request
        .attributes
        .as_mut()
        .unwrap()
        .context_extensions
        .insert(REQUIREMENT_EXTENSION.into(), "jwt".into());
    let status = a.check(&request).unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

#[test]
fn a_pending_bundle_is_unavailable_for_envoy_to_decide() {
    let f = Fixture::new();
    let pending = TrustBundles::new(HashMap::new(), BTreeSet::from(["example.org".to_owned()]));
    let a = f.authorizer_with(Requirement::X509, false, pending);
    assert_eq!(outcome(&a, &f.cert(), &[], &[]), Reason::BundleUnavailable);
    let status = a
        .check(&check::request(&f.cert(), "GET", "/", &[]))
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
}

#[test]
fn upstream_headers_carry_both_identities_and_the_token_can_be_removed() {
    let f = Fixture::new();
    let bearer = f.bearer();
    let ok = |a: &ExtAuthz, cert: &str, headers: &[(&str, &str)]| {
        let response = a.check(&check::request(cert, "GET", "/", headers)).unwrap();
        match response.http_response {
            Some(HttpResponse::OkResponse(ok)) => ok,
            other => panic!("not allowed: {other:?}"),
        }
    };
    let both = f.authorizer(Requirement::Both, true);
    let response = ok(&both, &f.cert(), &[("authorization", &bearer)]);
    let set: Vec<(String, String)> = response
        .headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect();
    assert_eq!(
        set,
        [
            ("x-peer".into(), PEER.into()),
            ("x-caller".into(), AGENT.into())
        ]
    );
    assert_eq!(response.headers_to_remove, ["authorization"]);
    // With no token, the token's header is removed, never left as sent.
    let x509 = f.authorizer(Requirement::X509, false);
    let response = ok(&x509, &f.cert(), &[("x-caller", "spiffe://forged/x")]);
    assert_eq!(response.headers_to_remove, ["x-caller"]);
}
