//! Live inputs of `celador serve`: trust bundles from the SPIFFE Workload
//! API and from watched files, and the rules file, all changing while
//! celador runs, with readiness and reload counters observed from outside.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use support::celador::Celador;
use support::check::{allowed, denial, request};
use support::jwt::{Signer, claims};
use support::pki::Ca;
use support::workload_api::{WorkloadApi, bundles_for};

const ID: &str = "spiffe://example.org/ns/payments/sa/api";
const POLICY: &str = "rules:\n  - name: payments\n    effect: allow\n    when: source.id == \"spiffe://example.org/ns/payments/sa/api\"\n";

async fn check(celador: &Celador, request: CheckRequest) -> Result<CheckResponse, tonic::Status> {
    let mut client = AuthorizationClient::connect(format!("http://{}", celador.addr))
        .await
        .unwrap();
    client.check(request).await.map(tonic::Response::into_inner)
}

/// The outcome of a check with `cert`: "allowed", a denial reason, or the
/// gRPC error code.
async fn outcome(celador: &Celador, cert: &str) -> String {
    match check(celador, request(cert, "GET", "/", &[])).await {
        Ok(r) if allowed(&r) => "allowed".into(),
        Ok(r) => denial(&r).map(|(_, reason)| reason).unwrap_or_default(),
        Err(status) => format!("{:?}", status.code()),
    }
}

