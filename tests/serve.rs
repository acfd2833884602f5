//! `celador serve` as a process: its gRPC API, its health, its exit codes,
//! and hostile input sent straight to it (bypassing Envoy's own limits).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use prost::Message;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use support::celador::{self, Celador};
use support::check::{allowed, denial, request};
use support::pki::Ca;

const POLICY: &str = r#"
rules:
  - name: payments
    effect: allow
    when: source.id == "spiffe://example.org/ns/payments/sa/api"
"#;

/// A config directory: a CA for example.org, a policy and a config.
struct Setup {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::root("example.org");
        std::fs::write(dir.path().join("example.org.pem"), &ca.pem).unwrap();
        std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
        let setup = Setup { dir, ca };
        setup.config("");
        setup
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes the config with `extra` appended, and returns its path.
    fn config(&self, extra: &str) -> PathBuf {
        let path = self.path("celador.yaml");
        std::fs::write(
            &path,
            format!("listen: 127.0.0.1:0\npolicy: policy.yaml\ntrust_domains:\n  example.org:\n    bundle: example.org.pem\nlog:\n  format: json\n{extra}"),
        )
        .unwrap();
        path
    }
}

async fn client(celador: &Celador) -> AuthorizationClient<tonic::transport::Channel> {
    AuthorizationClient::connect(format!("http://{}", celador.addr))
        .await
        .unwrap()
}

async fn check(celador: &Celador, request: CheckRequest) -> Result<CheckResponse, tonic::Status> {
    client(celador)
        .await
        .check(request)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn health_reports_serving_for_the_authorization_service() {
    let setup = Setup::new();
    let celador = Celador::start(&setup.path("celador.yaml"));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", celador.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", "envoy.service.auth.v3.Authorization"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
}

#[tokio::test]
async fn a_valid_svid_is_allowed_with_the_grpc_ok_status() {
    let setup = Setup::new();
    let celador = Celador::start(&setup.path("celador.yaml"));
    let leaf = setup.ca.svid("spiffe://example.org/ns/payments/sa/api");
    let response = check(&celador, request(&leaf.envoy_encoded(), "GET", "/", &[]))
        .await
        .unwrap();
    assert!(allowed(&response), "{response:?}");
}

#[tokio::test]
async fn garbage_empty_and_huge_inputs_get_clear_answers_never_a_panic() {
    let setup = Setup::new();
    let celador = Celador::start(&setup.path("celador.yaml"));
    let leaf = setup.ca.svid("spiffe://example.org/ns/payments/sa/api");

    let garbage = check(
        &celador,
        request("%%%not-a-certificate\u{0}", "GET", "/", &[]),
    )
    .await
    .unwrap();
    assert_eq!(denial(&garbage), Some((401, "svid_malformed".into())));
    let empty = check(&celador, request("", "GET", "/", &[])).await.unwrap();
    assert_eq!(denial(&empty), Some((401, "svid_missing".into())));
    let huge_cert = "A".repeat(2 * 1024 * 1024);
    let huge = check(&celador, request(&huge_cert, "GET", "/", &[]))
        .await
        .unwrap();
    assert_eq!(denial(&huge), Some((401, "svid_malformed".into())));

    // A 1 MiB header is read like any other; the decision is the rules'.
    let mebibyte = "x".repeat(1024 * 1024);
    let big_header = check(
        &celador,
        request(
            &leaf.envoy_encoded(),
            "GET",
            "/",
            &[("x-big", mebibyte.as_str())],
        ),
    )
    .await
    .unwrap();
    assert!(allowed(&big_header), "{:?}", denial(&big_header));
    // So is a 1 MiB XFCC header, which is not even parsed for a cached leaf.
    let fresh = setup.ca.svid("spiffe://example.org/ns/payments/sa/api");
    let big_xfcc = check(
        &celador,
        request(
            &fresh.envoy_encoded(),
            "GET",
            "/",
            &[("x-forwarded-client-cert", mebibyte.as_str())],
        ),
    )
    .await
    .unwrap();
    assert!(allowed(&big_xfcc), "{:?}", denial(&big_xfcc));

    // Still serving after all of it.
    let after = check(&celador, request(&leaf.envoy_encoded(), "GET", "/", &[]))
        .await
        .unwrap();
    assert!(allowed(&after));
    let records = support::wait_for(Duration::from_secs(5), || {
        let r = celador.audit_records();
        (r.len() >= 6).then_some(r)
    })
    .expect("audit records");
    assert_eq!(
        records.len(),
        6,
        "one audit record per decision: {records:?}"
    );
}

#[tokio::test]
async fn a_request_that_is_not_http_is_an_error_for_envoy_to_decide() {
    let setup = Setup::new();
    let celador = Celador::start(&setup.path("celador.yaml"));
    let status = check(&celador, CheckRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let network = CheckRequest {
        attributes: Some(AttributeContext::default()),
    };
    let status = check(&celador, network).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("no HTTP request"),
        "{}",
        status.message()
    );
    let records = support::wait_for(Duration::from_secs(5), || {
        let r = celador.audit_records();
        (r.len() == 2).then_some(r)
    })
    .expect("two audit records");
    assert!(
        records.iter().all(|r| r["decision"] == "error"),
        "{records:?}"
    );
}

#[tokio::test]
async fn a_failing_deny_rule_denies_and_its_audit_record_says_why() {
    let setup = Setup::new();
    std::fs::write(
        setup.path("policy.yaml"),
        format!("{POLICY}  - name: debug-off\n    effect: deny\n    when: request.headers['x-debug'] == '1'\n"),
    )
    .unwrap();
    let celador = Celador::start(&setup.path("celador.yaml"));
    let leaf = setup.ca.svid("spiffe://example.org/ns/payments/sa/api");
    let response = check(
        &celador,
        request(&leaf.envoy_encoded(), "GET", "/rule-error", &[]),
    )
    .await
    .unwrap();
    assert_eq!(denial(&response), Some((403, "rule_error".into())));
    let record = &celador.audit_for("/rule-error")[0];
    assert_eq!(record["rule"], "debug-off");
    assert_eq!(record["errors"][0]["rule"], "debug-off");
    assert!(
        record["errors"][0]["error"]
            .as_str()
            .unwrap()
            .contains("x-debug"),
        "{record}"
    );
}

/// Runs `celador serve` on a config expected to be refused: (code, stderr).
fn refused(config: &Path) -> (i32, String) {
    let (code, _stdout, stderr) = celador::run(&["serve", "--config", config.to_str().unwrap()]);
    (code, stderr)
}

#[test]
fn an_unknown_config_key_exits_64_naming_the_key_and_its_line() {
    let setup = Setup::new();
    let (code, stderr) = refused(&setup.config("lisen: 127.0.0.1:1\n"));
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("unknown field `lisen`"), "{stderr}");
    assert!(stderr.contains("celador.yaml:8:1"), "{stderr}");
}

