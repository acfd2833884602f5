//! What of a request reaches the rules and the upstream: ambiguous paths,
//! repeated query parameters, client-sent `x-celador-*` headers.

use super::*;
use crate::engine::request_path::PathMode;

/// An authorizer over `rules` with `paths`, an SVID cache and the decision
/// cache on, setting `x-spiffe-id` and `x-celador-rule` upstream.
fn authorizer(f: &Fixture, rules: &str, paths: PathMode) -> ExtAuthz {
    ExtAuthz::new(
        Engine::new(Workload::default(), EngineSettings::default()),
        Store::fixed(
            Arc::new(Policy::parse(rules, Path::new("p.yaml")).unwrap()),
            f.bundles(),
        ),
        EdgeSettings {
            answers: AnswerSettings {
                upstream_headers: vec![
                    ("x-spiffe-id".into(), HeaderValueSource::SourceId),
                    ("x-celador-rule".into(), HeaderValueSource::Rule),
                ],
                ..AnswerSettings::default()
            },
            paths,
            ..EdgeSettings::default()
        },
    )
}

const EXPORT_ONLY: &str = r#"
rules:
  - name: export-only
    effect: allow
    when: request.method == "GET" && request.path.startsWith("/export/")
  - name: admin-closed
    effect: deny
    when: request.path.startsWith("/admin")
"#;

fn check(a: &ExtAuthz, f: &Fixture, path: &str, headers: &[(&str, &str)]) -> CheckResponse {
    a.check(&check::request(&f.cert(), "GET", path, headers))
        .unwrap()
}

#[test]
fn ambiguous_paths_are_denied_before_the_rules_with_the_raw_path_audited() {
    let f = Fixture::new();
    let a = authorizer(&f, EXPORT_ONLY, PathMode::RejectAmbiguous);
    let paths = [
        "/export/../pay",
        "/export/%2e%2e/pay",
        "/export/..%2fpay",
        "/export/..;/pay",
        "/export/..\\pay",
        "/export/%2e%2e;/admin",
        "/export/a;x=1",
        "/export/%00",
        "//export/a",
    ];
    let mut responses = Vec::new();
    let records = audited(|| {
        for path in paths {
            responses.push(check(&a, &f, path, &[]));
        }
    });
    assert_eq!(records.len(), paths.len(), "{records:?}");
    for ((path, response), record) in paths.iter().zip(&responses).zip(&records) {
        let path = *path;
        assert_eq!(
            check::denial(response),
            Some((400, "invalid_path".to_owned())),
            "{path}"
        );
        assert_eq!(record["reason"], "invalid_path", "{path}");
        assert_eq!(record["spiffe_id"], PEER, "{path}");
        assert_eq!(record["rule"], serde_json::Value::Null, "{path}");
        assert!(
            record["detail"].as_str().unwrap().starts_with("the path "),
            "{path}: {record}"
        );
        let canonical = crate::engine::request_path::canonicalize(path).path;
        assert_eq!(record["path"], canonical.as_ref(), "{path}");
        let raw = (canonical != path).then_some(path);
        assert_eq!(record["raw_path"].as_str(), raw, "{path}: {record}");
    }
    // Counted like any other denial.
    let metrics = a.metrics().encode();
    let counted = format!(
        "celador_decisions_total{{outcome=\"deny\",reason=\"invalid_path\",rule=\"none\"}} {}",
        paths.len()
    );
    assert!(metrics.contains(&counted), "{metrics}");
    // Canonical spellings that every server agrees on are decided on their
    // canonical form.
    for (path, allowed) in [
        ("/export/%61.csv", true),
        ("/export//a.csv", true),
        ("/%61dmin/x", false),
        ("/export", false),
    ] {
        assert_eq!(check::allowed(&check(&a, &f, path, &[])), allowed, "{path}");
    }
}

#[test]
fn the_paths_setting_canonicalizes_without_refusing_or_gives_rules_the_raw_path() {
    let f = Fixture::new();
    let canonical = authorizer(&f, EXPORT_ONLY, PathMode::Canonical);
    // Resolved: `/pay` is no export.
    assert_eq!(
        check::denial(&check(&canonical, &f, "/export/../pay", &[])),
        Some((403, "no_allow_rule".to_owned()))
    );
    assert_eq!(
        check::denial(&check(&canonical, &f, "/export/%2e%2e;/admin", &[])),
        None,
        "canonical does not resolve `..;`: that is what reject_ambiguous is for"
    );
    let raw = authorizer(&f, EXPORT_ONLY, PathMode::Raw);
    // What celador did before: the raw path matches the export rule.
    assert!(check::allowed(&check(&raw, &f, "/export/../pay", &[])));
    assert_eq!(
        check::denial(&check(&raw, &f, "/%61dmin/x", &[])),
        Some((403, "no_allow_rule".to_owned()))
    );
}

