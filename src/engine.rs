//! The decision engine: one request's attributes, one snapshot of the live
//! state and the time in; a [`Decision`] out.
//!
//! Data flow: [`Engine::decide`] works out which credentials the route
//! requires ([`Requirement`]), verifies them against the snapshot's trust
//! bundles ([`identity`]), and evaluates the snapshot's rules ([`policy`])
//! over the identity, the request ([`attributes`]) and the [`workload`].
//!
//! The engine is pure: no I/O, no logging, no protobuf, no clock of its own.
//! The only state it keeps is the memo of verified credentials, keyed by
//! the generation of the bundle that verified them, so a snapshot with other
//! bundles never sees a stale verdict. Everything above it (the ext_authz
//! edge, the authoring tools) depends on it; it depends on nothing above.

pub mod attributes;
pub mod decision;
pub mod identity;
pub mod percent;
pub mod policy;
pub mod reason;
pub mod snapshot;
pub mod time;
pub mod workload;
pub mod yaml;

use std::time::SystemTime;

pub use attributes::Attributes;
pub use decision::{Decision, RuleError};
pub use reason::Reason;
pub use snapshot::Snapshot;

use identity::jwt::{self, JwtSettings, JwtVerifier};
use identity::verified::{CacheSettings, CacheStats};
use identity::x509::X509Verifier;
use identity::{Identity, IdentityError, Requirement};
use policy::Input;
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
#[derive(Debug, Clone, Default)]
pub struct EngineSettings {
    /// The requirement of routes that do not set `celador.identity`.
    pub requirement: Requirement,
    /// How JWT-SVIDs are read; `None` when no route may use them.
    pub token: Option<TokenSettings>,
    /// The verified-credential caches.
    pub svid_cache: CacheSettings,
}

/// Decides checks. Shared by every connection.
pub struct Engine {
    x509: X509Verifier,
    jwt: Option<(String, JwtVerifier)>,
    workload: Workload,
    requirement: Requirement,
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
        Engine {
            x509: X509Verifier::new(settings.svid_cache),
            jwt: settings
                .token
                .map(|t| (t.header, JwtVerifier::new(t.verify))),
            workload,
            requirement: settings.requirement,
        }
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

    /// The header JWT-SVIDs are read from, if any route may use them.
    pub fn token_header(&self) -> Option<&str> {
        self.jwt.as_ref().map(|(header, _)| header.as_str())
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
        let mut decision = snapshot.policy.evaluate(Input {
            source: identity.source.as_deref(),
            token: identity.token.as_deref(),
            attributes: attrs,
            workload: &self.workload,
            now,
        });
        decision.identity = identity;
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
                    "the context extension {REQUIREMENT_EXTENSION}={name:?} is not one of x509, jwt, either, both"
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
        let source = || {
            let xfcc = attrs.header("x-forwarded-client-cert");
            self.x509.verify(certificate, xfcc, bundles, now)
        };
        let verified_token = |token: Option<&str>| match (token, &self.jwt) {
            (Some(token), Some((_, verifier))) => verifier.verify(token, bundles, now),
            _ => Err(IdentityError::new(
                Reason::JwtMissing,
                "no JWT-SVID: the request has no token in the configured header",
            )),
        };
        Ok(match requirement {
            Requirement::X509 => Identity {
                source: Some(source()?),
                token: None,
            },
            Requirement::Jwt => Identity {
                source: None,
                token: Some(verified_token(token)?),
            },
            Requirement::Both => Identity {
                source: Some(source()?),
                token: Some(verified_token(token)?),
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
                }
            }
        })
    }
}
