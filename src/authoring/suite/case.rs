//! One test case: an identity, a request and its context, as a rule author
//! writes it, and what turns it into the exact inputs `serve` would see.
//!
//! Data flow: a case becomes an engine [`Request`] (the fields of the
//! `CheckRequest` Envoy would send, without protobuf), whose attributes are
//! read as the edge reads Envoy's (the same split of path and query, the
//! same canonical path), plus the identities rules see as `source` and
//! `token`. Identities are taken as
//! given: a test checks rules, not credentials, so a certificate file is read
//! for its SPIFFE ID and validity, not verified against a bundle.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::engine::attributes::Request;
use crate::engine::identity::jwt::JwtSvid;
use crate::engine::identity::{SpiffeId, X509Svid};
use crate::engine::time;
use crate::engine::workload::Workload;

/// A case as written (every field optional, so that a suite's `defaults`
/// can fill it).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What the case shows.
    #[serde(default)]
    pub name: Option<String>,
    /// The SPIFFE ID of the peer's X.509-SVID (`source`).
    #[serde(default)]
    pub identity: Option<String>,
    /// A PEM certificate file whose SPIFFE ID and validity are the peer's,
    /// instead of `identity`.
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    /// The JWT-SVID (`token`).
    #[serde(default)]
    pub token: Option<TokenInput>,
    /// The request.
    #[serde(default)]
    pub request: RequestInput,
    /// The local end of the connection.
    #[serde(default)]
    pub destination: Option<DestinationInput>,
    /// Envoy's context extensions.
    #[serde(default)]
    pub context: BTreeMap<String, String>,
    /// The workload.
    #[serde(default)]
    pub workload: Option<WorkloadInput>,
    /// The time of evaluation (`now` and `request.time`), RFC 3339.
    #[serde(default)]
    pub time: Option<String>,
    /// The caller's behavioural signals (`signals`); every count 0 when
    /// absent.
    #[serde(default)]
    pub signals: Option<crate::engine::signals::Signals>,
    /// What should happen.
    #[serde(default)]
    pub expect: Option<Expect>,
}

/// The request of a case.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestInput {
    /// `GET` unless given.
    #[serde(default)]
    pub method: Option<String>,
    /// The path as the client sends it, with a query if any; `/` unless
    /// given. It is canonicalized, and an ambiguous one refused
    /// (`invalid_path`), as `serve` does by default.
    #[serde(default)]
    pub path: Option<String>,
    /// Query parameters, appended to the path's.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// `localhost` unless given.
    #[serde(default)]
    pub host: Option<String>,
    /// `https` unless given.
    #[serde(default)]
    pub scheme: Option<String>,
    /// `HTTP/1.1` unless given.
    #[serde(default)]
    pub protocol: Option<String>,
    /// Headers (names are lowercased).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The body size; -1 (unknown) unless given.
    #[serde(default)]
    pub size: Option<i64>,
    /// The request ID (`request.id`), sent as the `x-request-id` header as
    /// Envoy sends it; also the check's stream id.
    #[serde(default)]
    pub id: Option<String>,
    /// The peer's address, `10.0.0.1` or `10.0.0.1:5555`.
    #[serde(default)]
    pub source_address: Option<String>,
}

/// The local end of the connection.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationInput {
    /// `destination.principal`.
    #[serde(default)]
    pub principal: String,
    /// `destination.address`.
    #[serde(default)]
    pub address: String,
    /// `destination.port`.
    #[serde(default)]
    pub port: u32,
}

/// The workload of a case.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadInput {
    /// Its namespace.
    #[serde(default)]
    pub namespace: String,
    /// Its pod name.
    #[serde(default)]
    pub name: String,
    /// Its service account.
    #[serde(default)]
    pub service_account: String,
    /// Its labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Its annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// A JWT-SVID as a case gives it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenInput {
    /// Its SPIFFE ID (`sub`).
    pub id: String,
    /// Its `aud`.
    #[serde(default)]
    pub audience: Vec<String>,
    /// Its `exp`, RFC 3339; an hour after the case's time unless given.
    #[serde(default)]
    pub expires: Option<String>,
    /// Its other claims.
    #[serde(default)]
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// What a case expects.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `allow` or `deny`.
    pub decision: ExpectedDecision,
    /// The deciding rule, if the case cares which.
    #[serde(default)]
    pub rule: Option<String>,
    /// The reason, if the case cares: `allowed`, `denied_by_rule`,
    /// `rule_error`, `no_allow_rule`, `granted` or `invalid_path`.
    #[serde(default)]
    pub reason: Option<String>,
    /// The grant that allowed the request, or that deny rules saw, if the
    /// case cares which; `""` for none.
    #[serde(default)]
    pub grant: Option<String>,
}

