//! CEL as Kubernetes speaks it: the libraries of
//! `k8s.io/apiserver/pkg/cel/library` that make sense for requests and
//! identities (IP addresses and CIDRs, URLs, lists, sets), the CEL lists
//! extension, two-variable comprehensions ([`comprehensions`]), and the places where the `cel` crate differs from the CEL
//! specification and celador can set it right.
//!
//! Data flow: [`register`] declares the functions on the environment every
//! rule compiles in ([`super::functions::environment`]). When a rule loads,
//! [`prepare`] rewrites its expression after type checking: `ip('…')`,
//! `cidr('…')` and `url('…')` of a literal are parsed there, once (a literal
//! that does not parse is a load error, as a bad literal regex is), and
//! their calls (and `inCidr`'s, for its literal ranges) are pointed at the
//! policy's table of parsed values, which
//! [`Literals::install`] puts in the policy's root context. Per request,
//! nothing is parsed that the rules file spelt out.

pub(crate) mod comprehensions;
pub(crate) mod ip;
pub(crate) mod lists;
pub(crate) mod url;

use std::collections::HashMap;
use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr, LiteralValue, SourceInfo};
use cel::common::types::{CelInt, DURATION_TYPE, TIMESTAMP_TYPE};
use cel::common::value::{CowVal, FromVal, Val};
use cel::{Context, DeclarationError, Env, ExecutionError, IdedExpr};

use super::check::Problem;
use super::functions::ContextFunction;

/// The suffix of the functions a literal's call is renamed to (`ip#literal`).
const LITERAL_SUFFIX: &str = "#literal";
/// What `inCidr` is renamed to when its ranges are literals, which the
/// renamed call finds parsed by its canonical text (its last argument).
pub(crate) const IN_CIDR_LITERAL: &str = "inCidr#literal";
/// What `x.getMilliseconds()` is renamed to: the specification's.
pub(crate) const GET_MILLISECONDS_SPEC: &str = "getMilliseconds#spec";

/// Declares the Kubernetes libraries, the CEL lists extension and the
/// specification's `getMilliseconds` on `env`.
pub(crate) fn register(env: &mut Env) -> Result<(), DeclarationError> {
    ip::register(env)?;
    url::register(env)?;
    lists::register(env)?;
    comprehensions::register(env)?;
    cel::extensions::lists(env)?;
    env.add_member_overload(
        GET_MILLISECONDS_SPEC,
        "duration_to_milliseconds_component",
        DURATION_TYPE,
        vec![],
        |args| {
            let duration = one::<cel::common::types::CelDuration>(&args)?;
            // The millisecond component, as cel-go's `getMilliseconds`
            // (Go's `%` truncates toward zero, as Rust's does).
            Ok(CowVal::owned(CelInt::from(
                duration.inner().num_milliseconds() % 1000,
            )))
        },
    )?;
    env.add_member_overload(
        GET_MILLISECONDS_SPEC,
        "timestamp_to_milliseconds_component",
        TIMESTAMP_TYPE,
        vec![],
        |args| {
            let ts = one::<cel::common::types::CelTimestamp>(&args)?;
            Ok(CowVal::owned(CelInt::from(i64::from(
                ts.inner().timestamp_subsec_millis(),
            ))))
        },
    )
}

/// What a parse counted by [`count_parse`] parsed.
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
pub(crate) enum Parsed {
    Ip = 0,
    Cidr = 1,
    Url = 2,
}

#[cfg(test)]
thread_local! {
    /// How many addresses, ranges and URLs this thread parsed: tests show
    /// with it that evaluation does not parse what a rules file spelt out.
    pub(crate) static PARSED: std::cell::Cell<[usize; 3]> = const { std::cell::Cell::new([0; 3]) };
}

#[cfg(test)]
pub(crate) fn count_parse(what: Parsed) {
    PARSED.with(|parsed| {
        let mut counts = parsed.get();
        if let Some(count) = counts.get_mut(what as usize) {
            *count += 1;
        }
        parsed.set(counts);
    });
}

/// `val` as a `T`, or an error naming both types.
pub(crate) fn arg<'b, 'v, T: FromVal<'b, 'v> + Val>(
    val: &'b (dyn Val + 'v),
) -> Result<&'b T, ExecutionError> {
    val.downcast_ref::<T>()
        .ok_or_else(|| ExecutionError::UnexpectedType {
            got: val.get_type().name().to_owned(),
            want: T::cel_type().name().to_owned(),
        })
}

/// The only argument of a one-argument overload.
pub(crate) fn one_val<'a, 'b, 'v>(
    args: &'a [CowVal<'b, 'v>],
) -> Result<&'a CowVal<'b, 'v>, ExecutionError> {
    match args {
        [only] => Ok(only),
        _ => Err(ExecutionError::invalid_argument_count(1, args.len())),
    }
}

