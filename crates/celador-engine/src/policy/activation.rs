//! The values a rule reads, built per request without copying the request.
//!
//! Data flow: an [`Input`] (the verified identity, the request's
//! [`Attributes`], the [`Workload`] and the clock) becomes an [`Activation`],
//! the variable resolver CEL evaluates against. Scalars are borrowed strings
//! made once per request; maps (`request.headers`, `request.query` and
//! `request.query_all` (see [`super::query`]), `context`, the workload's
//! labels) are built only if a rule reads them, and at most once per
//! request.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::SystemTime;

use cel::ExecutionError;
use cel::common::traits::Indexer;
use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelTimestamp,
    CelUInt, Type,
};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;

use super::query::Query;
use crate::attributes::Attributes;
use crate::grant::Grant;
use crate::identity::X509Svid;
use crate::identity::jwt::JwtSvid;
use crate::signals::Signals;
use crate::workload::Workload;

/// Everything a rule can read about one request.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The verified X.509-SVID of the peer, if any.
    pub source: Option<&'a X509Svid>,
    /// The verified JWT-SVID, if any.
    pub token: Option<&'a JwtSvid>,
    /// The request.
    pub attributes: &'a Attributes<'a>,
    /// The protected workload.
    pub workload: &'a Workload,
    /// The time of evaluation.
    pub now: SystemTime,
    /// The grant in force for the caller, if any.
    pub grant: Option<&'a std::sync::Arc<Grant>>,
    /// The caller's behavioural signals, the current request counted.
    pub signals: &'a Signals,
}

/// The variables of one evaluation.
#[derive(Debug)]
pub(crate) struct Activation<'a> {
    source: SourceVal<'a>,
    token: TokenVal<'a>,
    request: RequestVal<'a>,
    destination: DestinationVal<'a>,
    context: LazyMap<'a>,
    workload: WorkloadVal<'a>,
    now: CelTimestamp,
    grant: GrantVal<'a>,
    signals: SignalsVal<'a>,
}

impl<'a> Activation<'a> {
    /// The activation of `input`.
    pub(crate) fn new(input: Input<'a>) -> Self {
        let attrs = input.attributes;
        let now = timestamp(input.now);
        Activation {
            source: SourceVal {
                svid: input.source.map(|svid| SvidFields {
                    id: svid.id.as_str().into(),
                    trust_domain: svid.id.trust_domain().into(),
                    path: svid.id.path().into(),
                    not_after: timestamp(svid.not_after),
                }),
                address: attrs.source_address.into(),
                port: CelInt::from(i64::from(attrs.source_port)),
            },
            token: TokenVal {
                jwt: input.token.map(|jwt| TokenFields {
                    id: jwt.id.as_str().into(),
                    trust_domain: jwt.id.trust_domain().into(),
                    path: jwt.id.path().into(),
                    expiry: timestamp(jwt.expiry),
                    jwt,
                    audience: OnceLock::new(),
                    claims: OnceLock::new(),
                }),
            },
            request: RequestVal {
                id: attrs.request_id().into(),
                method: attrs.method.into(),
                path: attrs.path.as_ref().into(),
                raw_path: attrs.raw_path.into(),
                host: attrs.host.into(),
                scheme: attrs.scheme.into(),
                protocol: attrs.protocol.into(),
                size: CelInt::from(attrs.size),
                time: attrs.time.map_or_else(|| now.clone(), timestamp),
                headers: LazyMap::new(&attrs.headers),
                query: Query::new(attrs.query),
            },
            destination: DestinationVal {
                principal: attrs.destination_principal.into(),
                address: attrs.destination_address.into(),
                port: CelInt::from(i64::from(attrs.destination_port)),
            },
            context: LazyMap::new(attrs.context),
            workload: WorkloadVal {
                namespace: input.workload.namespace.as_str().into(),
                name: input.workload.name.as_str().into(),
                service_account: input.workload.service_account.as_str().into(),
                labels: LazyMap::new(&input.workload.labels),
                annotations: LazyMap::new(&input.workload.annotations),
            },
            now,
            grant: GrantVal::new(input.grant),
            signals: SignalsVal::new(input.signals),
        }
    }
}

