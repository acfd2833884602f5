//! The runtime governance an offline tool is given: grants, revocations and
//! signals, so that `celador eval`, `test` and `replay` decide as `serve`
//! would with the same state.
//!
//! Data flow: the tools read the files named on their command line (or in
//! a suite) into a [`Governance`]; each decision then goes through
//! [`Governance::decide`], which applies them in `serve`'s order: a revoked
//! credential is denied before any rule, the signals given replace the
//! counts the caller would have, and the grant in force is found before the
//! rules run.

use std::path::Path;
use std::sync::Arc;

use crate::engine::decision::Revoked;
use crate::engine::grants::{self, Grant, Grants};
use crate::engine::identity::Identity;
use crate::engine::policy::{Input, Policy};
use crate::engine::revocations::Revocations;
use crate::engine::signals::Signals;
use crate::engine::{Decision, Reason};

/// Grants, revocations and signals in force for an offline decision.
#[derive(Debug, Default)]
pub struct Governance {
    /// The grants in force.
    pub grants: Grants,
    /// The revoked credentials.
    pub revocations: Revocations,
    /// The caller's signals, replacing the input's when given.
    pub signals: Option<Signals>,
}

/// What governance decided of a caller before the rules: its identity, its
/// revocation, the grant in force for it.
#[derive(Debug, Clone)]
pub struct Screened {
    /// The caller's identity as the engine holds it.
    pub identity: Identity,
    /// The entry that revokes one of its credentials, if any.
    pub revoked: Option<Revoked>,
    /// The grant in force for this request, if any.
    pub grant: Option<Arc<Grant>>,
}

impl Governance {
    /// Reads the grants, revocations and signals files given (each
    /// optional), as `celador check` reads them.
    pub fn read(
        grants: Option<&Path>,
        revocations: Option<&Path>,
        signals: Option<&Path>,
    ) -> Result<Governance, String> {
        let grants = match grants {
            Some(path) => {
                read_grants(path).map_err(|e| format!("the grants file does not load:\n{e}"))?
            }
            None => Grants::default(),
        };
        let revocations = match revocations {
            Some(path) => read_revocations(path)?,
            None => Revocations::default(),
        };
        let signals = match signals {
            Some(path) => Some(read_signals(path)?),
            None => None,
        };
        Ok(Governance {
            grants,
            revocations,
            signals,
        })
    }

    /// The signals rules see: those given, else the input's.
    pub fn signals<'a>(&'a self, input: &'a Signals) -> &'a Signals {
        self.signals.as_ref().unwrap_or(input)
    }

    /// Decides `input` as `serve` does with these inputs: their signals in
    /// place of its own, the caller screened (revoked? which grant?), then
    /// the rules; `then` is given the decision and the input the rules saw.
    pub fn decide_then<T>(
        &self,
        policy: &Policy,
        input: Input<'_>,
        then: impl FnOnce(Decision, Input<'_>) -> T,
    ) -> T {
        let input = Input {
            signals: self.signals(input.signals),
            ..input
        };
        let screened = self.screen(input);
        let grant = screened.grant.clone();
        let input = Input {
            grant: grant.as_ref(),
            ..input
        };
        then(decide_screened(policy, screened, input), input)
    }

    /// The caller of `input` screened as `serve` screens it: revoked or
    /// not, and the grant in force.
    pub fn screen(&self, input: Input<'_>) -> Screened {
        let identity = Identity {
            source: input.source.cloned().map(Arc::new),
            token: input.token.cloned().map(Arc::new),
            from_cache: false,
        };
        let revoked = self.revocations.check(&identity);
        let grant = self.grants.find(&identity, input);
        Screened {
            identity,
            revoked,
            grant,
        }
    }

    /// The decision of `policy` on `input` with this governance, as `serve`
    /// makes it once the identities are verified.
    pub fn decide(&self, policy: &Policy, input: Input<'_>) -> Decision {
        let input = Input {
            signals: self.signals(input.signals),
            ..input
        };
        let screened = self.screen(input);
        decide_screened(policy, screened, input)
    }
}

/// The decision of `policy` on `input` for a caller already `screened`
/// (whose grant `input` need not carry: it is added here).
pub fn decide_screened(policy: &Policy, screened: Screened, input: Input<'_>) -> Decision {
    if let Some(revoked) = screened.revoked {
        return Decision {
            reason: Reason::Revoked,
            detail: Some(format!("revoked by {}: {}", revoked.entry, revoked.reason)),
            identity: screened.identity,
            revoked: Some(revoked),
            policy_version: policy.shared_version(),
            ..Decision::default()
        };
    }
    let input = Input {
        grant: screened.grant.as_ref(),
        ..input
    };
    let mut decision = crate::authoring::decide(policy, input);
    decision.identity = screened.identity;
    decision
}

/// Reads the grants file at `path` as `celador check` and `test` do: the
/// default maximum duration, measured from now.
pub fn read_grants(path: &Path) -> Result<Grants, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Grants::parse(
        &text,
        path,
        grants::DEFAULT_MAX_DURATION,
        std::time::SystemTime::now(),
    )
    .map_err(|e| e.to_string())
}

/// Reads the revocations file at `path`.
pub fn read_revocations(path: &Path) -> Result<Revocations, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Revocations::parse(&text, path).map_err(|e| format!("the revocations file does not load:\n{e}"))
}

/// Reads a signals file: the counts (and risk) rules read as `signals`,
/// in YAML or JSON, every field optional.
pub fn read_signals(path: &Path) -> Result<Signals, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    crate::engine::yaml::from_str(&text, path)
        .map_err(|e| format!("the signals file does not load:\n{e}"))
}
