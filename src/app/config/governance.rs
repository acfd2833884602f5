//! `governance:`: everything that governs access at run time, in one
//! section: the watched grants, revocations and shadow rules files, the
//! longest grant accepted, the behavioural signals, and the fleet's
//! governance store shared by every celador through Redis (see
//! [`crate::sources::fleet`]).
//!
//! ```yaml
//! governance:
//!   grants: grants.yaml                     # or {path: FILE, optional: true}
//!   grants_max_duration: 24h
//!   revocations: revocations.yaml
//!   shadow_policy: candidate.yaml
//!   signals:
//!     max_identities: 10000
//!   store: rediss://redis.platform:6379/0   # optional: the fleet's store
//!   username: celador                       # an ACL user (optional)
//!   password_file: /var/run/celador-store/password
//!   ca_file: /var/run/celador-store/ca.pem  # verifies a rediss:// server
//!   key_prefix: celador
//!   startup_wait: 5s
//! ```
//!
//! Data flow: read with the rest of the config; [`resolve`] merges the
//! section with the deprecated top-level spellings of its file keys
//! (`grants:`, `revocations:`, ... at the top, as before the section
//! grouped them) into one [`Governance`], which is all the rest of celador
//! reads ([`super::Config::governance`]). Each deprecated key in use is a
//! [`Deprecation`]; a key given in both places is a problem naming both.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::watched::WatchedFile;
use super::{DurationText, SignalsConfig};
use crate::sources::fleet::{ReplicaSettings, StoreSettings};

/// The `governance` section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GovernanceSection {
    /// Time-bound grants: a watched file.
    #[serde(default)]
    pub grants: Option<WatchedFile>,
    /// The longest a grant may last.
    #[serde(default)]
    pub grants_max_duration: Option<DurationText>,
    /// Revoked credentials: a watched file.
    #[serde(default)]
    pub revocations: Option<WatchedFile>,
    /// A candidate rules file evaluated beside `policy`, never enforced.
    #[serde(default)]
    pub shadow_policy: Option<WatchedFile>,
    /// Risk levels security tools reported (`signals.risk`): a watched
    /// file `celador signals serve` writes without a governance store.
    #[serde(default)]
    pub risks: Option<WatchedFile>,
    /// Behavioural signals.
    #[serde(default)]
    pub signals: Option<SignalsConfig>,
    /// `redis://HOST:PORT/DB` or `rediss://HOST:PORT/DB`: the fleet's store.
    #[serde(default)]
    pub store: Option<String>,
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
    #[serde(default)]
    pub key_prefix: Option<String>,
    /// How long start-up waits for the first full sync.
    #[serde(default)]
    pub startup_wait: Option<DurationText>,
    /// How often fleet signals are exchanged.
    #[serde(default)]
    pub signals_interval: Option<DurationText>,
}

/// The keys that once sat at the top of a `celador serve` config and now
/// belong under `governance:` (the injector moves an operator's there).
pub const TOP_LEVEL_KEYS: [&str; 5] = [
    "grants",
    "grants_max_duration",
    "revocations",
    "shadow_policy",
    "signals",
];

/// The deprecated top-level spellings of the section's file keys, as
/// written (`grants:` rather than `governance.grants:`).
#[derive(Debug, Clone, Default)]
pub struct TopLevelKeys {
    /// `grants:`.
    pub grants: Option<WatchedFile>,
    /// `grants_max_duration:`.
    pub grants_max_duration: Option<DurationText>,
    /// `revocations:`.
    pub revocations: Option<WatchedFile>,
    /// `shadow_policy:`.
    pub shadow_policy: Option<WatchedFile>,
    /// `signals:`.
    pub signals: Option<SignalsConfig>,
}

/// A deprecated key in use: it still works, and says what to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deprecation {
    /// The key as written (top level).
    pub old: &'static str,
    /// The key to write instead.
    pub new: &'static str,
}

impl std::fmt::Display for Deprecation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the top-level key `{}` is deprecated: write it as `{}` (it still works)",
            self.old, self.new
        )
    }
}

