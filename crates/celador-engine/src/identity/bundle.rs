//! Trust bundles: the X.509 authorities and JWT-SVID keys of each trust
//! domain.
//!
//! Data flow: bundle sources (files, the Workload API) produce one
//! [`DomainBundle`] per trust domain; [`TrustBundles`] is the immutable
//! snapshot of all of them that checks read. Every `DomainBundle` has a
//! generation of its own, and verifiers' caches remember the generation a
//! credential was verified under: rotating one trust domain's bundle
//! invalidates exactly that domain's cached verifications, with no flush logic.
//! An SVID is only ever checked against the bundle of its own trust domain.

pub mod document;
pub mod jwk;

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor};

use super::super::time;
use document::DocumentError;
use jwk::JwtKey;

/// An X.509 authority of a trust domain: a root it trusts, with the
/// root's own validity window, outside which it vouches for nothing.
#[derive(Debug, Clone)]
pub struct Authority {
    /// What chain verification starts from.
    pub anchor: TrustAnchor<'static>,
    /// The root certificate's `notBefore`.
    pub not_before: SystemTime,
    /// The root certificate's `notAfter`.
    pub not_after: SystemTime,
}

impl Authority {
    /// Whether the authority vouches for anything at `now`.
    pub(crate) fn valid_at(&self, now: SystemTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

/// The `authorities` that are not valid at `now`, described for a log
/// line: `#2 (valid 2020-01-01T00:00:00Z to 2021-01-01T00:00:00Z)`.
pub fn authorities_not_valid_at(authorities: &[Authority], now: SystemTime) -> Vec<String> {
    authorities
        .iter()
        .enumerate()
        .filter(|(_, a)| !a.valid_at(now))
        .map(|(i, a)| {
            format!(
                "#{} (valid {} to {})",
                i + 1,
                time::rfc3339(a.not_before),
                time::rfc3339(a.not_after)
            )
        })
        .collect()
}

/// The authorities of one trust domain, at one point in time.
#[derive(Debug)]
pub struct DomainBundle {
    generation: u64,
    x509: Vec<Authority>,
    /// The anchors of `x509`, for the common case that all are valid.
    anchors: Vec<TrustAnchor<'static>>,
    /// Every authority is valid from the first to the second.
    all_valid: (SystemTime, SystemTime),
    jwt: HashMap<String, JwtKey>,
    /// `spiffe_sequence`, for a SPIFFE bundle document.
    pub sequence: Option<u64>,
    /// `spiffe_refresh_hint`, for a SPIFFE bundle document.
    pub refresh_hint: Option<Duration>,
}

impl DomainBundle {
    /// A bundle of X.509 authorities and JWT keys, with a new generation.
    pub fn new(x509: Vec<Authority>, jwt: HashMap<String, JwtKey>) -> Self {
        let all_valid = x509.iter().fold(
            (SystemTime::UNIX_EPOCH, time::latest()),
            |(from, until), a| (from.max(a.not_before), until.min(a.not_after)),
        );
        DomainBundle {
            generation: crate::generation::next(),
            anchors: x509.iter().map(|a| a.anchor.clone()).collect(),
            x509,
            all_valid,
            jwt,
            sequence: None,
            refresh_hint: None,
        }
    }

    /// Unique to this bundle's content and lifetime.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The X.509 authorities, each with its window.
    pub fn x509_authorities(&self) -> &[Authority] {
        &self.x509
    }

    /// The anchors of the authorities valid at `now`, for chain
    /// verification: a root outside its own window is not trusted.
    pub fn x509_anchors_at(&self, now: SystemTime) -> Cow<'_, [TrustAnchor<'static>]> {
        let (from, until) = self.all_valid;
        if from <= now && now <= until {
            return Cow::Borrowed(&self.anchors);
        }
        Cow::Owned(
            self.x509
                .iter()
                .filter(|a| a.valid_at(now))
                .map(|a| a.anchor.clone())
                .collect(),
        )
    }

    /// The earliest `notAfter` of the authorities valid at `now`: no
    /// verification made now holds past it.
    pub fn x509_valid_until(&self, now: SystemTime) -> SystemTime {
        self.x509
            .iter()
            .filter(|a| a.valid_at(now))
            .map(|a| a.not_after)
            .min()
            .unwrap_or(now)
    }

    /// The JWT-SVID key with `kid`.
    pub fn jwt_key(&self, kid: &str) -> Option<&JwtKey> {
        self.jwt.get(kid)
    }

    /// How many JWT-SVID keys the bundle has.
    pub fn jwt_key_count(&self) -> usize {
        self.jwt.len()
    }
}

/// Where a trust domain stands in a snapshot.
#[derive(Debug, Clone, Copy)]
pub enum Lookup<'a> {
    /// Its bundle.
    Found(&'a DomainBundle),
    /// Configured, but no bundle has arrived yet (or it was redacted).
    Pending,
    /// Not a configured trust domain.
    Unknown,
}

/// An immutable snapshot of every configured trust domain's bundle.
#[derive(Debug, Default, Clone)]
pub struct TrustBundles {
    domains: HashMap<String, Arc<DomainBundle>>,
    pending: BTreeSet<String>,
}

impl TrustBundles {
    /// A snapshot of `domains`; `pending` are configured trust domains
    /// without a bundle yet.
    pub fn new(domains: HashMap<String, Arc<DomainBundle>>, pending: BTreeSet<String>) -> Self {
        TrustBundles { domains, pending }
    }

