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
    /// Operations that failed otherwise (database, pool, outcome unknown).
    pub failed: u64,
    /// Attempts repeated after a transient error or a lost idempotency-key race.
    pub retries: u64,
    /// Connection checkouts (by any ledger call) that waited for the pool: longer than
    /// [`POOL_WAIT_THRESHOLD`], because no idle connection was there and one had to be opened
    /// or given back. A rising count means the pool is too small for the load.
    pub pool_waits: u64,
    /// Total time spent in those waits, in microseconds.
    pub pool_wait_micros: u64,
}

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
}

impl Counters {
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
                | LedgerError::SchemaOutdated { .. },
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
        }
    }
}
