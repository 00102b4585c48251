//! Holds: two-phase transfers. A hold reserves an amount on the source account (an
//! authorization); it then ends exactly once: captured (all or part of it moves), voided
//! (released), or expired. While pending, the amount is not *available*: every transfer and
//! hold checks `balance - held` against the floor.

use std::time::{Duration, SystemTime};

use rust_decimal::Decimal;
use serde_json::Value;

use crate::error::LedgerError;
use crate::limits::{HOLD_EXPIRY_DEFAULT, HOLD_EXPIRY_MAX};
use crate::model::metadata::check_movement_metadata;
use crate::model::money::check_transfer_amount;
use crate::model::transfer::check_key_and_memo;
use crate::values::{AccountId, HoldId};

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
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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
    /// The caller's JSON object, also stored on the capture's transfer
    /// ([`metadata`](Hold::metadata)); `None` for none.
    pub metadata: Option<Value>,
}

impl Hold {
    /// A hold that lapses after 7 days unless set otherwise.
    pub fn new(from: AccountId, to: AccountId, amount: Decimal) -> Self {
        Hold { from, to, amount, expires_in: HOLD_EXPIRY_DEFAULT, idempotency_key: None, memo: None, metadata: None }
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

    /// Attaches the caller's data: a JSON object of at most
    /// [`METADATA_BYTES_MAX`](crate::limits::METADATA_BYTES_MAX) bytes, the rules of
    /// [`Transfer::metadata`](crate::Transfer::metadata) (anything else is
    /// [`InvalidInput`](crate::LedgerError::InvalidInput) before anything is sent). Stored with the hold and carried by its capture's transfer
    /// ([`TransferRecord::metadata`](crate::TransferRecord::metadata)),
    /// and part of the idempotency comparison: the same key with other metadata is an
    /// [`IdempotencyConflict`](crate::LedgerError::IdempotencyConflict). `{}` is the same as none.
    ///
    /// ```
    /// use rust_decimal_macros::dec;
    /// use serde_json::json;
    /// use wallet_ledger::{AccountId, Hold};
    ///
    /// let r = Hold::new(AccountId(1), AccountId(2), dec!(250.00)).metadata(json!({"ticket": "T-7"}));
    /// assert_eq!(r.metadata, Some(json!({"ticket": "T-7"})));
    /// ```
    pub fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = Some(metadata);
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
        check_key_and_memo(self.idempotency_key.as_deref(), self.memo.as_deref())?;
        check_movement_metadata(self.metadata.as_ref())
    }
}

/// Proof that a hold is pending.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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

/// A pending hold, as listed by [`Ledger::open_holds`](crate::Ledger::open_holds).
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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
