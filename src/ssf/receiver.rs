//! The push receiver's decision for one delivery (RFC 8935): accept it
//! (`202`, empty body) once its actions are kept, or refuse it with the
//! RFC's error JSON.
//!
//! Data flow: the HTTPS server ([`super::server`]) hands each `POST` here
//! with its `Content-Type`, `Authorization` and body -> content type and
//! push authorization -> [`super::set::Verifier`] -> the `jti` replay
//! check -> [`super::event::Mapping`] -> [`super::sink::Sink`] -> the
//! answer, counted in [`ReceiverMetrics`] and logged (never the token).
//! A polled SET ([`super::poll`]) enters at [`Receiver::polled`] and takes
//! the same path from the verifier on.
//!
//! Replays. A transmitter sends a SET again when it did not get our answer
//! (RFC 8935 §2), so the same bytes under a `jti` already accepted are
//! answered `202` and applied once; other bytes under a `jti` already seen
//! are refused (`invalid_request`). `jti`s are remembered for the
//! verifier's `max_age` (a SET older than that is refused by its `iat`),
//! here and, with the governance store, by every receiver of the fleet
//! ([`Sink::claim`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::event::{Action, Mapping, Outcome, Provenance, Revocation};
// Log lines quote what a transmitter sent (a `jti`, a reason) as every
// output does: through the one redaction.
use super::jwks::{FetchCounters, KeyRefresh};
use super::set::{ErrorCode, SetError, VerifiedSet, Verifier};
use super::sink::{Claim, Kept, SetKey, Sink};
use super::subject::Subjects;
use super::subject::Target;
use crate::engine::redaction::text;

/// The media type of a pushed SET (RFC 8417 §2.3).
pub const SET_MEDIA_TYPE: &str = "application/secevent+jwt";

/// How many `jti`s are remembered at most (each ~100 bytes).
const MAX_REMEMBERED: u64 = 1_000_000;

/// The answer to one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status: 202, 400, 401, 413, 415 or 503.
    pub status: u16,
    /// The error JSON (`{"err": ..., "description": ...}`), if refused.
    pub body: Option<String>,
}

impl Answer {
    fn accepted() -> Answer {
        Answer {
            status: 202,
            body: None,
        }
    }

    fn refused(status: u16, error: &SetError) -> Answer {
        Answer {
            status,
            body: Some(
                // Redacted as the log is: the description may quote the
                // SET's values, and the answer may pass proxies that log it.
                json!({"err": error.code.as_str(), "description": text(&error.description)})
                    .to_string(),
            ),
        }
    }
}

/// The receiver: what verifies, maps and keeps SETs.
pub struct Receiver {
    verifier: Verifier,
    subjects: Subjects,
    mapping: Mapping,
    /// The SHA-256 of the bearer token each transmitter pushes with, where
    /// one is configured.
    tokens: HashMap<String, [u8; 32]>,
    seen: moka::sync::Cache<(String, String), [u8; 32]>,
    /// How long a `jti` is remembered: past it, the SET's `iat` refuses it.
    replay_window: Duration,
    /// The SETs whose actions are being kept now: a retransmission of one
    /// is answered 503, not 202, until the first attempt has succeeded.
    in_flight: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
    sink: Arc<dyn Sink>,
    /// The keys kept fresh from a URL, by issuer.
    refreshes: HashMap<String, Arc<KeyRefresh>>,
    /// The transmitters it polls (RFC 8936).
    pollers: Vec<Arc<dyn Deliveries>>,
    metrics: ReceiverMetrics,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("subjects", &self.subjects.len())
            .field("tokens", &self.tokens.len())
            .finish_non_exhaustive()
    }
}

