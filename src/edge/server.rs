//! The gRPC server: `envoy.service.auth.v3.Authorization/Check` and the
//! standard gRPC health service, with graceful shutdown.
//!
//! Data flow: Envoy's ext_authz filter calls `Check`; the [`CheckService`]
//! reads the message within the [`Limits`] and passes the request to the
//! shared [`ExtAuthz`], and returns its answer. On shutdown
//! the health service turns `NOT_SERVING`, the server stops accepting
//! connections and sends GOAWAY, and in-flight checks finish, within the
//! configured grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use super::ExtAuthz;
use super::admission::Limits;
use super::service::{CheckService, SERVICE};

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
    (ext_authz, limits): (Arc<ExtAuthz>, Limits),
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
    let server = http2(&limits)
        .add_service(health)
        .add_service(CheckService::new(ext_authz, limits))
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

/// tonic's server with the HTTP/2 settings of the Check listener. It sets
/// no `max_concurrent_streams`: Envoy fails a check above a server's stream
/// limit instead of queueing it, and a fail-open Envoy allows it.
fn http2(limits: &Limits) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        // The only peer on this listener is the pod's own Envoy, which
        // multiplexes every user's checks over a few connections and cancels
        // a check (RST_STREAM) whenever its downstream client goes away. h2
        // answers more than 20 streams cancelled before they are accepted
        // with GOAWAY(ENHANCE_YOUR_CALM), and more than 1,024 streams it
        // resets itself over a connection's life (each early answer to a
        // stream whose body is still coming is one) the same way: either
        // would fail every other user's check in flight on that
        // connection, which a fail-open Envoy allows. A cancelled stream
        // must cancel that stream only, so neither limit applies. What
        // bounds memory instead: unread request bytes by the flow-control
        // windows below, a cancelled stream's state is freed when it is
        // accepted (the next poll of the connection), and the checks read
        // at once by the admission limits.
        .http2_max_pending_accept_reset_streams(Some(usize::MAX))
        .http2_max_local_error_reset_streams(None)
        .initial_stream_window_size(limits.stream_window)
        .initial_connection_window_size(limits.connection_window)
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
    reporter.set_service_status(SERVICE, status).await;
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
