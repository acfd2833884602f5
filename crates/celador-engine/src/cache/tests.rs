//! The differential test of the decision cache: randomised request streams
//! decided by an engine with the cache and one without must agree on every
//! decision, while rules reload, bundles rotate, revocations and grants
//! change, grant windows open and close, and the clock moves.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::attributes::Request;
use crate::grants::{DEFAULT_MAX_DURATION, Grants};
use crate::identity::Requirement;
use crate::identity::bundle::{self, DomainBundle, TrustBundles};
use crate::identity::jwt::JwtSettings;
use crate::identity::verified::CacheSettings;
use crate::policy::Policy;
use crate::revocations::Revocations;
use crate::testing::{jwt as jwt_support, pki};
use crate::workload::Workload;
use crate::{Decision, Engine, EngineSettings, REQUIREMENT_EXTENSION, Snapshot, TokenSettings};

use super::DecisionCacheSettings;

use crate::testing::Rng;

const IDS: &[&str] = &[
    "spiffe://example.org/ns/payments/sa/api",
    "spiffe://example.org/ns/batch/sa/exporter",
    "spiffe://example.org/ns/legacy/sa/old",
    "spiffe://example.org/ns/web/sa/frontend",
];
const AGENTS: &[&str] = &[
    "spiffe://partner.org/agents/export-bot",
    "spiffe://partner.org/agents/reader",
];

const POLICIES: &[&str] = &[
    // Keyed header reads, a grant-aware deny rule, token claims.
    r#"rules:
  - name: no-legacy
    effect: deny
    when: has(source.id) && source.id.startsWith("spiffe://example.org/ns/legacy/")
  - name: no-granted-deletes-of-admin
    effect: deny
    when: grant.name != "" && request.path.startsWith("/admin")
  - name: payments
    effect: allow
    when: source.id == "spiffe://example.org/ns/payments/sa/api"
  - name: exporter-exports
    effect: allow
    when: source.id.endsWith("/exporter") && request.method == "POST" && request.path.startsWith("/export/")
  - name: readers
    effect: allow
    when: token.claims["scope"] == "read" && request.method == "GET"
  - name: flagged
    effect: allow
    when: request.headers["x-a"] == "1" && context["route"] == "public"
"#,
    // Whole-map reads, presence tests, a shadow rule.
    r#"rules:
  - name: admin-route
    effect: deny
    when: context.exists(k, k == "route") && context["route"] == "admin" && !("x-b" in request.headers)
  - name: any-b
    effect: allow
    when: request.headers.exists(k, k == "x-b") && request.size < 10
  - name: token-readers
    effect: allow
    when: has(token.id) && token.audience.exists(a, a == "payments") && request.method in ["GET", "HEAD"]
  - name: candidate-deny-frontend
    effect: deny
    mode: shadow
    when: source.id.endsWith("/frontend")
  - name: frontend
    effect: allow
    when: source.path == "/ns/web/sa/frontend"
"#,
    // Volatile: the clock and signals, never cached.
    r#"rules:
  - name: slow-down
    effect: deny
    when: signals.requests_10s > 40
  - name: business-hours
    effect: allow
    when: now.getSeconds() % 2 == 0 && request.method == "GET"
  - name: payments
    effect: allow
    when: source.id == "spiffe://example.org/ns/payments/sa/api"
"#,
];

/// Time-bound rules (cached, keyed on the hour, minute, weekday or side of
/// an instant they read), with instants around `start`.
fn time_policy(start: SystemTime) -> String {
    let t = |offset: u64| crate::time::rfc3339(start + Duration::from_secs(offset));
    format!(
        r#"rules:
  - name: odd-minutes-no-posts
    effect: deny
    when: request.time.getMinutes() % 2 == 1 && request.method == "POST"
  - name: before-cutover
    effect: allow
    when: request.time < timestamp("{a}") && request.path.startsWith("/export/")
  - name: kolkata-mornings
    effect: allow
    when: request.time.getHours("Asia/Kolkata") < 12 && request.method == "GET"
  - name: weekdays-after
    effect: allow
    when: timestamp("{b}") <= now && now.getDayOfWeek() in [1, 2, 3, 4, 5] && has(token.id)
  - name: payments
    effect: allow
    when: source.id == "{payments}"
"#,
        a = t(300),
        b = t(700),
        payments = IDS[0],
    )
}

const SHADOW: &str = r#"rules:
  - name: only-gets
    effect: allow
    when: request.method == "GET" && request.headers["x-a"] != "0"
"#;

