//! The rule author's tools as a person uses them: `celador check`, `celador
//! test` and `celador eval`, the generated policy reference and the JSON
//! Schemas for editors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::celador::run;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn example_rules() -> Vec<PathBuf> {
    let mut files = vec![root().join("examples/policy.yaml")];
    for dir in [
        "payments",
        "ci-secrets",
        "agent-export",
        "admin",
        "jit-grant",
        "payments-risk",
    ] {
        files.push(root().join(format!("examples/policies/{dir}/{dir}.yaml")));
    }
    files
}

fn args(paths: &[PathBuf]) -> Vec<String> {
    paths.iter().map(|p| p.display().to_string()).collect()
}

fn check(files: &[&str], flags: &[&str]) -> (i32, String) {
    let mut argv = vec!["check"];
    argv.extend_from_slice(flags);
    argv.extend_from_slice(files);
    let (code, stdout, stderr) = run(&argv);
    (code, format!("{stdout}{stderr}"))
}

/// Asserts that `output` has, for each `(rule, line, column, message)`, a
/// block headed `SEVERITY: rule 'RULE': MESSAGE` pointing at FILE:LINE:COLUMN.
fn assert_reported(output: &str, severity: &str, file: &Path, expected: &[(&str, u32, u32, &str)]) {
    let f = file.display();
    for (rule, line, column, message) in expected {
        let head = format!("{severity}: rule '{rule}': {message}");
        let at = format!(" --> {f}:{line}:{column}");
        let found = output
            .split("\n\n")
            .any(|block| block.starts_with(&head) && block.contains(&at));
        assert!(found, "missing `{head}` at {line}:{column} in:\n{output}");
    }
}

#[test]
fn check_accepts_the_shipped_policies_without_a_warning() {
    let files = args(&example_rules());
    let refs: Vec<&str> = files.iter().map(String::as_str).collect();
    let (code, output) = check(&refs, &["--deny-warnings"]);
    assert_eq!(code, 0, "{output}");
    assert!(
        output.ends_with("7 file(s) checked: 0 error(s), 0 warning(s)\n"),
        "{output}"
    );
}

const BROKEN: &str = r#"rules:
  - name: syntax
    effect: allow
    when: source.id ==
  - name: variable
    effect: allow
    when: sorce.id == "a"
  - name: field
    effect: allow
    when: request.methd == "GET"
  - name: method
    effect: allow
    when: request.path.startswith("/a")
  - name: function
    effect: allow
    when: lenght(request.path) > 2
  - name: arguments
    effect: allow
    when: request.path.startsWith(1)
  - name: call-style
    effect: allow
    when: startsWith(request.path, "/a")
  - name: arithmetic
    effect: allow
    when: request.size + "a" == "b"
  - name: always-false
    effect: deny
    when: source.id == 3
  - name: not-bool
    effect: allow
    when: request.path
  - name: regex
    effect: allow
    when: request.path.matches("(unclosed")
  - name: ""
    effect: allow
    when: "true"
"#;

#[test]
fn check_reports_every_error_class_with_file_rule_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yaml");
    std::fs::write(&file, BROKEN).unwrap();
    let (code, output) = check(&[file.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{output}");
    let expected = [
        (
            "syntax",
            4,
            23,
            "syntax error: mismatched input '<EOF>' expecting",
        ),
        (
            "variable",
            7,
            11,
            "undeclared variable 'sorce'; did you mean 'source'?",
        ),
        (
            "field",
            10,
            19,
            "'request' has no field 'methd'; did you mean 'method'?",
        ),
        (
            "method",
            13,
            24,
            "undeclared method 'startswith'; did you mean 'startsWith'?",
        ),
        ("function", 16, 11, "undeclared function 'lenght'"),
        (
            "arguments",
            19,
            24,
            "'startsWith' cannot be called as string.startsWith(int); it takes string.startsWith(string) -> bool",
        ),
        (
            "call-style",
            22,
            11,
            "'startsWith' is a method, called as x.startsWith(...)",
        ),
        (
            "arithmetic",
            25,
            24,
            "'+' cannot be applied to int and string",
        ),
        (
            "always-false",
            28,
            21,
            "'==' compares string with int, which is always false",
        ),
        (
            "not-bool",
            31,
            11,
            "a rule's condition must be a bool, but this is a string",
        ),
        (
            "regex",
            34,
            32,
            "invalid regular expression \"(unclosed\": regex parse error",
        ),
        ("", 35, 11, "the rule has an empty name"),
    ];
    assert_reported(&output, "error", &file, &expected);
    assert!(
        output.contains("1 file(s) checked: 12 error(s), 0 warning(s)"),
        "{output}"
    );
}

#[test]
fn check_reports_yaml_mistakes_at_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "rules:\n  - name: a\n    efect: allow\n    when: 'true'\n",
            "p.yaml:3:5",
            "unknown field `efect`, expected one of name, description, effect, when",
        ),
        (
            "rules:\n  - name: a\n    effect: permit\n    when: 'true'\n",
            "p.yaml:3:13",
            "unknown variant `permit`, expected one of allow, deny",
        ),
        (
            "rules:\n  - name: a\n    effect: allow\n",
            "p.yaml:3:5",
            "missing field `when`",
        ),
    ];
    for (yaml, at, message) in cases {
        let file = dir.path().join("p.yaml");
        std::fs::write(&file, yaml).unwrap();
        let (code, output) = check(&[file.to_str().unwrap()], &[]);
        assert_eq!(code, 1, "{output}");
        // Each YAML mistake names the rule it is in.
        assert!(
            output.contains(&format!("error: rule 'a': {message}")),
            "{output}"
        );
        assert!(output.contains(at), "{output}");
    }
    let (code, output) = check(&["/nonexistent/rules.yaml"], &[]);
    assert_eq!(code, 1);
    assert!(output.contains("cannot read the rules file"), "{output}");
}

const WARNED: &str = r#"rules:
  - name: twice
    effect: allow
    when: source.id == "spiffe://example.org/a"
  - name: twice
    effect: allow
    when: source.id == "spiffe://example.org/b"
  - name: never
    effect: allow
    when: request.method == "GET" && request.method == "POST"
  - name: always
    effect: allow
    when: request.path == request.path
  - name: no-admin
    effect: deny
    when: request.path.startsWith("/admin/") && source.trust_domain != "example.org"
  - name: partner-admin
    effect: allow
    when: source.trust_domain != "example.org" && request.path.startsWith("/admin/") && request.method == "GET"
  - name: debug-off
    effect: deny
    when: request.headers["x-debug"] == "1"
"#;

