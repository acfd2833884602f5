//! One check end to end, in process: attributes, X.509-SVID verification,
//! rules, the CheckResponse and the audit record. Every iteration asserts
//! the verdict, so a benchmark can never measure a wrong answer.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

#[path = "../tests/support/check.rs"]
mod check;
#[path = "../tests/support/pki.rs"]
mod pki;

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use celador::edge::response::{AnswerSettings, HeaderValueSource};
use celador::edge::{EdgeSettings, ExtAuthz};
use celador::engine::cache::DecisionCacheSettings;
use celador::engine::identity::bundle::{TrustBundles, parse_pem};
use celador::engine::identity::verified::CacheSettings;
use celador::engine::identity::{SpiffeId, X509Svid};
use celador::engine::policy::{Input, Policy};
use celador::engine::workload::Workload;
use celador::engine::{Engine, EngineSettings};
use celador::sources::fleet::signals::FleetCounts;
use celador::store::Store;
use criterion::{Criterion, criterion_group, criterion_main};

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
  - name: admin-closed
    effect: deny
    when: request.path.matches("^/admin(/|$)")
"#;

/// An authorizer with `cache_entries` verified SVIDs cached, and decisions
/// cached for `decision_ttl` (zero: every check evaluates the rules).
fn authorizer(ca: &pki::Ca, cache_entries: u64, decision_ttl: Duration) -> ExtAuthz {
    authorizer_with(ca, cache_entries, decision_ttl, false)
}

