//! Batches: many transfers in one transaction and one round trip
//! (`wallet_ledger.transfer_batch()`, `sql/0004_batch.sql`).
//!
//! The union of every item's accounts is locked once, in ascending id order, by one statement;
//! the items are then decided in order against the balances as the earlier accepted items left
//! them, and every accepted item is written by three set-based statements. Each item has its own
//! outcome: a refusal changes nothing for that item and leaves the others applied.

use std::collections::HashSet;
use std::sync::Arc;

use postgres::types::{ToSql, Type};
use postgres::{Row, Transaction};
use rust_decimal::Decimal;

use crate::account::AccountId;
use crate::call::CallError;
use crate::error::{KeyHolder, LedgerError};
use crate::ledger::Ledger;
use crate::limits::BATCH_ITEMS_MAX;
use crate::observe::op_span;
use crate::transfer::{internal_key, Receipt, Transfer, TransferId};

const SQL: &str = include_str!("../sql/queries/transfer_batch.sql");
const KEY_CONSTRAINT: &str = "transfers_idempotency_key";

/// The items of a batch as the function takes them: only the items that passed validation, as
/// parallel arrays, and where each one came from.
struct Arrays {
    /// Index in the caller's slice of each sent item.
    sent: Vec<usize>,
    from: Vec<i64>,
    to: Vec<i64>,
    amount: Vec<Decimal>,
    key: Vec<String>,
    memo: Vec<Option<String>>,
    /// Every account id once, ascending: the lock order.
    union: Vec<i64>,
    /// Each item's `from` and `to` as 1-based positions in `union`.
    from_pos: Vec<i32>,
    to_pos: Vec<i32>,
}

/// A batch ready to send: the arrays, and the results so far (validation refusals).
pub(crate) struct Prepared<'a> {
    items: &'a [Transfer],
    arrays: Arrays,
    results: Vec<Option<Result<Receipt, LedgerError>>>,
}

impl<'a> Prepared<'a> {
    /// Validates every item (refusals become that item's result), and gives each sent item its
    /// key: `keys[i]` when given (the combiner's), else the caller's, else a new internal one.
    pub(crate) fn new(items: &'a [Transfer], keys: Option<&[String]>) -> Result<Self, LedgerError> {
        if items.len() > BATCH_ITEMS_MAX {
            return Err(LedgerError::BatchTooLarge { items: items.len(), max: BATCH_ITEMS_MAX });
        }
        let n = items.len();
        let mut arrays = Arrays {
            sent: Vec::with_capacity(n),
            from: Vec::with_capacity(n),
            to: Vec::with_capacity(n),
            amount: Vec::with_capacity(n),
            key: Vec::with_capacity(n),
            memo: Vec::with_capacity(n),
            union: Vec::new(),
            from_pos: Vec::new(),
            to_pos: Vec::new(),
        };
        let mut results = Vec::with_capacity(n);
        for (i, t) in items.iter().enumerate() {
            if let Err(e) = t.validate() {
                results.push(Some(Err(e)));
                continue;
            }
            results.push(None);
            let key = match (keys, &t.idempotency_key) {
                (Some(keys), _) => keys[i].clone(),
                (None, Some(key)) => key.clone(),
                (None, None) => internal_key(),
            };
            arrays.sent.push(i);
            arrays.from.push(t.from.0);
            arrays.to.push(t.to.0);
            arrays.amount.push(t.amount);
            arrays.key.push(key);
            arrays.memo.push(t.memo.clone());
        }
        let plan = crate::LockPlan::new(arrays.from.iter().chain(&arrays.to).map(|id| crate::AccountId(*id)));
        arrays.union = plan.as_i64();
        let position = |id: &i64| arrays.union.binary_search(id).map_or(0, |p| p as i32 + 1);
        arrays.from_pos = arrays.from.iter().map(position).collect();
        arrays.to_pos = arrays.to.iter().map(position).collect();
        Ok(Prepared { items, arrays, results })
    }

    /// Whether anything is left to send.
    fn is_empty(&self) -> bool {
        self.arrays.sent.is_empty()
    }

