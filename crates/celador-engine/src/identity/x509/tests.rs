#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use crate::testing::pki;

use std::path::Path;

use pki::{Ca, url_encode, xfcc_with_chain};
use rcgen::KeyUsagePurpose;

use super::*;
use crate::identity::bundle::parse_pem;
use std::time::Duration;

fn bundles(domains: &[(&str, &Ca)]) -> TrustBundles {
    TrustBundles::from_domains(domains.iter().map(|(td, ca)| {
        (
            (*td).to_owned(),
            parse_pem(ca.pem.as_bytes(), Path::new("test.pem")).unwrap(),
        )
    }))
}

fn verify(cert: &str, xfcc: Option<&str>, b: &TrustBundles) -> Result<X509Svid, IdentityError> {
    X509Verifier::new(CacheSettings::default())
        .verify_uncached(cert, xfcc, b, SystemTime::now())
        .map(|(svid, _)| svid)
}

fn reason_of(result: Result<X509Svid, IdentityError>) -> Reason {
    result.expect_err("verification should fail").reason
}

#[test]
fn a_valid_svid_is_verified_against_its_trust_domain() {
    let ca = Ca::root("example.org root");
    let b = bundles(&[("example.org", &ca)]);
    let leaf = ca.svid("spiffe://example.org/ns/payments/sa/api");
    let svid = verify(&leaf.envoy_encoded(), None, &b).unwrap();
    assert_eq!(svid.id.as_str(), "spiffe://example.org/ns/payments/sa/api");
    assert!(svid.not_after > SystemTime::now());
    assert_eq!(svid.chain_not_after, svid.not_after);
}

#[test]
fn a_chain_through_an_intermediate_from_xfcc_verifies() {
    let root = Ca::root("root");
    let intermediate = root.intermediate("intermediate");
    let b = bundles(&[("example.org", &root)]);
    let leaf = intermediate.svid("spiffe://example.org/ns/batch/sa/exporter");
    // Without the intermediate there is no path to the root.
    assert_eq!(
        reason_of(verify(&leaf.envoy_encoded(), None, &b)),
        Reason::SvidUntrusted
    );
    let xfcc = xfcc_with_chain(&leaf, &[&intermediate]);
    let svid = verify(&leaf.envoy_encoded(), Some(&xfcc), &b).unwrap();
    assert_eq!(svid.id.path(), "/ns/batch/sa/exporter");
}

#[test]
fn intermediates_of_another_leafs_xfcc_element_are_not_used() {
    let root = Ca::root("root");
    let intermediate = root.intermediate("intermediate");
    let b = bundles(&[("example.org", &root)]);
    let leaf = intermediate.svid("spiffe://example.org/a");
    let other = intermediate.svid("spiffe://example.org/b");
    let xfcc = xfcc_with_chain(&other, &[&intermediate]);
    assert_eq!(
        reason_of(verify(&leaf.envoy_encoded(), Some(&xfcc), &b)),
        Reason::SvidUntrusted
    );
}

#[test]
fn a_missing_certificate_is_svid_missing() {
    let ca = Ca::root("root");
    let v = X509Verifier::new(CacheSettings::default());
    let err = v
        .verify(
            "",
            None,
            &bundles(&[("example.org", &ca)]),
            SystemTime::now(),
        )
        .unwrap_err();
    assert_eq!(err.reason, Reason::SvidMissing);
}

#[test]
fn expired_and_not_yet_valid_leaves_are_denied_with_their_reasons() {
    let ca = Ca::root("root");
    let b = bundles(&[("example.org", &ca)]);
    let expired = ca
        .leaf()
        .uri("spiffe://example.org/a")
        .valid_secs(-7200, -60)
        .build();
    let future = ca
        .leaf()
        .uri("spiffe://example.org/a")
        .valid_secs(3600, 7200)
        .build();
    assert_eq!(
        reason_of(verify(&expired.envoy_encoded(), None, &b)),
        Reason::SvidExpired
    );
    assert_eq!(
        reason_of(verify(&future.envoy_encoded(), None, &b)),
        Reason::SvidNotYetValid
    );
}

