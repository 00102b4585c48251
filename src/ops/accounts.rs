//! Currencies and accounts: define, open, read.

use postgres::Row;
use rust_decimal::Decimal;

use crate::driver::ledger::Ledger;
use crate::error::LedgerError;
use crate::limits::{ACCOUNT_NAME_BYTES_MAX, EXTERNAL_ID_BYTES_MAX};
use crate::model::account::{Account, NewAccount};
use crate::model::metadata::check_metadata;
use crate::model::money::{check_ceiling, check_currency, check_floor, check_text, is_currency_code};
use crate::plan::{params, try_plan, Ctx, Plan, Sql};
use crate::protocol::{self, Reply};
use crate::values::AccountId;

impl Ledger {
    /// Defines a currency with `scale` decimal places (USD 2, JPY 0, BTC 8). Idempotent.
    ///
    /// # Errors
    /// [`LedgerError::CurrencyConflict`] when `code` exists with another scale;
    /// [`LedgerError::InvalidInput`] for a code that is not 1 to 16 of `A-Z 0-9 _` or a scale above 18.
    pub fn define_currency(&self, code: &str, scale: u32) -> Result<(), LedgerError> {
        self.run(define_currency_plan(code, scale))
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
        self.run(open_account_plan(&self.ctx(), new))
    }

    /// The account with this id.
    ///
    /// # Errors
    /// [`LedgerError::AccountNotFound`].
    pub fn account(&self, id: AccountId) -> Result<Account, LedgerError> {
        self.run(account_plan(id))
    }

    /// The current balance of an account.
    ///
    /// # Errors
    /// [`LedgerError::AccountNotFound`].
    pub fn balance(&self, id: AccountId) -> Result<Decimal, LedgerError> {
        self.run(balance_plan(id))
    }
}

/// Defines a currency, or finds it defined with the same scale.
pub(crate) fn define_currency_plan(code: &str, scale: u32) -> Plan<()> {
    try_plan!(check_currency(code, scale));
    let code = code.to_string();
    // Empty only if a concurrent definition of the same code committed between the insert and
    // the read of this one statement's snapshot; a second run sees it.
    let sql = || Sql::new(include_str!("../../sql/queries/define_currency.sql"), params![code.clone(), scale as i16]);
    let first = sql();
    let second = sql();
    let settle = move |row: Row| {
        let existing = try_plan!(Reply::new(&row, "define_currency").first::<i16>()) as u32;
        if existing != scale {
            return Plan::fail(LedgerError::CurrencyConflict { code, existing, requested: scale });
        }
        Plan::done(Ok(()))
    };
    Plan::read_opt(first, move |row| match row {
        Some(row) => settle(row),
        None => Plan::read_opt(second, move |row| match row {
            Some(row) => settle(row),
            None => Plan::fail(LedgerError::InvalidInput {
                field: "currency code",
                reason: "concurrent definition did not settle".into(),
            }),
        }),
    })
}

/// Opens an account: checked, its currency's scale read, then one insert (not retried: after a
/// lost connection a repeat could open a second account).
pub(crate) fn open_account_plan(ctx: &Ctx, new: &NewAccount) -> Plan<Account> {
    if let Some(name) = &new.name {
        try_plan!(check_text("account name", name, ACCOUNT_NAME_BYTES_MAX));
    }
    if let Some(external_id) = &new.external_id {
        try_plan!(check_external_id(external_id));
        try_plan!(ctx.refuse_on_citus(
            "external ids",
            "Citus cannot keep them unique across shards without a table distributed by external id (docs/citus.md)",
        ));
    }
    if let Some(metadata) = &new.metadata {
        try_plan!(check_metadata("metadata", metadata));
    }
    if !is_currency_code(&new.currency) {
        return Plan::fail(LedgerError::UnknownCurrency { code: new.currency.clone() });
    }
    let ctx = *ctx;
    let new = new.clone();
    let scale = Sql::new("SELECT scale FROM wallet_ledger.currencies WHERE code = $1", params![new.currency.clone()]);
    Plan::read_opt(scale, move |row| {
        let Some(row) = row else {
            return Plan::fail(LedgerError::UnknownCurrency { code: new.currency });
        };
        let scale = try_plan!(Reply::new(&row, "currency").first::<i16>()) as u32;
        if let Some(floor) = new.min_balance {
            try_plan!(check_floor(floor, scale));
        }
        if let Some(ceiling) = new.max_balance {
            try_plan!(check_ceiling(ceiling, scale));
            try_plan!(ctx.refuse_in_citus("an account with a max_balance"));
        }
        let params = params![
            new.currency.clone(),
            new.min_balance,
            new.name.clone(),
            new.max_balance,
            new.external_id.clone(),
            new.metadata.clone()
        ];
        let insert = Sql::new(include_str!("../../sql/queries/open_account.sql"), params);
        Plan::once(insert, move |row| {
            Plan::done(match row {
                Ok(row) => protocol::rows::account(&row),
                Err(LedgerError::ConstraintViolation { constraint, .. }) if constraint == "accounts_external_id" => {
                    Err(LedgerError::ExternalIdTaken { external_id: new.external_id.unwrap_or_default() })
                }
                Err(LedgerError::ConstraintViolation { constraint, .. }) if constraint == "accounts_metadata_size" => {
                    Err(LedgerError::InvalidInput {
                        field: "metadata",
                        reason: "larger than METADATA_BYTES_MAX in the database's text form of the jsonb".into(),
                    })
                }
                Err(e) => Err(e),
            })
        })
    })
}

/// The account with this id.
pub(crate) fn account_plan(id: AccountId) -> Plan<Account> {
    Plan::read_opt(Sql::new(include_str!("../../sql/queries/account.sql"), params![id.0]), move |row| {
        Plan::done(match row {
            Some(row) => protocol::rows::account(&row),
            None => Err(LedgerError::AccountNotFound { account: id }),
        })
    })
}

/// The current balance of an account.
pub(crate) fn balance_plan(id: AccountId) -> Plan<Decimal> {
    Plan::read_opt(Sql::new("SELECT balance FROM wallet_ledger.accounts WHERE id = $1", params![id.0]), move |row| {
        Plan::done(match row {
            Some(row) => Reply::new(&row, "balance").first(),
            None => Err(LedgerError::AccountNotFound { account: id }),
        })
    })
}

/// An external id: 1 to [`EXTERNAL_ID_BYTES_MAX`] bytes, no NUL.
fn check_external_id(external_id: &str) -> Result<(), LedgerError> {
    check_text("external id", external_id, EXTERNAL_ID_BYTES_MAX)?;
    if external_id.is_empty() {
        return Err(LedgerError::InvalidInput { field: "external id", reason: "must not be empty".into() });
    }
    Ok(())
}

#[cfg(feature = "aio")]
impl crate::aio::Ledger {
    /// [`Ledger::define_currency`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::define_currency`].
    pub async fn define_currency(&self, code: &str, scale: u32) -> Result<(), LedgerError> {
        self.run(define_currency_plan(code, scale)).await
    }

    /// [`Ledger::open_account`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::open_account`].
    pub async fn open_account(&self, new: &NewAccount) -> Result<Account, LedgerError> {
        self.run(open_account_plan(&self.ctx(), new)).await
    }

    /// [`Ledger::account`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::account`].
    pub async fn account(&self, id: AccountId) -> Result<Account, LedgerError> {
        self.run(account_plan(id)).await
    }

    /// [`Ledger::balance`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::balance`].
    pub async fn balance(&self, id: AccountId) -> Result<Decimal, LedgerError> {
        self.run(balance_plan(id)).await
    }
}
