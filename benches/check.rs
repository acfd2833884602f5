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
use std::time::Duration;

use celador::edge::response::{AnswerSettings, HeaderValueSource};
use celador::edge::{EdgeSettings, ExtAuthz};
use celador::engine::cache::DecisionCacheSettings;
use celador::engine::identity::bundle::{TrustBundles, parse_pem};
use celador::engine::identity::verified::CacheSettings;
use celador::engine::policy::Policy;
use celador::engine::workload::Workload;
use celador::engine::{Engine, EngineSettings};
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

    let mut group = c.benchmark_group("check");
    group.bench_function("allowed", |b| {
        b.iter(|| {
            let response = cached.check(black_box(&allowed_req)).unwrap();
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

criterion_group!(benches, bench_check);
criterion_main!(benches);
