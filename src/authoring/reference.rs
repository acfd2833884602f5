//! The policy reference (`docs/policy.md`), generated from the schema.
//!
//! Data flow: the same tables the checker types rules against
//! ([`crate::engine::policy::schema`]) render here into the reference rule authors read, so
//! the documentation cannot promise a field or function that the checker
//! refuses. A test compares `docs/policy.md` with [`markdown`].

use std::fmt::Write;

use crate::engine::policy::schema::{self, FieldTy, Object};

fn type_name(ty: FieldTy) -> String {
    match ty {
        FieldTy::Object(o) => format!("[{}](#{})", o.name, anchor(o.name)),
        other => other.ty().to_string(),
    }
}

fn anchor(name: &str) -> String {
    name.to_ascii_lowercase().replace('.', "")
}

fn object_section(out: &mut String, variable: &str, object: &Object) {
    let _ = writeln!(out, "### {}\n", object.name);
    let _ = writeln!(out, "The type of `{variable}`.\n");
    let _ = writeln!(
        out,
        "| field | type | what it is, and where it comes from |"
    );
    let _ = writeln!(out, "|---|---|---|");
    for f in object.fields {
        let _ = writeln!(
            out,
            "| `{variable}.{}` | {} | {} |",
            f.name,
            type_name(f.ty),
            f.doc
        );
    }
    out.push('\n');
    // A field that is itself an object (`signals.fleet`) gets its section.
    for f in object.fields {
        if let FieldTy::Object(inner) = f.ty {
            object_section(out, &format!("{variable}.{}", f.name), inner);
        }
    }
}

/// The whole reference, as Markdown.
pub fn markdown() -> String {
    let mut out = String::new();
    out.push_str(HEADER);
    out.push_str("## Variables\n\n");
    out.push_str("| variable | type | what it is |\n|---|---|---|\n");
    for v in schema::VARIABLES {
        let _ = writeln!(out, "| `{}` | {} | {} |", v.name, type_name(v.ty), v.doc);
    }
    out.push('\n');
    for v in schema::VARIABLES {
        if let FieldTy::Object(object) = v.ty {
            object_section(&mut out, v.name, object);
        }
    }
    out.push_str(VARIABLE_NOTES);
    out.push_str("## Functions\n\n");
    out.push_str(
        "Besides CEL's operators (`==`, `!=`, `<`, `<=`, `>`, `>=`, `+`, `-`, `*`, `/`, `%`, `!`, `&&`, `||`, `? :`, `in`, `[]`, and for optional values `a.?b` and `m[?k]`) and macros (`has`, `all`, `exists`, `exists_one`, `map`, `filter`, the lists extension's `sortBy`, as in `list.sortBy(e, key)`, and the two-variable comprehensions below), rules may call these functions: CEL's standard library, its strings and lists extensions, and the Kubernetes libraries of `k8s.io/apiserver/pkg/cel/library` that make sense for requests (IP addresses and CIDRs, URLs, regular expressions, lists, sets), with Kubernetes' names, types and semantics. A field that is no identifier can be selected in backticks: ``request.headers.`x-tenant` ``. Each example evaluates to `true` (a test checks that).\n\n",
    );
    out.push_str(TWO_VARIABLES);
    for f in schema::FUNCTIONS {
        let _ = writeln!(out, "### `{}`\n", f.name);
        let _ = writeln!(out, "{}\n", f.doc);
        for o in f.overloads {
            let _ = writeln!(out, "* `{}`", o.signature(f.name));
        }
        let _ = writeln!(out, "\nExample: `{}`\n", f.example);
    }
    out.push_str(CEL_DIFFERENCES);
    out.push_str(GOVERNANCE);
    out.push_str(FOOTER);
    out
}

const HEADER: &str = r#"# Policy reference

<!-- Generated from crates/celador-engine/src/policy/schema.rs: edit the schema, then regenerate
     with `CELADOR_BLESS=1 cargo test --test authoring`. -->

A celador rules file lists rules; each rule is a CEL condition over the
caller's verified identities, the request and the workload. This reference
lists everything a condition can read and call. `celador check` refuses any
name or type it does not list.

## The rules file

