use crate::testing::{check, jwt as jwt_support, pki};

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;

use super::*;
use crate::edge::response::HeaderValueSource;
use crate::engine::identity::Requirement;
use crate::engine::identity::bundle::{self, TrustBundles};
use crate::engine::identity::jwt::JwtSettings;
use crate::engine::identity::verified::CacheSettings;
use crate::engine::policy::Policy;
use crate::engine::redaction::Redaction;
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
                answers: AnswerSettings {
                    upstream_headers: vec![
                        ("x-peer".into(), HeaderValueSource::SourceId),
                        ("x-caller".into(), HeaderValueSource::TokenId),
                    ],
                    remove_token_header: remove_header.then(|| "authorization".into()),
                    detail: false,
                },
                ..EdgeSettings::default()
            },
        )
    }

    /// An authorizer with default settings deciding with `rules`.
    fn deciding_with(&self, rules: &str) -> ExtAuthz {
        self.deciding_with_settings(rules, EngineSettings::default(), EdgeSettings::default())
    }

    fn deciding_with_settings(
        &self,
        rules: &str,
        engine: EngineSettings,
        edge: EdgeSettings,
    ) -> ExtAuthz {
        ExtAuthz::new(
            Engine::new(Workload::default(), engine),
            Store::fixed(
                Arc::new(Policy::parse(rules, Path::new("p.yaml")).unwrap()),
                self.bundles(),
            ),
            edge,
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
    let attrs = crate::edge::request::attributes(&request).unwrap();
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
        Reason::InvalidRoute
    );
}

#[test]
fn a_route_asking_for_jwt_without_jwt_config_is_denied_with_500() {
    let f = Fixture::new();
    let a = ExtAuthz::new(
        Engine::new(Workload::default(), EngineSettings::default()),
        store(f.bundles()),
        EdgeSettings::default(),
    );
    assert_eq!(
        outcome(&a, &f.cert(), &[], &[(REQUIREMENT_EXTENSION, "either")]),
        Reason::InvalidRoute
    );
    let request = check::request(&f.cert(), "GET", "/", &[]);
    let mut request = request;
    request
        .attributes
        .as_mut()
        .unwrap()
        .context_extensions
        .insert(REQUIREMENT_EXTENSION.into(), "jwt".into());
    let response = a.check(&request).unwrap();
    assert_eq!(
        check::denial(&response),
        Some((500, "invalid_route".to_owned()))
    );
}

#[test]
fn a_pending_bundle_is_denied_with_503_never_left_to_envoy() {
    let f = Fixture::new();
    let pending = TrustBundles::new(HashMap::new(), BTreeSet::from(["example.org".to_owned()]));
    let a = f.authorizer_with(Requirement::X509, false, pending);
    assert_eq!(outcome(&a, &f.cert(), &[], &[]), Reason::BundleUnavailable);
    let response = a
        .check(&check::request(&f.cert(), "GET", "/", &[]))
        .unwrap();
    assert_eq!(
        check::denial(&response),
        Some((503, "bundle_unavailable".to_owned()))
    );
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
    // `x-celador-shadow` is celador's: a client's copy never passes.
    assert_eq!(
        response.headers_to_remove,
        ["authorization", "x-celador-shadow"]
    );
    // With no token, the token's header is removed, never left as sent.
    let x509 = f.authorizer(Requirement::X509, false);
    let response = ok(&x509, &f.cert(), &[("x-caller", "spiffe://forged/x")]);
    assert_eq!(response.headers_to_remove, ["x-caller", "x-celador-shadow"]);
}

