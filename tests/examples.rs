//! The shipped example (`examples/celador.yaml`, its policy, bundle and
//! SVIDs) loads and decides as the README says.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::path::Path;

use celador::app::config::Config;
use support::check::{allowed, denial, request};
use support::pki::url_encode;

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_example_configuration_loads_and_decides_as_documented() {
    let config_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/celador.yaml");
    let config = Config::load(&config_path).unwrap();
    assert_eq!(config.listen, "127.0.0.1:9191");
    let authorizer = celador::app::ext_authz(&config).unwrap_or_else(|e| panic!("{e:?}"));

    let payments = url_encode(&example("pki/payments-api.pem"));
    let exporter = url_encode(&example("pki/batch-exporter.pem"));

    let cases = [
        (&payments, "POST", "/payments/charge", None),
        (&exporter, "GET", "/export/daily.csv", None),
        (
            &exporter,
            "POST",
            "/export/daily.csv",
            Some((403, "no_allow_rule")),
        ),
        (
            &payments,
            "GET",
            "/admin/users",
            Some((403, "denied_by_rule")),
        ),
    ];
    for (cert, method, path, expected) in cases {
        let response = authorizer.check(&request(cert, method, path, &[])).unwrap();
        match expected {
            None => assert!(
                allowed(&response),
                "{method} {path}: {:?}",
                denial(&response)
            ),
            Some((status, reason)) => {
                assert_eq!(
                    denial(&response),
                    Some((status, reason.to_owned())),
                    "{method} {path}"
                )
            }
        }
    }
}

#[test]
fn ci_runs_the_test_command_the_readme_gives() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    let command = "cargo test --all-targets";
    assert!(
        readme.contains(&format!("```sh\n{command}\n```")),
        "README.md"
    );
    assert!(ci.lines().any(|l| l == command), ".ci/run");
    assert!(
        readme.contains("```sh\ncargo run --release -- serve --config examples/celador.yaml\n```")
    );
}

#[test]
fn the_example_envoy_config_holds_what_envoy_config_prints_and_envoy_accepts_it() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let (code, printed, stderr) = support::celador::run(&[
        "envoy-config",
        "--config",
        examples.join("celador.yaml").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let envoy_yaml = example("envoy.yaml");
    let block: Vec<&str> = envoy_yaml
        .lines()
        .skip_while(|l| !l.contains("# BEGIN celador envoy-config"))
        .skip(1)
        .take_while(|l| !l.contains("# END celador envoy-config"))
        .map(|l| l.strip_prefix("          ").unwrap_or(l))
        .collect();
    assert_eq!(
        block.join("\n"),
        printed.trim_end(),
        "examples/envoy.yaml's filter differs from `celador envoy-config --config examples/celador.yaml`: paste the new output between its BEGIN and END lines"
    );
    let output = std::process::Command::new(support::envoy::binary())
        .args(["--mode", "validate", "-c", "envoy.yaml"])
        .current_dir(&examples)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "envoy refuses examples/envoy.yaml:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A copy of `examples/` in `dir` (the configs name their files relative
/// to it).
fn copy_examples(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_examples(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// One command of the README's walk-through: its continuation lines
/// joined, its trailing comment dropped, and the comment lines above it.
struct Step {
    command: String,
    comment: String,
}

/// The commands of the walk-through's `sh` block, in order.
fn walk_through_steps(readme: &str) -> Vec<Step> {
    let section = readme
        .split_once("### Try it through Envoy")
        .unwrap()
        .1
        .split_once("\n## ")
        .unwrap()
        .0;
    let block = section
        .split_once("```sh\n")
        .unwrap()
        .1
        .split_once("```")
        .unwrap()
        .0;
    let mut steps = Vec::new();
    let mut comment = String::new();
    let mut command = String::new();
    for line in block.lines() {
        let line = line.trim();
        if line.starts_with('#') && command.is_empty() {
            comment.push_str(line);
            comment.push('\n');
            continue;
        }
        let code = line.split(" #").next().unwrap().trim();
        match code.strip_suffix('\\') {
            Some(part) => command.push_str(part),
            None => {
                command.push_str(code);
                steps.push(Step {
                    command: std::mem::take(&mut command)
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" "),
                    comment: std::mem::take(&mut comment),
                });
            }
        }
    }
    steps
}

/// The value after `flag` in `command`.
fn flag<'a>(command: &'a str, name: &str) -> &'a str {
    let mut words = command.split_whitespace();
    words.find(|w| *w == name);
    words
        .next()
        .unwrap_or_else(|| panic!("{name} in {command}"))
}

/// The text of `comment` between `before` and the next `after`.
fn between<'a>(comment: &'a str, before: &str, after: char) -> &'a str {
    comment
        .split_once(before)
        .and_then(|(_, rest)| rest.split(after).next())
        .unwrap_or_else(|| panic!("no {before:?} in {comment:?}"))
        .trim()
}

