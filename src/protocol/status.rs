//! `wallet_ledger.set_status()` and `set_limits()`: their statements and the decoding of their
//! answers.

use postgres::Row;
use rust_decimal::Decimal;

use crate::error::LedgerError;
use crate::model::account::Account;
use crate::protocol::{rows, Outcome, Reply};
use crate::values::AccountId;

/// Freezes, unfreezes or closes an account; parameters `(account, action, lock_mode, timeout_ms)`.
pub(crate) const SET_STATUS: &str = include_str!("../../sql/queries/set_status.sql");
/// Changes an account's limits; parameters `(account, set_min, min, set_max, max, lock_mode,
/// timeout_ms)`.
pub(crate) const SET_LIMITS: &str = include_str!("../../sql/queries/set_limits.sql");

/// What [`SET_STATUS`] is asked to do: its `action` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusAction {
    Freeze,
    Unfreeze,
    Close,
}

impl StatusAction {
    /// The name the SQL function takes.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StatusAction::Freeze => "freeze",
            StatusAction::Unfreeze => "unfreeze",
            StatusAction::Close => "close",
        }
    }
}

/// Turns `set_status()`'s or `set_limits()`'s answer into the account as changed, or a typed
/// refusal. `limit`: the limit asked for, named by a refusal of its decimal places.
pub(crate) fn account_outcome(
    account: AccountId,
    row: &Row,
    function: &'static str,
    limit: Option<Decimal>,
) -> Result<Account, LedgerError> {
    let reply = Reply::new(row, function);
    match reply.outcome()? {
        Outcome::Ok => rows::account(row),
        Outcome::AccountNotFound => Err(LedgerError::AccountNotFound { account }),
        Outcome::AccountClosed => Err(LedgerError::AccountClosed { account }),
        Outcome::AccountNotEmpty => {
            Err(LedgerError::AccountNotEmpty { account, balance: reply.get("balance")?, held: reply.get("held")? })
        }
        Outcome::LimitBreached => Err(LedgerError::LimitBreached {
            account,
            balance: reply.get("balance")?,
            held: reply.get("held")?,
            min_balance: reply.get("min_balance")?,
            max_balance: reply.get("max_balance")?,
        }),
        Outcome::InvalidScale => Err(LedgerError::InvalidAmount {
            amount: limit.unwrap_or_default(),
            reason: format!("more decimal places than {} has", reply.get::<String>("currency")?),
        }),
        other => Err(reply.misplaced(other)),
    }
}
