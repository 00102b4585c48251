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
