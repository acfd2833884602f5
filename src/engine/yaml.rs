//! YAML reading for every file celador loads (config, rules, test suites).
//!
//! One place decides the YAML library (serde-saphyr: maintained, strict,
//! with locations) and how its errors read: the file name, line and column,
//! and a snippet of the offending line.

use std::path::Path;

use serde::de::DeserializeOwned;

/// A YAML document that does not fit the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{rendered}")]
pub struct YamlError {
    /// 1-based line of the problem, 0 when unknown.
    pub line: u64,
    /// 1-based column of the problem, 0 when unknown.
    pub column: u64,
    /// The problem alone, without location or snippet.
    pub message: String,
    /// The full message, with the file, location and a snippet.
    pub rendered: String,
}

/// Deserializes `text`, read from `path` (named in errors).
pub fn from_str<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, YamlError> {
    serde_saphyr::from_str(text).map_err(|e| {
        let name = path.display().to_string();
        let options = serde_saphyr::render_options! { source_name: Some(name.as_str()) };
        let location = e.location();
        let plain = e.without_snippet().to_string();
        // The plain rendering starts with "error: line L column C: ".
        let message = plain
            .split_once(": ")
            .and_then(|(_, rest)| rest.split_once(": ").map(|(_, m)| m.to_owned()))
            .unwrap_or(plain);
        YamlError {
            line: location.map_or(0, |l| l.line()),
            column: location.map_or(0, |l| l.column()),
            message,
            rendered: e.render_with_options(options),
        }
    })
}