/// Runtime governance as configured, whichever spelling said it: what
/// every reader of the config uses.
#[derive(Debug, Clone)]
pub struct Governance {
    /// Time-bound grants: a watched file.
    pub grants: Option<WatchedFile>,
    /// The longest a grant may last (from `not_before`, or from when it is
    /// loaded); longer grants are refused at load.
    pub grants_max_duration: DurationText,
    /// Revoked credentials: a watched file.
    pub revocations: Option<WatchedFile>,
    /// A candidate rules file evaluated beside `policy`, never enforced.
    pub shadow_policy: Option<WatchedFile>,
    /// Risk levels: a watched file `celador signals serve` writes.
    pub risks: Option<WatchedFile>,
    /// Behavioural signals.
    pub signals: SignalsConfig,
    /// The fleet's governance store (Redis), merged with the files.
    pub store: Option<StoreConfig>,
}

impl Default for Governance {
    fn default() -> Self {
        Governance {
            grants: None,
            grants_max_duration: DurationText::new(crate::engine::grants::DEFAULT_MAX_DURATION),
            revocations: None,
            shadow_policy: None,
            risks: None,
            signals: SignalsConfig::default(),
            store: None,
        }
    }
}

/// The fleet's governance store: `governance.store` and its options.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `redis://HOST:PORT/DB` or `rediss://HOST:PORT/DB`.
    pub url: String,
    /// An ACL user.
    pub username: Option<String>,
    /// A file holding the password.
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the password.
    pub password_env: Option<String>,
    /// CA certificates (PEM) for a `rediss://` store.
    pub ca_file: Option<PathBuf>,
    /// The keys' prefix (a Redis Cluster hash tag).
    pub key_prefix: String,
    /// How long start-up waits for the first full sync.
    pub startup_wait: DurationText,
    /// How often fleet signals are exchanged (at most 250 ms is the
    /// promise of the error bound); `0` turns fleet signals off.
    pub signals_interval: DurationText,
}

/// What [`resolve`] makes of the section and the top-level keys.
#[derive(Debug, Default)]
pub struct Resolved {
    /// The governance in force.
    pub governance: Governance,
    /// Each deprecated key in use.
    pub deprecations: Vec<Deprecation>,
    /// Every problem, naming its key.
    pub problems: Vec<String>,
}

/// The deprecations and problems found while merging.
#[derive(Default)]
struct Merge {
    deprecations: Vec<Deprecation>,
    problems: Vec<String>,
}

impl Merge {
    /// One key of both spellings, `(old, new)`: the section's, else the
    /// top level's (noted as deprecated); both given is a problem naming
    /// both.
    fn either<T>(
        &mut self,
        new: Option<T>,
        old: Option<T>,
        keys: (&'static str, &'static str),
    ) -> Option<T> {
        let (old_key, new_key) = keys;
        match (new, old) {
            (Some(_), Some(_)) => {
                self.problems.push(format!(
                    "{new_key}: also given as `{old_key}` (the deprecated top-level spelling); keep only `{new_key}`"
                ));
                None
            }
            (new @ Some(_), None) => new,
            (None, old @ Some(_)) => {
                self.deprecations.push(Deprecation {
                    old: old_key,
                    new: new_key,
                });
                old
            }
            (None, None) => None,
        }
    }
}

const MAX_DURATION_KEYS: (&str, &str) = ("grants_max_duration", "governance.grants_max_duration");

