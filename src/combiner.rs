//! The combiner: in-process group commit for hot accounts (opt-in, [`CombineConfig`]).
//!
//! A transfer on a hot row waits for the previous transfer's commit to be flushed to the WAL
//! before it can lock the row: one flush per transfer per row is the bound of any per-transfer
//! locking scheme. With the combiner, concurrent [`Ledger::transfer`] calls are queued in the
//! process; one of the callers (the leader) takes the queue and applies it as one
//! [batch](Ledger::transfer_batch): one transaction, one ordered lock of every account, one
//! flush for all of them. Meanwhile the next transfers queue up behind it, so the batches grow
//! with the load by themselves.
//!
//! No thread or runtime is added: the leader is a caller's own thread, blocked in its own
//! `transfer` call anyway. Every caller gets its own result, as alone:
//!
//! - a refusal of one transfer (funds, floor, currency, key conflict) is that caller's alone;
//! - validation refusals are returned before queueing;
//! - when the batch fails as a whole (a database or pool error after retries), no transfer of
//!   it was applied and every caller gets [`LedgerError::BatchFailed`] sharing the error, or
//!   [`LedgerError::BatchOutcomeUnknown`] naming its own key when the connection was lost and
//!   the outcome is open;
//! - when the batch's lock is refused by the [`LockWait`](crate::LockWait) policy
//!   (`NoWait`/`Timeout`: one locked account refuses the whole statement), the leader runs each
//!   transfer of it alone, so each caller gets the lock refusal it would have got alone, and
//!   only if its own accounts were locked.

use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::LedgerError;
use crate::ledger::Ledger;
use crate::limits::BATCH_ITEMS_MAX;
use crate::transfer::{internal_key, Receipt, Transfer};

/// Settings of the combiner (see [`LedgerBuilder::combine`](crate::LedgerBuilder::combine)).
///
/// ```no_run
/// # fn main() -> Result<(), wallet_ledger::LedgerError> {
/// use std::time::Duration;
/// use wallet_ledger::{CombineConfig, Ledger};
///
/// let ledger = Ledger::builder("postgresql://app@localhost/payments")
///     .combine(CombineConfig { max_batch: 256, max_wait: Duration::from_micros(200) })
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CombineConfig {
    /// Most transfers applied in one batch (1 to [`BATCH_ITEMS_MAX`]). Default 128.
    pub max_batch: usize,
    /// How long a leader waits at most, from the moment the oldest queued transfer arrived, for
    /// more transfers before it applies what is queued. Default 500 µs. It waits for as many
    /// transfers as the previous batch had (the callers of a batch come back with their next
    /// transfer; the first leader waits for `max_batch`), so under steady load batches stay
    /// full, and a lone caller waits only once.
    /// Zero applies at once: batches still form, from the transfers that queue while the
    /// previous batch runs.
    pub max_wait: Duration,
}

impl Default for CombineConfig {
    fn default() -> Self {
        CombineConfig { max_batch: 128, max_wait: Duration::from_micros(500) }
    }
}

impl CombineConfig {
    /// Panics on a setting out of range (at build time rather than at the first transfer).
    pub(crate) fn check(&self) {
        assert!(
            (1..=BATCH_ITEMS_MAX).contains(&self.max_batch),
            "CombineConfig::max_batch must be 1 to {BATCH_ITEMS_MAX}, not {}",
            self.max_batch
        );
    }
}

/// A transfer waiting in the queue.
struct Queued {
    ticket: u64,
    transfer: Transfer,
    key: String,
    since: Instant,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    /// Whether some caller is leading (collecting or running a batch).
    leading: bool,
    /// Transfers in the last batch: how many to wait for in the next one.
    last_batch: usize,
    /// Results not yet picked up by their callers, by ticket.
    done: HashMap<u64, Result<Receipt, LedgerError>>,
    next_ticket: u64,
}

/// The queue and its one lock; shared by the clones of a [`Ledger`].
pub(crate) struct Combiner {
    config: CombineConfig,
    state: Mutex<State>,
    /// Signalled when results are delivered, leadership is free, or the queue is full.
    signal: Condvar,
}

