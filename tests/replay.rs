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

const EXPORTER: &str = "spiffe://example.org/ns/batch/sa/exporter";
const PAYMENTS: &str = "spiffe://example.org/ns/payments/sa/api";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `celador serve` with `audit.record: all` and the ledger's rules,
/// sends it a day of the ledger's traffic, and returns its audit records,
/// one line each, as it wrote them.
#[tokio::main(flavor = "current_thread")]
async fn record_the_ledgers_traffic() -> String {
    use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
    use support::check::request;

    let dir = tempfile::tempdir().unwrap();
    let ca = support::pki::Ca::root("example.org root");
    std::fs::write(dir.path().join("example.org.pem"), &ca.pem).unwrap();
    std::fs::copy(
        root().join("examples/replay/ledger.yaml"),
        dir.path().join("ledger.yaml"),
    )
    .unwrap();
    let config = write(
        dir.path(),
        "celador.yaml",
        "listen: 127.0.0.1:0\npolicy: ledger.yaml\ntrust_domains:\n  example.org:\n    bundle: example.org.pem\nworker_threads: 1\naudit:\n  headers: [user-agent]\n  record: all\nlog:\n  format: json\n",
    );
    let celador = support::celador::Celador::start(Path::new(&config));
    let mut client = AuthorizationClient::connect(format!("http://{}", celador.addr))
        .await
        .unwrap();
    let (exporter, payments) = (
        ca.svid(EXPORTER).envoy_encoded(),
        ca.svid(PAYMENTS).envoy_encoded(),
    );
    type Call<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)]);
    let traffic: [Call<'_>; 5] = [
        (&payments, "POST", "/transfers", &[]),
        (
            &exporter,
            "GET",
            "/export/daily.csv",
            &[("x-tenant", "acme")],
        ),
        (
            &exporter,
            "GET",
            "/export/all.csv",
            &[("x-tenant", "globex")],
        ),
        (
            &exporter,
            "DELETE",
            "/export/daily.csv",
            &[("x-tenant", "acme")],
        ),
        ("", "GET", "/export/daily.csv", &[]),
    ];
    for (i, (cert, method, path, headers)) in traffic.into_iter().enumerate() {
        let id = format!("ledger-{}", i + 1);
        let mut headers = headers.to_vec();
        headers.push(("x-request-id", &id));
        headers.push(("authorization", "Bearer s3cr3t-not-a-svid"));
        client
            .check(request(cert, method, path, &headers))
            .await
            .unwrap();
    }
    support::wait_for(std::time::Duration::from_secs(5), || {
        (celador.audit_count() == 5).then_some(())
    })
    .unwrap();
    let mut log = String::new();
    for record in celador.audit_records() {
        log.push_str(&record.to_string());
        log.push('\n');
    }
    log
}

