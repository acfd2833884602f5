//! What rules can read and call: every variable, field and function, with its
//! type, where it comes from and what it does.
//!
//! Data flow: this table is the one truth that three things read. The rule
//! checker ([`super::check`]) types each rule against it at load, the policy
//! reference is generated from it, and [`super::activation`] serves exactly
//! these fields at request time (a unit test holds the two together).

use std::fmt;

/// A CEL type, as the checker infers it.
#[derive(Debug, Clone, PartialEq)]
pub enum Ty {
    /// `bool`
    Bool,
    /// `int`
    Int,
    /// `uint`
    Uint,
    /// `double`
    Double,
    /// `string`
    String,
    /// `bytes`
    Bytes,
    /// `null_type`
    Null,
    /// `google.protobuf.Timestamp`
    Timestamp,
    /// `google.protobuf.Duration`
    Duration,
    /// `list(T)`
    List(Box<Ty>),
    /// `map(K, V)`
    Map(Box<Ty>, Box<Ty>),
    /// One of celador's objects (`source`, `request`, ...).
    Object(&'static Object),
    /// A type value, as `type(x)` returns and `string` names.
    Type,
    /// A value of Kubernetes' libraries, named as Kubernetes names it:
    /// `net.IP`, `net.CIDR`, `kubernetes.URL`.
    Opaque(&'static str),
    /// Not known before evaluation: accepted everywhere.
    Dyn,
}

impl Ty {
    /// `map(string, string)`
    pub(crate) fn string_map() -> Ty {
        Ty::Map(Box::new(Ty::String), Box::new(Ty::String))
    }

    /// `list(string)`
    pub(crate) fn string_list() -> Ty {
        Ty::List(Box::new(Ty::String))
    }

    /// Whether it is `int`, `uint` or `double`.
    pub(crate) fn is_numeric(&self) -> bool {
        matches!(self, Ty::Int | Ty::Uint | Ty::Double)
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ty::Bool => f.write_str("bool"),
            Ty::Int => f.write_str("int"),
            Ty::Uint => f.write_str("uint"),
            Ty::Double => f.write_str("double"),
            Ty::String => f.write_str("string"),
            Ty::Bytes => f.write_str("bytes"),
            Ty::Null => f.write_str("null"),
            Ty::Timestamp => f.write_str("timestamp"),
            Ty::Duration => f.write_str("duration"),
            Ty::List(t) => write!(f, "list({t})"),
            Ty::Map(k, v) => write!(f, "map({k}, {v})"),
            Ty::Object(o) => f.write_str(o.name),
            Ty::Type => f.write_str("type"),
            Ty::Opaque(name) => f.write_str(name),
            Ty::Dyn => f.write_str("dyn"),
        }
    }
}

/// A field's or variable's type in the static tables.
#[derive(Debug, Clone, Copy)]
pub enum FieldTy {
    /// `string`
    String,
    /// `int`
    Int,
    /// `timestamp`
    Timestamp,
    /// `map(string, string)`
    StringMap,
    /// `list(string)`
    StringList,
    /// `map(string, dyn)`
    DynMap,
    /// `map(string, list(string))`
    StringListMap,
    /// One of celador's objects.
    Object(&'static Object),
}

impl FieldTy {
    /// The checker's type.
    pub fn ty(self) -> Ty {
        match self {
            FieldTy::String => Ty::String,
            FieldTy::Int => Ty::Int,
            FieldTy::Timestamp => Ty::Timestamp,
            FieldTy::StringMap => Ty::string_map(),
            FieldTy::StringList => Ty::string_list(),
            FieldTy::DynMap => Ty::Map(Box::new(Ty::String), Box::new(Ty::Dyn)),
            FieldTy::StringListMap => Ty::Map(Box::new(Ty::String), Box::new(Ty::string_list())),
            FieldTy::Object(o) => Ty::Object(o),
        }
    }
}

/// One of celador's objects: a fixed set of fields.
#[derive(Debug)]
pub struct Object {
    /// Its type name, as errors show it.
    pub name: &'static str,
    /// Its fields.
    pub fields: &'static [Field],
}

impl Object {
    /// The field named `name`.
    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

impl PartialEq for Object {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

/// A field of an object, or a top-level variable.
#[derive(Debug)]
pub struct Field {
    /// The name rules use.
    pub name: &'static str,
    /// Its type.
    pub ty: FieldTy,
    /// What it holds and where it comes from in Envoy's request.
    pub doc: &'static str,
}

const fn field(name: &'static str, ty: FieldTy, doc: &'static str) -> Field {
    Field { name, ty, doc }
}

/// `source`: the mTLS peer.
pub(crate) static SOURCE: Object = Object {
    name: "celador.Source",
    fields: &[
        field(
            "id",
            FieldTy::String,
            "The SPIFFE ID of the verified X.509-SVID of the peer (the one URI SAN of the leaf in `attributes.source.certificate`).",
        ),
        field(
            "trust_domain",
            FieldTy::String,
            "The trust domain of `source.id`, e.g. `example.org`.",
        ),
        field(
            "path",
            FieldTy::String,
            "The path of `source.id`, e.g. `/ns/payments/sa/api`; empty for a bare trust domain ID.",
        ),
        field(
            "not_after",
            FieldTy::Timestamp,
            "When the peer's leaf certificate expires (its `notAfter`).",
        ),
        field(
            "address",
            FieldTy::String,
            "The peer's IP address (`attributes.source.address`), as Envoy saw the connection.",
        ),
        field(
            "port",
            FieldTy::Int,
            "The peer's port (`attributes.source.address`); 0 when unknown.",
        ),
    ],
};

/// `token`: the verified JWT-SVID.
pub static TOKEN: Object = Object {
    name: "celador.Token",
    fields: &[
        field(
            "id",
            FieldTy::String,
            "The SPIFFE ID of the verified JWT-SVID (its `sub`), read from the configured header (`authorization: Bearer ...` by default).",
        ),
        field(
            "trust_domain",
            FieldTy::String,
            "The trust domain of `token.id`.",
        ),
        field("path", FieldTy::String, "The path of `token.id`."),
        field(
            "audience",
            FieldTy::StringList,
            "The token's `aud`, as a list.",
        ),
        field("expiry", FieldTy::Timestamp, "The token's `exp`."),
        field(
            "claims",
            FieldTy::DynMap,
            "Every claim of the token's payload (`sub`, `aud`, `exp` and any other), as JSON values.",
        ),
    ],
};

/// `request`: the HTTP request being authorized.
pub(crate) static REQUEST: Object = Object {
    name: "celador.Request",
    fields: &[
        field(
            "id",
            FieldTy::String,
            "The request's `x-request-id` header (which Envoy generates or keeps), the id the application's and Envoy's logs carry; empty when absent. Envoy's stream id (`attributes.request.http.id`) is the audit record's `envoy_stream_id`.",
        ),
        field(
            "method",
            FieldTy::String,
            "The HTTP method, e.g. `GET` (`attributes.request.http.method`).",
        ),
        field(
            "path",
            FieldTy::String,
            "The canonical path: `request.raw_path` with percent-encoded unreserved characters decoded (`%61` is `a`), other escapes in upper case, backslashes read as `/`, slashes merged and dot segments removed (RFC 3986). A path that servers resolve differently from this form (a `.` or `..` segment, `%2e`, `%2f`, `%5c`, `\\`, a `;` parameter, NUL, a control character, a malformed or double escape, a leading `//`) never reaches the rules: it is denied with `invalid_path` (celador's `request.paths` setting can change this).",
        ),
        field(
            "raw_path",
            FieldTy::String,
            "The path as Envoy sent it, without query or fragment (`attributes.request.http.path` up to `?` or `#`).",
        ),
        field(
            "query",
            FieldTy::StringMap,
            "The query parameters of `attributes.request.http.path`, percent-decoded (`+` is a space). Reading a name given more than once (`?a=1&a=2`) is an evaluation error (servers disagree on its value): a deny rule reading it matches, an allow rule does not; read `request.query_all` for such names.",
        ),
        field(
            "query_all",
            FieldTy::StringListMap,
            "Every value of each query parameter, in order, percent-decoded: `request.query_all.tag == [\"a\", \"b\"]` for `?tag=a&tag=b`.",
        ),
        field(
            "host",
            FieldTy::String,
            "The `:authority` / `Host` (`attributes.request.http.host`).",
        ),
        field(
            "scheme",
            FieldTy::String,
            "`http` or `https` (`attributes.request.http.scheme`).",
        ),
        field(
            "protocol",
            FieldTy::String,
            "`HTTP/1.0`, `HTTP/1.1`, `HTTP/2` or `HTTP/3` (`attributes.request.http.protocol`).",
        ),
        field(
            "headers",
            FieldTy::StringMap,
            "The request headers by lowercase name (`attributes.request.http.headers`, or `header_map` with `encode_raw_headers`); repeated headers are joined with `,`.",
        ),
        field(
            "size",
            FieldTy::Int,
            "The body size in bytes from `content-length` (`attributes.request.http.size`); -1 when unknown.",
        ),
        field(
            "time",
            FieldTy::Timestamp,
            "When Envoy received the request (`attributes.request.time`); `now` when Envoy did not say.",
        ),
    ],
};

/// `destination`: the local side of the connection.
pub(crate) static DESTINATION: Object = Object {
    name: "celador.Destination",
    fields: &[
        field(
            "principal",
            FieldTy::String,
            "The principal of Envoy's own server certificate (`attributes.destination.principal`): its first URI SAN, else its first DNS SAN.",
        ),
        field(
            "address",
            FieldTy::String,
            "The local IP address the request arrived on (`attributes.destination.address`).",
        ),
        field(
            "port",
            FieldTy::Int,
            "The local port the request arrived on (`attributes.destination.address`).",
        ),
    ],
};

/// `workload`: the pod celador protects.
pub(crate) static WORKLOAD: Object = Object {
    name: "celador.Workload",
    fields: &[
        field(
            "namespace",
            FieldTy::String,
            "The pod's namespace, from the environment variable named by `workload.namespace_env`.",
        ),
        field(
            "name",
            FieldTy::String,
            "The pod's name, from the environment variable named by `workload.name_env`.",
        ),
        field(
            "service_account",
            FieldTy::String,
            "The pod's service account, from the environment variable named by `workload.service_account_env`.",
        ),
        field(
            "labels",
            FieldTy::StringMap,
            "The pod's labels, from the `labels` file of the Downward API directory.",
        ),
        field(
            "annotations",
            FieldTy::StringMap,
            "The pod's annotations, from the `annotations` file of the Downward API directory.",
        ),
    ],
};

/// `grant`: the time-bound grant in force for the caller, if any.
pub(crate) static GRANT: Object = Object {
    name: "celador.Grant",
    fields: &[
        field(
            "name",
            FieldTy::String,
            "The name of the grant in force for this request; `\"\"` when none is.",
        ),
        field(
            "reason",
            FieldTy::String,
            "The grant's `reason`; `\"\"` when no grant is in force.",
        ),
        field(
            "expires",
            FieldTy::Timestamp,
            "When the grant ends; the Unix epoch when no grant is in force.",
        ),
    ],
};

/// `signals`: the caller's recent behaviour, counted by this celador.
pub(crate) static SIGNALS: Object = Object {
    name: "celador.Signals",
    fields: &[
        field(
            "requests_10s",
            FieldTy::Int,
            "Requests of the caller in the last 10 seconds, this one included.",
        ),
        field(
            "requests_1m",
            FieldTy::Int,
            "Requests of the caller in the last minute, this one included.",
        ),
        field(
            "requests_10m",
            FieldTy::Int,
            "Requests of the caller in the last 10 minutes, this one included.",
        ),
        field(
            "denials_10s",
            FieldTy::Int,
            "Requests of the caller denied in the last 10 seconds (before this one).",
        ),
        field(
            "denials_1m",
            FieldTy::Int,
            "Requests of the caller denied in the last minute (before this one).",
        ),
        field(
            "denials_10m",
            FieldTy::Int,
            "Requests of the caller denied in the last 10 minutes (before this one).",
        ),
        field(
            "fleet",
            FieldTy::Object(&FLEET_SIGNALS),
            "The same counts summed over every celador sharing the fleet's governance store (`governance.store`); 0 without one. Exchanged in batches: another instance's requests show after at most one `governance.signals_interval` (250 ms) plus a round trip.",
        ),
        field(
            "store_stale_seconds",
            FieldTy::Int,
            "How long the replica of the fleet's governance store may have missed revocations and grants, in seconds: 0 without a store or while it is connected and current, 4294967295 until its first full sync (`signals.store_stale_seconds > 30` denies what must not rely on stale revocations).",
        ),
        field(
            "risk",
            FieldTy::Object(&RISK),
            "The caller's risk as a security tool last reported it (an OpenID Shared Signals `risk-level-change` through `celador signals serve`); its fields are absent when none is in force, so guard reads with `has(signals.risk.level)`.",
        ),
    ],
};

/// `signals.risk`: a risk level a security tool reported for the caller.
pub(crate) static RISK: Object = Object {
    name: "celador.Risk",
    fields: &[
        field(
            "level",
            FieldTy::String,
            "`\"low\"`, `\"medium\"` or `\"high\"`; absent when no risk is in force.",
        ),
        field(
            "since",
            FieldTy::Timestamp,
            "When the reported event happened (`event_timestamp`, else the SET's `iat`).",
        ),
        field(
            "source",
            FieldTy::String,
            "The transmitter that reported it (the SET's `iss`).",
        ),
    ],
};

/// `signals.fleet`: the caller's counts over the whole fleet.
pub(crate) static FLEET_SIGNALS: Object = Object {
    name: "celador.FleetSignals",
    fields: &[
        field(
            "requests_10s",
            FieldTy::Int,
            "Requests of the caller in the last 10 seconds, over the fleet, this one included.",
        ),
        field(
            "requests_1m",
            FieldTy::Int,
            "Requests of the caller in the last minute, over the fleet, this one included.",
        ),
        field(
            "requests_10m",
            FieldTy::Int,
            "Requests of the caller in the last 10 minutes, over the fleet, this one included.",
        ),
        field(
            "denials_10s",
            FieldTy::Int,
            "Requests of the caller denied in the last 10 seconds, over the fleet.",
        ),
        field(
            "denials_1m",
            FieldTy::Int,
            "Requests of the caller denied in the last minute, over the fleet.",
        ),
        field(
            "denials_10m",
            FieldTy::Int,
            "Requests of the caller denied in the last 10 minutes, over the fleet.",
        ),
    ],
};

/// The top-level variables.
pub static VARIABLES: &[Field] = &[
    field(
        "source",
        FieldTy::Object(&SOURCE),
        "The caller: the peer of the mTLS connection, as proven by its X.509-SVID.",
    ),
    field(
        "token",
        FieldTy::Object(&TOKEN),
        "The JWT-SVID the request carries, verified: in a mesh often the original caller, such as an agent acting through a gateway.",
    ),
    field(
        "request",
        FieldTy::Object(&REQUEST),
        "The HTTP request being authorized.",
    ),
    field(
        "destination",
        FieldTy::Object(&DESTINATION),
        "The local end of the connection.",
    ),
    field(
        "context",
        FieldTy::StringMap,
        "Envoy's `context_extensions`, set per route or virtual host in the ext_authz filter's per-route config.",
    ),
    field(
        "workload",
        FieldTy::Object(&WORKLOAD),
        "The workload celador protects, read once at start.",
    ),
    field(
        "now",
        FieldTy::Timestamp,
        "celador's clock when the rule is evaluated.",
    ),
    field(
        "grant",
        FieldTy::Object(&GRANT),
        "The time-bound grant in force for the caller (see `grants`); its `name` is empty when none is. Deny rules can refuse what a grant would allow.",
    ),
    field(
        "signals",
        FieldTy::Object(&SIGNALS),
        "The caller's request and denial counts over sliding windows, kept per identity by this celador instance (per pod).",
    ),
];

/// Type names usable as values, as in `type(x) == string`.
pub(crate) static TYPE_NAMES: &[&str] = &[
    "bool",
    "int",
    "uint",
    "double",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
];

/// A parameter or result type of a function overload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Param {
    /// `bool`
    Bool,
    /// `int`
    Int,
    /// `uint`
    Uint,
    /// `double`
    Double,
    /// `string`
    String,
    /// `bytes`
    Bytes,
    /// `timestamp`
    Timestamp,
    /// `duration`
    Duration,
    /// `list(string)`
    StringList,
    /// any list
    List,
    /// any map
    Map,
    /// `type`
    Type,
    /// Kubernetes' `net.IP`
    Ip,
    /// Kubernetes' `net.CIDR`
    Cidr,
    /// Kubernetes' `kubernetes.URL`
    Url,
    /// `map(string, list(string))`
    StringListMap,
    /// `optional_type`: a value that may be absent
    Optional,
    /// anything
    Any,
}

impl Param {
    /// Whether a value of type `ty` can be passed here.
    pub fn accepts(self, ty: &Ty) -> bool {
        match (self, ty) {
            (Param::Any, _) | (_, Ty::Dyn) => true,
            (Param::Bool, Ty::Bool)
            | (Param::Int, Ty::Int)
            | (Param::Uint, Ty::Uint)
            | (Param::Double, Ty::Double)
            | (Param::String, Ty::String)
            | (Param::Bytes, Ty::Bytes)
            | (Param::Timestamp, Ty::Timestamp)
            | (Param::Duration, Ty::Duration)
            | (Param::Type, Ty::Type)
            | (Param::List, Ty::List(_))
            | (Param::Map, Ty::Map(..)) => true,
            (Param::Ip | Param::Cidr | Param::Url | Param::Optional, Ty::Opaque(name)) => {
                self.ty() == Ty::Opaque(name)
            }
            (Param::StringListMap, ty) => *ty == Param::StringListMap.ty(),
            (Param::StringList, Ty::List(elem)) => matches!(**elem, Ty::String | Ty::Dyn),
            _ => false,
        }
    }

