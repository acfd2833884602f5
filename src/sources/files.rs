//! Live files: the rules file and bundle files, reloaded without a restart.
//!
//! A live source: it publishes into the [`Store`] and nothing reads from it.
//!
//! Data flow: Kubernetes updates a mounted ConfigMap or Secret by swapping a
//! `..data` symlink in the volume's directory, so the *directories* holding
//! the files are watched, not the files. A burst of events is debounced,
//! then every file is re-read on a reload thread below the checks'
//! priority ([`super::background`]); a file whose content
//! (by SHA-256) did not change is left alone. A file that fails to load
//! keeps the last good state in use, is logged with the reason, and is
//! counted. A periodic resync catches anything the watcher missed.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use sha2::{Digest, Sha256};

use crate::engine::file_kind::{self, FileKind, GrantLimits, LoadError, Loaded};
use crate::engine::grants::Grants;
use crate::engine::identity::bundle;
use crate::engine::policy::{Diagnostic, Policy, PolicyError, Severity};
use crate::engine::revocations::Revocations;
use crate::engine::risks::Risks;
use crate::metrics::Metrics;
use crate::store::Store;

/// How long a burst of file events may last before the files are read.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// A file and the hash of the content last read from it (`None` while it
/// is missing or unreadable).
#[derive(Debug)]
struct Tracked {
    path: PathBuf,
    last: Option<[u8; 32]>,
    /// A missing file means no entries (an optional governance file).
    optional: bool,
}

impl Tracked {
    fn new(path: PathBuf, content: &[u8]) -> Self {
        Tracked {
            path,
            last: Some(Sha256::digest(content).into()),
            optional: false,
        }
    }

    /// The new content, if it changed since the last call.
    fn changed(&mut self) -> Option<Result<Vec<u8>, std::io::Error>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                let hash: [u8; 32] = Sha256::digest(&bytes).into();
                if self.last == Some(hash) {
                    return None;
                }
                self.last = Some(hash);
                Some(Ok(bytes))
            }
            Err(e) => {
                // Report a vanished file once, not on every event.
                let was_readable = self.last.is_some();
                self.last = None;
                was_readable.then_some(Err(e))
            }
        }
    }
}

/// What a change of a watched file reloads.
enum Target {
    Policy,
    Bundle { trust_domain: String },
    Governance(GovernanceFile),
}

/// A watched file of runtime governance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GovernanceFile {
    /// Time-bound grants, refused when one lasts longer than this.
    Grants {
        /// The longest grant accepted.
        max_duration: Duration,
    },
    /// Revoked credentials.
    Revocations,
    /// A candidate rules file evaluated beside the enforced one.
    ShadowPolicy,
    /// Risk levels security tools reported.
    Risks,
}

/// The parsed content of a governance file, ready to publish.
#[derive(Debug)]
pub enum Governance {
    /// Grants.
    Grants(Grants),
    /// Revocations.
    Revocations(Revocations),
    /// Shadow rules.
    ShadowPolicy(Policy),
    /// Risk levels.
    Risks(Risks),
}

