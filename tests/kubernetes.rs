//! The Kubernetes side: the Helm chart (linted, rendered and its values
//! schema exercised by Helm's own SDK, every manifest validated strictly
//! against Kubernetes 1.30's schemas), the injector on real AdmissionReview
//! documents and over HTTPS, the `k8s/` manifests and the `Dockerfile` kept
//! in step with the chart, and the shipped configuration run as the kubelet
//! would run it, with real mTLS traffic through a real Envoy.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use celador::inject::review::{Outcome, answer, encode};
use celador::inject::settings::Settings;
use support::kubelet::{Kubelet, Running};
use support::pki::{Ca, Leaf};

const NAMESPACE: &str = "celador-system";
const KUBERNETES: &str = "1.30.0";
/// Every version the rendered manifests are validated for: the oldest the
/// chart supports well (1.30) and the oldest the k8s-openapi crate
/// supports (1.33).
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.33.0"];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

// ---------------------------------------------------------------- tools

/// Helm's SDK and kubernetes-validate, installed under target/ once.
fn python_path() -> String {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let helm = tmp.join("py-helm-python-sdk-0.2.2");
    let validate = tmp.join("py-kubernetes-validate-1.37.0");
    support::pip_install("helm-python-sdk==0.2.2", &helm, false);
    support::pip_install("kubernetes-validate==1.37.0", &validate, false);
    format!("{}:{}", helm.display(), validate.display())
}

fn python(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("python3")
        .args(args)
        .env("PYTHONPATH", python_path())
        .output()
        .expect("python3");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn helm(command: &str, values: &Value, extra: &str) -> Value {
    helm_result(command, values, extra).unwrap_or_else(|e| panic!("{e}"))
}

/// helm.py's answer, or its error output.
fn helm_result(command: &str, values: &Value, extra: &str) -> Result<Value, String> {
    let script = repo("tests/kubernetes/helm.py");
    let chart = repo("charts/celador");
    let values = values.to_string();
    let (ok, out, err) = python(&[
        script.to_str().unwrap(),
        command,
        chart.to_str().unwrap(),
        &values,
        extra,
    ]);
    if !ok {
        return Err(format!("helm.py {command} failed:\n{err}"));
    }
    Ok(serde_json::from_str(&out).unwrap())
}

/// `helm.py COMMAND-each` on many value sets at once (the chart loaded
/// once): one answer per set.
fn helm_each(command: &str, values: &[Value]) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("values.json");
    std::fs::write(&file, Value::from(values.to_vec()).to_string()).unwrap();
    let script = repo("tests/kubernetes/helm.py");
    let chart = repo("charts/celador");
    let (ok, out, err) = python(&[
        script.to_str().unwrap(),
        &format!("{command}-each"),
        chart.to_str().unwrap(),
        &format!("@{}", file.display()),
        NAMESPACE,
    ]);
    assert!(ok, "helm.py {command}-each failed:\n{err}");
    let answers: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(answers.len(), values.len());
    answers
}

/// The webhook certificate the tests provide (`tls.existingSecret`): the
/// chart refuses to make one of its own without a cluster, as here.
struct ProvidedTls {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

/// The Secret name the tests provide.
const PROVIDED_SECRET: &str = "celador-injector-tls";

fn provided_tls() -> &'static ProvidedTls {
    static TLS: std::sync::OnceLock<ProvidedTls> = std::sync::OnceLock::new();
    TLS.get_or_init(|| {
        let ca = Ca::root("celador-injector-ca");
        let leaf = ca
            .leaf()
            .dns("celador-injector.celador-system.svc")
            .common_name("celador-injector.celador-system.svc")
            .build();
        ProvidedTls {
            ca_pem: ca.pem.clone(),
            cert_pem: leaf.pem,
            key_pem: leaf.key_pem,
        }
    })
}

/// `values` with the provided certificate, unless they choose cert-manager
/// or a certificate of their own.
fn offline(values: &Value) -> Value {
    let mut values = values.clone();
    if values["certManager"]["enabled"] != true && values["tls"]["existingSecret"].is_null() {
        merge(
            &mut values,
            &json!({"tls": {"existingSecret": PROVIDED_SECRET, "caCertificate": provided_tls().ca_pem}}),
        );
    }
    values
}

/// The provided Secret, as the kubelet would find it.
fn provided_secret() -> Value {
    use base64::Engine;
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let tls = provided_tls();
    json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": PROVIDED_SECRET, "namespace": NAMESPACE},
        "data": {"tls.crt": b64(&tls.cert_pem), "tls.key": b64(&tls.key_pem), "ca.crt": b64(&tls.ca_pem)}})
}

/// A rendering: every document, and NOTES.txt.
struct Rendered {
    docs: Vec<Value>,
    notes: String,
}

