//! Request paths: canonicalized, and judged ambiguous or not.
#![no_main]
use celador::engine::request_path::{Ambiguity, canonicalize};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    let once = canonicalize(&raw);
    // Canonical is canonical: a second pass changes nothing and finds no
    // dot segment or double slash to remove.
    let again = canonicalize(&once.path);
    assert_eq!(again.path, once.path, "not a fixed point: {raw:?}");
    if once.path.starts_with('/') {
        assert!(!once.path.contains("//"), "{raw:?} -> {:?}", once.path);
        assert!(
            once.path.split('/').all(|s| s != "." && s != ".."),
            "{raw:?} -> {:?}",
            once.path
        );
    }
    // Normalization decodes, merges, and writes a stray `%` as `%25`.
    assert!(once.path.len() <= raw.len() * 3 + 1, "{raw:?} -> {:?}", once.path);
    // A path called unambiguous has no spelling servers disagree on, so
    // its canonical form has none either (a raw `\` or `%2e` is always
    // reported, whatever else the path holds).
    if once.ambiguity.is_none() {
        let lower = raw.to_ascii_lowercase();
        for needle in ["%2e", "%2f", "%5c", "%00", "%3b", "\\", ";", "\0"] {
            assert!(!lower.contains(needle), "{raw:?} holds {needle:?}");
        }
        assert!(
            raw.split('/').all(|s| s != "." && s != ".."),
            "{raw:?} has a dot segment"
        );
        assert!(!raw.starts_with("//"), "{raw:?}");
    } else if raw.contains('\\') {
        assert!(once.ambiguity.is_some_and(|a| a <= Ambiguity::Backslash));
    }
});