/// A source of SETs the receiver fetches itself (poll delivery,
/// [`super::poll::Poller`]): a loop the server runs, handing each SET to
/// [`Receiver::polled`].
pub trait Deliveries: Send + Sync {
    /// Runs for ever (the server aborts it).
    fn run(
        self: Arc<Self>,
        receiver: Arc<Receiver>,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// What the replay memory says of a SET.
enum Remembered {
    /// Never seen: apply it.
    First,
    /// The same bytes, already kept: 202, applied once.
    Again,
    /// The same bytes, being kept by another attempt now: 503, send again.
    InFlight,
    /// Other bytes under a `jti` already seen.
    Other(SetError),
}

/// A refusal, logged.
fn refuse((status, error): (u16, SetError)) -> (Answer, Delivery) {
    tracing::warn!(status, err = error.code.as_str(), description = %text(&error.description), "SET refused");
    let code = error.code;
    (Answer::refused(status, &error), Delivery::Refused(code))
}

/// The answer when a SET cannot be kept now; the transmitter sends it
/// again (nothing about the store in it).
fn unavailable() -> Answer {
    Answer {
        status: 503,
        body: Some(
            json!({"description": "the SET could not be kept now; send it again"}).to_string(),
        ),
    }
}

/// What one delivery was, for the log and the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    Applied,
    Duplicate,
    Refused(ErrorCode),
    Unavailable,
}

impl Receiver {
    /// A receiver; `tokens` maps a transmitter's issuer to the bearer
    /// token it must push with.
    pub fn new(
        verifier: Verifier,
        subjects: Subjects,
        mapping: Mapping,
        tokens: HashMap<String, String>,
        sink: Arc<dyn Sink>,
    ) -> Receiver {
        let replay_window = verifier
            .max_age()
            .saturating_add(verifier.max_future())
            .saturating_add(Duration::from_secs(300));
        let seen = moka::sync::Cache::builder()
            .max_capacity(MAX_REMEMBERED)
            .time_to_live(replay_window)
            .build();
        Receiver {
            verifier,
            subjects,
            mapping,
            tokens: tokens
                .into_iter()
                .map(|(issuer, token)| (issuer, Sha256::digest(token.as_bytes()).into()))
                .collect(),
            seen,
            replay_window,
            in_flight: std::sync::Mutex::new(std::collections::HashSet::new()),
            sink,
            refreshes: HashMap::new(),
            pollers: Vec::new(),
            metrics: ReceiverMetrics::default(),
        }
    }

    /// This receiver, fetching the keys of the transmitters of `refreshes`
    /// again on a SET with an unknown `kid`, the fetches counted in
    /// `counters` (served with its other counters).
    pub fn with_key_refresh(
        mut self,
        refreshes: Vec<Arc<KeyRefresh>>,
        counters: FetchCounters,
    ) -> Receiver {
        self.metrics.registry.register(
            "celador_signals_jwks_fetches",
            "Fetches of transmitters' JWKS URLs by outcome (updated, unchanged, failed, refused: the last good keys stay; limited: an unknown kid within 30 s of the last fetch)",
            counters,
        );
        self.refreshes = refreshes
            .into_iter()
            .map(|r| (r.issuer().to_owned(), r))
            .collect();
        self
    }

    /// This receiver, polling the transmitters of `pollers` too.
    pub fn with_pollers(mut self, pollers: Vec<Arc<dyn Deliveries>>) -> Receiver {
        self.pollers = pollers;
        self
    }

    /// The transmitters it polls, whose loops the server runs.
    pub fn pollers(&self) -> impl Iterator<Item = &Arc<dyn Deliveries>> {
        self.pollers.iter()
    }

    /// The keys it keeps fresh from a URL, whose schedules the server runs.
    pub fn key_refreshes(&self) -> impl Iterator<Item = &Arc<KeyRefresh>> {
        self.refreshes.values()
    }

    /// Verifies `body`; a SET naming a `kid` its transmitter's keys lack,
    /// when those come from a URL, is verified again once they have been
    /// fetched again (at most once per [`super::jwks::UNKNOWN_KID_GAP`]).
    async fn verify(&self, body: &[u8], now: SystemTime) -> Result<VerifiedSet, SetError> {
        match self.verifier.verify(body, now) {
            Err(SetError {
                unknown_kid_of: Some(issuer),
                ..
            }) if self.refreshes.contains_key(&issuer) => {
                let refreshed = match self.refreshes.get(&issuer) {
                    Some(refresh) => refresh.on_unknown_kid().await,
                    None => false,
                };
                let verified = self.verifier.verify(body, now);
                match verified {
                    Err(mut error) if !refreshed && error.unknown_kid_of.is_some() => {
                        error.description.push_str(&format!(
                            " (its keys are fetched again at most every {} s)",
                            super::jwks::UNKNOWN_KID_GAP.as_secs()
                        ));
                        Err(error)
                    }
                    other => other,
                }
            }
            other => other,
        }
    }

