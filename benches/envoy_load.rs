//! A load benchmark through a real Envoy 1.40, run on demand (never in CI):
//! `scripts/envoy-load.sh`.
//!
//! One Envoy (one worker) has mTLS listeners that differ only in
//! authorization: none, Envoy's RBAC filter with a CEL condition expressing
//! the rule, ext_authz to a do-nothing server (the floor: the price of any
//! ext_authz server), the same on celador's current-thread runtime
//! (`floor_ct`), and ext_authz to celador, behind the filter `celador
//! envoy-config` prints and behind one sending every header
//! (`unfiltered`). Envoy and the authorization
//! servers are pinned to CPU 0, this load generator to CPU 1. The client is
//! HTTP/2 over TLS with a client SVID (h2load cannot present one). Each
//! point (4 connections × 1 stream, 8 × 8) is warmed up, then measured by
//! request count, in rounds that interleave the variants; the report gives
//! medians and ratios, since this machine is shared and noisy.
//! `CELADOR_BIN` measures another celador binary; `CELADOR_BASELINE_BIN`
//! adds a second one as the variant `baseline`, to compare two builds in
//! one run.
//!
//! Then a fail-open flood: requests no rule allows, through a filter with
//! `failure_mode_allow: true` sending every header, at 200 and 400
//! concurrent streams with 56 KiB of headers and at 6,400 concurrent small
//! ones; each allowed request is one Envoy let through because celador's
//! answer did not come in time (Envoy's counters say why, celador's how
//! many it answered). The authorization clusters have the README's HTTP/2
//! flood limits and circuit breakers as high as Istio sets them, so that
//! every check reaches its server. `ENVOY_LOAD_FLOOD_ROUNDS` (2) sets how
//! many times, `ENVOY_LOAD_ROUNDS=0` runs the flood alone, and
//! `CELADOR_CONFIG_EXTRA` is appended to celador's config (say, `limits`).
#![allow(
    dead_code,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

#[path = "../tests/support/pki.rs"]
mod pki;
#[path = "envoy_load/rule_counts.rs"]
mod rule_counts;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const EXPORTER: &str = "spiffe://example.org/ns/batch/sa/exporter";
/// What a real client sends besides the request line: none of it is read
/// by the rules.
const HEADERS: &[(&str, &str)] = &[
    ("user-agent", "nightly-export/1.4.2 (linux; rust 1.95)"),
    ("accept", "text/csv, application/json;q=0.9, */*;q=0.1"),
    ("accept-encoding", "gzip, deflate, br, zstd"),
    ("accept-language", "en-GB,en;q=0.8"),
    (
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ),
    ("x-request-source", "batch/exporter/nightly"),
    ("x-correlation-id", "7f0c6c2e-0d9e-4f3b-9a57-2f1e5b8c4d11"),
    ("cache-control", "no-cache"),
];
const RULES: &str = r#"rules:
  - name: exporter-read-only
    effect: allow
    when: >
      source.id == "spiffe://example.org/ns/batch/sa/exporter" &&
      request.method == "GET" && request.path.startsWith("/export/")
"#;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--floor") {
        floor(&args[i + 1], args.iter().any(|a| a == "--current-thread"));
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        println!("envoy_load: a benchmark run on demand: scripts/envoy-load.sh");
        return;
    }
    let rounds = env("ENVOY_LOAD_ROUNDS", 3);
    let requests = env("ENVOY_LOAD_REQUESTS", 20_000);
    if let Ok(counts) = std::env::var("ENVOY_LOAD_RULE_COUNTS") {
        rule_counts::run(rounds, requests, &rule_counts::parse_counts(&counts));
        return;
    }
    run(rounds, requests);
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The do-nothing ext_authz server: OK to every check. Writes its port to
/// `port_file`. On tonic's usual multi-thread runtime, or, to tell the
/// runtime's share of a difference from celador's own work, on the
/// current-thread runtime celador uses on one core.
fn floor(port_file: &str, current_thread: bool) {
    use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
        Authorization, AuthorizationServer,
    };
    use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
    use envoy_types::pb::google::rpc;

    struct Floor;
    #[tonic::async_trait]
    impl Authorization for Floor {
        async fn check(
            &self,
            _: tonic::Request<CheckRequest>,
        ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
            Ok(tonic::Response::new(CheckResponse {
                status: Some(rpc::Status::default()),
                ..Default::default()
            }))
        }
    }
    let runtime = if current_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
    .enable_all()
    .build()
    .unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        std::fs::write(port_file, listener.local_addr().unwrap().port().to_string()).unwrap();
        tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(Floor))
            // TCP_NODELAY, as tonic's `serve` sets by default and celador
            // does: without it, Nagle's algorithm holds small answers back
            // until the previous one is acknowledged.
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            )
            .await
            .unwrap();
    });
}

