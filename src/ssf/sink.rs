//! Where the receiver's actions go: the governance state every sidecar
//! reads.
//!
//! Data flow: [`super::receiver`] hands each accepted SET's
//! [`Outcome`]s to a [`Sink`] and answers the transmitter `202` only once
//! the sink has them (RFC 8935 §2.2: a SET is acknowledged once retained).
//! [`FileSink`] writes a revocations file in celador's own format, which
//! `celador serve` watches (`revocations:` in its config), and optionally
//! a risks file ([`risks`], `risks:`), for a single node or a demo; several pods share state through the governance store
//! instead.
//!
//! Ordering: SETs may arrive in any order (RFC 8417 §5.3), so each entry
//! remembers the time of the event that set it, and an older event never
//! undoes a newer one (an `account-enabled` from before an
//! `account-disabled` leaves the revocation in place). The file keeps no
//! event time; the receiver keeps its entries' beside it
//! (`<file>.times.json`, [`EventTimes`]), so the order survives a restart.
//! An entry whose time is not there counts as set at start: an event from
//! before it changes nothing ([`Kept::Superseded`]), failing closed.
//!
//! Several transmitters: each withdraws only what it reported. A
//! revocation of an entry another writer holds is held behind it
//! ([`Kept::Held`], kept in the times file too) and takes its place when
//! that writer withdraws it, so an entry stays revoked while any report
//! of it stands, as in the store.
//!
//! Bound: a withdrawn entry stays as a tombstone so that an older revoke
//! stays undone, but only for the receiver's `max_age` (as the store keeps
//! event times, [`super::store`]'s "Bound"): each SET first drops every
//! tombstone whose event time is older than the clock minus `max_age`,
//! oldest first (kept in order by time, so without a scan), so memory
//! holds about the withdrawals reported within `max_age`, however many a
//! SET withdraws (an `aliases` subject may name 1000 entries). Each
//! tombstone is dropped once, so the work per entry written stays
//! constant, amortized; dropping only some per SET let them pile up
//! faster than they went once a SET withdrew more. A live revocation is
//! never dropped. The same soundness as the store's: a withdrawal finding
//! no order for its entry is applied only if its time is within `max_age`
//! (hence later than every tombstone dropped), else it changes nothing
//! ([`Kept::Stale`]); a revocation is applied (it fails closed).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::event::{Action, Outcome, Provenance, Revocation};
use crate::sources::fleet::entries::StoredSet;

/// A sink could not keep the actions; the transmitter is answered with an
/// error and will send the SET again.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// What became of one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// It is in force.
    Applied,
    /// A later event about the same entry was applied before it: it
    /// changed nothing (RFC 8417 §5.3: SETs arrive in any order).
    Superseded,
    /// A risk level that had lapsed before it arrived: it changed nothing.
    Lapsed,
    /// This sink cannot keep it (a revocations file without `risks_file`
    /// keeps no risk level).
    Unsupported,
    /// It would withdraw another transmitter's (or an operator's)
    /// revocation, which only its writer may do, and this transmitter held
    /// nothing behind it: it changed nothing.
    Another,
    /// The entry is another transmitter's (or an operator's) revocation: a
    /// revocation is held behind it, and takes its place when its writer
    /// withdraws it (the identity stays revoked while any report stands);
    /// a withdrawal removes what this transmitter held.
    Held,
    /// A risk level about a subject its transmitter has no entry for, when
    /// the transmitter already holds its `max_risks`, each at least as
    /// high: it changed nothing.
    Capped,
    /// A withdrawal (an enable) older than the receiver's `max_age` about
    /// an entry whose order the sink no longer remembers (the store keeps
    /// event times, a file sink its tombstones, for `max_age`): it might be
    /// older than an event already applied, so it changed nothing. (A
    /// revocation that old is applied: it fails closed.)
    Stale,
}

/// The default of `max_risks`: how many risk entries (subjects) one
/// transmitter may hold at once. Ample for the identities a tool judges
/// risky within a day, and a bound on what every sidecar replicates.
pub const DEFAULT_MAX_RISKS: u64 = 10_000;

