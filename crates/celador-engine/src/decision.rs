//! The result of one check: the engine's only output.
//!
//! Data flow: the rules ([`super::policy::Policy::evaluate`]) or a failed
//! identity ([`super::identity::IdentityError`]) end a check with a
//! [`Decision`]; the ext_authz edge turns it into Envoy's answer and the
//! audit record, and the authoring tools into their reports. It holds only
//! data: who called, what was decided, by which rule, why, and under which
//! rules version.

use std::sync::Arc;

use super::grant::Grant;
use super::identity::{Identity, IdentityError};
use super::reason::Reason;
use super::request_path::Ambiguity;
use super::signals::Signals;

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
    /// The grant that allowed the request, or that deny rules saw as
    /// `grant`.
    pub grant: Option<Arc<Grant>>,
    /// The revocation entry that denied the request.
    pub revoked: Option<Revoked>,
    /// What the rules in `mode: shadow`, and the shadow rules file, would
    /// have decided.
    pub shadow: Vec<Shadow>,
    /// The caller's signals as the rules saw them.
    pub signals: Option<Signals>,
    /// Whether the decision came from the decision cache.
    pub from_cache: bool,
    /// For a `rule_error`: the failing rule's condition clause by clause,
    /// with the (redacted) values it read; for the audit record.
    pub explanation: Option<Arc<super::clause::Clause>>,
}

impl Default for Decision {
    fn default() -> Self {
        Decision {
            allowed: false,
            reason: Reason::InternalError,
            rule: None,
            detail: None,
            identity: Identity::default(),
            errors: Vec::new(),
            policy_version: Arc::from(""),
            grant: None,
            revoked: None,
            shadow: Vec::new(),
            signals: None,
            from_cache: false,
            explanation: None,
        }
    }
}

/// A revocation entry that matched the caller's credential.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Revoked {
    /// The entry, as `kind: value` (`spiffe_id_prefix: spiffe://...`).
    pub entry: String,
    /// The entry's `reason`.
    pub reason: Arc<str>,
    /// Where the entry came from: a file or the fleet's store.
    pub origin: super::grant::Origin,
    /// The Security Event Token the entry came from, when `celador signals
    /// serve` wrote it: the trail of the decision ends at the security
    /// tool's event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set: Option<Arc<SecurityEvent>>,
}

/// A Security Event Token (RFC 8417) as a revocation records it: who sent
/// it, which event it reported, and its `jti` (named as a risk level's
/// provenance is, `signals.risk.source` / `event` / `jti`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SecurityEvent {
    /// The transmitter (the SET's `iss`).
    pub source: String,
    /// The event type URI.
    pub event: String,
    /// The SET's `jti`.
    pub jti: String,
}

/// Which shadow rules an outcome is of: those marked `mode: shadow` in
/// the enforced rules file, or the shadow rules file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ShadowRules {
    /// Rules of the enforced file in `mode: shadow` (shown as `rules`).
    #[serde(rename = "rules")]
    Marked,
    /// The shadow rules file of `shadow_policy` (shown as `policy`).
    #[serde(rename = "policy")]
    File,
}

impl ShadowRules {
    /// `rules` or `policy`, as audit records and metrics name them.
    pub fn as_str(self) -> &'static str {
        match self {
            ShadowRules::Marked => "rules",
            ShadowRules::File => "policy",
        }
    }
}

/// What shadow rules would have decided.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Shadow {
    /// Which shadow rules (shown as `source`).
    #[serde(rename = "source")]
    pub rules: ShadowRules,
    /// Whether it would have allowed.
    pub allowed: bool,
    /// Its reason.
    pub reason: Reason,
    /// Its deciding rule.
    pub rule: Option<Arc<str>>,
    /// The version of the shadow rules file, for `policy`.
    pub version: Option<Arc<str>>,
}

impl Shadow {
    /// Whether the shadow outcome differs from `decision`'s: another
    /// verdict or another reason (a different deciding rule with the same
    /// outcome is in the audit record, not counted).
    pub fn differs_from(&self, decision: &Decision) -> bool {
        self.allowed != decision.allowed || self.reason != decision.reason
    }
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
            ..Decision::default()
        }
    }
}

impl Decision {
    /// A denial of a path servers resolve differently from its canonical
    /// form (`invalid_path`), made before any rule.
    pub fn invalid_path(ambiguity: Ambiguity, policy_version: Arc<str>) -> Self {
        Decision {
            reason: Reason::InvalidPath,
            detail: Some(format!(
                "{}, which servers resolve differently; denied before any rule (request.paths: reject_ambiguous)",
                ambiguity.describe()
            )),
            policy_version,
            ..Decision::default()
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
