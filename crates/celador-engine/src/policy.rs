//! Rules: compiled once at load, evaluated per request into a [`Decision`].
//!
//! Data flow: a rules file is parsed ([`rules_file`]), each rule's `when`
//! is compiled by CEL and type-checked ([`check`]) against the
//! [`schema`]; a file with any error is refused whole, with every error
//! located in the file. A loaded [`Policy`] is immutable; per request,
//! [`Policy::evaluate`] runs the deny rules, then the allow rules, against an
//! [`activation::Activation`] of the request.
//!
//! Semantics: a request is allowed when at least one allow rule matches and
//! no deny rule matches. A rule whose evaluation fails counts as not matching
//! if it allows and as matching if it denies, so errors fail closed.
//!
//! The module's files: this one holds the loaded [`Policy`] and its
//! evaluation; [`compile`] turns a rules file into one (with its
//! diagnostics), [`rewrite`] prepares each compiled condition for fast
//! evaluation, and [`render`] shows CEL values to rule authors.

mod activation;
mod check;
mod clock;
mod compile;
mod depth;
pub(crate) mod diagnostic;
pub mod explain;
pub mod footprint;
mod functions;
pub mod index;
mod kubernetes;
mod lint;
mod query;
mod render;
mod rewrite;
pub mod rules_file;
pub mod schema;
mod unparse;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cel::common::types::CelBool;
use cel::{Context, IdedExpr, Value};

pub use activation::Input;
pub use compile::PolicyError;
pub(crate) use compile::version_of;
pub use diagnostic::{Diagnostic, Severity};
pub use rules_file::{Effect, Mode};

use super::decision::{Decision, RuleError};
use super::identity::Identity;
use super::reason::Reason;
use render::{display, to_json};

/// A compiled rule.
#[derive(Debug)]
pub struct Rule {
    /// Its name.
    pub name: Arc<str>,
    /// Its description.
    pub description: Option<String>,
    /// Allow or deny.
    pub effect: Effect,
    /// The `when` expression as written.
    pub when: String,
    /// 1-based line of the rule's `name` in the file.
    pub line: usize,
    /// The attributes the rule reads (`source.id`, `request.headers`, ...);
    /// shared by the rules of a policy that read the same ones.
    pub reads: Arc<BTreeSet<String>>,
    /// Whether the rule is only evaluated beside the enforced ones.
    pub mode: Mode,
    /// What of a request the rule's result can depend on; shared by the
    /// rules of a policy with the same one.
    pub footprint: Arc<footprint::Footprint>,
    expr: IdedExpr,
}

/// A loaded rules file.
pub struct Policy {
    rules: Vec<Rule>,
    footprint: footprint::Footprint,
    version: Arc<str>,
    generation: u64,
    path: PathBuf,
    warnings: Vec<Diagnostic>,
    root: Context<'static, 'static>,
    /// The enforced rules, filed by the literals they pin.
    enforced: index::RuleIndex,
    /// Every rule, the enforced and those in `mode: shadow`, filed the
    /// same way; `None` when no rule is in `mode: shadow` (boxed: most
    /// policies have none, and a policy is held in enums beside smaller
    /// things).
    with_shadow: Option<Box<index::RuleIndex>>,
    clock: clock::ClockReads,
    /// Each name's first rule.
    named: std::collections::HashMap<Arc<str>, usize>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("rules", &self.rules.len())
            .finish()
    }
}

/// One rule's result, for explaining a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleResult {
    /// The condition was true.
    Match,
    /// The condition was false.
    NoMatch,
    /// The condition could not be evaluated.
    Error(String),
}

impl Policy {
    /// The policy version: the first 16 hex digits of the SHA-256 of the file.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The policy version, shared: decisions carry it.
    pub fn shared_version(&self) -> Arc<str> {
        Arc::clone(&self.version)
    }

    /// A number unique to this load, for caches to key on.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rules file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Warnings found while loading.
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    /// Decides one request: deny rules first, then allow rules, stopping at
    /// the first that decides.
    /// Rules in `mode: shadow` are not enforced; a grant in force
    /// (`input.grant`) allows when no allow rule does.
    pub fn evaluate(&self, input: Input<'_>) -> Decision {
        // Only the rules the index cannot rule out, in file order.
        self.decide(input, &self.enforced.candidates(&input))
    }

    /// What [`Policy::evaluate`] would decide if the rules in
    /// `mode: shadow` were enforced too; `None` when there are none.
    pub(crate) fn evaluate_shadow(&self, input: Input<'_>) -> Option<Decision> {
        let index = self.with_shadow.as_ref()?;
        Some(self.decide(input, &index.candidates(&input)))
    }

