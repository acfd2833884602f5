//! A rule's condition evaluated clause by clause, to say why it matched,
//! did not, or failed: each `&&`, `||` and `!` operand's value, and the
//! attribute values each clause read.
//!
//! Data flow: `celador test` (a failing case), `celador eval` and the audit
//! record of a `rule_error` ask [`super::Policy::explain`] for the tree of one
//! rule on one input. Truth comes from the real input; the values shown
//! come from a second, redacted one, so no credential is ever printed.
//! Off the request path but for `rule_error`, which is rare and already
//! the slow path.

use cel::common::ast::{Expr, LiteralValue, operators};
use cel::{Context, IdedExpr, Value};

use super::render::display;
use super::unparse::unparse;
use super::{absent_credential, message_of};
pub use crate::clause::Clause;

/// The tree of `expr`: `truth` evaluates on the real input, `shown` on the
/// redacted one.
pub(super) fn tree(expr: &IdedExpr, truth: &Context<'_, '_>, shown: &Context<'_, '_>) -> Clause {
    let value = evaluate(expr, truth);
    let text = unparse(expr);
    let (op, parts): (Option<&'static str>, Vec<&IdedExpr>) = match &expr.expr {
        Expr::Call(c) if c.target.is_none() && c.func_name == operators::LOGICAL_AND => {
            (Some("&&"), chain(expr, operators::LOGICAL_AND))
        }
        Expr::Call(c) if c.target.is_none() && c.func_name == operators::LOGICAL_OR => {
            (Some("||"), chain(expr, operators::LOGICAL_OR))
        }
        Expr::Call(c) if c.target.is_none() && c.func_name == operators::LOGICAL_NOT => {
            (Some("!"), c.args.iter().collect())
        }
        _ => (None, Vec::new()),
    };
    if op.is_some() {
        return Clause {
            text,
            op,
            value,
            reads: Vec::new(),
            children: parts.into_iter().map(|p| tree(p, truth, shown)).collect(),
        };
    }
    let mut reads = Vec::new();
    collect_reads(expr, &mut reads, &mut Vec::new());
    let reads = reads
        .into_iter()
        .map(|r| (unparse(r), evaluate(r, shown)))
        .chain(computed(expr, truth, shown))
        .fold(
            Vec::<(String, Result<String, String>)>::new(),
            |mut all, read| {
                if !all.iter().any(|(p, _)| *p == read.0) {
                    all.push(read);
                }
                all
            },
        );
    // A clause that is itself one attribute shows the redacted value.
    let value = if reads.len() == 1 && reads.first().is_some_and(|(p, _)| *p == text) {
        match (&value, reads.first()) {
            (Ok(v), Some((_, Ok(shown)))) if v != "true" && v != "false" => Ok(shown.clone()),
            _ => value,
        }
    } else {
        value
    };
    Clause {
        text,
        op: None,
        value,
        reads,
        children: Vec::new(),
    }
}

/// The values of the computed operands a comparison compares
/// (`request.time.getHours("UTC")` in `request.time.getHours("UTC") < 4`):
/// neither a literal nor a plain attribute. Each is shown only when the
/// redacted input gives it the same value as the real one; else it was
/// computed from something redacted, and is `<redacted>` itself.
fn computed(
    expr: &IdedExpr,
    truth: &Context<'_, '_>,
    shown: &Context<'_, '_>,
) -> Vec<(String, Result<String, String>)> {
    const COMPARISONS: [&str; 7] = [
        operators::EQUALS,
        operators::NOT_EQUALS,
        operators::LESS,
        operators::LESS_EQUALS,
        operators::GREATER,
        operators::GREATER_EQUALS,
        operators::IN,
    ];
    let Expr::Call(c) = &expr.expr else {
        return Vec::new();
    };
    if c.target.is_some() || !COMPARISONS.contains(&c.func_name.as_str()) {
        return Vec::new();
    }
    c.args
        .iter()
        .filter(|a| {
            let mut plain = Vec::new();
            collect_reads(a, &mut plain, &mut Vec::new());
            // A literal reads nothing; a plain attribute is its one read.
            match plain.as_slice() {
                [] => false,
                [one] => one.id != a.id,
                _ => true,
            }
        })
        .map(|a| {
            let value = match (evaluate(a, truth), evaluate(a, shown)) {
                (Ok(real), Ok(seen)) if real == seen => Ok(seen),
                (Err(e), Err(_)) => Err(e),
                _ => Ok(format!("\"{}\"", crate::redaction::REDACTED)),
            };
            (unparse(a), value)
        })
        .collect()
}