/// How many risk entries each transmitter may hold at once (`max_risks`,
/// per transmitter or for all).
#[derive(Debug, Clone)]
pub struct RiskCap {
    default: u64,
    by_issuer: std::collections::HashMap<String, u64>,
}

impl Default for RiskCap {
    fn default() -> Self {
        RiskCap::new(DEFAULT_MAX_RISKS, std::collections::HashMap::new())
    }
}

impl RiskCap {
    /// `default` for every transmitter, but those of `by_issuer`.
    pub fn new(default: u64, by_issuer: std::collections::HashMap<String, u64>) -> RiskCap {
        RiskCap { default, by_issuer }
    }

    /// The cap of the transmitter `issuer`.
    pub fn of(&self, issuer: &str) -> u64 {
        self.by_issuer.get(issuer).copied().unwrap_or(self.default)
    }
}

/// The future a sink returns: what became of each action of the outcomes
/// it was given, in their order.
pub type Applying<'a> = Pin<Box<dyn Future<Output = Result<Vec<Kept>, SinkError>> + Send + 'a>>;

/// What a fleet-wide replay memory says of a SET (its issuer and `jti`,
/// with the digest of its bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Claimed here: apply it, then [`Sink::settle`] or [`Sink::release`].
    First,
    /// The same bytes, applied by another receiver: 202, applied once.
    Done,
    /// The same bytes, being applied by another receiver now: 503.
    Pending,
    /// Other bytes under this `jti`: a replay.
    Other,
}

/// The future of a replay-memory call.
pub type Claiming<'a> = Pin<Box<dyn Future<Output = Result<Claim, SinkError>> + Send + 'a>>;

/// The future of a call that only reports failure.
pub type Settling<'a> = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>>;

/// A SET as the replay memory names it: issuer, `jti`, digest of its bytes.
pub type SetKey<'a> = (&'a str, &'a str, [u8; 32]);

/// Keeps the receiver's actions where sidecars read them.
pub trait Sink: Send + Sync {
    /// Applies the actions of `outcomes` (ignored outcomes change nothing);
    /// done when they are durable. Says what became of each action, in
    /// order.
    fn apply<'a>(&'a self, outcomes: &'a [Outcome]) -> Applying<'a>;

    /// Claims a SET in a replay memory every receiver of the fleet shares,
    /// for `ttl` once settled. A sink without one (a file: one receiver)
    /// says [`Claim::First`]; each receiver also remembers `jti`s itself.
    fn claim<'a>(&'a self, _set: SetKey<'a>, _ttl: Duration) -> Claiming<'a> {
        Box::pin(async { Ok(Claim::First) })
    }

    /// The claimed SET's actions are kept: a replay anywhere is a duplicate.
    fn settle<'a>(&'a self, _set: SetKey<'a>, _ttl: Duration) -> Settling<'a> {
        Box::pin(async { Ok(()) })
    }

    /// The claimed SET's actions could not be kept: its next attempt, at
    /// any receiver, is applied afresh.
    fn release<'a>(&'a self, _set: SetKey<'a>) -> Settling<'a> {
        Box::pin(async { Ok(()) })
    }
}

/// An entry, with the time of the event that set or cleared it.
#[derive(Debug, Clone)]
struct Entry {
    at: SystemTime,
    /// `None` once removed (a tombstone, so an older revoke stays undone).
    reason: Option<String>,
    /// The transmitter that wrote it: only it may withdraw a revocation.
    by: String,
    /// The SET that set it (the file's `set`); none for an entry kept from
    /// a file written before entries named their SET.
    set: Option<StoredSet>,
}

/// Writes revocations to a file in celador's revocations format, and,
/// when given one, risk levels to a risks file.
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    entries: Mutex<Entries>,
    risks: Option<Mutex<risks::RiskFile>>,
    /// How long a tombstone is kept (the receiver's `max_age`); none: for
    /// ever.
    order_window: Option<Duration>,
}

