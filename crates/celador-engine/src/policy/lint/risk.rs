//! Reads of `signals.risk` without a `has()` test, for the linter.
//!
//! Data flow: [`super::lint`] asks [`unguarded`] about each rule. A risk
//! level is absent for most callers (no security tool reported one), and
//! reading an absent field is an evaluation error: a deny rule that fails
//! denies (every caller without a risk, whatever the rest says), an allow
//! rule that fails does not match and writes an error into every audit
//! record. `has(signals.risk.level)` is the test; `has(signals.risk)` is
//! not (the object is always there, its fields are not).

use cel::IdedExpr;
use cel::common::ast::Expr;

use super::Subject;
use super::visit;
use crate::policy::rules_file::Effect;

/// The dotted path of a select chain rooted at an identifier.
fn path(expr: &IdedExpr) -> Option<String> {
    match &expr.expr {
        Expr::Ident(name) => Some(name.clone()),
        Expr::Select(select) => path(&select.operand).map(|b| format!("{b}.{}", select.field)),
        _ => None,
    }
}

/// The rule's first read of a `signals.risk` field, when nothing in the
/// rule tests one with `has()`, and the warning's text.
pub(super) fn unguarded(rule: &Subject<'_>) -> Option<(String, String)> {
    let mut read = None;
    let mut guarded = false;
    visit(rule.expr, &mut |e| {
        let (Expr::Select(select), Some(full)) = (&e.expr, path(e)) else {
            if let (Expr::Ident(name), None) = (&e.expr, &read)
                && name.starts_with("signals.risk.")
            {
                read = Some(name.clone());
            }
            return;
        };
        if !full.starts_with("signals.risk.") {
            return;
        }
        if select.test {
            guarded = true;
        } else if read.is_none() {
            read = Some(full);
        }
    });
    if guarded {
        return None;
    }
    let read = read?;
    let consequence = match rule.effect {
        Effect::Deny => {
            "a deny rule that fails denies: it denies every caller without a risk level, whatever the rest of it says"
        }
        Effect::Allow => {
            "an allow rule that fails does not match, and every audit record carries the error"
        }
    };
    Some((
        read.clone(),
        format!(
            "this rule reads {read}, which is absent unless a security tool reported a risk for the caller (most callers), and reading it then fails; {consequence}. Test for it: `has(signals.risk.level) && ...`"
        ),
    ))
}
