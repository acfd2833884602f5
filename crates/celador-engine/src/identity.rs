//! The caller's verified identities.
//!
//! Data flow: [`crate::attributes`] hands the credentials Envoy forwarded to
//! the verifiers here: the mTLS peer's X.509-SVID ([`x509`]) and a JWT-SVID
//! from a request header ([`jwt`]). What comes out is an [`Identity`] that
//! rules see as `source` (the direct peer) and `token` (often the original
//! caller, e.g. an agent acting through a gateway), or an [`IdentityError`]
//! that ends the check with a 401 and a stable [`Reason`]. The
//! [`Requirement`] says which credentials a route needs. Nothing here reads a
//! principal string, a DNS SAN, a subject CN or an identity header: only
//! credentials verified against the bundle of the SPIFFE ID's own trust
//! domain.

pub mod bundle;
pub mod dn;
pub mod jwt;
pub mod spiffe_id;
pub mod verified;
pub mod x509;
pub mod xfcc;

use std::time::SystemTime;

pub use spiffe_id::SpiffeId;

use crate::reason::Reason;
use bundle::{DomainBundle, Lookup, TrustBundles};

/// A verified X.509-SVID: who the mTLS peer is, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X509Svid {
    /// The SPIFFE ID from the leaf's URI SAN.
    pub id: SpiffeId,
    /// The leaf's `notBefore`.
    pub not_before: SystemTime,
    /// The leaf's `notAfter`.
    pub not_after: SystemTime,
    /// The earliest `notAfter` of the verified chain: past it, a cached
    /// verdict on this leaf is stale even if the leaf itself is not.
    pub chain_not_after: SystemTime,
    /// What revocations match a certificate by.
    pub certificate: CertificateFacts,
}

/// The facts of a leaf certificate that revocations name it by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateFacts {
    /// The SHA-256 of the leaf's DER, lowercase hex.
    pub sha256: String,
    /// The serial number, lowercase hex without leading zeros.
    pub serial: String,
    /// The issuer's distinguished name (RFC 4514, as x509-parser writes it).
    pub issuer: String,
    /// The issuer's name, for comparing with a written one.
    pub issuer_dn: dn::DistinguishedName,
}

impl CertificateFacts {
    /// The facts of `cert`, whose DER is `der`.
    pub fn of(der: &[u8], cert: &x509_parser::certificate::X509Certificate<'_>) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(der);
        CertificateFacts {
            sha256: hex(&digest),
            serial: normalize_serial(&hex(cert.raw_serial())),
            issuer: cert.issuer().to_string(),
            issuer_dn: dn::DistinguishedName::of(cert.issuer()),
        }
    }
}

/// `bytes` as lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// A serial number in hex (with or without colons, any case) as lowercase
/// hex without leading zeros.
pub(crate) fn normalize_serial(text: &str) -> String {
    let digits: String = text
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let trimmed = digits.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.into()
    }
}

/// The verified identities of one request, named as rules see them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    /// `source`: the mTLS peer's X.509-SVID, if verified.
    pub source: Option<std::sync::Arc<X509Svid>>,
    /// `token`: the JWT-SVID from the request header, if verified.
    pub token: Option<std::sync::Arc<jwt::JwtSvid>>,
    /// Whether every credential came from the verified-credential cache.
    pub from_cache: bool,
}

impl Identity {
    /// The identity behavioural signals are counted for: the JWT-SVID's
    /// SPIFFE ID when there is one (often the original caller), else the
    /// X.509-SVID's.
    pub(crate) fn caller(&self) -> Option<&str> {
        self.token
            .as_ref()
            .map(|t| t.id.as_str())
            .or_else(|| self.source.as_ref().map(|s| s.id.as_str()))
    }
}
/// Which credentials a request must present. Its names (in the config's
/// `identity.require` and the `celador.identity` context extension) are
/// [`Requirement::name`]'s, and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Requirement {
    /// The mTLS peer's X.509-SVID; a JWT-SVID is not read.
    #[default]
    X509,
    /// A JWT-SVID; the client certificate is not read.
    Jwt,
    /// At least one of them; each one presented must be valid.
    Either,
    /// Both.
    Both,
}

impl Requirement {
    /// Every requirement, in the order of [`Requirement::NAMES`].
    pub const ALL: [Requirement; 4] = [
        Requirement::X509,
        Requirement::Jwt,
        Requirement::Either,
        Requirement::Both,
    ];

    /// The names of [`Requirement::ALL`], for messages that list them.
    pub(crate) const NAMES: &'static [&'static str] = &["x509", "jwt", "either", "both"];

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Requirement::X509 => "x509",
            Requirement::Jwt => "jwt",
            Requirement::Either => "either",
            Requirement::Both => "both",
        }
    }

    /// The requirement named `name` (`x509`, `jwt`, `either`, `both`).
    pub fn parse(name: &str) -> Option<Self> {
        Requirement::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Whether a JWT-SVID is read at all.
    pub fn reads_jwt(self) -> bool {
        self != Requirement::X509
    }
}

/// Read by its name; an unknown one is serde's `unknown variant` error, as
/// for any other enum of the config.
impl<'de> serde::Deserialize<'de> for Requirement {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Requirement::parse(&name)
            .ok_or_else(|| serde::de::Error::unknown_variant(&name, Requirement::NAMES))
    }
}

/// Why the caller's identity could not be established.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct IdentityError {
    /// The stable code.
    pub reason: Reason,
    /// What exactly was wrong, for people.
    pub detail: String,
}

impl IdentityError {
    /// An error with `reason` and `detail`.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        IdentityError {
            reason,
            detail: detail.into(),
        }
    }

    /// The bundle of a configured trust domain is not (yet) available.
    pub(crate) fn bundle_unavailable(trust_domain: &str) -> Self {
        IdentityError::new(
            Reason::BundleUnavailable,
            format!(
                "trust domain '{trust_domain}' has no bundle yet: its source has not delivered one"
            ),
        )
    }
}

/// The bundle of `id`'s own trust domain: the one lookup both verifiers
/// make, so that an authority of one trust domain never vouches for an ID
/// of another.
pub(crate) fn bundle_for<'a>(
    bundles: &'a TrustBundles,
    id: &SpiffeId,
) -> Result<&'a DomainBundle, IdentityError> {
    let td = id.trust_domain();
    match bundles.lookup(td) {
        Lookup::Found(bundle) => Ok(bundle),
        Lookup::Pending => Err(IdentityError::bundle_unavailable(td)),
        Lookup::Unknown => Err(IdentityError::new(
            Reason::TrustDomainUnknown,
            format!("trust domain '{td}' is not configured"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::Requirement;

    #[test]
    fn each_requirement_is_read_by_its_one_name() {
        let names: Vec<&str> = Requirement::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names, Requirement::NAMES);
        for r in Requirement::ALL {
            assert_eq!(Requirement::parse(r.name()), Some(r));
            let read: Requirement = serde_json::from_value(serde_json::json!(r.name())).unwrap();
            assert_eq!(read, r);
        }
        assert_eq!(Requirement::parse("X509"), None);
        let err = serde_json::from_value::<Requirement>(serde_json::json!("mtls")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown variant `mtls`, expected one of `x509`, `jwt`, `either`, `both`"
        );
    }
}