#[test]
fn every_bad_duration_is_reported_at_once_naming_its_key() {
    let setup = Setup::new();
    let (code, stderr) = refused(&setup.config(
        "shutdown_grace: soon\ncache:\n  decision_ttl: forever\n  svid_max_ttl: 5 minutes\nidentity:\n  require: either\n  jwt:\n    audiences: [a]\n    leeway: -1s\n",
    ));
    assert_eq!(code, 64, "{stderr}");
    for (key, text) in [
        ("shutdown_grace", "'soon'"),
        ("cache.decision_ttl", "'forever'"),
        ("cache.svid_max_ttl", "'5 minutes'"),
        ("identity.jwt.leeway", "'-1s'"),
    ] {
        assert!(
            stderr.contains(&format!(
                "{key}: {text} is not a duration like 500ms, 30s, 5m or 1h"
            )),
            "{key}: {stderr}"
        );
    }
}

#[test]
fn a_missing_config_exits_64() {
    let (code, stderr) = refused(Path::new("/nonexistent/celador.yaml"));
    assert_eq!(code, 64);
    assert!(
        stderr.contains("cannot read the config file /nonexistent/celador.yaml"),
        "{stderr}"
    );
}

#[test]
fn a_broken_rules_file_exits_64_with_the_rule_and_its_position() {
    let setup = Setup::new();
    std::fs::write(
        setup.path("policy.yaml"),
        "rules:\n  - name: typo\n    effect: allow\n    when: request.methd == 'GET'\n",
    )
    .unwrap();
    let (code, stderr) = refused(&setup.path("celador.yaml"));
    assert_eq!(code, 64, "{stderr}");
    assert!(
        stderr.contains("rule 'typo': 'request' has no field 'methd'; did you mean 'method'?"),
        "{stderr}"
    );
    assert!(stderr.contains("policy.yaml:4:19"), "{stderr}");
}

