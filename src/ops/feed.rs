//! The change feed: pages of committed changes in one order, durable consumers that advance in
//! their handler's transaction, their lag, and the feed's own state. The argument that nothing
//! is lost or repeated is in `docs/design.md` ("The change feed").

use std::time::Duration;

use postgres::types::Type;
use postgres::{IsolationLevel, Row, Transaction};

use crate::driver::ledger::Ledger;
use crate::error::LedgerError;
use crate::model::feed::{
    check_consumer_name, check_feed_limit, Change, ChangePage, ConsumerLag, FeedCursor, FeedStatus,
};
use crate::plan::{params, try_plan, Ctx, Plan, Sql};
use crate::protocol::feed::{self, millis};
use crate::protocol::Reply;

/// The error a [`Ledger::consume`] handler returns: anything, boxed (`?` works on database
/// errors, ledger errors and the handler's own).
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

impl Ledger {
    /// The committed changes after `after` (`None`: from the start of the feed), at most
    /// `limit`, in feed order, and the cursor to continue from.
    ///
    /// The feed holds every transfer, posting, reversal and capture, every hold placed, voided
    /// or expired, and every account opened, frozen, unfrozen, closed or given new limits, each
    /// once, in one order that follows every account's version order. A reader that pages on
    /// from any cursor sees every change committed after it exactly once, including changes
    /// whose transactions began earlier and committed later than ones already read; changes
    /// rolled back never appear. A change becomes readable shortly after it commits: once every
    /// transaction that was open when it was written has ended (a long open transaction on the
    /// server delays the feed, never reorders or loses it; [`Ledger::feed_status`] shows it).
    /// Three round trips; a read apart from one small write that moves the feed's horizon.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use rust_decimal_macros::dec;
    /// use wallet_ledger::{ChangeKind, Ledger, NewAccount, Transfer};
    ///
    /// # let url = wallet_ledger::embedded::fresh_database("changes_docs")?;
    /// let ledger = Ledger::connect(&url)?;
    /// ledger.define_currency("USD", 2)?;
    /// let issuer = ledger.open_account(&NewAccount::new("USD").unbounded())?.id;
    /// let alice = ledger.open_account(&NewAccount::new("USD"))?.id;
    /// ledger.transfer(&Transfer::new(issuer, alice, dec!(10.00)))?;
    ///
    /// let page = ledger.changes(None, 100)?;
    /// let kinds: Vec<ChangeKind> = page.changes.iter().map(|c| c.kind).collect();
    /// assert_eq!(kinds, [ChangeKind::AccountOpened, ChangeKind::AccountOpened, ChangeKind::Transfer]);
    /// assert_eq!(page.changes[2].leg(alice).map(|leg| leg.balance), Some(dec!(10.00)));
    ///
    /// // Store the cursor as text; later, go on from it.
    /// let saved = page.next.to_string();
    /// assert!(ledger.changes(Some(saved.parse()?), 100)?.changes.is_empty());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`LedgerError::InvalidInput`] for a `limit` of 0 or above
    /// [`FEED_PAGE_MAX`](crate::limits::FEED_PAGE_MAX); [`LedgerError::Unsupported`] in Citus
    /// mode; [`LedgerError::Database`], [`LedgerError::Pool`].
    pub fn changes(&self, after: Option<FeedCursor>, limit: u32) -> Result<ChangePage, LedgerError> {
        self.run(changes_plan(&self.ctx(), after, limit))
    }

