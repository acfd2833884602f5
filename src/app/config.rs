//! Static settings: the config file given to `celador serve --config`.
//!
//! Data flow: read once at start, before anything listens. Every problem is
//! reported at once with what to fix, and the process exits with code 64
//! (EX_USAGE). Paths in the file are relative to the file's directory, so a
//! config and its rules and bundles can be mounted together anywhere.
//!
//! ```yaml
//! listen: 127.0.0.1:9191
//! policy: policy.yaml
//! trust_domains:
//!   example.org:
//!     bundle: example.org.pem
//! ```

pub mod duration;
pub mod governance;
pub mod watched;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::edge::response::HeaderValueSource;
use crate::engine::identity::Requirement;
use crate::engine::identity::spiffe_id::validate_trust_domain;
use crate::engine::request_path::PathMode;
use crate::sources::downward_api::WorkloadSettings;

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The gRPC address Envoy's ext_authz filter calls.
    pub listen: String,
    /// The rules file.
    pub policy: PathBuf,
    /// The trust domains whose SVIDs are accepted, each with its bundle's
    /// source.
    pub trust_domains: BTreeMap<String, TrustDomainConfig>,
    /// Where the SPIFFE Workload API is, for trust domains that use it.
    #[serde(default)]
    pub workload_api: WorkloadApiConfig,
    /// An HTTP address for `/healthz`, `/readyz` and `/metrics`.
    #[serde(default)]
    pub admin: Option<String>,
    /// A second gRPC address that serves only the gRPC health service, for
    /// the kubelet's `grpc` probes: they call the pod's IP, while `listen`
    /// stays on the loopback where only the pod's own Envoy reaches it.
    #[serde(default)]
    pub health_listen: Option<String>,
    /// Which credentials requests must present, and how JWT-SVIDs are read.
    #[serde(default)]
    pub identity: IdentityConfig,
    /// Headers set on allowed requests for the upstream, by name; client-sent
    /// copies are replaced.
    #[serde(default)]
    pub upstream_headers: BTreeMap<String, HeaderValueSource>,
    /// Where the workload's details come from.
    #[serde(default)]
    pub workload: WorkloadSettings,
    /// How requests are read before any rule.
    #[serde(default)]
    pub request: RequestConfig,
    /// What deny answers tell the caller.
    #[serde(default)]
    pub answers: AnswersConfig,
    /// What audit records include.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Diagnostic logs.
    #[serde(default)]
    pub log: LogConfig,
    /// Caches.
    #[serde(default)]
    pub cache: CacheConfig,
    /// Runtime governance as written: the `governance` section. Read
    /// [`Config::governance`], which merges it with the deprecated
    /// top-level keys.
    #[serde(default, rename = "governance")]
    governance_section: Option<governance::GovernanceSection>,
    /// Deprecated: `governance.grants` at the top level.
    #[serde(default, rename = "grants")]
    top_level_grants: Option<watched::WatchedFile>,
    /// Deprecated: `governance.grants_max_duration` at the top level.
    #[serde(default, rename = "grants_max_duration")]
    top_level_grants_max_duration: Option<DurationText>,
    /// Deprecated: `governance.revocations` at the top level.
    #[serde(default, rename = "revocations")]
    top_level_revocations: Option<watched::WatchedFile>,
    /// Deprecated: `governance.shadow_policy` at the top level.
    #[serde(default, rename = "shadow_policy")]
    top_level_shadow_policy: Option<watched::WatchedFile>,
    /// Deprecated: `governance.signals` at the top level.
    #[serde(default, rename = "signals")]
    top_level_signals: Option<SignalsConfig>,
    /// The governance in force, from whichever spelling said it.
    #[serde(skip)]
    governance: governance::Governance,
    /// The deprecated keys in use.
    #[serde(skip)]
    deprecations: Vec<governance::Deprecation>,
    /// Tracing: a span per check, exported over OTLP; off without it.
    #[serde(default)]
    pub tracing: Option<TracingConfig>,
    /// Runtime worker threads: 0 (the default) for one per CPU the process
    /// may run on; 1 for a current-thread runtime.
    #[serde(default)]
    pub worker_threads: usize,
    /// How long in-flight checks may take to finish after SIGTERM/SIGINT.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: DurationText,
    /// Bounds on the checks read and decided at once, and on how long one
    /// may wait.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The directory relative paths are resolved against (the config file's).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// One trust domain and where its bundle comes from: a file, or the
