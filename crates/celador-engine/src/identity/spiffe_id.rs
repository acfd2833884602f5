//! Strict SPIFFE ID parsing, by the SPIFFE-ID specification.
//!
//! Data flow: the one URI SAN of an X.509-SVID (or the `sub` of a JWT-SVID)
//! comes here before anything else looks at it. An ID that is not exactly
//! canonical is rejected, never normalised: an uppercase trust domain, a `..`
//! segment or a query would otherwise let two spellings name one workload.

use std::fmt;

const SCHEME: &str = "spiffe://";
/// The spec's limit on a whole SPIFFE ID, in bytes.
const MAX_ID_LEN: usize = 2048;
/// The spec's limit on a trust domain name, in bytes.
const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// A SPIFFE ID that passed every rule of the specification.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    id: Box<str>,
    /// Byte index where the path starts (the end of the trust domain).
    path_start: usize,
}

/// Why a string is not a SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// The string is empty.
    #[error("the SPIFFE ID is empty")]
    Empty,
    /// The ID is longer than the spec allows.
    #[error("the SPIFFE ID is {len} bytes, longer than the {MAX_ID_LEN} the spec allows")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The scheme is not exactly `spiffe://`.
    #[error("the scheme must be exactly 'spiffe://'")]
    WrongScheme,
    /// Nothing between `spiffe://` and the path.
    #[error("the trust domain is empty")]
    MissingTrustDomain,
    /// The trust domain is longer than the spec allows.
    #[error("the trust domain is longer than {MAX_TRUST_DOMAIN_LEN} bytes")]
    TrustDomainTooLong,
    /// The trust domain has an uppercase letter.
    #[error("the trust domain '{0}' has uppercase letters; trust domains are lowercase")]
    UppercaseTrustDomain(String),
    /// The authority has a port.
    #[error("the trust domain has a port; a SPIFFE ID has none")]
    Port,
    /// The authority has user information.
    #[error("the trust domain has user information ('@'); a SPIFFE ID has none")]
    Userinfo,
    /// The trust domain has a character outside `[a-z0-9.-_]`.
    #[error(
        "the trust domain has the character {0:?}; only a-z, 0-9, '.', '-' and '_' are allowed"
    )]
    TrustDomainChar(char),
    /// The ID has a query.
    #[error("the SPIFFE ID has a query ('?'); a SPIFFE ID has none")]
    Query,
    /// The ID has a fragment.
    #[error("the SPIFFE ID has a fragment ('#'); a SPIFFE ID has none")]
    Fragment,
    /// Two slashes in a row, or a trailing slash.
    #[error("the path has an empty segment (a '//' or a trailing '/')")]
    EmptySegment,
    /// A `.` or `..` path segment.
    #[error("the path has a '{0}' segment")]
    DotSegment(&'static str),
    /// A path character outside `[a-zA-Z0-9.-_]`.
    #[error("the path has the character {0:?}; only a-z, A-Z, 0-9, '.', '-' and '_' are allowed")]
    PathChar(char),
}

impl SpiffeId {
    /// Parses `id`, enforcing every rule of the SPIFFE-ID spec.
    pub fn parse(id: &str) -> Result<Self, SpiffeIdError> {
        if id.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if id.len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong { len: id.len() });
        }
        let rest = id.strip_prefix(SCHEME).ok_or(SpiffeIdError::WrongScheme)?;
        // Query and fragment are named before character errors: they are the
        // likelier mistake and the clearer message.
        if rest.contains('?') {
            return Err(SpiffeIdError::Query);
        }
        if rest.contains('#') {
            return Err(SpiffeIdError::Fragment);
        }
        let td_len = rest.find('/').unwrap_or(rest.len());
        let (trust_domain, path) = rest.split_at(td_len);
        validate_trust_domain(trust_domain)?;
        validate_path(path)?;
        Ok(SpiffeId {
            id: id.into(),
            path_start: SCHEME.len() + td_len,
        })
    }

    /// The whole ID, `spiffe://trust.domain/path`.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The trust domain name, without scheme.
    pub fn trust_domain(&self) -> &str {
        self.id
            .get(SCHEME.len()..self.path_start)
            .unwrap_or_default()
    }

    /// The path, empty or starting with `/`.
    pub fn path(&self) -> &str {
        self.id.get(self.path_start..).unwrap_or_default()
    }
}