/// The README's "Try it through Envoy", run as written: the shipped
/// `examples/celador.yaml` and `examples/envoy.yaml` (their fixed ports
/// moved to free ones), the stand-in upstream the README starts (its own
/// command, on a port the system picks), and each request it sends, with
/// the outcome its comment promises.
#[test]
fn the_readmes_walk_through_through_envoy_answers_as_it_says() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let steps = walk_through_steps(&readme);
    let dir = tempfile::tempdir().unwrap();
    let examples = dir.path().join("examples");
    copy_examples(&root.join("examples"), &examples);

    // The stand-in upstream, by the README's own commands.
    let upstream_dir = dir.path().join("upstream");
    let upstream_dir = upstream_dir.to_str().unwrap();
    let fill = steps
        .iter()
        .find(|s| s.command.starts_with("mkdir "))
        .unwrap();
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(fill.command.replace("/tmp/upstream", upstream_dir))
        .status()
        .unwrap();
    assert!(status.success(), "{}", fill.command);
    let serve = steps
        .iter()
        .find(|s| s.command.starts_with("python3 -m http.server "))
        .unwrap();
    let readme_port = flag(&serve.command, "http.server");
    let mut upstream = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec {}",
            serve
                .command
                .replace(&format!("http.server {readme_port}"), "http.server 0")
                .replace("/tmp/upstream", upstream_dir)
        ))
        .env("PYTHONUNBUFFERED", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(upstream.stdout.take().unwrap()),
        &mut banner,
    )
    .unwrap();
    let upstream_port = between(&banner, " port ", ' ').to_owned();
    let _upstream = KillOnDrop(upstream);

    // celador on the shipped configuration, on free ports.
    let config = std::fs::read_to_string(examples.join("celador.yaml")).unwrap();
    assert!(readme.contains("`127.0.0.1:9191`") && config.contains("listen: 127.0.0.1:9191\n"));
    let config = config
        .replace("listen: 127.0.0.1:9191", "listen: 127.0.0.1:0")
        .replace("admin: 127.0.0.1:9901", "admin: 127.0.0.1:0")
        // The test support finds the address celador listens on in its log.
        .replace("format: text", "format: json");
    std::fs::write(examples.join("celador.yaml"), config).unwrap();
    let celador = support::celador::Celador::start(&examples.join("celador.yaml"));

    // The shipped Envoy, asking that celador, in front of that upstream.
    let envoy_step = steps
        .iter()
        .find(|s| s.command.starts_with("envoy "))
        .unwrap();
    assert_eq!(envoy_step.command, "envoy -c envoy.yaml");
    let listen_port = "10000";
    let envoy = example_envoy(
        &examples,
        dir.path(),
        celador.addr.port(),
        (readme_port, &upstream_port),
    );
    let ingress = envoy.listener("ingress");

    let curls: Vec<&Step> = steps
        .iter()
        .filter(|s| s.command.starts_with("curl "))
        .collect();
    assert_eq!(curls.len(), 2, "one allowed and one denied request");
    for step in curls {
        let url = step
            .command
            .split_whitespace()
            .find(|w| w.starts_with("https://"))
            .unwrap();
        let path = url
            .strip_prefix(&format!("https://localhost:{listen_port}"))
            .unwrap();
        let read =
            |name: &str| std::fs::read_to_string(examples.join(flag(&step.command, name))).unwrap();
        let client = support::https::ClientCert {
            chain_pem: read("--cert"),
            key_pem: read("--key"),
        };
        let reply = support::https::tls_pinned(
            ingress,
            &read("--cacert"),
            Some(&client),
            &support::https::Call::get(path),
        );
        let rule = between(&step.comment, "(rule ", ')');
        let expected: u16 = between(&step.comment, "), ", ' ').parse().unwrap();
        assert_eq!(reply.status, expected, "{}: {reply:?}", step.command);
        if step.comment.contains("allowed") {
            // The upstream's answer: the file the README wrote.
            let body = between(&step.comment, "and \"", '"');
            assert_eq!(reply.body.trim(), body, "{reply:?}");
        } else {
            assert!(step.comment.contains("denied"), "{}", step.comment);
            let reason = between(&step.comment, "x-celador-reason: ", '.');
            assert_eq!(reply.header("x-celador-reason"), Some(reason), "{reply:?}");
        }
        let audited = support::wait_for(std::time::Duration::from_secs(5), || {
            celador
                .audit_records()
                .into_iter()
                .find(|r| r["path"] == path)
        })
        .unwrap_or_else(|| panic!("no audit record of {path}"));
        assert_eq!(audited["rule"], rule, "{audited}");
    }
}

