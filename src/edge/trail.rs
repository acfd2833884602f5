//! The decision trail: what an audit record says about *why*, beyond the
//! outcome.
//!
//! Data flow: after a decision, [`super::audit`] has [`Trail::write`] add
//! to its record the values of what the deciding rules read (from the rules' own footprints,
//! [`crate::engine::policy::footprint`]), the grant used, a revocation hit,
//! shadow outcomes, whether the decision and the identity came from
//! caches, and the generations of every live input in force. Credentials
//! never appear: every value read passes through the engine's
//! [`Redaction`], so secret headers, query values and anything shaped like
//! a credential are written as `<redacted>`.

use std::time::SystemTime;

use super::json_line::JsonObject;
use crate::engine::decision::Shadow;
use crate::engine::policy::footprint::{Footprint, Part};
use crate::engine::redaction::Redaction;
use crate::engine::{Attributes, Decision, Snapshot, percent, time};

/// Which attributes a record's `read` holds (`audit.record`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordMode {
    /// What the deciding rule read (every rule's, when none decided).
    #[default]
    Read,
    /// Every attribute a rule could read, so that `celador replay` can
    /// re-decide the record with rules that read something else.
    All,
}

/// Every part of a request a rule can read, and the volatile values: what
/// `audit.record: all` records. (The signals are written only when the
/// decision counted them: the engine counts them for policies that read
/// them, and a record never shows counts it did not have.)
fn everything() -> &'static Footprint {
    static ALL: std::sync::OnceLock<Footprint> = std::sync::OnceLock::new();
    ALL.get_or_init(|| Footprint {
        parts: [
            Part::Source,
            Part::SourceAddress,
            Part::SourcePort,
            Part::TokenId,
            Part::Token,
            Part::Method,
            Part::Path,
            Part::RawPath,
            Part::Host,
            Part::Scheme,
            Part::Protocol,
            Part::Size,
            Part::Query,
            Part::Headers,
            Part::Context,
            Part::DestinationPrincipal,
            Part::DestinationAddress,
            Part::DestinationPort,
        ]
        .into(),
        volatile: ["now", "request.time", "request.id", "signals"].into(),
        ..Footprint::default()
    })
}

/// The trail of one decision, written into its audit record.
#[derive(Debug, Clone, Copy)]
pub struct Trail<'a> {
    mode: RecordMode,
    decision: &'a Decision,
    snapshot: &'a Snapshot,
    attrs: &'a Attributes<'a>,
    redaction: &'a Redaction,
    enforced: bool,
    now: SystemTime,
    /// The headers the record holds at its top level (`audit.headers`).
    audited: &'a [(String, bool)],
}

