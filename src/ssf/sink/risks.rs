//! Risk levels in a file, for a receiver without a governance store: the
//! risks file `celador serve` watches (`governance.risks` in its config), written
//! whole and atomically like the revocations file.
//!
//! Data flow: [`super::FileSink`] hands each risk action here
//! ([`RiskFile::record`]: the later event about a subject wins, one whose
//! risk had lapsed on arrival is not kept; one about a subject new to a
//! transmitter that holds its `max_risks` takes the place of its lowest
//! entry if that is lower, and is otherwise not kept), then
//! [`RiskFile::render`]s the
//! entries still in force, checked with the parser `celador serve` uses
//! ([`Risks::parse`]) before the file is written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::super::event::{Provenance, RiskLevel};
use super::super::subject::Target;
use super::{Kept, RiskCap, SinkError};
use crate::engine::risks::Risks;
use crate::engine::time::{parse_rfc3339, rfc3339};
use crate::sources::fleet::risks::risk_field;

/// One entry of the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spiffe_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spiffe_id_prefix: Option<String>,
    level: String,
    since: String,
    expires: String,
    source: String,
    #[serde(default)]
    event: String,
    #[serde(default)]
    jti: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct File {
    risks: Vec<Line>,
}

/// The risks file and its entries, by subject, with their event time.
#[derive(Debug)]
pub(super) struct RiskFile {
    pub(super) path: PathBuf,
    expiry: Duration,
    cap: RiskCap,
    entries: BTreeMap<String, (SystemTime, Line)>,
}

impl RiskFile {
    /// The file at `path`, risk levels lasting `expiry` after their event;
    /// its entries kept when it exists (a restarted receiver forgets no
    /// risk), an error when it exists and does not load.
    pub(super) fn open(path: &Path, expiry: Duration, cap: RiskCap) -> Result<RiskFile, String> {
        let mut entries = BTreeMap::new();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                Risks::parse(&text, path)
                    .map_err(|e| format!("the risks file cannot be loaded: {e}"))?;
                let file: File = crate::engine::yaml::from_str(&text, path)
                    .map_err(|e| format!("the risks file cannot be loaded: {}", e.rendered))?;
                for line in file.risks {
                    let since = parse_rfc3339(&line.since).unwrap_or(SystemTime::UNIX_EPOCH);
                    let key = match (&line.spiffe_id, &line.spiffe_id_prefix) {
                        (Some(id), _) => format!("spiffe_id:{id}"),
                        (None, Some(p)) => format!("spiffe_id_prefix:{p}"),
                        (None, None) => continue,
                    };
                    let key = risk_field(&line.source, &line.event, &key);
                    entries.insert(key, (since, line));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        }
        Ok(RiskFile {
            path: path.to_owned(),
            expiry,
            cap,
            entries,
        })
    }

    /// Records the risk `level` of `target` that `provenance` reports.
    pub(super) fn record(
        &mut self,
        provenance: &Provenance,
        (target, level, reason): (&Target, RiskLevel, Option<&String>),
        now: SystemTime,
    ) -> Kept {
        // One entry per transmitter, kind and subject: a transmitter
        // replaces its own report of the same kind only.
        let source = &provenance.transmitter;
        let (subject, spiffe_id, spiffe_id_prefix) = match target {
            Target::Id(id) => (format!("spiffe_id:{id}"), Some(id.clone()), None),
            Target::Prefix(p) => {
                let p = p.trim_end_matches('/').to_owned();
                (format!("spiffe_id_prefix:{p}"), None, Some(p))
            }
            Target::JwtId(_) => return Kept::Unsupported,
        };
        let key = risk_field(source, &provenance.event, &subject);
        let expires = provenance.at.checked_add(self.expiry);
        if expires.is_none_or(|t| t <= now) {
            return Kept::Lapsed;
        }
        match self.entries.get(&key) {
            Some((at, _)) if *at > provenance.at => return Kept::Superseded,
            Some(_) => {}
            // A subject new to this transmitter: within its cap, counting
            // its entries still in force, or in place of a lower one.
            None => {
                self.drop_lapsed(now);
                if !self.room_for(source, level) {
                    return Kept::Capped;
                }
            }
        }
        let line = Line {
            spiffe_id,
            spiffe_id_prefix,
            level: level.as_str().to_owned(),
            since: rfc3339(provenance.at),
            expires: rfc3339(expires.unwrap_or(now)),
            source: provenance.transmitter.clone(),
            event: provenance.event.clone(),
            jti: provenance.jti.clone(),
            reason: reason.cloned(),
        };
        self.entries.insert(key, (provenance.at, line));
        Kept::Applied
    }

    /// Whether `source` may hold one entry more at `level`: below its cap,
    /// or at it with an entry of a lower level, which is dropped (of the
    /// lowest, the one that lapses first): at the cap a "high" still
    /// replaces a routine "low", and only a transmitter whose every entry
    /// is at least as high is refused.
    fn room_for(&mut self, source: &str, level: RiskLevel) -> bool {
        let mut held = 0u64;
        let mut lowest: Option<(RiskLevel, SystemTime, &String)> = None;
        for (key, (_, line)) in &self.entries {
            if line.source != source {
                continue;
            }
            held += 1;
            let Some(mine) = stored_level(&line.level) else {
                continue;
            };
            let lapses = parse_rfc3339(&line.expires).unwrap_or(SystemTime::UNIX_EPOCH);
            if lowest.is_none_or(|(l, t, _)| (mine, lapses) < (l, t)) {
                lowest = Some((mine, lapses, key));
            }
        }
        if held < self.cap.of(source) {
            return true;
        }
        match lowest {
            Some((l, _, key)) if l < level => {
                let key = key.clone();
                self.entries.remove(&key);
                tracing::info!(transmitter = %source, removed = %crate::engine::redaction::text(&key), "the transmitter holds its max_risks risk levels: this one takes the place of its lowest (of those, the one that lapses first), removed");
                true
            }
            _ => false,
        }
    }

    /// Forgets the entries lapsed at `now`.
    fn drop_lapsed(&mut self, now: SystemTime) {
        self.entries
            .retain(|_, (_, line)| parse_rfc3339(&line.expires).is_ok_and(|t| t > now));
    }

    /// The file's text with the entries in force at `now` (lapsed ones
    /// dropped), checked as `celador serve` will load it.
    pub(super) fn render(&mut self, now: SystemTime) -> Result<String, SinkError> {
        self.drop_lapsed(now);
        let lines: Vec<&Line> = self.entries.values().map(|(_, l)| l).collect();
        let body = serde_json::to_string_pretty(&serde_json::json!({ "risks": lines }))
            .map_err(|e| SinkError(format!("cannot write the risk levels: {e}")))?;
        let text = format!(
            "# Written by celador signals serve from Shared Signals events; edits are overwritten.\n{body}\n"
        );
        Risks::parse(&text, &self.path)
            .map_err(|e| SinkError(format!("a risk level would not load: {e}")))?;
        Ok(text)
    }
}

/// The level a line of the file names (the file is checked on load and
/// write, so it names one).
fn stored_level(name: &str) -> Option<RiskLevel> {
    match name {
        "low" => Some(RiskLevel::Low),
        "medium" => Some(RiskLevel::Medium),
        "high" => Some(RiskLevel::High),
        _ => None,
    }
}
