//! The receiver's config file (`celador signals serve --config FILE`).
//!
//! ```yaml
//! listen: 0.0.0.0:8443
//! tls: { cert: tls/tls.crt, key: tls/tls.key, reload_interval: 10s }
//! max_age: 1h          # the oldest iat accepted (and how long a jti, and a revocation's event time, is remembered)
//! max_future: 5m       # how far ahead of this clock an iat may be
//! risk_expiry: 24h     # how long a risk level lasts unless refreshed (at most 720h)
//! max_risks: 10000     # risk entries one transmitter may hold (or per transmitter)
//! transmitters:
//!   - issuer: https://idp.example.com/
//!     audience: https://celador-signals.example.com/   # or a list
//!     jwks_file: idp-jwks.json       # or jwks_uri: https://idp.example.com/jwks
//!     push_token_file: idp-token     # optional: the bearer it must push with
//!     poll: { url: https://idp.example.com/poll, token_file: poll-token, wait: 30s }  # optional (RFC 8936)
//! subjects:            # RFC 9493 subjects that are not SPIFFE IDs
//!   - subject: { format: iss_sub, iss: https://idp.example.com/, sub: exporter-bot }
//!     spiffe_id: spiffe://prod.acme.io/ns/batch/sa/exporter
//! events:              # overrides of the default handling, by event type
//!   risc/account-purged: ignore
//! assurance_levels:    # CAEP assurance-level-change -> risk (these are the defaults)
//!   NIST-AAL: { nist-aal1: high, nist-aal2: medium, nist-aal3: low }
//! sink:               # one of:
//!   revocations_file: /var/run/celador/revocations.yaml   # a single node
//!   risks_file: /var/run/celador/risks.yaml               # (optional, with it)
//!   store: rediss://redis.platform:6379/0                 # the fleet's store
//!   password_file: /var/run/celador-store/password        # (as governance:)
//! log: { level: info, format: json }
//! ```
//!
//! Data flow: read and checked once at start-up (every problem reported at
//! once, exit code 64), then turned into the [`super::receiver::Receiver`]
//! and the server's settings. Paths are relative to the file's directory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::event::{Assurance, Handling, Mapping};
use super::jwks::{self, HttpsUrl, KeyRefresh};
use super::poll::Poller;
use super::receiver::{Deliveries, Receiver};
use super::set::{Transmitter, Verifier};
use super::sink::{DEFAULT_MAX_RISKS, FileSink, RiskCap, Sink};
use super::store::StoreSink;
use super::subject::{SubjectSpec, Subjects};
use crate::app::config::{DurationText, LogConfig};
use crate::sources::fleet::StoreSettings;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// The HTTPS address transmitters push to.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The serving certificate.
    pub tls: TlsFiles,
    /// The oldest `iat` accepted; also how long a store keeps a
    /// revocation's event time (`crate::ssf::store`).
    #[serde(default = "default_max_age")]
    pub max_age: DurationText,
    /// How far ahead of the clock an `iat` may be.
    #[serde(default = "default_max_future")]
    pub max_future: DurationText,
    /// How long a risk level lasts after its event unless a later event
    /// refreshes it.
    #[serde(default = "default_risk_expiry")]
    pub risk_expiry: DurationText,
    /// How many risk entries (subjects) each transmitter may hold at once,
    /// unless its own `max_risks` says otherwise.
    #[serde(default = "default_max_risks")]
    pub max_risks: u64,
    /// The transmitters SETs are accepted from.
    pub transmitters: Vec<TransmitterSpec>,
    /// Subjects that are not SPIFFE IDs, mapped to SPIFFE IDs.
    #[serde(default)]
    pub subjects: Vec<SubjectSpec>,
    /// Overrides of the default handling of event types.
    #[serde(default)]
    pub events: HashMap<String, Handling>,
    /// CAEP `assurance-level-change` to risk: namespace -> level -> risk
    /// level; each namespace given replaces its defaults.
    #[serde(default)]
    pub assurance_levels: std::collections::BTreeMap<
        String,
        std::collections::BTreeMap<String, crate::engine::signals::RiskLevel>,
    >,
    /// Where actions go.
    pub sink: SinkSpec,
    /// The receiver's own logs.
    #[serde(default)]
    pub log: LogConfig,
}

