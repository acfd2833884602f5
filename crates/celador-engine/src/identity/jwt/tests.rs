use crate::testing::jwt;

use std::collections::HashMap;
use std::path::Path;

use jwt::{Signer, claims, epoch};
use serde_json::json;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::*;
use crate::identity::bundle;

const AUD: &str = "payments-api";
const SUB: &str = "spiffe://example.org/ns/gw/sa/agent";

fn bundles(domains: &[(&str, &[&Signer])]) -> TrustBundles {
    TrustBundles::from_domains(domains.iter().map(|(td, signers)| {
        let doc = jwt::jwks(signers);
        let loaded = bundle::parse(doc.as_bytes(), Path::new("jwks.json")).unwrap();
        ((*td).to_owned(), loaded.bundle)
    }))
}

fn verifier(leeway_secs: u64) -> JwtVerifier {
    JwtVerifier::new(JwtSettings {
        audiences: vec![AUD.to_owned(), "other-api".to_owned()],
        leeway: Duration::from_secs(leeway_secs),
        cache: CacheSettings::default(),
    })
}

fn reason(token: &str, b: &TrustBundles) -> Reason {
    verifier(30)
        .verify_uncached(token, b, SystemTime::now())
        .expect_err("the token should be refused")
        .reason
}

#[test]
fn every_algorithm_of_the_profile_verifies() {
    let signers = [
        Signer::es256("k-es256"),
        Signer::es384("k-es384"),
        Signer::es512("k-es512", 7),
        Signer::rsa("k-rs256", "RS256"),
        Signer::rsa("k-rs384", "RS384"),
        Signer::rsa("k-rs512", "RS512"),
        Signer::rsa("k-ps256", "PS256"),
        Signer::rsa("k-ps384", "PS384"),
        Signer::rsa("k-ps512", "PS512"),
    ];
    let refs: Vec<&Signer> = signers.iter().collect();
    let b = bundles(&[("example.org", &refs)]);
    for signer in &signers {
        let claims = claims(SUB, AUD, 300);
        let token = signer.token(&claims);
        let (svid, _) = verifier(30)
            .verify_uncached(&token, &b, SystemTime::now())
            .unwrap_or_else(|e| panic!("{}: {e}", signer.alg));
        assert_eq!(svid.id.as_str(), SUB);
        assert_eq!(svid.audience, [AUD]);
        assert_eq!(svid.claims["iat"], claims["iat"]);
    }
}

#[test]
fn each_failure_has_its_own_reason() {
    let signer = Signer::es256("k1");
    let other_key = Signer::es256("k1");
    let b = bundles(&[("example.org", &[&signer])]);
    let header = |alg: &str| json!({"alg": alg, "kid": "k1", "typ": "JWT"});
    let good = claims(SUB, AUD, 300);
    let mut no_exp = good.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    let mut no_aud = good.clone();
    no_aud.as_object_mut().unwrap().remove("aud");
    let forged = {
        let real = signer.token(&good);
        let (head, _) = real.rsplit_once('.').unwrap();
        let other = other_key.token(&good);
        format!("{head}.{}", other.rsplit_once('.').unwrap().1)
    };
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": "k1"}).to_string()),
        URL_SAFE_NO_PAD.encode(good.to_string())
    );
    let cases: Vec<(&str, String, Reason)> = vec![
        ("valid", signer.token(&good), Reason::Allowed),
        (
            "expired",
            signer.token(&claims(SUB, AUD, -60)),
            Reason::JwtExpired,
        ),
        (
            "not yet valid",
            signer.token(&json!({"sub": SUB, "aud": AUD, "exp": epoch(600), "nbf": epoch(120)})),
            Reason::JwtNotYetValid,
        ),
        (
            "wrong audience",
            signer.token(&claims(SUB, "billing", 300)),
            Reason::JwtAudience,
        ),
        ("forged signature", forged, Reason::JwtSignature),
        (
            "unknown kid",
            signer.token_with_header(&json!({"alg": "ES256", "kid": "k9"}), &good),
            Reason::JwtUnknownKey,
        ),
        ("alg none", unsigned.clone(), Reason::JwtMalformed),
        (
            "alg none with a signature",
            format!("{unsigned}AAAA"),
            Reason::JwtAlgorithm,
        ),
        (
            "alg HS256",
            signer.token_with_header(&header("HS256"), &good),
            Reason::JwtAlgorithm,
        ),
        (
            "alg EdDSA",
            signer.token_with_header(&header("EdDSA"), &good),
            Reason::JwtAlgorithm,
        ),
        (
            "alg of another curve",
            signer.token_with_header(&header("ES384"), &good),
            Reason::JwtAlgorithm,
        ),
        ("no exp", signer.token(&no_exp), Reason::JwtMalformed),
        ("no aud", signer.token(&no_aud), Reason::JwtMalformed),
        (
            "no kid",
            signer.token_with_header(&json!({"alg": "ES256"}), &good),
            Reason::JwtMalformed,
        ),
        (
            "extra header",
            signer.token_with_header(
                &json!({"alg": "ES256", "kid": "k1", "jku": "https://x"}),
                &good,
            ),
            Reason::JwtMalformed,
        ),
        (
            "bad typ",
            signer.token_with_header(
                &json!({"alg": "ES256", "kid": "k1", "typ": "at+jwt"}),
                &good,
            ),
            Reason::JwtMalformed,
        ),
        (
            "uppercase sub",
            signer.token(&claims("spiffe://Example.org/a", AUD, 300)),
            Reason::JwtInvalidId,
        ),
        (
            "dot-dot sub",
            signer.token(&claims("spiffe://example.org/a/../b", AUD, 300)),
            Reason::JwtInvalidId,
        ),
        (
            "unknown trust domain",
            signer.token(&claims("spiffe://elsewhere.org/a", AUD, 300)),
            Reason::TrustDomainUnknown,
        ),
        ("two parts", "abc.def".to_owned(), Reason::JwtMalformed),
        ("four parts", "a.b.c.d".to_owned(), Reason::JwtMalformed),
        ("JSON serialization", good.to_string(), Reason::JwtMalformed),
        ("garbage", "!!!.###.$$$".to_owned(), Reason::JwtMalformed),
        ("empty", String::new(), Reason::JwtMalformed),
    ];
    for (name, token, expected) in cases {
        let got = match verifier(30).verify_uncached(&token, &b, SystemTime::now()) {
            Ok(_) => Reason::Allowed,
            Err(e) => {
                assert!(!e.detail.is_empty(), "{name}");
                e.reason
            }
        };
        assert_eq!(got, expected, "{name}");
    }
    let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
    let err = verifier(30)
        .verify(&huge, &b, SystemTime::now())
        .unwrap_err();
    assert_eq!(err.reason, Reason::JwtMalformed);
}

