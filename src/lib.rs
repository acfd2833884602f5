//! celador: an Envoy ext_authz sidecar that verifies SPIFFE identities and
//! enforces CEL rules.

pub mod attributes;
pub mod identity;
pub mod percent;
pub mod policy;
pub mod reason;
pub mod workload;
pub mod yaml;
