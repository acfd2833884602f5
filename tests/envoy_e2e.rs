//! celador behind a real Envoy 1.40: HTTPS requests with client SVIDs go
//! through Envoy's ext_authz filter; each test asserts the status, the
//! reason, whether the upstream was reached, and the audit record.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::time::{Duration, Instant};

use support::celador::Celador;
use support::envoy::{self, Envoy, Listener, Setup};
use support::https::{self, Call, ClientCert, Reply};
use support::jwt::{Signer, claims, epoch};
use support::pki::{Ca, Leaf, sha256_hex, url_encode};
use support::upstream::Upstream;
use support::workload_api::{WorkloadApi, bundles_for};

const PAYMENTS: &str = "spiffe://example.org/ns/payments/sa/api";
const EXPORTER: &str = "spiffe://example.org/ns/batch/sa/exporter";

const POLICY: &str = r#"
rules:
  - name: payments-full-access
    effect: allow
    when: source.id == "spiffe://example.org/ns/payments/sa/api"
  - name: exporter-read-only
    effect: allow
    when: >
      source.id == "spiffe://example.org/ns/batch/sa/exporter" &&
      request.method == "GET" && request.path.startsWith("/export/")
  - name: other-org-reports
    effect: allow
    when: source.trust_domain == "other.org" && request.path.startsWith("/reports/")
  - name: export-agents
    effect: allow
    when: >
      token.trust_domain == "example.org" && token.path.startsWith("/agents/") &&
      token.claims.purpose == "export" && request.path.startsWith("/agents/export/")
  - name: admin-closed
    effect: deny
    when: request.path.startsWith("/admin/")
"#;

/// celador and Envoy, with two trust domains and an upstream.
struct Harness {
    example: Ca,
    other: Ca,
    pending: Ca,
    signer: Signer,
    server_ca: Ca,
    upstream: Upstream,
    celador: Celador,
    envoy: Envoy,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// example.org's bundle is a SPIFFE bundle document (a CA and a JWT
    /// key) in a file.
    fn start() -> Harness {
        Harness::start_with(Ca::root("example.org root"), None)
    }

    /// With `workload_api`, example.org's bundle comes from that endpoint.
    fn start_with(example: Ca, workload_api: Option<&str>) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        let other = Ca::root("other.org root");
        let pending = Ca::root("pending.org root");
        let signer = Signer::es256("example-jwt-1");
        let server_ca = Ca::root("envoy server CA");
        let server = server_ca.leaf().dns("localhost").build();

        let bundle = support::jwt::spiffe_bundle(&[&example.der], &[&signer], 1);
        std::fs::write(path("example.org.json"), bundle).unwrap();
        std::fs::write(path("other.org.pem"), &other.pem).unwrap();
        std::fs::write(path("policy.yaml"), POLICY).unwrap();
        let example_source = match workload_api {
            Some(_) => "    workload_api: true\n",
            None => "    bundle: example.org.json\n",
        };
        // pending.org is fed by the Workload API and never gets a bundle (no
        // agent serves it): a trust domain that is configured but pending.
        let no_agent = format!("unix://{}", path("no-agent.sock").display());
        let endpoint = workload_api.unwrap_or(&no_agent);
        let workload_api_section = format!("workload_api:\n  endpoint: {endpoint}\n");
        std::fs::write(
            path("celador.yaml"),
            format!(
                "listen: 127.0.0.1:0\npolicy: policy.yaml\ntrust_domains:\n  example.org:\n{example_source}  other.org:\n    bundle: other.org.pem\n  pending.org:\n    workload_api: true\n{workload_api_section}identity:\n  jwt:\n    audiences: [payments]\nupstream_headers:\n  x-spiffe-id: source.id\n  x-agent-id: token.id\n  x-celador-rule: rule\naudit:\n  headers: [user-agent]\nlog:\n  format: json\n"
            ),
        )
        .unwrap();
        std::fs::write(path("server.pem"), &server.pem).unwrap();
        std::fs::write(path("server.key"), &server.key_pem).unwrap();
        // Envoy asks for client certificates issued by any trust domain's CA.
        std::fs::write(
            path("client-ca.pem"),
            format!("{}{}{}", example.pem, other.pem, pending.pem),
        )
        .unwrap();

