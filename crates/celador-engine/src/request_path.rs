//! The request path as rules see it: one canonical spelling, and the
//! spellings that servers resolve differently, refused.
//!
//! Data flow: [`crate::attributes::Attributes`] are built with the
//! raw path (`request.raw_path`) and its [`canonicalize`]d form
//! (`request.path`); before any rule, [`crate::Engine::decide`]
//! denies a path whose [`Ambiguity`] the configured [`PathMode`] refuses,
//! with reason `invalid_path`.
//!
//! Why: a rule decides on the path it reads, the upstream serves the path
//! *it* resolves. Where the two differ, `/export/..;/admin` matches an allow
//! rule on `/export/` and is served as `/admin` by Tomcat. The canonical form
//! is RFC 3986's normalization (§6.2.2: percent-encoded unreserved
//! characters decoded, hexadecimal digits upper case, §5.2.4 dot segments
//! removed) with slashes merged and backslashes read as slashes, as Envoy's
//! `normalize_path` and `merge_slashes` and Istio's `MERGE_SLASHES` do; the
//! ambiguities are those that Istio's path normalization bulletins
//! (ISTIO-SECURITY-2021-005/-008), Envoy's `path_with_escaped_slashes_action`
//! and Spring Security's `StrictHttpFirewall` name: dot segments, encoded
//! dots, slashes and backslashes, `;` path parameters (which Tomcat and
//! Jetty strip, so `..;` is a parent segment to them), NUL and control
//! characters, malformed and double-encoded escapes (Jetty's `%u002e`,
//! `%252e`), and a leading `//` (an authority to URL parsers such as
//! WHATWG's `new URL(path, base)`).
//!
//! Hand-written, not a URL crate: `url` implements the WHATWG URL standard,
//! whose path parsing is not RFC 3986's (it percent-encodes what it does
//! not like and reads backslashes as slashes for some schemes only), and
//! `http::Uri` does not normalize at all; neither says which spelling made
//! a path ambiguous, which is what is refused here. One pass over the
//! bytes, and no allocation for a path that is already canonical.

use std::borrow::Cow;

/// How request paths are read and judged (`request.paths` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMode {
    /// `request.path` is the canonical path; nothing is refused. Safe only
    /// when the upstream resolves paths exactly as RFC 3986 does.
    Canonical,
    /// `request.path` is the canonical path, and a path some common server
    /// resolves differently is denied (`invalid_path`).
    #[default]
    RejectAmbiguous,
    /// `request.path` is the path as Envoy sent it, as before this setting
    /// existed. Unsafe: rules and the upstream may read two different paths.
    Raw,
}

/// Why a path is ambiguous: some common server resolves it to another
/// resource than its canonical form names. Declared from the most telling
/// to the least: a path with several is reported by the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ambiguity {
    /// A `.` or `..` segment (also before a `;` parameter: `..;`).
    DotSegment,
    /// `%2e`: an encoded dot, a dot segment to servers that decode first.
    EncodedDot,
    /// `%2f` or `%5c`: a segment boundary to servers that decode first.
    EncodedSlash,
    /// `\`: a slash to Windows servers, IIS, Envoy's `normalize_path`.
    Backslash,
    /// `;` (or `%3b`): a path parameter, stripped by Tomcat, Jetty, Spring.
    PathParameter,
    /// NUL, raw or `%00`: the end of the path to C-string handling.
    Nul,
    /// A control character (U+0001 to U+001F, U+007F).
    ControlCharacter,
    /// A `%` not followed by two hexadecimal digits (Jetty's `%u002e`).
    BadEscape,
    /// `%25` followed by two hexadecimal digits: decoded twice, `%252e` is `.`.
    DoubleEncoding,
    /// A path starting with `//`: an authority to URL parsers.
    LeadingDoubleSlash,
}

impl Ambiguity {
    /// What is wrong, for the audit record's `detail`.
    pub fn describe(self) -> &'static str {
        match self {
            Ambiguity::DotSegment => {
                "the path has a dot segment ('.' or '..', possibly with ';' parameters)"
            }
            Ambiguity::EncodedDot => "the path has an encoded dot (%2e)",
            Ambiguity::EncodedSlash => "the path has an encoded slash or backslash (%2f, %5c)",
            Ambiguity::Backslash => "the path has a backslash",
            Ambiguity::PathParameter => "the path has a ';' path parameter",
            Ambiguity::Nul => "the path has a NUL (raw or %00)",
            Ambiguity::ControlCharacter => "the path has a control character",
            Ambiguity::BadEscape => "the path has a '%' not followed by two hex digits",
            Ambiguity::DoubleEncoding => {
                "the path has a double-encoded escape (%25 and two hex digits)"
            }
            Ambiguity::LeadingDoubleSlash => "the path starts with '//'",
        }
    }
}

/// A path's canonical form, and why it is ambiguous if it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canonical<'a> {
    /// The canonical path: borrowed when the raw path already is.
    pub path: Cow<'a, str>,
    /// The most telling ambiguity found, if any.
    pub ambiguity: Option<Ambiguity>,
}

/// Splits a path as Envoy sends it (`request.http.path`, with the query)
/// into the path and the raw query: the query after `?`, without a
/// `#fragment`.
pub fn split_query(full: &str) -> (&str, &str) {
    let without_fragment = full.split_once('#').map_or(full, |(p, _)| p);
    without_fragment
        .split_once('?')
        .unwrap_or((without_fragment, ""))
}

