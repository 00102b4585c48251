//! Holds: two-phase transfers. [`Ledger::hold`] reserves an amount on the source account
//! (authorization); the hold then ends exactly once: [`Ledger::capture`] moves all or part of it,
//! [`Ledger::void`] releases it, or it lapses at its expiry time and [`Ledger::expire_holds`]
//! releases it. While pending, the amount is not *available*: every transfer and hold checks
//! `balance - held` against the floor.

use crate::model::money::check_transfer_amount;

use postgres::types::ToSql;
use rust_decimal::Decimal;

use crate::driver::call::CallError;
use crate::driver::ledger::Ledger;
use crate::driver::observe::op_span;
use crate::error::LedgerError;
use crate::model::entry::check_page;
use crate::model::hold::{Hold, HoldReceipt, PendingHold};
use crate::model::metadata::stored_metadata;
use crate::model::transfer::{internal_key, Receipt};
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
        h.validate()?;
        self.refuse_metadata_on_citus("a hold with metadata", h.metadata.as_ref())?;
        let key = h.idempotency_key.clone().unwrap_or_else(internal_key);
        let expires_in_ms = i64::try_from(h.expires_in.as_millis()).unwrap_or(i64::MAX);
        let (mode, timeout_ms) = protocol::lock_params(self.inner.lock_wait);
        let metadata = stored_metadata(h.metadata.as_ref());
        let params: [&(dyn ToSql + Sync); 9] =
            [&h.from.0, &h.to.0, &h.amount, &expires_in_ms, &key, &h.memo, &mode, &timeout_ms, &metadata];
        let (sql, count) = protocol::hold::statement(h);
        let answer = self.keyed_call(sql, &params[..count], "holds_idempotency_key", &key, h.amount)?;
        hold_outcome(h, key, &answer.row, answer.maybe_applied)
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
        if let Some(amount) = amount {
            check_transfer_amount(amount)?;
        }
        let (mode, timeout_ms) = protocol::lock_params(self.inner.lock_wait);
        let params: [&(dyn ToSql + Sync); 4] = [&hold_id.0, &amount, &mode, &timeout_ms];
        let answer = self.call(protocol::hold::CAPTURE, &params, None).map_err(|e| ambiguous_hold(hold_id, e))?;
        capture_outcome(hold_id, amount, &answer.row, answer.maybe_applied)
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
        let (mode, timeout_ms) = protocol::lock_params(self.inner.lock_wait);
        let params: [&(dyn ToSql + Sync); 3] = [&hold_id.0, &mode, &timeout_ms];
        let answer = self.call(protocol::hold::VOID, &params, None).map_err(|e| ambiguous_hold(hold_id, e))?;
        void_outcome(hold_id, &answer.row, answer.maybe_applied)
    }

    /// Releases up to `limit` lapsed holds and returns how many. Safe to run from many workers
    /// at once: holds are claimed with `FOR UPDATE SKIP LOCKED` (oldest expiry first), so
    /// workers never wait on each other's holds and never expire one twice; the source accounts
    /// are then locked in ascending id order, like every other path.
    ///
    /// # Errors
    /// Database and pool errors; `InvalidInput` when `limit` is 0.
    pub fn expire_holds(&self, limit: u32) -> Result<usize, LedgerError> {
        if limit == 0 {
            return Err(LedgerError::InvalidInput { field: "limit", reason: "must be at least 1".into() });
        }
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        // Safe to retry: a repeat claims only holds that are still pending and lapsed.
        self.idempotent(|conn| {
            let statement = conn.statement("SELECT wallet_ledger.expire_holds($1)")?;
            let row = conn.client().query_one(&statement, &[&limit])?;
            let expired: i32 = Reply::new(&row, "expire_holds").first()?;
            Ok(expired as usize)
        })
    }

    /// An account's available balance: its balance minus the amounts of its pending holds.
    /// (What a transfer may take out is this minus the floor, which `InsufficientFunds` reports
    /// as its `available`; for a credit line with a negative floor that is more than this.)
    ///
    /// # Errors
    /// `AccountNotFound`.
    pub fn available(&self, id: AccountId) -> Result<Decimal, LedgerError> {
        let row = self.idempotent(|conn| {
            let statement = conn.statement("SELECT balance - held FROM wallet_ledger.accounts WHERE id = $1")?;
            Ok(conn.client().query_opt(&statement, &[&id.0])?)
        })?;
        match row {
            Some(row) => Reply::new(&row, "available").first(),
            None => Err(LedgerError::AccountNotFound { account: id }),
        }
    }

    /// The pending holds on an account (oldest first), at most `limit` (1 to 10,000).
    ///
    /// # Errors
    /// `AccountNotFound`; `InvalidInput` for a bad `limit`.
    pub fn open_holds(&self, id: AccountId, limit: u32) -> Result<Vec<PendingHold>, LedgerError> {
        check_page(limit)?;
        let rows = self.idempotent(|conn| {
            let statement = conn.statement(protocol::hold::OPEN_HOLDS)?;
            Ok(conn.client().query(&statement, &[&id.0, &i64::from(limit)])?)
        })?;
        if rows.is_empty() {
            self.account(id)?;
        }
        rows.iter().map(protocol::hold::pending_hold).collect()
    }
}

/// Captures and voids are keyed by their hold: when retries run out with the outcome open,
/// the error names the hold, whose state settles it.
fn ambiguous_hold(hold: HoldId, e: CallError) -> LedgerError {
    match e {
        CallError::Failed(e) => e,
        CallError::Unknown(source) => LedgerError::HoldOutcomeUnknown { hold, source },
    }
}
