//! The CEL environment rules run in, and the functions celador adds to it.
//!
//! Data flow: a rules file is compiled in [`environment`] (CEL's standard
//! library, the strings extension, `inCidr`, and the Kubernetes libraries of
//! [`super::kubernetes`]); each loaded policy gets a root [`Context`] from
//! [`root_context`] holding its `matches`, `find` and `findAll`, whose
//! literal patterns were compiled at load. Per request, evaluation only opens
//! a child scope of that root: nothing here is built on the request path.
//!
//! Why `matches` is replaced: the standard one compiles its pattern on every
//! call (~140 µs). The loader renames every `matches` call to
//! [`MATCHES_INTERNAL`], which looks the pattern up in the policy's table of
//! precompiled literals, or, for a pattern computed at runtime, in a small
//! shared cache.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use cel::common::types::{self, CelBool, CelInt, CelList, CelString};
use cel::common::value::{CowVal, Val};
use cel::{Context, Env, ExecutionError, FunctionContext};

/// The name `matches` calls are renamed to. It cannot be written in CEL, so
/// no rule can call it directly.
pub(crate) const MATCHES_INTERNAL: &str = "matches#cached";

/// Compiled patterns larger than this are refused (a regex DoS guard).
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Patterns computed at evaluation time are kept compiled, across policies,
/// up to this many bytes in all (each entry weighs at least its lazy DFA
/// cache, so at most 64 entries), so that callers who choose the patterns
/// cannot make the cache grow without end.
const DYNAMIC_REGEX_BYTES: u64 = 16 << 20;
/// A pattern computed at evaluation time may compile to at most this much.
const DYNAMIC_REGEX_SIZE_LIMIT: usize = 256 << 10;
/// The lazy DFA cache of such a pattern, per thread matching with it.
const DYNAMIC_REGEX_DFA_CACHE: usize = 256 << 10;

static TRUE: CelBool = CelBool::TRUE;
static FALSE: CelBool = CelBool::FALSE;

pub(crate) fn bool_val<'b, 'v>(b: bool) -> CowVal<'b, 'v> {
    CowVal::Borrowed(if b { &TRUE } else { &FALSE })
}

/// The environment every rule compiles and runs in.
pub(crate) fn environment() -> Env {
    // With optional values (`a.?b`, `m[?k]`, `optional.of(x)`), as
    // Kubernetes has them.
    let mut env = Env::stdlib();
    let mut add = || -> Result<(), cel::DeclarationError> {
        cel::extensions::strings(&mut env)?;
        let in_cidr = super::kubernetes::ip::in_cidr;
        env.add_member_overload(
            "inCidr",
            "string_in_cidr_string",
            types::STRING_TYPE,
            vec![types::STRING_TYPE],
            in_cidr,
        )?;
        env.add_member_overload(
            "inCidr",
            "string_in_cidr_list",
            types::STRING_TYPE,
            vec![types::LIST_TYPE],
            in_cidr,
        )?;
        env.add_overload(
            "inCidr",
            "in_cidr_string_string",
            vec![types::STRING_TYPE, types::STRING_TYPE],
            in_cidr,
        )?;
        env.add_overload(
            "inCidr",
            "in_cidr_string_list",
            vec![types::STRING_TYPE, types::LIST_TYPE],
            in_cidr,
        )?;
        super::kubernetes::register(&mut env)?;
        Ok(())
    };
    // The declarations are fixed and distinct: failing here is a programming
    // error that every test shows, so a panic-free fallback is enough.
    let added = add();
    debug_assert!(
        added.is_ok(),
        "declaring celador's CEL functions: {added:?}"
    );
    env
}

/// The parser of rules: `env`'s, with backtick-quoted field names
/// (`` m.`content-type` ``), as cel-go's `EnableIdentEscapeSyntax`.
pub(crate) fn parser(env: &Env) -> cel::parser::Parser {
    env.parser().enable_ident_escape_syntax(true)
}

/// Regular expressions a policy's rules write as literals, compiled at load.
#[derive(Debug, Default)]
pub(crate) struct RegexTable {
    compiled: HashMap<String, regex::Regex>,
}

impl RegexTable {
    /// Compiles `pattern` into the table; the error says why it is invalid.
    pub(crate) fn add(&mut self, pattern: &str) -> Result<(), String> {
        if self.compiled.contains_key(pattern) {
            return Ok(());
        }
        let regex = compile_regex(pattern)?;
        self.compiled.insert(pattern.to_owned(), regex);
        Ok(())
    }

