//! What the injector adds to a pod: the celador container, its volumes, and
//! the `celador serve` config it is handed in `CELADOR_CONFIG`.
//!
//! Data flow: [`super::settings::Settings`] -> Kubernetes objects (typed by
//! `k8s-openapi`, so a misspelt field does not compile) -> JSON values that
//! [`super::review`] splices into the pod.
//!
//! The config travels in an environment variable because a pod may mount
//! ConfigMaps only from its own namespace: the injector's settings live in
//! the chart's namespace, the rules ConfigMap in the workload's.

use k8s_openapi::api::core::v1::{
    CSIVolumeSource, ConfigMapVolumeSource, Container, ContainerPort, DownwardAPIVolumeFile,
    DownwardAPIVolumeSource, EnvVar, EnvVarSource, GRPCAction, HTTPGetAction, KeyToPath,
    ObjectFieldSelector, Probe, SecretKeySelector, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use super::settings::{BundleSource, CaSource, Settings};
use crate::app::config::governance::TOP_LEVEL_KEYS;

/// The sidecar container's name.
pub const CONTAINER: &str = "celador";
/// Where the image (see the `Dockerfile`) has the binary.
pub const BINARY: &str = "/usr/local/bin/celador";
/// The environment variable holding the sidecar's config.
pub const CONFIG_ENV: &str = "CELADOR_CONFIG";
/// Where the rules ConfigMap is mounted.
pub const RULES_DIR: &str = "/etc/celador/rules";
/// Where the governance ConfigMap (optional) is mounted.
pub const GOVERNANCE_DIR: &str = "/etc/celador/governance";
/// The governance ConfigMap's keys: the grants and revocations files.
pub const GOVERNANCE_KEYS: [&str; 2] = ["grants.yaml", "revocations.yaml"];
/// Where the governance store's CA ConfigMap or Secret is mounted.
pub const STORE_CA_DIR: &str = "/etc/celador/store-ca";
/// The environment variable holding the governance store's password.
pub const STORE_PASSWORD_ENV: &str = "CELADOR_STORE_PASSWORD";
/// Where a bundle ConfigMap or Secret is mounted.
pub const BUNDLE_DIR: &str = "/etc/celador/bundle";
/// Where the Downward API volume (labels, annotations) is mounted.
pub const PODINFO_DIR: &str = "/etc/celador/podinfo";
/// Where the SPIFFE CSI driver's Workload API directory is mounted.
pub const WORKLOAD_API_DIR: &str = "/spiffe-workload-api";
/// The names of the volumes the injector adds.
pub const VOLUMES: &[&str] = &[
    "celador-rules",
    "celador-governance",
    "celador-podinfo",
    "celador-bundle",
    "celador-workload-api",
    "celador-store-ca",
];

/// The `celador serve` config of the sidecar, as JSON (which is YAML).
pub fn config_text(settings: &Settings) -> String {
    config(settings).to_string()
}

fn config(settings: &Settings) -> Value {
    let ports = settings.ports;
    let mut config = serde_json::Map::new();
    let mut set = |key: &str, value: Value| {
        config.insert(key.to_owned(), value);
    };
    set("listen", json!(format!("127.0.0.1:{}", ports.grpc)));
    set("health_listen", json!(format!("0.0.0.0:{}", ports.health)));
    set("admin", json!(format!("0.0.0.0:{}", ports.admin)));
    set(
        "policy",
        json!(format!("{RULES_DIR}/{}", settings.rules.key)),
    );
    set("workload", json!({"downward_api": PODINFO_DIR}));
    set("log", json!({"format": "json"}));
    let trust_domain = match &settings.bundle {
        BundleSource::ConfigMap(r) | BundleSource::Secret(r) => {
            json!({"bundle": format!("{BUNDLE_DIR}/{}", r.key)})
        }
        BundleSource::WorkloadApi(w) => {
            set(
                "workload_api",
                json!({"endpoint": format!("unix://{WORKLOAD_API_DIR}/{}", w.socket)}),
            );
            json!({"workload_api": true})
        }
    };
    set(
        "trust_domains",
        json!({ settings.trust_domain.clone(): trust_domain }),
    );
    let mut governance = governance();
    for (key, value) in &settings.config {
        match (key.as_str(), value) {
            // The operator's governance keys over the injector's.
            ("governance", Value::Object(theirs)) => governance.extend(theirs.clone()),
            // `governance:` with nothing under it: nothing to add (the
            // settings refuse any other value).
            ("governance", _) => {}
            // A deprecated top-level key, written where it now belongs.
            (key, _) if TOP_LEVEL_KEYS.contains(&key) => {
                governance.insert(key.to_owned(), value.clone());
            }
            _ => set(key, value.clone()),
        }
    }
    if !config.contains_key("governance") {
        config.insert("governance".into(), Value::Object(governance));
    }
    // The store's password and CA, where the injector puts them.
    if let Some(Value::Object(store)) = config.get_mut("governance")
        && store.contains_key("store")
    {
        if settings.governance.store_password.is_some() {
            store.insert("password_env".into(), json!(STORE_PASSWORD_ENV));
        }
        if let Some(CaSource::ConfigMap(r) | CaSource::Secret(r)) = &settings.governance.store_ca {
            store.insert("ca_file".into(), json!(format!("{STORE_CA_DIR}/{}", r.key)));
        }
    }
    Value::Object(config)
}

/// The injector's `governance` section: the namespace's governance
/// ConfigMap, optional: a namespace without it (or without one of its
/// keys) runs with no grants or no revocations.
fn governance() -> serde_json::Map<String, Value> {
    [
        ("grants", GOVERNANCE_KEYS[0]),
        ("revocations", GOVERNANCE_KEYS[1]),
    ]
    .into_iter()
    .map(|(key, file)| {
        let path = format!("{GOVERNANCE_DIR}/{file}");
        (key.to_owned(), json!({"path": path, "optional": true}))
    })
    .collect()
}

/// The sidecar container: a native sidecar (`restartPolicy: Always` in
/// `initContainers`), locked down, probed over gRPC health.
pub fn container(settings: &Settings) -> Container {
    let ports = settings.ports;
    let grpc_probe = |period: i32, failures: i32| Probe {
        grpc: Some(GRPCAction {
            port: i32::from(ports.health),
            service: None,
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(1),
        ..Probe::default()
    };
    Container {
        name: CONTAINER.to_owned(),
        image: Some(settings.image.clone()),
        image_pull_policy: Some(settings.image_pull_policy.clone()),
        command: Some(vec![BINARY.to_owned()]),
        args: Some(vec![
            "serve".to_owned(),
            "--config-env".to_owned(),
            CONFIG_ENV.to_owned(),
        ]),
        restart_policy: Some("Always".to_owned()),
        env: Some(env(settings)),
        ports: Some(vec![
            port("celador-health", ports.health),
            port("celador-admin", ports.admin),
        ]),
        // The app starts only once celador answers: a native sidecar's
        // startup probe holds back the containers after it.
        startup_probe: Some(grpc_probe(1, 120)),
        readiness_probe: Some(grpc_probe(5, 3)),
        liveness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthz".to_owned()),
                port: IntOrString::Int(i32::from(ports.admin)),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(10),
            failure_threshold: Some(3),
            timeout_seconds: Some(1),
            ..Probe::default()
        }),
        resources: super::settings::resources(&settings.resources).ok(),
        security_context: Some(
            super::security::merged(settings.run_as_user, &settings.security_context)
                .unwrap_or_else(|_| super::security::locked_down(settings.run_as_user)),
        ),
        volume_mounts: Some(mounts(settings)),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    }
}

fn env(settings: &Settings) -> Vec<EnvVar> {
    let mut env = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("POD_SERVICE_ACCOUNT", "spec.serviceAccountName"),
        EnvVar {
            name: CONFIG_ENV.to_owned(),
            value: Some(config_text(settings)),
            value_from: None,
        },
    ];
    if let Some(r) = &settings.governance.store_password {
        env.push(EnvVar {
            name: STORE_PASSWORD_ENV.to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: r.name.clone(),
                    key: r.key.clone(),
                    optional: None,
                }),
                ..EnvVarSource::default()
            }),
        });
    }
    env
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        }),
    }
}

