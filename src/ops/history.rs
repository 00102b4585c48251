//! [`Ledger::history`]: an account's entries, page by page.

use crate::citus;
use crate::driver::ledger::Ledger;
use crate::error::LedgerError;
use crate::model::entry::{check_page, Entry};
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
        check_page(limit)?;
        let rows = self.idempotent(|conn| {
            let after_version = match after {
                None => 0_i64,
                Some(entry) => {
                    let sql = "SELECT account_version FROM wallet_ledger.entries WHERE id = $1 AND account_id = $2";
                    let statement = conn.statement(sql)?;
                    match conn.client().query_opt(&statement, &[&entry.0, &id.0])? {
                        Some(row) => Reply::new(&row, "history").first()?,
                        None => {
                            return Err(LedgerError::InvalidInput {
                                field: "after",
                                reason: format!("entry {entry} is not an entry of account {id}"),
                            })
                        }
                    }
                }
            };
            let sql = if self.is_citus() { citus::HISTORY } else { protocol::rows::HISTORY };
            let statement = conn.statement(sql)?;
            Ok(conn.client().query(&statement, &[&id.0, &after_version, &i64::from(limit)])?)
        })?;
        if rows.is_empty() && after.is_none() {
            self.account(id)?; // tells "no such account" apart from "no entries yet"
        }
        rows.iter().map(protocol::rows::entry).collect()
    }
}
