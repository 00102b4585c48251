//! Currencies and accounts: define, open, read.

use rust_decimal::Decimal;

use crate::driver::ledger::Ledger;
use crate::error::LedgerError;
use crate::limits::{ACCOUNT_NAME_BYTES_MAX, EXTERNAL_ID_BYTES_MAX};
use crate::model::account::{Account, NewAccount};
use crate::model::metadata::check_metadata;
use crate::model::money::{check_ceiling, check_currency, check_floor, check_text, is_currency_code};
use crate::protocol::{self, Reply};
use crate::values::AccountId;

impl Ledger {
    /// Defines a currency with `scale` decimal places (USD 2, JPY 0, BTC 8). Idempotent.
    ///
    /// # Errors
    /// [`LedgerError::CurrencyConflict`] when `code` exists with another scale;
    /// [`LedgerError::InvalidInput`] for a code that is not 1 to 16 of `A-Z 0-9 _` or a scale above 18.
    pub fn define_currency(&self, code: &str, scale: u32) -> Result<(), LedgerError> {
        check_currency(code, scale)?;
        let existing = self.idempotent(|conn| {
            let statement = conn.statement(include_str!("../../sql/queries/define_currency.sql"))?;
            // Empty only if a concurrent definition of the same code committed between the
            // insert and the read of this one statement's snapshot; a second run sees it.
            for _ in 0..2 {
                if let Some(row) = conn.client().query_opt(&statement, &[&code, &(scale as i16)])? {
                    let scale: i16 = Reply::new(&row, "define_currency").first()?;
                    return Ok(scale as u32);
                }
            }
            Err(LedgerError::InvalidInput {
                field: "currency code",
                reason: "concurrent definition did not settle".into(),
            })
        })?;
        if existing != scale {
            return Err(LedgerError::CurrencyConflict { code: code.into(), existing, requested: scale });
        }
        Ok(())
    }

    /// Opens an account with balance zero.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use serde_json::json;
    /// use wallet_ledger::{Ledger, LedgerError, NewAccount};
    ///
    /// # let url = wallet_ledger::embedded::fresh_database("open_account_docs")?;
    /// let ledger = Ledger::connect(&url)?;
    /// ledger.define_currency("USD", 2)?;
    /// let wallet = ledger.open_account(
    ///     &NewAccount::new("USD").external_id("user-42").metadata(json!({"tier": "gold"})),
    /// )?;
    /// assert_eq!(wallet.external_id.as_deref(), Some("user-42"));
    /// assert_eq!(wallet.metadata, json!({"tier": "gold"}));
    ///
    /// let again = ledger.open_account(&NewAccount::new("USD").external_id("user-42"));
    /// assert!(matches!(again, Err(LedgerError::ExternalIdTaken { .. })));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`LedgerError::UnknownCurrency`], [`LedgerError::InvalidAmount`] for a positive floor, a
    /// negative ceiling, or either with more decimal places than the currency,
    /// [`LedgerError::InvalidInput`] for a name or external id that is too long, empty
    /// (external id) or contains NUL, and for metadata that is not a JSON object of at most
    /// [`METADATA_BYTES_MAX`](crate::limits::METADATA_BYTES_MAX) bytes;
    /// [`LedgerError::ExternalIdTaken`] when another account has the external id;
    /// [`LedgerError::Unsupported`] for a ceiling or an external id in Citus mode.
    pub fn open_account(&self, new: &NewAccount) -> Result<Account, LedgerError> {
        if let Some(name) = &new.name {
            check_text("account name", name, ACCOUNT_NAME_BYTES_MAX)?;
        }
        if let Some(external_id) = &new.external_id {
            check_external_id(external_id)?;
            self.refuse_on_citus(
                "external ids",
                "Citus cannot keep them unique across shards without a table distributed by external id (docs/citus.md)",
            )?;
        }
        if let Some(metadata) = &new.metadata {
            check_metadata("metadata", metadata)?;
        }
        if !is_currency_code(&new.currency) {
            return Err(LedgerError::UnknownCurrency { code: new.currency.clone() });
        }
        let scale = self.idempotent(|conn| {
            let statement = conn.statement("SELECT scale FROM wallet_ledger.currencies WHERE code = $1")?;
            match conn.client().query_opt(&statement, &[&new.currency])? {
                Some(row) => Ok(Some(Reply::new(&row, "currency").first::<i16>()? as u32)),
                None => Ok(None),
            }
        })?;
        let Some(scale) = scale else {
            return Err(LedgerError::UnknownCurrency { code: new.currency.clone() });
        };
        if let Some(floor) = new.min_balance {
            check_floor(floor, scale)?;
        }
        if let Some(ceiling) = new.max_balance {
            check_ceiling(ceiling, scale)?;
            self.refuse_in_citus("an account with a max_balance")?;
        }
        // Not retried: after a lost connection a repeat could open a second account.
        let mut conn = self.connection()?;
        let statement = conn.statement(include_str!("../../sql/queries/open_account.sql"))?;
        let params: [&(dyn postgres::types::ToSql + Sync); 6] =
            [&new.currency, &new.min_balance, &new.name, &new.max_balance, &new.external_id, &new.metadata];
        match conn.client().query_one(&statement, &params).map_err(LedgerError::from) {
            Ok(row) => protocol::rows::account(&row),
            Err(LedgerError::ConstraintViolation { constraint, .. }) if constraint == "accounts_external_id" => {
                Err(LedgerError::ExternalIdTaken { external_id: new.external_id.clone().unwrap_or_default() })
            }
            Err(LedgerError::ConstraintViolation { constraint, .. }) if constraint == "accounts_metadata_size" => {
                Err(LedgerError::InvalidInput {
                    field: "metadata",
                    reason: "larger than METADATA_BYTES_MAX in the database's text form of the jsonb".into(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The account with this id.
    ///
    /// # Errors
    /// [`LedgerError::AccountNotFound`].
    pub fn account(&self, id: AccountId) -> Result<Account, LedgerError> {
        let row = self.idempotent(|conn| {
            let statement = conn.statement(include_str!("../../sql/queries/account.sql"))?;
            Ok(conn.client().query_opt(&statement, &[&id.0])?)
        })?;
        match row {
            Some(row) => protocol::rows::account(&row),
            None => Err(LedgerError::AccountNotFound { account: id }),
        }
    }

    /// The current balance of an account.
    ///
    /// # Errors
    /// [`LedgerError::AccountNotFound`].
    pub fn balance(&self, id: AccountId) -> Result<Decimal, LedgerError> {
        let row = self.idempotent(|conn| {
            let statement = conn.statement("SELECT balance FROM wallet_ledger.accounts WHERE id = $1")?;
            Ok(conn.client().query_opt(&statement, &[&id.0])?)
        })?;
        match row {
            Some(row) => Reply::new(&row, "balance").first(),
            None => Err(LedgerError::AccountNotFound { account: id }),
        }
    }
}

/// An external id: 1 to [`EXTERNAL_ID_BYTES_MAX`] bytes, no NUL.
fn check_external_id(external_id: &str) -> Result<(), LedgerError> {
    check_text("external id", external_id, EXTERNAL_ID_BYTES_MAX)?;
    if external_id.is_empty() {
        return Err(LedgerError::InvalidInput { field: "external id", reason: "must not be empty".into() });
    }
    Ok(())
}
