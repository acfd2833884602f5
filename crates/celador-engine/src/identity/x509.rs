//! X.509-SVID verification, by the SPIFFE X.509-SVID specification.
//!
//! Data flow: `attributes.source.certificate` (the URL-encoded PEM of the
//! leaf that Envoy forwards with `include_peer_certificate: true`) and the
//! `x-forwarded-client-cert` header come in; an [`X509Svid`] or an
//! [`IdentityError`] goes out. The SPIFFE ID is read from the leaf first, and
//! the chain is then verified against the bundle of *that ID's* trust domain
//! only, so a CA of one trust domain can never vouch for another's IDs.
//!
//! Verified leaves are cached ([`super::verified`]) by the SHA-256 of the
//! certificate as Envoy sent it, per bundle generation, and never past the earliest `notAfter` of the
//! verified chain: a chain check costs tens of microseconds, a cache hit well
//! under one.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use sha2::{Digest, Sha256};
use webpki::{EndEntityCert, KeyPurposeIdIter};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use super::bundle::{DomainBundle, TrustBundles};
use super::spiffe_id::SpiffeId;
use super::verified::{CacheSettings, CacheStats, Credential, VerifiedCache};
use super::{IdentityError, X509Svid, xfcc};
use crate::percent;
use crate::reason::Reason;
use crate::time;

/// Envoy sends one leaf; a PEM this large is not one.
pub(crate) const MAX_CERTIFICATE_BYTES: usize = 64 * 1024;
/// Larger XFCC headers are not read for intermediates.
pub(crate) const MAX_XFCC_BYTES: usize = 64 * 1024;
/// At most this many intermediates are offered to path building.
pub(crate) const MAX_INTERMEDIATES: usize = 8;

/// Verifies X.509-SVIDs and caches the verified ones.
#[derive(Debug)]
pub struct X509Verifier {
    cache: VerifiedCache<X509Svid>,
}

impl Credential for X509Svid {
    fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// The earliest `notAfter` of the chain that verified it.
    fn expires_at(&self) -> SystemTime {
        self.chain_not_after
    }

    fn valid_at(&self, now: SystemTime) -> bool {
        now >= self.not_before && now < self.chain_not_after
    }
}

impl X509Verifier {
    /// A verifier with the given cache settings.
    pub fn new(settings: CacheSettings) -> Self {
        X509Verifier {
            cache: VerifiedCache::new(settings),
        }
    }

    /// How often the cache served a verification.
    pub(crate) fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Verifies the leaf Envoy forwarded, with intermediates from `xfcc`.
    pub fn verify(
        &self,
        certificate: &str,
        xfcc: Option<&str>,
        bundles: &TrustBundles,
        now: SystemTime,
    ) -> Result<Arc<X509Svid>, IdentityError> {
        self.verify_with_hit(certificate, xfcc, bundles, now)
            .map(|(svid, _)| svid)
    }

    /// [`X509Verifier::verify`], also saying whether the verdict came from
    /// the cache.
    pub(crate) fn verify_with_hit(
        &self,
        certificate: &str,
        xfcc: Option<&str>,
        bundles: &TrustBundles,
        now: SystemTime,
    ) -> Result<(Arc<X509Svid>, bool), IdentityError> {
        if certificate.is_empty() {
            return Err(IdentityError::new(
                Reason::SvidMissing,
                "no client certificate: the connection is not mTLS, or Envoy's ext_authz filter lacks include_peer_certificate: true",
            ));
        }
        if certificate.len() > MAX_CERTIFICATE_BYTES {
            return Err(IdentityError::new(
                Reason::SvidMalformed,
                format!(
                    "source.certificate is {} bytes, more than the {MAX_CERTIFICATE_BYTES} a leaf certificate can take",
                    certificate.len()
                ),
            ));
        }
        self.cache
            .get_or_verify(certificate.as_bytes(), bundles, now, || {
                self.verify_uncached(certificate, xfcc, bundles, now)
            })
    }
}

