#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::attributes::Request;

use super::*;
use crate::grant::Grant;
use crate::identity::jwt::JwtSvid;
use crate::identity::{SpiffeId, X509Svid};
use crate::policy::footprint::Footprint;
use crate::policy::{Mode, Policy};
use crate::workload::Workload;
use crate::{Decision, Reason};

use crate::testing::Rng;

const IDS: &[&str] = &[
    "spiffe://a.org/ns/n0/sa/x",
    "spiffe://a.org/ns/n1/sa/y",
    "spiffe://a.org/ns/n10/sa/x",
    "spiffe://b.org/ns/n0/sa/x",
    "spiffe://b.org/agents/bot",
];
const METHODS: &[&str] = &["GET", "POST", "PUT", "get"];
const PATHS: &[&str] = &[
    "/",
    "/a",
    "/a/b",
    "/ab",
    "/admin/x",
    "/b/c",
    "/%C3%A9t%C3%A9/x",
    "/été",
];
const HOSTS: &[&str] = &["h1", "h2", "H1"];

/// Conjuncts a rule index can file a rule under; `{id}` and friends are
/// replaced by a random pool member.
const PINNED: &[&str] = &[
    "source.id == {id}",
    "{id} == source.id",
    "source.id in [{id}, {id}]",
    "source.id in []",
    "source.path == \"/ns/n0/sa/x\"",
    "source.path.startsWith(\"/ns/n1\")",
    "source.trust_domain == \"a.org\"",
    "source.id.startsWith(\"spiffe://b.org/\")",
    "token.id == {id}",
    "token.path.startsWith(\"/agents\")",
    "token.trust_domain in [\"b.org\", \"c.org\"]",
    "request.method == {method}",
    "request.method in [{method}, {method}]",
    "request.host == {host}",
    "request.path == {path}",
    "request.path.startsWith({path})",
    "request.path.startsWith(\"\")",
    "request.path.startsWith(\"/\\u00e9\")",
    "request.path.startsWith(\"/%C3\")",
    "request.scheme == \"https\"",
    "destination.principal == {id}",
    "(source.id == {id} || source.id == {id})",
    "(request.method == {method} || {method} == request.method || request.method in [{method}])",
    "(request.method == {method} || (request.method == {method} || request.method == {method}))",
    "(token.id == {id} || token.id in [{id}, {id}])",
    "(request.path == {path} || request.path == {path})",
];

/// Conjuncts it cannot: other operators, maps that may lack the key,
/// errors, disjunctions, guards of absent credentials.
const OTHER: &[&str] = &[
    "request.headers[\"x-a\"] == \"1\"",
    "\"x-a\" in request.headers",
    "has(source.id)",
    "!has(token.id)",
    "request.method != \"GET\"",
    "(source.id == {id} || request.method == {method})",
    "(request.method == {method} || request.path.startsWith({path}))",
    "(source.id == {id} || 1 / (request.size - request.size) == 0)",
    "(request.method == {method} || request.method != {method})",
    "token.claims[\"tenant\"] == \"acme\"",
    "request.size > 3",
    "grant.name == \"g1\"",
    "1 / (request.size - request.size) == 0",
    "true",
    "false",
    "context.route == \"r\"",
    "request.path.startsWith(request.host)",
    "!(request.path.startsWith({path}))",
    "(request.method == {method} ? source.id == {id} : true)",
    "[1].exists(x, request.method == {method})",
];

fn fill(template: &str, rng: &mut Rng) -> String {
    let mut out = template.to_owned();
    for (hole, pool) in [
        ("{id}", IDS),
        ("{method}", METHODS),
        ("{path}", PATHS),
        ("{host}", HOSTS),
    ] {
        while let Some(at) = out.find(hole) {
            let value = format!("{:?}", *rng.pick(pool));
            out.replace_range(at..at + hole.len(), &value);
        }
    }
    out
}

