//! Test support shared by the unit tests and the integration tests: the
//! files live in `tests/support/` and are included here once.
#![allow(
    dead_code,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

#[path = "../tests/support/check.rs"]
pub mod check;
#[path = "../tests/support/jwt.rs"]
pub mod jwt;
#[path = "../tests/support/pki.rs"]
pub mod pki;
