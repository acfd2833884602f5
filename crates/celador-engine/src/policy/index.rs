//! The rule index: which rules a check has to evaluate at all.
//!
//! Data flow: when a [`super::Policy`] is compiled, [`RuleIndex::build`]
//! reads each rule's compiled (flattened) condition and finds its top-level
//! conjuncts that pin an attribute to literals: `a == "x"`, `a in ["x",
//! "y"]` and `a.startsWith("/x/")` on the attributes of [`Attr`]. Each rule
//! is filed under one such conjunct (the one whose bucket is smallest); a
//! rule with none is evaluated on every check. Per check,
//! [`RuleIndex::candidates`] returns, in file order, the rules whose filed
//! conjunct can hold for the request, plus the rules that are not filed;
//! [`super::Policy::evaluate`] evaluates only those, with the same
//! semantics as evaluating every rule.
//!
//! Why skipping a rule changes nothing: `cel` evaluates `a && b` to `false`
//! exactly when `a` or `b` evaluates to `false` (an error on the other side
//! does not matter), so a rule with a conjunct that evaluates to `false`
//! evaluates to `false`: no match, and no rule error. A conjunct on an
//! attribute of an absent credential (`source.id` without an X.509-SVID) is
//! an *error*, not `false`, so such a rule is never skipped on that
//! account: it is a candidate whenever the attribute is absent, and may
//! then fail (which denies, if it is a deny rule), exactly as before.
//!
//! The prefix structure is a map from each literal prefix to its rules,
//! probed with the request value's leading bytes at each prefix length the
//! policy uses: a handful of hash probes per check, without a trie crate.

use std::collections::HashMap;

use cel::IdedExpr;
use cel::common::ast::{Expr, LiteralValue, operators};
use smallvec::SmallVec;

use super::Input;

/// An attribute rules can be indexed on: a string that is present or, for
/// an identity's attribute, absent with its credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attr {
    /// `source.id`.
    SourceId,
    /// `source.path`.
    SourcePath,
    /// `source.trust_domain`.
    SourceTrustDomain,
    /// `token.id`.
    TokenId,
    /// `token.path`.
    TokenPath,
    /// `token.trust_domain`.
    TokenTrustDomain,
    /// `request.method`.
    Method,
    /// `request.host`.
    Host,
    /// `request.path`.
    Path,
    /// `request.scheme`.
    Scheme,
    /// `destination.principal`.
    DestinationPrincipal,
}

impl Attr {
    const ALL: [Attr; 11] = [
        Attr::SourceId,
        Attr::SourcePath,
        Attr::SourceTrustDomain,
        Attr::TokenId,
        Attr::TokenPath,
        Attr::TokenTrustDomain,
        Attr::Method,
        Attr::Host,
        Attr::Path,
        Attr::Scheme,
        Attr::DestinationPrincipal,
    ];

    /// Its name in rules.
    pub fn name(self) -> &'static str {
        match self {
            Attr::SourceId => "source.id",
            Attr::SourcePath => "source.path",
            Attr::SourceTrustDomain => "source.trust_domain",
            Attr::TokenId => "token.id",
            Attr::TokenPath => "token.path",
            Attr::TokenTrustDomain => "token.trust_domain",
            Attr::Method => "request.method",
            Attr::Host => "request.host",
            Attr::Path => "request.path",
            Attr::Scheme => "request.scheme",
            Attr::DestinationPrincipal => "destination.principal",
        }
    }

    fn named(name: &str) -> Option<Attr> {
        Attr::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Its value for `input`, as the activation serves it; `None` when its
    /// credential is absent (reading it is then an evaluation error).
    fn value<'a>(self, input: &Input<'a>) -> Option<&'a str> {
        let attrs = input.attributes;
        Some(match self {
            Attr::SourceId => input.source?.id.as_str(),
            Attr::SourcePath => input.source?.id.path(),
            Attr::SourceTrustDomain => input.source?.id.trust_domain(),
            Attr::TokenId => input.token?.id.as_str(),
            Attr::TokenPath => input.token?.id.path(),
            Attr::TokenTrustDomain => input.token?.id.trust_domain(),
            Attr::Method => attrs.method,
            Attr::Host => attrs.host,
            Attr::Path => attrs.path.as_ref(),
            Attr::Scheme => attrs.scheme,
            Attr::DestinationPrincipal => attrs.destination_principal,
        })
    }
}