fn random_policy(rng: &mut Rng, rules: usize) -> Policy {
    let mut yaml = String::from("rules:\n");
    for i in 0..rules {
        let conjuncts: Vec<String> = (0..1 + rng.below(4))
            .map(|_| {
                let pool = if rng.one_in(3) { OTHER } else { PINNED };
                let template = *rng.pick(pool);
                fill(template, rng)
            })
            .collect();
        // Grouped either way: `(a && b) && c` or `a && (b && c)`.
        let when = match conjuncts.as_slice() {
            [a, b, c, rest @ ..] if rng.one_in(2) => {
                let mut w = format!("{a} && ({b} && {c})");
                for r in rest {
                    w.push_str(&format!(" && {r}"));
                }
                w
            }
            all => all.join(" && "),
        };
        let effect = if rng.one_in(3) { "deny" } else { "allow" };
        let mode = if rng.one_in(6) { "shadow" } else { "enforce" };
        yaml.push_str(&format!(
            "  - name: r{i}\n    effect: {effect}\n    mode: {mode}\n    when: {when:?}\n"
        ));
    }
    Policy::parse(&yaml, Path::new("random.yaml")).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

fn svid(id: &str) -> X509Svid {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    X509Svid {
        id: SpiffeId::parse(id).unwrap(),
        not_before: t,
        not_after: t,
        chain_not_after: t,
        certificate: Default::default(),
    }
}

fn token(id: &str) -> JwtSvid {
    JwtSvid {
        id: SpiffeId::parse(id).unwrap(),
        audience: vec!["x".into()],
        expiry: SystemTime::UNIX_EPOCH,
        claims: serde_json::json!({"sub": id, "tenant": "acme"})
            .as_object()
            .unwrap()
            .clone(),
    }
}

fn random_request(rng: &mut Rng) -> Request {
    let (method, path) = (*rng.pick(METHODS), *rng.pick(PATHS));
    let mut request = Request {
        host: (*rng.pick(HOSTS)).into(),
        scheme: (*rng.pick(&["https", "http"])).into(),
        size: rng.below(6) as i64,
        ..Request::new(method, path)
    };
    if rng.one_in(2) {
        let value = *rng.pick(&["0", "1"]);
        request = request.with_header("x-a", value);
    }
    if rng.one_in(2) {
        request = request.with_context("route", "r");
    }
    request
}

/// What the audit record lists as read: the deciding rule's footprint, or
/// every rule's when none decided.
fn read<'p>(policy: &'p Policy, d: &Decision) -> &'p Footprint {
    d.rule
        .as_ref()
        .and_then(|name| policy.rules().iter().find(|r| &r.name == name))
        .map_or(policy.footprint(), |r| &*r.footprint)
}

#[test]
fn the_index_decides_exactly_as_evaluating_every_rule() {
    let decisions: usize = std::env::var("CELADOR_INDEX_DIFF_DECISIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let seed = std::env::var("CELADOR_INDEX_DIFF_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0x1d3c_5eed_u64);
    let mut rng = Rng(seed);
    let svids: Vec<X509Svid> = IDS.iter().map(|id| svid(id)).collect();
    let tokens: Vec<JwtSvid> = IDS.iter().map(|id| token(id)).collect();
    let grant = Arc::new(Grant {
        name: "g1".into(),
        identities: vec![],
        not_before: None,
        expires: SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000),
        reason: "test".into(),
        when: "true".into(),
        origin: Default::default(),
    });
    let workload = Workload::default();
    let per_policy = 400;
    let (mut compared, mut evaluated, mut skipped, mut filed) = (0, 0, 0, 0);
    let mut reasons: HashMap<Reason, usize> = HashMap::new();
    let mut with_errors = 0;
    while compared < decisions {
        let rules = 1 + rng.below(16);
        let policy = random_policy(&mut rng, rules);
        filed += policy.index().filed();
        let requests: Vec<Request> = (0..per_policy).map(|_| random_request(&mut rng)).collect();
        for request in &requests {
            let attrs = request.attributes();
            let input = Input {
                source: (!rng.one_in(5)).then(|| rng.pick(&svids)),
                token: rng.one_in(2).then(|| rng.pick(&tokens)),
                attributes: &attrs,
                workload: &workload,
                now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
                grant: rng.one_in(5).then_some(&grant),
                signals: &Default::default(),
            };
            let indexed = policy.evaluate(input);
            let sequential = policy.evaluate_sequential(input, false);
            assert_eq!(indexed, sequential, "{request:?}\n{:#?}", policy.rules());
            assert_eq!(read(&policy, &indexed), read(&policy, &sequential));
            let shadow = policy.evaluate_shadow(input);
            let expected = policy
                .rules()
                .iter()
                .any(|r| r.mode == Mode::Shadow)
                .then(|| policy.evaluate_sequential(input, true));
            assert_eq!(shadow, expected, "{request:?}\n{:#?}", policy.rules());
            let candidates = policy.index().candidates(&input).len();
            evaluated += candidates;
            // What the index skipped of the rules it files: the enforced ones.
            let enforced = policy.rules().iter().filter(|r| r.mode == Mode::Enforce);
            skipped += enforced.count() - candidates;
            *reasons.entry(indexed.reason).or_default() += 1;
            with_errors += usize::from(!indexed.errors.is_empty());
            compared += 1;
        }
    }
    // The generator reaches every outcome, and the index does skip rules.
    for reason in [
        Reason::Allowed,
        Reason::DeniedByRule,
        Reason::RuleError,
        Reason::NoAllowRule,
        Reason::Granted,
    ] {
        assert!(
            reasons.get(&reason).copied().unwrap_or(0) > compared / 100,
            "{reasons:?}"
        );
    }
    assert!(with_errors > compared / 20, "{with_errors} of {compared}");
    assert!(
        filed > 0 && skipped > evaluated / 4,
        "{skipped} skipped, {evaluated} evaluated"
    );
}