/// The canonical form of `raw` (a path without query or fragment), and its
/// most telling [`Ambiguity`].
///
/// A path that does not start with `/` (`*`, an authority) keeps its
/// structure: only its escapes and backslashes are normalized.
pub fn canonicalize(raw: &str) -> Canonical<'_> {
    let scan = scan(raw.as_bytes());
    if !scan.needs_work {
        return Canonical {
            path: Cow::Borrowed(raw),
            ambiguity: scan.ambiguity,
        };
    }
    let normalized = normalize_escapes(raw);
    let path = if normalized.starts_with('/') {
        remove_dot_segments(&normalized)
    } else {
        normalized
    };
    Canonical {
        path: if path == raw {
            Cow::Borrowed(raw)
        } else {
            Cow::Owned(path)
        },
        ambiguity: scan.ambiguity,
    }
}

/// What one pass over the raw bytes found.
struct Scan {
    /// Whether the canonical form may differ from the raw path.
    needs_work: bool,
    ambiguity: Option<Ambiguity>,
}

fn scan(bytes: &[u8]) -> Scan {
    let mut found: Option<Ambiguity> = None;
    let mut flag = |a: Ambiguity| {
        found = Some(found.map_or(a, |f| f.min(a)));
    };
    if bytes.starts_with(b"//") {
        flag(Ambiguity::LeadingDoubleSlash);
    }
    let mut needs_work = false;
    let mut segment_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'/' => {
                if is_dot_segment(bytes.get(segment_start..i).unwrap_or_default()) {
                    flag(Ambiguity::DotSegment);
                    needs_work = true;
                }
                if i > 0 && bytes.get(i - 1) == Some(&b'/') {
                    needs_work = true;
                }
                segment_start = i + 1;
            }
            b'%' => {
                needs_work = true;
                if let Some(a) = escape_ambiguity(bytes.get(i + 1..).unwrap_or_default()) {
                    flag(a);
                }
            }
            b'\\' => {
                needs_work = true;
                flag(Ambiguity::Backslash);
            }
            b';' => flag(Ambiguity::PathParameter),
            0 => flag(Ambiguity::Nul),
            1..=0x1f | 0x7f => flag(Ambiguity::ControlCharacter),
            _ => {}
        }
    }
    if is_dot_segment(bytes.get(segment_start..).unwrap_or_default()) {
        flag(Ambiguity::DotSegment);
        needs_work = true;
    }
    Scan {
        needs_work,
        ambiguity: found,
    }
}

/// Whether a raw segment is `.` or `..`, before any `;` parameter.
fn is_dot_segment(segment: &[u8]) -> bool {
    let name = segment
        .iter()
        .position(|&b| b == b';')
        .and_then(|end| segment.get(..end))
        .unwrap_or(segment);
    name == b"." || name == b".."
}

/// What an escape (the bytes after its `%`) makes ambiguous, if anything.
fn escape_ambiguity(after: &[u8]) -> Option<Ambiguity> {
    let Some(byte) = hex_pair(after) else {
        return Some(Ambiguity::BadEscape);
    };
    match byte {
        b'.' => Some(Ambiguity::EncodedDot),
        b'/' | b'\\' => Some(Ambiguity::EncodedSlash),
        b';' => Some(Ambiguity::PathParameter),
        0 => Some(Ambiguity::Nul),
        b'%' if hex_pair(after.get(2..).unwrap_or_default()).is_some() => {
            Some(Ambiguity::DoubleEncoding)
        }
        _ => None,
    }
}

/// The byte two hexadecimal digits at the start of `bytes` spell.
fn hex_pair(bytes: &[u8]) -> Option<u8> {
    match bytes {
        [hi, lo, ..] => Some(hex_value(*hi)? << 4 | hex_value(*lo)?),
        _ => None,
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The upper-case hexadecimal digit of `nibble` (below 16).
fn upper_hex(nibble: u8) -> u8 {
    match nibble {
        0..=9 => b'0' + nibble,
        _ => b'A' + (nibble - 10),
    }
}

/// RFC 3986 unreserved characters: the only escapes that are decoded.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Escapes of unreserved characters decoded, the others' hexadecimal digits
/// upper case, backslashes read as slashes, and a `%` that starts no escape
/// written `%25`: so that no decoded character can complete it into a new
/// escape (`%e%33` is `%25e3`, not `%e3`), and canonical is canonical.
fn normalize_escapes(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match (b, hex_pair(bytes.get(i + 1..).unwrap_or_default())) {
            (b'%', Some(decoded)) if is_unreserved(decoded) => {
                out.push(decoded);
                i += 3;
            }
            (b'%', Some(decoded)) => {
                out.push(b'%');
                out.push(upper_hex(decoded >> 4));
                out.push(upper_hex(decoded & 0xf));
                i += 3;
            }
            (b'\\', _) => {
                out.push(b'/');
                i += 1;
            }
            (b'%', None) => {
                out.extend_from_slice(b"%25");
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    // Only ASCII was replaced by ASCII, so this is the input's UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Slashes merged, then dot segments removed (RFC 3986 §5.2.4), in that
/// order, as Tomcat and nginx resolve a path: `/a//../b` is `/b`. A trailing
/// slash, or a final dot segment, leaves a trailing slash.
fn remove_dot_segments(path: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in path.split('/').skip(1) {
        match segment {
            "" | "." => trailing_slash = true,
            ".." => {
                kept.pop();
                trailing_slash = true;
            }
            name => {
                kept.push(name);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for name in &kept {
        out.push('/');
        out.push_str(name);
    }
    if trailing_slash || kept.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests;
