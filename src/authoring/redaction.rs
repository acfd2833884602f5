//! What the tools may print of a request: every credential replaced by
//! `<redacted>`.
//!
//! Data flow: `eval` and `test` evaluate rules on the real request, then
//! show attribute values from [`redacted`]: `authorization`, `cookie`,
//! `proxy-authorization`, `set-cookie`, any bearer token, and the headers
//! the user names (`--redact-header`) never reach their output.

use crate::engine::attributes::Attributes;

/// `attrs` with every credential header's value, and those of the headers
/// in `extra`, replaced by `<redacted>`.
pub fn redacted<'a>(attrs: &Attributes<'a>, extra: &[String]) -> Attributes<'a> {
    attrs.redacted(extra)
}
