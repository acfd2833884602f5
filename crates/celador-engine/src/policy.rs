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

mod activation;
pub mod check;
pub mod clock;
pub mod diagnostic;
pub mod footprint;
mod functions;
pub mod index;
pub mod kubernetes;
mod lint;
mod query;
pub mod rules_file;
pub mod schema;
pub mod trace;
mod unparse;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cel::common::ast::Expr;
use cel::common::types::CelBool;
use cel::{Context, IdedExpr, Value};
use sha2::{Digest, Sha256};

pub use activation::Input;
pub use diagnostic::{Diagnostic, Severity};
pub use rules_file::{Effect, Mode};

use super::decision::{Decision, RuleError};
use super::identity::Identity;
use super::reason::Reason;
use diagnostic::ScalarSpan;
use functions::RegexTable;

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
    pub source: String,
    /// 1-based line of the rule's `name` in the file.
    pub line: usize,
    /// The attributes the rule reads (`source.id`, `request.headers`, ...).
    pub reads: BTreeSet<String>,
    /// Whether the rule is only evaluated beside the enforced ones.
    pub mode: Mode,
    /// What of a request the rule's result can depend on.
    pub footprint: footprint::Footprint,
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
    index: index::RuleIndex,
    clock: clock::ClockReads,
    /// Whether some rule is in `mode: shadow`.
    shadow_rules: bool,
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

/// A rules file that cannot be loaded, with every problem found.
#[derive(Debug, Clone, thiserror::Error)]
pub struct PolicyError {
    /// The errors (and any warnings found before them).
    pub diagnostics: Vec<Diagnostic>,
}

impl PolicyError {
    /// The rules file at `path` cannot be read.
    pub fn unreadable(path: &Path, error: &std::io::Error) -> Self {
        PolicyError {
            diagnostics: vec![Diagnostic {
                severity: Severity::Error,
                file: path.to_owned(),
                line: 0,
                column: 0,
                rule: None,
                message: format!("cannot read the rules file: {error}"),
                line_text: None,
            }],
        }
    }
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let errors = self
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count();
        for d in &self.diagnostics {
            writeln!(f, "{d}")?;
        }
        write!(f, "{errors} error(s): the rules file was not loaded")
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
    /// Compiles the rules in `text`; `path` names the file in diagnostics.
    pub fn parse(text: &str, path: &Path) -> Result<Policy, PolicyError> {
        let file: rules_file::RulesFile =
            crate::yaml::from_str(text, path).map_err(|e| PolicyError {
                diagnostics: vec![yaml_diagnostic(text, path, e)],
            })?;
        Policy::compile(text, path, &file)
    }