/// The serving certificate's files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The certificate chain (PEM).
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
    /// How often the files are read again.
    #[serde(default = "default_reload")]
    pub reload_interval: DurationText,
}

/// A string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// One transmitter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransmitterSpec {
    /// Its issuer, as its SETs' `iss`.
    pub issuer: String,
    /// The `aud` its SETs carry for this receiver.
    pub audience: OneOrMany,
    /// Its JWKS (the keys its SETs are signed with), as a file; or
    /// `jwks_uri`.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Its JWKS as an `https://` URL, fetched at start-up, every
    /// `jwks_refresh`, and on a SET with an unknown `kid`.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// CA certificates (PEM) that verify `jwks_uri`'s server (default: the
    /// system's).
    #[serde(default)]
    pub jwks_ca_file: Option<PathBuf>,
    /// How often `jwks_uri` is fetched again.
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh: DurationText,
    /// A file holding the bearer token it must push with.
    #[serde(default)]
    pub push_token_file: Option<PathBuf>,
    /// Its poll endpoint (RFC 8936), if SETs are polled from it.
    #[serde(default)]
    pub poll: Option<PollSpec>,
    /// The SPIFFE IDs its events may act on (IDs or prefixes); a SET about
    /// any other is refused `access_denied`. Unset: any, and certificates
    /// and tokens too (which a scoped transmitter may not revoke).
    #[serde(default)]
    pub scope: Vec<String>,
    /// How many risk entries it may hold at once (default: the top-level
    /// `max_risks`).
    #[serde(default)]
    pub max_risks: Option<u64>,
}

/// A transmitter's poll endpoint (RFC 8936).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollSpec {
    /// The endpoint: `https://` (or `http://` to a loopback address).
    pub url: String,
    /// A file holding the bearer token the receiver polls with.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// CA certificates (PEM) that verify its server (default: the system's).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// How long after the start of a poll that brought nothing the next
    /// one starts, at the soonest.
    #[serde(default = "default_poll_interval")]
    pub interval: DurationText,
    /// Long polling (RFC 8936 `returnImmediately: false`): how long the
    /// transmitter may hold a poll (agreed with it); unset: short polls.
    #[serde(default)]
    pub wait: Option<DurationText>,
}

impl PollSpec {
    /// The poller of `issuer`.
    fn poller(&self, issuer: &str, base: &Path) -> Result<Poller, String> {
        if let Some(problem) = self.interval.problem() {
            return Err(format!("poll.interval: {problem}"));
        }
        if self.interval.0 < Duration::from_millis(100) {
            return Err("poll.interval: at least 100ms".into());
        }
        let ca = self.ca_file.as_deref().map(|p| base.join(p));
        let url = HttpsUrl::new(&self.url, ca.as_deref()).map_err(|e| format!("poll.url {e}"))?;
        let token = match &self.token_file {
            Some(file) => {
                let file = base.join(file);
                match std::fs::read_to_string(&file) {
                    Ok(token) if !token.trim().is_empty() => Some(token.trim().to_owned()),
                    Ok(_) => return Err(format!("poll.token_file: {} is empty", file.display())),
                    Err(e) => {
                        return Err(format!(
                            "poll.token_file: cannot read {}: {e}",
                            file.display()
                        ));
                    }
                }
            }
            None => None,
        };
        let poller = Poller::new(issuer, url, token, self.interval.0);
        match &self.wait {
            None => Ok(poller),
            Some(wait) => {
                if let Some(problem) = wait.problem() {
                    return Err(format!("poll.wait: {problem}"));
                }
                if wait.0 < Duration::from_secs(1) || wait.0 > super::poll::MAX_WAIT {
                    return Err("poll.wait: from 1s to 5m".into());
                }
                Ok(poller.long(wait.0))
            }
        }
    }
}

fn default_poll_interval() -> DurationText {
    DurationText::new(Duration::from_secs(5))
}