/// Merges the `governance` section with the deprecated top-level keys.
pub fn resolve(section: Option<GovernanceSection>, top: TopLevelKeys) -> Resolved {
    let mut section = section.unwrap_or_default();
    let mut merge = Merge::default();
    let grants = merge.either(
        section.grants.take(),
        top.grants,
        ("grants", "governance.grants"),
    );
    let written = match section.grants_max_duration {
        Some(_) => MAX_DURATION_KEYS.1,
        None => MAX_DURATION_KEYS.0,
    };
    let new = section.grants_max_duration.take();
    let grants_max_duration = merge.either(new, top.grants_max_duration, MAX_DURATION_KEYS);
    if let Some(problem) = grants_max_duration.as_ref().and_then(DurationText::problem) {
        merge.problems.push(format!("{written}: {problem}"));
    }
    let new = section.revocations.take();
    let revocations = merge.either(
        new,
        top.revocations,
        ("revocations", "governance.revocations"),
    );
    let new = section.shadow_policy.take();
    let shadow_keys = ("shadow_policy", "governance.shadow_policy");
    let shadow_policy = merge.either(new, top.shadow_policy, shadow_keys);
    let risks = section.risks.take();
    let new = section.signals.take();
    let signals = merge.either(new, top.signals, ("signals", "governance.signals"));
    let store = store_of(section, &mut merge.problems);
    if let Some(store) = &store {
        store.problems(&mut merge.problems);
    }
    let defaults = Governance::default();
    Resolved {
        governance: Governance {
            grants,
            grants_max_duration: grants_max_duration.unwrap_or(defaults.grants_max_duration),
            revocations,
            shadow_policy,
            risks,
            signals: signals.unwrap_or_default(),
            store,
        },
        deprecations: merge.deprecations,
        problems: merge.problems,
    }
}

/// The store the section's `store` names, with its options; options
/// without a store are problems, naming each.
fn store_of(options: GovernanceSection, problems: &mut Vec<String>) -> Option<StoreConfig> {
    let Some(url) = options.store else {
        let given = [
            ("username", options.username.is_some()),
            ("password_file", options.password_file.is_some()),
            ("password_env", options.password_env.is_some()),
            ("ca_file", options.ca_file.is_some()),
            ("key_prefix", options.key_prefix.is_some()),
            ("startup_wait", options.startup_wait.is_some()),
            ("signals_interval", options.signals_interval.is_some()),
        ];
        for (key, _) in given.iter().filter(|(_, given)| *given) {
            problems.push(format!(
                "governance.{key}: an option of the governance store, and governance.store names none"
            ));
        }
        return None;
    };
    Some(StoreConfig {
        url,
        username: options.username,
        password_file: options.password_file,
        password_env: options.password_env,
        ca_file: options.ca_file,
        key_prefix: options.key_prefix.unwrap_or_else(|| "celador".into()),
        startup_wait: options
            .startup_wait
            .unwrap_or(DurationText::new(Duration::from_secs(5))),
        signals_interval: options
            .signals_interval
            .unwrap_or(DurationText::new(Duration::from_millis(250))),
    })
}

