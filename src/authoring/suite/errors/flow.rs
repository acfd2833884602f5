//! Every error of a suite whose `cases:` is a flow sequence (`cases:
//! [{...}, {...}]`), each said once, as [`super`] says a block-style
//! suite's.
//!
//! Data flow: [`super::diagnostics`] -> [`errors`]: the part outside the
//! list (the list emptied) goes to [`super::every`]; each case is parsed on
//! its own, the rest of the file blanked, by [`every`]. [`super`]'s
//! recovery drops whole lines, which would drop every case of a line here,
//! so [`every`] instead blanks the mapping entry that holds a mistake by
//! its byte range in the YAML parser's events (`granit-parser`, the parser
//! under `serde-saphyr`), keeping every other character, and parses
//! again. Blanking keeps lines and columns: each error's caret stays true.

use std::ops::Range;
use std::path::Path;

use granit_parser::{Event, Parser, StructureStyle};
use serde::de::DeserializeOwned;

use crate::engine::yaml::{self, YamlError};

use super::super::SuiteFile;
use super::super::case::Case;

/// How deeply nested a suite's YAML may be for this recovery (deeper: the
/// library's first error only), so that no input can exhaust the stack.
const MAX_DEPTH: usize = 64;

/// A node of a YAML document: its byte range, a mapping's entries (key,
/// value) and a sequence's items.
#[derive(Debug, Default)]
struct Node {
    span: Range<usize>,
    flow: bool,
    entries: Vec<(Node, Node)>,
    items: Vec<Node>,
}

/// Every error of the suite in `text`, in any order, when its `cases:` is a
/// non-empty flow sequence (when its YAML does not read: see [`broken`]);
/// none otherwise (block style: the caller's own recovery).
pub(super) fn errors(text: &str, path: &Path) -> Option<Vec<YamlError>> {
    let Some(root) = tree(text) else {
        return broken(text, path);
    };
    let (_, list) = root.entries.iter().find(|(key, _)| {
        text.get(key.span.clone())
            .map(|k| k.trim_matches(['"', '\'']))
            == Some("cases")
    })?;
    if !list.flow || list.items.is_empty() || list.span.len() < 2 {
        return None;
    }
    // Outside the cases: the list emptied (its brackets kept), its lines
    // kept.
    let outside = blank(text, list.span.start + 1..list.span.end - 1);
    let lines: Vec<&str> = outside.lines().collect();
    let mut found = super::every::<SuiteFile>(&lines, path);
    for case in &list.items {
        found.extend(every::<Case>(keep_only(text, case.span.clone()), path));
    }
    Some(found)
}

/// Every error of one case of a block-style list written as a flow mapping
/// (`- {name: one, ...}`: `lines`, the rest of the file blank), as a case
/// of a flow list; none for a block-style case.
pub(super) fn item(lines: &[&str], path: &Path) -> Option<Vec<YamlError>> {
    let text = lines.join("\n");
    let root = tree(&text)?;
    match root.items.as_slice() {
        [case] if case.flow && root.entries.is_empty() => {
            Some(every::<Case>(keep_only(&text, case.span.clone()), path))
        }
        _ => None,
    }
}

