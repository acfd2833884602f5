//! Warnings about rules that load but are likely wrong.
//!
//! Data flow: after every rule of a file compiles and type-checks,
//! [`lint`] looks at them together: duplicate names, conditions (or parts of
//! them) that can never be true or are always true, numeric ranges
//! included ([`ranges`]), literals a field never holds ([`literals`]), allow
//! rules that a deny rule overrides entirely (and a deny rule that overrides
//! them all), deny rules that read a map key or an identity without testing
//! for it (which then deny every request without it), and rules that read
//! `signals.risk` without `has()` ([`risk`]). The analysis is
//! syntactic: it reports what can be seen from the text, never guesses.
//! `celador check` prints the warnings; `serve` logs them on every load.

use cel::IdedExpr;
use cel::common::ast::{Expr, LiteralValue, operators};

use super::check::MapRead;
use super::diagnostic::{Diagnostic, Severity};
use super::rules_file::Effect;
use super::unparse::unparse;

/// What the linter needs of one rule.
pub(super) struct Subject<'a> {
    /// The rule's name.
    pub name: &'a str,
    /// Allow or deny.
    pub effect: Effect,
    /// Its condition.
    pub expr: &'a IdedExpr,
    /// Its map reads and presence tests, from the checker.
    pub map_reads: &'a [MapRead],
    /// (map, key) pairs the rule tests for presence.
    pub guards: &'a std::collections::BTreeSet<(String, String)>,
    /// Places a warning: `None` for the rule's name, else a byte offset in
    /// the condition.
    pub place: &'a dyn Fn(Option<usize>, String) -> Diagnostic,
    /// The line of the rule's name.
    pub line: usize,
    /// The condition's text, to place warnings found in the tree.
    pub when: &'a str,
}

