//! What celador may show of a request: the one definition of a secret,
//! used by every output.
//!
//! Data flow: the engine holds one [`Redaction`], made at start-up from the
//! config (the JWT-SVID's header, `audit.query_params`); the audit record
//! and its trail (`edge::audit`, `edge::trail`), the span (`edge::trace`),
//! the diagnostic log, a `rule_error`'s explanation, and `celador test` and
//! `celador eval` pass every request value they show through it. Rules
//! always see the real request; only what is shown is redacted.
//!
//! A value is shown as [`REDACTED`] when
//! * it is a header that carries credentials: one of
//!   [`CREDENTIAL_HEADERS`], a name with a credential word in it (see
//!   [`is_credential_name`]), the configured JWT-SVID header, or one named
//!   by `--redact-header`;
//! * it is a query parameter's value, unless `audit.query_params` (or
//!   `--show-query-param`) names the parameter: in the request's query, and
//!   in the query (or fragment) of a URL or path a header holds (`:path`,
//!   `referer`, `location`, ..., and every URL inside any header's value;
//!   see [`Redaction::header_value`]);
//! * it is a path parameter's value (`/app;jsessionid=…/x`) whose name is a
//!   credential's, in the request's path and every URL's
//!   ([`path_parameters`]);
//! * it stands alone where a query name or a path parameter goes and looks
//!   like a secret (`?0123…abcdef`; see [`looks_secret`]);
//! * it looks like a credential wherever it is ([`is_secret_value`]): it
//!   starts with an HTTP authentication scheme ([`AUTH_SCHEMES`]), or holds
//!   a compact JWS/JWE (`eyJ…` segments whose first decodes to a JSON
//!   object) or a cloud provider's access key ([`AWS_KEY_ID_PREFIXES`],
//!   [`KEY_PREFIXES`]).
//!
//! In free text (a path, a request id, a rule's error message) only the
//! credential-like words are replaced, and in an error message also any
//! value of this request that would have been redacted.

use std::borrow::Cow;
use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::attributes::Attributes;
use super::clause::Clause;
use super::decision::Decision;
use super::percent;

/// What a secret is shown as, everywhere.
pub const REDACTED: &str = "<redacted>";

/// [`REDACTED`] percent-encoded, as it stands in a query string (of the
/// path, or of a URL in a header's value).
pub const REDACTED_IN_QUERY: &str = "%3Credacted%3E";

/// Whether a shown value holds a redaction: [`REDACTED`], or
/// [`REDACTED_IN_QUERY`] in a query.
pub fn holds_redaction(value: &str) -> bool {
    value.contains(REDACTED) || value.contains(REDACTED_IN_QUERY)
}

/// Headers whose value is a URL or a path by definition (Envoy's `:path`,
/// the ones HTTP defines, and those proxies forward the original URL in):
/// its query is redacted as the request's own, whatever the value's shape.
pub const URL_HEADERS: &[&str] = &[
    ":path",
    "referer",
    "location",
    "content-location",
    "origin",
    "x-envoy-original-path",
    "x-forwarded-uri",
    "x-original-uri",
    "x-original-url",
    "x-rewrite-url",
];

/// Headers that carry credentials by definition: their values are never
/// shown, and `audit.headers` refuses them.
pub(crate) const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api-key",
    "apikey",
    "x-auth-token",
    "x-access-token",
    "x-amz-security-token",
    "x-goog-api-key",
    "x-goog-iap-jwt-assertion",
    "cf-access-jwt-assertion",
    "x-amzn-oidc-data",
    "x-amzn-oidc-accesstoken",
    "x-forwarded-access-token",
    "x-auth-request-access-token",
    "x-ms-token-aad-access-token",
    "x-ms-token-aad-id-token",
    "x-vault-token",
    "x-consul-token",
    "x-nomad-token",
    "private-token",
    "x-gitlab-token",
    "x-csrf-token",
    "x-xsrf-token",
];

/// HTTP authentication schemes: a value starting with one of them and a
/// credential is one (the IANA registry's, and common vendors').
pub(crate) const AUTH_SCHEMES: &[&str] = &[
    "Basic",
    "Bearer",
    "Digest",
    "Negotiate",
    "NTLM",
    "Kerberos",
    "DPoP",
    "GNAP",
    "HOBA",
    "Mutual",
    "OAuth",
    "PrivateToken",
    "Concealed",
    "SCRAM-SHA-1",
    "SCRAM-SHA-256",
    "vapid",
    "AWS4-HMAC-SHA256",
    "AWS",
    "Token",
    "Hawk",
    "ApiKey",
    "SharedKey",
    "SharedKeyLite",
];

/// Prefixes of AWS access key ids (`AKIA…`, `ASIA…`, and the STS bearer
/// and context credential kinds): 20 upper-case letters and digits in all.
pub(crate) const AWS_KEY_ID_PREFIXES: &[&str] = &["AKIA", "ASIA", "ABIA", "ACCA"];

/// Prefixes of other providers' access keys and tokens, each with the
/// shortest whole word that is one: GitHub, GitLab, Slack, Google (API
/// keys and OAuth access tokens), Stripe, npm, PyPI, OpenAI, Anthropic,
/// HashiCorp Vault, SendGrid, DigitalOcean and Shopify.
pub(crate) const KEY_PREFIXES: &[(&str, usize)] = &[
    ("ghp_", 20),
    ("gho_", 20),
    ("ghu_", 20),
    ("ghs_", 20),
    ("ghr_", 20),
    ("github_pat_", 20),
    ("glpat-", 20),
    ("glrt-", 20),
    ("xoxa-", 16),
    ("xoxb-", 16),
    ("xoxe-", 16),
    ("xoxe.", 16),
    ("xoxp-", 16),
    ("xoxr-", 16),
    ("xoxs-", 16),
    ("xapp-", 16),
    ("AIza", 30),
    ("ya29.", 20),
    ("sk_live_", 16),
    ("rk_live_", 16),
    ("sk_test_", 16),
    ("rk_test_", 16),
    ("whsec_", 16),
    ("npm_", 20),
    ("pypi-", 20),
    ("sk-proj-", 20),
    ("sk-ant-", 20),
    ("hvs.", 20),
    ("hvb.", 20),
    ("hvr.", 20),
    ("SG.", 30),
    ("dop_v1_", 20),
    ("shpat_", 20),
    ("shpss_", 20),
];

/// Words in a header or query parameter name that say it carries a
/// credential (`x-session-token`, `client_secret`, `api-key`, ...).
const CREDENTIAL_WORDS: &[&str] = &[
    "token",
    "secret",
    "passw",
    "credential",
    "apikey",
    "session",
    "cookie",
    "jwt",
    "csrf",
    "xsrf",
    "authent",
    "hmac",
    "passcode",
];

/// Whole words of a name that say the same (`x-auth-user`, `sig`).
const CREDENTIAL_WHOLE_WORDS: &[&str] = &[
    "auth",
    "authorization",
    "key",
    "pass",
    "pwd",
    "pin",
    "sig",
    "signature",
    "otp",
    "bearer",
    "sid",
    "authn",
];

/// The words shorter than this are never credentials by their shape.
const MIN_SECRET_WORD: usize = 16;

/// What outputs may show of a request.
#[derive(Debug, Clone, Default)]
pub struct Redaction {
    /// More headers (lowercase) whose values are never shown.
    headers: Vec<String>,
    /// Query parameters whose values may be shown.
    query_params: Vec<String>,
}

impl Redaction {
    /// A redaction that also hides the values of the headers `headers`
    /// (any case) and shows the values of the query parameters
    /// `query_params` (exact names, decoded), unless they look like
    /// credentials.
    pub fn new(
        headers: impl IntoIterator<Item = String>,
        query_params: impl IntoIterator<Item = String>,
    ) -> Self {
        let mut redaction = Redaction {
            headers: Vec::new(),
            query_params: query_params.into_iter().collect(),
        };
        for header in headers {
            redaction = redaction.hiding_header(&header);
        }
        redaction
    }

    /// This redaction, also hiding the values of the header `name`.
    #[must_use]
    pub(crate) fn hiding_header(mut self, name: &str) -> Self {
        let name = name.to_ascii_lowercase();
        if !self.headers.contains(&name) {
            self.headers.push(name);
        }
        self
    }

    /// Whether the header `name` (lowercase) carries credentials.
    pub fn is_secret_header(&self, name: &str) -> bool {
        is_credential_header(name) || self.headers.iter().any(|h| h == name)
    }

