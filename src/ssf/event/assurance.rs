//! CAEP `assurance-level-change` turned into a risk level: the receiver's
//! `assurance_levels` table says, by `namespace` and `current_level`, which
//! risk level an identity now authenticated at that level has.
//!
//! Data flow: [`super::Mapping::apply`] hands each assurance event here
//! ([`Assurance::risk`]) -> a [`RiskLevel`] and the reason recorded with
//! it, or the reason the event changes nothing (a namespace or level the
//! table does not name: celador never guesses a level), or `invalid_request`
//! for an event that breaks CAEP 1.0 §3.4 (no `namespace`, no
//! `current_level`, a `change_direction` other than `increase`/`decrease`).
//!
//! Defaults: `NIST-AAL` (NIST SP 800-63B authentication assurance, as
//! CAEP's own example spells it): `nist-aal1` (one factor) `high`,
//! `nist-aal2` (two factors) `medium`, `nist-aal3` (hardware-bound,
//! phishing-resistant) `low`. Other namespaces (`RFC8176`'s methods,
//! `NIST-IAL`, a custom one) have no default: their levels say nothing
//! celador can rank without the operator. A namespace in the config
//! replaces its defaults whole; names match without regard to ASCII case.

use std::collections::{BTreeMap, HashMap};

use super::{Event, RiskLevel, string, truncate};
use crate::ssf::set::SetError;

/// The `assurance_levels` table: namespace -> level -> risk level, keys
/// lowercased.
#[derive(Debug, Clone)]
pub struct Assurance {
    table: HashMap<String, HashMap<String, RiskLevel>>,
}

impl Default for Assurance {
    fn default() -> Self {
        let aal = [
            ("nist-aal1", RiskLevel::High),
            ("nist-aal2", RiskLevel::Medium),
            ("nist-aal3", RiskLevel::Low),
        ];
        let levels = aal.into_iter().map(|(l, r)| (l.to_owned(), r)).collect();
        Assurance {
            table: HashMap::from([("nist-aal".to_owned(), levels)]),
        }
    }
}

impl Assurance {
    /// The defaults, with each namespace of `overrides` replacing its own;
    /// every problem at once (an empty name, two names equal but for case).
    pub fn new(
        overrides: &BTreeMap<String, BTreeMap<String, RiskLevel>>,
    ) -> Result<Assurance, String> {
        let mut out = Assurance::default();
        let mut problems = Vec::new();
        let mut seen = HashMap::new();
        for (namespace, levels) in overrides {
            let key = namespace.trim().to_ascii_lowercase();
            if key.is_empty() {
                problems.push("assurance_levels: a namespace name is empty".to_owned());
            }
            if let Some(other) = seen.insert(key.clone(), namespace) {
                problems.push(format!(
                    "assurance_levels: {other:?} and {namespace:?} are one namespace (names match without regard to case)"
                ));
            }
            let mut table = HashMap::new();
            for (level, risk) in levels {
                let name = level.trim().to_ascii_lowercase();
                if name.is_empty() {
                    problems.push(format!(
                        "assurance_levels.{namespace}: a level name is empty"
                    ));
                }
                if table.insert(name, *risk).is_some() {
                    problems.push(format!(
                        "assurance_levels.{namespace}: level {level:?} is given twice (names match without regard to case)"
                    ));
                }
            }
            out.table.insert(key, table);
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(problems.join("\n"))
        }
    }

    /// The risk level `event` reports and the reason recorded with it; or
    /// why it changes nothing (`Ok(Err(why))`); or why it breaks CAEP.
    pub(super) fn risk(
        &self,
        event: &Event,
    ) -> Result<Result<(RiskLevel, String), String>, SetError> {
        let invalid = |why: &str| super::invalid(&event.kind, why);
        let namespace =
            string(event, "namespace")?.ok_or_else(|| invalid("namespace is required"))?;
        let current =
            string(event, "current_level")?.ok_or_else(|| invalid("current_level is required"))?;
        let previous = string(event, "previous_level")?;
        let direction = string(event, "change_direction")?;
        if let Some(d) = direction
            && !matches!(d, "increase" | "decrease")
        {
            return Err(invalid(&format!(
                "change_direction {d:?} is not increase or decrease"
            )));
        }
        let Some(levels) = self.table.get(&namespace.trim().to_ascii_lowercase()) else {
            return Ok(Err(format!(
                "assurance namespace {:?} is not in assurance_levels; celador does not guess a risk level for it",
                truncate(namespace)
            )));
        };
        let Some(risk) = levels.get(&current.trim().to_ascii_lowercase()) else {
            return Ok(Err(format!(
                "assurance level {:?} of namespace {:?} is not in assurance_levels; celador does not guess a risk level for it",
                truncate(current),
                truncate(namespace)
            )));
        };
        let mut reason = format!("assurance {} {}", truncate(namespace), truncate(current));
        match (direction, previous) {
            (Some(d), Some(p)) => reason.push_str(&format!(" ({d} from {})", truncate(p))),
            (Some(d), None) => reason.push_str(&format!(" ({d})")),
            (None, Some(p)) => reason.push_str(&format!(" (from {})", truncate(p))),
            (None, None) => {}
        }
        Ok(Ok((*risk, reason)))
    }
}
