//! Soak and faults through a real Envoy 1.40: a mix of allowed, denied and
//! malformed requests at load, while files break, vanish and come back, and
//! while celador is told to stop. Every answer must be celador's own (never
//! Envoy's failure path), memory and file descriptors must not grow, and the
//! last good state must stay in use.
//!
//! CI runs a short soak (`CELADOR_SOAK_CHECKS`, 20,000 by default); the
//! million-check run is recorded in FUZZING.md with its command.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::celador::Celador;
use support::envoy::{self, Envoy, Listener, Setup};
use support::jwt::{Signer, claims};
use support::load::{self, Kind, Load};
use support::pki::Ca;
use support::upstream::Upstream;
use support::workload_api::{WorkloadApi, bundles_for};

const RULES: &str = r#"
rules:
  - name: export-agents
    effect: allow
    when: token.path.startsWith("/agents/") && token.claims.purpose == "export"
  - name: no-admin
    effect: deny
    when: request.path.startsWith("/agents/admin")
"#;

/// celador behind Envoy, with JWT-SVIDs on a plain listener.
struct Stack {
    dir: tempfile::TempDir,
    signer: Signer,
    ca: Ca,
    /// The Workload API agent, when example.org's bundle comes from one.
    agent: Option<WorkloadApi>,
    celador: Celador,
    envoy: Envoy,
    _upstream: Upstream,
}

impl Stack {
    fn start() -> Stack {
        Stack::start_with(false)
    }