/// The only argument of a one-argument overload, as a `T`.
pub(crate) fn one<'a, 'v, T: FromVal<'a, 'v> + Val>(
    args: &'a [CowVal<'_, 'v>],
) -> Result<&'a T, ExecutionError> {
    arg(one_val(args)?.as_ref())
}

/// The two arguments of a two-argument overload, as an `A` and a `B`.
pub(crate) fn two<'a, 'v, A: FromVal<'a, 'v> + Val, B: FromVal<'a, 'v> + Val>(
    args: &'a [CowVal<'_, 'v>],
) -> Result<(&'a A, &'a B), ExecutionError> {
    match args {
        [a, b] => Ok((arg(a.as_ref())?, arg(b.as_ref())?)),
        _ => Err(ExecutionError::invalid_argument_count(2, args.len())),
    }
}

/// The values of a policy's `ip('…')`, `cidr('…')` and `url('…')`
/// literals, parsed at load.
#[derive(Debug, Default)]
pub(crate) struct Literals {
    /// By function (`ip`, `cidr`, `url`), then by the literal's text.
    parsed: HashMap<&'static str, HashMap<String, Box<dyn Val>>>,
    /// The ranges of `inCidr` calls, by the canonical text of the argument
    /// that lists them (`"10.0.0.0/8"`, `["10.0.0.0/8", "fd00::/8"]`).
    ranges: HashMap<String, Vec<ip::Cidr>>,
}

impl Literals {
    /// Parses `text` as `function` would, keeping the value.
    fn add(&mut self, function: &'static str, text: &str) -> Result<(), String> {
        let table = self.parsed.entry(function).or_default();
        if table.contains_key(text) {
            return Ok(());
        }
        let value: Box<dyn Val> = match function {
            "ip" => Box::new(ip::parse_ip(text)?),
            "cidr" => Box::new(ip::parse_cidr(text)?),
            _ => Box::new(url::parse_url(text)?),
        };
        table.insert(text.to_owned(), value);
        Ok(())
    }

    /// Adds the functions the renamed calls call to `root`.
    pub(crate) fn install(self, root: &mut Context<'static, 'static>) {
        let ranges = self.ranges;
        let in_cidr: ContextFunction = Box::new(move |ftx| {
            // Both `address.inCidr(ranges)` and `inCidr(address, ranges)`.
            let (address, key) = match (ftx.this.as_ref(), ftx.args.as_slice()) {
                (Some(address), [key]) | (None, [address, key]) => (address, key),
                _ => return Err(ExecutionError::invalid_argument_count(2, ftx.args.len())),
            };
            let parsed = key
                .downcast_ref::<cel::common::types::CelString>()
                .and_then(|key| ranges.get(key.inner()))
                .ok_or_else(|| {
                    ExecutionError::function_error("inCidr", "ranges not parsed at load")
                })?;
            ip::address_in(address.as_ref(), parsed).map(super::functions::bool_val)
        });
        let added = root.add_function(IN_CIDR_LITERAL, in_cidr);
        debug_assert!(added.is_ok(), "declaring {IN_CIDR_LITERAL}: {added:?}");
        let parsed = Arc::new(self.parsed);
        for function in ["ip", "cidr", "url"] {
            let parsed = Arc::clone(&parsed);
            let name = format!("{function}{LITERAL_SUFFIX}");
            let lookup: ContextFunction = Box::new(move |ftx| {
                let text = ftx
                    .args
                    .first()
                    .and_then(|a| a.downcast_ref::<cel::common::types::CelString>())
                    .map(|s| s.inner());
                let value = text.and_then(|t| parsed.get(function)?.get(t));
                // Every renamed call was parsed at load: a miss is a bug,
                // which fails closed.
                value
                    .map(|v| CowVal::Owned(v.clone_as_boxed()))
                    .ok_or_else(|| {
                        ExecutionError::function_error(function, "literal not parsed at load")
                    })
            });
            let added = root.add_function(&name, lookup);
            debug_assert!(added.is_ok(), "declaring {name}: {added:?}");
        }
    }
}

/// Rewrites a type-checked rule for evaluation: literals of `ip`, `cidr`
/// and `url` and the literal ranges of `inCidr` are parsed into
/// `literals` (each one that does not parse is a problem at its offset, as
/// is a bad literal argument of `containsIP` or `containsCIDR`), and `x.getMilliseconds()` is pointed at the
/// specification's.
pub(crate) fn prepare(
    expr: &mut IdedExpr,
    info: &SourceInfo,
    literals: &mut Literals,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    rewrite(expr, info, literals, &mut problems);
    problems
}

