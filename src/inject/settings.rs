//! The injector's settings file (`celador inject --config`), rendered by
//! the Helm chart into a ConfigMap.
//!
//! Data flow: read once at start; every problem is reported at once and
//! the injector does not start (exit 64). The sidecar config built from the
//! settings is validated here too, as `celador serve` will read it, so a
//! bad value stops the injector rather than every pod it would inject.
//!
//! ```yaml
//! image: ghcr.io/celador-dev/celador:0.1.0
//! rules: {config_map: celador-rules, key: policy.yaml}
//! governance: {config_map: celador-governance}   # optional: grants.yaml, revocations.yaml
//! trust_domain: cluster.local
//! bundle: {config_map: {name: istio-ca-root-cert, key: root-cert.pem}}
//! excluded_namespaces: [kube-system, celador-system]
//! ```

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::app::config::{ConfigError, LogConfig};
use crate::engine::identity::spiffe_id::validate_trust_domain;
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::collections::BTreeMap;

/// The whole settings file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The sidecar's image, with its tag or `@sha256:` digest.
    pub image: String,
    /// The sidecar's `imagePullPolicy`.
    #[serde(default = "default_pull_policy")]
    pub image_pull_policy: String,
    /// The default rules ConfigMap; a pod's `celador.io/rules` annotation
    /// names another in its namespace.
    pub rules: RulesSettings,
    /// The default governance ConfigMap (grants and revocations), mounted
    /// optional; a pod's `celador.io/governance` annotation names another.
    #[serde(default)]
    pub governance: GovernanceSettings,
    /// The trust domain whose SVIDs the sidecar accepts.
    pub trust_domain: String,
    /// Where that trust domain's bundle comes from.
    pub bundle: BundleSource,
    /// Namespaces never injected, whatever their labels say.
    #[serde(default)]
    pub excluded_namespaces: Vec<String>,
    /// The sidecar's resource requests and limits, as in a pod spec.
    #[serde(default = "default_resources")]
    pub resources: Value,
    /// The sidecar's ports.
    #[serde(default)]
    pub ports: Ports,
    /// The user and group the sidecar runs as (never root).
    #[serde(default = "default_run_as")]
    pub run_as_user: i64,
    /// Fields merged over the sidecar's locked-down `securityContext` (a
    /// `null` removes one); nothing that weakens it is taken.
    #[serde(default)]
    pub security_context: Map<String, Value>,
    /// More `celador serve` config keys for the sidecar (for example
    /// `cache`, `audit`, `identity`, `governance`); the keys the injector
    /// sets itself are refused here. `governance` is merged over the
    /// injector's (the namespace's grants and revocations files), and a
    /// deprecated top-level governance key (`revocations`, ...) is moved
    /// under it.
    #[serde(default)]
    pub config: Map<String, Value>,
    /// The injector's own logs.
    #[serde(default)]
    pub log: LogConfig,
    /// The pods are in an Istio mesh: the sidecar's probe ports are kept
    /// out of Istio's traffic capture (see [`super::istio`]).
    #[serde(default)]
    pub istio: bool,
}

/// The rules ConfigMap.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesSettings {
    /// Its name, in the pod's namespace.
    pub config_map: String,
    /// The key holding the rules file.
    #[serde(default = "default_rules_key")]
    pub key: String,
}

/// The governance ConfigMap: `grants.yaml` and `revocations.yaml`, each
/// optional (a namespace without the ConfigMap has neither).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GovernanceSettings {
    /// Its name, in the pod's namespace.
    #[serde(default = "default_governance_config_map")]
    pub config_map: String,
    /// A key of a Secret in the pod's namespace holding the governance
    /// store's password, given to the sidecar in an environment variable
    /// (needs `config.governance`).
    #[serde(default)]
    pub store_password: Option<KeyRef>,
    /// The CA certificates (PEM) that verify a `rediss://` store: a key of
    /// a ConfigMap or Secret in the pod's namespace, mounted.
    #[serde(default)]
    pub store_ca: Option<CaSource>,
}

/// Where the governance store's CA certificates come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CaSource {
    /// A key of a ConfigMap in the pod's namespace.
    ConfigMap(KeyRef),
    /// A key of a Secret in the pod's namespace.
    Secret(KeyRef),
}

impl Default for GovernanceSettings {
    fn default() -> Self {
        GovernanceSettings {
            config_map: default_governance_config_map(),
            store_password: None,
            store_ca: None,
        }
    }
}

fn default_governance_config_map() -> String {
    "celador-governance".into()
}

/// Where the sidecar's trust bundle comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum BundleSource {
    /// A key of a ConfigMap in the pod's namespace (Istio's
    /// `istio-ca-root-cert` with `root-cert.pem`, for example).
    ConfigMap(KeyRef),
    /// A key of a Secret in the pod's namespace.
    Secret(KeyRef),
    /// The SPIFFE Workload API socket, mounted by the SPIFFE CSI driver.
    WorkloadApi(WorkloadApiSource),
}

/// A key of a ConfigMap or Secret.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRef {
    /// The object's name.
    pub name: String,
    /// The key.
    pub key: String,
}