    /// Its counters.
    pub fn metrics(&self) -> &ReceiverMetrics {
        &self.metrics
    }

    /// The refusal of a delivery whose headers alone refuse it (its media
    /// type, or no push token when every transmitter has one), counted:
    /// the server asks before it reads the body.
    pub fn screen(
        &self,
        content_type: Option<&str>,
        authorization: Option<&str>,
    ) -> Option<Answer> {
        let (status, error) = self
            .admit(content_type, bearer_digest(authorization))
            .err()?;
        tracing::warn!(status, err = error.code.as_str(), description = %text(&error.description), "SET refused");
        self.metrics.delivery(Delivery::Refused(error.code));
        Some(Answer::refused(status, &error))
    }

    /// Answers one push delivery received at `now`.
    pub async fn push(
        &self,
        content_type: Option<&str>,
        authorization: Option<&str>,
        body: &[u8],
        now: SystemTime,
    ) -> Answer {
        let (answer, delivery) = self.decide(content_type, authorization, body, now).await;
        self.metrics.delivery(delivery);
        answer
    }

    async fn decide(
        &self,
        content_type: Option<&str>,
        authorization: Option<&str>,
        body: &[u8],
        now: SystemTime,
    ) -> (Answer, Delivery) {
        let presented = bearer_digest(authorization);
        if let Err(refusal) = self.admit(content_type, presented) {
            return refuse(refusal);
        }
        let set = match self.verify(body, now).await {
            Ok(set) => set,
            Err(error) => return refuse((400, error)),
        };
        if let Err(error) = self.check_token(&set.issuer, presented) {
            return refuse((400, error));
        }
        self.accept(set).await
    }

    /// Answers one SET received by polling `issuer`'s endpoint (RFC 8936)
    /// at `now`: the transmitter polled must be the SET's issuer; no push
    /// token is asked for (the receiver authenticated the transmitter's
    /// endpoint itself).
    pub async fn polled(&self, issuer: &str, token: &[u8], now: SystemTime) -> Answer {
        let (answer, delivery) = match self.verify(token, now).await {
            Ok(set) if set.issuer != issuer => refuse((
                400,
                SetError::new(
                    ErrorCode::AccessDenied,
                    format!("a SET of {} polled from {issuer}", set.issuer),
                ),
            )),
            Ok(set) => self.accept(set).await,
            Err(error) => refuse((400, error)),
        };
        self.metrics.delivery(delivery);
        answer
    }

    /// A verified SET from a transmitter allowed to send it: the replay
    /// memory, the mapping, the sink.
    async fn accept(&self, set: VerifiedSet) -> (Answer, Delivery) {
        let key = (set.issuer.clone(), set.jti.clone());
        match self.remember(&key, set.digest) {
            Remembered::First => {}
            Remembered::Again => {
                tracing::info!(issuer = %set.issuer, jti = %text(&set.jti), "SET received again; applied once");
                return (Answer::accepted(), Delivery::Duplicate);
            }
            Remembered::InFlight => return (unavailable(), Delivery::Unavailable),
            Remembered::Other(error) => return refuse((400, error)),
        }
        let fleet_key = (set.issuer.as_str(), set.jti.as_str(), set.digest);
        if let Err(answer) = self.claim(&key, fleet_key).await {
            return answer;
        }
        let outcomes = match self
            .mapping
            .apply(&set, &self.subjects)
            .and_then(|outcomes| self.in_scope(&set.issuer, outcomes))
        {
            Ok(outcomes) => outcomes,
            Err(error) => {
                self.abandon(&key, fleet_key).await;
                return refuse((400, error));
            }
        };
        self.keep(&key, fleet_key, &outcomes).await
    }

