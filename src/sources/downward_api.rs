//! The workload's details from the Downward API: a start-up source.
//!
//! Data flow: read once at start, from environment variables (set by the
//! Downward API's `fieldRef`) and from a Downward API volume's `labels` and
//! `annotations` files, into the engine's [`Workload`], which rules see as
//! `workload`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::engine::workload::Workload;

/// Where the workload's details come from.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSettings {
    /// A Downward API volume with `labels` and `annotations` files.
    #[serde(default)]
    pub downward_api: Option<PathBuf>,
    /// The variable holding the namespace.
    #[serde(default = "default_namespace_env")]
    pub namespace_env: String,
    /// The variable holding the pod name.
    #[serde(default = "default_name_env")]
    pub name_env: String,
    /// The variable holding the service account name.
    #[serde(default = "default_service_account_env")]
    pub service_account_env: String,
}

fn default_namespace_env() -> String {
    "POD_NAMESPACE".into()
}
fn default_name_env() -> String {
    "POD_NAME".into()
}
fn default_service_account_env() -> String {
    "POD_SERVICE_ACCOUNT".into()
}

impl Default for WorkloadSettings {
    fn default() -> Self {
        WorkloadSettings {
            downward_api: None,
            namespace_env: default_namespace_env(),
            name_env: default_name_env(),
            service_account_env: default_service_account_env(),
        }
    }
}

/// Why the workload could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// The Downward API directory is missing.
    #[error("workload.downward_api: {path} is not a directory")]
    NotADirectory {
        /// The configured path.
        path: PathBuf,
    },
    /// A file could not be read.
    #[error("workload.downward_api: cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line is not `key="value"`.
    #[error("workload.downward_api: {path}:{line}: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Reads the workload as `settings` say, from `env` (the process
/// environment in production).
pub fn load(
    settings: &WorkloadSettings,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Workload, WorkloadError> {
    let mut workload = Workload {
        namespace: env(&settings.namespace_env).unwrap_or_default(),
        name: env(&settings.name_env).unwrap_or_default(),
        service_account: env(&settings.service_account_env).unwrap_or_default(),
        ..Workload::default()
    };
    if let Some(dir) = &settings.downward_api {
        if !dir.is_dir() {
            return Err(WorkloadError::NotADirectory { path: dir.clone() });
        }
        workload.labels = read_map(&dir.join("labels"))?;
        workload.annotations = read_map(&dir.join("annotations"))?;
    }
    Ok(workload)
}

/// A Downward API map file; a missing file is an empty map, since a volume
/// projects only the items it lists.
fn read_map(path: &Path) -> Result<HashMap<String, String>, WorkloadError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(source) => {
            return Err(WorkloadError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    parse_map(&text).map_err(|(line, reason)| WorkloadError::Syntax {
        path: path.to_owned(),
        line,
        reason,
    })
}

/// Parses the kubelet's `key="value"` lines (values quoted as Go's `%q`).
pub fn parse_map(text: &str) -> Result<HashMap<String, String>, (usize, String)> {
    let mut map = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (key, quoted) = line
            .split_once('=')
            .ok_or_else(|| (i + 1, format!("expected key=\"value\", found {line:?}")))?;
        let value = unquote_go(quoted).map_err(|reason| (i + 1, reason))?;
        map.insert(key.to_owned(), value);
    }
    Ok(map)
}

fn unquote_go(quoted: &str) -> Result<String, String> {
    let inner = quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .ok_or_else(|| format!("the value {quoted:?} is not double-quoted"))?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let escaped = chars.next().ok_or("a value ends with a lone backslash")?;
        match escaped {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'a' => out.push('\u{7}'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'v' => out.push('\u{b}'),
            '\\' | '"' | '\'' => out.push(escaped),
            'x' | 'u' | 'U' => {
                let digits = match escaped {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let hex: String = chars.by_ref().take(digits).collect();
                let code = u32::from_str_radix(&hex, 16)
                    .ok()
                    .filter(|_| hex.len() == digits)
                    .ok_or_else(|| format!("invalid escape \\{escaped}{hex}"))?;
                out.push(
                    char::from_u32(code)
                        .ok_or_else(|| format!("invalid code point \\{escaped}{hex}"))?,
                );
            }
            other => return Err(format!("unknown escape \\{other}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_label_files_are_parsed_with_go_escapes() {
        let text = "app=\"payments\"\nteam=\"a \\\"quoted\\\" \\u00e9 name\"\nempty=\"\"\n";
        let map = parse_map(text).unwrap();
        assert_eq!(map["app"], "payments");
        assert_eq!(map["team"], "a \"quoted\" é name");
        assert_eq!(map["empty"], "");
    }

    #[test]
    fn malformed_lines_name_their_line() {
        assert_eq!(parse_map("a=\"1\"\nbroken\n").unwrap_err().0, 2);
        assert_eq!(parse_map("a=1\n").unwrap_err().0, 1);
        assert!(parse_map("a=\"\\q\"").is_err());
    }

    #[test]
    fn the_workload_comes_from_the_named_variables_and_the_volume() {
        let dir = std::env::temp_dir().join(format!("celador-workload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("labels"), "app=\"api\"\n").unwrap();
        let settings = WorkloadSettings {
            downward_api: Some(dir.clone()),
            ..WorkloadSettings::default()
        };
        let env = |name: &str| match name {
            "POD_NAMESPACE" => Some("payments".to_owned()),
            "POD_SERVICE_ACCOUNT" => Some("api".to_owned()),
            _ => None,
        };
        let w = load(&settings, env).unwrap();
        assert_eq!(w.namespace, "payments");
        assert_eq!(w.service_account, "api");
        assert_eq!(w.name, "");
        assert_eq!(w.labels["app"], "api");
        assert!(w.annotations.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();

        let missing = WorkloadSettings {
            downward_api: Some(dir),
            ..WorkloadSettings::default()
        };
        assert!(matches!(
            load(&missing, env),
            Err(WorkloadError::NotADirectory { .. })
        ));
    }
}
