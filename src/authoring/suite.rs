//! Policy test suites: what `celador test` runs.
//!
//! ```yaml
//! rules: payments.yaml                     # the rules under test, beside this file
//! defaults:                                # merged into every case
//!   request: { host: payments.internal }
//! cases:
//!   - name: the payments API may charge
//!     identity: spiffe://example.org/ns/payments/sa/api
//!     request: { method: POST, path: /charge }
//!     expect: { decision: allow, rule: payments-api }
//! ```
//!
//! Data flow: each case becomes exactly what `serve` would evaluate (a
//! `CheckRequest` read by the same attributes code, the identities, the
//! workload, a clock), the policy decides, and the decision is compared with
//! what the case expects. Results render as text for people and JUnit XML
//! for CI systems.

pub mod case;
pub mod coverage;
pub mod errors;

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::authoring::governance::Governance;
use crate::engine::Decision;
use crate::engine::attributes::Attributes;
use crate::engine::grants::Grants;
use crate::engine::policy::{Input, Policy};
use crate::engine::redaction::Redaction;
use case::{Case, ExpectedDecision};

/// A test suite file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteFile {
    /// The rules file under test, relative to the suite.
    pub rules: PathBuf,
    /// A grants file in force for every case, relative to the suite.
    #[serde(default)]
    pub grants: Option<PathBuf>,
    /// A revocations file in force for every case, relative to the suite.
    #[serde(default)]
    pub revocations: Option<PathBuf>,
    /// Values every case starts from.
    #[serde(default)]
    pub defaults: Case,
    /// The cases.
    pub cases: Vec<Case>,
}

/// The outcome of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// As expected.
    Passed,
    /// Not as expected: what was expected, what happened, and why.
    Failed {
        /// What the case expected.
        expected: String,
        /// What the rules decided.
        got: String,
        /// Why, down to the clause (see `authoring::clauses`), as lines;
        /// empty when not worked out.
        why: String,
    },
    /// The case could not be run.
    Error(String),
}

/// One case's result.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// Its outcome.
    pub outcome: Outcome,
    /// How long it took.
    pub time: std::time::Duration,
    /// The rules whose conditions held for the case (every rule is
    /// evaluated), for coverage.
    pub matched: Vec<String>,
    /// The grant in force for the case, if any.
    pub grant: Option<String>,
    /// Each rule's clauses with their values for the case (`None`: an
    /// error), for clause coverage.
    pub clauses: Vec<coverage::RuleClauses>,
}

/// One suite's results.
#[derive(Debug, Clone)]
pub struct SuiteResult {
    /// The suite file.
    pub path: PathBuf,
    /// A problem with the whole suite (it does not load, nor its rules).
    pub error: Option<String>,
    /// The cases, in order.
    pub cases: Vec<CaseResult>,
    /// The rules file under test, and its rules and grants, for coverage.
    pub covers: Option<Covered>,
}

/// What a suite's cases can cover.
#[derive(Debug, Clone)]
pub struct Covered {
    /// The rules file under test.
    pub rules_file: PathBuf,
    /// Its rules, in order.
    pub rules: Vec<String>,
    /// The grants of the suite's grants file.
    pub grants: Vec<String>,
}

/// How `celador test` runs suites.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Run only the cases whose names contain it.
    pub pattern: Option<String>,
    /// What explanations may show of a case's request.
    pub redaction: Redaction,
}

impl SuiteResult {
    /// Passed cases.
    pub fn passed(&self) -> usize {
        self.cases
            .iter()
            .filter(|c| c.outcome == Outcome::Passed)
            .count()
    }

    /// Cases that failed or could not run; a suite that does not load
    /// counts as one failure.
    pub fn failed(&self) -> usize {
        self.cases.len() - self.passed() + usize::from(self.error.is_some())
    }
}

/// The suite files under `paths`: files as given, directories searched for
/// `*_test.yaml` and `*_test.yml`.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    discover_where(paths, is_suite)
}

/// Whether `name` is a test suite's file name (`*_test.yaml`).
pub fn is_suite(name: &str) -> bool {
    name.ends_with("_test.yaml") || name.ends_with("_test.yml")
}

/// The files among `paths` and, in directories (recursively), the files
/// whose names `wanted` accepts.
pub fn discover_where(paths: &[PathBuf], wanted: fn(&str) -> bool) -> Result<Vec<PathBuf>, String> {
    let mut found = Vec::new();
    for path in paths {
        if path.is_dir() {
            walk(path, wanted, &mut found).map_err(|e| format!("{}: {e}", path.display()))?;
        } else if path.is_file() {
            found.push(path.clone());
        } else {
            return Err(format!("{}: no such file or directory", path.display()));
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}

fn walk(dir: &Path, wanted: fn(&str) -> bool, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, wanted, found)?;
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(wanted)
        {
            found.push(path);
        }
    }
    Ok(())
}

