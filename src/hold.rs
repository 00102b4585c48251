//! Holds: two-phase transfers. [`Ledger::hold`] reserves an amount on the source account
//! (authorization); the hold then ends exactly once: [`Ledger::capture`] moves all or part of it,
//! [`Ledger::void`] releases it, or it lapses at its expiry time and [`Ledger::expire_holds`]
//! releases it. While pending, the amount is not *available*: every transfer and hold checks
//! `balance - held` against the floor.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use postgres::types::ToSql;
use postgres::Row;
use rust_decimal::Decimal;

use crate::account::AccountId;
use crate::call::CallError;
use crate::error::{KeyHolder, LedgerError};
use crate::ledger::Ledger;
use crate::limits::{HOLD_EXPIRY_DEFAULT, HOLD_EXPIRY_MAX};
use crate::money::check_transfer_amount;
use crate::observe::op_span;
use crate::transfer::{check_key_and_memo, internal_key, Receipt, TransferId};

/// The id of a hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HoldId(pub i64);

impl fmt::Display for HoldId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a hold is in its life. Only `Pending` can change, and only once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HoldState {
    /// Reserved, not yet ended (or lapsed but not yet released by an expiry worker, which
    /// capture and void report as `Expired`).
    Pending,
    /// Ended by a capture: money moved.
    Captured,
    /// Ended by a void: released without moving money.
    Voided,
    /// Ended by its expiry time.
    Expired,
}

impl HoldState {
    /// The lowercase name used in the database and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldState::Pending => "pending",
            HoldState::Captured => "captured",
            HoldState::Voided => "voided",
            HoldState::Expired => "expired",
        }
    }
}

impl fmt::Display for HoldState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HoldState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pending" => Ok(HoldState::Pending),
            "captured" => Ok(HoldState::Captured),
            "voided" => Ok(HoldState::Voided),
            "expired" => Ok(HoldState::Expired),
            other => Err(format!("unknown hold state {other:?}")),
        }
    }
}

/// A request to reserve `amount` on `from` for a later capture to `to`.
///
/// ```
/// use std::time::Duration;
/// use rust_decimal_macros::dec;
/// use wallet_ledger::{AccountId, Hold};
///
/// let auth = Hold::new(AccountId(1), AccountId(2), dec!(80.00))
///     .expires_in(Duration::from_secs(7 * 24 * 3600))
///     .idempotency_key("card-auth-991");
/// assert_eq!(auth.amount, dec!(80.00));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Hold {
    /// The account the amount is reserved on.
    pub from: AccountId,
    /// The account a capture pays.
    pub to: AccountId,
    /// How much is reserved.
    pub amount: Decimal,
    /// How long the hold stays pending before it lapses. Default 7 days.
    pub expires_in: Duration,
    /// Idempotency key: a second call with the same key and content returns the first hold.
    pub idempotency_key: Option<String>,
    /// Free text, also stored on the capture's transfer.
    pub memo: Option<String>,
}

impl Hold {
    /// A hold that lapses after 7 days unless set otherwise.
    pub fn new(from: AccountId, to: AccountId, amount: Decimal) -> Self {
        Hold { from, to, amount, expires_in: HOLD_EXPIRY_DEFAULT, idempotency_key: None, memo: None }
    }

    /// How long until the hold lapses (at most 366 days).
    pub fn expires_in(mut self, expires_in: Duration) -> Self {
        self.expires_in = expires_in;
        self
    }

    /// Sets the idempotency key (at most 256 bytes; keys starting with `~` are reserved).
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Sets the memo (at most 1024 bytes).
    pub fn memo(mut self, memo: impl Into<String>) -> Self {
        self.memo = Some(memo.into());
        self
    }

    pub(crate) fn validate(&self) -> Result<(), LedgerError> {
        check_transfer_amount(self.amount)?;
        if self.from == self.to {
            return Err(LedgerError::SameAccount { account: self.from });
        }
        if self.expires_in.is_zero() || self.expires_in > HOLD_EXPIRY_MAX {
            return Err(LedgerError::InvalidInput {
                field: "expires_in",
                reason: format!("{:?} is not between 1 ms and {:?}", self.expires_in, HOLD_EXPIRY_MAX),
            });
        }
        check_key_and_memo(self.idempotency_key.as_deref(), self.memo.as_deref())
    }
}