/// The shipped `examples/envoy.yaml` (copied into `examples`), run with
/// its fixed ports moved: celador's 9191 to `authz_port`, the app's
/// (`app.0`, as the README starts it) to `app.1`, and its listener's 10000
/// to one the system picks.
fn example_envoy(
    examples: &Path,
    dir: &Path,
    authz_port: u16,
    app: (&str, &str),
) -> support::envoy::Envoy {
    let envoy_yaml = std::fs::read_to_string(examples.join("envoy.yaml")).unwrap();
    for port in ["9191", app.0, "10000"] {
        assert!(
            envoy_yaml.contains(&format!("port_value: {port} ")),
            "{port}"
        );
    }
    let envoy_yaml = format!(
        // An admin interface, for the test support to see Envoy ready.
        "admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }} }}\n{}",
        envoy_yaml
            .replace("port_value: 9191 ", &format!("port_value: {authz_port} "))
            .replace(
                &format!("port_value: {} ", app.0),
                &format!("port_value: {} ", app.1)
            )
            .replace("port_value: 10000 ", "port_value: 0 ")
            // Envoy runs elsewhere than `examples/`.
            .replace(
                "{ filename: ",
                &format!("{{ filename: {}/", examples.display())
            )
    );
    support::envoy::Envoy::start(&envoy_yaml, dir)
}

/// `celador capture --listen 127.0.0.1:0` with `args`, and the address it
/// listens on (its first line on standard error).
fn start_capture(args: &[&str]) -> (KillOnDrop, std::net::SocketAddr) {
    let (child, addr, _) = start_capture_logged(args);
    (child, addr)
}

/// [`start_capture`], and what it writes to standard error after its first
/// line, as it comes.
fn start_capture_logged(
    args: &[&str],
) -> (
    KillOnDrop,
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<String>>,
) {
    let mut child = std::process::Command::new(support::celador::binary())
        .args(["capture", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
    // Drained as it comes, so that it never blocks.
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let lines = std::sync::Arc::clone(&log);
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(stderr) {
            let Ok(line) = line else { break };
            let mut log = lines.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let addr = between(&line, "listening on ", ';').parse().unwrap();
    (KillOnDrop(child), addr, log)
}

/// Sends `requests` to the capture at `addr` one after another, and the
/// longest time one took to be answered (each answer a `capture_only`
/// denial).
fn check_capture(
    addr: std::net::SocketAddr,
    requests: Vec<envoy_types::pb::envoy::service::auth::v3::CheckRequest>,
) -> std::time::Duration {
    use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut client = AuthorizationClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let mut longest = std::time::Duration::ZERO;
        for request in requests {
            let start = std::time::Instant::now();
            let response = client.check(request).await.unwrap().into_inner();
            longest = longest.max(start.elapsed());
            assert_eq!(
                support::check::denial(&response),
                Some((403, "capture_only".to_owned()))
            );
        }
        longest
    })
}

/// A directory already holding many captures costs a scan at start-up,
/// never a check's answer: the next index is kept, not searched for.
#[test]
fn capture_answers_as_quickly_beside_twenty_thousand_earlier_files() {
    let dir = tempfile::tempdir().unwrap();
    for n in 1..=20_000 {
        std::fs::File::create(dir.path().join(format!("check-{n:04}.json"))).unwrap();
    }
    let out = dir.path().to_str().unwrap().to_owned();
    let (mut capture, addr) = start_capture(&["--out", &out, "--count", "5"]);
    let requests = (0..5)
        .map(|_| support::check::request("", "GET", "/a", &[]))
        .collect();
    let longest = check_capture(addr, requests);
    // Searching from check-0001 took over a second a check here.
    assert!(
        longest < std::time::Duration::from_millis(250),
        "{longest:?}"
    );
    assert_eq!(exit_code(&mut capture), Some(0));
    for n in 20_001..=20_005 {
        let file = dir.path().join(format!("check-{n:04}.json"));
        assert!(std::fs::read_to_string(&file).unwrap().contains("\"/a\""));
    }
    assert!(!dir.path().join("check-20006.json").exists());
    assert_eq!(
        std::fs::metadata(dir.path().join("check-0001.json"))
            .unwrap()
            .len(),
        0
    );
}

/// The directory a capture makes and its files are the user's alone, and
/// its log shows a check's path redacted even when the files hold
/// credentials.
#[test]
fn capture_files_are_private_and_its_log_never_shows_a_query_value() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("new").join("captured");
    let (mut capture, addr, log) = start_capture_logged(&[
        "--out",
        out.to_str().unwrap(),
        "--count",
        "1",
        "--include-credentials",
    ]);
    let secret = "s3cr3t-sig-value";
    let path = format!("/a?sig={secret}&page=2");
    check_capture(addr, vec![support::check::request("", "GET", &path, &[])]);
    assert_eq!(exit_code(&mut capture), Some(0));
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&out), 0o700);
    assert_eq!(mode(&out.join("check-0001.json")), 0o600);
    // Asked for: the file holds it.
    let text = std::fs::read_to_string(out.join("check-0001.json")).unwrap();
    assert!(text.contains(secret), "{text}");
    let logged = support::wait_for(std::time::Duration::from_secs(5), || {
        let log = log.lock().unwrap();
        log.contains("wrote ").then(|| log.clone())
    })
    .unwrap();
    assert!(
        logged.contains("(GET /a?sig=%3Credacted%3E&page=%3Credacted%3E)"),
        "{logged}"
    );
    assert!(!logged.contains(secret), "{logged}");
}

