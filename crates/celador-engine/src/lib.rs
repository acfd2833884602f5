//! The decision engine: one request's attributes, one snapshot of the live
//! state and the time in; a [`Decision`] out.
//!
//! Data flow: [`Engine::decide`] works out which credentials the route
//! requires ([`Requirement`]), verifies them against the snapshot's trust
//! bundles ([`identity`]), and evaluates the snapshot's rules ([`policy`])
//! over the identity, the request ([`attributes`]) and the [`workload`].
//!
//! Before the rules, a revoked credential is denied ([`revocations`]), so
//! is a path servers resolve differently from its canonical form
//! ([`request_path`]), and the grant in force is found ([`grants`]); the
//! caller's behavioural [`signals`] are counted; the rules' result may come
//! from the decision [`cache`].
//!
//! The engine is pure: no I/O, no logging, no protobuf, no clock of its own.
//! The state it keeps is memos (verified credentials keyed by the generation
//! of the bundle that verified them; decisions keyed by what they depend on
//! and the generations in force) and the signal counters. Everything above it (the ext_authz
//! edge, the authoring tools) depends on it; it depends on nothing above.

// A `pub` item no other crate can reach is a warning: such an item is
// `pub(crate)`, so that rustc reports it as dead code once nothing uses it.
#![warn(unreachable_pub)]

pub mod attributes;
pub mod cache;
mod clause;
pub mod decision;
pub mod file_kind;
mod generation;
mod grant;
pub mod grants;
pub mod identity;
pub mod percent;
pub mod policy;
pub mod reason;
pub mod redaction;
pub mod request_path;
pub mod revocations;
pub mod risks;
pub mod signals;
mod snapshot;
mod snippet;
pub mod time;
pub mod workload;
pub mod yaml;

#[cfg(test)]
mod testing;

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::SystemTime;

pub use attributes::Attributes;
pub use decision::{Decision, RuleError, Shadow, ShadowRules};
pub use reason::Reason;
pub use snapshot::Snapshot;

use cache::{DecisionCache, DecisionCacheSettings, DecisionCacheStats};
use grants::Grant;
use identity::jwt::{self, JwtSettings, JwtVerifier};
use identity::verified::{CacheSettings, CacheStats};
use identity::x509::X509Verifier;
use identity::{Identity, IdentityError, Requirement};
use policy::Input;
use policy::footprint::Footprint;
use redaction::Redaction;
use signals::SignalTable;
use workload::Workload;

/// The context extension that selects the [`Requirement`] of a route.
pub const REQUIREMENT_EXTENSION: &str = "celador.identity";

/// How JWT-SVIDs are read.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// The header carrying the token.
    pub header: String,
    /// How tokens are judged.
    pub verify: JwtSettings,
}

/// What the engine is told once, at start-up.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// The requirement of routes that do not set `celador.identity`.
    pub requirement: Requirement,
    /// How JWT-SVIDs are read; `None` when no route may use them.
    pub token: Option<TokenSettings>,
    /// The verified-credential caches.
    pub svid_cache: CacheSettings,
    /// The decision cache.
    pub decision_cache: DecisionCacheSettings,
    /// How many identities behavioural signals are kept for; 0 keeps none.
    pub signals_identities: usize,
    /// What outputs may show of a request (the token's header is added).
    pub redaction: Redaction,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            requirement: Requirement::default(),
            token: None,
            svid_cache: CacheSettings::default(),
            decision_cache: DecisionCacheSettings::default(),
            signals_identities: 10_000,
            redaction: Redaction::default(),
        }
    }
}