/// A top-level conjunct that pins an attribute to literals, borrowed
/// from the compiled condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin<'e> {
    /// `a == "x"` (either way round), `a in ["x", ...]`, or an `||` of
    /// such tests on one attribute: one of these.
    Equal(Attr, Vec<&'e str>),
    /// `a.startsWith("x")`.
    Prefix(Attr, &'e str),
}

/// The pins among the top-level conjuncts of a compiled condition.
pub(crate) fn pins(expr: &IdedExpr) -> Vec<Pin<'_>> {
    let mut conjuncts = Vec::new();
    top_level(operators::LOGICAL_AND, expr, &mut conjuncts);
    conjuncts.into_iter().filter_map(pin).collect()
}

/// The operands of a (nested) chain of the logical operator `op` at the
/// top of `expr`, or `expr` itself.
fn top_level<'e>(op: &str, expr: &'e IdedExpr, out: &mut Vec<&'e IdedExpr>) {
    match &expr.expr {
        Expr::Call(call)
            if call.func_name == op && call.target.is_none() && call.args.len() == 2 =>
        {
            for arg in &call.args {
                top_level(op, arg, out);
            }
        }
        _ => out.push(expr),
    }
}

fn pin(expr: &IdedExpr) -> Option<Pin<'_>> {
    let Expr::Call(call) = &expr.expr else {
        return None;
    };
    match (call.func_name.as_str(), &call.target, call.args.as_slice()) {
        (operators::EQUALS, None, [a, b]) => {
            let (attr, value) = match (attr(a), string(b)) {
                (Some(attr), Some(value)) => (attr, value),
                _ => (attr(b)?, string(a)?),
            };
            Some(Pin::Equal(attr, vec![value]))
        }
        (operators::IN, None, [a, list]) => {
            let Expr::List(list) = &list.expr else {
                return None;
            };
            // `?x` elements are optional ones, not plain literals.
            if !list.optional_indices.is_empty() {
                return None;
            }
            let values = list
                .elements
                .iter()
                .map(string)
                .collect::<Option<Vec<_>>>()?;
            Some(Pin::Equal(attr(a)?, values))
        }
        (operators::LOGICAL_OR, None, [_, _]) => either(expr),
        ("startsWith", Some(target), [prefix]) => Some(Pin::Prefix(attr(target)?, string(prefix)?)),
        _ => None,
    }
}

/// `a == "x" || a in ["y", "z"] || ...`: the union of the disjuncts'
/// literals, when every disjunct pins the same attribute to equal ones.
///
/// Why this files the rule soundly: when the attribute is present, each
/// disjunct evaluates to `false` or `true` without error, and `cel`'s `||`
/// is `false` exactly when every disjunct is; when it is absent, every
/// disjunct is an error, so the rule is a candidate (as any rule filed
/// under the attribute is then).
fn either(expr: &IdedExpr) -> Option<Pin<'_>> {
    let mut disjuncts = Vec::new();
    top_level(operators::LOGICAL_OR, expr, &mut disjuncts);
    let mut union: Option<(Attr, Vec<&str>)> = None;
    for disjunct in disjuncts {
        let Pin::Equal(attr, values) = pin(disjunct)? else {
            return None;
        };
        match &mut union {
            None => union = Some((attr, values)),
            Some((first, all)) if *first == attr => all.extend(values),
            Some(_) => return None,
        }
    }
    union.map(|(attr, values)| Pin::Equal(attr, values))
}

