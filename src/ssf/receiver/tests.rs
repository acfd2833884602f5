use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::*;
use crate::ssf::set::Transmitter;
use crate::ssf::sink::{Applying, SinkError};
use crate::testing::jwt::{self, Signer};

const ISS: &str = "https://idp.example.com/";
const OTHER: &str = "https://ci.example.com/";
const AUD: &str = "https://celador-signals.example.com/";
const NOW: u64 = 1_800_000_000;
const DISABLED: &str = "https://schemas.openid.net/secevent/risc/event-type/account-disabled";

/// Records what it is given; fails while `failing` is set.
#[derive(Default)]
struct Recording {
    outcomes: Mutex<Vec<Outcome>>,
    failing: AtomicBool,
}

impl Sink for Recording {
    fn apply<'a>(&'a self, outcomes: &'a [Outcome]) -> Applying<'a> {
        Box::pin(async move {
            if self.failing.load(Ordering::SeqCst) {
                return Err(SinkError("the store is away".into()));
            }
            self.outcomes
                .lock()
                .unwrap()
                .extend(outcomes.iter().cloned());
            let actions = outcomes.iter().map(|o| match o {
                Outcome::Actions(_, a) => a.len(),
                Outcome::Ignored(..) => 0,
            });
            Ok(vec![Kept::Applied; actions.sum()])
        })
    }
}

