//! A load generator for soak and fault tests: threads sending HTTP/1.1
//! requests over keep-alive connections to an Envoy listener, each response
//! classified by who answered it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// One kind of request and the answer it must get.
#[derive(Clone)]
pub struct Kind {
    /// For messages.
    pub name: &'static str,
    /// `GET` path.
    pub path: String,
    /// Request headers.
    pub headers: Vec<(String, String)>,
    /// `None`: allowed (the upstream answered); else the `x-celador-reason`.
    pub expect: Option<&'static str>,
}

/// What the load saw.
#[derive(Default)]
pub struct Counts {
    /// Responses as expected.
    pub as_expected: AtomicU64,
    /// Responses celador gave, but not the expected one.
    pub unexpected: AtomicU64,
    /// Of those, requests allowed (the upstream answered) that should not
    /// have been.
    pub allowed_unexpectedly: AtomicU64,
    /// Denials without `x-celador-reason`: Envoy's own failure path.
    pub failure_path: AtomicU64,
    /// Connections that broke.
    pub transport_errors: AtomicU64,
    /// Examples of what went wrong.
    pub examples: Mutex<Vec<String>>,
}

impl Counts {
    /// Every response so far.
    pub fn total(&self) -> u64 {
        self.as_expected.load(Ordering::Relaxed)
            + self.unexpected.load(Ordering::Relaxed)
            + self.failure_path.load(Ordering::Relaxed)
    }

    fn note(&self, example: String) {
        let mut examples = self.examples.lock().unwrap();
        if examples.len() < 10 {
            examples.push(example);
        }
    }
}

/// Load running in the background until stopped or `limit` responses.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// What it saw.
    pub counts: Arc<Counts>,
}

impl Load {
    /// Starts `threads` connections to `addr`, cycling through `kinds`,
    /// until `limit` responses in all (or [`Load::stop`]).
    pub fn start(addr: SocketAddr, kinds: Vec<Kind>, threads: usize, limit: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let kinds = Arc::new(kinds);
        let threads = (0..threads)
            .map(|t| {
                let (stop, counts, kinds) =
                    (Arc::clone(&stop), Arc::clone(&counts), Arc::clone(&kinds));
                std::thread::spawn(move || run(addr, &kinds, t, limit, &stop, &counts))
            })
            .collect();
        Load {
            stop,
            threads,
            counts,
        }
    }

    /// Stops the load and waits for its threads.
    pub fn stop(mut self) -> Arc<Counts> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        Arc::clone(&self.counts)
    }

    /// Waits until `limit` is reached.
    pub fn wait(mut self) -> Arc<Counts> {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        Arc::clone(&self.counts)
    }
}

fn run(
    addr: SocketAddr,
    kinds: &[Kind],
    offset: usize,
    limit: u64,
    stop: &AtomicBool,
    counts: &Counts,
) {
    let mut i = offset;
    while !stop.load(Ordering::Relaxed) && counts.total() < limit {
        let Ok(stream) = TcpStream::connect(addr) else {
            counts.transport_errors.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        while !stop.load(Ordering::Relaxed) && counts.total() < limit {
            let kind = &kinds[i % kinds.len()];
            i += 1;
            let mut request = format!("GET {} HTTP/1.1\r\nhost: app\r\n", kind.path);
            for (k, v) in &kind.headers {
                request.push_str(&format!("{k}: {v}\r\n"));
            }
            request.push_str("\r\n");
            let answer = writer
                .write_all(request.as_bytes())
                .ok()
                .and_then(|()| read_response(&mut reader));
            let Some((status, reason, close)) = answer else {
                counts.transport_errors.fetch_add(1, Ordering::Relaxed);
                break;
            };
            classify(kind, status, reason, counts);
            if close {
                break;
            }
        }
    }
}

fn classify(kind: &Kind, status: u16, reason: Option<String>, counts: &Counts) {
    let got = match (&reason, status) {
        (Some(reason), _) => Some(reason.as_str()),
        (None, 200) => None,
        (None, status) => {
            counts.failure_path.fetch_add(1, Ordering::Relaxed);
            counts.note(format!("{}: {status} without x-celador-reason", kind.name));
            return;
        }
    };
    if got == kind.expect {
        counts.as_expected.fetch_add(1, Ordering::Relaxed);
    } else {
        counts.unexpected.fetch_add(1, Ordering::Relaxed);
        if got.is_none() {
            counts.allowed_unexpectedly.fetch_add(1, Ordering::Relaxed);
        }
        counts.note(format!(
            "{}: {status} {got:?}, expected {:?}",
            kind.name, kind.expect
        ));
    }
}

/// Reads one response: (status, `x-celador-reason`, whether the server
/// closes the connection).
fn read_response(reader: &mut BufReader<TcpStream>) -> Option<(u16, Option<String>, bool)> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let status = line.split_whitespace().nth(1)?.parse().ok()?;
    let (mut length, mut reason, mut close) = (0usize, None, false);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().ok()?,
            "x-celador-reason" => reason = Some(value.trim().to_owned()),
            "connection" => close = value.trim().eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((status, reason, close))
}

/// The resident set size of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// How many file descriptors process `pid` has open.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}
