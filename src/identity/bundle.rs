//! Trust bundles: the root certificates of each trust domain.
//!
//! Data flow: bundle files are loaded into an immutable [`TrustBundles`]
//! snapshot, each with a fresh generation number. The X.509 verifier looks up
//! the bundle of the SPIFFE ID's *own* trust domain in it, and keys its cache
//! on the generation, so a new snapshot invalidates every cached verdict
//! without any flush logic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor};

/// Generations are unique for the life of the process, across every source.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

/// The roots of one trust domain.
#[derive(Debug)]
pub struct DomainBundle {
    anchors: Vec<TrustAnchor<'static>>,
}

impl DomainBundle {
    /// A bundle of the given trust anchors.
    pub fn new(anchors: Vec<TrustAnchor<'static>>) -> Self {
        DomainBundle { anchors }
    }

    /// The X.509 roots, for chain verification.
    pub fn x509_anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }
}

/// An immutable snapshot of every configured trust domain's bundle.
#[derive(Debug)]
pub struct TrustBundles {
    generation: u64,
    domains: HashMap<String, DomainBundle>,
}

impl TrustBundles {
    /// A snapshot of `domains`, with a generation never used before.
    pub fn new(domains: HashMap<String, DomainBundle>) -> Self {
        TrustBundles {
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
            domains,
        }
    }

    /// This snapshot's generation; caches key on it.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The bundle of `trust_domain`, if it is configured.
    pub fn get(&self, trust_domain: &str) -> Option<&DomainBundle> {
        self.domains.get(trust_domain)
    }

    /// The configured trust domain names.
    pub fn trust_domains(&self) -> impl Iterator<Item = &str> {
        self.domains.keys().map(String::as_str)
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
        reason: String,
    },
}

/// Loads a PEM file of root certificates.
pub fn load_pem_file(path: &Path) -> Result<DomainBundle, BundleError> {
    let bytes = std::fs::read(path).map_err(|source| BundleError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_pem(&bytes, path)
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
    Ok(DomainBundle::new(anchors))
}

/// A trust anchor from a root certificate's DER, checked to parse as X.509.
pub fn anchor_from_der(der: &CertificateDer<'_>) -> Result<TrustAnchor<'static>, String> {
    // webpki only extracts subject and key; parse fully so a truncated or
    // garbage block is refused here, not silently trusted.
    x509_parser::parse_x509_certificate(der).map_err(|e| format!("cannot parse X.509: {e}"))?;
    webpki::anchor_from_trusted_cert(der)
        .map(|anchor| anchor.to_owned())
        .map_err(|e| format!("{e:?}"))
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
    fn every_snapshot_has_a_new_generation() {
        let a = TrustBundles::new(HashMap::new());
        let b = TrustBundles::new(HashMap::new());
        assert_ne!(a.generation(), b.generation());
    }
}
