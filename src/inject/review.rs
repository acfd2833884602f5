//! One AdmissionReview in, one out: skip the pod, inject it (a JSON Patch),
//! or refuse it with a message.
//!
//! Data flow: request bytes -> `AdmissionReview<DynamicObject>` -> the
//! pod as raw JSON, changed in place -> the JSON Patch from the pod before
//! to the pod after. The pod is edited as raw JSON, never through a typed
//! `Pod`, so fields newer than this build's Kubernetes types survive.
//!
//! Bad input never panics and never passes silently: it gets an
//! AdmissionReview whose response is not allowed, with a message the
//! API server shows to whoever created the pod.

use kube_core::DynamicObject;
use kube_core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::{Map, Value};

use super::settings::{Settings, dns_subdomain};
use super::sidecar::{self, CONTAINER, VOLUMES};
use super::{
    GOVERNANCE_ANNOTATION, INJECT_KEY, INJECTED_LABEL, RULES_ANNOTATION, STATUS_ANNOTATION,
};

/// What the injector did with one review, for its logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The pod was injected.
    Injected,
    /// The pod was let through unchanged, for this reason.
    Skipped(&'static str),
    /// The pod was refused, with this message.
    Refused(String),
    /// The body was not an AdmissionReview.
    Invalid(String),
}

/// Answers the AdmissionReview in `body`.
pub fn answer(body: &[u8], settings: &Settings) -> (AdmissionReview<DynamicObject>, Outcome) {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(review) => review,
        Err(e) => {
            let message = format!("celador inject: the body is not an AdmissionReview v1: {e}");
            return (
                AdmissionResponse::invalid(&message).into_review(),
                Outcome::Invalid(message),
            );
        }
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(_) => {
            let message = "celador inject: the AdmissionReview has no request".to_owned();
            return (
                AdmissionResponse::invalid(&message).into_review(),
                Outcome::Invalid(message),
            );
        }
    };
    let response = AdmissionResponse::from(&request);
    let (response, outcome) = match decide(&request, settings) {
        Decision::Skip(reason) => (response, Outcome::Skipped(reason)),
        Decision::Refuse(message) => (
            response.deny(format!("celador inject: {message}")),
            Outcome::Refused(message),
        ),
        Decision::Patch(patch) => match response.clone().with_patch(patch) {
            Ok(patched) => (patched, Outcome::Injected),
            Err(e) => {
                let message = format!("the patch cannot be written: {e}");
                (
                    response.deny(format!("celador inject: {message}")),
                    Outcome::Refused(message),
                )
            }
        },
    };
    (response.into_review(), outcome)
}

