//! The subject of a SET (an RFC 9493 subject identifier, or an SSF complex
//! subject) resolved to what celador governs: a SPIFFE ID, a SPIFFE ID
//! prefix, or a JWT-SVID's `jti`.
//!
//! Data flow: [`super::event`] asks here for the targets of each event's
//! subject; a `uri` subject that is a SPIFFE ID names itself, the other
//! formats (`iss_sub`, `opaque`, `email`, ...) go through the receiver's
//! configured table ([`Subjects`]). A subject that breaks RFC 9493 is a
//! malformed SET; one the table does not know is accepted and counted as
//! unmapped (SSF 1.0 §9: receivers tolerate events about subjects they do
//! not track).

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::engine::identity::SpiffeId;

/// What a subject resolves to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// One workload identity.
    Id(String),
    /// Every SPIFFE ID under a path (no trailing `/`).
    Prefix(String),
    /// One JWT-SVID, by its `jti` (an SSF `jwt_id` subject).
    JwtId(String),
}

impl Target {
    /// The target as one line of text, e.g. for the audit of an action.
    pub fn describe(&self) -> String {
        match self {
            Target::Id(id) => id.clone(),
            Target::Prefix(prefix) => format!("{prefix}/*"),
            Target::JwtId(jti) => format!("the JWT-SVID with jti {jti}"),
        }
    }
}

/// Why a subject has no target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// It is not a valid subject identifier: the SET is malformed.
    #[error("{0}")]
    Malformed(String),
    /// It is valid, and names nothing celador governs.
    #[error("{0}")]
    Unmapped(String),
}

/// One row of the receiver's `subjects:` table: a subject identifier (one
/// format's members) and the SPIFFE ID or prefix it stands for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectSpec {
    /// The subject: `{format: iss_sub, iss: ..., sub: ...}`, `{format:
    /// opaque, id: ...}`, `{format: email, email: ...}`, ...
    pub subject: Map<String, Value>,
    /// The identity it is.
    #[serde(default)]
    pub spiffe_id: Option<String>,
    /// Or every identity under this prefix.
    #[serde(default)]
    pub spiffe_id_prefix: Option<String>,
}

/// A simple subject as a lookup key: its format and its members' values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key(&'static str, Vec<String>);

/// The receiver's table from subject identifiers to SPIFFE IDs.
#[derive(Debug, Clone, Default)]
pub struct Subjects {
    table: HashMap<Key, Target>,
}

impl Subjects {
    /// The table of `specs`; every problem is reported at once.
    pub fn new(specs: &[SubjectSpec]) -> Result<Subjects, String> {
        let mut table = HashMap::new();
        let mut problems = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            match row(spec) {
                Ok((key, target)) => {
                    if table.insert(key, target).is_some() {
                        problems.push(format!(
                            "subject {}: the same subject is mapped twice",
                            i + 1
                        ));
                    }
                }
                Err(problem) => problems.push(format!("subject {}: {problem}", i + 1)),
            }
        }
        if problems.is_empty() {
            Ok(Subjects { table })
        } else {
            Err(problems.join("\n"))
        }
    }

    /// How many subjects the table maps.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether it maps none.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The targets `subject` names: one for a simple subject, those of each
    /// member for `aliases` and complex subjects (duplicates removed).
    pub fn resolve(&self, subject: &Value) -> Result<Vec<Target>, SubjectError> {
        let Value::Object(subject) = subject else {
            return Err(malformed("a subject identifier is a JSON object"));
        };
        match subject.get("format").and_then(Value::as_str) {
            Some("aliases") => {
                let Some(Value::Array(ids)) = subject.get("identifiers") else {
                    return Err(malformed("an aliases subject needs an identifiers array"));
                };
                if ids.is_empty() {
                    return Err(malformed("an aliases subject's identifiers are empty"));
                }
                self.any_of(ids.iter(), "aliases")
            }
            // SSF 1.0 §3.3: members (user, device, session, application,
            // tenant, ...) that describe one principal.
            Some("complex") => {
                let members = subject.iter().filter(|(k, _)| k.as_str() != "format");
                self.any_of(members.map(|(_, v)| v), "complex")
            }
            Some(_) => self.simple(subject).map(|t| vec![t]),
            None => Err(malformed("the subject identifier has no format")),
        }
    }

    /// The targets of every member that resolves; unmapped when none does.
    fn any_of<'v>(
        &self,
        members: impl Iterator<Item = &'v Value>,
        what: &str,
    ) -> Result<Vec<Target>, SubjectError> {
        let mut targets = Vec::new();
        let mut unmapped = Vec::new();
        for member in members {
            let Value::Object(member) = member else {
                return Err(malformed(format!(
                    "a member of a {what} subject is not an object"
                )));
            };
            if matches!(
                member.get("format").and_then(Value::as_str),
                Some("aliases" | "complex")
            ) {
                return Err(malformed(format!(
                    "a {what} subject's members are simple subjects"
                )));
            }
            match self.simple(member) {
                Ok(target) if !targets.contains(&target) => targets.push(target),
                Ok(_) => {}
                Err(SubjectError::Unmapped(why)) => unmapped.push(why),
                Err(malformed) => return Err(malformed),
            }
        }
        if targets.is_empty() {
            return Err(SubjectError::Unmapped(format!(
                "no member of the {what} subject names an identity: {}",
                unmapped.join("; ")
            )));
        }
        Ok(targets)
    }

    fn simple(&self, subject: &Map<String, Value>) -> Result<Target, SubjectError> {
        let key = key(subject)?;
        if let Key("jwt_id", values) = &key {
            return Ok(Target::JwtId(values.get(1).cloned().unwrap_or_default()));
        }
        if let Key("uri", values) = &key
            && let Some(uri) = values.first()
            && uri.starts_with("spiffe://")
        {
            return SpiffeId::parse(uri)
                .map(|id| Target::Id(id.as_str().to_owned()))
                .map_err(|e| malformed(format!("uri {uri:?} is not a valid SPIFFE ID: {e}")));
        }
        self.table.get(&key).cloned().ok_or_else(|| {
            SubjectError::Unmapped(format!(
                "the {} subject {:?} is not in the receiver's subjects table",
                key.0, key.1
            ))
        })
    }
}

