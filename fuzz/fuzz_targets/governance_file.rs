//! Grants and revocations files: parsed (grants' conditions compiled like
//! rules; revocations' issuers read as distinguished names), then a grant
//! looked up and a revocation checked for an identity with and without a
//! certificate.
#![no_main]
use std::path::Path;
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;

use celador::engine::grants::{DEFAULT_MAX_DURATION, Grants};
use celador::engine::identity::dn::DistinguishedName;
use celador::engine::identity::{CertificateFacts, Identity, SpiffeId, X509Svid};
use celador::engine::revocations::Revocations;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000);
    if let Ok(r) = Revocations::parse(&text, Path::new("revocations.yaml")) {
        let _ = r.check(&Identity::default());
        let _ = r.check(issued());
    }
    if let Ok(grants) = Grants::parse(&text, Path::new("grants.yaml"), DEFAULT_MAX_DURATION, now) {
        let request = celador_fuzz::engine_request(&celador_fuzz::pki().leaf, "POST", "/a?b=c");
        let attrs = request.attributes();
        let workload = celador::engine::workload::Workload::default();
        let input = celador::engine::policy::Input {
            source: None,
            token: None,
            attributes: &attrs,
            workload: &workload,
            now,
            grant: None,
            signals: &Default::default(),
        };
        let _ = grants.find(&Identity::default(), input);
        let _ = grants.active(now);
        let _ = grants.next_change(&Identity::default(), now);
    }
});

/// A peer whose leaf has serial `0a1b` and issuer `CN=x,O=e`.
fn issued() -> &'static Identity {
    static IDENTITY: std::sync::OnceLock<Identity> = std::sync::OnceLock::new();
    IDENTITY.get_or_init(|| Identity {
        source: Some(std::sync::Arc::new(X509Svid {
            id: SpiffeId::parse("spiffe://e.org/ns/a").unwrap(),
            not_before: SystemTime::UNIX_EPOCH,
            not_after: SystemTime::UNIX_EPOCH,
            chain_not_after: SystemTime::UNIX_EPOCH,
            certificate: CertificateFacts {
                serial: "a1b".into(),
                issuer_dn: DistinguishedName::parse("CN=x,O=e").unwrap(),
                ..CertificateFacts::default()
            },
        })),
        ..Identity::default()
    })
}
