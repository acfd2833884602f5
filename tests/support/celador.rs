//! The real celador binary, started on a config written for the test.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::wait_for;

/// The path of the celador binary cargo built for these tests.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_celador"))
}

/// A running `celador serve`.
pub struct Celador {
    child: Option<Child>,
    /// The gRPC address it listens on.
    pub addr: SocketAddr,
    /// The admin address, when the config has one.
    pub admin: Option<SocketAddr>,
    audit: Arc<Mutex<Vec<String>>>,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Celador {
    /// Starts `celador serve --config config` and waits until it listens.
    pub fn start(config: &Path) -> Celador {
        Celador::start_with_env(config, &[])
    }

    /// [`Celador::start`] with extra environment variables.
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Celador {
        let mut child = Command::new(binary())
            .args(["serve", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start celador");
        let audit = collect(child.stdout.take().expect("stdout"));
        let logs = collect(child.stderr.take().expect("stderr"));
        let address_of = |message: &str| {
            logs.lock().unwrap().iter().find_map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).ok()?;
                if v["fields"]["message"] != message {
                    return None;
                }
                v["fields"]["address"].as_str()?.parse::<SocketAddr>().ok()
            })
        };
        let listening = wait_for(Duration::from_secs(20), || address_of("listening"));
        let admin = address_of("admin listening");
        let Some(addr) = listening else {
            let _ = child.kill();
            panic!(
                "celador did not start listening; its log:\n{}",
                logs.lock().unwrap().join("\n")
            );
        };
        Celador {
            child: Some(child),
            addr,
            admin,
            audit,
            logs,
        }
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How many audit records were written so far.
    pub fn audit_count(&self) -> usize {
        self.audit.lock().unwrap().len()
    }

    /// Every audit record so far, parsed.
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        self.audit
            .lock()
            .unwrap()
            .iter()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {line}"))
            })
            .collect()
    }

    /// The audit records of requests whose path contains `marker`, waiting
    /// up to five seconds for at least one.
    pub fn audit_for(&self, marker: &str) -> Vec<serde_json::Value> {
        let found = wait_for(Duration::from_secs(5), || {
            let records: Vec<_> = self
                .audit_records()
                .into_iter()
                .filter(|r| r["path"].as_str().is_some_and(|p| p.contains(marker)))
                .collect();
            (!records.is_empty()).then_some(records)
        });
        found.unwrap_or_else(|| panic!("no audit record for {marker}; log:\n{}", self.log()))
    }

    /// `GET path` on the admin listener: (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        let admin = self.admin.expect("the config has no admin address");
        let reply = super::https::plain(admin, &super::https::Call::get(path));
        (reply.status, reply.body)
    }

    /// Waits up to `timeout` for a log line containing `text`.
    pub fn wait_for_log(&self, text: &str, timeout: Duration) -> bool {
        wait_for(timeout, || self.log().contains(text).then_some(())).is_some()
    }

    /// The diagnostic log so far.
    pub fn log(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM and waits for the exit, at most `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = wait_for(timeout, || child.try_wait().ok().flatten());
        if status.is_some() {
            self.child = None;
        }
        status
    }
}

impl Drop for Celador {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn collect(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// Runs `celador ARGS... --store URL` (a governance command against the
/// store at `url`) to completion, as [`run`].
pub fn run_on_store(url: &str, args: &[&str]) -> (i32, String, String) {
    run(&[args, &["--store", url][..]].concat())
}

/// Runs `celador ARGS...` to completion: (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run celador");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
