//! The signals receiver's throughput, in process: a pushed SET verified
//! alone (signature and claims), and verified and applied (replay memory,
//! event mapping, the sink's write, `202`) with a revocations file and with
//! the governance store (a real `redis-server` on loopback). Each SET is
//! new (its own `jti`), signed before the timed loop; every push asserts
//! `202`. SETs per second = 1 / the time of one.
#![allow(
    dead_code,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

#[path = "../tests/support/jwt.rs"]
mod jwt;
#[path = "../tests/support/redis.rs"]
mod redis;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use celador::sources::fleet::StoreSettings;
use celador::ssf::event::Mapping;
use celador::ssf::receiver::Receiver;
use celador::ssf::set::{Transmitter, Verifier};
use celador::ssf::sink::{FileSink, RiskCap, Sink};
use celador::ssf::store::StoreSink;
use celador::ssf::subject::Subjects;
use criterion::{Criterion, criterion_group, criterion_main};
use jwt::Signer;
use serde_json::json;

const IDP: &str = "https://idp.example.com/";
const AUD: &str = "https://celador-signals.example.com/";
const COMPROMISE: &str =
    "https://schemas.openid.net/secevent/risc/event-type/credential-compromise";
/// The identities the SETs revoke, in turn: the file stays this size.
const SUBJECTS: u64 = 100;

/// What tests/support/redis.rs waits with.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `n` new SETs, each a `credential-compromise` with its own `jti` and a
/// later event time than the one before (so each one is applied, not
/// superseded).
fn sets(signer: &Signer, counter: &AtomicU64, n: u64) -> Vec<String> {
    let iat = now();
    (0..n)
        .map(|_| {
            let i = counter.fetch_add(1, Ordering::Relaxed);
            signer.token_with_header(
                &json!({"alg": "ES256", "kid": signer.kid, "typ": "secevent+jwt"}),
                &json!({"iss": IDP, "aud": AUD, "iat": iat, "jti": format!("j-{i}"),
                        "sub_id": {"format": "uri",
                                   "uri": format!("spiffe://example.org/ns/b/sa/s{}", i % SUBJECTS)},
                        "events": {COMPROMISE: {"credential_type": "x509",
                                                "event_timestamp": iat - 10_000_000 + i}}}),
            )
        })
        .collect()
}

fn verifier(signer: &Signer) -> Verifier {
    let jwks = jwt::jwks(&[signer]);
    let transmitter = Transmitter::new(IDP, vec![AUD.into()], jwks.as_bytes()).unwrap();
    Verifier::new(
        vec![transmitter],
        Duration::from_secs(3600),
        Duration::from_secs(300),
    )
}

fn receiver(signer: &Signer, sink: Arc<dyn Sink>) -> Receiver {
    Receiver::new(
        verifier(signer),
        Subjects::new(&[]).unwrap(),
        Mapping::new(&HashMap::new()).unwrap(),
        HashMap::new(),
        sink,
    )
}

/// `iters` new SETs pushed to `receiver` one after the other, timed.
fn push_all(
    runtime: &tokio::runtime::Runtime,
    receiver: &Receiver,
    signer: &Signer,
    counter: &AtomicU64,
    iters: u64,
) -> Duration {
    let tokens = sets(signer, counter, iters);
    let start = Instant::now();
    runtime.block_on(async {
        for token in &tokens {
            let answer = receiver
                .push(
                    Some("application/secevent+jwt"),
                    None,
                    token.as_bytes(),
                    SystemTime::now(),
                )
                .await;
            assert_eq!(answer.status, 202, "{answer:?}");
        }
    });
    start.elapsed()
}

fn bench_signals(c: &mut Criterion) {
    let signer = Signer::es256("idp-1");
    let counter = AtomicU64::new(0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("signals");

    let verifier = verifier(&signer);
    group.bench_function("verify", |b| {
        b.iter_custom(|iters| {
            let tokens = sets(&signer, &counter, iters);
            let start = Instant::now();
            for token in &tokens {
                assert!(verifier.verify(token.as_bytes(), SystemTime::now()).is_ok());
            }
            start.elapsed()
        })
    });

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("revocations.yaml");
    std::fs::write(&file, "revocations: []\n").unwrap();
    let sink: Arc<dyn Sink> = Arc::new(FileSink::open(&file).unwrap());
    let to_file = receiver(&signer, sink);
    group.bench_function("push_file", |b| {
        b.iter_custom(|iters| push_all(&runtime, &to_file, &signer, &counter, iters))
    });

    let redis = redis::Redis::start(false);
    let settings = StoreSettings {
        url: redis.url(),
        username: None,
        password_file: None,
        password_env: None,
        ca_file: None,
        key_prefix: "celador".into(),
    };
    let sink: Arc<dyn Sink> = Arc::new(
        StoreSink::new(
            &settings,
            (Duration::from_secs(86_400), RiskCap::default()),
            |_| None,
        )
        .unwrap(),
    );
    let to_store = receiver(&signer, sink);
    group.bench_function("push_store", |b| {
        b.iter_custom(|iters| push_all(&runtime, &to_store, &signer, &counter, iters))
    });
    group.finish();
}

criterion_group!(benches, bench_signals);
criterion_main!(benches);