/// The entries, with their tombstones in order of event time (exactly the
/// entries whose `reason` is `None`), to drop the expired ones without a
/// scan; and the reports held behind another writer's entry.
#[derive(Debug, Default)]
struct Entries {
    by_key: BTreeMap<Key, Entry>,
    tombstones: std::collections::BTreeSet<(SystemTime, Key)>,
    /// Each transmitter's revocation of an entry another writer holds, by
    /// entry and transmitter: one takes the entry's place when its writer
    /// withdraws it. A `None` reason is a withdrawal, kept (for `max_age`,
    /// as tombstones are) so that the transmitter's older revoke stays
    /// undone.
    held: BTreeMap<(Key, String), Entry>,
    held_tombstones: std::collections::BTreeSet<(SystemTime, Key, String)>,
}

impl Entries {
    /// Sets `key` to `entry`, keeping the tombstones' order. Another
    /// writer's tombstone it replaces is held, so that writer's older
    /// revoke stays undone.
    fn insert(&mut self, key: Key, entry: Entry) {
        if let Some(old) = self.by_key.remove(&key)
            && old.reason.is_none()
        {
            self.tombstones.remove(&(old.at, key.clone()));
            if old.by != entry.by {
                self.hold(key.clone(), old);
            }
        }
        if entry.reason.is_none() {
            self.tombstones.insert((entry.at, key.clone()));
        }
        self.by_key.insert(key, entry);
    }

    /// Holds `entry` (its writer's report) behind `key`'s writer's.
    fn hold(&mut self, key: Key, entry: Entry) {
        self.unhold(&key, &entry.by);
        if entry.reason.is_none() {
            self.held_tombstones
                .insert((entry.at, key.clone(), entry.by.clone()));
        }
        self.held.insert((key, entry.by.clone()), entry);
    }

    /// Takes `by`'s report of `key` out of those held.
    fn unhold(&mut self, key: &Key, by: &str) -> Option<Entry> {
        let old = self.held.remove(&(key.clone(), by.to_owned()))?;
        if old.reason.is_none() {
            self.held_tombstones
                .remove(&(old.at, key.clone(), by.to_owned()));
        }
        Some(old)
    }

    /// After `key`'s writer withdrew it: the revocation held behind it
    /// with the earliest event (then by transmitter) takes its place.
    fn promote(&mut self, key: &Key) {
        let next = self
            .held
            .range((key.clone(), String::new())..)
            .take_while(|((k, _), _)| k == key)
            .filter(|(_, e)| e.reason.is_some())
            .min_by(|(a, x), (b, y)| (x.at, &a.1).cmp(&(y.at, &b.1)))
            .map(|((_, by), _)| by.clone());
        if let Some(entry) = next.and_then(|by| self.unhold(key, &by)) {
            self.insert(key.clone(), entry);
        }
    }

    /// Restores the held revocations read at start: each stays behind the
    /// entry it was held behind; one whose entry is no longer in the file
    /// (removed by hand, as an operator's `celador unrevoke` clears those
    /// held in the store) is dropped.
    fn restore_held(&mut self, held: Vec<HeldReport>) {
        for report in held {
            let behind = self
                .by_key
                .get(&report.key)
                .is_some_and(|e| e.reason.is_some() && e.by != report.by);
            if behind {
                let entry = Entry {
                    at: UNIX_EPOCH + report.at,
                    reason: Some(report.reason),
                    by: report.by,
                    set: report.set,
                };
                self.hold(report.key, entry);
            }
        }
    }

    /// Drops every tombstone older than `horizon`, oldest first.
    fn prune(&mut self, horizon: SystemTime) {
        while self.tombstones.first().is_some_and(|(at, _)| *at < horizon) {
            if let Some((_, key)) = self.tombstones.pop_first() {
                self.by_key.remove(&key);
            }
        }
        while self
            .held_tombstones
            .first()
            .is_some_and(|(at, _, _)| *at < horizon)
        {
            if let Some((_, key, by)) = self.held_tombstones.pop_first() {
                self.held.remove(&(key, by));
            }
        }
    }
}