    /// A snapshot of fully loaded domains.
    pub fn from_domains(domains: impl IntoIterator<Item = (String, DomainBundle)>) -> Self {
        TrustBundles {
            domains: domains
                .into_iter()
                .map(|(name, bundle)| (name, Arc::new(bundle)))
                .collect(),
            pending: BTreeSet::new(),
        }
    }

    /// Where `trust_domain` stands.
    pub(crate) fn lookup(&self, trust_domain: &str) -> Lookup<'_> {
        match self.domains.get(trust_domain) {
            Some(bundle) => Lookup::Found(bundle),
            None if self.pending.contains(trust_domain) => Lookup::Pending,
            None => Lookup::Unknown,
        }
    }

    /// The trust domains with a bundle.
    pub fn trust_domains(&self) -> impl Iterator<Item = &str> {
        self.domains.keys().map(String::as_str)
    }

    /// The bundles, by trust domain.
    pub fn domains(&self) -> &HashMap<String, Arc<DomainBundle>> {
        &self.domains
    }

    /// The configured trust domains still without a bundle.
    pub fn pending(&self) -> impl Iterator<Item = &str> {
        self.pending.iter().map(String::as_str)
    }
}

/// Why a bundle could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The PEM framing is broken.
    #[error("{path}: invalid PEM: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        reason: String,
    },
    /// The file has no `CERTIFICATE` block.
    #[error("{path}: no PEM CERTIFICATE block; a trust bundle needs at least one root certificate")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A certificate block is not a usable root.
    #[error("{path}: certificate #{index} is not a valid root certificate: {reason}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// 1-based position of the certificate in the file.
        index: usize,
        /// What was wrong with it.
        reason: AnchorError,
    },
    /// A SPIFFE bundle document breaks the spec.
    #[error("{path}: invalid SPIFFE bundle: {reason}")]
    Document {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: DocumentError,
    },
}

/// Why a certificate is not a usable trust anchor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnchorError {
    /// It is not X.509 DER.
    #[error("cannot parse X.509: {0}")]
    NotX509(String),
    /// Bytes follow the certificate.
    #[error("trailing bytes after the certificate")]
    TrailingBytes,
    /// webpki cannot use it as an anchor.
    #[error("{0}")]
    Unusable(String),
}

/// A parsed bundle file, with what was skipped in it.
#[derive(Debug)]
pub struct ParsedBundle {
    /// The bundle.
    pub bundle: DomainBundle,
    /// Keys of the document that were skipped (unknown use or type).
    pub skipped: Vec<String>,
}

