//! [`Ledger::post`]: multi-leg postings (`wallet_ledger.post()`, `sql/0004_batch.sql`), all
//! legs or none.

use postgres::types::Type;
use postgres::Transaction;

use crate::driver::ledger::Ledger;
use crate::error::LedgerError;
use crate::model::metadata::stored_metadata;
use crate::model::posting::{Posting, PostingReceipt};
use crate::model::transfer::internal_key;
use crate::observe::op_span;
use crate::plan::{keyed, params, try_plan, Ctx, Plan, Sql};
use crate::protocol::posting::posting_outcome;
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
        self.run(plan(&self.ctx(), posting))
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
        self.run_in(tx, plan(&self.ctx(), posting))
    }
}

/// The parameter types of `post()`.
const TYPES: [Type; 7] =
    [Type::INT8_ARRAY, Type::NUMERIC_ARRAY, Type::TEXT, Type::TEXT, Type::INT2, Type::INT4, Type::JSONB];

/// A posting: validated, then one call of `post()`.
pub(crate) fn plan(ctx: &Ctx, posting: &Posting) -> Plan<PostingReceipt> {
    try_plan!(posting.validate());
    let key = posting.idempotency_key.clone().unwrap_or_else(internal_key);
    let (accounts, amounts) = protocol::posting::arrays(posting);
    let (mode, timeout_ms) = protocol::lock_params(ctx.lock_wait);
    let (sql, count) = protocol::posting::statement(posting);
    let mut params = params![accounts, amounts, key.clone(), posting.memo.clone(), mode, timeout_ms];
    if count == 7 {
        params.push(Box::new(stored_metadata(posting.metadata.as_ref()).cloned()));
    }
    let posting = posting.clone();
    keyed(Sql::typed(sql, params, &TYPES[..count]), KEY_CONSTRAINT, key, posting.largest(), move |answer, key| {
        posting_outcome(&posting, key, &answer.row).map(|mut receipt| {
            receipt.replayed &= !answer.maybe_applied && posting.idempotency_key.is_some();
            receipt
        })
    })
}

#[cfg(feature = "aio")]
impl crate::aio::Ledger {
    /// [`Ledger::post`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::post`].
    pub async fn post(&self, posting: &Posting) -> Result<PostingReceipt, LedgerError> {
        let span = op_span!(async "post", legs = posting.legs.len(), key = posting.idempotency_key.as_deref(), lock_wait = %self.inner.lock_wait);
        span.run(async {
            let result = match self.ctx().refuse_batches_on_citus("post") {
                Ok(()) => self.run(plan(&self.ctx(), posting)).await,
                Err(e) => Err(e),
            };
            self.inner.counters.record(result)
        })
        .await
    }

    /// [`Ledger::post_in`], awaited, in the caller's transaction.
    ///
    /// # Errors
    /// As [`Ledger::post_in`].
    pub async fn post_in(
        &self,
        tx: &mut tokio_postgres::Transaction<'_>,
        posting: &Posting,
    ) -> Result<PostingReceipt, LedgerError> {
        let span = op_span!(async "post_in", legs = posting.legs.len(), key = posting.idempotency_key.as_deref(), lock_wait = %self.inner.lock_wait);
        span.run(async {
            let result = match self.ctx().refuse_batches_on_citus("post_in") {
                Ok(()) => self.run_in(tx, plan(&self.ctx(), posting)).await,
                Err(e) => Err(e),
            };
            self.inner.counters.record(result)
        })
        .await
    }
}