/// A process pinned to CPU 0, killed when dropped.
struct Pinned(Child);

impl Drop for Pinned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pinned(name: &str, program: &Path, args: &[&str], dir: &Path) -> Pinned {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    Pinned(
        Command::new("taskset")
            .args(["-c", "0"])
            .arg(program)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} (is taskset installed?)",
                    program.display()
                )
            }),
    )
}

fn wait_for<T>(what: &str, dir: &Path, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            let mut logs = String::new();
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                if entry.path().extension().is_some_and(|e| e == "log") {
                    logs.push_str(&format!(
                        "{}:\n{}\n",
                        entry.path().display(),
                        std::fs::read_to_string(entry.path()).unwrap_or_default()
                    ));
                }
            }
            panic!("timed out waiting for {what}; logs:\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((
        status,
        text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned(),
    ))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// CPU time (user + system) of `pid` so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // Linux reports in clock ticks of 1/100 s.
    Duration::from_millis(ticks * 10)
}

/// `VmRSS` and `VmHWM` of `pid`, in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Setup {
    dir: tempfile::TempDir,
    client: (String, String),
    server_ca: String,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::Ca::root("example.org");
    let server_ca = pki::Ca::root("envoy server");
    let server = server_ca.leaf().dns("localhost").build();
    let client = ca.svid(EXPORTER);
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("example.org.pem", &ca.pem);
    write("server.pem", &server.pem);
    write("server.key", &server.key_pem);
    write("policy.yaml", RULES);
    Setup {
        client: (client.pem.clone(), client.key_pem.clone()),
        server_ca: server_ca.pem.clone(),
        dir,
    }
}

