//! The async door (feature `aio`): [`aio::Ledger`](Ledger), the same operations as the
//! synchronous [`crate::Ledger`] as `async fn`s with the same names, arguments, errors,
//! idempotency and retry semantics, on [`tokio_postgres`] with a [`deadpool_postgres`] pool.
//!
//! Both doors drive one core: every operation is written once as a plan (its statements, its
//! parameters, the decoding of its answers) and the retry rules are written once; this module
//! only sends, awaits and sleeps. Concurrent [`transfer`](Ledger::transfer) calls are combined
//! across tasks as the synchronous ledger combines them across threads.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use rust_decimal_macros::dec;
//! use wallet_ledger::{aio, NewAccount, Transfer};
//!
//! # let url = wallet_ledger_embedded::fresh_database("aio_module_docs")?;
//! # let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
//! # runtime.block_on(async {
//! let ledger = aio::Ledger::connect(&url).await?;
//! ledger.define_currency("EUR", 2).await?;
//! let bank = ledger.open_account(&NewAccount::new("EUR").unbounded()).await?.id;
//! let alice = ledger.open_account(&NewAccount::new("EUR")).await?.id;
//!
//! let receipt = ledger.transfer(&Transfer::new(bank, alice, dec!(25.00)).idempotency_key("top-up-1")).await?;
//! assert_eq!(receipt.to_balance, dec!(25.00));
//! assert_eq!(ledger.balance(alice).await?, dec!(25.00));
//! # Ok::<_, wallet_ledger::LedgerError>(()) })?;
//! # Ok(()) }
//! ```
//!
//! The pool is deadpool-postgres: async-native, no background task of its own, a prepared
//! statement cache per connection, and a cheap check of each connection on checkout. A backend
//! that has its own `deadpool_postgres::Pool` hands it over with [`Ledger::from_pool`].

mod combine;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row, Socket, Transaction};

use crate::driver::migrator;
use crate::error::LedgerError;
use crate::plan::retry::{check_read_committed, Next, SavepointNext, DURABLE_SQL, ISOLATION_SQL};
use crate::plan::settings::{handle_accessors, settings_setters, Settings};
use crate::plan::{own_transaction_refused, Answer, CallError, Plan, Session, Sql, TxStatements};
use crate::protocol::{holds_key, is_replay, Reply};
use crate::schema::SchemaName;
use crate::stats::Counters;

pub use deadpool_postgres;
pub use tokio_postgres;

/// What an async [`consume`](Ledger::consume) handler returns: its work in the consumer's
/// transaction as a boxed `Send` future (`Box::pin(async move { .. })`), failing with a
/// [`HandlerError`](crate::HandlerError).
pub type HandlerFuture<'a> =
    Pin<Box<dyn Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> + Send + 'a>>;

/// The async ledger: a deadpool-postgres pool to a PostgreSQL database holding the
/// `wallet_ledger` schema. Cheap to clone (clones share the pool and the combiner); `Send +
/// Sync`. Every method is an `async fn` that runs its own short transaction, except the `_in`
/// forms, which run in the caller's [`tokio_postgres::Transaction`].
#[derive(Clone)]
pub struct Ledger {
    pub(crate) inner: Arc<Inner>,
}

/// What a ledger and its clones share.
pub(crate) type Inner = crate::plan::settings::Inner<Pool, combine::AsyncCombiner>;

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The connection string is deliberately absent: it may hold a password.
        f.debug_struct("aio::Ledger")
            .field("pool_size", &self.inner.pool.status().max_size)
            .field("schema", &self.inner.schema)
            .field("lock_wait", &self.inner.lock_wait)
            .field("max_retries", &self.inner.max_retries)
            .field("combining", &self.inner.combiner.is_some())
            .field("combining_lanes", &self.inner.combiner.as_ref().map_or(0, combine::AsyncCombiner::lanes))
            .finish()
    }
}