fn compiled(source: &str) -> IdedExpr {
    let policy = Policy::parse(
        &format!("rules:\n  - name: r\n    effect: allow\n    when: {source:?}\n"),
        Path::new("p.yaml"),
    )
    .unwrap();
    policy.rules()[0].expr.clone()
}

#[test]
fn pins_are_the_top_level_conjuncts_on_literals() {
    let expr = compiled(
        r#"request.method in ["GET", "HEAD"] && ("spiffe://a.org/x" == source.id && request.path.startsWith("/v1/"))"#,
    );
    let p = pins(&expr);
    assert_eq!(
        p,
        vec![
            Pin::Equal(Attr::Method, vec!["GET", "HEAD"]),
            Pin::Equal(Attr::SourceId, vec!["spiffe://a.org/x"]),
            Pin::Prefix(Attr::Path, "/v1/"),
        ]
    );
    // An `||` of equalities on one attribute pins it to their union.
    let either = compiled(
        r#"(source.id == "a" || "b" == source.id || source.id in ["c"]) && (request.method == "GET" || request.method == "HEAD")"#,
    );
    assert_eq!(
        pins(&either),
        vec![
            Pin::Equal(Attr::SourceId, vec!["a", "b", "c"]),
            Pin::Equal(Attr::Method, vec!["GET", "HEAD"]),
        ]
    );
    // Not top level, not literal, not a pinnable attribute.
    for source in [
        r#"request.method == "GET" || source.id == "x""#,
        r#"!(request.method == "GET")"#,
        r#"request.path.startsWith(request.host)"#,
        r#"request.headers["x"] == "1""#,
        r#"request.method in ["GET", request.host]"#,
        r#"request.raw_path == "/a""#,
        r#"request.method == "GET" || request.path.startsWith("/a")"#,
        r#"request.method == "GET" || request.method != "POST""#,
        r#"request.method == "GET" || request.size > 1"#,
    ] {
        assert_eq!(pins(&compiled(source)), vec![], "{source}");
    }
}

#[test]
fn a_prefix_bucket_is_found_at_every_length_and_never_inside_a_character() {
    let policy = Policy::parse(
        r#"
rules:
  - name: root
    effect: allow
    when: request.path.startsWith("/")
  - name: accented
    effect: allow
    when: request.path.startsWith("/é")
  - name: long
    effect: allow
    when: request.path.startsWith("/export/reports/")
  - name: anyone
    effect: deny
    when: request.headers["x"] == "1"
"#,
        Path::new("p.yaml"),
    )
    .unwrap();
    let candidates = |path: &str| {
        let request = Request::new("GET", path);
        let attrs = request.attributes();
        let workload = Workload::default();
        let input = Input {
            source: None,
            token: None,
            attributes: &attrs,
            workload: &workload,
            now: SystemTime::UNIX_EPOCH,
            grant: None,
            signals: &Default::default(),
        };
        policy.index().candidates(&input).to_vec()
    };
    assert_eq!(candidates("/export/reports/1"), vec![0, 2, 3]);
    assert_eq!(candidates("/export/x"), vec![0, 3]);
    assert_eq!(candidates("/été"), vec![0, 1, 3]);
    assert_eq!(policy.index().filed(), 3);
}

#[test]
fn an_either_rule_is_a_candidate_for_each_of_its_values_and_when_absent() {
    let policy = Policy::parse(
        r#"
rules:
  - name: either
    effect: allow
    when: source.id == "spiffe://a.org/ns/n0/sa/x" || source.id == "spiffe://a.org/ns/n1/sa/y"
  - name: methods
    effect: deny
    when: request.method == "PUT" || request.method == "POST"
"#,
        Path::new("p.yaml"),
    )
    .unwrap();
    assert_eq!(policy.index().filed(), 2);
    let svids: Vec<X509Svid> = IDS.iter().map(|id| svid(id)).collect();
    let workload = Workload::default();
    let candidates = |source: Option<&X509Svid>, method: &str| {
        let request = Request::new(method, "/");
        let attrs = request.attributes();
        let input = Input {
            source,
            token: None,
            attributes: &attrs,
            workload: &workload,
            now: SystemTime::UNIX_EPOCH,
            grant: None,
            signals: &Default::default(),
        };
        policy.index().candidates(&input).to_vec()
    };
    assert_eq!(candidates(Some(&svids[0]), "GET"), vec![0]);
    assert_eq!(candidates(Some(&svids[1]), "POST"), vec![0, 1]);
    assert_eq!(candidates(Some(&svids[2]), "PUT"), vec![1]);
    assert_eq!(candidates(Some(&svids[3]), "GET"), Vec::<u32>::new());
    // Without an X.509-SVID, `source.id` is an error: the rule may fail.
    assert_eq!(candidates(None, "GET"), vec![0]);
}