#[test]
fn replay_re_decides_recorded_traffic_and_reports_what_would_change() {
    let log = record_the_ledgers_traffic();
    assert!(!log.contains("s3cr3t"), "{log}");
    let dir = tempfile::tempdir().unwrap();
    let audit = write(dir.path(), "audit.jsonl", &log);
    if std::env::var_os("CELADOR_BLESS").is_some() {
        std::fs::write(root().join("examples/replay/audit.jsonl"), &log).unwrap();
    }
    let current = root().join("examples/replay/ledger.yaml");
    let candidate = root().join("examples/replay/ledger-candidate.yaml");
    let (current, candidate) = (current.to_str().unwrap(), candidate.to_str().unwrap());

    // The rules that recorded it decide every record as it was decided.
    let (code, out, err) = run(&["replay", "--rules", current, &audit]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("replayed 5 record(s) against ")
            && out.contains(": 4 re-decided, 0 would change, 0 could not be decided, 1 decided before the rules\n"),
        "{out}"
    );
    assert!(
        out.contains("decided before the rules: svid_missing  1"),
        "{out}"
    );

    // The candidate denies the exporter's other tenant, and only that.
    let (code, out, err) = run(&["replay", "--rules", candidate, &audit]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("4 re-decided, 1 would change"), "{out}");
    assert!(out.contains("  allow -> deny  1\n"), "{out}");
    assert!(out.contains("  exporter-reads -> (none)  1\n"), "{out}");
    assert!(out.contains("line 3 (request ledger-3): GET api.example.org/export/all.csv from spiffe://example.org/ns/batch/sa/exporter"), "{out}");
    assert!(
        out.contains(
            "  was: allow by rule 'exporter-reads' (allowed)\n  now: deny (no_allow_rule)\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("allow rule 'exporter-reads-own-tenant' (came closest) did not match; the first false clause is `request.headers[\"x-tenant\"] == \"acme\"` (false)")
            && out.contains("request.headers[\"x-tenant\"] == \"acme\"  => false"),
        "{out}"
    );
    let (code, _, _) = run(&["replay", "--rules", candidate, "--allow-changes", &audit]);
    assert_eq!(code, 0);
    let (_, json, _) = run(&["replay", "--rules", candidate, "--format", "json", &audit]);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["by_outcome"], serde_json::json!({"allow -> deny": 1}));
    assert_eq!(json["changes"][0]["request_id"], "ledger-3");
    assert_eq!(json["changes"][0]["new"]["verdict"], "deny (no_allow_rule)");

    // A candidate reading what was recorded only redacted cannot decide.
    let nosy = write(
        dir.path(),
        "nosy.yaml",
        "rules:\n  - name: bearer\n    effect: allow\n    when: request.headers[\"authorization\"] == \"x\"\n",
    );
    let (code, out, _) = run(&["replay", "--rules", &nosy, &audit]);
    assert_eq!(code, 1);
    assert!(
        out.contains("0 re-decided, 0 would change, 4 could not be decided"),
        "{out}"
    );
    assert!(out.contains("cannot decide line 1 (request ledger-1): the rules read request.headers[\"authorization\"] (recorded as <redacted>)"), "{out}");

    // eval takes one record line as its input (item 2).
    let line = write(dir.path(), "line.json", log.lines().nth(2).unwrap());
    let (code, out, err) = run(&["eval", "--rules", candidate, "--input", &line]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("input: an audit record (now = its decision time; recorded: allow allowed)"),
        "{out}"
    );
    assert!(out.contains("decision: deny (no_allow_rule)"), "{out}");
}

/// `celador ARGS...` run in the repository's root, as the README runs it.
fn run_in_root(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(support::celador::binary())
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_readme_quotes_the_replay_of_the_shipped_log_as_it_is() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let command =
        "celador replay --rules examples/replay/ledger-candidate.yaml examples/replay/audit.jsonl";
    let after = readme
        .split_once(&format!("   {command}\n   ```\n\n   ```text\n"))
        .expect("the README runs replay on the shipped log")
        .1;
    let quoted: String = after
        .split_once("   ```\n")
        .unwrap()
        .0
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("   ").unwrap_or(l)))
        .collect();
    let args: Vec<&str> = command.split(' ').skip(1).collect();
    let (code, out) = run_in_root(&args);
    assert_eq!(code, 1);
    assert_eq!(quoted, out);
    // The log is real: celador serve wrote it (see
    // `replay_re_decides_recorded_traffic_and_reports_what_would_change`,
    // which rewrites it with CELADOR_BLESS=1), with every attribute.
    let log = std::fs::read_to_string(root().join("examples/replay/audit.jsonl")).unwrap();
    for line in log.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(record["envoy_stream_id"].is_string(), "{line}");
    }
}

