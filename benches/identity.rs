//! Identity verification alone: a cached check against a full one, for
//! X.509-SVIDs (chain verification) and JWT-SVIDs (signature verification).
//! Every iteration asserts the verified SPIFFE ID.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

#[path = "../tests/support/jwt.rs"]
mod jwt;
#[path = "../tests/support/pki.rs"]
mod pki;

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, SystemTime};

use celador::engine::identity::bundle::{self, TrustBundles};
use celador::engine::identity::jwt::{JwtSettings, JwtVerifier};
use celador::engine::identity::verified::CacheSettings;
use celador::engine::identity::x509::X509Verifier;
use criterion::{Criterion, criterion_group, criterion_main};

const ID: &str = "spiffe://example.org/ns/payments/sa/api";

fn cache(entries: u64) -> CacheSettings {
    CacheSettings {
        max_entries: entries,
        max_ttl: Duration::from_secs(300),
    }
}

fn bench_identity(c: &mut Criterion) {
    let ca = pki::Ca::root("example.org");
    let intermediate = ca.intermediate("example.org intermediate");
    let signer = jwt::Signer::es256("k1");
    let rsa = jwt::Signer::rsa("k2", "RS256");
    let doc = jwt::spiffe_bundle(&[&ca.der], &[&signer, &rsa], 1);
    let loaded = bundle::parse(doc.as_bytes(), Path::new("bench.json")).unwrap();
    let bundles = TrustBundles::from_domains([("example.org".to_owned(), loaded.bundle)]);

    let leaf = intermediate.svid(ID);
    let cert = leaf.envoy_encoded();
    let xfcc = pki::xfcc_with_chain(&leaf, &[&intermediate]);
    let es256 = signer.token(&jwt::claims(ID, "payments", 3600));
    let rs256 = rsa.token(&jwt::claims(ID, "payments", 3600));
    let now = SystemTime::now();

    let mut group = c.benchmark_group("identity");
    for (name, entries) in [("x509_cached", 10_000), ("x509_uncached", 0)] {
        let verifier = X509Verifier::new(cache(entries));
        group.bench_function(name, |b| {
            b.iter(|| {
                let svid = verifier
                    .verify(black_box(&cert), Some(&xfcc), &bundles, now)
                    .unwrap();
                assert_eq!(svid.id.as_str(), ID);
            })
        });
    }
    for (name, token, entries) in [
        ("jwt_es256_cached", &es256, 10_000),
        ("jwt_es256_uncached", &es256, 0),
        ("jwt_rs256_cached", &rs256, 10_000),
        ("jwt_rs256_uncached", &rs256, 0),
    ] {
        let verifier = JwtVerifier::new(JwtSettings {
            audiences: vec!["payments".into()],
            leeway: Duration::from_secs(30),
            cache: cache(entries),
        });
        group.bench_function(name, |b| {
            b.iter(|| {
                let svid = verifier.verify(black_box(token), &bundles, now).unwrap();
                assert_eq!(svid.id.as_str(), ID);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_identity);
criterion_main!(benches);
