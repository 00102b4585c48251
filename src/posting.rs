//! Multi-leg postings: one transfer row with N entries that sum to zero per currency
//! (`wallet_ledger.post()`, `sql/0004_batch.sql`), all legs or none.

use std::collections::HashSet;

use postgres::types::{ToSql, Type};
use postgres::{Row, Transaction};
use rust_decimal::Decimal;

use crate::account::AccountId;
use crate::error::{KeyHolder, LedgerError};
use crate::ledger::Ledger;
use crate::limits::{CURRENCY_SCALE_MAX, POSTING_LEGS_MAX};
use crate::money::significant_scale;
use crate::observe::op_span;
use crate::transfer::{check_key_and_memo, internal_key, overflow_as_invalid_amount, TransferId};

const SQL: &str = include_str!("../sql/queries/post.sql");
const KEY_CONSTRAINT: &str = "transfers_idempotency_key";

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
        check_key_and_memo(self.idempotency_key.as_deref(), self.memo.as_deref())
    }

    /// The largest leg, for an amount-too-large error.
    fn largest(&self) -> Decimal {
        self.legs.iter().map(|(_, a)| a.abs()).max().unwrap_or_default()
    }
}

/// Proof that a posting committed.
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

impl Ledger {
    /// Applies a multi-leg posting atomically: every leg's account locked once, in ascending id
    /// order, by one statement; checked on the locked values; one transfer row and one entry per
    /// leg written; one round trip.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), wallet_ledger::LedgerError> {
    /// use rust_decimal_macros::dec;
    /// use wallet_ledger::{AccountId, Ledger, Posting};
    ///
    /// # let (ledger, buyer, merchant, fees, tax) = (Ledger::connect("")?, AccountId(1), AccountId(2), AccountId(3), AccountId(4));
    /// let receipt = ledger.post(
    ///     &Posting::new()
    ///         .leg(buyer, dec!(-100.00))
    ///         .leg(merchant, dec!(95.00))
    ///         .leg(fees, dec!(3.00))
    ///         .leg(tax, dec!(2.00))
    ///         .idempotency_key("order-1234/settle"),
    /// )?;
    /// assert_eq!(receipt.balances.len(), 4);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// Refusals change nothing: [`LedgerError::Unbalanced`] (legs do not sum to zero in a
    /// currency), [`LedgerError::InsufficientFunds`] (a debited leg would break its account's
    /// floor: the whole posting is refused), [`LedgerError::AccountNotFound`],
    /// [`LedgerError::InvalidAmount`] (a zero leg, or more decimal places than the currency),
    /// [`LedgerError::InvalidInput`] (fewer than two legs, an account in two legs, key or memo),
    /// [`LedgerError::BatchTooLarge`] (more than [`POSTING_LEGS_MAX`] legs),
    /// [`LedgerError::IdempotencyConflict`], [`LedgerError::LockUnavailable`];
    /// [`LedgerError::OutcomeUnknown`] as for [`Ledger::transfer`].
    pub fn post(&self, posting: &Posting) -> Result<PostingReceipt, LedgerError> {
        let span = op_span!("post", legs = posting.legs.len(), key = posting.idempotency_key.as_deref(), lock_wait = %self.inner.lock_wait);
        self.refuse_on_citus("post")?;
        span.finish(self.inner.counters.record(self.run_post(posting)))
    }

    fn run_post(&self, posting: &Posting) -> Result<PostingReceipt, LedgerError> {
        posting.validate()?;
        let key = posting.idempotency_key.clone().unwrap_or_else(internal_key);
        let (accounts, amounts) = arrays(posting);
        let (mode, timeout_ms) = self.inner.lock_wait.as_params();
        let params: [&(dyn ToSql + Sync); 6] = [&accounts, &amounts, &key, &posting.memo, &mode, &timeout_ms];
        let answer = self.keyed_call(SQL, &params, KEY_CONSTRAINT, &key, posting.largest())?;
        posting_outcome(posting, &key, &answer.row).map(|mut receipt| {
            receipt.replayed &= !answer.maybe_applied && posting.idempotency_key.is_some();
            receipt
        })
    }

