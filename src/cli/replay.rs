//! `celador replay`: its arguments, the records read from a file or
//! standard input, the report printed, and the exit code CI reads.
//!
//! Data flow: reads the candidate rules and the governance files, hands
//! the records to [`crate::authoring::replay`], prints its report.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use super::offline::GovernanceArgs;
use crate::authoring::replay;
use crate::engine::redaction::Redaction;

/// Re-decide recorded traffic (audit records, one JSON line each, as
/// `celador serve` writes them) with candidate rules, and report every
/// decision that would change.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The candidate rules file.
    #[arg(long, value_name = "FILE")]
    rules: PathBuf,
    /// The audit records (`-` or nothing: standard input, e.g. from
    /// `kubectl logs`).
    #[arg(value_name = "AUDIT.jsonl")]
    records: Option<PathBuf>,
    /// `text` or `json`.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
    /// Exit 0 even when decisions would change (or could not be told).
    #[arg(long)]
    allow_changes: bool,
    #[command(flatten)]
    governance: GovernanceArgs,
}

/// Runs `celador replay`.
pub fn run(args: &ReplayArgs) -> ExitCode {
    match report(args) {
        Ok((text, differs)) => {
            crate::cli::say(&text);
            if differs && !args.allow_changes {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            complain!("celador: {e}");
            ExitCode::from(2)
        }
    }
}

fn report(args: &ReplayArgs) -> Result<(String, bool), String> {
    let policy = crate::authoring::read_policy(&args.rules).map_err(|e| e.to_string())?;
    let governance = args.governance.read()?;
    let redaction = Redaction::default();
    let input: Box<dyn BufRead> = match &args.records {
        Some(path) if path.as_os_str() != "-" => Box::new(std::io::BufReader::new(
            std::fs::File::open(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        )),
        _ => Box::new(std::io::stdin().lock()),
    };
    let report = replay::replay(&policy, &governance, input, &redaction)?;
    let text = if args.format == "json" {
        format!("{}\n", replay::render_json(&report))
    } else {
        replay::render_text(&report, &args.rules.display().to_string())
    };
    Ok((text, report.differs()))
}