#[test]
fn the_shipped_check_request_evaluates_as_the_readme_says() {
    let (code, out) = run_in_root(&[
        "eval",
        "--rules",
        "examples/policy.yaml",
        "--input",
        "examples/replay/check-request.json",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("decision: allow by rule 'exporter-read-only' (allowed)"),
        "{out}"
    );
}

#[test]
fn a_record_without_what_the_candidate_reads_is_named_never_guessed() {
    let log = std::fs::read_to_string(root().join("examples/replay/audit.jsonl")).unwrap();
    // As `audit.record: read` would have kept it: what the deciding rule
    // read, no headers.
    let mut record: serde_json::Value = serde_json::from_str(log.lines().nth(2).unwrap()).unwrap();
    let read = record["read"].as_object_mut().unwrap();
    read.retain(|k, _| ["source.id", "request.method", "request.path"].contains(&k.as_str()));
    let dir = tempfile::tempdir().unwrap();
    let audit = write(
        dir.path(),
        "audit.jsonl",
        &format!(
            "{record}\nnot json at all\n{{\"level\":\"INFO\",\"message\":\"reloaded\"}}\n{{\"decision\":\"allow\"}}\n"
        ),
    );
    let candidate = root().join("examples/replay/ledger-candidate.yaml");
    let (code, out, err) = run(&["replay", "--rules", candidate.to_str().unwrap(), &audit]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("0 re-decided, 0 would change, 1 could not be decided"),
        "{out}"
    );
    assert!(
        out.contains(
            "cannot decide line 1 (request ledger-3): the rules read request.headers[\"x-tenant\"] (not recorded)"
        ),
        "{out}"
    );
    assert!(
        out.contains("cannot read line 4: not an audit record"),
        "{out}"
    );
    assert!(
        out.contains("2 other line(s) skipped: not audit records"),
        "{out}"
    );
    // The rules that recorded it read only what it holds: it decides.
    let current = root().join("examples/replay/ledger.yaml");
    let (code, out, _) = run(&[
        "replay",
        "--rules",
        current.to_str().unwrap(),
        &write(dir.path(), "one.jsonl", &record.to_string()),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 re-decided, 0 would change"), "{out}");
}

#[test]
fn a_suite_that_does_not_parse_reports_every_error_once_with_its_caret() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "r.yaml",
        "rules:\n  - name: a\n    effect: allow\n    when: \"true\"\n",
    );
    let suite = write(
        dir.path(),
        "s_test.yaml",
        "rules: r.yaml\ncases:\n  - name: one\n    identity: spiffe://example.org/a\n    requst: {method: GET}\n    expect: {decision: allw}\n  - name: fine\n    expect: {decision: allow}\n  - name: two\n    expect: {decison: deny}\n    request:\n      methd: GET\n",
    );
    let (code, out, err) = run(&["test", &suite]);
    assert_eq!(code, 1, "{out}{err}");
    assert_each_error_once_in_order(
        &out,
        &[
            (
                "unknown field `requst`",
                ":5:5",
                &["5 |     requst: {method: GET}", "  |     ^\n"],
            ),
            (
                "unknown variant `allw`",
                ":6:24",
                &[
                    "6 |     expect: {decision: allw}",
                    "  |                        ^\n",
                ],
            ),
            (
                "unknown field `decison`",
                ":10:14",
                &["10 |     expect: {decison: deny}", "   |              ^\n"],
            ),
            (
                "unknown field `methd`",
                ":12:7",
                &["12 |       methd: GET", "   |       ^\n"],
            ),
        ],
    );
    // No error of recovery's making (`decision` is missing only because
    // `decison` is misspelled), and no position said twice.
    assert!(!out.contains("at line"), "{out}");
    // `check` says the same errors.
    let (code, out, err) = run(&["check", &suite]);
    assert_eq!(code, 1, "{out}{err}");
    for message in ["`requst`", "`allw`", "`decison`", "`methd`"] {
        assert_eq!(out.matches(message).count(), 1, "{out}");
    }
    assert!(out.contains("4 error(s)"), "{out}");
}

/// Asserts that `out` reports exactly the errors `expected`, each once and
/// in file order: its message, then the file's `:line:column` and each of
/// the given lines (the quoted source, the caret) after it.
fn assert_each_error_once_in_order(out: &str, expected: &[(&str, &str, &[&str])]) {
    for (message, position, lines) in expected {
        assert_eq!(out.matches(message).count(), 1, "{out}");
        let rest = &out[out.find(message).unwrap()..];
        assert!(rest.contains(&format!("s_test.yaml{position}\n")), "{out}");
        for line in *lines {
            assert!(rest.contains(line), "{out}");
        }
    }
    assert_eq!(out.matches("error: ").count(), expected.len(), "{out}");
    let order: Vec<usize> = expected
        .iter()
        .map(|(message, _, _)| out.find(message).unwrap())
        .collect();
    assert!(order.is_sorted(), "{out}");
}

#[test]
fn a_flow_style_suite_that_does_not_parse_reports_every_error_once_with_its_caret() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "r.yaml",
        "rules:\n  - name: a\n    effect: allow\n    when: \"true\"\n",
    );
    let suite = write(
        dir.path(),
        "s_test.yaml",
        "rules: r.yaml\ncases: [{name: one, requst: {method: GET}, expect: {decision: allw}}, {name: fine, expect: {decision: allow}},\n  {name: two, expect: {decison: deny}, request: {methd: GET}}]\n",
    );
    let (code, out, err) = run(&["test", &suite]);
    assert_eq!(code, 1, "{out}{err}");
    let caret = |column: usize| format!("  |{}^\n", " ".repeat(column));
    let carets = [caret(21), caret(63), caret(24), caret(50)];
    assert_each_error_once_in_order(
        &out,
        &[
            ("unknown field `requst`", ":2:21", &[carets[0].as_str()]),
            ("unknown variant `allw`", ":2:63", &[carets[1].as_str()]),
            ("unknown field `decison`", ":3:24", &[carets[2].as_str()]),
            ("unknown field `methd`", ":3:50", &[carets[3].as_str()]),
        ],
    );
    let (code, out, err) = run(&["check", &suite]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("4 error(s)"), "{out}");

    // Broken YAML stops the parser: its first error, the mistake, and
    // that nothing after it was checked.
    let broken = write(
        dir.path(),
        "b_test.yaml",
        "rules: r.yaml\ncases: [{name: one, requst: {}}, {name: [x}, {name: two, methd: 1}]\n",
    );
    let (code, out, err) = run(&["test", &broken]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(out.matches("unknown field `requst`").count(), 1, "{out}");
    assert!(out.contains("later cases included, was checked"), "{out}");
    assert_eq!(out.matches("error: ").count(), 2, "{out}");
    assert!(!out.contains("unknown field `methd`"), "{out}");
}

