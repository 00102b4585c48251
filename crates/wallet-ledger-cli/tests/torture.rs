//! `wallet-ledger torture`, the binary: a short run of each fault kind (seconds each), with every
//! check of the checker asserted from its JSON report, the fault asserted to have happened, and
//! two planted violations the checker must catch.

use std::process::Command;

use serde_json::Value;

/// Runs `wallet-ledger torture ARGS` on its own embedded server(s); the exit code and the report.
fn torture(name: &str, args: &[&str]) -> (Option<i32>, Value) {
    let json = std::env::temp_dir().join(format!("wl-torture-{name}-{}.json", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_wallet-ledger"))
        .arg("torture")
        .args(args)
        .arg("--json")
        .arg(&json)
        .env_remove("DATABASE_URL")
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("no report ({e}):\n{stdout}\n{stderr}"));
    let _ = std::fs::remove_file(&json);
    let report: Value = serde_json::from_str(&text).expect("the report is JSON");
    eprintln!("{name}:\n{stdout}");
    (output.status.code(), report)
}

/// Every check passed, the verdict says so, the exit code is 0, and transfers were acknowledged.
fn assert_clean(code: Option<i32>, report: &Value) {
    let checks = report["checks"].as_array().expect("checks");
    assert!(checks.len() >= 13, "{report:#}");
    for check in checks {
        assert_eq!(check["passed"], true, "check failed: {check}\n{report:#}");
    }
    assert_eq!(report["verdict"], "PASS", "{report:#}");
    assert_eq!(code, Some(0), "{report:#}");
    assert!(report["operations"]["acknowledged"].as_u64().unwrap_or(0) > 100, "{report:#}");
    assert!(report["snapshots"]["good"].as_u64().unwrap_or(0) > 10, "{report:#}");
}

fn fault(report: &Value, name: &str) -> u64 {
    report["faults"][name].as_u64().unwrap_or_else(|| panic!("no fault count {name}: {report:#}"))
}

#[test]
fn terminated_backends_lose_nothing() {
    let (code, report) = torture("terminate", &["--duration", "4", "--clients", "6", "--terminate-every-ms", "40"]);
    assert_clean(code, &report);
    assert!(fault(&report, "terminated_active") > 10, "{report:#}");
}

/// The library's default path: combined transfers (batches of whoever queued), with backends
/// terminated under them; a batch's unanswered commit is settled by each caller's own key.
#[test]
fn combined_transfers_under_terminated_backends_lose_nothing() {
    let (code, report) = torture(
        "terminate_combined",
        &["--duration", "4", "--clients", "8", "--accounts", "4", "--terminate-every-ms", "40", "--combining"],
    );
    assert_clean(code, &report);
    assert_eq!(report["config"]["combining"], true, "{report:#}");
    assert!(fault(&report, "terminated_active") > 10, "{report:#}");
}

#[test]
fn crashes_and_restarts_lose_nothing_and_clients_resume() {
    let (code, report) = torture("crash", &["--duration", "8", "--clients", "6", "--crash-every-s", "2.5"]);
    assert_clean(code, &report);
    assert_eq!(fault(&report, "crashes"), 2, "{report:#}");
    for r in report["recovery"].as_array().expect("recovery") {
        let after = r["first_ack_after_s"].as_f64().unwrap_or_else(|| panic!("no ack after {r}"));
        assert!(after < 5.0, "{r}");
    }
}

#[test]
fn low_lock_and_statement_timeouts_fire_and_lose_nothing() {
    let args = ["--duration", "3", "--clients", "8", "--accounts", "4", "--low-timeouts"];
    let (code, report) = torture("timeouts", &args);
    assert_clean(code, &report);
    assert!(fault(&report, "lock_timeouts") > 0, "{report:#}");
}

#[test]
fn an_exhausted_pool_loses_nothing() {
    let (code, report) = torture("pool", &["--duration", "3", "--clients", "12", "--pool-exhaustion"]);
    assert_clean(code, &report);
    assert!(fault(&report, "pool_timeouts") > 0, "{report:#}");
}

#[test]
fn a_paused_backend_holding_row_locks_loses_nothing() {
    let args = ["--duration", "4", "--clients", "8", "--accounts", "4", "--pause-every-ms", "400", "--pause-ms", "200"];
    let (code, report) = torture("pause", &args);
    assert_clean(code, &report);
    assert!(fault(&report, "pauses_holding_locks") > 0, "{report:#}");
}

#[test]
fn failover_to_the_synchronous_standby_loses_no_acknowledged_transfer() {
    let args = ["--duration", "7", "--clients", "6", "--failover", "--terminate-every-ms", "60"];
    let (code, report) = torture("failover", &args);
    assert_clean(code, &report);
    assert_eq!(fault(&report, "failovers"), 1, "{report:#}");
    let recovery = &report["recovery"][0];
    assert_eq!(recovery["kind"], "failover");
    assert!(recovery["first_ack_after_s"].as_f64().is_some_and(|s| s < 5.0), "{report:#}");
}

/// The checker is not a rubber stamp: violations planted behind the tool's back fail the run
/// with exit code 3 (an invariant violation).
#[test]
fn the_checker_catches_planted_violations() {
    let check = |report: &Value, name: &str| -> bool {
        let checks = report["checks"].as_array().expect("checks");
        checks.iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no check {name}"))["passed"] == true
    };
    let acked = "every acknowledged transfer exists once, as its receipt says";

    let base = ["--duration", "1.5", "--clients", "3"];
    let (code, report) = torture("plant-delete", &[&base[..], &["--plant", "delete-acknowledged"]].concat());
    assert_eq!(code, Some(3), "{report:#}");
    assert_eq!(report["verdict"], "FAIL");
    assert!(!check(&report, acked), "{report:#}");
    // The balances still include it: the audit finds balances that no longer match the entries.
    assert!(!check(&report, "audit clean"), "{report:#}");

    let (code, report) = torture("plant-fake", &[&base[..], &["--plant", "fake-acknowledged"]].concat());
    assert_eq!(code, Some(3), "{report:#}");
    assert!(!check(&report, acked), "{report:#}");
    // Only the log was forged: the database itself is sound.
    assert!(check(&report, "audit clean") && check(&report, "no cent created or lost"), "{report:#}");
}