fn rewrite(
    expr: &mut IdedExpr,
    info: &SourceInfo,
    literals: &mut Literals,
    problems: &mut Vec<Problem>,
) {
    match &mut expr.expr {
        Expr::Call(call) => rewrite_call(call, info, literals, problems),
        Expr::Select(select) => rewrite(&mut select.operand, info, literals, problems),
        Expr::List(list) => {
            for element in &mut list.elements {
                rewrite(element, info, literals, problems);
            }
        }
        Expr::Map(map) => {
            for entry in &mut map.entries {
                if let EntryExpr::MapEntry(e) = &mut entry.expr {
                    rewrite(&mut e.key, info, literals, problems);
                    rewrite(&mut e.value, info, literals, problems);
                }
            }
        }
        Expr::Comprehension(comp) => {
            for e in [
                &mut comp.iter_range,
                &mut comp.accu_init,
                &mut comp.loop_cond,
                &mut comp.loop_step,
                &mut comp.result,
            ] {
                rewrite(e, info, literals, problems);
            }
        }
        Expr::Struct(_) | Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

/// A call: a literal's parsed, `getMilliseconds()` renamed, the rest walked.
fn rewrite_call(
    call: &mut cel::common::ast::CallExpr,
    info: &SourceInfo,
    literals: &mut Literals,
    problems: &mut Vec<Problem>,
) {
    let function = match call.func_name.as_str() {
        "ip" => Some("ip"),
        "cidr" => Some("cidr"),
        "url" => Some("url"),
        _ => None,
    };
    if let (Some(function), None, [arg]) = (function, &call.target, call.args.as_slice())
        && let Expr::Literal(LiteralValue::String(text)) = &arg.expr
    {
        match literals.add(function, text.inner()) {
            Ok(()) => call.func_name = format!("{function}{LITERAL_SUFFIX}"),
            Err(message) => {
                let offset = info.offset_for(arg.id).map_or(0, |(start, _)| start);
                problems.push(Problem { offset, message });
            }
        }
        return;
    }
    match call.func_name.as_str() {
        "inCidr" => literal_ranges(call, info, literals, problems),
        "containsIP" => implicit_literal("ip", call, info, problems),
        "containsCIDR" => implicit_literal("cidr", call, info, problems),
        _ => {}
    }
    if call.func_name == "getMilliseconds" && call.target.is_some() && call.args.is_empty() {
        call.func_name = GET_MILLISECONDS_SPEC.to_owned();
    }
    if let Some(target) = &mut call.target {
        rewrite(target, info, literals, problems);
    }
    for arg in &mut call.args {
        rewrite(arg, info, literals, problems);
    }
}

/// `c.containsIP('…')` and `c.containsCIDR('…')` of a literal: it is
/// checked as `function` (`ip`, `cidr`) parses it, so that a bad one fails
/// the load. The call is left as it is: parsing a short literal per
/// request measured cheaper than finding it parsed (BENCHMARKS.md).
fn implicit_literal(
    function: &'static str,
    call: &cel::common::ast::CallExpr,
    info: &SourceInfo,
    problems: &mut Vec<Problem>,
) {
    let (Some(_), [arg]) = (&call.target, call.args.as_slice()) else {
        return;
    };
    let Expr::Literal(LiteralValue::String(text)) = &arg.expr else {
        return;
    };
    let checked = match function {
        "ip" => ip::parse_ip(text.inner()).map(|_| ()),
        _ => ip::parse_cidr(text.inner()).map(|_| ()),
    };
    if let Err(message) = checked {
        let offset = info.offset_for(arg.id).map_or(0, |(start, _)| start);
        problems.push(Problem { offset, message });
    }
}

/// `inCidr` with its ranges written as literals (a string, or a list of
/// them): they are parsed into `literals` (each that does not parse is a
/// problem at its offset), and the call is renamed to find them there.
fn literal_ranges(
    call: &mut cel::common::ast::CallExpr,
    info: &SourceInfo,
    literals: &mut Literals,
    problems: &mut Vec<Problem>,
) {
    let ranges = match (&call.target, call.args.as_mut_slice()) {
        (Some(_), [ranges]) | (None, [_, ranges]) => ranges,
        _ => return,
    };
    let texts: Vec<&IdedExpr> = match &ranges.expr {
        Expr::Literal(LiteralValue::String(_)) => vec![&*ranges],
        Expr::List(list) if list.optional_indices.is_empty() => list.elements.iter().collect(),
        _ => return,
    };
    let mut parsed = Vec::with_capacity(texts.len());
    for text in texts {
        let Expr::Literal(LiteralValue::String(range)) = &text.expr else {
            // A range computed at evaluation: all are parsed there.
            return;
        };
        match ip::parse_cidr(range.inner()) {
            Ok(cidr) => parsed.push(cidr),
            Err(message) => {
                let offset = info.offset_for(text.id).map_or(0, |(start, _)| start);
                problems.push(Problem { offset, message });
            }
        }
    }
    let key = super::unparse::unparse(ranges);
    ranges.expr = Expr::Literal(LiteralValue::String(key.clone().into()));
    literals.ranges.insert(key, parsed);
    call.func_name = IN_CIDR_LITERAL.to_owned();
}

#[cfg(test)]
mod tests;