fn grants_text(start: SystemTime) -> String {
    let t = |offset: u64| crate::time::rfc3339(start + Duration::from_secs(offset));
    format!(
        r#"grants:
  - name: exporter-deletes
    identities: ["{exporter}"]
    when: request.method == "DELETE"
    not_before: {a}
    expires: {b}
    reason: "INC-1: clean up"
  - name: bot-anything
    identities: ["{bot}"]
    not_before: {c}
    expires: {d}
    reason: "INC-2: migration"
  - name: frontend-admin
    identities: ["{frontend}"]
    when: request.path.startsWith("/admin")
    expires: {e}
    reason: "INC-3"
"#,
        exporter = IDS[1],
        bot = AGENTS[0],
        frontend = IDS[3],
        a = t(200),
        b = t(900),
        c = t(600),
        d = t(2400),
        e = t(1500),
    )
}

fn revocations(choice: usize, jti: &str) -> Revocations {
    let text = match choice {
        0 => "revocations: []\n".to_owned(),
        1 => format!(
            "revocations:\n  - spiffe_id: {}\n    reason: leaked\n",
            IDS[0]
        ),
        2 => "revocations:\n  - spiffe_id_prefix: spiffe://example.org/ns/batch\n    reason: ns\n"
            .to_owned(),
        _ => format!("revocations:\n  - jwt_id: {jti}\n    reason: replayed\n"),
    };
    Revocations::parse(&text, Path::new("revocations.yaml")).unwrap()
}

/// A random request: a peer certificate or none, a token or none, and
/// request attributes from small sets.
fn random_request(
    rng: &mut Rng,
    certs: &[String],
    tokens: &[(String, String)],
    start: SystemTime,
) -> Request {
    let methods = ["GET", "POST", "DELETE", "HEAD"];
    let paths = ["/", "/export/a", "/export/b", "/admin/x", "/charge"];
    let cert = if rng.one_in(6) {
        String::new()
    } else {
        rng.pick(certs).clone()
    };
    let mut headers = vec![("x-a", *rng.pick(&["0", "1"]))];
    if rng.one_in(3) {
        headers.push(("x-b", "yes"));
    }
    if rng.one_in(2) {
        headers.push(("authorization", rng.pick(tokens).0.as_str()));
    }
    let (method, path) = (*rng.pick(&methods), *rng.pick(&paths));
    let mut request = Request {
        source_certificate: cert,
        id: "test-request".into(),
        host: "api.example.org".into(),
        scheme: "https".into(),
        protocol: "HTTP/2".into(),
        ..Request::new(method, path)
    };
    for (name, value) in headers {
        request = request.with_header(name, value);
    }
    let route = *rng.pick(&["public", "admin"]);
    request = request.with_context("route", route);
    if rng.one_in(10) {
        let requirement = *rng.pick(&["x509", "jwt", "both"]);
        request = request.with_context(REQUIREMENT_EXTENSION, requirement);
    }
    request.size = rng.below(20) as i64;
    // Envoy's time of the request, not celador's clock: two hours around
    // the start.
    if rng.one_in(3) {
        let offset = Duration::from_secs(rng.below(7200) as u64);
        request.time = Some(start - Duration::from_secs(3600) + offset);
    }
    request
}

/// What both engines must agree on: everything but where it came from.
fn comparable(mut d: Decision) -> Decision {
    d.from_cache = false;
    d.identity.from_cache = false;
    d
}