/// Every warning about `rules`, in file order.
pub(super) fn lint(rules: &[Subject<'_>]) -> Vec<Diagnostic> {
    let mut warnings = Vec::new();
    let denies = overriding::Denies::new(rules);
    // The first rule of each name: found by a map, not a scan per rule.
    let mut first: std::collections::HashMap<&str, &Subject<'_>> = Default::default();
    for rule in rules {
        let earlier = *first.entry(rule.name).or_insert(rule);
        let earlier = (!std::ptr::eq(earlier, rule)).then_some(earlier);
        rule_warnings(rule, earlier, &denies, &mut warnings);
        if let Some((read, message)) = risk::unguarded(rule) {
            let mut d = (rule.place)(rule.when.find(&read), message);
            d.severity = Severity::Warning;
            warnings.push(d);
        }
    }
    warnings.extend(overriding_everything(rules, &denies));
    warnings
}

/// The warnings about one rule; `earlier` is a rule of the same name
/// before it.
fn rule_warnings(
    rule: &Subject<'_>,
    earlier: Option<&Subject<'_>>,
    denies: &overriding::Denies<'_>,
    warnings: &mut Vec<Diagnostic>,
) {
    let warn = |offset, message| {
        let mut d = (rule.place)(offset, message);
        d.severity = Severity::Warning;
        d
    };
    if let Some(first) = earlier {
        warnings.push(warn(
            None,
            format!(
                "a rule named '{}' is already defined on line {}; decisions and audit records cannot tell them apart",
                rule.name, first.line
            ),
        ));
    }
    if let Some(why) = never(rule.expr) {
        warnings.push(warn(Some(0), format!("{why}, so the rule never matches")));
        return;
    }
    if always(rule.expr) {
        let consequence = match rule.effect {
            Effect::Allow => "it allows every request that no deny rule denies",
            Effect::Deny => "it denies every request",
        };
        warnings.push(warn(
            Some(0),
            format!("the condition is always true, so {consequence}"),
        ));
    }
    for (offset, message) in branches(rule.expr, rule.when) {
        warnings.push(warn(offset, message));
    }
    for read in rule.map_reads.iter().filter(|r| r.map == "request.headers") {
        let key = read.key.trim_matches('"');
        if key.chars().any(|c| c.is_ascii_uppercase()) {
            warnings.push(warn(
                Some(read.offset as usize),
                format!(
                    "header names are lowercase in request.headers: {} is never there (write \"{}\")",
                    read.key,
                    key.to_ascii_lowercase()
                ),
            ));
        }
    }
    match rule.effect {
        Effect::Allow => {
            if let Some((deny, part)) = denies.overriding(rule) {
                warnings.push(warn(
                    Some(0),
                    format!(
                        "this allow rule never allows: whenever it matches, deny rule '{deny}' matches too (`{part}`)"
                    ),
                ));
            }
        }
        Effect::Deny => {
            if let Some(warning) = unguarded_identity(rule) {
                warnings.push(warn(rule.when.find(&warning.0), warning.1));
            }
            for read in rule.map_reads {
                if !rule.guards.contains(&(read.map.clone(), read.key.clone())) {
                    warnings.push(warn(
                        Some(read.offset as usize),
                        format!(
                            "reading {map}[{key}] fails when the key is absent, and a deny rule that fails denies; test for it first: `{key} in {map} && ...`",
                            map = read.map,
                            key = read.key
                        ),
                    ));
                }
            }
        }
    }
}

/// A deny rule that overrides every allow rule of the file: the rules can then
/// only deny (a grant aside).
fn overriding_everything(
    rules: &[Subject<'_>],
    denies: &overriding::Denies<'_>,
) -> Option<Diagnostic> {
    let allows: Vec<&Subject<'_>> = rules
        .iter()
        .filter(|r| r.effect == Effect::Allow && never(r.expr).is_none())
        .collect();
    if allows.len() < 2 {
        // One allow rule overridden is reported on that rule already.
        return None;
    }
    let first = denies.overriding(allows.first()?)?.0;
    if !allows
        .iter()
        .all(|a| denies.overriding(a).is_some_and(|(deny, _)| deny == first))
    {
        return None;
    }
    let deny = rules.iter().find(|r| r.name == first)?;
    let mut d = (deny.place)(
        None,
        format!(
            "this deny rule overrides every allow rule ({}): the rules can only deny",
            allows
                .iter()
                .map(|a| format!("'{}'", a.name))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    d.severity = Severity::Warning;
    Some(d)
}

/// A deny rule's read of `source.*` or `token.*` (not `source.address` or
/// `source.port`, which every request has) with no `has()` test of that
/// identity anywhere in the rule: the read fails for a caller without that
/// credential, and a deny rule that fails denies. Returns the read and the
/// warning.
fn unguarded_identity(rule: &Subject<'_>) -> Option<(String, String)> {
    let mut reads = Vec::new();
    let mut guarded = std::collections::BTreeSet::new();
    visit(rule.expr, &mut |e| match &e.expr {
        Expr::Ident(name) => {
            if let Some((var, field)) = name.split_once('.')
                && (var == "token" || (var == "source" && field != "address" && field != "port"))
            {
                reads.push(name.clone());
            }
        }
        Expr::Select(select) if select.test => {
            if let Expr::Ident(var) = &select.operand.expr {
                guarded.insert(var.clone());
            }
        }
        _ => {}
    });
    let read = reads
        .into_iter()
        .find(|r| r.split_once('.').is_some_and(|(v, _)| !guarded.contains(v)))?;
    let (var, _) = read.split_once('.')?;
    let (credential, other, routes) = if var == "source" {
        ("X.509-SVID", "a JWT-SVID", "`jwt` or `either`")
    } else {
        ("JWT-SVID", "an X.509-SVID", "`x509` or `either`")
    };
    Some((
        read.clone(),
        format!(
            "this deny rule reads {read}, which fails for a request without a verified {credential}, and a deny rule that fails denies: on routes that accept {routes}, every caller presenting only {other} is denied by it. Test for it: `has({var}.id) && ...` leaves those callers to the other rules, `!has({var}.id) || ...` denies them on purpose"
        ),
    ))
}

/// Parts of a condition that decide nothing: an alternative of an `||`
/// that can never be true, and a clause of an `&&` that is always true,
/// at any depth (the condition as a whole is judged by [`never`] and
/// [`always`]). Each with its offset in `when`, when it can be found.
fn branches(expr: &IdedExpr, when: &str) -> Vec<(Option<usize>, String)> {
    let mut found = Vec::new();
    let mut stack = vec![expr];
    while let Some(e) = stack.pop() {
        let alternatives = disjuncts(e);
        let clauses = conjuncts(e);
        if alternatives.len() > 1 && never(e).is_none() {
            for a in &alternatives {
                if let Some(why) = never(a) {
                    let why = why
                        .strip_prefix("the condition can never be true (")
                        .and_then(|w| w.strip_suffix(')'))
                        .map_or(why.clone(), str::to_owned);
                    let text = unparse(a);
                    found.push((
                        when.find(&text),
                        format!("the alternative `{text}` can never be true ({why}), so only the others can match"),
                    ));
                }
            }
        }
        if clauses.len() > 1 && !always(e) {
            for c in &clauses {
                if always(c) {
                    let text = unparse(c);
                    found.push((
                        when.find(&text),
                        format!("`{text}` is always true, so it adds nothing to the condition"),
                    ));
                }
            }
        }
        let parts = if alternatives.len() > 1 {
            alternatives
        } else {
            clauses
        };
        if parts.len() > 1 {
            stack.extend(parts);
        } else if let Some([inner]) = call(e, operators::LOGICAL_NOT) {
            stack.push(inner);
        }
    }
    found
}

/// Calls `f` on `expr` and every expression inside it.
fn visit(expr: &IdedExpr, f: &mut dyn FnMut(&IdedExpr)) {
    f(expr);
    match &expr.expr {
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                visit(target, f);
            }
            for arg in &call.args {
                visit(arg, f);
            }
        }
        Expr::Select(select) => visit(&select.operand, f),
        Expr::List(list) => list.elements.iter().for_each(|e| visit(e, f)),
        Expr::Map(map) => {
            for entry in &map.entries {
                if let cel::common::ast::EntryExpr::MapEntry(e) = &entry.expr {
                    visit(&e.key, f);
                    visit(&e.value, f);
                }
            }
        }
        Expr::Comprehension(c) => {
            for e in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                visit(e, f);
            }
        }
        _ => {}
    }
}

fn call<'a>(expr: &'a IdedExpr, name: &str) -> Option<&'a [IdedExpr]> {
    match &expr.expr {
        Expr::Call(c) if c.target.is_none() && c.func_name == name => Some(&c.args),
        _ => None,
    }
}

