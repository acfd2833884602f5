//! `celador replay`: recorded traffic re-decided with candidate rules.
//!
//! Data flow: each audit record line ([`super::record`]) becomes the input
//! it recorded; the candidate policy decides it with the governance given
//! ([`super::governance`]), and the decision is compared with the recorded
//! one. A record that does not hold (or holds only redacted) an attribute
//! the candidate's rules read is reported as undecidable, never guessed;
//! a record decided before any rule (an identity failure, an overload) is
//! counted apart.

use std::collections::BTreeMap;
use std::io::BufRead;

use serde_json::{Value, json};

use crate::authoring::governance::Governance;
use crate::authoring::record::{RULE_REASONS, Recorded};
use crate::engine::Decision;
use crate::engine::policy::{Input, Policy};
use crate::engine::redaction::Redaction;
use crate::engine::signals::Signals;
use crate::engine::workload::Workload;

/// One decision that would change.
#[derive(Debug, Clone)]
pub struct Change {
    /// The record's line number (from 1).
    pub line: usize,
    /// The request, as recorded (redacted).
    pub request: String,
    /// The request's id.
    pub request_id: String,
    /// The outcome recorded, and the new one: `allow` or `deny`.
    pub outcomes: (String, String),
    /// The reason recorded, and the new one, in words.
    pub reasons: (String, String),
    /// The deciding rule recorded, and the new one.
    pub rules: (Option<String>, Option<String>),
    /// Why the new decision, down to the clause.
    pub why: String,
}

/// What replay found.
#[derive(Debug, Default)]
pub struct Report {
    /// Records read.
    pub records: usize,
    /// Records re-decided.
    pub decided: usize,
    /// Decisions that would change.
    pub changes: Vec<Change>,
    /// Records that cannot be decided: line, request id, what is missing.
    pub undecidable: Vec<(usize, String, Vec<String>)>,
    /// Records decided before any rule, by reason.
    pub before_rules: BTreeMap<String, usize>,
    /// Lines that look like records but cannot be read: line, why.
    pub unreadable: Vec<(usize, String)>,
    /// Other lines (`kubectl logs` interleaves the diagnostic log).
    pub skipped: usize,
}

impl Report {
    /// Changes counted by `old -> new` outcome.
    pub fn by_outcome(&self) -> BTreeMap<String, usize> {
        count(
            self.changes
                .iter()
                .map(|c| format!("{} -> {}", c.outcomes.0, c.outcomes.1)),
        )
    }

    /// Changes counted by `old rule -> new rule`.
    pub fn by_rule(&self) -> BTreeMap<String, usize> {
        count(self.changes.iter().map(|c| {
            let name = |r: &Option<String>| r.clone().unwrap_or_else(|| "(none)".into());
            format!("{} -> {}", name(&c.rules.0), name(&c.rules.1))
        }))
    }

    /// Whether anything would change, or could not be told.
    pub fn differs(&self) -> bool {
        !self.changes.is_empty() || !self.undecidable.is_empty() || !self.unreadable.is_empty()
    }
}