/// Parses bundle file content; `path` is only used in error messages.
pub fn parse(bytes: &[u8], path: &Path) -> Result<ParsedBundle, BundleError> {
    let is_json = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{');
    if !is_json {
        return parse_pem(bytes, path).map(|bundle| ParsedBundle {
            bundle,
            skipped: Vec::new(),
        });
    }
    let doc = document::parse(bytes).map_err(|reason| BundleError::Document {
        path: path.to_owned(),
        reason,
    })?;
    let mut bundle = DomainBundle::new(doc.x509, doc.jwt);
    bundle.sequence = doc.sequence;
    bundle.refresh_hint = doc.refresh_hint;
    Ok(ParsedBundle {
        bundle,
        skipped: doc.skipped,
    })
}

/// Parses PEM root certificates; `path` is only used in error messages.
pub fn parse_pem(bytes: &[u8], path: &Path) -> Result<DomainBundle, BundleError> {
    let mut anchors = Vec::new();
    for (i, cert) in CertificateDer::pem_slice_iter(bytes).enumerate() {
        let cert = cert.map_err(|e| BundleError::Pem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        anchors.push(
            anchor_from_der(&cert).map_err(|reason| BundleError::Certificate {
                path: path.to_owned(),
                index: i + 1,
                reason,
            })?,
        );
    }
    if anchors.is_empty() {
        return Err(BundleError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(DomainBundle::new(anchors, HashMap::new()))
}

/// X.509 authorities from concatenated DER certificates (the Workload API's
/// encoding).
pub fn anchors_from_der_certs<'a>(
    certs: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<Authority>, AnchorError> {
    certs
        .into_iter()
        .map(|der| anchor_from_der(&CertificateDer::from(der)))
        .collect()
}

/// A trust anchor from a root certificate's DER, checked to parse as X.509.
pub(crate) fn anchor_from_der(der: &CertificateDer<'_>) -> Result<Authority, AnchorError> {
    // webpki only extracts subject and key; parse fully so a truncated or
    // garbage block is refused here, not silently trusted, and so that the
    // root's own validity window is known.
    let (rest, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| AnchorError::NotX509(e.to_string()))?;
    if !rest.is_empty() {
        return Err(AnchorError::TrailingBytes);
    }
    let anchor = webpki::anchor_from_trusted_cert(der)
        .map(|anchor| anchor.to_owned())
        .map_err(|e| AnchorError::Unusable(format!("{e:?}")))?;
    Ok(Authority {
        anchor,
        not_before: time::from_asn1_seconds(cert.validity().not_before.timestamp()),
        not_after: time::from_asn1_seconds(cert.validity().not_after.timestamp()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_without_certificates_or_with_broken_ones_are_refused() {
        let path = Path::new("bundle.pem");
        assert!(matches!(
            parse_pem(b"", path),
            Err(BundleError::Empty { .. })
        ));
        assert!(matches!(
            parse_pem(b"just text\n", path),
            Err(BundleError::Empty { .. })
        ));
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = parse_pem(garbage, path).unwrap_err();
        assert!(
            matches!(err, BundleError::Certificate { index: 1, .. }),
            "{err}"
        );
        let bad_base64 = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(parse_pem(bad_base64, path).is_err());
    }

    #[test]
    fn every_bundle_has_a_new_generation() {
        let a = DomainBundle::new(Vec::new(), HashMap::new());
        let b = DomainBundle::new(Vec::new(), HashMap::new());
        assert_ne!(a.generation(), b.generation());
    }

    #[test]
    fn lookups_tell_unknown_from_pending_domains() {
        let bundles = TrustBundles::new(
            HashMap::from([(
                "example.org".to_owned(),
                Arc::new(DomainBundle::new(Vec::new(), HashMap::new())),
            )]),
            BTreeSet::from(["later.org".to_owned()]),
        );
        assert!(matches!(bundles.lookup("example.org"), Lookup::Found(_)));
        assert!(matches!(bundles.lookup("later.org"), Lookup::Pending));
        assert!(matches!(bundles.lookup("other.org"), Lookup::Unknown));
        assert_eq!(bundles.pending().collect::<Vec<_>>(), ["later.org"]);
    }
}
