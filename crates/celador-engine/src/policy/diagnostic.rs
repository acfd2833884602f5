//! Errors and warnings about a rules file, placed at a line and column of the
//! file and rendered like a compiler's.
//!
//! Data flow: the loader and the checker report problems inside a rule's
//! `when` expression by byte offset; this module maps that offset back into
//! the YAML file (through quotes, folded `>` and literal `|` blocks) so the
//! message points at the exact token a person has to fix.

use std::fmt;
use std::path::PathBuf;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The rules file is not loaded.
    Error,
    /// The rules file loads, but something is likely wrong.
    Warning,
}

/// One problem in a rules file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The rules file.
    pub file: PathBuf,
    /// 1-based line in the file (0 when unknown).
    pub line: usize,
    /// 1-based column in the file, in characters (0 when unknown).
    pub column: usize,
    /// The rule concerned, if any.
    pub rule: Option<String>,
    /// What is wrong.
    pub message: String,
    /// The text of the line, for the snippet.
    pub line_text: Option<String>,
}

impl Diagnostic {
    /// A diagnostic at 1-based `(line, column)` of `text`, the file at
    /// `path` (0: unknown), quoting the line for the caret.
    pub fn at(
        text: &str,
        path: &std::path::Path,
        severity: Severity,
        (line, column): (usize, usize),
        message: String,
    ) -> Diagnostic {
        Diagnostic {
            severity,
            file: path.to_owned(),
            line,
            column,
            rule: None,
            message,
            line_text: line
                .checked_sub(1)
                .and_then(|i| text.lines().nth(i))
                .map(str::to_owned),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{severity}: ")?;
        if let Some(rule) = &self.rule {
            write!(f, "rule '{rule}': ")?;
        }
        write!(f, "{}", self.message)?;
        crate::snippet::write_place(
            f,
            &self.file,
            (self.line, self.column),
            self.line_text.as_deref(),
        )
    }
}

/// A located YAML scalar: where it starts in the file, and its raw text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScalarSpan {
    /// Byte offset of the scalar's first character in the file.
    pub start: usize,
    /// Byte length of the scalar as written.
    pub len: usize,
}

/// Maps `offset` (bytes) in the scalar's *value* to a byte offset in `file`.
///
/// YAML quoting and folding only add or change whitespace, quotes and
/// escapes, so the value's other characters appear in the raw text in the
/// same order: walk both, matching those characters.
pub(crate) fn map_offset(file: &str, span: ScalarSpan, value: &str, offset: usize) -> usize {
    let raw = file
        .get(span.start..span.start.saturating_add(span.len))
        .unwrap_or_default();
    let mut raw_chars = raw.char_indices().peekable();
    // Just past the last character matched: where an offset past the end
    // of the value (a parser's "unexpected end of input") points.
    let mut after_last = 0;
    for (vi, vc) in value.char_indices() {
        if vc.is_whitespace() {
            continue;
        }
        // Find `vc` in the raw text, skipping what YAML adds.
        let found = loop {
            match raw_chars.next() {
                None => return span.start,
                Some((ri, rc)) if rc == vc => break ri,
                Some((_, rc)) if rc.is_whitespace() || matches!(rc, '"' | '\'' | '\\') => {}
                // Anything else means an escape changed the text: give up on
                // precision and point at the scalar.
                Some(_) => return span.start,
            }
        };
        if vi >= offset {
            return span.start + found;
        }
        after_last = found + vc.len_utf8();
    }
    span.start + after_last
}

/// The 1-based line and column (in characters) of byte `offset` in `text`,
/// with the line's text: the reference [`Lines::line_column`] is tested
/// against.
#[cfg(test)]
fn line_column(text: &str, offset: usize) -> (usize, usize, String) {
    Lines::of(text).line_column(text, offset)
}

/// Where each line of a text starts, so that placing many diagnostics in
/// a long file (a warning on each of 2,000 rules of 20,000) costs a binary
/// search each rather than a scan from the top.
#[derive(Debug, Clone)]
pub(crate) struct Lines(Vec<usize>);

impl Lines {
    /// The line starts of `text`.
    pub(crate) fn of(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Lines(starts)
    }

