//! The rule checker: static types for CEL, which the `cel` crate lacks.
//!
//! Data flow: every rule's parsed expression passes through [`check`] when a
//! rules file is loaded (by `serve` and by `celador check` alike). It infers
//! a type for each node from [`super::schema`], so an unknown variable, field
//! or function, or an operator applied to types it cannot take, is an error
//! with its position before any request is evaluated. Where the type of a
//! value is only known at evaluation (`dyn`), the checker gives it the
//! benefit of the doubt: evaluation errors then fail closed.

use std::collections::BTreeSet;

use cel::IdedExpr;
use cel::common::ast::{
    ComprehensionExpr, EntryExpr, Expr, LiteralValue, MapExpr, SelectExpr, SourceInfo, operators,
};

use super::kubernetes::comprehensions;
use super::schema::{self, Object, Ty};
use super::unparse::unparse;

/// One problem in an expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// Byte offset in the expression where the problem is.
    pub offset: u32,
    /// What is wrong, and the fix when one is likely.
    pub message: String,
}

/// What the checker learned about an expression.
#[derive(Debug, Default)]
pub(crate) struct Checked {
    /// The expression's type.
    pub ty: Option<Ty>,
    /// Every error found.
    pub errors: Vec<Problem>,
    /// The regular expressions written as literals in `matches` calls, with
    /// their offsets, to compile at load.
    pub regex_literals: Vec<(String, u32)>,
    /// The attributes the expression reads, as dotted paths
    /// (`source.id`, `request.headers`).
    pub reads: BTreeSet<String>,
    /// Every read of a map key (`request.headers["x"]`, `context.route`),
    /// which fails when the key is absent.
    pub map_reads: Vec<MapRead>,
    /// Every presence test of a map key (`has(m.k)`, `"k" in m`), as
    /// (map, key) in source text.
    pub guards: BTreeSet<(String, String)>,
}

/// A read of a key of a map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MapRead {
    /// Byte offset of the read.
    pub offset: u32,
    /// The map, as source text (`request.headers`).
    pub map: String,
    /// The key, as source text (`"x-debug"`).
    pub key: String,
}

/// Type-checks `expr`, parsed from `info.source`.
pub(crate) fn check(expr: &IdedExpr, info: &SourceInfo) -> Checked {
    let mut checker = Checker {
        info,
        scopes: Vec::new(),
        out: Checked::default(),
    };
    let ty = checker.infer(expr);
    checker.out.ty = Some(ty);
    checker.out
}

struct Checker<'a> {
    info: &'a SourceInfo,
    /// Comprehension variables, innermost last.
    scopes: Vec<(String, Ty)>,
    out: Checked,
}