#[test]
fn the_readmes_set_up_requests_decide_as_it_says() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let setup = readme
        .split_once("## Set up")
        .unwrap()
        .1
        .split_once("## How a check works")
        .unwrap()
        .0;
    assert!(
        setup.contains("```sh\ncargo run --release -- serve --config examples/celador.yaml\n```")
    );
    assert!(readme.contains("`cargo install --path .` puts the `celador` command on `PATH`"));
    // Each request the set-up sends, as a case with the certificate it
    // names, decided by the example's rules as the comment above it says.
    for (path, verdict) in [
        (
            "/export/daily.csv",
            "allow by rule 'exporter-read-only' (allowed)",
        ),
        (
            "/admin/users",
            "deny by rule 'admin-closed' (denied_by_rule)",
        ),
    ] {
        assert!(
            setup.contains(&format!(
                "--key pki/batch-exporter.key \\\n     https://localhost:10000{path}\n"
            )),
            "{setup}"
        );
        let dir = tempfile::tempdir().unwrap();
        let case = dir.path().join("case.yaml");
        std::fs::write(
            &case,
            format!(
                "name: set-up\ncertificate: {}\nrequest: {{method: GET, path: \"{path}\", host: localhost}}\n",
                root().join("examples/pki/batch-exporter.pem").display()
            ),
        )
        .unwrap();
        let (code, out) = run_in_root(&[
            "eval",
            "--rules",
            "examples/policy.yaml",
            "--input",
            case.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains(&format!("decision: {verdict}")), "{out}");
    }
    // The stand-in upstream is where examples/envoy.yaml sends allowed
    // requests.
    let envoy = std::fs::read_to_string(root().join("examples/envoy.yaml")).unwrap();
    assert!(envoy.contains("port_value: 8080"), "{envoy}");
}

