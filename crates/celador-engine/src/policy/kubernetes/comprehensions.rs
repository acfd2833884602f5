//! Two-variable comprehensions, as cel-go's `ext.TwoVarComprehensions`
//! (which Kubernetes enables) define them: `all(k, v, p)`, `exists(k, v,
//! p)`, `existsOne(k, v, p)`, `transformList(k, v, [filter,] e)`,
//! `transformMap(k, v, [filter,] e)` and `transformMapEntry(k, v, [filter,]
//! e)`. Over a list the first variable is the index and the second the
//! element; over a map, the key and its value.
//!
//! Data flow: [`register`] declares one parser macro per form on the
//! environment, so a rule's parse ([`crate::policy::functions::parser`])
//! expands each call; the checker types the expansion like any other
//! expression (with the help of [`checked_type`]), and the `cel` crate's
//! interpreter evaluates it per request.
//!
//! Why macros expanding to one-variable comprehensions: the crate's parser
//! accepts `m.all(k, v, p)` as a call of three arguments, but its
//! interpreter binds only `iter_var` of a comprehension (it ignores
//! `iter_var2`), and a function of celador's own table receives evaluated
//! arguments (`FunctionContext::args` are values, not expressions), so it
//! cannot evaluate a predicate per element. A macro can: it rewrites
//!
//! ```text
//! T.all(k, v, p)
//! ```
//!
//! into what the crate evaluates, with `bind(x, e, r)` the comprehension over
//! no elements that `cel.bind` and the crate's own `sortBy` expand to:
//!
//! ```text
//! bind(@target, T, @iter(@target).all(k, bind(v, @target[k], p)))
//! ```
//!
//! `@iter` gives a list's indexes, or a map itself (a comprehension over a
//! map iterates over its keys). The target is evaluated once; `@target`,
//! `@iter` and the other names below cannot be written in CEL, so no rule
//! can reach them; `bind(v, …, p)` sits directly in the loop step, so `k`
//! is always the loop's own. The loop steps keep the crate's shapes: `all`
//! and `exists` absorb errors as `&&` and `||` do (cel-go's semantics), and
//! `transformList` appends in place. `transformMap` and `transformMapEntry`
//! collect one-entry maps in a list and merge them once ([`MERGE`]), in
//! linear time: a map accumulator would be copied on every step.

use cel::common::ast::{CallExpr, ComprehensionExpr, Expr, IdedExpr, ListExpr, LiteralValue};
use cel::common::ast::{EntryExpr, IdedEntryExpr, MapEntryExpr, MapExpr, operators};
use cel::common::types::{CelInt, CelList, CelMap, CelMapKey, DYN_TYPE, Kind};
use cel::common::value::{CowVal, Val};
use cel::parser::{Macro, MacroExprHelper, ParseError};
use cel::{DeclarationError, Env, ExecutionError};

use crate::policy::schema::Ty;

/// The variable the target is bound to.
const TARGET: &str = "@target";
/// The accumulator of the crate's own macros, which the steps fold into.
const RESULT: &str = "@result";
/// A list's indexes, or a map itself: what the loop iterates over.
pub(crate) const ITER: &str = "@iter";
/// The one-entry maps of `transformMap` and `transformMapEntry`, merged
/// into one map; a key given twice is an error, as in cel-go.
pub(crate) const MERGE: &str = "@merge";
/// `transformMapEntry`'s expression, which must be a map.
pub(crate) const ENTRY: &str = "@entry";

/// The forms, by the name they are called with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    All,
    Exists,
    ExistsOne,
    TransformList,
    TransformMap,
    TransformMapEntry,
}

impl Form {
    const ALL: [(Form, &'static str); 6] = [
        (Form::All, "all"),
        (Form::Exists, "exists"),
        (Form::ExistsOne, "existsOne"),
        (Form::TransformList, "transformList"),
        (Form::TransformMap, "transformMap"),
        (Form::TransformMapEntry, "transformMapEntry"),
    ];

    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(form, _)| *form == self)
            .map_or("", |(_, name)| name)
    }

    /// Whether the form takes a filter before its expression.
    fn transforms(self) -> bool {
        matches!(
            self,
            Form::TransformList | Form::TransformMap | Form::TransformMapEntry
        )
    }
}