fn malformed(detail: impl Into<String>) -> IdentityError {
    IdentityError::new(Reason::SvidMalformed, detail)
}

impl X509Verifier {
    /// The full verification, without the cache, in stages: parse the leaf
    /// and its SPIFFE ID, look up the bundle of that ID's own trust domain,
    /// check the leaf's validity window, then build and verify the chain.
    /// Also returns the generation of the bundle that verified it.
    ///
    /// The leaf's own window is checked before the chain (webpki checks
    /// every certificate's window while building the path), so that an
    /// expired leaf is reported with its own date.
    pub fn verify_uncached(
        &self,
        certificate: &str,
        xfcc: Option<&str>,
        bundles: &TrustBundles,
        now: SystemTime,
    ) -> Result<(X509Svid, u64), IdentityError> {
        let leaf = Leaf::parse(certificate)?;
        let bundle = super::bundle_for(bundles, &leaf.id)?;
        leaf.check_window(now)?;
        let chain_not_after = leaf.verify_chain(bundle, xfcc, now)?;
        Ok((
            X509Svid {
                id: leaf.id,
                not_before: leaf.not_before,
                not_after: leaf.not_after,
                chain_not_after,
                certificate: leaf.facts,
            },
            bundle.generation(),
        ))
    }
}

/// A leaf certificate, parsed and checked as a leaf X.509-SVID, not yet
/// verified.
struct Leaf {
    der: CertificateDer<'static>,
    id: SpiffeId,
    not_before: SystemTime,
    not_after: SystemTime,
    validity: x509_parser::certificate::Validity,
    facts: super::CertificateFacts,
}

impl Leaf {
    /// Decodes `source.certificate` and reads its SPIFFE ID, checking the
    /// constraints of a leaf SVID.
    fn parse(certificate: &str) -> Result<Self, IdentityError> {
        let pem = percent::decode(certificate, false)
            .ok_or_else(|| malformed("source.certificate is not valid URL encoding"))?;
        let der = single_certificate(&pem)?;
        let (rest, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| malformed(format!("the certificate is not valid X.509 DER: {e}")))?;
        if !rest.is_empty() {
            return Err(malformed(
                "the certificate has trailing bytes after its DER",
            ));
        }
        let id = spiffe_id_of(&cert)?;
        check_leaf_constraints(&cert)?;
        let validity = cert.validity().clone();
        let facts = super::CertificateFacts::of(&der, &cert);
        drop(cert);
        Ok(Leaf {
            not_before: time::from_asn1_seconds(validity.not_before.timestamp()),
            not_after: time::from_asn1_seconds(validity.not_after.timestamp()),
            validity,
            der,
            id,
            facts,
        })
    }

    /// Whether `now` is inside the leaf's own validity window.
    fn check_window(&self, now: SystemTime) -> Result<(), IdentityError> {
        let id = &self.id;
        if now < self.not_before {
            return Err(IdentityError::new(
                Reason::SvidNotYetValid,
                format!(
                    "the certificate of {id} is not valid before {}",
                    self.validity.not_before
                ),
            ));
        }
        if now > self.not_after {
            return Err(IdentityError::new(
                Reason::SvidExpired,
                format!(
                    "the certificate of {id} expired at {}",
                    self.validity.not_after
                ),
            ));
        }
        Ok(())
    }