    /// The header `name` (lowercase) with `value`, as it may be shown:
    /// [`REDACTED`] for a credential header, else
    /// [`Redaction::header_value`].
    pub fn header<'v>(&self, name: &str, value: &'v str) -> Cow<'v, str> {
        if self.is_secret_header(name) {
            Cow::Borrowed(REDACTED)
        } else {
            self.header_value(name, value)
        }
    }

    /// The value of the header `name` (lowercase), whose name is known to
    /// be no credential's, as it may be shown: [`REDACTED`] when it looks
    /// like a credential; and when it is a URL or a path with a query (or
    /// a fragment), that query as the request's own is shown
    /// ([`Redaction::query`]): a `:path`, a `referer` or a `location`
    /// carries the same secrets (`?code=`, `?token=`, `#access_token=`)
    /// as the request's path.
    ///
    /// Which values are URLs: any value of the headers that hold one by
    /// definition ([`URL_HEADERS`], where even a relative `cb?code=` is
    /// one), and any other value that parses as an absolute URL
    /// (`scheme://…`) or an origin-form path (`/…`) without spaces: a list
    /// of names is never complete (proxies and applications forward the
    /// original URL under names of their own). In any other value, every
    /// `scheme://…` URL, every path right after `=` and every `<…>` target
    /// inside it is one ([`next_url`]: `link: <https://…?token=…>;
    /// rel="next"`, `refresh: 0; url=/cb?…`), the rest of the value kept as
    /// it is. A URL's path parameters (after its authority) are shown by
    /// [`path_parameters`].
    ///
    /// A URL's user information (`https://user:password@host/`) is shown
    /// as [`REDACTED`] too ([`without_userinfo`]), and a header's name is
    /// matched whatever its case (a capture or an `eval` input need not be
    /// lowercase, as Envoy's headers are).
    pub fn header_value<'v>(&self, name: &str, value: &'v str) -> Cow<'v, str> {
        if is_secret_value(value) {
            return Cow::Borrowed(REDACTED);
        }
        // Most values hold neither a query, a fragment, user information
        // nor a path parameter: one pass over their bytes, on every audit
        // record.
        if !value
            .bytes()
            .any(|b| matches!(b, b'?' | b'#' | b'@' | b';'))
        {
            return Cow::Borrowed(value);
        }
        // A URL's user information is hidden first, in `url` (before its
        // `;` could be read as a path parameter's); this pass hides what
        // is left (a `scheme://user:pass@` no URL scan took).
        match self.urls(name, value) {
            Cow::Borrowed(value) => without_userinfo(value),
            Cow::Owned(value) => Cow::Owned(without_userinfo(&value).into_owned()),
        }
    }

    /// [`Redaction::header_value`]'s URLs: the whole value when it is one
    /// ([`URL_HEADERS`], [`is_url`]), else every URL inside it
    /// ([`next_url`]: `<https://…?token=…>; rel="next"`, `0; url=…`).
    fn urls<'v>(&self, name: &str, value: &'v str) -> Cow<'v, str> {
        if URL_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name)) || is_url(value) {
            return self.url(value);
        }
        // Most values with a `;` or `?` hold no URL: nothing is copied
        // until one needs redacting.
        let mut shown: Option<String> = None;
        let mut copied = 0;
        let mut from = 0;
        while let Some((start, end)) = next_url(value, from) {
            let url = value.get(start..end).unwrap_or_default();
            if let Cow::Owned(url) = self.url(url) {
                let out = shown.get_or_insert_with(|| String::with_capacity(value.len()));
                out.push_str(value.get(copied..start).unwrap_or_default());
                out.push_str(&url);
                copied = end;
            }
            from = end.max(start + 1);
        }
        match shown {
            Some(mut out) => {
                out.push_str(value.get(copied..).unwrap_or_default());
                Cow::Owned(out)
            }
            None => Cow::Borrowed(value),
        }
    }

    /// One URL or path as it may be shown: its path's parameters by
    /// [`path_parameters`], its query and its fragment as the request's
    /// query ([`Redaction::query`]).
    fn url<'v>(&self, value: &'v str) -> Cow<'v, str> {
        // Bytes, not characters: both are ASCII, so `at` is a boundary.
        let at = value
            .bytes()
            .position(|b| b == b'?' || b == b'#')
            .unwrap_or(value.len());
        let (base, rest) = value.split_at(at);
        // The authority is no path: its `;` may stand in user information
        // (`https://svc:pa;ss@host/`), which is hidden first, whole.
        let path_at = authority_end(base);
        let (authority, path) = base.split_at(path_at);
        let base = match (without_userinfo(authority), path_parameters(path)) {
            (Cow::Borrowed(_), Cow::Borrowed(_)) => Cow::Borrowed(base),
            (authority, path) => Cow::Owned(format!("{authority}{path}")),
        };
        let (query, fragment) = match rest.strip_prefix('?') {
            Some(rest) => match rest.split_once('#') {
                Some((query, fragment)) => (Some(query), Some(fragment)),
                None => (Some(rest), None),
            },
            None => (None, rest.strip_prefix('#')),
        };
        if query.is_none() && fragment.is_none() {
            return base;
        }
        let mut shown = base.into_owned();
        if let Some(query) = query {
            shown.push('?');
            shown.push_str(&self.query(query));
        }
        // OAuth's implicit flow puts its tokens in the fragment, as a
        // query: `#access_token=…`.
        if let Some(fragment) = fragment {
            shown.push('#');
            shown.push_str(&self.query(fragment));
        }
        if shown == value {
            Cow::Borrowed(value)
        } else {
            Cow::Owned(shown)
        }
    }

    /// A raw query string (`a=1&b=2`, still percent-encoded) as it may be
    /// shown: each name by [`Redaction::query_name`], each value by
    /// [`Redaction::query_value`], a redacted one as [`REDACTED`]
    /// percent-encoded, so that the query stays one.
    pub fn query(&self, query: &str) -> String {
        query
            .split('&')
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let (name, value) = (
                    percent::decode_lossy(k, true),
                    percent::decode_lossy(v, true),
                );
                let k = if self.query_name(&name) == REDACTED {
                    REDACTED_IN_QUERY
                } else {
                    k
                };
                if !pair.contains('=') {
                    k.to_owned()
                } else if self.query_value(&name, &value) == REDACTED {
                    format!("{k}={REDACTED_IN_QUERY}")
                } else {
                    format!("{k}={v}")
                }
            })
            .collect::<Vec<_>>()
            .join("&")
    }

    /// The query parameter `name` (decoded) with `value` (decoded), as it
    /// may be shown: only a parameter the config names, and never a value
    /// that looks like a credential.
    pub fn query_value<'v>(&self, name: &str, value: &'v str) -> &'v str {
        if self.query_params.iter().any(|p| p == name) && !is_secret_value(value) {
            value
        } else {
            REDACTED
        }
    }

    /// A query parameter's name as it may be shown (a credential can stand
    /// alone in a query: `?eyJ…`).
    ///
    /// A name that stands where a credential could (a bare `?0123…` as
    /// much as `?eyJ…=1`) is one when it looks like one
    /// ([`looks_secret`]); ordinary flags (`?debug`, `?v2`) are shown.
    pub fn query_name<'n>(&self, name: &'n str) -> &'n str {
        if looks_secret(name) { REDACTED } else { name }
    }

    /// A value of any other kind (a context extension, a key), as it may
    /// be shown.
    pub fn value<'v>(&self, value: &'v str) -> &'v str {
        if is_secret_value(value) {
            REDACTED
        } else {
            value
        }
    }

    /// Free text (a path, a request id) with every credential-like word in
    /// it replaced.
    pub fn text<'t>(&self, text: &'t str) -> Cow<'t, str> {
        self::text(text)
    }

    /// A request's path (without its query) as it may be shown: see
    /// [`path`].
    pub fn path<'p>(&self, path: &'p str) -> Cow<'p, str> {
        self::path(path)
    }

    /// A message about `attrs` (a rule's error) with every credential-like
    /// word and every value of `attrs` that would be redacted replaced:
    /// CEL and celador's functions quote the values they fail on.
    pub fn message<'t>(&self, text: &'t str, attrs: &Attributes<'_>) -> Cow<'t, str> {
        // Only values the message quotes are looked at: a rule that often
        // fails (a header that is often absent) costs a scan, not a
        // redaction of the whole request.
        let quoted = |value: &str| !value.is_empty() && text.contains(escaped(value).as_ref());
        let mut secrets: Vec<Cow<'_, str>> = Vec::new();
        for (name, value) in attrs.headers.iter() {
            // A URL with its query redacted is a secret as a whole.
            if quoted(value) && self.header(name, value) != value.as_str() {
                secrets.push(Cow::Borrowed(value));
            }
        }
        for pair in attrs.query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (
                percent::decode_lossy(k, true),
                percent::decode_lossy(v, true),
            );
            if quoted(&k) && self.query_name(&k) == REDACTED {
                secrets.push(k.clone());
            }
            if quoted(&v) && self.query_value(&k, &v) == REDACTED {
                secrets.push(v);
            }
        }
        scrub(text, &secrets)
    }

    /// `decision`'s rule errors (and its explanation's) as they may be shown
    /// for a decision on `attrs`: errors quote what rules read.
    pub fn decision(&self, decision: &mut Decision, attrs: &Attributes<'_>) {
        for error in &mut decision.errors {
            if let Cow::Owned(shown) = self.message(&error.error, attrs) {
                error.error = shown;
            }
        }
        if let Some(detail) = &mut decision.detail
            && let Cow::Owned(shown) = self.message(detail, attrs)
        {
            *detail = shown;
        }
        if let Some(tree) = &mut decision.explanation {
            self.clause(std::sync::Arc::make_mut(tree), attrs);
        }
    }

    /// A clause tree (made from the real request, see
    /// `engine::policy::explain`) as it may be shown.
    pub fn clause(&self, tree: &mut Clause, attrs: &Attributes<'_>) {
        tree.redact(&|text| self.text(text), &|value| self.message(value, attrs));
    }

    /// `attrs` as they may be shown, for evaluating what explanations show
    /// (rules still see `attrs`): headers, query values, the path, the
    /// request id and context values redacted.
    pub fn shown<'a>(&self, attrs: &Attributes<'a>) -> Shown<'a> {
        let headers = attrs
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), self.header(name, value).into_owned()))
            .collect();
        let query = self.query(attrs.query);
        let context = attrs
            .context
            .iter()
            .map(|(k, v)| (k.clone(), self.value(v).to_owned()))
            .collect();
        Shown {
            base: attrs.clone(),
            headers,
            query,
            path: self.path(&attrs.path).into_owned(),
            raw_path: self.path(attrs.raw_path).into_owned(),
            stream_id: self.text(attrs.stream_id).into_owned(),
            context,
        }
    }
}

