#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;
use std::time::SystemTime;

use super::*;
use crate::attributes::Request;
use crate::policy::{Input, Policy, PolicyError};
use crate::workload::Workload;

/// A runtime worker's stack (tokio's default), where checks are evaluated.
const WORKER_STACK: usize = 2 << 20;

fn yaml(rules: &[(&str, &str, &str)]) -> String {
    let mut text = String::from("rules:\n");
    for (name, effect, when) in rules {
        text.push_str(&format!(
            "  - name: {name}\n    effect: {effect}\n    when: '{when}'\n"
        ));
    }
    text
}

/// Loads `text` and, if it loads, decides one request, on a thread with
/// a worker's stack: an overflow aborts the test binary.
fn on_worker_stack(text: String) -> Result<(bool, Option<String>), PolicyError> {
    std::thread::Builder::new()
        .stack_size(WORKER_STACK)
        .spawn(move || {
            let policy = Policy::parse(&text, Path::new("policy.yaml"))?;
            let request = Request::new("GET", "/");
            let attributes = request.attributes();
            let decision = policy.evaluate(Input {
                source: None,
                token: None,
                attributes: &attributes,
                workload: &Workload::default(),
                now: SystemTime::now(),
                grant: None,
                signals: &crate::signals::Signals::default(),
            });
            assert!(decision.errors.is_empty(), "{:?}", decision.errors);
            Ok((
                decision.allowed,
                decision.rule.as_deref().map(str::to_owned),
            ))
        })
        .unwrap()
        .join()
        .unwrap()
}

/// `n` two-variable comprehensions nested around `inner`.
fn two_variable(n: usize, inner: &str) -> String {
    format!("{}{inner}{}", "[1].all(i, v, ".repeat(n), ")".repeat(n))
}

/// `n` one-variable comprehensions nested around `inner`.
fn one_variable(n: usize, inner: &str) -> String {
    let open: String = (0..n).map(|i| format!("[1].all(x{i}, ")).collect();
    format!("{open}{inner}{}", ")".repeat(n))
}

/// `1 + 1 + ... == n + 1`: a left-deep tree `n + 2` nodes deep.
fn sum(n: usize) -> String {
    format!("{}1 == {}", "1 + ".repeat(n), n + 1)
}

fn refused(text: String) -> String {
    let err = on_worker_stack(text).expect_err("the rule should be refused");
    assert_eq!(err.diagnostics.len(), 1, "{err}");
    assert_eq!(err.diagnostics[0].rule.as_deref(), Some("deep"));
    err.diagnostics[0].message.clone()
}

#[test]
fn rules_at_the_depth_limits_load_and_evaluate_correctly_on_a_worker_stack() {
    let deepest = two_variable(MAX_COMPREHENSIONS, "v == 1 && i == 0");
    let wrong = two_variable(MAX_COMPREHENSIONS, "v == 2");
    let text = yaml(&[("never", "allow", &wrong), ("deep", "allow", &deepest)]);
    assert_eq!(on_worker_stack(text).unwrap(), (true, Some("deep".into())));
    let text = yaml(&[(
        "deep",
        "allow",
        &one_variable(MAX_COMPREHENSIONS, "x0 == 1"),
    )]);
    assert_eq!(on_worker_stack(text).unwrap(), (true, Some("deep".into())));
    // The deepest tree the limit lets through, and one that is false.
    let text = yaml(&[
        ("never", "allow", &sum(MAX_DEPTH - 2).replace("==", "!=")),
        ("deep", "allow", &sum(MAX_DEPTH - 2)),
    ]);
    assert_eq!(on_worker_stack(text).unwrap(), (true, Some("deep".into())));
}

#[test]
fn a_comprehension_nested_one_too_deep_is_refused_at_load() {
    let expected = format!(
        "comprehensions nested {} deep; at most {MAX_COMPREHENSIONS}",
        MAX_COMPREHENSIONS + 1
    );
    let deep = two_variable(MAX_COMPREHENSIONS + 1, "true");
    assert_eq!(refused(yaml(&[("deep", "allow", &deep)])), expected);
    let deep = one_variable(MAX_COMPREHENSIONS + 1, "true");
    assert_eq!(refused(yaml(&[("deep", "deny", &deep)])), expected);
    // The crash the limit prevents: 15 two-variable levels overflowed a
    // worker's stack while evaluating (45 comprehensions once expanded).
    let deep = two_variable(15, "true");
    assert!(
        refused(yaml(&[("deep", "allow", &deep)])).starts_with("comprehensions nested 15 deep")
    );
}

#[test]
fn a_tree_one_node_too_deep_is_refused_at_load() {
    let message = refused(yaml(&[("deep", "allow", &sum(MAX_DEPTH - 1))]));
    assert!(
        message.starts_with(&format!(
            "the condition nests {} deep once its macros are expanded; at most {MAX_DEPTH}",
            MAX_DEPTH + 1
        )),
        "{message}"
    );
    // 200 terms: parsed fine, but evaluating it overflowed a worker's stack.
    assert!(refused(yaml(&[("deep", "allow", &sum(200))])).contains("nests 202 deep"));
}

#[test]
fn very_deeply_nested_text_is_refused_before_parsing_on_a_worker_stack() {
    let expected = format!("brackets nested more than {MAX_NESTING} deep");
    let texts = [
        format!("{}true{}", "(".repeat(200), ")".repeat(200)),
        format!("size({}1{}) == 1", "[".repeat(200), "]".repeat(200)),
        one_variable(200, "true"),
        two_variable(200, "true"),
    ];
    for when in texts {
        let message = refused(yaml(&[("deep", "allow", &when)]));
        assert!(message.starts_with(&expected), "{message}");
    }
    // At the limit the parser runs (on the compile thread's own stack).
    let at_limit = format!("{}true{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
    assert_eq!(too_deep_at(&at_limit), None);
    let text = yaml(&[("deep", "allow", &at_limit)]);
    assert_eq!(on_worker_stack(text).unwrap(), (true, Some("deep".into())));
}

#[test]
fn brackets_in_string_literals_do_not_count() {
    let deep = "(".repeat(MAX_NESTING + 1);
    assert_eq!(too_deep_at(&format!("\"{deep}\" != \"\"")), None);
    assert_eq!(too_deep_at(&format!("'\\'{deep}' != ''")), None);
    assert_eq!(too_deep_at(&format!("\"\"\"{deep}\"\"\" != ''")), None);
    assert_eq!(too_deep_at(&format!("r'{deep}' != ''")), None);
    // A string before deep brackets ends where the parser ends it.
    assert_eq!(too_deep_at(&format!("'a' + {deep}")), Some(6 + MAX_NESTING));
}
