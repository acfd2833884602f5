//! A watched governance file in the config: `grants: grants.yaml`, or
//! `grants: {path: grants.yaml, optional: true}` where the file may be
//! missing (a key absent from an optional ConfigMap, or the ConfigMap
//! itself): missing then means "no entries", and a file that appears later
//! is loaded like any change (see [`crate::sources::files`]).

use std::path::PathBuf;

use serde::Deserialize;

/// A governance file: its path, and whether it may be missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedFile {
    /// The file, relative to the config's directory.
    pub path: PathBuf,
    /// A missing file means no entries (not an error).
    pub optional: bool,
}

/// The long form, with its keys checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Long {
    path: PathBuf,
    #[serde(default)]
    optional: bool,
}

// Hand-written rather than `#[serde(untagged)]`: an untagged enum reports
// any mistake as "did not match any variant", hiding the unknown key.
impl<'de> Deserialize<'de> for WatchedFile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = WatchedFile;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a path, or {path: PATH, optional: true}")
            }
            fn visit_str<E: serde::de::Error>(self, path: &str) -> Result<WatchedFile, E> {
                Ok(WatchedFile {
                    path: PathBuf::from(path),
                    optional: false,
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<WatchedFile, A::Error> {
                let long = Long::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(WatchedFile {
                    path: long.path,
                    optional: long.optional,
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}