impl Rendered {
    /// Renders `values` (with the provided certificate, see [`offline`]).
    fn of(values: &Value) -> Rendered {
        Rendered::exactly(&offline(values)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Renders exactly `values`, or says why Helm refused.
    fn exactly(values: &Value) -> Result<Rendered, String> {
        Ok(Rendered::from_json(&helm_result(
            "render", values, NAMESPACE,
        )?))
    }

    /// Renders each of `sets` (each with the provided certificate) in one
    /// Helm process.
    fn each(sets: &[Value]) -> Vec<Result<Rendered, String>> {
        let sets: Vec<Value> = sets.iter().map(offline).collect();
        helm_each("render", &sets)
            .into_iter()
            .map(|answer| match answer["ok"].as_bool() {
                Some(true) => Ok(Rendered::from_json(&answer["render"])),
                _ => Err(answer["error"].as_str().unwrap_or_default().to_owned()),
            })
            .collect()
    }

    fn from_json(out: &Value) -> Rendered {
        let mut docs = Vec::new();
        let mut notes = String::new();
        for (template, content) in out.as_object().unwrap() {
            match content {
                Value::String(text) => notes = text.clone(),
                Value::Array(list) => docs.extend(list.iter().cloned()),
                _ => unreachable!(),
            }
            assert!(!template.is_empty());
        }
        Rendered { docs, notes }
    }

    fn kind(&self, kind: &str) -> Vec<&Value> {
        self.docs.iter().filter(|d| d["kind"] == kind).collect()
    }

    fn one(&self, kind: &str) -> &Value {
        let found = self.kind(kind);
        assert_eq!(found.len(), 1, "expected one {kind}");
        found[0]
    }
}

/// The value sets every chart test covers.
fn value_sets() -> Vec<(&'static str, Value)> {
    let istio: Value = {
        let text = std::fs::read_to_string(repo("k8s/istio-values.yaml")).unwrap();
        serde_saphyr_json(&text)
    };
    let sets = vec![
        ("defaults", json!({})),
        ("istio", istio),
        (
            "istio with the client chain",
            json!({"istio": {"enabled": true, "forwardChain": true}}),
        ),
        ("cert-manager", json!({"certManager": {"enabled": true}})),
        (
            "cert-manager with an issuer",
            json!({"certManager": {"enabled": true, "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}}}),
        ),
        (
            "a custom rules ConfigMap",
            json!({"rules": {"configMapName": "team-rules", "key": "rules.yaml", "namespaces": ["shop", "billing"],
                "policy": "rules:\n  - name: billing-only\n    effect: allow\n    when: source.id == \"spiffe://cluster.local/ns/billing/sa/api\"\n"}}),
        ),
        (
            "SPIRE through the CSI driver, an image digest",
            json!({"trustDomain": "example.org", "bundle": {"source": "workloadApi"},
                "image": {"digest": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
                "sidecar": {"config": {"cache": {"decision_ttl": "5s"}, "audit": {"headers": ["user-agent"]}}},
                "rules": {"namespaces": ["shop"]}}),
        ),
        (
            "a Secret bundle, Ignore, no PDB",
            json!({"bundle": {"source": "secret", "name": "spiffe-bundle", "key": "bundle.spiffe"},
                "webhook": {"failurePolicy": "Ignore"}, "injector": {"podDisruptionBudget": {"enabled": false}}}),
        ),
        ("cert-manager-style values, monitors", expected_values()),
        (
            "a NetworkPolicy for the injector",
            json!({"injector": {"networkPolicy": {"enabled": true, "from": [{"ipBlock": {"cidr": "10.0.0.0/24"}}]}}}),
        ),
        ("a governance store over TLS", store_values()),
        (
            "a governance store, its CA in a Secret, another governance ConfigMap",
            json!({"governance": {"configMapName": "oncall-governance",
                "store": {"url": "rediss://redis.platform:6379/0", "ca": {"secret": "redis-ca"}}}}),
        ),
    ];
    // Rendered without a cluster, as every GitOps tool does: with the
    // provided certificate where cert-manager is not chosen.
    sets.into_iter()
        .map(|(name, values)| (name, offline(&values)))
        .collect()
}

fn serde_saphyr_json(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap()
}

// ---------------------------------------------------------------- the chart

#[test]
fn the_chart_lints_strictly_for_kubernetes_1_30_and_1_33() {
    for ((name, values), version) in value_sets()
        .into_iter()
        .flat_map(|set| KUBERNETES_VERSIONS.iter().map(move |v| (set.clone(), v)))
    {
        let report = helm("lint", &values, &format!("v{version}"));
        assert_eq!(report["errors"], json!([]), "{name}: {report}");
        for message in report["messages"].as_array().unwrap() {
            // 1 is info (Helm recommends an icon); warnings and errors fail.
            assert!(
                message["severity"].as_u64().unwrap() < 2,
                "{name}: {message}"
            );
        }
        assert_eq!(report["total_charts_linted"], 1);
    }
}

/// Kinds with no schema in kubernetes-validate (custom resources), checked
/// by the tests below instead.
const CUSTOM_KINDS: &[(&str, &str)] = &[
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "Certificate"),
    ("networking.istio.io/v1", "ServiceEntry"),
    ("security.istio.io/v1", "AuthorizationPolicy"),
    ("networking.istio.io/v1alpha3", "EnvoyFilter"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
];

#[test]
fn every_rendered_manifest_validates_strictly_against_kubernetes_1_30_and_1_33() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut kinds = std::collections::BTreeSet::new();
    for (set, (name, values)) in value_sets().into_iter().enumerate() {
        let rendered = Rendered::of(&values);
        assert!(!rendered.docs.is_empty(), "{name}");
        for (i, doc) in rendered.docs.iter().enumerate() {
            let api = doc["apiVersion"].as_str().unwrap();
            let kind = doc["kind"].as_str().unwrap();
            if CUSTOM_KINDS.contains(&(api, kind)) {
                kinds.insert(kind.to_owned());
                continue;
            }
            let file = dir.path().join(format!("{set}-{i}-{kind}.yaml"));
            std::fs::write(&file, doc.to_string()).unwrap();
            files.push(file.display().to_string());
        }
    }
    for version in KUBERNETES_VERSIONS {
        let mut args = vec!["-m", "kubernetes_validate", "--strict", "-k", version];
        args.extend(files.iter().map(String::as_str));
        let (ok, out, err) = python(&args);
        assert!(ok, "kubernetes-validate {version} failed:\n{out}{err}");
        let passed = out
            .lines()
            .filter(|l| l.starts_with("INFO") && l.contains("passed"))
            .count();
        assert_eq!(
            passed,
            files.len(),
            "not every manifest passed for {version}:\n{out}{err}"
        );
        assert!(!out.contains("WARN") && !out.contains("ERROR"), "{out}");
    }
    // The custom resources were rendered by some value set.
    assert_eq!(kinds.len(), CUSTOM_KINDS.len(), "{kinds:?}");
}

/// The README's governance examples: the ConfigMap and the on-call Role and
/// RoleBinding validate strictly, its revocations pass `celador check`,
/// and the store values pass the schema and reach the injector.
#[test]
fn the_readme_governance_examples_validate_and_render() {
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let start = readme
        .find("\n### Governance: grants and revocations per namespace\n")
        .unwrap();
    let end = start + 1 + readme[start + 1..].find("\n### ").unwrap();
    let blocks: Vec<&str> = readme[start..end]
        .split("```yaml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert_eq!(blocks.len(), 3, "{blocks:?}");
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut kinds = Vec::new();
    for (i, doc) in blocks[..2]
        .iter()
        .flat_map(|b| b.split("\n---\n"))
        .enumerate()
    {
        let value = serde_saphyr_json(doc);
        kinds.push(value["kind"].as_str().unwrap().to_owned());
        if value["kind"] == "ConfigMap" {
            let file = dir.path().join("revocations.yaml");
            std::fs::write(&file, value["data"]["revocations.yaml"].as_str().unwrap()).unwrap();
            let (code, out, err) = support::celador::run(&["check", file.to_str().unwrap()]);
            assert_eq!(code, 0, "{out}{err}");
        }
        let file = dir.path().join(format!("{i}.yaml"));
        std::fs::write(&file, value.to_string()).unwrap();
        files.push(file.display().to_string());
    }
    assert_eq!(kinds, ["ConfigMap", "Role", "RoleBinding"]);
    for version in KUBERNETES_VERSIONS {
        let mut args = vec!["-m", "kubernetes_validate", "--strict", "-k", version];
        args.extend(files.iter().map(String::as_str));
        let (ok, out, err) = python(&args);
        assert!(ok && !out.contains("WARN"), "{version}:\n{out}{err}");
    }
    let values = serde_saphyr_json(blocks[2]);
    let result = helm("schema", &offline(&values), "");
    assert_eq!(result["ok"], true, "{result}");
    let (settings, _) = settings_of(&Rendered::of(&values));
    assert_eq!(celador::inject::sidecar::check_config(&settings), Ok(()));
}

/// Spellings of a duration in Go's grammar (celador's), and not.
const GO_DURATIONS: &[&str] = &[
    "10s",
    "1m30s",
    "1.5s",
    "500ms",
    "2h45m",
    ".5s",
    "5.s",
    "1h0m0.5s",
    "250000us",
    "250000\u{b5}s",
    "250000\u{3bc}s",
];
const NOT_DURATIONS: &[&str] = &[
    "10",
    "1d",
    "-1s",
    "+1s",
    "1.5.5s",
    "1e3s",
    "5 s",
    " 10s",
    "ten seconds",
    "",
    "1s1",
    "P1D",
    "00",
];

/// Every duration value of the chart, spelt the ways above: the schema
/// takes exactly the spellings that what reads the value takes. The
/// injector's reload interval runs in the injector; the sidecar's own
/// durations go through the injector's check of the sidecar config;
/// cert-manager's are Go's grammar (the parser celador uses is tested on
/// Go's own table); Istio's timeout is loaded by Envoy.
#[test]
fn every_duration_value_means_the_same_to_the_schema_and_to_what_reads_it() {
    // (key, values, spelling) for every duration value and spelling; the
    // schema's verdicts and the renderings come from one Helm process each.
    let mut cases: Vec<(String, Value, &str)> = Vec::new();
    for spelling in GO_DURATIONS
        .iter()
        .chain(NOT_DURATIONS)
        .chain(&["0", "0s", "0.0m"])
    {
        let values = json!({"injector": {"tlsReloadInterval": spelling}});
        cases.push(("/injector/tlsReloadInterval".into(), values, spelling));
    }
    for key in ["duration", "renewBefore"] {
        for spelling in GO_DURATIONS.iter().chain(NOT_DURATIONS).chain(&["0"]) {
            let values = json!({"certManager": {"enabled": true, key: spelling}});
            cases.push((format!("/certManager/{key}"), values, spelling));
        }
    }
    for spelling in ISTIO_TIMEOUTS.iter().map(|(s, _)| s) {
        let values = json!({"istio": {"enabled": true, "timeout": spelling}});
        cases.push(("/istio/timeout".into(), values, spelling));
    }
    for key in SIDECAR_DURATIONS {
        for spelling in GO_DURATIONS.iter().chain(NOT_DURATIONS) {
            cases.push((
                format!("sidecar.config.{key}"),
                sidecar_duration(key, spelling),
                spelling,
            ));
        }
    }
    let sets: Vec<Value> = cases.iter().map(|(_, values, _)| offline(values)).collect();
    let verdicts = helm_each("schema", &sets);
    let renders = Rendered::each(&sets);
    let dir = tempfile::tempdir().unwrap();
    let injector = InjectorArgs::new(dir.path());
    for (((key, _, spelling), verdict), render) in cases.iter().zip(&verdicts).zip(renders) {
        let accepted = verdict["ok"] == true;
        if !accepted && key.starts_with('/') {
            let error = verdict["error"].as_str().unwrap();
            assert!(
                error.contains(key.as_str()),
                "{key} {spelling:?}: the error does not name it: {error}"
            );
        }
        let reader_takes = match key.as_str() {
            "/injector/tlsReloadInterval" => injector.takes(spelling, accepted.then_some(&render)),
            "/istio/timeout" => envoy_takes_timeout(spelling, dir.path()),
            key if key.starts_with("/certManager/") => {
                if accepted {
                    let rendered = render.as_ref().unwrap();
                    let certificate = rendered
                        .kind("Certificate")
                        .into_iter()
                        .find(|c| c["metadata"]["name"] == "celador-injector")
                        .unwrap();
                    let field = key.rsplit('/').next().unwrap();
                    assert_eq!(
                        certificate["spec"][field],
                        json!(spelling),
                        "rendered as written"
                    );
                }
                // cert-manager reads them with Go's parser; celador's is
                // tested on Go's own table.
                celador::app::config::parse_duration(spelling).is_ok()
            }
            _ => {
                // The sidecar config is free-form in the schema: the
                // injector checks it as the sidecar will read it.
                let text = settings_text(render.as_ref().unwrap());
                let path = dir.path().join("sidecar.yaml");
                std::fs::write(&path, text).unwrap();
                let loaded = celador::inject::load(&path);
                if let Err(e) = &loaded {
                    let name = key.trim_start_matches("sidecar.config.");
                    assert!(e.to_string().contains(name), "{e}");
                }
                assert!(
                    accepted,
                    "the schema leaves the sidecar config to the injector"
                );
                loaded.is_ok()
            }
        };
        let expected = match key.as_str() {
            "/istio/timeout" => ISTIO_TIMEOUTS.iter().any(|(s, ok)| s == spelling && *ok),
            "/injector/tlsReloadInterval" => GO_DURATIONS.contains(spelling),
            key if key.starts_with("/certManager/") => {
                GO_DURATIONS.contains(spelling) || *spelling == "0"
            }
            _ => GO_DURATIONS.contains(spelling),
        };
        assert_eq!(reader_takes, expected, "{key} {spelling:?}: what reads it");
        if key.starts_with('/') {
            assert_eq!(
                accepted, reader_takes,
                "{key} {spelling:?}: the schema and what reads it disagree"
            );
        }
    }
}

/// The `celador serve` durations a sidecar takes in `sidecar.config`.
const SIDECAR_DURATIONS: &[&str] = &[
    "cache.decision_ttl",
    "cache.svid_max_ttl",
    "shutdown_grace",
    "grants_max_duration",
    "identity.jwt.leeway",
];

/// Values with `spelling` at the sidecar config's dotted `key`.
fn sidecar_duration(key: &str, spelling: &str) -> Value {
    let mut config = json!({});
    let mut slot = &mut config;
    for part in key.split('.') {
        slot = &mut slot[part];
    }
    *slot = json!(spelling);
    if key.starts_with("identity") {
        config["identity"]["jwt"]["audiences"] = json!(["payments"]);
    }
    json!({"sidecar": {"config": config}})
}

/// `istio.timeout` spellings and whether Envoy (and Istio's mesh config,
/// a protobuf Duration) takes them.
const ISTIO_TIMEOUTS: &[(&str, bool)] = &[
    ("0.5s", true),
    ("2s", true),
    ("0.25s", true),
    ("10s", true),
    ("500ms", false),
    ("1m30s", false),
    ("1m", false),
    ("1.5", false),
    ("-1s", false),
    ("1h", false),
];

/// Whether Envoy loads an Istio-generated listener whose ext_authz
/// timeout is `spelling`.
fn envoy_takes_timeout(spelling: &str, dir: &Path) -> bool {
    let mesh = json!({"meshConfig": {"extensionProviders": [{"name": "celador",
        "envoyExtAuthzGrpc": {"service": "celador.ext-authz.local", "port": 9191, "timeout": spelling}}]}});
    let config = istio_inbound(&mesh, 9191, 0, 8080, &dir.join("sds.sock"));
    let file = dir.join("envoy.json");
    std::fs::write(&file, config.to_string()).unwrap();
    let out = Command::new(support::envoy::binary())
        .args(["--mode", "validate", "--log-level", "error", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    out.status.success()
}

/// The injector's settings and certificate, to start it with a reload
/// interval.
struct InjectorArgs {
    settings: PathBuf,
    dir: PathBuf,
}

impl InjectorArgs {
    fn new(dir: &Path) -> InjectorArgs {
        let (_, text) = settings_of(&Rendered::of(&json!({})));
        std::fs::write(dir.join("inject.yaml"), text).unwrap();
        std::fs::write(dir.join("tls.crt"), &provided_tls().cert_pem).unwrap();
        std::fs::write(dir.join("tls.key"), &provided_tls().key_pem).unwrap();
        InjectorArgs {
            settings: dir.join("inject.yaml"),
            dir: dir.to_owned(),
        }
    }

    /// Whether the injector runs with `spelling`: the chart's Deployment
    /// started as the kubelet would when the schema took it (`rendered`),
    /// else the binary given it directly.
    fn takes(&self, spelling: &str, rendered: Option<&Result<Rendered, String>>) -> bool {
        if let Some(rendered) = rendered {
            let rendered = rendered.as_ref().unwrap();
            let container =
                &rendered.one("Deployment")["spec"]["template"]["spec"]["containers"][0];
            assert!(
                container["args"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(spelling))
            );
            let (kubelet, mut injector, _) = start_chart_injector(rendered);
            std::thread::sleep(Duration::from_millis(100));
            let running = injector.0.try_wait().unwrap().is_none();
            assert!(
                running,
                "{spelling:?}: the injector stopped:\n{}",
                kubelet.log("injector")
            );
            return running;
        }
        let (code, _, err) = support::celador::run(&[
            "inject",
            "--config",
            self.settings.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            self.dir.join("tls.crt").to_str().unwrap(),
            "--tls-key",
            self.dir.join("tls.key").to_str().unwrap(),
            &format!("--tls-reload-interval={spelling}"),
        ]);
        assert_eq!(code, 64, "{spelling:?} was taken by the binary: {err}");
        assert!(err.contains("--tls-reload-interval"), "{err}");
        false
    }
}

#[test]
fn the_values_schema_rejects_unknown_keys_and_wrong_types() {
    for (name, values) in value_sets() {
        let result = helm("schema", &values, "");
        assert_eq!(result["ok"], true, "{name}: {result}");
    }
    let bad = [
        (json!({"imagee": {}}), "imagee"),
        (json!({"image": {"tagg": "1"}}), "tagg"),
        (
            json!({"injector": {"replicaCount": "two"}}),
            "/injector/replicaCount",
        ),
        (
            json!({"webhook": {"failurePolicy": "Sometimes"}}),
            "/webhook/failurePolicy",
        ),
        (json!({"bundle": {"source": "vault"}}), "/bundle/source"),
        (json!({"image": {"digest": "latest"}}), "/image/digest"),
        (
            json!({"sidecar": {"config": {"listen": "0.0.0.0:1"}}}),
            "/sidecar/config",
        ),
        (json!({"sidecar": {"runAsUser": 0}}), "/sidecar/runAsUser"),
        (
            json!({"sidecar": {"resources": {"requests": {"cpu": "lots"}}}}),
            "/sidecar/resources/requests/cpu",
        ),
        (
            json!({"rules": {"namespaces": ["Not_A_Namespace"]}}),
            "/rules/namespaces/0",
        ),
        (json!({"istio": {"enabled": "yes"}}), "/istio/enabled"),
        (json!({"serviceAccount": {"nmae": "x"}}), "nmae"),
        (
            json!({"governance": {"store": {"url": "http://redis:6379"}}}),
            "/governance/store/url",
        ),
        (
            json!({"governance": {"store": {"url": "redis://:hunter2@redis:6379/0"}}}),
            "/governance/store/url",
        ),
        (
            json!({"governance": {"store": {"ca": {"configMap": "a", "secret": "b"}}}}),
            "/governance/store/ca",
        ),
        (json!({"governance": {"store": {"passwrd": {}}}}), "passwrd"),
        (
            json!({"metrics": {"podMonitor": {"interval": "soon"}}}),
            "/metrics/podMonitor/interval",
        ),
        (
            json!({"injector": {"topologySpreadConstraints": [{"maxSkew": 1}]}}),
            "/injector/topologySpreadConstraints/0",
        ),
    ];
    for (values, key) in bad {
        let result = helm("schema", &values, "");
        assert_eq!(result["ok"], false, "{values} was accepted");
        let error = result["error"].as_str().unwrap();
        assert!(
            error.contains(key),
            "{values}: the error does not name {key}: {error}"
        );
    }
}

#[test]
fn every_rules_file_the_chart_renders_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for (name, values) in value_sets() {
        let rendered = Rendered::of(&values);
        for map in rendered.kind("ConfigMap") {
            if map["metadata"]["labels"]["app.kubernetes.io/component"] != "rules" {
                continue;
            }
            for (key, text) in map["data"].as_object().unwrap() {
                let file = dir.path().join(format!("{checked}-{key}"));
                std::fs::write(&file, text.as_str().unwrap()).unwrap();
                let (code, out, err) =
                    support::celador::run(&["check", "--deny-warnings", file.to_str().unwrap()]);
                assert_eq!(code, 0, "{name}: {key} does not pass check:\n{out}{err}");
                checked += 1;
            }
        }
    }
    // The default policy in two sets' namespaces, the custom one in two.
    // And the rules of k8s/.
    for file in ["k8s/plain-envoy.yaml", "k8s/istio.yaml"] {
        let docs = k8s_docs(file);
        let rules = docs
            .iter()
            .find(|d| d["metadata"]["name"] == "celador-rules")
            .unwrap();
        let path = dir.path().join("k8s-policy.yaml");
        std::fs::write(&path, rules["data"]["policy.yaml"].as_str().unwrap()).unwrap();
        let (code, out, err) =
            support::celador::run(&["check", "--deny-warnings", path.to_str().unwrap()]);
        assert_eq!(code, 0, "{file}'s rules do not pass check:\n{out}{err}");
    }
    assert_eq!(
        checked, 3,
        "the custom set's two namespaces and the SPIRE set's one"
    );
}

#[test]
fn the_chart_follows_the_conventions_of_well_kept_charts() {
    for (name, values) in value_sets() {
        let rendered = Rendered::of(&values);
        for doc in &rendered.docs {
            let labels = &doc["metadata"]["labels"];
            for key in [
                "app.kubernetes.io/name",
                "app.kubernetes.io/instance",
                "app.kubernetes.io/managed-by",
                "helm.sh/chart",
            ] {
                assert!(
                    labels[key].is_string(),
                    "{name}: {} {} has no {key}",
                    doc["kind"],
                    doc["metadata"]["name"]
                );
            }
            let namespace = doc["metadata"]["namespace"].as_str();
            match doc["kind"].as_str().unwrap() {
                "MutatingWebhookConfiguration" => assert!(namespace.is_none()),
                "AuthorizationPolicy" | "EnvoyFilter" => {
                    assert_eq!(namespace, Some("istio-system"))
                }
                "ConfigMap" if labels["app.kubernetes.io/component"] == "rules" => {}
                _ => assert_eq!(
                    namespace,
                    Some(NAMESPACE),
                    "{name}: {}",
                    doc["metadata"]["name"]
                ),
            }
        }
        // The image: the digest when set, else the tag.
        let image =
            rendered.one("Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap()
                .to_owned();
        match values["image"]["digest"].as_str() {
            Some(digest) => assert_eq!(image, format!("ghcr.io/celador-dev/celador@{digest}")),
            None => assert_eq!(image, "ghcr.io/celador-dev/celador:0.1.0"),
        }
        // The release namespace and kube-system are never sent to the webhook.
        let webhook = rendered.one("MutatingWebhookConfiguration");
        for hook in webhook["webhooks"].as_array().unwrap() {
            let excluded = &hook["namespaceSelector"]["matchExpressions"][0];
            assert_eq!(excluded["key"], "kubernetes.io/metadata.name");
            assert_eq!(excluded["operator"], "NotIn");
            for ns in ["kube-system", NAMESPACE] {
                assert!(
                    excluded["values"].as_array().unwrap().contains(&json!(ns)),
                    "{name}"
                );
            }
            assert_eq!(
                hook["failurePolicy"],
                values["webhook"]["failurePolicy"]
                    .as_str()
                    .unwrap_or("Fail")
            );
            assert_eq!(hook["sideEffects"], "None");
            assert_eq!(hook["admissionReviewVersions"], json!(["v1"]));
            assert_eq!(hook["clientConfig"]["service"]["path"], "/inject");
        }
    }
    // No template names a namespace of its own.
    for entry in std::fs::read_dir(repo("charts/celador/templates")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!text.contains("celador-system") && !text.contains("namespace: default"));
    }
}

#[test]
fn the_webhook_certificate_is_made_by_helm_or_by_cert_manager() {
    // Without a cluster (helm template, Argo CD), Helm's own certificate
    // would be new on every render: refused, saying what to do instead.
    for values in [json!({}), json!({"istio": {"enabled": true}})] {
        let refused = Rendered::exactly(&values)
            .err()
            .expect("rendered without a cluster");
        for words in [
            "rendered without a cluster",
            "every sync would rotate it",
            "certManager.enabled=true",
            "tls.existingSecret with tls.caCertificate",
            "--dry-run=server",
        ] {
            assert!(refused.contains(words), "{words}: {refused}");
        }
    }
    // `helm lint` stays usable on the defaults: Helm's lint mode does not
    // stop at `fail`.
    let report = helm("lint", &json!({}), &format!("v{KUBERNETES}"));
    assert_eq!(report["errors"], json!([]), "{report}");
    // A provided certificate: no Secret of the chart's, its CA in the
    // caBundle, its Secret mounted.
    let provided = Rendered::of(&json!({}));
    assert!(provided.kind("Secret").is_empty());
    assert!(provided.kind("Certificate").is_empty());
    let webhook = provided.one("MutatingWebhookConfiguration");
    for hook in webhook["webhooks"].as_array().unwrap() {
        assert_eq!(
            support::base64_decode(hook["clientConfig"]["caBundle"].as_str().unwrap()),
            provided_tls().ca_pem.as_bytes()
        );
    }
    let mounted = |rendered: &Rendered| {
        rendered.one("Deployment")["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "tls")
            .unwrap()["secret"]["secretName"]
            .clone()
    };
    let other = Rendered::of(
        &json!({"tls": {"existingSecret": "corp-webhook-tls", "caCertificate": provided_tls().ca_pem}}),
    );
    assert_eq!(mounted(&other), "corp-webhook-tls");
    // The CA is required with the Secret, and the two ways exclude each other.
    let schema = helm(
        "schema",
        &json!({"tls": {"existingSecret": "corp-webhook-tls"}}),
        "",
    );
    assert_eq!(schema["ok"], false, "{schema}");
    assert!(
        schema["error"].as_str().unwrap().contains("caCertificate"),
        "{schema}"
    );
    let both = Rendered::exactly(&json!({"certManager": {"enabled": true},
        "tls": {"existingSecret": "x", "caCertificate": provided_tls().ca_pem}}));
    assert!(both.err().unwrap().contains("not both"));

    let managed = Rendered::of(&json!({"certManager": {"enabled": true}}));
    assert!(
        managed.kind("Secret").is_empty(),
        "cert-manager writes the Secret"
    );
    let webhook = managed.one("MutatingWebhookConfiguration");
    assert_eq!(
        webhook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        format!("{NAMESPACE}/celador-injector")
    );
    for hook in webhook["webhooks"].as_array().unwrap() {
        assert!(hook["clientConfig"].get("caBundle").is_none());
    }
    let serving = managed
        .kind("Certificate")
        .into_iter()
        .find(|c| c["metadata"]["name"] == "celador-injector")
        .unwrap();
    assert_eq!(serving["spec"]["secretName"], "celador-injector-tls");
    assert!(
        serving["spec"]["dnsNames"]
            .as_array()
            .unwrap()
            .contains(&json!("celador-injector.celador-system.svc"))
    );
    assert_eq!(mounted(&managed), "celador-injector-tls");
}

#[test]
fn the_injector_network_policy_admits_only_the_webhook_port_from_the_peers_given() {
    assert!(
        Rendered::of(&json!({})).kind("NetworkPolicy").is_empty(),
        "off by default"
    );
    let from = json!([{"ipBlock": {"cidr": "10.0.0.0/24"}}]);
    let rendered =
        Rendered::of(&json!({"injector": {"networkPolicy": {"enabled": true, "from": from}}}));
    let policy = rendered.one("NetworkPolicy");
    let pod_labels = &rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"];
    for (key, value) in policy["spec"]["podSelector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &pod_labels[key], value,
            "the policy selects the injector's pods"
        );
    }
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(
        policy["spec"]["egress"],
        json!([]),
        "the injector calls nothing"
    );
    let ingress = policy["spec"]["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 1);
    assert_eq!(ingress[0]["from"], from);
    let port = &ingress[0]["ports"][0];
    let container = &rendered.one("Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(port["port"], container["ports"][0]["name"]);
    assert_eq!(container["ports"][0]["containerPort"], 8443);
    // Without peers: any source, still only that port.
    let open = Rendered::of(&json!({"injector": {"networkPolicy": {"enabled": true}}}));
    let ingress = &open.one("NetworkPolicy")["spec"]["ingress"][0];
    assert!(ingress.get("from").is_none());
    assert_eq!(ingress["ports"][0]["port"], "https");
}

/// The values a cert-manager chart user expects, all set.
fn expected_values() -> Value {
    json!({
        "serviceAccount": {"create": true, "name": "celador-webhook", "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}},
        "injector": {
            "podSecurityContext": {"runAsNonRoot": true, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"}},
            "securityContext": {"runAsNonRoot": true, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
            "extraArgs": ["--tls-reload-interval=30s"],
            "extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"}],
            "extraVolumes": [{"name": "scratch", "emptyDir": {}}],
            "extraVolumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "injector"}}}]
        },
        "sidecar": {"securityContext": {"runAsUser": null, "runAsGroup": null}},
        "metrics": {"podMonitor": {"enabled": true, "labels": {"release": "prometheus"}},
            "serviceMonitor": {"enabled": true, "interval": "1m"}, "dashboard": {"enabled": true}}
    })
}

#[test]
fn the_chart_takes_the_values_cert_managers_users_expect() {
    let rendered = Rendered::of(&expected_values());
    let account = rendered.one("ServiceAccount");
    assert_eq!(account["metadata"]["name"], "celador-webhook");
    assert_eq!(
        account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::1:role/x"
    );
    assert_eq!(account["automountServiceAccountToken"], false);
    let spec = &rendered.one("Deployment")["spec"]["template"]["spec"];
    assert_eq!(spec["serviceAccountName"], "celador-webhook");
    assert_eq!(
        spec["securityContext"]["runAsUser"], 10001,
        "no longer borrowed from sidecar.runAsUser"
    );
    assert_eq!(spec["securityContext"]["fsGroup"], 10001);
    let container = &spec["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert!(
        container["args"]
            .as_array()
            .unwrap()
            .contains(&json!("--tls-reload-interval=30s"))
    );
    assert_eq!(
        container["env"],
        json!([{"name": "RUST_BACKTRACE", "value": "1"}])
    );
    assert!(
        container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/scratch")
    );
    assert!(
        spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "scratch")
    );
    assert_eq!(
        spec["topologySpreadConstraints"][0]["topologyKey"],
        "topology.kubernetes.io/zone"
    );
    // The chart's injector runs with these values, as the kubelet would.
    let (kubelet, mut injector, _) = start_chart_injector(&rendered);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        injector.0.try_wait().unwrap().is_none(),
        "{}",
        kubelet.log("injector")
    );
    drop(injector);
    // The sidecar's override: the user left to the platform (OpenShift).
    let (settings, _) = settings_of(&rendered);
    let mut pod = pod("shop", json!({}));
    celador::inject::review::inject(&mut pod, &settings).unwrap();
    let security = &pod["spec"]["initContainers"][0]["securityContext"];
    assert!(
        security.get("runAsUser").is_none() && security.get("runAsGroup").is_none(),
        "{security}"
    );
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    // An existing account; and overrides that would weaken the sidecar are
    // refused, each with why.
    let existing = Rendered::of(&json!({"serviceAccount": {"create": false, "name": "shared"}}));
    assert!(existing.kind("ServiceAccount").is_empty());
    assert_eq!(
        existing.one("Deployment")["spec"]["template"]["spec"]["serviceAccountName"],
        "shared"
    );
    let nameless = Rendered::exactly(&offline(&json!({"serviceAccount": {"create": false}})));
    assert!(
        nameless
            .err()
            .unwrap()
            .contains("serviceAccount.name must name an existing ServiceAccount")
    );
    for (weakening, why) in [
        (json!({"privileged": true}), "privileged"),
        (json!({"runAsNonRoot": false}), "runAsNonRoot"),
        (json!({"runAsUser": 0}), "runAsUser 0"),
        (
            json!({"readOnlyRootFilesystem": null}),
            "readOnlyRootFilesystem",
        ),
        (
            json!({"allowPrivilegeEscalation": true}),
            "allowPrivilegeEscalation",
        ),
        (
            json!({"capabilities": {"add": ["NET_ADMIN"]}}),
            "capabilities.add",
        ),
        (
            json!({"seccompProfile": {"type": "Unconfined"}}),
            "seccompProfile",
        ),
        (
            json!({"runAsUsr": 1}),
            "'runAsUsr' is not a securityContext field",
        ),
    ] {
        let text = settings_text(&Rendered::of(
            &json!({"sidecar": {"securityContext": weakening}}),
        ));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inject.yaml");
        std::fs::write(&path, text).unwrap();
        let error = celador::inject::load(&path).unwrap_err().to_string();
        assert!(
            error.contains("security_context:") && error.contains(why),
            "{weakening}: {error}"
        );
    }
}

#[test]
fn the_monitors_scrape_what_celador_and_its_injector_serve() {
    assert!(
        Rendered::of(&json!({})).kind("PodMonitor").is_empty(),
        "off by default"
    );
    assert!(
        Rendered::of(&json!({})).kind("ServiceMonitor").is_empty(),
        "off by default"
    );
    let rendered = Rendered::of(&expected_values());
    // The PodMonitor selects injected pods and the port the injector names.
    let monitor = rendered.one("PodMonitor");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"][celador::inject::INJECTED_LABEL],
        "true"
    );
    assert_eq!(monitor["spec"]["namespaceSelector"], json!({"any": true}));
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["path"], "/metrics");
    let (settings, _) = settings_of(&rendered);
    let mut pod = pod("shop", json!({}));
    celador::inject::review::inject(&mut pod, &settings).unwrap();
    assert!(pod["metadata"]["labels"][celador::inject::INJECTED_LABEL] == "true");
    let port = pod["spec"]["initContainers"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == endpoint["port"])
        .expect("the injected container has the PodMonitor's port")
        .clone();
    assert_eq!(port["containerPort"], settings.ports.admin);
    // The ServiceMonitor selects the injector's Service, on its HTTPS port,
    // trusting the webhook's CA.
    let service_monitor = rendered.one("ServiceMonitor");
    let service = rendered.one("Service");
    for (key, value) in service_monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&service["metadata"]["labels"][key], value);
    }
    let endpoint = &service_monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], service["spec"]["ports"][0]["name"]);
    assert_eq!(
        (
            endpoint["scheme"].as_str(),
            endpoint["path"].as_str(),
            endpoint["interval"].as_str()
        ),
        (Some("https"), Some("/metrics"), Some("1m"))
    );
    assert_eq!(
        endpoint["tlsConfig"]["ca"]["secret"]["name"],
        PROVIDED_SECRET
    );
    assert_eq!(
        endpoint["tlsConfig"]["serverName"],
        "celador-injector.celador-system.svc"
    );
    // And the injector serves its metrics there, counting reviews.
    let (_kubelet, _injector, addr) = start_chart_injector(&rendered);
    let (status, _, _) = post(
        addr,
        &provided_tls().ca_pem,
        "/inject",
        &review(&pod_in("shop"), "CREATE"),
    );
    assert_eq!(status, 200);
    let metrics = https_get(addr, &provided_tls().ca_pem, "/metrics");
    assert!(
        metrics.contains("celador_injector_reviews_total{outcome=\"injected\"} 1"),
        "{metrics}"
    );
}

/// Every metric name a PromQL expression uses.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("celador_") {
        let name: String = rest[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[start + name.len()..];
        names.push(name);
    }
    names
}

/// The series names a `/metrics` text offers: every sample's, and those a
/// family without samples yet would have (from its `# TYPE`).
fn exported_series(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total", "_created"],
                "histogram" => &["_bucket", "_sum", "_count", "_created"],
                "info" => &["_info"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#')
            && let Some(name) = line.split(['{', ' ']).next().filter(|n| !n.is_empty())
        {
            names.insert(name.to_owned());
        }
    }
    names
}

#[test]
fn the_grafana_dashboard_uses_only_metrics_celador_exports() {
    let text = std::fs::read_to_string(repo("charts/celador/dashboards/celador.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "celador-decisions");
    let mut exprs = Vec::new();
    let mut titles = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        titles.push(panel["title"].as_str().unwrap().to_owned());
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    for wanted in [
        "Decisions by outcome",
        "Denials by reason",
        "Check latency inside celador",
        "Cache hit ratio",
        "Rules and governance reloads",
        "Shadow differences",
        "Store staleness",
    ] {
        assert!(
            titles.iter().any(|t| t == wanted),
            "no {wanted} panel: {titles:?}"
        );
    }
    // A running celador's /metrics, as the kubelet would run the injected
    // sidecar.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _guard = runtime.enter();
    let values =
        serde_saphyr_json(&std::fs::read_to_string(repo("k8s/istio-values.yaml")).unwrap());
    let rendered = Rendered::of(&values);
    let (settings, _) = settings_of(&rendered);
    let mut pod = pod("shop", json!({}));
    celador::inject::review::inject(&mut pod, &settings).unwrap();
    let root = Ca::root("cluster.local");
    let mut objects = k8s_docs("k8s/istio.yaml");
    objects.push(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "istio-ca-root-cert", "namespace": "shop"}, "data": {"root-cert.pem": root.pem}}));
    let kubelet = Kubelet::new(pod, "shop", objects, &[9191, 9192, 9901], &[]);
    let _celador = Running(kubelet.start("celador"));
    wait_ready(&kubelet, 9901, "celador");
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", kubelet.ports[&9901])
        .parse()
        .unwrap();
    let (status, metrics) = try_get(admin, "/metrics").unwrap();
    assert_eq!(status, 200);
    let exported = exported_series(&metrics);
    let mut checked = 0;
    for expr in &exprs {
        for name in metric_names(expr) {
            assert!(
                exported.contains(&name),
                "the dashboard queries {name}, which celador does not export:\n{expr}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked}");
    // The chart can ship it to Grafana's sidecar as is.
    let rendered = Rendered::of(&expected_values());
    let map = rendered
        .kind("ConfigMap")
        .into_iter()
        .find(|m| m["metadata"]["labels"]["app.kubernetes.io/component"] == "dashboard")
        .unwrap();
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Value =
        serde_json::from_str(map["data"]["celador.json"].as_str().unwrap()).unwrap();
    assert_eq!(shipped, dashboard);
}

#[test]
fn istio_resources_agree_with_the_mesh_config_the_notes_print() {
    let values = value_sets()
        .into_iter()
        .find(|(n, _)| *n == "istio")
        .unwrap()
        .1;
    let rendered = Rendered::of(&values);
    let entry = rendered.one("ServiceEntry");
    assert_eq!(
        entry["spec"]["endpoints"],
        json!([{"address": "127.0.0.1"}])
    );
    assert_eq!(entry["spec"]["resolution"], "STATIC");
    assert_eq!(entry["spec"]["ports"][0]["number"], 9191);
    let policy = rendered.one("AuthorizationPolicy");
    assert_eq!(policy["spec"]["action"], "CUSTOM");
    assert_eq!(
        policy["spec"]["selector"]["matchLabels"][celador::inject::INJECTED_LABEL],
        "true"
    );
    let filter = rendered.one("EnvoyFilter");
    assert_eq!(
        filter["spec"]["workloadSelector"]["labels"][celador::inject::INJECTED_LABEL],
        "true"
    );
    let patch = &filter["spec"]["configPatches"][0];
    assert_eq!(patch["patch"]["operation"], "MERGE");
    assert_eq!(
        patch["patch"]["value"]["typed_config"]["include_peer_certificate"],
        true
    );

    // NOTES prints the meshConfig entry; it names the provider the policy
    // uses, at the ServiceEntry's host and port.
    let mesh = mesh_config_of(&rendered.notes);
    let provider = &mesh["meshConfig"]["extensionProviders"][0];
    assert_eq!(provider["name"], policy["spec"]["provider"]["name"]);
    assert_eq!(
        provider["envoyExtAuthzGrpc"]["service"],
        entry["spec"]["hosts"][0]
    );
    assert_eq!(
        provider["envoyExtAuthzGrpc"]["port"],
        entry["spec"]["ports"][0]["number"]
    );
    assert_eq!(provider["envoyExtAuthzGrpc"]["failOpen"], false);
}

/// The headers `celador envoy-config` lets Envoy send for the sidecar
/// config the injector builds from `rendered` and the rules it writes;
/// `None` when every header is sent.
fn envoy_config_headers(rendered: &Rendered) -> Option<Vec<String>> {
    let (settings, _) = settings_of(rendered);
    let dir = tempfile::tempdir().unwrap();
    let mut config: Value =
        serde_json::from_str(&celador::inject::sidecar::config_text(&settings)).unwrap();
    let rules = rendered
        .kind("ConfigMap")
        .into_iter()
        .find(|m| m["metadata"]["labels"]["app.kubernetes.io/component"] == "rules")
        .expect("the value set writes rules");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        rules["data"][&settings.rules.key].as_str().unwrap(),
    )
    .unwrap();
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(&bundle, &provided_tls().ca_pem).unwrap();
    config["policy"] = json!(policy);
    config["trust_domains"] = json!({settings.trust_domain.clone(): {"bundle": bundle}});
    config["workload"] = json!({"downward_api": dir.path()});
    let file = dir.path().join("celador.yaml");
    std::fs::write(&file, config.to_string()).unwrap();
    let (code, out, err) =
        support::celador::run(&["envoy-config", "--config", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    if out.contains("every\n    # header is sent") {
        return None;
    }
    Some(
        out.lines()
            .filter_map(|l| l.trim().strip_prefix("- exact: "))
            .map(str::to_owned)
            .collect(),
    )
}

#[test]
fn the_istio_envoy_filter_sends_only_the_headers_celador_envoy_config_computes() {
    let tenant_rule = "rules:\n  - name: tenant\n    effect: allow\n    when: request.headers[\"x-tenant\"] == \"acme\" && request.size < 4096\n";
    let whole_map = "rules:\n  - name: any-debug\n    effect: deny\n    when: request.headers.exists(h, h.startsWith(\"x-debug\"))\n";
    let cases = [
        json!({"istio": {"enabled": true}, "rules": {"namespaces": ["shop"]}}),
        json!({"istio": {"enabled": true, "forwardChain": true, "ruleHeaders": ["X-Tenant", "content-length"]},
            "rules": {"namespaces": ["shop"], "policy": tenant_rule},
            "sidecar": {"config": {"identity": {"require": "either", "jwt": {"header": "x-jwt-svid", "audiences": ["payments"]}},
                "audit": {"headers": ["user-agent"]}}}}),
        json!({"istio": {"enabled": true, "sendAllHeaders": true}, "rules": {"namespaces": ["shop"], "policy": whole_map}}),
    ];
    for values in cases {
        let rendered = Rendered::of(&values);
        let expected = envoy_config_headers(&rendered);
        let filter = rendered.one("EnvoyFilter");
        let typed = &filter["spec"]["configPatches"][0]["patch"]["value"]["typed_config"];
        let sent: Option<Vec<String>> = typed.get("allowed_headers").map(|allowed| {
            allowed["patterns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["exact"].as_str().unwrap().to_owned())
                .collect()
        });
        assert_eq!(sent, expected, "{values}");
        // NOTES names them, and says why the EnvoyFilter sets them.
        match &expected {
            Some(headers) => {
                assert!(
                    rendered.notes.contains(&headers.join(", ")),
                    "{}",
                    rendered.notes
                );
                assert!(rendered.notes.contains("no includeRequestHeadersInCheck"));
            }
            None => assert!(rendered.notes.contains("every request header")),
        }
        // Istio's gRPC provider has no such field: the mesh config stays
        // what Istio takes.
        let mesh = mesh_config_of(&rendered.notes);
        let provider = &mesh["meshConfig"]["extensionProviders"][0]["envoyExtAuthzGrpc"];
        let mut keys: Vec<&str> = provider
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["failOpen", "port", "service", "timeout"]);
    }
}

/// The `meshConfig` block NOTES.txt prints, parsed.
fn mesh_config_of(notes: &str) -> Value {
    let start = notes
        .find("meshConfig:")
        .expect("NOTES print the mesh config");
    let block: String = notes[start..]
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(|l| format!("{}\n", l.strip_prefix("     ").unwrap_or(l)))
        .collect();
    serde_saphyr_json(&block)
}

/// `celador inject --config CONFIG --pod FILE`: (exit code, stdout, stderr).
fn preview(config: &str, file: &str) -> (i32, String, String) {
    support::celador::run(&["inject", "--config", config, "--pod", file])
}

// ---------------------------------------------------------------- the chart's README

/// Every `# --` comment of values.yaml and the dotted key it documents, in
/// file order (helm-docs' convention: the comment above a key documents
/// it; a map without one is a section whose keys are documented).
fn documented_values(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut doc: Option<String> = None;
    let mut block_scalar_above: Option<usize> = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        if let Some(key_indent) = block_scalar_above {
            if trimmed.is_empty() || indent > key_indent {
                continue;
            }
            block_scalar_above = None;
        }
        if let Some(rest) = trimmed.strip_prefix("# --") {
            doc = Some(rest.trim().to_owned());
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix('#') {
            if let Some(d) = doc.as_mut() {
                d.push(' ');
                d.push_str(rest.trim());
            }
            continue;
        }
        let Some((key, value)) = trimmed.split_once(':') else {
            doc = None;
            continue;
        };
        if trimmed.starts_with('-') || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            doc = None;
            continue;
        }
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        let path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).chain([key]).collect();
        if let Some(d) = doc.take() {
            out.push((path.join("."), d));
        }
        stack.push((indent, key.to_owned()));
        if matches!(value.trim(), "|" | "|-" | ">" | ">-") {
            block_scalar_above = Some(indent);
        }
    }
    out
}

/// The chart's README: a table of every value, generated from values.yaml.
fn chart_readme() -> String {
    let text = std::fs::read_to_string(repo("charts/celador/values.yaml")).unwrap();
    let values = serde_saphyr_json(&text);
    let chart =
        serde_saphyr_json(&std::fs::read_to_string(repo("charts/celador/Chart.yaml")).unwrap());
    let documented = documented_values(&text);
    // Every value is documented, itself or as a whole map.
    fn undocumented(
        value: &Value,
        path: &str,
        documented: &[(String, String)],
        out: &mut Vec<String>,
    ) {
        if documented.iter().any(|(k, _)| k == path) {
            return;
        }
        match value.as_object() {
            Some(map) if !map.is_empty() => {
                for (key, child) in map {
                    let child_path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    undocumented(child, &child_path, documented, out);
                }
            }
            _ => out.push(path.to_owned()),
        }
    }
    let mut missing = Vec::new();
    undocumented(&values, "", &documented, &mut missing);
    assert!(
        missing.is_empty(),
        "values.yaml has values without a `# --` comment: {missing:?}"
    );
    let cell = |text: &str| text.replace('|', "\\|");
    let mut rows = String::new();
    for (key, description) in &documented {
        let value = key.split('.').fold(&values, |v, k| &v[k]);
        let kind = match value {
            Value::String(_) => "string",
            Value::Bool(_) => "bool",
            Value::Number(n) if n.is_i64() || n.is_u64() => "int",
            Value::Number(_) => "float",
            Value::Array(_) => "list",
            Value::Object(_) => "object",
            Value::Null => "null",
        };
        rows.push_str(&format!(
            "| `{key}` | {kind} | `{}` | {} |\n",
            cell(&value.to_string()),
            cell(description)
        ));
    }
    format!(
        "# celador's Helm chart\n\n{}\n\nInstall it, then opt a namespace in (`kubectl label namespace shop celador.io/inject=enabled`):\n\n```sh\nhelm install celador charts/celador --namespace celador-system --create-namespace\n```\n\n`helm template` (and Argo CD, which renders with it) needs `certManager.enabled=true` or `tls.existingSecret` with `tls.caCertificate`: without a cluster Helm cannot keep the webhook certificate it makes. The repository's README (its Kubernetes section) explains every choice; `NOTES.txt` prints the next steps with your values.\n\n## Values\n\nThis table is generated from [`values.yaml`](values.yaml) by `tests/kubernetes.rs` (`CELADOR_BLESS=1 cargo test --test kubernetes the_chart_readme` rewrites it; the test fails when it is stale). [`values.schema.json`](values.schema.json) refuses unknown keys and wrong types.\n\n| Key | Type | Default | Description |\n|-----|------|---------|-------------|\n{rows}",
        chart["description"].as_str().unwrap().trim()
    )
}

#[test]
fn the_chart_readme_is_generated_from_values_yaml_and_documents_every_value() {
    let path = repo("charts/celador/README.md");
    let generated = chart_readme();
    if std::env::var_os("CELADOR_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "charts/celador/README.md is out of date with values.yaml; regenerate it with `CELADOR_BLESS=1 cargo test --test kubernetes the_chart_readme`"
    );
    // A value the schema knows is a value the README documents, and back.
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(repo("charts/celador/values.schema.json")).unwrap(),
    )
    .unwrap();
    for (key, _) in
        documented_values(&std::fs::read_to_string(repo("charts/celador/values.yaml")).unwrap())
    {
        let mut node = &schema;
        for part in key.split('.') {
            node = &node["properties"][part];
        }
        assert!(!node.is_null(), "the schema has no {key}");
    }
}