/// Proof that a hold is pending.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HoldReceipt {
    /// The hold.
    pub hold_id: HoldId,
    /// When it lapses (server clock).
    pub expires_at: SystemTime,
    /// `true` when an earlier call with the same idempotency key created this hold.
    pub replayed: bool,
}

/// A pending hold, as listed by [`Ledger::open_holds`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PendingHold {
    /// The hold.
    pub id: HoldId,
    /// The account the amount is reserved on.
    pub from: AccountId,
    /// The account a capture pays.
    pub to: AccountId,
    /// The reserved amount.
    pub amount: Decimal,
    /// When it lapses.
    pub expires_at: SystemTime,
    /// Its memo.
    pub memo: Option<String>,
    /// When it was created.
    pub created_at: SystemTime,
}

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
    /// # let url = wallet_ledger::embedded::fresh_database("hold_docs")?;
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
        let key = h.idempotency_key.clone().unwrap_or_else(internal_key);
        let expires_in_ms = i64::try_from(h.expires_in.as_millis()).unwrap_or(i64::MAX);
        let (mode, timeout_ms) = self.inner.lock_wait.as_params();
        let params: [&(dyn ToSql + Sync); 8] =
            [&h.from.0, &h.to.0, &h.amount, &expires_in_ms, &key, &h.memo, &mode, &timeout_ms];
        let sql = include_str!("../sql/queries/hold.sql");
        let answer = self.keyed_call(sql, &params, "holds_idempotency_key", &key, h.amount)?;
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
        let (mode, timeout_ms) = self.inner.lock_wait.as_params();
        let params: [&(dyn ToSql + Sync); 4] = [&hold_id.0, &amount, &mode, &timeout_ms];
        let answer = self
            .call(include_str!("../sql/queries/capture.sql"), &params, None)
            .map_err(|e| ambiguous_hold(hold_id, e))?;
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
        let (mode, timeout_ms) = self.inner.lock_wait.as_params();
        let params: [&(dyn ToSql + Sync); 3] = [&hold_id.0, &mode, &timeout_ms];
        let answer = self
            .call(include_str!("../sql/queries/void.sql"), &params, None)
            .map_err(|e| ambiguous_hold(hold_id, e))?;
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
            let expired: i32 = conn.client().query_one(&statement, &[&limit])?.get(0);
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
        row.map(|row| row.get(0)).ok_or(LedgerError::AccountNotFound { account: id })
    }

    /// The pending holds on an account (oldest first), at most `limit` (1 to 10,000).
    ///
    /// # Errors
    /// `AccountNotFound`; `InvalidInput` for a bad `limit`.
    pub fn open_holds(&self, id: AccountId, limit: u32) -> Result<Vec<PendingHold>, LedgerError> {
        crate::entry::check_page(limit)?;
        let rows = self.idempotent(|conn| {
            let statement = conn.statement(include_str!("../sql/queries/open_holds.sql"))?;
            Ok(conn.client().query(&statement, &[&id.0, &i64::from(limit)])?)
        })?;
        if rows.is_empty() {
            self.account(id)?;
        }
        Ok(rows
            .iter()
            .map(|r| PendingHold {
                id: HoldId(r.get("id")),
                from: AccountId(r.get("from_account")),
                to: AccountId(r.get("to_account")),
                amount: r.get("amount"),
                expires_at: r.get("expires_at"),
                memo: r.get("memo"),
                created_at: r.get("created_at"),
            })
            .collect())
    }
}

