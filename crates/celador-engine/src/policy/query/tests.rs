#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;
use std::time::SystemTime;

use crate::Reason;
use crate::attributes::Request;
use crate::policy::{Input, Policy};
use crate::workload::Workload;

/// The decision of `rules` (YAML list items) on `GET path`.
fn decide(rules: &str, path: &str) -> crate::Decision {
    let policy = Policy::parse(&format!("rules:\n{rules}"), Path::new("p.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let request = Request::new("GET", path);
    let attrs = request.attributes();
    policy.evaluate(Input {
        source: None,
        token: None,
        attributes: &attrs,
        workload: &Workload::default(),
        now: SystemTime::now(),
        grant: None,
        signals: &crate::signals::Signals::default(),
    })
}

const DENY_DEBUG: &str = "  - name: open\n    effect: allow\n    when: 'true'\n  - name: no-debug\n    effect: deny\n    when: request.query.debug == \"true\"\n";

#[test]
fn a_repeated_parameter_read_through_query_fails_so_a_deny_rule_matches() {
    // The bypass: frameworks taking the last value see `true`.
    let d = decide(DENY_DEBUG, "/a?debug=false&debug=true");
    assert!(!d.allowed);
    assert_eq!(
        (d.reason, d.rule.as_deref()),
        (Reason::RuleError, Some("no-debug"))
    );
    assert!(
        d.errors[0].error.contains("\"debug\" is given 2 times"),
        "{:?}",
        d.errors
    );
    // Repeated with the same spelling after decoding counts too.
    let d = decide(DENY_DEBUG, "/a?debug=false&%64ebug=true");
    assert_eq!(d.reason, Reason::RuleError);
    // Once, it is a plain read either way.
    assert!(decide(DENY_DEBUG, "/a?debug=false").allowed);
    assert_eq!(
        decide(DENY_DEBUG, "/a?debug=true").reason,
        Reason::DeniedByRule
    );
}

#[test]
fn an_allow_rule_reading_a_repeated_parameter_does_not_match() {
    let allow = "  - name: page-one\n    effect: allow\n    when: request.query.page == \"1\"\n";
    assert!(decide(allow, "/a?page=1").allowed);
    let d = decide(allow, "/a?page=1&page=2");
    assert_eq!(d.reason, Reason::NoAllowRule);
    assert_eq!(d.errors.len(), 1, "{:?}", d.errors);
    // Every way of reading the value fails, but not the names.
    for when in [
        "request.query[\"page\"] == \"1\"",
        "has(request.query.page)",
        "request.query.all(k, request.query[k] == \"1\")",
    ] {
        let rule = format!("  - name: r\n    effect: allow\n    when: '{when}'\n");
        let d = decide(&rule, "/a?page=1&page=2&x=1");
        assert!(!d.allowed && d.errors.len() == 1, "{when}: {d:?}");
    }
    for when in [
        "\"page\" in request.query",
        "size(request.query) == 2",
        "request.query.exists(k, k == \"page\")",
        "request.query.x == \"1\"",
        "has(request.query.x)",
    ] {
        let rule = format!("  - name: r\n    effect: allow\n    when: '{when}'\n");
        let d = decide(&rule, "/a?page=1&page=2&x=1");
        assert!(d.allowed, "{when}: {d:?}");
    }
}

#[test]
fn query_all_gives_every_value_in_order() {
    let rules = "  - name: r\n    effect: allow\n    when: 'request.query_all.debug == [\"false\", \"true\"] && request.query_all.x == [\"a b\"] && !(\"y\" in request.query_all)'\n";
    assert!(decide(rules, "/a?debug=false&x=a+b&debug=true").allowed);
    assert!(!decide(rules, "/a?debug=true&x=a+b&debug=false").allowed);
    let deny_any = "  - name: open\n    effect: allow\n    when: 'true'\n  - name: no-debug\n    effect: deny\n    when: '\"debug\" in request.query_all && request.query_all.debug.exists(v, v == \"true\")'\n";
    assert_eq!(
        decide(deny_any, "/a?debug=false&debug=true").reason,
        Reason::DeniedByRule
    );
    assert!(decide(deny_any, "/a?debug=false").allowed);
    assert!(decide(deny_any, "/a").allowed);
}

#[test]
fn a_query_without_repetition_is_a_plain_map() {
    let rules = "  - name: r\n    effect: allow\n    when: 'request.query == {\"a\": \"1\", \"b\": \"\"} && {\"a\": \"1\", \"b\": \"\"} == request.query'\n";
    assert!(decide(rules, "/p?a=1&b").allowed);
    // With a repetition the whole map is never equal to anything.
    assert!(!decide(rules, "/p?a=1&b&b").allowed);
}
