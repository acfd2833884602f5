//! One check, end to end: attributes, identity, rules, answer, audit.
//!
//! Data flow: the server hands each `CheckRequest` to [`Authorizer::check`],
//! which reads its [`Attributes`], works out which credentials the route
//! requires ([`Requirement`]), verifies them against the current
//! [`TrustBundles`], evaluates the current [`Policy`], builds the
//! `CheckResponse` and writes one audit record. The policy and bundles are
//! snapshots behind [`ArcSwap`]s: a reload swaps them without a lock on the
//! request path, and a check keeps the snapshots it started with.
//!
//! The whole check is synchronous: there is no await point, so a caller that
//! cancels cannot cut a decision off before its audit record is written.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};

use crate::attributes::Attributes;
use crate::audit;
use crate::config::HeaderValueSource;
use crate::identity::bundle::TrustBundles;
use crate::identity::jwt::{self, JwtSettings, JwtVerifier};
use crate::identity::verified::CacheSettings;
use crate::identity::x509::X509Verifier;
use crate::identity::{Identity, IdentityError, Requirement};
use crate::policy::{Input, Policy, RuleError};
use crate::reason::Reason;
use crate::response;
use crate::workload::Workload;

/// The context extension that selects the [`Requirement`] of a route.
pub const REQUIREMENT_EXTENSION: &str = "celador.identity";

/// How JWT-SVIDs are read.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// The header carrying the token.
    pub header: String,
    /// Whether allowed requests lose the header before the upstream.
    pub remove_header: bool,
    /// How tokens are judged.
    pub verify: JwtSettings,
}

/// Settings of identity, the answer and the audit record.
#[derive(Debug, Clone, Default)]
pub struct DecisionSettings {
    /// The requirement of routes that do not set `celador.identity`.
    pub requirement: Requirement,
    /// How JWT-SVIDs are read; `None` when no route may use them.
    pub token: Option<TokenSettings>,
    /// Headers set on allowed requests, in order.
    pub upstream_headers: Vec<(String, HeaderValueSource)>,
    /// Request headers whose values audit records include.
    pub audit_headers: Vec<String>,
    /// The verified-SVID caches.
    pub svid_cache: CacheSettings,
}

/// The outcome of one check.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Why.
    pub reason: Reason,
    /// The deciding rule, if one decided.
    pub rule: Option<Arc<str>>,
    /// What exactly was wrong with the identity, for an identity failure.
    pub detail: Option<String>,
    /// The caller's verified credentials.
    pub identity: Identity,
    /// Rules whose evaluation failed.
    pub errors: Vec<RuleError>,
    /// The policy the decision was made with.
    pub policy: Arc<Policy>,
}

/// A request that could not be decided: an error for Envoy, whose
/// `failure_mode_allow` decides it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct CheckError {
    /// `invalid_request` or `bundle_unavailable`.
    pub reason: Reason,
    /// Why.
    pub detail: String,
}

impl CheckError {
    fn status(&self) -> tonic::Status {
        match self.reason {
            Reason::BundleUnavailable => tonic::Status::unavailable(self.to_string()),
            _ => tonic::Status::invalid_argument(self.to_string()),
        }
    }
}

/// Decides checks. Shared by every connection.
pub struct Authorizer {
    policy: ArcSwap<Policy>,
    bundles: ArcSwap<TrustBundles>,
    x509: X509Verifier,
    jwt: Option<JwtVerifier>,
    workload: Workload,
    settings: DecisionSettings,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("policy", &self.policy.load().version())
            .field(
                "trust_domains",
                &self.bundles.load().trust_domains().count(),
            )
            .finish_non_exhaustive()
    }
}

impl Authorizer {
    /// An authorizer over the given policy, bundles and workload.
    pub fn new(
        policy: Arc<Policy>,
        bundles: Arc<TrustBundles>,
        workload: Workload,
        settings: DecisionSettings,
    ) -> Self {
        Authorizer {
            policy: ArcSwap::new(policy),
            bundles: ArcSwap::new(bundles),
            x509: X509Verifier::new(settings.svid_cache),
            jwt: settings
                .token
                .as_ref()
                .map(|t| JwtVerifier::new(t.verify.clone())),
            workload,
            settings,
        }
    }

    /// Replaces the policy; checks already running keep the old one.
    pub fn set_policy(&self, policy: Arc<Policy>) {
        self.policy.store(policy);
    }

    /// Replaces the trust bundles; cached verdicts of bundles that changed
    /// lapse.
    pub fn set_bundles(&self, bundles: Arc<TrustBundles>) {
        self.bundles.store(bundles);
    }

    /// The current policy.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// The current trust bundles.
    pub fn bundles(&self) -> Arc<TrustBundles> {
        self.bundles.load_full()
    }