    /// The keys of the sent items, in item order.
    pub(crate) fn keys(&self) -> Vec<String> {
        self.arrays.key.clone()
    }

    /// Every item's result, from the function's row (`None` when nothing was sent).
    fn finish(mut self, row: Option<&Row>, maybe_applied: bool) -> Vec<Result<Receipt, LedgerError>> {
        if let Some(row) = row {
            let col = Columns::read(row);
            // Keys some earlier item of this batch applied or replayed.
            let mut held: HashSet<&str> = HashSet::new();
            for (j, &i) in self.arrays.sent.iter().enumerate() {
                let t = &self.items[i];
                let key = self.arrays.key[j].as_str();
                let mut result = col.outcome(j, t, key);
                if let Ok(receipt) = &mut result {
                    // A repeat of a key inside the batch is a replay to the caller. The first item
                    // of a key replaying an earlier, unanswered attempt of this call is not (as
                    // for single transfers); an internal key only ever replays our own attempt.
                    let repeat = !held.insert(key);
                    receipt.replayed &= repeat || !maybe_applied && t.idempotency_key.is_some();
                }
                self.results[i] = Some(result);
            }
        }
        self.results.into_iter().map(|r| r.expect("every item has a result")).collect()
    }
}

/// The function's result arrays.
struct Columns {
    outcomes: Vec<String>,
    transfer_ids: Vec<Option<i64>>,
    from_balances: Vec<Option<Decimal>>,
    to_balances: Vec<Option<Decimal>>,
    accounts: Vec<Option<i64>>,
    availables: Vec<Option<Decimal>>,
    from_currencies: Vec<Option<String>>,
    to_currencies: Vec<Option<String>>,
    currency_scales: Vec<Option<i16>>,
}

impl Columns {
    fn read(row: &Row) -> Columns {
        Columns {
            outcomes: row.get("outcomes"),
            transfer_ids: row.get("transfer_ids"),
            from_balances: row.get("from_balances"),
            to_balances: row.get("to_balances"),
            accounts: row.get("accounts"),
            availables: row.get("availables"),
            from_currencies: row.get("from_currencies"),
            to_currencies: row.get("to_currencies"),
            currency_scales: row.get("currency_scales"),
        }
    }

    /// Item `j`'s receipt or typed refusal, as [`crate::transfer`]'s `outcome` maps a single one.
    fn outcome(&self, j: usize, t: &Transfer, key: &str) -> Result<Receipt, LedgerError> {
        let transfer_id = self.transfer_ids[j].map(TransferId);
        let receipt = |replayed| Receipt {
            transfer_id: transfer_id.expect("a committed transfer has an id"),
            from: t.from,
            to: t.to,
            amount: t.amount,
            from_balance: self.from_balances[j].expect("an applied item has balances"),
            to_balance: self.to_balances[j].expect("an applied item has balances"),
            replayed,
        };
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        match self.outcomes[j].as_str() {
            "ok" => Ok(receipt(false)),
            "replayed" => Ok(receipt(true)),
            "idempotency_conflict" => Err(LedgerError::IdempotencyConflict {
                key: key.to_string(),
                existing: KeyHolder::Transfer(transfer_id.expect("a conflicting transfer has an id")),
            }),
            "account_not_found" => Err(LedgerError::AccountNotFound {
                account: AccountId(self.accounts[j].expect("the missing account is named")),
            }),
            "currency_mismatch" => Err(LedgerError::CurrencyMismatch {
                from: t.from,
                from_currency: text(&self.from_currencies[j]),
                to: t.to,
                to_currency: text(&self.to_currencies[j]),
            }),
            "invalid_scale" => Err(LedgerError::InvalidAmount {
                amount: t.amount,
                reason: format!(
                    "more than {} decimal places, the scale of {}",
                    self.currency_scales[j].unwrap_or_default(),
                    text(&self.from_currencies[j])
                ),
            }),
            "insufficient_funds" => Err(LedgerError::InsufficientFunds {
                account: AccountId(self.accounts[j].expect("the overdrawn account is named")),
                available: self.availables[j].expect("the available amount is given"),
                requested: t.amount,
            }),
            "overflow" => Err(LedgerError::InvalidAmount {
                amount: t.amount,
                reason: "the resulting balance would exceed the largest the ledger can represent".into(),
            }),
            other => unreachable!("transfer_batch() returned an outcome the library does not know: {other}"),
        }
    }
}

