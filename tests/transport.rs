//! The ext_authz transport under a hostile mesh client: streams cancelled by
//! the thousand, checks that wait past their deadline, more request bytes
//! than a sidecar's memory, and messages that do not decode. Sent straight
//! at the celador binary over raw HTTP/2, and through a real Envoy with
//! `failure_mode_allow: true`, where any check celador does not answer
//! itself is an allow.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use prost::Message;

use support::celador::Celador;
use support::check::{allowed, denial, request};
use support::grpc::{Answer, Connection, answer, framed};
use support::pki::Ca;

const PAYMENTS: &str = "spiffe://example.org/ns/payments/sa/api";

const POLICY: &str = r#"
rules:
  - name: payments
    effect: allow
    when: source.id == "spiffe://example.org/ns/payments/sa/api"
"#;

/// A config directory: a CA for example.org, the policy and a config.
struct Setup {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Setup {
    /// The config with `extra` appended.
    fn new(extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::root("example.org");
        std::fs::write(dir.path().join("example.org.pem"), &ca.pem).unwrap();
        std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
        std::fs::write(
            dir.path().join("celador.yaml"),
            format!("listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\npolicy: policy.yaml\ntrust_domains:\n  example.org:\n    bundle: example.org.pem\nlog:\n  format: json\n{extra}"),
        )
        .unwrap();
        Setup { dir, ca }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("celador.yaml")
    }

    /// A framed `CheckRequest` for `GET path` from the payments SVID, with
    /// `headers`.
    fn check(&self, path: &str, headers: &[(&str, &str)]) -> Bytes {
        let leaf = self.ca.svid(PAYMENTS);
        framed(&request(&leaf.envoy_encoded(), "GET", path, headers).encode_to_vec())
    }
}

/// The denial's status and reason, panicking on anything but a
/// `CheckResponse`.
fn denied(answer: &Answer) -> (i32, String) {
    let response = answer
        .response
        .as_ref()
        .unwrap_or_else(|| panic!("no CheckResponse: {answer:?}"));
    assert_eq!(answer.grpc_status.as_deref(), Some("0"), "{answer:?}");
    denial(response).unwrap_or_else(|| panic!("not a denial: {response:?}"))
}

fn is_allowed(answer: &Answer) -> bool {
    answer.grpc_status.as_deref() == Some("0") && answer.response.as_ref().is_some_and(allowed)
}

/// The value of the metric series `series` (its whole name and labels).
fn metric(celador: &Celador, series: &str) -> f64 {
    let (_, body) = celador.admin_get("/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{body}"))
}

/// The audit records with `reason`, waiting up to five seconds for `count`.
fn records_with(celador: &Celador, reason: &str, count: usize) -> Vec<serde_json::Value> {
    let found = support::wait_for(Duration::from_secs(5), || {
        let records: Vec<_> = celador
            .audit_records()
            .into_iter()
            .filter(|r| r["reason"] == reason)
            .collect();
        (records.len() >= count).then_some(records)
    });
    found.unwrap_or_else(|| {
        panic!(
            "fewer than {count} {reason} records: {:?}",
            celador.audit_records()
        )
    })
}

#[tokio::test]
async fn a_thousand_cancelled_checks_leave_the_connection_and_the_check_in_flight_alone() {
    let setup = Setup::new("");
    let celador = Celador::start(&setup.config());
    let first = setup.check("/first", &[]);
    let cancelled = setup.check("/cancelled", &[]);
    let mut connection = Connection::open(celador.addr).await;

    // A check in flight: its headers and half its message.
    let (response, mut body) = connection.start(Some("30S")).await.unwrap();
    let half = first.len() / 2;
    body.send_data(first.slice(..half), false).unwrap();

    // 1,000 checks, each cancelled right after its headers and message,
    // fifty at a time: as Envoy does when its clients go away.
    for _ in 0..20 {
        let mut batch = Vec::new();
        for _ in 0..50 {
            let (response, mut stream) = connection.start(Some("30S")).await.unwrap();
            stream.send_data(cancelled.clone(), true).unwrap();
            batch.push((response, stream));
        }
        // The connection task writes the headers and messages...
        tokio::task::yield_now().await;
        // ...then the resets.
        for (_, stream) in &mut batch {
            stream.send_reset(h2::Reason::CANCEL);
        }
        tokio::task::yield_now().await;
    }

    body.send_data(first.slice(half..), true).unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(20), answer(response))
        .await
        .expect("the check in flight was answered in time")
        .unwrap_or_else(|e| panic!("the check in flight failed: {e}; log:\n{}", celador.log()));
    assert!(is_allowed(&answer), "{answer:?}");
    // The connection is still open, and serves the next check.
    let next = connection.call(Some("30S"), first.clone()).await.unwrap();
    assert!(is_allowed(&next), "{next:?}");
    assert!(
        !connection.task.is_finished(),
        "celador closed the connection"
    );
    let first_records = support::wait_for(Duration::from_secs(5), || {
        let records = celador.audit_for("/first");
        (records.len() == 2).then_some(records)
    });
    assert!(first_records.is_some(), "{:?}", celador.audit_for("/first"));
}

