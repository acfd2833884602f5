//! A real `redis-server` (Debian's package, installed with apt when it is
//! missing, as the Envoy tests install Envoy), on a free loopback port.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_for;

/// The `redis-server` binary, installed if missing.
pub fn binary() -> PathBuf {
    let found = |p: &str| Path::new(p).exists().then(|| PathBuf::from(p));
    if let Some(path) = found("/usr/bin/redis-server") {
        return path;
    }
    // CI's fresh machine: install Debian's package (the tests run as root
    // there, as the Envoy and pip installs assume).
    let status = Command::new("sh")
        .args([
            "-c",
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server",
        ])
        .status()
        .expect("cannot run apt-get");
    assert!(status.success(), "apt-get install redis-server failed");
    found("/usr/bin/redis-server").expect("redis-server is not installed")
}

/// A running `redis-server`.
pub struct Redis {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    persistent: bool,
    password: Option<String>,
    /// With TLS: the CA file (PEM) that verifies its certificate.
    tls: Option<PathBuf>,
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

impl Redis {
    /// A Redis on a free port; `persistent` writes every change to an
    /// append-only file (fsync always) so that a restart keeps it.
    pub fn start(persistent: bool) -> Redis {
        Redis::start_with_password(persistent, None)
    }

    /// [`Redis::start`], requiring `password` (`requirepass`) if given.
    pub fn start_with_password(persistent: bool, password: Option<&str>) -> Redis {
        let mut redis = Redis {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            persistent,
            password: password.map(str::to_owned),
            tls: None,
        };
        redis.spawn_on_free_port();
        redis
    }

    /// A Redis that speaks only TLS, with `cert_pem`/`key_pem` (issued for
    /// `localhost`) and `ca_pem` to verify it; clients present no
    /// certificate.
    pub fn start_tls(cert_pem: &str, key_pem: &str, ca_pem: &str) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        for (name, pem) in [
            ("server.pem", cert_pem),
            ("server.key", key_pem),
            ("ca.pem", ca_pem),
        ] {
            std::fs::write(dir.path().join(name), pem).unwrap();
        }
        let mut redis = Redis {
            child: None,
            port: free_port(),
            tls: Some(dir.path().join("ca.pem")),
            dir,
            persistent: false,
            password: None,
        };
        redis.spawn_on_free_port();
        redis
    }

    /// The CA file that verifies a TLS Redis.
    pub fn ca_file(&self) -> Option<&Path> {
        self.tls.as_deref()
    }

    fn spawn_on_free_port(&mut self) {
        // `--port 0` is not supported: a free port is picked, and another
        // one if some process took it first.
        for _ in 0..10 {
            if self.spawn() {
                return;
            }
            self.kill();
            self.port = free_port();
        }
        panic!("redis-server did not start on any port");
    }

    /// Starts the server on its port and directory; whether it answers.
    fn spawn(&mut self) -> bool {
        let (appendonly, save) = if self.persistent {
            ("yes", "3600 1")
        } else {
            ("no", "")
        };
        let port = self.port.to_string();
        let dir = self.dir.path().to_path_buf();
        let listen: Vec<String> = match &self.tls {
            None => vec!["--port".into(), port],
            Some(_) => [
                ("--port", "0".to_owned()),
                ("--tls-port", port),
                (
                    "--tls-cert-file",
                    dir.join("server.pem").display().to_string(),
                ),
                (
                    "--tls-key-file",
                    dir.join("server.key").display().to_string(),
                ),
                (
                    "--tls-ca-cert-file",
                    dir.join("ca.pem").display().to_string(),
                ),
                ("--tls-auth-clients", "no".to_owned()),
            ]
            .into_iter()
            .flat_map(|(k, v)| [k.to_owned(), v])
            .collect(),
        };
        let child = Command::new(binary())
            .args(["--bind", "127.0.0.1"])
            .args(&listen)
            .args(["--appendonly", appendonly, "--appendfsync", "always"])
            .args(["--save", save, "--protected-mode", "no"])
            .args(
                self.password
                    .as_deref()
                    .map(|p| vec!["--requirepass", p])
                    .unwrap_or_default(),
            )
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start redis-server");
        self.child = Some(child);
        let up = wait_for(Duration::from_secs(5), || {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                return Some(false);
            }
            self.cli(&["PING"]).contains("PONG").then_some(true)
        });
        up == Some(true)
    }

    /// `redis://127.0.0.1:PORT/0`, or `rediss://localhost:PORT/0` with TLS
    /// (the name its certificate is issued for).
    pub fn url(&self) -> String {
        match self.tls {
            None => format!("redis://127.0.0.1:{}/0", self.port),
            Some(_) => format!("rediss://localhost:{}/0", self.port),
        }
    }

    /// Runs `redis-cli` with `args` against it: its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let cli = binary().with_file_name("redis-cli");
        let out = Command::new(cli)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .envs(self.password.as_deref().map(|p| ("REDISCLI_AUTH", p)))
            .args(
                self.tls
                    .as_deref()
                    .map(|ca| vec!["--tls".into(), "--cacert".into(), ca.display().to_string()])
                    .unwrap_or_default(),
            )
            .args(args)
            .stdin(Stdio::null())
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory (so with what its
    /// append-only file kept, if persistent).
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            wait_for(Duration::from_secs(10), || self.spawn().then_some(())).is_some(),
            "redis-server did not restart on port {}",
            self.port
        );
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