#[test]
fn the_leeway_tolerates_clock_skew_and_no_more() {
    let signer = Signer::es256("k1");
    let b = bundles(&[("example.org", &[&signer])]);
    let expired_10s_ago = signer.token(&claims(SUB, AUD, -10));
    let expired_40s_ago = signer.token(&claims(SUB, AUD, -40));
    let now = SystemTime::now();
    assert!(
        verifier(30)
            .verify_uncached(&expired_10s_ago, &b, now)
            .is_ok()
    );
    assert_eq!(
        verifier(30)
            .verify_uncached(&expired_40s_ago, &b, now)
            .unwrap_err()
            .reason,
        Reason::JwtExpired
    );
    assert_eq!(
        verifier(0)
            .verify_uncached(&expired_10s_ago, &b, now)
            .unwrap_err()
            .reason,
        Reason::JwtExpired
    );
    let starts_in_10s =
        signer.token(&json!({"sub": SUB, "aud": AUD, "exp": epoch(600), "nbf": epoch(10)}));
    assert!(
        verifier(30)
            .verify_uncached(&starts_in_10s, &b, now)
            .is_ok()
    );
    assert_eq!(
        verifier(0)
            .verify_uncached(&starts_in_10s, &b, now)
            .unwrap_err()
            .reason,
        Reason::JwtNotYetValid
    );
}

#[test]
fn a_key_of_one_trust_domain_never_vouches_for_another() {
    let example = Signer::es256("shared-kid");
    let partner = Signer::es256("partner-kid");
    let b = bundles(&[("example.org", &[&example]), ("partner.org", &[&partner])]);
    // example.org's key signs a token claiming a partner.org identity.
    let cross = example.token(&claims("spiffe://partner.org/ns/x", AUD, 300));
    assert_eq!(reason(&cross, &b), Reason::JwtUnknownKey);
    // Even when partner.org has a key with the same kid, the signature is
    // checked with partner.org's key only.
    let collider = Signer::es256("shared-kid");
    let b = bundles(&[("example.org", &[&example]), ("partner.org", &[&collider])]);
    assert_eq!(reason(&cross, &b), Reason::JwtSignature);
    let own = collider.token(&claims("spiffe://partner.org/ns/x", AUD, 300));
    assert!(
        verifier(30)
            .verify_uncached(&own, &b, SystemTime::now())
            .is_ok()
    );
}