impl Recording {
    fn actions(&self) -> usize {
        self.outcomes
            .lock()
            .unwrap()
            .iter()
            .map(|o| match o {
                Outcome::Actions(_, a) => a.len(),
                Outcome::Ignored(..) => 0,
            })
            .sum()
    }
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

struct Fixture {
    signer: Signer,
    other: Signer,
    sink: Arc<Recording>,
    receiver: Receiver,
}

fn fixture(tokens: &[(&str, &str)]) -> Fixture {
    let signer = Signer::es256("k1");
    let other = Signer::rsa("r1", "RS256");
    let transmitters = vec![
        Transmitter::new(ISS, vec![AUD.into()], jwt::jwks(&[&signer]).as_bytes()).unwrap(),
        Transmitter::new(OTHER, vec![AUD.into()], jwt::jwks(&[&other]).as_bytes()).unwrap(),
    ];
    let verifier = Verifier::new(
        transmitters,
        Duration::from_secs(3600),
        Duration::from_secs(60),
    );
    let sink = Arc::new(Recording::default());
    let receiver = Receiver::new(
        verifier,
        Subjects::default(),
        Mapping::default(),
        tokens
            .iter()
            .map(|(i, t)| (i.to_string(), t.to_string()))
            .collect::<HashMap<_, _>>(),
        Arc::clone(&sink) as Arc<dyn Sink>,
    );
    Fixture {
        signer,
        other,
        sink,
        receiver,
    }
}

fn claims(iss: &str, jti: &str, id: &str) -> Value {
    json!({"iss": iss, "aud": AUD, "iat": NOW, "jti": jti,
           "sub_id": {"format": "uri", "uri": id},
           "events": {DISABLED: {}}})
}

fn sign(signer: &Signer, claims: &Value) -> String {
    signer.token_with_header(
        &json!({"alg": signer.alg, "kid": signer.kid, "typ": "secevent+jwt"}),
        claims,
    )
}

fn err(answer: &Answer) -> String {
    let body: Value = serde_json::from_str(answer.body.as_deref().unwrap()).unwrap();
    body["err"].as_str().unwrap().to_owned()
}

async fn push(f: &Fixture, token: &str, auth: Option<&str>) -> Answer {
    f.receiver
        .push(Some(SET_MEDIA_TYPE), auth, token.as_bytes(), now())
        .await
}

#[tokio::test]
async fn a_set_is_applied_once_and_answered_202_with_an_empty_body() {
    let f = fixture(&[]);
    let token = sign(&f.signer, &claims(ISS, "j1", "spiffe://td/ns/a/sa/a"));
    let answer = push(&f, &token, None).await;
    assert_eq!(
        answer,
        Answer {
            status: 202,
            body: None
        }
    );
    assert_eq!(f.sink.actions(), 1);
    // The transmitter did not hear us and sends it again: 202, applied once.
    assert_eq!(push(&f, &token, None).await.status, 202);
    assert_eq!(f.sink.actions(), 1);
    assert_eq!(f.receiver.metrics().deliveries("duplicate", ""), 1);
    // Other content under the same jti is a replay.
    let forged = sign(&f.signer, &claims(ISS, "j1", "spiffe://td/ns/b/sa/b"));
    let answer = push(&f, &forged, None).await;
    assert_eq!(
        (answer.status, err(&answer)),
        (400, "invalid_request".into())
    );
    assert_eq!(f.sink.actions(), 1);
    // The same jti from another transmitter is another SET.
    let theirs = sign(&f.other, &claims(OTHER, "j1", "spiffe://td/ns/c/sa/c"));
    assert_eq!(push(&f, &theirs, None).await.status, 202);
    assert_eq!(f.sink.actions(), 2);
}

#[tokio::test]
async fn the_content_type_must_be_a_set() {
    let f = fixture(&[]);
    let token = sign(&f.signer, &claims(ISS, "j1", "spiffe://td/a"));
    for content_type in [None, Some("application/json"), Some("text/plain")] {
        let answer = f
            .receiver
            .push(content_type, None, token.as_bytes(), now())
            .await;
        assert_eq!(
            (answer.status, err(&answer)),
            (415, "invalid_request".into())
        );
    }
    let answer = f
        .receiver
        .push(
            Some("Application/SecEvent+JWT; charset=utf-8"),
            None,
            token.as_bytes(),
            now(),
        )
        .await;
    assert_eq!(answer.status, 202);
    assert_eq!(f.sink.actions(), 1);
}

#[tokio::test]
async fn push_authorization_is_checked_per_transmitter() {
    let f = fixture(&[(ISS, "idp-secret"), (OTHER, "ci-secret")]);
    let token = sign(&f.signer, &claims(ISS, "j1", "spiffe://td/a"));
    for auth in [None, Some("Bearer wrong"), Some("Basic aWRwLXNlY3JldA==")] {
        let answer = push(&f, &token, auth).await;
        assert_eq!(
            (answer.status, err(&answer)),
            (401, "authentication_failed".into()),
            "{auth:?}"
        );
    }
    // The CI system's token does not let it push as the identity provider.
    let answer = push(&f, &token, Some("Bearer ci-secret")).await;
    assert_eq!((answer.status, err(&answer)), (400, "access_denied".into()));
    assert_eq!(f.sink.actions(), 0);
    assert_eq!(
        push(&f, &token, Some("Bearer idp-secret")).await.status,
        202
    );
    assert_eq!(f.sink.actions(), 1);
    // The token is in no answer and no counter.
    assert!(!f.receiver.metrics().encode().contains("secret"));
}

#[tokio::test]
async fn a_sink_that_fails_gets_the_set_again_and_it_is_then_applied() {
    let f = fixture(&[]);
    let token = sign(&f.signer, &claims(ISS, "j1", "spiffe://td/a"));
    f.sink.failing.store(true, Ordering::SeqCst);
    assert_eq!(push(&f, &token, None).await.status, 503);
    f.sink.failing.store(false, Ordering::SeqCst);
    assert_eq!(push(&f, &token, None).await.status, 202);
    assert_eq!(f.sink.actions(), 1);
    assert_eq!(f.receiver.metrics().deliveries("unavailable", ""), 1);
    assert_eq!(f.receiver.metrics().deliveries("applied", ""), 1);
}

#[tokio::test]
async fn refusals_are_counted_by_code() {
    let f = fixture(&[]);
    let stranger = Signer::es256("k1");
    let token = sign(&stranger, &claims(ISS, "j1", "spiffe://td/a"));
    assert_eq!(err(&push(&f, &token, None).await), "invalid_key");
    let token = sign(
        &f.signer,
        &claims("https://evil.example.com/", "j2", "spiffe://td/a"),
    );
    assert_eq!(err(&push(&f, &token, None).await), "invalid_issuer");
    assert_eq!(f.receiver.metrics().deliveries("refused", "invalid_key"), 1);
    assert_eq!(
        f.receiver.metrics().deliveries("refused", "invalid_issuer"),
        1
    );
    assert_eq!(f.sink.actions(), 0);
}

/// Holds every apply until released.
struct Gate {
    entered: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

impl Sink for Gate {
    fn apply<'a>(&'a self, _outcomes: &'a [Outcome]) -> Applying<'a> {
        Box::pin(async move {
            self.entered.notify_one();
            self.release.notified().await;
            Ok(Vec::new())
        })
    }
}

#[tokio::test]
async fn a_retransmission_during_the_first_attempt_is_told_to_send_again() {
    let signer = Signer::es256("k1");
    let transmitter =
        Transmitter::new(ISS, vec![AUD.into()], jwt::jwks(&[&signer]).as_bytes()).unwrap();
    let gate = Arc::new(Gate {
        entered: tokio::sync::Notify::new(),
        release: tokio::sync::Notify::new(),
    });
    let receiver = Arc::new(Receiver::new(
        Verifier::new(
            vec![transmitter],
            Duration::from_secs(3600),
            Duration::from_secs(60),
        ),
        Subjects::default(),
        Mapping::default(),
        HashMap::new(),
        Arc::clone(&gate) as Arc<dyn Sink>,
    ));
    let token = sign(&signer, &claims(ISS, "j1", "spiffe://td/a"));
    let first = {
        let (receiver, token) = (Arc::clone(&receiver), token.clone());
        tokio::spawn(async move {
            receiver
                .push(Some(SET_MEDIA_TYPE), None, token.as_bytes(), now())
                .await
        })
    };
    gate.entered.notified().await;
    let again = receiver
        .push(Some(SET_MEDIA_TYPE), None, token.as_bytes(), now())
        .await;
    assert_eq!(again.status, 503);
    gate.release.notify_one();
    assert_eq!(first.await.unwrap().status, 202);
    let later = receiver
        .push(Some(SET_MEDIA_TYPE), None, token.as_bytes(), now())
        .await;
    assert_eq!(later.status, 202);
    assert!(receiver.screen(Some("text/plain"), None).is_some());
    assert!(receiver.screen(Some(SET_MEDIA_TYPE), None).is_none());
}

#[tokio::test]
async fn a_scoped_transmitter_acts_only_on_the_identities_it_is_given() {
    let signer = Signer::es256("k1");
    let transmitter = Transmitter::new(ISS, vec![AUD.into()], jwt::jwks(&[&signer]).as_bytes())
        .unwrap()
        .scoped(vec!["spiffe://td/ns/ci/".into()]);
    let sink = Arc::new(Recording::default());
    let receiver = Receiver::new(
        Verifier::new(
            vec![transmitter],
            Duration::from_secs(3600),
            Duration::from_secs(60),
        ),
        Subjects::default(),
        Mapping::default(),
        HashMap::new(),
        Arc::clone(&sink) as Arc<dyn Sink>,
    );
    let push = |jti: &str, id: &str| {
        let token = sign(&signer, &claims(ISS, jti, id));
        let receiver = &receiver;
        async move {
            receiver
                .push(Some(SET_MEDIA_TYPE), None, token.as_bytes(), now())
                .await
        }
    };
    for outside in [
        "spiffe://td/ns/payments/sa/api",
        "spiffe://td/ns/cix/sa/a",
        "spiffe://other/ns/ci/sa/a",
    ] {
        let answer = push(outside, outside).await;
        assert_eq!(
            (answer.status, err(&answer)),
            (400, "access_denied".into()),
            "{outside}"
        );
    }
    assert_eq!(push("in", "spiffe://td/ns/ci/sa/runner").await.status, 202);
    assert_eq!(sink.actions(), 1);
}

#[tokio::test]
async fn an_event_older_than_one_applied_is_counted_and_logged_as_superseded_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::es256("k1");
    let transmitter =
        Transmitter::new(ISS, vec![AUD.into()], jwt::jwks(&[&signer]).as_bytes()).unwrap();
    let verifier = Verifier::new(
        vec![transmitter],
        Duration::from_secs(3600),
        Duration::from_secs(60),
    );
    let sink = crate::ssf::sink::FileSink::open(&dir.path().join("revocations.yaml")).unwrap();
    let receiver = Receiver::new(
        verifier,
        Subjects::default(),
        Mapping::default(),
        HashMap::new(),
        Arc::new(sink),
    );
    let id = "spiffe://td/ns/a/sa/a";
    let event = |jti: &str, kind: &str, at: u64| {
        let mut c = claims(ISS, jti, id);
        c["events"] = json!({ format!("https://schemas.openid.net/secevent/risc/event-type/{kind}"): {"event_timestamp": at} });
        sign(&signer, &c)
    };
    let push = |token: String| {
        let receiver = &receiver;
        async move {
            receiver
                .push(Some(SET_MEDIA_TYPE), None, token.as_bytes(), now())
                .await
        }
    };
    assert_eq!(
        push(event("d", "account-disabled", NOW - 10)).await.status,
        202
    );
    // An enable from before the disable arrives late: accepted (the
    // transmitter must not send it again), but it changed nothing.
    assert_eq!(
        push(event("e", "account-enabled", NOW - 20)).await.status,
        202
    );
    let m = receiver.metrics();
    assert_eq!(m.applied("revoke"), 1);
    assert_eq!(m.applied("unrevoke"), 0);
    assert_eq!(m.unapplied_count("unrevoke", "superseded"), 1);
    assert!(m.encode().contains(
        "celador_signals_actions_unapplied_total{action=\"unrevoke\",why=\"superseded\"} 1"
    ));
    // A later enable is applied.
    assert_eq!(
        push(event("e2", "account-enabled", NOW - 5)).await.status,
        202
    );
    assert_eq!(m.applied("unrevoke"), 1);
}

/// A sink whose fleet replay memory answers `claim` with what it is given.
struct Fleet {
    claim: Mutex<Result<Claim, String>>,
    released: Mutex<usize>,
    inner: Recording,
}

impl Sink for Fleet {
    fn apply<'a>(&'a self, outcomes: &'a [Outcome]) -> Applying<'a> {
        self.inner.apply(outcomes)
    }

