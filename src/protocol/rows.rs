//! Rows of the library's reads (accounts, entries): their statements and decoding.

use postgres::Row;

use crate::error::LedgerError;
use crate::model::account::Account;
use crate::model::entry::Entry;
use crate::protocol::Reply;
use crate::values::{AccountId, EntryId, TransferId};

/// An account's entries after a version, oldest first; parameters `(account, after_version,
/// limit)`.
pub(crate) const HISTORY: &str = include_str!("../../sql/queries/history.sql");

/// One account row (`id, currency, balance, min_balance, max_balance, held, status, version,
/// name, created_at, external_id, metadata`).
pub(crate) fn account(row: &Row) -> Result<Account, LedgerError> {
    let reply = Reply::new(row, "account");
    Ok(Account {
        id: AccountId(reply.get("id")?),
        currency: reply.get("currency")?,
        balance: reply.get("balance")?,
        min_balance: reply.get("min_balance")?,
        max_balance: reply.get("max_balance")?,
        status: {
            let status: &str = reply.get("status")?;
            status.parse().map_err(|e: String| reply.malformed(format!("column status: {e}")))?
        },
        held: reply.get("held")?,
        version: reply.get("version")?,
        name: reply.get("name")?,
        created_at: reply.get("created_at")?,
        external_id: reply.get("external_id")?,
        metadata: reply.get("metadata")?,
    })
}

/// One entry row of a history page.
pub(crate) fn entry(row: &Row) -> Result<Entry, LedgerError> {
    let reply = Reply::new(row, "history");
    Ok(Entry {
        id: EntryId(reply.get("id")?),
        transfer_id: TransferId(reply.get("transfer_id")?),
        account: AccountId(reply.get("account_id")?),
        counterparty: reply.get::<Option<i64>>("counterparty")?.map(AccountId),
        amount: reply.get("amount")?,
        balance_after: reply.get("balance_after")?,
        account_version: reply.get("account_version")?,
        reverses: reply.get::<Option<i64>>("reverses")?.map(TransferId),
        memo: reply.get("memo")?,
        created_at: reply.get("created_at")?,
    })
}
