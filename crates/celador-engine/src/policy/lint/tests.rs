use std::path::Path;

use crate::policy::{Policy, Severity};

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
fn an_allow_rule_overridden_by_a_deny_rule_is_reported() {
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
    // matches overrides everything.
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

/// The messages of the warnings of one rule file, by rule.
fn messages(rules: &[String]) -> Vec<(String, String)> {
    warnings(&file(rules))
        .into_iter()
        .map(|(r, _, _, m)| (r, m))
        .collect()
}

#[test]
fn numeric_ranges_that_leave_no_value_or_every_value_are_reported() {
    let w = messages(&[
        rule("empty", "deny", "request.size < 0 && request.size > 10"),
        rule("touching", "allow", "request.size < 5 && 5 <= request.size"),
        rule(
            "equal-outside",
            "allow",
            "request.size == 3 && request.size > 4",
        ),
        rule(
            "everything",
            "allow",
            "request.path == \"/a\" && (request.size < 10 || request.size >= 5)",
        ),
        rule(
            "fine",
            "allow",
            "request.size >= 0 && request.size <= 10 && source.port > 1024",
        ),
        rule("fine-too", "allow", "request.size < 5 || request.size > 5"),
    ]);
    let rules: Vec<&str> = w.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        rules,
        ["empty", "touching", "equal-outside", "everything"],
        "{w:?}"
    );
    assert!(
        w[0].1
            .contains("`request.size < 0` contradicts `request.size > 10`"),
        "{}",
        w[0].1
    );
    assert!(
        w[3].1.contains(
            "`request.size < 10 || request.size >= 5` is always true, so it adds nothing"
        ),
        "{}",
        w[3].1
    );
}

#[test]
fn literals_a_field_never_holds_are_reported() {
    let w = messages(&[
        rule("method", "allow", "request.method == \"get\""),
        rule("methods", "allow", "request.method in [\"get\", \"head\"]"),
        rule("path", "allow", "request.path == \"export\""),
        rule("prefix", "allow", "request.path.startsWith(\"api/\")"),
        rule("scheme", "allow", "request.scheme == \"HTTPS\""),
        rule("header", "allow", "\"X-Tenant\" in request.headers"),
        rule(
            "header-read",
            "allow",
            "request.headers[\"X-Tenant\"] == \"a\" && request.method == \"GET\"",
        ),
        rule(
            "fine",
            "allow",
            "request.method in [\"GET\", \"head\"] && request.path.startsWith(\"/api/\")",
        ),
    ]);
    let find = |name: &str| {
        w.iter()
            .find(|(r, _)| r == name)
            .map(|(_, m)| m.as_str())
            .unwrap_or_else(|| panic!("no warning for {name}: {w:?}"))
    };
    assert!(
        find("method").contains(
            "request.method is uppercase, as sent: \"get\" never matches (write \"GET\")"
        )
    );
    assert!(find("methods").contains("never matches"));
    assert!(find("path").contains("request.path always starts with '/'"));
    assert!(find("prefix").contains("it never starts with \"api/\""));
    assert!(find("scheme").contains("write \"https\""));
    assert!(find("header").contains("write \"x-tenant\""));
    assert!(find("header-read").contains("header names are lowercase"));
    assert!(
        !w.iter().any(|(r, _)| r == "fine"),
        "one possible element is enough: {w:?}"
    );
}

#[test]
fn branches_that_decide_nothing_are_reported_where_they_are() {
    let w = warnings(&file(&[rule(
        "branch",
        "allow",
        "request.path == \"/x\" || (request.method == \"GET\" && request.method == \"POST\")",
    )]));
    assert_eq!(w.len(), 1, "{w:?}");
    let (_, line, column, message) = &w[0];
    assert_eq!((*line, *column), (4, 37));
    assert_eq!(
        message,
        "the alternative `request.method == \"GET\" && request.method == \"POST\"` can never be true (`request.method == \"GET\"` contradicts `request.method == \"POST\"`), so only the others can match"
    );
}

#[test]
fn a_deny_rule_that_overrides_every_allow_rule_is_reported() {
    let w = messages(&[
        rule("reads-closed", "deny", "request.method == \"GET\""),
        rule(
            "a",
            "allow",
            "request.method == \"GET\" && request.path == \"/a\"",
        ),
        rule(
            "b",
            "allow",
            "request.path == \"/b\" && request.method == \"GET\"",
        ),
    ]);
    assert!(
        w.contains(&(
            "reads-closed".into(),
            "this deny rule overrides every allow rule ('a', 'b'): the rules can only deny".into()
        )),
        "{w:?}"
    );
    // One allow rule that escapes it: no such warning.
    let w = messages(&[
        rule("reads-closed", "deny", "request.method == \"GET\""),
        rule(
            "a",
            "allow",
            "request.method == \"GET\" && request.path == \"/a\"",
        ),
        rule("c", "allow", "request.method == \"POST\""),
    ]);
    assert!(
        !w.iter().any(|(_, m)| m.contains("every allow rule")),
        "{w:?}"
    );
}

#[test]
fn rules_reading_a_risk_level_without_testing_for_it_are_reported() {
    let w = warnings(&file(&[
        rule(
            "payments-writes",
            "deny",
            "request.method != \"GET\" && signals.risk.level == \"high\"",
        ),
        rule("low-risk", "allow", "signals.risk.level == \"low\""),
        rule(
            "object-only",
            "deny",
            "has(signals.risk) && signals.risk.source == \"https://idp.example.com/\"",
        ),
    ]));
    let found: Vec<(&str, usize, usize)> =
        w.iter().map(|(r, l, c, _)| (r.as_str(), *l, *c)).collect();
    assert_eq!(
        found,
        [
            ("payments-writes", 4, 39),
            ("low-risk", 7, 12),
            ("object-only", 10, 33)
        ]
    );
    assert!(
        w[0].3.contains("reads signals.risk.level")
            && w[0].3.contains("denies every caller without a risk level")
            && w[0].3.contains("`has(signals.risk.level) && ...`"),
        "{}",
        w[0].3
    );
    assert!(w[1].3.contains("does not match"), "{}", w[1].3);
    // Tested, for any of its fields, it is fine.
    let w = warnings(&file(&[
        rule(
            "payments-writes",
            "deny",
            "request.method != \"GET\" && has(signals.risk.level) && signals.risk.level == \"high\"",
        ),
        rule(
            "recent",
            "deny",
            "has(signals.risk.since) && signals.risk.since > now - duration(\"1h\") && signals.risk.level != \"low\"",
        ),
        rule("anyone", "allow", "signals.requests_1m < 600"),
    ]));
    assert_eq!(w, []);
}
