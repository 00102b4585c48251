//! A small payments backend embedding wallet-ledger the way the README's five steps describe:
//! the ledger lives in its own schema (`shop_ledger`), migrated by the backend's own "migration
//! tool", on the backend's own r2d2 pool; orders are the backend's rows and commit in the same
//! transaction as the money movement (authorize with a hold, capture on shipping, void on
//! cancel); client retries carry idempotency keys.
//!
//! ```sh
//! cargo run --example payments_backend     # DATABASE_URL, or a throwaway local PostgreSQL
//! ```
//!
//! `tests/examples.rs` runs [`run`] and checks what it returns.

use std::time::Duration;

use postgres::NoTls;
use r2d2_postgres::PostgresConnectionManager;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use wallet_ledger::schema::{migration_script_for, SchemaName};
use wallet_ledger::{AccountId, Hold, HoldId, Ledger, LedgerError, NewAccount, Transfer};

type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;

/// The backend's own tables, created by its migration tool next to the ledger's script.
const BACKEND_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS orders (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_key text    NOT NULL UNIQUE,   -- the client's idempotency key for placing it
    customer    bigint  NOT NULL,
    merchant    bigint  NOT NULL,
    total       numeric NOT NULL CHECK (total > 0),
    status      text    NOT NULL CHECK (status IN ('authorized', 'declined', 'shipped', 'cancelled')),
    hold_id     bigint,
    decline     text
);";

/// An order as the backend sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub id: i64,
    pub status: String,
    pub hold: Option<HoldId>,
    pub decline: Option<String>,
}

/// The backend: its pool, and the ledger on the same pool.
pub struct Shop {
    pool: Pool,
    ledger: Ledger,
}

impl Shop {
    /// Steps 1 to 3: migrate (the backend's tables and the ledger's script, one transaction),
    /// then build the ledger on the backend's pool with auto-migration off.
    pub fn open(url: &str) -> Result<Shop, Box<dyn std::error::Error>> {
        let manager = PostgresConnectionManager::new(url.parse()?, NoTls);
        let pool = r2d2::Pool::builder().max_size(8).connection_timeout(Duration::from_secs(10)).build(manager)?;
        let schema = SchemaName::new("shop_ledger")?;
        {
            let mut conn = pool.get()?;
            let mut tx = conn.transaction()?;
            tx.batch_execute(BACKEND_SCHEMA)?;
            let migrated: bool =
                tx.query_one("SELECT to_regclass('shop_ledger.schema_version') IS NOT NULL", &[])?.get(0);
            if !migrated {
                tx.batch_execute(&migration_script_for(&schema))?;
            }
            tx.commit()?;
        }
        let ledger = Ledger::with_pool(pool.clone()).schema(schema.as_str()).migrate(false).build()?;
        Ok(Shop { pool, ledger })
    }

    /// Places an order and authorizes its total, in one transaction. Safe to retry with the
    /// same `request_key`: the retry returns the order the first call made, and no second hold
    /// is taken. A customer who cannot pay gets a declined order, committed all the same.
    pub fn place_order(
        &self,
        request_key: &str,
        customer: AccountId,
        merchant: AccountId,
        total: Decimal,
    ) -> Result<Order, Box<dyn std::error::Error>> {
        let mut conn = self.pool.get()?;
        let mut tx = conn.transaction()?;
        // Own rows first (the lock-order rule for a caller's transaction), then the ledger.
        let inserted = tx.query_opt(
            "INSERT INTO orders (request_key, customer, merchant, total, status)
             VALUES ($1, $2, $3, $4, 'declined') ON CONFLICT (request_key) DO NOTHING RETURNING id",
            &[&request_key, &customer.0, &merchant.0, &total],
        )?;
        let Some(row) = inserted else {
            tx.rollback()?;
            return self.order_by_key(request_key);
        };
        let id: i64 = row.get(0);
        let hold = Hold::new(customer, merchant, total)
            .expires_in(Duration::from_secs(7 * 24 * 3600))
            .idempotency_key(format!("order-{request_key}/auth"));
        match self.ledger.hold_in(&mut tx, &hold) {
            Ok(receipt) => {
                tx.execute(
                    "UPDATE orders SET status = 'authorized', hold_id = $2 WHERE id = $1",
                    &[&id, &receipt.hold_id.0],
                )?;
            }
            // A refusal leaves the transaction usable: record why, with the order.
            Err(e @ (LedgerError::InsufficientFunds { .. } | LedgerError::CurrencyMismatch { .. })) => {
                tx.execute("UPDATE orders SET decline = $2 WHERE id = $1", &[&id, &e.to_string()])?;
            }
            Err(e) => return Err(e.into()), // dropped: the order row rolls back with it
        }
        tx.commit()?;
        self.order(id)
    }

    /// Ships an order: captures `charged` (at most the authorized total; the rest is released).
    pub fn ship(&self, order: i64, charged: Decimal) -> Result<Order, Box<dyn std::error::Error>> {
        self.end_authorization(order, Some(charged), "shipped")
    }

    /// Cancels an authorized order: the hold is voided, no money moves.
    pub fn cancel(&self, order: i64) -> Result<Order, Box<dyn std::error::Error>> {
        self.end_authorization(order, None, "cancelled")
    }