/// Checks a trust domain name (without scheme) by the SPIFFE-ID spec.
pub fn validate_trust_domain(td: &str) -> Result<(), SpiffeIdError> {
    if td.is_empty() {
        return Err(SpiffeIdError::MissingTrustDomain);
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong);
    }
    if td.contains('@') {
        return Err(SpiffeIdError::Userinfo);
    }
    if td.contains(':') {
        return Err(SpiffeIdError::Port);
    }
    if td.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(SpiffeIdError::UppercaseTrustDomain(td.to_owned()));
    }
    match td
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')))
    {
        Some(c) => Err(SpiffeIdError::TrustDomainChar(c)),
        None => Ok(()),
    }
}

fn validate_path(path: &str) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    // `path` starts with '/', so the first split item is the empty prefix.
    for segment in path.split('/').skip(1) {
        match segment {
            "" => return Err(SpiffeIdError::EmptySegment),
            "." => return Err(SpiffeIdError::DotSegment(".")),
            ".." => return Err(SpiffeIdError::DotSegment("..")),
            _ => {
                if let Some(c) = segment
                    .chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
                {
                    return Err(SpiffeIdError::PathChar(c));
                }
            }
        }
    }
    Ok(())
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_ids_parse_into_trust_domain_and_path() {
        let id = SpiffeId::parse("spiffe://example.org/ns/payments/sa/api").unwrap();
        assert_eq!(id.trust_domain(), "example.org");
        assert_eq!(id.path(), "/ns/payments/sa/api");
        assert_eq!(id.as_str(), "spiffe://example.org/ns/payments/sa/api");

        let bare = SpiffeId::parse("spiffe://td-1.example_2").unwrap();
        assert_eq!(bare.trust_domain(), "td-1.example_2");
        assert_eq!(bare.path(), "");

        let mixed_case_path = SpiffeId::parse("spiffe://example.org/Ns/A.b-c_D").unwrap();
        assert_eq!(mixed_case_path.path(), "/Ns/A.b-c_D");
    }

    #[test]
    fn every_non_canonical_form_is_rejected_not_normalised() {
        use SpiffeIdError::*;
        let cases: &[(&str, SpiffeIdError)] = &[
            ("", Empty),
            ("SPIFFE://example.org/a", WrongScheme),
            ("https://example.org/a", WrongScheme),
            ("spiffe:/example.org/a", WrongScheme),
            ("spiffe://", MissingTrustDomain),
            ("spiffe:///a", MissingTrustDomain),
            (
                "spiffe://Example.org/a",
                UppercaseTrustDomain("Example.org".into()),
            ),
            ("spiffe://example.org:8443/a", Port),
            ("spiffe://user@example.org/a", Userinfo),
            ("spiffe://exa%6dple.org/a", TrustDomainChar('%')),
            ("spiffe://example.org/a?x=1", Query),
            ("spiffe://example.org/a#frag", Fragment),
            ("spiffe://example.org/", EmptySegment),
            ("spiffe://example.org//a", EmptySegment),
            ("spiffe://example.org/a/", EmptySegment),
            ("spiffe://example.org/a/./b", DotSegment(".")),
            ("spiffe://example.org/a/../b", DotSegment("..")),
            ("spiffe://example.org/..", DotSegment("..")),
            ("spiffe://example.org/a%2Fb", PathChar('%')),
            ("spiffe://example.org/a b", PathChar(' ')),
            ("spiffe://example.org/é", PathChar('é')),
        ];
        for (input, want) in cases {
            assert_eq!(SpiffeId::parse(input).as_ref(), Err(want), "{input}");
        }
    }

    #[test]
    fn length_limits_of_the_spec_are_enforced() {
        let long_td = format!("spiffe://{}/a", "a".repeat(256));
        assert_eq!(
            SpiffeId::parse(&long_td),
            Err(SpiffeIdError::TrustDomainTooLong)
        );
        let long_path = format!("spiffe://example.org/{}", "a".repeat(2100));
        assert!(matches!(
            SpiffeId::parse(&long_path),
            Err(SpiffeIdError::TooLong { .. })
        ));
        let just_fits = format!("spiffe://example.org/{}", "a".repeat(2048 - 21));
        assert_eq!(just_fits.len(), 2048);
        assert!(SpiffeId::parse(&just_fits).is_ok());
    }
}
