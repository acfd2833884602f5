//! CEL expressions back to source text, for messages.
//!
//! Data flow: the linter quotes sub-expressions in its warnings ("deny rule
//! 'x' matches whenever `request.path.startsWith("/admin/")`"), and compares
//! expressions by their text, which ignores node IDs and spacing.

use cel::IdedExpr;
use cel::common::ast::{CallExpr, EntryExpr, Expr, LiteralValue, MapExpr, operators};

use super::kubernetes::IN_CIDR_LITERAL;

/// The expression as canonical CEL text.
pub(crate) fn unparse(expr: &IdedExpr) -> String {
    let mut out = String::new();
    write(&mut out, expr, 0);
    out
}

/// Binding strength, for parentheses: higher binds tighter.
fn precedence(expr: &Expr) -> u8 {
    match expr {
        Expr::Call(call) if call.target.is_none() => match call.func_name.as_str() {
            operators::CONDITIONAL => 1,
            operators::LOGICAL_OR => 2,
            operators::LOGICAL_AND => 3,
            operators::EQUALS
            | operators::NOT_EQUALS
            | operators::LESS
            | operators::LESS_EQUALS
            | operators::GREATER
            | operators::GREATER_EQUALS
            | operators::IN => 4,
            operators::ADD | operators::SUBSTRACT => 5,
            operators::MULTIPLY | operators::DIVIDE | operators::MODULO => 6,
            operators::LOGICAL_NOT | operators::NEGATE => 7,
            _ => 9,
        },
        _ => 9,
    }
}

fn binary_symbol(name: &str) -> Option<&'static str> {
    Some(match name {
        operators::LOGICAL_OR => "||",
        operators::LOGICAL_AND => "&&",
        operators::EQUALS => "==",
        operators::NOT_EQUALS => "!=",
        operators::LESS => "<",
        operators::LESS_EQUALS => "<=",
        operators::GREATER => ">",
        operators::GREATER_EQUALS => ">=",
        operators::IN => "in",
        operators::ADD => "+",
        operators::SUBSTRACT => "-",
        operators::MULTIPLY => "*",
        operators::DIVIDE => "/",
        operators::MODULO => "%",
        _ => return None,
    })
}

/// Writes `expr`, parenthesised if it binds looser than `outer`.
fn write(out: &mut String, expr: &IdedExpr, outer: u8) {
    let mine = precedence(&expr.expr);
    let parens = mine < outer;
    if parens {
        out.push('(');
    }
    write_bare(out, expr);
    if parens {
        out.push(')');
    }
}

fn write_bare(out: &mut String, expr: &IdedExpr) {
    match &expr.expr {
        Expr::Literal(literal) => write_literal(out, literal),
        Expr::Ident(name) => out.push_str(name),
        Expr::Select(select) => {
            if select.test {
                out.push_str("has(");
            }
            write(out, &select.operand, 9);
            out.push('.');
            // A field that is no identifier was written in backticks.
            let plain =
                select.field.chars().enumerate().all(|(i, c)| {
                    c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
                });
            if plain {
                out.push_str(&select.field);
            } else {
                out.push('`');
                out.push_str(&select.field);
                out.push('`');
            }
            if select.test {
                out.push(')');
            }
        }
        Expr::Call(call) => write_call(out, call, precedence(&expr.expr)),
        Expr::List(list) => {
            out.push('[');
            write_list(out, &list.elements);
            out.push(']');
        }
        Expr::Map(map) => write_map(out, map),
        // Macros are expanded by the parser; `exists` and `all` are
        // recognised by their shape, others are not spelt out.
        Expr::Comprehension(comp) => write_comprehension(out, comp),
        Expr::Struct(s) => {
            out.push_str(&s.type_name);
            out.push_str("{...}");
        }
        Expr::Unspecified => out.push('?'),
    }
}

/// A macro: `exists`, `all` and the two-variable comprehensions are
/// recognised by their shape, others are not spelt out.
fn write_comprehension(out: &mut String, comp: &cel::common::ast::ComprehensionExpr) {
    if let Some(written) = super::kubernetes::comprehensions::written(comp) {
        write(out, written.target, 9);
        let (k, v) = written.vars;
        out.push_str(&format!(".{}({k}, {v}", written.name));
        for arg in written.args {
            out.push_str(", ");
            write(out, arg, 0);
        }
        out.push(')');
        return;
    }
    write(out, &comp.iter_range, 9);
    let step = match &comp.loop_step.expr {
        Expr::Call(c) if c.target.is_none() && c.args.len() == 2 => {
            match (
                c.func_name.as_str(),
                c.args.first().map(|a| &a.expr),
                c.args.get(1),
            ) {
                (operators::LOGICAL_OR, Some(Expr::Ident(a)), Some(p)) if *a == comp.accu_var => {
                    Some(("exists", p))
                }
                (operators::LOGICAL_AND, Some(Expr::Ident(a)), Some(p)) if *a == comp.accu_var => {
                    Some(("all", p))
                }
                _ => None,
            }
        }
        _ => None,
    };
    match step {
        Some((name, predicate)) => {
            out.push_str(&format!(".{name}({}, ", comp.iter_var));
            write(out, predicate, 0);
            out.push(')');
        }
        None => {
            out.push_str(".<macro>(");
            out.push_str(&comp.iter_var);
            out.push_str(", ...)");
        }
    }
}

