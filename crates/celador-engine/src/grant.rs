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

/// Where a piece of runtime governance (a grant, a revocation) came from:
/// reported in audit records beside it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A watched file (`grants:`, `revocations:`).
    #[default]
    File,
    /// The fleet's governance store (`governance.store`).
    Store,
}

impl Origin {
    /// `file` or `store`.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::File => "file",
            Origin::Store => "store",
        }
    }
}

/// One grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Its name, reported in audit records.
    pub name: Arc<str>,
    /// The SPIFFE IDs it is for (of an X.509-SVID or a JWT-SVID); one
    /// ending in `/` is a prefix: every ID under that path.
    pub identities: Vec<String>,
    /// When it opens; open from the start if absent.
    pub not_before: Option<SystemTime>,
    /// When it closes.
    pub expires: SystemTime,
    /// Why it was given.
    pub reason: Arc<str>,
    /// Its condition as written; `true` when absent.
    pub when: String,
    /// Where it came from.
    pub origin: Origin,
}

impl Grant {
    /// Whether the grant is open at `now`: from `not_before` (inclusive) to
    /// `expires` (exclusive).
    pub(crate) fn open_at(&self, now: SystemTime) -> bool {
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
            .any(|id| self.identities.iter().any(|g| names(g, id)))
    }
}

/// Whether the grant's identity `granted` names `id`: equal, or a prefix
/// ending in `/` that `id` continues.
fn names(granted: &str, id: &str) -> bool {
    if granted.ends_with('/') {
        id.starts_with(granted)
    } else {
        granted == id
    }
}
