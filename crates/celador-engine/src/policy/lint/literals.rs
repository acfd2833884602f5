//! Literals a field can never hold, for the linter: Envoy hands celador
//! methods in uppercase, paths that start with `/`, schemes and header
//! names in lowercase, so `request.method == "get"` never matches.
//!
//! Data flow: [`super::never`] asks [`impossible`] about each clause.

use cel::IdedExpr;
use cel::common::ast::{Expr, LiteralValue, operators};

use super::{call, literal};
use crate::policy::unparse::unparse;

fn string(expr: &IdedExpr) -> Option<&str> {
    match literal(expr)? {
        LiteralValue::String(s) => Some(s.inner()),
        _ => None,
    }
}

/// Why `value` can never be `field`, if it cannot.
fn never_holds(field: &str, value: &str) -> Option<String> {
    match field {
        "request.method" if value.chars().any(|c| c.is_ascii_lowercase()) => Some(format!(
            "request.method is uppercase, as sent: \"{value}\" never matches (write \"{}\")",
            value.to_ascii_uppercase()
        )),
        "request.path" if !value.starts_with('/') => Some(format!(
            "request.path always starts with '/': \"{value}\" never matches"
        )),
        "request.scheme" if value.chars().any(|c| c.is_ascii_uppercase()) => Some(format!(
            "request.scheme is lowercase: \"{value}\" never matches (write \"{}\")",
            value.to_ascii_lowercase()
        )),
        _ => None,
    }
}

/// Why the clause `expr` can never be true, when it compares a field with
/// a literal the field never holds.
pub(super) fn impossible(expr: &IdedExpr) -> Option<String> {
    if let Some([a, b]) = call(expr, operators::EQUALS) {
        let (field, value) = match (string(a), string(b)) {
            (None, Some(v)) => (a, v),
            (Some(v), None) => (b, v),
            _ => return None,
        };
        return never_holds(&unparse(field), value);
    }
    if let Some([element, list]) = call(expr, operators::IN) {
        // `request.method in ["get", "head"]`: every element impossible.
        if let Expr::List(items) = &list.expr {
            let field = unparse(element);
            let why: Vec<String> = items
                .elements
                .iter()
                .map(|i| string(i).and_then(|v| never_holds(&field, v)))
                .collect::<Option<_>>()?;
            return why
                .into_iter()
                .next()
                .filter(|_| !items.elements.is_empty());
        }
        // `"X-Tenant" in request.headers`: header names are lowercase.
        if let Some(key) = string(element)
            && unparse(list) == "request.headers"
            && key.chars().any(|c| c.is_ascii_uppercase())
        {
            return Some(format!(
                "header names are lowercase in request.headers: \"{key}\" is never there (write \"{}\")",
                key.to_ascii_lowercase()
            ));
        }
    }
    // `request.path.startsWith("api/")`.
    if let Expr::Call(c) = &expr.expr
        && c.func_name == "startsWith"
        && let (Some(target), [prefix]) = (&c.target, c.args.as_slice())
        && unparse(target) == "request.path"
        && let Some(p) = string(prefix)
        && !p.is_empty()
        && !p.starts_with('/')
    {
        return Some(format!(
            "request.path always starts with '/': it never starts with \"{p}\""
        ));
    }
    None
}
