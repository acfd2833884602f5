use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::engine::revocations::Revocations;

fn provenance(jti: &str, at: u64) -> Provenance {
    Provenance {
        transmitter: "https://idp.example.com/".into(),
        event: "https://schemas.openid.net/secevent/risc/event-type/account-disabled".into(),
        jti: jti.into(),
        at: UNIX_EPOCH + Duration::from_secs(at),
    }
}

fn revoke(id: &str, jti: &str, at: u64) -> Outcome {
    Outcome::Actions(
        provenance(jti, at),
        vec![Action::Revoke {
            entry: Revocation::SpiffeId(id.into()),
            reason: "account-disabled".into(),
        }],
    )
}

fn unrevoke(id: &str, jti: &str, at: u64) -> Outcome {
    Outcome::Actions(
        provenance(jti, at),
        vec![Action::Unrevoke {
            entry: Revocation::SpiffeId(id.into()),
        }],
    )
}

const A: &str = "spiffe://prod.acme.io/ns/a/sa/a";
const B: &str = "spiffe://prod.acme.io/ns/b/sa/b";

fn loaded(path: &Path) -> Revocations {
    let text = std::fs::read_to_string(path).unwrap();
    Revocations::parse(&text, path).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[tokio::test]
async fn the_file_is_one_celador_serve_loads_and_older_events_never_undo_newer_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revocations.yaml");
    let sink = FileSink::open(&path).unwrap();
    sink.apply(&[revoke(A, "j1", 100), revoke(B, "j2", 100)])
        .await
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("SET j1 from https://idp.example.com/"),
        "{text}"
    );
    assert_eq!(loaded(&path).len(), 2);
    // An enable from before the disable changes nothing, and says so.
    let kept = sink.apply(&[unrevoke(A, "j3", 50)]).await.unwrap();
    assert_eq!(kept, [Kept::Superseded]);
    assert_eq!(loaded(&path).len(), 2);
    // A later one removes it; a revoke older than that removal stays undone.
    let kept = sink.apply(&[unrevoke(A, "j4", 200)]).await.unwrap();
    assert_eq!(kept, [Kept::Applied]);
    assert_eq!(loaded(&path).len(), 1);
    let kept = sink.apply(&[revoke(A, "j5", 150)]).await.unwrap();
    assert_eq!(kept, [Kept::Superseded]);
    assert_eq!(loaded(&path).len(), 1);
    sink.apply(&[revoke(A, "j6", 300)]).await.unwrap();
    assert_eq!(loaded(&path).len(), 2);
    // Nothing but the file and its event times is left in the directory.
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["revocations.yaml", "revocations.yaml.times.json"]);
}

/// Whether the sink holds a tombstone (a withdrawn entry) for `id`.
fn has_tombstone(sink: &FileSink, id: &str) -> bool {
    let entries = sink.entries.lock().unwrap();
    let key = Key::SpiffeId(id.into());
    let kept = entries.by_key.get(&key).is_some_and(|e| e.reason.is_none());
    assert_eq!(kept, entries.tombstones.iter().any(|(_, k)| *k == key));
    kept
}

#[tokio::test]
async fn tombstones_are_dropped_after_max_age_as_the_store_drops_event_times() {
    const C: &str = "spiffe://prod.acme.io/ns/c/sa/c";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revocations.yaml");
    let sink = FileSink::open(&path)
        .unwrap()
        .with_order_window(Duration::from_secs(3600));
    let now = now_secs();
    // A revocation reported two hours late is applied (it fails closed),
    // and stays: a live revocation is never dropped.
    let kept = sink.apply(&[revoke(A, "j1", now - 7200)]).await.unwrap();
    assert_eq!(kept, [Kept::Applied]);
    // B revoked and withdrawn more than max_age ago; C within it.
    let kept = sink
        .apply(&[
            revoke(B, "j2", now - 5000),
            unrevoke(B, "j3", now - 4000),
            revoke(C, "j4", now - 100),
            unrevoke(C, "j5", now - 50),
        ])
        .await
        .unwrap();
    assert_eq!(kept, [Kept::Applied; 4]);
    assert!(has_tombstone(&sink, B) && has_tombstone(&sink, C));
    // The next SET drops B's tombstone, keeps C's: a revoke older than
    // C's withdrawal stays undone.
    let kept = sink.apply(&[revoke(C, "j6", now - 80)]).await.unwrap();
    assert_eq!(kept, [Kept::Superseded]);
    assert!(!has_tombstone(&sink, B) && has_tombstone(&sink, C));
    assert!(
        !sink
            .entries
            .lock()
            .unwrap()
            .by_key
            .contains_key(&Key::SpiffeId(B.into()))
    );
    let listed = file_entries(&path);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["spiffe_id"], A);
    // A withdrawal older than max_age about an entry whose order is gone
    // changes nothing (stale), as with the store...
    let kept = sink.apply(&[unrevoke(B, "j7", now - 4500)]).await.unwrap();
    assert_eq!(kept, [Kept::Stale]);
    assert!(!has_tombstone(&sink, B));
    // ...while one about an entry still ordered (A's revocation, kept with
    // its time) is compared as always.
    let kept = sink
        .apply(&[unrevoke(A, "j8", now - 7300), unrevoke(A, "j9", now - 7100)])
        .await
        .unwrap();
    assert_eq!(kept, [Kept::Superseded, Kept::Applied]);
    assert_eq!(loaded(&path).len(), 0);
}

