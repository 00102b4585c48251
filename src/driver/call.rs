//! One server-side ledger function call with the library's retry policy: transient errors and
//! idempotency-key races are retried with backoff, lock refusals are returned at once, and the
//! caller learns whether an earlier attempt may have been applied.

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::Row;

use crate::driver::ledger::Ledger;
use crate::driver::retry::Backoff;
use crate::error::{from_db, is_transient, LedgerError};
use crate::protocol::is_replay;
use crate::protocol::transfer::overflow_as_invalid_amount;

/// Why a call gave up.
pub(crate) enum CallError {
    /// Definitive: nothing was applied by this call.
    Failed(LedgerError),
    /// Retries ran out after a connection was lost with a request in flight: an attempt may
    /// have committed.
    Unknown(postgres::Error),
}

/// A call's answer: the function's row, and whether an earlier attempt of this call may have
/// committed before its answer was lost (so a "replayed" or "already done" answer may be our own).
pub(crate) struct Answer {
    pub(crate) row: Row,
    pub(crate) maybe_applied: bool,
}

impl Ledger {
    /// Runs `sql` (one `SELECT ... FROM wallet_ledger.fn(...)`, prepared per connection) with
    /// retries. `key_constraint` names the unique constraint whose violation means a concurrent
    /// call with the same idempotency key won the race: retrying then replays the winner.
    pub(crate) fn call(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
        key_constraint: Option<&str>,
    ) -> Result<Answer, CallError> {
        let mut backoff = Backoff::new(self.inner.max_retries);
        // The error of the first attempt that may have committed before its answer was lost.
        // Once there is one, no exit without an answer can claim that nothing was applied.
        let mut ambiguity: Option<postgres::Error> = None;
        let mut previous: Option<postgres::Error> = None;
        let mut n: u32 = 0;
        loop {
            n += 1;
            crate::driver::observe::attempt(n, previous.as_ref());
            let (error, sent) = match self.attempt(sql, params, ambiguity.is_some()) {
                Ok(row) => return Ok(Answer { row, maybe_applied: ambiguity.is_some() }),
                Err(Attempt::Failed(e)) => return Err(settle(ambiguity, e)),
                Err(Attempt::Retry { error, sent }) => (error, sent),
            };
            if error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
                let policy = self.inner.lock_wait.to_string();
                return Err(settle(ambiguity, LedgerError::LockUnavailable { policy, source: error }));
            }
            let key_race = error.code() == Some(&SqlState::UNIQUE_VIOLATION)
                && key_constraint.is_some()
                && error.as_db_error().and_then(|d| d.constraint()) == key_constraint;
            if !key_race && !is_transient(&error) {
                return Err(settle(ambiguity, from_db(error)));
            }
            self.inner.counters.retried();
            if !backoff.wait() {
                return Err(match ambiguity {
                    Some(first) => CallError::Unknown(first),
                    None if sent && !rolled_back(&error) => CallError::Unknown(error),
                    None => CallError::Failed(LedgerError::Database(error)),
                });
            }
            if sent && !rolled_back(&error) && ambiguity.is_none() {
                ambiguity = Some(error);
            } else {
                previous = Some(error);
            }
        }
    }

    /// [`call`](Self::call) for a request that carries an idempotency key and moves `amount`:
    /// an outcome retries could not settle is `OutcomeUnknown` naming the key to repeat it
    /// with, and a balance too large to represent is `InvalidAmount`.
    pub(crate) fn keyed_call(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
        key_constraint: &str,
        key: &str,
        amount: rust_decimal::Decimal,
    ) -> Result<Answer, LedgerError> {
        self.call(sql, params, Some(key_constraint)).map_err(|e| match e {
            CallError::Failed(e) => overflow_as_invalid_amount(e, amount),
            CallError::Unknown(source) => LedgerError::OutcomeUnknown { idempotency_key: key.to_string(), source },
        })
    }

    /// One attempt. `after_lost_answer`: an earlier attempt of this call may have committed.
    fn attempt(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
        after_lost_answer: bool,
    ) -> Result<Row, Attempt> {
        let mut conn = self.connection().map_err(Attempt::Failed)?;
        let statement = conn.statement(sql).map_err(|error| Attempt::Retry { error, sent: false })?;
        let row = conn.client().query_one(&statement, params).map_err(|error| Attempt::Retry { error, sent: true })?;
        if after_lost_answer || is_replay(&row) {
            // This answer rests on an earlier commit, not on this statement's own (a replay
            // writes nothing): a failure here leaves nothing of this attempt committed.
            wait_until_durable(conn.client()).map_err(|error| Attempt::Retry { error, sent: false })?;
        }
        Ok(row)
    }
}

/// Whether the server answered a sent statement with a statement-level error: then the
/// statement's implicit transaction certainly rolled back. Anything else after sending (a reset
/// or closed socket, a FATAL termination) leaves open whether it committed.
fn rolled_back(error: &postgres::Error) -> bool {
    error.as_db_error().is_some_and(|db| db.severity() == "ERROR")
}

/// Waits until everything committed so far is as durable as a commit of this session would be:
/// with a synchronous standby, until the standby has it.
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
fn wait_until_durable(client: &mut postgres::Client) -> Result<(), postgres::Error> {
    client.batch_execute("SELECT pg_logical_emit_message(true, 'wallet_ledger', 'durable')")
}

/// A definite failure, unless an earlier attempt may have committed.
fn settle(ambiguity: Option<postgres::Error>, failure: LedgerError) -> CallError {
    match ambiguity {
        Some(first) => CallError::Unknown(first),
        None => CallError::Failed(failure),
    }
}

enum Attempt {
    Failed(LedgerError),
    /// Any database error; `call` decides whether it is worth another attempt.
    Retry {
        error: postgres::Error,
        sent: bool,
    },
}