/// Where the receiver's actions go: a file, or the governance store (its
/// connection keys are those of `celador serve`'s `governance:`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSpec {
    /// A revocations file that `celador serve` watches.
    #[serde(default)]
    pub revocations_file: Option<PathBuf>,
    /// With it, a risks file that `celador serve` watches (`risks:`).
    #[serde(default)]
    pub risks_file: Option<PathBuf>,
    /// The governance store: `redis://HOST:PORT/DB` or `rediss://...`.
    #[serde(default)]
    pub store: Option<String>,
    /// An ACL user.
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the store's password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the store's password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// CA certificates (PEM) for a `rediss://` store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The store's key prefix (as the sidecars').
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
}

fn default_key_prefix() -> String {
    "celador".into()
}

impl SinkSpec {
    /// The sink; a problem names its key.
    fn sink(
        &self,
        base: &Path,
        (risk_expiry, cap, max_age): (Duration, RiskCap, Duration),
    ) -> Result<Arc<dyn Sink>, String> {
        let resolve = |p: &Path| base.join(p);
        match (&self.revocations_file, &self.store) {
            (Some(file), None) => {
                let sink = FileSink::open(&resolve(file))
                    .map_err(|e| format!("sink.revocations_file: {e}"))?
                    .with_order_window(max_age);
                let sink = match &self.risks_file {
                    Some(risks) => sink
                        .with_risks(&resolve(risks), risk_expiry, cap)
                        .map_err(|e| format!("sink.risks_file: {e}"))?,
                    None => sink,
                };
                Ok(Arc::new(sink))
            }
            (None, Some(_)) if self.risks_file.is_some() => {
                Err("sink.risks_file: with a store, risk levels go into the store".into())
            }
            (None, Some(url)) => {
                if self.key_prefix.is_empty() || self.key_prefix.contains(['{', '}']) {
                    return Err("sink.key_prefix: a non-empty name without braces".into());
                }
                if self.password_file.is_some() && self.password_env.is_some() {
                    return Err("sink: give password_file or password_env, not both".into());
                }
                let settings = StoreSettings {
                    url: url.clone(),
                    username: self.username.clone(),
                    password_file: self.password_file.as_deref().map(resolve),
                    password_env: self.password_env.clone(),
                    ca_file: self.ca_file.as_deref().map(resolve),
                    key_prefix: self.key_prefix.clone(),
                };
                let sink = StoreSink::new(&settings, (risk_expiry, cap), |name| {
                    std::env::var(name).ok()
                })
                .map_err(|e| format!("sink.store: {e}"))?
                .with_order_window(max_age);
                Ok(Arc::new(sink))
            }
            _ => Err("sink: give revocations_file or store, one of them".into()),
        }
    }
}

/// Five minutes: a rotation an IdP announces ahead is picked up well in
/// time, and one it does not is picked up on the first SET with the new
/// `kid`.
fn default_jwks_refresh() -> DurationText {
    DurationText::new(Duration::from_secs(300))
}

fn default_listen() -> String {
    "0.0.0.0:8443".into()
}
fn default_max_age() -> DurationText {
    DurationText::new(Duration::from_secs(3600))
}
/// A day: a tool that judges an identity risky says so again within a day
/// (or sends a lower level sooner); a report nobody refreshes stops
/// deciding requests.
fn default_risk_expiry() -> DurationText {
    DurationText::new(Duration::from_secs(24 * 3600))
}
fn default_max_risks() -> u64 {
    DEFAULT_MAX_RISKS
}
/// The largest `max_risks`: every sidecar holds each entry.
const MAX_MAX_RISKS: u64 = 1_000_000;

/// The cap of each transmitter; each problem pushed.
fn risk_cap(config: &ReceiverConfig, problems: &mut Vec<String>) -> RiskCap {
    let mut check = |at: &str, n: u64| {
        if n > MAX_MAX_RISKS {
            problems.push(format!(
                "{at}: at most {MAX_MAX_RISKS} (every sidecar replicates each entry)"
            ));
        }
    };
    check("max_risks", config.max_risks);
    let mut by_issuer = HashMap::new();
    for (i, t) in config.transmitters.iter().enumerate() {
        if let Some(n) = t.max_risks {
            check(&format!("transmitters[{i}] ({}): max_risks", t.issuer), n);
            by_issuer.insert(t.issuer.clone(), n);
        }
    }
    RiskCap::new(config.max_risks, by_issuer)
}

