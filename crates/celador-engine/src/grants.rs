//! Time-bound (just-in-time) grants: access for named identities that
//! opens at `not_before` and closes at `expires`, with a reason.
//!
//! ```yaml
//! grants:
//!   - name: inc-4711-rerun-export
//!     identities: ["spiffe://example.org/ns/batch/sa/exporter"]
//!     when: request.method == "POST" && request.path.startsWith("/export/")
//!     not_before: 2026-11-25T10:00:00Z     # optional
//!     expires: 2026-11-25T12:00:00Z
//!     reason: "INC-4711: re-run the failed export"
//! ```
//!
//! Data flow: a watched grants file is parsed here ([`Grants::parse`]), its
//! conditions compiled and type-checked like rules, and published into the
//! live-state store. Per request the engine asks [`Grants::find`] for the
//! grant in force for the caller, at the time of the check: windows open
//! and close to the second with no reload. Rules see the grant as `grant`;
//! a grant in force allows when no allow rule does, and deny rules still
//! override it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_saphyr::Spanned;

pub use super::grant::{Grant, Origin};
use super::identity::{Identity, SpiffeId};
use super::policy::diagnostic::{Diagnostic, Severity};
use super::policy::rules_file::{Effect, Mode, RuleSpec, RulesFile};
use super::policy::{Input, Policy, PolicyError, RuleResult};