/// A call at precedence `prec`: an operator in its own syntax, anything
/// else as `target.name(args)`.
fn write_call(out: &mut String, call: &CallExpr, prec: u8) {
    match (
        call.target.as_deref(),
        call.func_name.as_str(),
        call.args.as_slice(),
    ) {
        (None, name, [a, b]) if binary_symbol(name).is_some() => {
            let symbol = binary_symbol(name).unwrap_or_default();
            write(out, a, prec);
            out.push(' ');
            out.push_str(symbol);
            out.push(' ');
            // Left-associative: the right side needs parentheses at equal
            // precedence.
            write(out, b, prec + 1);
        }
        (None, operators::LOGICAL_NOT, [a]) => {
            out.push('!');
            write(out, a, prec);
        }
        (None, operators::NEGATE, [a]) => {
            out.push('-');
            write(out, a, prec);
        }
        (None, operators::CONDITIONAL, [c, a, b]) => {
            write(out, c, prec + 1);
            out.push_str(" ? ");
            write(out, a, prec + 1);
            out.push_str(" : ");
            write(out, b, prec);
        }
        (None, operators::INDEX, [container, index]) => {
            write(out, container, 9);
            out.push('[');
            write(out, index, 0);
            out.push(']');
        }
        (target, name, args) => {
            if let Some(target) = target {
                write(out, target, 9);
                out.push('.');
            }
            // The loader renames `matches` and others (`matches#cached`);
            // messages show them as written.
            out.push_str(name.split_once('#').map_or(name, |(written, _)| written));
            out.push('(');
            match (name, args.split_last()) {
                // The ranges argument became its own canonical text.
                (IN_CIDR_LITERAL, Some((last, rest))) => {
                    write_list(out, rest);
                    if !rest.is_empty() {
                        out.push_str(", ");
                    }
                    match &last.expr {
                        Expr::Literal(LiteralValue::String(text)) => out.push_str(text.inner()),
                        _ => write(out, last, 0),
                    }
                }
                _ => write_list(out, args),
            }
            out.push(')');
        }
    }
}

fn write_map(out: &mut String, map: &MapExpr) {
    out.push('{');
    for (i, entry) in map.entries.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        if let EntryExpr::MapEntry(e) = &entry.expr {
            write(out, &e.key, 0);
            out.push_str(": ");
            write(out, &e.value, 0);
        }
    }
    out.push('}');
}

fn write_list(out: &mut String, items: &[IdedExpr]) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write(out, item, 0);
    }
}

fn write_literal(out: &mut String, literal: &LiteralValue) {
    match literal {
        LiteralValue::Boolean(b) => out.push_str(if *b.inner() { "true" } else { "false" }),
        LiteralValue::Int(i) => out.push_str(&i.inner().to_string()),
        LiteralValue::UInt(u) => {
            out.push_str(&u.inner().to_string());
            out.push('u');
        }
        LiteralValue::Double(d) => {
            let v = *d.inner();
            if v.fract() == 0.0 && v.is_finite() {
                out.push_str(&format!("{v:.1}"));
            } else {
                out.push_str(&v.to_string());
            }
        }
        LiteralValue::String(s) => {
            out.push_str(&serde_json::to_string(s.inner()).unwrap_or_default());
        }
        LiteralValue::Bytes(b) => {
            out.push_str("b\"");
            for byte in b.inner().iter() {
                out.push_str(&format!("\\x{byte:02x}"));
            }
            out.push('"');
        }
        LiteralValue::Null => out.push_str("null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::functions::environment;

    fn round_trip(source: &str) -> String {
        unparse(&environment().parser().parse(source).unwrap())
    }

    #[test]
    fn expressions_read_back_as_canonical_text() {
        let cases = [
            ("source.id=='a'", "source.id == \"a\""),
            ("a && b || c", "a && b || c"),
            ("a && (b || c)", "a && (b || c)"),
            ("!(a || b)", "!(a || b)"),
            (
                "request.headers['x-a'] in ['1', '2']",
                "request.headers[\"x-a\"] in [\"1\", \"2\"]",
            ),
            (
                "request.path.startsWith('/a/')",
                "request.path.startsWith(\"/a/\")",
            ),
            ("has(request.headers.x)", "has(request.headers.x)"),
            ("1 - (2 - 3)", "1 - (2 - 3)"),
            ("x ? 1 : 2u", "x ? 1 : 2u"),
            ("{'a': 1.5, 'b': -2}", "{\"a\": 1.5, \"b\": -2}"),
            (
                "matches(request.path, '^/a$')",
                "matches(request.path, \"^/a$\")",
            ),
        ];
        for (source, expected) in cases {
            assert_eq!(round_trip(source), expected, "{source}");
        }
    }
}
