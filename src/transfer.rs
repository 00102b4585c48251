//! The transfer path: validate in Rust, then one prepared statement that runs
//! `wallet_ledger.transfer()` (sql/0002_transfer.sql) as one implicit transaction.

use std::fmt;

use postgres::types::ToSql;
use rust_decimal::Decimal;

use crate::account::AccountId;
use crate::error::{KeyHolder, LedgerError};
use crate::ledger::Ledger;
use crate::limits::{IDEMPOTENCY_KEY_BYTES_MAX, MEMO_BYTES_MAX};
use crate::money::{check_text, check_transfer_amount};
use crate::observe::op_span;

/// The id of a committed transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransferId(pub i64);

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A request to move `amount` from one account to another of the same currency.
///
/// ```
/// use rust_decimal_macros::dec;
/// use wallet_ledger::{AccountId, Transfer};
///
/// let t = Transfer::new(AccountId(1), AccountId(2), dec!(12.50))
///     .idempotency_key("order-1234/payment")
///     .memo("order 1234");
/// assert_eq!(t.idempotency_key.as_deref(), Some("order-1234/payment"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Transfer {
    /// The debited account.
    pub from: AccountId,
    /// The credited account.
    pub to: AccountId,
    /// How much; positive, within the currency's decimal places.
    pub amount: Decimal,
    /// The caller's idempotency key: a second call with the same key and content returns the
    /// first receipt (`replayed = true`) instead of moving money again.
    pub idempotency_key: Option<String>,
    /// Free text stored with the transfer.
    pub memo: Option<String>,
}

impl Transfer {
    /// A transfer without key or memo.
    pub fn new(from: AccountId, to: AccountId, amount: Decimal) -> Self {
        Transfer { from, to, amount, idempotency_key: None, memo: None }
    }

    /// Sets the idempotency key (at most 256 bytes; keys starting with `~` are reserved, except
    /// the library's own keys for keyless transfers, which an unknown-outcome error names so
    /// that the transfer can be repeated with them).
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Sets the memo (at most 1024 bytes).
    pub fn memo(mut self, memo: impl Into<String>) -> Self {
        self.memo = Some(memo.into());
        self
    }

    /// Everything that can be checked without the database.
    pub(crate) fn validate(&self) -> Result<(), LedgerError> {
        check_transfer_amount(self.amount)?;
        if self.from == self.to {
            return Err(LedgerError::SameAccount { account: self.from });
        }
        check_key_and_memo(self.idempotency_key.as_deref(), self.memo.as_deref())
    }
}

/// The checks every request with a caller key and a memo shares (transfers, holds).
pub(crate) fn check_key_and_memo(key: Option<&str>, memo: Option<&str>) -> Result<(), LedgerError> {
    if let Some(key) = key {
        check_text("idempotency key", key, IDEMPOTENCY_KEY_BYTES_MAX)?;
        if key.is_empty() || key.starts_with(INTERNAL_KEY_PREFIX) && !is_internal_key(key) {
            return Err(LedgerError::InvalidInput {
                field: "idempotency key",
                reason: format!(
                    "must be non-empty and not start with {INTERNAL_KEY_PREFIX:?} (reserved), unless it is a key \
                     the library named in an unknown-outcome error"
                ),
            });
        }
    }
    if let Some(memo) = memo {
        check_text("memo", memo, MEMO_BYTES_MAX)?;
    }
    Ok(())
}

/// Proof that a transfer committed: its id and both balances right after it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Receipt {
    /// The committed transfer.
    pub transfer_id: TransferId,
    /// The debited account.
    pub from: AccountId,
    /// The credited account.
    pub to: AccountId,
    /// The amount moved, as requested (the ledger stores it at the currency's scale, which
    /// only adds trailing zeros: more decimal places than the currency has are refused).
    pub amount: Decimal,
    /// The debited account's balance right after this transfer.
    pub from_balance: Decimal,
    /// The credited account's balance right after this transfer.
    pub to_balance: Decimal,
    /// `true` when this call moved nothing because an earlier call with the same idempotency
    /// key had already committed this transfer; the balances are those of that first call.
    pub replayed: bool,
}

/// Keys the library gives to transfers sent without one, so that a retry after a lost
/// connection finds the first attempt instead of applying the transfer twice.
pub(crate) const INTERNAL_KEY_PREFIX: &str = "~";

/// Version 7 (time-ordered) so that consecutive keys land on neighbouring pages of the unique
/// index instead of random ones.
pub(crate) fn internal_key() -> String {
    format!("{INTERNAL_KEY_PREFIX}{}", uuid::Uuid::now_v7())
}

/// Whether `key` has exactly the form of an [`internal_key`]. Such a key comes back to the
/// caller in [`LedgerError::OutcomeUnknown`] and [`LedgerError::BatchOutcomeUnknown`] for a
/// transfer sent without one, and repeating the transfer with it is how the caller settles the
/// outcome, so it is accepted as a caller key. Any other key starting with `~` stays reserved.
fn is_internal_key(key: &str) -> bool {
    key.strip_prefix(INTERNAL_KEY_PREFIX).is_some_and(|rest| {
        rest.len() == 36 && uuid::Uuid::try_parse(rest).is_ok_and(|u| u.hyphenated().to_string() == rest)
    })
}