/// Declares the macros and the functions their expansions call on `env`.
pub(crate) fn register(env: &mut Env) -> Result<(), DeclarationError> {
    for (form, name) in Form::ALL {
        let arities: &[usize] = if form.transforms() { &[3, 4] } else { &[3] };
        for &arity in arities {
            env.add_macro(Macro::receiver(name, arity, move |helper, target, args| {
                expand(form, helper, target, args).map(Some)
            }))?;
        }
    }
    env.add_overload(ITER, ITER, vec![DYN_TYPE], iter)?;
    env.add_overload(MERGE, MERGE, vec![DYN_TYPE], merge)?;
    env.add_overload(ENTRY, ENTRY, vec![DYN_TYPE], entry)
}

/// The nodes of an expansion, each with the call's place in the source.
struct Nodes<'h, 'a> {
    helper: &'h mut MacroExprHelper<'a>,
}

impl Nodes<'_, '_> {
    fn node(&mut self, expr: Expr) -> IdedExpr {
        self.helper.next_expr(expr)
    }

    fn ident(&mut self, name: &str) -> IdedExpr {
        self.node(Expr::Ident(name.to_owned()))
    }

    fn call(&mut self, name: &str, args: Vec<IdedExpr>) -> IdedExpr {
        self.node(Expr::Call(CallExpr {
            func_name: name.to_owned(),
            target: None,
            args,
        }))
    }

    fn int(&mut self, i: i64) -> IdedExpr {
        self.node(Expr::Literal(LiteralValue::Int(i.into())))
    }

    fn bool(&mut self, b: bool) -> IdedExpr {
        self.node(Expr::Literal(LiteralValue::Boolean(b.into())))
    }

    fn list(&mut self, elements: Vec<IdedExpr>) -> IdedExpr {
        self.node(Expr::List(ListExpr::new(elements)))
    }

    /// `var` bound to `init` in `result`.
    fn bind(&mut self, var: &str, init: IdedExpr, result: IdedExpr) -> IdedExpr {
        let comprehension = ComprehensionExpr {
            iter_range: self.list(Vec::new()),
            iter_var: "#unused".to_owned(),
            iter_var2: None,
            accu_var: var.to_owned(),
            accu_init: init,
            loop_cond: self.bool(false),
            loop_step: self.ident(var),
            result,
        };
        self.node(Expr::Comprehension(Box::new(comprehension)))
    }

    /// `expr` with `v` bound to the element at `k`.
    fn with_value(&mut self, (k, v): (&str, &str), expr: IdedExpr) -> IdedExpr {
        let target = self.ident(TARGET);
        let key = self.ident(k);
        let value = self.call(operators::INDEX, vec![target, key]);
        self.bind(v, value, expr)
    }

    /// `@result + [item]`, or `filter ? @result + [item] : @result`.
    fn append(&mut self, filter: Option<IdedExpr>, item: IdedExpr) -> IdedExpr {
        let accu = self.ident(RESULT);
        let items = self.list(vec![item]);
        let step = self.call(operators::ADD, vec![accu, items]);
        match filter {
            Some(filter) => {
                let accu = self.ident(RESULT);
                self.call(operators::CONDITIONAL, vec![filter, step, accu])
            }
            None => step,
        }
    }
}

/// Expands `target.<form>(k, v, ...)`.
fn expand(
    form: Form,
    helper: &mut MacroExprHelper<'_>,
    target: &mut Option<IdedExpr>,
    args: &mut Vec<IdedExpr>,
) -> Result<IdedExpr, ParseError> {
    let mut args = std::mem::take(args).into_iter();
    let (Some(first), Some(second), Some(iterated)) = (args.next(), args.next(), target.take())
    else {
        return Err(helper.new_error(0, "expected a target and two variables"));
    };
    let second_id = second.id;
    let k = variable(helper, first)?;
    let v = variable(helper, second)?;
    if k == v {
        return Err(helper.new_error(
            second_id,
            format!(
                "'{}' needs two different variables, not '{k}' twice",
                form.name()
            ),
        ));
    }
    let mut rest: Vec<IdedExpr> = args.collect();
    let mut nodes = Nodes { helper };
    let vars = (k.as_str(), v.as_str());
    let Some(expr) = rest.pop().map(|e| nodes.with_value(vars, e)) else {
        return Err(nodes.helper.new_error(0, "expected an expression"));
    };
    let filter = rest.pop().map(|f| nodes.with_value(vars, f));
    let (init, cond, step, result) = loop_parts(form, &mut nodes, &k, filter, expr);
    let range = {
        let target = nodes.ident(TARGET);
        nodes.call(ITER, vec![target])
    };
    let mut body = nodes.node(Expr::Comprehension(Box::new(ComprehensionExpr {
        iter_range: range,
        iter_var: k,
        iter_var2: None,
        accu_var: RESULT.to_owned(),
        accu_init: init,
        loop_cond: cond,
        loop_step: step,
        result,
    })));
    if matches!(form, Form::TransformMap | Form::TransformMapEntry) {
        body = nodes.call(MERGE, vec![body]);
    }
    Ok(nodes.bind(TARGET, iterated, body))
}

