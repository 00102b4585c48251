//! What a builder sets, the same for both doors and with the same defaults, and the setters
//! both builders share ([`settings_setters!`]).

use std::fmt;
use std::time::Duration;

use crate::limits::{POOL_CHECKOUT_TIMEOUT_DEFAULT, POOL_SIZE_DEFAULT, RETRIES_DEFAULT};
use crate::model::lock_wait::LockWait;
use crate::plan::retry::{ReadRetry, Retry, SavepointRetry};
use crate::plan::Ctx;
use crate::schema::SchemaName;
use crate::stats::Counters;

/// A builder's settings besides where its connections come from and how it combines.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) schema: String,
    pub(crate) pool_size: u32,
    pub(crate) lock_wait: LockWait,
    pub(crate) max_retries: u32,
    pub(crate) checkout_timeout: Duration,
    pub(crate) migrate: bool,
    pub(crate) citus: Option<bool>,
    pub(crate) combining_lanes: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            schema: SchemaName::DEFAULT.to_string(),
            pool_size: POOL_SIZE_DEFAULT,
            lock_wait: LockWait::default(),
            max_retries: RETRIES_DEFAULT,
            checkout_timeout: POOL_CHECKOUT_TIMEOUT_DEFAULT,
            migrate: true,
            citus: None,
            combining_lanes: 1,
        }
    }
}

/// What a built ledger holds, for both doors: its pool `P`, its combiner `C` (if it combines),
/// and the settings its calls read.
pub(crate) struct Inner<P, C> {
    pub(crate) pool: P,
    pub(crate) schema: SchemaName,
    pub(crate) lock_wait: LockWait,
    pub(crate) max_retries: u32,
    pub(crate) counters: Counters,
    /// Citus mode (see [`crate::citus`]).
    pub(crate) citus: bool,
    /// The combiner: adaptive by default, tuned by `LedgerBuilder::combine` (synchronous door),
    /// none when turned off or in Citus mode.
    pub(crate) combiner: Option<C>,
}

impl<P, C> Inner<P, C> {
    /// A ledger's state once its builder connected: `settings` as built, Citus mode as found.
    pub(crate) fn new(
        pool: P,
        schema: SchemaName,
        settings: &Settings,
        counters: Counters,
        citus: bool,
        combiner: Option<C>,
    ) -> Inner<P, C> {
        Inner {
            pool,
            schema,
            lock_wait: settings.lock_wait,
            max_retries: settings.max_retries,
            counters,
            citus,
            combiner,
        }
    }

    /// The settings plans depend on.
    pub(crate) fn ctx(&self) -> Ctx {
        Ctx { lock_wait: self.lock_wait, citus: self.citus }
    }

    /// The retry state of one ledger function call.
    pub(crate) fn call_retry(&self, key_constraint: Option<&'static str>) -> Retry {
        Retry::new(self.max_retries, key_constraint, self.lock_wait)
    }

    /// The retry state of one call in a savepoint of the caller's transaction.
    pub(crate) fn savepoint_retry(&self, key_constraint: Option<&'static str>) -> SavepointRetry {
        SavepointRetry::new(self.max_retries, key_constraint, self.lock_wait)
    }

    /// The retry state of one read.
    pub(crate) fn read_retry(&self) -> ReadRetry {
        ReadRetry::new(self.max_retries)
    }
}

/// Where a builder's connections come from: a connection string (and how to open a pool for
/// it), or the caller's pool. Its `Debug` never shows the connection string, which may hold a
/// password.
#[derive(Clone)]
pub(crate) enum Origin<Open, Pool> {
    Url { url: String, open: Open },
    Pool(Pool),
}

impl<Open, Pool> fmt::Debug for Origin<Open, Pool> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Url { .. } => "connection string (not shown)",
            Origin::Pool(_) => "caller's pool",
        })
    }
}

