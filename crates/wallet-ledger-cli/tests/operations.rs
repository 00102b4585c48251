//! The wallet operations on the command line: `reverse`, `freeze`, `unfreeze`, `close`,
//! `limits`, `transfer --up-to-available` and `account open --max-balance` call the library
//! and print what it answered; refusals exit 1 with the library's message, bad arguments 2.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::process::Command;

use anyhow::Result;
use rust_decimal_macros::dec;
use serde_json::Value;

/// Runs the binary on `url`; exit code, stdout, stderr.
fn cli(url: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wallet-ledger"))
        .arg("--database-url")
        .arg(url)
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

/// A successful command's `--json` document.
fn json(url: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, stdout, stderr) = cli(url, &all);
    assert_eq!(code, Some(0), "{args:?}: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {stdout}"))
}

#[test]
fn a_refund_a_freeze_a_close_and_limits_from_the_command_line() -> Result<()> {
    let (ledger, url, _issuer, wallets) = common::funded("cli_operations", 2, dec!(100.00))?;
    let (alice, bob) = (wallets[0].0.to_string(), wallets[1].0.to_string());

    // A payment, then a partial refund and the rest.
    let paid = json(&url, &["transfer", &alice, &bob, "30.00", "--key", "order-1"]);
    let paid_id = paid["transfer_id"].as_i64().expect("an id").to_string();
    let refund = json(&url, &["reverse", &paid_id, "--amount", "10.00", "--key", "refund-1"]);
    assert_eq!((refund["from"].as_i64(), refund["to"].as_i64()), (Some(wallets[1].0), Some(wallets[0].0)));
    assert_eq!(refund["amount"], "10.00");
    let again = json(&url, &["reverse", &paid_id, "--amount", "10.00", "--key", "refund-1"]);
    assert_eq!(again["replayed"], true);
    let rest = json(&url, &["reverse", &paid_id]);
    assert_eq!(rest["amount"], "20.00");
    let (code, _, stderr) = cli(&url, &["reverse", &paid_id, "--amount", "0.01"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("revers"), "{stderr}");

    // A frozen account refuses debits and takes credits.
    assert_eq!(json(&url, &["freeze", &alice])["status"], "frozen");
    let (code, _, stderr) = cli(&url, &["transfer", &alice, &bob, "1.00"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("frozen"), "{stderr}");
    json(&url, &["transfer", &bob, &alice, "1.00"]);
    assert_eq!(json(&url, &["unfreeze", &alice])["status"], "open");

    // Limits: a ceiling the balance already breaks is refused, one above it applies.
    let (code, _, stderr) = cli(&url, &["limits", &alice, "--max", "50.00"]);
    assert_eq!(code, Some(1), "{stderr}");
    let limited = json(&url, &["limits", &alice, "--max", "200.00", "--min", "-5.00"]);
    assert_eq!((limited["max_balance"].as_str(), limited["min_balance"].as_str()), (Some("200.00"), Some("-5.00")));
    assert_eq!(json(&url, &["limits", &alice])["max_balance"], "200.00");
    let (code, _, stderr) = cli(&url, &["limits", &alice, "--max", "lots"]);
    assert_eq!(code, Some(2), "{stderr}");

    // A sweep moves what is available above the floor, then closing needs a zero balance.
    let swept = json(&url, &["transfer", &alice, &bob, "1000.00", "--up-to-available"]);
    assert_eq!(swept["amount"], "106.00");
    assert_eq!(ledger.balance(wallets[0])?, dec!(-5.00));
    let (code, _, stderr) = cli(&url, &["close", &alice]);
    assert_eq!(code, Some(1), "{stderr}");
    json(&url, &["transfer", &bob, &alice, "5.00"]);
    json(&url, &["limits", &alice, "--min", "0"]);
    assert_eq!(json(&url, &["close", &alice])["status"], "closed");
    let (code, _, stderr) = cli(&url, &["transfer", &bob, &alice, "1.00"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("closed"), "{stderr}");

    // Text output names the state and limits too.
    let (code, stdout, _) = cli(&url, &["account", "show", &alice]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("closed") && stdout.contains("ceiling 200.00"), "{stdout}");
    assert!(ledger.verify()?.is_clean());
    Ok(())
}

#[test]
fn an_account_opens_with_a_ceiling() -> Result<()> {
    let (_ledger, url) = common::ledger("cli_ceiling")?;
    let (code, _, stderr) = cli(&url, &["currency", "define", "EUR", "2"]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stdout, stderr) = cli(&url, &["account", "open", "--currency", "EUR", "--max-balance", "150.00"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("ceiling 150.00"), "{stdout}");
    Ok(())
}

/// `access grant` and `access revoke`: the granted role reads the ledger and moves money through
/// its functions, its own direct write is refused; revoked, it reaches nothing; an unknown role
/// exits 1 with the server's message.
#[test]
fn access_grant_and_revoke_from_the_command_line() -> Result<()> {
    let (owner, url, _, w) = common::funded("cli_access", 2, dec!(10))?;
    let mut conn = owner.connection()?;
    let db: String = conn.client().query_one("SELECT current_database()", &[])?.get(0);
    let role = format!("{db}_app");
    conn.client().batch_execute(&format!("CREATE ROLE {role} LOGIN PASSWORD 'app-secret'"))?;
    drop(conn);

    let (code, stdout, stderr) = cli(&url, &["access", "grant", &role]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains(&format!("granted: {role}")), "{stdout}");
    let as_app = common::url_as(&url, &role, "app-secret")?;
    let mut app = postgres::Client::connect(&as_app, postgres::NoTls)?;
    let outcome: String = app
        .query_one(
            "SELECT outcome FROM wallet_ledger.transfer($1, $2, 1, NULL, NULL, 0::smallint, 0)",
            &[&w[0].0, &w[1].0],
        )?
        .get(0);
    assert_eq!(outcome, "ok");
    let direct = app.execute("UPDATE wallet_ledger.accounts SET balance = balance + 1", &[]);
    assert!(matches!(direct, Err(e) if e.code() == Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)));

    let (code, stdout, stderr) = cli(&url, &["access", "revoke", &role]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains(&format!("revoked: {role}")), "{stdout}");
    let revoked = app.query("SELECT balance FROM wallet_ledger.accounts", &[]);
    assert!(matches!(revoked, Err(e) if e.code() == Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)));
    drop(app);

    let (code, _, stderr) = cli(&url, &["access", "grant", "no_such_role_anywhere"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no_such_role_anywhere"), "{stderr}");
    let mut conn = owner.connection()?;
    conn.client().batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))?;
    Ok(())
}