impl<'a> Trail<'a> {
    /// The trail of `decision`, made with `snapshot` at `now`, its values
    /// as `redaction` lets them be shown; `enforced` is false on a route in
    /// shadow mode.
    pub fn of(
        decision: &'a Decision,
        snapshot: &'a Snapshot,
        (attrs, redaction): (&'a Attributes<'a>, &'a Redaction),
        enforced: bool,
        now: SystemTime,
    ) -> Self {
        Trail {
            mode: RecordMode::Read,
            decision,
            snapshot,
            attrs,
            redaction,
            enforced,
            now,
            audited: &[],
        }
    }

    /// This trail in a record that also holds the values of `headers` at
    /// its top level (`audit.headers`), for `truncated`.
    pub fn auditing(self, headers: &'a [(String, bool)]) -> Self {
        Trail {
            audited: headers,
            ..self
        }
    }

    /// This trail recording what `mode` says.
    pub fn recording(self, mode: RecordMode) -> Self {
        Trail { mode, ..self }
    }

    /// Writes the trail's members into `out`:
    /// * `read`: the values of what the deciding rule read (every rule's,
    ///   when none decided), by attribute path, redacted;
    /// * `grant`, `revoked`, `shadow`: the grant in force, the revocation
    ///   entry that denied (with the SET it came from, `revoked.set`), what
    ///   shadow rules would have decided;
    /// * `enforced`, `cache` (whether the decision and the identity came from
    ///   caches) and `versions` (of every live input in force).
    pub fn write(&self, out: &mut JsonObject<'_>) {
        let d = self.decision;
        let identified = d.identity.source.is_some() || d.identity.token.is_some();
        // A revoked credential and an ambiguous path are denied before
        // any rule reads anything.
        let rules_ran = d.revoked.is_none() && d.reason != crate::engine::Reason::InvalidPath;
        // `all` records them still: other rules or revocations may decide
        // them differently on replay.
        if identified && (rules_ran || self.mode == RecordMode::All) {
            let policy = &self.snapshot.policy;
            let footprint = match self.mode {
                RecordMode::All => everything(),
                RecordMode::Read => d
                    .rule
                    .as_ref()
                    .and_then(|name| policy.rule(name))
                    .map_or(policy.footprint(), |rule| &*rule.footprint),
            };
            if !footprint.parts.is_empty() || !footprint.volatile.is_empty() {
                out.object("read", |o| self.write_read(o, footprint));
            }
            self.write_truncated(out, footprint);
        } else {
            self.write_truncated(out, &Footprint::default());
        }
        if let Some(tree) = &d.explanation {
            out.raw("explanation", &clause_json(tree).to_string());
        }
        if let Some(g) = &d.grant {
            out.object("grant", |o| {
                o.str("name", &g.name);
                o.str("reason", &self.redaction.text(&g.reason));
                o.str("expires", &time::rfc3339(g.expires));
                o.str("origin", g.origin.as_str());
            });
        }
        if let Some(r) = &d.revoked {
            out.object("revoked", |o| self.write_revoked(o, r));
        }
        if !d.shadow.is_empty() {
            write_shadow(out, &d.shadow);
        }
        out.bool("enforced", self.enforced);
        out.object("cache", |o| {
            o.bool("decision", d.from_cache);
            o.bool("identity", identified && d.identity.from_cache);
        });
        out.object("versions", |o| self.write_versions(o));
    }

    /// `revoked`: the entry that denied, why, where it came from, and the
    /// Security Event Token that made it (`set`), if one did.
    fn write_revoked(&self, o: &mut JsonObject<'_>, r: &crate::engine::decision::Revoked) {
        let redaction = self.redaction;
        o.str("entry", &r.entry);
        // A reason from a SET quotes its `jti`, which the transmitter chose.
        o.str("reason", &redaction.text(&r.reason));
        o.str("origin", r.origin.as_str());
        // The trail ends at the security tool's event.
        if let Some(set) = &r.set {
            o.object("set", |o| {
                o.str("source", &redaction.text(&set.source));
                o.str("event", &redaction.text(&set.event));
                o.str("jti", &redaction.text(&set.jti));
            });
        }
    }

    /// `truncated`: the attribute paths of the header values this record
    /// holds cut at [`MAX_HEADER_VALUE`] (in `read`, the parts of
    /// `footprint`, or in `headers`), so that no tool takes a cut value for
    /// the request's. Absent when none is.
    fn write_truncated(&self, out: &mut JsonObject<'_>, footprint: &Footprint) {
        let (attrs, redaction) = (self.attrs, self.redaction);
        // Most requests have no such value: one pass over the lengths.
        if !attrs.headers.values().any(|v| v.len() > MAX_HEADER_VALUE) {
            return;
        }
        let held = |name: &str| {
            self.audited.iter().any(|(audited, _)| audited == name)
                || footprint.parts.iter().any(|part| match part {
                    Part::Headers => true,
                    Part::Header(read) => read.as_str() == name,
                    _ => false,
                })
        };
        let mut cut: Vec<String> = attrs
            .headers
            .iter()
            // `held` first: the value's scan for secrets costs more.
            .filter(|(name, value)| {
                held(name) && redaction.header(name, value).len() > MAX_HEADER_VALUE
            })
            .map(|(name, _)| format!("request.headers[{}]", quoted(name)))
            .collect();
        if !cut.is_empty() {
            cut.sort_unstable();
            out.strs("truncated", &cut);
        }
    }

    fn write_versions(&self, o: &mut JsonObject<'_>) {
        let s = self.snapshot;
        o.str("rules", s.policy.version());
        o.str("grants", s.grants.version());
        o.str("revocations", s.revocations.version());
        if let Some(shadow) = &s.shadow {
            o.str("shadow_policy", shadow.version());
        }
        o.object("bundles", |b| {
            let mut domains: Vec<_> = s.bundles.domains().iter().collect();
            domains.sort_unstable_by(|x, y| x.0.cmp(y.0));
            for (td, bundle) in domains {
                b.u64(td, bundle.generation());
            }
        });
        o.u64("snapshot", s.generation);
    }

    /// The values of `footprint`'s parts and volatile reads, redacted.
    fn write_read(&self, o: &mut JsonObject<'_>, footprint: &Footprint) {
        for part in &footprint.parts {
            self.write_part(o, part);
        }
        let (attrs, now) = (self.attrs, self.now);
        for volatile in &footprint.volatile {
            match *volatile {
                "now" => o.str("now", &time::rfc3339(now)),
                "request.time" => o.str("request.time", &time::rfc3339(attrs.time.unwrap_or(now))),
                "request.id" => o.str("request.id", &self.redaction.text(attrs.request_id())),
                "signals" if self.mode == RecordMode::All && self.decision.signals.is_none() => {}
                "signals" => {
                    let s = self.decision.signals.clone().unwrap_or_default();
                    o.object("signals", |o| {
                        o.u64("requests_10s", s.requests_10s.into());
                        o.u64("requests_1m", s.requests_1m.into());
                        o.u64("requests_10m", s.requests_10m.into());
                        o.u64("denials_10s", s.denials_10s.into());
                        o.u64("denials_1m", s.denials_1m.into());
                        o.u64("denials_10m", s.denials_10m.into());
                        o.u64("store_stale_seconds", s.store_stale_seconds.into());
                        o.object("fleet", |o| {
                            o.u64("requests_10s", s.fleet.requests_10s.into());
                            o.u64("requests_1m", s.fleet.requests_1m.into());
                            o.u64("requests_10m", s.fleet.requests_10m.into());
                            o.u64("denials_10s", s.fleet.denials_10s.into());
                            o.u64("denials_1m", s.fleet.denials_1m.into());
                            o.u64("denials_10m", s.fleet.denials_10m.into());
                        });
                        // The trail ends at the security tool's event.
                        if let Some(r) = &s.risk {
                            o.object("risk", |o| {
                                o.str("level", r.level.as_str());
                                o.str("since", &time::rfc3339(r.since));
                                o.str("source", &r.source);
                                o.str("event", &r.event);
                                o.str("jti", &r.jti);
                            });
                        }
                    });
                }
                _ => {}
            }
        }
    }

    /// One part's attribute path and value.
    fn write_part(&self, o: &mut JsonObject<'_>, part: &Part) {
        let (d, attrs, redaction) = (self.decision, self.attrs, self.redaction);
        let source = d.identity.source.as_deref();
        let token = d.identity.token.as_deref();
        match part {
            Part::Source => o.opt_str("source.id", source.map(|s| s.id.as_str())),
            Part::SourceAddress => o.str("source.address", attrs.source_address),
            Part::SourcePort => o.u64("source.port", attrs.source_port.into()),
            Part::TokenId => o.opt_str("token.id", token.map(|t| t.id.as_str())),
            Part::Token => {
                let claims = token.and_then(|t| serde_json::to_string(&t.claims).ok());
                // A claim can hold a token of its own; `<redacted>` keeps
                // the JSON valid where one is cut out.
                let claims = claims.as_deref().map(|c| redaction.text(c));
                o.raw("token.claims", claims.as_deref().unwrap_or("null"));
            }
            Part::Method => o.str("request.method", attrs.method),
            Part::Path => o.str("request.path", &redaction.path(&attrs.path)),
            Part::RawPath => o.str("request.raw_path", &redaction.path(attrs.raw_path)),
            Part::Host => o.str("request.host", &redaction.text(attrs.host)),
            Part::Scheme => o.str("request.scheme", attrs.scheme),
            Part::Protocol => o.str("request.protocol", attrs.protocol),
            Part::Size => o.i64("request.size", attrs.size),
            Part::DestinationPrincipal => {
                o.str("destination.principal", attrs.destination_principal);
            }
            Part::DestinationAddress => o.str("destination.address", attrs.destination_address),
            Part::DestinationPort => o.u64("destination.port", attrs.destination_port.into()),
            Part::Grant => o.str("grant.name", d.grant.as_ref().map_or("", |g| &g.name)),
            Part::Query => o.object("request.query", |o| query(o, attrs.query, redaction)),
            // Bounded as `audit.headers` are: the client chooses them.
            Part::Header(name) => {
                let value = attrs.header(name).map(|v| redaction.header(name, v));
                let value = value.as_deref().map(truncate);
                o.opt_str(&format!("request.headers[{}]", quoted(name)), value);
            }
            Part::Headers => o.object("request.headers", |o| {
                let mut headers: Vec<_> = attrs.headers.iter().collect();
                headers.sort_unstable();
                for (k, v) in headers {
                    o.str(k, truncate(&redaction.header(k, v)));
                }
            }),
            Part::ContextKey(name) => {
                let value = attrs.context.get(name).map(|v| redaction.value(v));
                o.opt_str(&format!("context[{}]", quoted(name)), value);
            }
            Part::Context => o.object("context", |o| {
                let mut context: Vec<_> = attrs.context.iter().collect();
                context.sort_unstable();
                for (k, v) in context {
                    o.str(k, redaction.value(v));
                }
            }),
        }
    }
}

/// `shadow`: what each shadow would have decided.
fn write_shadow(out: &mut JsonObject<'_>, shadows: &[Shadow]) {
    out.key("shadow");
    out.buf.push('[');
    for (i, s) in shadows.iter().enumerate() {
        if i > 0 {
            out.buf.push(',');
        }
        let mut o = JsonObject::open(out.buf);
        o.str("source", s.rules.as_str());
        o.bool("allowed", s.allowed);
        o.str("reason", s.reason.as_str());
        o.opt_str("rule", s.rule.as_deref());
        if let Some(version) = &s.version {
            o.str("version", version);
        }
        o.close();
    }
    out.buf.push(']');
}

/// A map key as CEL writes it in an index: a quoted string.
fn quoted(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 2);
    super::json_line::string(&mut out, key);
    out
}

