//! What of a request a rule's result can depend on: the footprint the
//! decision cache keys on.
//!
//! Data flow: each rule's parsed expression is walked once at load
//! ([`Footprint::of`]), before its fields are flattened; the policy keeps
//! the union over its rules. The decision cache ([`crate::cache`])
//! builds its key from exactly these parts, so two requests with equal
//! parts get equal results from every rule. A rule that reads a value that
//! changes on every request or with the clock (`now`, `request.time`,
//! `request.id`, `signals`) makes the footprint *volatile*: decisions of
//! such a policy are not cached, unless the clock is read only in ways a
//! cache key can hold ([`super::clock`]).
//!
//! The walk errs on the side of more parts: a map read with a constant key
//! (`request.headers["x"]`, `has(context.route)`, `"x" in request.headers`)
//! keys on that entry only; any other use of the map keys on all of it.

use std::collections::BTreeSet;

use cel::IdedExpr;
use cel::common::ast::{Expr, LiteralValue, operators};

/// One part of a request a rule can read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    /// Whether there is an X.509-SVID, its SPIFFE ID and `notAfter`.
    Source,
    /// `source.address`.
    SourceAddress,
    /// `source.port`.
    SourcePort,
    /// Whether there is a JWT-SVID, its SPIFFE ID and expiry.
    TokenId,
    /// The whole JWT-SVID (its claims and audience).
    Token,
    /// `request.method`.
    Method,
    /// `request.path`.
    Path,
    /// `request.raw_path`.
    RawPath,
    /// `request.host`.
    Host,
    /// `request.scheme`.
    Scheme,
    /// `request.protocol`.
    Protocol,
    /// `request.size`.
    Size,
    /// The query string (`request.query`, `request.query_all`).
    Query,
    /// One request header, by its key as written.
    Header(String),
    /// Every request header.
    Headers,
    /// One context extension.
    ContextKey(String),
    /// Every context extension.
    Context,
    /// `destination.principal`.
    DestinationPrincipal,
    /// `destination.address`.
    DestinationAddress,
    /// `destination.port`.
    DestinationPort,
    /// The grant in force.
    Grant,
}

/// What a rule (or a whole policy) can depend on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Footprint {
    /// The parts of a request the result depends on.
    pub parts: BTreeSet<Part>,
    /// The values read that change with every request or with the clock
    /// (`now`, `request.time`, `request.id`, `signals`).
    pub volatile: BTreeSet<&'static str>,
    /// Those of them no cache key can hold: why a decision cannot be
    /// cached. Empty when it can.
    pub unbounded: BTreeSet<&'static str>,
    /// The bounded reads of the clock (`request.time.getHours()`,
    /// `now < timestamp("...")`, see [`super::clock`]), as text: a cached
    /// decision is keyed on their values.
    pub clock: BTreeSet<String>,
}

impl Footprint {
    /// The footprint of a rule's parsed (not yet flattened) expression.
    pub fn of(expr: &IdedExpr) -> Self {
        let mut footprint = Footprint::default();
        footprint.walk(expr, &mut Vec::new());
        footprint
    }

