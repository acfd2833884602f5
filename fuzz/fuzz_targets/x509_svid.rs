//! X.509-SVID verification from raw bytes: as `source.certificate` text, or
//! as DER wrapped the way Envoy sends it, with an XFCC header beside it.
#![no_main]
use std::time::SystemTime;

use base64::Engine as _;
use celador::engine::identity::verified::CacheSettings;
use celador::engine::identity::x509::X509Verifier;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let bundles = celador_fuzz::bundles();
    let verifier = X509Verifier::new(CacheSettings::default());
    let (certificate, xfcc) = match mode % 3 {
        0 => {
            let parts = celador_fuzz::split(rest, 2);
            (parts[0].clone(), parts[1].clone())
        }
        1 => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(rest);
            let pem = format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n");
            (celador_fuzz::url_encode(&pem), String::new())
        }
        _ => {
            // The real leaf, with a fuzzed XFCC chain beside it.
            let xfcc = String::from_utf8_lossy(rest).into_owned();
            (celador_fuzz::pki().leaf.clone(), xfcc)
        }
    };
    let xfcc = (!xfcc.is_empty()).then_some(xfcc.as_str());
    let now = SystemTime::now();
    let uncached = verifier.verify_uncached(&certificate, xfcc, &bundles, now);
    let cached = verifier.verify(&certificate, xfcc, &bundles, now);
    if let Ok((svid, _)) = &uncached {
        assert_eq!(cached.as_deref().ok(), Some(svid));
    }
});
