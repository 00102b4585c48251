//! The README's examples, compiled and run. Each README Rust block is a region of this file
//! between `// README: <name>` and `// README: end` (`tests/readme.rs` checks that they match
//! and runs them), so the README shows whole code without hidden lines and cannot drift.
//!
//! `cargo run --example readme` runs them on `DATABASE_URL`, or on a throwaway local server.

mod quickstart {
    // README: quickstart
    use rust_decimal_macros::dec;
    use wallet_ledger::{Ledger, LedgerError, NewAccount, Transfer};

    pub fn run(url: &str) -> Result<(), Box<dyn std::error::Error>> {
        let ledger = Ledger::connect(url)?; // pool + schema migrations
        ledger.define_currency("USD", 2)?;

        // Money enters through an unbounded system account; wallets cannot go below 0.
        let issuer = ledger.open_account(&NewAccount::new("USD").name("issuer").unbounded())?;
        let alice = ledger.open_account(&NewAccount::new("USD").name("alice"))?;
        let shop = ledger.open_account(&NewAccount::new("USD").name("shop"))?;

        ledger.transfer(&Transfer::new(issuer.id, alice.id, dec!(50.00)).idempotency_key("topup-1"))?;
        let paid = ledger
            .transfer(&Transfer::new(alice.id, shop.id, dec!(19.99)).idempotency_key("order-42").memo("order 42"))?;
        assert_eq!(paid.from_balance, dec!(30.01));

        // A retry of the same request is answered from the first one, not paid again.
        let retry = ledger
            .transfer(&Transfer::new(alice.id, shop.id, dec!(19.99)).idempotency_key("order-42").memo("order 42"))?;
        assert!(retry.replayed && retry.transfer_id == paid.transfer_id);

        // Refusals are typed, carry what the caller needs, and change nothing.
        match ledger.transfer(&Transfer::new(alice.id, shop.id, dec!(100.00))) {
            Err(LedgerError::InsufficientFunds { available, .. }) => assert_eq!(available, dec!(30.01)),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(ledger.balance(alice.id)?, dec!(30.01));

        let history = ledger.history(alice.id, None, 50)?; // oldest first
        assert_eq!(history.len(), 2);
        assert!(ledger.verify()?.is_clean());
        Ok(())
    }
    // README: end
}

mod batches {
    // README: batches
    use rust_decimal_macros::dec;
    use std::time::Duration;
    use wallet_ledger::{CombineConfig, Ledger, LedgerError, NewAccount, Posting, Transfer};

    pub fn run(url: &str) -> Result<(), Box<dyn std::error::Error>> {
        let ledger = Ledger::connect(url)?;
        ledger.define_currency("USD", 2)?;
        let issuer = ledger.open_account(&NewAccount::new("USD").unbounded())?.id;
        let [buyer, merchant, fees, tax] = [(); 4].map(|_| ledger.open_account(&NewAccount::new("USD")).unwrap().id);

        // A batch: one transaction, each item its own outcome, in order.
        let results = ledger.transfer_batch(&[
            Transfer::new(issuer, buyer, dec!(100.00)).idempotency_key("topup-7"),
            Transfer::new(buyer, merchant, dec!(500.00)), // refused alone
            Transfer::new(issuer, buyer, dec!(100.00)).idempotency_key("topup-7"), // replays item 0
        ])?;
        assert!(results[0].is_ok());
        assert!(matches!(results[1], Err(LedgerError::InsufficientFunds { .. })));
        assert!(results[2].as_ref().is_ok_and(|r| r.replayed));

        // A split payment: all legs or none, summing to zero per currency.
        let settled = ledger.post(
            &Posting::new()
                .leg(buyer, dec!(-100.00))
                .leg(merchant, dec!(95.00))
                .leg(fees, dec!(3.00))
                .leg(tax, dec!(2.00))
                .idempotency_key("order-42/settle"),
        )?;
        assert_eq!(settled.balances[0], (buyer, dec!(0.00)));

        // The combiner: concurrent `transfer` calls are applied many per transaction.
        let combined = Ledger::builder(url)
            .combine(CombineConfig { max_batch: 128, max_wait: Duration::from_micros(100) })
            .build()?;
        let receipt = combined.transfer(&Transfer::new(merchant, buyer, dec!(5.00)))?;
        assert_eq!(receipt.to_balance, dec!(5.00));
        assert!(ledger.verify()?.is_clean());
        Ok(())
    }
    // README: end
}

mod own_pool {
    // README: own_pool
    use r2d2_postgres::{postgres::NoTls, PostgresConnectionManager};
    use wallet_ledger::{Ledger, LedgerError};