impl VariableResolver for Activation<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        // `source.id` and the like, flattened at load (see
        // `policy::flatten_fields`): one lookup instead of a qualified-name
        // resolution.
        if let Some((var, field)) = variable.split_once('.') {
            let value = match var {
                "source" => self.source.field(field),
                "token" => self.token.field(field),
                "request" => self.request.field(field),
                "destination" => self.destination.field(field),
                "workload" => self.workload.field(field),
                "grant" => self.grant.field(field),
                "signals" => self.signals.field(field),
                _ => return None,
            };
            return value.ok();
        }
        Some(match variable {
            "source" => CowVal::Borrowed(&self.source),
            "token" => CowVal::Borrowed(&self.token),
            "request" => CowVal::Borrowed(&self.request),
            "destination" => CowVal::Borrowed(&self.destination),
            "context" => CowVal::Borrowed(self.context.get()),
            "workload" => CowVal::Borrowed(&self.workload),
            "now" => CowVal::Borrowed(&self.now),
            "grant" => CowVal::Borrowed(&self.grant),
            "signals" => CowVal::Borrowed(&self.signals),
            _ => return None,
        })
    }
}

fn timestamp(t: SystemTime) -> CelTimestamp {
    CelTimestamp::from(crate::time::to_chrono(t).fixed_offset())
}

/// A `map(string, string)` built on first access.
#[derive(Debug, Clone)]
struct LazyMap<'a> {
    source: &'a HashMap<String, String>,
    built: OnceLock<CelMap<'a>>,
}

impl<'a> LazyMap<'a> {
    fn new(source: &'a HashMap<String, String>) -> Self {
        LazyMap {
            source,
            built: OnceLock::new(),
        }
    }

    fn get(&self) -> &CelMap<'a> {
        self.built.get_or_init(|| {
            let entries: HashMap<CelMapKey<'a>, Box<dyn Val + 'a>> = self
                .source
                .iter()
                .map(|(k, v)| {
                    (
                        CelMapKey::from(k.as_str()),
                        Box::new(CelString::from(v.as_str())) as Box<dyn Val + 'a>,
                    )
                })
                .collect();
            CelMap::from(entries)
        })
    }
}

/// Implements `Val` and `Indexer` for a record type with a `field` method.
macro_rules! record {
    ($ty:ident, $name:literal) => {
        impl<'a> Val for $ty<'a> {
            fn get_type(&self) -> &Type {
                <Self as Val>::cel_type()
            }
            fn cel_type() -> &'static Type
            where
                Self: Sized,
            {
                static TYPE: Type = Type::new_unspecified_type($name);
                &TYPE
            }
            fn as_indexer<'b, 'v>(&'b self) -> Option<&'b (dyn Indexer + 'v)>
            where
                Self: 'v,
            {
                Some(self)
            }
            fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v>
            where
                Self: 'v,
            {
                Box::new(self.clone())
            }
        }

        impl<'a> Indexer for $ty<'a> {
            fn get<'b, 'v>(&'b self, idx: &dyn Val) -> Result<CowVal<'b, 'v>, ExecutionError>
            where
                Self: 'v,
            {
                let Some(name) = idx.downcast_ref::<CelString>() else {
                    return Err(ExecutionError::UnexpectedType {
                        got: idx.get_type().name().to_owned(),
                        want: "string".to_owned(),
                    });
                };
                // `has(source.id)` with no X.509-SVID (or `has(token.id)`
                // with no JWT-SVID) is false, not an error: that is how a
                // rule guards its reads of an identity that may be absent.
                self.field(name.inner()).map_err(|e| match e {
                    ExecutionError::FunctionError { function, .. }
                        if function == "source" || function == "token" =>
                    {
                        ExecutionError::no_such_key(name.inner())
                    }
                    other => other,
                })
            }
            fn steal<'v>(
                self: Box<Self>,
                idx: &dyn Val,
            ) -> Result<Box<dyn Val + 'v>, ExecutionError>
            where
                Self: 'v,
            {
                self.get(idx).map(CowVal::into_owned)
            }
        }
    };
}

#[derive(Debug, Clone)]
struct SvidFields<'a> {
    id: CelString<'a>,
    trust_domain: CelString<'a>,
    path: CelString<'a>,
    not_after: CelTimestamp,
}

#[derive(Debug, Clone)]
struct SourceVal<'a> {
    svid: Option<SvidFields<'a>>,
    address: CelString<'a>,
    port: CelInt,
}