    fn claim<'a>(&'a self, _set: SetKey<'a>, _ttl: Duration) -> crate::ssf::sink::Claiming<'a> {
        let claim = self.claim.lock().unwrap().clone().map_err(SinkError);
        Box::pin(async move { claim })
    }

    fn release<'a>(&'a self, _set: SetKey<'a>) -> crate::ssf::sink::Settling<'a> {
        *self.released.lock().unwrap() += 1;
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn the_fleets_replay_memory_decides_sets_another_receiver_saw() {
    let signer = Signer::es256("k1");
    let transmitter =
        Transmitter::new(ISS, vec![AUD.into()], jwt::jwks(&[&signer]).as_bytes()).unwrap();
    let verifier = Verifier::new(
        vec![transmitter],
        Duration::from_secs(3600),
        Duration::from_secs(60),
    );
    let sink = Arc::new(Fleet {
        claim: Mutex::new(Ok(Claim::Done)),
        released: Mutex::new(0),
        inner: Recording::default(),
    });
    let receiver = Receiver::new(
        verifier,
        Subjects::default(),
        Mapping::default(),
        HashMap::new(),
        Arc::clone(&sink) as Arc<dyn Sink>,
    );
    let push = |jti: &str| {
        let token = sign(&signer, &claims(ISS, jti, "spiffe://td/ns/a/sa/a"));
        let receiver = &receiver;
        async move {
            receiver
                .push(Some(SET_MEDIA_TYPE), None, token.as_bytes(), now())
                .await
        }
    };
    let set_claim = |c: Result<Claim, String>| *sink.claim.lock().unwrap() = c;
    // Applied by another receiver: 202, not applied here, and remembered.
    assert_eq!(push("j1").await.status, 202);
    assert_eq!(sink.inner.actions(), 0);
    set_claim(Ok(Claim::First));
    assert_eq!(push("j1").await.status, 202);
    assert_eq!(sink.inner.actions(), 0);
    // Being applied elsewhere, or a store that does not answer: send again.
    set_claim(Ok(Claim::Pending));
    assert_eq!(push("j2").await.status, 503);
    set_claim(Err("connection refused".into()));
    assert_eq!(push("j2").await.status, 503);
    // Other bytes under the jti elsewhere: a replay, refused.
    set_claim(Ok(Claim::Other));
    let answer = push("j2").await;
    assert_eq!(
        (answer.status, err(&answer)),
        (400, "invalid_request".into())
    );
    // Each time, forgotten here: once the fleet lets it, it is applied.
    set_claim(Ok(Claim::First));
    assert_eq!(push("j2").await.status, 202);
    assert_eq!(sink.inner.actions(), 1);
    // A sink that fails releases the fleet's claim.
    sink.inner.failing.store(true, Ordering::SeqCst);
    assert_eq!(push("j3").await.status, 503);
    assert_eq!(*sink.released.lock().unwrap(), 1);
}

std::thread_local! {
    /// The log lines of the test running on this thread, while it captures.
    static CAPTURED: std::cell::RefCell<Option<Vec<u8>>> = const { std::cell::RefCell::new(None) };
}

/// Writes a log line to this thread's capture, if any.
struct Captured;

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURED.with_borrow_mut(|c| c.as_mut().map(|c| c.extend_from_slice(buf)));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log lines written on this thread while `f` runs. The subscriber is
/// the global one (installed once): tracing caches whether a callsite is
/// wanted when another test's thread first reaches it, which a subscriber
/// scoped to this thread would miss.
async fn logged<F: Future<Output = ()>>(f: F) -> String {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(|| Captured)
            .finish();
        // A global subscriber set already (none is, in unit tests) fails
        // the assertions on the log, not this.
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
    CAPTURED.set(Some(Vec::new()));
    f.await;
    let lines = CAPTURED.take().unwrap_or_default();
    String::from_utf8_lossy(&lines).into_owned()
}

/// The attacker review's leaks: what a transmitter sends (the event type,
/// a subject quoted in why an event changes nothing or why a SET is
/// refused, a SPIFFE ID it names) reaches the receiver's log, and the
/// refusal's answer, redacted.
#[tokio::test]
async fn what_a_transmitter_sends_reaches_the_log_redacted() {
    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXNpZ25hdHVyZQ";
    let f = fixture(&[]);
    let change = format!("{}credential-change", crate::ssf::event::CAEP);
    let sets = [
        // An event type celador does not act on: "event changes nothing".
        json!({"sub_id": {"format": "uri", "uri": "spiffe://td/a"},
               "events": {format!("https://x.example/ev?token={JWT}"): {}}}),
        // A subject not in the subjects table, and a format it does not map.
        json!({"sub_id": {"format": "opaque", "id": format!("Bearer {JWT}")},
               "events": {DISABLED: {}}}),
        json!({"sub_id": {"format": JWT, "id": "x"}, "events": {DISABLED: {}}}),
        // A refusal whose description quotes the event's member.
        json!({"sub_id": {"format": "uri", "uri": "spiffe://td/a"},
               "events": {change: {"change_type": "revoke", "credential_type": "x509",
                                   "x509_issuer": "CN=ca", "x509_serial": format!("Bearer {JWT}")}}}),
        // A SPIFFE ID naming the token, revoked.
        json!({"sub_id": {"format": "uri", "uri": format!("spiffe://td/ns/{JWT}")},
               "events": {DISABLED: {}}}),
    ];
    let mut statuses = Vec::new();
    let pushes = async {
        for (n, set) in sets.into_iter().enumerate() {
            let mut claims = json!({"iss": ISS, "aud": AUD, "iat": NOW, "jti": format!("j{n}")});
            claims
                .as_object_mut()
                .unwrap()
                .extend(set.as_object().unwrap().clone());
            let answer = push(&f, &sign(&f.signer, &claims), None).await;
            statuses.push((answer.status, answer.body.unwrap_or_default()));
        }
    };
    let log = logged(pushes).await;
    let codes: Vec<u16> = statuses.iter().map(|(status, _)| *status).collect();
    assert_eq!(codes, [202, 202, 202, 400, 202]);
    // The refusal's answer says what is wrong, redacted as the log is (it
    // may pass through proxies that log it).
    let refusal = &statuses[3].1;
    assert!(refusal.contains("is not hex"), "{refusal}");
    assert!(!refusal.contains("eyJzdWIiOiJ4In0"), "{refusal}");
    for said in [
        "event changes nothing",
        "is not in the receiver's subjects table",
        "is not one celador maps",
        "is not hex",
        ": revoked ",
        "spiffe://td/ns/",
    ] {
        assert!(log.contains(said), "{said}: {log}");
    }
    assert!(!log.contains(JWT), "{log}");
    assert!(!log.contains("eyJzdWIiOiJ4In0"), "{log}");
}