/// Decides checks. Shared by every connection.
pub struct Engine {
    x509: X509Verifier,
    jwt: Option<(String, JwtVerifier)>,
    workload: Workload,
    requirement: Requirement,
    decisions: DecisionCache,
    signals: SignalTable,
    fleet: Option<Arc<dyn signals::FleetCounter>>,
    redaction: Redaction,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("requirement", &self.requirement)
            .field("workload", &self.workload.name)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine for `workload` with `settings`.
    pub fn new(workload: Workload, settings: EngineSettings) -> Self {
        // The token's header is a credential, whatever else is shown.
        let redaction = match &settings.token {
            Some(token) => settings.redaction.hiding_header(&token.header),
            None => settings.redaction,
        };
        Engine {
            redaction,
            x509: X509Verifier::new(settings.svid_cache),
            jwt: settings
                .token
                .map(|t| (t.header, JwtVerifier::new(t.verify))),
            workload,
            requirement: settings.requirement,
            decisions: DecisionCache::new(settings.decision_cache),
            signals: SignalTable::new(settings.signals_identities),
            fleet: None,
        }
    }

    /// This engine, also counting into `fleet` (rules read it as
    /// `signals.fleet`).
    pub fn with_fleet(mut self, fleet: Arc<dyn signals::FleetCounter>) -> Self {
        self.fleet = Some(fleet);
        self
    }

    /// Counts a denial of `caller`, here and over the fleet.
    fn count_denial(&self, caller: &str, now: SystemTime) {
        self.signals.record_denial(caller, now);
        if let Some(fleet) = &self.fleet {
            fleet.record_denial(caller, now);
        }
    }

    /// The decision cache's hits and misses.
    pub fn decision_cache_stats(&self) -> DecisionCacheStats {
        self.decisions.stats()
    }

    /// The behavioural signals table.
    pub fn signals(&self) -> &SignalTable {
        &self.signals
    }

    /// The SVID caches' hits and misses: X.509-SVIDs, then JWT-SVIDs.
    pub fn svid_cache_stats(&self) -> (CacheStats, CacheStats) {
        let jwt = self
            .jwt
            .as_ref()
            .map(|(_, verifier)| verifier.cache_stats())
            .unwrap_or_default();
        (self.x509.cache_stats(), jwt)
    }

    /// What outputs may show of a request.
    pub fn redaction(&self) -> &Redaction {
        &self.redaction
    }

    /// Decides a request with `snapshot` at `now`.
    ///
    /// Every request gets a decision; when it cannot be judged (an invalid
    /// route setting, a trust domain still without its bundle) that is a
    /// denial with the reason why.
    pub fn decide(&self, snapshot: &Snapshot, attrs: &Attributes<'_>, now: SystemTime) -> Decision {
        let identity = self
            .requirement(attrs)
            .and_then(|requirement| self.identify(snapshot, attrs, requirement, now));
        let identity = match identity {
            Ok(identity) => identity,
            Err(failure) => return Decision::refused(failure, snapshot.policy.shared_version()),
        };
        let (identity, signals) = match self.screen(snapshot, attrs, identity, now) {
            ControlFlow::Continue(screened) => screened,
            ControlFlow::Break(denied) => return denied,
        };
        let input = Input {
            source: identity.source.as_deref(),
            token: identity.token.as_deref(),
            attributes: attrs,
            workload: &self.workload,
            now,
            grant: None,
            signals: &signals,
        };
        let grant = snapshot.grants.find(&identity, input);
        let input = Input {
            grant: grant.as_ref(),
            ..input
        };
        // What the enforced and the shadow rules can depend on.
        let shadow = snapshot.shadow.as_ref().map(|p| p.footprint());
        let footprints: &[&Footprint] = match &shadow {
            Some(shadow) => &[snapshot.policy.footprint(), shadow],
            None => &[snapshot.policy.footprint()],
        };
        let mut decision = if self.decisions.enabled() && footprints.iter().all(|f| f.cacheable()) {
            self.cached(snapshot, footprints, input, &identity, grant.as_ref())
        } else {
            evaluate(snapshot, input, &self.redaction)
        };
        if footprints.iter().any(|f| f.volatile.contains("signals")) {
            decision.signals = Some(signals);
        }
        if !decision.allowed
            && let Some(caller) = identity.caller()
        {
            self.count_denial(caller, now);
        }
        decision.identity = identity;
        decision
    }