fn count(keys: impl Iterator<Item = String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for key in keys {
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// Re-decides every record read from `lines` with `policy` and
/// `governance`; explanations show what `redaction` lets be shown.
pub fn replay(
    policy: &Policy,
    governance: &Governance,
    lines: impl BufRead,
    redaction: &Redaction,
) -> Result<Report, String> {
    let mut report = Report::default();
    for (i, line) in lines.lines().enumerate() {
        let line = line.map_err(|e| format!("cannot read the records: {e}"))?;
        let number = i + 1;
        // `kubectl logs` interleaves the diagnostic log: only JSON objects
        // with a decision and a method are records; a line that looks like
        // one but does not read is said.
        let is_record = line.trim_start().starts_with('{')
            && (line.contains("\"decision\"") || line.contains("\"method\""));
        if !is_record {
            report.skipped += 1;
            continue;
        }
        report.records += 1;
        let recorded = match Recorded::parse(&line) {
            Ok(recorded) => recorded,
            Err(e) => {
                report.unreadable.push((number, e));
                continue;
            }
        };
        if !RULE_REASONS.contains(&recorded.old.reason.as_str()) {
            *report
                .before_rules
                .entry(recorded.old.reason.clone())
                .or_insert(0) += 1;
            continue;
        }
        let missing = recorded.missing(policy);
        if !missing.is_empty() {
            report
                .undecidable
                .push((number, recorded.request_id.clone(), missing));
            continue;
        }
        report.decided += 1;
        if let Some(change) = redecide(policy, governance, &recorded, redaction) {
            report.changes.push(Change {
                line: number,
                ..change
            });
        }
    }
    Ok(report)
}

/// The change `policy` makes to `recorded`'s decision, if any.
fn redecide(
    policy: &Policy,
    governance: &Governance,
    recorded: &Recorded,
    redaction: &Redaction,
) -> Option<Change> {
    let attrs = recorded.request.attributes();
    let (workload, none) = (Workload::default(), Signals::default());
    let input = recorded.input(&attrs, &workload, &none);
    governance.decide_then(policy, input, |decision, input| {
        let outcome = if decision.allowed { "allow" } else { "deny" };
        let old = &recorded.old;
        // Another rule deciding the same way (a rule renamed, split) is no
        // change of the decision.
        if outcome == old.decision && decision.reason.as_str() == old.reason {
            return None;
        }
        let shown = redaction.shown(&attrs);
        let shown_attrs = shown.attributes();
        let shown = Input {
            attributes: &shown_attrs,
            ..input
        };
        // The clause that made the difference: the new deciding rule's, and the
        // rule that decided before if the candidate still has it, else the
        // allow rule that came closest.
        let expected = old.rule.as_deref().filter(|r| policy.rule(r).is_some());
        let why = crate::authoring::clauses::explain(
            policy,
            &decision,
            expected,
            (input, shown),
            redaction,
        );
        // In replay's words: the rule that decided before.
        let why = crate::authoring::clauses::render_text(&why, "    ")
            .replace("(was expected to decide)", "(decided before)");
        Some(change(recorded, &decision, &shown_attrs.path, why))
    })
}

/// The change of `recorded`'s decision to `decision`, `why` explained.
fn change(recorded: &Recorded, decision: &Decision, path: &str, why: String) -> Change {
    let old = &recorded.old;
    let outcome = if decision.allowed { "allow" } else { "deny" };
    let identity = recorded
        .source
        .as_ref()
        .map(|s| s.id.to_string())
        .or_else(|| recorded.token.as_ref().map(|t| t.id.to_string()))
        .unwrap_or_else(|| "(no identity)".into());
    Change {
        line: 0,
        request: format!(
            "{} {}{path} from {identity}",
            recorded.request.method, recorded.request.host
        ),
        request_id: recorded.request_id.clone(),
        outcomes: (old.decision.clone(), outcome.to_owned()),
        reasons: (
            described(
                &old.decision,
                old.rule.as_deref(),
                &old.reason,
                old.grant.as_deref(),
            ),
            crate::authoring::suite::describe(decision),
        ),
        rules: (
            old.rule.clone(),
            decision.rule.as_deref().map(str::to_owned),
        ),
        why,
    }
}

/// A recorded decision in the words [`crate::authoring::suite::describe`]
/// uses for a new one.
fn described(decision: &str, rule: Option<&str>, reason: &str, grant: Option<&str>) -> String {
    match (rule, grant) {
        (Some(rule), _) => format!("{decision} by rule '{rule}' ({reason})"),
        (None, Some(grant)) => format!("{decision} by grant '{grant}' ({reason})"),
        (None, None) => format!("{decision} ({reason})"),
    }
}

/// The report for people.
pub fn render_text(report: &Report, candidate: &str) -> String {
    let mut out = format!(
        "replayed {} record(s) against {candidate}: {} re-decided, {} would change, {} could not be decided, {} decided before the rules\n",
        report.records,
        report.decided,
        report.changes.len(),
        report.undecidable.len(),
        report.before_rules.values().sum::<usize>(),
    );
    if !report.changes.is_empty() {
        out.push_str("changes by outcome:\n");
        for (key, n) in report.by_outcome() {
            out.push_str(&format!("  {key}  {n}\n"));
        }
        out.push_str("changes by rule:\n");
        for (key, n) in report.by_rule() {
            out.push_str(&format!("  {key}  {n}\n"));
        }
    }
    for (line, id, missing) in &report.undecidable {
        out.push_str(&format!(
            "cannot decide line {line} (request {id}): the rules read {}\n",
            missing.join(", ")
        ));
    }
    for (line, why) in &report.unreadable {
        out.push_str(&format!("cannot read line {line}: {why}\n"));
    }
    if report.skipped > 0 {
        out.push_str(&format!(
            "{} other line(s) skipped: not audit records\n",
            report.skipped
        ));
    }
    for (reason, n) in &report.before_rules {
        out.push_str(&format!(
            "not re-decided, decided before the rules: {reason}  {n}\n"
        ));
    }
    for c in &report.changes {
        out.push_str(&format!(
            "\nline {} (request {}): {}\n  was: {}\n  now: {}\n{}",
            c.line,
            escaped(&c.request_id),
            escaped(&c.request),
            c.reasons.0,
            c.reasons.1,
            c.why
        ));
    }
    out
}

/// `text` from a record (the client's `x-request-id`, its host and path)
/// with control characters escaped (`\u{1b}`), so that it cannot forge a
/// line of the report or reach the terminal as an escape sequence.
fn escaped(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    text.chars()
        .map(|c| match c.is_control() {
            true => c.escape_default().to_string(),
            false => c.to_string(),
        })
        .collect::<String>()
        .into()
}

/// The report as JSON.
pub fn render_json(report: &Report) -> Value {
    json!({
        "records": report.records,
        "decided": report.decided,
        "by_outcome": report.by_outcome(),
        "by_rule": report.by_rule(),
        "changes": report.changes.iter().map(|c| json!({
            "line": c.line,
            "request_id": c.request_id,
            "request": c.request,
            "old": {"decision": c.outcomes.0, "rule": c.rules.0, "verdict": c.reasons.0},
            "new": {"decision": c.outcomes.1, "rule": c.rules.1, "verdict": c.reasons.1},
            "why": c.why,
        })).collect::<Vec<_>>(),
        "undecidable": report.undecidable.iter().map(|(line, id, missing)| json!({
            "line": line, "request_id": id, "missing": missing,
        })).collect::<Vec<_>>(),
        "unreadable": report.unreadable.iter().map(|(line, why)| json!({
            "line": line, "error": why,
        })).collect::<Vec<_>>(),
        "decided_before_rules": report.before_rules,
        "skipped": report.skipped,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_from_a_record_are_escaped() {
        assert_eq!(super::escaped("r-1"), "r-1");
        assert_eq!(
            super::escaped("x\u{1b}[2K\r\n  (all clear)"),
            "x\\u{1b}[2K\\r\\n  (all clear)"
        );
    }
}