/// A revocation as a sortable key (the file lists entries in this order).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
enum Key {
    SpiffeId(String),
    SpiffeIdPrefix(String),
    X509Serial(String, String),
    JwtId(String),
}

impl From<&Revocation> for Key {
    fn from(entry: &Revocation) -> Key {
        match entry {
            Revocation::SpiffeId(id) => Key::SpiffeId(id.clone()),
            Revocation::SpiffeIdPrefix(p) => Key::SpiffeIdPrefix(p.clone()),
            Revocation::X509Serial { serial, issuer } => {
                Key::X509Serial(serial.clone(), issuer.clone())
            }
            Revocation::JwtId(jti) => Key::JwtId(jti.clone()),
        }
    }
}

/// The file as the receiver reads it back at start.
#[derive(Debug, serde::Deserialize)]
struct StoredFile {
    revocations: Vec<StoredEntry>,
}

/// One entry read back.
#[derive(Debug, serde::Deserialize)]
struct StoredEntry {
    #[serde(default)]
    spiffe_id: Option<String>,
    #[serde(default)]
    spiffe_id_prefix: Option<String>,
    #[serde(default)]
    x509_serial: Option<String>,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    jwt_id: Option<String>,
    reason: String,
    #[serde(default)]
    set: Option<StoredSet>,
}

impl StoredEntry {
    /// What it revokes; none when it names nothing.
    fn key(&self) -> Option<Key> {
        Some(match self {
            StoredEntry {
                spiffe_id: Some(id),
                ..
            } => Key::SpiffeId(id.clone()),
            StoredEntry {
                spiffe_id_prefix: Some(p),
                ..
            } => Key::SpiffeIdPrefix(p.clone()),
            StoredEntry {
                x509_serial: Some(serial),
                issuer: Some(issuer),
                ..
            } => Key::X509Serial(serial.clone(), issuer.clone()),
            StoredEntry {
                jwt_id: Some(jti), ..
            } => Key::JwtId(jti.clone()),
            StoredEntry { .. } => return None,
        })
    }

    /// The transmitter that wrote it: its SET's, else (a file an older
    /// receiver wrote) from the reason this sink wrote (`... (SET jti from
    /// ISSUER)`); none for an entry written by hand, which no transmitter
    /// may withdraw.
    fn transmitter(&self) -> String {
        match &self.set {
            Some(set) => set.source.clone(),
            None => self
                .reason
                .strip_suffix(')')
                .and_then(|r| r.rsplit_once(" from "))
                .map(|(_, by)| by.to_owned())
                .unwrap_or_default(),
        }
    }
}

/// The event times of the file's entries, kept beside it
/// (`<file>.times.json`, the receiver's own): the file keeps none
/// (`celador serve` refuses a field it does not know), and without them an
/// entry read back at start counts as set at start, so the owning
/// transmitter's withdrawal made before a restart but delivered after it
/// (a push retry) would change nothing. An entry's time is used only when
/// its key and reason (which names its SET) are the file's: a times file
/// left behind by a failed write or edited by hand never moves an entry's
/// time to another event's.
#[derive(Debug, Default, Serialize, serde::Deserialize)]
struct EventTimes {
    entries: Vec<EventTime>,
    /// The revocations held behind another writer's entry (the file shows
    /// one writer's per entry): kept here so that a restart keeps them.
    #[serde(default)]
    held: Vec<HeldReport>,
}

/// A revocation held behind another writer's entry.
#[derive(Debug, Serialize, serde::Deserialize)]
struct HeldReport {
    key: Key,
    by: String,
    reason: String,
    #[serde(default)]
    set: Option<StoredSet>,
    /// Since the Unix epoch.
    at: Duration,
}

/// One entry's event time.
#[derive(Debug, Serialize, serde::Deserialize)]
struct EventTime {
    key: Key,
    reason: String,
    /// Since the Unix epoch.
    at: Duration,
}

impl EventTimes {
    /// Where the times of the revocations file `path` are kept.
    fn path(path: &Path) -> PathBuf {
        let mut name = path.file_name().unwrap_or_default().to_owned();
        name.push(".times.json");
        path.with_file_name(name)
    }