impl Combiner {
    pub(crate) fn new(config: CombineConfig) -> Self {
        config.check();
        // The first leader waits for a full batch (at most `max_wait`); later ones for as many
        // as the batch before.
        let state = State { last_batch: config.max_batch, ..State::default() };
        Combiner { config, state: Mutex::new(state), signal: Condvar::new() }
    }

    pub(crate) fn config(&self) -> CombineConfig {
        self.config
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned lock still holds consistent state.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `t` and returns its own result, leading batches while no one else does.
    pub(crate) fn transfer(&self, ledger: &Ledger, t: &Transfer) -> Result<Receipt, LedgerError> {
        t.validate()?;
        let key = t.idempotency_key.clone().unwrap_or_else(internal_key);
        let mut state = self.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queue.push_back(Queued { ticket, transfer: t.clone(), key, since: Instant::now() });
        if state.queue.len() >= state.last_batch.clamp(1, self.config.max_batch) {
            self.signal.notify_all();
        }
        loop {
            if let Some(result) = state.done.remove(&ticket) {
                return result;
            }
            if !state.leading {
                state.leading = true;
                state = self.lead(ledger, state);
                continue;
            }
            state = self.signal.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Collects a batch (bounded by `max_batch` and `max_wait`), applies it without holding the
    /// queue's lock, delivers every result and hands leadership on.
    fn lead<'a>(&'a self, ledger: &Ledger, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let target = state.last_batch.clamp(1, self.config.max_batch);
        while let Some(oldest) = state.queue.front().map(|q| q.since) {
            let waited = oldest.elapsed();
            if state.queue.len() >= target || waited >= self.config.max_wait {
                break;
            }
            state = self
                .signal
                .wait_timeout(state, self.config.max_wait - waited)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
        let take = state.queue.len().min(self.config.max_batch);
        state.last_batch = take;
        let batch: Vec<Queued> = state.queue.drain(..take).collect();
        drop(state);
        let results = catch_unwind(AssertUnwindSafe(|| apply(ledger, &batch)));
        let mut state = self.lock();
        state.leading = false;
        let panic = match results {
            Ok(results) => {
                for (q, result) in batch.iter().zip(results) {
                    state.done.insert(q.ticket, result);
                }
                None
            }
            Err(panic) => {
                let shared = Arc::new(LedgerError::InvalidInput {
                    field: "combined batch",
                    reason: "the thread applying the batch panicked; nothing of it was applied".into(),
                });
                for q in &batch {
                    state.done.insert(q.ticket, Err(LedgerError::BatchFailed { source: Arc::clone(&shared) }));
                }
                Some(panic)
            }
        };
        self.signal.notify_all();
        if let Some(panic) = panic {
            drop(state);
            resume_unwind(panic);
        }
        state
    }
}

/// Applies one combined batch and gives each queued transfer its own result. A batch of one
/// goes through the single-transfer function, which does less work than the batch function
/// for one item: a lone caller pays nothing for the combiner but the queue.
fn apply(ledger: &Ledger, batch: &[Queued]) -> Vec<Result<Receipt, LedgerError>> {
    if let [q] = batch {
        return vec![ledger.run_transfer_keyed(&q.transfer, &q.key)];
    }
    let items: Vec<Transfer> = batch.iter().map(|q| q.transfer.clone()).collect();
    let keys: Vec<String> = batch.iter().map(|q| q.key.clone()).collect();
    match ledger.run_batch(&items, Some(&keys)) {
        Ok(results) => results,
        // One locked account refuses the whole batch's lock statement: run each alone, so that
        // only the transfers whose own accounts are locked are refused.
        Err(LedgerError::LockUnavailable { .. }) if batch.len() > 1 => batch.iter().map(|q| alone(ledger, q)).collect(),
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

/// One queued transfer alone, through the single-transfer path: the outcome it would have had
/// without the combiner.
fn alone(ledger: &Ledger, q: &Queued) -> Result<Receipt, LedgerError> {
    ledger.run_transfer_keyed(&q.transfer, &q.key)
}
