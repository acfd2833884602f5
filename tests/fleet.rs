//! The fleet's governance store through a real `redis-server`: many
//! `celador serve` processes sharing one store see `celador revoke`,
//! `unrevoke`, `grant` and `ungrant` within a second; Redis killed,
//! restarted, emptied or fed bad data changes no verdict it should not,
//! and nothing waits on it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use tonic::transport::Channel;

use support::celador::{Celador, run, run_on_store};
use support::check::{allowed, denial, request};
use support::pki::Ca;
use support::redis::Redis;
use support::wait_for;

const EXPORTER: &str = "spiffe://example.org/ns/batch/sa/exporter";
const PAYMENTS: &str = "spiffe://example.org/ns/payments/sa/api";
const ALLOW_BOTH: &str = "rules:\n  - name: known\n    effect: allow\n    when: source.id.startsWith(\"spiffe://example.org/ns/\")\n";

/// celador instances sharing one Redis.
struct Fleet {
    redis: Redis,
    instances: Vec<Celador>,
    clients: Vec<AuthorizationClient<Channel>>,
    exporter: String,
    payments: String,
    _dir: tempfile::TempDir,
}

impl Fleet {
    /// `n` instances with `policy`, `extra` appended to their config.
    async fn start(redis: Redis, n: usize, policy: &str, extra: &str) -> Fleet {
        Fleet::start_with(redis, n, policy, extra, &[], "3s").await
    }