    /// The ledger on the backend's own pool, in its own schema, migrated by the backend's tool.
    pub fn ledger_on(pool: &r2d2::Pool<PostgresConnectionManager<NoTls>>) -> Result<Ledger, LedgerError> {
        Ledger::with_pool(pool.clone()).schema("payments_ledger").migrate(false).build()
    }
    // README: end
}

mod own_transaction {
    // README: own_transaction
    use rust_decimal_macros::dec;
    use wallet_ledger::{AccountId, Ledger, Transfer};

    /// Records order 1234 and pays for it in one transaction of the backend's own.
    pub fn pay_order(
        ledger: &Ledger,
        url: &str,
        buyer: AccountId,
        shop: AccountId,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let mut client = postgres::Client::connect(url, postgres::NoTls)?;
        let mut tx = client.transaction()?;
        tx.execute("INSERT INTO orders (id, total) VALUES ($1, $2)", &[&1234_i64, &dec!(19.99)])?;
        ledger.transfer_in(&mut tx, &Transfer::new(buyer, shop, dec!(19.99)).idempotency_key("order-1234"))?;
        tx.commit()?; // the order and its payment, together
        Ok(())
    }
    // README: end
}

mod citus {
    // README: citus
    use wallet_ledger::{Ledger, LedgerError, LockWait};

    pub fn connect() -> Result<Ledger, LedgerError> {
        // Citus mode is detected from the `citus` extension; `.citus(true)` insists on it.
        let ledger = Ledger::builder("postgresql://app@coordinator.internal/payments")
            .citus(true)
            .lock_wait(LockWait::Block) // or NoWait; Timeout is refused on Citus
            .build()?; // applies the core migrations, then the Citus ones (sql/citus/)
        assert!(ledger.is_citus());
        Ok(ledger)
    }
    // README: end
}

mod change_feed {
    // README: change_feed
    use wallet_ledger::{Ledger, LedgerError};

    /// Copies every money movement into the backend's `movements` table, exactly once.
    pub fn copy_movements(ledger: &Ledger) -> Result<usize, LedgerError> {
        ledger.consume("movements-copy", 100, |tx, changes| {
            for change in changes.iter().filter(|c| c.kind.moves_money()) {
                tx.execute(
                    "INSERT INTO movements (position, kind, amount) VALUES ($1, $2, $3)",
                    &[&change.cursor.to_string(), &change.kind.as_str(), &change.amount],
                )?;
            }
            Ok(()) // commits with the consumer's new position; an error rolls both back
        })
    }
    // README: end
}

mod async_door {
    // README: async_door
    use rust_decimal_macros::dec;
    use wallet_ledger::{aio, LedgerError, NewAccount, Transfer};

    /// The async door: the same calls as the synchronous ledger, awaited.
    pub async fn payouts(url: &str) -> Result<(), LedgerError> {
        let ledger = aio::Ledger::connect(url).await?; // a deadpool-postgres pool + migrations
        ledger.define_currency("EUR", 2).await?;
        let bank = ledger.open_account(&NewAccount::new("EUR").unbounded()).await?.id;
        let bob = ledger.open_account(&NewAccount::new("EUR")).await?.id;

        // Concurrent tasks' transfers are combined into batches under load; each task still
        // gets its own receipt or refusal.
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let ledger = ledger.clone();
                let payout = Transfer::new(bank, bob, dec!(1.50)).idempotency_key(format!("payout-{i}"));
                tokio::spawn(async move { ledger.transfer(&payout).await })
            })
            .collect();
        for task in tasks {
            task.await.expect("a payout task")?;
        }
        assert_eq!(ledger.balance(bob).await?, dec!(15.00));

