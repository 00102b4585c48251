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
//! Each caller waits parked on its own thread and is woken alone: when its result is in, or when
//! it is the first queued caller and a collector is wanted. (Waking every waiting caller on
//! every hand-over cost a context switch per caller on 2 cores.)
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
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, Thread};
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
    /// transfers as were queued when the previous batch was taken (the callers of a batch come
    /// back with their next transfer; the first leader waits for `max_batch`), so under steady
    /// load batches stay full, and a lone caller waits only once.
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

/// A transfer waiting in the queue, and the caller to wake when its result is in.
struct Queued {
    ticket: u64,
    transfer: Transfer,
    key: String,
    since: Instant,
    caller: Thread,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    /// The caller collecting the next batch, if any (at most one at a time).
    collector: Option<Thread>,
    /// Whether a batch taken from the queue is being applied. One at a time: two at once was
    /// measured and was slower (docs/design.md, "The combiner").
    running: bool,
    /// Transfers queued when the last batch was taken: how many are likely to come back, which
    /// the next collector waits for (clamped to 1..=`max_batch`).
    last_batch: usize,
    /// Results not yet picked up by their callers, by ticket.
    done: HashMap<u64, Result<Receipt, LedgerError>>,
    next_ticket: u64,
}

impl State {
    /// How many queued transfers the collector waits for (at most `max_wait`).
    fn target(&self, max_batch: usize) -> usize {
        self.last_batch.clamp(1, max_batch)
    }

    /// Whether a queued caller may start collecting the next batch.
    fn collector_wanted(&self) -> bool {
        self.collector.is_none() && !self.running && !self.queue.is_empty()
    }

    /// Wakes the first queued caller when a collector is wanted (it checks again, under the
    /// lock, and takes the role).
    fn wake_collector(&self) {
        if self.collector_wanted() {
            if let Some(front) = self.queue.front() {
                front.caller.unpark();
            }
        }
    }
}

/// The queue and its one lock; shared by the clones of a [`Ledger`].
pub(crate) struct Combiner {
    config: CombineConfig,
    state: Mutex<State>,
}

impl Combiner {
    pub(crate) fn new(config: CombineConfig) -> Self {
        config.check();
        // Until a first hand-over has counted the callers, a collector waits for a full batch
        // (at most `max_wait`): a lone caller waits once.
        let state = State { last_batch: config.max_batch, ..State::default() };
        Combiner { config, state: Mutex::new(state) }
    }

    pub(crate) fn config(&self) -> CombineConfig {
        self.config
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned lock still holds consistent state.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits (lock released) until this thread is unparked or `timeout` passes, then relocks.
    /// A wake-up may be spurious: callers re-check the state.
    fn park<'a>(&'a self, state: MutexGuard<'a, State>, timeout: Option<Duration>) -> MutexGuard<'a, State> {
        drop(state);
        match timeout {
            Some(t) => thread::park_timeout(t),
            None => thread::park(),
        }
        self.lock()
    }

    /// Queues `t` and returns its own result, collecting and applying batches when it is the
    /// caller's turn.
    pub(crate) fn transfer(&self, ledger: &Ledger, t: &Transfer) -> Result<Receipt, LedgerError> {
        t.validate()?;
        let key = t.idempotency_key.clone().unwrap_or_else(internal_key);
        let mut state = self.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queue.push_back(Queued {
            ticket,
            transfer: t.clone(),
            key,
            since: Instant::now(),
            caller: thread::current(),
        });
        if let Some(collector) = &state.collector {
            if state.queue.len() >= state.target(self.config.max_batch) {
                collector.unpark();
            }
        }
        loop {
            if let Some(result) = state.done.remove(&ticket) {
                return result;
            }
            if state.collector_wanted() && state.queue.iter().any(|q| q.ticket == ticket) {
                state = self.lead(ledger, state);
                continue;
            }
            state = self.park(state, None);
        }
    }

    /// Collects a batch (bounded by `max_batch` and `max_wait`), hands the collector's role on,
    /// applies the batch without holding the queue's lock and delivers every result.
    fn lead<'a>(&'a self, ledger: &Ledger, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        state.collector = Some(thread::current());
        while let Some(oldest) = state.queue.front().map(|q| q.since) {
            let waited = oldest.elapsed();
            if state.queue.len() >= state.target(self.config.max_batch) || waited >= self.config.max_wait {
                break;
            }
            state = self.park(state, Some(self.config.max_wait - waited));
        }
        let take = state.queue.len().min(self.config.max_batch);
        state.last_batch = state.queue.len();
        let batch: Vec<Queued> = state.queue.drain(..take).collect();
        state.collector = None;
        state.running = true;
        state.wake_collector();
        drop(state);

        let results = catch_unwind(AssertUnwindSafe(|| apply(ledger, &batch)));

        let mut state = self.lock();
        state.running = false;
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
        let me = thread::current().id();
        for q in batch.iter().filter(|q| q.caller.id() != me) {
            q.caller.unpark();
        }
        state.wake_collector();
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
