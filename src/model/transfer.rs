//! A transfer request, its receipt, and the checks they share with every keyed request
//! (idempotency keys, memos).

use rust_decimal::Decimal;
use serde_json::Value;

use crate::error::LedgerError;
use crate::limits::{IDEMPOTENCY_KEY_BYTES_MAX, MEMO_BYTES_MAX};
use crate::model::metadata::check_movement_metadata;
use crate::model::money::{check_text, check_transfer_amount};
use crate::values::{AccountId, TransferId};

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
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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
    /// A sweep: move `amount`, or all that is available above the floor when that is less
    /// (see [`up_to_available`](Transfer::up_to_available)).
    pub up_to_available: bool,
    /// The caller's JSON object stored with the transfer (see [`metadata`](Transfer::metadata));
    /// `None` for none.
    pub metadata: Option<Value>,
}

impl Transfer {
    /// A transfer without key or memo.
    pub fn new(from: AccountId, to: AccountId, amount: Decimal) -> Self {
        Transfer { from, to, amount, idempotency_key: None, memo: None, up_to_available: false, metadata: None }
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

    /// Attaches the caller's data: a JSON object of at most
    /// [`METADATA_BYTES_MAX`](crate::limits::METADATA_BYTES_MAX) bytes as compact JSON, the
    /// rules of [`NewAccount::metadata`](crate::NewAccount::metadata) (anything else is
    /// [`InvalidInput`](crate::LedgerError::InvalidInput), before anything is sent). Stored with
    /// the transfer ([`TransferRecord::metadata`](crate::TransferRecord::metadata)), found by
    /// [`TransferFilter::metadata`](crate::TransferFilter::metadata), and part of the
    /// idempotency comparison: a repeat of the key with other metadata is an
    /// [`IdempotencyConflict`](crate::LedgerError::IdempotencyConflict). `{}` is the same as
    /// none. Not in Citus mode ([`Unsupported`](crate::LedgerError::Unsupported)).
    ///
    /// ```
    /// use rust_decimal_macros::dec;
    /// use serde_json::json;
    /// use wallet_ledger::{AccountId, Transfer};
    ///
    /// let t = Transfer::new(AccountId(1), AccountId(2), dec!(12.50)).metadata(json!({"order_id": 1234}));
    /// assert_eq!(t.metadata, Some(json!({"order_id": 1234})));
    /// ```
    pub fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Makes this transfer a sweep: it moves `amount` or, when less is available above the
    /// floor (balance minus holds minus floor), all that is available; the receipt's `amount`
    /// says what moved. Nothing available is
    /// [`InsufficientFunds`](crate::LedgerError::InsufficientFunds). Decided on the locked
    /// balance, in the same call, like any transfer; works in `transfer`, `transfer_batch`, the
    /// combiner and `transfer_in` (not in Citus mode). A repeat with the same key replays a sweep
    /// that moved at most `amount`.
    ///
    /// ```
    /// use rust_decimal_macros::dec;
    /// use wallet_ledger::{AccountId, Transfer};
    ///
    /// // Pay out everything the merchant has, up to 10,000.00.
    /// let payout = Transfer::new(AccountId(7), AccountId(1), dec!(10000.00)).up_to_available();
    /// assert!(payout.up_to_available);
    /// ```
    pub fn up_to_available(mut self) -> Self {
        self.up_to_available = true;
        self
    }

    /// Everything that can be checked without the database.
    pub(crate) fn validate(&self) -> Result<(), LedgerError> {
        check_transfer_amount(self.amount)?;
        if self.from == self.to {
            return Err(LedgerError::SameAccount { account: self.from });
        }
        check_key_and_memo(self.idempotency_key.as_deref(), self.memo.as_deref())?;
        check_movement_metadata(self.metadata.as_ref())
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
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Receipt {
    /// The committed transfer.
    pub transfer_id: TransferId,
    /// The debited account.
    pub from: AccountId,
    /// The credited account.
    pub to: AccountId,
    /// The amount moved: as requested (the ledger stores it at the currency's scale, which
    /// only adds trailing zeros: more decimal places than the currency has are refused), or,
    /// for a sweep ([`Transfer::up_to_available`]) or a reversal, what actually moved.
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
