//! Poll delivery (RFC 8936): the receiver asks a transmitter's endpoint
//! for SETs, and acknowledges each one once its actions are kept.
//!
//! Data flow: [`Poller`]'s loop (one per transmitter with `poll:`, run by the
//! server) -> `POST` `{"ack": [...], "setErrs": {...}, "maxEvents": N,
//! "returnImmediately": ...}` -> `{"sets": {jti: SET}, "moreAvailable"}` ->
//! each SET through [`Receiver::polled`] (the push path's verification,
//! replay memory, mapping and sink) -> its `jti` acknowledged in the next
//! request if accepted, reported in `setErrs` with its RFC 8935 code if
//! refused, and neither if it could not be kept now (the transmitter
//! delivers it again). Acknowledgements are kept until a request carrying
//! them is answered, so none is lost to a failed poll.
//!
//! Short or long polling (RFC 8936 §2.4): without `wait` each request asks
//! `returnImmediately: true` and an empty answer is followed by `interval`
//! of rest; with `wait` (the long-poll timeout agreed with the transmitter
//! out of band) each request asks `returnImmediately: false`, the
//! transmitter holds it until it has SETs or `wait` ends, and the receiver
//! waits for the answer `wait` plus [`LONG_POLL_MARGIN`]. Either way an
//! empty answer is never followed by another request within `interval` of
//! the last one's start, so a transmitter that answers a long poll at once
//! is not polled in a loop.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};

use super::jwks::HttpsUrl;
use super::receiver::{Deliveries, Receiver};

/// The most SETs asked for in one poll.
pub const MAX_EVENTS: usize = 100;

/// How long past a long poll's `wait` the receiver waits for the answer
/// (the transmitter's own timer, the network).
pub const LONG_POLL_MARGIN: Duration = Duration::from_secs(10);

/// The longest `wait`: a long poll held longer is likely cut by a proxy.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

/// Polls one transmitter.
pub struct Poller {
    issuer: String,
    url: HttpsUrl,
    token: Option<String>,
    interval: Duration,
    /// The long poll's timeout; `None`: short polls.
    wait: Option<Duration>,
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("issuer", &self.issuer)
            .field("url", &self.url)
            .field("interval", &self.interval)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

impl Deliveries for Poller {
    fn run(
        self: Arc<Self>,
        receiver: Arc<Receiver>,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(self.poll(receiver))
    }
}

/// What one poll's answer held, once handled.
#[derive(Debug, Default)]
struct Handled {
    ack: Vec<String>,
    errors: Map<String, Value>,
}

impl Poller {
    /// A poller of `issuer`'s endpoint `url`, with the bearer `token` if
    /// given, polling again no sooner than `interval` after the start of a
    /// poll that brought nothing.
    pub fn new(issuer: &str, url: HttpsUrl, token: Option<String>, interval: Duration) -> Poller {
        Poller {
            issuer: issuer.to_owned(),
            url,
            token,
            interval,
            wait: None,
        }
    }

    /// This poller, long polling: each request may be held `wait` by the
    /// transmitter (RFC 8936 §2.4, `returnImmediately: false`).
    pub fn long(mut self, wait: Duration) -> Poller {
        self.wait = Some(wait);
        self
    }

    /// How long to wait for one answer.
    fn within(&self) -> Duration {
        self.wait.map_or(super::jwks::FETCH_TIMEOUT, |w| {
            w.saturating_add(LONG_POLL_MARGIN)
        })
    }

    /// Polls for ever (the server aborts it).
    async fn poll(self: Arc<Self>, receiver: Arc<Receiver>) {
        let mut pending = Handled::default();
        loop {
            let request = json!({
                "ack": pending.ack,
                "setErrs": pending.errors,
                "maxEvents": MAX_EVENTS,
                "returnImmediately": self.wait.is_none(),
            });
            let started = tokio::time::Instant::now();
            let rest = || tokio::time::sleep_until(started + self.interval);
            let answer = self
                .url
                .post_json(&request, self.token.as_deref(), self.within())
                .await;
            let handled = match answer.map(|body| serde_json::from_slice::<Value>(&body)) {
                Ok(Ok(Value::Object(answer))) => self.handle(&receiver, answer).await,
                Ok(_) => {
                    tracing::warn!(transmitter = %self.issuer, url = %self.url.shown(), "the poll's answer is not a JSON object; polling again later");
                    rest().await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(transmitter = %self.issuer, "poll failed; polling again later: {}", crate::engine::redaction::text(&e.to_string()));
                    rest().await;
                    continue;
                }
            };
            // Nothing acknowledged or refused (none came, or none could be
            // kept now): rest before asking again (a long poll that was
            // held `interval` or more asks again at once).
            let idle = handled.ack.is_empty() && handled.errors.is_empty();
            pending = handled;
            if idle {
                rest().await;
            }
        }
    }

    /// Each SET of `answer` through the receiver.
    async fn handle(&self, receiver: &Receiver, answer: Map<String, Value>) -> Handled {
        let mut handled = Handled::default();
        let Some(Value::Object(sets)) = answer.get("sets") else {
            return handled;
        };
        for (jti, set) in sets.iter().take(MAX_EVENTS) {
            let Value::String(token) = set else {
                handled.errors.insert(
                    jti.clone(),
                    json!({"err": "invalid_request", "description": "not a SET (a string)"}),
                );
                continue;
            };
            let reply = receiver
                .polled(&self.issuer, token.as_bytes(), SystemTime::now())
                .await;
            match reply.status {
                202 => handled.ack.push(jti.clone()),
                400 => {
                    let error = reply
                        .body
                        .and_then(|b| serde_json::from_str::<Value>(&b).ok())
                        .unwrap_or_else(|| json!({"err": "invalid_request"}));
                    handled.errors.insert(jti.clone(), error);
                }
                // Not kept now: neither acknowledged nor refused, so the
                // transmitter delivers it again.
                _ => {}
            }
        }
        handled
    }
}