/// [`authorizer`], also counting every caller for the fleet (as with a
/// governance store and `signals_interval` on) when `fleet` is set.
fn authorizer_with(
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

fn bench_check(c: &mut Criterion) {
    let ca = pki::Ca::root("example.org");
    let exporter = ca
        .svid("spiffe://example.org/ns/batch/sa/exporter")
        .envoy_encoded();
    let headers = [
        ("user-agent", "bench/1.0"),
        ("accept", "*/*"),
        ("x-request-id", "r-1"),
    ];
    let allowed_req = check::request(&exporter, "GET", "/export/daily.csv?day=1", &headers);
    let denied_req = check::request(&exporter, "POST", "/export/daily.csv", &headers);
    let admin_req = check::request(&exporter, "GET", "/admin/users", &headers);

    let cached = authorizer(&ca, 10_000, Duration::ZERO);
    let uncached = authorizer(&ca, 0, Duration::ZERO);
    let decisions_cached = authorizer(&ca, 10_000, Duration::from_secs(2));
    let fleet_counted = authorizer_with(&ca, 10_000, Duration::ZERO, true);

    let mut group = c.benchmark_group("check");
    group.bench_function("allowed", |b| {
        b.iter(|| {
            let response = cached.check(black_box(&allowed_req)).unwrap();
            assert!(check::allowed(&response));
        })
    });
    group.bench_function("allowed_fleet_counted", |b| {
        b.iter(|| {
            let response = fleet_counted.check(black_box(&allowed_req)).unwrap();
            assert!(check::allowed(&response));
        })
    });
    group.bench_function("denied_no_allow_rule", |b| {
        b.iter(|| {
            let response = cached.check(black_box(&denied_req)).unwrap();
            assert_eq!(check::denial(&response).unwrap().0, 403);
        })
    });
    group.bench_function("denied_by_rule_regex", |b| {
        b.iter(|| {
            let response = cached.check(black_box(&admin_req)).unwrap();
            assert_eq!(check::denial(&response).unwrap().1, "denied_by_rule");
        })
    });
    group.bench_function("allowed_decision_cached", |b| {
        b.iter(|| {
            let response = decisions_cached.check(black_box(&allowed_req)).unwrap();
            assert!(check::allowed(&response));
        })
    });
    group.bench_function("allowed_svid_uncached", |b| {
        b.iter(|| {
            let response = uncached.check(black_box(&allowed_req)).unwrap();
            assert!(check::allowed(&response));
        })
    });
    group.finish();
}

/// A policy of `n` rules shaped like a shared service's: allow rules keyed on
/// the caller's SPIFFE ID, a method and a path prefix, one in ten a deny rule
/// on other namespaces. `pinned: false` writes the caller's ID test with
/// `endsWith`, which the rule index cannot file a rule under.
fn rules(n: usize, pinned: bool) -> String {
    let mut yaml = String::from("rules:\n");
    for i in 0..n {
        let (effect, ns, path) = match i % 10 {
            9 => ("deny", format!("other-{i}"), "/admin/"),
            _ => ("allow", format!("team-{i}"), "/v1/"),
        };
        let id = match pinned {
            true => format!(r#"source.id == \"spiffe://example.org/ns/{ns}/sa/api\""#),
            false => format!(r#"source.id.endsWith(\"/ns/{ns}/sa/api\")"#),
        };
        yaml.push_str(&format!(
            "  - name: r{i}\n    effect: {effect}\n    when: \"{id} && request.method == \\\"GET\\\" && request.path.startsWith(\\\"{path}\\\")\"\n"
        ));
    }
    yaml
}

/// The resident set of this process, from `/proc/self/status`.
fn rss_kib() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// The rules alone, indexed and evaluated one by one (as before the index),
/// for a caller only the last allow rule matches; and a whole check with
/// the decision cache off.
fn bench_rule_count(c: &mut Criterion) {
    let ca = pki::Ca::root("example.org");
    let mut group = c.benchmark_group("rules");
    for (n, pinned) in [
        (2, true),
        (200, true),
        (2_000, true),
        (20_000, true),
        (2_000, false),
    ] {
        let text = rules(n, pinned);
        let (rss, started) = (rss_kib(), Instant::now());
        let policy = Policy::parse(&text, Path::new("bench.yaml")).unwrap();
        eprintln!(
            "{n} rules (pinned: {pinned}, {} filed): loaded in {:?}, RSS {} KiB more, {} KiB in all",
            policy.index().filed(),
            started.elapsed(),
            rss_kib() - rss,
            rss_kib()
        );
        // The last allow rule.
        let last = (0..n).rev().find(|i| i % 10 != 9).unwrap();
        let caller = format!("spiffe://example.org/ns/team-{last}/sa/api");
        let request = check::request("", "GET", "/v1/orders", &[]);
        let attrs = celador::edge::request::attributes(&request).unwrap();
        let now = SystemTime::now();
        let svid = svid_of(&caller, now);
        let workload = Workload::default();
        let input = Input {
            source: Some(&svid),
            token: None,
            attributes: &attrs,
            workload: &workload,
            now,
            grant: None,
            signals: &Default::default(),
        };
        let name = if pinned {
            format!("{n}")
        } else {
            format!("{n}_unindexable")
        };
        assert!(policy.evaluate(input).allowed);
        group.bench_function(format!("{name}/indexed"), |b| {
            b.iter(|| assert!(policy.evaluate(black_box(input)).allowed))
        });
        if n <= 2_000 {
            group.bench_function(format!("{name}/sequential"), |b| {
                b.iter(|| assert!(policy.evaluate_sequential(black_box(input), false).allowed))
            });
        }
        let bundle = parse_pem(ca.pem.as_bytes(), Path::new("bench.pem")).unwrap();
        let authorizer = ExtAuthz::new(
            Engine::new(
                Workload::default(),
                EngineSettings {
                    decision_cache: DecisionCacheSettings {
                        ttl: Duration::ZERO,
                        ..DecisionCacheSettings::default()
                    },
                    ..EngineSettings::default()
                },
            ),
            Store::fixed(
                Arc::new(policy),
                TrustBundles::from_domains([("example.org".to_owned(), bundle)]),
            ),
            EdgeSettings::default(),
        );
        let request = check::request(&ca.svid(&caller).envoy_encoded(), "GET", "/v1/orders", &[]);
        group.bench_function(format!("{name}/check"), |b| {
            b.iter(|| {
                assert!(check::allowed(
                    &authorizer.check(black_box(&request)).unwrap()
                ))
            })
        });
    }
    group.finish();
}

/// Conditions of the Kubernetes libraries, with literals (parsed at load)
/// and a value read from the request, each the one allow rule of a policy;
/// `string_equals` is the floor. A condition the build cannot load is
/// skipped, so that an older build runs the same benchmark.
const KUBERNETES: &[(&str, &str)] = &[
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

/// The rules alone (no identity, no answer) for each of [`KUBERNETES`].
fn bench_kubernetes(c: &mut Criterion) {
    let request = check::request(
        "",
        "GET",
        "/v1/orders",
        &[
            ("x-real-ip", "10.1.2.3"),
            ("x-callback", "https://hooks.example.org/b?x=1"),
            ("user-agent", "bench/1.0"),
            ("accept", "*/*"),
        ],
    );
    let attrs = celador::edge::request::attributes(&request).unwrap();
    let now = SystemTime::now();
    let svid = svid_of("spiffe://example.org/ns/a/sa/b", now);
    let workload = Workload::default();
    let input = Input {
        source: Some(&svid),
        token: None,
        attributes: &attrs,
        workload: &workload,
        now,
        grant: None,
        signals: &Default::default(),
    };
    let mut group = c.benchmark_group("kubernetes");
    for (name, when) in KUBERNETES {
        let yaml = format!("rules:\n  - name: r\n    effect: allow\n    when: {when:?}\n");
        let Ok(policy) = Policy::parse(&yaml, Path::new("bench.yaml")) else {
            eprintln!("kubernetes/{name}: skipped, this build does not load it");
            continue;
        };
        assert!(policy.evaluate(input).allowed, "{name}");
        group.bench_function(*name, |b| {
            b.iter(|| assert!(policy.evaluate(black_box(input)).allowed))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_check, bench_rule_count, bench_kubernetes);
criterion_main!(benches);

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