// ---------------------------------------------------------------- the injector

fn settings_of(rendered: &Rendered) -> (Settings, String) {
    let text = settings_text(rendered);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inject.yaml");
    std::fs::write(&path, &text).unwrap();
    (celador::inject::load(&path).unwrap(), text)
}

/// The injector's settings file as rendered, not loaded.
fn settings_text(rendered: &Rendered) -> String {
    let map = rendered
        .kind("ConfigMap")
        .into_iter()
        .find(|m| m["metadata"]["name"] == "celador-injector")
        .unwrap();
    map["data"]["inject.yaml"].as_str().unwrap().to_owned()
}

/// The chart's values for a governance store over TLS: a password Secret
/// and a CA ConfigMap in each namespace.
fn store_values() -> Value {
    json!({"governance": {"store": {"url": "rediss://redis.platform:6379/0", "username": "celador-sidecar",
        "passwordSecret": {"name": "redis-celador"}, "ca": {"configMap": "redis-ca"},
        "keyPrefix": "shop-fleet", "signalsInterval": "1s"}}})
}

/// The sidecar config is in the `governance:` form whatever the values
/// say: the chart's store merged with `sidecar.config.governance`, and a
/// deprecated top-level key of `sidecar.config` (`revocations`) moved under
/// `governance`, over the injector's default; `celador serve` takes it
/// without a deprecation.
#[test]
fn sidecar_governance_keys_are_merged_under_governance_whatever_the_values_spelling() {
    let mut values = store_values();
    merge(
        &mut values,
        &json!({"sidecar": {"config": {"revocations": "/etc/fleet/revocations.yaml",
            "governance": {"grants_max_duration": "2h"}}}}),
    );
    let (settings, _) = settings_of(&Rendered::of(&values));
    // The injector names the deprecated key (it logs it at start-up).
    assert_eq!(
        settings.deprecated_config_keys().collect::<Vec<_>>(),
        ["revocations"]
    );
    let text = celador::inject::sidecar::config_text(&settings);
    let config: Value = serde_json::from_str(&text).unwrap();
    let governance = &config["governance"];
    assert_eq!(governance["store"], "rediss://redis.platform:6379/0");
    assert_eq!(governance["grants_max_duration"], "2h");
    assert_eq!(governance["revocations"], "/etc/fleet/revocations.yaml");
    assert_eq!(
        governance["grants"],
        json!({"path": "/etc/celador/governance/grants.yaml", "optional": true})
    );
    assert!(config.get("revocations").is_none(), "{config}");
    let parsed =
        celador::app::config::Config::parse(&text, std::path::Path::new("sidecar")).unwrap();
    assert!(parsed.deprecations().is_empty());
    assert_eq!(
        parsed.governance().grants_max_duration.0,
        std::time::Duration::from_secs(7200)
    );
}

/// An empty `config.governance` keeps the namespace's files and the
/// operator's; any other non-mapping, or a key given in both spellings, is
/// refused when the settings load, naming it.
#[test]
fn an_empty_config_governance_drops_nothing_and_ambiguous_ones_are_refused() {
    let base = std::fs::read_to_string(repo("examples/inject.yaml")).unwrap();
    let parse = |extra: &str| {
        let text = base.replace("config:\n", &format!("config:\n{extra}"));
        assert!(text.contains(extra));
        Settings::parse(&text, std::path::Path::new("inject.yaml"))
    };
    let settings =
        parse("  revocations: /etc/ops/revocations.yaml\n  governance:\n    # store: later\n")
            .unwrap();
    let config: Value =
        serde_json::from_str(&celador::inject::sidecar::config_text(&settings)).unwrap();
    let governance = &config["governance"];
    assert_eq!(
        governance["revocations"], "/etc/ops/revocations.yaml",
        "{config}"
    );
    assert_eq!(
        governance["grants"],
        json!({"path": "/etc/celador/governance/grants.yaml", "optional": true})
    );
    let refused = parse("  governance: yes\n").unwrap_err().to_string();
    assert!(
        refused.contains("config.governance: a mapping"),
        "{refused}"
    );
    let both = parse("  revocations: /a.yaml\n  governance:\n    revocations: /b.yaml\n")
        .unwrap_err()
        .to_string();
    assert!(
        both.contains("config.revocations and config.governance.revocations"),
        "{both}"
    );
}