fn port(name: &str, number: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(number),
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

fn mounts(settings: &Settings) -> Vec<VolumeMount> {
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    let mut mounts = vec![
        mount("celador-rules", RULES_DIR),
        mount("celador-governance", GOVERNANCE_DIR),
        mount("celador-podinfo", PODINFO_DIR),
    ];
    match settings.bundle {
        BundleSource::ConfigMap(_) | BundleSource::Secret(_) => {
            mounts.push(mount("celador-bundle", BUNDLE_DIR));
        }
        BundleSource::WorkloadApi(_) => {
            mounts.push(mount("celador-workload-api", WORKLOAD_API_DIR));
        }
    }
    if settings.governance.store_ca.is_some() {
        mounts.push(mount("celador-store-ca", STORE_CA_DIR));
    }
    mounts
}

/// The volumes behind the sidecar's mounts; `rules` and `governance` are
/// the ConfigMaps' names. Whole ConfigMaps are mounted (no `subPath`), so
/// the kubelet's updates reach the watched files; the governance one is
/// optional, so a pod starts without it and sees it when it is created.
pub fn volumes(settings: &Settings, rules: &str, governance: &str) -> Vec<Volume> {
    let mut volumes = vec![
        Volume {
            name: "celador-rules".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: rules.to_owned(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "celador-governance".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: governance.to_owned(),
                optional: Some(true),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "celador-podinfo".to_owned(),
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(vec![
                    downward_file("labels", "metadata.labels"),
                    downward_file("annotations", "metadata.annotations"),
                ]),
                ..DownwardAPIVolumeSource::default()
            }),
            ..Volume::default()
        },
    ];
    volumes.push(bundle_volume(settings));
    volumes.extend(store_ca_volume(settings));
    volumes
}