    /// Hands a claimed SET's `outcomes` to the sink: `202` once kept, else
    /// `503` with the SET forgotten, so that the next attempt is applied.
    async fn keep(
        &self,
        key: &(String, String),
        set: SetKey<'_>,
        outcomes: &[Outcome],
    ) -> (Answer, Delivery) {
        let (issuer, jti, _) = set;
        let kept = match self.sink.apply(outcomes).await {
            Ok(kept) => kept,
            Err(e) => {
                self.abandon(key, set).await;
                tracing::error!(%issuer, jti = %text(jti), "the SET's actions cannot be kept: {e}");
                return (unavailable(), Delivery::Unavailable);
            }
        };
        self.landed(key);
        if let Err(e) = self.sink.settle(set, self.replay_window).await {
            // Kept already; another receiver may apply a replay again
            // once the claim lapses (30 s), to the same effect.
            tracing::warn!(%issuer, jti = %text(jti), "the SET is kept, but the fleet's replay memory could not record it: {e}");
        }
        let mut kept = kept.into_iter();
        for outcome in outcomes {
            self.log(outcome, &mut kept);
        }
        (Answer::accepted(), Delivery::Applied)
    }

    /// Claims the SET in the fleet's replay memory (with the governance
    /// store): a SET another receiver applied is a duplicate, one it is
    /// applying now or a store that does not answer is `503` (the
    /// transmitter sends it again, so no event is lost), other bytes under
    /// its `jti` a replay.
    async fn claim(
        &self,
        key: &(String, String),
        set: SetKey<'_>,
    ) -> Result<(), (Answer, Delivery)> {
        let (issuer, jti, _) = set;
        let claim = self.sink.claim(set, self.replay_window).await;
        match claim {
            Ok(Claim::First) => return Ok(()),
            Ok(Claim::Done) => {
                self.landed(key);
                tracing::info!(%issuer, jti = %text(jti), "SET received again (applied by another receiver); applied once");
                return Err((Answer::accepted(), Delivery::Duplicate));
            }
            Ok(Claim::Pending) => {}
            Ok(Claim::Other) => {
                self.forget(key);
                let error = SetError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "jti {:?} of {issuer} was already received with other content (by another receiver)",
                        super::event::printable(jti),
                    ),
                );
                tracing::warn!(status = 400, err = error.code.as_str(), description = %text(&error.description), "SET refused");
                return Err((Answer::refused(400, &error), Delivery::Refused(error.code)));
            }
            Err(e) => {
                tracing::error!(%issuer, jti = %text(jti), "the fleet's replay memory cannot be read: {e}");
            }
        }
        self.forget(key);
        Err((unavailable(), Delivery::Unavailable))
    }

    /// The SET was not kept: forgotten here and in the fleet, so that the
    /// transmitter's next attempt is applied.
    async fn abandon(&self, key: &(String, String), set: SetKey<'_>) {
        self.forget(key);
        if let Err(e) = self.sink.release(set).await {
            tracing::warn!(issuer = %set.0, jti = %text(set.1), "the fleet's replay memory keeps the SET's claim until it lapses (30 s): {e}");
        }
    }

    /// The push token given to `issuer`, if it was given one, is the one
    /// presented.
    fn check_token(&self, issuer: &str, presented: Option<[u8; 32]>) -> Result<(), SetError> {
        match self.tokens.get(issuer) {
            Some(expected) if presented != Some(*expected) => Err(SetError::new(
                ErrorCode::AccessDenied,
                format!("the push's Authorization is not the one given to {issuer}"),
            )),
            _ => Ok(()),
        }
    }

    /// `outcomes`, if every action is in the transmitter's scope; else the
    /// SET is refused `access_denied` (RFC 8935: the transmitter may not
    /// send this SET here).
    fn in_scope(&self, issuer: &str, outcomes: Vec<Outcome>) -> Result<Vec<Outcome>, SetError> {
        let Some(transmitter) = self.verifier.transmitter(issuer) else {
            return Ok(outcomes);
        };
        for outcome in &outcomes {
            let Outcome::Actions(_, actions) = outcome else {
                continue;
            };
            for action in actions {
                let named = match action {
                    Action::Revoke { entry, .. } | Action::Unrevoke { entry } => match entry {
                        Revocation::SpiffeId(id) | Revocation::SpiffeIdPrefix(id) => {
                            Some(id.as_str())
                        }
                        Revocation::X509Serial { .. } | Revocation::JwtId(_) => None,
                    },
                    Action::Risk { target, .. } => match target {
                        Target::Id(id) | Target::Prefix(id) => Some(id.as_str()),
                        Target::JwtId(_) => None,
                    },
                };
                let allowed = match named {
                    Some(id) => transmitter.covers(id),
                    None => transmitter.scope.is_empty(),
                };
                if !allowed {
                    return Err(SetError::new(
                        ErrorCode::AccessDenied,
                        format!(
                            "{issuer} may act only on {:?}; this SET names {}",
                            transmitter.scope,
                            named.unwrap_or(
                                "a certificate or token, which a scoped transmitter may not revoke"
                            )
                        ),
                    ));
                }
            }
        }
        Ok(outcomes)
    }

    /// The checks before any signature: the media type, and, when every
    /// transmitter pushes with a token, one of them (so that a flood
    /// without one costs a hash, not a verification).
    fn admit(
        &self,
        content_type: Option<&str>,
        presented: Option<[u8; 32]>,
    ) -> Result<(), (u16, SetError)> {
        let media = content_type
            .and_then(|c| c.split(';').next())
            .map(str::trim)
            .unwrap_or("");
        if !media.eq_ignore_ascii_case(SET_MEDIA_TYPE) {
            let why = format!("Content-Type is {media:?}; a SET is pushed as {SET_MEDIA_TYPE}");
            return Err((415, SetError::new(ErrorCode::InvalidRequest, why)));
        }
        if !self.tokens.is_empty()
            && self.tokens.len() == self.verifier.transmitter_count()
            && !presented.is_some_and(|p| self.tokens.values().any(|t| *t == p))
        {
            return Err((
                401,
                SetError::new(
                    ErrorCode::AuthenticationFailed,
                    "the push carries no Authorization this receiver gave a transmitter",
                ),
            ));
        }
        Ok(())
    }

    /// Remembers `key` with `digest`, and marks it in flight the first
    /// time; one lock, so that a retransmission racing the first attempt
    /// sees it in flight.
    fn remember(&self, key: &(String, String), digest: [u8; 32]) -> Remembered {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let entry = self.seen.entry(key.clone()).or_insert(digest);
        if entry.is_fresh() {
            in_flight.insert(key.clone());
            Remembered::First
        } else if *entry.value() != digest {
            Remembered::Other(SetError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "jti {:?} of {} was already received with other content",
                    super::event::printable(&key.1),
                    key.0
                ),
            ))
        } else if in_flight.contains(key) {
            Remembered::InFlight
        } else {
            Remembered::Again
        }
    }

    /// `key`'s first attempt failed: the next one is applied afresh.
    fn forget(&self, key: &(String, String)) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        in_flight.remove(key);
        self.seen.invalidate(key);
    }

    /// `key`'s actions are kept: a retransmission is answered 202.
    fn landed(&self, key: &(String, String)) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        in_flight.remove(key);
    }

    /// One log line per action, saying what became of it (`kept`, in the
    /// order of the actions): the audit trail of what a SET changed.
    fn log(&self, outcome: &Outcome, kept: &mut impl Iterator<Item = Kept>) {
        match outcome {
            Outcome::Actions(provenance, actions) => {
                for action in actions {
                    // The sink said it kept them all; a sink that gives no
                    // status for an action applied it.
                    let kept = kept.next().unwrap_or(Kept::Applied);
                    if kept == Kept::Applied {
                        log_action(provenance, action);
                        self.metrics.action(action);
                    } else {
                        log_unapplied(provenance, action, kept);
                        self.metrics.unapplied(action, kept);
                    }
                }
            }
            Outcome::Ignored(p, why) => {
                self.metrics.ignored.inc();
                tracing::info!(transmitter = %p.transmitter, event = %text(&p.event), jti = %text(&p.jti), why = %text(why), "event changes nothing");
            }
        }
    }
}