impl GovernanceFile {
    /// Its name in config, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            GovernanceFile::Grants { .. } => "grants",
            GovernanceFile::Revocations => "revocations",
            GovernanceFile::ShadowPolicy => "shadow_policy",
            GovernanceFile::Risks => "risks",
        }
    }

    /// The document an optional file's absence stands for: no entries.
    pub fn absent(self) -> &'static [u8] {
        match self {
            GovernanceFile::Grants { .. } => b"grants: []\n",
            GovernanceFile::Revocations => b"revocations: []\n",
            GovernanceFile::ShadowPolicy => b"rules: []\n",
            GovernanceFile::Risks => b"risks: []\n",
        }
    }

    /// The kind of file it is, as `celador check` reads it.
    pub fn kind(self) -> Option<FileKind> {
        match self {
            GovernanceFile::Grants { .. } => Some(FileKind::Grants),
            GovernanceFile::Revocations => Some(FileKind::Revocations),
            GovernanceFile::ShadowPolicy => Some(FileKind::Rules),
            GovernanceFile::Risks => Some(FileKind::Risks),
        }
    }

    /// Parses `bytes`, read from `path`, as `celador check` does; the
    /// error places every problem in the file.
    pub fn parse(self, path: &Path, bytes: &[u8]) -> Result<Governance, LoadError> {
        let text = std::str::from_utf8(bytes).map_err(|_| LoadError {
            diagnostics: PolicyError::unreadable(
                path,
                &std::io::Error::other("the file is not UTF-8"),
            )
            .diagnostics,
        })?;
        let max_duration = match self {
            GovernanceFile::Grants { max_duration } => max_duration,
            _ => crate::engine::grants::DEFAULT_MAX_DURATION,
        };
        let limits = GrantLimits {
            max_duration,
            now: std::time::SystemTime::now(),
        };
        let Some(kind) = self.kind() else {
            return Err(LoadError {
                diagnostics: PolicyError::unreadable(
                    path,
                    &std::io::Error::other("not a kind of file the engine loads"),
                )
                .diagnostics,
            });
        };
        let loaded = file_kind::load(kind, text, path, limits);
        match loaded {
            Some(Ok(Loaded::Grants(grants))) => Ok(Governance::Grants(grants)),
            Some(Ok(Loaded::Revocations(revocations))) => Ok(Governance::Revocations(revocations)),
            Some(Ok(Loaded::Rules(policy))) => Ok(Governance::ShadowPolicy(policy)),
            Some(Ok(Loaded::Risks(risks))) => Ok(Governance::Risks(risks)),
            Some(Err(e)) => Err(e),
            // `kind` names only kinds the engine loads.
            None => Err(LoadError {
                diagnostics: PolicyError::unreadable(
                    path,
                    &std::io::Error::other("not a kind of file the engine loads"),
                )
                .diagnostics,
            }),
        }
    }
}

impl Governance {
    /// Publishes the content into `store`, logging what it holds.
    pub fn publish(self, store: &Store, path: &Path) {
        let path = path.display();
        match self {
            Governance::Grants(grants) => {
                grants.warnings().iter().for_each(log_diagnostic);
                tracing::info!(%path, grants = grants.grants().len(), version = grants.version(), "grants loaded");
                store.publish_grants(Arc::new(grants));
            }
            Governance::Revocations(revocations) => {
                tracing::info!(%path, entries = revocations.len(), version = revocations.version(), "revocations loaded");
                store.publish_revocations(Arc::new(revocations));
            }
            Governance::ShadowPolicy(policy) => {
                policy.warnings().iter().for_each(log_diagnostic);
                tracing::info!(%path, rules = policy.rules().len(), policy_version = policy.version(), "shadow rules loaded");
                store.publish_shadow_policy(Arc::new(policy));
            }
            Governance::Risks(risks) => {
                tracing::info!(%path, entries = risks.len(), "risk levels loaded");
                store.publish_file_risks(Arc::new(risks));
            }
        }
    }
}

/// Where reloaded content goes.
struct Sinks {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
}

/// The live files and where their content goes.
pub struct LiveFiles {
    files: Vec<(Tracked, Target)>,
    sinks: Sinks,
}

impl std::fmt::Debug for LiveFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let paths: Vec<_> = self.files.iter().map(|(t, _)| &t.path).collect();
        f.debug_struct("LiveFiles").field("files", &paths).finish()
    }
}

impl LiveFiles {
    /// Live files starting from the content already loaded at startup.
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>) -> Self {
        LiveFiles {
            files: Vec::new(),
            sinks: Sinks { store, metrics },
        }
    }

    /// Tracks the rules file, whose current content is `content`.
    pub fn policy(&mut self, path: PathBuf, content: &[u8]) {
        self.files
            .push((Tracked::new(path, content), Target::Policy));
    }

    /// Tracks a bundle file of `trust_domain`, whose current content is
    /// `content`.
    pub fn bundle(&mut self, trust_domain: String, path: PathBuf, content: &[u8]) {
        self.files
            .push((Tracked::new(path, content), Target::Bundle { trust_domain }));
    }

    /// Tracks a governance file, whose current content is `content`
    /// (`None`: missing); when `optional`, a missing file means no entries.
    pub fn governance(
        &mut self,
        file: GovernanceFile,
        path: PathBuf,
        content: Option<&[u8]>,
        optional: bool,
    ) {
        let tracked = Tracked {
            last: content.map(|c| Sha256::digest(c).into()),
            path,
            optional,
        };
        self.files.push((tracked, Target::Governance(file)));
    }

    /// Re-reads every file and applies what changed: the rules last, so
    /// that a revocation or a bundle changed in the same pass is not kept
    /// waiting behind a large policy's compile. Returns the policy a new
    /// one replaced, for the caller to [`super::background::retire`]
    /// once it no longer holds these files (a retire waits for the checks
    /// in flight).
    pub fn reload(&mut self) -> Option<Arc<Policy>> {
        let mut replaced = None;
        for rules in [false, true] {
            for (tracked, target) in &mut self.files {
                if matches!(target, Target::Policy) != rules {
                    continue;
                }
                let Some(content) = tracked.changed() else {
                    continue;
                };
                let path = tracked.path.clone();
                if let Some(old) = self.sinks.apply(target, tracked.optional, &path, content) {
                    replaced = Some(old);
                }
            }
        }
        replaced
    }
}

