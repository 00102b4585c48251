//! The ledger inside the caller's own transaction: `transfer_in`, `hold_in`, `capture_in`,
//! `void_in` run the same server-side functions as their pooled forms, on a
//! `&mut postgres::Transaction` the caller owns, so a backend's own rows (an order, an
//! invoice) and the money movement commit or roll back together.
//!
//! # What the lock-order guarantee needs from the caller
//!
//! The ledger's deadlock-freedom rests on every transaction taking its account locks in one
//! ascending order, all at once. Inside a caller's transaction that holds only if:
//!
//! 1. **One ledger operation per transaction.** Each call locks its accounts at once, in order,
//!    but two calls in one transaction lock in two steps: `A->B` then `C->D` in one transaction
//!    and `C->D` then `A->B` in another can deadlock.
//! 2. **No other locks on ledger rows.** Do not `SELECT ... FOR UPDATE` or update
//!    `wallet_ledger` rows yourself; read them without locks if you must. Your own tables may
//!    reference `wallet_ledger.accounts` by foreign key: the ledger locks accounts `FOR NO KEY
//!    UPDATE`, which does not conflict with the `FOR KEY SHARE` lock such a reference takes.
//! 3. **Your own rows in your own consistent order, before the ledger call.** Lock or write your
//!    rows first (an order row, by its key), then make the ledger call, then commit. Ledger
//!    locks are then always the last taken, so a wait on a ledger row never holds up a
//!    transaction that waits for one of your rows in the other direction.
//!
//! `tests/embedding.rs` runs the pattern above from many threads with the server's deadlock
//! counter unchanged, and breaks rule 1 to show the counter rise.
//!
//! # Refusals and errors
//! Each call runs inside a savepoint: a refusal (`InsufficientFunds`, ...) or an error
//! (`LockUnavailable`, a constraint) rolls back to it, releasing whatever it locked, so the
//! caller's transaction stays usable and can still commit its own rows. The savepoint costs two
//! extra round trips. Idempotency keys replay only in `READ COMMITTED` transactions (the
//! default): in a `REPEATABLE READ` or `SERIALIZABLE` one, a concurrent call with the same key
//! that commits after the snapshot is reported as `InvalidInput` ("transaction isolation") and
//! the caller retries its whole transaction.
//! A concurrent call with the same idempotency key is waited for and replayed; other transient
//! errors (serialization failure, lost connection) are returned, since only the caller can
//! retry its whole transaction.

use postgres::Transaction;
use rust_decimal::Decimal;

use crate::driver::ledger::Ledger;
use crate::error::LedgerError;
use crate::model::hold::{Hold, HoldReceipt};
use crate::model::transfer::{Receipt, Transfer};
use crate::observe::op_span;
use crate::ops::hold::{capture_plan, hold_plan, void_plan};
use crate::values::HoldId;

impl Ledger {
    /// [`Ledger::transfer`] inside the caller's transaction: committed or rolled back with it.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use rust_decimal_macros::dec;
    /// use wallet_ledger::{AccountId, Ledger, Transfer};
    ///
    /// # let (url, buyer, shop) = ("", AccountId(2), AccountId(3));
    /// let ledger = Ledger::connect(url)?;
    /// let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    /// let mut tx = client.transaction()?;
    /// tx.execute("INSERT INTO orders (id, total) VALUES ($1, $2)", &[&1234_i64, &dec!(19.99)])?;
    /// let paid = ledger.transfer_in(&mut tx, &Transfer::new(buyer, shop, dec!(19.99)).idempotency_key("order-1234"));
    /// match paid {
    ///     Ok(_) => tx.commit()?, // the order and its payment together
    ///     Err(e) => {
    ///         // The transaction is still usable: record the refusal with the order.
    ///         tx.execute("UPDATE orders SET failure = $2 WHERE id = $1", &[&1234_i64, &e.to_string()])?;
    ///         tx.commit()?;
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The refusals of [`Ledger::transfer`]; database errors of the caller's transaction.
    /// See the [module docs](crate::in_transaction) for what the lock order needs from the caller.
    pub fn transfer_in(&self, tx: &mut Transaction<'_>, t: &Transfer) -> Result<Receipt, LedgerError> {
        let span = op_span!("transfer_in", from = t.from.0, to = t.to.0, amount = %t.amount, key = t.idempotency_key.as_deref(), lock_wait = %self.inner.lock_wait);
        span.finish(self.inner.counters.record(self.run_transfer_in(tx, t)))
    }

    fn run_transfer_in(&self, tx: &mut Transaction<'_>, t: &Transfer) -> Result<Receipt, LedgerError> {
        let ctx = self.ctx();
        let key = crate::ops::one_transfer::prepare(&ctx, t)?;
        self.run_in(tx, crate::ops::one_transfer::plan(&ctx, t, key))
    }