/// An expected decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpectedDecision {
    /// Allowed.
    Allow,
    /// Denied.
    Deny,
}

/// Everything a rule sees for one case.
#[derive(Debug)]
pub struct Prepared {
    /// The request, as Envoy would send it.
    pub request: Request,
    /// The peer's identity.
    pub source: Option<X509Svid>,
    /// The JWT-SVID.
    pub token: Option<JwtSvid>,
    /// The workload.
    pub workload: Workload,
    /// The time of evaluation.
    pub now: SystemTime,
    /// The caller's signals.
    pub signals: crate::engine::signals::Signals,
}

impl Prepared {
    /// What rules see for this case, with the request read as `attrs`, and
    /// no grant yet.
    pub fn input<'a>(
        &'a self,
        attrs: &'a crate::engine::Attributes<'a>,
    ) -> crate::engine::policy::Input<'a> {
        crate::engine::policy::Input {
            source: self.source.as_ref(),
            token: self.token.as_ref(),
            attributes: attrs,
            workload: &self.workload,
            now: self.now,
            grant: None,
            signals: &self.signals,
        }
    }
}

impl Case {
    /// This case with `defaults` filling what it leaves out (maps merge,
    /// the case's entries winning).
    pub fn with_defaults(mut self, defaults: &Case) -> Case {
        fn fill<T: Clone>(field: &mut Option<T>, default: &Option<T>) {
            if field.is_none() {
                field.clone_from(default);
            }
        }
        fn merge(map: &mut BTreeMap<String, String>, default: &BTreeMap<String, String>) {
            for (k, v) in default {
                map.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        if self.identity.is_none() && self.certificate.is_none() {
            self.identity.clone_from(&defaults.identity);
            self.certificate.clone_from(&defaults.certificate);
        }
        fill(&mut self.token, &defaults.token);
        fill(&mut self.destination, &defaults.destination);
        fill(&mut self.workload, &defaults.workload);
        fill(&mut self.time, &defaults.time);
        fill(&mut self.signals, &defaults.signals);
        fill(&mut self.expect, &defaults.expect);
        merge(&mut self.context, &defaults.context);
        let (r, d) = (&mut self.request, &defaults.request);
        fill(&mut r.method, &d.method);
        fill(&mut r.path, &d.path);
        fill(&mut r.host, &d.host);
        fill(&mut r.scheme, &d.scheme);
        fill(&mut r.protocol, &d.protocol);
        fill(&mut r.size, &d.size);
        fill(&mut r.id, &d.id);
        fill(&mut r.source_address, &d.source_address);
        merge(&mut r.headers, &d.headers);
        merge(&mut r.query, &d.query);
        self
    }

    /// Builds the inputs; relative file names resolve against `base`.
    pub fn prepare(&self, base: &Path) -> Result<Prepared, String> {
        if self.identity.is_some() && self.certificate.is_some() {
            return Err("give either identity or certificate, not both".into());
        }
        let now = match &self.time {
            Some(t) => parse_time(t).map_err(|e| format!("time: {e}"))?,
            None => SystemTime::now(),
        };
        let source = match (&self.identity, &self.certificate) {
            (Some(id), _) => Some(X509Svid {
                id: SpiffeId::parse(id).map_err(|e| format!("identity {id:?}: {e}"))?,
                not_before: now - Duration::from_secs(3600),
                not_after: time::saturating_add(now, Duration::from_secs(3600)),
                chain_not_after: time::saturating_add(now, Duration::from_secs(3600)),
                certificate: Default::default(),
            }),
            (None, Some(file)) => Some(svid_from_file(&base.join(file))?),
            (None, None) => None,
        };
        let token = match &self.token {
            None => None,
            Some(t) => Some(token(t, now)?),
        };
        Ok(Prepared {
            request: self.request(now),
            source,
            token,
            workload: self
                .workload
                .as_ref()
                .map(WorkloadInput::workload)
                .unwrap_or_default(),
            now,
            signals: self.signals.clone().unwrap_or_default(),
        })
    }

    fn request(&self, now: SystemTime) -> Request {
        let r = &self.request;
        let mut path = r.path.clone().unwrap_or_else(|| "/".into());
        for (i, (k, v)) in r.query.iter().enumerate() {
            let separator = if i == 0 && !path.contains('?') {
                '?'
            } else {
                '&'
            };
            path.push(separator);
            path.push_str(&query_escape(k));
            path.push('=');
            path.push_str(&query_escape(v));
        }
        let since_epoch = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let (source_address, source_port) =
            r.source_address.as_deref().map(socket).unwrap_or_default();
        let (destination_principal, (destination_address, destination_port)) =
            match &self.destination {
                Some(d) => (
                    d.principal.clone(),
                    socket(&format!("{}:{}", d.address, d.port)),
                ),
                None => Default::default(),
            };
        Request {
            source_address,
            source_port,
            destination_principal,
            destination_address,
            destination_port,
            // As Envoy's timestamp would carry it.
            time: time::from_timestamp(
                i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
                i32::try_from(since_epoch.subsec_nanos()).unwrap_or(0),
            ),
            id: r.id.clone().unwrap_or_else(|| "test".into()),
            method: r.method.clone().unwrap_or_else(|| "GET".into()),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .chain(
                    r.id.iter()
                        .map(|id| ("x-request-id".to_owned(), id.clone())),
                )
                .collect(),
            path,
            host: r.host.clone().unwrap_or_else(|| "localhost".into()),
            scheme: r.scheme.clone().unwrap_or_else(|| "https".into()),
            size: r.size.unwrap_or(-1),
            protocol: r.protocol.clone().unwrap_or_else(|| "HTTP/1.1".into()),
            context: self.context.clone().into_iter().collect(),
            ..Request::default()
        }
    }
}

impl WorkloadInput {
    fn workload(&self) -> Workload {
        Workload {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            service_account: self.service_account.clone(),
            labels: self.labels.clone().into_iter().collect(),
            annotations: self.annotations.clone().into_iter().collect(),
        }
    }
}

/// An address as `ip:port` (`[ip]:port` for IPv6), as Envoy's socket
/// address carries it; without a port, the whole text and port 0.
fn socket(text: &str) -> (String, u32) {
    let (ip, port) = match text.rsplit_once(':') {
        Some((ip, port)) if !ip.is_empty() && port.parse::<u32>().is_ok() && !ip.ends_with(':') => {
            (ip.trim_matches(['[', ']']), port.parse().unwrap_or(0))
        }
        _ => (text, 0),
    };
    (ip.to_owned(), port)
}

fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An RFC 3339 time.
pub fn parse_time(text: &str) -> Result<SystemTime, String> {
    time::parse_rfc3339(text)
}

fn token(input: &TokenInput, now: SystemTime) -> Result<JwtSvid, String> {
    let id = SpiffeId::parse(&input.id).map_err(|e| format!("token.id {:?}: {e}", input.id))?;
    let expiry = match &input.expires {
        Some(t) => parse_time(t).map_err(|e| format!("token.expires: {e}"))?,
        None => time::saturating_add(now, Duration::from_secs(3600)),
    };
    let exp = expiry
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut claims = input.claims.clone();
    claims.insert("sub".into(), input.id.clone().into());
    claims.insert("aud".into(), input.audience.clone().into());
    claims.insert("exp".into(), exp.into());
    Ok(JwtSvid {
        id,
        audience: input.audience.clone(),
        expiry,
        claims,
    })
}

/// The SPIFFE ID and validity of a PEM certificate, unverified.
pub fn svid_from_file(path: &Path) -> Result<X509Svid, String> {
    use rustls_pki_types::pem::PemObject;
    let where_ = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("certificate {where_}: {e}"))?;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(&bytes)
        .map_err(|e| format!("certificate {where_}: not PEM: {e}"))?;
    svid_from_der(&der).map_err(|e| format!("certificate {where_}: {e}"))
}

/// The SPIFFE ID and validity of a DER certificate, unverified.
pub fn svid_from_der(der: &[u8]) -> Result<X509Svid, String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("not X.509: {e}"))?;
    let uris: Vec<&str> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::URI(u) => Some(*u),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let [uri] = uris.as_slice() else {
        return Err(format!(
            "an X.509-SVID has exactly one URI SAN, this has {}",
            uris.len()
        ));
    };
    let id = SpiffeId::parse(uri).map_err(|e| format!("URI SAN {uri:?}: {e}"))?;
    let not_after = time::from_asn1_seconds(cert.validity().not_after.timestamp());
    Ok(X509Svid {
        id,
        not_before: time::from_asn1_seconds(cert.validity().not_before.timestamp()),
        not_after,
        chain_not_after: not_after,
        certificate: crate::engine::identity::CertificateFacts::of(der, &cert),
    })
}