#[test]
fn one_write_drops_every_expired_tombstone_and_no_younger_one() {
    let mut entries = Entries::default();
    let tombstone = |at: u64| Entry {
        at: UNIX_EPOCH + Duration::from_secs(at),
        reason: None,
        by: "https://idp.example.com/".into(),
        set: None,
    };
    // More than a SET withdrawing an `aliases` subject's 1000 entries
    // leaves behind: dropped in one write, however many there are.
    for i in 0..2500 {
        entries.insert(Key::JwtId(format!("t{i}")), tombstone(1000 + i));
    }
    // A tombstone replaced by a revocation leaves the order with it.
    let live = Entry {
        reason: Some("revoked".into()),
        ..tombstone(1001)
    };
    entries.insert(Key::JwtId("t1".into()), live);
    assert_eq!(entries.tombstones.len(), 2499);
    let horizon = UNIX_EPOCH + Duration::from_secs(3200);
    entries.prune(horizon);
    assert_eq!(entries.tombstones.len(), 300);
    assert_eq!(entries.by_key.len(), 301);
    assert!(entries.by_key.contains_key(&Key::JwtId("t1".into())));
    assert!(!entries.by_key.contains_key(&Key::JwtId("t2199".into())));
    assert!(entries.by_key.contains_key(&Key::JwtId("t2200".into())));
    assert!(entries.tombstones.iter().all(|(at, _)| *at >= horizon));
    // Nothing more has expired: the next write drops nothing.
    entries.prune(horizon);
    assert_eq!(entries.by_key.len(), 301);
}

/// The entries of the revocations file at `path`, as JSON (the file is
/// JSON after its comment line).
fn file_entries(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let body = text.split_once('\n').map_or("", |(_, body)| body);
    let file: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}\n{text}"));
    file["revocations"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_revocation_names_its_set_in_fields_and_a_file_without_them_still_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revocations.yaml");
    // As an older receiver (the SET only in the reason) and an operator
    // wrote it.
    std::fs::write(
        &path,
        format!("revocations:\n  - {{spiffe_id: \"{A}\", reason: \"account-disabled (SET j0 from https://idp.example.com/)\"}}\n  - {{spiffe_id: \"{B}\", reason: by hand}}\n"),
    )
    .unwrap();
    let sink = FileSink::open(&path).unwrap();
    // The older entry's transmitter is still known from its reason (an
    // entry read back counts as set at start: later events apply).
    let now = now_secs();
    let kept = sink.apply(&[unrevoke(A, "j1", now + 1)]).await.unwrap();
    assert_eq!(kept, [Kept::Applied]);
    sink.apply(&[revoke(A, "j2", now + 2)]).await.unwrap();
    let entries = file_entries(&path);
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(
        entries[0]["set"],
        serde_json::json!({
            "source": "https://idp.example.com/",
            "event": "https://schemas.openid.net/secevent/risc/event-type/account-disabled",
            "jti": "j2",
        })
    );
    assert_eq!(entries[1]["set"], serde_json::Value::Null);
    assert_eq!(loaded(&path).len(), 2);
    // A restarted sink reads the transmitter from `set`, not the reason
    // (which names no transmitter here).
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(" (SET j2 from https://idp.example.com/)", "");
    std::fs::write(&path, text).unwrap();
    let sink = FileSink::open(&path).unwrap();
    let kept = sink
        .apply(&[from_other(unrevoke(A, "c1", now + 3))])
        .await
        .unwrap();
    assert_eq!(kept, [Kept::Another]);
    let kept = sink.apply(&[unrevoke(A, "j3", now + 3)]).await.unwrap();
    assert_eq!(kept, [Kept::Applied]);
    assert_eq!(loaded(&path).len(), 1);
}