/// A layer keeping the audit records of the events it sees.
struct Records(Arc<std::sync::Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Records {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Field(Option<String>);
        impl tracing::field::Visit for Field {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                if field.name() == "record" {
                    self.0 = Some(value.to_owned());
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        let mut field = Field(None);
        event.record(&mut field);
        if let Some(line) = field
            .0
            .filter(|_| event.metadata().target() == audit::TARGET)
        {
            self.0.lock().unwrap().push(line);
        }
    }
}

impl Records {
    fn parsed(&self) -> Vec<serde_json::Value> {
        let lines = self.0.lock().unwrap();
        lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// The audit records written while `f` runs, on this thread.
fn audited(f: impl FnOnce()) -> Vec<serde_json::Value> {
    use tracing_subscriber::layer::SubscriberExt;
    let records = Records(Arc::default());
    let subscriber = tracing_subscriber::registry().with(Records(Arc::clone(&records.0)));
    tracing::subscriber::with_default(subscriber, f);
    records.parsed()
}

#[test]
fn a_panic_while_deciding_is_a_500_denial_with_one_audit_record() {
    let f = Fixture::new();
    let a = f.authorizer(Requirement::X509, false);
    let request = check::request(&f.cert(), "GET", "/a?secret=1", &[]);
    let mut answer = None;
    let records = audited(|| {
        answer = Some(a.check_with(&request, |_, _, _, _| panic!("a bug")));
    });
    let response = answer.unwrap().unwrap();
    assert_eq!(
        check::denial(&response),
        Some((500, "internal_error".to_owned()))
    );
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["decision"], "deny");
    assert_eq!(records[0]["reason"], "internal_error");
    assert_eq!(records[0]["path"], "/a");
}

#[test]
fn every_check_writes_exactly_one_audit_record_and_non_http_is_the_only_error() {
    let f = Fixture::new();
    let pending = TrustBundles::new(HashMap::new(), BTreeSet::from(["example.org".to_owned()]));
    let a = f.authorizer_with(Requirement::X509, false, pending);
    let records = audited(|| {
        assert!(a.check(&check::request(&f.cert(), "GET", "/", &[])).is_ok());
        assert!(a.check(&check::request("garbage", "GET", "/", &[])).is_ok());
        let status = a.check(&CheckRequest::default()).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    });
    let reasons: Vec<&str> = records
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        ["bundle_unavailable", "svid_malformed", "invalid_request"]
    );
}

#[test]
fn deny_bodies_carry_the_reason_and_request_id_only_unless_detail_is_on() {
    let f = Fixture::new();
    let mut a = f.authorizer(Requirement::Jwt, false);
    let wrong_audience = format!(
        "Bearer {}",
        f.signer.token(&claims(AGENT, "someone-else", 300))
    );
    let request = check::request("", "GET", "/", &[("authorization", &wrong_audience)]);
    let body = |a: &ExtAuthz| match a.check(&request).unwrap().http_response {
        Some(HttpResponse::DeniedResponse(denied)) => {
            serde_json::from_str::<serde_json::Value>(&denied.body).unwrap()
        }
        other => panic!("not denied: {other:?}"),
    };
    let plain = body(&a);
    let keys: Vec<&String> = plain.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["decision", "reason", "request_id"], "{plain}");
    assert_eq!(plain["reason"], "jwt_audience");
    assert!(!plain.to_string().contains("payments"), "{plain}");

    a.settings.answers.detail = true;
    let detailed = body(&a);
    assert!(
        detailed["detail"].as_str().unwrap().contains("payments"),
        "{detailed}"
    );
}

#[test]
fn a_caller_chosen_request_id_is_not_reflected() {
    let f = Fixture::new();
    let a = f.authorizer(Requirement::X509, false);
    let mut request = check::request("", "GET", "/", &[]);
    let http = request
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
        .unwrap();
    http.headers.insert(
        "x-request-id".to_owned(),
        format!("<script>{}", "x".repeat(16 * 1024)),
    );
    let body = |request: &CheckRequest| match a.check(request).unwrap().http_response {
        Some(HttpResponse::DeniedResponse(denied)) => denied.body,
        other => panic!("not denied: {other:?}"),
    };
    let denied = body(&request);
    assert!(denied.len() < 200, "{denied}");
    assert!(!denied.contains("script"), "{denied}");
    // Plain characters, short enough, but a token: not echoed either, nor
    // written to the record.
    let token = f.signer.token(&claims(AGENT, "payments", 300));
    let token = token
        .get(..token.find('.').unwrap() + 4)
        .unwrap()
        .to_owned()
        + ".sig";
    assert!(token.len() <= 128, "{token}");
    let plain = "8d5c0b4e-1f2a-4b3c-9d8e-7f6a5b4c3d2e";
    let mut denials = Vec::new();
    let records = audited(|| {
        for id in [token.as_str(), plain] {
            let mut request = request.clone();
            if let Some(http) = request
                .attributes
                .as_mut()
                .and_then(|a| a.request.as_mut())
                .and_then(|r| r.http.as_mut())
            {
                http.headers
                    .insert("x-request-id".to_owned(), id.to_owned());
                http.id = "4711".to_owned();
            }
            denials.push(body(&request));
        }
    });
    assert!(
        !denials[0].contains(&token) && denials[0].contains("\"request_id\":null"),
        "{}",
        denials[0]
    );
    assert_eq!(records[0]["request_id"], "<redacted>");
    assert!(denials[1].contains(plain), "{}", denials[1]);
    assert_eq!(records[1]["request_id"], plain);
    assert_eq!(records[1]["envoy_stream_id"], "4711");
}

#[test]
fn basic_credentials_are_never_removed_only_a_verified_token() {
    let f = Fixture::new();
    let a = f.authorizer(Requirement::Either, true);
    let response = a
        .check(&check::request(
            &f.cert(),
            "GET",
            "/",
            &[("authorization", "Basic dXNlcjpwYXNz")],
        ))
        .unwrap();
    let Some(HttpResponse::OkResponse(ok)) = response.http_response else {
        panic!("not allowed: {response:?}")
    };
    assert!(
        !ok.headers_to_remove.contains(&"authorization".to_owned()),
        "{:?}",
        ok.headers_to_remove
    );
}

#[test]
fn any_request_time_a_caller_sends_is_answered_never_a_panic() {
    let f = Fixture::new();
    let reads_time = "rules:\n  - name: by-time\n    effect: allow\n    when: request.time.getFullYear() >= 1970 && request.time < now + duration(\"87600h\")\n";
    let a = f.deciding_with(reads_time);
    for (seconds, nanos) in [
        (i64::MAX, i32::MAX),
        (i64::MIN, -1),
        (253_402_300_800, 0),
        (10_000_000_000_000, 999_999_999),
    ] {
        let mut request = check::request(&f.cert(), "GET", "/", &[]);
        if let Some(r) = request.attributes.as_mut().and_then(|a| a.request.as_mut()) {
            r.time = Some(envoy_types::pb::google::protobuf::Timestamp { seconds, nanos });
        }
        let response = a.check(&request).unwrap();
        assert!(check::allowed(&response), "{seconds}: {response:?}");
    }
}

#[test]
fn the_fallback_answer_for_a_failure_outside_the_decision_is_a_500_denial() {
    let response = response::internal_error();
    assert_eq!(
        check::denial(&response),
        Some((500, "internal_error".to_owned()))
    );
    assert_eq!(
        response.status.map(|s| s.code),
        Some(tonic::Code::PermissionDenied as i32)
    );
}

#[test]
fn a_shadow_rules_file_is_evaluated_beside_the_enforced_one_and_only_audited() {
    let f = Fixture::new();
    let a = f.authorizer(Requirement::X509, false);
    let candidate =
        "rules:\n  - name: only-gets\n    effect: allow\n    when: request.method == \"GET\"\n";
    a.store().publish_shadow_policy(Arc::new(
        Policy::parse(candidate, Path::new("c.yaml")).unwrap(),
    ));
    let post = check::request(&f.cert(), "POST", "/charge", &[("x-tenant", "acme")]);
    let get = check::request(&f.cert(), "GET", "/charge", &[]);
    let mut answers = Vec::new();
    let records = audited(|| {
        answers.push(a.check(&post).unwrap());
        answers.push(a.check(&get).unwrap());
    });
    // The enforced rules allow both; the candidate would deny the POST.
    assert!(answers.iter().all(check::allowed));
    assert_eq!(records.len(), 2, "{records:?}");
    let shadow = &records[0]["shadow"][0];
    assert_eq!(shadow["source"], "policy");
    assert_eq!(shadow["allowed"], false);
    assert_eq!(shadow["reason"], "no_allow_rule");
    assert_eq!(shadow["version"].as_str().map(str::len), Some(16));
    assert_eq!(records[0]["versions"]["shadow_policy"], shadow["version"]);
    assert_eq!(records[1]["shadow"][0]["allowed"], true);
    let metrics = a.metrics().encode();
    assert!(
        metrics.contains(
            "celador_shadow_differences_total{source=\"policy\",enforced=\"allow\",shadow=\"deny\"} 1"
        ),
        "{metrics}"
    );
}

#[test]
fn the_trail_records_what_the_deciding_rule_read_without_a_credential() {
    let f = Fixture::new();
    let rules = r#"rules:
  - name: reads-everything
    effect: allow
    when: >
      request.headers.exists(k, k == "x-tenant") && request.query["day"] == "1" &&
      request.headers["x-tenant"] == "acme" && source.id != ""
"#;
    let a = f.deciding_with_settings(
        rules,
        EngineSettings {
            redaction: Redaction::new(Vec::new(), ["day".to_owned()]),
            ..EngineSettings::default()
        },
        EdgeSettings::default(),
    );
    let request = check::request(
        &f.cert(),
        "GET",
        "/x?day=1&access_token=s3cret&page=3",
        &[
            ("x-tenant", "acme"),
            ("authorization", "Bearer eyJ.secret.token"),
            ("cookie", "session=s3cret"),
            ("x-other", "bearer eyJ.other"),
        ],
    );
    let mut answers = Vec::new();
    let records = audited(|| {
        answers.push(a.check(&request).unwrap());
        answers.push(a.check(&request).unwrap());
    });
    assert!(answers.iter().all(check::allowed));
    let read = &records[0]["read"];
    assert_eq!(read["source.id"], PEER);
    assert_eq!(read["request.headers[\"x-tenant\"]"], "acme");
    assert_eq!(read["request.headers"]["x-tenant"], "acme");
    assert_eq!(read["request.headers"]["authorization"], "<redacted>");
    assert_eq!(read["request.headers"]["cookie"], "<redacted>");
    assert_eq!(read["request.headers"]["x-other"], "<redacted>");
    // Shown: only a parameter that audit.query_params names.
    assert_eq!(read["request.query"]["day"], "1");
    assert_eq!(read["request.query"]["access_token"], "<redacted>");
    assert_eq!(read["request.query"]["page"], "<redacted>");
    let all = serde_json::to_string(&records).unwrap();
    assert!(!all.contains("s3cret") && !all.contains("eyJ"), "{all}");
    // The second answer came from the decision cache, the identity from
    // the SVID cache; the versions in force are named.
    assert_eq!(records[0]["cache"]["decision"], false);
    assert_eq!(records[1]["cache"]["decision"], true);
    assert_eq!(records[1]["cache"]["identity"], true);
    assert_eq!(records[1]["enforced"], true);
    assert_eq!(records[1]["versions"]["grants"], "none");
    assert_eq!(records[1]["versions"]["revocations"], "none");
    assert!(records[1]["versions"]["bundles"]["example.org"].is_u64());
}

#[test]
fn a_revocations_reason_reaches_the_record_redacted() {
    // The receiver's reasons quote the SET's `jti`, which the transmitter
    // chose: the record shows the reason through the one redaction.
    let f = Fixture::new();
    let key = "AKIAIOSFODNN7EXAMPLE";
    let revocations = crate::engine::revocations::Revocations::parse(
        &format!(
            "revocations:\n  - spiffe_id: {PEER}\n    reason: \"credential-compromise (SET {key} from https://idp.example.com/)\"\n"
        ),
        Path::new("revocations.yaml"),
    )
    .unwrap();
    let store = Store::fixed(
        Arc::new(
            Policy::parse(
                "rules:\n  - name: all\n    effect: allow\n    when: \"true\"\n",
                Path::new("p.yaml"),
            )
            .unwrap(),
        ),
        f.bundles(),
    );
    store.publish_revocations(Arc::new(revocations));
    let authorizer = ExtAuthz::new(
        Engine::new(Workload::default(), EngineSettings::default()),
        store,
        EdgeSettings::default(),
    );
    let request = check::request(&f.cert(), "GET", "/", &[]);
    let records = audited(|| {
        let response = authorizer.check(&request).unwrap();
        assert_eq!(check::denial(&response).unwrap().1, "revoked");
    });
    assert_eq!(records.len(), 1, "{records:?}");
    let reason = records[0]["revoked"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("credential-compromise (SET "),
        "{reason}"
    );
    assert!(!reason.contains(key), "{reason}");
    assert!(reason.contains("<redacted>"), "{reason}");
}

#[test]
fn a_rule_error_is_explained_clause_by_clause_in_the_audit_record() {
    let f = Fixture::new();
    let rules = r#"rules:
  - name: open
    effect: allow
    when: "true"
  - name: debug-off
    effect: deny
    when: request.method == "GET" && request.query["access_token"] != "" && request.headers["x-debug"] == "1"
"#;
    let a = f.deciding_with(rules);
    let request = check::request(
        &f.cert(),
        "GET",
        "/x?access_token=s3cret&page=2",
        &[("authorization", "Bearer eyJ.secret.token")],
    );
    let records = audited(|| {
        let answer = a.check(&request).unwrap();
        assert_eq!(
            check::denial(&answer).map(|(_, r)| r),
            Some("rule_error".to_owned())
        );
    });
    let tree = &records[0]["explanation"];
    assert_eq!(tree["op"], "&&", "{tree}");
    assert_eq!(tree["children"][0]["value"], "true");
    assert_eq!(tree["children"][0]["reads"][0]["path"], "request.method");
    let query = &tree["children"][1];
    assert_eq!(
        query["value"], "true",
        "the truth comes from the real request"
    );
    assert_eq!(query["reads"][0]["path"], "request.query[\"access_token\"]");
    assert_eq!(query["reads"][0]["value"], "\"<redacted>\"");
    let failing = &tree["children"][2];
    assert_eq!(failing["clause"], "request.headers[\"x-debug\"] == \"1\"");
    assert!(
        failing["error"]
            .as_str()
            .unwrap()
            .contains("the key \"x-debug\" is absent"),
        "{failing}"
    );
    let all = serde_json::to_string(&records).unwrap();
    assert!(!all.contains("eyJ") && !all.contains("s3cret"), "{all}");
    // Only a rule_error carries one.
    let allowed = check::request(&f.cert(), "POST", "/x", &[]);
    let records = audited(|| {
        a.check(&allowed).unwrap();
    });
    assert!(records[0].get("explanation").is_none());
}

/// Spans exported as they end, kept for the test to read.
#[derive(Debug, Clone, Default)]
struct Spans(Arc<std::sync::Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

impl opentelemetry_sdk::trace::SpanExporter for Spans {
    fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> impl std::future::Future<Output = opentelemetry_sdk::error::OTelSdkResult> + Send {
        self.0.lock().unwrap().extend(batch);
        std::future::ready(Ok(()))
    }
}

/// The audit records written while `f` runs, on this thread, and every
/// tracing event (the records among them) as text.
fn logged(f: impl FnOnce()) -> (Vec<serde_json::Value>, String) {
    use std::sync::Mutex;
    use tracing_subscriber::layer::SubscriberExt;

    struct Lines(Arc<Mutex<String>>);
    struct Fields(String);
    impl tracing::field::Visit for Fields {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Lines {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let mut fields = Fields(event.metadata().target().to_owned());
            event.record(&mut fields);
            let mut lines = self.0.lock().unwrap();
            lines.push_str(&fields.0);
            lines.push('\n');
        }
    }
    let lines = Arc::new(Mutex::new(String::new()));
    let records = Records(Arc::default());
    let subscriber = tracing_subscriber::registry()
        .with(Records(Arc::clone(&records.0)))
        .with(Lines(Arc::clone(&lines)));
    tracing::subscriber::with_default(subscriber, f);
    let text = lines.lock().unwrap().clone();
    (records.parsed(), text)
}

/// Issue 19's leaks: a JWT-SVID in the configured token header read as a
/// whole header map (`in`, `exists`), credentials in query values, and a
/// bearer value in an audited header. None reaches the audit record (its
/// `read`, `headers` and a rule_error's explanation), a span or a log line.
#[test]
fn no_secret_of_the_request_reaches_the_record_the_explanation_the_span_or_the_log() {
    use opentelemetry::trace::TracerProvider as _;
    let f = Fixture::new();
    let svid = f.signer.token(&claims(AGENT, "payments", 300));
    let secrets = [
        svid.as_str(),
        "hunter2",
        "correct-horse-battery",
        "AKIAIOSFODNN7EXAMPLE",
        "opaque-debug-credential",
    ];
    let query = format!(
        "jwt={svid}&pass=hunter2&pwd=correct-horse-battery&x-amz-credential=AKIAIOSFODNN7EXAMPLE%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&page=2"
    );
    let headers = [
        ("x-jwt-svid", svid.as_str()),
        ("x-debug-info", "Bearer opaque-debug-credential"),
        ("x-tenant", "acme"),
    ];
    let settings = |rules| {
        let a = f.deciding_with_settings(
            rules,
            EngineSettings {
                token: Some(TokenSettings {
                    header: "x-jwt-svid".into(),
                    verify: JwtSettings {
                        audiences: vec!["payments".into()],
                        leeway: Duration::from_secs(30),
                        cache: CacheSettings::default(),
                    },
                }),
                redaction: Redaction::new(Vec::new(), ["page".to_owned()]),
                ..EngineSettings::default()
            },
            EdgeSettings {
                audit_headers: vec!["x-debug-info".into(), "x-tenant".into()],
                ..EdgeSettings::default()
            },
        );
        let spans = Spans::default();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        a.set_tracing(trace::Tracing::new(provider.tracer("celador")));
        (a, spans)
    };
    // No rule decides, so the record reads what every rule read: the whole
    // header map (through `in` and `exists`) and the whole query.
    let (reads_all, spans) = settings(
        r#"rules:
  - name: token-header-present
    effect: allow
    when: '"x-jwt-svid" in request.headers && request.method == "PATCH"'
  - name: any-debug-header
    effect: allow
    when: request.headers.exists(k, k.startsWith("x-never"))
  - name: query
    effect: allow
    when: request.query["pass"] == "nope" && request.query["page"] == "2"
"#,
    );
    // A deny rule that fails on values it read: its error quotes them.
    let (fails, more_spans) = settings(
        r#"rules:
  - name: open
    effect: allow
    when: "true"
  - name: odd-addresses
    effect: deny
    when: request.headers["x-jwt-svid"].inCidr("10.0.0.0/8") || request.query["pass"].inCidr("10.0.0.0/8")
"#,
    );
    let request = check::request(
        &f.cert(),
        "GET",
        &format!("/export/{svid}?{query}"),
        &headers,
    );
    let (records, log) = logged(|| {
        let denied = reads_all.check(&request).unwrap();
        assert_eq!(
            check::denial(&denied).map(|(_, r)| r).as_deref(),
            Some("no_allow_rule")
        );
        let failed = fails.check(&request).unwrap();
        assert_eq!(
            check::denial(&failed).map(|(_, r)| r).as_deref(),
            Some("rule_error")
        );
    });
    assert_eq!(records.len(), 2, "{records:?}");
    let read = &records[0]["read"];
    assert_eq!(
        read["request.headers"]["x-jwt-svid"], "<redacted>",
        "{read}"
    );
    assert_eq!(
        read["request.headers"]["x-debug-info"], "<redacted>",
        "{read}"
    );
    assert_eq!(read["request.headers"]["x-tenant"], "acme", "{read}");
    assert_eq!(read["request.query"]["pass"], "<redacted>", "{read}");
    assert_eq!(read["request.query"]["page"], "2", "{read}");
    assert_eq!(records[0]["headers"]["x-debug-info"], "<redacted>");
    assert_eq!(records[0]["headers"]["x-tenant"], "acme");
    assert_eq!(records[0]["path"], "/export/<redacted>");
    let explanation = &records[1]["explanation"];
    assert!(
        explanation["children"][0]["error"]
            .as_str()
            .unwrap()
            .contains("is not an IP address"),
        "{explanation}"
    );
    let spans: Vec<_> = [spans, more_spans]
        .iter()
        .flat_map(|s| s.0.lock().unwrap().clone())
        .collect();
    assert_eq!(spans.len(), 2);
    let outputs = [
        (
            "the audit records",
            serde_json::to_string(&records).unwrap(),
        ),
        (
            "the spans",
            format!(
                "{:?}",
                spans.iter().map(|s| &s.attributes).collect::<Vec<_>>()
            ),
        ),
        ("the log", log),
    ];
    for (what, text) in &outputs {
        assert!(!text.is_empty(), "{what}");
        for secret in secrets {
            assert!(!text.contains(secret), "{what} hold {secret}:\n{text}");
        }
        assert!(!text.contains("eyJ"), "{what} hold a token:\n{text}");
    }
}

/// The redaction's path parameters, bare query items and URLs inside a
/// header's value: none reaches the record (`path`, `raw_path`, `headers`,
/// `read`) or the span, and the values around them are kept.
#[test]
fn path_parameters_bare_query_items_and_urls_inside_header_values_never_reach_a_record() {
    use crate::engine::request_path::PathMode;
    use opentelemetry::trace::TracerProvider as _;
    let f = Fixture::new();
    let session = "0123456789ABCDEF0123456789ABCDEF";
    let key = "0123456789abcdef0123456789abcdef";
    let authorizer = |paths| {
        f.deciding_with_settings(
            r#"rules:
  - name: reads-all
    effect: allow
    when: request.headers.exists(k, k == "x-never") || request.path == "/never" || request.raw_path == "/never" || request.query_all.exists(k, k == "x")
"#,
            EngineSettings {
                redaction: Redaction::new(Vec::new(), ["page".to_owned()]),
                ..EngineSettings::default()
            },
            EdgeSettings {
                audit_headers: vec!["link".into(), "refresh".into(), "x-original-url".into()],
                paths,
                ..EdgeSettings::default()
            },
        )
    };
    let (raw, ambiguous) = (authorizer(PathMode::Raw), authorizer(PathMode::default()));
    let spans = Spans::default();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    raw.set_tracing(trace::Tracing::new(provider.tracer("celador")));
    // A dot segment: the ambiguous path's record has a `raw_path` too.
    let raw_path = format!("/app;jsessionid={session}/x/./y;v=1");
    let path = format!("{raw_path}?{key}&debug");
    let headers = [
        (":path", path.as_str()),
        (
            "link",
            "<https://api.example.org/items?page=2&token=s3cr3t-link>; rel=\"next\"",
        ),
        ("refresh", "0; url=/cb?code=s3cr3t-refresh"),
        (
            "x-original-url",
            "https://svc:s3cr3t-pw;key=3@db.internal/a;token=s3cr3t-url;v=1",
        ),
    ];
    let request = check::request(&f.cert(), "GET", &path, &headers);
    let records = audited(|| {
        assert!(!check::allowed(&raw.check(&request).unwrap()));
        assert!(!check::allowed(&ambiguous.check(&request).unwrap()));
    });
    assert_eq!(records.len(), 2, "{records:?}");
    let shown_path = "/app;jsessionid=%3Credacted%3E/x/./y;v=1";
    assert_eq!(records[0]["path"], shown_path, "{}", records[0]);
    // Denied as ambiguous: the canonical path and the raw one, both shown.
    assert_eq!(records[1]["reason"], "invalid_path", "{}", records[1]);
    assert_eq!(records[1]["raw_path"], shown_path, "{}", records[1]);
    let canonical = crate::engine::request_path::canonicalize(&raw_path).path;
    assert_ne!(canonical, raw_path);
    assert!(canonical.contains(session));
    assert_eq!(
        records[1]["path"],
        crate::engine::redaction::path(&canonical).as_ref(),
        "{}",
        records[1]
    );
    for record in &records {
        let headers = &record["headers"];
        assert_eq!(
            headers["link"],
            "<https://api.example.org/items?page=2&token=%3Credacted%3E>; rel=\"next\"",
            "{record}"
        );
        assert_eq!(
            headers["refresh"], "0; url=/cb?code=%3Credacted%3E",
            "{record}"
        );
        assert_eq!(
            headers["x-original-url"], "https://<redacted>@db.internal/a;token=%3Credacted%3E;v=1",
            "{record}"
        );
    }
    let read = &records[0]["read"];
    assert_eq!(read["request.path"], shown_path, "{read}");
    assert_eq!(
        read["request.headers"][":path"],
        format!("{shown_path}?%3Credacted%3E&debug"),
        "{read}"
    );
    assert_eq!(read["request.raw_path"], shown_path, "{read}");
    assert_eq!(read["request.query"]["debug"], "<redacted>", "{read}");
    assert!(read["request.query"].get(key).is_none(), "{read}");
    let spans = format!("{:?}", spans.0.lock().unwrap());
    assert!(spans.contains(shown_path), "{spans}");
    let text = format!("{records:?}{spans}");
    for secret in [session, key, "s3cr3t"] {
        assert!(!text.contains(secret), "{secret}: {text}");
    }
}

mod requests;