/// The errors of a flow-style suite whose YAML does not read: the YAML
/// parser cannot go on past a syntax mistake (and no line can be dropped
/// from a flow list safely), so its first error before the mistake, and the
/// mistake, saying that nothing after it was checked. None when the YAML
/// reads or the list is not flow style.
fn broken(text: &str, path: &Path) -> Option<Vec<YamlError>> {
    let flow = text.lines().any(|l| {
        l.strip_prefix("cases:")
            .is_some_and(|rest| rest.trim_start().starts_with('['))
    });
    if !flow || yaml::from_str::<serde_json::Value>(text, path).is_ok() {
        return None;
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut found = super::every::<SuiteFile>(&lines, path);
    if let Some(mistake) = found.last_mut() {
        mistake.message.push_str(
            " (the YAML cannot be read past this mistake: nothing after it, later cases included, was checked)",
        );
    }
    Some(found)
}

/// Every error of `text` (one flow node, the rest blank) read as a `T`:
/// after each, the entry holding it is blanked and the rest parsed again,
/// while the rest still reads as YAML.
fn every<T: DeserializeOwned>(mut text: String, path: &Path) -> Vec<YamlError> {
    let mut errors: Vec<YamlError> = Vec::new();
    // Each round blanks at least one character: at most one per byte.
    for _ in 0..=text.len() {
        let Err(e) = yaml::from_str::<T>(&text, path) else {
            break;
        };
        // An error not past the last one is the blanking's doing.
        if errors
            .last()
            .is_some_and(|last| (e.line, e.column) <= (last.line, last.column))
        {
            break;
        }
        // A field missing because its misspelling was blanked is said by
        // the misspelling's error, which offered the field.
        let missing = super::missing_field(&e.message).map(str::to_owned);
        let place = offset(&text, e.line, e.column);
        if !(missing.as_deref())
            .is_some_and(|field| errors.iter().any(|d| super::offers(&d.message, field)))
        {
            errors.push(e);
        }
        let Some(range) = place
            .zip(tree(&text))
            .and_then(|(at, root)| entry_at(&root, at).map(|(range, _)| range))
        else {
            break;
        };
        let blanked = blank(&text, range);
        if blanked == text || yaml::from_str::<serde_json::Value>(&blanked, path).is_err() {
            break;
        }
        text = blanked;
    }
    errors
}

/// The byte range to blank to drop the innermost mapping entry holding
/// byte `at`, with the mapping it is in. An entry that is its mapping's
/// only one takes the entry holding that mapping with it (an emptied
/// mapping would miss what its misspelt key meant to give, a mistake of
/// the blanking's making).
fn entry_at(node: &Node, at: usize) -> Option<(Range<usize>, &Node)> {
    for (i, (key, value)) in node.entries.iter().enumerate() {
        if !(key.span.start..value.span.end.max(key.span.end)).contains(&at) {
            continue;
        }
        return match entry_at(value, at) {
            Some((_, inner)) if std::ptr::eq(inner, value) && value.entries.len() == 1 => {
                Some((entry_range(node, i), node))
            }
            Some(deeper) => Some(deeper),
            None => Some((entry_range(node, i), node)),
        };
    }
    node.items
        .iter()
        .find(|item| item.span.contains(&at))
        .and_then(|item| entry_at(item, at))
}

/// The bytes of `node`'s entry `i` with one comma beside it: up to the next
/// key, else from the end of the value before it (a flow mapping's last
/// entry leaves its mapping well formed).
fn entry_range(node: &Node, i: usize) -> Range<usize> {
    let Some((key, value)) = node.entries.get(i) else {
        return 0..0;
    };
    match (
        node.entries.get(i + 1),
        i.checked_sub(1).and_then(|p| node.entries.get(p)),
    ) {
        (Some((next, _)), _) => key.span.start..next.span.start,
        (None, Some((_, before))) => before.span.end..value.span.end,
        (None, None) => key.span.start..value.span.end,
    }
}

/// `text` with the characters of `range` (bytes) spaces, line breaks kept,
/// one space per character so that columns stay.
fn blank(text: &str, range: Range<usize>) -> String {
    text.char_indices()
        .map(|(i, c)| {
            if range.contains(&i) && c != '\n' && c != '\r' {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// `text` with every character outside `range` (bytes) a space, line
/// breaks kept.
fn keep_only(text: &str, range: Range<usize>) -> String {
    let before = blank(text, 0..range.start);
    blank(&before, range.end..text.len())
}

/// The byte offset of 1-based `line` and `column` (in characters).
fn offset(text: &str, line: u64, column: u64) -> Option<usize> {
    let (line, column) = (
        usize::try_from(line).ok()?.checked_sub(1)?,
        usize::try_from(column).ok()?.checked_sub(1)?,
    );
    let start: usize = text.split_inclusive('\n').take(line).map(str::len).sum();
    let rest = text.get(start..)?;
    rest.char_indices()
        .nth(column)
        .map(|(i, _)| start + i)
        .or_else(|| (rest.chars().count() == column).then_some(start + rest.len()))
}

/// One event, as far as the tree needs it.
enum Step {
    /// A scalar or alias: its bytes.
    Leaf(Range<usize>),
    /// A sequence or mapping opens at a byte, flow style or not.
    Open(usize, bool, bool),
    /// A sequence or mapping closes at a byte.
    Close(usize),
}

/// The first document of `text` as a tree of byte ranges; none when it
/// does not parse, a byte offset is unknown, or it nests past
/// [`MAX_DEPTH`].
fn tree(text: &str) -> Option<Node> {
    let mut steps = Vec::new();
    for event in Parser::new_from_str(text) {
        let (event, span) = event.ok()?;
        let (start, end) = (span.start.byte_offset()?, span.end.byte_offset()?);
        steps.push(match event {
            Event::Scalar(..) | Event::Alias(_) => Step::Leaf(start..end),
            Event::SequenceStart(style, ..) => {
                Step::Open(start, style == StructureStyle::Flow, false)
            }
            Event::MappingStart(style, ..) => {
                Step::Open(start, style == StructureStyle::Flow, true)
            }
            Event::SequenceEnd | Event::MappingEnd => Step::Close(end),
            Event::DocumentEnd => break,
            _ => continue,
        });
    }
    let mut steps = steps.into_iter();
    let first = steps.next()?;
    node(first, &mut steps, 0)
}

/// The node `first` opens, reading its children from `steps`.
fn node(first: Step, steps: &mut std::vec::IntoIter<Step>, depth: usize) -> Option<Node> {
    let (start, flow, mapping) = match first {
        Step::Leaf(span) => {
            return Some(Node {
                span,
                ..Node::default()
            });
        }
        Step::Open(start, flow, mapping) if depth < MAX_DEPTH => (start, flow, mapping),
        _ => return None,
    };
    let mut children = Vec::new();
    let end = loop {
        match steps.next()? {
            Step::Close(end) => break end,
            step => children.push(node(step, steps, depth + 1)?),
        }
    };
    let mut out = Node {
        span: start..end.max(start),
        flow,
        ..Node::default()
    };
    if mapping {
        let mut pairs = children.into_iter();
        while let (Some(key), Some(value)) = (pairs.next(), pairs.next()) {
            out.entries.push((key, value));
        }
    } else {
        out.items = children;
    }
    Some(out)
}