/// The longest `risk_expiry`: a risk level is a live signal, not a
/// revocation.
const MAX_RISK_EXPIRY: Duration = Duration::from_secs(30 * 24 * 3600);
fn default_max_future() -> DurationText {
    DurationText::new(Duration::from_secs(300))
}
fn default_reload() -> DurationText {
    DurationText::new(Duration::from_secs(10))
}

/// The receiver and the server's settings, ready to run.
#[derive(Debug)]
pub struct Loaded {
    /// The receiver.
    pub receiver: Receiver,
    /// The address to listen on.
    pub listen: SocketAddr,
    /// The certificate files.
    pub cert: PathBuf,
    /// The key file.
    pub key: PathBuf,
    /// How often they are read again.
    pub reload_interval: Duration,
    /// The logs.
    pub log: LogConfig,
}

/// Reads and checks the config at `path`; every problem at once.
pub fn load(path: &Path) -> Result<Loaded, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let config: ReceiverConfig =
        crate::engine::yaml::from_str(&text, path).map_err(|e| e.rendered)?;
    let base = path.parent().unwrap_or(Path::new("."));
    build(config, base)
}

/// What the transmitters' config makes: the transmitters, their push
/// tokens, and the keys to keep fresh from a URL (with how often).
type Transmitters = (
    Vec<Transmitter>,
    HashMap<String, String>,
    Vec<(Transmitter, HttpsUrl, Duration)>,
    Vec<Arc<dyn Deliveries>>,
);

/// A transmitter with its keys, from its `jwks_file` or fetched from its
/// `jwks_uri` (then with the URL, to fetch again).
fn keys(
    spec: &TransmitterSpec,
    audiences: Vec<String>,
    base: &Path,
) -> Result<(Transmitter, Option<HttpsUrl>), String> {
    match (&spec.jwks_file, &spec.jwks_uri) {
        (Some(file), None) => {
            if spec.jwks_ca_file.is_some() {
                return Err("jwks_ca_file: a CA file is for jwks_uri".into());
            }
            let path = base.join(file);
            let jwks =
                std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let t = Transmitter::new(&spec.issuer, audiences, &jwks).map_err(|e| e.to_string())?;
            Ok((t, None))
        }
        (None, Some(uri)) => {
            if let Some(problem) = spec.jwks_refresh.problem() {
                return Err(format!("jwks_refresh: {problem}"));
            }
            if spec.jwks_refresh.0 < Duration::from_secs(1) {
                return Err("jwks_refresh: at least 1s".into());
            }
            let ca = spec.jwks_ca_file.as_deref().map(|p| base.join(p));
            let url = HttpsUrl::new(uri, ca.as_deref()).map_err(|e| format!("jwks_uri {e}"))?;
            let jwks = jwks::fetch_blocking(&url)
                .map_err(|e| format!("jwks_uri: the first fetch failed: {e}"))?;
            let t = Transmitter::new(&spec.issuer, audiences, &jwks)
                .map_err(|e| format!("jwks_uri {}: {e}", url.shown()))?;
            Ok((t, Some(url)))
        }
        _ => Err("give jwks_file or jwks_uri, one of them".into()),
    }
}

/// The transmitters, their push tokens and their URL keys; each problem
/// pushed.
fn transmitters(
    specs: &[TransmitterSpec],
    base: &Path,
    problems: &mut Vec<String>,
) -> Transmitters {
    let mut transmitters = Vec::new();
    let mut tokens = HashMap::new();
    let mut refreshes = Vec::new();
    let mut pollers = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let at = format!("transmitters[{i}] ({})", spec.issuer);
        let audiences = match &spec.audience {
            OneOrMany::One(a) => vec![a.clone()],
            OneOrMany::Many(list) => list.clone(),
        };
        match keys(spec, audiences, base) {
            Ok((t, url)) => {
                for p in &spec.scope {
                    if let Err(e) =
                        crate::engine::identity::SpiffeId::parse(p.trim_end_matches('/'))
                    {
                        problems.push(format!("{at}: scope {p:?}: {e}"));
                    }
                }
                let t = t.scoped(spec.scope.clone());
                if let Some(url) = url {
                    refreshes.push((t.clone(), url, spec.jwks_refresh.0));
                }
                transmitters.push(t);
            }
            Err(e) => problems.push(format!("{at}: {e}")),
        }
        if let Some(poll) = &spec.poll {
            match poll.poller(&spec.issuer, base) {
                Ok(poller) => pollers.push(Arc::new(poller) as Arc<dyn Deliveries>),
                Err(e) => problems.push(format!("{at}: {e}")),
            }
        }
        if let Some(file) = &spec.push_token_file {
            let file = base.join(file);
            match std::fs::read_to_string(&file) {
                Ok(token) if !token.trim().is_empty() => {
                    tokens.insert(spec.issuer.clone(), token.trim().to_owned());
                }
                Ok(_) => problems.push(format!("{at}: {} is empty", file.display())),
                Err(e) => problems.push(format!("{at}: cannot read {}: {e}", file.display())),
            }
        }
    }
    (transmitters, tokens, refreshes, pollers)
}

