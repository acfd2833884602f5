//! The place of a problem in a file, as every diagnostic shows it: the
//! file, line and column, and the line quoted with a caret under the
//! column, the line redacted and cropped.
//!
//! Data flow: [`crate::policy::Diagnostic`] and [`crate::yaml::YamlError`]
//! render through [`write_place`], the one renderer of a quoted line.

use std::borrow::Cow;
use std::fmt;
use std::path::Path;

use crate::redaction::REDACTED;

/// Writes `\n --> FILE:LINE:COLUMN` (`FILE` alone when `line` is 0) and,
/// with the line's text, the line quoted ([`snippet`]) with a caret under
/// the column.
pub(crate) fn write_place(
    out: &mut impl fmt::Write,
    file: &Path,
    (line, column): (usize, usize),
    line_text: Option<&str>,
) -> fmt::Result {
    write!(out, "\n --> {}", file.display())?;
    if line > 0 {
        write!(out, ":{line}:{column}")?;
    }
    if let Some(text) = line_text {
        let number = line.to_string();
        let pad = " ".repeat(number.len());
        let (text, caret) = snippet(text, column);
        write!(out, "\n{pad} |\n{number} | {text}\n{pad} | ")?;
        // A tab before the column is repeated under it, so that the caret
        // lines up whatever width the terminal gives a tab.
        let under: String = text
            .chars()
            .take(caret)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        write!(out, "{under}^")?;
    }
    Ok(())
}

/// How many characters of a quoted line are shown on each side of the
/// caret: a one-line file of a megabyte quotes a window of it, not all.
const SNIPPET_RADIUS: usize = 100;

/// What marks a cropped end of a quoted line.
const CROPPED: &str = "...";

/// A line of a file as a diagnostic may quote it: a URL's user information
/// and every credential-like word replaced (a config's URL may hold a
/// password; a one-line flow-style suite holds every case's headers:
/// `authorization: "Bearer eyJ…"`).
fn redacted(line: &str) -> Cow<'_, str> {
    match crate::redaction::without_userinfo(line) {
        Cow::Borrowed(line) => crate::redaction::text(line),
        Cow::Owned(line) => Cow::Owned(crate::redaction::text(&line).into_owned()),
    }
}

/// `line` as quoted under a diagnostic at 1-based `column` (in
/// characters): redacted *first* ([`redacted`]: a crop could cut a
/// credential to a piece that no longer looks like one), then cropped to
/// [`SNIPPET_RADIUS`] characters each side of the column; with the
/// 0-based character offset of the caret in what is shown.
fn snippet(line: &str, column: usize) -> (String, usize) {
    let shown = redacted(line);
    let caret = caret_in(line, column, &shown);
    let count = shown.chars().count();
    let from = caret.saturating_sub(SNIPPET_RADIUS);
    let to = caret.saturating_add(SNIPPET_RADIUS + 1).min(count);
    let byte = |chars: usize| {
        shown
            .char_indices()
            .nth(chars)
            .map_or(shown.len(), |(i, _)| i)
    };
    let mut out = String::new();
    let mut at = caret - from;
    if from > 0 {
        out.push_str(CROPPED);
        at += CROPPED.len();
    }
    out.push_str(shown.get(byte(from)..byte(to)).unwrap_or_default());
    if to < count {
        out.push_str(CROPPED);
    }
    (out, at)
}

