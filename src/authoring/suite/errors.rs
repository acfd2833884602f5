//! Every problem of a suite that does not parse, each said once, with its
//! line and a caret, as `celador check` says a rules file's.
//!
//! Data flow: when a suite does not deserialize, [`all`] takes the YAML
//! library's first error and then parses each case of the `cases:` list on
//! its own (its lines kept at their place in the file, so that line
//! numbers stay true), so that one mistake does not hide the others. A
//! case with several mistakes reports its first: the YAML library stops
//! there.

use std::path::Path;

use crate::engine::yaml::{self, YamlError};

use super::case::Case;

/// Every case's first error, and the error outside the cases if any, each
/// rendered once with its position and a caret.
pub fn all(text: &str, path: &Path, first: &YamlError) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut errors: Vec<YamlError> = Vec::new();
    let cases = case_ranges(&lines);
    let in_a_case = |line: u64| {
        cases
            .iter()
            .any(|(start, end)| (*start as u64) < line && line <= *end as u64)
    };
    if cases.is_empty() || !in_a_case(first.line) {
        errors.push(first.clone());
    }
    for (start, end) in &cases {
        // The case's lines at their place: blank lines before them.
        let mut chunk = "\n".repeat(*start);
        for line in lines.get(*start..*end).unwrap_or_default() {
            chunk.push_str(line);
            chunk.push('\n');
        }
        if let Err(e) = yaml::from_str::<Vec<Case>>(&chunk, path) {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        errors.push(first.clone());
    }
    errors
        .iter()
        .map(|e| render(e, &lines, path))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Each case's lines (0-based, end exclusive) in a block-style `cases:`
/// list; none for a flow-style one.
fn case_ranges(lines: &[&str]) -> Vec<(usize, usize)> {
    let Some(list) = lines.iter().position(|l| l.trim_end() == "cases:") else {
        return Vec::new();
    };
    let indent = |l: &str| l.len() - l.trim_start().len();
    let significant = |l: &str| !l.trim().is_empty() && !l.trim_start().starts_with('#');
    // The list ends at the next top-level key.
    let end = lines
        .iter()
        .enumerate()
        .skip(list + 1)
        .find(|(_, l)| significant(l) && indent(l) == 0 && !l.starts_with('-'))
        .map_or(lines.len(), |(i, _)| i);
    let body = lines.get(list + 1..end).unwrap_or_default();
    let Some(dash) = body
        .iter()
        .find(|l| significant(l))
        .filter(|l| l.trim_start().starts_with('-'))
        .map(|l| indent(l))
    else {
        return Vec::new();
    };
    let starts: Vec<usize> = body
        .iter()
        .enumerate()
        .filter(|(_, l)| indent(l) == dash && l.trim_start().starts_with('-'))
        .map(|(i, _)| list + 1 + i)
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(i, start)| (*start, starts.get(i + 1).copied().unwrap_or(end)))
        .collect()
}

/// One error as `check` renders one: the message, the position, the line
/// and a caret under the column.
fn render(e: &YamlError, lines: &[&str], path: &Path) -> String {
    // The position is said below, once.
    let message = e
        .message
        .split(" at line ")
        .next()
        .unwrap_or_default()
        .trim();
    if e.line == 0 {
        return format!("error: {message}\n --> {}\n", path.display());
    }
    let number = e.line.to_string();
    let pad = " ".repeat(number.len());
    let text = usize::try_from(e.line - 1)
        .ok()
        .and_then(|i| lines.get(i))
        .copied()
        .unwrap_or_default();
    let caret = " ".repeat(usize::try_from(e.column.saturating_sub(1)).unwrap_or(0));
    format!(
        "error: {message}\n --> {}:{}:{}\n{pad} |\n{number} | {text}\n{pad} | {caret}^\n",
        path.display(),
        e.line,
        e.column
    )
}
