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
pub mod https;
pub mod jwt;
pub mod pki;
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