#[test]
fn a_set_is_recorded_printable_and_bounded() {
    let mut p = provenance("j\u{7}1", 100);
    p.transmitter = format!("https://{}/", "é".repeat(400));
    let set = p.stored_set();
    assert_eq!(set.jti, "j?1");
    assert!(
        set.source.len() <= crate::engine::revocations::MAX_SET_TEXT,
        "{}",
        set.source.len()
    );
    assert!(set.source.ends_with('…'), "{}", set.source);
    assert_eq!(set.event, p.event);
}

#[tokio::test]
async fn a_file_that_cannot_be_written_is_an_error_not_a_silent_loss() {
    let dir = tempfile::tempdir().unwrap();
    let sink = FileSink::open(&dir.path().join("missing-dir/revocations.yaml")).unwrap();
    let error = sink.apply(&[revoke(A, "j1", 100)]).await.unwrap_err();
    assert!(error.0.contains("cannot write"), "{error}");
}

#[tokio::test]
async fn a_restarted_sink_keeps_the_entries_of_its_file_and_refuses_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revocations.yaml");
    FileSink::open(&path)
        .unwrap()
        .apply(&[revoke(A, "j1", 100), revoke(B, "j2", 100)])
        .await
        .unwrap();
    let restarted = FileSink::open(&path).unwrap();
    restarted
        .apply(&[revoke("spiffe://prod.acme.io/ns/c/sa/c", "j3", 100)])
        .await
        .unwrap();
    assert_eq!(loaded(&path).len(), 3);
    std::fs::write(&path, "revocations: [ {spiffe_id: 3\n").unwrap();
    let error = FileSink::open(&path).unwrap_err();
    assert!(error.contains("cannot be loaded"), "{error}");
}

#[tokio::test]
async fn risk_levels_go_to_the_risks_file_later_events_win_and_lapsed_ones_are_not_kept() {
    use crate::engine::risks::Risks;
    use crate::ssf::event::RiskLevel;
    use crate::ssf::subject::Target;
    let dir = tempfile::tempdir().unwrap();
    let risks_path = dir.path().join("risks.yaml");
    let day = Duration::from_secs(86_400);
    let sink = FileSink::open(&dir.path().join("revocations.yaml"))
        .unwrap()
        .with_risks(&risks_path, day, RiskCap::default())
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let risk = |jti: &str, at: u64, level| {
        Outcome::Actions(
            provenance(jti, at),
            vec![Action::Risk {
                target: Target::Id(A.into()),
                level,
                reason: None,
            }],
        )
    };
    let kept = sink
        .apply(&[risk("r1", now - 10, RiskLevel::High)])
        .await
        .unwrap();
    assert_eq!(kept, [Kept::Applied]);
    let text = std::fs::read_to_string(&risks_path).unwrap();
    assert_eq!(Risks::parse(&text, &risks_path).unwrap().len(), 1);
    assert!(text.contains("\"level\": \"high\""), "{text}");
    let kept = sink
        .apply(&[risk("r0", now - 20, RiskLevel::Low)])
        .await
        .unwrap();
    assert_eq!(kept, [Kept::Superseded]);
    let kept = sink
        .apply(&[risk("old", now - 2 * 86_400, RiskLevel::Low)])
        .await
        .unwrap();
    assert_eq!(kept, [Kept::Lapsed]);
    let kept = sink
        .apply(&[risk("r2", now, RiskLevel::Low)])
        .await
        .unwrap();
    assert_eq!(kept, [Kept::Applied]);
    let text = std::fs::read_to_string(&risks_path).unwrap();
    assert!(
        text.contains("\"level\": \"low\"") && text.contains("r2"),
        "{text}"
    );
    // No revocations file was written for risk levels alone; a restarted
    // sink keeps the file's risks.
    assert!(!dir.path().join("revocations.yaml").exists());
    let restarted = FileSink::open(&dir.path().join("revocations.yaml"))
        .unwrap()
        .with_risks(&risks_path, day, RiskCap::default())
        .unwrap();
    let kept = restarted
        .apply(&[risk("r1", now - 10, RiskLevel::High)])
        .await
        .unwrap();
    assert_eq!(kept, [Kept::Superseded]);
    // Without a risks file, a risk level is not kept, and says so.
    let plain = FileSink::open(&dir.path().join("other.yaml")).unwrap();
    let kept = plain
        .apply(&[risk("r3", now, RiskLevel::High)])
        .await
        .unwrap();
    assert_eq!(kept, [Kept::Unsupported]);
}