impl Checker<'_> {
    fn offset(&self, expr: &IdedExpr) -> u32 {
        self.info.offset_for(expr.id).map_or(0, |(start, _)| start)
    }

    fn error(&mut self, expr: &IdedExpr, message: String) -> Ty {
        let offset = self.offset(expr);
        self.error_at(offset, message)
    }

    /// Where the name of the function a call node calls starts: the node
    /// sits on the call's `(`, and a person looks for the name.
    fn name_offset(&self, call: &IdedExpr, name: &str) -> u32 {
        let offset = self.offset(call);
        let len = u32::try_from(name.len()).unwrap_or(0);
        let start = offset.saturating_sub(len);
        let written = self
            .info
            .source
            .get(start as usize..offset as usize)
            .is_some_and(|text| text == name);
        if written { start } else { offset }
    }

    fn error_at(&mut self, offset: u32, message: String) -> Ty {
        // One node can be reached twice (a macro expansion shares nodes);
        // report each problem once.
        let problem = Problem { offset, message };
        if !self.out.errors.contains(&problem) {
            self.out.errors.push(problem);
        }
        Ty::Dyn
    }

    fn infer(&mut self, expr: &IdedExpr) -> Ty {
        match &expr.expr {
            Expr::Literal(literal) => literal_type(literal),
            Expr::Ident(name) => self.ident(expr, name),
            Expr::Select(select) => self.select_expr(expr, select),
            Expr::Call(call) => {
                let target = call.target.as_deref();
                self.call(expr, &call.func_name, target, &call.args)
            }
            Expr::List(list) => {
                let mut elems: Vec<Ty> = list.elements.iter().map(|e| self.infer(e)).collect();
                // `[?x]`: an optional element, its value's type unknown here.
                for i in &list.optional_indices {
                    if let Some(elem) = elems.get_mut(*i) {
                        *elem = Ty::Dyn;
                    }
                }
                Ty::List(Box::new(join_all(&elems)))
            }
            Expr::Map(map) => self.map_literal(map),
            Expr::Comprehension(comp) => self.comprehension(comp),
            Expr::Struct(s) => self.error(
                expr,
                format!(
                    "constructing a message ('{}{{...}}') is not supported in rules",
                    s.type_name
                ),
            ),
            Expr::Unspecified => Ty::Dyn,
        }
    }

    /// `a.b`, or `has(a.b)` when `select.test`; records what it reads.
    fn select_expr(&mut self, expr: &IdedExpr, select: &SelectExpr) -> Ty {
        let operand = self.infer(&select.operand);
        let ty = self.select(expr, &operand, &select.field);
        if let Some(path) = read_path(expr) {
            self.out.reads.insert(path);
        }
        if matches!(operand, Ty::Map(..)) {
            let map = unparse(&select.operand);
            let key = serde_json::to_string(&select.field).unwrap_or_default();
            if select.test {
                self.out.guards.insert((map, key));
            } else {
                let offset = self.offset(expr);
                self.out.map_reads.push(MapRead { offset, map, key });
            }
        }
        if select.test { Ty::Bool } else { ty }
    }

    /// A map literal: keys of a type CEL allows.
    fn map_literal(&mut self, map: &MapExpr) -> Ty {
        let mut keys = Vec::new();
        let mut values = Vec::new();
        for entry in &map.entries {
            if let EntryExpr::MapEntry(e) = &entry.expr {
                let key = self.infer(&e.key);
                if !matches!(key, Ty::String | Ty::Int | Ty::Uint | Ty::Bool | Ty::Dyn) {
                    self.error(
                        &e.key,
                        format!("a map key must be a string, int, uint or bool, not {key}"),
                    );
                }
                keys.push(key);
                let value = self.infer(&e.value);
                values.push(if e.optional { Ty::Dyn } else { value });
            }
        }
        Ty::Map(Box::new(join_all(&keys)), Box::new(join_all(&values)))
    }

    /// A macro's loop (`all`, `exists`, `map`, `filter`, ...), with its
    /// variables in scope.
    fn comprehension(&mut self, comp: &ComprehensionExpr) -> Ty {
        let range = self.infer(&comp.iter_range);
        let (first, second) = match &range {
            Ty::List(elem) => (Ty::Int, (**elem).clone()),
            Ty::Map(key, value) => ((**key).clone(), (**value).clone()),
            Ty::Dyn => (Ty::Dyn, Ty::Dyn),
            other => {
                self.error(
                    &comp.iter_range,
                    format!("cannot iterate over a value of type {other}; only lists and maps"),
                );
                (Ty::Dyn, Ty::Dyn)
            }
        };
        // One variable binds list elements or map keys; with two, the first
        // is the index or key and the second the value.
        let bindings = match &comp.iter_var2 {
            None if matches!(range, Ty::List(_)) => vec![(comp.iter_var.clone(), second)],
            None => vec![(comp.iter_var.clone(), first)],
            Some(var2) => vec![(comp.iter_var.clone(), first), (var2.clone(), second)],
        };
        let accu = self.infer(&comp.accu_init);
        let depth = self.scopes.len();
        self.scopes.extend(bindings);
        self.scopes.push((comp.accu_var.clone(), accu));
        self.infer(&comp.loop_cond);
        let step = self.infer(&comp.loop_step);
        if let Some(slot) = self.scopes.last_mut() {
            slot.1 = step;
        }
        let result = self.infer(&comp.result);
        self.scopes.truncate(depth);
        result
    }

    fn ident(&mut self, expr: &IdedExpr, name: &str) -> Ty {
        if let Some((_, ty)) = self.scopes.iter().rev().find(|(n, _)| n == name) {
            return ty.clone();
        }
        if let Some(var) = schema::variable(name) {
            self.out.reads.insert(name.to_owned());
            return var.ty.ty();
        }
        if schema::TYPE_NAMES.contains(&name) {
            return Ty::Type;
        }
        let mut candidates: Vec<&str> = schema::VARIABLES.iter().map(|v| v.name).collect();
        // Not the names of macro expansions (`@result`), which no rule can write.
        candidates.extend(
            self.scopes
                .iter()
                .map(|(n, _)| n.as_str())
                .filter(|n| !n.starts_with(['@', '#'])),
        );
        let hint = suggest(name, candidates);
        self.error(expr, format!("undeclared variable '{name}'{hint}"))
    }

    fn select(&mut self, expr: &IdedExpr, operand: &Ty, field: &str) -> Ty {
        match operand {
            Ty::Object(object) => match object.field(field) {
                Some(f) => f.ty.ty(),
                None => self.no_such_field(expr, object, field),
            },
            Ty::Map(key, value) => {
                if !matches!(**key, Ty::String | Ty::Dyn) {
                    let key = key.clone();
                    return self.error(
                        expr,
                        format!("'.{field}' looks up a string key, but this map's keys are {key}"),
                    );
                }
                (**value).clone()
            }
            Ty::Dyn => Ty::Dyn,
            // A select on an optional value is optional too.
            Ty::Opaque("optional_type") => operand.clone(),
            other => {
                let other = other.clone();
                self.error(
                    expr,
                    format!("a value of type {other} has no fields; '.{field}' cannot be selected"),
                )
            }
        }
    }

    fn no_such_field(&mut self, expr: &IdedExpr, object: &Object, field: &str) -> Ty {
        let hint = suggest(field, object.fields.iter().map(|f| f.name));
        let owner = read_path(expr)
            .and_then(|p| p.rsplit_once('.').map(|(owner, _)| owner.to_owned()))
            .unwrap_or_else(|| object.name.to_owned());
        // The select node sits on the '.'; point at the field name after it.
        let offset = self.offset(expr) + 1;
        self.error_at(offset, format!("'{owner}' has no field '{field}'{hint}"))
    }

    fn call(
        &mut self,
        expr: &IdedExpr,
        name: &str,
        target: Option<&IdedExpr>,
        args: &[IdedExpr],
    ) -> Ty {
        // `strings.quote(x)` parses as a call on the identifier `strings`.
        if let Some(Expr::Ident(namespace)) = target.map(|t| &t.expr)
            && namespace == "strings"
            && name == "quote"
            && !self.scopes.iter().any(|(n, _)| n == "strings")
        {
            let tys = self.infer_all(args);
            return self.check_arity_types(
                expr,
                "strings.quote",
                &tys,
                &[schema::Param::String],
                schema::Param::String,
            );
        }
        if let Some(message) = macro_arity(name, target, args) {
            let at = self.name_offset(expr, name);
            return self.error_at(at, message);
        }
        // `sets.contains(a, b)`, `ip.isCanonical(s)`: a namespaced function,
        // which parses as a call on the identifier of its namespace.
        if let Some(Expr::Ident(namespace)) = target.map(|t| &t.expr)
            && !self.scopes.iter().any(|(n, _)| n == namespace)
            && schema::variable(namespace).is_none()
            && let Some(function) = schema::function(&format!("{namespace}.{name}"))
        {
            let tys = self.infer_all(args);
            return self.function(expr, function.name, None, &tys);
        }
        if let Some(Expr::Ident(namespace)) = target.map(|t| &t.expr)
            && !self.scopes.iter().any(|(n, _)| n == namespace)
            && schema::variable(namespace).is_none()
            && let prefix = format!("{namespace}.")
            && schema::FUNCTIONS
                .iter()
                .any(|f| f.name.starts_with(&prefix))
        {
            let names = schema::FUNCTIONS.iter().map(|f| f.name);
            let hint = suggest(&format!("{prefix}{name}"), names);
            let at = self.name_offset(expr, name);
            return self.error_at(at, format!("undeclared function '{prefix}{name}'{hint}"));
        }
        let target_ty = target.map(|t| self.infer(t));
        let tys = self.infer_all(args);
        if target_ty.is_none()
            && let Some(ty) = self.operator(expr, name, args, &tys)
        {
            return ty;
        }
        self.regex_literal(name, args);
        if let Some(ty) = kubernetes_result(name, target_ty.as_ref()) {
            return ty;
        }
        self.function(expr, name, target_ty.as_ref(), &tys)
    }

    /// The type of an operator's call, checking its operands; `None` when
    /// `name` is no operator of that arity.
    fn operator(
        &mut self,
        expr: &IdedExpr,
        name: &str,
        args: &[IdedExpr],
        tys: &[Ty],
    ) -> Option<Ty> {
        Some(match (name, tys) {
            (operators::LOGICAL_AND | operators::LOGICAL_OR, [_, _]) => {
                self.logical(name, args, tys)
            }
            (operators::LOGICAL_NOT, [a]) => {
                if !matches!(a, Ty::Bool | Ty::Dyn) {
                    self.error(expr, format!("'!' takes a bool, but this is {a}"));
                }
                Ty::Bool
            }
            (operators::NOT_STRICTLY_FALSE, [_]) => Ty::Bool,
            (operators::CONDITIONAL, [c, a, b]) => {
                if !matches!(c, Ty::Bool | Ty::Dyn) {
                    self.error(
                        expr,
                        format!("the condition of '? :' must be bool, but it is {c}"),
                    );
                }
                join(a, b)
            }
            (operators::EQUALS | operators::NOT_EQUALS, [a, b]) => self.equality(expr, name, a, b),
            (
                operators::LESS
                | operators::LESS_EQUALS
                | operators::GREATER
                | operators::GREATER_EQUALS,
                [a, b],
            ) => {
                if !orderable(a, b) {
                    let symbol = operator_symbol(name);
                    self.error(expr, format!("'{symbol}' cannot order {a} and {b}"));
                }
                Ty::Bool
            }
            (
                operators::ADD
                | operators::SUBSTRACT
                | operators::MULTIPLY
                | operators::DIVIDE
                | operators::MODULO,
                [a, b],
            ) => arithmetic(name, a, b).unwrap_or_else(|| {
                let symbol = operator_symbol(name);
                self.error(expr, format!("'{symbol}' cannot be applied to {a} and {b}"))
            }),
            (operators::NEGATE, [a]) => match a {
                Ty::Int | Ty::Double | Ty::Duration | Ty::Dyn => a.clone(),
                other => self.error(expr, format!("'-' cannot negate {other}")),
            },
            (operators::INDEX, [container, index]) => {
                self.index_operator(expr, args, container, index)
            }
            (operators::IN, [elem, container]) => self.membership(expr, args, elem, container),
            (operators::OPT_SELECT | operators::OPT_INDEX, [container, key]) => {
                self.optional_access(expr, name, args, container, key)
            }
            _ => return None,
        })
    }

    /// `c[i]`; a read of a map's key is recorded.
    fn index_operator(
        &mut self,
        expr: &IdedExpr,
        args: &[IdedExpr],
        container: &Ty,
        index: &Ty,
    ) -> Ty {
        let hidden = args.first().is_some_and(is_hidden);
        if hidden && !matches!(container, Ty::List(_) | Ty::Map(..) | Ty::Dyn) {
            // An expansion's `@target[k]` on what it cannot iterate over:
            // `@iter` said so already.
            return Ty::Dyn;
        }
        if let (Ty::Map(..), [map, key], false) = (container, args, hidden) {
            let offset = self.offset(expr);
            self.out.map_reads.push(MapRead {
                offset,
                map: unparse(map),
                key: unparse(key),
            });
        }
        self.index(expr, container, index)
    }

    /// `a.?b` and `m[?k]`: an optional of what `a.b` or `m[k]` would be,
    /// empty where that is absent.
    fn optional_access(
        &mut self,
        expr: &IdedExpr,
        name: &str,
        args: &[IdedExpr],
        container: &Ty,
        key: &Ty,
    ) -> Ty {
        let field = match args.get(1).map(|a| &a.expr) {
            Some(Expr::Literal(LiteralValue::String(field))) => Some(field.inner().to_owned()),
            _ => None,
        };
        // On an optional value, `.?` and `[?]` apply to what it holds.
        let optional = schema::Param::Optional.ty();
        let container = if *container == optional {
            &Ty::Dyn
        } else {
            container
        };
        match (name, field) {
            (operators::OPT_SELECT, Some(field)) => self.select(expr, container, &field),
            _ => self.index(expr, container, key),
        };
        schema::Param::Optional.ty()
    }

    /// `&&` and `||`: bool operands.
    fn logical(&mut self, name: &str, args: &[IdedExpr], tys: &[Ty]) -> Ty {
        let symbol = if name == operators::LOGICAL_AND {
            "&&"
        } else {
            "||"
        };
        for (arg, ty) in args.iter().zip(tys) {
            if !matches!(ty, Ty::Bool | Ty::Dyn) {
                self.error(
                    arg,
                    format!("'{symbol}' takes bool operands, but this is {ty}"),
                );
            }
        }
        Ty::Bool
    }

    /// `==` and `!=`, which CEL allows between any types but which are
    /// constant between types that never compare equal.
    fn equality(&mut self, expr: &IdedExpr, name: &str, a: &Ty, b: &Ty) -> Ty {
        if !comparable_for_equality(a, b) {
            let (symbol, always) = if name == operators::EQUALS {
                ("==", "false")
            } else {
                ("!=", "true")
            };
            self.error(
                expr,
                format!("'{symbol}' compares {a} with {b}, which is always {always}"),
            );
        }
        Ty::Bool
    }

    /// `elem in container`; a map on the right guards its key.
    fn membership(&mut self, expr: &IdedExpr, args: &[IdedExpr], elem: &Ty, container: &Ty) -> Ty {
        if let (Ty::Map(..), [key, map]) = (container, args) {
            self.out.guards.insert((unparse(map), unparse(key)));
        }
        match container {
            Ty::List(item) if !comparable_for_equality(elem, item) => {
                self.error(
                    expr,
                    format!("'in' looks for {elem} in a list of {item}, which is always false"),
                );
            }
            Ty::Map(key, _) if !comparable_for_equality(elem, key) => {
                self.error(
                    expr,
                    format!(
                        "'in' looks for {elem} among map keys of type {key}, which is always false"
                    ),
                );
            }
            Ty::List(_) | Ty::Map(..) | Ty::Dyn => {}
            other => {
                self.error(
                    expr,
                    format!("'in' needs a list or a map on its right, not {other}"),
                );
            }
        }
        Ty::Bool
    }

    fn infer_all(&mut self, args: &[IdedExpr]) -> Vec<Ty> {
        args.iter().map(|a| self.infer(a)).collect()
    }

    fn index(&mut self, expr: &IdedExpr, container: &Ty, index: &Ty) -> Ty {
        match container {
            Ty::List(elem) => {
                if !matches!(index, Ty::Int | Ty::Uint | Ty::Dyn) {
                    let index = index.clone();
                    return self.error(expr, format!("a list is indexed by int, not {index}"));
                }
                (**elem).clone()
            }
            Ty::Map(key, value) => {
                if !comparable_for_equality(index, key) {
                    let (index, key) = (index.clone(), key.clone());
                    return self.error(
                        expr,
                        format!("this map's keys are {key}; it cannot be indexed by {index}"),
                    );
                }
                (**value).clone()
            }
            Ty::Dyn => Ty::Dyn,
            other => {
                let other = other.clone();
                self.error(
                    expr,
                    format!("a value of type {other} cannot be indexed with '[...]'"),
                )
            }
        }
    }

    fn function(&mut self, expr: &IdedExpr, name: &str, target: Option<&Ty>, tys: &[Ty]) -> Ty {
        if target.is_none()
            && let Some(ty) = comprehensions::checked_type(name, tys)
        {
            return ty.unwrap_or_else(|message| self.error(expr, message));
        }
        let at = self.name_offset(expr, name);
        let Some(function) = schema::function(name) else {
            let names = schema::FUNCTIONS.iter().map(|f| f.name);
            let hint = suggest(name, names.chain(MACROS.iter().copied()));
            let what = if target.is_some() {
                "method"
            } else {
                "function"
            };
            return self.error_at(at, format!("undeclared {what} '{name}'{hint}"));
        };
        let is_method = target.is_some();
        let styled: Vec<_> = function
            .overloads
            .iter()
            .filter(|o| o.receiver.is_some() == is_method)
            .collect();
        if styled.is_empty() {
            let usage = if is_method {
                format!("'{name}' is a function, called as {name}(...), not as a method")
            } else {
                format!("'{name}' is a method, called as x.{name}(...)")
            };
            return self.error_at(at, usage);
        }
        let matching: Vec<_> = styled
            .iter()
            .filter(|o| {
                o.args.len() == tys.len()
                    && o.receiver
                        .is_none_or(|r| target.is_some_and(|t| r.accepts(t)))
                    && o.args.iter().zip(tys).all(|(p, t)| p.accepts(t))
            })
            .collect();
        match matching.as_slice() {
            [] => {
                let message = no_overload(name, target, tys, &styled);
                self.error_at(at, message)
            }
            [only] => only.result.ty(),
            several => {
                let first = several.first().map(|o| o.result.ty()).unwrap_or(Ty::Dyn);
                if several.iter().all(|o| o.result.ty() == first) {
                    first
                } else {
                    Ty::Dyn
                }
            }
        }
    }

    /// Records a literal pattern of `matches` (its last argument), `find`
    /// or `findAll` (their first), to compile at load.
    fn regex_literal(&mut self, name: &str, args: &[IdedExpr]) {
        let pattern = match name {
            "matches" => args.last(),
            "find" | "findAll" => args.first(),
            _ => None,
        };
        if let Some(pattern) = pattern
            && let Expr::Literal(LiteralValue::String(s)) = &pattern.expr
        {
            let offset = self.offset(pattern);
            self.out.regex_literals.push((s.inner().to_owned(), offset));
        }
    }

    fn check_arity_types(
        &mut self,
        expr: &IdedExpr,
        name: &str,
        tys: &[Ty],
        params: &[schema::Param],
        result: schema::Param,
    ) -> Ty {
        if tys.len() != params.len() || !params.iter().zip(tys).all(|(p, t)| p.accepts(t)) {
            let got: Vec<String> = tys.iter().map(Ty::to_string).collect();
            let want: Vec<String> = params.iter().map(ToString::to_string).collect();
            return self.error(
                expr,
                format!(
                    "'{name}' takes ({}), not ({})",
                    want.join(", "),
                    got.join(", ")
                ),
            );
        }
        result.ty()
    }
}