/// A request's attributes as they may be shown: see [`Redaction::shown`].
#[derive(Debug, Clone)]
pub struct Shown<'a> {
    base: Attributes<'a>,
    headers: HashMap<String, String>,
    query: String,
    path: String,
    raw_path: String,
    stream_id: String,
    context: HashMap<String, String>,
}

impl Shown<'_> {
    /// The redacted attributes.
    pub fn attributes(&self) -> Attributes<'_> {
        Attributes {
            headers: Cow::Borrowed(&self.headers),
            query: &self.query,
            path: Cow::Borrowed(&self.path),
            raw_path: &self.raw_path,
            stream_id: &self.stream_id,
            context: &self.context,
            ..self.base.clone()
        }
    }
}

/// Free text with every credential-like word in it replaced: what
/// [`Redaction::text`] does, for outputs made before a redaction is at
/// hand (a request that is not an HTTP check).
pub fn text(text: &str) -> Cow<'_, str> {
    scrub(text, &[])
}

/// A request's path (without its query) as it may be shown: its path
/// parameters by [`path_parameters`], and every credential-like word in
/// it replaced ([`text`]).
pub fn path(path: &str) -> Cow<'_, str> {
    match path_parameters(path) {
        Cow::Borrowed(path) => text(path),
        Cow::Owned(path) => Cow::Owned(text(&path).into_owned()),
    }
}

/// `path` with the `;name=value` parameters of its segments (RFC 3986
/// §3.3: `/app;jsessionid=…/x`) shown as a query's are: a value as
/// [`REDACTED_IN_QUERY`] when its name is a credential's
/// ([`is_credential_name`]) or it looks like a secret ([`looks_secret`]),
/// and a name (or a parameter without `=`) that looks like one too. The
/// path keeps its shape; one without a `;` is returned as it is.
pub fn path_parameters(path: &str) -> Cow<'_, str> {
    if !path.contains(';') {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    let mut changed = false;
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        let mut params = segment.split(';');
        out.push_str(params.next().unwrap_or_default());
        for param in params {
            out.push(';');
            let (name, value) = param.split_once('=').unwrap_or((param, ""));
            let decoded = percent::decode_lossy(name, false);
            if looks_secret(&decoded) {
                out.push_str(REDACTED_IN_QUERY);
                changed = true;
            } else {
                out.push_str(name);
            }
            if !param.contains('=') {
                continue;
            }
            out.push('=');
            if !value.is_empty()
                && (is_credential_name(&decoded)
                    || looks_secret(&percent::decode_lossy(value, false)))
            {
                out.push_str(REDACTED_IN_QUERY);
                changed = true;
            } else {
                out.push_str(value);
            }
        }
    }
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(path)
    }
}

/// The next URL in a header's value at or after byte `from`, as byte
/// offsets: a `scheme://…` one, a path (`/…`) right after `=` (optionally
/// quoted: `refresh: 0; url=/cb?…`, `next='/cb?…'`), or the inside of a
/// `<…>` without whitespace (a link's target, relative or not). A URL
/// ends where a reader would end it ([`url_end`]). Hand-written: a URL
/// parser finds no URL inside text, and this runs on header values.
fn next_url(value: &str, from: usize) -> Option<(usize, usize)> {
    let bytes = value.as_bytes();
    let mut at = from;
    loop {
        let i = at
            + bytes
                .get(at..)?
                .iter()
                .position(|b| matches!(b, b'<' | b':' | b'='))?;
        at = i + 1;
        match bytes.get(i) {
            Some(b'<') => {
                // A `<` with no `>` before whitespace is no link: the scan
                // goes on (a `scheme://` may follow it).
                let inner = bytes.get(at..).unwrap_or_default();
                let len = inner
                    .iter()
                    .position(|b| *b == b'>' || *b == b'<' || *b <= b' ' || *b == 0x7f);
                if let Some(len) = len
                    && len > 0
                    && inner.get(len) == Some(&b'>')
                {
                    return Some((at, at + len));
                }
                continue;
            }
            Some(b'=') => {
                let quoted = usize::from(matches!(bytes.get(at), Some(b'"' | b'\'')));
                let start = at + quoted;
                if bytes.get(start) == Some(&b'/') {
                    return Some((start, url_end(bytes, start)));
                }
                continue;
            }
            _ => {}
        }
        if bytes.get(i..i + 3) != Some(b"://".as_slice()) {
            continue;
        }
        // The scheme: letters, digits, `+`, `-` and `.`, from a letter.
        let scheme_byte = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.');
        let head = bytes.get(from..i)?;
        let len = head.iter().rev().take_while(|b| scheme_byte(b)).count();
        let skip = head
            .get(head.len() - len..)?
            .iter()
            .take_while(|b| !b.is_ascii_alphabetic())
            .count();
        let start = i - len + skip;
        if start == i {
            continue;
        }
        return Some((start, url_end(bytes, start)));
    }
}

/// Where the URL that starts at byte `start` of `bytes` ends: at
/// whitespace, or a `,` or `;` before a space or at the end; at a quote
/// only when the same quote stands right before it (`'https://…'`), at
/// `>` only when a `<` does. A quote, `<` or `>` is legal inside a query
/// (`?state=it's`), so a bare URL runs over it.
fn url_end(bytes: &[u8], start: usize) -> usize {
    let opener = start.checked_sub(1).and_then(|i| bytes.get(i)).copied();
    let closer = match opener {
        Some(b'<') => Some(b'>'),
        Some(q @ (b'"' | b'\'')) => Some(q),
        _ => None,
    };
    let tail = bytes.get(start..).unwrap_or_default();
    tail.iter()
        .enumerate()
        .position(|(k, b)| match b {
            b',' | b';' => tail.get(k + 1).is_none_or(|next| *next == b' '),
            b => *b <= b' ' || *b == 0x7f || Some(*b) == closer,
        })
        .map_or(bytes.len(), |k| start + k)
}