/// The SPIFFE CSI driver's volume.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadApiSource {
    /// The CSI driver's name.
    #[serde(default = "default_csi_driver")]
    pub csi_driver: String,
    /// The socket's file name inside the mounted directory.
    #[serde(default = "default_socket")]
    pub socket: String,
}

/// The sidecar's ports.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ports {
    /// ext_authz gRPC, on the loopback only: Envoy in the same pod calls it.
    #[serde(default = "default_grpc_port")]
    pub grpc: u16,
    /// The gRPC health service on the pod's IP, for the kubelet's probes.
    #[serde(default = "default_health_port")]
    pub health: u16,
    /// `/healthz`, `/readyz` and `/metrics` on the pod's IP.
    #[serde(default = "default_admin_port")]
    pub admin: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            grpc: default_grpc_port(),
            health: default_health_port(),
            admin: default_admin_port(),
        }
    }
}

fn default_pull_policy() -> String {
    "IfNotPresent".into()
}
fn default_rules_key() -> String {
    "policy.yaml".into()
}
fn default_csi_driver() -> String {
    "csi.spiffe.io".into()
}
fn default_socket() -> String {
    "spire-agent.sock".into()
}
fn default_grpc_port() -> u16 {
    9191
}
fn default_health_port() -> u16 {
    9192
}
fn default_admin_port() -> u16 {
    9901
}
fn default_run_as() -> i64 {
    65532
}
fn default_resources() -> Value {
    serde_json::json!({
        "requests": {"cpu": "10m", "memory": "24Mi"},
        "limits": {"memory": "64Mi"}
    })
}

/// Config keys the injector writes itself, refused in `config`.
pub const RESERVED_CONFIG_KEYS: &[&str] = &[
    "listen",
    "health_listen",
    "admin",
    "policy",
    "trust_domains",
    "workload_api",
    "workload",
];

/// Why the settings cannot be used: the same kinds of problem as a
/// `celador serve` config's, worded the same way.
pub type SettingsError = ConfigError;

impl Settings {
    /// Reads and validates the settings file at `path`.
    pub fn load(path: &Path) -> Result<Settings, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Settings::parse(&text, path)
    }

    /// Parses and validates `text`, naming `path` in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Settings, SettingsError> {
        let settings: Settings = crate::engine::yaml::from_str(text, path)?;
        let problems = settings.problems();
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.image.trim().is_empty() {
            problems.push("image: is empty".to_owned());
        }
        if !["Always", "IfNotPresent", "Never"].contains(&self.image_pull_policy.as_str()) {
            problems.push(format!(
                "image_pull_policy: '{}' is not Always, IfNotPresent or Never",
                self.image_pull_policy
            ));
        }
        if let Err(e) = dns_subdomain(&self.rules.config_map) {
            problems.push(format!("rules.config_map: {e}"));
        }
        if let Err(e) = config_key(&self.rules.key) {
            problems.push(format!("rules.key: {e}"));
        }
        self.governance_problems(&mut problems);
        if let Err(e) = validate_trust_domain(&self.trust_domain) {
            problems.push(format!(
                "trust_domain: '{}' is not a trust domain: {e}",
                self.trust_domain
            ));
        }
        self.source_problems(&mut problems);
        if self.run_as_user <= 0 {
            problems.push(format!(
                "run_as_user: {} would run the sidecar as root; use an unprivileged id like 65532",
                self.run_as_user
            ));
        }
        if let Err(e) = resources(&self.resources) {
            problems.push(format!("resources: {e}"));
        }
        if let Err(e) = super::security::merged(self.run_as_user, &self.security_context) {
            problems.push(format!("security_context: {e}"));
        }
        for key in self.config.keys() {
            if RESERVED_CONFIG_KEYS.contains(&key.as_str()) {
                problems.push(format!(
                    "config.{key}: is set by the injector itself (from rules, trust_domain, bundle and ports)"
                ));
            }
        }
        self.config_governance_problems(&mut problems);
        problems
    }

    /// `config.governance` is a mapping (or empty), and no key is given
    /// both there and at the top level: either would otherwise drop the
    /// namespace's governance files or one of the two spellings silently.
    fn config_governance_problems(&self, problems: &mut Vec<String>) {
        let section = match self.config.get("governance") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Object(section)) => Some(section),
            Some(other) => {
                problems.push(format!(
                    "config.governance: a mapping of governance keys, not {other}"
                ));
                None
            }
        };
        for key in self.deprecated_config_keys() {
            if section.is_some_and(|s| s.contains_key(key)) {
                problems.push(format!(
                    "config.{key} and config.governance.{key}: the same key twice; keep config.governance.{key}"
                ));
            }
        }
    }
}

impl Settings {
    /// The deprecated top-level governance keys of `config` (`revocations`,
    /// ...), which the injector moves under `governance`.
    pub fn deprecated_config_keys(&self) -> impl Iterator<Item = &str> {
        self.config
            .keys()
            .map(String::as_str)
            .filter(|key| crate::app::config::governance::TOP_LEVEL_KEYS.contains(key))
    }

