//! [`Ledger::transfer_batch`]: many transfers in one transaction and one round trip
//! (`wallet_ledger.transfer_batch()`, `sql/0004_batch.sql`).
//!
//! The union of every item's accounts is locked once, in ascending id order, by one statement;
//! the items are then decided in order against the balances as the earlier accepted items left
//! them, and every accepted item is written by three set-based statements. Each item has its own
//! outcome: a refusal changes nothing for that item and leaves the others applied.

use std::sync::Arc;

use postgres::types::{ToSql, Type};
use postgres::Transaction;

use crate::driver::call::CallError;
use crate::driver::ledger::Ledger;
use crate::driver::observe::op_span;
use crate::error::LedgerError;
use crate::model::transfer::{Receipt, Transfer};
use crate::protocol::batch::Prepared;
use crate::protocol::{self, KEY_CONSTRAINT};

impl Ledger {
    /// Applies many transfers in **one transaction and one round trip**: every account of every
    /// item is locked once, in ascending id order, by one statement; the items are decided in the
    /// given order, each against the balances the earlier accepted items left; then all accepted
    /// items are written together and committed with one WAL flush.
    ///
    /// Each item gets its own outcome, exactly the `Result` [`Ledger::transfer`] would give it
    /// if the items ran alone one after the other: a refused item (funds, floor, currency,
    /// unknown account, idempotency conflict, invalid input) changes nothing itself and leaves
    /// the others applied. Idempotency keys work per item, also for a key repeated inside the
    /// batch: a later item with the same key and content replays the earlier one, with other
    /// content it is an [`IdempotencyConflict`](LedgerError::IdempotencyConflict); a refused item
    /// does not consume its key. Items without a key get an internal one, so a retry after a lost
    /// connection never applies an item twice.
    ///
    /// An empty batch returns an empty `Vec` without touching the database. At most
    /// [`BATCH_ITEMS_MAX`](crate::limits::BATCH_ITEMS_MAX) items (10,000).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), wallet_ledger::LedgerError> {
    /// use rust_decimal_macros::dec;
    /// use wallet_ledger::{AccountId, Ledger, LedgerError, Transfer};
    ///
    /// # let (ledger, payroll, alice, bob) = (Ledger::connect("")?, AccountId(1), AccountId(2), AccountId(3));
    /// let results = ledger.transfer_batch(&[
    ///     Transfer::new(payroll, alice, dec!(1200.00)).idempotency_key("pay-2026-11/alice"),
    ///     Transfer::new(payroll, bob, dec!(1100.00)).idempotency_key("pay-2026-11/bob"),
    /// ])?;
    /// for result in results {
    ///     match result {
    ///         Ok(receipt) => println!("paid: transfer {}", receipt.transfer_id),
    ///         Err(LedgerError::InsufficientFunds { available, .. }) => println!("only {available} left"),
    ///         Err(other) => println!("refused: {other}"),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The outer `Err` means the batch as a whole did nothing: [`LedgerError::BatchTooLarge`],
    /// [`LedgerError::LockUnavailable`] (per the [`LockWait`](crate::LockWait) policy, for any of
    /// the accounts), database and pool errors after retries, or
    /// [`LedgerError::BatchOutcomeUnknown`] when the connection was lost after sending and
    /// retries could not settle it (repeat the items with the keys it names).
    pub fn transfer_batch(&self, items: &[Transfer]) -> Result<Vec<Result<Receipt, LedgerError>>, LedgerError> {
        let span = op_span!("transfer_batch", items = items.len(), lock_wait = %self.inner.lock_wait);
        self.refuse_batches_on_citus("transfer_batch")?;
        let results = self.run_batch(items, None);
        let results = self.record_batch(results);
        span.finish(results)
    }

    /// Batches and postings: [`LedgerError::Unsupported`] in Citus mode (see [`crate::citus`]).
    pub(crate) fn refuse_batches_on_citus(&self, operation: &'static str) -> Result<(), LedgerError> {
        self.refuse_on_citus(
            operation,
            "not in Citus mode yet: its one ordered lock statement over many accounts is refused \
             across shards; send the transfers one by one",
        )
    }

    /// Counts every item as one operation (and a failed batch as one failure).
    fn record_batch(
        &self,
        results: Result<Vec<Result<Receipt, LedgerError>>, LedgerError>,
    ) -> Result<Vec<Result<Receipt, LedgerError>>, LedgerError> {
        match results {
            Ok(results) => Ok(results.into_iter().map(|r| self.inner.counters.record(r)).collect()),
            Err(e) => self.inner.counters.record(Err(e)),
        }
    }

