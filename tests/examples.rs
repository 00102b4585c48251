//! The example backend, run as a test: what it prints is also what it returns.

#[path = "../examples/payments_backend.rs"]
mod payments_backend;

use rust_decimal_macros::dec;

#[test]
fn the_payments_backend_example_runs_and_ends_where_it_says() -> Result<(), Box<dyn std::error::Error>> {
    let database = wallet_ledger_embedded::TestDatabase::new("example_backend")?;
    let url = database.url();
    let outcome = payments_backend::run(url)?;
    assert_eq!(outcome.shipped.status, "shipped");
    assert_eq!(outcome.cancelled.status, "cancelled");
    assert_eq!(outcome.declined.status, "declined");
    assert!(outcome.declined.hold.is_none());
    assert!(outcome.declined.decline.as_deref().is_some_and(|d| d.contains("insufficient")), "{:?}", outcome.declined);
    // 100.00 topped up once; 55.50 captured; the cancelled 30.00 and the rest released.
    assert_eq!(outcome.customer_balance, dec!(44.50));
    assert_eq!(outcome.customer_available, dec!(44.50));
    assert_eq!(outcome.merchant_balance, dec!(55.50));
    assert!(outcome.audit_clean);
    // A restarted backend finds its schema migrated and does not migrate again.
    payments_backend::Shop::open(url)?;
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    let versions: i64 = client.query_one("SELECT count(*) FROM shop_ledger.schema_version", &[])?.get(0);
    assert_eq!(versions, wallet_ledger::schema::MIGRATIONS.len() as i64);
    Ok(())
}

#[path = "../examples/merchant_daily_totals.rs"]
mod merchant_daily_totals;

/// The feed consumer: its table holds, per merchant and UTC day, exactly the sum of the
/// merchant's entries, although its first attempt crashed before committing.
#[test]
fn the_merchant_daily_totals_consumer_counts_every_sale_once() -> Result<(), Box<dyn std::error::Error>> {
    use merchant_daily_totals::DailyTotal;
    use wallet_ledger::AccountId;

    let database = wallet_ledger_embedded::TestDatabase::new("example_daily_totals")?;
    let url = database.url();
    let outcome = merchant_daily_totals::run(url)?;
    assert!(matches!(outcome.crash, wallet_ledger::LedgerError::Handler { .. }), "{:?}", outcome.crash);
    assert!(outcome.totals_after_crash.is_empty(), "the crashed attempt kept {:?}", outcome.totals_after_crash);
    assert_eq!(outcome.lag, 0);

    // The ledger's own answer: the merchants' entries summed by UTC day.
    let merchants: Vec<i64> = outcome.merchants.iter().map(|m| m.0).collect();
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    let from_entries: Vec<DailyTotal> = client
        .query(
            "SELECT account_id, (created_at AT TIME ZONE 'UTC')::date::text, sum(amount)
               FROM wallet_ledger.entries WHERE account_id = ANY($1)
              GROUP BY 1, 2 ORDER BY 1, 2",
            &[&merchants],
        )?
        .iter()
        .map(|r| DailyTotal { merchant: AccountId(r.get(0)), day: r.get(1), total: r.get(2) })
        .collect();
    assert_eq!(outcome.totals, from_entries);
    let by_merchant = |m: AccountId| {
        outcome.totals.iter().filter(|t| t.merchant == m).map(|t| t.total).sum::<rust_decimal::Decimal>()
    };
    assert_eq!(by_merchant(outcome.merchants[0]), dec!(19.30), "bakery: 4.20 + 12.00 + 3.10");
    assert_eq!(by_merchant(outcome.merchants[1]), dec!(68.50), "books: 35.00 + 48.50 - 15.00");
    // Every change of the feed, the crashed page's included, was processed once.
    let all = wallet_ledger::Ledger::connect(url)?.consumer_lag(merchant_daily_totals::CONSUMER)?;
    assert_eq!((all.delivered, all.changes), (outcome.processed as u64, 0));
    Ok(())
}
