//! The offline tools see everything `celador serve` sees: `eval`, `test`
//! and `replay` given the request id, grants, revocations and signals a
//! decision in production depends on, and `replay` re-deciding recorded
//! audit records with a candidate policy.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::path::Path;

use support::celador::run;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn request_id_is_the_x_request_id_in_suites_and_eval() {
    let dir = tempfile::tempdir().unwrap();
    let rules = write(
        dir.path(),
        "rules.yaml",
        "rules:\n  - name: traced\n    effect: allow\n    when: request.id == \"app-42\"\n",
    );
    let suite = write(
        dir.path(),
        "suite_test.yaml",
        "rules: rules.yaml\ncases:\n  - name: with the id\n    identity: spiffe://example.org/ns/a/sa/b\n    request: {method: GET, path: /, id: app-42}\n    expect: {decision: allow, rule: traced}\n  - name: with another id\n    identity: spiffe://example.org/ns/a/sa/b\n    request: {method: GET, path: /, id: app-43}\n    expect: {decision: deny}\n",
    );
    let (code, out, err) = run(&["test", &suite]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 passed, 0 failed"), "{out}");

    // A CheckRequest: Envoy's stream id is not the request id.
    let check = serde_json::json!({"attributes": {"request": {"http": {
        "id": "app-42", "method": "GET", "path": "/",
        "headers": {"x-request-id": "app-42"}}}}});
    let input = write(dir.path(), "check.json", &check.to_string());
    let (code, out, err) = run(&["eval", "--rules", &rules, "--input", &input]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("allow by rule 'traced'"), "{out}");
    let mut other = check.clone();
    other["attributes"]["request"]["http"]["headers"]["x-request-id"] = "app-43".into();
    let input = write(dir.path(), "check.json", &other.to_string());
    let (_, out, _) = run(&["eval", "--rules", &rules, "--input", &input]);
    assert!(out.contains("deny"), "{out}");
}
