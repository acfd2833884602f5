//! Grants and revocations files: parsed (grants' conditions compiled like
//! rules), then a grant looked up and a revocation checked for an identity.
#![no_main]
use std::path::Path;
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;

use celador::engine::grants::{DEFAULT_MAX_DURATION, Grants};
use celador::engine::identity::Identity;
use celador::engine::revocations::Revocations;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000);
    let _ = Revocations::parse(&text, Path::new("revocations.yaml"))
        .map(|r| r.check(&Identity::default()));
    if let Ok(grants) = Grants::parse(&text, Path::new("grants.yaml"), DEFAULT_MAX_DURATION, now) {
        let request = celador_fuzz::request(&celador_fuzz::pki().leaf, "POST", "/a?b=c", &[]);
        let attrs = celador::engine::Attributes::from_check_request(&request).unwrap();
        let workload = celador::engine::workload::Workload::default();
        let input = celador::engine::policy::Input {
            source: None,
            token: None,
            attributes: &attrs,
            workload: &workload,
            now,
            grant: None,
            signals: Default::default(),
        };
        let _ = grants.find(&Identity::default(), input);
        let _ = grants.active(now);
        let _ = grants.next_change(&Identity::default(), now);
    }
});
