//! One check, end to end: attributes, identity, rules, answer, audit.
//!
//! Data flow: the server hands each `CheckRequest` to [`Authorizer::check`],
//! which reads its [`Attributes`], verifies the caller's X.509-SVID against
//! the current [`TrustBundles`], evaluates the current [`Policy`], builds the
//! `CheckResponse` and writes one audit record. The policy and bundles are
//! snapshots behind [`ArcSwap`]s: a reload swaps them without a lock on the
//! request path, and a check keeps the snapshot it started with.
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
use crate::identity::X509Svid;
use crate::identity::bundle::TrustBundles;
use crate::identity::x509::{CacheSettings, X509Verifier};
use crate::policy::{Input, Policy, RuleError};
use crate::reason::Reason;
use crate::response;
use crate::workload::Workload;

/// Settings of the answer and the audit record.
#[derive(Debug, Clone, Default)]
pub struct DecisionSettings {
    /// Headers set on allowed requests, in order.
    pub upstream_headers: Vec<(String, HeaderValueSource)>,
    /// Request headers whose values audit records include.
    pub audit_headers: Vec<String>,
    /// The verified-SVID cache.
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
    /// The caller's verified X.509-SVID, if verification succeeded.
    pub svid: Option<Arc<X509Svid>>,
    /// Rules whose evaluation failed.
    pub errors: Vec<RuleError>,
    /// The policy the decision was made with.
    pub policy: Arc<Policy>,
}

/// Decides checks. Shared by every connection.
pub struct Authorizer {
    policy: ArcSwap<Policy>,
    bundles: ArcSwap<TrustBundles>,
    x509: X509Verifier,
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
            workload,
            settings,
        }
    }

    /// Replaces the policy; checks already running keep the old one.
    pub fn set_policy(&self, policy: Arc<Policy>) {
        self.policy.store(policy);
    }

    /// Replaces the trust bundles; cached verdicts of the old ones lapse.
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
    /// cannot be checked at all; Envoy's `failure_mode_allow` decides it.
    pub fn check(&self, request: &CheckRequest) -> Result<CheckResponse, tonic::Status> {
        let started = Instant::now();
        let attrs = match Attributes::from_check_request(request) {
            Ok(attrs) => attrs,
            Err(e) => {
                audit::record_error(request, &e.to_string(), started.elapsed());
                return Err(tonic::Status::invalid_argument(e.to_string()));
            }
        };
        let decision = self.decide(&attrs, SystemTime::now());
        let response = response::build(&decision, &attrs, &self.settings.upstream_headers);
        audit::record(
            &decision,
            &attrs,
            &self.settings.audit_headers,
            started.elapsed(),
        );
        Ok(response)
    }

    /// Decides a request at `now`, without answering or auditing it.
    pub fn decide(&self, attrs: &Attributes<'_>, now: SystemTime) -> Decision {
        let policy = self.policy.load_full();
        let bundles = self.bundles.load();
        let xfcc = attrs.header("x-forwarded-client-cert");
        let svid = match self
            .x509
            .verify(attrs.source_certificate, xfcc, &bundles, now)
        {
            Ok(svid) => svid,
            Err(e) => {
                return Decision {
                    allowed: false,
                    reason: e.reason,
                    rule: None,
                    detail: Some(e.detail),
                    svid: None,
                    errors: Vec::new(),
                    policy,
                };
            }
        };
        let verdict = policy.evaluate(Input {
            source: Some(&svid),
            attributes: attrs,
            workload: &self.workload,
            now,
        });
        Decision {
            allowed: verdict.allowed,
            reason: verdict.reason,
            rule: verdict.rule,
            detail: None,
            svid: Some(svid),
            errors: verdict.errors,
            policy,
        }
    }
}