impl Sinks {
    /// Applies one changed file's `content` to where `target` says;
    /// the policy it replaced, if it is the rules file.
    fn apply(
        &self,
        target: &Target,
        optional: bool,
        path: &Path,
        content: Result<Vec<u8>, std::io::Error>,
    ) -> Option<Arc<Policy>> {
        match target {
            Target::Policy => return self.apply_policy(path, content),
            Target::Bundle { trust_domain } => {
                self.apply_bundle(trust_domain, path, content);
            }
            Target::Governance(file) => match content {
                Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => {
                    self.absent_governance(*file, path);
                }
                content => self.apply_governance(*file, path, content),
            },
        }
        None
    }

    /// An optional governance file went missing (its key or its ConfigMap
    /// was removed): no entries, as at a start without it.
    fn absent_governance(&self, file: GovernanceFile, path: &Path) {
        tracing::info!(
            file = file.name(),
            path = %path.display(),
            "the optional {} file is missing: no entries until it appears",
            file.name()
        );
        match file.parse(path, file.absent()) {
            Ok(governance) => governance.publish(&self.store, path),
            Err(e) => {
                tracing::error!(problem = %e, "the empty {} document does not load", file.name())
            }
        }
        self.metrics.governance.file_absent(file.name());
    }

    fn apply_governance(
        &self,
        file: GovernanceFile,
        path: &Path,
        content: Result<Vec<u8>, std::io::Error>,
    ) {
        let parsed = content
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|bytes| file.parse(path, &bytes).map_err(|e| e.to_string()));
        match parsed {
            Ok(governance) => {
                governance.publish(&self.store, path);
                self.metrics.governance.file_reload(file.name(), true);
            }
            Err(e) => {
                self.metrics.governance.file_reload(file.name(), false);
                tracing::warn!(
                    file = file.name(),
                    path = %path.display(),
                    problem = %e,
                    "the {} file cannot be loaded; the last good content stays in use",
                    file.name()
                );
            }
        }
    }

    fn apply_policy(
        &self,
        path: &Path,
        content: Result<Vec<u8>, std::io::Error>,
    ) -> Option<Arc<Policy>> {
        let loaded = content
            .map_err(|e| PolicyError::unreadable(path, &e))
            .and_then(|bytes| {
                String::from_utf8(bytes).map_err(|_| {
                    PolicyError::unreadable(path, &std::io::Error::other("the file is not UTF-8"))
                })
            })
            .and_then(|text| Policy::parse(&text, path));
        match loaded {
            Ok(policy) => {
                policy.warnings().iter().for_each(log_diagnostic);
                tracing::info!(
                    path = %path.display(),
                    policy_version = policy.version(),
                    rules = policy.rules().len(),
                    "rules reloaded"
                );
                self.metrics.rules_loaded(&policy);
                let replaced = self.store.publish_policy(Arc::new(policy));
                self.metrics.policy_reload(true);
                self.metrics.rules_reload_attempt(true, unix_now());
                // Dropped by the caller, off the request path.
                Some(replaced)
            }
            Err(e) => {
                self.metrics.policy_reload(false);
                self.metrics.rules_reload_attempt(false, unix_now());
                let errors = e
                    .diagnostics
                    .iter()
                    .filter(|d| d.severity == Severity::Error)
                    .count();
                tracing::warn!(
                    path = %path.display(),
                    policy_version = self.store.snapshot().policy.version(),
                    errors,
                    "the rules file cannot be loaded; the last good rules stay in use"
                );
                e.diagnostics.iter().for_each(log_diagnostic);
                None
            }
        }
    }

    fn apply_bundle(
        &self,
        trust_domain: &str,
        path: &Path,
        content: Result<Vec<u8>, std::io::Error>,
    ) {
        let loaded = content
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|bytes| bundle::parse(&bytes, path).map_err(|e| e.to_string()));
        match loaded {
            Ok(loaded) => {
                for skipped in &loaded.skipped {
                    tracing::warn!(trust_domain, path = %path.display(), "skipped a key: {skipped}");
                }
                tracing::info!(
                    trust_domain,
                    path = %path.display(),
                    x509_authorities = loaded.bundle.x509_authorities().len(),
                    jwt_keys = loaded.bundle.jwt_key_count(),
                    sequence = loaded.bundle.sequence,
                    refresh_hint_secs = loaded.bundle.refresh_hint.map(|d| d.as_secs()),
                    "trust bundle reloaded"
                );
                super::warn_on_invalid_authorities(trust_domain, loaded.bundle.x509_authorities());
                self.store.replace_bundle(trust_domain, loaded.bundle);
                self.metrics.bundle_update(trust_domain, "file", "ok");
            }
            Err(e) => {
                self.metrics.bundle_update(trust_domain, "file", "error");
                tracing::warn!(
                    trust_domain,
                    path = %path.display(),
                    problem = %e,
                    "the trust bundle cannot be loaded; the last good bundle stays in use"
                );
            }
        }
    }
}