/// `outcome` as reported by another transmitter.
fn from_other(outcome: Outcome) -> Outcome {
    match outcome {
        Outcome::Actions(mut p, actions) => {
            p.transmitter = "https://ci.example.com/".into();
            Outcome::Actions(p, actions)
        }
        other => other,
    }
}

#[tokio::test]
async fn only_the_transmitter_that_revoked_withdraws_it_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revocations.yaml");
    let sink = FileSink::open(&path).unwrap();
    sink.apply(&[revoke(A, "j1", 100)]).await.unwrap();
    // Another transmitter's later enable changes nothing, and says why.
    let kept = sink
        .apply(&[from_other(unrevoke(A, "c1", 200))])
        .await
        .unwrap();
    assert_eq!(kept, [Kept::Another]);
    assert_eq!(loaded(&path).len(), 1);
    // A restarted receiver still knows whose revocation it is.
    drop(sink);
    let sink = FileSink::open(&path).unwrap();
    let kept = sink
        .apply(&[from_other(unrevoke(A, "c2", 300))])
        .await
        .unwrap();
    assert_eq!(kept, [Kept::Another]);
    assert_eq!(loaded(&path).len(), 1);
    // Nor can it take the revocation over, to withdraw it as its own: its
    // revocation is held behind the first, and its withdrawal removes only
    // that.
    let kept = sink
        .apply(&[
            from_other(revoke(A, "c3", 310)),
            from_other(unrevoke(A, "c4", 320)),
        ])
        .await
        .unwrap();
    assert_eq!(kept, [Kept::Held, Kept::Held]);
    assert_eq!(loaded(&path).len(), 1);
    // Its own withdrawal, made after the restart, applies.
    let kept = sink
        .apply(&[unrevoke(A, "j2", now_secs() + 1)])
        .await
        .unwrap();
    assert_eq!(kept, [Kept::Applied]);
    assert_eq!(loaded(&path).len(), 0);
}

#[tokio::test]
async fn a_transmitter_at_its_cap_adds_no_subject_but_updates_its_own_and_others_still_write() {
    use crate::ssf::event::RiskLevel;
    use crate::ssf::subject::Target;
    let dir = tempfile::tempdir().unwrap();
    let risks_path = dir.path().join("risks.yaml");
    let day = Duration::from_secs(86_400);
    let cap = RiskCap::new(2, std::collections::HashMap::new());
    let sink = FileSink::open(&dir.path().join("revocations.yaml"))
        .unwrap()
        .with_risks(&risks_path, day, cap)
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let risk = |id: &str, jti: &str, at: u64, level| {
        Outcome::Actions(
            provenance(jti, at),
            vec![Action::Risk {
                target: Target::Id(id.into()),
                level,
                reason: None,
            }],
        )
    };
    const C: &str = "spiffe://prod.acme.io/ns/c/sa/c";
    let kept = sink
        .apply(&[
            risk(A, "a", now - 30, RiskLevel::High),
            risk(B, "b", now - 30, RiskLevel::High),
            risk(C, "c", now - 30, RiskLevel::High),
        ])
        .await
        .unwrap();
    assert_eq!(kept, [Kept::Applied, Kept::Applied, Kept::Capped]);
    // Its own entries are still lowered; another transmitter has its own cap.
    let kept = sink
        .apply(&[
            risk(A, "a2", now - 20, RiskLevel::Low),
            from_other(risk(C, "o", now - 20, RiskLevel::Medium)),
        ])
        .await
        .unwrap();
    assert_eq!(kept, [Kept::Applied, Kept::Applied]);
    let text = std::fs::read_to_string(&risks_path).unwrap();
    assert_eq!(text.matches("\"level\"").count(), 3, "{text}");
    assert!(
        text.contains("\"jti\": \"a2\"") && !text.contains("\"jti\": \"c\""),
        "{text}"
    );
    // Revocations are not capped.
    let kept = sink.apply(&[revoke(C, "r", now)]).await.unwrap();
    assert_eq!(kept, [Kept::Applied]);
    // A restarted sink counts the file's entries.
    let restarted = FileSink::open(&dir.path().join("revocations.yaml"))
        .unwrap()
        .with_risks(&risks_path, day, RiskCap::new(2, Default::default()))
        .unwrap();
    // (A new subject's "low" takes no place: every entry is at least as high.)
    let kept = restarted
        .apply(&[risk(C, "c2", now, RiskLevel::Low)])
        .await
        .unwrap();
    assert_eq!(kept, [Kept::Capped]);
}