impl Ledger {
    /// Applies many transfers in **one transaction and one round trip**: every account of every
    /// item is locked once, in ascending id order, by one statement; the items are decided in the
    /// given order, each against the balances the earlier accepted items left; then all accepted
    /// items are written together and committed with one WAL flush.
    ///
    /// Each item gets its own outcome, exactly the `Result` [`Ledger::transfer`] would give it
    /// if the items ran alone one after the other: a refused item (funds, floor, currency,
    /// unknown account, idempotency conflict, invalid input) changes nothing itself and leaves
    /// the others applied. Idempotency keys work per item, also for a key repeated inside the
    /// batch: a later item with the same key and content replays the earlier one, with other
    /// content it is an [`IdempotencyConflict`](LedgerError::IdempotencyConflict); a refused item
    /// does not consume its key. Items without a key get an internal one, so a retry after a lost
    /// connection never applies an item twice.
    ///
    /// An empty batch returns an empty `Vec` without touching the database. At most
    /// [`BATCH_ITEMS_MAX`] items (10,000).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), wallet_ledger::LedgerError> {
    /// use rust_decimal_macros::dec;
    /// use wallet_ledger::{AccountId, Ledger, LedgerError, Transfer};
    ///
    /// # let (ledger, payroll, alice, bob) = (Ledger::connect("")?, AccountId(1), AccountId(2), AccountId(3));
    /// let results = ledger.transfer_batch(&[
    ///     Transfer::new(payroll, alice, dec!(1200.00)).idempotency_key("pay-2026-11/alice"),
    ///     Transfer::new(payroll, bob, dec!(1100.00)).idempotency_key("pay-2026-11/bob"),
    /// ])?;
    /// for result in results {
    ///     match result {
    ///         Ok(receipt) => println!("paid: transfer {}", receipt.transfer_id),
    ///         Err(LedgerError::InsufficientFunds { available, .. }) => println!("only {available} left"),
    ///         Err(other) => println!("refused: {other}"),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The outer `Err` means the batch as a whole did nothing: [`LedgerError::BatchTooLarge`],
    /// [`LedgerError::LockUnavailable`] (per the [`LockWait`](crate::LockWait) policy, for any of
    /// the accounts), database and pool errors after retries, or
    /// [`LedgerError::BatchOutcomeUnknown`] when the connection was lost after sending and
    /// retries could not settle it (repeat the items with the keys it names).
    pub fn transfer_batch(&self, items: &[Transfer]) -> Result<Vec<Result<Receipt, LedgerError>>, LedgerError> {
        let span = op_span!("transfer_batch", items = items.len(), lock_wait = %self.inner.lock_wait);
        self.refuse_on_citus("transfer_batch")?;
        let results = self.run_batch(items, None);
        let results = self.record_batch(results);
        span.finish(results)
    }

    /// [`LedgerError::Unsupported`] in Citus mode (see [`crate::citus`]).
    pub(crate) fn refuse_on_citus(&self, operation: &'static str) -> Result<(), LedgerError> {
        if self.inner.citus {
            return Err(LedgerError::Unsupported {
                operation,
                reason: "not in Citus mode yet: its one ordered lock statement over many accounts is refused \
                         across shards; send the transfers one by one",
            });
        }
        Ok(())
    }

    /// Counts every item as one operation (and a failed batch as one failure).
    fn record_batch(
        &self,
        results: Result<Vec<Result<Receipt, LedgerError>>, LedgerError>,
    ) -> Result<Vec<Result<Receipt, LedgerError>>, LedgerError> {
        match results {
            Ok(results) => Ok(results.into_iter().map(|r| self.inner.counters.record(r)).collect()),
            Err(e) => self.inner.counters.record(Err(e)),
        }
    }

