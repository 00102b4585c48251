//! Issue 17's reads on a ledger of 1,000,000 entries: one account's transfers a page of 100 at a
//! time, and a statement over a month of 100,000 entries (plus the other lookups and listings),
//! with the generic plan of each statement (`EXPLAIN ANALYZE`, as the pooled connections run
//! them after their first executions). A measurement program, not a criterion bench:
//! `cargo bench --bench reads` prints the medians and the plans (docs/benchmarks.md, "Reads").
//!
//! The fixture is written with set-based SQL, not through the library: 10,001 unbounded
//! accounts; 400,000 transfers among the wallets spread over Dec 2025 to Oct 2026; then 100,000
//! transfers of account 1 (the hot account, in and out) over November 2026. Entries get their
//! chain (version, balance_after) by window functions. Times are synthetic so that a month
//! holds the 100,000 entries; that is why the fixture cannot go through the transfer function,
//! which stamps entries with the clock. One transfer in 100 of the first 400,000 has metadata
//! (`{"order": id}`), and one in 400 is reversed in full an hour later (1,000 reversals, with
//! `{"refund_of": id}`). Ten accounts are frozen.

use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use wallet_ledger::{embedded, AccountFilter, AccountId, AccountStatus, Ledger, TransferFilter, TransferId};

const FIXTURE: &str = r#"
INSERT INTO wallet_ledger.currencies VALUES ('USD', 2);
INSERT INTO wallet_ledger.accounts (currency, min_balance, name, metadata, created_at)
SELECT 'USD', NULL, CASE WHEN g % 100 = 0 THEN 'shop-' ELSE 'user-' END || g,
       jsonb_build_object('tier', CASE WHEN g % 10 = 0 THEN 'gold' ELSE 'basic' END, 'user_id', g),
       timestamptz '2025-11-01' + g * interval '1 minute'
  FROM generate_series(1, 10001) g ORDER BY g;
INSERT INTO wallet_ledger.transfers (from_account, to_account, amount, idempotency_key, created_at)
SELECT f, CASE WHEN t = f THEN 2 + (t - 1) % 10000 ELSE t END, (1 + g % 5000) / 100.0, 'k' || g,
       timestamptz '2025-12-01' + (g / 400000.0) * interval '335 days'
  FROM (SELECT g, 2 + (g * 7919) % 10000 AS f, 2 + (g * 104729 + 1) % 10000 AS t
          FROM generate_series(1::bigint, 400000) g) s
 ORDER BY g;
UPDATE wallet_ledger.transfers SET metadata = jsonb_build_object('order', id) WHERE id % 100 = 0;
INSERT INTO wallet_ledger.transfers (from_account, to_account, amount, idempotency_key, created_at, reverses, metadata)
SELECT to_account, from_account, amount, 'rev' || id, created_at + interval '1 hour', id,
       jsonb_build_object('refund_of', id)
  FROM wallet_ledger.transfers WHERE id % 400 = 0 ORDER BY id;
UPDATE wallet_ledger.transfers SET reversed = amount WHERE id % 400 = 0 AND reverses IS NULL;
INSERT INTO wallet_ledger.transfers (from_account, to_account, amount, idempotency_key, created_at)
SELECT CASE WHEN k % 2 = 1 THEN 1 ELSE 2 + k % 10000 END, CASE WHEN k % 2 = 1 THEN 2 + k % 10000 ELSE 1 END,
       (1 + k % 5000) / 100.0, 'hot' || k, timestamptz '2026-11-01' + (k / 100000.0) * interval '30 days'
  FROM generate_series(1, 100000) k ORDER BY k;
INSERT INTO wallet_ledger.entries (transfer_id, account_id, amount, balance_after, account_version, created_at)
SELECT transfer_id, account_id, amount,
       sum(amount) OVER (PARTITION BY account_id ORDER BY created_at, transfer_id),
       row_number() OVER (PARTITION BY account_id ORDER BY created_at, transfer_id),
       created_at
  FROM (SELECT id AS transfer_id, from_account AS account_id, -amount AS amount, created_at FROM wallet_ledger.transfers
        UNION ALL
        SELECT id, to_account, amount, created_at FROM wallet_ledger.transfers) legs
 ORDER BY created_at, transfer_id;
UPDATE wallet_ledger.accounts a SET balance = s.balance, version = s.version
  FROM (SELECT account_id, sum(amount) AS balance, count(*) AS version FROM wallet_ledger.entries GROUP BY account_id) s
 WHERE s.account_id = a.id;
UPDATE wallet_ledger.accounts SET status = 'frozen' WHERE id % 1000 = 5;
"#;

