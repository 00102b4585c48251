//! `wallet-ledger bench --quick` end to end: the command runs on its own throwaway server,
//! exits successfully, and writes a report other tools can read (report.json with a `runs`
//! array carrying the documented keys; every library run, hold+capture and expiry included,
//! deadlock-free with a clean audit; the expiry section drains every hold).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::Value;

const REQUIRED: [&str; 8] = ["workload", "mode", "threads", "tps", "p50_ms", "p99_ms", "deadlocks", "retries"];

/// Keys every expiry run fills.
const EXPIRY: [&str; 7] = [
    "holds_expired",
    "expiry_batch",
    "lock_samples",
    "lock_wait_samples",
    "hold_lock_wait_samples",
    "account_lock_wait_samples",
    "busy_share",
];

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
    check_hold_capture(&report)?;
    check_expiry(&report)?;
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
        ensure!(["uniform", "hot", "pair", "expiry"].contains(&workload), "unknown workload {workload}");
        ensure!(run["threads"].as_u64().is_some_and(|t| t > 0), "threads: {run}");
        ensure!(run["tps"].as_f64().is_some_and(|t| t > 0.0), "no throughput: {run}");
        ensure!(run["deadlocks"].is_i64(), "deadlocks is not an integer: {run}");
    }
    let modes: Vec<&str> = runs.iter().filter_map(|r| r["mode"].as_str()).collect();
    for mode in ["library", "hold-capture", "naive", "request-order", "multi-statement", "expire"] {
        ensure!(modes.contains(&mode), "no {mode} run in the quick report");
    }
    for run in runs.iter().filter(|r| ["library", "hold-capture", "expire"].iter().any(|m| r["mode"] == *m)) {
        ensure!(run["deadlocks"] == 0, "library run with deadlocks: {run}");
        ensure!(run["audit_clean"] == true, "library run with an unclean audit: {run}");
        ensure!(run["errors"] == 0, "library run with errors: {run}");
    }
    // Plain calls and the default at one point are measured together, interleaved, each with
    // its own calls counted.
    let defaults: Vec<&Value> = runs.iter().filter(|r| r["mode"] == "default").collect();
    ensure!(!defaults.is_empty(), "no default run in the quick report");
    for d in defaults {
        let plain = runs
            .iter()
            .find(|r| r["mode"] == "library" && r["workload"] == d["workload"] && r["threads"] == d["threads"])
            .with_context(|| format!("no library run beside {d}"))?;
        ensure!(d["interleaved"] == true && plain["interleaved"] == true, "not interleaved: {d} {plain}");
        ensure!(d["transfers"].as_u64() > Some(0) && plain["transfers"].as_u64() > Some(0), "no calls: {d} {plain}");
    }
    for run in runs.iter().filter(|r| r["mode"] == "naive") {
        ensure!(run["money_created"].is_string(), "naive run without money_created: {run}");
    }
    Ok(())
}

/// hold-capture runs on `uniform` and `hot`, each with its ratio to `library` at the same point.
fn check_hold_capture(report: &Value) -> Result<()> {
    let runs = report["runs"].as_array().context("no runs")?;
    let of: Vec<&Value> = runs.iter().filter(|r| r["mode"] == "hold-capture").collect();
    for workload in ["uniform", "hot"] {
        ensure!(of.iter().any(|r| r["workload"] == workload), "no hold-capture run on {workload}");
    }
    for run in of {
        ensure!(run["ratio_library"].as_f64().is_some_and(|x| x > 0.0), "hold-capture without ratio_library: {run}");
    }
    Ok(())
}

/// The expiry section: a library run per worker count (1, 2, 4) that expired every hold, with
/// the lock sampler's figures, and the no-skip-locked control at 4 workers.
fn check_expiry(report: &Value) -> Result<()> {
    let runs = report["runs"].as_array().context("no runs")?;
    let holds = report["config"]["expiry_holds"].as_u64().context("config.expiry_holds")?;
    let expiry: Vec<&Value> = runs.iter().filter(|r| r["workload"] == "expiry").collect();
    for workers in [1, 2, 4] {
        ensure!(
            expiry.iter().any(|r| r["mode"] == "expire" && r["threads"] == workers),
            "no expire run with {workers} workers"
        );
    }
    ensure!(
        expiry.iter().any(|r| r["mode"] == "expire-no-skip-locked" && r["threads"] == 4),
        "no expire-no-skip-locked run with 4 workers"
    );
    for run in expiry {
        for key in EXPIRY.iter().chain(&["lock_wait_share", "max_lock_waiters"]) {
            ensure!(run.get(key).is_some(), "expiry run without {key}: {run}");
        }
        for key in EXPIRY {
            ensure!(!run[key].is_null(), "expiry run with a null {key}: {run}");
        }
        ensure!(run["holds_expired"] == holds, "expiry run did not expire all {holds} holds: {run}");
        ensure!(run["audit_clean"] == true, "expiry run with an unclean audit: {run}");
        ensure!(run["deadlocks"] == 0, "expiry run with deadlocks: {run}");
    }
    Ok(())
}
