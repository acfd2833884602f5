use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::*;
use crate::testing::jwt::{self, Signer};

const ISS: &str = "https://idp.example.com/";
const AUD: &str = "https://celador-signals.example.com/";
const NOW: u64 = 1_800_000_000;
const COMPROMISE: &str =
    "https://schemas.openid.net/secevent/risc/event-type/credential-compromise";

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

fn verifier(signers: &[&Signer]) -> Verifier {
    let transmitter =
        Transmitter::new(ISS, vec![AUD.to_owned()], jwt::jwks(signers).as_bytes()).unwrap();
    Verifier::new(
        vec![transmitter],
        Duration::from_secs(3600),
        Duration::from_secs(60),
    )
}

fn claims() -> Value {
    json!({
        "iss": ISS, "aud": AUD, "iat": NOW - 5, "jti": "a1b2c3", "txn": 8675309,
        "sub_id": {"format": "uri", "uri": "spiffe://prod.acme.io/ns/pay/sa/api"},
        "events": {COMPROMISE: {"credential_type": "x509"}}
    })
}

fn header(signer: &Signer) -> Value {
    json!({"alg": signer.alg, "kid": signer.kid, "typ": "secevent+jwt"})
}

fn set(signer: &Signer, claims: &Value) -> String {
    signer.token_with_header(&header(signer), claims)
}

fn refused(verifier: &Verifier, token: &str) -> SetError {
    verifier
        .verify(token.as_bytes(), now())
        .expect_err("the SET must be refused")
}

#[test]
fn es256_and_rs256_sets_verify_with_their_claims() {
    let es = Signer::es256("es");
    let rs = Signer::rsa("rs", "RS256");
    let verifier = verifier(&[&es, &rs]);
    for signer in [&es, &rs] {
        let token = set(signer, &claims());
        let verified = verifier.verify(token.as_bytes(), now()).unwrap();
        assert_eq!(verified.issuer, ISS);
        assert_eq!(verified.jti, "a1b2c3");
        assert_eq!(verified.txn.as_deref(), Some("8675309"));
        assert_eq!(
            verified.issued_at,
            UNIX_EPOCH + Duration::from_secs(NOW - 5)
        );
        assert_eq!(verified.events.len(), 1);
        assert_eq!(verified.events[0].kind, COMPROMISE);
        assert_eq!(verified.subject.as_ref().unwrap()["format"], "uri");
        // A trailing newline (curl --data-binary @file) is not part of it.
        let with_newline = format!("{token}\n");
        let again = verifier.verify(with_newline.as_bytes(), now()).unwrap();
        assert_eq!(again.digest, verified.digest);
    }
}

#[test]
fn each_refusal_has_its_rfc_8935_code() {
    let signer = Signer::es256("k1");
    let other = Signer::es256("k1");
    let verifier = verifier(&[&signer]);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        set(&signer, &c)
    };
    let cases: Vec<(&str, String, ErrorCode)> = vec![
        ("not a JWT", "hello".into(), ErrorCode::InvalidRequest),
        ("a JWE", "a.b.c.d.e".into(), ErrorCode::InvalidRequest),
        ("bad base64", "!!.!!.!!".into(), ErrorCode::InvalidRequest),
        (
            "another key's signature",
            set(&other, &claims()),
            ErrorCode::InvalidKey,
        ),
        (
            "unknown kid",
            Signer::es256("k9").token_with_header(
                &json!({"alg": "ES256", "kid": "k9", "typ": "secevent+jwt"}),
                &claims(),
            ),
            ErrorCode::InvalidKey,
        ),
        (
            "unknown issuer",
            with(&|c| c["iss"] = json!("https://evil.example.com/")),
            ErrorCode::InvalidIssuer,
        ),
        (
            "wrong audience",
            with(&|c| c["aud"] = json!(["https://other.example.com/"])),
            ErrorCode::InvalidAudience,
        ),
        (
            "no audience",
            with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
            ErrorCode::InvalidAudience,
        ),
        (
            "expired iat",
            with(&|c| c["iat"] = json!(NOW - 3601)),
            ErrorCode::InvalidRequest,
        ),
        (
            "future iat",
            with(&|c| c["iat"] = json!(NOW + 61)),
            ErrorCode::InvalidRequest,
        ),
        (
            "no iat",
            with(&|c| {
                c.as_object_mut().unwrap().remove("iat");
            }),
            ErrorCode::InvalidRequest,
        ),
        (
            "sub present",
            with(&|c| c["sub"] = json!("x")),
            ErrorCode::InvalidRequest,
        ),
        (
            "exp present",
            with(&|c| c["exp"] = json!(NOW + 60)),
            ErrorCode::InvalidRequest,
        ),
        (
            "no jti",
            with(&|c| {
                c.as_object_mut().unwrap().remove("jti");
            }),
            ErrorCode::InvalidRequest,
        ),
        (
            "no events",
            with(&|c| c["events"] = json!({})),
            ErrorCode::InvalidRequest,
        ),
        (
            "an event that is not an object",
            with(&|c| c["events"] = json!({COMPROMISE: "yes"})),
            ErrorCode::InvalidRequest,
        ),
        (
            "typ JWT",
            signer.token_with_header(
                &json!({"alg": "ES256", "kid": "k1", "typ": "JWT"}),
                &claims(),
            ),
            ErrorCode::InvalidRequest,
        ),
        (
            "no typ",
            signer.token_with_header(&json!({"alg": "ES256", "kid": "k1"}), &claims()),
            ErrorCode::InvalidRequest,
        ),
        (
            "crit",
            signer.token_with_header(
                &json!({"alg": "ES256", "kid": "k1", "typ": "secevent+jwt", "crit": ["b64"]}),
                &claims(),
            ),
            ErrorCode::InvalidRequest,
        ),
        (
            "HS256",
            signer.token_with_header(
                &json!({"alg": "HS256", "kid": "k1", "typ": "secevent+jwt"}),
                &claims(),
            ),
            ErrorCode::InvalidKey,
        ),
        (
            "RS256 claimed of an EC key",
            signer.token_with_header(
                &json!({"alg": "RS256", "kid": "k1", "typ": "secevent+jwt"}),
                &claims(),
            ),
            ErrorCode::InvalidKey,
        ),
        (
            "oversized",
            "a".repeat(MAX_SET_BYTES + 1),
            ErrorCode::InvalidRequest,
        ),
    ];
    for (name, token, code) in cases {
        let error = refused(&verifier, &token);
        assert_eq!(error.code, code, "{name}: {error}");
        assert!(!error.description.is_empty(), "{name}");
    }
    // alg none, with an empty signature.
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "secevent+jwt"}).to_string()),
        URL_SAFE_NO_PAD.encode(claims().to_string())
    );
    assert_eq!(
        refused(&verifier, &unsigned).code,
        ErrorCode::InvalidRequest
    );
}