fn run(rounds: u64, requests: u64) {
    // The load generator runs on CPU 1.
    let _ = Command::new("taskset")
        .args(["-cp", "1", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status();
    let s = setup();
    let dir = s.dir.path();
    let celador_port = free_port();
    let admin_port = free_port();
    std::fs::write(
        dir.join("celador.yaml"),
        format!("listen: 127.0.0.1:{celador_port}\nadmin: 127.0.0.1:{admin_port}\npolicy: policy.yaml\ntrust_domains:\n  example.org:\n    bundle: example.org.pem\nlog:\n  format: json\n{}", std::env::var("CELADOR_CONFIG_EXTRA").unwrap_or_default()),
    )
    .unwrap();
    let celador_bin = std::env::var("CELADOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_BIN_EXE_celador")));
    let started = Instant::now();
    let celador = pinned(
        "celador",
        &celador_bin,
        &["serve", "--config", "celador.yaml"],
        dir,
    );
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    wait_for("celador to be ready", dir, || {
        http_get(admin, "/readyz").filter(|(status, _)| *status == 200)
    });
    let ready_after = started.elapsed();
    let celador_pid = celador.0.id();
    let idle_rss = memory(celador_pid).0;

    let me = std::env::current_exe().unwrap();
    let start_floor = |name: &str, extra: &[&str]| {
        let port_file = dir.join(format!("{name}.port"));
        let mut args = vec!["--floor", port_file.to_str().unwrap()];
        args.extend(extra);
        let floor = pinned(name, &me, &args, dir);
        let port: u16 = wait_for("the floor server", dir, || {
            std::fs::read_to_string(&port_file)
                .ok()?
                .trim()
                .parse()
                .ok()
        });
        (floor, port)
    };
    let (floor, floor_port) = start_floor("floor", &[]);
    let (floor_ct, floor_ct_port) = start_floor("floor_ct", &["--current-thread"]);

    let filter = Command::new(&celador_bin)
        .args(["envoy-config", "--config", "celador.yaml"])
        .current_dir(dir)
        .output()
        .unwrap();
    let celador_filter = String::from_utf8(filter.stdout).unwrap();
    // Optionally a second celador, another build, measured in the same run.
    let baseline_bin = std::env::var("CELADOR_BASELINE_BIN")
        .ok()
        .map(PathBuf::from);
    let baseline_port = free_port();
    let baseline = baseline_bin.as_ref().map(|bin| {
        std::fs::write(
            dir.join("baseline.yaml"),
            format!("listen: 127.0.0.1:{baseline_port}\npolicy: policy.yaml\ntrust_domains:\n  example.org:\n    bundle: example.org.pem\nlog:\n  format: json\n"),
        )
        .unwrap();
        let child = pinned("baseline", bin, &["serve", "--config", "baseline.yaml"], dir);
        std::thread::sleep(Duration::from_millis(500));
        child
    });
    // `unfiltered`: the same celador behind the filter without
    // `allowed_headers`, so Envoy sends every header: the gain of
    // `celador envoy-config` is the difference.
    // `floor_ct`: the floor on celador's current-thread runtime.
    // `*_failopen`: the same, behind a filter sending every header with
    // `failure_mode_allow: true`, for the flood below.
    let mut variants = vec!["none", "rbac", "floor", "floor_ct", "celador", "unfiltered"];
    if baseline.is_some() {
        variants.push("baseline");
    }
    variants.push("celador_failopen");
    if baseline.is_some() {
        variants.push("baseline_failopen");
    }
    let ports: Vec<u16> = variants.iter().map(|_| free_port()).collect();
    let envoy_config = bootstrap(
        &variants,
        &ports,
        (celador_port, baseline_port),
        (floor_port, floor_ct_port),
        &celador_filter,
    );
    std::fs::write(dir.join("envoy.yaml"), envoy_config).unwrap();
    let envoy_bin = envoy_binary();
    let envoy_admin = free_port();
    let _envoy = pinned(
        "envoy",
        &envoy_bin,
        &[
            "-c",
            "envoy.yaml",
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "--admin-address-path",
            "admin.txt",
            "-l",
            "error",
        ],
        dir,
    );
    let _ = envoy_admin;
    let envoy_admin: SocketAddr = wait_for("Envoy's admin address", dir, || {
        std::fs::read_to_string(dir.join("admin.txt"))
            .ok()?
            .trim()
            .parse()
            .ok()
    });
    wait_for("Envoy to be ready", dir, || {
        http_get(envoy_admin, "/ready").filter(|(_, body)| body.contains("LIVE"))
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tls = client_tls(&s);
    let points = [(4usize, 1usize), (8, 8)];
    let mut results: Vec<(usize, &str, Sample)> = Vec::new();
    let measured: Vec<&str> = variants
        .iter()
        .copied()
        .filter(|v| !v.ends_with("_failopen"))
        .collect();
    for round in 0..rounds {
        for (p, &(conns, streams)) in points.iter().enumerate() {
            for (v, variant) in variants.iter().enumerate() {
                if variant.ends_with("_failopen") {
                    continue;
                }
                let addr: SocketAddr = format!("127.0.0.1:{}", ports[v]).parse().unwrap();
                let authz_pid = match *variant {
                    "celador" | "unfiltered" => Some(celador_pid),
                    "floor" => Some(floor.0.id()),
                    "floor_ct" => Some(floor_ct.0.id()),
                    "baseline" => baseline.as_ref().map(|b| b.0.id()),
                    _ => None,
                };
                let sample = runtime.block_on(measure(
                    addr,
                    Arc::clone(&tls),
                    conns,
                    streams,
                    requests,
                    authz_pid,
                ));
                eprintln!(
                    "round {round} {conns}x{streams} {variant}: {:.0} req/s p50 {:?} p99 {:?} cpu/check {:?}",
                    sample.throughput, sample.p50, sample.p99, sample.cpu_per_request
                );
                results.push((p, variant, sample));
            }
        }
    }
    let (_, peak_rss) = memory(celador_pid);
    if rounds > 0 {
        report(
            &results,
            &points,
            &measured,
            ready_after,
            idle_rss,
            peak_rss,
        );
    }
    let floods = env("ENVOY_LOAD_FLOOD_ROUNDS", 2);
    let fail_open: Vec<(&str, u16, Option<u32>)> = variants
        .iter()
        .zip(&ports)
        .filter(|(v, _)| v.ends_with("_failopen"))
        .map(|(v, port)| {
            let pid = if v.starts_with("baseline") {
                baseline.as_ref().map(|b| b.0.id())
            } else {
                Some(celador_pid)
            };
            (*v, *port, pid)
        })
        .collect();
    if floods > 0 {
        let samples = runtime.block_on(floods_of_must_deny(
            &fail_open,
            &tls,
            floods,
            (envoy_admin, admin),
        ));
        report_floods(&samples);
    }
    drop(floor);
    drop(floor_ct);
    drop(celador);
}

fn envoy_binary() -> PathBuf {
    if let Ok(bin) = std::env::var("ENVOY_BIN") {
        return PathBuf::from(bin);
    }
    let installed =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tmp/envoy-1.40.0/envoy/_bin/envoy");
    assert!(
        installed.exists(),
        "no Envoy: set ENVOY_BIN, or run `cargo test --test envoy_e2e` once to install it"
    );
    installed
}

/// One Envoy, one listener per variant, each answering directly (no
/// upstream) once authorization lets the request through.
fn bootstrap(
    variants: &[&str],
    ports: &[u16],
    (celador, baseline): (u16, u16),
    (floor, floor_ct): (u16, u16),
    celador_filter: &str,
) -> String {
    let ext_authz_with = |cluster: &str, fail_open: bool| {
        format!(
            r#"- name: envoy.filters.http.ext_authz
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
    transport_api_version: V3
    grpc_service: {{ envoy_grpc: {{ cluster_name: {cluster} }}, timeout: 0.5s }}
    include_peer_certificate: true
    failure_mode_allow: {fail_open}"#
        )
    };
    let ext_authz = |cluster: &str| ext_authz_with(cluster, false);
    let rbac = r#"- name: envoy.filters.http.rbac
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
    rules:
      action: ALLOW
      policies:
        exporter-read-only:
          permissions: [{ any: true }]
          principals:
          - authenticated: { principal_name: { exact: "spiffe://example.org/ns/batch/sa/exporter" } }
          condition:
            call_expr:
              function: _&&_
              args:
              - call_expr:
                  function: _==_
                  args:
                  - select_expr: { operand: { ident_expr: { name: request } }, field: method }
                  - const_expr: { string_value: GET }
              - call_expr:
                  target: { select_expr: { operand: { ident_expr: { name: request } }, field: path } }
                  function: startsWith
                  args: [{ const_expr: { string_value: /export/ } }]"#;
    let mut listeners = String::new();
    for (variant, port) in variants.iter().zip(ports) {
        let filter = match *variant {
            "none" => String::new(),
            "rbac" => rbac.to_owned(),
            "floor" => ext_authz("floor"),
            "floor_ct" => ext_authz("floor_ct"),
            "unfiltered" => ext_authz("celador"),
            "celador_failopen" => ext_authz_with("celador", true),
            "baseline_failopen" => ext_authz_with("baseline", true),
            "baseline" => celador_filter
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .map(|l| l.replace("cluster_name: celador", "cluster_name: baseline"))
                .collect::<Vec<_>>()
                .join("\n"),
            _ => celador_filter
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .collect::<Vec<_>>()
                .join("\n"),
        };
        listeners.push_str(&listener(variant, *port, &filter));
    }
    format!(
        "admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}\nstatic_resources:\n  listeners:{listeners}\n  clusters:{}{}{}{}\n",
        cluster("celador", celador),
        cluster("baseline", baseline),
        cluster("floor", floor),
        cluster("floor_ct", floor_ct)
    )
}

/// Envoy's mTLS listener `variant` on `port`, with the HTTP filters
/// `filter` (YAML, unindented) before the router, answering directly.
fn listener(variant: &str, port: u16, filter: &str) -> String {
    let filter: String = filter.lines().map(|l| format!("          {l}\n")).collect();
    format!(
        r#"
  - name: {variant}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {variant}
          forward_client_cert_details: SANITIZE_SET
          set_current_client_cert_details: {{ cert: true, chain: true, uri: true }}
          route_config:
            virtual_hosts:
            - name: app
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200, body: {{ inline_string: ok }} }}
          http_filters:
{filter}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            alpn_protocols: [h2]
            tls_certificates:
            - certificate_chain: {{ filename: server.pem }}
              private_key: {{ filename: server.key }}
            validation_context:
              trusted_ca: {{ filename: example.org.pem }}
"#
    )
}

