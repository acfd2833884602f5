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
