//! celador's config file.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = celador::app::config::Config::parse(&text, Path::new("/nonexistent/celador.yaml"));
});