/// Polls until `cert`'s outcome is `expected`; returns how long it took.
async fn until(celador: &Celador, cert: &str, expected: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got = outcome(celador, cert).await;
        if got == expected {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "still {got}, not {expected}, after {timeout:?}; log:\n{}",
            celador.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The gRPC health status of the authorization service.
async fn health(celador: &Celador) -> i32 {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", celador.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "envoy.service.auth.v3.Authorization".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

fn metric(celador: &Celador, name_and_labels: &str) -> f64 {
    let (_, body) = celador.admin_get("/metrics");
    body.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn config(dir: &Path, trust_domain: &str) -> PathBuf {
    std::fs::write(dir.join("policy.yaml"), POLICY).unwrap();
    let path = dir.join("celador.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\npolicy: policy.yaml\ntrust_domains:\n  example.org:\n{trust_domain}\nlog:\n  format: json\n"
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_api_bundles_become_ready_rotate_and_survive_agent_loss() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let config = config(
        dir.path(),
        &format!(
            "    workload_api: true\nworkload_api:\n  endpoint: unix://{}",
            socket.display()
        ),
    );
    let old_ca = Ca::root("example.org old");
    let new_ca = Ca::root("example.org new");
    let old = old_ca.svid(ID).envoy_encoded();
    let new = new_ca.svid(ID).envoy_encoded();

    // The agent is not up yet: not ready, and checks are denied by celador
    // itself (503), never left to Envoy's failure mode.
    let celador = Celador::start(&config);
    let (status, body) = celador.admin_get("/readyz");
    assert_eq!(
        (status, body.as_str()),
        (503, "waiting for the trust bundles of: example.org\n")
    );
    assert_eq!(health(&celador).await, ServingStatus::NotServing as i32);
    let pending = check(&celador, request(&old, "GET", "/", &[]))
        .await
        .unwrap();
    assert_eq!(
        denial(&pending),
        Some((503, "bundle_unavailable".to_owned()))
    );
    let record = &celador.audit_for("/")[0];
    assert_eq!(record["decision"], "deny", "{record}");
    assert_eq!(record["reason"], "bundle_unavailable", "{record}");

    // The agent comes up with the old CA.
    let agent = WorkloadApi::start(&socket, bundles_for("example.org", &[&old_ca.der], None));
    until(&celador, &old, "allowed", Duration::from_secs(10)).await;
    assert_eq!(celador.admin_get("/readyz"), (200, "ready\n".to_owned()));
    assert_eq!(metric(&celador, "celador_ready"), 1.0);
    assert_eq!(health(&celador).await, ServingStatus::Serving as i32);

    // The agent rotates the CA: the verdicts flip within a second.
    let rotated_at = Instant::now();
    agent.set(bundles_for("example.org", &[&new_ca.der], None));
    until(&celador, &new, "allowed", Duration::from_secs(1)).await;
    until(&celador, &old, "svid_untrusted", Duration::from_secs(1)).await;
    assert!(
        rotated_at.elapsed() < Duration::from_secs(1),
        "{:?}",
        rotated_at.elapsed()
    );

    // The agent crashes: the last bundles stay in use.
    agent.crash();
    assert!(
        celador.wait_for_log("keeping the last bundles", Duration::from_secs(5)),
        "{}",
        celador.log()
    );
    assert_eq!(outcome(&celador, &new).await, "allowed");
    assert!(metric(&celador, "celador_workload_api_errors_total") >= 1.0);
    assert_eq!(celador.admin_get("/readyz").0, 200);

    // It comes back (with the old CA again): celador reconnects by itself.
    let agent = WorkloadApi::start(&socket, bundles_for("example.org", &[&old_ca.der], None));
    until(&celador, &old, "allowed", Duration::from_secs(10)).await;
    assert_eq!(outcome(&celador, &new).await, "svid_untrusted");

    // A message without the trust domain redacts it, as the spec says.
    agent.set(bundles_for("other.org", &[&new_ca.der], None));
    until(&celador, &old, "bundle_unavailable", Duration::from_secs(2)).await;
    assert_eq!(celador.admin_get("/readyz").0, 503);

    // Back, then denied: PermissionDenied redacts every bundle too.
    agent.set(bundles_for("example.org", &[&old_ca.der], None));
    until(&celador, &old, "allowed", Duration::from_secs(2)).await;
    agent.deny();
    until(&celador, &old, "bundle_unavailable", Duration::from_secs(2)).await;
    assert!(
        celador.wait_for_log(
            "the Workload API denied the X.509 bundles; redacting them",
            Duration::from_secs(2)
        ),
        "{}",
        celador.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_bundles_from_the_workload_api_verify_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let config = config(
        dir.path(),
        &format!(
            "    workload_api: true\nworkload_api:\n  endpoint: unix://{}\nidentity:\n  require: jwt\n  jwt:\n    audiences: [payments]",
            socket.display()
        ),
    );
    std::fs::write(
        dir.path().join("policy.yaml"),
        "rules:\n  - name: agents\n    effect: allow\n    when: token.path.startsWith('/agents/')\n",
    )
    .unwrap();
    let first = Signer::es256("k1");
    let second = Signer::es384("k2");
    let agent = WorkloadApi::start(
        &socket,
        bundles_for("example.org", &[], Some(&support::jwt::jwks(&[&first]))),
    );
    let celador = Celador::start(&config);
    let token = |s: &Signer| {
        format!(
            "Bearer {}",
            s.token(&claims("spiffe://example.org/agents/bot", "payments", 300))
        )
    };
    let ask = |bearer: String| {
        let celador = &celador;
        async move {
            match check(
                celador,
                request("", "GET", "/", &[("authorization", &bearer)]),
            )
            .await
            {
                Ok(r) if allowed(&r) => "allowed".to_owned(),
                Ok(r) => denial(&r).unwrap().1,
                Err(s) => format!("{:?}", s.code()),
            }
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while ask(token(&first)).await != "allowed" {
        assert!(Instant::now() < deadline, "{}", celador.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ask(token(&second)).await, "jwt_unknown_key");
    agent.set(bundles_for(
        "example.org",
        &[],
        Some(&support::jwt::jwks(&[&second])),
    ));
    let deadline = Instant::now() + Duration::from_secs(1);
    while ask(token(&second)).await != "allowed" {
        assert!(Instant::now() < deadline, "{}", celador.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ask(token(&first)).await, "jwt_unknown_key");

    // A JWT bundle where two keys share a kid is refused: the last good keys
    // stay in use, as with a bundle document.
    let impostor = Signer::es384("k2");
    agent.set(bundles_for(
        "example.org",
        &[],
        Some(&support::jwt::jwks(&[&second, &impostor])),
    ));
    assert!(
        celador.wait_for_log("appears twice", Duration::from_secs(2)),
        "{}",
        celador.log()
    );
    assert_eq!(ask(token(&second)).await, "allowed");
    assert_eq!(ask(token(&impostor)).await, "jwt_signature");
}

/// Writes `files` the way the kubelet updates a ConfigMap volume: into a
/// new timestamped directory, then an atomic swap of the `..data` symlink.
fn configmap_update(dir: &Path, files: &[(&str, &[u8])]) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static VERSION: AtomicU32 = AtomicU32::new(0);
    let version = format!("..2026_11_22_{}", VERSION.fetch_add(1, Ordering::Relaxed));
    std::fs::create_dir_all(dir.join(&version)).unwrap();
    for (name, content) in files {
        std::fs::write(dir.join(&version).join(name), content).unwrap();
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&version, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for (name, _) in files {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mounted_bundle_rotates_without_a_restart_and_a_broken_one_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("bundles");
    std::fs::create_dir_all(&volume).unwrap();
    let old_ca = Ca::root("old");
    let new_ca = Ca::root("new");
    configmap_update(&volume, &[("example.org.pem", old_ca.pem.as_bytes())]);
    let config = config(dir.path(), "    bundle: bundles/example.org.pem");
    let celador = Celador::start(&config);
    let old = old_ca.svid(ID).envoy_encoded();
    let new = new_ca.svid(ID).envoy_encoded();
    assert_eq!(outcome(&celador, &old).await, "allowed");

    configmap_update(&volume, &[("example.org.pem", new_ca.pem.as_bytes())]);
    let took = until(&celador, &new, "allowed", Duration::from_secs(1)).await;
    assert_eq!(outcome(&celador, &old).await, "svid_untrusted");
    assert!(took < Duration::from_secs(1));

    // A broken update keeps the last good bundle, and says so.
    configmap_update(
        &volume,
        &[("example.org.pem", b"-----BEGIN CERTIFICATE-----\ngarbage\n")],
    );
    assert!(
        celador.wait_for_log("the last good bundle stays in use", Duration::from_secs(2)),
        "{}",
        celador.log()
    );
    assert_eq!(outcome(&celador, &new).await, "allowed");
    assert_eq!(
        metric(
            &celador,
            r#"celador_bundle_updates_total{trust_domain="example.org",source="file",outcome="error"}"#
        ),
        1.0
    );

    // The same file can become a SPIFFE bundle document with both kinds of keys.
    let signer = Signer::es256("k1");
    let doc = support::jwt::spiffe_bundle(&[&old_ca.der], &[&signer], 2);
    configmap_update(&volume, &[("example.org.pem", doc.as_bytes())]);
    until(&celador, &old, "allowed", Duration::from_secs(1)).await;
    assert_eq!(
        metric(
            &celador,
            r#"celador_bundle_updates_total{trust_domain="example.org",source="file",outcome="ok"}"#
        ),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rules_file_reloads_and_a_broken_one_keeps_the_last_good_rules() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    let ca = Ca::root("example.org");
    std::fs::write(dir.path().join("example.org.pem"), &ca.pem).unwrap();
    configmap_update(&rules, &[("policy.yaml", POLICY.as_bytes())]);
    let path = dir.path().join("celador.yaml");
    std::fs::write(
        &path,
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\npolicy: rules/policy.yaml\ntrust_domains:\n  example.org:\n    bundle: example.org.pem\nlog:\n  format: json\n",
    )
    .unwrap();
    let celador = Celador::start(&path);
    let cert = ca.svid(ID).envoy_encoded();
    assert_eq!(outcome(&celador, &cert).await, "allowed");

    let closed = "rules:\n  - name: closed\n    effect: deny\n    when: request.path.startsWith('/')\n  - name: payments\n    effect: allow\n    when: \"true\"\n";
    configmap_update(&rules, &[("policy.yaml", closed.as_bytes())]);
    until(&celador, &cert, "denied_by_rule", Duration::from_secs(1)).await;

    let broken = "rules:\n  - name: typo\n    effect: allow\n    when: sourc.id == 'x'\n";
    configmap_update(&rules, &[("policy.yaml", broken.as_bytes())]);
    assert!(
        celador.wait_for_log("the last good rules stay in use", Duration::from_secs(2)),
        "{}",
        celador.log()
    );
    assert!(
        celador.log().contains("undeclared variable 'sourc'"),
        "{}",
        celador.log()
    );
    assert_eq!(outcome(&celador, &cert).await, "denied_by_rule");
    assert_eq!(
        metric(&celador, r#"celador_policy_reloads_total{outcome="error"}"#),
        1.0
    );
    assert_eq!(
        metric(&celador, r#"celador_policy_reloads_total{outcome="ok"}"#),
        1.0
    );
}

#[test]
fn generated_code_matches_the_proto() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    let descriptors = protox::compile(["workload.proto"], [root.join("proto")]).unwrap();
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .out_dir(out.path())
        .compile_fds(descriptors)
        .unwrap();
    let fresh = std::fs::read_to_string(out.path().join("_.rs")).unwrap();
    let committed =
        std::fs::read_to_string(root.join("tests/support/workload_api/generated.rs")).unwrap();
    assert!(
        fresh == committed,
        "tests/support/workload_api/generated.rs is out of date with proto/workload.proto; \
         copy the output of this test's generator over it"
    );
}

/// libfaketime, from Debian's `faketime`, installed with apt-get when it is
/// missing; the test fails, never skips, when it cannot be had.
fn libfaketime() -> &'static str {
    const LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
    if !Path::new(LIB).is_file() {
        let apt = |args: &[&str]| {
            std::process::Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .output()
        };
        let _ = apt(&["update", "-qq"]);
        let installed = apt(&["install", "-y", "-qq", "faketime"]);
        assert!(
            Path::new(LIB).is_file(),
            "{LIB} is missing and `apt-get install faketime` did not provide it: {installed:?}"
        );
    }
    LIB
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wall_clock_stepping_forward_and_back_changes_verdicts_never_the_answering() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::root("example.org");
    std::fs::write(dir.path().join("example.org.pem"), &ca.pem).unwrap();
    let config = config(dir.path(), "    bundle: example.org.pem");
    // The leaf is valid from an hour ago to an hour from now.
    let cert = ca.svid(ID).envoy_encoded();
    let offset = dir.path().join("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    let offset_text = offset.to_str().unwrap();
    let celador = Celador::start_with_env(
        &config,
        &[
            ("LD_PRELOAD", libfaketime()),
            ("FAKETIME_TIMESTAMP_FILE", offset_text),
            ("FAKETIME_NO_CACHE", "1"),
            // Only the wall clock steps; timers keep their monotonic clock.
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    assert_eq!(outcome(&celador, &cert).await, "allowed");
    for (step, expected) in [
        ("+3h", "svid_expired"),
        ("+0", "allowed"),
        ("-3h", "svid_not_yet_valid"),
        ("+100000d", "svid_expired"),
        ("-3000d", "svid_not_yet_valid"),
        ("+0", "allowed"),
    ] {
        std::fs::write(&offset, format!("{step}\n")).unwrap();
        until(&celador, &cert, expected, Duration::from_secs(3)).await;
    }
    // Every check, in every step, was answered and audited by celador.
    let records = celador.audit_records();
    assert!(
        records.iter().all(|r| r["decision"] != "error"),
        "{records:?}"
    );
    assert!(!celador.log().contains("panicked"), "{}", celador.log());
}

#[test]
fn a_root_outside_its_validity_window_is_logged_at_load_and_reload_and_vouches_for_nothing() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let current = Ca::root("example.org current");
    let expired = Ca::root_valid_secs("example.org expired", -86_400 * 30, -86_400);
    let bundle = dir.path().join("example.org.pem");
    std::fs::write(&bundle, format!("{}{}", current.pem, expired.pem)).unwrap();
    let config = config(dir.path(), "    bundle: example.org.pem");
    let celador = Celador::start(&config);
    let warning = "X.509 authorities outside their validity window are not trusted";
    assert!(
        celador.wait_for_log(warning, Duration::from_secs(2)),
        "{}",
        celador.log()
    );
    let ask = |cert: String| runtime.block_on(async { outcome(&celador, &cert).await });
    assert_eq!(ask(current.svid(ID).envoy_encoded()), "allowed");
    assert_eq!(ask(expired.svid(ID).envoy_encoded()), "svid_untrusted");

    // A reload that brings only the expired root: logged again, trusted
    // for nothing.
    let logged = celador.log().matches(warning).count();
    std::fs::write(&bundle, &expired.pem).unwrap();
    let reloaded = support::wait_for(Duration::from_secs(15), || {
        (celador.log().matches(warning).count() > logged).then_some(())
    });
    assert!(reloaded.is_some(), "{}", celador.log());
    assert_eq!(ask(current.svid(ID).envoy_encoded()), "svid_untrusted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_counted_by_outcome_reason_and_rule_and_every_series_starts_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::root("example.org");
    std::fs::write(dir.path().join("example.org.pem"), &ca.pem).unwrap();
    let config = config(dir.path(), "    bundle: example.org.pem");
    let celador = Celador::start(&config);
    let (_, body) = celador.admin_get("/metrics");
    // Present before any check or reload, at 0.
    for series in [
        "celador_decisions_total{outcome=\"allow\",reason=\"allowed\",rule=\"payments\"} 0",
        "celador_decisions_total{outcome=\"deny\",reason=\"svid_untrusted\",rule=\"none\"} 0",
        "celador_decisions_total{outcome=\"deny\",reason=\"bundle_unavailable\",rule=\"none\"} 0",
        "celador_policy_reloads_total{outcome=\"error\"} 0",
        "celador_bundle_updates_total{trust_domain=\"example.org\",source=\"file\",outcome=\"error\"} 0",
        "celador_svid_cache_lookups_total{kind=\"x509\",result=\"hit\"} 0",
        "celador_audit_records_dropped_total 0",
        "celador_rules_last_reload_success 1",
        "celador_check_duration_seconds_count 0",
    ] {
        assert!(body.contains(series), "missing {series} in:\n{body}");
    }
    assert!(body.contains("celador_rules_info{version=\""), "{body}");

    let good = ca.svid(ID).envoy_encoded();
    let other = Ca::root("elsewhere").svid(ID).envoy_encoded();
    for cert in [&good, &good, &good, &other] {
        outcome(&celador, cert).await;
    }
    let allowed = "celador_decisions_total{outcome=\"allow\",reason=\"allowed\",rule=\"payments\"}";
    assert_eq!(metric(&celador, allowed), 3.0);
    let untrusted =
        "celador_decisions_total{outcome=\"deny\",reason=\"svid_untrusted\",rule=\"none\"}";
    assert_eq!(metric(&celador, untrusted), 1.0);
    assert_eq!(
        metric(&celador, "celador_check_duration_seconds_count"),
        4.0
    );
    assert_eq!(
        metric(
            &celador,
            "celador_svid_cache_lookups_total{kind=\"x509\",result=\"hit\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &celador,
            "celador_svid_cache_lookups_total{kind=\"x509\",result=\"miss\"}"
        ),
        2.0
    );
    // The CA is valid for a year: its expiry is about that far away.
    let expiry = metric(
        &celador,
        "celador_bundle_expiry_seconds{trust_domain=\"example.org\"}",
    );
    assert!(
        (86_400.0 * 360.0..86_400.0 * 366.0).contains(&expiry),
        "{expiry}"
    );
    let age = metric(
        &celador,
        "celador_bundle_age_seconds{trust_domain=\"example.org\"}",
    );
    assert!((0.0..60.0).contains(&age), "{age}");

    // A broken rules file: the reload gauges say so.
    std::fs::write(dir.path().join("policy.yaml"), "rules: [").unwrap();
    let failed = support::wait_for(Duration::from_secs(15), || {
        (metric(&celador, "celador_rules_last_reload_success") == 0.0).then_some(())
    });
    assert!(failed.is_some(), "{}", celador.log());
    assert_eq!(
        metric(&celador, "celador_policy_reloads_total{outcome=\"error\"}"),
        1.0
    );
    // The problem is one JSON log event with structured fields, not a
    // pretty-printed string.
    let structured = support::wait_for(Duration::from_secs(2), || {
        celador.log().lines().find_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            let f = &v["fields"];
            (f["message"] == "rules file error").then(|| f.clone())
        })
    });
    let fields = structured.unwrap_or_else(|| panic!("{}", celador.log()));
    assert_eq!(fields["severity"], "error", "{fields}");
    assert!(fields["line"].as_u64().is_some(), "{fields}");
    assert!(
        fields["file"].as_str().unwrap().ends_with("policy.yaml"),
        "{fields}"
    );
    assert!(
        !fields["problem"].as_str().unwrap().contains('\n'),
        "{fields}"
    );
}
