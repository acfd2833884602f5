//! Startup: from a validated [`Config`] to a running server and its live
//! sources.
//!
//! Data flow: [`load`] reads the rules file, every bundle file and the
//! workload, reporting all problems together (a bad one exits with code 64
//! before anything listens), and turns the static config into the settings
//! of the engine and the edge; trust domains fed by the Workload API start
//! pending. [`run`] then starts the live sources (watched files, the
//! Workload API), which publish into the store, the admin listener and the
//! gRPC server, whose health turns `SERVING` once every trust domain has a
//! bundle. Nothing here is on the request path.

pub mod accept;
pub mod admin;
pub mod audit_log;
pub mod check;
pub mod config;
pub mod envoy_config;
pub mod telemetry;
pub mod tls;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::edge::response::AnswerSettings;
use crate::edge::server::{self, ServeError};
use crate::edge::{EdgeSettings, ExtAuthz};
use crate::engine::cache::DecisionCacheSettings;
use crate::engine::identity::bundle::{self, BundleError, DomainBundle};
use crate::engine::identity::jwt::JwtSettings;
use crate::engine::identity::verified::CacheSettings;
use crate::engine::policy::{Policy, PolicyError};
use crate::engine::redaction::Redaction;
use crate::engine::workload::Workload;
use crate::engine::{Engine, EngineSettings, TokenSettings};
use crate::metrics::Metrics;
use crate::sources::downward_api::WorkloadError;
use crate::sources::files::{Governance, GovernanceFile, LiveFiles};
use crate::sources::fleet::connect::Endpoint;
use crate::sources::fleet::replica::Replica;
use crate::sources::fleet::signals::FleetCounts;
use crate::sources::fleet::{ReplicaSettings, StoreStatus};
use crate::sources::workload_api::WorkloadApiSource;
use crate::store::Store;
use admin::AdminState;
use config::Config;

/// How often watched files are re-read even without a change event.
const RESYNC: Duration = Duration::from_secs(10);

/// What stops celador from starting with a config.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The rules file does not load.
    #[error("{0}")]
    Policy(#[from] PolicyError),
    /// A trust bundle does not load.
    #[error("trust_domains.{trust_domain}.bundle: {source}")]
    Bundle {
        /// The trust domain.
        trust_domain: String,
        /// Why.
        source: Box<BundleError>,
    },
    /// The workload cannot be read.
    #[error("{0}")]
    Workload(#[from] WorkloadError),
    /// A grants, revocations or shadow rules file does not load.
    #[error("{file}: {problem}")]
    Governance {
        /// Which file (`grants`, `revocations`, `shadow_policy`).
        file: &'static str,
        /// Every problem.
        problem: String,
    },
    /// The governance store cannot be used (its password or CA file).
    #[error("governance: {0}")]
    Store(String),
    /// Trust domains use the Workload API, but nothing says where it is.
    #[error(
        "trust domains {0} use the Workload API, but neither workload_api.endpoint nor SPIFFE_ENDPOINT_SOCKET says where it is"
    )]
    NoWorkloadApi(String),
}

/// A file as read at start-up: where it is and what it held, so that its
/// live source starts from that content.
type FileContent = (PathBuf, Vec<u8>);

/// A governance file as read at start-up: its content is `None` when it is
/// optional and missing (no entries until it appears).
struct GovernanceContent {
    path: PathBuf,
    bytes: Option<Vec<u8>>,
    optional: bool,
}

/// Everything loaded at startup, ready to run.
pub struct Loaded {
    /// The ext_authz edge, deciding with the loaded rules and bundles.
    pub ext_authz: Arc<ExtAuthz>,
    metrics: Arc<Metrics>,
    bundle_files: HashMap<String, FileContent>,
    policy_file: FileContent,
    governance_files: Vec<(GovernanceFile, GovernanceContent)>,
    workload_api: Option<WorkloadApiSource>,
    fleet: Option<(ReplicaSettings, Endpoint)>,
    fleet_signals: Option<Arc<FleetCounts>>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("ext_authz", &self.ext_authz)
            .finish_non_exhaustive()
    }
}

