//! The sans-IO core both doors drive: each operation is written once as a [`Plan`], the
//! statements it sends and what it makes of each answer, and [`retry`] decides once what an
//! error means (retry after a delay, or give up, and whether the outcome is open). The
//! synchronous [`Ledger`](crate::Ledger) (`driver`) and the async
//! `aio::Ledger` (feature `aio`) only send, sleep and hand rows back; neither holds a ledger
//! rule, a retry rule or a decoder of its own.
//!
//! A plan is a chain of steps: a step names one statement (or a transaction of several, or a
//! pause) and a continuation that takes the step's answer and returns the next plan, until
//! [`Plan::Done`]. Most operations are one step;
//! some read once more depending on the first answer (a page that is empty asks whether the
//! account exists).

pub(crate) mod retry;
pub(crate) mod settings;

use std::time::Duration;

use postgres::types::{ToSql, Type};
use postgres::{IsolationLevel, Row};

use rust_decimal::Decimal;

use crate::error::LedgerError;
use crate::model::lock_wait::LockWait;
use crate::model::metadata::stored_metadata;
use crate::protocol::transfer::overflow_as_invalid_amount;

/// One parameter of a statement, owned by the plan so that an async door can hold it across
/// awaits.
pub(crate) type Param = Box<dyn ToSql + Sync + Send>;

/// One statement: SQL naming the ledger's schema as `wallet_ledger.` (each door rewrites it for
/// the ledger's schema and prepares it once per connection) and its parameters.
pub(crate) struct Sql {
    pub(crate) text: &'static str,
    pub(crate) params: Vec<Param>,
    /// The parameters' types, when the statement is worth sending without a prepare (the
    /// `_in` forms' calls, on the caller's connection, where nothing is prepared); empty: the
    /// server infers them.
    pub(crate) types: &'static [Type],
}

impl Sql {
    pub(crate) fn new(text: &'static str, params: Vec<Param>) -> Sql {
        Sql { text, params, types: &[] }
    }

    /// A statement whose parameters have these types (as many as the parameters).
    pub(crate) fn typed(text: &'static str, params: Vec<Param>, types: &'static [Type]) -> Sql {
        debug_assert_eq!(params.len(), types.len());
        Sql { text, params, types }
    }

    /// The parameters with their types, when the statement has them (see [`Sql::typed`]).
    pub(crate) fn typed_refs(&self) -> Option<Vec<(&(dyn ToSql + Sync), Type)>> {
        if self.types.is_empty() {
            return None;
        }
        Some(self.refs().into_iter().zip(self.types.iter().cloned()).collect())
    }

    /// The parameters as the clients take them.
    pub(crate) fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect()
    }
}

/// Boxes parameters: `params![a, b, c]`.
macro_rules! params {
    ($($p:expr),* $(,)?) => {
        vec![$(Box::new($p) as $crate::plan::Param),*]
    };
}
pub(crate) use params;

/// Why a ledger function call gave up.
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

type Then<A, T> = Box<dyn FnOnce(A) -> Plan<T> + Send>;

/// Statements sent in one transaction of their own, begun with `isolation` (and `READ ONLY`
/// when `read_only`) and committed after the last: every statement sees what that isolation
/// gives the transaction (one snapshot, under `REPEATABLE READ`).
pub(crate) struct TxStatements {
    pub(crate) isolation: IsolationLevel,
    pub(crate) read_only: bool,
    pub(crate) statements: Vec<Sql>,
}

