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
#[path = "support/setup.rs"]
mod setup;

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use celador::edge::{EdgeSettings, ExtAuthz};
use celador::engine::cache::DecisionCacheSettings;
use celador::engine::identity::bundle::{TrustBundles, parse_pem};
use celador::engine::policy::Policy;
use celador::engine::workload::Workload;
use celador::engine::{Engine, EngineSettings};
use celador::store::Store;
use criterion::{Criterion, criterion_group, criterion_main};
use setup::{KUBERNETES, authorizer, authorizer_with};

fn bench_check(c: &mut Criterion) {
    let ca = pki::Ca::root("example.org");
    let setup::Requests {
        allowed: allowed_req,
        denied: denied_req,
        admin: admin_req,
    } = setup::requests(&ca);

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
        let subject = setup::Caller::new(&caller);
        let input = subject.input(&attrs);
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

/// The rules alone (no identity, no answer) for each of [`KUBERNETES`].
fn bench_kubernetes(c: &mut Criterion) {
    let request = setup::kubernetes_request();
    let attrs = celador::edge::request::attributes(&request).unwrap();
    let caller = setup::Caller::new("spiffe://example.org/ns/a/sa/b");
    let input = caller.input(&attrs);
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