    /// Processes the next changes of the durable consumer `name` (at most `limit`): `handler`
    /// gets them with a transaction in which the consumer's position is then advanced past
    /// them, and the call commits it. Returns how many changes were processed: 0 when there
    /// were none, or when another worker of the same consumer holds it at that moment (call
    /// again later).
    ///
    /// - **Exactly once for work in this database.** What the handler writes through the
    ///   transaction commits together with the new position, or not at all: a handler error, a
    ///   crash or a lost connection rolls both back, and the same changes come again.
    /// - **At least once for effects outside it** (a webhook, an email): a crash after the
    ///   effect and before the commit repeats it. Make such effects idempotent, for example by
    ///   sending each change's [`Change::cursor`] as the idempotency key.
    /// - **One worker at a time per name.** Several workers may call `consume` with one name;
    ///   each page goes to one of them, in feed order, never to two.
    ///
    /// A name used for the first time starts at the start of the feed. The transaction is
    /// `READ COMMITTED`; the handler must not commit or roll it back.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use rust_decimal_macros::dec;
    /// use wallet_ledger::{Ledger, NewAccount, Transfer};
    ///
    /// # let url = wallet_ledger::embedded::fresh_database("consume_docs")?;
    /// let ledger = Ledger::connect(&url)?;
    /// ledger.define_currency("USD", 2)?;
    /// let issuer = ledger.open_account(&NewAccount::new("USD").unbounded())?.id;
    /// let alice = ledger.open_account(&NewAccount::new("USD"))?.id;
    /// ledger.transfer(&Transfer::new(issuer, alice, dec!(10.00)))?;
    ///
    /// let mut conn = ledger.connection()?;
    /// conn.client().batch_execute("CREATE TABLE seen (position text PRIMARY KEY, kind text)")?;
    /// let processed = ledger.consume("audit-copy", 100, |tx, changes| {
    ///     for change in changes {
    ///         tx.execute("INSERT INTO seen VALUES ($1, $2)", &[&change.cursor.to_string(), &change.kind.as_str()])?;
    ///     }
    ///     Ok(())
    /// })?;
    /// assert_eq!(processed, 3); // two accounts opened, one transfer
    /// assert_eq!(ledger.consume("audit-copy", 100, |_, _| Ok(()))?, 0);
    /// assert_eq!(ledger.consumer_lag("audit-copy")?.changes, 0);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`LedgerError::Handler`] when the handler fails (nothing it wrote is kept, the position
    /// stays); [`LedgerError::InvalidInput`] for an empty or over-long name or a bad `limit`;
    /// [`LedgerError::Unsupported`] in Citus mode; [`LedgerError::Database`],
    /// [`LedgerError::Pool`].
    pub fn consume<F>(&self, name: &str, limit: u32, mut handler: F) -> Result<usize, LedgerError>
    where
        F: FnMut(&mut Transaction<'_>, &[Change]) -> Result<(), HandlerError>,
    {
        let consume = Consume::new(&self.ctx(), name, limit)?;
        self.run(consume.before())?;
        let mut conn = self.connection()?;
        let mut tx = conn.client().build_transaction().isolation_level(IsolationLevel::ReadCommitted).start()?;
        let changes = self.run_in(&mut tx, consume.page())?;
        if changes.is_empty() {
            return Ok(0); // dropping the transaction rolls it back and frees the consumer
        }
        handler(&mut tx, &changes).map_err(|source| consume.failed(source))?;
        let count = self.run_in(&mut tx, consume.advance(&changes))?;
        tx.commit()?;
        Ok(count)
    }

    /// How far the consumer `name` is behind: committed changes after its position and the
    /// age of the oldest of them. A name never used reads as a consumer at the start of the
    /// feed.
    ///
    /// # Errors
    /// [`LedgerError::InvalidInput`] for an empty or over-long name;
    /// [`LedgerError::Unsupported`] in Citus mode; [`LedgerError::Database`],
    /// [`LedgerError::Pool`].
    pub fn consumer_lag(&self, name: &str) -> Result<ConsumerLag, LedgerError> {
        self.run(consumer_lag_plan(&self.ctx(), name))
    }

    /// Every consumer that has been used, by name, with its lag.
    ///
    /// # Errors
    /// [`LedgerError::Unsupported`] in Citus mode; [`LedgerError::Database`],
    /// [`LedgerError::Pool`].
    pub fn consumers(&self) -> Result<Vec<ConsumerLag>, LedgerError> {
        self.run(consumers_plan(&self.ctx()))
    }

    /// The feed's state: the last position written, the horizon up to which changes are
    /// readable (moved forward by this call, as by a read), how many committed changes wait
    /// past it, and the age of the oldest open transaction on the server (the kind that holds
    /// the horizon back). To start reading from now rather than from the start, pass
    /// `Some(status.horizon)` to [`Ledger::changes`]: nothing committed after this call is
    /// skipped.
    ///
    /// # Errors
    /// [`LedgerError::Unsupported`] in Citus mode; [`LedgerError::Database`],
    /// [`LedgerError::Pool`].
    pub fn feed_status(&self) -> Result<FeedStatus, LedgerError> {
        self.run(feed_status_plan(&self.ctx()))
    }
}

/// A page of the changes after `after` (`None`: the start): the horizon moved first, then the
/// page read up to it, in a later statement (a newer snapshot).
pub(crate) fn changes_plan(ctx: &Ctx, after: Option<FeedCursor>, limit: u32) -> Plan<ChangePage> {
    try_plan!(ctx.refuse_feed_on_citus("changes"));
    try_plan!(check_feed_limit(limit));
    let after = after.unwrap_or(FeedCursor::START);
    advance().and_then(move |(_, horizon)| {
        if horizon <= after.position() {
            return Plan::done(Ok(ChangePage { changes: Vec::new(), next: after }));
        }
        Plan::read(page_sql(after.position(), horizon, limit), move |rows| {
            let changes = try_plan!(decode_page(&rows));
            let next = changes.last().map_or(after, |c| c.cursor);
            Plan::done(Ok(ChangePage { changes, next }))
        })
    })
}

/// The lag of the consumer `name` (one never used reads as one at the start of the feed).
pub(crate) fn consumer_lag_plan(ctx: &Ctx, name: &str) -> Plan<ConsumerLag> {
    try_plan!(ctx.refuse_feed_on_citus("consumer_lag"));
    try_plan!(check_consumer_name(name));
    lags_plan(Some(name.to_string())).and_then(|mut lags| {
        Plan::done(lags.pop().ok_or_else(|| crate::protocol::unexpected("consumer lag", "no row for the consumer")))
    })
}

/// Every consumer that has been used, by name, with its lag.
pub(crate) fn consumers_plan(ctx: &Ctx) -> Plan<Vec<ConsumerLag>> {
    try_plan!(ctx.refuse_feed_on_citus("consumers"));
    lags_plan(None)
}

/// The feed's state, after moving the horizon.
pub(crate) fn feed_status_plan(ctx: &Ctx) -> Plan<FeedStatus> {
    try_plan!(ctx.refuse_feed_on_citus("feed_status"));
    advance().and_then(|(last_drawn, _)| {
        Plan::read_one(Sql::new(feed::FEED_STATUS, params![]), move |row| Plan::done(status(last_drawn, &row)))
    })
}

/// The row of [`feed::FEED_STATUS`] read after the horizon moved over `last_drawn`.
fn status(last_drawn: i64, row: &Row) -> Result<FeedStatus, LedgerError> {
    let reply = Reply::new(row, "feed status");
    let held_back: i64 = reply.get("held_back")?;
    Ok(FeedStatus {
        last_drawn: FeedCursor(last_drawn),
        horizon: FeedCursor(reply.get("horizon")?),
        held_back: u64::try_from(held_back).map_err(|_| reply.malformed(format!("held back {held_back}")))?,
        oldest_open_transaction: reply.get::<Option<f64>>("oldest_ms")?.map(millis),
    })
}

/// The lag of every consumer, or of the one named.
fn lags_plan(name: Option<String>) -> Plan<Vec<ConsumerLag>> {
    Plan::read(Sql::new(feed::CONSUMER_LAG, params![name]), |rows| {
        Plan::done(rows.iter().map(feed::consumer_lag).collect())
    })
}

/// A [`Ledger::consume`] call as both doors run it: the checks, what runs on pooled connections
/// before the consumer's transaction, and the statements in it around the handler. A door only
/// checks out the connection, begins the transaction (`READ COMMITTED`), calls or awaits the
/// handler and commits.
pub(crate) struct Consume {
    name: String,
    limit: u32,
}

impl Consume {
    /// A call of the consumer `name` for at most `limit` changes; refused in Citus mode, for a
    /// bad name and for a bad `limit`.
    pub(crate) fn new(ctx: &Ctx, name: &str, limit: u32) -> Result<Consume, LedgerError> {
        ctx.refuse_feed_on_citus("consume")?;
        check_consumer_name(name)?;
        check_feed_limit(limit)?;
        Ok(Consume { name: name.to_string(), limit })
    }

