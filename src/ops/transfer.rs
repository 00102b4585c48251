//! [`Ledger::transfer`]: validate in Rust, then one prepared statement that runs
//! `wallet_ledger.transfer()` (`sql/0002_transfer.sql`) as one implicit transaction.

use std::sync::Arc;

use postgres::types::Type;

use crate::driver::async_guard::refuse_on_runtime_thread;
use crate::driver::ledger::{Combined, Ledger};
use crate::driver::observe::op_span;
use crate::error::LedgerError;
use crate::model::metadata::stored_metadata;
use crate::model::transfer::{internal_key, Receipt, Transfer};
use crate::plan::{keyed, params, Ctx, Plan, Sql};
use crate::protocol::{self, transfer::outcome, KEY_CONSTRAINT};

impl Ledger {
    /// Moves `t.amount` from `t.from` to `t.to`, atomically, with both account rows locked in
    /// ascending id order for the time of one server-side function call.
    ///
    /// Transient failures (serialization, deadlock, a lost connection, a concurrent call with the
    /// same key) are retried up to `max_retries` times with backoff. Every attempt carries an
    /// idempotency key (the caller's, or an internal one), so a retry after a lost connection
    /// never applies the transfer twice.
    ///
    /// Concurrent calls are combined by default ([`LedgerBuilder::combining`](crate::LedgerBuilder::combining)):
    /// a call that finds the ledger's calls in flight busy is applied together with the others
    /// that queued meanwhile, in one transaction; a lone call goes straight to the server. Each
    /// caller still gets its own receipt or refusal, as alone.
    ///
    /// # Errors
    /// Refusals change nothing: [`LedgerError::InvalidAmount`], [`LedgerError::SameAccount`],
    /// [`LedgerError::AccountNotFound`], [`LedgerError::CurrencyMismatch`],
    /// [`LedgerError::InsufficientFunds`], [`LedgerError::IdempotencyConflict`],
    /// [`LedgerError::LockUnavailable`] (per the [`LockWait`](crate::LockWait) policy),
    /// [`LedgerError::InvalidInput`]. [`LedgerError::OutcomeUnknown`] when the connection was lost
    /// after sending and retries ran out: repeat with the key it names. Combined, a
    /// batch that failed as a whole gives every caller in it [`LedgerError::BatchFailed`] (nothing
    /// applied) or [`LedgerError::BatchOutcomeUnknown`] (with the caller's own key).
    pub fn transfer(&self, t: &Transfer) -> Result<Receipt, LedgerError> {
        let span = op_span!("transfer", from = t.from.0, to = t.to.0, amount = %t.amount, key = t.idempotency_key.as_deref(), lock_wait = %self.inner.lock_wait);
        span.finish(self.inner.counters.record(self.run_transfer(t)))
    }

    fn run_transfer(&self, t: &Transfer) -> Result<Receipt, LedgerError> {
        let key = prepare(&self.ctx(), t)?;
        match &self.inner.combiner {
            Some(combiner) => {
                // Before queueing: a caller on an async runtime's thread must neither park that
                // thread waiting for its batch nor lead a batch whose checkout refuses it,
                // failing the other callers' transfers with it.
                refuse_on_runtime_thread()?;
                combiner.submit((t.clone(), key), &|(t, key)| self.run_transfer_keyed(t, key), &|batch| {
                    apply_combined(self, batch)
                })
            }
            None => self.run_transfer_keyed(t, &key),
        }
    }

    /// The single-transfer path with its key chosen (the caller's, or an internal one); `t` is
    /// validated.
    pub(crate) fn run_transfer_keyed(&self, t: &Transfer, key: &str) -> Result<Receipt, LedgerError> {
        self.run(plan(&self.ctx(), t, key.to_string()))
    }
}

/// Checks `t` before anything is sent, and chooses its key: the caller's, or an internal one.
pub(crate) fn prepare(ctx: &Ctx, t: &Transfer) -> Result<String, LedgerError> {
    t.validate()?;
    if t.up_to_available {
        ctx.refuse_in_citus("a transfer up to the available balance")?;
    }
    ctx.refuse_metadata_on_citus("a transfer with metadata", t.metadata.as_ref())?;
    Ok(t.idempotency_key.clone().unwrap_or_else(internal_key))
}

/// The parameter types of `transfer()` (`from, to, amount, key, memo, lock_mode, timeout_ms`,
/// and `metadata` for the forms that take it).
const TYPES: [Type; 8] =
    [Type::INT8, Type::INT8, Type::NUMERIC, Type::TEXT, Type::TEXT, Type::INT2, Type::INT4, Type::JSONB];

/// One transfer, prepared (`key` from [`prepare`]): one call of `transfer()`.
pub(crate) fn plan(ctx: &Ctx, t: &Transfer, key: String) -> Plan<Receipt> {
    let (mode, timeout_ms) = protocol::lock_params(ctx.lock_wait);
    let count = protocol::transfer::parameter_count(t);
    let mut params = params![t.from.0, t.to.0, t.amount, key.clone(), t.memo.clone(), mode, timeout_ms];
    if count == 8 {
        params.push(Box::new(stored_metadata(t.metadata.as_ref()).cloned()));
    }
    let sql = Sql::typed(protocol::transfer::statement(t), params, &TYPES[..count]);
    let t = t.clone();
    keyed(sql, KEY_CONSTRAINT, key, t.amount, move |answer, key| {
        outcome(&t, key, &answer.row).map(|mut receipt| {
            // A replay of our own earlier, unanswered attempt is not a replay to the caller.
            receipt.replayed &= !answer.maybe_applied && t.idempotency_key.is_some();
            receipt
        })
    })
}

/// Applies one combined batch and gives each queued transfer its own result, as alone:
///
/// - a refusal of one transfer (funds, floor, currency, key conflict) is that caller's alone;
/// - a batch of one goes through the single-transfer function, which does less work than the
///   batch function for one item: a lone caller pays nothing for the combiner but the queue;
/// - when the batch fails as a whole (a database or pool error after retries), no transfer of
///   it was applied and every caller gets [`LedgerError::BatchFailed`] sharing the error, or
///   [`LedgerError::BatchOutcomeUnknown`] naming its own key when the outcome is open;
/// - when the batch's lock is refused by the [`LockWait`](crate::LockWait) policy (one locked
///   account refuses the whole statement), each transfer runs alone, so each caller gets the
///   lock refusal it would have got alone, and only if its own accounts were locked.
fn apply_combined(ledger: &Ledger, batch: &[Combined]) -> Vec<Result<Receipt, LedgerError>> {
    if let [(t, key)] = batch {
        return vec![ledger.run_transfer_keyed(t, key)];
    }
    let items: Vec<Transfer> = batch.iter().map(|(t, _)| t.clone()).collect();
    let keys: Vec<String> = batch.iter().map(|(_, key)| key.clone()).collect();
    match ledger.run_batch(&items, Some(&keys)) {
        Ok(results) => results,
        Err(LedgerError::LockUnavailable { .. }) => {
            batch.iter().map(|(t, key)| ledger.run_transfer_keyed(t, key)).collect()
        }
        Err(LedgerError::BatchOutcomeUnknown { source, .. }) => keys
            .into_iter()
            .map(|key| {
                Err(LedgerError::BatchOutcomeUnknown { idempotency_keys: vec![key], source: Arc::clone(&source) })
            })
            .collect(),
        Err(e) => {
            let shared = Arc::new(e);
            batch.iter().map(|_| Err(LedgerError::BatchFailed { source: Arc::clone(&shared) })).collect()
        }
    }
}