fn evaluate(expr: &IdedExpr, ctx: &Context<'_, '_>) -> Result<String, String> {
    Value::resolve(expr, ctx)
        .map(|v| display(&v))
        .map_err(|e| match e {
            cel::ExecutionError::UndeclaredReference(name) => absent_credential(&name).map_or_else(
                || format!("undeclared reference to '{name}'"),
                str::to_owned,
            ),
            other => message_of(&other),
        })
}

/// `a && (b && c)` as `[a, b, c]`.
fn chain<'e>(expr: &'e IdedExpr, op: &str) -> Vec<&'e IdedExpr> {
    match &expr.expr {
        Expr::Call(c) if c.target.is_none() && c.func_name == op && c.args.len() == 2 => {
            c.args.iter().flat_map(|a| chain(a, op)).collect()
        }
        _ => vec![expr],
    }
}

/// The attributes `expr` reads: variables and their fields (`source.id`,
/// `now`) and literal keys of maps (`request.headers["x-tenant"]`), not the
/// variables a macro binds.
fn collect_reads<'e>(expr: &'e IdedExpr, reads: &mut Vec<&'e IdedExpr>, bound: &mut Vec<String>) {
    match &expr.expr {
        Expr::Ident(name) if !bound.contains(name) => reads.push(expr),
        Expr::Select(s) if !s.test && is_variable(&s.operand, bound) => reads.push(expr),
        // `has(source.id)`: the clause's own value says whether the field
        // is there; the operand, a whole variable, is no value to show
        // (`source` is not one CEL can print).
        Expr::Select(s) if s.test && matches!(s.operand.expr, Expr::Ident(_)) => {}
        Expr::Select(s) => collect_reads(&s.operand, reads, bound),
        Expr::Call(c) if c.func_name == operators::INDEX && c.target.is_none() => {
            if let [map, key] = c.args.as_slice()
                && matches!(key.expr, Expr::Literal(LiteralValue::String(_)))
                && is_variable(map, bound)
            {
                reads.push(expr);
            } else {
                c.args.iter().for_each(|a| collect_reads(a, reads, bound));
            }
        }
        Expr::Call(c) => {
            if let Some(t) = &c.target {
                collect_reads(t, reads, bound);
            }
            c.args.iter().for_each(|a| collect_reads(a, reads, bound));
        }
        Expr::List(l) => l
            .elements
            .iter()
            .for_each(|e| collect_reads(e, reads, bound)),
        Expr::Comprehension(c) => {
            collect_reads(&c.iter_range, reads, bound);
            let depth = bound.len();
            bound.push(c.iter_var.clone());
            bound.extend(c.iter_var2.clone());
            bound.push(c.accu_var.clone());
            for e in [&c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
                collect_reads(e, reads, bound);
            }
            bound.truncate(depth);
        }
        _ => {}
    }
}

/// A variable, or a field of one (`request.headers`), as a map to index.
fn is_variable(expr: &IdedExpr, bound: &[String]) -> bool {
    match &expr.expr {
        Expr::Ident(name) => !bound.contains(name),
        Expr::Select(s) => !s.test && is_variable(&s.operand, bound),
        _ => false,
    }
}
