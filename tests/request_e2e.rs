//! What of a client's request reaches celador's rules and the upstream,
//! through a real Envoy 1.40 that fails open: paths the upstream would
//! resolve differently, repeated query parameters, and `x-celador-*`
//! headers the client forged. One listener normalizes paths as the README
//! recommends, one does not; the ext_authz filter is the one `celador
//! envoy-config` prints.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use support::celador::Celador;
use support::envoy::{self, Envoy, Listener, Setup};
use support::https::{self, Call, ClientCert, Reply};
use support::pki::Ca;
use support::upstream::Upstream;

const EXPORTER: &str = "spiffe://example.org/ns/batch/sa/exporter";
const PAYMENTS: &str = "spiffe://example.org/ns/payments/sa/api";

const POLICY: &str = r#"
rules:
  - name: exporter-read-only
    effect: allow
    when: >
      source.id == "spiffe://example.org/ns/batch/sa/exporter" &&
      request.method == "GET" && request.path.startsWith("/export/")
  - name: payments-full-access
    effect: allow
    when: source.id == "spiffe://example.org/ns/payments/sa/api"
  - name: admin-closed
    effect: deny
    when: request.path.startsWith("/admin")
  - name: no-debug
    effect: deny
    when: '"debug" in request.query && request.query.debug == "true"'
"#;

/// The listener where Envoy normalizes paths (the README's settings), and
/// the one where it does not.
const LISTENERS: [&str; 2] = ["normalized", "raw"];

struct Harness {
    ca: Ca,
    server_ca: Ca,
    upstream: Upstream,
    celador: Celador,
    envoy: Envoy,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn start() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        let ca = Ca::root("example.org root");
        let server_ca = Ca::root("envoy server CA");
        let server = server_ca.leaf().dns("localhost").build();
        std::fs::write(path("example.org.pem"), &ca.pem).unwrap();
        std::fs::write(path("policy.yaml"), POLICY).unwrap();
        std::fs::write(
            path("celador.yaml"),
            "listen: 127.0.0.1:0\npolicy: policy.yaml\ntrust_domains:\n  example.org:\n    bundle: example.org.pem\nupstream_headers:\n  x-spiffe-id: source.id\nlog:\n  format: json\n",
        )
        .unwrap();
        std::fs::write(path("server.pem"), &server.pem).unwrap();
        std::fs::write(path("server.key"), &server.key_pem).unwrap();
        std::fs::write(path("client-ca.pem"), &ca.pem).unwrap();
        let (code, filter, stderr) = support::celador::run(&[
            "envoy-config",
            "--config",
            path("celador.yaml").to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{stderr}");
        assert!(filter.contains("- prefix: x-celador-"), "{filter}");
        // Fail open: whatever celador does not deny itself is allowed.
        let filter = filter.replace("failure_mode_allow: false", "failure_mode_allow: true");

        let upstream = Upstream::start();
        let celador = Celador::start(&path("celador.yaml"));
        let listener = |name| Listener {
            name,
            kind: "mtls",
            xfcc: "SANITIZE_SET",
            fail_open: false,
        };
        let config = envoy::bootstrap(&Setup {
            celador: celador.addr,
            upstream: upstream.addr,
            server_cert: &path("server.pem"),
            server_key: &path("server.key"),
            client_ca: &path("client-ca.pem"),
            listeners: &[listener("normalized"), listener("raw")],
        });
        let config = envoy::with_ext_authz_filter(&config, &filter);
        let config = envoy::without_path_normalization(&config, "raw");
        let envoy = Envoy::start(&config, dir.path());
        Harness {
            ca,
            server_ca,
            upstream,
            celador,
            envoy,
            _dir: dir,
        }
    }

    fn client(&self, id: &str) -> ClientCert {
        let leaf = self.ca.svid(id);
        ClientCert {
            chain_pem: leaf.pem.clone(),
            key_pem: leaf.key_pem.clone(),
        }
    }

    fn get(&self, listener: &str, id: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        https::tls(
            self.envoy.listener(listener),
            &self.server_ca.pem,
            Some(&self.client(id)),
            &Call {
                method: "GET",
                path,
                headers,
            },
        )
    }
}

/// How a request ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Envoy refused it before asking celador (its own 400).
    Envoy(u16),
    /// celador denied it with this status and reason.
    Celador(u16, String),
    /// It reached the upstream.
    Upstream,
}

fn outcome(h: &Harness, reply: &Reply, marker: &str) -> Outcome {
    let reached = h.upstream.requests_with(marker);
    match reply.header("x-celador-reason") {
        _ if reply.status == 200 => {
            assert_eq!(reached.len(), 1, "{marker}: {reply:?}");
            Outcome::Upstream
        }
        Some(reason) => {
            assert!(reached.is_empty(), "{marker} reached the upstream");
            let records = h.celador.audit_for(marker);
            assert_eq!(records.len(), 1, "{records:?}");
            assert_eq!(records[0]["reason"], reason, "{marker}");
            Outcome::Celador(reply.status, reason.to_owned())
        }
        None => {
            assert!(reached.is_empty(), "{marker} reached the upstream");
            Outcome::Envoy(reply.status)
        }
    }
}

