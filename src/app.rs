//! Startup: from a validated [`Config`] to a running server and its live
//! sources.
//!
//! Data flow: [`load`] reads the rules file, every bundle file and the
//! workload, reporting all problems together (a bad one exits with code 64
//! before anything listens); trust domains fed by the Workload API start
//! pending. [`run`] then starts the live sources (watched files, the Workload
//! API), the admin listener and the gRPC server, whose health turns
//! `SERVING` once every trust domain has a bundle.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::decision::{Authorizer, DecisionSettings, TokenSettings};
use crate::identity::bundle::{self, BundleError, DomainBundle, TrustBundles};
use crate::identity::jwt::JwtSettings;
use crate::identity::store::BundleStore;
use crate::identity::verified::CacheSettings;
use crate::identity::workload_api::WorkloadApiSource;
use crate::metrics::Metrics;
use crate::policy::{Policy, PolicyError};
use crate::reload::LiveFiles;
use crate::server::{self, ServeError};
use crate::workload::{Workload, WorkloadError};

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
        source: BundleError,
    },
    /// The workload cannot be read.
    #[error("{0}")]
    Workload(#[from] WorkloadError),
    /// Trust domains use the Workload API, but nothing says where it is.
    #[error(
        "trust domains {0} use the Workload API, but neither workload_api.endpoint nor SPIFFE_ENDPOINT_SOCKET says where it is"
    )]
    NoWorkloadApi(String),
}

/// Everything loaded at startup, ready to run.
pub struct Loaded {
    /// The authorizer, with the loaded policy and bundles.
    pub authorizer: Arc<Authorizer>,
    metrics: Arc<Metrics>,
    configured: BTreeSet<String>,
    file_bundles: HashMap<String, (PathBuf, Vec<u8>, Arc<DomainBundle>)>,
    policy_file: (PathBuf, Vec<u8>),
    workload_api: Option<WorkloadApiSource>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("authorizer", &self.authorizer)
            .field("configured", &self.configured)
            .finish_non_exhaustive()
    }
}