#[test]
fn an_ambiguous_path_is_refused_even_when_a_cached_decision_would_allow() {
    let f = Fixture::new();
    // The rule reads no path: its decisions are cached per caller alone.
    let a = authorizer(
        &f,
        "rules:\n  - name: any\n    effect: allow\n    when: source.trust_domain == \"example.org\"\n",
        PathMode::RejectAmbiguous,
    );
    assert!(check::allowed(&check(&a, &f, "/export/a", &[])));
    assert!(check::allowed(&check(&a, &f, "/export/b", &[])));
    assert!(a.engine().decision_cache_stats().hits >= 1);
    assert_eq!(
        check::denial(&check(&a, &f, "/export/../b", &[])),
        Some((400, "invalid_path".to_owned()))
    );
}

#[test]
fn a_rule_reading_the_raw_path_keys_the_decision_cache_on_it() {
    let f = Fixture::new();
    let a = authorizer(
        &f,
        "rules:\n  - name: one-spelling\n    effect: allow\n    when: request.raw_path == \"/export/a\"\n",
        PathMode::RejectAmbiguous,
    );
    assert!(check::allowed(&check(&a, &f, "/export/a", &[])));
    // The same canonical path, another raw one: not the cached allow.
    assert_eq!(
        check::denial(&check(&a, &f, "/export//a", &[])),
        Some((403, "no_allow_rule".to_owned()))
    );
    assert!(check::allowed(&check(&a, &f, "/export/a", &[])));
}

#[test]
fn a_repeated_query_parameter_is_never_read_as_one_value_even_from_the_cache() {
    let f = Fixture::new();
    let a = authorizer(
        &f,
        "rules:\n  - name: open\n    effect: allow\n    when: 'true'\n  - name: no-debug\n    effect: deny\n    when: request.query.debug == \"true\"\n",
        PathMode::RejectAmbiguous,
    );
    assert!(check::allowed(&check(&a, &f, "/x?debug=false", &[])));
    assert!(check::allowed(&check(&a, &f, "/x?debug=false", &[])));
    assert_eq!(
        check::denial(&check(&a, &f, "/x?debug=false&debug=true", &[])),
        Some((403, "rule_error".to_owned()))
    );
}

/// The OK response's set and removed headers.
fn upstream(response: &CheckResponse) -> (Vec<(String, String)>, Vec<String>) {
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => (
            ok.headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect(),
            ok.headers_to_remove.clone(),
        ),
        other => panic!("not allowed: {other:?}"),
    }
}

#[test]
fn client_sent_celador_headers_are_removed_and_celadors_own_set() {
    let f = Fixture::new();
    let a = authorizer(&f, EXPORT_ONLY, PathMode::RejectAmbiguous);
    let forged = [
        ("x-celador-shadow", "denied_by_rule"),
        ("x-celador-rule", "forged"),
        ("x-celador-anything", "forged"),
        ("x-spiffe-id", "spiffe://forged/x"),
        ("x-other", "kept"),
    ];
    let (set, mut removed) = upstream(&check(&a, &f, "/export/a", &forged));
    assert_eq!(
        set,
        [
            ("x-spiffe-id".into(), PEER.into()),
            ("x-celador-rule".into(), "export-only".into())
        ]
    );
    removed.sort();
    assert_eq!(removed, ["x-celador-anything", "x-celador-shadow"]);
    // Without a client copy, `x-celador-shadow` is still removed: Envoy may
    // not have sent celador every header.
    let (_, removed) = upstream(&check(&a, &f, "/export/a", &[]));
    assert_eq!(removed, ["x-celador-shadow"]);
}

#[test]
fn a_shadow_route_lets_a_denial_through_with_its_own_shadow_header_only() {
    let f = Fixture::new();
    let a = authorizer(&f, EXPORT_ONLY, PathMode::RejectAmbiguous);
    let mut request = check::request(
        &f.cert(),
        "GET",
        "/admin/x",
        &[("x-celador-shadow", "allowed"), ("x-celador-debug", "1")],
    );
    if let Some(attrs) = request.attributes.as_mut() {
        attrs
            .context_extensions
            .insert(MODE_EXTENSION.into(), "shadow".into());
    }
    let (set, removed) = upstream(&a.check(&request).unwrap());
    assert!(
        set.contains(&("x-celador-shadow".into(), "denied_by_rule".into())),
        "{set:?}"
    );
    assert_eq!(removed, ["x-celador-debug"]);
}