impl<'a> SourceVal<'a> {
    fn field<'b>(&'b self, name: &str) -> Result<CowVal<'b, 'a>, ExecutionError> {
        let svid = || {
            self.svid.as_ref().ok_or_else(|| {
                ExecutionError::function_error(
                    "source",
                    format!("source.{name}: the request has no verified X.509-SVID"),
                )
            })
        };
        Ok(match name {
            "id" => CowVal::Borrowed(&svid()?.id),
            "trust_domain" => CowVal::Borrowed(&svid()?.trust_domain),
            "path" => CowVal::Borrowed(&svid()?.path),
            "not_after" => CowVal::Borrowed(&svid()?.not_after),
            "address" => CowVal::Borrowed(&self.address),
            "port" => CowVal::Borrowed(&self.port),
            _ => return Err(ExecutionError::no_such_key(name)),
        })
    }
}
record!(SourceVal, "celador.Source");

#[derive(Debug, Clone)]
struct TokenFields<'a> {
    jwt: &'a JwtSvid,
    id: CelString<'a>,
    trust_domain: CelString<'a>,
    path: CelString<'a>,
    expiry: CelTimestamp,
    audience: OnceLock<CelList<'a>>,
    claims: OnceLock<CelMap<'a>>,
}

#[derive(Debug, Clone)]
struct TokenVal<'a> {
    jwt: Option<TokenFields<'a>>,
}

impl<'a> TokenVal<'a> {
    fn field<'b>(&'b self, name: &str) -> Result<CowVal<'b, 'a>, ExecutionError> {
        let Some(t) = &self.jwt else {
            return Err(ExecutionError::function_error(
                "token",
                format!("token.{name}: the request has no verified JWT-SVID"),
            ));
        };
        Ok(match name {
            "id" => CowVal::Borrowed(&t.id),
            "trust_domain" => CowVal::Borrowed(&t.trust_domain),
            "path" => CowVal::Borrowed(&t.path),
            "expiry" => CowVal::Borrowed(&t.expiry),
            "audience" => CowVal::Borrowed(t.audience.get_or_init(|| {
                let items: Vec<Box<dyn Val + 'a>> = t
                    .jwt
                    .audience
                    .iter()
                    .map(|a| Box::new(CelString::from(a.as_str())) as Box<dyn Val + 'a>)
                    .collect();
                CelList::from(items)
            })),
            "claims" => CowVal::Borrowed(t.claims.get_or_init(|| json_object(&t.jwt.claims))),
            _ => return Err(ExecutionError::no_such_key(name)),
        })
    }
}
record!(TokenVal, "celador.Token");

/// A JSON object as a CEL map, borrowing its strings.
fn json_object<'a>(object: &'a serde_json::Map<String, serde_json::Value>) -> CelMap<'a> {
    let entries: HashMap<CelMapKey<'a>, Box<dyn Val + 'a>> = object
        .iter()
        .map(|(k, v)| (CelMapKey::from(k.as_str()), json_value(v)))
        .collect();
    CelMap::from(entries)
}

fn json_value<'a>(value: &'a serde_json::Value) -> Box<dyn Val + 'a> {
    use serde_json::Value as J;
    match value {
        J::Null => Box::new(CelNull),
        J::Bool(b) => Box::new(CelBool::from(*b)),
        J::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Box::new(CelInt::from(i)),
            (None, Some(u)) => Box::new(CelUInt::from(u)),
            (None, None) => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        },
        J::String(s) => Box::new(CelString::from(s.as_str())),
        J::Array(items) => Box::new(CelList::from(
            items.iter().map(json_value).collect::<Vec<_>>(),
        )),
        J::Object(object) => Box::new(json_object(object)),
    }
}

