//! The command line: `celador serve`, `celador inject`, `celador signals`,
//! `celador envoy-config`, and the rule
//! author's tools `check`, `test`, `eval`, `replay` and `capture`.
//!
//! Data flow: arguments are parsed here and each command runs to an exit
//! code; `main.rs` only calls [`main`]. `serve` exits with 0 after a clean
//! shutdown, 64 for a config, rules file or bundle that cannot be used, 69
//! when an address cannot be bound, 1 on any other failure. The tools exit
//! with 0 when all is well and 1 when they found a problem (2 for bad
//! arguments, as usual).

/// `eprintln!` that ignores a standard error nobody reads any more (a pipe
/// whose reader left) instead of panicking, as [`say`] does for output.
macro_rules! complain {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

mod capture;
mod governance;
mod offline;
mod replay;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app;
use crate::app::config::Config;
use crate::authoring::{evaluation, suite};
use crate::edge::server::ServeError;
use crate::engine::policy::Severity;
use crate::engine::redaction::Redaction;
use crate::inject::serve::WebhookArgs;

/// Exit code for unusable configuration (sysexits EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;
/// Exit code when the listen address cannot be bound (EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: u8 = 69;

/// celador: an Envoy ext_authz sidecar that verifies SPIFFE identities and
/// enforces CEL rules.
#[derive(Debug, Parser)]
#[command(name = "celador", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve Envoy's ext_authz gRPC API.
    Serve {
        /// The config file.
        #[arg(
            long,
            short = 'c',
            value_name = "FILE",
            required_unless_present = "config_env"
        )]
        config: Option<PathBuf>,
        /// Read the config from this environment variable instead (how the
        /// injected sidecar gets it); relative paths resolve against the
        /// working directory.
        #[arg(long, value_name = "NAME", conflicts_with = "config")]
        config_env: Option<String>,
    },
    /// Serve the mutating admission webhook that adds celador to pods as a
    /// native sidecar; or, with --pod, print what it makes of one pod.
    // A flag given again overrides the first, so the chart's extraArgs can
    // change a flag the chart sets.
    #[command(args_override_self = true)]
    Inject {
        /// The injector's settings file.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
        /// The HTTPS address the API server calls.
        #[arg(long, default_value = "0.0.0.0:8443")]
        listen: String,
        /// The serving certificate (PEM), reloaded when it changes.
        #[arg(long, value_name = "FILE", required_unless_present = "pod")]
        tls_cert: Option<PathBuf>,
        /// The serving certificate's key (PEM).
        #[arg(long, value_name = "FILE", required_unless_present = "pod")]
        tls_key: Option<PathBuf>,
        /// How often the certificate files are read again.
        #[arg(long, default_value = "10s")]
        tls_reload_interval: String,
        /// Print what this Pod, or the pod template of this Deployment,
        /// StatefulSet, DaemonSet, ReplicaSet, Job or CronJob (JSON or YAML),
        /// becomes, then exit.
        #[arg(long, value_name = "FILE")]
        pod: Option<PathBuf>,
    },
    /// Receive risk signals (OpenID Shared Signals: CAEP and RISC events)
    /// from security tools and turn them into revocations.
    Signals {
        #[command(subcommand)]
        command: SignalsCommand,
    },
    /// Print the Envoy ext_authz filter block that suits the config's rules:
    /// `allowed_headers` limited to the headers celador reads.
    EnvoyConfig {
        /// The config file.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
        /// The Envoy cluster that is celador.
        #[arg(long, default_value = "celador")]
        cluster: String,
        /// The ext_authz gRPC timeout, as Envoy writes durations.
        #[arg(long, default_value = "0.5s")]
        timeout: String,
    },
    /// Check rules, grants and revocations files: every error and warning,
    /// with its position.
    Check {
        /// Rules files, or directories searched for `*.yaml` files that are
        /// not test suites.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Fail on warnings too.
        #[arg(long)]
        deny_warnings: bool,
        /// `text` or `json`.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
    },
    /// Run policy test suites (`*_test.yaml` files, or the files given).
    Test {
        /// Suite files, or directories to search for `*_test.yaml`.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Also write the results as JUnit XML to this file.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Run only the cases whose names contain PATTERN.
        #[arg(long = "run", value_name = "PATTERN")]
        pattern: Option<String>,
        /// Also list, for each rule and grant, the cases that matched it,
        /// and the rules no case exercised.
        #[arg(long)]
        coverage: bool,
        /// Fail unless at least PERCENT of the rules and grants are
        /// covered (implies --coverage).
        #[arg(long, value_name = "PERCENT")]
        min_coverage: Option<f64>,
        /// Fail unless at least PERCENT of the rules' clauses were seen
        /// both true and false (implies --coverage).
        #[arg(long, value_name = "PERCENT")]
        min_clause_coverage: Option<f64>,
        /// Another header whose value is shown as `<redacted>` in
        /// explanations (besides the credentials, which always are);
        /// repeatable.
        #[arg(long = "redact-header", value_name = "NAME")]
        redact: Vec<String>,
        /// A query parameter whose value explanations may show (every
        /// other is `<redacted>`, as in audit records); repeatable.
        #[arg(long = "show-query-param", value_name = "NAME")]
        show_query: Vec<String>,
    },
    /// Explain the decision of rules on one input: a test case, or an Envoy
    /// CheckRequest in JSON.
    Eval {
        /// The rules file.
        #[arg(long, value_name = "FILE")]
        rules: PathBuf,
        /// The input.
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        /// `text` or `json`.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
        /// Another header whose value is shown as `<redacted>` (besides
        /// the credentials, which always are); repeatable.
        #[arg(long = "redact-header", value_name = "NAME")]
        redact: Vec<String>,
        /// A query parameter whose value may be shown (every other is
        /// `<redacted>`, as in audit records); repeatable.
        #[arg(long = "show-query-param", value_name = "NAME")]
        show_query: Vec<String>,
        #[command(flatten)]
        governance: offline::GovernanceArgs,
    },
    /// Re-decide recorded audit records with candidate rules and report
    /// the decisions that would change.
    Replay(replay::ReplayArgs),
    /// Save each CheckRequest Envoy sends as JSON for `eval --input`, and
    /// deny every check.
    Capture(capture::CaptureArgs),
    /// The fleet's governance store: revoke, unrevoke, grant, ungrant,
    /// governance.
    #[command(flatten)]
    Store(governance::StoreCommand),
}