    /// Verifies the chain from the leaf to an authority of `bundle`, with
    /// intermediates from `xfcc`; returns the earliest `notAfter` of the
    /// verified chain.
    fn verify_chain(
        &self,
        bundle: &DomainBundle,
        xfcc: Option<&str>,
        now: SystemTime,
    ) -> Result<SystemTime, IdentityError> {
        let id = &self.id;
        let anchors = bundle.x509_anchors_at(now);
        if anchors.is_empty() {
            return Err(IdentityError::new(
                Reason::SvidUntrusted,
                format!(
                    "the bundle of '{}' has no X.509 authority valid now",
                    id.trust_domain()
                ),
            ));
        }
        let intermediates = xfcc
            .map(|header| intermediates_from_xfcc(header, &self.der))
            .unwrap_or_default();
        let end_entity = EndEntityCert::try_from(&self.der).map_err(|e| {
            malformed(format!(
                "the certificate cannot be used for verification: {e:?}"
            ))
        })?;
        let time = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default());
        let path = end_entity
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &anchors,
                &intermediates,
                time,
                AnyExtendedKeyUsage,
                None,
                None,
            )
            .map_err(|e| chain_error(e, id))?;
        let mut chain_not_after = self.not_after.min(bundle.x509_valid_until(now));
        for intermediate in path.intermediate_certificates() {
            let not_after = check_signing_certificate(&intermediate.der(), id)?;
            chain_not_after = chain_not_after.min(not_after);
        }
        Ok(chain_not_after)
    }
}

/// An intermediate of a verified path: it must parse, and (RFC 5280, and
/// the X.509-SVID spec for signing certificates) have a key usage with
/// keyCertSign, which webpki does not check. Returns its `notAfter`.
fn check_signing_certificate(der: &[u8], id: &SpiffeId) -> Result<SystemTime, IdentityError> {
    let untrusted = |detail: String| IdentityError::new(Reason::SvidUntrusted, detail);
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| {
        untrusted(format!(
            "an intermediate certificate in the chain of {id} cannot be parsed: {e}"
        ))
    })?;
    let key_usage = cert.key_usage().map_err(|e| {
        untrusted(format!(
            "an intermediate certificate in the chain of {id} has an invalid key usage: {e}"
        ))
    })?;
    if !key_usage.is_some_and(|ku| ku.value.key_cert_sign()) {
        return Err(untrusted(format!(
            "an intermediate certificate in the chain of {id} ({}) may not sign certificates: its key usage lacks keyCertSign",
            cert.subject()
        )));
    }
    Ok(time::from_asn1_seconds(
        cert.validity().not_after.timestamp(),
    ))
}

/// The one certificate of a PEM document.
fn single_certificate(pem: &[u8]) -> Result<CertificateDer<'static>, IdentityError> {
    let mut certs = CertificateDer::pem_slice_iter(pem);
    let leaf = match certs.next() {
        None => return Err(malformed("source.certificate has no PEM CERTIFICATE block")),
        Some(Err(e)) => {
            return Err(malformed(format!(
                "source.certificate is not valid PEM: {e}"
            )));
        }
        Some(Ok(leaf)) => leaf,
    };
    if certs.next().is_some() {
        return Err(malformed(
            "source.certificate holds more than one certificate; Envoy forwards the leaf alone",
        ));
    }
    Ok(leaf)
}