#[test]
fn check_reports_every_warning_class_and_fails_on_them_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("warned.yaml");
    std::fs::write(&file, WARNED).unwrap();
    let (code, output) = check(&[file.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "warnings alone pass: {output}");
    let expected = [
        (
            "twice",
            5,
            11,
            "a rule named 'twice' is already defined on line 2; decisions and audit records cannot tell them apart",
        ),
        (
            "never",
            10,
            11,
            "the condition can never be true (`request.method == \"GET\"` contradicts `request.method == \"POST\"`), so the rule never matches",
        ),
        (
            "always",
            13,
            11,
            "the condition is always true, so it allows every request that no deny rule denies",
        ),
        (
            "no-admin",
            16,
            49,
            "this deny rule reads source.trust_domain, which fails for a request without a verified X.509-SVID, and a deny rule that fails denies: on routes that accept `jwt` or `either`, every caller presenting only a JWT-SVID is denied by it. Test for it: `has(source.id) && ...` leaves those callers to the other rules, `!has(source.id) || ...` denies them on purpose",
        ),
        (
            "partner-admin",
            19,
            11,
            "this allow rule never allows: whenever it matches, deny rule 'no-admin' matches too (`request.path.startsWith(\"/admin/\") && source.trust_domain != \"example.org\"`)",
        ),
        (
            "debug-off",
            22,
            26,
            "reading request.headers[\"x-debug\"] fails when the key is absent, and a deny rule that fails denies; test for it first: `\"x-debug\" in request.headers && ...`",
        ),
    ];
    assert_reported(&output, "warning", &file, &expected);
    assert!(
        output.contains("1 file(s) checked: 0 error(s), 6 warning(s)"),
        "{output}"
    );

    let (code, _) = check(&[file.to_str().unwrap()], &["--deny-warnings"]);
    assert_eq!(code, 1);

    let (code, output) = check(&[file.to_str().unwrap()], &["--format", "json"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&output).unwrap();
    let first = &json[0];
    assert_eq!(first["severity"], "warning");
    assert_eq!(first["rule"], "twice");
    assert_eq!(
        (first["line"].as_u64(), first["column"].as_u64()),
        (Some(5), Some(11))
    );
    assert_eq!(json.as_array().unwrap().len(), 6);
}

#[test]
fn deny_warnings_fails_on_every_new_warning_class() {
    let dir = tempfile::tempdir().unwrap();
    for (name, when) in [
        ("ranges", "request.size < 0 && request.size > 10"),
        ("literal", "request.method == \"get\""),
        (
            "branch",
            "request.path == \"/x\" || (request.size > 5 && request.size < 2)",
        ),
        ("identity", "token.path.startsWith(\"/agents/\")"),
        ("risk", "signals.risk.level == \"high\""),
    ] {
        let effect = if matches!(name, "identity" | "risk") {
            "deny"
        } else {
            "allow"
        };
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &file,
            format!("rules:\n  - name: {name}\n    effect: {effect}\n    when: '{when}'\n"),
        )
        .unwrap();
        let (code, output) = check(&[file.to_str().unwrap()], &[]);
        assert_eq!(code, 0, "{name}: {output}");
        assert!(
            output.contains("0 error(s), 1 warning(s)"),
            "{name}: {output}"
        );
        let (code, _) = check(&[file.to_str().unwrap()], &["--deny-warnings"]);
        assert_eq!(code, 1, "{name}");
        if name == "risk" {
            assert!(
                output.contains("`has(signals.risk.level) && ...`"),
                "{output}"
            );
        }
    }
}

#[test]
fn test_runs_the_example_suites() {
    // As CI should run them: every rule and grant exercised by some case.
    let (code, stdout, stderr) = run(&[
        "test",
        "--coverage",
        "--min-coverage",
        "100",
        root().join("examples/policies").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("40 passed, 0 failed\n"), "{stdout}");
    assert!(
        stdout.contains("\n100% of rules and grants covered; "),
        "{stdout}"
    );
    assert!(
        stdout.contains("    grant inc-4711-rerun-export       2 case(s): "),
        "{stdout}"
    );
    assert!(
        stdout.contains("  PASS  a deny rule still overrides the grant\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  PASS  never personal data, whatever the grant\n"),
        "{stdout}"
    );
}

#[test]
fn coverage_marks_the_rules_no_case_exercised_and_min_coverage_gates_on_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("r.yaml"),
        "rules:\n  - name: reads\n    effect: allow\n    when: request.method == \"GET\"\n  - name: writes\n    effect: allow\n    when: request.method == \"POST\"\n  - name: no-admin\n    effect: deny\n    when: request.path.startsWith(\"/admin/\")\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("r_test.yaml"),
        "rules: r.yaml\ndefaults:\n  identity: spiffe://example.org/a\ncases:\n  - name: a read\n    request: { method: GET }\n    expect: { decision: allow, rule: reads }\n  - name: no admin read\n    request: { method: GET, path: /admin/x }\n    expect: { decision: deny, rule: no-admin }\n",
    )
    .unwrap();
    let suite = dir.path().join("r_test.yaml");
    let (code, stdout, _) = run(&["test", "--coverage", suite.to_str().unwrap()]);
    assert_eq!(code, 0, "coverage alone never fails: {stdout}");
    assert!(stdout.contains("(2 of 3 covered)"), "{stdout}");
    assert!(
        stdout.contains("rule  reads     2 case(s): a read; no admin read"),
        "{stdout}"
    );
    assert!(
        stdout.contains("rule  writes    NOT COVERED: no case matched it"),
        "{stdout}"
    );
    assert!(
        stdout.contains("rule  no-admin  1 case(s): no admin read"),
        "{stdout}"
    );
    assert!(
        stdout.ends_with(
            "67% of rules and grants covered; 33% of clauses seen both true and false\n"
        ),
        "{stdout}"
    );
    let (code, stdout, _) = run(&["test", "--min-coverage", "90", suite.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        stdout.ends_with("coverage 67% is below --min-coverage 90%\n"),
        "{stdout}"
    );
    let (code, _, _) = run(&["test", "--min-coverage", "60", suite.to_str().unwrap()]);
    assert_eq!(code, 0);
}

#[test]
fn a_failing_case_is_explained_clause_by_clause_with_other_errors_apart() {
    let (code, stdout, _) = run(&["test", root().join("examples/explain").to_str().unwrap()]);
    assert_eq!(code, 1, "the example fails on purpose: {stdout}");
    let expected = r#"  FAIL  the reporter exports at 04:00
        expected: allow by rule 'reporter-exports-before-4am'
        got:      deny (no_allow_rule)
        allow rule 'reporter-exports-before-4am' (was expected to decide) did not match; the first false clause is `request.time.getHours("UTC") < 4` (false):
          && false
            source.id == "spiffe://example.org/ns/reporting/sa/reporter"  => true  (source.id = "spiffe://example.org/ns/reporting/sa/reporter")
            request.method == "GET"  => true  (request.method = "GET")
            request.path.startsWith("/export/")  => true  (request.path = "/export/daily.csv")
            request.time.getHours("UTC") < 4  => false  (request.time = timestamp("2026-11-25T04:00:00Z"), request.time.getHours("UTC") = 4)
        other rules failed to evaluate (not the cause of this decision):
          rule 'agent-reads-own-tenant': token.claims: the request has no verified JWT-SVID
"#;
    assert!(stdout.contains(expected), "{stdout}");
    // The README shows this very output.
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let indented: String = expected.lines().map(|l| format!("   {l}\n")).collect();
    assert!(
        readme.contains(&indented),
        "the README's example output is stale"
    );
}

