//! Runtime governance through a real Envoy 1.40: time-bound grants that
//! open and close by themselves, revocations that beat the decision cache,
//! behavioural signals, and shadow rules and routes that change nothing but
//! the audit trail; the ext_authz filter `celador envoy-config` prints
//! for the rules, in place of the default one; and what the audit trail
//! never shows: a request's secrets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::celador::Celador;
use support::envoy::{self, Envoy, Listener, Setup};
use support::https::{self, Call, ClientCert, Reply};
use support::pki::Ca;
use support::upstream::Upstream;

const EXPORTER: &str = "spiffe://example.org/ns/batch/sa/exporter";
const PAYMENTS: &str = "spiffe://example.org/ns/payments/sa/api";

/// celador (with `config_extra` appended to its config and the given files
/// beside it) behind Envoy, one trust domain.
struct Harness {
    ca: Ca,
    server_ca: Ca,
    upstream: Upstream,
    celador: Celador,
    envoy: Envoy,
    dir: tempfile::TempDir,
}

impl Harness {
    fn start(policy: &str, config_extra: &str, files: &[(&str, &str)]) -> Harness {
        Harness::start_with_filter(policy, config_extra, files, None)
    }

    /// With `filter` as Envoy's ext_authz filter instead of the default.
    fn start_with_filter(
        policy: &str,
        config_extra: &str,
        files: &[(&str, &str)],
        filter: Option<&str>,
    ) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        let ca = Ca::root("example.org root");
        let server_ca = Ca::root("envoy server CA");
        let server = server_ca.leaf().dns("localhost").build();
        std::fs::write(path("example.org.pem"), &ca.pem).unwrap();
        std::fs::write(path("policy.yaml"), policy).unwrap();
        for (name, content) in files {
            std::fs::write(path(name), content).unwrap();
        }
        std::fs::write(
            path("celador.yaml"),
            format!(
                "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\npolicy: policy.yaml\ntrust_domains:\n  example.org:\n    bundle: example.org.pem\nupstream_headers:\n  x-spiffe-id: source.id\nlog:\n  format: json\n{config_extra}"
            ),
        )
        .unwrap();
        std::fs::write(path("server.pem"), &server.pem).unwrap();
        std::fs::write(path("server.key"), &server.key_pem).unwrap();
        std::fs::write(path("client-ca.pem"), &ca.pem).unwrap();
        let upstream = Upstream::start();
        let celador = Celador::start(&path("celador.yaml"));
        let config = envoy::bootstrap(&Setup {
            celador: celador.addr,
            upstream: upstream.addr,
            server_cert: &path("server.pem"),
            server_key: &path("server.key"),
            client_ca: &path("client-ca.pem"),
            listeners: &[Listener {
                name: "mtls",
                kind: "mtls",
                xfcc: "SANITIZE_SET",
                fail_open: false,
            }],
        });
        let config = match filter {
            Some(filter) => envoy::with_ext_authz_filter(&config, filter),
            None => config,
        };
        let envoy = Envoy::start(&config, dir.path());
        Harness {
            ca,
            server_ca,
            upstream,
            celador,
            envoy,
            dir,
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn client(&self, id: &str) -> ClientCert {
        let leaf = self.ca.svid(id);
        ClientCert {
            chain_pem: leaf.pem.clone(),
            key_pem: leaf.key_pem.clone(),
        }
    }

    fn send(&self, client: &ClientCert, method: &str, path: &str) -> Reply {
        https::tls(
            self.envoy.listener("mtls"),
            &self.server_ca.pem,
            Some(client),
            &Call {
                method,
                path,
                headers: &[("authorization", "Bearer not-a-jwt-but-a-secret")],
            },
        )
    }

    /// The one audit record of the request whose path contains `marker`.
    fn record(&self, marker: &str) -> serde_json::Value {
        let records = self.celador.audit_for(marker);
        assert_eq!(records.len(), 1, "{records:?}");
        records[0].clone()
    }
}

/// Now plus `seconds`, as RFC 3339 to the second, and that instant.
fn at(offset: u64) -> (String, SystemTime) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + offset;
    let t = UNIX_EPOCH + Duration::from_secs(now);
    let text = time::OffsetDateTime::from_unix_timestamp(now as i64)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    (text, t)
}

fn sleep_until(t: SystemTime) {
    if let Ok(d) = t.duration_since(SystemTime::now()) {
        std::thread::sleep(d);
    }
}

