//! Lookups: an account by its external id, a transfer by its id or its idempotency key.

use crate::driver::ledger::Ledger;
use crate::error::LedgerError;
use crate::model::account::Account;
use crate::protocol::{self, reads};

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
}
