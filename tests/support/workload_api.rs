//! A SPIFFE Workload API server for tests: it serves X.509 and JWT bundles
//! on a Unix socket, pushes new ones to every open stream when told, and can
//! vanish like a crashed agent. Its gRPC code is generated from
//! `proto/workload.proto` (see `generated_code_matches_the_proto`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use tokio::sync::watch;
use tokio_stream::wrappers::{UnixListenerStream, WatchStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

// Generated: rustfmt must leave it as the generator wrote it, or the check
// against the proto would fail.
#[rustfmt::skip]
#[allow(clippy::all, clippy::pedantic, missing_docs, dead_code)]
#[path = "workload_api/generated.rs"]
pub mod pb;

use pb::spiffe_workload_api_server::{SpiffeWorkloadApi, SpiffeWorkloadApiServer};

/// The bundles the server delivers, keyed by trust domain SPIFFE ID
/// (`spiffe://example.org`).
#[derive(Debug, Clone, Default)]
pub struct Bundles {
    /// Concatenated DER certificates per trust domain.
    pub x509: HashMap<String, Vec<u8>>,
    /// JWK Set JSON per trust domain.
    pub jwt: HashMap<String, Vec<u8>>,
    /// Whether the agent refuses the workload (`PermissionDenied`).
    pub denied: bool,
}

/// A running test Workload API.
pub struct WorkloadApi {
    /// Its Unix socket.
    pub socket: PathBuf,
    bundles: watch::Sender<Bundles>,
    server: tokio::task::JoinHandle<()>,
}

struct Service {
    bundles: watch::Receiver<Bundles>,
}

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The spec makes servers refuse calls without this metadata, so that a
/// browser or proxy cannot be tricked into calling the agent.
fn check_metadata<T>(request: &Request<T>) -> Result<(), Status> {
    match request.metadata().get("workload.spiffe.io") {
        Some(v) if v == "true" => Ok(()),
        _ => Err(Status::invalid_argument(
            "security header missing from request",
        )),
    }
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for Service {
    type FetchX509SVIDStream = Streamed<pb::X509svidResponse>;
    type FetchX509BundlesStream = Streamed<pb::X509BundlesResponse>;
    type FetchJWTBundlesStream = Streamed<pb::JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        _request: Request<pb::X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        Err(Status::unimplemented(
            "this test server only serves bundles",
        ))
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<pb::X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        check_metadata(&request)?;
        let stream = WatchStream::new(self.bundles.clone()).map(|b| {
            if b.denied {
                return Err(Status::permission_denied("no identity issued"));
            }
            Ok(pb::X509BundlesResponse {
                crl: Vec::new(),
                bundles: b.x509,
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn fetch_jwtsvid(
        &self,
        _request: Request<pb::JwtsvidRequest>,
    ) -> Result<Response<pb::JwtsvidResponse>, Status> {
        Err(Status::unimplemented(
            "this test server only serves bundles",
        ))
    }

    async fn fetch_jwt_bundles(
        &self,
        request: Request<pb::JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        check_metadata(&request)?;
        let stream = WatchStream::new(self.bundles.clone()).map(|b| {
            if b.denied {
                return Err(Status::permission_denied("no identity issued"));
            }
            Ok(pb::JwtBundlesResponse { bundles: b.jwt })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn validate_jwtsvid(
        &self,
        _request: Request<pb::ValidateJwtsvidRequest>,
    ) -> Result<Response<pb::ValidateJwtsvidResponse>, Status> {
        Err(Status::unimplemented(
            "this test server only serves bundles",
        ))
    }
}

impl WorkloadApi {
    /// Starts serving `bundles` on `socket` (in the current runtime).
    pub fn start(socket: &Path, bundles: Bundles) -> WorkloadApi {
        WorkloadApi::serve(socket, bundles, None)
    }

    /// [`WorkloadApi::start`], also serving Envoy's SDS on the same socket,
    /// as a SPIRE agent does.
    pub fn start_agent(socket: &Path, bundles: Bundles, sds: super::sds::Sds) -> WorkloadApi {
        WorkloadApi::serve(socket, bundles, Some(sds))
    }

    fn serve(socket: &Path, bundles: Bundles, sds: Option<super::sds::Sds>) -> WorkloadApi {
        let _ = std::fs::remove_file(socket);
        let listener = tokio::net::UnixListener::bind(socket).unwrap();
        let (tx, rx) = watch::channel(bundles);
        let service = SpiffeWorkloadApiServer::new(Service { bundles: rx });
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .add_optional_service(sds.map(super::sds::Sds::service))
                .serve_with_incoming(UnixListenerStream::new(listener))
                .await;
        });
        WorkloadApi {
            socket: socket.to_owned(),
            bundles: tx,
            server,
        }
    }

    /// The endpoint URI clients use.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Pushes new bundles to every open stream.
    pub fn set(&self, bundles: Bundles) {
        self.bundles.send_replace(bundles);
    }

    /// Refuses the workload from now on (`PermissionDenied`).
    pub fn deny(&self) {
        self.bundles.send_replace(Bundles {
            denied: true,
            ..Bundles::default()
        });
    }

    /// Vanishes like a crashed agent: connections drop, the socket goes.
    pub fn crash(self) {
        self.server.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for WorkloadApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Bundles for one trust domain: X.509 authorities (DER) and a JWK Set.
pub fn bundles_for(trust_domain: &str, x509_der: &[&[u8]], jwks: Option<&str>) -> Bundles {
    let id = format!("spiffe://{trust_domain}");
    let mut bundles = Bundles::default();
    if !x509_der.is_empty() {
        bundles.x509.insert(id.clone(), x509_der.concat());
    }
    if let Some(jwks) = jwks {
        bundles.jwt.insert(id, jwks.as_bytes().to_vec());
    }
    bundles
}