#[test]
fn why_not_shows_the_allow_rules_that_came_closest_without_expect_rule() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "rules.yaml", LEDGER_RULES);
    let suite = write(
        dir.path(),
        "why_test.yaml",
        "rules: rules.yaml\ncases:\n  - name: a busy exporter expected to pass\n    identity: spiffe://example.org/ns/batch/sa/exporter\n    request: {method: GET, path: /ledger}\n    signals: {requests_1m: 700}\n    expect: {decision: allow}\n",
    );
    let (code, out, _) = run(&["test", &suite]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("allow rule 'exporter-reads' (came closest) did not match; the first false clause is `signals.requests_1m < 100` (false):"),
        "{out}"
    );
    assert!(out.contains("request.method == \"GET\"  => true"), "{out}");
    // eval says the same of the case, in JSON too.
    let case = write(
        dir.path(),
        "case.yaml",
        "name: busy\nidentity: spiffe://example.org/ns/batch/sa/exporter\nrequest: {method: GET, path: /ledger}\nsignals: {requests_1m: 700}\n",
    );
    let rules = dir.path().join("rules.yaml");
    let (_, out, _) = run(&[
        "eval",
        "--rules",
        rules.to_str().unwrap(),
        "--input",
        &case,
        "--format",
        "json",
    ]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let why = &json["why"]["rules"][0];
    assert_eq!(why["rule"], "exporter-reads", "{json}");
    assert_eq!(why["role"], "came closest");
    assert_eq!(why["first_false_clause"], "signals.requests_1m < 100");
}

#[test]
fn explanations_show_the_computed_values_a_clause_compares_never_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "rules.yaml",
        "rules:\n  - name: night\n    effect: allow\n    when: request.time.getHours(\"UTC\") >= 20 && request.headers[\"authorization\"].size() > 100 && request.path.size() == 7\n",
    );
    let case = write(
        dir.path(),
        "case.yaml",
        "name: one\nidentity: spiffe://example.org/ns/a/sa/b\nrequest: {method: GET, path: /ledger, headers: {authorization: Bearer abcdefgh}}\ntime: \"2030-03-08T20:00:00Z\"\n",
    );
    let rules = dir.path().join("rules.yaml");
    let (_, out, _) = run(&["eval", "--rules", rules.to_str().unwrap(), "--input", &case]);
    assert!(out.contains("request.time.getHours(\"UTC\") = 20"), "{out}");
    assert!(out.contains("request.path.size() = 7"), "{out}");
    assert!(
        out.contains("request.headers[\"authorization\"].size() = \"<redacted>\""),
        "{out}"
    );
    assert!(!out.contains("= 15") && !out.contains("abcdefgh"), "{out}");
}

