//! [`Ledger`]: the handle a backend keeps, and its builder.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use postgres::tls::{MakeTlsConnect, TlsConnect};
use postgres::{NoTls, Socket};
use r2d2::Pool;
use r2d2_postgres::PostgresConnectionManager;

use crate::combiner::{CombineConfig, Combiner, Lanes};
use crate::driver::async_guard::refuse_on_runtime_thread;
use crate::driver::migrator;
use crate::driver::pool::{LedgerConnection, Manager, Source};
use crate::error::LedgerError;
use crate::model::transfer::{Receipt, Transfer};
use crate::plan::settings::{handle_accessors, settings_setters, Settings};

use crate::schema::SchemaName;

/// The ledger: a connection pool to a PostgreSQL database holding the `wallet_ledger` schema.
///
/// Cheap to clone (clones share the pool); `Send + Sync`, so one value serves every thread.
/// Every method is synchronous and runs its own short transaction. On a thread that drives an
/// async runtime a call returns [`LedgerError::AsyncRuntime`] instead of blocking it: see "From
/// async code" in the [crate docs](crate).
#[derive(Clone)]
pub struct Ledger {
    pub(crate) inner: Arc<Inner>,
}

/// What a ledger and its clones share.
pub(crate) type Inner = crate::plan::settings::Inner<Arc<dyn Source>, TransferCombiner>;

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The connection string is deliberately absent: it may hold a password.
        f.debug_struct("Ledger")
            .field("pool_size", &self.inner.pool.max_size())
            .field("schema", &self.inner.schema)
            .field("lock_wait", &self.inner.lock_wait)
            .field("max_retries", &self.inner.max_retries)
            .field(
                "combine",
                &self.inner.combiner.as_ref().map(|lanes| {
                    let c = lanes.first();
                    let mode = if c.is_adaptive() { "adaptive".to_string() } else { format!("{:?}", c.config()) };
                    match lanes.count() {
                        1 => mode,
                        n => format!("{mode}, {n} lanes"),
                    }
                }),
            )
            .finish()
    }
}

/// Opens the pool of a URL-built ledger: `(config, pool settings) -> pool`, with the TLS
/// connector chosen by [`LedgerBuilder::tls`] captured inside.
type OpenPool = Arc<dyn Fn(postgres::Config, PoolSettings) -> Arc<dyn Source> + Send + Sync>;

/// What the builder sets on a pool it opens.
#[derive(Clone, Copy)]
struct PoolSettings {
    max_size: u32,
    checkout_timeout: Duration,
}

/// Opens a pool with `connector`; lazily: connections are made on first use.
fn open_pool<T>(config: postgres::Config, connector: T, settings: PoolSettings) -> Arc<dyn Source>
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::TlsConnect: Send,
    T::Stream: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let pool = Pool::builder()
        .max_size(settings.max_size)
        .min_idle(Some(0))
        .test_on_check_out(false)
        .connection_timeout(settings.checkout_timeout)
        .build_unchecked(Manager(PostgresConnectionManager::new(config, connector)));
    Arc::new(pool)
}

/// Where a ledger's connections come from.
type Origin = crate::plan::settings::Origin<OpenPool, Arc<dyn Source>>;

/// Settings for a [`Ledger`], each with a default; see [`Ledger::builder`] and
/// [`Ledger::with_pool`].
#[derive(Clone, Debug)]
pub struct LedgerBuilder {
    origin: Origin,
    settings: Settings,
    combine: Combining,
}

/// How a ledger's [`Ledger::transfer`] calls are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Combining {
    /// The default: concurrent calls combined when they pile up, a lone call sent at once.
    Adaptive,
    /// Every call alone ([`LedgerBuilder::combining`]`(false)`).
    Off,
    /// Every call queued, with these settings ([`LedgerBuilder::combine`]).
    Tuned(CombineConfig),
}

impl LedgerBuilder {
    settings_setters!();