#[test]
fn missing_or_garbage_bundles_exit_64_naming_the_trust_domain() {
    let setup = Setup::new();
    std::fs::write(setup.path("example.org.pem"), "not a certificate\n").unwrap();
    let (code, stderr) = refused(&setup.path("celador.yaml"));
    assert_eq!(code, 64, "{stderr}");
    assert!(
        stderr.contains("trust_domains.example.org.bundle"),
        "{stderr}"
    );
    assert!(stderr.contains("no PEM CERTIFICATE block"), "{stderr}");

    std::fs::remove_file(setup.path("example.org.pem")).unwrap();
    let (code, stderr) = refused(&setup.path("celador.yaml"));
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("cannot read"), "{stderr}");
}

#[test]
fn every_startup_problem_is_reported_at_once() {
    let setup = Setup::new();
    std::fs::write(setup.path("policy.yaml"), "rules: [").unwrap();
    std::fs::remove_file(setup.path("example.org.pem")).unwrap();
    let (code, stderr) = refused(&setup.path("celador.yaml"));
    assert_eq!(code, 64);
    assert!(stderr.contains("unclosed bracket"), "{stderr}");
    assert!(
        stderr.contains("trust_domains.example.org.bundle"),
        "{stderr}"
    );
}

#[test]
fn a_busy_listen_address_exits_69() {
    let setup = Setup::new();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let config = setup.path("busy.yaml");
    std::fs::write(
        &config,
        format!("listen: 127.0.0.1:{port}\npolicy: policy.yaml\ntrust_domains:\n  example.org:\n    bundle: example.org.pem\n"),
    )
    .unwrap();
    let (code, stderr) = refused(&config);
    assert_eq!(code, 69, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_check_finish_then_exits_zero() {
    let setup = Setup::new();
    let mut celador = Celador::start(&setup.path("celador.yaml"));
    let leaf = setup.ca.svid("spiffe://example.org/ns/payments/sa/api");

    // Open a Check stream and send only half of its message.
    let tcp = tokio::net::TcpStream::connect(celador.addr).await.unwrap();
    let (mut h2, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let message = request(&leaf.envoy_encoded(), "GET", "/", &[]).encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&message);
    let head = http::Request::post(format!(
        "http://{}/envoy.service.auth.v3.Authorization/Check",
        celador.addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .unwrap();
    let (response, mut body) = h2.send_request(head, false).unwrap();
    let half = frame.len() / 2;
    body.send_data(bytes::Bytes::copy_from_slice(&frame[..half]), false)
        .unwrap();

    // Terminate celador while the check is in flight, then finish sending.
    let pid_exit = tokio::task::spawn_blocking(move || {
        let status = celador.terminate(Duration::from_secs(20));
        (celador, status)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    body.send_data(bytes::Bytes::copy_from_slice(&frame[half..]), true)
        .unwrap();

    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("the in-flight check was answered")
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = stream.data().await {
        data.extend_from_slice(&chunk.unwrap());
    }
    let trailers = stream.trailers().await.unwrap().unwrap_or_default();
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.to_str().unwrap()),
        Some("0")
    );
    let answer = CheckResponse::decode(&data[5..]).unwrap();
    assert!(allowed(&answer), "{answer:?}");

    let (celador, status) = pid_exit.await.unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", celador.log());
    assert!(celador.log().contains("shutting down"), "{}", celador.log());
}

#[tokio::test]
async fn a_check_request_as_large_as_envoy_can_send_is_answered_not_an_error() {
    // Envoy's headers may total max_request_headers_kb, 8 MiB at most: a
    // gRPC error for a request that size would be an allow behind a
    // fail-open Envoy.
    let setup = Setup::new();
    let celador = Celador::start(&setup.path("celador.yaml"));
    let leaf = setup.ca.svid("spiffe://example.org/ns/payments/sa/api");
    let eight_mib = "x".repeat(8 * 1024 * 1024);
    let answer = check(
        &celador,
        request(
            &leaf.envoy_encoded(),
            "GET",
            "/",
            &[("x-big", eight_mib.as_str())],
        ),
    )
    .await
    .unwrap();
    assert!(allowed(&answer), "{:?}", denial(&answer));
}

#[test]
fn broken_or_missing_governance_files_exit_64_naming_the_file_and_each_problem() {
    let setup = Setup::new();
    std::fs::write(
        setup.path("grants.yaml"),
        "grants:\n  - name: forever\n    identities: [\"spiffe://example.org/a\"]\n    not_before: 2030-01-01T00:00:00Z\n    expires: 2031-01-01T00:00:00Z\n    reason: x\n",
    )
    .unwrap();
    std::fs::write(
        setup.path("revocations.yaml"),
        "revocations:\n  - jwt_id: a\n    spiffe_id: spiffe://example.org/a\n    reason: both\n",
    )
    .unwrap();
    let (code, stderr) = refused(&setup.config(
        "grants: grants.yaml\nrevocations: revocations.yaml\nshadow_policy: missing.yaml\n",
    ));
    assert_eq!(code, 64, "{stderr}");
    for needle in [
        "grants: ",
        "the grant lasts 8760h, longer than the maximum of 24h",
        "revocations: ",
        "give exactly one of spiffe_id",
        "shadow_policy: cannot read",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
    // The longest grant is a setting.
    let (code, stderr) = refused(&setup.config(
        "grants: grants.yaml\ngrants_max_duration: 9000h\nrevocations: revocations.yaml\n",
    ));
    assert_eq!(code, 64, "{stderr}");
    assert!(!stderr.contains("the grant lasts"), "{stderr}");
}

/// An in-process OTLP/gRPC collector that keeps every span it receives.
#[derive(Clone, Default)]
struct Collector(
    std::sync::Arc<std::sync::Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>,
);

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for Collector
{
    async fn export(
        &self,
        request: tonic::Request<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        >,
        tonic::Status,
    > {
        let mut spans = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .any(|kv| {
                    kv.key == "service.name" && format!("{:?}", kv.value).contains("celador-test")
                });
            assert!(service, "spans come from the configured service name");
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

// Multi-threaded: the collector serves while the test waits for spans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_check_is_a_span_continuing_the_trace_envoy_sent_w3c_or_b3() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(collector.clone()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);

    let setup = Setup::new();
    let celador = Celador::start(&setup.config(&format!(
        "tracing:\n  otlp_endpoint: http://127.0.0.1:{port}\n  sample_ratio: 0.0\n  service_name: celador-test\n"
    )));
    let leaf = setup.ca.svid("spiffe://example.org/ns/payments/sa/api");
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let w3c_parent = "00f067aa0ba902b7";
    let b3_trace = "80f198ee56343ba864fe8b2a57d3eff7";
    let b3_parent = "e457b5a2e4d86bd1";
    for (path, header, value) in [
        ("/w3c", "traceparent", format!("00-{trace}-{w3c_parent}-01")),
        ("/b3", "b3", format!("{b3_trace}-{b3_parent}-1")),
        // Not sampled by its parent, and new traces are sampled at 0: no span.
        (
            "/unsampled",
            "traceparent",
            format!("00-{trace}-{w3c_parent}-00"),
        ),
        ("/new", "x-unrelated", "1".to_owned()),
    ] {
        let response = check(
            &celador,
            request(
                &leaf.envoy_encoded(),
                "GET",
                path,
                &[(header, value.as_str())],
            ),
        )
        .await
        .unwrap();
        assert!(allowed(&response));
    }
    support::wait_for(Duration::from_secs(10), || {
        (collector.0.lock().unwrap().len() >= 2).then_some(())
    })
    .unwrap_or_else(|| panic!("no spans exported; log:\n{}", celador.log()));
    // Give a stray span time to arrive, then look at all of them.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let spans = collector.0.lock().unwrap().clone();
    assert_eq!(spans.len(), 2, "{spans:?}");
    let attribute = |span: &opentelemetry_proto::tonic::trace::v1::Span, key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .map(|kv| format!("{:?}", kv.value))
            .unwrap_or_default()
    };
    for (span, trace, parent, path) in [
        (&spans[0], trace, w3c_parent, "/w3c"),
        (&spans[1], b3_trace, b3_parent, "/b3"),
    ] {
        assert_eq!(span.name, "celador.check");
        assert_eq!(span.trace_id, hex(trace), "{span:?}");
        assert_eq!(span.parent_span_id, hex(parent), "{span:?}");
        assert_ne!(span.span_id, hex(parent));
        assert!(attribute(span, "url.path").contains(path), "{span:?}");
        assert!(
            attribute(span, "celador.decision").contains("allow"),
            "{span:?}"
        );
        assert!(
            attribute(span, "celador.rule").contains("payments"),
            "{span:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_current_thread_runtime_serves_checks_and_reloads_like_the_default() {
    let setup = Setup::new();
    let celador = Celador::start(&setup.config("worker_threads: 1\n"));
    let leaf = setup.ca.svid("spiffe://example.org/ns/payments/sa/api");
    let response = check(&celador, request(&leaf.envoy_encoded(), "GET", "/", &[]))
        .await
        .unwrap();
    assert!(allowed(&response), "{response:?}");
    // The file watcher runs on the same runtime: a reload still applies.
    std::fs::write(
        setup.path("policy.yaml"),
        "rules:\n  - name: nobody\n    effect: allow\n    when: \"false\"\n",
    )
    .unwrap();
    let denied = support::wait_for(Duration::from_secs(10), || {
        let response = futures_block(check(
            &celador,
            request(&leaf.envoy_encoded(), "GET", "/", &[]),
        ));
        denial(&response.ok()?).filter(|(_, reason)| reason == "no_allow_rule")
    });
    assert!(
        denied.is_some(),
        "the reload did not apply; log:\n{}",
        celador.log()
    );
}

/// Runs `future` to completion on a runtime of its own (the test's runtime
/// is busy waiting).
fn futures_block<F: std::future::Future>(future: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

/// An optional governance mount without its files (a namespace without the
/// governance ConfigMap): celador starts with no grants and no
/// revocations, and picks up the file when it appears, within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_governance_files_may_be_missing_and_are_loaded_when_they_appear() {
    let setup = Setup::new();
    std::fs::create_dir(setup.path("governance")).unwrap();
    let celador = Celador::start(&setup.config(
        "admin: 127.0.0.1:0\ngrants: {path: governance/grants.yaml, optional: true}\nrevocations: {path: governance/revocations.yaml, optional: true}\n",
    ));
    let leaf = setup.ca.svid("spiffe://example.org/ns/payments/sa/api");
    let response = check(&celador, request(&leaf.envoy_encoded(), "GET", "/", &[]))
        .await
        .unwrap();
    assert!(allowed(&response), "{response:?}");
    assert!(
        celador
            .log()
            .contains("the optional revocations file is missing")
    );
    let (_, metrics) = celador.admin_get("/metrics");
    for file in ["grants", "revocations"] {
        let line = format!(
            "celador_governance_file_reloads_total{{file=\"{file}\",outcome=\"absent\"}} 1"
        );
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }

    // The ConfigMap appears: written beside, then renamed in, as the kubelet does.
    let written = std::time::Instant::now();
    std::fs::write(
        setup.path("governance/.revocations.tmp"),
        "revocations:\n  - spiffe_id: spiffe://example.org/ns/payments/sa/api\n    reason: INC-1\n",
    )
    .unwrap();
    std::fs::rename(
        setup.path("governance/.revocations.tmp"),
        setup.path("governance/revocations.yaml"),
    )
    .unwrap();
    let revoked = support::wait_for(Duration::from_secs(3), || {
        let response = futures_block(check(
            &celador,
            request(&leaf.envoy_encoded(), "GET", "/", &[]),
        ));
        denial(&response.ok()?).filter(|(status, reason)| *status == 403 && reason == "revoked")
    });
    let took = written.elapsed();
    assert!(revoked.is_some(), "never revoked; log:\n{}", celador.log());
    assert!(took < Duration::from_secs(1), "revocation took {took:?}");

    // It goes away (the ConfigMap deleted): no revocations again.
    std::fs::remove_file(setup.path("governance/revocations.yaml")).unwrap();
    let back = support::wait_for(Duration::from_secs(3), || {
        let response = futures_block(check(
            &celador,
            request(&leaf.envoy_encoded(), "GET", "/", &[]),
        ));
        allowed(&response.ok()?).then_some(())
    });
    assert!(back.is_some(), "still revoked; log:\n{}", celador.log());
}

/// A config written before `governance:` grouped the governance keys
/// still starts and decides with them; start-up logs a warning for each
/// deprecated key, naming the old key and the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_form_config_starts_and_logs_each_deprecated_key() {
    let setup = Setup::new();
    std::fs::write(
        setup.path("revocations.yaml"),
        "revocations:\n  - spiffe_id: spiffe://example.org/ns/payments/sa/api\n    reason: INC-2\n",
    )
    .unwrap();
    let celador = Celador::start(
        &setup.config("revocations: revocations.yaml\nsignals:\n  max_identities: 5\n"),
    );
    let leaf = setup.ca.svid("spiffe://example.org/ns/payments/sa/api");
    let response = check(&celador, request(&leaf.envoy_encoded(), "GET", "/", &[]))
        .await
        .unwrap();
    assert_eq!(
        denial(&response),
        Some((403, "revoked".to_owned())),
        "{response:?}"
    );
    let log = celador.log();
    for key in ["revocations", "signals"] {
        let warning =
            format!("the top-level key `{key}` is deprecated: write it as `governance.{key}`");
        assert!(log.contains(&warning), "{warning} in:\n{log}");
    }
    assert!(!log.contains("`grants`"), "{log}");
}