    /// What [`line_column`] says of `offset` in `text` (whose lines these
    /// are).
    pub(crate) fn line_column(&self, text: &str, offset: usize) -> (usize, usize, String) {
        let offset = offset.min(text.len());
        // The last line starting at or before the offset.
        let index = self.0.partition_point(|&start| start <= offset).max(1) - 1;
        let line_start = self.0.get(index).copied().unwrap_or(0);
        let column = text
            .get(line_start..offset)
            .map_or(1, |s| s.chars().count() + 1);
        let line_text = text
            .get(line_start..)
            .and_then(|rest| rest.lines().next())
            .unwrap_or_default()
            .to_owned();
        (index + 1, column, line_text)
    }

    /// The text of 1-based `line`.
    pub(crate) fn text(&self, text: &str, line: u64) -> Option<String> {
        let index = usize::try_from(line).ok()?.checked_sub(1)?;
        let start = *self.0.get(index)?;
        Some(
            text.get(start..)?
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_index_places_offsets_as_the_scan_does() {
        let text = "a: 1\nbé: 2\n\n  c: \"x\"\nlast";
        let lines = Lines::of(text);
        for offset in 0..=text.len() + 2 {
            if text.is_char_boundary(offset.min(text.len())) {
                assert_eq!(
                    lines.line_column(text, offset),
                    line_column(text, offset),
                    "{offset}"
                );
            }
        }
        for line in 0..7 {
            assert_eq!(
                lines.text(text, line),
                usize::try_from(line)
                    .ok()
                    .and_then(|l| l.checked_sub(1))
                    .and_then(|i| text.lines().nth(i))
                    .map(str::to_owned),
                "{line}"
            );
        }
    }

    /// The quoted line loses a URL's user information and every
    /// credential-shaped word in it; the rest is shown as written.
    #[test]
    fn a_quoted_line_shows_no_credential() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlc2lnbmF0dXJl";
        let text = format!(
            "a: 1\nheaders: {{authorization: \"Bearer {jwt}\", db: \"redis://:pw@h/0\", bogus: 1}}\n"
        );
        let d = Diagnostic::at(
            &text,
            std::path::Path::new("f.yaml"),
            Severity::Error,
            (2, 70),
            "unknown field `bogus`".to_owned(),
        );
        let shown = d.to_string();
        assert!(
            shown.contains(
                "2 | headers: {authorization: \"Bearer <redacted>\", db: \"redis://<redacted>@h/0\", bogus: 1}"
            ),
            "{shown}"
        );
        assert!(!shown.contains("eyJ") && !shown.contains(":pw@"), "{shown}");
    }

    fn position(file: &str, value: &str, token: &str) -> (usize, usize) {
        let start = file.find(value.split_whitespace().next().unwrap()).unwrap();
        let raw_start = file[..start]
            .rfind(['"', '\''])
            .filter(|q| *q + 1 == start)
            .unwrap_or(start);
        let span = ScalarSpan {
            start: raw_start,
            len: file.len() - raw_start,
        };
        let offset = value.find(token).unwrap();
        let mapped = map_offset(file, span, value, offset);
        let (line, column, _) = line_column(file, mapped);
        (line, column)
    }

    #[test]
    fn offsets_map_through_plain_quoted_and_folded_scalars() {
        let plain = "rules:\n  - when: source.idd == 'x'\n";
        assert_eq!(position(plain, "source.idd == 'x'", "idd"), (2, 18));

        let quoted = "  when: \"a && sourc.id\"\n";
        assert_eq!(position(quoted, "a && sourc.id", "sourc"), (1, 15));

        let folded = "  when: >\n    source.id == 'y' &&\n    reqest.method == 'GET'\n";
        let value = "source.id == 'y' && reqest.method == 'GET'\n";
        assert_eq!(position(folded, value, "reqest"), (3, 5));

        let literal = "  when: |\n    a &&\n      bb\n";
        assert_eq!(position(literal, "a &&\n  bb\n", "bb"), (3, 7));

        // Past the end of the value: just after its last character.
        let file = "  when: source.id ==\n";
        let span = ScalarSpan { start: 8, len: 12 };
        let mapped = map_offset(file, span, "source.id ==", 12);
        assert_eq!(line_column(file, mapped).1, 21);
    }

    #[test]
    fn diagnostics_render_with_a_caret_under_the_column() {
        let d = Diagnostic {
            severity: Severity::Error,
            file: "p.yaml".into(),
            line: 3,
            column: 5,
            rule: Some("r".into()),
            message: "bad".into(),
            line_text: Some("    sourc.id".into()),
        };
        assert_eq!(
            d.to_string(),
            "error: rule 'r': bad\n --> p.yaml:3:5\n  |\n3 |     sourc.id\n  |     ^"
        );
    }
}