/// The attribute a flattened identifier (see `policy::flatten_fields`) is.
fn attr(expr: &IdedExpr) -> Option<Attr> {
    match &expr.expr {
        Expr::Ident(name) => Attr::named(name),
        _ => None,
    }
}

fn string(expr: &IdedExpr) -> Option<&str> {
    match &expr.expr {
        Expr::Literal(LiteralValue::String(s)) => Some(s),
        _ => None,
    }
}

/// The rules of one attribute, by the literals they pin it to.
#[derive(Debug, Default)]
struct Dimension {
    /// Rules filed under `a == v` / `a in [..., v]`, by `v`.
    equal: HashMap<Box<str>, Vec<u32>>,
    /// Rules filed under `a.startsWith(p)`, by `p`.
    prefix: HashMap<Box<str>, Vec<u32>>,
    /// The lengths of those prefixes, ascending, without repeats.
    lengths: Vec<usize>,
    /// Every rule filed under this attribute, in file order: the
    /// candidates when it is absent.
    all: Vec<u32>,
}

/// Which rules can match which requests.
#[derive(Debug, Default)]
pub struct RuleIndex {
    /// Rules filed under no pin, in file order.
    unfiled: Vec<u32>,
    dimensions: Vec<(Attr, Dimension)>,
    rules: usize,
}

impl RuleIndex {
    /// The index of the rules whose compiled conditions are `conditions`,
    /// each with its position in the file, in file order.
    ///
    /// The conditions are read twice (once to count each literal's rules,
    /// once to file them) rather than their pins kept: at 20,000 rules the
    /// pins were megabytes more at the peak of a load.
    pub fn build<'e, I>(conditions: I) -> Self
    where
        I: Iterator<Item = (usize, &'e IdedExpr)> + Clone,
    {
        // How many rules pin each (attribute, literal): a rule is filed
        // under its pin with the fewest rivals, so that a check evaluates
        // few rules besides the ones that match.
        let mut counts: HashMap<(Attr, bool, &str), usize> = HashMap::new();
        let mut rules = 0;
        for (_, expr) in conditions.clone() {
            rules += 1;
            for pin in pins(expr) {
                for key in keys(&pin) {
                    *counts.entry(key).or_default() += 1;
                }
            }
        }
        let cost = |pin: &Pin<'_>| -> usize {
            let rivals: usize = keys(pin)
                .map(|k| counts.get(&k).copied().unwrap_or(0))
                .sum();
            // A prefix also admits the requests of longer ones: prefer an
            // equality when the buckets are alike.
            rivals * 2 + usize::from(matches!(pin, Pin::Prefix(..)))
        };
        let mut index = RuleIndex {
            rules,
            ..RuleIndex::default()
        };
        for (position, expr) in conditions {
            let position = u32::try_from(position).unwrap_or(u32::MAX);
            match pins(expr).iter().min_by_key(|p| cost(p)) {
                Some(pin) => index.file(position, pin),
                None => index.unfiled.push(position),
            }
        }
        for (_, dimension) in &mut index.dimensions {
            dimension.lengths.sort_unstable();
            dimension.lengths.dedup();
            for rules in dimension.equal.values_mut() {
                rules.dedup();
                rules.shrink_to_fit();
            }
            dimension.equal.shrink_to_fit();
            dimension.prefix.shrink_to_fit();
            dimension.all.shrink_to_fit();
        }
        index.unfiled.shrink_to_fit();
        index
    }

    fn file(&mut self, position: u32, pin: &Pin<'_>) {
        let attr = match pin {
            Pin::Equal(attr, _) | Pin::Prefix(attr, _) => *attr,
        };
        let dimension = match self.dimensions.iter().position(|(a, _)| *a == attr) {
            Some(i) => self.dimensions.get_mut(i),
            None => {
                self.dimensions.push((attr, Dimension::default()));
                self.dimensions.last_mut()
            }
        };
        let Some((_, dimension)) = dimension else {
            return;
        };
        dimension.all.push(position);
        match pin {
            Pin::Equal(_, values) => {
                for value in values {
                    let rules = dimension.equal.entry((*value).into()).or_default();
                    // `a in ["x", "x"]` files the rule once.
                    if rules.last() != Some(&position) {
                        rules.push(position);
                    }
                }
            }
            Pin::Prefix(_, prefix) => {
                dimension
                    .prefix
                    .entry((*prefix).into())
                    .or_default()
                    .push(position);
                dimension.lengths.push(prefix.len());
            }
        }
    }

