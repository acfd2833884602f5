//! JWT-SVID verification of whatever a caller puts in its header.
#![no_main]
use std::time::{Duration, SystemTime};

use celador::engine::identity::jwt::{self, JwtSettings, JwtVerifier};
use celador::engine::identity::verified::CacheSettings;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let verifier = JwtVerifier::new(JwtSettings {
        audiences: vec!["payments".into()],
        leeway: Duration::from_secs(30),
        cache: CacheSettings::default(),
    });
    let bundles = celador_fuzz::bundles();
    let _ = verifier.verify_uncached(&text, &bundles, SystemTime::now());
    if let Ok(Some(token)) = jwt::token_in_header("authorization", &text) {
        let _ = verifier.verify(token, &bundles, SystemTime::now());
    }
});
