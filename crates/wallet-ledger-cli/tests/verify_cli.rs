//! `wallet-ledger verify`, the binary: clean (exit 0) after a real concurrent workload, and
//! naming the violation (exit 3) once one is planted by hand in SQL.
//!
//! The ignored test measures the audit on a ledger of at least 1,000,000 entries (see
//! docs/testing.md): `cargo test --release --test verify_cli -- --ignored --nocapture`.

use std::process::{Command, Output};
use std::time::Instant;

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use wallet_ledger::testkit::{case, check, ledger_for, run, Control, ScratchDatabase, Setup, Shape};
use wallet_ledger::{Ledger, NewAccount, Transfer};

fn verify(url: &str) -> (Option<i32>, String) {
    let Output { status, stdout, stderr } = Command::new(env!("CARGO_BIN_EXE_wallet-ledger"))
        .args(["--database-url", url, "verify"])
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    assert!(stderr.is_empty(), "stderr: {}", String::from_utf8_lossy(&stderr));
    (status.code(), stdout)
}

#[test]
fn verify_is_clean_after_a_workload_and_names_a_planted_violation() {
    let database = ScratchDatabase::new("verify_cli").expect("database");
    let case = case(Shape::mixed().threads(8..=8).ops_per_thread(8..=8))
        .new_tree(&mut TestRunner::deterministic())
        .expect("a case")
        .current();
    let ledger = ledger_for(database.url(), 8).expect("ledger");
    let setup = Setup::create(&ledger, &case.spec).expect("setup");
    let log = run(&ledger, &setup, &case.workload, Control::Ledger);
    let report = check(&ledger, &setup, &log).expect("check");
    assert!(report.is_clean() && report.stats.applied > 10, "{report}");

    let (code, out) = verify(database.url());
    assert_eq!(code, Some(0), "{out}");
    let counts = format!(
        "checked {} accounts, {} transfers, {} entries",
        report.audit.accounts, report.audit.transfers, report.audit.entries
    );
    assert!(out.contains(&counts), "{out}");
    assert!(out.contains("clean"), "{out}");

    // Money out of nothing on one account: conservation and its balance both break.
    let victim = setup.accounts[0];
    let currency = &setup.spec.currency_of(0).code;
    let mut conn = ledger.connection().expect("connection");
    let client = conn.client();
    client
        .execute("UPDATE wallet_ledger.accounts SET balance = balance + 1 WHERE id = $1", &[&victim.0])
        .expect("plant");
    let (code, out) = verify(database.url());
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains(&format!("violation: conservation: {currency} balances sum to 1")), "{out}");
    assert!(out.contains(&format!("violation: balance: account {victim} holds")), "{out}");
    assert!(out.contains("NOT CLEAN: 2 violations"), "{out}");

    // Put it back: clean again. Then rewrite history: a chain and a transfer's legs break.
    client
        .execute("UPDATE wallet_ledger.accounts SET balance = balance - 1 WHERE id = $1", &[&victim.0])
        .expect("restore");
    assert_eq!(verify(database.url()).0, Some(0));
    let entry: i64 = client
        .query_one("SELECT max(id) FROM wallet_ledger.entries WHERE account_id = $1", &[&victim.0])
        .expect("an entry")
        .get(0);
    client.execute("UPDATE wallet_ledger.entries SET amount = amount * 2 WHERE id = $1", &[&entry]).expect("plant");
    let (code, out) = verify(database.url());
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains(&format!("violation: chain: account {victim} entry version")), "{out}");
    assert!(out.contains("violation: legs: transfer"), "{out}");
}

/// The audit on a large ledger: `WL_AUDIT_ENTRIES` entries (default 1,000,000), made by the
/// ledger's own transfer function called from SQL in batches (real locks, real records), on
/// 1,000 accounts. Prints the time of `Ledger::verify` and of `wallet-ledger verify`.
#[test]
#[ignore = "slow: measures the audit on 1,000,000 entries (docs/testing.md)"]
fn audit_timing_on_a_million_entries() {
    let entries: i64 = std::env::var("WL_AUDIT_ENTRIES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let database = ScratchDatabase::new("audit_timing").expect("database");
    let ledger = Ledger::connect(database.url()).expect("ledger");
    ledger.define_currency("USD", 2).expect("currency");
    let issuer = ledger.open_account(&NewAccount::new("USD").name("issuer").unbounded()).expect("issuer").id;
    let accounts = 1_000i64;
    let mut first = 0;
    for i in 0..accounts {
        let id = ledger.open_account(&NewAccount::new("USD")).expect("account").id;
        first = if i == 0 { id.0 } else { first };
        ledger.transfer(&Transfer::new(issuer, id, rust_decimal::Decimal::from(1_000_000))).expect("funding");
    }
    let transfers = (entries + 1) / 2 - accounts;
    let started = Instant::now();
    let mut conn = ledger.connection().expect("connection");
    let batch = 50_000i64;
    let mut done = 0;
    while done < transfers {
        let upto = (done + batch).min(transfers);
        // Pairs spread over all accounts, never the same twice in a row; 0.01 to 1.00.
        let applied: i64 = conn
            .client()
            .query_one(
                "SELECT count(*) FILTER (WHERE t.outcome = 'ok')
                   FROM generate_series($1::bigint + 1, $2::bigint) g
                   CROSS JOIN LATERAL wallet_ledger.transfer(
                       $3 + (g * 7919) % $4, $3 + (g * 7919 + 1 + g % ($4 - 1)) % $4, (1 + g % 100) / 100.0,
                       'bulk-' || g, NULL, 0::smallint, 0) t",
                &[&done, &upto, &first, &accounts],
            )
            .expect("bulk transfers")
            .get(0);
        assert_eq!(applied, upto - done, "every bulk transfer applies");
        done = upto;
    }
    drop(conn);
    eprintln!("generated {transfers} transfers in {:?}", started.elapsed());
    for attempt in 1..=3 {
        let started = Instant::now();
        let audit = ledger.verify().expect("audit");
        let library = started.elapsed();
        assert!(audit.is_clean(), "{audit:?}");
        assert!(audit.entries >= entries, "{audit:?}");
        let started = Instant::now();
        let (code, out) = verify(database.url());
        let binary = started.elapsed();
        assert_eq!(code, Some(0), "{out}");
        eprintln!(
            "run {attempt}: {} accounts, {} transfers, {} entries: Ledger::verify {library:?}, wallet-ledger verify {binary:?}",
            audit.accounts, audit.transfers, audit.entries
        );
    }
}