/// The type of a call the schema's signatures cannot say: what the lists
/// extension's `sortBy` macro expands to (the list sorted), and Kubernetes'
/// list aggregates (`sum`, `min`, `max` of a list are of its element type).
fn kubernetes_result(name: &str, target: Option<&Ty>) -> Option<Ty> {
    match (name, target) {
        ("@sortByAssociatedKeys", target) => Some(target.cloned().unwrap_or(Ty::Dyn)),
        ("sum" | "min" | "max", Some(Ty::List(elem))) => Some((**elem).clone()),
        _ => None,
    }
}

/// The macros a rule can call (expanded by the parser, so not in the
/// schema), for did-you-mean hints.
const MACROS: &[&str] = &[
    "has",
    "all",
    "exists",
    "exists_one",
    "existsOne",
    "map",
    "filter",
    "sortBy",
    "optMap",
    "optFlatMap",
    "transformList",
    "transformMap",
    "transformMapEntry",
];

/// Why a call of a comprehension macro's name was not expanded: it has
/// an argument count no macro takes.
fn macro_arity(name: &str, target: Option<&IdedExpr>, args: &[IdedExpr]) -> Option<String> {
    let usage = match name {
        "all" | "exists" | "existsOne" => "(x, predicate) or (k, v, predicate)",
        "exists_one" => "(x, predicate)",
        "map" => "(x, expression) or (x, filter, expression)",
        "filter" => "(x, predicate)",
        "transformList" | "transformMap" | "transformMapEntry" => {
            "(k, v, expression) or (k, v, filter, expression)"
        }
        _ => return None,
    };
    target
        .is_some()
        .then(|| format!("'{name}' takes {usage}, not {} arguments", args.len()))
}