fn log_action(p: &Provenance, action: &Action) {
    match action {
        Action::Revoke { entry, reason } => {
            tracing::info!(transmitter = %p.transmitter, event = %text(&p.event), jti = %text(&p.jti), entry = %text(&format!("{entry:?}")), reason = %text(reason), "revoked")
        }
        Action::Unrevoke { entry } => {
            tracing::info!(transmitter = %p.transmitter, event = %text(&p.event), jti = %text(&p.jti), entry = %text(&format!("{entry:?}")), "revocation removed")
        }
        Action::Risk { target, level, .. } => {
            tracing::info!(transmitter = %p.transmitter, event = %text(&p.event), jti = %text(&p.jti), target = %text(&target.describe()), level = level.as_str(), "risk level set")
        }
    }
}

/// The log line of an action that changed nothing, and why.
fn log_unapplied(p: &Provenance, action: &Action, kept: Kept) {
    let what = match action {
        Action::Revoke { entry, .. } | Action::Unrevoke { entry } => format!("{entry:?}"),
        Action::Risk { target, .. } => target.describe(),
    };
    let kind = action_name(action);
    match kept {
        Kept::Superseded => {
            tracing::info!(transmitter = %p.transmitter, event = %text(&p.event), jti = %text(&p.jti), action = kind, entry = %text(&what), "superseded: a later event about the same entry was applied first; this one changes nothing")
        }
        Kept::Lapsed => {
            tracing::info!(transmitter = %p.transmitter, event = %text(&p.event), jti = %text(&p.jti), action = kind, entry = %text(&what), "not applied: the risk level had lapsed (risk_expiry after its event) before it arrived")
        }
        Kept::Another => {
            tracing::warn!(transmitter = %p.transmitter, event = %text(&p.event), jti = %text(&p.jti), action = kind, entry = %text(&what), "not applied: the entry is another transmitter's (or an operator's) revocation, which only its writer may change or withdraw (the identity stays revoked)")
        }
        Kept::Held if matches!(action, Action::Revoke { .. }) => {
            tracing::info!(transmitter = %p.transmitter, event = %text(&p.event), jti = %text(&p.jti), action = kind, entry = %text(&what), "held: the entry is another transmitter's (or an operator's) revocation; this one is kept behind it and takes its place if its writer withdraws it")
        }
        Kept::Held => {
            tracing::info!(transmitter = %p.transmitter, event = %text(&p.event), jti = %text(&p.jti), action = kind, entry = %text(&what), "held revocation withdrawn: the entry stays as another transmitter (or an operator) wrote it")
        }
        Kept::Stale => {
            tracing::warn!(transmitter = %p.transmitter, event = %text(&p.event), jti = %text(&p.jti), action = kind, entry = %text(&what), "not applied: the withdrawal is older than max_age and the sink no longer remembers the entry's order (event times and withdrawals are kept for max_age), so it might undo a later event; the SET is accepted (valid)")
        }
        Kept::Capped => {
            tracing::warn!(transmitter = %p.transmitter, event = %text(&p.event), jti = %text(&p.jti), action = kind, entry = %text(&what), "not applied: the transmitter holds its max_risks risk levels already, none lower than this one; a subject new to it waits until some lapse (its existing ones are still updated), the SET is accepted (valid, RFC 8935 §2.2)")
        }
        Kept::Unsupported | Kept::Applied => {
            tracing::warn!(transmitter = %p.transmitter, event = %text(&p.event), jti = %text(&p.jti), action = kind, entry = %text(&what), "not applied: the sink keeps no risk levels (a revocations file without risks_file)")
        }
    }
}