/// Runs the suite at `path`.
pub fn run(path: &Path) -> SuiteResult {
    run_with(path, &Options::default())
}

/// Runs the cases of the suite at `path` that `options` select.
pub fn run_with(path: &Path, options: &Options) -> SuiteResult {
    let failed = |error: String| SuiteResult {
        path: path.to_owned(),
        error: Some(error),
        cases: Vec::new(),
        covers: None,
    };
    let (suite, policy, governance) = match load(path) {
        Ok(loaded) => loaded,
        Err(e) => return failed(e),
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let cases = suite
        .cases
        .into_iter()
        .enumerate()
        .filter_map(|(i, case)| {
            let case = case.with_defaults(&suite.defaults);
            let name = case
                .name
                .clone()
                .unwrap_or_else(|| format!("case {}", i + 1));
            if options
                .pattern
                .as_deref()
                .is_some_and(|p| !name.contains(p))
            {
                return None;
            }
            let started = std::time::Instant::now();
            let mut result = run_case(&policy, &governance, &case, base, &options.redaction);
            result.name = name;
            result.time = started.elapsed();
            Some(result)
        })
        .collect();
    SuiteResult {
        path: path.to_owned(),
        error: None,
        cases,
        covers: Some(Covered {
            rules_file: base.join(&suite.rules),
            rules: policy.rules().iter().map(|r| r.name.to_string()).collect(),
            grants: (governance.grants.grants().iter())
                .map(|g| g.name.to_string())
                .collect(),
        }),
    }
}

/// The suite at `path`, its rules and its grants and revocations, or why
/// they do not load.
fn load(path: &Path) -> Result<(SuiteFile, Policy, Governance), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the suite: {e}"))?;
    let suite = parse_suite(&text, path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let policy = crate::authoring::read_policy(&base.join(&suite.rules))
        .map_err(|e| format!("the rules under test do not load:\n{e}"))?;
    let governance = Governance::read(
        suite.grants.as_ref().map(|f| base.join(f)).as_deref(),
        suite.revocations.as_ref().map(|f| base.join(f)).as_deref(),
        None,
    )?;
    if let Some(name) = duplicate_case_name(&suite.cases) {
        return Err(format!(
            "the case name '{name}' is used twice; each case needs a name of its own"
        ));
    }
    Ok((suite, policy, governance))
}

/// The suite in `text`; a rules file given by mistake is named as such.
fn parse_suite(text: &str, path: &Path) -> Result<SuiteFile, String> {
    crate::engine::yaml::from_str(text, path).map_err(|e| {
        let all = errors::all(text, path, &e);
        if text.lines().any(|l| l.trim_start().starts_with("- name:")) && text.contains("effect:")
        {
            format!(
                "{all}this looks like a rules file (its rules have `effect:`): check it with `celador check`, and test it with a suite that names it in `rules:`"
            )
        } else {
            all
        }
    })
}

/// The first case name used twice, if any.
fn duplicate_case_name(cases: &[Case]) -> Option<&str> {
    let mut seen = std::collections::HashSet::new();
    cases
        .iter()
        .filter_map(|c| c.name.as_deref())
        .find(|name| !seen.insert(*name))
}

/// Runs one case (its defaults already applied) against `policy` with
/// `governance` in force, as `serve` would decide it after verifying its
/// identities; its explanation shows what `redaction` lets be shown.
pub fn run_case(
    policy: &Policy,
    governance: &Governance,
    case: &Case,
    base: &Path,
    redaction: &Redaction,
) -> CaseResult {
    let mut result = CaseResult {
        name: String::new(),
        outcome: Outcome::Passed,
        time: std::time::Duration::ZERO,
        matched: Vec::new(),
        grant: None,
        clauses: Vec::new(),
    };
    let Some(expect) = &case.expect else {
        result.outcome = Outcome::Error("the case has no `expect`".into());
        return result;
    };
    if let Err(problem) = check_expect(expect, policy, &governance.grants) {
        result.outcome = Outcome::Error(problem);
        return result;
    }
    let prepared = match case.prepare(base) {
        Ok(prepared) => prepared,
        Err(e) => {
            result.outcome = Outcome::Error(e);
            return result;
        }
    };
    let attrs = prepared.request.attributes();
    let (outcome, (matched, clauses), grant) =
        evaluate(policy, governance, expect, &prepared, (&attrs, redaction));
    result.outcome = outcome;
    result.matched = matched;
    result.clauses = clauses;
    result.grant = grant;
    result
}

/// Decides a prepared case and judges the decision: the outcome (explained
/// down to the clause when it failed), the rules that matched, the grant.
fn evaluate(
    policy: &Policy,
    governance: &Governance,
    expect: &case::Expect,
    prepared: &case::Prepared,
    (attrs, redaction): (&Attributes<'_>, &Redaction),
) -> (
    Outcome,
    (Vec<String>, Vec<coverage::RuleClauses>),
    Option<String>,
) {
    let input = prepared.input(attrs);
    governance.decide_then(policy, input, |mut decision, input| {
        redaction.decision(&mut decision, attrs);
        let matched = exercised(policy, &decision, input);
        let outcome = match judge(expect, &decision) {
            Outcome::Failed { expected, got, .. } => {
                // Why, down to the clause, with the credentials redacted.
                let shown = redaction.shown(attrs);
                let shown_attrs = shown.attributes();
                let shown = Input {
                    attributes: &shown_attrs,
                    ..input
                };
                let why = crate::authoring::clauses::explain(
                    policy,
                    &decision,
                    expect.rule.as_deref(),
                    (input, shown),
                    redaction,
                );
                Outcome::Failed {
                    expected,
                    got,
                    why: crate::authoring::clauses::render_text(&why, "        "),
                }
            }
            other => other,
        };
        (
            outcome,
            matched,
            decision.grant.as_ref().map(|g| g.name.to_string()),
        )
    })
}

/// The rules that matched `input` and every rule's clauses' values, for
/// coverage: none for a path or a credential refused before the rules.
fn exercised(
    policy: &Policy,
    decision: &Decision,
    input: Input<'_>,
) -> (Vec<String>, Vec<coverage::RuleClauses>) {
    if input.attributes.path_ambiguity.is_some() || decision.revoked.is_some() {
        return (Vec::new(), Vec::new());
    }
    let matched = policy
        .evaluate_all(input)
        .into_iter()
        .filter(|(_, r)| *r == crate::engine::policy::RuleResult::Match)
        .map(|(rule, _)| rule.name.to_string())
        .collect();
    (matched, coverage::clause_values(policy, input))
}

/// An `expect` that names what cannot be: a reason rules never give, a
/// grant or a rule the files under test do not have.
fn check_expect(expect: &case::Expect, policy: &Policy, grants: &Grants) -> Result<(), String> {
    if let Some(reason) = &expect.reason
        && ![
            "allowed",
            "denied_by_rule",
            "rule_error",
            "no_allow_rule",
            "granted",
            "invalid_path",
            "revoked",
        ]
        .contains(&reason.as_str())
    {
        return Err(format!(
            "expect.reason {reason:?} is not one rules give: allowed, denied_by_rule, rule_error, no_allow_rule, granted, invalid_path or revoked"
        ));
    }
    if let Some(grant) = &expect.grant
        && !grant.is_empty()
        && !grants.grants().iter().any(|g| &*g.name == grant.as_str())
    {
        return Err(format!(
            "expect.grant '{grant}' is not a grant of the suite's grants file"
        ));
    }
    if let Some(rule) = &expect.rule
        && !policy.rules().iter().any(|r| &*r.name == rule.as_str())
    {
        let names: Vec<&str> = policy.rules().iter().map(|r| &*r.name).collect();
        return Err(format!(
            "expect.rule '{rule}' is not a rule of the file under test (its rules: {})",
            names.join(", ")
        ));
    }
    Ok(())
}

/// Whether `decision` is what `expect` says: passed, or failed with what
/// was expected and what happened.
pub fn judge(expect: &case::Expect, decision: &Decision) -> Outcome {
    let decision_ok = match expect.decision {
        ExpectedDecision::Allow => decision.allowed,
        ExpectedDecision::Deny => !decision.allowed,
    };
    let rule_ok = expect
        .rule
        .as_deref()
        .is_none_or(|r| decision.rule.as_deref() == Some(r));
    let reason_ok = expect
        .reason
        .as_deref()
        .is_none_or(|r| decision.reason.as_str() == r);
    let grant_ok = expect
        .grant
        .as_deref()
        .is_none_or(|g| decision.grant.as_ref().map_or("", |d| &d.name) == g);
    if decision_ok && rule_ok && reason_ok && grant_ok {
        return Outcome::Passed;
    }
    let mut expected = match expect.decision {
        ExpectedDecision::Allow => "allow".to_owned(),
        ExpectedDecision::Deny => "deny".to_owned(),
    };
    if let Some(rule) = &expect.rule {
        expected.push_str(&format!(" by rule '{rule}'"));
    }
    if let Some(reason) = &expect.reason {
        expected.push_str(&format!(" ({reason})"));
    }
    if let Some(grant) = expect.grant.as_deref().filter(|g| !g.is_empty()) {
        expected.push_str(&format!(" with grant '{grant}'"));
    }
    Outcome::Failed {
        expected,
        got: describe(decision),
        why: String::new(),
    }
}

/// A decision in words: `allow by rule 'x' (allowed)`. Only the deciding
/// rule's error is named, as the cause of a `rule_error`; other rules'
/// errors are not the cause and are listed apart (`authoring::clauses`).
pub fn describe(decision: &Decision) -> String {
    let mut text = if decision.allowed { "allow" } else { "deny" }.to_owned();
    if let Some(rule) = &decision.rule {
        text.push_str(&format!(" by rule '{rule}'"));
    }
    text.push_str(&format!(" ({})", decision.reason));
    if let Some(grant) = &decision.grant {
        text.push_str(&format!(" with grant '{}'", grant.name));
    }
    if let Some(cause) = decision
        .errors
        .iter()
        .find(|e| decision.rule.as_deref() == Some(&*e.rule))
    {
        text.push_str(&format!(": {}", cause.error));
    }
    if decision.reason == crate::engine::Reason::InvalidPath
        && let Some(detail) = &decision.detail
    {
        text.push_str(&format!(": {detail}"));
    }
    text
}

/// The results for people; the last line is `N passed, N failed`.
pub fn render_text(results: &[SuiteResult]) -> String {
    let mut out = String::new();
    for suite in results {
        out.push_str(&format!("{}\n", suite.path.display()));
        if let Some(error) = &suite.error {
            out.push_str(&format!("  ERROR {}\n", error.replace('\n', "\n        ")));
        }
        for case in &suite.cases {
            match &case.outcome {
                Outcome::Passed => out.push_str(&format!("  PASS  {}\n", case.name)),
                Outcome::Failed { expected, got, why } => out.push_str(&format!(
                    "  FAIL  {}\n        expected: {expected}\n        got:      {got}\n{why}",
                    case.name
                )),
                Outcome::Error(e) => out.push_str(&format!("  ERROR {}\n        {e}\n", case.name)),
            }
        }
    }
    let passed: usize = results.iter().map(SuiteResult::passed).sum();
    let failed: usize = results.iter().map(SuiteResult::failed).sum();
    out.push_str(&format!("{passed} passed, {failed} failed\n"));
    out
}

/// The results as JUnit XML.
pub fn render_junit(results: &[SuiteResult]) -> String {
    let passed: usize = results.iter().map(SuiteResult::passed).sum();
    let failed: usize = results.iter().map(SuiteResult::failed).sum();
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"celador\" tests=\"{}\" failures=\"{failed}\">\n",
        passed + failed
    );
    for suite in results {
        let name = xml_escape(&suite.path.display().to_string());
        let suite_time: f64 = suite.cases.iter().map(|c| c.time.as_secs_f64()).sum();
        out.push_str(&format!(
            "  <testsuite name=\"{name}\" tests=\"{}\" failures=\"{}\" time=\"{suite_time:.6}\">\n",
            suite.cases.len() + usize::from(suite.error.is_some()),
            suite.failed()
        ));
        if let Some(error) = &suite.error {
            out.push_str(&format!(
                "    <testcase name=\"(suite)\" classname=\"{name}\"><failure message=\"{}\"/></testcase>\n",
                xml_escape(error)
            ));
        }
        for case in &suite.cases {
            let case_name = xml_escape(&case.name);
            let time = case.time.as_secs_f64();
            match &case.outcome {
                Outcome::Passed => out.push_str(&format!(
                    "    <testcase name=\"{case_name}\" classname=\"{name}\" time=\"{time:.6}\"/>\n"
                )),
                Outcome::Failed { expected, got, .. } => out.push_str(&format!(
                    "    <testcase name=\"{case_name}\" classname=\"{name}\" time=\"{time:.6}\"><failure message=\"{}\">expected: {}\ngot: {}</failure></testcase>\n",
                    xml_escape(&format!("expected {expected}, got {got}")),
                    xml_escape(expected),
                    xml_escape(got)
                )),
                Outcome::Error(e) => out.push_str(&format!(
                    "    <testcase name=\"{case_name}\" classname=\"{name}\" time=\"{time:.6}\"><error message=\"{}\"/></testcase>\n",
                    xml_escape(e)
                )),
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}
