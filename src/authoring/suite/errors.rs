//! Every problem of a suite that does not parse, each said once, with its
//! line and a caret, as `celador check` says a rules file's.
//!
//! Data flow: when a suite does not deserialize, [`all`] parses the part of
//! the file outside the `cases:` list, and then each case of the list on
//! its own (its lines kept at their place in the file, so that line
//! numbers stay true), so that one mistake does not hide the others. The
//! YAML library stops at a document's first mistake, so within each part
//! [`every`] drops the entry that holds the mistake (its line and the
//! lines nested under it, as blank lines) and parses again, as long as
//! what is left still reads as YAML. A flow-style list (`cases: [{...},
//! {...}]`) is split by [`flow`] instead, by the YAML parser's byte ranges.
//! Each error becomes an engine [`Diagnostic`], rendered as `check`
//! renders one.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::engine::policy::{Diagnostic, Severity};
use crate::engine::yaml::{self, YamlError};

use super::SuiteFile;
use super::case::Case;

/// Every error of the suite in `text` (which does not parse; `first` is
/// the library's first error), in file order, each rendered once with its
/// position and a caret.
pub fn all(text: &str, path: &Path, first: &YamlError) -> String {
    diagnostics(text, path, first)
        .iter()
        .map(|d| format!("{d}\n"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every error of the suite in `text`, in file order.
pub fn diagnostics(text: &str, path: &Path, first: &YamlError) -> Vec<Diagnostic> {
    let lines: Vec<&str> = text.lines().collect();
    let cases = case_ranges(&lines);
    let mut errors: Vec<YamlError> = Vec::new();
    if let Some(list) = list_line(&lines).filter(|_| !cases.is_empty()) {
        // Outside the cases: the list emptied, its lines blank.
        let outside: Vec<&str> = (lines.iter().enumerate())
            .map(|(i, line)| {
                if i == list {
                    "cases: []"
                } else if cases.iter().any(|(start, end)| (*start..*end).contains(&i)) {
                    ""
                } else {
                    line
                }
            })
            .collect();
        errors.extend(every::<SuiteFile>(&outside, path));
        for (start, end) in &cases {
            // The case's lines at their place: blank lines before them.
            let chunk: Vec<&str> = std::iter::repeat_n("", *start)
                .chain(lines.get(*start..*end).unwrap_or_default().iter().copied())
                .collect();
            // A case written as a flow mapping (`- {...}`) is one line:
            // its entries are told apart by their bytes.
            errors.extend(
                flow::item(&chunk, path).unwrap_or_else(|| every::<Vec<Case>>(&chunk, path)),
            );
        }
    } else if let Some(found) = flow::errors(text, path) {
        errors.extend(found);
    }
    if errors.is_empty() {
        errors.push(first.clone());
    }
    errors.sort_by_key(|e| (e.line, e.column));
    errors.dedup_by(|a, b| a.line == b.line && a.message == b.message);
    errors.iter().map(|e| diagnostic(text, path, e)).collect()
}

/// Every error of `lines` read as a `T`: after each, the entry holding it
/// is dropped and the rest parsed again, while the rest still reads as
/// YAML (a drop that breaks the YAML would report errors of its own).
fn every<T: DeserializeOwned>(lines: &[&str], path: &Path) -> Vec<YamlError> {
    let mut lines: Vec<&str> = lines.to_vec();
    let mut errors: Vec<YamlError> = Vec::new();
    // Broken YAML: no entry can be dropped safely; its first mistake, and
    // the YAML mistake.
    if let Err(broken) = yaml::from_str::<serde_json::Value>(&lines.join("\n"), path) {
        if let Err(first) = yaml::from_str::<T>(&lines.join("\n"), path)
            && (first.line, first.column) < (broken.line, broken.column)
        {
            errors.push(first);
        }
        errors.push(broken);
        return errors;
    }
    // Each round drops at least one line: at most one round per line.
    for _ in 0..=lines.len() {
        let text = lines.join("\n");
        let Err(e) = yaml::from_str::<T>(&text, path) else {
            break;
        };
        // The library reports in file order: an error not past the last
        // one is the drop's doing.
        if errors
            .last()
            .is_some_and(|last| (e.line, e.column) <= (last.line, last.column))
        {
            break;
        }
        let missing = missing_field(&e.message).map(str::to_owned);
        let at = (
            usize::try_from(e.line).unwrap_or(0),
            usize::try_from(e.column).unwrap_or(0),
        );
        // A field missing because its misspelling was dropped is said by
        // the misspelling's error, which offered the field.
        if !(missing.as_deref())
            .is_some_and(|field| errors.iter().any(|d| offers(&d.message, field)))
        {
            errors.push(e);
        }
        let mut dropped = lines.clone();
        if !drop_entry(&mut dropped, at, missing.is_some())
            || dropped.iter().all(|l| l.trim().is_empty())
            || yaml::from_str::<serde_json::Value>(&dropped.join("\n"), path).is_err()
        {
            break;
        }
        lines = dropped;
    }
    errors
}

/// The field a "missing field" message names.
fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(field, _)| field)
}

/// Whether an unknown field's message offers `field` in its "expected one
/// of" list.
fn offers(message: &str, field: &str) -> bool {
    message.starts_with("unknown field ")
        && message
            .split_once("expected one of ")
            .is_some_and(|(_, list)| list.split(", ").any(|f| f.trim() == field))
}

/// Blanks the entry at 1-based `(line, column)` (a list item's dash stays,
/// so that the item's other keys stay an item) and the lines nested under
/// it. A mapping that misses a field is placed at its first key: the entry
/// that holds the whole mapping goes. False when there is no entry to drop.
fn drop_entry(lines: &mut [&str], (line, column): (usize, usize), missing: bool) -> bool {
    let Some(mut index) = line.checked_sub(1) else {
        return false;
    };
    let Some(mut key) = lines.get(index).and_then(|l| key_column(l)) else {
        return false;
    };
    if missing && column.saturating_sub(1) <= key {
        // The entry above whose key is left of this mapping's keys.
        let Some(parent) = (0..index).rev().find(|i| {
            lines
                .get(*i)
                .and_then(|l| key_column(l))
                .is_some_and(|k| k < key && !lines.get(*i).is_some_and(|l| is_bare_dash(l)))
        }) else {
            return false;
        };
        index = parent;
        key = lines.get(index).and_then(|l| key_column(l)).unwrap_or(0);
    }
    if let Some(slot) = lines.get_mut(index) {
        // A list item's dash stays: its other keys are still the item's.
        let dash = slot.len() - slot.trim_start().len();
        *slot = if slot.trim_start().starts_with('-') {
            slot.get(..=dash).unwrap_or_default()
        } else {
            ""
        };
    }
    for slot in lines.iter_mut().skip(index + 1) {
        if slot.trim().is_empty() || indent(slot) > key {
            *slot = "";
        } else {
            break;
        }
    }
    // A key left with nothing under it would read as null, a mistake of
    // the drop's making: it goes too.
    if let Some(parent) = (0..index).rev().find(|i| {
        lines
            .get(*i)
            .and_then(|l| key_column(l))
            .is_some_and(|k| k < key)
    }) && let Some(parent_key) = lines.get(parent).and_then(|l| key_column(l))
        && lines
            .get(parent)
            .is_some_and(|l| l.trim_end().ends_with(':'))
        && lines
            .iter()
            .skip(parent + 1)
            .find_map(|l| key_column(l))
            .is_none_or(|k| k <= parent_key)
    {
        return drop_entry(lines, (parent + 1, parent_key + 1), false);
    }
    true
}

/// The 0-based column where the key of the entry on `line` starts (after
/// a list item's dash); none for a blank, comment or bare dash line.
fn key_column(line: &str) -> Option<usize> {
    let rest = line.trim_start();
    if rest.is_empty() || rest.starts_with('#') || is_bare_dash(line) {
        return None;
    }
    match rest.strip_prefix("- ") {
        Some(after) => Some(indent(line) + 2 + indent(after)),
        None => Some(indent(line)),
    }
}

/// A list item's dash alone on its line.
fn is_bare_dash(line: &str) -> bool {
    line.trim() == "-"
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The 0-based line of the block-style `cases:` key.
fn list_line(lines: &[&str]) -> Option<usize> {
    lines
        .iter()
        .position(|l| l.split(" #").next().unwrap_or_default().trim_end() == "cases:")
}

/// Each case's lines (0-based, end exclusive) in a block-style `cases:`
/// list; none for a flow-style one.
fn case_ranges(lines: &[&str]) -> Vec<(usize, usize)> {
    let Some(list) = list_line(lines) else {
        return Vec::new();
    };
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

/// One error as `check` places one: the message (its position said once,
/// by the diagnostic), the line and a caret under the column.
fn diagnostic(text: &str, path: &Path, e: &YamlError) -> Diagnostic {
    let message = e
        .message
        .split(" at line ")
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let place = (
        usize::try_from(e.line).unwrap_or(0),
        usize::try_from(e.column).unwrap_or(0),
    );
    Diagnostic::at(text, path, Severity::Error, place, message)
}

mod flow;

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<(usize, usize, String)> {
        let path = Path::new("s_test.yaml");
        let first = yaml::from_str::<SuiteFile>(text, path).unwrap_err();
        diagnostics(text, path, &first)
            .into_iter()
            .map(|d| (d.line, d.column, d.message))
            .collect()
    }

    #[test]
    fn broken_yaml_in_one_case_does_not_hide_another_cases_errors() {
        let found = errors(
            "rules: r.yaml\ncases:\n  - identity: [x\n    expect: {decision: allow}\n  - nam: two\n    requst: {}\n",
        );
        let lines: Vec<usize> = found.iter().map(|(line, _, _)| *line).collect();
        assert_eq!(lines, [3, 4, 5, 6], "{found:?}");
        assert!(found[2].2.starts_with("unknown field `nam`"), "{found:?}");
    }

    /// A flow-style suite puts every case on one line: the line a
    /// diagnostic quotes for one case's error holds another case's
    /// credential, which is not shown.
    #[test]
    fn a_quoted_line_shows_no_other_cases_credential() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlc2lnbmF0dXJl";
        let text = format!(
            "rules: r.yaml\ncases: [{{name: a, request: {{headers: {{authorization: \"Bearer {jwt}\", x-db: \"redis://:pw;k=1@h/0\"}}}}, expect: {{decision: allow}}}}, {{name: b, requst: {{}}}}]\n"
        );
        let path = Path::new("s_test.yaml");
        let first = yaml::from_str::<SuiteFile>(&text, path).unwrap_err();
        let found = diagnostics(&text, path, &first);
        assert!(!found.is_empty());
        for d in &found {
            let shown = d.to_string();
            assert!(shown.contains("requst"), "{shown}");
            // The line is cropped around the column, after the redaction.
            assert!(shown.contains("\"Bearer <redacted>\""), "{shown}");
            assert!(shown.contains("redis://<redacted>@h/0"), "{shown}");
            assert!(!shown.contains("eyJ") && !shown.contains("pw;"), "{shown}");
        }
    }

    #[test]
    fn a_flow_style_suite_reports_every_error_of_every_case_once() {
        // Two cases on one line, one over two lines, a last entry, a
        // nested one, and one outside the list.
        let found = errors(
            "rules: r.yaml\nfoo: 1\ncases: [{name: one, requst: {}, expect: {decision: allw}}, {name: fine}, {nam: two,\n  request: {methd: GET, path: /x}, expect: {decision: deny, rle: x}}]\n",
        );
        let messages: Vec<(usize, usize, &str)> = found
            .iter()
            .map(|(line, column, m)| (*line, *column, m.split(',').next().unwrap()))
            .collect();
        assert_eq!(
            messages,
            [
                (2, 1, "unknown field `foo`"),
                (3, 21, "unknown field `requst`"),
                (3, 52, "unknown variant `allw`"),
                (3, 75, "unknown field `nam`"),
                (4, 13, "unknown field `methd`"),
                (4, 61, "unknown field `rle`"),
            ],
            "{found:?}"
        );
    }

    #[test]
    fn a_flow_list_over_several_lines_keeps_the_lines_of_what_follows_it() {
        let found = errors(
            "rules: r.yaml\ncases: [\n  {name: one, requst: {}},\n  {name: \"é\", methd: 1},\n]\nfoo: 1\n",
        );
        let places: Vec<(usize, usize)> = found.iter().map(|(l, c, _)| (*l, *c)).collect();
        assert_eq!(places, [(3, 15), (4, 15), (6, 1)], "{found:?}");
    }

    #[test]
    fn a_block_list_of_flow_mappings_reports_every_error_of_each() {
        let found = errors(
            "rules: r.yaml\ncases:\n  - {name: one, requst: {}, expect: {decision: allw}}\n  - name: two\n    methd: 1\n  - {nam: three}\n",
        );
        let places: Vec<(usize, usize)> = found.iter().map(|(l, c, _)| (*l, *c)).collect();
        assert_eq!(places, [(3, 17), (3, 48), (5, 5), (6, 6)], "{found:?}");
    }

    #[test]
    fn a_flow_style_suite_with_broken_yaml_says_its_first_error_and_that_later_cases_were_not_checked()
     {
        let found = errors("rules: r.yaml\ncases: [{name: one, requst: {}}, {name: [x}]\n");
        let messages: Vec<(usize, &str)> = found
            .iter()
            .map(|(line, _, m)| (*line, m.split(',').next().unwrap()))
            .collect();
        assert_eq!(messages[0], (2, "unknown field `requst`"), "{found:?}");
        assert_eq!(messages.len(), 2, "{found:?}");
        assert!(
            found[1]
                .2
                .ends_with("nothing after it, later cases included, was checked)"),
            "{found:?}"
        );
    }

    #[test]
    fn a_misspelt_required_key_is_one_error_and_keys_outside_the_cases_are_checked() {
        let found = errors(
            "rulez: r.yaml\nfoo: 1\ncases:\n  - name: one\n    expect:\n      decison: allow\n      rle: x\n",
        );
        let messages: Vec<&str> = found
            .iter()
            .map(|(_, _, m)| m.split(',').next().unwrap())
            .collect();
        assert_eq!(
            messages,
            [
                "unknown field `rulez`",
                "unknown field `foo`",
                "unknown field `decison`",
                "unknown field `rle`"
            ],
            "{found:?}"
        );
    }
}