/// Workload API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustDomainConfig {
    /// A bundle file, watched: PEM root certificates, or a SPIFFE bundle
    /// document (JSON).
    #[serde(default)]
    pub bundle: Option<PathBuf>,
    /// Whether the bundle comes from the SPIFFE Workload API.
    #[serde(default)]
    pub workload_api: bool,
}

/// Where the SPIFFE Workload API is.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadApiConfig {
    /// `unix:///path/to/agent.sock` or `tcp://host:port`; by default the
    /// `SPIFFE_ENDPOINT_SOCKET` environment variable.
    #[serde(default)]
    pub endpoint: Option<String>,
}

/// Which credentials requests must present.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// The default requirement; the `celador.identity` context extension
    /// overrides it per route or virtual host.
    #[serde(default)]
    pub require: Requirement,
    /// How JWT-SVIDs are read and judged; needed for any requirement but
    /// `x509`.
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
}

/// How JWT-SVIDs are read and judged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The header carrying the token (`authorization: Bearer ...` by default).
    #[serde(default = "default_jwt_header")]
    pub header: String,
    /// A token's `aud` must contain one of these.
    pub audiences: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(default = "default_leeway")]
    pub leeway: DurationText,
    /// Whether to remove the token header from allowed requests, so the
    /// upstream cannot replay it.
    #[serde(default)]
    pub remove_header: bool,
}

fn default_jwt_header() -> String {
    "authorization".into()
}
fn default_leeway() -> DurationText {
    DurationText::new(Duration::from_secs(30))
}

/// How requests are read before any rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestConfig {
    /// `reject_ambiguous` (the default): rules read the canonical path, and
    /// a path servers resolve differently is denied (`invalid_path`);
    /// `canonical`: the canonical path, nothing denied; `raw`: the path as
    /// sent (unsafe).
    #[serde(default)]
    pub paths: PathMode,
}

/// What deny answers tell the caller.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswersConfig {
    /// Deny bodies also name the deciding rule and what exactly failed (for
    /// development only: the detail describes the configuration, e.g. the
    /// accepted audiences). Off by default: a body carries the reason code
    /// and the request id, and the detail goes to the audit record.
    #[serde(default)]
    pub detail: bool,
}

/// What audit records include.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Request headers whose values are recorded (none by default).
    #[serde(default)]
    pub headers: Vec<String>,
    /// Query parameters whose values may be shown (none by default: a
    /// record, a span or an explanation shows every other value as
    /// `<redacted>`).
    #[serde(default)]
    pub query_params: Vec<String>,
    /// `read` (what the deciding rule read) or `all` (every attribute a
    /// rule could read, for `celador replay`).
    #[serde(default)]
    pub record: crate::edge::trail::RecordMode,
}

/// Diagnostic logging (audit records always go to standard output).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter, e.g. `info` or `celador=debug`.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// `json` or `text`.
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_log_level(),
            format: LogFormat::default(),
        }
    }
}

fn default_log_level() -> String {
    "info".into()
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Human-readable lines.
    Text,
}

/// Cache sizes and lifetimes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// How many verified X.509-SVIDs to keep (0 disables the cache).
    #[serde(default = "default_svid_entries")]
    pub svid_entries: u64,
    /// The longest a verified SVID is reused without verifying it again.
    #[serde(default = "default_svid_max_ttl")]
    pub svid_max_ttl: DurationText,
    /// The longest a decision is reused (`0s` disables the decision cache).
    #[serde(default = "default_decision_ttl")]
    pub decision_ttl: DurationText,
    /// How many decisions to keep at most.
    #[serde(default = "default_decision_entries")]
    pub decision_entries: u64,
    /// How many bytes of decisions to keep at most (estimated).
    #[serde(default = "default_decision_max_bytes")]
    pub decision_max_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            svid_entries: default_svid_entries(),
            svid_max_ttl: default_svid_max_ttl(),
            decision_ttl: default_decision_ttl(),
            decision_entries: default_decision_entries(),
            decision_max_bytes: default_decision_max_bytes(),
        }
    }
}

