//! A JSON object written member by member into a `String`: the audit
//! record's writer.
//!
//! Data flow: [`super::audit`] writes each record's members, and
//! [`super::trail`] the decision trail's, straight into one buffer, with no
//! intermediate JSON values: a record costs a few hundred nanoseconds, not
//! microseconds.

/// A JSON object being written into a string, member by member.
pub struct JsonObject<'a> {
    /// The buffer written into.
    pub buf: &'a mut String,
    empty: bool,
}

impl<'a> JsonObject<'a> {
    /// Opens an object in `buf`.
    pub fn open(buf: &'a mut String) -> Self {
        buf.push('{');
        Self { buf, empty: true }
    }

    /// Writes a member's key.
    pub fn key(&mut self, key: &str) {
        if !self.empty {
            self.buf.push(',');
        }
        self.empty = false;
        string(self.buf, key);
        self.buf.push(':');
    }

    /// A string member.
    pub fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        string(self.buf, value);
    }

    /// A member that is an array of strings.
    pub fn strs(&mut self, key: &str, values: &[String]) {
        self.key(key);
        self.buf.push('[');
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                self.buf.push(',');
            }
            string(self.buf, value);
        }
        self.buf.push(']');
    }

    /// A string member, or `null`.
    pub fn opt_str(&mut self, key: &str, value: Option<&str>) {
        match value {
            Some(value) => self.str(key, value),
            None => {
                self.key(key);
                self.buf.push_str("null");
            }
        }
    }

    /// A number member.
    pub fn u64(&mut self, key: &str, value: u64) {
        use std::fmt::Write;
        self.key(key);
        // Writing to a String cannot fail.
        let _ = write!(self.buf, "{value}");
    }

    /// A signed number member.
    pub fn i64(&mut self, key: &str, value: i64) {
        use std::fmt::Write;
        self.key(key);
        // Writing to a String cannot fail.
        let _ = write!(self.buf, "{value}");
    }

    /// A boolean member.
    pub fn bool(&mut self, key: &str, value: bool) {
        self.key(key);
        self.buf.push_str(if value { "true" } else { "false" });
    }

    /// A member whose value is already JSON.
    pub fn raw(&mut self, key: &str, json: &str) {
        self.key(key);
        self.buf.push_str(json);
    }

    /// A member that is an object, written by `f`.
    pub fn object(&mut self, key: &str, f: impl FnOnce(&mut JsonObject<'_>)) {
        self.key(key);
        let mut inner = JsonObject::open(self.buf);
        f(&mut inner);
        inner.close();
    }

    /// Closes the object.
    pub fn close(&mut self) {
        self.buf.push('}');
    }
}

/// Writes `s` as a JSON string: quotes, backslashes and control characters
/// escaped, everything else (valid UTF-8 already) as it is.
pub fn string(out: &mut String, s: &str) {
    out.push('"');
    // Almost no value needs escaping; this check has no early exit, so it
    // runs many bytes at a time, which the loop below cannot.
    let plain = !s.bytes().fold(false, |any, b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut start = 0;
    for (i, byte) in s.bytes().enumerate() {
        let escape = match byte {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0x00..=0x1f => None,
            _ => continue,
        };
        // `i` is at an ASCII byte, so both ends are character boundaries.
        out.push_str(s.get(start..i).unwrap_or_default());
        match escape {
            Some(escape) => out.push_str(escape),
            None => {
                use std::fmt::Write;
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{byte:04x}");
            }
        }
        start = i + 1;
    }
    out.push_str(s.get(start..).unwrap_or_default());
    out.push('"');
}