```yaml
rules:
  - name: exporter-read-only          # required, unique: named in denials and audit records
    description: the nightly exporter may only read exports   # optional
    effect: allow                     # required: allow | deny
    when: >                           # required: a CEL condition that is a bool
      source.id == "spiffe://example.org/ns/batch/sa/exporter" &&
      request.method == "GET" && request.path.startsWith("/export/")
    mode: enforce                     # optional: enforce (default) | shadow
```

Unknown keys are errors. [`rules.schema.json`](rules.schema.json) is the JSON
Schema of this format, for editors (with the YAML language server, add
`# yaml-language-server: $schema=<path>/rules.schema.json` at the top).

## How a decision is made

1. The caller's credentials are verified first (see the README); a request
   without the credentials its route requires is denied (401) before any rule
   runs.
2. A credential on the **revocation list** is denied (403, `revoked`),
   whatever the rules, grants or cached decisions say.
3. A **path that servers resolve differently** from its canonical form
   (`request.path`, see below) is denied (400, `invalid_path`) before any
   rule runs, unless celador's `request.paths` setting says otherwise.
4. The caller's **signals** are counted (this request included), and the
   **grant** in force for it is found: the first grant of the grants file
   that names one of its SPIFFE IDs, is open now and whose condition holds.
5. **Deny rules** run in file order; the first that matches denies the
   request (403, reason `denied_by_rule`, naming the rule).
6. Then **allow rules** run in file order; the first that matches allows it
   (reason `allowed`, naming the rule).
7. If no allow rule matched but a grant is in force, the grant allows it
   (reason `granted`; the audit record names the grant and its reason).
8. Otherwise the request is denied (403, `no_allow_rule`).

Rules in **`mode: shadow`** take no part in this: they are evaluated as if
enforced, and what they would have decided is written to the audit record
(`shadow`) and counted (`celador_shadow_differences_total`) when it differs.

A condition that **fails to evaluate** (reading `token.id` without a token,
`request.headers["x"]` without that header, `int("abc")`) counts as *not
matching* for an allow rule, and as *matching* for a deny rule, which then
denies with reason `rule_error`: errors always fail closed. The audit record
lists every rule that failed, and why, and for a `rule_error` the failing
rule's condition clause by clause (`explanation`).

"#;

const VARIABLE_NOTES: &str = r#"### Absent values

`source.*` (except `address` and `port`) exists only when the peer's
X.509-SVID was verified, and `token.*` only when a JWT-SVID was: reading one
that is absent fails (see above). `has(source.id)` and `has(token.id)` test
for them (false when absent, never an error): a deny rule written
`has(token.id) && token.path.startsWith("/agents/")` leaves callers without
a token to the other rules, and `!has(source.id) || !(source.id in [...])`
denies them on purpose. Reading a map key that is absent fails
too: test for it first (`"x-tenant" in request.headers && ...`, or
`has(context.route) && ...` for a key that is an identifier); `celador
check` warns when a deny rule does not.

### Paths and queries

`request.path` is canonical: `/export/%61.csv`, `/export//a.csv` and
`/export/a.csv` are all `/export/a.csv` to a rule, so
`request.path.startsWith("/export/")` means what it says. A path whose
canonical form a common server would not serve as such (`/export/../pay`,
`/export/%2e%2e/pay`, `/export/..%2fpay`, `/export/..;/pay` which Tomcat
serves as `/pay`, `/export/..\pay`, `/admin;x=1`, `%00`, `//host/x`) never
reaches a rule: it is denied with `invalid_path`. `request.raw_path` is the
path as sent, for the rare rule that needs it.

A query parameter given more than once (`?debug=false&debug=true`) has no
single value that every server agrees on: reading it through
`request.query` fails (so a deny rule reading it matches and an allow rule
does not), and `request.query_all` gives every value, in order:
`"debug" in request.query_all && request.query_all.debug.exists(v, v == "true")`
reads them all.

### Types

Strings compare exactly (`==` is case-sensitive); `lowerAscii()` normalises.
Timestamps compare with `<`, `>` and subtract into durations
(`now - source.not_after`); `duration("15m")` and `timestamp("2026-01-01T00:00:00Z")`
build them. `token.claims` values are JSON values: strings, numbers (int or
double), bools, lists and maps; convert with `string()`, `int()` or
`double()` where a rule needs one type.