/// The SPIFFE ID of the one URI SAN.
fn spiffe_id_of(cert: &X509Certificate<'_>) -> Result<SpiffeId, IdentityError> {
    let san = cert.subject_alternative_name().map_err(|e| {
        malformed(format!(
            "the subject alternative name extension is invalid: {e}"
        ))
    })?;
    let mut uris = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        });
    let (first, second) = (uris.next(), uris.next());
    let uri = match (first, second) {
        (Some(uri), None) => uri,
        (None, _) => {
            return Err(IdentityError::new(
                Reason::SvidUriSan,
                "the certificate has no URI SAN; an X.509-SVID has exactly one, its SPIFFE ID",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(IdentityError::new(
                Reason::SvidUriSan,
                format!(
                    "the certificate has {} URI SANs; an X.509-SVID has exactly one",
                    2 + uris.count()
                ),
            ));
        }
    };
    let id = SpiffeId::parse(uri).map_err(|e| {
        IdentityError::new(
            Reason::SvidInvalidId,
            format!("the URI SAN {uri:?} is not a valid SPIFFE ID: {e}"),
        )
    })?;
    // X509-SVID spec, sections 3.1 and 5.2: a leaf's SPIFFE ID has a
    // non-root path; `spiffe://example.org` names the trust domain, which
    // only a signing certificate may carry (go-spiffe refuses it too).
    if id.path().is_empty() {
        return Err(IdentityError::new(
            Reason::SvidInvalidId,
            format!(
                "the URI SAN {uri:?} has no path: it names the trust domain, and a leaf X.509-SVID's SPIFFE ID must name a workload"
            ),
        ));
    }
    Ok(id)
}

/// A leaf SVID is not a CA, and signs with its key but never certificates.
fn check_leaf_constraints(cert: &X509Certificate<'_>) -> Result<(), IdentityError> {
    let constraints = cert
        .basic_constraints()
        .map_err(|e| malformed(format!("the basic constraints extension is invalid: {e}")))?;
    if constraints.is_some_and(|bc| bc.value.ca) {
        return Err(IdentityError::new(
            Reason::SvidCa,
            "the certificate is a CA (cA=true); a leaf X.509-SVID must not be",
        ));
    }
    let key_usage = cert
        .key_usage()
        .map_err(|e| malformed(format!("the key usage extension is invalid: {e}")))?;
    let Some(key_usage) = key_usage else {
        return Err(IdentityError::new(
            Reason::SvidKeyUsage,
            "the certificate has no key usage extension; a leaf X.509-SVID must have one with digitalSignature",
        ));
    };
    let ku = key_usage.value;
    if !ku.digital_signature() {
        return Err(IdentityError::new(
            Reason::SvidKeyUsage,
            "the key usage lacks digitalSignature, which a leaf X.509-SVID must have",
        ));
    }
    if ku.key_cert_sign() || ku.crl_sign() {
        return Err(IdentityError::new(
            Reason::SvidKeyUsage,
            "the key usage allows keyCertSign or cRLSign, which a leaf X.509-SVID must not",
        ));
    }
    Ok(())
}

/// Intermediates from the XFCC element Envoy wrote for this leaf: untrusted,
/// for path building only.
fn intermediates_from_xfcc(
    header: &str,
    leaf: &CertificateDer<'_>,
) -> Vec<CertificateDer<'static>> {
    if header.len() > MAX_XFCC_BYTES {
        return Vec::new();
    }
    let elements = xfcc::parse(header);
    let leaf_hash = hex(&Sha256::digest(leaf.as_ref()));
    let Some(chain) = xfcc::chain_for_leaf(&elements, &leaf_hash) else {
        return Vec::new();
    };
    let Some(pem) = percent::decode(chain, false) else {
        return Vec::new();
    };
    CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .filter(|cert| cert.as_ref() != leaf.as_ref())
        .take(MAX_INTERMEDIATES)
        .collect()
}

fn chain_error(error: webpki::Error, id: &SpiffeId) -> IdentityError {
    let td = id.trust_domain();
    match error {
        webpki::Error::CertExpired { .. } => IdentityError::new(
            Reason::SvidExpired,
            format!("a certificate in the chain of {id} has expired"),
        ),
        webpki::Error::CertNotValidYet { .. } => IdentityError::new(
            Reason::SvidNotYetValid,
            format!("a certificate in the chain of {id} is not valid yet"),
        ),
        webpki::Error::CaUsedAsEndEntity => IdentityError::new(
            Reason::SvidCa,
            "the certificate is a CA; a leaf X.509-SVID must not be",
        ),
        webpki::Error::UnknownIssuer => IdentityError::new(
            Reason::SvidUntrusted,
            format!("the certificate does not chain to the trust bundle of '{td}'"),
        ),
        other => IdentityError::new(
            Reason::SvidUntrusted,
            format!("the chain of {id} does not verify against the bundle of '{td}': {other:?}"),
        ),
    }
}

/// The SPIFFE spec does not restrict extended key usage beyond "should";
/// like go-spiffe, any EKU is accepted, but a malformed extension is not.
struct AnyExtendedKeyUsage;

impl webpki::ExtendedKeyUsageValidator for AnyExtendedKeyUsage {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        for purpose in iter {
            purpose?;
        }
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests;