/// Bundle files read at start-up, by trust domain.
struct BundleFiles {
    files: HashMap<String, FileContent>,
    bundles: HashMap<String, Arc<DomainBundle>>,
    /// Trust domains fed by the Workload API instead.
    from_workload_api: BTreeSet<String>,
}

/// Loads everything the config names; every problem found is returned, not
/// just the first. `env` reads environment variables.
pub fn load(
    config: &Config,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Loaded, Vec<StartupError>> {
    let mut errors = Vec::new();
    let policy = load_policy(config).map_err(|e| errors.push(e.into())).ok();
    let bundles = load_bundles(config, &mut errors);
    let governance = load_governance(config, &mut errors);
    let workload_api = workload_api(config, &bundles.from_workload_api, &env)
        .map_err(|e| errors.push(e))
        .ok()
        .flatten();
    let workload = crate::sources::downward_api::load(&config.workload, &env)
        .map_err(|e| errors.push(e.into()))
        .ok();
    let fleet = fleet_endpoint(config, &env, &mut errors);
    let (Some((policy, policy_file)), Some(workload), true) = (policy, workload, errors.is_empty())
    else {
        return Err(errors);
    };
    policy
        .warnings()
        .iter()
        .for_each(crate::sources::files::log_diagnostic);
    let metrics = Arc::new(Metrics::default());
    metrics.rules_reload_attempt(true, crate::sources::files::unix_now());
    for (name, td) in &config.trust_domains {
        let source = if td.workload_api {
            "workload_api"
        } else {
            "file"
        };
        metrics.trust_domain_configured(name, source);
    }
    metrics.rules_loaded(&policy);
    let store = Store::new(
        Arc::new(policy),
        config.trust_domains.keys().cloned().collect(),
        bundles.bundles,
    );
    let governance_files = publish_governance(governance, &store, &metrics);
    let (engine, fleet_signals) = engine(config, workload, fleet.as_ref());
    Ok(Loaded {
        governance_files,
        ext_authz: Arc::new(ExtAuthz::counting_into(
            engine,
            store,
            edge_settings(config),
            Arc::clone(&metrics),
        )),
        metrics,
        bundle_files: bundles.files,
        policy_file,
        workload_api,
        fleet,
        fleet_signals,
    })
}

/// Publishes the governance files read at start-up, noting those that are
/// optional and missing; returns them for their live source.
fn publish_governance(
    governance: Vec<(GovernanceFile, Governance, GovernanceContent)>,
    store: &Store,
    metrics: &Metrics,
) -> Vec<(GovernanceFile, GovernanceContent)> {
    let mut governance_files = Vec::new();
    for (file, content, read) in governance {
        if read.bytes.is_none() {
            tracing::info!(file = file.name(), path = %read.path.display(), "the optional {} file is missing: no entries until it appears", file.name());
            metrics.governance.file_absent(file.name());
        }
        content.publish(store, &read.path);
        governance_files.push((file, read));
    }
    governance_files
}

/// The engine, counting fleet signals when the store is configured for
/// them; and their counts.
fn engine(
    config: &Config,
    workload: Workload,
    fleet: Option<&(ReplicaSettings, Endpoint)>,
) -> (Engine, Option<Arc<FleetCounts>>) {
    let engine = Engine::new(workload, engine_settings(config));
    let counts = fleet
        .filter(|(s, _)| !s.signals_interval.is_zero())
        .map(|_| FleetCounts::new(config.governance().signals.max_identities));
    match &counts {
        Some(c) => (engine.with_fleet(Arc::clone(c) as _), counts),
        None => (engine, None),
    }
}

/// The governance store's settings and endpoint, if one is configured.
fn fleet_endpoint(
    config: &Config,
    env: impl Fn(&str) -> Option<String>,
    errors: &mut Vec<StartupError>,
) -> Option<(ReplicaSettings, Endpoint)> {
    let governance = config.governance();
    let store = governance.store.as_ref()?;
    let settings = store.replica(governance.grants_max_duration.0, |p| config.resolve(p));
    Endpoint::new(&settings.store, env)
        .map(|endpoint| (settings, endpoint))
        .map_err(|e| errors.push(StartupError::Store(e)))
        .ok()
}

fn load_policy(config: &Config) -> Result<(Policy, FileContent), PolicyError> {
    let path = config.resolve(&config.policy);
    let bytes = std::fs::read(&path).map_err(|e| PolicyError::unreadable(&path, &e))?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let policy = Policy::parse(&text, &path)?;
    Ok((policy, (path, bytes)))
}

/// Reads the grants, revocations and shadow rules files the config names.
fn load_governance(
    config: &Config,
    errors: &mut Vec<StartupError>,
) -> Vec<(GovernanceFile, Governance, GovernanceContent)> {
    let governance = config.governance();
    let files = [
        (
            &governance.grants,
            GovernanceFile::Grants {
                max_duration: governance.grants_max_duration.0,
            },
        ),
        (&governance.revocations, GovernanceFile::Revocations),
        (&governance.shadow_policy, GovernanceFile::ShadowPolicy),
        (&governance.risks, GovernanceFile::Risks),
    ];
    let mut loaded = Vec::new();
    for (watched, file) in files {
        let Some(watched) = watched else { continue };
        let path = config.resolve(&watched.path);
        let parsed = match std::fs::read(&path) {
            Err(e) if watched.optional && e.kind() == std::io::ErrorKind::NotFound => file
                .parse(&path, file.absent())
                .map(|g| (g, None))
                .map_err(|e| e.to_string()),
            read => read
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
                .and_then(|bytes| {
                    file.parse(&path, &bytes)
                        .map(|g| (g, Some(bytes)))
                        .map_err(|e| e.to_string())
                }),
        };
        match parsed {
            Ok((governance, bytes)) => {
                let optional = watched.optional;
                loaded.push((
                    file,
                    governance,
                    GovernanceContent {
                        path,
                        bytes,
                        optional,
                    },
                ));
            }
            Err(problem) => errors.push(StartupError::Governance {
                file: file.name(),
                problem,
            }),
        }
    }
    loaded
}

/// Reads every bundle file; trust domains fed by the Workload API are only
/// noted.
fn load_bundles(config: &Config, errors: &mut Vec<StartupError>) -> BundleFiles {
    let mut loaded = BundleFiles {
        files: HashMap::new(),
        bundles: HashMap::new(),
        from_workload_api: BTreeSet::new(),
    };
    for (name, td) in &config.trust_domains {
        if td.workload_api {
            loaded.from_workload_api.insert(name.clone());
            continue;
        }
        let Some(file) = &td.bundle else { continue };
        let path = config.resolve(file);
        let read = std::fs::read(&path)
            .map_err(|source| BundleError::Read {
                path: path.clone(),
                source,
            })
            .and_then(|bytes| bundle::parse(&bytes, &path).map(|l| (bytes, l)));
        match read {
            Ok((bytes, bundle)) => {
                for skipped in &bundle.skipped {
                    tracing::warn!(trust_domain = %name, "skipped a key: {skipped}");
                }
                crate::sources::warn_on_invalid_authorities(name, bundle.bundle.x509_authorities());
                loaded.files.insert(name.clone(), (path, bytes));
                loaded.bundles.insert(name.clone(), Arc::new(bundle.bundle));
            }
            Err(source) => errors.push(StartupError::Bundle {
                trust_domain: name.clone(),
                source: Box::new(source),
            }),
        }
    }
    loaded
}

/// The Workload API source of `trust_domains`, if any uses it.
fn workload_api(
    config: &Config,
    trust_domains: &BTreeSet<String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<WorkloadApiSource>, StartupError> {
    if trust_domains.is_empty() {
        return Ok(None);
    }
    match config.workload_api_endpoint(env("SPIFFE_ENDPOINT_SOCKET")) {
        Some(endpoint) => Ok(Some(WorkloadApiSource {
            endpoint,
            trust_domains: trust_domains.clone(),
        })),
        None => {
            let names: Vec<&str> = trust_domains.iter().map(String::as_str).collect();
            Err(StartupError::NoWorkloadApi(names.join(", ")))
        }
    }
}

fn engine_settings(config: &Config) -> EngineSettings {
    let svid_cache = CacheSettings {
        max_entries: config.cache.svid_entries,
        max_ttl: config.cache.svid_max_ttl.0,
    };
    EngineSettings {
        requirement: config.identity.require,
        token: config.identity.jwt.as_ref().map(|jwt| TokenSettings {
            header: jwt.header.clone(),
            verify: JwtSettings {
                audiences: jwt.audiences.clone(),
                leeway: jwt.leeway.0,
                cache: svid_cache,
            },
        }),
        svid_cache,
        decision_cache: DecisionCacheSettings {
            ttl: config.cache.decision_ttl.0,
            max_entries: config.cache.decision_entries,
            max_bytes: config.cache.decision_max_bytes,
        },
        signals_identities: config.governance().signals.max_identities,
        redaction: Redaction::new(Vec::new(), config.audit.query_params.iter().cloned()),
    }
}

fn edge_settings(config: &Config) -> EdgeSettings {
    EdgeSettings {
        answers: AnswerSettings {
            upstream_headers: config
                .upstream_headers
                .iter()
                .map(|(name, source)| (name.clone(), *source))
                .collect(),
            remove_token_header: config
                .identity
                .jwt
                .as_ref()
                .filter(|jwt| jwt.remove_header)
                .map(|jwt| jwt.header.clone()),
            detail: config.answers.detail,
        },
        audit_headers: config.audit.headers.clone(),
        audit_record: config.audit.record,
        paths: config.request.paths,
    }
}

/// The ext_authz filter block for the rules `config` names (with its shadow
/// rules and grants): what `celador envoy-config` prints.
pub fn envoy_filter(
    config: &Config,
    settings: &envoy_config::FilterSettings,
) -> Result<String, Vec<StartupError>> {
    let mut errors = Vec::new();
    let policy = load_policy(config).map_err(|e| errors.push(e.into())).ok();
    let governance = load_governance(config, &mut errors);
    let Some((policy, _)) = policy.filter(|_| errors.is_empty()) else {
        return Err(errors);
    };
    let mut footprints = vec![policy.footprint().clone()];
    for (_, content, _) in &governance {
        match content {
            Governance::Grants(grants) => footprints.push(grants.footprint()),
            Governance::ShadowPolicy(shadow) => footprints.push(shadow.footprint().clone()),
            Governance::Revocations(_) | Governance::Risks(_) => {}
        }
    }
    let refs: Vec<_> = footprints.iter().collect();
    let headers = envoy_config::headers_needed(config, &refs);
    Ok(envoy_config::render(
        settings,
        headers.as_ref(),
        policy.version(),
    ))
}

/// The Tokio runtime `config` asks for: `worker_threads` workers (0: one
/// per CPU the process may run on); with one, a current-thread runtime,
/// which spares a sidecar on one core the hand-offs between threads.
pub fn runtime(config: &Config) -> tokio::runtime::Builder {
    let workers = match config.worker_threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    builder.enable_all().thread_name("celador");
    builder
}

/// Loads everything the config names into an [`ExtAuthz`], reading the
/// process environment.
pub fn ext_authz(config: &Config) -> Result<Arc<ExtAuthz>, Vec<StartupError>> {
    load(config, |name| std::env::var(name).ok()).map(|l| l.ext_authz)
}

/// Starts the live sources and the admin listener, then serves until
/// `shutdown`.
pub async fn run(
    config: &Config,
    loaded: Loaded,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let store = Arc::clone(loaded.ext_authz.store());
    let store_status = start_replica(&loaded, &store).await;
    let tracer_provider = config.tracing.as_ref().map(|t| {
        let (provider, tracing) = telemetry::tracing(t);
        loaded.ext_authz.set_tracing(tracing);
        tracing::info!(endpoint = %t.otlp_endpoint, sample_ratio = t.sample_ratio, "exporting a span per check over OTLP");
        provider
    });
    if let Some(address) = config.admin.as_deref().and_then(|a| a.parse().ok()) {
        let listener = server::bind(address).await?;
        tracing::info!(address = %listener.local_addr().unwrap_or(address), "admin listening");
        admin::spawn(
            listener,
            AdminState {
                ext_authz: Arc::clone(&loaded.ext_authz),
                metrics: Arc::clone(&loaded.metrics),
                store_status,
            },
        );
    }

    let Some(address) = config.listen_addr() else {
        return Err(ServeError::Bind {
            address: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            source: std::io::Error::other("invalid listen address"),
        });
    };
    let listener = server::bind(address).await?;
    let local = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { address, source })?;
    let policy = Arc::clone(&store.snapshot().policy);
    tracing::info!(
        address = %local,
        policy_version = policy.version(),
        rules = policy.rules().len(),
        pending_trust_domains = ?store.pending(),
        "listening"
    );
    let health_listener = bind_health(config).await?;
    let ready = store.ready();
    let served = server::serve(
        listener,
        health_listener,
        (loaded.ext_authz, config.limits.to_limits()),
        ready,
        shutdown,
        config.shutdown_grace.0,
    )
    .await;
    if let Some(provider) = tracer_provider {
        // Flushes the spans not yet exported, off the runtime's workers.
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
    served
}

/// Binds the health-only gRPC address, when the config has one.
async fn bind_health(config: &Config) -> Result<Option<tokio::net::TcpListener>, ServeError> {
    let Some(address) = config.health_listen.as_deref().and_then(|a| a.parse().ok()) else {
        return Ok(None);
    };
    let listener = server::bind(address).await?;
    tracing::info!(address = %listener.local_addr().unwrap_or(address), "gRPC health listening");
    Ok(Some(listener))
}

/// Starts the replica of the governance store, if one is configured, and
/// waits (bounded by `startup_wait`) for its first full sync: past that,
/// celador serves with the files alone until the store answers.
/// The files and the Workload API are started first.
async fn start_replica(loaded: &Loaded, store: &Arc<Store>) -> Option<Arc<StoreStatus>> {
    start_sources(loaded, store);
    let (settings, endpoint) = loaded.fleet.clone()?;
    if let Some(counts) = &loaded.fleet_signals {
        let keys = crate::sources::fleet::keys::Keys::new(&settings.store.key_prefix);
        let task = crate::sources::fleet::signals::run(
            Arc::clone(counts),
            endpoint.clone(),
            keys,
            settings.signals_interval,
        );
        tokio::spawn(task);
    }
    let status = Arc::new(StoreStatus::default());
    tracing::info!(store = %endpoint.shown, "replicating the governance store");
    let sink = (Arc::clone(store), Arc::clone(&loaded.metrics));
    let replica = Replica::new(&settings, endpoint, sink, Arc::clone(&status));
    let mut synced = replica.spawn();
    let waited = tokio::time::timeout(settings.startup_wait, synced.wait_for(|s| *s)).await;
    if !matches!(waited, Ok(Ok(_))) {
        tracing::warn!(
            waited = ?settings.startup_wait,
            "the governance store has not answered: serving with the governance files alone until it does"
        );
    }
    Some(status)
}

/// Starts the live sources, each from the content loaded at start-up.
fn start_sources(loaded: &Loaded, store: &Arc<Store>) {
    let mut live = LiveFiles::new(Arc::clone(store), Arc::clone(&loaded.metrics));
    let (path, bytes) = &loaded.policy_file;
    live.policy(path.clone(), bytes);
    for (td, (path, bytes)) in &loaded.bundle_files {
        live.bundle(td.clone(), path.clone(), bytes);
    }
    for (file, read) in &loaded.governance_files {
        live.governance(
            *file,
            read.path.clone(),
            read.bytes.as_deref(),
            read.optional,
        );
    }
    if let Err(e) = live.watch(RESYNC) {
        tracing::error!("{e}: rules and bundle files will not be reloaded");
    }
    if let Some(source) = loaded.workload_api.clone() {
        tracing::info!(endpoint = %source.endpoint, trust_domains = ?source.trust_domains, "streaming bundles from the Workload API");
        source.spawn(Arc::clone(store), Arc::clone(&loaded.metrics));
    }
}
