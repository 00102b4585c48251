//! The change feed: pages of committed changes in one order, durable consumers that advance in
//! their handler's transaction, their lag, and the feed's own state. The argument that nothing
//! is lost or repeated is in `docs/design.md` ("The change feed").

use std::thread;
use std::time::Duration;

use postgres::{IsolationLevel, Transaction};

use crate::driver::ledger::Ledger;
use crate::driver::pool::LedgerConnection;
use crate::error::LedgerError;
use crate::model::feed::{
    check_consumer_name, check_feed_limit, Change, ChangePage, ConsumerLag, FeedCursor, FeedStatus,
};
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
        self.refuse_feed_on_citus("changes")?;
        check_feed_limit(limit)?;
        let after = after.unwrap_or(FeedCursor::START);
        let rows = self.idempotent(|conn| {
            let (_, horizon) = advance(conn)?;
            if horizon <= after.position() {
                return Ok(Vec::new());
            }
            let statement = conn.statement(feed::FEED_PAGE)?;
            Ok(conn.client().query(&statement, &[&after.position(), &horizon, &i64::from(limit)])?)
        })?;
        let changes = rows.iter().map(feed::change).collect::<Result<Vec<_>, _>>()?;
        let next = changes.last().map_or(after, |c| c.cursor);
        Ok(ChangePage { changes, next })
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
        self.refuse_feed_on_citus("consume")?;
        check_consumer_name(name)?;
        check_feed_limit(limit)?;
        let mut conn = self.connection()?;
        advance(&mut conn)?;
        let create = conn.statement(feed::CONSUMER_CREATE)?;
        let claim = conn.statement(feed::CONSUMER_CLAIM)?;
        let horizon = conn.statement(feed::HORIZON)?;
        let page = conn.statement(feed::FEED_PAGE)?;
        let advance_consumer = conn.statement(feed::CONSUMER_ADVANCE)?;
        conn.client().execute(&create, &[&name])?;
        let mut tx = conn.client().build_transaction().isolation_level(IsolationLevel::ReadCommitted).start()?;
        let Some(claimed) = tx.query_opt(&claim, &[&name])? else {
            return Ok(0); // another worker holds it; dropping the transaction rolls it back
        };
        let position: i64 = Reply::new(&claimed, "consume").first()?;
        let horizon: i64 = Reply::new(&tx.query_one(&horizon, &[])?, "consume").first()?;
        if horizon <= position {
            return Ok(0);
        }
        let rows = tx.query(&page, &[&position, &horizon, &i64::from(limit)])?;
        let changes = rows.iter().map(feed::change).collect::<Result<Vec<_>, _>>()?;
        let Some(last) = changes.last().map(|c| c.cursor.position()) else {
            return Ok(0);
        };
        handler(&mut tx, &changes).map_err(|source| LedgerError::Handler { consumer: name.to_string(), source })?;
        let count = changes.len();
        tx.execute(&advance_consumer, &[&name, &last, &(count as i64)])?;
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
        self.refuse_feed_on_citus("consumer_lag")?;
        check_consumer_name(name)?;
        let mut lags = self.lags(Some(name))?;
        lags.pop().ok_or_else(|| crate::protocol::unexpected("consumer lag", "no row for the consumer"))
    }

    /// Every consumer that has been used, by name, with its lag.
    ///
    /// # Errors
    /// [`LedgerError::Unsupported`] in Citus mode; [`LedgerError::Database`],
    /// [`LedgerError::Pool`].
    pub fn consumers(&self) -> Result<Vec<ConsumerLag>, LedgerError> {
        self.refuse_feed_on_citus("consumers")?;
        self.lags(None)
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
        self.refuse_feed_on_citus("feed_status")?;
        self.idempotent(|conn| {
            let (last_drawn, _) = advance(conn)?;
            let statement = conn.statement(feed::FEED_STATUS)?;
            let row = conn.client().query_one(&statement, &[])?;
            let reply = Reply::new(&row, "feed status");
            let held_back: i64 = reply.get("held_back")?;
            Ok(FeedStatus {
                last_drawn: FeedCursor(last_drawn),
                horizon: FeedCursor(reply.get("horizon")?),
                held_back: u64::try_from(held_back).map_err(|_| reply.malformed(format!("held back {held_back}")))?,
                oldest_open_transaction: reply.get::<Option<f64>>("oldest_ms")?.map(millis),
            })
        })
    }

    fn lags(&self, name: Option<&str>) -> Result<Vec<ConsumerLag>, LedgerError> {
        let rows = self.idempotent(|conn| {
            let statement = conn.statement(feed::CONSUMER_LAG)?;
            Ok(conn.client().query(&statement, &[&name])?)
        })?;
        rows.iter().map(feed::consumer_lag).collect()
    }

    fn refuse_feed_on_citus(&self, operation: &'static str) -> Result<(), LedgerError> {
        self.refuse_on_citus(
            operation,
            "the feed's horizon rests on one server's transaction ids; Citus commits across nodes (docs/citus.md)",
        )
    }
}

/// The last position drawn by any session.
fn last_drawn(conn: &mut LedgerConnection) -> Result<i64, LedgerError> {
    let statement = conn.statement(feed::LAST_DRAWN)?;
    let row = conn.client().query_one(&statement, &[])?;
    Reply::new(&row, "feed_last_drawn").first()
}

/// Moves the feed's horizon over everything committed before this call: reads the last
/// position drawn, then, in a later statement, records it as a mark with the transactions still
/// open, and promotes the newest mark none of whose transactions is still open. When that is
/// not yet the new one (a writer was mid-transaction), it looks again a few times over
/// [`HORIZON_WAIT`] (writers' transactions are short) and then settles for what is final.
/// Returns the last position drawn and the horizon. Must run outside a transaction block, so that the page read after it
/// has a newer snapshot.
fn advance(conn: &mut LedgerConnection) -> Result<(i64, i64), LedgerError> {
    let mark = last_drawn(conn)?;
    let statement = conn.statement(feed::FEED_ADVANCE)?;
    let mut horizon: i64 = Reply::new(&conn.client().query_one(&statement, &[&mark])?, "feed_advance").first()?;
    let mut pause = Duration::from_millis(1);
    let mut waited = Duration::ZERO;
    while horizon < mark && waited < HORIZON_WAIT {
        thread::sleep(pause);
        waited += pause;
        pause *= 2;
        horizon = Reply::new(&conn.client().query_one(&statement, &[&0_i64])?, "feed_advance").first()?;
    }
    Ok((mark, horizon))
}

/// How long a read waits for writers that were mid-transaction when it began before it
/// answers with what is final (a long transaction delays the feed, not the reader).
const HORIZON_WAIT: Duration = Duration::from_millis(15);
