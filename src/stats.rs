//! Counters a backend can export: operations by outcome, retries, lock refusals, pool waits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::LedgerError;

/// A snapshot of a [`Ledger`](crate::Ledger)'s counters since it was built (shared by its
/// clones). Counts money-moving operations (transfers, holds, captures, voids) in the pooled
/// and `_in` forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Operations that succeeded (replays included).
    pub succeeded: u64,
    /// Operations refused by a rule (funds, floor, currency, key conflict, hold state, input);
    /// nothing was changed.
    pub refused: u64,
    /// Operations refused because a lock was not available under the `LockWait` policy.
    pub lock_unavailable: u64,
    /// Operations that failed otherwise (database, pool, outcome unknown, a call on an async
    /// runtime's thread).
    pub failed: u64,
    /// Attempts repeated after a transient error or a lost idempotency-key race.
    pub retries: u64,
    /// Connection checkouts (by any ledger call) that waited for the pool: longer than
    /// [`POOL_WAIT_THRESHOLD`], because no idle connection was there and one had to be opened
    /// or given back. A rising count means the pool is too small for the load.
    pub pool_waits: u64,
    /// Total time spent in those waits, in microseconds.
    pub pool_wait_micros: u64,
    /// Transfers whose lock statement waited longer than [`LOCK_WAIT_THRESHOLD`] for rows
    /// another transaction held, as timed by the server-side function. Counted for
    /// [`Ledger::transfer`](crate::Ledger::transfer) and `transfer_in` (the hottest path; not
    /// yet for holds, captures, batches or postings, nor in Citus mode).
    pub lock_waits: u64,
    /// Total time spent in those waits, in microseconds.
    pub lock_wait_micros: u64,
}

/// A transfer whose lock statement takes longer than this counts as a lock wait. An uncontended
/// lock of two rows takes tens of microseconds, but the first call of the transfer function on
/// a connection also plans the statement there (seen above 1 ms on this 2-core machine), which
/// this threshold keeps out of the count.
pub const LOCK_WAIT_THRESHOLD: Duration = Duration::from_millis(5);

/// A checkout that takes longer than this counts as a pool wait (taking an idle connection
/// takes a few microseconds).
pub const POOL_WAIT_THRESHOLD: Duration = Duration::from_millis(1);

#[derive(Debug, Default)]
pub(crate) struct Counters {
    succeeded: AtomicU64,
    refused: AtomicU64,
    lock_unavailable: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
    pool_waits: AtomicU64,
    pool_wait_micros: AtomicU64,
    lock_waits: AtomicU64,
    lock_wait_micros: AtomicU64,
}

impl Counters {
    /// Counts the lock wait a transfer's outcome row reports (`lock_wait_us`, absent or NULL
    /// when it answered before locking), and records it in the operation's span.
    pub(crate) fn lock_waited(&self, row: &postgres::Row) {
        let Ok(Some(micros)) = row.try_get::<_, Option<i64>>("lock_wait_us") else {
            return;
        };
        crate::observe::lock_wait(micros);
        let micros = u64::try_from(micros).unwrap_or(0);
        if micros > LOCK_WAIT_THRESHOLD.as_micros() as u64 {
            self.lock_waits.fetch_add(1, Ordering::Relaxed);
            self.lock_wait_micros.fetch_add(micros, Ordering::Relaxed);
        }
    }

    pub(crate) fn checked_out(&self, waited: Duration) {
        if waited > POOL_WAIT_THRESHOLD {
            self.pool_waits.fetch_add(1, Ordering::Relaxed);
            let micros = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
            self.pool_wait_micros.fetch_add(micros, Ordering::Relaxed);
        }
    }

    pub(crate) fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one finished operation by its outcome and passes the outcome on.
    pub(crate) fn record<T>(&self, result: Result<T, LedgerError>) -> Result<T, LedgerError> {
        let counter = match &result {
            Ok(_) => &self.succeeded,
            Err(LedgerError::LockUnavailable { .. }) => &self.lock_unavailable,
            Err(
                LedgerError::Database(_)
                | LedgerError::Pool(_)
                | LedgerError::OutcomeUnknown { .. }
                | LedgerError::HoldOutcomeUnknown { .. }
                | LedgerError::BatchOutcomeUnknown { .. }
                | LedgerError::BatchFailed { .. }
                | LedgerError::ConstraintViolation { .. }
                | LedgerError::SchemaTooNew { .. }
                | LedgerError::SchemaOutdated { .. }
                | LedgerError::AsyncRuntime,
            ) => &self.failed,
            Err(_) => &self.refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            succeeded: get(&self.succeeded),
            refused: get(&self.refused),
            lock_unavailable: get(&self.lock_unavailable),
            failed: get(&self.failed),
            retries: get(&self.retries),
            pool_waits: get(&self.pool_waits),
            pool_wait_micros: get(&self.pool_wait_micros),
            lock_waits: get(&self.lock_waits),
            lock_wait_micros: get(&self.lock_wait_micros),
        }
    }
}