/// An action's name in logs and metrics.
fn action_name(action: &Action) -> &'static str {
    match action {
        Action::Revoke { .. } => "revoke",
        Action::Unrevoke { .. } => "unrevoke",
        Action::Risk { .. } => "risk",
    }
}

/// The SHA-256 of the token of `Authorization: Bearer TOKEN` (compared by
/// digest, so the comparison's time says nothing about the token).
fn bearer_digest(authorization: Option<&str>) -> Option<[u8; 32]> {
    let value = authorization?.trim();
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    Some(Sha256::digest(token.trim().as_bytes()).into())
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    outcome: &'static str,
    err: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnappliedLabels {
    action: &'static str,
    why: &'static str,
}

/// The receiver's counters, served at `GET /metrics`.
#[derive(Debug)]
pub struct ReceiverMetrics {
    registry: Registry,
    deliveries: Family<DeliveryLabels, Counter>,
    actions: Family<ActionLabels, Counter>,
    unapplied: Family<UnappliedLabels, Counter>,
    ignored: Counter,
}

impl Default for ReceiverMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "celador_signals_deliveries",
            "SET deliveries by outcome (applied, duplicate, refused, unavailable) and RFC 8935 error code",
            deliveries.clone(),
        );
        let actions = Family::<ActionLabels, Counter>::default();
        registry.register(
            "celador_signals_actions",
            "Governance actions made from SET events (revoke, unrevoke, risk)",
            actions.clone(),
        );
        let unapplied = Family::<UnappliedLabels, Counter>::default();
        registry.register(
            "celador_signals_actions_unapplied",
            "Actions of accepted SETs that changed nothing in force, by why (superseded by a later event, lapsed risk level, another writer's entry, held behind another writer's entry, stale, capped, unsupported by the sink)",
            unapplied.clone(),
        );
        let ignored = Counter::default();
        registry.register(
            "celador_signals_events_ignored",
            "Events accepted that change nothing (an event type celador does not act on, or an unmapped subject)",
            ignored.clone(),
        );
        ReceiverMetrics {
            registry,
            deliveries,
            actions,
            unapplied,
            ignored,
        }
    }
}

