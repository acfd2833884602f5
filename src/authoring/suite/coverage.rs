//! `celador test --coverage`: for each rule (and grant) of each rules file
//! under test, the cases whose conditions matched it; rules no case
//! exercised are marked, and `--min-coverage` turns the share covered into
//! a CI gate.
//!
//! Data flow: every case evaluates every rule ([`super::CaseResult`]'s
//! `matched`); this module folds the results of all suites by rules file,
//! so two suites of one file add up.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::SuiteResult;

/// One rules file's coverage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCoverage {
    /// The rules file.
    pub rules_file: PathBuf,
    /// Each rule, in file order, with the cases that matched it.
    pub rules: Vec<(String, Vec<String>)>,
    /// Each grant, with the cases it was in force for.
    pub grants: Vec<(String, Vec<String>)>,
}

impl FileCoverage {
    /// Items (rules and grants) covered, and all items.
    pub fn counts(&self) -> (usize, usize) {
        let all = self.rules.iter().chain(&self.grants);
        let covered = all.clone().filter(|(_, cases)| !cases.is_empty()).count();
        (covered, all.count())
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
        });
        for grant in &covers.grants {
            if !file.grants.iter().any(|(g, _)| g == grant) {
                file.grants.push((grant.clone(), Vec::new()));
            }
        }
        for case in &suite.cases {
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
    }
    out.push_str(&format!(
        "{:.0}% of rules and grants covered\n",
        percent(files)
    ));
    out
}
