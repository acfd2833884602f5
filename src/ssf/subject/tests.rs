use serde_json::{Value, json};

use super::*;

fn subjects() -> Subjects {
    let specs: Vec<SubjectSpec> = serde_json::from_value(json!([
        {"subject": {"format": "iss_sub", "iss": "https://idp.example.com/", "sub": "exporter-bot"},
         "spiffe_id": "spiffe://prod.acme.io/ns/batch/sa/exporter"},
        {"subject": {"format": "opaque", "id": "ci-runner-42"},
         "spiffe_id_prefix": "spiffe://prod.acme.io/ns/ci/"},
        {"subject": {"format": "email", "email": "Bot@Example.com"},
         "spiffe_id": "spiffe://prod.acme.io/ns/mail/sa/bot"},
    ]))
    .unwrap();
    Subjects::new(&specs).unwrap()
}

fn resolve(subject: Value) -> Result<Vec<Target>, SubjectError> {
    subjects().resolve(&subject)
}

#[test]
fn a_spiffe_uri_names_itself_and_the_table_maps_the_rest() {
    assert_eq!(
        resolve(json!({"format": "uri", "uri": "spiffe://prod.acme.io/ns/pay/sa/api"})),
        Ok(vec![Target::Id(
            "spiffe://prod.acme.io/ns/pay/sa/api".into()
        )])
    );
    assert_eq!(
        resolve(
            json!({"format": "iss_sub", "iss": "https://idp.example.com/", "sub": "exporter-bot"})
        ),
        Ok(vec![Target::Id(
            "spiffe://prod.acme.io/ns/batch/sa/exporter".into()
        )])
    );
    assert_eq!(
        resolve(json!({"format": "opaque", "id": "ci-runner-42"})),
        Ok(vec![Target::Prefix("spiffe://prod.acme.io/ns/ci".into())])
    );
    // Email addresses compare without case.
    assert_eq!(
        resolve(json!({"format": "email", "email": "bot@example.COM"})),
        Ok(vec![Target::Id(
            "spiffe://prod.acme.io/ns/mail/sa/bot".into()
        )])
    );
    assert_eq!(
        resolve(json!({"format": "jwt_id", "iss": "https://idp.example.com/", "jti": "t-1"})),
        Ok(vec![Target::JwtId("t-1".into())])
    );
}

#[test]
fn unknown_subjects_are_unmapped_and_broken_ones_malformed() {
    for unmapped in [
        json!({"format": "iss_sub", "iss": "https://idp.example.com/", "sub": "someone"}),
        json!({"format": "uri", "uri": "https://example.com/app"}),
        json!({"format": "catalog_item", "catalog_id": "c1"}),
        json!({"format": "complex", "user": {"format": "opaque", "id": "nobody"}}),
    ] {
        assert!(
            matches!(resolve(unmapped.clone()), Err(SubjectError::Unmapped(_))),
            "{unmapped}"
        );
    }
    for broken in [
        json!("spiffe://prod.acme.io/x"),
        json!({"uri": "spiffe://prod.acme.io/x"}),
        json!({"format": "iss_sub", "iss": "https://idp.example.com/"}),
        json!({"format": "opaque", "id": ""}),
        json!({"format": "uri", "uri": "spiffe://Prod.acme.io/x"}),
        json!({"format": "aliases", "identifiers": []}),
        json!({"format": "aliases", "identifiers": [{"format": "aliases", "identifiers": []}]}),
        json!({"format": "complex", "user": "jane"}),
    ] {
        assert!(
            matches!(resolve(broken.clone()), Err(SubjectError::Malformed(_))),
            "{broken}"
        );
    }
}

#[test]
fn aliases_and_complex_subjects_name_what_their_members_name() {
    let aliases = json!({"format": "aliases", "identifiers": [
        {"format": "opaque", "id": "unknown"},
        {"format": "iss_sub", "iss": "https://idp.example.com/", "sub": "exporter-bot"},
        {"format": "uri", "uri": "spiffe://prod.acme.io/ns/batch/sa/exporter"},
    ]});
    assert_eq!(
        resolve(aliases),
        Ok(vec![Target::Id(
            "spiffe://prod.acme.io/ns/batch/sa/exporter".into()
        )])
    );
    let complex = json!({"format": "complex",
        "user": {"format": "opaque", "id": "ci-runner-42"},
        "session": {"format": "opaque", "id": "s-77"},
        "application": {"format": "uri", "uri": "spiffe://prod.acme.io/ns/ci/sa/deployer"}});
    let mut targets = resolve(complex).unwrap();
    targets.sort_by_key(Target::describe);
    assert_eq!(
        targets,
        vec![
            Target::Prefix("spiffe://prod.acme.io/ns/ci".into()),
            Target::Id("spiffe://prod.acme.io/ns/ci/sa/deployer".into()),
        ]
    );
}

#[test]
fn the_table_refuses_bad_rows_naming_each() {
    let specs: Vec<SubjectSpec> = serde_json::from_value(json!([
        {"subject": {"format": "opaque", "id": "a"}, "spiffe_id": "not-a-spiffe-id"},
        {"subject": {"format": "opaque", "id": "b"}},
        {"subject": {"format": "opaque", "id": "c"}, "spiffe_id": "spiffe://td/x"},
        {"subject": {"format": "opaque", "id": "c"}, "spiffe_id": "spiffe://td/y"},
        {"subject": {"format": "jwt_id", "iss": "i", "jti": "j"}, "spiffe_id": "spiffe://td/z"},
    ]))
    .unwrap();
    let error = Subjects::new(&specs).unwrap_err();
    for n in ["subject 1:", "subject 2:", "subject 4:", "subject 5:"] {
        assert!(error.contains(n), "{n} in {error}");
    }
    assert!(!error.contains("subject 3:"), "{error}");
}
