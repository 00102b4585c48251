//! [`Ledger::transfer`]: validate in Rust, then one prepared statement that runs
//! `wallet_ledger.transfer()` (`sql/0002_transfer.sql`) as one implicit transaction.

use std::sync::Arc;

use crate::driver::async_guard::refuse_on_runtime_thread;
use crate::driver::ledger::{Combined, Ledger};
use crate::error::LedgerError;
use crate::model::transfer::{Receipt, Transfer};
use crate::observe::op_span;
use crate::ops::batch::Shortcut;
use crate::ops::one_transfer::{plan, prepare};
use crate::plan::{Ctx, Plan};

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
                let lane = combiner.of([t.from.0, t.to.0]);
                lane.submit((t.clone(), key), &|(t, key)| self.run_transfer_keyed(t, key), &|batch| {
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
    let n = batch.len();
    ledger.run(combined_plan(&ledger.ctx(), batch)).unwrap_or_else(|e| {
        // The plan answers every failure per caller; this is only its type's other side.
        let shared = Arc::new(e);
        (0..n).map(|_| Err(LedgerError::BatchFailed { source: Arc::clone(&shared) })).collect()
    })
}

/// The plan of one combined batch, for both doors (see [`apply_combined`]): one result per
/// queued transfer, in order.
pub(crate) fn combined_plan(ctx: &Ctx, batch: &[Combined]) -> Plan<Vec<Result<Receipt, LedgerError>>> {
    if let [(t, key)] = batch {
        return plan(ctx, t, key.clone()).into_result().map(|result| vec![result]);
    }
    let items: Vec<Transfer> = batch.iter().map(|(t, _)| t.clone()).collect();
    let keys: Vec<String> = batch.iter().map(|(_, key)| key.clone()).collect();
    let (ctx_alone, alone) = (*ctx, batch.to_vec());
    crate::ops::batch::plan(ctx, &items, Some(&keys), Shortcut::SingleTransfer).into_result().and_then(move |result| {
        match result {
            Ok(results) => Plan::done(Ok(results)),
            Err(LedgerError::LockUnavailable { .. }) => each_alone(ctx_alone, alone),
            Err(LedgerError::BatchOutcomeUnknown { source, .. }) => Plan::done(Ok(keys
                .into_iter()
                .map(|key| {
                    Err(LedgerError::BatchOutcomeUnknown { idempotency_keys: vec![key], source: Arc::clone(&source) })
                })
                .collect())),
            Err(e) => {
                let shared = Arc::new(e);
                Plan::done(Ok(alone
                    .iter()
                    .map(|_| Err(LedgerError::BatchFailed { source: Arc::clone(&shared) }))
                    .collect()))
            }
        }
    })
}

/// Each queued transfer alone, one after the other.
fn each_alone(ctx: Ctx, batch: Vec<Combined>) -> Plan<Vec<Result<Receipt, LedgerError>>> {
    let mut all = Plan::done(Ok(Vec::with_capacity(batch.len())));
    for (t, key) in batch {
        all = all.and_then(move |mut results: Vec<Result<Receipt, LedgerError>>| {
            plan(&ctx, &t, key).into_result().map(move |result| {
                results.push(result);
                results
            })
        });
    }
    all
}

#[cfg(feature = "aio")]
impl crate::aio::Ledger {
    /// [`Ledger::transfer`], awaited: the same checks, retries, idempotency and errors.
    /// Concurrent calls from many tasks are combined by default, as the synchronous ledger
    /// combines threads' calls ([`aio::LedgerBuilder::combining`](crate::aio::LedgerBuilder::combining)).
    ///
    /// # Errors
    /// As [`Ledger::transfer`].
    pub async fn transfer(&self, t: &Transfer) -> Result<Receipt, LedgerError> {
        let span = op_span!(async "transfer", from = t.from.0, to = t.to.0, amount = %t.amount, key = t.idempotency_key.as_deref(), lock_wait = %self.inner.lock_wait);
        span.run(async { self.inner.counters.record(self.run_transfer(t).await) }).await
    }

    async fn run_transfer(&self, t: &Transfer) -> Result<Receipt, LedgerError> {
        let key = prepare(&self.ctx(), t)?;
        match &self.inner.combiner {
            Some(combiner) => combiner.submit(self, t.clone(), key, plan, combined_plan).await,
            None => self.run(plan(&self.ctx(), t, key)).await,
        }
    }
}