/// `governance.store` reaches the sidecar: its config's `governance`
/// section, the password from the Secret in an environment variable (never
/// in the config), the CA mounted where `ca_file` says; and `celador serve`
/// takes that config.
#[test]
fn the_governance_store_values_reach_the_sidecar_config_env_and_mounts() {
    let (settings, _) = settings_of(&Rendered::of(&store_values()));
    let mut pod = pod_in("shop");
    assert_eq!(
        celador::inject::review::inject(&mut pod, &settings),
        Ok(None)
    );
    let celador = &pod["spec"]["initContainers"][0];
    let config: Value = serde_json::from_str(celador["env"][3]["value"].as_str().unwrap()).unwrap();
    assert_eq!(
        config["governance"],
        json!({"store": "rediss://redis.platform:6379/0", "username": "celador-sidecar",
            "password_env": "CELADOR_STORE_PASSWORD", "ca_file": "/etc/celador/store-ca/ca.crt",
            "key_prefix": "shop-fleet", "startup_wait": "5s", "signals_interval": "1s",
            "grants": {"path": "/etc/celador/governance/grants.yaml", "optional": true},
            "revocations": {"path": "/etc/celador/governance/revocations.yaml", "optional": true}})
    );
    assert!(
        celador["env"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "CELADOR_STORE_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "redis-celador", "key": "password"}}})),
        "{celador}"
    );
    assert!(celador["volumeMounts"].as_array().unwrap().contains(
        &json!({"name": "celador-store-ca", "mountPath": "/etc/celador/store-ca", "readOnly": true})
    ));
    assert!(
        pod["spec"]["volumes"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "celador-store-ca",
        "configMap": {"name": "redis-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}))
    );
    assert_eq!(celador::inject::sidecar::check_config(&settings), Ok(()));
    // Without a store, none of it.
    let (settings, _) = settings_of(&Rendered::of(&json!({})));
    let mut pod = pod_in("shop");
    assert_eq!(
        celador::inject::review::inject(&mut pod, &settings),
        Ok(None)
    );
    let text = pod.to_string();
    assert!(
        !text.contains("CELADOR_STORE_PASSWORD") && !text.contains("store-ca"),
        "{text}"
    );
}

fn default_settings() -> Settings {
    settings_of(&Rendered::of(&json!({}))).0
}

fn pod(namespace: &str, extra: Value) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "web-7d4b9c-", "namespace": namespace, "labels": {"app": "web"}},
        "spec": {"serviceAccountName": "web", "containers": [{"name": "app", "image": "hashicorp/http-echo:1.0"}]}
    });
    merge(&mut pod, &extra);
    pod
}

fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (slot, value) => *slot = value.clone(),
    }
}

fn review(pod: &Value, operation: &str) -> Vec<u8> {
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("shop");
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace, "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller", "uid": "1", "groups": ["system:serviceaccounts"]},
            "object": pod, "oldObject": null, "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
    .to_string()
    .into_bytes()
}

/// Answers `body`; returns the response, the outcome and the patched pod.
fn admit(body: &[u8], pod: &Value, settings: &Settings) -> (Value, Outcome, Value) {
    let (review, outcome) = answer(body, settings);
    let review: Value = serde_json::from_slice(&encode(&review).unwrap()).unwrap();
    let response = review["response"].clone();
    let mut patched = pod.clone();
    if let Some(patch) = response["patch"].as_str() {
        assert_eq!(response["patchType"], "JSONPatch");
        let patch: json_patch::Patch =
            serde_json::from_slice(&support::base64_decode(patch)).unwrap();
        json_patch::patch(&mut patched, &patch).unwrap();
    }
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    (response, outcome, patched)
}

#[test]
fn the_injector_adds_a_locked_down_native_sidecar() {
    let settings = default_settings();
    let pod = pod("shop", json!({}));
    let (response, outcome, injected) = admit(&review(&pod, "CREATE"), &pod, &settings);
    assert_eq!(outcome, Outcome::Injected);
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(response["allowed"], true);
    let sidecar = &injected["spec"]["initContainers"][0];
    assert_eq!(sidecar["name"], "celador");
    assert_eq!(sidecar["restartPolicy"], "Always");
    assert_eq!(sidecar["command"], json!(["/usr/local/bin/celador"]));
    assert_eq!(
        sidecar["args"],
        json!(["serve", "--config-env", "CELADOR_CONFIG"])
    );
    let security = &sidecar["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(sidecar["startupProbe"]["grpc"]["port"], 9192);
    assert_eq!(sidecar["readinessProbe"]["grpc"]["port"], 9192);
    assert_eq!(sidecar["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(sidecar["resources"]["requests"]["memory"], "24Mi");
    let env: Vec<&str> = sidecar["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        env,
        [
            "POD_NAME",
            "POD_NAMESPACE",
            "POD_SERVICE_ACCOUNT",
            "CELADOR_CONFIG"
        ]
    );
    let config: Value = serde_json::from_str(sidecar["env"][3]["value"].as_str().unwrap()).unwrap();
    assert_eq!(
        config["listen"], "127.0.0.1:9191",
        "ext_authz stays on the loopback"
    );
    assert_eq!(config["policy"], "/etc/celador/rules/policy.yaml");
    assert_eq!(
        config["trust_domains"]["cluster.local"]["bundle"],
        "/etc/celador/bundle/root-cert.pem"
    );
    assert_eq!(config["workload"]["downward_api"], "/etc/celador/podinfo");
    let volumes = injected["spec"]["volumes"].as_array().unwrap();
    let volume = |name: &str| volumes.iter().find(|v| v["name"] == name).unwrap().clone();
    assert_eq!(
        volume("celador-rules")["configMap"]["name"],
        "celador-rules"
    );
    assert_eq!(
        volume("celador-bundle")["configMap"]["name"],
        "istio-ca-root-cert"
    );
    assert_eq!(
        volume("celador-podinfo")["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
        "metadata.labels"
    );
    assert_eq!(
        injected["metadata"]["annotations"][celador::inject::STATUS_ANNOTATION],
        "injected"
    );
    assert_eq!(
        injected["metadata"]["labels"][celador::inject::INJECTED_LABEL],
        "true"
    );
    assert_eq!(injected["metadata"]["labels"]["app"], "web");
    // The app container is untouched.
    assert_eq!(injected["spec"]["containers"], pod["spec"]["containers"]);
}

#[test]
fn the_injector_keeps_existing_init_containers_volumes_and_unknown_fields() {
    let settings = default_settings();
    let pod = pod(
        "shop",
        json!({"metadata": {"annotations": {"team": "payments"}},
            "spec": {"initContainers": [{"name": "migrate", "image": "migrate:1"}],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "someFieldFromKubernetes1_40": {"kept": true}}}),
    );
    let (_, outcome, injected) = admit(&review(&pod, "CREATE"), &pod, &settings);
    assert_eq!(outcome, Outcome::Injected);
    let init: Vec<&str> = injected["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(init, ["celador", "migrate"], "celador starts first");
    let volumes: Vec<&str> = injected["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        volumes,
        [
            "data",
            "celador-rules",
            "celador-governance",
            "celador-podinfo",
            "celador-bundle"
        ]
    );
    assert_eq!(injected["metadata"]["annotations"]["team"], "payments");
    assert_eq!(
        injected["spec"]["someFieldFromKubernetes1_40"],
        json!({"kept": true})
    );
}

#[test]
fn the_injector_is_idempotent_and_skips_what_it_must() {
    let settings = default_settings();
    // Injected once; the result sent again is left alone.
    let pod = pod("shop", json!({}));
    let (_, _, injected) = admit(&review(&pod, "CREATE"), &pod, &settings);
    let (response, outcome, again) = admit(&review(&injected, "CREATE"), &injected, &settings);
    assert_eq!(outcome, Outcome::Skipped("the pod already has celador"));
    assert!(response.get("patch").is_none());
    assert_eq!(again, injected);
    // The same for a pod that carries celador by hand.
    let by_hand = pod_with_container("shop", "celador");
    let (_, outcome, _) = admit(&review(&by_hand, "CREATE"), &by_hand, &settings);
    assert_eq!(outcome, Outcome::Skipped("the pod already has celador"));

    let cases = [
        (pod_in("kube-system"), "CREATE", "the namespace is excluded"),
        (pod_in(NAMESPACE), "CREATE", "the namespace is excluded"),
        (pod_annotated("disabled"), "CREATE", "the pod opts out"),
        (
            pod_host_network(),
            "CREATE",
            "the pod uses the host's network, where celador's ports would be the node's",
        ),
        (pod_in("shop"), "UPDATE", "not a pod creation"),
    ];
    for (pod, operation, reason) in cases {
        let (response, outcome, after) = admit(&review(&pod, operation), &pod, &settings);
        assert_eq!(outcome, Outcome::Skipped(reason));
        assert_eq!(response["allowed"], true, "a skipped pod is never blocked");
        assert!(response.get("patch").is_none());
        assert_eq!(after, pod);
    }
}

fn pod_in(namespace: &str) -> Value {
    pod(namespace, json!({}))
}
fn pod_annotated(value: &str) -> Value {
    pod(
        "shop",
        json!({"metadata": {"annotations": {celador::inject::INJECT_KEY: value}}}),
    )
}
fn pod_host_network() -> Value {
    pod("shop", json!({"spec": {"hostNetwork": true}}))
}
fn pod_with_container(namespace: &str, name: &str) -> Value {
    let mut pod = pod(namespace, json!({}));
    pod["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": name, "image": "x"}));
    pod
}

// ---------------------------------------------------------------- Istio's injection

/// `istio-iptables` arguments as Istio's injection template writes them
/// (pkg/kube/inject/testdata/inject/hello.yaml.injected): `-d` lists the
/// inbound ports the capture leaves alone.
fn istio_iptables_args(exclude: &str, cni: bool) -> Value {
    let mut args = json!([
        "istio-iptables",
        "-p",
        "15001",
        "-z",
        "15006",
        "-u",
        "1337",
        "-m",
        "REDIRECT",
        "-i",
        "*",
        "-x",
        "",
        "-b",
        "*",
        "-d",
        exclude
    ]);
    if cni {
        args.as_array_mut()
            .unwrap()
            .extend([json!("--run-validation"), json!("--skip-rule-apply")]);
    }
    args
}

fn istio_proxy(native: bool) -> Value {
    let mut proxy = json!({"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.27.0",
        "args": ["proxy", "sidecar"], "ports": [{"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15020}}});
    if native {
        proxy["restartPolicy"] = json!("Always");
    }
    proxy
}

/// What Istio's webhook makes of `pod`: its init container (`istio-init`,
/// or `istio-validation` with istio-cni) whose `-d` is built from the
/// pod's `excludeInboundPorts` annotation as the injection template does
/// ("15090,15021," then the status port 15020 and the annotation), and
/// its proxy; ordered as `reorderPod` (pkg/kube/inject/inject.go) orders
/// them: with native sidecars `istio-init`, then `istio-proxy`, first;
/// without, `istio-init` last and `istio-proxy` a container.
fn istio_injects(pod: &Value, native: bool, cni: bool) -> Value {
    let mut pod = pod.clone();
    let annotation = pod["metadata"]["annotations"][celador::inject::istio::EXCLUDE_INBOUND_PORTS]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let exclude = if annotation.is_empty() {
        "15090,15021,15020".to_owned()
    } else {
        format!("15090,15021,15020,{annotation}")
    };
    let setup = json!({"name": if cni { "istio-validation" } else { "istio-init" },
        "image": "docker.io/istio/proxyv2:1.27.0", "args": istio_iptables_args(&exclude, cni)});
    pod["metadata"]["annotations"]["sidecar.istio.io/status"] =
        json!("{\"initContainers\":[\"istio-init\"],\"containers\":[\"istio-proxy\"]}");
    let mut init: Vec<Value> = pod["spec"]["initContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if native {
        init.insert(0, istio_proxy(true));
        init.insert(0, setup);
    } else {
        init.push(setup);
        pod["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(istio_proxy(false));
    }
    pod["spec"]["initContainers"] = Value::from(init);
    pod
}

fn init_names(pod: &Value) -> Vec<String> {
    pod["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The ports in Istio's exclusions of `pod`: its annotation and each setup
/// container's `-d`.
fn excluded_ports(pod: &Value) -> Vec<Vec<String>> {
    let split = |list: &str| list.split(',').map(str::to_owned).collect::<Vec<_>>();
    let mut lists = vec![split(
        pod["metadata"]["annotations"][celador::inject::istio::EXCLUDE_INBOUND_PORTS]
            .as_str()
            .unwrap_or(""),
    )];
    for container in pod["spec"]["initContainers"].as_array().unwrap() {
        if let Some(args) = container["args"].as_array()
            && let Some(d) = args.iter().position(|a| a == "-d")
        {
            lists.push(split(args[d + 1].as_str().unwrap()));
        }
    }
    lists
}

/// The ports the kubelet probes celador on.
fn probed_ports(pod: &Value) -> Vec<String> {
    let celador = pod["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "celador")
        .unwrap();
    ["startupProbe", "readinessProbe", "livenessProbe"]
        .iter()
        .map(|p| {
            let probe = &celador[p];
            probe["grpc"]["port"]
                .as_u64()
                .or(probe["httpGet"]["port"].as_u64())
                .unwrap()
                .to_string()
        })
        .collect()
}

fn istio_settings() -> Settings {
    let values =
        serde_saphyr_json(&std::fs::read_to_string(repo("k8s/istio-values.yaml")).unwrap());
    settings_of(&Rendered::of(&values)).0
}

#[test]
fn under_istio_the_probe_ports_are_excluded_from_capture_whichever_webhook_runs_first() {
    let settings = istio_settings();
    assert!(settings.istio, "the chart tells the injector about Istio");
    let mut checked = 0;
    for (native, cni) in [(true, false), (true, true), (false, false), (false, true)] {
        let app = pod(
            "shop",
            json!({"metadata": {"annotations": {
            celador::inject::istio::EXCLUDE_INBOUND_PORTS: "8081"}}}),
        );
        // Istio's webhook first: celador merges its ports into what Istio
        // already wrote.
        let by_istio = istio_injects(&app, native, cni);
        let (_, outcome, injected) = admit(&review(&by_istio, "CREATE"), &by_istio, &settings);
        assert_eq!(outcome, Outcome::Injected);
        // celador's first: Istio's template then reads celador's
        // annotation; the API server calls celador again (IfNeeded), which
        // puts celador back where it belongs.
        let (_, _, ours) = admit(&review(&app, "CREATE"), &app, &settings);
        let both = istio_injects(&ours, native, cni);
        let (_, _, reinvoked) = admit(&review(&both, "CREATE"), &both, &settings);
        for (order, pod) in [("Istio first", &injected), ("celador first", &reinvoked)] {
            let lists = excluded_ports(pod);
            assert_eq!(lists.len(), 2, "{order}: the annotation and istio's -d");
            for list in &lists {
                for port in probed_ports(pod).iter().chain([&"8081".to_owned()]) {
                    assert!(
                        list.contains(port),
                        "{order} native={native} cni={cni}: {port} not in {list:?}"
                    );
                }
            }
            assert!(
                lists[1].contains(&"15021".to_owned()),
                "Istio's own exclusions are kept"
            );
            checked += 1;
        }
        // Once right, it stays: a further call changes nothing.
        let (response, outcome, _) = admit(&review(&reinvoked, "CREATE"), &reinvoked, &settings);
        assert_eq!(outcome, Outcome::Skipped("the pod already has celador"));
        assert!(response.get("patch").is_none());
    }
    assert_eq!(checked, 8);
    // A pod that Istio does not inject gets the annotation, harmlessly;
    // without istio.enabled, nothing is added.
    let plain = pod("shop", json!({}));
    let (_, _, injected) = admit(&review(&plain, "CREATE"), &plain, &settings);
    assert_eq!(
        injected["metadata"]["annotations"][celador::inject::istio::EXCLUDE_INBOUND_PORTS],
        "9192,9901"
    );
    let (_, _, injected) = admit(&review(&plain, "CREATE"), &plain, &default_settings());
    assert!(
        injected["metadata"]["annotations"]
            .get(celador::inject::istio::EXCLUDE_INBOUND_PORTS)
            .is_none()
    );
    // The chart's webhook is called again when Istio's changed the pod.
    let rendered = Rendered::of(&json!({}));
    for hook in rendered.one("MutatingWebhookConfiguration")["webhooks"]
        .as_array()
        .unwrap()
    {
        assert_eq!(hook["reinvocationPolicy"], "IfNeeded");
    }
}

#[test]
fn celador_starts_after_istio_init_and_before_istio_proxy_and_the_apps_init_containers() {
    let settings = istio_settings();
    let app = pod(
        "shop",
        json!({"spec": {"initContainers": [{"name": "migrate", "image": "migrate:1"}]}}),
    );
    for cni in [false, true] {
        let setup = if cni {
            "istio-validation"
        } else {
            "istio-init"
        };
        // Native sidecars, either webhook first.
        let by_istio = istio_injects(&app, true, cni);
        let (_, _, injected) = admit(&review(&by_istio, "CREATE"), &by_istio, &settings);
        let (_, _, ours) = admit(&review(&app, "CREATE"), &app, &settings);
        let both = istio_injects(&ours, true, cni);
        assert_eq!(
            init_names(&both),
            [setup, "istio-proxy", "celador", "migrate"],
            "Istio's reorder"
        );
        let (_, _, reinvoked) = admit(&review(&both, "CREATE"), &both, &settings);
        for pod in [&injected, &reinvoked] {
            assert_eq!(
                init_names(pod),
                [setup, "celador", "istio-proxy", "migrate"]
            );
        }
        // Without native sidecars Istio puts its setup last; celador
        // follows it, after the app's init containers.
        let by_istio = istio_injects(&app, false, cni);
        let (_, _, injected) = admit(&review(&by_istio, "CREATE"), &by_istio, &settings);
        let (_, _, ours) = admit(&review(&app, "CREATE"), &app, &settings);
        let both = istio_injects(&ours, false, cni);
        let (_, _, reinvoked) = admit(&review(&both, "CREATE"), &both, &settings);
        for pod in [&injected, &reinvoked] {
            assert_eq!(init_names(pod), ["migrate", setup, "celador"]);
        }
    }
    // Without Istio: first, so every later native sidecar (an Envoy) and
    // init container starts after it.
    let (_, _, injected) = admit(&review(&app, "CREATE"), &app, &default_settings());
    assert_eq!(init_names(&injected), ["celador", "migrate"]);
}

#[test]
fn the_preview_injects_workloads_and_says_what_it_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (_, settings) = settings_of(&Rendered::of(&json!({})));
    std::fs::write(dir.path().join("inject.yaml"), settings).unwrap();
    let manifest = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec:\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: app, image: x}]}\n---\napiVersion: batch/v1\nkind: CronJob\nmetadata: {name: nightly, namespace: shop}\nspec:\n  jobTemplate:\n    spec:\n      template:\n        spec: {containers: [{name: job, image: y}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: dns, namespace: kube-system}\nspec: {containers: [{name: dns, image: z}]}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n";
    std::fs::write(dir.path().join("app.yaml"), manifest).unwrap();
    let config = dir.path().join("inject.yaml");
    let app = dir.path().join("app.yaml");
    let (code, out, err) = preview(config.to_str().unwrap(), app.to_str().unwrap());
    assert_eq!(code, 0, "{err}");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&out).unwrap();
    assert_eq!(docs.len(), 4);
    // YAML, as the README says, not JSON documents.
    assert!(
        out.starts_with("---\napiVersion: apps/v1\nkind: Deployment\n")
            && !out.contains("\"kind\""),
        "{out}"
    );
    assert_eq!(
        docs[0]["spec"]["template"]["spec"]["initContainers"][0]["name"],
        "celador"
    );
    assert_eq!(
        docs[1]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["initContainers"][0]["name"],
        "celador"
    );
    assert!(
        docs[2]["spec"].get("initContainers").is_none(),
        "kube-system is excluded"
    );
    assert!(
        err.contains("document 3 (dns) not injected: the namespace is excluded"),
        "{err}"
    );
    assert_eq!(
        docs[3],
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}})
    );
    // Nothing to inject is an error, said plainly.
    std::fs::write(
        &app,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
    )
    .unwrap();
    let (code, _, err) = preview(config.to_str().unwrap(), app.to_str().unwrap());
    assert_eq!(code, 1);
    assert!(
        err.contains("no Pod, nor a workload with a pod template"),
        "{err}"
    );
}

#[test]
fn the_rules_annotation_names_another_config_map() {
    let settings = default_settings();
    let pod = pod(
        "shop",
        json!({"metadata": {"annotations": {celador::inject::RULES_ANNOTATION: "payments-rules"}}}),
    );
    let (_, outcome, injected) = admit(&review(&pod, "CREATE"), &pod, &settings);
    assert_eq!(outcome, Outcome::Injected);
    let rules = injected["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "celador-rules")
        .unwrap()
        .clone();
    assert_eq!(rules["configMap"]["name"], "payments-rules");
}

#[test]
fn the_governance_config_map_is_mounted_optional_and_an_annotation_names_another() {
    let settings = default_settings();
    let governance = |pod: &Value| -> Value {
        let (_, outcome, injected) = admit(&review(pod, "CREATE"), pod, &settings);
        assert_eq!(outcome, Outcome::Injected);
        let celador = &injected["spec"]["initContainers"][0];
        assert!(
            celador["volumeMounts"].as_array().unwrap().contains(
                &json!({"name": "celador-governance", "mountPath": "/etc/celador/governance", "readOnly": true})
            ),
            "{celador}"
        );
        let config: Value =
            serde_json::from_str(celador["env"][3]["value"].as_str().unwrap()).unwrap();
        assert_eq!(
            (
                &config["governance"]["grants"],
                &config["governance"]["revocations"]
            ),
            (
                &json!({"path": "/etc/celador/governance/grants.yaml", "optional": true}),
                &json!({"path": "/etc/celador/governance/revocations.yaml", "optional": true})
            )
        );
        injected["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "celador-governance")
            .unwrap()["configMap"]
            .clone()
    };
    assert_eq!(
        governance(&pod_in("shop")),
        json!({"name": "celador-governance", "optional": true})
    );
    let annotated = pod(
        "shop",
        json!({"metadata": {"annotations": {celador::inject::GOVERNANCE_ANNOTATION: "payments-governance"}}}),
    );
    assert_eq!(
        governance(&annotated),
        json!({"name": "payments-governance", "optional": true})
    );
    // A name Kubernetes would refuse is refused here, naming the annotation.
    let bad = pod(
        "shop",
        json!({"metadata": {"annotations": {celador::inject::GOVERNANCE_ANNOTATION: "Not_A_Name"}}}),
    );
    let (_, outcome, _) = admit(&review(&bad, "CREATE"), &bad, &settings);
    let Outcome::Refused(message) = outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        message.contains("annotation celador.io/governance"),
        "{message}"
    );
}

#[test]
fn bad_input_gets_an_admission_error_never_a_crash() {
    let settings = default_settings();
    let refused = |body: &[u8]| {
        let (review, outcome) = answer(body, &settings);
        let review: Value = serde_json::from_slice(&encode(&review).unwrap()).unwrap();
        assert_eq!(review["kind"], "AdmissionReview");
        assert_eq!(review["response"]["allowed"], false, "{review}");
        let message = review["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.starts_with("celador inject: "), "{message}");
        (outcome, message)
    };
    for garbage in [
        &b""[..],
        b"\xff\xfe\x00",
        b"{",
        b"[]",
        b"{\"request\": 5}",
        b"null",
    ] {
        let (outcome, message) = refused(garbage);
        assert!(matches!(outcome, Outcome::Invalid(_)), "{outcome:?}");
        assert!(message.contains("AdmissionReview"), "{message}");
    }
    let (outcome, _) = refused(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#);
    assert!(matches!(outcome, Outcome::Invalid(_)));
    // A bad rules annotation and a volume name clash: refused, with why.
    let annotated = pod(
        "shop",
        json!({"metadata": {"annotations": {celador::inject::RULES_ANNOTATION: "Rules_With_Caps"}}}),
    );
    let (_, message) = refused(&review(&annotated, "CREATE"));
    assert!(
        message.contains("celador.io/rules") && message.contains("Rules_With_Caps"),
        "{message}"
    );
    let clashing = pod(
        "shop",
        json!({"spec": {"volumes": [{"name": "celador-rules", "emptyDir": {}}]}}),
    );
    let (_, message) = refused(&review(&clashing, "CREATE"));
    assert!(message.contains("'celador-rules'"), "{message}");
    let mut broken = pod_in("shop");
    broken["spec"]["volumes"] = json!("not a list");
    let (_, message) = refused(&review(&broken, "CREATE"));
    assert!(message.contains("/spec/volumes"), "{message}");
    // A review of something else is let through unchanged.
    let mut other: Value = serde_json::from_slice(&review(&pod_in("shop"), "CREATE")).unwrap();
    other["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    let (review, outcome) = answer(other.to_string().as_bytes(), &settings);
    assert_eq!(outcome, Outcome::Skipped("not a pod"));
    assert_eq!(
        serde_json::to_value(&review).unwrap()["response"]["allowed"],
        true
    );
}

#[test]
fn the_injector_refuses_settings_that_would_not_work() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inject.yaml");
    std::fs::write(
        &path,
        "image: ''\nrules: {config_map: Bad_Name}\ntrust_domain: 'Upper.Case'\nbundle: {secret: {name: s, key: 'a/b'}}\n\
         ports: {grpc: 9191, health: 9191}\nrun_as_user: 0\nresources: {requests: {cpu: lots}}\nconfig: {listen: '0.0.0.0:1'}\n\
         governance: {config_map: No_Name, store_password: {name: p, key: password}}\n",
    )
    .unwrap();
    let (code, _, err) = preview(path.to_str().unwrap(), "/dev/null");
    assert_eq!(code, 64, "{err}");
    for problem in [
        "image:",
        "rules.config_map:",
        "governance.config_map:",
        "governance.store_password: is for a governance store, and config.governance names none",
        "trust_domain:",
        "bundle: key:",
        "ports:",
        "run_as_user:",
        "resources: requests.cpu:",
        "config.listen:",
    ] {
        assert!(err.contains(problem), "no {problem} in:\n{err}");
    }
    // A sidecar config the sidecar would refuse stops the injector too.
    std::fs::write(
        &path,
        "image: x\nrules: {config_map: r}\ntrust_domain: example.org\nbundle: {config_map: {name: b, key: b.pem}}\nconfig: {cache: {decision_ttl: forever}}\n",
    )
    .unwrap();
    let (code, _, err) = preview(path.to_str().unwrap(), "/dev/null");
    assert_eq!(code, 64);
    assert!(
        err.contains("the sidecar's config would not load") && err.contains("decision_ttl"),
        "{err}"
    );
}

// ---------------------------------------------------------------- HTTPS

/// Writes a serving certificate for the injector's Service name, signed by
/// `ca`, into `dir` as tls.crt and tls.key.
fn serving_cert(ca: &Ca, dir: &Path) -> Leaf {
    let leaf = ca
        .leaf()
        .dns("celador-injector.celador-system.svc")
        .common_name("celador-injector")
        .build();
    // Written beside and renamed, as the kubelet swaps a Secret's files.
    std::fs::write(dir.join("tls.crt.new"), &leaf.pem).unwrap();
    std::fs::write(dir.join("tls.key.new"), &leaf.key_pem).unwrap();
    std::fs::rename(dir.join("tls.key.new"), dir.join("tls.key")).unwrap();
    std::fs::rename(dir.join("tls.crt.new"), dir.join("tls.crt")).unwrap();
    leaf
}

/// POSTs `body` to the webhook as the API server does, trusting `ca_pem`
/// for the Service's name; returns the status, the JSON and the server's
/// certificate.
fn post(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    path: &str,
    body: &[u8],
) -> (u16, Value, Vec<u8>) {
    post_declaring(addr, ca_pem, path, body.len(), body)
}

/// [`post`], with a `content-length` of `declared` whatever the body sent.
fn post_declaring(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    path: &str,
    declared: usize,
    body: &[u8],
) -> (u16, Value, Vec<u8>) {
    use rustls_pki_types::pem::PemObject;
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name =
        rustls_pki_types::ServerName::try_from("celador-injector.celador-system.svc").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: celador-injector.celador-system.svc\r\ncontent-type: application/json\r\ncontent-length: {declared}\r\nconnection: close\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).unwrap();
    tls.write_all(body).unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw);
    let peer = tls.conn.peer_certificates().unwrap()[0].to_vec();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let json = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| serde_json::from_str(b).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    (status, json, peer)
}

/// `GET path` from the webhook over HTTPS: the body.
fn https_get(addr: std::net::SocketAddr, ca_pem: &str, path: &str) -> String {
    use rustls_pki_types::pem::PemObject;
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name =
        rustls_pki_types::ServerName::try_from("celador-injector.celador-system.svc").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: celador-injector\r\nconnection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw).into_owned()
}

struct Webhook {
    _process: Running,
    addr: std::net::SocketAddr,
}

fn start_webhook(settings: &Path, tls: &Path, log: &Path) -> Webhook {
    let port = support::kubelet::free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let log_file = std::fs::File::create(log).unwrap();
    let child = Command::new(support::celador::binary())
        .args(["inject", "--config"])
        .arg(settings)
        .args([
            "--listen",
            &addr.to_string(),
            "--tls-reload-interval",
            "100ms",
            "--tls-cert",
        ])
        .arg(tls.join("tls.crt"))
        .arg("--tls-key")
        .arg(tls.join("tls.key"))
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let process = Running(child);
    let up = support::wait_for(Duration::from_secs(20), || {
        std::net::TcpStream::connect(addr).ok()
    });
    assert!(
        up.is_some(),
        "the webhook did not listen:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    Webhook {
        _process: process,
        addr,
    }
}

/// The webhook with the chart's default settings and a serving
/// certificate from a new CA, all in `dir`.
fn default_webhook(dir: &Path) -> (Ca, Leaf, Webhook) {
    let (_, text) = settings_of(&Rendered::of(&json!({})));
    std::fs::write(dir.join("inject.yaml"), text).unwrap();
    let ca = Ca::root("webhook-ca");
    let cert = serving_cert(&ca, dir);
    let webhook = start_webhook(&dir.join("inject.yaml"), dir, &dir.join("log"));
    (ca, cert, webhook)
}

#[test]
fn the_webhook_answers_over_https_and_reloads_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, first, webhook) = default_webhook(dir.path());

    let pod = pod_in("shop");
    let (status, body, peer) = post(webhook.addr, &ca.pem, "/inject", &review(&pod, "CREATE"));
    assert_eq!(status, 200);
    assert_eq!(peer, first.der);
    assert_eq!(body["response"]["allowed"], true);
    assert_eq!(
        body["response"]["uid"],
        "705ab4f5-6393-11e8-b7cc-42010a800002"
    );
    assert_eq!(body["response"]["patchType"], "JSONPatch");
    // Garbage gets an AdmissionReview error, and the webhook lives on.
    let (status, body, _) = post(webhook.addr, &ca.pem, "/inject", b"\x00garbage");
    assert_eq!(status, 200);
    assert_eq!(body["response"]["allowed"], false);
    let (status, _, _) = post(webhook.addr, &ca.pem, "/elsewhere", b"{}");
    assert_eq!(status, 404);
    // Too large a body: refused with a message, not read to the end.
    let huge = vec![b' '; celador::inject::webhook::MAX_BODY_BYTES + 1];
    let (_, body, _) = post(webhook.addr, &ca.pem, "/inject", &huge);
    assert_eq!(body["response"]["allowed"], false);

    // The Secret rotates: new connections get the new certificate.
    let second = serving_cert(&ca, dir.path());
    let rotated = support::wait_for(Duration::from_secs(10), || {
        let (_, _, peer) = post(webhook.addr, &ca.pem, "/inject", &review(&pod, "CREATE"));
        (peer == second.der).then_some(())
    });
    assert!(rotated.is_some(), "the new certificate was not served");
    // A half-written pair is not taken: the last good one stays.
    std::fs::write(
        dir.path().join("tls.key"),
        "-----BEGIN PRIVATE KEY-----\ngarbage\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let (status, _, peer) = post(webhook.addr, &ca.pem, "/inject", &review(&pod, "CREATE"));
    assert_eq!((status, peer), (200, second.der));
}

#[test]
fn a_body_that_never_arrives_is_refused_after_ten_seconds_not_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, webhook) = default_webhook(dir.path());
    // 10 bytes of the 1,000 declared, then nothing.
    let started = std::time::Instant::now();
    let (status, body, _) = post_declaring(webhook.addr, &ca.pem, "/inject", 1000, b"{\"kind\": ");
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert_eq!(body["response"]["allowed"], false);
    let message = body["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("the body was not received within 10 s"),
        "{message}"
    );
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(20)).contains(&took),
        "answered after {took:?}"
    );
}

