//! Rules files: loaded (parsed, type-checked, linted), then evaluated.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(policy) = celador::engine::policy::Policy::parse(&text, Path::new("fuzz.yaml")) {
        let request = celador_fuzz::engine_request(&celador_fuzz::pki().leaf, "GET", "/a?b=c");
        let attrs = request.attributes();
        let workload = celador::engine::workload::Workload::default();
        let _ = policy.evaluate(celador::engine::policy::Input {
            source: None,
            token: None,
            attributes: &attrs,
            workload: &workload,
            now: std::time::SystemTime::now(),
            grant: None,
            signals: &Default::default(),
        });
    }
});