/// Where the character at 1-based `column` of `line` stands in `shown`
/// (the redacted line), as a 0-based character offset: redaction before
/// the column shifts it by the length change; a column inside a redacted
/// span points at the span's marker.
fn caret_in(line: &str, column: usize, shown: &str) -> usize {
    let start = line
        .char_indices()
        .nth(column.saturating_sub(1))
        .map_or(line.len(), |(i, _)| i);
    let end = line
        .get(start..)
        .and_then(|rest| rest.chars().next())
        .map_or(start, |c| start + c.len_utf8());
    let (head, with) = (
        redacted(line.get(..start).unwrap_or_default()),
        redacted(line.get(..end).unwrap_or_default()),
    );
    // The character is shown as written, after a redacted `head`.
    if with.len() == head.len() + (end - start)
        && with.starts_with(&*head)
        && shown.starts_with(&*with)
    {
        return head.chars().count();
    }
    // Inside a redacted span: at the marker that ends at or after the
    // point where the redactions part.
    let common = with
        .char_indices()
        .zip(shown.chars())
        .find(|((_, a), b)| a != b)
        .map_or(with.len().min(shown.len()), |((i, _), _)| i);
    let window = shown
        .get(..common.saturating_add(REDACTED.len()).min(shown.len()))
        .or_else(|| shown.get(..common))
        .unwrap_or_default();
    let at = window
        .rfind(REDACTED)
        .filter(|m| m + REDACTED.len() >= common)
        .unwrap_or(common);
    shown.get(..at).map_or(0, |s| s.chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The caret stands under the column in the line as shown: after a
    /// redaction that shortened the text before it, at the marker when the
    /// column is inside a redacted credential, and inside a crop of a
    /// line too long to quote whole.
    #[test]
    fn the_caret_follows_redaction_and_cropping() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJl";
        let line = format!("- {{description: \"Bearer {jwt}\", bogus: 1}}");
        let shown_at = |column: usize| {
            let (shown, caret) = snippet(&line, column);
            assert!(!shown.contains("eyJ"), "{shown}");
            shown.get(caret..).unwrap_or_default().to_owned()
        };
        let bogus = line.find("bogus").unwrap() + 1;
        assert!(
            shown_at(bogus).starts_with("bogus: 1}"),
            "{}",
            shown_at(bogus)
        );
        let inside = line.find("c2ln").unwrap() + 1;
        assert!(
            shown_at(inside).starts_with("<redacted>\""),
            "{}",
            shown_at(inside)
        );
        let first = line.find("eyJ").unwrap() + 1;
        assert!(
            shown_at(first).starts_with("<redacted>\""),
            "{}",
            shown_at(first)
        );
        assert!(shown_at(line.len() + 1).is_empty());
        assert!(shown_at(1).starts_with("- {"));
        // A URL's password before the column.
        let url = "u: [\"redis://:hunter2hunter2@h/0\", bad]";
        let (shown, caret) = snippet(url, url.find("bad").unwrap() + 1);
        assert_eq!(&shown[caret..], "bad]", "{shown}");
        // A long line: a window around the column, both ends marked.
        let long = format!("{}X{}", "a".repeat(5_000), "b".repeat(5_000));
        let (shown, caret) = snippet(&long, 5_001);
        assert_eq!(shown.len(), 2 * SNIPPET_RADIUS + 1 + 2 * CROPPED.len());
        assert!(
            shown.starts_with(CROPPED) && shown.ends_with(CROPPED),
            "{shown}"
        );
        assert_eq!(&shown[caret..=caret], "X");
        let mut rendered = String::new();
        write_place(&mut rendered, Path::new("l.yaml"), (1, 5_001), Some(&long)).unwrap();
        assert!(rendered.contains(" --> l.yaml:1:5001\n"), "{rendered}");
        assert!(rendered.len() < 2 * (2 * SNIPPET_RADIUS + 50), "{rendered}");
    }

    /// Tabs before the column are repeated under the line, so the caret
    /// stands under the column at any tab width.
    #[test]
    fn the_caret_lines_up_after_tabs() {
        let mut rendered = String::new();
        let line = "\t\tkey: bad";
        write_place(&mut rendered, Path::new("r.yaml"), (3, 8), Some(line)).unwrap();
        assert!(
            rendered.ends_with("3 | \t\tkey: bad\n  | \t\t     ^"),
            "{rendered:?}"
        );
    }
}
