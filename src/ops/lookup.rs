//! Lookups: an account by its external id, a transfer by its id or its idempotency key.

use crate::driver::ledger::Ledger;
use crate::error::LedgerError;
use crate::model::account::Account;
use crate::model::record::TransferRecord;
use crate::model::transfer::INTERNAL_KEY_PREFIX;
use crate::protocol::{self, reads};
use crate::values::TransferId;

impl Ledger {
    /// The account opened with this external id ([`NewAccount::external_id`](crate::NewAccount::external_id)),
    /// if any. A read: takes no lock.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use wallet_ledger::{Ledger, NewAccount};
    ///
    /// # let url = wallet_ledger::embedded::fresh_database("find_external_docs")?;
    /// let ledger = Ledger::connect(&url)?;
    /// ledger.define_currency("USD", 2)?;
    /// let opened = ledger.open_account(&NewAccount::new("USD").external_id("user-42"))?;
    /// assert_eq!(ledger.find_account_by_external_id("user-42")?.map(|a| a.id), Some(opened.id));
    /// assert_eq!(ledger.find_account_by_external_id("user-43")?, None);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`LedgerError::Database`] and [`LedgerError::Pool`] only: an external id no account has
    /// (however malformed) is `Ok(None)`.
    pub fn find_account_by_external_id(&self, external_id: &str) -> Result<Option<Account>, LedgerError> {
        if external_id.is_empty() || external_id.contains('\0') {
            return Ok(None); // no account can have it, and PostgreSQL refuses NUL in text
        }
        let row = self.idempotent(|conn| {
            let statement = conn.statement(reads::ACCOUNT_BY_EXTERNAL_ID)?;
            Ok(conn.client().query_opt(&statement, &[&external_id])?)
        })?;
        row.as_ref().map(protocol::rows::account).transpose()
    }

    /// The committed transfer (or posting, or capture) with this id, if any, with its legs
    /// from its entries. A read: takes no lock. See [`TransferRecord`] for an example.
    ///
    /// # Errors
    /// [`LedgerError::Database`] and [`LedgerError::Pool`].
    pub fn find_transfer(&self, id: TransferId) -> Result<Option<TransferRecord>, LedgerError> {
        self.transfer_record(reads::TRANSFER_BY_ID, &id.0)
    }

    /// The committed transfer (or posting) made with this idempotency key, if any: the way to
    /// find out what became of a request whose answer was lost. The library's internal keys
    /// (named by [`LedgerError::OutcomeUnknown`] for a request sent without a key) are found
    /// too, but the record shows `idempotency_key: None` for them. See [`TransferRecord`] for
    /// an example.
    ///
    /// # Errors
    /// [`LedgerError::Database`] and [`LedgerError::Pool`]; in Citus mode,
    /// [`LedgerError::Unsupported`] for an internal key (unique per payer there, not indexed by
    /// itself: look the transfer up by id, or repeat it with the key).
    pub fn find_transfer_by_key(&self, key: &str) -> Result<Option<TransferRecord>, LedgerError> {
        if key.is_empty() || key.contains('\0') {
            return Ok(None);
        }
        if self.is_citus() {
            if key.starts_with(INTERNAL_KEY_PREFIX) {
                return Err(LedgerError::Unsupported {
                    operation: "find_transfer_by_key with an internal key",
                    reason: "on Citus internal keys are unique per payer account and not indexed alone (docs/citus.md)",
                });
            }
            return self.transfer_record(crate::citus::TRANSFER_BY_KEY, &key);
        }
        self.transfer_record(reads::TRANSFER_BY_KEY, &key)
    }

    /// The one transfer record `sql` selects with its one parameter.
    fn transfer_record(
        &self,
        sql: &'static str,
        param: &(dyn postgres::types::ToSql + Sync),
    ) -> Result<Option<TransferRecord>, LedgerError> {
        let rows = self.idempotent(|conn| {
            let statement = conn.statement(sql)?;
            Ok(conn.client().query(&statement, &[param])?)
        })?;
        match rows.as_slice() {
            [] => Ok(None),
            [row] => Ok(Some(reads::transfer_record(row)?.0)),
            _ => Err(protocol::unexpected("transfer record", format!("{} rows for one transfer", rows.len()))),
        }
    }
}