#[test]
fn clause_coverage_finds_the_missing_negative_cases() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "rules.yaml", LEDGER_RULES);
    // Every rule matched once: rule coverage is full, but no case saw the
    // method or the signals clause false.
    let suite = write(
        dir.path(),
        "cov_test.yaml",
        "rules: rules.yaml\ncases:\n  - name: the exporter reads\n    identity: spiffe://example.org/ns/batch/sa/exporter\n    request: {method: GET, path: /ledger}\n    expect: {decision: allow}\n  - name: someone else\n    identity: spiffe://example.org/ns/a/sa/b\n    request: {method: GET, path: /ledger}\n    expect: {decision: deny}\n",
    );
    let (code, out, _) = run(&["test", &suite, "--min-coverage", "100"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("clauses: 1 of 3 seen both true and false"),
        "{out}"
    );
    assert!(
        out.contains("rule exporter-reads: `request.method == \"GET\"` never false\n"),
        "{out}"
    );
    assert!(
        out.contains("rule exporter-reads: `signals.requests_1m < 100` never false\n"),
        "{out}"
    );
    assert!(
        out.contains("100% of rules and grants covered; 33% of clauses seen both true and false"),
        "{out}"
    );
    let (code, out, _) = run(&["test", &suite, "--min-clause-coverage", "50"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("clause coverage 33% is below --min-clause-coverage 50%"),
        "{out}"
    );
    // The missing negative cases close the gap.
    let text = std::fs::read_to_string(&suite).unwrap()
        + "  - name: the exporter may not post\n    identity: spiffe://example.org/ns/batch/sa/exporter\n    request: {method: POST, path: /ledger}\n    signals: {requests_1m: 700}\n    expect: {decision: deny}\n";
    std::fs::write(&suite, text).unwrap();
    let (code, out, _) = run(&["test", &suite, "--min-clause-coverage", "100"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn audit_record_takes_read_or_all_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "policy.yaml", LEDGER_RULES);
    let config = write(
        dir.path(),
        "celador.yaml",
        "listen: 127.0.0.1:0\npolicy: policy.yaml\ntrust_domains:\n  example.org:\n    bundle: example.org.pem\naudit:\n  record: everything\n",
    );
    let (code, _, err) = run(&["serve", "--config", &config]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("everything") && err.contains("read") && err.contains("all"),
        "{err}"
    );
}

/// `audit.record: all` records every header, each as the one redaction
/// shows it and bounded as `audit.headers` are.
#[tokio::test(flavor = "current_thread")]
async fn recording_all_headers_redacts_credentials_and_bounds_each_value() {
    use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
    use support::check::request;

    let dir = tempfile::tempdir().unwrap();
    let ca = support::pki::Ca::root("example.org root");
    std::fs::write(dir.path().join("example.org.pem"), &ca.pem).unwrap();
    write(dir.path(), "policy.yaml", LEDGER_RULES);
    let config = write(
        dir.path(),
        "celador.yaml",
        "listen: 127.0.0.1:0\npolicy: policy.yaml\ntrust_domains:\n  example.org:\n    bundle: example.org.pem\nworker_threads: 1\naudit:\n  record: all\nlog:\n  format: json\n",
    );
    let celador = support::celador::Celador::start(Path::new(&config));
    let mut client = AuthorizationClient::connect(format!("http://{}", celador.addr))
        .await
        .unwrap();
    let big = "b".repeat(5000);
    let headers = [
        ("x-passcode", "123456"),
        ("x-authn", "hunter4"),
        ("x-shopify-hmac-sha256", "c2lnbmF0dXJl"),
        ("x-big", big.as_str()),
        ("x-tenant", "acme"),
    ];
    let exporter = ca.svid(EXPORTER).envoy_encoded();
    client
        .check(request(&exporter, "GET", "/export/daily.csv", &headers))
        .await
        .unwrap();
    let record = support::wait_for(std::time::Duration::from_secs(5), || {
        celador.audit_records().into_iter().next()
    })
    .unwrap();
    let recorded = &record["read"]["request.headers"];
    for secret in ["x-passcode", "x-authn", "x-shopify-hmac-sha256"] {
        assert_eq!(recorded[secret], "<redacted>", "{secret}: {record}");
    }
    assert_eq!(recorded["x-tenant"], "acme", "{record}");
    assert_eq!(recorded["x-big"].as_str().unwrap().len(), 1024, "{record}");
    let text = record.to_string();
    assert!(
        !text.contains("123456") && !text.contains("hunter4"),
        "{text}"
    );
}

/// Two checks of the exporter through `celador serve` with `audit.record:
/// all` and `x-tenant` audited: one with a tenant header longer than a
/// record keeps (1 KiB), one with a short one; their records.
#[tokio::main(flavor = "current_thread")]
async fn record_a_long_header(long: &str) -> Vec<serde_json::Value> {
    use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
    use support::check::request;

    let dir = tempfile::tempdir().unwrap();
    let ca = support::pki::Ca::root("example.org root");
    std::fs::write(dir.path().join("example.org.pem"), &ca.pem).unwrap();
    std::fs::copy(
        root().join("examples/replay/ledger.yaml"),
        dir.path().join("ledger.yaml"),
    )
    .unwrap();
    let config = write(
        dir.path(),
        "celador.yaml",
        "listen: 127.0.0.1:0\npolicy: ledger.yaml\ntrust_domains:\n  example.org:\n    bundle: example.org.pem\nworker_threads: 1\naudit:\n  headers: [x-tenant]\n  record: all\nlog:\n  format: json\n",
    );
    let celador = support::celador::Celador::start(Path::new(&config));
    let mut client = AuthorizationClient::connect(format!("http://{}", celador.addr))
        .await
        .unwrap();
    let exporter = ca.svid(EXPORTER).envoy_encoded();
    for (id, tenant) in [("long", long), ("short", "acme")] {
        let headers = [("x-request-id", id), ("x-tenant", tenant)];
        client
            .check(request(&exporter, "GET", "/export/daily.csv", &headers))
            .await
            .unwrap();
    }
    support::wait_for(std::time::Duration::from_secs(5), || {
        (celador.audit_count() == 2).then_some(())
    })
    .unwrap();
    celador.audit_records()
}

#[test]
fn a_value_cut_in_the_record_is_marked_and_replay_never_decides_on_it() {
    // Longer than a record keeps, and a candidate's test of its end holds
    // on the request but not on what the record kept.
    let long = format!("{}-tail", "a".repeat(1500));
    let records = record_a_long_header(&long);
    let by_id = |id: &str| records.iter().find(|r| r["request_id"] == id).unwrap();
    let (cut, whole) = (by_id("long"), by_id("short"));
    let path = r#"request.headers["x-tenant"]"#;
    assert_eq!(cut["truncated"], serde_json::json!([path]), "{cut}");
    assert_eq!(
        cut["read"]["request.headers"]["x-tenant"]
            .as_str()
            .unwrap()
            .len(),
        1024
    );
    assert_eq!(cut["headers"]["x-tenant"].as_str().unwrap().len(), 1024);
    assert!(whole.get("truncated").is_none(), "{whole}");

    let dir = tempfile::tempdir().unwrap();
    let log = format!("{cut}\n{whole}\n");
    let audit = write(dir.path(), "audit.jsonl", &log);
    let candidate = write(
        dir.path(),
        "candidate.yaml",
        "rules:\n  - name: known-tenants\n    effect: allow\n    when: request.headers[\"x-tenant\"].endsWith(\"-tail\") || request.headers[\"x-tenant\"] == \"acme\"\n",
    );
    let (code, out, err) = run(&["replay", "--rules", &candidate, &audit]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(
            ": 1 re-decided, 0 would change, 1 could not be decided, 0 decided before the rules\n"
        ),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "cannot decide line 1 (request long): the rules read {path} (value truncated)\n"
        )),
        "{out}"
    );
    // `eval` on the record says the same, rather than decide on the cut.
    let line = write(dir.path(), "record.json", &cut.to_string());
    let (code, out, err) = run(&["eval", "--rules", &candidate, "--input", &line]);
    assert_ne!(code, 0, "{out}");
    assert!(
        format!("{out}{err}").contains("(value truncated)"),
        "{out}{err}"
    );
    // Rules that read no cut value decide the record.
    let current = root().join("examples/replay/ledger.yaml");
    let (code, out, _) = run(&["replay", "--rules", current.to_str().unwrap(), &audit]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(": 2 re-decided, 0 would change"), "{out}");
}

