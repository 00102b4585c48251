//! Account states and limits: [`Ledger::freeze`], [`Ledger::unfreeze`], [`Ledger::close`],
//! [`Ledger::set_min_balance`], [`Ledger::set_max_balance`]. Each is one call of a SQL function
//! that locks the one account row (the lock every transfer on it takes), so a transfer either
//! committed before the change or sees it; none is ever decided half before, half after.

use postgres::types::ToSql;
use rust_decimal::Decimal;

use crate::driver::ledger::Ledger;
use crate::error::LedgerError;
use crate::limits::CURRENCY_SCALE_MAX;
use crate::model::account::Account;
use crate::model::money::{check_ceiling, check_floor};
use crate::observe::op_span;
use crate::protocol;
use crate::protocol::status::{account_outcome, StatusAction, SET_LIMITS, SET_STATUS};
use crate::values::AccountId;

impl Ledger {
    /// Freezes an account: from now on it pays nothing (transfers, postings, new holds, and
    /// captures of holds taken before the freeze are refused with [`LedgerError::AccountFrozen`]);
    /// it still receives, and its holds can still be voided or expire. Idempotent.
    ///
    /// The change takes the account's row lock, like a transfer: a transfer on it either
    /// committed before the freeze or is refused after it.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use rust_decimal_macros::dec;
    /// use wallet_ledger::{AccountId, AccountStatus, Ledger, LedgerError, Transfer};
    ///
    /// # let (url, suspect, shop) = ("", AccountId(2), AccountId(3));
    /// let ledger = Ledger::connect(url)?;
    /// assert_eq!(ledger.freeze(suspect)?.status, AccountStatus::Frozen);
    /// let err = ledger.transfer(&Transfer::new(suspect, shop, dec!(1.00))).unwrap_err();
    /// assert!(matches!(err, LedgerError::AccountFrozen { .. }));
    /// ledger.unfreeze(suspect)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`LedgerError::AccountNotFound`], [`LedgerError::AccountClosed`],
    /// [`LedgerError::LockUnavailable`], [`LedgerError::Unsupported`] in Citus mode.
    pub fn freeze(&self, account: AccountId) -> Result<Account, LedgerError> {
        self.change_status(account, StatusAction::Freeze)
    }

    /// Opens a frozen account again. Idempotent (an open account stays open).
    ///
    /// # Errors
    /// As [`Ledger::freeze`].
    pub fn unfreeze(&self, account: AccountId) -> Result<Account, LedgerError> {
        self.change_status(account, StatusAction::Unfreeze)
    }

    /// Closes an account for good: it needs a zero balance and nothing held, and from then on
    /// every movement in or out is refused with [`LedgerError::AccountClosed`]. Closing a closed
    /// account again answers with it; nothing reopens it.
    ///
    /// # Errors
    /// [`LedgerError::AccountNotEmpty`] (with its balance and held amount),
    /// [`LedgerError::AccountNotFound`], [`LedgerError::LockUnavailable`],
    /// [`LedgerError::Unsupported`] in Citus mode.
    pub fn close(&self, account: AccountId) -> Result<Account, LedgerError> {
        self.change_status(account, StatusAction::Close)
    }

    /// Sets the account's floor (`None` = unbounded, a system account), under its row lock. A
    /// floor the account's available balance (balance minus holds) is already below is refused,
    /// so an account never sits outside its own limits.
    ///
    /// # Errors
    /// [`LedgerError::LimitBreached`]; [`LedgerError::InvalidAmount`] for a positive floor or one
    /// with more decimal places than the currency; [`LedgerError::AccountNotFound`],
    /// [`LedgerError::AccountClosed`], [`LedgerError::LockUnavailable`],
    /// [`LedgerError::Unsupported`] in Citus mode.
    pub fn set_min_balance(&self, account: AccountId, floor: Option<Decimal>) -> Result<Account, LedgerError> {
        if let Some(floor) = floor {
            check_floor(floor, CURRENCY_SCALE_MAX)?;
        }
        self.change_limits(account, Some(floor), None)
    }

