//! Transfer records: a committed transfer or posting as it reads back from the ledger.

use std::time::SystemTime;

use rust_decimal::Decimal;
use serde_json::Value;

use crate::values::{AccountId, TransferId};

/// A committed transfer (or posting, or capture) read back from the ledger: what
/// [`Ledger::find_transfer`](crate::Ledger::find_transfer),
/// [`Ledger::find_transfer_by_key`](crate::Ledger::find_transfer_by_key) and
/// [`Ledger::list_transfers`](crate::Ledger::list_transfers) answer.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use rust_decimal_macros::dec;
/// use wallet_ledger::{Ledger, NewAccount, Transfer};
///
/// # let url = wallet_ledger::embedded::fresh_database("record_docs")?;
/// let ledger = Ledger::connect(&url)?;
/// ledger.define_currency("USD", 2)?;
/// let issuer = ledger.open_account(&NewAccount::new("USD").unbounded())?.id;
/// let alice = ledger.open_account(&NewAccount::new("USD"))?.id;
/// ledger.transfer(&Transfer::new(issuer, alice, dec!(25.00)).idempotency_key("deposit-7").memo("top-up"))?;
///
/// let record = ledger.find_transfer_by_key("deposit-7")?.expect("committed");
/// assert_eq!(record.legs, vec![(issuer, dec!(-25.00)), (alice, dec!(25.00))]);
/// assert_eq!(record.currency, "USD");
/// assert_eq!(record.memo.as_deref(), Some("top-up"));
/// assert_eq!(ledger.find_transfer(record.id)?, Some(record));
/// # Ok(()) }
/// ```
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransferRecord {
    /// Its id.
    pub id: TransferId,
    /// `(account, signed amount)`, one per account, from its entries, ordered by account id:
    /// negative where money left. They sum to zero (per currency).
    pub legs: Vec<(AccountId, Decimal)>,
    /// The currency of its legs. A posting whose legs span several currencies has the first
    /// leg's here; each leg's is its account's ([`Account::currency`](crate::Account::currency)).
    pub currency: String,
    /// The memo given with it.
    pub memo: Option<String>,
    /// The caller's data given with it ([`Transfer::metadata`](crate::Transfer::metadata),
    /// [`Posting::metadata`](crate::Posting::metadata), [`Reversal::metadata`](crate::Reversal::metadata),
    /// or, for a capture, [`Hold::metadata`](crate::Hold::metadata)): always a JSON object, `{}`
    /// when none was given.
    pub metadata: Value,
    /// The caller's idempotency key; `None` for a transfer sent without one (its internal
    /// `~` key is the library's, not the caller's).
    pub idempotency_key: Option<String>,
    /// When its transaction began (server clock, `now()`). Each leg's entry has its own, later
    /// time ([`Entry::created_at`](crate::Entry::created_at)), taken after its locks.
    pub created_at: SystemTime,
    /// The transfer this one reverses, when it is a reversal ([`Ledger::reverse`](crate::Ledger::reverse)).
    pub reverses: Option<TransferId>,
    /// How much of this transfer later reversals took back (at most its amount).
    pub reversed: Decimal,
}