/// Turns `hold()`'s outcome row into a receipt or a typed refusal.
pub(crate) fn hold_outcome(h: &Hold, key: String, row: &Row, maybe_applied: bool) -> Result<HoldReceipt, LedgerError> {
    let receipt =
        |replayed| HoldReceipt { hold_id: HoldId(row.get("hold_id")), expires_at: row.get("expires_at"), replayed };
    match row.get::<_, &str>("outcome") {
        "ok" => Ok(receipt(false)),
        "replayed" => Ok(receipt(!maybe_applied && h.idempotency_key.is_some())),
        "idempotency_conflict" => {
            Err(LedgerError::IdempotencyConflict { key, existing: KeyHolder::Hold(HoldId(row.get("hold_id"))) })
        }
        "account_not_found" => Err(LedgerError::AccountNotFound { account: AccountId(row.get("account")) }),
        "currency_mismatch" => Err(LedgerError::CurrencyMismatch {
            from: h.from,
            from_currency: row.get("from_currency"),
            to: h.to,
            to_currency: row.get("to_currency"),
        }),
        "invalid_scale" => Err(scale_error(h.amount, row.get("currency_scale"))),
        "insufficient_funds" => Err(LedgerError::InsufficientFunds {
            account: h.from,
            available: row.get("available"),
            requested: h.amount,
        }),
        other => unreachable!("hold() returned an outcome the library does not know: {other}"),
    }
}

/// Turns `capture()`'s outcome row into the capture's receipt or a typed refusal.
pub(crate) fn capture_outcome(
    hold_id: HoldId,
    amount: Option<Decimal>,
    row: &Row,
    maybe_applied: bool,
) -> Result<Receipt, LedgerError> {
    let state: Option<String> = row.get("state");
    let receipt = || Receipt {
        transfer_id: TransferId(row.get("transfer_id")),
        from: AccountId(row.get("from_account")),
        to: AccountId(row.get("to_account")),
        amount: row.get("amount"),
        from_balance: row.get("from_balance"),
        to_balance: row.get("to_balance"),
        replayed: false,
    };
    match row.get::<_, &str>("outcome") {
        "ok" => Ok(receipt()),
        // An earlier attempt of this call may have committed before its answer was lost: the
        // capture found is ours when it took what we asked for (a hold is captured only once).
        "hold_not_pending"
            if maybe_applied
                && state.as_deref() == Some("captured")
                && row.get::<_, Option<Decimal>>("amount")
                    == Some(amount.unwrap_or_else(|| row.get("hold_amount"))) =>
        {
            Ok(receipt())
        }
        "hold_not_pending" => Err(not_pending(hold_id, state)),
        "hold_not_found" => Err(LedgerError::HoldNotFound { hold: hold_id }),
        "exceeds_hold" => Err(LedgerError::InvalidAmount {
            amount: amount.unwrap_or_default(),
            reason: format!("more than the {} held", row.get::<_, Decimal>("available")),
        }),
        "invalid_scale" => Err(scale_error(amount.unwrap_or_default(), row.get("currency_scale"))),
        other => unreachable!("capture() returned an outcome the library does not know: {other}"),
    }
}

/// Turns `void()`'s outcome row into success or a typed refusal.
pub(crate) fn void_outcome(hold_id: HoldId, row: &Row, maybe_applied: bool) -> Result<(), LedgerError> {
    let state: Option<String> = row.get("state");
    match row.get::<_, &str>("outcome") {
        "ok" => Ok(()),
        "hold_not_pending" if maybe_applied && state.as_deref() == Some("voided") => Ok(()),
        "hold_not_pending" => Err(not_pending(hold_id, state)),
        "hold_not_found" => Err(LedgerError::HoldNotFound { hold: hold_id }),
        other => unreachable!("void() returned an outcome the library does not know: {other}"),
    }
}

fn not_pending(hold: HoldId, state: Option<String>) -> LedgerError {
    let state = state.as_deref().and_then(|s| s.parse().ok()).unwrap_or(HoldState::Pending);
    LedgerError::HoldNotPending { hold, state }
}

fn scale_error(amount: Decimal, scale: i16) -> LedgerError {
    LedgerError::InvalidAmount { amount, reason: format!("more than {scale} decimal places, the currency's scale") }
}

/// Captures and voids are keyed by their hold: when retries run out with the outcome open,
/// the error names the hold, whose state settles it.
fn ambiguous_hold(hold: HoldId, e: CallError) -> LedgerError {
    match e {
        CallError::Failed(e) => e,
        CallError::Unknown(source) => LedgerError::HoldOutcomeUnknown { hold, source },
    }
}