/// Where the path of `url` (without its query) starts: after its
/// `scheme://authority` or `//authority`, at 0 when it has none.
fn authority_end(url: &str) -> usize {
    let after = match url.find("://") {
        // A `/` before `://` means it is inside a path, not after a scheme.
        Some(at) if !url.get(..at).is_some_and(|s| s.contains('/')) => at + 3,
        _ if url.starts_with("//") => 2,
        _ => return 0,
    };
    url.get(after..)
        .and_then(|rest| rest.find('/'))
        .map_or(url.len(), |at| after + at)
}

/// Whether the header `name` (lowercase) carries credentials whatever the
/// config says: one of [`CREDENTIAL_HEADERS`], or a credential word in its
/// name ([`is_credential_name`]).
pub fn is_credential_header(name: &str) -> bool {
    CREDENTIAL_HEADERS.contains(&name) || is_credential_name(name)
}

/// `text` with the user information of every URL in it (`redis://:PASSWORD@`,
/// `https://user:pass@`) shown as `<redacted>@`: for the lines of a file a
/// diagnostic quotes, which may hold a URL with credentials, and for header
/// values. An authority is what follows `scheme://`; `//` at the start of
/// the text or after `=`, `<`, a quote or whitespace (a scheme-relative
/// URL: `referer: //user:pass@host/`); and, for `http` and `https`, what
/// follows the colon and any run of `/` and `\` after it, as browsers
/// read it (`https:\\user:pass@host`, `https:/u:p@h`, `https:u:p@h`).
/// One pass, linear in the text's length; nothing is copied when nothing
/// is hidden.
pub fn without_userinfo(text: &str) -> Cow<'_, str> {
    // The cheap test first: no `@`, no user information.
    if !text.contains('@') {
        return Cow::Borrowed(text);
    }
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut from = 0;
    while let Some(start) = next_authority(text.as_bytes(), from) {
        let tail = text.get(start..).unwrap_or_default();
        // The authority ends at a path, a space, a quote or a bracket (a
        // `\` is a path's `/` to a browser).
        let len = tail
            .find(|c: char| {
                matches!(
                    c,
                    '/' | '\\' | '?' | '#' | '"' | '\'' | '`' | ']' | '}' | '>' | ','
                ) || c.is_whitespace()
            })
            .unwrap_or(tail.len());
        if let Some(user_end) = tail.get(..len).and_then(|a| a.rfind('@')) {
            let shown = out.get_or_insert_with(|| String::with_capacity(text.len()));
            shown.push_str(text.get(copied..start).unwrap_or_default());
            shown.push_str(REDACTED);
            copied = start + user_end;
        }
        from = start + len;
    }
    match out {
        Some(mut shown) => {
            shown.push_str(text.get(copied..).unwrap_or_default());
            Cow::Owned(shown)
        }
        None => Cow::Borrowed(text),
    }
}

/// Where the next authority in `bytes` at or after `from` starts (see
/// [`without_userinfo`]). Every candidate is after `from`, so a caller
/// that goes on from the authority's end scans each byte a bounded number
/// of times. Hand-written: a URL parser finds no URL inside text.
fn next_authority(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        let i = at
            + bytes
                .get(at..)?
                .iter()
                .position(|b| matches!(b, b':' | b'/'))?;
        at = i + 1;
        let after = bytes.get(i + 1).copied();
        if bytes.get(i) == Some(&b':') {
            if is_web_scheme(bytes.get(..i).unwrap_or_default()) {
                let slashes = bytes
                    .get(i + 1..)
                    .unwrap_or_default()
                    .iter()
                    .take_while(|b| matches!(b, b'/' | b'\\'))
                    .count();
                return Some(i + 1 + slashes);
            }
            if bytes.get(i + 1..i + 3) == Some(b"//".as_slice()) {
                return Some(i + 3);
            }
            continue;
        }
        // A scheme-relative `//authority`, where a value or a word starts.
        let before = i.checked_sub(1).and_then(|j| bytes.get(j));
        if after == Some(b'/')
            && before.is_none_or(|b| {
                matches!(b, b'=' | b'<' | b'"' | b'\'' | b'`') || b.is_ascii_whitespace()
            })
        {
            return Some(i + 2);
        }
    }
}

/// Whether `head` ends with the scheme `http` or `https` (any case), as a
/// whole word: the schemes whose URLs browsers read leniently.
fn is_web_scheme(head: &[u8]) -> bool {
    let scheme_byte = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.');
    // At most six bytes back: a longer word is no `http(s)`.
    let len = head
        .iter()
        .rev()
        .take(6)
        .take_while(|b| scheme_byte(b))
        .count();
    let scheme = head.get(head.len() - len..).unwrap_or_default();
    scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https")
}

/// Whether `value` parses as an absolute URL (`scheme://…`, the scheme as
/// RFC 3986 spells one) or an origin-form path (`/…`): no spaces or
/// control characters. Hand-written: the `url` crate would parse (and
/// allocate) every header value with a `?`, and only this shape matters.
fn is_url(value: &str) -> bool {
    if value.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return false;
    }
    if value.starts_with('/') {
        return true;
    }
    let Some((scheme, _)) = value.split_once("://") else {
        return false;
    };
    let mut bytes = scheme.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// Whether a header or query parameter name says it carries a credential:
/// one of its words (split at `-`, `_` and `.`) holds `token`, `secret`,
/// `passw`, `credential`, `apikey`, `session`, `cookie`, `jwt`, `csrf`,
/// `xsrf`, `authent`, `hmac` or `passcode`, or is `auth`, `authorization`,
/// `key`, `pass`, `pwd`, `pin`, `sig`, `signature`, `otp`, `bearer`, `sid`
/// or `authn`.
pub fn is_credential_name(name: &str) -> bool {
    // Header names arrive in lower case; only a config's names may not.
    let lower: Cow<'_, str> = if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    };
    lower.split(['-', '_', '.']).any(|word| {
        CREDENTIAL_WHOLE_WORDS.contains(&word)
            || word.char_indices().any(|(at, c)| {
                // A word rarely starts where one of them could.
                CREDENTIAL_WORDS.iter().any(|w| {
                    w.starts_with(c) && word.get(at..).is_some_and(|rest| rest.starts_with(w))
                })
            })
    })
}

/// Whether `value` looks like a credential: it starts with an HTTP
/// authentication scheme and a credential (`Bearer …`, `Basic …`), or one
/// of its words is a compact JWS/JWE or a cloud access key.
pub fn is_secret_value(value: &str) -> bool {
    may_hold_secret(value)
        && (starts_with_scheme(value) || words(value).any(|(_, word)| is_secret_word(word)))
}

/// Whether a word standing alone where a name or a value goes (a bare
/// query item `?…`, a path parameter) looks like a secret: it does by
/// [`is_secret_value`], or it is a long opaque token: 16 or more hex digits
/// with letters and digits (`0123456789abcdef…`), or 20 or more base64
/// characters (letters, digits, `+`, `/`, `-`, `_`, `=`) with upper- and
/// lower-case letters and digits. Ordinary flags and words (`debug`, `v2`,
/// `utm_campaign_2024`) are none.
pub fn looks_secret(word: &str) -> bool {
    is_opaque_token(word) || is_secret_value(word)
}

/// See [`looks_secret`].
fn is_opaque_token(word: &str) -> bool {
    let bytes = word.as_bytes();
    if bytes.len() < MIN_SECRET_WORD {
        return false;
    }
    let digit = bytes.iter().any(u8::is_ascii_digit);
    let hex = bytes.iter().all(u8::is_ascii_hexdigit);
    if hex {
        return digit && bytes.iter().any(u8::is_ascii_alphabetic);
    }
    bytes.len() >= 20
        && digit
        && bytes.iter().any(u8::is_ascii_uppercase)
        && bytes.iter().any(u8::is_ascii_lowercase)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_' | b'='))
}

/// `Scheme credentials`, the scheme one of [`AUTH_SCHEMES`].
fn starts_with_scheme(value: &str) -> bool {
    let value = value.trim_start();
    value.split_once(' ').is_some_and(|(scheme, rest)| {
        !rest.trim().is_empty() && AUTH_SCHEMES.iter().any(|s| s.eq_ignore_ascii_case(scheme))
    })
}

