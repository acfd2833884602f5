//! `celador capture`: an ext_authz server that saves each `CheckRequest`
//! Envoy sends it as JSON that `celador eval --input` reads, and denies
//! every check ("capture only").
//!
//! Data flow: Envoy (pointed at the capture's address instead of
//! celador's) -> `Check` -> [`crate::authoring::capture::to_json`]
//! (credentials redacted unless `--include-credentials`) -> a 403 answer
//! with `x-celador-reason: capture_only`, and one file per check in `--out`,
//! written after the answer on a blocking task (the answer waits on neither
//! the directory nor the disk).
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
    /// What the log shows of a check's path: always redacted, whatever
    /// `--include-credentials` writes.
    logged: Redaction,
    /// The next `check-NNNN.json` to try: found once at start-up, so that
    /// an answer never waits on a scan of the directory.
    next: Arc<AtomicU64>,
    /// Bounds the writes in flight: a check beyond it is answered and not
    /// saved, rather than held.
    writes: Arc<tokio::sync::Semaphore>,
    written: Arc<AtomicU64>,
    count: Option<u64>,
    done: Arc<tokio::sync::Notify>,
}

/// Writes in flight at most (each a check's JSON, a few KiB).
const MAX_PENDING_WRITES: usize = 64;

/// Runs `celador capture`.
pub fn run(args: CaptureArgs) -> ExitCode {
    if let Err(e) = create_private_dir(&args.out) {
        complain!("celador: cannot create {}: {e}", args.out.display());
        return ExitCode::FAILURE;
    }
    let next = match next_free(&args.out) {
        Ok(next) => next,
        Err(e) => {
            complain!("celador: cannot read {}: {e}", args.out.display());
            return ExitCode::FAILURE;
        }
    };
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
    let logged = Redaction::new(args.redact, args.show_query);
    let capture = Arc::new(Capture {
        out: args.out.clone(),
        redaction: (!args.include_credentials).then(|| logged.clone()),
        logged,
        next: Arc::new(AtomicU64::new(next)),
        writes: Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_WRITES)),
        written: Arc::new(AtomicU64::new(0)),
        count: args.count,
        done: Arc::new(tokio::sync::Notify::new()),
    });
    match runtime.block_on(serve(args.listen, capture)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            complain!("celador: {e}");
            ExitCode::from(super::EXIT_UNAVAILABLE)
        }
    }
}

/// Creates `dir` (and its parents) readable by the user alone, as the
/// files in it are: captures hold request data. One that exists is left
/// as it is.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The index after the highest `check-NNNN.json` in `dir` (1 in an empty
/// one).
fn next_free(dir: &Path) -> std::io::Result<u64> {
    let mut highest: u64 = 0;
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let n = name.to_str().and_then(|n| {
            n.strip_prefix("check-")?
                .strip_suffix(".json")?
                .parse()
                .ok()
        });
        highest = highest.max(n.unwrap_or(0));
    }
    Ok(highest.saturating_add(1))
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
    let done = Arc::clone(&capture.done);
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
        () = done.notified() => {}
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
        self.save(&json);
        Ok(tonic::Response::new(capture_only()))
    }
}

impl Capture {
    /// Writes `json` to the next free file on a blocking task, after the
    /// answer: the answer waits on neither the directory nor the disk.
    fn save(&self, json: &serde_json::Value) {
        let field = |name: &str| {
            json.pointer(&format!("/attributes/request/http/{name}"))
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        // The log is read by more eyes than the files: its path is
        // redacted even when the files hold credentials.
        let path = field("path");
        let about = format!(
            "{} {}",
            field("method"),
            self.logged.header_value(":path", &path)
        );
        let Ok(permit) = Arc::clone(&self.writes).try_acquire_owned() else {
            complain!("celador capture: {MAX_PENDING_WRITES} writes pending; not saved: {about}");
            return;
        };
        let text = serde_json::to_string_pretty(json).unwrap_or_default();
        let (dir, next) = (self.out.clone(), Arc::clone(&self.next));
        let (written, done, count) = (
            Arc::clone(&self.written),
            Arc::clone(&self.done),
            self.count,
        );
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            match write_new(&dir, &next, &text) {
                Ok(file) => {
                    complain!("wrote {} ({about})", file.display());
                    let written = written.fetch_add(1, Ordering::SeqCst) + 1;
                    if count.is_some_and(|count| written >= count) {
                        done.notify_one();
                    }
                }
                Err(e) => complain!("celador capture: cannot write to {}: {e}", dir.display()),
            }
        });
    }
}

/// Writes `text` to `check-NNNN.json` in `dir`, NNNN the next index
/// `next` gives, readable by the user alone; a file that exists (written
/// since start-up by another) is never overwritten: the next index is
/// tried.
fn write_new(dir: &Path, next: &AtomicU64, text: &str) -> std::io::Result<PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    // A bound on the collisions stepped past, not on the files.
    for _ in 0..1000 {
        let n = next.fetch_add(1, Ordering::SeqCst);
        let path = dir.join(format!("check-{n:04}.json"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(mut file) => {
                file.write_all(text.as_bytes())?;
                file.write_all(b"\n")?;
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
