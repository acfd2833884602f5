//! Rendering: CEL values as rule authors read them, in CEL text
//! ([`display`]) or typed JSON ([`to_json`]).
//!
//! Data flow: used where a value is shown, never to decide: the values an
//! explanation quotes ([`super::Policy::values`]), a clause's values
//! ([`super::trace`]) and the clock reads a cache key holds
//! ([`super::clock`]).

use cel::Value;

/// A CEL value as typed JSON: strings, numbers, booleans, lists and maps
/// as themselves; timestamps as RFC 3339 text, durations as seconds, bytes
/// as base64.
pub(crate) fn to_json(value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::UInt(u) => J::from(*u),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::String(s) => J::String(s.as_str().to_owned()),
        Value::Bytes(b) => {
            use base64::Engine;
            J::String(base64::engine::general_purpose::STANDARD.encode(b.as_slice()))
        }
        Value::List(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Map(map) => J::Object(
            map.map
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        cel::objects::Key::String(s) => s.as_str().to_owned(),
                        cel::objects::Key::Int(i) => i.to_string(),
                        cel::objects::Key::Uint(u) => u.to_string(),
                        cel::objects::Key::Bool(b) => b.to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Value::Timestamp(t) => J::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        Value::Duration(d) => J::from(d.num_milliseconds() as f64 / 1000.0),
        other => J::String(display(other)),
    }
}

/// A CEL value as CEL text: strings quoted, maps with sorted keys.
pub(crate) fn display(value: &Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::UInt(u) => {
            let _ = write!(out, "{u}u");
        }
        Value::Float(f) => out.push_str(&format!("{f:?}")),
        Value::String(s) => out.push_str(&serde_json::to_string(s.as_str()).unwrap_or_default()),
        Value::Bytes(b) => {
            out.push_str("b\"");
            for byte in b.iter() {
                let _ = write!(out, "\\x{byte:02x}");
            }
            out.push('"');
        }
        Value::List(items) => {
            out.push('[');
            let shown: Vec<String> = items.iter().map(display).collect();
            out.push_str(&shown.join(", "));
            out.push(']');
        }
        Value::Map(map) => display_map(&mut out, map),
        Value::Timestamp(t) => {
            let _ = write!(
                out,
                "timestamp(\"{}\")",
                t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            );
        }
        Value::Duration(d) => {
            let _ = write!(
                out,
                "duration(\"{}s\")",
                d.num_milliseconds() as f64 / 1000.0
            );
        }
        other => {
            let _ = write!(out, "{other:?}");
        }
    }
    out
}

/// A CEL map as CEL text, with its keys sorted.
fn display_map(out: &mut String, map: &cel::objects::Map) {
    let mut entries: Vec<(String, String)> = map
        .map
        .iter()
        .map(|(k, v)| {
            let key = match k {
                cel::objects::Key::String(s) => {
                    serde_json::to_string(s.as_str()).unwrap_or_default()
                }
                cel::objects::Key::Int(i) => i.to_string(),
                cel::objects::Key::Uint(u) => format!("{u}u"),
                cel::objects::Key::Bool(b) => b.to_string(),
            };
            (key, display(v))
        })
        .collect();
    entries.sort();
    out.push('{');
    let shown: Vec<String> = entries
        .into_iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    out.push_str(&shown.join(", "));
    out.push('}');
}
