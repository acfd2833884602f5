use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};

use super::*;
use crate::ssf::set::{ErrorCode, Event, VerifiedSet};
use crate::ssf::subject::SubjectSpec;

const API: &str = "spiffe://prod.acme.io/ns/pay/sa/api";

fn set(subject: Value, kind: &str, payload: Value) -> VerifiedSet {
    VerifiedSet {
        issuer: "https://idp.example.com/".into(),
        jti: "j-1".into(),
        issued_at: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        txn: None,
        subject: Some(subject),
        events: vec![Event {
            kind: kind.into(),
            payload: payload.as_object().unwrap().clone(),
        }],
        digest: [0; 32],
    }
}

fn uri() -> Value {
    json!({"format": "uri", "uri": API})
}

fn subjects() -> Subjects {
    let specs: Vec<SubjectSpec> = serde_json::from_value(json!([
        {"subject": {"format": "opaque", "id": "ops"}, "spiffe_id_prefix": "spiffe://prod.acme.io/ns/ops"}
    ]))
    .unwrap();
    Subjects::new(&specs).unwrap()
}

fn outcome(set: &VerifiedSet) -> Outcome {
    let mut outcomes = Mapping::default().apply(set, &subjects()).unwrap();
    assert_eq!(outcomes.len(), 1);
    outcomes.remove(0)
}

fn actions(set: &VerifiedSet) -> Vec<Action> {
    match outcome(set) {
        Outcome::Actions(_, actions) => actions,
        other => panic!("expected actions, got {other:?}"),
    }
}

fn refused(set: &VerifiedSet) -> ErrorCode {
    Mapping::default().apply(set, &subjects()).unwrap_err().code
}

#[test]
fn risc_account_events_revoke_and_restore_the_subject() {
    for name in [
        "credential-compromise",
        "account-disabled",
        "account-purged",
    ] {
        let kind = format!("{RISC}{name}");
        let got = actions(&set(
            uri(),
            &kind,
            json!({"credential_type": "x509", "reason_admin": {"en": "key in a CI log"}}),
        ));
        assert_eq!(
            got,
            vec![Action::Revoke {
                entry: Revocation::SpiffeId(API.into()),
                reason: format!("{name}: key in a CI log"),
            }],
            "{name}"
        );
    }
    let got = actions(&set(
        json!({"format": "opaque", "id": "ops"}),
        &format!("{RISC}account-enabled"),
        json!({}),
    ));
    assert_eq!(
        got,
        vec![Action::Unrevoke {
            entry: Revocation::SpiffeIdPrefix("spiffe://prod.acme.io/ns/ops".into())
        }]
    );
}

#[test]
fn caep_credential_change_revokes_the_certificate_or_token_it_names() {
    let kind = format!("{CAEP}credential-change");
    let x509 = json!({"credential_type": "x509", "change_type": "revoke",
        "x509_issuer": "CN=intermediate,O=acme", "x509_serial": "0a:1b:2c",
        "event_timestamp": 1_799_999_990});
    let got = outcome(&set(uri(), &kind, x509));
    let Outcome::Actions(provenance, revoked) = got else {
        panic!("{got:?}")
    };
    assert_eq!(
        provenance.at,
        UNIX_EPOCH + Duration::from_secs(1_799_999_990)
    );
    assert_eq!(provenance.jti, "j-1");
    assert_eq!(
        revoked,
        vec![Action::Revoke {
            entry: Revocation::X509Serial {
                serial: "0a:1b:2c".into(),
                issuer: "CN=intermediate,O=acme".into()
            },
            reason: "credential-change".into(),
        }]
    );
    let token = json!({"format": "jwt_id", "iss": "https://idp.example.com/", "jti": "tok-9"});
    let got = actions(&set(
        token,
        &kind,
        json!({"credential_type": "app", "change_type": "delete"}),
    ));
    assert_eq!(
        got,
        vec![Action::Revoke {
            entry: Revocation::JwtId("tok-9".into()),
            reason: "credential-change".into(),
        }]
    );
    // Creating or updating a credential revokes nothing; nor does a change
    // that names no certificate or token (the identity itself is not revoked).
    for payload in [
        json!({"credential_type": "x509", "change_type": "create"}),
        json!({"credential_type": "x509", "change_type": "revoke"}),
    ] {
        assert!(
            matches!(
                outcome(&set(uri(), &kind, payload.clone())),
                Outcome::Ignored(..)
            ),
            "{payload}"
        );
    }
    for payload in [
        json!({"credential_type": "x509"}),
        json!({"change_type": "revoke"}),
        json!({"credential_type": "x509", "change_type": "revoke", "x509_issuer": "CN=ca", "x509_serial": "12345z"}),
        json!({"credential_type": "x509", "change_type": "revoke", "x509_issuer": "not a dn", "x509_serial": "0a"}),
    ] {
        assert_eq!(
            refused(&set(uri(), &kind, payload.clone())),
            ErrorCode::InvalidRequest,
            "{payload}"
        );
    }
}