#[test]
fn paths_the_upstream_resolves_differently_never_reach_it_with_or_without_envoys_normalization() {
    let h = Harness::start();
    let invalid = || Outcome::Celador(400, "invalid_path".into());
    let no_rule = || Outcome::Celador(403, "no_allow_rule".into());
    // What each listener does with each path, as observed: Envoy's
    // normalization resolves some (then no rule allows `/pay`), rejects
    // encoded slashes itself, and leaves `%2e%2e;` as `..;`; celador
    // refuses what is left.
    // (the path before its marker, the marker, on each listener)
    let cases: [(&str, &str, [Outcome; 2]); 7] = [
        ("/export/../", "pay-dotdot", [no_rule(), invalid()]),
        (
            "/export/%2e%2e/",
            "pay-encoded-dots",
            [no_rule(), invalid()],
        ),
        (
            "/export/..%2f",
            "pay-encoded-slash",
            [Outcome::Envoy(400), invalid()],
        ),
        // Envoy resolves `..;` as a parent segment here, but not once
        // encoded (below): `/export/%2e%2e;/admin` reaches celador as
        // `/export/..;/admin`, past a deny rule on `/admin` before.
        ("/export/..;/", "pay-parameter", [no_rule(), invalid()]),
        ("/export/..\\", "pay-backslash", [no_rule(), invalid()]),
        ("/export/%2e%2e;/", "admin-tomcat", [invalid(), invalid()]),
        // A spelling every server reads alike is decided on its canonical
        // form, and the upstream gets it as sent.
        (
            "/export//%64",
            "aily-canonical",
            [Outcome::Upstream, Outcome::Upstream],
        ),
    ];
    let mut failures = Vec::new();
    for (prefix, marker, expected) in &cases {
        for (listener, expected) in LISTENERS.iter().zip(expected) {
            let marker = format!("{marker}-{listener}");
            let path = format!("{prefix}{marker}");
            let reply = h.get(listener, EXPORTER, &path, &[]);
            let got = outcome(&h, &reply, &marker);
            if &got != expected {
                failures.push(format!("{listener} {path}: {got:?}, expected {expected:?}"));
            }
            if got == invalid() && *listener == "raw" {
                // As the client sent it: Envoy passed it on untouched.
                let record = &h.celador.audit_for(&marker)[0];
                let sent = record["raw_path"].as_str().or(record["path"].as_str());
                assert_eq!(sent, Some(path.as_str()), "{record}");
                assert_eq!(record["spiffe_id"], EXPORTER, "{record}");
                // No rule ran, so none read anything.
                assert!(record.get("read").is_none(), "{record}");
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}\n{}", h.celador.log());
    // A clean path is still allowed, on both.
    for listener in LISTENERS {
        let marker = format!("clean-{listener}");
        let reply = h.get(listener, EXPORTER, &format!("/export/{marker}"), &[]);
        assert_eq!(outcome(&h, &reply, &marker), Outcome::Upstream);
    }
    // Every denial was celador's answer: fail-open never allowed one.
    assert!(h.envoy.counter("cluster.upstream.ext_authz.denied") > 0);
    assert_eq!(h.envoy.counter("cluster.upstream.ext_authz.error"), 0);
    assert_eq!(
        h.envoy
            .counter("cluster.upstream.ext_authz.failure_mode_allowed"),
        0
    );
}

#[test]
fn a_repeated_query_parameter_does_not_slip_past_a_deny_rule() {
    let h = Harness::start();
    for listener in LISTENERS {
        let marker = format!("query-twice-{listener}");
        let reply = h.get(
            listener,
            EXPORTER,
            &format!("/export/{marker}?debug=false&debug=true"),
            &[],
        );
        assert_eq!(
            outcome(&h, &reply, &marker),
            Outcome::Celador(403, "rule_error".into()),
            "{listener}"
        );
        let record = &h.celador.audit_for(&marker)[0];
        assert_eq!(record["rule"], "no-debug");
        let marker = format!("query-once-{listener}");
        let reply = h.get(
            listener,
            EXPORTER,
            &format!("/export/{marker}?debug=false"),
            &[],
        );
        assert_eq!(outcome(&h, &reply, &marker), Outcome::Upstream);
    }
}

#[test]
fn forged_celador_headers_never_reach_the_upstream_allowed_or_shadowed() {
    let h = Harness::start();
    let forged = [
        ("x-celador-shadow", "denied_by_rule"),
        ("x-celador-rule", "forged"),
        ("x-celador-reason", "allowed"),
        ("x-spiffe-id", PAYMENTS),
    ];
    // Each request's upstream copy carries celador's headers only.
    let only_own = |marker: &str, id: &str, shadow: &[&str]| {
        let seen = &h.upstream.requests_with(marker)[0];
        assert_eq!(seen.header_values("x-celador-shadow"), shadow, "{marker}");
        assert!(seen.header_values("x-celador-rule").is_empty(), "{marker}");
        assert!(
            seen.header_values("x-celador-reason").is_empty(),
            "{marker}"
        );
        assert_eq!(seen.header_values("x-spiffe-id"), [id], "{marker}");
    };
    let reply = h.get("normalized", EXPORTER, "/export/forged-allowed", &forged);
    assert_eq!(reply.status, 200, "{reply:?}");
    only_own("forged-allowed", EXPORTER, &[]);
    // On a route in shadow mode, an allowed request carries no shadow
    // header, and a denial let through carries celador's own only.
    let reply = h.get(
        "normalized",
        PAYMENTS,
        "/shadow/forged-shadow-allowed",
        &forged,
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    only_own("forged-shadow-allowed", PAYMENTS, &[]);
    let reply = h.get(
        "normalized",
        EXPORTER,
        "/shadow/forged-let-through",
        &forged,
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    only_own("forged-let-through", EXPORTER, &["no_allow_rule"]);
    let records = h.celador.audit_for("forged-let-through");
    assert_eq!(records[0]["enforced"], false);
    assert_eq!(records[0]["reason"], "no_allow_rule");
}