/// Rewrites `path` as Kubernetes does: a new file renamed over the old.
fn replace(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

const GRANT_POLICY: &str = r#"
rules:
  - name: exporter-reads
    effect: allow
    when: source.id == "spiffe://example.org/ns/batch/sa/exporter" && request.method == "GET"
  - name: no-granted-billing
    effect: deny
    when: grant.name != "" && request.path.startsWith("/export/billing/")
"#;

#[test]
fn a_grant_opens_at_not_before_and_closes_at_expires_with_no_file_change() {
    let (opens, opens_at) = at(8);
    let (expires, expires_at) = at(14);
    let grants = format!(
        "grants:\n  - name: inc-4711\n    identities: [\"{EXPORTER}\"]\n    when: request.method == \"POST\"\n    not_before: {opens}\n    expires: {expires}\n    reason: \"INC-4711: re-run the export\"\n"
    );
    let h = Harness::start(
        GRANT_POLICY,
        "grants: grants.yaml\ncache:\n  decision_ttl: 30s\n",
        &[("grants.yaml", &grants)],
    );
    let exporter = h.client(EXPORTER);
    let before = h.send(&exporter, "POST", "/export/before-1");
    assert!(
        SystemTime::now() < opens_at,
        "the harness took too long to start to see the grant closed"
    );
    assert_eq!(before.status, 403, "{before:?}");
    assert_eq!(before.header("x-celador-reason"), Some("no_allow_rule"));

    sleep_until(opens_at);
    let during = h.send(&exporter, "POST", "/export/during-1");
    assert_eq!(during.status, 200, "{during:?}\n{}", h.celador.log());
    let record = h.record("during-1");
    assert_eq!(record["reason"], "granted");
    assert_eq!(record["grant"]["name"], "inc-4711");
    assert_eq!(record["grant"]["reason"], "INC-4711: re-run the export");
    assert_eq!(
        record["versions"]["grants"].as_str().map(str::len),
        Some(16)
    );
    // The same request again is served from the decision cache.
    let again = h.send(&exporter, "POST", "/export/during-1");
    assert_eq!(again.status, 200);
    let records = h.celador.audit_for("during-1");
    assert_eq!(records.len(), 2);
    assert_eq!(records[1]["cache"]["decision"], true, "{records:?}");
    // A deny rule still overrides the grant, and sees it.
    let billing = h.send(&exporter, "POST", "/export/billing/run-1");
    assert_eq!(billing.status, 403);
    let record = h.record("billing/run-1");
    assert_eq!(record["rule"], "no-granted-billing");
    assert_eq!(record["grant"]["name"], "inc-4711");
    assert_eq!(record["read"]["grant.name"], "inc-4711");

    sleep_until(expires_at);
    // The cached allow of during-1 does not outlive the grant.
    let after = h.send(&exporter, "POST", "/export/during-1");
    assert_eq!(after.status, 403, "{after:?}");
    assert_eq!(after.header("x-celador-reason"), Some("no_allow_rule"));
    let (_, metrics) = h.celador.admin_get("/metrics");
    assert!(metrics.contains("celador_grants_loaded 1\n"), "{metrics}");
    assert!(metrics.contains("celador_grants_active 0\n"), "{metrics}");
}

#[test]
fn a_revocation_denies_a_cached_identity_within_a_second_and_its_removal_restores_it() {
    let empty = "revocations: []\n";
    let h = Harness::start(
        "rules:\n  - name: exporter\n    effect: allow\n    when: source.id.endsWith(\"/exporter\")\n",
        "revocations: revocations.yaml\ncache:\n  decision_ttl: 30s\n",
        &[("revocations.yaml", empty)],
    );
    let exporter = h.client(EXPORTER);
    for _ in 0..2 {
        let reply = h.send(&exporter, "GET", "/export/cached-1");
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    // Both records: the writer may not have flushed the second yet.
    let records = poll(Duration::from_secs(5), || {
        Some(h.celador.audit_for("cached-1")).filter(|r| r.len() >= 2)
    })
    .expect("two records");
    assert_eq!(records[1]["cache"]["decision"], true, "{records:?}");

    let revoked = "revocations:\n  - spiffe_id_prefix: spiffe://example.org/ns/batch\n    reason: \"INC-4712: namespace compromised\"\n";
    let written = Instant::now();
    replace(&h.file("revocations.yaml"), revoked);
    let denied = poll(Duration::from_secs(3), || {
        let reply = h.send(&exporter, "GET", "/export/cached-1");
        (reply.status == 403).then_some(reply)
    });
    let took = written.elapsed();
    let reply = denied.unwrap_or_else(|| panic!("never revoked; log:\n{}", h.celador.log()));
    assert!(took < Duration::from_secs(1), "revocation took {took:?}");
    assert_eq!(reply.header("x-celador-reason"), Some("revoked"));
    assert_eq!(reply.json()["reason"], "revoked");
    let record = poll(Duration::from_secs(5), || {
        let records = h.celador.audit_for("cached-1");
        records.into_iter().find(|r| r["reason"] == "revoked")
    })
    .expect("the revoked check's record");
    assert_eq!(
        record["revoked"]["entry"],
        "spiffe_id_prefix: spiffe://example.org/ns/batch"
    );
    assert_eq!(
        record["revoked"]["reason"],
        "INC-4712: namespace compromised"
    );
    // Other identities are untouched.
    let payments = h.client(PAYMENTS);
    assert_eq!(
        h.send(&payments, "GET", "/x").header("x-celador-reason"),
        Some("no_allow_rule")
    );

    // A broken file keeps the last good revocations, and is counted.
    replace(
        &h.file("revocations.yaml"),
        "revocations: [ {spiffe_id: 3\n",
    );
    assert!(h.celador.wait_for_log(
        "the revocations file cannot be loaded",
        Duration::from_secs(5)
    ));
    assert_eq!(h.send(&exporter, "GET", "/export/still-1").status, 403);
    let (_, metrics) = h.celador.admin_get("/metrics");
    assert!(
        metrics.contains(
            "celador_governance_file_reloads_total{file=\"revocations\",outcome=\"error\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("celador_revocations_loaded 1\n"),
        "{metrics}"
    );

    let written = Instant::now();
    replace(&h.file("revocations.yaml"), empty);
    let allowed = poll(Duration::from_secs(3), || {
        (h.send(&exporter, "GET", "/export/back-1").status == 200).then_some(())
    });
    assert!(allowed.is_some() && written.elapsed() < Duration::from_secs(1));

    // One certificate by serial number, its issuer in OpenSSL's slash form
    // (issue 19: it loaded and never matched): that leaf is revoked, another
    // of the same identity is not.
    let leaf = h.ca.svid(EXPORTER);
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf.der).unwrap();
    let by_serial = format!(
        "revocations:\n  - x509_serial: \"{}\"\n    issuer: /CN=example.org root\n    reason: mis-issued\n",
        cert.raw_serial_as_string()
    );
    replace(&h.file("revocations.yaml"), &by_serial);
    let stolen = ClientCert {
        chain_pem: leaf.pem.clone(),
        key_pem: leaf.key_pem.clone(),
    };
    let denied = poll(Duration::from_secs(3), || {
        let reply = h.send(&stolen, "GET", "/export/serial-1");
        (reply.status == 403).then_some(reply)
    })
    .unwrap_or_else(|| panic!("never revoked; log:\n{}", h.celador.log()));
    assert_eq!(denied.header("x-celador-reason"), Some("revoked"));
    let record = poll(Duration::from_secs(5), || {
        let records = h.celador.audit_for("serial-1");
        records.into_iter().find(|r| r["reason"] == "revoked")
    })
    .expect("the revoked check's record");
    assert!(
        record["revoked"]["entry"]
            .as_str()
            .is_some_and(|e| e.starts_with("x509_serial: ")),
        "{record}"
    );
    assert_eq!(h.send(&exporter, "GET", "/export/other-1").status, 200);
}

#[test]
fn a_burst_over_a_signals_limit_is_denied_and_recovers_after_the_window() {
    let policy = r#"
rules:
  - name: exporter-burst-limit
    effect: deny
    when: source.id.endsWith("/exporter") && signals.requests_10s > 5
  - name: exporter
    effect: allow
    when: source.id.endsWith("/exporter")
"#;
    let h = Harness::start(policy, "", &[]);
    let exporter = h.client(EXPORTER);
    let statuses: Vec<u16> = (0..8)
        .map(|i| h.send(&exporter, "GET", &format!("/burst-{i}")).status)
        .collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 403, 403, 403]);
    let record = h.record("burst-5");
    assert_eq!(record["rule"], "exporter-burst-limit");
    assert_eq!(record["read"]["signals"]["requests_10s"], 6);
    // Another identity has counts of its own.
    let payments = h.client(PAYMENTS);
    assert_eq!(
        h.send(&payments, "GET", "/other")
            .header("x-celador-reason"),
        Some("no_allow_rule")
    );
    // Past the window (10 s, counted in whole seconds), access returns.
    std::thread::sleep(Duration::from_secs(11));
    let reply = h.send(&exporter, "GET", "/burst-after");
    assert_eq!(reply.status, 200, "{reply:?}");
    let (_, metrics) = h.celador.admin_get("/metrics");
    assert!(
        metrics.contains("celador_signals_identities 2\n"),
        "{metrics}"
    );
}

