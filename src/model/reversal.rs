//! A reversal request: a refund of a committed transfer, in whole or in part.

use rust_decimal::Decimal;
use serde_json::Value;

use crate::error::LedgerError;
use crate::model::metadata::check_movement_metadata;
use crate::model::money::check_transfer_amount;
use crate::model::transfer::check_key_and_memo;
use crate::values::TransferId;

/// A request to reverse a committed transfer: a new transfer in the opposite direction that
/// records which transfer it reverses. All that is left to reverse unless an amount is given;
/// a transfer's reversals never sum to more than its amount. A posting is reversed whole (every
/// leg negated, in one new posting); a partial amount is accepted for a posting of two legs.
///
/// ```
/// use rust_decimal_macros::dec;
/// use wallet_ledger::{Reversal, TransferId};
///
/// let refund = Reversal::of(TransferId(42)).amount(dec!(5.00)).idempotency_key("refund-42-1").memo("damaged item");
/// assert_eq!(refund.transfer, TransferId(42));
/// assert_eq!(refund.amount, Some(dec!(5.00)));
/// assert_eq!(Reversal::of(TransferId(42)).amount, None); // all that is left
/// ```
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reversal {
    /// The transfer to reverse.
    pub transfer: TransferId,
    /// How much; `None` = all that is left to reverse.
    pub amount: Option<Decimal>,
    /// The caller's idempotency key, as for a transfer: the same key and content replays the
    /// first receipt, other content is `IdempotencyConflict`.
    pub idempotency_key: Option<String>,
    /// Free text stored with the reversal.
    pub memo: Option<String>,
    /// The caller's JSON object stored with the reversal ([`metadata`](Reversal::metadata));
    /// `None` for none.
    pub metadata: Option<Value>,
}

impl Reversal {
    /// A reversal of all that is left to reverse of `transfer`.
    pub fn of(transfer: TransferId) -> Self {
        Reversal { transfer, amount: None, idempotency_key: None, memo: None, metadata: None }
    }

    /// Reverses only `amount` (positive, within the currency's decimal places, at most what is
    /// left to reverse).
    pub fn amount(mut self, amount: Decimal) -> Self {
        self.amount = Some(amount);
        self
    }

    /// Sets the idempotency key (the rules of [`Transfer::idempotency_key`](crate::Transfer::idempotency_key)).
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
    /// [`METADATA_BYTES_MAX`](crate::limits::METADATA_BYTES_MAX) bytes, the rules of
    /// [`Transfer::metadata`](crate::Transfer::metadata) (anything else is
    /// [`InvalidInput`](crate::LedgerError::InvalidInput) before anything is sent). Stored with the reversal's own transfer (the
    /// original keeps its own; [`TransferRecord::metadata`](crate::TransferRecord::metadata)),
    /// and part of the idempotency comparison: the same key with other metadata is an
    /// [`IdempotencyConflict`](crate::LedgerError::IdempotencyConflict). `{}` is the same as none.
    ///
    /// ```
    /// use serde_json::json;
    /// use wallet_ledger::{Reversal, TransferId};
    ///
    /// let r = Reversal::of(TransferId(9)).metadata(json!({"ticket": "T-7"}));
    /// assert_eq!(r.metadata, Some(json!({"ticket": "T-7"})));
    /// ```
    pub fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Everything that can be checked without the database.
    pub(crate) fn validate(&self) -> Result<(), LedgerError> {
        if let Some(amount) = self.amount {
            check_transfer_amount(amount)?;
        }
        check_key_and_memo(self.idempotency_key.as_deref(), self.memo.as_deref())?;
        check_movement_metadata(self.metadata.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn amounts_keys_and_memos_are_checked_before_the_database() {
        assert!(Reversal::of(TransferId(1)).validate().is_ok());
        assert!(Reversal::of(TransferId(1)).amount(dec!(0.01)).validate().is_ok());
        for bad in [dec!(0), dec!(-1)] {
            assert!(matches!(
                Reversal::of(TransferId(1)).amount(bad).validate(),
                Err(LedgerError::InvalidAmount { .. })
            ));
        }
        assert!(Reversal::of(TransferId(1)).idempotency_key("").validate().is_err());
        assert!(Reversal::of(TransferId(1)).memo("a\0b").validate().is_err());
    }
}
