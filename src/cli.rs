//! The command line: `celador serve`.
//!
//! Data flow: arguments are parsed here and each command runs to an exit
//! code; `main.rs` only calls [`main`]. Exit codes: 0 success, 64 a config,
//! rules file or bundle that cannot be used, 69 the listen address cannot be
//! bound, 1 any other failure.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app;
use crate::config::Config;
use crate::server::ServeError;

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
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
    },
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(&config),
    }
}

fn serve(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("celador: the config cannot be used:\n{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let _telemetry = match crate::telemetry::init(&config.log) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("celador: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let loaded = match app::load(&config, |name| std::env::var(name).ok()) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("celador: cannot start with {}:", path.display());
            for e in &errors {
                eprintln!("{e}");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("celador")
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("celador: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(app::run(&config, loaded, crate::server::shutdown_signal()));
    match result {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e @ ServeError::Bind { .. }) => {
            tracing::error!("{e}");
            eprintln!("celador: {e}");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
