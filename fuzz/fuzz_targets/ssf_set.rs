//! Security Event Tokens as a transmitter, or anyone who can reach the
//! receiver, sends them: raw bodies, and SETs validly signed by a
//! configured transmitter with fuzzed claims (what a compromised or buggy
//! transmitter could sign). Verified, then mapped to actions; neither may
//! panic.
#![no_main]
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use celador::ssf::event::Mapping;
use celador::ssf::set::{Transmitter, Verifier};
use celador::ssf::subject::{SubjectSpec, Subjects};
use libfuzzer_sys::fuzz_target;
use p256::ecdsa::signature::Signer;

const ISS: &str = "https://idp.example.com/";

fn verifier() -> &'static (Verifier, Subjects, Mapping) {
    static PARTS: OnceLock<(Verifier, Subjects, Mapping)> = OnceLock::new();
    PARTS.get_or_init(|| {
        let point = celador_fuzz::jwt_key().verifying_key().to_encoded_point(false);
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "k1",
            "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
        }]});
        let transmitter =
            Transmitter::new(ISS, vec!["r".into()], jwks.to_string().as_bytes()).unwrap();
        let specs: Vec<SubjectSpec> = serde_json::from_value(serde_json::json!([
            {"subject": {"format": "opaque", "id": "x"}, "spiffe_id": "spiffe://example.org/x"}
        ]))
        .unwrap();
        (
            Verifier::new(vec![transmitter], Duration::from_secs(u64::MAX / 4), Duration::from_secs(u64::MAX / 4)),
            Subjects::new(&specs).unwrap(),
            Mapping::default(),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let (verifier, subjects, mapping) = verifier();
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let body = match data.split_first() {
        Some((0, rest)) => rest.to_vec(),
        _ => {
            let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","kid":"k1","typ":"secevent+jwt"}"#);
            let signed = format!("{header}.{}", URL_SAFE_NO_PAD.encode(data));
            let signature: p256::ecdsa::Signature = celador_fuzz::jwt_key().sign(signed.as_bytes());
            format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes())).into_bytes()
        }
    };
    for at in [now, SystemTime::now()] {
        if let Ok(set) = verifier.verify(&body, at) {
            let _ = mapping.apply(&set, subjects);
        }
    }
});
