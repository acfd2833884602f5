//! Stable reason codes: why a request was allowed or denied.
//!
//! Data flow: every stage that can end a check (identity verification, rule
//! evaluation) ends it with one of these. They appear in the denied response
//! (`x-celador-reason` and the JSON body), in the audit record, and later as
//! metric labels, so they never change meaning and never carry free text:
//! the human-readable detail travels beside them.

use std::fmt;

/// Why a check ended the way it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// At least one allow rule matched and no deny rule did.
    Allowed,
    /// No allow rule matched, but a time-bound grant in force for the
    /// caller did, and no deny rule matched.
    Granted,
    /// The caller's credential is on the revocation list: denied (403),
    /// whatever the rules, grants or cached decisions say.
    Revoked,
    /// A deny rule matched.
    DeniedByRule,
    /// A deny rule failed to evaluate, and so counts as matching (fail closed).
    RuleError,
    /// No allow rule matched.
    NoAllowRule,
    /// The path is one that servers resolve differently from its canonical
    /// form (a dot segment, an encoded slash, a `;` parameter, ...): denied
    /// (400) before any rule, unless `request.paths` says otherwise.
    InvalidPath,
    /// Envoy sent no client certificate (`source.certificate` is empty).
    SvidMissing,
    /// The certificate could not be decoded (URL encoding, PEM or DER).
    SvidMalformed,
    /// The certificate does not have exactly one URI SAN.
    SvidUriSan,
    /// The URI SAN is not a valid SPIFFE ID.
    SvidInvalidId,
    /// The leaf is a CA certificate (`cA=true`).
    SvidCa,
    /// The leaf's key usage is missing, lacks digitalSignature, or allows
    /// certificate or CRL signing.
    SvidKeyUsage,
    /// The leaf, or a certificate of its chain, has expired.
    SvidExpired,
    /// The leaf, or a certificate of its chain, is not valid yet.
    SvidNotYetValid,
    /// The chain does not lead to the bundle of the ID's trust domain.
    SvidUntrusted,
    /// The ID's trust domain is not configured.
    TrustDomainUnknown,
    /// A JWT-SVID is required and none was sent.
    JwtMissing,
    /// The token is not a compact JWS with the JWT-SVID header and claims.
    JwtMalformed,
    /// The token's `alg` is not one of the JWT-SVID profile's (or does not
    /// fit its key).
    JwtAlgorithm,
    /// The token's `kid` is not in its trust domain's JWT bundle.
    JwtUnknownKey,
    /// The token's signature does not verify.
    JwtSignature,
    /// The token has expired (beyond the clock-skew leeway).
    JwtExpired,
    /// The token is not valid yet (beyond the clock-skew leeway).
    JwtNotYetValid,
    /// The token's audience has none of the configured audiences.
    JwtAudience,
    /// The token's `sub` is not a valid SPIFFE ID.
    JwtInvalidId,
    /// Either credential would do, and neither was sent.
    IdentityMissing,
    /// The ID's trust domain is configured, but its bundle has not arrived
    /// yet (or was redacted): nothing can be verified, so the request is
    /// denied (503).
    BundleUnavailable,
    /// The route's `celador.identity` context extension is invalid, or asks
    /// for a JWT-SVID that celador's config cannot read: denied (500).
    InvalidRoute,
    /// celador failed while deciding (a bug): denied (500), never allowed.
    InternalError,
    /// The check waited in celador (for a slot, for its bytes, for its
    /// message) past its share of the deadline Envoy sent: denied at once
    /// (503), before Envoy's own timeout could let a fail-open filter allow
    /// it.
    Overloaded,
    /// The message on the Check method cannot be read: not protobuf, a
    /// string that is not UTF-8, larger than the limit, compressed, or
    /// missing: denied (400). A `CheckRequest` that decodes but is not an
    /// HTTP check (no attributes, no HTTP request) is no decision but an
    /// error, answered with a gRPC error status.
    InvalidRequest,
}