    /// Compiles rules already read from `text` (the file at `path`, named
    /// in diagnostics): a rules file, or the conditions of a grants file.
    pub fn compile(
        text: &str,
        path: &Path,
        file: &rules_file::RulesFile,
    ) -> Result<Policy, PolicyError> {
        let env = functions::environment();
        let mut diagnostics = Vec::new();
        let mut regexes = RegexTable::default();
        let lines = diagnostic::Lines::of(text);
        let mut literals = kubernetes::Literals::default();
        let located: Vec<Located<'_>> = file
            .rules
            .iter()
            .map(|spec| Located {
                text,
                path,
                spec,
                lines: &lines,
            })
            .collect();
        let mut compiled = Vec::with_capacity(located.len());
        for rule in &located {
            if let Some(c) =
                compile_rule(&env, rule, (&mut regexes, &mut literals), &mut diagnostics)
            {
                compiled.push((c, rule));
            }
        }
        // The rules that compiled are linted even when others did not, so
        // that a file with errors shows its warnings too.
        diagnostics.extend(lint_compiled(&compiled));
        if diagnostics.iter().any(|d| d.severity == Severity::Error) {
            diagnostics.sort_by_key(|d| (d.line, d.column));
            return Err(PolicyError { diagnostics });
        }
        if file.rules.is_empty() {
            diagnostics.push(Diagnostic {
                severity: Severity::Warning,
                file: path.to_owned(),
                line: 1,
                column: 1,
                rule: None,
                message: "the rules file has no rules: every request is denied (no_allow_rule)"
                    .into(),
                line_text: line_text(text, 1),
            });
        }
        let rules: Vec<Rule> = compiled.into_iter().map(|(c, _)| c.rule).collect();
        let footprint = footprint::Footprint::union(rules.iter().map(|r| &r.footprint));
        let index = index::RuleIndex::build(rules.iter().map(|r| &r.expr));
        Ok(Policy {
            shadow_rules: rules.iter().any(|r| r.mode == Mode::Shadow),
            named: first_of_each_name(&rules),
            index,
            clock: clock::ClockReads::compile(&footprint.clock),
            footprint,
            rules,
            version: version_of(text),
            generation: crate::generation::next(),
            path: path.to_owned(),
            warnings: diagnostics,
            root: {
                let mut root = functions::root_context(Arc::new(env), Arc::new(regexes));
                literals.install(&mut root);
                root
            },
        })
    }

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
        self.evaluate_rules(input, |r| r.mode == Mode::Enforce)
    }

    /// What [`Policy::evaluate`] would decide if the rules in
    /// `mode: shadow` were enforced too; `None` when there are none.
    pub fn evaluate_shadow(&self, input: Input<'_>) -> Option<Decision> {
        self.shadow_rules
            .then(|| self.evaluate_rules(input, |_| true))
    }

    /// Whether some rule is in `mode: shadow`.
    pub fn has_shadow_rules(&self) -> bool {
        self.shadow_rules
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
    pub fn evaluate_each(&self, input: Input<'_>, indices: &[usize]) -> Vec<RuleResult> {
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
        let included = |r: &Rule| shadow || r.mode == Mode::Enforce;
        let mut decision =
            self.evaluate_included(input, || self.rules.iter().filter(|r| included(r)));
        decision.grant = input.grant.cloned();
        decision
    }

    /// Appends to a decision cache key the values of the bounded clock
    /// reads of the rules (see [`clock`]) for `input`.
    pub fn clock_key(&self, input: Input<'_>, key: &mut Vec<u8>) {
        self.clock.key(&self.root, input, key);
    }

    /// The rule index built at load.
    pub fn index(&self) -> &index::RuleIndex {
        &self.index
    }

    fn evaluate_rules(&self, input: Input<'_>, included: impl Fn(&Rule) -> bool) -> Decision {
        // Only the rules the index cannot rule out, in file order.
        let candidates = self.index.candidates(&input);
        let rules = || {
            candidates
                .iter()
                .filter_map(|&i| self.rules.get(i as usize))
                .filter(|r| included(r))
        };
        let mut decision = self.evaluate_included(input, rules);
        // The grant in force is part of every decision, whoever decided.
        decision.grant = input.grant.cloned();
        decision
    }

    /// Decides with `rules()`, the rules to evaluate in file order.
    fn evaluate_included<'r, I>(&'r self, input: Input<'_>, rules: impl Fn() -> I) -> Decision
    where
        I: Iterator<Item = &'r Rule>,
    {
        let activation = activation::Activation::new(input);
        let mut ctx = self.root.new_inner_scope();
        ctx.set_variable_resolver(&activation);
        let mut errors = Vec::new();
        for rule in rules().filter(|r| r.effect == Effect::Deny) {
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
            return self.decision(false, reason, Some(rule), errors);
        }
        for rule in rules().filter(|r| r.effect == Effect::Allow) {
            match evaluate_rule(rule, &ctx) {
                RuleResult::NoMatch => {}
                RuleResult::Match => {
                    return self.decision(true, Reason::Allowed, Some(rule), errors);
                }
                RuleResult::Error(error) => errors.push(RuleError {
                    rule: Arc::clone(&rule.name),
                    error,
                }),
            }
        }
        match input.grant {
            Some(_) => self.decision(true, Reason::Granted, None, errors),
            None => self.decision(false, Reason::NoAllowRule, None, errors),
        }
    }

    fn decision(
        &self,
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
    pub fn trace(&self, name: &str, input: Input<'_>, shown: Input<'_>) -> Option<trace::Clause> {
        let rule = self.rule(name)?;
        let activation = activation::Activation::new(input);
        let mut truth = self.root.new_inner_scope();
        truth.set_variable_resolver(&activation);
        let shown_activation = activation::Activation::new(shown);
        let mut shown_ctx = self.root.new_inner_scope();
        shown_ctx.set_variable_resolver(&shown_activation);
        Some(trace::trace(&rule.expr, &truth, &shown_ctx))
    }

    /// Evaluates every rule, for explaining a decision.
    pub fn explain(&self, input: Input<'_>) -> Vec<(&Rule, RuleResult)> {
        let activation = activation::Activation::new(input);
        let mut ctx = self.root.new_inner_scope();
        ctx.set_variable_resolver(&activation);
        self.rules
            .iter()
            .map(|rule| (rule, evaluate_rule(rule, &ctx)))
            .collect()
    }
}

/// A CEL value as typed JSON: strings, numbers, booleans, lists and maps
/// as themselves; timestamps as RFC 3339 text, durations as seconds, bytes
/// as base64.
pub fn to_json(value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::UInt(u) => J::from(*u),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::String(s) => J::String(s.as_str().to_owned()),
        Value::Bytes(b) => {
            use base64::Engine;
            J::String(base64::engine::general_purpose::STANDARD.encode(b.as_slice()))
        }
        Value::List(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Map(map) => J::Object(
            map.map
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        cel::objects::Key::String(s) => s.as_str().to_owned(),
                        cel::objects::Key::Int(i) => i.to_string(),
                        cel::objects::Key::Uint(u) => u.to_string(),
                        cel::objects::Key::Bool(b) => b.to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Value::Timestamp(t) => J::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        Value::Duration(d) => J::from(d.num_milliseconds() as f64 / 1000.0),
        other => J::String(display(other)),
    }
}

/// A CEL value as CEL text: strings quoted, maps with sorted keys.
pub fn display(value: &Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::UInt(u) => {
            let _ = write!(out, "{u}u");
        }
        Value::Float(f) => out.push_str(&format!("{f:?}")),
        Value::String(s) => out.push_str(&serde_json::to_string(s.as_str()).unwrap_or_default()),
        Value::Bytes(b) => {
            out.push_str("b\"");
            for byte in b.iter() {
                let _ = write!(out, "\\x{byte:02x}");
            }
            out.push('"');
        }
        Value::List(items) => {
            out.push('[');
            let shown: Vec<String> = items.iter().map(display).collect();
            out.push_str(&shown.join(", "));
            out.push(']');
        }
        Value::Map(map) => display_map(&mut out, map),
        Value::Timestamp(t) => {
            let _ = write!(
                out,
                "timestamp(\"{}\")",
                t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            );
        }
        Value::Duration(d) => {
            let _ = write!(
                out,
                "duration(\"{}s\")",
                d.num_milliseconds() as f64 / 1000.0
            );
        }
        other => {
            let _ = write!(out, "{other:?}");
        }
    }
    out
}

/// A CEL map as CEL text, with its keys sorted.
fn display_map(out: &mut String, map: &cel::objects::Map) {
    let mut entries: Vec<(String, String)> = map
        .map
        .iter()
        .map(|(k, v)| {
            let key = match k {
                cel::objects::Key::String(s) => {
                    serde_json::to_string(s.as_str()).unwrap_or_default()
                }
                cel::objects::Key::Int(i) => i.to_string(),
                cel::objects::Key::Uint(u) => format!("{u}u"),
                cel::objects::Key::Bool(b) => b.to_string(),
            };
            (key, display(v))
        })
        .collect();
    entries.sort();
    out.push('{');
    let shown: Vec<String> = entries
        .into_iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    out.push_str(&shown.join(", "));
    out.push('}');
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

/// The lints' warnings on rules that compiled.
fn lint_compiled(compiled: &[(Compiled, &Located<'_>)]) -> Vec<Diagnostic> {
    let places: Vec<_> = compiled
        .iter()
        .map(|(_, located)| {
            move |offset: Option<usize>, message: String| {
                located.diagnostic(Severity::Warning, offset, message)
            }
        })
        .collect();
    let subjects: Vec<lint::Subject<'_>> = compiled
        .iter()
        .zip(&places)
        .map(|((c, _), place)| lint::Subject {
            name: &c.rule.name,
            effect: c.rule.effect,
            expr: &c.rule.expr,
            map_reads: &c.map_reads,
            guards: &c.guards,
            place,
            line: c.rule.line,
            source: &c.rule.source,
        })
        .collect();
    lint::lint(&subjects)
}

/// The position of each name's first rule.
fn first_of_each_name(rules: &[Rule]) -> std::collections::HashMap<Arc<str>, usize> {
    let mut named = std::collections::HashMap::with_capacity(rules.len());
    for (i, rule) in rules.iter().enumerate() {
        named.entry(Arc::clone(&rule.name)).or_insert(i);
    }
    named
}

/// The policy version of a rules file: the first 16 hex digits of the
/// SHA-256 of its text.
pub(crate) fn version_of(text: &str) -> Arc<str> {
    let digest = Sha256::digest(text.as_bytes());
    digest
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .into()
}

/// A YAML error in a rules file, named with the rule it belongs to (the
/// last `- name:` at or above it), placed inside that rule, with a hint for
/// a key that is there but indented wrongly.
fn yaml_diagnostic(text: &str, path: &Path, e: crate::yaml::YamlError) -> Diagnostic {
    let lines: Vec<&str> = text.lines().collect();
    let error_line = usize::try_from(e.line).unwrap_or(0);
    let names: Vec<(usize, String)> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let name = l.trim_start().strip_prefix("- name:")?.trim();
            Some((i + 1, name.trim_matches(['"', '\'']).to_owned()))
        })
        .collect();
    let rule = names
        .iter()
        .rposition(|(line, _)| *line <= error_line.max(1));
    // The rule's lines: from its name to the next rule's.
    let span = rule.map(|i| {
        let start = names.get(i).map_or(1, |(line, _)| *line);
        let end = names.get(i + 1).map_or(lines.len(), |(line, _)| line - 1);
        (start, end)
    });
    let mut message = e.message;
    if let (Some((start, end)), Some(key)) = (
        span,
        message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next()),
    ) && let Some(at) = (start..=end).find(|l| {
        lines
            .get(l - 1)
            .is_some_and(|t| t.trim_start().starts_with(&format!("{key}:")))
    }) {
        message.push_str(&format!(
            "; line {at} has `{key}:`, but it is not indented like the rule's other keys"
        ));
    }
    if text.lines().any(|l| l.starts_with("cases:")) {
        message.push_str(
            "; this looks like a test suite (it has `cases:`): run it with `celador test`",
        );
    }
    let (line, column) = match span {
        Some((start, end)) if !(start..=end).contains(&error_line) => (start, 1),
        _ => (error_line, usize::try_from(e.column).unwrap_or(0)),
    };
    Diagnostic {
        severity: Severity::Error,
        file: path.to_owned(),
        line,
        column,
        rule: rule
            .and_then(|i| names.get(i))
            .map(|(_, name)| name.clone()),
        message,
        line_text: line_text(text, u64::try_from(line).unwrap_or(0)),
    }
}

/// A rule spec with what is needed to place its problems in the file.
struct Located<'a> {
    text: &'a str,
    lines: &'a diagnostic::Lines,
    path: &'a Path,
    spec: &'a rules_file::RuleSpec,
}