        let upstream = Upstream::start();
        let celador = Celador::start(&path("celador.yaml"));
        let config = envoy::bootstrap(&Setup {
            celador: celador.addr,
            upstream: upstream.addr,
            server_cert: &path("server.pem"),
            server_key: &path("server.key"),
            client_ca: &path("client-ca.pem"),
            listeners: &[
                Listener {
                    name: "mtls",
                    kind: "mtls",
                    xfcc: "SANITIZE_SET",
                    fail_open: false,
                },
                Listener {
                    name: "append",
                    kind: "mtls",
                    xfcc: "APPEND_FORWARD",
                    fail_open: false,
                },
                Listener {
                    name: "tls",
                    kind: "tls",
                    xfcc: "SANITIZE_SET",
                    fail_open: false,
                },
                Listener {
                    name: "failopen",
                    kind: "mtls",
                    xfcc: "SANITIZE_SET",
                    fail_open: true,
                },
                Listener {
                    name: "plain",
                    kind: "plain",
                    xfcc: "SANITIZE_SET",
                    fail_open: false,
                },
            ],
        });
        let envoy = Envoy::start(&config, dir.path());
        Harness {
            example,
            other,
            pending,
            signer,
            server_ca,
            upstream,
            celador,
            envoy,
            _dir: dir,
        }
    }

    fn send(&self, listener: &str, client: Option<&ClientCert>, call: &Call<'_>) -> Reply {
        let addr = self.envoy.listener(listener);
        if listener == "plain" {
            https::plain(addr, call)
        } else {
            https::tls(addr, &self.server_ca.pem, client, call)
        }
    }

    /// Asserts a denial with `status` and `reason` that never reached the
    /// upstream, and returns its audit record.
    fn assert_denied(
        &self,
        reply: &Reply,
        status: u16,
        reason: &str,
        marker: &str,
    ) -> serde_json::Value {
        assert_eq!(
            (reply.status, reply.header("x-celador-reason")),
            (status, Some(reason)),
            "{marker}: {reply:?}\ncelador log:\n{}",
            self.celador.log()
        );
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.json()["reason"], reason);
        assert!(
            self.upstream.requests_with(marker).is_empty(),
            "{marker} reached the upstream"
        );
        let records = self.celador.audit_for(marker);
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0]["decision"], "deny");
        assert_eq!(records[0]["reason"], reason);
        records[0].clone()
    }
}

fn cert(leaf: &Leaf, intermediates: &[&Ca]) -> ClientCert {
    let mut chain_pem = leaf.pem.clone();
    for ca in intermediates {
        chain_pem.push_str(&ca.pem);
    }
    ClientCert {
        chain_pem,
        key_pem: leaf.key_pem.clone(),
    }
}