/// One problem of a rules file as one log event, with structured fields.
pub(crate) fn log_diagnostic(d: &Diagnostic) {
    let severity = match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    tracing::warn!(
        file = %d.file.display(),
        line = d.line,
        column = d.column,
        rule = d.rule.as_deref().unwrap_or(""),
        severity,
        problem = %d.message,
        "rules file {severity}"
    );
}

/// Now, in Unix seconds, for the reload timestamp.
pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Whether a file event in a watched directory can change a watched file:
/// it touches one of their `names`, or a name starting with `..` (the
/// kubelet's `..data` symlink and timestamped directories), or the watcher
/// lost track (a rescan). Reads, and writes to other files in the same
/// directory (a log written beside the rules), are not re-read for: each
/// would cost a reload of every file, under load many times a second.
fn concerns(event: &notify::Event, names: &BTreeSet<OsString>) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode};
    if event.need_rescan() {
        return true;
    }
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
        EventKind::Access(_) => return false,
        _ => {}
    }
    event.paths.is_empty()
        || event.paths.iter().any(|path| {
            path.file_name().is_some_and(|name| {
                names.contains(name) || name.as_encoded_bytes().starts_with(b"..")
            })
        })
}

impl LiveFiles {
    /// The names of the watched files, in their directories.
    fn names(&self) -> BTreeSet<OsString> {
        self.files
            .iter()
            .filter_map(|(t, _)| t.path.file_name().map(OsStr::to_owned))
            .collect()
    }

