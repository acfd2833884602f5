//! The command-line options the offline tools (`eval`, `replay`) share:
//! the governance files a decision in `serve` depends on.
//!
//! Data flow: clap fills [`GovernanceArgs`]; [`GovernanceArgs::read`] loads
//! the files into the [`Governance`] the authoring tools decide with.

use std::path::PathBuf;

use crate::authoring::governance::Governance;

/// `--grants`, `--revocations`, `--signals`: what can change a decision in
/// `serve` besides the rules and the request.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GovernanceArgs {
    /// A grants file in force (as `governance.grants` in `serve`).
    #[arg(long, value_name = "FILE")]
    pub grants: Option<PathBuf>,
    /// A revocations file in force: a revoked caller is denied before any
    /// rule.
    #[arg(long, value_name = "FILE")]
    pub revocations: Option<PathBuf>,
    /// The caller's signals (YAML or JSON: `requests_1m: 700`, `risk:`,
    /// ...), instead of the input's.
    #[arg(long, value_name = "FILE")]
    pub signals: Option<PathBuf>,
}

impl GovernanceArgs {
    /// The files read, or why one does not load.
    pub fn read(&self) -> Result<Governance, String> {
        Governance::read(
            self.grants.as_deref(),
            self.revocations.as_deref(),
            self.signals.as_deref(),
        )
    }
}