/// Keeps `count` connections to `addr` open that never send a byte,
/// reopening each one the webhook closes, until dropped: the hostile pod
/// of issue 19 (1,000 of these once left no review answered).
struct IdleFlood {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    reopened: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl IdleFlood {
    fn start(addr: std::net::SocketAddr, count: usize) -> IdleFlood {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let open = std::sync::Arc::new(AtomicUsize::new(0));
        let reopened = std::sync::Arc::new(AtomicUsize::new(0));
        let (s, o, r) = (stop.clone(), open.clone(), reopened.clone());
        let thread = std::thread::spawn(move || {
            let connect = || {
                let tcp = std::net::TcpStream::connect(addr).ok()?;
                tcp.set_nonblocking(true).ok()?;
                Some(tcp)
            };
            let mut conns: Vec<Option<std::net::TcpStream>> =
                (0..count).map(|_| connect()).collect();
            // Bounded: a sweep every 100 ms, for at most a minute.
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while !s.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                let mut alive = 0;
                for conn in conns.iter_mut() {
                    let closed = match conn {
                        Some(tcp) => {
                            !matches!(tcp.peek(&mut [0u8]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
                        }
                        None => true,
                    };
                    if closed {
                        *conn = connect();
                        r.fetch_add(1, Ordering::Relaxed);
                    }
                    alive += usize::from(conn.is_some());
                }
                o.store(alive, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        IdleFlood {
            stop,
            open,
            reopened,
            thread: Some(thread),
        }
    }
}

impl Drop for IdleFlood {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn two_thousand_idle_connections_from_one_address_do_not_starve_real_reviews() {
    use std::io::Read;
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, webhook) = default_webhook(dir.path());
    // A connection that sends nothing is closed after the first-byte
    // timeout (1 s, at most 2).
    let mut lone = std::net::TcpStream::connect(webhook.addr).unwrap();
    lone.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = std::time::Instant::now();
    let read = lone.read(&mut [0u8; 16]);
    let took = started.elapsed();
    assert!(matches!(read, Ok(0)) || read.is_err(), "{read:?}");
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(2)).contains(&took),
        "closed after {took:?}"
    );

    // 2,000 idle connections from 127.0.0.1, the real reviews' address too.
    let flood = IdleFlood::start(webhook.addr, 2_000);
    let full = support::wait_for(Duration::from_secs(20), || {
        (flood.open.load(Ordering::Relaxed) >= 2_000).then_some(())
    });
    assert!(
        full.is_some(),
        "the flood holds {}",
        flood.open.load(Ordering::Relaxed)
    );
    let pod = pod_in("shop");
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = std::time::Instant::now();
        let (status, body, _) = post(webhook.addr, &ca.pem, "/inject", &review(&pod, "CREATE"));
        let took = started.elapsed();
        assert_eq!(status, 200);
        assert_eq!(body["response"]["allowed"], true, "{body}");
        assert_eq!(body["response"]["patchType"], "JSONPatch");
        slowest = slowest.max(took);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        slowest < Duration::from_secs(1),
        "a review took {slowest:?}"
    );
    // The webhook did close idle connections (the flood reopened them).
    assert!(flood.reopened.load(Ordering::Relaxed) > 0);
    drop(flood);
}

// ---------------------------------------------------------------- running it

/// The test SPIRE agent's PKI: the trust domain's root, the caller's SVID,
/// and the workload Envoy's SVID (with `localhost`, which the test client
/// checks).
struct Mesh {
    root: Ca,
    client: support::https::ClientCert,
    server: Leaf,
}

impl Mesh {
    fn new(trust_domain: &str, caller: &str) -> Mesh {
        let root = Ca::root(trust_domain);
        let client = root.svid(&format!("spiffe://{trust_domain}{caller}"));
        let server = root
            .leaf()
            .uri(&format!("spiffe://{trust_domain}/ns/shop/sa/web"))
            .dns("localhost")
            .build();
        Mesh {
            client: support::https::ClientCert {
                chain_pem: client.pem.clone(),
                key_pem: client.key_pem.clone(),
            },
            root,
            server,
        }
    }
}

/// Sends an allowed and a denied request through `envoy_addr`; the first
/// reaches the app, the second does not.
fn allowed_reaches_the_app_and_denied_does_not(
    envoy_addr: std::net::SocketAddr,
    mesh: &Mesh,
    upstream: &support::upstream::Upstream,
    server_ca: &str,
) {
    let allowed = support::wait_for(Duration::from_secs(20), || {
        let reply = support::https::tls(
            envoy_addr,
            server_ca,
            Some(&mesh.client),
            &support::https::Call::get("/catalogue/shoes?m=allowed"),
        );
        (reply.status == 200).then_some(reply)
    });
    let allowed = allowed.unwrap_or_else(|| {
        let reply = support::https::tls(
            envoy_addr,
            server_ca,
            Some(&mesh.client),
            &support::https::Call::get("/catalogue/shoes?m=allowed"),
        );
        panic!(
            "the allowed request was not let through: {} {:?} {}",
            reply.status, reply.headers, reply.body
        )
    });
    assert_eq!(allowed.body, "upstream ok");
    assert!(!upstream.requests_with("m=allowed").is_empty());
    let denied = support::https::tls(
        envoy_addr,
        server_ca,
        Some(&mesh.client),
        &support::https::Call::get("/admin/users?m=denied"),
    );
    assert_eq!(denied.status, 403);
    assert_eq!(denied.header("x-celador-reason"), Some("denied_by_rule"));
    assert!(
        upstream.requests_with("m=denied").is_empty(),
        "a denied request reached the app"
    );
}

/// `GET path` over plain HTTP: the status and body, or `None` when
/// nothing answers (yet).
fn try_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).ok()?;
    let status = raw.split_whitespace().nth(1)?.parse().ok()?;
    Some((
        status,
        raw.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default(),
    ))
}

/// Runs `container`'s startup, readiness and liveness probes as the kubelet
/// would (gRPC health, HTTP GET), on the ports they name.
fn probes_pass(kubelet: &Kubelet, container: &str) {
    let spec = kubelet.container(container);
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let probe = &spec[probe];
        if let Some(grpc) = probe.get("grpc") {
            let port = kubelet.ports[&(grpc["port"].as_u64().unwrap() as u16)];
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let status = runtime.block_on(async {
                let endpoint =
                    tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
                        .unwrap();
                // The health listener may still be starting: retried, as
                // the kubelet retries a probe.
                let mut tries = 0;
                let channel = loop {
                    match endpoint.connect().await {
                        Ok(channel) => break channel,
                        Err(e) if tries >= 50 => panic!("{container}'s {probe}: {e}"),
                        Err(_) => tries += 1,
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                };
                let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
                let request = tonic_health::pb::HealthCheckRequest {
                    service: grpc["service"].as_str().unwrap_or_default().to_owned(),
                };
                client.check(request).await.unwrap().into_inner().status
            });
            assert_eq!(
                status,
                tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
                "{container}'s gRPC probe on {port}"
            );
        } else if let Some(get) = probe.get("httpGet") {
            let port = kubelet.ports[&(get["port"].as_u64().unwrap() as u16)];
            let addr = format!("127.0.0.1:{port}").parse().unwrap();
            let (status, _) =
                try_get(addr, get["path"].as_str().unwrap()).expect("the probe's port answers");
            assert_eq!(status, 200, "{container}'s HTTP probe");
        } else {
            panic!("{container} has an unexpected probe {probe}");
        }
    }
}

fn wait_ready(kubelet: &Kubelet, admin_port: u16, container: &str) {
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", kubelet.ports[&admin_port])
        .parse()
        .unwrap();
    let ready = support::wait_for(Duration::from_secs(20), || {
        try_get(admin, "/readyz").filter(|(status, _)| *status == 200)
    });
    assert!(
        ready.is_some(),
        "{container} is not ready; its log:\n{}",
        kubelet.log(container)
    );
}

fn wait_envoy(kubelet: &Kubelet, admin_port: u16) {
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", kubelet.ports[&admin_port])
        .parse()
        .unwrap();
    let ready = support::wait_for(Duration::from_secs(30), || {
        try_get(admin, "/ready")
            .filter(|(status, body)| *status == 200 && body.lines().any(|l| l.trim() == "LIVE"))
    });
    if ready.is_none() {
        let get = |path: &str| {
            try_get(admin, path)
                .map(|(_, body)| body)
                .unwrap_or_default()
        };
        panic!(
            "Envoy is not ready ({}); its SDS secrets:\n{}\nclusters:\n{}\nits log:\n{}",
            get("/ready"),
            get("/config_dump?resource=dynamic_warming_secrets"),
            get("/clusters"),
            kubelet.log("envoy")
        );
    }
}

fn k8s_docs(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo(file)).unwrap();
    text.split("\n---\n")
        .filter(|d| d.contains("kind:"))
        .map(serde_saphyr_json)
        .collect()
}