/// The parts of a loop: the accumulator's start, the condition, the step
/// and the result.
type LoopParts = (IdedExpr, IdedExpr, IdedExpr, IdedExpr);

/// The loop of `form`, whose expression (with `v` bound) is `expr`.
fn loop_parts(
    form: Form,
    nodes: &mut Nodes<'_, '_>,
    k: &str,
    filter: Option<IdedExpr>,
    expr: IdedExpr,
) -> LoopParts {
    match form {
        Form::All | Form::Exists => fold(form == Form::All, nodes, expr),
        Form::ExistsOne => {
            let accu = nodes.ident(RESULT);
            let one = nodes.int(1);
            let counted = nodes.call(operators::ADD, vec![accu, one]);
            let accu = nodes.ident(RESULT);
            let step = nodes.call(operators::CONDITIONAL, vec![expr, counted, accu]);
            let accu = nodes.ident(RESULT);
            let one = nodes.int(1);
            let result = nodes.call(operators::EQUALS, vec![accu, one]);
            (nodes.int(0), nodes.bool(true), step, result)
        }
        Form::TransformList => transform(nodes, filter, expr),
        Form::TransformMap => {
            // `{k: e}`, a one-entry map.
            let key = nodes.ident(k);
            let id = nodes.node(Expr::Unspecified).id;
            let entry = MapEntryExpr {
                key,
                value: expr,
                optional: false,
            };
            let item = nodes.node(Expr::Map(MapExpr {
                entries: vec![IdedEntryExpr {
                    id,
                    expr: EntryExpr::MapEntry(entry),
                }],
            }));
            transform(nodes, filter, item)
        }
        Form::TransformMapEntry => {
            let item = nodes.call(ENTRY, vec![expr]);
            transform(nodes, filter, item)
        }
    }
}

/// The loop of `all` (`@result && p`) or `exists` (`@result || p`), which
/// stops once the result is known.
fn fold(all: bool, nodes: &mut Nodes<'_, '_>, predicate: IdedExpr) -> LoopParts {
    let accu = nodes.ident(RESULT);
    let running = if all {
        accu
    } else {
        nodes.call(operators::LOGICAL_NOT, vec![accu])
    };
    let cond = nodes.call(operators::NOT_STRICTLY_FALSE, vec![running]);
    let accu = nodes.ident(RESULT);
    let op = if all {
        operators::LOGICAL_AND
    } else {
        operators::LOGICAL_OR
    };
    let step = nodes.call(op, vec![accu, predicate]);
    (nodes.bool(all), cond, step, nodes.ident(RESULT))
}

/// The loop that appends `item` for each element that passes `filter`.
fn transform(nodes: &mut Nodes<'_, '_>, filter: Option<IdedExpr>, item: IdedExpr) -> LoopParts {
    let step = nodes.append(filter, item);
    (
        nodes.list(Vec::new()),
        nodes.bool(true),
        step,
        nodes.ident(RESULT),
    )
}

/// The name an iteration variable argument gives, or the parse error.
fn variable(helper: &MacroExprHelper<'_>, arg: IdedExpr) -> Result<String, ParseError> {
    match arg.expr {
        Expr::Ident(name) => Ok(name),
        _ => Err(helper.new_error(arg.id, "argument must be a simple name")),
    }
}

