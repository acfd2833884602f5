//! Percent-decoding, as Envoy percent-encodes certificates (`source.certificate`,
//! the `Cert` and `Chain` of `x-forwarded-client-cert`) and clients encode
//! query strings.
//!
//! Decoding borrows when there is nothing to decode, which is the common case
//! for query values.

use std::borrow::Cow;

/// Percent-decodes `input`. With `plus_as_space`, `+` becomes a space (the
/// form encoding of query strings); elsewhere `+` is kept, as in base64.
///
/// Returns `None` when a `%` is not followed by two hex digits.
pub fn decode(input: &str, plus_as_space: bool) -> Option<Cow<'_, [u8]>> {
    let bytes = input.as_bytes();
    if !(bytes.contains(&b'%') || plus_as_space && bytes.contains(&b'+')) {
        return Some(Cow::Borrowed(bytes));
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut iter = bytes.iter().copied();
    while let Some(b) = iter.next() {
        match b {
            b'%' => {
                let hi = iter.next().and_then(hex_value)?;
                let lo = iter.next().and_then(hex_value)?;
                out.push(hi << 4 | lo);
            }
            b'+' if plus_as_space => out.push(b' '),
            _ => out.push(b),
        }
    }
    Some(Cow::Owned(out))
}

/// Like [`decode`], for text: invalid escapes and invalid UTF-8 are kept as
/// written rather than failing, since a query value is data, not structure.
pub fn decode_lossy(input: &str, plus_as_space: bool) -> Cow<'_, str> {
    match decode(input, plus_as_space) {
        Some(Cow::Borrowed(_)) | None => Cow::Borrowed(input),
        Some(Cow::Owned(bytes)) => match String::from_utf8(bytes) {
            Ok(s) => Cow::Owned(s),
            Err(_) => Cow::Borrowed(input),
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_keeps_plus_unless_asked() {
        assert_eq!(
            decode("a%20b%0A+c", false).unwrap().as_ref(),
            b"a b\n+c".as_slice()
        );
        assert_eq!(decode("a+b", true).unwrap().as_ref(), b"a b".as_slice());
        assert!(matches!(decode("plain", true), Some(Cow::Borrowed(_))));
    }

    #[test]
    fn truncated_or_non_hex_escapes_are_errors() {
        assert_eq!(decode("%", false), None);
        assert_eq!(decode("%4", false), None);
        assert_eq!(decode("%zz", false), None);
        assert_eq!(decode_lossy("100%", true), "100%");
        assert_eq!(decode_lossy("%FF", false), "%FF");
    }
}
