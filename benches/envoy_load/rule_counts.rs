//! The rule-count dimension of the load benchmark (issue 26):
//! `ENVOY_LOAD_RULE_COUNTS=2,200,2000,20000,2000u scripts/envoy-load.sh`.
//!
//! One celador per policy size (a trailing `u` makes the policy's caller
//! tests unindexable: `source.id.endsWith(...)`), each with the decision
//! cache off, started one after the other so that each one's load time
//! (start to ready: parse, type-check, lint, index) and resident set are
//! its own; one Envoy with a listener per policy; requests at 8 × 8 in
//! rounds interleaving the policies. The policies are shaped like a shared
//! service's: allow rules keyed on a caller's SPIFFE ID, a method and a
//! path prefix, one in ten a deny rule on another namespace, and the
//! benchmark's caller matching only the last allow rule. Last, a reload of
//! the largest policy under load: p99 while it reloads, against p99 without.
//! With `CELADOR_BASELINE_BIN`, every size is also served by that binary
//! (another build), measured in the same rounds, for before and after in
//! one run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    EXPORTER, Pinned, Sample, client_tls, cluster, envoy_binary, free_port, http_get, listener,
    measure, median, memory, pinned, setup, wait_for,
};

/// A policy of `n` rules; `indexable: false` writes the caller tests with
/// `endsWith`, which the rule index cannot file a rule under, and gives
/// every allow rule the caller's method and path prefix.
pub fn rules(n: usize, indexable: bool) -> String {
    let caller = |id: &str, suffix: &str| match indexable {
        true => format!(r#"source.id == \"{id}\""#),
        false => format!(r#"source.id.endsWith(\"{suffix}\")"#),
    };
    let last = (0..n).rev().find(|i| i % 10 != 9).unwrap_or(0);
    let mut yaml = String::from("rules:\n");
    for i in 0..n {
        let (effect, test, path) = match i % 10 {
            9 => {
                let ns = format!("other-{i}");
                let id = format!("spiffe://example.org/ns/{ns}/sa/api");
                ("deny", caller(&id, &format!("/ns/{ns}/sa/api")), "/admin/")
            }
            _ if i == last => (
                "allow",
                caller(EXPORTER, "/ns/batch/sa/exporter"),
                "/export/",
            ),
            _ => {
                let ns = format!("team-{i}");
                let id = format!("spiffe://example.org/ns/{ns}/sa/api");
                // Unindexable: the same path as the caller's, so that no
                // conjunct tells the rules apart.
                let path = if indexable { "/v1/" } else { "/export/" };
                ("allow", caller(&id, &format!("/ns/{ns}/sa/api")), path)
            }
        };
        yaml.push_str(&format!(
            "  - name: r{i}\n    effect: {effect}\n    when: \"{test} && request.method == \\\"GET\\\" && request.path.startsWith(\\\"{path}\\\")\"\n"
        ));
    }
    yaml
}

/// One policy size and its celador.
struct Size {
    name: String,
    /// Which binary: `now` or `baseline`.
    build: &'static str,
    bin: PathBuf,
    rules: usize,
    indexable: bool,
    celador: Pinned,
    port: u16,
    policy: PathBuf,
    ready_after: Duration,
    rss_kib: u64,
}

/// The binaries measured: this build's and, with `CELADOR_BASELINE_BIN`,
/// another.
fn builds() -> Vec<(&'static str, PathBuf)> {
    let now = std::env::var("CELADOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_BIN_EXE_celador")));
    let mut builds = vec![("now", now)];
    if let Ok(baseline) = std::env::var("CELADOR_BASELINE_BIN") {
        builds.push(("baseline", PathBuf::from(baseline)));
    }
    builds
}

/// `2,200,2000u`: the sizes, `u` for unindexable.
pub fn parse_counts(text: &str) -> Vec<(usize, bool)> {
    text.split(',')
        .filter_map(|c| {
            let c = c.trim();
            let (n, indexable) = match c.strip_suffix('u') {
                Some(n) => (n, false),
                None => (c, true),
            };
            Some((n.parse().ok()?, indexable))
        })
        .collect()
}

