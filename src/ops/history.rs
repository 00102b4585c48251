//! [`Ledger::history`]: an account's entries, page by page.

use crate::citus;
use crate::driver::ledger::Ledger;
use crate::error::LedgerError;
use crate::model::entry::{check_page, Entry};
use crate::plan::{params, try_plan, Ctx, Plan, Sql};
use crate::protocol::{self, Reply};
use crate::values::{AccountId, EntryId};

impl Ledger {
    /// An account's entries, oldest first: up to `limit` of them after the entry `after`
    /// (from the first entry when `None`). Pass the last entry's id as `after` for the next page;
    /// an empty page means the end.
    ///
    /// # Errors
    /// [`LedgerError::AccountNotFound`]; [`LedgerError::InvalidInput`] when `limit` is 0 or above
    /// 10,000, or `after` is not an entry of this account.
    pub fn history(&self, id: AccountId, after: Option<EntryId>, limit: u32) -> Result<Vec<Entry>, LedgerError> {
        self.run(plan(&self.ctx(), id, after, limit))
    }
}

/// A page of an account's history: the cursor entry's version read first (when there is one),
/// then the page; an empty first page asks whether the account exists.
pub(crate) fn plan(ctx: &Ctx, id: AccountId, after: Option<EntryId>, limit: u32) -> Plan<Vec<Entry>> {
    try_plan!(check_page(limit));
    let sql = if ctx.citus { citus::HISTORY } else { protocol::rows::HISTORY };
    let page = move |after_version: i64| {
        Plan::read(Sql::new(sql, params![id.0, after_version, i64::from(limit)]), move |rows| {
            if rows.is_empty() && after.is_none() {
                // tells "no such account" apart from "no entries yet"
                return crate::ops::accounts::account_plan(id).map(|_| Vec::new());
            }
            Plan::done(rows.iter().map(protocol::rows::entry).collect())
        })
    };
    match after {
        None => page(0),
        Some(entry) => {
            let sql = "SELECT account_version FROM wallet_ledger.entries WHERE id = $1 AND account_id = $2";
            Plan::read_opt(Sql::new(sql, params![entry.0, id.0]), move |row| match row {
                Some(row) => page(try_plan!(Reply::new(&row, "history").first())),
                None => Plan::fail(LedgerError::InvalidInput {
                    field: "after",
                    reason: format!("entry {entry} is not an entry of account {id}"),
                }),
            })
        }
    }
}

#[cfg(feature = "aio")]
impl crate::aio::Ledger {
    /// [`Ledger::history`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::history`].
    pub async fn history(&self, id: AccountId, after: Option<EntryId>, limit: u32) -> Result<Vec<Entry>, LedgerError> {
        self.run(plan(&self.ctx(), id, after, limit)).await
    }
}
