//! Holds: two-phase transfers. [`Ledger::hold`] reserves an amount on the source account
//! (authorization); the hold then ends exactly once: [`Ledger::capture`] moves all or part of it,
//! [`Ledger::void`] releases it, or it lapses at its expiry time and [`Ledger::expire_holds`]
//! releases it. While pending, the amount is not *available*: every transfer and hold checks
//! `balance - held` against the floor.

use crate::model::money::check_transfer_amount;

use postgres::types::Type;
use rust_decimal::Decimal;

use crate::driver::ledger::Ledger;
use crate::error::LedgerError;
use crate::model::entry::check_page;
use crate::model::hold::{Hold, HoldReceipt, PendingHold};
use crate::model::metadata::stored_metadata;
use crate::model::transfer::{internal_key, Receipt};
use crate::observe::op_span;
use crate::plan::{keyed, params, try_plan, CallError, Ctx, Plan, Sql};
use crate::protocol::hold::{capture_outcome, hold_outcome, void_outcome};
use crate::protocol::{self, Reply};
use crate::values::{AccountId, HoldId};

impl Ledger {
    /// Reserves `h.amount` on `h.from`: the account's available balance (balance minus open
    /// holds) must stay at or above its floor. Both accounts are locked in ascending id order.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use rust_decimal_macros::dec;
    /// use wallet_ledger::{Hold, HoldState, Ledger, LedgerError, NewAccount, Transfer};
    ///
    /// # let url = wallet_ledger_embedded::fresh_database("hold_docs")?;
    /// let ledger = Ledger::connect(&url)?;
    /// ledger.define_currency("EUR", 2)?;
    /// let issuer = ledger.open_account(&NewAccount::new("EUR").unbounded())?.id;
    /// let card = ledger.open_account(&NewAccount::new("EUR"))?.id;
    /// let hotel = ledger.open_account(&NewAccount::new("EUR"))?.id;
    /// ledger.transfer(&Transfer::new(issuer, card, dec!(300.00)))?;
    ///
    /// // Authorize 250.00 for a week: still on the card, no longer available.
    /// let auth = ledger.hold(&Hold::new(card, hotel, dec!(250.00)).expires_in(Duration::from_secs(7 * 86400)))?;
    /// assert_eq!(ledger.available(card)?, dec!(50.00));
    ///
    /// // Capture the final bill; the rest of the authorization is released.
    /// let paid = ledger.capture(auth.hold_id, Some(dec!(212.40)))?;
    /// assert_eq!((paid.from_balance, ledger.available(card)?), (dec!(87.60), dec!(87.60)));
    ///
    /// // A hold ends exactly once.
    /// let again = ledger.void(auth.hold_id).unwrap_err();
    /// assert!(matches!(again, LedgerError::HoldNotPending { state: HoldState::Captured, .. }));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Ledger::transfer`]: `InvalidAmount`, `SameAccount`, `AccountNotFound`,
    /// `CurrencyMismatch`, `InsufficientFunds` (on the available balance), `IdempotencyConflict`,
    /// `LockUnavailable`, `InvalidInput`, `OutcomeUnknown`. A refusal changes nothing.
    pub fn hold(&self, h: &Hold) -> Result<HoldReceipt, LedgerError> {
        let span = op_span!("hold", from = h.from.0, to = h.to.0, amount = %h.amount, key = h.idempotency_key.as_deref(), lock_wait = %self.inner.lock_wait);
        span.finish(self.inner.counters.record(self.run_hold(h)))
    }

    fn run_hold(&self, h: &Hold) -> Result<HoldReceipt, LedgerError> {
        self.run(hold_plan(&self.ctx(), h))
    }

    /// Ends a pending hold by moving `amount` (all of it when `None`) from its source to its
    /// destination; the rest of the reservation is released. The receipt is the capture's
    /// transfer.
    ///
    /// # Errors
    /// `HoldNotFound`; `HoldNotPending` when it already ended (or lapsed: `state` is then
    /// `Expired`); `InvalidAmount` for more than held, a non-positive amount or too many decimal
    /// places; `LockUnavailable`. A refusal changes nothing.
    pub fn capture(&self, hold_id: HoldId, amount: Option<Decimal>) -> Result<Receipt, LedgerError> {
        let span = op_span!("capture", hold = hold_id.0, amount = amount.map(|a| a.to_string()), lock_wait = %self.inner.lock_wait);
        span.finish(self.inner.counters.record(self.run_capture(hold_id, amount)))
    }

    fn run_capture(&self, hold_id: HoldId, amount: Option<Decimal>) -> Result<Receipt, LedgerError> {
        self.run(capture_plan(&self.ctx(), hold_id, amount))
    }

