//! Compilation: a rules file's text in, a [`Policy`] or every problem
//! found in it out.
//!
//! Data flow: the YAML is read ([`super::rules_file`]; a YAML error is
//! placed in the rule it belongs to), each rule's name is checked, its
//! `when` parsed by CEL, type-checked ([`super::check`]), its regular
//! expressions and Kubernetes literals prepared ([`super::kubernetes`]),
//! and its condition rewritten ([`super::rewrite`]); the rules that
//! compiled are linted ([`super::lint`]). Every problem is a
//! [`Diagnostic`] with its line, column and the line's text; a file with
//! any error is refused whole.

use std::collections::{BTreeSet, HashSet};
use std::hash::Hash;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::diagnostic::{self, Diagnostic, ScalarSpan, Severity};
use super::functions::{self, RegexTable};
use super::rewrite::{flatten_fields, rename_matches};
use super::{
    Mode, Policy, Rule, check, clock, depth, footprint, index, kubernetes, lint, rules_file, schema,
};

/// The stack of the thread a policy compiles on: reserved, not committed,
/// so it costs only the pages the parser touches; enough for the deepest
/// text [`depth::MAX_NESTING`] lets through, many times over.
const COMPILE_STACK: usize = 64 << 20;

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
    ///
    /// It runs on a thread of its own with a stack of [`COMPILE_STACK`]:
    /// the parser recurses deeply per bracket (a debug build needs more
    /// than 100 KiB a level), and the caller's stack may be a runtime
    /// worker's 2 MiB. Only where no thread can start does it run here.
    pub fn compile(
        text: &str,
        path: &Path,
        file: &rules_file::RulesFile,
    ) -> Result<Policy, PolicyError> {
        std::thread::scope(|scope| {
            let spawned = std::thread::Builder::new()
                .name("celador-compile".into())
                .stack_size(COMPILE_STACK)
                .spawn_scoped(scope, || Policy::compile_here(text, path, file));
            match spawned {
                Ok(handle) => handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                Err(_) => Policy::compile_here(text, path, file),
            }
        })
    }

    fn compile_here(
        text: &str,
        path: &Path,
        file: &rules_file::RulesFile,
    ) -> Result<Policy, PolicyError> {
        let env = functions::environment();
        let mut diagnostics = Vec::new();
        let mut regexes = RegexTable::default();
        let lines = diagnostic::Lines::of(text);
        let mut literals = kubernetes::Literals::default();
        let mut shared = Shared::default();
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
            if let Some(c) = compile_rule(
                &env,
                rule,
                (&mut regexes, &mut literals, &mut shared),
                &mut diagnostics,
            ) {
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
        let footprint = footprint::Footprint::union(rules.iter().map(|r| &*r.footprint));
        let (enforced, with_shadow) = indexes(&rules);
        Ok(Policy {
            named: first_of_each_name(&rules),
            enforced,
            with_shadow,
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
            when: &c.rule.when,
        })
        .collect();
    lint::lint(&subjects)
}

/// The index of the enforced rules and, when some rule is in
/// `mode: shadow`, of all of them: the split by mode is made here, once,
/// so that each evaluation walks one index and evaluates every candidate
/// it yields.
fn indexes(rules: &[Rule]) -> (index::RuleIndex, Option<Box<index::RuleIndex>>) {
    let conditions = || rules.iter().enumerate().map(|(i, r)| (i, r, &r.expr));
    let enforced = index::RuleIndex::build(
        conditions()
            .filter(|(_, r, _)| r.mode == Mode::Enforce)
            .map(|(i, _, expr)| (i, expr)),
    );
    let with_shadow = rules.iter().any(|r| r.mode == Mode::Shadow).then(|| {
        Box::new(index::RuleIndex::build(
            conditions().map(|(i, _, expr)| (i, expr)),
        ))
    });
    (enforced, with_shadow)
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

/// A compiled rule and what the linter needs of it.
struct Compiled {
    rule: Rule,
    map_reads: Vec<check::MapRead>,
    guards: BTreeSet<(String, String)>,
}

/// The per-rule values that are often equal across a policy's rules (most
/// rules of a large policy read the same attributes), held once: at 20,000
/// rules, a set each was about 13 MiB of the loaded policy.
#[derive(Default)]
struct Shared {
    reads: HashSet<Arc<BTreeSet<String>>>,
    footprints: HashSet<Arc<footprint::Footprint>>,
}

impl Shared {
    /// `value`, as the one already held when an equal one is.
    fn share<T: Hash + Eq>(held: &mut HashSet<Arc<T>>, value: T) -> Arc<T> {
        if let Some(same) = held.get(&value) {
            return Arc::clone(same);
        }
        let value = Arc::new(value);
        held.insert(Arc::clone(&value));
        value
    }
}

/// Compiles one rule, adding its problems to `diagnostics`.
fn compile_rule(
    env: &cel::Env,
    located: &Located<'_>,
    (regexes, literals, shared): (&mut RegexTable, &mut kubernetes::Literals, &mut Shared),
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Compiled> {
    let spec = located.spec;
    if let Some(problem) = name_problem(&spec.name.value) {
        diagnostics.push(located.diagnostic(Severity::Error, None, problem));
        return None;
    }
    let when = spec.when.value.as_str();
    if let Some((offset, problem)) = depth::source_nesting(when) {
        diagnostics.push(located.diagnostic(Severity::Error, Some(offset), problem));
        return None;
    }
    let (mut expr, info) = match functions::parser(env).parse_with_source_info(when) {
        Ok(parsed) => parsed,
        Err(errors) => {
            report_syntax_errors(located, when, &errors, diagnostics);
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
    if let Some(problem) = depth::Depth::of(&expr).problem() {
        diagnostics.push(located.diagnostic(Severity::Error, Some(0), problem));
        return None;
    }
    Some(Compiled {
        rule: Rule {
            name: Arc::from(spec.name.value.as_str()),
            description: spec.description.clone(),
            effect: spec.effect,
            when: when.to_owned(),
            line: usize::try_from(spec.name.referenced.line()).unwrap_or(0),
            reads: Shared::share(&mut shared.reads, checked.reads),
            mode: spec.mode,
            footprint: Shared::share(&mut shared.footprints, footprint),
            expr,
        },
        map_reads: checked.map_reads,
        guards: checked.guards,
    })
}

/// Reports the parser's errors for a rule's condition.
fn report_syntax_errors(
    located: &Located<'_>,
    when: &str,
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
            (e, message, syntax_hint(when, message))
        })
        .collect();
    let hinted = errors.iter().any(|(_, _, hint)| hint.is_some());
    for (e, message, hint) in errors {
        if hinted && hint.is_none() {
            continue;
        }
        diagnostics.push(located.diagnostic(
            Severity::Error,
            Some(offset_of_position(when, e.pos)),
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

/// A hint for a common slip behind a parser error in `when`.
fn syntax_hint(when: &str, message: &str) -> Option<String> {
    let bytes = when.as_bytes();
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
        let inside = when.split_once("has(")?.1.split(')').next()?;
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
fn offset_of_position(when: &str, (line, column): (isize, isize)) -> usize {
    let line = usize::try_from(line).unwrap_or(1).max(1);
    let column = usize::try_from(column).unwrap_or(1).max(1);
    let line_start: usize = when
        .split_inclusive('\n')
        .take(line - 1)
        .map(str::len)
        .sum();
    let rest = when.get(line_start..).unwrap_or_default();
    let within = rest
        .char_indices()
        .nth(column - 1)
        .map_or(rest.len(), |(i, _)| i);
    line_start + within
}