#[test]
fn eval_gives_the_clause_tree_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let case = dir.path().join("case.yaml");
    std::fs::write(
        &case,
        "name: at four\nidentity: spiffe://example.org/ns/reporting/sa/reporter\ntime: 2026-11-25T04:00:00Z\nrequest: { method: GET, path: /export/daily.csv }\nexpect: { decision: allow, rule: reporter-exports-before-4am }\n",
    )
    .unwrap();
    let rules = root().join("examples/explain/reporting.yaml");
    let (code, stdout, _) = run(&[
        "eval",
        "--format",
        "json",
        "--rules",
        rules.to_str().unwrap(),
        "--input",
        case.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "the case's expectation is not met");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let traced = &json["why"]["rules"][0];
    assert_eq!(traced["rule"], "reporter-exports-before-4am");
    assert_eq!(traced["result"], "did not match");
    assert_eq!(
        traced["first_false_clause"],
        "request.time.getHours(\"UTC\") < 4"
    );
    let clauses = traced["tree"]["children"].as_array().unwrap();
    assert_eq!(traced["tree"]["op"], "&&");
    assert_eq!(clauses.len(), 4);
    assert_eq!(clauses[3]["value"], "false");
    assert_eq!(clauses[3]["reads"][0]["path"], "request.time");
    assert_eq!(
        json["why"]["other_errors"][0]["rule"],
        "agent-reads-own-tenant"
    );
}

