//! Live sources: where the live state comes from.
//!
//! Data flow: each source reads one kind of input and *publishes* it into
//! the [`crate::store::Store`]: [`files`] watches the rules file and bundle
//! files (Kubernetes ConfigMaps and Secrets), [`workload_api`] streams trust
//! bundles from a SPIFFE agent, and [`workload`] reads the pod's own details
//! once at start-up. A source never reaches into the request path, and a
//! bad input keeps the last good state in use.

pub mod files;
pub mod workload;
pub mod workload_api;