/// The cluster `name`: an authorization server on `port`, with the
/// README's HTTP/2 flood limits.
fn cluster(name: &str, port: u16) -> String {
    format!(
        r#"
  - name: {name}
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{ max_outbound_frames: 100000, max_outbound_control_frames: 100000 }} }}
    # As Istio sets them: every check is sent to the authorization server,
    # none refused by Envoy's circuit breakers.
    circuit_breakers: {{ thresholds: [{{ max_connections: 1000000, max_pending_requests: 1000000, max_requests: 1000000 }}] }}
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}"#
    )
}

fn client_tls(s: &Setup) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(s.server_ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(s.client.0.as_bytes())
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_slice(s.client.1.as_bytes()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// What one measured run saw.
#[derive(Debug, Clone)]
struct Sample {
    throughput: f64,
    p50: Duration,
    p99: Duration,
    cpu_per_request: Option<Duration>,
}

/// `conns` connections with `streams` requests in flight on each: a warm-up
/// of a tenth, then `requests` measured.
async fn measure(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    conns: usize,
    streams: usize,
    requests: u64,
    authz_pid: Option<u32>,
) -> Sample {
    let mut senders = Vec::new();
    for _ in 0..conns {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let stream = tokio_rustls::TlsConnector::from(Arc::clone(&tls))
            .connect(name, tcp)
            .await
            .unwrap();
        let (sender, connection) = h2::client::handshake(stream).await.unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        senders.push(sender);
    }
    let load = |n: u64| {
        let senders = senders.clone();
        async move {
            let per_worker = n / (conns * streams) as u64;
            let mut tasks = Vec::new();
            for sender in &senders {
                for _ in 0..streams {
                    let mut sender = sender.clone();
                    tasks.push(tokio::spawn(async move {
                        let mut latencies = Vec::with_capacity(per_worker as usize);
                        for _ in 0..per_worker {
                            let mut request =
                                http::Request::get("https://localhost/export/daily.csv");
                            for (name, value) in HEADERS {
                                request = request.header(*name, *value);
                            }
                            let request = request.body(()).unwrap();
                            let sent = Instant::now();
                            sender = sender.ready().await.unwrap();
                            let (response, _) = sender.send_request(request, true).unwrap();
                            let response = response.await.unwrap();
                            assert_eq!(response.status(), 200);
                            let mut body = response.into_body();
                            while let Some(chunk) = body.data().await {
                                let chunk = chunk.unwrap();
                                let _ = body.flow_control().release_capacity(chunk.len());
                            }
                            latencies.push(sent.elapsed());
                        }
                        latencies
                    }));
                }
            }
            let mut all = Vec::new();
            for task in tasks {
                all.extend(task.await.unwrap());
            }
            all
        }
    };
    load(requests / 10).await;
    let cpu_before = authz_pid.map(cpu_time);
    let started = Instant::now();
    let mut latencies = load(requests).await;
    let elapsed = started.elapsed();
    let cpu = authz_pid.map(cpu_time).zip(cpu_before).map(|(a, b)| a - b);
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Sample {
        throughput: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
        cpu_per_request: cpu.map(|c| c / latencies.len() as u32),
    }
}

/// A flood of requests that must all be denied, sent through a fail-open
/// filter: how many Envoy let through because celador's answer did not come
/// in time.
#[derive(Debug, Clone)]
struct Flood {
    shape: &'static str,
    variant: &'static str,
    sent: u64,
    allowed: u64,
    /// Denials by celador, by `x-celador-reason`.
    denied: std::collections::BTreeMap<String, u64>,
    /// Other answers (Envoy's own), by status.
    other: std::collections::BTreeMap<u16, u64>,
    /// Checks celador answered during the flood (from its metrics; none for
    /// the baseline, which runs without an admin listener).
    answered_by_celador: Option<f64>,
    /// Envoy's counters for the flood: why its failure mode decided.
    envoy: std::collections::BTreeMap<&'static str, u64>,
    elapsed: Duration,
    /// The authorization server's peak RSS so far, KiB.
    peak_rss: u64,
}

/// The flood shapes: (name, connections, streams each, requests in all,
/// header bytes per request). The first two are large-header requests at
/// 200 and 400 concurrent streams, the third 6,400 concurrent small ones.
const FLOODS: &[(&str, usize, usize, u64, usize)] = &[
    ("200 streams, 56 KiB headers", 4, 50, 5_000, 56 << 10),
    ("400 streams, 56 KiB headers", 8, 50, 5_000, 56 << 10),
    ("6,400 streams, small", 64, 100, 25_600, 0),
];

/// Runs every flood shape against each fail-open variant, `rounds` times,
/// the variants interleaved.
async fn floods_of_must_deny(
    variants: &[(&'static str, u16, Option<u32>)],
    tls: &Arc<rustls::ClientConfig>,
    rounds: u64,
    (envoy_admin, celador_admin): (SocketAddr, SocketAddr),
) -> Vec<Flood> {
    let mut samples = Vec::new();
    for round in 0..rounds {
        for &(shape, conns, streams, requests, header_bytes) in FLOODS {
            for &(variant, port, pid) in variants {
                let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
                let shape_load = (conns, streams, requests, header_bytes);
                let before = envoy_counters(envoy_admin);
                let answered_before = celador_answers(celador_admin);
                let mut sample = flood(addr, Arc::clone(tls), shape_load).await;
                // Give celador's last answers time to be counted.
                tokio::time::sleep(Duration::from_millis(500)).await;
                if !variant.starts_with("baseline") {
                    sample.answered_by_celador =
                        Some(celador_answers(celador_admin) - answered_before);
                }
                let after = envoy_counters(envoy_admin);
                let cluster = variant.trim_end_matches("_failopen");
                for (name, key) in [
                    (
                        "failure_mode_allowed",
                        format!("http.{variant}.ext_authz.failure_mode_allowed"),
                    ),
                    ("timeouts", format!("cluster.{cluster}.upstream_rq_timeout")),
                    (
                        "overflows",
                        format!("cluster.{cluster}.upstream_rq_pending_overflow"),
                    ),
                    (
                        "connections closed by Envoy",
                        format!("cluster.{cluster}.upstream_cx_destroy_local"),
                    ),
                ] {
                    let delta = after.get(&key).copied().unwrap_or(0)
                        - before.get(&key).copied().unwrap_or(0);
                    if delta > 0 {
                        sample.envoy.insert(name, delta);
                    }
                }
                sample.shape = shape;
                sample.variant = variant;
                sample.peak_rss = pid.map_or(0, |p| memory(p).1);
                eprintln!("flood round {round} {shape} {variant}: {sample:?}");
                samples.push(sample);
                // Let Envoy and celador drain before the next.
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    samples
}

/// `conns` connections with `streams` requests in flight on each, `requests`
/// in all, each a `GET /admin/flood` that no rule allows, with
/// `header_bytes` of extra headers.
async fn flood(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    (conns, streams, requests, header_bytes): (usize, usize, u64, usize),
) -> Flood {
    let pad = "x".repeat(1024);
    let headers: Vec<(String, &str)> = (0..header_bytes / 1024)
        .map(|i| (format!("x-pad-{i}"), pad.as_str()))
        .collect();
    let mut head = http::Request::get("https://localhost/admin/flood");
    for (name, value) in HEADERS
        .iter()
        .map(|(n, v)| ((*n).to_owned(), *v))
        .chain(headers)
    {
        head = head.header(name, value);
    }
    let head = head.body(()).unwrap();
    let mut senders = Vec::new();
    for _ in 0..conns {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let stream = tokio_rustls::TlsConnector::from(Arc::clone(&tls))
            .connect(name, tcp)
            .await
            .unwrap();
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .handshake::<_, bytes::Bytes>(stream)
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        senders.push(sender);
    }
    let per_worker = requests / (conns * streams) as u64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for sender in &senders {
        for _ in 0..streams {
            let mut sender = sender.clone();
            let head = head.clone();
            tasks.push(tokio::spawn(async move {
                let mut seen: Vec<(u16, Option<String>)> = Vec::new();
                for _ in 0..per_worker {
                    let Ok(ready) = sender.ready().await else {
                        seen.push((0, None));
                        break;
                    };
                    sender = ready;
                    let Ok((response, _)) = sender.send_request(head.clone(), true) else {
                        seen.push((0, None));
                        continue;
                    };
                    let Ok(response) = response.await else {
                        seen.push((0, None));
                        continue;
                    };
                    let reason = response
                        .headers()
                        .get("x-celador-reason")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    seen.push((response.status().as_u16(), reason));
                    let mut body = response.into_body();
                    while let Some(Ok(chunk)) = body.data().await {
                        let _ = body.flow_control().release_capacity(chunk.len());
                    }
                }
                seen
            }));
        }
    }
    let mut sample = Flood {
        shape: "",
        variant: "",
        sent: 0,
        allowed: 0,
        denied: Default::default(),
        other: Default::default(),
        envoy: Default::default(),
        answered_by_celador: None,
        elapsed: Duration::ZERO,
        peak_rss: 0,
    };
    for task in tasks {
        for (status, reason) in task.await.unwrap() {
            sample.sent += 1;
            match (status, reason) {
                (200, _) => sample.allowed += 1,
                (_, Some(reason)) => *sample.denied.entry(reason).or_default() += 1,
                (status, None) => *sample.other.entry(status).or_default() += 1,
            }
        }
    }
    sample.elapsed = started.elapsed();
    sample
}

fn report_floods(samples: &[Flood]) {
    println!(
        "\n| flood | variant | sent | allowed (share) | denied by celador | other answers | Envoy | answered by celador | time | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for s in samples {
        println!(
            "| {} | {} | {} | {} ({:.2} %) | {:?} | {:?} | {:?} | {} | {:.1} s | {:.1} MiB |",
            s.shape,
            s.variant,
            s.sent,
            s.allowed,
            100.0 * s.allowed as f64 / s.sent.max(1) as f64,
            s.denied,
            s.other,
            s.envoy,
            s.answered_by_celador
                .map_or(String::new(), |a| format!("{a:.0}")),
            s.elapsed.as_secs_f64(),
            s.peak_rss as f64 / 1024.0
        );
    }
}

/// The checks celador has answered (`celador_decisions_total`, summed).
fn celador_answers(admin: SocketAddr) -> f64 {
    let (_, body) = http_get(admin, "/metrics").unwrap_or_default();
    body.lines()
        .filter(|l| l.starts_with("celador_decisions_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Envoy's counters, by name.
fn envoy_counters(admin: SocketAddr) -> std::collections::HashMap<String, u64> {
    let (_, body) = http_get(admin, "/stats").unwrap_or_default();
    body.lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(": ")?;
            Some((name.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn report(
    results: &[(usize, &str, Sample)],
    points: &[(usize, usize)],
    variants: &[&str],
    ready: Duration,
    idle_rss: u64,
    peak_rss: u64,
) {
    println!(
        "| point | variant | req/s (median) | p50 | p99 | vs floor: req/s | vs floor: p50 | vs RBAC: req/s | CPU per check |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (p, (conns, streams)) in points.iter().enumerate() {
        let stat = |variant: &str, f: &dyn Fn(&Sample) -> f64| {
            median(
                results
                    .iter()
                    .filter(|(pp, v, _)| *pp == p && *v == variant)
                    .map(|(_, _, s)| f(s))
                    .collect(),
            )
        };
        let tput = |v: &str| stat(v, &|s| s.throughput);
        let p50 = |v: &str| stat(v, &|s| s.p50.as_secs_f64() * 1e6);
        let p99 = |v: &str| stat(v, &|s| s.p99.as_secs_f64() * 1e6);
        let cpu = |v: &str| {
            stat(v, &|s| {
                s.cpu_per_request
                    .map_or(f64::NAN, |c| c.as_secs_f64() * 1e6)
            })
        };
        for variant in variants {
            println!(
                "| {conns}×{streams} | {variant} | {:.0} | {:.0} µs | {:.0} µs | {:.2}× | {:.2}× | {:.2}× | {} |",
                tput(variant),
                p50(variant),
                p99(variant),
                tput(variant) / tput("floor"),
                p50(variant) / p50("floor"),
                tput(variant) / tput("rbac"),
                if cpu(variant).is_nan() {
                    "".to_owned()
                } else {
                    format!("{:.1} µs", cpu(variant))
                }
            );
        }
    }
    println!(
        "\ncelador: ready {:.1} ms after start; RSS {:.1} MiB idle, {:.1} MiB peak",
        ready.as_secs_f64() * 1e3,
        idle_rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0
    );
}