        // The same typed refusals; nothing changed.
        let refused = ledger.transfer(&Transfer::new(bob, bank, dec!(20.00))).await;
        assert!(matches!(refused, Err(LedgerError::InsufficientFunds { .. })));
        Ok(())
    }
    // README: end
}

/// Runs the async door's example on a multi-thread tokio runtime.
pub fn async_door(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async_door::payouts(url))?;
    Ok(())
}

pub use batches::run as batches;
pub use change_feed::copy_movements;
pub use citus::connect as citus_connect;
pub use own_pool::ledger_on;
pub use own_transaction::pay_order;
pub use quickstart::run as quickstart;

/// Sets up what `pay_order` expects (an `orders` table and two funded accounts) and runs it.
pub fn own_transaction(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    use rust_decimal_macros::dec;
    use wallet_ledger::{Ledger, NewAccount, Transfer};

    let ledger = Ledger::connect(url)?;
    ledger.define_currency("USD", 2)?;
    let issuer = ledger.open_account(&NewAccount::new("USD").unbounded())?.id;
    let buyer = ledger.open_account(&NewAccount::new("USD").name("buyer"))?.id;
    let shop = ledger.open_account(&NewAccount::new("USD").name("shop"))?.id;
    ledger.transfer(&Transfer::new(issuer, buyer, dec!(20.00)))?;
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    client.batch_execute("CREATE TABLE IF NOT EXISTS orders (id bigint PRIMARY KEY, total numeric NOT NULL)")?;
    pay_order(&ledger, url, buyer, shop)?;
    assert_eq!(ledger.balance(shop)?, dec!(19.99));
    Ok(())
}

/// Applies the migration script for `payments_ledger` as a backend's tool would, then builds
/// the ledger on a pool of the backend's own.
pub fn own_pool(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    use wallet_ledger::schema::{migration_script_for, SchemaName};

    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    client.batch_execute(&migration_script_for(&SchemaName::new("payments_ledger")?))?;
    let manager = r2d2_postgres::PostgresConnectionManager::new(url.parse()?, postgres::NoTls);
    let pool = r2d2::Pool::builder().max_size(2).build(manager)?;
    let ledger = ledger_on(&pool)?;
    ledger.define_currency("USD", 2)?;
    Ok(())
}

/// Sets up what `copy_movements` expects (a `movements` table, a few changes) and runs it twice:
/// the second run finds nothing new.
pub fn change_feed(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    use rust_decimal_macros::dec;
    use wallet_ledger::{Ledger, NewAccount, Transfer};

    let ledger = Ledger::connect(url)?;
    ledger.define_currency("USD", 2)?;
    let issuer = ledger.open_account(&NewAccount::new("USD").unbounded())?.id;
    let alice = ledger.open_account(&NewAccount::new("USD"))?.id;
    ledger.transfer(&Transfer::new(issuer, alice, dec!(20.00)))?;
    ledger.transfer(&Transfer::new(alice, issuer, dec!(5.00)))?;
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    client.batch_execute("CREATE TABLE movements (position text PRIMARY KEY, kind text, amount numeric)")?;
    assert_eq!(copy_movements(&ledger)?, 4, "two accounts opened, two transfers");
    assert_eq!(copy_movements(&ledger)?, 0);
    let copied: i64 = client.query_one("SELECT count(*) FROM movements", &[])?.get(0);
    assert_eq!(copied, 2);
    Ok(())
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A fresh database on DATABASE_URL's server when it is set, else on a throwaway local one.
    let url = wallet_ledger_embedded::fresh_database("readme_example")?;
    quickstart(&url)?;
    own_transaction(&url)?;
    own_pool(&url)?;
    batches(&wallet_ledger_embedded::fresh_database("readme_batches")?)?;
    change_feed(&wallet_ledger_embedded::fresh_database("readme_change_feed")?)?;
    async_door(&wallet_ledger_embedded::fresh_database("readme_async_door")?)?;
    let _ = citus_connect; // needs a Citus cluster: see docs/citus.md
    println!("the README's examples ran on a fresh database");
    Ok(())
}
