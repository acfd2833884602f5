//! `celador test --coverage`: for each rule (and grant) of each rules file
//! under test, the cases whose conditions matched it; rules no case
//! exercised are marked, and `--min-coverage` turns the share covered into
//! a CI gate.
//!
//! Data flow: every case evaluates every rule ([`super::CaseResult`]'s
//! `matched`) and each rule's clauses (`clauses`); this module folds the
//! results of all suites by rules file, so two suites of one file add up.
//! A rule is covered when a case matched it; a clause (a leaf of its
//! condition's `&&`/`||`/`!` tree) when cases saw it both true and false,
//! which finds the missing negative cases.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::SuiteResult;
use crate::engine::policy::explain::Clause;
use crate::engine::policy::{Input, Policy};

/// A rule's name and its clauses' text and value for one case (`None`:
/// the clause failed to evaluate).
pub type RuleClauses = (String, Vec<(String, Option<bool>)>);

/// Every rule's clauses with their values on `input`.
pub fn clause_values(policy: &Policy, input: Input<'_>) -> Vec<RuleClauses> {
    fn leaves(c: &Clause, out: &mut Vec<(String, Option<bool>)>) {
        if c.op.is_some() {
            c.children.iter().for_each(|child| leaves(child, out));
        } else {
            let value = match c.value.as_deref() {
                Ok("true") => Some(true),
                Ok("false") => Some(false),
                _ => None,
            };
            out.push((c.text.clone(), value));
        }
    }
    policy
        .rules()
        .iter()
        .filter_map(|rule| {
            let tree = policy.explain(&rule.name, input, input)?;
            let mut clauses = Vec::new();
            leaves(&tree, &mut clauses);
            Some((rule.name.to_string(), clauses))
        })
        .collect()
}

/// A clause's coverage: its rule, its text, whether a case saw it true, and
/// false.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClauseCoverage {
    /// The rule.
    pub rule: String,
    /// The clause as written.
    pub text: String,
    /// A case saw it true.
    pub seen_true: bool,
    /// A case saw it false.
    pub seen_false: bool,
}

/// One rules file's coverage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCoverage {
    /// The rules file.
    pub rules_file: PathBuf,
    /// Each rule, in file order, with the cases that matched it.
    pub rules: Vec<(String, Vec<String>)>,
    /// Each grant, with the cases it was in force for.
    pub grants: Vec<(String, Vec<String>)>,
    /// Each rule's clauses, in rule order.
    pub clauses: Vec<ClauseCoverage>,
}

impl FileCoverage {
    /// Items (rules and grants) covered, and all items.
    pub fn counts(&self) -> (usize, usize) {
        let all = self.rules.iter().chain(&self.grants);
        let covered = all.clone().filter(|(_, cases)| !cases.is_empty()).count();
        (covered, all.count())
    }

    /// Clauses seen both true and false, and all clauses.
    pub fn clause_counts(&self) -> (usize, usize) {
        let both = self
            .clauses
            .iter()
            .filter(|c| c.seen_true && c.seen_false)
            .count();
        (both, self.clauses.len())
    }

    fn see(&mut self, rule: &str, text: &str, value: Option<bool>) {
        let at = match self
            .clauses
            .iter()
            .position(|c| c.rule == rule && c.text == text)
        {
            Some(at) => at,
            None => {
                self.clauses.push(ClauseCoverage {
                    rule: rule.to_owned(),
                    text: text.to_owned(),
                    seen_true: false,
                    seen_false: false,
                });
                self.clauses.len() - 1
            }
        };
        if let Some(c) = self.clauses.get_mut(at) {
            c.seen_true |= value == Some(true);
            c.seen_false |= value == Some(false);
        }
    }
}

