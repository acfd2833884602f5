//! Clock reads a cached decision can be keyed on: `request.time` (or `now`)
//! read only through a calendar accessor or compared with a literal instant.
//!
//! Data flow: while a rule's footprint is derived at load
//! ([`super::footprint::Footprint::of`]), [`projection`] recognises the
//! bounded reads of the clock: `request.time.getHours()`,
//! `now.getDayOfWeek("Europe/Paris")`, `request.time <
//! timestamp("2027-01-01T00:00:00Z")`. Their text goes into the footprint's
//! `clock`; any other read of the clock leaves the rule uncacheable, as
//! before. The policy compiles them once ([`ClockReads`]); per check, the
//! decision cache appends each one's *value* (the hour, the day, which side
//! of the instant) to its key ([`ClockReads::key`]). A rule reads the clock
//! through nothing else, so two checks with equal values get equal results:
//! an entry is reused within the hour (or day, or until the instant) and
//! never across the boundary, whatever the clocks do.

use cel::common::ast::{CallExpr, Expr, LiteralValue, operators};
use cel::{Context, IdedExpr, Value};

use super::Input;
use super::activation::Activation;

/// The calendar accessors a cache key can hold the value of. Not
/// `getMilliseconds`: a key that changes every millisecond would only fill
/// the cache.
const ACCESSORS: &[&str] = &[
    "getFullYear",
    "getMonth",
    "getDayOfYear",
    "getDayOfMonth",
    "getDate",
    "getDayOfWeek",
    "getHours",
    "getMinutes",
    "getSeconds",
];

const COMPARISONS: &[&str] = &[
    operators::LESS,
    operators::LESS_EQUALS,
    operators::GREATER,
    operators::GREATER_EQUALS,
    operators::EQUALS,
    operators::NOT_EQUALS,
];

/// The clock `call` reads (`"request.time"` or `"now"`) if it is a bounded
/// read of it; `bound` are the names a macro binds around it.
pub(crate) fn projection(call: &CallExpr, bound: &[String]) -> Option<&'static str> {
    if ACCESSORS.contains(&call.func_name.as_str()) {
        // The time zone, if given, must be a literal.
        if !call.args.iter().all(|a| string(a).is_some()) {
            return None;
        }
        return clock(call.target.as_deref()?, bound);
    }
    if COMPARISONS.contains(&call.func_name.as_str()) && call.target.is_none() {
        return match call.args.as_slice() {
            [a, b] if instant(b) => clock(a, bound),
            [a, b] if instant(a) => clock(b, bound),
            _ => None,
        };
    }
    None
}

/// `request.time` or `now`, parsed (not yet flattened).
fn clock(expr: &IdedExpr, bound: &[String]) -> Option<&'static str> {
    let free = |name: &str| !bound.iter().any(|s| s == name);
    match &expr.expr {
        Expr::Ident(name) if name == "now" && free("now") => Some("now"),
        Expr::Select(select) if !select.test && select.field == "time" => {
            match &select.operand.expr {
                Expr::Ident(name) if name == "request" && free("request") => Some("request.time"),
                _ => None,
            }
        }
        _ => None,
    }
}

/// `timestamp("...")`.
fn instant(expr: &IdedExpr) -> bool {
    match &expr.expr {
        Expr::Call(call) => {
            call.func_name == "timestamp"
                && call.target.is_none()
                && matches!(call.args.as_slice(), [a] if string(a).is_some())
        }
        _ => false,
    }
}

fn string(expr: &IdedExpr) -> Option<&str> {
    match &expr.expr {
        Expr::Literal(LiteralValue::String(s)) => Some(s),
        _ => None,
    }
}

/// A policy's bounded clock reads, compiled.
#[derive(Debug, Default)]
pub(crate) struct ClockReads {
    reads: Vec<IdedExpr>,
}

impl ClockReads {
    /// Compiles the reads in `texts` (a footprint's `clock`), as the
    /// rules' own conditions are compiled.
    pub(crate) fn compile<'t>(texts: impl IntoIterator<Item = &'t String>) -> Self {
        let env = super::functions::environment();
        let reads = texts
            .into_iter()
            .filter_map(|text| {
                // The text is the parser's own output for an expression it
                // parsed: it parses again.
                let mut expr = env.parser().parse(text).ok()?;
                super::rewrite::flatten_fields(&mut expr, &mut Vec::new());
                Some(expr)
            })
            .collect();
        ClockReads { reads }
    }

    /// Appends the value (or error) of each read for `input` to `key`,
    /// length-prefixed.
    pub(crate) fn key(
        &self,
        root: &Context<'static, 'static>,
        input: Input<'_>,
        key: &mut Vec<u8>,
    ) {
        if self.reads.is_empty() {
            return;
        }
        let activation = Activation::new(input);
        let mut ctx = root.new_inner_scope();
        ctx.set_variable_resolver(&activation);
        for read in &self.reads {
            let value = match Value::resolve(read, &ctx) {
                Ok(v) => format!("={}", super::render::display(&v)),
                Err(e) => format!("!{e}"),
            };
            key.extend_from_slice(&(value.len() as u64).to_le_bytes());
            key.extend_from_slice(value.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests;