    /// Connects through TLS with `connector`, any `postgres` TLS connector (for example
    /// `postgres_openssl::MakeTlsConnector`, or [`crate::tls::connector`] with the `tls`
    /// feature). Without it the ledger connects without TLS, and a connection string with
    /// `sslmode=require` fails to connect. Ignored for a caller's pool, which has its own.
    pub fn tls<T>(mut self, connector: T) -> Self
    where
        T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
        T::TlsConnect: Send,
        T::Stream: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        if let Origin::Url { url, .. } = self.origin {
            let open: OpenPool = Arc::new(move |config, settings| open_pool(config, connector.clone(), settings));
            self.origin = Origin::Url { url, open };
        }
        self
    }

    /// Tunes the combiner: every [`Ledger::transfer`] call of this ledger (and its clones) is
    /// queued, and the queue is applied many at a time, one batch in flight (per lane:
    /// [`combining_lanes`](Self::combining_lanes)), each batch in one
    /// transaction, by whichever caller becomes leader, after waiting up to
    /// `config.max_wait` for more (see [`CombineConfig`](crate::CombineConfig) and the
    /// `combiner` notes in `docs/design.md`). Without this call a ledger combines adaptively
    /// ([`combining`](Self::combining)).
    ///
    /// # Panics
    /// If `config.max_batch` is 0 or above [`BATCH_ITEMS_MAX`](crate::limits::BATCH_ITEMS_MAX).
    pub fn combine(mut self, config: CombineConfig) -> Self {
        config.check();
        self.combine = Combining::Tuned(config);
        self
    }

    /// Adaptive combining of [`Ledger::transfer`] calls: on by default, `false` turns it off
    /// (every call its own transaction, as [`Ledger::transfer_in`] always is).
    ///
    /// On, a call that finds fewer than [`COMBINE_IN_FLIGHT`](crate::limits::COMBINE_IN_FLIGHT)
    /// calls of this ledger (of its lane: [`combining_lanes`](Self::combining_lanes)) in flight
    /// goes straight to the server, as with combining off, and
    /// so does one on accounts no call in flight holds while no more than twice that many
    /// callers are in the ledger's calls; a
    /// call that finds them busy waits for one to end and is then applied together with every
    /// other call that arrived meanwhile, in one transaction (a
    /// [batch](Ledger::transfer_batch)). Nothing waits for company: batches form only from calls
    /// that would have queued anyway, so they grow with the load and vanish without it. Each
    /// caller still gets its own receipt or refusal, as alone; a batch that fails as a whole
    /// gives each of its callers [`LedgerError::BatchFailed`] (nothing applied) or
    /// [`LedgerError::BatchOutcomeUnknown`] naming the caller's own key. In Citus mode (no
    /// batches there yet) combining is off whatever this says.
    pub fn combining(mut self, on: bool) -> Self {
        self.combine = if on { Combining::Adaptive } else { Combining::Off };
        self
    }

    /// Parses the connection string, opens the pool and applies pending migrations.
    ///
    /// # Errors
    /// [`LedgerError::InvalidInput`] for a malformed connection string (the message never
    /// repeats it), [`LedgerError::Pool`] or [`LedgerError::Database`] when the server cannot be
    /// reached, [`LedgerError::SchemaTooNew`] when a newer wallet-ledger migrated the database.
    /// [`LedgerError::AsyncRuntime`] on a thread that drives an async runtime, before any
    /// connection is made (see "From async code" in the [crate docs](crate)).
    pub fn build(self) -> Result<Ledger, LedgerError> {
        refuse_on_runtime_thread()?;
        let settings = self.settings;
        let schema = SchemaName::new(&settings.schema)?;
        let pool = match self.origin {
            Origin::Pool(pool) => pool,
            Origin::Url { url, open } => {
                let config = postgres::Config::from_str(&url).map_err(|_| LedgerError::InvalidInput {
                    field: "connection string",
                    reason: "not a valid PostgreSQL URL or key=value string".into(),
                })?;
                open(config, PoolSettings { max_size: settings.pool_size, checkout_timeout: settings.checkout_timeout })
            }
        };
        let counters = crate::stats::Counters::default();
        let (mut conn, waited) = LedgerConnection::checkout(&*pool, &schema)?;
        counters.checked_out(waited);
        let tuned = matches!(self.combine, Combining::Tuned(_));
        let citus =
            migrator::setup(conn.client(), &schema, settings.migrate, settings.citus, tuned, settings.lock_wait)?;
        drop(conn);
        let lanes = settings.combining_lanes;
        let combiner = match self.combine {
            Combining::Tuned(config) => {
                Some(Lanes::new(lanes, || Combiner::new(config, accounts, batch_never_finished)))
            }
            Combining::Adaptive if !citus => {
                Some(Lanes::new(lanes, || Combiner::adaptive(accounts, batch_never_finished)))
            }
            Combining::Adaptive | Combining::Off => None,
        };
        let ledger = Ledger { inner: Arc::new(Inner::new(pool, schema, &settings, counters, citus, combiner)) };
        Ok(ledger)
    }
}

impl Ledger {
    /// Connects with default settings and applies pending migrations.
    ///
    /// `url` is a PostgreSQL connection string, URL (`postgresql://user@host/db`) or key=value
    /// (`host=/tmp/sock dbname=app`).
    ///
    /// # Errors
    /// As [`LedgerBuilder::build`].
    pub fn connect(url: &str) -> Result<Ledger, LedgerError> {
        Ledger::builder(url).build()
    }

