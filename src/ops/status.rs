//! Account states and limits: [`Ledger::freeze`], [`Ledger::unfreeze`], [`Ledger::close`],
//! [`Ledger::set_min_balance`], [`Ledger::set_max_balance`]. Each is one call of a SQL function
//! that locks the one account row (the lock every transfer on it takes), so a transfer either
//! committed before the change or sees it; none is ever decided half before, half after.

use postgres::error::SqlState;
use rust_decimal::Decimal;

use crate::driver::ledger::Ledger;
use crate::error::LedgerError;
use crate::limits::CURRENCY_SCALE_MAX;
use crate::model::account::Account;
use crate::model::lock_wait::LockWait;
use crate::model::money::{check_ceiling, check_floor};
use crate::observe::op_span;
use crate::plan::{one_row, params, try_plan, Ctx, Plan, Sql};
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
        self.change_limits(account, LimitChange::floor(floor)?)
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
        self.change_limits(account, LimitChange::ceiling(ceiling)?)
    }

    fn change_status(&self, account: AccountId, action: StatusAction) -> Result<Account, LedgerError> {
        let span =
            op_span!("set_status", account = account.0, action = action.as_str(), lock_wait = %self.inner.lock_wait);
        span.finish(self.inner.counters.record(self.run(status_plan(&self.ctx(), account, action))))
    }

    fn change_limits(&self, account: AccountId, change: LimitChange) -> Result<Account, LedgerError> {
        let span = op_span!("set_limits", account = account.0, lock_wait = %self.inner.lock_wait);
        span.finish(self.inner.counters.record(self.run(limits_plan(&self.ctx(), account, change))))
    }
}

/// A change of an account's limits, checked before anything is sent: `Some(x)` sets that
/// limit to `x` (`None` inside: unbounded), `None` leaves it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LimitChange {
    floor: Option<Option<Decimal>>,
    ceiling: Option<Option<Decimal>>,
}

impl LimitChange {
    /// Sets the floor: at most zero, with at most [`CURRENCY_SCALE_MAX`] decimal places (the
    /// currency's own scale is checked by the server).
    pub(crate) fn floor(floor: Option<Decimal>) -> Result<LimitChange, LedgerError> {
        if let Some(floor) = floor {
            check_floor(floor, CURRENCY_SCALE_MAX)?;
        }
        Ok(LimitChange { floor: Some(floor), ceiling: None })
    }

    /// Sets the ceiling: at least zero, with at most [`CURRENCY_SCALE_MAX`] decimal places.
    pub(crate) fn ceiling(ceiling: Option<Decimal>) -> Result<LimitChange, LedgerError> {
        if let Some(ceiling) = ceiling {
            check_ceiling(ceiling, CURRENCY_SCALE_MAX)?;
        }
        Ok(LimitChange { floor: None, ceiling: Some(ceiling) })
    }
}

/// A freeze, unfreeze or close: one call of `set_status()`.
pub(crate) fn status_plan(ctx: &Ctx, account: AccountId, action: StatusAction) -> Plan<Account> {
    try_plan!(ctx.refuse_in_citus(action.as_str()));
    let (mode, timeout_ms) = protocol::lock_params(ctx.lock_wait);
    let sql = Sql::new(SET_STATUS, params![account.0, action.as_str(), mode, timeout_ms]);
    state_call(ctx, sql, account, "set_status", None)
}

/// A change of limits: one call of `set_limits()`.
pub(crate) fn limits_plan(ctx: &Ctx, account: AccountId, change: LimitChange) -> Plan<Account> {
    try_plan!(ctx.refuse_in_citus("set_limits"));
    let (mode, timeout_ms) = protocol::lock_params(ctx.lock_wait);
    let (set_min, min) = (change.floor.is_some(), change.floor.flatten());
    let (set_max, max) = (change.ceiling.is_some(), change.ceiling.flatten());
    let sql = Sql::new(SET_LIMITS, params![account.0, set_min, min, set_max, max, mode, timeout_ms]);
    state_call(ctx, sql, account, "set_limits", min.or(max))
}

/// One state or limit change: safe to repeat (each asks for a state, not a step), so it is sent
/// as a read, its transient failures retried whatever happened to an earlier attempt. A lock the
/// [`LockWait`] policy refused is [`LedgerError::LockUnavailable`].
fn state_call(
    ctx: &Ctx,
    sql: Sql,
    account: AccountId,
    function: &'static str,
    limit: Option<Decimal>,
) -> Plan<Account> {
    let lock_wait = ctx.lock_wait;
    Plan::Read {
        sql,
        then: Box::new(move |rows| {
            let row = try_plan!(rows.map_err(|e| lock_refusal(lock_wait, e)).and_then(one_row));
            Plan::done(account_outcome(account, &row, function, limit))
        }),
    }
}

/// A lock refused by the [`LockWait`] policy `lock_wait` (SQLSTATE 55P03, `lock_not_available`)
/// is [`LedgerError::LockUnavailable`]; any other error stays as it is.
pub(crate) fn lock_refusal(lock_wait: LockWait, error: LedgerError) -> LedgerError {
    match error {
        LedgerError::Database(source) if source.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
            LedgerError::LockUnavailable { policy: lock_wait.to_string(), source }
        }
        other => other,
    }
}

#[cfg(feature = "aio")]
impl crate::aio::Ledger {
    /// [`Ledger::freeze`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::freeze`].
    pub async fn freeze(&self, account: AccountId) -> Result<Account, LedgerError> {
        self.change_status(account, StatusAction::Freeze).await
    }

    /// [`Ledger::unfreeze`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::unfreeze`].
    pub async fn unfreeze(&self, account: AccountId) -> Result<Account, LedgerError> {
        self.change_status(account, StatusAction::Unfreeze).await
    }

    /// [`Ledger::close`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::close`].
    pub async fn close(&self, account: AccountId) -> Result<Account, LedgerError> {
        self.change_status(account, StatusAction::Close).await
    }

    /// [`Ledger::set_min_balance`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::set_min_balance`].
    pub async fn set_min_balance(&self, account: AccountId, floor: Option<Decimal>) -> Result<Account, LedgerError> {
        self.change_limits(account, LimitChange::floor(floor)?).await
    }

    /// [`Ledger::set_max_balance`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::set_max_balance`].
    pub async fn set_max_balance(&self, account: AccountId, ceiling: Option<Decimal>) -> Result<Account, LedgerError> {
        self.change_limits(account, LimitChange::ceiling(ceiling)?).await
    }

    async fn change_status(&self, account: AccountId, action: StatusAction) -> Result<Account, LedgerError> {
        let span = op_span!(async "set_status", account = account.0, action = action.as_str(), lock_wait = %self.inner.lock_wait);
        span.run(async { self.inner.counters.record(self.run(status_plan(&self.ctx(), account, action)).await) }).await
    }

    async fn change_limits(&self, account: AccountId, change: LimitChange) -> Result<Account, LedgerError> {
        let span = op_span!(async "set_limits", account = account.0, lock_wait = %self.inner.lock_wait);
        span.run(async { self.inner.counters.record(self.run(limits_plan(&self.ctx(), account, change)).await) }).await
    }
}