#[test]
fn a_valid_svid_is_allowed_by_its_rule_and_reaches_the_upstream_as_itself() {
    let h = Harness::start();
    let exporter = cert(&h.example.svid(EXPORTER), &[]);
    let reply = h.send(
        "mtls",
        Some(&exporter),
        &Call {
            method: "GET",
            path: "/export/allowed-1?day=today",
            headers: &[("user-agent", "nightly-export/1.0")],
        },
    );
    assert_eq!(reply.status, 200, "{reply:?}\n{}", h.celador.log());
    assert_eq!(reply.body, "upstream ok");

    let seen = h.upstream.requests_with("allowed-1");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header_values("x-spiffe-id"), [EXPORTER]);
    assert_eq!(
        seen[0].header_values("x-celador-rule"),
        ["exporter-read-only"]
    );

    let records = h.celador.audit_for("allowed-1");
    let record = &records[0];
    assert_eq!(record["decision"], "allow");
    assert_eq!(record["reason"], "allowed");
    assert_eq!(record["rule"], "exporter-read-only");
    assert_eq!(record["spiffe_id"], EXPORTER);
    assert_eq!(record["method"], "GET");
    assert_eq!(record["path"], "/export/allowed-1");
    assert_eq!(record["host"], "localhost");
    assert_eq!(record["headers"]["user-agent"], "nightly-export/1.0");
    assert_eq!(record["policy_version"].as_str().map(str::len), Some(16));
    assert!(record["latency_us"].as_u64().is_some());
    // `request_id` is the `x-request-id` Envoy generated and the upstream
    // received, so records join the application's logs; Envoy's stream id
    // is kept beside it.
    let upstream_id = seen[0].header_values("x-request-id");
    assert_eq!(upstream_id.len(), 1, "{upstream_id:?}");
    assert_eq!(record["request_id"], upstream_id[0]);
    let stream_id = record["envoy_stream_id"].as_str().unwrap_or_default();
    assert!(
        !stream_id.is_empty() && stream_id != upstream_id[0],
        "{record}"
    );
}

#[test]
fn the_same_svid_is_denied_by_rules_and_never_reaches_the_upstream() {
    let h = Harness::start();
    let exporter = cert(&h.example.svid(EXPORTER), &[]);

    let post = h.send(
        "mtls",
        Some(&exporter),
        &Call {
            method: "POST",
            path: "/export/denied-post",
            headers: &[("content-length", "0")],
        },
    );
    let record = h.assert_denied(&post, 403, "no_allow_rule", "denied-post");
    assert_eq!(record["spiffe_id"], EXPORTER);
    assert_eq!(post.json()["rule"], serde_json::Value::Null);

    let payments = cert(&h.example.svid(PAYMENTS), &[]);
    let admin = h.send("mtls", Some(&payments), &Call::get("/admin/denied-admin"));
    let record = h.assert_denied(&admin, 403, "denied_by_rule", "denied-admin");
    // The rule is named in the audit record, never to the caller.
    assert_eq!(admin.json()["rule"], serde_json::Value::Null);
    assert_eq!(record["rule"], "admin-closed");
    assert_eq!(record["spiffe_id"], PAYMENTS);
    // Envoy normalizes the path before celador sees it, so a dot-dot or
    // doubled slash cannot sneak past the rule.
    let sneaky = h.send(
        "mtls",
        Some(&payments),
        &Call::get("/export/..//admin/denied-sneaky"),
    );
    h.assert_denied(&sneaky, 403, "denied_by_rule", "denied-sneaky");
}

