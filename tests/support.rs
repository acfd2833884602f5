//! Shared parts of the integration tests: a test PKI, the real celador
//! binary, a real Envoy, an upstream that records what reaches it, and an
//! mTLS client.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

pub mod celador;
pub mod check;
pub mod envoy;
pub mod grpc;
pub mod https;
pub mod jwt;
pub mod kubelet;
pub mod load;
pub mod pki;
pub mod redis;
pub mod sds;
pub mod upstream;
pub mod workload_api;

/// Polls `f` every 20 ms until it returns `Some`, for at most `timeout`.
pub fn wait_for<T>(timeout: std::time::Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(value) = f() {
            return Some(value);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Installs the pip requirement `spec` into `dest` (under `target/`), once:
/// an existing `dest` is reused. Fails the test loudly when pip cannot, since
/// a test that needs a tool installs it rather than skipping.
pub fn pip_install(spec: &str, dest: &std::path::Path, no_deps: bool) {
    if dest.is_dir() {
        return;
    }
    // Install beside `dest` and rename, so a concurrent test process never
    // sees a half-installed directory.
    let staging = dest.with_extension(format!("partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let mut pip = std::process::Command::new("python3");
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]);
    if no_deps {
        pip.arg("--no-deps");
    }
    let out = pip
        .arg("--target")
        .arg(&staging)
        .arg(spec)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 -m pip to install {spec}: {e}"));
    assert!(
        out.status.success(),
        "installing {spec} with pip failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Another test process may have finished first; either copy will do.
    if std::fs::rename(&staging, dest).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
}

/// Decodes standard base64 (as Kubernetes writes Secret data and caBundle).
pub fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_else(|e| panic!("not base64: {e}"))
}