/// Why no overload of `name` takes these arguments.
fn no_overload(
    name: &str,
    target: Option<&Ty>,
    tys: &[Ty],
    overloads: &[&schema::Overload],
) -> String {
    let args: Vec<String> = tys.iter().map(Ty::to_string).collect();
    let called = match target {
        Some(t) => format!("{t}.{name}({})", args.join(", ")),
        None => format!("{name}({})", args.join(", ")),
    };
    let takes: Vec<String> = overloads.iter().map(|o| o.signature(name)).collect();
    format!(
        "'{name}' cannot be called as {called}; it takes {}",
        takes.join(" or ")
    )
}

fn literal_type(literal: &LiteralValue) -> Ty {
    match literal {
        LiteralValue::Boolean(_) => Ty::Bool,
        LiteralValue::Bytes(_) => Ty::Bytes,
        LiteralValue::Double(_) => Ty::Double,
        LiteralValue::Int(_) => Ty::Int,
        LiteralValue::Null => Ty::Null,
        LiteralValue::String(_) => Ty::String,
        LiteralValue::UInt(_) => Ty::Uint,
    }
}

/// A variable of a macro's expansion (`@target`), which no rule can write.
fn is_hidden(expr: &IdedExpr) -> bool {
    matches!(&expr.expr, Expr::Ident(name) if name.starts_with('@'))
}

