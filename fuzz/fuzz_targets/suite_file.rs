//! `celador test` suites: parsed, and each case decided and judged (cases that name a
//! certificate file are skipped: the fuzzer must not read the disk).
#![no_main]
use std::path::Path;
use std::sync::OnceLock;

use celador::authoring::suite::{self, SuiteFile};
use celador::engine::policy::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    let policy =
        POLICY.get_or_init(|| Policy::parse(celador_fuzz::RULES, Path::new("r.yaml")).unwrap());
    let text = String::from_utf8_lossy(data);
    let Ok(file) = celador::engine::yaml::from_str::<SuiteFile>(&text, Path::new("fuzz_test.yaml"))
    else {
        return;
    };
    for case in file.cases {
        let case = case.with_defaults(&file.defaults);
        if case.certificate.is_some() {
            continue;
        }
        let _ = suite::run_case(
            policy,
            &celador::authoring::governance::Governance::default(),
            &case,
            Path::new("/nonexistent"),
            &celador::engine::redaction::Redaction::default(),
        );
    }
});
