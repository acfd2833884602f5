//! Risk entries in the store, end to end: an assurance level kept apart
//! from the same transmitter's risk level, the cap making room for a
//! higher level, and a sidecar whose user cannot read the risk fields
//! narrowly. (Part of `tests/signals.rs`: its receiver and helpers.)

use super::*;

const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";

/// A receiver writing into the store and a sidecar reading it, with a
/// rule denying writes at high risk.
struct Rig {
    _dir: tempfile::TempDir,
    server_ca: Ca,
    ca: Ca,
    idp: Signer,
    receiver: Receiver,
    celador: Celador,
}

impl Rig {
    /// `transmitter`: lines added to the transmitter's config; `sidecar`:
    /// to the sidecar's `governance:`.
    fn start(redis: &support::redis::Redis, transmitter: &str, sidecar: &str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        let write = |name: &str, text: &str| std::fs::write(path(name), text).unwrap();
        let server_ca = Ca::root("signals server CA");
        let server = server_ca.leaf().dns("localhost").build();
        write("tls.crt", &server.pem);
        write("tls.key", &server.key_pem);
        let idp = Signer::es256("idp-1");
        write("idp.json", &jwt::jwks(&[&idp]));
        write("password", "old-secret\n");
        write(
            "receiver.yaml",
            &format!(
                "listen: 127.0.0.1:0\ntls: {{cert: tls.crt, key: tls.key}}\n\
                 transmitters:\n  - issuer: {IDP}\n    audience: {AUD}\n    jwks_file: idp.json\n{transmitter}\
                 sink: {{store: {}}}\nlog: {{format: json}}\n",
                redis.url()
            ),
        );
        let ca = Ca::root("example.org");
        write("example.org.pem", &ca.pem);
        write(
            "policy.yaml",
            "rules:\n  - name: anyone\n    effect: allow\n    when: source.trust_domain == \"example.org\"\n\
             \x20 - name: no-writes-at-high-risk\n    effect: deny\n    when: >\n\
             \x20     request.method != \"GET\" && has(signals.risk.level) && signals.risk.level == \"high\"\n",
        );
        write(
            "celador.yaml",
            &format!(
                "listen: 127.0.0.1:0\npolicy: policy.yaml\ntrust_domains:\n  example.org:\n    bundle: example.org.pem\n\
                 worker_threads: 1\ngovernance:\n  store: {}\n{sidecar}log:\n  format: json\n",
                redis.url()
            ),
        );
        let receiver = Receiver::start(&path("receiver.yaml"));
        let celador = Celador::start(&path("celador.yaml"));
        Rig {
            _dir: dir,
            server_ca,
            ca,
            idp,
            receiver,
            celador,
        }
    }

    /// Pushes the CAEP `event` about `id`, which must be accepted.
    fn push(&self, jti: &str, id: &str, event: &str, payload: Value) {
        let set = self.idp.token_with_header(
            &json!({"alg": "ES256", "kid": "idp-1", "typ": "secevent+jwt"}),
            &json!({"iss": IDP, "aud": AUD, "iat": now(), "jti": jti,
                    "sub_id": {"format": "uri", "uri": id},
                    "events": {format!("{CAEP}{event}"): payload}}),
        );
        let reply = tls_post(
            self.receiver.addr,
            &self.server_ca.pem,
            "/events",
            &[("content-type", "application/secevent+jwt")],
            set.as_bytes(),
        );
        assert_eq!(reply.status, 202, "{reply:?} {}", self.receiver.log());
    }

    /// Pushes a `risk-level-change` to `level` about `id`, which happened
    /// `ago` seconds ago.
    fn risk(&self, jti: &str, id: &str, level: &str, ago: i64) {
        self.push(
            jti,
            id,
            "risk-level-change",
            json!({"principal": "USER", "current_level": level, "event_timestamp": now() - ago}),
        );
    }

    /// Waits (up to 3 s) for a write by `id` to be `denied` or allowed;
    /// how long it took from `start`.
    async fn writes(&self, id: &str, denied: bool, start: Instant) -> Duration {
        risk_decided(
            std::slice::from_ref(&self.celador),
            &self.ca,
            id,
            "POST",
            denied,
            start,
        )
        .await
    }
}

