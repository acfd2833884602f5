//! Authoring tools: what rule writers run before anything is deployed.
//!
//! Data flow: `celador test` runs YAML test [`suite`]s through the engine's
//! rules, `celador eval` evaluates ([`evaluation`]) one decision rule by rule (from a test
//! case or a replayed Envoy `CheckRequest` in [`json`], which `celador
//! capture` writes with [`capture`]), and [`reference`]
//! renders the rule reference from the engine's schema. Authoring builds on
//! the engine (and on the edge's reading of a `CheckRequest`, so that a
//! replay sees exactly what serving sees); nothing on the request path
//! depends on it.

pub mod capture;
pub mod clauses;
pub mod evaluation;
pub mod governance;
pub mod json;
pub mod record;
pub mod reference;
pub mod replay;
pub mod suite;

use std::path::Path;

use crate::engine::Decision;
use crate::engine::policy::{Input, Policy, PolicyError};

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