#[derive(Debug, Clone)]
struct RequestVal<'a> {
    id: CelString<'a>,
    method: CelString<'a>,
    path: CelString<'a>,
    raw_path: CelString<'a>,
    host: CelString<'a>,
    scheme: CelString<'a>,
    protocol: CelString<'a>,
    size: CelInt,
    time: CelTimestamp,
    headers: LazyMap<'a>,
    query: Query<'a>,
}

impl<'a> RequestVal<'a> {
    fn field<'b>(&'b self, name: &str) -> Result<CowVal<'b, 'a>, ExecutionError> {
        Ok(match name {
            "id" => CowVal::Borrowed(&self.id),
            "method" => CowVal::Borrowed(&self.method),
            "path" => CowVal::Borrowed(&self.path),
            "raw_path" => CowVal::Borrowed(&self.raw_path),
            "query" => CowVal::Borrowed(self.query.single()),
            "query_all" => CowVal::Borrowed(self.query.all()),
            "host" => CowVal::Borrowed(&self.host),
            "scheme" => CowVal::Borrowed(&self.scheme),
            "protocol" => CowVal::Borrowed(&self.protocol),
            "headers" => CowVal::Borrowed(self.headers.get()),
            "size" => CowVal::Borrowed(&self.size),
            "time" => CowVal::Borrowed(&self.time),
            _ => return Err(ExecutionError::no_such_key(name)),
        })
    }
}
record!(RequestVal, "celador.Request");

#[derive(Debug, Clone)]
struct DestinationVal<'a> {
    principal: CelString<'a>,
    address: CelString<'a>,
    port: CelInt,
}

impl<'a> DestinationVal<'a> {
    fn field<'b>(&'b self, name: &str) -> Result<CowVal<'b, 'a>, ExecutionError> {
        Ok(match name {
            "principal" => CowVal::Borrowed(&self.principal),
            "address" => CowVal::Borrowed(&self.address),
            "port" => CowVal::Borrowed(&self.port),
            _ => return Err(ExecutionError::no_such_key(name)),
        })
    }
}
record!(DestinationVal, "celador.Destination");

#[derive(Debug, Clone)]
struct WorkloadVal<'a> {
    namespace: CelString<'a>,
    name: CelString<'a>,
    service_account: CelString<'a>,
    labels: LazyMap<'a>,
    annotations: LazyMap<'a>,
}

impl<'a> WorkloadVal<'a> {
    fn field<'b>(&'b self, name: &str) -> Result<CowVal<'b, 'a>, ExecutionError> {
        Ok(match name {
            "namespace" => CowVal::Borrowed(&self.namespace),
            "name" => CowVal::Borrowed(&self.name),
            "service_account" => CowVal::Borrowed(&self.service_account),
            "labels" => CowVal::Borrowed(self.labels.get()),
            "annotations" => CowVal::Borrowed(self.annotations.get()),
            _ => return Err(ExecutionError::no_such_key(name)),
        })
    }
}
record!(WorkloadVal, "celador.Workload");

#[derive(Debug, Clone)]
struct GrantVal<'a> {
    name: CelString<'a>,
    reason: CelString<'a>,
    expires: CelTimestamp,
    _life: std::marker::PhantomData<&'a ()>,
}

impl<'a> GrantVal<'a> {
    fn new(grant: Option<&'a std::sync::Arc<Grant>>) -> Self {
        GrantVal {
            name: grant.map_or("", |g| &g.name).into(),
            reason: grant.map_or("", |g| &g.reason).into(),
            expires: timestamp(grant.map_or(SystemTime::UNIX_EPOCH, |g| g.expires)),
            _life: std::marker::PhantomData,
        }
    }

    fn field<'b>(&'b self, name: &str) -> Result<CowVal<'b, 'a>, ExecutionError> {
        Ok(match name {
            "name" => CowVal::Borrowed(&self.name),
            "reason" => CowVal::Borrowed(&self.reason),
            "expires" => CowVal::Borrowed(&self.expires),
            _ => return Err(ExecutionError::no_such_key(name)),
        })
    }
}
record!(GrantVal, "celador.Grant");