fn malformed(text: impl Into<String>) -> SubjectError {
    SubjectError::Malformed(text.into())
}

/// The members each simple format requires (RFC 9493 §3, SSF 1.0 §3.5).
fn members_of(format: &str) -> Option<(&'static str, &'static [&'static str])> {
    Some(match format {
        "account" => ("account", &["uri"]),
        "did" => ("did", &["url"]),
        "email" => ("email", &["email"]),
        "iss_sub" => ("iss_sub", &["iss", "sub"]),
        "opaque" => ("opaque", &["id"]),
        // RISC's text says `phone`; RFC 9493's format is `phone_number`.
        "phone_number" | "phone" => ("phone_number", &["phone_number"]),
        "uri" => ("uri", &["uri"]),
        "jwt_id" | "jwt-id" => ("jwt_id", &["iss", "jti"]),
        _ => return None,
    })
}

fn key(subject: &Map<String, Value>) -> Result<Key, SubjectError> {
    let format = subject
        .get("format")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("the subject identifier has no format"))?;
    let Some((name, members)) = members_of(format) else {
        return Err(SubjectError::Unmapped(format!(
            "subject format {format:?} is not one celador maps"
        )));
    };
    let mut values = Vec::with_capacity(members.len());
    for member in members {
        match subject.get(*member) {
            Some(Value::String(v)) if !v.is_empty() => values.push(canonical(name, v)),
            _ => {
                return Err(malformed(format!(
                    "a {format} subject needs a non-empty string {member}"
                )));
            }
        }
    }
    Ok(Key(name, values))
}

/// Email addresses compare without case (RFC 9493 §3.2.2 lets receivers
/// canonicalize them); other values compare exactly.
fn canonical(format: &str, value: &str) -> String {
    if format == "email" {
        value.to_ascii_lowercase()
    } else {
        value.to_owned()
    }
}

fn row(spec: &SubjectSpec) -> Result<(Key, Target), String> {
    let key = key(&spec.subject).map_err(|e| e.to_string())?;
    if matches!(key.0, "jwt_id") {
        return Err("a jwt_id subject names a token by itself: it needs no mapping".into());
    }
    let target = match (&spec.spiffe_id, &spec.spiffe_id_prefix) {
        (Some(id), None) => Target::Id(
            SpiffeId::parse(id)
                .map_err(|e| format!("spiffe_id {id:?}: {e}"))?
                .as_str()
                .to_owned(),
        ),
        (None, Some(prefix)) => {
            let trimmed = prefix.trim_end_matches('/');
            SpiffeId::parse(trimmed).map_err(|e| format!("spiffe_id_prefix {prefix:?}: {e}"))?;
            Target::Prefix(trimmed.to_owned())
        }
        _ => return Err("give exactly one of spiffe_id and spiffe_id_prefix".into()),
    };
    Ok((key, target))
}

#[cfg(test)]
mod tests;
