//! Depth limits: how deeply a rule's condition may nest, checked at load so
//! that neither the parser nor the interpreter can overflow a thread's
//! stack (an abort, which `failure_mode_allow` turns into an allow).
//!
//! Data flow: [`super::compile`] scans each rule's text with
//! [`source_nesting`] before the parser sees it (the parser recurses per
//! bracket), and measures the parsed, macro-expanded and rewritten condition
//! with [`Depth::of`] before the rule is stored (the interpreter recurses
//! per node, and a two-variable comprehension expands into three nested
//! comprehensions). A rule over a limit is refused with a diagnostic at the
//! rule, as any broken rule is.

use cel::IdedExpr;
use cel::common::ast::{EntryExpr, Expr};

/// The deepest nesting of brackets (`(`, `[`, `{`) in a rule's text.
pub(super) const MAX_NESTING: usize = 32;

/// The deepest nesting of comprehensions (`all`, `exists`, `map`, ... and
/// their two-variable forms, each once: the bindings a two-variable form
/// expands to do not count) in a rule.
pub(super) const MAX_COMPREHENSIONS: usize = 5;

/// The deepest a rule's expanded expression tree may be.
pub(super) const MAX_DEPTH: usize = 24;

/// Where a rule's text first nests brackets deeper than [`MAX_NESTING`] (a
/// byte offset), and the problem, if it does. Brackets inside string
/// literals do not count.
pub(super) fn source_nesting(when: &str) -> Option<(usize, String)> {
    let offset = too_deep_at(when)?;
    let problem = format!(
        "brackets nested more than {MAX_NESTING} deep; split the condition into rules, \
         or write it shallower"
    );
    Some((offset, problem))
}

fn too_deep_at(when: &str) -> Option<usize> {
    // Hand-written: a bracket count with CEL's string quotes skipped is all
    // the scan needs, and it must not recurse (that is its point).
    let bytes = when.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(i);
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b'"' | b'\'' => i = string_end(bytes, i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// The index of the last byte of the string literal opening at `start`
/// (single or triple quoted; a raw string's backslashes are skipped too,
/// which only ever ends it later, never earlier than the parser would see).
fn string_end(bytes: &[u8], start: usize) -> usize {
    let quote = bytes.get(start).copied().unwrap_or(b'"');
    let triple = bytes.get(start + 1) == Some(&quote) && bytes.get(start + 2) == Some(&quote);
    let mut i = if triple { start + 3 } else { start + 1 };
    while let Some(&b) = bytes.get(i) {
        if b == b'\\' {
            i += 2;
            continue;
        }
        if b == quote
            && (!triple || (bytes.get(i + 1) == Some(&quote) && bytes.get(i + 2) == Some(&quote)))
        {
            return if triple { i + 2 } else { i };
        }
        i += 1;
    }
    bytes.len()
}

/// How deeply a condition nests, measured on its expanded expression tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Depth {
    /// The nodes on the longest path from the root.
    pub(super) tree: usize,
    /// The comprehensions (loops over a range that is not `[]`) on the
    /// path nesting the most of them.
    pub(super) comprehensions: usize,
}

impl Depth {
    /// Measures `expr` without recursion, so that any tree can be measured.
    pub(super) fn of<'a>(expr: &'a IdedExpr) -> Depth {
        let mut deepest = Depth {
            tree: 0,
            comprehensions: 0,
        };
        let mut pending = vec![(expr, 1usize, 0usize)];
        while let Some((node, tree, loops)) = pending.pop() {
            let loops = loops + usize::from(is_loop(node));
            deepest.tree = deepest.tree.max(tree);
            deepest.comprehensions = deepest.comprehensions.max(loops);
            let mut push = |child: &'a IdedExpr| pending.push((child, tree + 1, loops));
            match &node.expr {
                Expr::Call(call) => {
                    call.target.iter().for_each(|t| push(t));
                    call.args.iter().for_each(&mut push);
                }
                Expr::Comprehension(c) => {
                    for child in [&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step] {
                        push(child);
                    }
                    push(&c.result);
                }
                Expr::List(list) => list.elements.iter().for_each(&mut push),
                Expr::Map(map) => map.entries.iter().for_each(|e| entry(&e.expr, &mut push)),
                Expr::Struct(s) => s.entries.iter().for_each(|e| entry(&e.expr, &mut push)),
                Expr::Select(select) => push(&select.operand),
                Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => {}
            }
        }
        deepest
    }

    /// Why a condition this deep is refused, if it is.
    pub(super) fn problem(self) -> Option<String> {
        if self.comprehensions > MAX_COMPREHENSIONS {
            return Some(format!(
                "comprehensions nested {} deep; at most {MAX_COMPREHENSIONS}",
                self.comprehensions
            ));
        }
        (self.tree > MAX_DEPTH).then(|| {
            format!(
                "the condition nests {} deep once its macros are expanded; at most {MAX_DEPTH} \
                 (split it into rules, or write shallower conditions)",
                self.tree
            )
        })
    }
}

fn entry<'a>(entry: &'a EntryExpr, push: &mut impl FnMut(&'a IdedExpr)) {
    match entry {
        EntryExpr::StructField(field) => push(&field.value),
        EntryExpr::MapEntry(e) => {
            push(&e.key);
            push(&e.value);
        }
    }
}

/// A comprehension that loops: not one over `[]` (the bindings of the
/// two-variable forms, which evaluate their step once).
fn is_loop(expr: &IdedExpr) -> bool {
    matches!(&expr.expr, Expr::Comprehension(c)
        if !matches!(&c.iter_range.expr, Expr::List(l) if l.elements.is_empty()))
}

#[cfg(test)]
mod tests;