/// A header whose value is a URL or a path (`:path`, `referer`,
/// `x-forwarded-uri`) has its query redacted as the request's own, in the
/// record's `headers` (`audit.headers`) and `read` (`audit.record: all`);
/// a candidate reading one cannot decide on the record, and says so.
#[tokio::test(flavor = "current_thread")]
async fn a_query_in_a_url_valued_header_never_reaches_a_record() {
    use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
    use support::check::request;

    let dir = tempfile::tempdir().unwrap();
    let ca = support::pki::Ca::root("example.org root");
    std::fs::write(dir.path().join("example.org.pem"), &ca.pem).unwrap();
    let ledger = root().join("examples/replay/ledger.yaml");
    std::fs::copy(&ledger, dir.path().join("ledger.yaml")).unwrap();
    let config = write(
        dir.path(),
        "celador.yaml",
        "listen: 127.0.0.1:0\npolicy: ledger.yaml\ntrust_domains:\n  example.org:\n    bundle: example.org.pem\nworker_threads: 1\naudit:\n  headers: [referer, x-forwarded-uri, link]\n  query_params: [page]\n  record: all\nlog:\n  format: json\n",
    );
    let celador = support::celador::Celador::start(Path::new(&config));
    let mut client = AuthorizationClient::connect(format!("http://{}", celador.addr))
        .await
        .unwrap();
    let headers = [
        (":path", "/export/daily.csv?token=s3cr3t-path"),
        ("referer", "https://app/cb?code=s3cr3t-referer&page=2"),
        ("x-forwarded-uri", "/reset?t=s3cr3t-uri"),
        (
            "link",
            "<https://app/items;jsessionid=s3cr3t-session?page=2&token=s3cr3t-link>; rel=\"next\"",
        ),
        ("x-tenant", "acme"),
    ];
    let exporter = ca.svid(EXPORTER).envoy_encoded();
    client
        .check(request(
            &exporter,
            "GET",
            "/export/daily.csv?token=s3cr3t-path",
            &headers,
        ))
        .await
        .unwrap();
    let record = support::wait_for(std::time::Duration::from_secs(5), || {
        celador.audit_records().into_iter().next()
    })
    .unwrap();
    let text = record.to_string();
    assert!(!text.contains("s3cr3t"), "{text}");
    let shown_referer = "https://app/cb?code=%3Credacted%3E&page=2";
    assert_eq!(record["headers"]["referer"], shown_referer, "{record}");
    assert_eq!(
        record["headers"]["x-forwarded-uri"], "/reset?t=%3Credacted%3E",
        "{record}"
    );
    // A URL inside a value, its path parameters too.
    assert_eq!(
        record["headers"]["link"],
        "<https://app/items;jsessionid=%3Credacted%3E?page=2&token=%3Credacted%3E>; rel=\"next\"",
        "{record}"
    );
    let read = &record["read"]["request.headers"];
    assert_eq!(read["referer"], shown_referer, "{record}");
    assert_eq!(
        read[":path"], "/export/daily.csv?token=%3Credacted%3E",
        "{record}"
    );
    assert_eq!(read["x-tenant"], "acme", "{record}");

    // Rules that read no such header decide the record; one that does is
    // told the value was recorded redacted, never decided on it.
    let audit = write(dir.path(), "audit.jsonl", &format!("{text}\n"));
    let (code, out, err) = run(&["replay", "--rules", ledger.to_str().unwrap(), &audit]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(": 1 re-decided, 0 would change"), "{out}");
    let nosy = write(
        dir.path(),
        "nosy.yaml",
        "rules:\n  - name: from-the-app\n    effect: allow\n    when: request.headers[\"referer\"].startsWith(\"https://app/\")\n",
    );
    let (code, out, _) = run(&["replay", "--rules", &nosy, &audit]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("the rules read request.headers[\"referer\"] (recorded as <redacted>)"),
        "{out}"
    );
    let line = write(dir.path(), "record.json", &text);
    let (code, out, err) = run(&["eval", "--rules", &nosy, "--input", &line]);
    assert_ne!(code, 0, "{out}");
    assert!(
        format!("{out}{err}").contains("(recorded as <redacted>)"),
        "{out}{err}"
    );
}
