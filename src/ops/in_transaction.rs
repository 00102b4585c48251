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

use postgres::error::SqlState;
use postgres::types::{ToSql, Type};
use postgres::{Row, Transaction};
use rust_decimal::Decimal;

use crate::driver::async_guard::refuse_on_runtime_thread;
use crate::driver::ledger::Ledger;
use crate::driver::observe::op_span;
use crate::driver::retry::Backoff;
use crate::error::{from_db, LedgerError};
use crate::model::hold::{Hold, HoldReceipt};
use crate::model::metadata::stored_metadata;
use crate::model::transfer::{internal_key, Receipt, Transfer};
use crate::protocol::hold::{capture_outcome, hold_outcome, void_outcome};
use crate::protocol::transfer::{outcome, overflow_as_invalid_amount};
use crate::protocol::{self, holds_key, Reply, KEY_CONSTRAINT};
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
        t.validate()?;
        if t.up_to_available {
            self.refuse_in_citus("a transfer up to the available balance")?;
        }
        self.refuse_metadata_on_citus("a transfer with metadata", t.metadata.as_ref())?;
        let key = t.idempotency_key.clone().unwrap_or_else(internal_key);
        let (mode, timeout_ms) = protocol::lock_params(self.inner.lock_wait);
        let metadata = stored_metadata(t.metadata.as_ref());
        let params: [(&(dyn ToSql + Sync), Type); 8] = [
            (&t.from.0, Type::INT8),
            (&t.to.0, Type::INT8),
            (&t.amount, Type::NUMERIC),
            (&key, Type::TEXT),
            (&t.memo, Type::TEXT),
            (&mode, Type::INT2),
            (&timeout_ms, Type::INT4),
            (&metadata, Type::JSONB),
        ];
        let params = &params[..protocol::transfer::parameter_count(t)];
        let row = self
            .in_savepoint(tx, protocol::transfer::statement(t), params, KEY_CONSTRAINT)
            .map_err(|e| overflow_as_invalid_amount(e, t.amount))?;
        self.inner.counters.lock_waited(&row);
        outcome(t, &key, &row)
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
        h.validate()?;
        self.refuse_metadata_on_citus("a hold with metadata", h.metadata.as_ref())?;
        let key = h.idempotency_key.clone().unwrap_or_else(internal_key);
        let expires_in_ms = i64::try_from(h.expires_in.as_millis()).unwrap_or(i64::MAX);
        let (mode, timeout_ms) = protocol::lock_params(self.inner.lock_wait);
        let metadata = stored_metadata(h.metadata.as_ref());
        let params: [(&(dyn ToSql + Sync), Type); 9] = [
            (&h.from.0, Type::INT8),
            (&h.to.0, Type::INT8),
            (&h.amount, Type::NUMERIC),
            (&expires_in_ms, Type::INT8),
            (&key, Type::TEXT),
            (&h.memo, Type::TEXT),
            (&mode, Type::INT2),
            (&timeout_ms, Type::INT4),
            (&metadata, Type::JSONB),
        ];
        let (sql, count) = protocol::hold::statement(h);
        let row = self
            .in_savepoint(tx, sql, &params[..count], "holds_idempotency_key")
            .map_err(|e| overflow_as_invalid_amount(e, h.amount))?;
        hold_outcome(h, key, &row, false)
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
        if let Some(amount) = amount {
            crate::model::money::check_transfer_amount(amount)?;
        }
        let (mode, timeout_ms) = protocol::lock_params(self.inner.lock_wait);
        let params: [(&(dyn ToSql + Sync), Type); 4] =
            [(&hold.0, Type::INT8), (&amount, Type::NUMERIC), (&mode, Type::INT2), (&timeout_ms, Type::INT4)];
        let row = self.in_savepoint(tx, protocol::hold::CAPTURE, &params, "")?;
        capture_outcome(hold, amount, &row, false)
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
        let (mode, timeout_ms) = protocol::lock_params(self.inner.lock_wait);
        let params: [(&(dyn ToSql + Sync), Type); 3] =
            [(&hold.0, Type::INT8), (&mode, Type::INT2), (&timeout_ms, Type::INT4)];
        let row = self.in_savepoint(tx, protocol::hold::VOID, &params, "")?;
        void_outcome(hold, &row, false)
    }

    /// Runs one ledger statement in a savepoint of the caller's transaction (one round trip for
    /// the statement: `query_typed` needs no prepare). The savepoint is released only when the
    /// operation applied (`ok`) or replayed; on a refusal or an error it is rolled back, which
    /// also releases the row locks the statement took, so a refused call holds nothing until the
    /// caller's commit. A lost race on `key_constraint` is waited for by the server and retried,
    /// which replays the winner (in READ COMMITTED, where the retry sees the winner's commit).
    pub(crate) fn in_savepoint(
        &self,
        tx: &mut Transaction<'_>,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
        key_constraint: &str,
    ) -> Result<Row, LedgerError> {
        // The caller's client blocks like a pooled one: refused on an async runtime's thread.
        refuse_on_runtime_thread()?;
        let mut backoff = Backoff::new(self.inner.max_retries);
        let mut previous: Option<postgres::Error> = None;
        let mut n: u32 = 0;
        loop {
            n += 1;
            crate::driver::observe::attempt(n, previous.as_ref());
            let mut savepoint = tx.savepoint("wallet_ledger_call")?;
            let error = match savepoint.query_typed_one(&self.inner.schema.qualify(sql), params) {
                Ok(row) => {
                    if holds_key(&row) {
                        savepoint.commit()?;
                    } else {
                        savepoint.rollback()?;
                    }
                    return Ok(row);
                }
                Err(error) => error,
            };
            savepoint.rollback()?;
            if error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
                return Err(LedgerError::LockUnavailable { policy: self.inner.lock_wait.to_string(), source: error });
            }
            let key_race = error.code() == Some(&SqlState::UNIQUE_VIOLATION)
                && error.as_db_error().and_then(|d| d.constraint()) == Some(key_constraint);
            if !key_race {
                return Err(from_db(error));
            }
            let row = tx.query_one("SELECT current_setting('transaction_isolation')", &[])?;
            let isolation: String = Reply::new(&row, "current_setting").first()?;
            if isolation != "read committed" {
                return Err(LedgerError::InvalidInput {
                    field: "transaction isolation",
                    reason: format!(
                        "{isolation}: a concurrent call with the same idempotency key committed after this \
                         transaction's snapshot; idempotency keys replay only in READ COMMITTED transactions \
                         (retry the whole transaction)"
                    ),
                });
            }
            if !backoff.wait() {
                return Err(from_db(error));
            }
            self.inner.counters.retried();
            previous = Some(error);
        }
    }
}