#[test]
fn shadow_rules_and_shadow_routes_change_nothing_but_are_audited() {
    let policy = r#"
rules:
  - name: exporter
    effect: allow
    when: source.id.endsWith("/exporter")
  - name: candidate-no-deletes
    effect: deny
    mode: shadow
    when: request.method == "DELETE"
"#;
    let h = Harness::start(policy, "", &[]);
    let exporter = h.client(EXPORTER);
    let reply = h.send(&exporter, "DELETE", "/export/shadowed-1");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(h.upstream.requests_with("shadowed-1").len(), 1);
    let record = h.record("shadowed-1");
    assert_eq!(record["decision"], "allow");
    assert_eq!(record["rule"], "exporter");
    assert_eq!(record["shadow"][0]["source"], "rules");
    assert_eq!(record["shadow"][0]["allowed"], false);
    assert_eq!(record["shadow"][0]["rule"], "candidate-no-deletes");
    // A request the shadow rule agrees with is audited with its outcome too.
    assert_eq!(h.send(&exporter, "GET", "/export/agree-1").status, 200);
    assert_eq!(h.record("agree-1")["shadow"][0]["allowed"], true);
    let (_, metrics) = h.celador.admin_get("/metrics");
    assert!(
        metrics.contains(
            "celador_shadow_differences_total{source=\"rules\",enforced=\"allow\",shadow=\"deny\"} 1"
        ),
        "{metrics}"
    );

    // A route in shadow mode lets a denied request through, marked.
    let payments = h.client(PAYMENTS);
    let reply = h.send(&payments, "GET", "/shadow/denied-1");
    assert_eq!(reply.status, 200, "{reply:?}");
    let seen = h.upstream.requests_with("denied-1");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header_values("x-celador-shadow"), ["no_allow_rule"]);
    let record = h.record("denied-1");
    assert_eq!(record["decision"], "deny");
    assert_eq!(record["reason"], "no_allow_rule");
    assert_eq!(record["enforced"], false);
    // The bearer token the request carried is nowhere in the records.
    let all = h.celador.audit_records();
    assert!(!format!("{all:?}").contains("not-a-jwt-but-a-secret"));
}