    /// The denials made before any rule, and outside the decision cache: a
    /// revoked credential (which overrides everything), and a path that
    /// servers resolve differently from the canonical one rules would
    /// judge. Counts the caller's request in its signals, and its denial.
    fn screen(
        &self,
        snapshot: &Snapshot,
        attrs: &Attributes<'_>,
        identity: Identity,
        now: SystemTime,
    ) -> ControlFlow<Decision, (Identity, signals::Signals)> {
        if let Some(revoked) = snapshot.revocations.check(&identity) {
            return ControlFlow::Break(Decision {
                reason: Reason::Revoked,
                detail: Some(format!("revoked by {}: {}", revoked.entry, revoked.reason)),
                identity,
                revoked: Some(revoked),
                policy_version: snapshot.policy.shared_version(),
                ..Decision::default()
            });
        }
        let mut signals = identity
            .caller()
            .map(|caller| {
                let mut counts = self.signals.record_request(caller, now);
                if let Some(fleet) = &self.fleet {
                    counts.fleet = fleet.record_request(caller, now);
                }
                counts
            })
            .unwrap_or_default();
        signals.store_stale_seconds = snapshot.store_stale_since.map_or(0, |since| {
            let stale = now.duration_since(since).unwrap_or_default().as_secs();
            u32::try_from(stale).unwrap_or(u32::MAX)
        });
        signals.risk = snapshot.risks.find(&identity, now);
        if let Some(ambiguity) = attrs.path_ambiguity {
            if let Some(caller) = identity.caller() {
                self.count_denial(caller, now);
            }
            return ControlFlow::Break(Decision {
                identity,
                ..Decision::invalid_path(ambiguity, snapshot.policy.shared_version())
            });
        }
        ControlFlow::Continue((identity, signals))
    }