/// The query parameters, decoded, as `redaction` shows them (values only
/// of the parameters `audit.query_params` names); for a repeated name, the
/// first value (as rules see it).
fn query(o: &mut JsonObject<'_>, raw: &str, redaction: &Redaction) {
    // A name given more than once is shown with every value, in order: a
    // rule can only have read it through `request.query_all`.
    let mut values: Vec<(String, Vec<String>)> = Vec::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent::decode_lossy(k, true);
        let value = percent::decode_lossy(v, true);
        let value = redaction.query_value(&key, &value).to_owned();
        match values.iter_mut().find(|(name, _)| *name == key) {
            Some((_, all)) => all.push(value),
            None => values.push((key.into_owned(), vec![value])),
        }
    }
    for (key, all) in &values {
        let name = redaction.query_name(key);
        match all.as_slice() {
            [one] => o.str(name, one),
            many => o.strs(name, many),
        }
    }
}

/// A rule's clause tree (see `engine::policy::explain`) as JSON: each clause
/// with its value or error, the values it read, and the clauses below it.
pub fn clause_json(c: &crate::engine::policy::explain::Clause) -> serde_json::Value {
    let mut v = serde_json::Map::new();
    v.insert("clause".into(), c.text.clone().into());
    if let Some(op) = c.op {
        v.insert("op".into(), op.into());
    }
    match &c.value {
        Ok(value) => v.insert("value".into(), value.clone().into()),
        Err(e) => v.insert("error".into(), e.clone().into()),
    };
    if !c.reads.is_empty() {
        let reads = c
            .reads
            .iter()
            .map(|(path, value)| match value {
                Ok(value) => serde_json::json!({"path": path, "value": value}),
                Err(e) => serde_json::json!({"path": path, "error": e}),
            })
            .collect();
        v.insert("reads".into(), reads);
    }
    if !c.children.is_empty() {
        v.insert(
            "children".into(),
            c.children.iter().map(clause_json).collect(),
        );
    }
    serde_json::Value::Object(v)
}

/// Longer header values are cut in audit records.
const MAX_HEADER_VALUE: usize = 1024;

/// `value`, cut at [`MAX_HEADER_VALUE`] bytes (on a character boundary):
/// what an audit record holds of a header.
pub(super) fn truncate(value: &str) -> &str {
    if value.len() <= MAX_HEADER_VALUE {
        return value;
    }
    let mut end = MAX_HEADER_VALUE;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value.get(..end).unwrap_or_default()
}