    /// The first rule named `name`: a lookup, not a scan, on every check's
    /// audit record.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.named.get(name).and_then(|&i| self.rules.get(i))
    }

    /// What the rules can depend on, all rules together.
    pub fn footprint(&self) -> &footprint::Footprint {
        &self.footprint
    }

    /// The results of the rules at `indices`, in one activation.
    pub(crate) fn evaluate_each(&self, input: Input<'_>, indices: &[usize]) -> Vec<RuleResult> {
        let activation = activation::Activation::new(input);
        let mut ctx = self.root.new_inner_scope();
        ctx.set_variable_resolver(&activation);
        indices
            .iter()
            .map(|i| match self.rules.get(*i) {
                Some(rule) => evaluate_rule(rule, &ctx),
                None => RuleResult::Error("no such rule".into()),
            })
            .collect()
    }

    /// What [`Policy::evaluate`] (or, with `shadow`, what
    /// [`Policy::evaluate_shadow`]) decides, found by evaluating every rule
    /// in order, without the rule index: the reference the index is tested
    /// and measured against.
    pub fn evaluate_sequential(&self, input: Input<'_>, shadow: bool) -> Decision {
        let positions: Vec<u32> = (0..self.rules.len())
            .zip(&self.rules)
            .filter(|(_, r)| shadow || r.mode == Mode::Enforce)
            .map(|(i, _)| u32::try_from(i).unwrap_or(u32::MAX))
            .collect();
        self.decide(input, &positions)
    }

    /// Appends to a decision cache key the values of the bounded clock
    /// reads of the rules (see [`clock`]) for `input`.
    pub(crate) fn clock_key(&self, input: Input<'_>, key: &mut Vec<u8>) {
        self.clock.key(&self.root, input, key);
    }

    /// The index of the enforced rules, built at load.
    pub fn index(&self) -> &index::RuleIndex {
        &self.enforced
    }

    /// Decides with the rules at `positions` (ascending, so in file
    /// order): the deny rules, then the allow rules, then the grant.
    fn decide(&self, input: Input<'_>, positions: &[u32]) -> Decision {
        let activation = activation::Activation::new(input);
        let mut ctx = self.root.new_inner_scope();
        ctx.set_variable_resolver(&activation);
        let mut errors = Vec::new();
        let rules = positions.iter().filter_map(|&i| self.rules.get(i as usize));
        for rule in rules.clone().filter(|r| r.effect == Effect::Deny) {
            let reason = match evaluate_rule(rule, &ctx) {
                RuleResult::NoMatch => continue,
                RuleResult::Match => Reason::DeniedByRule,
                RuleResult::Error(error) => {
                    errors.push(RuleError {
                        rule: Arc::clone(&rule.name),
                        error,
                    });
                    // A deny rule that cannot be evaluated denies.
                    Reason::RuleError
                }
            };
            return self.decision(input, false, reason, Some(rule), errors);
        }
        for rule in rules.filter(|r| r.effect == Effect::Allow) {
            match evaluate_rule(rule, &ctx) {
                RuleResult::NoMatch => {}
                RuleResult::Match => {
                    return self.decision(input, true, Reason::Allowed, Some(rule), errors);
                }
                RuleResult::Error(error) => errors.push(RuleError {
                    rule: Arc::clone(&rule.name),
                    error,
                }),
            }
        }
        match input.grant {
            Some(_) => self.decision(input, true, Reason::Granted, None, errors),
            None => self.decision(input, false, Reason::NoAllowRule, None, errors),
        }
    }

    /// A decision of these rules; the grant in force is part of every
    /// decision, whoever decided.
    fn decision(
        &self,
        input: Input<'_>,
        allowed: bool,
        reason: Reason,
        rule: Option<&Rule>,
        errors: Vec<RuleError>,
    ) -> Decision {
        Decision {
            allowed,
            reason,
            rule: rule.map(|r| Arc::clone(&r.name)),
            detail: None,
            identity: Identity::default(),
            errors,
            policy_version: self.shared_version(),
            grant: input.grant.cloned(),
            ..Decision::default()
        }
    }

    /// The values of `paths` (attribute paths such as `request.method`)
    /// for `input`, each as CEL text or the reason it has none; for
    /// explaining a decision.
    pub fn values(
        &self,
        paths: &[&str],
        input: Input<'_>,
    ) -> Vec<Result<(String, serde_json::Value), String>> {
        let activation = activation::Activation::new(input);
        let mut ctx = self.root.new_inner_scope();
        ctx.set_variable_resolver(&activation);
        let parser_env = functions::environment();
        let missing = |path: &str| absent_credential(path).unwrap_or_default().to_owned();
        paths
            .iter()
            .map(|path| {
                // The whole identity, as `has(source.id)` reads it.
                match *path {
                    "source" => {
                        return input.source.map_or(Err(missing(path)), |svid| {
                            let id = svid.id.to_string();
                            Ok((
                                format!("an X.509-SVID of {id}"),
                                serde_json::Value::from(id),
                            ))
                        });
                    }
                    "token" => {
                        return input.token.map_or(Err(missing(path)), |jwt| {
                            let id = jwt.id.to_string();
                            Ok((format!("a JWT-SVID of {id}"), serde_json::Value::from(id)))
                        });
                    }
                    _ => {}
                }
                let expr = parser_env.parser().parse(path).map_err(|e| e.to_string())?;
                Value::resolve(&expr, &ctx)
                    .map(|v| (display(&v), to_json(&v)))
                    .map_err(|e| {
                        let credential_absent = match path.split_once('.') {
                            Some(("source", _)) => input.source.is_none(),
                            Some(("token", _)) => input.token.is_none(),
                            _ => false,
                        };
                        let absent = (credential_absent
                            && matches!(e, cel::ExecutionError::NoSuchKey(_)))
                        .then(|| absent_credential(path))
                        .flatten();
                        // Shown beside its path: not twice.
                        let message = absent.map_or_else(|| message_of(&e), str::to_owned);
                        match message.strip_prefix(&format!("{path}: ")) {
                            Some(rest) => rest.to_owned(),
                            None => message,
                        }
                    })
            })
            .collect()
    }

    /// The condition of rule `name` evaluated clause by clause on `input`,
    /// with the attribute values shown from `shown` (the same input,
    /// redacted). `None` when there is no such rule.
    pub fn explain(
        &self,
        name: &str,
        input: Input<'_>,
        shown: Input<'_>,
    ) -> Option<explain::Clause> {
        let rule = self.rule(name)?;
        let activation = activation::Activation::new(input);
        let mut truth = self.root.new_inner_scope();
        truth.set_variable_resolver(&activation);
        let shown_activation = activation::Activation::new(shown);
        let mut shown_ctx = self.root.new_inner_scope();
        shown_ctx.set_variable_resolver(&shown_activation);
        Some(explain::tree(&rule.expr, &truth, &shown_ctx))
    }

    /// Evaluates every rule, each on its own, for `celador test` and
    /// `celador eval` to show rule by rule.
    pub fn evaluate_all(&self, input: Input<'_>) -> Vec<(&Rule, RuleResult)> {
        let activation = activation::Activation::new(input);
        let mut ctx = self.root.new_inner_scope();
        ctx.set_variable_resolver(&activation);
        self.rules
            .iter()
            .map(|rule| (rule, evaluate_rule(rule, &ctx)))
            .collect()
    }
}