/// A risk level of `level` about `id`, reported by `event` (a CAEP event
/// name) at `at`.
fn risk_of(event: &str, id: &str, jti: &str, at: u64, level: RiskLevel) -> Outcome {
    let mut provenance = provenance(jti, at);
    provenance.event = format!("https://schemas.openid.net/secevent/caep/event-type/{event}");
    Outcome::Actions(
        provenance,
        vec![Action::Risk {
            target: crate::ssf::subject::Target::Id(id.into()),
            level,
            reason: None,
        }],
    )
}

use crate::ssf::event::RiskLevel;

/// The level in force for `id` in the risks file at `path`.
fn level_in_force(path: &Path, id: &str) -> Option<RiskLevel> {
    use crate::engine::identity::{Identity, SpiffeId, X509Svid};
    let text = std::fs::read_to_string(path).unwrap();
    let risks = crate::engine::risks::Risks::parse(&text, path).unwrap();
    let caller = Identity {
        source: Some(std::sync::Arc::new(X509Svid {
            id: SpiffeId::parse(id).unwrap(),
            not_before: UNIX_EPOCH,
            not_after: UNIX_EPOCH,
            chain_not_after: UNIX_EPOCH,
            certificate: Default::default(),
        })),
        ..Identity::default()
    };
    risks
        .find(&caller, std::time::SystemTime::now())
        .map(|r| r.level)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn an_assurance_step_up_never_lowers_the_same_transmitters_risk_level() {
    let dir = tempfile::tempdir().unwrap();
    let risks_path = dir.path().join("risks.yaml");
    let sink = FileSink::open(&dir.path().join("revocations.yaml"))
        .unwrap()
        .with_risks(&risks_path, Duration::from_secs(86_400), RiskCap::default())
        .unwrap();
    let now = now_secs();
    let kept = sink
        .apply(&[risk_of(
            "risk-level-change",
            A,
            "r1",
            now - 20,
            RiskLevel::High,
        )])
        .await
        .unwrap();
    assert_eq!(kept, [Kept::Applied]);
    // A later step-up to nist-aal3 ("low"): kept beside it, the highest
    // applies.
    let kept = sink
        .apply(&[risk_of(
            "assurance-level-change",
            A,
            "a1",
            now - 10,
            RiskLevel::Low,
        )])
        .await
        .unwrap();
    assert_eq!(kept, [Kept::Applied]);
    assert_eq!(level_in_force(&risks_path, A), Some(RiskLevel::High));
    let text = std::fs::read_to_string(&risks_path).unwrap();
    assert!(
        text.contains("\"jti\": \"r1\"") && text.contains("\"jti\": \"a1\""),
        "{text}"
    );
    // The risk engine lowers its own report.
    let kept = sink
        .apply(&[risk_of("risk-level-change", A, "r2", now, RiskLevel::Low)])
        .await
        .unwrap();
    assert_eq!(kept, [Kept::Applied]);
    assert_eq!(level_in_force(&risks_path, A), Some(RiskLevel::Low));
    // Kept apart across a restart too.
    let restarted = FileSink::open(&dir.path().join("revocations.yaml"))
        .unwrap()
        .with_risks(&risks_path, Duration::from_secs(86_400), RiskCap::default())
        .unwrap();
    let kept = restarted
        .apply(&[risk_of(
            "assurance-level-change",
            A,
            "a2",
            now - 5,
            RiskLevel::High,
        )])
        .await
        .unwrap();
    assert_eq!(kept, [Kept::Applied]);
    assert_eq!(level_in_force(&risks_path, A), Some(RiskLevel::High));
}

#[tokio::test]
async fn at_its_cap_a_transmitters_higher_level_takes_the_place_of_its_lowest() {
    const C: &str = "spiffe://prod.acme.io/ns/c/sa/c";
    const D: &str = "spiffe://prod.acme.io/ns/d/sa/d";
    const E: &str = "spiffe://prod.acme.io/ns/e/sa/e";
    let dir = tempfile::tempdir().unwrap();
    let risks_path = dir.path().join("risks.yaml");
    let sink = FileSink::open(&dir.path().join("revocations.yaml"))
        .unwrap()
        .with_risks(
            &risks_path,
            Duration::from_secs(86_400),
            RiskCap::new(2, std::collections::HashMap::new()),
        )
        .unwrap();
    let now = now_secs();
    let risk = |id, jti, at, level| risk_of("risk-level-change", id, jti, at, level);
    let kept = sink
        .apply(&[
            risk(A, "a", now - 30, RiskLevel::Low),
            risk(B, "b", now - 20, RiskLevel::Low),
            risk(C, "c", now - 10, RiskLevel::High),
        ])
        .await
        .unwrap();
    assert_eq!(kept, [Kept::Applied; 3]);
    // The low that lapses first (A's) made room.
    assert_eq!(level_in_force(&risks_path, C), Some(RiskLevel::High));
    assert_eq!(level_in_force(&risks_path, A), None);
    assert_eq!(level_in_force(&risks_path, B), Some(RiskLevel::Low));
    // A medium takes B's place; then every entry is at least as high as a
    // medium or a high: refused.
    let kept = sink
        .apply(&[
            risk(D, "d", now, RiskLevel::Medium),
            risk(E, "e", now, RiskLevel::Medium),
            risk(B, "b2", now, RiskLevel::High),
        ])
        .await
        .unwrap();
    assert_eq!(kept, [Kept::Applied, Kept::Capped, Kept::Applied]);
    assert_eq!(level_in_force(&risks_path, B), Some(RiskLevel::High));
    assert_eq!(level_in_force(&risks_path, D), None);
    let kept = sink
        .apply(&[risk(E, "e2", now, RiskLevel::High)])
        .await
        .unwrap();
    assert_eq!(kept, [Kept::Capped]);
    let text = std::fs::read_to_string(&risks_path).unwrap();
    assert_eq!(text.matches("\"level\"").count(), 2, "{text}");
}

#[tokio::test]
async fn a_withdrawal_at_the_time_of_the_last_keeps_its_tombstone_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revocations.yaml");
    let sink = FileSink::open(&path)
        .unwrap()
        .with_order_window(Duration::from_secs(3600));
    let now = now_secs();
    let kept = sink
        .apply(&[unrevoke(A, "j1", now - 100), unrevoke(A, "j2", now - 100)])
        .await
        .unwrap();
    assert_eq!(kept, [Kept::Applied, Kept::Applied]);
    let entries = sink.entries.lock().unwrap();
    let key = Key::SpiffeId(A.into());
    // The tombstone is in the order, so the prune drops it once expired.
    assert!(entries.by_key.contains_key(&key));
    assert_eq!(
        entries.tombstones.iter().collect::<Vec<_>>(),
        [&(UNIX_EPOCH + Duration::from_secs(now - 100), key)]
    );
    drop(entries);
    let mut entries = sink.entries.lock().unwrap();
    entries.prune(UNIX_EPOCH + Duration::from_secs(now));
    assert!(entries.by_key.is_empty() && entries.tombstones.is_empty());
}

