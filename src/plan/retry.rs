//! The retry rules, once, with no I/O: what a failed attempt means and how long to wait before
//! the next. Each door sends, sleeps (a thread sleep, or a tokio timer) and asks [`Retry`] or
//! [`Backoff`] what to do next.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use postgres::error::SqlState;

use crate::error::{from_db, is_transient, LedgerError};
use crate::limits::{BACKOFF_MAX, BACKOFF_MIN};
use crate::model::lock_wait::LockWait;
use crate::plan::{Answer, CallError};

/// Bounded retries with jittered exponential backoff. Waiting happens outside any transaction,
/// so no lock is held meanwhile.
pub(crate) struct Backoff {
    retries_left: u32,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(max_retries: u32) -> Self {
        Backoff { retries_left: max_retries, next: BACKOFF_MIN }
    }

    /// How long to wait before the next attempt; `None` when no retry is left.
    pub(crate) fn next_delay(&mut self) -> Option<Duration> {
        if self.retries_left == 0 {
            return None;
        }
        self.retries_left -= 1;
        let delay = jitter(self.next);
        self.next = (self.next * 2).min(BACKOFF_MAX);
        Some(delay)
    }
}

/// A random duration in [d/2, d], so that clients that failed together do not retry together.
fn jitter(d: Duration) -> Duration {
    let random = RandomState::new().hash_one(std::time::Instant::now());
    let half = d / 2;
    half + Duration::from_nanos(random % (half.as_nanos() as u64 + 1))
}

/// What an attempt's database error means for the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// The [`LockWait`](crate::LockWait) policy refused to wait for a row lock: returned at once.
    LockRefused,
    /// A concurrent call with the same idempotency key won the race: a retry replays it.
    KeyRace,
    /// Serialization failure, deadlock, lost connection, server restart: worth another attempt.
    Transient,
    /// Anything else: the call's answer.
    Final,
}

/// Classifies a database error of a call whose key's unique constraint is `key_constraint`.
pub(crate) fn classify(error: &postgres::Error, key_constraint: Option<&str>) -> ErrorClass {
    if error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
        return ErrorClass::LockRefused;
    }
    if error.code() == Some(&SqlState::UNIQUE_VIOLATION)
        && key_constraint.is_some()
        && error.as_db_error().and_then(|d| d.constraint()) == key_constraint
    {
        return ErrorClass::KeyRace;
    }
    if is_transient(error) {
        ErrorClass::Transient
    } else {
        ErrorClass::Final
    }
}

/// Whether the server answered a sent statement with a statement-level error: then the
/// statement's implicit transaction certainly rolled back. Anything else after sending (a reset
/// or closed socket, a FATAL termination) leaves open whether it committed.
pub(crate) fn rolled_back(error: &postgres::Error) -> bool {
    error.as_db_error().is_some_and(|db| db.severity() == "ERROR")
}

/// The statement an answer that rests on an earlier commit waits with until everything
/// committed so far is as durable as a commit of this session would be: with a synchronous
/// standby, until the standby has it.
///
/// An answer that rests on an earlier commit (a replay, or this call's own earlier attempt whose
/// answer was lost) was never waited for by this call. If that commit's wait for the synchronous
/// standby was cancelled (its backend terminated: PostgreSQL warns that such a transaction "has
/// already committed locally, but might not have been replicated to the standby"), it is visible
/// on the primary yet may be missing on the standby, and acknowledging it would lose it on
/// failover. A transaction that writes WAL commits with a record later than that commit and
/// waits for the standby like any commit; this one writes the smallest WAL record a role without
/// privileges can: a transactional logical-decoding message (prefix `wallet_ledger`, which
/// logical decoding consumers see and can ignore). A transaction that only takes a transaction
/// id writes no WAL and does not wait, so it would not do (`docs/design.md`, "Idempotency,
/// retries, and the ambiguous commit").
pub(crate) const DURABLE_SQL: &str = "SELECT pg_logical_emit_message(true, 'wallet_ledger', 'durable')";

/// The state of one ledger function call across its attempts.
pub(crate) struct Retry {
    backoff: Backoff,
    key_constraint: Option<&'static str>,
    lock_wait: LockWait,
    /// The error of the first attempt that may have committed before its answer was lost. Once
    /// there is one, no exit without an answer can claim that nothing was applied.
    ambiguity: Option<postgres::Error>,
    previous: Option<postgres::Error>,
    attempts: u32,
}

/// What to do after a failed attempt.
pub(crate) enum Next {
    /// Wait this long, then attempt again.
    Again(Duration),
    /// Give up with this.
    Stop(CallError),
}

impl Retry {
    pub(crate) fn new(max_retries: u32, key_constraint: Option<&'static str>, lock_wait: LockWait) -> Retry {
        Retry {
            backoff: Backoff::new(max_retries),
            key_constraint,
            lock_wait,
            ambiguity: None,
            previous: None,
            attempts: 0,
        }
    }

    /// Counts an attempt that is about to start, and traces it with the error that made the
    /// previous attempt fail.
    pub(crate) fn start(&mut self) {
        self.attempts += 1;
        crate::observe::attempt(self.attempts, self.previous.as_ref());
    }

    /// Whether an earlier attempt of this call may have committed: an answer then rests on that
    /// commit, not on this attempt's own, and must wait for durability ([`DURABLE_SQL`]).
    pub(crate) fn after_lost_answer(&self) -> bool {
        self.ambiguity.is_some()
    }

    /// The attempt answered with `row`.
    pub(crate) fn answered(self, row: postgres::Row) -> Answer {
        Answer { row, maybe_applied: self.ambiguity.is_some() }
    }

    /// The attempt failed before the database could run it (no connection from the pool).
    pub(crate) fn refused(self, e: LedgerError) -> CallError {
        self.settle(e)
    }

