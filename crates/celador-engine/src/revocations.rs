//! Live revocation: credentials that are denied at once, whatever the rules,
//! grants or cached decisions say.
//!
//! ```yaml
//! revocations:
//!   - spiffe_id: spiffe://example.org/ns/batch/sa/exporter
//!     reason: "INC-4712: key leaked"
//!   - spiffe_id_prefix: spiffe://example.org/ns/legacy     # a whole namespace
//!     reason: decommissioned
//!   - x509_sha256: 3f:a1:...                               # a leaf's fingerprint
//!     reason: stolen laptop
//!   - x509_serial: 0a:1b:2c
//!     issuer: CN=intermediate,O=example    # or `O = example, CN = intermediate`, `/O=example/CN=intermediate`
//!     reason: mis-issued
//!   - jwt_id: 4f1c2d                                        # a token's jti
//!     reason: replayed token
//!   - spiffe_id: spiffe://example.org/ns/ci/sa/deployer
//!     reason: "credential-compromise (SET c-1 from https://idp.example.com/)"
//!     set:                          # optional: the Security Event Token it came from
//!       source: https://idp.example.com/
//!       event: https://schemas.openid.net/secevent/risc/event-type/credential-compromise
//!       jti: c-1
//! ```
//!
//! Data flow: a watched revocations file is parsed here and published into
//! the live-state store; the engine checks every verified identity against
//! the snapshot's [`Revocations`] before rules, grants and the decision
//! cache. A file that does not parse keeps the last good list.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::decision::{Revoked, SecurityEvent};
use super::grant::Origin;
use super::identity::dn::DistinguishedName;
use super::identity::{Identity, SpiffeId, normalize_serial};
use super::policy::{Diagnostic, Severity};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevocationsFile {
    revocations: Vec<EntrySpec>,
}

/// One entry as written, each value with where it is in the file, so
/// that a problem points at the value at fault.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntrySpec {
    #[serde(default)]
    spiffe_id: Option<Spanned<String>>,
    #[serde(default)]
    spiffe_id_prefix: Option<Spanned<String>>,
    #[serde(default)]
    x509_sha256: Option<Spanned<String>>,
    #[serde(default)]
    x509_serial: Option<Spanned<String>>,
    #[serde(default)]
    issuer: Option<Spanned<String>>,
    #[serde(default)]
    jwt_id: Option<Spanned<String>>,
    reason: Spanned<String>,
    /// The Security Event Token it came from (`celador signals serve`).
    #[serde(default)]
    set: Option<SetSpec>,
}

/// `set:` of an entry: the Security Event Token it came from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetSpec {
    source: Spanned<String>,
    event: Spanned<String>,
    jti: Spanned<String>,
}

/// The longest value of an entry's `set` (bytes): it is written into every
/// audit record the entry decides. The receiver bounds what it writes to
/// it (a SET's `jti` is at most 256 bytes).
pub const MAX_SET_TEXT: usize = 512;

/// A problem with an entry, and the value it points at.
struct EntryProblem {
    at: serde_saphyr::Location,
    message: String,
}

/// A revocations file that cannot be loaded: every problem, each placed
/// at its line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RevocationsError {
    /// The errors, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

/// One line per problem, `FILE: MESSAGE` (as logs and the governance
/// store's refusals show it); [`Diagnostic`]'s own rendering adds the
/// line and a caret.
impl std::fmt::Display for RevocationsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}", d.file.display(), d.message)?;
        }
        Ok(())
    }
}

/// Why an entry revokes, where it came from, and the Security Event Token
/// that made it, if one did.
type Why = (Arc<str>, Origin, Option<Arc<SecurityEvent>>);

/// A loaded revocations file, or the revocations of a file and of the
/// fleet's store merged ([`Revocations::merged`]).
#[derive(Debug, Default, Clone)]
pub struct Revocations {
    ids: HashMap<String, Why>,
    prefixes: Vec<(String, Why)>,
    sha256: HashMap<String, Why>,
    /// By serial number: the issuers' names, and why.
    serials: HashMap<String, Vec<(DistinguishedName, Why)>>,
    jwt_ids: HashMap<String, Why>,
    entries: usize,
    version: Option<Arc<str>>,
    generation: u64,
}

