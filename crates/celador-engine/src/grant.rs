//! One time-bound grant: who it is for, when it is open, and why it was
//! given.
//!
//! Data flow: [`super::grants`] parses a grants file into these; the engine
//! finds the one in force for a request, rules read it as `grant`, and the
//! decision and its audit record carry it. It depends only on the identity
//! types, so that decisions and rules can hold it.

use std::sync::Arc;
use std::time::SystemTime;

use super::identity::Identity;

/// One grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Its name, reported in audit records.
    pub name: Arc<str>,
    /// The SPIFFE IDs it is for (of an X.509-SVID or a JWT-SVID).
    pub identities: Vec<String>,
    /// When it opens; open from the start if absent.
    pub not_before: Option<SystemTime>,
    /// When it closes.
    pub expires: SystemTime,
    /// Why it was given.
    pub reason: Arc<str>,
    /// Its condition as written; `true` when absent.
    pub when: String,
}

impl Grant {
    /// Whether the grant is open at `now`: from `not_before` (inclusive) to
    /// `expires` (exclusive).
    pub fn open_at(&self, now: SystemTime) -> bool {
        self.not_before.is_none_or(|t| t <= now) && now < self.expires
    }

    /// Whether the grant is for a credential of `identity`.
    pub fn covers(&self, identity: &Identity) -> bool {
        let ids = [
            identity.source.as_ref().map(|s| s.id.as_str()),
            identity.token.as_ref().map(|t| t.id.as_str()),
        ];
        ids.into_iter()
            .flatten()
            .any(|id| self.identities.iter().any(|g| g == id))
    }
}
