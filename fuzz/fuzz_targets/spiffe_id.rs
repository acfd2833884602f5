//! SPIFFE IDs, from URI SANs and `sub` claims.
#![no_main]
use celador::engine::identity::SpiffeId;
use celador::engine::identity::spiffe_id::validate_trust_domain;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(id) = SpiffeId::parse(&text) {
        // Only canonical IDs are accepted: never normalised.
        assert_eq!(id.as_str(), text);
        assert!(validate_trust_domain(id.trust_domain()).is_ok());
        assert_eq!(
            format!("spiffe://{}{}", id.trust_domain(), id.path()),
            id.as_str()
        );
    }
    let _ = validate_trust_domain(&text);
});