fn evaluate_rule(rule: &Rule, ctx: &Context<'_, '_>) -> RuleResult {
    match Value::resolve_val(&rule.expr, ctx) {
        Ok(value) => match value.downcast_ref::<CelBool>() {
            Some(b) if *b.inner() => RuleResult::Match,
            Some(_) => RuleResult::NoMatch,
            None => RuleResult::Error(format!(
                "the condition evaluated to a {}, not a bool",
                value.get_type().name()
            )),
        },
        Err(cel::ExecutionError::UndeclaredReference(name)) => {
            // A flattened field (see `flatten_fields`) the activation could
            // not serve: the checker admits only fields of the schema, so the
            // credential behind it is absent.
            RuleResult::Error(match absent_credential(&name) {
                Some(why) => format!("{name}: {why}"),
                None => format!("undeclared reference to '{name}'"),
            })
        }
        Err(e) => RuleResult::Error(message_of(&e)),
    }
}

/// Why the attribute `path` (`source.id`, `token.claims`) has no value
/// when it is an identity's: the credential is absent.
pub(crate) fn absent_credential(path: &str) -> Option<&'static str> {
    match path.split_once('.').map_or(path, |(var, _)| var) {
        "source" => Some("the request has no verified X.509-SVID"),
        "token" => Some("the request has no verified JWT-SVID"),
        _ => None,
    }
}

/// What went wrong, in words for rule authors: the activation reports an
/// absent `source` or `token` as a "function error" of that name, which
/// neither is.
fn message_of(e: &cel::ExecutionError) -> String {
    match e {
        cel::ExecutionError::FunctionError { function, message }
            if function == "source" || function == "token" =>
        {
            message.clone()
        }
        cel::ExecutionError::NoSuchKey(key) => {
            format!("the key \"{key}\" is absent (test for it first: `\"{key}\" in ... && ...`)")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
