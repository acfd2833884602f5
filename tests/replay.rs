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

const LEDGER_RULES: &str = r#"rules:
  - name: exporter-reads
    effect: allow
    when: >
      source.id in ["spiffe://example.org/ns/batch/sa/exporter", "spiffe://example.org/ns/batch/sa/canary"] &&
      request.method == "GET" && signals.requests_1m < 100
"#;

const ONCALL_GRANTS: &str = r#"grants:
  - name: inc-9-oncall
    identities: ["spiffe://example.org/ns/ops/sa/oncall"]
    when: request.method == "POST"
    not_before: 2030-01-15T10:00:00Z
    expires: 2030-01-15T12:00:00Z
    reason: "INC-9: break glass"
"#;

const CANARY_REVOKED: &str = r#"revocations:
  - spiffe_id: spiffe://example.org/ns/batch/sa/canary
    reason: "INC-10: canary key leaked"
"#;

fn case(identity: &str, method: &str) -> String {
    format!(
        "name: one\nidentity: {identity}\nrequest: {{method: {method}, path: /ledger}}\ntime: \"2030-01-15T11:00:00Z\"\n"
    )
}

#[test]
fn eval_takes_the_grants_revocations_and_signals_serve_decides_with() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rules = write(d, "rules.yaml", LEDGER_RULES);
    let grants = write(d, "grants.yaml", ONCALL_GRANTS);
    let revocations = write(d, "revocations.yaml", CANARY_REVOKED);
    let busy = write(d, "signals.yaml", "requests_1m: 700\n");
    let oncall = write(
        d,
        "oncall.yaml",
        &case("spiffe://example.org/ns/ops/sa/oncall", "POST"),
    );
    let exporter = write(
        d,
        "exporter.yaml",
        &case("spiffe://example.org/ns/batch/sa/exporter", "GET"),
    );
    let canary = write(
        d,
        "canary.yaml",
        &case("spiffe://example.org/ns/batch/sa/canary", "GET"),
    );
    let eval = |input: &str, extra: &[&str]| {
        let mut args = vec![
            "eval", "--rules", &rules, "--input", input, "--format", "json",
        ];
        args.extend_from_slice(extra);
        let (code, out, err) = run(&args);
        assert_eq!(code, 0, "{out}{err}");
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        (
            json["decision"].as_str().unwrap().to_owned(),
            json["verdict"].to_string(),
        )
    };
    // The on-call request: denied without its grant, granted with it.
    assert_eq!(eval(&oncall, &[]).0, "deny");
    let (decision, verdict) = eval(&oncall, &["--grants", &grants]);
    assert_eq!(decision, "allow", "{verdict}");
    assert!(verdict.contains("inc-9-oncall"), "{verdict}");
    // The exporter: allowed, denied when busy; the canary denied when
    // revoked.
    assert_eq!(eval(&exporter, &[]).0, "allow");
    assert_eq!(eval(&exporter, &["--revocations", &revocations]).0, "allow");
    assert_eq!(eval(&canary, &[]).0, "allow");
    let (decision, verdict) = eval(&canary, &["--revocations", &revocations]);
    assert_eq!(decision, "deny");
    assert!(verdict.contains("revoked"), "{verdict}");
    let (decision, verdict) = eval(&exporter, &["--signals", &busy]);
    assert_eq!(decision, "deny");
    assert!(verdict.contains("no_allow_rule"), "{verdict}");
    // A broken file is an error, never an ignored option.
    let broken = write(d, "broken.yaml", "revocations: [{reason: x}]\n");
    let (code, _, err) = run(&[
        "eval",
        "--rules",
        &rules,
        "--input",
        &exporter,
        "--revocations",
        &broken,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("revocations file does not load"), "{err}");
}

#[test]
fn suites_take_revocations_and_per_case_signals() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "rules.yaml", LEDGER_RULES);
    write(d, "grants.yaml", ONCALL_GRANTS);
    write(d, "revocations.yaml", CANARY_REVOKED);
    let suite = write(
        d,
        "ledger_test.yaml",
        r#"rules: rules.yaml
grants: grants.yaml
revocations: revocations.yaml
defaults:
  time: "2030-01-15T11:00:00Z"
  request: {path: /ledger}
cases:
  - name: the revoked canary is denied before any rule
    identity: spiffe://example.org/ns/batch/sa/canary
    expect: {decision: deny, reason: revoked}
  - name: on-call is granted
    identity: spiffe://example.org/ns/ops/sa/oncall
    request: {method: POST}
    expect: {decision: allow, reason: granted, grant: inc-9-oncall}
  - name: a quiet exporter
    identity: spiffe://example.org/ns/batch/sa/exporter
    signals: {requests_1m: 7}
    expect: {decision: allow, rule: exporter-reads}
  - name: a busy exporter
    identity: spiffe://example.org/ns/batch/sa/exporter
    signals: {requests_1m: 700}
    expect: {decision: deny, reason: no_allow_rule}
"#,
    );
    let (code, out, err) = run(&["test", &suite]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("4 passed, 0 failed"), "{out}");
    // Without the revocations file, the first case fails: it is in force.
    let text = std::fs::read_to_string(&suite).unwrap();
    std::fs::write(&suite, text.replace("revocations: revocations.yaml\n", "")).unwrap();
    let (code, out, _) = run(&["test", &suite]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("3 passed, 1 failed"), "{out}");
}
