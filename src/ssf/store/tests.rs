use super::*;

#[test]
fn every_revocation_a_set_makes_is_one_the_replicas_load() {
    let kinds = [
        Revocation::SpiffeId("spiffe://example.org/ns/a/sa/b".into()),
        Revocation::SpiffeIdPrefix("spiffe://example.org/ns/a/".into()),
        Revocation::X509Serial {
            serial: "0a1b2c".into(),
            issuer: "CN=Example CA,O=Example".into(),
        },
        Revocation::JwtId("token-1".into()),
    ];
    let mut fields = Vec::new();
    for kind in &kinds {
        let mut entry = stored(kind);
        entry.reason = "compromised".into();
        let field = entry.field();
        let json = serde_json::to_string(&entry).unwrap();
        let back = check_revocation("{celador}:revocations", &field, &json)
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert_eq!(back, entry);
        fields.push(field);
    }
    assert_eq!(fields[2], "x509_serial:0a1b2c@CN=Example CA,O=Example");
    // A serial without its issuer is refused, as in a file.
    let lone =
        r#"{"x509_serial":"0a","reason":"r","by":"b","from":"f","at":"2026-01-01T00:00:00Z"}"#;
    assert!(check_revocation("k", "x509_serial:0a@", lone).is_err());
}

#[test]
fn every_risk_a_set_makes_is_one_the_replicas_load_lapsing_after_the_expiry() {
    use super::super::event::RiskLevel;
    use super::super::subject::Target;
    let provenance = Provenance {
        transmitter: "https://idp.example.com/".into(),
        event: "https://schemas.openid.net/secevent/caep/event-type/risk-level-change".into(),
        jti: "r-1".into(),
        at: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    };
    let day = Duration::from_secs(86_400);
    let reason = "impossible travel".to_owned();
    for target in [
        Target::Id("spiffe://example.org/ns/a/sa/b".into()),
        Target::Prefix("spiffe://example.org/ns/a".into()),
    ] {
        let (entry, json) = risk::stored_risk(
            "{celador}:risks",
            "host",
            &provenance,
            (&target, RiskLevel::High, Some(&reason)),
            day,
        )
        .unwrap()
        .unwrap();
        let back =
            crate::sources::fleet::risks::check_risk("{celador}:risks", &entry.field(), &json)
                .unwrap();
        assert_eq!(back, entry);
        assert_eq!(entry.lapses(), Some(provenance.at + day));
        assert_eq!(entry.since, "2027-01-15T08:00:00Z");
        assert_eq!(entry.source, "https://idp.example.com/");
    }
    // A token is no subject of a risk level.
    let token = Target::JwtId("t".into());
    let none = risk::stored_risk("k", "h", &provenance, (&token, RiskLevel::Low, None), day);
    assert!(none.unwrap().is_none());
}

#[test]
fn a_stored_revocation_names_its_set_and_one_without_it_still_loads() {
    use crate::engine::identity::{Identity, SpiffeId, X509Svid};
    let provenance = Provenance {
        transmitter: "https://idp.example.com/".into(),
        event: "https://schemas.openid.net/secevent/risc/event-type/credential-compromise".into(),
        jti: "c-1".into(),
        at: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    };
    let mut entry = stored(&Revocation::SpiffeId(
        "spiffe://example.org/ns/a/sa/b".into(),
    ));
    entry.reason = "credential-compromise".into();
    entry.set = Some(provenance.stored_set());
    let keys = Keys::new("celador");
    let json = serde_json::to_string(&entry).unwrap();
    assert!(
        json.contains(r#""set":{"source":"https://idp.example.com/","#),
        "{json}"
    );
    let back = check_revocation(&keys.revocations, &entry.field(), &json).unwrap();
    assert_eq!(back, entry);
    // As `celador revoke` and an older receiver write it: no `set`.
    let plain = r#"{"spiffe_id":"spiffe://example.org/ns/c/sa/d","reason":"by hand","by":"ops","from":"h","at":"2026-01-01T00:00:00Z"}"#;
    let plain = check_revocation(
        &keys.revocations,
        "spiffe_id:spiffe://example.org/ns/c/sa/d",
        plain,
    )
    .unwrap();
    assert_eq!(plain.set, None);
    // A malformed `set` refuses that entry, naming it.
    let bad = json.replace(r#""jti":"c-1""#, r#""jti":"""#);
    let e = check_revocation(&keys.revocations, &entry.field(), &bad).unwrap_err();
    assert!(e.contains("set.jti is empty"), "{e}");
    let unknown = json.replace(r#""jti":"c-1""#, r#""jti":"c-1","extra":1"#);
    assert!(check_revocation(&keys.revocations, &entry.field(), &unknown).is_err());
    // The sidecars' revocations carry it.
    let mut entries = entries::Entries::default();
    entries.revocations.insert(entry.field(), back);
    entries.revocations.insert(plain.field(), plain);
    let (revocations, _, _) = entries::governance(&keys, &entries, SystemTime::now()).unwrap();
    let caller = |id: &str| Identity {
        source: Some(std::sync::Arc::new(X509Svid {
            id: SpiffeId::parse(id).unwrap(),
            not_before: UNIX_EPOCH,
            not_after: UNIX_EPOCH,
            chain_not_after: UNIX_EPOCH,
            certificate: Default::default(),
        })),
        ..Identity::default()
    };
    let hit = revocations
        .check(&caller("spiffe://example.org/ns/a/sa/b"))
        .unwrap();
    let set = hit.set.unwrap();
    assert_eq!(
        (set.source.as_str(), set.event.as_str(), set.jti.as_str()),
        ("https://idp.example.com/", provenance.event.as_str(), "c-1")
    );
    let hit = revocations
        .check(&caller("spiffe://example.org/ns/c/sa/d"))
        .unwrap();
    assert_eq!(hit.set, None);
}