    /// A builder, to set the pool size, lock wait policy and retries before connecting.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), wallet_ledger::LedgerError> {
    /// use std::time::Duration;
    /// use wallet_ledger::{Ledger, LockWait};
    ///
    /// let ledger = Ledger::builder("postgresql://app@localhost/payments")
    ///     .pool_size(32)
    ///     .lock_wait(LockWait::Timeout(Duration::from_millis(250)))
    ///     .max_retries(4)
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn builder(url: &str) -> LedgerBuilder {
        let open: OpenPool = Arc::new(|config, settings| open_pool(config, NoTls, settings));
        LedgerBuilder::new(Origin::Url { url: url.to_string(), open })
    }

    /// A ledger on the caller's own pool, with default settings; migrations run at once.
    /// The pool may use any TLS connector (`NoTls`, `postgres_openssl::MakeTlsConnector`, ...).
    /// The ledger keeps its prepared statements in each pooled connection's r2d2 extensions,
    /// so sharing the pool with the backend's own code is fine.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use postgres::NoTls;
    /// use r2d2_postgres::PostgresConnectionManager;
    /// use wallet_ledger::Ledger;
    ///
    /// let manager = PostgresConnectionManager::new("host=/run/postgresql dbname=shop".parse()?, NoTls);
    /// let pool = r2d2::Pool::builder().max_size(32).build(manager)?;
    /// let ledger = Ledger::from_pool(pool.clone())?; // the backend keeps using `pool` too
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`LedgerBuilder::build`].
    pub fn from_pool<T>(pool: Pool<PostgresConnectionManager<T>>) -> Result<Ledger, LedgerError>
    where
        T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
        T::TlsConnect: Send,
        T::Stream: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        Ledger::with_pool(pool).build()
    }

    /// A builder for a ledger on the caller's own pool (see [`Ledger::from_pool`]), to set the
    /// schema, migrations, lock wait policy and retries first. The pool's size, checkout
    /// timeout and TLS are its own.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let pool: r2d2::Pool<r2d2_postgres::PostgresConnectionManager<postgres::NoTls>> = unimplemented!();
    /// use wallet_ledger::Ledger;
    ///
    /// // The backend's migration tool applied `wallet_ledger::schema::migration_script_for(..)`.
    /// let ledger = Ledger::with_pool(pool).schema("payments_ledger").migrate(false).build()?;
    /// # Ok(()) }
    /// ```
    pub fn with_pool<T>(pool: Pool<PostgresConnectionManager<T>>) -> LedgerBuilder
    where
        T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
        T::TlsConnect: Send,
        T::Stream: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        LedgerBuilder::new(Origin::Pool(Arc::new(pool)))
    }
}

impl LedgerBuilder {
    fn new(origin: Origin) -> LedgerBuilder {
        LedgerBuilder { origin, settings: Settings::default(), combine: Combining::Adaptive }
    }
}

impl Ledger {
    /// A pooled connection, for reading the ledger's tables directly (reports, tests).
    /// Writing to them behind the ledger's back breaks its guarantees.
    ///
    /// # Errors
    /// [`LedgerError::Pool`] when no connection can be had in time; [`LedgerError::AsyncRuntime`]
    /// on a thread that drives an async runtime (as every call of the ledger).
    pub fn connection(&self) -> Result<LedgerConnection, LedgerError> {
        let (conn, waited) = LedgerConnection::checkout(&*self.inner.pool, &self.inner.schema)?;
        self.inner.counters.checked_out(waited);
        Ok(conn)
    }

    handle_accessors!();
}

/// A queued transfer of the combiner: validated, with its key (the caller's, or an internal one).
pub(crate) type Combined = (Transfer, String);

/// The combiners of a ledger's transfers, one per lane.
pub(crate) type TransferCombiner = Lanes<Combiner<Combined, Result<Receipt, LedgerError>>>;

/// The accounts a queued transfer locks.
pub(crate) fn accounts(item: &Combined) -> [i64; 2] {
    [item.0.from.0, item.0.to.0]
}

/// The result of a caller whose batch never finished (the applying thread panicked):
/// [`LedgerError::BatchFailed`], since the batch's transaction never committed.
pub(crate) fn batch_never_finished() -> Result<Receipt, LedgerError> {
    Err(LedgerError::BatchFailed {
        source: Arc::new(LedgerError::InvalidInput {
            field: "combined batch",
            reason: "the thread applying the batch panicked; nothing of it was applied".into(),
        }),
    })
}

/// `Ledger: Clone + Send + Sync` is part of the contract: checked at compile time.
const _: fn() = || {
    fn is<T: Clone + Send + Sync + 'static>() {}
    is::<Ledger>();
};