fn conjuncts(expr: &IdedExpr) -> Vec<&IdedExpr> {
    operands(expr, operators::LOGICAL_AND)
}

fn disjuncts(expr: &IdedExpr) -> Vec<&IdedExpr> {
    operands(expr, operators::LOGICAL_OR)
}

/// The operands of a chain of one associative operator, `a && (b && c)` as
/// `[a, b, c]`; the expression itself when it is not that operator.
fn operands<'a>(expr: &'a IdedExpr, op: &str) -> Vec<&'a IdedExpr> {
    match call(expr, op) {
        Some([a, b]) => {
            let mut all = operands(a, op);
            all.extend(operands(b, op));
            all
        }
        _ => vec![expr],
    }
}

fn literal(expr: &IdedExpr) -> Option<&LiteralValue> {
    match &expr.expr {
        Expr::Literal(l) => Some(l),
        _ => None,
    }
}

/// The value of a condition, when the text alone decides it.
fn constant(expr: &IdedExpr) -> Option<bool> {
    if let Some(LiteralValue::Boolean(b)) = literal(expr) {
        return Some(*b.inner());
    }
    if let Some([a]) = call(expr, operators::LOGICAL_NOT) {
        return constant(a).map(|b| !b);
    }
    if let Some([a, b]) = call(expr, operators::LOGICAL_AND) {
        return match (constant(a), constant(b)) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        };
    }
    if let Some([a, b]) = call(expr, operators::LOGICAL_OR) {
        return match (constant(a), constant(b)) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        };
    }
    for (op, equal) in [(operators::EQUALS, true), (operators::NOT_EQUALS, false)] {
        if let Some([a, b]) = call(expr, op) {
            // Two literals of one kind, or the same expression on both sides.
            let same = match (literal(a), literal(b)) {
                (Some(x), Some(y)) if std::mem::discriminant(x) == std::mem::discriminant(y) => {
                    x == y
                }
                (Some(_), Some(_)) => return None,
                _ if unparse(a) == unparse(b) => true,
                _ => return None,
            };
            return Some(same == equal);
        }
    }
    if let Some([elem, list]) = call(expr, operators::IN)
        && let (Some(e), Expr::List(items)) = (literal(elem), &list.expr)
        && items.elements.iter().all(|i| literal(i).is_some())
    {
        return Some(items.elements.iter().any(|i| literal(i) == Some(e)));
    }
    None
}

