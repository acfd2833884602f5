//! `celador inject` as a server: its arguments checked, its runtime
//! started, and the webhook served until shutdown.
//!
//! Data flow: the command line hands over the injector's settings and the
//! webhook's arguments -> [`WebhookArgs::check`] (every problem at once) ->
//! a two-thread runtime -> [`super::webhook::serve`] until the shutdown
//! future completes. The command line turns each [`ServeError`] into its
//! exit code.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::settings::Settings;
use super::webhook;
use crate::app::tls::ReloadingCert;

/// The webhook's arguments, as given.
#[derive(Debug)]
pub struct WebhookArgs<'a> {
    /// `--listen`: the HTTPS address.
    pub listen: &'a str,
    /// `--tls-cert`: the serving certificate (PEM).
    pub cert: Option<PathBuf>,
    /// `--tls-key`: its key (PEM).
    pub key: Option<PathBuf>,
    /// `--tls-reload-interval`: how often the certificate files are read.
    pub reload: &'a str,
}

/// The webhook's arguments, checked.
struct Checked {
    address: SocketAddr,
    every: Duration,
    certificate: ReloadingCert,
}

/// Why the webhook could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Its arguments or its log settings cannot be used: each problem.
    #[error("{}", .0.join("\n"))]
    Unusable(Vec<String>),
    /// The runtime did not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    /// The address cannot be bound.
    #[error(transparent)]
    Bind(webhook::WebhookError),
}

impl WebhookArgs<'_> {
    /// The arguments checked: every problem at once.
    fn check(self) -> Result<Checked, ServeError> {
        let mut problems = Vec::new();
        let listen = self.listen;
        let address = listen
            .parse::<SocketAddr>()
            .map_err(|_| {
                problems.push(format!(
                    "--listen: '{listen}' is not an address like 0.0.0.0:8443"
                ))
            })
            .ok();
        let every = match crate::app::config::parse_duration(self.reload) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                problems.push("--tls-reload-interval: must be more than 0".to_owned());
                None
            }
            Err(e) => {
                problems.push(format!("--tls-reload-interval: {e}"));
                None
            }
        };
        let certificate = match (self.cert, self.key) {
            (Some(cert), Some(key)) => ReloadingCert::load(&cert, &key)
                .map_err(|e| problems.push(e.to_string()))
                .ok(),
            _ => {
                problems.push("--tls-cert and --tls-key are both needed".to_owned());
                None
            }
        };
        match (address, every, certificate) {
            (Some(address), Some(every), Some(certificate)) if problems.is_empty() => Ok(Checked {
                address,
                every,
                certificate,
            }),
            _ => Err(ServeError::Unusable(problems)),
        }
    }
}

/// Serves the webhook as `args` say until `shutdown` completes: logs set
/// up, then a two-thread runtime.
pub fn run(
    settings: Settings,
    args: WebhookArgs<'_>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let checked = args.check()?;
    let _telemetry =
        crate::app::telemetry::init(&settings.log).map_err(|e| ServeError::Unusable(vec![e]))?;
    for key in settings.deprecated_config_keys() {
        tracing::warn!(
            key,
            "config.{key}: a deprecated top-level key of the sidecar config; the injector writes it as governance.{key} (write it there)"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("celador-inject")
        .build()
        .map_err(ServeError::Runtime)?;
    runtime.block_on(serve(settings, checked, shutdown))
}

async fn serve(
    settings: Settings,
    checked: Checked,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let address = checked.address;
    let listener = webhook::bind(address).await.map_err(ServeError::Bind)?;
    tracing::info!(
        address = %listener.local_addr().unwrap_or(address),
        image = %settings.image,
        rules = %settings.rules.config_map,
        "injector listening"
    );
    webhook::serve(
        listener,
        Arc::new(settings),
        Arc::new(checked.certificate),
        checked.every,
        shutdown,
    )
    .await;
    tracing::info!("stopped");
    Ok(())
}
