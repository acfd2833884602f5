//! Opening connections to the store: the URL, the password from a file or
//! an environment variable (never from logs), and TLS with a CA file.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ConnectionInfo, IntoConnectionInfo};

use super::StoreSettings;

/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A store that can be connected to.
#[derive(Debug, Clone)]
pub struct Endpoint {
    client: Client,
    /// The URL without credentials, for logs and outputs.
    pub shown: String,
}

/// `url` with any user and password taken out.
pub fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".into();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}://{host}{path}")
}

impl Endpoint {
    /// The endpoint `settings` describe, reading the password as they say
    /// (`env` reads environment variables).
    pub fn new(
        settings: &StoreSettings,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Endpoint, String> {
        let shown = without_credentials(&settings.url);
        if !(settings.url.starts_with("redis://") || settings.url.starts_with("rediss://")) {
            return Err(format!(
                "{shown}: the store's URL starts with redis:// or rediss://"
            ));
        }
        let info: ConnectionInfo = settings
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| format!("{shown}: not a Redis URL: {e}"))?;
        // No `CLIENT SETINFO` after connecting: Redis 7.0 has no such
        // command and an ACL cannot name it there, while 7.2+ would log a
        // refusal per connection under docs/fleet.md's least-privilege
        // users; the library name is only cosmetic (`CLIENT LIST`).
        let mut redis = info.redis_settings().clone().set_skip_set_lib_name();
        if let Some(user) = &settings.username {
            redis = redis.set_username(user);
        }
        if let Some(path) = &settings.password_file {
            let secret = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "cannot read the store's password file {}: {e}",
                    path.display()
                )
            })?;
            redis = redis.set_password(secret.trim_end_matches(['\r', '\n']));
        } else if let Some(name) = &settings.password_env {
            let secret = env(name).ok_or_else(|| {
                format!("the environment variable {name} (the store's password) is not set")
            })?;
            redis = redis.set_password(secret);
        }
        let info = info.set_redis_settings(redis);
        let client = match &settings.ca_file {
            Some(path) => {
                if !settings.url.starts_with("rediss://") {
                    return Err(format!("{shown}: a CA file is for rediss:// URLs"));
                }
                let root = std::fs::read(path).map_err(|e| {
                    format!("cannot read the store's CA file {}: {e}", path.display())
                })?;
                let certs = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root),
                };
                Client::build_with_tls(info, certs)
            }
            None => Client::open(info),
        }
        .map_err(|e| format!("{shown}: {e}"))?;
        install_crypto_provider();
        Ok(Endpoint { client, shown })
    }

    /// A new connection; commands on it time out after `response_timeout`
    /// (`None`: never, for blocking reads bounded by the caller).
    pub async fn connect(
        &self,
        response_timeout: Option<Duration>,
    ) -> redis::RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(response_timeout);
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }
}

/// redis-rs builds its TLS configs with the process-wide rustls provider;
/// celador's is ring (its own configs name it), installed here once.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
