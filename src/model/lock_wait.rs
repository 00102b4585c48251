//! [`LockWait`]: what a call does when a row it must lock is locked by another transaction.

use std::fmt;
use std::time::Duration;

/// What a transfer does when an account row it needs is locked by another transaction.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LockWait {
    /// Wait until the lock is released (the default). Ordered locking makes this safe: the wait
    /// can never be part of a deadlock between ledger operations.
    #[default]
    Block,
    /// Do not wait: [`LedgerError::LockUnavailable`](crate::LedgerError::LockUnavailable) at once.
    NoWait,
    /// Wait at most this long (PostgreSQL's `lock_timeout`, per transaction), then
    /// [`LedgerError::LockUnavailable`](crate::LedgerError::LockUnavailable). Rounded up to whole milliseconds, at least 1 ms.
    Timeout(Duration),
}

impl LockWait {
    /// The timeout in whole milliseconds as PostgreSQL's `lock_timeout` takes it: rounded up,
    /// at least 1; 0 for the policies without one.
    pub(crate) fn timeout_ms(self) -> i32 {
        match self {
            LockWait::Block | LockWait::NoWait => 0,
            LockWait::Timeout(d) => d.as_nanos().div_ceil(1_000_000).clamp(1, i32::MAX as u128) as i32,
        }
    }
}

impl fmt::Display for LockWait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockWait::Block => f.write_str("block"),
            LockWait::NoWait => f.write_str("nowait"),
            LockWait::Timeout(d) => write!(f, "timeout {}ms", self.timeout_ms().max(d.as_millis() as i32)),
        }
    }
}
