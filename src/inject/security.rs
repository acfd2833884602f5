//! The sidecar's `securityContext`: locked down, and what the settings'
//! overrides may change in it.
//!
//! Data flow: `run_as_user` and `security_context` of the settings ->
//! [`merged`] (checked when the settings load, applied by
//! [`super::sidecar::container`]).

use k8s_openapi::api::core::v1::{Capabilities, SeccompProfile, SecurityContext};
use serde_json::{Map, Value};

/// The locked-down security context: non-root, read-only root filesystem,
/// no capabilities, no privilege escalation, the runtime's seccomp profile.
pub fn locked_down(user: i64) -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(user),
        run_as_group: Some(user),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}

/// The sidecar's security context with `overrides` merged in
/// (a `null` removes a field), or why they cannot be taken: an unknown
/// field, or one that would weaken it (root, privileges, escalation, a
/// writable root filesystem, added capabilities, no seccomp profile).
pub fn merged(user: i64, overrides: &Map<String, Value>) -> Result<SecurityContext, String> {
    let base = locked_down(user);
    if overrides.is_empty() {
        return Ok(base);
    }
    let mut merged = serde_json::to_value(&base).map_err(|e| e.to_string())?;
    merge(&mut merged, &Value::Object(overrides.clone()));
    let context: SecurityContext = serde_json::from_value(merged.clone())
        .map_err(|e| format!("not a securityContext: {e}"))?;
    let round_trip = serde_json::to_value(&context).map_err(|e| e.to_string())?;
    if let Some(unknown) = merged
        .as_object()
        .into_iter()
        .flat_map(|m| m.keys())
        .find(|key| round_trip.get(key.as_str()).is_none())
    {
        return Err(format!("'{unknown}' is not a securityContext field"));
    }
    let weakened = [
        (
            context.run_as_non_root != Some(true),
            "runAsNonRoot must stay true",
        ),
        (context.run_as_user == Some(0), "runAsUser 0 is root"),
        (context.privileged == Some(true), "privileged is refused"),
        (
            context.allow_privilege_escalation != Some(false),
            "allowPrivilegeEscalation must stay false",
        ),
        (
            context.read_only_root_filesystem != Some(true),
            "readOnlyRootFilesystem must stay true",
        ),
        (
            context
                .capabilities
                .as_ref()
                .and_then(|c| c.add.as_ref())
                .is_some_and(|add| !add.is_empty()),
            "capabilities.add is refused (celador needs none)",
        ),
        (
            context
                .seccomp_profile
                .as_ref()
                .is_none_or(|p| p.type_ == "Unconfined"),
            "a seccompProfile other than Unconfined is needed",
        ),
    ];
    match weakened.iter().find(|(weak, _)| *weak) {
        Some((_, why)) => Err((*why).to_owned()),
        None => Ok(context),
    }
}

/// Merges `from` into `into`: maps field by field, a `null` removes.
fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in b {
                if value.is_null() {
                    a.remove(key);
                } else {
                    merge(a.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (slot, value) => *slot = value.clone(),
    }
}
