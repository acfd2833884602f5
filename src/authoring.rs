//! Authoring tools: what rule writers run before anything is deployed.
//!
//! Data flow: `celador test` runs YAML test [`suite`]s through the engine's
//! rules, `celador eval` [`explain`]s one decision rule by rule (from a test
//! case or a replayed Envoy `CheckRequest` in [`json`]), and [`reference`]
//! renders the rule reference from the engine's schema. Authoring builds on
//! the engine (and on the edge's reading of a `CheckRequest`, so that a
//! replay sees exactly what serving sees); nothing on the request path
//! depends on it.

pub mod clauses;
pub mod explain;
pub mod governance;
pub mod json;
pub mod record;
pub mod reference;
pub mod replay;
pub mod suite;

use std::path::Path;

use crate::engine::Decision;
use crate::engine::grants::{self, Grants};
use crate::engine::policy::{Diagnostic, Input, Policy, PolicyError, Severity};
use crate::engine::revocations::Revocations;

/// The decision of `policy` on `input` as `serve` makes it once the
/// identities are verified: a path that servers resolve differently from
/// its canonical form is denied (`invalid_path`) before any rule, as with
/// `request.paths: reject_ambiguous`, the default.
pub fn decide(policy: &Policy, input: Input<'_>) -> Decision {
    match input.attributes.path_ambiguity {
        Some(ambiguity) => Decision::invalid_path(ambiguity, policy.shared_version()),
        None => policy.evaluate(input),
    }
}

/// Reads and compiles the rules file at `path`.
pub fn read_policy(path: &Path) -> Result<Policy, PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|e| PolicyError::unreadable(path, &e))?;
    Policy::parse(&text, path)
}

/// Checks the file at `path` as what its top-level key says it is: a
/// grants file (`grants:`), a revocations file (`revocations:`), or a rules
/// file; every error and warning found.
pub fn check_file(path: &Path) -> Vec<Diagnostic> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => return PolicyError::unreadable(path, &e).diagnostics,
    };
    let top = text
        .lines()
        .map(str::trim_end)
        .find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("---"))
        .unwrap_or_default();
    if top.starts_with("grants:") {
        let now = std::time::SystemTime::now();
        return match Grants::parse(&text, path, grants::DEFAULT_MAX_DURATION, now) {
            Ok(grants) => grants.warnings().to_vec(),
            Err(e) => e.diagnostics,
        };
    }
    if top.starts_with("revocations:") {
        return match Revocations::parse(&text, path) {
            Ok(_) => Vec::new(),
            Err(problems) => {
                let prefix = format!("{}: ", path.display());
                let entries: Vec<&str> = problems
                    .lines()
                    .filter_map(|l| l.strip_prefix(&prefix))
                    .collect();
                let messages = if entries.is_empty() {
                    vec![problems.as_str()]
                } else {
                    entries
                };
                messages
                    .into_iter()
                    .map(|message| Diagnostic {
                        severity: Severity::Error,
                        file: path.to_owned(),
                        line: 0,
                        column: 0,
                        rule: None,
                        message: message.to_owned(),
                        line_text: None,
                    })
                    .collect()
            }
        };
    }
    match Policy::parse(&text, path) {
        Ok(policy) => policy.warnings().to_vec(),
        Err(e) => e.diagnostics,
    }
}