impl StoreConfig {
    /// Every problem, naming its key.
    pub fn problems(&self, problems: &mut Vec<String>) {
        if !(self.url.starts_with("redis://") || self.url.starts_with("rediss://")) {
            problems.push(format!(
                "governance.store: '{}' is not a URL like redis://HOST:6379/0 or rediss://HOST:6379/0",
                crate::sources::fleet::connect::without_credentials(&self.url)
            ));
        }
        if self.password_file.is_some() && self.password_env.is_some() {
            problems.push("governance: give password_file or password_env, not both".into());
        }
        if self.ca_file.is_some() && !self.url.starts_with("rediss://") {
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
        grants_max_duration: Duration,
        resolve: impl Fn(&std::path::Path) -> PathBuf,
    ) -> ReplicaSettings {
        ReplicaSettings {
            store: StoreSettings {
                url: self.url.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::config::{Config, ConfigError};
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/celador/config.yaml"))
    }

    const MINIMAL: &str = "listen: 127.0.0.1:9191\npolicy: policy.yaml\ntrust_domains:\n  example.org:\n    bundle: example.org.pem\n";

    fn file(path: &str, optional: bool) -> Option<WatchedFile> {
        Some(WatchedFile {
            path: path.into(),
            optional,
        })
    }

    #[test]
    fn the_section_holds_the_files_the_signals_and_the_longest_grant_without_a_store() {
        let config = parse(&format!(
            "{MINIMAL}governance:\n  grants: g.yaml\n  grants_max_duration: 2h\n  revocations: {{path: r.yaml, optional: true}}\n  shadow_policy: s.yaml\n  signals:\n    max_identities: 7\n"
        ))
        .unwrap();
        let g = config.governance();
        assert_eq!(g.grants, file("g.yaml", false));
        assert_eq!(g.revocations, file("r.yaml", true));
        assert_eq!(g.shadow_policy, file("s.yaml", false));
        assert_eq!(g.grants_max_duration.0, Duration::from_secs(7200));
        assert_eq!(g.signals.max_identities, 7);
        assert!(g.store.is_none());
        assert!(config.deprecations().is_empty());
        let defaults = parse(MINIMAL).unwrap();
        assert_eq!(
            defaults.governance().grants_max_duration.0,
            crate::engine::grants::DEFAULT_MAX_DURATION
        );
        assert_eq!(defaults.governance().signals.max_identities, 10_000);
    }

    #[test]
    fn an_old_form_config_still_loads_and_says_each_key_is_deprecated() {
        let config = parse(&format!(
            "{MINIMAL}grants: g.yaml\ngrants_max_duration: 2h\nrevocations: r.yaml\nshadow_policy: s.yaml\nsignals:\n  max_identities: 7\ngovernance:\n  store: redis://127.0.0.1:6379/0\n"
        ))
        .unwrap();
        let g = config.governance();
        assert_eq!(g.grants, file("g.yaml", false));
        assert_eq!(g.revocations, file("r.yaml", false));
        assert_eq!(g.shadow_policy, file("s.yaml", false));
        assert_eq!(g.grants_max_duration.0, Duration::from_secs(7200));
        assert_eq!(g.signals.max_identities, 7);
        assert_eq!(
            g.store.as_ref().map(|s| s.url.as_str()),
            Some("redis://127.0.0.1:6379/0")
        );
        let said: Vec<String> = config
            .deprecations()
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(said.len(), 5, "{said:?}");
        for key in TOP_LEVEL_KEYS {
            let expected =
                format!("the top-level key `{key}` is deprecated: write it as `governance.{key}`");
            assert!(
                said.iter().any(|s| s.starts_with(&expected)),
                "{expected:?} in {said:?}"
            );
        }
    }

    #[test]
    fn a_key_given_in_both_spellings_is_an_error_naming_both() {
        let err = parse(&format!(
            "{MINIMAL}revocations: a.yaml\nsignals: {{max_identities: 1}}\ngovernance:\n  revocations: b.yaml\n  signals: {{max_identities: 2}}\n"
        ))
        .unwrap_err()
        .to_string();
        for key in ["revocations", "signals"] {
            assert!(
                err.contains(&format!(
                    "governance.{key}: also given as `{key}` (the deprecated top-level spelling); keep only `governance.{key}`"
                )),
                "{err}"
            );
        }
    }

    #[test]
    fn the_stores_options_need_the_store_and_bad_values_name_their_key() {
        let err = parse(&format!(
            "{MINIMAL}governance:\n  grants: g.yaml\n  key_prefix: x\n  password_env: P\n"
        ))
        .unwrap_err()
        .to_string();
        for key in ["key_prefix", "password_env"] {
            assert!(
                err.contains(&format!(
                    "governance.{key}: an option of the governance store, and governance.store names none"
                )),
                "{err}"
            );
        }
        let err = parse(&format!(
            "{MINIMAL}governance:\n  store: http://x\n  grants_max_duration: 1 day\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("governance.store: 'http://x' is not a URL"),
            "{err}"
        );
        assert!(
            err.contains("governance.grants_max_duration: '1 day'"),
            "{err}"
        );
        let err = parse(&format!("{MINIMAL}grants_max_duration: 1 day\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("config.yaml: grants_max_duration: '1 day'"),
            "{err}"
        );
        let err = parse(&format!("{MINIMAL}governance:\n  grant: g.yaml\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `grant`"), "{err}");
    }
}
