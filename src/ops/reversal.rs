//! [`Ledger::reverse`] and [`Ledger::reverse_in`]: one prepared statement that runs
//! `wallet_ledger.reverse()` (`sql/0007_operations.sql`): the original transfer's row lock, then
//! the accounts in ascending id, the checks and the writes, in one implicit transaction.

use postgres::types::Type;
use postgres::Transaction;

use crate::driver::ledger::Ledger;
use crate::error::LedgerError;
use crate::model::metadata::stored_metadata;
use crate::model::reversal::Reversal;
use crate::model::transfer::{internal_key, Receipt};
use crate::observe::op_span;
use crate::plan::{keyed, params, try_plan, Ctx, Plan, Sql};
use crate::protocol::{self, reversal::outcome, KEY_CONSTRAINT};

impl Ledger {
    /// Reverses a committed transfer (a refund): a new transfer in the opposite direction,
    /// recording which transfer it reverses ([`Entry::reverses`](crate::Entry::reverses) in
    /// [`Ledger::history`]). All that is left to reverse unless [`Reversal::amount`] says less;
    /// the reversals of one transfer never sum to more than its amount, even when they race:
    /// each takes the original transfer's row lock first.
    ///
    /// A reversal obeys every rule of a transfer: the floor of the account it debits (a merchant
    /// who has paid the money out gets `InsufficientFunds`), account states and ceilings. A
    /// posting is reversed whole, every leg negated in one new posting; then the receipt's
    /// `from` and `to` are the reversal's first debited and first credited legs.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use rust_decimal_macros::dec;
    /// use wallet_ledger::{Ledger, LedgerError, NewAccount, Reversal, Transfer};
    ///
    /// # let url = wallet_ledger::embedded::fresh_database("doc_reverse")?;
    /// let ledger = Ledger::connect(&url)?;
    /// ledger.define_currency("USD", 2)?;
    /// let issuer = ledger.open_account(&NewAccount::new("USD").unbounded())?.id;
    /// let buyer = ledger.open_account(&NewAccount::new("USD"))?.id;
    /// let shop = ledger.open_account(&NewAccount::new("USD"))?.id;
    /// ledger.transfer(&Transfer::new(issuer, buyer, dec!(50.00)))?;
    /// let payment = ledger.transfer(&Transfer::new(buyer, shop, dec!(30.00)))?;
    ///
    /// let refund = ledger.reverse(&Reversal::of(payment.transfer_id).amount(dec!(10.00)).idempotency_key("refund-1"))?;
    /// assert_eq!((refund.from, refund.to, refund.to_balance), (shop, buyer, dec!(30.00)));
    /// let rest = ledger.reverse(&Reversal::of(payment.transfer_id))?; // the remaining 20.00
    /// assert_eq!(rest.amount, dec!(20.00));
    /// let err = ledger.reverse(&Reversal::of(payment.transfer_id)).unwrap_err();
    /// assert!(matches!(err, LedgerError::ReversalExceedsOriginal { .. }));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// Refusals change nothing: [`LedgerError::TransferNotFound`],
    /// [`LedgerError::ReversalExceedsOriginal`] (with what is left to reverse),
    /// [`LedgerError::InvalidAmount`] (also for a partial amount on a posting of more than two
    /// legs), [`LedgerError::InsufficientFunds`], [`LedgerError::AccountFrozen`],
    /// [`LedgerError::AccountClosed`], [`LedgerError::BalanceLimitExceeded`],
    /// [`LedgerError::IdempotencyConflict`], [`LedgerError::LockUnavailable`],
    /// [`LedgerError::InvalidInput`]; [`LedgerError::OutcomeUnknown`] as for a transfer;
    /// [`LedgerError::Unsupported`] in Citus mode.
    pub fn reverse(&self, r: &Reversal) -> Result<Receipt, LedgerError> {
        let span = op_span!("reverse", transfer = r.transfer.0, amount = r.amount.map(|a| a.to_string()), key = r.idempotency_key.as_deref(), lock_wait = %self.inner.lock_wait);
        span.finish(self.inner.counters.record(self.run_reverse(r)))
    }