#[derive(Debug, Subcommand)]
enum SignalsCommand {
    /// Serve the push endpoint (RFC 8935) that transmitters send SETs to.
    Serve {
        /// The receiver's config file.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
    },
    /// Check the receiver's config file (its transmitters' keys, subjects
    /// and event handling), then exit.
    Check {
        /// The receiver's config file.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
    },
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve { config, config_env } => serve(config.as_deref(), config_env.as_deref()),
        Command::Inject {
            config,
            listen,
            tls_cert,
            tls_key,
            tls_reload_interval,
            pod,
        } => {
            let args = WebhookArgs {
                listen: &listen,
                cert: tls_cert,
                key: tls_key,
                reload: &tls_reload_interval,
            };
            inject(&config, pod.as_deref(), args)
        }
        Command::Signals { command } => signals(command),
        Command::EnvoyConfig {
            config,
            cluster,
            timeout,
        } => envoy_config(&config, cluster, timeout),
        Command::Check {
            files,
            deny_warnings,
            format,
        } => check(&files, deny_warnings, &format),
        Command::Test {
            paths,
            junit,
            pattern,
            coverage,
            min_coverage,
            min_clause_coverage,
            redact,
            show_query,
        } => test(
            &paths,
            junit.as_deref(),
            (pattern, redact, show_query),
            (coverage, min_coverage, min_clause_coverage),
        ),
        Command::Eval {
            rules,
            input,
            format,
            redact,
            show_query,
            governance,
        } => eval((&rules, &input), &format, (redact, show_query), &governance),
        Command::Replay(args) => replay::run(&args),
        Command::Capture(args) => capture::run(args),
        Command::Store(command) => governance::run(command),
    }
}

