//! The reads of issue 17: lookups, listings, statements and balances as of a time. Their
//! statements (fixed texts: one per index that can drive a listing, every other filter a
//! NULL-able parameter) and the decoding of their rows.

use std::time::SystemTime;

use postgres::Row;
use rust_decimal::Decimal;

use crate::error::LedgerError;
use crate::model::filter::{AccountFilter, Cursor, CursorKind, TransferFilter};
use crate::model::record::TransferRecord;
use crate::model::statement::Statement;
use crate::model::transfer::INTERNAL_KEY_PREFIX;
use crate::protocol::Reply;
use crate::values::{AccountId, AccountStatus, TransferId};

/// The account with an external id; parameter `(external_id)`.
pub(crate) const ACCOUNT_BY_EXTERNAL_ID: &str = include_str!("../../sql/queries/account_by_external_id.sql");

/// Account listings, by the filter that drives them (parameters in `list_accounts.sql`).
pub(crate) const LIST_ACCOUNTS: &str = include_str!("../../sql/queries/list_accounts.sql");
pub(crate) const LIST_ACCOUNTS_BY_CURRENCY: &str = include_str!("../../sql/queries/list_accounts_by_currency.sql");
pub(crate) const LIST_ACCOUNTS_BY_NAME: &str = include_str!("../../sql/queries/list_accounts_by_name.sql");
pub(crate) const LIST_ACCOUNTS_BY_METADATA: &str = include_str!("../../sql/queries/list_accounts_by_metadata.sql");
pub(crate) const LIST_ACCOUNTS_BY_STATUS: &str = include_str!("../../sql/queries/list_accounts_by_status.sql");

/// A transfer record by id; parameter `(id)`.
pub(crate) const TRANSFER_BY_ID: &str = concat!(
    include_str!("../../sql/queries/transfer_by_id.sql"),
    include_str!("../../sql/queries/transfer_records.sql")
);
/// A transfer record by idempotency key; parameter `(key)`.
pub(crate) const TRANSFER_BY_KEY: &str = concat!(
    include_str!("../../sql/queries/transfer_by_key.sql"),
    include_str!("../../sql/queries/transfer_records.sql")
);
/// A page of all transfers; parameters in `list_transfers.sql`.
pub(crate) const LIST_TRANSFERS: &str = concat!(
    include_str!("../../sql/queries/list_transfers.sql"),
    include_str!("../../sql/queries/transfer_records.sql")
);
/// A page of reversals; the parameters of `list_transfers.sql`.
pub(crate) const LIST_REVERSALS: &str = concat!(
    include_str!("../../sql/queries/list_reversals.sql"),
    include_str!("../../sql/queries/transfer_records.sql")
);
/// A page of the transfers whose metadata contains an object; the parameters of
/// `list_transfers.sql`.
pub(crate) const LIST_TRANSFERS_BY_METADATA: &str = concat!(
    include_str!("../../sql/queries/list_transfers_by_metadata.sql"),
    include_str!("../../sql/queries/transfer_records.sql")
);
/// A page of one account's transfers; parameters in `list_account_transfers.sql`.
pub(crate) const LIST_ACCOUNT_TRANSFERS: &str = concat!(
    include_str!("../../sql/queries/list_account_transfers.sql"),
    include_str!("../../sql/queries/transfer_records.sql")
);
/// A page of one account's transfers filtered on the transfers (metadata, reversals);
/// parameters in `list_account_transfers_filtered.sql`.
pub(crate) const LIST_ACCOUNT_TRANSFERS_FILTERED: &str = concat!(
    include_str!("../../sql/queries/list_account_transfers_filtered.sql"),
    include_str!("../../sql/queries/transfer_records.sql")
);

/// An account's balance as of an instant; parameters `(account, instant)`.
pub(crate) const BALANCE_AT: &str = include_str!("../../sql/queries/balance_at.sql");
/// An account's statement; parameters `(account, from, to)`.
pub(crate) const STATEMENT: &str = include_str!("../../sql/queries/statement.sql");
/// An entry's time, if it belongs to the account; parameters `(entry, account)`.
pub(crate) const ENTRY_TIME: &str = include_str!("../../sql/queries/entry_time.sql");
/// An account's entries of a period; parameters in `history_between.sql`.
pub(crate) const HISTORY_BETWEEN: &str = include_str!("../../sql/queries/history_between.sql");