impl Revocations {
    /// Parses the revocations in `text` (the file at `path`); every problem
    /// is reported at once, and the file is refused whole.
    pub fn parse(text: &str, path: &Path) -> Result<Revocations, RevocationsError> {
        let file: RevocationsFile = super::yaml::from_str(text, path).map_err(|e| {
            let at = (
                usize::try_from(e.line).unwrap_or(0),
                usize::try_from(e.column).unwrap_or(0),
            );
            RevocationsError {
                diagnostics: vec![error_at(text, path, at, e.message)],
            }
        })?;
        let mut out = Revocations {
            entries: file.revocations.len(),
            version: Some(super::policy::version_of(text)),
            generation: crate::generation::next(),
            ..Revocations::default()
        };
        let mut diagnostics = Vec::new();
        for (i, entry) in file.revocations.iter().enumerate() {
            if let Err(problem) = out.add(entry) {
                let message = format!(
                    "revocation {} (reason {:?}): {}",
                    i + 1,
                    entry.reason.value,
                    problem.message
                );
                let at = (
                    usize::try_from(problem.at.line()).unwrap_or(0),
                    usize::try_from(problem.at.column()).unwrap_or(0),
                );
                diagnostics.push(error_at(text, path, at, message));
            }
        }
        if diagnostics.is_empty() {
            Ok(out)
        } else {
            Err(RevocationsError { diagnostics })
        }
    }

    /// These revocations marked as coming from `origin`.
    pub fn with_origin(mut self, origin: Origin) -> Revocations {
        let all = self.ids.values_mut().chain(self.sha256.values_mut());
        let all = all.chain(self.jwt_ids.values_mut());
        let all = all.chain(self.prefixes.iter_mut().map(|(_, w)| w));
        let all = all.chain(self.serials.values_mut().flatten().map(|(_, w)| w));
        all.for_each(|why| why.1 = origin);
        self
    }

    /// Every entry of `first` and of `second` (revoked by either; where
    /// both name a credential, `first`'s entry is reported), with a new
    /// generation and the version `first+second`.
    pub fn merged(first: &Revocations, second: &Revocations) -> Revocations {
        let mut out = first.clone();
        for (k, v) in &second.ids {
            out.ids.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for (k, v) in &second.sha256 {
            out.sha256.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for (k, v) in &second.jwt_ids {
            out.jwt_ids.entry(k.clone()).or_insert_with(|| v.clone());
        }
        out.prefixes.extend(second.prefixes.iter().cloned());
        for (k, v) in &second.serials {
            out.serials
                .entry(k.clone())
                .or_default()
                .extend(v.iter().cloned());
        }
        out.entries = first.entries + second.entries;
        out.version = Some(Arc::from(format!(
            "{}+{}",
            first.version(),
            second.version()
        )));
        out.generation = crate::generation::next();
        out
    }

    fn add(&mut self, entry: &EntrySpec) -> Result<(), EntryProblem> {
        let problem = |at: &Spanned<String>, message: String| EntryProblem {
            at: at.referenced,
            message,
        };
        if entry.reason.value.trim().is_empty() {
            return Err(problem(&entry.reason, "`reason` is empty: say why".into()));
        }
        let set = entry.set.as_ref().map(security_event).transpose()?;
        let reason: Why = (
            Arc::from(entry.reason.value.as_str()),
            Origin::File,
            set.map(Arc::new),
        );
        let kinds = [
            &entry.spiffe_id,
            &entry.spiffe_id_prefix,
            &entry.x509_sha256,
            &entry.x509_serial,
            &entry.jwt_id,
        ];
        if kinds.iter().filter(|k| k.is_some()).count() != 1 {
            // At the second kind given, else at the reason (none given).
            let at = kinds.iter().filter_map(|k| k.as_ref()).nth(1);
            return Err(problem(at.unwrap_or(&entry.reason), "give exactly one of spiffe_id, spiffe_id_prefix, x509_sha256, x509_serial (with issuer) or jwt_id".into()));
        }
        if entry.issuer.is_some() != entry.x509_serial.is_some() {
            let at = entry.issuer.as_ref().or(entry.x509_serial.as_ref());
            return Err(problem(
                at.unwrap_or(&entry.reason),
                "`issuer` goes with `x509_serial`, and `x509_serial` needs it".into(),
            ));
        }
        self.add_kind(entry, reason)
    }

    /// Adds the one credential `entry` names (checked to name one).
    fn add_kind(&mut self, entry: &EntrySpec, reason: Why) -> Result<(), EntryProblem> {
        let problem = |at: &Spanned<String>, message: String| EntryProblem {
            at: at.referenced,
            message,
        };
        if let Some(id) = &entry.spiffe_id {
            SpiffeId::parse(&id.value)
                .map_err(|e| problem(id, format!("spiffe_id {:?}: {e}", id.value)))?;
            self.ids.insert(id.value.clone(), reason);
        } else if let Some(prefix) = &entry.spiffe_id_prefix {
            let id = prefix.value.trim_end_matches('/');
            SpiffeId::parse(id).map_err(|e| {
                problem(prefix, format!("spiffe_id_prefix {:?}: {e}", prefix.value))
            })?;
            self.prefixes.push((id.to_owned(), reason));
        } else if let Some(sha) = &entry.x509_sha256 {
            let hex: String = sha
                .value
                .chars()
                .filter(|c| *c != ':')
                .map(|c| c.to_ascii_lowercase())
                .collect();
            if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(problem(
                    sha,
                    format!(
                        "x509_sha256 {:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed)",
                        sha.value
                    ),
                ));
            }
            self.sha256.insert(hex, reason);
        } else if let (Some(serial), Some(issuer)) = (&entry.x509_serial, &entry.issuer) {
            let digits = &serial.value;
            if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
                return Err(problem(
                    serial,
                    format!("x509_serial {digits:?} is not hex"),
                ));
            }
            let dn = DistinguishedName::parse(&issuer.value).map_err(|e| {
                problem(issuer, format!(
                    "issuer {:?} is not a distinguished name ({e}); write it as RFC 4514 (`CN=ca,O=example`), OpenSSL's oneline (`O = example, CN = ca`) or slash form (`/O=example/CN=ca`)",
                    issuer.value
                ))
            })?;
            self.serials
                .entry(normalize_serial(digits))
                .or_default()
                .push((dn, reason));
        } else if let Some(jti) = &entry.jwt_id {
            self.jwt_ids.insert(jti.value.clone(), reason);
        }
        Ok(())
    }