fn pod_of(deployment: &Value, namespace: &str) -> Value {
    let template = &deployment["spec"]["template"];
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{}-7d4b9c-x2x9q", deployment["metadata"]["name"].as_str().unwrap()),
            "namespace": namespace, "labels": template["metadata"]["labels"]},
        "spec": template["spec"]})
}

/// The chart's injector Deployment started as the kubelet would, with the
/// provided certificate: the kubelet, the process and its address once it
/// listens.
fn start_chart_injector(rendered: &Rendered) -> (Kubelet, Running, std::net::SocketAddr) {
    let deployment = rendered.one("Deployment");
    let injector_pod = pod_of(deployment, NAMESPACE);
    let mut objects: Vec<Value> = rendered.docs.clone();
    objects.push(provided_secret());
    let kubelet = Kubelet::new(injector_pod, NAMESPACE, objects, &[8443], &[]);
    let injector = Running(kubelet.start("injector"));
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", kubelet.ports[&8443])
        .parse()
        .unwrap();
    let up = support::wait_for(Duration::from_secs(20), || {
        std::net::TcpStream::connect(addr).ok()
    });
    assert!(
        up.is_some(),
        "the injector did not listen:\n{}",
        kubelet.log("injector")
    );
    (kubelet, injector, addr)
}

/// The chart's injector Deployment run as the kubelet would, and its
/// answer for `pod` over HTTPS, checked with the caBundle the API server
/// would use: the injected pod.
fn inject_through_the_chart(rendered: &Rendered, pod: &Value) -> Value {
    let (_kubelet, _injector, addr) = start_chart_injector(rendered);
    let webhook = rendered.one("MutatingWebhookConfiguration");
    let ca = String::from_utf8(support::base64_decode(
        webhook["webhooks"][0]["clientConfig"]["caBundle"]
            .as_str()
            .unwrap(),
    ))
    .unwrap();
    let path = webhook["webhooks"][0]["clientConfig"]["service"]["path"]
        .as_str()
        .unwrap();
    let (status, body, _) = post(addr, &ca, path, &review(pod, "CREATE"));
    assert_eq!(status, 200);
    let response = &body["response"];
    assert_eq!(response["allowed"], true, "{body}");
    let patch: json_patch::Patch =
        serde_json::from_slice(&support::base64_decode(response["patch"].as_str().unwrap()))
            .unwrap();
    let mut injected = pod.clone();
    json_patch::patch(&mut injected, &patch).unwrap();
    injected
}

fn plain_envoy_rules_values(trust_domain: &str) -> Value {
    let docs = k8s_docs("k8s/plain-envoy.yaml");
    let rules = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "celador-rules")
        .unwrap();
    json!({"trustDomain": trust_domain, "bundle": {"source": "workloadApi"},
        "rules": {"namespaces": ["shop"], "policy": rules["data"]["policy.yaml"]}})
}

#[test]
fn the_chart_and_its_injector_run_as_the_kubelet_would_behind_a_plain_envoy() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _guard = runtime.enter();
    // The chart with SPIRE's CSI driver; the sample Deployment is the
    // k8s/ one without its hand-written celador, labelled for injection.
    let rendered = Rendered::of(&plain_envoy_rules_values("example.org"));
    let docs = k8s_docs("k8s/plain-envoy.yaml");
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let mut pod = pod_of(deployment, "shop");
    pod["spec"]["initContainers"] = json!([]);
    pod["metadata"]["labels"][celador::inject::INJECT_KEY] = json!("enabled");
    pod["spec"]["volumes"] = json!(
        pod["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| !v["name"].as_str().unwrap().starts_with("celador"))
            .cloned()
            .collect::<Vec<_>>()
    );
    let injected = inject_through_the_chart(&rendered, &pod);
    run_plain_envoy_pod(injected, rendered.docs.clone(), &docs);
}

#[test]
fn the_plain_envoy_manifests_run_as_the_kubelet_would() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _guard = runtime.enter();
    let docs = k8s_docs("k8s/plain-envoy.yaml");
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    run_plain_envoy_pod(pod_of(deployment, "shop"), Vec::new(), &docs);
}

/// Runs celador and Envoy of `pod` (from k8s/plain-envoy.yaml, or the
/// injector's version of it) with a test SPIRE agent on the CSI socket.
fn run_plain_envoy_pod(pod: Value, mut objects: Vec<Value>, k8s: &[Value]) {
    objects.extend(k8s.iter().filter(|d| d["kind"] == "ConfigMap").cloned());
    let upstream = support::upstream::Upstream::start();
    let kubelet = Kubelet::new(
        pod,
        "shop",
        objects,
        &[9191, 9192, 9901, 9902, 8443],
        &[(8080, upstream.addr.port())],
    );
    let mesh = Mesh::new("example.org", "/ns/shop/sa/frontend");
    let socket = kubelet.host_path("/spiffe-workload-api/spire-agent.sock");
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    let _agent = support::workload_api::WorkloadApi::start_agent(
        &socket,
        support::workload_api::bundles_for("example.org", &[&mesh.root.der], None),
        support::sds::Sds {
            svid_pem: mesh.server.pem.clone(),
            key_pem: mesh.server.key_pem.clone(),
            bundle_pem: mesh.root.pem.clone(),
        },
    );
    let _celador = Running(kubelet.start("celador"));
    wait_ready(&kubelet, 9901, "celador");
    probes_pass(&kubelet, "celador");
    let _envoy = Running(kubelet.start("envoy"));
    wait_envoy(&kubelet, 9902);
    let envoy: std::net::SocketAddr = format!("127.0.0.1:{}", kubelet.ports[&8443])
        .parse()
        .unwrap();
    allowed_reaches_the_app_and_denied_does_not(envoy, &mesh, &upstream, &mesh.root.pem);
    // celador saw the workload as the kubelet describes it.
    let audit: Vec<Value> = kubelet
        .log("celador")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &Value| v.get("decision").is_some() || v.get("outcome").is_some())
        .collect();
    assert!(
        !audit.is_empty(),
        "no audit record:\n{}",
        kubelet.log("celador")
    );
}

/// A namespace without the governance ConfigMap: the chart's injector
/// mounts it optional, the kubelet lays out an empty directory, and the
/// sidecar's real command starts with no grants and no revocations, ready
/// and probed; the ConfigMap created later (the kubelet's sync) revokes
/// within a second, and deleted again restores access.
#[test]
fn a_namespace_without_the_governance_config_map_runs_and_picks_it_up_when_created() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _guard = runtime.enter();
    let rendered = Rendered::of(&json!({"rules": {"namespaces": ["shop"]}}));
    let (settings, _) = settings_of(&rendered);
    let mut pod = pod_in("shop");
    assert_eq!(
        celador::inject::review::inject(&mut pod, &settings),
        Ok(None)
    );
    let ca = Ca::root("cluster.local");
    let mut objects = rendered.docs.clone();
    objects.push(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "istio-ca-root-cert", "namespace": "shop"},
        "data": {"root-cert.pem": ca.pem}}));
    let kubelet = Kubelet::new(pod, "shop", objects, &[9191, 9192, 9901], &[]);
    let _celador = Running(kubelet.start("celador"));
    wait_ready(&kubelet, 9901, "celador");
    probes_pass(&kubelet, "celador");
    let addr = format!("http://127.0.0.1:{}", kubelet.ports[&9191]);
    let caller = ca.svid("spiffe://cluster.local/ns/shop/sa/frontend");
    let decide = || {
        let request = support::check::request(&caller.envoy_encoded(), "GET", "/orders", &[]);
        runtime.block_on(async {
            let mut client = envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::connect(addr.clone())
                .await
                .unwrap();
            let response = client.check(request).await.unwrap().into_inner();
            support::check::denial(&response).map(|(_, reason)| reason)
        })
    };
    assert_eq!(decide(), None, "{}", kubelet.log("celador"));
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", kubelet.ports[&9901])
        .parse()
        .unwrap();
    let (_, metrics) = try_get(admin, "/metrics").unwrap();
    assert!(
        metrics.contains(
            "celador_governance_file_reloads_total{file=\"revocations\",outcome=\"absent\"} 1"
        ),
        "{metrics}"
    );

    let written = std::time::Instant::now();
    kubelet.project(
        "/etc/celador/governance",
        &[("revocations.yaml", "revocations:\n  - spiffe_id_prefix: spiffe://cluster.local/ns/shop/\n    reason: \"INC-7: shop compromised\"\n")],
    );
    let revoked = support::wait_for(Duration::from_secs(3), || {
        decide().filter(|reason| reason == "revoked")
    });
    let took = written.elapsed();
    let log = std::fs::read_to_string(kubelet.root.path().join("celador.log")).unwrap();
    let log: Vec<&str> = log
        .lines()
        .filter(|l| !l.contains("\"decision\""))
        .collect();
    assert!(revoked.is_some(), "never revoked:\n{}", log.join("\n"));
    assert!(took < Duration::from_secs(1), "revocation took {took:?}");
    // The ConfigMap deleted: the kubelet empties the optional volume.
    kubelet.project("/etc/celador/governance", &[]);
    std::fs::remove_file(kubelet.host_path("/etc/celador/governance/revocations.yaml")).unwrap();
    let back = support::wait_for(Duration::from_secs(3), || decide().is_none().then_some(()));
    assert!(back.is_some(), "still revoked:\n{}", kubelet.log("celador"));
}

/// `governance.store` run as the kubelet would: the sidecar's real command
/// reaches a real Redis that requires a password, the password coming from
/// the namespace's Secret through the environment; a `celador revoke` on
/// the store is `403 revoked` there within a second; the password is in no
/// log line.
#[test]
fn the_chart_store_values_connect_the_sidecar_to_a_password_protected_redis() {
    const SECRET: &str = "s3cret-redis-pass";
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _guard = runtime.enter();
    let redis = support::redis::Redis::start_with_password(false, Some(SECRET));
    let values = json!({"governance": {"store": {"url": redis.url(),
        "passwordSecret": {"name": "redis-celador"}, "startupWait": "10s"}}});
    let (settings, _) = settings_of(&Rendered::of(&values));
    let mut pod = pod_in("shop");
    assert_eq!(
        celador::inject::review::inject(&mut pod, &settings),
        Ok(None)
    );
    let ca = Ca::root("cluster.local");
    let mut objects = Rendered::of(&json!({"rules": {"namespaces": ["shop"]}})).docs;
    objects.push(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "istio-ca-root-cert", "namespace": "shop"},
        "data": {"root-cert.pem": ca.pem}}));
    objects.push(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "redis-celador", "namespace": "shop"},
        "data": {"password": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, SECRET)}}));
    let kubelet = Kubelet::new(pod, "shop", objects, &[9191, 9192, 9901], &[]);
    let _celador = Running(kubelet.start("celador"));
    wait_ready(&kubelet, 9901, "celador");
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", kubelet.ports[&9901])
        .parse()
        .unwrap();
    let (_, metrics) = try_get(admin, "/metrics").unwrap();
    assert!(
        metrics.contains("celador_governance_store_connected 1"),
        "{metrics}\n{}",
        kubelet.log("celador")
    );
    let addr = format!("http://127.0.0.1:{}", kubelet.ports[&9191]);
    let caller = ca.svid("spiffe://cluster.local/ns/shop/sa/frontend");
    let decide = || {
        let request = support::check::request(&caller.envoy_encoded(), "GET", "/orders", &[]);
        runtime.block_on(async {
            let mut client = envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::connect(addr.clone())
                .await
                .unwrap();
            let response = client.check(request).await.unwrap().into_inner();
            support::check::denial(&response).map(|(_, reason)| reason)
        })
    };
    assert_eq!(decide(), None, "{}", kubelet.log("celador"));
    let started = std::time::Instant::now();
    let out = Command::new(support::celador::binary())
        .args([
            "revoke",
            "--store",
            &redis.url(),
            "--spiffe-id",
            "spiffe://cluster.local/ns/shop/sa/frontend",
            "--reason",
            "INC-9",
        ])
        .env("CELADOR_STORE_PASSWORD", SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let revoked = support::wait_for(Duration::from_secs(3), || {
        decide().filter(|reason| reason == "revoked")
    });
    let took = started.elapsed();
    assert!(
        revoked.is_some(),
        "never revoked:\n{}",
        kubelet.log("celador")
    );
    assert!(took < Duration::from_secs(1), "revocation took {took:?}");
    let log = std::fs::read_to_string(kubelet.root.path().join("celador.log")).unwrap();
    assert!(!log.contains(SECRET), "the password leaked into the log");
}

/// A SPIRE agent without `allow_unauthenticated_verifiers` answers a
/// caller no entry matches with PermissionDenied ("no identity issued"):
/// celador, injected by the chart with `bundle.source: workloadApi`, stays
/// not ready and says why, in `/readyz` and its log, until the agent
/// answers; NOTES says what to set.
#[test]
fn a_spire_agent_that_refuses_celador_is_named_in_its_readiness_and_log() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _guard = runtime.enter();
    let rendered = Rendered::of(&plain_envoy_rules_values("example.org"));
    for words in [
        "allow_unauthenticated_verifiers = true",
        "PermissionDenied",
        "no identity issued",
        "k8s:container-name:celador",
    ] {
        assert!(
            rendered.notes.contains(words),
            "NOTES lack {words}:\n{}",
            rendered.notes
        );
    }
    let (settings, _) = settings_of(&rendered);
    let mut pod = pod("shop", json!({}));
    assert_eq!(
        celador::inject::review::inject(&mut pod, &settings),
        Ok(None)
    );
    let mut objects = rendered.docs.clone();
    objects.extend(
        k8s_docs("k8s/plain-envoy.yaml")
            .into_iter()
            .filter(|d| d["kind"] == "ConfigMap"),
    );
    let kubelet = Kubelet::new(pod, "shop", objects, &[9191, 9192, 9901], &[]);
    let socket = kubelet.host_path("/spiffe-workload-api/spire-agent.sock");
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    let mesh = Mesh::new("example.org", "/ns/shop/sa/frontend");
    let agent = support::workload_api::WorkloadApi::start(
        &socket,
        support::workload_api::Bundles {
            denied: true,
            ..Default::default()
        },
    );
    let _celador = Running(kubelet.start("celador"));
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", kubelet.ports[&9901])
        .parse()
        .unwrap();
    let refused = support::wait_for(Duration::from_secs(20), || {
        try_get(admin, "/readyz").filter(|(_, body)| body.contains("PermissionDenied"))
    });
    let (status, body) =
        refused.unwrap_or_else(|| panic!("no refusal named:\n{}", kubelet.log("celador")));
    assert_eq!(status, 503);
    for words in [
        "example.org",
        "no identity issued",
        "allow_unauthenticated_verifiers = true",
        "k8s:container-name:celador",
    ] {
        assert!(body.contains(words), "/readyz lacks {words}: {body}");
    }
    // The log line is read from the process's output: it may follow
    // `/readyz` by a moment.
    let logged = support::wait_for(Duration::from_secs(5), || {
        let log = kubelet.log("celador");
        (log.contains("PermissionDenied") && log.contains("allow_unauthenticated_verifiers"))
            .then_some(())
    });
    assert!(logged.is_some(), "{}", kubelet.log("celador"));
    // The agent lets verifiers in: ready, and the reason is gone.
    agent.set(support::workload_api::bundles_for(
        "example.org",
        &[&mesh.root.der],
        None,
    ));
    wait_ready(&kubelet, 9901, "celador");
    let (_, body) = try_get(admin, "/readyz").unwrap();
    assert!(!body.contains("PermissionDenied"), "{body}");
}

// ---------------------------------------------------------------- Istio