/// The account listing statement for `filter`: the one whose index the most selective filter
/// set can drive (metadata, then name prefix, then a status other than open (few accounts are
/// frozen or closed), then currency, then status open; time order otherwise). The
/// statements are fixed texts, so their plans are made once per connection and cannot depend
/// on the values: each has its driving condition written without `IS NULL OR`, so that even the
/// generic plan reaches the rows through that filter's index.
pub(crate) fn account_listing(filter: &AccountFilter) -> &'static str {
    if filter.metadata.is_some() {
        LIST_ACCOUNTS_BY_METADATA
    } else if filter.name_prefix.is_some() {
        LIST_ACCOUNTS_BY_NAME
    } else if filter.status.is_some_and(|s| s != AccountStatus::Open) {
        LIST_ACCOUNTS_BY_STATUS
    } else if filter.currency.is_some() {
        LIST_ACCOUNTS_BY_CURRENCY
    } else if filter.status.is_some() {
        LIST_ACCOUNTS_BY_STATUS
    } else {
        LIST_ACCOUNTS
    }
}

/// The listing statement for a transfer filter without an account: by metadata through its
/// GIN index, reversals through theirs, otherwise all transfers in time order (where "no
/// reversals" is a residual filter: reversals are few). They take the same parameters.
pub(crate) fn transfer_listing(filter: &TransferFilter) -> &'static str {
    if filter.metadata_filter().is_some() {
        LIST_TRANSFERS_BY_METADATA
    } else if filter.reversals == Some(true) {
        LIST_REVERSALS
    } else {
        LIST_TRANSFERS
    }
}

/// A page's exclusive lower bound `(time, id)` as the listing statements take it: after the
/// cursor and strictly after `after`, whichever is later (`time > t` is `(time, id) > (t,
/// i64::MAX)`: ids never reach it); both NULL for neither. One row comparison, so that the
/// index scan starts there: a row bound beside a separate bound on its first column left
/// PostgreSQL starting at the row bound and filtering up to the other.
pub(crate) fn lower_bound(cursor: Option<Cursor>, after: Option<SystemTime>) -> (Option<SystemTime>, Option<i64>) {
    let cursor = cursor.map(|c| (c.time(), c.id));
    let after = after.map(|t| (t, i64::MAX));
    match cursor.max(after) {
        Some((time, id)) => (Some(time), Some(id)),
        None => (None, None),
    }
}

/// The page size sent: one more than asked for, so that a full page tells whether more follow.
pub(crate) fn fetch_size(limit: u32) -> i64 {
    i64::from(limit) + 1
}

/// The page of `items` read with [`fetch_size`]`(limit)`: at most `limit` items, and the cursor
/// after the last one when the extra row showed that more follow.
pub(crate) fn page<T>(mut items: Vec<(T, SystemTime, i64)>, limit: u32, kind: CursorKind) -> (Vec<T>, Option<Cursor>) {
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next = if more { items.last().map(|(_, time, id)| Cursor::new(kind, *time, *id)) } else { None };
    (items.into_iter().map(|(item, _, _)| item).collect(), next)
}

/// One row of a transfer-record read, with its sort key `(sort_time, sort_id)`.
pub(crate) fn transfer_record(row: &Row) -> Result<(TransferRecord, SystemTime, i64), LedgerError> {
    let reply = Reply::new(row, "transfer record");
    let accounts: Vec<i64> = reply.get("leg_accounts")?;
    let amounts: Vec<Decimal> = reply.get("leg_amounts")?;
    if accounts.len() != amounts.len() || accounts.is_empty() {
        return Err(reply.malformed(format!("{} leg accounts and {} leg amounts", accounts.len(), amounts.len())));
    }
    let key: Option<String> = reply.get("idempotency_key")?;
    let record = TransferRecord {
        id: TransferId(reply.get("id")?),
        legs: accounts.into_iter().map(AccountId).zip(amounts).collect(),
        currency: reply.get("currency")?,
        memo: reply.get("memo")?,
        metadata: reply.get("metadata")?,
        idempotency_key: key.filter(|k| !k.starts_with(INTERNAL_KEY_PREFIX)),
        created_at: reply.get("created_at")?,
        reverses: reply.get::<Option<i64>>("reverses")?.map(TransferId),
        reversed: reply.get("reversed")?,
    };
    Ok((record, reply.get("sort_time")?, reply.get("sort_id")?))
}