/// The durations' problems, each pushed.
fn durations(config: &ReceiverConfig, problems: &mut Vec<String>) {
    for (key, value) in [
        ("max_age", &config.max_age),
        ("max_future", &config.max_future),
        ("risk_expiry", &config.risk_expiry),
        ("tls.reload_interval", &config.tls.reload_interval),
    ] {
        if let Some(problem) = value.problem() {
            problems.push(format!("{key}: {problem}"));
        } else if value.0.is_zero() && key != "max_future" {
            problems.push(format!("{key}: must be more than 0"));
        }
    }
    if config.risk_expiry.problem().is_none() && config.risk_expiry.0 > MAX_RISK_EXPIRY {
        problems.push(
            "risk_expiry: at most 720h, 30 days (a risk level is refreshed, not kept)".into(),
        );
    }
}

/// The event handling: the defaults, `events:` and `assurance_levels:`.
fn mapping(config: &ReceiverConfig, problems: &mut Vec<String>) -> Option<Mapping> {
    let assurance = Assurance::new(&config.assurance_levels)
        .map_err(|e| problems.push(e))
        .ok();
    Mapping::new(&config.events)
        .map_err(|e| problems.push(e))
        .ok()
        .zip(assurance)
        .map(|(m, a)| m.with_assurance(a))
}

fn build(config: ReceiverConfig, base: &Path) -> Result<Loaded, String> {
    let resolve = |p: &Path| base.join(p);
    let mut problems = Vec::new();
    let listen = config
        .listen
        .parse::<SocketAddr>()
        .map_err(|_| {
            problems.push(format!(
                "listen: {:?} is not an address like 0.0.0.0:8443",
                config.listen
            ))
        })
        .ok();
    durations(&config, &mut problems);
    if config.transmitters.is_empty() {
        problems.push("transmitters: name at least one".into());
    }
    let (transmitters, tokens, refreshes, pollers) =
        transmitters(&config.transmitters, base, &mut problems);
    let subjects = Subjects::new(&config.subjects)
        .map_err(|e| problems.push(format!("subjects:\n{e}")))
        .ok();
    let mapping = mapping(&config, &mut problems);
    if let Err(e) = crate::app::config::log_filter(&config.log.level) {
        problems.push(format!("log.level {:?}: {e}", config.log.level));
    }
    let cap = risk_cap(&config, &mut problems);
    let sink = config
        .sink
        .sink(base, (config.risk_expiry.0, cap, config.max_age.0))
        .map_err(|e| problems.push(e))
        .ok();
    let (Some(listen), Some(subjects), Some(mapping), Some(sink), true) =
        (listen, subjects, mapping, sink, problems.is_empty())
    else {
        return Err(problems.join("\n"));
    };
    let verifier = Verifier::new(transmitters, config.max_age.0, config.max_future.0);
    let counters = jwks::FetchCounters::default();
    let refreshes = refreshes
        .into_iter()
        .map(|(t, url, every)| Arc::new(KeyRefresh::new(t, url, every, counters.clone())))
        .collect();
    let receiver = Receiver::new(verifier, subjects, mapping, tokens, sink)
        .with_key_refresh(refreshes, counters)
        .with_pollers(pollers);
    Ok(Loaded {
        receiver,
        listen,
        cert: resolve(&config.tls.cert),
        key: resolve(&config.tls.key),
        reload_interval: config.tls.reload_interval.0,
        log: config.log,
    })
}

#[cfg(test)]
mod tests;
