//! [`Ledger::transfer_batch`]: many transfers in one transaction and one round trip
//! (`wallet_ledger.transfer_batch()`, `sql/0004_batch.sql`).
//!
//! The union of every item's accounts is locked once, in ascending id order, by one statement;
//! the items are then decided in order against the balances as the earlier accepted items left
//! them, and every accepted item is written by three set-based statements. Each item has its own
//! outcome: a refusal changes nothing for that item and leaves the others applied.

use std::sync::Arc;

use postgres::types::Type;
use postgres::Transaction;

use crate::driver::ledger::Ledger;
use crate::error::LedgerError;
use crate::model::transfer::{Receipt, Transfer};
use crate::observe::op_span;
use crate::plan::{params, try_plan, CallError, Ctx, Plan, Sql};
use crate::protocol::batch::Prepared;
use crate::protocol::{self, KEY_CONSTRAINT};
use crate::stats::Counters;

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
        self.ctx().refuse_batches_on_citus(operation)
    }

    /// Counts every item as one operation (and a failed batch as one failure).
    fn record_batch(
        &self,
        results: Result<Vec<Result<Receipt, LedgerError>>, LedgerError>,
    ) -> Result<Vec<Result<Receipt, LedgerError>>, LedgerError> {
        record_batch(&self.inner.counters, results)
    }

    /// The pooled batch path without counting: `keys` (one per item) overrides the items' keys
    /// (the combiner gives each queued transfer its key when it is queued).
    pub(crate) fn run_batch(
        &self,
        items: &[Transfer],
        keys: Option<&[String]>,
    ) -> Result<Vec<Result<Receipt, LedgerError>>, LedgerError> {
        self.run(plan(&self.ctx(), items, keys, Shortcut::SingleTransfer))
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
        self.run_in(tx, plan(&self.ctx(), items, None, Shortcut::None))
    }
}

/// Counts every item of a batch as one operation (and a failed batch as one failure).
fn record_batch(
    counters: &Counters,
    results: Result<Vec<Result<Receipt, LedgerError>>, LedgerError>,
) -> Result<Vec<Result<Receipt, LedgerError>>, LedgerError> {
    match results {
        Ok(results) => Ok(results.into_iter().map(|r| counters.record(r)).collect()),
        Err(e) => counters.record(Err(e)),
    }
}

/// Whether a batch of one item goes through the single-transfer function.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shortcut {
    /// Yes: it does less work for one item, with the same outcome (pooled batches).
    SingleTransfer,
    /// No: in a caller's transaction the batch is one statement as documented.
    None,
}

/// The parameter types of `transfer_batch()`.
const TYPES: [Type; 12] = [
    Type::INT8_ARRAY,
    Type::INT8_ARRAY,
    Type::NUMERIC_ARRAY,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::INT2,
    Type::INT4,
    Type::INT8_ARRAY,
    Type::INT4_ARRAY,
    Type::INT4_ARRAY,
    Type::BOOL_ARRAY,
    Type::JSONB_ARRAY,
];

/// A batch: its items validated (a refusal is that item's result), then one call of
/// `transfer_batch()` for the rest; `keys` (one per item) overrides the items' keys.
pub(crate) fn plan(
    ctx: &Ctx,
    items: &[Transfer],
    keys: Option<&[String]>,
    shortcut: Shortcut,
) -> Plan<Vec<Result<Receipt, LedgerError>>> {
    let mut prepared = try_plan!(Prepared::new(items, keys));
    if prepared.is_empty() {
        return Plan::done(Ok(prepared.finish(None, false)));
    }
    if let ([i], Shortcut::SingleTransfer) = (&prepared.arrays.sent[..], shortcut) {
        // One item: the single-transfer function does less work for it, with the same
        // outcome; what would fail a whole batch still fails it as a whole.
        let i = *i;
        let key = prepared.arrays.key[0].clone();
        return crate::ops::one_transfer::plan(ctx, &items[i], key)
            .into_result()
            .map(move |result| match result {
                Err(
                    e @ (LedgerError::LockUnavailable { .. }
                    | LedgerError::Database(_)
                    | LedgerError::Pool(_)
                    | LedgerError::AsyncPool(_)
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
            })
            .and_then(Plan::done);
    }
    let (mode, timeout_ms) = protocol::lock_params(ctx.lock_wait);
    let a = &prepared.arrays;
    let params = params![
        a.from.clone(),
        a.to.clone(),
        a.amount.clone(),
        a.key.clone(),
        a.memo.clone(),
        mode,
        timeout_ms,
        a.union.clone(),
        a.from_pos.clone(),
        a.to_pos.clone(),
        a.up_to.clone(),
        a.metadata.clone(),
    ];
    Plan::call(Sql::typed(protocol::batch::SQL, params, &TYPES), Some(KEY_CONSTRAINT), move |answer| {
        Plan::done(match answer {
            Ok(answer) => Ok(prepared.finish(Some(&answer.row), answer.maybe_applied)),
            Err(CallError::Failed(e)) => Err(protocol::transfer::metadata_as_invalid_input(e)),
            Err(CallError::Unknown(source)) => {
                Err(LedgerError::BatchOutcomeUnknown { idempotency_keys: prepared.keys(), source: Arc::new(source) })
            }
        })
    })
}

#[cfg(feature = "aio")]
impl crate::aio::Ledger {
    /// [`Ledger::transfer_batch`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::transfer_batch`].
    pub async fn transfer_batch(&self, items: &[Transfer]) -> Result<Vec<Result<Receipt, LedgerError>>, LedgerError> {
        let span = op_span!(async "transfer_batch", items = items.len(), lock_wait = %self.inner.lock_wait);
        span.run(async {
            self.ctx().refuse_batches_on_citus("transfer_batch")?;
            let results = self.run(plan(&self.ctx(), items, None, Shortcut::SingleTransfer)).await;
            record_batch(&self.inner.counters, results)
        })
        .await
    }

    /// [`Ledger::transfer_batch_in`], awaited, in the caller's transaction.
    ///
    /// # Errors
    /// As [`Ledger::transfer_batch_in`].
    pub async fn transfer_batch_in(
        &self,
        tx: &mut tokio_postgres::Transaction<'_>,
        items: &[Transfer],
    ) -> Result<Vec<Result<Receipt, LedgerError>>, LedgerError> {
        let span = op_span!(async "transfer_batch_in", items = items.len(), lock_wait = %self.inner.lock_wait);
        span.run(async {
            self.ctx().refuse_batches_on_citus("transfer_batch_in")?;
            let results = self.run_in(tx, plan(&self.ctx(), items, None, Shortcut::None)).await;
            record_batch(&self.inner.counters, results)
        })
        .await
    }
}