    /// Ends a pending hold without moving money: the reservation is released.
    ///
    /// # Errors
    /// `HoldNotFound`; `HoldNotPending` when it already ended or lapsed; `LockUnavailable`.
    pub fn void(&self, hold_id: HoldId) -> Result<(), LedgerError> {
        let span = op_span!("void", hold = hold_id.0, lock_wait = %self.inner.lock_wait);
        span.finish(self.inner.counters.record(self.run_void(hold_id)))
    }

    fn run_void(&self, hold_id: HoldId) -> Result<(), LedgerError> {
        self.run(void_plan(&self.ctx(), hold_id))
    }

    /// Releases up to `limit` lapsed holds and returns how many. Safe to run from many workers
    /// at once: holds are claimed with `FOR UPDATE SKIP LOCKED` (oldest expiry first), so
    /// workers never wait on each other's holds and never expire one twice; the source accounts
    /// are then locked in ascending id order, like every other path.
    ///
    /// # Errors
    /// Database and pool errors; `InvalidInput` when `limit` is 0.
    pub fn expire_holds(&self, limit: u32) -> Result<usize, LedgerError> {
        self.run(expire_plan(limit))
    }

    /// An account's available balance: its balance minus the amounts of its pending holds.
    /// (What a transfer may take out is this minus the floor, which `InsufficientFunds` reports
    /// as its `available`; for a credit line with a negative floor that is more than this.)
    ///
    /// # Errors
    /// `AccountNotFound`.
    pub fn available(&self, id: AccountId) -> Result<Decimal, LedgerError> {
        self.run(available_plan(id))
    }

    /// The pending holds on an account (oldest first), at most `limit` (1 to 10,000).
    ///
    /// # Errors
    /// `AccountNotFound`; `InvalidInput` for a bad `limit`.
    pub fn open_holds(&self, id: AccountId, limit: u32) -> Result<Vec<PendingHold>, LedgerError> {
        self.run(open_holds_plan(id, limit))
    }
}

/// The parameter types of `hold()`.
const HOLD_TYPES: [Type; 9] =
    [Type::INT8, Type::INT8, Type::NUMERIC, Type::INT8, Type::TEXT, Type::TEXT, Type::INT2, Type::INT4, Type::JSONB];

/// A hold: validated, then one call of `hold()`.
pub(crate) fn hold_plan(ctx: &Ctx, h: &Hold) -> Plan<HoldReceipt> {
    try_plan!(h.validate());
    try_plan!(ctx.refuse_metadata_on_citus("a hold with metadata", h.metadata.as_ref()));
    let key = h.idempotency_key.clone().unwrap_or_else(internal_key);
    let expires_in_ms = i64::try_from(h.expires_in.as_millis()).unwrap_or(i64::MAX);
    let (mode, timeout_ms) = protocol::lock_params(ctx.lock_wait);
    let (sql, count) = protocol::hold::statement(h);
    let mut params = params![h.from.0, h.to.0, h.amount, expires_in_ms, key.clone(), h.memo.clone(), mode, timeout_ms];
    if count == 9 {
        params.push(Box::new(stored_metadata(h.metadata.as_ref()).cloned()));
    }
    let h = h.clone();
    let sql = Sql::typed(sql, params, &HOLD_TYPES[..count]);
    keyed(sql, "holds_idempotency_key", key.clone(), h.amount, move |answer, _| {
        hold_outcome(&h, key, &answer.row, answer.maybe_applied)
    })
}

/// A capture: one call of `capture()`.
pub(crate) fn capture_plan(ctx: &Ctx, hold_id: HoldId, amount: Option<Decimal>) -> Plan<Receipt> {
    if let Some(amount) = amount {
        try_plan!(check_transfer_amount(amount));
    }
    let (mode, timeout_ms) = protocol::lock_params(ctx.lock_wait);
    let sql = Sql::typed(
        protocol::hold::CAPTURE,
        params![hold_id.0, amount, mode, timeout_ms],
        &[Type::INT8, Type::NUMERIC, Type::INT2, Type::INT4],
    );
    Plan::call(sql, None, move |answer| {
        Plan::done(
            answer
                .map_err(|e| ambiguous_hold(hold_id, e))
                .and_then(|answer| capture_outcome(hold_id, amount, &answer.row, answer.maybe_applied)),
        )
    })
}