/// The inbound listener Istio generates for a workload under a CUSTOM
/// AuthorizationPolicy with an `envoyExtAuthzGrpc` provider: the SVID and
/// root over SDS from istio-agent, Istio's RBAC filter in shadow mode
/// marking the requests the policy selects, then ext_authz, enabled by that
/// mark, calling the provider's `outbound|port||host` cluster. As in
/// Istio's own golden output, it does not set `include_peer_certificate`.
fn istio_inbound(
    mesh_config: &Value,
    provider_cluster_port: u16,
    listen: u16,
    app: u16,
    sds_socket: &Path,
) -> Value {
    let provider = &mesh_config["meshConfig"]["extensionProviders"][0];
    let host = provider["envoyExtAuthzGrpc"]["service"].as_str().unwrap();
    let port = provider["envoyExtAuthzGrpc"]["port"].as_u64().unwrap();
    let cluster = format!("outbound|{port}||{host}");
    let sds = |name: &str| {
        json!({"name": name, "sds_config": {"resource_api_version": "V3", "api_config_source": {
        "api_type": "GRPC", "transport_api_version": "V3", "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}]}}})
    };
    let http2 = json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}}}});
    let endpoint = |address: Value| json!([{"lb_endpoints": [{"endpoint": {"address": address}}]}]);
    let rbac = json!({"name": "envoy.filters.http.rbac", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
        "shadow_rules": {"action": "DENY", "policies": {
            "istio-ext-authz-ns[istio-system]-policy[celador]-rule[0]": {
                "permissions": [{"and_rules": {"rules": [{"any": true}]}}],
                "principals": [{"and_ids": {"ids": [{"any": true}]}}]}}},
        "shadow_rules_stat_prefix": "istio_ext_authz_"}});
    let ext_authz = json!({"name": "envoy.filters.http.ext_authz", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
        "grpc_service": {"envoy_grpc": {"cluster_name": cluster, "authority": format!("outbound_.{port}_._.{host}")},
            "timeout": provider["envoyExtAuthzGrpc"]["timeout"]},
        "transport_api_version": "V3",
        "filter_enabled_metadata": {"filter": "envoy.filters.http.rbac",
            "path": [{"key": "istio_ext_authz_shadow_effective_policy_id"}],
            "value": {"string_match": {"prefix": "istio-ext-authz"}}}}});
    let router = json!({"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}});
    let hcm = json!({
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "inbound_0.0.0.0_8080",
            "forward_client_cert_details": "APPEND_FORWARD",
            "set_current_client_cert_details": {"subject": true, "dns": true, "uri": true},
            "normalize_path": true,
            "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
            "route_config": {"name": "inbound|8080||", "virtual_hosts": [{"name": "inbound|http|8080", "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "inbound|8080||"}}]}]},
            "http_filters": [rbac, ext_authz, router]
        }
    });
    let tls = json!({"name": "envoy.transport_sockets.tls", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
    "require_client_certificate": true,
    "common_tls_context": {
        "alpn_protocols": ["h2", "http/1.1"],
        "tls_certificate_sds_secret_configs": [sds("default")],
        "combined_validation_context": {"default_validation_context": {}, "validation_context_sds_secret_config": sds("ROOTCA")}
    }}});
    let listener = json!({
        "name": "virtualInbound",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
        "filter_chains": [{"transport_socket": tls, "filters": [hcm]}]
    });
    let clusters = json!([
        {"name": cluster, "type": "STATIC", "connect_timeout": "1s", "typed_extension_protocol_options": http2,
         "load_assignment": {"cluster_name": cluster, "endpoints": endpoint(json!({"socket_address": {"address": "127.0.0.1", "port_value": provider_cluster_port}}))}},
        {"name": "inbound|8080||", "type": "STATIC", "connect_timeout": "1s",
         "load_assignment": {"cluster_name": "inbound|8080||", "endpoints": endpoint(json!({"socket_address": {"address": "127.0.0.1", "port_value": app}}))}},
        {"name": "sds-grpc", "type": "STATIC", "connect_timeout": "1s", "typed_extension_protocol_options": http2,
         "load_assignment": {"cluster_name": "sds-grpc", "endpoints": endpoint(json!({"pipe": {"path": sds_socket.display().to_string()}}))}}
    ]);
    json!({
        "node": {"id": "sidecar~10.0.0.7~catalogue-7d4b9c-x2x9q.shop~shop.svc.cluster.local", "cluster": "catalogue.shop"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": [listener], "clusters": clusters}
    })
}

/// Applies an EnvoyFilter's MERGE patches as Istio does: the patch's
/// `typed_config` merged field by field (protobuf merge: messages merge,
/// scalars replace) into the matching filter of the inbound listener.
fn apply_envoy_filter(config: &mut Value, filter: &Value) {
    for patch in filter["spec"]["configPatches"].as_array().unwrap() {
        assert_eq!(patch["patch"]["operation"], "MERGE");
        if patch["applyTo"] == "CLUSTER" {
            // Istio names the cluster of a ServiceEntry's host and port
            // `outbound|port||host`; the patch merges into it.
            assert_eq!(patch["match"]["context"], "SIDECAR_OUTBOUND");
            let name = format!(
                "outbound|{}||{}",
                patch["match"]["cluster"]["portNumber"],
                patch["match"]["cluster"]["service"].as_str().unwrap()
            );
            let cluster = config["static_resources"]["clusters"]
                .as_array_mut()
                .unwrap()
                .iter_mut()
                .find(|c| c["name"] == name.as_str())
                .unwrap_or_else(|| panic!("no cluster {name}"));
            merge(cluster, &patch["patch"]["value"]);
            continue;
        }
        let chain =
            &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0];
        assert_eq!(patch["match"]["context"], "SIDECAR_INBOUND");
        assert_eq!(patch["patch"]["operation"], "MERGE");
        let network = &patch["match"]["listener"]["filterChain"]["filter"];
        assert_eq!(network["name"], chain["name"]);
        let value = &patch["patch"]["value"];
        match patch["applyTo"].as_str().unwrap() {
            "HTTP_FILTER" => {
                let name = network["subFilter"]["name"].as_str().unwrap();
                let http = chain["typed_config"]["http_filters"]
                    .as_array_mut()
                    .unwrap()
                    .iter_mut()
                    .find(|f| f["name"] == name)
                    .unwrap();
                assert_eq!(
                    http["typed_config"]["@type"], value["typed_config"]["@type"],
                    "Istio merges only the same type"
                );
                merge(&mut http["typed_config"], &value["typed_config"]);
            }
            "NETWORK_FILTER" => {
                assert_eq!(
                    chain["typed_config"]["@type"],
                    value["typed_config"]["@type"]
                );
                merge(&mut chain["typed_config"], &value["typed_config"]);
            }
            other => panic!("unexpected applyTo {other}"),
        }
    }
}

/// Renders the chart with `values`, injects k8s/istio.yaml's workload, runs
/// its celador as the kubelet would (the bundle from istio-ca-root-cert),
/// and puts an Istio-generated inbound listener in front, with or without
/// the chart's EnvoyFilter merged in. Returns the reply to a GET of `path`
/// by `client`, and whether the app saw it.
struct IstioPod {
    kubelet: Kubelet,
    _celador: Running,
    _agent: support::workload_api::WorkloadApi,
    rendered: Rendered,
    mesh_config: Value,
    upstream: support::upstream::Upstream,
    root: Ca,
    runtime: tokio::runtime::Runtime,
}

impl IstioPod {
    fn start(values: Value) -> IstioPod {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let rendered = Rendered::of(&values);
        let docs = k8s_docs("k8s/istio.yaml");
        let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
        let injected = inject_through_the_chart(&rendered, &pod_of(deployment, "shop"));
        let root = Ca::root("cluster.local");
        let mut objects = rendered.docs.clone();
        objects.extend(docs.iter().filter(|d| d["kind"] == "ConfigMap").cloned());
        // Istio publishes its root in every namespace.
        objects.push(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "istio-ca-root-cert", "namespace": "shop"}, "data": {"root-cert.pem": root.pem}}));
        let upstream = support::upstream::Upstream::start();
        let kubelet = Kubelet::new(injected, "shop", objects, &[9191, 9192, 9901], &[]);
        let celador = Running(kubelet.start("celador"));
        wait_ready(&kubelet, 9901, "celador");
        probes_pass(&kubelet, "celador");
        let server = root
            .leaf()
            .uri("spiffe://cluster.local/ns/shop/sa/catalogue")
            .dns("localhost")
            .build();
        let socket = kubelet.host_path("/var/run/secrets/workload-spiffe-uds/socket");
        std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
        let agent = {
            let _guard = runtime.enter();
            support::workload_api::WorkloadApi::start_agent(
                &socket,
                support::workload_api::Bundles::default(),
                support::sds::Sds {
                    svid_pem: server.pem.clone(),
                    key_pem: server.key_pem.clone(),
                    bundle_pem: root.pem.clone(),
                },
            )
        };
        let mesh_config = mesh_config_of(&rendered.notes);
        IstioPod {
            kubelet,
            _celador: celador,
            _agent: agent,
            rendered,
            mesh_config,
            upstream,
            root,
            runtime,
        }
    }

    /// Envoy as Istio configures it, `patched` with the chart's EnvoyFilter.
    fn envoy(&self, patched: bool) -> support::envoy::Envoy {
        let entry = self.rendered.one("ServiceEntry");
        assert_eq!(entry["spec"]["endpoints"][0]["address"], "127.0.0.1");
        let port = entry["spec"]["ports"][0]["number"].as_u64().unwrap() as u16;
        let mut config = istio_inbound(
            &self.mesh_config,
            self.kubelet.ports[&port],
            0,
            self.upstream.addr.port(),
            &self
                .kubelet
                .host_path("/var/run/secrets/workload-spiffe-uds/socket"),
        );
        if patched {
            apply_envoy_filter(&mut config, self.rendered.one("EnvoyFilter"));
        }
        let dir = self.kubelet.root.path().join(if patched {
            "envoy-patched"
        } else {
            "envoy-istio"
        });
        std::fs::create_dir_all(&dir).unwrap();
        support::envoy::Envoy::start(&config.to_string(), &dir)
    }

    fn get(
        &self,
        envoy: &support::envoy::Envoy,
        client: &support::https::ClientCert,
        path: &str,
    ) -> support::https::Reply {
        support::https::tls(
            envoy.listener("virtualInbound"),
            &self.root.pem,
            Some(client),
            &support::https::Call::get(path),
        )
    }
}

fn client_of(leaf: &Leaf, intermediates: &[&Ca]) -> support::https::ClientCert {
    let mut chain = leaf.pem.clone();
    for ca in intermediates {
        chain.push_str(&ca.pem);
    }
    support::https::ClientCert {
        chain_pem: chain,
        key_pem: leaf.key_pem.clone(),
    }
}

