//! What the tools may print of a request: every credential replaced by
//! `<redacted>`.
//!
//! Data flow: `eval` and `test` evaluate rules on the real request, then
//! show attribute values from [`redacted`]: `authorization`, `cookie`,
//! `proxy-authorization`, `set-cookie`, any bearer token, credential-like
//! query parameters and the headers the user names (`--redact-header`)
//! never reach their output.

use crate::engine::attributes::{Attributes, Shown};

/// `attrs` with every credential header's value, those of the headers in
/// `extra`, and credential-like query parameters replaced by `<redacted>`
/// (`.attributes()` gives them).
pub fn redacted<'a>(attrs: &Attributes<'a>, extra: &[String]) -> Shown<'a> {
    attrs.redacted(extra)
}
