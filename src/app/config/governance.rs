//! `governance:`: the fleet's governance store, shared by every celador
//! through Redis (see [`crate::sources::fleet`]).
//!
//! ```yaml
//! governance:
//!   store: rediss://redis.platform:6379/0
//!   username: celador                       # an ACL user (optional)
//!   password_file: /var/run/celador-store/password
//!   ca_file: /var/run/celador-store/ca.pem  # verifies a rediss:// server
//!   key_prefix: celador
//!   startup_wait: 5s
//! ```

use std::path::PathBuf;

use serde::Deserialize;

use super::DurationText;
use crate::sources::fleet::{ReplicaSettings, StoreSettings};

/// The `governance` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GovernanceConfig {
    /// `redis://HOST:PORT/DB` or `rediss://HOST:PORT/DB`.
    pub store: String,
    /// An ACL user.
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// CA certificates (PEM) for a `rediss://` store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The keys' prefix (a Redis Cluster hash tag).
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// How long start-up waits for the first full sync.
    #[serde(default = "default_startup_wait")]
    pub startup_wait: DurationText,
    /// How often fleet signals are exchanged (at most 250 ms is the
    /// promise of the error bound); `0` turns fleet signals off.
    #[serde(default = "default_signals_interval")]
    pub signals_interval: DurationText,
}

fn default_signals_interval() -> DurationText {
    DurationText::new(std::time::Duration::from_millis(250))
}

fn default_key_prefix() -> String {
    "celador".into()
}

fn default_startup_wait() -> DurationText {
    DurationText::new(std::time::Duration::from_secs(5))
}

impl GovernanceConfig {
    /// Every problem, naming its key.
    pub fn problems(&self, problems: &mut Vec<String>) {
        if !(self.store.starts_with("redis://") || self.store.starts_with("rediss://")) {
            problems.push(format!(
                "governance.store: '{}' is not a URL like redis://HOST:6379/0 or rediss://HOST:6379/0",
                crate::sources::fleet::connect::without_credentials(&self.store)
            ));
        }
        if self.password_file.is_some() && self.password_env.is_some() {
            problems.push("governance: give password_file or password_env, not both".into());
        }
        if self.ca_file.is_some() && !self.store.starts_with("rediss://") {
            problems.push("governance.ca_file: a CA file verifies a rediss:// store".into());
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(['{', '}']) {
            problems.push("governance.key_prefix: a non-empty name without braces".into());
        }
        if let Some(problem) = self.startup_wait.problem() {
            problems.push(format!("governance.startup_wait: {problem}"));
        }
        if let Some(problem) = self.signals_interval.problem() {
            problems.push(format!("governance.signals_interval: {problem}"));
        }
    }

    /// The replica's settings; paths resolved by `resolve`.
    pub fn replica(
        &self,
        grants_max_duration: std::time::Duration,
        resolve: impl Fn(&std::path::Path) -> PathBuf,
    ) -> ReplicaSettings {
        ReplicaSettings {
            store: StoreSettings {
                url: self.store.clone(),
                username: self.username.clone(),
                password_file: self.password_file.as_deref().map(&resolve),
                password_env: self.password_env.clone(),
                ca_file: self.ca_file.as_deref().map(&resolve),
                key_prefix: self.key_prefix.clone(),
            },
            startup_wait: self.startup_wait.0,
            signals_interval: self.signals_interval.0,
            grants_max_duration,
        }
    }
}
