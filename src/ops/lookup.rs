//! Lookups: an account by its external id, a transfer by its id or its idempotency key.

use crate::driver::ledger::Ledger;
use crate::error::LedgerError;
use crate::model::account::Account;
use crate::model::record::TransferRecord;
use crate::model::transfer::INTERNAL_KEY_PREFIX;
use crate::plan::{params, Ctx, Plan, Sql};
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
        self.run(account_by_external_id_plan(external_id))
    }

    /// The committed transfer (or posting, or capture) with this id, if any, with its legs
    /// from its entries. A read: takes no lock. See [`TransferRecord`] for an example.
    ///
    /// # Errors
    /// [`LedgerError::Database`] and [`LedgerError::Pool`].
    pub fn find_transfer(&self, id: TransferId) -> Result<Option<TransferRecord>, LedgerError> {
        self.run(transfer_plan(id))
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
        self.run(transfer_by_key_plan(&self.ctx(), key))
    }
}

/// The account with an external id; one no account can have (empty, or with a NUL, which
/// PostgreSQL refuses in text) is `None` without a read.
pub(crate) fn account_by_external_id_plan(external_id: &str) -> Plan<Option<Account>> {
    if external_id.is_empty() || external_id.contains('\0') {
        return Plan::done(Ok(None));
    }
    Plan::read_opt(Sql::new(reads::ACCOUNT_BY_EXTERNAL_ID, params![external_id.to_string()]), |row| {
        Plan::done(row.as_ref().map(protocol::rows::account).transpose())
    })
}

/// The transfer record with this id.
pub(crate) fn transfer_plan(id: TransferId) -> Plan<Option<TransferRecord>> {
    transfer_record(Sql::new(reads::TRANSFER_BY_ID, params![id.0]))
}

/// The transfer record made with this idempotency key; a key no transfer can have (empty, or
/// with a NUL) is `None` without a read.
pub(crate) fn transfer_by_key_plan(ctx: &Ctx, key: &str) -> Plan<Option<TransferRecord>> {
    if key.is_empty() || key.contains('\0') {
        return Plan::done(Ok(None));
    }
    if ctx.citus {
        if key.starts_with(INTERNAL_KEY_PREFIX) {
            return Plan::fail(LedgerError::Unsupported {
                operation: "find_transfer_by_key with an internal key",
                reason: "on Citus internal keys are unique per payer account and not indexed alone (docs/citus.md)",
            });
        }
        return transfer_record(Sql::new(crate::citus::TRANSFER_BY_KEY, params![key.to_string()]));
    }
    transfer_record(Sql::new(reads::TRANSFER_BY_KEY, params![key.to_string()]))
}

/// The one transfer record `sql` selects, if any.
fn transfer_record(sql: Sql) -> Plan<Option<TransferRecord>> {
    Plan::read(sql, |rows| {
        Plan::done(match rows.as_slice() {
            [] => Ok(None),
            [row] => reads::transfer_record(row).map(|(record, _, _)| Some(record)),
            _ => Err(protocol::unexpected("transfer record", format!("{} rows for one transfer", rows.len()))),
        })
    })
}

#[cfg(feature = "aio")]
impl crate::aio::Ledger {
    /// [`Ledger::find_account_by_external_id`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::find_account_by_external_id`].
    pub async fn find_account_by_external_id(&self, external_id: &str) -> Result<Option<Account>, LedgerError> {
        self.run(account_by_external_id_plan(external_id)).await
    }

    /// [`Ledger::find_transfer`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::find_transfer`].
    pub async fn find_transfer(&self, id: TransferId) -> Result<Option<TransferRecord>, LedgerError> {
        self.run(transfer_plan(id)).await
    }

    /// [`Ledger::find_transfer_by_key`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::find_transfer_by_key`].
    pub async fn find_transfer_by_key(&self, key: &str) -> Result<Option<TransferRecord>, LedgerError> {
        self.run(transfer_by_key_plan(&self.ctx(), key)).await
    }
}
