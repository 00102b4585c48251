//! `wallet_ledger.reverse()`: its statement and the decoding of its answer.

use postgres::Row;

use crate::error::{KeyHolder, LedgerError};
use crate::model::reversal::Reversal;
use crate::model::transfer::Receipt;
use crate::protocol::{account_rule, Outcome, Reply};
use crate::values::{AccountId, TransferId};

/// Reverses a transfer; parameters `(transfer, amount or NULL for the rest, key, memo,
/// lock_mode, timeout_ms)`.
pub(crate) const SQL: &str = include_str!("../../sql/queries/reverse.sql");

/// Turns `reverse()`'s answer into the reversal's receipt or a typed refusal.
pub(crate) fn outcome(r: &Reversal, key: &str, row: &Row) -> Result<Receipt, LedgerError> {
    let reply = Reply::new(row, "reverse");
    let receipt = |replayed| -> Result<Receipt, LedgerError> {
        Ok(Receipt {
            transfer_id: TransferId(reply.get("transfer_id")?),
            from: AccountId(reply.get("from_account")?),
            to: AccountId(reply.get("to_account")?),
            amount: reply.get("amount")?,
            from_balance: reply.get("from_balance")?,
            to_balance: reply.get("to_balance")?,
            replayed,
        })
    };
    // What the refusals name as requested: the amount asked for, or what was left to reverse.
    let requested = || -> Result<rust_decimal::Decimal, LedgerError> {
        match r.amount {
            Some(amount) => Ok(amount),
            None => reply.get("amount"),
        }
    };
    match reply.outcome()? {
        Outcome::Ok => receipt(false),
        Outcome::Replayed => receipt(true),
        Outcome::IdempotencyConflict => Err(LedgerError::IdempotencyConflict {
            key: key.to_string(),
            existing: KeyHolder::Transfer(TransferId(reply.get("transfer_id")?)),
        }),
        Outcome::TransferNotFound => Err(LedgerError::TransferNotFound { transfer: r.transfer }),
        Outcome::ReversalExceedsOriginal => {
            Err(LedgerError::ReversalExceedsOriginal { transfer: r.transfer, reversible: reply.get("available")? })
        }
        Outcome::PartialPosting => Err(LedgerError::InvalidAmount {
            amount: requested()?,
            reason: format!("transfer {} is a posting of more than two legs, which is reversed whole", r.transfer),
        }),
        Outcome::InvalidScale => Err(LedgerError::InvalidAmount {
            amount: requested()?,
            reason: format!("more than {} decimal places, the currency's scale", reply.get::<i16>("currency_scale")?),
        }),
        Outcome::InsufficientFunds => Err(LedgerError::InsufficientFunds {
            account: AccountId(reply.get("account")?),
            available: reply.get("available")?,
            requested: requested()?,
        }),
        Outcome::AccountNotFound => Err(LedgerError::AccountNotFound { account: AccountId(reply.get("account")?) }),
        other => Err(account_rule(&reply, other, requested()?)),
    }
}