    /// The times (and held revocations) kept beside `path`; none when
    /// there are none. Times that cannot be read are an error: they hold
    /// the revocations held behind another transmitter's, which starting
    /// without would lose.
    fn read(path: &Path) -> Result<EventTimes, String> {
        let times = Self::path(path);
        let read = match std::fs::read(&times) {
            Ok(bytes) => serde_json::from_slice::<EventTimes>(&bytes).map_err(|e| e.to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(EventTimes::default()),
            Err(e) => Err(e.to_string()),
        };
        read.map_err(|e| {
            format!(
                "the revocations' event times {} cannot be read ({}): they hold the revocations held behind another transmitter's; repair the file, or remove it to start without them (the file's entries then count as set at start)",
                times.display(),
                crate::engine::redaction::text(&e)
            )
        })
    }

    /// The live entries' times and the held revocations, as JSON.
    fn render(state: &Entries) -> String {
        let entries = state
            .by_key
            .iter()
            .filter_map(|(key, entry)| {
                Some(EventTime {
                    key: key.clone(),
                    reason: entry.reason.clone()?,
                    at: entry.at.duration_since(UNIX_EPOCH).unwrap_or_default(),
                })
            })
            .collect();
        let held = state
            .held
            .iter()
            .filter_map(|((key, by), entry)| {
                Some(HeldReport {
                    key: key.clone(),
                    by: by.clone(),
                    reason: entry.reason.clone()?,
                    set: entry.set.clone(),
                    at: entry.at.duration_since(UNIX_EPOCH).unwrap_or_default(),
                })
            })
            .collect();
        serde_json::to_string(&EventTimes { entries, held }).unwrap_or_default()
    }
}

/// One entry of the file, as `celador serve` reads it.
#[derive(Debug, Serialize)]
struct FileEntry<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    spiffe_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spiffe_id_prefix: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x509_serial: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jwt_id: Option<&'a str>,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    set: Option<&'a StoredSet>,
}

impl FileSink {
    /// A sink writing `path`, which the receiver owns: created on the first
    /// action, or, when it exists, its entries kept (a restarted receiver
    /// forgets no revocation). A file that exists and does not load is an
    /// error: the receiver would otherwise overwrite it.
    pub fn open(path: &Path) -> Result<FileSink, String> {
        let mut entries = Entries::default();
        // The file keeps no event time (`celador serve` refuses a field it
        // does not know): an entry's is kept beside it ([`EventTimes`]),
        // else it counts as set now: an event from before the restart (a
        // replayed withdrawal the revocation superseded) is older and
        // changes nothing; it fails closed.
        let loaded_at = SystemTime::now();
        let kept = EventTimes::read(path)?;
        let times: BTreeMap<(Key, String), SystemTime> = kept
            .entries
            .into_iter()
            .map(|t| ((t.key, t.reason), UNIX_EPOCH + t.at))
            .collect();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let file: StoredFile = crate::engine::yaml::from_str(&text, path).map_err(|e| {
                    format!("the revocations file cannot be loaded: {}", e.rendered)
                })?;
                for stored in file.revocations {
                    let by = stored.transmitter();
                    let key = stored.key().ok_or_else(|| {
                        format!("{}: an entry names nothing to revoke", path.display())
                    })?;
                    let at = times.get(&(key.clone(), stored.reason.clone()));
                    entries.insert(
                        key,
                        Entry {
                            at: at.copied().unwrap_or(loaded_at),
                            reason: Some(stored.reason),
                            by,
                            set: stored.set,
                        },
                    );
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        }
        entries.restore_held(kept.held);
        Ok(FileSink {
            path: path.to_owned(),
            entries: Mutex::new(entries),
            risks: None,
            order_window: None,
        })
    }

    /// This sink, keeping a tombstone (a withdrawn entry's event time) for
    /// `window`, the receiver's `max_age` (see the module's "Bound");
    /// without it, for ever.
    pub fn with_order_window(mut self, window: Duration) -> Self {
        self.order_window = Some(window);
        self
    }