#[tokio::test]
async fn after_a_restart_a_replayed_withdrawal_never_undoes_a_newer_revocation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revocations.yaml");
    let now = now_secs();
    let open = || {
        FileSink::open(&path)
            .unwrap()
            .with_order_window(Duration::from_secs(3600))
    };
    let sink = open();
    // A withdrawal (nothing to withdraw yet), then a later revocation.
    let kept = sink
        .apply(&[unrevoke(A, "j1", now - 200), revoke(A, "j2", now - 100)])
        .await
        .unwrap();
    assert_eq!(kept, [Kept::Applied, Kept::Applied]);
    let kept = sink.apply(&[unrevoke(A, "j1", now - 200)]).await.unwrap();
    assert_eq!(kept, [Kept::Superseded]);
    drop(sink);
    // Restarted: the jti memory is gone; the event time is kept beside
    // the file, so the replay is still older.
    let sink = open();
    let kept = sink.apply(&[unrevoke(A, "j1", now - 200)]).await.unwrap();
    assert_eq!(kept, [Kept::Superseded]);
    assert_eq!(loaded(&path).len(), 1);
    // A withdrawal made after the restart still applies.
    let kept = sink.apply(&[unrevoke(A, "j3", now + 60)]).await.unwrap();
    assert_eq!(kept, [Kept::Applied]);
    assert_eq!(loaded(&path).len(), 0);
}