    /// The directories to watch.
    fn directories(&self) -> BTreeSet<PathBuf> {
        self.files
            .iter()
            .filter_map(|(t, _)| t.path.parent().map(Path::to_owned))
            .map(|dir| {
                if dir.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    dir
                }
            })
            .collect()
    }

    /// Watches the files' directories and reloads on change and every
    /// `resync`, until the runtime stops.
    pub fn watch(self, resync: Duration) -> Result<(), String> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let names = self.names();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // An error may mean lost events: re-read to be sure.
                if event.as_ref().map_or(true, |e| concerns(e, &names)) {
                    let _ = tx.send(());
                }
            })
            .map_err(|e| format!("cannot watch files: {e}"))?;
        for dir in self.directories() {
            if !dir.is_dir() {
                // An optional file's directory that is not there (yet):
                // the periodic resync reads the file when it appears.
                tracing::warn!(directory = %dir.display(), "cannot watch a directory that does not exist; its files are re-read every resync");
                continue;
            }
            watcher
                .watch(&dir, RecursiveMode::NonRecursive)
                .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
        }
        let live = Arc::new(Mutex::new(self));
        tokio::spawn(async move {
            // The watcher stops when dropped: keep it with the task.
            let _watcher = watcher;
            let mut resync = tokio::time::interval(resync);
            resync.tick().await;
            loop {
                tokio::select! {
                    event = rx.recv() => {
                        if event.is_none() {
                            return;
                        }
                        tokio::time::sleep(DEBOUNCE).await;
                        while rx.try_recv().is_ok() {}
                    }
                    _ = resync.tick() => {}
                }
                let live = Arc::clone(&live);
                // Off the runtime, below the checks (see `background`).
                let reloaded = super::background::run(move || {
                    let replaced = live.lock().unwrap_or_else(PoisonError::into_inner).reload();
                    // Once the files are let go of: the next reload need
                    // not wait for the checks still holding the old rules.
                    if let Some(old) = replaced {
                        super::background::retire(old);
                    }
                })
                .await;
                if reloaded.is_none() {
                    tracing::error!("reloading files failed");
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::mpsc;

    /// What a real watcher on `dir` reports while `act` runs, as whether
    /// any of it concerns `policy.yaml`.
    fn reloads_after(dir: &Path, act: impl FnOnce()) -> bool {
        let (tx, rx) = mpsc::channel();
        let mut watcher = notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
            let _ = tx.send(e);
        })
        .unwrap();
        watcher.watch(dir, RecursiveMode::NonRecursive).unwrap();
        act();
        std::thread::sleep(Duration::from_millis(200));
        drop(watcher);
        let names = BTreeSet::from([OsString::from("policy.yaml")]);
        let events: Vec<_> = rx.try_iter().map(Result::unwrap).collect();
        assert!(!events.is_empty(), "the watcher saw nothing");
        events.iter().any(|e| concerns(e, &names))
    }

    #[test]
    fn an_optional_governance_file_missing_means_no_entries_and_is_loaded_when_it_appears() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revocations.yaml");
        let metrics = Arc::new(Metrics::default());
        let store = Store::new(
            Arc::new(Policy::parse("rules: []\n", Path::new("p.yaml")).unwrap()),
            BTreeSet::new(),
            std::collections::HashMap::new(),
        );
        let mut live = LiveFiles::new(Arc::clone(&store), Arc::clone(&metrics));
        live.governance(GovernanceFile::Revocations, path.clone(), None, true);
        let entries = || store.snapshot().revocations.len();
        let counted = |outcome: &'static str| {
            metrics
                .governance
                .file_reloads
                .get_or_create(&crate::metrics::governance::FileReloadLabels {
                    file: "revocations",
                    outcome,
                })
                .get()
        };
        live.reload();
        assert_eq!((entries(), counted("ok"), counted("absent")), (0, 0, 0));
        // It appears: loaded like any change.
        let revoked = "revocations:\n  - spiffe_id: spiffe://example.org/a\n    reason: leaked\n";
        std::fs::write(&path, revoked).unwrap();
        live.reload();
        assert_eq!((entries(), counted("ok")), (1, 1));
        // Broken: the last good content stays.
        std::fs::write(&path, "revocations: [ {").unwrap();
        live.reload();
        assert_eq!((entries(), counted("error")), (1, 1));
        // Removed (its key or ConfigMap deleted): no entries, counted once.
        std::fs::remove_file(&path).unwrap();
        live.reload();
        live.reload();
        assert_eq!((entries(), counted("absent")), (0, 1));
        // A file that is not optional keeps its last good content instead.
        std::fs::write(&path, revoked).unwrap();
        let mut strict = LiveFiles::new(Arc::clone(&store), Arc::clone(&metrics));
        strict.governance(GovernanceFile::Revocations, path.clone(), None, false);
        strict.reload();
        assert_eq!(entries(), 1);
        std::fs::remove_file(&path).unwrap();
        strict.reload();
        assert_eq!((entries(), counted("error")), (1, 2));
    }

    #[test]
    fn only_events_that_can_change_a_watched_file_cause_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("policy.yaml"), "rules: []\n").unwrap();

        // A log written beside the rules, and reading the rules, do not.
        assert!(!reloads_after(d, || {
            for i in 0..5 {
                let mut log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(d.join("audit.log"))
                    .unwrap();
                writeln!(log, "{{\"n\": {i}}}").unwrap();
            }
        }));
        assert!(!reloads_after(d, || {
            std::fs::read(d.join("policy.yaml")).unwrap();
        }));

        // Rewriting it in place, replacing it by a rename, deleting it, and
        // the kubelet's `..data` swap do.
        assert!(reloads_after(d, || {
            std::fs::write(d.join("policy.yaml"), "rules: [] # edited\n").unwrap();
        }));
        assert!(reloads_after(d, || {
            std::fs::write(d.join("policy.yaml.tmp"), "rules: []\n").unwrap();
            std::fs::rename(d.join("policy.yaml.tmp"), d.join("policy.yaml")).unwrap();
        }));
        assert!(reloads_after(d, || {
            std::fs::remove_file(d.join("policy.yaml")).unwrap();
        }));
        assert!(reloads_after(d, || {
            std::fs::create_dir(d.join("..2026_11_25_1")).unwrap();
            std::os::unix::fs::symlink("..2026_11_25_1", d.join("..data_tmp")).unwrap();
            std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        }));
    }
}