    /// Before the transaction, on pooled connections: the horizon moved over everything
    /// committed so far, and the consumer created unless it exists.
    pub(crate) fn before(&self) -> Plan<()> {
        let create = Sql::new(feed::CONSUMER_CREATE, params![self.name.clone()]);
        advance().and_then(move |_| Plan::read(create, |_| Plan::done(Ok(()))))
    }

    /// In the consumer's transaction: the consumer claimed and the changes past its position up
    /// to the horizon, at most `limit`. Empty when another worker holds the consumer or nothing
    /// is past its position; the door then rolls back.
    pub(crate) fn page(&self) -> Plan<Vec<Change>> {
        let limit = self.limit;
        let claim = Sql::typed(feed::CONSUMER_CLAIM, params![self.name.clone()], &[Type::TEXT]);
        Plan::read_opt(claim, move |claimed| {
            let Some(claimed) = claimed else {
                return Plan::done(Ok(Vec::new())); // another worker holds it
            };
            let position: i64 = try_plan!(Reply::new(&claimed, "consume").first());
            Plan::read_one(Sql::new(feed::HORIZON, params![]), move |row| {
                let horizon: i64 = try_plan!(Reply::new(&row, "consume").first());
                if horizon <= position {
                    return Plan::done(Ok(Vec::new()));
                }
                Plan::read(page_sql(position, horizon, limit), |rows| Plan::done(decode_page(&rows)))
            })
        })
    }

