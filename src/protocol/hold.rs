//! `wallet_ledger.hold()`, `capture()`, `void()` and the open-holds query: their statements and
//! the decoding of their answers.

use postgres::Row;
use rust_decimal::Decimal;

use crate::error::{KeyHolder, LedgerError};
use crate::model::hold::{Hold, HoldReceipt, PendingHold};
use crate::model::metadata::stored_metadata;
use crate::model::transfer::Receipt;
use crate::protocol::{account_rule, Outcome, Reply};
use crate::values::{AccountId, HoldId, HoldState, TransferId};

/// Places a hold; parameters `(from, to, amount, expires_in, key, memo, lock_mode, timeout_ms)`.
/// A hold without metadata is sent this way, in both modes (the Citus form of `hold()` has these
/// eight parameters).
pub(crate) const HOLD: &str = include_str!("../../sql/queries/hold.sql");
/// Places a hold with metadata: the parameters of [`HOLD`] and `metadata` (jsonb).
pub(crate) const HOLD_METADATA: &str = include_str!("../../sql/queries/hold_metadata.sql");
/// Captures a hold; parameters `(hold, amount or NULL for all, lock_mode, timeout_ms)`.
pub(crate) const CAPTURE: &str = include_str!("../../sql/queries/capture.sql");
/// Voids a hold; parameters `(hold, lock_mode, timeout_ms)`.
pub(crate) const VOID: &str = include_str!("../../sql/queries/void.sql");
/// An account's pending holds, oldest first; parameters `(account, limit)`.
pub(crate) const OPEN_HOLDS: &str = include_str!("../../sql/queries/open_holds.sql");

/// The statement for `h` and how many parameters it takes: [`HOLD_METADATA`] and 9 (the last,
/// `metadata`) when `h` has metadata, else [`HOLD`] and 8.
pub(crate) fn statement(h: &Hold) -> (&'static str, usize) {
    if stored_metadata(h.metadata.as_ref()).is_some() {
        (HOLD_METADATA, 9)
    } else {
        (HOLD, 8)
    }
}

/// Turns `hold()`'s answer into a receipt or a typed refusal. `maybe_applied`: an earlier
/// attempt of this call may have committed, so a replay may be our own.
pub(crate) fn hold_outcome(h: &Hold, key: String, row: &Row, maybe_applied: bool) -> Result<HoldReceipt, LedgerError> {
    let reply = Reply::new(row, "hold");
    let receipt = |replayed| -> Result<HoldReceipt, LedgerError> {
        Ok(HoldReceipt { hold_id: HoldId(reply.get("hold_id")?), expires_at: reply.get("expires_at")?, replayed })
    };
    match reply.outcome()? {
        Outcome::Ok => receipt(false),
        Outcome::Replayed => receipt(!maybe_applied && h.idempotency_key.is_some()),
        Outcome::IdempotencyConflict => {
            Err(LedgerError::IdempotencyConflict { key, existing: KeyHolder::Hold(HoldId(reply.get("hold_id")?)) })
        }
        Outcome::AccountNotFound => Err(LedgerError::AccountNotFound { account: AccountId(reply.get("account")?) }),
        Outcome::CurrencyMismatch => Err(LedgerError::CurrencyMismatch {
            from: h.from,
            from_currency: reply.get("from_currency")?,
            to: h.to,
            to_currency: reply.get("to_currency")?,
        }),
        Outcome::InvalidScale => Err(scale_error(h.amount, reply.get("currency_scale")?)),
        Outcome::InsufficientFunds => Err(LedgerError::InsufficientFunds {
            account: h.from,
            available: reply.get("available")?,
            requested: h.amount,
        }),
        other => Err(account_rule(&reply, other, h.amount)),
    }
}