#[test]
fn invalid_svids_are_denied_with_their_reasons() {
    let h = Harness::start();
    let cases: Vec<(&str, Leaf, &str)> = vec![
        (
            "expired",
            h.example
                .leaf()
                .uri(PAYMENTS)
                .valid_secs(-7200, -60)
                .build(),
            "svid_expired",
        ),
        (
            "not-yet-valid",
            h.example.leaf().uri(PAYMENTS).valid_secs(600, 7200).build(),
            "svid_not_yet_valid",
        ),
        (
            "wrong-trust-domain",
            // other.org's CA vouching for an example.org ID.
            h.other.svid(PAYMENTS),
            "svid_untrusted",
        ),
        (
            "ca-leaf",
            h.example.leaf().uri(PAYMENTS).ca_flag().build(),
            "svid_ca",
        ),
        (
            "two-uri-sans",
            h.example.leaf().uri(PAYMENTS).uri(EXPORTER).build(),
            "svid_uri_san",
        ),
        (
            "dns-only",
            h.example.leaf().dns("payments.example.org").build(),
            "svid_uri_san",
        ),
        (
            "uppercase",
            h.example.svid("spiffe://Example.org/ns/payments/sa/api"),
            "svid_invalid_id",
        ),
        (
            "dot-dot",
            h.example
                .svid("spiffe://example.org/ns/batch/../payments/sa/api"),
            "svid_invalid_id",
        ),
        (
            "unknown-trust-domain",
            h.example.svid("spiffe://elsewhere.org/ns/payments/sa/api"),
            "trust_domain_unknown",
        ),
    ];
    for (name, leaf, reason) in cases {
        let marker = format!("invalid-{name}");
        let reply = h.send(
            "mtls",
            Some(&cert(&leaf, &[])),
            &Call::get(&format!("/reports/{marker}")),
        );
        let record = h.assert_denied(&reply, 401, reason, &marker);
        assert_eq!(record["spiffe_id"], serde_json::Value::Null, "{name}");
        // What exactly was wrong goes to the audit record, not the caller.
        assert!(
            record["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{name}"
        );
        assert_eq!(reply.json()["detail"], serde_json::Value::Null, "{name}");
    }
    // The other trust domain's own SVIDs are fine.
    let other = cert(
        &h.other.svid("spiffe://other.org/ns/reports/sa/reader"),
        &[],
    );
    let reply = h.send("mtls", Some(&other), &Call::get("/reports/other-ok"));
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[test]
fn a_request_without_a_client_certificate_is_svid_missing() {
    let h = Harness::start();
    let tls = h.send("tls", None, &Call::get("/export/missing-tls"));
    h.assert_denied(&tls, 401, "svid_missing", "missing-tls");
    let plain = h.send("plain", None, &Call::get("/export/missing-plain"));
    h.assert_denied(&plain, 401, "svid_missing", "missing-plain");
}

#[test]
fn a_chain_through_an_intermediate_is_verified_from_the_forwarded_chain() {
    let h = Harness::start();
    let intermediate = h.example.intermediate("example.org intermediate");
    let leaf = intermediate.svid(PAYMENTS);

    // Without its intermediate the leaf has no path to the root; failures
    // are not cached, so the same leaf is judged again below.
    let leaf_only = h.send(
        "mtls",
        Some(&cert(&leaf, &[])),
        &Call::get("/pay/chain-missing"),
    );
    h.assert_denied(&leaf_only, 401, "svid_untrusted", "chain-missing");

    let with_chain = h.send(
        "mtls",
        Some(&cert(&leaf, &[&intermediate])),
        &Call::get("/pay/chain-ok"),
    );
    assert_eq!(
        with_chain.status,
        200,
        "{with_chain:?}\n{}",
        h.celador.log()
    );
    assert_eq!(
        h.upstream.requests_with("chain-ok")[0].header_values("x-spiffe-id"),
        [PAYMENTS]
    );
}

#[test]
fn forged_identity_headers_give_no_other_identity() {
    let h = Harness::start();
    let exporter_leaf = h.example.svid(EXPORTER);
    let exporter = cert(&exporter_leaf, &[]);
    let payments_leaf = h.example.svid(PAYMENTS);
    // An XFCC element claiming the payments identity, chain and all.
    let forged_xfcc = format!(
        "By=spiffe://example.org/ns/gw/sa/gw;Hash={};Cert=\"{}\";Chain=\"{}\";URI={PAYMENTS}",
        sha256_hex(&payments_leaf.der),
        url_encode(&payments_leaf.pem),
        url_encode(&payments_leaf.pem),
    );
    let forged = [
        ("x-spiffe-id", PAYMENTS),
        ("x-forwarded-client-cert", forged_xfcc.as_str()),
        ("x-celador-rule", "payments-full-access"),
        ("content-length", "0"),
    ];
    // Envoy keeps client XFCC elements on the `append` listener: celador must
    // ignore them there too.
    for listener in ["mtls", "append"] {
        let marker = format!("forged-post-{listener}");
        let reply = h.send(
            listener,
            Some(&exporter),
            &Call {
                method: "POST",
                path: &format!("/export/{marker}"),
                headers: &forged,
            },
        );
        let record = h.assert_denied(&reply, 403, "no_allow_rule", &marker);
        assert_eq!(record["spiffe_id"], EXPORTER, "{listener}");

        // Allowed as the exporter, the upstream sees only the verified ID.
        let marker = format!("forged-get-{listener}");
        let reply = h.send(
            listener,
            Some(&exporter),
            &Call {
                method: "GET",
                path: &format!("/export/{marker}"),
                headers: &forged,
            },
        );
        assert_eq!(reply.status, 200, "{listener}: {reply:?}");
        let seen = &h.upstream.requests_with(&marker)[0];
        assert_eq!(seen.header_values("x-spiffe-id"), [EXPORTER], "{listener}");
        assert_eq!(
            seen.header_values("x-celador-rule"),
            ["exporter-read-only"],
            "{listener}"
        );
    }

    // Without a certificate, forged headers are no identity at all.
    let reply = h.send(
        "tls",
        None,
        &Call {
            method: "GET",
            path: "/export/forged-nocert",
            headers: &forged,
        },
    );
    h.assert_denied(&reply, 401, "svid_missing", "forged-nocert");

    // A rogue CA in a forged chain is never a trust anchor.
    let rogue = Ca::root("rogue");
    let rogue_leaf = rogue.svid(PAYMENTS);
    let rogue_xfcc = format!(
        "Hash={};Chain=\"{}\"",
        sha256_hex(&rogue_leaf.der),
        url_encode(&format!("{}{}", rogue_leaf.pem, rogue.pem))
    );
    let reply = h.send(
        "append",
        Some(&cert(&rogue_leaf, &[])),
        &Call {
            method: "GET",
            path: "/pay/forged-rogue",
            headers: &[("x-forwarded-client-cert", rogue_xfcc.as_str())],
        },
    );
    h.assert_denied(&reply, 401, "svid_untrusted", "forged-rogue");
    drop(exporter_leaf);
}

#[test]
fn every_check_is_audited_once() {
    let h = Harness::start();
    let payments = cert(&h.example.svid(PAYMENTS), &[]);
    for i in 0..5 {
        let reply = h.send(
            "mtls",
            Some(&payments),
            &Call::get(&format!("/pay/audit-once-{i}")),
        );
        assert_eq!(reply.status, 200);
    }
    let records = h.celador.audit_for("audit-once-4");
    assert_eq!(records.len(), 1);
    let all: Vec<_> = h
        .celador
        .audit_records()
        .into_iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.contains("audit-once-"))
        })
        .collect();
    assert_eq!(all.len(), 5, "{all:?}");
    // No header values but the allowlisted ones.
    assert!(all.iter().all(|r| r["headers"].is_null()), "{all:?}");
}

