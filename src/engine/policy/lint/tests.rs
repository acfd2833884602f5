use std::path::Path;

use crate::engine::policy::{Policy, Severity};

/// The warnings of a rules file, as (rule, line, column, message).
fn warnings(yaml: &str) -> Vec<(String, usize, usize, String)> {
    let policy = Policy::parse(yaml, Path::new("p.yaml")).unwrap_or_else(|e| panic!("{e}"));
    policy
        .warnings()
        .iter()
        .map(|d| {
            assert_eq!(d.severity, Severity::Warning);
            (
                d.rule.clone().unwrap_or_default(),
                d.line,
                d.column,
                d.message.clone(),
            )
        })
        .collect()
}

fn rule(name: &str, effect: &str, when: &str) -> String {
    format!("  - name: {name}\n    effect: {effect}\n    when: '{when}'\n")
}

fn file(rules: &[String]) -> String {
    format!("rules:\n{}", rules.concat())
}

#[test]
fn duplicate_names_are_reported_on_the_second_one() {
    let w = warnings(&file(&[
        rule("a", "allow", "source.id == \"x\""),
        rule("a", "allow", "source.id == \"y\""),
    ]));
    assert_eq!(
        w,
        [(
            "a".into(),
            5,
            11,
            "a rule named 'a' is already defined on line 2; decisions and audit records cannot tell them apart".into()
        )]
    );
}

#[test]
fn conditions_that_can_never_be_true_are_reported() {
    let cases = [
        (
            "false",
            "the condition is always false, so the rule never matches",
        ),
        (
            "1 == 2",
            "the condition is always false, so the rule never matches",
        ),
        (
            "\"a\" in [\"b\", \"c\"]",
            "the condition is always false, so the rule never matches",
        ),
        (
            "request.method == \"GET\" && request.method == \"POST\"",
            "the condition can never be true (`request.method == \"GET\"` contradicts `request.method == \"POST\"`), so the rule never matches",
        ),
        (
            "request.method == \"GET\" && source.id != \"\" && request.method != \"GET\"",
            "the condition can never be true (`request.method == \"GET\"` contradicts `request.method != \"GET\"`), so the rule never matches",
        ),
        (
            "request.path.startsWith(\"/a\") && !request.path.startsWith(\"/a\")",
            "the condition can never be true (`request.path.startsWith(\"/a\")` contradicts `!request.path.startsWith(\"/a\")`), so the rule never matches",
        ),
        (
            "false || (request.size == 1 && request.size == 2)",
            "the condition can never be true (no alternative of it can), so the rule never matches",
        ),
    ];
    for (when, message) in cases {
        let w = warnings(&file(&[rule("r", "allow", when)]));
        assert_eq!(w.len(), 1, "{when}: {w:?}");
        assert_eq!(w[0].3, message, "{when}");
        assert_eq!(
            (w[0].1, w[0].2),
            (4, 12),
            "{when}: at the start of the condition"
        );
    }
}

#[test]
fn conditions_that_always_hold_are_reported_with_their_effect() {
    let cases = [
        (
            "allow",
            "true",
            "the condition is always true, so it allows every request that no deny rule denies",
        ),
        (
            "deny",
            "1 == 1",
            "the condition is always true, so it denies every request",
        ),
        (
            "deny",
            "request.path == request.path",
            "the condition is always true, so it denies every request",
        ),
        (
            "allow",
            "request.method != \"GET\" || request.method != \"HEAD\"",
            "the condition is always true, so it allows every request that no deny rule denies",
        ),
        (
            "allow",
            "has(request.headers.a) || !has(request.headers.a)",
            "the condition is always true, so it allows every request that no deny rule denies",
        ),
    ];
    for (effect, when, message) in cases {
        let w = warnings(&file(&[rule("r", effect, when)]));
        let messages: Vec<&str> = w.iter().map(|w| w.3.as_str()).collect();
        assert!(messages.contains(&message), "{when}: {messages:?}");
    }
}