/// Makes the pool of a URL-built ledger with the TLS connector chosen by [`LedgerBuilder::tls`].
type MakePool = Arc<dyn Fn(tokio_postgres::Config, usize, Duration) -> Result<Pool, LedgerError> + Send + Sync>;

/// Where a ledger's connections come from.
type Origin = crate::plan::settings::Origin<MakePool, Pool>;

/// Settings for an async [`Ledger`], each with the same default as the synchronous
/// [`LedgerBuilder`](crate::LedgerBuilder); see [`Ledger::builder`] and [`Ledger::with_pool`].
#[derive(Clone, Debug)]
pub struct LedgerBuilder {
    origin: Origin,
    settings: Settings,
    combining: bool,
}

fn make_pool<T>(config: tokio_postgres::Config, tls: T, size: usize, timeout: Duration) -> Result<Pool, LedgerError>
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let manager = Manager::from_config(config, tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| LedgerError::AsyncPool(Box::new(e)))
}

impl LedgerBuilder {
    fn new(origin: Origin) -> LedgerBuilder {
        LedgerBuilder { origin, settings: Settings::default(), combining: true }
    }

    settings_setters!();

    /// Connects through TLS with `connector`, any `tokio-postgres` TLS connector (for example
    /// `postgres_openssl::MakeTlsConnector`, or [`crate::tls::connector`] with the `tls`
    /// feature). Ignored for a caller's pool, which has its own.
    pub fn tls<T>(mut self, connector: T) -> Self
    where
        T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
        T::Stream: Sync + Send,
        T::TlsConnect: Sync + Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        if let Origin::Url { url, .. } = self.origin {
            let make: MakePool =
                Arc::new(move |config, size, timeout| make_pool(config, connector.clone(), size, timeout));
            self.origin = Origin::Url { url, open: make };
        }
        self
    }

    /// Adaptive combining of [`Ledger::transfer`] calls across tasks: on by default, as
    /// [`crate::LedgerBuilder::combining`] describes; `false` sends every call alone. Off in
    /// Citus mode whatever this says.
    pub fn combining(mut self, on: bool) -> Self {
        self.combining = on;
        self
    }

    /// Parses the connection string, makes the pool and applies pending migrations (on a
    /// blocking thread: the migrator is the synchronous door's, over this ledger's connection).
    ///
    /// # Errors
    /// As [`crate::LedgerBuilder::build`], with [`LedgerError::AsyncPool`] for a pool that
    /// gives no connection.
    pub async fn build(self) -> Result<Ledger, LedgerError> {
        let settings = self.settings;
        let schema = SchemaName::new(&settings.schema)?;
        let pool = match self.origin {
            Origin::Pool(pool) => pool,
            Origin::Url { url, open: make } => {
                let config = tokio_postgres::Config::from_str(&url).map_err(|_| LedgerError::InvalidInput {
                    field: "connection string",
                    reason: "not a valid PostgreSQL URL or key=value string".into(),
                })?;
                make(config, settings.pool_size as usize, settings.checkout_timeout)?
            }
        };
        let counters = Counters::default();
        let conn = checkout(&pool, &counters).await?;
        let (migrate, citus, lock_wait) = (settings.migrate, settings.citus, settings.lock_wait);
        let schema_for_setup = schema.clone();
        let runtime = tokio::runtime::Handle::current();
        let citus = tokio::task::spawn_blocking(move || {
            let mut session = Blocking { client: conn, runtime };
            migrator::setup(&mut session, &schema_for_setup, migrate, citus, false, lock_wait)
        })
        .await
        .map_err(|e| LedgerError::AsyncPool(Box::new(e)))??;
        let lanes = settings.combining_lanes;
        let combiner = (self.combining && !citus).then(|| combine::AsyncCombiner::new(lanes));
        Ok(Ledger { inner: Arc::new(Inner::new(pool, schema, &settings, counters, citus, combiner)) })
    }
}

