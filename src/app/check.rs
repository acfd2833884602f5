//! `celador check`: any file celador reads, checked as what it is, every
//! problem a [`Diagnostic`] placed at its line and column (with a caret
//! under it).
//!
//! Data flow: a path -> its text -> [`FileKind::of`] (the one place that
//! tells a file's kind) -> one dispatch: rules, grants and revocations are
//! loaded by the engine's loader exactly as `celador serve` loads them
//! ([`crate::engine::file_kind::load`]); a test suite's shape is read as
//! `celador test` reads it; a config is parsed as `celador serve` parses
//! it, with its deprecated keys as warnings. Off the request path.

use std::path::Path;

use crate::authoring::suite::SuiteFile;
use crate::engine::file_kind::{self, FileKind, GrantLimits};
use crate::engine::grants::DEFAULT_MAX_DURATION;
use crate::engine::policy::{Diagnostic, PolicyError, Severity};
use crate::engine::yaml::YamlError;

use super::config::{Config, ConfigError};

/// Every error and warning of the file at `path`, checked as what it is.
pub fn check_file(path: &Path) -> Vec<Diagnostic> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => return PolicyError::unreadable(path, &e).diagnostics,
    };
    match FileKind::of(path, &text) {
        FileKind::Suite => suite(&text, path),
        FileKind::Config => config(&text, path),
        kind => {
            let limits = GrantLimits {
                max_duration: DEFAULT_MAX_DURATION,
                now: std::time::SystemTime::now(),
            };
            match file_kind::load(kind, &text, path, limits) {
                Some(Ok(loaded)) => loaded.warnings().to_vec(),
                Some(Err(e)) => e.diagnostics,
                None => Vec::new(),
            }
        }
    }
}

/// A diagnostic at 1-based `(line, column)` of `text` (0: unknown).
fn at(
    text: &str,
    path: &Path,
    severity: Severity,
    place: (usize, usize),
    message: String,
) -> Diagnostic {
    Diagnostic::at(text, path, severity, place, message)
}

fn yaml_error(text: &str, path: &Path, e: YamlError, hint: &str) -> Diagnostic {
    let place = (
        usize::try_from(e.line).unwrap_or(0),
        usize::try_from(e.column).unwrap_or(0),
    );
    at(
        text,
        path,
        Severity::Error,
        place,
        format!("{}{hint}", e.message),
    )
}

/// A test suite: its shape as `celador test` reads it, and an error that
/// says to run it with `celador test` (`check` does not run cases).
fn suite(text: &str, path: &Path) -> Vec<Diagnostic> {
    const RUN_IT: &str =
        "this looks like a test suite (it has `cases:`): run it with `celador test`";
    let suite: SuiteFile = match crate::engine::yaml::from_str(text, path) {
        Ok(suite) => suite,
        Err(e) => {
            // Every error, as `celador test` says them; the first says
            // how to run the suite.
            let mut all = crate::authoring::suite::errors::diagnostics(text, path, &e);
            if let Some(first) = all.first_mut() {
                first.message.push_str(&format!("; {RUN_IT}"));
            }
            return all;
        }
    };
    let mut diagnostics = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for name in suite.cases.iter().filter_map(|c| c.name.as_deref()) {
        if !seen.insert(name) {
            let place = nth_line_with(text, &format!("name: {name}"), 2).unwrap_or((0, 0));
            diagnostics.push(at(
                text,
                path,
                Severity::Error,
                place,
                format!("the case name '{name}' is used twice; each case needs a name of its own"),
            ));
        }
    }
    let place = key_position(text, "cases").unwrap_or((0, 0));
    diagnostics.push(at(text, path, Severity::Error, place, RUN_IT.to_owned()));
    diagnostics
}

/// The `n`th line (1-based) whose text, after indentation and a list
/// dash, starts with `needle` (quotes around the value ignored).
fn nth_line_with(text: &str, needle: &str, n: usize) -> Option<(usize, usize)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let rest = line.trim_start().trim_start_matches("- ");
            let unquoted: String = rest.chars().filter(|c| !matches!(c, '"' | '\'')).collect();
            unquoted
                .trim_end()
                .starts_with(needle)
                .then(|| (i + 1, line.len() - rest.len() + 1))
        })
        .nth(n.checked_sub(1)?)
}