    /// The handler's failure, naming the consumer.
    pub(crate) fn failed(&self, source: HandlerError) -> LedgerError {
        LedgerError::Handler { consumer: self.name.clone(), source }
    }

    /// In the consumer's transaction, after the handler: the consumer's position moved past
    /// `changes` (the page [`Consume::page`] read). Answers how many changes were processed.
    pub(crate) fn advance(&self, changes: &[Change]) -> Plan<usize> {
        let Some(last) = changes.last().map(|c| c.cursor.position()) else {
            return Plan::done(Ok(0));
        };
        let count = changes.len();
        let params = params![self.name.clone(), last, count as i64];
        let sql = Sql::typed(feed::CONSUMER_ADVANCE, params, &[Type::TEXT, Type::INT8, Type::INT8]);
        Plan::read(sql, move |_| Plan::done(Ok(count)))
    }
}

/// A page of the feed after `after` up to `horizon`, at most `limit` changes.
fn page_sql(after: i64, horizon: i64, limit: u32) -> Sql {
    Sql::typed(feed::FEED_PAGE, params![after, horizon, i64::from(limit)], &[Type::INT8, Type::INT8, Type::INT8])
}

fn decode_page(rows: &[Row]) -> Result<Vec<Change>, LedgerError> {
    rows.iter().map(feed::change).collect()
}

/// Moves the feed's horizon over everything committed before this call: reads the last
/// position drawn, then records it as a mark and moves the horizon to the newest stable mark,
/// each in a statement of its own outside a transaction block (any pooled connection will do:
/// each statement begins after the one before it committed), so that the page read after it
/// has a newer snapshot. When the horizon stays short of the mark (a writer that drew a position
/// was mid-transaction), it looks again a few times over [`HORIZON_WAIT`] (writers'
/// transactions are short) and then settles for what is final. Answers the last position drawn
/// and the horizon.
fn advance() -> Plan<(i64, i64)> {
    Plan::read_one(Sql::new(feed::LAST_DRAWN, params![]), |row| {
        let mark: i64 = try_plan!(Reply::new(&row, "feed_last_drawn").first());
        Plan::read_one(Sql::new(feed::FEED_ADVANCE, params![mark]), move |row| {
            let horizon: i64 = try_plan!(Reply::new(&row, "feed_advance").first());
            settle(mark, horizon, Duration::from_millis(1), Duration::ZERO)
        })
    })
}

/// While the horizon is short of `mark` and less than [`HORIZON_WAIT`] has been `waited`, looks
/// again (recording no mark) after `pause`, each pause twice the one before.
fn settle(mark: i64, horizon: i64, pause: Duration, waited: Duration) -> Plan<(i64, i64)> {
    if horizon >= mark || waited >= HORIZON_WAIT {
        return Plan::done(Ok((mark, horizon)));
    }
    Plan::pause(pause, move || {
        Plan::read_one(Sql::new(feed::FEED_ADVANCE, params![0_i64]), move |row| {
            let horizon: i64 = try_plan!(Reply::new(&row, "feed_advance").first());
            settle(mark, horizon, pause * 2, waited + pause)
        })
    })
}

/// How long a read waits for writers that were mid-transaction when it began before it
/// answers with what is final (a long transaction delays the feed, not the reader).
const HORIZON_WAIT: Duration = Duration::from_millis(15);

#[cfg(feature = "aio")]
impl crate::aio::Ledger {
    /// [`Ledger::changes`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::changes`].
    pub async fn changes(&self, after: Option<FeedCursor>, limit: u32) -> Result<ChangePage, LedgerError> {
        self.run(changes_plan(&self.ctx(), after, limit)).await
    }