/// `message` framed, with the first byte of `marker` in it made 0xFF: no
/// longer UTF-8.
fn break_utf8(message: &CheckRequest, marker: &[u8]) -> Bytes {
    let mut bytes = message.encode_to_vec();
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .unwrap();
    bytes[at] = 0xff;
    assert!(CheckRequest::decode(bytes.as_slice()).is_err());
    framed(&bytes)
}

#[tokio::test]
async fn every_message_that_cannot_be_read_is_denied_invalid_request_and_audited() {
    let setup = Setup::new("");
    let celador = Celador::start(&setup.config());
    let leaf = setup.ca.svid(PAYMENTS);
    let mut connection = Connection::open(celador.addr).await;
    let utf8_path = request(&leaf.envoy_encoded(), "GET", "/utf8-path/MARK", &[]);
    let utf8_header = request(
        &leaf.envoy_encoded(),
        "GET",
        "/utf8-header",
        &[("x-value", "MARK")],
    );
    let mut over_limit = vec![0u8];
    over_limit.extend_from_slice(&((16u32 << 20) + 1).to_be_bytes());
    over_limit.extend_from_slice(&[0x0a; 64]);
    let mut compressed = framed(b"\x0a\x00").to_vec();
    compressed[0] = 1;
    let mut truncated = framed(&[0x0a; 100]).to_vec();
    truncated.truncate(50);
    let cases: Vec<(&str, Bytes)> = vec![
        ("a path that is not UTF-8", break_utf8(&utf8_path, b"MARK")),
        (
            "a header value that is not UTF-8",
            break_utf8(&utf8_header, b"MARK"),
        ),
        ("bytes that are not protobuf", framed(&[0xff; 32])),
        ("a message over the limit", over_limit.into()),
        ("a compressed message", compressed.into()),
        ("a truncated message", truncated.into()),
        ("a prefix cut short", Bytes::from_static(&[0, 0])),
        ("no message at all", Bytes::new()),
    ];
    for (what, body) in &cases {
        let started = Instant::now();
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            connection.call(Some("5S"), body.clone()),
        )
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(answer.status, 200, "{what}: {answer:?}");
        assert_eq!(
            denied(&answer),
            (400, "invalid_request".to_owned()),
            "{what}"
        );
        // Denied at once, not after waiting for the rest of a message.
        assert!(started.elapsed() < Duration::from_secs(2), "{what}");
    }
    // A message that decodes but is not an HTTP check keeps its error status.
    let not_http = connection
        .call(Some("5S"), framed(&CheckRequest::default().encode_to_vec()))
        .await
        .unwrap();
    assert_eq!(not_http.grpc_status.as_deref(), Some("3"), "{not_http:?}");
    assert!(not_http.response.is_none());

    let records = records_with(&celador, "invalid_request", cases.len() + 1);
    let denials: Vec<_> = records.iter().filter(|r| r["decision"] == "deny").collect();
    assert_eq!(denials.len(), cases.len(), "{records:?}");
    // What can be read of an undecodable message names the request.
    assert!(
        denials
            .iter()
            .any(|r| r["path"] == "/utf8-path/\u{fffd}ARK" && r["method"] == "GET"),
        "{denials:?}"
    );
    assert!(
        denials.iter().any(|r| r["path"] == "/utf8-header"
            && r["detail"].as_str().unwrap().contains("cannot be decoded")),
        "{denials:?}"
    );
    assert!(
        denials.iter().any(|r| r["detail"]
            .as_str()
            .unwrap()
            .contains("over the limit of 16777216")),
        "{denials:?}"
    );
    let counted = metric(
        &celador,
        r#"celador_decisions_total{outcome="deny",reason="invalid_request",rule="none"}"#,
    );
    assert_eq!(counted, cases.len() as f64);
    // The connection served every one of them.
    assert!(!connection.task.is_finished());
}

