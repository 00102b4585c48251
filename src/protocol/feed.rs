//! The change feed's statements and the decoding of their rows (issue 18).

use std::time::{Duration, SystemTime};

use postgres::Row;
use rust_decimal::Decimal;

use crate::error::LedgerError;
use crate::model::feed::{Change, ChangeKind, ChangeLeg, ConsumerLag, FeedCursor};
use crate::model::transfer::INTERNAL_KEY_PREFIX;
use crate::protocol::Reply;
use crate::values::{AccountId, AccountStatus, HoldId, TransferId};

/// The last position drawn; no parameter. Its own statement, before [`FEED_ADVANCE`].
pub(crate) const LAST_DRAWN: &str = include_str!("../../sql/queries/feed_last_drawn.sql");
/// Records a mark and moves the horizon; parameter `(last drawn)`, answers the horizon.
pub(crate) const FEED_ADVANCE: &str = "SELECT wallet_ledger.feed_advance($1)";
/// The horizon as stored; no parameter.
pub(crate) const HORIZON: &str = "SELECT horizon FROM wallet_ledger.feed_state";
/// A page of changes; parameters `(after, horizon, limit)`.
pub(crate) const FEED_PAGE: &str = include_str!("../../sql/queries/feed_page.sql");

/// Creates a consumer unless it exists; parameter `(name)`.
pub(crate) const CONSUMER_CREATE: &str =
    "INSERT INTO wallet_ledger.feed_consumers (name) VALUES ($1) ON CONFLICT (name) DO NOTHING";
/// A consumer's position, locked for the worker that processes the next page; other workers
/// skip it (they find it taken, not wait). Parameter `(name)`.
pub(crate) const CONSUMER_CLAIM: &str =
    "SELECT position FROM wallet_ledger.feed_consumers WHERE name = $1 FOR UPDATE SKIP LOCKED";
/// Advances a claimed consumer; parameters `(name, position, delivered)`.
pub(crate) const CONSUMER_ADVANCE: &str = "UPDATE wallet_ledger.feed_consumers
   SET position = $2, delivered = delivered + $3, updated_at = now() WHERE name = $1";
/// Every consumer's lag, or one's; parameter `(name or NULL)`.
pub(crate) const CONSUMER_LAG: &str = include_str!("../../sql/queries/feed_consumer_lag.sql");
/// The feed's state; parameter `(last drawn)`.
pub(crate) const FEED_STATUS: &str = include_str!("../../sql/queries/feed_status.sql");

/// One row of [`FEED_PAGE`].
pub(crate) fn change(row: &Row) -> Result<Change, LedgerError> {
    let reply = Reply::new(row, "feed page");
    let kind_name: String = reply.get("kind")?;
    let kind = ChangeKind::parse(&kind_name).ok_or_else(|| reply.malformed(format!("change kind {kind_name:?}")))?;
    let accounts: Vec<i64> = reply.get("leg_accounts")?;
    let amounts: Vec<Decimal> = reply.get("leg_amounts")?;
    let balances: Vec<Decimal> = reply.get("leg_balances")?;
    let versions: Vec<i64> = reply.get("leg_versions")?;
    if accounts.is_empty()
        || amounts.len() != accounts.len()
        || balances.len() != accounts.len()
        || versions.len() != accounts.len()
    {
        return Err(reply.malformed(format!(
            "legs of {} accounts, {} amounts, {} balances, {} versions",
            accounts.len(),
            amounts.len(),
            balances.len(),
            versions.len()
        )));
    }
    let legs = accounts
        .into_iter()
        .zip(amounts)
        .zip(balances)
        .zip(versions)
        .map(|(((account, amount), balance), version)| ChangeLeg {
            account: AccountId(account),
            amount,
            balance,
            version,
        })
        .collect();
    let status = match reply.get::<Option<String>>("status")? {
        None => None,
        Some(name) => Some(name.parse::<AccountStatus>().map_err(|e| reply.malformed(e))?),
    };
    let key: Option<String> = reply.get("idempotency_key")?;
    Ok(Change {
        cursor: FeedCursor(reply.get("position")?),
        kind,
        transfer: reply.get::<Option<i64>>("transfer_id")?.map(TransferId),
        hold: reply.get::<Option<i64>>("hold_id")?.map(HoldId),
        reverses: reply.get::<Option<i64>>("reverses")?.map(TransferId),
        amount: reply.get("amount")?,
        currency: reply.get("currency")?,
        legs,
        memo: reply.get("memo")?,
        metadata: reply.get("metadata")?,
        idempotency_key: key.filter(|k| !k.starts_with(INTERNAL_KEY_PREFIX)),
        status,
        min_balance: reply.get("min_balance")?,
        max_balance: reply.get("max_balance")?,
        at: reply.get("at")?,
    })
}

/// One row of [`CONSUMER_LAG`].
pub(crate) fn consumer_lag(row: &Row) -> Result<ConsumerLag, LedgerError> {
    let reply = Reply::new(row, "consumer lag");
    let position: i64 = reply.get("position")?;
    let delivered: i64 = reply.get("delivered")?;
    let changes: i64 = reply.get("changes")?;
    let behind_ms: f64 = reply.get("behind_ms")?;
    Ok(ConsumerLag {
        name: reply.get("name")?,
        position: (position > 0).then_some(FeedCursor(position)),
        delivered: u64::try_from(delivered).map_err(|_| reply.malformed(format!("delivered {delivered}")))?,
        changes: u64::try_from(changes).map_err(|_| reply.malformed(format!("changes {changes}")))?,
        behind: millis(behind_ms),
        updated_at: reply.get::<Option<SystemTime>>("updated_at")?,
    })
}

/// A non-negative duration from milliseconds the server computed (clock skew between the
/// server's clock readings can make a tiny negative; it reads as zero).
pub(crate) fn millis(ms: f64) -> Duration {
    if ms.is_finite() && ms > 0.0 {
        Duration::from_secs_f64(ms / 1000.0)
    } else {
        Duration::ZERO
    }
}