#[test]
fn istio_wiring_delivers_the_peer_certificate_to_celador() {
    let values =
        serde_saphyr_json(&std::fs::read_to_string(repo("k8s/istio-values.yaml")).unwrap());
    let pod = IstioPod::start(values);
    let frontend = pod.root.svid("spiffe://cluster.local/ns/shop/sa/frontend");
    let client = client_of(&frontend, &[]);

    // As Istio generates it, celador never sees the caller's certificate.
    let unpatched = pod.envoy(false);
    let reply = pod.get(&unpatched, &client, "/catalogue/shoes?m=unpatched");
    assert_eq!(
        (reply.status, reply.header("x-celador-reason")),
        (401, Some("svid_missing"))
    );
    assert!(pod.upstream.requests_with("m=unpatched").is_empty());
    drop(unpatched);

    // With the chart's EnvoyFilter merged in, it does, and Envoy's HTTP/2
    // flood limits on the provider's cluster are raised.
    let envoy = pod.envoy(true);
    let clusters = envoy.config_dump("static_clusters");
    let provider = clusters["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["cluster"])
        .find(|c| c["name"].as_str().unwrap().starts_with("outbound|9191||"))
        .expect("the provider's cluster");
    let http2 = &provider["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        ["explicit_http_config"]["http2_protocol_options"];
    assert_eq!(http2["max_outbound_frames"], 100000, "{provider}");
    assert_eq!(http2["max_outbound_control_frames"], 100000, "{provider}");
    allowed_reaches_the_app_and_denied_does_not(
        envoy.listener("virtualInbound"),
        &Mesh {
            client,
            server: frontend.clone(),
            root: Ca::root("unused"),
        },
        &pod.upstream,
        &pod.root.pem,
    );
    let stranger = client_of(
        &pod.root.svid("spiffe://cluster.local/ns/other/sa/frontend"),
        &[],
    );
    let reply = pod.get(&envoy, &stranger, "/catalogue/shoes?m=stranger");
    assert_eq!(
        (reply.status, reply.header("x-celador-reason")),
        (403, Some("no_allow_rule"))
    );
    drop(pod.runtime);
}

#[test]
fn istio_with_a_plugged_in_intermediate_ca_needs_the_forwarded_chain() {
    // Istio's CA is an intermediate under the root istio-ca-root-cert holds:
    // workload certificates chain through it.
    let values = json!({"istio": {"enabled": true, "forwardChain": true}});
    let pod = IstioPod::start(values);
    let intermediate = pod.root.intermediate("istio-intermediate");
    let frontend = intermediate.svid("spiffe://cluster.local/ns/shop/sa/frontend");
    let client = client_of(&frontend, &[&intermediate]);
    let envoy = pod.envoy(true);
    let reply = pod.get(&envoy, &client, "/catalogue/shoes?m=chained");
    assert_eq!(reply.status, 200, "{:?} {}", reply.headers, reply.body);
    assert!(!pod.upstream.requests_with("m=chained").is_empty());
    drop(envoy);

    // Without forwardChain the leaf alone does not reach the root.
    let values = json!({"istio": {"enabled": true}});
    let pod = IstioPod::start(values);
    let intermediate = pod.root.intermediate("istio-intermediate");
    let frontend = intermediate.svid("spiffe://cluster.local/ns/shop/sa/frontend");
    let client = client_of(&frontend, &[&intermediate]);
    let envoy = pod.envoy(true);
    let reply = pod.get(&envoy, &client, "/catalogue/shoes?m=unchained");
    assert_eq!(
        (reply.status, reply.header("x-celador-reason")),
        (401, Some("svid_untrusted"))
    );
}

// ---------------------------------------------------------------- in step

#[test]
fn the_k8s_manifests_match_what_the_injector_adds() {
    let rendered = Rendered::of(&plain_envoy_rules_values("example.org"));
    let (settings, _) = settings_of(&rendered);
    let docs = k8s_docs("k8s/plain-envoy.yaml");
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let by_hand = pod_of(deployment, "shop");
    let mut pod = by_hand.clone();
    pod["spec"]["initContainers"] = json!([]);
    pod["spec"]["volumes"] = json!(
        pod["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| !v["name"].as_str().unwrap().starts_with("celador"))
            .cloned()
            .collect::<Vec<_>>()
    );
    assert_eq!(
        celador::inject::review::inject(&mut pod, &settings),
        Ok(None)
    );
    let injected = &pod["spec"]["initContainers"][0];
    let written = &by_hand["spec"]["initContainers"][0];
    for field in [
        "name",
        "image",
        "imagePullPolicy",
        "command",
        "restartPolicy",
        "ports",
        "startupProbe",
        "readinessProbe",
        "livenessProbe",
        "resources",
        "securityContext",
        "terminationMessagePolicy",
    ] {
        assert_eq!(
            injected[field], written[field],
            "k8s/plain-envoy.yaml's celador differs from the injector's in {field}"
        );
    }
    let env = |c: &Value| -> Vec<Value> {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["name"] != "CELADOR_CONFIG")
            .cloned()
            .collect()
    };
    assert_eq!(env(injected), env(written));
    // The same config: the injector's in CELADOR_CONFIG, k8s/'s in a file.
    let from_env: Value =
        serde_json::from_str(injected["env"][3]["value"].as_str().unwrap()).unwrap();
    let config_map = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "web-celador")
        .unwrap();
    let from_file = serde_saphyr_json(config_map["data"]["celador.yaml"].as_str().unwrap());
    assert_eq!(from_env, from_file);
    assert_eq!(
        written["args"],
        json!(["serve", "--config", "/etc/celador/config/celador.yaml"])
    );
    // Each injected mount is there by hand too, from an equal volume.
    let volume = |pod: &Value, name: &str| -> Value {
        let mut v = pod["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap()
            .clone();
        v.as_object_mut().unwrap().remove("name");
        v
    };
    for mount in injected["volumeMounts"].as_array().unwrap() {
        let by_path = written["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == mount["mountPath"]);
        let by_path =
            by_path.unwrap_or_else(|| panic!("k8s/ does not mount {}", mount["mountPath"]));
        assert_eq!(by_path["readOnly"], true);
        let (a, b) = (
            volume(&pod, mount["name"].as_str().unwrap()),
            volume(&by_hand, by_path["name"].as_str().unwrap()),
        );
        // The rules ConfigMap's name is the chart's default in both.
        assert_eq!(a, b, "volume for {}", mount["mountPath"]);
    }
    // The rules the chart would write are k8s/'s, and they pass check.
    let rules = rendered
        .kind("ConfigMap")
        .into_iter()
        .find(|m| m["metadata"]["namespace"] == "shop")
        .unwrap();
    let k8s_rules = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "celador-rules")
        .unwrap();
    assert_eq!(rules["data"], k8s_rules["data"]);
}

#[test]
fn the_dockerfile_provides_what_the_chart_runs() {
    let dockerfile = std::fs::read_to_string(repo("Dockerfile")).unwrap();
    let last_stage = dockerfile.rsplit("\nFROM ").next().unwrap();
    let line = |keyword: &str| -> String {
        last_stage
            .lines()
            .find(|l| l.starts_with(keyword))
            .unwrap_or_else(|| panic!("the final stage has no {keyword}"))
            .to_owned()
    };
    let binary = celador::inject::sidecar::BINARY;
    assert!(
        line("COPY --from=build").ends_with(&format!(" {binary}")),
        "{}",
        line("COPY --from=build")
    );
    assert_eq!(line("ENTRYPOINT"), format!("ENTRYPOINT [\"{binary}\"]"));
    let user = line("USER ");
    let values =
        serde_saphyr_json(&std::fs::read_to_string(repo("charts/celador/values.yaml")).unwrap());
    let uid = values["sidecar"]["runAsUser"].as_u64().unwrap();
    assert_eq!(user, format!("USER {uid}:{uid}"));
    let exposed: Vec<u64> = line("EXPOSE")
        .split_whitespace()
        .skip(1)
        .map(|p| p.parse().unwrap())
        .collect();
    for port in ["grpc", "health", "admin"] {
        assert!(
            exposed.contains(&values["sidecar"]["ports"][port].as_u64().unwrap()),
            "EXPOSE lacks the {port} port"
        );
    }
    assert!(exposed.contains(&values["injector"]["port"].as_u64().unwrap()));

    // The chart's injector runs that binary, as that user, with flags the
    // binary has; the injector's sidecar runs it with flags it has too.
    let rendered = Rendered::of(&json!({}));
    let spec = &rendered.one("Deployment")["spec"]["template"]["spec"];
    let container = &spec["containers"][0];
    assert_eq!(container["command"], json!([binary]));
    assert_eq!(spec["securityContext"]["runAsUser"], uid);
    let (_, help, _) = support::celador::run(&["inject", "--help"]);
    for arg in container["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .filter(|a| a.starts_with("--"))
    {
        assert!(help.contains(arg), "celador inject has no {arg}");
    }
    let (_, help, _) = support::celador::run(&["serve", "--help"]);
    assert!(help.contains("--config-env"));
    let k8s = k8s_docs("k8s/plain-envoy.yaml");
    let deployment = k8s.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let sidecar = &deployment["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(sidecar["command"], json!([binary]));
    assert_eq!(sidecar["securityContext"]["runAsUser"], uid);
    // Probes and ports name the ports the sidecar config listens on.
    let health = values["sidecar"]["ports"]["health"].as_u64().unwrap();
    assert_eq!(sidecar["readinessProbe"]["grpc"]["port"], health);
}

// ---------------------------------------------------------------- README

/// Every command of the README's Kubernetes section: run here, or listed
/// there as needing a real cluster.
#[test]
fn the_readme_kubernetes_commands_are_run_or_listed_as_needing_a_cluster() {
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let start = readme.find("\n## Kubernetes\n").unwrap();
    let end = readme[start + 1..]
        .find("\n## ")
        .map_or(readme.len(), |i| start + 1 + i);
    let section = &readme[start..end];
    let not_run = section
        .split("Only what needs a real cluster is not run here:")
        .nth(1)
        .expect("the section lists what it does not run");
    let not_run = not_run.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut commands = Vec::new();
    for block in section.split("```sh\n").skip(1) {
        let block = block.split("```").next().unwrap();
        let mut command = String::new();
        for line in block.lines() {
            let line = line.trim();
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            command.push_str(line.trim_end_matches('\\').trim());
            command.push(' ');
            if !line.ends_with('\\') {
                commands.push(command.trim().to_owned());
                command.clear();
            }
        }
    }
    assert!(commands.len() >= 7, "{commands:?}");
    let dir = tempfile::tempdir().unwrap();
    for command in &commands {
        let words: Vec<&str> = command.split_whitespace().collect();
        match words[..] {
            ["helm", "install", release, chart, ..] => {
                // What `helm install` applies is what Helm renders: render it
                // with the same values and namespace.
                assert_eq!((release, chart), ("celador", "charts/celador"));
                assert!(command.contains("--namespace celador-system"));
                // The other way, Helm's, keeps its ConfigMaps when it lets go.
                let helms = Rendered::of(&json!({"rules": {"namespaces": ["shop"]}}));
                let rules = helms
                    .kind("ConfigMap")
                    .into_iter()
                    .find(|m| m["metadata"]["name"] == "celador-rules")
                    .unwrap();
                assert_eq!(
                    rules["metadata"]["annotations"]["helm.sh/resource-policy"],
                    "keep"
                );
                // Step 3's `kubectl` owns the rules: Helm renders none to fight it.
                assert!(!command.contains("--set"), "{command}");
                let rendered = Rendered::of(&json!({}));
                assert!(
                    !rendered
                        .kind("ConfigMap")
                        .iter()
                        .any(|m| m["metadata"]["name"] == "celador-rules")
                );
                assert!(not_run.contains("`helm install`"));
            }
            ["kubectl", "-n", _, verb, ..] | ["kubectl", verb, ..] => {
                let listed = match verb {
                    "label" => "`kubectl label`",
                    "create" => "`kubectl create configmap`/`apply`",
                    "logs" => "`kubectl logs`",
                    "rollout" => "`rollout restart`",
                    other => panic!("an unlisted kubectl {other}"),
                };
                assert!(
                    not_run.contains(listed),
                    "{command}: {listed} is not listed"
                );
            }
            ["docker", "build", ..] => assert!(not_run.contains("`docker build`")),
            ["celador", "check", file] => {
                // The rules file a user writes; here the chart's default.
                let values = serde_saphyr_json(
                    &std::fs::read_to_string(repo("charts/celador/values.yaml")).unwrap(),
                );
                let path = dir.path().join(file);
                std::fs::write(&path, values["rules"]["policy"].as_str().unwrap()).unwrap();
                let (code, out, err) = support::celador::run(&["check", path.to_str().unwrap()]);
                assert_eq!(code, 0, "{out}{err}");
            }
            ["cargo", "run", "--release", "--", ref args @ ..] => {
                let out = Command::new(support::celador::binary())
                    .args(args)
                    .current_dir(repo(""))
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{command}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let text = String::from_utf8(out.stdout).unwrap();
                let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
                let injected = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
                assert_eq!(
                    injected["spec"]["template"]["spec"]["initContainers"][0]["name"],
                    "celador"
                );
            }
            ["helm", "template", "celador", "charts/celador", ..] => {
                // The injector's settings as the chart renders them (with
                // the default values: `my-values.yaml` is the reader's),
                // taken out of its ConfigMap as the command's `yq` does.
                assert!(command.contains("--show-only templates/settings.yaml"));
                assert!(command.ends_with("> inject.yaml"), "{command}");
                let rendered = Rendered::of(&json!({}));
                let settings = rendered
                    .kind("ConfigMap")
                    .into_iter()
                    .find_map(|m| m["data"]["inject.yaml"].as_str().map(str::to_owned))
                    .expect("no ConfigMap with inject.yaml");
                std::fs::write(dir.path().join("inject.yaml"), settings).unwrap();
            }
            ["celador", "inject", "--config", "inject.yaml", "--pod", pod] => {
                // Run after the command above wrote `inject.yaml`.
                let config = dir.path().join("inject.yaml");
                assert!(
                    config.exists(),
                    "{command} before the helm template that writes it"
                );
                let pod = repo(pod);
                let (code, out, err) = support::celador::run(&[
                    "inject",
                    "--config",
                    config.to_str().unwrap(),
                    "--pod",
                    pod.to_str().unwrap(),
                ]);
                assert_eq!(code, 0, "{command}: {out}{err}");
                let docs: Vec<Value> = serde_saphyr::from_multiple(&out).unwrap();
                assert!(
                    docs.iter()
                        .any(|d| d.to_string().contains("\"name\":\"celador\"")),
                    "{command}: nothing injected:\n{out}"
                );
            }
            _ => panic!("the README's Kubernetes section has a command no test runs: {command}"),
        }
    }
}

// ------------------------------------------------------ the signals receiver

fn signals_values() -> Value {
    json!({
        "governance": {"store": {"url": "rediss://redis.platform:6379/0",
            "passwordSecret": {"name": "redis-password"}, "ca": {"secret": "redis-ca"}}},
        "signals": {"enabled": true, "host": "signals.example.com",
            "tls": {"secretName": "signals-tls"}, "transmittersSecret": "transmitters",
            "config": {"risk_expiry": "12h", "transmitters": [{
                "issuer": "https://idp.example.com/", "audience": "https://signals.example.com/",
                "jwks_file": "idp-jwks.json", "push_token_file": "idp-token"}]}}
    })
}

/// The documents of the signals receiver.
fn signals_docs(rendered: &Rendered) -> Vec<&Value> {
    rendered
        .docs
        .iter()
        .filter(|d| d["metadata"]["labels"]["app.kubernetes.io/component"] == "signals")
        .collect()
}

#[test]
fn the_signals_receiver_deploys_with_its_service_its_config_and_the_push_url() {
    // Off by default.
    assert_eq!(signals_docs(&Rendered::of(&json!({}))).len(), 0);
    let mut values = offline(&signals_values());
    values["signals"]["tls"]["issuerRef"] =
        json!({"name": "public-acme", "kind": "ClusterIssuer", "group": "cert-manager.io"});
    values["signals"]["networkPolicy"] = json!({"enabled": true,
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}],
        "storeTo": [{"ipBlock": {"cidr": "10.1.2.0/24"}}]});
    let rendered = Rendered::of(&values);
    let docs = signals_docs(&rendered);
    // The certificate, from the issuer given, into the Secret mounted.
    let certificate = docs.iter().find(|d| d["kind"] == "Certificate").unwrap();
    assert_eq!(certificate["spec"]["secretName"], "signals-tls");
    assert_eq!(
        certificate["spec"]["dnsNames"],
        json!([
            "signals.example.com",
            "celador-signals.celador-system.svc",
            "celador-signals.celador-system.svc.cluster.local"
        ])
    );
    assert_eq!(certificate["spec"]["issuerRef"]["name"], "public-acme");
    // The NetworkPolicy: the push port from the peers given; out, DNS and
    // the store only; for the receiver's pods.
    let policy = *docs.iter().find(|d| d["kind"] == "NetworkPolicy").unwrap();
    assert_eq!(
        policy["spec"]["ingress"],
        json!([{"ports": [{"port": "https", "protocol": "TCP"}],
                "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}]}])
    );
    assert_eq!(
        policy["spec"]["egress"][1],
        json!({"to": [{"ipBlock": {"cidr": "10.1.2.0/24"}}]})
    );
    assert_eq!(policy["spec"]["egress"][0]["ports"][0]["port"], 53);
    let docs: Vec<&Value> = docs
        .into_iter()
        .filter(|d| d["kind"] != "Certificate" && d["kind"] != "NetworkPolicy")
        .collect();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ConfigMap", "Deployment", "Service"], "{docs:?}");
    let [config_map, deployment, service] = [docs[0], docs[1], docs[2]];

    // It lints, and every manifest validates strictly.
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, doc) in rendered.docs.iter().enumerate() {
        let kind = (
            doc["apiVersion"].as_str().unwrap(),
            doc["kind"].as_str().unwrap(),
        );
        if CUSTOM_KINDS.contains(&kind) {
            continue;
        }
        let file = dir.path().join(format!("{i}.yaml"));
        std::fs::write(&file, doc.to_string()).unwrap();
        files.push(file.display().to_string());
    }
    for version in KUBERNETES_VERSIONS {
        let report = helm("lint", &values, &format!("v{version}"));
        assert_eq!(report["errors"], json!([]), "{report}");
        let mut args = vec!["-m", "kubernetes_validate", "--strict", "-k", version];
        args.extend(files.iter().map(String::as_str));
        let (ok, out, err) = python(&args);
        assert!(ok && !out.contains("WARN"), "{version}:\n{out}{err}");
    }

    // The Deployment runs the receiver on the config, with the store's
    // password from its Secret, and probes its /healthz over HTTPS.
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        container["args"],
        json!([
            "signals",
            "serve",
            "--config",
            "/etc/celador-signals/receiver.yaml"
        ])
    );
    assert_eq!(
        container["env"][0]["valueFrom"]["secretKeyRef"],
        json!({"name": "redis-password", "key": "password"})
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["scheme"], "HTTPS");
    assert_eq!(container["ports"][0]["containerPort"], 8443);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    let sources = &pod["volumes"][0]["projected"]["sources"];
    let names: Vec<&str> = sources
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["configMap"]["name"]
                .as_str()
                .or(s["secret"]["name"].as_str())
                .unwrap()
        })
        .collect();
    assert_eq!(
        names,
        ["celador-signals", "signals-tls", "transmitters", "redis-ca"]
    );
    assert_eq!(
        &policy["spec"]["podSelector"]["matchLabels"],
        &service["spec"]["selector"]
    );
    // The Service selects exactly its pods, on 443.
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (key, value) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[key], value, "{key}");
    }
    assert_eq!(service["spec"]["ports"][0]["port"], 443);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "https");
    // NOTES print the push URL to register with each transmitter.
    assert!(
        rendered
            .notes
            .contains("https://signals.example.com/events"),
        "{}",
        rendered.notes
    );

    // The config is one `celador signals check` accepts, given the files
    // the projected volume holds.
    let text = config_map["data"]["receiver.yaml"].as_str().unwrap();
    let config: Value = serde_saphyr_json(text);
    assert_eq!(config["listen"], "0.0.0.0:8443");
    assert_eq!(config["risk_expiry"], "12h");
    assert_eq!(
        config["sink"],
        json!({"store": "rediss://redis.platform:6379/0", "key_prefix": "celador",
               "password_env": "CELADOR_STORE_PASSWORD", "ca_file": "store-ca.pem"})
    );
    let mounted = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(mounted.path().join(name), text).unwrap();
    write("receiver.yaml", text);
    let ca = Ca::root("signals CA");
    let leaf = ca.leaf().dns("signals.example.com").build();
    write("tls.crt", &leaf.pem);
    write("tls.key", &leaf.key_pem);
    write("store-ca.pem", &ca.pem);
    write(
        "idp-jwks.json",
        &support::jwt::jwks(&[&support::jwt::Signer::es256("k1")]),
    );
    write("idp-token", "push-secret\n");
    let checked = Command::new(support::celador::binary())
        .args(["signals", "check", "--config"])
        .arg(mounted.path().join("receiver.yaml"))
        .env("CELADOR_STORE_PASSWORD", "redis-secret")
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );

    // Without a store or a certificate, Helm says what is missing.
    let mut no_store = values.clone();
    no_store["governance"]["store"]["url"] = json!("");
    let refused = Rendered::exactly(&no_store).err().unwrap();
    assert!(
        refused.contains("signals.enabled needs governance.store.url"),
        "{refused}"
    );
    let mut no_tls = values.clone();
    no_tls["signals"]["tls"]["secretName"] = json!("");
    let refused = Rendered::exactly(&no_tls).err().unwrap();
    assert!(refused.contains("signals.tls.secretName"), "{refused}");
    // The chart sets what it owns: the schema refuses it in config.
    let mut owned = values.clone();
    owned["signals"]["config"]["sink"] = json!({"revocations_file": "r.yaml"});
    assert!(Rendered::exactly(&owned).is_err());
}

/// A JWKS over plain HTTP on a loopback port (which the receiver accepts
/// for a loopback address only), for `celador signals check` of a config
/// with a `jwks_uri`.
fn loopback_jwks(document: String) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut tcp in listener.incoming().map_while(Result::ok) {
            let mut head = [0u8; 2048];
            let _ = std::io::Read::read(&mut tcp, &mut head);
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{document}",
                document.len()
            );
            let _ = std::io::Write::write_all(&mut tcp, answer.as_bytes());
        }
    });
    port
}

#[test]
fn the_signals_receiver_connects_as_its_own_store_user_when_given_one() {
    // docs/fleet.md's one user per component: the sidecars' user cannot
    // write revocations, so the receiver is given its own.
    let mut values = offline(&signals_values());
    values["governance"]["store"]["username"] = json!("celador-sidecar");
    values["signals"]["store"] = json!({"username": "celador-receiver",
        "passwordSecret": {"name": "redis-receiver", "key": "pw"}});
    let rendered = Rendered::of(&values);
    let docs = signals_docs(&rendered);
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"],
        json!({"name": "redis-receiver", "key": "pw"})
    );
    let config_map = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    let config = serde_saphyr_json(config_map["data"]["receiver.yaml"].as_str().unwrap());
    assert_eq!(config["sink"]["username"], "celador-receiver");
    assert_eq!(config["sink"]["password_env"], "CELADOR_STORE_PASSWORD");
    // The sidecars keep theirs.
    let sidecar = rendered
        .docs
        .iter()
        .filter(|d| d["metadata"]["labels"]["app.kubernetes.io/component"] != "signals")
        .map(|d| d.to_string())
        .collect::<String>();
    assert!(sidecar.contains("celador-sidecar"), "{sidecar}");
    assert!(!sidecar.contains("redis-receiver"), "{sidecar}");
}

#[test]
fn the_signals_receiver_renders_key_urls_polling_the_risk_cap_and_assurance_levels() {
    let port = loopback_jwks(support::jwt::jwks(&[&support::jwt::Signer::es256("k1")]));
    let mut values = offline(&signals_values());
    let config = &mut values["signals"]["config"];
    config["max_risks"] = json!(2000);
    config["assurance_levels"] =
        json!({"https://idp.example.com/acr": {"bronze": "high", "gold": "low"}});
    config["transmitters"].as_array_mut().unwrap().push(
        json!({"issuer": "https://ci.example.com/", "audience": "https://signals.example.com/",
            "jwks_uri": format!("http://127.0.0.1:{port}/jwks"), "jwks_refresh": "2m",
            "max_risks": 50, "poll": {"url": "https://ci.example.com/ssf/poll", "wait": "30s"}}),
    );
    values["signals"]["networkPolicy"] = json!({"enabled": true,
        "storeTo": [{"ipBlock": {"cidr": "10.1.2.0/24"}}]});
    let rendered = Rendered::of(&values);
    let docs = signals_docs(&rendered);
    // The receiver may reach the transmitters it fetches keys or polls
    // SETs from: TCP 443 by default, or the rules given.
    let policy = *docs.iter().find(|d| d["kind"] == "NetworkPolicy").unwrap();
    assert_eq!(
        policy["spec"]["egress"][2],
        json!({"ports": [{"port": 443, "protocol": "TCP"}]})
    );
    let mut to_idp = values.clone();
    to_idp["signals"]["networkPolicy"]["transmittersTo"] = json!([
        {"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [{"port": 8443, "protocol": "TCP"}]}
    ]);
    let other = Rendered::of(&to_idp);
    let policy_to_idp = *signals_docs(&other)
        .iter()
        .find(|d| d["kind"] == "NetworkPolicy")
        .unwrap();
    assert_eq!(
        policy_to_idp["spec"]["egress"][2]["to"][0]["ipBlock"]["cidr"],
        "203.0.113.0/24"
    );
    // Without a key URL or a poll endpoint, only DNS and the store.
    let files_only = Rendered::of(&offline(&{
        let mut v = signals_values();
        v["signals"]["networkPolicy"] =
            json!({"enabled": true, "storeTo": [{"ipBlock": {"cidr": "10.1.2.0/24"}}]});
        v
    }));
    let policy_files = *signals_docs(&files_only)
        .iter()
        .find(|d| d["kind"] == "NetworkPolicy")
        .unwrap();
    assert_eq!(policy_files["spec"]["egress"].as_array().unwrap().len(), 2);
    // Each policy validates strictly.
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, doc) in [policy, policy_to_idp, policy_files].iter().enumerate() {
        let file = dir.path().join(format!("policy-{i}.yaml"));
        std::fs::write(&file, doc.to_string()).unwrap();
        files.push(file.display().to_string());
    }
    let version = KUBERNETES_VERSIONS[KUBERNETES_VERSIONS.len() - 1];
    let mut args = vec!["-m", "kubernetes_validate", "--strict", "-k", version];
    args.extend(files.iter().map(String::as_str));
    let (ok, out, err) = python(&args);
    assert!(ok && !out.contains("WARN"), "{out}{err}");
    // NOTES say where each transmitter's keys come from, and the cap.
    for said in [
        "at most\n   2000 risk levels",
        "https://idp.example.com/: keys from the file idp-jwks.json of transmitters",
        "fetched every 2m; SETs also polled from https://ci.example.com/ssf/poll (long polls of 30s)",
    ] {
        assert!(rendered.notes.contains(said), "{said}:\n{}", rendered.notes);
    }
    // The config carries them, and `celador signals check` accepts it
    // (fetching the keys from the URL).
    let config_map = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    let text = config_map["data"]["receiver.yaml"].as_str().unwrap();
    let config: Value = serde_saphyr_json(text);
    assert_eq!(config["max_risks"], 2000);
    assert_eq!(config["transmitters"][1]["jwks_refresh"], "2m");
    assert_eq!(
        config["assurance_levels"]["https://idp.example.com/acr"]["bronze"],
        "high"
    );
    let mounted = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(mounted.path().join(name), text).unwrap();
    write("receiver.yaml", text);
    let ca = Ca::root("signals CA");
    let leaf = ca.leaf().dns("signals.example.com").build();
    write("tls.crt", &leaf.pem);
    write("tls.key", &leaf.key_pem);
    write("store-ca.pem", &ca.pem);
    write(
        "idp-jwks.json",
        &support::jwt::jwks(&[&support::jwt::Signer::es256("k1")]),
    );
    write("idp-token", "push-secret\n");
    let checked = Command::new(support::celador::binary())
        .args(["signals", "check", "--config"])
        .arg(mounted.path().join("receiver.yaml"))
        .env("CELADOR_STORE_PASSWORD", "redis-secret")
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    // The schema refuses what the receiver would: both key sources, a
    // refresh that is no duration, a cap out of range, a level that is
    // no risk level, a key URL that is not https://, a poll without url.
    for (key, bad) in [
        ("jwks_file", json!("both.json")),
        ("jwks_refresh", json!("five minutes")),
        ("max_risks", json!(-1)),
        ("jwks_uri", json!("http://ci.example.com/jwks")),
        ("poll", json!({"wait": "30s"})),
    ] {
        let mut refused = values.clone();
        refused["signals"]["config"]["transmitters"][1][key] = bad;
        assert!(Rendered::exactly(&refused).is_err(), "{key}");
    }
    let mut severe = values.clone();
    severe["signals"]["config"]["assurance_levels"]["NIST-AAL"] = json!({"nist-aal1": "severe"});
    assert!(Rendered::exactly(&severe).is_err());
    let mut unknown = values.clone();
    unknown["signals"]["config"]["max_risk"] = json!(5);
    assert!(Rendered::exactly(&unknown).is_err());
}