    fn governance_problems(&self, problems: &mut Vec<String>) {
        let g = &self.governance;
        if let Err(e) = dns_subdomain(&g.config_map) {
            problems.push(format!("governance.config_map: {e}"));
        }
        let store = |r: &KeyRef, what: &str, problems: &mut Vec<String>| {
            if let Err(e) = dns_subdomain(&r.name) {
                problems.push(format!("governance.{what}: name: {e}"));
            }
            if let Err(e) = config_key(&r.key) {
                problems.push(format!("governance.{what}: key: {e}"));
            }
            let store = self.config.get("governance").and_then(|g| g.get("store"));
            if store.is_none() {
                problems.push(format!(
                    "governance.{what}: is for a governance store, and config.governance names none"
                ));
            }
        };
        if let Some(r) = &g.store_password {
            store(r, "store_password", problems);
        }
        if let Some(CaSource::ConfigMap(r) | CaSource::Secret(r)) = &g.store_ca {
            store(r, "store_ca", problems);
        }
    }

    fn source_problems(&self, problems: &mut Vec<String>) {
        match &self.bundle {
            BundleSource::ConfigMap(r) | BundleSource::Secret(r) => {
                if let Err(e) = dns_subdomain(&r.name) {
                    problems.push(format!("bundle: name: {e}"));
                }
                if let Err(e) = config_key(&r.key) {
                    problems.push(format!("bundle: key: {e}"));
                }
            }
            BundleSource::WorkloadApi(w) => {
                if let Err(e) = config_key(&w.socket) {
                    problems.push(format!("bundle.workload_api.socket: {e}"));
                }
            }
        }
        let ports = [self.ports.grpc, self.ports.health, self.ports.admin];
        if ports.contains(&0)
            || ports
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                < 3
        {
            problems.push(format!(
                "ports: grpc {}, health {} and admin {} must be three different ports, none 0",
                self.ports.grpc, self.ports.health, self.ports.admin
            ));
        }
    }
}

/// Checks a Kubernetes object name (a DNS-1123 subdomain).
pub fn dns_subdomain(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{name}' is not a Kubernetes object name (lowercase letters, digits, '-' and '.', at most 253)"
        ))
    }
}

/// Checks a ConfigMap or Secret key, which becomes a file name.
fn config_key(key: &str) -> Result<(), String> {
    let ok = !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{key}' is not a ConfigMap key (letters, digits, '-', '_' and '.')"
        ))
    }
}

/// Reads `resources` as a pod spec writes them: `requests` and `limits`,
/// each a map of quantities (numbers are taken as written).
pub fn resources(value: &Value) -> Result<ResourceRequirements, String> {
    let Value::Object(map) = value else {
        return Err("expected a map with requests and limits".to_owned());
    };
    let mut out = ResourceRequirements::default();
    for (key, value) in map {
        let quantities = quantities(key, value)?;
        match key.as_str() {
            "requests" => out.requests = Some(quantities),
            "limits" => out.limits = Some(quantities),
            other => return Err(format!("'{other}' is not requests or limits")),
        }
    }
    Ok(out)
}

fn quantities(key: &str, value: &Value) -> Result<BTreeMap<String, Quantity>, String> {
    let Value::Object(map) = value else {
        return Err(format!(
            "{key}: expected a map like {{cpu: 10m, memory: 24Mi}}"
        ));
    };
    let mut out = BTreeMap::new();
    for (resource, quantity) in map {
        let text = match quantity {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => return Err(format!("{key}.{resource}: {other} is not a quantity")),
        };
        if !is_quantity(&text) {
            return Err(format!(
                "{key}.{resource}: '{text}' is not a quantity like 10m, 0.5 or 64Mi"
            ));
        }
        out.insert(resource.clone(), Quantity(text));
    }
    Ok(out)
}

/// Kubernetes' quantity syntax: a decimal number and an optional suffix.
fn is_quantity(text: &str) -> bool {
    let number_end = text
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || *c == '.' || (*i == 0 && (*c == '+' || *c == '-'))))
        .map_or(text.len(), |(i, _)| i);
    let (number, suffix) = text.split_at(number_end);
    let digits = number.trim_start_matches(['+', '-']);
    let number_ok = !digits.is_empty()
        && digits.chars().filter(|c| *c == '.').count() <= 1
        && digits.chars().any(|c| c.is_ascii_digit());
    let suffix_ok = matches!(
        suffix,
        "" | "n"
            | "u"
            | "m"
            | "k"
            | "M"
            | "G"
            | "T"
            | "P"
            | "E"
            | "Ki"
            | "Mi"
            | "Gi"
            | "Ti"
            | "Pi"
            | "Ei"
    ) || (suffix.len() > 1
        && (suffix.starts_with('e') || suffix.starts_with('E'))
        && suffix.get(1..).is_some_and(|e| {
            e.trim_start_matches(['+', '-'])
                .chars()
                .all(|c| c.is_ascii_digit())
        }));
    number_ok && suffix_ok
}