    /// This sink, also writing risk levels to the risks file `path`
    /// (lasting `expiry` after their event, at most `cap` per
    /// transmitter), which the receiver owns as it
    /// owns the revocations file.
    pub fn with_risks(
        mut self,
        path: &Path,
        expiry: std::time::Duration,
        cap: RiskCap,
    ) -> Result<Self, String> {
        self.risks = Some(Mutex::new(risks::RiskFile::open(path, expiry, cap)?));
        Ok(self)
    }

    /// Records `action`: what became of it. A withdrawal older than
    /// `horizon` (the clock minus `max_age`) is applied only about an entry
    /// whose order this transmitter's last event still gives.
    fn record(
        entries: &mut Entries,
        provenance: &Provenance,
        action: &Action,
        horizon: Option<SystemTime>,
    ) -> Kept {
        let (key, reason, set) = match action {
            Action::Revoke { entry, reason } => (
                Key::from(entry),
                Some(format!(
                    "{reason} (SET {} from {})",
                    provenance.jti, provenance.transmitter
                )),
                Some(provenance.stored_set()),
            ),
            Action::Unrevoke { entry } => (Key::from(entry), None, None),
            // Recorded by the risks file, if there is one.
            Action::Risk { .. } => return Kept::Unsupported,
        };
        let me = &provenance.transmitter;
        let displayed = entries.by_key.get(&key);
        // Events are ordered per transmitter: another's (an `iat` ahead of
        // the clock included) never orders this one's. Its last event about
        // the entry is the entry's, or the one held behind it.
        let last = match displayed {
            Some(e) if e.by == *me => Some(e.at),
            _ => entries.held.get(&(key.clone(), me.clone())).map(|e| e.at),
        };
        if last.is_some_and(|at| at > provenance.at) {
            return Kept::Superseded;
        }
        // No order kept for it (its tombstone dropped): a withdrawal older
        // than every dropped tombstone might undo a later event.
        if reason.is_none() && last.is_none() && horizon.is_some_and(|h| provenance.at < h) {
            return Kept::Stale;
        }
        let other = displayed.is_some_and(|e| e.reason.is_some() && e.by != *me);
        let entry = Entry {
            at: provenance.at,
            reason,
            by: me.clone(),
            set,
        };
        let withdrawal = entry.reason.is_none();
        if other {
            // Another transmitter's revocation stays as it was written: one
            // tool can neither clear what another reported nor take it
            // over (a revocation written over it would make it the new
            // writer's to withdraw). This one's is held behind it.
            let had = entries
                .held
                .get(&(key.clone(), me.clone()))
                .is_some_and(|e| e.reason.is_some());
            entries.hold(key, entry);
            return if withdrawal && !had {
                Kept::Another
            } else {
                Kept::Held
            };
        }
        entries.unhold(&key, me);
        entries.insert(key.clone(), entry);
        if withdrawal {
            entries.promote(&key);
        }
        Kept::Applied
    }

    fn render(entries: &Entries) -> Result<String, SinkError> {
        let list: Vec<FileEntry<'_>> = entries
            .by_key
            .iter()
            .filter_map(|(key, entry)| {
                let reason = entry.reason.as_deref()?;
                let mut out = FileEntry {
                    spiffe_id: None,
                    spiffe_id_prefix: None,
                    x509_serial: None,
                    issuer: None,
                    jwt_id: None,
                    reason,
                    set: entry.set.as_ref(),
                };
                match key {
                    Key::SpiffeId(id) => out.spiffe_id = Some(id),
                    Key::SpiffeIdPrefix(p) => out.spiffe_id_prefix = Some(p),
                    Key::X509Serial(serial, issuer) => {
                        out.x509_serial = Some(serial);
                        out.issuer = Some(issuer);
                    }
                    Key::JwtId(jti) => out.jwt_id = Some(jti),
                }
                Some(out)
            })
            .collect();
        // JSON is YAML: serde_json writes it without a YAML serializer.
        let body = serde_json::to_string_pretty(&serde_json::json!({ "revocations": list }))
            .map_err(|e| SinkError(format!("cannot write the revocations: {e}")))?;
        Ok(format!(
            "# Written by celador signals serve from Shared Signals events; edits are overwritten.\n{body}\n"
        ))
    }
}