/// Whether `b` is a byte of a token or a key: a letter, a digit, `-`,
/// `_`, `.` or `~` (all ASCII, so a run of them is whole characters).
fn is_word_byte(b: u8) -> bool {
    // A table: values are scanned on every audit record, and this is one
    // load a byte (the bound is known, so `get` costs no check). Indexing
    // is evaluated at compile time here, where it cannot panic.
    #[allow(clippy::indexing_slicing)]
    static WORD_BYTES: [bool; 256] = {
        let mut table = [false; 256];
        let mut b = 0u8;
        loop {
            table[b as usize] = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~');
            if b == u8::MAX {
                break;
            }
            b += 1;
        }
        table
    };
    WORD_BYTES.get(usize::from(b)).copied().unwrap_or(false)
}

/// The runs of [`is_word_byte`]s in `text`, with their byte offsets.
fn words(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let bytes = text.as_bytes();
    let mut at = 0;
    std::iter::from_fn(move || {
        let start = at + bytes.get(at..)?.iter().position(|b| is_word_byte(*b))?;
        let len = bytes
            .get(start..)?
            .iter()
            .position(|b| !is_word_byte(*b))
            .unwrap_or(bytes.len() - start);
        at = start + len;
        Some((start, text.get(start..at)?))
    })
}

/// Whether `text` may hold a credential at all: a word as long as the
/// shortest one, or a space (after which a scheme's credential may
/// follow). Most values hold neither, and cost one pass over their bytes.
fn may_hold_secret(text: &str) -> bool {
    let bytes = text.as_bytes();
    // `contains` on bytes is memchr: a word at a time.
    if bytes.contains(&b' ') {
        return true;
    }
    if bytes.len() < MIN_SECRET_WORD {
        return false;
    }
    let mut run = 0;
    for &b in bytes {
        run = if is_word_byte(b) { run + 1 } else { 0 };
        if run >= MIN_SECRET_WORD {
            return true;
        }
    }
    false
}

/// Whether one word is a compact JWS/JWE or an access key.
fn is_secret_word(word: &str) -> bool {
    if word.len() < MIN_SECRET_WORD {
        return false;
    }
    // A sentence's full stop is not part of a key; an unsecured JWT's
    // empty signature leaves one that is.
    let trimmed = word.trim_end_matches('.');
    is_key(trimmed) || is_jose(word) || is_jose(trimmed)
}

fn is_key(word: &str) -> bool {
    let aws = word.len() == 20
        && AWS_KEY_ID_PREFIXES.iter().any(|p| word.starts_with(p))
        && word
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    aws || KEY_PREFIXES
        .iter()
        .any(|(prefix, min)| word.len() >= *min && word.starts_with(prefix))
}

/// Three (JWS) or five (JWE) base64url segments, the first decoding to a
/// JSON object: a JOSE header.
fn is_jose(word: &str) -> bool {
    let dots = word.bytes().filter(|b| *b == b'.').count();
    if dots != 2 && dots != 4 {
        return false;
    }
    let Some(header) = word.split('.').next() else {
        return false;
    };
    if header.len() < 4 || header.len() > 8192 {
        return false;
    }
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(header) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes).is_ok()
}

/// `value` as it stands inside a quoted string in a message: escaped as
/// `{:?}` escapes it (CEL's and celador's messages quote values so).
fn escaped(value: &str) -> Cow<'_, str> {
    if value
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
    {
        return Cow::Borrowed(value);
    }
    let debug = format!("{value:?}");
    match debug.get(1..debug.len().saturating_sub(1)) {
        Some(inner) if inner != value => Cow::Owned(inner.to_owned()),
        _ => Cow::Borrowed(value),
    }
}

