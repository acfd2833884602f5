//! The Shared Signals receiver end to end: `celador signals serve` over
//! HTTPS takes SETs a test transmitter signs (ES256 and RS256) and pushes
//! (RFC 8935), and a `celador serve` watching the revocations file it writes
//! denies the revoked identity within a second; refused SETs get the RFC's
//! error JSON.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

#[path = "signals/scene.rs"]
mod scene;
mod support;

#[path = "signals/risk_entries.rs"]
mod risk_entries;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use scene::{
    ANYONE, Scene, revoked, sign, store_celador, store_receiver, uri_set, x509_compromise,
};
use serde_json::{Value, json};
use support::celador::Celador;
use support::check::{allowed, denial, request};
use support::https::{Reply, tls_post};
use support::jwt::{self, Signer};
use support::pki::Ca;

const IDP: &str = "https://idp.example.com/";
const CI: &str = "https://ci.example.com/";
const AUD: &str = "https://celador-signals.example.com/";
const EXPORTER: &str = "spiffe://example.org/ns/batch/sa/exporter";
const PAYMENTS: &str = "spiffe://example.org/ns/payments/sa/api";
const RISC: &str = "https://schemas.openid.net/secevent/risc/event-type/";

/// A running `celador signals serve`.
struct Receiver {
    child: Child,
    addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    fn start(config: &Path) -> Receiver {
        let mut child = Command::new(support::celador::binary())
            .args(["signals", "serve", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let addr = support::wait_for(Duration::from_secs(20), || {
            logs.lock().unwrap().iter().find_map(|line| {
                let v: Value = serde_json::from_str(line).ok()?;
                (v["fields"]["message"] == "signals receiver listening")
                    .then(|| v["fields"]["address"].as_str()?.parse().ok())?
            })
        });
        let Some(addr) = addr else {
            let _ = child.kill();
            panic!(
                "the receiver did not start: {}",
                logs.lock().unwrap().join("\n")
            );
        };
        Receiver { child, addr, logs }
    }

    fn log(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

struct Fixture {
    scene: Scene,
    ca: Ca,
    idp: Signer,
    ci: Signer,
    receiver: Receiver,
    celador: Celador,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn fixture() -> Fixture {
    let scene = Scene::new();
    let idp = Signer::es256("idp-1");
    let ci = Signer::rsa("ci-1", "RS256");
    scene.write("idp.json", &jwt::jwks(&[&idp]));
    scene.write("ci.json", &jwt::jwks(&[&ci]));
    scene.write("ci-token", "ci-push-secret\n");
    scene.write(
        "receiver.yaml",
        &format!(
            "listen: 127.0.0.1:0\ntls: {{cert: tls.crt, key: tls.key}}\nmax_age: 10m\n\
             transmitters:\n  - issuer: {IDP}\n    audience: {AUD}\n    jwks_file: idp.json\n\
             \x20 - issuer: {CI}\n    audience: [{AUD}]\n    jwks_file: ci.json\n    push_token_file: ci-token\n\
             subjects:\n  - subject: {{format: iss_sub, iss: {IDP}, sub: exporter-bot}}\n    spiffe_id: {EXPORTER}\n\
             sink: {{revocations_file: revocations.yaml}}\nlog: {{format: json}}\n"
        ),
    );
    scene.write("revocations.yaml", "revocations: []\n");
    let ca = scene.trust_domain();
    scene.write("policy.yaml", ANYONE);
    scene.write(
        "celador.yaml",
        "listen: 127.0.0.1:0\npolicy: policy.yaml\ntrust_domains:\n  example.org:\n    bundle: example.org.pem\n\
         revocations: revocations.yaml\ncache:\n  decision_ttl: 30s\nlog:\n  format: json\n",
    );
    let receiver = scene.receiver();
    let celador = scene.celador();
    Fixture {
        scene,
        ca,
        idp,
        ci,
        receiver,
        celador,
    }
}

impl Fixture {
    fn push_with(&self, token: &str, headers: &[(&str, &str)]) -> Reply {
        tls_post(
            self.receiver.addr,
            &self.scene.server_ca.pem,
            "/events",
            headers,
            token.as_bytes(),
        )
    }

    fn push(&self, token: &str) -> Reply {
        self.push_with(token, &[("content-type", "application/secevent+jwt")])
    }

    async fn decision(&self, id: &str) -> Result<(), (i32, String)> {
        let leaf = self.ca.svid(id);
        let response = AuthorizationClient::connect(format!("http://{}", self.celador.addr))
            .await
            .unwrap()
            .check(request(&leaf.envoy_encoded(), "GET", "/export", &[]))
            .await
            .unwrap()
            .into_inner();
        if allowed(&response) {
            Ok(())
        } else {
            Err(denial(&response).unwrap())
        }
    }

    /// Waits up to 3 s for `id`'s check to be `denied` (or allowed);
    /// returns how long it took.
    async fn until(&self, id: &str, denied: bool) -> Duration {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            if self.decision(id).await.is_err() == denied {
                return start.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "{id} never became denied={denied}; receiver log:\n{}\ncelador log:\n{}",
            self.receiver.log(),
            self.celador.log()
        );
    }
}

fn set(
    signer: &Signer,
    iss: &str,
    jti: &str,
    subject: Value,
    event: &str,
    payload: Value,
) -> String {
    sign(
        signer,
        &json!({"iss": iss, "aud": AUD, "iat": now(), "jti": jti, "sub_id": subject,
                "events": {format!("{RISC}{event}"): payload}}),
    )
}

fn err(reply: &Reply) -> String {
    reply.json()["err"].as_str().unwrap_or_default().to_owned()
}

/// A `jti` is the transmitter's to choose: one holding a credential is
/// shown redacted in the receiver's log lines and in the audit record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_in_a_sets_jti_reaches_neither_the_receivers_log_nor_the_record() {
    let f = fixture();
    let key = "AKIAIOSFODNN7EXAMPLE";
    let compromise = set(
        &f.idp,
        IDP,
        &format!("c-1 {key}"),
        json!({"format": "iss_sub", "iss": IDP, "sub": "exporter-bot"}),
        "credential-compromise",
        json!({"credential_type": "x509"}),
    );
    let reply = f.push(&compromise);
    assert_eq!((reply.status, reply.body.as_str()), (202, ""), "{reply:?}");
    f.until(EXPORTER, true).await;
    assert_eq!(f.decision(EXPORTER).await, Err((403, "revoked".to_owned())));
    let record = support::wait_for(Duration::from_secs(2), || {
        f.celador
            .audit_records()
            .into_iter()
            .rfind(|r| r["reason"] == "revoked")
    })
    .unwrap();
    assert!(!record.to_string().contains(key), "{record}");
    let log = f.receiver.log();
    assert!(log.contains("revoked"), "{log}");
    assert!(!log.contains(key), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_compromise_revokes_within_a_second_and_an_enable_restores() {
    let f = fixture();
    assert!(f.decision(EXPORTER).await.is_ok());
    assert!(f.decision(EXPORTER).await.is_ok()); // now cached

    // The identity provider's subject is mapped to the exporter.
    let compromise = set(
        &f.idp,
        IDP,
        "c-1",
        json!({"format": "iss_sub", "iss": IDP, "sub": "exporter-bot"}),
        "credential-compromise",
        json!({"credential_type": "x509", "reason_admin": {"en": "key in a CI log"}}),
    );
    let pushed = Instant::now();
    let reply = f.push(&compromise);
    assert_eq!((reply.status, reply.body.as_str()), (202, ""), "{reply:?}");
    let took = pushed.elapsed() + f.until(EXPORTER, true).await;
    assert!(took < Duration::from_secs(1), "revocation took {took:?}");
    assert_eq!(f.decision(EXPORTER).await, Err((403, "revoked".to_owned())));
    assert!(f.decision(PAYMENTS).await.is_ok());
    let revocations = std::fs::read_to_string(f.scene.path("revocations.yaml")).unwrap();
    assert!(
        revocations.contains("SET c-1 from https://idp.example.com/"),
        "{revocations}"
    );
    // The trail: the denied request's audit record names the SET.
    let record = support::wait_for(Duration::from_secs(2), || {
        f.celador
            .audit_records()
            .into_iter()
            .rfind(|r| r["reason"] == "revoked")
    })
    .unwrap();
    let the_set =
        json!({"source": IDP, "event": format!("{RISC}credential-compromise"), "jti": "c-1"});
    assert_eq!(record["revoked"]["set"], the_set, "{record}");

    // The CI system (RS256, with its push token) cannot enable what the
    // identity provider revoked: accepted, and changes nothing.
    let enabled = set(
        &f.ci,
        CI,
        "e-1",
        json!({"format": "uri", "uri": EXPORTER}),
        "account-enabled",
        json!({}),
    );
    let reply = f.push_with(
        &enabled,
        &[
            ("content-type", "application/secevent+jwt"),
            ("authorization", "Bearer ci-push-secret"),
        ],
    );
    assert_eq!(reply.status, 202, "{reply:?}");
    // The log line is read from the receiver's output: waited for.
    let said = support::wait_for(Duration::from_secs(3), || {
        f.receiver
            .log()
            .contains("another transmitter")
            .then_some(())
    });
    assert!(said.is_some(), "{}", f.receiver.log());
    assert_eq!(f.decision(EXPORTER).await, Err((403, "revoked".to_owned())));
    // The identity provider enables it again.
    let enabled = set(
        &f.idp,
        IDP,
        "e-2",
        json!({"format": "iss_sub", "iss": IDP, "sub": "exporter-bot"}),
        "account-enabled",
        json!({}),
    );
    assert_eq!(f.push(&enabled).status, 202);
    f.until(EXPORTER, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_sets_get_the_rfc_8935_error_and_change_nothing() {
    let f = fixture();
    let subject = json!({"format": "uri", "uri": EXPORTER});
    let good = |jti: &str| {
        set(
            &f.idp,
            IDP,
            jti,
            subject.clone(),
            "account-disabled",
            json!({}),
        )
    };
    let stranger = Signer::es256("idp-1");
    let mut expired = json!({"iss": IDP, "aud": AUD, "iat": now() - 3600, "jti": "x", "sub_id": subject,
        "events": {format!("{RISC}account-disabled"): {}}});
    let expired_token = f.idp.token_with_header(
        &json!({"alg": "ES256", "kid": "idp-1", "typ": "secevent+jwt"}),
        &expired,
    );
    expired["aud"] = json!("https://someone-else.example.com/");
    expired["iat"] = json!(now());
    let wrong_audience = f.idp.token_with_header(
        &json!({"alg": "ES256", "kid": "idp-1", "typ": "secevent+jwt"}),
        &expired,
    );
    let cases: Vec<(&str, Reply, u16, &str)> = vec![
        (
            "bad signature",
            f.push(&set(
                &stranger,
                IDP,
                "s1",
                subject.clone(),
                "account-disabled",
                json!({}),
            )),
            400,
            "invalid_key",
        ),
        (
            "unknown issuer",
            f.push(&set(
                &f.idp,
                "https://evil.example.com/",
                "s2",
                subject.clone(),
                "account-disabled",
                json!({}),
            )),
            400,
            "invalid_issuer",
        ),
        (
            "wrong audience",
            f.push(&wrong_audience),
            400,
            "invalid_audience",
        ),
        (
            "expired iat",
            f.push(&expired_token),
            400,
            "invalid_request",
        ),
        ("not a JWT", f.push("hello"), 400, "invalid_request"),
        (
            "wrong content type",
            f.push_with(&good("s3"), &[("content-type", "application/json")]),
            415,
            "invalid_request",
        ),
        (
            "oversized",
            f.push(&"a".repeat(70_000)),
            413,
            "invalid_request",
        ),
        (
            "the CI's SET without its token",
            f.push(&set(
                &f.ci,
                CI,
                "s4",
                subject.clone(),
                "account-disabled",
                json!({}),
            )),
            400,
            "access_denied",
        ),
    ];
    for (name, reply, status, code) in cases {
        assert_eq!(
            (reply.status, err(&reply)),
            (status, code.to_owned()),
            "{name}: {reply:?}"
        );
        assert_eq!(
            reply.header("content-type"),
            Some("application/json"),
            "{name}"
        );
    }
    // A replayed jti with other content is refused; the same SET again is
    // accepted and applied once.
    let first = good("r1");
    assert_eq!(f.push(&first).status, 202);
    assert_eq!(f.push(&first).status, 202);
    let replay = set(
        &f.idp,
        IDP,
        "r1",
        json!({"format": "uri", "uri": PAYMENTS}),
        "account-disabled",
        json!({}),
    );
    let reply = f.push(&replay);
    assert_eq!((reply.status, err(&reply)), (400, "invalid_request".into()));
    f.until(EXPORTER, true).await;
    assert!(
        f.decision(PAYMENTS).await.is_ok(),
        "the replay changed nothing"
    );
    // Nothing in the log carries a token.
    assert!(!f.receiver.log().contains(&first), "a SET in the log");
    // Counted.
    let metrics = tls_get(&f, "/metrics");
    for series in [
        r#"celador_signals_deliveries_total{outcome="refused",err="invalid_key"} 1"#,
        r#"celador_signals_deliveries_total{outcome="duplicate",err=""} 1"#,
        r#"celador_signals_deliveries_total{outcome="applied",err=""} 1"#,
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_sets_is_absorbed_without_losing_one() {
    let f = fixture();
    const N: usize = 300;
    let tokens: Vec<String> = (0..N)
        .map(|i| {
            set(
                &f.idp,
                IDP,
                &format!("b-{i}"),
                json!({"format": "uri", "uri": format!("spiffe://example.org/ns/burst/sa/s{i}")}),
                "account-disabled",
                json!({}),
            )
        })
        .collect();
    let tokens = Arc::new(tokens);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let tokens = Arc::clone(&tokens);
            let addr = f.receiver.addr;
            let ca = f.scene.server_ca.pem.clone();
            std::thread::spawn(move || {
                (t..N)
                    .step_by(4)
                    .filter(|i| {
                        tls_post(
                            addr,
                            &ca,
                            "/events",
                            &[("content-type", "application/secevent+jwt")],
                            tokens[*i].as_bytes(),
                        )
                        .status
                            == 202
                    })
                    .count()
            })
        })
        .collect();
    let accepted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(accepted, N);
    let text = std::fs::read_to_string(f.scene.path("revocations.yaml")).unwrap();
    assert_eq!(text.matches("spiffe://example.org/ns/burst/").count(), N);
    f.until("spiffe://example.org/ns/burst/sa/s299", true).await;
}

fn tls_get(f: &Fixture, path: &str) -> String {
    support::https::tls(
        f.receiver.addr,
        &f.scene.server_ca.pem,
        None,
        &support::https::Call::get(path),
    )
    .body
}

/// Instance latencies until `id` gets `denied` at each of `celadors`,
/// measured from `start`; sorted.
async fn propagation(
    celadors: &[Celador],
    ca: &Ca,
    id: &str,
    denied: bool,
    start: Instant,
) -> Vec<Duration> {
    let cert = ca.svid(id).envoy_encoded();
    let mut watchers = Vec::new();
    for c in celadors {
        let (addr, cert) = (c.addr, cert.clone());
        watchers.push(tokio::spawn(async move {
            let mut client = AuthorizationClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            loop {
                let r = client
                    .check(request(&cert, "GET", "/export", &[]))
                    .await
                    .unwrap()
                    .into_inner();
                let reason = (!allowed(&r)).then(|| denial(&r).unwrap().1);
                if reason.is_some() == denied {
                    return (start.elapsed(), reason);
                }
                if start.elapsed() > Duration::from_secs(5) {
                    return (Duration::MAX, reason);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    let mut latencies = Vec::new();
    for w in watchers {
        let (took, reason) = w.await.unwrap();
        if denied {
            assert_eq!(reason.as_deref(), Some("revoked"));
        }
        latencies.push(took);
    }
    latencies.sort();
    latencies
}

fn report(what: &str, latencies: &[Duration]) {
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    eprintln!(
        "{what} reached {} instances: p50 {:?}, p99 {:?} (from the push)",
        latencies.len(),
        at(0.5),
        at(0.99)
    );
    assert!(
        *latencies.last().unwrap() < Duration::from_secs(1),
        "{what}: {latencies:?}"
    );
}

/// How many `celador serve` the store test starts: 5, or
/// `CELADOR_FLEET_INSTANCES` (as tests/fleet.rs reads it), for the
/// push-to-enforcement latency at N = 1 and N = 20 in BENCHMARKS.md.
fn fleet_size() -> usize {
    std::env::var("CELADOR_FLEET_INSTANCES")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(5)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_store_a_compromise_revokes_at_every_instance_and_order_holds() {
    let redis = support::redis::Redis::start(false);
    let scene = Scene::new();
    let (_, write) = scene.files();
    let idp = scene.idp();
    write("receiver.yaml", &store_receiver(&redis.url()));
    let ca = scene.trust_domain();
    write("policy.yaml", ANYONE);
    write("celador.yaml", &store_celador(&redis.url(), ""));
    let receiver = scene.receiver();
    let celadors: Vec<Celador> = (0..fleet_size()).map(|_| scene.celador()).collect();
    let push = |token: &str| scene.push(&receiver, token);
    let event = |jti: &str, event: &str, at: i64| {
        let events = json!({format!("{RISC}{event}"): {"event_timestamp": at}});
        uri_set(&idp, jti, EXPORTER, events)
    };
    propagation(&celadors, &ca, EXPORTER, false, Instant::now()).await;

    let start = Instant::now();
    let reply = push(&event("c-1", "credential-compromise", now()));
    assert_eq!(reply.status, 202, "{reply:?} {}", receiver.log());
    report(
        "credential-compromise",
        &propagation(&celadors, &ca, EXPORTER, true, start).await,
    );
    // Exactly what `celador revoke` writes, naming the SET.
    let stored = redis.cli(&[
        "HGET",
        "{celador}:revocations",
        &format!("spiffe_id:{EXPORTER}"),
    ]);
    let stored: Value = serde_json::from_str(stored.trim()).unwrap();
    let reason = stored["reason"].as_str().unwrap();
    assert!(
        reason.contains("credential-compromise SET c-1 from https://idp.example.com/"),
        "{stored}"
    );
    assert_eq!(stored["by"], IDP, "{stored}");
    // The trail: the denied request's audit record ends at the SET.
    let record = support::wait_for(Duration::from_secs(2), || {
        celadors[2 % celadors.len()]
            .audit_records()
            .into_iter()
            .rfind(|r| r["reason"] == "revoked")
    })
    .unwrap();
    assert_eq!(record["revoked"]["origin"], "store", "{record}");
    assert_eq!(record["revoked"]["reason"], reason, "{record}");
    let the_set =
        json!({"source": IDP, "event": format!("{RISC}credential-compromise"), "jti": "c-1"});
    assert_eq!(stored["set"], the_set, "{stored}");
    assert_eq!(record["revoked"]["set"], the_set, "{record}");

    // An enable from before the compromise changes nothing.
    let reply = push(&event("e-0", "account-enabled", now() - 60));
    assert_eq!(reply.status, 202, "{reply:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    propagation(&celadors, &ca, EXPORTER, true, Instant::now()).await;

    let start = Instant::now();
    assert_eq!(
        push(&event("e-1", "account-enabled", now() + 1)).status,
        202
    );
    report(
        "account-enabled",
        &propagation(&celadors, &ca, EXPORTER, false, start).await,
    );

    // Redis gone: the receiver answers 503, and the transmitter retries.
    drop(celadors);
    let mut redis = redis;
    redis.kill();
    let reply = push(&event("c-2", "credential-compromise", now() + 2));
    assert_eq!(reply.status, 503, "{reply:?}");
}

/// Waits up to 3 s for `method /pay` by `id` to be `denied` (or allowed)
/// at every one of `celadors`; the slowest instance's time from `start`.
async fn risk_decided(
    celadors: &[Celador],
    ca: &Ca,
    id: &str,
    method: &str,
    denied: bool,
    start: Instant,
) -> Duration {
    let cert = ca.svid(id).envoy_encoded();
    let mut slowest = Duration::ZERO;
    for c in celadors {
        let mut client = AuthorizationClient::connect(format!("http://{}", c.addr))
            .await
            .unwrap();
        loop {
            let r = client
                .check(request(&cert, method, "/pay", &[]))
                .await
                .unwrap()
                .into_inner();
            let reason = (!allowed(&r)).then(|| denial(&r).unwrap());
            if reason.is_some() == denied {
                if let Some(reason) = reason {
                    assert_eq!(reason, (403, "denied_by_rule".to_owned()));
                }
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(3),
                "{method} by {id} never became denied={denied}; log:\n{}",
                c.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        slowest = slowest.max(start.elapsed());
    }
    slowest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_risk_level_decides_a_rule_at_every_instance_and_a_later_one_lowers_it() {
    const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";
    let redis = support::redis::Redis::start(false);
    let scene = Scene::new();
    let (path, write) = scene.files();
    let idp = Signer::rsa("idp-rsa", "RS256");
    write("idp.json", &jwt::jwks(&[&idp]));
    write(
        "receiver.yaml",
        &format!(
            "listen: 127.0.0.1:0\ntls: {{cert: tls.crt, key: tls.key}}\nrisk_expiry: 1h\n\
             transmitters:\n  - issuer: {IDP}\n    audience: {AUD}\n    jwks_file: idp.json\n\
             sink: {{store: {}}}\nlog: {{format: json}}\n",
            redis.url()
        ),
    );
    let ca = Ca::root("example.org");
    write("example.org.pem", &ca.pem);
    // The README's rule: writes to the payments API denied at high risk.
    write(
        "policy.yaml",
        "rules:\n  - name: anyone\n    effect: allow\n    when: source.trust_domain == \"example.org\"\n\
         \x20 - name: no-payment-writes-at-high-risk\n    effect: deny\n    when: >\n\
         \x20     request.method != \"GET\" && has(signals.risk.level) && signals.risk.level == \"high\"\n",
    );
    write(
        "celador.yaml",
        &format!(
            "listen: 127.0.0.1:0\npolicy: policy.yaml\ntrust_domains:\n  example.org:\n    bundle: example.org.pem\n\
             worker_threads: 1\ngovernance:\n  store: {}\nlog:\n  format: json\n",
            redis.url()
        ),
    );
    let receiver = scene.receiver();
    let celadors: Vec<Celador> = (0..2)
        .map(|_| Celador::start(&path("celador.yaml")))
        .collect();
    let push = |jti: &str, level: &str, at: i64| {
        let events = json!({format!("{CAEP}risk-level-change"): {
            "principal": "USER", "current_level": level,
            "risk_reason": "impossible travel", "event_timestamp": at}});
        scene.push(&receiver, &uri_set(&idp, jti, PAYMENTS, events))
    };
    let start = Instant::now();
    risk_decided(&celadors, &ca, PAYMENTS, "POST", false, start).await;

    // HIGH: writes are denied at both instances within a second; reads not.
    let start = Instant::now();
    let reply = push("r-1", "HIGH", now() - 5);
    assert_eq!(reply.status, 202, "{reply:?} {}", receiver.log());
    let took = risk_decided(&celadors, &ca, PAYMENTS, "POST", true, start).await;
    eprintln!("risk-level-change HIGH enforced at 2 instances {took:?} after the push");
    assert!(took < Duration::from_secs(1), "{took:?}");
    risk_decided(&celadors, &ca, PAYMENTS, "GET", false, start).await;
    risk_decided(&celadors, &ca, EXPORTER, "POST", false, start).await;
    // Stored for the fleet, naming the SET; the audit record ends at it.
    let stored = redis.cli(&[
        "HGET",
        "{celador}:risks",
        &format!("{IDP}|spiffe_id:{PAYMENTS}"),
    ]);
    let stored: Value = serde_json::from_str(stored.trim()).unwrap();
    assert_eq!(
        (
            stored["level"].as_str(),
            stored["jti"].as_str(),
            stored["source"].as_str()
        ),
        (Some("high"), Some("r-1"), Some(IDP)),
        "{stored}"
    );
    let record = support::wait_for(Duration::from_secs(2), || {
        celadors[1]
            .audit_records()
            .into_iter()
            .rfind(|r| r["reason"] == "denied_by_rule")
    })
    .unwrap();
    let risk = &record["read"]["signals"]["risk"];
    assert_eq!(
        (
            risk["level"].as_str(),
            risk["jti"].as_str(),
            risk["source"].as_str()
        ),
        (Some("high"), Some("r-1"), Some(IDP)),
        "{record}"
    );
    assert_eq!(
        risk["event"],
        format!("{CAEP}risk-level-change"),
        "{record}"
    );

    // A LOW from before the HIGH arrives late: superseded, logged so.
    assert_eq!(push("r-0", "LOW", now() - 30).status, 202);
    assert!(
        support::wait_for(Duration::from_secs(2), || receiver
            .log()
            .contains("superseded")
            .then_some(()))
        .is_some(),
        "{}",
        receiver.log()
    );
    risk_decided(&celadors, &ca, PAYMENTS, "POST", true, Instant::now()).await;

    // A later LOW lowers it everywhere.
    let start = Instant::now();
    assert_eq!(push("r-2", "LOW", now()).status, 202);
    let took = risk_decided(&celadors, &ca, PAYMENTS, "POST", false, start).await;
    assert!(took < Duration::from_secs(1), "{took:?}");

    // A risk whose event is older than risk_expiry decides nothing.
    assert_eq!(push("r-3", "HIGH", now() - 2 * 3600).status, 202);
    assert!(
        support::wait_for(Duration::from_secs(2), || receiver
            .log()
            .contains("the risk level had lapsed")
            .then_some(()))
        .is_some(),
        "{}",
        receiver.log()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    risk_decided(&celadors, &ca, PAYMENTS, "POST", false, Instant::now()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_store_a_set_replayed_to_another_receiver_is_applied_once_or_refused() {
    let mut redis = support::redis::Redis::start(false);
    let scene = Scene::new();
    let (_, write) = scene.files();
    let idp = scene.idp();
    write("receiver.yaml", &store_receiver(&redis.url()));
    // Two receivers behind one Service: a retransmission may reach either.
    let receivers = [scene.receiver(), scene.receiver()];
    let push = |at: usize, token: &str| scene.push(&receivers[at], token);
    let first = set(
        &idp,
        IDP,
        "c-1",
        json!({"format": "uri", "uri": EXPORTER}),
        "credential-compromise",
        json!({"credential_type": "x509"}),
    );
    assert_eq!(push(0, &first).status, 202);
    // The same bytes at the other receiver: a duplicate, applied once.
    let again = push(1, &first);
    assert_eq!((again.status, again.body.as_str()), (202, ""), "{again:?}");
    let logged = support::wait_for(Duration::from_secs(2), || {
        receivers[1]
            .log()
            .contains("applied by another receiver")
            .then_some(())
    });
    assert!(logged.is_some(), "{}", receivers[1].log());
    let feed = redis.cli(&["XLEN", "{celador}:feed"]);
    assert_eq!(feed.trim(), "1", "one write for one SET");
    // Other bytes under the same jti, at the other receiver: a replay.
    let forged = set(
        &idp,
        IDP,
        "c-1",
        json!({"format": "uri", "uri": PAYMENTS}),
        "credential-compromise",
        json!({"credential_type": "x509"}),
    );
    let reply = push(1, &forged);
    assert_eq!((reply.status, err(&reply)), (400, "invalid_request".into()));
    assert!(
        reply.json()["description"]
            .as_str()
            .unwrap()
            .contains("already received with other content")
    );
    assert!(
        redis
            .cli(&[
                "HGET",
                "{celador}:revocations",
                &format!("spiffe_id:{PAYMENTS}")
            ])
            .trim()
            .is_empty()
    );
    // Redis away: the replay memory cannot be read, so the SET is not
    // taken (503, sent again), never accepted unchecked.
    redis.kill();
    let later = set(
        &idp,
        IDP,
        "c-2",
        json!({"format": "uri", "uri": PAYMENTS}),
        "credential-compromise",
        json!({"credential_type": "x509"}),
    );
    assert_eq!(push(1, &later).status, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_store_a_risks_file_carries_the_risk_level_to_celador_serve() {
    const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";
    let scene = Scene::new();
    let (path, write) = scene.files();
    let idp = Signer::es256("idp-1");
    write("idp.json", &jwt::jwks(&[&idp]));
    write(
        "receiver.yaml",
        &format!(
            "listen: 127.0.0.1:0\ntls: {{cert: tls.crt, key: tls.key}}\n\
             transmitters:\n  - issuer: {IDP}\n    audience: {AUD}\n    jwks_file: idp.json\n\
             sink: {{revocations_file: revocations.yaml, risks_file: risks.yaml}}\nlog: {{format: json}}\n"
        ),
    );
    let ca = Ca::root("example.org");
    write("example.org.pem", &ca.pem);
    write(
        "policy.yaml",
        "rules:\n  - name: anyone\n    effect: allow\n    when: source.trust_domain == \"example.org\"\n\
         \x20 - name: no-payment-writes-at-high-risk\n    effect: deny\n    when: >\n\
         \x20     request.method != \"GET\" && has(signals.risk.level) && signals.risk.level == \"high\"\n",
    );
    // The risks file does not exist until the first risk level.
    write(
        "celador.yaml",
        "listen: 127.0.0.1:0\npolicy: policy.yaml\ntrust_domains:\n  example.org:\n    bundle: example.org.pem\n\
         governance:\n  revocations: {path: revocations.yaml, optional: true}\n  risks: {path: risks.yaml, optional: true}\n\
         log:\n  format: json\n",
    );
    let receiver = scene.receiver();
    let celadors = [Celador::start(&path("celador.yaml"))];
    let push = |jti: &str, level: &str, at: i64| {
        let events = json!({format!("{CAEP}risk-level-change"): {
            "principal": "USER", "current_level": level, "event_timestamp": at}});
        scene.push(&receiver, &uri_set(&idp, jti, PAYMENTS, events))
    };
    risk_decided(&celadors, &ca, PAYMENTS, "POST", false, Instant::now()).await;
    let start = Instant::now();
    assert_eq!(push("r-1", "HIGH", now() - 5).status, 202);
    let took = risk_decided(&celadors, &ca, PAYMENTS, "POST", true, start).await;
    assert!(took < Duration::from_secs(1), "{took:?}");
    risk_decided(&celadors, &ca, PAYMENTS, "GET", false, start).await;
    let text = std::fs::read_to_string(path("risks.yaml")).unwrap();
    assert!(text.contains("\"jti\": \"r-1\""), "{text}");
    // Older: superseded; later: lowers it.
    assert_eq!(push("r-0", "LOW", now() - 30).status, 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    risk_decided(&celadors, &ca, PAYMENTS, "POST", true, Instant::now()).await;
    let start = Instant::now();
    assert_eq!(push("r-2", "LOW", now()).status, 202);
    let took = risk_decided(&celadors, &ca, PAYMENTS, "POST", false, start).await;
    assert!(took < Duration::from_secs(1), "{took:?}");
}

/// An identity provider's JWKS endpoint over HTTPS (a certificate of its
/// own CA, for `localhost`): answers each `GET` with the current status and
/// document, and counts them.
struct JwksServer {
    addr: SocketAddr,
    ca: Ca,
    answer: Arc<Mutex<(u16, String)>>,
    fetches: Arc<std::sync::atomic::AtomicUsize>,
}

/// An HTTPS server (a certificate of its own CA, for `localhost`) that
/// answers each request with `handler(request head, body)`: a status and
/// a JSON body.
fn https_server(
    handler: impl Fn(&str, &[u8]) -> (u16, String) + Send + 'static,
) -> (SocketAddr, Ca) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let ca = Ca::root("identity provider CA");
    let leaf = ca.leaf().dns("localhost").build();
    let chain = CertificateDer::pem_slice_iter(leaf.pem.as_bytes())
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for tcp in listener.incoming().map_while(Result::ok) {
            let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
            let conn = rustls::ServerConnection::new(Arc::clone(&config)).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match std::io::Read::read(&mut tls, &mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let head = String::from_utf8_lossy(&head).to_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; length];
            if std::io::Read::read_exact(&mut tls, &mut body).is_err() {
                continue;
            }
            let (status, body) = handler(&head, &body);
            let response = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = std::io::Write::write_all(&mut tls, response.as_bytes());
            tls.conn.send_close_notify();
            let _ = std::io::Write::flush(&mut tls);
        }
    });
    (addr, ca)
}

impl JwksServer {
    fn start(document: String) -> JwksServer {
        let answer = Arc::new(Mutex::new((200, document)));
        let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (shared, count) = (Arc::clone(&answer), Arc::clone(&fetches));
        let (addr, ca) = https_server(move |head, _| {
            if !head.starts_with("get /jwks ") {
                return (404, String::new());
            }
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            shared.lock().unwrap().clone()
        });
        JwksServer {
            addr,
            ca,
            answer,
            fetches,
        }
    }

    fn url(&self) -> String {
        format!("https://localhost:{}/jwks", self.addr.port())
    }

    fn serve(&self, status: u16, document: &str) {
        *self.answer.lock().unwrap() = (status, document.to_owned());
    }

    fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A receiver whose one transmitter's keys come from `idp`'s URL,
/// fetched again every `refresh`; a revocations file as the sink.
fn url_receiver(idp: &JwksServer, refresh: &str) -> (Scene, Receiver) {
    let scene = Scene::new();
    scene.write("idp-ca.pem", &idp.ca.pem);
    scene.write("revocations.yaml", "revocations: []\n");
    scene.write(
        "receiver.yaml",
        &format!(
            "listen: 127.0.0.1:0\ntls: {{cert: tls.crt, key: tls.key}}\n\
             transmitters:\n  - issuer: {IDP}\n    audience: {AUD}\n    jwks_uri: {}\n\
             \x20   jwks_ca_file: idp-ca.pem\n    jwks_refresh: {refresh}\n\
             sink: {{revocations_file: revocations.yaml}}\nlog: {{format: json}}\n",
            idp.url()
        ),
    );
    let receiver = scene.receiver();
    (scene, receiver)
}

fn compromise(signer: &Signer, jti: &str) -> String {
    set(
        signer,
        IDP,
        jti,
        json!({"format": "uri", "uri": format!("spiffe://example.org/ns/jwks/sa/{jti}")}),
        "credential-compromise",
        json!({"credential_type": "x509"}),
    )
}

/// The value of the series of `celador_signals_jwks_fetches_total` with
/// `outcome` in the receiver's metrics.
fn fetch_count(receiver: &Receiver, server_ca: &Ca, outcome: &str) -> u64 {
    let metrics = support::https::tls(
        receiver.addr,
        &server_ca.pem,
        None,
        &support::https::Call::get("/metrics"),
    )
    .body;
    let series = format!(
        "celador_signals_jwks_fetches_total{{transmitter=\"{IDP}\",outcome=\"{outcome}\"}} "
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[test]
fn keys_rotated_at_the_idp_are_fetched_on_an_unknown_kid_at_a_bounded_rate() {
    let old = Signer::es256("old");
    let new = Signer::rsa("new", "RS256");
    let idp = JwksServer::start(jwt::jwks(&[&old]));
    let (scene, receiver) = url_receiver(&idp, "1h");
    assert_eq!(idp.fetches(), 1, "fetched once at start");
    assert_eq!(scene.push(&receiver, &compromise(&old, "k-1")).status, 202);
    // The IdP rotates: the new key only. Its first SET fetches the keys again.
    idp.serve(200, &jwt::jwks(&[&new]));
    let reply = scene.push(&receiver, &compromise(&new, "k-2"));
    assert_eq!(reply.status, 202, "{}\n{}", reply.body, receiver.log());
    assert_eq!(idp.fetches(), 2);
    assert_eq!(fetch_count(&receiver, &scene.server_ca, "updated"), 1);
    // The rotated-away key is refused now.
    let reply = scene.push(&receiver, &compromise(&old, "k-3"));
    assert_eq!((reply.status, err(&reply)), (400, "invalid_key".into()));
    // A flood of made-up kids, from 4 threads: all refused, no fetch (the
    // last one was under 30 s ago).
    const FLOOD: usize = 60;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (addr, ca) = (receiver.addr, scene.server_ca.pem.clone());
            std::thread::spawn(move || {
                (t..FLOOD)
                    .step_by(4)
                    .map(|i| {
                        let forger = Signer::es256(&format!("forged-{i}"));
                        let token = compromise(&forger, &format!("f-{i}"));
                        let reply = tls_post(
                            addr,
                            &ca,
                            "/events",
                            &[("content-type", "application/secevent+jwt")],
                            token.as_bytes(),
                        );
                        (reply.status, err(&reply))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for reply in threads.into_iter().flat_map(|t| t.join().unwrap()) {
        assert_eq!(reply, (400, "invalid_key".into()));
    }
    assert_eq!(idp.fetches(), 2, "the flood made no fetch");
    assert!(fetch_count(&receiver, &scene.server_ca, "limited") >= FLOOD as u64);
    let text = std::fs::read_to_string(scene.path("revocations.yaml")).unwrap();
    assert!(text.contains("ns/jwks/sa/k-1") && text.contains("ns/jwks/sa/k-2"));
    assert!(!text.contains("sa/f-"), "{text}");
}

#[test]
fn a_bad_jwks_document_or_a_failed_fetch_keeps_the_last_good_keys() {
    let signer = Signer::es256("idp-1");
    let idp = JwksServer::start("{\"keys\": 1}".into());
    // At start, a document that is not a JWKS stops the receiver, naming
    // the transmitter and the URL.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("idp-ca.pem"), &idp.ca.pem).unwrap();
    std::fs::write(
        dir.path().join("receiver.yaml"),
        format!(
            "tls: {{cert: c, key: k}}\ntransmitters:\n  - issuer: {IDP}\n    audience: {AUD}\n    jwks_uri: {}\n    jwks_ca_file: idp-ca.pem\nsink: {{revocations_file: r.yaml}}\n",
            idp.url()
        ),
    )
    .unwrap();
    let out = Command::new(support::celador::binary())
        .args(["signals", "check", "--config"])
        .arg(dir.path().join("receiver.yaml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    let expected = format!("transmitters[0] ({IDP}): jwks_uri {}: the JWKS", idp.url());
    assert!(stderr.contains(&expected), "{expected} in {stderr}");
    idp.serve(200, &jwt::jwks(&[&signer]));
    let (scene, receiver) = url_receiver(&idp, "1s");
    // Each bad answer in turn, fetched on the schedule: the keys stay.
    for (i, (status, document, outcome)) in [
        (200, "not json", "refused"),
        (200, "{\"keys\": []}", "refused"),
        (503, "", "failed"),
    ]
    .into_iter()
    .enumerate()
    {
        idp.serve(status, document);
        let seen = idp.fetches();
        // Two fetches after the change: the first one is applied.
        support::wait_for(Duration::from_secs(10), || {
            (idp.fetches() >= seen + 2).then_some(())
        })
        .unwrap_or_else(|| panic!("no scheduled fetch: {}", receiver.log()));
        let reply = scene.push(&receiver, &compromise(&signer, &format!("b-{i}")));
        assert_eq!(reply.status, 202, "{outcome}: {}", reply.body);
        assert!(
            fetch_count(&receiver, &scene.server_ca, outcome) >= 1,
            "{outcome}"
        );
    }
    assert!(
        receiver.log().contains("the last good keys stay"),
        "{}",
        receiver.log()
    );
}

/// The `jti`s a poll request acknowledges or reports (RFC 8936 §2.4).
fn done(request: &Value) -> Vec<String> {
    request["ack"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j.as_str().unwrap().to_owned())
        .chain(request["setErrs"].as_object().unwrap().keys().cloned())
        .collect()
}

#[test]
fn polled_sets_are_applied_and_acknowledged_and_refused_ones_reported() {
    let idp = Signer::es256("idp-1");
    let forger = Signer::es256("idp-1");
    // The transmitter's queue: SETs stay until acknowledged or reported.
    let queue = Arc::new(Mutex::new(vec![
        ("p-1".to_owned(), compromise(&idp, "p-1")),
        ("p-2".to_owned(), compromise(&forger, "p-2")),
        ("p-3".to_owned(), compromise(&idp, "p-3")),
    ]));
    let polls = Arc::new(Mutex::new(Vec::<Value>::new()));
    let (queued, seen) = (Arc::clone(&queue), Arc::clone(&polls));
    let (addr, ca) = https_server(move |head, body| {
        if !head.starts_with("post /poll ") || !head.contains("authorization: bearer poll-secret") {
            return (401, "{}".into());
        }
        let request: Value = serde_json::from_slice(body).unwrap();
        let done = done(&request);
        seen.lock().unwrap().push(request);
        let mut queue = queued.lock().unwrap();
        queue.retain(|(jti, _)| !done.contains(jti));
        let sets: serde_json::Map<String, Value> = queue
            .iter()
            .map(|(jti, set)| (jti.clone(), Value::String(set.clone())))
            .collect();
        (
            200,
            json!({"sets": sets, "moreAvailable": false}).to_string(),
        )
    });
    let scene = Scene::new();
    let (path, write) = scene.files();
    write("idp.json", &jwt::jwks(&[&idp]));
    write("idp-ca.pem", &ca.pem);
    write("poll-token", "poll-secret\n");
    write("revocations.yaml", "revocations: []\n");
    write(
        "receiver.yaml",
        &format!(
            "listen: 127.0.0.1:0\ntls: {{cert: tls.crt, key: tls.key}}\n\
             transmitters:\n  - issuer: {IDP}\n    audience: {AUD}\n    jwks_file: idp.json\n\
             \x20   poll: {{url: \"https://localhost:{}/poll\", token_file: poll-token, ca_file: idp-ca.pem, interval: 200ms}}\n\
             sink: {{revocations_file: revocations.yaml}}\nlog: {{format: json}}\n",
            addr.port()
        ),
    );
    let receiver = scene.receiver();
    support::wait_for(Duration::from_secs(10), || {
        queue.lock().unwrap().is_empty().then_some(())
    })
    .unwrap_or_else(|| panic!("the queue was not emptied: {}", receiver.log()));
    let polls = polls.lock().unwrap();
    let acked: Vec<&str> = polls
        .iter()
        .flat_map(|p| p["ack"].as_array().unwrap())
        .map(|j| j.as_str().unwrap())
        .collect();
    assert_eq!(acked, ["p-1", "p-3"], "{polls:?}");
    let error = polls.iter().find_map(|p| p["setErrs"].get("p-2")).unwrap();
    assert_eq!(error["err"], "invalid_key", "{error}");
    let text = std::fs::read_to_string(path("revocations.yaml")).unwrap();
    assert!(
        text.contains("ns/jwks/sa/p-1") && text.contains("ns/jwks/sa/p-3"),
        "{text}"
    );
    assert!(!text.contains("sa/p-2"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_store_a_transmitter_neither_withdraws_nor_lowers_what_another_reported_and_each_report_stands()
 {
    const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";
    let redis = support::redis::Redis::start(false);
    let scene = Scene::new();
    let (_, write) = scene.files();
    let (idp, ci) = (Signer::es256("idp-1"), Signer::es256("ci-1"));
    write("idp.json", &jwt::jwks(&[&idp]));
    write("ci.json", &jwt::jwks(&[&ci]));
    write("ci-token", "ci-push-secret\n");
    write(
        "receiver.yaml",
        &format!(
            "listen: 127.0.0.1:0\ntls: {{cert: tls.crt, key: tls.key}}\n\
             transmitters:\n  - issuer: {IDP}\n    audience: {AUD}\n    jwks_file: idp.json\n\
             \x20 - issuer: {CI}\n    audience: [{AUD}]\n    jwks_file: ci.json\n    push_token_file: ci-token\n\
             sink: {{store: {}}}\nlog: {{format: json}}\n",
            redis.url()
        ),
    );
    let receiver = scene.receiver();
    let push = |signer: &Signer, iss: &str, token: &str, jti: &str, iat: i64, events: Value| {
        let set = sign(
            signer,
            &json!({"iss": iss, "aud": AUD, "iat": iat, "jti": jti,
                    "sub_id": {"format": "uri", "uri": EXPORTER}, "events": events}),
        );
        let auth = format!("Bearer {token}");
        let mut headers = vec![];
        if !token.is_empty() {
            headers.push(("authorization", auth.as_str()));
        }
        let reply = scene.push_with(&receiver, &set, &headers);
        assert_eq!(reply.status, 202, "{reply:?} {}", receiver.log());
    };
    let risc = |event: &str| json!({format!("{RISC}{event}"): {}});
    let risk = |level: &str| json!({format!("{CAEP}risk-level-change"): {"principal": "USER", "current_level": level}});
    // CI enables the identity with an `iat` minutes ahead: it pins nothing
    // of the IdP's.
    push(
        &ci,
        CI,
        "ci-push-secret",
        "c-1",
        now() + 100,
        risc("account-enabled"),
    );
    push(&idp, IDP, "", "i-1", now(), risc("credential-compromise"));
    assert!(revoked(&redis, EXPORTER), "{}", receiver.log());
    // CI cannot withdraw the IdP's revocation, even later.
    push(
        &ci,
        CI,
        "ci-push-secret",
        "c-2",
        now() + 150,
        risc("account-enabled"),
    );
    assert!(revoked(&redis, EXPORTER), "{}", receiver.log());
    let said = support::wait_for(Duration::from_secs(3), || {
        receiver.log().contains("another transmitter").then_some(())
    });
    assert!(said.is_some(), "{}", receiver.log());
    // Nor take it over: a revocation of its own written over the IdP's
    // would be CI's to withdraw. It is held behind the IdP's instead, and
    // CI's withdrawal removes only that.
    push(
        &ci,
        CI,
        "ci-push-secret",
        "c-4",
        now() + 160,
        risc("credential-compromise"),
    );
    push(
        &ci,
        CI,
        "ci-push-secret",
        "c-5",
        now() + 170,
        risc("account-enabled"),
    );
    assert!(revoked(&redis, EXPORTER), "{}", receiver.log());
    let field = format!("spiffe_id:{EXPORTER}");
    let entry = || redis.cli(&["HGET", "{celador}:revocations", &field]);
    assert!(
        entry().contains(&format!("\"by\":\"{IDP}\"")),
        "{}",
        entry()
    );
    assert_eq!(
        redis.cli(&["HGET", "{celador}:ssf:held", &field]).trim(),
        ""
    );
    // The IdP can; nothing of CI's stands.
    push(&idp, IDP, "", "i-2", now(), risc("account-enabled"));
    assert!(!revoked(&redis, EXPORTER), "{}", receiver.log());

    // Both report a compromise; the IdP's withdrawal leaves CI's report
    // standing: it takes the entry's place, as CI wrote it.
    push(&idp, IDP, "", "i-4", now(), risc("credential-compromise"));
    push(
        &ci,
        CI,
        "ci-push-secret",
        "c-6",
        now() + 180,
        risc("credential-compromise"),
    );
    let said = support::wait_for(Duration::from_secs(3), || {
        receiver
            .log()
            .contains("held: the entry is another")
            .then_some(())
    });
    assert!(said.is_some(), "{}", receiver.log());
    assert!(
        entry().contains(&format!("\"by\":\"{IDP}\"")),
        "{}",
        entry()
    );
    push(&idp, IDP, "", "i-5", now(), risc("account-enabled"));
    assert!(revoked(&redis, EXPORTER), "{}", receiver.log());
    assert!(entry().contains(&format!("\"by\":\"{CI}\"")), "{}", entry());
    assert!(entry().contains("\"jti\":\"c-6\""), "{}", entry());
    // CI's own withdrawal ends it.
    push(
        &ci,
        CI,
        "ci-push-secret",
        "c-7",
        now() + 190,
        risc("account-enabled"),
    );
    assert!(!revoked(&redis, EXPORTER), "{}", receiver.log());

    // An operator's revocation with an expiry gives way to a lasting report
    // (which would otherwise lapse with it), and is held behind it.
    let expiring = format!(
        r#"{{"spiffe_id":"{EXPORTER}","reason":"INC-7","by":"oncall","from":"laptop","at":"2026-01-01T00:00:00Z","expires":"2999-01-01T00:00:00Z"}}"#
    );
    redis.cli(&["HSET", "{celador}:revocations", &field, &expiring]);
    push(&idp, IDP, "", "i-6", now(), risc("credential-compromise"));
    assert!(
        entry().contains(&format!("\"by\":\"{IDP}\"")),
        "{}",
        entry()
    );
    push(&idp, IDP, "", "i-7", now(), risc("account-enabled"));
    assert!(entry().contains("INC-7"), "{}", entry());
    // An operator's withdrawal clears every report, those held included.
    push(
        &ci,
        CI,
        "ci-push-secret",
        "c-8",
        now() + 200,
        risc("credential-compromise"),
    );
    assert!(
        !redis
            .cli(&["HGET", "{celador}:ssf:held", &field])
            .trim()
            .is_empty()
    );
    // The on-call engineer sees both: the entry in force and what is held
    // behind it.
    let url = redis.url();
    let celador = |args: &[&str]| {
        let (code, out, err) = support::celador::run_on_store(&url, args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        out
    };
    let governance = |format: &str| celador(&["governance", "--format", format]);
    let listed = governance("text");
    assert!(listed.contains("1 revocations held behind"), "{listed}");
    let lines: Vec<&str> = listed.lines().skip(1).collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert!(
        lines[0].starts_with(&format!("revoked  {field}  until unrevoked")),
        "{listed}"
    );
    assert!(lines[0].contains(&format!("by {CI}")), "{listed}");
    assert!(
        lines[1].starts_with(&format!("  held   {field}  until 2999-01-01")),
        "{listed}"
    );
    assert!(lines[1].contains("reason \"INC-7\""), "{listed}");
    let listed: Value = serde_json::from_str(&governance("json")).unwrap();
    assert_eq!(
        listed["held"][&field]["oncall"]["reason"], "INC-7",
        "{listed}"
    );
    celador(&["unrevoke", "--spiffe-id", EXPORTER]);
    assert!(!revoked(&redis, EXPORTER));
    assert_eq!(
        redis.cli(&["HGET", "{celador}:ssf:held", &field]).trim(),
        ""
    );

    // An operator's revocation for an hour over the tools' reports drops
    // none of them: it is held behind the IdP's, and the reports take their
    // turns as each is withdrawn, lasting ones first.
    push(&idp, IDP, "", "i-8", now(), risc("credential-compromise"));
    push(
        &ci,
        CI,
        "ci-push-secret",
        "c-9",
        now() + 210,
        risc("credential-compromise"),
    );
    let said = celador(&[
        "revoke",
        "--spiffe-id",
        EXPORTER,
        "--reason",
        "INC-9",
        "--for",
        "1h",
        "--by",
        "oncall",
    ]);
    assert!(said.contains(&format!("by {IDP}'s revocation")), "{said}");
    assert!(said.contains("is held behind it"), "{said}");
    assert!(
        entry().contains(&format!("\"by\":\"{IDP}\"")),
        "{}",
        entry()
    );
    push(&idp, IDP, "", "i-9", now(), risc("account-enabled"));
    assert!(entry().contains(&format!("\"by\":\"{CI}\"")), "{}", entry());
    push(
        &ci,
        CI,
        "ci-push-secret",
        "c-10",
        now() + 220,
        risc("account-enabled"),
    );
    assert!(entry().contains("INC-9"), "{}", entry());
    let said = celador(&["unrevoke", "--spiffe-id", EXPORTER]);
    assert!(said.contains("unrevoked"), "{said}");
    assert!(!revoked(&redis, EXPORTER));

    // Bad data in the store stops no SET and loses no revocation. An
    // entry that is not one (not JSON, or one the sidecars refuse): a
    // withdrawal leaves it to its writer, a revocation is written over it.
    let refused = r#"{"by":"https://edr.example.com/","set":{},"reason":"x"}"#;
    // Written by a script: an entry that is not UTF-8.
    let not_utf8 = "redis.call('HSET', KEYS[1], ARGV[1], string.char(255, 254))";
    for (n, bad) in ["not json", refused, not_utf8].into_iter().enumerate() {
        if bad == not_utf8 {
            redis.cli(&["EVAL", bad, "1", "{celador}:revocations", &field]);
        } else {
            redis.cli(&["HSET", "{celador}:revocations", &field, bad]);
        }
        push(
            &idp,
            IDP,
            "",
            &format!("i-10-{n}"),
            now(),
            risc("account-enabled"),
        );
        // Left as it was, byte for byte (shown here as redis-cli prints it).
        let shown = match bad == not_utf8 {
            true => "\u{fffd}\u{fffd}",
            false => bad,
        };
        assert_eq!(entry().trim(), shown);
        push(
            &idp,
            IDP,
            "",
            &format!("i-11-{n}"),
            now(),
            risc("credential-compromise"),
        );
        assert!(
            entry().contains(&format!("\"by\":\"{IDP}\"")),
            "{}",
            entry()
        );
        push(
            &idp,
            IDP,
            "",
            &format!("i-12-{n}"),
            now(),
            risc("account-enabled"),
        );
        assert!(!revoked(&redis, EXPORTER));
    }
    // Held reports that are not a hash (nothing readable in them) are
    // replaced by the receiver's next write: CI's report is held, and
    // takes the IdP's place.
    push(&idp, IDP, "", "i-13", now(), risc("credential-compromise"));
    redis.cli(&["SET", "{celador}:ssf:held", "oops"]);
    push(
        &ci,
        CI,
        "ci-push-secret",
        "c-11",
        now() + 230,
        risc("credential-compromise"),
    );
    assert!(
        entry().contains(&format!("\"by\":\"{IDP}\"")),
        "{}",
        entry()
    );
    push(&idp, IDP, "", "i-14", now(), risc("account-enabled"));
    assert!(entry().contains(&format!("\"by\":\"{CI}\"")), "{}", entry());
    push(
        &ci,
        CI,
        "ci-push-secret",
        "c-11b",
        now() + 235,
        risc("account-enabled"),
    );
    assert!(!revoked(&redis, EXPORTER));
    // Nor do they stop an operator: the change is made as before held
    // reports existed.
    redis.cli(&["SET", "{celador}:ssf:held", "oops"]);
    let said = celador(&["revoke", "--spiffe-id", EXPORTER, "--reason", "INC-11"]);
    assert!(said.contains("new entry"), "{said}");
    assert!(revoked(&redis, EXPORTER));
    let said = celador(&["unrevoke", "--spiffe-id", EXPORTER]);
    assert!(said.contains("unrevoked"), "{said}");
    assert!(!revoked(&redis, EXPORTER));
    assert_eq!(redis.cli(&["GET", "{celador}:ssf:held"]).trim(), "oops");
    redis.cli(&["DEL", "{celador}:ssf:held"]);
    // `expires: null` lasts, as the sidecars read it: not displaced.
    let lasting = format!(
        r#"{{"spiffe_id":"{EXPORTER}","reason":"INC-12","by":"oncall","from":"laptop","at":"2026-01-01T00:00:00Z","expires":null}}"#
    );
    redis.cli(&["HSET", "{celador}:revocations", &field, &lasting]);
    push(
        &ci,
        CI,
        "ci-push-secret",
        "c-12",
        now() + 240,
        risc("credential-compromise"),
    );
    assert!(entry().contains("INC-12"), "{}", entry());
    let held = redis.cli(&["HGET", "{celador}:ssf:held", &field]);
    assert!(held.contains("c-12"), "{held}");
    // The operator makes its own revocation lapse in an hour: CI's lasting
    // report, held behind it, takes its place rather than lapse with it.
    let said = celador(&[
        "revoke",
        "--spiffe-id",
        EXPORTER,
        "--reason",
        "INC-13",
        "--for",
        "1h",
        "--by",
        "oncall",
    ]);
    assert!(said.contains("is held behind it"), "{said}");
    assert!(entry().contains(&format!("\"by\":\"{CI}\"")), "{}", entry());
    let held = redis.cli(&["HGET", "{celador}:ssf:held", &field]);
    assert!(held.contains("INC-13"), "{held}");
    // Another operator's, lapsing later, is held too; when CI withdraws,
    // the one lapsing last takes its place.
    let said = celador(&[
        "revoke",
        "--spiffe-id",
        EXPORTER,
        "--reason",
        "INC-14",
        "--for",
        "2h",
        "--by",
        "zed",
    ]);
    assert!(said.contains("is held behind it"), "{said}");
    push(
        &ci,
        CI,
        "ci-push-secret",
        "c-14",
        now() + 250,
        risc("account-enabled"),
    );
    assert!(entry().contains("INC-14"), "{}", entry());
    let held = redis.cli(&["HGET", "{celador}:ssf:held", &field]);
    assert!(
        held.contains("INC-13") && !held.contains("INC-14"),
        "{held}"
    );
    // Operators drop none of each other's: a lasting one takes the place
    // of the expiring one in force, which is held; a shorter one after it
    // is held too.
    let said = celador(&[
        "revoke",
        "--spiffe-id",
        EXPORTER,
        "--reason",
        "INC-15",
        "--by",
        "alice",
    ]);
    assert!(
        said.contains("zed's, which it outlasts, is held behind it"),
        "{said}"
    );
    let said = celador(&[
        "revoke",
        "--spiffe-id",
        EXPORTER,
        "--reason",
        "INC-16",
        "--for",
        "30m",
        "--by",
        "dave",
    ]);
    assert!(said.contains("by alice's revocation"), "{said}");
    assert!(entry().contains("INC-15"), "{}", entry());
    let held = redis.cli(&["HGET", "{celador}:ssf:held", &field]);
    for kept in ["INC-13", "INC-14", "INC-16"] {
        assert!(held.contains(kept), "{kept}: {held}");
    }

    // When a tool withdraws, only a held revocation the sidecars load takes
    // its place, the one lapsing last in time (not as text).
    celador(&["unrevoke", "--spiffe-id", EXPORTER]);
    push(&idp, IDP, "", "i-20", now(), risc("credential-compromise"));
    let held_entry = |by: &str, expires: &str, extra: &str| {
        format!(
            r#"{{"spiffe_id":"{EXPORTER}","reason":"{by}'s","expires":"{expires}","by":"{by}","from":"h","at":"2026-01-01T00:00:00Z"{extra}}}"#
        )
    };
    let held = json!({
        "mallory": held_entry("mallory", "3999-01-01T00:00:00Z", r#","unknown":1"#),
        "alice": held_entry("alice", "2999-01-01T02:00:00+05:00", ""),
        "bob": held_entry("bob", "2999-01-01T00:00:00Z", ""),
    });
    redis.cli(&["HSET", "{celador}:ssf:held", &field, &held.to_string()]);
    push(&idp, IDP, "", "i-21", now(), risc("account-enabled"));
    assert!(entry().contains("bob's"), "{}", entry());
    let held = redis.cli(&["HGET", "{celador}:ssf:held", &field]);
    assert!(held.contains("mallory") && held.contains("alice"), "{held}");

    // The receiver writing other entries all the while (each write fires
    // the CLI's WATCH): every operator's change still goes through.
    let other = "spiffe_id:spiffe://example.org/ns/other/sa/x";
    let writes = [
        "-r",
        "3000",
        "-i",
        "0.001",
        "HSET",
        "{celador}:revocations",
        other,
        "x",
    ];
    std::thread::scope(|scope| {
        let busy = scope.spawn(|| redis.cli(&writes));
        for n in 0..4 {
            let reason = format!("INC-3{n}");
            let said = celador(&["revoke", "--spiffe-id", EXPORTER, "--reason", &reason]);
            assert!(said.contains("revoked"), "{said}");
            celador(&["unrevoke", "--spiffe-id", EXPORTER]);
        }
        busy.join().unwrap();
    });
    // Risk levels: each transmitter's report is kept beside the other's.
    push(&idp, IDP, "", "i-3", now(), risk("HIGH"));
    push(&ci, CI, "ci-push-secret", "c-3", now() + 10, risk("LOW"));
    let fields = redis.cli(&["HKEYS", "{celador}:risks"]);
    assert_eq!(fields.lines().count(), 2, "{fields}");
    assert!(
        fields.contains(&format!("{IDP}|spiffe_id:{EXPORTER}")),
        "{fields}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transmitter_at_its_risk_cap_adds_no_subject_and_risks_never_hold_up_revocations() {
    const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";
    let redis = support::redis::Redis::start(false);
    let scene = Scene::new();
    let (path, write) = scene.files();
    let idp = Signer::es256("idp-1");
    write("idp.json", &jwt::jwks(&[&idp]));
    write(
        "receiver.yaml",
        &format!(
            "listen: 127.0.0.1:0\ntls: {{cert: tls.crt, key: tls.key}}\nmax_risks: 100\n\
             transmitters:\n  - issuer: {IDP}\n    audience: {AUD}\n    jwks_file: idp.json\n    max_risks: 3\n\
             sink: {{store: {}}}\nlog: {{format: json}}\n",
            redis.url()
        ),
    );
    let ca = Ca::root("example.org");
    write("example.org.pem", &ca.pem);
    write(
        "policy.yaml",
        "rules:\n  - name: anyone\n    effect: allow\n    when: source.trust_domain == \"example.org\"\n",
    );
    write(
        "celador.yaml",
        &format!(
            "listen: 127.0.0.1:0\npolicy: policy.yaml\ntrust_domains:\n  example.org:\n    bundle: example.org.pem\n\
             worker_threads: 1\ngovernance:\n  store: {}\nlog:\n  format: json\n",
            redis.url()
        ),
    );
    let receiver = scene.receiver();
    let celador = Celador::start(&path("celador.yaml"));
    let push = |jti: &str, id: &str, events: Value| {
        scene.push_ok(&receiver, &uri_set(&idp, jti, id, events));
    };
    let risk = |level: &str| json!({format!("{CAEP}risk-level-change"): {"principal": "USER", "current_level": level}});
    let id = |n: usize| format!("spiffe://example.org/ns/team/sa/s{n}");
    for n in 0..4 {
        push(&format!("r-{n}"), &id(n), risk("HIGH"));
    }
    // The fourth subject is past the transmitter's cap of 3: accepted (a
    // valid SET, RFC 8935 §2.2), not kept, counted and logged.
    let fields = redis.cli(&["HKEYS", "{celador}:risks"]);
    assert_eq!(fields.lines().count(), 3, "{fields}");
    assert!(!fields.contains(&id(3)), "{fields}");
    assert_eq!(
        redis
            .cli(&["HGET", "{celador}:ssf:risk-counts", IDP])
            .trim(),
        "3"
    );
    let metrics = support::https::tls(
        receiver.addr,
        &scene.server_ca.pem,
        None,
        &support::https::Call::get("/metrics"),
    )
    .body;
    assert!(
        metrics.contains(r#"celador_signals_actions_unapplied_total{action="risk",why="cap"} 1"#),
        "{metrics}"
    );
    assert!(receiver.log().contains("max_risks"), "{}", receiver.log());
    // A count lost (deleted by hand, or entries from before the cap) is
    // counted again from the store: still capped.
    redis.cli(&["DEL", "{celador}:ssf:risk-counts"]);
    push("r-4", &id(4), risk("HIGH"));
    let fields = redis.cli(&["HKEYS", "{celador}:risks"]);
    assert_eq!(fields.lines().count(), 3, "{fields}");
    assert_eq!(
        redis
            .cli(&["HGET", "{celador}:ssf:risk-counts", IDP])
            .trim(),
        "3"
    );
    // Its own entries are still lowered.
    push("r-low", &id(0), risk("LOW"));
    let stored = redis.cli(&[
        "HGET",
        "{celador}:risks",
        &format!("{IDP}|spiffe_id:{}", id(0)),
    ]);
    assert!(stored.contains(r#""level":"low""#), "{stored}");

    // Volume: 20,000 risk entries and 2,000 feed records about them ahead
    // of a revocation hold it up by no more than reads of what changed.
    let expires = SystemTime::now() + Duration::from_secs(3600);
    let expires = celador::engine::time::rfc3339(expires);
    redis.cli(&[
        "EVAL",
        r#"for i = 1, 20000 do
             local id = 'spiffe://example.org/ns/load/sa/s' .. i
             redis.call('HSET', KEYS[1], ARGV[1] .. '|spiffe_id:' .. id,
               '{"spiffe_id":"' .. id .. '","level":"medium","since":"2026-01-01T00:00:00Z","expires":"'
               .. ARGV[2] .. '","source":"' .. ARGV[1]
               .. '","event":"e","jti":"j","by":"b","from":"f","at":"2026-01-01T00:00:00Z"}')
             if i % 10 == 0 then
               redis.call('XADD', KEYS[2], '*', 'op', 'risk', 'entry', ARGV[1] .. '|spiffe_id:' .. id)
             end
           end
           return 1"#,
        "2",
        "{celador}:risks",
        "{celador}:feed",
        "https://load.example.com/",
        &expires,
    ]);
    let start = Instant::now();
    push(
        "c-0",
        PAYMENTS,
        json!({format!("{RISC}credential-compromise"): {"credential_type": "x509"}}),
    );
    report(
        "credential-compromise behind 2,000 risk records over 20,000 entries",
        &propagation(std::slice::from_ref(&celador), &ca, PAYMENTS, true, start).await,
    );
    // And the risk levels named were read and published.
    let read = support::wait_for(Duration::from_secs(3), || {
        celador.log().contains(r#""risks":2003"#).then_some(())
    });
    assert!(read.is_some(), "{}", celador.log());

    // A risks hash the replicas cannot read (bad data) holds up no
    // revocation: revocations are read and published apart.
    redis.cli(&["DEL", "{celador}:risks"]);
    redis.cli(&["SET", "{celador}:risks", "not a hash"]);
    // A risk record on the feed makes every replica read the field again.
    redis.cli(&[
        "XADD",
        "{celador}:feed",
        "*",
        "op",
        "risk",
        "entry",
        &format!("{IDP}|spiffe_id:{}", id(1)),
    ]);
    propagation(
        std::slice::from_ref(&celador),
        &ca,
        EXPORTER,
        false,
        Instant::now(),
    )
    .await;
    let start = Instant::now();
    push(
        "c-1",
        EXPORTER,
        json!({format!("{RISC}credential-compromise"): {"credential_type": "x509"}}),
    );
    report(
        "credential-compromise beside unreadable risks",
        &propagation(std::slice::from_ref(&celador), &ca, EXPORTER, true, start).await,
    );
    assert!(
        celador.log().contains("risk levels cannot be read"),
        "{}",
        celador.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assurance_level_change_sets_the_risk_its_table_names_with_the_set_in_the_trail() {
    const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";
    let scene = Scene::new();
    let (path, write) = scene.files();
    let idp = Signer::es256("idp-1");
    write("idp.json", &jwt::jwks(&[&idp]));
    // The defaults for NIST-AAL, and a custom namespace of the IdP's.
    write(
        "receiver.yaml",
        &format!(
            "listen: 127.0.0.1:0\ntls: {{cert: tls.crt, key: tls.key}}\n\
             transmitters:\n  - issuer: {IDP}\n    audience: {AUD}\n    jwks_file: idp.json\n\
             assurance_levels:\n  https://idp.example.com/acr: {{bronze: high, gold: low}}\n\
             sink: {{revocations_file: revocations.yaml, risks_file: risks.yaml}}\nlog: {{format: json}}\n"
        ),
    );
    let ca = Ca::root("example.org");
    write("example.org.pem", &ca.pem);
    write(
        "policy.yaml",
        "rules:\n  - name: anyone\n    effect: allow\n    when: source.trust_domain == \"example.org\"\n\
         \x20 - name: no-payment-writes-at-high-risk\n    effect: deny\n    when: >\n\
         \x20     request.method != \"GET\" && has(signals.risk.level) && signals.risk.level == \"high\"\n",
    );
    write(
        "celador.yaml",
        "listen: 127.0.0.1:0\npolicy: policy.yaml\ntrust_domains:\n  example.org:\n    bundle: example.org.pem\n\
         governance:\n  revocations: {path: revocations.yaml, optional: true}\n  risks: {path: risks.yaml, optional: true}\n\
         log:\n  format: json\n",
    );
    let receiver = scene.receiver();
    let celadors = [Celador::start(&path("celador.yaml"))];
    let push = |jti: &str, event: Value| {
        let events = json!({format!("{CAEP}assurance-level-change"): event});
        scene.push_ok(&receiver, &uri_set(&idp, jti, PAYMENTS, events));
    };
    risk_decided(&celadors, &ca, PAYMENTS, "POST", false, Instant::now()).await;
    // A namespace the table does not name: accepted, changes nothing.
    push(
        "a-0",
        json!({"namespace": "RFC8176", "current_level": "pwd", "event_timestamp": now() - 9}),
    );
    let said = support::wait_for(Duration::from_secs(3), || {
        receiver
            .log()
            .contains("is not in assurance_levels")
            .then_some(())
    });
    assert!(said.is_some(), "{}", receiver.log());
    // A decrease to one factor (CAEP's example namespace): high risk.
    let start = Instant::now();
    push(
        "a-1",
        json!({"namespace": "NIST-AAL", "current_level": "nist-aal1", "previous_level": "nist-aal2",
               "change_direction": "decrease", "event_timestamp": now() - 5}),
    );
    let took = risk_decided(&celadors, &ca, PAYMENTS, "POST", true, start).await;
    assert!(took < Duration::from_secs(1), "{took:?}");
    // The trail names the transmitter, the event type and the SET.
    let record = support::wait_for(Duration::from_secs(2), || {
        celadors[0]
            .audit_records()
            .into_iter()
            .rfind(|r| r["reason"] == "denied_by_rule")
    })
    .unwrap();
    let risk = &record["read"]["signals"]["risk"];
    assert_eq!(risk["level"], "high", "{record}");
    assert_eq!(risk["source"], IDP, "{record}");
    assert_eq!(risk["jti"], "a-1", "{record}");
    assert_eq!(
        risk["event"],
        format!("{CAEP}assurance-level-change"),
        "{record}"
    );
    let text = std::fs::read_to_string(path("risks.yaml")).unwrap();
    assert!(
        text.contains("assurance NIST-AAL nist-aal1 (decrease from nist-aal2)"),
        "{text}"
    );
    // The IdP's own namespace, from the config: gold is low risk.
    let start = Instant::now();
    push(
        "a-2",
        json!({"namespace": "https://idp.example.com/acr", "current_level": "gold", "event_timestamp": now()}),
    );
    let took = risk_decided(&celadors, &ca, PAYMENTS, "POST", false, start).await;
    assert!(took < Duration::from_secs(1), "{took:?}");
}

/// A poll transmitter's queue (SETs by `jti`, kept until acknowledged or
/// reported) and the requests it was sent; `notify` wakes a held long poll.
#[derive(Default)]
struct PollQueue {
    sets: Mutex<Vec<(String, String)>>,
    notify: std::sync::Condvar,
    requests: Mutex<Vec<Value>>,
}

impl PollQueue {
    /// An HTTPS poll endpoint serving this queue; a request with
    /// `returnImmediately: false` is held up to 5 s while the queue is
    /// empty (long polling, RFC 8936 §2.4).
    fn serve(self: &Arc<Self>) -> (SocketAddr, Ca) {
        let queue = Arc::clone(self);
        https_server(move |head, body| {
            if !head.starts_with("post /poll ") {
                return (404, "{}".into());
            }
            let request: Value = serde_json::from_slice(body).unwrap();
            let done = done(&request);
            let hold = request["returnImmediately"] == false;
            queue.requests.lock().unwrap().push(request);
            let mut sets = queue.sets.lock().unwrap();
            sets.retain(|(jti, _)| !done.contains(jti));
            if hold {
                sets = queue
                    .notify
                    .wait_timeout_while(sets, Duration::from_secs(5), |s| s.is_empty())
                    .unwrap()
                    .0;
            }
            let sets: serde_json::Map<String, Value> = sets
                .iter()
                .map(|(jti, set)| (jti.clone(), Value::String(set.clone())))
                .collect();
            (200, json!({"sets": sets}).to_string())
        })
    }

    fn add(&self, jti: &str, set: String) {
        self.sets.lock().unwrap().push((jti.to_owned(), set));
        self.notify.notify_all();
    }

    fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }
}

/// A receiver polling `addr` (its CA `ca`) with the `poll` settings
/// given, writing to `sink` (the `sink:` value, a YAML flow mapping).
fn poll_receiver(
    addr: SocketAddr,
    ca: &Ca,
    idp: &Signer,
    poll: &str,
    sink: &str,
) -> (Scene, Receiver) {
    let scene = Scene::new();
    scene.write("idp.json", &jwt::jwks(&[idp]));
    scene.write("idp-ca.pem", &ca.pem);
    scene.write(
        "receiver.yaml",
        &format!(
            "listen: 127.0.0.1:0\ntls: {{cert: tls.crt, key: tls.key}}\n\
             transmitters:\n  - issuer: {IDP}\n    audience: {AUD}\n    jwks_file: idp.json\n\
             \x20   poll: {{url: \"https://localhost:{}/poll\", ca_file: idp-ca.pem, {poll}}}\n\
             sink: {sink}\nlog: {{format: json}}\n",
            addr.port()
        ),
    );
    let receiver = scene.receiver();
    (scene, receiver)
}

#[test]
fn a_long_poll_is_held_by_the_transmitter_and_a_set_arriving_meanwhile_is_applied_at_once() {
    let idp = Signer::es256("idp-1");
    let queue = Arc::new(PollQueue::default());
    let (addr, ca) = queue.serve();
    // A short poller would wait 10 s after an empty poll.
    let (scene, receiver) = poll_receiver(
        addr,
        &ca,
        &idp,
        "interval: 10s, wait: 5s",
        "{revocations_file: revocations.yaml}",
    );
    support::wait_for(Duration::from_secs(5), || {
        (!queue.requests().is_empty()).then_some(())
    })
    .unwrap_or_else(|| panic!("no poll: {}", receiver.log()));
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    queue.add("l-1", compromise(&idp, "l-1"));
    let file = scene.path("revocations.yaml");
    support::wait_for(Duration::from_secs(3), || {
        std::fs::read_to_string(&file)
            .ok()
            .filter(|t| t.contains("ns/jwks/sa/l-1"))
    })
    .unwrap_or_else(|| panic!("not applied: {}", receiver.log()));
    let took = start.elapsed();
    assert!(took < Duration::from_secs(1), "{took:?}");
    // Acknowledged in the next (held) request; every request a long poll.
    support::wait_for(Duration::from_secs(3), || {
        queue.sets.lock().unwrap().is_empty().then_some(())
    })
    .unwrap_or_else(|| panic!("not acknowledged: {:?}", queue.requests()));
    let requests = queue.requests();
    assert!(
        requests.iter().all(|r| r["returnImmediately"] == false),
        "{requests:?}"
    );
    assert!(
        requests.iter().any(|r| r["ack"] == json!(["l-1"])),
        "{requests:?}"
    );
}

#[test]
fn a_polled_set_the_store_cannot_keep_is_not_acknowledged_until_a_later_poll_keeps_it() {
    let idp = Signer::es256("idp-1");
    let mut redis = support::redis::Redis::start(false);
    redis.kill();
    let queue = Arc::new(PollQueue::default());
    queue.add("s-1", compromise(&idp, "s-1"));
    let (addr, ca) = queue.serve();
    let (_dir, receiver) = poll_receiver(
        addr,
        &ca,
        &idp,
        "interval: 200ms",
        &format!("{{store: {}}}", redis.url()),
    );
    // Redis is down: the SET is delivered again and again, neither
    // acknowledged nor reported.
    support::wait_for(Duration::from_secs(5), || {
        (queue.requests().len() >= 3).then_some(())
    })
    .unwrap_or_else(|| panic!("too few polls: {}", receiver.log()));
    let unkept = |r: &Value| r["ack"] == json!([]) && r["setErrs"] == json!({});
    let requests = queue.requests();
    assert!(requests.iter().all(unkept), "{requests:?}");
    assert_eq!(queue.sets.lock().unwrap().len(), 1);
    // Back: a later poll keeps it, and the next one acknowledges it.
    redis.restart();
    support::wait_for(Duration::from_secs(10), || {
        queue.sets.lock().unwrap().is_empty().then_some(())
    })
    .unwrap_or_else(|| panic!("never acknowledged: {}", receiver.log()));
    let field = "spiffe_id:spiffe://example.org/ns/jwks/sa/s-1";
    assert_eq!(
        redis
            .cli(&["HEXISTS", "{celador}:revocations", field])
            .trim(),
        "1"
    );
    let requests = queue.requests();
    assert!(
        requests.iter().all(|r| r["setErrs"] == json!({})),
        "{requests:?}"
    );
    assert_eq!(
        requests
            .iter()
            .filter(|r| r["ack"] == json!(["s-1"]))
            .count(),
        1,
        "{requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_user_without_the_narrow_reads_still_replicates_by_reading_everything() {
    const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";
    let redis = support::redis::Redis::start(false);
    // The ACL docs/fleet.md gave sidecars before XRANGE and HMGET (less
    // `client|setinfo`, which Redis 7.0 does not know).
    let acl = redis.cli(&[
        "ACL",
        "SETUSER",
        "old-sidecar",
        "on",
        ">old-secret",
        "~{celador}:*",
        "-@all",
        "+get",
        "+hgetall",
        "+xread",
        "+xrevrange",
        "+multi",
        "+exec",
        "+ping",
        "+hello",
    ]);
    assert_eq!(acl.trim(), "OK");
    let scene = Scene::new();
    let (_, write) = scene.files();
    let idp = scene.idp();
    write("password", "old-secret\n");
    write("receiver.yaml", &store_receiver(&redis.url()));
    let ca = scene.trust_domain();
    write("policy.yaml", ANYONE);
    let governance = "  username: old-sidecar\n  password_file: password\n  signals_interval: 0s\n";
    write("celador.yaml", &store_celador(&redis.url(), governance));
    let receiver = scene.receiver();
    let celador = scene.celador();
    let push = |jti: &str, id: &str, events: Value| {
        scene.push_ok(&receiver, &uri_set(&idp, jti, id, events));
    };
    propagation(
        std::slice::from_ref(&celador),
        &ca,
        EXPORTER,
        false,
        Instant::now(),
    )
    .await;
    push(
        "r-1",
        PAYMENTS,
        json!({format!("{CAEP}risk-level-change"): {"principal": "USER", "current_level": "HIGH"}}),
    );
    let start = Instant::now();
    push("c-1", EXPORTER, x509_compromise());
    report(
        "credential-compromise to a sidecar without XRANGE and HMGET",
        &propagation(std::slice::from_ref(&celador), &ca, EXPORTER, true, start).await,
    );
    let said = support::wait_for(Duration::from_secs(3), || {
        let log = celador.log();
        (log.contains("reading the whole state at each change") && log.contains(r#""risks":1"#))
            .then_some(())
    });
    assert!(said.is_some(), "{}", celador.log());
}

#[test]
fn signals_check_validates_the_assurance_table_and_the_risk_cap() {
    let scene = Scene::new();
    let (path, write) = scene.files();
    write("idp.json", &jwt::jwks(&[&Signer::es256("idp-1")]));
    let check = |extra: &str| {
        write(
            "receiver.yaml",
            &format!(
                "tls: {{cert: tls.crt, key: tls.key}}\n\
                 transmitters:\n  - issuer: {IDP}\n    audience: {AUD}\n    jwks_file: idp.json\n\
                 sink: {{revocations_file: revocations.yaml}}\n{extra}"
            ),
        );
        support::celador::run(&[
            "signals",
            "check",
            "--config",
            path("receiver.yaml").to_str().unwrap(),
        ])
    };
    let (code, out, err) = check(
        "max_risks: 500\nassurance_levels:\n  NIST-AAL: {nist-aal1: high}\n  https://idp.example.com/acr: {gold: low}\n",
    );
    assert_eq!(code, 0, "{out}{err}");
    for (extra, said) in [
        (
            "assurance_levels:\n  NIST-AAL: {nist-aal1: severe}\n",
            "severe",
        ),
        (
            "assurance_levels:\n  NIST-AAL: {nist-aal1: high, NIST-AAL1: low}\n",
            "is given twice",
        ),
        ("max_risks: 5000000\n", "max_risks: at most 1000000"),
    ] {
        let (code, _, err) = check(extra);
        assert_eq!(code, 64, "{extra}: {err}");
        assert!(err.contains(said), "{extra}: {err}");
    }
}

/// The `ACL SETUSER` lines of docs/fleet.md: each user and its rules, the
/// password `pw-USER`.
fn documented_acls() -> Vec<(String, Vec<String>)> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/fleet.md")).unwrap();
    doc.lines()
        .filter_map(|l| l.trim().strip_prefix("ACL SETUSER "))
        .map(|rest| {
            let mut words = rest.split_whitespace();
            let user = words.next().unwrap().to_owned();
            let rules = words
                .map(|w| match w {
                    ">PASSWORD" => format!(">pw-{user}"),
                    w => w.to_owned(),
                })
                .collect();
            (user, rules)
        })
        .collect()
}

/// An instance's verdict for `cert`: "allowed" or the denial reason.
async fn verdict(celador: &Celador, cert: &str) -> String {
    let mut client = AuthorizationClient::connect(format!("http://{}", celador.addr))
        .await
        .unwrap();
    let r = client
        .check(request(cert, "GET", "/export", &[]))
        .await
        .unwrap()
        .into_inner();
    if allowed(&r) {
        "allowed".into()
    } else {
        denial(&r).unwrap().1
    }
}

/// Whether every instance gives `cert` `expected` within 3 s.
async fn everywhere(celadors: &[Celador], cert: &str, expected: &str) -> bool {
    let start = Instant::now();
    'again: while start.elapsed() < Duration::from_secs(3) {
        for c in celadors {
            if verdict(c, cert).await != expected {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue 'again;
            }
        }
        return true;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_acls_let_each_component_work_and_nothing_more() {
    const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";
    const RISKY: &str = "spiffe://example.org/ns/risky/sa/r";
    const STOLEN: &str = "spiffe://example.org/ns/stolen/sa/s";
    const OUTSIDER: &str = "spiffe://example.org/other/sa/x";
    let redis = support::redis::Redis::start(false);
    let acls = documented_acls();
    let users: Vec<&str> = acls.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(
        users,
        ["celador-sidecar", "celador-oncall", "celador-receiver"]
    );
    let scene = Scene::new();
    let (path, write) = scene.files();
    for (user, rules) in &acls {
        let mut args = vec!["ACL", "SETUSER", user.as_str()];
        args.extend(rules.iter().map(String::as_str));
        assert_eq!(redis.cli(&args).trim(), "OK", "{user}: {rules:?}");
        write(user, &format!("pw-{user}\n"));
    }
    let idp = scene.idp();
    write(
        "receiver.yaml",
        &format!(
            "listen: 127.0.0.1:0\ntls: {{cert: tls.crt, key: tls.key}}\n\
             transmitters:\n  - issuer: {IDP}\n    audience: {AUD}\n    jwks_file: idp.json\n\
             sink: {{store: {}, username: celador-receiver, password_file: celador-receiver}}\n\
             log: {{format: json}}\n",
            redis.url()
        ),
    );
    let ca = scene.trust_domain();
    write(
        "policy.yaml",
        &format!(
            "rules:\n  - name: known\n    effect: allow\n    when: source.id.startsWith(\"spiffe://example.org/ns/\")\n\
             \x20 - name: risky\n    effect: deny\n    when: has(signals.risk.level) && signals.risk.level == \"high\"\n\
             \x20 - name: fleet-volume\n    effect: deny\n    when: source.id == \"{PAYMENTS}\" && signals.fleet.requests_1m > 6\n"
        ),
    );
    let governance = "  username: celador-sidecar\n  password_file: celador-sidecar\n";
    write("celador.yaml", &store_celador(&redis.url(), governance));
    let receiver = scene.receiver();
    let celadors: Vec<Celador> = (0..2).map(|_| scene.celador()).collect();
    let cert = |id: &str| ca.svid(id).envoy_encoded();
    let (exporter, payments) = (cert(EXPORTER), cert(PAYMENTS));
    assert!(everywhere(&celadors, &exporter, "allowed").await);

    // The on-call user: revoke, unrevoke, grant, ungrant.
    let url = redis.url();
    let oncall_pw = path("celador-oncall");
    let as_user = |user: &str, password: &Path, args: &[&str]| {
        let mut all = args.to_vec();
        let password = password.to_str().unwrap();
        all.extend([
            "--store",
            &url,
            "--username",
            user,
            "--password-file",
            password,
        ]);
        support::celador::run(&all)
    };
    let oncall = |args: &[&str]| {
        let (code, out, err) = as_user("celador-oncall", &oncall_pw, args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
    };
    oncall(&["revoke", "--spiffe-id", EXPORTER, "--reason", "INC-1"]);
    assert!(everywhere(&celadors, &exporter, "revoked").await);
    oncall(&["unrevoke", "--spiffe-id", EXPORTER]);
    assert!(everywhere(&celadors, &exporter, "allowed").await);
    let outsider = cert(OUTSIDER);
    assert!(everywhere(&celadors, &outsider, "no_allow_rule").await);
    let grant = [
        "--name",
        "inc-2",
        "--identity",
        OUTSIDER,
        "--duration",
        "1m",
    ];
    oncall(&[&["grant"][..], &grant[..], &["--reason", "INC-2"]].concat());
    assert!(everywhere(&celadors, &outsider, "allowed").await);
    oncall(&["ungrant", "--name", "inc-2"]);
    oncall(&["governance"]);
    assert!(everywhere(&celadors, &outsider, "no_allow_rule").await);

    // The receiver's user: a pushed compromise and a risk level, which
    // the sidecars' user replicates.
    let push = |jti: &str, id: &str, events: Value| {
        scene.push_ok(&receiver, &uri_set(&idp, jti, id, events));
    };
    push("c-1", STOLEN, x509_compromise());
    push(
        "r-1",
        RISKY,
        json!({format!("{CAEP}risk-level-change"): {"principal": "USER", "current_level": "HIGH"}}),
    );
    assert!(everywhere(&celadors, &cert(STOLEN), "revoked").await);
    assert!(everywhere(&celadors, &cert(RISKY), "denied_by_rule").await);

    // The sidecars' fleet-signal exchange: 4 requests on each instance,
    // 8 over the fleet, crosses a rule neither instance's own count does.
    for round in 0..4 {
        for (i, c) in celadors.iter().enumerate() {
            let v = verdict(c, &payments).await;
            if round < 3 {
                assert_eq!(v, "allowed", "round {round} on instance {i}");
            }
        }
    }
    // After an exchange (250 ms) each instance's next request is its
    // 5th: only the fleet's count crosses 6 (no polling here, which would
    // add requests).
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (i, c) in celadors.iter().enumerate() {
        assert_eq!(
            verdict(c, &payments).await,
            "denied_by_rule",
            "instance {i}"
        );
    }

    // No component was refused anything.
    assert_eq!(redis.cli(&["ACL", "LOG"]).trim(), "");
    for log in celadors.iter().map(Celador::log).chain([receiver.log()]) {
        assert!(!log.to_lowercase().contains("noperm"), "{log}");
    }
    // The sidecars' user writes no revocation.
    let (code, out, err) = as_user(
        "celador-sidecar",
        &path("celador-sidecar"),
        &["revoke", "--spiffe-id", EXPORTER, "--reason", "not mine"],
    );
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("NoPerm"), "{err}");
    let log = redis.cli(&["ACL", "LOG"]);
    assert!(log.contains("celador-sidecar"), "{log}");
    assert_eq!(
        redis
            .cli(&[
                "HEXISTS",
                "{celador}:revocations",
                &format!("spiffe_id:{EXPORTER}")
            ])
            .trim(),
        "0"
    );

    // An on-call user with the ACL docs/fleet.md gave before held
    // revocations (no EVAL, HGET or `{celador}:ssf:held`) still revokes,
    // withdraws and lists, and is told what it left as it was.
    let older = "SETUSER celador-oncall reset on >pw-celador-oncall ~{celador}:epoch ~{celador}:revocations ~{celador}:grants %W~{celador}:feed -@all +set +hexists +hset +hdel +hgetall +xadd +multi +exec";
    let older: Vec<&str> = older.split(' ').collect();
    assert_eq!(redis.cli(&[&["ACL"][..], &older[..]].concat()).trim(), "OK");
    let (code, out, err) = as_user(
        "celador-oncall",
        &oncall_pw,
        &["revoke", "--spiffe-id", EXPORTER, "--reason", "INC-3"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("revoked"), "{out}");
    assert!(err.contains("were not considered"), "{err}");
    assert!(revoked(&redis, EXPORTER));
    let (code, out, err) = as_user(
        "celador-oncall",
        &oncall_pw,
        &["unrevoke", "--spiffe-id", EXPORTER],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("unrevoked"), "{out}");
    assert!(
        err.contains("were not cleared") && err.contains("{celador}:ssf:held"),
        "{err}"
    );
    assert!(!revoked(&redis, EXPORTER));
    let (code, out, err) = as_user("celador-oncall", &oncall_pw, &["governance"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("are not listed"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_event_times_are_kept_for_max_age_and_an_older_event_never_undoes_a_newer_one() {
    const TIMES: &str = "{celador}:ssf:event-times";
    const ORDER: &str = "{celador}:ssf:event-order";
    let redis = support::redis::Redis::start(false);
    let scene = Scene::new();
    let (_, write) = scene.files();
    let idp = scene.idp();
    write(
        "receiver.yaml",
        &format!(
            "listen: 127.0.0.1:0\ntls: {{cert: tls.crt, key: tls.key}}\nmax_age: 3s\n\
             transmitters:\n  - issuer: {IDP}\n    audience: {AUD}\n    jwks_file: idp.json\n\
             sink: {{store: {}}}\nlog: {{format: json}}\n",
            redis.url()
        ),
    );
    let receiver = scene.receiver();
    let push = |jti: &str, id: &str, event: &str, at: i64| {
        let events = json!({format!("{RISC}{event}"): {"event_timestamp": at}});
        scene.push_ok(&receiver, &uri_set(&idp, jti, id, events));
    };
    let count = |command: &str, key: &str| redis.cli(&[command, key]).trim().to_owned();
    let fields = || {
        let mut all: Vec<String> = redis
            .cli(&["HKEYS", TIMES])
            .lines()
            .map(str::to_owned)
            .collect();
        all.sort();
        all
    };
    // An event time an older celador wrote, long ago, and a risk's.
    let legacy = format!("{IDP}|spiffe_id:spiffe://example.org/ns/old/sa/o");
    let long_ago = ((now() - 100) * 1000).to_string();
    redis.cli(&["HSET", TIMES, &legacy, &long_ago, "risk:x", &long_ago]);

    // Within max_age the order holds: an older enable does not undo it.
    // (Whole seconds: one `t`, so a second ticking between the two cannot
    // make them equal.)
    let t = now();
    push("c-1", EXPORTER, "credential-compromise", t);
    push("e-1", EXPORTER, "account-enabled", t - 1);
    assert!(revoked(&redis, EXPORTER));
    // The old one was indexed and removed; the risk's is the risk's.
    assert_eq!(
        fields(),
        [format!("{IDP}|spiffe_id:{EXPORTER}"), "risk:x".into()]
    );
    assert_eq!(count("ZCARD", ORDER), "1");

    // Past max_age, the next write removes the exporter's event time: the
    // hash holds only what was reported within max_age.
    tokio::time::sleep(Duration::from_millis(4200)).await;
    push("c-2", PAYMENTS, "credential-compromise", now());
    let field = format!("{IDP}|spiffe_id:{PAYMENTS}");
    assert_eq!(fields(), [field.clone(), "risk:x".into()]);
    assert_eq!(redis.cli(&["ZRANGE", ORDER, "0", "-1"]).trim(), field);

    // An enable older than the forgotten compromise (its SET recent) might
    // be older than what was applied: it changes nothing, and says so.
    push("e-2", EXPORTER, "account-enabled", now() - 10);
    assert!(revoked(&redis, EXPORTER));
    assert!(
        receiver
            .log()
            .contains("the sink no longer remembers the entry's order"),
        "{}",
        receiver.log()
    );
    assert_eq!(count("HLEN", TIMES), "2");
    // A newer one applies, and its time is kept again.
    push("e-3", EXPORTER, "account-enabled", now());
    assert!(!revoked(&redis, EXPORTER));
    assert!(revoked(&redis, PAYMENTS));
    assert_eq!(count("HLEN", TIMES), "3");
    assert_eq!(count("ZCARD", ORDER), "2");

    // A compromise reported that late is applied all the same: a
    // revocation fails closed.
    const LATE: &str = "spiffe://example.org/ns/late/sa/l";
    push("c-3", LATE, "credential-compromise", now() - 10);
    assert!(revoked(&redis, LATE), "{}", receiver.log());
}