fn time(text: &str) -> SystemTime {
    let days = |d: u64| Duration::from_secs(d * 86_400);
    match text {
        "2026-11-01" => SystemTime::UNIX_EPOCH + days(20_758),
        "2026-11-16" => SystemTime::UNIX_EPOCH + days(20_773),
        "2026-12-01" => SystemTime::UNIX_EPOCH + days(20_788),
        "2026-06-01" => SystemTime::UNIX_EPOCH + days(20_605),
        _ => SystemTime::UNIX_EPOCH,
    }
}

/// Median and 90th percentile of `runs` calls of `f`, after 5 warm-up calls (which also take
/// the pooled connection's statement past PostgreSQL's five custom plans).
fn measure(name: &str, runs: usize, mut f: impl FnMut() -> usize) {
    for _ in 0..5 {
        f();
    }
    let mut times = Vec::with_capacity(runs);
    let mut items = 0;
    for _ in 0..runs {
        let start = Instant::now();
        items = f();
        times.push(start.elapsed());
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("| {name} | {items} | {:.2} ms | {:.2} ms |", ms(times[times.len() / 2]), ms(times[times.len() * 9 / 10]));
}

/// The generic plan of `sql` run with `params` (a literal argument list), as text.
fn plan(client: &mut postgres::Client, title: &str, sql: &str, params: &str) -> Result<(), postgres::Error> {
    client.batch_execute("DEALLOCATE ALL; SET plan_cache_mode = force_generic_plan")?;
    client.batch_execute(&format!("PREPARE s AS {sql}"))?;
    let rows = client
        .query(&format!("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE s({params})"), &[])?;
    println!("\n#### {title}\n\n```text");
    for row in rows {
        println!("{}", row.get::<_, String>(0));
    }
    println!("```");
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return Ok(()); // `cargo bench --no-run` / `cargo test --benches` compile only
    }
    let url = embedded::fresh_database("bench_reads")?;
    let ledger = Ledger::builder(&url).pool_size(2).build()?;
    let started = Instant::now();
    let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
    client.batch_execute(FIXTURE)?;
    for table in ["accounts", "transfers", "entries"] {
        client.batch_execute(&format!("VACUUM ANALYZE wallet_ledger.{table}"))?;
        // not in a transaction
    }
    let entries: i64 = client.query_one("SELECT count(*) FROM wallet_ledger.entries", &[])?.get(0);
    let hot = AccountId(1);
    let month: i64 = client
        .query_one(
            "SELECT count(*) FROM wallet_ledger.entries WHERE account_id = 1 AND created_at > '2026-11-01' AND created_at <= '2026-12-01'",
            &[],
        )?
        .get(0);
    println!(
        "fixture: {entries} entries, {month} of account 1 in November 2026, written in {:.0?}\n",
        started.elapsed()
    );
    assert!(ledger.verify()?.is_clean(), "the fixture is a consistent ledger");

    println!("| read | items | median | p90 |\n|---|---|---|---|");
    let (nov, mid, dec) = (time("2026-11-01"), time("2026-11-16"), time("2026-12-01"));
    measure("statement, account 1, November (100,000 entries)", 50, || {
        let s = ledger.statement(hot, nov, dec).expect("statement");
        s.entry_count as usize
    });
    measure("balance_at, account 1, mid-November", 200, || {
        ledger.balance_at(hot, mid).expect("balance_at");
        1
    });
    measure("list_transfers, account 1, first page of 100", 200, || {
        ledger.list_transfers(&TransferFilter::new().account(hot).limit(100)).expect("page").items.len()
    });
    let deep = ledger.list_transfers(&TransferFilter::new().account(hot).created_after(mid).limit(1))?.next;
    measure("list_transfers, account 1, page of 100 after a cursor mid-November", 200, || {
        let mut filter = TransferFilter::new().account(hot).limit(100);
        if let Some(c) = deep {
            filter = filter.after(c);
        }
        ledger.list_transfers(&filter).expect("page").items.len()
    });
    measure("list_transfers, all, page of 100 from June 2026", 200, || {
        let filter = TransferFilter::new().created_after(time("2026-06-01")).limit(100);
        ledger.list_transfers(&filter).expect("page").items.len()
    });
    measure("history_between, account 1, November, page of 100", 200, || {
        ledger.history_between(hot, nov, dec, None, 100).expect("entries").len()
    });
    measure("list_accounts, metadata {tier: gold}, page of 100", 200, || {
        ledger
            .list_accounts(&AccountFilter::new().metadata(json!({"tier": "gold"})).limit(100))
            .expect("page")
            .items
            .len()
    });
    measure("list_accounts, name prefix shop-, page of 100", 200, || {
        ledger.list_accounts(&AccountFilter::new().name_prefix("shop-").limit(100)).expect("page").items.len()
    });
    measure("list_accounts, currency USD, page of 100", 200, || {
        ledger.list_accounts(&AccountFilter::new().currency("USD").limit(100)).expect("page").items.len()
    });
    measure("list_transfers, metadata {order: 250000}", 200, || {
        ledger
            .list_transfers(&TransferFilter::new().metadata(json!({"order": 250_000})).limit(100))
            .expect("page")
            .items
            .len()
    });
    measure("list_transfers, reversals only, page of 100 from June 2026", 200, || {
        let filter = TransferFilter::new().reversals(true).created_after(time("2026-06-01")).limit(100);
        ledger.list_transfers(&filter).expect("page").items.len()
    });
    measure("list_transfers, no reversals, page of 100 from June 2026", 200, || {
        let filter = TransferFilter::new().reversals(false).created_after(time("2026-06-01")).limit(100);
        ledger.list_transfers(&filter).expect("page").items.len()
    });
    measure("list_transfers, account 1, no reversals, page of 100", 200, || {
        ledger
            .list_transfers(&TransferFilter::new().account(hot).reversals(false).limit(100))
            .expect("page")
            .items
            .len()
    });
    measure("list_accounts, status frozen, page of 100", 200, || {
        ledger.list_accounts(&AccountFilter::new().status(AccountStatus::Frozen).limit(100)).expect("page").items.len()
    });
    measure("find_transfer by id", 200, || ledger.find_transfer(TransferId(250_000)).expect("find").map_or(0, |_| 1));
    measure("find_transfer_by_key", 200, || ledger.find_transfer_by_key("k250000").expect("find").map_or(0, |_| 1));

    println!("\n### Generic plans (EXPLAIN ANALYZE, BUFFERS)");
    let q = |f: &str| std::fs::read_to_string(format!("{}/sql/queries/{f}", env!("CARGO_MANIFEST_DIR")));
    let records = q("transfer_records.sql")?;
    let month_args = "1, '2026-11-01', '2026-12-01'";
    plan(&mut client, "statement", &q("statement.sql")?, month_args)?;
    plan(&mut client, "balance_at", &q("balance_at.sql")?, "1, '2026-11-16'")?;
    plan(
        &mut client,
        "history_between",
        &q("history_between.sql")?,
        "1, '2026-11-01', 9223372036854775807, '2026-12-01', 100",
    )?;
    let account_page = format!("{}{records}", q("list_account_transfers.sql")?);
    plan(&mut client, "list_transfers, one account", &account_page, "1, '2026-11-16', 9223372036854775807, NULL, 101")?;
    let all_page = format!("{}{records}", q("list_transfers.sql")?);
    plan(&mut client, "list_transfers, all", &all_page, "'2026-06-01', 9223372036854775807, NULL, 101, NULL, NULL")?;
    plan(
        &mut client,
        "list_transfers, all, no reversals",
        &all_page,
        "'2026-06-01', 9223372036854775807, NULL, 101, false, NULL",
    )?;
    let reversals_page = format!("{}{records}", q("list_reversals.sql")?);
    plan(
        &mut client,
        "list_transfers, reversals only",
        &reversals_page,
        "'2026-06-01', 9223372036854775807, NULL, 101, true, NULL",
    )?;
    let metadata_page = format!("{}{records}", q("list_transfers_by_metadata.sql")?);
    plan(
        &mut client,
        "list_transfers by metadata",
        &metadata_page,
        "NULL, NULL, NULL, 101, NULL, '{\"order\": 250000}'",
    )?;
    let filtered_page = format!("{}{records}", q("list_account_transfers_filtered.sql")?);
    plan(
        &mut client,
        "list_transfers, one account, no reversals",
        &filtered_page,
        "1, NULL, NULL, NULL, 101, false, NULL",
    )?;
    let accounts = "NULL, NULL, NULL, NULL, NULL, NULL, 101, NULL";
    plan(&mut client, "list_accounts", &q("list_accounts.sql")?, accounts)?;
    plan(
        &mut client,
        "list_accounts by currency",
        &q("list_accounts_by_currency.sql")?,
        "NULL, NULL, NULL, 'USD', NULL, NULL, 101, NULL",
    )?;
    plan(
        &mut client,
        "list_accounts by name prefix",
        &q("list_accounts_by_name.sql")?,
        "NULL, NULL, NULL, NULL, 'shop-', NULL, 101, NULL",
    )?;
    plan(
        &mut client,
        "list_accounts by metadata",
        &q("list_accounts_by_metadata.sql")?,
        "NULL, NULL, NULL, NULL, NULL, '{\"tier\": \"gold\"}', 101, NULL",
    )?;
    plan(
        &mut client,
        "list_accounts by status",
        &q("list_accounts_by_status.sql")?,
        "NULL, NULL, NULL, NULL, NULL, NULL, 101, 'frozen'",
    )?;
    plan(&mut client, "find_account_by_external_id", &q("account_by_external_id.sql")?, "'user-42'")?;
    plan(&mut client, "find_transfer_by_key", &format!("{}{records}", q("transfer_by_key.sql")?), "'k250000'")?;
    Ok(())
}