/// Loads everything the config names; every problem found is returned, not
/// just the first. `env` reads environment variables.
pub fn load(
    config: &Config,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Loaded, Vec<StartupError>> {
    let mut errors = Vec::new();
    let policy_path = config.resolve(&config.policy);
    let policy = std::fs::read(&policy_path)
        .map_err(|e| PolicyError::unreadable(&policy_path, &e))
        .and_then(|bytes| {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            Policy::parse(&text, &policy_path).map(|p| (p, bytes))
        })
        .map_err(|e| errors.push(e.into()))
        .ok();

    let mut file_bundles = HashMap::new();
    let mut api_domains = BTreeSet::new();
    for (name, td) in &config.trust_domains {
        if td.workload_api {
            api_domains.insert(name.clone());
            continue;
        }
        let Some(file) = &td.bundle else { continue };
        let path = config.resolve(file);
        let loaded = std::fs::read(&path)
            .map_err(|source| BundleError::Read {
                path: path.clone(),
                source,
            })
            .and_then(|bytes| bundle::parse(&bytes, &path).map(|l| (bytes, l)));
        match loaded {
            Ok((bytes, loaded)) => {
                for skipped in &loaded.skipped {
                    tracing::warn!(trust_domain = %name, "skipped a key: {skipped}");
                }
                file_bundles.insert(name.clone(), (path, bytes, Arc::new(loaded.bundle)));
            }
            Err(source) => errors.push(StartupError::Bundle {
                trust_domain: name.clone(),
                source,
            }),
        }
    }
    let workload_api = if api_domains.is_empty() {
        None
    } else {
        match config.workload_api_endpoint(env("SPIFFE_ENDPOINT_SOCKET")) {
            Some(endpoint) => Some(WorkloadApiSource {
                endpoint,
                trust_domains: api_domains.clone(),
            }),
            None => {
                let names: Vec<&str> = api_domains.iter().map(String::as_str).collect();
                errors.push(StartupError::NoWorkloadApi(names.join(", ")));
                None
            }
        }
    };
    let workload = Workload::load(&config.workload, &env)
        .map_err(|e| errors.push(e.into()))
        .ok();
    let (Some((policy, policy_bytes)), Some(workload), true) =
        (policy, workload, errors.is_empty())
    else {
        return Err(errors);
    };
    for warning in policy.warnings() {
        tracing::warn!("{warning}");
    }

    let bundles = TrustBundles::new(
        file_bundles
            .iter()
            .map(|(td, (_, _, b))| (td.clone(), Arc::clone(b)))
            .collect(),
        api_domains.clone(),
    );
    let authorizer = Arc::new(Authorizer::new(
        Arc::new(policy),
        Arc::new(bundles),
        workload,
        settings(config),
    ));
    Ok(Loaded {
        authorizer,
        metrics: Arc::new(Metrics::default()),
        configured: config.trust_domains.keys().cloned().collect(),
        file_bundles,
        policy_file: (policy_path, policy_bytes),
        workload_api,
    })
}

fn settings(config: &Config) -> DecisionSettings {
    let svid_cache = CacheSettings {
        max_entries: config.cache.svid_entries,
        max_ttl: config.cache.svid_max_ttl.0,
    };
    DecisionSettings {
        requirement: config.identity.require,
        token: config.identity.jwt.as_ref().map(|jwt| TokenSettings {
            header: jwt.header.clone(),
            remove_header: jwt.remove_header,
            verify: JwtSettings {
                audiences: jwt.audiences.clone(),
                leeway: jwt.leeway.0,
                cache: svid_cache,
            },
        }),
        upstream_headers: config
            .upstream_headers
            .iter()
            .map(|(name, source)| (name.clone(), *source))
            .collect(),
        audit_headers: config.audit.headers.clone(),
        svid_cache,
    }
}

/// Loads everything the config names into an [`Authorizer`], reading the
/// process environment.
pub fn authorizer(config: &Config) -> Result<Arc<Authorizer>, Vec<StartupError>> {
    load(config, |name| std::env::var(name).ok()).map(|l| l.authorizer)
}

/// Starts the live sources and the admin listener, then serves until
/// `shutdown`.
pub async fn run(
    config: &Config,
    loaded: Loaded,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let Loaded {
        authorizer,
        metrics,
        configured,
        file_bundles,
        policy_file,
        workload_api,
    } = loaded;

    let initial = file_bundles
        .iter()
        .map(|(td, (_, _, bundle))| (td.clone(), Arc::clone(bundle)))
        .collect();
    let store = BundleStore::new(
        Arc::clone(&authorizer),
        Arc::clone(&metrics),
        configured,
        initial,
    );
    let mut live = LiveFiles::new(
        Arc::clone(&authorizer),
        Arc::clone(&store),
        Arc::clone(&metrics),
    );
    live.policy(policy_file.0, &policy_file.1);
    for (td, (path, bytes, _)) in file_bundles {
        live.bundle(td, path, &bytes);
    }
    if let Err(e) = live.watch(RESYNC) {
        tracing::error!("{e}: rules and bundle files will not be reloaded");
    }
    if let Some(source) = workload_api {
        tracing::info!(endpoint = %source.endpoint, trust_domains = ?source.trust_domains, "streaming bundles from the Workload API");
        source.spawn(Arc::clone(&store), Arc::clone(&metrics));
    }

    if let Some(address) = config.admin.as_deref().and_then(|a| a.parse().ok()) {
        let listener = server::bind(address).await?;
        tracing::info!(address = %listener.local_addr().unwrap_or(address), "admin listening");
        admin::spawn(
            listener,
            AdminState {
                store: Arc::clone(&store),
                metrics: Arc::clone(&metrics),
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
    let policy = authorizer.policy();
    tracing::info!(
        address = %local,
        policy_version = policy.version(),
        rules = policy.rules().len(),
        pending_trust_domains = ?store.pending(),
        "listening"
    );
    server::serve(
        listener,
        authorizer,
        store.ready(),
        shutdown,
        config.shutdown_grace.0,
    )
    .await
}