    /// Answers one `CheckRequest` and audits it. An `Err` is a request that
    /// cannot be decided; Envoy's `failure_mode_allow` decides it.
    pub fn check(&self, request: &CheckRequest) -> Result<CheckResponse, tonic::Status> {
        let started = Instant::now();
        let attrs = match Attributes::from_check_request(request) {
            Ok(attrs) => attrs,
            Err(e) => {
                let error = CheckError {
                    reason: Reason::InvalidRequest,
                    detail: e.to_string(),
                };
                audit::record_error(request, &error, started.elapsed());
                return Err(error.status());
            }
        };
        let now = SystemTime::now();
        match self.decide(&attrs, now) {
            Ok(decision) => {
                let response = response::build(
                    &decision,
                    &attrs,
                    &self.settings.upstream_headers,
                    self.removed_headers(),
                );
                audit::record(
                    &decision,
                    &attrs,
                    &self.settings.audit_headers,
                    now,
                    started.elapsed(),
                );
                Ok(response)
            }
            Err(error) => {
                audit::record_error(request, &error, started.elapsed());
                Err(error.status())
            }
        }
    }

    fn removed_headers(&self) -> &[String] {
        match &self.settings.token {
            Some(t) if t.remove_header => std::slice::from_ref(&t.header),
            _ => &[],
        }
    }

    /// Decides a request at `now`, without answering or auditing it.
    pub fn decide(&self, attrs: &Attributes<'_>, now: SystemTime) -> Result<Decision, CheckError> {
        let policy = self.policy.load_full();
        let requirement = self.requirement(attrs)?;
        let identity = match self.identify(attrs, requirement, now) {
            Ok(identity) => identity,
            Err(e) if e.reason.is_error() => {
                return Err(CheckError {
                    reason: e.reason,
                    detail: e.detail,
                });
            }
            Err(e) => {
                return Ok(Decision {
                    allowed: false,
                    reason: e.reason,
                    rule: None,
                    detail: Some(e.detail),
                    identity: Identity::default(),
                    errors: Vec::new(),
                    policy,
                });
            }
        };
        let verdict = policy.evaluate(Input {
            source: identity.x509.as_deref(),
            token: identity.jwt.as_deref(),
            attributes: attrs,
            workload: &self.workload,
            now,
        });
        Ok(Decision {
            allowed: verdict.allowed,
            reason: verdict.reason,
            rule: verdict.rule,
            detail: None,
            identity,
            errors: verdict.errors,
            policy,
        })
    }

    /// The route's requirement: its `celador.identity` context extension, or
    /// the configured default.
    fn requirement(&self, attrs: &Attributes<'_>) -> Result<Requirement, CheckError> {
        let Some(name) = attrs.context.get(REQUIREMENT_EXTENSION) else {
            return Ok(self.settings.requirement);
        };
        let requirement = Requirement::parse(name).ok_or_else(|| CheckError {
            reason: Reason::InvalidRequest,
            detail: format!(
                "the context extension {REQUIREMENT_EXTENSION}={name:?} is not one of x509, jwt, either, both"
            ),
        })?;
        if requirement.reads_jwt() && self.jwt.is_none() {
            return Err(CheckError {
                reason: Reason::InvalidRequest,
                detail: format!(
                    "the route asks for {REQUIREMENT_EXTENSION}={name}, but celador's config has no identity.jwt section"
                ),
            });
        }
        Ok(requirement)
    }

    /// Verifies the credentials `requirement` reads.
    fn identify(
        &self,
        attrs: &Attributes<'_>,
        requirement: Requirement,
        now: SystemTime,
    ) -> Result<Identity, IdentityError> {
        let bundles = self.bundles.load();
        let certificate = attrs.source_certificate;
        let token = match (&self.settings.token, requirement.reads_jwt()) {
            (Some(t), true) => match attrs.header(&t.header) {
                Some(value) => jwt::token_in_header(&t.header, value)?,
                None => None,
            },
            _ => None,
        };
        let x509 = || {
            let xfcc = attrs.header("x-forwarded-client-cert");
            self.x509.verify(certificate, xfcc, &bundles, now)
        };
        let jwt = |token: Option<&str>| match (token, &self.jwt) {
            (Some(token), Some(verifier)) => verifier.verify(token, &bundles, now),
            _ => Err(IdentityError::new(
                Reason::JwtMissing,
                "no JWT-SVID: the request has no token in the configured header",
            )),
        };
        Ok(match requirement {
            Requirement::X509 => Identity {
                x509: Some(x509()?),
                jwt: None,
            },
            Requirement::Jwt => Identity {
                x509: None,
                jwt: Some(jwt(token)?),
            },
            Requirement::Both => Identity {
                x509: Some(x509()?),
                jwt: Some(jwt(token)?),
            },
            Requirement::Either => {
                if certificate.is_empty() && token.is_none() {
                    return Err(IdentityError::new(
                        Reason::IdentityMissing,
                        "neither a client certificate nor a JWT-SVID was presented",
                    ));
                }
                Identity {
                    x509: (!certificate.is_empty()).then(x509).transpose()?,
                    jwt: token.map(|t| jwt(Some(t))).transpose()?,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