"#;

const TWO_VARIABLES: &str = r#"### Two-variable comprehensions

As in cel-go's `ext.TwoVarComprehensions`, which Kubernetes enables: over a
list, the first variable is the index and the second the element; over a
map, the key and its value. `all` and `exists` absorb an error as `&&` and
`||` do (`[0, 3].all(i, v, 2 / v == 1)` is false, while
`[0, 2].all(i, v, 2 / v == 1)` is an error); the others pass errors on.

* `list.all(i, v, predicate)`, `map.all(k, v, predicate)`: `bool`
* `list.exists(i, v, predicate)`, `map.exists(k, v, predicate)`: `bool`
* `list.existsOne(i, v, predicate)`, `map.existsOne(k, v, predicate)`: `bool`, exactly one
* `list.transformList(i, v, [filter,] expression)`, `map.transformList(k, v, [filter,] expression)`: `list`
* `list.transformMap(i, v, [filter,] expression)`, `map.transformMap(k, v, [filter,] expression)`: `map`, the same keys (a list's indexes), the expression's values
* `list.transformMapEntry(i, v, [filter,] entry)`, `map.transformMapEntry(k, v, [filter,] entry)`: `map`, the union of the entries, each a map; a key given twice is an error

Example: `request.headers.exists(k, v, k.startsWith("x-debug") && v == "1")`,
`[1, 2, 3].transformList(i, v, i > 0, v * 2) == [4, 6]`,
`{"a": 1}.transformMapEntry(k, v, {v: k}) == {1: "a"}`

"#;

const CEL_DIFFERENCES: &str = r#"## Where celador's CEL differs from cel-go and Kubernetes

celador evaluates rules with the `cel` crate (0.15) and types them with its
own checker. Every difference known is listed here, with why.

- **Checking.** `celador check` is celador's checker, not cel-go's: it knows
  the variables and functions above and gives a value of unknown type
  (`dyn`, such as a claim) the benefit of the doubt; evaluation errors then
  fail closed. Kubernetes' cost estimation and runtime cost budget do not
  exist here: a rule is bounded by the size of the request it reads, by the
  regular expression limits below and by `lists.range` (at most a million
  elements).
- **Literals are checked at load.** `ip('…')`, `cidr('…')`, `url('…')`,
  the ranges of `inCidr` and the patterns of `matches`, `find` and
  `findAll` written as literals are parsed once, when the file loads, and
  one that does not parse fails the load at its line and column, as does a
  bad literal argument of `containsIP` or `containsCIDR` (which is parsed
  again per request: cheaper, measured, than finding it parsed). In
  Kubernetes they are evaluation errors.
- **Regular expressions** are RE2 syntax as in cel-go (Rust's `regex`, which
  has no backreferences or look-around either). A literal pattern may
  compile to at most 1 MiB, one computed at evaluation to at most 256 KiB
  (and such patterns are cached, at most 16 MiB of them): beyond, it is an
  error. cel-go sets no such limits.
- **Nesting is bounded at load**, so that no rule can overflow a thread's
  stack while it is parsed or evaluated: a condition may nest brackets
  (`(`, `[`, `{`) at most 32 deep, comprehensions (`all`, `exists`, `map`,
  `filter`, ... and the two-variable forms; each counts once) at most 5
  deep, and its expression tree, once the macros are expanded (a
  two-variable comprehension expands into three nested comprehensions), at
  most 24 deep; a rule beyond is refused at load with the depth found
  (`comprehensions nested 6 deep; at most 5`). Kubernetes bounds nesting
  by its parser's recursion limit and its cost budget instead.
- **Error messages** are worded differently from Kubernetes', and quote the
  whole value that failed to parse (never a part), so that a value read
  from a secret header is found and redacted in errors and audit records.
- **`duration.getMilliseconds()`** is the millisecond component (321 for
  123.321456789 s), as the CEL specification and cel-go define it. The
  `cel` crate returns the total milliseconds; celador's own function table
  replaces it for `x.getMilliseconds()`.
- **`sum()` of an empty list** is the int `0`: Kubernetes picks the zero of
  the list's declared type (`0.0`, `0u`, `duration('0s')`), which a rule's
  lists, read from a request, do not have.
- **`inCidr`** is celador's own shorthand for `cidr(range).containsIP(addr)`,
  with the same parsing (an IPv4-mapped address or range is an error in
  both); Kubernetes has no `inCidr`.
- **`url()`** follows Go's `net/url`, which Kubernetes uses, reimplemented for
  the parts Kubernetes exposes: there may be differences on exotic input
  (a host is checked for the characters Go allows, not parsed as an IP
  address).
- **Two-variable comprehensions** are expanded by celador's own parser
  macros into the one-variable comprehensions the `cel` crate evaluates
  (its interpreter ignores a comprehension's second variable, and a
  function cannot receive an unevaluated predicate): the results and the
  error absorption are cel-go's, but the target of `T.all(k, v, …)` is
  copied once per evaluation, and a map is iterated in no fixed order (as
  in cel-go), so `transformList` over a map gives its elements in no fixed
  order.
- **Not included:** Kubernetes' `quantity`, `semver`, `format.*`,
  `authorizer` and `includes`, and cel-go's `cel.bind`, math and encoders
  extensions. A call to any of them is refused at load as an undeclared
  function.

"#;

const GOVERNANCE: &str = r#"## Grants

A grants file (config key `governance.grants`, in Kubernetes a ConfigMap) gives named
identities access for a time, with a reason:

```yaml
grants:
  - name: inc-4711-rerun-export                       # required, unique, named in audit records
    identities: ["spiffe://example.org/ns/batch/sa/exporter"]   # SPIFFE IDs of an X.509- or JWT-SVID; "spiffe://example.org/ns/ops/" (ending in /): everyone under it
    when: request.method == "POST" && request.path.startsWith("/export/")   # optional: checked like a rule
    not_before: 2026-11-25T10:00:00Z                  # optional: open from the start without it
    expires: 2026-11-25T12:00:00Z                     # required
    reason: "INC-4711: re-run the failed export"      # required
```

A grant is in force from `not_before` (inclusive) to `expires` (exclusive),
to the second and with no reload: it allows what no allow rule does, and
deny rules still override it. Deny rules read it as `grant`
(`grant.name != "" && request.path.startsWith("/export/billing/")`).
A grant longer than `governance.grants_max_duration` (24h by default; measured from
`not_before`, or from when the file is loaded) is an error, as are an empty
reason, an identity that is not a SPIFFE ID (nor one ending in `/`, a
prefix), and any problem in a condition. With a governance store
(`governance.store`), `celador grant` puts the same grants in Redis for the
whole fleet; they are merged with the file's.
`celador check` checks a grants file; a test suite's `grants:` puts one in
force for its cases.

## Revocations

A revocations file (config key `governance.revocations`) lists credentials that are
denied at once (403, reason `revoked`), before rules, grants and the
decision cache; each entry names one thing and says why:

```yaml
revocations:
  - spiffe_id: spiffe://example.org/ns/batch/sa/exporter        # one SPIFFE ID
    reason: "INC-4712: key leaked"
  - spiffe_id_prefix: spiffe://example.org/ns/legacy            # this ID and every ID below it
    reason: namespace decommissioned
  - x509_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08   # a leaf's DER fingerprint (colons allowed)
    reason: stolen workstation
  - x509_serial: "0a:1b:2c"                                     # a serial number, with its issuer
    issuer: "CN=intermediate,O=example"
    reason: mis-issued
  - jwt_id: 4f1c2d9e                                            # a JWT-SVID's jti
    reason: replayed token
  - spiffe_id: spiffe://example.org/ns/ci/sa/deployer
    reason: "credential-compromise (SET c-1 from https://idp.example.com/)"
    set:                                                        # optional: the Security Event Token it came from
      source: https://idp.example.com/                          # the transmitter (the SET's iss)
      event: https://schemas.openid.net/secevent/risc/event-type/credential-compromise
      jti: c-1                                                  # the SET's jti
```

`set` is what `celador signals serve` writes on each revocation it makes
from a Security Event Token; every decision the entry makes carries it in
its audit record (`revoked.set`). Each of its three values is required when
`set` is given, at most 512 bytes and free of control characters; an entry
without `set` (written by hand or by `celador revoke`) is as good.

An `issuer` is the distinguished name of the certificate's issuer, in any of
the forms tools print it: RFC 4514 (`CN=intermediate,O=example`), OpenSSL's
oneline form (`O = example, CN = intermediate`, what `openssl x509 -noout
-issuer` prints) or its slash form (`/O=example/CN=intermediate`). It is
compared with the certificate's issuer as a name: attribute types by OID
(`CN`, `commonName`, `2.5.4.3`), string values ignoring case and extra white
space (RFC 4518), the RDNs in any order. An issuer that is none of these
forms (an unknown attribute type, text without `=`, a bad escape) refuses
the whole file with a message naming the entry, like any other bad entry.

A change to the file takes effect within a second; removing an entry
restores access as fast. A file that does not load keeps the last good list
in force, is logged, and counted
(`celador_governance_file_reloads_total{file="revocations",outcome="error"}`).
Configured as `revocations: {path: FILE, optional: true}` (as the injected
sidecar reads the namespace's governance ConfigMap), a missing file is an
empty list instead, at start-up and when it is removed (`outcome="absent"`),
and a file that appears is loaded like any change; `grants` takes the same
form.

## Signals

`signals` holds the caller's request and denial counts over sliding windows
of 10 seconds, 1 minute and 10 minutes, so a rule can react to behaviour:

```yaml
  - name: exporters-slow-down
    effect: deny
    when: source.id.endsWith("/exporter") && signals.requests_1m > 600
```

The caller is the JWT-SVID's SPIFFE ID when the request has one, else the
X.509-SVID's. Request counts include the current request (the 31st request
of a minute sees `requests_1m == 31`); denial counts are of earlier
requests. Each window is ten buckets of a tenth of its length, so it covers
between 90 % and 100 % of its length. The counts are kept **per celador
instance**: in Kubernetes, per pod, not per service. At most
`governance.signals.max_identities` identities (10,000) are counted; the least recently
seen are dropped past that (`celador_signals_dropped_identities_total`).
With a governance store, `signals.fleet.*` are the same counts summed over
every celador sharing it, lagging by up to one `governance.signals_interval`
(250 ms) per instance plus round trips; `signals.store_stale_seconds` is how
long the store's revocations and grants may have been missed (0 while
connected).