#[test]
fn session_events_revoke_tokens_never_whole_identities() {
    let kind = format!("{CAEP}session-revoked");
    let token = json!({"format": "jwt_id", "iss": "https://idp.example.com/", "jti": "tok-1"});
    assert_eq!(
        actions(&set(token, &kind, json!({}))),
        vec![Action::Revoke {
            entry: Revocation::JwtId("tok-1".into()),
            reason: "session-revoked".into()
        }]
    );
    let Outcome::Ignored(_, why) = outcome(&set(uri(), &kind, json!({}))) else {
        panic!()
    };
    assert!(why.contains("jwt_id"), "{why}");
}

#[test]
fn risk_level_changes_set_the_level_and_bad_levels_are_refused() {
    let kind = format!("{CAEP}risk-level-change");
    let got = actions(&set(
        uri(),
        &kind,
        json!({"current_level": "HIGH", "previous_level": "LOW", "principal": "USER",
               "risk_reason": "PASSWORD_FOUND_IN_DATA_BREACH"}),
    ));
    assert_eq!(
        got,
        vec![Action::Risk {
            target: Target::Id(API.into()),
            level: RiskLevel::High,
            reason: Some("PASSWORD_FOUND_IN_DATA_BREACH".into()),
        }]
    );
    for payload in [
        json!({}),
        json!({"current_level": "SEVERE"}),
        json!({"current_level": 3}),
    ] {
        assert_eq!(
            refused(&set(uri(), &kind, payload.clone())),
            ErrorCode::InvalidRequest,
            "{payload}"
        );
    }
}

#[test]
fn unknown_events_and_unmapped_subjects_are_accepted_and_change_nothing() {
    let unknown = set(
        uri(),
        "https://schemas.openid.net/secevent/ssf/event-type/verification",
        json!({"state": "abc"}),
    );
    assert!(matches!(outcome(&unknown), Outcome::Ignored(..)));
    let unmapped = set(
        json!({"format": "opaque", "id": "stranger"}),
        &format!("{RISC}account-disabled"),
        json!({}),
    );
    let Outcome::Ignored(_, why) = outcome(&unmapped) else {
        panic!()
    };
    assert!(why.contains("stranger"), "{why}");
    // A broken subject is a broken SET.
    let broken = set(
        json!({"format": "opaque"}),
        &format!("{RISC}account-disabled"),
        json!({}),
    );
    assert_eq!(refused(&broken), ErrorCode::InvalidRequest);
}

#[test]
fn the_config_overrides_the_defaults() {
    let overrides: HashMap<String, Handling> = serde_json::from_value(json!({
        "risc/account-disabled": "ignore",
        "https://example.com/event-type/quarantined": "revoke",
    }))
    .unwrap();
    let mapping = Mapping::new(&overrides).unwrap();
    assert_eq!(
        mapping.handling(&format!("{RISC}account-disabled")),
        Handling::Ignore
    );
    assert_eq!(
        mapping.handling(&format!("{RISC}account-purged")),
        Handling::Revoke
    );
    assert_eq!(
        mapping.handling("https://example.com/event-type/quarantined"),
        Handling::Revoke
    );
    let bad: HashMap<String, Handling> =
        serde_json::from_value(json!({"account-disabled": "revoke"})).unwrap();
    assert!(Mapping::new(&bad).unwrap_err().contains("account-disabled"));
}

#[test]
fn a_long_reason_is_bounded() {
    let kind = format!("{RISC}credential-compromise");
    let long = "x".repeat(5000);
    let got = actions(&set(
        uri(),
        &kind,
        json!({"credential_type": "x509", "reason_admin": long}),
    ));
    let Action::Revoke { reason, .. } = &got[0] else {
        panic!()
    };
    assert!(reason.chars().count() < 300, "{}", reason.len());
}

#[test]
fn an_event_time_after_the_sets_own_iat_counts_as_the_iat() {
    let kind = format!("{RISC}account-enabled");
    let future = set(
        uri(),
        &kind,
        json!({"event_timestamp": 253_402_300_000_i64}),
    );
    let Outcome::Actions(provenance, _) = outcome(&future) else {
        panic!()
    };
    assert_eq!(provenance.at, future.issued_at);
}

