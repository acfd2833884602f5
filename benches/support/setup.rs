//! What the in-process benchmarks share (`check.rs`, timed by criterion,
//! and `instructions.rs`, counted by callgrind): the policy, the
//! authorizer, the requests and the Kubernetes conditions, so that both
//! measure the same work.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use celador::edge::response::{AnswerSettings, HeaderValueSource};
use celador::edge::{EdgeSettings, ExtAuthz};
use celador::engine::Attributes;
use celador::engine::cache::DecisionCacheSettings;
use celador::engine::identity::bundle::{TrustBundles, parse_pem};
use celador::engine::identity::verified::CacheSettings;
use celador::engine::identity::{SpiffeId, X509Svid};
use celador::engine::policy::{Input, Policy};
use celador::engine::signals::Signals;
use celador::engine::workload::Workload;
use celador::engine::{Engine, EngineSettings};
use celador::sources::fleet::signals::FleetCounts;
use celador::store::Store;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;

use crate::{check, pki};

pub const POLICY: &str = r#"
rules:
  - name: payments-full-access
    effect: allow
    when: source.id == "spiffe://example.org/ns/payments/sa/api"
  - name: exporter-read-only
    effect: allow
    when: >
      source.id == "spiffe://example.org/ns/batch/sa/exporter" &&
      request.method == "GET" && request.path.startsWith("/export/")
  - name: admin-closed
    effect: deny
    when: request.path.matches("^/admin(/|$)")
"#;

/// An authorizer with `cache_entries` verified SVIDs cached, and decisions
/// cached for `decision_ttl` (zero: every check evaluates the rules).
pub fn authorizer(ca: &pki::Ca, cache_entries: u64, decision_ttl: Duration) -> ExtAuthz {
    authorizer_with(ca, cache_entries, decision_ttl, false)
}

/// [`authorizer`], also counting every caller for the fleet (as with a
/// governance store and `signals_interval` on) when `fleet` is set.
pub fn authorizer_with(
    ca: &pki::Ca,
    cache_entries: u64,
    decision_ttl: Duration,
    fleet: bool,
) -> ExtAuthz {
    let policy = Policy::parse(POLICY, Path::new("bench.yaml")).unwrap();
    let bundle = parse_pem(ca.pem.as_bytes(), Path::new("bench.pem")).unwrap();
    let bundles = TrustBundles::from_domains([("example.org".to_owned(), bundle)]);
    let engine = Engine::new(
        Workload::default(),
        EngineSettings {
            svid_cache: CacheSettings {
                max_entries: cache_entries,
                max_ttl: Duration::from_secs(300),
            },
            decision_cache: DecisionCacheSettings {
                ttl: decision_ttl,
                ..DecisionCacheSettings::default()
            },
            ..EngineSettings::default()
        },
    );
    let engine = match fleet {
        true => engine.with_fleet(FleetCounts::new(10_000)),
        false => engine,
    };
    ExtAuthz::new(
        engine,
        Store::fixed(Arc::new(policy), bundles),
        EdgeSettings {
            answers: AnswerSettings {
                upstream_headers: vec![("x-spiffe-id".into(), HeaderValueSource::SourceId)],
                ..AnswerSettings::default()
            },
            audit_headers: vec!["user-agent".into()],
            ..EdgeSettings::default()
        },
    )
}

/// The exporter's requests of the `check` group: allowed (a GET under
/// `/export/`), denied as no allow rule matches (a POST), and denied by
/// the regex deny rule (`/admin/`).
pub struct Requests {
    pub allowed: CheckRequest,
    pub denied: CheckRequest,
    pub admin: CheckRequest,
}

/// [`Requests`] from an SVID `ca` issues to the exporter.
pub fn requests(ca: &pki::Ca) -> Requests {
    let exporter = ca
        .svid("spiffe://example.org/ns/batch/sa/exporter")
        .envoy_encoded();
    let headers = [
        ("user-agent", "bench/1.0"),
        ("accept", "*/*"),
        ("x-request-id", "r-1"),
    ];
    Requests {
        allowed: check::request(&exporter, "GET", "/export/daily.csv?day=1", &headers),
        denied: check::request(&exporter, "POST", "/export/daily.csv", &headers),
        admin: check::request(&exporter, "GET", "/admin/users", &headers),
    }
}

/// Conditions of the Kubernetes libraries, with literals (parsed at load)
/// and a value read from the request, each the one allow rule of a policy;
/// `string_equals` is the floor. A condition the build cannot load is
/// skipped, so that an older build runs the same benchmark.
pub const KUBERNETES: &[(&str, &str)] = &[
    (
        "string_equals",
        r#"request.headers["x-real-ip"] == "10.1.2.3""#,
    ),
    (
        "in_cidr_literal",
        r#"request.headers["x-real-ip"].inCidr(["192.168.0.0/16", "10.0.0.0/8"])"#,
    ),
    (
        "cidr_contains_ip",
        r#"cidr("10.0.0.0/8").containsIP(ip(request.headers["x-real-ip"]))"#,
    ),
    (
        "cidr_contains_ip_literal",
        r#"cidr("10.0.0.0/8").containsIP("10.1.2.3") && request.headers["x-real-ip"] != """#,
    ),
    (
        "ip_literal_methods",
        r#"ip("10.1.2.3").isGlobalUnicast() && ip(request.headers["x-real-ip"]) == ip("10.1.2.3")"#,
    ),
    (
        "url",
        r#"url(request.headers["x-callback"]).getHostname() == url("https://hooks.example.org/a").getHostname()"#,
    ),
    (
        "two_variable_exists",
        r#"request.headers.exists(k, v, k == "x-real-ip" && v == "10.1.2.3")"#,
    ),
];

/// The request [`KUBERNETES`]' conditions read.
pub fn kubernetes_request() -> CheckRequest {
    check::request(
        "",
        "GET",
        "/v1/orders",
        &[
            ("x-real-ip", "10.1.2.3"),
            ("x-callback", "https://hooks.example.org/b?x=1"),
            ("user-agent", "bench/1.0"),
            ("accept", "*/*"),
        ],
    )
}

/// An X.509-SVID of `id`, verified as of `now`, as the engine sees one.
fn svid_of(id: &str, now: SystemTime) -> X509Svid {
    X509Svid {
        id: SpiffeId::parse(id).unwrap(),
        not_before: now,
        not_after: now,
        chain_not_after: now,
        certificate: Default::default(),
    }
}

/// The caller of a rule evaluation alone (no identity verified, no
/// answer): an SVID of `id`, verified now, in the default workload, without
/// signals.
pub struct Caller {
    svid: X509Svid,
    workload: Workload,
    signals: Signals,
    now: SystemTime,
}

impl Caller {
    pub fn new(id: &str) -> Caller {
        let now = SystemTime::now();
        Caller {
            svid: svid_of(id, now),
            workload: Workload::default(),
            signals: Signals::default(),
            now,
        }
    }

    /// What `Policy::evaluate` reads of this caller's request `attrs`.
    pub fn input<'a>(&'a self, attrs: &'a Attributes<'a>) -> Input<'a> {
        Input {
            source: Some(&self.svid),
            token: None,
            attributes: attrs,
            workload: &self.workload,
            now: self.now,
            grant: None,
            signals: &self.signals,
        }
    }
}
