//! The kinds of YAML file celador reads, told apart in one place, and the
//! one loader of the kinds the engine parses, whose problems are all
//! [`Diagnostic`]s placed at a line and column.
//!
//! Data flow: `celador serve` knows each file's kind from the config key
//! that names it (`policy`, `governance.grants`, ...) and loads it here;
//! `celador check` is given paths and asks [`FileKind::of`] what each
//! is, then loads the engine's kinds here too (suites and configs are the
//! celador crate's to check). Both therefore report the same problems the
//! same way.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::grants::Grants;
use crate::policy::{Diagnostic, Policy};
use crate::revocations::Revocations;
use crate::risks::Risks;

/// What a YAML file celador reads is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A rules file (`rules:`), enforced or shadow.
    Rules,
    /// A grants file (`grants:`).
    Grants,
    /// A revocations file (`revocations:`).
    Revocations,
    /// A risks file (`risks:`), as `celador signals serve` writes it.
    Risks,
    /// A test suite (`cases:`, or a name ending in `_test.yaml`).
    Suite,
    /// A `celador serve` config (`listen:`, `trust_domains:`, ...).
    Config,
}

impl FileKind {
    /// The kind of the file at `path` holding `text`: a suite by its name
    /// (`*_test.yaml`, as `celador test` finds them), else by its
    /// top-level keys (of the YAML, or of the JSON object that
    /// `celador signals serve` writes); a rules file when nothing else
    /// fits, so that a broken one gets the rules file's diagnostics.
    pub fn of(path: &Path, text: &str) -> FileKind {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.ends_with("_test.yaml") || name.ends_with("_test.yml") {
            return FileKind::Suite;
        }
        let keys = top_level_keys(text);
        let has = |key: &str| keys.iter().any(|k| k == key);
        if has("cases") {
            FileKind::Suite
        } else if has("listen") || has("trust_domains") {
            FileKind::Config
        } else if has("grants") && !has("rules") {
            FileKind::Grants
        } else if has("revocations") && !has("rules") {
            FileKind::Revocations
        } else if has("risks") && !has("rules") {
            FileKind::Risks
        } else {
            FileKind::Rules
        }
    }
}

/// The top-level keys of `text`: a block mapping's unindented keys, or, for
/// a JSON object (JSON is YAML), its members' names; a broken one's are
/// read from its least indented `"name":` lines.
fn top_level_keys(text: &str) -> Vec<String> {
    let significant = text
        .lines()
        .map(str::trim_start)
        .find(|l| !l.is_empty() && !l.starts_with('#'));
    if !significant.is_some_and(|l| l.starts_with('{')) {
        return text
            .lines()
            .filter(|l| !l.starts_with([' ', '\t', '#', '-']) && !l.is_empty())
            .filter_map(|l| l.split_once(':').map(|(key, _)| key.trim_end().to_owned()))
            .collect();
    }
    // Comment lines (the header the receiver writes) are not JSON.
    let json: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    if let Ok(object) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&json) {
        return object.keys().cloned().collect();
    }
    let members: Vec<(usize, &str)> = json
        .lines()
        .filter_map(|l| {
            let rest = l.trim_start().strip_prefix('"')?;
            let (key, after) = rest.split_once('"')?;
            after
                .trim_start()
                .starts_with(':')
                .then_some((l.len() - l.trim_start().len(), key))
        })
        .collect();
    let outer = members.iter().map(|(indent, _)| *indent).min();
    members
        .iter()
        .filter(|(indent, _)| Some(*indent) == outer)
        .map(|(_, key)| (*key).to_owned())
        .collect()
}

/// A file of a kind the engine reads, loaded.
#[derive(Debug)]
pub enum Loaded {
    /// Rules.
    Rules(Policy),
    /// Grants.
    Grants(Grants),
    /// Revocations.
    Revocations(Revocations),
    /// Risk levels.
    Risks(Risks),
}

impl Loaded {
    /// Warnings found while loading.
    pub fn warnings(&self) -> &[Diagnostic] {
        match self {
            Loaded::Rules(policy) => policy.warnings(),
            Loaded::Grants(grants) => grants.warnings(),
            Loaded::Revocations(_) | Loaded::Risks(_) => &[],
        }
    }
}

/// A file that does not load: every problem found (errors, and any
/// warnings found with them), each placed in the file.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", render(.diagnostics))]
pub struct LoadError {
    /// The problems.
    pub diagnostics: Vec<Diagnostic>,
}

fn render(diagnostics: &[Diagnostic]) -> String {
    let shown: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    shown.join("\n")
}

/// How grants are judged at load: the longest accepted, measured at `now`.
#[derive(Debug, Clone, Copy)]
pub struct GrantLimits {
    /// The longest a grant may last.
    pub max_duration: Duration,
    /// When the file is loaded.
    pub now: SystemTime,
}

/// Loads `text`, the file at `path`, as `kind`: `None` for the kinds the
/// engine does not read (suites, configs).
pub fn load(
    kind: FileKind,
    text: &str,
    path: &Path,
    grants: GrantLimits,
) -> Option<Result<Loaded, LoadError>> {
    let loaded = match kind {
        FileKind::Rules => Policy::parse(text, path)
            .map(Loaded::Rules)
            .map_err(|e| e.diagnostics),
        FileKind::Grants => Grants::parse(text, path, grants.max_duration, grants.now)
            .map(Loaded::Grants)
            .map_err(|e| e.diagnostics),
        FileKind::Revocations => Revocations::parse(text, path)
            .map(Loaded::Revocations)
            .map_err(|e| e.diagnostics),
        FileKind::Risks => Risks::parse_placed(text, path).map(Loaded::Risks),
        FileKind::Suite | FileKind::Config => return None,
    };
    Some(loaded.map_err(|diagnostics| LoadError { diagnostics }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_told_by_its_name_or_its_top_level_keys() {
        let of = |name: &str, text: &str| FileKind::of(Path::new(name), text);
        assert_eq!(of("a_test.yaml", "rules: r.yaml\n"), FileKind::Suite);
        assert_eq!(
            of("s.yaml", "# x\nrules: r.yaml\ncases: []\n"),
            FileKind::Suite
        );
        assert_eq!(of("c.yaml", "listen: 1\npolicy: p\n"), FileKind::Config);
        assert_eq!(
            of("g.yaml", "---\ngrants:\n  - name: x\n"),
            FileKind::Grants
        );
        assert_eq!(of("r.yaml", "revocations: []\n"), FileKind::Revocations);
        assert_eq!(of("p.yaml", "rules:\n  - name: grants\n"), FileKind::Rules);
        assert_eq!(of("p.yaml", "not: yaml: at all"), FileKind::Rules);
        assert_eq!(of("k.yaml", "risks: []\n"), FileKind::Risks);
        // The JSON form `celador signals serve` writes, with its header
        // comment, whole or broken.
        let json = "# Written by celador signals serve\n{\n  \"revocations\": [\n    {\n      \"spiffe_id\": \"spiffe://e.org/a\",\n      \"reason\": \"x\"\n    }\n  ]\n}\n";
        assert_eq!(of("r.yaml", json), FileKind::Revocations);
        assert_eq!(
            of("r.yaml", &json.replace("]\n}", "")),
            FileKind::Revocations
        );
        assert_eq!(of("k.yaml", "{\"risks\": []}"), FileKind::Risks);
        assert_eq!(of("p.yaml", "{\"rules\": []}"), FileKind::Rules);
    }
}