/// An operation as data: what to send next, and what to do with its answer.
pub(crate) enum Plan<T> {
    /// The operation's result.
    Done(Result<T, LedgerError>),
    /// A ledger function call that may write: one row back, sent with the call rules of
    /// [`retry::Retry`] (transient errors retried, an idempotency-key race on `key_constraint`
    /// replayed, a lock refusal returned at once, an open outcome reported as such).
    Call { sql: Sql, key_constraint: Option<&'static str>, then: Then<Result<Answer, CallError>, T> },
    /// A read, or a write that is safe to repeat: every row back, transient errors retried.
    Read { sql: Sql, then: Then<Result<Vec<Row>, LedgerError>, T> },
    /// A write that must not be repeated (it is not idempotent: a repeat after a lost answer
    /// could apply it twice): one attempt, one row back.
    Once { sql: Sql, then: Then<Result<Row, LedgerError>, T> },
    /// Reads in one transaction of their own: every statement's rows, in order, transient
    /// errors retried by running the whole transaction again. Only on pooled connections: in
    /// the caller's transaction, whose isolation is the caller's, it is
    /// [`LedgerError::InvalidInput`] (nothing is sent).
    Transaction { tx: TxStatements, then: Then<Result<Vec<Vec<Row>>, LedgerError>, T> },
    /// A pause of `delay` before the rest of the plan (no connection is held meanwhile).
    Pause { delay: Duration, then: Then<(), T> },
}

impl<T: 'static> Plan<T> {
    /// The result, at once.
    pub(crate) fn done(result: Result<T, LedgerError>) -> Plan<T> {
        Plan::Done(result)
    }

    /// A failed plan.
    pub(crate) fn fail(e: LedgerError) -> Plan<T> {
        Plan::Done(Err(e))
    }

    /// A call, whose every answer (or failure) goes to `then`.
    pub(crate) fn call(
        sql: Sql,
        key_constraint: Option<&'static str>,
        then: impl FnOnce(Result<Answer, CallError>) -> Plan<T> + Send + 'static,
    ) -> Plan<T> {
        Plan::Call { sql, key_constraint, then: Box::new(then) }
    }

    /// A read whose rows go to `then`; a failure ends the plan with it.
    pub(crate) fn read(sql: Sql, then: impl FnOnce(Vec<Row>) -> Plan<T> + Send + 'static) -> Plan<T> {
        Plan::Read {
            sql,
            then: Box::new(move |rows| match rows {
                Ok(rows) => then(rows),
                Err(e) => Plan::Done(Err(e)),
            }),
        }
    }

    /// A read of at most one row, decoded by `then`.
    pub(crate) fn read_opt(sql: Sql, then: impl FnOnce(Option<Row>) -> Plan<T> + Send + 'static) -> Plan<T> {
        Plan::read(sql, move |mut rows| {
            if rows.len() > 1 {
                return Plan::fail(LedgerError::UnexpectedRow {
                    function: "query",
                    detail: format!("{} rows where at most one was expected", rows.len()),
                });
            }
            then(rows.pop())
        })
    }

    /// A read of exactly one row, decoded by `then`.
    pub(crate) fn read_one(sql: Sql, then: impl FnOnce(Row) -> Plan<T> + Send + 'static) -> Plan<T> {
        Plan::read(sql, move |rows| match one_row(rows) {
            Ok(row) => then(row),
            Err(e) => Plan::fail(e),
        })
    }

    /// A single attempt of a write that must not be repeated.
    pub(crate) fn once(sql: Sql, then: impl FnOnce(Result<Row, LedgerError>) -> Plan<T> + Send + 'static) -> Plan<T> {
        Plan::Once { sql, then: Box::new(then) }
    }

    /// A transaction of its own whose rows (per statement) go to `then`; a failure ends the plan
    /// with it.
    pub(crate) fn transaction(
        tx: TxStatements,
        then: impl FnOnce(Vec<Vec<Row>>) -> Plan<T> + Send + 'static,
    ) -> Plan<T> {
        Plan::Transaction {
            tx,
            then: Box::new(move |rows| match rows {
                Ok(rows) => then(rows),
                Err(e) => Plan::Done(Err(e)),
            }),
        }
    }

    /// `then`'s plan, after a pause of `delay`.
    pub(crate) fn pause(delay: Duration, then: impl FnOnce() -> Plan<T> + Send + 'static) -> Plan<T> {
        Plan::Pause { delay, then: Box::new(move |()| then()) }
    }

