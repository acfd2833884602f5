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
    /// The operator's revocation is in force, and this writer's, which was,
    /// is held behind it.
    Holds(String),
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
    /// The writer whose entry was in force and is now held behind the
    /// operator's, if one was.
    pub displaced: Option<String>,
}

/// A stored revocation the sidecars load.
fn loads(key: &str, field: &str, raw: &str) -> Option<StoredRevocation> {
    check_revocation(key, field, raw).ok()
}

/// Whether `a` stays in force longer than `b`: `a` lasts and `b` lapses,
/// or both lapse and `a` later (compared in time).
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
/// No report is dropped: the one that stays in force longest of the entry
/// in force, the operator's and those held is in force, and every other is
/// held behind it, so none lapses with another's entry (a tie keeps the
/// entry in force, then the operator's). The operator's own earlier entry,
/// in force or held, is replaced; an entry in force the sidecars refuse is
/// written over (it revokes nothing); a held one they refuse stays held.
pub(super) fn plan_revoke(
    (key, field): (&str, &str),
    (new, json): (&StoredRevocation, &str),
    current: Option<&str>,
    mut held: Held,
) -> Plan {
    let me = &new.provenance.by;
    held.remove(me);
    // The candidates, in the order a tie prefers them.
    let mut candidates: Vec<(String, String, StoredRevocation)> = Vec::new();
    if let Some((raw, entry)) = current.and_then(|raw| Some((raw, loads(key, field, raw)?)))
        && entry.provenance.by != *me
    {
        // The entry in force is its writer's latest: an older report of
        // theirs held (left by a write without `WATCH`) gives way to it.
        held.remove(&entry.provenance.by);
        candidates.push((entry.provenance.by.clone(), raw.to_owned(), entry));
    }
    candidates.push((me.clone(), json.to_owned(), new.clone()));
    for (by, raw) in &held {
        if let Some(entry) = loads(key, field, raw) {
            candidates.push((by.clone(), raw.clone(), entry));
        }
    }
    let mut winner = 0;
    for (i, (_, _, entry)) in candidates.iter().enumerate().skip(1) {
        if candidates
            .get(winner)
            .is_some_and(|(_, _, best)| outlasts(entry, best))
        {
            winner = i;
        }
    }
    let mut plan = Plan {
        entry: json.to_owned(),
        held: Held::new(),
        behind: None,
        displaced: None,
    };
    let in_force = current
        .and_then(|raw| loads(key, field, raw))
        .map(|e| e.provenance.by);
    let mine = candidates.iter().position(|(by, _, _)| by == me);
    for (i, (by, raw, _)) in candidates.into_iter().enumerate() {
        held.remove(&by);
        if i == winner {
            plan.behind = (by != *me).then_some(by);
            plan.entry = raw;
        } else {
            if in_force.as_ref() == Some(&by) && mine == Some(winner) {
                plan.displaced = Some(by.clone());
            }
            plan.held.insert(by, raw);
        }
    }
    // Held reports the sidecars refuse stay as they were.
    plan.held.extend(held);
    plan
}

/// The held reports as stored (a JSON object of each writer's entry),
/// every member whose value is a string; none when the value is not an
/// object (bad data: nothing readable is lost by writing over it).
pub(super) fn parse(raw: Option<&str>) -> Held {
    let Some(Ok(serde_json::Value::Object(members))) = raw.map(serde_json::from_str) else {
        return Held::new();
    };
    members
        .into_iter()
        .filter_map(|(by, value)| match value {
            serde_json::Value::String(json) => Some((by, json)),
            _ => None,
        })
        .collect()
}