    /// The positions of the rules a check of `input` must evaluate, in
    /// file order: every rule that is not certain to evaluate to `false`.
    /// Allocates nothing when they are in one of the index's own sorted
    /// lists (borrowed), or number up to [`MERGED`] from several (joined
    /// and sorted on the stack).
    pub(crate) fn candidates<'a>(&'a self, input: &Input<'_>) -> Candidates<'a> {
        let mut lists: SmallVec<[&[u32]; LISTS]> = SmallVec::new();
        lists.push(self.unfiled.as_slice());
        for (attr, dimension) in &self.dimensions {
            let Some(value) = attr.value(input) else {
                // Reading the attribute fails: its rules may fail too.
                lists.push(dimension.all.as_slice());
                continue;
            };
            if let Some(rules) = dimension.equal.get(value) {
                lists.push(rules.as_slice());
            }
            for &length in &dimension.lengths {
                // A value shorter than the prefix, or cut inside a
                // character, cannot start with it.
                let Some(head) = value.get(..length) else {
                    if length > value.len() {
                        break;
                    }
                    continue;
                };
                if let Some(rules) = dimension.prefix.get(head) {
                    lists.push(rules.as_slice());
                }
            }
        }
        lists.retain(|list: &mut &[u32]| !list.is_empty());
        match lists.as_slice() {
            [] => Candidates::One(&[]),
            [one] => Candidates::One(one),
            several => {
                // A handful of short lists: joining and sorting them costs
                // less than merging them, head by head (measured in
                // BENCHMARKS.md, issue 24).
                let mut merged: SmallVec<[u32; MERGED]> = several
                    .iter()
                    .flat_map(|list| list.iter().copied())
                    .collect();
                merged.sort_unstable();
                // Each rule is filed under one pin, so the lists do not
                // overlap; kept so that a rule can never run twice.
                merged.dedup();
                Candidates::Merged(merged)
            }
        }
    }

    /// How many rules are filed under a pin (the rest run on every check).
    pub fn filed(&self) -> usize {
        self.rules - self.unfiled.len()
    }
}

/// The (attribute, is-prefix, literal) buckets a pin is counted in.
fn keys<'e>(pin: &Pin<'e>) -> impl Iterator<Item = (Attr, bool, &'e str)> {
    let (attr, prefix, values): (Attr, bool, &[&'e str]) = match pin {
        Pin::Equal(attr, values) => (*attr, false, values.as_slice()),
        Pin::Prefix(attr, prefix) => (*attr, true, std::slice::from_ref(prefix)),
    };
    values.iter().map(move |v| (attr, prefix, *v))
}

/// How many sorted lists a check gathers without allocating: the rules
/// filed under no pin, and per attribute one equality bucket and a prefix
/// bucket per prefix length that matches.
const LISTS: usize = 8;

/// How many candidates from several lists a check holds without
/// allocating.
const MERGED: usize = 16;

/// The candidates of one check, in file order, each once: one of the
/// index's lists as it is, or several joined.
#[derive(Debug, Clone)]
pub(crate) enum Candidates<'a> {
    /// All of them are in one list of the index.
    One(&'a [u32]),
    /// From several lists, sorted and without repeats.
    Merged(SmallVec<[u32; MERGED]>),
}

impl std::ops::Deref for Candidates<'_> {
    type Target = [u32];

    fn deref(&self) -> &[u32] {
        match self {
            Candidates::One(list) => list,
            Candidates::Merged(merged) => merged,
        }
    }
}

#[cfg(test)]
mod tests;