    /// The result type of an overload returning this.
    pub fn ty(self) -> Ty {
        match self {
            Param::Bool => Ty::Bool,
            Param::Int => Ty::Int,
            Param::Uint => Ty::Uint,
            Param::Double => Ty::Double,
            Param::String => Ty::String,
            Param::Bytes => Ty::Bytes,
            Param::Timestamp => Ty::Timestamp,
            Param::Duration => Ty::Duration,
            Param::StringList => Ty::string_list(),
            Param::List => Ty::List(Box::new(Ty::Dyn)),
            Param::Map => Ty::Map(Box::new(Ty::Dyn), Box::new(Ty::Dyn)),
            Param::Type => Ty::Type,
            Param::Ip => Ty::Opaque("net.IP"),
            Param::Cidr => Ty::Opaque("net.CIDR"),
            Param::Url => Ty::Opaque("kubernetes.URL"),
            Param::StringListMap => Ty::Map(Box::new(Ty::String), Box::new(Ty::string_list())),
            Param::Optional => Ty::Opaque("optional_type"),
            Param::Any => Ty::Dyn,
        }
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Param::Bool => "bool",
            Param::Int => "int",
            Param::Uint => "uint",
            Param::Double => "double",
            Param::String => "string",
            Param::Bytes => "bytes",
            Param::Timestamp => "timestamp",
            Param::Duration => "duration",
            Param::StringList => "list(string)",
            Param::List => "list",
            Param::Map => "map",
            Param::Type => "type",
            Param::Ip => "net.IP",
            Param::Cidr => "net.CIDR",
            Param::Url => "kubernetes.URL",
            Param::StringListMap => "map(string, list(string))",
            Param::Optional => "optional_type",
            Param::Any => "dyn",
        })
    }
}

/// One signature of a function.
#[derive(Debug)]
pub struct Overload {
    /// The receiver, for a method (`x.f(..)`); `None` for a global call.
    pub receiver: Option<Param>,
    /// The arguments.
    pub args: &'static [Param],
    /// The result.
    pub result: Param,
}

impl Overload {
    /// The signature as a call of `name`: `string.startsWith(string) -> bool`.
    pub fn signature(&self, name: &str) -> String {
        let args: Vec<String> = self.args.iter().map(ToString::to_string).collect();
        match self.receiver {
            Some(receiver) => format!("{receiver}.{name}({}) -> {}", args.join(", "), self.result),
            None => format!("{name}({}) -> {}", args.join(", "), self.result),
        }
    }
}

/// A function rules can call.
#[derive(Debug)]
pub struct Function {
    /// Its name.
    pub name: &'static str,
    /// Its signatures.
    pub overloads: &'static [Overload],
    /// What it does.
    pub doc: &'static str,
    /// An example rule fragment that evaluates to `true` (it is tested).
    pub example: &'static str,
}

const fn method(receiver: Param, args: &'static [Param], result: Param) -> Overload {
    Overload {
        receiver: Some(receiver),
        args,
        result,
    }
}

const fn global(args: &'static [Param], result: Param) -> Overload {
    Overload {
        receiver: None,
        args,
        result,
    }
}

use Param as P;

/// The timestamp accessors, each with an optional time zone argument.
macro_rules! timestamp_accessor {
    ($name:literal, $doc:literal, $example:literal) => {
        Function {
            name: $name,
            overloads: &[
                method(P::Timestamp, &[], P::Int),
                method(P::Timestamp, &[P::String], P::Int),
            ],
            doc: $doc,
            example: $example,
        }
    };
}

/// Every function, operators aside.
pub static FUNCTIONS: &[Function] = &[
    Function {
        name: "size",
        overloads: &[
            global(&[P::String], P::Int),
            global(&[P::Bytes], P::Int),
            global(&[P::List], P::Int),
            global(&[P::Map], P::Int),
            method(P::String, &[], P::Int),
            method(P::Bytes, &[], P::Int),
            method(P::List, &[], P::Int),
            method(P::Map, &[], P::Int),
        ],
        doc: "The number of characters of a string, bytes of bytes, elements of a list or entries of a map.",
        example: "size('héllo') == 5 && [1, 2].size() == 2",
    },
    Function {
        name: "startsWith",
        overloads: &[method(P::String, &[P::String], P::Bool)],
        doc: "Whether the string starts with the prefix.",
        example: "'/export/daily'.startsWith('/export/')",
    },
    Function {
        name: "endsWith",
        overloads: &[method(P::String, &[P::String], P::Bool)],
        doc: "Whether the string ends with the suffix.",
        example: "'report.csv'.endsWith('.csv')",
    },
    Function {
        name: "contains",
        overloads: &[method(P::String, &[P::String], P::Bool)],
        doc: "Whether the string contains the substring.",
        example: "'spiffe://example.org/ns/batch'.contains('/ns/')",
    },
    Function {
        name: "matches",
        overloads: &[
            method(P::String, &[P::String], P::Bool),
            global(&[P::String, P::String], P::Bool),
        ],
        doc: "Whether the string matches the RE2 regular expression anywhere (anchor it with `^...$` for a full match). Patterns are compiled once and cached; a literal pattern that does not compile is a load error.",
        example: "'/ns/payments/sa/api'.matches('^/ns/[a-z-]+/sa/api$')",
    },
    Function {
        name: "lowerAscii",
        overloads: &[method(P::String, &[], P::String)],
        doc: "The string with ASCII letters lowercased.",
        example: "'GET'.lowerAscii() == 'get'",
    },
    Function {
        name: "upperAscii",
        overloads: &[method(P::String, &[], P::String)],
        doc: "The string with ASCII letters uppercased.",
        example: "'get'.upperAscii() == 'GET'",
    },
    Function {
        name: "trim",
        overloads: &[method(P::String, &[], P::String)],
        doc: "The string without leading and trailing whitespace.",
        example: "'  a  '.trim() == 'a'",
    },
    Function {
        name: "replace",
        overloads: &[
            method(P::String, &[P::String, P::String], P::String),
            method(P::String, &[P::String, P::String, P::Int], P::String),
        ],
        doc: "The string with occurrences of the first argument replaced by the second (at most n of them, if given).",
        example: "'a-b-c'.replace('-', '/') == 'a/b/c'",
    },
    Function {
        name: "split",
        overloads: &[
            method(P::String, &[P::String], P::StringList),
            method(P::String, &[P::String, P::Int], P::StringList),
        ],
        doc: "The string split at each separator (into at most n parts, if given).",
        example: "'/ns/payments/sa/api'.split('/')[2] == 'payments'",
    },
    Function {
        name: "substring",
        overloads: &[
            method(P::String, &[P::Int], P::String),
            method(P::String, &[P::Int, P::Int], P::String),
        ],
        doc: "The characters from the start index (to the end index, exclusive, if given).",
        example: "'spiffe://example.org'.substring(9) == 'example.org'",
    },
    Function {
        name: "indexOf",
        overloads: &[
            method(P::String, &[P::String], P::Int),
            method(P::String, &[P::String, P::Int], P::Int),
            method(P::List, &[P::Any], P::Int),
        ],
        doc: "The index of the first occurrence of the substring (from the offset, if given), or of the element in a list (Kubernetes' lists library), or -1.",
        example: "'a/b'.indexOf('/') == 1 && [1, 2, 2].indexOf(2) == 1",
    },
    Function {
        name: "lastIndexOf",
        overloads: &[
            method(P::String, &[P::String], P::Int),
            method(P::String, &[P::String, P::Int], P::Int),
            method(P::List, &[P::Any], P::Int),
        ],
        doc: "The index of the last occurrence of the substring (up to the offset, if given), or of the element in a list, or -1.",
        example: "'a/b/c'.lastIndexOf('/') == 3 && ['a', 'b', 'b'].lastIndexOf('b') == 2",
    },
    Function {
        name: "charAt",
        overloads: &[method(P::String, &[P::Int], P::String)],
        doc: "The character at the index, as a string.",
        example: "'abc'.charAt(1) == 'b'",
    },
    Function {
        name: "join",
        overloads: &[
            method(P::StringList, &[], P::String),
            method(P::StringList, &[P::String], P::String),
        ],
        doc: "The strings of the list joined (with the separator, if given).",
        example: "['a', 'b'].join('/') == 'a/b'",
    },
    Function {
        name: "inCidr",
        overloads: &[
            method(P::String, &[P::String], P::Bool),
            method(P::String, &[P::StringList], P::Bool),
            global(&[P::String, P::String], P::Bool),
            global(&[P::String, P::StringList], P::Bool),
        ],
        doc: "celador's shorthand for `cidr(range).containsIP(address)`, parsed the same way: whether the IP address (v4 or v6) lies in the CIDR range, or in any of a list of them. An address or range that does not parse is an error, which fails closed; so is an IPv4-mapped IPv6 address or range (`::ffff:10.0.0.1`, `::ffff:10.0.0.0/104`), as in Kubernetes' CEL `ip()` and `cidr()`: write the IPv4 form. An IPv4 address is never in an IPv6 range, nor the reverse.",
        example: "'10.1.2.3'.inCidr(['192.168.0.0/16', '10.0.0.0/8'])",
    },
    Function {
        name: "isIP",
        overloads: &[global(&[P::String], P::Bool)],
        doc: "Whether the string is an IPv4 or IPv6 address that `ip()` accepts; false for an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`), a zone (`fe80::1%eth0`) or a leading zero (`10.01.0.1`), as Kubernetes' `isIP` is.",
        example: "isIP('fd00::1') && !isIP('example.org')",
    },
    Function {
        name: "int",
        overloads: &[
            global(&[P::Int], P::Int),
            global(&[P::Uint], P::Int),
            global(&[P::Double], P::Int),
            global(&[P::String], P::Int),
            global(&[P::Timestamp], P::Int),
        ],
        doc: "Converts to int; a timestamp becomes seconds since the Unix epoch.",
        example: "int('42') == 42",
    },
    Function {
        name: "uint",
        overloads: &[
            global(&[P::Uint], P::Uint),
            global(&[P::Int], P::Uint),
            global(&[P::Double], P::Uint),
            global(&[P::String], P::Uint),
        ],
        doc: "Converts to uint.",
        example: "uint(42) == 42u",
    },
    Function {
        name: "double",
        overloads: &[
            global(&[P::Double], P::Double),
            global(&[P::Int], P::Double),
            global(&[P::Uint], P::Double),
            global(&[P::String], P::Double),
        ],
        doc: "Converts to double.",
        example: "double('1.5') == 1.5",
    },
    Function {
        name: "string",
        overloads: &[
            global(&[P::String], P::String),
            global(&[P::Bool], P::String),
            global(&[P::Int], P::String),
            global(&[P::Uint], P::String),
            global(&[P::Double], P::String),
            global(&[P::Bytes], P::String),
            global(&[P::Timestamp], P::String),
            global(&[P::Duration], P::String),
            global(&[P::Ip], P::String),
            global(&[P::Cidr], P::String),
        ],
        doc: "Converts to string; an IP address or CIDR range in its canonical form.",
        example: "string(404) == '404'",
    },
    Function {
        name: "bytes",
        overloads: &[
            global(&[P::String], P::Bytes),
            global(&[P::Bytes], P::Bytes),
        ],
        doc: "Converts a string to its UTF-8 bytes.",
        example: "size(bytes('é')) == 2",
    },
    Function {
        name: "bool",
        overloads: &[global(&[P::Bool], P::Bool), global(&[P::String], P::Bool)],
        doc: "Converts `'true'` or `'false'` to bool.",
        example: "bool('true')",
    },
    Function {
        name: "timestamp",
        overloads: &[
            global(&[P::String], P::Timestamp),
            global(&[P::Int], P::Timestamp),
            global(&[P::Timestamp], P::Timestamp),
        ],
        doc: "A timestamp from an RFC 3339 string, or from seconds since the Unix epoch.",
        example: "timestamp('2026-01-01T00:00:00Z') < timestamp('2026-06-01T00:00:00Z')",
    },
    Function {
        name: "duration",
        overloads: &[
            global(&[P::String], P::Duration),
            global(&[P::Duration], P::Duration),
        ],
        doc: "A duration from a string such as `90s`, `15m` or `1h30m`.",
        example: "duration('1h') > duration('59m')",
    },
    Function {
        name: "type",
        overloads: &[global(&[P::Any], P::Type)],
        doc: "The type of a value.",
        example: "type('a') == string",
    },
    Function {
        name: "dyn",
        overloads: &[global(&[P::Any], P::Any)],
        doc: "The value itself, with its type left to evaluation (it silences the checker).",
        example: "dyn(1) == 1",
    },
    timestamp_accessor!(
        "getFullYear",
        "The year of a timestamp, in UTC or the given IANA time zone.",
        "timestamp('2026-03-01T00:00:00Z').getFullYear() == 2026"
    ),
    timestamp_accessor!(
        "getMonth",
        "The month of a timestamp, 0 for January.",
        "timestamp('2026-03-01T00:00:00Z').getMonth() == 2"
    ),
    timestamp_accessor!(
        "getDayOfYear",
        "The day of the year of a timestamp, 0 for January 1st.",
        "timestamp('2026-01-02T00:00:00Z').getDayOfYear() == 1"
    ),
    timestamp_accessor!(
        "getDayOfMonth",
        "The day of the month of a timestamp, 0-based.",
        "timestamp('2026-03-05T00:00:00Z').getDayOfMonth() == 4"
    ),
    timestamp_accessor!(
        "getDate",
        "The day of the month of a timestamp, 1-based.",
        "timestamp('2026-03-05T00:00:00Z').getDate() == 5"
    ),
    timestamp_accessor!(
        "getDayOfWeek",
        "The day of the week of a timestamp, 0 for Sunday.",
        "timestamp('2026-03-01T00:00:00Z').getDayOfWeek() == 0"
    ),
    Function {
        name: "getHours",
        overloads: &[
            method(P::Timestamp, &[], P::Int),
            method(P::Timestamp, &[P::String], P::Int),
            method(P::Duration, &[], P::Int),
        ],
        doc: "The hour of a timestamp (in UTC or the given IANA time zone), or the whole hours of a duration.",
        example: "timestamp('2026-03-01T09:30:00Z').getHours('Europe/Paris') == 10",
    },
    Function {
        name: "getMinutes",
        overloads: &[
            method(P::Timestamp, &[], P::Int),
            method(P::Timestamp, &[P::String], P::Int),
            method(P::Duration, &[], P::Int),
        ],
        doc: "The minute of a timestamp, or the whole minutes of a duration.",
        example: "duration('1h30m').getMinutes() == 90",
    },
    Function {
        name: "getSeconds",
        overloads: &[
            method(P::Timestamp, &[], P::Int),
            method(P::Timestamp, &[P::String], P::Int),
            method(P::Duration, &[], P::Int),
        ],
        doc: "The second of a timestamp, or the whole seconds of a duration.",
        example: "duration('2m').getSeconds() == 120",
    },
    Function {
        name: "getMilliseconds",
        overloads: &[
            method(P::Timestamp, &[], P::Int),
            method(P::Timestamp, &[P::String], P::Int),
            method(P::Duration, &[], P::Int),
        ],
        doc: "The millisecond of a timestamp, or the millisecond component of a duration (0 to 999, negative for a negative duration), as the CEL specification and cel-go define it.",
        example: "duration('1.5s').getMilliseconds() == 500",
    },
    Function {
        name: "ip",
        overloads: &[global(&[P::String], P::Ip), method(P::Cidr, &[], P::Ip)],
        doc: "Kubernetes' IP address: `ip(string)` parses one (an error for anything `isIP` refuses), `cidr.ip()` is the address a CIDR was written with. A literal is parsed once, at load, and one that does not parse fails the load. Compare addresses with `==`.",
        example: "ip('10.0.0.1') == cidr('10.0.0.1/8').ip() && ip('::1').family() == 6",
    },
    Function {
        name: "ip.isCanonical",
        overloads: &[global(&[P::String], P::Bool)],
        doc: "Whether the IP address is written in its one canonical form (lowercase, RFC 5952 for IPv6); an error when it is not an address.",
        example: "ip.isCanonical('2001:db8::abcd') && !ip.isCanonical('2001:DB8::ABCD')",
    },
    Function {
        name: "family",
        overloads: &[method(P::Ip, &[], P::Int)],
        doc: "4 or 6: the address family of an IP address.",
        example: "ip('192.168.0.1').family() == 4",
    },
    Function {
        name: "isUnspecified",
        overloads: &[method(P::Ip, &[], P::Bool)],
        doc: "Whether the IP address is `0.0.0.0` or `::`.",
        example: "ip('::').isUnspecified()",
    },
    Function {
        name: "isLoopback",
        overloads: &[method(P::Ip, &[], P::Bool)],
        doc: "Whether the IP address is a loopback address (`127.0.0.0/8`, `::1`).",
        example: "ip('127.0.0.2').isLoopback() && !ip('10.0.0.1').isLoopback()",
    },
    Function {
        name: "isLinkLocalMulticast",
        overloads: &[method(P::Ip, &[], P::Bool)],
        doc: "Whether the IP address is a link-local multicast address (`224.0.0.0/24`, `ff02::/16` and the other link-local scopes `ffx2::/16`), as Go's `IsLinkLocalMulticast`.",
        example: "ip('ff02::1').isLinkLocalMulticast() && !ip('224.0.1.1').isLinkLocalMulticast()",
    },
    Function {
        name: "isLinkLocalUnicast",
        overloads: &[method(P::Ip, &[], P::Bool)],
        doc: "Whether the IP address is a link-local unicast address (`169.254.0.0/16`, `fe80::/10`).",
        example: "ip('169.254.169.254').isLinkLocalUnicast()",
    },
    Function {
        name: "isGlobalUnicast",
        overloads: &[method(P::Ip, &[], P::Bool)],
        doc: "Go's `IsGlobalUnicast`: not unspecified, broadcast, loopback, multicast or link-local. Private ranges (`10.0.0.0/8`, `fd00::/8`) are global unicast here.",
        example: "ip('10.0.0.1').isGlobalUnicast() && !ip('255.255.255.255').isGlobalUnicast()",
    },
    Function {
        name: "cidr",
        overloads: &[global(&[P::String], P::Cidr)],
        doc: "Kubernetes' CIDR range, from `address/length` (host bits may be set: `masked()` clears them). An error for an address `ip()` refuses, a length beyond 32 or 128, or one with a sign or leading zero. A literal is parsed once, at load, and one that does not parse fails the load.",
        example: "cidr('10.0.0.0/8').containsIP(ip('10.1.2.3'))",
    },
    Function {
        name: "isCIDR",
        overloads: &[global(&[P::String], P::Bool)],
        doc: "Whether `cidr()` accepts the string.",
        example: "isCIDR('fd00::/8') && !isCIDR('10.0.0.0/33')",
    },
    Function {
        name: "containsIP",
        overloads: &[
            method(P::Cidr, &[P::Ip], P::Bool),
            method(P::Cidr, &[P::String], P::Bool),
        ],
        doc: "Whether the range holds the address (given as `ip()` or a string, which is parsed as `ip()` would: an error when it does not parse). Never across families.",
        example: "cidr('fd00::/8').containsIP('fd12::1') && !cidr('10.0.0.0/8').containsIP('fd00::1')",
    },
    Function {
        name: "containsCIDR",
        overloads: &[
            method(P::Cidr, &[P::Cidr], P::Bool),
            method(P::Cidr, &[P::String], P::Bool),
        ],
        doc: "Whether the range holds the whole of the other range.",
        example: "cidr('192.168.0.0/16').containsCIDR('192.168.10.0/24')",
    },
    Function {
        name: "masked",
        overloads: &[method(P::Cidr, &[], P::Cidr)],
        doc: "The range with its host bits cleared: its canonical form.",
        example: "cidr('192.168.0.1/24').masked() == cidr('192.168.0.0/24')",
    },
    Function {
        name: "prefixLength",
        overloads: &[method(P::Cidr, &[], P::Int)],
        doc: "The prefix length of the range, in bits.",
        example: "cidr('10.0.0.0/8').prefixLength() == 8",
    },
    Function {
        name: "url",
        overloads: &[global(&[P::String], P::Url)],
        doc: "Kubernetes' URL: an absolute URI (`https://host:8443/p?q=1`) or an absolute path (`/p?q=1`), parsed as Go's `net/url` does (kept as written: no normalisation). An error for anything else. A literal is parsed once, at load, and one that does not parse fails the load.",
        example: "url('https://example.com:8443/a?x=1').getPort() == '8443'",
    },
    Function {
        name: "isURL",
        overloads: &[global(&[P::String], P::Bool)],
        doc: "Whether `url()` accepts the string.",
        example: "isURL('/absolute-path') && !isURL('../relative-path')",
    },
    Function {
        name: "getScheme",
        overloads: &[method(P::Url, &[], P::String)],
        doc: "The scheme of a URL, lowercase; empty when absent.",
        example: "url('HTTPS://example.com/').getScheme() == 'https'",
    },
    Function {
        name: "getHost",
        overloads: &[method(P::Url, &[], P::String)],
        doc: "`host[:port]` of a URL, an IPv6 address in brackets; empty when absent.",
        example: "url('https://[::1]:80/').getHost() == '[::1]:80'",
    },
    Function {
        name: "getHostname",
        overloads: &[method(P::Url, &[], P::String)],
        doc: "The host of a URL without port, an IPv6 address without brackets; empty when absent.",
        example: "url('https://[::1]:80/').getHostname() == '::1'",
    },
    Function {
        name: "getPort",
        overloads: &[method(P::Url, &[], P::String)],
        doc: "The port of a URL as written; empty when absent.",
        example: "url('https://example.com/').getPort() == ''",
    },
    Function {
        name: "getEscapedPath",
        overloads: &[method(P::Url, &[], P::String)],
        doc: "The path of a URL, percent-escaped (`with space` becomes `with%20space`); empty when absent.",
        example: "url('https://example.com/path with spaces/').getEscapedPath() == '/path%20with%20spaces/'",
    },
    Function {
        name: "getQuery",
        overloads: &[method(P::Url, &[], P::StringListMap)],
        doc: "The query of a URL, decoded, every value of each name in order; a pair with `;` or a bad escape is left out, as Go does.",
        example: "url('/p?k1=a&k2=b&k2=c').getQuery() == {'k1': ['a'], 'k2': ['b', 'c']}",
    },
    Function {
        name: "find",
        overloads: &[method(P::String, &[P::String], P::String)],
        doc: "The first match of the RE2 regular expression in the string, or `''`; compiled and cached as `matches` patterns are.",
        example: "'abc 123'.find('[0-9]+') == '123'",
    },
    Function {
        name: "findAll",
        overloads: &[
            method(P::String, &[P::String], P::StringList),
            method(P::String, &[P::String, P::Int], P::StringList),
        ],
        doc: "Every match of the RE2 regular expression in the string, or at most `limit` of them when a limit is given that is not negative.",
        example: "'123 abc 456'.findAll('[0-9]+', 1) == ['123']",
    },
    Function {
        name: "isSorted",
        overloads: &[method(P::List, &[], P::Bool)],
        doc: "Whether the list's elements are in ascending order; an error for elements that cannot be ordered.",
        example: "[1, 2, 2, 3].isSorted() && ![2.0, 1.0].isSorted()",
    },
    Function {
        name: "sum",
        overloads: &[method(P::List, &[], P::Any)],
        doc: "The sum of a list of ints, uints, doubles or durations; an error on overflow, as `+`. The sum of an empty list is the int 0.",
        example: "[1, 3].sum() == 4",
    },
    Function {
        name: "min",
        overloads: &[method(P::List, &[], P::Any)],
        doc: "The smallest element of the list; an error for an empty list.",
        example: "[3, 1, 2].min() == 1",
    },
    Function {
        name: "max",
        overloads: &[method(P::List, &[], P::Any)],
        doc: "The largest element of the list; an error for an empty list.",
        example: "['b', 'c', 'a'].max() == 'c'",
    },
    Function {
        name: "sets.contains",
        overloads: &[global(&[P::List, P::List], P::Bool)],
        doc: "Whether the first list holds every element of the second.",
        example: "sets.contains(['read', 'write'], ['read'])",
    },
    Function {
        name: "sets.equivalent",
        overloads: &[global(&[P::List, P::List], P::Bool)],
        doc: "Whether the two lists hold the same elements, ignoring order and repeats.",
        example: "sets.equivalent([1, 2, 2], [2, 1])",
    },
    Function {
        name: "sets.intersects",
        overloads: &[global(&[P::List, P::List], P::Bool)],
        doc: "Whether the two lists have an element in common.",
        example: "sets.intersects(['a', 'b'], ['b', 'c'])",
    },
    Function {
        name: "slice",
        overloads: &[method(P::List, &[P::Int, P::Int], P::List)],
        doc: "The elements from the start index up to the end index, exclusive (the CEL lists extension).",
        example: "[1, 2, 3, 4].slice(1, 3) == [2, 3]",
    },
    Function {
        name: "flatten",
        overloads: &[
            method(P::List, &[], P::List),
            method(P::List, &[P::Int], P::List),
        ],
        doc: "The list with nested lists spliced in, one level deep or to the given depth.",
        example: "[1, [2, [3]]].flatten() == [1, 2, [3]]",
    },
    Function {
        name: "distinct",
        overloads: &[method(P::List, &[], P::List)],
        doc: "The list without repeated elements, first occurrences kept.",
        example: "[1, 2, 2, 1].distinct() == [1, 2]",
    },
    Function {
        name: "reverse",
        overloads: &[
            method(P::List, &[], P::List),
            method(P::String, &[], P::String),
        ],
        doc: "The list's elements, or the string's characters, in reverse order.",
        example: "[1, 2].reverse() == [2, 1] && 'abc'.reverse() == 'cba'",
    },
    Function {
        name: "sort",
        overloads: &[method(P::List, &[], P::List)],
        doc: "The list sorted in ascending order; an error for elements that cannot be ordered.",
        example: "[3, 1, 2].sort() == [1, 2, 3]",
    },
    Function {
        name: "lists.range",
        overloads: &[global(&[P::Int], P::List)],
        doc: "The list `[0, 1, ..., n-1]` (at most a million elements).",
        example: "lists.range(3) == [0, 1, 2]",
    },
    Function {
        name: "format",
        overloads: &[method(P::String, &[P::List], P::String)],
        doc: "The string with its `%s`, `%d`, `%f`, `%e`, `%x`, `%o`, `%b` verbs replaced by the list's elements (the CEL strings extension).",
        example: "'%s has %d'.format(['a', 2]) == 'a has 2'",
    },
    Function {
        name: "optional.of",
        overloads: &[global(&[P::Any], P::Optional)],
        doc: "An optional value holding the value. Optional values come from `a.?field` and `map[?key]` (empty when the field or key is absent) and are read with `hasValue()`, `value()`, `orValue(default)` and `or(other)`.",
        example: "optional.of(1).value() == 1 && {'a': 1}[?'b'].orValue(0) == 0",
    },
    Function {
        name: "optional.ofNonZeroValue",
        overloads: &[global(&[P::Any], P::Optional)],
        doc: "An optional value holding the value, or an empty one for a zero value (`''`, `0`, `[]`, ...).",
        example: "!optional.ofNonZeroValue('').hasValue()",
    },
    Function {
        name: "optional.none",
        overloads: &[global(&[], P::Optional)],
        doc: "An empty optional value.",
        example: "!optional.none().hasValue()",
    },
    Function {
        name: "hasValue",
        overloads: &[method(P::Optional, &[], P::Bool)],
        doc: "Whether the optional value holds a value.",
        example: "{'x-tenant': 'acme'}[?'x-tenant'].hasValue()",
    },
    Function {
        name: "value",
        overloads: &[method(P::Optional, &[], P::Any)],
        doc: "The value an optional value holds; an error when it is empty.",
        example: "{'a': {'b': 2}}.?a.?b.value() == 2",
    },
    Function {
        name: "orValue",
        overloads: &[method(P::Optional, &[P::Any], P::Any)],
        doc: "The value an optional value holds, or the default: the way to read a header or claim that may be absent (`request.headers[?'x-tenant'].orValue('none')`).",
        example: "{'a': 1}[?'b'].orValue('none') == 'none'",
    },
    Function {
        name: "or",
        overloads: &[method(P::Optional, &[P::Optional], P::Optional)],
        doc: "The optional value if it holds a value, else the other one.",
        example: "optional.none().or(optional.of(2)).value() == 2",
    },
];

/// The function named `name`.
pub(crate) fn function(name: &str) -> Option<&'static Function> {
    FUNCTIONS.iter().find(|f| f.name == name)
}

/// The top-level variable named `name`.
pub(crate) fn variable(name: &str) -> Option<&'static Field> {
    VARIABLES.iter().find(|v| v.name == name)
}