fn default_decision_ttl() -> DurationText {
    DurationText::new(Duration::from_secs(2))
}
fn default_decision_entries() -> u64 {
    10_000
}
fn default_decision_max_bytes() -> u64 {
    16 << 20
}

/// Where spans go, and how many.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// The OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`.
    pub otlp_endpoint: String,
    /// The share of new traces sampled (0 to 1); a request whose parent
    /// says whether it is sampled follows its parent.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// The `service.name` of the spans.
    #[serde(default = "default_service_name")]
    pub service_name: String,
}

fn default_sample_ratio() -> f64 {
    1.0
}
fn default_service_name() -> String {
    "celador".into()
}

/// Behavioural signals.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalsConfig {
    /// How many identities to count at most; the least recently seen are
    /// dropped past it. 0 counts nothing (every signal reads 0).
    #[serde(default = "default_signals_identities")]
    pub max_identities: usize,
}

impl Default for SignalsConfig {
    fn default() -> Self {
        SignalsConfig {
            max_identities: default_signals_identities(),
        }
    }
}

fn default_signals_identities() -> usize {
    10_000
}

fn default_svid_entries() -> u64 {
    10_000
}
fn default_svid_max_ttl() -> DurationText {
    DurationText::new(Duration::from_secs(300))
}
fn default_shutdown_grace() -> DurationText {
    DurationText::new(Duration::from_secs(15))
}

/// Bounds on the checks read and decided at once (see
/// [`crate::edge::admission::Limits`]); the defaults suit a sidecar limited
/// to 64 MiB.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// The largest `CheckRequest` read, in bytes.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// `CheckRequest` bytes buffered at once across all checks.
    #[serde(default = "default_buffered_bytes")]
    pub buffered_bytes: usize,
    /// Checks being read, decoded or decided at once.
    #[serde(default = "default_checks")]
    pub checks: usize,
    /// The share of its deadline (`grpc-timeout`) a check may wait in
    /// celador before it is denied `overloaded`.
    #[serde(default = "default_deadline_share")]
    pub deadline_share: f64,
    /// The deadline of a check that comes without `grpc-timeout`.
    #[serde(default = "default_deadline")]
    pub default_deadline: DurationText,
    /// HTTP/2 stream flow-control window, in bytes.
    #[serde(default = "default_window")]
    pub stream_window: u32,
    /// HTTP/2 connection flow-control window, in bytes.
    #[serde(default = "default_window")]
    pub connection_window: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_request_bytes: default_max_request_bytes(),
            buffered_bytes: default_buffered_bytes(),
            checks: default_checks(),
            deadline_share: default_deadline_share(),
            default_deadline: default_deadline(),
            stream_window: default_window(),
            connection_window: default_window(),
        }
    }
}

impl LimitsConfig {
    /// The edge's limits.
    pub fn to_limits(&self) -> crate::edge::admission::Limits {
        crate::edge::admission::Limits {
            max_request_bytes: self.max_request_bytes,
            buffered_bytes: self.buffered_bytes,
            checks: self.checks,
            deadline_share: self.deadline_share,
            default_deadline: self.default_deadline.0,
            stream_window: self.stream_window,
            connection_window: self.connection_window,
        }
    }

    fn problems(&self, problems: &mut Vec<String>) {
        if let Some(problem) = self.default_deadline.problem() {
            problems.push(format!("limits.default_deadline: {problem}"));
        }
        if !(self.deadline_share > 0.0 && self.deadline_share <= 1.0) {
            problems.push(format!(
                "limits.deadline_share: {} is not a share above 0 and at most 1",
                self.deadline_share
            ));
        }
        for (key, value) in [
            ("limits.max_request_bytes", self.max_request_bytes),
            ("limits.buffered_bytes", self.buffered_bytes),
            ("limits.checks", self.checks),
        ] {
            if value == 0 {
                problems.push(format!("{key}: must be at least 1"));
            }
        }
        // HTTP/2 allows windows from 65,535 bytes (the initial window) to
        // 2^31 - 1.
        for (key, value) in [
            ("limits.stream_window", self.stream_window),
            ("limits.connection_window", self.connection_window),
        ] {
            if !(65_535..=0x7fff_ffff).contains(&value) {
                problems.push(format!(
                    "{key}: {value} is not an HTTP/2 window from 65535 to 2147483647 bytes"
                ));
            }
        }
    }
}

