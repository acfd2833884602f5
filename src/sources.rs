//! Live sources: where the live state comes from.
//!
//! Data flow: each source reads one kind of input and *publishes* it into
//! the [`crate::store::Store`]: [`files`] watches the rules file and bundle
//! files (Kubernetes ConfigMaps and Secrets), [`workload_api`] streams trust
//! bundles from a SPIFFE agent, and [`downward_api`] reads the pod's own details
//! once at start-up. A source never reaches into the request path, and a
//! bad input keeps the last good state in use.

pub mod background;
pub mod downward_api;
pub mod files;
pub mod fleet;
pub mod workload_api;

use std::time::SystemTime;

use crate::engine::identity::bundle::{Authority, authorities_not_valid_at};

/// Logs the X.509 authorities of a bundle just loaded that are outside their
/// own validity window: they are kept, but vouch for nothing until (or
/// after) it.
pub fn warn_on_invalid_authorities(trust_domain: &str, authorities: &[Authority]) {
    let invalid = authorities_not_valid_at(authorities, SystemTime::now());
    if !invalid.is_empty() {
        tracing::warn!(
            trust_domain,
            authorities = %invalid.join(", "),
            "X.509 authorities outside their validity window are not trusted"
        );
    }
}