#[test]
fn the_readme_shows_the_envoy_configuration_the_tests_use() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for snippet in [
        envoy::EXT_AUTHZ_FILTER,
        envoy::XFCC_SETTINGS,
        envoy::JWT_ROUTE,
    ] {
        assert!(
            readme.contains(snippet),
            "README.md must contain, verbatim:\n{snippet}"
        );
    }
}

#[test]
fn terminating_celador_stops_it_cleanly() {
    let mut h = Harness::start();
    let payments = cert(&h.example.svid(PAYMENTS), &[]);
    assert_eq!(
        h.send("mtls", Some(&payments), &Call::get("/pay/before-stop"))
            .status,
        200
    );
    let status = h.celador.terminate(Duration::from_secs(20));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        h.celador.log()
    );
    // With celador gone, Envoy fails closed: failure_mode_allow is false.
    let reply = h.send("mtls", Some(&payments), &Call::get("/pay/after-stop"));
    assert_eq!(reply.status, 403, "{reply:?}");
    assert!(h.upstream.requests_with("after-stop").is_empty());
}

#[test]
fn a_jwt_svid_in_a_header_is_allowed_or_denied_by_a_rule_over_token() {
    let h = Harness::start();
    const AGENT: &str = "spiffe://example.org/agents/export-bot";
    let bearer = |claims: &serde_json::Value| format!("Bearer {}", h.signer.token(claims));
    let with_purpose = |purpose: &str, aud: &str, expires_in: i64| {
        let mut c = claims(AGENT, aud, expires_in);
        c["purpose"] = serde_json::json!(purpose);
        c
    };
    // The /agents/ route asks for a JWT-SVID (context extension
    // celador.identity: jwt): no client certificate is needed.
    let export = bearer(&with_purpose("export", "payments", 300));
    let reply = h.send(
        "tls",
        None,
        &Call {
            method: "GET",
            path: "/agents/export/jwt-ok",
            headers: &[("authorization", &export)],
        },
    );
    assert_eq!(reply.status, 200, "{reply:?}\n{}", h.celador.log());
    let seen = &h.upstream.requests_with("jwt-ok")[0];
    assert_eq!(seen.header_values("x-agent-id"), [AGENT]);
    assert_eq!(seen.header_values("x-celador-rule"), ["export-agents"]);
    assert!(
        seen.header_values("x-spiffe-id").is_empty(),
        "no X.509-SVID was read"
    );
    let record = &h.celador.audit_for("jwt-ok")[0];
    assert_eq!(record["token_id"], AGENT);
    assert_eq!(record["rule"], "export-agents");

    // The rule denies a token with another purpose.
    let debug = bearer(&with_purpose("debug", "payments", 300));
    let reply = h.send(
        "tls",
        None,
        &Call {
            method: "GET",
            path: "/agents/export/jwt-debug",
            headers: &[("authorization", &debug)],
        },
    );
    h.assert_denied(&reply, 403, "no_allow_rule", "jwt-debug");

    // Invalid tokens are identity failures, each with its reason.
    let other_key = Signer::es256("example-jwt-1");
    let forged = format!(
        "Bearer {}",
        other_key.token(&with_purpose("export", "payments", 300))
    );
    let not_yet = {
        let mut c = with_purpose("export", "payments", 600);
        c["nbf"] = serde_json::json!(epoch(300));
        bearer(&c)
    };
    let cases: [(&str, String, &str); 5] = [
        (
            "jwt-expired",
            bearer(&with_purpose("export", "payments", -300)),
            "jwt_expired",
        ),
        ("jwt-not-yet", not_yet, "jwt_not_yet_valid"),
        (
            "jwt-audience",
            bearer(&with_purpose("export", "billing", 300)),
            "jwt_audience",
        ),
        ("jwt-forged", forged, "jwt_signature"),
        (
            "jwt-garbage",
            "Bearer not.a.jwt".to_owned(),
            "jwt_malformed",
        ),
    ];
    for (marker, token, reason) in cases {
        let reply = h.send(
            "tls",
            None,
            &Call {
                method: "GET",
                path: &format!("/agents/export/{marker}"),
                headers: &[("authorization", &token)],
            },
        );
        h.assert_denied(&reply, 401, reason, marker);
    }
    let reply = h.send("tls", None, &Call::get("/agents/export/jwt-missing"));
    h.assert_denied(&reply, 401, "jwt_missing", "jwt-missing");
}