    /// How many entries the file has.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Whether nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The first 16 hex digits of the SHA-256 of the file; `none` without
    /// a revocations file.
    pub fn version(&self) -> &str {
        self.version.as_deref().unwrap_or("none")
    }

    /// A number unique to this load, for caches to key on.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The entry that revokes a credential of `identity`, if any.
    pub fn check(&self, identity: &Identity) -> Option<Revoked> {
        if self.entries == 0 {
            return None;
        }
        let hit = |entry: String, (reason, origin, set): &Why| Revoked {
            entry,
            reason: Arc::clone(reason),
            origin: *origin,
            set: set.clone(),
        };
        let ids = [
            identity.source.as_ref().map(|s| s.id.as_str()),
            identity.token.as_ref().map(|t| t.id.as_str()),
        ];
        for id in ids.into_iter().flatten() {
            if let Some(reason) = self.ids.get(id) {
                return Some(hit(format!("spiffe_id: {id}"), reason));
            }
            if let Some((prefix, reason)) = self.prefixes.iter().find(|(p, _)| {
                id == p
                    || id
                        .strip_prefix(p.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            }) {
                return Some(hit(format!("spiffe_id_prefix: {prefix}"), reason));
            }
        }
        if let Some(svid) = &identity.source {
            let facts = &svid.certificate;
            if let Some(reason) = self.sha256.get(&facts.sha256) {
                return Some(hit(format!("x509_sha256: {}", facts.sha256), reason));
            }
            if let Some((_, reason)) = self.serials.get(&facts.serial).and_then(|issuers| {
                issuers
                    .iter()
                    .find(|(issuer, _)| *issuer == facts.issuer_dn)
            }) {
                return Some(hit(
                    format!("x509_serial: {} issuer: {}", facts.serial, facts.issuer),
                    reason,
                ));
            }
        }
        if let Some(jti) = identity
            .token
            .as_ref()
            .and_then(|t| t.claims.get("jti"))
            .and_then(|v| v.as_str())
            && let Some(reason) = self.jwt_ids.get(jti)
        {
            return Some(hit(format!("jwt_id: {jti}"), reason));
        }
        None
    }
}

/// The Security Event Token `spec` names: each value non-empty, at most
/// [`MAX_SET_TEXT`] bytes, without control characters (it goes into audit
/// records and logs as it is).
fn security_event(spec: &SetSpec) -> Result<SecurityEvent, EntryProblem> {
    for (name, value) in [
        ("source", &spec.source),
        ("event", &spec.event),
        ("jti", &spec.jti),
    ] {
        let text = &value.value;
        let why = if text.trim().is_empty() {
            "is empty".to_owned()
        } else if text.len() > MAX_SET_TEXT {
            format!("is {} bytes; at most {MAX_SET_TEXT}", text.len())
        } else if text.chars().any(char::is_control) {
            "holds a control character".to_owned()
        } else {
            continue;
        };
        return Err(EntryProblem {
            at: value.referenced,
            message: format!("set.{name} {why}"),
        });
    }
    Ok(SecurityEvent {
        source: spec.source.value.clone(),
        event: spec.event.value.clone(),
        jti: spec.jti.value.clone(),
    })
}

/// An error at 1-based `(line, column)` of `text` (0: unknown).
fn error_at(text: &str, path: &Path, at: (usize, usize), message: String) -> Diagnostic {
    Diagnostic::at(text, path, Severity::Error, at, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{CertificateFacts, X509Svid};
    use std::time::SystemTime;

    fn source(id: &str, facts: CertificateFacts) -> Identity {
        Identity {
            source: Some(Arc::new(X509Svid {
                id: SpiffeId::parse(id).unwrap(),
                not_before: SystemTime::UNIX_EPOCH,
                not_after: SystemTime::UNIX_EPOCH,
                chain_not_after: SystemTime::UNIX_EPOCH,
                certificate: facts,
            })),
            ..Identity::default()
        }
    }

    #[test]
    fn each_kind_of_entry_revokes_what_it_names_and_nothing_else() {
        let r = Revocations::parse(
            "revocations:\n  - spiffe_id: spiffe://e.org/a\n    reason: one\n  - spiffe_id_prefix: spiffe://e.org/ns/legacy/\n    reason: ns\n  - x509_sha256: \"AB:\"\n    reason: bad\n",
            Path::new("r.yaml"),
        );
        assert!(r.unwrap_err().to_string().contains("revocation 3"));
        let sha = "ab".repeat(32);
        let text = format!(
            "revocations:\n  - spiffe_id: spiffe://e.org/a\n    reason: one\n  - spiffe_id_prefix: spiffe://e.org/ns/legacy/\n    reason: ns\n  - x509_sha256: \"{sha}\"\n    reason: fp\n  - x509_serial: \"00:0A:1b\"\n    issuer: \"CN=ca, O=e\"\n    reason: serial\n"
        );
        let r = Revocations::parse(&text, Path::new("r.yaml")).unwrap();
        assert_eq!(r.len(), 4);
        let none = CertificateFacts::default();
        let reason = |id: &str, facts: CertificateFacts| {
            r.check(&source(id, facts)).map(|h| h.reason.to_string())
        };
        assert_eq!(
            reason("spiffe://e.org/a", none.clone()).as_deref(),
            Some("one")
        );
        assert_eq!(reason("spiffe://e.org/a/b", none.clone()), None);
        assert_eq!(
            reason("spiffe://e.org/ns/legacy/sa/x", none.clone()).as_deref(),
            Some("ns")
        );
        assert_eq!(reason("spiffe://e.org/ns/legacy2/sa/x", none.clone()), None);
        let fp = CertificateFacts {
            sha256: sha.clone(),
            ..Default::default()
        };
        assert_eq!(reason("spiffe://e.org/z", fp).as_deref(), Some("fp"));
        let issued_by = |issuer: &str| CertificateFacts {
            serial: "a1b".into(),
            issuer_dn: DistinguishedName::parse(issuer).unwrap(),
            ..Default::default()
        };
        assert_eq!(
            reason("spiffe://e.org/z", issued_by("CN=ca,O=e")).as_deref(),
            Some("serial")
        );
        assert_eq!(
            reason("spiffe://e.org/z", issued_by("O=e, CN=ca")).as_deref(),
            Some("serial")
        );
        assert_eq!(reason("spiffe://e.org/z", issued_by("CN=other")), None);
    }

    /// A leaf of a root named `C=US, O=SPIFFE acceptance, CN=example.org
    /// SPIFFE root CA`, verified: its identity and its serial number.
    fn verified_leaf() -> (Identity, String) {
        use crate::identity::bundle::{TrustBundles, parse_pem};
        use crate::identity::verified::CacheSettings;
        use crate::identity::x509::X509Verifier;
        use crate::testing::pki::Ca;
        use rcgen::DnType;
        let ca = Ca::root_named(&[
            (DnType::CountryName, "US".into()),
            (DnType::OrganizationName, "SPIFFE acceptance".into()),
            (DnType::CommonName, "example.org SPIFFE root CA".into()),
        ]);
        let bundle = parse_pem(ca.pem.as_bytes(), Path::new("ca.pem")).unwrap();
        let bundles = TrustBundles::from_domains([("example.org".to_owned(), bundle)]);
        let leaf = ca.svid("spiffe://example.org/ns/batch/sa/exporter");
        let (svid, _) = X509Verifier::new(CacheSettings::default())
            .verify_uncached(&leaf.envoy_encoded(), None, &bundles, SystemTime::now())
            .unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf.der).unwrap();
        let identity = Identity {
            source: Some(Arc::new(svid)),
            ..Identity::default()
        };
        (identity, cert.raw_serial_as_string())
    }

    #[test]
    fn an_issuer_in_each_written_form_matches_a_real_certificate() {
        let (identity, serial) = verified_leaf();
        for issuer in [
            // RFC 4514, last RDN first.
            "CN=example.org SPIFFE root CA,O=SPIFFE acceptance,C=US",
            // OpenSSL's oneline form, as `openssl x509 -issuer` prints it.
            "C = US, O = SPIFFE acceptance, CN = example.org SPIFFE root CA",
            // OpenSSL's slash form: the finding of issue 19.
            "/C=US/O=SPIFFE acceptance/CN=example.org SPIFFE root CA",
            // Case and white space do not matter; OIDs name types.
            "cn=Example.org  SPIFFE Root CA, 2.5.4.10=spiffe acceptance, countryName=us",
        ] {
            let text = format!(
                "revocations:\n  - x509_serial: \"{serial}\"\n    issuer: \"{issuer}\"\n    reason: mis-issued\n"
            );
            let r = Revocations::parse(&text, Path::new("r.yaml")).unwrap();
            let hit = r
                .check(&identity)
                .unwrap_or_else(|| panic!("{issuer} did not match"));
            assert_eq!(&*hit.reason, "mis-issued");
            assert!(hit.entry.starts_with("x509_serial: "), "{}", hit.entry);
        }
        for issuer in [
            "/O=SPIFFE acceptance/CN=example.org SPIFFE root CA",
            "CN=example.org SPIFFE root CA,O=another,C=US",
        ] {
            let text = format!(
                "revocations:\n  - x509_serial: \"{serial}\"\n    issuer: \"{issuer}\"\n    reason: x\n"
            );
            let r = Revocations::parse(&text, Path::new("r.yaml")).unwrap();
            assert!(r.check(&identity).is_none(), "{issuer} matched");
        }
    }

    #[test]
    fn an_issuer_that_is_not_a_distinguished_name_refuses_the_file_naming_the_entry() {
        let text = "revocations:\n  - spiffe_id: spiffe://e.org/a\n    reason: fine\n  - x509_serial: \"0a\"\n    issuer: example.org SPIFFE root CA\n    reason: typo\n  - x509_serial: \"0b\"\n    issuer: \"Organisation=Acme\"\n    reason: unknown type\n";
        let e = Revocations::parse(text, Path::new("r.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("r.yaml: revocation 2 (reason \"typo\"): issuer \"example.org SPIFFE root CA\" is not a distinguished name"),
            "{e}"
        );
        assert!(e.contains("revocation 3 (reason \"unknown type\")"), "{e}");
        assert!(e.contains("not an attribute type"), "{e}");
        assert!(!e.contains("revocation 1 "), "{e}");
    }

    #[test]
    fn merged_revocations_revoke_in_either_and_say_where_from() {
        let file = Revocations::parse(
            "revocations:\n  - spiffe_id: spiffe://e.org/a\n    reason: file\n",
            Path::new("r.yaml"),
        )
        .unwrap();
        let store = Revocations::parse(
            "revocations:\n  - spiffe_id: spiffe://e.org/a\n    reason: store\n  - spiffe_id_prefix: spiffe://e.org/ns/b\n    reason: ns\n",
            Path::new("store"),
        )
        .unwrap()
        .with_origin(Origin::Store);
        let merged = Revocations::merged(&file, &store);
        assert_eq!(merged.len(), 3);
        assert_ne!(merged.generation(), file.generation());
        let none = CertificateFacts::default();
        let hit = |id: &str| {
            merged
                .check(&source(id, none.clone()))
                .map(|h| (h.reason.to_string(), h.origin))
        };
        // Both name it: the file's entry is reported.
        assert_eq!(hit("spiffe://e.org/a"), Some(("file".into(), Origin::File)));
        assert_eq!(
            hit("spiffe://e.org/ns/b/sa/x"),
            Some(("ns".into(), Origin::Store))
        );
        assert_eq!(hit("spiffe://e.org/c"), None);
    }

    #[test]
    fn an_entry_names_the_security_event_it_came_from_and_one_without_still_loads() {
        let text = "revocations:\n  - spiffe_id: spiffe://e.org/a\n    reason: compromised\n    set:\n      source: https://idp.example.com/\n      event: https://schemas.openid.net/secevent/risc/event-type/credential-compromise\n      jti: c-1\n  - spiffe_id: spiffe://e.org/b\n    reason: by hand\n";
        let r = Revocations::parse(text, Path::new("r.yaml"))
            .unwrap()
            .with_origin(Origin::Store);
        let none = CertificateFacts::default();
        let a = r.check(&source("spiffe://e.org/a", none.clone())).unwrap();
        assert_eq!(a.origin, Origin::Store);
        assert_eq!(
            a.set.as_deref(),
            Some(&SecurityEvent {
                source: "https://idp.example.com/".into(),
                event: "https://schemas.openid.net/secevent/risc/event-type/credential-compromise"
                    .into(),
                jti: "c-1".into(),
            })
        );
        let b = r.check(&source("spiffe://e.org/b", none)).unwrap();
        assert_eq!(b.set, None);
    }

    #[test]
    fn a_malformed_set_refuses_its_entry_naming_the_value() {
        let entry = |set: &str| {
            format!(
                "revocations:\n  - spiffe_id: spiffe://e.org/a\n    reason: fine\n  - spiffe_id: spiffe://e.org/b\n    reason: x\n    set: {set}\n"
            )
        };
        let long = "j".repeat(MAX_SET_TEXT + 1);
        for (set, says) in [
            ("{source: s, event: e, jti: \"\"}", "set.jti is empty"),
            (
                "{source: \"a\\u0007b\", event: e, jti: j}",
                "set.source holds a control character",
            ),
            (
                &format!("{{source: s, event: e, jti: {long}}}"),
                "set.jti is 513 bytes; at most 512",
            ),
        ] {
            let e = Revocations::parse(&entry(set), Path::new("r.yaml"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("revocation 2 (reason \"x\"): {says}")),
                "{e}"
            );
            assert!(!e.contains("revocation 1 "), "{e}");
        }
        // A value missing or unknown: the file's shape is wrong.
        for set in [
            "{source: s, event: e}",
            "{source: s, event: e, jti: j, by: me}",
        ] {
            let e = Revocations::parse(&entry(set), Path::new("r.yaml")).unwrap_err();
            assert_eq!(e.diagnostics[0].line, 6, "{e}");
        }
    }

    #[test]
    fn bad_entries_are_all_reported() {
        let e = Revocations::parse(
            "revocations:\n  - spiffe_id: nope\n    reason: x\n  - jwt_id: a\n    spiffe_id: spiffe://e.org/a\n    reason: two\n  - jwt_id: b\n    reason: \"\"\n  - x509_serial: \"12\"\n    reason: no issuer\n",
            Path::new("r.yaml"),
        )
        .unwrap_err()
        .to_string();
        for n in 1..=4 {
            assert!(e.contains(&format!("revocation {n} ")), "{e}");
        }
        assert!(Revocations::parse("revocations: 3", Path::new("r.yaml")).is_err());
    }

    #[test]
    fn each_problem_is_placed_at_the_value_at_fault_with_its_line() {
        let text = "revocations:\n  - spiffe_id: spiffe://e.org/a\n    reason: fine\n  - spiffe_id: nope\n    reason: bad id\n  - jwt_id: a\n    reason: \"\"\n";
        let e = Revocations::parse(text, Path::new("r.yaml")).unwrap_err();
        let placed: Vec<_> = e
            .diagnostics
            .iter()
            .map(|d| (d.line, d.column, d.line_text.as_deref()))
            .collect();
        assert_eq!(
            placed,
            [
                (4, 16, Some("  - spiffe_id: nope")),
                (7, 13, Some("    reason: \"\"")),
            ]
        );
        assert!(e.diagnostics.iter().all(|d| d.severity == Severity::Error));
        let rendered = e.diagnostics[0].to_string();
        assert!(rendered.contains(" --> r.yaml:4:16\n"), "{rendered}");
        assert!(rendered.ends_with("  |                ^"), "{rendered}");
        // Not YAML of the right shape: placed where the parser stopped.
        let e =
            Revocations::parse("revocations:\n  - spife_id: x\n", Path::new("r.yaml")).unwrap_err();
        assert_eq!(e.diagnostics[0].line, 2, "{e}");
        assert!(e.diagnostics[0].line_text.is_some());
    }
}