    /// With `workload_api`, example.org's bundle comes from a Workload API
    /// agent (started in the current tokio runtime) instead of a file.
    fn start_with(workload_api: bool) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        let signer = Signer::es256("k1");
        let ca = Ca::root("example.org");
        std::fs::write(path("rules.yaml"), RULES).unwrap();
        std::fs::write(path("example.org.json"), bundle(&ca, &signer)).unwrap();
        let (source, agent) = if workload_api {
            let socket = path("agent.sock");
            let jwks = support::jwt::jwks(&[&signer]);
            let agent =
                WorkloadApi::start(&socket, bundles_for("example.org", &[&ca.der], Some(&jwks)));
            let source = format!(
                "    workload_api: true\nworkload_api:\n  endpoint: {}\n",
                agent.endpoint()
            );
            (source, Some(agent))
        } else {
            ("    bundle: example.org.json\n".to_owned(), None)
        };
        std::fs::write(
            path("celador.yaml"),
            format!("listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\npolicy: rules.yaml\ntrust_domains:\n  example.org:\n{source}identity:\n  require: jwt\n  jwt:\n    audiences: [payments]\nlog:\n  format: json\nshutdown_grace: 5s\n"),
        )
        .unwrap();
        let upstream = Upstream::start();
        let celador = Celador::start(&path("celador.yaml"));
        let config = envoy::bootstrap(&Setup {
            celador: celador.addr,
            upstream: upstream.addr,
            server_cert: Path::new("unused"),
            server_key: Path::new("unused"),
            client_ca: Path::new("unused"),
            listeners: &[Listener {
                name: "plain",
                kind: "plain",
                xfcc: "SANITIZE_SET",
                fail_open: false,
            }],
        });
        let envoy = Envoy::start(&config, dir.path());
        if workload_api {
            let ready = support::wait_for(Duration::from_secs(10), || {
                (celador.admin_get("/readyz").0 == 200).then_some(())
            });
            assert!(ready.is_some(), "{}", celador.log());
        }
        Stack {
            dir,
            signer,
            ca,
            agent,
            celador,
            envoy,
            _upstream: upstream,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Allowed, denied by rule, invalid and malformed requests.
    fn kinds(&self) -> Vec<Kind> {
        let bearer = |purpose: &str, expires_in: i64| {
            let mut c = claims("spiffe://example.org/agents/bot", "payments", expires_in);
            c["purpose"] = serde_json::json!(purpose);
            format!("Bearer {}", self.signer.token(&c))
        };
        let kind = |name, path: &str, token: Option<String>, expect| Kind {
            name,
            path: path.to_owned(),
            headers: token
                .map(|t| vec![("authorization".to_owned(), t)])
                .unwrap_or_default(),
            expect,
        };
        vec![
            kind(
                "allowed",
                "/agents/export/a",
                Some(bearer("export", 3600)),
                None,
            ),
            kind(
                "by-rule",
                "/agents/admin/x",
                Some(bearer("export", 3600)),
                Some("denied_by_rule"),
            ),
            kind(
                "no-rule",
                "/agents/export/b",
                Some(bearer("debug", 3600)),
                Some("no_allow_rule"),
            ),
            kind(
                "expired",
                "/agents/export/c",
                Some(bearer("export", -600)),
                Some("jwt_expired"),
            ),
            kind(
                "garbage",
                "/agents/export/d",
                Some("Bearer a.b.c".into()),
                Some("jwt_malformed"),
            ),
            kind("missing", "/agents/export/e", None, Some("jwt_missing")),
            kind(
                "huge",
                "/agents/export/f",
                Some(format!("Bearer {}", "x".repeat(20_000))),
                Some("jwt_malformed"),
            ),
        ]
    }

    fn metric(&self, name: &str) -> f64 {
        let (_, body) = self.celador.admin_get("/metrics");
        body.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Asserts that every answer was celador's and as expected.
    fn assert_clean(&self, counts: &load::Counts, what: &str) {
        use std::sync::atomic::Ordering::Relaxed;
        let examples = counts.examples.lock().unwrap().join("\n");
        assert_eq!(
            counts.failure_path.load(Relaxed),
            0,
            "{what}: Envoy's failure path answered:\n{examples}"
        );
        assert_eq!(
            counts.unexpected.load(Relaxed),
            0,
            "{what}: unexpected answers:\n{examples}"
        );
        assert_eq!(
            counts.transport_errors.load(Relaxed),
            0,
            "{what}: broken connections"
        );
        assert!(
            counts.as_expected.load(Relaxed) > 0,
            "{what}: no answers at all"
        );
        // Envoy's own count of ext_authz calls agrees: denials seen, no
        // errors, nothing allowed by its failure mode.
        assert!(
            self.envoy.counter("cluster.upstream.ext_authz.denied") > 0,
            "{what}"
        );
        assert_eq!(
            self.envoy.counter("cluster.upstream.ext_authz.error"),
            0,
            "{what}"
        );
        assert_eq!(
            self.envoy
                .counter("cluster.upstream.ext_authz.failure_mode_allowed"),
            0,
            "{what}"
        );
    }
}

fn bundle(ca: &Ca, signer: &Signer) -> String {
    support::jwt::spiffe_bundle(&[&ca.der], &[signer], 1)
}

fn soak_checks() -> u64 {
    std::env::var("CELADOR_SOAK_CHECKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

#[test]
fn a_soak_of_mixed_requests_gets_every_answer_from_celador_and_does_not_grow() {
    let stack = Stack::start();
    let pid = stack.celador.pid().unwrap();
    let total = soak_checks();
    let addr = stack.envoy.listener("plain");
    let started = Instant::now();
    // Warm up: caches fill, allocators settle.
    let warm = Load::start(addr, stack.kinds(), 4, total / 10).wait();
    stack.assert_clean(&warm, "warm-up");
    let (rss_warm, fds_warm) = (load::rss_kib(pid), load::open_fds(pid));
    let soak = Load::start(addr, stack.kinds(), 4, total - total / 10).wait();
    stack.assert_clean(&soak, "soak");
    let (rss_end, fds_end) = (load::rss_kib(pid), load::open_fds(pid));
    let answered = warm.total() + soak.total();
    println!(
        "soak: {answered} checks in {:.1}s; celador RSS {rss_warm} KiB after warm-up, {rss_end} KiB at the end; fds {fds_warm} -> {fds_end}",
        started.elapsed().as_secs_f64()
    );
    assert!(answered >= total, "{answered} of {total}");
    assert!(
        rss_end * 100 <= rss_warm * 105,
        "RSS grew more than 5%: {rss_warm} KiB -> {rss_end} KiB"
    );
    assert!(fds_end <= fds_warm + 2, "fds grew: {fds_warm} -> {fds_end}");
    // One audit record per check that reached celador.
    let deadline = Instant::now() + Duration::from_secs(10);
    while (stack.celador.audit_count() as u64) < answered && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(stack.celador.audit_count() as u64, answered);
}

#[test]
fn broken_and_vanishing_files_under_load_keep_the_last_good_state() {
    let stack = Stack::start();
    let load = Load::start(stack.envoy.listener("plain"), stack.kinds(), 3, u64::MAX);
    let pause = || std::thread::sleep(Duration::from_millis(700));
    pause();
    let rules = std::fs::read_to_string(stack.path("rules.yaml")).unwrap();
    let bundle = std::fs::read_to_string(stack.path("example.org.json")).unwrap();

    // A broken rules file while traffic flows.
    std::fs::write(
        stack.path("rules.yaml"),
        "rules:\n  - name: x\n    effect: allow\n    when: request.\n",
    )
    .unwrap();
    assert!(
        stack
            .celador
            .wait_for_log("the last good rules stay in use", Duration::from_secs(5))
    );
    pause();
    // A broken bundle.
    std::fs::write(stack.path("example.org.json"), "{\"keys\": 7}").unwrap();
    assert!(
        stack
            .celador
            .wait_for_log("the last good bundle stays in use", Duration::from_secs(5))
    );
    pause();
    // The bundle file deleted.
    std::fs::remove_file(stack.path("example.org.json")).unwrap();
    assert!(
        stack
            .celador
            .wait_for_log("cannot read", Duration::from_secs(15)),
        "{}",
        stack.celador.log()
    );
    pause();
    // Everything restored.
    std::fs::write(stack.path("example.org.json"), bundle).unwrap();
    std::fs::write(stack.path("rules.yaml"), rules).unwrap();
    pause();

    let counts = load.stop();
    stack.assert_clean(&counts, "files breaking under load");
    assert!(stack.metric("celador_policy_reloads_total{outcome=\"error\"}") >= 1.0);
    assert!(stack.metric("celador_bundle_updates_total{trust_domain=\"example.org\",source=\"file\",outcome=\"error\"}") >= 1.0);
}

#[test]
fn sigterm_under_load_lets_in_flight_checks_finish() {
    let mut stack = Stack::start();
    let load = Load::start(stack.envoy.listener("plain"), stack.kinds(), 3, u64::MAX);
    std::thread::sleep(Duration::from_millis(500));
    let before = load.counts.total();
    assert!(before > 0);
    let status = stack.celador.terminate(Duration::from_secs(10));
    let counts = load.stop();
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        stack.celador.log()
    );
    // Every answer until the drain was celador's; once it has gone, Envoy
    // fails closed (403 without a reason), never open.
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(
        counts.unexpected.load(Relaxed),
        0,
        "{:?}",
        counts.examples.lock().unwrap()
    );
    assert_eq!(
        stack
            .envoy
            .counter("cluster.upstream.ext_authz.failure_mode_allowed"),
        0
    );
    assert!(stack.celador.log().contains("finishing in-flight checks"));
    // Each check celador answered has its audit record, in-flight ones too.
    let answered = counts.as_expected.load(Relaxed);
    assert!(
        stack.celador.audit_count() as u64 >= answered,
        "{} records, {answered} answers",
        stack.celador.audit_count()
    );
}

#[test]
fn the_workload_api_agent_killed_and_restarted_under_load_keeps_the_last_bundles() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _in_runtime = runtime.enter();
    let mut stack = Stack::start_with(true);
    let load = Load::start(stack.envoy.listener("plain"), stack.kinds(), 3, u64::MAX);
    std::thread::sleep(Duration::from_millis(500));
    stack.agent.take().unwrap().crash();
    assert!(
        stack
            .celador
            .wait_for_log("keeping the last bundles", Duration::from_secs(5)),
        "{}",
        stack.celador.log()
    );
    std::thread::sleep(Duration::from_millis(700));
    let jwks = support::jwt::jwks(&[&stack.signer]);
    let socket = stack.path("agent.sock");
    stack.agent = Some(WorkloadApi::start(
        &socket,
        bundles_for("example.org", &[&stack.ca.der], Some(&jwks)),
    ));
    std::thread::sleep(Duration::from_millis(1500));
    let counts = load.stop();
    stack.assert_clean(&counts, "the agent killed and restarted under load");
    assert!(stack.metric("celador_workload_api_errors_total") >= 1.0);
    assert_eq!(stack.celador.admin_get("/readyz").0, 200);
}
