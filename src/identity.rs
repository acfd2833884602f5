//! The caller's verified identity.
//!
//! Data flow: [`crate::attributes`] hands the credentials Envoy forwarded to
//! the verifiers here; what comes out is an [`Identity`] that the policy
//! context exposes as `source`, or an [`IdentityError`] that ends the check
//! with a 401 and a stable [`Reason`]. Nothing here reads a principal string,
//! a DNS SAN, a subject CN or an identity header: only certificates verified
//! against the bundle of the SPIFFE ID's own trust domain.

pub mod bundle;
pub mod jwt;
pub mod spiffe_id;
pub mod x509;
pub mod xfcc;

use std::time::SystemTime;

pub use spiffe_id::SpiffeId;

use crate::reason::Reason;

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
}

/// The verified identities of one request.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The mTLS peer's X.509-SVID.
    pub x509: std::sync::Arc<X509Svid>,
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
    pub fn bundle_unavailable(trust_domain: &str) -> Self {
        IdentityError::new(
            Reason::BundleUnavailable,
            format!(
                "trust domain '{trust_domain}' has no bundle yet: its source has not delivered one"
            ),
        )
    }
}