impl ReceiverMetrics {
    fn delivery(&self, delivery: Delivery) {
        let (outcome, err) = match delivery {
            Delivery::Applied => ("applied", ""),
            Delivery::Duplicate => ("duplicate", ""),
            Delivery::Refused(code) => ("refused", code.as_str()),
            Delivery::Unavailable => ("unavailable", ""),
        };
        self.deliveries
            .get_or_create(&DeliveryLabels { outcome, err })
            .inc();
    }

    fn action(&self, action: &Action) {
        let action = action_name(action);
        self.actions.get_or_create(&ActionLabels { action }).inc();
    }

    fn unapplied(&self, action: &Action, kept: Kept) {
        let why = match kept {
            Kept::Superseded => "superseded",
            Kept::Lapsed => "lapsed",
            Kept::Another => "another_source",
            Kept::Held => "held",
            Kept::Capped => "cap",
            Kept::Stale => "stale",
            Kept::Unsupported | Kept::Applied => "unsupported",
        };
        let action = action_name(action);
        self.unapplied
            .get_or_create(&UnappliedLabels { action, why })
            .inc();
    }

    /// The actions applied, by kind (`revoke`, `unrevoke`, `risk`).
    pub fn applied(&self, action: &'static str) -> u64 {
        self.actions.get_or_create(&ActionLabels { action }).get()
    }

    /// The actions that changed nothing, by kind and why (`superseded`,
    /// `lapsed`, `unsupported`).
    pub fn unapplied_count(&self, action: &'static str, why: &'static str) -> u64 {
        self.unapplied
            .get_or_create(&UnappliedLabels { action, why })
            .get()
    }

    /// The deliveries counted with `outcome` (and `err`, for refusals).
    pub fn deliveries(&self, outcome: &'static str, err: &'static str) -> u64 {
        self.deliveries
            .get_or_create(&DeliveryLabels { outcome, err })
            .get()
    }

    /// The OpenMetrics text of every counter.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests;
