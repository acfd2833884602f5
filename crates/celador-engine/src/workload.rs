//! The workload celador protects, as rules see it (`workload`): its
//! namespace, name, service account, labels and annotations.
//!
//! Data flow: read once at start by `sources::workload` in the celador crate (from the
//! Downward API), then handed to the engine, which only reads it.

use std::collections::HashMap;

/// The workload, as rules see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    /// Its namespace.
    pub namespace: String,
    /// Its pod name.
    pub name: String,
    /// Its service account.
    pub service_account: String,
    /// Its labels.
    pub labels: HashMap<String, String>,
    /// Its annotations.
    pub annotations: HashMap<String, String>,
}