    /// [`Fleet::start`] with `files` beside the config and the store's
    /// `startup_wait`.
    async fn start_with(
        redis: Redis,
        n: usize,
        policy: &str,
        extra: &str,
        files: &[(&str, &str)],
        startup_wait: &str,
    ) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let ca = Ca::root("example.org root");
        std::fs::write(dir.path().join("example.org.pem"), &ca.pem).unwrap();
        std::fs::write(dir.path().join("policy.yaml"), policy).unwrap();
        let config = dir.path().join("celador.yaml");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\npolicy: policy.yaml\ntrust_domains:\n  example.org:\n    bundle: example.org.pem\nworker_threads: 1\nlog:\n  format: json\ngovernance:\n  store: {}\n  startup_wait: {startup_wait}\n{extra}",
                redis.url()
            ),
        )
        .unwrap();
        let mut fleet = Fleet {
            redis,
            instances: Vec::new(),
            clients: Vec::new(),
            exporter: ca.svid(EXPORTER).envoy_encoded(),
            payments: ca.svid(PAYMENTS).envoy_encoded(),
            _dir: dir,
        };
        for _ in 0..n {
            fleet.add(&config).await;
        }
        fleet
    }

    async fn add(&mut self, config: &Path) {
        let celador = Celador::start(config);
        let client = AuthorizationClient::connect(format!("http://{}", celador.addr))
            .await
            .unwrap();
        self.instances.push(celador);
        self.clients.push(client);
    }

    /// Instance `i`'s verdict for `cert`: "allowed" or the denial reason.
    async fn outcome(&self, i: usize, cert: &str) -> String {
        outcome(self.clients[i].clone(), cert).await
    }

    /// Instance `i`'s verdict for `cert` and the audit record it wrote
    /// (records arrive through the process's output: waited for).
    async fn checked(&self, i: usize, cert: &str) -> (String, serde_json::Value) {
        let before = self.instances[i].audit_count();
        let outcome = self.outcome(i, cert).await;
        let record = wait_for(Duration::from_secs(3), || {
            let records = self.instances[i].audit_records();
            (records.len() > before).then(|| records.into_iter().last())?
        })
        .unwrap_or_else(|| panic!("no audit record on instance {i}"));
        (outcome, record)
    }

    /// Whether instance `i` gives `cert` `expected` within `timeout`.
    async fn until(&self, i: usize, cert: &str, expected: &str, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.outcome(i, cert).await == expected {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// `celador ARGS --store URL`.
    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        run_on_store(&self.redis.url(), args)
    }

    /// Runs `celador ARGS` and measures, per instance, how long until
    /// `cert` gets `expected`: the latencies, sorted.
    async fn propagation(&self, args: &[&str], cert: &str, expected: &str) -> Vec<Duration> {
        let start = Instant::now();
        let mut watchers = Vec::new();
        for client in &self.clients {
            let (client, cert, expected) = (client.clone(), cert.to_owned(), expected.to_owned());
            watchers.push(tokio::spawn(async move {
                loop {
                    if outcome(client.clone(), &cert).await == expected {
                        return start.elapsed();
                    }
                    if start.elapsed() > Duration::from_secs(10) {
                        return Duration::MAX;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }));
        }
        let (code, out, err) = self.cli(args);
        assert_eq!(code, 0, "{out}{err}");
        let mut latencies = Vec::new();
        for w in watchers {
            latencies.push(w.await.unwrap());
        }
        latencies.sort();
        latencies
    }

    /// The `name` metric of instance `i`.
    fn metric(&self, i: usize, name: &str) -> f64 {
        let (_, body) = self.instances[i].admin_get("/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{body}"))
    }
}

async fn outcome(mut client: AuthorizationClient<Channel>, cert: &str) -> String {
    match client.check(request(cert, "GET", "/export", &[])).await {
        Ok(r) => {
            let r = r.into_inner();
            if allowed(&r) {
                "allowed".into()
            } else {
                denial(&r).map(|(_, reason)| reason).unwrap_or_default()
            }
        }
        Err(status) => format!("{:?}", status.code()),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// How many instances the propagation test starts: 20, or
/// `CELADOR_FLEET_INSTANCES` for BENCHMARKS.md's N = 1 and N = 100 runs.
fn fleet_size() -> usize {
    std::env::var("CELADOR_FLEET_INSTANCES")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_instances_see_a_revoke_within_a_second_and_an_unrevoke_as_fast() {
    let n = fleet_size();
    // Instances the later checks use (all the same one when n is 1).
    let [three, five, seven] = [3, 5, 7].map(|i| i % n);
    let fleet = Fleet::start(Redis::start(false), n, ALLOW_BOTH, "").await;
    for i in 0..n {
        assert_eq!(fleet.outcome(i, &fleet.exporter).await, "allowed");
    }
    let revoke = [
        "revoke",
        "--spiffe-id",
        EXPORTER,
        "--reason",
        "INC-4712: key leaked",
        "--by",
        "oncall",
    ];
    let revoked = fleet.propagation(&revoke, &fleet.exporter, "revoked").await;
    let unrevoke = ["unrevoke", "--spiffe-id", EXPORTER];
    let restored = fleet
        .propagation(&unrevoke, &fleet.exporter, "allowed")
        .await;
    for (what, latencies) in [("revoke", &revoked), ("unrevoke", &restored)] {
        eprintln!(
            "{what} reached {n} instances: p50 {:?}, p99 {:?}, max {:?} (from the command's start)",
            percentile(latencies, 0.5),
            percentile(latencies, 0.99),
            latencies.last().unwrap()
        );
        assert!(
            *latencies.last().unwrap() < Duration::from_secs(1),
            "{what} took {latencies:?}"
        );
    }
    // Another identity was never affected.
    assert_eq!(fleet.outcome(seven, &fleet.payments).await, "allowed");
    // The audit record says where the revocation came from; each instance
    // logged the change with who made it.
    let (code, _, err) = fleet.cli(&revoke);
    assert_eq!(code, 0, "{err}");
    let event: serde_json::Value = serde_json::from_str(err.trim()).unwrap();
    assert_eq!(event["type"], "governance_change");
    assert_eq!(event["by"], "oncall");
    assert_eq!(event["entry"], format!("spiffe_id:{EXPORTER}"));
    assert!(
        fleet
            .until(three, &fleet.exporter, "revoked", Duration::from_secs(1))
            .await
    );
    let record = wait_for(Duration::from_secs(2), || {
        fleet.instances[three]
            .audit_records()
            .into_iter()
            .rfind(|r| r["reason"] == "revoked")
    })
    .unwrap();
    assert_eq!(record["revoked"]["origin"], "store", "{record}");
    assert_eq!(record["revoked"]["reason"], "INC-4712: key leaked");
    assert!(fleet.instances[five].wait_for_log("\"by\":\"oncall\"", Duration::from_secs(2)));
}

/// The next whole second at least `ahead` from now, as RFC 3339 and as a
/// time.
fn whole_second_after(ahead: Duration) -> (String, SystemTime) {
    let t = SystemTime::now() + ahead;
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() + 1;
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    let text = chrono::DateTime::<chrono::Utc>::from(at)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    (text, at)
}

async fn sleep_until(t: SystemTime) {
    if let Ok(d) = t.duration_since(SystemTime::now()) {
        tokio::time::sleep(d).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_by_prefix_opens_and_closes_on_time_across_instances() {
    let deny_all = "rules:\n  - name: payments-only\n    effect: allow\n    when: source.id == \"spiffe://example.org/ns/payments/sa/api\"\n";
    let fleet = Fleet::start(Redis::start(false), 4, deny_all, "").await;
    let (not_before, opens) = whole_second_after(Duration::from_secs(2));
    let (code, out, err) = fleet.cli(&[
        "grant",
        "--name",
        "inc-4711-rerun",
        "--identity",
        "spiffe://example.org/ns/batch/",
        "--not-before",
        &not_before,
        "--duration",
        "2s",
        "--reason",
        "INC-4711: re-run the export",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("granted \"inc-4711-rerun\" to spiffe://example.org/ns/batch/"),
        "{out}"
    );
    let closes = opens + Duration::from_secs(2);
    // Before the window: denied everywhere (the grant is replicated, not open).
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..4 {
        assert_eq!(fleet.outcome(i, &fleet.exporter).await, "no_allow_rule");
    }
    sleep_until(opens + Duration::from_millis(50)).await;
    for i in 0..4 {
        assert_eq!(
            fleet.outcome(i, &fleet.exporter).await,
            "allowed",
            "instance {i} at the opening"
        );
    }
    let record = wait_for(Duration::from_secs(2), || {
        fleet.instances[2]
            .audit_records()
            .into_iter()
            .rfind(|r| r["reason"] == "granted")
    })
    .unwrap();
    assert_eq!(record["grant"]["origin"], "store", "{record}");
    sleep_until(closes + Duration::from_millis(50)).await;
    for i in 0..4 {
        assert_eq!(
            fleet.outcome(i, &fleet.exporter).await,
            "no_allow_rule",
            "instance {i} after the close"
        );
    }
    // A grant longer than grants_max_duration is refused by the command.
    let (code, _, err) = fleet.cli(&[
        "grant",
        "--name",
        "long",
        "--identity",
        EXPORTER,
        "--duration",
        "25h",
        "--reason",
        "x",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("longer than the maximum of 24h"), "{err}");
    // An ungrant closes an open grant at once on every instance.
    let grant_now = [
        "grant",
        "--name",
        "now",
        "--identity",
        EXPORTER,
        "--duration",
        "1h",
        "--reason",
        "y",
    ];
    let opened = fleet
        .propagation(&grant_now, &fleet.exporter, "allowed")
        .await;
    assert!(
        *opened.last().unwrap() < Duration::from_secs(1),
        "{opened:?}"
    );
    let closed = fleet
        .propagation(
            &["ungrant", "--name", "now"],
            &fleet.exporter,
            "no_allow_rule",
        )
        .await;
    assert!(
        *closed.last().unwrap() < Duration::from_secs(1),
        "{closed:?}"
    );
}

/// Checks from `cert` on every instance, concurrently, for `length`: the
/// outcomes seen and the slowest check.
async fn load(
    clients: &[AuthorizationClient<Channel>],
    cert: &str,
    length: Duration,
) -> (Vec<String>, Duration) {
    let mut tasks = Vec::new();
    for client in clients {
        let (client, cert) = (client.clone(), cert.to_owned());
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            let (mut seen, mut slowest) = (Vec::new(), Duration::ZERO);
            while start.elapsed() < length {
                let t = Instant::now();
                let o = outcome(client.clone(), &cert).await;
                slowest = slowest.max(t.elapsed());
                if !seen.contains(&o) {
                    seen.push(o);
                }
            }
            (seen, slowest)
        }));
    }
    let (mut seen, mut slowest) = (Vec::new(), Duration::ZERO);
    for t in tasks {
        let (s, d) = t.await.unwrap();
        slowest = slowest.max(d);
        for o in s {
            if !seen.contains(&o) {
                seen.push(o);
            }
        }
    }
    (seen, slowest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_changes_no_verdict_and_a_restart_with_persistence_loses_nothing() {
    let mut fleet = Fleet::start(Redis::start(true), 3, ALLOW_BOTH, "").await;
    let revoke = ["revoke", "--spiffe-id", EXPORTER, "--reason", "INC-1"];
    let revoked = fleet.propagation(&revoke, &fleet.exporter, "revoked").await;
    assert!(*revoked.last().unwrap() < Duration::from_secs(1));
    assert_eq!(fleet.metric(0, "celador_governance_store_connected"), 1.0);
    assert_eq!(
        fleet.metric(0, "celador_governance_store_staleness_seconds"),
        0.0
    );

    // Killed under load: every verdict stays, no check waits.
    let loaded = tokio::spawn({
        let clients = fleet.clients.clone();
        let (exporter, payments) = (fleet.exporter.clone(), fleet.payments.clone());
        async move {
            let a = load(&clients, &exporter, Duration::from_secs(2));
            let b = load(&clients, &payments, Duration::from_secs(2));
            tokio::join!(a, b)
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    fleet.redis.kill();
    let ((exporter_seen, slow_a), (payments_seen, slow_b)) = loaded.await.unwrap();
    assert_eq!(exporter_seen, ["revoked"]);
    assert_eq!(payments_seen, ["allowed"]);
    eprintln!("slowest check while Redis died: {:?}", slow_a.max(slow_b));
    assert!(
        slow_a.max(slow_b) < Duration::from_millis(250),
        "{slow_a:?} {slow_b:?}"
    );
    // Said in /readyz (still ready: the files and the last replica decide),
    // counted as staleness.
    let (status, body) = fleet.instances[1].admin_get("/readyz");
    assert_eq!(status, 200);
    assert!(body.contains("governance store unreachable"), "{body}");
    assert!(body.contains("deciding with the last replica"), "{body}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(fleet.metric(1, "celador_governance_store_connected"), 0.0);
    assert!(fleet.metric(1, "celador_governance_store_staleness_seconds") >= 1.0);

    // Restarted with its append-only file: the revocation is still there,
    // the replicas reconnect, and what changes next reaches them.
    fleet.redis.restart();
    let (code, out, _) = fleet.cli(&["governance"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!("revoked  spiffe_id:{EXPORTER}")),
        "{out}"
    );
    let restored = fleet
        .propagation(
            &["unrevoke", "--spiffe-id", EXPORTER],
            &fleet.exporter,
            "allowed",
        )
        .await;
    // Up to a reconnection backoff (2 s at most) plus the propagation.
    assert!(
        *restored.last().unwrap() < Duration::from_secs(3),
        "{restored:?}"
    );
    for i in 0..3 {
        assert_eq!(
            fleet.metric(i, "celador_governance_store_epochs_total"),
            0.0,
            "no new epoch: nothing was lost"
        );
    }
    assert!(
        fleet.instances[0]
            .log()
            .contains("governance store unreachable")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_instance_that_missed_changes_catches_up() {
    let fleet = Fleet::start(Redis::start(false), 2, ALLOW_BOTH, "").await;
    let paused = fleet.instances[1].pid().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-STOP", &paused])
            .status()
            .unwrap()
            .success()
    );
    let (code, out, err) = fleet.cli(&[
        "revoke",
        "--spiffe-id-prefix",
        "spiffe://example.org/ns/batch",
        "--reason",
        "decommissioned",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    // Its connections are cut while it sleeps: it must reconnect and read
    // the whole state, not only what the feed says next.
    fleet.redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    assert!(
        std::process::Command::new("kill")
            .args(["-CONT", &paused])
            .status()
            .unwrap()
            .success()
    );
    let caught_up = fleet
        .until(1, &fleet.exporter, "revoked", Duration::from_secs(3))
        .await;
    assert!(caught_up, "{}", fleet.instances[1].log());
    assert_eq!(fleet.outcome(0, &fleet.exporter).await, "revoked");
    assert_eq!(fleet.outcome(1, &fleet.payments).await, "allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_entry_is_refused_naming_its_key_and_the_last_good_state_is_kept() {
    let fleet = Fleet::start(Redis::start(false), 1, ALLOW_BOTH, "").await;
    let revoke = ["revoke", "--spiffe-id", EXPORTER, "--reason", "INC-2"];
    fleet.propagation(&revoke, &fleet.exporter, "revoked").await;
    // Written by hand: the same entry broken, and a new one that is not a
    // SPIFFE ID; then a feed record, as every writer adds.
    let field = format!("spiffe_id:{EXPORTER}");
    fleet
        .redis
        .cli(&["HSET", "{celador}:revocations", &field, "{\"reason\": 3}"]);
    fleet.redis.cli(&[
        "HSET",
        "{celador}:revocations",
        "spiffe_id:nope",
        "{\"spiffe_id\":\"nope\",\"reason\":\"x\",\"by\":\"\",\"from\":\"\",\"at\":\"\"}",
    ]);
    fleet
        .redis
        .cli(&["XADD", "{celador}:feed", "*", "op", "hand", "entry", "x"]);
    let celador = &fleet.instances[0];
    assert!(
        celador.wait_for_log(
            &format!("{{celador}}:revocations field \\\"{field}\\\""),
            Duration::from_secs(2)
        ),
        "{}",
        celador.log()
    );
    assert!(
        celador
            .log()
            .contains("{celador}:revocations field \\\"spiffe_id:nope\\\""),
        "{}",
        celador.log()
    );
    assert_eq!(
        fleet.metric(0, "celador_governance_store_refused_entries_total"),
        2.0
    );
    // The broken entry's last good value still revokes.
    assert_eq!(fleet.outcome(0, &fleet.exporter).await, "revoked");
    assert_eq!(fleet.outcome(0, &fleet.payments).await, "allowed");
    let (_, out, _) = fleet.cli(&["governance"]);
    assert!(
        out.contains("REFUSED  {celador}:revocations field \"spiffe_id:nope\""),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_at_start_serves_from_the_files_and_an_emptied_redis_is_a_new_epoch() {
    // The files revoke PAYMENTS; the store is not there yet.
    let mut redis = Redis::start(false);
    redis.kill();
    let file = "revocations:\n  - spiffe_id: spiffe://example.org/ns/payments/sa/api\n    reason: from the file\n";
    let started = Instant::now();
    let mut fleet = Fleet::start_with(
        redis,
        1,
        ALLOW_BOTH,
        "revocations: revocations.yaml\n",
        &[("revocations.yaml", file)],
        "500ms",
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(fleet.outcome(0, &fleet.payments).await, "revoked");
    assert_eq!(fleet.outcome(0, &fleet.exporter).await, "allowed");
    let (status, body) = fleet.instances[0].admin_get("/readyz");
    assert_eq!(status, 200);
    assert!(body.contains("deciding with the files alone"), "{body}");
    assert_eq!(fleet.metric(0, "celador_governance_store_connected"), 0.0);
    // Never synced: as stale as can be, not "since start-up".
    assert_eq!(
        fleet.metric(0, "celador_governance_store_staleness_seconds"),
        f64::from(u32::MAX)
    );
    fleet.redis.restart();
    let revoked = fleet
        .propagation(
            &[
                "revoke",
                "--spiffe-id",
                EXPORTER,
                "--reason",
                "from the store",
            ],
            &fleet.exporter,
            "revoked",
        )
        .await;
    assert!(
        *revoked.last().unwrap() < Duration::from_secs(3),
        "{revoked:?}"
    );
    // Both revoke: the file's and the store's.
    assert_eq!(fleet.outcome(0, &fleet.payments).await, "revoked");
    // Redis comes back empty (no persistence): a new epoch, logged and
    // counted; the state follows the store, the file's entry stays.
    fleet.redis.restart();
    let followed = fleet
        .until(0, &fleet.exporter, "allowed", Duration::from_secs(4))
        .await;
    assert!(followed, "{}", fleet.instances[0].log());
    assert_eq!(
        fleet.metric(0, "celador_governance_store_epochs_total"),
        1.0
    );
    assert!(fleet.instances[0].log().contains("came back empty"));
    assert_eq!(fleet.outcome(0, &fleet.payments).await, "revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_can_deny_while_revocations_may_be_stale() {
    let policy = format!(
        "{ALLOW_BOTH}  - name: stale-store\n    effect: deny\n    when: signals.store_stale_seconds > 1\n"
    );
    let mut fleet = Fleet::start(Redis::start(false), 1, &policy, "").await;
    assert_eq!(fleet.outcome(0, &fleet.exporter).await, "allowed");
    fleet.redis.kill();
    let start = Instant::now();
    assert!(
        fleet
            .until(0, &fleet.exporter, "denied_by_rule", Duration::from_secs(5))
            .await
    );
    let waited = start.elapsed();
    // Staleness counts from the last contact (at most a feed wait, 1 s,
    // before the kill).
    assert!(waited >= Duration::from_secs(1), "denied after {waited:?}");
    let record = wait_for(Duration::from_secs(3), || {
        fleet.instances[0]
            .audit_records()
            .into_iter()
            .rfind(|r| r["reason"] == "denied_by_rule")
    })
    .unwrap();
    let stale = record["read"]["signals"]["store_stale_seconds"].as_u64();
    assert!(stale.unwrap() >= 2, "{record}");
    fleet.redis.restart();
    assert!(
        fleet
            .until(0, &fleet.exporter, "allowed", Duration::from_secs(4))
            .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_signal_rule_denies_once_the_sum_over_four_instances_crosses_it() {
    let policy = format!(
        "{ALLOW_BOTH}  - name: fleet-volume\n    effect: deny\n    when: signals.fleet.requests_1m > 40\n"
    );
    let fleet = Fleet::start(Redis::start(false), 4, &policy, "").await;
    // 11 requests on each instance: 44 over the fleet, 11 on each.
    for round in 0..11 {
        for i in 0..4 {
            let o = fleet.outcome(i, &fleet.exporter).await;
            // Only the last requests can see more than 40.
            if round < 9 {
                assert_eq!(o, "allowed", "round {round} on instance {i}");
            }
        }
    }
    // After at most an interval and a round trip, every instance sees the
    // fleet's total: the next request is denied, on every instance.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for i in 0..4 {
        let (outcome, record) = fleet.checked(i, &fleet.exporter).await;
        assert_eq!(outcome, "denied_by_rule", "instance {i}");
        let signals = &record["read"]["signals"];
        assert!(signals["requests_1m"].as_u64().unwrap() <= 12, "{record}");
        assert!(
            signals["fleet"]["requests_1m"].as_u64().unwrap() > 40,
            "{record}"
        );
    }
    // Another identity is counted apart.
    assert_eq!(fleet.outcome(2, &fleet.payments).await, "allowed");

    // The error bound, measured: a burst on instance 0 until instance 3's
    // fleet count includes it.
    let start = Instant::now();
    for _ in 0..20 {
        fleet.outcome(0, &fleet.payments).await;
    }
    let mut lag = None;
    while start.elapsed() < Duration::from_secs(3) {
        fleet.outcome(3, &fleet.payments).await;
        let others = fleet.instances[3]
            .audit_records()
            .iter()
            .rev()
            .find_map(|r| {
                let s = &r["read"]["signals"];
                let fleet_count = s["fleet"]["requests_1m"].as_u64()?;
                (r["spiffe_id"] == PAYMENTS)
                    .then(|| fleet_count - s["requests_1m"].as_u64().unwrap_or(0))
            });
        // Instance 2's one request and instance 0's burst of 20.
        if others.is_some_and(|n| n >= 21) {
            lag = Some(start.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lag = lag.expect("instance 3 never saw instance 0's burst");
    eprintln!("fleet signal lag (burst of 20 on one instance, seen on another): {lag:?}");
    assert!(lag < Duration::from_millis(800), "{lag:?}");
}

/// The commands `redis` has processed so far.
fn commands_processed(redis: &Redis) -> u64 {
    redis
        .cli(&["INFO", "stats"])
        .lines()
        .find_map(|l| {
            l.strip_prefix("total_commands_processed:")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_operations_per_instance_under_load_stay_within_the_documented_budget() {
    let fleet = Fleet::start(Redis::start(false), 2, ALLOW_BOTH, "").await;
    let before = commands_processed(&fleet.redis);
    let start = Instant::now();
    let load = Duration::from_secs(3);
    let mut tasks = Vec::new();
    for client in &fleet.clients {
        for cert in [&fleet.exporter, &fleet.payments] {
            let (client, cert) = (client.clone(), cert.clone());
            tasks.push(tokio::spawn(async move {
                let mut checks = 0u64;
                while start.elapsed() < load {
                    assert_eq!(outcome(client.clone(), &cert).await, "allowed");
                    checks += 1;
                }
                checks
            }));
        }
    }
    let mut checks = 0;
    for t in tasks {
        checks += t.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let per_instance = (commands_processed(&fleet.redis) - before) as f64 / 2.0 / elapsed;
    eprintln!(
        "Redis commands per instance per second: {per_instance:.1}, under {:.0} checks/s per instance (2 caller identities each, signals_interval 250ms)",
        checks as f64 / 2.0 / elapsed
    );
    // docs/fleet.md's budget: at most ~11 commands per active identity per
    // flush, 4 flushes a second, plus the feed's XREAD a second; whatever
    // the request rate.
    assert!(
        checks as f64 / elapsed > 100.0,
        "not loaded: {checks} checks"
    );
    assert!(
        per_instance <= 2.0 * 44.0 + 3.0,
        "{per_instance:.1} commands/s"
    );
}

/// The last audit record of `id` on instance `i`: (local, fleet)
/// `requests_1m`.
fn counts_1m(fleet: &Fleet, i: usize, id: &str) -> Option<(u64, u64)> {
    fleet.instances[i]
        .audit_records()
        .iter()
        .rev()
        .find_map(|r| {
            let s = &r["read"]["signals"];
            (r["spiffe_id"] == id).then(|| {
                (
                    s["requests_1m"].as_u64().unwrap_or(0),
                    s["fleet"]["requests_1m"].as_u64().unwrap_or(0),
                )
            })
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_fleet_signals_key_is_named_and_neither_inflates_nor_stops_the_others() {
    // The deciding rule reads both counts, so audit records show them.
    let policy = "rules:\n  - name: counted\n    effect: allow\n    when: source.id.startsWith(\"spiffe://example.org/ns/\") && signals.fleet.requests_1m < 1000 && signals.requests_1m < 1000\n";
    let fleet = Fleet::start(Redis::start(false), 2, policy, "").await;
    // Bad data where the exporter's counts live: a string, not a hash.
    let key = format!("{{celador}}:signals:{EXPORTER}");
    assert!(fleet.redis.cli(&["SET", &key, "garbage"]).contains("OK"));
    for _ in 0..6 {
        for i in 0..2 {
            assert_eq!(fleet.outcome(i, &fleet.exporter).await, "allowed");
            assert_eq!(fleet.outcome(i, &fleet.payments).await, "allowed");
        }
        // Several exchanges: each fails for the exporter's key.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    fleet.checked(1, &fleet.exporter).await;
    fleet.checked(1, &fleet.payments).await;
    // The exporter's fleet count is its local one: nothing exchanged, and
    // nothing left in flight to inflate it.
    let (local, total) = counts_1m(&fleet, 1, EXPORTER).unwrap();
    assert_eq!((local, total), (7, 7));
    // The payments identity is exchanged as usual: instance 1 sees
    // instance 0's six requests.
    let (local, total) = counts_1m(&fleet, 1, PAYMENTS).unwrap();
    assert_eq!(local, 7);
    assert_eq!(total, 13);
    // The key is named in the log, once per instance.
    let log = fleet.instances[1].log();
    let named = log
        .lines()
        .filter(|l| l.contains("store refused the key"))
        .count();
    assert_eq!(named, 1, "{log}");
    assert!(
        log.contains("signals:spiffe://example.org/ns/batch/sa/exporter"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_store_is_verified_with_its_ca_file_and_an_unknown_ca_is_refused() {
    let server_ca = Ca::root("redis CA");
    let server = server_ca.leaf().dns("localhost").build();
    let redis = Redis::start_tls(&server.pem, &server.key_pem, &server_ca.pem);
    let ca = redis.ca_file().unwrap().display().to_string();
    assert!(redis.url().starts_with("rediss://"));
    let other = tempfile::tempdir().unwrap();
    let wrong = other.path().join("other-ca.pem");
    std::fs::write(&wrong, Ca::root("some other CA").pem).unwrap();
    let wrong = wrong.display().to_string();

    // The command verifies the server: a CA that did not issue its
    // certificate is refused, and nothing is written.
    let url = redis.url();
    let revoke = |ca: &str| {
        run(&[
            "revoke",
            "--store",
            &url,
            "--ca-file",
            ca,
            "--spiffe-id",
            EXPORTER,
            "--reason",
            "tls",
        ])
    };
    let (code, out, err) = revoke(&wrong);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    // A sidecar with the wrong CA cannot sync: it serves from the files and
    // says so; one with the right CA follows the store over TLS.
    let mut fleet = Fleet::start_with(
        redis,
        1,
        ALLOW_BOTH,
        &format!("  ca_file: {wrong}\n"),
        &[],
        "500ms",
    )
    .await;
    let (status, body) = fleet.instances[0].admin_get("/readyz");
    assert_eq!(status, 200);
    assert!(body.contains("deciding with the files alone"), "{body}");
    let config = fleet._dir.path().join("celador.yaml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&wrong, &ca);
    std::fs::write(&config, text).unwrap();
    fleet.add(&config).await;
    let (code, out, err) = revoke(&ca);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        fleet
            .until(1, &fleet.exporter, "revoked", Duration::from_secs(3))
            .await
    );
    assert_eq!(fleet.outcome(0, &fleet.exporter).await, "allowed");
    assert_eq!(fleet.metric(1, "celador_governance_store_connected"), 1.0);
    assert_eq!(fleet.metric(0, "celador_governance_store_connected"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_from_a_file_is_used_and_never_shown() {
    const SECRET: &str = "pw-5f1d0c9e-never-shown";
    let redis = Redis::start_with_password(false, Some(SECRET));
    let secrets = tempfile::tempdir().unwrap();
    let (good, bad) = (
        secrets.path().join("password"),
        secrets.path().join("wrong"),
    );
    std::fs::write(&good, format!("{SECRET}\n")).unwrap();
    std::fs::write(&bad, "not-it\n").unwrap();
    let extra = format!("  password_file: {}\n", good.display());
    // The governance section is the config's last: `extra` continues it.
    let fleet = Fleet::start(redis, 1, ALLOW_BOTH, &extra).await;
    let good = good.to_str().unwrap();
    let revoke = [
        "revoke",
        "--password-file",
        good,
        "--spiffe-id",
        EXPORTER,
        "--reason",
        "r",
    ];
    let revoked = fleet.propagation(&revoke, &fleet.exporter, "revoked").await;
    assert!(*revoked.last().unwrap() < Duration::from_secs(1));
    let (code, out, err) = fleet.cli(&["governance", "--password-file", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("Password authentication failed"), "{err}");
    let (_, listing, _) = fleet.cli(&["governance", "--password-file", good]);
    for text in [
        out,
        err,
        listing,
        fleet.instances[0].log(),
        fleet.instances[0].admin_get("/metrics").1,
    ] {
        assert!(!text.contains(SECRET), "the password leaked: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_for_a_time_lapses_on_every_instance() {
    let fleet = Fleet::start(Redis::start(false), 2, ALLOW_BOTH, "").await;
    let revoke = [
        "revoke",
        "--spiffe-id",
        EXPORTER,
        "--reason",
        "cool-down",
        "--for",
        "2s",
    ];
    let start = Instant::now();
    let revoked = fleet.propagation(&revoke, &fleet.exporter, "revoked").await;
    assert!(*revoked.last().unwrap() < Duration::from_secs(1));
    // `expires` is written to the second: the entry lapses 1 to 2 s after
    // the command, with no store round trip, on both instances.
    for i in 0..2 {
        assert!(
            fleet
                .until(i, &fleet.exporter, "allowed", Duration::from_secs(3))
                .await
        );
    }
    let lapsed = start.elapsed();
    assert!(
        lapsed >= Duration::from_secs(1) && lapsed < Duration::from_millis(2600),
        "{lapsed:?}"
    );
    let (_, out, _) = fleet.cli(&["governance"]);
    assert!(out.contains("lapsed at"), "{out}");
}

#[test]
fn the_listing_names_a_revocations_set_with_credentials_redacted() {
    const KEY: &str = "AKIAIOSFODNN7EXAMPLE";
    const EVENT: &str = "https://schemas.openid.net/secevent/risc/event-type/credential-compromise";
    let redis = Redis::start(false);
    let url = redis.url();
    let cli = |args: &[&str]| run_on_store(&url, args);
    // One made by hand, one as the signals receiver writes it: `set` names
    // the SET (its `jti` here a transmitter's text holding a key).
    for id in [EXPORTER, PAYMENTS] {
        let (code, out, err) = cli(&["revoke", "--spiffe-id", id, "--reason", "r"]);
        assert_eq!(code, 0, "{out}{err}");
    }
    let field = format!("spiffe_id:{PAYMENTS}");
    let raw = redis.cli(&["HGET", "{celador}:revocations", &field]);
    let mut entry: serde_json::Value = serde_json::from_str(raw.trim()).unwrap();
    entry["set"] = serde_json::json!({
        "source": "https://idp.example.com/",
        "event": EVENT,
        "jti": format!("c-1 {KEY}"),
    });
    // The reason and who wrote it as src/ssf/store.rs writes them (the
    // reason naming the SET's `jti`), and free text holding a credential.
    entry["reason"] = serde_json::json!(format!(
        "credential-compromise ({EVENT} SET c-1 {KEY} from https://idp.example.com/)"
    ));
    entry["by"] = serde_json::json!(format!("https://idp.example.com/ {KEY}"));
    entry["from"] = serde_json::json!(format!("receiver-0 {KEY}"));
    redis.cli(&["HSET", "{celador}:revocations", &field, &entry.to_string()]);

    let (code, text, err) = cli(&["governance"]);
    assert_eq!(code, 0, "{text}{err}");
    let line = |id: &str| text.lines().find(|l| l.contains(id)).unwrap().to_owned();
    assert!(
        line(PAYMENTS).contains(&format!(
            "set jti \"c-1 <redacted>\" of \"{EVENT}\" from \"https://idp.example.com/\""
        )),
        "{text}"
    );
    assert!(!line(EXPORTER).contains("set "), "{text}");
    assert!(
        line(PAYMENTS).contains(&format!(
            "reason \"credential-compromise ({EVENT} SET c-1 <redacted> from https://idp.example.com/)\""
        )),
        "{text}"
    );

    let (code, json, err) = cli(&["governance", "--format", "json"]);
    assert_eq!(code, 0, "{json}{err}");
    let listed: serde_json::Value = serde_json::from_str(&json).unwrap();
    let revocations = &listed["revocations"];
    assert_eq!(
        revocations[&field]["set"],
        serde_json::json!({
            "source": "https://idp.example.com/",
            "event": EVENT,
            "jti": "c-1 <redacted>",
        })
    );
    assert!(
        revocations[&format!("spiffe_id:{EXPORTER}")]
            .get("set")
            .is_none()
    );
    assert_eq!(
        revocations[&field]["reason"],
        format!("credential-compromise ({EVENT} SET c-1 <redacted> from https://idp.example.com/)")
    );
    assert_eq!(
        revocations[&field]["by"],
        "https://idp.example.com/ <redacted>"
    );
    assert!(!text.contains(KEY) && !json.contains(KEY), "{text}{json}");
    // An operator's revocation held behind that tool's: the CLI's line and
    // its audit event name the tool, redacted.
    let (code, out, err) = cli(&["revoke", "--spiffe-id", PAYMENTS, "--reason", "INC-1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("https://idp.example.com/ <redacted>'s revocation"),
        "{out}"
    );
    let event: serde_json::Value = serde_json::from_str(err.trim()).unwrap();
    assert_eq!(
        event["held"]["behind"], "https://idp.example.com/ <redacted>",
        "{event}"
    );
    assert!(!out.contains(KEY) && !err.contains(KEY), "{out}{err}");
}

/// The attacker review's leak: the JSON listing showed raw what the text
/// listing hides (a field, a name, identities, an expiry, an unknown
/// member, a grant's `when`); every name and value is redacted in both.
#[test]
fn the_json_listing_redacts_every_name_and_value_as_the_text_listing_does() {
    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXNpZ25hdHVyZQ";
    const MIDDLE: &str = "eyJzdWIiOiJ4In0";
    let redis = Redis::start(false);
    let url = redis.url();
    let cli = |args: &[&str]| run_on_store(&url, args);
    let when = format!("request.headers['authorization'] == 'Bearer {JWT}'");
    let (code, out, err) = cli(&[
        "grant",
        "--name",
        "g1",
        "--identity",
        EXPORTER,
        "--duration",
        "1h",
        "--reason",
        "r",
        "--when",
        &when,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = cli(&["revoke", "--spiffe-id", PAYMENTS, "--reason", "r"]);
    assert_eq!(code, 0, "{out}{err}");
    // Written by hand into the store: refused by the sidecars, listed.
    let grant = serde_json::json!({
        "name": format!("g2 {JWT}"),
        "identities": [format!("spiffe://a/b?token={JWT}")],
        "expires": "2030-01-01T00:00:00Z",
        "reason": "r",
    });
    let field = format!("g2 {JWT}");
    redis.cli(&["HSET", "{celador}:grants", &field, &grant.to_string()]);
    let revoked = format!("spiffe_id:{PAYMENTS}");
    let raw = redis.cli(&["HGET", "{celador}:revocations", &revoked]);
    let mut entry: serde_json::Value = serde_json::from_str(raw.trim()).unwrap();
    entry["expires"] = serde_json::json!(format!("Bearer {JWT}"));
    entry["extra"] = serde_json::json!(JWT);
    redis.cli(&[
        "HSET",
        "{celador}:revocations",
        &revoked,
        &entry.to_string(),
    ]);

    let (code, text, err) = cli(&["governance"]);
    assert_eq!(code, 0, "{text}{err}");
    assert!(text.contains("field \"g2 <redacted>\""), "{text}");
    assert!(text.matches("REFUSED").count() == 2, "{text}");
    let (code, json, err) = cli(&["governance", "--format", "json"]);
    assert_eq!(code, 0, "{json}{err}");
    let listed: serde_json::Value = serde_json::from_str(&json).unwrap();
    let hand = &listed["grants"]["g2 <redacted>"];
    assert_eq!(hand["name"], "g2 <redacted>", "{json}");
    assert_eq!(
        hand["identities"][0], "spiffe://a/b?token=<redacted>",
        "{json}"
    );
    assert_eq!(
        listed["revocations"][&revoked]["expires"], "Bearer <redacted>",
        "{json}"
    );
    assert_eq!(listed["grants"]["g1"]["identities"][0], EXPORTER, "{json}");
    assert!(
        listed["grants"]["g1"]["when"]
            .as_str()
            .unwrap()
            .contains("<redacted>"),
        "{json}"
    );
    for shown in [&text, &json] {
        assert!(!shown.contains(JWT) && !shown.contains(MIDDLE), "{shown}");
    }
}

#[test]
fn a_store_that_cannot_be_used_stops_start_up_with_64_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::root("example.org root");
    std::fs::write(dir.path().join("example.org.pem"), &ca.pem).unwrap();
    std::fs::write(dir.path().join("policy.yaml"), ALLOW_BOTH).unwrap();
    let config = dir.path().join("celador.yaml");
    for (governance, expected) in [
        (
            "  store: redis://127.0.0.1:1/0\n  password_file: missing-password\n",
            "cannot read the store's password file",
        ),
        (
            "  store: http://127.0.0.1:1/0\n",
            "governance.store: 'http://127.0.0.1:1/0' is not a URL like redis://",
        ),
        (
            "  store: redis://:pw-in-url@127.0.0.1:1/0\n  ca_file: ca.pem\n",
            "governance.ca_file: a CA file verifies a rediss:// store",
        ),
    ] {
        std::fs::write(
            &config,
            format!("listen: 127.0.0.1:0\npolicy: policy.yaml\ntrust_domains:\n  example.org:\n    bundle: example.org.pem\ngovernance:\n{governance}"),
        )
        .unwrap();
        let (code, out, err) = run(&["serve", "--config", config.to_str().unwrap()]);
        assert_eq!(code, 64, "{out}{err}");
        assert!(err.contains(expected), "{err}");
        assert!(!err.contains("pw-in-url"), "{err}");
    }
}