/// Starts a Check call and sends only the first half of `message`: it holds
/// its slot (and its bytes) until the rest comes.
async fn hold(
    connection: &mut Connection,
    message: &Bytes,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let (response, mut body) = connection.start(Some("30S")).await.unwrap();
    body.send_data(message.slice(..message.len() / 2), false)
        .unwrap();
    // Time for celador to read the prefix and take the bytes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    (response, body)
}

#[tokio::test]
async fn checks_over_the_bounds_or_past_their_deadlines_share_are_denied_overloaded() {
    let setup = Setup::new("limits:\n  checks: 2\n  buffered_bytes: 100000\n");
    let celador = Celador::start(&setup.config());
    let big = setup.check("/big", &[("x-pad", &"p".repeat(60_000))]);
    let small = setup.check("/small", &[]);
    let mut connection = Connection::open(celador.addr).await;
    let overloaded = |answer: &Answer| denied(answer) == (503, "overloaded".to_owned());
    let at_once = Duration::from_millis(1000);

    // One check holds a slot and 60 KB of the 100 KB budget.
    let (big_response, mut big_body) = hold(&mut connection, &big).await;
    // Another 60 KB does not fit: denied at once, unread.
    let started = Instant::now();
    let no_room = connection.call(Some("5S"), big.clone()).await.unwrap();
    assert!(overloaded(&no_room), "{no_room:?}");
    assert!(started.elapsed() < at_once, "{:?}", started.elapsed());
    // A second check holds the second slot; a third finds none.
    let (small_response, mut small_body) = hold(&mut connection, &small).await;
    let started = Instant::now();
    let no_slot = connection.call(Some("5S"), small.clone()).await.unwrap();
    assert!(overloaded(&no_slot), "{no_slot:?}");
    assert!(started.elapsed() < at_once, "{:?}", started.elapsed());
    // The checks holding slots are answered when their messages come.
    big_body
        .send_data(big.slice(big.len() / 2..), true)
        .unwrap();
    small_body
        .send_data(small.slice(small.len() / 2..), true)
        .unwrap();
    assert!(is_allowed(&answer(big_response).await.unwrap()));
    assert!(is_allowed(&answer(small_response).await.unwrap()));

    // A check whose message is still coming at half its 200 ms deadline.
    let (response, mut body) = connection.start(Some("200m")).await.unwrap();
    let started = Instant::now();
    body.send_data(small.slice(..small.len() / 2), false)
        .unwrap();
    let late = answer(response).await.unwrap();
    let took = started.elapsed();
    assert!(overloaded(&late), "{late:?}");
    assert!(took >= Duration::from_millis(90), "{took:?}");
    assert!(took < Duration::from_millis(2000), "{took:?}");
    // Without grpc-timeout, the default deadline (1 s) applies.
    let (response, mut body) = connection.start(None).await.unwrap();
    let started = Instant::now();
    body.send_data(small.slice(..small.len() / 2), false)
        .unwrap();
    let late = answer(response).await.unwrap();
    assert!(overloaded(&late), "{late:?}");
    assert!(started.elapsed() >= Duration::from_millis(490));
    // A deadline already past when the message has been read.
    let late = connection.call(Some("1n"), small.clone()).await.unwrap();
    assert!(overloaded(&late), "{late:?}");
    // Slots and bytes were given back.
    let again = connection.call(Some("5S"), big.clone()).await.unwrap();
    assert!(is_allowed(&again), "{again:?}");

    let records = records_with(&celador, "overloaded", 5);
    let details: Vec<&str> = records
        .iter()
        .map(|r| r["detail"].as_str().unwrap())
        .collect();
    assert!(records.iter().all(|r| r["decision"] == "deny"));
    for expected in [
        "do not fit in what is left of the 100000-byte budget (limits.buffered_bytes)",
        "celador holds its limit of 2 checks (limits.checks)",
        "of the 200 ms deadline Envoy sent",
        "of the default deadline of 1000 ms",
        "of the 0 ms deadline Envoy sent",
    ] {
        assert!(
            details.iter().any(|d| d.contains(expected)),
            "{expected}: {details:?}"
        );
    }
    let counted = metric(
        &celador,
        r#"celador_decisions_total{outcome="deny",reason="overloaded",rule="none"}"#,
    );
    assert_eq!(counted, records.len() as f64);
}

