//! Distinguished names: a certificate's issuer as the certificate carries it
//! and as people write it, compared as names rather than as text.
//!
//! Data flow: a revocations file's `x509_serial` entries name their issuer in
//! text, parsed here once at load ([`DistinguishedName::parse`]); a verified
//! leaf's issuer is read from the certificate once per full verification
//! ([`DistinguishedName::of`]) into its [`super::CertificateFacts`];
//! [`crate::revocations`] compares the two with `==`.
//!
//! Three written forms are read: RFC 4514 (`CN=ca,O=Example`, last RDN
//! first), OpenSSL's oneline form (`C = US, O = Example, CN = ca`, what
//! `openssl x509 -issuer` prints, first RDN first) and OpenSSL's slash form
//! (`/C=US/O=Example/CN=ca`). Attribute types are the usual short or long
//! names (case-insensitive) or dotted OIDs.
//!
//! Equality, as chosen here:
//! * attribute types by OID (`CN`, `commonName` and `2.5.4.3` are one type);
//! * string values by RFC 4518-style matching: case folded, leading and
//!   trailing white space dropped and inner runs of it taken as one space
//!   (every attribute of a certificate's issuer in practice is compared
//!   this way by RFC 5280 section 7.1: `caseIgnoreMatch`, or its IA5 form
//!   for `DC` and `emailAddress`); no Unicode normalisation beyond that;
//! * values of other ASN.1 types by their encoding (`#` + hex in text);
//! * the RDNs as a multiset, in any order: the written forms disagree on
//!   the order (RFC 4514 is last-first, OpenSSL first-last), and for a
//!   revocation keyed on the serial number too, a looser order can only
//!   revoke, never spare.
//!
//! Hand-written: no crate reads OpenSSL's oneline and slash forms, and
//! `x509-cert`'s RFC 4514 reader compares encodings, not RFC 4518 values.

use std::fmt::Write;

/// A distinguished name in canonical form: equal names are equal values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DistinguishedName(String);

/// Why a written name could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DnError(String);

fn error(message: impl Into<String>) -> DnError {
    DnError(message.into())
}

impl DistinguishedName {
    /// A name as a certificate carries it (its issuer, its subject).
    pub fn of(name: &x509_parser::x509::X509Name<'_>) -> Self {
        let rdns = name
            .iter()
            .map(|rdn| {
                rdn.iter()
                    .map(|ava| {
                        let oid = ava.attr_type().to_id_string();
                        let value = ava.attr_value();
                        let value = match decode_string(value.tag().0, value.data) {
                            Some(text) => Value::Text(text),
                            None => Value::Encoded(value.tag().0, value.data.to_vec()),
                        };
                        (oid, value)
                    })
                    .collect()
            })
            .collect();
        Self::canonical(rdns)
    }

    /// Reads a name written in RFC 4514, OpenSSL's oneline or its slash form.
    pub fn parse(text: &str) -> Result<Self, DnError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(error("the name is empty"));
        }
        let rdns = match trimmed.strip_prefix('/') {
            Some(rest) => Reader::new(rest, Form::Slash).rdns()?,
            None => Reader::new(trimmed, Form::Comma).rdns()?,
        };
        Ok(Self::canonical(rdns))
    }

    fn canonical(rdns: Vec<Vec<(String, Value)>>) -> Self {
        let mut rdns: Vec<String> = rdns
            .into_iter()
            .map(|avas| {
                let mut avas: Vec<String> = avas
                    .into_iter()
                    .map(|(oid, value)| format!("{oid}={}", value.canonical()))
                    .collect();
                avas.sort_unstable();
                avas.join("+")
            })
            .collect();
        rdns.sort_unstable();
        DistinguishedName(rdns.join(","))
    }

    /// The canonical text (OIDs and normalised values), for messages.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One attribute's value.
enum Value {
    /// A string type's value, as written.
    Text(String),
    /// Another ASN.1 type: its tag and content octets.
    Encoded(u32, Vec<u8>),
}