fn store_ca_volume(settings: &Settings) -> Option<Volume> {
    let items = |key: &str| {
        Some(vec![KeyToPath {
            key: key.to_owned(),
            path: key.to_owned(),
            mode: None,
        }])
    };
    let volume = Volume {
        name: "celador-store-ca".to_owned(),
        ..Volume::default()
    };
    Some(match settings.governance.store_ca.as_ref()? {
        CaSource::ConfigMap(r) => Volume {
            config_map: Some(ConfigMapVolumeSource {
                name: r.name.clone(),
                items: items(&r.key),
                ..ConfigMapVolumeSource::default()
            }),
            ..volume
        },
        CaSource::Secret(r) => Volume {
            secret: Some(SecretVolumeSource {
                secret_name: Some(r.name.clone()),
                items: items(&r.key),
                ..SecretVolumeSource::default()
            }),
            ..volume
        },
    })
}

fn bundle_volume(settings: &Settings) -> Volume {
    let key = |key: &str| {
        Some(vec![KeyToPath {
            key: key.to_owned(),
            path: key.to_owned(),
            mode: None,
        }])
    };
    match &settings.bundle {
        BundleSource::ConfigMap(r) => Volume {
            name: "celador-bundle".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: r.name.clone(),
                items: key(&r.key),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        BundleSource::Secret(r) => Volume {
            name: "celador-bundle".to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(r.name.clone()),
                items: key(&r.key),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
        BundleSource::WorkloadApi(w) => Volume {
            name: "celador-workload-api".to_owned(),
            csi: Some(CSIVolumeSource {
                driver: w.csi_driver.clone(),
                read_only: Some(true),
                ..CSIVolumeSource::default()
            }),
            ..Volume::default()
        },
    }
}

fn downward_file(path: &str, field: &str) -> DownwardAPIVolumeFile {
    DownwardAPIVolumeFile {
        path: path.to_owned(),
        field_ref: Some(ObjectFieldSelector {
            field_path: field.to_owned(),
            api_version: None,
        }),
        ..DownwardAPIVolumeFile::default()
    }
}

/// Checks that `celador serve` would load the config built from
/// `settings`, as the sidecar will.
pub fn check_config(settings: &Settings) -> Result<(), String> {
    crate::app::config::Config::parse(
        &config_text(settings),
        std::path::Path::new("the sidecar config"),
    )
    .map(|_| ())
    .map_err(|e| format!("config: the sidecar's config would not load: {e}"))
}