#[test]
fn a_transmitters_text_reaches_entries_without_control_characters() {
    let kind = format!("{RISC}credential-compromise");
    let mut with_controls = set(
        uri(),
        &kind,
        json!({"credential_type": "x509", "reason_admin": "a\u{7f}b\u{81}c\u{fffe}\nd"}),
    );
    with_controls.jti = "z\u{7f}1".into();
    let Outcome::Actions(provenance, actions) = outcome(&with_controls) else {
        panic!()
    };
    assert_eq!(provenance.jti, "z?1");
    let Action::Revoke { reason, .. } = &actions[0] else {
        panic!()
    };
    assert_eq!(reason, "credential-compromise: a?b?c??d");
}

#[test]
fn an_assurance_level_becomes_a_risk_level_through_the_table_and_an_unknown_one_is_not_guessed() {
    let kind = format!("{CAEP}assurance-level-change");
    let aal = |level: &str, extra: Value| {
        let mut payload = json!({"namespace": "NIST-AAL", "current_level": level});
        for (k, v) in extra.as_object().unwrap() {
            payload[k] = v.clone();
        }
        set(uri(), &kind, payload)
    };
    // CAEP 1.0's own example, a decrease: one factor is high risk.
    let decrease = aal(
        "nist-aal1",
        json!({"previous_level": "nist-aal2", "change_direction": "decrease"}),
    );
    let Outcome::Actions(provenance, actions) = outcome(&decrease) else {
        panic!("expected actions");
    };
    assert_eq!(provenance.event, kind);
    assert_eq!(provenance.jti, "j-1");
    assert_eq!(
        actions,
        [Action::Risk {
            target: Target::Id(API.into()),
            level: RiskLevel::High,
            reason: Some("assurance NIST-AAL nist-aal1 (decrease from nist-aal2)".into()),
        }]
    );
    for (level, risk) in [
        ("NIST-AAL2", RiskLevel::Medium),
        ("nist-aal3", RiskLevel::Low),
    ] {
        match &actions_of(&aal(level, json!({})))[..] {
            [Action::Risk { level: got, .. }] => assert_eq!(*got, risk, "{level}"),
            other => panic!("{level}: {other:?}"),
        }
    }
    // A level or namespace the table does not name changes nothing, and
    // says why.
    for unknown in [
        aal("aal2", json!({})),
        set(
            uri(),
            &kind,
            json!({"namespace": "RFC8176", "current_level": "mfa"}),
        ),
    ] {
        match outcome(&unknown) {
            Outcome::Ignored(_, why) => {
                assert!(why.contains("not in assurance_levels"), "{why}")
            }
            other => panic!("expected ignored, got {other:?}"),
        }
    }
    // An event breaking CAEP §3.4 refuses the SET.
    for broken in [
        set(uri(), &kind, json!({"current_level": "nist-aal1"})),
        set(uri(), &kind, json!({"namespace": "NIST-AAL"})),
        aal("nist-aal1", json!({"change_direction": "sideways"})),
    ] {
        assert_eq!(refused(&broken), ErrorCode::InvalidRequest);
    }
    // The config's table replaces a namespace's defaults and adds others.
    let table: std::collections::BTreeMap<String, std::collections::BTreeMap<String, RiskLevel>> =
        serde_json::from_value(json!({
            "nist-aal": {"nist-aal1": "medium"},
            "https://acr.example.com/": {"gold": "low"}
        }))
        .unwrap();
    let mapping = Mapping::default().with_assurance(Assurance::new(&table).unwrap());
    let outcomes = mapping
        .apply(&aal("nist-aal1", json!({})), &subjects())
        .unwrap();
    assert!(
        matches!(&outcomes[..], [Outcome::Actions(_, a)] if matches!(a[..], [Action::Risk { level: RiskLevel::Medium, .. }])),
        "{outcomes:?}"
    );
    let outcomes = mapping
        .apply(&aal("nist-aal2", json!({})), &subjects())
        .unwrap();
    assert!(
        matches!(&outcomes[..], [Outcome::Ignored(..)]),
        "{outcomes:?}"
    );
    let gold = set(
        uri(),
        &kind,
        json!({"namespace": "https://acr.example.com/", "current_level": "gold"}),
    );
    let outcomes = mapping.apply(&gold, &subjects()).unwrap();
    assert!(
        matches!(&outcomes[..], [Outcome::Actions(..)]),
        "{outcomes:?}"
    );
    // Names equal but for case are one name: refused at load.
    let twice: std::collections::BTreeMap<String, std::collections::BTreeMap<String, RiskLevel>> =
        serde_json::from_value(json!({"X": {"a": "low", "A": "high"}, "x": {}})).unwrap();
    let problem = Assurance::new(&twice).unwrap_err();
    assert!(
        problem.contains("one namespace") && problem.contains("given twice"),
        "{problem}"
    );
}

fn actions_of(set: &VerifiedSet) -> Vec<Action> {
    actions(set)
}
