//! Entries: the double-entry record each transfer leaves on each account.

use std::time::SystemTime;

use rust_decimal::Decimal;

use crate::error::LedgerError;
use crate::limits::HISTORY_PAGE_MAX;
use crate::values::{AccountId, EntryId, TransferId};

/// One account's side of one transfer.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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
    /// The transfer this entry's transfer reverses, when it is a reversal
    /// ([`Ledger::reverse`](crate::Ledger::reverse)).
    pub reverses: Option<TransferId>,
    /// The transfer's memo.
    pub memo: Option<String>,
    /// When the entry was written (server clock, `clock_timestamp()` at its INSERT): after its
    /// account's row lock was granted, so never before an earlier entry of the same account.
    /// Statements and balances as of a time read this time. (Entries written before migration
    /// 8 carry their transfer's time.)
    pub created_at: SystemTime,
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