/// The attacker review's finding: after a restart, the owning
/// transmitter's withdrawal made before it (a push retry) was superseded by
/// the entry counting as set at start; its event time is kept beside the
/// file, and without it (removed, another SET's) the entry fails closed.
#[tokio::test]
async fn after_a_restart_the_owners_withdrawal_made_before_it_still_applies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revocations.yaml");
    let times = dir.path().join("revocations.yaml.times.json");
    let now = now_secs();
    let open = || {
        FileSink::open(&path)
            .unwrap()
            .with_order_window(Duration::from_secs(3600))
    };
    let sink = open();
    sink.apply(&[revoke(A, "j1", now - 100), revoke(B, "j2", now - 100)])
        .await
        .unwrap();
    drop(sink);
    let sink = open();
    let kept = sink.apply(&[unrevoke(A, "j3", now - 50)]).await.unwrap();
    assert_eq!(kept, [Kept::Applied]);
    assert_eq!(loaded(&path).len(), 1);
    // An older one still changes nothing.
    let kept = sink.apply(&[unrevoke(B, "j4", now - 150)]).await.unwrap();
    assert_eq!(kept, [Kept::Superseded]);
    drop(sink);
    // Times that are not the file's entry's (another SET's reason) or that
    // cannot be read are not used: the entry counts as set at start.
    let kept_times = std::fs::read_to_string(&times).unwrap();
    std::fs::write(&times, kept_times.replace("SET j2 ", "SET j9 ")).unwrap();
    let kept = open().apply(&[unrevoke(B, "j5", now - 50)]).await.unwrap();
    assert_eq!(kept, [Kept::Superseded]);
    // Times that cannot be read hold what is held behind other writers:
    // the sink does not start without them, unless they are removed.
    std::fs::write(&times, "not json").unwrap();
    let refused = FileSink::open(&path).unwrap_err();
    assert!(
        refused.contains("revocations.yaml.times.json cannot be read")
            && refused.contains("remove it to start without them"),
        "{refused}"
    );
    std::fs::remove_file(&times).unwrap();
    let kept = open().apply(&[unrevoke(B, "j5", now - 50)]).await.unwrap();
    assert_eq!(kept, [Kept::Superseded]);
    assert_eq!(loaded(&path).len(), 1);
}

