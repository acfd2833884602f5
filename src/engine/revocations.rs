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
//!     issuer: CN=intermediate,O=example
//!     reason: mis-issued
//!   - jwt_id: 4f1c2d                                        # a token's jti
//!     reason: replayed token
//! ```
//!
//! Data flow: a watched revocations file is parsed here and published into
//! the live-state store; the engine checks every verified identity against
//! the snapshot's [`Revocations`] before rules, grants and the decision
//! cache. A file that does not parse keeps the last good list.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;

use super::decision::Revoked;
use super::identity::{Identity, SpiffeId, normalize_serial};

static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevocationsFile {
    revocations: Vec<EntrySpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntrySpec {
    #[serde(default)]
    spiffe_id: Option<String>,
    #[serde(default)]
    spiffe_id_prefix: Option<String>,
    #[serde(default)]
    x509_sha256: Option<String>,
    #[serde(default)]
    x509_serial: Option<String>,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    jwt_id: Option<String>,
    reason: String,
}

/// A loaded revocations file.
#[derive(Debug, Default)]
pub struct Revocations {
    ids: HashMap<String, Arc<str>>,
    prefixes: Vec<(String, Arc<str>)>,
    sha256: HashMap<String, Arc<str>>,
    serials: HashMap<(String, String), Arc<str>>,
    jwt_ids: HashMap<String, Arc<str>>,
    entries: usize,
    version: Option<Arc<str>>,
    generation: u64,
}

impl Revocations {
    /// Parses the revocations in `text` (the file at `path`); every problem
    /// is reported at once, and the file is refused whole.
    pub fn parse(text: &str, path: &Path) -> Result<Revocations, String> {
        let file: RevocationsFile = super::yaml::from_str(text, path).map_err(|e| e.rendered)?;
        let mut out = Revocations {
            entries: file.revocations.len(),
            version: Some(super::policy::version_of(text)),
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
            ..Revocations::default()
        };
        let mut problems = Vec::new();
        for (i, entry) in file.revocations.iter().enumerate() {
            if let Err(problem) = out.add(entry) {
                problems.push(format!(
                    "{}: revocation {} (reason {:?}): {problem}",
                    path.display(),
                    i + 1,
                    entry.reason
                ));
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(problems.join("\n"))
        }
    }

    fn add(&mut self, entry: &EntrySpec) -> Result<(), String> {
        let reason: Arc<str> = Arc::from(entry.reason.as_str());
        if entry.reason.trim().is_empty() {
            return Err("`reason` is empty: say why".into());
        }
        let kinds = [
            entry.spiffe_id.is_some(),
            entry.spiffe_id_prefix.is_some(),
            entry.x509_sha256.is_some(),
            entry.x509_serial.is_some(),
            entry.jwt_id.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err("give exactly one of spiffe_id, spiffe_id_prefix, x509_sha256, x509_serial (with issuer) or jwt_id".into());
        }
        if entry.issuer.is_some() != entry.x509_serial.is_some() {
            return Err("`issuer` goes with `x509_serial`, and `x509_serial` needs it".into());
        }
        if let Some(id) = &entry.spiffe_id {
            SpiffeId::parse(id).map_err(|e| format!("spiffe_id {id:?}: {e}"))?;
            self.ids.insert(id.clone(), reason);
        } else if let Some(prefix) = &entry.spiffe_id_prefix {
            let id = prefix.trim_end_matches('/');
            SpiffeId::parse(id).map_err(|e| format!("spiffe_id_prefix {prefix:?}: {e}"))?;
            self.prefixes.push((id.to_owned(), reason));
        } else if let Some(sha) = &entry.x509_sha256 {
            let hex: String = sha
                .chars()
                .filter(|c| *c != ':')
                .map(|c| c.to_ascii_lowercase())
                .collect();
            if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(format!(
                    "x509_sha256 {sha:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed)"
                ));
            }
            self.sha256.insert(hex, reason);
        } else if let (Some(serial), Some(issuer)) = (&entry.x509_serial, &entry.issuer) {
            if serial.is_empty() || !serial.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
                return Err(format!("x509_serial {serial:?} is not hex"));
            }
            self.serials
                .insert((normalize_serial(serial), normalize_dn(issuer)), reason);
        } else if let Some(jti) = &entry.jwt_id {
            self.jwt_ids.insert(jti.clone(), reason);
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
        let hit = |entry: String, reason: &Arc<str>| Revoked {
            entry,
            reason: Arc::clone(reason),
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
            let key = (facts.serial.clone(), normalize_dn(&facts.issuer));
            if let Some(reason) = self.serials.get(&key) {
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

/// A distinguished name compared loosely: no spaces around separators,
/// attribute types in upper case, and in any order (`openssl` prints
/// RFC 2253 names last-first, x509-parser first-last).
fn normalize_dn(dn: &str) -> String {
    let mut rdns: Vec<String> = dn
        .split(',')
        .map(|rdn| match rdn.split_once('=') {
            Some((ty, value)) => format!("{}={}", ty.trim().to_ascii_uppercase(), value.trim()),
            None => rdn.trim().to_owned(),
        })
        .collect();
    rdns.sort_unstable();
    rdns.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::identity::{CertificateFacts, X509Svid};
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
        assert!(r.unwrap_err().contains("revocation 3"));
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
        let serial = CertificateFacts {
            serial: "a1b".into(),
            issuer: "CN=ca,O=e".into(),
            ..Default::default()
        };
        assert_eq!(
            reason("spiffe://e.org/z", serial).as_deref(),
            Some("serial")
        );
        let reversed = CertificateFacts {
            serial: "a1b".into(),
            issuer: "O=e, CN=ca".into(),
            ..Default::default()
        };
        assert_eq!(
            reason("spiffe://e.org/z", reversed).as_deref(),
            Some("serial")
        );
        let other_issuer = CertificateFacts {
            serial: "a1b".into(),
            issuer: "CN=other".into(),
            ..Default::default()
        };
        assert_eq!(reason("spiffe://e.org/z", other_issuer), None);
    }

    #[test]
    fn bad_entries_are_all_reported() {
        let e = Revocations::parse(
            "revocations:\n  - spiffe_id: nope\n    reason: x\n  - jwt_id: a\n    spiffe_id: spiffe://e.org/a\n    reason: two\n  - jwt_id: b\n    reason: \"\"\n  - x509_serial: \"12\"\n    reason: no issuer\n",
            Path::new("r.yaml"),
        )
        .unwrap_err();
        for n in 1..=4 {
            assert!(e.contains(&format!("revocation {n} ")), "{e}");
        }
        assert!(Revocations::parse("revocations: 3", Path::new("r.yaml")).is_err());
    }
}