    /// The union of several footprints.
    pub(crate) fn union<'a>(all: impl IntoIterator<Item = &'a Footprint>) -> Self {
        let mut out = Footprint::default();
        for f in all {
            out.merge(f);
        }
        out
    }

    /// Adds `other` to this footprint.
    pub(crate) fn merge(&mut self, other: &Footprint) {
        self.parts.extend(other.parts.iter().cloned());
        self.volatile.extend(other.volatile.iter().copied());
        self.unbounded.extend(other.unbounded.iter().copied());
        self.clock.extend(other.clock.iter().cloned());
    }

    /// Whether decisions with this footprint may be cached.
    pub(crate) fn cacheable(&self) -> bool {
        self.unbounded.is_empty()
    }

    /// A read of a value that changes with every request or the clock.
    fn volatile(&mut self, name: &'static str) {
        self.volatile.insert(name);
        self.unbounded.insert(name);
    }

    fn walk(&mut self, expr: &IdedExpr, bound: &mut Vec<String>) {
        match &expr.expr {
            Expr::Ident(name) if !bound.contains(name) => self.variable(name),
            Expr::Select(select) => {
                if let Some(var) = variable_of(&select.operand, bound) {
                    self.field(var, &select.field);
                } else if let Some(map) = map_of(&select.operand, bound) {
                    self.map_key(map, &select.field);
                } else {
                    self.walk(&select.operand, bound);
                }
            }
            Expr::Call(call) => match super::clock::projection(call, bound) {
                // Read, but within bounds a cache key can hold.
                Some(clock) => {
                    self.volatile.insert(clock);
                    self.clock.insert(super::unparse::unparse(expr));
                }
                None => self.call(call, bound),
            },
            Expr::List(list) => {
                for element in &list.elements {
                    self.walk(element, bound);
                }
            }
            Expr::Map(map) => {
                for entry in &map.entries {
                    if let cel::common::ast::EntryExpr::MapEntry(e) = &entry.expr {
                        self.walk(&e.key, bound);
                        self.walk(&e.value, bound);
                    }
                }
            }
            Expr::Comprehension(comp) => {
                self.walk(&comp.iter_range, bound);
                self.walk(&comp.accu_init, bound);
                let depth = bound.len();
                bound.push(comp.iter_var.clone());
                bound.extend(comp.iter_var2.clone());
                bound.push(comp.accu_var.clone());
                self.walk(&comp.loop_cond, bound);
                self.walk(&comp.loop_step, bound);
                self.walk(&comp.result, bound);
                bound.truncate(depth);
            }
            Expr::Struct(_) | Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
        }
    }

    /// A call: a constant-key read of a map keys on that entry only.
    fn call(&mut self, call: &cel::common::ast::CallExpr, bound: &mut Vec<String>) {
        let keyed = match (call.func_name.as_str(), call.args.as_slice()) {
            (operators::INDEX | operators::OPT_INDEX | operators::OPT_SELECT, [map, key])
            | (operators::IN, [key, map]) => match (map_of(map, bound), string_literal(key)) {
                (Some(map), Some(key)) => Some((map, key)),
                _ => None,
            },
            _ => None,
        };
        if let Some((map, key)) = keyed {
            self.map_key(map, key);
            return;
        }
        if let Some(target) = &call.target {
            self.walk(target, bound);
        }
        for arg in &call.args {
            self.walk(arg, bound);
        }
    }

    /// A variable used as a whole: everything it holds.
    fn variable(&mut self, name: &str) {
        let fields: &[&str] = match name {
            "source" => &["id", "address", "port"],
            "token" => &["claims"],
            "request" => &[
                "id",
                "method",
                "path",
                "raw_path",
                "query",
                "query_all",
                "host",
                "scheme",
                "protocol",
                "headers",
                "size",
                "time",
            ],
            "destination" => &["principal", "address", "port"],
            "context" => {
                self.parts.insert(Part::Context);
                return;
            }
            "now" => {
                self.volatile("now");
                return;
            }
            "signals" | "grant" => &["name"],
            _ => return,
        };
        for field in fields {
            self.field(name, field);
        }
    }

    /// `var.field`.
    fn field(&mut self, var: &str, field: &str) {
        let part = match (var, field) {
            ("source", "address") => Part::SourceAddress,
            ("source", "port") => Part::SourcePort,
            ("source", _) => Part::Source,
            ("token", "id" | "trust_domain" | "path" | "expiry") => Part::TokenId,
            ("token", _) => Part::Token,
            ("request", "id") => {
                self.volatile("request.id");
                return;
            }
            ("request", "time") => {
                self.volatile("request.time");
                return;
            }
            ("request", "method") => Part::Method,
            ("request", "path") => Part::Path,
            ("request", "raw_path") => Part::RawPath,
            ("request", "host") => Part::Host,
            ("request", "scheme") => Part::Scheme,
            ("request", "protocol") => Part::Protocol,
            ("request", "size") => Part::Size,
            ("request", "query" | "query_all") => Part::Query,
            ("request", "headers") => Part::Headers,
            ("destination", "principal") => Part::DestinationPrincipal,
            ("destination", "address") => Part::DestinationAddress,
            ("destination", "port") => Part::DestinationPort,
            ("signals", _) => {
                self.volatile("signals");
                return;
            }
            ("grant", _) => Part::Grant,
            // The workload is the same for every request; `context.x` is a
            // map key, handled by `map_key`.
            _ => return,
        };
        self.parts.insert(part);
    }

    fn map_key(&mut self, map: MapName, key: &str) {
        match map {
            MapName::Headers => self.parts.insert(Part::Header(key.to_owned())),
            MapName::Context => self.parts.insert(Part::ContextKey(key.to_owned())),
            MapName::Query => self.parts.insert(Part::Query),
            MapName::Constant => false,
        };
    }
}

