//! An operator's revocation and withdrawal beside the revocations security
//! tools' SETs hold behind an entry (`{prefix}:ssf:held`, kept by the
//! signals receiver's script): what `celador revoke` writes, decided from
//! the entry and the held reports as they are, under `WATCH`, so that no
//! SET slips between reading them and writing.
//!
//! Data flow: `celador revoke` / `unrevoke` ([`super::Writer`]) -> `WATCH`,
//! `HGET` of the entry and of the held reports -> [`plan_revoke`] -> one
//! `MULTI` (the entry, the held reports, the feed record) -> each sidecar's
//! replica. `WATCH` and `HGET` rather than a script: an operator's
//! credential then needs no `EVAL` (which Redis cannot confine to
//! celador's scripts, and which some deployments rename away).

use std::collections::BTreeMap;

use super::super::entries::{StoredRevocation, check_revocation};

/// The reports held behind one entry, by writer: each writer's entry as
/// JSON.
pub(super) type Held = BTreeMap<String, String>;

/// What became of the reports held behind the entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldOutcome {
    /// Nothing to say: the entry was written, or nothing was held.
    None,
    /// The operator's revocation is held behind this writer's revocation
    /// of the entry, which revokes it already (a security tool's, or one
    /// that lapses later).
    Behind(String),
    /// This many revocations held behind the entry were withdrawn with it.
    Cleared(usize),
    /// The held reports were not considered (the user may not read them:
    /// an ACL older than docs/fleet.md's; or they are not a hash): the
    /// change was made as before they existed.
    NotTouched(String),
}

/// What an operator's revocation writes.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Plan {
    /// The entry in force afterwards, as JSON.
    pub entry: String,
    /// The held reports afterwards.
    pub held: Held,
    /// The writer whose entry the operator's is held behind, if it is.
    pub behind: Option<String>,
}

/// A stored revocation the sidecars load, with its writer and expiry.
fn loaded<'a>(key: &str, field: &str, raw: &'a str) -> Option<(StoredRevocation, &'a str)> {
    check_revocation(key, field, raw).ok().map(|e| (e, raw))
}

/// Which of two revocations stays in force longer: one without an expiry,
/// else the one lapsing last (RFC 3339 times as the CLI writes them,
/// compared in time).
fn outlasts(a: &StoredRevocation, b: &StoredRevocation) -> bool {
    match (a.lapses(), b.lapses()) {
        (None, Some(_)) => true,
        (Some(x), Some(y)) => x > y,
        _ => false,
    }
}

/// Decides an operator's revocation `new` (its JSON `json`) of `field`,
/// with `current` the entry in force and `held` the reports behind it.
///
/// - Over a security tool's revocation the sidecars load (one with a
///   `set`, by another writer), the operator's is held behind it: written
///   over, the tool's report would be gone, and with it its revocation
///   once an expiring operator entry lapsed.
/// - Otherwise the revocation lasting longest of the operator's and those
///   held is in force, the rest held: an expiring operator entry never
///   stands in front of a report that outlasts it, which would lapse with
///   it. The operator's wins a tie; an entry in force that is not a tool's
///   (another operator's, or one the sidecars refuse) is replaced.
pub(super) fn plan_revoke(
    (key, field): (&str, &str),
    (new, json): (&StoredRevocation, &str),
    current: Option<&str>,
    mut held: Held,
) -> Plan {
    let me = &new.provenance.by;
    held.remove(me);
    let tool = current
        .and_then(|raw| loaded(key, field, raw))
        .filter(|(e, _)| e.set.is_some() && e.provenance.by != *me);
    if let Some((tool, raw)) = tool {
        held.insert(me.clone(), json.to_owned());
        return Plan {
            entry: raw.to_owned(),
            held,
            behind: Some(tool.provenance.by),
        };
    }
    let longest = held
        .iter()
        .filter_map(|(by, raw)| Some((by, loaded(key, field, raw)?.0)))
        .filter(|(_, e)| outlasts(e, new))
        .reduce(|best, next| {
            if outlasts(&next.1, &best.1) {
                next
            } else {
                best
            }
        })
        .map(|(by, _)| by.clone());
    match longest.and_then(|by| Some((held.remove(&by)?, by))) {
        Some((entry, by)) => {
            held.insert(me.clone(), json.to_owned());
            Plan {
                entry,
                held,
                behind: Some(by),
            }
        }
        None => Plan {
            entry: json.to_owned(),
            held,
            behind: None,
        },
    }
}