#[test]
fn verdicts_agree_with_the_spiffe_crate() {
    // Tokens well inside or outside their validity, so that leeway (which
    // the spiffe crate lacks) plays no part.
    let signer = Signer::es256("k1");
    let rsa = Signer::rsa("k2", "RS256");
    let b = bundles(&[("example.org", &[&signer, &rsa])]);
    let mut jwt_bundle = spiffe::JwtBundle::new(spiffe::TrustDomain::new("example.org").unwrap());
    jwt_bundle
        .add_jwk_authority_json(signer.jwk.to_string().as_bytes())
        .unwrap();
    jwt_bundle
        .add_jwk_authority_json(rsa.jwk.to_string().as_bytes())
        .unwrap();
    let mut set = spiffe::JwtBundleSet::new();
    set.add_bundle(jwt_bundle);
    let tokens = [
        signer.token(&claims(SUB, AUD, 300)),
        rsa.token(&claims(SUB, AUD, 300)),
        signer.token(&claims(SUB, AUD, -3600)),
        signer.token(&claims(SUB, "billing", 300)),
        signer.token_with_header(
            &json!({"alg": "ES256", "kid": "k9"}),
            &claims(SUB, AUD, 300),
        ),
        signer.token_with_header(
            &json!({"alg": "HS256", "kid": "k1"}),
            &claims(SUB, AUD, 300),
        ),
        signer.token(&claims("spiffe://elsewhere.org/a", AUD, 300)),
        signer.token(&claims("spiffe://example.org", AUD, 300)),
        "a.b.c".to_owned(),
    ];
    for token in &tokens {
        let ours = verifier(0)
            .verify_uncached(token, &b, SystemTime::now())
            .is_ok();
        let theirs = spiffe::JwtSvid::parse_and_validate(token, &set, &[AUD]).is_ok();
        assert_eq!(ours, theirs, "{token}");
    }
}

#[test]
fn a_sub_without_a_path_is_accepted_as_the_jwt_svid_spec_and_go_spiffe_do() {
    // JWT-SVID spec 3.1 asks only that `sub` be a SPIFFE ID; unlike the
    // X509-SVID spec (3.1, 5.2) it sets no non-root path rule, and
    // go-spiffe's jwtsvid and the spiffe crate accept such a token (the
    // agreement test above includes one). Rules see an empty token.path.
    let signer = Signer::es256("k1");
    let b = bundles(&[("example.org", &[&signer])]);
    let token = signer.token(&claims("spiffe://example.org", AUD, 300));
    let svid = verifier(0)
        .verify_uncached(&token, &b, SystemTime::now())
        .unwrap()
        .0;
    assert_eq!(svid.id.as_str(), "spiffe://example.org");
    assert_eq!(svid.id.path(), "");
}

#[test]
fn cached_tokens_never_outlive_their_bundle_or_expiry() {
    let old = Signer::es256("k1");
    let rotated = Signer::es256("k2");
    let token = old.token(&claims(SUB, AUD, 60));
    let v = verifier(0);
    let before = bundles(&[("example.org", &[&old])]);
    let now = SystemTime::now();
    assert!(v.verify(&token, &before, now).is_ok());
    assert!(v.verify(&token, &before, now).is_ok());
    let after = bundles(&[("example.org", &[&rotated])]);
    assert_eq!(
        v.verify(&token, &after, now).unwrap_err().reason,
        Reason::JwtUnknownKey
    );
    assert_eq!(
        v.verify(&token, &before, now + Duration::from_secs(120))
            .unwrap_err()
            .reason,
        Reason::JwtExpired
    );
}

#[test]
fn a_pending_trust_domain_is_unavailable_not_unknown() {
    let signer = Signer::es256("k1");
    let b = TrustBundles::new(HashMap::new(), ["example.org".to_owned()].into());
    let err = verifier(30)
        .verify_uncached(&signer.token(&claims(SUB, AUD, 300)), &b, SystemTime::now())
        .unwrap_err();
    assert_eq!(err.reason, Reason::BundleUnavailable);
}

#[test]
fn tokens_are_read_from_bearer_authorization_or_a_dedicated_header() {
    assert_eq!(
        token_in_header("authorization", "Bearer a.b.c").unwrap(),
        Some("a.b.c")
    );
    assert_eq!(
        token_in_header("authorization", "bearer  a.b.c ").unwrap(),
        Some("a.b.c")
    );
    assert_eq!(
        token_in_header("authorization", "Basic dXNlcjpwdw==").unwrap(),
        None
    );
    assert_eq!(
        token_in_header("x-jwt-svid", "a.b.c").unwrap(),
        Some("a.b.c")
    );
    assert_eq!(
        token_in_header("x-jwt-svid", "Bearer a.b.c").unwrap(),
        Some("a.b.c")
    );
    for bad in ["Bearer ", "Bearer a.b.c,d.e.f", "Bearer a.b.c d.e.f"] {
        assert_eq!(
            token_in_header("authorization", bad).unwrap_err().reason,
            Reason::JwtMalformed,
            "{bad}"
        );
    }
}
