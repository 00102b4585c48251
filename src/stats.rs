//! Counters a backend can export: operations by outcome, retries, lock refusals.

use std::sync::atomic::{AtomicU64, Ordering};

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
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    succeeded: AtomicU64,
    refused: AtomicU64,
    lock_unavailable: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
}

impl Counters {
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
                | LedgerError::SchemaTooNew { .. },
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
        }
    }
}
