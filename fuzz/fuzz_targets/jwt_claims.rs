//! JWT-SVIDs validly signed by a configured key with fuzzed claims: what a
//! federated partner's key could sign. Verified, then decided through the
//! whole edge (CEL reads `token.claims`).
#![no_main]
use std::time::{Duration, SystemTime};

use celador::engine::identity::jwt::{JwtSettings, JwtVerifier};
use celador::engine::identity::verified::CacheSettings;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let token = celador_fuzz::sign_jwt(data);
    let verifier = JwtVerifier::new(JwtSettings {
        audiences: vec!["payments".into()],
        leeway: Duration::from_secs(30),
        cache: CacheSettings::default(),
    });
    let bundles = celador_fuzz::bundles();
    let _ = verifier.verify_uncached(&token, &bundles, SystemTime::now());
    let bearer = format!("Bearer {token}");
    let request = celador_fuzz::request("", "GET", "/agents/x", &[("authorization", &bearer)]);
    celador_fuzz::check(&request);
});