/// Whether `error` is the store answering that it will not run a command
/// for this user (an ACL: `NOPERM`; a command renamed away) or on this key
/// (held reports that are not a hash: `WRONGTYPE`): the change is then made
/// as before held reports existed. Anything else (unreachable, loading,
/// busy) is an error: falling back then would write over a report.
pub(super) fn refused(error: &redis::RedisError) -> bool {
    let said = error.to_string();
    ["NOPERM", "WRONGTYPE", "unknown command"]
        .iter()
        .any(|code| error.code() == Some(code) || said.contains(code))
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
        let bob = entry("bob", false, None);
        let two = entry("bob", false, Some("2999-01-01T02:00:00Z"));
        let lapsed_tool = entry(
            "https://edr.example.com/",
            true,
            Some("2020-01-01T00:00:00Z"),
        );
        // Over a tool's lasting one: held behind it, whether it lasts or not.
        for new in [&lasting, &hour] {
            let p = plan(new, Some(&tool.1), &[]);
            assert_eq!(p.entry, tool.1);
            assert_eq!(p.behind.as_deref(), Some("https://idp.example.com/"));
            assert_eq!(p.held.get("alice"), Some(&new.1));
        }
        // Over another operator's lasting one, an expiring one is held and
        // the other kept; a lasting one ties and is held too.
        for new in [&hour, &lasting] {
            let p = plan(new, Some(&bob.1), &[]);
            assert_eq!(
                (p.entry.as_str(), p.behind.as_deref()),
                (bob.1.as_str(), Some("bob"))
            );
            assert_eq!(p.held.get("alice"), Some(&new.1));
        }
        // Over one that lapses sooner, or has lapsed, a later one is in
        // force and the other held, tool or not.
        let p = plan(&two, Some(&hour.1), &[]);
        assert_eq!((p.entry.as_str(), p.behind), (two.1.as_str(), None));
        assert_eq!(p.displaced.as_deref(), Some("alice"));
        assert_eq!(p.held.get("alice"), Some(&hour.1));
        let p = plan(&lasting, Some(&lapsed_tool.1), &[]);
        assert_eq!((p.entry.as_str(), p.behind), (lasting.1.as_str(), None));
        assert_eq!(p.displaced.as_deref(), Some("https://edr.example.com/"));
        assert_eq!(p.held.get("https://edr.example.com/"), Some(&lapsed_tool.1));
        // A report held behind an operator's lasting entry outlasts an
        // expiring one: it is in force, the rest held.
        let p = plan(
            &hour,
            Some(&bob.1),
            &[("https://idp.example.com/", &tool.1)],
        );
        assert_eq!(p.entry, bob.1);
        assert_eq!(p.held.len(), 2, "{:?}", p.held);
        let p = plan(&hour, None, &[("bob", &two.1)]);
        assert_eq!(
            (p.entry.as_str(), p.behind.as_deref()),
            (two.1.as_str(), Some("bob"))
        );
        assert_eq!(p.held.get("alice"), Some(&hour.1));
        // An entry the sidecars refuse is no one's: written over.
        let refused = r#"{"by":"https://edr.example.com/","set":{}}"#;
        let p = plan(&lasting, Some(refused), &[]);
        assert_eq!((p.entry.as_str(), p.behind), (lasting.1.as_str(), None));
        assert!(p.held.is_empty());
        // A held one they refuse stays held, untouched.
        let p = plan(&lasting, None, &[("x", refused)]);
        assert_eq!(p.held.get("x").map(String::as_str), Some(refused));
        // The operator's own earlier report, in force or held, is replaced.
        let p = plan(&lasting, Some(&hour.1), &[]);
        assert!(p.held.is_empty(), "{:?}", p.held);
        let p = plan(&lasting, None, &[("alice", &hour.1)]);
        assert!(p.held.is_empty(), "{:?}", p.held);
        // The writer in force with an older report of its own held: the
        // one in force is its latest, and is the one kept.
        let bob_half = entry("bob", false, Some("2999-01-01T00:30:00Z"));
        let bob_hour = entry("bob", false, Some("2999-01-01T01:00:00Z"));
        let p = plan(&lasting, Some(&bob_hour.1), &[("bob", &bob_half.1)]);
        assert_eq!(p.held.get("bob"), Some(&bob_hour.1));
    }

    /// An ACL's refusal, a command renamed away or held reports of another
    /// type fall back to the old write; a store loading or busy does not
    /// (falling back then would write over a report).
    #[test]
    fn only_a_refusal_falls_back() {
        let server = |code: &str, detail: &str| {
            redis::make_extension_error(code.into(), Some(detail.into()))
        };
        for refusal in [
            server(
                "NOPERM",
                "this user has no permissions to run the 'watch' command",
            ),
            server(
                "WRONGTYPE",
                "Operation against a key holding the wrong kind of value",
            ),
            server("ERR", "unknown command 'WATCH', with args beginning with:"),
        ] {
            assert!(refused(&refusal), "{refusal}");
        }
        for failure in [
            server("LOADING", "Redis is loading the dataset in memory"),
            server("BUSY", "Redis is busy running a script"),
            redis::RedisError::from(std::io::Error::other("connection reset")),
        ] {
            assert!(!refused(&failure), "{failure}");
        }
    }

    #[test]
    fn held_reports_that_are_not_a_map_of_strings_are_none() {
        assert!(parse(Some("oops")).is_empty());
        assert!(parse(Some(r#"{"a": 1}"#)).is_empty());
        assert_eq!(parse(Some(r#"{"a": 1, "b": "x"}"#)).len(), 1);
        assert_eq!(parse(Some(r#"{"a": "x"}"#)).len(), 1);
        assert!(parse(None).is_empty());
    }
}
