//! Why a decision came out as it did, down to the clause: the tree of the
//! deciding rule and of the rule a case expected, the first false clause of
//! an allow rule expected to match, and other rules' errors listed apart,
//! never as the cause.
//!
//! Data flow: `test` (for a failing case) and `eval` hand over the decision,
//! the real input and a redacted copy; [`explain`] asks the engine for each
//! rule's clause tree ([`Policy::explain`]); [`render_text`] and
//! [`render_json`] word it.

use serde_json::{Value, json};

use crate::engine::decision::Decision;
use crate::engine::policy::explain::Clause;
use crate::engine::policy::rules_file::Effect;
use crate::engine::policy::{Input, Policy};
use crate::engine::redaction::Redaction;

/// One rule's part in a decision.
#[derive(Debug, Clone)]
pub struct Traced {
    /// The rule.
    pub rule: String,
    /// `allow` or `deny`.
    pub effect: &'static str,
    /// `decided`, or `was expected to decide`.
    pub role: &'static str,
    /// Its condition, clause by clause.
    pub tree: Clause,
    /// For an allow rule expected to match that did not: the first clause
    /// that was false (or failed).
    pub first_false: Option<Clause>,
}

/// The explanation of `decision`.
#[derive(Debug, Clone, Default)]
pub struct Why {
    /// The deciding rule, and the expected one when another.
    pub rules: Vec<Traced>,
    /// Other rules' evaluation errors: (rule, error), never the cause.
    pub other_errors: Vec<(String, String)>,
}

/// Works out why `decision` was made on `input`; values are shown from
/// `shown`, its redacted copy, and errors (of the real input) as
/// `redaction` lets them be shown.
pub fn explain(
    policy: &Policy,
    decision: &Decision,
    expected_rule: Option<&str>,
    (input, shown): (Input<'_>, Input<'_>),
    redaction: &Redaction,
) -> Why {
    let mut why = Why::default();
    let deciding = decision.rule.as_deref();
    // Why not, without naming a rule: the allow rules that came closest.
    let closest = match (expected_rule, decision.reason) {
        (None, crate::engine::Reason::NoAllowRule) => closest_allow_rules(policy, (input, shown)),
        _ => Vec::new(),
    };
    let named = [
        (deciding, "decided"),
        (expected_rule, "was expected to decide"),
    ];
    let closest = closest.iter().map(|n| (Some(n.as_str()), "came closest"));
    for (name, role) in named.into_iter().chain(closest) {
        let Some(name) = name.filter(|n| !why.rules.iter().any(|t| t.rule == *n)) else {
            continue;
        };
        let Some(rule) = policy.rules().iter().find(|r| &*r.name == name) else {
            continue;
        };
        let Some(mut tree) = policy.explain(name, input, shown) else {
            continue;
        };
        redaction.clause(&mut tree, input.attributes);
        let expected_to_match = rule.effect == Effect::Allow
            && (Some(name) == expected_rule || role == "came closest")
            && tree.value.as_deref() != Ok("true");
        why.rules.push(Traced {
            rule: name.to_owned(),
            effect: match rule.effect {
                Effect::Allow => "allow",
                Effect::Deny => "deny",
            },
            role,
            first_false: expected_to_match
                .then(|| tree.first_false().cloned())
                .flatten(),
            tree,
        });
    }
    why.other_errors = decision
        .errors
        .iter()
        .filter(|e| Some(&*e.rule) != deciding)
        .map(|e| {
            let error = redaction.message(&e.error, input.attributes);
            (e.rule.to_string(), error.into_owned())
        })
        .collect();
    why
}

/// At most this many allow rules are shown as the closest.
const CLOSEST: usize = 3;

/// The allow rules with the most true clauses of their top-level `&&` (at
/// least one; those tied with the most, in file order, at most
/// [`CLOSEST`]): the rules that came closest to allowing a request none
/// allowed.
pub fn closest_allow_rules(policy: &Policy, (input, shown): (Input<'_>, Input<'_>)) -> Vec<String> {
    let held: Vec<(usize, &str)> = policy
        .rules()
        .iter()
        .filter(|r| r.effect == Effect::Allow)
        .filter_map(|rule| {
            let tree = policy.explain(&rule.name, input, shown)?;
            let held = match tree.op {
                Some("&&") => tree
                    .children
                    .iter()
                    .filter(|c| c.value.as_deref() == Ok("true"))
                    .count(),
                _ => 0,
            };
            Some((held, &*rule.name))
        })
        .collect();
    let most = held.iter().map(|(n, _)| *n).max().unwrap_or(0);
    held.into_iter()
        .filter(|(n, _)| most > 0 && *n == most)
        .take(CLOSEST)
        .map(|(_, name)| name.to_owned())
        .collect()
}

fn verdict(tree: &Clause) -> String {
    match &tree.value {
        Ok(v) if v == "true" => "matched".to_owned(),
        Ok(v) if v == "false" => "did not match".to_owned(),
        Ok(v) => format!("gave {v}, not a bool"),
        Err(e) => format!("failed: {e}"),
    }
}

/// The explanation as lines indented by `indent`.
pub fn render_text(why: &Why, indent: &str) -> String {
    let mut out = String::new();
    for t in &why.rules {
        out.push_str(&format!(
            "{indent}{} rule '{}' ({}) {}",
            t.effect,
            t.rule,
            t.role,
            verdict(&t.tree)
        ));
        if let Some(first) = &t.first_false {
            let value = match &first.value {
                Ok(v) => v.clone(),
                Err(e) => format!("error: {e}"),
            };
            out.push_str(&format!(
                "; the first false clause is `{}` ({value})",
                first.text
            ));
        }
        out.push_str(":\n");
        out.push_str(&t.tree.render(&format!("{indent}  ")));
    }
    if !why.other_errors.is_empty() {
        out.push_str(&format!(
            "{indent}other rules failed to evaluate (not the cause of this decision):\n"
        ));
        for (rule, error) in &why.other_errors {
            out.push_str(&format!("{indent}  rule '{rule}': {error}\n"));
        }
    }
    out
}

/// The explanation as JSON.
pub fn render_json(why: &Why) -> Value {
    json!({
        "rules": why.rules.iter().map(|t| json!({
            "rule": t.rule,
            "effect": t.effect,
            "role": t.role,
            "result": verdict(&t.tree),
            "first_false_clause": t.first_false.as_ref().map(|c| c.text.clone()),
            "tree": crate::edge::trail::clause_json(&t.tree),
        })).collect::<Vec<_>>(),
        "other_errors": why.other_errors.iter().map(|(rule, error)| json!({"rule": rule, "error": error})).collect::<Vec<_>>(),
    })
}