    /// [`Ledger::consume`], awaited: the same guarantees (exactly once for work in this
    /// database, at least once for effects outside it, one worker at a time per name), with a
    /// handler that gets the consumer's [`tokio_postgres::Transaction`] and the changes and
    /// returns its work as a boxed `Send` future, [`HandlerFuture`](crate::aio::HandlerFuture):
    /// `|tx, changes| Box::pin(async move { .. })`.
    ///
    /// The handler is a closure returning a boxed future rather than an `AsyncFnMut`, so that
    /// `consume` is `Send` for every handler that is: the future of an `AsyncFnMut` cannot be
    /// required to be `Send` in a signature on stable Rust, and a call that is not `Send` cannot
    /// run in `tokio::spawn` or an axum handler. The box costs one allocation per page.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use rust_decimal_macros::dec;
    /// use wallet_ledger::{aio, NewAccount, Transfer};
    ///
    /// # let url = wallet_ledger_embedded::fresh_database("aio_consume_docs")?;
    /// # let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    /// # runtime.block_on(async {
    /// let ledger = aio::Ledger::connect(&url).await?;
    /// ledger.define_currency("USD", 2).await?;
    /// let issuer = ledger.open_account(&NewAccount::new("USD").unbounded()).await?.id;
    /// let alice = ledger.open_account(&NewAccount::new("USD")).await?.id;
    /// ledger.transfer(&Transfer::new(issuer, alice, dec!(10.00))).await?;
    ///
    /// ledger.connection().await?.batch_execute("CREATE TABLE seen (position text PRIMARY KEY)").await?;
    /// let processed = ledger
    ///     .consume("audit-copy", 100, |tx, changes| {
    ///         Box::pin(async move {
    ///             for change in changes {
    ///                 tx.execute("INSERT INTO seen VALUES ($1)", &[&change.cursor.to_string()]).await?;
    ///             }
    ///             Ok(())
    ///         })
    ///     })
    ///     .await?;
    /// assert_eq!(processed, 3); // two accounts opened, one transfer
    /// assert_eq!(ledger.consumer_lag("audit-copy").await?.changes, 0);
    /// # Ok::<_, Box<dyn std::error::Error>>(()) })?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Ledger::consume`].
    pub async fn consume<F>(&self, name: &str, limit: u32, mut handler: F) -> Result<usize, LedgerError>
    where
        F: for<'a, 't> FnMut(&'a mut tokio_postgres::Transaction<'t>, &'a [Change]) -> crate::aio::HandlerFuture<'a>
            + Send,
    {
        let consume = Consume::new(&self.ctx(), name, limit)?;
        self.run(consume.before()).await?;
        let mut conn = self.connection().await?;
        let client: &mut tokio_postgres::Client = &mut conn;
        let mut tx = client.build_transaction().isolation_level(IsolationLevel::ReadCommitted).start().await?;
        let changes = self.run_in(&mut tx, consume.page()).await?;
        if changes.is_empty() {
            return Ok(0); // dropping the transaction rolls it back and frees the consumer
        }
        handler(&mut tx, &changes).await.map_err(|source| consume.failed(source))?;
        let count = self.run_in(&mut tx, consume.advance(&changes)).await?;
        tx.commit().await?;
        Ok(count)
    }

    /// [`Ledger::consumer_lag`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::consumer_lag`].
    pub async fn consumer_lag(&self, name: &str) -> Result<ConsumerLag, LedgerError> {
        self.run(consumer_lag_plan(&self.ctx(), name)).await
    }

    /// [`Ledger::consumers`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::consumers`].
    pub async fn consumers(&self) -> Result<Vec<ConsumerLag>, LedgerError> {
        self.run(consumers_plan(&self.ctx())).await
    }

    /// [`Ledger::feed_status`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::feed_status`].
    pub async fn feed_status(&self) -> Result<FeedStatus, LedgerError> {
        self.run(feed_status_plan(&self.ctx())).await
    }
}