/// `VmRSS` and `VmHWM` (its peak) of process `pid`, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The most the release build takes at rest (BENCHMARKS.md: 13.6 MiB). The
/// tests run the debug build, whose code alone is twice that, so the test
/// below bounds what the load adds to it: at most 64 MiB less this.
const RELEASE_IDLE_KIB: u64 = 16 * 1024;

// Multi-threaded: answers are read while calls are still being sent, as
// Envoy does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_connections_of_a_thousand_56_kb_checks_fit_in_64_mib_and_each_is_answered() {
    const CONNECTIONS: usize = 16;
    const STREAMS: usize = 1000;
    let setup = Setup::new("");
    let celador = Celador::start(&setup.config());
    let pid = celador.pid().unwrap();
    let message = setup.check("/flood", &[("x-pad", &"p".repeat(56 * 1024))]);
    let mut connections = Vec::new();
    for _ in 0..CONNECTIONS {
        // This client reads answers as it gets to them: its own guard
        // against many small unread DATA frames must not stop it.
        let mut client = h2::client::Builder::new();
        client.data_frame_budget(usize::MAX >> 1);
        let mut connection = Connection::open_with(celador.addr, client).await;
        let first = connection
            .call(Some("5S"), setup.check("/first", &[]))
            .await;
        assert!(is_allowed(&first.unwrap()));
        connections.push(connection);
    }
    let (idle, _) = rss_kib(pid);
    let started = Instant::now();
    let mut calls = Vec::new();
    for connection in &mut connections {
        for _ in 0..STREAMS {
            let (response, mut body) = connection.start(Some("20S")).await.unwrap();
            // A check that finds every slot taken is answered on its
            // headers, before its message, and the server then resets the
            // stream with NO_ERROR (RFC 9113, 8.1), as Envoy expects: the
            // message may no longer be sendable, but the answer must come.
            let sent = body.send_data(message.clone(), true).is_ok();
            calls.push(tokio::spawn(async move {
                let _body = body;
                (sent, answer(response).await)
            }));
        }
    }
    let (mut allowed, mut overloaded) = (0, 0);
    for call in calls {
        let (sent, answer) = call.await.unwrap();
        let answer = answer
            .unwrap_or_else(|e| panic!("a check was not answered: {e}; log:\n{}", celador.log()));
        if is_allowed(&answer) {
            assert!(sent, "a check allowed without its message");
            allowed += 1;
        } else {
            assert_eq!(denied(&answer), (503, "overloaded".to_owned()));
            overloaded += 1;
        }
    }
    let (_, peak) = rss_kib(pid);
    let summary = format!(
        "{allowed} allowed and {overloaded} overloaded in {:?}; RSS {idle} KiB idle, {peak} KiB at its peak",
        started.elapsed()
    );
    eprintln!("{summary}");
    assert_eq!(allowed + overloaded, CONNECTIONS * STREAMS, "{summary}");
    assert!(allowed > 0, "{summary}");
    assert!(
        peak - idle <= 64 * 1024 - RELEASE_IDLE_KIB,
        "the load took more than 64 MiB less an idle release build: {summary}"
    );
    let audited = support::wait_for(Duration::from_secs(10), || {
        (celador.audit_count() >= CONNECTIONS * (STREAMS + 1)).then_some(())
    });
    assert!(audited.is_some(), "{} records", celador.audit_count());
}

/// celador behind a real Envoy whose one listener fails open, in front of
/// an upstream that records what reaches it.
struct FailOpen {
    setup: Setup,
    upstream: support::upstream::Upstream,
    celador: Celador,
    envoy: support::envoy::Envoy,
}

