//! Risk levels security tools reported, by SPIFFE ID or prefix, each until
//! it expires: what rules read as `signals.risk`.
//!
//! Data flow: the Shared Signals receiver (`celador signals serve`) turns a
//! CAEP `risk-level-change` into an entry of the fleet's governance store;
//! each sidecar's replica reads the store's entries into a [`Risks`] and
//! publishes it in the live-state store's snapshot; the engine looks the
//! caller up in it ([`Risks::find`]) before rules run. An entry past its
//! `expires` is out of force at once, without a publish: the lookup
//! compares it with the check's time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::identity::{Identity, SpiffeId};
use super::signals::{Risk, RiskLevel};
use super::time::parse_rfc3339;

/// A risks file: what `celador signals serve` writes without a governance
/// store, and `celador serve` watches (`governance.risks` in its config).
///
/// ```yaml
/// risks:
///   - spiffe_id: spiffe://example.org/ns/pay/sa/api    # or spiffe_id_prefix
///     level: high
///     since: 2026-11-22T10:00:00Z
///     expires: 2026-11-23T10:00:00Z
///     source: https://idp.example.com/
///     event: https://schemas.openid.net/secevent/caep/event-type/risk-level-change
///     jti: r-1
/// ```
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RisksFile {
    risks: Vec<RiskSpec>,
}

/// One entry of a risks file.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RiskSpec {
    #[serde(default)]
    spiffe_id: Option<String>,
    #[serde(default)]
    spiffe_id_prefix: Option<String>,
    level: RiskLevel,
    since: String,
    expires: String,
    source: String,
    #[serde(default)]
    event: String,
    #[serde(default)]
    jti: String,
    #[serde(default)]
    #[allow(dead_code)] // Kept for people reading the file.
    reason: Option<String>,
}

/// A risk and until when it is in force.
#[derive(Debug, Clone, PartialEq, Eq)]
struct InForce {
    risk: Arc<Risk>,
    expires: SystemTime,
}

/// The risk levels in force, by SPIFFE ID and by prefix, one per source
/// (transmitter) for each: a source replaces its own report only, so one
/// tool cannot lower or clear what another reported.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Risks {
    ids: HashMap<String, Vec<InForce>>,
    /// Prefixes without their trailing `/`.
    prefixes: Vec<(String, InForce)>,
}

impl Risks {
    /// Adds the risk of `id` (a SPIFFE ID, or a prefix when it ends in
    /// `/`), in force until `expires`. Of two for the same subject from the
    /// same source and event type, the one reported later (`since`) is
    /// kept; reports of other sources or event types are kept beside it.
    pub fn insert(&mut self, id: &str, risk: Arc<Risk>, expires: SystemTime) {
        let entry = InForce { risk, expires };
        // A source's reports of different event types (a risk level and
        // an assurance level) are kept apart: the highest applies.
        let same = |old: &InForce| {
            old.risk.source == entry.risk.source && old.risk.event == entry.risk.event
        };
        if let Some(prefix) = id.strip_suffix('/') {
            let found = self
                .prefixes
                .iter_mut()
                .find(|(p, old)| p == prefix && same(old));
            match found {
                Some((_, old)) if entry.risk.since >= old.risk.since => *old = entry,
                Some(_) => {}
                None => self.prefixes.push((prefix.to_owned(), entry)),
            }
        } else {
            let reports = self.ids.entry(id.to_owned()).or_default();
            match reports.iter_mut().find(|old| same(old)) {
                Some(old) if entry.risk.since >= old.risk.since => *old = entry,
                Some(_) => {}
                None => reports.push(entry),
            }
        }
    }

    /// Parses the risks file `text` (at `path`); every problem is reported
    /// at once, and the file is refused whole.
    pub fn parse(text: &str, path: &std::path::Path) -> Result<Risks, String> {
        Risks::parse_placed(text, path).map_err(|problems| {
            let lines: Vec<String> = problems
                .iter()
                .map(|d| match d.line {
                    0 => format!("{}: {}", path.display(), d.message),
                    line => format!("{}:{line}:{}: {}", path.display(), d.column, d.message),
                })
                .collect();
            lines.join("\n")
        })
    }

    /// [`Risks::parse`], each problem a [`Diagnostic`] placed at its entry
    /// (or where the YAML or JSON goes wrong), as `celador check` shows the
    /// other governance files'.
    pub fn parse_placed(
        text: &str,
        path: &std::path::Path,
    ) -> Result<Risks, Vec<super::policy::Diagnostic>> {
        use super::policy::{Diagnostic, Severity};
        let place = |line: u64, column: u64| {
            (
                usize::try_from(line).unwrap_or(0),
                usize::try_from(column).unwrap_or(0),
            )
        };
        let file: RisksFile = super::yaml::from_str(text, path).map_err(|e| {
            let at = place(e.line, e.column);
            vec![Diagnostic::at(text, path, Severity::Error, at, e.message)]
        })?;
        // Where each entry starts, for its problems.
        let starts: Vec<(usize, usize)> = super::yaml::from_str::<EntryPlaces>(text, path)
            .map(|f| {
                (f.risks.iter())
                    .map(|e| place(e.referenced.line(), e.referenced.column()))
                    .collect()
            })
            .unwrap_or_default();
        let (risks, problems) = file.read();
        if problems.is_empty() {
            return Ok(risks);
        }
        Err(problems
            .into_iter()
            .map(|(i, message)| {
                let at = starts.get(i).copied().unwrap_or((0, 0));
                Diagnostic::at(text, path, Severity::Error, at, message)
            })
            .collect())
    }
}

