//! `celador capture`: an ext_authz server that saves each `CheckRequest`
//! Envoy sends it as JSON that `celador eval --input` reads, and denies
//! every check ("capture only").
//!
//! Data flow: Envoy (pointed at the capture's address instead of
//! celador's) -> `Check` -> [`crate::authoring::capture::to_json`]
//! (credentials redacted unless `--include-credentials`) -> one file per
//! check in `--out` -> a 403 answer with `x-celador-reason: capture_only`.
//! It never allows: a capture pointed at by mistake closes the route, it
//! does not open it. A development tool, never on the request path of
//! `serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse, DeniedHttpResponse};
use envoy_types::pb::envoy::r#type::v3::{HttpStatus, StatusCode};
use envoy_types::pb::google::rpc;

use crate::engine::redaction::Redaction;

/// Save each CheckRequest Envoy sends as JSON for `celador eval --input`,
/// and deny every check ("capture only"): point Envoy's ext_authz cluster
/// at it instead of `celador serve`.
#[derive(Debug, clap::Args)]
pub struct CaptureArgs {
    /// The gRPC address to listen on (the example Envoy asks
    /// 127.0.0.1:9191).
    #[arg(long, default_value = "127.0.0.1:9191")]
    listen: SocketAddr,
    /// The directory each check is written to, as `check-0001.json`, ...
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Stop after this many checks (default: run until interrupted).
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Write credentials (authorization, cookies, tokens, query values) as
    /// received instead of `<redacted>`. The files are often shared: leave
    /// them out unless the rules under study read them.
    #[arg(long)]
    include_credentials: bool,
    /// Another header whose value is written as `<redacted>`; repeatable.
    #[arg(long = "redact-header", value_name = "NAME")]
    redact: Vec<String>,
    /// A query parameter whose value is written as received (every other
    /// is `<redacted>`); repeatable.
    #[arg(long = "show-query-param", value_name = "NAME")]
    show_query: Vec<String>,
}

/// What the server shares between checks.
struct Capture {
    out: PathBuf,
    redaction: Option<Redaction>,
    written: AtomicU64,
    count: Option<u64>,
    done: tokio::sync::Notify,
}

/// Runs `celador capture`.
pub fn run(args: CaptureArgs) -> ExitCode {
    if let Err(e) = std::fs::create_dir_all(&args.out) {
        complain!("celador: cannot create {}: {e}", args.out.display());
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            complain!("celador: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let capture = Arc::new(Capture {
        out: args.out.clone(),
        redaction: (!args.include_credentials)
            .then(|| Redaction::new(args.redact, args.show_query)),
        written: AtomicU64::new(0),
        count: args.count,
        done: tokio::sync::Notify::new(),
    });
    match runtime.block_on(serve(args.listen, capture)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            complain!("celador: {e}");
            ExitCode::from(super::EXIT_UNAVAILABLE)
        }
    }
}

async fn serve(listen: SocketAddr, capture: Arc<Capture>) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let address = listener
        .local_addr()
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    complain!(
        "celador capture: listening on {address}; each check is written to {} ({}) and denied",
        capture.out.display(),
        if capture.redaction.is_some() {
            "credentials redacted"
        } else {
            "CREDENTIALS INCLUDED"
        }
    );
    let done = Arc::clone(&capture);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let server = tonic::transport::Server::builder()
        .add_service(AuthorizationServer::from_arc(capture))
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stopped.await;
        });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result.map_err(|e| format!("the gRPC server failed: {e}")),
        () = done.done.notified() => {}
        () = crate::edge::server::shutdown_signal() => {}
    }
    // The last answer is on its way: a second for it, not for a client
    // that keeps its connection open.
    let _ = stop.send(());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), server).await;
    Ok(())
}

#[tonic::async_trait]
impl Authorization for Capture {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let json = crate::authoring::capture::to_json(request.get_ref(), self.redaction.as_ref())
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        let text = serde_json::to_string_pretty(&json).unwrap_or_default();
        match write_new(&self.out, &text).await {
            Ok(file) => {
                let field = |name: &str| {
                    json.pointer(&format!("/attributes/request/http/{name}"))
                        .and_then(|v| v.as_str())
                        .unwrap_or_default()
                        .to_owned()
                };
                complain!(
                    "wrote {} ({} {})",
                    file.display(),
                    field("method"),
                    field("path")
                );
                let written = self.written.fetch_add(1, Ordering::SeqCst) + 1;
                if self.count.is_some_and(|count| written >= count) {
                    self.done.notify_one();
                }
            }
            Err(e) => complain!(
                "celador capture: cannot write to {}: {e}",
                self.out.display()
            ),
        }
        Ok(tonic::Response::new(capture_only()))
    }
}

/// Writes `text` to the first free `check-NNNN.json` in `dir` (a file of an
/// earlier capture is never overwritten).
async fn write_new(dir: &Path, text: &str) -> std::io::Result<PathBuf> {
    use tokio::io::AsyncWriteExt as _;
    for n in 1..=u32::MAX {
        let path = dir.join(format!("check-{n:04}.json"));
        match tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
        {
            Ok(mut file) => {
                file.write_all(text.as_bytes()).await?;
                file.write_all(b"\n").await?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free file name"))
}

/// A 403 with `x-celador-reason: capture_only`: a capture allows nothing.
fn capture_only() -> CheckResponse {
    let reason = "capture_only";
    CheckResponse {
        status: Some(rpc::Status {
            code: tonic::Code::PermissionDenied as i32,
            message: "capture only".to_owned(),
            details: Vec::new(),
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: StatusCode::Forbidden as i32,
            }),
            headers: vec![HeaderValueOption {
                header: Some(HeaderValue {
                    key: "x-celador-reason".to_owned(),
                    value: reason.to_owned(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            body: format!(
                "{{\"reason\":\"{reason}\",\"detail\":\"celador capture records checks and allows none\"}}\n"
            ),
        })),
        ..Default::default()
    }
}