#[test]
fn explanations_never_print_credentials() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("r.yaml"),
        "rules:\n  - name: keyed\n    effect: allow\n    when: >\n      \"authorization\" in request.headers && request.headers[\"authorization\"] != \"\" &&\n      \"x-api-key\" in request.headers && request.headers[\"x-api-key\"] == \"k\" && request.method == \"POST\" &&\n      request.query[\"access_token\"] != \"\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("r_test.yaml"),
        "rules: r.yaml\ncases:\n  - name: a get\n    identity: spiffe://example.org/a\n    request:\n      method: GET\n      headers: { authorization: Bearer supersecret-token, x-api-key: hunter2, cookie: session=topsecret }\n      query: { access_token: tok-secret-9, page: \"2\" }\n    expect: { decision: allow, rule: keyed }\n",
    )
    .unwrap();
    let suite = dir.path().join("r_test.yaml");
    let (code, stdout, stderr) = run(&[
        "test",
        "--redact-header",
        "X-Api-Key",
        suite.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    let all = format!("{stdout}{stderr}");
    for secret in ["supersecret-token", "hunter2", "topsecret", "tok-secret-9"] {
        assert!(!all.contains(secret), "{secret} printed:\n{all}");
    }
    assert!(
        all.contains(r#"request.headers["authorization"] = "<redacted>""#),
        "{all}"
    );
    assert!(
        all.contains(r#"request.headers["x-api-key"] = "<redacted>""#),
        "{all}"
    );
    assert!(
        all.contains("the first false clause is `request.headers[\"x-api-key\"] == \"k\"` (false)"),
        "{all}"
    );
}

#[test]
fn test_reports_failures_with_what_was_expected_and_writes_junit() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("examples/policies/payments/payments.yaml"),
        dir.path().join("payments.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("wrong_test.yaml"),
        r#"rules: payments.yaml
cases:
  - name: right
    identity: spiffe://example.org/ns/shop/sa/checkout
    expect: { decision: allow }
  - name: wrong decision
    identity: spiffe://example.org/ns/shop/sa/cart
    expect: { decision: allow }
  - name: wrong rule
    identity: spiffe://example.org/ns/shop/sa/refunds
    request: { method: POST, path: /v1/charges }
    expect: { decision: deny, rule: shop-checkout-and-refunds }
  - name: a reason rules never give
    identity: spiffe://example.org/ns/shop/sa/checkout
    expect: { decision: deny, reason: svid_expired }
  - name: a broken identity
    identity: spiffe://Example.org/x
    expect: { decision: deny }
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("missing_test.yaml"),
        "rules: nowhere.yaml\ncases: []\n",
    )
    .unwrap();
    let junit = dir.path().join("junit.xml");
    let (code, stdout, _) = run(&[
        "test",
        dir.path().to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{stdout}");
    for expected in [
        "  PASS  right\n",
        "  FAIL  wrong decision\n        expected: allow\n        got:      deny (no_allow_rule)\n",
        "  FAIL  wrong rule\n        expected: deny by rule 'shop-checkout-and-refunds'\n        got:      deny by rule 'refunds-only-refund' (denied_by_rule)\n",
        "  ERROR a reason rules never give\n        expect.reason \"svid_expired\" is not one rules give: allowed, denied_by_rule, rule_error, no_allow_rule, granted, invalid_path or revoked\n",
        "  ERROR a broken identity\n        identity \"spiffe://Example.org/x\": the trust domain 'Example.org' has uppercase letters; trust domains are lowercase\n",
        "missing_test.yaml\n  ERROR the rules under test do not load:\n",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(stdout.ends_with("1 passed, 5 failed\n"), "{stdout}");

    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"celador\" tests=\"6\" failures=\"5\">"), "{xml}");
    assert_eq!(xml.matches("<failure").count(), 3, "{xml}");
    assert_eq!(xml.matches("<error").count(), 2, "{xml}");
    assert!(
        xml.contains("expected: allow\ngot: deny (no_allow_rule)"),
        "{xml}"
    );
}

#[test]
fn check_takes_directories_and_says_when_it_was_given_a_suite() {
    let (code, stdout, _) = run(&["check", root().join("examples/policies").to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.ends_with("7 file(s) checked: 0 error(s), 0 warning(s)\n"),
        "{stdout}"
    );
    let suite = root().join("examples/policies/payments/payments_test.yaml");
    let (code, stdout, _) = run(&["check", suite.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("this looks like a test suite"), "{stdout}");
    let rules = root().join("examples/policies/payments/payments.yaml");
    let (code, stdout, _) = run(&["test", rules.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("this looks like a rules file"), "{stdout}");
}

#[test]
fn eval_never_prints_credentials_even_when_rules_read_the_headers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n  - name: by-header\n    effect: allow\n    when: request.headers[\"x-team\"] == \"pay\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("case.yaml"),
        "identity: spiffe://example.org/a\nrequest:\n  headers:\n    authorization: Bearer s3cret-token\n    cookie: session=s3cret-cookie\n    x-api-key: s3cret-key\n    x-other: Bearer s3cret-bearer\n    x-team: pay\nexpect: { decision: allow }\n",
    )
    .unwrap();
    let rules = dir.path().join("rules.yaml");
    let case = dir.path().join("case.yaml");
    for format in ["text", "json"] {
        let (code, stdout, stderr) = run(&[
            "eval",
            "--rules",
            rules.to_str().unwrap(),
            "--input",
            case.to_str().unwrap(),
            "--format",
            format,
            "--redact-header",
            "x-api-key",
        ]);
        assert_eq!(code, 0, "{stdout}{stderr}");
        assert!(!stdout.contains("s3cret"), "{format}: {stdout}");
        assert!(stdout.contains("<redacted>"), "{format}: {stdout}");
        assert!(stdout.contains("pay"), "{format}: {stdout}");
    }
}

#[test]
fn test_runs_the_cases_a_pattern_names_and_times_them_in_junit() {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");
    let suites = root().join("examples/policies/payments");
    let (code, stdout, _) = run(&[
        "test",
        suites.to_str().unwrap(),
        "--run",
        "refund",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}");
    let passes: Vec<&str> = stdout.lines().filter(|l| l.contains("PASS")).collect();
    assert!(
        !passes.is_empty() && passes.iter().all(|l| l.contains("refund")),
        "{stdout}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("<testsuite name=") && xml.contains(" time=\""),
        "{xml}"
    );
    assert_eq!(xml.matches("<testcase").count(), passes.len(), "{xml}");
    assert_eq!(
        xml.matches("<testcase").count(),
        xml.matches("\" time=\"").count() - 1,
        "{xml}"
    );
}

#[test]
fn eval_json_gives_attribute_values_as_typed_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n  - name: small-gets\n    effect: allow\n    when: request.method == \"GET\" && request.size < 10 && \"a\" in request.query\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("case.yaml"),
        "identity: spiffe://example.org/a\nrequest:\n  size: 3\n  path: /x?a=1\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run(&[
        "eval",
        "--rules",
        dir.path().join("rules.yaml").to_str().unwrap(),
        "--input",
        dir.path().join("case.yaml").to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let value = |path: &str| {
        json["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["path"] == path)
            .map(|a| a["value"].clone())
            .unwrap_or_else(|| panic!("no {path} in {json}"))
    };
    assert_eq!(value("request.method"), serde_json::json!("GET"));
    assert_eq!(value("request.size"), serde_json::json!(3));
    // Query values are redacted unless named, as in audit records.
    assert_eq!(
        value("request.query"),
        serde_json::json!({"a": "<redacted>"})
    );
    let (code, stdout, stderr) = run(&[
        "eval",
        "--rules",
        dir.path().join("rules.yaml").to_str().unwrap(),
        "--input",
        dir.path().join("case.yaml").to_str().unwrap(),
        "--format",
        "json",
        "--show-query-param",
        "a",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let query = json["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["path"] == "request.query")
        .map(|a| a["value"].clone());
    assert_eq!(query, Some(serde_json::json!({"a": "1"})));
}

/// Issue 19's leaks, through the tools: a full JWT-SVID in `x-jwt-svid`
/// read as a whole header map (`in`, `exists`) and by a rule that fails on
/// it, credentials in query values, a bearer value in another header. No
/// output of `celador test` or `celador eval` (text and JSON, a test case
/// and an Envoy CheckRequest) holds any of them.
#[test]
fn test_and_eval_print_no_secret_of_the_request() {
    let signer = support::jwt::Signer::es256("k1");
    let svid = signer.token(&support::jwt::claims(
        "spiffe://example.org/agent",
        "payments",
        300,
    ));
    let secrets = [
        svid.as_str(),
        "hunter2",
        "correct-horse-battery",
        "AKIAIOSFODNN7EXAMPLE",
        "opaque-debug-credential",
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    std::fs::write(
        path("rules.yaml"),
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
  - name: odd-addresses
    effect: deny
    when: request.headers["x-jwt-svid"].inCidr("10.0.0.0/8") || request.query["pwd"].inCidr("10.0.0.0/8")
"#,
    )
    .unwrap();
    let query = format!(
        "jwt={svid}&pass=hunter2&pwd=correct-horse-battery&x-amz-credential=AKIAIOSFODNN7EXAMPLE%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&page=2"
    );
    let case = format!(
        "name: leaks\nidentity: spiffe://example.org/a\nrequest:\n  method: GET\n  path: \"/export/{svid}?{query}\"\n  headers:\n    x-jwt-svid: \"{svid}\"\n    x-debug-info: Bearer opaque-debug-credential\n    x-tenant: acme\nexpect: {{ decision: allow, rule: query }}\n"
    );
    std::fs::write(path("case.yaml"), &case).unwrap();
    std::fs::write(
        path("rules_test.yaml"),
        format!(
            "rules: rules.yaml\ncases:\n  - {}\n",
            case.trim_end().replace('\n', "\n    ")
        ),
    )
    .unwrap();
    let check_request = serde_json::json!({"attributes": {
        "source": {"address": {"socketAddress": {"address": "10.1.2.3", "portValue": 4242}}},
        "request": {"time": "2026-11-25T04:00:00Z", "http": {
            "method": "GET",
            "path": format!("/export/{svid}?{query}"),
            "host": "api.example.org",
            "headers": {"x-jwt-svid": svid, "x-debug-info": "Bearer opaque-debug-credential", "x-tenant": "acme"},
        }},
    }});
    std::fs::write(path("request.json"), check_request.to_string()).unwrap();
    let rules = path("rules.yaml");
    let mut outputs = Vec::new();
    let (code, stdout, stderr) = run(&["test", path("rules_test.yaml").to_str().unwrap()]);
    assert_eq!(
        code, 1,
        "the case fails, so it is explained: {stdout}{stderr}"
    );
    assert!(
        stdout.contains("rule_error") && stdout.contains("is not an IP address"),
        "{stdout}"
    );
    // The rule's own text is shown as written; what it read is not.
    assert!(
        stdout.contains(
            r#"request.query["page"] == "2"  => true  (request.query["page"] = "<redacted>")"#
        ),
        "{stdout}"
    );
    outputs.push(("test".to_owned(), format!("{stdout}{stderr}")));
    for input in ["case.yaml", "request.json"] {
        for format in ["text", "json"] {
            let (_, stdout, stderr) = run(&[
                "eval",
                "--rules",
                rules.to_str().unwrap(),
                "--input",
                path(input).to_str().unwrap(),
                "--format",
                format,
            ]);
            assert!(
                stdout.contains("odd-addresses"),
                "{input} {format}: {stdout}{stderr}"
            );
            assert!(stdout.contains("acme"), "{input} {format}: {stdout}");
            outputs.push((
                format!("eval {input} {format}"),
                format!("{stdout}{stderr}"),
            ));
        }
    }
    for (what, text) in &outputs {
        for secret in secrets {
            assert!(!text.contains(secret), "{what} printed {secret}:\n{text}");
        }
        assert!(!text.contains("eyJ"), "{what} printed a token:\n{text}");
        assert!(text.contains("<redacted>"), "{what}: {text}");
    }
}

#[test]
fn eval_compares_the_decision_with_the_cases_expect() {
    let dir = tempfile::tempdir().unwrap();
    let rules = root().join("examples/policy.yaml");
    let case = |expect: &str| {
        let path = dir.path().join(format!("{expect}.yaml"));
        std::fs::write(
            &path,
            format!("identity: spiffe://example.org/ns/batch/sa/exporter\nrequest: {{ method: POST, path: /export/x }}\nexpect: {{ decision: {expect} }}\n"),
        )
        .unwrap();
        path
    };
    let eval = |path: &std::path::Path| {
        run(&[
            "eval",
            "--rules",
            rules.to_str().unwrap(),
            "--input",
            path.to_str().unwrap(),
        ])
    };
    let (code, stdout, _) = eval(&case("deny"));
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("expected: as the case expects"), "{stdout}");
    let (code, stdout, _) = eval(&case("allow"));
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("expected: allow, NOT as the case expects (got deny (no_allow_rule))"),
        "{stdout}"
    );
}

#[test]
fn test_rejects_unknown_expected_rules_and_duplicate_case_names() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("examples/policies/payments/payments.yaml"),
        dir.path().join("payments.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("typo_test.yaml"),
        "rules: payments.yaml\ncases:\n  - name: a typo in the rule\n    identity: spiffe://example.org/ns/shop/sa/checkout\n    expect: { decision: allow, rule: shop-checkout }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("twice_test.yaml"),
        "rules: payments.yaml\ncases:\n  - name: same\n    identity: spiffe://example.org/ns/shop/sa/checkout\n    expect: { decision: allow }\n  - name: same\n    identity: spiffe://example.org/ns/shop/sa/cart\n    expect: { decision: deny }\n",
    )
    .unwrap();
    let (code, stdout, _) = run(&["test", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    for expected in [
        "  ERROR a typo in the rule\n        expect.rule 'shop-checkout' is not a rule of the file under test (its rules: shop-checkout-and-refunds, refunds-only-refund)\n",
        "  ERROR the case name 'same' is used twice; each case needs a name of its own\n",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}

#[test]
fn eval_explains_a_test_case_rule_by_rule_with_the_values_read() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("case.yaml");
    std::fs::write(
        &input,
        "name: refunds charging\nidentity: spiffe://example.org/ns/shop/sa/refunds\nrequest: { method: POST, path: /v1/charges }\n",
    )
    .unwrap();
    let rules = root().join("examples/policies/payments/payments.yaml");
    let (code, stdout, stderr) = run(&[
        "eval",
        "--rules",
        rules.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    for expected in [
        "input: a test case (refunds charging)\n",
        "  allow shop-checkout-and-refunds  match\n",
        "  deny  refunds-only-refund        match\n",
        "decision: deny by rule 'refunds-only-refund' (denied_by_rule)\n",
        "  request.method = \"POST\"\n",
        "  source.path = \"/ns/shop/sa/refunds\"\n",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}

#[test]
fn eval_shows_a_rule_that_errors_and_why_and_rejects_garbage_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        r#"rules:
  - name: tenant-ok
    effect: allow
    when: request.headers["x-tenant"] == "acme"
  - name: debug-off
    effect: deny
    when: request.headers["x-debug"] == "1"
"#,
    )
    .unwrap();
    let eval = |input: &Path| {
        run(&[
            "eval",
            "--rules",
            rules.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
        ])
    };

    let case = dir.path().join("case.yaml");
    std::fs::write(
        &case,
        "identity: spiffe://example.org/a\nrequest: { headers: { x-tenant: acme } }\n",
    )
    .unwrap();
    let (code, stdout, stderr) = eval(&case);
    assert_eq!(code, 0, "{stderr}");
    for expected in [
        "  allow tenant-ok  match\n",
        "  deny  debug-off  error: the key \"x-debug\" is absent (test for it first: `\"x-debug\" in ... && ...`)\n",
        "decision: deny by rule 'debug-off' (rule_error): the key \"x-debug\" is absent (test for it first: `\"x-debug\" in ... && ...`)\n",
        "  request.headers = {\"x-tenant\": \"acme\"}\n",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }

    let garbage: [(&str, &[u8], &str); 3] = [
        (
            "typo.yaml",
            b"identty: spiffe://example.org/a\n",
            "unknown field `identty`",
        ),
        (
            "random.bin",
            &[0xff, 0xfe, 0x00, 0x9c],
            "stream did not contain valid UTF-8",
        ),
        (
            "check.json",
            br#"{"attributes": 3}"#,
            "`attributes` must be an object",
        ),
    ];
    for (name, bytes, message) in garbage {
        let input = dir.path().join(name);
        std::fs::write(&input, bytes).unwrap();
        let (code, stdout, stderr) = eval(&input);
        assert_eq!(code, 1, "{name}: {stdout}{stderr}");
        assert!(stdout.is_empty(), "{name}: no explanation: {stdout}");
        assert!(stderr.contains(message), "{name}: {stderr}");
    }
}

#[test]
fn test_and_eval_canonicalize_a_cases_path_and_refuse_an_ambiguous_one_as_serve_does() {
    let dir = tempfile::tempdir().unwrap();
    let rules = root().join("examples/policy.yaml");
    let exporter = "spiffe://example.org/ns/batch/sa/exporter";
    let payments = "spiffe://example.org/ns/payments/sa/api";
    let suite = dir.path().join("paths_test.yaml");
    std::fs::write(
        &suite,
        format!(
            r#"rules: {rules}
cases:
  - name: a canonical spelling of an export
    identity: {exporter}
    request: {{ path: "/export//%64aily.csv?x=1" }}
    expect: {{ decision: allow, rule: exporter-read-only }}
  - name: out of the exports by a parent segment
    identity: {exporter}
    request: {{ path: /export/../pay }}
    expect: {{ decision: deny, reason: invalid_path }}
  - name: into admin by a Tomcat path parameter
    identity: {payments}
    request: {{ path: "/export/%2e%2e;/admin/users" }}
    expect: {{ decision: deny, reason: invalid_path }}
  - name: an encoded slash
    identity: {exporter}
    request: {{ path: /export/..%2fpay }}
    expect: {{ decision: deny, reason: invalid_path }}
"#,
            rules = rules.display()
        ),
    )
    .unwrap();
    let (code, stdout, stderr) = run(&["test", "--coverage", suite.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("4 passed, 0 failed\n"), "{stdout}");

    let case = dir.path().join("case.yaml");
    std::fs::write(
        &case,
        format!("identity: {payments}\nrequest: {{ path: \"/export/..;/admin/users\" }}\n"),
    )
    .unwrap();
    let (code, stdout, stderr) = run(&[
        "eval",
        "--rules",
        rules.to_str().unwrap(),
        "--input",
        case.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("decision: deny (invalid_path): the path has a dot segment"),
        "{stdout}"
    );
}

#[test]
fn eval_replays_an_envoy_check_request_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let pem = std::fs::read_to_string(root().join("examples/pki/batch-exporter.pem")).unwrap();
    let token_claims =
        serde_json::json!({"sub": "spiffe://example.org/agents/bot", "aud": "x", "exp": 1});
    let token = format!(
        "e30.{}.sig",
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            token_claims.to_string()
        )
    );
    let request = serde_json::json!({"attributes": {
        "source": {"address": {"socketAddress": {"address": "10.4.2.7", "portValue": 40512}},
                   "certificate": support::pki::url_encode(&pem)},
        "request": {"time": "2026-11-22T10:15:00Z", "http": {
            "id": "3b1f2c", "method": "GET", "path": "/admin/users", "host": "api", "scheme": "https",
            "headers": {"authorization": format!("Bearer {token}")}}},
        "contextExtensions": {"route": "admin"}}});
    let input = dir.path().join("check.json");
    std::fs::write(&input, request.to_string()).unwrap();
    let rules = root().join("examples/policy.yaml");
    let (code, stdout, stderr) = run(&[
        "eval",
        "--rules",
        rules.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["decision"], "deny");
    assert_eq!(
        json["verdict"],
        "deny by rule 'admin-closed' (denied_by_rule)"
    );
    assert_eq!(
        json["identities"],
        serde_json::json!([
            "source: spiffe://example.org/ns/batch/sa/exporter (read from source.certificate; not verified against a bundle)",
            "token: spiffe://example.org/agents/bot (read from the authorization header; not verified against a bundle)"
        ])
    );
    let admin = json["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "admin-closed")
        .unwrap();
    assert_eq!(admin["result"], "match");
    let paths: Vec<&str> = json["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["request.method", "request.path", "source.id"]);
}

#[test]
fn the_policy_reference_is_generated_from_the_schema() {
    let path = root().join("docs/policy.md");
    let generated = celador::authoring::reference::markdown();
    if std::env::var_os("CELADOR_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/policy.md is out of date with crates/celador-engine/src/policy/schema.rs; regenerate it with `CELADOR_BLESS=1 cargo test --test authoring`"
    );
    // Every variable and function of the schema is in it.
    for v in celador::engine::policy::schema::VARIABLES {
        assert!(
            committed.contains(&format!("| `{}` |", v.name)),
            "{}",
            v.name
        );
    }
    for f in celador::engine::policy::schema::FUNCTIONS {
        assert!(
            committed.contains(&format!("### `{}`", f.name)),
            "{}",
            f.name
        );
    }
}

/// A Python with the `jsonschema` package: the machine's, else one
/// installed into target/ with pip (never skipped).
fn jsonschema_python() -> (String, Option<PathBuf>) {
    let probe = Command::new("python3")
        .args(["-c", "import jsonschema"])
        .status();
    if probe.is_ok_and(|s| s.success()) {
        return ("python3".into(), None);
    }
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pylib");
    support::pip_install("jsonschema", &target, false);
    ("python3".into(), Some(target))
}

/// Validates YAML `documents` against the schema at `schema`: the errors of
/// each, empty when valid.
fn validate(schema: &Path, documents: &[PathBuf]) -> Vec<String> {
    let as_json: Vec<serde_json::Value> = documents
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            celador::engine::yaml::from_str::<serde_json::Value>(&text, p).unwrap()
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs.json");
    std::fs::write(&docs, serde_json::Value::Array(as_json).to_string()).unwrap();
    let (python, pythonpath) = jsonschema_python();
    let script = "import json, sys, jsonschema\n\
        schema = json.load(open(sys.argv[1]))\n\
        jsonschema.Draft202012Validator.check_schema(schema)\n\
        v = jsonschema.Draft202012Validator(schema)\n\
        for doc in json.load(open(sys.argv[2])):\n\
        \x20   print(json.dumps([e.message for e in v.iter_errors(doc)]))\n";
    let mut command = Command::new(python);
    command.arg("-c").arg(script).arg(schema).arg(&docs);
    if let Some(path) = pythonpath {
        command.env("PYTHONPATH", path);
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Vec<String>>(l).unwrap().join("; "))
        .collect()
}

#[test]
fn the_example_files_validate_against_the_json_schemas_and_mistakes_do_not() {
    let rules_schema = root().join("docs/rules.schema.json");
    let results = validate(&rules_schema, &example_rules());
    assert!(results.iter().all(String::is_empty), "{results:?}");

    let suites: Vec<PathBuf> = [
        "payments",
        "ci-secrets",
        "agent-export",
        "admin",
        "jit-grant",
    ]
    .iter()
    .map(|d| root().join(format!("examples/policies/{d}/{d}_test.yaml")))
    .collect();
    let results = validate(&root().join("docs/test-suite.schema.json"), &suites);
    assert!(results.iter().all(String::is_empty), "{results:?}");

    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo.yaml");
    std::fs::write(
        &typo,
        "rules:\n  - name: a\n    efect: allow\n    when: 'true'\n",
    )
    .unwrap();
    let results = validate(&rules_schema, &[typo]);
    assert!(results[0].contains("'efect' was unexpected"), "{results:?}");
}

#[test]
fn check_understands_grants_and_revocations_files_and_test_reads_a_suites_grants() {
    let dir = tempfile::tempdir().unwrap();
    let grants = dir.path().join("grants.yaml");
    std::fs::write(
        &grants,
        "grants:\n  - name: week-long\n    identities: [\"spiffe://example.org/a\"]\n    when: request.method = \"POST\"\n    not_before: 2030-01-01T00:00:00Z\n    expires: 2030-01-08T00:00:00Z\n    reason: too long\n",
    )
    .unwrap();
    let (code, stdout) = check(&[grants.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{stdout}");
    for needle in [
        "grants.yaml:2",
        "the grant lasts 168h, longer than the maximum of 24h",
        "CEL compares with '==', not '='",
        "2 error(s)",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
    let revocations = dir.path().join("revocations.yaml");
    std::fs::write(
        &revocations,
        "revocations:\n  - spiffe_id: spiffe://example.org/a\n    reason: leaked\n  - x509_serial: \"0a\"\n    reason: no issuer\n",
    )
    .unwrap();
    let (code, stdout) = check(&[revocations.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("revocation 2 (reason \"no issuer\"): `issuer` goes with `x509_serial`"),
        "{stdout}"
    );
    std::fs::write(
        &revocations,
        "revocations:\n  - spiffe_id_prefix: spiffe://example.org/ns/legacy\n    reason: decommissioned\n",
    )
    .unwrap();
    let (code, stdout) = check(&[revocations.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{stdout}");

    // A suite whose grants file does not load fails as a whole, saying why.
    std::fs::write(dir.path().join("rules.yaml"), "rules: []\n").unwrap();
    let suite = dir.path().join("g_test.yaml");
    std::fs::write(
        &suite,
        "rules: rules.yaml\ngrants: grants.yaml\ncases:\n  - name: x\n    expect: { decision: deny }\n",
    )
    .unwrap();
    let (code, stdout, _) = run(&["test", suite.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("the grants file does not load"), "{stdout}");
    assert!(
        stdout.contains("longer than the maximum of 24h"),
        "{stdout}"
    );
}

#[test]
fn an_absent_token_is_said_plainly_never_as_a_library_function_error() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "rules:\n  - name: agents\n    effect: deny\n    when: token.path.startsWith(\"/a\") || [1].exists(x, token.id == \"a\")\n",
    )
    .unwrap();
    let case = dir.path().join("case.yaml");
    std::fs::write(&case, "name: c\nidentity: spiffe://example.org/a\n").unwrap();
    let (code, stdout, stderr) = run(&[
        "eval",
        "--rules",
        rules.to_str().unwrap(),
        "--input",
        case.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains("Error executing function"), "{stdout}");
    assert!(
        stdout.contains("  token.path: the request has no verified JWT-SVID\n"),
        "{stdout}"
    );
    assert!(stdout.contains("(rule_error): token."), "{stdout}");
    assert!(
        stdout.contains(
            "      [1].exists(x, token.id == \"a\")  => error: the request has no verified JWT-SVID"
        ),
        "{stdout}"
    );
}

/// `celador serve ... 2>&1 | head -1`: a problem said to a standard error
/// nobody reads any more ends in its exit code, not in a panic.
#[test]
fn problems_said_to_a_closed_standard_error_end_in_their_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    // The reader has left before anything is written.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status = Command::new(support::celador::binary())
        .args(["serve", "--config"])
        .arg(dir.path().join("missing.yaml"))
        .stdout(std::process::Stdio::null())
        .stderr(writer)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(64), "the config error's exit code");

    // And with the reader there, the same run says why.
    let missing = dir.path().join("missing.yaml");
    let (code, _, said) = run(&["serve", "--config", missing.to_str().unwrap()]);
    assert_eq!(code, 64);
    assert!(said.contains("missing.yaml"), "{said}");
}

/// `celador test ... | head -1`: the tools stop quietly when their reader
/// goes away, never with a panic. The output is larger than a pipe holds,
/// so the writes after the reader left fail.
#[test]
fn the_tools_end_quietly_on_a_closed_pipe() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("r.yaml"),
        "rules:\n  - name: reads\n    effect: allow\n    when: request.method == \"GET\"\n",
    )
    .unwrap();
    let cases: String = (0..4000)
        .map(|i| format!("  - name: a read that is case number {i} of many\n    expect: {{ decision: allow }}\n"))
        .collect();
    std::fs::write(
        dir.path().join("r_test.yaml"),
        format!("rules: r.yaml\ndefaults:\n  identity: spiffe://example.org/a\n  request: {{ method: GET }}\ncases:\n{cases}"),
    )
    .unwrap();
    let mut child = Command::new(support::celador::binary())
        .args(["test", "--coverage", dir.path().to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.ends_with("r_test.yaml\n"), "{first}");
    // The pipe closes here, with most of the output unread.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101));
}

#[test]
fn a_has_guard_is_explained_without_an_internal_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        "rules:\n  - name: exporter\n    effect: allow\n    when: has(source.id) && has(token.claims.purpose) && source.id == \"spiffe://example.org/ns/batch/sa/exporter\"\n",
    )
    .unwrap();
    let suite = dir.path().join("suite_test.yaml");
    std::fs::write(
        &suite,
        "rules: rules.yaml\ncases:\n  - name: someone else\n    identity: spiffe://example.org/ns/batch/sa/other\n    request: {method: GET, path: /export}\n    expect: {decision: allow, rule: exporter}\n",
    )
    .unwrap();
    let (code, out, err) = run(&["test", suite.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("has(source.id)  => true\n"), "{out}");
    assert!(!out.contains("Unexpected type"), "{out}");
}

/// Asserts that `output` has a diagnostic starting with `message` that
/// points at `file:line:column`, with the line's text and a caret under
/// the column, as rustc does.
fn assert_placed(
    output: &str,
    file: &Path,
    (line, column): (usize, usize),
    text: &str,
    message: &str,
) {
    let pad = " ".repeat(line.to_string().len());
    let place = format!(
        " --> {}:{line}:{column}\n{pad} |\n{line} | {text}\n{pad} | {}^",
        file.display(),
        " ".repeat(column - 1)
    );
    let found = output.match_indices(message).any(|(i, _)| {
        let rest = &output[i..];
        rest.find("\n --> ")
            .is_some_and(|at| rest[at + 1..].starts_with(&place))
    });
    assert!(found, "missing\n{message}\n{place}\nin:\n{output}");
}

#[test]
fn check_places_every_governance_files_problem_at_its_line_with_a_caret() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    // Revocations: the value at fault, on line 7.
    let revocations = write(
        "revocations.yaml",
        "# revoked on call\nrevocations:\n  - spiffe_id: spiffe://example.org/a\n    reason: leaked\n\n  - x509_serial: \"0a\"\n    issuer: not a name\n    reason: typo\n",
    );
    let (code, out) = check(&[revocations.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{out}");
    assert_placed(
        &out,
        &revocations,
        (7, 13),
        "    issuer: not a name",
        "error: revocation 2 (reason \"typo\"): issuer \"not a name\" is not a distinguished name",
    );
    // Grants: the grant at fault, on line 4.
    let grants = write(
        "grants.yaml",
        "grants:\n  - name: fine\n    identities: [\"spiffe://example.org/a\"]\n    expires: 2030-01-01T00:00:00Z\n    reason: ok\n  - name: nobody\n    identities: []\n    expires: 2030-01-01T00:00:00Z\n    reason: x\n",
    );
    let (code, out) = check(&[grants.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("error: grant 'nobody': `identities` is empty"),
        "{out}"
    );
    assert_placed(
        &out,
        &grants,
        (6, 11),
        "  - name: nobody",
        "error: grant 'nobody': `identities` is empty",
    );
    // A suite: its shape, placed where YAML reads it wrong.
    let suite = write(
        "broken_test.yaml",
        "rules: rules.yaml\ncases:\n  - name: a\n    expect: { decision: allow }\n  - name: b\n    expct: { decision: deny }\n",
    );
    let (code, out) = check(&[suite.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("unknown field `expct`"), "{out}");
    assert!(
        out.contains(&format!(" --> {}:6:5\n", suite.display())),
        "{out}"
    );
    assert!(
        out.contains("6 |     expct: { decision: deny }\n  |     ^"),
        "{out}"
    );
    // A config: the key at fault, and each deprecated key a warning at its line.
    let config = write(
        "celador.yaml",
        "listen: 127.0.0.1:9191\npolicy: policy.yaml\ntrust_domains:\n  example.org:\n    bundle: b.pem\nrevocations: revocations.yaml\ngovernance:\n  grants: g.yaml\n  store: http://redis:6379\n",
    );
    let (code, out) = check(&[config.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{out}");
    assert_placed(
        &out,
        &config,
        (9, 3),
        "  store: http://redis:6379",
        "error: governance.store: 'http://redis:6379' is not a URL like redis://HOST:6379/0 or rediss://HOST:6379/0",
    );
    assert_placed(
        &out,
        &config,
        (6, 1),
        "revocations: revocations.yaml",
        "warning: the top-level key `revocations` is deprecated: write it as `governance.revocations` (it still works)",
    );
    // The same config, valid: it passes with the warning.
    std::fs::write(&config, "listen: 127.0.0.1:9191\npolicy: policy.yaml\ntrust_domains:\n  example.org:\n    bundle: b.pem\nrevocations: revocations.yaml\n").unwrap();
    let (code, out) = check(&[config.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 error(s), 1 warning(s)"), "{out}");
    let (code, _) = check(&[config.to_str().unwrap()], &["--deny-warnings"]);
    assert_eq!(code, 1);
}

/// A config whose store URL holds a password, with a problem on its line
/// and on another: neither `check` nor `serve` quotes the password.
#[test]
fn a_password_in_a_store_url_is_never_quoted_by_a_diagnostic() {
    const SECRET: &str = "hunter2-never-quoted";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), "rules: []\n").unwrap();
    for (name, config) in [
        // Refused by the config's own check, at the store's line.
        (
            "scheme.yaml",
            format!(
                "listen: 127.0.0.1:0\npolicy: policy.yaml\ntrust_domains: {{}}\ngovernance:\n  store: REDIS://:{SECRET}@redis:6379/0\n"
            ),
        ),
        // Refused by the YAML reader, quoting the store's line.
        (
            "unknown.yaml",
            format!(
                "listen: 127.0.0.1:0\npolicy: policy.yaml\ntrust_domains: {{}}\ngovernance: {{store: \"redis://:{SECRET}@redis:6379/0\", bogus: 1}}\n"
            ),
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, &config).unwrap();
        let path = path.to_str().unwrap();
        let (code, out, err) = run(&["check", path]);
        assert_ne!(code, 0, "{name}: {out}{err}");
        let (serve_code, serve_out, serve_err) = run(&["serve", "--config", path]);
        assert_ne!(serve_code, 0, "{name}");
        for text in [out, err, serve_out, serve_err] {
            assert!(
                !text.contains(SECRET),
                "{name}: the password is quoted:\n{text}"
            );
        }
    }
}

/// The JSON revocations and risks files `celador signals serve` writes
/// (`FileSink`, its own code here) are checked as what they are: clean ones
/// pass, and a mistake in either is placed at its entry with a caret.
#[tokio::test(flavor = "current_thread")]
async fn check_reads_the_signals_receivers_json_revocations_and_risks_files() {
    use celador::engine::signals::RiskLevel;
    use celador::ssf::event::{Action, Outcome, Provenance, Revocation};
    use celador::ssf::sink::{FileSink, Sink};
    use celador::ssf::subject::Target;

    let dir = tempfile::tempdir().unwrap();
    let (revocations, risks) = (
        dir.path().join("revoked.yaml"),
        dir.path().join("risk.yaml"),
    );
    let sink = FileSink::open(&revocations)
        .unwrap()
        .with_risks(
            &risks,
            std::time::Duration::from_secs(86_400),
            celador::ssf::sink::RiskCap::default(),
        )
        .unwrap();
    let provenance = Provenance {
        transmitter: "https://idp.example.com/".into(),
        event: "https://schemas.openid.net/secevent/risc/event-type/account-disabled".into(),
        jti: "j-1".into(),
        at: std::time::SystemTime::now() - std::time::Duration::from_secs(5),
    };
    let actions = vec![
        Action::Revoke {
            entry: Revocation::SpiffeId("spiffe://example.org/ns/a/sa/canary".into()),
            reason: "account-disabled".into(),
        },
        Action::Risk {
            target: Target::Id("spiffe://example.org/ns/a/sa/api".into()),
            level: RiskLevel::High,
            reason: None,
        },
    ];
    sink.apply(&[Outcome::Actions(provenance, actions)])
        .await
        .unwrap();
    let (revocations_text, risks_text) = (
        std::fs::read_to_string(&revocations).unwrap(),
        std::fs::read_to_string(&risks).unwrap(),
    );
    assert!(revocations_text.contains("{\n"), "JSON: {revocations_text}");
    assert!(risks_text.contains("\"risks\""), "{risks_text}");
    let paths = [revocations.to_str().unwrap(), risks.to_str().unwrap()];
    let (code, out) = check(&paths, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 file(s) checked: 0 error(s)"), "{out}");

    // A mistake in each, placed at its line (not read as a rules file).
    let line_of =
        |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let broken = revocations_text.replace("spiffe://example.org/ns/a/sa/canary", "not-an-id");
    std::fs::write(&revocations, &broken).unwrap();
    let (code, out) = check(&[paths[0]], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(!out.contains("rules file"), "{out}");
    let line = line_of(&broken, "not-an-id");
    assert!(
        out.contains("error: revocation 1 (reason \"account-disabled")
            && out.contains(&format!(" --> {}:{line}:", revocations.display())),
        "{out}"
    );
    let broken = risks_text.replace("\"high\"", "\"severe\"");
    std::fs::write(&risks, &broken).unwrap();
    let (code, out) = check(&[paths[1]], &[]);
    assert_eq!(code, 1, "{out}");
    let line = line_of(&broken, "severe");
    assert!(out.contains("severe"), "{out}");
    assert!(
        out.contains(&format!(" --> {}:{line}:", risks.display())),
        "{out}"
    );
    // An entry's own problem is placed at the entry.
    let broken = risks_text.replace("spiffe://example.org/ns/a/sa/api", "nope");
    std::fs::write(&risks, &broken).unwrap();
    let (code, out) = check(&[paths[1]], &[]);
    assert_eq!(code, 1, "{out}");
    let entry = line_of(&broken, "\"risks\"") + 1;
    assert!(out.contains("error: risk 1: \"nope\""), "{out}");
    assert!(
        out.contains(&format!(" --> {}:{entry}:", risks.display())),
        "{out}"
    );
}
