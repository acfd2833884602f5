//! One clause of a rule's condition and what it evaluated to: the tree
//! that explains a decision (see `engine::policy::explain`, which builds it).
//!
//! Data flow: built by the policy for `celador test`, `eval` and the audit
//! record of a `rule_error` ([`crate::Decision::explanation`]);
//! rendered by the tools and written by the edge's trail.

use std::borrow::Cow;

/// One clause of a condition and what it evaluated to.
#[derive(Debug, Clone, PartialEq)]
pub struct Clause {
    /// Its text.
    pub text: String,
    /// `&&`, `||` or `!` when it combines the clauses below it.
    pub op: Option<&'static str>,
    /// Its value: `true`, `false`, another value, or why it failed.
    pub value: Result<String, String>,
    /// The attributes it read (for a clause that combines none), each with
    /// its value or why it has none.
    pub reads: Vec<(String, Result<String, String>)>,
    /// The clauses it combines.
    pub children: Vec<Clause>,
}

impl Clause {
    /// Whether it evaluated to `false`.
    pub(crate) fn is_false(&self) -> bool {
        self.value.as_deref() == Ok("false")
    }

    /// The first leaf clause, depth first, that is false or failed and so
    /// kept an `&&` from holding: where an expected match went wrong.
    pub fn first_false(&self) -> Option<&Clause> {
        match self.op {
            Some("&&") => self
                .children
                .iter()
                .find(|c| c.is_false() || c.value.is_err())
                .map(|c| c.first_false().unwrap_or(c)),
            Some("||") => self
                .children
                .iter()
                .find(|c| c.is_false() || c.value.is_err())
                .and_then(|c| c.first_false().or(Some(c))),
            _ if self.is_false() || self.value.is_err() => Some(self),
            _ => None,
        }
    }

    /// The tree with `text` applied to the rule's own text in it (clauses
    /// and the paths they read) and `value` to what it evaluated to (values
    /// and errors): how a redaction reaches a tree built from the real
    /// request.
    pub(crate) fn redact<T, V>(&mut self, text: &T, value: &V)
    where
        T: Fn(&str) -> Cow<'_, str>,
        V: Fn(&str) -> Cow<'_, str>,
    {
        fn apply(shown: &impl Fn(&str) -> Cow<'_, str>, s: &mut String) {
            if let Cow::Owned(redacted) = shown(s) {
                *s = redacted;
            }
        }
        apply(text, &mut self.text);
        match &mut self.value {
            Ok(v) | Err(v) => apply(value, v),
        }
        for (path, read) in &mut self.reads {
            apply(text, path);
            match read {
                Ok(v) | Err(v) => apply(value, v),
            }
        }
        for child in &mut self.children {
            child.redact(text, value);
        }
    }

    /// The tree as indented lines, each `text  value  (reads)`.
    pub fn render(&self, indent: &str) -> String {
        let mut out = String::new();
        self.render_into(&mut out, indent, 0);
        out
    }

    fn render_into(&self, out: &mut String, indent: &str, depth: usize) {
        let pad = "  ".repeat(depth);
        let value = match &self.value {
            Ok(v) => v.clone(),
            Err(e) => format!("error: {e}"),
        };
        match self.op {
            Some(op) => out.push_str(&format!("{indent}{pad}{op} {value}\n")),
            None => {
                out.push_str(&format!("{indent}{pad}{}  => {value}", self.text));
                let reads: Vec<String> = self
                    .reads
                    .iter()
                    .filter(|(path, _)| *path != self.text)
                    .map(|(path, v)| match v {
                        Ok(v) => format!("{path} = {v}"),
                        Err(e) => format!("{path}: {e}"),
                    })
                    .collect();
                if !reads.is_empty() {
                    out.push_str(&format!("  ({})", reads.join(", ")));
                }
                out.push('\n');
            }
        }
        for child in &self.children {
            child.render_into(out, indent, depth + 1);
        }
    }
}