/// `@iter(x)`: a list's indexes, or a map itself.
fn iter<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let target = only(args)?;
    match target.get_type().kind() {
        Kind::Map => Ok(target),
        Kind::List => {
            let size = target.as_sizer().map_or(0, |s| *s.size().inner());
            let indexes: Vec<Box<dyn Val + 'v>> = (0..size)
                .map(|i| Box::new(CelInt::from(i)) as Box<dyn Val + 'v>)
                .collect();
            Ok(CowVal::owned(CelList::from(indexes)))
        }
        _ => Err(ExecutionError::UnexpectedType {
            got: target.get_type().name().to_owned(),
            want: "list or map".to_owned(),
        }),
    }
}

/// `@entry(x)`: `x`, which must be a map.
fn entry<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let value = only(args)?;
    if value.get_type().kind() == Kind::Map {
        return Ok(value);
    }
    Err(ExecutionError::function_error(
        "transformMapEntry",
        format!(
            "the expression must give a map, not {}",
            value.get_type().name()
        ),
    ))
}

/// `@merge(list)`: the maps of `list` as one; a key in two is an error.
fn merge<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let list = only(args)?;
    let mut merged = std::collections::HashMap::new();
    let maps = list
        .as_iterable()
        .ok_or_else(|| ExecutionError::function_error(MERGE, "takes a list"))?;
    let mut maps = maps.iter();
    while let Some(map) = maps.next() {
        let (Some(keys), Some(indexer)) = (map.as_iterable(), map.as_indexer()) else {
            return Err(ExecutionError::function_error(
                "transformMapEntry",
                format!(
                    "the expression must give a map, not {}",
                    map.get_type().name()
                ),
            ));
        };
        let mut keys = keys.iter();
        while let Some(key) = keys.next() {
            let value = indexer.get(key)?.into_owned();
            let key = CelMapKey::try_from(key.clone_as_boxed())?;
            if merged.contains_key(&key) {
                // The whole key, quoted: redaction finds a secret one.
                let shown = match &key {
                    CelMapKey::String(s) => format!("{:?}", s.inner()),
                    CelMapKey::Int(i) => i.inner().to_string(),
                    CelMapKey::UInt(u) => format!("{}u", u.inner()),
                    CelMapKey::Bool(b) => b.inner().to_string(),
                };
                return Err(ExecutionError::function_error(
                    "transformMapEntry",
                    format!("insert failed: key {shown} already exists"),
                ));
            }
            merged.insert(key, value);
        }
    }
    Ok(CowVal::owned(CelMap::from(merged)))
}

fn only<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let count = args.len();
    let mut args = args.into_iter();
    match (args.next(), args.next()) {
        (Some(only), None) => Ok(only),
        _ => Err(ExecutionError::invalid_argument_count(1, count)),
    }
}

/// The checker's type of a call of an expansion's function: `None` for any
/// other function, an error message when the argument cannot be taken.
pub(crate) fn checked_type(name: &str, args: &[Ty]) -> Option<Result<Ty, String>> {
    let [arg] = args else {
        return None;
    };
    Some(match name {
        ITER => match arg {
            Ty::List(_) => Ok(Ty::List(Box::new(Ty::Int))),
            Ty::Map(..) | Ty::Dyn => Ok(arg.clone()),
            other => Err(format!(
                "cannot iterate over a value of type {other}; only lists and maps"
            )),
        },
        ENTRY => match arg {
            Ty::Map(..) | Ty::Dyn => Ok(arg.clone()),
            other => Err(format!(
                "transformMapEntry's expression must give a map (such as {{k: v}}), not {other}"
            )),
        },
        MERGE => match arg {
            Ty::List(elem) if matches!(**elem, Ty::Map(..)) => Ok((**elem).clone()),
            _ => Ok(Ty::Map(Box::new(Ty::Dyn), Box::new(Ty::Dyn))),
        },
        _ => return None,
    })
}

/// A two-variable comprehension as it was written, recognised in its
/// expansion: for messages, which quote conditions as written.
pub(crate) struct Written<'e> {
    /// `T` of `T.all(k, v, p)`.
    pub target: &'e IdedExpr,
    /// `all`, `exists`, ...
    pub name: &'static str,
    /// The two variables.
    pub vars: (&'e str, &'e str),
    /// The filter, if any, then the predicate or expression.
    pub args: Vec<&'e IdedExpr>,
}