    /// The decision for `input` from the decision cache, or evaluated and
    /// remembered.
    fn cached(
        &self,
        snapshot: &Snapshot,
        footprints: &[&Footprint],
        input: Input<'_>,
        identity: &Identity,
        grant: Option<&Arc<Grant>>,
    ) -> Decision {
        let mut key = cache::key(snapshot, footprints, input.attributes, identity, grant);
        // Time-bound rules: the hour, day or side of an instant they read.
        snapshot.policy.clock_key(input, &mut key);
        if let Some(shadow) = &snapshot.shadow {
            shadow.clock_key(input, &mut key);
        }
        if let Some(hit) = self.decisions.get(&key, input.now) {
            let mut decision = (*hit).clone();
            decision.from_cache = true;
            return decision;
        }
        let decision = evaluate(snapshot, input, &self.redaction);
        // Never past the credentials, nor past a grant opening or closing.
        let until = [
            identity.source.as_ref().map(|s| s.chain_not_after),
            identity.token.as_ref().map(|t| t.expiry),
            snapshot.grants.next_change(identity, input.now),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or_else(time::latest);
        self.decisions.insert(
            key.into(),
            Arc::new(decision.clone()),
            identity,
            until,
            input.now,
        );
        decision
    }

    /// The route's requirement: its `celador.identity` context extension, or
    /// the configured default.
    fn requirement(&self, attrs: &Attributes<'_>) -> Result<Requirement, IdentityError> {
        let Some(name) = attrs.context.get(REQUIREMENT_EXTENSION) else {
            return Ok(self.requirement);
        };
        let requirement = Requirement::parse(name).ok_or_else(|| {
            IdentityError::new(
                Reason::InvalidRoute,
                format!(
                    "the context extension {REQUIREMENT_EXTENSION}={name:?} is not one of {}",
                    Requirement::NAMES.join(", ")
                ),
            )
        })?;
        if requirement.reads_jwt() && self.jwt.is_none() {
            return Err(IdentityError::new(
                Reason::InvalidRoute,
                format!(
                    "the route asks for {REQUIREMENT_EXTENSION}={name}, but celador's config has no identity.token section"
                ),
            ));
        }
        Ok(requirement)
    }

    /// Verifies the credentials `requirement` reads.
    fn identify(
        &self,
        snapshot: &Snapshot,
        attrs: &Attributes<'_>,
        requirement: Requirement,
        now: SystemTime,
    ) -> Result<Identity, IdentityError> {
        let bundles = &snapshot.bundles;
        let certificate = attrs.source_certificate;
        let token = match (&self.jwt, requirement.reads_jwt()) {
            (Some((header, _)), true) => match attrs.header(header) {
                Some(value) => jwt::token_in_header(header, value)?,
                None => None,
            },
            _ => None,
        };
        // Whether every credential came from the verified-credential cache.
        let cached = std::cell::Cell::new(true);
        let source = || {
            let xfcc = attrs.header("x-forwarded-client-cert");
            let (svid, hit) = self.x509.verify_with_hit(certificate, xfcc, bundles, now)?;
            cached.set(cached.get() && hit);
            Ok::<_, IdentityError>(svid)
        };
        let verified_token = |token: Option<&str>| {
            let (svid, hit) = self.verify_token(token, bundles, now)?;
            cached.set(cached.get() && hit);
            Ok::<_, IdentityError>(svid)
        };
        let mut identity = match requirement {
            Requirement::X509 => Identity {
                source: Some(source()?),
                ..Identity::default()
            },
            Requirement::Jwt => Identity {
                token: Some(verified_token(token)?),
                ..Identity::default()
            },
            Requirement::Both => Identity {
                source: Some(source()?),
                token: Some(verified_token(token)?),
                ..Identity::default()
            },
            Requirement::Either => {
                if certificate.is_empty() && token.is_none() {
                    return Err(IdentityError::new(
                        Reason::IdentityMissing,
                        "neither a client certificate nor a JWT-SVID was presented",
                    ));
                }
                Identity {
                    source: (!certificate.is_empty()).then(source).transpose()?,
                    token: token.map(|t| verified_token(Some(t))).transpose()?,
                    ..Identity::default()
                }
            }
        };
        identity.from_cache = cached.get();
        Ok(identity)
    }

    /// Verifies the JWT-SVID `token`, saying whether the verdict was cached.
    fn verify_token(
        &self,
        token: Option<&str>,
        bundles: &identity::bundle::TrustBundles,
        now: SystemTime,
    ) -> Result<(Arc<identity::jwt::JwtSvid>, bool), IdentityError> {
        match (token, &self.jwt) {
            (Some(token), Some((_, verifier))) => verifier.verify_with_hit(token, bundles, now),
            _ => Err(IdentityError::new(
                Reason::JwtMissing,
                "no JWT-SVID: the request has no token in the configured header",
            )),
        }
    }
}

/// The rules' decision, with what the shadow rules would have decided;
/// its rule errors as `redaction` lets them be shown.
fn evaluate(snapshot: &Snapshot, input: Input<'_>, redaction: &Redaction) -> Decision {
    let mut decision = snapshot.policy.evaluate(input);
    // A deny rule that failed: which clause, for the audit record. Rare, and
    // the request is denied anyway.
    if decision.reason == Reason::RuleError
        && let Some(rule) = decision.rule.as_deref()
    {
        let shown = redaction.shown(input.attributes);
        let shown_attrs = shown.attributes();
        let shown = Input {
            attributes: &shown_attrs,
            ..input
        };
        decision.explanation = snapshot.policy.explain(rule, input, shown).map(Arc::new);
    }
    // Errors may quote what a rule read; rare, so the cost is theirs.
    if !decision.errors.is_empty() {
        redaction.decision(&mut decision, input.attributes);
    }
    let shadow = |rules: ShadowRules, d: Decision, version: Option<Arc<str>>| Shadow {
        rules,
        allowed: d.allowed,
        reason: d.reason,
        rule: d.rule,
        version,
    };
    if let Some(d) = snapshot.policy.evaluate_shadow(input) {
        decision.shadow.push(shadow(ShadowRules::Marked, d, None));
    }
    if let Some(policy) = &snapshot.shadow {
        let d = policy.evaluate(input);
        let version = Some(policy.shared_version());
        decision.shadow.push(shadow(ShadowRules::File, d, version));
    }
    decision
}