impl Value {
    /// The value matched as RFC 4518 says (case folded, white space
    /// trimmed and collapsed), escaped so that `,`, `+` and `#` stay
    /// separators.
    fn canonical(&self) -> String {
        match self {
            Value::Text(text) => {
                let mut out = String::with_capacity(text.len());
                for word in text.split(char::is_whitespace).filter(|w| !w.is_empty()) {
                    if !out.is_empty() {
                        out.push(' ');
                    }
                    for c in word.chars().flat_map(char::to_lowercase) {
                        if matches!(c, ',' | '+' | '#' | '\\') {
                            out.push('\\');
                        }
                        out.push(c);
                    }
                }
                out
            }
            Value::Encoded(tag, content) => {
                let mut out = format!("#{tag}:");
                for b in content {
                    let _ = write!(out, "{b:02x}");
                }
                out
            }
        }
    }
}

/// The text of an ASN.1 string type's content octets; `None` for a type
/// that is not a string, or content that does not decode.
fn decode_string(tag: u32, data: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, NumericString, PrintableString, IA5String, VisibleString.
        12 | 18 | 19 | 22 | 26 => std::str::from_utf8(data).ok().map(str::to_owned),
        // TeletexString: read as Latin-1, as OpenSSL and Go do.
        20 => Some(data.iter().map(|&b| char::from(b)).collect()),
        // UniversalString: UCS-4, big-endian.
        28 => data
            .chunks(4)
            .map(|c| {
                <[u8; 4]>::try_from(c)
                    .ok()
                    .and_then(|c| char::from_u32(u32::from_be_bytes(c)))
            })
            .collect(),
        // BMPString: UCS-2 (read as UTF-16), big-endian.
        30 if data.len().is_multiple_of(2) => {
            let units: Vec<u16> = data
                .chunks_exact(2)
                .filter_map(|c| <[u8; 2]>::try_from(c).ok())
                .map(u16::from_be_bytes)
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

/// The OID of an attribute type written by name (case-insensitive) or as a
/// dotted OID (optionally `OID.`-prefixed).
fn attribute_oid(name: &str) -> Option<String> {
    const NAMES: &[(&[&str], &str)] = &[
        (&["cn", "commonname"], "2.5.4.3"),
        (&["sn", "surname"], "2.5.4.4"),
        (&["serialnumber"], "2.5.4.5"),
        (&["c", "countryname"], "2.5.4.6"),
        (&["l", "localityname"], "2.5.4.7"),
        (&["st", "s", "stateorprovincename"], "2.5.4.8"),
        (&["street", "streetaddress"], "2.5.4.9"),
        (&["o", "organizationname"], "2.5.4.10"),
        (&["ou", "organizationalunitname"], "2.5.4.11"),
        (&["title"], "2.5.4.12"),
        (&["description"], "2.5.4.13"),
        (&["businesscategory"], "2.5.4.15"),
        (&["postalcode"], "2.5.4.17"),
        (&["name"], "2.5.4.41"),
        (&["gn", "givenname"], "2.5.4.42"),
        (&["initials"], "2.5.4.43"),
        (&["generationqualifier"], "2.5.4.44"),
        (&["x500uniqueidentifier"], "2.5.4.45"),
        (&["dnqualifier"], "2.5.4.46"),
        (&["pseudonym"], "2.5.4.65"),
        (&["organizationidentifier"], "2.5.4.97"),
        (&["dc", "domaincomponent"], "0.9.2342.19200300.100.1.25"),
        (&["uid", "userid"], "0.9.2342.19200300.100.1.1"),
        (&["emailaddress", "email", "e"], "1.2.840.113549.1.9.1"),
        (
            &["jurisdictionl", "jurisdictionlocalityname"],
            "1.3.6.1.4.1.311.60.2.1.1",
        ),
        (
            &["jurisdictionst", "jurisdictionstateorprovincename"],
            "1.3.6.1.4.1.311.60.2.1.2",
        ),
        (
            &["jurisdictionc", "jurisdictioncountryname"],
            "1.3.6.1.4.1.311.60.2.1.3",
        ),
    ];
    let lower = name.to_ascii_lowercase();
    if let Some((_, oid)) = NAMES
        .iter()
        .find(|(names, _)| names.contains(&lower.as_str()))
    {
        return Some((*oid).to_owned());
    }
    let dotted = lower.strip_prefix("oid.").unwrap_or(&lower);
    let arcs: Vec<&str> = dotted.split('.').collect();
    let numeric = arcs.len() >= 2
        && arcs
            .iter()
            .all(|a| !a.is_empty() && a.len() <= 20 && a.bytes().all(|b| b.is_ascii_digit()))
        && arcs.iter().all(|a| *a == "0" || !a.starts_with('0'));
    numeric.then(|| dotted.to_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// RFC 4514 and OpenSSL's oneline: `,` (or `;`) between RDNs.
    Comma,
    /// OpenSSL's slash form, its leading `/` already taken.
    Slash,
}

/// A reader of one written name.
struct Reader<'t> {
    text: &'t str,
    pos: usize,
    form: Form,
}

impl<'t> Reader<'t> {
    fn new(text: &'t str, form: Form) -> Self {
        Reader { text, pos: 0, form }
    }

    fn peek(&self) -> Option<char> {
        self.text
            .get(self.pos..)
            .and_then(|rest| rest.chars().next())
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(' ') {
            self.pos += 1;
        }
    }

    fn is_rdn_separator(&self, c: char) -> bool {
        match self.form {
            Form::Comma => c == ',' || c == ';',
            Form::Slash => c == '/',
        }
    }

    /// Every RDN, each a list of (OID, value).
    fn rdns(mut self) -> Result<Vec<Vec<(String, Value)>>, DnError> {
        let mut rdns = Vec::new();
        let mut rdn = Vec::new();
        loop {
            rdn.push(self.ava()?);
            match self.bump() {
                None => break,
                Some('+') => {}
                Some(c) if self.is_rdn_separator(c) => rdns.push(std::mem::take(&mut rdn)),
                Some(c) => return Err(error(format!("unexpected {c:?} after a value"))),
            }
        }
        rdns.push(rdn);
        Ok(rdns)
    }

    /// `type=value`, with the spaces the comma forms allow around both.
    fn ava(&mut self) -> Result<(String, Value), DnError> {
        if self.form == Form::Comma {
            self.skip_spaces();
        }
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c == '=' || c == '+' || self.is_rdn_separator(c) {
                break;
            }
            self.pos += c.len_utf8();
        }
        let name = self.text.get(start..self.pos).unwrap_or_default().trim();
        if self.peek() != Some('=') {
            return Err(if name.is_empty() {
                error("an attribute is missing (an empty RDN, or a separator too many)")
            } else {
                error(format!("{name:?} is not `type=value`"))
            });
        }
        self.pos += 1;
        if name.is_empty() {
            return Err(error("an attribute has no type before `=`"));
        }
        let oid = attribute_oid(name).ok_or_else(|| {
            error(format!(
                "{name:?} is not an attribute type (CN, O, OU, C, L, ST, DC, UID, emailAddress, ... or a dotted OID)"
            ))
        })?;
        if self.form == Form::Comma {
            self.skip_spaces();
        }
        let value = match self.peek() {
            Some('#') if self.form == Form::Comma => self.hex_value()?,
            Some('"') if self.form == Form::Comma => Value::Text(self.quoted()?),
            _ => Value::Text(self.plain()?),
        };
        if self.form == Form::Comma {
            self.skip_spaces();
        }
        Ok((oid, value))
    }

    /// A value up to the next unescaped separator; `\` escapes a special
    /// character or writes a byte as two hex digits.
    fn plain(&mut self) -> Result<String, DnError> {
        let mut bytes = Vec::new();
        while let Some(c) = self.peek() {
            if c == '+' || self.is_rdn_separator(c) {
                break;
            }
            self.pos += c.len_utf8();
            if c == '\\' {
                self.escape(&mut bytes)?;
            } else {
                let mut buf = [0; 4];
                bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
        String::from_utf8(bytes).map_err(|_| error("an escaped value is not UTF-8"))
    }

    /// The character after a `\`.
    fn escape(&mut self, bytes: &mut Vec<u8>) -> Result<(), DnError> {
        let first = self
            .bump()
            .ok_or_else(|| error("a value ends with a lone `\\`"))?;
        if first.is_ascii_hexdigit() {
            let second = self.bump().filter(char::is_ascii_hexdigit).ok_or_else(|| {
                error("`\\` must be followed by two hex digits or a special character")
            })?;
            let hex = [first, second].iter().collect::<String>();
            bytes.push(u8::from_str_radix(&hex, 16).map_err(|_| error("bad hex escape"))?);
            return Ok(());
        }
        if matches!(
            first,
            ' ' | '"' | '#' | '+' | ',' | ';' | '<' | '=' | '>' | '\\' | '/'
        ) {
            bytes.push(first as u8);
            return Ok(());
        }
        Err(error(format!(
            "`\\{first}` is not an escape: `\\` must be followed by two hex digits or one of  \"#+,;<=>\\/"
        )))
    }

    /// A `"`-quoted value (RFC 1779, and OpenSSL's oneline form for values
    /// with special characters).
    fn quoted(&mut self) -> Result<String, DnError> {
        self.pos += 1;
        let mut bytes = Vec::new();
        loop {
            match self.bump() {
                None => return Err(error("a quoted value is not closed")),
                Some('"') => break,
                Some('\\') => self.escape(&mut bytes)?,
                Some(c) => {
                    let mut buf = [0; 4];
                    bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        String::from_utf8(bytes).map_err(|_| error("a quoted value is not UTF-8"))
    }

    /// `#` and the hex of the value's BER encoding (RFC 4514 section 2.4).
    fn hex_value(&mut self) -> Result<Value, DnError> {
        self.pos += 1;
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
            self.pos += 1;
        }
        let hex = self.text.get(start..self.pos).unwrap_or_default();
        if hex.is_empty() || !hex.len().is_multiple_of(2) {
            return Err(error("`#` must be followed by the hex of an encoded value"));
        }
        let der: Vec<u8> = (0..hex.len())
            .step_by(2)
            .filter_map(|i| hex.get(i..i + 2))
            .filter_map(|pair| u8::from_str_radix(pair, 16).ok())
            .collect();
        let (tag, content) = tlv(&der).ok_or_else(|| {
            error(
                "the value after `#` is not one encoded ASN.1 value (a tag, a length, its content)",
            )
        })?;
        Ok(match decode_string(tag, content) {
            Some(text) => Value::Text(text),
            None => Value::Encoded(tag, content.to_vec()),
        })
    }
}

/// The tag number and content of one BER value with a low tag number and
/// a definite length, filling `der` exactly.
fn tlv(der: &[u8]) -> Option<(u32, &[u8])> {
    let (&first, rest) = der.split_first()?;
    let tag = u32::from(first & 0x1f);
    if tag == 0x1f {
        return None;
    }
    let (&len, rest) = rest.split_first()?;
    let (len, rest) = if len < 0x80 {
        (usize::from(len), rest)
    } else {
        let n = usize::from(len & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (octets, rest) = rest.split_at(n);
        (
            octets
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b)),
            rest,
        )
    };
    (rest.len() == len).then_some((tag, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> DistinguishedName {
        DistinguishedName::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn the_three_written_forms_of_one_name_are_equal() {
        let rfc4514 = parse("CN=example.org SPIFFE root CA,O=SPIFFE acceptance,C=US");
        for other in [
            "C = US, O = SPIFFE acceptance, CN = example.org SPIFFE root CA",
            "/C=US/O=SPIFFE acceptance/CN=example.org SPIFFE root CA",
            "cn=EXAMPLE.ORG  spiffe ROOT ca, o=spiffe acceptance, c=us",
            "2.5.4.3=example.org SPIFFE root CA;OID.2.5.4.10=SPIFFE acceptance;countryName=US",
            // C as the hex of its encoding: PrintableString "US".
            "CN=\"example.org SPIFFE root CA\",O=SPIFFE acceptance,C=#13025553",
        ] {
            assert_eq!(parse(other), rfc4514, "{other}");
        }
        assert_ne!(
            parse("CN=example.org SPIFFE root CA,O=SPIFFE acceptance"),
            rfc4514
        );
        assert_ne!(parse("CN=other,O=SPIFFE acceptance,C=US"), rfc4514);
    }

    #[test]
    fn escapes_quotes_and_multi_valued_rdns_are_read() {
        assert_eq!(parse(r"O=Acme\, Inc.,CN=a"), parse("/O=Acme, Inc./CN=a"));
        assert_eq!(
            parse(r#"O="Acme, Inc.", CN=a"#),
            parse("/O=Acme, Inc./CN=a")
        );
        assert_eq!(parse(r"CN=caf\C3\A9"), parse("CN=café"));
        assert_eq!(parse(r"/CN=a\/b"), parse("CN=a/b"));
        assert_eq!(parse("CN=a+UID=b,O=c"), parse("O = c, UID = b + CN = a"));
        assert_ne!(parse("CN=a+UID=b"), parse("CN=a,UID=b"));
        assert_eq!(parse(r"CN=a\+b"), parse(r"/CN=a\+b"));
        assert_ne!(parse(r"CN=a\+b"), parse("CN=a+CN=b"));
    }

    #[test]
    fn a_certificates_name_equals_its_written_form_whatever_string_types_it_uses() {
        use crate::testing::pki::Ca;
        use rcgen::{DnType, DnValue};
        let ca = Ca::root_named(&[
            (
                DnType::CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 25]),
                DnValue::Ia5String("example".try_into().unwrap()),
            ),
            (
                DnType::CountryName,
                DnValue::PrintableString("US".try_into().unwrap()),
            ),
            (
                DnType::OrganizationName,
                DnValue::BmpString("Soci\u{e9}t\u{e9}".try_into().unwrap()),
            ),
            (
                DnType::OrganizationalUnitName,
                DnValue::TeletexString("Ops".try_into().unwrap()),
            ),
            (
                DnType::LocalityName,
                DnValue::UniversalString("Z\u{fc}rich \u{1F980}".try_into().unwrap()),
            ),
            (DnType::CommonName, DnValue::Utf8String("root CA".into())),
        ]);
        let (_, cert) = x509_parser::parse_x509_certificate(&ca.der).unwrap();
        assert_eq!(
            DistinguishedName::of(cert.subject()),
            parse("CN=root CA,L=Z\u{fc}rich \u{1F980},OU=Ops,O=soci\u{e9}t\u{e9},C=US,DC=example")
        );
        assert_eq!(
            DistinguishedName::of(cert.subject()),
            DistinguishedName::of(cert.issuer())
        );
        assert_ne!(DistinguishedName::of(cert.subject()), parse("CN=root CA"));
    }

    #[test]
    fn what_cannot_be_read_is_an_error_saying_why() {
        for (text, says) in [
            ("", "empty"),
            ("example.org SPIFFE root CA", "not `type=value`"),
            ("Organisation=Acme", "not an attribute type"),
            ("=Acme", "no type"),
            ("CN=a,,O=b", "empty RDN"),
            ("CN=a,", "empty RDN"),
            ("/CN=a//O=b", "empty RDN"),
            ("CN=\"open", "not closed"),
            (r"CN=a\q", "not an escape"),
            (r"CN=a\", "lone"),
            ("CN=#zz", "hex"),
            ("CN=#1302", "not one encoded"),
            ("CN=\"a\" b", "unexpected"),
            ("1.2=x", ""),
        ] {
            match DistinguishedName::parse(text) {
                Err(e) => assert!(e.to_string().contains(says), "{text}: {e}"),
                Ok(dn) if text == "1.2=x" => assert_eq!(dn.as_str(), "1.2=x"),
                Ok(dn) => panic!("{text} parsed as {dn:?}"),
            }
        }
    }
}