#[test]
fn the_filter_envoy_config_prints_sends_celador_only_the_headers_its_rules_read() {
    // The rules the filter is generated for read one header.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.yaml"),
        "rules:\n  - name: tenants\n    effect: allow\n    when: request.headers[\"x-tenant\"] == \"acme\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("example.org.pem"), Ca::root("x").pem).unwrap();
    let config = dir.path().join("celador.yaml");
    std::fs::write(
        &config,
        "listen: 127.0.0.1:0\npolicy: policy.yaml\ntrust_domains:\n  example.org:\n    bundle: example.org.pem\naudit:\n  headers: [user-agent]\n",
    )
    .unwrap();
    let (code, filter, stderr) =
        support::celador::run(&["envoy-config", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(filter.contains("      - exact: x-tenant\n"), "{filter}");

    // The celador behind it reads (and so audits) every header it is sent.
    let policy = "rules:\n  - name: all\n    effect: allow\n    when: request.headers.size() > 0 && source.id.endsWith(\"/exporter\")\n";
    let h = Harness::start_with_filter(policy, "", &[], Some(&filter));
    let reply = https::tls(
        h.envoy.listener("mtls"),
        &h.server_ca.pem,
        Some(&h.client(EXPORTER)),
        &Call {
            method: "GET",
            path: "/filtered-1",
            headers: &[
                ("x-tenant", "acme"),
                ("x-unlisted", "not for celador"),
                ("user-agent", "probe/1.0"),
            ],
        },
    );
    assert_eq!(reply.status, 200, "{reply:?}\n{}", h.envoy.log());
    let sent = &h.record("filtered-1")["read"]["request.headers"];
    assert_eq!(sent["x-tenant"], "acme", "{sent}");
    assert_eq!(sent["user-agent"], "probe/1.0", "{sent}");
    assert!(sent["x-forwarded-client-cert"].is_string(), "{sent}");
    assert!(sent.get("x-unlisted").is_none(), "{sent}");
    // celador still verified the peer certificate Envoy forwarded.
    assert_eq!(h.record("filtered-1")["spiffe_id"], EXPORTER);
}

/// Issue 19's leaks, through Envoy: a full JWT-SVID in the configured
/// `x-jwt-svid` header that rules read as a whole header map (`in`,
/// `exists`) and fail on, credentials in query values, a bearer value in
/// an audited header, a token in the path. The audit records, the log and
/// the answers hold none of them.
#[test]
fn no_secret_of_a_request_reaches_the_audit_trail_or_the_log_through_envoy() {
    let signer = support::jwt::Signer::es256("k1");
    let svid = signer.token(&support::jwt::claims(
        "spiffe://example.org/agents/export-bot",
        "payments",
        300,
    ));
    let policy = r#"rules:
  - name: token-header-present
    effect: allow
    when: '"x-jwt-svid" in request.headers && request.method == "PATCH"'
  - name: any-debug-header
    effect: allow
    when: request.headers.exists(k, k.startsWith("x-never"))
  - name: query
    effect: allow
    when: request.query["pass"] == "nope" && request.query["page"] == "2"
  - name: odd-addresses
    effect: deny
    when: request.path.startsWith("/fails/") && (request.headers["x-jwt-svid"].inCidr("10.0.0.0/8") || request.query["pwd"].inCidr("10.0.0.0/8"))
"#;
    let h = Harness::start(
        policy,
        "identity:\n  jwt:\n    header: x-jwt-svid\n    audiences: [payments]\naudit:\n  headers: [x-debug-info, x-tenant]\n  query_params: [page]\n",
        &[],
    );
    let query = format!(
        "jwt={svid}&pass=hunter2&pwd=correct-horse-battery&x-amz-credential=AKIAIOSFODNN7EXAMPLE%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&page=2"
    );
    let client = h.client(EXPORTER);
    let mut replies = Vec::new();
    for (marker, expected) in [("reads-1", "no_allow_rule"), ("fails/1", "rule_error")] {
        let reply = https::tls(
            h.envoy.listener("mtls"),
            &h.server_ca.pem,
            Some(&client),
            &Call {
                method: "GET",
                path: &format!("/{marker}/{svid}?{query}"),
                headers: &[
                    ("x-jwt-svid", &svid),
                    ("x-debug-info", "Bearer opaque-debug-credential"),
                    ("x-tenant", "acme"),
                ],
            },
        );
        assert_eq!(reply.status, 403, "{reply:?}\n{}", h.envoy.log());
        assert!(reply.body.contains(expected), "{reply:?}");
        replies.push(reply);
    }
    let read = &h.record("reads-1")["read"];
    assert_eq!(
        read["request.headers"]["x-jwt-svid"], "<redacted>",
        "{read}"
    );
    assert_eq!(read["request.headers"]["x-tenant"], "acme", "{read}");
    assert_eq!(read["request.query"]["jwt"], "<redacted>", "{read}");
    assert_eq!(read["request.query"]["page"], "2", "{read}");
    let failed = h.record("fails/1");
    assert_eq!(failed["headers"]["x-debug-info"], "<redacted>", "{failed}");
    assert!(
        failed["explanation"]["children"][1]["children"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("\"<redacted>\" is not an IP address")),
        "{failed}"
    );
    let outputs = [
        (
            "the audit records",
            serde_json::to_string(&h.celador.audit_records()).unwrap(),
        ),
        ("the log", h.celador.log()),
        ("the answers", format!("{replies:?}")),
    ];
    for (what, text) in &outputs {
        for secret in [
            svid.as_str(),
            "hunter2",
            "correct-horse-battery",
            "AKIAIOSFODNN7EXAMPLE",
            "opaque-debug-credential",
            "eyJ",
        ] {
            assert!(!text.contains(secret), "{what} hold {secret}:\n{text}");
        }
    }
}

fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}