/// `text` with every credential-like word, every credential after an
/// authentication scheme and every occurrence of `secrets` replaced.
fn scrub<'t>(text: &'t str, secrets: &[Cow<'_, str>]) -> Cow<'t, str> {
    if secrets.is_empty() && !may_hold_secret(text) {
        return Cow::Borrowed(text);
    }
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut after_scheme = false;
    for (start, word) in words(text) {
        if after_scheme || is_secret_word(word) {
            spans.push((start, start + word.len()));
        }
        after_scheme = AUTH_SCHEMES.iter().any(|s| s.eq_ignore_ascii_case(word))
            && text
                .get(start + word.len()..)
                .is_some_and(|t| t.starts_with(' '));
    }
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        // As CEL and `{:?}` write it; a short value only where it stands
        // quoted, a longer one wherever it stands.
        let inner = escaped(secret);
        let quoted = format!("\"{inner}\"");
        let (needle, inside) = if secret.len() >= 6 {
            (inner.as_ref(), 0)
        } else {
            (quoted.as_str(), 1)
        };
        let mut from = 0;
        while let Some(at) = text.get(from..).and_then(|t| t.find(needle)) {
            let start = from + at;
            spans.push((start + inside, start + needle.len() - inside));
            from = start + needle.len();
        }
    }
    if spans.is_empty() {
        return Cow::Borrowed(text);
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in spans {
        if end <= at {
            continue;
        }
        out.push_str(text.get(at..start.max(at)).unwrap_or_default());
        out.push_str(REDACTED);
        at = end;
    }
    out.push_str(text.get(at..).unwrap_or_default());
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JWT-SVID as a SPIRE agent issues one (header `{"alg":"ES256",
    /// "kid":"k1","typ":"JWT"}`), signature made up.
    const JWT: &str = "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJzdWIiOiJzcGlmZmU6Ly9leGFtcGxlLm9yZy9hZ2VudCIsImF1ZCI6WyJwYXltZW50cyJdLCJleHAiOjE5MDAwMDAwMDB9.c2lnbmF0dXJl";

    #[test]
    fn credential_shaped_values_are_secret_wherever_they_stand() {
        for secret in [
            JWT.to_owned(),
            format!("Bearer {JWT}"),
            "bearer opaque-token".to_owned(),
            "Basic dXNlcjpodW50ZXIy".to_owned(),
            "Digest username=\"a\", response=\"b\"".to_owned(),
            "Negotiate YIIGhgYJKoZIhvcSAQICAQBuggZ1MIIGcaADAgEF".to_owned(),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request"
                .to_owned(),
            "AKIAIOSFODNN7EXAMPLE".to_owned(),
            "ASIAY34FZKBOKMUTVV7A".to_owned(),
            "ghp_16C7e42F292c6912E7710c838347Ae178B4a".to_owned(),
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz".to_owned(),
            "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy".to_owned(),
            "AIzaSyA1234567890abcdefghijklmnopqrstu".to_owned(),
            "glpat-xxxxxxxxxxxxxxxxxxxx".to_owned(),
            "ya29.a0AfH6SMBx1234567890abcdef".to_owned(),
            // Inside a longer value: a cookie, a JSON blob, a list.
            format!("id=1; session={JWT}; theme=dark"),
            format!("{{\"token\":\"{JWT}\"}}"),
            "keys: AKIAIOSFODNN7EXAMPLE, other".to_owned(),
        ] {
            assert!(is_secret_value(&secret), "{secret}");
        }
        for plain in [
            "",
            "curl/8.5.0",
            "acme",
            "application/json",
            "report.2024.csv",
            "a.b.c",
            "eyJub3QganNvbg.e30.x", // a header that is not a JSON object
            "AKIAIOSFODNN7EXAMPL",  // 19 characters: not an AWS key id
            "akiaiosfodnn7example",
            "Bearer",
            "Basic ",
            "text/html, Bearer-like",
            "8d5c0b4e-1f2a-4b3c-9d8e-7f6a5b4c3d2e",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert!(!is_secret_value(plain), "{plain}");
        }
    }

    #[test]
    fn user_information_in_urls_is_hidden() {
        assert_eq!(
            without_userinfo("  store: REDIS://:hunter2@redis:6379/0"),
            "  store: REDIS://<redacted>@redis:6379/0"
        );
        assert_eq!(
            without_userinfo("a: \"https://u:p@h/x\", b: redis://h:1/0 c@d"),
            "a: \"https://<redacted>@h/x\", b: redis://h:1/0 c@d"
        );
        assert_eq!(
            without_userinfo("mail: ops@example.org"),
            "mail: ops@example.org"
        );
        // Nothing to hide: nothing copied.
        assert!(matches!(
            without_userinfo("see redis://h:1/0 or ops@example.org"),
            Cow::Borrowed(_)
        ));
    }

    /// A URL without a scheme (`//user:pass@host`), and an `http(s)` one
    /// written as browsers still read it (`https:\\…`, `https:/…`,
    /// `https:user@…`), loses its user information too.
    #[test]
    fn user_information_without_a_scheme_or_its_slashes_is_hidden() {
        for (text, shown) in [
            ("//user:s3cr3t@host/x", "//<redacted>@host/x"),
            (
                "url=//user:s3cr3t@host/x?y=1",
                "url=//<redacted>@host/x?y=1",
            ),
            ("<//user:s3cr3t@host/x;a=1>", "<//<redacted>@host/x;a=1>"),
            ("r: '//u:s3cr3t@h'", "r: '//<redacted>@h'"),
            (
                "https:\\\\user:s3cr3t@host\\x?a",
                "https:\\\\<redacted>@host\\x?a",
            ),
            ("https:/u:s3cr3t@h/?a", "https:/<redacted>@h/?a"),
            ("https:u:s3cr3t@h/?a", "https:<redacted>@h/?a"),
            ("x HTTP:///u:s3cr3t@h", "x HTTP:///<redacted>@h"),
        ] {
            assert_eq!(without_userinfo(text), shown, "{text}");
        }
        // A path's `//`, an address, another scheme without slashes and a
        // word ending in `http` keep theirs.
        for text in [
            "a/b//c@d",
            "ops@example.org",
            "mailto:ops@example.org",
            "xhttp:u@h",
            "time: 12:30 ops@h",
        ] {
            assert!(matches!(without_userinfo(text), Cow::Borrowed(_)), "{text}");
        }
        // A header's value (its query shown as a query is).
        let r = Redaction::default();
        for (name, value) in [
            ("referer", "//user:s3cr3t@host/x"),
            ("x-note", "url=//user:s3cr3t@host/x?y=1"),
            ("link", "<//user:s3cr3t@host/x;a=1>"),
            ("referer", "https:\\\\user:s3cr3t@host\\x?a"),
            ("x-note", "go https:u:s3cr3t@h/?a"),
        ] {
            let shown = r.header_value(name, value);
            assert!(
                shown.contains("<redacted>@h") && !shown.contains("s3cr3t"),
                "{value}: {shown}"
            );
        }
        // Linear on adversarial input: many candidates, one `@`.
        let long = format!("{}@", "https:".repeat(200_000));
        let started = std::time::Instant::now();
        let _ = without_userinfo(&long);
        let long = format!("{}@", " //".repeat(200_000));
        let _ = without_userinfo(&long);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn credential_headers_by_name_and_by_the_configured_token_header() {
        let r = Redaction::default().hiding_header("X-JWT-SVID");
        for name in [
            "authorization",
            "proxy-authorization",
            "cookie",
            "set-cookie",
            "x-api-key",
            "x-amz-security-token",
            "x-jwt-svid",
            "x-session-id",
            "x-auth-user",
            "x-client-secret",
            "x-my-service-token",
            "x-hub-signature-256",
            "x-authentication",
            "x-authn",
            "x-passcode",
            "x-shopify-hmac-sha256",
        ] {
            assert!(r.is_secret_header(name), "{name}");
            assert_eq!(r.header(name, "plain"), REDACTED, "{name}");
        }
        for name in [
            "user-agent",
            ":authority",
            "x-tenant",
            "x-request-id",
            "traceparent",
            "content-type",
            "x-forwarded-for",
        ] {
            assert!(!r.is_secret_header(name), "{name}");
            assert_eq!(r.header(name, "plain"), "plain", "{name}");
            assert_eq!(r.header(name, &format!("Bearer {JWT}")), REDACTED, "{name}");
        }
    }

    #[test]
    fn query_values_are_shown_only_for_named_parameters_and_never_when_credential_shaped() {
        let r = Redaction::new(Vec::new(), ["page".to_owned(), "next".to_owned()]);
        assert_eq!(r.query_value("page", "2"), "2");
        assert_eq!(r.query_value("next", JWT), REDACTED);
        for (name, value) in [
            ("pass", "hunter2"),
            ("pwd", "hunter2"),
            ("jwt", JWT),
            (
                "x-amz-credential",
                "AKIAIOSFODNN7EXAMPLE/20260101/us-east-1/s3/aws4_request",
            ),
            ("day", "1"),
        ] {
            assert_eq!(r.query_value(name, value), REDACTED, "{name}");
        }
        assert_eq!(r.query_name("page"), "page");
        assert_eq!(r.query_name(JWT), REDACTED);
    }

    #[test]
    fn a_query_in_a_url_valued_header_is_redacted_as_the_path_query() {
        let r = Redaction::new(Vec::new(), ["page".to_owned()]);
        for (name, value, shown) in [
            (
                ":path",
                "/reset?token=s3cr3t",
                "/reset?token=%3Credacted%3E",
            ),
            (
                "referer",
                "https://app/cb?code=s3cr3t&page=2",
                "https://app/cb?code=%3Credacted%3E&page=2",
            ),
            (
                "location",
                "cb?code=s3cr3t#access_token=s3cr3t",
                "cb?code=%3Credacted%3E#access_token=%3Credacted%3E",
            ),
            (
                "location",
                "https://app/#access_token=s3cr3t&state=s3cr3t",
                "https://app/#access_token=%3Credacted%3E&state=%3Credacted%3E",
            ),
            // Any header whose value parses as a URL or a path.
            (
                "x-my-forwarded-url",
                "http://h:8080/a?b=s3cr3t",
                "http://h:8080/a?b=%3Credacted%3E",
            ),
            ("x-upstream-path", "/a/b?s3cr3t", "/a/b?s3cr3t"),
            // User information in a URL, and a name in another case.
            (
                "referer",
                "https://user:s3cr3t@app/cb?page=2",
                "https://<redacted>@app/cb?page=2",
            ),
            (
                "x-forwarded-url",
                "https://user:s3cr3t@app/",
                "https://<redacted>@app/",
            ),
            ("Referer", "cb?code=s3cr3t", "cb?code=%3Credacted%3E"),
            ("x-upstream-path", "/a/b?x=s3cr3t", "/a/b?x=%3Credacted%3E"),
            // What is no URL, and a URL without a query, stays.
            ("x-note", "why? s3cr3t", "why? s3cr3t"),
            ("x-note", "a?b=s3cr3t", "a?b=s3cr3t"),
            ("referer", "https://app/cb", "https://app/cb"),
            (
                "referer",
                "https://app/docs#intro",
                "https://app/docs#intro",
            ),
            ("user-agent", "curl/8.5.0", "curl/8.5.0"),
        ] {
            assert_eq!(r.header(name, value), shown, "{name}: {value}");
            assert_eq!(
                matches!(r.header(name, value), Cow::Borrowed(_)),
                value == shown
            );
        }
        // The allow-list is the path's: `page` is shown, a credential-shaped
        // value of it is not, and a credential header stays whole.
        assert_eq!(
            r.header("referer", &format!("/a?page={JWT}")),
            REDACTED,
            "a JWT makes the whole value one"
        );
        assert_eq!(r.header("cookie", "/a?page=2"), REDACTED);
        assert_eq!(r.query("page=2&code=x"), "page=2&code=%3Credacted%3E");
        assert!(holds_redaction(&r.header("referer", "/a?code=x")));
        // A message quoting such a value loses it whole.
        let headers: HashMap<String, String> =
            [("referer".to_owned(), "/cb?code=s3cr3t".to_owned())].into();
        let context = HashMap::new();
        let attrs = Attributes {
            headers: Cow::Owned(headers),
            ..attributes(&context)
        };
        assert_eq!(
            r.message("\"/cb?code=s3cr3t\" is not an IP address", &attrs),
            "\"<redacted>\" is not an IP address"
        );
        let shown = r.shown(&attrs);
        assert_eq!(
            shown.attributes().header("referer"),
            Some("/cb?code=%3Credacted%3E")
        );
    }

    #[test]
    fn credential_path_parameters_are_redacted_and_the_path_keeps_its_shape() {
        let r = Redaction::default();
        let hex = "0123456789ABCDEF0123456789ABCDEF";
        for (path, shown) in [
            (
                format!("/app;jsessionid={hex}/x"),
                "/app;jsessionid=%3Credacted%3E/x".to_owned(),
            ),
            (
                "/a;token=abc;v=1".to_owned(),
                "/a;token=%3Credacted%3E;v=1".to_owned(),
            ),
            (
                format!("/a;x={JWT}/b;{hex}"),
                "/a;x=%3Credacted%3E/b;%3Credacted%3E".to_owned(),
            ),
            (
                "/a;Session%5FId=abc/".to_owned(),
                "/a;Session%5FId=%3Credacted%3E/".to_owned(),
            ),
        ] {
            assert_eq!(r.path(&path), shown, "{path}");
            assert_eq!(path_parameters(&path), shown, "{path}");
        }
        // Ordinary parameters, and odd ones, stay as they are.
        for path in [
            "/a;v=1/b;color=red",
            "/a;token=",
            "/a;",
            ";",
            ";=",
            ";;=;",
            "/caf\u{e9};\u{1F980}=\u{e9}",
            "/no/parameters",
            "",
        ] {
            assert_eq!(r.path(path), path);
            assert!(matches!(r.path(path), Cow::Borrowed(_)), "{path}");
        }
        // In a URL-valued header, before its query.
        assert_eq!(
            r.header(":path", "/app;jsessionid=abc/x?page=2"),
            "/app;jsessionid=%3Credacted%3E/x?page=%3Credacted%3E"
        );
        assert_eq!(
            r.header("x-original-url", "https://h/app;jsessionid=abc"),
            "https://h/app;jsessionid=%3Credacted%3E"
        );
        // And in what outputs show of the request.
        let context = HashMap::new();
        let attrs = Attributes {
            path: Cow::Borrowed("/app;jsessionid=abc/x"),
            raw_path: "/app;jsessionid=abc/x",
            ..attributes(&context)
        };
        let shown = r.shown(&attrs);
        assert_eq!(shown.attributes().path, "/app;jsessionid=%3Credacted%3E/x");
        assert_eq!(
            shown.attributes().raw_path,
            "/app;jsessionid=%3Credacted%3E/x"
        );
    }

    #[test]
    fn a_bare_query_item_that_looks_like_a_secret_is_redacted_but_flags_are_not() {
        let r = Redaction::default();
        for (query, shown) in [
            ("0123456789abcdef0123456789abcdef", "%3Credacted%3E"),
            ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc", "%3Credacted%3E"),
            (
                "debug&Zm9vYmFyYmF6cXV4UXV1eDEyMzQ1Ng",
                "debug&%3Credacted%3E",
            ),
            (
                "0123456789abcdef0123456789abcdef=1&v2",
                "%3Credacted%3E=%3Credacted%3E&v2",
            ),
            ("debug&download&v2", "debug&download&v2"),
            ("utm_campaign_2024_spring", "utm_campaign_2024_spring"),
            (
                "8d5c0b4e-1f2a-4b3c-9d8e-7f6a5b4c3d2e",
                "8d5c0b4e-1f2a-4b3c-9d8e-7f6a5b4c3d2e",
            ),
            ("1700000000000000000", "1700000000000000000"),
            ("", ""),
            ("&&", "&&"),
            ("=", "=%3Credacted%3E"),
        ] {
            assert_eq!(r.query(query), shown, "{query}");
        }
        // Every query: a URL's in a header too.
        assert_eq!(
            r.header("referer", "https://app/cb?0123456789abcdef0123456789abcdef"),
            "https://app/cb?%3Credacted%3E"
        );
        assert_eq!(r.header("x-upstream-path", "/a/b?debug"), "/a/b?debug");
        assert_eq!(r.query_name("debug"), "debug");
        assert_eq!(r.query_name("0123456789abcdef0123456789abcdef"), REDACTED);
    }

    #[test]
    fn urls_inside_a_header_value_are_redacted_as_a_whole_url_is() {
        let r = Redaction::new(Vec::new(), ["page".to_owned()]);
        for (name, value, shown) in [
            (
                "link",
                "<https://api.example.org/items?page=2&token=s3cr3t>; rel=\"next\"",
                "<https://api.example.org/items?page=2&token=%3Credacted%3E>; rel=\"next\"",
            ),
            (
                "link",
                "</items?page=2&token=s3cr3t>; rel=\"next\", </items?page=1>; rel=\"prev\"",
                "</items?page=2&token=%3Credacted%3E>; rel=\"next\", </items?page=1>; rel=\"prev\"",
            ),
            (
                "refresh",
                "0; url=https://app/cb?code=s3cr3t",
                "0; url=https://app/cb?code=%3Credacted%3E",
            ),
            (
                "forwarded",
                "for=10.0.0.1;proto=https;url=https://h/a?t=s3cr3t, for=10.0.0.2",
                "for=10.0.0.1;proto=https;url=https://h/a?t=%3Credacted%3E, for=10.0.0.2",
            ),
            (
                "x-callback",
                "{\"next\":\"https://h/cb?code=s3cr3t#access_token=s3cr3t\",\"n\":1}",
                "{\"next\":\"https://h/cb?code=%3Credacted%3E#access_token=%3Credacted%3E\",\"n\":1}",
            ),
            (
                "x-note",
                "see https://u:s3cr3t@h/a;jsessionid=s3cr3t?x=s3cr3t, thanks",
                "see https://<redacted>@h/a;jsessionid=%3Credacted%3E?x=%3Credacted%3E, thanks",
            ),
            (
                "x-note",
                "a 'http://h/?a=s3cr3t' and \"ftp://h/?b=s3cr3t\";",
                "a 'http://h/?a=%3Credacted%3E' and \"ftp://h/?b=%3Credacted%3E\";",
            ),
            // A URL ends at `;` or `,` before a space or at the end.
            (
                "x-note",
                "https://h/?page=1,2&k=s3cr3t; more",
                "https://h/?page=1,2&k=%3Credacted%3E; more",
            ),
            (
                "x-note",
                "go to https://h/?k=s3cr3t,",
                "go to https://h/?k=%3Credacted%3E,",
            ),
        ] {
            assert_eq!(r.header(name, value), shown, "{name}: {value}");
            assert!(!r.header(name, value).contains("s3cr3t"), "{value}");
        }
        // What holds no URL, or a URL with nothing to hide, stays, borrowed.
        for value in [
            "text/html; charset=utf-8",
            "Mozilla/5.0 (X11; Linux x86_64)",
            "why? because",
            "a <b> c",
            "<https://h/items>; rel=\"next\"",
            "see https://h/a/b, thanks",
            "https://",
            "://?x=1",
            "1://?x=1",
            "<",
            "<>",
            "<?",
            "@",
            ";",
            "?",
            "?&&",
            "caf\u{e9} \u{1F980}; https://\u{e9}/\u{1F980}",
        ] {
            let shown = r.header("x-note", value);
            assert_eq!(shown, value);
            assert!(matches!(shown, Cow::Borrowed(_)), "{value}");
        }
        // Odd values never panic, and a redacted one is no longer than it
        // must be: each hidden value is the marker, nothing else is added.
        for value in [
            "<?a=1",
            "<?a=1>",
            "x://?",
            "x://?=",
            "x://#",
            "<;a=b>",
            "https://;=",
            "\u{1F980}://\u{e9}?\u{e9}=\u{e9}",
            "a:b://c?d",
            "<<x?y=1>>",
        ] {
            let shown = r.header("x-note", value);
            let markers = shown.matches(REDACTED_IN_QUERY).count();
            assert!(
                shown.len() <= value.len() + markers * REDACTED_IN_QUERY.len(),
                "{value} -> {shown}"
            );
        }
    }

    /// A `;name=` in a URL's user information is no path parameter: the
    /// user information is hidden whole, and only the path's parameters
    /// are read as such.
    #[test]
    fn user_information_with_a_semicolon_is_hidden_whole() {
        let r = Redaction::default();
        for (name, value, shown) in [
            (
                "x-original-url",
                "https://svc:Tr0ub4dor;key=3@db.internal/x",
                "https://<redacted>@db.internal/x",
            ),
            (
                "x-note",
                "redis://:s3cr3t;sig=1@h:6379/0",
                "redis://<redacted>@h:6379/0",
            ),
            (
                "x-note",
                "see imap://fred:s3cr3t;AUTH=PLAIN@mail.example.com/INBOX",
                "see imap://<redacted>@mail.example.com/INBOX",
            ),
            (
                "referer",
                "https://svc:p;token=abc@h/a;jsessionid=s3cr3t",
                "https://<redacted>@h/a;jsessionid=%3Credacted%3E",
            ),
            (
                "x-note",
                "<https://u:s3cr3t;k=1@h/x?code=s3cr3t>; rel=next",
                "<https://<redacted>@h/x?code=%3Credacted%3E>; rel=next",
            ),
        ] {
            assert_eq!(r.header(name, value), shown, "{name}: {value}");
        }
    }

    /// A `<` without its `>` ends no scan, and a quote, `<` or `>` inside
    /// a bare URL's query ends no URL: only the quote (or the `<`) right
    /// before a URL's start ends it.
    #[test]
    fn a_url_ends_only_where_its_opening_quote_or_bracket_closes() {
        let r = Redaction::default();
        for (name, value, shown) in [
            (
                "link",
                "<https://h/cb?code=s3cr3t",
                "<https://h/cb?code=%3Credacted%3E",
            ),
            (
                "x-note",
                "see <https://h/cb?code=s3cr3t",
                "see <https://h/cb?code=%3Credacted%3E",
            ),
            (
                "x-note",
                "see https://h/cb?state=it's&code=s3cr3t",
                "see https://h/cb?state=%3Credacted%3E&code=%3Credacted%3E",
            ),
            (
                "x-note",
                "see https://h/cb?state=\"q\"&code=s3cr3t",
                "see https://h/cb?state=%3Credacted%3E&code=%3Credacted%3E",
            ),
            (
                "x-note",
                "see https://h/cb?a=<b>&code=s3cr3t",
                "see https://h/cb?a=%3Credacted%3E&code=%3Credacted%3E",
            ),
            (
                "x-note",
                "<https://h/a?state=x'&code=s3cr3t>; rel=next",
                "<https://h/a?state=%3Credacted%3E&code=%3Credacted%3E>; rel=next",
            ),
            // Quoted or bracketed, the URL still ends at its closer.
            (
                "x-note",
                "a 'https://h/?a=\"1\"&b=2' \"https://h/?c=it's\" <https://h/?d=1 x>",
                "a 'https://h/?a=%3Credacted%3E&b=%3Credacted%3E' \"https://h/?c=%3Credacted%3E\" <https://h/?d=%3Credacted%3E x>",
            ),
        ] {
            assert_eq!(r.header(name, value), shown, "{name}: {value}");
        }
    }

    /// A path right after `=` (`refresh: 0; url=/cb?…`) is a URL in any
    /// header's value; a relative URL elsewhere in free text is not.
    #[test]
    fn a_path_after_an_equals_sign_is_a_url() {
        let r = Redaction::new(Vec::new(), ["page".to_owned()]);
        for (name, value, shown) in [
            (
                "refresh",
                "0; url=/cb?code=s3cr3t",
                "0; url=/cb?code=%3Credacted%3E",
            ),
            (
                "refresh",
                "0; URL='/cb?code=s3cr3t'",
                "0; URL='/cb?code=%3Credacted%3E'",
            ),
            (
                "x-note",
                "next=/cb?code=s3cr3t",
                "next=/cb?code=%3Credacted%3E",
            ),
            (
                "x-note",
                "url=/cb?code=s3cr3t; foo",
                "url=/cb?code=%3Credacted%3E; foo",
            ),
            (
                "x-note",
                "a=1; next=\"/a;jsessionid=s3cr3t?page=2\"; b=2",
                "a=1; next=\"/a;jsessionid=%3Credacted%3E?page=2\"; b=2",
            ),
        ] {
            assert_eq!(r.header(name, value), shown, "{name}: {value}");
        }
        // Not after `=`: no URL (free text is not parsed for paths).
        let value = "see cb?code=1 or /cb?code=2 later";
        assert!(matches!(r.header("x-note", value), Cow::Borrowed(v) if v == value));
    }

    /// Every value of up to four characters from the bytes the redaction
    /// acts on: no panic, a value with nothing to hide is returned as it
    /// is (borrowed), and a redacted one grows only by its markers.
    #[test]
    fn odd_values_never_panic_nor_grow_but_by_their_markers() {
        let r = Redaction::default();
        let alphabet = [
            ";", "=", "?", "&", "#", "@", "<", ">", ":", "/", "a", "\u{e9}", " ", ",",
        ];
        let mut values = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = values
                .iter()
                .filter(|v| v.chars().count() == values.last().map_or(0, |l| l.chars().count()))
                .flat_map(|v| alphabet.iter().map(move |c| format!("{v}{c}")))
                .collect();
            values.extend(longer);
        }
        let grown = |value: &str, shown: &str| {
            let markers = shown.matches(REDACTED_IN_QUERY).count() * REDACTED_IN_QUERY.len()
                + shown.matches(REDACTED).count() * REDACTED.len();
            shown.len() <= value.len() + markers
        };
        for value in &values {
            for shown in [
                r.header("x-note", value),
                r.header(":path", value),
                r.path(value),
            ] {
                assert!(grown(value, &shown), "{value:?} -> {shown:?}");
                if shown == value.as_str() {
                    assert!(matches!(shown, Cow::Borrowed(_)), "{value:?}");
                }
            }
            assert!(grown(value, &r.query(value)), "{value:?}");
        }
    }

    /// A request's attributes with nothing in them but `context`.
    fn attributes(context: &HashMap<String, String>) -> Attributes<'_> {
        Attributes {
            source_certificate: "",
            source_address: "",
            source_port: 0,
            destination_principal: "",
            destination_address: "",
            destination_port: 0,
            stream_id: "r1",
            method: "GET",
            path: Cow::Borrowed("/"),
            raw_path: "/",
            path_ambiguity: None,
            query: "",
            host: "h",
            scheme: "https",
            protocol: "HTTP/2",
            headers: Cow::Owned(HashMap::new()),
            size: -1,
            time: None,
            context,
        }
    }

    #[test]
    fn free_text_keeps_all_but_the_credential_words() {
        assert_eq!(
            text(&format!("/reset/{JWT}/confirm")),
            "/reset/<redacted>/confirm"
        );
        assert_eq!(text("/export/daily.csv"), "/export/daily.csv");
        assert!(matches!(text("/export/daily.csv"), Cow::Borrowed(_)));
        assert_eq!(
            text("\"Bearer abc.def\" is not an IP address"),
            "\"Bearer <redacted>\" is not an IP address"
        );
        assert_eq!(text("key AKIAIOSFODNN7EXAMPLE."), "key <redacted>");
        // A token's claims as the trail writes them: still JSON after.
        let claims = format!("{{\"sub\":\"spiffe://e.org/a\",\"act\":\"{JWT}\"}}");
        let shown = text(&claims);
        assert_eq!(
            shown,
            "{\"sub\":\"spiffe://e.org/a\",\"act\":\"<redacted>\"}"
        );
        assert!(serde_json::from_str::<serde_json::Value>(&shown).is_ok());
        assert_eq!(text("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."), "<redacted>");
    }

    #[test]
    fn a_message_loses_the_request_values_that_are_redacted() {
        let headers: HashMap<String, String> = [
            ("x-jwt-svid".to_owned(), "opaque-svid-value".to_owned()),
            ("x-tenant".to_owned(), "acme".to_owned()),
            ("x-api-key".to_owned(), "q\"uote\\d\u{e9}".to_owned()),
        ]
        .into();
        let context = HashMap::new();
        let attrs = Attributes {
            source_certificate: "",
            source_address: "",
            source_port: 0,
            destination_principal: "",
            destination_address: "",
            destination_port: 0,
            stream_id: "r1",
            method: "GET",
            path: Cow::Borrowed("/"),
            raw_path: "/",
            path_ambiguity: None,
            query: "pass=hunter2&pin=42&page=2",
            host: "h",
            scheme: "https",
            protocol: "HTTP/2",
            headers: Cow::Owned(headers),
            size: -1,
            time: None,
            context: &context,
        };
        let r = Redaction::default().hiding_header("x-jwt-svid");
        let shown = r.message(
            "\"opaque-svid-value\" is not an IP address; int(\"hunter2\"), String(\"42\") and 42 and \"acme\"",
            &attrs,
        );
        assert_eq!(
            shown,
            "\"<redacted>\" is not an IP address; int(\"<redacted>\"), String(\"<redacted>\") and 42 and \"acme\""
        );
        let quoting = format!("{:?} is not an IP address", "q\"uote\\d\u{e9}");
        assert_eq!(
            r.message(&quoting, &attrs),
            "\"<redacted>\" is not an IP address"
        );
        let shown = r.shown(&attrs);
        let attrs = shown.attributes();
        assert_eq!(attrs.header("x-jwt-svid"), Some(REDACTED));
        assert_eq!(attrs.header("x-tenant"), Some("acme"));
        assert_eq!(
            attrs.query,
            "pass=%3Credacted%3E&pin=%3Credacted%3E&page=%3Credacted%3E"
        );
        assert_eq!(percent::decode_lossy(REDACTED_IN_QUERY, true), REDACTED);
    }
}