    /// [`Ledger::post`] inside the caller's transaction: committed or rolled back with it. One
    /// posting is one ledger operation (one ordered lock statement); see the
    /// [rules for a caller's transaction](crate::in_transaction).
    ///
    /// # Errors
    /// As [`Ledger::post`], and database errors of the caller's transaction.
    pub fn post_in(&self, tx: &mut Transaction<'_>, posting: &Posting) -> Result<PostingReceipt, LedgerError> {
        let span = op_span!("post_in", legs = posting.legs.len(), key = posting.idempotency_key.as_deref(), lock_wait = %self.inner.lock_wait);
        self.refuse_on_citus("post_in")?;
        span.finish(self.inner.counters.record(self.run_post_in(tx, posting)))
    }

    fn run_post_in(&self, tx: &mut Transaction<'_>, posting: &Posting) -> Result<PostingReceipt, LedgerError> {
        posting.validate()?;
        let key = posting.idempotency_key.clone().unwrap_or_else(internal_key);
        let (accounts, amounts) = arrays(posting);
        let (mode, timeout_ms) = self.inner.lock_wait.as_params();
        let params: [(&(dyn ToSql + Sync), Type); 6] = [
            (&accounts, Type::INT8_ARRAY),
            (&amounts, Type::NUMERIC_ARRAY),
            (&key, Type::TEXT),
            (&posting.memo, Type::TEXT),
            (&mode, Type::INT2),
            (&timeout_ms, Type::INT4),
        ];
        let row = self
            .in_savepoint(tx, SQL, &params, KEY_CONSTRAINT)
            .map_err(|e| overflow_as_invalid_amount(e, posting.largest()))?;
        posting_outcome(posting, &key, &row)
    }
}

fn arrays(posting: &Posting) -> (Vec<i64>, Vec<Decimal>) {
    posting.legs.iter().map(|(account, amount)| (account.0, *amount)).unzip()
}

/// Turns `post()`'s outcome row into a receipt or a typed refusal.
fn posting_outcome(posting: &Posting, key: &str, row: &Row) -> Result<PostingReceipt, LedgerError> {
    let transfer_id = row.get::<_, Option<i64>>("transfer_id").map(TransferId);
    let account = || AccountId(row.get::<_, Option<i64>>("account").expect("the function names the account"));
    let receipt = |replayed| {
        let balances: Vec<Decimal> = row.get("balances");
        PostingReceipt {
            transfer_id: transfer_id.expect("a committed posting has an id"),
            balances: posting.legs.iter().map(|(a, _)| *a).zip(balances).collect(),
            replayed,
        }
    };
    match row.get::<_, &str>("outcome") {
        "ok" => Ok(receipt(false)),
        "replayed" => Ok(receipt(true)),
        "idempotency_conflict" => Err(LedgerError::IdempotencyConflict {
            key: key.to_string(),
            existing: KeyHolder::Transfer(transfer_id.expect("a conflicting transfer has an id")),
        }),
        "account_not_found" => Err(LedgerError::AccountNotFound { account: account() }),
        "invalid_scale" => {
            let account = account();
            let amount = posting.legs.iter().find(|(a, _)| *a == account).map(|(_, d)| *d).unwrap_or_default();
            let scale: i16 = row.get("currency_scale");
            let currency: String = row.get("currency");
            Err(LedgerError::InvalidAmount {
                amount,
                reason: format!("more than {scale} decimal places, the scale of {currency}"),
            })
        }
        "unbalanced" => Err(LedgerError::Unbalanced { currency: row.get("currency"), sum: row.get("amount_sum") }),
        "insufficient_funds" => {
            let account = account();
            let leg = posting.legs.iter().find(|(a, _)| *a == account).map(|(_, d)| *d).unwrap_or_default();
            Err(LedgerError::InsufficientFunds { account, available: row.get("available"), requested: -leg })
        }
        other => unreachable!("post() returned an outcome the library does not know: {other}"),
    }
}
