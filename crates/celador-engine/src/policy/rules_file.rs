//! The rules file, as platform teams write it (usually in a ConfigMap).
//!
//! ```yaml
//! rules:
//!   - name: payments-full-access
//!     description: the payments API may call anything
//!     effect: allow                     # allow | deny
//!     when: source.id == "spiffe://example.org/ns/payments/sa/api"
//! ```
//!
//! Data flow: parsed here with locations, then compiled by
//! [`super::Policy::parse`]. Unknown keys are errors, so a typo such as
//! `efect:` is caught rather than silently ignored.

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    /// The rules, in order.
    pub rules: Vec<RuleSpec>,
}

/// One rule as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// A unique name, reported in denials and audit records.
    pub name: Spanned<String>,
    /// What the rule is for.
    #[serde(default)]
    pub description: Option<String>,
    /// Whether a match allows or denies.
    pub effect: Effect,
    /// The CEL condition.
    pub when: Spanned<String>,
    /// Enforced (the default), or only evaluated and reported.
    #[serde(default)]
    pub mode: Mode,
}

/// Whether a rule's effect is enforced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Its effect decides.
    #[default]
    Enforce,
    /// It is evaluated and what it would have done is audited and counted,
    /// but it never decides.
    Shadow,
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// The request is allowed if no deny rule matches.
    Allow,
    /// The request is denied.
    Deny,
}

impl Effect {
    /// `allow` or `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        }
    }
}