/// Where each entry of a risks file starts.
#[derive(serde::Deserialize)]
struct EntryPlaces {
    risks: Vec<serde_saphyr::Spanned<serde::de::IgnoredAny>>,
}

impl RisksFile {
    /// The risks of the entries without a problem, and each other entry's
    /// problem by index (`risk N: ...`).
    fn read(&self) -> (Risks, Vec<(usize, String)>) {
        let file = self;
        let mut out = Risks::default();
        let mut problems = Vec::new();
        for (i, spec) in file.risks.iter().enumerate() {
            let entry = || -> Result<(String, Arc<Risk>, SystemTime), String> {
                let id = match (&spec.spiffe_id, &spec.spiffe_id_prefix) {
                    (Some(id), None) => id.clone(),
                    (None, Some(prefix)) => format!("{}/", prefix.trim_end_matches('/')),
                    _ => return Err("give exactly one of spiffe_id and spiffe_id_prefix".into()),
                };
                SpiffeId::parse(id.trim_end_matches('/')).map_err(|e| format!("{id:?}: {e}"))?;
                let time = |name: &str, text: &str| {
                    parse_rfc3339(text).map_err(|e| format!("{name}: {e}"))
                };
                if spec.source.trim().is_empty() {
                    return Err("`source` is empty: name the transmitter".into());
                }
                let risk = Risk {
                    level: spec.level,
                    since: time("since", &spec.since)?,
                    source: spec.source.clone(),
                    event: spec.event.clone(),
                    jti: spec.jti.clone(),
                };
                Ok((id, Arc::new(risk), time("expires", &spec.expires)?))
            };
            match entry() {
                Ok((id, risk, expires)) => out.insert(&id, risk, expires),
                Err(problem) => problems.push((i, format!("risk {}: {problem}", i + 1))),
            }
        }
        (out, problems)
    }
}

impl Risks {
    /// Every risk of `first` and of `second` (of two about one subject, the
    /// later reported).
    pub fn merged(first: &Risks, second: &Risks) -> Risks {
        let mut out = first.clone();
        for (id, reports) in &second.ids {
            for e in reports {
                out.insert(id, Arc::clone(&e.risk), e.expires);
            }
        }
        for (prefix, e) in &second.prefixes {
            out.insert(&format!("{prefix}/"), Arc::clone(&e.risk), e.expires);
        }
        out
    }

    /// How many reports there are (expired ones included).
    pub fn len(&self) -> usize {
        self.ids.values().map(Vec::len).sum::<usize>() + self.prefixes.len()
    }

