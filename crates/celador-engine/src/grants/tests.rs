use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::*;
use crate::Reason;
use crate::attributes::Attributes;
use crate::identity::X509Svid;
use crate::workload::Workload;

const EXPORTER: &str = "spiffe://example.org/ns/batch/sa/exporter";

fn at(text: &str) -> SystemTime {
    crate::time::parse_rfc3339(text).unwrap()
}

fn grants(text: &str) -> Grants {
    Grants::parse(
        text,
        Path::new("grants.yaml"),
        DEFAULT_MAX_DURATION,
        at("2026-11-25T09:00:00Z"),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn identity(id: &str) -> Identity {
    Identity {
        source: Some(Arc::new(X509Svid {
            id: SpiffeId::parse(id).unwrap(),
            not_before: UNIX_EPOCH,
            not_after: at("2030-01-01T00:00:00Z"),
            chain_not_after: at("2030-01-01T00:00:00Z"),
            certificate: Default::default(),
        })),
        ..Identity::default()
    }
}

fn attrs<'a>(
    method: &'a str,
    path: &'a str,
    context: &'a HashMap<String, String>,
) -> Attributes<'a> {
    Attributes {
        source_certificate: "",
        source_address: "",
        source_port: 0,
        destination_principal: "",
        destination_address: "",
        destination_port: 0,
        stream_id: "",
        method,
        path: path.into(),
        raw_path: path,
        path_ambiguity: None,
        query: "",
        host: "",
        scheme: "",
        protocol: "",
        headers: std::borrow::Cow::Owned(HashMap::new()),
        size: -1,
        time: None,
        context,
    }
}

const FILE: &str = r#"grants:
  - name: inc-4711-rerun-export
    identities: ["spiffe://example.org/ns/batch/sa/exporter"]
    when: request.method == "POST" && request.path.startsWith("/export/")
    not_before: 2026-11-25T10:00:00Z
    expires: 2026-11-25T12:00:00Z
    reason: "INC-4711: re-run the failed export"
"#;

#[test]
fn a_grant_is_in_force_only_inside_its_window_for_its_identities_and_condition() {
    let g = grants(FILE);
    let context = HashMap::new();
    let workload = Workload::default();
    let find = |id: &str, method: &str, now: &str| {
        let who = identity(id);
        let a = attrs(method, "/export/x", &context);
        let input = Input {
            source: who.source.as_deref(),
            token: None,
            attributes: &a,
            workload: &workload,
            now: at(now),
            grant: None,
            signals: &crate::signals::Signals::default(),
        };
        g.find(&who, input).map(|g| g.name.to_string())
    };
    assert_eq!(find(EXPORTER, "POST", "2026-11-25T09:59:59Z"), None);
    assert_eq!(
        find(EXPORTER, "POST", "2026-11-25T10:00:00Z").as_deref(),
        Some("inc-4711-rerun-export")
    );
    assert!(find(EXPORTER, "POST", "2026-11-25T11:59:59Z").is_some());
    assert_eq!(find(EXPORTER, "POST", "2026-11-25T12:00:00Z"), None);
    assert_eq!(find(EXPORTER, "GET", "2026-11-25T11:00:00Z"), None);
    assert_eq!(
        find(
            "spiffe://example.org/ns/batch/sa/other",
            "POST",
            "2026-11-25T11:00:00Z"
        ),
        None
    );
    assert_eq!(g.active(at("2026-11-25T11:00:00Z")), 1);
    assert_eq!(g.active(at("2026-11-25T12:00:00Z")), 0);
    assert_eq!(
        g.next_change(&identity(EXPORTER), at("2026-11-25T09:00:00Z")),
        Some(at("2026-11-25T10:00:00Z"))
    );
    assert_eq!(
        g.next_change(&identity(EXPORTER), at("2026-11-25T10:00:00Z")),
        Some(at("2026-11-25T12:00:00Z"))
    );
}

