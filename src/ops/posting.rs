//! [`Ledger::post`]: multi-leg postings (`wallet_ledger.post()`, `sql/0004_batch.sql`), all
//! legs or none.

use postgres::types::{ToSql, Type};
use postgres::Transaction;

use crate::driver::ledger::Ledger;
use crate::driver::observe::op_span;
use crate::error::LedgerError;
use crate::model::metadata::stored_metadata;
use crate::model::posting::{Posting, PostingReceipt};
use crate::model::transfer::internal_key;
use crate::protocol::posting::posting_outcome;
use crate::protocol::transfer::overflow_as_invalid_amount;
use crate::protocol::{self, KEY_CONSTRAINT};

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
    /// [`LedgerError::BatchTooLarge`] (more than [`POSTING_LEGS_MAX`](crate::limits::POSTING_LEGS_MAX) legs),
    /// [`LedgerError::IdempotencyConflict`], [`LedgerError::LockUnavailable`];
    /// [`LedgerError::OutcomeUnknown`] as for [`Ledger::transfer`].
    pub fn post(&self, posting: &Posting) -> Result<PostingReceipt, LedgerError> {
        let span = op_span!("post", legs = posting.legs.len(), key = posting.idempotency_key.as_deref(), lock_wait = %self.inner.lock_wait);
        self.refuse_batches_on_citus("post")?;
        span.finish(self.inner.counters.record(self.run_post(posting)))
    }

    fn run_post(&self, posting: &Posting) -> Result<PostingReceipt, LedgerError> {
        posting.validate()?;
        let key = posting.idempotency_key.clone().unwrap_or_else(internal_key);
        let (accounts, amounts) = protocol::posting::arrays(posting);
        let (mode, timeout_ms) = protocol::lock_params(self.inner.lock_wait);
        let metadata = stored_metadata(posting.metadata.as_ref());
        let params: [&(dyn ToSql + Sync); 7] =
            [&accounts, &amounts, &key, &posting.memo, &mode, &timeout_ms, &metadata];
        let (sql, count) = protocol::posting::statement(posting);
        let answer = self.keyed_call(sql, &params[..count], KEY_CONSTRAINT, &key, posting.largest())?;
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
        self.refuse_batches_on_citus("post_in")?;
        span.finish(self.inner.counters.record(self.run_post_in(tx, posting)))
    }

    fn run_post_in(&self, tx: &mut Transaction<'_>, posting: &Posting) -> Result<PostingReceipt, LedgerError> {
        posting.validate()?;
        let key = posting.idempotency_key.clone().unwrap_or_else(internal_key);
        let (accounts, amounts) = protocol::posting::arrays(posting);
        let (mode, timeout_ms) = protocol::lock_params(self.inner.lock_wait);
        let metadata = stored_metadata(posting.metadata.as_ref());
        let params: [(&(dyn ToSql + Sync), Type); 7] = [
            (&accounts, Type::INT8_ARRAY),
            (&amounts, Type::NUMERIC_ARRAY),
            (&key, Type::TEXT),
            (&posting.memo, Type::TEXT),
            (&mode, Type::INT2),
            (&timeout_ms, Type::INT4),
            (&metadata, Type::JSONB),
        ];
        let (sql, count) = protocol::posting::statement(posting);
        let row = self
            .in_savepoint(tx, sql, &params[..count], KEY_CONSTRAINT)
            .map_err(|e| overflow_as_invalid_amount(e, posting.largest()))?;
        posting_outcome(posting, &key, &row)
    }
}
