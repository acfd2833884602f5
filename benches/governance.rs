//! The governance hot paths, in the engine: a decision served by the
//! decision cache against one evaluated by the rules, a cache miss (lookup,
//! evaluation and insertion), and the behavioural-signals update. Every
//! iteration asserts the verdict.
#![allow(
    dead_code,
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
use std::time::{Duration, SystemTime};

use celador::engine::cache::DecisionCacheSettings;
use celador::engine::identity::bundle::{TrustBundles, parse_pem};
use celador::engine::policy::Policy;
use celador::engine::signals::SignalTable;
use celador::engine::workload::Workload;
use celador::engine::{Engine, EngineSettings, Reason, Snapshot};
use criterion::{Criterion, criterion_group, criterion_main};

const POLICY: &str = r#"
rules:
  - name: admin-closed
    effect: deny
    when: request.path.matches("^/admin(/|$)")
  - name: payments-full-access
    effect: allow
    when: source.id == "spiffe://example.org/ns/payments/sa/api"
  - name: exporter-read-only
    effect: allow
    when: >
      source.id == "spiffe://example.org/ns/batch/sa/exporter" &&
      request.method == "GET" && request.path.startsWith("/export/") &&
      request.headers["x-tenant"] in ["acme", "globex"]
"#;

fn engine(ttl: Duration) -> Engine {
    Engine::new(
        Workload::default(),
        EngineSettings {
            decision_cache: DecisionCacheSettings {
                ttl,
                ..DecisionCacheSettings::default()
            },
            ..EngineSettings::default()
        },
    )
}

fn bench_governance(c: &mut Criterion) {
    let ca = pki::Ca::root("example.org");
    let policy = Arc::new(Policy::parse(POLICY, Path::new("bench.yaml")).unwrap());
    let bundle = parse_pem(ca.pem.as_bytes(), Path::new("bench.pem")).unwrap();
    let bundles = Arc::new(TrustBundles::from_domains([(
        "example.org".to_owned(),
        bundle,
    )]));
    let snapshot = Snapshot::new(policy, bundles);
    let exporter = ca
        .svid("spiffe://example.org/ns/batch/sa/exporter")
        .envoy_encoded();
    let request = check::request(
        &exporter,
        "GET",
        "/export/daily.csv",
        &[("x-tenant", "acme"), ("user-agent", "bench/1.0")],
    );
    let attrs = celador::edge::request::attributes(&request).unwrap();
    let now = SystemTime::now();

    let rules = engine(Duration::ZERO);
    let cached = engine(Duration::from_secs(3600));
    let mut group = c.benchmark_group("decide");
    group.bench_function("rules_evaluated", |b| {
        b.iter(|| {
            let d = rules.decide(&snapshot, black_box(&attrs), now);
            assert_eq!(d.reason, Reason::Allowed);
        })
    });
    // The first decision fills the cache.
    assert!(!cached.decide(&snapshot, &attrs, now).from_cache);
    group.bench_function("cache_hit", |b| {
        b.iter(|| {
            let d = cached.decide(&snapshot, black_box(&attrs), now);
            assert!(d.allowed && d.from_cache);
        })
    });
    // Every iteration a new snapshot generation: the key differs, so each
    // decision is looked up, evaluated and inserted.
    let mut missing = snapshot.clone();
    let fresh = engine(Duration::from_secs(3600));
    group.bench_function("cache_miss", |b| {
        b.iter(|| {
            missing.generation += 1;
            let d = fresh.decide(&missing, black_box(&attrs), now);
            assert!(d.allowed && !d.from_cache);
        })
    });
    group.finish();

    let mut group = c.benchmark_group("signals");
    let table = SignalTable::new(10_000);
    group.bench_function("record_request", |b| {
        b.iter(|| {
            let s =
                table.record_request(black_box("spiffe://example.org/ns/batch/sa/exporter"), now);
            assert!(s.requests_10s > 0);
        })
    });
    let ids: Vec<String> = (0..1000)
        .map(|i| format!("spiffe://example.org/ns/batch/sa/worker-{i}"))
        .collect();
    let mut i = 0;
    group.bench_function("record_request_1000_identities", |b| {
        b.iter(|| {
            i = (i + 1) % ids.len();
            let s = table.record_request(black_box(&ids[i]), now);
            assert!(s.requests_10m > 0);
        })
    });
    group.finish();
}

criterion_group!(benches, bench_governance);
criterion_main!(benches);