/// Turns `capture()`'s answer into the capture's receipt or a typed refusal.
pub(crate) fn capture_outcome(
    hold_id: HoldId,
    amount: Option<Decimal>,
    row: &Row,
    maybe_applied: bool,
) -> Result<Receipt, LedgerError> {
    let reply = Reply::new(row, "capture");
    let state = hold_state(&reply)?;
    let receipt = || -> Result<Receipt, LedgerError> {
        Ok(Receipt {
            transfer_id: TransferId(reply.get("transfer_id")?),
            from: AccountId(reply.get("from_account")?),
            to: AccountId(reply.get("to_account")?),
            amount: reply.get("amount")?,
            from_balance: reply.get("from_balance")?,
            to_balance: reply.get("to_balance")?,
            replayed: false,
        })
    };
    match reply.outcome()? {
        Outcome::Ok => receipt(),
        Outcome::HoldNotPending if maybe_applied && state == Some(HoldState::Captured) => {
            // An earlier attempt of this call may have committed before its answer was lost:
            // the capture found is ours when it took what we asked for (a hold is captured
            // only once).
            let captured: Option<Decimal> = reply.get("amount")?;
            let asked = match amount {
                Some(amount) => amount,
                None => reply.get("hold_amount")?,
            };
            if captured == Some(asked) {
                receipt()
            } else {
                Err(not_pending(hold_id, state))
            }
        }
        Outcome::HoldNotPending => Err(not_pending(hold_id, state)),
        Outcome::HoldNotFound => Err(LedgerError::HoldNotFound { hold: hold_id }),
        Outcome::ExceedsHold => Err(LedgerError::InvalidAmount {
            amount: amount.unwrap_or_default(),
            reason: format!("more than the {} held", reply.get::<Decimal>("available")?),
        }),
        Outcome::InvalidScale => Err(scale_error(amount.unwrap_or_default(), reply.get("currency_scale")?)),
        // The hold's source is the frozen account; its destination the closed or full one.
        Outcome::AccountFrozen => Err(LedgerError::AccountFrozen { account: AccountId(reply.get("from_account")?) }),
        Outcome::AccountClosed => Err(LedgerError::AccountClosed { account: AccountId(reply.get("to_account")?) }),
        Outcome::BalanceLimitExceeded => {
            let requested = match amount {
                Some(amount) => amount,
                None => reply.get("hold_amount")?,
            };
            Err(LedgerError::BalanceLimitExceeded {
                account: AccountId(reply.get("to_account")?),
                max_balance: reply.get("available")?,
                requested,
            })
        }
        other => Err(reply.misplaced(other)),
    }
}

/// Turns `void()`'s answer into success or a typed refusal.
pub(crate) fn void_outcome(hold_id: HoldId, row: &Row, maybe_applied: bool) -> Result<(), LedgerError> {
    let reply = Reply::new(row, "void");
    let state = hold_state(&reply)?;
    match reply.outcome()? {
        Outcome::Ok => Ok(()),
        Outcome::HoldNotPending if maybe_applied && state == Some(HoldState::Voided) => Ok(()),
        Outcome::HoldNotPending => Err(not_pending(hold_id, state)),
        Outcome::HoldNotFound => Err(LedgerError::HoldNotFound { hold: hold_id }),
        other => Err(reply.misplaced(other)),
    }
}

/// One row of the open-holds query.
pub(crate) fn pending_hold(row: &Row) -> Result<PendingHold, LedgerError> {
    let reply = Reply::new(row, "open holds");
    Ok(PendingHold {
        id: HoldId(reply.get("id")?),
        from: AccountId(reply.get("from_account")?),
        to: AccountId(reply.get("to_account")?),
        amount: reply.get("amount")?,
        expires_at: reply.get("expires_at")?,
        memo: reply.get("memo")?,
        created_at: reply.get("created_at")?,
    })
}

/// The `state` column: the hold's state when the function found it, if it did.
fn hold_state(reply: &Reply<'_>) -> Result<Option<HoldState>, LedgerError> {
    match reply.get::<Option<&str>>("state")? {
        None => Ok(None),
        Some(name) => name.parse().map(Some).map_err(|e: String| reply.malformed(format!("column state: {e}"))),
    }
}

fn not_pending(hold: HoldId, state: Option<HoldState>) -> LedgerError {
    LedgerError::HoldNotPending { hold, state: state.unwrap_or(HoldState::Pending) }
}

fn scale_error(amount: Decimal, scale: i16) -> LedgerError {
    LedgerError::InvalidAmount { amount, reason: format!("more than {scale} decimal places, the currency's scale") }
}
