//! Kubernetes' URL library (`url()`, `isURL()` and the `get…` accessors),
//! as `k8s.io/apiserver/pkg/cel/library/urls.go` defines it.
//!
//! Data flow: the overloads are declared on the environment by
//! [`super::register`]; `url('…')` of a literal is parsed at load
//! ([`super::Literals`]).
//!
//! Kubernetes parses with Go's `net/url` (`ParseRequestURI` to validate,
//! `Parse` for the value): an absolute URI or an absolute path, kept as
//! written (no normalisation, a default port stays, `https://a.b` has an
//! empty path). The `url` crate follows the WHATWG URL standard instead,
//! which normalises all of those and cannot parse a bare path, so the
//! small subset Kubernetes exposes is parsed here, by hand, with Go's rules.

use std::collections::HashMap;

use cel::common::types::{CelList, CelMap, CelMapKey, CelString, STRING_TYPE, Type};
use cel::common::value::{CowVal, StaticVal, Val};
use cel::{DeclarationError, Env, ExecutionError};

use super::one;

/// The CEL type of a URL: Kubernetes' name for it.
pub(crate) const URL: Type = Type::new_unspecified_type("kubernetes.URL");
static URL_TYPE: Type = URL;

/// A parsed URL: the parts Kubernetes' accessors return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    scheme: String,
    /// `host[:port]`, percent-decoded, brackets kept around IPv6.
    host: String,
    /// The path as written (still escaped).
    raw_path: String,
    /// The percent-decoded path.
    path: String,
    raw_query: String,
}

impl Val for Url {
    fn get_type(&self) -> &Type {
        &URL_TYPE
    }
    fn cel_type() -> &'static Type {
        &URL_TYPE
    }
    fn equals(&self, other: &dyn Val) -> bool {
        other.downcast_ref::<Url>() == Some(self)
    }
    fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}
impl StaticVal for Url {}

fn parse_error(why: impl std::fmt::Display) -> String {
    why.to_string()
}

/// Parses `text` as Kubernetes' `url()` does; the error says why not.
///
/// The error quotes the whole text, never a part of it: a value a rule read
/// from a secret header is then found and redacted in errors and audit
/// records.
pub(crate) fn parse_url(text: &str) -> Result<Url, String> {
    #[cfg(test)]
    super::count_parse(super::Parsed::Url);
    parse(text)
        .map_err(|why| format!("URL parse error during conversion from string {text:?}: {why}"))
}

fn parse(text: &str) -> Result<Url, String> {
    if text.is_empty() {
        return Err(parse_error("empty url"));
    }
    if text.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(parse_error("invalid control character"));
    }
    // `Parse` takes the fragment off first; it must be validly escaped.
    let (rest, fragment) = text.split_once('#').unwrap_or((text, ""));
    unescape(fragment, false).map_err(parse_error)?;
    let (scheme, rest) = split_scheme(rest)?;
    let (rest, raw_query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut url = Url {
        scheme: scheme.to_ascii_lowercase(),
        host: String::new(),
        raw_path: String::new(),
        path: String::new(),
        raw_query: raw_query.to_owned(),
    };
    if !rest.starts_with('/') {
        // `ParseRequestURI` takes `scheme:opaque` (`mailto:a@b`), and no
        // relative reference.
        if scheme.is_empty() {
            return Err(parse_error("neither an absolute URI nor an absolute path"));
        }
        return Ok(url);
    }
    let path = match rest.strip_prefix("//") {
        Some(authority_and_path) if !scheme.is_empty() || !rest.starts_with("///") => {
            let end = authority_and_path
                .find('/')
                .unwrap_or(authority_and_path.len());
            let (authority, path) = authority_and_path.split_at(end);
            url.host = parse_authority(authority)?;
            path
        }
        _ => rest,
    };
    url.path = unescape(path, false).map_err(parse_error)?;
    url.raw_path = path.to_owned();
    Ok(url)
}

/// `scheme:` and the rest, as Go's `getScheme`.
fn split_scheme(text: &str) -> Result<(&str, &str), String> {
    for (i, c) in text.char_indices() {
        match c {
            'a'..='z' | 'A'..='Z' => {}
            '0'..='9' | '+' | '-' | '.' if i > 0 => {}
            ':' if i == 0 => return Err(parse_error("missing protocol scheme")),
            ':' => return Ok((text.get(..i).unwrap_or(""), text.get(i + 1..).unwrap_or(""))),
            _ => break,
        }
    }
    Ok(("", text))
}