    fn matches(&self, text: &str, pattern: &str) -> Result<bool, String> {
        if let Some(regex) = self.compiled.get(pattern) {
            return Ok(regex.is_match(text));
        }
        Ok(dynamic_regex(pattern)?.is_match(text))
    }

    /// The first `limit` matches of `pattern` in `text`, for `find` and
    /// `findAll`, from the same compiled patterns and cache as `matches`.
    fn find_all<'t>(
        &self,
        text: &'t str,
        pattern: &str,
        limit: usize,
    ) -> Result<Vec<&'t str>, String> {
        if let Some(regex) = self.compiled.get(pattern) {
            return Ok(regex
                .find_iter(text)
                .take(limit)
                .map(|m| m.as_str())
                .collect());
        }
        let regex = dynamic_regex(pattern)?;
        Ok(regex
            .0
            .find_iter(text)
            .take(limit)
            .map(|m| text.get(m.range()).unwrap_or_default())
            .collect())
    }
}

/// A pattern computed at evaluation time, from the shared cache or
/// compiled into it.
fn dynamic_regex(pattern: &str) -> Result<Arc<DynamicRegex>, String> {
    let cache = dynamic_regexes();
    if let Some(regex) = cache.get(pattern) {
        return Ok(regex);
    }
    let regex = Arc::new(DynamicRegex::compile(pattern)?);
    cache.insert(pattern.to_owned(), Arc::clone(&regex));
    Ok(regex)
}

/// The shared cache of patterns computed at evaluation time, bounded by
/// the memory they use.
fn dynamic_regexes() -> &'static moka::sync::Cache<String, Arc<DynamicRegex>> {
    static DYNAMIC: LazyLock<moka::sync::Cache<String, Arc<DynamicRegex>>> = LazyLock::new(|| {
        moka::sync::Cache::builder()
            .max_capacity(DYNAMIC_REGEX_BYTES)
            .weigher(|pattern: &String, regex: &Arc<DynamicRegex>| {
                u32::try_from(regex.weight(pattern)).unwrap_or(u32::MAX)
            })
            .build()
    });
    &DYNAMIC
}

/// A pattern computed at evaluation time, compiled with tighter limits than
/// the literals a rules file holds.
struct DynamicRegex(regex_automata::meta::Regex);

impl DynamicRegex {
    fn compile(pattern: &str) -> Result<Self, String> {
        use regex_automata::meta;
        let config = meta::Config::new()
            .nfa_size_limit(Some(DYNAMIC_REGEX_SIZE_LIMIT))
            .onepass_size_limit(Some(DYNAMIC_REGEX_SIZE_LIMIT))
            .dfa(false)
            .hybrid_cache_capacity(DYNAMIC_REGEX_DFA_CACHE);
        meta::Builder::new()
            .configure(config)
            .build(pattern)
            .map(DynamicRegex)
            .map_err(|e| format!("invalid regular expression {pattern:?}: {e}"))
    }

    fn is_match(&self, text: &str) -> bool {
        self.0.is_match(text)
    }

    /// What the entry costs the cache, in bytes: the compiled pattern, its
    /// text, and one lazy DFA cache.
    fn weight(&self, pattern: &str) -> usize {
        self.0.memory_usage() + pattern.len() + DYNAMIC_REGEX_DFA_CACHE
    }
}

fn compile_regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("invalid regular expression {pattern:?}: {e}"))
}

/// A function of a policy's root context.
pub(crate) type ContextFunction = Box<
    dyn for<'c, 'a> Fn(&mut FunctionContext<'c, 'a>) -> Result<CowVal<'c, 'a>, ExecutionError>
        + Send
        + Sync,
>;