/// `comp` as written, if it is the expansion of a two-variable comprehension.
pub(crate) fn written(comp: &ComprehensionExpr) -> Option<Written<'_>> {
    if comp.accu_var != TARGET || !is_empty_list(&comp.iter_range) {
        return None;
    }
    let (body, merged) = match &comp.result.expr {
        Expr::Comprehension(body) => (body, false),
        Expr::Call(call) if call.func_name == MERGE => match call.args.as_slice() {
            [
                IdedExpr {
                    expr: Expr::Comprehension(body),
                    ..
                },
            ] => (body, true),
            _ => return None,
        },
        _ => return None,
    };
    let k = body.iter_var.as_str();
    let (name, parts): (&'static str, Vec<&IdedExpr>) = match step_shape(&body.loop_step)? {
        Step::Fold(op, p) if op == operators::LOGICAL_AND => ("all", vec![p]),
        Step::Fold(_, p) => ("exists", vec![p]),
        Step::Count(p) => ("existsOne", vec![p]),
        Step::Append(filter, item) if merged => {
            let (name, item) = match &item.expr {
                Expr::Map(map) => match map.entries.as_slice() {
                    [entry] => match &entry.expr {
                        EntryExpr::MapEntry(e) => ("transformMap", &e.value),
                        EntryExpr::StructField(_) => return None,
                    },
                    _ => return None,
                },
                Expr::Call(call) if call.func_name == ENTRY => {
                    ("transformMapEntry", call.args.first()?)
                }
                _ => return None,
            };
            (name, filter.into_iter().chain([item]).collect())
        }
        Step::Append(filter, item) => ("transformList", filter.into_iter().chain([item]).collect()),
    };
    let mut v = None;
    let mut args = Vec::new();
    for part in parts {
        let (var, inner) = bound_value(part, k)?;
        v = Some(var);
        args.push(inner);
    }
    Some(Written {
        target: &comp.accu_init,
        name,
        vars: (k, v?),
        args,
    })
}

/// The loop step of an expansion.
enum Step<'e> {
    /// `@result && p`, `@result || p`.
    Fold(&'e str, &'e IdedExpr),
    /// `p ? @result + 1 : @result`.
    Count(&'e IdedExpr),
    /// `@result + [e]`, or `f ? @result + [e] : @result`.
    Append(Option<&'e IdedExpr>, &'e IdedExpr),
}

fn step_shape(step: &IdedExpr) -> Option<Step<'_>> {
    let Expr::Call(call) = &step.expr else {
        return None;
    };
    match (call.func_name.as_str(), call.args.as_slice()) {
        (op @ (operators::LOGICAL_AND | operators::LOGICAL_OR), [accu, p]) if is_result(accu) => {
            Some(Step::Fold(op, p))
        }
        (operators::CONDITIONAL, [p, counted, accu])
            if is_result(accu)
                && matches!(counted.expr, Expr::Call(ref c) if c.func_name == operators::ADD && matches!(c.args.last().map(|a| &a.expr), Some(Expr::Literal(_)))) =>
        {
            Some(Step::Count(p))
        }
        (operators::CONDITIONAL, [filter, append, accu]) if is_result(accu) => {
            match step_shape(append)? {
                Step::Append(None, item) => Some(Step::Append(Some(filter), item)),
                _ => None,
            }
        }
        (operators::ADD, [accu, items]) if is_result(accu) => match &items.expr {
            Expr::List(list) => match list.elements.as_slice() {
                [item] => Some(Step::Append(None, item)),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

/// `bind(v, @target[k], x)` as `(v, x)`.
fn bound_value<'e>(expr: &'e IdedExpr, k: &str) -> Option<(&'e str, &'e IdedExpr)> {
    let Expr::Comprehension(bind) = &expr.expr else {
        return None;
    };
    let Expr::Call(index) = &bind.accu_init.expr else {
        return None;
    };
    let reads_target = matches!(
        index.args.as_slice(),
        [IdedExpr { expr: Expr::Ident(t), .. }, IdedExpr { expr: Expr::Ident(key), .. }]
            if t == TARGET && key == k
    );
    (index.func_name == operators::INDEX && reads_target && is_empty_list(&bind.iter_range))
        .then_some((bind.accu_var.as_str(), &bind.result))
}

fn is_result(expr: &IdedExpr) -> bool {
    matches!(&expr.expr, Expr::Ident(name) if name == RESULT)
}

fn is_empty_list(expr: &IdedExpr) -> bool {
    matches!(&expr.expr, Expr::List(list) if list.elements.is_empty())
}