/// The host of `[userinfo@]host[:port]`, checked as Go's `parseHost`.
fn parse_authority(authority: &str) -> Result<String, String> {
    let host = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let valid = userinfo.chars().all(|c| {
                c.is_ascii_alphanumeric() || "-._:~!$&'()*+,;=%@".contains(c) || !c.is_ascii()
            });
            if !valid {
                return Err(parse_error("invalid userinfo"));
            }
            host
        }
        None => authority,
    };
    if let Some(inside) = host.strip_prefix('[') {
        let Some((_, port)) = inside.rsplit_once(']') else {
            return Err(parse_error("missing ']' in host"));
        };
        if !valid_optional_port(port) {
            return Err(parse_error("invalid port after host"));
        }
    } else if let Some(i) = host.rfind(':') {
        let port = host.get(i..).unwrap_or("");
        if !valid_optional_port(port) {
            return Err(parse_error("invalid port after host"));
        }
    }
    let valid = host.chars().all(|c| {
        c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:[]<>\"%".contains(c) || !c.is_ascii()
    });
    // Go takes an escape in a host only for a non-ASCII byte or `%25`.
    let ascii_escape = host.match_indices('%').any(|(i, _)| {
        let escape = host.get(i..i + 3).unwrap_or("");
        escape != "%25" && escape.get(1..2).is_some_and(|h| h < "8")
    });
    if !valid || ascii_escape {
        return Err(parse_error("invalid character in host name"));
    }
    unescape(host, false).map_err(parse_error)
}

/// `""`, or `:` and digits.
fn valid_optional_port(port: &str) -> bool {
    port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
}

/// Percent-decodes `text` (and `+` to a space in a query), refusing a
/// malformed escape as Go does (the `percent-encoding` crate passes it
/// through instead).
fn unescape(text: &str, query: bool) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| {
                        u8::from_str_radix(h, 16)
                            .ok()
                            .filter(|_| !h.starts_with('+'))
                    });
                let Some(decoded) = hex else {
                    return Err("invalid URL escape".to_owned());
                };
                out.push(decoded);
                i += 3;
            }
            b'+' if query => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Whether Go's `EscapedPath` keeps this byte of a path as written.
fn path_byte_ok(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.~$&+,/:;=@!'()*[]%".contains(&b)
}

impl Url {
    /// `(hostname, port)` as Go's `Hostname()` and `Port()`.
    fn host_port(&self) -> (&str, &str) {
        let (host, port) = match self.host.rfind(':') {
            Some(i) if valid_optional_port(self.host.get(i..).unwrap_or("")) => (
                self.host.get(..i).unwrap_or(""),
                self.host.get(i + 1..).unwrap_or(""),
            ),
            _ => (self.host.as_str(), ""),
        };
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        (host, port)
    }

    /// The path, escaped as Go's `EscapedPath`: as written when that is a
    /// valid escaping, otherwise the decoded path escaped anew.
    fn escaped_path(&self) -> String {
        if self.raw_path.bytes().all(path_byte_ok) {
            return self.raw_path.clone();
        }
        let mut out = String::with_capacity(self.path.len());
        for b in self.path.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~$&+,/:;=@".contains(&b) {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    /// The query as Go's `Query()`: `&`-separated `key=value` pairs,
    /// decoded; a pair with `;` or a bad escape is dropped.
    fn query(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for pair in self.raw_query.split('&') {
            if pair.is_empty() || pair.contains(';') {
                continue;
            }
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let (Ok(key), Ok(value)) = (unescape(key, true), unescape(value, true)) else {
                continue;
            };
            match out.iter_mut().find(|(k, _)| *k == key) {
                Some((_, values)) => values.push(value),
                None => out.push((key, vec![value])),
            }
        }
        out
    }
}

/// Declares `url.<name>()`, computed by `$body` from the URL.
macro_rules! accessor {
    ($env:ident, $name:literal, |$url:ident| $body:expr) => {{
        fn op<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
            let $url = one::<Url>(&args)?;
            Ok(CowVal::owned($body))
        }
        $env.add_member_overload($name, concat!("url_", $name), URL, vec![], op)
    }};
}

/// Declares the URL overloads on `env`.
pub(crate) fn register(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_overload("url", "string_to_url", vec![STRING_TYPE], |args| {
        let text = one::<CelString>(&args)?;
        let url = parse_url(text.inner()).map_err(|e| ExecutionError::function_error("url", e))?;
        Ok(CowVal::owned(url))
    })?;
    env.add_overload("isURL", "is_url_string", vec![STRING_TYPE], |args| {
        let ok = parse_url(one::<CelString>(&args)?.inner()).is_ok();
        Ok(CowVal::owned(cel::common::types::CelBool::from(ok)))
    })?;
    accessor!(env, "getScheme", |u| CelString::from(u.scheme.clone()))?;
    accessor!(env, "getHost", |u| CelString::from(u.host.clone()))?;
    accessor!(env, "getHostname", |u| CelString::from(
        u.host_port().0.to_owned()
    ))?;
    accessor!(env, "getPort", |u| CelString::from(
        u.host_port().1.to_owned()
    ))?;
    accessor!(env, "getEscapedPath", |u| CelString::from(u.escaped_path()))?;
    accessor!(env, "getQuery", |u| query_map(u))
}

/// `getQuery()`'s value: `map(string, list(string))`.
fn query_map(url: &Url) -> CelMap<'static> {
    let map: HashMap<CelMapKey<'static>, Box<dyn Val>> = url
        .query()
        .into_iter()
        .map(|(key, values)| {
            let values: Vec<Box<dyn Val>> = values
                .into_iter()
                .map(|v| Box::new(CelString::from(v)) as Box<dyn Val>)
                .collect();
            (
                CelMapKey::from(key),
                Box::new(CelList::from(values)) as Box<dyn Val>,
            )
        })
        .collect();
    CelMap::from(map)
}