    /// Sets the account's ceiling (`None` = none), under its row lock. A ceiling below the
    /// current balance is refused.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use rust_decimal_macros::dec;
    /// use wallet_ledger::{AccountId, Ledger};
    ///
    /// # let (url, wallet) = ("", AccountId(2));
    /// let ledger = Ledger::connect(url)?;
    /// let capped = ledger.set_max_balance(wallet, Some(dec!(150.00)))?;
    /// assert_eq!(capped.max_balance, Some(dec!(150.00)));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`LedgerError::LimitBreached`]; [`LedgerError::InvalidAmount`] for a negative ceiling or
    /// one with more decimal places than the currency; otherwise as
    /// [`Ledger::set_min_balance`].
    pub fn set_max_balance(&self, account: AccountId, ceiling: Option<Decimal>) -> Result<Account, LedgerError> {
        if let Some(ceiling) = ceiling {
            check_ceiling(ceiling, CURRENCY_SCALE_MAX)?;
        }
        self.change_limits(account, None, Some(ceiling))
    }

    fn change_status(&self, account: AccountId, action: StatusAction) -> Result<Account, LedgerError> {
        let span =
            op_span!("set_status", account = account.0, action = action.as_str(), lock_wait = %self.inner.lock_wait);
        let result = self.refuse_in_citus(action.as_str()).and_then(|()| {
            let (mode, timeout_ms) = protocol::lock_params(self.inner.lock_wait);
            let params: [&(dyn ToSql + Sync); 4] = [&account.0, &action.as_str(), &mode, &timeout_ms];
            self.state_call(SET_STATUS, &params, account, "set_status", None)
        });
        span.finish(self.inner.counters.record(result))
    }

    /// `Some(x)` sets that limit to `x`; `None` leaves it.
    fn change_limits(
        &self,
        account: AccountId,
        floor: Option<Option<Decimal>>,
        ceiling: Option<Option<Decimal>>,
    ) -> Result<Account, LedgerError> {
        let span = op_span!("set_limits", account = account.0, lock_wait = %self.inner.lock_wait);
        let result = self.refuse_in_citus("set_limits").and_then(|()| {
            let (mode, timeout_ms) = protocol::lock_params(self.inner.lock_wait);
            let (set_min, min) = (floor.is_some(), floor.flatten());
            let (set_max, max) = (ceiling.is_some(), ceiling.flatten());
            let params: [&(dyn ToSql + Sync); 7] = [&account.0, &set_min, &min, &set_max, &max, &mode, &timeout_ms];
            self.state_call(SET_LIMITS, &params, account, "set_limits", min.or(max))
        });
        span.finish(self.inner.counters.record(result))
    }

    /// One state or limit change: safe to repeat (each asks for a state, not a step), so
    /// transient failures are retried whatever happened to an earlier attempt.
    fn state_call(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
        account: AccountId,
        function: &'static str,
        limit: Option<Decimal>,
    ) -> Result<Account, LedgerError> {
        let row = self.idempotent(|conn| {
            let statement = conn.statement(sql)?;
            conn.client().query_one(&statement, params).map_err(|e| self.lock_refusal(e))
        })?;
        account_outcome(account, &row, function, limit)
    }

    /// A lock refused by the [`LockWait`](crate::LockWait) policy is `LockUnavailable`.
    pub(crate) fn lock_refusal(&self, error: postgres::Error) -> LedgerError {
        if error.code() == Some(&postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
            return LedgerError::LockUnavailable { policy: self.inner.lock_wait.to_string(), source: error };
        }
        error.into()
    }

    /// [`LedgerError::Unsupported`] in Citus mode for the account rules of this module and
    /// reversals.
    pub(crate) fn refuse_in_citus(&self, operation: &'static str) -> Result<(), LedgerError> {
        self.ctx().refuse_in_citus(operation)
    }
}