/// Writes `text` to `path` atomically (a temporary file renamed over it),
/// so a watching sidecar never reads half of it, and durably (the file
/// synced before the rename, the directory after it), so a crash leaves
/// the old file or the new one, never an empty one: an acknowledged SET
/// is on disk.
fn write(path: &Path, text: &str) -> Result<(), SinkError> {
    use std::io::Write as _;
    // A bare file name's parent is "", which cannot be opened to sync.
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = std::fs::File::create(&temporary).and_then(|mut file| {
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        // A directory that cannot be opened for syncing (some file
        // systems) still has the rename.
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    });
    written.map_err(|e| SinkError(format!("cannot write {}: {e}", path.display())))
}

impl FileSink {
    /// Writes what changed: the revocations file when an entry did, then
    /// the event times and held revocations beside it. A held revocation
    /// is kept only there, so while any is, the times must be written or
    /// the SET is not acknowledged (after a restart its identity would be
    /// allowed once the entry's writer withdrew); without any, unwritten
    /// times only fail closed, and are a warning.
    fn persist(&self, entries: &Entries, revoked: bool, held: bool) -> Result<(), SinkError> {
        if revoked {
            let text = Self::render(entries)?;
            // What `celador serve` would refuse is never written: it
            // would keep its last good list, and every later revocation
            // would wait behind the bad entry.
            crate::engine::revocations::Revocations::parse(&text, &self.path)
                .map_err(|e| SinkError(format!("a revocation would not load: {e}")))?;
            write(&self.path, &text)?;
        }
        if !(revoked || held) {
            return Ok(());
        }
        // After the file: times it does not hold are never used.
        match write(&EventTimes::path(&self.path), &EventTimes::render(entries)) {
            Err(e) if held || entries.held.values().any(|e| e.reason.is_some()) => Err(e),
            Err(e) => {
                tracing::warn!("the revocations' event times are not kept: {e}");
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }
}

impl Sink for FileSink {
    fn apply<'a>(&'a self, outcomes: &'a [Outcome]) -> Applying<'a> {
        Box::pin(async move {
            // Written under the lock, so that files reach the disk in the
            // order their states were made; a small file, written at the
            // rate security events arrive, not on any request path.
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            let mut risks = self
                .risks
                .as_ref()
                .map(|r| r.lock().unwrap_or_else(|p| p.into_inner()));
            let now = SystemTime::now();
            let horizon = self
                .order_window
                .map(|w| crate::engine::time::saturating_sub(now, w));
            if let Some(horizon) = horizon {
                entries.prune(horizon);
            }
            let (mut kept, mut risk_changed, mut revoked, mut held) =
                (Vec::new(), false, false, false);
            for outcome in outcomes {
                if let Outcome::Actions(provenance, actions) = outcome {
                    for action in actions {
                        let done = match (action, risks.as_deref_mut()) {
                            (
                                Action::Risk {
                                    target,
                                    level,
                                    reason,
                                },
                                Some(file),
                            ) => {
                                let done =
                                    file.record(provenance, (target, *level, reason.as_ref()), now);
                                risk_changed |= done == Kept::Applied;
                                done
                            }
                            _ => {
                                let done = Self::record(&mut entries, provenance, action, horizon);
                                revoked |= done == Kept::Applied;
                                held |= done == Kept::Held;
                                done
                            }
                        };
                        kept.push(done);
                    }
                }
            }
            if let (true, Some(file)) = (risk_changed, risks.as_deref_mut()) {
                let text = file.render(now)?;
                write(&file.path, &text)?;
            }
            self.persist(&entries, revoked, held)?;
            Ok(kept)
        })
    }
}

mod risks;

#[cfg(test)]
mod tests;