/// The dotted path of a select chain rooted at a variable: `request.headers`.
fn read_path(expr: &IdedExpr) -> Option<String> {
    match &expr.expr {
        Expr::Ident(name) => schema::variable(name).map(|_| name.clone()),
        Expr::Select(select) if !select.test => {
            read_path(&select.operand).map(|base| format!("{base}.{}", select.field))
        }
        Expr::Select(select) => read_path(&select.operand),
        _ => None,
    }
}

/// Whether `==` between the two types can ever be true.
fn comparable_for_equality(a: &Ty, b: &Ty) -> bool {
    match (a, b) {
        (Ty::Dyn, _) | (_, Ty::Dyn) => true,
        (x, y) if x.is_numeric() && y.is_numeric() => true,
        (Ty::List(x), Ty::List(y)) => comparable_for_equality(x, y),
        (Ty::Map(k1, v1), Ty::Map(k2, v2)) => {
            comparable_for_equality(k1, k2) && comparable_for_equality(v1, v2)
        }
        (x, y) => x == y,
    }
}

fn orderable(a: &Ty, b: &Ty) -> bool {
    match (a, b) {
        (Ty::Dyn, x) | (x, Ty::Dyn) => {
            !matches!(x, Ty::List(_) | Ty::Map(..) | Ty::Object(_) | Ty::Null)
        }
        (x, y) if x.is_numeric() && y.is_numeric() => true,
        (x, y) => {
            x == y
                && matches!(
                    x,
                    Ty::String | Ty::Bytes | Ty::Bool | Ty::Timestamp | Ty::Duration
                )
        }
    }
}