/// A map whose single keys can be keyed on.
#[derive(Debug, Clone, Copy)]
enum MapName {
    Headers,
    Query,
    Context,
    /// The workload's labels and annotations: the same for every request.
    Constant,
}

/// The top-level variable `expr` names, unless a macro's variable hides it.
fn variable_of<'e>(expr: &'e IdedExpr, bound: &[String]) -> Option<&'e str> {
    match &expr.expr {
        Expr::Ident(name) if !bound.contains(name) && name != "context" => Some(name),
        _ => None,
    }
}

fn map_of(expr: &IdedExpr, bound: &[String]) -> Option<MapName> {
    match &expr.expr {
        Expr::Ident(name) if name == "context" && !bound.iter().any(|s| s == name) => {
            Some(MapName::Context)
        }
        Expr::Select(select) if !select.test => {
            match (variable_of(&select.operand, bound)?, select.field.as_str()) {
                ("request", "headers") => Some(MapName::Headers),
                ("request", "query" | "query_all") => Some(MapName::Query),
                ("workload", "labels" | "annotations") => Some(MapName::Constant),
                _ => None,
            }
        }
        _ => None,
    }
}

fn string_literal(expr: &IdedExpr) -> Option<&str> {
    match &expr.expr {
        Expr::Literal(LiteralValue::String(s)) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn footprint(source: &str) -> Footprint {
        let env = crate::policy::functions::environment();
        let expr = env.parser().parse(source).unwrap();
        Footprint::of(&expr)
    }

    #[test]
    fn keyed_reads_key_on_one_entry_and_other_reads_on_the_whole_map() {
        let f = footprint(
            r#"source.id == "x" && request.headers["x-a"] == "1" && has(context.route) && "x-b" in request.headers"#,
        );
        assert_eq!(
            f.parts,
            BTreeSet::from([
                Part::Source,
                Part::Header("x-a".into()),
                Part::Header("x-b".into()),
                Part::ContextKey("route".into()),
            ])
        );
        assert!(f.cacheable());
        let f = footprint(r#"request.headers.exists(k, k.startsWith("x-")) && context.size() > 0"#);
        assert_eq!(f.parts, BTreeSet::from([Part::Headers, Part::Context]));
        let f = footprint(r#"request.headers[request.method] == "1""#);
        assert_eq!(f.parts, BTreeSet::from([Part::Headers, Part::Method]));
    }

    #[test]
    fn the_clock_the_request_id_and_signals_are_volatile() {
        for (source, why) in [
            (
                "now - duration(\"1h\") > timestamp(\"2020-01-01T00:00:00Z\")",
                "now",
            ),
            ("request.time > now", "request.time"),
            ("request.time.getHours(context.tz) < 4", "request.time"),
            ("request.time.getMilliseconds() < 4", "request.time"),
            ("request.id != \"\"", "request.id"),
            ("signals.requests_1m > 600", "signals"),
            ("request == request", "request.id"),
        ] {
            let f = footprint(source);
            assert!(f.volatile.contains(why), "{source}: {f:?}");
            assert!(!f.cacheable());
        }
        // A macro's own variable named like a top-level one is not it.
        let f = footprint("[1, 2].exists(now, now > 1)");
        assert!(f.cacheable(), "{f:?}");
    }

    #[test]
    fn the_raw_path_and_every_query_value_are_parts_of_their_own() {
        let f = footprint(r#"request.raw_path == "/a" && request.query_all.x == ["1"]"#);
        assert_eq!(f.parts, BTreeSet::from([Part::RawPath, Part::Query]));
        let f = footprint(r#""x" in request.query_all && request.path == "/a""#);
        assert_eq!(f.parts, BTreeSet::from([Part::Path, Part::Query]));
        let f = footprint("request == request");
        assert!(f.parts.contains(&Part::RawPath) && f.parts.contains(&Part::Query));
    }

    #[test]
    fn token_claims_key_on_the_whole_token_and_the_workload_on_nothing() {
        let f = footprint(
            r#"token.claims["scope"] == "x" && token.id == "y" && workload.labels["app"] == "z""#,
        );
        assert_eq!(f.parts, BTreeSet::from([Part::TokenId, Part::Token]));
    }
}