/// The transmitter that wrote `path`'s entry for `id`.
fn writer(path: &Path, id: &str) -> Option<String> {
    file_entries(path)
        .into_iter()
        .find(|e| e["spiffe_id"] == id)
        .map(|e| e["set"]["source"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn a_revocation_held_behind_another_transmitters_takes_its_place_when_it_is_withdrawn() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revocations.yaml");
    let sink = FileSink::open(&path).unwrap();
    let now = now_secs();
    let (idp, ci) = ("https://idp.example.com/", "https://ci.example.com/");
    // The IdP revokes A, then CI reports the same: held behind the IdP's.
    sink.apply(&[revoke(A, "i1", now)]).await.unwrap();
    let kept = sink
        .apply(&[from_other(revoke(A, "c1", now + 1))])
        .await
        .unwrap();
    assert_eq!(kept, [Kept::Held]);
    assert_eq!(writer(&path, A).as_deref(), Some(idp));
    // A restart keeps what is held (beside the file, in its times).
    drop(sink);
    let sink = FileSink::open(&path).unwrap();
    // The IdP withdraws its revocation: CI's still stands, and takes its
    // place, as CI wrote it.
    let kept = sink.apply(&[unrevoke(A, "i2", now + 2)]).await.unwrap();
    assert_eq!(kept, [Kept::Applied]);
    assert_eq!(loaded(&path).len(), 1);
    assert_eq!(writer(&path, A).as_deref(), Some(ci));
    let entry = &file_entries(&path)[0];
    assert_eq!(entry["set"]["jti"], "c1", "{entry}");
    // The IdP's own older revoke, delivered late, stays undone; it does not
    // come back as held either.
    let kept = sink.apply(&[revoke(A, "i0", now - 1)]).await.unwrap();
    assert_eq!(kept, [Kept::Superseded]);
    // CI's withdrawal now ends it: nothing is held any more.
    let kept = sink
        .apply(&[from_other(unrevoke(A, "c2", now + 3))])
        .await
        .unwrap();
    assert_eq!(kept, [Kept::Applied]);
    assert_eq!(loaded(&path).len(), 0);

    // Withdrawn while held: the first writer's withdrawal then ends it.
    sink.apply(&[revoke(B, "i3", now + 4)]).await.unwrap();
    sink.apply(&[from_other(revoke(B, "c3", now + 5))])
        .await
        .unwrap();
    let kept = sink
        .apply(&[from_other(unrevoke(B, "c4", now + 6))])
        .await
        .unwrap();
    assert_eq!(kept, [Kept::Held]);
    // CI's older revoke, delivered late, is not held again.
    let kept = sink
        .apply(&[from_other(revoke(B, "c0", now + 5))])
        .await
        .unwrap();
    assert_eq!(kept, [Kept::Superseded]);
    sink.apply(&[unrevoke(B, "i4", now + 7)]).await.unwrap();
    assert_eq!(loaded(&path).len(), 0);

    // A held revocation whose entry was removed from the file by hand (an
    // operator's withdrawal) is dropped at start.
    sink.apply(&[revoke(A, "i5", now + 8)]).await.unwrap();
    sink.apply(&[from_other(revoke(A, "c5", now + 9))])
        .await
        .unwrap();
    drop(sink);
    std::fs::write(&path, "revocations: []\n").unwrap();
    let sink = FileSink::open(&path).unwrap();
    sink.apply(&[revoke(A, "i6", now + 10)]).await.unwrap();
    sink.apply(&[unrevoke(A, "i7", now + 11)]).await.unwrap();
    assert_eq!(loaded(&path).len(), 0, "{:?}", file_entries(&path));
}

/// The attacker review's finding: a held revocation acknowledged in the
/// same SET as an applied one lived only in times that failed to be
/// written (a warning then), and a restart lost it. Now the SET is refused
/// (the transmitter sends it again) until the times are written.
#[tokio::test]
async fn a_held_revocation_is_acknowledged_only_once_its_times_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revocations.yaml");
    let sink = FileSink::open(&path).unwrap();
    let now = now_secs();
    sink.apply(&[revoke(A, "i1", now)]).await.unwrap();
    // The times cannot be written now (as with a full disk).
    let times = EventTimes::path(&path);
    std::fs::remove_file(&times).unwrap();
    std::fs::create_dir_all(times.join("x")).unwrap();
    // One SET of CI's names A (the IdP's: held) and B (new: applied).
    let both = from_other(Outcome::Actions(
        provenance("c1", now + 1),
        [A, B]
            .map(|id| Action::Revoke {
                entry: Revocation::SpiffeId(id.into()),
                reason: "compromised".into(),
            })
            .into(),
    ));
    let refused = sink.apply(std::slice::from_ref(&both)).await.unwrap_err();
    assert!(refused.0.contains("times.json"), "{refused}");
    // Sent again once the times can be written: kept, and kept over a
    // restart.
    std::fs::remove_dir_all(&times).unwrap();
    let kept = sink.apply(&[both]).await.unwrap();
    assert_eq!(kept, [Kept::Held, Kept::Applied]);
    drop(sink);
    let sink = FileSink::open(&path).unwrap();
    sink.apply(&[unrevoke(A, "i2", now + 2)]).await.unwrap();
    assert_eq!(writer(&path, A).as_deref(), Some("https://ci.example.com/"));
}