    /// [`Ledger::hold`] inside the caller's transaction.
    ///
    /// # Errors
    /// As [`Ledger::hold`] and [`Ledger::transfer_in`].
    pub fn hold_in(&self, tx: &mut Transaction<'_>, h: &Hold) -> Result<HoldReceipt, LedgerError> {
        let span = op_span!("hold_in", from = h.from.0, to = h.to.0, amount = %h.amount, key = h.idempotency_key.as_deref(), lock_wait = %self.inner.lock_wait);
        span.finish(self.inner.counters.record(self.run_hold_in(tx, h)))
    }

    fn run_hold_in(&self, tx: &mut Transaction<'_>, h: &Hold) -> Result<HoldReceipt, LedgerError> {
        self.run_in(tx, hold_plan(&self.ctx(), h))
    }

    /// [`Ledger::capture`] inside the caller's transaction.
    ///
    /// # Errors
    /// As [`Ledger::capture`] and [`Ledger::transfer_in`].
    pub fn capture_in(
        &self,
        tx: &mut Transaction<'_>,
        hold: HoldId,
        amount: Option<Decimal>,
    ) -> Result<Receipt, LedgerError> {
        let span = op_span!("capture_in", hold = hold.0, amount = amount.map(|a| a.to_string()), lock_wait = %self.inner.lock_wait);
        span.finish(self.inner.counters.record(self.run_capture_in(tx, hold, amount)))
    }

    fn run_capture_in(
        &self,
        tx: &mut Transaction<'_>,
        hold: HoldId,
        amount: Option<Decimal>,
    ) -> Result<Receipt, LedgerError> {
        self.run_in(tx, capture_plan(&self.ctx(), hold, amount))
    }

    /// [`Ledger::void`] inside the caller's transaction.
    ///
    /// # Errors
    /// As [`Ledger::void`] and [`Ledger::transfer_in`].
    pub fn void_in(&self, tx: &mut Transaction<'_>, hold: HoldId) -> Result<(), LedgerError> {
        let span = op_span!("void_in", hold = hold.0, lock_wait = %self.inner.lock_wait);
        span.finish(self.inner.counters.record(self.run_void_in(tx, hold)))
    }

    fn run_void_in(&self, tx: &mut Transaction<'_>, hold: HoldId) -> Result<(), LedgerError> {
        self.run_in(tx, void_plan(&self.ctx(), hold))
    }
}

#[cfg(feature = "aio")]
impl crate::aio::Ledger {
    /// [`Ledger::transfer_in`], awaited, in the caller's
    /// [`tokio_postgres::Transaction`]: committed or rolled back with it, under the same
    /// [rules](crate::in_transaction).
    ///
    /// # Errors
    /// As [`Ledger::transfer_in`].
    pub async fn transfer_in(
        &self,
        tx: &mut tokio_postgres::Transaction<'_>,
        t: &Transfer,
    ) -> Result<Receipt, LedgerError> {
        let span = op_span!(async "transfer_in", from = t.from.0, to = t.to.0, amount = %t.amount, key = t.idempotency_key.as_deref(), lock_wait = %self.inner.lock_wait);
        span.run(async {
            let ctx = self.ctx();
            let result = match crate::ops::one_transfer::prepare(&ctx, t) {
                Ok(key) => self.run_in(tx, crate::ops::one_transfer::plan(&ctx, t, key)).await,
                Err(e) => Err(e),
            };
            self.inner.counters.record(result)
        })
        .await
    }

    /// [`Ledger::hold_in`], awaited, in the caller's transaction.
    ///
    /// # Errors
    /// As [`Ledger::hold_in`].
    pub async fn hold_in(
        &self,
        tx: &mut tokio_postgres::Transaction<'_>,
        h: &Hold,
    ) -> Result<HoldReceipt, LedgerError> {
        let span = op_span!(async "hold_in", from = h.from.0, to = h.to.0, amount = %h.amount, key = h.idempotency_key.as_deref(), lock_wait = %self.inner.lock_wait);
        span.run(async { self.inner.counters.record(self.run_in(tx, hold_plan(&self.ctx(), h)).await) }).await
    }

    /// [`Ledger::capture_in`], awaited, in the caller's transaction.
    ///
    /// # Errors
    /// As [`Ledger::capture_in`].
    pub async fn capture_in(
        &self,
        tx: &mut tokio_postgres::Transaction<'_>,
        hold: HoldId,
        amount: Option<Decimal>,
    ) -> Result<Receipt, LedgerError> {
        let span = op_span!(async "capture_in", hold = hold.0, amount = amount.map(|a| a.to_string()), lock_wait = %self.inner.lock_wait);
        span.run(async { self.inner.counters.record(self.run_in(tx, capture_plan(&self.ctx(), hold, amount)).await) })
            .await
    }

    /// [`Ledger::void_in`], awaited, in the caller's transaction.
    ///
    /// # Errors
    /// As [`Ledger::void_in`].
    pub async fn void_in(&self, tx: &mut tokio_postgres::Transaction<'_>, hold: HoldId) -> Result<(), LedgerError> {
        let span = op_span!(async "void_in", hold = hold.0, lock_wait = %self.inner.lock_wait);
        span.run(async { self.inner.counters.record(self.run_in(tx, void_plan(&self.ctx(), hold)).await) }).await
    }
}
