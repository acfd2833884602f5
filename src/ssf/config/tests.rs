use super::*;
use crate::testing::jwt::{self, Signer};

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn a_config_loads_with_paths_relative_to_its_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "idp.json", &jwt::jwks(&[&Signer::es256("k1")]));
    write(dir.path(), "idp-token", "s3cret\n");
    write(
        dir.path(),
        "receiver.yaml",
        "listen: 127.0.0.1:0\ntls: {cert: tls.crt, key: tls.key}\n\
         transmitters:\n  - issuer: https://idp.example.com/\n    audience: [https://r.example.com/]\n    jwks_file: idp.json\n    push_token_file: idp-token\n\
         events: {risc/account-purged: ignore}\n\
         sink: {revocations_file: out/revocations.yaml}\n",
    );
    let loaded = load(&dir.path().join("receiver.yaml")).unwrap();
    assert_eq!(loaded.listen.to_string(), "127.0.0.1:0");
    assert_eq!(loaded.cert, dir.path().join("tls.crt"));
    assert_eq!(loaded.reload_interval, Duration::from_secs(10));
}

#[test]
fn every_problem_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "empty-token", "  \n");
    write(
        dir.path(),
        "receiver.yaml",
        "listen: nowhere\ntls: {cert: c, key: k, reload_interval: 0s}\nmax_age: forever\nrisk_expiry: 2160h\n\
         transmitters:\n  - issuer: https://idp.example.com/\n    audience: a\n    jwks_file: missing.json\n    push_token_file: empty-token\n\
         subjects:\n  - subject: {format: opaque, id: x}\n\
         events: {account-purged: ignore}\n\
         max_risks: 2000000\n\
         assurance_levels: {NIST-AAL: {nist-aal1: high, NIST-AAL1: low}, \"\": {}}\n\
         sink: {revocations_file: r.yaml}\nlog: {level: \"é\"}\n",
    );
    let error = load(&dir.path().join("receiver.yaml")).unwrap_err();
    for expected in [
        "listen:",
        "max_age:",
        "tls.reload_interval: must be more than 0",
        "risk_expiry: at most 720h",
        "missing.json",
        "empty-token is empty",
        "subject 1:",
        "account-purged",
        "log.level",
        "max_risks: at most 1000000",
        "assurance_levels.NIST-AAL: level \"nist-aal1\" is given twice",
        "assurance_levels: a namespace name is empty",
    ] {
        assert!(error.contains(expected), "{expected} in:\n{error}");
    }
    let unknown = dir.path().join("unknown.yaml");
    write(
        dir.path(),
        "unknown.yaml",
        "tls: {cert: c, key: k}\ntransmitters: []\nsink: {revocations_file: r}\nstore: redis://x\n",
    );
    assert!(load(&unknown).unwrap_err().contains("store"));
}

#[test]
fn the_sink_is_a_file_or_the_store_one_of_them() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "idp.json", &jwt::jwks(&[&Signer::es256("k1")]));
    let with = |sink: &str| {
        write(
            dir.path(),
            "receiver.yaml",
            &format!(
                "tls: {{cert: c, key: k}}\ntransmitters:\n  - issuer: https://idp.example.com/\n    audience: a\n    jwks_file: idp.json\nsink: {sink}\n"
            ),
        );
        load(&dir.path().join("receiver.yaml"))
    };
    assert!(with("{store: redis://127.0.0.1:6379/0}").is_ok());
    for (sink, expected) in [
        ("{}", "sink: give revocations_file or store"),
        (
            "{store: redis://x:1/0, revocations_file: r}",
            "sink: give revocations_file or store",
        ),
        (
            "{store: http://x/}",
            "sink.store: http://x/: the store's URL",
        ),
        (
            "{store: redis://x:1/0, key_prefix: \"{a}\"}",
            "sink.key_prefix",
        ),
        (
            "{store: redis://x:1/0, password_env: CELADOR_TEST_NO_SUCH_VARIABLE}",
            "CELADOR_TEST_NO_SUCH_VARIABLE",
        ),
    ] {
        let error = with(sink).unwrap_err();
        assert!(error.contains(expected), "{sink}: {expected} in:\n{error}");
    }
}

#[test]
fn keys_come_from_a_file_or_an_https_url_one_of_them() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "idp.json", &jwt::jwks(&[&Signer::es256("k1")]));
    // A port nothing listens on: the first fetch fails at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let with = |keys: &str| {
        write(
            dir.path(),
            "receiver.yaml",
            &format!(
                "tls: {{cert: c, key: k}}\ntransmitters:\n  - issuer: https://idp.example.com/\n    audience: a\n{keys}\nsink: {{revocations_file: r.yaml}}\n"
            ),
        );
        load(&dir.path().join("receiver.yaml"))
    };
    assert!(with("    jwks_file: idp.json").is_ok());
    for (keys, expected) in [
        ("    jwks_ca_file: ca.pem", "give jwks_file or jwks_uri"),
        (
            "    jwks_file: idp.json\n    jwks_uri: https://idp.example.com/jwks",
            "give jwks_file or jwks_uri",
        ),
        (
            "    jwks_file: idp.json\n    jwks_ca_file: ca.pem",
            "a CA file is for jwks_uri",
        ),
        (
            "    jwks_uri: http://idp.example.com/jwks",
            "transmitters[0] (https://idp.example.com/): jwks_uri http://idp.example.com/jwks: only https:// is accepted",
        ),
        ("    jwks_uri: ftp://idp/jwks", "not an https:// URL"),
        (
            "    jwks_uri: https://idp.example.com/jwks\n    jwks_ca_file: missing.pem",
            "cannot read the CA file",
        ),
        (
            "    jwks_uri: https://idp.example.com/jwks\n    jwks_refresh: 0s",
            "jwks_refresh: at least 1s",
        ),
        (
            &format!("    jwks_uri: http://127.0.0.1:{port}/jwks?secret=x"),
            &format!(
                "transmitters[0] (https://idp.example.com/): jwks_uri: the first fetch failed: http://127.0.0.1:{port}/jwks: cannot connect"
            ),
        ),
    ] {
        let error = with(keys).unwrap_err();
        assert!(error.contains(expected), "{keys}: {expected} in:\n{error}");
        assert!(!error.contains("secret=x"), "{error}");
    }
}