    /// This plan with its failure as a value: `Ok(result)` whatever the result.
    pub(crate) fn into_result(self) -> Plan<Result<T, LedgerError>> {
        match self {
            Plan::Done(result) => Plan::Done(Ok(result)),
            Plan::Call { sql, key_constraint, then } => {
                Plan::Call { sql, key_constraint, then: Box::new(move |a| then(a).into_result()) }
            }
            Plan::Read { sql, then } => Plan::Read { sql, then: Box::new(move |a| then(a).into_result()) },
            Plan::Once { sql, then } => Plan::Once { sql, then: Box::new(move |a| then(a).into_result()) },
            Plan::Transaction { tx, then } => Plan::Transaction { tx, then: Box::new(move |a| then(a).into_result()) },
            Plan::Pause { delay, then } => Plan::Pause { delay, then: Box::new(move |a| then(a).into_result()) },
        }
    }

    /// This plan, its result passed through `f`.
    pub(crate) fn map<U: 'static>(self, f: impl FnOnce(T) -> U + Send + 'static) -> Plan<U> {
        self.and_then(move |t| Plan::Done(Ok(f(t))))
    }

    /// This plan, then the plan `f` makes of its result.
    pub(crate) fn and_then<U: 'static>(self, f: impl FnOnce(T) -> Plan<U> + Send + 'static) -> Plan<U> {
        match self {
            Plan::Done(Ok(t)) => f(t),
            Plan::Done(Err(e)) => Plan::Done(Err(e)),
            Plan::Call { sql, key_constraint, then } => {
                Plan::Call { sql, key_constraint, then: Box::new(move |a| then(a).and_then(f)) }
            }
            Plan::Read { sql, then } => Plan::Read { sql, then: Box::new(move |a| then(a).and_then(f)) },
            Plan::Once { sql, then } => Plan::Once { sql, then: Box::new(move |a| then(a).and_then(f)) },
            Plan::Transaction { tx, then } => Plan::Transaction { tx, then: Box::new(move |a| then(a).and_then(f)) },
            Plan::Pause { delay, then } => Plan::Pause { delay, then: Box::new(move |a| then(a).and_then(f)) },
        }
    }
}

/// A call that carries the idempotency key `key` and moves `amount`: an outcome retries could
/// not settle is [`LedgerError::OutcomeUnknown`] naming the key to repeat it with, and a balance
/// too large to represent is [`LedgerError::InvalidAmount`]. `then` decodes the answer.
pub(crate) fn keyed<T: 'static>(
    sql: Sql,
    key_constraint: &'static str,
    key: String,
    amount: Decimal,
    then: impl FnOnce(Answer, &str) -> Result<T, LedgerError> + Send + 'static,
) -> Plan<T> {
    Plan::call(sql, Some(key_constraint), move |answer| {
        Plan::Done(match answer {
            Ok(answer) => then(answer, &key),
            Err(CallError::Failed(e)) => Err(overflow_as_invalid_amount(e, amount)),
            Err(CallError::Unknown(source)) => Err(LedgerError::OutcomeUnknown { idempotency_key: key, source }),
        })
    })
}

/// What a plan may depend on besides its arguments: the ledger's settings, the same for both
/// doors.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx {
    pub(crate) lock_wait: LockWait,
    pub(crate) citus: bool,
}

impl Ctx {
    /// [`LedgerError::Unsupported`] for `operation` in Citus mode, before anything is sent;
    /// `reason` says why and where to read more.
    pub(crate) fn refuse_on_citus(&self, operation: &'static str, reason: &'static str) -> Result<(), LedgerError> {
        if self.citus {
            return Err(LedgerError::Unsupported { operation, reason });
        }
        Ok(())
    }

