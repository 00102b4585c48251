//! `wallet-ledger bench`: throughput under contention beside pgbench (to be filled in).

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use crate::Target;

/// Options of `wallet-ledger bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// A smoke run under 30 seconds
    #[arg(long)]
    pub quick: bool,
}

/// Runs the benchmark report.
pub fn run(_args: BenchArgs, _target: &Target) -> Result<ExitCode> {
    anyhow::bail!("bench is not implemented yet")
}
