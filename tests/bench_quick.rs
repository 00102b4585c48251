//! `wallet-ledger bench --quick` end to end: the command runs on its own throwaway server,
//! exits successfully, and writes a report other tools can read (report.json with a `runs`
//! array carrying the documented keys; every library run deadlock-free with a clean audit).
#![cfg(feature = "cli")]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::Value;

const REQUIRED: [&str; 8] = ["workload", "mode", "threads", "tps", "p50_ms", "p99_ms", "deadlocks", "retries"];

fn out_dir() -> PathBuf {
    std::env::temp_dir().join(format!("wallet-ledger-bench-quick-{}", std::process::id()))
}

#[test]
fn quick_bench_writes_a_valid_report() -> Result<()> {
    let out = out_dir();
    let _ = std::fs::remove_dir_all(&out);
    let start = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_wallet-ledger"))
        .args(["bench", "--quick", "--out"])
        .arg(&out)
        .output()
        .context("run wallet-ledger bench --quick")?;
    let elapsed = start.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(output.status.success(), "bench --quick failed ({}):\n{stdout}\n{stderr}", output.status);
    // A generous bound: the issue asks for under 30 s; a loaded CI machine gets some slack.
    ensure!(elapsed < Duration::from_secs(120), "bench --quick took {elapsed:?}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json"))?)?;
    check_runs(&report)?;
    for file in ["report.md", "throughput.svg"] {
        let len = std::fs::metadata(out.join(file)).with_context(|| format!("{file} missing"))?.len();
        ensure!(len > 0, "{file} is empty");
    }
    ensure!(stdout.contains("| workload"), "no table on stdout:\n{stdout}");
    std::fs::remove_dir_all(&out)?;
    Ok(())
}

/// Every run has the required keys with the right types; library runs are clean.
fn check_runs(report: &Value) -> Result<()> {
    let runs = report["runs"].as_array().context("report.json has no top-level runs array")?;
    ensure!(!runs.is_empty(), "no runs");
    for run in runs {
        for key in REQUIRED.iter().chain(&["audit_clean"]) {
            ensure!(run.get(key).is_some(), "run without {key}: {run}");
        }
        let workload = run["workload"].as_str().context("workload is not a string")?;
        ensure!(["uniform", "hot", "pair"].contains(&workload), "unknown workload {workload}");
        ensure!(run["threads"].as_u64().is_some_and(|t| t > 0), "threads: {run}");
        ensure!(run["tps"].as_f64().is_some_and(|t| t > 0.0), "no throughput: {run}");
        ensure!(run["deadlocks"].is_i64(), "deadlocks is not an integer: {run}");
    }
    let modes: Vec<&str> = runs.iter().filter_map(|r| r["mode"].as_str()).collect();
    for mode in ["library", "naive", "request-order", "multi-statement"] {
        ensure!(modes.contains(&mode), "no {mode} run in the quick report");
    }
    for run in runs.iter().filter(|r| r["mode"] == "library") {
        ensure!(run["deadlocks"] == 0, "library run with deadlocks: {run}");
        ensure!(run["audit_clean"] == true, "library run with an unclean audit: {run}");
        ensure!(run["errors"] == 0, "library run with errors: {run}");
    }
    for run in runs.iter().filter(|r| r["mode"] == "naive") {
        ensure!(run["money_created"].is_string(), "naive run without money_created: {run}");
    }
    Ok(())
}
