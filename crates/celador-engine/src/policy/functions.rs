//! The CEL environment rules run in, and the functions celador adds to it.
//!
//! Data flow: a rules file is compiled in [`environment`] (CEL's standard
//! library, the strings extension, and `inCidr`/`isIP`); each loaded policy
//! gets a root [`Context`] from [`root_context`] holding its `matches`, whose
//! literal patterns were compiled at load. Per request, evaluation only opens
//! a child scope of that root: nothing here is built on the request path.
//!
//! Why `matches` is replaced: the standard one compiles its pattern on every
//! call (~140 µs). The loader renames every `matches` call to
//! [`MATCHES_INTERNAL`], which looks the pattern up in the policy's table of
//! precompiled literals, or, for a pattern computed at runtime, in a small
//! shared cache.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use cel::common::types::{self, CelBool, CelString};
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

fn bool_val<'b, 'v>(b: bool) -> CowVal<'b, 'v> {
    CowVal::Borrowed(if b { &TRUE } else { &FALSE })
}

/// The environment every rule compiles and runs in.
pub(crate) fn environment() -> Env {
    // Optional syntax (`a.?b`) is left out: the checker does not type it.
    let mut env = Env::stdlib().with_optional_support(false);
    let mut add = || -> Result<(), cel::DeclarationError> {
        cel::extensions::strings(&mut env)?;
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
        env.add_overload("isIP", "is_ip_string", vec![types::STRING_TYPE], is_ip)?;
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
        let cache = dynamic_regexes();
        if let Some(regex) = cache.get(pattern) {
            return Ok(regex.is_match(text));
        }
        let regex = Arc::new(DynamicRegex::compile(pattern)?);
        cache.insert(pattern.to_owned(), Arc::clone(&regex));
        Ok(regex.is_match(text))
    }
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

type ContextFunction = Box<
    dyn for<'c, 'a> Fn(&mut FunctionContext<'c, 'a>) -> Result<CowVal<'c, 'a>, ExecutionError>
        + Send
        + Sync,
>;

/// The root scope of a policy: its environment and its `matches`.
pub(crate) fn root_context(env: Arc<Env>, regexes: Arc<RegexTable>) -> Context<'static, 'static> {
    let mut root = Context::with_env(env);
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
    root
}

fn as_str(val: &dyn Val) -> Option<&str> {
    val.downcast_ref::<CelString>().map(CelString::inner)
}

/// `addr.inCidr(range)`, `addr.inCidr([ranges])`, `inCidr(addr, range)`...
fn in_cidr<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [address, ranges] = args.as_slice() else {
        return Err(ExecutionError::invalid_argument_count(2, args.len()));
    };
    let address = as_str(address.as_ref())
        .ok_or_else(|| ExecutionError::function_error("inCidr", "the address must be a string"))?;
    let ip = parse_ip(address).map_err(|e| ExecutionError::function_error("inCidr", e))?;
    if let Some(range) = as_str(ranges.as_ref()) {
        return cidr_contains(range, ip).map(bool_val);
    }
    let list = ranges.as_iterable().ok_or_else(|| {
        ExecutionError::function_error("inCidr", "takes a CIDR string or a list of them")
    })?;
    let mut iter = list.iter();
    while let Some(item) = iter.next() {
        let range = as_str(item).ok_or_else(|| {
            ExecutionError::function_error("inCidr", "the list must hold CIDR strings")
        })?;
        if cidr_contains(range, ip)? {
            return Ok(bool_val(true));
        }
    }
    Ok(bool_val(false))
}

fn is_ip<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let text = args
        .first()
        .and_then(|a| as_str(a.as_ref()))
        .ok_or_else(|| ExecutionError::function_error("isIP", "takes a string"))?;
    Ok(bool_val(parse_ip(text).is_ok()))
}

/// An IP address, v4 or v6, but not an IPv4-mapped IPv6 one
/// (`::ffff:10.0.0.1`): as Kubernetes' CEL `ip()` and `cidr()` refuse
/// them, so that one address has one spelling and a rule cannot be
/// sidestepped by the other. Envoy reports an IPv4 peer of a dual-stack
/// listener as IPv4, so `source.address` never takes that form.
fn parse_ip(text: &str) -> Result<IpAddr, String> {
    let ip: IpAddr = text
        .parse()
        .map_err(|_| format!("{text:?} is not an IP address"))?;
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => Err(format!(
            "{text:?} is an IPv4-mapped IPv6 address, which is not allowed: write the IPv4 address"
        )),
        ip => Ok(ip),
    }
}

fn cidr_contains(range: &str, ip: IpAddr) -> Result<bool, ExecutionError> {
    let invalid =
        || ExecutionError::function_error("inCidr", format!("{range:?} is not a CIDR range"));
    let (network, prefix) = range.split_once('/').ok_or_else(invalid)?;
    let network = match parse_ip(network) {
        Ok(network) => network,
        Err(e) if network.parse::<IpAddr>().is_ok() => {
            return Err(ExecutionError::function_error(
                "inCidr",
                format!("in range {range:?}: {e}"),
            ));
        }
        Err(_) => return Err(invalid()),
    };
    let prefix: u32 = prefix.parse().map_err(|_| invalid())?;
    match (network, ip) {
        (IpAddr::V4(net), IpAddr::V4(ip)) if prefix <= 32 => {
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            Ok(u32::from(net) & mask == u32::from(ip) & mask)
        }
        (IpAddr::V6(net), IpAddr::V6(ip)) if prefix <= 128 => {
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            Ok(u128::from(net) & mask == u128::from(ip) & mask)
        }
        (IpAddr::V4(_), _) if prefix <= 32 => Ok(false),
        (IpAddr::V6(_), _) if prefix <= 128 => Ok(false),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        parse_ip(s).unwrap()
    }

    #[test]
    fn cidr_membership_for_v4_v6_and_mapped_addresses() {
        assert!(cidr_contains("10.0.0.0/8", ip("10.255.0.1")).unwrap());
        assert!(!cidr_contains("10.0.0.0/8", ip("11.0.0.1")).unwrap());
        assert!(cidr_contains("0.0.0.0/0", ip("8.8.8.8")).unwrap());
        assert!(cidr_contains("192.168.1.7/32", ip("192.168.1.7")).unwrap());
        assert!(cidr_contains("fd00::/8", ip("fd12::1")).unwrap());
        assert!(!cidr_contains("fd00::/8", ip("10.0.0.1")).unwrap());
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "fd00::/129",
            "x/8",
            "10.0.0.0/-1",
        ] {
            assert!(cidr_contains(bad, ip("10.0.0.1")).is_err(), "{bad}");
        }
    }

    #[test]
    fn ipv4_mapped_addresses_and_ranges_are_errors_as_in_kubernetes_cel() {
        // Kubernetes' `ip()` and `cidr()` refuse them (and `isIP` is false).
        for mapped in ["::ffff:10.1.2.3", "::FFFF:192.168.0.1", "::ffff:0a01:0203"] {
            let e = parse_ip(mapped).unwrap_err();
            assert!(e.contains("IPv4-mapped"), "{e}");
        }
        assert!(parse_ip("::1").is_ok() && parse_ip("fd00::ffff:10.0.0.1").is_ok());
        let e = cidr_contains("::ffff:192.168.0.1/24", ip("192.168.0.1")).unwrap_err();
        assert!(e.to_string().contains("IPv4-mapped"), "{e}");
        assert!(cidr_contains("::ffff:0.0.0.0/96", ip("::1")).is_err());
    }

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