/// The held reports as stored (a JSON object of each writer's entry);
/// none when the value is not one (bad data: nothing readable is lost by
/// writing over it).
pub(super) fn parse(raw: Option<&str>) -> Held {
    raw.and_then(|raw| serde_json::from_str::<Held>(raw).ok())
        .unwrap_or_default()
}

/// Whether `error` is the store answering that it will not run a command
/// (an ACL, a command renamed away, a key of another type), rather than
/// a failure to reach it: the change is then made as before held reports
/// existed.
pub(super) fn refused(error: &redis::RedisError) -> bool {
    !(error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_unrecoverable_error())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::fleet::entries::{Provenance, StoredSet};

    const KEY: &str = "{celador}:revocations";
    const ID: &str = "spiffe://example.org/ns/a/sa/b";

    fn entry(by: &str, set: bool, expires: Option<&str>) -> (StoredRevocation, String) {
        let e = StoredRevocation {
            spiffe_id: Some(ID.into()),
            reason: format!("by {by}"),
            expires: expires.map(str::to_owned),
            set: set.then(|| StoredSet {
                source: by.into(),
                event: "https://schemas.openid.net/secevent/risc/event-type/credential-compromise"
                    .into(),
                jti: "j".into(),
            }),
            provenance: Provenance {
                by: by.into(),
                from: "h".into(),
                at: "2026-01-01T00:00:00Z".into(),
            },
            ..StoredRevocation::default()
        };
        let json = serde_json::to_string(&e).unwrap();
        (e, json)
    }

    fn plan(
        new: &(StoredRevocation, String),
        current: Option<&str>,
        held: &[(&str, &str)],
    ) -> Plan {
        let held = held
            .iter()
            .map(|(by, raw)| (by.to_string(), raw.to_string()))
            .collect();
        plan_revoke((KEY, &new.0.field()), (&new.0, &new.1), current, held)
    }

    /// Every way an operator's revocation meets what is there: none of the
    /// reports is dropped, and what is in force lasts longest.
    #[test]
    fn an_operators_revocation_drops_no_report_and_the_longest_lasting_is_in_force() {
        let tool = entry("https://idp.example.com/", true, None);
        let lasting = entry("alice", false, None);
        let hour = entry("alice", false, Some("2999-01-01T01:00:00Z"));
        let two = entry("bob", false, Some("2999-01-01T02:00:00Z"));
        // Over a tool's: held behind it, whether it lasts or not.
        for new in [&lasting, &hour] {
            let p = plan(new, Some(&tool.1), &[]);
            assert_eq!(p.entry, tool.1);
            assert_eq!(p.behind.as_deref(), Some("https://idp.example.com/"));
            assert_eq!(p.held.get("alice"), Some(&new.1));
        }
        // Over another operator's: replaced; a tool's report held behind it
        // takes its place in front of an expiring one.
        let p = plan(
            &hour,
            Some(&lasting.1),
            &[("https://idp.example.com/", &tool.1)],
        );
        assert_eq!(p.entry, tool.1);
        assert_eq!(p.held.get("alice"), Some(&hour.1));
        assert!(!p.held.contains_key("https://idp.example.com/"));
        // An expiring one lapsing later wins over one lapsing sooner.
        let p = plan(&hour, None, &[("bob", &two.1)]);
        assert_eq!(
            (p.entry.as_str(), p.behind.as_deref()),
            (two.1.as_str(), Some("bob"))
        );
        let p = plan(&two, None, &[("alice", &hour.1)]);
        assert_eq!((p.entry.as_str(), p.behind), (two.1.as_str(), None));
        assert_eq!(p.held.get("alice"), Some(&hour.1));
        // A lasting operator's revocation is in force, the rest held.
        let p = plan(&lasting, None, &[("bob", &two.1)]);
        assert_eq!((p.entry.as_str(), p.held.len()), (lasting.1.as_str(), 1));
        // An entry the sidecars refuse is no tool's: written over.
        let refused = r#"{"by":"https://edr.example.com/","set":{}}"#;
        let p = plan(&lasting, Some(refused), &[]);
        assert_eq!((p.entry.as_str(), p.behind), (lasting.1.as_str(), None));
        // The operator's own earlier report is replaced, not kept twice.
        let p = plan(&lasting, None, &[("alice", &hour.1)]);
        assert!(p.held.is_empty(), "{:?}", p.held);
    }

    #[test]
    fn held_reports_that_are_not_a_map_of_strings_are_none() {
        assert!(parse(Some("oops")).is_empty());
        assert!(parse(Some(r#"{"a": 1}"#)).is_empty());
        assert_eq!(parse(Some(r#"{"a": "x"}"#)).len(), 1);
        assert!(parse(None).is_empty());
    }
}