    /// [`LedgerError::Unsupported`] in Citus mode for the account rules (states, ceilings),
    /// sweeps and reversals (`docs/citus.md`, "Account states, limits and reversals").
    pub(crate) fn refuse_in_citus(&self, operation: &'static str) -> Result<(), LedgerError> {
        self.refuse_on_citus(
            operation,
            "not in Citus mode yet: the Citus transfer and hold functions (sql/citus/) do not check \
             account states and ceilings, and a reversal would lock a transfer row found by id \
             alone across shards",
        )
    }

    /// The change feed: [`LedgerError::Unsupported`] in Citus mode.
    pub(crate) fn refuse_feed_on_citus(&self, operation: &'static str) -> Result<(), LedgerError> {
        self.refuse_on_citus(
            operation,
            "the feed's horizon rests on one server's transaction ids; Citus commits across nodes (docs/citus.md)",
        )
    }

    /// The privilege guard's grants: [`LedgerError::Unsupported`] in Citus mode.
    pub(crate) fn refuse_guard_on_citus(&self, operation: &'static str) -> Result<(), LedgerError> {
        self.refuse_on_citus(
            operation,
            "in Citus mode the ledger's functions run as the caller, not as their owner \
             (docs/citus.md, \"Not on Citus: the write guard\")",
        )
    }

    /// Batches and postings: [`LedgerError::Unsupported`] in Citus mode (see [`crate::citus`]).
    pub(crate) fn refuse_batches_on_citus(&self, operation: &'static str) -> Result<(), LedgerError> {
        self.refuse_on_citus(
            operation,
            "not in Citus mode yet: its one ordered lock statement over many accounts is refused \
             across shards; send the transfers one by one",
        )
    }

    /// [`LedgerError::Unsupported`] for metadata (other than none or `{}`) in Citus mode: the
    /// Citus forms of `transfer()` and `hold()` (`sql/citus/`) have no metadata parameter.
    pub(crate) fn refuse_metadata_on_citus(
        &self,
        operation: &'static str,
        metadata: Option<&serde_json::Value>,
    ) -> Result<(), LedgerError> {
        if stored_metadata(metadata).is_some() {
            self.refuse_on_citus(
                operation,
                "not in Citus mode yet: the Citus transfer and hold functions (sql/citus/) take no \
                 metadata (docs/citus.md)",
            )?;
        }
        Ok(())
    }
}

/// What the migrator (and Citus detection) needs of a connection: both doors give it one (the
/// async door runs it on a blocking thread over its async client), so there is one migrator.
pub(crate) trait Session {
    fn batch_execute(&mut self, sql: &str) -> Result<(), postgres::Error>;
    fn query(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, postgres::Error>;
}

impl Session for postgres::Client {
    fn batch_execute(&mut self, sql: &str) -> Result<(), postgres::Error> {
        postgres::Client::batch_execute(self, sql)
    }

    fn query(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, postgres::Error> {
        postgres::Client::query(self, sql, params)
    }
}

/// The one row of `sql`.
pub(crate) fn query_one(
    client: &mut dyn Session,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Row, LedgerError> {
    one_row(client.query(sql, params)?)
}

/// What a door answers a [`Plan::Transaction`] step inside the caller's transaction.
pub(crate) fn own_transaction_refused() -> LedgerError {
    LedgerError::InvalidInput {
        field: "transaction",
        reason: "this operation runs in a transaction of its own (its own isolation); it has no form \
                 inside the caller's transaction"
            .into(),
    }
}

/// The one row of a statement that answers with one.
pub(crate) fn one_row(mut rows: Vec<Row>) -> Result<Row, LedgerError> {
    match (rows.pop(), rows.is_empty()) {
        (Some(row), true) => Ok(row),
        (row, _) => Err(LedgerError::UnexpectedRow {
            function: "query",
            detail: format!("{} rows where one was expected", rows.len() + usize::from(row.is_some())),
        }),
    }
}

/// `?` for plans: the error ends the plan.
macro_rules! try_plan {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return $crate::plan::Plan::Done(Err(e.into())),
        }
    };
}
pub(crate) use try_plan;
