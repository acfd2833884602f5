//! What the kubelet does for a pod, done on this machine without a cluster:
//! ConfigMap, Secret and Downward API volumes laid out as files at their
//! mount paths under a temporary root, `fieldRef` and `secretKeyRef`
//! variables resolved, and
//! each container's command, arguments and environment run as the pod spec
//! gives them.
//!
//! Two things differ from a node, and only these: every path a pod names
//! under one of its mount paths is moved under the temporary root, and each
//! port the pod uses is moved to a free port on 127.0.0.1 (so `0.0.0.0`
//! becomes `127.0.0.1`), since tests share one network namespace.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use base64::Engine;
use serde_json::Value;

/// A pod, its objects, and the moved paths and ports.
pub struct Kubelet {
    /// The temporary root the mount paths live under.
    pub root: tempfile::TempDir,
    pod: Value,
    namespace: String,
    objects: Vec<Value>,
    /// Each port the pod uses and the free port it moved to.
    pub ports: BTreeMap<u16, u16>,
    /// Programs that stand in for the image's: `/usr/local/bin/celador`, `envoy`.
    pub programs: BTreeMap<String, PathBuf>,
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Kubelet {
    /// A kubelet for `pod` (a Pod object) in `namespace`, with the
    /// ConfigMaps and Secrets in `objects`; `ports` are moved to free ones
    /// unless given in `fixed` (for instance the app's, to a test upstream).
    pub fn new(
        pod: Value,
        namespace: &str,
        objects: Vec<Value>,
        ports: &[u16],
        fixed: &[(u16, u16)],
    ) -> Kubelet {
        let mut moved: BTreeMap<u16, u16> = ports.iter().map(|p| (*p, free_port())).collect();
        moved.extend(fixed.iter().copied());
        let mut programs = BTreeMap::new();
        programs.insert(
            "/usr/local/bin/celador".to_owned(),
            super::celador::binary(),
        );
        programs.insert("envoy".to_owned(), super::envoy::binary());
        Kubelet {
            root: tempfile::Builder::new()
                .prefix("kubelet")
                .tempdir_in("/tmp")
                .unwrap(),
            pod,
            namespace: namespace.to_owned(),
            objects,
            ports: moved,
            programs,
        }
    }

    /// The pod's spec.
    pub fn pod(&self) -> &Value {
        &self.pod
    }

    /// The container named `name`, among init containers and containers.
    pub fn container(&self, name: &str) -> Value {
        ["initContainers", "containers"]
            .iter()
            .filter_map(|k| self.pod["spec"][k].as_array())
            .flatten()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("the pod has no container {name}"))
            .clone()
    }