/// A balance or reservation that would outgrow what the ledger can represent comes back from
/// the database as a CHECK violation on the account; to the caller it is an amount too large.
pub(crate) fn overflow_as_invalid_amount(e: LedgerError, amount: Decimal) -> LedgerError {
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

impl Ledger {
    /// Moves `t.amount` from `t.from` to `t.to`, atomically, with both account rows locked in
    /// ascending id order for the time of one server-side function call.
    ///
    /// Transient failures (serialization, deadlock, a lost connection, a concurrent call with the
    /// same key) are retried up to `max_retries` times with backoff. Every attempt carries an
    /// idempotency key (the caller's, or an internal one), so a retry after a lost connection
    /// never applies the transfer twice.
    ///
    /// With the combiner on ([`LedgerBuilder::combine`](crate::LedgerBuilder::combine)) the call
    /// is queued and applied together with concurrent calls in one transaction; each caller still
    /// gets its own receipt or refusal, as alone.
    ///
    /// # Errors
    /// Refusals change nothing: [`LedgerError::InvalidAmount`], [`LedgerError::SameAccount`],
    /// [`LedgerError::AccountNotFound`], [`LedgerError::CurrencyMismatch`],
    /// [`LedgerError::InsufficientFunds`], [`LedgerError::IdempotencyConflict`],
    /// [`LedgerError::LockUnavailable`] (per the [`LockWait`](crate::LockWait) policy),
    /// [`LedgerError::InvalidInput`]. [`LedgerError::OutcomeUnknown`] when the connection was lost
    /// after sending and retries ran out: repeat with the key it names. With the combiner, a
    /// batch that failed as a whole gives every caller in it [`LedgerError::BatchFailed`] (nothing
    /// applied) or [`LedgerError::BatchOutcomeUnknown`] (with the caller's own key).
    pub fn transfer(&self, t: &Transfer) -> Result<Receipt, LedgerError> {
        let span = op_span!("transfer", from = t.from.0, to = t.to.0, amount = %t.amount, key = t.idempotency_key.as_deref(), lock_wait = %self.inner.lock_wait);
        span.finish(self.inner.counters.record(self.run_transfer(t)))
    }

    fn run_transfer(&self, t: &Transfer) -> Result<Receipt, LedgerError> {
        if let Some(combiner) = &self.inner.combiner {
            return combiner.transfer(self, t);
        }
        t.validate()?;
        let key = t.idempotency_key.clone().unwrap_or_else(internal_key);
        self.run_transfer_keyed(t, &key)
    }

    /// The single-transfer path with its key chosen (the caller's, or an internal one); `t` is
    /// validated.
    pub(crate) fn run_transfer_keyed(&self, t: &Transfer, key: &str) -> Result<Receipt, LedgerError> {
        let key = key.to_string();
        let (mode, timeout_ms) = self.inner.lock_wait.as_params();
        let params: [&(dyn ToSql + Sync); 7] = [&t.from.0, &t.to.0, &t.amount, &key, &t.memo, &mode, &timeout_ms];
        let sql = include_str!("../sql/queries/transfer.sql");
        let answer = self.keyed_call(sql, &params, "transfers_idempotency_key", &key, t.amount)?;
        self.inner.counters.lock_waited(&answer.row);
        outcome(t, &key, &answer.row).map(|mut receipt| {
            // A replay of our own earlier, unanswered attempt is not a replay to the caller.
            receipt.replayed &= !answer.maybe_applied && t.idempotency_key.is_some();
            receipt
        })
    }
}

/// Turns the function's outcome row into a receipt or a typed refusal.
pub(crate) fn outcome(t: &Transfer, key: &str, row: &postgres::Row) -> Result<Receipt, LedgerError> {
    let outcome: &str = row.get("outcome");
    let transfer_id = row.get::<_, Option<i64>>("transfer_id").map(TransferId);
    // A receipt's columns are read with `try_get`: a row without them (a defect, or a replay
    // that could not find the transfer's entries) is a typed database error, not a panic.
    let receipt = |replayed| -> Result<Receipt, LedgerError> {
        Ok(Receipt {
            transfer_id: TransferId(row.try_get("transfer_id")?),
            from: t.from,
            to: t.to,
            amount: t.amount,
            from_balance: row.try_get("from_balance")?,
            to_balance: row.try_get("to_balance")?,
            replayed,
        })
    };
    match outcome {
        "ok" => receipt(false),
        "replayed" => receipt(true),
        "idempotency_conflict" => Err(LedgerError::IdempotencyConflict {
            key: key.to_string(),
            existing: KeyHolder::Transfer(transfer_id.expect("a conflicting transfer has an id")),
        }),
        "account_not_found" => Err(LedgerError::AccountNotFound { account: AccountId(row.get("account")) }),
        "currency_mismatch" => Err(LedgerError::CurrencyMismatch {
            from: t.from,
            from_currency: row.get("from_currency"),
            to: t.to,
            to_currency: row.get("to_currency"),
        }),
        "invalid_scale" => {
            let scale: i16 = row.get("currency_scale");
            let currency: String = row.get("from_currency");
            Err(LedgerError::InvalidAmount {
                amount: t.amount,
                reason: format!("more than {scale} decimal places, the scale of {currency}"),
            })
        }
        "insufficient_funds" => Err(LedgerError::InsufficientFunds {
            account: AccountId(row.get("account")),
            available: row.get("available"),
            requested: t.amount,
        }),
        other => unreachable!("transfer() returned an outcome the library does not know: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_librarys_own_key_form_is_accepted_under_the_reserved_prefix() {
        let own = internal_key();
        assert!(is_internal_key(&own), "{own}");
        assert!(check_key_and_memo(Some(&own), None).is_ok());
        let upper = own.to_uppercase();
        for bad in ["~", "~x", "~reserved", &format!("{own}x"), &own[..own.len() - 1], &upper, &own.replace('-', "")] {
            assert!(!is_internal_key(bad), "{bad}");
            assert!(check_key_and_memo(Some(bad), None).is_err(), "{bad}");
        }
    }
}
