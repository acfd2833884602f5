//! Percent-decoding, of certificates and query strings.
#![no_main]
use celador::engine::percent;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for plus in [false, true] {
        if let Some(decoded) = percent::decode(&text, plus) {
            // Nothing decodes to more bytes than it was written with.
            assert!(decoded.len() <= text.len());
        }
        let lossy = percent::decode_lossy(&text, plus);
        assert!(lossy.len() <= text.len() * 3);
    }
});