fn default_max_request_bytes() -> usize {
    crate::edge::admission::Limits::default().max_request_bytes
}
fn default_buffered_bytes() -> usize {
    crate::edge::admission::Limits::default().buffered_bytes
}
fn default_checks() -> usize {
    crate::edge::admission::Limits::default().checks
}
fn default_deadline_share() -> f64 {
    crate::edge::admission::Limits::default().deadline_share
}
fn default_deadline() -> DurationText {
    DurationText::new(crate::edge::admission::Limits::default().default_deadline)
}
fn default_window() -> u32 {
    crate::edge::admission::Limits::default().stream_window
}

/// A duration written as `500ms`, `30s`, `5m` or `1h`. One that does not
/// parse is kept as its problem, so that every bad duration of a config is
/// reported at once, naming its key (see `Config::problems`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationText(pub Duration, Option<String>);

impl DurationText {
    /// A valid duration.
    pub const fn new(duration: Duration) -> Self {
        DurationText(duration, None)
    }

    /// Why the text was not a duration, if it was not.
    pub fn problem(&self) -> Option<&str> {
        self.1.as_deref()
    }
}

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(match parse_duration(&text) {
            Ok(duration) => DurationText::new(duration),
            Err(problem) => DurationText(Duration::ZERO, Some(problem)),
        })
    }
}

/// The log filter `level` (`info`, `celador=debug`, ...). tracing-subscriber
/// panics on some non-ASCII filters (found by fuzzing the config file), so
/// they are refused first, and a panic is caught besides.
pub fn log_filter(level: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    if !level.is_ascii() {
        return Err("a log filter is ASCII: target names and levels".into());
    }
    std::panic::catch_unwind(|| tracing_subscriber::EnvFilter::try_new(level))
        .map_err(|_| "the log filter library cannot parse it".to_owned())?
        .map_err(|e| e.to_string())
}