/// The answer of [`BALANCE_AT`]: `None` when the account does not exist.
pub(crate) fn balance_at(row: &Row) -> Result<Option<Decimal>, LedgerError> {
    let reply = Reply::new(row, "balance_at");
    if !reply.get::<bool>("found")? {
        return Ok(None);
    }
    Ok(Some(reply.get::<Option<Decimal>>("balance")?.unwrap_or(Decimal::ZERO)))
}

/// The answer of [`STATEMENT`]: `None` when the account does not exist.
pub(crate) fn statement(
    row: &Row,
    account: AccountId,
    from: SystemTime,
    to: SystemTime,
) -> Result<Option<Statement>, LedgerError> {
    let reply = Reply::new(row, "statement");
    if !reply.get::<bool>("found")? {
        return Ok(None);
    }
    let entries: i64 = reply.get("entries")?;
    Ok(Some(Statement {
        account,
        from,
        to,
        opening_balance: reply.get::<Option<Decimal>>("opening")?.unwrap_or(Decimal::ZERO),
        closing_balance: reply.get::<Option<Decimal>>("closing")?.unwrap_or(Decimal::ZERO),
        total_debits: reply.get("debits")?,
        total_credits: reply.get("credits")?,
        entry_count: u64::try_from(entries).map_err(|_| reply.malformed(format!("entry count {entries}")))?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn each_filter_picks_the_statement_of_its_index() {
        use serde_json::json;
        assert_eq!(transfer_listing(&TransferFilter::new()), LIST_TRANSFERS);
        assert_eq!(transfer_listing(&TransferFilter::new().reversals(false)), LIST_TRANSFERS);
        assert_eq!(transfer_listing(&TransferFilter::new().reversals(true)), LIST_REVERSALS);
        assert_eq!(transfer_listing(&TransferFilter::new().metadata(json!({}))), LIST_TRANSFERS);
        let by_metadata = TransferFilter::new().metadata(json!({"a": 1})).reversals(true);
        assert_eq!(transfer_listing(&by_metadata), LIST_TRANSFERS_BY_METADATA);
        let frozen = AccountFilter::new().status(AccountStatus::Frozen).currency("USD");
        assert_eq!(account_listing(&frozen), LIST_ACCOUNTS_BY_STATUS);
        let open = AccountFilter::new().status(AccountStatus::Open);
        assert_eq!(account_listing(&open), LIST_ACCOUNTS_BY_STATUS);
        assert_eq!(account_listing(&open.currency("USD")), LIST_ACCOUNTS_BY_CURRENCY);
        assert_eq!(account_listing(&AccountFilter::new()), LIST_ACCOUNTS);
    }

    #[test]
    fn the_lower_bound_is_the_later_of_cursor_and_time() {
        let t = |s| UNIX_EPOCH + Duration::from_secs(s);
        let cursor = Cursor::new(CursorKind::Transfers, t(10), 7);
        assert_eq!(lower_bound(None, None), (None, None));
        assert_eq!(lower_bound(Some(cursor), None), (Some(t(10)), Some(7)));
        assert_eq!(lower_bound(None, Some(t(5))), (Some(t(5)), Some(i64::MAX)));
        assert_eq!(lower_bound(Some(cursor), Some(t(5))), (Some(t(10)), Some(7)));
        assert_eq!(lower_bound(Some(cursor), Some(t(10))), (Some(t(10)), Some(i64::MAX)));
        assert_eq!(lower_bound(Some(cursor), Some(t(11))), (Some(t(11)), Some(i64::MAX)));
    }
}
