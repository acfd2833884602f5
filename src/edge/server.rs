//! The gRPC server: `envoy.service.auth.v3.Authorization/Check` and the
//! standard gRPC health service, with graceful shutdown.
//!
//! Data flow: Envoy's ext_authz filter calls `Check`; the handler passes the
//! request to the shared [`ExtAuthz`] and returns its answer. On shutdown
//! the health service turns `NOT_SERVING`, the server stops accepting
//! connections and sends GOAWAY, and in-flight checks finish, within the
//! configured grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;

use super::ExtAuthz;

/// The largest `CheckRequest` decoded. tonic's default (4 MiB) is below what
/// Envoy can send (headers up to `max_request_headers_kb`, 8 MiB at most,
/// plus a buffered body), and a request refused here is a gRPC error, which
/// a fail-open Envoy turns into an allow.
pub const MAX_CHECK_REQUEST_BYTES: usize = 16 << 20;

/// The `Authorization` service over an [`ExtAuthz`].
#[derive(Debug, Clone)]
pub struct AuthorizationService {
    ext_authz: Arc<ExtAuthz>,
}

impl AuthorizationService {
    /// A service answering with `ext_authz`.
    pub fn new(ext_authz: Arc<ExtAuthz>) -> Self {
        AuthorizationService { ext_authz }
    }
}

#[tonic::async_trait]
impl Authorization for AuthorizationService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        // `ExtAuthz::check` guards the decision itself; this also covers
        // reading the request, so that no panic becomes a reset stream.
        let request = request.get_ref();
        let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.ext_authz.check(request)
        }));
        answer
            .unwrap_or_else(|_| Ok(super::response::internal_error()))
            .map(Response::new)
    }
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The transport failed.
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Binds `address`.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Bind { address, source })
}

/// Serves until `shutdown` completes, then drains for at most `grace`. The
/// health service reports `SERVING` while `ready` is true.
pub async fn serve(
    listener: TcpListener,
    health_listener: Option<TcpListener>,
    ext_authz: Arc<ExtAuthz>,
    mut ready: tokio::sync::watch::Receiver<bool>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Result<(), ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let initially_ready = *ready.borrow_and_update();
    set_health(&reporter, initially_ready).await;
    let readiness = {
        let reporter = reporter.clone();
        tokio::spawn(async move {
            while ready.changed().await.is_ok() {
                let now = *ready.borrow_and_update();
                tracing::info!(ready = now, "readiness changed");
                set_health(&reporter, now).await;
            }
        })
    };

    if let Some(listener) = health_listener {
        spawn_health_listener(listener, health.clone());
    }

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(health)
        .add_service(
            AuthorizationServer::new(AuthorizationService::new(ext_authz))
                .max_decoding_message_size(MAX_CHECK_REQUEST_BYTES),
        )
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stopped.await;
        });
    tokio::pin!(server);

    tokio::select! {
        result = &mut server => return result.map_err(ServeError::from),
        () = shutdown => {}
    }
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        "shutting down: finishing in-flight checks"
    );
    readiness.abort();
    set_health(&reporter, false).await;
    let _ = stop.send(());
    match tokio::time::timeout(grace, server).await {
        Ok(result) => result.map_err(ServeError::from),
        Err(_) => {
            tracing::warn!("the shutdown grace period ended with connections still open");
            Ok(())
        }
    }
}

/// Serves only the gRPC health service on `listener`, for the kubelet. It
/// lives as long as the process, reporting NOT_SERVING during the drain like
/// the main listener.
fn spawn_health_listener<S>(listener: TcpListener, health: S)
where
    S: tower::Service<
            tonic::codegen::http::Request<tonic::body::Body>,
            Response = tonic::codegen::http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    tokio::spawn(async move {
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let served = tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(incoming)
            .await;
        if let Err(e) = served {
            tracing::error!("the gRPC health listener failed: {e}");
        }
    });
}

async fn set_health(reporter: &tonic_health::server::HealthReporter, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    reporter
        .set_service_status(
            <AuthorizationServer<AuthorizationService> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
    reporter.set_service_status("", status).await;
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
