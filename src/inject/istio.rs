//! Where celador goes among a pod's init containers, and how its probes
//! stay out of Istio's traffic capture, whichever of the two webhooks
//! (celador's, Istio's) runs first.
//!
//! Data flow: the pod as raw JSON, from [`super::review::inject`] (first
//! call) or from a reinvocation (`reinvocationPolicy: IfNeeded`: the API
//! server calls celador's webhook again after Istio's changed the pod) ->
//! [`arrange`] moves celador and merges its probe ports into Istio's
//! exclusions, in place; a pod already right is left as it is.
//!
//! What it rests on (Istio's source):
//! * The kubelet probes celador's health and admin ports in plaintext from
//!   the node. Istio captures a pod's inbound traffic (with `istio-init`'s
//!   iptables, or the istio-cni plugin) and, under `PeerAuthentication`
//!   `STRICT`, its proxy refuses plaintext; so the probes fail. Istio reads
//!   the pod annotation `traffic.sidecar.istio.io/excludeInboundPorts` in
//!   two places: its injection template writes it into `istio-init`'s (and
//!   `istio-validation`'s) `-d` argument at injection time
//!   (`manifests/charts/istio-control/istio-discovery/files/injection-template.yaml`),
//!   and the istio-cni plugin reads it from the pod when the pod's network
//!   is set up (`cni/pkg/plugin/sidecar_redirect.go`). celador merges its
//!   ports into the annotation (read by a later Istio injection and by the
//!   CNI plugin), and into the `-d` argument of an `istio-init` or
//!   `istio-validation` that Istio has already added. Istio's own probe
//!   rewriting (`sidecar.istio.io/rewriteAppHTTPProbers`) is not relied on:
//!   it rewrites the probes of the containers it sees, at its injection
//!   (`pkg/kube/inject/app_probe.go`).
//! * Istio puts its native-sidecar proxy first among the init containers,
//!   after `istio-init`/`istio-validation` (`reorderPod` in
//!   `pkg/kube/inject/inject.go`), and without native sidecars puts
//!   `istio-init` last. celador goes right before `istio-proxy`, so the
//!   proxy (and the app's own init containers after it) start only once
//!   celador answers, and on shutdown (native sidecars stop in reverse
//!   order) the proxy stops before celador: it never runs without its
//!   authorizer. Without a native `istio-proxy`, celador goes right after
//!   the last of `istio-init`/`istio-validation`, or first.

use serde_json::Value;

use super::sidecar::CONTAINER;

/// Istio's pod annotation listing inbound ports its capture leaves alone.
pub const EXCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
/// Istio's proxy container, a native sidecar in `initContainers` when
/// Istio runs with native sidecars.
pub const PROXY: &str = "istio-proxy";
/// Istio's init containers that set up (or check) the traffic capture.
pub const SETUP: &[&str] = &["istio-init", "istio-validation"];

/// Where celador belongs among `init` (which does not hold it).
pub fn place(init: &[Value]) -> usize {
    let name = |c: &Value| c.get("name").and_then(Value::as_str).map(str::to_owned);
    if let Some(proxy) = init.iter().position(|c| name(c).as_deref() == Some(PROXY)) {
        return proxy;
    }
    init.iter()
        .rposition(|c| name(c).is_some_and(|n| SETUP.contains(&n.as_str())))
        .map_or(0, |last| last + 1)
}

/// Puts the injected celador where [`place`] says, and (when `ports` is
/// not empty) merges `ports` into Istio's exclusions. `Ok(true)` when the
/// pod changed.
pub fn arrange(pod: &mut Value, ports: &[u16]) -> Result<bool, String> {
    let mut changed = false;
    if let Some(init) = pod
        .pointer_mut("/spec/initContainers")
        .and_then(Value::as_array_mut)
        && let Some(at) = init
            .iter()
            .position(|c| c.get("name").and_then(Value::as_str) == Some(CONTAINER))
    {
        let celador = init.remove(at);
        let to = place(init);
        changed |= to != at;
        init.insert(to, celador);
    }
    if ports.is_empty() {
        return Ok(changed);
    }
    changed |= exclude_from_annotation(pod, ports)?;
    for pointer in ["/spec/initContainers", "/spec/containers"] {
        for container in pod
            .pointer_mut(pointer)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let setup = container
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| SETUP.contains(&n));
            if setup {
                changed |= exclude_from_args(container, ports);
            }
        }
    }
    Ok(changed)
}

/// `list` (comma-separated ports) with `ports` added, or `None` when it
/// has them all.
fn merged(list: &str, ports: &[u16]) -> Option<String> {
    let present: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let missing: Vec<String> = ports
        .iter()
        .map(u16::to_string)
        .filter(|p| !present.contains(&p.as_str()))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let mut all: Vec<String> = present.into_iter().map(str::to_owned).collect();
    all.extend(missing);
    Some(all.join(","))
}

fn exclude_from_annotation(pod: &mut Value, ports: &[u16]) -> Result<bool, String> {
    let metadata = pod
        .as_object_mut()
        .ok_or("the pod is not an object")?
        .entry("metadata")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    let annotations = metadata
        .as_object_mut()
        .ok_or("the pod's metadata is not an object")?
        .entry("annotations")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    if annotations.is_null() {
        *annotations = Value::Object(serde_json::Map::new());
    }
    let annotations = annotations
        .as_object_mut()
        .ok_or("the pod's annotations are not a map")?;
    let current = match annotations.get(EXCLUDE_INBOUND_PORTS) {
        None => "",
        Some(Value::String(list)) => list.as_str(),
        Some(other) => {
            return Err(format!(
                "the annotation {EXCLUDE_INBOUND_PORTS} is not a string: {other}"
            ));
        }
    };
    match merged(current, ports) {
        Some(list) => {
            annotations.insert(EXCLUDE_INBOUND_PORTS.to_owned(), Value::from(list));
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Merges `ports` into the value after `-d` in an Istio setup container's
/// arguments (`istio-iptables -d 15090,15021,15020`).
fn exclude_from_args(container: &mut Value, ports: &[u16]) -> bool {
    let Some(args) = container.get_mut("args").and_then(Value::as_array_mut) else {
        return false;
    };
    let Some(flag) = args.iter().position(|a| a.as_str() == Some("-d")) else {
        return false;
    };
    let Some(value) = args.get_mut(flag + 1) else {
        return false;
    };
    match value.as_str().and_then(|list| merged(list, ports)) {
        Some(list) => {
            *value = Value::from(list);
            true
        }
        None => false,
    }
}