/// The coverage of `results`, by rules file.
pub fn coverage(results: &[SuiteResult]) -> Vec<FileCoverage> {
    let mut files: BTreeMap<PathBuf, FileCoverage> = BTreeMap::new();
    for suite in results {
        let Some(covers) = &suite.covers else {
            continue;
        };
        let key =
            std::fs::canonicalize(&covers.rules_file).unwrap_or_else(|_| covers.rules_file.clone());
        let file = files.entry(key).or_insert_with(|| FileCoverage {
            rules_file: covers.rules_file.clone(),
            rules: covers
                .rules
                .iter()
                .map(|r| (r.clone(), Vec::new()))
                .collect(),
            grants: Vec::new(),
            clauses: Vec::new(),
        });
        for grant in &covers.grants {
            if !file.grants.iter().any(|(g, _)| g == grant) {
                file.grants.push((grant.clone(), Vec::new()));
            }
        }
        for case in &suite.cases {
            for (rule, clauses) in &case.clauses {
                for (text, value) in clauses {
                    file.see(rule, text, *value);
                }
            }
            for (rule, cases) in &mut file.rules {
                if case.matched.contains(rule) {
                    cases.push(case.name.clone());
                }
            }
            for (grant, cases) in &mut file.grants {
                if case.grant.as_deref() == Some(grant.as_str()) {
                    cases.push(case.name.clone());
                }
            }
        }
    }
    files.into_values().collect()
}

/// The share of items covered over every file, in percent (100 when there
/// is nothing to cover).
pub fn percent(files: &[FileCoverage]) -> f64 {
    let (covered, all) = files.iter().fold((0, 0), |(c, a), f| {
        let (fc, fa) = f.counts();
        (c + fc, a + fa)
    });
    if all == 0 {
        100.0
    } else {
        100.0 * covered as f64 / all as f64
    }
}

/// The share of clauses seen both true and false over every file, in
/// percent (100 when there is none).
pub fn clause_percent(files: &[FileCoverage]) -> f64 {
    let (both, all) = files.iter().fold((0, 0), |(b, a), f| {
        let (fb, fa) = f.clause_counts();
        (b + fb, a + fa)
    });
    if all == 0 {
        100.0
    } else {
        100.0 * both as f64 / all as f64
    }
}

/// The clauses of `file` not seen both ways, for people.
fn render_clauses(file: &FileCoverage, out: &mut String) {
    let (both, all) = file.clause_counts();
    out.push_str(&format!(
        "    clauses: {both} of {all} seen both true and false
"
    ));
    for c in file
        .clauses
        .iter()
        .filter(|c| !(c.seen_true && c.seen_false))
    {
        let never = match (c.seen_true, c.seen_false) {
            (false, false) => "never true nor false",
            (true, _) => "never false",
            (_, true) => "never true",
        };
        out.push_str(&format!("      rule {}: `{}` {never}\n", c.rule, c.text));
    }
}

/// The coverage for people: one block per rules file.
pub fn render_text(files: &[FileCoverage]) -> String {
    let mut out = String::from("coverage:\n");
    for file in files {
        let (covered, all) = file.counts();
        out.push_str(&format!(
            "  {} ({covered} of {all} covered)\n",
            file.rules_file.display()
        ));
        let width = file
            .rules
            .iter()
            .chain(&file.grants)
            .map(|(n, _)| n.len())
            .max()
            .unwrap_or(0);
        for (kind, items) in [("rule", &file.rules), ("grant", &file.grants)] {
            for (name, cases) in items {
                let shown = if cases.is_empty() {
                    "NOT COVERED: no case matched it".to_owned()
                } else {
                    format!("{} case(s): {}", cases.len(), cases.join("; "))
                };
                out.push_str(&format!("    {kind:<5} {name:<width$}  {shown}\n"));
            }
        }
        render_clauses(file, &mut out);
    }
    out.push_str(&format!(
        "{:.0}% of rules and grants covered; {:.0}% of clauses seen both true and false\n",
        percent(files),
        clause_percent(files)
    ));
    out
}