/// The longest grant accepted unless configured otherwise.
pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantsFile {
    grants: Vec<GrantSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantSpec {
    name: Spanned<String>,
    identities: Vec<String>,
    #[serde(default)]
    when: Option<Spanned<String>>,
    #[serde(default)]
    not_before: Option<String>,
    expires: String,
    reason: String,
}

/// The compiled conditions of the grants from `start` on: one allow rule
/// per grant, in order. Grants merged from two sources keep one per source.
#[derive(Debug)]
struct Conditions {
    start: usize,
    policy: Arc<Policy>,
}

/// A loaded grants file, or the grants of a file and of the fleet's store
/// merged ([`Grants::merged`]).
#[derive(Debug)]
pub struct Grants {
    grants: Vec<Arc<Grant>>,
    conditions: Vec<Conditions>,
    version: Arc<str>,
    generation: u64,
    path: PathBuf,
    warnings: Vec<Diagnostic>,
}

impl Default for Grants {
    fn default() -> Self {
        Grants {
            grants: Vec::new(),
            conditions: Vec::new(),
            version: Arc::from("none"),
            generation: 0,
            path: PathBuf::new(),
            warnings: Vec::new(),
        }
    }
}

impl Grants {
    /// Parses the grants in `text` (the file at `path`). A grant longer than
    /// `max_duration` (from `not_before`, or from `now` without it) is an
    /// error, as is any problem in a condition: the file is refused whole.
    pub fn parse(
        text: &str,
        path: &Path,
        max_duration: Duration,
        now: SystemTime,
    ) -> Result<Grants, PolicyError> {
        let file: GrantsFile = super::yaml::from_str(text, path).map_err(|e| PolicyError {
            diagnostics: with_line_text(
                text,
                vec![diagnostic(
                    path,
                    (e.line, e.column),
                    Severity::Error,
                    None,
                    e.message,
                )],
            ),
        })?;
        let (grants, mut diagnostics) = grants_of(&file.grants, path, max_duration, now);
        let conditions = compile_conditions(text, path, &file.grants, &mut diagnostics);
        let mut diagnostics = with_line_text(text, diagnostics);
        // Problems are the grant's, not a rule's.
        for d in &mut diagnostics {
            if let Some(grant) = d.rule.take() {
                d.message = format!("grant '{grant}': {}", d.message);
            }
        }
        if diagnostics.iter().any(|d| d.severity == Severity::Error) {
            diagnostics.sort_by_key(|d| d.line);
            return Err(PolicyError { diagnostics });
        }
        Ok(Grants {
            grants,
            conditions: conditions
                .map(|policy| Conditions {
                    start: 0,
                    policy: Arc::new(policy),
                })
                .into_iter()
                .collect(),
            version: super::policy::version_of(text),
            generation: crate::generation::next(),
            path: path.to_owned(),
            warnings: diagnostics,
        })
    }

    /// The grants, in file order.
    pub fn grants(&self) -> &[Arc<Grant>] {
        &self.grants
    }

    /// These grants marked as coming from `origin`.
    pub fn with_origin(mut self, origin: Origin) -> Grants {
        for grant in &mut self.grants {
            Arc::make_mut(grant).origin = origin;
        }
        self
    }

    /// The grants of `first`, then those of `second` (a grant in either
    /// grants; `first`'s is found first), with a new generation and the
    /// version `first+second`. The path is `first`'s.
    pub fn merged(first: &Grants, second: &Grants) -> Grants {
        let offset = first.grants.len();
        let conditions = first
            .conditions
            .iter()
            .map(|c| Conditions {
                start: c.start,
                policy: Arc::clone(&c.policy),
            })
            .chain(second.conditions.iter().map(|c| Conditions {
                start: c.start + offset,
                policy: Arc::clone(&c.policy),
            }))
            .collect();
        let mut warnings = first.warnings.clone();
        warnings.extend(second.warnings.iter().cloned());
        Grants {
            grants: first.grants.iter().chain(&second.grants).cloned().collect(),
            conditions,
            version: Arc::from(format!("{}+{}", first.version, second.version)),
            generation: crate::generation::next(),
            path: first.path.clone(),
            warnings,
        }
    }

    /// The first 16 hex digits of the SHA-256 of the file; `none` without
    /// a grants file.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// A number unique to this load, for caches to key on.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The grants file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Warnings found while loading.
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    /// What the grants' conditions read.
    pub fn footprint(&self) -> super::policy::footprint::Footprint {
        super::policy::footprint::Footprint::union(
            self.conditions.iter().map(|c| c.policy.footprint()),
        )
    }

    /// How many grants are open at `now`.
    pub fn active(&self, now: SystemTime) -> usize {
        self.grants.iter().filter(|g| g.open_at(now)).count()
    }

    /// The first grant in file order that covers `identity`, is open at
    /// `input.now` and whose condition holds for `input`. A condition that
    /// fails to evaluate does not hold.
    pub fn find(&self, identity: &Identity, input: Input<'_>) -> Option<Arc<Grant>> {
        let candidates: Vec<usize> = self
            .grants
            .iter()
            .enumerate()
            .filter(|(_, g)| g.open_at(input.now) && g.covers(identity))
            .map(|(i, _)| i)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        // Each source's conditions in turn, in grant order.
        for (n, c) in self.conditions.iter().enumerate() {
            let end = self
                .conditions
                .get(n + 1)
                .map_or(self.grants.len(), |next| next.start);
            let local: Vec<usize> = candidates
                .iter()
                .filter(|i| (c.start..end).contains(*i))
                .map(|i| i - c.start)
                .collect();
            if local.is_empty() {
                continue;
            }
            let results = c.policy.evaluate_each(input, &local);
            if let Some((i, _)) = local
                .iter()
                .zip(results)
                .find(|(_, r)| *r == RuleResult::Match)
            {
                return self.grants.get(c.start + i).cloned();
            }
        }
        None
    }

    /// The next time after `now` at which a grant covering `identity` opens
    /// or closes: past it, a decision made now may no longer hold.
    pub fn next_change(&self, identity: &Identity, now: SystemTime) -> Option<SystemTime> {
        self.grants
            .iter()
            .filter(|g| g.covers(identity))
            .flat_map(|g| [g.not_before, Some(g.expires)])
            .flatten()
            .filter(|t| *t > now)
            .min()
    }
}

/// The grants of `specs`, checked, with every problem found.
fn grants_of(
    specs: &[GrantSpec],
    path: &Path,
    max_duration: Duration,
    now: SystemTime,
) -> (Vec<Arc<Grant>>, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let mut grants = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for spec in specs {
        let at = (spec.name.referenced.line(), spec.name.referenced.column());
        let name = spec.name.value.as_str();
        let mut problem = |message: String| {
            diagnostics.push(diagnostic(path, at, Severity::Error, Some(name), message));
        };
        if !seen.insert(name) {
            problem(format!(
                "a second grant is named {name:?}; names must be unique"
            ));
        }
        match grant(spec, max_duration, now) {
            Ok(grant) => {
                if grant.expires <= now {
                    diagnostics.push(diagnostic(
                        path,
                        at,
                        Severity::Warning,
                        Some(name),
                        "the grant has already expired: it allows nothing".into(),
                    ));
                }
                grants.push(Arc::new(grant));
            }
            Err(problems) => problems.into_iter().for_each(&mut problem),
        }
    }
    (grants, diagnostics)
}

/// One grant, or every problem with it.
fn grant(spec: &GrantSpec, max: Duration, now: SystemTime) -> Result<Grant, Vec<String>> {
    let mut problems = Vec::new();
    if spec.identities.is_empty() {
        problems.push("`identities` is empty: the grant would be for no one".into());
    }
    for id in &spec.identities {
        // A trailing `/` names every ID under the path (a prefix).
        if let Err(e) = SpiffeId::parse(id.strip_suffix('/').unwrap_or(id)) {
            problems.push(format!(
                "identity {id:?} is not a SPIFFE ID, nor one ending in `/` (a prefix): {e}"
            ));
        }
    }
    if spec.reason.trim().is_empty() {
        problems.push("`reason` is empty: say why the grant was given".into());
    }
    let mut time = |key: &str, text: &str| {
        super::time::parse_rfc3339(text)
            .map_err(|e| problems.push(format!("{key}: {e}")))
            .ok()
    };
    let expires = time("expires", &spec.expires);
    let not_before = spec.not_before.as_deref().map(|t| time("not_before", t));
    let (Some(expires), Some(opens)) = (expires, not_before.unwrap_or(Some(now))) else {
        return Err(problems);
    };
    let explicit = spec.not_before.is_some();
    match expires.duration_since(opens) {
        // Without `not_before` a grant opens when loaded: one whose end has
        // passed is only warned about (it allows nothing).
        Err(_) | Ok(Duration::ZERO) if explicit => {
            problems.push("`expires` is not after `not_before`: the grant never opens".into());
        }
        Ok(length) if length > max => problems.push(format!(
            "the grant lasts {}, longer than the maximum of {} (grants_max_duration); split it or shorten it",
            human(length),
            human(max)
        )),
        _ => {}
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Grant {
        name: Arc::from(spec.name.value.as_str()),
        identities: spec.identities.clone(),
        not_before: explicit.then_some(opens),
        expires,
        reason: Arc::from(spec.reason.as_str()),
        when: spec
            .when
            .as_ref()
            .map_or_else(|| "true".to_owned(), |w| w.value.clone()),
        origin: Origin::File,
    })
}

/// The grants' conditions as allow rules named like the grants, so that
/// problems are reported exactly as for rules.
fn compile_conditions(
    text: &str,
    path: &Path,
    specs: &[GrantSpec],
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Policy> {
    if specs.is_empty() {
        return None;
    }
    let rules = specs
        .iter()
        .map(|spec| RuleSpec {
            name: spec.name.clone(),
            description: None,
            effect: Effect::Allow,
            when: spec.when.clone().unwrap_or_else(|| {
                Spanned::new("true".into(), spec.name.referenced, spec.name.defined)
            }),
            mode: Mode::Enforce,
        })
        .collect();
    match Policy::compile(text, path, &RulesFile { rules }) {
        Ok(policy) => Some(policy),
        Err(e) => {
            diagnostics.extend(e.diagnostics);
            None
        }
    }
}

/// `diagnostics` with the text of their line, for the caret, where they
/// have a line and lack it.
fn with_line_text(text: &str, mut diagnostics: Vec<Diagnostic>) -> Vec<Diagnostic> {
    for d in &mut diagnostics {
        if d.line_text.is_none() {
            d.line_text = d
                .line
                .checked_sub(1)
                .and_then(|i| text.lines().nth(i))
                .map(str::to_owned);
        }
    }
    diagnostics
}

fn diagnostic(
    path: &Path,
    (line, column): (u64, u64),
    severity: Severity,
    grant: Option<&str>,
    message: String,
) -> Diagnostic {
    Diagnostic {
        severity,
        file: path.to_owned(),
        line: usize::try_from(line).unwrap_or(0),
        column: usize::try_from(column).unwrap_or(0),
        rule: grant.map(str::to_owned),
        message,
        line_text: None,
    }
}

/// A duration as people write it: `36h`, `1h30m`, `45s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    let parts = [(s / 3600, "h"), (s % 3600 / 60, "m"), (s % 60, "s")];
    let text: String = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if text.is_empty() { "0s".into() } else { text }
}

#[cfg(test)]
mod tests;
