//! Accounts: the request to open one, and the stored account.

use std::time::SystemTime;

use rust_decimal::Decimal;
use serde_json::Value;

use crate::values::{AccountId, AccountStatus};

/// What to open: currency, optional name, and the floor the balance may never go below.
///
/// The floor is `0` unless set: a plain wallet cannot be overdrawn. A negative floor is a credit
/// line. [`unbounded`](NewAccount::unbounded) removes the floor: that is the system (issuer,
/// "world") account through which money enters and leaves the ledger. Every account opens with
/// a balance of zero.
///
/// ```
/// use rust_decimal_macros::dec;
/// use wallet_ledger::NewAccount;
///
/// let wallet = NewAccount::new("USD").name("alice");
/// let credit = NewAccount::new("USD").min_balance(dec!(-500.00));
/// let issuer = NewAccount::new("USD").name("issuer").unbounded();
/// assert_eq!(wallet.floor(), Some(dec!(0)));
/// assert_eq!(credit.floor(), Some(dec!(-500.00)));
/// assert_eq!(issuer.floor(), None);
///
/// // An e-money wallet with a regulatory cap: credits beyond 150.00 are refused.
/// let capped = NewAccount::new("EUR").max_balance(dec!(150.00));
/// assert_eq!(capped.ceiling(), Some(dec!(150.00)));
/// ```
///
/// The caller's own data goes with it: an [`external_id`](NewAccount::external_id) (the
/// backend's name for the wallet, unique per ledger, to find it again with
/// [`Ledger::find_account_by_external_id`](crate::Ledger::find_account_by_external_id)) and
/// [`metadata`](NewAccount::metadata), a JSON object that listings can filter on.
///
/// ```
/// use serde_json::json;
/// use wallet_ledger::NewAccount;
///
/// let wallet = NewAccount::new("USD")
///     .name("alice")
///     .external_id("user-42")
///     .metadata(json!({"user_id": 42, "tier": "gold"}));
/// assert_eq!(wallet.external_id_ref(), Some("user-42"));
/// ```
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    pub(crate) currency: String,
    pub(crate) name: Option<String>,
    pub(crate) min_balance: Option<Decimal>,
    pub(crate) max_balance: Option<Decimal>,
    pub(crate) external_id: Option<String>,
    pub(crate) metadata: Option<Value>,
}

impl NewAccount {
    /// An account in `currency` (defined before with `define_currency`), floor 0, no name.
    pub fn new(currency: &str) -> Self {
        NewAccount {
            currency: currency.to_string(),
            name: None,
            min_balance: Some(Decimal::ZERO),
            max_balance: None,
            external_id: None,
            metadata: None,
        }
    }

    /// A name to show in listings; not unique, not used by the ledger.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The floor: the lowest balance allowed. Default `0`; negative for a credit line.
    /// A positive floor is refused by `open_account` (the account opens at zero).
    pub fn min_balance(mut self, floor: Decimal) -> Self {
        self.min_balance = Some(floor);
        self
    }

    /// No floor at all: a system account that may go arbitrarily negative.
    pub fn unbounded(mut self) -> Self {
        self.min_balance = None;
        self
    }

    /// The ceiling: the highest balance allowed; a credit that would go above it is refused
    /// with [`LedgerError::BalanceLimitExceeded`](crate::LedgerError::BalanceLimitExceeded).
    /// Default: none. Must be at least 0 (the account opens at zero). Refused in Citus mode.
    pub fn max_balance(mut self, ceiling: Decimal) -> Self {
        self.max_balance = Some(ceiling);
        self
    }

    /// The ceiling this account will have (`None` = none).
    pub fn ceiling(&self) -> Option<Decimal> {
        self.max_balance
    }

    /// The caller's own id for this account (a user id, a wallet number): unique per ledger,
    /// 1 to [`EXTERNAL_ID_BYTES_MAX`](crate::limits::EXTERNAL_ID_BYTES_MAX) bytes, no NUL.
    /// Another account with the same external id makes `open_account` refuse with
    /// [`LedgerError::ExternalIdTaken`](crate::LedgerError::ExternalIdTaken). Not in Citus mode
    /// ([`LedgerError::Unsupported`](crate::LedgerError::Unsupported); `docs/citus.md`).
    pub fn external_id(mut self, external_id: impl Into<String>) -> Self {
        self.external_id = Some(external_id.into());
        self
    }

    /// The caller's data about this account: a JSON object of at most
    /// [`METADATA_BYTES_MAX`](crate::limits::METADATA_BYTES_MAX) bytes, without NUL characters
    /// (`jsonb` cannot store them); anything else is refused with
    /// [`LedgerError::InvalidInput`](crate::LedgerError::InvalidInput). Stored as `jsonb`;
    /// [`AccountFilter::metadata`](crate::AccountFilter::metadata) finds accounts by it. Default: `{}`.
    pub fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// The external id this account will have, if any.
    pub fn external_id_ref(&self) -> Option<&str> {
        self.external_id.as_deref()
    }

    /// The currency code.
    pub fn currency(&self) -> &str {
        &self.currency
    }

    /// The floor this account will have (`None` = unbounded).
    pub fn floor(&self) -> Option<Decimal> {
        self.min_balance
    }
}

/// An account as stored.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Account {
    /// Its id.
    pub id: AccountId,
    /// Its currency code.
    pub currency: String,
    /// The current balance.
    pub balance: Decimal,
    /// The floor (`None` = unbounded).
    pub min_balance: Option<Decimal>,
    /// The ceiling (`None` = none): credits never take the balance above it.
    pub max_balance: Option<Decimal>,
    /// Open, frozen or closed.
    pub status: AccountStatus,
    /// The sum of the account's pending holds; `balance - held` is what is available.
    pub held: Decimal,
    /// How many entries the account has: incremented by every transfer that touches it.
    pub version: i64,
    /// The name given at opening, if any.
    pub name: Option<String>,
    /// When it was opened (server clock).
    pub created_at: SystemTime,
    /// The caller's id for it, given at opening ([`NewAccount::external_id`]).
    pub external_id: Option<String>,
    /// The caller's data given at opening ([`NewAccount::metadata`]): always a JSON object,
    /// `{}` when none was given (so a reader never has to tell "none" from "empty").
    pub metadata: Value,
}
