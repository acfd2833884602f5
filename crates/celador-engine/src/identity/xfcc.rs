//! The `x-forwarded-client-cert` (XFCC) header, read only for untrusted
//! intermediate certificates.
//!
//! Data flow: when a leaf is not in the verified-leaf cache, the X.509
//! verifier asks this module for the `Chain=` of the XFCC element that Envoy
//! wrote for *this* leaf (matched by its `Hash=`, the SHA-256 of the leaf).
//! Those certificates only help build a path to the trust domain's bundle;
//! they are never trust anchors, and nothing else in the header (`URI=`,
//! `Subject=`, `DNS=`) is ever read: a header names nobody.

use std::borrow::Cow;

/// One element of the header: the key/value pairs Envoy wrote for one hop.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Element<'a> {
    /// `Hash=`: hex SHA-256 of the client certificate's DER.
    pub hash: Option<Cow<'a, str>>,
    /// `Chain=`: the URL-encoded PEM of the client's full chain.
    pub chain: Option<Cow<'a, str>>,
}

/// Parses an XFCC header value into its elements, in header order.
///
/// Malformed pairs are skipped rather than failing the whole header: the
/// header can only ever help path building, so the worst a broken one can do
/// is leave the chain without intermediates.
pub fn parse(header: &str) -> Vec<Element<'_>> {
    split_unquoted(header, b',')
        .into_iter()
        .map(|element| {
            let mut parsed = Element::default();
            for pair in split_unquoted(element, b';') {
                let Some((key, value)) = pair.split_once('=') else {
                    continue;
                };
                let key = key.trim();
                if key.eq_ignore_ascii_case("hash") {
                    parsed.hash = Some(unquote(value.trim()));
                } else if key.eq_ignore_ascii_case("chain") {
                    parsed.chain = Some(unquote(value.trim()));
                }
            }
            parsed
        })
        .collect()
}

/// The `Chain=` of the element whose `Hash=` is `leaf_sha256_hex`, if any.
pub fn chain_for_leaf<'a>(elements: &'a [Element<'a>], leaf_sha256_hex: &str) -> Option<&'a str> {
    // The last matching element is the one the nearest proxy (our Envoy) wrote.
    elements
        .iter()
        .rev()
        .find(|e| {
            e.hash
                .as_deref()
                .is_some_and(|h| h.eq_ignore_ascii_case(leaf_sha256_hex))
        })
        .and_then(|e| e.chain.as_deref())
}

/// Splits at `sep` outside double quotes (a backslash escapes inside them).
fn split_unquoted(input: &str, sep: u8) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, b) in input.bytes().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if in_quotes => escaped = true,
            b'"' => in_quotes = !in_quotes,
            _ if b == sep && !in_quotes => {
                parts.push(input.get(start..i).unwrap_or_default());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(input.get(start..).unwrap_or_default());
    parts
}

fn unquote(value: &str) -> Cow<'_, str> {
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return Cow::Borrowed(value);
    };
    if !inner.contains('\\') {
        return Cow::Borrowed(inner);
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_hash_and_chain_of_each_element_and_ignores_quoted_separators() {
        let header = concat!(
            r#"By=spiffe://a/b;Hash=AA11;Subject="CN=x,O=y;z";URI=spiffe://forged/x,"#,
            r#"By=spiffe://example.org/gw;Hash=bb22;Chain="-----BEGIN%20CERT";Cert="c""#
        );
        let elements = parse(header);
        assert_eq!(elements.len(), 2);
        assert_eq!(elements[0].hash.as_deref(), Some("AA11"));
        assert_eq!(elements[0].chain, None);
        assert_eq!(elements[1].hash.as_deref(), Some("bb22"));
        assert_eq!(elements[1].chain.as_deref(), Some("-----BEGIN%20CERT"));
    }

    #[test]
    fn the_chain_is_taken_only_from_the_element_of_this_leaf() {
        let elements = parse("Hash=aa;Chain=forged,Hash=BB;Chain=real");
        assert_eq!(chain_for_leaf(&elements, "bb"), Some("real"));
        assert_eq!(chain_for_leaf(&elements, "aa"), Some("forged"));
        assert_eq!(chain_for_leaf(&elements, "cc"), None);
        // Without a hash nothing ties an element to the leaf, so nothing is used.
        assert_eq!(chain_for_leaf(&parse("Chain=x"), "aa"), None);
    }

    #[test]
    fn escaped_quotes_inside_values_are_unescaped() {
        let elements = parse(r#"Hash="a\"b;c";Chain=x"#);
        assert_eq!(elements[0].hash.as_deref(), Some("a\"b;c"));
        assert_eq!(elements[0].chain.as_deref(), Some("x"));
    }

    #[test]
    fn garbage_yields_empty_elements_not_errors() {
        for junk in ["", ";;;", "\"unterminated", "===", "\u{0}\u{1}"] {
            let elements = parse(junk);
            assert!(elements.iter().all(|e| e.chain.is_none()), "{junk:?}");
        }
    }
}