/// A `celador serve` config: every problem, placed at the key it names,
/// and a warning for each deprecated key.
fn config(text: &str, path: &Path) -> Vec<Diagnostic> {
    let (parsed, deprecations) = Config::parse_reporting(text, path);
    let mut diagnostics: Vec<Diagnostic> = match parsed {
        Ok(_) => Vec::new(),
        Err(ConfigError::Yaml(e)) => vec![yaml_error(text, path, e, "")],
        Err(ConfigError::Invalid { problems, .. }) => problems
            .into_iter()
            .map(|problem| {
                let key = problem.split(": ").next().unwrap_or_default();
                let place = key_position(text, key).unwrap_or((0, 0));
                at(text, path, Severity::Error, place, problem)
            })
            .collect(),
        Err(e @ ConfigError::Read { .. }) => {
            vec![at(text, path, Severity::Error, (0, 0), e.to_string())]
        }
    };
    for deprecation in deprecations {
        let place = key_position(text, deprecation.old).unwrap_or((0, 0));
        diagnostics.push(at(
            text,
            path,
            Severity::Warning,
            place,
            deprecation.to_string(),
        ));
    }
    diagnostics.sort_by_key(|d| d.line);
    diagnostics
}

/// Where the key at dotted `key` (`governance.store`; a segment may itself
/// hold dots, as a trust domain's name does) is written in the YAML
/// `text`: its 1-based line and column, or the deepest part of it found.
fn key_position(text: &str, key: &str) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let segments: Vec<&str> = key.split('.').collect();
    let (mut from, mut parent, mut found, mut i) = (0, None, None, 0);
    while i < segments.len() {
        // The longest run of segments that is one key, first.
        let hit = (i + 1..=segments.len()).rev().find_map(|j| {
            let name = segments.get(i..j)?.join(".");
            let (line, indent) = find_key(&lines, from, parent, &name)?;
            Some((j, line, indent))
        });
        let Some((j, line, indent)) = hit else { break };
        found = Some((line + 1, indent + 1));
        (from, parent, i) = (line + 1, Some(indent), j);
    }
    found
}

/// The line (0-based) and indentation of key `name` among the lines from
/// `from` that belong to the mapping whose key is indented by `parent`
/// (`None`: the top level).
fn find_key(
    lines: &[&str],
    from: usize,
    parent: Option<usize>,
    name: &str,
) -> Option<(usize, usize)> {
    for (n, line) in lines.iter().enumerate().skip(from) {
        let rest = line.trim_start();
        if rest.is_empty() || rest.starts_with('#') {
            continue;
        }
        let indent = line.len() - rest.len();
        if parent.is_some_and(|p| indent <= p) {
            return None;
        }
        let is_child = parent.is_some() || indent == 0;
        let key = rest.trim_start_matches("- ");
        let unquoted = key.trim_start_matches(['"', '\'']);
        let matches = unquoted
            .strip_prefix(name)
            .is_some_and(|after| after.trim_start_matches(['"', '\'']).starts_with(':'));
        if is_child && matches {
            return Some((n, indent + (rest.len() - key.len())));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_at_their_place_in_nested_mappings() {
        let text = "listen: x\ntrust_domains:\n  example.org:\n    bundle: b.pem\ngovernance:\n  # the store\n  store: http://x\naudit:\n  store: y\n";
        assert_eq!(key_position(text, "listen"), Some((1, 1)));
        assert_eq!(
            key_position(text, "trust_domains.example.org"),
            Some((3, 3))
        );
        assert_eq!(key_position(text, "governance.store"), Some((7, 3)));
        assert_eq!(key_position(text, "audit.store"), Some((9, 3)));
        // Not there: the deepest part found.
        assert_eq!(key_position(text, "governance.ca_file"), Some((5, 1)));
        assert_eq!(key_position(text, "nowhere"), None);
    }
}
