//! Which deny rule overrides an allow rule, found without comparing every
//! allow rule with every deny rule.
//!
//! Data flow: [`super::lint`] builds [`Denies`] once per file: each
//! alternative of each deny condition (its `||` operands) as the texts of
//! its conjuncts, filed under the one conjunct fewest alternatives share.
//! [`Denies::overriding`] then looks up only the alternatives filed under a
//! conjunct of the allow rule, so a file of 20,000 rules lints in linear
//! time; the answer is the one a scan of the deny rules in file order gives.

use std::collections::{HashMap, HashSet};

use super::super::rules_file::Effect;
use super::{Subject, always, conjuncts, disjuncts, never, unparse};

/// One alternative of a deny condition.
struct Alternative<'a> {
    /// The deny rule's position in the file, and the alternative's in it.
    at: (usize, usize),
    deny: &'a str,
    needed: Vec<String>,
    text: String,
}

/// The deny rules of a file, ready to be matched against allow rules.
pub(super) struct Denies<'a> {
    /// The first deny rule that is always true, with its text.
    always: Option<((usize, usize), &'a str, String)>,
    alternatives: Vec<Alternative<'a>>,
    /// Positions in `alternatives`, by the conjunct each is filed under.
    filed: HashMap<String, Vec<usize>>,
}

impl<'a> Denies<'a> {
    pub(super) fn new(rules: &'a [Subject<'a>]) -> Self {
        let mut always_true = None;
        let mut alternatives = Vec::new();
        let denies = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.effect == Effect::Deny && never(r.expr).is_none());
        for (i, deny) in denies {
            if always(deny.expr) {
                if always_true.is_none() {
                    always_true = Some(((i, 0), deny.name, unparse(deny.expr)));
                }
                continue;
            }
            for (j, alternative) in disjuncts(deny.expr).into_iter().enumerate() {
                alternatives.push(Alternative {
                    at: (i, j),
                    deny: deny.name,
                    needed: conjuncts(alternative).into_iter().map(unparse).collect(),
                    text: unparse(alternative),
                });
            }
        }
        let mut shared: HashMap<&str, usize> = HashMap::new();
        for needed in alternatives.iter().flat_map(|a| &a.needed) {
            *shared.entry(needed.as_str()).or_default() += 1;
        }
        let mut filed: HashMap<String, Vec<usize>> = HashMap::new();
        for (k, alternative) in alternatives.iter().enumerate() {
            let rarest = alternative
                .needed
                .iter()
                .min_by_key(|n| shared.get(n.as_str()).copied().unwrap_or(0));
            if let Some(rarest) = rarest {
                filed.entry(rarest.clone()).or_default().push(k);
            }
        }
        Denies {
            always: always_true,
            alternatives,
            filed,
        }
    }

    /// The first deny rule (in file order) that matches whenever `allow`
    /// does, with the part of its condition that does.
    pub(super) fn overriding(&self, allow: &Subject<'_>) -> Option<(&'a str, String)> {
        let required: HashSet<String> = conjuncts(allow.expr).into_iter().map(unparse).collect();
        let mut best = self
            .always
            .as_ref()
            .map(|(at, name, text)| (*at, *name, text));
        for conjunct in &required {
            let Some(filed) = self.filed.get(conjunct) else {
                continue;
            };
            for alternative in filed.iter().filter_map(|&k| self.alternatives.get(k)) {
                if best.is_some_and(|(at, _, _)| at <= alternative.at) {
                    continue;
                }
                if alternative.needed.iter().all(|n| required.contains(n)) {
                    best = Some((alternative.at, alternative.deny, &alternative.text));
                }
            }
        }
        best.map(|(_, name, text)| (name, text.clone()))
    }
}