#[test]
fn a_ca_rotation_flips_verdicts_through_envoy_without_a_restart() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _context = runtime.enter();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let old_ca = Ca::root("example.org old root");
    let new_ca = Ca::root("example.org new root");
    let agent = WorkloadApi::start(&socket, bundles_for("example.org", &[&old_ca.der], None));
    // Envoy accepts client certificates of either CA (ACCEPT_UNTRUSTED):
    // which one is trusted is celador's call, from the Workload API.
    let h = Harness::start_with(old_ca, Some(&agent.endpoint()));
    let old = cert(&h.example.svid(PAYMENTS), &[]);
    let new = cert(&new_ca.svid(PAYMENTS), &[]);
    let status = |client: &ClientCert, marker: &str| {
        h.send("mtls", Some(client), &Call::get(&format!("/pay/{marker}")))
            .status
    };

    let ready = support::wait_for(Duration::from_secs(10), || {
        (status(&old, "rotation-ready") == 200).then_some(())
    });
    assert!(ready.is_some(), "{}", h.celador.log());
    assert_eq!(status(&new, "rotation-new-before"), 401);

    agent.set(bundles_for("example.org", &[&new_ca.der], None));
    let rotated = Instant::now();
    let mut i = 0;
    let flipped = support::wait_for(Duration::from_secs(1), || {
        i += 1;
        (status(&new, &format!("rotation-new-{i}")) == 200
            && status(&old, &format!("rotation-old-{i}")) == 401)
            .then(|| rotated.elapsed())
    });
    let took =
        flipped.unwrap_or_else(|| panic!("no flip within a second; log:\n{}", h.celador.log()));
    assert!(took < Duration::from_secs(1), "{took:?}");
    let record = h.celador.audit_for(&format!("rotation-old-{i}"));
    assert_eq!(record[0]["reason"], "svid_untrusted");
}