## The decision cache

Decisions are remembered for `cache.decision_ttl` (2s; `0s` turns the cache
off), keyed on exactly what the loaded rules read (derived from the rules
themselves: a rule that reads `request.headers["x-tenant"]` keys on that
header only), the grant in force and the generations of the rules, bundles,
grants and revocations, so any reload invalidates every entry. An entry
never outlives the credentials it was decided for, nor the next opening or
closing of a grant for the caller. Policies whose rules read `now`,
`request.time`, `request.id` or `signals` are never cached. Credentials are
verified and revocations checked on every request, cached or not.

"#;

const FOOTER: &str = r#"## What `celador check` reports

**Errors** (the file is not loaded, by `check` or by `serve`):

* YAML that does not fit the format: an unknown key, a missing `name`,
  `effect` or `when`, an `effect` other than `allow` or `deny`;
* an empty rule name, or one with characters outside letters, digits and
  `- _ . : /`, or longer than 128 characters (names travel in headers);
* a condition that does not parse (`syntax error: ...`);
* an unknown variable, field, function or method, with the nearest name
  suggested (`'request' has no field 'methd'; did you mean 'method'?`);
* a function called with argument types it does not take, or as a method
  when it is a function (and the other way round);
* an operator applied to types it cannot take (`request.size + "a"`), and
  comparisons that are always false (`source.id == 3`);