/// Waits (at most 10 s) for `child` to exit, and its exit code.
fn exit_code(child: &mut KillOnDrop) -> Option<i32> {
    support::wait_for(std::time::Duration::from_secs(10), || {
        child.0.try_wait().unwrap().map(|s| s.code())
    })
    .flatten()
}

/// `celador capture` behind the shipped Envoy: the README's allowed
/// request is denied ("capture only", it never allows), saved with its
/// credentials redacted, and `celador eval --input` decides the saved file
/// as `serve` would have (allowed by the example's rules).
#[test]
fn capture_saves_what_envoy_sends_redacted_and_eval_decides_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let examples = dir.path().join("examples");
    copy_examples(&root.join("examples"), &examples);
    let out = dir.path().join("captured");
    let (mut capture, addr) = start_capture(&["--out", out.to_str().unwrap(), "--count", "1"]);
    let upstream = support::upstream::Upstream::start();
    let envoy = example_envoy(
        &examples,
        dir.path(),
        addr.port(),
        ("8080", &upstream.addr.port().to_string()),
    );
    let read = |name: &str| std::fs::read_to_string(examples.join("pki").join(name)).unwrap();
    let client = support::https::ClientCert {
        chain_pem: read("batch-exporter.pem"),
        key_pem: read("batch-exporter.key"),
    };
    // A credential Envoy forwards (the example lets `x-celador-*` through)
    // and a query value.
    let secret = "s3cr3t-session-value-0123456789";
    let path = format!("/export/daily.csv?sig={secret}");
    let reply = support::https::tls_pinned(
        envoy.listener("ingress"),
        &read("envoy-localhost.pem"),
        Some(&client),
        &support::https::Call {
            method: "GET",
            path: &path,
            headers: &[("x-celador-session-token", secret)],
        },
    );
    assert_eq!(reply.status, 403, "{reply:?}");
    assert_eq!(
        reply.header("x-celador-reason"),
        Some("capture_only"),
        "{reply:?}"
    );
    assert_eq!(
        exit_code(&mut capture),
        Some(0),
        "capture stops after --count 1"
    );

    let saved = out.join("check-0001.json");
    let text = std::fs::read_to_string(&saved).unwrap();
    assert!(!text.contains(secret), "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let http = &json["attributes"]["request"]["http"];
    assert_eq!(
        http["headers"]["x-celador-session-token"], "<redacted>",
        "{text}"
    );
    assert_eq!(
        http["path"], "/export/daily.csv?sig=%3Credacted%3E",
        "{text}"
    );
    assert!(
        json["attributes"]["source"]["certificate"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN%20CERTIFICATE-----"),
        "Envoy's peer certificate, as eval reads it: {text}"
    );
    let (code, decided, err) = support::celador::run(&[
        "eval",
        "--rules",
        examples.join("policy.yaml").to_str().unwrap(),
        "--input",
        saved.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{decided}{err}");
    assert!(
        decided.contains("source: spiffe://example.org/ns/batch/sa/exporter"),
        "{decided}"
    );
    assert!(
        decided.contains("decision: allow by rule 'exporter-read-only' (allowed)"),
        "{decided}"
    );
}

/// `celador capture` behind an Envoy that sends every header (no
/// `allowed_headers`, as many do): Envoy's `:path` and a `referer` carry
/// the request's query and the page's; neither secret reaches the file,
/// each URL's query redacted as the path's is.
#[test]
fn capture_redacts_the_query_of_every_url_valued_header_envoy_sends() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let examples = dir.path().join("examples");
    copy_examples(&root.join("examples"), &examples);
    let envoy_yaml = std::fs::read_to_string(examples.join("envoy.yaml")).unwrap();
    let start = envoy_yaml.find("              allowed_headers:\n").unwrap();
    let end = envoy_yaml.find("- prefix: x-celador-\n").unwrap() + "- prefix: x-celador-\n".len();
    let every_header = format!(
        "{}{}",
        envoy_yaml.get(..start).unwrap(),
        envoy_yaml.get(end..).unwrap()
    );
    assert!(!every_header.contains("allowed_headers"), "{every_header}");
    std::fs::write(examples.join("envoy.yaml"), every_header).unwrap();

    let out = dir.path().join("captured");
    let (mut capture, addr) = start_capture(&["--out", out.to_str().unwrap(), "--count", "1"]);
    let upstream = support::upstream::Upstream::start();
    let envoy = example_envoy(
        &examples,
        dir.path(),
        addr.port(),
        ("8080", &upstream.addr.port().to_string()),
    );
    let read = |name: &str| std::fs::read_to_string(examples.join("pki").join(name)).unwrap();
    let client = support::https::ClientCert {
        chain_pem: read("batch-exporter.pem"),
        key_pem: read("batch-exporter.key"),
    };
    let (token, code) = ("s3cr3t-reset-token", "s3cr3t-oauth-code");
    let path = format!("/export/daily.csv?token={token}");
    let referer = format!("https://app.example/cb?code={code}");
    let reply = support::https::tls_pinned(
        envoy.listener("ingress"),
        &read("envoy-localhost.pem"),
        Some(&client),
        &support::https::Call {
            method: "GET",
            path: &path,
            headers: &[("referer", &referer)],
        },
    );
    assert_eq!(reply.status, 403, "{reply:?}");
    assert_eq!(exit_code(&mut capture), Some(0));
    let text = std::fs::read_to_string(out.join("check-0001.json")).unwrap();
    assert!(!text.contains(token) && !text.contains(code), "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let http = &json["attributes"]["request"]["http"];
    // Envoy sent them: they are there, redacted.
    assert_eq!(
        http["headers"][":path"], "/export/daily.csv?token=%3Credacted%3E",
        "{text}"
    );
    assert_eq!(
        http["headers"]["referer"], "https://app.example/cb?code=%3Credacted%3E",
        "{text}"
    );
    assert_eq!(http["path"], "/export/daily.csv?token=%3Credacted%3E");
}

/// `--include-credentials` writes them as received; a second capture into
/// the same directory never overwrites the first's files.
#[test]
fn capture_writes_credentials_only_when_asked_and_never_overwrites() {
    use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap().to_owned();
    std::fs::write(dir.path().join("check-0001.json"), "earlier").unwrap();
    let (mut capture, addr) =
        start_capture(&["--out", &out, "--count", "1", "--include-credentials"]);
    let token = "Bearer s3cr3t-token-value";
    let request = support::check::request("", "GET", "/a?sig=v", &[("authorization", token)]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let response = runtime.block_on(async {
        let mut client = AuthorizationClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        client.check(request).await.unwrap().into_inner()
    });
    assert_eq!(
        support::check::denial(&response),
        Some((403, "capture_only".to_owned()))
    );
    assert_eq!(exit_code(&mut capture), Some(0));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("check-0001.json")).unwrap(),
        "earlier"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("check-0002.json")).unwrap())
            .unwrap();
    let http = &json["attributes"]["request"]["http"];
    assert_eq!(http["headers"]["authorization"], token);
    assert_eq!(http["path"], "/a?sig=v");
}

/// A child process killed when the test ends, passing or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