fn subject(n: usize) -> String {
    format!("spiffe://example.org/ns/team/sa/s{n}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_store_an_assurance_step_up_never_lowers_the_same_transmitters_risk_level() {
    let redis = support::redis::Redis::start(false);
    let rig = Rig::start(&redis, "", "");
    rig.writes(PAYMENTS, false, Instant::now()).await;
    rig.risk("r-1", PAYMENTS, "HIGH", 20);
    rig.writes(PAYMENTS, true, Instant::now()).await;
    // The user steps up to a hardware key: the assurance level says "low"
    // risk, the risk engine still says "high".
    rig.push(
        "a-1",
        PAYMENTS,
        "assurance-level-change",
        json!({"namespace": "NIST-AAL", "current_level": "nist-aal3", "previous_level": "nist-aal2",
               "change_direction": "increase", "event_timestamp": now() - 10}),
    );
    // A later risk about another subject: once it is in force at the
    // sidecar, so is the assurance level before it (one feed, in order).
    rig.risk("r-2", EXPORTER, "HIGH", 5);
    rig.writes(EXPORTER, true, Instant::now()).await;
    // Still denied: the rule sees the highest level in force.
    rig.writes(PAYMENTS, true, Instant::now()).await;
    let fields = redis.cli(&["HKEYS", "{celador}:risks"]);
    assert_eq!(fields.lines().count(), 3, "{fields}");
    assert!(
        fields.contains(&format!("{IDP}|assurance|spiffe_id:{PAYMENTS}")),
        "{fields}"
    );
    let record = support::wait_for(Duration::from_secs(2), || {
        rig.celador.audit_records().into_iter().rfind(|r| {
            r["reason"] == "denied_by_rule" && r["read"]["signals"]["risk"]["jti"] == "r-1"
        })
    });
    let record = record.expect("a denial naming the risk engine's SET");
    let risk = &record["read"]["signals"]["risk"];
    assert_eq!(risk["source"], IDP, "{record}");
    assert_eq!(
        risk["event"],
        format!("{CAEP}risk-level-change"),
        "{record}"
    );
    // The risk engine lowers its own report: the highest in force is low.
    let start = Instant::now();
    rig.risk("r-3", PAYMENTS, "LOW", 0);
    let took = rig.writes(PAYMENTS, false, start).await;
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_store_a_transmitter_at_its_cap_drops_its_lowest_risk_for_a_higher_one() {
    let redis = support::redis::Redis::start(false);
    let rig = Rig::start(&redis, "    max_risks: 2\n", "");
    let field = |n: usize| format!("{IDP}|spiffe_id:{}", subject(n));
    rig.risk("r-0", &subject(0), "LOW", 20);
    rig.risk("r-1", &subject(1), "LOW", 10);
    // At the cap, a new subject's high takes the place of the low that
    // lapses first.
    let start = Instant::now();
    rig.risk("r-2", &subject(2), "HIGH", 0);
    let took = rig.writes(&subject(2), true, start).await;
    assert!(took < Duration::from_secs(1), "{took:?}");
    let fields = redis.cli(&["HKEYS", "{celador}:risks"]);
    assert_eq!(fields.lines().count(), 2, "{fields}");
    assert!(
        !fields.contains(&field(0)) && fields.contains(&field(1)),
        "{fields}"
    );
    let log = rig.receiver.log();
    assert!(
        log.contains("takes the place of its lowest") && log.contains(&field(0)),
        "{log}"
    );
    rig.risk("r-3", &subject(3), "HIGH", 0);
    rig.writes(&subject(3), true, Instant::now()).await;
    // Every entry it holds is high: a fourth high is refused, counted.
    rig.risk("r-4", &subject(4), "HIGH", 0);
    let fields = redis.cli(&["HKEYS", "{celador}:risks"]);
    assert_eq!(fields.lines().count(), 2, "{fields}");
    assert!(
        fields.contains(&field(2)) && fields.contains(&field(3)),
        "{fields}"
    );
    assert_eq!(
        redis
            .cli(&["HGET", "{celador}:ssf:risk-counts", IDP])
            .trim(),
        "2"
    );
    let metrics = support::https::tls(
        rig.receiver.addr,
        &rig.server_ca.pem,
        None,
        &support::https::Call::get("/metrics"),
    )
    .body;
    assert!(
        metrics.contains(r#"celador_signals_actions_unapplied_total{action="risk",why="cap"} 1"#),
        "{metrics}"
    );
    rig.writes(&subject(4), false, Instant::now()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_user_without_hmget_still_has_each_risk_level_within_a_second() {
    let redis = support::redis::Redis::start(false);
    // XRANGE, but not HMGET: the narrow read of a risk field is refused.
    let acl = redis.cli(&[
        "ACL",
        "SETUSER",
        "old-sidecar",
        "on",
        ">old-secret",
        "~{celador}:*",
        "-@all",
        "+get",
        "+hgetall",
        "+xread",
        "+xrange",
        "+xrevrange",
        "+multi",
        "+exec",
        "+ping",
        "+hello",
    ]);
    assert_eq!(acl.trim(), "OK");
    let rig = Rig::start(
        &redis,
        "",
        "  username: old-sidecar\n  password_file: password\n  signals_interval: 0s\n",
    );
    rig.writes(PAYMENTS, false, Instant::now()).await;
    for (jti, id) in [("r-1", PAYMENTS), ("r-2", EXPORTER)] {
        let start = Instant::now();
        rig.risk(jti, id, "HIGH", 0);
        let took = rig.writes(id, true, start).await;
        assert!(took < Duration::from_secs(1), "{id}: {took:?}");
    }
    let said = support::wait_for(Duration::from_secs(3), || {
        rig.celador
            .log()
            .contains("reading the whole state at each change")
            .then_some(())
    });
    assert!(said.is_some(), "{}", rig.celador.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_read_of_every_risk_level_is_tried_again_within_seconds() {
    let redis = support::redis::Redis::start(false);
    let rig = Rig::start(&redis, "", "");
    rig.risk("r-1", PAYMENTS, "HIGH", 0);
    rig.writes(PAYMENTS, true, Instant::now()).await;
    // The risks hash cannot be read for a moment (bad data); a risk record
    // on the feed then has the replica read it, and fail.
    redis.cli(&["RENAME", "{celador}:risks", "{celador}:risks-aside"]);
    redis.cli(&["SET", "{celador}:risks", "not a hash"]);
    let field = format!("{IDP}|spiffe_id:{PAYMENTS}");
    redis.cli(&["XADD", "{celador}:feed", "*", "op", "risk", "entry", &field]);
    let said = support::wait_for(Duration::from_secs(3), || {
        rig.celador
            .log()
            .contains("risk levels cannot be read")
            .then_some(())
    });
    assert!(said.is_some(), "{}", rig.celador.log());
    // Readable again, the risk gone meanwhile, with no record on the feed
    // about it: the replica's next try reads it, not the 5-minute one.
    redis.cli(&["HDEL", "{celador}:risks-aside", &field]);
    redis.cli(&["HSET", "{celador}:risks-aside", "placeholder", "x"]);
    redis.cli(&["RENAME", "{celador}:risks-aside", "{celador}:risks"]);
    redis.cli(&["HDEL", "{celador}:risks", "placeholder"]);
    let took = rig.writes(PAYMENTS, false, Instant::now()).await;
    assert!(took < Duration::from_secs(3), "{took:?}");
}

/// Writes `n` `level` risk entries of `source` the way a receiver before
/// the order set left them (the risks hash, the lapses set, the counts),
/// lapsing an hour from now, one millisecond apart.
fn seed(redis: &support::redis::Redis, source: &str, n: usize, level: &str) {
    let lapse = SystemTime::now() + Duration::from_secs(3600);
    let ms = lapse.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    let seeded = redis.cli(&[
        "EVAL",
        r#"for i = 1, tonumber(ARGV[2]) do
             local id = 'spiffe://example.org/ns/seed/sa/s' .. i
             local field = ARGV[1] .. '|spiffe_id:' .. id
             redis.call('HSET', KEYS[1], field,
               '{"spiffe_id":"' .. id .. '","level":"' .. ARGV[3]
               .. '","since":"2026-01-01T00:00:00Z","expires":"' .. ARGV[4] .. '","source":"'
               .. ARGV[1] .. '","event":"e","jti":"j","by":"b","from":"f","at":"2026-01-01T00:00:00Z"}')
             redis.call('ZADD', KEYS[2], tonumber(ARGV[5]) + i, field)
             redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
           end
           return 1"#,
        "3",
        "{celador}:risks",
        "{celador}:risk-lapses",
        "{celador}:ssf:risk-counts",
        source,
        &n.to_string(),
        level,
        &celador::engine::time::rfc3339(lapse),
        &ms.as_millis().to_string(),
    ]);
    assert_eq!(seeded.trim(), "1", "{seeded}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_store_a_transmitters_high_at_its_cap_replaces_its_low_behind_another_transmitters_entries()
 {
    let redis = support::redis::Redis::start(false);
    // Another transmitter's 1,200 entries lapse before any of this one's.
    seed(&redis, "https://other.example.com/", 1200, "high");
    let rig = Rig::start(&redis, "    max_risks: 5\n", "");
    let field = |n: usize| format!("{IDP}|spiffe_id:{}", subject(n));
    for n in 0..5 {
        rig.risk(&format!("r-{n}"), &subject(n), "LOW", 30 - n as i64);
    }
    let count = || redis.cli(&["HGET", "{celador}:ssf:risk-counts", IDP]);
    assert_eq!(count().trim(), "5");
    let start = Instant::now();
    rig.risk("r-5", &subject(5), "HIGH", 0);
    let took = rig.writes(&subject(5), true, start).await;
    assert!(took < Duration::from_secs(1), "{took:?}");
    let fields = redis.cli(&["HKEYS", "{celador}:risks"]);
    assert_eq!(fields.lines().count(), 1205, "{}", rig.receiver.log());
    // The low that lapses first is gone, the other four are kept.
    assert!(!fields.contains(&field(0)), "{fields}");
    assert!((1..6).all(|n| fields.contains(&field(n))), "{fields}");
    assert_eq!(count().trim(), "5");
    // The order set holds every entry once (and its `index` member).
    let order = redis.cli(&["ZCARD", "{celador}:ssf:risk-order"]);
    assert_eq!(order.trim(), "1206");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_store_a_refusal_at_the_cap_reads_the_lowest_entry_only() {
    let redis = support::redis::Redis::start(false);
    seed(&redis, IDP, 10_000, "high");
    let rig = Rig::start(&redis, "    max_risks: 10000\n", "");
    // The first refusals read the entries written before the order set
    // (at most 1,000 each); then a refusal reads one.
    for n in 0..12 {
        rig.risk(&format!("r-{n}"), &subject(n), "HIGH", 0);
    }
    redis.cli(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]);
    redis.cli(&["CONFIG", "SET", "slowlog-max-len", "32768"]);
    redis.cli(&["SLOWLOG", "RESET"]);
    for n in 12..27 {
        rig.risk(&format!("r-{n}"), &subject(n), "HIGH", 0);
    }
    let log: Value =
        serde_json::from_str(&redis.cli(&["--json", "SLOWLOG", "GET", "32768"])).unwrap();
    let mut micros: Vec<u64> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e[3][0]
                .as_str()
                .is_some_and(|c| c.eq_ignore_ascii_case("eval"))
        })
        .map(|e| e[2].as_u64().unwrap())
        .collect();
    assert_eq!(micros.len(), 15, "{log}");
    micros.sort_unstable();
    // Reading 1,000 entries (the scan this replaced) took over 1 ms. The
    // commands a script runs are logged too: only the EVALs count here.
    assert!(micros[7] < 400, "{micros:?}");
    let fields = redis.cli(&["HLEN", "{celador}:risks"]);
    assert_eq!(fields.trim(), "10000");
    let metrics = support::https::tls(
        rig.receiver.addr,
        &rig.server_ca.pem,
        None,
        &support::https::Call::get("/metrics"),
    )
    .body;
    assert!(
        metrics.contains(r#"celador_signals_actions_unapplied_total{action="risk",why="cap"} 27"#),
        "{metrics}"
    );
}