#[test]
fn a_leaf_of_another_trust_domains_ca_is_untrusted() {
    let example = Ca::root("example.org");
    let other = Ca::root("other.org");
    let b = bundles(&[("example.org", &example), ("other.org", &other)]);
    // Signed by other.org's CA, claiming an example.org ID.
    let forged = other.svid("spiffe://example.org/ns/payments/sa/api");
    let err = verify(&forged.envoy_encoded(), None, &b).unwrap_err();
    assert_eq!(err.reason, Reason::SvidUntrusted);
    assert!(err.detail.contains("'example.org'"), "{}", err.detail);
    // The same CA is fine for its own trust domain.
    let own = other.svid("spiffe://other.org/ns/x/sa/y");
    assert!(verify(&own.envoy_encoded(), None, &b).is_ok());
}

#[test]
fn an_unconfigured_trust_domain_is_trust_domain_unknown() {
    let ca = Ca::root("root");
    let b = bundles(&[("example.org", &ca)]);
    let leaf = ca.svid("spiffe://elsewhere.org/a");
    assert_eq!(
        reason_of(verify(&leaf.envoy_encoded(), None, &b)),
        Reason::TrustDomainUnknown
    );
}

#[test]
fn a_ca_certificate_as_leaf_is_refused() {
    let ca = Ca::root("root");
    let b = bundles(&[("example.org", &ca)]);
    let leaf = ca.leaf().uri("spiffe://example.org/a").ca_flag().build();
    assert_eq!(
        reason_of(verify(&leaf.envoy_encoded(), None, &b)),
        Reason::SvidCa
    );
}

#[test]
fn key_usage_must_have_digital_signature_and_no_signing_bits() {
    let ca = Ca::root("root");
    let b = bundles(&[("example.org", &ca)]);
    let cases = [
        vec![],
        vec![KeyUsagePurpose::KeyEncipherment],
        vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
        ],
        vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign],
    ];
    for usages in cases {
        let leaf = ca
            .leaf()
            .uri("spiffe://example.org/a")
            .key_usages(usages.clone())
            .build();
        assert_eq!(
            reason_of(verify(&leaf.envoy_encoded(), None, &b)),
            Reason::SvidKeyUsage,
            "{usages:?}"
        );
    }
}

#[test]
fn exactly_one_uri_san_is_required() {
    let ca = Ca::root("root");
    let b = bundles(&[("example.org", &ca)]);
    let none = ca.leaf().dns("api.example.org").build();
    let two = ca
        .leaf()
        .uri("spiffe://example.org/a")
        .uri("spiffe://example.org/b")
        .build();
    let err = verify(&none.envoy_encoded(), None, &b).unwrap_err();
    assert_eq!(err.reason, Reason::SvidUriSan);
    let err = verify(&two.envoy_encoded(), None, &b).unwrap_err();
    assert_eq!(err.reason, Reason::SvidUriSan);
    assert!(err.detail.contains("2 URI SANs"), "{}", err.detail);
}

#[test]
fn dns_sans_and_common_names_never_stand_in_for_a_spiffe_id() {
    let ca = Ca::root("root");
    let b = bundles(&[("example.org", &ca)]);
    let leaf = ca
        .leaf()
        .dns("spiffe://example.org/ns/payments/sa/api")
        .common_name("spiffe://example.org/ns/payments/sa/api")
        .build();
    assert_eq!(
        reason_of(verify(&leaf.envoy_encoded(), None, &b)),
        Reason::SvidUriSan
    );
}

#[test]
fn invalid_spiffe_ids_are_refused_not_normalised() {
    let ca = Ca::root("root");
    let b = bundles(&[("example.org", &ca)]);
    for id in [
        "spiffe://Example.org/a",
        "spiffe://example.org/a/../b",
        "spiffe://example.org/a?x=1",
        "spiffe://example.org:443/a",
        "https://example.org/a",
        // A leaf names a workload: a trust domain's own ID has no path.
        "spiffe://example.org",
        "spiffe://example.org/",
    ] {
        let leaf = ca.svid(id);
        assert_eq!(
            reason_of(verify(&leaf.envoy_encoded(), None, &b)),
            Reason::SvidInvalidId,
            "{id}"
        );
    }
}