#[test]
fn behind_a_fail_open_envoy_celador_still_denies_what_it_cannot_decide() {
    // Envoy's failure_mode_allow: true (Istio's failOpen) turns any gRPC
    // error, timeout or reset from celador into an allow: every answer
    // here must be celador's own denial.
    let h = Harness::start();
    let pending_svid = cert(&h.pending.svid("spiffe://pending.org/ns/a/sa/b"), &[]);
    let reply = h.send(
        "failopen",
        Some(&pending_svid),
        &Call::get("/reports/fo-x509"),
    );
    let record = h.assert_denied(&reply, 503, "bundle_unavailable", "fo-x509");
    assert!(record["detail"].as_str().unwrap().contains("pending.org"));

    let bearer = |claims: &serde_json::Value| format!("Bearer {}", h.signer.token(claims));
    let caller = cert(&h.example.svid(EXPORTER), &[]);
    let send_token = |marker: &str, token: &str| {
        h.send(
            "failopen",
            Some(&caller),
            &Call {
                method: "GET",
                path: &format!("/agents/export/{marker}"),
                headers: &[("authorization", token)],
            },
        )
    };
    // A JWT-SVID whose sub names the pending trust domain.
    let pending_sub = bearer(&claims("spiffe://pending.org/agent", "payments", 300));
    let reply = send_token("fo-jwt", &pending_sub);
    h.assert_denied(&reply, 503, "bundle_unavailable", "fo-jwt");

    // Validly signed by a configured key, with an absurd exp: an answer
    // from celador and exactly one audit record, not a reset stream.
    let mut absurd = claims("spiffe://example.org/agents/export-bot", "payments", 300);
    absurd["exp"] = serde_json::json!(10_000_000_000_000u64);
    absurd["purpose"] = serde_json::json!("export");
    let reply = send_token("fo-exp", &bearer(&absurd));
    let record = h.assert_denied(&reply, 401, "jwt_malformed", "fo-exp");
    assert!(
        record["detail"].as_str().unwrap().contains("9999"),
        "{record}"
    );

    // A wrong audience: the body names the reason, never the audiences
    // celador accepts (they are in the audit record).
    let wrong_audience = bearer(&claims("spiffe://example.org/agents/x", "elsewhere", 300));
    let reply = send_token("fo-aud", &wrong_audience);
    let record = h.assert_denied(&reply, 401, "jwt_audience", "fo-aud");
    assert!(!reply.body.contains("payments"), "{}", reply.body);
    assert!(record["detail"].as_str().unwrap().contains("payments"));
    let body = reply.json();
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["decision", "reason", "request_id"], "{body}");
}