impl FailOpen {
    /// With `extra` in celador's config, and Envoy's ext_authz `timeout`.
    fn start(extra: &str, timeout: &str) -> FailOpen {
        FailOpen::start_with(extra, timeout, "")
    }

    /// [`FailOpen::start`] with `filter` added to Envoy's ext_authz filter
    /// settings (indented as they are).
    fn start_with(extra: &str, timeout: &str, filter: &str) -> FailOpen {
        use support::envoy::{Envoy, Listener, Setup as EnvoySetup, bootstrap};
        let setup = Setup::new(extra);
        let upstream = support::upstream::Upstream::start();
        let celador = Celador::start(&setup.config());
        let unused = std::path::Path::new("unused");
        let config = bootstrap(&EnvoySetup {
            celador: celador.addr,
            upstream: upstream.addr,
            server_cert: unused,
            server_key: unused,
            client_ca: unused,
            listeners: &[Listener {
                name: "failopen",
                kind: "plain",
                xfcc: "SANITIZE_SET",
                fail_open: true,
            }],
        });
        let config = config.replace("timeout: 0.5s", &format!("timeout: {timeout}"));
        let peer = "include_peer_certificate: true";
        let config = config.replace(peer, &format!("{peer}{filter}"));
        let envoy = Envoy::start(&config, setup.dir.path());
        FailOpen {
            setup,
            upstream,
            celador,
            envoy,
        }
    }

    /// Envoy's counters of checks its failure mode decided: errors, and
    /// requests it let through for them.
    fn failure_mode(&self) -> (u64, u64) {
        (
            self.envoy.counter("cluster.upstream.ext_authz.error"),
            self.envoy
                .counter("cluster.upstream.ext_authz.failure_mode_allowed"),
        )
    }
}

