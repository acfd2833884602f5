//! Startup: from a validated [`Config`] to a running server.
//!
//! Data flow: the rules file, every trust domain's bundle and the workload
//! are loaded here, all problems reported together (a bad one exits with
//! code 64 before anything listens); then the [`Authorizer`] is served until
//! a shutdown signal.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use crate::config::Config;
use crate::decision::{Authorizer, DecisionSettings, TokenSettings};
use crate::identity::bundle::{self, BundleError, DomainBundle, TrustBundles};
use crate::identity::jwt::JwtSettings;
use crate::identity::x509::CacheSettings;
use crate::policy::{Policy, PolicyError};
use crate::server::{self, ServeError};
use crate::workload::{Workload, WorkloadError};

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
}

/// Loads everything the config names into an [`Authorizer`]; every problem
/// found is returned, not just the first.
pub fn authorizer(config: &Config) -> Result<Authorizer, Vec<StartupError>> {
    let mut errors = Vec::new();
    let policy = Policy::load(&config.resolve(&config.policy))
        .map_err(|e| errors.push(e.into()))
        .ok();
    let bundles = load_bundles(config).map_err(|e| errors.extend(e)).ok();
    let workload = Workload::load(&config.workload, |name| std::env::var(name).ok())
        .map_err(|e| errors.push(e.into()))
        .ok();
    let (Some(policy), Some(bundles), Some(workload)) = (policy, bundles, workload) else {
        return Err(errors);
    };
    for warning in policy.warnings() {
        tracing::warn!("{warning}");
    }
    let svid_cache = CacheSettings {
        max_entries: config.cache.svid_entries,
        max_ttl: config.cache.svid_max_ttl.0,
    };
    let settings = DecisionSettings {
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
    };
    Ok(Authorizer::new(
        Arc::new(policy),
        Arc::new(bundles),
        workload,
        settings,
    ))
}

/// Loads the bundle of every configured trust domain.
pub fn load_bundles(config: &Config) -> Result<TrustBundles, Vec<StartupError>> {
    let mut domains: HashMap<String, DomainBundle> = HashMap::new();
    let mut errors = Vec::new();
    for (name, td) in &config.trust_domains {
        match bundle::load_file(&config.resolve(&td.bundle)) {
            Ok(loaded) => {
                domains.insert(name.clone(), loaded.bundle);
            }
            Err(source) => errors.push(StartupError::Bundle {
                trust_domain: name.clone(),
                source,
            }),
        }
    }
    if errors.is_empty() {
        Ok(TrustBundles::from_domains(domains))
    } else {
        Err(errors)
    }
}

/// Binds the configured address and serves `authorizer` until `shutdown`.
pub async fn run(
    config: &Config,
    authorizer: Arc<Authorizer>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let Some(address) = config.listen_addr() else {
        // Validated when the config was loaded.
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
    let bundles = authorizer.bundles();
    let mut trust_domains: Vec<&str> = bundles.trust_domains().collect();
    trust_domains.sort_unstable();
    tracing::info!(
        address = %local,
        policy_version = policy.version(),
        rules = policy.rules().len(),
        trust_domains = ?trust_domains,
        "listening"
    );
    server::serve(listener, authorizer, shutdown, config.shutdown_grace.0).await
}
