//! The read commands on the command line: `account open --external-id --metadata`, `account
//! find`, `accounts list`, `transfers list` and `show`, `statement` (text, JSON, CSV) and
//! `balance --at`; cursors printed by one page continue the listing; bad times and cursors are
//! argument errors (exit 2).

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use rust_decimal_macros::dec;
use serde_json::Value;
use wallet_ledger::Transfer;

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

fn json(url: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, stdout, stderr) = cli(url, &all);
    assert_eq!(code, Some(0), "{args:?}: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {stdout}"))
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

#[test]
fn accounts_by_external_id_and_listings_page_by_page() -> Result<()> {
    let (_ledger, url) = common::ledger("cli_reads_accounts")?;
    let (code, _, stderr) = cli(&url, &["currency", "define", "USD", "2"]);
    assert_eq!(code, Some(0), "{stderr}");
    for i in 0..5 {
        let (code, _, stderr) = cli(
            &url,
            &[
                "account",
                "open",
                "--currency",
                "USD",
                "--name",
                &format!("wallet-{i}"),
                "--external-id",
                &format!("user-{i}"),
                "--metadata",
                &format!("{{\"tier\":\"{}\"}}", if i % 2 == 0 { "gold" } else { "basic" }),
            ],
        );
        assert_eq!(code, Some(0), "{stderr}");
    }
    let found = json(&url, &["account", "find", "--external-id", "user-3"]);
    assert_eq!(found["external_id"], "user-3");
    assert_eq!(found["metadata"]["tier"], "basic");
    let (code, _, stderr) = cli(&url, &["account", "find", "--external-id", "nobody"]);
    assert_eq!(code, Some(1), "{stderr}");
    let (code, _, stderr) = cli(&url, &["account", "open", "--currency", "USD", "--external-id", "user-3"]);
    assert_eq!(code, Some(1), "{stderr}");
    let (code, _, stderr) = cli(&url, &["account", "open", "--currency", "USD", "--metadata", "[1]"]);
    assert_eq!(code, Some(2), "{stderr}");

    // Two pages of two, then the last of one, joined by the printed cursors.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut args = vec!["accounts", "list", "--limit", "2"];
        if let Some(cursor) = &after {
            args.extend(["--after", cursor.as_str()]);
        }
        let page = json(&url, &args);
        seen.extend(page["items"].as_array().expect("items").iter().map(|a| a["id"].as_i64().expect("id")));
        match page["next"].as_str() {
            Some(cursor) => after = Some(cursor.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    let gold = json(&url, &["accounts", "list", "--metadata", r#"{"tier":"gold"}"#]);
    assert_eq!(gold["items"].as_array().map(Vec::len), Some(3));
    let (code, stdout, _) = cli(&url, &["accounts", "list", "--name-prefix", "wallet-1"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("wallet-1") && stdout.contains("(end)"), "{stdout}");
    let (code, _, stderr) = cli(&url, &["accounts", "list", "--after", "not-a-cursor"]);
    assert_eq!(code, Some(2), "{stderr}");
    Ok(())
}

#[test]
fn transfers_statements_and_balances_as_of() -> Result<()> {
    let (ledger, url, _issuer, wallets) = common::funded("cli_reads_transfers", 2, dec!(100.00))?;
    let (alice, bob) = (wallets[0], wallets[1]);
    let before = SystemTime::now();
    std::thread::sleep(Duration::from_millis(20));
    ledger.transfer(&Transfer::new(alice, bob, dec!(30.00)).idempotency_key("order-7").memo("order 7"))?;
    ledger.transfer(&Transfer::new(bob, alice, dec!(5.00)))?;
    std::thread::sleep(Duration::from_millis(20));
    let after = SystemTime::now();
    let a = alice.0.to_string();

    let shown = json(&url, &["transfers", "show", "--key", "order-7"]);
    assert_eq!(shown["memo"], "order 7");
    assert_eq!(shown["legs"], serde_json::json!([[alice.0, "-30.00"], [bob.0, "30.00"]]));
    let id = shown["id"].as_i64().expect("id").to_string();
    assert_eq!(json(&url, &["transfers", "show", &id])["idempotency_key"], "order-7");
    let (code, _, stderr) = cli(&url, &["transfers", "show", "999999"]);
    assert_eq!(code, Some(1), "{stderr}");

    let listed = json(&url, &["transfers", "list", "--account", &a, "--created-after", &rfc3339(before)]);
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(2));
    assert!(listed["next"].is_null());

    let s = json(&url, &["statement", &a, "--from", &rfc3339(before), "--to", &rfc3339(after)]);
    assert_eq!(
        (&s["opening_balance"], &s["total_debits"], &s["total_credits"], &s["closing_balance"], &s["entry_count"]),
        (&Value::from("100.00"), &Value::from("30.00"), &Value::from("5.00"), &Value::from("75.00"), &Value::from(2))
    );
    assert_eq!(s["entries"].as_array().map(Vec::len), Some(2));
    let (code, csv, stderr) =
        cli(&url, &["statement", &a, "--from", &rfc3339(before), "--to", &rfc3339(after), "--csv"]);
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[0].starts_with("entry,transfer,counterparty,amount") && lines[1].contains(",-30.00,70.00,"), "{csv}");

    assert_eq!(json(&url, &["balance", &a, "--at", &rfc3339(before)])["balance"], "100.00");
    let (code, now, _) = cli(&url, &["balance", &a]);
    assert_eq!((code, now.trim()), (Some(0), "75.00"));
    let (code, _, stderr) = cli(&url, &["balance", &a, "--at", "yesterday"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("RFC 3339"), "{stderr}");
    Ok(())
}

#[test]
fn movement_metadata_and_the_new_filters() -> Result<()> {
    let (ledger, url, _issuer, wallets) = common::funded("cli_reads_metadata", 3, dec!(100.00))?;
    let (alice, bob, carol) = (wallets[0].0.to_string(), wallets[1].0.to_string(), wallets[2].0.to_string());
    let paid = json(&url, &["transfer", &alice, &bob, "30.00", "--metadata", r#"{"order":7}"#]);
    let paid_id = paid["transfer_id"].as_i64().expect("id").to_string();
    json(&url, &["transfer", &bob, &carol, "1.00", "--metadata", r#"{"order":8}"#]);
    let refund = json(&url, &["reverse", &paid_id, "--amount", "10.00", "--metadata", r#"{"order":7,"refund":true}"#]);
    let refund_id = refund["transfer_id"].as_i64().expect("id");
    let (code, stdout, stderr) = cli(&url, &["hold", &carol, &alice, "2.00", "--metadata", r#"{"booking":"B-1"}"#]);
    assert_eq!(code, Some(0), "{stderr}");
    let hold_id = stdout.split_whitespace().nth(1).expect("hold id").to_string();
    let (code, _, stderr) = cli(&url, &["capture", &hold_id]);
    assert_eq!(code, Some(0), "{stderr}");

    let shown = json(&url, &["transfers", "show", &paid_id]);
    assert_eq!(shown["metadata"], serde_json::json!({"order": 7}));
    let (code, stdout, _) = cli(&url, &["transfers", "show", &paid_id]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains(r#"metadata {"order":7}"#), "{stdout}");

    let order_7 = json(&url, &["transfers", "list", "--metadata", r#"{"order":7}"#, "--limit", "1"]);
    assert_eq!(order_7["items"][0]["id"].as_i64().map(|i| i.to_string()), Some(paid_id.clone()));
    let cursor = order_7["next"].as_str().expect("a second page").to_string();
    let rest = json(&url, &["transfers", "list", "--metadata", r#"{"order":7}"#, "--after", &cursor]);
    assert_eq!(rest["items"][0]["id"].as_i64(), Some(refund_id));
    assert!(rest["next"].is_null());
    let booking = json(&url, &["transfers", "list", "--metadata", r#"{"booking":"B-1"}"#]);
    assert_eq!(booking["items"].as_array().map(Vec::len), Some(1), "the capture carries the hold's metadata");

    let refunds = json(&url, &["transfers", "list", "--reversals", "true"]);
    assert_eq!(refunds["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(refunds["items"][0]["id"].as_i64(), Some(refund_id));
    let plain = json(&url, &["transfers", "list", "--account", &alice, "--reversals", "false"]);
    assert!(plain["items"].as_array().expect("items").iter().all(|t| t["id"].as_i64() != Some(refund_id)));
    assert_eq!(plain["items"].as_array().map(Vec::len), Some(3), "funding, payment, capture");

    ledger.freeze(wallets[2])?;
    let frozen = json(&url, &["accounts", "list", "--status", "frozen"]);
    assert_eq!(frozen["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(frozen["items"][0]["id"].as_i64(), Some(wallets[2].0));

    for bad in [
        vec!["transfer", alice.as_str(), bob.as_str(), "1.00", "--metadata", "[1]"],
        vec!["transfer", alice.as_str(), bob.as_str(), "1.00", "--metadata", "not json"],
        vec!["reverse", paid_id.as_str(), "--metadata", "1"],
        vec!["hold", alice.as_str(), bob.as_str(), "1.00", "--metadata", r#""x""#],
        vec!["transfers", "list", "--metadata", "[]"],
        vec!["transfers", "list", "--reversals", "maybe"],
        vec!["accounts", "list", "--status", "asleep"],
    ] {
        let (code, _, stderr) = cli(&url, &bad);
        assert_eq!(code, Some(2), "{bad:?}: {stderr}");
    }
    Ok(())
}