/// The review as the API server reads it: JSON, with the patch in base64
/// (Go's encoding of `[]byte`; the types here would write a list of
/// numbers).
pub fn encode(review: &AdmissionReview<DynamicObject>) -> Result<Vec<u8>, serde_json::Error> {
    use base64::Engine;
    let mut value = serde_json::to_value(review)?;
    if let Some(patch) = value.pointer_mut("/response/patch")
        && let Some(bytes) = patch.as_array()
    {
        let bytes: Vec<u8> = bytes
            .iter()
            .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect();
        *patch = Value::from(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    serde_json::to_vec(&value)
}

enum Decision {
    Skip(&'static str),
    Refuse(String),
    Patch(json_patch::Patch),
}

fn decide(request: &AdmissionRequest<DynamicObject>, settings: &Settings) -> Decision {
    if request.kind.kind != "Pod"
        || !request.kind.group.is_empty()
        || request.sub_resource.is_some()
    {
        return Decision::Skip("not a pod");
    }
    if request.operation != Operation::Create {
        return Decision::Skip("not a pod creation");
    }
    let Some(object) = &request.object else {
        return Decision::Refuse("the review has no pod object".to_owned());
    };
    let pod = match serde_json::to_value(object) {
        Ok(pod) => pod,
        Err(e) => return Decision::Refuse(format!("the pod cannot be read: {e}")),
    };
    let namespace = request
        .namespace
        .as_deref()
        .or_else(|| pod.pointer("/metadata/namespace").and_then(Value::as_str))
        .unwrap_or_default();
    if settings.excluded_namespaces.iter().any(|n| n == namespace) {
        return Decision::Skip("the namespace is excluded");
    }
    let mut after = pod.clone();
    match inject(&mut after, settings) {
        Ok(None) => Decision::Patch(json_patch::diff(&pod, &after)),
        Ok(Some(reason)) => Decision::Skip(reason),
        Err(message) => Decision::Refuse(message),
    }
}

/// Adds celador to `pod` (raw JSON) in place. `Ok(Some(reason))` when the
/// pod is to be left alone, `Err` when it cannot be injected as asked.
pub fn inject(pod: &mut Value, settings: &Settings) -> Result<Option<&'static str>, String> {
    let metadata = |key: &str, name: &str| {
        pod.pointer(&format!("/metadata/{key}"))
            .and_then(|m| m.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    if metadata("annotations", INJECT_KEY).as_deref() == Some("disabled")
        || metadata("labels", INJECT_KEY).as_deref() == Some("disabled")
    {
        return Ok(Some("the pod opts out"));
    }
    if metadata("annotations", STATUS_ANNOTATION).as_deref() == Some("injected")
        && has_container(pod, CONTAINER)
    {
        // Called again after another webhook (Istio's) changed the pod:
        // celador's place and probe ports are put right, nothing else.
        return match super::istio::arrange(pod, &probe_ports(settings))? {
            true => Ok(None),
            false => Ok(Some("the pod already has celador")),
        };
    }
    if metadata("annotations", STATUS_ANNOTATION).is_some() || has_container(pod, CONTAINER) {
        return Ok(Some("the pod already has celador"));
    }
    if pod.pointer("/spec/hostNetwork").and_then(Value::as_bool) == Some(true) {
        return Ok(Some(
            "the pod uses the host's network, where celador's ports would be the node's",
        ));
    }
    let named = |annotation: &str, default: &str| match metadata("annotations", annotation) {
        Some(name) => dns_subdomain(&name)
            .map(|()| name)
            .map_err(|e| format!("annotation {annotation}: {e}")),
        None => Ok(default.to_owned()),
    };
    let rules = named(RULES_ANNOTATION, &settings.rules.config_map)?;
    let governance = named(GOVERNANCE_ANNOTATION, &settings.governance.config_map)?;
    let volumes = list(pod, "/spec/volumes")?;
    if let Some(clash) = volumes
        .iter()
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .find(|name| VOLUMES.contains(name))
    {
        return Err(format!(
            "the pod already has a volume named '{clash}', which celador's sidecar needs"
        ));
    }
    for volume in sidecar::volumes(settings, &rules, &governance) {
        volumes.push(to_json(&volume)?);
    }
    let container = to_json(&sidecar::container(settings))?;
    // Before the init containers that need it (Istio's proxy, the app's):
    // they start once celador's startup probe passes. See `istio`.
    let init = list(pod, "/spec/initContainers")?;
    let at = super::istio::place(init);
    init.insert(at, container);
    super::istio::arrange(pod, &probe_ports(settings))?;
    metadata_map(pod, "annotations")?.insert(STATUS_ANNOTATION.to_owned(), Value::from("injected"));
    // Istio's AuthorizationPolicy and EnvoyFilter select pods by this label.
    metadata_map(pod, "labels")?.insert(INJECTED_LABEL.to_owned(), Value::from("true"));
    Ok(None)
}

/// The ports the kubelet probes, kept out of Istio's capture when the
/// settings say the pods are in an Istio mesh.
fn probe_ports(settings: &Settings) -> Vec<u16> {
    if settings.istio {
        vec![settings.ports.health, settings.ports.admin]
    } else {
        Vec::new()
    }
}

/// Injects every Pod and workload pod template among `documents` (as
/// `celador inject --pod` does), leaving other documents alone; returns a
/// note for each pod skipped, or why one cannot be injected.
pub fn inject_documents(
    documents: &mut [Value],
    settings: &Settings,
) -> Result<Vec<String>, String> {
    let mut pods = 0;
    let mut notes = Vec::new();
    for (i, document) in documents.iter_mut().enumerate() {
        let name = document
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        let namespace = document
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let Some(pod) = pod_template_mut(document) else {
            continue;
        };
        pods += 1;
        if namespace.is_some_and(|n| settings.excluded_namespaces.contains(&n)) {
            notes.push(format!(
                "document {} ({name}) not injected: the namespace is excluded",
                i + 1
            ));
            continue;
        }
        match inject(pod, settings) {
            Ok(None) => {}
            Ok(Some(reason)) => notes.push(format!(
                "document {} ({name}) not injected: {reason}",
                i + 1
            )),
            Err(message) => {
                return Err(format!(
                    "document {} ({name}) cannot be injected: {message}",
                    i + 1
                ));
            }
        }
    }
    if pods == 0 {
        return Err("no Pod, nor a workload with a pod template".to_owned());
    }
    Ok(notes)
}

/// The pod inside a workload document: the document itself for a Pod, its
/// pod template for a workload, `None` for anything else.
pub fn pod_template_mut(document: &mut Value) -> Option<&mut Value> {
    let pointer = match document.get("kind").and_then(Value::as_str)? {
        "Pod" => "",
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => "/spec/template",
        "CronJob" => "/spec/jobTemplate/spec/template",
        _ => return None,
    };
    document.pointer_mut(pointer).filter(|pod| pod.is_object())
}

fn has_container(pod: &Value, name: &str) -> bool {
    ["/spec/containers", "/spec/initContainers"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
        .any(|c| c.get("name").and_then(Value::as_str) == Some(name))
}

/// The array at `pointer` (one of `/spec/...`), created when absent.
fn list<'a>(pod: &'a mut Value, pointer: &str) -> Result<&'a mut Vec<Value>, String> {
    let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
    let spec = pod
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .ok_or_else(|| format!("the pod has no {parent} object"))?;
    let slot = spec
        .entry(key.to_owned())
        .or_insert_with(|| Value::Array(Vec::new()));
    if slot.is_null() {
        *slot = Value::Array(Vec::new());
    }
    slot.as_array_mut()
        .ok_or_else(|| format!("the pod's {pointer} is not a list"))
}

fn metadata_map<'a>(pod: &'a mut Value, name: &str) -> Result<&'a mut Map<String, Value>, String> {
    let metadata = pod
        .as_object_mut()
        .ok_or("the pod is not an object")?
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let map = metadata
        .as_object_mut()
        .ok_or("the pod's metadata is not an object")?
        .entry(name)
        .or_insert_with(|| Value::Object(Map::new()));
    if map.is_null() {
        *map = Value::Object(Map::new());
    }
    map.as_object_mut()
        .ok_or_else(|| format!("the pod's {name} are not a map"))
}

fn to_json<T: serde::Serialize>(object: &T) -> Result<Value, String> {
    serde_json::to_value(object).map_err(|e| format!("cannot write the sidecar: {e}"))
}