/// The migrator's connection on a blocking thread: each statement awaited with the runtime's
/// handle (allowed there, where the runtime's own threads would panic).
struct Blocking {
    client: Object,
    runtime: tokio::runtime::Handle,
}

impl Session for Blocking {
    fn batch_execute(&mut self, sql: &str) -> Result<(), tokio_postgres::Error> {
        self.runtime.block_on(self.client.batch_execute(sql))
    }

    fn query(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, tokio_postgres::Error> {
        self.runtime.block_on(self.client.query(sql, params))
    }
}

/// A connection from `pool`; a checkout that waited long is counted.
async fn checkout(pool: &Pool, counters: &Counters) -> Result<Object, LedgerError> {
    let started = std::time::Instant::now();
    let conn = pool.get().await.map_err(pool_error)?;
    counters.checked_out(started.elapsed());
    Ok(conn)
}

/// A pool's failure as the ledger reports it: a failed connection attempt is the database's
/// error (transient when the server is unreachable), anything else the pool's.
fn pool_error(e: PoolError) -> LedgerError {
    match e {
        PoolError::Backend(e) => LedgerError::Database(e),
        other => LedgerError::AsyncPool(Box::new(other)),
    }
}

impl Ledger {
    /// Connects with default settings and applies pending migrations.
    ///
    /// # Errors
    /// As [`LedgerBuilder::build`].
    pub async fn connect(url: &str) -> Result<Ledger, LedgerError> {
        Ledger::builder(url).build().await
    }

    /// A builder, to set the pool size, lock wait policy, retries, TLS and schema first.
    pub fn builder(url: &str) -> LedgerBuilder {
        let make: MakePool = Arc::new(|config, size, timeout| make_pool(config, NoTls, size, timeout));
        LedgerBuilder::new(Origin::Url { url: url.to_string(), open: make })
    }

    /// A ledger on the caller's own deadpool-postgres pool, with default settings; migrations
    /// run at once. The ledger prepares its statements through the pool's per-connection
    /// statement cache, so sharing the pool with the backend's own code is fine.
    ///
    /// # Errors
    /// As [`LedgerBuilder::build`].
    pub async fn from_pool(pool: Pool) -> Result<Ledger, LedgerError> {
        Ledger::with_pool(pool).build().await
    }

    /// A builder for a ledger on the caller's own pool, to set the schema, migrations, lock
    /// wait policy and retries first.
    pub fn with_pool(pool: Pool) -> LedgerBuilder {
        LedgerBuilder::new(Origin::Pool(pool))
    }

    /// A pooled connection, for reading the ledger's tables directly or opening a transaction
    /// for the `_in` forms. Writing to the ledger's tables behind its back breaks its
    /// guarantees.
    ///
    /// # Errors
    /// [`LedgerError::AsyncPool`] when no connection can be had in time.
    pub async fn connection(&self) -> Result<Object, LedgerError> {
        checkout(&self.inner.pool, &self.inner.counters).await
    }

    handle_accessors!();

    /// Runs `plan` to its end on pooled connections.
    pub(crate) async fn run<T: 'static>(&self, mut plan: Plan<T>) -> Result<T, LedgerError> {
        loop {
            plan = match plan {
                Plan::Done(result) => return result,
                Plan::Call { sql, key_constraint, then } => then(self.call(&sql, key_constraint).await),
                Plan::Read { sql, then } => then(self.read(&sql).await),
                Plan::Once { sql, then } => then(self.once(&sql).await),
                Plan::Transaction { tx, then } => then(self.transaction(&tx).await),
                Plan::Pause { delay, then } => {
                    tokio::time::sleep(delay).await;
                    then(())
                }
            };
        }
    }