/// The setters of [`Settings`], for a builder with a `settings` field: written once, expanded in
/// both doors' builders (`Ledger` in their docs is each door's own).
macro_rules! settings_setters {
    () => {
        /// Most connections the pool opens. Default 16. Ignored for a caller's pool
        /// ([`Ledger::with_pool`]), which has its own.
        ///
        /// # Panics
        /// If `size` is 0.
        pub fn pool_size(mut self, size: u32) -> Self {
            assert!(size > 0, "pool_size must be at least 1");
            self.settings.pool_size = size;
            self
        }

        /// What transfers do when an account row is locked by someone else. Default
        /// [`LockWait::Block`](crate::LockWait::Block).
        pub fn lock_wait(mut self, policy: $crate::LockWait) -> Self {
            self.settings.lock_wait = policy;
            self
        }

        /// Retries after the first attempt on transient errors (serialization failure, deadlock,
        /// lost connection, idempotency-key race), with exponential backoff. Default 8.
        pub fn max_retries(mut self, retries: u32) -> Self {
            self.settings.max_retries = retries;
            self
        }

        /// How long a call waits for a pooled connection before a pool error
        /// ([`LedgerError::Pool`](crate::LedgerError::Pool); on the async door
        /// [`LedgerError::AsyncPool`](crate::LedgerError::AsyncPool)). Default 30 s. Ignored for
        /// a caller's pool, which has its own.
        pub fn checkout_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.settings.checkout_timeout = timeout;
            self
        }

        /// Whether `build` applies pending schema migrations. Default `true`.
        ///
        /// With `false`, `build` only checks that the schema is at this build's version
        /// ([`LedgerError::SchemaOutdated`](crate::LedgerError::SchemaOutdated) or
        /// [`LedgerError::SchemaTooNew`](crate::LedgerError::SchemaTooNew) otherwise): for
        /// backends that apply [`schema::migration_script_for`](crate::schema::migration_script_for)
        /// with their own migration tool.
        pub fn migrate(mut self, migrate: bool) -> Self {
            self.settings.migrate = migrate;
            self
        }

        /// Citus mode on or off. Default: on exactly when the database has the `citus`
        /// extension. In Citus mode `build` also applies the Citus migrations
        /// ([`crate::citus`]: the tables distributed over the cluster, single-shard lock
        /// statements in ascending id order), and refuses
        /// [`LockWait::Timeout`](crate::LockWait::Timeout). `citus(true)` on a database without
        /// the extension is [`LedgerError::InvalidInput`](crate::LedgerError::InvalidInput).
        pub fn citus(mut self, on: bool) -> Self {
            self.settings.citus = Some(on);
            self
        }

        /// Independent combiners ("lanes") for this ledger's `transfer` calls, for a server
        /// with many cores. Default 1.
        ///
        /// A call joins the lane of the smaller of its two account ids modulo `lanes`, so the
        /// calls on one pair of accounts always meet in one lane and keep combining. Each lane
        /// combines as a whole ledger does with one lane, counting only its own calls and
        /// callers (adaptive: [`COMBINE_IN_FLIGHT`](crate::limits::COMBINE_IN_FLIGHT) calls in
        /// flight, up to twice that while few callers are in the lane; tuned, on the
        /// synchronous door: one batch at a time), so up to `lanes` times as many calls of this
        /// ledger reach the server at once, and each lane sees fewer callers to combine. Size
        /// the pool for them: a batch whose leader finds no connection in time fails for all its
        /// callers.
        ///
        /// Each caller still gets its own outcome, as with one lane: batches of two lanes on a
        /// shared account wait for each other's row locks in the server (each locks its
        /// accounts in ascending order, so they cannot deadlock). Under
        /// [`LockWait::NoWait`](crate::LockWait::NoWait) or `Timeout`, a batch can meet a lock
        /// held by another lane's call, as plain calls meet each other's; its transfers are
        /// then sent one by one, so only the callers whose own accounts are locked get
        /// [`LedgerError::LockUnavailable`](crate::LedgerError::LockUnavailable).
        ///
        /// Lanes help only where the server has cores to spare; on the 2-core machine the
        /// project measures on, one lane is fastest (`docs/benchmarks.md`, "Combining lanes").
        /// No effect with combining off, or in Citus mode (which does not combine).
        ///
        /// # Panics
        /// If `lanes` is 0 or above [`COMBINE_LANES_MAX`](crate::limits::COMBINE_LANES_MAX).
        pub fn combining_lanes(mut self, lanes: usize) -> Self {
            assert!(
                (1..=$crate::limits::COMBINE_LANES_MAX).contains(&lanes),
                "combining_lanes must be 1 to {}, not {lanes}",
                $crate::limits::COMBINE_LANES_MAX
            );
            self.settings.combining_lanes = lanes;
            self
        }

        /// The PostgreSQL schema holding the ledger's tables and functions. Default
        /// `wallet_ledger`. Checked by `build` ([`SchemaName::new`](crate::schema::SchemaName::new)).
        pub fn schema(mut self, name: &str) -> Self {
            self.settings.schema = name.to_string();
            self
        }
    };
}
pub(crate) use settings_setters;

/// The accessors of a built ledger with an `inner: Arc<Inner<..>>` field: written once,
/// expanded in both doors' `Ledger`.
macro_rules! handle_accessors {
    () => {
        /// The PostgreSQL schema holding this ledger's tables and functions.
        pub fn schema(&self) -> &str {
            self.inner.schema.as_str()
        }

        /// Counters since this ledger was built (shared by its clones): operations by outcome,
        /// retries, lock refusals. Cheap: a few relaxed atomic loads.
        pub fn stats(&self) -> $crate::Stats {
            self.inner.counters.snapshot()
        }

        /// Whether this ledger runs in Citus mode ([`crate::citus`]).
        pub fn is_citus(&self) -> bool {
            self.inner.citus
        }

        /// The lock wait policy in force.
        pub fn lock_wait(&self) -> $crate::LockWait {
            self.inner.lock_wait
        }

        /// The settings plans depend on.
        pub(crate) fn ctx(&self) -> $crate::plan::Ctx {
            self.inner.ctx()
        }
    };
}
pub(crate) use handle_accessors;
