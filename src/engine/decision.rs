//! The result of one check: the engine's only output.
//!
//! Data flow: the rules ([`super::policy::Policy::evaluate`]) or a failed
//! identity ([`super::identity::IdentityError`]) end a check with a
//! [`Decision`]; the ext_authz edge turns it into Envoy's answer and the
//! audit record, and the authoring tools into their reports. It holds only
//! data: who called, what was decided, by which rule, why, and under which
//! rules version.

use std::sync::Arc;

use super::identity::{Identity, IdentityError};
use super::reason::Reason;

/// What was decided for one request, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Why: a stable code.
    pub reason: Reason,
    /// The deciding rule: the matching (or failing) deny rule, or the
    /// matching allow rule; none when no rule decided.
    pub rule: Option<Arc<str>>,
    /// What exactly was wrong, when the identity failed or the request
    /// could not be decided; for the audit record.
    pub detail: Option<String>,
    /// The caller's verified credentials.
    pub identity: Identity,
    /// Rules whose evaluation failed, with why. They counted as not matching
    /// (allow rules) or as matching (deny rules).
    pub errors: Vec<RuleError>,
    /// The version of the rules the decision was made with.
    pub policy_version: Arc<str>,
}

impl Decision {
    /// A denial without rules: the identity failed, or the request could
    /// not be decided (`failure.reason` tells which).
    pub fn refused(failure: IdentityError, policy_version: Arc<str>) -> Self {
        Decision {
            allowed: false,
            reason: failure.reason,
            rule: None,
            detail: Some(failure.detail),
            identity: Identity::default(),
            errors: Vec::new(),
            policy_version,
        }
    }
}

/// A rule whose evaluation failed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuleError {
    /// The rule.
    pub rule: Arc<str>,
    /// What failed.
    pub error: String,
}