    /// Every mount path of every container (the paths moved under root).
    fn mount_paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = ["initContainers", "containers"]
            .iter()
            .filter_map(|k| self.pod["spec"][k].as_array())
            .flatten()
            .filter_map(|c| c["volumeMounts"].as_array())
            .flatten()
            .filter_map(|m| m["mountPath"].as_str().map(str::to_owned))
            .collect();
        // Longest first, so /etc/celador/rules wins over /etc/celador.
        paths.sort_by_key(|p| std::cmp::Reverse(p.len()));
        paths.dedup();
        paths
    }

    /// `text` with mount paths moved under root and ports moved.
    pub fn translate(&self, text: &str) -> String {
        let root = self.root.path().display().to_string();
        // A sentinel marks the end, so a port at the very end is found too.
        let mut out = format!("{text}\u{0}");
        for path in self.mount_paths() {
            let mut result = String::new();
            let mut rest = out.as_str();
            while let Some(i) = rest.find(&path) {
                // Only whole paths: preceded by a quote, space, `/`-less start or scheme.
                let before = rest[..i].chars().last();
                let whole = !matches!(before, Some(c) if c.is_alphanumeric() || c == '_' || c == '-' || c == '.');
                let already = rest[..i].ends_with(&root);
                result.push_str(&rest[..i]);
                if whole && !already {
                    result.push_str(&root);
                }
                result.push_str(&path);
                rest = &rest[i + path.len()..];
            }
            result.push_str(rest);
            out = result;
        }
        for (from, to) in &self.ports {
            for host in ["0.0.0.0", "127.0.0.1", ""] {
                out = out.replace(&format!("{host}:{from}\""), &format!("127.0.0.1:{to}\""));
                out = out.replace(&format!("{host}:{from}'"), &format!("127.0.0.1:{to}'"));
                out = out.replace(&format!("{host}:{from}\n"), &format!("127.0.0.1:{to}\n"));
                out = out.replace(
                    &format!("{host}:{from}\u{0}"),
                    &format!("127.0.0.1:{to}\u{0}"),
                );
            }
            out = out.replace(
                &format!("port_value: {from} "),
                &format!("port_value: {to} "),
            );
            out = out.replace(
                &format!("port_value: {from}\n"),
                &format!("port_value: {to}\n"),
            );
        }
        out.replace("address: 0.0.0.0", "address: 127.0.0.1")
            .trim_end_matches('\u{0}')
            .to_owned()
    }

    /// Lays out the volumes `container` mounts.
    pub fn mount(&self, container: &Value) {
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            let name = mount["name"].as_str().unwrap();
            let dir = self.host_path(mount["mountPath"].as_str().unwrap());
            std::fs::create_dir_all(&dir).unwrap();
            let volume = self.pod["spec"]["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == name)
                .unwrap_or_else(|| panic!("no volume {name}"))
                .clone();
            if let Some(source) = volume.get("configMap") {
                let name = source["name"].as_str().unwrap();
                match self.find("ConfigMap", name) {
                    Some(object) => self.write_keys(&dir, &object["data"], &source["items"], false),
                    // An optional ConfigMap that does not exist: an empty directory.
                    None if source["optional"] == true => {}
                    None => panic!("no ConfigMap {name} in namespace {}", self.namespace),
                }
            } else if let Some(source) = volume.get("secret") {
                let object = self.object("Secret", source["secretName"].as_str().unwrap());
                self.write_keys(&dir, &object["data"], &source["items"], true);
            } else if let Some(source) = volume.get("downwardAPI") {
                for item in source["items"].as_array().unwrap() {
                    let field = item["fieldRef"]["fieldPath"].as_str().unwrap();
                    let text = match field {
                        "metadata.labels" => kubelet_map(&self.pod["metadata"]["labels"]),
                        "metadata.annotations" => kubelet_map(&self.pod["metadata"]["annotations"]),
                        other => self.field(other),
                    };
                    std::fs::write(dir.join(item["path"].as_str().unwrap()), text).unwrap();
                }
            } else if volume.get("csi").is_some() || volume.get("emptyDir").is_some() {
                // The directory only: the test's SPIRE agent puts its socket there.
            } else {
                panic!("this kubelet does not lay out volume {volume}");
            }
        }
    }

    /// Where the pod's `path` is on this machine.
    pub fn host_path(&self, path: &str) -> PathBuf {
        self.root.path().join(path.trim_start_matches('/'))
    }

    fn object(&self, kind: &str, name: &str) -> Value {
        self.find(kind, name)
            .unwrap_or_else(|| panic!("no {kind} {name} in namespace {}", self.namespace))
    }

    fn find(&self, kind: &str, name: &str) -> Option<Value> {
        self.objects
            .iter()
            .find(|o| {
                o["kind"] == kind
                    && o["metadata"]["name"] == name
                    && o["metadata"]["namespace"]
                        .as_str()
                        .is_none_or(|n| n == self.namespace)
            })
            .cloned()
    }

    /// Projects `files` into the directory of the volume mounted at
    /// `mount_path` as the kubelet's atomic writer does on a sync: a new
    /// timestamped directory, the `..data` symlink swapped to it by a
    /// rename, and one `key -> ..data/key` symlink per key.
    pub fn project(&self, mount_path: &str, files: &[(&str, &str)]) {
        let dir = self.host_path(mount_path);
        let stamp = format!(
            "..{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        std::fs::create_dir(dir.join(&stamp)).unwrap();
        for (key, text) in files {
            std::fs::write(dir.join(&stamp).join(key), self.translate(text)).unwrap();
        }
        std::os::unix::fs::symlink(&stamp, dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        for (key, _) in files {
            let link = dir.join(key);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(format!("..data/{key}"), link).unwrap();
            }
        }
    }

    fn write_keys(&self, dir: &Path, data: &Value, items: &Value, base64: bool) {
        let data = data.as_object().unwrap();
        let decode = |v: &Value| -> String {
            let text = v.as_str().unwrap();
            if base64 {
                String::from_utf8(
                    base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .unwrap(),
                )
                .unwrap()
            } else {
                text.to_owned()
            }
        };
        match items.as_array() {
            Some(items) => {
                for item in items {
                    let key = item["key"].as_str().unwrap();
                    let value = data.get(key).unwrap_or_else(|| panic!("no key {key}"));
                    std::fs::write(
                        dir.join(item["path"].as_str().unwrap()),
                        self.translate(&decode(value)),
                    )
                    .unwrap();
                }
            }
            None => {
                for (key, value) in data {
                    std::fs::write(dir.join(key), self.translate(&decode(value))).unwrap();
                }
            }
        }
    }

    fn field(&self, path: &str) -> String {
        match path {
            "metadata.name" => self.pod["metadata"]["name"]
                .as_str()
                .unwrap_or("web-7d4b9c-x2x9q")
                .to_owned(),
            "metadata.namespace" => self.namespace.clone(),
            "spec.serviceAccountName" => self.pod["spec"]["serviceAccountName"]
                .as_str()
                .unwrap_or("default")
                .to_owned(),
            other => panic!("this kubelet does not resolve fieldRef {other}"),
        }
    }

    /// Starts `container` with its command, arguments and environment.
    pub fn start(&self, name: &str) -> Child {
        let container = self.container(name);
        self.mount(&container);
        let strings = |key: &str| -> Vec<String> {
            container[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|v| self.translate(v.as_str().unwrap()))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut argv = strings("command");
        argv.extend(strings("args"));
        assert!(
            !argv.is_empty(),
            "container {name} gives no command (the image's would run)"
        );
        let program = self
            .programs
            .get(&argv[0])
            .unwrap_or_else(|| panic!("container {name} runs {}, which this test cannot", argv[0]));
        let mut command = Command::new(program);
        command
            .args(&argv[1..])
            .env_clear()
            .current_dir(self.root.path());
        for var in container["env"].as_array().into_iter().flatten() {
            let value = match var.get("valueFrom") {
                Some(from) if from.get("secretKeyRef").is_some() => {
                    let r = &from["secretKeyRef"];
                    let secret = self.object("Secret", r["name"].as_str().unwrap());
                    let data = secret["data"][r["key"].as_str().unwrap()].as_str().unwrap();
                    String::from_utf8(
                        base64::engine::general_purpose::STANDARD
                            .decode(data)
                            .unwrap(),
                    )
                    .unwrap()
                }
                Some(from) => self.field(from["fieldRef"]["fieldPath"].as_str().unwrap()),
                None => self.translate(var["value"].as_str().unwrap_or_default()),
            };
            command.env(var["name"].as_str().unwrap(), value);
        }
        let log = std::fs::File::create(self.root.path().join(format!("{name}.log"))).unwrap();
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start container {name}: {e}"))
    }

    /// What container `name` wrote so far.
    pub fn log(&self, name: &str) -> String {
        let log = std::fs::read_to_string(self.root.path().join(format!("{name}.log")))
            .unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// A labels or annotations file as the kubelet writes it: sorted
/// `key="value"` lines, values quoted as Go's `%q`.
fn kubelet_map(map: &Value) -> String {
    let Some(map) = map.as_object() else {
        return String::new();
    };
    let sorted: BTreeMap<&String, &Value> = map.iter().collect();
    sorted
        .into_iter()
        .map(|(k, v)| {
            format!(
                "{k}={}\n",
                serde_json::to_string(v.as_str().unwrap()).unwrap()
            )
        })
        .collect()
}

/// Kills a container's process when dropped.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