* a condition that is not a bool;
* a literal regular expression that does not compile.

**Warnings** (the file loads; `--deny-warnings` makes them fail `check`):

* two rules with the same name;
* a condition that can never be true (`request.method == "GET" &&
  request.method == "POST"`, `request.size < 0 && request.size > 10`) or
  that is always true (`request.size < 10 || request.size >= 5`);
* a literal the field never holds: a lowercase method (`request.method ==
  "get"`), a path without its leading `/` (`request.path.startsWith("api/")`),
  an uppercase scheme or header name (`"X-Tenant" in request.headers`);
* a part of a condition that decides nothing: an alternative of `||` that
  can never be true, a clause of `&&` that is always true;
* an allow rule that a deny rule overrides entirely: whenever it matches, the
  deny rule matches too;
* a deny rule that reads a map key without testing that it is present, and
  so denies every request without that key;
* a deny rule that reads `source.*` or `token.*` with no `has(source.id)` or
  `has(token.id)` in it: on routes that accept the other credential (`jwt`
  or `either` for `source`, `x509` or `either` for `token`), it denies every
  caller without that credential;
* a deny rule that overrides every allow rule, so that the rules can only deny;
* a file with no rules at all, which denies every request;
* in a grants file, a grant that has already expired.

`celador check` tells the kind of a file by its top-level key: `rules:`,
`grants:` or `revocations:`.

