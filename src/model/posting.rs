//! Multi-leg postings: one transfer with N entries that sum to zero per currency, all legs or
//! none.

use std::collections::HashSet;

use rust_decimal::Decimal;
use serde_json::Value;

use crate::error::LedgerError;
use crate::limits::{CURRENCY_SCALE_MAX, POSTING_LEGS_MAX};
use crate::model::metadata::check_movement_metadata;
use crate::model::money::significant_scale;
use crate::model::transfer::check_key_and_memo;
use crate::values::{AccountId, TransferId};

/// A multi-leg posting: money moved among several accounts at once, all legs or none.
///
/// Each leg is signed: a negative amount takes money out of the account, a positive one puts
/// it in. The legs must sum to zero per currency ([`LedgerError::Unbalanced`] otherwise), and
/// each account may appear in one leg only (a second leg on the same account is refused with
/// [`LedgerError::InvalidInput`] rather than merged: a posting's legs are its entries, one per
/// account, and a caller who names an account twice has usually made a mistake).
///
/// The split payment: the buyer pays 100.00, the merchant gets 95.00, the fee account 3.00 and
/// the tax account 2.00.
///
/// ```
/// use rust_decimal_macros::dec;
/// use wallet_ledger::{AccountId, Posting};
///
/// let (buyer, merchant, fees, tax) = (AccountId(1), AccountId(2), AccountId(3), AccountId(4));
/// let posting = Posting::new()
///     .leg(buyer, dec!(-100.00))
///     .leg(merchant, dec!(95.00))
///     .leg(fees, dec!(3.00))
///     .leg(tax, dec!(2.00))
///     .idempotency_key("order-1234/settle")
///     .memo("order 1234");
/// assert_eq!(posting.legs.len(), 4);
/// ```
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Posting {
    /// `(account, signed amount)`, in the order given.
    pub legs: Vec<(AccountId, Decimal)>,
    /// The caller's idempotency key (same rules as [`Transfer`](crate::Transfer)'s; postings
    /// and transfers share one key space).
    pub idempotency_key: Option<String>,
    /// Free text stored with the posting.
    pub memo: Option<String>,
    /// The caller's JSON object stored with the posting ([`metadata`](Posting::metadata)); `None`
    /// for none.
    pub metadata: Option<Value>,
}

impl Posting {
    /// A posting without legs, key or memo.
    pub fn new() -> Self {
        Posting::default()
    }

    /// Adds a leg: `amount` into `account` (negative: out of it).
    pub fn leg(mut self, account: AccountId, amount: Decimal) -> Self {
        self.legs.push((account, amount));
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
    /// [`InvalidInput`](crate::LedgerError::InvalidInput) before anything is sent). Stored with the posting
    /// ([`TransferRecord::metadata`](crate::TransferRecord::metadata)),
    /// and part of the idempotency comparison: the same key with other metadata is an
    /// [`IdempotencyConflict`](crate::LedgerError::IdempotencyConflict). `{}` is the same as none.
    ///
    /// ```
    /// use rust_decimal_macros::dec;
    /// use serde_json::json;
    /// use wallet_ledger::{AccountId, Posting};
    ///
    /// let r = Posting::new().leg(AccountId(1), dec!(-5)).leg(AccountId(2), dec!(5)).metadata(json!({"ticket": "T-7"}));
    /// assert_eq!(r.metadata, Some(json!({"ticket": "T-7"})));
    /// ```
    pub fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Everything that can be checked without the database.
    pub(crate) fn validate(&self) -> Result<(), LedgerError> {
        if self.legs.len() > POSTING_LEGS_MAX {
            return Err(LedgerError::BatchTooLarge { items: self.legs.len(), max: POSTING_LEGS_MAX });
        }
        if self.legs.len() < 2 {
            return Err(LedgerError::InvalidInput {
                field: "posting legs",
                reason: format!("{} legs: a posting needs at least two", self.legs.len()),
            });
        }
        let mut seen = HashSet::with_capacity(self.legs.len());
        for &(account, amount) in &self.legs {
            if amount.is_zero() {
                return Err(LedgerError::InvalidAmount { amount, reason: "a leg must not be zero".into() });
            }
            if significant_scale(amount) > CURRENCY_SCALE_MAX {
                return Err(LedgerError::InvalidAmount {
                    amount,
                    reason: "more decimal places than any currency allows".into(),
                });
            }
            if !seen.insert(account) {
                return Err(LedgerError::InvalidInput {
                    field: "posting legs",
                    reason: format!("account {account} appears in two legs; give each account one leg"),
                });
            }
        }
        check_key_and_memo(self.idempotency_key.as_deref(), self.memo.as_deref())?;
        check_movement_metadata(self.metadata.as_ref())
    }

    /// The largest leg, for an amount-too-large error.
    pub(crate) fn largest(&self) -> Decimal {
        self.legs.iter().map(|(_, a)| a.abs()).max().unwrap_or_default()
    }
}

/// Proof that a posting committed.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostingReceipt {
    /// The posting's transfer row (its entries are the legs).
    pub transfer_id: TransferId,
    /// Every touched account with its balance right after the posting, in leg order.
    pub balances: Vec<(AccountId, Decimal)>,
    /// `true` when an earlier call with the same idempotency key had already committed this
    /// posting and this call moved nothing; the balances are those of that first call.
    pub replayed: bool,
}