/// Parses a duration: Go's `time.ParseDuration` grammar, unsigned
/// (`500ms`, `30s`, `1m30s`, `1.5h`, `0`); see [`duration`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    duration::parse(text)
}

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML does not fit the config's shape.
    #[error("{0}")]
    Yaml(#[from] crate::engine::yaml::YamlError),
    /// Values that parse but are not valid.
    #[error("{path}: {}", problems.join(&format!("\n{}: ", path.display())))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Each problem, naming its key.
        problems: Vec<String>,
    },
}

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Reads and validates the config held by the environment variable
    /// `name` (how `celador inject` hands a sidecar its config); relative
    /// paths resolve against the working directory.
    pub fn from_env(name: &str) -> Result<Config, ConfigError> {
        let shown = PathBuf::from(format!("${name}"));
        let text = std::env::var(name).map_err(|e| ConfigError::Read {
            path: shown.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, e),
        })?;
        let mut config = Config::parse(&text, &shown)?;
        config.base_dir = PathBuf::new();
        Ok(config)
    }

    /// Parses and validates `text`; relative paths resolve against the
    /// directory of `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::parse_reporting(text, path).0
    }

    /// [`Config::parse`], with the deprecated keys `text` uses whether or
    /// not it is valid otherwise (what `celador check` reports).
    pub fn parse_reporting(
        text: &str,
        path: &Path,
    ) -> (Result<Config, ConfigError>, Vec<governance::Deprecation>) {
        let mut config: Config = match crate::engine::yaml::from_str(text, path) {
            Ok(config) => config,
            Err(e) => return (Err(e.into()), Vec::new()),
        };
        config.base_dir = path.parent().map(Path::to_owned).unwrap_or_default();
        let resolved = governance::resolve(
            config.governance_section.take(),
            governance::TopLevelKeys {
                grants: config.top_level_grants.take(),
                grants_max_duration: config.top_level_grants_max_duration.take(),
                revocations: config.top_level_revocations.take(),
                shadow_policy: config.top_level_shadow_policy.take(),
                signals: config.top_level_signals.take(),
            },
        );
        config.governance = resolved.governance;
        config.deprecations = resolved.deprecations;
        let mut problems = resolved.problems;
        problems.extend(config.problems());
        let deprecations = config.deprecations.clone();
        if problems.is_empty() {
            (Ok(config), deprecations)
        } else {
            let invalid = ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            };
            (Err(invalid), deprecations)
        }
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.listen_addr().is_none() {
            problems.push(format!(
                "listen: '{}' is not an address like 127.0.0.1:9191",
                self.listen
            ));
        }
        self.trust_domain_problems(&mut problems);
        if let Some(endpoint) = &self.workload_api.endpoint
            && !(endpoint.starts_with("unix:") || endpoint.starts_with("tcp:"))
        {
            problems.push(format!(
                "workload_api.endpoint: '{endpoint}' is not an endpoint like unix:///run/spire/agent.sock or tcp://127.0.0.1:8081"
            ));
        }
        if let Some(admin) = &self.admin
            && admin.parse::<SocketAddr>().is_err()
        {
            problems.push(format!(
                "admin: '{admin}' is not an address like 127.0.0.1:9901"
            ));
        }
        if let Some(health) = &self.health_listen
            && health.parse::<SocketAddr>().is_err()
        {
            problems.push(format!(
                "health_listen: '{health}' is not an address like 0.0.0.0:9192"
            ));
        }
        self.duration_problems(&mut problems);
        self.limits.problems(&mut problems);
        self.identity_problems(&mut problems);
        self.header_problems(&mut problems);
        if let Some(tracing) = &self.tracing {
            if !(tracing.otlp_endpoint.starts_with("http://")
                || tracing.otlp_endpoint.starts_with("https://"))
            {
                problems.push(format!(
                    "tracing.otlp_endpoint: '{}' is not a URL like http://127.0.0.1:4317",
                    tracing.otlp_endpoint
                ));
            }
            if !(0.0..=1.0).contains(&tracing.sample_ratio) {
                problems.push(format!(
                    "tracing.sample_ratio: {} is not between 0 and 1",
                    tracing.sample_ratio
                ));
            }
        }
        if let Err(e) = log_filter(&self.log.level) {
            problems.push(format!(
                "log.level: '{}' is not a log filter: {e}",
                self.log.level
            ));
        }
        problems
    }

    /// The durations' problems (the governance section's are
    /// [`governance::resolve`]'s).
    fn duration_problems(&self, problems: &mut Vec<String>) {
        let durations = [
            ("shutdown_grace", Some(&self.shutdown_grace)),
            ("cache.svid_max_ttl", Some(&self.cache.svid_max_ttl)),
            ("cache.decision_ttl", Some(&self.cache.decision_ttl)),
            (
                "identity.jwt.leeway",
                self.identity.jwt.as_ref().map(|j| &j.leeway),
            ),
        ];
        for (key, duration) in durations {
            if let Some(problem) = duration.and_then(DurationText::problem) {
                problems.push(format!("{key}: {problem}"));
            }
        }
    }

    fn trust_domain_problems(&self, problems: &mut Vec<String>) {
        if self.trust_domains.is_empty() {
            problems
                .push("trust_domains: at least one trust domain with its bundle is needed".into());
        }
        for (name, td) in &self.trust_domains {
            if let Err(e) = validate_trust_domain(name) {
                problems.push(format!(
                    "trust_domains: '{name}' is not a trust domain name: {e}"
                ));
            }
            match (&td.bundle, td.workload_api) {
                (Some(_), true) => problems.push(format!(
                    "trust_domains.{name}: give either `bundle` or `workload_api: true`, not both"
                )),
                (None, false) => problems.push(format!(
                    "trust_domains.{name}: say where its bundle comes from: `bundle: FILE` or `workload_api: true`"
                )),
                _ => {}
            }
        }
    }

    fn identity_problems(&self, problems: &mut Vec<String>) {
        match (&self.identity.jwt, self.identity.require.reads_jwt()) {
            (None, true) => problems.push(format!(
                "identity.require: '{}' reads JWT-SVIDs, so identity.jwt must say which audiences to accept",
                self.identity.require.name()
            )),
            (Some(jwt), _) => {
                if jwt.audiences.is_empty() || jwt.audiences.iter().any(String::is_empty) {
                    problems.push(
                        "identity.jwt.audiences: list the audiences a token must name (at least one)"
                            .into(),
                    );
                }
                if !is_header_name(&jwt.header) {
                    problems.push(format!(
                        "identity.jwt.header: '{}' is not a lowercase HTTP header name",
                        jwt.header
                    ));
                }
            }
            (None, false) => {}
        }
    }

    fn header_problems(&self, problems: &mut Vec<String>) {
        for name in self.upstream_headers.keys() {
            if !is_header_name(name) {
                problems.push(format!(
                    "upstream_headers: '{name}' is not a lowercase HTTP header name"
                ));
            } else if name.starts_with(':') || name == "host" {
                problems.push(format!("upstream_headers: '{name}' cannot be set"));
            }
        }
        let token_header = self.identity.jwt.as_ref().map(|jwt| jwt.header.as_str());
        for name in &self.audit.headers {
            if !is_header_name(name) {
                problems.push(format!(
                    "audit.headers: '{name}' is not a lowercase HTTP header name"
                ));
            } else if crate::engine::redaction::is_credential_header(name)
                || Some(name.as_str()) == token_header
            {
                problems.push(format!(
                    "audit.headers: '{name}' carries credentials, which celador never records"
                ));
            }
        }
        for name in &self.audit.query_params {
            if name.is_empty() {
                problems.push("audit.query_params: an empty name".to_owned());
            } else if crate::engine::redaction::is_credential_name(name) {
                problems.push(format!(
                    "audit.query_params: '{name}' looks like a credential, whose value celador never shows"
                ));
            }
        }
    }

    /// Runtime governance: the grants, revocations and shadow rules files,
    /// the longest grant, the signals and the fleet's store, whether the
    /// config says them under `governance:` or at the deprecated top level.
    pub fn governance(&self) -> &governance::Governance {
        &self.governance
    }

    /// The deprecated keys the config uses, each with what to write
    /// instead: `celador check` prints them, `celador serve` logs them.
    pub fn deprecations(&self) -> &[governance::Deprecation] {
        &self.deprecations
    }

    /// The listen address.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.parse().ok()
    }

    /// The Workload API endpoint for trust domains that use it: the config's,
    /// else the value of `SPIFFE_ENDPOINT_SOCKET` given as `env_endpoint`.
    pub fn workload_api_endpoint(&self, env_endpoint: Option<String>) -> Option<String> {
        self.workload_api.endpoint.clone().or(env_endpoint)
    }

    /// `path` resolved against the config file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.base_dir.join(path)
        }
    }
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/celador/config.yaml"))
    }

    const MINIMAL: &str = "listen: 127.0.0.1:9191\npolicy: policy.yaml\ntrust_domains:\n  example.org:\n    bundle: example.org.pem\n";

    #[test]
    fn a_minimal_config_has_sensible_defaults_and_relative_paths() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(
            config.listen_addr(),
            Some("127.0.0.1:9191".parse().unwrap())
        );
        assert_eq!(
            config.resolve(&config.policy),
            Path::new("/etc/celador/policy.yaml")
        );
        assert_eq!(config.cache.svid_entries, 10_000);
        assert_eq!(config.shutdown_grace.0, Duration::from_secs(15));
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.workload.namespace_env, "POD_NAMESPACE");
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let err = parse(&format!("{MINIMAL}lisen: 1\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `lisen`"), "{err}");
        assert!(err.contains("config.yaml:6:1"), "{err}");
        let nested = MINIMAL.replace("bundle:", "bundel:");
        let err = parse(&nested).unwrap_err().to_string();
        assert!(err.contains("unknown field `bundel`"), "{err}");
    }

    #[test]
    fn governance_files_are_paths_or_optional_paths() {
        use watched::WatchedFile;
        let config = parse(&format!(
            "{MINIMAL}grants: g.yaml\nrevocations: {{path: gov/revocations.yaml, optional: true}}\nshadow_policy: {{path: s.yaml}}\n"
        ))
        .unwrap();
        let file = |path: &str, optional| {
            Some(WatchedFile {
                path: path.into(),
                optional,
            })
        };
        let governance = config.governance();
        assert_eq!(governance.grants, file("g.yaml", false));
        assert_eq!(governance.revocations, file("gov/revocations.yaml", true));
        assert_eq!(governance.shadow_policy, file("s.yaml", false));
        let err = parse(&format!(
            "{MINIMAL}grants: {{path: g.yaml, optinal: true}}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `optinal`"), "{err}");
        let err = parse(&format!("{MINIMAL}grants: {{optional: true}}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing field `path`"), "{err}");
    }

    #[test]
    fn each_trust_domain_names_exactly_one_source() {
        let both = MINIMAL.replace(
            "bundle: example.org.pem",
            "bundle: x.pem\n    workload_api: true",
        );
        let err = parse(&both).unwrap_err().to_string();
        assert!(
            err.contains("give either `bundle` or `workload_api: true`, not both"),
            "{err}"
        );
        let none = "listen: 127.0.0.1:1\npolicy: p\ntrust_domains:\n  example.org: {}\n";
        let err = parse(none).unwrap_err().to_string();
        assert!(err.contains("say where its bundle comes from"), "{err}");
        let api = "listen: 127.0.0.1:1\npolicy: p\ntrust_domains:\n  example.org:\n    workload_api: true\nworkload_api:\n  endpoint: /tmp/agent.sock\nadmin: nowhere\n";
        let err = parse(api).unwrap_err().to_string();
        assert!(
            err.contains("workload_api.endpoint: '/tmp/agent.sock' is not an endpoint"),
            "{err}"
        );
        assert!(err.contains("admin: 'nowhere' is not an address"), "{err}");
        let ok = parse(
            &api.replace("/tmp/agent.sock", "unix:///tmp/agent.sock")
                .replace("nowhere", "127.0.0.1:9901"),
        )
        .unwrap();
        assert_eq!(
            ok.workload_api_endpoint(None).as_deref(),
            Some("unix:///tmp/agent.sock")
        );
    }

    #[test]
    fn invalid_values_are_all_reported_with_what_to_fix() {
        let text = "listen: localhost\npolicy: p.yaml\ntrust_domains:\n  Example.org:\n    bundle: b.pem\nupstream_headers:\n  X-Spiffe: source.id\naudit:\n  headers: [User-Agent]\nlog:\n  level: '[['\n";
        let err = parse(text).unwrap_err().to_string();
        for expected in [
            "listen: 'localhost' is not an address like 127.0.0.1:9191",
            "trust_domains: 'Example.org' is not a trust domain name",
            "upstream_headers: 'X-Spiffe' is not a lowercase HTTP header name",
            "audit.headers: 'User-Agent' is not a lowercase HTTP header name",
            "log.level: '[[' is not a log filter",
        ] {
            assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
        }
    }

    #[test]
    fn limits_default_for_a_small_sidecar_and_bad_ones_are_reported() {
        let defaults = parse(MINIMAL).unwrap().limits.to_limits();
        assert_eq!(defaults, crate::edge::admission::Limits::default());
        let set = parse(&format!(
            "{MINIMAL}limits:\n  checks: 8\n  buffered_bytes: 1000\n  deadline_share: 0.25\n  default_deadline: 200ms\n  stream_window: 65535\n"
        ))
        .unwrap()
        .limits
        .to_limits();
        assert_eq!(
            (set.checks, set.buffered_bytes, set.deadline_share),
            (8, 1000, 0.25)
        );
        assert_eq!(set.default_deadline, Duration::from_millis(200));
        assert_eq!(set.stream_window, 65_535);
        let err = parse(&format!(
            "{MINIMAL}limits:\n  checks: 0\n  deadline_share: 1.5\n  default_deadline: soon\n  connection_window: 1024\n"
        ))
        .unwrap_err()
        .to_string();
        for expected in [
            "limits.checks: must be at least 1",
            "limits.deadline_share: 1.5 is not a share above 0 and at most 1",
            "limits.default_deadline: 'soon' is not a duration",
            "limits.connection_window: 1024 is not an HTTP/2 window from 65535 to 2147483647 bytes",
        ] {
            assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
        }
    }

    #[test]
    fn credential_headers_are_refused_in_audit_records_and_answers_detail_is_opt_in() {
        let text = format!(
            "{MINIMAL}identity:\n  jwt:\n    audiences: [a]\n    header: x-svid\naudit:\n  headers: [authorization, cookie, x-svid, x-api-key, x-amz-security-token, x-session-token, user-agent]\n"
        );
        let err = parse(&text).unwrap_err().to_string();
        for name in [
            "authorization",
            "cookie",
            "x-svid",
            "x-api-key",
            "x-amz-security-token",
            "x-session-token",
        ] {
            assert!(
                err.contains(&format!(
                    "audit.headers: '{name}' carries credentials, which celador never records"
                )),
                "{name}: {err}"
            );
        }
        assert!(!err.contains("'user-agent'"), "{err}");
        assert!(!parse(MINIMAL).unwrap().answers.detail);
        let detail = parse(&format!("{MINIMAL}answers:\n  detail: true\n")).unwrap();
        assert!(detail.answers.detail);
        let typo = parse(&format!("{MINIMAL}answers:\n  details: true\n")).unwrap_err();
        assert!(typo.to_string().contains("details"), "{typo}");
    }

    #[test]
    fn request_paths_default_to_rejecting_ambiguity_and_take_the_other_modes() {
        assert_eq!(
            parse(MINIMAL).unwrap().request.paths,
            PathMode::RejectAmbiguous
        );
        for (name, mode) in [
            ("canonical", PathMode::Canonical),
            ("reject_ambiguous", PathMode::RejectAmbiguous),
            ("raw", PathMode::Raw),
        ] {
            let config = parse(&format!("{MINIMAL}request:\n  paths: {name}\n")).unwrap();
            assert_eq!(config.request.paths, mode);
        }
        let err = parse(&format!("{MINIMAL}request:\n  paths: normalize\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("normalize"), "{err}");
    }

    #[test]
    fn query_params_shown_in_audit_records_are_named_and_never_credentials() {
        let config = parse(&format!("{MINIMAL}audit:\n  query_params: [page, sort]\n")).unwrap();
        assert_eq!(config.audit.query_params, ["page", "sort"]);
        assert!(parse(MINIMAL).unwrap().audit.query_params.is_empty());
        let err = parse(&format!(
            "{MINIMAL}audit:\n  query_params: [page, access_token, client_secret, sig, pwd, \"\"]\n"
        ))
        .unwrap_err()
        .to_string();
        for name in ["access_token", "client_secret", "sig", "pwd"] {
            assert!(
                err.contains(&format!(
                    "audit.query_params: '{name}' looks like a credential, whose value celador never shows"
                )),
                "{name}: {err}"
            );
        }
        assert!(err.contains("audit.query_params: an empty name"), "{err}");
        assert!(!err.contains("'page'"), "{err}");
    }

    #[test]
    fn a_non_ascii_log_filter_is_a_problem_not_a_panic() {
        // The fuzzer's finding: tracing-subscriber sliced this mid-character.
        let level = "i\u{a9}acter`, etcxpeed o{{n field\u{d1};\u{d1}[{{{\"\"}{\u{a9}\u{a9}";
        let err = log_filter(level).unwrap_err();
        assert!(err.contains("ASCII"), "{err}");
        let text = format!(
            "{MINIMAL}log:\n  level: {}\n",
            serde_json::to_string(level).unwrap()
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("log.level:"), "{err}");
        assert!(log_filter("info,celador=debug").is_ok());
    }

    #[test]
    fn jwt_requirements_need_audiences() {
        let err = parse(&format!("{MINIMAL}identity:\n  require: either\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("identity.require: 'either' reads JWT-SVIDs"),
            "{err}"
        );
        let err = parse(&format!("{MINIMAL}identity:\n  jwt:\n    audiences: []\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("identity.jwt.audiences"), "{err}");
        let ok = parse(&format!(
            "{MINIMAL}identity:\n  require: both\n  jwt:\n    audiences: [payments]\n    leeway: 10s\n"
        ))
        .unwrap();
        let jwt = ok.identity.jwt.unwrap();
        assert_eq!(jwt.header, "authorization");
        assert_eq!(jwt.leeway.0, Duration::from_secs(10));
        assert_eq!(ok.identity.require, Requirement::Both);
        let bad = parse(&format!("{MINIMAL}identity:\n  require: mtls\n"))
            .unwrap_err()
            .to_string();
        assert!(bad.contains("unknown variant `mtls`"), "{bad}");
    }

    #[test]
    fn header_value_sources_and_durations_are_checked() {
        let bad_source = format!("{MINIMAL}upstream_headers:\n  x-id: source.name\n");
        let err = parse(&bad_source).unwrap_err().to_string();
        assert!(err.contains("unknown variant `source.name`"), "{err}");
        let bad_duration = format!("{MINIMAL}shutdown_grace: 10 seconds\n");
        let err = parse(&bad_duration).unwrap_err().to_string();
        assert!(err.contains("not a duration"), "{err}");
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
    }
}
