//! celador: an Envoy ext_authz sidecar that verifies SPIFFE identities and
//! enforces CEL rules.

pub mod identity;
pub mod percent;
pub mod reason;