## Test suites

`celador test` runs files named `*_test.yaml` (or the files given). A suite
names the rules under test (and optionally a grants file and a revocations
file in force) and lists cases; `defaults` fill what a case
leaves out. Each case needs a name of its own, and a rule a case
expects (`expect.rule`) must be a rule of the file under test: a typo there
is an error, never a silent pass or failure. [`test-suite.schema.json`](test-suite.schema.json) is its JSON
Schema.

```yaml
rules: payments.yaml
grants: grants.yaml                                      # optional: grants in force for every case
revocations: revocations.yaml                            # optional: a revoked caller is denied (revoked) before any rule
defaults:
  request: { host: payments.shop.svc }
cases:
  - name: refunds may not charge
    identity: spiffe://example.org/ns/shop/sa/refunds   # or certificate: certs/refunds.pem
    token:                                               # optional: a JWT-SVID
      id: spiffe://example.org/agents/bot
      audience: [payments]
      expires: "2026-11-22T11:00:00Z"                    # an hour after `time` if omitted
      claims: { tenant: acme }
    request:
      method: POST                                       # GET if omitted
      path: /v1/charges?amount=10                        # / if omitted
      query: { currency: EUR }                           # appended to the path's query
      headers: { x-purpose: reporting }
      host: payments.shop.svc                            # localhost if omitted
      source_address: 10.0.0.7                           # empty if omitted: inCidr() on it then fails
      scheme: https                                      # https if omitted
      size: 0                                            # -1 (unknown) if omitted
      protocol: HTTP/2                                   # HTTP/1.1 if omitted
      id: r-1                                            # request.id, sent as x-request-id; empty if omitted
    destination: { principal: spiffe://example.org/ns/shop/sa/payments, address: 10.0.0.9, port: 8443 }
    context: { route: charges }                          # Envoy's context extensions
    workload: { namespace: shop, labels: { app: payments } }   # empty if omitted
    time: "2026-11-22T10:00:00Z"                         # now and request.time; the real time if omitted
    signals: { requests_1m: 700, risk: { level: high, since: "2026-11-22T09:00:00Z", source: idp } }   # the caller's signals; 0 and no risk if omitted
    expect:
      decision: deny                                     # allow | deny
      rule: refunds-only-refund                          # optional: the deciding rule
      reason: denied_by_rule                             # optional: allowed, denied_by_rule, rule_error, no_allow_rule, granted, invalid_path, revoked
      grant: ""                                          # optional: the grant in force ("" for none)
```

A case's request is read into the attributes rules see as `serve` reads
Envoy's `CheckRequest`: its `path` is what the client sends, canonicalized
for the rules, and an ambiguous one is denied with `invalid_path` as `serve`
denies it by default (`request.paths: reject_ambiguous`). Identities are
taken as given (a certificate file is
read for its SPIFFE ID, not verified): a suite tests rules, not credentials.

`celador eval --rules FILE --input FILE` takes one such case (without
`expect`), an Envoy `CheckRequest` in JSON, or an audit record line (as
`celador serve` writes it), and explains every rule's
result and the value of every attribute the rules read. `--grants FILE`,
`--revocations FILE` and `--signals FILE` (the caller's signals in YAML or
JSON, replacing the input's) put in force what can change a decision in
`serve` besides the rules and the request.
"#;