    /// Whether no subject has a risk.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The risk of `identity` at `now`: of every entry in force naming one
    /// of its verified IDs (the X.509-SVID's and the JWT-SVID's), exactly
    /// or by prefix, the highest level, and of those the latest reported.
    /// Several tools may report about one workload; the worst report in
    /// force is the one a rule must see.
    pub fn find(&self, identity: &Identity, now: SystemTime) -> Option<Arc<Risk>> {
        if self.is_empty() {
            return None;
        }
        let ids = [
            identity.source.as_ref().map(|s| s.id.as_str()),
            identity.token.as_ref().map(|t| t.id.as_str()),
        ];
        let under = |id: &str, prefix: &str| {
            id.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        ids.into_iter()
            .flatten()
            .flat_map(|id| {
                let exact = self.ids.get(id).into_iter().flatten();
                let prefixes = self
                    .prefixes
                    .iter()
                    .filter(move |(p, _)| under(id, p))
                    .map(|(_, e)| e);
                exact.into_iter().chain(prefixes)
            })
            .filter(|e| e.expires > now)
            .max_by_key(|e| (e.risk.level, e.risk.since))
            .map(|e| Arc::clone(&e.risk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{CertificateFacts, X509Svid};
    use std::time::Duration;

    fn caller(id: &str) -> Identity {
        Identity {
            source: Some(Arc::new(X509Svid {
                id: SpiffeId::parse(id).unwrap(),
                not_before: SystemTime::UNIX_EPOCH,
                not_after: SystemTime::UNIX_EPOCH,
                chain_not_after: SystemTime::UNIX_EPOCH,
                certificate: CertificateFacts::default(),
            })),
            ..Identity::default()
        }
    }

    fn risk(level: RiskLevel, since: u64, source: &str) -> Arc<Risk> {
        Arc::new(Risk {
            level,
            since: SystemTime::UNIX_EPOCH + Duration::from_secs(since),
            source: source.into(),
            event: String::new(),
            jti: format!("{source}-{since}"),
        })
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn a_source_replaces_only_its_own_report() {
        let mut risks = Risks::default();
        let id = "spiffe://a/ns/ci/sa/builder";
        risks.insert(id, risk(RiskLevel::High, 100, "siem"), at(1000));
        // Another tool's later, lower report does not lower it.
        risks.insert(id, risk(RiskLevel::Low, 200, "ci"), at(1000));
        let who = caller(id);
        assert_eq!(risks.find(&who, at(300)).unwrap().source, "siem");
        assert_eq!(risks.find(&who, at(300)).unwrap().level, RiskLevel::High);
        // The same tool lowers its own report.
        risks.insert(id, risk(RiskLevel::Low, 300, "siem"), at(1000));
        assert_eq!(risks.find(&who, at(400)).unwrap().level, RiskLevel::Low);
        assert_eq!(risks.len(), 2);
        // Merged, both sources' reports are kept.
        let mut other = Risks::default();
        other.insert(id, risk(RiskLevel::Medium, 50, "idp"), at(1000));
        let merged = Risks::merged(&risks, &other);
        assert_eq!(merged.find(&who, at(400)).unwrap().level, RiskLevel::Medium);
    }

    #[test]
    fn a_risk_names_its_id_or_prefix_until_it_expires_and_the_worst_wins() {
        let mut risks = Risks::default();
        assert_eq!(risks.find(&caller("spiffe://a/ns/x/sa/y"), at(0)), None);
        risks.insert(
            "spiffe://a/ns/x/sa/y",
            risk(RiskLevel::Medium, 100, "idp"),
            at(200),
        );
        risks.insert(
            "spiffe://a/ns/x/",
            risk(RiskLevel::High, 50, "siem"),
            at(150),
        );
        let y = caller("spiffe://a/ns/x/sa/y");
        // Both in force: the high one.
        assert_eq!(risks.find(&y, at(120)).unwrap().source, "siem");
        // The prefix's expired: the medium one, until it expires too.
        assert_eq!(risks.find(&y, at(150)).unwrap().level, RiskLevel::Medium);
        assert_eq!(risks.find(&y, at(200)), None);
        // A prefix covers IDs under it, not IDs that merely start alike.
        assert!(
            risks
                .find(&caller("spiffe://a/ns/x/sa/z"), at(120))
                .is_some()
        );
        assert_eq!(risks.find(&caller("spiffe://a/ns/xy/sa/z"), at(120)), None);
        assert_eq!(risks.find(&caller("spiffe://b/ns/x/sa/y"), at(120)), None);
    }

    #[test]
    fn of_two_reports_about_one_subject_the_later_is_kept() {
        let mut risks = Risks::default();
        let id = "spiffe://a/ns/x/sa/y";
        risks.insert(id, risk(RiskLevel::High, 100, "idp"), at(500));
        risks.insert(id, risk(RiskLevel::Low, 90, "idp"), at(500));
        assert_eq!(
            risks.find(&caller(id), at(120)).unwrap().level,
            RiskLevel::High
        );
        risks.insert(id, risk(RiskLevel::Low, 110, "idp"), at(500));
        assert_eq!(
            risks.find(&caller(id), at(120)).unwrap().level,
            RiskLevel::Low
        );
        assert_eq!(risks.len(), 1);
    }
}

#[cfg(test)]
mod file_tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_risks_file_loads_or_is_refused_naming_every_problem() {
        let text = "risks:\n  - {spiffe_id: spiffe://a/ns/x/sa/y, level: high, since: 2026-11-22T10:00:00Z, expires: 2026-11-23T10:00:00Z, source: https://idp.example.com/, jti: r-1}\n  - {spiffe_id_prefix: spiffe://a/ns/z, level: low, since: 2026-11-22T10:00:00Z, expires: 2026-11-23T10:00:00Z, source: idp}\n";
        let risks = Risks::parse(text, Path::new("risks.yaml")).unwrap();
        assert_eq!(risks.len(), 2);
        let merged = Risks::merged(&risks, &Risks::default());
        assert_eq!(merged, risks);
        let bad = "risks:\n  - {spiffe_id: nope, level: high, since: 2026-11-22T10:00:00Z, expires: x, source: s}\n  - {level: low, since: 2026-11-22T10:00:00Z, expires: 2026-11-23T10:00:00Z, source: s}\n";
        let error = Risks::parse(bad, Path::new("risks.yaml")).unwrap_err();
        assert!(
            error.contains("risk 1") && error.contains("risk 2"),
            "{error}"
        );
        assert!(Risks::parse("risks:\n  - {level: severe}\n", Path::new("r")).is_err());
    }
}
