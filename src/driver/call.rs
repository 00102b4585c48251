//! The synchronous door's runner: it sends each step of a [`Plan`] on a pooled connection (or in
//! a savepoint of the caller's transaction), sleeps between attempts as [`Retry`] says, and hands
//! the answers back to the plan. The rules themselves live in `plan`.

use postgres::{Row, Transaction};

use crate::driver::async_guard::refuse_on_runtime_thread;
use crate::driver::ledger::Ledger;
use crate::error::LedgerError;
use crate::plan::retry::{check_read_committed, Next, SavepointNext, DURABLE_SQL, ISOLATION_SQL};
use crate::plan::{one_row, own_transaction_refused, Answer, CallError, Plan, Sql, TxStatements};
use crate::protocol::{holds_key, is_replay, Reply};

impl Ledger {
    /// Runs `plan` to its end on pooled connections.
    pub(crate) fn run<T: 'static>(&self, mut plan: Plan<T>) -> Result<T, LedgerError> {
        loop {
            plan = match plan {
                Plan::Done(result) => return result,
                Plan::Call { sql, key_constraint, then } => then(self.call(&sql, key_constraint)),
                Plan::Read { sql, then } => then(self.read(&sql)),
                Plan::Once { sql, then } => then(self.once(&sql)),
                Plan::Transaction { tx, then } => then(self.transaction(&tx)),
                Plan::Pause { delay, then } => {
                    std::thread::sleep(delay);
                    then(())
                }
            };
        }
    }

    /// Runs `plan` to its end inside the caller's transaction: each call in a savepoint. A step
    /// that needs a transaction of its own ([`Plan::Transaction`]) gets
    /// [`LedgerError::InvalidInput`] and sends nothing: the caller's transaction has its own
    /// isolation, which would not give the step what it asks for.
    pub(crate) fn run_in<T: 'static>(&self, tx: &mut Transaction<'_>, mut plan: Plan<T>) -> Result<T, LedgerError> {
        // The caller's client blocks like a pooled one: refused on an async runtime's thread.
        refuse_on_runtime_thread()?;
        loop {
            plan = match plan {
                Plan::Done(result) => return result,
                Plan::Call { sql, key_constraint, then } => {
                    let answer = self.in_savepoint(tx, &sql, key_constraint);
                    then(answer.map(|row| Answer { row, maybe_applied: false }).map_err(CallError::Failed))
                }
                Plan::Read { sql, then } => then(self.query_in(tx, &sql)),
                Plan::Once { sql, then } => then(self.query_in(tx, &sql).and_then(one_row)),
                Plan::Transaction { then, .. } => then(Err(own_transaction_refused())),
                Plan::Pause { delay, then } => {
                    std::thread::sleep(delay);
                    then(())
                }
            };
        }
    }

    /// One ledger function call, retried by the call rules.
    fn call(&self, sql: &Sql, key_constraint: Option<&'static str>) -> Result<Answer, CallError> {
        let mut retry = self.inner.call_retry(key_constraint);
        loop {
            retry.start();
            let mut conn = match self.connection() {
                Ok(conn) => conn,
                Err(e) => return Err(retry.refused(e)),
            };
            let attempt = conn
                .statement(sql.text)
                .map_err(|error| (error, false))
                .and_then(|statement| conn.client().query_one(&statement, &sql.refs()).map_err(|error| (error, true)))
                .and_then(|row| {
                    if retry.after_lost_answer() || is_replay(&row) {
                        // This answer rests on an earlier commit, not on this statement's own (a
                        // replay writes nothing): a failure here leaves nothing of this attempt
                        // committed.
                        conn.client().batch_execute(DURABLE_SQL).map_err(|error| (error, false))?;
                    }
                    Ok(row)
                });
            match attempt {
                Ok(row) => {
                    self.inner.counters.lock_waited(&row);
                    return Ok(retry.answered(row));
                }
                Err((error, sent)) => match retry.failed(error, sent) {
                    Next::Again(delay) => {
                        self.inner.counters.retried();
                        std::thread::sleep(delay);
                    }
                    Next::Stop(e) => return Err(e),
                },
            }
        }
    }

    /// A read (or a write safe to repeat), retried on transient errors.
    fn read(&self, sql: &Sql) -> Result<Vec<Row>, LedgerError> {
        self.retried(|| {
            let mut conn = self.connection()?;
            let statement = conn.statement(sql.text)?;
            Ok(conn.client().query(&statement, &sql.refs())?)
        })
    }

    /// Statements in one transaction of their own on one pooled connection, the whole
    /// transaction run again on transient errors.
    fn transaction(&self, tx: &TxStatements) -> Result<Vec<Vec<Row>>, LedgerError> {
        self.retried(|| {
            let mut conn = self.connection()?;
            let statements = tx.statements.iter().map(|sql| conn.statement(sql.text)).collect::<Result<Vec<_>, _>>()?;
            let mut transaction =
                conn.client().build_transaction().isolation_level(tx.isolation).read_only(tx.read_only).start()?;
            let rows = statements
                .iter()
                .zip(&tx.statements)
                .map(|(statement, sql)| transaction.query(statement, &sql.refs()))
                .collect::<Result<Vec<_>, _>>()?;
            transaction.commit()?;
            Ok(rows)
        })
    }

    /// `scripts` (simple-query text, sent as given: several statements each, no parameters) in
    /// one transaction of their own on a pooled connection, the whole transaction run again on
    /// transient errors.
    pub(crate) fn scripts(&self, scripts: &[String]) -> Result<(), LedgerError> {
        self.retried(|| {
            let mut conn = self.connection()?;
            let mut transaction = conn.client().transaction()?;
            for script in scripts {
                transaction.batch_execute(script)?;
            }
            transaction.commit()?;
            Ok(())
        })
    }

    /// `attempt` until it succeeds or fails for good, by the read rules.
    fn retried<R>(&self, mut attempt: impl FnMut() -> Result<R, LedgerError>) -> Result<R, LedgerError> {
        let mut retry = self.inner.read_retry();
        loop {
            match attempt() {
                Err(e) => match retry.failed(&e) {
                    Some(delay) => {
                        self.inner.counters.retried();
                        std::thread::sleep(delay);
                    }
                    None => return Err(e),
                },
                ok => return ok,
            }
        }
    }

    /// One attempt of a write that must not be repeated.
    fn once(&self, sql: &Sql) -> Result<Row, LedgerError> {
        let mut conn = self.connection()?;
        let statement = conn.statement(sql.text)?;
        Ok(conn.client().query_one(&statement, &sql.refs())?)
    }

    /// A statement in the caller's transaction; one round trip when its parameter types are
    /// known, or it has none (`query_typed` needs no prepare).
    fn query_in(&self, tx: &mut Transaction<'_>, sql: &Sql) -> Result<Vec<Row>, LedgerError> {
        let text = self.inner.schema.qualify(sql.text);
        if sql.types.len() != sql.params.len() {
            return Ok(tx.query(text.as_ref(), &sql.refs())?);
        }
        let typed: Vec<_> = sql.refs().into_iter().zip(sql.types.iter().cloned()).collect();
        Ok(tx.query_typed(text.as_ref(), &typed)?)
    }

    /// Runs one ledger statement in a savepoint of the caller's transaction (one round trip for
    /// the statement when its parameter types are known: `query_typed` needs no prepare). The
    /// savepoint is released only when the operation applied (`ok`) or replayed; on a refusal or
    /// an error it is rolled back, which also releases the row locks the statement took, so a
    /// refused call holds nothing until the caller's commit. A lost race on `key_constraint` is
    /// waited for by the server and retried, which replays the winner (in READ COMMITTED, where
    /// the retry sees the winner's commit).
    fn in_savepoint(
        &self,
        tx: &mut Transaction<'_>,
        sql: &Sql,
        key_constraint: Option<&'static str>,
    ) -> Result<Row, LedgerError> {
        let text = self.inner.schema.qualify(sql.text);
        let mut retry = self.inner.savepoint_retry(key_constraint);
        loop {
            retry.start();
            let mut savepoint = tx.savepoint("wallet_ledger_call")?;
            let result = match sql.typed_refs() {
                None => savepoint.query_one(text.as_ref(), &sql.refs()),
                Some(typed) => savepoint.query_typed_one(text.as_ref(), &typed),
            };
            let error = match result {
                Ok(row) => {
                    if holds_key(&row) {
                        savepoint.commit()?;
                    } else {
                        savepoint.rollback()?;
                    }
                    self.inner.counters.lock_waited(&row);
                    return Ok(row);
                }
                Err(error) => error,
            };
            savepoint.rollback()?;
            match retry.failed(error) {
                SavepointNext::Stop(e) => return Err(e),
                SavepointNext::KeyRace => {
                    let row = tx.query_one(ISOLATION_SQL, &[])?;
                    let isolation: String = Reply::new(&row, "current_setting").first()?;
                    check_read_committed(&isolation)?;
                    std::thread::sleep(retry.after_key_race()?);
                    self.inner.counters.retried();
                }
            }
        }
    }
}
