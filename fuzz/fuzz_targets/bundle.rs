//! Trust bundle files (PEM or SPIFFE bundle documents) and single JWKs.
#![no_main]
use std::path::Path;
use std::time::SystemTime;

use celador::engine::identity::bundle::{self, jwk};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = bundle::parse(data, Path::new("fuzz.json")) {
        let now = SystemTime::now();
        let _ = parsed.bundle.x509_anchors_at(now);
        let _ = parsed.bundle.x509_valid_until(now);
        let _ = bundle::authorities_not_valid_at(parsed.bundle.x509_authorities(), now);
    }
    let _ = jwk::parse_json(data);
});
