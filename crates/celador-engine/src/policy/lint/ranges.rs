//! Numeric comparisons as intervals, for the linter: `x < 0 && x > 10`
//! can never hold, `x < 10 || x >= 5` always does.
//!
//! Data flow: [`super::contradict`] and [`super::always`] ask whether two
//! clauses on the same expression leave no value, or every value.

use cel::IdedExpr;
use cel::common::ast::{LiteralValue, operators};

use super::{call, literal};
use crate::policy::unparse::unparse;

/// One end of an interval: the bound and whether it is included.
#[derive(Debug, Clone, Copy)]
struct End {
    at: f64,
    closed: bool,
}

/// The values a clause allows of one expression: `(expr, low, high)`,
/// `None` for unbounded.
pub(super) struct Range {
    expr: String,
    low: Option<End>,
    high: Option<End>,
}

fn number(expr: &IdedExpr) -> Option<f64> {
    match literal(expr)? {
        LiteralValue::Int(i) => Some(*i.inner() as f64),
        LiteralValue::UInt(u) => Some(*u.inner() as f64),
        LiteralValue::Double(d) => Some(*d.inner()),
        _ => None,
    }
}

/// `x < 3`, `3 >= x`, `x == 3` and the like, as a range of `x`.
pub(super) fn range(expr: &IdedExpr) -> Option<Range> {
    const OPS: [&str; 5] = [
        operators::LESS,
        operators::LESS_EQUALS,
        operators::GREATER,
        operators::GREATER_EQUALS,
        operators::EQUALS,
    ];
    let (op, a, b) = OPS.iter().find_map(|op| {
        call(expr, op).and_then(|args| match args {
            [a, b] => Some((*op, a, b)),
            _ => None,
        })
    })?;
    // With the literal on the left, mirror the operator.
    let (subject, n, op) = match (number(a), number(b)) {
        (None, Some(n)) => (a, n, op),
        (Some(n), None) => (b, n, mirror(op)),
        _ => return None,
    };
    let end = |closed| Some(End { at: n, closed });
    let (low, high) = match op {
        o if o == operators::LESS => (None, end(false)),
        o if o == operators::LESS_EQUALS => (None, end(true)),
        o if o == operators::GREATER => (end(false), None),
        o if o == operators::GREATER_EQUALS => (end(true), None),
        _ => (end(true), end(true)),
    };
    Some(Range {
        expr: unparse(subject),
        low,
        high,
    })
}

fn mirror(op: &'static str) -> &'static str {
    match op {
        o if o == operators::LESS => operators::GREATER,
        o if o == operators::LESS_EQUALS => operators::GREATER_EQUALS,
        o if o == operators::GREATER => operators::LESS,
        o if o == operators::GREATER_EQUALS => operators::LESS_EQUALS,
        other => other,
    }
}

/// Whether no value of the shared expression satisfies both.
pub(super) fn disjoint(a: &Range, b: &Range) -> bool {
    if a.expr != b.expr {
        return false;
    }
    // The higher of the lows against the lower of the highs.
    let low = tighter(a.low, b.low, |x, y| x > y);
    let high = tighter(a.high, b.high, |x, y| x < y);
    match (low, high) {
        (Some(l), Some(h)) => l.at > h.at || (l.at == h.at && !(l.closed && h.closed)),
        _ => false,
    }
}

/// Whether every value of the shared expression satisfies one of them.
pub(super) fn cover(a: &Range, b: &Range) -> bool {
    if a.expr != b.expr {
        return false;
    }
    // One must be unbounded below, the other above, and they must meet.
    let meets = |below: &Range, above: &Range| match (below.low, below.high, above.low, above.high)
    {
        (None, Some(h), Some(l), None) => h.at > l.at || (h.at == l.at && (h.closed || l.closed)),
        _ => false,
    };
    meets(a, b) || meets(b, a)
}

fn tighter(a: Option<End>, b: Option<End>, beyond: fn(f64, f64) -> bool) -> Option<End> {
    match (a, b) {
        (Some(x), Some(y)) if beyond(x.at, y.at) => Some(x),
        (Some(x), Some(y)) if beyond(y.at, x.at) => Some(y),
        (Some(x), Some(y)) => Some(End {
            at: x.at,
            closed: x.closed && y.closed,
        }),
        (x, None) => x,
        (None, y) => y,
    }
}