#[test]
fn a_refusal_never_quotes_the_token() {
    let signer = Signer::es256("k1");
    let verifier = verifier(&[&signer]);
    let mut c = claims();
    c["aud"] = json!("https://other.example.com/");
    let token = set(&signer, &c);
    let error = refused(&verifier, &token);
    for part in token.split('.') {
        assert!(!error.to_string().contains(part), "{error}");
    }
}

#[test]
fn typ_may_carry_the_media_type_prefix_in_any_case() {
    let signer = Signer::es256("k1");
    let verifier = verifier(&[&signer]);
    for typ in ["secevent+jwt", "application/secevent+jwt", "SecEvent+JWT"] {
        let token =
            signer.token_with_header(&json!({"alg": "ES256", "kid": "k1", "typ": typ}), &claims());
        assert!(verifier.verify(token.as_bytes(), now()).is_ok(), "{typ}");
    }
}

#[test]
fn a_set_without_kid_needs_a_transmitter_with_one_key() {
    let one = Signer::es256("only");
    let no_kid = json!({"alg": "ES256", "typ": "secevent+jwt"});
    let token = one.token_with_header(&no_kid, &claims());
    assert!(verifier(&[&one]).verify(token.as_bytes(), now()).is_ok());
    let two = Signer::es256("second");
    assert_eq!(
        refused(&verifier(&[&one, &two]), &token).code,
        ErrorCode::InvalidKey
    );
}

#[test]
fn transmitters_need_keys_and_an_audience() {
    let signer = Signer::es256("k1");
    let jwks = jwt::jwks(&[&signer]);
    assert!(matches!(
        Transmitter::new(ISS, vec![], jwks.as_bytes()),
        Err(TransmitterError::NoAudience { .. })
    ));
    assert!(matches!(
        Transmitter::new(ISS, vec![AUD.into()], b"{\"keys\": []}"),
        Err(TransmitterError::NoKeys { .. })
    ));
    assert!(matches!(
        Transmitter::new(ISS, vec![AUD.into()], b"[]"),
        Err(TransmitterError::NotAJwks { .. })
    ));
    let twice = jwt::jwks(&[&signer, &Signer::es256("k1")]);
    assert!(matches!(
        Transmitter::new(ISS, vec![AUD.into()], twice.as_bytes()),
        Err(TransmitterError::DuplicateKid { .. })
    ));
    let bad = json!({"keys": [{"kty": "EC", "kid": "x", "crv": "P-256", "x": "AA", "y": "AA"}]});
    let error = Transmitter::new(ISS, vec![AUD.into()], bad.to_string().as_bytes()).unwrap_err();
    assert!(error.to_string().contains("key 1 of the JWKS"), "{error}");
}

#[test]
fn replaced_keys_verify_and_a_bad_document_keeps_the_last_good_ones() {
    let old = Signer::es256("old");
    let new = Signer::rsa("new", "RS256");
    let transmitter =
        Transmitter::new(ISS, vec![AUD.to_owned()], jwt::jwks(&[&old]).as_bytes()).unwrap();
    let verifier = Verifier::new(
        vec![transmitter.clone()],
        Duration::from_secs(3600),
        Duration::from_secs(60),
    );
    let by_new = set(&new, &claims());
    let error = refused(&verifier, &by_new);
    assert_eq!(error.code, ErrorCode::InvalidKey);
    assert_eq!(error.unknown_kid_of.as_deref(), Some(ISS));
    // A bad signature by a known kid is not an unknown kid.
    let forged = set(&Signer::es256("old"), &claims());
    assert_eq!(refused(&verifier, &forged).unknown_kid_of, None);
    // The verifier shares the transmitter's keys: replaced, they verify.
    assert!(
        transmitter
            .replace_keys(jwt::jwks(&[&new]).as_bytes())
            .unwrap()
    );
    assert!(verifier.verify(by_new.as_bytes(), now()).is_ok());
    assert!(
        !transmitter
            .replace_keys(jwt::jwks(&[&new]).as_bytes())
            .unwrap()
    );
    for bad in [&b"not json"[..], b"{\"keys\": []}", b"{\"keys\": 1}"] {
        assert!(transmitter.replace_keys(bad).is_err());
        assert!(verifier.verify(by_new.as_bytes(), now()).is_ok());
    }
    assert_eq!(
        refused(&verifier, &set(&old, &claims()))
            .unknown_kid_of
            .as_deref(),
        Some(ISS)
    );
}