    /// Runs `plan` to its end inside the caller's transaction: each call in a savepoint. A step
    /// that needs a transaction of its own ([`Plan::Transaction`]) gets
    /// [`LedgerError::InvalidInput`] and sends nothing, as in the synchronous door.
    pub(crate) async fn run_in<T: 'static>(
        &self,
        tx: &mut Transaction<'_>,
        mut plan: Plan<T>,
    ) -> Result<T, LedgerError> {
        loop {
            plan = match plan {
                Plan::Done(result) => return result,
                Plan::Call { sql, key_constraint, then } => {
                    let answer = self.in_savepoint(tx, &sql, key_constraint).await;
                    then(answer.map(|row| Answer { row, maybe_applied: false }).map_err(CallError::Failed))
                }
                Plan::Read { sql, then } => then(self.query_in(tx, &sql).await),
                Plan::Once { sql, then } => then(self.query_in(tx, &sql).await.and_then(crate::plan::one_row)),
                Plan::Transaction { then, .. } => then(Err(own_transaction_refused())),
                Plan::Pause { delay, then } => {
                    tokio::time::sleep(delay).await;
                    then(())
                }
            };
        }
    }

    /// One ledger function call, retried by the call rules.
    async fn call(&self, sql: &Sql, key_constraint: Option<&'static str>) -> Result<Answer, CallError> {
        let mut retry = self.inner.call_retry(key_constraint);
        let text = self.inner.schema.qualify(sql.text);
        loop {
            retry.start();
            let conn = match self.connection().await {
                Ok(conn) => conn,
                Err(e) => return Err(retry.refused(e)),
            };
            let attempt = async {
                let statement = conn.prepare_cached(&text).await.map_err(|error| (error, false))?;
                let row = conn.query_one(&statement, &sql.refs()).await.map_err(|error| (error, true))?;
                if retry.after_lost_answer() || is_replay(&row) {
                    // This answer rests on an earlier commit, not on this statement's own (a
                    // replay writes nothing): a failure here leaves nothing of this attempt
                    // committed.
                    conn.batch_execute(DURABLE_SQL).await.map_err(|error| (error, false))?;
                }
                Ok::<_, (tokio_postgres::Error, bool)>(row)
            }
            .await;
            drop(conn);
            match attempt {
                Ok(row) => {
                    self.inner.counters.lock_waited(&row);
                    return Ok(retry.answered(row));
                }
                Err((error, sent)) => match retry.failed(error, sent) {
                    Next::Again(delay) => {
                        self.inner.counters.retried();
                        tokio::time::sleep(delay).await;
                    }
                    Next::Stop(e) => return Err(e),
                },
            }
        }
    }

    /// A read (or a write safe to repeat), retried on transient errors.
    async fn read(&self, sql: &Sql) -> Result<Vec<Row>, LedgerError> {
        let text = self.inner.schema.qualify(sql.text);
        self.retried(|| async {
            let conn = self.connection().await?;
            let statement = conn.prepare_cached(&text).await?;
            Ok(conn.query(&statement, &sql.refs()).await?)
        })
        .await
    }

    /// Statements in one transaction of their own on one pooled connection, the whole
    /// transaction run again on transient errors.
    async fn transaction(&self, tx: &TxStatements) -> Result<Vec<Vec<Row>>, LedgerError> {
        self.retried(|| async {
            let mut conn = self.connection().await?;
            let mut statements = Vec::with_capacity(tx.statements.len());
            for sql in &tx.statements {
                statements.push(conn.prepare_cached(&self.inner.schema.qualify(sql.text)).await?);
            }
            let client: &mut tokio_postgres::Client = &mut conn;
            let transaction =
                client.build_transaction().isolation_level(tx.isolation).read_only(tx.read_only).start().await?;
            let mut rows = Vec::with_capacity(statements.len());
            for (statement, sql) in statements.iter().zip(&tx.statements) {
                rows.push(transaction.query(statement, &sql.refs()).await?);
            }
            transaction.commit().await?;
            Ok(rows)
        })
        .await
    }

    /// `scripts` (simple-query text, sent as given: several statements each, no parameters) in
    /// one transaction of their own on a pooled connection, the whole transaction run again on
    /// transient errors.
    pub(crate) async fn scripts(&self, scripts: &[String]) -> Result<(), LedgerError> {
        self.retried(|| async {
            let mut conn = self.connection().await?;
            let client: &mut tokio_postgres::Client = &mut conn;
            let transaction = client.transaction().await?;
            for script in scripts {
                transaction.batch_execute(script).await?;
            }
            transaction.commit().await?;
            Ok(())
        })
        .await
    }

    /// `attempt` until it succeeds or fails for good, by the read rules.
    async fn retried<R, F, A>(&self, mut attempt: A) -> Result<R, LedgerError>
    where
        A: FnMut() -> F,
        F: Future<Output = Result<R, LedgerError>>,
    {
        let mut retry = self.inner.read_retry();
        loop {
            match attempt().await {
                Err(e) => match retry.failed(&e) {
                    Some(delay) => {
                        self.inner.counters.retried();
                        tokio::time::sleep(delay).await;
                    }
                    None => return Err(e),
                },
                ok => return ok,
            }
        }
    }

    /// One attempt of a write that must not be repeated.
    async fn once(&self, sql: &Sql) -> Result<Row, LedgerError> {
        let conn = self.connection().await?;
        let statement = conn.prepare_cached(&self.inner.schema.qualify(sql.text)).await?;
        Ok(conn.query_one(&statement, &sql.refs()).await?)
    }

    /// A statement in the caller's transaction; one round trip when its parameter types are
    /// known, or it has none (`query_typed` needs no prepare).
    async fn query_in(&self, tx: &mut Transaction<'_>, sql: &Sql) -> Result<Vec<Row>, LedgerError> {
        let text = self.inner.schema.qualify(sql.text);
        if sql.types.len() != sql.params.len() {
            return Ok(tx.query(text.as_ref(), &sql.refs()).await?);
        }
        let typed: Vec<_> = sql.refs().into_iter().zip(sql.types.iter().cloned()).collect();
        Ok(tx.query_typed(text.as_ref(), &typed).await?)
    }

    /// As the synchronous door's: one ledger statement in a savepoint of the caller's
    /// transaction, released only when the operation applied or replayed; an idempotency-key
    /// race retried (in READ COMMITTED).
    async fn in_savepoint(
        &self,
        tx: &mut Transaction<'_>,
        sql: &Sql,
        key_constraint: Option<&'static str>,
    ) -> Result<Row, LedgerError> {
        let text = self.inner.schema.qualify(sql.text);
        let mut retry = self.inner.savepoint_retry(key_constraint);
        loop {
            retry.start();
            let savepoint = tx.savepoint("wallet_ledger_call").await?;
            let result = match sql.typed_refs() {
                None => savepoint.query_one(text.as_ref(), &sql.refs()).await,
                Some(typed) => savepoint.query_typed_one(text.as_ref(), &typed).await,
            };
            let error = match result {
                Ok(row) => {
                    if holds_key(&row) {
                        savepoint.commit().await?;
                    } else {
                        savepoint.rollback().await?;
                    }
                    self.inner.counters.lock_waited(&row);
                    return Ok(row);
                }
                Err(error) => error,
            };
            savepoint.rollback().await?;
            match retry.failed(error) {
                SavepointNext::Stop(e) => return Err(e),
                SavepointNext::KeyRace => {
                    let row = tx.query_one(ISOLATION_SQL, &[]).await?;
                    let isolation: String = Reply::new(&row, "current_setting").first()?;
                    check_read_committed(&isolation)?;
                    tokio::time::sleep(retry.after_key_race()?).await;
                    self.inner.counters.retried();
                }
            }
        }
    }
}

/// `aio::Ledger: Clone + Send + Sync` is part of the contract: checked at compile time.
const _: fn() = || {
    fn is<T: Clone + Send + Sync + 'static>() {}
    is::<Ledger>();
};