impl Located<'_> {
    fn diagnostic(
        &self,
        severity: Severity,
        offset_in_when: Option<usize>,
        message: String,
    ) -> Diagnostic {
        let when = &self.spec.when;
        let span = when.referenced.span();
        let file_offset = match (offset_in_when, span.byte_offset(), span.byte_len()) {
            (Some(offset), Some(start), Some(len)) => {
                let span = ScalarSpan {
                    start: usize::try_from(start).unwrap_or(0),
                    len: usize::try_from(len).unwrap_or(0),
                };
                Some(diagnostic::map_offset(self.text, span, &when.value, offset))
            }
            _ => None,
        };
        let (line, column, line_text) = match file_offset {
            Some(offset) => {
                let (line, column, text) = self.lines.line_column(self.text, offset);
                (line, column, Some(text))
            }
            None => {
                let line = usize::try_from(self.spec.name.referenced.line()).unwrap_or(0);
                let column = usize::try_from(self.spec.name.referenced.column()).unwrap_or(0);
                (
                    line,
                    column,
                    self.lines.text(self.text, self.spec.name.referenced.line()),
                )
            }
        };
        Diagnostic {
            severity,
            file: self.path.to_owned(),
            line,
            column,
            rule: Some(self.spec.name.value.clone()),
            message,
            line_text,
        }
    }
}

