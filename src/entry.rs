//! Entries: the double-entry record each transfer leaves on each account, and history paging.

use std::fmt;
use std::time::SystemTime;

use rust_decimal::Decimal;

use crate::account::AccountId;
use crate::error::LedgerError;
use crate::ledger::Ledger;
use crate::limits::HISTORY_PAGE_MAX;
use crate::transfer::TransferId;

/// The id of an entry; also the cursor for the next page of [`Ledger::history`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryId(pub i64);

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One account's side of one transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Entry {
    /// Its id; pass it as `after` to read the next page.
    pub id: EntryId,
    /// The transfer it belongs to.
    pub transfer_id: TransferId,
    /// The account it belongs to.
    pub account: AccountId,
    /// The other account of the transfer.
    pub counterparty: Option<AccountId>,
    /// Signed: negative when money left the account.
    pub amount: Decimal,
    /// The account's balance right after this entry.
    pub balance_after: Decimal,
    /// The account's version after this entry: 1 for its first entry, then 2, 3, ...
    pub account_version: i64,
    /// The transfer's memo.
    pub memo: Option<String>,
    /// When the transfer committed (server clock).
    pub created_at: SystemTime,
}

impl Ledger {
    /// An account's entries, oldest first: up to `limit` of them after the entry `after`
    /// (from the first entry when `None`). Pass the last entry's id as `after` for the next page;
    /// an empty page means the end.
    ///
    /// # Errors
    /// [`LedgerError::AccountNotFound`]; [`LedgerError::InvalidInput`] when `limit` is 0 or above
    /// 10,000, or `after` is not an entry of this account.
    pub fn history(&self, id: AccountId, after: Option<EntryId>, limit: u32) -> Result<Vec<Entry>, LedgerError> {
        check_page(limit)?;
        let rows = self.idempotent(|conn| {
            let after_version = match after {
                None => 0_i64,
                Some(entry) => {
                    let sql = "SELECT account_version FROM wallet_ledger.entries WHERE id = $1 AND account_id = $2";
                    let statement = conn.statement(sql)?;
                    match conn.client().query_opt(&statement, &[&entry.0, &id.0])? {
                        Some(row) => row.get(0),
                        None => {
                            return Err(LedgerError::InvalidInput {
                                field: "after",
                                reason: format!("entry {entry} is not an entry of account {id}"),
                            })
                        }
                    }
                }
            };
            let sql = if self.is_citus() { crate::citus::HISTORY } else { include_str!("../sql/queries/history.sql") };
            let statement = conn.statement(sql)?;
            Ok(conn.client().query(&statement, &[&id.0, &after_version, &i64::from(limit)])?)
        })?;
        if rows.is_empty() && after.is_none() {
            self.account(id)?; // tells "no such account" apart from "no entries yet"
        }
        Ok(rows.iter().map(entry_from_row).collect())
    }
}

/// Page sizes of every listing: 1 to `HISTORY_PAGE_MAX`.
pub(crate) fn check_page(limit: u32) -> Result<(), LedgerError> {
    if limit == 0 || limit > HISTORY_PAGE_MAX {
        return Err(LedgerError::InvalidInput {
            field: "limit",
            reason: format!("{limit} is not between 1 and {HISTORY_PAGE_MAX}"),
        });
    }
    Ok(())
}

fn entry_from_row(row: &postgres::Row) -> Entry {
    Entry {
        id: EntryId(row.get("id")),
        transfer_id: TransferId(row.get("transfer_id")),
        account: AccountId(row.get("account_id")),
        counterparty: row.get::<_, Option<i64>>("counterparty").map(AccountId),
        amount: row.get("amount"),
        balance_after: row.get("balance_after"),
        account_version: row.get("account_version"),
        memo: row.get("memo"),
        created_at: row.get("created_at"),
    }
}