/// A client going away in a loop, until `stop` or 20 rounds: an HTTP/2
/// connection to `addr` with 100 requests, each cancelled once sent, then
/// a short pause. Returns how many it cancelled.
async fn cancel_in_a_loop(
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> usize {
    let mut cancelled = 0;
    for _ in 0..20 {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (sender, connection) = h2::client::handshake(tcp).await.unwrap();
        let task = tokio::spawn(connection);
        let mut sender = sender.ready().await.unwrap();
        let mut streams = Vec::new();
        for i in 0..100 {
            let request = http::Request::get(format!("http://{addr}/cancelled/{i}"))
                .body(())
                .unwrap();
            let Ok((_, stream)) = sender.send_request(request, true) else {
                break;
            };
            streams.push(stream);
        }
        // Envoy starts each check, then its client goes away.
        tokio::time::sleep(Duration::from_millis(2)).await;
        for stream in &mut streams {
            stream.send_reset(h2::Reason::CANCEL);
        }
        cancelled += streams.len();
        tokio::time::sleep(Duration::from_millis(50)).await;
        task.abort();
    }
    cancelled
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_fail_open_envoy_clients_cancelling_in_a_loop_get_nobody_else_allowed() {
    use std::sync::atomic::Ordering::Relaxed;
    use support::load::{Kind, Load};
    // A timeout long enough that this busy test machine's pauses do not
    // reach it: what is tested is that no check fails, not how fast.
    let stack = FailOpen::start("", "5s");
    let addr = stack.envoy.listener("failopen");
    // A client whose every request must be denied: no client certificate.
    let denied = Load::start(
        addr,
        vec![Kind {
            name: "steady",
            path: "/steady".into(),
            headers: Vec::new(),
            expect: Some("svid_missing"),
        }],
        16,
        2_000,
    );
    // Meanwhile 10 clients each cancel 100 requests at a time, again and
    // again.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cancellers: Vec<_> = (0..10)
        .map(|_| tokio::spawn(cancel_in_a_loop(addr, std::sync::Arc::clone(&stop))))
        .collect();
    let counts = tokio::task::spawn_blocking(move || denied.wait())
        .await
        .unwrap();
    stop.store(true, Relaxed);
    let mut cancelled = 0;
    for canceller in cancellers {
        cancelled += canceller.await.unwrap();
    }
    let examples = format!(
        "{}\nEnvoy:\n{}",
        counts.examples.lock().unwrap().join("\n"),
        stack.envoy.stats_with("celador")
    );
    assert!(cancelled >= 1_000, "{cancelled} cancelled");
    assert_eq!(
        counts.allowed_unexpectedly.load(Relaxed),
        0,
        "allowed:\n{examples}"
    );
    assert_eq!(counts.failure_path.load(Relaxed), 0, "{examples}");
    assert_eq!(counts.transport_errors.load(Relaxed), 0);
    // Every answer is celador's denial: the reason it must have, or
    // `overloaded` while cancelled checks held its slots.
    assert!(counts.total() >= 2_000);
    let others = counts.examples.lock().unwrap().clone();
    assert!(
        others
            .iter()
            .all(|e| e.contains("503 Some(\"overloaded\")")),
        "{others:?}"
    );
    assert!(stack.upstream.requests_with("/steady").is_empty());
    assert_eq!(
        stack.failure_mode(),
        (0, 0),
        "Envoy's failure mode decided checks"
    );
}

#[test]
fn behind_a_fail_open_envoy_a_check_past_its_deadlines_share_is_denied_overloaded() {
    // A share so small that every check is late when its message has been
    // read: the deadline is the one Envoy sent (its `timeout: 0.5s`).
    let stack = FailOpen::start("limits:\n  deadline_share: 0.000001\n", "0.5s");
    let reply = support::https::plain(
        stack.envoy.listener("failopen"),
        &support::https::Call::get("/late"),
    );
    assert_eq!(
        (reply.status, reply.header("x-celador-reason")),
        (503, Some("overloaded")),
        "{reply:?}"
    );
    assert!(stack.upstream.requests_with("/late").is_empty());
    let records = records_with(&stack.celador, "overloaded", 1);
    assert!(
        records[0]["detail"]
            .as_str()
            .unwrap()
            .contains("of the 500 ms deadline Envoy sent"),
        "{}",
        records[0]
    );
    assert_eq!(stack.failure_mode(), (0, 0));
    let _ = &stack.setup;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_fail_open_envoy_a_check_answered_before_its_message_is_sent_is_denied() {
    // A check that finds every slot taken is answered on its headers; when
    // its message is larger than celador's stream window, Envoy is still
    // sending it, and the server then resets the stream with NO_ERROR
    // (RFC 9113, 8.1). Envoy must take the answer, not the reset, which a
    // fail-open Envoy would turn into an allow.
    let stack = FailOpen::start_with(
        "limits:\n  checks: 1\n",
        "5s",
        "\n              with_request_body: { max_request_bytes: 1000000 }",
    );
    let addr = stack.envoy.listener("failopen");
    // Four times celador's default stream window (256 KiB).
    let body = vec![b'b'; 1_000_000];
    let post = |path: &str| {
        let body = body.clone();
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || support::https::plain_post(addr, &path, &[], &body))
    };
    // With a slot free, the message is read and decided: no client
    // certificate.
    let decided = post("/decided").await.unwrap();
    assert_eq!(
        (decided.status, decided.header("x-celador-reason")),
        (401, Some("svid_missing")),
        "{decided:?}"
    );
    // With the one slot held by a check whose message is half sent.
    let small = stack.setup.check("/holder", &[]);
    let mut connection = Connection::open(stack.celador.addr).await;
    let (holder, mut holder_body) = hold(&mut connection, &small).await;
    for i in 0..5 {
        let path = format!("/unslotted/{i}");
        let reply = post(&path).await.unwrap();
        assert_eq!(
            (reply.status, reply.header("x-celador-reason")),
            (503, Some("overloaded")),
            "{reply:?}"
        );
        assert!(stack.upstream.requests_with(&path).is_empty());
    }
    holder_body
        .send_data(small.slice(small.len() / 2..), true)
        .unwrap();
    assert!(is_allowed(&answer(holder).await.unwrap()));
    let records = records_with(&stack.celador, "overloaded", 5);
    assert!(
        records
            .iter()
            .all(|r| r["detail"] == "celador holds its limit of 1 checks (limits.checks)"),
        "{records:?}"
    );
    // Each was answered while Envoy was still sending its message: the
    // server reset every one of those streams after its answer.
    assert_eq!(stack.envoy.counter("cluster.celador.http2.rx_reset"), 5);
    assert_eq!(stack.failure_mode(), (0, 0));
}
