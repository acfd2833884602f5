//! celador: an Envoy ext_authz sidecar that verifies SPIFFE identities and
//! enforces CEL rules.
//!
//! The data flow of one check, and the module that owns each stage:
//!
//! ```text
//! Envoy CheckRequest (gRPC)
//!   edge::server      tonic's HTTP/2 server: Check and gRPC health
//!   edge::service     the Check method: arrival, deadline, admission (edge::admission), decoding
//!   edge::request     protobuf -> engine::Attributes ........ the only protobuf, with edge::response
//!   store             one atomic load of the current engine::Snapshot (rules, bundles, generations)
//!   engine            Attributes + Snapshot + now -> Decision (pure: no I/O, no logging, no protobuf)
//!     identity        X.509-SVID / JWT-SVID verified against the bundle of the ID's own trust domain
//!     policy          identity + request + workload + clock, lazily; deny rules, then allow rules
//!   edge::response    Decision -> CheckResponse (OK, or a denied HTTP response with a reason)
//!   edge::audit       Decision -> one audit record
//!
//! sources             watched files, the Workload API, the Downward API -> publish into the store
//! authoring           celador test / eval and the rule reference, built on the engine
//! app, cli            config -> engine and edge settings at start-up; celador check; the command line
//! inject              `celador inject`: the admission webhook that adds celador to pods
//! ```
//!
//! Dependencies point one way, down this list: `cli` -> `inject` -> `app` ->
//! `authoring` -> `edge` | `sources` -> `store` | `metrics` -> `engine` (the
//! store and the metrics are side by side: the store counts nothing).
//! The engine is its own crate (`crates/celador-engine`, re-exported here as
//! [`engine`]), so the compiler keeps it from depending on anything above
//! it; `tests/layering.rs` fails when a module of this crate imports against
//! the rule, or when the engine crate gains a protocol or runtime dependency.
//!
//! Two lifecycles are kept apart: static settings ([`app::config`]) are
//! read once and a bad one stops startup with exit code 64; live inputs
//! (the rules, the trust bundles) are immutable snapshots that the
//! [`store`] swaps atomically, each with a generation that caches key on.

pub mod app;
pub mod authoring;
pub mod cli;
pub mod edge;
/// The decision, protocol-free: the celador-engine crate (`crates/celador-engine`).
pub use celador_engine as engine;
pub mod inject;
pub mod metrics;
pub mod sources;
pub mod ssf;
pub mod store;
#[cfg(test)]
mod testing;