fn check(paths: &[PathBuf], deny_warnings: bool, format: &str) -> ExitCode {
    let is_rules =
        |name: &str| (name.ends_with(".yaml") || name.ends_with(".yml")) && !suite::is_suite(name);
    // Directories are searched; any other path is checked as given, so that
    // a missing file is reported like any other problem with it.
    let mut files = Vec::new();
    for path in paths {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        match suite::discover_where(std::slice::from_ref(path), is_rules) {
            Ok(found) => files.extend(found),
            Err(e) => {
                complain!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let mut diagnostics = Vec::new();
    for file in &files {
        diagnostics.extend(crate::app::check::check_file(file));
    }
    let errors = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = diagnostics.len() - errors;
    if format == "json" {
        let json: Vec<serde_json::Value> = diagnostics
            .iter()
            .map(|d| {
                serde_json::json!({
                    "severity": d.severity,
                    "file": d.file,
                    "line": d.line,
                    "column": d.column,
                    "rule": d.rule,
                    "message": d.message,
                })
            })
            .collect();
        say(&format!("{}\n", serde_json::Value::Array(json)));
    } else {
        for d in &diagnostics {
            // A blank line between diagnostics, as rustc does.
            say(&format!("{d}\n\n"));
        }
        say(&format!(
            "{} file(s) checked: {errors} error(s), {warnings} warning(s)\n",
            files.len()
        ));
    }
    if errors > 0 || (deny_warnings && warnings > 0) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn test(
    paths: &[PathBuf],
    junit: Option<&std::path::Path>,
    (pattern, redact, show_query): (Option<String>, Vec<String>, Vec<String>),
    (coverage, min_coverage, min_clause_coverage): (bool, Option<f64>, Option<f64>),
) -> ExitCode {
    let options = &suite::Options {
        pattern,
        redaction: Redaction::new(redact, show_query),
    };
    let coverage = coverage || min_coverage.is_some() || min_clause_coverage.is_some();
    let suites = match suite::discover(paths) {
        Ok(suites) if suites.is_empty() => {
            complain!("celador: no test suites (*_test.yaml) found");
            return ExitCode::FAILURE;
        }
        Ok(suites) => suites,
        Err(e) => {
            complain!("celador: {e}");
            return ExitCode::FAILURE;
        }
    };
    let results: Vec<suite::SuiteResult> =
        suites.iter().map(|p| suite::run_with(p, options)).collect();
    say(&suite::render_text(&results));
    if let Some(path) = junit
        && let Err(e) = std::fs::write(path, suite::render_junit(&results))
    {
        complain!("celador: cannot write {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    let mut ok = results.iter().all(|r| r.failed() == 0);
    if coverage {
        let files = suite::coverage::coverage(&results);
        say(&suite::coverage::render_text(&files));
        let percent = suite::coverage::percent(&files);
        if let Some(min) = min_coverage
            && percent < min
        {
            say(&format!(
                "coverage {percent:.0}% is below --min-coverage {min}%\n"
            ));
            ok = false;
        }
        let clauses = suite::coverage::clause_percent(&files);
        if let Some(min) = min_clause_coverage
            && clauses < min
        {
            say(&format!(
                "clause coverage {clauses:.0}% is below --min-clause-coverage {min}%\n"
            ));
            ok = false;
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn eval(
    (rules, input): (&std::path::Path, &std::path::Path),
    format: &str,
    (redact, show_query): (Vec<String>, Vec<String>),
    governance: &offline::GovernanceArgs,
) -> ExitCode {
    let redaction = &Redaction::new(redact, show_query);
    let governance = match governance.read() {
        Ok(governance) => governance,
        Err(e) => {
            complain!("celador: {e}");
            return ExitCode::FAILURE;
        }
    };
    match evaluation::evaluate_governed(rules, input, redaction, &governance) {
        Ok(explanation) => {
            if format == "json" {
                say(&format!("{}\n", evaluation::render_json(&explanation)));
            } else {
                say(&evaluation::render_text(&explanation));
            }
            // A case whose `expect` the decision does not meet fails.
            match explanation.expectation {
                None | Some(suite::Outcome::Passed) => ExitCode::SUCCESS,
                Some(_) => ExitCode::FAILURE,
            }
        }
        Err(e) => {
            complain!("celador: {e}");
            ExitCode::FAILURE
        }
    }
}

fn envoy_config(path: &std::path::Path, cluster: String, timeout: String) -> ExitCode {
    let valid_timeout = timeout
        .strip_suffix('s')
        .and_then(|n| n.parse::<f64>().ok())
        .is_some_and(|n| n > 0.0 && n.is_finite());
    if !valid_timeout {
        complain!("celador: --timeout {timeout:?} is not a duration like 0.5s");
        return ExitCode::from(2);
    }
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            complain!("celador: the config cannot be used:\n{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let settings = app::envoy_config::FilterSettings { cluster, timeout };
    match app::envoy_filter(&config, &settings) {
        Ok(filter) => {
            say(&filter);
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                complain!("{e}");
            }
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn serve(path: Option<&std::path::Path>, env: Option<&str>) -> ExitCode {
    let (config, shown) = match load_config(path, env) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let _telemetry = match crate::app::telemetry::init(&config.log) {
        Ok(guard) => guard,
        Err(e) => {
            complain!("celador: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for deprecation in config.deprecations() {
        tracing::warn!(
            old = deprecation.old,
            new = deprecation.new,
            "{shown}: {deprecation}"
        );
    }
    let loaded = match app::load(&config, |name| std::env::var(name).ok()) {
        Ok(loaded) => loaded,
        Err(errors) => {
            complain!("celador: cannot start with {shown}:");
            for e in &errors {
                complain!("{e}");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match app::runtime(&config).build() {
        Ok(runtime) => runtime,
        Err(e) => {
            complain!("celador: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(app::run(
        &config,
        loaded,
        crate::edge::server::shutdown_signal(),
    ));
    match result {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e @ ServeError::Bind { .. }) => {
            tracing::error!("{e}");
            complain!("celador: {e}");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The config from `--config FILE` or `--config-env NAME`, and how to name
/// it in messages.
fn load_config(
    path: Option<&std::path::Path>,
    env: Option<&str>,
) -> Result<(Config, String), ExitCode> {
    let (loaded, shown) = match (path, env) {
        (_, Some(name)) => (Config::from_env(name), format!("${name}")),
        (Some(path), None) => (Config::load(path), path.display().to_string()),
        (None, None) => {
            complain!("celador: give --config FILE or --config-env NAME");
            return Err(ExitCode::from(EXIT_CONFIG));
        }
    };
    match loaded {
        Ok(config) => Ok((config, shown)),
        Err(e) => {
            complain!("celador: the config cannot be used:\n{e}");
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

/// `celador inject`: the settings read, then what `pod` becomes, or the
/// webhook served until a shutdown signal; each problem printed, and its
/// exit code.
fn inject(
    config: &std::path::Path,
    pod: Option<&std::path::Path>,
    args: WebhookArgs<'_>,
) -> ExitCode {
    use crate::inject::serve::{self, ServeError};
    let settings = match crate::inject::load(config) {
        Ok(settings) => settings,
        Err(e) => {
            complain!("celador: the injector settings cannot be used:\n{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(pod) = pod {
        return inject_one(&settings, pod);
    }
    match serve::run(settings, args, crate::edge::server::shutdown_signal()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(ServeError::Unusable(problems)) => {
            for problem in &problems {
                complain!("celador: {problem}");
            }
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e @ ServeError::Runtime(_)) => {
            complain!("celador: {e}");
            ExitCode::FAILURE
        }
        Err(e @ ServeError::Bind(_)) => {
            complain!("celador: {e}");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}

/// `celador inject --pod FILE`: what the webhook would make of each pod and
/// workload in FILE, printed as YAML documents.
fn inject_one(settings: &crate::inject::settings::Settings, file: &std::path::Path) -> ExitCode {
    use crate::inject::review;
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            complain!("celador: cannot read {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let mut documents: Vec<serde_json::Value> = match serde_saphyr::from_multiple(&text) {
        Ok(documents) => documents,
        Err(e) => {
            complain!("celador: {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    match review::inject_documents(&mut documents, settings) {
        Ok(notes) => {
            for note in notes {
                complain!("celador: {note}");
            }
        }
        Err(message) => {
            complain!("celador: {}: {message}", file.display());
            return ExitCode::FAILURE;
        }
    }
    // A closed pipe (`| head`) ends the output quietly.
    let mut out = std::io::stdout().lock();
    for document in &documents {
        let Ok(text) = serde_saphyr::to_string(document) else {
            return ExitCode::FAILURE;
        };
        if std::io::Write::write_all(&mut out, format!("---\n{text}").as_bytes()).is_err() {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// The runtime of the webhook and the signals receiver: two workers.
fn two_thread_runtime(name: &str) -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name(name)
        .build()
        .map_err(|e| complain!("celador: cannot start the runtime: {e}"))
        .ok()
}

/// `celador signals serve` and `celador signals check`.
fn signals(command: SignalsCommand) -> ExitCode {
    let (config, serve) = match command {
        SignalsCommand::Serve { config } => (config, true),
        SignalsCommand::Check { config } => (config, false),
    };
    let loaded = match crate::ssf::config::load(&config) {
        Ok(loaded) => loaded,
        Err(e) => {
            complain!("celador: the signals receiver's config cannot be used:\n{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let certificate = match crate::app::tls::ReloadingCert::load(&loaded.cert, &loaded.key) {
        Ok(certificate) => certificate,
        Err(e) => {
            complain!("celador: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if !serve {
        say(&format!("{}: ok\n", config.display()));
        return ExitCode::SUCCESS;
    }
    let _telemetry = match crate::app::telemetry::init(&loaded.log) {
        Ok(guard) => guard,
        Err(e) => {
            complain!("celador: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let Some(runtime) = two_thread_runtime("celador-signals") else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(serve_signals(loaded, certificate))
}

async fn serve_signals(
    loaded: crate::ssf::config::Loaded,
    certificate: crate::app::tls::ReloadingCert,
) -> ExitCode {
    let listener = match crate::app::accept::bind(loaded.listen) {
        Ok(listener) => listener,
        Err(e) => {
            complain!("celador: cannot listen on {}: {e}", loaded.listen);
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    tracing::info!(
        address = %listener.local_addr().unwrap_or(loaded.listen),
        path = crate::ssf::server::PUSH_PATH,
        "signals receiver listening"
    );
    crate::ssf::server::serve(
        listener,
        std::sync::Arc::new(loaded.receiver),
        std::sync::Arc::new(certificate),
        loaded.reload_interval,
        crate::edge::server::shutdown_signal(),
    )
    .await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Writes `text` to standard output. A closed pipe (`celador test ... |
/// head`) ends the output quietly, where `print!` would panic.
pub(crate) fn say(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}
