//! Test support of the engine's unit tests: the test PKI and test tokens,
//! shared with the celador crate's tests (`tests/support/`).
#![allow(
    dead_code,
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

#[path = "../../../tests/support/jwt.rs"]
pub mod jwt;
#[path = "../../../tests/support/pki.rs"]
pub mod pki;