#[test]
fn every_problem_of_a_grants_file_is_reported_with_its_grant_and_line() {
    let text = r#"grants:
  - name: too-long
    identities: ["spiffe://example.org/a"]
    not_before: 2026-11-25T10:00:00Z
    expires: 2026-11-27T10:00:00Z
    reason: x
  - name: backwards
    identities: ["spiffe://example.org/a"]
    not_before: 2026-11-25T12:00:00Z
    expires: 2026-11-25T10:00:00Z
    reason: x
  - name: nobody
    identities: ["not-an-id"]
    expires: 2026-11-25T12:00:00Z
    reason: ""
  - name: ill-typed
    identities: ["spiffe://example.org/a"]
    when: request.size == "big"
    expires: 2026-11-25T12:00:00Z
    reason: x
  - name: too-long
    identities: ["spiffe://example.org/a"]
    expires: 2026-11-25T11:00:00Z
    reason: x
"#;
    let e = Grants::parse(
        text,
        Path::new("grants.yaml"),
        DEFAULT_MAX_DURATION,
        at("2026-11-25T09:00:00Z"),
    )
    .unwrap_err()
    .to_string();
    for needle in [
        "grants.yaml:2",
        "lasts 48h, longer than the maximum of 24h",
        "grants.yaml:7",
        "never opens",
        "\"not-an-id\" is not a SPIFFE ID",
        "`reason` is empty",
        "grants.yaml:18",
        "'==' compares int with string",
        "a second grant is named \"too-long\"",
    ] {
        assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
    }
    let e = Grants::parse(
        "grants:\n  - name: x\n",
        Path::new("g.yaml"),
        DEFAULT_MAX_DURATION,
        at("2026-11-25T09:00:00Z"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("missing field"), "{e}");
}

#[test]
fn a_grant_allows_when_no_rule_does_but_deny_rules_still_win_and_can_read_it() {
    let g = grants(FILE);
    let policy = Policy::parse(
        r#"rules:
  - name: no-deletes-on-grants
    effect: deny
    when: grant.name != "" && request.method == "DELETE"
  - name: reads
    effect: allow
    when: request.method == "GET"
  - name: no-granted-big-exports
    effect: deny
    when: grant.name == "inc-4711-rerun-export" && request.path == "/export/huge"
"#,
        Path::new("p.yaml"),
    )
    .unwrap();
    let context = HashMap::new();
    let workload = Workload::default();
    let who = identity(EXPORTER);
    let decide = |method: &str, path: &str| {
        let a = attrs(method, path, &context);
        let input = Input {
            source: who.source.as_deref(),
            token: None,
            attributes: &a,
            workload: &workload,
            now: at("2026-11-25T11:00:00Z"),
            grant: None,
            signals: &crate::signals::Signals::default(),
        };
        let grant = g.find(&who, input);
        let d = policy.evaluate(Input {
            grant: grant.as_ref(),
            ..input
        });
        (d.allowed, d.reason, d.grant.map(|g| g.reason.to_string()))
    };
    assert_eq!(
        decide("POST", "/export/x"),
        (
            true,
            Reason::Granted,
            Some("INC-4711: re-run the failed export".into())
        )
    );
    assert_eq!(decide("POST", "/export/huge").1, Reason::DeniedByRule);
    assert_eq!(decide("POST", "/other"), (false, Reason::NoAllowRule, None));
}

#[test]
fn a_prefix_grants_everyone_under_its_path_and_merged_grants_keep_their_conditions_and_origin() {
    let file = grants(
        "grants:\n  - name: ops\n    identities: [\"spiffe://example.org/ns/ops/\"]\n    when: request.method == \"GET\"\n    expires: 2026-11-25T12:00:00Z\n    reason: on-call\n",
    );
    let store = grants(
        "grants:\n  - name: batch\n    identities: [\"spiffe://example.org/ns/batch/sa/exporter\"]\n    when: request.method == \"POST\"\n    expires: 2026-11-25T12:00:00Z\n    reason: rerun\n",
    )
    .with_origin(Origin::Store);
    let merged = Grants::merged(&file, &store);
    assert_eq!(merged.grants().len(), 2);
    assert_ne!(merged.generation(), file.generation());
    let context = HashMap::new();
    let workload = Workload::default();
    let find = |id: &str, method: &str| {
        let who = identity(id);
        let a = attrs(method, "/export/x", &context);
        let input = Input {
            source: who.source.as_deref(),
            token: None,
            attributes: &a,
            workload: &workload,
            now: at("2026-11-25T11:00:00Z"),
            grant: None,
            signals: &crate::signals::Signals::default(),
        };
        merged
            .find(&who, input)
            .map(|g| (g.name.to_string(), g.origin))
    };
    let ops = Some(("ops".to_owned(), Origin::File));
    assert_eq!(find("spiffe://example.org/ns/ops/sa/oncall", "GET"), ops);
    assert_eq!(find("spiffe://example.org/ns/ops/a/b/c", "GET"), ops);
    // A prefix ends at a segment: `ops2` is not under `ops/`.
    assert_eq!(find("spiffe://example.org/ns/ops2/sa/x", "GET"), None);
    assert_eq!(find("spiffe://example.org/ns/ops/sa/oncall", "POST"), None);
    // The second source's condition is its own, not the first's.
    assert_eq!(
        find(EXPORTER, "POST"),
        Some(("batch".to_owned(), Origin::Store))
    );
    assert_eq!(find(EXPORTER, "GET"), None);
    // A prefix that is not a SPIFFE ID is refused like an ID.
    let bad = Grants::parse(
        "grants:\n  - name: x\n    identities: [\"example.org/ns/\"]\n    expires: 2026-11-25T12:00:00Z\n    reason: r\n",
        Path::new("grants.yaml"),
        DEFAULT_MAX_DURATION,
        at("2026-11-25T09:00:00Z"),
    );
    assert!(
        bad.unwrap_err()
            .to_string()
            .contains("nor one ending in `/`")
    );
}
