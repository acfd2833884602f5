//! celador: an Envoy ext_authz sidecar that verifies SPIFFE identities and
//! enforces CEL rules.
//!
//! The data flow of one check, each stage in its own module:
//!
//! ```text
//! Envoy CheckRequest (gRPC)          server     the only place, with attributes, that sees protobuf
//!   -> Attributes                    attributes a typed view borrowing the request
//!   -> X509Svid / IdentityError      identity   verified against the bundle of the ID's own trust domain
//!   -> Activation                    policy     identity + attributes + workload + clock, lazily
//!   -> Verdict                       policy     deny rules, then allow rules
//!   -> Decision                      decision   + one audit record (audit)
//!   -> CheckResponse / Status        response   401/403 with a reason, or OK with upstream headers
//! ```
//!
//! Two lifecycles are kept apart: static settings ([`config`]) are read once
//! and a bad one stops startup with exit code 64; live inputs (the policy,
//! the trust bundles) are immutable snapshots that the [`decision`] module
//! swaps atomically, each with a generation that caches key on.

pub mod admin;
pub mod app;
pub mod attributes;
pub mod audit;
pub mod cli;
pub mod config;
pub mod decision;
pub mod explain;
pub mod identity;
pub mod metrics;
pub mod percent;
pub mod policy;
pub mod reason;
pub mod reload;
pub mod response;
pub mod server;
pub mod suite;
pub mod telemetry;
#[cfg(test)]
mod testing;
pub mod workload;
pub mod yaml;