fn arithmetic(op: &str, a: &Ty, b: &Ty) -> Option<Ty> {
    use Ty::*;
    match (op, a, b) {
        (_, Dyn, Dyn) => Some(Dyn),
        (operators::ADD, Timestamp, Duration) | (operators::ADD, Duration, Timestamp) => {
            Some(Timestamp)
        }
        (operators::ADD | operators::SUBSTRACT, Duration, Duration) => Some(Duration),
        (operators::SUBSTRACT, Timestamp, Timestamp) => Some(Duration),
        (operators::SUBSTRACT, Timestamp, Duration) => Some(Timestamp),
        (operators::ADD, String, String) => Some(String),
        (operators::ADD, Bytes, Bytes) => Some(Bytes),
        (operators::ADD, List(x), List(y)) => Some(List(Box::new(join(x, y)))),
        (operators::MODULO, Int, Int) => Some(Int),
        (operators::MODULO, Uint, Uint) => Some(Uint),
        // Unknown on one side: an integer (or unknown) on the other.
        (operators::MODULO, Dyn, Int | Uint) | (operators::MODULO, Int | Uint, Dyn) => Some(Dyn),
        (operators::MODULO, _, _) => None,
        (_, Int, Int) => Some(Int),
        (_, Uint, Uint) => Some(Uint),
        (_, Double, Double) => Some(Double),
        // One side unknown: the known side must be something the operator
        // takes at all.
        (_, Dyn, x) | (_, x, Dyn) => {
            let takes = match op {
                operators::ADD => matches!(
                    x,
                    Int | Uint | Double | String | Bytes | List(_) | Timestamp | Duration
                ),
                operators::SUBSTRACT => matches!(x, Int | Uint | Double | Timestamp | Duration),
                _ => x.is_numeric(),
            };
            takes.then_some(Dyn)
        }
        _ => None,
    }
}