    fn run_reverse(&self, r: &Reversal) -> Result<Receipt, LedgerError> {
        self.run(plan(&self.ctx(), r, "reverse"))
    }

    /// [`Ledger::reverse`] inside the caller's transaction: committed or rolled back with it.
    /// The reversal locks the original transfer's row before any account; the rules of
    /// [`in_transaction`](crate::in_transaction) apply (one ledger operation per transaction,
    /// after the caller's own rows).
    ///
    /// # Errors
    /// As [`Ledger::reverse`] and [`Ledger::transfer_in`].
    pub fn reverse_in(&self, tx: &mut Transaction<'_>, r: &Reversal) -> Result<Receipt, LedgerError> {
        let span = op_span!("reverse_in", transfer = r.transfer.0, amount = r.amount.map(|a| a.to_string()), key = r.idempotency_key.as_deref(), lock_wait = %self.inner.lock_wait);
        span.finish(self.inner.counters.record(self.run_reverse_in(tx, r)))
    }

    fn run_reverse_in(&self, tx: &mut Transaction<'_>, r: &Reversal) -> Result<Receipt, LedgerError> {
        self.run_in(tx, plan(&self.ctx(), r, "reverse_in"))
    }
}

/// The parameter types of `reverse()`.
const TYPES: [Type; 7] = [Type::INT8, Type::NUMERIC, Type::TEXT, Type::TEXT, Type::INT2, Type::INT4, Type::JSONB];

/// A reversal: validated, then one call of `reverse()`. `operation` names it in a refusal.
pub(crate) fn plan(ctx: &Ctx, r: &Reversal, operation: &'static str) -> Plan<Receipt> {
    try_plan!(r.validate());
    try_plan!(ctx.refuse_in_citus(operation));
    let key = r.idempotency_key.clone().unwrap_or_else(internal_key);
    let (mode, timeout_ms) = protocol::lock_params(ctx.lock_wait);
    let metadata = stored_metadata(r.metadata.as_ref()).cloned();
    let params = params![r.transfer.0, r.amount, key.clone(), r.memo.clone(), mode, timeout_ms, metadata];
    let amount = r.amount.unwrap_or_default();
    let r = r.clone();
    keyed(Sql::typed(protocol::reversal::SQL, params, &TYPES), KEY_CONSTRAINT, key, amount, move |answer, key| {
        outcome(&r, key, &answer.row).map(|mut receipt| {
            // A replay of our own earlier, unanswered attempt is not a replay to the caller.
            receipt.replayed &= !answer.maybe_applied && r.idempotency_key.is_some();
            receipt
        })
    })
}

#[cfg(feature = "aio")]
impl crate::aio::Ledger {
    /// [`Ledger::reverse`], awaited.
    ///
    /// # Errors
    /// As [`Ledger::reverse`].
    pub async fn reverse(&self, r: &Reversal) -> Result<Receipt, LedgerError> {
        let span = op_span!(async "reverse", transfer = r.transfer.0, amount = r.amount.map(|a| a.to_string()), key = r.idempotency_key.as_deref(), lock_wait = %self.inner.lock_wait);
        span.run(async { self.inner.counters.record(self.run(plan(&self.ctx(), r, "reverse")).await) }).await
    }

    /// [`Ledger::reverse_in`], awaited, in the caller's transaction.
    ///
    /// # Errors
    /// As [`Ledger::reverse_in`].
    pub async fn reverse_in(
        &self,
        tx: &mut tokio_postgres::Transaction<'_>,
        r: &Reversal,
    ) -> Result<Receipt, LedgerError> {
        let span = op_span!(async "reverse_in", transfer = r.transfer.0, amount = r.amount.map(|a| a.to_string()), key = r.idempotency_key.as_deref(), lock_wait = %self.inner.lock_wait);
        span.run(async { self.inner.counters.record(self.run_in(tx, plan(&self.ctx(), r, "reverse_in")).await) }).await
    }
}