/// The root scope of a policy: its environment and its `matches`.
pub(crate) fn root_context(env: Arc<Env>, regexes: Arc<RegexTable>) -> Context<'static, 'static> {
    let mut root = Context::with_env(env);
    let table = Arc::clone(&regexes);
    let matches: ContextFunction = Box::new(move |ftx| {
        // Both `text.matches(re)` and `matches(text, re)` arrive here.
        let (text, pattern) = match (ftx.this.as_ref(), ftx.args.as_slice()) {
            (Some(this), [pattern]) => (this.as_ref(), pattern.as_ref()),
            (None, [text, pattern]) => (text.as_ref(), pattern.as_ref()),
            _ => {
                return Err(ExecutionError::function_error(
                    "matches",
                    "takes a string and a pattern",
                ));
            }
        };
        let (Some(text), Some(pattern)) = (as_str(text), as_str(pattern)) else {
            return Err(ExecutionError::function_error(
                "matches",
                format!(
                    "takes (string, string), not ({}, {})",
                    text.get_type().name(),
                    pattern.get_type().name()
                ),
            ));
        };
        regexes
            .matches(text, pattern)
            .map(bool_val)
            .map_err(|e| ExecutionError::function_error("matches", e))
    });
    let added = root.add_function(MATCHES_INTERNAL, matches);
    debug_assert!(added.is_ok(), "declaring matches: {added:?}");
    for name in ["find", "findAll"] {
        let regexes = Arc::clone(&table);
        let find: ContextFunction = Box::new(move |ftx| find(&regexes, ftx));
        let added = root.add_function(name, find);
        debug_assert!(added.is_ok(), "declaring {name}: {added:?}");
    }
    root
}

/// Kubernetes' `text.find(re)` (the first match, or `''`) and
/// `text.findAll(re)`, `text.findAll(re, limit)` (every match, or the first
/// `limit` of them when it is not negative).
fn find<'c, 'a>(
    regexes: &RegexTable,
    ftx: &mut FunctionContext<'c, 'a>,
) -> Result<CowVal<'c, 'a>, ExecutionError> {
    let name = ftx.name;
    let usage = || {
        ExecutionError::function_error(
            name,
            format!(
                "takes a string receiver, a pattern and for findAll an optional int limit: text.{name}(re)"
            ),
        )
    };
    let text = ftx
        .this
        .as_ref()
        .and_then(|t| as_str(t.as_ref()))
        .ok_or_else(usage)?;
    let (pattern, limit) = match (name, ftx.args.as_slice()) {
        (_, [pattern]) => (pattern, None),
        ("findAll", [pattern, limit]) => (pattern, Some(limit)),
        _ => return Err(usage()),
    };
    let pattern = as_str(pattern.as_ref()).ok_or_else(usage)?;
    let limit = match limit {
        None if name == "find" => 1,
        None => usize::MAX,
        Some(limit) => {
            let limit = limit.downcast_ref::<CelInt>().ok_or_else(usage)?;
            // A negative limit means all, as Go's `FindAllString`.
            usize::try_from(*limit.inner()).unwrap_or(usize::MAX)
        }
    };
    let found = regexes
        .find_all(text, pattern, limit)
        .map_err(|e| ExecutionError::function_error(name, e))?;
    if name == "find" {
        let first = found.first().copied().unwrap_or_default();
        return Ok(CowVal::owned(CelString::from(first.to_owned())));
    }
    let list: Vec<Box<dyn Val + 'a>> = found
        .into_iter()
        .map(|m| Box::new(CelString::from(m.to_owned())) as Box<dyn Val + 'a>)
        .collect();
    Ok(CowVal::owned(CelList::from(list)))
}

fn as_str(val: &dyn Val) -> Option<&str> {
    val.downcast_ref::<CelString>().map(CelString::inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_table_reports_invalid_patterns_and_serves_dynamic_ones() {
        let mut table = RegexTable::default();
        assert!(table.add("^/a/[0-9]+$").is_ok());
        let err = table.add("(unclosed").unwrap_err();
        assert!(err.contains("(unclosed"), "{err}");
        assert!(table.matches("/a/12", "^/a/[0-9]+$").unwrap());
        assert!(table.matches("xyz", "y").unwrap());
        assert!(table.matches("x", "[").is_err());
    }

    #[test]
    fn patterns_computed_at_evaluation_are_cached_within_a_memory_bound() {
        let table = RegexTable::default();
        for i in 0..400 {
            // Distinct, and each compiles to a sizeable automaton.
            let pattern = format!("^(a|b|c|d){{1,{}}}x{i}$", 20 + i % 7);
            assert!(!table.matches("zzz", &pattern).unwrap());
        }
        assert!(table.matches("abx1", "^(a|b|c|d){1,21}x1$").unwrap());
        let cache = dynamic_regexes();
        cache.run_pending_tasks();
        assert!(cache.entry_count() > 0);
        assert!(
            cache.weighted_size() <= DYNAMIC_REGEX_BYTES,
            "{} bytes cached",
            cache.weighted_size()
        );
        assert!(cache.entry_count() <= 64, "{} entries", cache.entry_count());
        let huge = format!("^{}$", "(a|b)".repeat(40_000));
        let err = table.matches("a", &huge).unwrap_err();
        assert!(err.contains("invalid regular expression"), "{err}");
    }
}
