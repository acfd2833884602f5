//! `celador inject`: the mutating admission webhook that adds celador to
//! pods as a native sidecar (an init container with `restartPolicy:
//! Always`).
//!
//! Data flow: the API server POSTs an AdmissionReview v1 for each pod
//! created where the `MutatingWebhookConfiguration` selects it ->
//! [`webhook`] (HTTPS with rustls; the certificate is reloaded when its
//! Secret rotates) -> [`review`] decides to skip or inject -> [`sidecar`]
//! builds the container, its volumes and its config from [`settings`] -> a
//! JSON Patch in the AdmissionReview answer; [`serve`] checks the
//! webhook's arguments and runs it. The injector never calls the
//! Kubernetes API, so it needs no RBAC of its own.

pub mod istio;
pub mod metrics;
pub mod review;
pub mod security;
pub mod serve;
pub mod settings;
pub mod sidecar;
pub mod webhook;

/// The label (namespace or pod) that opts in with `enabled`, and the pod
/// annotation (or label) that opts out with `disabled`.
pub const INJECT_KEY: &str = "celador.io/inject";
/// The pod annotation naming the rules ConfigMap, in the pod's namespace.
pub const RULES_ANNOTATION: &str = "celador.io/rules";
/// The pod annotation naming the governance ConfigMap (grants and
/// revocations), in the pod's namespace.
pub const GOVERNANCE_ANNOTATION: &str = "celador.io/governance";
/// The label the injector sets (`"true"`) on the pods it changed; the
/// chart's Istio resources select pods by it.
pub const INJECTED_LABEL: &str = "celador.io/injected";
/// The annotation the injector sets on the pods it changed.
pub const STATUS_ANNOTATION: &str = "celador.io/status";

/// Reads the injector's settings and checks that the sidecar config they
/// make would load: every problem at once.
pub fn load(path: &std::path::Path) -> Result<settings::Settings, settings::SettingsError> {
    let settings = settings::Settings::load(path)?;
    match sidecar::check_config(&settings) {
        Ok(()) => Ok(settings),
        Err(problem) => Err(crate::app::config::ConfigError::Invalid {
            path: path.to_owned(),
            problems: vec![problem],
        }),
    }
}