/// An equality or inequality between an expression and a literal.
fn comparison(expr: &IdedExpr) -> Option<(String, String, bool)> {
    for (op, equal) in [(operators::EQUALS, true), (operators::NOT_EQUALS, false)] {
        if let Some([a, b]) = call(expr, op) {
            return match (literal(a), literal(b)) {
                (None, Some(_)) => Some((unparse(a), unparse(b), equal)),
                (Some(_), None) => Some((unparse(b), unparse(a), equal)),
                _ => None,
            };
        }
    }
    None
}

/// Why the condition can never hold, if the text shows it.
fn never(expr: &IdedExpr) -> Option<String> {
    if constant(expr) == Some(false) {
        return Some("the condition is always false".into());
    }
    let parts = conjuncts(expr);
    if let Some((clause, why)) = parts
        .iter()
        .find_map(|p| literals::impossible(p).map(|why| (unparse(p), why)))
    {
        return Some(format!("`{clause}` can never be true: {why}"));
    }
    if parts.len() > 1 {
        for (i, a) in parts.iter().enumerate() {
            for b in parts.iter().skip(i + 1) {
                if contradict(a, b) {
                    return Some(format!(
                        "the condition can never be true (`{}` contradicts `{}`)",
                        unparse(a),
                        unparse(b)
                    ));
                }
            }
        }
    }
    let alternatives = disjuncts(expr);
    if alternatives.len() > 1 && alternatives.iter().all(|a| never(a).is_some()) {
        return Some("the condition can never be true (no alternative of it can)".into());
    }
    None
}

fn contradict(a: &IdedExpr, b: &IdedExpr) -> bool {
    if let Some([inner]) = call(a, operators::LOGICAL_NOT)
        && unparse(inner) == unparse(b)
    {
        return true;
    }
    if let Some([inner]) = call(b, operators::LOGICAL_NOT)
        && unparse(inner) == unparse(a)
    {
        return true;
    }
    if let (Some(x), Some(y)) = (ranges::range(a), ranges::range(b))
        && ranges::disjoint(&x, &y)
    {
        return true;
    }
    match (comparison(a), comparison(b)) {
        (Some((x, v, true)), Some((y, w, true))) => x == y && v != w,
        (Some((x, v, true)), Some((y, w, false))) | (Some((y, w, false)), Some((x, v, true))) => {
            x == y && v == w
        }
        _ => false,
    }
}

/// Whether the condition always holds, as far as the text shows.
fn always(expr: &IdedExpr) -> bool {
    if constant(expr) == Some(true) {
        return true;
    }
    let alternatives = disjuncts(expr);
    if alternatives.len() > 1 {
        for (i, a) in alternatives.iter().enumerate() {
            for b in alternatives.iter().skip(i + 1) {
                // `e || !e`, and `x != "a" || x != "b"`.
                let complementary = call(a, operators::LOGICAL_NOT)
                    .is_some_and(|n| n.first().is_some_and(|inner| unparse(inner) == unparse(b)))
                    || call(b, operators::LOGICAL_NOT).is_some_and(|n| {
                        n.first().is_some_and(|inner| unparse(inner) == unparse(a))
                    });
                // `x != "a" || x != "b"`, and `x == "a" || x != "a"`.
                let two_inequalities = matches!(
                    (comparison(a), comparison(b)),
                    (Some((x, v, false)), Some((y, w, false))) if x == y && v != w
                ) || matches!(
                    (comparison(a), comparison(b)),
                    (Some((x, v, e)), Some((y, w, f))) if x == y && v == w && e != f
                );
                let ranges_cover = matches!(
                    (ranges::range(a), ranges::range(b)),
                    (Some(x), Some(y)) if ranges::cover(&x, &y)
                );
                if complementary || two_inequalities || ranges_cover {
                    return true;
                }
            }
        }
    }
    let parts = conjuncts(expr);
    parts.len() > 1 && parts.iter().all(|p| always(p))
}

mod literals;
mod overriding;
mod ranges;
mod risk;
#[cfg(test)]
mod tests;