    /// The attempt failed with `error`; `sent`: after the statement was sent, so it may have
    /// committed unless the server said it rolled back.
    pub(crate) fn failed(&mut self, error: postgres::Error, sent: bool) -> Next {
        match classify(&error, self.key_constraint) {
            ErrorClass::LockRefused => {
                let policy = self.lock_wait.to_string();
                return Next::Stop(self.take_settle(LedgerError::LockUnavailable { policy, source: error }));
            }
            ErrorClass::Final => return Next::Stop(self.take_settle(from_db(error))),
            ErrorClass::KeyRace | ErrorClass::Transient => {}
        }
        let Some(delay) = self.backoff.next_delay() else {
            return Next::Stop(match self.ambiguity.take() {
                Some(first) => CallError::Unknown(first),
                None if sent && !rolled_back(&error) => CallError::Unknown(error),
                None => CallError::Failed(LedgerError::Database(error)),
            });
        };
        if sent && !rolled_back(&error) && self.ambiguity.is_none() {
            self.ambiguity = Some(error);
        } else {
            self.previous = Some(error);
        }
        Next::Again(delay)
    }

    fn take_settle(&mut self, failure: LedgerError) -> CallError {
        match self.ambiguity.take() {
            Some(first) => CallError::Unknown(first),
            None => CallError::Failed(failure),
        }
    }

    /// A definite failure, unless an earlier attempt may have committed.
    fn settle(mut self, failure: LedgerError) -> CallError {
        self.take_settle(failure)
    }
}

/// The retries of a read (or a write that is safe to repeat): transient database errors are
/// retried with backoff, anything else is the answer.
pub(crate) struct ReadRetry {
    backoff: Backoff,
}

impl ReadRetry {
    pub(crate) fn new(max_retries: u32) -> ReadRetry {
        ReadRetry { backoff: Backoff::new(max_retries) }
    }

    /// After a failed attempt: the delay before the next, or `None` to give up with `e`.
    pub(crate) fn failed(&mut self, e: &LedgerError) -> Option<Duration> {
        if e.is_transient_database() {
            self.backoff.next_delay()
        } else {
            None
        }
    }
}

/// After a failed call in a savepoint of the caller's transaction: what the door does next.
pub(crate) enum SavepointNext {
    /// Give up with this error.
    Stop(LedgerError),
    /// A concurrent call with the same key won the race: the door reads the transaction's
    /// isolation ([`ISOLATION_SQL`], [`check_read_committed`]) and then asks
    /// [`SavepointRetry::after_key_race`] whether to attempt again.
    KeyRace,
}

/// The savepoint retry rules: only an idempotency-key race is retried there (any other error is
/// the caller's transaction's to handle).
pub(crate) struct SavepointRetry {
    backoff: Backoff,
    key_constraint: Option<&'static str>,
    lock_wait: LockWait,
    previous: Option<postgres::Error>,
    attempts: u32,
}

impl SavepointRetry {
    pub(crate) fn new(max_retries: u32, key_constraint: Option<&'static str>, lock_wait: LockWait) -> SavepointRetry {
        SavepointRetry { backoff: Backoff::new(max_retries), key_constraint, lock_wait, previous: None, attempts: 0 }
    }

    /// Counts an attempt that is about to start, and traces it with the error that made the
    /// previous attempt fail.
    pub(crate) fn start(&mut self) {
        self.attempts += 1;
        crate::observe::attempt(self.attempts, self.previous.as_ref());
    }

    /// The statement failed with `error` (its savepoint rolled back).
    pub(crate) fn failed(&mut self, error: postgres::Error) -> SavepointNext {
        match classify(&error, self.key_constraint) {
            ErrorClass::LockRefused => {
                SavepointNext::Stop(LedgerError::LockUnavailable { policy: self.lock_wait.to_string(), source: error })
            }
            ErrorClass::KeyRace => {
                self.previous = Some(error);
                SavepointNext::KeyRace
            }
            ErrorClass::Transient | ErrorClass::Final => SavepointNext::Stop(from_db(error)),
        }
    }

    /// After a key race in a READ COMMITTED transaction: how long to wait before the next
    /// attempt, or the race's error when no retry is left.
    pub(crate) fn after_key_race(&mut self) -> Result<Duration, LedgerError> {
        match self.backoff.next_delay() {
            Some(delay) => Ok(delay),
            None => Err(match self.previous.take() {
                Some(error) => from_db(error),
                None => LedgerError::InvalidInput { field: "savepoint", reason: "no error to report".into() },
            }),
        }
    }
}

/// A key race can be replayed only in a READ COMMITTED transaction, whose next statement sees
/// the winner's commit.
pub(crate) fn check_read_committed(isolation: &str) -> Result<(), LedgerError> {
    if isolation == "read committed" {
        return Ok(());
    }
    Err(LedgerError::InvalidInput {
        field: "transaction isolation",
        reason: format!(
            "{isolation}: a concurrent call with the same idempotency key committed after this \
             transaction's snapshot; idempotency keys replay only in READ COMMITTED transactions \
             (retry the whole transaction)"
        ),
    })
}

/// The query that reads the caller's transaction's isolation level.
pub(crate) const ISOLATION_SQL: &str = "SELECT current_setting('transaction_isolation')";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_growing() {
        let mut b = Backoff::new(3);
        assert!(b.next_delay().is_some());
        assert!(b.next_delay().is_some());
        assert!(b.next_delay().is_some());
        assert!(b.next_delay().is_none());
        assert_eq!(b.next, BACKOFF_MIN * 8);
    }

    #[test]
    fn jitter_stays_within_half_and_full() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(10));
            assert!(j >= Duration::from_millis(5) && j <= Duration::from_millis(10));
        }
    }
}