fn line_text(text: &str, line: u64) -> Option<String> {
    let index = usize::try_from(line).ok()?.checked_sub(1)?;
    text.lines().nth(index).map(str::to_owned)
}

/// Compiles one rule, adding its problems to `diagnostics`.
/// A compiled rule and what the linter needs of it.
struct Compiled {
    rule: Rule,
    map_reads: Vec<check::MapRead>,
    guards: BTreeSet<(String, String)>,
}

fn compile_rule(
    env: &cel::Env,
    located: &Located<'_>,
    (regexes, literals): (&mut RegexTable, &mut kubernetes::Literals),
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Compiled> {
    let spec = located.spec;
    if let Some(problem) = name_problem(&spec.name.value) {
        diagnostics.push(located.diagnostic(Severity::Error, None, problem));
        return None;
    }
    let source = spec.when.value.as_str();
    let (mut expr, info) = match functions::parser(env).parse_with_source_info(source) {
        Ok(parsed) => parsed,
        Err(errors) => {
            report_syntax_errors(located, source, &errors, diagnostics);
            return None;
        }
    };
    let checked = check::check(&expr, &info);
    if !accept_checked(&checked, located, regexes, diagnostics) {
        return None;
    }
    let footprint = footprint::Footprint::of(&expr);
    let problems = kubernetes::prepare(&mut expr, &info, literals);
    for problem in &problems {
        let offset = Some(problem.offset as usize);
        diagnostics.push(located.diagnostic(Severity::Error, offset, problem.message.clone()));
    }
    if !problems.is_empty() {
        return None;
    }
    rename_matches(&mut expr);
    flatten_fields(&mut expr, &mut Vec::new());
    Some(Compiled {
        rule: Rule {
            name: Arc::from(spec.name.value.as_str()),
            description: spec.description.clone(),
            effect: spec.effect,
            source: source.to_owned(),
            line: usize::try_from(spec.name.referenced.line()).unwrap_or(0),
            reads: checked.reads,
            mode: spec.mode,
            footprint,
            expr,
        },
        map_reads: checked.map_reads,
        guards: checked.guards,
    })
}

/// Reports the parser's errors for a rule's condition.
fn report_syntax_errors(
    located: &Located<'_>,
    source: &str,
    errors: &cel::ParseErrors,
    diagnostics: &mut Vec<Diagnostic>,
) {
    // A slip such as `=` for `==` confuses the parser more than
    // once; one error with a hint says more than several without.
    let errors: Vec<_> = errors
        .errors
        .iter()
        .map(|e| {
            let message = e.msg.trim_start_matches("Syntax error: ");
            (e, message, syntax_hint(source, message))
        })
        .collect();
    let hinted = errors.iter().any(|(_, _, hint)| hint.is_some());
    for (e, message, hint) in errors {
        if hinted && hint.is_none() {
            continue;
        }
        diagnostics.push(located.diagnostic(
            Severity::Error,
            Some(offset_of_position(source, e.pos)),
            format!("syntax error: {message}{}", hint.unwrap_or_default()),
        ));
        if hinted {
            break;
        }
    }
}

/// Whether a type-checked rule may load: no type error, a bool condition,
/// and regular expressions that compile. Adds its problems to `diagnostics`.
fn accept_checked(
    checked: &check::Checked,
    located: &Located<'_>,
    regexes: &mut RegexTable,
    diagnostics: &mut Vec<Diagnostic>,
) -> bool {
    let mut failed = false;
    for problem in &checked.errors {
        failed = true;
        diagnostics.push(located.diagnostic(
            Severity::Error,
            Some(problem.offset as usize),
            problem.message.clone(),
        ));
    }
    if let Some(ty) = &checked.ty
        && !matches!(ty, schema::Ty::Bool | schema::Ty::Dyn)
        && checked.errors.is_empty()
    {
        failed = true;
        // The whole condition is the problem: point at its start.
        diagnostics.push(located.diagnostic(
            Severity::Error,
            Some(0),
            format!("a rule's condition must be a bool, but this is a {ty}"),
        ));
    }
    for (pattern, offset) in &checked.regex_literals {
        if let Err(e) = regexes.add(pattern) {
            failed = true;
            diagnostics.push(located.diagnostic(Severity::Error, Some(*offset as usize), e));
        }
    }
    !failed
}

/// A hint for a common slip behind a parser error in `source`.
fn syntax_hint(source: &str, message: &str) -> Option<String> {
    let bytes = source.as_bytes();
    let lone_equals = bytes.iter().enumerate().any(|(i, b)| {
        *b == b'='
            && !matches!(bytes.get(i + 1), Some(b'='))
            && !matches!(
                i.checked_sub(1).and_then(|j| bytes.get(j)),
                Some(b'=' | b'!' | b'<' | b'>')
            )
    });
    if lone_equals && message.contains("'=") {
        return Some("; CEL compares with '==', not '='".into());
    }
    if message.contains("invalid argument to has() macro") {
        // `has(request.headers.x-change-ticket)`: the key is the dotted
        // segment with the dash, the map what comes before it.
        let inside = source.split_once("has(")?.1.split(')').next()?;
        let dash = inside.find('-')?;
        let dot = inside.get(..dash)?.rfind('.')?;
        let (map, key) = (inside.get(..dot)?, inside.get(dot + 1..)?);
        return Some(format!(
            "; has() takes a field name, and '{key}' is not one: write \"{key}\" in {map}"
        ));
    }
    None
}

/// The longest rule name: names travel in headers, metadata and metrics.
const MAX_RULE_NAME: usize = 128;

/// What is wrong with a rule name, if anything. Names become header values
/// (`x-celador-rule`), so they are limited to a set no header can choke on.
fn name_problem(name: &str) -> Option<String> {
    if name.trim().is_empty() {
        return Some("the rule has an empty name".into());
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/')))
    {
        return Some(format!(
            "the rule name {name:?} has {bad:?}; a name may use only letters, digits and - _ . : / (it is sent in headers)"
        ));
    }
    if name.len() > MAX_RULE_NAME {
        return Some(format!(
            "the rule name is {} characters long; at most {MAX_RULE_NAME}",
            name.len()
        ));
    }
    None
}

/// The byte offset of a parser position (1-based line, 1-based column in
/// characters).
fn offset_of_position(source: &str, (line, column): (isize, isize)) -> usize {
    let line = usize::try_from(line).unwrap_or(1).max(1);
    let column = usize::try_from(column).unwrap_or(1).max(1);
    let line_start: usize = source
        .split_inclusive('\n')
        .take(line - 1)
        .map(str::len)
        .sum();
    let rest = source.get(line_start..).unwrap_or_default();
    let within = rest
        .char_indices()
        .nth(column - 1)
        .map_or(rest.len(), |(i, _)| i);
    line_start + within
}

/// Turns `source.id` (a select on a variable) into the single identifier
/// `source.id`, which the activation resolves in one lookup: `cel` resolves
/// a select on a name as a qualified name, allocating as it goes. Names that
/// a comprehension binds (`shadowed`) are left alone.
fn flatten_fields(expr: &mut IdedExpr, shadowed: &mut Vec<String>) {
    match &mut expr.expr {
        Expr::Select(select) if !select.test => {
            if let Expr::Ident(name) = &select.operand.expr
                && !shadowed.contains(name)
                && let Some(schema::FieldTy::Object(object)) = schema::variable(name).map(|v| v.ty)
                && object.field(&select.field).is_some()
            {
                let flat = format!("{name}.{}", select.field);
                expr.expr = Expr::Ident(flat);
            } else {
                flatten_fields(&mut select.operand, shadowed);
            }
        }
        Expr::Select(select) => flatten_fields(&mut select.operand, shadowed),
        Expr::Call(call) => {
            if let Some(target) = &mut call.target {
                flatten_fields(target, shadowed);
            }
            for arg in &mut call.args {
                flatten_fields(arg, shadowed);
            }
        }
        Expr::List(list) => {
            for element in &mut list.elements {
                flatten_fields(element, shadowed);
            }
        }
        Expr::Map(map) => {
            for entry in &mut map.entries {
                if let cel::common::ast::EntryExpr::MapEntry(e) = &mut entry.expr {
                    flatten_fields(&mut e.key, shadowed);
                    flatten_fields(&mut e.value, shadowed);
                }
            }
        }
        Expr::Comprehension(comp) => {
            flatten_fields(&mut comp.iter_range, shadowed);
            flatten_fields(&mut comp.accu_init, shadowed);
            let depth = shadowed.len();
            shadowed.push(comp.iter_var.clone());
            shadowed.extend(comp.iter_var2.clone());
            shadowed.push(comp.accu_var.clone());
            flatten_fields(&mut comp.loop_cond, shadowed);
            flatten_fields(&mut comp.loop_step, shadowed);
            flatten_fields(&mut comp.result, shadowed);
            shadowed.truncate(depth);
        }
        Expr::Struct(_) | Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

/// Points `matches` calls at the cached implementation (see [`functions`]).
fn rename_matches(expr: &mut IdedExpr) {
    match &mut expr.expr {
        Expr::Call(call) => {
            if call.func_name == "matches" {
                call.func_name = functions::MATCHES_INTERNAL.to_owned();
            }
            if let Some(target) = &mut call.target {
                rename_matches(target);
            }
            call.args.iter_mut().for_each(rename_matches);
        }
        Expr::Select(select) => rename_matches(&mut select.operand),
        Expr::List(list) => list.elements.iter_mut().for_each(rename_matches),
        Expr::Map(map) => {
            for entry in &mut map.entries {
                if let cel::common::ast::EntryExpr::MapEntry(e) = &mut entry.expr {
                    rename_matches(&mut e.key);
                    rename_matches(&mut e.value);
                }
            }
        }
        Expr::Comprehension(comp) => {
            rename_matches(&mut comp.iter_range);
            rename_matches(&mut comp.accu_init);
            rename_matches(&mut comp.loop_cond);
            rename_matches(&mut comp.loop_step);
            rename_matches(&mut comp.result);
        }
        Expr::Struct(_) | Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

#[cfg(test)]
mod tests;