    fn end_authorization(
        &self,
        order: i64,
        charged: Option<Decimal>,
        status: &str,
    ) -> Result<Order, Box<dyn std::error::Error>> {
        let mut conn = self.pool.get()?;
        let mut tx = conn.transaction()?;
        // The order row first, locked, so two shippers of one order queue here.
        let row = tx.query_one("SELECT status, hold_id FROM orders WHERE id = $1 FOR UPDATE", &[&order])?;
        let (current, hold): (String, Option<i64>) = (row.get(0), row.get(1));
        if current != "authorized" {
            return Err(format!("order {order} is {current}, not authorized").into());
        }
        let hold = HoldId(hold.ok_or("an authorized order has a hold")?);
        match charged {
            Some(amount) => {
                self.ledger.capture_in(&mut tx, hold, Some(amount))?;
            }
            None => self.ledger.void_in(&mut tx, hold)?,
        }
        tx.execute("UPDATE orders SET status = $2 WHERE id = $1", &[&order, &status])?;
        tx.commit()?;
        self.order(order)
    }

    fn order(&self, id: i64) -> Result<Order, Box<dyn std::error::Error>> {
        let row =
            self.pool.get()?.query_one("SELECT id, status, hold_id, decline FROM orders WHERE id = $1", &[&id])?;
        Ok(Order {
            id: row.get(0),
            status: row.get(1),
            hold: row.get::<_, Option<i64>>(2).map(HoldId),
            decline: row.get(3),
        })
    }

    fn order_by_key(&self, key: &str) -> Result<Order, Box<dyn std::error::Error>> {
        let id: i64 = self.pool.get()?.query_one("SELECT id FROM orders WHERE request_key = $1", &[&key])?.get(0);
        self.order(id)
    }
}

/// Repeats `op` while its error is retryable (lock waits, lost connections, pool timeouts):
/// safe because every request carries an idempotency key.
pub fn with_retries<T>(mut op: impl FnMut() -> Result<T, LedgerError>) -> Result<T, LedgerError> {
    let mut attempts = 0;
    loop {
        match op() {
            Err(e) if e.is_retryable() && attempts < 5 => attempts += 1,
            result => return result,
        }
    }
}

/// What a run ended with, for the test that runs this example.
#[derive(Debug)]
pub struct Outcome {
    pub shipped: Order,
    pub cancelled: Order,
    pub declined: Order,
    pub customer_balance: Decimal,
    pub merchant_balance: Decimal,
    pub customer_available: Decimal,
    pub audit_clean: bool,
}

/// The whole story, on the database at `url`.
pub fn run(url: &str) -> Result<Outcome, Box<dyn std::error::Error>> {
    let shop = Shop::open(url)?;
    let ledger = &shop.ledger;
    ledger.define_currency("EUR", 2)?;
    let bank = ledger.open_account(&NewAccount::new("EUR").name("bank").unbounded())?.id;
    let customer = ledger.open_account(&NewAccount::new("EUR").name("customer"))?.id;
    let merchant = ledger.open_account(&NewAccount::new("EUR").name("merchant"))?.id;
    // A top-up, retried by the client after a timeout: applied once.
    let top_up = Transfer::new(bank, customer, dec!(100.00)).idempotency_key("topup-2026-11-23");
    with_retries(|| ledger.transfer(&top_up))?;
    let again = with_retries(|| ledger.transfer(&top_up))?;
    println!("top-up: balance {} (retry replayed: {})", again.to_balance, again.replayed);

    let first = shop.place_order("req-1", customer, merchant, dec!(60.00))?;
    let retried = shop.place_order("req-1", customer, merchant, dec!(60.00))?; // client retry
    assert_eq!(first, retried);
    println!("order {} {} (hold {:?}); available {}", first.id, first.status, first.hold, ledger.available(customer)?);

    let second = shop.place_order("req-2", customer, merchant, dec!(30.00))?;
    let declined = shop.place_order("req-3", customer, merchant, dec!(50.00))?; // 10.00 left
    println!("order {} {}: {}", declined.id, declined.status, declined.decline.as_deref().unwrap_or(""));

    let shipped = shop.ship(first.id, dec!(55.50))?; // final charge below the authorization
    let cancelled = shop.cancel(second.id)?;
    println!("order {} {}, order {} {}", shipped.id, shipped.status, cancelled.id, cancelled.status);

    let outcome = Outcome {
        shipped,
        cancelled,
        declined,
        customer_balance: ledger.balance(customer)?,
        merchant_balance: ledger.balance(merchant)?,
        customer_available: ledger.available(customer)?,
        audit_clean: ledger.verify()?.is_clean(),
    };
    println!(
        "customer {} (available {}), merchant {}, audit clean: {}",
        outcome.customer_balance, outcome.customer_available, outcome.merchant_balance, outcome.audit_clean
    );
    Ok(outcome)
}

#[allow(dead_code)] // a module of tests/examples.rs too, where `main` is unused
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = wallet_ledger_embedded::embedded::fresh_database("payments_backend")?;
    run(&url)?;
    Ok(())
}