#[derive(Debug, Clone)]
struct SignalsVal<'a> {
    /// requests_10s, requests_1m, requests_10m, then the same for denials,
    /// then store_stale_seconds.
    counts: [CelInt; 7],
    fleet: FleetVal<'a>,
    risk: RiskVal<'a>,
    _life: std::marker::PhantomData<&'a ()>,
}

/// `signals.risk`: always there, its fields absent without a risk, so
/// `has(signals.risk.level)` is how a rule asks whether one was reported.
#[derive(Debug, Clone)]
struct RiskVal<'a> {
    /// level, since, source.
    fields: Option<(CelString<'a>, CelTimestamp, CelString<'a>)>,
}

impl<'a> RiskVal<'a> {
    fn field<'b>(&'b self, name: &str) -> Result<CowVal<'b, 'a>, ExecutionError> {
        match (&self.fields, name) {
            (Some((level, _, _)), "level") => Ok(CowVal::Borrowed(level)),
            (Some((_, since, _)), "since") => Ok(CowVal::Borrowed(since)),
            (Some((_, _, source)), "source") => Ok(CowVal::Borrowed(source)),
            _ => Err(ExecutionError::no_such_key(name)),
        }
    }
}
record!(RiskVal, "celador.Risk");

#[derive(Debug, Clone)]
struct FleetVal<'a> {
    /// requests_10s, requests_1m, requests_10m, then the same for denials.
    counts: [CelInt; 6],
    _life: std::marker::PhantomData<&'a ()>,
}

impl<'a> FleetVal<'a> {
    fn field<'b>(&'b self, name: &str) -> Result<CowVal<'b, 'a>, ExecutionError> {
        let index = match name {
            "requests_10s" => 0,
            "requests_1m" => 1,
            "requests_10m" => 2,
            "denials_10s" => 3,
            "denials_1m" => 4,
            "denials_10m" => 5,
            _ => return Err(ExecutionError::no_such_key(name)),
        };
        match self.counts.get(index) {
            Some(count) => Ok(CowVal::Borrowed(count)),
            None => Err(ExecutionError::no_such_key(name)),
        }
    }
}
record!(FleetVal, "celador.FleetSignals");

impl<'a> SignalsVal<'a> {
    fn new(s: &'a Signals) -> Self {
        SignalsVal {
            risk: RiskVal {
                fields: s.risk.as_deref().map(|r| {
                    (
                        r.level.as_str().into(),
                        timestamp(r.since),
                        r.source.as_str().into(),
                    )
                }),
            },
            counts: [
                s.requests_10s,
                s.requests_1m,
                s.requests_10m,
                s.denials_10s,
                s.denials_1m,
                s.denials_10m,
                s.store_stale_seconds,
            ]
            .map(|c| CelInt::from(i64::from(c))),
            fleet: FleetVal {
                counts: [
                    s.fleet.requests_10s,
                    s.fleet.requests_1m,
                    s.fleet.requests_10m,
                    s.fleet.denials_10s,
                    s.fleet.denials_1m,
                    s.fleet.denials_10m,
                ]
                .map(|c| CelInt::from(i64::from(c))),
                _life: std::marker::PhantomData,
            },
            _life: std::marker::PhantomData,
        }
    }

    fn field<'b>(&'b self, name: &str) -> Result<CowVal<'b, 'a>, ExecutionError> {
        let index = match name {
            "requests_10s" => 0,
            "requests_1m" => 1,
            "requests_10m" => 2,
            "denials_10s" => 3,
            "denials_1m" => 4,
            "denials_10m" => 5,
            "store_stale_seconds" => 6,
            "fleet" => return Ok(CowVal::Borrowed(&self.fleet)),
            "risk" => return Ok(CowVal::Borrowed(&self.risk)),
            _ => return Err(ExecutionError::no_such_key(name)),
        };
        match self.counts.get(index) {
            Some(count) => Ok(CowVal::Borrowed(count)),
            None => Err(ExecutionError::no_such_key(name)),
        }
    }
}
record!(SignalsVal, "celador.Signals");
