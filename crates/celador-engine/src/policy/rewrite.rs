//! Rewriting: a type-checked condition prepared for evaluation.
//!
//! Data flow: [`super::compile`] runs both passes on each rule's AST after
//! the checker and the lints' inputs are done with it, before the rule is
//! stored: the rule evaluated is the rule written, in fewer steps.

use cel::IdedExpr;
use cel::common::ast::Expr;

use super::{functions, schema};

/// Turns `source.id` (a select on a variable) into the single identifier
/// `source.id`, which the activation resolves in one lookup: `cel` resolves
/// a select on a name as a qualified name, allocating as it goes. Names that
/// a comprehension binds (`bound`, which hide a variable of the same name) are left alone.
pub(super) fn flatten_fields(expr: &mut IdedExpr, bound: &mut Vec<String>) {
    match &mut expr.expr {
        Expr::Select(select) if !select.test => {
            if let Expr::Ident(name) = &select.operand.expr
                && !bound.contains(name)
                && let Some(schema::FieldTy::Object(object)) = schema::variable(name).map(|v| v.ty)
                && object.field(&select.field).is_some()
            {
                let flat = format!("{name}.{}", select.field);
                expr.expr = Expr::Ident(flat);
            } else {
                flatten_fields(&mut select.operand, bound);
            }
        }
        Expr::Select(select) => flatten_fields(&mut select.operand, bound),
        Expr::Call(call) => {
            if let Some(target) = &mut call.target {
                flatten_fields(target, bound);
            }
            for arg in &mut call.args {
                flatten_fields(arg, bound);
            }
        }
        Expr::List(list) => {
            for element in &mut list.elements {
                flatten_fields(element, bound);
            }
        }
        Expr::Map(map) => {
            for entry in &mut map.entries {
                if let cel::common::ast::EntryExpr::MapEntry(e) = &mut entry.expr {
                    flatten_fields(&mut e.key, bound);
                    flatten_fields(&mut e.value, bound);
                }
            }
        }
        Expr::Comprehension(comp) => {
            flatten_fields(&mut comp.iter_range, bound);
            flatten_fields(&mut comp.accu_init, bound);
            let depth = bound.len();
            bound.push(comp.iter_var.clone());
            bound.extend(comp.iter_var2.clone());
            bound.push(comp.accu_var.clone());
            flatten_fields(&mut comp.loop_cond, bound);
            flatten_fields(&mut comp.loop_step, bound);
            flatten_fields(&mut comp.result, bound);
            bound.truncate(depth);
        }
        Expr::Struct(_) | Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

/// Points `matches` calls at the cached implementation (see [`functions`]).
pub(super) fn rename_matches(expr: &mut IdedExpr) {
    match &mut expr.expr {
        Expr::Call(call) => {
            if call.func_name == "matches" {
                call.func_name = functions::MATCHES_INTERNAL.to_owned();
            }
            if let Some(target) = &mut call.target {
                rename_matches(target);
            }
            call.args.iter_mut().for_each(rename_matches);
        }
        Expr::Select(select) => rename_matches(&mut select.operand),
        Expr::List(list) => list.elements.iter_mut().for_each(rename_matches),
        Expr::Map(map) => {
            for entry in &mut map.entries {
                if let cel::common::ast::EntryExpr::MapEntry(e) = &mut entry.expr {
                    rename_matches(&mut e.key);
                    rename_matches(&mut e.value);
                }
            }
        }
        Expr::Comprehension(comp) => {
            rename_matches(&mut comp.iter_range);
            rename_matches(&mut comp.accu_init);
            rename_matches(&mut comp.loop_cond);
            rename_matches(&mut comp.loop_step);
            rename_matches(&mut comp.result);
        }
        Expr::Struct(_) | Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}