#[test]
fn garbage_and_oversized_certificates_are_malformed_never_a_panic() {
    let ca = Ca::root("root");
    let b = bundles(&[("example.org", &ca)]);
    let leaf = ca.svid("spiffe://example.org/a");
    let truncated_pem = leaf.pem.replace("-----END CERTIFICATE-----", "");
    let mut bad_der = leaf.der.clone();
    bad_der.truncate(bad_der.len() / 2);
    let bad_der_pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64_lines(&bad_der)
    );
    let two = format!("{}{}", leaf.pem, leaf.pem);
    let inputs = [
        "garbage".to_owned(),
        "%ZZ".to_owned(),
        url_encode(&truncated_pem),
        url_encode(&bad_der_pem),
        url_encode("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n"),
        url_encode(&two),
        "\u{0}\u{1}\u{2}".to_owned(),
    ];
    for input in &inputs {
        assert_eq!(
            reason_of(verify(input, None, &b)),
            Reason::SvidMalformed,
            "{input:.60}"
        );
    }
    let v = X509Verifier::new(CacheSettings::default());
    let huge = "A".repeat(MAX_CERTIFICATE_BYTES + 1);
    let err = v.verify(&huge, None, &b, SystemTime::now()).unwrap_err();
    assert_eq!(err.reason, Reason::SvidMalformed);
}

#[test]
fn cached_verdicts_are_per_bundle_generation() {
    let old_root = Ca::root("old");
    let new_root = Ca::root("new");
    let leaf = old_root.svid("spiffe://example.org/a");
    let v = X509Verifier::new(CacheSettings::default());
    let old = bundles(&[("example.org", &old_root)]);
    let now = SystemTime::now();
    assert!(v.verify(&leaf.envoy_encoded(), None, &old, now).is_ok());
    assert!(v.verify(&leaf.envoy_encoded(), None, &old, now).is_ok());
    // After rotation to a bundle without the old root, the cached verdict
    // must not survive.
    let rotated = bundles(&[("example.org", &new_root)]);
    let err = v
        .verify(&leaf.envoy_encoded(), None, &rotated, now)
        .unwrap_err();
    assert_eq!(err.reason, Reason::SvidUntrusted);
}

#[test]
fn cached_verdicts_never_outlive_the_certificate() {
    let root = Ca::root("root");
    let leaf = root
        .leaf()
        .uri("spiffe://example.org/a")
        .valid_secs(-60, 60)
        .build();
    let v = X509Verifier::new(CacheSettings::default());
    let b = bundles(&[("example.org", &root)]);
    let now = SystemTime::now();
    assert!(v.verify(&leaf.envoy_encoded(), None, &b, now).is_ok());
    let later = now + Duration::from_secs(120);
    let err = v
        .verify(&leaf.envoy_encoded(), None, &b, later)
        .unwrap_err();
    assert_eq!(err.reason, Reason::SvidExpired);
}

#[test]
fn a_cached_leaf_expires_with_its_intermediate() {
    let root = Ca::root("root");
    // The intermediate expires in two minutes, the leaf in an hour.
    let intermediate = root.intermediate_valid_secs("intermediate", -60, 120);
    let leaf = intermediate.svid("spiffe://example.org/a");
    let b = bundles(&[("example.org", &root)]);
    let xfcc = xfcc_with_chain(&leaf, &[&intermediate]);
    let svid = verify(&leaf.envoy_encoded(), Some(&xfcc), &b).unwrap();
    assert!(svid.chain_not_after < svid.not_after);
    assert!(svid.chain_not_after <= SystemTime::now() + Duration::from_secs(121));

    let v = X509Verifier::new(CacheSettings::default());
    let now = SystemTime::now();
    assert!(
        v.verify(&leaf.envoy_encoded(), Some(&xfcc), &b, now)
            .is_ok()
    );
    // Past the intermediate's expiry the cached verdict is not served: the
    // chain is checked again, and fails.
    let later = now + Duration::from_secs(300);
    let err = v
        .verify(&leaf.envoy_encoded(), Some(&xfcc), &b, later)
        .unwrap_err();
    assert_eq!(err.reason, Reason::SvidExpired);
}

