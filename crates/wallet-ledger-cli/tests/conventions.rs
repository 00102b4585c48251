//! The command line's conventions: argument errors exit 2 with a message naming the value,
//! `server status` only looks (exit 1 when no server runs, nothing created), `--json` prints
//! one parseable document with stable field names and amounts as strings, and `--help` lists
//! the exit codes.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use rust_decimal_macros::dec;
use serde_json::Value;
use wallet_ledger::{AccountId, Hold};

/// Runs the binary; exit code, stdout, stderr.
fn cli(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wallet-ledger"))
        .args(args)
        .env_remove("DATABASE_URL")
        .output()
        .expect("the binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `--json` output on a ledger, parsed; the command must succeed.
fn json(url: &str, args: &[&str]) -> Value {
    let mut all = vec!["--database-url", url];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = cli(&all);
    assert_eq!(code, Some(0), "{args:?}: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {stdout}"))
}

fn has(value: &Value, fields: &[&str]) {
    for f in fields {
        assert!(value.get(f).is_some(), "no field {f:?} in {value}");
    }
}

#[test]
fn a_bad_amount_is_an_argument_error() {
    // No server is reached: clap refuses the value first.
    let unreachable = "host=/nonexistent-dir-for-wl-test dbname=x";
    for args in [
        ["--database-url", unreachable, "transfer", "1", "2", "12,50"].as_slice(),
        &["--database-url", unreachable, "transfer", "1", "2", "NaN"],
        &["--database-url", unreachable, "hold", "1", "2", "ten"],
        &["--database-url", unreachable, "capture", "7", "1.2.3"],
        &["--database-url", unreachable, "account", "open", "--currency", "USD", "--min-balance", "-x"],
    ] {
        let (code, _, stderr) = cli(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("is not a decimal amount"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_bad_id_is_an_argument_error() {
    let unreachable = "host=/nonexistent-dir-for-wl-test dbname=x";
    for args in [
        ["--database-url", unreachable, "transfer", "alice", "2", "1.00"].as_slice(),
        &["--database-url", unreachable, "account", "show", "1.5"],
        &["--database-url", unreachable, "history", "99999999999999999999"],
        &["--database-url", unreachable, "void", "x"],
    ] {
        let (code, _, stderr) = cli(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("invalid value"), "{args:?}: {stderr}");
    }
}

#[test]
fn help_lists_the_exit_codes() {
    let (code, stdout, _) = cli(&["--help"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("Exit codes:"), "{stdout}");
    for line in ["  0  success", "  1  ", "  2  bad arguments", "  3  an invariant"] {
        assert!(stdout.contains(line), "{line:?} missing: {stdout}");
    }
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

#[test]
fn server_status_only_looks() {
    let parent = std::env::temp_dir().join(format!("wallet-ledger-status-{}", std::process::id()));
    std::fs::create_dir_all(&parent).expect("temp dir");
    let missing = parent.join("no-server-here");
    let (code, stdout, stderr) = cli(&["--data-dir", missing.to_str().expect("UTF-8"), "server", "status"]);
    assert_eq!(code, Some(1), "{stdout} {stderr}");
    assert!(stdout.contains("not running"), "{stdout}");
    assert!(!missing.exists(), "server status created {}", missing.display());

    // An existing empty directory stays empty.
    let empty = parent.join("empty");
    std::fs::create_dir_all(&empty).expect("dir");
    let (code, stdout, _) = cli(&["--data-dir", empty.to_str().expect("UTF-8"), "server", "status"]);
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(entries(&empty), 0, "server status wrote into {}", empty.display());
    std::fs::remove_dir_all(&parent).expect("clean up");
}

#[test]
fn json_output_of_the_data_commands() -> Result<()> {
    let (ledger, url, issuer, wallets) = common::funded("cli_json", 2, dec!(100.00))?;
    let (a, b) = (wallets[0], wallets[1]);
    ledger.hold(&Hold::new(a, b, dec!(7.25)).memo("room").expires_in(Duration::from_secs(3600)))?;

    let account = json(&url, &["account", "show", &a.0.to_string(), "--json"]);
    has(&account, &["id", "name", "currency", "balance", "held", "min_balance", "version", "created_at_unix_ms"]);
    assert_eq!(account["id"], a.0);
    assert_eq!(account["balance"], "100.00");
    assert_eq!(account["held"], "7.25");
    assert_eq!(account["min_balance"], "0");
    let unbounded = json(&url, &["account", "show", &issuer.0.to_string(), "--json"]);
    assert!(unbounded["min_balance"].is_null(), "{unbounded}");

    let receipt = json(&url, &["transfer", &a.0.to_string(), &b.0.to_string(), "12.50", "--key", "k1", "--json"]);
    has(&receipt, &["transfer_id", "from", "to", "amount", "from_balance", "to_balance", "replayed"]);
    assert_eq!((receipt["amount"].as_str(), receipt["from_balance"].as_str()), (Some("12.50"), Some("87.50")));
    assert_eq!(receipt["replayed"], false);
    let replay = json(&url, &["transfer", &a.0.to_string(), &b.0.to_string(), "12.50", "--key", "k1", "--json"]);
    assert_eq!((replay["replayed"].as_bool(), &replay["transfer_id"]), (Some(true), &receipt["transfer_id"]));

    let history = json(&url, &["history", &a.0.to_string(), "--json"]);
    assert_eq!(history["account"], a.0);
    let list = history["entries"].as_array().expect("entries array");
    assert_eq!(list.len(), 2, "{history}");
    has(&list[1], &["id", "transfer_id", "counterparty", "amount", "balance_after", "account_version", "memo"]);
    assert_eq!((list[1]["amount"].as_str(), list[1]["balance_after"].as_str()), (Some("-12.50"), Some("87.50")));

    let holds = json(&url, &["holds", "list", &a.0.to_string(), "--json"]);
    assert_eq!((holds["account"].as_i64(), holds["available"].as_str()), (Some(a.0), Some("80.25")));
    let list = holds["holds"].as_array().expect("holds array");
    assert_eq!(list.len(), 1, "{holds}");
    has(&list[0], &["id", "from", "to", "amount", "expires_at_unix_ms", "memo", "created_at_unix_ms"]);
    assert_eq!((list[0]["amount"].as_str(), list[0]["memo"].as_str()), (Some("7.25"), Some("room")));

    let audit = json(&url, &["verify", "--json"]);
    has(&audit, &["clean", "accounts", "transfers", "entries", "violations", "truncated"]);
    assert_eq!((audit["clean"].as_bool(), audit["accounts"].as_i64()), (Some(true), Some(3)));
    assert_eq!(audit["violations"].as_array().map(Vec::len), Some(0));

    // Broken by a direct write: still one JSON document, exit code 3.
    let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
    client.execute("UPDATE wallet_ledger.accounts SET balance = balance + 1 WHERE id = $1", &[&AccountId(a.0).0])?;
    let (code, stdout, stderr) = cli(&["--database-url", &url, "verify", "--json"]);
    assert_eq!(code, Some(3), "{stderr}");
    let audit: Value = serde_json::from_str(&stdout)?;
    assert_eq!(audit["clean"], false);
    assert!(!audit["violations"].as_array().expect("violations").is_empty(), "{audit}");
    Ok(())
}
