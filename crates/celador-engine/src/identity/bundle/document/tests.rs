use crate::testing::{jwt, pki};

use serde_json::json;

use super::*;

/// The document, or its error as the message people read.
fn parse(bytes: &[u8]) -> Result<Document, String> {
    super::parse(bytes).map_err(|e| e.to_string())
}

fn keys(keys: serde_json::Value) -> Vec<u8> {
    json!({"keys": keys}).to_string().into_bytes()
}

fn x509_key(der: &[u8]) -> serde_json::Value {
    json!({"use": "x509-svid", "kty": "EC", "x5c": [STANDARD.encode(der)]})
}

#[test]
fn a_good_document_yields_authorities_keys_sequence_and_hint() {
    let ca = pki::Ca::root("example.org");
    let signer = jwt::Signer::es256("k1");
    let doc = parse(jwt::spiffe_bundle(&[&ca.der], &[&signer], 7).as_bytes()).unwrap();
    assert_eq!(doc.x509.len(), 1);
    assert!(doc.jwt.contains_key("k1"));
    assert_eq!(doc.sequence, Some(7));
    assert_eq!(doc.refresh_hint, Some(Duration::from_secs(300)));
    assert!(doc.skipped.is_empty());
}

#[test]
fn an_x509_key_needs_exactly_one_certificate_in_x5c() {
    let ca = pki::Ca::root("a");
    let other = pki::Ca::root("b");
    let missing = keys(json!([{"use": "x509-svid", "kty": "EC"}]));
    assert_eq!(
        parse(&missing).unwrap_err(),
        "keys[0] (x509-svid): \"x5c\" is required, with the authority's certificate"
    );
    let two = keys(json!([{"use": "x509-svid", "kty": "EC",
        "x5c": [STANDARD.encode(&ca.der), STANDARD.encode(&other.der)]}]));
    assert_eq!(
        parse(&two).unwrap_err(),
        "keys[0] (x509-svid): \"x5c\" must hold exactly one certificate, it holds 2"
    );
    let garbage = keys(json!([{"use": "x509-svid", "kty": "EC", "x5c": ["AAAA"]}]));
    assert!(
        parse(&garbage)
            .unwrap_err()
            .starts_with("keys[0] (x509-svid): cannot parse X.509")
    );
}

#[test]
fn keys_of_an_unknown_use_or_type_are_skipped_as_the_spec_says() {
    let ca = pki::Ca::root("a");
    let doc = keys(json!([
        x509_key(&ca.der),
        {"use": "sig", "kty": "EC", "kid": "x"},
        {"kty": "EC", "kid": "y"},
        {"use": "jwt-svid", "kty": "OKP", "crv": "Ed25519", "kid": "z", "x": "AA"},
    ]));
    let parsed = parse(&doc).unwrap();
    assert_eq!(parsed.x509.len(), 1);
    assert_eq!(
        parsed.skipped,
        [
            "keys[1]: unknown use \"sig\"",
            "keys[2]: no \"use\"",
            "keys[3]: unknown key type \"OKP\""
        ]
    );
    // With nothing usable left, the document is refused.
    let only_wrong_use = keys(json!([{"use": "sig", "kty": "EC", "kid": "x"}]));
    assert_eq!(
        parse(&only_wrong_use).unwrap_err(),
        "the bundle has no usable key (skipped: keys[0]: unknown use \"sig\")"
    );
}

#[test]
fn jwt_keys_need_a_unique_kid_and_sound_key_material() {
    let a = jwt::Signer::es256("same");
    let b = jwt::Signer::es384("same");
    let duplicate = keys(json!([a.jwk, b.jwk]));
    assert_eq!(
        parse(&duplicate).unwrap_err(),
        "keys[1] (jwt-svid): the kid 'same' appears twice; a key ID must name one key"
    );
    let mut no_kid = a.jwk.clone();
    no_kid.as_object_mut().unwrap().remove("kid");
    assert_eq!(
        parse(&keys(json!([no_kid]))).unwrap_err(),
        "keys[0] (jwt-svid): a jwt-svid key needs a 'kid'"
    );
    let mut off_curve = a.jwk.clone();
    off_curve["y"] = json!(off_curve["x"].clone());
    assert_eq!(
        parse(&keys(json!([off_curve]))).unwrap_err(),
        "keys[0] (jwt-svid): key 'same': not a point on P-256"
    );
    let weak: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/rsa-1024.jwk.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let weak =
        json!({"use": "jwt-svid", "kid": "weak", "kty": "RSA", "n": weak["n"], "e": weak["e"]});
    assert_eq!(
        parse(&keys(json!([weak]))).unwrap_err(),
        "keys[0] (jwt-svid): key 'weak': an RSA key of 1024 bits is too weak; at least 2048 are required"
    );
    let mut wrong_alg = a.jwk.clone();
    wrong_alg["alg"] = json!("ES384");
    assert!(
        parse(&keys(json!([wrong_alg])))
            .unwrap_err()
            .contains("cannot verify a ES384 signature")
    );
}

#[test]
fn garbage_documents_are_refused_with_a_reason() {
    let cases: [(&[u8], &str); 6] = [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"[]", "a SPIFFE bundle is a JSON object"),
        (b"{}", "the required \"keys\" array is missing"),
        (br#"{"keys": {}}"#, "\"keys\" must be an array"),
        (
            br#"{"keys": [], "spiffe_refresh_hint": "soon"}"#,
            "\"spiffe_refresh_hint\" must be a whole number of seconds",
        ),
    ];
    for (bytes, expected) in cases {
        let err = parse(bytes).unwrap_err();
        assert!(
            err.starts_with(expected),
            "{:?}: {err}",
            String::from_utf8_lossy(bytes)
        );
    }
    assert_eq!(
        parse(br#"{"keys": [1]}"#).unwrap_err(),
        "keys[0] is not a JSON object"
    );
}