#[test]
fn the_cached_engine_decides_exactly_as_the_uncached_one() {
    let decisions: usize = std::env::var("CELADOR_CACHE_DIFF_DECISIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let seed = std::env::var("CELADOR_CACHE_DIFF_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0x5eed_cafe_u64);
    let mut rng = Rng(seed);

    let cas = [pki::Ca::root("example.org"), pki::Ca::root("example.org")];
    // Short- and long-lived SVIDs of both CAs: the clock passes some expiries.
    let certs: Vec<String> = cas
        .iter()
        .flat_map(|ca| {
            IDS.iter().flat_map(move |id| {
                [
                    ca.leaf()
                        .uri(id)
                        .valid_secs(-60, 900)
                        .build()
                        .envoy_encoded(),
                    ca.leaf()
                        .uri(id)
                        .valid_secs(-60, 6 * 3600)
                        .build()
                        .envoy_encoded(),
                ]
            })
        })
        .collect();
    let signer = jwt_support::Signer::es256("k1");
    let tokens: Vec<(String, String)> = AGENTS
        .iter()
        .flat_map(|agent| {
            [("read", 600), ("write", 7200), ("read", 7200)]
                .into_iter()
                .enumerate()
                .map(|(i, (scope, exp))| {
                    let jti = format!("{agent}-{i}");
                    let mut claims = jwt_support::claims(agent, "payments", exp);
                    claims["scope"] = scope.into();
                    claims["jti"] = jti.clone().into();
                    (format!("Bearer {}", signer.token(&claims)), jti)
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let jwt_bundle = || {
        bundle::parse(
            jwt_support::jwks(&[&signer]).as_bytes(),
            Path::new("jwks.json"),
        )
        .unwrap()
        .bundle
    };
    // One CA, the other, or both (a rotation in progress).
    let x509 = |choice: usize| -> DomainBundle {
        let pem = match choice {
            0 => cas[0].pem.clone(),
            1 => cas[1].pem.clone(),
            _ => format!("{}{}", cas[0].pem, cas[1].pem),
        };
        bundle::parse_pem(pem.as_bytes(), Path::new("ca.pem")).unwrap()
    };
    let bundles = |choice: usize| {
        Arc::new(TrustBundles::from_domains([
            ("example.org".to_owned(), x509(choice)),
            ("partner.org".to_owned(), jwt_bundle()),
        ]))
    };

    let start = SystemTime::now();
    let mut now = start;
    let timed = time_policy(start);
    let policy = |i: usize| {
        let text = POLICIES.get(i).copied().unwrap_or(&timed);
        Arc::new(Policy::parse(text, Path::new("p.yaml")).unwrap())
    };
    let grants = |at: SystemTime| {
        Arc::new(
            Grants::parse(
                &grants_text(start),
                Path::new("grants.yaml"),
                DEFAULT_MAX_DURATION,
                at,
            )
            .unwrap(),
        )
    };
    let mut snapshot = Snapshot {
        grants: grants(now),
        ..Snapshot::new(policy(0), bundles(2))
    };
    let engine = |ttl: Duration| {
        Engine::new(
            Workload::default(),
            EngineSettings {
                requirement: Requirement::Either,
                token: Some(TokenSettings {
                    header: "authorization".into(),
                    verify: JwtSettings {
                        audiences: vec!["payments".into()],
                        leeway: Duration::from_secs(5),
                        cache: CacheSettings::default(),
                    },
                }),
                decision_cache: DecisionCacheSettings {
                    ttl,
                    ..DecisionCacheSettings::default()
                },
                ..EngineSettings::default()
            },
        )
    };
    let cached = engine(Duration::from_secs(30));
    let uncached = engine(Duration::ZERO);

    let hot: Vec<Request> = (0..40)
        .map(|_| random_request(&mut rng, &certs, &tokens, start))
        .collect();
    let mut changes = 0;
    let (mut timed_lookups, mut timed_hits) = (0, 0);
    for i in 0..decisions {
        // Live inputs change between requests, as the store would publish.
        let mut changed = true;
        match rng.below(2000) {
            0..=3 => snapshot.policy = policy(rng.below(POLICIES.len() + 1)),
            4..=5 => snapshot.bundles = bundles(rng.below(3)),
            6..=8 => {
                let (_, jti) = rng.pick(&tokens);
                snapshot.revocations = Arc::new(revocations(rng.below(4), jti));
            }
            9..=10 => snapshot.grants = grants(now),
            11 => {
                snapshot.shadow = match snapshot.shadow {
                    None => Some(Arc::new(
                        Policy::parse(SHADOW, Path::new("s.yaml")).unwrap(),
                    )),
                    Some(_) => None,
                }
            }
            _ => changed = false,
        }

        if changed {
            snapshot.generation += 1;
            changes += 1;
        }
        // The clock: mostly small steps, sometimes a jump, rarely backwards.
        now = match rng.below(2000) {
            0 => now - Duration::from_secs(20),
            1 => now + Duration::from_secs(rng.below(120) as u64),
            _ => now + Duration::from_millis(rng.below(20) as u64),
        };

        // Traffic is repetitive: most requests are one of a hot few.
        let request = if rng.below(10) < 8 {
            hot[rng.below(hot.len())].clone()
        } else {
            random_request(&mut rng, &certs, &tokens, start)
        };
        let attrs = request.attributes();
        let before = cached.decision_cache_stats();
        let with_cache = cached.decide(&snapshot, &attrs, now);
        if snapshot.policy.footprint().clock.len() > 2 {
            let after = cached.decision_cache_stats();
            timed_lookups += after.hits + after.misses - before.hits - before.misses;
            timed_hits += after.hits - before.hits;
        }
        let without = uncached.decide(&snapshot, &attrs, now);
        assert!(!without.from_cache);
        assert_eq!(
            comparable(with_cache),
            comparable(without),
            "decision {i} (seed {seed}) differs: cached first, uncached second"
        );
    }
    let stats = cached.decision_cache_stats();

    // The test means something only if many decisions were looked up and
    // the cache served a good share of them.
    let lookups = stats.hits + stats.misses;
    assert!(
        lookups as usize > decisions / 10 && stats.hits > lookups / 4,
        "{} of {lookups} lookups hit, in {decisions} decisions with {changes} changes",
        stats.hits
    );
    assert_eq!(uncached.decision_cache_stats().hits, 0);
    // The time-bound policy was looked up often, and served from the cache.
    assert!(
        timed_lookups as usize > decisions / 20 && timed_hits > timed_lookups / 3,
        "{timed_hits} of {timed_lookups} time-bound lookups hit"
    );
}