impl Reason {
    /// The stable snake_case code.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Allowed => "allowed",
            Reason::Granted => "granted",
            Reason::Revoked => "revoked",
            Reason::DeniedByRule => "denied_by_rule",
            Reason::RuleError => "rule_error",
            Reason::NoAllowRule => "no_allow_rule",
            Reason::InvalidPath => "invalid_path",
            Reason::SvidMissing => "svid_missing",
            Reason::SvidMalformed => "svid_malformed",
            Reason::SvidUriSan => "svid_uri_san",
            Reason::SvidInvalidId => "svid_invalid_id",
            Reason::SvidCa => "svid_ca",
            Reason::SvidKeyUsage => "svid_key_usage",
            Reason::SvidExpired => "svid_expired",
            Reason::SvidNotYetValid => "svid_not_yet_valid",
            Reason::SvidUntrusted => "svid_untrusted",
            Reason::TrustDomainUnknown => "trust_domain_unknown",
            Reason::JwtMissing => "jwt_missing",
            Reason::JwtMalformed => "jwt_malformed",
            Reason::JwtAlgorithm => "jwt_algorithm",
            Reason::JwtUnknownKey => "jwt_unknown_key",
            Reason::JwtSignature => "jwt_signature",
            Reason::JwtExpired => "jwt_expired",
            Reason::JwtNotYetValid => "jwt_not_yet_valid",
            Reason::JwtAudience => "jwt_audience",
            Reason::JwtInvalidId => "jwt_invalid_id",
            Reason::IdentityMissing => "identity_missing",
            Reason::BundleUnavailable => "bundle_unavailable",
            Reason::InvalidRoute => "invalid_route",
            Reason::InternalError => "internal_error",
            Reason::Overloaded => "overloaded",
            Reason::InvalidRequest => "invalid_request",
        }
    }

    /// Whether the reason is no decision but an error: only a request that
    /// is not an HTTP check, answered with a gRPC error status. Every HTTP
    /// check gets a decision, a denial when celador cannot decide, so that
    /// Envoy's `failure_mode_allow` never turns an error into an allow.
    pub fn is_error(self) -> bool {
        self == Reason::InvalidRequest
    }

    /// Whether the reason is about the caller's identity (answered with 401)
    /// rather than about policy (403) or celador's state (5xx).
    pub fn is_identity_failure(self) -> bool {
        !matches!(
            self,
            Reason::Allowed
                | Reason::Granted
                | Reason::Revoked
                | Reason::DeniedByRule
                | Reason::RuleError
                | Reason::NoAllowRule
                | Reason::InvalidPath
                | Reason::BundleUnavailable
                | Reason::InvalidRoute
                | Reason::InternalError
                | Reason::Overloaded
                | Reason::InvalidRequest
        )
    }

    /// The HTTP status of a denial for this reason: 401 for the caller's
    /// identity, 403 for policy, 400 for an ambiguous path or a message
    /// that cannot be read, 503 while a bundle is unavailable or when
    /// overloaded, 500 for a route celador cannot serve or a failure of its
    /// own.
    pub fn http_status(self) -> u16 {
        match self {
            Reason::Allowed | Reason::Granted => 200,
            Reason::BundleUnavailable | Reason::Overloaded => 503,
            Reason::InvalidRoute | Reason::InternalError => 500,
            Reason::InvalidRequest | Reason::InvalidPath => 400,
            reason if reason.is_identity_failure() => 401,
            _ => 403,
        }
    }

    /// Every reason, for documentation and tests.
    pub const ALL: &'static [Reason] = &[
        Reason::Allowed,
        Reason::Granted,
        Reason::Revoked,
        Reason::DeniedByRule,
        Reason::RuleError,
        Reason::NoAllowRule,
        Reason::InvalidPath,
        Reason::SvidMissing,
        Reason::SvidMalformed,
        Reason::SvidUriSan,
        Reason::SvidInvalidId,
        Reason::SvidCa,
        Reason::SvidKeyUsage,
        Reason::SvidExpired,
        Reason::SvidNotYetValid,
        Reason::SvidUntrusted,
        Reason::TrustDomainUnknown,
        Reason::JwtMissing,
        Reason::JwtMalformed,
        Reason::JwtAlgorithm,
        Reason::JwtUnknownKey,
        Reason::JwtSignature,
        Reason::JwtExpired,
        Reason::JwtNotYetValid,
        Reason::JwtAudience,
        Reason::JwtInvalidId,
        Reason::IdentityMissing,
        Reason::BundleUnavailable,
        Reason::InvalidRoute,
        Reason::InternalError,
        Reason::Overloaded,
        Reason::InvalidRequest,
    ];
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_serialize_as_themselves() {
        let mut seen = std::collections::HashSet::new();
        for reason in Reason::ALL {
            assert!(seen.insert(reason.as_str()), "duplicate {reason}");
            assert_eq!(
                serde_json::to_string(reason).unwrap(),
                format!("\"{}\"", reason.as_str())
            );
        }
    }

    #[test]
    fn every_http_check_is_answered_and_only_identity_failures_are_401() {
        for reason in Reason::ALL {
            let status = reason.http_status();
            assert_eq!(
                reason.is_error(),
                *reason == Reason::InvalidRequest,
                "{reason}"
            );
            assert_eq!(status == 401, reason.is_identity_failure(), "{reason}");
        }
        assert_eq!(Reason::BundleUnavailable.http_status(), 503);
        assert_eq!(Reason::Overloaded.http_status(), 503);
        assert_eq!(Reason::InvalidRequest.http_status(), 400);
        assert_eq!(Reason::InternalError.http_status(), 500);
        assert_eq!(Reason::InvalidRoute.http_status(), 500);
        assert_eq!(Reason::NoAllowRule.http_status(), 403);
        assert_eq!(Reason::JwtExpired.http_status(), 401);
        assert_eq!(Reason::Revoked.http_status(), 403);
        assert_eq!(Reason::Granted.http_status(), 200);
        assert_eq!(Reason::InvalidPath.http_status(), 400);
    }
}
