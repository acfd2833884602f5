//! Kubernetes' lists library (`isSorted`, `sum`, `min`, `max`, `indexOf`,
//! `lastIndexOf`) and sets library (`sets.contains`, `sets.equivalent`,
//! `sets.intersects`), as `k8s.io/apiserver/pkg/cel/library/lists.go` and
//! `sets.go` define them.
//!
//! Data flow: declared on the environment by [`super::register`]; each
//! walks its list once per call, comparing, adding and testing equality
//! with the element types' own CEL operators (so `sum` overflows as `+`
//! does, and `1 == 1.0` holds in `indexOf` as in `==`).

use std::cmp::Ordering;

use cel::common::types::{CelInt, DYN_TYPE, LIST_TYPE};
use cel::common::value::{CowVal, Val};
use cel::{DeclarationError, Env, ExecutionError};

use crate::policy::functions::bool_val;

type Op = for<'b, 'v> fn(Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError>;

/// The elements of a list argument.
fn elements<'a, 'v>(
    name: &str,
    list: &'a CowVal<'_, 'v>,
) -> Result<Vec<&'a (dyn Val + 'v)>, ExecutionError> {
    let iterable = list.as_iterable().ok_or_else(|| {
        ExecutionError::function_error(
            name,
            format!("takes a list, not {}", list.get_type().name()),
        )
    })?;
    let mut iter = iterable.iter();
    let mut out = Vec::new();
    while let Some(item) = iter.next() {
        out.push(item);
    }
    Ok(out)
}

fn compare(name: &str, a: &dyn Val, b: &dyn Val) -> Result<Ordering, ExecutionError> {
    let comparer = a.as_comparer().ok_or_else(|| {
        ExecutionError::function_error(
            name,
            format!("{} values cannot be ordered", a.get_type().name()),
        )
    })?;
    comparer.compare(b)
}

fn is_sorted<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let list = super::one_val(&args)?;
    let items = elements("isSorted", list)?;
    for pair in items.windows(2) {
        if let [a, b] = pair
            && compare("isSorted", *a, *b)? == Ordering::Greater
        {
            return Ok(bool_val(false));
        }
    }
    // One element is sorted, if it can be ordered at all.
    if let [only] = items.as_slice() {
        compare("isSorted", *only, *only)?;
    }
    Ok(bool_val(true))
}

fn sum<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let list = super::one_val(&args)?;
    let items = elements("sum", list)?;
    let Some((first, rest)) = items.split_first() else {
        // The element type is not known at evaluation: Kubernetes' checker
        // picks the zero of the declared type, an int for `[]`.
        return Ok(CowVal::owned(CelInt::from(0)));
    };
    // Numbers and durations only, as Kubernetes declares `sum` (strings and
    // lists add too, but are no sums).
    let summable = ["int", "uint", "double", "google.protobuf.Duration"];
    if let Some(item) = items
        .iter()
        .find(|item| !summable.contains(&item.get_type().name()))
    {
        return Err(ExecutionError::function_error(
            "sum",
            format!("{} values cannot be summed", item.get_type().name()),
        ));
    }
    let mut total: Box<dyn Val + 'v> = first.clone_as_boxed();
    for item in rest {
        let adder = total.as_adder().ok_or_else(|| {
            ExecutionError::function_error(
                "sum",
                format!("{} values cannot be added", total.get_type().name()),
            )
        })?;
        let next = adder.add(*item)?.into_owned();
        total = next;
    }
    Ok(CowVal::Owned(total))
}

fn extreme<'b, 'v>(
    name: &str,
    args: &[CowVal<'b, 'v>],
    prefer: Ordering,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let list = super::one_val(args)?;
    let items = elements(name, list)?;
    let Some((first, rest)) = items.split_first() else {
        return Err(ExecutionError::function_error(
            name,
            format!("{name} called on empty list"),
        ));
    };
    let mut best = *first;
    compare(name, best, best)?;
    for item in rest {
        if compare(name, best, *item)? == prefer {
            best = *item;
        }
    }
    Ok(CowVal::Owned(best.clone_as_boxed()))
}

fn min<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    extreme("min", &args, Ordering::Greater)
}

fn max<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    extreme("max", &args, Ordering::Less)
}

fn position<'b, 'v>(
    name: &str,
    args: &[CowVal<'b, 'v>],
    last: bool,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [list, wanted] = args else {
        return Err(ExecutionError::invalid_argument_count(2, args.len()));
    };
    let items = elements(name, list)?;
    let found = if last {
        items.iter().rposition(|item| item.equals(wanted.as_ref()))
    } else {
        items.iter().position(|item| item.equals(wanted.as_ref()))
    };
    let index = found.map_or(-1, |i| i64::try_from(i).unwrap_or(i64::MAX));
    Ok(CowVal::owned(CelInt::from(index)))
}

fn index_of<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    position("indexOf", &args, false)
}

fn last_index_of<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    position("lastIndexOf", &args, true)
}

/// The two lists of a `sets.*` call.
fn two_lists<'a, 'v>(
    name: &str,
    args: &'a [CowVal<'_, 'v>],
) -> Result<[Vec<&'a (dyn Val + 'v)>; 2], ExecutionError> {
    let [a, b] = args else {
        return Err(ExecutionError::invalid_argument_count(2, args.len()));
    };
    Ok([elements(name, a)?, elements(name, b)?])
}

/// Whether every element of `sub` is in `set` (quadratic, as Kubernetes'
/// is: CEL equality is not hashable across numeric types).
fn subset(set: &[&dyn Val], sub: &[&dyn Val]) -> bool {
    sub.iter().all(|x| set.iter().any(|y| y.equals(*x)))
}

fn sets_contains<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [set, sub] = two_lists("sets.contains", &args)?;
    Ok(bool_val(subset(&set, &sub)))
}

fn sets_equivalent<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [a, b] = two_lists("sets.equivalent", &args)?;
    Ok(bool_val(subset(&a, &b) && subset(&b, &a)))
}

fn sets_intersects<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [a, b] = two_lists("sets.intersects", &args)?;
    Ok(bool_val(a.iter().any(|x| b.iter().any(|y| y.equals(*x)))))
}

/// Declares the lists and sets overloads on `env`.
pub(crate) fn register(env: &mut Env) -> Result<(), DeclarationError> {
    let methods: [(&str, Op); 4] = [
        ("isSorted", is_sorted),
        ("sum", sum),
        ("min", min),
        ("max", max),
    ];
    for (name, op) in methods {
        env.add_member_overload(name, &format!("list_{name}"), LIST_TYPE, vec![], op)?;
    }
    let searches: [(&str, Op); 2] = [("indexOf", index_of), ("lastIndexOf", last_index_of)];
    for (name, op) in searches {
        env.add_member_overload(name, &format!("list_{name}"), LIST_TYPE, vec![DYN_TYPE], op)?;
    }
    let sets: [(&str, Op); 3] = [
        ("sets.contains", sets_contains),
        ("sets.equivalent", sets_equivalent),
        ("sets.intersects", sets_intersects),
    ];
    for (name, op) in sets {
        env.add_overload(name, name, vec![LIST_TYPE, LIST_TYPE], op)?;
    }
    Ok(())
}