    /// The pooled batch path without counting: `keys` (one per item) overrides the items' keys
    /// (the combiner gives each queued transfer its key when it is queued).
    pub(crate) fn run_batch(
        &self,
        items: &[Transfer],
        keys: Option<&[String]>,
    ) -> Result<Vec<Result<Receipt, LedgerError>>, LedgerError> {
        let mut prepared = Prepared::new(items, keys)?;
        if prepared.is_empty() {
            return Ok(prepared.finish(None, false));
        }
        if let [i] = prepared.arrays.sent[..] {
            // One item: the single-transfer function does less work for it, with the same
            // outcome; what would fail a whole batch still fails it as a whole.
            return match self.run_transfer_keyed(&items[i], &prepared.arrays.key[0]) {
                Err(
                    e @ (LedgerError::LockUnavailable { .. }
                    | LedgerError::Database(_)
                    | LedgerError::Pool(_)
                    | LedgerError::ConstraintViolation { .. }),
                ) => Err(e),
                Err(LedgerError::OutcomeUnknown { idempotency_key, source }) => Err(LedgerError::BatchOutcomeUnknown {
                    idempotency_keys: vec![idempotency_key],
                    source: Arc::new(source),
                }),
                result => {
                    prepared.results[i] = Some(result);
                    Ok(prepared.finish(None, false))
                }
            };
        }
        let (mode, timeout_ms) = self.inner.lock_wait.as_params();
        let a = &prepared.arrays;
        let params: [&(dyn ToSql + Sync); 10] =
            [&a.from, &a.to, &a.amount, &a.key, &a.memo, &mode, &timeout_ms, &a.union, &a.from_pos, &a.to_pos];
        match self.call(SQL, &params, Some(KEY_CONSTRAINT)) {
            Ok(answer) => Ok(prepared.finish(Some(&answer.row), answer.maybe_applied)),
            Err(CallError::Failed(e)) => Err(e),
            Err(CallError::Unknown(source)) => {
                Err(LedgerError::BatchOutcomeUnknown { idempotency_keys: prepared.keys(), source: Arc::new(source) })
            }
        }
    }

    /// [`Ledger::transfer_batch`] inside the caller's transaction: committed or rolled back with
    /// it. A batch is one ledger operation (one ordered lock statement), so the
    /// [rules for a caller's transaction](crate::in_transaction) hold as for one transfer.
    /// When every item is refused, the savepoint is rolled back and the batch holds no lock.
    ///
    /// # Errors
    /// As [`Ledger::transfer_batch`], and database errors of the caller's transaction.
    pub fn transfer_batch_in(
        &self,
        tx: &mut Transaction<'_>,
        items: &[Transfer],
    ) -> Result<Vec<Result<Receipt, LedgerError>>, LedgerError> {
        let span = op_span!("transfer_batch_in", items = items.len(), lock_wait = %self.inner.lock_wait);
        self.refuse_on_citus("transfer_batch_in")?;
        let results = self.run_batch_in(tx, items);
        let results = self.record_batch(results);
        span.finish(results)
    }

    fn run_batch_in(
        &self,
        tx: &mut Transaction<'_>,
        items: &[Transfer],
    ) -> Result<Vec<Result<Receipt, LedgerError>>, LedgerError> {
        let prepared = Prepared::new(items, None)?;
        if prepared.is_empty() {
            return Ok(prepared.finish(None, false));
        }
        let (mode, timeout_ms) = self.inner.lock_wait.as_params();
        let a = &prepared.arrays;
        let params: [(&(dyn ToSql + Sync), Type); 10] = [
            (&a.from, Type::INT8_ARRAY),
            (&a.to, Type::INT8_ARRAY),
            (&a.amount, Type::NUMERIC_ARRAY),
            (&a.key, Type::TEXT_ARRAY),
            (&a.memo, Type::TEXT_ARRAY),
            (&mode, Type::INT2),
            (&timeout_ms, Type::INT4),
            (&a.union, Type::INT8_ARRAY),
            (&a.from_pos, Type::INT4_ARRAY),
            (&a.to_pos, Type::INT4_ARRAY),
        ];
        let row = self.in_savepoint(tx, SQL, &params, KEY_CONSTRAINT)?;
        Ok(prepared.finish(Some(&row), false))
    }
}