fn start(dir: &Path, (build, bin): (&'static str, &Path), rules: usize, indexable: bool) -> Size {
    let suffix = if build == "now" { "" } else { "_baseline" };
    let name = format!("rules_{rules}{}{suffix}", if indexable { "" } else { "u" });
    let (port, admin_port) = (free_port(), free_port());
    let policy = dir.join(format!("{name}.yaml"));
    std::fs::write(&policy, self::rules(rules, indexable)).unwrap();
    std::fs::write(
        dir.join(format!("{name}.celador.yaml")),
        format!(
            "listen: 127.0.0.1:{port}\nadmin: 127.0.0.1:{admin_port}\npolicy: {name}.yaml\ntrust_domains:\n  example.org:\n    bundle: example.org.pem\ncache:\n  decision_ttl: 0s\nlog:\n  format: json\n"
        ),
    )
    .unwrap();
    let started = Instant::now();
    let config = format!("{name}.celador.yaml");
    let celador = pinned(&name, bin, &["serve", "--config", &config], dir);
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    wait_for(&format!("{name} to be ready"), dir, || {
        http_get(admin, "/readyz").filter(|(status, _)| *status == 200)
    });
    let ready_after = started.elapsed();
    let rss_kib = memory(celador.0.id()).0;
    eprintln!(
        "{name}: ready after {ready_after:?}, RSS {:.1} MiB",
        rss_kib as f64 / 1024.0
    );
    Size {
        name,
        build,
        bin: bin.to_owned(),
        rules,
        indexable,
        celador,
        port,
        policy,
        ready_after,
        rss_kib,
    }
}

/// The celador filter `celador envoy-config` prints, sending to `cluster`.
fn filter(dir: &Path, size: &Size) -> String {
    let out = Command::new(&size.bin)
        .args(["envoy-config", "--config"])
        .arg(format!("{}.celador.yaml", size.name))
        .args(["--cluster", &size.name])
        .current_dir(dir)
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs the rule-count benchmark and prints its report.
pub fn run(rounds: u64, requests: u64, counts: &[(usize, bool)]) {
    let _ = Command::new("taskset")
        .args(["-cp", "1", &std::process::id().to_string()])
        .status();
    let s = setup();
    let dir = s.dir.path();
    let builds = builds();
    let sizes: Vec<Size> = counts
        .iter()
        .flat_map(|&(n, indexable)| builds.iter().map(move |b| (n, indexable, b)))
        .map(|(n, indexable, (build, bin))| start(dir, (build, bin), n, indexable))
        .collect();
    let ports: Vec<u16> = sizes.iter().map(|_| free_port()).collect();
    let mut listeners = String::new();
    let mut clusters = String::new();
    for (size, port) in sizes.iter().zip(&ports) {
        listeners.push_str(&listener(&size.name, *port, &filter(dir, size)));
        clusters.push_str(&cluster(&size.name, size.port));
    }
    std::fs::write(
        dir.join("envoy.yaml"),
        format!(
            "admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}\nstatic_resources:\n  listeners:{listeners}\n  clusters:{clusters}\n"
        ),
    )
    .unwrap();
    let _envoy = pinned(
        "envoy",
        &envoy_binary(),
        &[
            "-c",
            "envoy.yaml",
            "--concurrency",
            "1",
            "--disable-hot-restart",
        ]
        .into_iter()
        .chain(["--admin-address-path", "admin.txt", "-l", "error"])
        .collect::<Vec<_>>(),
        dir,
    );
    let envoy_admin: SocketAddr = wait_for("Envoy's admin address", dir, || {
        std::fs::read_to_string(dir.join("admin.txt"))
            .ok()?
            .trim()
            .parse()
            .ok()
    });
    wait_for("Envoy to be ready", dir, || {
        http_get(envoy_admin, "/ready").filter(|(_, body)| body.contains("LIVE"))
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tls = client_tls(&s);
    let addr = |i: usize| -> SocketAddr { format!("127.0.0.1:{}", ports[i]).parse().unwrap() };
    let mut samples: Vec<Vec<Sample>> = sizes.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for (i, size) in sizes.iter().enumerate() {
            let sample = runtime.block_on(measure(
                addr(i),
                Arc::clone(&tls),
                8,
                8,
                requests,
                Some(size.celador.0.id()),
            ));
            eprintln!("round {round} 8x8 {}: {sample:?}", size.name);
            samples[i].push(sample);
        }
    }
    report(&sizes, &samples);
    // A reload of the largest indexable policy under load (per build):
    // the file is rewritten (a comment more) while requests run.
    for (build, _) in &builds {
        let largest = sizes
            .iter()
            .enumerate()
            .filter(|(_, s)| s.indexable && s.build == *build)
            .max_by_key(|(_, s)| s.rules);
        if let Some((i, size)) = largest {
            let during = reload_under_load(&runtime, &tls, addr(i), size, requests);
            let without = median(samples[i].iter().map(|s| s.p99.as_secs_f64()).collect());
            println!(
                "\nReload of {} ({build}) under load (3 rewrites 300 ms apart during {} requests at 8×8): p99 {:.0} µs, against {:.0} µs without: {:.2}×; {:.0} req/s; RSS after {:.1} MiB",
                size.name,
                requests.max(20_000),
                during.p99.as_secs_f64() * 1e6,
                without * 1e6,
                during.p99.as_secs_f64() / without,
                during.throughput,
                memory(size.celador.0.id()).0 as f64 / 1024.0,
            );
        }
    }
}

/// Requests at 8 × 8 while `size`'s policy file is rewritten three times.
fn reload_under_load(
    runtime: &tokio::runtime::Runtime,
    tls: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    size: &Size,
    requests: u64,
) -> Sample {
    let policy = size.policy.clone();
    let writer = std::thread::spawn(move || {
        for k in 0..3 {
            std::thread::sleep(Duration::from_millis(300));
            let text = std::fs::read_to_string(&policy).unwrap();
            std::fs::write(&policy, format!("# reload {k}\n{text}")).unwrap();
        }
    });
    let during = runtime.block_on(measure(
        addr,
        Arc::clone(tls),
        8,
        8,
        requests.max(20_000),
        Some(size.celador.0.id()),
    ));
    writer.join().unwrap();
    during
}

fn report(sizes: &[Size], samples: &[Vec<Sample>]) {
    println!(
        "| rules | indexable | build | ready after start | RSS at ready | RSS after the rounds | req/s (median) | p50 | p99 | CPU per check | CPU ÷ at the first size |"
    );
    println!("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let cpu = |s: &[Sample]| {
        median(
            s.iter()
                .filter_map(|s| s.cpu_per_request)
                .map(|c| c.as_secs_f64() * 1e6)
                .collect(),
        )
    };
    for (size, s) in sizes.iter().zip(samples) {
        // Against the first size of the same build.
        let first = sizes
            .iter()
            .zip(samples)
            .find(|(f, _)| f.build == size.build)
            .map_or(f64::NAN, |(_, f)| cpu(f));
        let stat = |f: &dyn Fn(&Sample) -> f64| median(s.iter().map(f).collect());
        println!(
            "| {} | {} | {} | {:.0} ms | {:.1} MiB | {:.1} MiB | {:.0} | {:.0} µs | {:.0} µs | {:.1} µs | {:.2}× |",
            size.rules,
            if size.indexable { "yes" } else { "no" },
            size.build,
            size.ready_after.as_secs_f64() * 1e3,
            size.rss_kib as f64 / 1024.0,
            memory(size.celador.0.id()).0 as f64 / 1024.0,
            stat(&|s| s.throughput),
            stat(&|s| s.p50.as_secs_f64() * 1e6),
            stat(&|s| s.p99.as_secs_f64() * 1e6),
            cpu(s),
            cpu(s) / first,
        );
    }
}