#[test]
fn an_allow_rule_shadowed_by_a_deny_rule_is_reported() {
    let w = warnings(&file(&[
        rule("no-admin", "deny", "request.path.startsWith(\"/admin/\")"),
        rule(
            "ops",
            "allow",
            "source.id == \"spiffe://example.org/ops\" && request.path.startsWith(\"/admin/\")",
        ),
        rule("ok", "allow", "source.id == \"spiffe://example.org/ops\""),
    ]));
    assert_eq!(
        w,
        [(
            "ops".into(),
            7,
            12,
            "this allow rule never allows: whenever it matches, deny rule 'no-admin' matches too (`request.path.startsWith(\"/admin/\")`)".into()
        )]
    );
    // One alternative of a deny rule is enough; a deny rule that always
    // matches shadows everything.
    let w = warnings(&file(&[
        rule(
            "writes",
            "deny",
            "request.method == \"DELETE\" || request.method == \"PUT\"",
        ),
        rule(
            "put",
            "allow",
            "request.method == \"PUT\" && source.trust_domain == \"example.org\"",
        ),
    ]));
    assert_eq!(
        w[0].3,
        "this allow rule never allows: whenever it matches, deny rule 'writes' matches too (`request.method == \"PUT\"`)"
    );
    let w = warnings(&file(&[
        rule("all", "deny", "true"),
        rule("any", "allow", "source.id != \"\""),
    ]));
    assert_eq!(
        w.last().unwrap().3,
        "this allow rule never allows: whenever it matches, deny rule 'all' matches too (`true`)"
    );
}

#[test]
fn a_deny_rule_reading_an_absent_map_key_is_reported_unless_guarded() {
    let w = warnings(&file(&[rule(
        "debug",
        "deny",
        "request.headers[\"x-debug\"] == \"1\"",
    )]));
    assert_eq!(
        w,
        [(
            "debug".into(),
            4,
            27,
            "reading request.headers[\"x-debug\"] fails when the key is absent, and a deny rule that fails denies; test for it first: `\"x-debug\" in request.headers && ...`".into()
        )]
    );
    let w = warnings(&file(&[rule(
        "route",
        "deny",
        "context.route == \"internal\"",
    )]));
    assert_eq!(
        w[0].3,
        "reading context[\"route\"] fails when the key is absent, and a deny rule that fails denies; test for it first: `\"route\" in context && ...`"
    );
    for guarded in [
        "\"x-debug\" in request.headers && request.headers[\"x-debug\"] == \"1\"",
        "has(request.headers.debug) && request.headers.debug == \"1\"",
    ] {
        assert_eq!(
            warnings(&file(&[rule("debug", "deny", guarded)])),
            [],
            "{guarded}"
        );
    }
    // An allow rule that fails just does not match: nothing to warn about.
    assert_eq!(
        warnings(&file(&[rule(
            "tenant",
            "allow",
            "request.headers[\"x-tenant\"] == \"acme\""
        )])),
        []
    );
}

#[test]
fn ordinary_policies_have_no_warnings() {
    let w = warnings(&file(&[
        rule(
            "payments",
            "allow",
            "source.id == \"spiffe://example.org/ns/payments/sa/api\"",
        ),
        rule(
            "exporter",
            "allow",
            "source.id == \"spiffe://example.org/ns/batch/sa/exporter\" && request.method == \"GET\"",
        ),
        rule(
            "admin",
            "deny",
            "request.path.startsWith(\"/admin/\") && (!has(source.id) || !(source.id in [\"spiffe://example.org/ops\"]))",
        ),
        rule(
            "time",
            "allow",
            "now.getHours(\"UTC\") < 18 && request.method in [\"GET\", \"HEAD\"]",
        ),
    ]));
    assert_eq!(w, []);
}

#[test]
fn deny_rules_reading_an_identity_that_may_be_absent_are_reported_unless_tested() {
    let w = warnings(&file(&[
        rule(
            "agents",
            "deny",
            "token.path.startsWith(\"/agents/\") && request.method == \"DELETE\"",
        ),
        rule(
            "legacy",
            "deny",
            "request.method == \"GET\" && source.id == \"spiffe://example.org/legacy\"",
        ),
    ]));
    let found: Vec<(&str, usize, usize)> =
        w.iter().map(|(r, l, c, _)| (r.as_str(), *l, *c)).collect();
    assert_eq!(found, [("agents", 4, 12), ("legacy", 7, 39)]);
    assert!(
        w[0].3
            .contains("reads token.path, which fails for a request without a verified JWT-SVID"),
        "{}",
        w[0].3
    );
    assert!(
        w[0].3
            .contains("every caller presenting only an X.509-SVID is denied"),
        "{}",
        w[0].3
    );
    assert!(
        w[1].3.contains("reads source.id") && w[1].3.contains("only a JWT-SVID"),
        "{}",
        w[1].3
    );
    // Tested either way, the source's address and port, and allow rules
    // (which just do not match) are fine.
    let w = warnings(&file(&[
        rule(
            "agents",
            "deny",
            "has(token.id) && token.path.startsWith(\"/agents/\")",
        ),
        rule(
            "on-purpose",
            "deny",
            "!has(source.id) || source.trust_domain != \"example.org\"",
        ),
        rule("address", "deny", "source.address.inCidr([\"10.0.0.0/8\"])"),
        rule("allow", "allow", "token.path.startsWith(\"/agents/\")"),
    ]));
    assert_eq!(w, []);
}
