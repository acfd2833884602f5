#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use super::*;
use crate::attributes::Request;
use crate::identity::jwt::JwtSvid;
use crate::identity::{SpiffeId, X509Svid};
use crate::workload::Workload;

fn policy(yaml: &str) -> Policy {
    Policy::parse(yaml, Path::new("policy.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

fn load_error(yaml: &str) -> PolicyError {
    Policy::parse(yaml, Path::new("policy.yaml")).expect_err("the policy should not load")
}

fn svid(id: &str) -> X509Svid {
    let now = SystemTime::now();
    X509Svid {
        id: SpiffeId::parse(id).unwrap(),
        not_before: now - Duration::from_secs(60),
        not_after: now + Duration::from_secs(3600),
        chain_not_after: now + Duration::from_secs(3600),
        certificate: Default::default(),
    }
}

fn http(method: &str, path: &str, headers: &[(&str, &str)]) -> Request {
    let mut request = Request::new(method, path).with_context("route", "export");
    request.host = "api.example.org".into();
    for (name, value) in headers {
        request = request.with_header(name, value);
    }
    request
}

fn token(id: &str) -> JwtSvid {
    JwtSvid {
        id: SpiffeId::parse(id).unwrap(),
        audience: vec!["payments".into()],
        expiry: SystemTime::now() + Duration::from_secs(300),
        claims: serde_json::json!({"sub": id, "aud": "payments", "tenant": "acme", "scopes": ["read", "export"], "level": 3})
            .as_object()
            .unwrap()
            .clone(),
    }
}

fn decide(policy: &Policy, id: &str, request: &Request) -> Decision {
    decide_with_token(policy, id, None, request)
}

fn decide_with_token(
    policy: &Policy,
    id: &str,
    token: Option<&JwtSvid>,
    request: &Request,
) -> Decision {
    let attrs = request.attributes();
    let svid = svid(id);
    let workload = Workload {
        namespace: "payments".into(),
        labels: HashMap::from([("app".to_owned(), "api".to_owned())]),
        ..Workload::default()
    };
    policy.evaluate(Input {
        source: Some(&svid),
        token,
        attributes: &attrs,
        workload: &workload,
        now: SystemTime::now(),
        grant: None,
        signals: &crate::signals::Signals::default(),
    })
}

const EXAMPLE: &str = r#"
rules:
  - name: payments-full-access
    description: the payments API may call anything
    effect: allow
    when: source.id == "spiffe://example.org/ns/payments/sa/api"
  - name: exporter-read-only
    effect: allow
    when: >
      source.id == "spiffe://example.org/ns/batch/sa/exporter" &&
      request.method == "GET" && request.path.startsWith("/export/")
  - name: no-admin
    effect: deny
    when: request.path.startsWith("/admin")
"#;

#[test]
fn an_allow_rule_that_matches_allows_and_is_named() {
    let p = policy(EXAMPLE);
    let v = decide(
        &p,
        "spiffe://example.org/ns/batch/sa/exporter",
        &http("GET", "/export/x?a=1", &[]),
    );
    assert!(v.allowed);
    assert_eq!(v.reason, Reason::Allowed);
    assert_eq!(v.rule.as_deref(), Some("exporter-read-only"));
    assert!(v.errors.is_empty());
}

#[test]
fn without_a_matching_allow_rule_the_request_is_denied() {
    let p = policy(EXAMPLE);
    let v = decide(
        &p,
        "spiffe://example.org/ns/batch/sa/exporter",
        &http("POST", "/export/x", &[]),
    );
    assert!(!v.allowed);
    assert_eq!(v.reason, Reason::NoAllowRule);
    assert_eq!(v.rule, None);
}

#[test]
fn a_matching_deny_rule_wins_over_any_allow_rule() {
    let p = policy(EXAMPLE);
    let v = decide(
        &p,
        "spiffe://example.org/ns/payments/sa/api",
        &http("GET", "/admin/users", &[]),
    );
    assert!(!v.allowed);
    assert_eq!(v.reason, Reason::DeniedByRule);
    assert_eq!(v.rule.as_deref(), Some("no-admin"));
}

#[test]
fn a_failing_deny_rule_counts_as_matching() {
    let p = policy(
        r#"
rules:
  - name: everyone
    effect: allow
    when: "true"
  - name: debug-header-denied
    effect: deny
    when: request.headers["x-debug"] == "1"
"#,
    );
    // No x-debug header: the lookup fails, and a failing deny rule denies.
    let v = decide(&p, "spiffe://example.org/a", &http("GET", "/", &[]));
    assert!(!v.allowed);
    assert_eq!(v.reason, Reason::RuleError);
    assert_eq!(v.rule.as_deref(), Some("debug-header-denied"));
    assert_eq!(v.errors.len(), 1);
    assert!(v.errors[0].error.contains("x-debug"), "{:?}", v.errors);
    // With the header present the rule evaluates and does not match.
    let v = decide(
        &p,
        "spiffe://example.org/a",
        &http("GET", "/", &[("x-debug", "0")]),
    );
    assert!(v.allowed);
}

#[test]
fn a_failing_allow_rule_counts_as_not_matching_and_is_reported() {
    let p = policy(
        r#"
rules:
  - name: by-tenant-header
    effect: allow
    when: request.headers["x-tenant"] == "acme"
  - name: by-path
    effect: allow
    when: request.path == "/public"
"#,
    );
    let denied = decide(&p, "spiffe://example.org/a", &http("GET", "/", &[]));
    assert!(!denied.allowed);
    assert_eq!(denied.reason, Reason::NoAllowRule);
    assert_eq!(denied.errors[0].rule.as_ref(), "by-tenant-header");
    let allowed = decide(&p, "spiffe://example.org/a", &http("GET", "/public", &[]));
    assert!(allowed.allowed);
    assert_eq!(allowed.rule.as_deref(), Some("by-path"));
    assert_eq!(allowed.errors.len(), 1, "the failed rule is still reported");
}

#[test]
fn an_ipv4_mapped_address_or_range_in_in_cidr_is_an_error_so_a_deny_rule_fails_closed() {
    // As Kubernetes' CEL `ip()`/`cidr()`: a mapped form is refused, never
    // silently compared as another family (which made these false).
    for when in [
        "'192.168.0.1'.inCidr('::ffff:192.168.0.1' + '/24')",
        "'::ffff:10.0.0.1'.inCidr('10.0.0.0/8')",
        "request.headers['x-real-ip'].inCidr(['10.0.0.0/8'])",
        "inCidr('10.1.2.3', ['fd00::/8', request.headers['x-real-ip'] + '/104'])",
    ] {
        let p = policy(&format!(
            "rules:\n  - name: everyone\n    effect: allow\n    when: \"true\"\n  - name: blocked-range\n    effect: deny\n    when: \"{when}\"\n"
        ));
        let v = decide(
            &p,
            "spiffe://example.org/a",
            &http("GET", "/", &[("x-real-ip", "::ffff:10.9.9.9")]),
        );
        assert!(!v.allowed, "{when}");
        assert_eq!(v.reason, Reason::RuleError, "{when}");
        assert!(
            v.errors[0].error.contains("IPv4-mapped"),
            "{when}: {:?}",
            v.errors
        );
    }
    // A mapped range written as a literal fails the load, where it is.
    for when in [
        "'192.168.0.1'.inCidr('::ffff:192.168.0.1/24')",
        "inCidr('10.1.2.3', ['fd00::/8', '::ffff:10.0.0.0/104'])",
    ] {
        let error = load_error(&format!(
            "rules:\n  - name: blocked-range\n    effect: deny\n    when: \"{when}\"\n"
        ));
        assert!(error.to_string().contains("IPv4-mapped"), "{when}: {error}");
    }
    // isIP is false for one, as in Kubernetes; plain forms still work.
    let p = policy(
        "rules:\n  - name: ok\n    effect: allow\n    when: \"!isIP('::ffff:10.0.0.1') && isIP('10.0.0.1') && isIP('::1') && '10.0.0.1'.inCidr('10.0.0.0/8') && !'10.0.0.1'.inCidr('fd00::/8')\"\n",
    );
    assert!(decide(&p, "spiffe://example.org/a", &http("GET", "/", &[])).allowed);
}

#[test]
fn kubernetes_functions_and_optional_values_read_the_request() {
    let p = policy(
        r#"
rules:
  - name: tenant-or-none
    effect: allow
    when: >
      request.headers[?'x-tenant'].orValue('none') == 'acme' &&
      !request.headers[?'x-absent'].hasValue() &&
      context.?route.orValue('') == 'export' &&
      cidr('10.0.0.0/8').containsIP(request.headers['x-real-ip']) &&
      url(request.headers['x-callback']).getHostname() == 'hooks.example.org' &&
      request.path.find('[0-9]+') == '42' &&
      sets.contains(['read', 'write'], token.claims.scopes.filter(s, s == 'read'))
"#,
    );
    let jwt = token("spiffe://example.org/b");
    let request = |tenant: &str, ip: &str| {
        http(
            "GET",
            "/export/42",
            &[
                ("x-tenant", tenant),
                ("x-real-ip", ip),
                ("x-callback", "https://hooks.example.org:8443/cb?x=1"),
            ],
        )
    };
    let id = "spiffe://example.org/a";
    let allowed = decide_with_token(&p, id, Some(&jwt), &request("acme", "10.1.2.3"));
    assert!(allowed.allowed, "{:?}", allowed.errors);
    let other = decide_with_token(&p, id, Some(&jwt), &request("other", "10.1.2.3"));
    assert_eq!(other.reason, Reason::NoAllowRule);
    // A mapped address from the request is an error, as in Kubernetes.
    let mapped = decide_with_token(&p, id, Some(&jwt), &request("acme", "::ffff:10.1.2.3"));
    assert!(!mapped.allowed);
    assert!(
        mapped.errors[0].error.contains("IPv4-mapped"),
        "{:?}",
        mapped.errors
    );
}

#[test]
fn a_condition_that_is_not_a_bool_at_runtime_fails_closed() {
    let p = policy(
        r#"
rules:
  - name: odd
    effect: deny
    when: dyn(request.path)
"#,
    );
    let v = decide(&p, "spiffe://example.org/a", &http("GET", "/", &[]));
    assert_eq!(v.reason, Reason::RuleError);
    assert!(v.errors[0].error.contains("not a bool"), "{:?}", v.errors);
}

#[test]
fn rules_see_every_documented_attribute() {
    let p = policy(
        r#"
rules:
  - name: all-of-it
    effect: allow
    when: >
      source.trust_domain == "example.org" && source.path == "/ns/batch/sa/x" &&
      source.not_after > now && request.query["page"] == "2 3" && request.query.q == "é" &&
      request.query_all.page == ["2 3"] && request.query_all.tag == ["a", "b"] &&
      request.raw_path == "/export//%61bc" &&
      request.host == "api.example.org" && request.headers["x-a"] == "b" &&
      context.route == "export" && workload.namespace == "payments" &&
      workload.labels.app == "api" && request.time <= now && request.size == 0 &&
      request.path.matches("^/export/[a-z]+$") && size(workload.annotations) == 0
"#,
    );
    let req = http(
        "GET",
        "/export//%61bc?page=2+3&q=%C3%A9&tag=a&tag=b",
        &[("x-a", "b")],
    );
    let v = decide(&p, "spiffe://example.org/ns/batch/sa/x", &req);
    assert_eq!(v.errors, vec![]);
    assert!(v.allowed, "{v:?}");
}

#[test]
fn the_activation_serves_every_field_of_the_schema() {
    // Holds the schema (what the checker accepts) and the activation (what
    // evaluation serves) together: a field in one must be in the other.
    let mut conditions = Vec::new();
    for variable in schema::VARIABLES {
        if let schema::FieldTy::Object(object) = variable.ty {
            for field in object.fields {
                conditions.push(format!("has({}.{})", variable.name, field.name));
            }
        }
    }
    let yaml = format!(
        "rules:\n  - name: every-field\n    effect: allow\n    when: \"{}\"\n",
        conditions.join(" && ")
    );
    let p = policy(&yaml);
    let agent = token("spiffe://partner.org/agents/export-bot");
    let v = decide_with_token(
        &p,
        "spiffe://example.org/a",
        Some(&agent),
        &http("GET", "/", &[]),
    );
    assert!(v.allowed, "{v:?}");
    assert!(conditions.len() >= 25, "{conditions:?}");
}

#[test]
fn rules_read_the_jwt_svid_as_token_beside_the_peer_as_source() {
    let p = policy(
        r#"
rules:
  - name: agent-through-gateway
    effect: allow
    when: >
      source.id == "spiffe://example.org/ns/gw/sa/gateway" &&
      token.trust_domain == "partner.org" && token.path.startsWith("/agents/") &&
      "payments" in token.audience && token.expiry > now &&
      token.claims.tenant == "acme" && "export" in token.claims.scopes &&
      token.claims.level >= 2
"#,
    );
    let agent = token("spiffe://partner.org/agents/export-bot");
    let req = http("GET", "/", &[]);
    let v = decide_with_token(
        &p,
        "spiffe://example.org/ns/gw/sa/gateway",
        Some(&agent),
        &req,
    );
    assert!(v.allowed, "{v:?}");
    // Without a verified token the rule cannot match, and says why.
    let v = decide(&p, "spiffe://example.org/ns/gw/sa/gateway", &req);
    assert!(!v.allowed);
    assert!(
        v.errors[0].error.contains("no verified JWT-SVID"),
        "{:?}",
        v.errors
    );
}

#[test]
fn a_missing_identity_is_an_evaluation_error_not_an_empty_string() {
    let p = policy("rules:\n  - name: r\n    effect: allow\n    when: source.id == ''\n");
    let req = http("GET", "/", &[]);
    let attrs = req.attributes();
    let v = p.evaluate(Input {
        source: None,
        token: None,
        attributes: &attrs,
        workload: &Workload::default(),
        now: SystemTime::now(),
        grant: None,
        signals: &crate::signals::Signals::default(),
    });
    assert!(!v.allowed);
    assert!(
        v.errors[0].error.contains("no verified X.509-SVID"),
        "{:?}",
        v.errors
    );
}

#[test]
fn the_version_is_a_hash_of_the_file() {
    let a = policy(EXAMPLE);
    let b = policy(EXAMPLE);
    let c = policy(&EXAMPLE.replace("GET", "HEAD"));
    assert_eq!(a.version(), b.version());
    assert_ne!(a.version(), c.version());
    assert_eq!(a.version().len(), 16);
    assert_ne!(a.generation(), b.generation());
}

#[test]
fn evaluate_all_evaluates_every_rule() {
    let p = policy(EXAMPLE);
    let req = http("GET", "/admin", &[]);
    let attrs = req.attributes();
    let svid = svid("spiffe://example.org/ns/payments/sa/api");
    let results = p.evaluate_all(Input {
        source: Some(&svid),
        token: None,
        attributes: &attrs,
        workload: &Workload::default(),
        now: SystemTime::now(),
        grant: None,
        signals: &crate::signals::Signals::default(),
    });
    let summary: Vec<(&str, RuleResult)> = results
        .into_iter()
        .map(|(rule, result)| (&*rule.name, result))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("payments-full-access", RuleResult::Match),
            ("exporter-read-only", RuleResult::NoMatch),
            ("no-admin", RuleResult::Match),
        ]
    );
}

#[test]
fn a_rule_naming_an_unknown_variable_fails_the_load_at_its_position() {
    let err = load_error(
        "rules:\n  - name: typo\n    effect: allow\n    when: >\n      source.id == 'a' &&\n      reqest.method == 'GET'\n",
    );
    let d = &err.diagnostics[0];
    assert_eq!(d.rule.as_deref(), Some("typo"));
    assert_eq!((d.line, d.column), (6, 7));
    assert_eq!(
        d.message,
        "undeclared variable 'reqest'; did you mean 'request'?"
    );
    let text = err.to_string();
    assert!(text.contains("policy.yaml:6:7"), "{text}");
    assert!(
        text.ends_with("1 error(s): the rules file was not loaded"),
        "{text}"
    );
}

#[test]
fn a_rule_that_does_not_parse_fails_the_load_with_the_rule_and_position() {
    let err = load_error("rules:\n  - name: broken\n    effect: deny\n    when: source.id ==\n");
    let d = &err.diagnostics[0];
    assert_eq!(d.rule.as_deref(), Some("broken"));
    assert!(
        d.message
            .starts_with("syntax error: mismatched input '<EOF>'"),
        "{}",
        d.message
    );
    assert_eq!(d.line, 4);
}

#[test]
fn every_broken_rule_is_reported_not_just_the_first() {
    let err = load_error(
        "rules:\n  - name: a\n    effect: allow\n    when: sourc.id == 'x'\n  - name: b\n    effect: allow\n    when: request.path.matches('(')\n  - name: c\n    effect: allow\n    when: request.path\n",
    );
    let messages: Vec<(Option<&str>, usize)> = err
        .diagnostics
        .iter()
        .map(|d| (d.rule.as_deref(), d.line))
        .collect();
    assert_eq!(
        messages,
        vec![(Some("a"), 4), (Some("b"), 7), (Some("c"), 10)]
    );
    assert!(
        err.diagnostics[1]
            .message
            .starts_with("invalid regular expression \"(\"")
    );
    assert_eq!(
        err.diagnostics[2].message,
        "a rule's condition must be a bool, but this is a string"
    );
}

#[test]
fn malformed_rules_files_are_refused_with_their_location() {
    let cases = [
        (
            "rules:\n  - name: a\n    efect: allow\n    when: 'true'\n",
            3,
            "unknown field `efect`",
        ),
        (
            "rules:\n  - name: a\n    effect: permit\n    when: 'true'\n",
            3,
            "unknown variant `permit`",
        ),
        (
            "rules:\n  - name: a\n    effect: allow\n",
            3,
            "missing field `when`",
        ),
        ("rules: [\n", 1, "unclosed bracket"),
        ("\u{0}\u{1}\u{2}", 1, "unexpected character"),
        ("rule:\n  - name: a\n", 1, "unknown field `rule`"),
    ];
    for (yaml, line, message) in cases {
        let err = load_error(yaml);
        let d = &err.diagnostics[0];
        assert_eq!(d.line, line, "{yaml:?}: {d}");
        assert!(d.message.contains(message), "{yaml:?}: {}", d.message);
    }
    let empty_name = load_error("rules:\n  - name: ''\n    effect: allow\n    when: 'true'\n");
    assert_eq!(
        empty_name.diagnostics[0].message,
        "the rule has an empty name"
    );
}

#[test]
fn rule_names_are_limited_to_a_header_safe_set() {
    for (name, expected) in [
        ("ok-name_1.v2:a/b", None),
        ("has space", Some("' '")),
        ("line\nbreak", Some("'\\n'")),
        ("caf\u{e9}", Some("'é'")),
        ("", Some("empty name")),
    ] {
        let text = format!(
            "rules:\n  - name: {}\n    effect: allow\n    when: \"true\"\n",
            serde_json::to_string(name).unwrap()
        );
        let result = Policy::parse(&text, Path::new("names.yaml"));
        match expected {
            None => assert!(result.is_ok(), "{name:?}: {:?}", result.err()),
            Some(fragment) => {
                let err = result.unwrap_err().to_string();
                assert!(err.contains(fragment), "{name:?}: {err}");
            }
        }
    }
    let long = "r".repeat(129);
    let text = format!("rules:\n  - name: {long}\n    effect: allow\n    when: \"true\"\n");
    let err = Policy::parse(&text, Path::new("long.yaml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("at most 128"), "{err}");
}

#[test]
fn an_empty_rules_file_loads_with_a_warning_that_it_denies_everything() {
    let policy = Policy::parse("rules: []\n", Path::new("empty.yaml")).unwrap();
    let warnings: Vec<String> = policy.warnings().iter().map(|d| d.to_string()).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("every request is denied"),
        "{warnings:?}"
    );
}

#[test]
fn common_slips_get_one_error_with_a_hint() {
    let text = "rules:\n  - name: a\n    effect: allow\n    when: request.method = \"GET\"\n  - name: b\n    effect: deny\n    when: has(request.headers.x-change-ticket)\n";
    let err = Policy::parse(text, Path::new("slips.yaml")).unwrap_err();
    let a: Vec<String> = err
        .diagnostics
        .iter()
        .filter(|d| d.rule.as_deref() == Some("a"))
        .map(|d| d.message.clone())
        .collect();
    assert_eq!(a.len(), 1, "{a:?}");
    assert!(a[0].contains("'==', not '='"), "{a:?}");
    let b = err
        .diagnostics
        .iter()
        .find(|d| d.rule.as_deref() == Some("b"))
        .unwrap();
    assert!(
        b.message.contains("\"x-change-ticket\" in request.headers"),
        "{}",
        b.message
    );
}

#[test]
fn a_yaml_mistake_names_its_rule_and_a_misindented_key() {
    let text = "rules:\n  - name: first\n    effect: allow\n    when: \"true\"\n  - name: second\n    effect: allow\n   when: \"true\"\n  - name: third\n    effect: deny\n    when: \"false\"\n";
    let err = Policy::parse(text, Path::new("indent.yaml")).unwrap_err();
    let d = &err.diagnostics[0];
    assert_eq!(d.rule.as_deref(), Some("second"), "{d}");
    assert!((5..=7).contains(&d.line), "{d}");
    assert!(d.message.contains("line 7 has `when:`"), "{d}");
}

#[test]
fn warnings_are_reported_even_when_the_file_has_errors() {
    let text = "rules:\n  - name: twice\n    effect: allow\n    when: \"true\"\n  - name: twice\n    effect: allow\n    when: \"false\"\n  - name: broken\n    effect: deny\n    when: request.methd == \"GET\"\n";
    let err = Policy::parse(text, Path::new("mixed.yaml")).unwrap_err();
    let severities: Vec<Severity> = err.diagnostics.iter().map(|d| d.severity).collect();
    assert!(severities.contains(&Severity::Error), "{err}");
    assert!(severities.contains(&Severity::Warning), "{err}");
}

#[test]
fn has_is_false_for_an_absent_identity_never_an_error() {
    let p = policy(
        "rules:\n  - name: guarded\n    effect: deny\n    when: has(source.id) && source.id == 'x'\n  - name: no-token\n    effect: allow\n    when: '!has(token.id) && !has(token.claims) && has(source.address)'\n",
    );
    let req = http("GET", "/", &[]);
    let attrs = req.attributes();
    let v = p.evaluate(Input {
        source: None,
        token: None,
        attributes: &attrs,
        workload: &Workload::default(),
        now: SystemTime::now(),
        grant: None,
        signals: &crate::signals::Signals::default(),
    });
    assert!(v.allowed, "{v:?}");
    assert!(v.errors.is_empty(), "{:?}", v.errors);
    assert_eq!(v.rule.as_deref(), Some("no-token"));
}

#[test]
fn rules_read_the_risk_a_security_tool_reported_and_has_says_when_there_is_none() {
    use crate::signals::{Risk, RiskLevel, Signals};
    let p = policy(
        "rules:\n  - name: r\n    effect: allow\n    when: >\n      has(signals.risk.level) && signals.risk.level == 'high' &&\n      signals.risk.source == 'https://idp.example.com/' &&\n      signals.risk.since == timestamp('2026-11-22T10:00:00Z')\n",
    );
    let req = http("GET", "/", &[]);
    let attrs = req.attributes();
    let svid = svid("spiffe://example.org/a");
    let decide = |signals: &Signals| {
        p.evaluate(Input {
            source: Some(&svid),
            token: None,
            attributes: &attrs,
            workload: &Workload::default(),
            now: SystemTime::now(),
            grant: None,
            signals,
        })
    };
    let none = decide(&Signals::default());
    assert!(!none.allowed && none.errors.is_empty(), "{none:?}");
    let risk = |level| Signals {
        risk: Some(std::sync::Arc::new(Risk {
            level,
            since: crate::time::parse_rfc3339("2026-11-22T10:00:00Z").unwrap(),
            source: "https://idp.example.com/".into(),
            event: "https://schemas.openid.net/secevent/caep/event-type/risk-level-change".into(),
            jti: "r-1".into(),
        })),
        ..Signals::default()
    };
    assert!(decide(&risk(RiskLevel::High)).allowed);
    let medium = decide(&risk(RiskLevel::Medium));
    assert!(!medium.allowed && medium.errors.is_empty(), "{medium:?}");
}