#[test]
fn a_poll_endpoint_is_https_with_a_token_file_that_holds_one() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "idp.json", &jwt::jwks(&[&Signer::es256("k1")]));
    write(dir.path(), "token", "t0k3n\n");
    write(dir.path(), "empty", "\n");
    let with = |poll: &str| {
        write(
            dir.path(),
            "receiver.yaml",
            &format!(
                "tls: {{cert: c, key: k}}\ntransmitters:\n  - issuer: https://idp.example.com/\n    audience: a\n    jwks_file: idp.json\n    poll: {poll}\nsink: {{revocations_file: r.yaml}}\n"
            ),
        );
        load(&dir.path().join("receiver.yaml"))
    };
    let loaded = with("{url: \"https://idp.example.com/poll\", token_file: token}").unwrap();
    assert_eq!(loaded.receiver.pollers().count(), 1);
    for (poll, expected) in [
        (
            "{url: \"http://idp.example.com/poll\"}",
            "poll.url http://idp.example.com/poll: only https:// is accepted",
        ),
        (
            "{url: \"https://idp.example.com/poll\", interval: 1ms}",
            "poll.interval: at least 100ms",
        ),
        (
            "{url: \"https://idp.example.com/poll\", token_file: empty}",
            "poll.token_file:",
        ),
        (
            "{url: \"https://idp.example.com/poll\", secret: x}",
            "secret",
        ),
    ] {
        let error = with(poll).unwrap_err();
        assert!(error.contains(expected), "{poll}: {expected} in:\n{error}");
    }
}

#[test]
fn an_assurance_level_that_is_not_a_risk_level_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "idp.json", &jwt::jwks(&[&Signer::es256("k1")]));
    write(
        dir.path(),
        "receiver.yaml",
        "tls: {cert: c, key: k}\ntransmitters:\n  - issuer: https://idp.example.com/\n    audience: a\n    jwks_file: idp.json\n    max_risks: 5\n\
         assurance_levels: {NIST-AAL: {nist-aal1: severe}}\nsink: {revocations_file: r.yaml}\n",
    );
    let error = load(&dir.path().join("receiver.yaml")).unwrap_err();
    assert!(
        error.contains("severe") && error.contains("low") && error.contains("high"),
        "{error}"
    );
}

#[test]
fn a_long_poll_waits_from_a_second_to_five_minutes() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "idp.json", &jwt::jwks(&[&Signer::es256("k1")]));
    let with = |poll: &str| {
        write(
            dir.path(),
            "receiver.yaml",
            &format!(
                "tls: {{cert: c, key: k}}\ntransmitters:\n  - issuer: https://idp.example.com/\n    audience: a\n    jwks_file: idp.json\n\
                 \x20   poll: {{url: \"http://127.0.0.1:9/poll\", {poll}}}\nsink: {{revocations_file: r.yaml}}\n"
            ),
        );
        load(&dir.path().join("receiver.yaml"))
    };
    assert!(with("wait: 30s").is_ok());
    assert!(with("interval: 1s").is_ok());
    for bad in ["wait: 10m", "wait: 500ms", "wait: soon"] {
        let error = with(bad).unwrap_err();
        assert!(error.contains("poll.wait"), "{bad}: {error}");
    }
}

#[tokio::test]
async fn a_file_sink_orders_events_within_max_age_and_a_later_enable_is_stale() {
    use crate::ssf::event::{Action, Outcome, Provenance, Revocation};
    use crate::ssf::sink::Kept;
    let dir = tempfile::tempdir().unwrap();
    let spec: SinkSpec =
        crate::engine::yaml::from_str("revocations_file: r.yaml\n", Path::new("receiver.yaml"))
            .unwrap();
    let hour = Duration::from_secs(3600);
    let sink = spec
        .sink(dir.path(), (hour, RiskCap::default(), hour))
        .unwrap();
    // An enable reported two hours late, about an entry the sink has no
    // order for, is stale under max_age.
    let enable = Outcome::Actions(
        Provenance {
            transmitter: "https://idp.example.com/".into(),
            event: "https://schemas.openid.net/secevent/risc/event-type/account-enabled".into(),
            jti: "e-1".into(),
            at: std::time::SystemTime::now() - 2 * hour,
        },
        vec![Action::Unrevoke {
            entry: Revocation::SpiffeId("spiffe://example.org/ns/a/sa/a".into()),
        }],
    );
    assert_eq!(sink.apply(&[enable]).await.unwrap(), [Kept::Stale]);
}
