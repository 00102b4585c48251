//! `wallet_ledger.transfer()`: its statement and the decoding of its answer.

use postgres::Row;
use rust_decimal::Decimal;

use crate::error::{KeyHolder, LedgerError};
use crate::model::metadata::stored_metadata;
use crate::model::transfer::{Receipt, Transfer};
use crate::protocol::{account_rule, Outcome, Reply};
use crate::values::{AccountId, TransferId};

/// The single-transfer call; parameters `(from, to, amount, key, memo, lock_mode, timeout_ms)`.
/// A transfer without metadata is sent this way, in both modes (the Citus form of `transfer()`
/// has these seven parameters).
pub(crate) const SQL: &str = include_str!("../../sql/queries/transfer.sql");
/// The single-transfer call with metadata: the same parameters and `metadata` (jsonb).
pub(crate) const METADATA_SQL: &str = include_str!("../../sql/queries/transfer_metadata.sql");
/// The sweep (`Transfer::up_to_available`); the parameters of [`METADATA_SQL`] (`metadata`
/// NULL for none), and `amount`: what moved.
pub(crate) const UP_TO_SQL: &str = include_str!("../../sql/queries/transfer_up_to.sql");

/// The statement for `t`: the sweep's, or the plain transfer's with or without metadata.
pub(crate) fn statement(t: &Transfer) -> &'static str {
    if t.up_to_available {
        UP_TO_SQL
    } else if stored_metadata(t.metadata.as_ref()).is_some() {
        METADATA_SQL
    } else {
        SQL
    }
}

/// How many parameters [`statement`]`(t)` takes: 8 (the last, `metadata`) or 7.
pub(crate) fn parameter_count(t: &Transfer) -> usize {
    if t.up_to_available || stored_metadata(t.metadata.as_ref()).is_some() {
        8
    } else {
        7
    }
}

/// A balance or reservation that would outgrow what the ledger can represent comes back from
/// the database as a CHECK violation on the account; to the caller it is an amount too large.
/// Metadata the database refuses is the caller's input (see [`metadata_as_invalid_input`]).
pub(crate) fn overflow_as_invalid_amount(e: LedgerError, amount: Decimal) -> LedgerError {
    let e = metadata_as_invalid_input(e);
    match &e {
        LedgerError::ConstraintViolation { constraint, .. }
            if constraint == "accounts_balance_magnitude" || constraint == "accounts_held_check" =>
        {
            LedgerError::InvalidAmount {
                amount,
                reason: "the resulting balance would exceed the largest the ledger can represent".into(),
            }
        }
        _ => e,
    }
}

/// Metadata within the library's bound as compact JSON can still be over it in PostgreSQL's
/// text form of the `jsonb` (a space after every `:` and `,`): the database's domain refuses it
/// (`transfers_metadata_size`, `holds_metadata_size`), and to the caller it is invalid input,
/// as for accounts.
pub(crate) fn metadata_as_invalid_input(e: LedgerError) -> LedgerError {
    match &e {
        LedgerError::ConstraintViolation { constraint, .. }
            if [
                "transfers_metadata_size",
                "transfers_metadata_object",
                "holds_metadata_size",
                "holds_metadata_object",
            ]
            .contains(&constraint.as_str()) =>
        {
            LedgerError::InvalidInput {
                field: "metadata",
                reason: "larger than METADATA_BYTES_MAX in the database's text form of the jsonb".into(),
            }
        }
        _ => e,
    }
}

/// Turns `transfer()`'s answer into a receipt or a typed refusal.
pub(crate) fn outcome(t: &Transfer, key: &str, row: &Row) -> Result<Receipt, LedgerError> {
    let reply = Reply::new(row, "transfer");
    let receipt = |replayed| -> Result<Receipt, LedgerError> {
        Ok(Receipt {
            transfer_id: TransferId(reply.get("transfer_id")?),
            from: t.from,
            to: t.to,
            amount: if t.up_to_available { reply.get("amount")? } else { t.amount },
            from_balance: reply.get("from_balance")?,
            to_balance: reply.get("to_balance")?,
            replayed,
        })
    };
    match reply.outcome()? {
        Outcome::Ok => receipt(false),
        Outcome::Replayed => receipt(true),
        Outcome::IdempotencyConflict => Err(LedgerError::IdempotencyConflict {
            key: key.to_string(),
            existing: KeyHolder::Transfer(TransferId(reply.get("transfer_id")?)),
        }),
        Outcome::AccountNotFound => Err(LedgerError::AccountNotFound { account: AccountId(reply.get("account")?) }),
        Outcome::CurrencyMismatch => Err(LedgerError::CurrencyMismatch {
            from: t.from,
            from_currency: reply.get("from_currency")?,
            to: t.to,
            to_currency: reply.get("to_currency")?,
        }),
        Outcome::InvalidScale => {
            let scale: i16 = reply.get("currency_scale")?;
            let currency: String = reply.get("from_currency")?;
            Err(LedgerError::InvalidAmount {
                amount: t.amount,
                reason: format!("more than {scale} decimal places, the scale of {currency}"),
            })
        }
        Outcome::InsufficientFunds => Err(LedgerError::InsufficientFunds {
            account: AccountId(reply.get("account")?),
            available: reply.get("available")?,
            requested: t.amount,
        }),
        other => Err(account_rule(&reply, other, t.amount)),
    }
}