/// A void: one call of `void()`.
pub(crate) fn void_plan(ctx: &Ctx, hold_id: HoldId) -> Plan<()> {
    let (mode, timeout_ms) = protocol::lock_params(ctx.lock_wait);
    let sql =
        Sql::typed(protocol::hold::VOID, params![hold_id.0, mode, timeout_ms], &[Type::INT8, Type::INT2, Type::INT4]);
    Plan::call(sql, None, move |answer| {
        Plan::done(
            answer
                .map_err(|e| ambiguous_hold(hold_id, e))
                .and_then(|answer| void_outcome(hold_id, &answer.row, answer.maybe_applied)),
        )
    })
}

/// Releases up to `limit` lapsed holds. Safe to retry: a repeat claims only holds that are
/// still pending and lapsed.
pub(crate) fn expire_plan(limit: u32) -> Plan<usize> {
    if limit == 0 {
        return Plan::fail(LedgerError::InvalidInput { field: "limit", reason: "must be at least 1".into() });
    }
    let limit = i32::try_from(limit).unwrap_or(i32::MAX);
    Plan::read_one(Sql::new("SELECT wallet_ledger.expire_holds($1)", params![limit]), |row| {
        Plan::done(Reply::new(&row, "expire_holds").first::<i32>().map(|n| n as usize))
    })
}

/// An account's balance minus its pending holds.
pub(crate) fn available_plan(id: AccountId) -> Plan<Decimal> {
    let sql = Sql::new("SELECT balance - held FROM wallet_ledger.accounts WHERE id = $1", params![id.0]);
    Plan::read_opt(sql, move |row| {
        Plan::done(match row {
            Some(row) => Reply::new(&row, "available").first(),
            None => Err(LedgerError::AccountNotFound { account: id }),
        })
    })
}

/// The pending holds on an account; an empty page asks whether the account exists.
pub(crate) fn open_holds_plan(id: AccountId, limit: u32) -> Plan<Vec<PendingHold>> {
    try_plan!(check_page(limit));
    Plan::read(Sql::new(protocol::hold::OPEN_HOLDS, params![id.0, i64::from(limit)]), move |rows| {
        let holds: Result<Vec<PendingHold>, LedgerError> = rows.iter().map(protocol::hold::pending_hold).collect();
        if rows.is_empty() {
            return crate::ops::accounts::account_plan(id).map(|_| Vec::new());
        }
        Plan::done(holds)
    })
}

/// Captures and voids are keyed by their hold: when retries run out with the outcome open,
/// the error names the hold, whose state settles it.
fn ambiguous_hold(hold: HoldId, e: CallError) -> LedgerError {
    match e {
        CallError::Failed(e) => e,
        CallError::Unknown(source) => LedgerError::HoldOutcomeUnknown { hold, source },
    }
}

#[cfg(feature = "aio")]
impl crate::aio::Ledger {
    /// [`Ledger::hold`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::hold`].
    pub async fn hold(&self, h: &Hold) -> Result<HoldReceipt, LedgerError> {
        let span = op_span!(async "hold", from = h.from.0, to = h.to.0, amount = %h.amount, key = h.idempotency_key.as_deref(), lock_wait = %self.inner.lock_wait);
        span.run(async { self.inner.counters.record(self.run(hold_plan(&self.ctx(), h)).await) }).await
    }

    /// [`Ledger::capture`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::capture`].
    pub async fn capture(&self, hold_id: HoldId, amount: Option<Decimal>) -> Result<Receipt, LedgerError> {
        let span = op_span!(async "capture", hold = hold_id.0, amount = amount.map(|a| a.to_string()), lock_wait = %self.inner.lock_wait);
        span.run(async { self.inner.counters.record(self.run(capture_plan(&self.ctx(), hold_id, amount)).await) }).await
    }

    /// [`Ledger::void`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::void`].
    pub async fn void(&self, hold_id: HoldId) -> Result<(), LedgerError> {
        let span = op_span!(async "void", hold = hold_id.0, lock_wait = %self.inner.lock_wait);
        span.run(async { self.inner.counters.record(self.run(void_plan(&self.ctx(), hold_id)).await) }).await
    }

    /// [`Ledger::expire_holds`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::expire_holds`].
    pub async fn expire_holds(&self, limit: u32) -> Result<usize, LedgerError> {
        self.run(expire_plan(limit)).await
    }

    /// [`Ledger::available`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::available`].
    pub async fn available(&self, id: AccountId) -> Result<Decimal, LedgerError> {
        self.run(available_plan(id)).await
    }

    /// [`Ledger::open_holds`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::open_holds`].
    pub async fn open_holds(&self, id: AccountId, limit: u32) -> Result<Vec<PendingHold>, LedgerError> {
        self.run(open_holds_plan(id, limit)).await
    }
}