fn operator_symbol(name: &str) -> &str {
    match name {
        operators::ADD => "+",
        operators::SUBSTRACT => "-",
        operators::MULTIPLY => "*",
        operators::DIVIDE => "/",
        operators::MODULO => "%",
        operators::LESS => "<",
        operators::LESS_EQUALS => "<=",
        operators::GREATER => ">",
        operators::GREATER_EQUALS => ">=",
        other => other,
    }
}

/// The common type of two branches or elements; `dyn` when they differ.
fn join(a: &Ty, b: &Ty) -> Ty {
    if a == b { a.clone() } else { Ty::Dyn }
}

fn join_all(tys: &[Ty]) -> Ty {
    match tys.split_first() {
        None => Ty::Dyn,
        Some((first, rest)) => rest.iter().fold(first.clone(), |acc, t| join(&acc, t)),
    }
}

/// `; did you mean 'x'?` for the nearest candidate, if one is near enough.
pub(crate) fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let lower = name.to_ascii_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        let distance = if candidate.to_ascii_lowercase() == lower {
            0
        } else {
            levenshtein(name, candidate)
        };
        if best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    match best {
        Some((distance, candidate)) if distance <= (name.chars().count() / 3).max(1) => {
            format!("; did you mean '{candidate}'?")
        }
        _ => String::new(),
    }
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row.first().copied().unwrap_or(0);
        if let Some(first) = row.first_mut() {
            *first = i + 1;
        }
        for (j, cb) in b.iter().enumerate() {
            let above = row.get(j + 1).copied().unwrap_or(0);
            let left = row.get(j).copied().unwrap_or(0);
            let cost = usize::from(ca != *cb);
            let value = (above + 1).min(left + 1).min(diagonal + cost);
            diagonal = above;
            if let Some(slot) = row.get_mut(j + 1) {
                *slot = value;
            }
        }
    }
    row.last().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests;