fn base64_lines(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn a_root_outside_its_own_validity_window_vouches_for_nothing() {
    let expired = Ca::root_valid_secs("expired root", -86_400 * 30, -86_400);
    let current = Ca::root("current root");
    let id = "spiffe://example.org/ns/a/sa/b";
    // Only the expired root: the leaf it signed is untrusted, and says why.
    let only_expired = bundles(&[("example.org", &expired)]);
    let err = verify(&expired.svid(id).envoy_encoded(), None, &only_expired).unwrap_err();
    assert_eq!(err.reason, Reason::SvidUntrusted);
    assert!(err.detail.contains("valid now"), "{}", err.detail);
    let not_yet = Ca::root_valid_secs("future root", 86_400, 86_400 * 30);
    let only_future = bundles(&[("example.org", &not_yet)]);
    assert_eq!(
        reason_of(verify(
            &not_yet.svid(id).envoy_encoded(),
            None,
            &only_future
        )),
        Reason::SvidUntrusted
    );
    // Both roots in one bundle: the current one still verifies its leaves,
    // the expired one still vouches for nothing.
    let pem = format!("{}{}", expired.pem, current.pem);
    let both = TrustBundles::from_domains([(
        "example.org".to_owned(),
        parse_pem(pem.as_bytes(), Path::new("both.pem")).unwrap(),
    )]);
    assert!(verify(&current.svid(id).envoy_encoded(), None, &both).is_ok());
    assert_eq!(
        reason_of(verify(&expired.svid(id).envoy_encoded(), None, &both)),
        Reason::SvidUntrusted
    );
    let bundle = match both.lookup("example.org") {
        crate::identity::bundle::Lookup::Found(b) => b,
        _ => unreachable!(),
    };
    let invalid = crate::identity::bundle::authorities_not_valid_at(
        bundle.x509_authorities(),
        SystemTime::now(),
    );
    assert_eq!(invalid.len(), 1, "{invalid:?}");
    assert!(invalid[0].starts_with("#1 (valid "), "{invalid:?}");
}

#[test]
fn an_intermediate_that_may_not_sign_certificates_breaks_the_chain() {
    let root = Ca::root("root");
    let b = bundles(&[("example.org", &root)]);
    for usages in [
        vec![KeyUsagePurpose::DigitalSignature],
        vec![KeyUsagePurpose::CrlSign],
    ] {
        let intermediate = root.intermediate_with_key_usages("no keyCertSign", usages);
        let leaf = intermediate.svid("spiffe://example.org/a");
        let xfcc = xfcc_with_chain(&leaf, &[&intermediate]);
        let err = verify(&leaf.envoy_encoded(), Some(&xfcc), &b).unwrap_err();
        assert_eq!(err.reason, Reason::SvidUntrusted, "{}", err.detail);
        assert!(err.detail.contains("keyCertSign"), "{}", err.detail);
    }
    let good = root.intermediate_with_key_usages("signs", vec![KeyUsagePurpose::KeyCertSign]);
    let leaf = good.svid("spiffe://example.org/a");
    let xfcc = xfcc_with_chain(&leaf, &[&good]);
    assert!(verify(&leaf.envoy_encoded(), Some(&xfcc), &b).is_ok());
}

#[test]
fn an_intermediate_that_does_not_parse_fails_the_verification() {
    let id = SpiffeId::parse("spiffe://example.org/a").unwrap();
    let err = check_signing_certificate(b"\x30\x03garbage", &id).unwrap_err();
    assert_eq!(err.reason, Reason::SvidUntrusted);
    assert!(err.detail.contains("cannot be parsed"), "{}", err.detail);
}

#[test]
fn a_verified_leaf_carries_the_facts_revocations_name_it_by() {
    let ca = Ca::root("example.org root");
    let b = bundles(&[("example.org", &ca)]);
    let leaf = ca.svid("spiffe://example.org/ns/payments/sa/api");
    let svid = verify(&leaf.envoy_encoded(), None, &b).unwrap();
    assert_eq!(svid.certificate.sha256, pki::sha256_hex(&leaf.der));
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf.der).unwrap();
    let serial = crate::identity::normalize_serial(&cert.raw_serial_as_string());
    assert_eq!(svid.certificate.serial, serial);
    assert!(!serial.starts_with('0') || serial == "0", "{serial}");
    assert_eq!(svid.certificate.issuer, "CN=example.org root");
}