    /// The pooled batch path without counting: `keys` (one per item) overrides the items' keys
    /// (the combiner gives each queued transfer its key when it is queued).
    pub(crate) fn run_batch(
        &self,
        items: &[Transfer],
        keys: Option<&[String]>,
    ) -> Result<Vec<Result<Receipt, LedgerError>>, LedgerError> {
        let mut prepared = Prepared::new(items, keys)?;
        if prepared.is_empty() {
            return Ok(prepared.finish(None, false));
        }
        if let [i] = prepared.arrays.sent[..] {
            // One item: the single-transfer function does less work for it, with the same
            // outcome; what would fail a whole batch still fails it as a whole.
            return match self.run_transfer_keyed(&items[i], &prepared.arrays.key[0]) {
                Err(
                    e @ (LedgerError::LockUnavailable { .. }
                    | LedgerError::Database(_)
                    | LedgerError::Pool(_)
                    | LedgerError::ConstraintViolation { .. }),
                ) => Err(e),
                Err(LedgerError::OutcomeUnknown { idempotency_key, source }) => Err(LedgerError::BatchOutcomeUnknown {
                    idempotency_keys: vec![idempotency_key],
                    source: Arc::new(source),
                }),
                result => {
                    prepared.results[i] = Some(result);
                    Ok(prepared.finish(None, false))
                }
            };
        }
        let (mode, timeout_ms) = protocol::lock_params(self.inner.lock_wait);
        let a = &prepared.arrays;
        let params: [&(dyn ToSql + Sync); 12] = [
            &a.from,
            &a.to,
            &a.amount,
            &a.key,
            &a.memo,
            &mode,
            &timeout_ms,
            &a.union,
            &a.from_pos,
            &a.to_pos,
            &a.up_to,
            &a.metadata,
        ];
        match self.call(protocol::batch::SQL, &params, Some(KEY_CONSTRAINT)) {
            Ok(answer) => Ok(prepared.finish(Some(&answer.row), answer.maybe_applied)),
            Err(CallError::Failed(e)) => Err(protocol::transfer::metadata_as_invalid_input(e)),
            Err(CallError::Unknown(source)) => {
                Err(LedgerError::BatchOutcomeUnknown { idempotency_keys: prepared.keys(), source: Arc::new(source) })
            }
        }
    }

    /// [`Ledger::transfer_batch`] inside the caller's transaction: committed or rolled back with
    /// it. A batch is one ledger operation (one ordered lock statement), so the
    /// [rules for a caller's transaction](crate::in_transaction) hold as for one transfer.
    /// When every item is refused, the savepoint is rolled back and the batch holds no lock.
    ///
    /// # Errors
    /// As [`Ledger::transfer_batch`], and database errors of the caller's transaction.
    pub fn transfer_batch_in(
        &self,
        tx: &mut Transaction<'_>,
        items: &[Transfer],
    ) -> Result<Vec<Result<Receipt, LedgerError>>, LedgerError> {
        let span = op_span!("transfer_batch_in", items = items.len(), lock_wait = %self.inner.lock_wait);
        self.refuse_batches_on_citus("transfer_batch_in")?;
        let results = self.run_batch_in(tx, items);
        let results = self.record_batch(results);
        span.finish(results)
    }

    fn run_batch_in(
        &self,
        tx: &mut Transaction<'_>,
        items: &[Transfer],
    ) -> Result<Vec<Result<Receipt, LedgerError>>, LedgerError> {
        let prepared = Prepared::new(items, None)?;
        if prepared.is_empty() {
            return Ok(prepared.finish(None, false));
        }
        let (mode, timeout_ms) = protocol::lock_params(self.inner.lock_wait);
        let a = &prepared.arrays;
        let params: [(&(dyn ToSql + Sync), Type); 12] = [
            (&a.from, Type::INT8_ARRAY),
            (&a.to, Type::INT8_ARRAY),
            (&a.amount, Type::NUMERIC_ARRAY),
            (&a.key, Type::TEXT_ARRAY),
            (&a.memo, Type::TEXT_ARRAY),
            (&mode, Type::INT2),
            (&timeout_ms, Type::INT4),
            (&a.union, Type::INT8_ARRAY),
            (&a.from_pos, Type::INT4_ARRAY),
            (&a.to_pos, Type::INT4_ARRAY),
            (&a.up_to, Type::BOOL_ARRAY),
            (&a.metadata, Type::JSONB_ARRAY),
        ];
        let row = self
            .in_savepoint(tx, protocol::batch::SQL, &params, KEY_CONSTRAINT)
            .map_err(protocol::transfer::metadata_as_invalid_input)?;
        Ok(prepared.finish(Some(&row), false))
    }
}
